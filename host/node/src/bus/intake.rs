//! Taking an owned partition's payments: the request-reply subscription and, in durable
//! mode, the partition's JetStream consumer, both feeding the partition's worker.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::{Client, Message, Subscriber};
use futures::future::join_all;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use wasmpay_cluster::Partitions;

use super::worker::{Incoming, Job};
use super::{
    BusError, CLOSE_TIMEOUT, DRAIN_TIMEOUT, FLUSH_TIMEOUT, OPEN_TIMEOUT, SUBSCRIPTION_STOP_TIMEOUT,
    WORKERS_STOP_TIMEOUT, refuse,
};
use crate::durable::Durable;
use crate::metrics::Metrics;
use crate::shutdown;
use wasmpay_protocol::Code;
use wasmpay_protocol::routing::subjects;

/// How long to wait after a failed pull before the next.
const PULL_RETRY_DELAY: Duration = Duration::from_millis(100);
/// How long to wait before recreating a partition's durable consumer.
const CONSUMER_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Opens and closes the partitions this node owns, each under one lease.
#[derive(Clone, Debug)]
pub struct Intake {
    pub(super) client: Client,
    pub(super) metrics: Arc<Metrics>,
    pub(super) partition_queue_depth: usize,
    pub(super) durable: Option<Durable>,
    /// One queue per partition; emptied when the bus finishes, which ends the workers.
    pub(super) queues: Arc<Mutex<Vec<mpsc::Sender<Job>>>>,
    pub(super) open: Arc<tokio::sync::Mutex<HashMap<u32, Pump>>>,
    /// Numbers each opening, so a late close of an earlier opening cannot close a later one.
    pub(super) openings: Arc<AtomicU64>,
    /// How often an open partition's worker is asked to release its due holds.
    pub(super) hold_sweep: Duration,
}

/// One open partition: the tasks moving its payments to its worker, how to stop them, and
/// (durable mode) how many stored payments wait for it.
#[derive(Debug)]
pub(super) struct Pump {
    opening: u64,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    queue: mpsc::Sender<Job>,
    lag: Arc<AtomicU64>,
}

/// The bus's side of ownership: the cluster opens a partition once it holds the lease and
/// closes it before releasing it.
impl Partitions for Intake {
    type Error = BusError;

    const CLOSE_TIMEOUT: Duration = CLOSE_TIMEOUT;
    const OPEN_TIMEOUT: Duration = OPEN_TIMEOUT;

    /// Starts taking `partition`'s payments under the lease with fencing token `token`;
    /// returns once the server has registered the subscription (and, in durable mode, the
    /// partition's consumer is recreated from its acknowledgement floor), with the number of
    /// this opening for [`Intake::close_opening`].
    async fn open(&self, partition: u32, token: u64) -> Result<u64, BusError> {
        let queue = {
            let queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
            usize::try_from(partition).ok().and_then(|index| queues.get(index).cloned())
        };
        let Some(queue) = queue else {
            return Err(BusError::NoWorker(partition));
        };
        let earlier = self.open.lock().await.remove(&partition);
        if let Some(earlier) = earlier {
            // Opened twice: the older intake is handed over like any other first.
            let _ = close_pump(partition, earlier).await;
        }
        let subject = format!("{}.{partition}.*", subjects::PAY_PREFIX);
        let subscribing = tokio::time::timeout(FLUSH_TIMEOUT, async {
            let subscriber = self
                .client
                .subscribe(subject.clone())
                .await
                .map_err(|source| BusError::Subscribe { subject: subject.clone(), source })?;
            self.client.flush().await.map_err(BusError::Flush)?;
            Ok::<_, BusError>(subscriber)
        });
        let subscriber = match subscribing.await {
            Ok(subscribed) => subscribed?,
            Err(_) => return Err(BusError::Unconfirmed { subject, within: FLUSH_TIMEOUT }),
        };
        let (stop, stopped) = watch::channel(false);
        let lag = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        if let Some(durable) = &self.durable {
            let depth = self.partition_queue_depth;
            let (durable, queue, stopped, lag) = (durable.clone(), queue.clone(), stopped.clone(), lag.clone());
            tasks.push(tokio::spawn(consume(partition, token, durable, depth, queue, stopped, lag)));
        }
        let taker = Taker { client: self.client.clone(), metrics: self.metrics.clone(), partition, token };
        let depth = self.partition_queue_depth;
        tasks.push(tokio::spawn(sweep_holds(token, self.hold_sweep, queue.clone(), stopped.clone())));
        tasks.push(tokio::spawn(subscribed(taker, depth, subscriber, queue.clone(), stopped)));
        let opening = self.openings.fetch_add(1, Ordering::Relaxed);
        self.open.lock().await.insert(partition, Pump { opening, stop, tasks, queue, lag });
        Ok(opening)
    }

    /// Stops taking `partition`'s payments: unsubscribes (what the server had sent is still
    /// taken) and stops its consumer (what it had not delivered goes to the next owner), and
    /// returns once the worker has answered every payment the partition took, so the lease may
    /// go to the next owner. Bounded by the drain and the workers' stop bound; says whether the
    /// worker answered everything within it (a partition that was not open has nothing to answer).
    async fn close(&self, partition: u32) -> bool {
        let pump = self.open.lock().await.remove(&partition);
        match pump {
            Some(pump) => close_pump(partition, pump).await,
            None => true,
        }
    }

    /// [`Intake::close`], only if `partition` is still open from `opening`.
    async fn close_opening(&self, partition: u32, opening: u64) {
        let pump = {
            let mut open = self.open.lock().await;
            match open.get(&partition) {
                Some(pump) if pump.opening == opening => open.remove(&partition),
                _ => None,
            }
        };
        if let Some(pump) = pump {
            close_pump(partition, pump).await;
        }
    }

    /// In durable mode, the stored payments waiting for each open partition's worker.
    async fn lags(&self) -> BTreeMap<u32, u64> {
        if self.durable.is_none() {
            return BTreeMap::new();
        }
        let open = self.open.lock().await;
        open.iter().map(|(partition, pump)| (*partition, pump.lag.load(Ordering::Relaxed))).collect()
    }
}

impl Intake {
    /// The partitions open on this node: each one's subscription was confirmed by the NATS
    /// server (a flush) before it was counted here.
    pub async fn subscribed(&self) -> std::collections::BTreeSet<u32> {
        self.open.lock().await.keys().copied().collect()
    }

    /// Ends the workers once every partition is closed: closes the queues, waits (bounded) for
    /// the workers to answer what they hold, and flushes the connection.
    pub async fn finish(&self, mut workers: JoinSet<()>) {
        let open: Vec<u32> = self.open.lock().await.keys().copied().collect();
        join_all(open.into_iter().map(|partition| self.close(partition))).await;
        self.queues.lock().unwrap_or_else(PoisonError::into_inner).clear();
        let finished =
            tokio::time::timeout(WORKERS_STOP_TIMEOUT, async { while workers.join_next().await.is_some() {} }).await;
        if finished.is_err() {
            // What a worker still holds is either recorded (a retry gets the stored reply) or
            // not (a retry records it): stopping it loses no payment.
            tracing::warn!("partition workers still busy after {WORKERS_STOP_TIMEOUT:?}; stopping them");
            workers.abort_all();
        }
        if tokio::time::timeout(FLUSH_TIMEOUT, self.client.flush()).await.is_err() {
            tracing::warn!("NATS did not confirm the last replies within {FLUSH_TIMEOUT:?}");
        }
        tracing::info!("bus stopped");
    }
}

/// Stops a partition's tasks, then waits (bounded) until its worker has answered everything
/// they handed it; whether it did. At most [`CLOSE_TIMEOUT`]: the tasks stop side by side
/// within [`SUBSCRIPTION_STOP_TIMEOUT`], and asking the worker and its answer share one
/// [`WORKERS_STOP_TIMEOUT`].
async fn close_pump(partition: u32, mut pump: Pump) -> bool {
    let _ = pump.stop.send(true);
    let stopped = tokio::time::timeout(SUBSCRIPTION_STOP_TIMEOUT, join_all(pump.tasks.iter_mut())).await;
    if stopped.is_err() {
        tracing::warn!(
            partition,
            "stopping the partition's intake took more than {SUBSCRIPTION_STOP_TIMEOUT:?}; aborting it"
        );
        for task in &pump.tasks {
            task.abort();
        }
    }
    let (flushed, answered) = oneshot::channel();
    let flush = async { pump.queue.send(Job::Flush(flushed)).await.is_ok() && answered.await.is_ok() };
    let done = tokio::time::timeout(WORKERS_STOP_TIMEOUT, flush).await.unwrap_or(false);
    if !done {
        tracing::warn!(partition, "the worker did not answer what it holds within {WORKERS_STOP_TIMEOUT:?}");
    }
    done
}

/// What a partition's request-reply intake needs to take or refuse a message.
struct Taker {
    client: Client,
    metrics: Arc<Metrics>,
    partition: u32,
    token: u64,
}

/// Asks an owned partition's worker every `interval` to release its due holds, under the
/// lease with `token`, until stopped. A full queue skips a sweep: payments come first, and the
/// holds stay due for the next one.
async fn sweep_holds(token: u64, interval: Duration, queue: mpsc::Sender<Job>, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown::requested(&mut stop) => return,
            _ = ticks.tick() => {
                if let Err(mpsc::error::TrySendError::Closed(_)) = queue.try_send(Job::Expire(token)) {
                    return;
                }
            }
        }
    }
}

/// Moves an owned partition's request-reply messages to its worker until stopped; then
/// unsubscribes and moves what the server had already sent.
async fn subscribed(
    taker: Taker,
    depth: usize,
    mut subscriber: Subscriber,
    queue: mpsc::Sender<Job>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = shutdown::requested(&mut stop) => break,
            message = subscriber.next() => match message {
                Some(message) => taker.dispatch(message, depth, &queue).await,
                None => return,
            },
        }
    }
    // With the server gone an unsubscribe is never confirmed (nor does the subscription end):
    // what was received is all there is.
    if taker.client.connection_state() != async_nats::connection::State::Connected {
        while let Some(Some(message)) = subscriber.next().now_or_never() {
            taker.dispatch(message, depth, &queue).await;
        }
        return;
    }
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let _ = subscriber.drain().await;
        while let Some(message) = subscriber.next().await {
            taker.dispatch(message, depth, &queue).await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(partition = taker.partition, "NATS did not confirm the unsubscribe within {DRAIN_TIMEOUT:?}");
    }
}

impl Taker {
    /// Hands a message to the worker, never waiting: a full queue refuses it at once
    /// (`unavailable`, retry with the same id), so one payer's flood cannot hold up the rest.
    async fn dispatch(&self, message: Message, depth: usize, queue: &mpsc::Sender<Job>) {
        let partition = self.partition;
        let refused = match queue.try_send(Job::Pay(Incoming::Core(message), self.token, Instant::now())) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(job)) => {
                (job, format!("partition {partition} is saturated ({depth} payments waiting); retry with the same id"))
            }
            Err(mpsc::error::TrySendError::Closed(job)) => (job, "the node is shutting down".to_owned()),
        };
        if let (Job::Pay(Incoming::Core(message), ..), text) = refused {
            refuse(&self.client, &self.metrics, &message, Code::Unavailable, text).await;
        }
    }
}

/// Moves an owned partition's durable payments to its worker until stopped, waiting for room
/// in the queue (the consumer delivers at most the queue's depth unacknowledged). What it has
/// not handed over when stopped stays unacknowledged and goes to the next owner. If the pull
/// stream ends or fails (a lost consumer, a server restart), the consumer is recreated from its
/// acknowledgement floor after a pause, so a partition never stalls while its lease lives.
async fn consume(
    partition: u32,
    token: u64,
    durable: Durable,
    depth: usize,
    queue: mpsc::Sender<Job>,
    mut stop: watch::Receiver<bool>,
    lag: Arc<AtomicU64>,
) {
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                () = shutdown::requested(&mut stop) => return,
                () = tokio::time::sleep(CONSUMER_RETRY_DELAY) => {}
            }
        }
        first = false;
        let consumer = tokio::select! {
            () = shutdown::requested(&mut stop) => return,
            consumer = durable.consumer(partition, token, depth) => consumer,
        };
        let messages = match consumer {
            Ok(consumer) => tokio::select! {
                () = shutdown::requested(&mut stop) => return,
                messages = consumer.messages() => messages,
            },
            Err(error) => {
                tracing::warn!(partition, %error, "durable payments: cannot recreate the consumer; trying again");
                continue;
            }
        };
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(partition, %error, "durable payments: cannot pull; trying again");
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                () = shutdown::requested(&mut stop) => return,
                message = messages.next() => message,
            };
            match message {
                Some(Ok(message)) => {
                    if let Ok(info) = message.info() {
                        lag.store(info.pending, Ordering::Relaxed);
                    }
                    tokio::select! {
                        () = shutdown::requested(&mut stop) => return,
                        sent = queue.send(Job::Pay(Incoming::Durable(Box::new(message)), token, Instant::now())) => if sent.is_err() { return },
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(partition, %error, "durable payments: a pull failed; pulling again");
                    tokio::time::sleep(PULL_RETRY_DELAY).await;
                }
                None => {
                    tracing::warn!(partition, "durable payments: the pull stream ended; recreating the consumer");
                    break;
                }
            }
        }
    }
}
