//! Partition ownership across nodes: membership, fenced leases, handover.
//!
//! - Binding: the first node binds the NATS deployment's payment subjects to its ledger (a key
//!   without TTL in `wasmpay_cluster`); a node on another ledger serves nothing until an
//!   operator unbinds it (`wasmpay cluster unbind`), so payments never move between ledgers.
//! - Membership: every node puts its record in the `wasmpay_members` bucket every heartbeat;
//!   the bucket forgets a record one TTL after its last put, so a dead node leaves by itself.
//! - Assignment: partitions go to the live members that write this node's ledger by
//!   rendezvous hashing ([`crate::assignment`]), which every node computes alike.
//! - Ownership: a node serves a partition only while it holds the partition's lease in the
//!   `wasmpay_leases` bucket: taken by create (compare-and-set on "no value"), renewed by
//!   update on its last revision well inside the TTL, released by a delete on its revision
//!   after handing over. The revision at which the lease was taken is its fencing token: the
//!   new owner claims it in the ledger before serving, and every payment it posts carries it,
//!   so an owner that was paused or cut off past its lease cannot post after its successor.
//!
//! `ownership` runs the rounds that turn the assignment into held leases; `buckets` keeps the
//! buckets and this node's view of them. docs/cluster.md has the protocol and its numbers.

mod binding;
pub(crate) mod buckets;
mod ownership;

pub use binding::unbind;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::bus::Intake;
use crate::metrics::Metrics;
use wasmpay_ledger::Ledger;
use wasmpay_protocol::routing::AccountId;

/// How membership and leases are timed (`[cluster]` in `wasmpay.toml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// How long a lease, and a member's record, outlive their last renewal. A dead node's
    /// partitions move after about this long; a pause longer than this costs a node its
    /// leases. Fixed by the first node that creates the buckets; later nodes use the buckets'.
    pub lease_ttl_ms: u64,
    /// How often a node announces itself and looks at the assignment; leases are renewed every
    /// third of the TTL.
    pub heartbeat_ms: u64,
    /// JetStream replicas of the two buckets (1, or 3 on a three-server NATS cluster).
    pub replicas: usize,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings { lease_ttl_ms: 3_000, heartbeat_ms: 500, replicas: 1 }
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

/// The cluster could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A node name must be usable as a key: `[A-Za-z0-9_-]`, 1 to 64 characters.
    #[error("node id `{0}` is not 1-64 characters of A-Z a-z 0-9 _ -")]
    InvalidNodeId(String),
    /// The binding cannot be removed while the bound ledger has live members.
    #[error("ledger {ledger} still has live members ({members}): stop them before unbinding")]
    StillBound {
        /// The bound ledger.
        ledger: String,
        /// Its live members.
        members: String,
    },
    /// A bucket could not be created or opened.
    #[error("cluster bucket `{bucket}`: {message}")]
    Bucket {
        /// The bucket.
        bucket: String,
        /// Why.
        message: String,
    },
}

/// What a node knows of the cluster, for operators (`GET /v1/cluster`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The node answering.
    pub node: String,
    /// Its ledger's identity.
    pub ledger: String,
    /// The partition count P.
    pub partitions: u32,
    /// The lease TTL in effect (the bucket's).
    pub lease_ttl_ms: u64,
    /// The live members, this node included.
    pub members: Vec<MemberView>,
    /// Every partition: who the assignment gives it to, who holds its lease, the lease's
    /// fencing token and (durable mode) the partition's lag.
    pub leases: Vec<LeaseView>,
    /// The partitions this node serves.
    pub owned: Vec<u32>,
    /// Why this node serves nothing, if it may not: the NATS deployment is bound to another
    /// ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl ClusterView {
    /// The view as the tables `wasmpay cluster status` prints: the members with how many
    /// partitions each holds, then every partition's owner, lease token and assigned member
    /// (which differ only while a partition moves).
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "as seen by {} (ledger {}), {} partitions, lease TTL {} ms",
            self.node, self.ledger, self.partitions, self.lease_ttl_ms
        );
        if let Some(refused) = &self.refused {
            let _ = writeln!(out, "this node serves nothing: {refused}");
        }
        let _ = writeln!(out, "\n{:<24} {:<34} {:<22} {:>6}", "member", "ledger", "http", "owns");
        for member in &self.members {
            let owns = self.leases.iter().filter(|lease| lease.owner.as_deref() == Some(member.node.as_str())).count();
            let _ = writeln!(out, "{:<24} {:<34} {:<22} {owns:>6}", member.node, member.ledger, member.http);
        }
        let unowned = self.leases.iter().filter(|lease| lease.owner.is_none()).count();
        let _ = writeln!(out, "{:<24} {:<34} {:<22} {unowned:>6}", "(no owner)", "", "");
        let number = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), |value| value.to_string());
        let _ =
            writeln!(out, "\n{:>9} {:<24} {:>12} {:<24} {:>8}", "partition", "owner", "token", "assigned to", "lag");
        for lease in &self.leases {
            let _ = writeln!(
                out,
                "{:>9} {:<24} {:>12} {:<24} {:>8}",
                lease.partition,
                lease.owner.as_deref().unwrap_or("-"),
                number(lease.token),
                lease.assigned.as_deref().unwrap_or("-"),
                number(lease.lag),
            );
        }
        out
    }
}

/// A live member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Its name.
    pub node: String,
    /// Its ledger's identity.
    pub ledger: String,
    /// Its HTTP API.
    pub http: String,
}

/// One partition's ownership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    /// The partition.
    pub partition: u32,
    /// The member the assignment gives it to (among this node's ledger's members).
    pub assigned: Option<String>,
    /// The node holding its lease, if any.
    pub owner: Option<String>,
    /// The fencing token of the owner's lease.
    pub token: Option<u64>,
    /// Durable mode: stored payments not yet delivered to the owner (as of its last renewal).
    pub lag: Option<u64>,
}

/// This node's latest [`ClusterView`], shared with the HTTP API.
#[derive(Clone, Debug, Default)]
pub struct Views(Arc<Mutex<ClusterView>>);

impl Views {
    /// The latest view.
    pub fn current(&self) -> ClusterView {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set(&self, view: ClusterView) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = view;
    }
}

/// This node's part in the cluster: it keeps the node's membership and leases current and
/// opens and closes the bus's partitions to match, until stopped.
#[derive(Debug)]
pub struct Cluster {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// How long stopping may take: the membership withdrawn (2 s), every partition handed over at
/// once (a drain, 5 s, and the worker's answers, 10 s, at most), every lease released (2 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(25);

impl Cluster {
    /// Joins the cluster on `client` and takes the partitions the assignment gives this node
    /// and nobody holds; returns after that first round, so a lone node serves every
    /// partition when this returns. Partitions still held by others follow as they hand over
    /// or their leases expire.
    pub async fn join(
        client: async_nats::Client,
        identity: Identity,
        settings: ClusterSettings,
        intake: Intake,
        ledger: Ledger,
        metrics: Arc<Metrics>,
        views: Views,
    ) -> Result<Cluster, ClusterError> {
        // A node name is a KV key and a subject token, the same rule as an account id.
        if AccountId::new(identity.node.as_str()).is_err() {
            return Err(ClusterError::InvalidNodeId(identity.node));
        }
        let mut owner =
            ownership::Owner::start(client, identity, settings, intake, ledger, metrics, views.clone()).await?;
        owner.round().await;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(owner.run(stopped));
        Ok(Cluster { stop, task })
    }

    /// Leaves the cluster: hands every partition over (stops taking it, answers what it took,
    /// releases its lease, so its next owner starts at once) and withdraws the membership.
    pub async fn leave(mut self) {
        let _ = self.stop.send(());
        if tokio::time::timeout(STOP_TIMEOUT, &mut self.task).await.is_err() {
            tracing::warn!("leaving the cluster took more than {STOP_TIMEOUT:?}; its leases will expire instead");
            self.task.abort();
        }
    }
}
