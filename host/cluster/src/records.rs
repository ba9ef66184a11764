//! What the cluster's buckets hold: their names, their keys, and the JSON records under them.
//! Every node of a cluster reads what the others write, so these are part of the protocol.

use serde::{Deserialize, Serialize};

/// The bucket of member records, one per live node, under its name.
pub(crate) const MEMBERS: &str = "wasmpay_members";
/// The bucket of leases, one per held partition, under [`lease_key`].
pub(crate) const LEASES: &str = "wasmpay_leases";
/// The bucket of the deployment's binding to one ledger (no TTL).
pub(crate) const BINDING: &str = "wasmpay_cluster";
/// The binding's key in [`BINDING`].
pub(crate) const BINDING_KEY: &str = "ledger";

/// A member's record in [`MEMBERS`], under its node name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Member {
    pub(crate) ledger: String,
    pub(crate) http: String,
    pub(crate) partitions: u32,
    /// The deployment this member's ledger records as bound to it, once it does: a node of
    /// another ledger with no record of its own must not bind the deployment while such a
    /// member is live, even if NATS lost the binding. Absent from older nodes' records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) serves: Option<String>,
}

/// A lease's value in [`LEASES`], under `partition.<p>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Lease {
    pub(crate) node: String,
    pub(crate) ledger: String,
    /// The holder's partition count: a lease key means one partition only among nodes that
    /// partition alike.
    pub(crate) partitions: u32,
    /// The fencing token the ledger handed out, known from the first renewal on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token: Option<u64>,
    /// Durable mode: stored payments not yet delivered to the owner, as of the last renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) lag: Option<u64>,
}

/// The binding's value under [`BINDING_KEY`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Binding {
    pub(crate) ledger: String,
    pub(crate) partitions: u32,
}

/// The key of `partition`'s lease.
pub(crate) fn lease_key(partition: u32) -> String {
    format!("partition.{partition}")
}

/// A record as the bytes a bucket stores. The records are plain strings and numbers, which
/// always serialize.
pub(crate) fn encode(record: &impl Serialize) -> bytes::Bytes {
    serde_json::to_vec(record).unwrap_or_default().into()
}
