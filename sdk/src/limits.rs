//! Per-currency amount limits, the check nearly every payment method starts with.

use crate::{Config, Payment, Rejection};

/// Refuses a payment over the per-payment limit of its currency: the configuration key
/// `limit.<CUR>` when set, else `default` (the plugin's built-in terms for that currency).
/// A currency with neither is not served: `unsupported_currency`. Over the limit:
/// `amount_over_limit`. Both are permanent for that payment.
pub fn check_amount_limit(payment: &Payment, config: &Config, default: Option<u64>) -> Result<(), Rejection> {
    let currency = payment.amount.currency();
    let Some(limit) = config.parse(&format!("limit.{currency}"))?.or(default) else {
        return Err(Rejection::decline(
            "unsupported_currency",
            format!("{} is not served in {currency}", payment.method),
        ));
    };
    let amount = payment.amount.minor_units();
    if amount > limit {
        return Err(Rejection::decline(
            "amount_over_limit",
            format!("{amount} exceeds the {} limit of {limit} minor units", payment.method),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::Money;

    fn payment(minor_units: u64, currency: &str) -> Payment {
        Payment {
            id: "p".into(),
            payer: "a".into(),
            payee: "b".into(),
            amount: Money::new(minor_units, currency),
            method: "cash".into(),
            details: BTreeMap::new(),
            metadata: BTreeMap::new(),
            received_at_ms: 0,
        }
    }

    fn code(result: Result<(), Rejection>) -> Option<String> {
        result.err().map(|rejection| rejection.code)
    }

    #[test]
    fn configured_limit_wins_over_the_default() {
        let config = Config::from_pairs([("limit.EUR", "10")]);
        assert_eq!(code(check_amount_limit(&payment(10, "EUR"), &config, Some(5))), None);
        assert_eq!(
            code(check_amount_limit(&payment(11, "EUR"), &config, Some(50))).as_deref(),
            Some("amount_over_limit")
        );
        assert_eq!(code(check_amount_limit(&payment(5, "USD"), &config, Some(5))), None);
        assert_eq!(
            code(check_amount_limit(&payment(1, "USD"), &config, None)).as_deref(),
            Some("unsupported_currency")
        );
    }
}
