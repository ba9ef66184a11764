//! # wasmpay-ledger
//!
//! The double-entry ledger: accounts, payments (the idempotency record) and entries, on
//! SQLite (`sqlite://…`, the embedded default) or PostgreSQL (`postgres://…`).
//!
//! Every transfer goes through group commit (`commit`): batches are decided in memory by pure
//! code (`batch`) and written in one transaction that holds every row it may debit (SQLite's
//! write lock, or PostgreSQL row locks taken in a stable order), so the check of a balance and
//! the update that depends on it never interleave with another writer. The schema backs the
//! code: balances below a floor, zero entries and unknown accounts are refused by constraints
//! too.
//!
//! Layout: [`accounts`] opens and reads accounts; `fencing` keeps partition owners apart; [`record`] says what a transfer is and
//! what the ledger decided; [`funding`] posts deposits; [`queries`] reads payments and audits
//! the books; `store` is the backend boundary, with `sqlite` and `postgres` below it; `schema`
//! holds both backends' migrations. Money and account ids come from `wasmpay-protocol`;
//! nothing here knows about plugins, NATS or HTTP.

pub mod accounts;
mod batch;
mod commit;
mod fencing;
pub mod funding;
mod postgres;
pub mod queries;
pub mod record;
mod schema;
mod sqlite;
mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmpay_protocol::money::{Currency, MinorUnits};
use wasmpay_protocol::routing::AccountId;

pub use accounts::{Account, AccountKind, NewAccount};
pub use commit::{CommitObserver, Render};
pub use funding::Deposited;
pub use queries::{Audit, StoredPayment};
pub use record::{Decision, Recorded, Transfer, TransferKind};

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
}

impl Default for LedgerSettings {
    fn default() -> Self {
        LedgerSettings { batch_size_max: 512, batch_delay_us_max: 0, synchronous: Durability::Full }
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

/// When the ledger last probed a write, and what it found.
type Probe = (Instant, Result<(), String>);

/// How often [`Ledger::writable`] may really write.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// A failure of the ledger itself, as opposed to a payment it declined.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database failed or is unreachable. Nothing was committed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// An account with this id already exists with a different currency or floor.
    #[error("account `{0}` already exists with different terms")]
    AccountExists(String),
    /// No such account.
    #[error("unknown account `{0}`")]
    UnknownAccount(String),
    /// An account of the transfer holds another currency.
    #[error("account `{account}` holds {holds}")]
    CurrencyMismatch {
        /// The account.
        account: String,
        /// The currency it holds.
        holds: Currency,
    },
    /// A balance would leave the 64-bit range.
    #[error("balance overflow on account `{0}`")]
    Overflow(String),
    /// Stored data that this code cannot have written.
    #[error("corrupt ledger data: {0}")]
    Corrupt(String),
    /// The transfer itself breaks the ledger's rules (a caller's bug): a non-positive amount,
    /// a negative fee, or two postings to one account.
    #[error("invalid transfer: {0}")]
    Invalid(String),
    /// The batch this transfer was in did not commit; nothing of it was posted.
    #[error("the ledger batch did not commit: {0}")]
    BatchFailed(String),
    /// The ledger is closing.
    #[error("the ledger is closed")]
    Closed,
    /// A transfer carried a lease token older than the newest the ledger has seen for its
    /// partition: another node owns the partition now. Nothing of it was posted (nor of its
    /// batch, if a claim committed while the batch was being written).
    #[error("fenced: partitions {0:?} have a newer lease owner")]
    Fenced(Vec<u32>),
    /// There is no ledger at this URL (and nothing was created).
    #[error("no ledger at {0}")]
    NoLedger(String),
    /// The database URL names no backend this ledger has.
    #[error("unsupported database `{0}:`: use sqlite://… or postgres://…")]
    UnsupportedUrl(String),
}

impl LedgerError {
    /// Whether trying again later can succeed: the database was unreachable, busy or out of
    /// space, or another node owns the partition now (a retry reaches it). Everything else is permanent for the same request (a balance that would leave
    /// the 64-bit range stays out of range), and a client must not be told to retry it.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LedgerError::Database(_) | LedgerError::BatchFailed(_) | LedgerError::Closed | LedgerError::Fenced(_)
        )
    }
}

/// The ledger, over a pool of database connections.
#[derive(Clone, Debug)]
pub struct Ledger {
    store: store::Store,
    committer: tokio::sync::mpsc::Sender<commit::Job>,
    /// The last write probe; held while probing, so concurrent callers share one probe.
    probe: Arc<tokio::sync::Mutex<Option<Probe>>>,
}

/// The fee account of a currency, credited with every fee.
pub fn fee_account(currency: Currency) -> AccountId {
    system_account("fees", currency)
}

/// The external funding account of a currency, debited by deposits. It has no floor, so its
/// negative balance is the money that entered the ledger.
pub fn external_account(currency: Currency) -> AccountId {
    system_account("external", currency)
}

fn system_account(kind: &str, currency: Currency) -> AccountId {
    AccountId::new(format!("_{kind}_{currency}")).unwrap_or_else(|_| unreachable!("system ids are valid"))
}

impl Ledger {
    /// Opens the database at `url` and applies pending migrations, with the default batching
    /// and no observer. `sqlite://wasmpay.db` creates the file if needed;
    /// `postgres://user@host/db` connects to an existing database, and creates the schema its
    /// `?options[search_path]=name` names first if there is none.
    pub async fn open(url: &str) -> Result<Ledger, LedgerError> {
        Ledger::open_with(url, LedgerSettings::default(), None).await
    }

    /// [`Ledger::open`] with `settings`, reporting committed batches to `observer`.
    pub async fn open_with(
        url: &str,
        settings: LedgerSettings,
        observer: Option<Arc<dyn CommitObserver>>,
    ) -> Result<Ledger, LedgerError> {
        Ledger::start(store::Store::connect(url, &settings, true).await?, settings, observer)
    }

    /// Opens the ledger at `url` only if one is there, creating nothing: for tools that
    /// inspect a ledger (`wasmpay ledger verify`), where a mistyped URL must not leave a new,
    /// empty ledger behind and report it sound.
    pub async fn open_existing(url: &str) -> Result<Ledger, LedgerError> {
        let settings = LedgerSettings::default();
        Ledger::start(store::Store::connect(url, &settings, false).await?, settings, None)
    }

    fn start(
        store: store::Store,
        settings: LedgerSettings,
        observer: Option<Arc<dyn CommitObserver>>,
    ) -> Result<Ledger, LedgerError> {
        let committer = commit::start(store.clone(), settings, observer);
        Ok(Ledger { store, committer, probe: Arc::default() })
    }

    /// Whether the ledger can commit a write now: a full disk or a read-only file shows only
    /// when something is written, so this commits a small write. It probes at most once per
    /// [`PROBE_INTERVAL`]; in between it answers what the last probe found.
    pub async fn writable(&self) -> Result<(), String> {
        if self.committer.is_closed() {
            return Err("the ledger's committer has stopped".to_owned());
        }
        let mut probe = self.probe.lock().await;
        if let Some((at, found)) = probe.as_ref()
            && at.elapsed() < PROBE_INTERVAL
        {
            return found.clone();
        }
        let found = store::on_store!(&self.store, backend => backend.probe_write().await);
        let found = found.map_err(|error| error.to_string());
        *probe = Some((Instant::now(), found.clone()));
        found
    }

    /// Resolves if the committer has stopped (it only does when it panicked): from then on
    /// every write fails, so the node must stop and be restarted.
    pub async fn stopped(&self) {
        self.committer.closed().await;
    }

    /// Waits for running transactions and closes every connection.
    pub async fn close(&self) {
        self.store.close().await;
    }
}

fn parse_currency(code: &str) -> Result<Currency, LedgerError> {
    code.parse().map_err(|_| LedgerError::Corrupt(format!("currency `{code}`")))
}

fn parse_account_id(id: String) -> Result<AccountId, LedgerError> {
    AccountId::new(id).map_err(|error| LedgerError::Corrupt(error.to_string()))
}

fn checked(
    account: &AccountId,
    result: Result<MinorUnits, wasmpay_protocol::money::Overflow>,
) -> Result<MinorUnits, LedgerError> {
    result.map_err(|_| LedgerError::Overflow(account.to_string()))
}

#[cfg(test)]
mod tests;
