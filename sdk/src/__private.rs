//! Glue between the generated bindings and the SDK's types. Used by the export macros, which
//! generate their world's export bindings in the plugin's crate (`build.rs` says why) with the
//! types, log and config bindings generated here.
#![allow(missing_docs, unsafe_code)]

use std::sync::OnceLock;

use crate::{
    Config, FeeBearer, FeeQuote, FxRate, Payment, PluginInfo, RateRequest, Refund, RefundFee, RefundedPayment,
    Rejection, money::Money,
};

pub use wit_bindgen;

pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin-imports",
        path: "../wit",
        runtime_path: "wasmpay_sdk::__private::wit_bindgen::rt",
    });
}

use bindings::wasmpay::plugin::{config, types as wit};

/// The configuration never changes during an instance's life, so it is read from the host once.
fn plugin_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| Config::from_pairs(config::entries()))
}

/// Sends a panic's message to the host's log (with the payment it happened on) instead of
/// standard error, which the sandbox does not offer. The panic then aborts, which the host
/// sees as a trap.
fn report_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| log(crate::log::Level::Error, &format!("panicked: {info}"))))
    });
}

pub fn describe(describe: fn() -> PluginInfo) -> wit::PluginInfo {
    report_panics();
    let info = describe();
    wit::PluginInfo { name: info.name, version: info.version, methods: info.methods, currencies: info.currencies }
}

pub fn validate(
    validate: fn(&Payment, &Config) -> Result<(), Rejection>,
    payment: wit::Payment,
) -> Result<(), wit::Rejection> {
    report_panics();
    validate(&from_wit(payment), plugin_config()).map_err(to_wit_rejection)
}

pub fn quote_fee(
    quote_fee: fn(&Payment, &Config) -> Result<FeeQuote, Rejection>,
    payment: wit::Payment,
) -> Result<wit::FeeQuote, wit::Rejection> {
    report_panics();
    let quote: FeeQuote = quote_fee(&from_wit(payment), plugin_config()).map_err(to_wit_rejection)?;
    Ok(wit::FeeQuote {
        total: quote.total(),
        lines: quote
            .lines()
            .iter()
            .map(|line| wit::FeeLine { label: line.label.clone(), minor_units: line.minor_units })
            .collect(),
        bearer: match quote.bearer() {
            FeeBearer::Payer => wit::FeeBearer::Payer,
            FeeBearer::Payee => wit::FeeBearer::Payee,
        },
    })
}

/// A refund's fee, from the records the `refund-fee` export receives. Those are defined in the
/// exported interface, so the export macro (which has their generated types) reads their
/// fields into the SDK's [`RefundedPayment`] and [`Refund`], and maps the outcome back.
pub fn quote_refund_fee(
    quote_refund_fee: fn(&RefundedPayment, &Refund, &Config) -> Result<RefundFee, Rejection>,
    payment: &RefundedPayment,
    refund: &Refund,
) -> Result<RefundFee, wit::Rejection> {
    report_panics();
    quote_refund_fee(payment, refund, plugin_config()).map_err(to_wit_rejection)
}

pub fn money(money: wit::Money) -> Money {
    Money::new(money.minor_units, money.currency)
}

pub fn fee_bearer(bearer: wit::FeeBearer) -> FeeBearer {
    match bearer {
        wit::FeeBearer::Payer => FeeBearer::Payer,
        wit::FeeBearer::Payee => FeeBearer::Payee,
    }
}

pub fn quote_rate(
    quote_rate: fn(&RateRequest, &Config) -> Result<FxRate, Rejection>,
    request: wit::RateRequest,
) -> Result<wit::FxRate, wit::Rejection> {
    report_panics();
    let request = RateRequest {
        source: request.source,
        target: request.target,
        amount: money(request.amount),
        received_at_ms: request.received_at_ms,
    };
    let rate = quote_rate(&request, plugin_config()).map_err(to_wit_rejection)?;
    Ok(wit::FxRate { digits: rate.digits(), scale: rate.scale(), markup_bps: rate.markup_bps() })
}

fn from_wit(payment: wit::Payment) -> Payment {
    Payment {
        id: payment.id,
        payer: payment.payer,
        payee: payment.payee,
        amount: money(payment.amount),
        method: payment.method,
        details: payment.details.into_iter().collect(),
        metadata: payment.metadata.into_iter().collect(),
        received_at_ms: payment.received_at_ms,
    }
}

fn to_wit_rejection(rejection: Rejection) -> wit::Rejection {
    wit::Rejection { code: rejection.code, message: rejection.message, retryable: rejection.retryable }
}

pub fn log(level: crate::log::Level, message: &str) {
    use bindings::wasmpay::plugin::log::{Level, log};
    let level = match level {
        crate::log::Level::Trace => Level::Trace,
        crate::log::Level::Debug => Level::Debug,
        crate::log::Level::Info => Level::Info,
        crate::log::Level::Warn => Level::Warn,
        crate::log::Level::Error => Level::Error,
    };
    log(level, message);
}
