//! The `card` payment method: card numbers (Luhn, brand from the BIN) or network tokens,
//! expiry, per-currency amount limits, and a percentage + fixed fee borne by the payee.
//!
//! Configuration (`[plugins.card.config]`, all optional):
//! - `fee.bps`: percentage part in basis points (default 290 = 2.9 %);
//! - `fee.fixed.<CUR>`: fixed part in minor units (defaults in [`CURRENCIES`]);
//! - `limit.<CUR>`: largest single payment in minor units (defaults in [`CURRENCIES`]);
//! - `refund.reverse`: `percentage` (default) gives the percentage part of the fee back on a
//!   refund, prorated to the refund's amount, and keeps the fixed part (the work of the
//!   authorization was done); `none` keeps the whole fee.
//!
//! A currency without a limit, default or configured, is not served.

mod brand;
mod expiry;

use wasmpay_sdk::limits::check_amount_limit;
use wasmpay_sdk::{
    Config, FeeBearer, FeeQuote, Money, Payment, Plugin, PluginInfo, Refund, RefundFee, RefundedPayment, Rejection,
};

pub use brand::{Brand, luhn_valid};
pub use expiry::Expiry;

/// Default terms per currency: (code, fixed fee, per-payment limit), in minor units.
pub const CURRENCIES: [(&str, u64, u64); 5] = [
    ("EUR", 25, 1_000_000),
    ("USD", 30, 1_000_000),
    ("GBP", 20, 1_000_000),
    ("CHF", 30, 1_000_000),
    ("JPY", 40, 150_000_000),
];

const DEFAULT_FEE_BASIS_POINTS: u32 = 290;

/// The card plugin.
#[derive(Debug)]
pub struct Card;

impl Plugin for Card {
    fn describe() -> PluginInfo {
        PluginInfo::new("card", env!("CARGO_PKG_VERSION"), ["card"])
            .with_currencies(CURRENCIES.iter().map(|(code, _, _)| *code))
    }

    fn validate(payment: &Payment, config: &Config) -> Result<(), Rejection> {
        let default_limit = default_terms(payment.amount.currency()).map(|(_, _, limit)| limit);
        check_amount_limit(payment, config, default_limit)?;
        check_card(payment)?;
        let expiry = Expiry::parse(payment.detail("expiry").unwrap_or_default())?;
        if expiry.is_past(payment.received_at_ms) {
            return Err(Rejection::decline("card_expired", format!("the card expired at the end of {expiry}")));
        }
        Ok(())
    }

    fn quote_fee(payment: &Payment, config: &Config) -> Result<FeeQuote, Rejection> {
        let currency = payment.amount.currency();
        let basis_points = config.parse_or("fee.bps", DEFAULT_FEE_BASIS_POINTS)?;
        let default_fixed = default_terms(currency).map_or(0, |(_, fixed, _)| fixed);
        let fixed = config.parse_or(&format!("fee.fixed.{currency}"), default_fixed)?;
        let overflow = |_| Rejection::decline("fee_overflow", "the fee does not fit in 64 bits");
        let percentage = payment.amount.basis_points(basis_points).map_err(overflow)?;
        // The payee bears the fee, so it can never exceed what the payee receives.
        let amount = payment.amount.minor_units();
        let percentage = percentage.minor_units().min(amount);
        let fixed = fixed.min(amount - percentage);
        FeeQuote::free(FeeBearer::Payee)
            .with_line("percentage", percentage)
            .and_then(|quote| quote.with_line("fixed", fixed))
            .map_err(overflow)
    }

    fn quote_refund_fee(payment: &RefundedPayment, refund: &Refund, config: &Config) -> Result<RefundFee, Rejection> {
        match config.get("refund.reverse").unwrap_or("percentage") {
            "none" => Ok(RefundFee::Keep),
            "percentage" => {
                // Of everything refunded so far, less what earlier refunds gave back: rounding
                // each small refund's share up would return more than the percentage part.
                let basis_points = config.parse_or("fee.bps", DEFAULT_FEE_BASIS_POINTS)?;
                let overflow = || Rejection::decline("fee_overflow", "the fee does not fit in 64 bits");
                let refunded = payment.refunded.checked_add(refund.amount.minor_units()).ok_or_else(overflow)?;
                let percentage = Money::new(refunded, refund.amount.currency())
                    .basis_points(basis_points)
                    .map_err(|_| overflow())?
                    .minor_units()
                    .saturating_sub(payment.fee_reversed);
                Ok(RefundFee::Reverse(percentage.min(payment.reversible(refund))))
            }
            other => Err(Rejection::retry_later(
                "plugin_misconfigured",
                format!("config `refund.reverse` = `{other}` is not `percentage` or `none`"),
            )),
        }
    }
}

fn default_terms(currency: &str) -> Option<(&'static str, u64, u64)> {
    CURRENCIES.iter().copied().find(|(code, _, _)| *code == currency)
}

/// Exactly one of `pan` (a card number) or `token` (with its `brand`) must be present.
fn check_card(payment: &Payment) -> Result<Brand, Rejection> {
    match (payment.detail("pan"), payment.detail("token")) {
        (Some(pan), None) => {
            let digits: String = pan.chars().filter(|c| *c != ' ').collect();
            if !(12..=19).contains(&digits.len()) || !luhn_valid(&digits) {
                return Err(Rejection::decline("invalid_card_number", "the card number fails the Luhn check"));
            }
            Brand::from_pan(&digits)
                .ok_or_else(|| Rejection::decline("unsupported_card_brand", "the card's network is not accepted"))
        }
        (None, Some(token)) => {
            let body = token.strip_prefix("tok_").unwrap_or_default();
            if !(8..=64).contains(&body.len()) || !body.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(Rejection::decline("invalid_card_token", "a token is `tok_` and 8-64 letters or digits"));
            }
            payment
                .detail("brand")
                .and_then(Brand::from_name)
                .ok_or_else(|| Rejection::decline("unsupported_card_brand", "a token needs a known `brand`"))
        }
        _ => Err(Rejection::decline("missing_card_details", "send exactly one of `pan` or `token`")),
    }
}

wasmpay_sdk::export_plugin!(Card);

#[cfg(test)]
mod tests;
