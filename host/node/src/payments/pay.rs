//! Payments and authorizations: the method's plugins decide them, the ledger posts a payment
//! or holds an authorization's amount (and payer-borne fee) on the payer until it expires.

use std::sync::Arc;

use tracing::Instrument;

use super::replies::{Echo, recorded, refused, submitted};
use super::{Answer, Processor, Route, now};
use crate::clock;
use crate::complaints::complain;
use wasmpay_ledger::{Conversion, Decision, Quote, Replies, Transfer, TransferKind};
use wasmpay_plugin_host::{
    CheckedFee, FxPipeline, Instances, PaymentInput, Pipelines, PluginRejection, RateInput, RateVerdict, Verdict,
};
use wasmpay_protocol::money::{Currency, FeeBearer, MinorUnits};
use wasmpay_protocol::{Code, Converted, PaymentKind, PaymentRequest, Reply};

/// A refusal before the ledger: (code, message, plugins that took part).
type Refusal = (Code, String, Vec<String>);

/// How a cross-border payment converts, as far as is known before its plugins run.
enum Terms {
    /// At its quote's rate.
    Quoted(Quote),
    /// At the FX plugin's rate into this currency, asked once the method's plugins priced it.
    Live(FxPipeline, Currency),
}

/// What the plugins decided on a payment: the plugins that took part (the FX plugin last),
/// their verdict, and a cross-border payment's conversion.
struct Decided {
    plugins: Vec<String>,
    verdict: Verdict,
    conversion: Option<Conversion>,
}

/// Fills in `decided`'s conversion on `terms`: a quote's rate, or the FX plugin's, asked once
/// the method's plugins priced the payment (a payment they declined is recorded without
/// asking). The FX plugin's decline is the payment's; its failure refuses the payment
/// unrecorded.
async fn convert(
    instances: &mut Instances,
    request: &PaymentRequest,
    terms: Terms,
    decided: &mut Decided,
    received_at_ms: u64,
) -> Result<(), Refusal> {
    let (rate, counter, quote, fx_plugin) = match terms {
        Terms::Quoted(quote) => (Some(quote.rate), quote.counter_currency, Some(quote.id), quote.fx_plugin),
        Terms::Live(fx, counter) => {
            let key = fx.key().to_owned();
            let Verdict::Priced(_) = decided.verdict else {
                let conversion = Conversion::new(request.currency, counter, None, None, key);
                decided.conversion = Some(conversion);
                return Ok(());
            };
            decided.plugins.push(key.clone());
            let input = RateInput::new(request.id.as_str(), request.currency, counter, request.amount, received_at_ms);
            match instances.quote_rate_blocking(fx, input).await {
                Ok(RateVerdict::Quoted(rate)) => (Some(rate), counter, None, key),
                Ok(RateVerdict::Declined(rejection)) => {
                    decided.verdict = Verdict::Declined(rejection);
                    decided.conversion = Some(Conversion::new(request.currency, counter, None, None, key));
                    return Ok(());
                }
                Err(failure) => {
                    complain!(warn, "FX plugin failed; payment refused, nothing recorded" for &failure.plugin, %failure);
                    return Err((Code::PluginFailed, failure.to_string(), decided.plugins.clone()));
                }
            }
        }
    };
    decided.conversion = Some(Conversion::new(request.currency, counter, rate, quote, fx_plugin));
    Ok(())
}

/// What a cross-border `transfer` pays its payee, for its reply: the ledger's own rule (what
/// the payee is credited, converted at the rate, rounded down). `None` for a transfer that
/// converts nothing, or one declined before a rate was quoted; an error when the rate gives
/// no amount a payment can move.
fn converted(transfer: &Transfer) -> Result<Option<Converted>, String> {
    let Some(conversion) = transfer.kind.conversion() else {
        return Ok(None);
    };
    let Some(rate) = conversion.rate else {
        return Ok(None);
    };
    let nothing = || {
        let (currency, counter) = (conversion.source, conversion.counter);
        format!(
            "{} {currency} converts to no amount of {counter} a payment can move (nothing, or more than 2^53 - 1 \
             minor units)",
            currency.format(transfer.amount.0)
        )
    };
    let credited = transfer.credited().map_err(|error| error.to_string())?;
    let amount = conversion.counter_amount(credited).ok_or_else(nothing)?;
    Ok(Some(Converted {
        currency: conversion.counter.code().to_owned(),
        amount: u64::try_from(amount.0).map_err(|_| nothing())?,
        rate,
        quote: conversion.quote.clone(),
    }))
}

impl Processor {
    pub(super) async fn decide_request(
        &self,
        instances: &mut Instances,
        route: Route<'_>,
        request: PaymentRequest,
        pipelines: Arc<Pipelines>,
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
        let terms = match self.conversion_terms(&request, &pipelines).await {
            Ok(terms) => terms,
            Err(refusal) => return self.refuse_unless_recorded(&request, partition, &fingerprint, refusal),
        };
        let received_at_ms = clock::unix_ms();
        let input = PaymentInput::new(&request, received_at_ms);
        let verdict = match instances.run_payment(pipeline.clone(), input).await {
            Ok(verdict) => verdict,
            Err(failure) => {
                complain!(warn, "plugin failed; payment refused, nothing recorded" for &failure.plugin, %failure);
                let refusal = (Code::PluginFailed, failure.to_string(), pipeline.keys());
                return self.refuse_unless_recorded(&request, partition, &fingerprint, refusal);
            }
        };
        let mut decided = Decided { plugins: pipeline.keys(), verdict, conversion: None };
        if let Some(terms) = terms
            && let Err(refusal) = convert(instances, &request, terms, &mut decided, received_at_ms).await
        {
            return self.refuse_unless_recorded(&request, partition, &fingerprint, refusal);
        }
        self.record(request, route, decided, fingerprint, received_at_ms).await
    }

    /// How `request` converts, if it is a cross-border payment: at its quote's rate (the
    /// quote read here, its expiry and single use left to the ledger's decision), or at the
    /// FX plugin's, asked once the method's plugins priced it. A quote that does not exist or
    /// that is not this payment's, or a deployment without an FX plugin, refuses it.
    async fn conversion_terms(
        &self,
        request: &PaymentRequest,
        pipelines: &Pipelines,
    ) -> Result<Option<Terms>, Refusal> {
        if (request.quote.is_some() || request.counter_currency.is_some()) && !self.fx.converts(&request.method) {
            let message = format!(
                "method `{}` does not convert currencies (`[fx] methods`: {})",
                request.method,
                self.fx.methods.join(", ")
            );
            return Err((Code::UnsupportedCurrency, message, Vec::new()));
        }
        let Some(id) = &request.quote else {
            let Some(counter) = request.counter_currency else {
                return Ok(None);
            };
            let Some(fx) = pipelines.fx() else {
                let message = format!(
                    "no FX plugin is loaded: a payment from {} to {counter} needs one (a plugin that exports `fx`)",
                    request.currency
                );
                return Err((Code::UnsupportedCurrency, message, Vec::new()));
            };
            return Ok(Some(Terms::Live(fx.clone(), counter)));
        };
        let quote = match self.ledger.quote(id.as_str()).await {
            Ok(Some(quote)) => quote,
            Ok(None) => return Err((Code::UnknownQuote, format!("no FX quote `{id}` exists"), Vec::new())),
            Err(error) => {
                let message = format!("the quote could not be read: {error}; retry with the same id");
                return Err((Code::Unavailable, message, Vec::new()));
            }
        };
        let terms = (&quote.payer, &quote.payee, quote.amount.0, quote.currency);
        let counter_differs = request.counter_currency.is_some_and(|counter| counter != quote.counter_currency);
        if terms != (&request.payer, &request.payee, i64::try_from(request.amount).unwrap_or(-1), request.currency)
            || counter_differs
        {
            // Its terms are not repeated: the quote's id is all a caller needs to see them.
            let message = format!("the payment is not on the terms of quote `{id}` (payer, payee, amount, currencies)");
            return Err((Code::QuoteMismatch, message, Vec::new()));
        }
        Ok(Some(Terms::Quoted(quote)))
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
        Answer { reply: Box::pin(reply.in_current_span()), after_earlier: true, span: tracing::Span::current() }
    }

    /// Submits the decided payment to the ledger, under the lease of `route`'s partition (the
    /// payer's, checked before); the answer resolves when its batch commits.
    async fn record(
        &self,
        request: PaymentRequest,
        route: Route<'_>,
        decided: Decided,
        fingerprint: String,
        received_at_ms: u64,
    ) -> Answer {
        let partition = route.partition;
        let Decided { plugins, verdict, conversion } = decided;
        let plugins_joined = plugins.join(",");
        let (fee, rejection) = match &verdict {
            Verdict::Priced(fee) => (*fee, None),
            Verdict::Declined(rejection) => (CheckedFee { total: 0, bearer: FeeBearer::Payee }, Some(rejection)),
        };
        let (Ok(amount), Ok(fee_units)) =
            (MinorUnits::from_unsigned(request.amount), MinorUnits::from_unsigned(fee.total))
        else {
            unreachable!("amounts and fees are bounded by 2^53 - 1 before they get here");
        };
        let quoted = conversion.as_ref().is_some_and(|conversion| conversion.quote.is_some());
        let kind = match (request.kind, conversion) {
            (PaymentKind::Payment, Some(conversion)) => TransferKind::CrossBorder(Box::new(conversion)),
            (PaymentKind::Payment, None) => TransferKind::Payment,
            (PaymentKind::Authorize, _) => {
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
        let converted = match converted(&transfer) {
            Ok(converted) => converted,
            // A plugin's decline converts nothing, and is recorded as it is.
            Err(_) if rejection.is_some() => None,
            Err(message) => {
                let refusal = (Code::AmountOutOfRange, message, plugins);
                return self.refuse_unless_recorded(&request, partition, &fingerprint, refusal);
            }
        };
        // Rendered here, before the ledger decides: the ledger stores the reply its decision
        // picks and runs none of this node's code inside its transaction.
        let render = |decision: Decision| {
            let reply = recorded_reply(&request, &transfer.kind, partition, &plugins, decision, fee, rejection);
            let priced = matches!(decision, Decision::Approved | Decision::InsufficientFunds);
            Reply {
                expires_at_ms: expires_at_ms.filter(|_| decision == Decision::Approved),
                conversion: converted.clone().filter(|_| priced),
                ..reply
            }
            .to_json()
        };
        let replies = match (rejection, quoted) {
            (Some(_), _) => Replies::DeclinedByPlugin(render(Decision::PluginDeclined)),
            (None, true) => Replies::Quoted {
                approved: render(Decision::Approved),
                insufficient_funds: render(Decision::InsufficientFunds),
                quote_expired: render(Decision::QuoteExpired),
                quote_used: render(Decision::QuoteUsed),
            },
            (None, false) => Replies::Posting {
                approved: render(Decision::Approved),
                insufficient_funds: render(Decision::InsufficientFunds),
            },
        };
        let echo = Echo::from(&request);
        let reply = submitted(&self.ledger, &self.metrics, transfer, replies, echo, fingerprint).await;
        Answer { reply: Box::pin(reply.in_current_span()), after_earlier: false, span: tracing::Span::current() }
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
        (Decision::QuoteExpired, _) => {
            ("the FX quote expired before the payment was decided; ask for a new one".to_owned(), None, true)
        }
        (Decision::QuoteUsed, _) => {
            ("the FX quote converted another payment already; ask for a new one".to_owned(), None, true)
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
