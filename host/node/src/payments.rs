//! Deciding one payment: the path every message on `wasmpay.pay.<partition>.<payer>` takes.
//!
//! decode → partition check → pipeline (plugins) → ledger.
//! Every step that refuses returns a reply with a stable code; only plugin or funds declines
//! and approvals are recorded (and so replayed to a retry).
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
use wasmpay_ledger::{Decision, Ledger, LedgerError, Recorded, Replies, StoredReply, Transfer, TransferKind};
use wasmpay_plugin_host::{CheckedFee, Instances, PaymentInput, Pipeline, PluginHost, PluginRejection, Verdict};
use wasmpay_protocol::money::{FeeBearer, MinorUnits};
use wasmpay_protocol::routing::{Partitioner, subjects};
use wasmpay_protocol::{Code, PROTOCOL_VERSION, PaymentRequest, Refusal, Reply, Status};

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

/// Decides payments; shared by every partition worker of a node.
#[derive(Debug)]
pub struct Processor {
    ledger: Ledger,
    plugins: Arc<PluginHost>,
    partitioner: Partitioner,
    metrics: Arc<Metrics>,
}

impl Processor {
    /// A processor over these parts.
    pub fn new(ledger: Ledger, plugins: Arc<PluginHost>, partitioner: Partitioner, metrics: Arc<Metrics>) -> Processor {
        Processor { ledger, plugins, partitioner, metrics }
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
        let answer = match wasmpay_protocol::decode(body) {
            Err(refusal) => now(unreadable(&refusal)),
            Ok(request) => {
                let span = tracing::info_span!("payment", id = %request.id, partition = route.partition, method = %request.method);
                self.decide_request(instances, route, request).instrument(span).await
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
        let refuse = |code: Code, message: String| now(refused(&request, partition, code, message, Vec::new()));
        if partition != route.partition || route.payer != request.payer.as_str() {
            let subject = subjects::pay(partition, request.payer.as_str());
            return refuse(Code::WrongPartition, format!("payer `{}` is served on `{subject}`", request.payer));
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
        let (ledger, request, fingerprint) = (self.ledger.clone(), request.clone(), fingerprint.to_owned());
        let reply = async move {
            match ledger.recorded_reply(request.id.as_str()).await {
                Err(error) => unavailable(&request, partition, &error),
                Ok(Some(stored)) => replay(&request, partition, &fingerprint, stored),
                Ok(None) => refused(&request, partition, code, message, plugins),
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
        let transfer = Transfer {
            id: request.id.clone(),
            kind: TransferKind::Payment,
            request_hash: fingerprint.clone(),
            payer: request.payer.clone(),
            payee: request.payee.clone(),
            currency: request.currency,
            amount,
            fee: fee_units,
            fee_bearer: fee.bearer,
            plugins: plugins_joined,
            partition: Some(partition),
            lease_token: Some(route.lease_token),
            now_ms: i64::try_from(received_at_ms).unwrap_or(i64::MAX),
        };
        // Rendered here, before the ledger decides: the ledger stores the reply its decision
        // picks and runs none of this node's code inside its transaction.
        let render =
            |decision: Decision| recorded_reply(&request, partition, &plugins, decision, fee, rejection).to_json();
        let replies = match rejection {
            Some(_) => Replies::DeclinedByPlugin(render(Decision::PluginDeclined)),
            None => Replies::Posting {
                approved: render(Decision::Approved),
                insufficient_funds: render(Decision::InsufficientFunds),
            },
        };
        let started = Instant::now();
        let committed = match self.ledger.submit(transfer, replies).await {
            Ok(committed) => committed,
            Err(error) => return now(unavailable(&request, partition, &error)),
        };
        let metrics = self.metrics.clone();
        let reply = async move {
            let recorded = committed.await;
            metrics.ledger_commit.observe(started.elapsed());
            settled(&request, partition, &fingerprint, recorded)
        };
        Answer { reply: Box::pin(reply.in_current_span()), after_earlier: false }
    }
}

/// The answer to a payment the ledger decided (or failed to).
fn settled(
    request: &PaymentRequest,
    partition: u32,
    fingerprint: &str,
    recorded: Result<Recorded, LedgerError>,
) -> Decided {
    match recorded {
        Ok(Recorded::New { decision, reply }) => {
            let code = decision.code();
            Decided { reply, status: code.status(), code, newly_recorded: true }
        }
        Ok(Recorded::Existing(stored)) => replay(request, partition, fingerprint, stored),
        Err(LedgerError::UnknownAccount(id)) => {
            let role = if id == request.payer.as_str() { "payer" } else { "payee" };
            refused(request, partition, Code::UnknownAccount, format!("{role} `{id}` does not exist"), Vec::new())
        }
        Err(LedgerError::CurrencyMismatch { account, holds }) => {
            let role = if account == request.payer.as_str() { "payer" } else { "payee" };
            let message = format!("{role} `{account}` holds {holds}, not {}", request.currency);
            refused(request, partition, Code::CurrencyMismatch, message, Vec::new())
        }
        Err(error) => unavailable(request, partition, &error),
    }
}

fn recorded_reply(
    request: &PaymentRequest,
    partition: u32,
    plugins: &[String],
    decision: Decision,
    fee: CheckedFee,
    rejection: Option<&PluginRejection>,
) -> Reply {
    let code = decision.code();
    let (message, reason, retryable) = match (decision, rejection) {
        (Decision::PluginDeclined, Some(rejection)) => (
            format!("{} declined: {}", rejection.plugin, rejection.message),
            Some(rejection.code.clone()),
            rejection.retryable,
        ),
        (Decision::InsufficientFunds, _) => ("the payer's balance would fall below its floor".to_owned(), None, true),
        _ => ("approved".to_owned(), None, false),
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
    }
}

/// The refusal of a message that is not a readable request: nothing of it can be echoed.
fn unreadable(refusal: &Refusal) -> Decided {
    answer(&Reply::refused(refusal, None))
}

/// The refusal of a readable request: it echoes the amount and currency, names the payer's
/// partition, and the plugins that took part (a plugin failure names the pipeline).
fn refused(request: &PaymentRequest, partition: u32, code: Code, message: String, plugins: Vec<String>) -> Decided {
    let refusal = Refusal { id: Some(request.id.to_string()), code, message };
    answer(&Reply {
        plugins,
        amount: Some(request.amount),
        currency: Some(request.currency.code().to_owned()),
        ..Reply::refused(&refusal, Some(partition))
    })
}

fn answer(reply: &Reply) -> Decided {
    Decided { reply: reply.to_json(), status: reply.status, code: reply.code, newly_recorded: false }
}

/// A recorded id: the same request gets the stored bytes, another request a conflict.
fn replay(request: &PaymentRequest, partition: u32, fingerprint: &str, stored: StoredReply) -> Decided {
    let StoredReply { request_hash, reply } = stored;
    if request_hash != fingerprint {
        let message = format!("id `{}` was already used for a different payment", request.id);
        return refused(request, partition, Code::Conflict, message, Vec::new());
    }
    match serde_json::from_str::<Reply>(&reply) {
        Ok(parsed) => Decided { reply, status: parsed.status, code: parsed.code, newly_recorded: false },
        Err(error) => {
            tracing::error!(%error, id = %request.id, "stored reply does not parse");
            let message = "the stored result cannot be read".to_owned();
            refused(request, partition, Code::Unavailable, message, Vec::new())
        }
    }
}

/// A ledger failure as a reply. A balance that would overflow is permanent for this payment
/// (`amount_out_of_range`); any other failure is `unavailable`: transient ones (the database
/// busy, unreachable or out of space) heal by themselves, the rest (corrupt data) once an
/// operator repairs the ledger, so a retry with the same id is the right advice either way.
fn unavailable(request: &PaymentRequest, partition: u32, error: &LedgerError) -> Decided {
    if let LedgerError::Overflow(_) = error {
        let message = format!("the payment cannot be posted: {error}");
        return refused(request, partition, Code::AmountOutOfRange, message, Vec::new());
    }
    tracing::error!(%error, transient = error.is_transient(), "ledger failed; payment not recorded");
    let message = format!("ledger unavailable, retry with the same id: {error}");
    refused(request, partition, Code::Unavailable, message, Vec::new())
}
