//! Captures and voids of an authorization, and the release of holds at their expiry: all by
//! the owner of the payer's partition, the one writer of the payer's holds.

use std::future::Future;
use std::pin::Pin;

use tracing::Instrument;

use super::replies::{Echo, operation_reply, recorded, refused, submitted, unavailable};
use super::{Answer, Decided, Processor, Route};
use crate::clock;
use crate::complaints::complain;
use crate::metrics::Operation;
use wasmpay_ledger::{Decision, Hold, Recorded, Replies, Transfer, TransferKind};
use wasmpay_protocol::money::{MinorUnits, prorated_fee};
use wasmpay_protocol::{Code, HoldAction, HoldRequest, PaymentId, Status};

/// How long a partition's sweep waits for another partition's read of due holds before it
/// skips its turn: the reads take about a millisecond, so 64 partitions ticking at once all
/// get theirs, while a stalled ledger holds back a partition's payments this long at most.
const SWEEP_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

impl Processor {
    /// Decides a capture or void: once the partition's earlier payments were answered, reads
    /// the authorization (a retry of a recorded id gets its stored reply first), renders every
    /// reply the ledger may pick, and submits it under the lease of `route`.
    pub(super) fn decide_hold(&self, route: Route<'_>, request: HoldRequest) -> Answer {
        let partition = route.partition;
        let echo = Echo::from(&request);
        if let Some(misrouted) = self.misrouted(route, &request.payer, &echo) {
            return misrouted;
        }
        let (ledger, metrics, lease_token) = (self.ledger.clone(), self.metrics.clone(), route.lease_token);
        let client = route.client_key.map(str::to_owned);
        let reply = async move {
            let fingerprint = request.fingerprint();
            if let Some(answer) = recorded(&ledger, &echo, partition, &fingerprint).await {
                return answer;
            }
            let hold = match ledger.hold(&request.payment).await {
                Err(error) => return unavailable(&echo, partition, &error),
                Ok(Some(hold)) if hold.payer == request.payer => hold,
                Ok(_) => {
                    let message = format!("payer `{}` has no authorization `{}`", request.payer, request.payment);
                    return refused(&echo, partition, Code::UnknownPayment, message, Vec::new());
                }
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
                currency: hold.currency.into(),
                amount,
                fee,
                fee_bearer: hold.fee_bearer,
                plugins: hold.plugins.clone(),
                method: None,
                metadata: None,
                client,
                partition: Some(partition),
                lease_token: Some(lease_token),
                now_ms: i64::try_from(clock::unix_ms()).unwrap_or(i64::MAX),
            };
            let replies = closing_replies(&transfer, &hold, &request.id);
            let echo = Echo { amount: u64::try_from(amount.0).ok(), ..echo };
            submitted(&ledger, &metrics, transfer, replies, echo, fingerprint).await.await
        };
        Answer { reply: Box::pin(reply.in_current_span()), after_earlier: true, span: tracing::Span::current() }
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
                complain!(warn, "could not read the holds due; the next sweep tries again", %error, partition);
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
                currency: hold.currency.into(),
                amount: hold.amount,
                fee: MinorUnits::ZERO,
                fee_bearer: hold.fee_bearer,
                plugins: hold.plugins.clone(),
                method: None,
                metadata: None,
                client: None,
                partition: Some(partition),
                lease_token: Some(lease_token),
                now_ms,
            };
            let replies = closing_replies(&transfer, &hold, &hold.id);
            let committed = match self.ledger.submit(transfer, replies).await {
                Ok(committed) => committed,
                Err(error) => {
                    complain!(warn, "could not submit an expiry; the next sweep tries again", %error, partition);
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
                        complain!(warn, "an expiry was not recorded; the next sweep tries again", %error);
                        Decided {
                            reply: String::new(),
                            status: Status::Error,
                            code: Code::Unavailable,
                            newly_recorded: false,
                        }
                    }
                };
                if decided.newly_recorded {
                    metrics.answered(&Operation::named("expire"), decided.status, decided.code, None);
                }
                decided
            }));
        }
        expiring
    }
}

/// The replies of a capture, void or expiry of `hold`: what the ledger stores when it closes
/// the hold, when it finds the hold expired, and when it finds it closed already.
fn closing_replies(transfer: &Transfer, hold: &Hold, id: &PaymentId) -> Replies {
    let render = |decision| operation_reply(transfer, id, &hold.id, &hold.plugins, decision).to_json();
    Replies::Closing {
        closed: render(Decision::Approved),
        hold_expired: render(Decision::HoldExpired),
        not_open: render(Decision::HoldNotOpen),
    }
}
