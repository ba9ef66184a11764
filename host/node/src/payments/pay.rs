//! Payments and authorizations: the method's plugins decide them, the ledger posts a payment
//! or holds an authorization's amount (and payer-borne fee) on the payer until it expires.

use tracing::Instrument;

use super::replies::{Echo, recorded, refused, submitted};
use super::{Answer, Processor, Route, now};
use crate::clock;
use wasmpay_ledger::{Decision, Replies, Transfer, TransferKind};
use wasmpay_plugin_host::{CheckedFee, Instances, PaymentInput, Pipeline, PluginRejection, Verdict};
use wasmpay_protocol::money::{FeeBearer, MinorUnits};
use wasmpay_protocol::{Code, PaymentKind, PaymentRequest, Reply};

impl Processor {
    pub(super) async fn decide_request(
        &self,
        instances: &mut Instances,
        route: Route<'_>,
        request: PaymentRequest,
    ) -> Answer {
        let partition = self.partitioner.partition_of(&request.payer);
        let refuse =
            |code: Code, message: String| now(refused(&Echo::from(&request), partition, code, message, Vec::new()));
        if let Some(misrouted) = self.misrouted(route, &request.payer, &Echo::from(&request)) {
            return misrouted;
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
        let (ledger, echo, fingerprint) = (self.ledger.clone(), Echo::from(request), fingerprint.to_owned());
        let reply = async move {
            match recorded(&ledger, &echo, partition, &fingerprint).await {
                Some(answer) => answer,
                None => refused(&echo, partition, code, message, plugins),
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
            currency: request.currency.into(),
            amount,
            fee: fee_units,
            fee_bearer: fee.bearer,
            plugins: plugins_joined,
            method: Some(request.method.clone()),
            metadata: (!request.metadata.is_empty())
                .then(|| serde_json::to_string(&request.metadata).unwrap_or_default()),
            partition: Some(partition),
            client: route.client_key.map(str::to_owned),
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
        let echo = Echo::from(&request);
        let reply = submitted(&self.ledger, &self.metrics, transfer, replies, echo, fingerprint).await;
        Answer { reply: Box::pin(reply.in_current_span()), after_earlier: false }
    }
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
        reason,
        retryable,
        amount: Some(request.amount),
        fee: priced.then_some(fee.total),
        fee_bearer: priced.then_some(fee.bearer),
        currency: Some(request.currency.code().to_owned()),
        plugins: plugins.to_vec(),
        ..Reply::decided(Some(request.id.to_string()), code, message, Some(partition))
    }
}
