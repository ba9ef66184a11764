//! # wasmpay-sdk
//!
//! Write a wasmpay payment-method plugin as plain Rust: implement [`Plugin`] and call
//! [`export_plugin!`]. The SDK hides the WIT bindings (`wit/` in the repository) and gives you
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
pub mod limits;
pub mod log;
pub mod money;
pub mod payment;
pub mod refund;

pub use config::Config;
pub use decision::{FeeBearer, FeeLine, FeeQuote, PluginInfo, Rejection};
pub use fees::FeeRule;
pub use money::{Money, MoneyError};
pub use payment::Payment;
pub use refund::{Refund, RefundFee, RefundedPayment};

/// A payment-method plugin: one function per export of the `payment-method-with-refunds`
/// world.
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

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod __private;

/// Exports a type implementing [`Plugin`] as the component's `payment-method-with-refunds`
/// world (`wasmpay:plugin@0.1.1`).
///
/// On targets other than `wasm32` this expands to nothing, so the plugin crate builds and
/// unit-tests natively.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Exports;
            impl $crate::__private::bindings::exports::wasmpay::plugin::plugin::Guest for Exports {
                fn describe() -> $crate::__private::bindings::wasmpay::plugin::types::PluginInfo {
                    $crate::__private::describe::<$plugin>()
                }
            }
            impl $crate::__private::bindings::exports::wasmpay::plugin::validator::Guest for Exports {
                fn validate(
                    payment: $crate::__private::bindings::wasmpay::plugin::types::Payment,
                ) -> ::core::result::Result<(), $crate::__private::bindings::wasmpay::plugin::types::Rejection>
                {
                    $crate::__private::validate::<$plugin>(payment)
                }
            }
            impl $crate::__private::bindings::exports::wasmpay::plugin::fee_policy::Guest for Exports {
                fn quote_fee(
                    payment: $crate::__private::bindings::wasmpay::plugin::types::Payment,
                ) -> ::core::result::Result<
                    $crate::__private::bindings::wasmpay::plugin::types::FeeQuote,
                    $crate::__private::bindings::wasmpay::plugin::types::Rejection,
                > {
                    $crate::__private::quote_fee::<$plugin>(payment)
                }
            }
            impl $crate::__private::bindings::exports::wasmpay::plugin::refund_fee::Guest for Exports {
                fn quote_refund_fee(
                    payment: $crate::__private::bindings::exports::wasmpay::plugin::refund_fee::RefundedPayment,
                    refund: $crate::__private::bindings::exports::wasmpay::plugin::refund_fee::Refund,
                ) -> ::core::result::Result<
                    $crate::__private::bindings::exports::wasmpay::plugin::refund_fee::RefundFeeOutcome,
                    $crate::__private::bindings::wasmpay::plugin::types::Rejection,
                > {
                    $crate::__private::quote_refund_fee::<$plugin>(payment, refund)
                }
            }
            $crate::__private::bindings::export_payment_method_with_refunds!(
                Exports with_types_in $crate::__private::bindings
            );
        };
    };
}
