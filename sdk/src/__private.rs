//! Glue between the generated bindings and the SDK's types. Used by [`crate::export_plugin!`].
#![allow(missing_docs, unsafe_code)]

use std::sync::OnceLock;

use crate::{
    Config, FeeBearer, FeeQuote, Payment, Plugin, PluginInfo, Refund, RefundFee, RefundedPayment, Rejection,
    money::Money,
};

pub use wit_bindgen;

pub mod bindings {
    wit_bindgen::generate!({
        world: "payment-method-with-refunds",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_payment_method_with_refunds",
        default_bindings_module: "wasmpay_sdk::__private::bindings",
        runtime_path: "wasmpay_sdk::__private::wit_bindgen::rt",
    });
}

use bindings::exports::wasmpay::plugin::refund_fee;
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

pub fn describe<P: Plugin>() -> wit::PluginInfo {
    report_panics();
    let info: PluginInfo = P::describe();
    wit::PluginInfo { name: info.name, version: info.version, methods: info.methods, currencies: info.currencies }
}

pub fn validate<P: Plugin>(payment: wit::Payment) -> Result<(), wit::Rejection> {
    report_panics();
    P::validate(&from_wit(payment), plugin_config()).map_err(to_wit_rejection)
}

pub fn quote_fee<P: Plugin>(payment: wit::Payment) -> Result<wit::FeeQuote, wit::Rejection> {
    report_panics();
    let quote: FeeQuote = P::quote_fee(&from_wit(payment), plugin_config()).map_err(to_wit_rejection)?;
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

pub fn quote_refund_fee<P: Plugin>(
    payment: refund_fee::RefundedPayment,
    refund: refund_fee::Refund,
) -> Result<refund_fee::RefundFeeOutcome, wit::Rejection> {
    report_panics();
    let payment = RefundedPayment {
        id: payment.id,
        payer: payment.payer,
        payee: payment.payee,
        amount: Money::new(payment.amount.minor_units, payment.amount.currency),
        method: payment.method,
        metadata: payment.metadata.into_iter().collect(),
        received_at_ms: payment.received_at_ms,
        fee: payment.fee,
        fee_bearer: match payment.fee_bearer {
            wit::FeeBearer::Payer => FeeBearer::Payer,
            wit::FeeBearer::Payee => FeeBearer::Payee,
        },
        refunded: payment.refunded,
        fee_reversed: payment.fee_reversed,
    };
    let refund = Refund {
        id: refund.id,
        amount: Money::new(refund.amount.minor_units, refund.amount.currency),
        received_at_ms: refund.received_at_ms,
    };
    match P::quote_refund_fee(&payment, &refund, plugin_config()).map_err(to_wit_rejection)? {
        RefundFee::Keep => Ok(refund_fee::RefundFeeOutcome::Keep),
        RefundFee::Reverse(amount) => Ok(refund_fee::RefundFeeOutcome::Reverse(amount)),
        RefundFee::Charge(amount) => Ok(refund_fee::RefundFeeOutcome::Charge(amount)),
    }
}

fn from_wit(payment: wit::Payment) -> Payment {
    Payment {
        id: payment.id,
        payer: payment.payer,
        payee: payment.payee,
        amount: Money::new(payment.amount.minor_units, payment.amount.currency),
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
