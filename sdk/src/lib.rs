//! # wasmpay-sdk
//!
//! Write a wasmpay plugin as plain Rust: implement [`Plugin`] (validates and prices a method's
//! payments) and call [`export_plugin!`]; or, for one role of a pipeline, [`Validator`] with
//! [`export_validator!`], [`FeePolicy`] with [`export_fee_policy!`], or [`FxPlugin`] (prices
//! currency conversions) with [`export_fx!`]. The SDK hides the WIT bindings (`wit/` in the repository) and gives you
//! typed [`Payment`], [`Money`], [`Rejection`] and [`FeeQuote`] values.
//!
//! ```
//! use wasmpay_sdk::{Config, FeeBearer, FeeQuote, Payment, Plugin, PluginInfo, Rejection};
//!
//! struct Cash;
//! impl Plugin for Cash {
//!     fn describe() -> PluginInfo { PluginInfo::new("cash", env!("CARGO_PKG_VERSION"), ["cash"]) }
//!     fn validate(_: &Payment, _: &Config) -> Result<(), Rejection> { Ok(()) }
//!     fn quote_fee(_: &Payment, _: &Config) -> Result<FeeQuote, Rejection> {
//!         Ok(FeeQuote::free(FeeBearer::Payee))
//!     }
//! }
//! wasmpay_sdk::export_plugin!(Cash);
//! ```
//!
//! Layout:
//! - [`money`]: minor-unit amounts and basis-point arithmetic with a documented rounding rule,
//!   ISO 4217 exponents, amounts written in major units.
//! - [`fees`]: fee rules as a price list states them ("1.5 %, at least 0.05").
//! - [`payment`]: the payment a plugin decides on.
//! - [`refund`]: a refund, the payment it gives money back from, and its fee ([`RefundFee`]).
//! - [`fx`]: a conversion's rate request and the rate an FX plugin answers.
//! - [`decision`]: what a plugin answers: [`Rejection`], [`FeeQuote`], [`PluginInfo`].
//! - [`limits`]: the per-currency amount limit check.
//! - [`config`]: the read-only configuration the operator gives the plugin.
//! - [`log`]: logging into the host's traces.
//!
//! Every payment runs on instances made for it and dropped after it, so nothing a plugin keeps
//! (a global, a cache) survives to another payment; a decision must still be a pure function
//! of the payment and the configuration, because the host may ask more than once.
#![deny(missing_docs)]

// Lets the generated bindings name this crate the same way from inside and from plugins.
extern crate self as wasmpay_sdk;

pub mod config;
pub mod decision;
pub mod fees;
pub mod fx;
pub mod limits;
pub mod log;
pub mod money;
pub mod payment;
pub mod refund;

pub use config::Config;
pub use decision::{FeeBearer, FeeLine, FeeQuote, PluginInfo, Rejection};
pub use fees::FeeRule;
pub use fx::{FxRate, RateRequest};
pub use money::{Money, MoneyError};
pub use payment::Payment;
pub use refund::{Refund, RefundFee, RefundedPayment};

/// A payment-method plugin: validates and prices the payments of its methods, and prices
/// their refunds. One function per export of the `payment-method-with-refunds` world; export
/// it with [`export_plugin!`].
///
/// Every function is associated (no `self`): a plugin keeps no state between payments.
pub trait Plugin {
    /// Name, version, methods and currencies. Constant for a build.
    fn describe() -> PluginInfo;

    /// `Ok(())` lets the payment continue; `Err` declines it with a stable code.
    fn validate(payment: &Payment, config: &Config) -> Result<(), Rejection>;

    /// The fee for a payment that passed validation.
    fn quote_fee(payment: &Payment, config: &Config) -> Result<FeeQuote, Rejection>;

    /// The fee of `refund`, of `payment` (one this plugin's method decided): keep the
    /// payment's fee, give part of it back, or charge one. `Err` declines the refund.
    ///
    /// The default keeps the fee, which is also what the host does for a plugin built
    /// without this export (against `wasmpay:plugin@0.1.0`): the payee paid for the work the
    /// payment caused, and a refund cannot claw fees back (Stripe's rule).
    fn quote_refund_fee(payment: &RefundedPayment, refund: &Refund, config: &Config) -> Result<RefundFee, Rejection> {
        let _ = (payment, refund, config);
        Ok(RefundFee::Keep)
    }
}

/// A plugin that only validates (a limits check, a sanctions screen) in a method's pipeline
/// beside other validators and one fee policy (`[methods.<name>]` in the node's
/// configuration). The `validator-plugin` world; export it with [`export_validator!`].
pub trait Validator {
    /// Name, version, methods and currencies. Constant for a build.
    fn describe() -> PluginInfo;

    /// `Ok(())` lets the payment continue to the next validator; `Err` declines it.
    fn validate(payment: &Payment, config: &Config) -> Result<(), Rejection>;
}

/// A plugin that only prices payments, and their refunds: a method's pipeline has exactly one
/// fee policy. The `fee-policy-with-refunds` world; export it with [`export_fee_policy!`].
pub trait FeePolicy {
    /// Name, version, methods and currencies. Constant for a build.
    fn describe() -> PluginInfo;

    /// The fee for a payment its method's validators passed.
    fn quote_fee(payment: &Payment, config: &Config) -> Result<FeeQuote, Rejection>;

    /// The fee of a refund; the default keeps the payment's fee (see
    /// [`Plugin::quote_refund_fee`]).
    fn quote_refund_fee(payment: &RefundedPayment, refund: &Refund, config: &Config) -> Result<RefundFee, Rejection> {
        let _ = (payment, refund, config);
        Ok(RefundFee::Keep)
    }
}

/// A plugin that prices currency conversions for cross-border payments and quotes: a
/// deployment has one. The `fx-plugin` world; export it with [`export_fx!`].
///
/// ```
/// use wasmpay_sdk::{Config, FxPlugin, FxRate, PluginInfo, RateRequest, Rejection};
///
/// struct Fixed;
/// impl FxPlugin for Fixed {
///     fn describe() -> PluginInfo { PluginInfo::new("fixed-fx", "1.0.0", [] as [&str; 0]) }
///     fn quote_rate(request: &RateRequest, config: &Config) -> Result<FxRate, Rejection> {
///         let rate = config.get(&request.pair()).ok_or_else(|| Rejection::decline("pair_not_quoted", request.pair()))?;
///         FxRate::parse(rate)?.with_markup_bps(config.parse_or("markup_bps", 0)?)
///     }
/// }
/// wasmpay_sdk::export_fx!(Fixed);
/// ```
pub trait FxPlugin {
    /// Name and version (an FX plugin serves no method: its `methods` are empty). Constant
    /// for a build.
    fn describe() -> PluginInfo;

    /// The rate of `request`'s pair, with the markup the provider keeps; `Err` when the pair
    /// (or the amount) is not quoted.
    fn quote_rate(request: &RateRequest, config: &Config) -> Result<FxRate, Rejection>;
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod __private;

#[cfg(target_arch = "wasm32")]
include!(concat!(env!("OUT_DIR"), "/generate_world.rs"));

/// Exports a type implementing [`Plugin`] as the component's `payment-method-with-refunds`
/// world (`wasmpay:plugin@0.1.x`). Invoke it once, at the crate's root.
///
/// On targets other than `wasm32` this expands to nothing, so the plugin crate builds and
/// unit-tests natively; on `wasm32` it generates the world's bindings in a module of the
/// plugin's crate (the SDK's `build.rs` says why).
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        $crate::__export_world!("payment-method-with-refunds", {
            $crate::__export_describe!($plugin as $crate::Plugin);
            $crate::__export_validator!($plugin as $crate::Plugin);
            $crate::__export_fee_policy!($plugin as $crate::Plugin);
        });
    };
}

/// Exports a type implementing [`Validator`] as the component's `validator-plugin` world.
/// Invoke it once, at the crate's root; like [`export_plugin!`], it is empty off `wasm32`.
#[macro_export]
macro_rules! export_validator {
    ($plugin:ty) => {
        $crate::__export_world!("validator-plugin", {
            $crate::__export_describe!($plugin as $crate::Validator);
            $crate::__export_validator!($plugin as $crate::Validator);
        });
    };
}

/// Exports a type implementing [`FeePolicy`] as the component's `fee-policy-with-refunds`
/// world. Invoke it once, at the crate's root; like [`export_plugin!`], it is empty off
/// `wasm32`.
#[macro_export]
macro_rules! export_fee_policy {
    ($plugin:ty) => {
        $crate::__export_world!("fee-policy-with-refunds", {
            $crate::__export_describe!($plugin as $crate::FeePolicy);
            $crate::__export_fee_policy!($plugin as $crate::FeePolicy);
        });
    };
}

/// Exports a type implementing [`FxPlugin`] as the component's `fx-plugin` world. Invoke it
/// once, at the crate's root; like [`export_plugin!`], it is empty off `wasm32`.
#[macro_export]
macro_rules! export_fx {
    ($plugin:ty) => {
        $crate::__export_world!("fx-plugin", {
            $crate::__export_describe!($plugin as $crate::FxPlugin);
            impl self::exports::wasmpay::plugin::fx::Guest for Exports {
                fn quote_rate(
                    request: $crate::__private::bindings::wasmpay::plugin::types::RateRequest,
                ) -> ::core::result::Result<
                    $crate::__private::bindings::wasmpay::plugin::types::FxRate,
                    $crate::__private::bindings::wasmpay::plugin::types::Rejection,
                > {
                    $crate::__private::quote_rate(<$plugin as $crate::FxPlugin>::quote_rate, request)
                }
            }
        });
    };
}

/// A module of the plugin's crate with `world`'s bindings, a type `Exports` implementing its
/// exports (`$impls`), and the component's exports pointing at them.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_world {
    ($world:tt, { $($impls:tt)* }) => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        mod __wasmpay_exports {
            #[allow(unused_imports)]
            use super::*;
            $crate::__generate_world!($world);
            struct Exports;
            $($impls)*
            export!(Exports with_types_in self);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_describe {
    ($plugin:ty as $role:path) => {
        impl self::exports::wasmpay::plugin::plugin::Guest for Exports {
            fn describe() -> $crate::__private::bindings::wasmpay::plugin::types::PluginInfo {
                $crate::__private::describe(<$plugin as $role>::describe)
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_validator {
    ($plugin:ty as $role:path) => {
        impl self::exports::wasmpay::plugin::validator::Guest for Exports {
            fn validate(
                payment: $crate::__private::bindings::wasmpay::plugin::types::Payment,
            ) -> ::core::result::Result<(), $crate::__private::bindings::wasmpay::plugin::types::Rejection> {
                $crate::__private::validate(<$plugin as $role>::validate, payment)
            }
        }
    };
}

/// `fee-policy` and `refund-fee`. The refund's records are defined in the exported interface,
/// so their generated types exist only here: their fields are read into the SDK's types.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_fee_policy {
    ($plugin:ty as $role:path) => {
        impl self::exports::wasmpay::plugin::fee_policy::Guest for Exports {
            fn quote_fee(
                payment: $crate::__private::bindings::wasmpay::plugin::types::Payment,
            ) -> ::core::result::Result<
                $crate::__private::bindings::wasmpay::plugin::types::FeeQuote,
                $crate::__private::bindings::wasmpay::plugin::types::Rejection,
            > {
                $crate::__private::quote_fee(<$plugin as $role>::quote_fee, payment)
            }
        }
        impl self::exports::wasmpay::plugin::refund_fee::Guest for Exports {
            fn quote_refund_fee(
                payment: self::exports::wasmpay::plugin::refund_fee::RefundedPayment,
                refund: self::exports::wasmpay::plugin::refund_fee::Refund,
            ) -> ::core::result::Result<
                self::exports::wasmpay::plugin::refund_fee::RefundFeeOutcome,
                $crate::__private::bindings::wasmpay::plugin::types::Rejection,
            > {
                use self::exports::wasmpay::plugin::refund_fee::RefundFeeOutcome;
                let payment = $crate::RefundedPayment {
                    id: payment.id,
                    payer: payment.payer,
                    payee: payment.payee,
                    amount: $crate::__private::money(payment.amount),
                    method: payment.method,
                    metadata: payment.metadata.into_iter().collect(),
                    received_at_ms: payment.received_at_ms,
                    fee: payment.fee,
                    fee_bearer: $crate::__private::fee_bearer(payment.fee_bearer),
                    refunded: payment.refunded,
                    fee_reversed: payment.fee_reversed,
                };
                let refund = $crate::Refund {
                    id: refund.id,
                    amount: $crate::__private::money(refund.amount),
                    received_at_ms: refund.received_at_ms,
                };
                match $crate::__private::quote_refund_fee(<$plugin as $role>::quote_refund_fee, &payment, &refund)? {
                    $crate::RefundFee::Keep => Ok(RefundFeeOutcome::Keep),
                    $crate::RefundFee::Reverse(amount) => Ok(RefundFeeOutcome::Reverse(amount)),
                    $crate::RefundFee::Charge(amount) => Ok(RefundFeeOutcome::Charge(amount)),
                }
            }
        }
    };
}
