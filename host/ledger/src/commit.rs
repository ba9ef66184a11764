//! Group commit: every transfer goes through one committer task, which gathers what is
//! waiting into a batch (bounded in size, and in delay when one is configured), records each
//! in arrival order inside one write transaction, commits once, and only then answers every
//! transfer of the batch. One fsync serves the whole batch.
//!
//! Each transfer runs inside a savepoint: one that fails (a balance that would overflow, an
//! account that vanished) is rolled back alone and answered with its error, the others still
//! commit. A payment that would cross a floor is a decision, not a failure, and declines alone.
//! If the commit itself fails, nothing of the batch is posted and every transfer in it is
//! answered with a transient error (retry with the same id).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::record::{Decision, Recorded, Transfer, record_in};
use super::write::WriteTransaction;
use super::{Ledger, LedgerError};

/// Transfers that may wait for the committer before `record` itself waits.
const QUEUE_DEPTH: usize = 4_096;

/// How the ledger batches its writes (`[ledger]` in `wasmpay.toml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    /// Transfers in one transaction at most.
    pub batch_size_max: usize,
    /// How long a batch may wait for more transfers once it has one, in microseconds. 0
    /// takes only what is already waiting: while one batch commits the next one fills up,
    /// so batches grow with the load and a lone payment waits for nobody.
    pub batch_delay_us_max: u64,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings { batch_size_max: 512, batch_delay_us_max: 0 }
    }
}

/// Told of every committed batch, so the node can report batch sizes and commit latency
/// without this crate knowing how.
pub trait CommitObserver: Send + Sync + std::fmt::Debug {
    /// A batch of `size` transfers was written and committed in `elapsed`.
    fn batch_committed(&self, size: usize, elapsed: Duration);
}

/// Renders the reply of a transfer once the ledger has decided it.
pub type Render = Box<dyn FnOnce(Decision) -> String + Send>;

/// One transfer waiting for its batch.
pub(super) struct Job {
    transfer: Transfer,
    render: Render,
    answer: oneshot::Sender<Result<Recorded, LedgerError>>,
}

impl Ledger {
    /// Records `transfer` once, in the next batch. `render` turns the decision into the reply
    /// to store and send: it runs inside the transaction, so the stored reply is exactly the
    /// one the client gets. Returns after the batch committed (or failed).
    pub async fn record(
        &self,
        transfer: Transfer,
        render: impl FnOnce(Decision) -> String + Send + 'static,
    ) -> Result<Recorded, LedgerError> {
        let (answer, answered) = oneshot::channel();
        let job = Job { transfer, render: Box::new(render), answer };
        self.committer.send(job).await.map_err(|_| LedgerError::Closed)?;
        answered.await.map_err(|_| LedgerError::Closed)?
    }
}

/// Starts the committer task of `pool`; it ends when every sender is gone.
pub(super) fn start(
    pool: SqlitePool,
    settings: BatchSettings,
    observer: Option<Arc<dyn CommitObserver>>,
) -> mpsc::Sender<Job> {
    let (sender, jobs) = mpsc::channel(QUEUE_DEPTH);
    tokio::spawn(commit_batches(pool, jobs, settings, observer));
    sender
}

async fn commit_batches(
    pool: SqlitePool,
    mut jobs: mpsc::Receiver<Job>,
    settings: BatchSettings,
    observer: Option<Arc<dyn CommitObserver>>,
) {
    let size_max = settings.batch_size_max.max(1);
    let delay = Duration::from_micros(settings.batch_delay_us_max);
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
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
        let started = Instant::now();
        let size = batch.len();
        let committed = apply(&pool, batch).await;
        if committed && let Some(observer) = &observer {
            observer.batch_committed(size, started.elapsed());
        }
    }
}

/// Writes and commits one batch, then answers each transfer; whether it committed.
async fn apply(pool: &SqlitePool, batch: Vec<Job>) -> bool {
    let mut transaction = match WriteTransaction::begin(pool).await {
        Ok(transaction) => transaction,
        Err(error) => {
            fail_all(batch, &error);
            return false;
        }
    };
    let mut outcomes = Vec::with_capacity(batch.len());
    for job in batch {
        let outcome = record_one(&mut transaction, &job.transfer, job.render).await;
        match outcome {
            Ok(outcome) => outcomes.push((job.answer, outcome)),
            // The savepoint itself failed: the transaction cannot be trusted any more.
            Err(error) => {
                let _ = job.answer.send(Err(LedgerError::BatchFailed(error.to_string())));
                for (answer, _) in outcomes {
                    let _ = answer.send(Err(LedgerError::BatchFailed(error.to_string())));
                }
                return false;
            }
        }
    }
    match transaction.commit().await {
        Ok(()) => {
            for (answer, outcome) in outcomes {
                let _ = answer.send(outcome);
            }
            true
        }
        Err(error) => {
            tracing::error!(%error, transfers = outcomes.len(), "a ledger batch did not commit; nothing of it is posted");
            for (answer, _) in outcomes {
                let _ = answer.send(Err(LedgerError::BatchFailed(error.to_string())));
            }
            false
        }
    }
}

/// Records one transfer inside its own savepoint. The outer error means the savepoint could
/// not be handled (the batch is lost); the inner result is the transfer's own.
async fn record_one(
    transaction: &mut WriteTransaction,
    transfer: &Transfer,
    render: Render,
) -> Result<Result<Recorded, LedgerError>, LedgerError> {
    sqlx::query("SAVEPOINT transfer").execute(&mut **transaction).await?;
    let recorded = record_in(transaction, transfer, render).await;
    if recorded.is_err() {
        sqlx::query("ROLLBACK TO transfer").execute(&mut **transaction).await?;
    }
    sqlx::query("RELEASE transfer").execute(&mut **transaction).await?;
    Ok(recorded)
}

fn fail_all(batch: Vec<Job>, error: &LedgerError) {
    tracing::error!(%error, transfers = batch.len(), "a ledger batch could not start");
    for job in batch {
        let _ = job.answer.send(Err(LedgerError::BatchFailed(error.to_string())));
    }
}
