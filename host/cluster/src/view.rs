//! What a node knows of the cluster, for operators: `GET /v1/cluster` serves it, and
//! `wasmpay cluster status` prints it ([`ClusterView::table`]). The rounds publish a new view
//! after each round ([`Views`]); the HTTP API reads the latest.

use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

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
    /// partitions each holds and the partitions moving or unowned; with `partitions`, every
    /// partition's owner, lease token and assigned member (which differ only while a partition
    /// moves).
    pub fn table(&self, partitions: bool) -> String {
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
        let moving = self.leases.iter().filter(|lease| lease.owner.is_some() && lease.owner != lease.assigned).count();
        let lagging = self.leases.iter().filter(|lease| lease.lag.is_some_and(|lag| lag > 0)).count();
        let _ = writeln!(
            out,
            "\npartitions moving: {moving}, unowned: {unowned}, with durable payments waiting: {lagging}"
        );
        if !partitions {
            let _ = writeln!(out, "(every partition: wasmpay cluster status --partitions)");
            return out;
        }
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
#[derive(Clone, Debug)]
pub struct Views(Arc<Mutex<ClusterView>>);

impl Default for Views {
    /// Before the first round the node serves nothing, and its view says so: the HTTP API
    /// listens before the node joins (and joining can wait out the binding's grace period),
    /// so an empty view must not read as ready.
    fn default() -> Self {
        let joining =
            ClusterView { refused: Some("it has not joined the cluster yet".to_owned()), ..ClusterView::default() };
        Views(Arc::new(Mutex::new(joining)))
    }
}

impl Views {
    /// The latest view.
    pub fn current(&self) -> ClusterView {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn set(&self, view: ClusterView) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = view;
    }
}
