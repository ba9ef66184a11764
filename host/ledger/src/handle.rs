//! The ledger handle: what a caller holds. Opening a ledger starts its committer; every
//! operation of the other modules is a method on this handle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::commit::{self, CommitObserver, Committer};
use crate::error::LedgerError;
use crate::settings::LedgerSettings;
use crate::store::{Store, on_store};
use crate::transfer::{Recorded, Replies, Transfer};

/// When the ledger last probed a write, and what it found.
type Probe = (Instant, Result<(), String>);

/// How often [`Ledger::writable`] may really write.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a failed batch makes [`Ledger::writable`] fail, unless a batch commits sooner.
pub const BATCH_FAILURE_WINDOW: Duration = Duration::from_secs(5);
/// How long one probe may take in all (the backends bound each lock wait and statement
/// below it): a readiness check must answer even when the database does not.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The ledger, over a pool of database connections.
#[derive(Clone, Debug)]
pub struct Ledger {
    pub(crate) store: Store,
    committer: Committer,
    /// The last write probe; held while probing, so concurrent callers share one probe.
    probe: Arc<tokio::sync::Mutex<Option<Probe>>>,
}

impl Ledger {
    /// Opens the database at `url` and applies pending migrations, with the default batching
    /// and no observer. `sqlite://wasmpay.db` creates the file if needed;
    /// `postgres://user@host/db` connects to an existing database, and creates the schema its
    /// `?options[search_path]=name` names first if there is none.
    ///
    /// A SQLite ledger serves one node: while it is open (until [`Ledger::close`], or the last
    /// handle dropped, or the process gone) opening the same file again, from this process or
    /// another, is [`LedgerError::SqliteInUse`].
    pub async fn open(url: &str) -> Result<Ledger, LedgerError> {
        Ledger::open_with(url, LedgerSettings::default(), None).await
    }

    /// [`Ledger::open`] with `settings`, reporting committed batches to `observer`.
    pub async fn open_with(
        url: &str,
        settings: LedgerSettings,
        observer: Option<Arc<dyn CommitObserver>>,
    ) -> Result<Ledger, LedgerError> {
        Ok(Ledger::start(Store::connect(url, &settings, true).await?, settings, observer))
    }

    /// Opens the ledger at `url` only if one is there, creating nothing: for tools that
    /// inspect a ledger (`wasmpay ledger verify`), where a mistyped URL must not leave a new,
    /// empty ledger behind and report it sound. It takes no SQLite node lock, so it works
    /// beside a running node; writing through it would bypass that lock, which is why only
    /// inspecting tools use it.
    pub async fn open_existing(url: &str) -> Result<Ledger, LedgerError> {
        let settings = LedgerSettings::default();
        Ok(Ledger::start(Store::connect(url, &settings, false).await?, settings, None))
    }

    fn start(store: Store, settings: LedgerSettings, observer: Option<Arc<dyn CommitObserver>>) -> Ledger {
        let committer = commit::start(store.clone(), settings, observer);
        Ledger { store, committer, probe: Arc::default() }
    }

    /// Records `transfer` once, in the next batch, storing the one of `replies` that its
    /// decision picks: the stored reply is exactly the one the caller gets back, and a retry
    /// with the same id gets it too. Returns after the batch committed (or failed).
    pub async fn record(&self, transfer: Transfer, replies: Replies) -> Result<Recorded, LedgerError> {
        self.submit(transfer, replies).await?.await
    }

    /// [`Ledger::record`] in two steps: this call returns once the transfer is queued for a
    /// batch (waiting only while the queue is full), and the future it returns resolves when
    /// that batch committed (or failed). Transfers are decided in the order they were
    /// submitted, so a caller that submits an account's transfers one after the other keeps
    /// their order without waiting for each commit: the next one joins the same batch or a
    /// later one.
    pub async fn submit(
        &self,
        transfer: Transfer,
        replies: Replies,
    ) -> Result<impl Future<Output = Result<Recorded, LedgerError>> + Send + 'static, LedgerError> {
        self.committer.submit(transfer, replies).await
    }

    /// Whether a payment submitted now can be written: the committer runs, no batch failed in
    /// the last [`BATCH_FAILURE_WINDOW`] without one committing since, and a probe commits a
    /// small write that takes the locks a batch takes on the ledger's own tables (a full disk,
    /// a read-only file, a table locked by someone else show only when something is written
    /// there). It probes at most once per [`PROBE_INTERVAL`], within [`PROBE_TIMEOUT`]; in
    /// between it answers what the last probe found.
    pub async fn writable(&self) -> Result<(), String> {
        if self.committer.is_closed() {
            return Err("the ledger's committer has stopped".to_owned());
        }
        if let Some(failure) = self.committer.failed_within(BATCH_FAILURE_WINDOW) {
            return Err(failure);
        }
        let mut probe = self.probe.lock().await;
        if let Some((at, found)) = probe.as_ref()
            && at.elapsed() < PROBE_INTERVAL
        {
            return found.clone();
        }
        let probing =
            on_store!(&self.store, backend => tokio::time::timeout(PROBE_TIMEOUT, backend.probe_write()).await);
        let found = match probing {
            Ok(written) => written.map_err(|error| error.to_string()),
            Err(_) => Err(format!("a probe write did not commit within {PROBE_TIMEOUT:?}")),
        };
        *probe = Some((Instant::now(), found.clone()));
        found
    }

    /// Resolves if the committer has stopped (it only does when it panicked): from then on
    /// every write fails, so the node must stop and be restarted.
    pub async fn stopped(&self) {
        self.committer.closed().await;
    }

    /// Waits for running transactions and closes every connection; a SQLite file may then be
    /// opened by another node.
    pub async fn close(&self) {
        self.store.close().await;
    }
}
