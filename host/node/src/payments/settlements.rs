//! Settlements: every leg or none, coordinated by the owner of the first leg's payer.

use tracing::Instrument;

use super::replies::{Echo, refused, submitted};
use super::{Answer, Processor, Route, now};
use crate::clock;
use wasmpay_ledger::{Decision, Replies, Transfer, TransferKind};
use wasmpay_protocol::money::{FeeBearer, MinorUnits};
use wasmpay_protocol::{Code, Reply, SettlementRequest};

impl Processor {
    /// Decides a settlement: every leg or none, in the batch of the first leg's payer's
    /// partition (this one), which locks every leg's payer like any debit. No plugin takes
    /// part: a settlement moves what two parties agreed on, between accounts they hold.
    pub(super) async fn decide_settlement(&self, route: Route<'_>, request: SettlementRequest) -> Answer {
        let first = request.legs[0].clone();
        let echo = Echo {
            id: request.id.to_string(),
            payer: first.payer.to_string(),
            amount: Some(first.amount),
            currency: Some(first.currency.code().to_owned()),
            payment: None,
        };
        if let Some(misrouted) = self.misrouted(route, &first.payer, &echo) {
            return misrouted;
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
            client: route.client_key.map(str::to_owned),
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
                retryable: decision == Decision::InsufficientFunds,
                amount: Some(first.amount),
                currency: Some(first.currency.code().to_owned()),
                legs: Some(request.legs.clone()),
                ..Reply::decided(Some(request.id.to_string()), code, message, Some(partition))
            }
            .to_json()
        };
        let replies = Replies::Posting {
            approved: render(Decision::Approved),
            insufficient_funds: render(Decision::InsufficientFunds),
        };
        let reply = submitted(&self.ledger, &self.metrics, transfer, replies, echo, fingerprint).await;
        Answer { reply: Box::pin(reply.in_current_span()), after_earlier: false, span: tracing::Span::current() }
    }
}
