//! Deciding one message on `wasmpay.pay.<partition>.<account>`: a payment or authorization
//! (`pay`), a capture or void of an authorization and the expiry of holds (`holds`), a refund
//! (`refunds`), a settlement (`settlements`); `replies` renders what each answers and how a
//! decided transfer goes to the ledger.
//!
//! decode → partition check → (plugins, for payments and authorizations) → ledger. Every step
//! that refuses returns a reply with a stable code; what the ledger decides (approvals,
//! declines, holds opened and closed, refunds, settlements) is recorded and so replayed to a
//! retry. Each message goes to the owner of the account it debits or holds, the one writer of
//! that account, in the order the messages arrive: the payer for payments, authorizations,
//! captures and voids, the payee for refunds, the first leg's payer for a settlement.
//!
//! A new payment costs no read before the ledger: the ledger's batch looks up its id (a retry
//! gets the stored reply, byte for byte), checks that both accounts exist and hold its
//! currency, and decides it, for the whole batch in a few set-based queries. Two early reads
//! per payment (the stored reply, the accounts) used to cost more than the plugins and the
//! commit together (docs/performance.md). A refusal before the ledger (an unknown method, a
//! plugin failure) looks the id up first, so a retry of a recorded payment never gets a
//! different answer than the first time. A capture, void or refund reads what it acts on once
//! the partition's earlier messages were answered, renders each reply the ledger may pick, and
//! leaves the decision to the ledger's batch.

mod holds;
mod pay;
mod recent;
mod refunds;
mod replies;
mod settlements;

use std::future::{Future, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use crate::holds::HoldSettings;
use crate::metrics::{self, Metrics};
use crate::quotes::FxSettings;
use crate::traces;
pub use recent::RecentPayments;
use replies::{Echo, refused, unreadable};
use wasmpay_ledger::Ledger;
use wasmpay_plugin_host::{Instances, PluginHost};
use wasmpay_protocol::routing::{AccountId, Partitioner, subjects};
use wasmpay_protocol::{Code, Operation, Status};

/// Where a message arrived: the partition and payer tokens of its subject.
#[derive(Clone, Copy, Debug)]
pub struct Route<'a> {
    /// The `<partition>` token.
    pub partition: u32,
    /// The `<payer>` token.
    pub payer: &'a str,
    /// The fencing token of the lease under which this node serves the partition: the ledger
    /// refuses the payment if a newer owner has claimed the partition since.
    pub lease_token: u64,
    /// The client key the message came with (the `Wasmpay-Client-Key` header an HTTP node
    /// sets), recorded on what it creates.
    pub client_key: Option<&'a str>,
    /// When the node took the message off NATS: its answer's latency is counted from here.
    pub taken: Instant,
    /// The message's headers: a client's trace context, which the message's span continues.
    pub headers: Option<&'a async_nats::HeaderMap>,
}

/// The answer to one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    /// The reply body.
    pub reply: String,
    /// Its status.
    pub status: Status,
    /// Its code.
    pub code: Code,
    /// Whether this call recorded it (so an event is due); false for replays and refusals.
    pub newly_recorded: bool,
}

/// A message's answer.
pub struct Answer {
    /// The reply: at once, or once the payment's ledger batch committed.
    pub reply: Pin<Box<dyn Future<Output = Decided> + Send>>,
    /// Whether the worker must first answer its partition's earlier payments: this reply looks
    /// its id up (a refusal before the ledger), and a retry of a payment still on its way to
    /// the ledger must find it there, not refuse it.
    pub after_earlier: bool,
    /// The message's span, which its event's trace context continues.
    pub span: tracing::Span,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Answer").field("after_earlier", &self.after_earlier).finish_non_exhaustive()
    }
}

fn now(decided: Decided) -> Answer {
    Answer { reply: Box::pin(ready(decided)), after_earlier: false, span: tracing::Span::current() }
}

/// Decides payments; shared by every partition worker of a node.
#[derive(Debug)]
pub struct Processor {
    ledger: Ledger,
    plugins: Arc<PluginHost>,
    partitioner: Partitioner,
    metrics: Arc<Metrics>,
    holds: HoldSettings,
    /// Which methods may convert currencies.
    fx: FxSettings,
    /// One sweep's read of due holds at a time, node-wide: every owned partition asks every
    /// second, and while the ledger is stalled (a table lock, a slow disk) those reads would
    /// each hold a pooled connection and starve the payments and the readiness probe. A sweep
    /// that waits [`SWEEP_WAIT`] for another's read skips its turn; the holds stay due for the
    /// next.
    sweeping: tokio::sync::Semaphore,
    /// The last answers, for the console.
    recent: Arc<RecentPayments>,
}

impl Processor {
    /// A processor over these parts.
    pub fn new(
        ledger: Ledger,
        plugins: Arc<PluginHost>,
        partitioner: Partitioner,
        metrics: Arc<Metrics>,
        (holds, fx): (HoldSettings, FxSettings),
    ) -> Processor {
        let (sweeping, recent) = (tokio::sync::Semaphore::new(1), Arc::default());
        Processor { ledger, plugins, partitioner, metrics, holds, fx, sweeping, recent }
    }

    /// The last answers the partition workers gave, which they record as they send them.
    pub fn recent(&self) -> &Arc<RecentPayments> {
        &self.recent
    }

    /// The plugin instances of one worker: each worker decides one payment at a time.
    pub fn instances(&self) -> Instances {
        Instances::new(self.plugins.runtime().clone(), self.metrics.clone())
    }

    /// Decides one message: runs its checks and plugins, and submits it to the ledger. Never
    /// fails: every outcome is a reply. The returned answer resolves once the payment's batch
    /// committed, so a worker can decide its partition's next payment meanwhile: the ledger
    /// decides transfers in the order they were submitted, which keeps an account's payments
    /// in order.
    pub async fn decide(&self, instances: &mut Instances, route: Route<'_>, body: &[u8]) -> Answer {
        let (taken, headers) = (route.taken, route.headers);
        // The message's span continues the trace its sender started, if any.
        let traced = |span: tracing::Span| {
            traces::adopt(&span, headers);
            span
        };
        let (answer, operation) = match wasmpay_protocol::decode_operation(body) {
            Err(refusal) => (now(unreadable(&refusal)), metrics::Operation::named("unreadable")),
            Ok(Operation::Pay(request)) => {
                // One read of the plugins' table for the label and the decision, so both see the
                // same one. Only a method the plugins serve becomes a label: a message names any.
                let pipelines = self.plugins.pipelines();
                let served = pipelines.get(&request.method).map(|_| Arc::from(request.method.as_str()));
                let operation = served.map_or_else(|| metrics::Operation::named("pay"), metrics::Operation::pay);
                let span = traced(
                    tracing::info_span!("payment", id = %request.id, partition = route.partition, method = %request.method),
                );
                (self.decide_request(instances, route, request, pipelines).instrument(span).await, operation)
            }
            Ok(Operation::Refund(request)) => {
                let span = traced(
                    tracing::info_span!("payment", id = %request.id, partition = route.partition, refunds = %request.payment),
                );
                let _entered = span.enter();
                (self.decide_refund(route, request), metrics::Operation::named("refund"))
            }
            Ok(Operation::Settle(request)) => {
                let span = traced(
                    tracing::info_span!("payment", id = %request.id, partition = route.partition, legs = request.legs.len()),
                );
                (self.decide_settlement(route, request).instrument(span).await, metrics::Operation::named("settle"))
            }
            Ok(Operation::Hold(request)) => {
                let span = traced(
                    tracing::info_span!("payment", id = %request.id, partition = route.partition, authorization = %request.payment),
                );
                let _entered = span.enter();
                (self.decide_hold(route, request), metrics::Operation::named("hold"))
            }
        };
        let metrics = self.metrics.clone();
        let Answer { reply, after_earlier, span } = answer;
        let reply = Box::pin(async move {
            let decided = reply.await;
            metrics.answered(&operation, decided.status, decided.code, Some(taken.elapsed()));
            decided
        });
        Answer { reply, after_earlier, span }
    }

    /// The refusal of a message about `account` that does not belong on `route`, if it does
    /// not: `wrong_partition`, naming the subject it belongs on.
    fn misrouted(&self, route: Route<'_>, account: &AccountId, echo: &Echo) -> Option<Answer> {
        let partition = self.partitioner.partition_of(account);
        if partition == route.partition && route.payer == account.as_str() {
            return None;
        }
        let message = format!("payer `{account}` is served on `{}`", subjects::pay(partition, account.as_str()));
        Some(now(refused(echo, partition, Code::WrongPartition, message, Vec::new())))
    }
}
