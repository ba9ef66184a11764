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

mod intake;
mod worker;

pub use intake::Intake;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, Message, Subscriber};
use bytes::Bytes;
use futures::StreamExt;

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::complaints::complain;
use crate::durable::Durable;
use crate::metrics::{self, Metrics};
use crate::payments::Processor;
use crate::quotes::Quoter;
use crate::shutdown::{self, Signal};
use crate::traces;
use wasmpay_cluster::bounds;
use wasmpay_protocol::routing::{AccountId, Partitioner, subjects};
use wasmpay_protocol::{ClusterInfo, Code, Refusal, Reply};
use worker::{Job, worker};

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
/// How long a task reading a subscription takes to stop: a publish in progress (a reply, a
/// refusal, a forward) when asked, then the subscription's drain. A partition's intake tasks
/// stop side by side, so this bounds them all; it also bounds the submissions' stop.
pub(crate) const SUBSCRIPTION_STOP_TIMEOUT: Duration = bounds::sum(&[DRAIN_TIMEOUT, PUBLISH_TIMEOUT]);
/// How long closing a partition may take: its intake stops, then its worker answers what the
/// partition took. The cluster's stop bound is computed from it.
const CLOSE_TIMEOUT: Duration = bounds::sum(&[SUBSCRIPTION_STOP_TIMEOUT, WORKERS_STOP_TIMEOUT]);
/// How long opening a partition may take: closing an earlier opening of it (if it was opened
/// twice), then the flush that registers its subscription. Its durable consumer is set up on a
/// task of its own.
const OPEN_TIMEOUT: Duration = bounds::sum(&[CLOSE_TIMEOUT, FLUSH_TIMEOUT]);
/// How long [`Intake::finish`] may take: every partition still open closed at once, the
/// workers' last answers, the final flush.
pub(crate) const FINISH_TIMEOUT: Duration = bounds::sum(&[CLOSE_TIMEOUT, WORKERS_STOP_TIMEOUT, FLUSH_TIMEOUT]);

/// How a node's bus is set up.
#[derive(Clone, Debug)]
pub struct BusSettings {
    /// The partitioning of accounts.
    pub partitioner: Partitioner,
    /// This node's name in `wasmpay.cluster.info`.
    pub node_id: String,
    /// Payments one partition may hold waiting; more are refused at once (`unavailable`).
    pub partition_queue_depth: usize,
    /// Durable ingestion's streams, in durable mode.
    pub durable: Option<Durable>,
    /// How often each owned partition releases its due holds.
    pub hold_sweep: Duration,
}

/// The bus could not subscribe, or open a partition.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The NATS server refused or lost a subscription.
    #[error("cannot subscribe to `{subject}`")]
    Subscribe {
        /// The subject.
        subject: String,
        /// Why.
        #[source]
        source: async_nats::SubscribeError,
    },
    /// The NATS server did not confirm the subscriptions.
    #[error("the NATS server did not confirm the subscriptions")]
    Flush(#[source] async_nats::client::FlushError),
    /// The NATS server did not confirm a partition's subscription in time.
    #[error("the subscription to `{subject}` was not confirmed within {within:?}")]
    Unconfirmed {
        /// The subject.
        subject: String,
        /// How long the bus waited.
        within: Duration,
    },
    /// The partition is out of range, or the bus has finished.
    #[error("partition {0} has no worker (or the bus has finished)")]
    NoWorker(u32),
}

/// The bus of one node.
#[derive(Debug)]
pub struct Bus {
    client: Client,
    processor: Arc<Processor>,
    quoter: Arc<Quoter>,
    metrics: Arc<Metrics>,
    settings: BusSettings,
}

/// The running bus's serving task; it hands its workers back when it ends.
pub type Serving = JoinHandle<JoinSet<()>>;

impl Bus {
    /// A bus for `processor` on `client`.
    pub fn new(
        client: Client,
        (processor, quoter): (Arc<Processor>, Arc<Quoter>),
        metrics: Arc<Metrics>,
        settings: BusSettings,
    ) -> Bus {
        Bus { client, processor, quoter, metrics, settings }
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
        let submit_subject = format!("{}.*", subjects::SUBMIT_PREFIX);
        let submit = self
            .client
            .queue_subscribe(submit_subject.clone(), subjects::SUBMIT_QUEUE_GROUP.to_owned())
            .await
            .map_err(|source| BusError::Subscribe { subject: submit_subject, source })?;
        let info = self
            .client
            .subscribe(subjects::CLUSTER_INFO)
            .await
            .map_err(|source| BusError::Subscribe { subject: subjects::CLUSTER_INFO.to_owned(), source })?;
        let quotes = self
            .client
            .queue_subscribe(subjects::FX_QUOTE, subjects::FX_QUOTE_QUEUE_GROUP.to_owned())
            .await
            .map_err(|source| BusError::Subscribe { subject: subjects::FX_QUOTE.to_owned(), source })?;
        self.client.flush().await.map_err(BusError::Flush)?;
        let mut workers = JoinSet::new();
        let queues: Vec<mpsc::Sender<Job>> = (0..self.settings.partitioner.partitions())
            .map(|partition| {
                let (sender, receiver) = mpsc::channel(self.settings.partition_queue_depth.max(1));
                let durable = self.settings.durable.clone();
                workers.spawn(worker(partition, receiver, self.processor.clone(), self.client.clone(), durable));
                sender
            })
            .collect();
        let intake = Intake {
            client: self.client.clone(),
            metrics: self.metrics.clone(),
            partition_queue_depth: self.settings.partition_queue_depth,
            durable: self.settings.durable.clone(),
            queues: Arc::new(Mutex::new(queues)),
            open: Arc::default(),
            openings: Arc::default(),
            hold_sweep: self.settings.hold_sweep,
        };
        Ok((tokio::spawn(self.serve([submit, info, quotes], workers, shutdown, failure)), intake))
    }

    async fn serve(
        self,
        [mut submit, mut info, mut quotes]: [Subscriber; 3],
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
                Some(message) = quotes.next() => self.quote(message),
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
            let _ = quotes.drain().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("NATS did not confirm the drain within {DRAIN_TIMEOUT:?}; stopping with what was received");
        }
        workers
    }

    /// Answers a quote request on a task of its own: pricing runs the FX plugin, which must
    /// not hold up the payments this loop forwards. The quoter bounds how many run at once.
    fn quote(&self, message: Message) {
        let (client, quoter) = (self.client.clone(), self.quoter.clone());
        tokio::spawn(async move {
            let reply = quoter.answer(&message.payload).await;
            if let Some(subject) = message.reply {
                publish(&client, subject.to_string(), reply.to_json().into()).await;
            }
        });
    }

    /// Forwards `wasmpay.submit.<payer>` to the payer's partition subject, keeping the reply
    /// subject so the owner answers the client directly, and the trace context (no other
    /// header: the client key header is the HTTP node's to set).
    async fn forward(&self, message: Message) {
        let payer = message.subject.strip_prefix(subjects::SUBMIT_PREFIX).and_then(|rest| rest.strip_prefix('.'));
        let Some(payer) = payer.and_then(|token| AccountId::new(token).ok()) else {
            let text = format!("`{}` is not wasmpay.submit.<payer account id>", message.subject);
            return refuse(&self.client, &self.metrics, &message, Code::InvalidRequest, text).await;
        };
        let subject = subjects::pay(self.settings.partitioner.partition_of(&payer), payer.as_str());
        let headers = traces::carried(message.headers.as_ref());
        let forwarded = match message.reply {
            Some(reply) => {
                bounded(self.client.publish_with_reply_and_headers(subject, reply, headers, message.payload)).await
            }
            None => bounded(self.client.publish_with_headers(subject, headers, message.payload)).await,
        };
        if let Err(error) = forwarded {
            complain!(warn, "could not forward a submitted payment", %error);
        }
    }
}

async fn refuse(client: &Client, metrics: &Metrics, message: &Message, code: Code, text: String) {
    metrics.answered(&metrics::Operation::named("unread"), code.status(), code, None);
    if let Some(reply) = &message.reply {
        let body = Reply::refused(&Refusal { id: None, code, message: text }, None).to_json();
        publish(client, reply.to_string(), body.into()).await;
    }
}

async fn publish(client: &Client, subject: String, body: Bytes) {
    if let Err(error) = bounded(client.publish(subject, body)).await {
        complain!(warn, "could not publish a reply", %error);
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
        assert_eq!(worker::parse_partition_subject("wasmpay.pay.7.alice"), Some((7, "alice")));
        assert_eq!(worker::parse_partition_subject("wasmpay.pay.x.alice"), None);
        assert_eq!(worker::parse_partition_subject("wasmpay.pay.7"), None);
        assert_eq!(worker::parse_partition_subject("wasmpay.pay.7.a.b"), None);
        assert_eq!(worker::parse_partition_subject("wasmpay.pay.+7.a"), None);
        assert_eq!(worker::parse_partition_subject("wasmpay.pay.07.a"), None);
        assert_eq!(worker::parse_partition_subject("wasmpay.pay.0.a"), Some((0, "a")));
        assert_eq!(worker::parse_partition_subject("wasmpay.payx.7.a"), None);
        assert_eq!(worker::parse_partition_subject("wasmpay.durable.7.alice"), Some((7, "alice")));
        assert_eq!(worker::parse_partition_subject("wasmpay.durable.07.alice"), None);
    }
}
