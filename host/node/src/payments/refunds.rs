//! Refunds: money back from a payment's payee to its payer, decided by the payee's owner (the
//! account a refund debits), up to what the payment moved, and priced by the method's fee
//! policy when it exports `refund-fee` (WIT 0.1.1): it keeps the payment's fee (the default),
//! gives part of it back, or charges one.

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::Instrument;

use super::replies::{Echo, operation_reply, recorded, refused, submitted, unavailable};
use super::{Answer, Processor, Route};
use crate::clock;
use crate::complaints::complain;
use crate::metrics::Metrics;
use wasmpay_ledger::{Decision, FeeReversal, Refundable, Replies, Transfer, TransferKind};
use wasmpay_plugin_host::{
    Instances, PluginHost, PluginRejection, RefundFee, RefundInput, RefundVerdict, RefundedPayment,
};
use wasmpay_protocol::money::{FeeBearer, MinorUnits, Unit};
use wasmpay_protocol::{Code, RefundRequest, Reply};

impl Processor {
    /// Decides a refund: once the partition's earlier payments were answered, reads the
    /// refunded payment (a retry of a recorded id gets its stored reply first), refuses one
    /// that is not this payee's or moved no money, asks the method's fee policy what the
    /// refund costs, renders every reply the ledger may pick, and submits it under the lease
    /// of `route` (the payee's partition).
    pub(super) fn decide_refund(&self, route: Route<'_>, request: RefundRequest) -> Answer {
        let partition = route.partition;
        let echo = Echo::from(&request);
        if let Some(misrouted) = self.misrouted(route, &request.payee, &echo) {
            return misrouted;
        }
        let (ledger, metrics, lease_token) = (self.ledger.clone(), self.metrics.clone(), route.lease_token);
        let plugins = self.plugins.clone();
        let client = route.client_key.map(str::to_owned);
        let reply = async move {
            let fingerprint = request.fingerprint();
            if let Some(answer) = recorded(&ledger, &echo, partition, &fingerprint).await {
                return answer;
            }
            let original = match ledger.refundable(&request.payment).await {
                Err(error) => return unavailable(&echo, partition, &error),
                Ok(Some(original)) if original.payee == request.payee => original,
                Ok(_) => {
                    let message = format!("`{}` was paid no payment `{}`", request.payee, request.payment);
                    return refused(&echo, partition, Code::UnknownPayment, message, Vec::new());
                }
            };
            let echo = Echo { currency: Some(original.currency.code().to_owned()), ..echo };
            if !original.posted {
                let message =
                    format!("`{}` moved no money: only an approved payment or a capture is refunded", original.id);
                return refused(&echo, partition, Code::NotRefundable, message, Vec::new());
            }
            if original.converted {
                // Its payee holds another currency: giving money back means converting it back,
                // at a rate nobody has quoted yet. Until refunds convert, the payee pays the
                // payer back with a cross-border payment of its own.
                let message = format!(
                    "`{}` was a cross-border payment: refunds of converted payments are not supported yet; pay the \
                     payer back with a cross-border payment",
                    original.id
                );
                return refused(&echo, partition, Code::NotRefundable, message, Vec::new());
            }
            let left = MinorUnits(original.amount.0.saturating_sub(original.refunded.0));
            let amount = request.amount.map_or(left, |amount| MinorUnits(i64::try_from(amount).unwrap_or(i64::MAX)));
            if amount <= MinorUnits::ZERO {
                let message = format!("nothing is left to refund of `{}`", original.id);
                return refused(&echo, partition, Code::ExceedsRefundable, message, Vec::new());
            }
            let now_ms = clock::unix_ms();
            let echo = Echo { amount: u64::try_from(amount.0).ok(), ..echo };
            // More than is left goes to the ledger unpriced, which records `exceeds_refundable`:
            // a fee policy is only shown refunds the contract says it will see.
            let priced = if amount > left {
                Ok(Priced::kept(&original))
            } else {
                priced(&plugins, &metrics, &original, &request, amount, now_ms).await
            };
            let priced = match priced {
                Ok(priced) => priced,
                Err((plugin, failure)) => {
                    complain!(warn, "refund fee policy failed; refund refused, nothing recorded" for &plugin, %failure);
                    return refused(&echo, partition, Code::PluginFailed, failure, vec![plugin]);
                }
            };
            let (fee, fee_bearer, reversal) = match priced.fee {
                RefundFee::Keep => (MinorUnits::ZERO, FeeBearer::Payer, None),
                RefundFee::Charge(fee) => (units(fee), FeeBearer::Payer, None),
                RefundFee::Reverse(fee) => {
                    // Back to whoever bore it: the refund's payer is the payment's payee.
                    let bearer = match original.fee_bearer {
                        FeeBearer::Payee => FeeBearer::Payer,
                        FeeBearer::Payer => FeeBearer::Payee,
                    };
                    (MinorUnits::ZERO, bearer, Some(FeeReversal::new(units(fee), original.currency)))
                }
            };
            let transfer = Transfer {
                id: request.id.clone(),
                kind: TransferKind::Refund { payment: original.id.clone(), reversal },
                request_hash: fingerprint.clone(),
                payer: original.payee.clone(),
                payee: original.payer.clone(),
                currency: original.currency,
                amount,
                fee,
                fee_bearer,
                plugins: priced.plugins,
                method: None,
                metadata: None,
                client,
                partition: Some(partition),
                lease_token: Some(lease_token),
                now_ms: i64::try_from(now_ms).unwrap_or(i64::MAX),
            };
            let replies = refund_replies(&transfer, &original, priced.declined.as_ref());
            submitted(&ledger, &metrics, transfer, replies, echo, fingerprint).await.await
        };
        Answer { reply: Box::pin(reply.in_current_span()), after_earlier: true, span: tracing::Span::current() }
    }
}

/// What the method's fee policy made of a refund.
struct Priced {
    fee: RefundFee,
    /// Its refusal, if it refused the refund (then `fee` is `Keep` and nothing moves).
    declined: Option<PluginRejection>,
    /// `name@version` of the plugins that decided the refund, comma-separated: the fee
    /// policy's when it priced it, the payment's otherwise.
    plugins: String,
}

impl Priced {
    /// The payment's fee kept, with no plugin asked.
    fn kept(original: &Refundable) -> Priced {
        Priced { fee: RefundFee::Keep, declined: None, plugins: original.plugins.clone() }
    }
}

/// The fee of refunding `amount` of `original` by `request`, from the fee policy that serves
/// the payment's method now (the version that decided the payment may be gone). A payment
/// whose method is no longer served, or whose fee policy does not price refunds, keeps its
/// fee. `Err` is the failed plugin's key and the failure.
async fn priced(
    plugins: &Arc<PluginHost>,
    metrics: &Arc<Metrics>,
    original: &Refundable,
    request: &RefundRequest,
    amount: MinorUnits,
    now_ms: u64,
) -> Result<Priced, (String, String)> {
    let kept = || Priced::kept(original);
    let pipelines = plugins.pipelines();
    let (Some(method), Unit::Currency(currency)) = (original.method.as_deref(), original.currency) else {
        return Ok(kept());
    };
    let Some(pipeline) = pipelines.get(method).filter(|pipeline| pipeline.fee_policy().info().prices_refunds) else {
        return Ok(kept());
    };
    let policy = pipeline.fee_policy().key().to_owned();
    let unsigned = |value: MinorUnits| u64::try_from(value.0).unwrap_or_default();
    let payment = RefundedPayment {
        id: original.id.clone(),
        payer: original.payer.to_string(),
        payee: original.payee.to_string(),
        amount: unsigned(original.amount),
        currency,
        method: method.to_owned(),
        metadata: original
            .metadata
            .as_deref()
            .and_then(|text| serde_json::from_str::<BTreeMap<String, String>>(text).ok())
            .unwrap_or_default(),
        received_at_ms: u64::try_from(original.at_ms).unwrap_or_default(),
        fee: unsigned(original.fee),
        fee_bearer: original.fee_bearer,
        refunded: unsigned(original.refunded),
        fee_reversed: unsigned(original.fee_reversed),
    };
    let input = RefundInput::new(&payment, &request.id, unsigned(amount), now_ms);
    let mut instances = Instances::new(plugins.runtime().clone(), metrics.clone());
    match instances.quote_refund_blocking(pipeline.clone(), input).await {
        Err(failure) => Err((failure.plugin.clone(), failure.to_string())),
        Ok(RefundVerdict::Priced(fee)) => Ok(Priced { fee, declined: None, plugins: policy }),
        Ok(RefundVerdict::Declined(rejection)) => {
            Ok(Priced { fee: RefundFee::Keep, declined: Some(rejection), plugins: policy })
        }
    }
}

fn units(value: u64) -> MinorUnits {
    MinorUnits(i64::try_from(value).unwrap_or(i64::MAX))
}

/// The replies of a refund of `original`: the ledger's possible decisions, or the fee
/// policy's refusal, which the ledger records as the refund's decline.
fn refund_replies(transfer: &Transfer, original: &Refundable, declined: Option<&PluginRejection>) -> Replies {
    let reply = |decision| operation_reply(transfer, &transfer.id, &original.id, &transfer.plugins, decision);
    let render = |decision| reply(decision).to_json();
    if let Some(rejection) = declined {
        return Replies::DeclinedByPlugin(
            Reply {
                message: format!("{} declined: {}", rejection.plugin, rejection.message),
                reason: Some(rejection.code.clone()),
                retryable: rejection.retryable,
                ..reply(Decision::PluginDeclined)
            }
            .to_json(),
        );
    }
    Replies::Refunding {
        approved: render(Decision::Approved),
        insufficient_funds: render(Decision::InsufficientFunds),
        exceeds_refundable: render(Decision::ExceedsRefundable),
    }
}
