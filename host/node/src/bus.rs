//! The NATS side of a node: one subscription per subject family, one worker per partition.
//!
//! Ordering: NATS delivers one subscription's messages in order; the dispatcher hands each to
//! its partition's worker through a bounded queue, and a worker decides one payment at a time,
//! so one account's payments are applied in the order they arrived. A full queue holds the
//! dispatcher back (backpressure) rather than growing without limit.
//!
//! Shutdown: the subscriptions are drained (the server stops sending, buffered messages are
//! still handed out), submissions before payments so that what they forward still arrives,
//! the queues close, every worker finishes and replies to what it holds, then the connection
//! is flushed.

use std::sync::Arc;

use async_nats::{Client, Message, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::metrics::Metrics;
use crate::payments::{Processor, Route};
use crate::shutdown::{self, Signal};
use wasmpay_protocol::routing::{AccountId, Partitioner, subjects};
use wasmpay_protocol::{ClusterInfo, Code, Refusal, Reply};

/// Messages a partition worker may hold before the dispatcher waits.
const PARTITION_QUEUE_DEPTH: usize = 256;

/// A NATS failure while setting up the subscriptions.
#[derive(Debug, thiserror::Error)]
#[error("nats: {0}")]
pub struct BusError(String);

/// The bus of one node.
#[derive(Debug)]
pub struct Bus {
    client: Client,
    processor: Arc<Processor>,
    partitioner: Partitioner,
    node_id: String,
    metrics: Arc<Metrics>,
}

impl Bus {
    /// A bus for `processor` on `client`.
    pub fn new(
        client: Client,
        processor: Arc<Processor>,
        partitioner: Partitioner,
        node_id: String,
        metrics: Arc<Metrics>,
    ) -> Bus {
        Bus { client, processor, partitioner, node_id, metrics }
    }

    /// Subscribes; returns once the subscriptions are registered with the server (so the
    /// node is ready), with the task that serves them until `shutdown` turns true.
    pub async fn start(self, shutdown: Signal) -> Result<tokio::task::JoinHandle<()>, BusError> {
        let nats = |error: &dyn std::fmt::Display| BusError(error.to_string());
        let pay = self.client.subscribe(format!("{}.>", subjects::PAY_PREFIX)).await.map_err(|e| nats(&e))?;
        let submit = self
            .client
            .queue_subscribe(format!("{}.*", subjects::SUBMIT_PREFIX), subjects::SUBMIT_QUEUE_GROUP.to_owned())
            .await
            .map_err(|e| nats(&e))?;
        let info = self.client.subscribe(subjects::CLUSTER_INFO).await.map_err(|e| nats(&e))?;
        self.client.flush().await.map_err(|e| nats(&e))?;
        Ok(tokio::spawn(self.serve(pay, submit, info, shutdown)))
    }

    async fn serve(self, mut pay: Subscriber, mut submit: Subscriber, mut info: Subscriber, mut shutdown: Signal) {
        let mut workers = JoinSet::new();
        let queues: Vec<mpsc::Sender<Message>> = (0..self.partitioner.partitions())
            .map(|partition| {
                let (sender, receiver) = mpsc::channel(PARTITION_QUEUE_DEPTH);
                workers.spawn(worker(partition, receiver, self.processor.clone(), self.client.clone()));
                sender
            })
            .collect();
        let info_reply =
            Bytes::from(serde_json::to_vec(&ClusterInfo::new(self.partitioner, &self.node_id)).unwrap_or_default());
        loop {
            tokio::select! {
                () = shutdown::requested(&mut shutdown) => break,
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
        tracing::info!("draining subscriptions");
        // Submissions first: what they forward is published on this connection before the
        // payment subscription is drained, so the server still delivers it to this node.
        // Draining `pay` first would drop every payment forwarded during shutdown.
        let _ = submit.drain().await;
        while let Some(message) = submit.next().await {
            self.forward(message).await;
        }
        let _ = info.drain().await;
        let _ = pay.drain().await;
        while let Some(message) = pay.next().await {
            self.dispatch(message, &queues).await;
        }
        drop(queues);
        while workers.join_next().await.is_some() {}
        let _ = self.client.flush().await;
        tracing::info!("bus stopped");
    }

    /// Hands a `wasmpay.pay.<partition>.<payer>` message to its partition's worker.
    async fn dispatch(&self, message: Message, queues: &[mpsc::Sender<Message>]) {
        let partition =
            parse_pay_subject(&message.subject).filter(|(partition, _)| *partition < self.partitioner.partitions());
        let Some((partition, _)) = partition else {
            let text = format!(
                "`{}` is not wasmpay.pay.<partition 0..{}>.<payer>",
                message.subject,
                self.partitioner.partitions()
            );
            return self.refuse(&message, Code::WrongPartition, text).await;
        };
        let Some(queue) = usize::try_from(partition).ok().and_then(|index| queues.get(index)) else {
            return;
        };
        if let Err(mpsc::error::SendError(message)) = queue.send(message).await {
            self.refuse(&message, Code::Unavailable, "the node is shutting down".into()).await;
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
        let subject = subjects::pay(self.partitioner.partition_of(&payer), payer.as_str());
        let result = match message.reply {
            Some(reply) => self.client.publish_with_reply(subject, reply, message.payload).await,
            None => self.client.publish(subject, message.payload).await,
        };
        if let Err(error) = result {
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
        if let Err(error) = self.client.publish(subject, body).await {
            tracing::warn!(%error, "could not publish a reply");
        }
    }
}

/// `wasmpay.pay.<partition>.<payer>` → (partition, payer).
fn parse_pay_subject(subject: &str) -> Option<(u32, &str)> {
    let rest = subject.strip_prefix(subjects::PAY_PREFIX)?.strip_prefix('.')?;
    let (partition, payer) = rest.split_once('.')?;
    if payer.contains('.') || partition.starts_with('+') {
        return None;
    }
    Some((partition.parse().ok()?, payer))
}

/// Decides the payments of one partition, one at a time.
async fn worker(partition: u32, mut queue: mpsc::Receiver<Message>, processor: Arc<Processor>, client: Client) {
    while let Some(message) = queue.recv().await {
        let payer = parse_pay_subject(&message.subject).map_or("", |(_, payer)| payer);
        let decided = processor.decide(Route { partition, payer }, &message.payload).await;
        let body = Bytes::from(decided.reply);
        if let Some(reply) = message.reply
            && let Err(error) = client.publish(reply, body.clone()).await
        {
            tracing::warn!(%error, "could not publish a reply");
        }
        if decided.newly_recorded {
            let subject = format!("{}.{}", subjects::EVENTS_PREFIX, decided.status.as_str());
            if let Err(error) = client.publish(subject, body).await {
                tracing::warn!(%error, "could not publish an event");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pay_subjects_parse_strictly() {
        assert_eq!(parse_pay_subject("wasmpay.pay.7.alice"), Some((7, "alice")));
        assert_eq!(parse_pay_subject("wasmpay.pay.x.alice"), None);
        assert_eq!(parse_pay_subject("wasmpay.pay.7"), None);
        assert_eq!(parse_pay_subject("wasmpay.pay.7.a.b"), None);
        assert_eq!(parse_pay_subject("wasmpay.pay.+7.a"), None);
        assert_eq!(parse_pay_subject("wasmpay.payx.7.a"), None);
    }
}
