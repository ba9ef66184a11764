//! Deciding one payment: the path every message on `wasmpay.pay.<partition>.<payer>` takes.
//!
//! decode → partition check → pipeline (plugins) → ledger.
//! Every step that refuses returns a reply with a stable code; only plugin or funds declines
//! and approvals are recorded (and so replayed to a retry).
//!
//! The same subject carries the payer's authorizations (a payment whose amount and fee are
//! held, `"type": "authorize"`) and the captures and voids of them (`"type": "capture"`,
//! `"void"`): the payer's partition's owner is the one writer of its holds, in the order they
//! arrive. A capture or void reads its authorization, after the partition's earlier payments
//! were answered (so an authorization just approved is found), renders each reply the ledger
//! may pick, and leaves the hold's state to the ledger's batch.
//!
//! A new payment costs no read before the ledger: the ledger's batch looks up its id (a retry
//! gets the stored reply, byte for byte), checks that both accounts exist and hold its
//! currency, and decides it, for the whole batch in a few set-based queries. Two early reads
//! per payment (the stored reply, the accounts) used to cost more than the plugins and the
//! commit together (docs/performance.md). A refusal before the ledger (an unknown method, a
//! plugin failure) looks the id up first, so a retry of a recorded payment never gets a
//! different answer than the first time.

use std::future::{Future, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use crate::clock;
use crate::metrics::Metrics;
use wasmpay_ledger::{
    Decision, Hold, Ledger, LedgerError, Recorded, Refundable, Replies, StoredReply, Transfer, TransferKind,
    prorated_fee,
};
use wasmpay_plugin_host::{CheckedFee, Instances, PaymentInput, Pipeline, PluginHost, PluginRejection, Verdict};
use wasmpay_protocol::money::{FeeBearer, MinorUnits};
use wasmpay_protocol::routing::{AccountId, Partitioner, subjects};
use wasmpay_protocol::{
    Code, HoldAction, HoldRequest, Operation, PROTOCOL_VERSION, PaymentId, PaymentKind, PaymentRequest, RefundRequest,
    Refusal, Reply, SettlementRequest, Status,
};

use crate::holds::HoldSettings;

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
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Answer").field("after_earlier", &self.after_earlier).finish_non_exhaustive()
    }
}

fn now(decided: Decided) -> Answer {
    Answer { reply: Box::pin(ready(decided)), after_earlier: false }
}

/// How long a partition's sweep waits for another partition's read of due holds before it
/// skips its turn: the reads take about a millisecond, so 64 partitions ticking at once all
/// get theirs, while a stalled ledger holds back a partition's payments this long at most.
const SWEEP_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Decides payments; shared by every partition worker of a node.
#[derive(Debug)]
pub struct Processor {
    ledger: Ledger,
    plugins: Arc<PluginHost>,
    partitioner: Partitioner,
    metrics: Arc<Metrics>,
    holds: HoldSettings,
    /// One sweep's read of due holds at a time, node-wide: every owned partition asks every
    /// second, and while the ledger is stalled (a table lock, a slow disk) those reads would
    /// each hold a pooled connection and starve the payments and the readiness probe. A sweep
    /// that waits [`SWEEP_WAIT`] for another's read skips its turn; the holds stay due for the
    /// next.
    sweeping: tokio::sync::Semaphore,
}

impl Processor {
    /// A processor over these parts.
    pub fn new(
        ledger: Ledger,
        plugins: Arc<PluginHost>,
        partitioner: Partitioner,
        metrics: Arc<Metrics>,
        holds: HoldSettings,
    ) -> Processor {
        Processor { ledger, plugins, partitioner, metrics, holds, sweeping: tokio::sync::Semaphore::new(1) }
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
        let answer = match wasmpay_protocol::decode_operation(body) {
            Err(refusal) => now(unreadable(&refusal)),
            Ok(Operation::Pay(request)) => {
                let span = tracing::info_span!("payment", id = %request.id, partition = route.partition, method = %request.method);
                self.decide_request(instances, route, request).instrument(span).await
            }
            Ok(Operation::Refund(request)) => {
                let span = tracing::info_span!("payment", id = %request.id, partition = route.partition, refunds = %request.payment);
                let _entered = span.enter();
                self.decide_refund(route, request)
            }
            Ok(Operation::Settle(request)) => {
                let span = tracing::info_span!("payment", id = %request.id, partition = route.partition, legs = request.legs.len());
                self.decide_settlement(route, request).instrument(span).await
            }
            Ok(Operation::Hold(request)) => {
                let span = tracing::info_span!("payment", id = %request.id, partition = route.partition, authorization = %request.payment);
                let _entered = span.enter();
                self.decide_hold(route, request)
            }
        };
        let metrics = self.metrics.clone();
        let Answer { reply, after_earlier } = answer;
        let reply = Box::pin(async move {
            let decided = reply.await;
            metrics.count_payment(decided.status, decided.code);
            decided
        });
        Answer { reply, after_earlier }
    }

    async fn decide_request(&self, instances: &mut Instances, route: Route<'_>, request: PaymentRequest) -> Answer {
        let partition = self.partitioner.partition_of(&request.payer);
        let refuse =
            |code: Code, message: String| now(refused(&Echo::from(&request), partition, code, message, Vec::new()));
        if let Some(message) = self.misrouted(route, &request.payer) {
            return refuse(Code::WrongPartition, message);
        }
        let fingerprint = request.fingerprint();
        // Clients may not pay from or to the ledger's own accounts; that needs no read.
        for (role, id) in [("payer", &request.payer), ("payee", &request.payee)] {
            if id.is_system() {
                return refuse(Code::UnknownAccount, format!("{role} `{id}` does not exist"));
            }
        }
        let pipelines = self.plugins.pipelines();
        let Some(pipeline) = pipelines.get(&request.method) else {
            let served: Vec<&str> = pipelines.methods().collect();
            let message = format!("method `{}` is not served; served: {}", request.method, served.join(", "));
            let refusal = (Code::UnknownMethod, message, Vec::new());
            return self.refuse_unless_recorded(&request, partition, &fingerprint, refusal);
        };
        if let Some(plugin) = pipeline.refuses(request.currency) {
            let message =
                format!("plugin {} of method `{}` does not take {}", plugin.key(), request.method, request.currency);
            let refusal = (Code::UnsupportedCurrency, message, Vec::new());
            return self.refuse_unless_recorded(&request, partition, &fingerprint, refusal);
        }
        let received_at_ms = clock::unix_ms();
        let input = PaymentInput::new(&request, received_at_ms);
        let verdict = match instances.run_blocking(pipeline.clone(), input).await {
            Ok(verdict) => verdict,
            Err(failure) => {
                tracing::warn!(%failure, "plugin failed; payment refused, nothing recorded");
                let refusal = (Code::PluginFailed, failure.to_string(), pipeline.keys());
                return self.refuse_unless_recorded(&request, partition, &fingerprint, refusal);
            }
        };
        self.record(request, route, pipeline, &verdict, fingerprint, received_at_ms).await
    }

    /// Why `payer`'s message does not belong on `route`, if it does not.
    fn misrouted(&self, route: Route<'_>, payer: &AccountId) -> Option<String> {
        let partition = self.partitioner.partition_of(payer);
        (partition != route.partition || route.payer != payer.as_str())
            .then(|| format!("payer `{payer}` is served on `{}`", subjects::pay(partition, payer.as_str())))
    }

    /// Decides a capture or void: once the partition's earlier payments were answered, reads
    /// the authorization (a retry of a recorded id gets its stored reply first), renders every
    /// reply the ledger may pick, and submits it under the lease of `route`.
    fn decide_hold(&self, route: Route<'_>, request: HoldRequest) -> Answer {
        let partition = route.partition;
        let echo = Echo::from(&request);
        if let Some(message) = self.misrouted(route, &request.payer) {
            let partition = self.partitioner.partition_of(&request.payer);
            return now(refused(&echo, partition, Code::WrongPartition, message, Vec::new()));
        }
        let (ledger, metrics, lease_token) = (self.ledger.clone(), self.metrics.clone(), route.lease_token);
        let reply = async move {
            let fingerprint = request.fingerprint();
            let hold = match ledger.recorded_reply(request.id.as_str()).await {
                Err(error) => return unavailable(&echo, partition, &error),
                Ok(Some(stored)) => return replay(&echo, partition, &fingerprint, stored),
                Ok(None) => match ledger.hold(&request.payment).await {
                    Err(error) => return unavailable(&echo, partition, &error),
                    Ok(Some(hold)) if hold.payer == request.payer => hold,
                    Ok(_) => {
                        let message = format!("payer `{}` has no authorization `{}`", request.payer, request.payment);
                        return refused(&echo, partition, Code::UnknownPayment, message, Vec::new());
                    }
                },
            };
            let echo = Echo { currency: Some(hold.currency.code().to_owned()), ..echo };
            let (kind, amount) = match request.kind {
                HoldAction::Capture => {
                    let amount = request
                        .amount
                        .map_or(hold.amount, |amount| MinorUnits(i64::try_from(amount).unwrap_or(i64::MAX)));
                    if amount > hold.amount {
                        let message = format!("{amount} is more than the {} authorized", hold.amount);
                        return refused(&echo, partition, Code::ExceedsAuthorized, message, Vec::new());
                    }
                    (TransferKind::Capture { authorization: request.payment.clone() }, amount)
                }
                HoldAction::Void => (TransferKind::Void { authorization: request.payment.clone() }, hold.amount),
            };
            let fee = match kind {
                TransferKind::Capture { .. } => prorated_fee(hold.fee, amount, hold.amount),
                _ => MinorUnits::ZERO,
            };
            let transfer = Transfer {
                id: request.id.clone(),
                kind,
                request_hash: fingerprint.clone(),
                payer: hold.payer.clone(),
                payee: hold.payee.clone(),
                currency: hold.currency,
                amount,
                fee,
                fee_bearer: hold.fee_bearer,
                plugins: hold.plugins.clone(),
                method: None,
                metadata: None,
                partition: Some(partition),
                lease_token: Some(lease_token),
                now_ms: i64::try_from(clock::unix_ms()).unwrap_or(i64::MAX),
            };
            let replies = closing_replies(&transfer, &hold, &request.id);
            let kind = transfer.kind.clone();
            let echo = Echo { amount: u64::try_from(amount.0).ok(), ..echo };
            let started = Instant::now();
            let recorded = match ledger.submit(transfer, replies).await {
                Ok(committed) => committed.await,
                Err(error) => return unavailable(&echo, partition, &error),
            };
            metrics.ledger_commit.observe(started.elapsed());
            settled(&echo, &kind, partition, &fingerprint, recorded)
        };
        Answer { reply: Box::pin(reply.in_current_span()), after_earlier: true }
    }

    /// Decides a refund: once the partition's earlier payments were answered, reads the
    /// refunded payment (a retry of a recorded id gets its stored reply first), refuses one
    /// that is not this payee's or moved no money, renders every reply the ledger may pick, and
    /// submits it under the lease of `route` (the payee's partition).
    fn decide_refund(&self, route: Route<'_>, request: RefundRequest) -> Answer {
        let partition = route.partition;
        let echo = Echo::from(&request);
        if let Some(message) = self.misrouted(route, &request.payee) {
            let partition = self.partitioner.partition_of(&request.payee);
            return now(refused(&echo, partition, Code::WrongPartition, message, Vec::new()));
        }
        let (ledger, metrics, lease_token) = (self.ledger.clone(), self.metrics.clone(), route.lease_token);
        let reply = async move {
            let fingerprint = request.fingerprint();
            let original = match ledger.recorded_reply(request.id.as_str()).await {
                Err(error) => return unavailable(&echo, partition, &error),
                Ok(Some(stored)) => return replay(&echo, partition, &fingerprint, stored),
                Ok(None) => match ledger.refundable(&request.payment).await {
                    Err(error) => return unavailable(&echo, partition, &error),
                    Ok(Some(original)) if original.payee == request.payee => original,
                    Ok(_) => {
                        let message = format!("`{}` was paid no payment `{}`", request.payee, request.payment);
                        return refused(&echo, partition, Code::UnknownPayment, message, Vec::new());
                    }
                },
            };
            let echo = Echo { currency: Some(original.currency.code().to_owned()), ..echo };
            if !original.posted {
                let message =
                    format!("`{}` moved no money: only an approved payment or a capture is refunded", original.id);
                return refused(&echo, partition, Code::NotRefundable, message, Vec::new());
            }
            let left = MinorUnits(original.amount.0.saturating_sub(original.refunded.0));
            let amount = request.amount.map_or(left, |amount| MinorUnits(i64::try_from(amount).unwrap_or(i64::MAX)));
            if amount <= MinorUnits::ZERO {
                let message = format!("nothing is left to refund of `{}`", original.id);
                return refused(&echo, partition, Code::ExceedsRefundable, message, Vec::new());
            }
            let transfer = Transfer {
                id: request.id.clone(),
                kind: TransferKind::Refund { payment: original.id.clone() },
                request_hash: fingerprint.clone(),
                payer: original.payee.clone(),
                payee: original.payer.clone(),
                currency: original.currency,
                amount,
                fee: MinorUnits::ZERO,
                fee_bearer: FeeBearer::Payer,
                plugins: original.plugins.clone(),
                method: None,
                metadata: None,
                partition: Some(partition),
                lease_token: Some(lease_token),
                now_ms: i64::try_from(clock::unix_ms()).unwrap_or(i64::MAX),
            };
            let replies = refund_replies(&transfer, &original);
            let kind = transfer.kind.clone();
            let echo = Echo { amount: u64::try_from(amount.0).ok(), ..echo };
            let started = Instant::now();
            let recorded = match ledger.submit(transfer, replies).await {
                Ok(committed) => committed.await,
                Err(error) => return unavailable(&echo, partition, &error),
            };
            metrics.ledger_commit.observe(started.elapsed());
            settled(&echo, &kind, partition, &fingerprint, recorded)
        };
        Answer { reply: Box::pin(reply.in_current_span()), after_earlier: true }
    }

    /// Decides a settlement: every leg or none, in the batch of the first leg's payer's
    /// partition (this one), which locks every leg's payer like any debit. No plugin takes
    /// part: a settlement moves what two parties agreed on, between accounts they hold.
    async fn decide_settlement(&self, route: Route<'_>, request: SettlementRequest) -> Answer {
        let first = request.legs[0].clone();
        let echo = Echo {
            id: request.id.to_string(),
            payer: first.payer.to_string(),
            amount: Some(first.amount),
            currency: Some(first.currency.code().to_owned()),
            payment: None,
        };
        if let Some(message) = self.misrouted(route, &first.payer) {
            let partition = self.partitioner.partition_of(&first.payer);
            return now(refused(&echo, partition, Code::WrongPartition, message, Vec::new()));
        }
        let partition = route.partition;
        if let Some(system) = request.legs.iter().flat_map(|leg| [&leg.payer, &leg.payee]).find(|id| id.is_system()) {
            let message = format!("`{system}` does not exist");
            return now(refused(&echo, partition, Code::UnknownAccount, message, Vec::new()));
        }
        let fingerprint = request.fingerprint();
        let transfer = Transfer {
            id: request.id.clone(),
            kind: TransferKind::Settlement { legs: request.legs.clone() },
            request_hash: fingerprint.clone(),
            payer: first.payer.clone(),
            payee: first.payee.clone(),
            currency: first.currency,
            amount: MinorUnits::payment_amount(first.amount).unwrap_or(MinorUnits::ZERO),
            fee: MinorUnits::ZERO,
            fee_bearer: FeeBearer::Payer,
            plugins: String::new(),
            method: None,
            metadata: (!request.metadata.is_empty())
                .then(|| serde_json::to_string(&request.metadata).unwrap_or_default()),
            partition: Some(partition),
            lease_token: Some(route.lease_token),
            now_ms: i64::try_from(clock::unix_ms()).unwrap_or(i64::MAX),
        };
        let render = |decision: Decision| {
            let code = decision.code(&transfer.kind);
            let message = match decision {
                Decision::InsufficientFunds => "an account of the settlement would fall below its floor".to_owned(),
                _ => "settled".to_owned(),
            };
            Reply {
                version: PROTOCOL_VERSION,
                id: Some(request.id.to_string()),
                status: code.status(),
                code,
                message,
                reason: None,
                retryable: decision == Decision::InsufficientFunds,
                amount: Some(first.amount),
                fee: None,
                fee_bearer: None,
                currency: Some(first.currency.code().to_owned()),
                plugins: Vec::new(),
                partition: Some(partition),
                payment: None,
                expires_at_ms: None,
                legs: Some(request.legs.clone()),
            }
            .to_json()
        };
        let replies = Replies::Posting {
            approved: render(Decision::Approved),
            insufficient_funds: render(Decision::InsufficientFunds),
        };
        let kind = transfer.kind.clone();
        let started = Instant::now();
        let committed = match self.ledger.submit(transfer, replies).await {
            Ok(committed) => committed,
            Err(error) => return now(unavailable(&echo, partition, &error)),
        };
        let metrics = self.metrics.clone();
        let reply = async move {
            let recorded = committed.await;
            metrics.ledger_commit.observe(started.elapsed());
            settled(&echo, &kind, partition, &fingerprint, recorded)
        };
        Answer { reply: Box::pin(reply.in_current_span()), after_earlier: false }
    }

    /// Releases the holds of `partition` that are due, under the lease with `lease_token`: at
    /// most [`HoldSettings::sweep_limit`] (and `room`) per call, each through the ledger's batch like a
    /// payment (so fenced, and ordered with the payer's captures and voids). Each resolves to
    /// the expiry's event once its batch committed; a hold a capture closed meanwhile, or one
    /// not due any more, resolves to nothing to publish.
    pub async fn expire_due(
        &self,
        partition: u32,
        lease_token: u64,
        room: usize,
    ) -> Vec<Pin<Box<dyn Future<Output = Decided> + Send>>> {
        let limit = self.holds.sweep_limit.min(u32::try_from(room).unwrap_or(u32::MAX));
        if limit == 0 {
            return Vec::new();
        }
        let Ok(Ok(_reading)) = tokio::time::timeout(SWEEP_WAIT, self.sweeping.acquire()).await else {
            return Vec::new();
        };
        let now_ms = i64::try_from(clock::unix_ms()).unwrap_or(i64::MAX);
        let due = match self.ledger.due_holds(partition, now_ms, limit).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, partition, "could not read the holds due; the next sweep tries again");
                return Vec::new();
            }
        };
        let mut expiring: Vec<Pin<Box<dyn Future<Output = Decided> + Send>>> = Vec::with_capacity(due.len());
        for hold in due {
            let transfer = Transfer {
                id: hold.id.clone(),
                kind: TransferKind::Expiry,
                request_hash: String::new(),
                payer: hold.payer.clone(),
                payee: hold.payee.clone(),
                currency: hold.currency,
                amount: hold.amount,
                fee: MinorUnits::ZERO,
                fee_bearer: hold.fee_bearer,
                plugins: hold.plugins.clone(),
                method: None,
                metadata: None,
                partition: Some(partition),
                lease_token: Some(lease_token),
                now_ms,
            };
            let replies = closing_replies(&transfer, &hold, &hold.id);
            let committed = match self.ledger.submit(transfer, replies).await {
                Ok(committed) => committed,
                Err(error) => {
                    tracing::warn!(%error, partition, "could not submit an expiry; the next sweep tries again");
                    break;
                }
            };
            let metrics = self.metrics.clone();
            expiring.push(Box::pin(async move {
                let decided = match committed.await {
                    Ok(Recorded::New { decision: Decision::Approved, reply }) => {
                        Decided { reply, status: Status::Expired, code: Code::Expired, newly_recorded: true }
                    }
                    Ok(_) => Decided {
                        reply: String::new(),
                        status: Status::Expired,
                        code: Code::Expired,
                        newly_recorded: false,
                    },
                    Err(error) => {
                        tracing::warn!(%error, "an expiry was not recorded; the next sweep tries again");
                        Decided {
                            reply: String::new(),
                            status: Status::Error,
                            code: Code::Unavailable,
                            newly_recorded: false,
                        }
                    }
                };
                if decided.newly_recorded {
                    metrics.count_payment(decided.status, decided.code);
                }
                decided
            }));
        }
        expiring
    }

    /// Refuses `request` with `(code, message, plugins)`, unless its id is recorded: then the
    /// stored reply (or a conflict). The lookup runs when the worker polls the answer, after
    /// its partition's earlier payments were answered.
    fn refuse_unless_recorded(
        &self,
        request: &PaymentRequest,
        partition: u32,
        fingerprint: &str,
        (code, message, plugins): (Code, String, Vec<String>),
    ) -> Answer {
        let (ledger, echo, fingerprint) = (self.ledger.clone(), Echo::from(request), fingerprint.to_owned());
        let reply = async move {
            match ledger.recorded_reply(echo.id.as_str()).await {
                Err(error) => unavailable(&echo, partition, &error),
                Ok(Some(stored)) => replay(&echo, partition, &fingerprint, stored),
                Ok(None) => refused(&echo, partition, code, message, plugins),
            }
        };
        Answer { reply: Box::pin(reply.in_current_span()), after_earlier: true }
    }

    /// Submits the decided payment to the ledger, under the lease of `route`'s partition (the
    /// payer's, checked before); the answer resolves when its batch commits.
    async fn record(
        &self,
        request: PaymentRequest,
        route: Route<'_>,
        pipeline: &Pipeline,
        verdict: &Verdict,
        fingerprint: String,
        received_at_ms: u64,
    ) -> Answer {
        let partition = route.partition;
        let plugins = pipeline.keys();
        let plugins_joined = plugins.join(",");
        let (fee, rejection) = match verdict {
            Verdict::Priced(fee) => (*fee, None),
            Verdict::Declined(rejection) => (CheckedFee { total: 0, bearer: FeeBearer::Payee }, Some(rejection)),
        };
        let (Ok(amount), Ok(fee_units)) =
            (MinorUnits::from_unsigned(request.amount), MinorUnits::from_unsigned(fee.total))
        else {
            unreachable!("amounts and fees are bounded by 2^53 - 1 before they get here");
        };
        let kind = match request.kind {
            PaymentKind::Payment => TransferKind::Payment,
            PaymentKind::Authorize => {
                let expiry = self.holds.expiry_of(&request.method);
                let expires_at_ms =
                    received_at_ms.saturating_add(u64::try_from(expiry.as_millis()).unwrap_or(u64::MAX));
                TransferKind::Authorization { expires_at_ms: i64::try_from(expires_at_ms).unwrap_or(i64::MAX) }
            }
        };
        let expires_at_ms = match kind {
            TransferKind::Authorization { expires_at_ms } => Some(expires_at_ms),
            _ => None,
        };
        let transfer = Transfer {
            id: request.id.clone(),
            kind,
            request_hash: fingerprint.clone(),
            payer: request.payer.clone(),
            payee: request.payee.clone(),
            currency: request.currency,
            amount,
            fee: fee_units,
            fee_bearer: fee.bearer,
            plugins: plugins_joined,
            method: Some(request.method.clone()),
            metadata: (!request.metadata.is_empty())
                .then(|| serde_json::to_string(&request.metadata).unwrap_or_default()),
            partition: Some(partition),
            lease_token: Some(route.lease_token),
            now_ms: i64::try_from(received_at_ms).unwrap_or(i64::MAX),
        };
        // Rendered here, before the ledger decides: the ledger stores the reply its decision
        // picks and runs none of this node's code inside its transaction.
        let render = |decision: Decision| {
            let reply = recorded_reply(&request, &transfer.kind, partition, &plugins, decision, fee, rejection);
            Reply { expires_at_ms: expires_at_ms.filter(|_| decision == Decision::Approved), ..reply }.to_json()
        };
        let replies = match rejection {
            Some(_) => Replies::DeclinedByPlugin(render(Decision::PluginDeclined)),
            None => Replies::Posting {
                approved: render(Decision::Approved),
                insufficient_funds: render(Decision::InsufficientFunds),
            },
        };
        let kind = transfer.kind.clone();
        let started = Instant::now();
        let committed = match self.ledger.submit(transfer, replies).await {
            Ok(committed) => committed,
            Err(error) => return now(unavailable(&(&request).into(), partition, &error)),
        };
        let metrics = self.metrics.clone();
        let reply = async move {
            let recorded = committed.await;
            metrics.ledger_commit.observe(started.elapsed());
            settled(&Echo::from(&request), &kind, partition, &fingerprint, recorded)
        };
        Answer { reply: Box::pin(reply.in_current_span()), after_earlier: false }
    }
}

/// What a reply echoes of the request it answers.
#[derive(Clone, Debug)]
struct Echo {
    id: String,
    payer: String,
    amount: Option<u64>,
    currency: Option<String>,
    /// The authorization a capture or void acts on.
    payment: Option<String>,
}

impl From<&PaymentRequest> for Echo {
    fn from(request: &PaymentRequest) -> Echo {
        Echo {
            id: request.id.to_string(),
            payer: request.payer.to_string(),
            amount: Some(request.amount),
            currency: Some(request.currency.code().to_owned()),
            payment: None,
        }
    }
}

impl From<&RefundRequest> for Echo {
    fn from(request: &RefundRequest) -> Echo {
        Echo {
            id: request.id.to_string(),
            payer: request.payee.to_string(),
            amount: request.amount,
            currency: None,
            payment: Some(request.payment.to_string()),
        }
    }
}

impl From<&HoldRequest> for Echo {
    fn from(request: &HoldRequest) -> Echo {
        Echo {
            id: request.id.to_string(),
            payer: request.payer.to_string(),
            amount: request.amount,
            currency: None,
            payment: Some(request.payment.to_string()),
        }
    }
}

/// The answer to a transfer the ledger decided (or failed to).
fn settled(
    echo: &Echo,
    kind: &TransferKind,
    partition: u32,
    fingerprint: &str,
    recorded: Result<Recorded, LedgerError>,
) -> Decided {
    match recorded {
        Ok(Recorded::New { decision, reply }) => {
            let code = decision.code(kind);
            Decided { reply, status: code.status(), code, newly_recorded: true }
        }
        Ok(Recorded::Existing(stored)) => replay(echo, partition, fingerprint, stored),
        Err(LedgerError::UnknownAccount(id)) => {
            let role = if id == echo.payer { "payer" } else { "payee" };
            refused(echo, partition, Code::UnknownAccount, format!("{role} `{id}` does not exist"), Vec::new())
        }
        Err(LedgerError::CurrencyMismatch { account, holds }) => {
            let role = if account == echo.payer { "payer" } else { "payee" };
            let currency = echo.currency.as_deref().unwrap_or_default();
            let message = format!("{role} `{account}` holds {holds}, not {currency}");
            refused(echo, partition, Code::CurrencyMismatch, message, Vec::new())
        }
        Err(error) => unavailable(echo, partition, &error),
    }
}

/// The replies of a capture, void or expiry of `hold`: what the ledger stores when it closes
/// the hold, when it finds the hold expired, and when it finds it closed already.
fn closing_replies(transfer: &Transfer, hold: &Hold, id: &PaymentId) -> Replies {
    let render = |decision| operation_reply(transfer, id, &hold.id, &hold.plugins, decision);
    Replies::Closing {
        closed: render(Decision::Approved),
        hold_expired: render(Decision::HoldExpired),
        not_open: render(Decision::HoldNotOpen),
    }
}

/// The replies of a refund of `original`.
fn refund_replies(transfer: &Transfer, original: &Refundable) -> Replies {
    let render = |decision| operation_reply(transfer, &transfer.id, &original.id, &original.plugins, decision);
    Replies::Refunding {
        approved: render(Decision::Approved),
        insufficient_funds: render(Decision::InsufficientFunds),
        exceeds_refundable: render(Decision::ExceedsRefundable),
    }
}

/// The reply of operation `id` (a capture, void, expiry or refund) on payment `payment`, were
/// the ledger to decide `decision`: it names the payment, echoes the amount, and states the fee
/// of what it posts.
fn operation_reply(
    transfer: &Transfer,
    id: &PaymentId,
    payment: &PaymentId,
    plugins: &str,
    decision: Decision,
) -> String {
    let code = decision.code(&transfer.kind);
    let message = match decision {
        Decision::HoldExpired => format!("authorization `{payment}` expired; its hold is released"),
        Decision::HoldNotOpen => format!("authorization `{payment}` is no longer open"),
        Decision::InsufficientFunds => format!("`{}`'s available balance would fall below its floor", transfer.payer),
        Decision::ExceedsRefundable => format!("more than is left to refund of `{payment}`"),
        _ => code.as_str().to_owned(),
    };
    let posted = decision == Decision::Approved
        && matches!(transfer.kind, TransferKind::Capture { .. } | TransferKind::Refund { .. });
    Reply {
        version: PROTOCOL_VERSION,
        id: Some(id.to_string()),
        status: code.status(),
        code,
        message,
        reason: None,
        retryable: decision == Decision::InsufficientFunds,
        amount: u64::try_from(transfer.amount.0).ok(),
        fee: posted.then(|| u64::try_from(transfer.fee.0).ok()).flatten(),
        fee_bearer: posted.then_some(transfer.fee_bearer),
        currency: Some(transfer.currency.code().to_owned()),
        plugins: plugins.split(',').filter(|key| !key.is_empty()).map(str::to_owned).collect(),
        partition: transfer.partition,
        payment: Some(payment.to_string()),
        expires_at_ms: None,
        legs: None,
    }
    .to_json()
}

fn recorded_reply(
    request: &PaymentRequest,
    kind: &TransferKind,
    partition: u32,
    plugins: &[String],
    decision: Decision,
    fee: CheckedFee,
    rejection: Option<&PluginRejection>,
) -> Reply {
    let code = decision.code(kind);
    let (message, reason, retryable) = match (decision, rejection) {
        (Decision::PluginDeclined, Some(rejection)) => (
            format!("{} declined: {}", rejection.plugin, rejection.message),
            Some(rejection.code.clone()),
            rejection.retryable,
        ),
        (Decision::InsufficientFunds, _) => {
            ("the payer's available balance would fall below its floor".to_owned(), None, true)
        }
        _ => (code.as_str().replace("ok", "approved"), None, false),
    };
    let priced = rejection.is_none();
    Reply {
        version: PROTOCOL_VERSION,
        id: Some(request.id.to_string()),
        status: code.status(),
        code,
        message,
        reason,
        retryable,
        amount: Some(request.amount),
        fee: priced.then_some(fee.total),
        fee_bearer: priced.then_some(fee.bearer),
        currency: Some(request.currency.code().to_owned()),
        plugins: plugins.to_vec(),
        partition: Some(partition),
        payment: None,
        expires_at_ms: None,
        legs: None,
    }
}

/// The refusal of a message that is not a readable request: nothing of it can be echoed.
fn unreadable(refusal: &Refusal) -> Decided {
    answer(&Reply::refused(refusal, None))
}

/// The refusal of a readable request: it echoes the amount and currency, names the payer's
/// partition, and the plugins that took part (a plugin failure names the pipeline).
fn refused(echo: &Echo, partition: u32, code: Code, message: String, plugins: Vec<String>) -> Decided {
    let refusal = Refusal { id: Some(echo.id.clone()), code, message };
    answer(&Reply {
        plugins,
        amount: echo.amount,
        currency: echo.currency.clone(),
        payment: echo.payment.clone(),
        ..Reply::refused(&refusal, Some(partition))
    })
}

fn answer(reply: &Reply) -> Decided {
    Decided { reply: reply.to_json(), status: reply.status, code: reply.code, newly_recorded: false }
}

/// A recorded id: the same request gets the stored bytes, another request a conflict.
fn replay(echo: &Echo, partition: u32, fingerprint: &str, stored: StoredReply) -> Decided {
    let StoredReply { request_hash, reply } = stored;
    if request_hash != fingerprint {
        let message = format!("id `{}` was already used for a different request", echo.id);
        return refused(echo, partition, Code::Conflict, message, Vec::new());
    }
    match serde_json::from_str::<Reply>(&reply) {
        Ok(parsed) => Decided { reply, status: parsed.status, code: parsed.code, newly_recorded: false },
        Err(error) => unreadable_reply(echo, partition, &error),
    }
}

/// A stored or rendered reply that does not parse: the record stands, its answer cannot be
/// read back.
fn unreadable_reply(echo: &Echo, partition: u32, error: &serde_json::Error) -> Decided {
    tracing::error!(%error, id = %echo.id, "stored reply does not parse");
    let message = "the stored result cannot be read".to_owned();
    refused(echo, partition, Code::Unavailable, message, Vec::new())
}

/// A ledger failure as a reply. A balance that would overflow is permanent for this payment
/// (`amount_out_of_range`); any other failure is `unavailable`: transient ones (the database
/// busy, unreachable or out of space) heal by themselves, the rest (corrupt data) once an
/// operator repairs the ledger, so a retry with the same id is the right advice either way.
fn unavailable(echo: &Echo, partition: u32, error: &LedgerError) -> Decided {
    if let LedgerError::Overflow(_) = error {
        let message = format!("the payment cannot be posted: {error}");
        return refused(echo, partition, Code::AmountOutOfRange, message, Vec::new());
    }
    tracing::error!(%error, transient = error.is_transient(), "ledger failed; payment not recorded");
    let message = format!("ledger unavailable, retry with the same id: {error}");
    refused(echo, partition, Code::Unavailable, message, Vec::new())
}
