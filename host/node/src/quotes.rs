//! FX quotes: what a cross-border payment would convert at, asked before paying
//! (`wasmpay.fx.quote` over NATS, `POST /v1/fx/quotes` over HTTP). Any node answers: it checks
//! that both accounts exist and hold the two currencies, asks the deployment's FX plugin for
//! the rate, and stores the quote in the ledger, which every node reads. A payment that names
//! the quote within its expiry converts at exactly its rate and amounts; the ledger decides
//! that, under the payer's lock, and lets a quote convert one payment.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::clock;
use crate::metrics::Metrics;
use wasmpay_ledger::{Ledger, Quote, new_quote_id};
use wasmpay_plugin_host::{Instances, PluginHost, RateInput, RateVerdict};
use wasmpay_protocol::money::{MinorUnits, Unit};
use wasmpay_protocol::quote::decode_quote;
use wasmpay_protocol::{Code, Reply};

/// `[fx]`: which methods may convert, and how long a quote holds.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FxSettings {
    /// How long a quote may be paid with, in milliseconds (at most a day): long enough for a
    /// person to confirm a transfer, short enough that the FX provider's rate still stands.
    pub quote_ttl_ms: u64,
    /// The methods whose payments may convert: by default `cross_border` alone, whose plugin
    /// screens corridors and sanctions. A method listed here sends money abroad without that
    /// screen unless its own plugins do it.
    pub methods: Vec<String>,
}

impl Default for FxSettings {
    fn default() -> FxSettings {
        FxSettings { quote_ttl_ms: 60_000, methods: vec!["cross_border".to_owned()] }
    }
}

impl FxSettings {
    /// Whether payments of `method` may convert.
    pub fn converts(&self, method: &str) -> bool {
        self.methods.iter().any(|converting| converting == method)
    }
}

impl FxSettings {
    /// Whether the settings can be used: a quote holds for a positive time, at most a day.
    pub fn check(&self) -> Result<(), String> {
        let longest = u64::try_from(MAX_QUOTE_TTL.as_millis()).unwrap_or(u64::MAX);
        if !(1..=longest).contains(&self.quote_ttl_ms) {
            return Err(format!("[fx] quote_ttl_ms = {} must be within 1 ..= {longest}", self.quote_ttl_ms));
        }
        Ok(())
    }
}

/// The longest a quote may hold.
pub const MAX_QUOTE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Quotes at most this many requests at once; more are refused as `unavailable` (retry), so
/// a burst of quote requests cannot queue without bound behind the FX plugin's share.
const IN_FLIGHT: usize = 64;

/// Answers quote requests.
#[derive(Debug)]
pub struct Quoter {
    ledger: Ledger,
    plugins: Arc<PluginHost>,
    metrics: Arc<Metrics>,
    settings: FxSettings,
    in_flight: tokio::sync::Semaphore,
}

impl Quoter {
    /// A quoter over the node's ledger and plugins.
    pub fn new(ledger: Ledger, plugins: Arc<PluginHost>, metrics: Arc<Metrics>, settings: FxSettings) -> Quoter {
        Quoter { ledger, plugins, metrics, settings, in_flight: tokio::sync::Semaphore::new(IN_FLIGHT) }
    }

    /// The reply to the quote request `body`: `quoted` with the quote, or why not. Nothing but
    /// the quote is ever stored.
    pub async fn answer(&self, body: &[u8]) -> Reply {
        let Ok(_permit) = self.in_flight.try_acquire() else {
            let message = format!("more than {IN_FLIGHT} quotes are being priced on this node; retry");
            return refused(Code::Unavailable, message);
        };
        let request = match decode_quote(body) {
            Ok(request) => request,
            Err(refusal) => return Reply::refused(&refusal, None),
        };
        for (role, id) in [("payer", &request.payer), ("payee", &request.payee)] {
            if id.is_system() {
                return refused(Code::UnknownAccount, format!("{role} `{id}` does not exist"));
            }
        }
        let accounts = match self.ledger.accounts(&[&request.payer, &request.payee]).await {
            Ok(accounts) => accounts,
            Err(error) => return refused(Code::Unavailable, format!("the accounts could not be read: {error}; retry")),
        };
        for (role, id, currency) in
            [("payer", &request.payer, request.currency), ("payee", &request.payee, request.counter_currency)]
        {
            match accounts.get(id) {
                None => return refused(Code::UnknownAccount, format!("{role} `{id}` does not exist")),
                Some(account) if account.currency != Unit::Currency(currency) => {
                    let message = format!("{role} `{id}` holds {}, not {currency}", account.currency);
                    return refused(Code::CurrencyMismatch, message);
                }
                Some(_) => {}
            }
        }
        let pipelines = self.plugins.pipelines();
        let Some(fx) = pipelines.fx().cloned() else {
            return refused(
                Code::UnsupportedCurrency,
                "no FX plugin is loaded: this deployment converts nothing".into(),
            );
        };
        let id = match new_quote_id() {
            Ok(id) => id,
            Err(error) => return refused(Code::Unavailable, error.to_string()),
        };
        let now_ms = clock::unix_ms();
        let (currency, counter) = (request.currency, request.counter_currency);
        let input = RateInput::new(&id, currency, counter, request.amount, now_ms);
        let mut instances = Instances::new(self.plugins.runtime().clone(), self.metrics.clone());
        let plugins = vec![fx.key().to_owned()];
        let rate = match instances.quote_rate_blocking(fx.clone(), input).await {
            Ok(RateVerdict::Quoted(rate)) => rate,
            Ok(RateVerdict::Declined(rejection)) => {
                let message = format!("{} declined: {}", rejection.plugin, rejection.message);
                return Reply {
                    reason: Some(rejection.code),
                    retryable: rejection.retryable,
                    plugins,
                    ..Reply::decided(None, Code::PluginDeclined, message, None)
                };
            }
            Err(failure) => {
                tracing::warn!(%failure, "FX plugin failed; quote refused");
                return Reply { plugins, ..refused(Code::PluginFailed, failure.to_string()) };
            }
        };
        let amount = MinorUnits::from_unsigned(request.amount).unwrap_or(MinorUnits::ZERO);
        let Some(counter_amount) = rate.convert(amount, currency, counter) else {
            let message = format!(
                "{} {currency} at {rate} is no amount of {counter} a payment can move",
                currency.format(amount.0)
            );
            return Reply { plugins, ..refused(Code::AmountOutOfRange, message) };
        };
        let ttl = Duration::from_millis(self.settings.quote_ttl_ms).min(MAX_QUOTE_TTL);
        // Checked at start; the bound above only keeps a bad value from overflowing.
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let quote = Quote {
            id: id.clone(),
            payer: request.payer,
            payee: request.payee,
            currency,
            amount,
            counter_currency: counter,
            counter_amount,
            rate,
            fx_plugin: fx.key().to_owned(),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
        };
        if let Err(error) = self.ledger.store_quote(&quote).await {
            return refused(Code::Unavailable, format!("the quote could not be stored: {error}; ask again"));
        }
        let message = format!(
            "{} {currency} pays {} {counter} at {rate} until {}",
            currency.format(amount.0),
            counter.format(counter_amount.0),
            quote.expires_at_ms
        );
        Reply {
            amount: Some(request.amount),
            currency: Some(currency.code().to_owned()),
            plugins,
            quote: Some(quote),
            ..Reply::decided(Some(id), Code::Quoted, message, None)
        }
    }
}

/// A quote refused with `code`: retryable exactly when nothing was decided (`error`).
fn refused(code: Code, message: String) -> Reply {
    Reply { retryable: code.status() == wasmpay_protocol::Status::Error, ..Reply::decided(None, code, message, None) }
}
