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
//! Layout, from the top down (a module imports only modules below it):
//! - this file: the [`Ledger`] handle (open, probe, close);
//! - operations on it: `commit` (group commit: [`Ledger::record`] and [`Ledger::submit`]),
//!   `accounts` (open and read accounts), `funding` (deposits), `fencing` (partition claims,
//!   the ledger's identity), `queries` (a recorded payment, the audit of the books);
//! - `store`: the backend boundary, one `Store` over `store::sqlite` or
//!   `store::postgres`, which share row shapes and SQL fragments (`store::sql`) and their
//!   migrations (`store::schema`);
//! - `decision`: one batch decided in memory, pure code with no I/O;
//! - the types everything above decides on and stores: `transfer` (a transfer, the replies its
//!   caller stores with it, the decision, the entries' rule), `account`, `settings`, `error`.
//!
//! Money and account ids come from `wasmpay-protocol`; nothing here knows about plugins, NATS
//! or HTTP. The ledger runs no caller code: a caller renders a transfer's replies before
//! submitting it ([`Replies`]), and the ledger stores the one its decision picks.

mod account;
mod accounts;
mod commit;
mod decision;
mod error;
mod fencing;
mod funding;
mod queries;
mod settings;
mod store;
mod transfer;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use account::{Account, AccountKind, NewAccount, external_account, fee_account};
pub use commit::CommitObserver;
pub use error::LedgerError;
pub use funding::Deposited;
pub use queries::{Audit, StoredPayment};
pub use settings::{Durability, LedgerSettings};
pub use transfer::{Decision, Recorded, Replies, StoredReply, Transfer, TransferKind};

/// When the ledger last probed a write, and what it found.
type Probe = (Instant, Result<(), String>);

/// How often [`Ledger::writable`] may really write.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The ledger, over a pool of database connections.
#[derive(Clone, Debug)]
pub struct Ledger {
    store: store::Store,
    committer: tokio::sync::mpsc::Sender<commit::Job>,
    /// The last write probe; held while probing, so concurrent callers share one probe.
    probe: Arc<tokio::sync::Mutex<Option<Probe>>>,
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

#[cfg(test)]
mod tests;
