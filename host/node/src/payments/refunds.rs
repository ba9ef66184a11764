//! Refunds: money back from a payment's payee to its payer, decided by the payee's owner (the
//! account a refund debits), up to what the payment moved.

use tracing::Instrument;

use super::replies::{Echo, operation_reply, recorded, refused, submitted, unavailable};
use super::{Answer, Processor, Route};
use crate::clock;
use wasmpay_ledger::{Decision, Refundable, Replies, Transfer, TransferKind};
use wasmpay_protocol::money::{FeeBearer, MinorUnits};
use wasmpay_protocol::{Code, RefundRequest};

impl Processor {
    /// Decides a refund: once the partition's earlier payments were answered, reads the
    /// refunded payment (a retry of a recorded id gets its stored reply first), refuses one
    /// that is not this payee's or moved no money, renders every reply the ledger may pick, and
    /// submits it under the lease of `route` (the payee's partition).
    pub(super) fn decide_refund(&self, route: Route<'_>, request: RefundRequest) -> Answer {
        let partition = route.partition;
        let echo = Echo::from(&request);
        if let Some(misrouted) = self.misrouted(route, &request.payee, &echo) {
            return misrouted;
        }
        let (ledger, metrics, lease_token) = (self.ledger.clone(), self.metrics.clone(), route.lease_token);
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
                client,
                partition: Some(partition),
                lease_token: Some(lease_token),
                now_ms: i64::try_from(clock::unix_ms()).unwrap_or(i64::MAX),
            };
            let replies = refund_replies(&transfer, &original);
            let echo = Echo { amount: u64::try_from(amount.0).ok(), ..echo };
            submitted(&ledger, &metrics, transfer, replies, echo, fingerprint).await.await
        };
        Answer { reply: Box::pin(reply.in_current_span()), after_earlier: true }
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
