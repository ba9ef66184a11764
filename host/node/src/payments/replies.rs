//! What a message is answered, and how a decided transfer goes to the ledger: the echo of a
//! request in its reply, the refusals, the replay of a recorded id, and the answer of a
//! transfer once its batch committed.

use std::future::{Future, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use super::Decided;
use crate::complaints::complain;
use crate::metrics::Metrics;
use wasmpay_ledger::{Decision, Ledger, LedgerError, Recorded, Replies, StoredReply, Transfer, TransferKind};
use wasmpay_protocol::money::MinorUnits;
use wasmpay_protocol::{Code, HoldRequest, PaymentId, PaymentRequest, RefundRequest, Refusal, Reply};

/// What a reply echoes of the request it answers.
#[derive(Clone, Debug)]
pub(super) struct Echo {
    pub(super) id: String,
    pub(super) payer: String,
    pub(super) amount: Option<u64>,
    pub(super) currency: Option<String>,
    /// The authorization a capture or void acts on.
    pub(super) payment: Option<String>,
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

/// The answer of a request whose id is recorded already (its stored reply, or a conflict), or
/// of a ledger that cannot say; `None` when the id is new. A request refused before the ledger,
/// or one that reads what it acts on, asks this first, so a retry never gets another answer
/// than the first time.
pub(super) async fn recorded(ledger: &Ledger, echo: &Echo, partition: u32, fingerprint: &str) -> Option<Decided> {
    match ledger.recorded_reply(echo.id.as_str()).await {
        Err(error) => Some(unavailable(echo, partition, &error)),
        Ok(Some(stored)) => Some(replay(echo, partition, fingerprint, stored)),
        Ok(None) => None,
    }
}

/// A decided transfer's way into the ledger: submits it with the replies rendered for it, and
/// resolves to its answer once its batch committed (at once, if the ledger could not take it).
pub(super) async fn submitted(
    ledger: &Ledger,
    metrics: &Arc<Metrics>,
    transfer: Transfer,
    replies: Replies,
    echo: Echo,
    fingerprint: String,
) -> Pin<Box<dyn Future<Output = Decided> + Send>> {
    let (kind, partition) = (transfer.kind.clone(), transfer.partition.unwrap_or_default());
    let started = Instant::now();
    let committed = match ledger.submit(transfer, replies).await {
        Ok(committed) => committed,
        Err(error) => return Box::pin(ready(unavailable(&echo, partition, &error))),
    };
    let metrics = metrics.clone();
    Box::pin(
        async move {
            let recorded = committed.await;
            metrics.ledger_waited(started.elapsed());
            settled(&echo, &kind, partition, &fingerprint, recorded)
        }
        // Inside the message's span: a trace shows the payment's wait for its batch.
        .instrument(tracing::info_span!("ledger commit")),
    )
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
            // Inside the message's span (its id, partition and method): what the ledger decided.
            tracing::debug!(status = code.status().as_str(), code = code.as_str(), "decided");
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

/// The reply of operation `id` (a capture, void, expiry or refund) on payment `payment`, were
/// the ledger to decide `decision`: it names the payment, echoes the amount, and states the fee
/// of what it posts (and what of the payment's fee a refund gives back).
pub(super) fn operation_reply(
    transfer: &Transfer,
    id: &PaymentId,
    payment: &PaymentId,
    plugins: &str,
    decision: Decision,
) -> Reply {
    let code = decision.code(&transfer.kind);
    let message = match decision {
        Decision::HoldExpired => format!("authorization `{payment}` expired; its hold is released"),
        Decision::HoldNotOpen => format!("authorization `{payment}` is no longer open"),
        Decision::InsufficientFunds => format!("`{}`'s available balance would fall below its floor", transfer.payer),
        Decision::ExceedsRefundable if transfer.kind.fee_reversed() > MinorUnits::ZERO => {
            format!("more than is left to refund of `{payment}`, or more of its fee than may be given back")
        }
        Decision::ExceedsRefundable => format!("more than is left to refund of `{payment}`"),
        _ => code.as_str().to_owned(),
    };
    let posted = decision == Decision::Approved
        && matches!(transfer.kind, TransferKind::Capture { .. } | TransferKind::Refund { .. });
    Reply {
        retryable: decision == Decision::InsufficientFunds,
        amount: u64::try_from(transfer.amount.0).ok(),
        fee: posted.then(|| u64::try_from(transfer.fee.0).ok()).flatten(),
        fee_bearer: posted.then_some(transfer.fee_bearer),
        fee_reversed: posted
            .then(|| u64::try_from(transfer.kind.fee_reversed().0).ok())
            .flatten()
            .filter(|reversed| *reversed > 0),
        currency: Some(transfer.currency.code().to_owned()),
        plugins: plugins.split(',').filter(|key| !key.is_empty()).map(str::to_owned).collect(),
        payment: Some(payment.to_string()),
        ..Reply::decided(Some(id.to_string()), code, message, transfer.partition)
    }
}

/// The refusal of a message that is not a readable request: nothing of it can be echoed.
pub(super) fn unreadable(refusal: &Refusal) -> Decided {
    answer(&Reply::refused(refusal, None))
}

/// The refusal of a readable request: it echoes the amount and currency, names the payer's
/// partition, and the plugins that took part (a plugin failure names the pipeline).
pub(super) fn refused(echo: &Echo, partition: u32, code: Code, message: String, plugins: Vec<String>) -> Decided {
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
pub(super) fn replay(echo: &Echo, partition: u32, fingerprint: &str, stored: StoredReply) -> Decided {
    let StoredReply { request_hash, reply } = stored;
    if request_hash != fingerprint {
        let message = format!("id `{}` was already used for a different request", echo.id);
        return refused(echo, partition, Code::Conflict, message, Vec::new());
    }
    match Reply::outcome_of(&reply) {
        Ok((status, code)) => Decided { reply, status, code, newly_recorded: false },
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
pub(super) fn unavailable(echo: &Echo, partition: u32, error: &LedgerError) -> Decided {
    if let LedgerError::Overflow(_) = error {
        let message = format!("the payment cannot be posted: {error}");
        return refused(echo, partition, Code::AmountOutOfRange, message, Vec::new());
    }
    if error.is_transient() {
        complain!(error, "ledger failed; payment not recorded", %error, transient = true);
    } else {
        // Not an outage: each one is said.
        tracing::error!(%error, transient = false, "ledger failed; payment not recorded");
    }
    let message = format!("ledger unavailable, retry with the same id: {error}");
    refused(echo, partition, Code::Unavailable, message, Vec::new())
}
