//! How the ledger writes: batch bounds and durability (`[ledger]` in `wasmpay.toml`).

/// How the ledger writes (`[ledger]` in `wasmpay.toml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSettings {
    /// Transfers in one batch (one transaction, one fsync) at most.
    pub batch_size_max: usize,
    /// How long a batch may wait for more transfers once it has one, in microseconds. 0
    /// takes only what is already waiting: while one batch commits the next one fills up,
    /// so batches grow with the load and a lone payment waits for nobody.
    pub batch_delay_us_max: u64,
    /// When a commit reaches the disk.
    pub synchronous: Durability,
    /// PostgreSQL: how long the server keeps a write transaction whose client went quiet (a
    /// paused or cut-off node) before it rolls it back and frees its row locks, in
    /// milliseconds. A cluster's lease TTL must leave room for it: a paused owner's locks are
    /// gone before another node can take its partitions ([`LedgerSettings::frees_locks_within`]).
    pub idle_transaction_timeout_ms: u64,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        LedgerSettings {
            batch_size_max: 512,
            batch_delay_us_max: 0,
            synchronous: Durability::Full,
            idle_transaction_timeout_ms: 1_000,
        }
    }
}

impl LedgerSettings {
    /// Whether a paused node's transaction is rolled back, and its row locks freed, before
    /// another node can hold a lease it held: a lease renewed every third of `lease_ttl_ms`
    /// outlives its holder's pause by at least two thirds of it. Half a TTL keeps a margin for
    /// the server's own timer.
    pub fn frees_locks_within(&self, lease_ttl_ms: u64) -> bool {
        self.idle_transaction_timeout_ms.saturating_mul(2) <= lease_ttl_ms
    }
}

/// When a commit is durable: SQLite's `synchronous` (WAL), PostgreSQL's `synchronous_commit`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Every commit is fsynced before it is answered: an acknowledged payment survives a power
    /// cut. Group commit is how throughput is bought back, not a weaker sync.
    #[default]
    Full,
    /// Commits are flushed later: faster, but the last commits before a power cut (SQLite:
    /// WAL synced at checkpoints only) or a database server crash (PostgreSQL:
    /// `synchronous_commit = off`) can be lost although they were answered. Never corrupts.
    Normal,
}
