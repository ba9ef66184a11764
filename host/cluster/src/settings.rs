//! Who a node is in the cluster and how its membership and leases are timed.

use serde::Deserialize;

use crate::error::ClusterError;

/// The deployment's name unless configured (`[cluster] deployment`).
pub const DEFAULT_DEPLOYMENT: &str = "default";

/// How membership and leases are timed (`[cluster]` in `wasmpay.toml`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// The deployment's name: what a ledger records the binding under, so the binding
    /// survives the loss of NATS's state. One per NATS deployment (its payment subjects); a
    /// ledger serves a deployment only under the name it recorded.
    pub deployment: String,
    /// How long a lease, and a member's record, outlive their last renewal. A dead node's
    /// partitions move after about this long; a pause longer than this costs a node its
    /// leases. Fixed by the first node that creates the buckets; later nodes use the buckets'.
    pub lease_ttl_ms: u64,
    /// How often a node announces itself and looks at the assignment; leases are renewed every
    /// third of the TTL.
    pub heartbeat_ms: u64,
    /// JetStream replicas of the cluster's buckets, its plugin store and (unless
    /// `[delivery] replicas` says otherwise) the durable streams. Unset: 3 on a clustered
    /// NATS, 1 on a single server ([`crate::jetstream::replicas`]). A change takes effect in
    /// place at the next start of a node.
    pub replicas: Option<usize>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            deployment: DEFAULT_DEPLOYMENT.to_owned(),
            lease_ttl_ms: 3_000,
            heartbeat_ms: 500,
            replicas: None,
        }
    }
}

/// Who this node is in the cluster.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The node's name: its member key and the owner named in its leases.
    pub node: String,
    /// Its ledger's identity: only nodes on one ledger share partitions.
    pub ledger: String,
    /// Where its HTTP API listens (shown to operators).
    pub http: String,
    /// The partition count P.
    pub partitions: u32,
}

impl Identity {
    /// Refuses a node name that cannot be a KV key and a subject token (the rule of an
    /// account id).
    pub(crate) fn check(&self) -> Result<(), ClusterError> {
        match wasmpay_protocol::routing::AccountId::new(self.node.as_str()) {
            Ok(_) => Ok(()),
            Err(_) => Err(ClusterError::InvalidNodeId(self.node.clone())),
        }
    }
}
