//! The NATS side of a node: the partitions this node owns, one worker per partition, and the
//! subjects every node serves (submissions, cluster info).
//!
//! Ownership: a node takes a partition's payments only while it holds the partition's lease
//! (`cluster`), so the bus subscribes to `wasmpay.pay.<partition>.*` per owned partition
//! ([`Intake::open`]), never to every partition, and hands a partition over by unsubscribing,
//! answering what it took, and only then letting the lease go ([`Intake::close`]).
//!
//! Ordering: NATS delivers one subscription's messages in order; the partition's intake hands
//! each to the partition's worker through a bounded queue, and a worker decides one payment at
//! a time and submits it to the ledger, which decides in submission order, so one account's
//! payments are applied in the order they arrived. An intake never waits for its worker: a
//! payment for a full queue is refused at once (`unavailable`, retry with the same id).
//!
//! Shutdown: the submissions are drained first (what they forward still reaches a partition's
//! owner), then the cluster hands every partition over, then the queues close, every worker
//! finishes and replies to what it holds, and the connection is flushed. Every one of those
//! waits is bounded, so a node stops even with NATS gone: a reply or event publish gives up
//! after 1 s, and workers still answering after their 10 s stop bound are aborted; what they
//! held is recorded or not, and a retry settles it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, Message, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::metrics::Metrics;
use crate::payments::{Decided, Processor, Route};
use crate::shutdown::{self, Signal};
use wasmpay_protocol::routing::{AccountId, Partitioner, subjects};
use wasmpay_protocol::{ClusterInfo, Code, Refusal, Reply};

/// How long handing over one subscription may take (the server confirms the unsubscribe);
/// with the NATS server gone a drain is never confirmed, so it must not be waited for without
/// a bound.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one publish (a reply, an event, a forward) may wait for the connection's buffer.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the partition workers get to finish what they hold once the queues close (each
/// reply may wait [`PUBLISH_TIMEOUT`] when the server is gone), and how long a handover waits
/// for its worker to answer what the partition took.
const WORKERS_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the final flush, and the flush that registers a new subscription, may wait.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// How a node's bus is set up.
#[derive(Clone, Debug)]
pub struct BusSettings {
    /// The partitioning of accounts.
    pub partitioner: Partitioner,
    /// This node's name in `wasmpay.cluster.info`.
    pub node_id: String,
    /// Payments one partition may hold waiting; more are refused at once (`unavailable`).
    pub partition_queue_depth: usize,
}

/// A NATS failure while setting up a subscription.
#[derive(Debug, thiserror::Error)]
#[error("nats: {0}")]
pub struct BusError(String);

/// What a partition worker is asked to do.
#[derive(Debug)]
enum Job {
    /// Decide a payment taken under the lease with this fencing token.
    Pay(Message, u64),
    /// Answer every payment taken before this, then say so: a handover is complete.
    Flush(oneshot::Sender<()>),
}

/// The bus of one node.
#[derive(Debug)]
pub struct Bus {
    client: Client,
    processor: Arc<Processor>,
    metrics: Arc<Metrics>,
    settings: BusSettings,
}

/// What one node's intakes share: where replies go, and how to refuse.
#[derive(Debug)]
struct Replier {
    client: Client,
    metrics: Arc<Metrics>,
    partition_queue_depth: usize,
}

/// The running bus's serving task; it hands its workers back when it ends.
pub type Serving = JoinHandle<JoinSet<()>>;

impl Bus {
    /// A bus for `processor` on `client`.
    pub fn new(client: Client, processor: Arc<Processor>, metrics: Arc<Metrics>, settings: BusSettings) -> Bus {
        Bus { client, processor, metrics, settings }
    }

    /// Starts one worker per partition and subscribes to the subjects every node serves;
    /// returns once the subscriptions are registered with the server, with the task that
    /// serves them until `shutdown` turns true, and the [`Intake`] that opens and closes the
    /// partitions this node owns. If a partition worker dies (a bug: a panic), the bus stops
    /// and says why on `failure`, so the node can stop and be restarted rather than leave a
    /// partition unserved.
    pub async fn start(
        self,
        shutdown: Signal,
        failure: watch::Sender<Option<String>>,
    ) -> Result<(Serving, Intake), BusError> {
        let submit = self
            .client
            .queue_subscribe(format!("{}.*", subjects::SUBMIT_PREFIX), subjects::SUBMIT_QUEUE_GROUP.to_owned())
            .await
            .map_err(nats)?;
        let info = self.client.subscribe(subjects::CLUSTER_INFO).await.map_err(nats)?;
        self.client.flush().await.map_err(nats)?;
        let mut workers = JoinSet::new();
        let queues: Vec<mpsc::Sender<Job>> = (0..self.settings.partitioner.partitions())
            .map(|partition| {
                let (sender, receiver) = mpsc::channel(self.settings.partition_queue_depth.max(1));
                workers.spawn(worker(partition, receiver, self.processor.clone(), self.client.clone()));
                sender
            })
            .collect();
        let replier = Arc::new(Replier {
            client: self.client.clone(),
            metrics: self.metrics.clone(),
            partition_queue_depth: self.settings.partition_queue_depth,
        });
        let intake = Intake { replier, queues: Arc::new(Mutex::new(queues)), open: Arc::default() };
        Ok((tokio::spawn(self.serve(submit, info, workers, shutdown, failure)), intake))
    }

    async fn serve(
        self,
        mut submit: Subscriber,
        mut info: Subscriber,
        mut workers: JoinSet<()>,
        mut shutdown: Signal,
        failure: watch::Sender<Option<String>>,
    ) -> JoinSet<()> {
        let cluster = ClusterInfo::new(self.settings.partitioner, &self.settings.node_id);
        let info_reply = Bytes::from(serde_json::to_vec(&cluster).unwrap_or_default());
        loop {
            tokio::select! {
                () = shutdown::requested(&mut shutdown) => break,
                Some(ended) = workers.join_next() => {
                    let cause = death_cause(ended);
                    tracing::error!(%cause, "a partition worker died; the node stops taking payments and exits");
                    let _ = failure.send(Some(format!("a partition worker died: {cause}")));
                    break;
                }
                Some(message) = submit.next() => self.forward(message).await,
                Some(message) = info.next() => {
                    if let Some(reply) = message.reply {
                        publish(&self.client, reply.to_string(), info_reply.clone()).await;
                    }
                }
                else => break,
            }
        }
        // What the submissions still hold is forwarded while the partitions are still owned.
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            let _ = submit.drain().await;
            while let Some(message) = submit.next().await {
                self.forward(message).await;
            }
            let _ = info.drain().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("NATS did not confirm the drain within {DRAIN_TIMEOUT:?}; stopping with what was received");
        }
        workers
    }

    /// Forwards `wasmpay.submit.<payer>` to the payer's partition subject, keeping the reply
    /// subject so the owner answers the client directly.
    async fn forward(&self, message: Message) {
        let payer = message.subject.strip_prefix(subjects::SUBMIT_PREFIX).and_then(|rest| rest.strip_prefix('.'));
        let Some(payer) = payer.and_then(|token| AccountId::new(token).ok()) else {
            let text = format!("`{}` is not wasmpay.submit.<payer account id>", message.subject);
            return refuse(&self.client, &self.metrics, &message, Code::InvalidRequest, text).await;
        };
        let subject = subjects::pay(self.settings.partitioner.partition_of(&payer), payer.as_str());
        let forwarded = match message.reply {
            Some(reply) => bounded(self.client.publish_with_reply(subject, reply, message.payload)).await,
            None => bounded(self.client.publish(subject, message.payload)).await,
        };
        if let Err(error) = forwarded {
            tracing::warn!(%error, "could not forward a submitted payment");
        }
    }
}

/// Opens and closes the partitions this node owns: a subscription to
/// `wasmpay.pay.<partition>.*` feeding the partition's worker, under one lease.
#[derive(Clone, Debug)]
pub struct Intake {
    replier: Arc<Replier>,
    /// One queue per partition; emptied when the bus finishes, which ends the workers.
    queues: Arc<Mutex<Vec<mpsc::Sender<Job>>>>,
    open: Arc<tokio::sync::Mutex<HashMap<u32, Pump>>>,
}

/// One open partition: the task moving its messages to its worker, and how to stop it.
#[derive(Debug)]
struct Pump {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Intake {
    /// Starts taking `partition`'s payments under the lease with fencing token `token`;
    /// returns once the server has registered the subscription.
    pub async fn open(&self, partition: u32, token: u64) -> Result<(), BusError> {
        let queue = {
            let queues = self.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let index = usize::try_from(partition).ok();
            index.and_then(|index| queues.get(index).cloned())
        };
        let Some(queue) = queue else {
            return Err(BusError(format!("partition {partition} has no worker (or the bus has finished)")));
        };
        let client = &self.replier.client;
        let subscriber = client.subscribe(format!("{}.{partition}.*", subjects::PAY_PREFIX)).await.map_err(nats)?;
        match tokio::time::timeout(FLUSH_TIMEOUT, client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(nats(error)),
            Err(_) => return Err(BusError(format!("the subscription was not confirmed within {FLUSH_TIMEOUT:?}"))),
        }
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(pump(partition, token, subscriber, queue, stopped, self.replier.clone()));
        if let Some(earlier) = self.open.lock().await.insert(partition, Pump { stop, task }) {
            // Opened twice: the older subscription is handed over like any other.
            close_pump(partition, earlier).await;
        }
        Ok(())
    }

    /// Stops taking `partition`'s payments: unsubscribes (what the server had sent is still
    /// taken), and returns once the worker has answered every payment the partition took, so
    /// the lease may go to the next owner. Bounded by the drain and the workers' stop bound.
    pub async fn close(&self, partition: u32) {
        let pump = self.open.lock().await.remove(&partition);
        if let Some(pump) = pump {
            close_pump(partition, pump).await;
        }
    }

    /// Ends the workers once every partition is closed: closes the queues, waits (bounded) for
    /// the workers to answer what they hold, and flushes the connection.
    pub async fn finish(&self, mut workers: JoinSet<()>) {
        let open: Vec<u32> = self.open.lock().await.keys().copied().collect();
        for partition in open {
            self.close(partition).await;
        }
        self.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        let finished =
            tokio::time::timeout(WORKERS_STOP_TIMEOUT, async { while workers.join_next().await.is_some() {} }).await;
        if finished.is_err() {
            // What a worker still holds is either recorded (a retry gets the stored reply) or
            // not (a retry records it): stopping it loses no payment.
            tracing::warn!("partition workers still busy after {WORKERS_STOP_TIMEOUT:?}; stopping them");
            workers.abort_all();
        }
        if tokio::time::timeout(FLUSH_TIMEOUT, self.replier.client.flush()).await.is_err() {
            tracing::warn!("NATS did not confirm the last replies within {FLUSH_TIMEOUT:?}");
        }
        tracing::info!("bus stopped");
    }
}

async fn close_pump(partition: u32, mut pump: Pump) {
    let _ = pump.stop.send(());
    let bound = DRAIN_TIMEOUT + WORKERS_STOP_TIMEOUT + PUBLISH_TIMEOUT;
    if tokio::time::timeout(bound, &mut pump.task).await.is_err() {
        tracing::warn!(partition, "handing the partition over took more than {bound:?}; stopping its intake");
        pump.task.abort();
    }
}

/// Moves one owned partition's messages to its worker until stopped; then unsubscribes, moves
/// what the server had already sent, and waits (bounded) for the worker to answer it all.
async fn pump(
    partition: u32,
    token: u64,
    mut subscriber: Subscriber,
    queue: mpsc::Sender<Job>,
    mut stop: oneshot::Receiver<()>,
    replier: Arc<Replier>,
) {
    loop {
        tokio::select! {
            _ = &mut stop => break,
            message = subscriber.next() => match message {
                Some(message) => replier.dispatch(partition, token, message, &queue).await,
                None => break,
            },
        }
    }
    // With the server gone an unsubscribe is never confirmed: what was received is all there is.
    let connected = replier.client.connection_state() == async_nats::connection::State::Connected;
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        if connected {
            let _ = subscriber.drain().await;
        }
        while let Some(message) = subscriber.next().await {
            replier.dispatch(partition, token, message, &queue).await;
        }
    })
    .await;
    if connected && drained.is_err() {
        tracing::warn!(partition, "NATS did not confirm the unsubscribe within {DRAIN_TIMEOUT:?}");
    }
    let (flushed, answered) = oneshot::channel();
    let asked = tokio::time::timeout(WORKERS_STOP_TIMEOUT, queue.send(Job::Flush(flushed))).await;
    if matches!(asked, Ok(Ok(()))) && tokio::time::timeout(WORKERS_STOP_TIMEOUT, answered).await.is_err() {
        tracing::warn!(partition, "the worker did not answer what it holds within {WORKERS_STOP_TIMEOUT:?}");
    }
}

impl Replier {
    /// Hands a message to its partition's worker, never waiting: one payer's flood must not
    /// hold up the subscription.
    async fn dispatch(&self, partition: u32, token: u64, message: Message, queue: &mpsc::Sender<Job>) {
        match queue.try_send(Job::Pay(message, token)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Job::Pay(message, _))) => {
                let depth = self.partition_queue_depth;
                let text =
                    format!("partition {partition} is saturated ({depth} payments waiting); retry with the same id");
                refuse(&self.client, &self.metrics, &message, Code::Unavailable, text).await;
            }
            Err(mpsc::error::TrySendError::Closed(Job::Pay(message, _))) => {
                refuse(&self.client, &self.metrics, &message, Code::Unavailable, "the node is shutting down".into())
                    .await;
            }
            Err(_) => {}
        }
    }
}

async fn refuse(client: &Client, metrics: &Metrics, message: &Message, code: Code, text: String) {
    metrics.count_payment(code.status(), code);
    if let Some(reply) = &message.reply {
        let body = Reply::refused(&Refusal { id: None, code, message: text }, None).to_json();
        publish(client, reply.to_string(), body.into()).await;
    }
}

async fn publish(client: &Client, subject: String, body: Bytes) {
    if let Err(error) = bounded(client.publish(subject, body)).await {
        tracing::warn!(%error, "could not publish a reply");
    }
}

fn nats(error: impl std::fmt::Display) -> BusError {
    BusError(error.to_string())
}

/// Why a partition worker ended. Workers end only when their queue closes at shutdown, so
/// while serving any end is a failure, most likely a panic.
fn death_cause(ended: Result<(), tokio::task::JoinError>) -> String {
    match ended {
        Ok(()) => "it returned while the node was serving".to_owned(),
        Err(error) if error.is_panic() => format!("it panicked: {error}"),
        Err(error) => error.to_string(),
    }
}

/// A publish that gives up after [`PUBLISH_TIMEOUT`] (the connection's buffer stays full while
/// the server is unreachable).
async fn bounded<E: std::fmt::Display>(publish: impl Future<Output = Result<(), E>>) -> Result<(), String> {
    match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
        Ok(result) => result.map_err(|error| error.to_string()),
        Err(_) => Err(format!("not sent within {PUBLISH_TIMEOUT:?}")),
    }
}

/// `wasmpay.pay.<partition>.<payer>` → (partition, payer).
fn parse_pay_subject(subject: &str) -> Option<(u32, &str)> {
    let rest = subject.strip_prefix(subjects::PAY_PREFIX)?.strip_prefix('.')?;
    let (partition, payer) = rest.split_once('.')?;
    if payer.contains('.') {
        return None;
    }
    // Only the canonical decimal form: `039` or `+39` would slip past a NATS permission
    // written for the exact subject `wasmpay.pay.39.<payer>`.
    let number: u32 = partition.parse().ok()?;
    (number.to_string() == partition).then_some((number, payer))
}

/// Payments of one partition that may wait for their ledger batches at once while the worker
/// decides the next ones.
const LEDGER_PIPELINE_DEPTH: usize = 128;

/// Decides the payments of one partition in order: checks and plugins one at a time, then each
/// payment is submitted to the ledger, which decides in submission order, and the worker goes
/// on to the next payment while the batch commits (at most [`LEDGER_PIPELINE_DEPTH`] waiting).
/// Waiting for each commit before the next payment capped a partition at one payment per two
/// commits. Replies go out as the commits land, in order; when the queue closes, the worker
/// answers what it submitted and ends.
async fn worker(partition: u32, mut queue: mpsc::Receiver<Job>, processor: Arc<Processor>, client: Client) {
    let mut instances = processor.instances();
    let mut committing = FuturesOrdered::new();
    let mut open = true;
    while open || !committing.is_empty() {
        tokio::select! {
            biased;
            Some((decided, reply)) = committing.next(), if !committing.is_empty() => {
                respond(&client, reply, decided).await;
            }
            job = queue.recv(), if open && committing.len() < LEDGER_PIPELINE_DEPTH => match job {
                Some(Job::Pay(message, lease_token)) => {
                    let payer = parse_pay_subject(&message.subject).map_or("", |(_, payer)| payer);
                    let route = Route { partition, payer, lease_token };
                    let answer = processor.decide(&mut instances, route, &message.payload).await;
                    let reply = message.reply;
                    if answer.after_earlier {
                        // It looks its id up: a retry of a payment still committing must find it.
                        answer_all(&client, &mut committing).await;
                        respond(&client, reply, answer.reply.await).await;
                    } else {
                        committing.push_back(async move { (answer.reply.await, reply) });
                    }
                }
                Some(Job::Flush(flushed)) => {
                    answer_all(&client, &mut committing).await;
                    let _ = flushed.send(());
                }
                None => open = false,
            },
        }
    }
}

/// Answers every payment the worker has submitted, in order.
async fn answer_all<F: Future<Output = (Decided, Option<async_nats::Subject>)>>(
    client: &Client,
    committing: &mut FuturesOrdered<F>,
) {
    while let Some((decided, reply)) = committing.next().await {
        respond(client, reply, decided).await;
    }
}

/// Sends a payment's reply and, if this call recorded it, its event.
async fn respond(client: &Client, reply: Option<async_nats::Subject>, decided: Decided) {
    let body = Bytes::from(decided.reply);
    // A reply that cannot be sent is not lost: the payment is recorded, and the client's
    // retry with the same id gets the stored reply.
    if let Some(reply) = reply
        && let Err(error) = bounded(client.publish(reply, body.clone())).await
    {
        tracing::warn!(%error, "could not publish a reply");
    }
    if decided.newly_recorded {
        let subject = format!("{}.{}", subjects::EVENTS_PREFIX, decided.status.as_str());
        if let Err(error) = bounded(client.publish(subject, body)).await {
            tracing::warn!(%error, "could not publish an event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_that_panics_is_reported_as_dead() {
        let mut workers = JoinSet::new();
        workers.spawn(async { panic!("a bug in a worker") });
        let cause = death_cause(workers.join_next().await.expect("one task"));
        assert!(cause.starts_with("it panicked"), "{cause}");
    }

    #[test]
    fn pay_subjects_parse_strictly() {
        assert_eq!(parse_pay_subject("wasmpay.pay.7.alice"), Some((7, "alice")));
        assert_eq!(parse_pay_subject("wasmpay.pay.x.alice"), None);
        assert_eq!(parse_pay_subject("wasmpay.pay.7"), None);
        assert_eq!(parse_pay_subject("wasmpay.pay.7.a.b"), None);
        assert_eq!(parse_pay_subject("wasmpay.pay.+7.a"), None);
        assert_eq!(parse_pay_subject("wasmpay.pay.07.a"), None);
        assert_eq!(parse_pay_subject("wasmpay.pay.0.a"), Some((0, "a")));
        assert_eq!(parse_pay_subject("wasmpay.payx.7.a"), None);
    }
}
