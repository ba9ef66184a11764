//! The NATS side of a node: one subscription per subject family, one worker per partition.
//!
//! Ordering: NATS delivers one subscription's messages in order; the dispatcher hands each to
//! its partition's worker through a bounded queue, and a worker decides one payment at a time
//! and submits it to the ledger, which decides in submission order, so one account's payments
//! are applied in the order they arrived. The dispatcher never
//! waits for a partition: a payment for a full queue is refused at once (`unavailable`,
//! retry with the same id), so one saturated partition cannot delay the others.
//!
//! Shutdown: the subscriptions are drained (the server stops sending, buffered messages are
//! still handed out), submissions before payments so that what they forward still arrives,
//! the queues close, every worker finishes and replies to what it holds, then the connection
//! is flushed. Every one of those waits is bounded, so a node stops even with NATS gone: a
//! reply or event publish gives up after 1 s, and workers still answering after their 10 s
//! stop bound are aborted; what they held is recorded or not, and a retry settles it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Message, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::metrics::Metrics;
use crate::payments::{Decided, Processor, Route};
use crate::shutdown::{self, Signal};
use wasmpay_protocol::routing::{AccountId, Partitioner, subjects};
use wasmpay_protocol::{ClusterInfo, Code, Refusal, Reply};

/// How long stopping may spend handing over what the subscriptions still hold; with the NATS
/// server gone a drain is never confirmed, so it must not be waited for without a bound.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one publish (a reply, an event, a forward) may wait for the connection's buffer.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the partition workers get to finish what they hold once the queues close (each
/// reply may wait [`PUBLISH_TIMEOUT`] when the server is gone).
const WORKERS_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the final flush may wait for the server.
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

/// A NATS failure while setting up the subscriptions.
#[derive(Debug, thiserror::Error)]
#[error("nats: {0}")]
pub struct BusError(String);

/// The bus of one node.
#[derive(Debug)]
pub struct Bus {
    client: Client,
    processor: Arc<Processor>,
    metrics: Arc<Metrics>,
    settings: BusSettings,
}

impl Bus {
    /// A bus for `processor` on `client`.
    pub fn new(client: Client, processor: Arc<Processor>, metrics: Arc<Metrics>, settings: BusSettings) -> Bus {
        Bus { client, processor, metrics, settings }
    }

    /// Subscribes; returns once the subscriptions are registered with the server (so the
    /// node is ready), with the task that serves them until `shutdown` turns true. If a
    /// partition worker dies (a bug: a panic), the bus stops taking payments and says why on
    /// `failure`, so the node can stop and be restarted rather than leave a partition unserved.
    pub async fn start(
        self,
        shutdown: Signal,
        failure: watch::Sender<Option<String>>,
    ) -> Result<JoinHandle<()>, BusError> {
        let nats = |error: &dyn std::fmt::Display| BusError(error.to_string());
        let pay = self.client.subscribe(format!("{}.>", subjects::PAY_PREFIX)).await.map_err(|e| nats(&e))?;
        let submit = self
            .client
            .queue_subscribe(format!("{}.*", subjects::SUBMIT_PREFIX), subjects::SUBMIT_QUEUE_GROUP.to_owned())
            .await
            .map_err(|e| nats(&e))?;
        let info = self.client.subscribe(subjects::CLUSTER_INFO).await.map_err(|e| nats(&e))?;
        self.client.flush().await.map_err(|e| nats(&e))?;
        Ok(tokio::spawn(self.serve(pay, submit, info, shutdown, failure)))
    }

    async fn serve(
        self,
        mut pay: Subscriber,
        mut submit: Subscriber,
        mut info: Subscriber,
        mut shutdown: Signal,
        failure: watch::Sender<Option<String>>,
    ) {
        let mut workers = JoinSet::new();
        let queues: Vec<mpsc::Sender<Message>> = (0..self.settings.partitioner.partitions())
            .map(|partition| {
                let (sender, receiver) = mpsc::channel(self.settings.partition_queue_depth.max(1));
                workers.spawn(worker(partition, receiver, self.processor.clone(), self.client.clone()));
                sender
            })
            .collect();
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
                Some(message) = pay.next() => self.dispatch(message, &queues).await,
                Some(message) = submit.next() => self.forward(message).await,
                Some(message) = info.next() => {
                    if let Some(reply) = message.reply {
                        self.publish(reply.to_string(), info_reply.clone()).await;
                    }
                }
                else => break,
            }
        }
        self.drain(&mut pay, &mut submit, &mut info, &queues).await;
        drop(queues);
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

    /// Hands over what the subscriptions still hold, within [`DRAIN_TIMEOUT`] in all.
    /// Submissions first: what they forward is published on this connection before the payment
    /// subscription is drained, so the server still delivers it to this node (draining `pay`
    /// first would drop every payment forwarded during shutdown).
    async fn drain(
        &self,
        pay: &mut Subscriber,
        submit: &mut Subscriber,
        info: &mut Subscriber,
        queues: &[mpsc::Sender<Message>],
    ) {
        tracing::info!("draining subscriptions");
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        let drained = tokio::time::timeout_at(deadline, async {
            let _ = submit.drain().await;
            while let Some(message) = submit.next().await {
                self.forward(message).await;
            }
            let _ = info.drain().await;
            let _ = pay.drain().await;
            while let Some(message) = pay.next().await {
                self.dispatch(message, queues).await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("NATS did not confirm the drain within {DRAIN_TIMEOUT:?}; stopping with what was received");
        }
    }

    /// Hands a `wasmpay.pay.<partition>.<payer>` message to its partition's worker.
    async fn dispatch(&self, message: Message, queues: &[mpsc::Sender<Message>]) {
        let partitions = self.settings.partitioner.partitions();
        let partition = parse_pay_subject(&message.subject).filter(|(partition, _)| *partition < partitions);
        let Some((partition, _)) = partition else {
            let text = format!("`{}` is not wasmpay.pay.<partition 0..{partitions}>.<payer>", message.subject);
            return self.refuse(&message, Code::WrongPartition, text).await;
        };
        let Some(queue) = usize::try_from(partition).ok().and_then(|index| queues.get(index)) else {
            return;
        };
        // Never wait for a partition: one payer's flood must not hold up every other partition.
        match queue.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(message)) => {
                let depth = self.settings.partition_queue_depth;
                let text =
                    format!("partition {partition} is saturated ({depth} payments waiting); retry with the same id");
                self.refuse(&message, Code::Unavailable, text).await;
            }
            Err(mpsc::error::TrySendError::Closed(message)) => {
                self.refuse(&message, Code::Unavailable, "the node is shutting down".into()).await;
            }
        }
    }

    /// Forwards `wasmpay.submit.<payer>` to the payer's partition subject, keeping the reply
    /// subject so the owner answers the client directly.
    async fn forward(&self, message: Message) {
        let payer = message.subject.strip_prefix(subjects::SUBMIT_PREFIX).and_then(|rest| rest.strip_prefix('.'));
        let Some(payer) = payer.and_then(|token| AccountId::new(token).ok()) else {
            let text = format!("`{}` is not wasmpay.submit.<payer account id>", message.subject);
            return self.refuse(&message, Code::InvalidRequest, text).await;
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

    async fn refuse(&self, message: &Message, code: Code, text: String) {
        self.metrics.count_payment(code.status(), code);
        if let Some(reply) = &message.reply {
            let body = Reply::refused(&Refusal { id: None, code, message: text }, None).to_json();
            self.publish(reply.to_string(), body.into()).await;
        }
    }

    async fn publish(&self, subject: String, body: Bytes) {
        if let Err(error) = bounded(self.client.publish(subject, body)).await {
            tracing::warn!(%error, "could not publish a reply");
        }
    }
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
async fn worker(partition: u32, mut queue: mpsc::Receiver<Message>, processor: Arc<Processor>, client: Client) {
    let mut instances = processor.instances();
    let mut committing = FuturesOrdered::new();
    let mut open = true;
    while open || !committing.is_empty() {
        tokio::select! {
            biased;
            Some((decided, reply)) = committing.next(), if !committing.is_empty() => {
                respond(&client, reply, decided).await;
            }
            message = queue.recv(), if open && committing.len() < LEDGER_PIPELINE_DEPTH => match message {
                Some(message) => {
                    let payer = parse_pay_subject(&message.subject).map_or("", |(_, payer)| payer);
                    let answer = processor.decide(&mut instances, Route { partition, payer }, &message.payload).await;
                    let reply = message.reply;
                    if answer.after_earlier {
                        // It looks its id up: a retry of a payment still committing must find it.
                        while let Some((decided, reply)) = committing.next().await {
                            respond(&client, reply, decided).await;
                        }
                        respond(&client, reply, answer.reply.await).await;
                    } else {
                        committing.push_back(async move { (answer.reply.await, reply) });
                    }
                }
                None => open = false,
            },
        }
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
