//! Group commit: every transfer goes through one committer task, which gathers what is
//! waiting into a batch (bounded in size, and in delay when one is configured), records each
//! in arrival order inside one write transaction, commits once, and only then answers every
//! transfer of the batch. One fsync serves the whole batch.
//!
//! The batch is read and written with a handful of set-based statements (`store`) and decided
//! in between by pure code (`decision`); the replies were rendered by the callers before they
//! submitted, so nothing but the ledger's own code runs while the transaction is open. A transfer
//! that cannot be recorded (a balance that would overflow) fails alone and writes nothing; a
//! payment that would cross a floor is a decision, not a failure, and declines alone. If the
//! commit itself fails, nothing of the batch is posted and every transfer in it is answered
//! with a transient error (retry with the same id).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use std::collections::{BTreeSet, HashSet};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use wasmpay_protocol::PaymentId;
use wasmpay_protocol::routing::AccountId;

use crate::decision::{self, Keys, Writes};
use crate::error::LedgerError;
use crate::settings::LedgerSettings;
use crate::store::{Store, Transaction};
use crate::transfer::{Recorded, Replies, Transfer};

/// Transfers that may wait for the committer before `record` itself waits.
const QUEUE_DEPTH: usize = 4_096;
/// The largest batch whatever the settings: SQLite's multi-row statements stay well inside
/// its 32,766 bound parameters (19 per payment row).
const BATCH_SIZE_LIMIT: usize = 1_000;
/// How long a batch's reads, or its writes and commit, may take before the batch fails with
/// a retryable error. It bounds what the database's own timeouts do not: a server that stops
/// answering, a connection that hangs. A commit cut off this way may or may not have landed;
/// the retry with the same id finds out (it gets the stored reply, or is decided now).
const BATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Told of every committed batch, so the node can report batch sizes and commit latency
/// without this crate knowing how.
pub trait CommitObserver: Send + Sync + std::fmt::Debug {
    /// A batch of `size` transfers was written and committed in `elapsed`.
    fn batch_committed(&self, size: usize, elapsed: Duration);
    /// A batch refused transfers (or, if a claim committed while it was written, all of them)
    /// because a newer lease owner claimed `partitions`.
    fn batch_fenced(&self, partitions: &[u32]);
}

/// How long a transfer whose payer another transaction holds waits for it, batch after batch,
/// before it fails with [`LedgerError::Busy`] (retryable). A paused node's transaction is
/// ended by the server sooner (`LedgerSettings::idle_transaction_timeout_ms`).
const BUSY_WAIT_MAX: Duration = Duration::from_secs(2);
/// How long the committer waits for new transfers before it tries deferred ones again, so
/// that a held row is not polled in a tight loop.
const BUSY_RETRY_DELAY: Duration = Duration::from_millis(20);

/// One transfer waiting for its batch.
struct Job {
    transfer: Transfer,
    replies: Replies,
    answer: oneshot::Sender<Result<Recorded, LedgerError>>,
    /// When a batch first found its payer held by another transaction.
    busy_since: Option<Instant>,
}

/// The queue into the committer task: what the [`Ledger`](crate::Ledger) handle submits to,
/// and what became of its latest batch.
#[derive(Clone, Debug)]
pub(crate) struct Committer {
    jobs: mpsc::Sender<Job>,
    last: LastBatch,
}

/// How the latest batch to end ended: when and why it failed, or `None` once one committed.
/// A probe's small write can succeed while every batch fails (a full disk whose last free
/// pages fit the probe but not a batch), so readiness asks the batches themselves too.
#[derive(Clone, Debug, Default)]
struct LastBatch(Arc<Mutex<Option<(Instant, String)>>>);

impl LastBatch {
    fn committed(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn failed(&self, error: String) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), error));
    }
}

impl Committer {
    /// Queues `transfer` for a batch (waiting only while the queue is full); the future it
    /// returns resolves when that batch committed (or failed).
    pub(crate) async fn submit(
        &self,
        transfer: Transfer,
        replies: Replies,
    ) -> Result<impl Future<Output = Result<Recorded, LedgerError>> + Send + 'static, LedgerError> {
        let (answer, answered) = oneshot::channel();
        let job = Job { transfer, replies, answer, busy_since: None };
        self.jobs.send(job).await.map_err(|_| LedgerError::Closed)?;
        Ok(async move { answered.await.map_err(|_| LedgerError::Closed)? })
    }

    /// Whether the committer task has stopped (it only does when it panicked).
    pub(crate) fn is_closed(&self) -> bool {
        self.jobs.is_closed()
    }

    /// Resolves once the committer task has stopped.
    pub(crate) async fn closed(&self) {
        self.jobs.closed().await;
    }

    /// Why the latest batch failed, if it did within `window` and none committed since: a
    /// payment submitted now would most likely fail the same way. Past the window the
    /// failure no longer counts, so a node that is told it is not ready (and so gets no
    /// payments to prove itself) still becomes ready again once its probe passes.
    pub(crate) fn failed_within(&self, window: Duration) -> Option<String> {
        let last = self.last.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, error) = last.as_ref()?;
        (at.elapsed() < window)
            .then(|| format!("the last ledger batch failed {:.1} s ago: {error}", at.elapsed().as_secs_f64()))
    }
}

/// Starts the committer task of `store`; it ends when every sender is gone.
pub(crate) fn start(store: Store, settings: LedgerSettings, observer: Option<Arc<dyn CommitObserver>>) -> Committer {
    let (sender, jobs) = mpsc::channel(QUEUE_DEPTH);
    let last = LastBatch::default();
    tokio::spawn(commit_batches(store, jobs, settings, observer, last.clone()));
    Committer { jobs: sender, last }
}

async fn commit_batches(
    store: Store,
    mut jobs: mpsc::Receiver<Job>,
    settings: LedgerSettings,
    observer: Option<Arc<dyn CommitObserver>>,
    last: LastBatch,
) {
    let size_max = settings.batch_size_max.clamp(1, BATCH_SIZE_LIMIT);
    let delay = Duration::from_micros(settings.batch_delay_us_max);
    // The batch being written and committed. At most one: batches commit in the order they
    // were decided.
    let mut committing: Option<Committing> = None;
    // Transfers whose payer another transaction held, in submission order: they open the next
    // batch, ahead of anything submitted after them.
    let mut deferred: Vec<Job> = Vec::new();
    while let Some(batch) = gather(&mut jobs, &mut deferred, size_max, delay).await {
        let depends = committing.as_ref().is_some_and(|committing| committing.seen_by(&batch));
        if depends || !store.overlaps_batches() {
            wait_for(committing.take()).await;
        }
        let started = Instant::now();
        let (prepared, busy) = prepare(&store, batch, &last).await;
        // `gather` took every deferred transfer (there are never more than a batch), so this
        // is the whole list; were any left, those put off now would still go first, since
        // `gather` takes the oldest.
        deferred.splice(0..0, busy);
        wait_for(committing.take()).await;
        if let Some(prepared) = prepared {
            let ids = prepared.ids.clone();
            let credited = prepared.writes.credits.keys().map(|(id, _)| id.clone()).collect();
            let payers = prepared.writes.balances.keys().cloned().collect();
            let task = tokio::spawn(finish(prepared, started, observer.clone(), last.clone()));
            committing = Some(Committing { ids, credited, payers, task });
        }
    }
    wait_for(committing).await;
}

/// A batch being written and committed while the next one is prepared.
struct Committing {
    ids: HashSet<PaymentId>,
    /// Accounts it credits through sub-balances, which it does not lock.
    credited: HashSet<AccountId>,
    /// Accounts whose rows it holds until it commits.
    payers: HashSet<AccountId>,
    task: JoinHandle<()>,
}

impl Committing {
    /// Whether `batch` must see this one's effects before it is read: it repeats one of its
    /// ids (whose lookup must find that payment, or its insert fails on the duplicate key), or
    /// it debits an account this one credits (a credit takes no lock, so the next batch would
    /// read the balance without it and could decline a payment submitted after the credit),
    /// or it debits an account this one holds (the next batch would find the row held and put
    /// its transfers off for nothing).
    fn seen_by(&self, batch: &[Job]) -> bool {
        batch.iter().any(|job| {
            self.ids.contains(&job.transfer.id)
                || job.transfer.debited().any(|payer| self.credited.contains(payer) || self.payers.contains(payer))
        })
    }
}

/// Takes the next batch: the deferred transfers first, then what is waiting (at least one
/// transfer, waiting for it, unless some were deferred: then for at most
/// [`BUSY_RETRY_DELAY`]), up to `size_max`, and for at most `delay` more if one is set.
/// `None` once every sender is gone and nothing is deferred.
async fn gather(
    jobs: &mut mpsc::Receiver<Job>,
    deferred: &mut Vec<Job>,
    size_max: usize,
    delay: Duration,
) -> Option<Vec<Job>> {
    let mut batch: Vec<Job> = deferred.drain(..deferred.len().min(size_max)).collect();
    if batch.is_empty() {
        batch.push(jobs.recv().await?);
    } else if batch.len() < size_max {
        match tokio::time::timeout(BUSY_RETRY_DELAY, jobs.recv()).await {
            Ok(Some(job)) => batch.push(job),
            // Closed (the node is stopping): the deferred transfers are still retried, paced.
            Ok(None) => tokio::time::sleep(BUSY_RETRY_DELAY).await,
            Err(_) => {}
        }
    }
    while batch.len() < size_max {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    if !delay.is_zero() {
        let deadline = tokio::time::Instant::now() + delay;
        while batch.len() < size_max {
            match tokio::time::timeout_at(deadline, jobs.recv()).await {
                Ok(Some(job)) => batch.push(job),
                _ => break,
            }
        }
    }
    Some(batch)
}

async fn wait_for(committing: Option<Committing>) {
    if let Some(Committing { task, .. }) = committing
        && let Err(error) = task.await
    {
        // Its transfers' answers were dropped with it: their callers get `Closed`.
        tracing::error!(%error, "a ledger batch's commit task failed");
    }
}

/// A batch read, locked and decided: what is left is to write, commit and answer it.
struct Prepared {
    ids: HashSet<PaymentId>,
    transaction: Transaction,
    writes: Writes,
    outcomes: Vec<Result<Recorded, LedgerError>>,
    answers: Vec<oneshot::Sender<Result<Recorded, LedgerError>>>,
}

/// Reads, locks and decides a batch; on failure answers every transfer in it. Returns the
/// prepared batch, and the transfers put off because another transaction holds their payer
/// (each fails with [`LedgerError::Busy`] once it has waited [`BUSY_WAIT_MAX`]).
async fn prepare(store: &Store, batch: Vec<Job>, last: &LastBatch) -> (Option<Prepared>, Vec<Job>) {
    let keys = Keys::of(batch.iter().map(|job| &job.transfer));
    let begun = match tokio::time::timeout(BATCH_TIMEOUT, store.begin_batch(&keys)).await {
        Ok(Ok(begun)) => begun,
        Ok(Err(error)) => {
            fail_all(batch.into_iter().map(|job| job.answer).collect(), "could not start", &error, last);
            return (None, Vec::new());
        }
        Err(_) => {
            let answers = batch.into_iter().map(|job| job.answer).collect();
            fail_all(answers, "could not start", &format!("not read within {BATCH_TIMEOUT:?}"), last);
            return (None, Vec::new());
        }
    };
    let (batch, deferred) = put_off_busy(batch, &begun.busy);
    if batch.is_empty() {
        // Everything was put off: nothing to write, and no commit to report (the transaction
        // is rolled back as it is dropped).
        return (None, deferred);
    }
    let (jobs, answers): (Vec<(Transfer, Replies)>, Vec<_>) =
        batch.into_iter().map(|job| ((job.transfer, job.replies), job.answer)).unzip();
    // The ids this batch records, not those it put off: a later batch that holds the deferred
    // transfers need not wait for this one's commit on their account.
    let ids = jobs.iter().map(|(transfer, _)| transfer.id.clone()).collect();
    let (outcomes, writes) = decision::decide(jobs, begun.found, &begun.held, &begun.fences);
    (Some(Prepared { ids, transaction: begun.transaction, writes, outcomes, answers }), deferred)
}

/// Splits off the transfers that must wait, keeping their order: those whose payer is `busy`,
/// and, so that the ledger still decides in submission order, those whose payer a waiting
/// transfer credits (a payment must see a credit submitted before it). Those that have waited
/// [`BUSY_WAIT_MAX`] are answered [`LedgerError::Busy`], and so are the later transfers of
/// their payer in this batch, so a payer's order is not turned round by a refusal; the others
/// are returned to wait for a later batch.
fn put_off_busy(batch: Vec<Job>, busy: &BTreeSet<AccountId>) -> (Vec<Job>, Vec<Job>) {
    if busy.is_empty() {
        return (batch, Vec::new());
    }
    let now = Instant::now();
    let mut waiting = busy.clone();
    let mut refused: BTreeSet<AccountId> = BTreeSet::new();
    let (mut ready, mut deferred) = (Vec::with_capacity(batch.len()), Vec::new());
    for mut job in batch {
        let Some(held) = job.transfer.debited().find(|account| waiting.contains(*account)).cloned() else {
            ready.push(job);
            continue;
        };
        let since = *job.busy_since.get_or_insert(now);
        if job.transfer.debited().any(|account| refused.contains(account)) || now.duration_since(since) >= BUSY_WAIT_MAX
        {
            tracing::warn!(payer = %held, "a payer's row stayed held by another writer; transfer refused, retryable");
            refused.extend(job.transfer.debited().cloned());
            let _ = job.answer.send(Err(LedgerError::Busy(held.to_string())));
        } else {
            waiting.extend(job.transfer.accounts().cloned());
            deferred.push(job);
        }
    }
    (ready, deferred)
}

/// Writes and commits a prepared batch, then answers each transfer.
async fn finish(prepared: Prepared, started: Instant, observer: Option<Arc<dyn CommitObserver>>, last: LastBatch) {
    let Prepared { transaction, writes, outcomes, answers, .. } = prepared;
    let written = tokio::time::timeout(BATCH_TIMEOUT, transaction.write_batch(&writes)).await;
    let written =
        written.unwrap_or_else(|_| Err(LedgerError::BatchFailed(format!("not committed within {BATCH_TIMEOUT:?}"))));
    match written {
        Ok(()) => {
            last.committed();
            let size = answers.len();
            let mut fenced = BTreeSet::new();
            for (answer, outcome) in answers.into_iter().zip(outcomes) {
                if let Err(LedgerError::Fenced(partitions)) = &outcome {
                    fenced.extend(partitions.iter().copied());
                }
                let _ = answer.send(outcome);
            }
            if let Some(observer) = &observer {
                observer.batch_committed(size, started.elapsed());
                if !fenced.is_empty() {
                    observer.batch_fenced(&fenced.into_iter().collect::<Vec<_>>());
                }
            }
        }
        // A fenced batch tells each caller so: another node owns the partition now.
        Err(LedgerError::Fenced(partitions)) => {
            tracing::warn!(
                ?partitions,
                transfers = answers.len(),
                "a ledger batch was fenced; nothing of it is posted"
            );
            for answer in answers {
                let _ = answer.send(Err(LedgerError::Fenced(partitions.clone())));
            }
            if let Some(observer) = &observer {
                observer.batch_fenced(&partitions);
            }
        }
        Err(error) => fail_all(answers, "did not commit; nothing of it is posted", &error, &last),
    }
}

/// Answers every transfer of a batch that failed (a fenced batch is not a failure of the
/// ledger: another node owns the partition), and remembers why for readiness.
fn fail_all(
    answers: Vec<oneshot::Sender<Result<Recorded, LedgerError>>>,
    what: &str,
    error: &dyn std::fmt::Display,
    last: &LastBatch,
) {
    tracing::error!(%error, transfers = answers.len(), "a ledger batch {what}");
    last.failed(error.to_string());
    for answer in answers {
        let _ = answer.send(Err(LedgerError::BatchFailed(error.to_string())));
    }
}
