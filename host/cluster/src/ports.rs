//! What the cluster needs from the node it runs in, as traits the node implements: the bus
//! that serves a partition ([`Partitions`]), the ledger that fences it ([`Fences`]), and the
//! metrics that count what happened ([`ClusterObserver`]). The cluster never depends on the
//! node, and a deterministic simulation can stand in for all three without NATS subscriptions
//! or a database.

use std::collections::BTreeMap;
use std::time::Duration;

/// The partitions a node serves: opened while it holds their leases, closed before it
/// releases them.
pub trait Partitions: Clone + Send + Sync + 'static {
    /// Why a partition could not be opened.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The longest [`Partitions::close`] (and [`Partitions::close_opening`]) may take: the
    /// cluster's stop bound is computed from it.
    const CLOSE_TIMEOUT: Duration;
    /// The longest [`Partitions::open`] may take (it may first close an earlier opening).
    const OPEN_TIMEOUT: Duration;

    /// Starts serving `partition` under fencing token `token`; returns the number of this
    /// opening, for [`Partitions::close_opening`].
    fn open(&self, partition: u32, token: u64) -> impl Future<Output = Result<u64, Self::Error>> + Send;

    /// Stops serving `partition` and answers what it took; whether everything was answered
    /// within [`Partitions::CLOSE_TIMEOUT`] (only then may the lease go to the next owner).
    fn close(&self, partition: u32) -> impl Future<Output = bool> + Send;

    /// [`Partitions::close`], only if `partition` is still open from `opening`: a lease lost
    /// late must not close a later opening of the partition.
    fn close_opening(&self, partition: u32, opening: u64) -> impl Future<Output = ()> + Send;

    /// Durable mode: the stored payments waiting for each open partition (shown in its lease).
    fn lags(&self) -> impl Future<Output = BTreeMap<u32, u64>> + Send;
}

/// The ledger's side of ownership: it hands out fencing tokens and refuses writes under older
/// ones, so a lease holder that was paused past its lease cannot post after its successor; and
/// it records which ledger the deployment is bound to, so the binding in NATS is a cache that
/// can be lost without moving the deployment (docs/cluster.md, "One ledger per cluster").
pub trait Fences: Send + Sync + 'static {
    /// Why a claim failed, or a binding could not be read or recorded.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Claims `partitions` for a new owner: each gets a token above any handed out before.
    fn claim(&self, partitions: &[u32]) -> impl Future<Output = Result<BTreeMap<u32, u64>, Self::Error>> + Send;

    /// Every claimed partition's newest token: an owner holding an older one was fenced by a
    /// later claim and can never post there again.
    fn tokens(&self) -> impl Future<Output = Result<BTreeMap<u32, u64>, Self::Error>> + Send;

    /// The ledger `deployment` is bound to, as this ledger recorded it (`None`: never).
    fn binding(&self, deployment: &str) -> impl Future<Output = Result<Option<String>, Self::Error>> + Send;

    /// Records that `deployment` is bound to `ledger` unless a binding is recorded already;
    /// returns the binding recorded now (the earlier one, if there was one).
    fn record_binding(
        &self,
        deployment: &str,
        ledger: &str,
    ) -> impl Future<Output = Result<String, Self::Error>> + Send;
}

/// Counts what the cluster does (the node's Prometheus metrics implement it).
pub trait ClusterObserver: Send + Sync + std::fmt::Debug {
    /// `count` partitions were handed over to another node.
    fn handed_over(&self, count: u64);
    /// This node now serves `count` partitions.
    fn partitions_owned(&self, count: u64);
    /// A lease renewal failed (lost to another node, or unanswered).
    fn renewal_failed(&self);
    /// `count` leases were dropped and their partitions closed: NATS said another node holds
    /// them, or that they expired (an outage longer than the TTL).
    fn leases_lost(&self, count: u64);
}

/// The node's parts the cluster drives.
#[derive(Debug)]
pub struct Ports<P, F> {
    /// The bus's partitions.
    pub partitions: P,
    /// The ledger's fences.
    pub fences: F,
    /// The metrics.
    pub observer: std::sync::Arc<dyn ClusterObserver>,
}
