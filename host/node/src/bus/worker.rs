//! A partition's worker: decides its payments in order and answers each once its ledger batch
//! committed, on the channel it came by.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use async_nats::{Client, Message, Subject, jetstream};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::{mpsc, oneshot};

use super::bounded;
use crate::complaints::complain;
use crate::durable::Durable;
use crate::payments::{Decided, Processor, RecentPayments, Route};
use crate::traces;
use wasmpay_protocol::Status;
use wasmpay_protocol::routing::subjects;

/// Payments of one partition that may wait for their ledger batches at once while the worker
/// decides the next ones.
const LEDGER_PIPELINE_DEPTH: usize = 128;

/// What a partition worker is asked to do.
#[derive(Debug)]
pub(super) enum Job {
    /// Decide a payment taken (at that instant) under the lease with this fencing token.
    Pay(Incoming, u64, Instant),
    /// Release the partition's due holds under the lease with this fencing token.
    Expire(u64),
    /// Answer every payment taken before this, then say so: a handover is complete.
    Flush(oneshot::Sender<()>),
}

/// A payment as it arrived.
#[derive(Debug)]
pub(super) enum Incoming {
    /// A request on `wasmpay.pay.<p>.<payer>`: answered on its reply subject.
    Core(Message),
    /// A stored message on `wasmpay.durable.<p>.<payer>`: answered on the payer's results
    /// subject, then acknowledged.
    Durable(Box<jetstream::Message>),
}

/// Where a decided payment's reply goes.
enum Answer {
    Reply(Option<Subject>),
    Result(Box<jetstream::Message>),
}

/// Decides the payments of one partition in order: checks and plugins one at a time, then each
/// payment is submitted to the ledger, which decides in submission order, and the worker goes
/// on to the next payment while the batch commits (at most [`LEDGER_PIPELINE_DEPTH`] waiting).
/// Waiting for each commit before the next payment capped a partition at one payment per two
/// commits. Replies go out as the commits land, in order; when the queue closes, the worker
/// answers what it submitted and ends.
pub(super) async fn worker(
    partition: u32,
    mut queue: mpsc::Receiver<Job>,
    processor: Arc<Processor>,
    client: Client,
    durable: Option<Durable>,
) {
    let respond = Responder { client, durable, recent: processor.recent().clone() };
    let mut instances = processor.instances();
    let mut committing = FuturesOrdered::new();
    let mut open = true;
    while open || !committing.is_empty() {
        tokio::select! {
            biased;
            Some((decided, answer)) = committing.next(), if !committing.is_empty() => {
                respond.send(answer, decided).await;
            }
            job = queue.recv(), if open && committing.len() < LEDGER_PIPELINE_DEPTH => match job {
                Some(Job::Pay(incoming, lease_token, taken)) => {
                    let message = match &incoming {
                        Incoming::Core(message) => message,
                        Incoming::Durable(stored) => &stored.message,
                    };
                    let payer = parse_partition_subject(&message.subject).map_or("", |(_, payer)| payer);
                    let client_key = message
                        .headers
                        .as_ref()
                        .and_then(|headers| headers.get(subjects::CLIENT_KEY_HEADER))
                        .and_then(|key| subjects::client_key_id(key.as_str()));
                    let headers = message.headers.as_ref();
                    let route = Route { partition, payer, lease_token, client_key, taken, headers };
                    let decision = processor.decide(&mut instances, route, &message.payload).await;
                    let answer = match incoming {
                        Incoming::Core(message) => Answer::Reply(message.reply),
                        Incoming::Durable(stored) => Answer::Result(stored),
                    };
                    let answer = (answer, decision.span);
                    if decision.after_earlier {
                        // It looks its id up: a retry of a payment still committing must find it.
                        answer_all(&respond, &mut committing).await;
                        respond.send(answer, decision.reply.await).await;
                    } else {
                        committing.push_back(answered(decision.reply, answer));
                    }
                }
                Some(Job::Expire(lease_token)) => {
                    let room = LEDGER_PIPELINE_DEPTH.saturating_sub(committing.len());
                    for expiry in processor.expire_due(partition, lease_token, room).await {
                        // No one asked: only its event is published.
                        committing.push_back(answered(expiry, (Answer::Reply(None), tracing::Span::none())));
                    }
                }
                Some(Job::Flush(flushed)) => {
                    answer_all(&respond, &mut committing).await;
                    let _ = flushed.send(());
                }
                None => open = false,
            },
        }
    }
}

/// Where a reply goes, and the span of the message it answers.
type Destination = (Answer, tracing::Span);

/// A submitted payment's reply, with where it goes.
async fn answered(
    reply: Pin<Box<dyn Future<Output = Decided> + Send>>,
    destination: Destination,
) -> (Decided, Destination) {
    (reply.await, destination)
}

/// Answers every payment the worker has submitted, in order.
async fn answer_all<F: Future<Output = (Decided, Destination)>>(
    respond: &Responder,
    committing: &mut FuturesOrdered<F>,
) {
    while let Some((decided, answer)) = committing.next().await {
        respond.send(answer, decided).await;
    }
}

/// Sends replies, results and events.
struct Responder {
    client: Client,
    durable: Option<Durable>,
    recent: Arc<RecentPayments>,
}

impl Responder {
    /// Sends a payment's reply (or stores a durable payment's result and acknowledges it) and,
    /// if this call recorded it, its event, which carries the payment's trace context on.
    async fn send(&self, (answer, span): Destination, decided: Decided) {
        let body = Bytes::from(decided.reply);
        if !body.is_empty() {
            self.recent.record(&body);
        }
        match answer {
            // A reply that cannot be sent is not lost: the payment is recorded, and the
            // client's retry with the same id gets the stored reply.
            Answer::Reply(Some(reply)) => {
                if let Err(error) = bounded(self.client.publish(reply, body.clone())).await {
                    complain!(warn, "could not publish a reply", %error);
                }
            }
            Answer::Reply(None) => {}
            Answer::Result(stored) => self.store_result(stored, decided.status, body.clone()).await,
        }
        if decided.newly_recorded {
            let subject = format!("{}.{}", subjects::EVENTS_PREFIX, decided.status.as_str());
            let mut headers = async_nats::HeaderMap::new();
            traces::inject(&span, &mut headers);
            let published = if headers.is_empty() {
                bounded(self.client.publish(subject, body)).await
            } else {
                bounded(self.client.publish_with_headers(subject, headers, body)).await
            };
            if let Err(error) = published {
                complain!(warn, "could not publish an event", %error);
            }
        }
    }

    /// Publishes a durable payment's result and then acknowledges the payment, once its
    /// outcome is final. An `error` outcome (the ledger was unavailable, or this node's lease
    /// is stale) is neither published nor acknowledged: the payment stays in the stream and is
    /// delivered again (after the ack wait, or first to the partition's next owner), since a
    /// client that fired and forgot cannot retry it (a repeat publish within the duplicate
    /// window is dropped). If publishing or acknowledging fails the same happens; the ledger
    /// answers a repeat of a posted payment with its stored reply, so nothing is applied twice.
    async fn store_result(&self, stored: Box<jetstream::Message>, status: Status, body: Bytes) {
        let Some(durable) = &self.durable else { return };
        if status == Status::Error {
            complain!(warn, "a durable payment was not posted; it will be delivered again", subject = %stored.message.subject);
            return;
        }
        let payer = parse_partition_subject(&stored.message.subject).map_or("", |(_, payer)| payer);
        let id = stored.message.headers.as_ref().and_then(|headers| headers.get("Nats-Msg-Id")).map(|id| id.as_str());
        if let Err(error) = durable.publish_result(payer, id, body).await {
            complain!(warn, "could not store a durable payment's result; it will be delivered again", %error);
            return;
        }
        let acknowledged = wasmpay_cluster::jetstream::request("acknowledging a durable payment", stored.ack());
        if let Err(error) = acknowledged.await {
            complain!(warn, "could not acknowledge a durable payment; it will come again", %error);
        }
    }
}

/// `wasmpay.pay.<partition>.<payer>` or `wasmpay.durable.<partition>.<payer>` → (partition,
/// payer).
pub(super) fn parse_partition_subject(subject: &str) -> Option<(u32, &str)> {
    let rest = [subjects::PAY_PREFIX, subjects::DURABLE_PREFIX]
        .iter()
        .find_map(|prefix| subject.strip_prefix(prefix)?.strip_prefix('.'))?;
    let (partition, payer) = rest.split_once('.')?;
    if payer.contains('.') {
        return None;
    }
    // Only the canonical decimal form: `039` or `+39` would slip past a NATS permission
    // written for the exact subject `wasmpay.pay.39.<payer>`.
    let number: u32 = partition.parse().ok()?;
    (number.to_string() == partition).then_some((number, payer))
}
