//! The `wallet` payment method: a wallet id, a per-payment limit per currency, and a 1 % fee
//! capped per currency, borne by the payer.
//!
//! Configuration (`[plugins.wallet.config]`, all optional):
//! - `limit.<CUR>`: largest single payment in minor units (defaults in [`CURRENCIES`]);
//! - `fee.bps`: percentage in basis points (default 100 = 1 %);
//! - `fee.cap.<CUR>`: the most one payment pays, in minor units (defaults in [`CURRENCIES`]).

use wasmpay_sdk::limits::check_amount_limit;
use wasmpay_sdk::{Config, FeeBearer, FeeQuote, Money, Payment, Plugin, PluginInfo, Rejection};

/// Default terms per currency: (code, per-payment limit, fee cap), in minor units.
pub const CURRENCIES: [(&str, u64, u64); 3] = [("EUR", 50_000, 200), ("USD", 50_000, 250), ("GBP", 50_000, 200)];

const DEFAULT_FEE_BASIS_POINTS: u32 = 100;

/// The wallet plugin.
#[derive(Debug)]
pub struct Wallet;

impl Plugin for Wallet {
    fn describe() -> PluginInfo {
        PluginInfo::new("wallet", env!("CARGO_PKG_VERSION"), ["wallet"])
            .with_currencies(CURRENCIES.iter().map(|(code, _, _)| *code))
    }

    fn validate(payment: &Payment, config: &Config) -> Result<(), Rejection> {
        let default_limit = default_terms(payment.amount.currency()).map(|(_, limit, _)| limit);
        check_amount_limit(payment, config, default_limit)?;
        let wallet_id = payment.detail("wallet_id").unwrap_or_default();
        if !valid_wallet_id(wallet_id) {
            return Err(Rejection::decline("invalid_wallet_id", "a wallet id is `wal_` and 8-32 letters or digits"));
        }
        Ok(())
    }

    fn quote_fee(payment: &Payment, config: &Config) -> Result<FeeQuote, Rejection> {
        let currency = payment.amount.currency();
        let basis_points = config.parse_or("fee.bps", DEFAULT_FEE_BASIS_POINTS)?;
        let default_cap = default_terms(currency).map_or(u64::MAX, |(_, _, cap)| cap);
        let cap = Money::new(config.parse_or(&format!("fee.cap.{currency}"), default_cap)?, currency);
        let overflow = |_| Rejection::decline("fee_overflow", "the fee does not fit in 64 bits");
        let fee = payment.amount.basis_points(basis_points).and_then(|fee| fee.min(cap)).map_err(overflow)?;
        FeeQuote::free(FeeBearer::Payer).with_line("percentage_capped", fee.minor_units()).map_err(overflow)
    }
}

fn default_terms(currency: &str) -> Option<(&'static str, u64, u64)> {
    CURRENCIES.iter().copied().find(|(code, _, _)| *code == currency)
}

fn valid_wallet_id(wallet_id: &str) -> bool {
    wallet_id
        .strip_prefix("wal_")
        .is_some_and(|body| (8..=32).contains(&body.len()) && body.chars().all(|c| c.is_ascii_alphanumeric()))
}

wasmpay_sdk::export_plugin!(Wallet);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn payment(minor_units: u64, currency: &str, wallet_id: &str) -> Payment {
        Payment {
            id: "p1".into(),
            payer: "alice".into(),
            payee: "shop".into(),
            amount: Money::new(minor_units, currency),
            method: "wallet".into(),
            details: BTreeMap::from([("wallet_id".to_owned(), wallet_id.to_owned())]),
            metadata: BTreeMap::new(),
            received_at_ms: 0,
        }
    }

    fn code(payment: &Payment, config: &Config) -> Option<String> {
        Wallet::validate(payment, config).err().map(|r| r.code)
    }

    #[test]
    fn validates_wallet_ids_and_limits() {
        let config = Config::default();
        assert_eq!(code(&payment(50_000, "EUR", "wal_12345678"), &config), None);
        assert_eq!(code(&payment(50_001, "EUR", "wal_12345678"), &config).as_deref(), Some("amount_over_limit"));
        assert_eq!(code(&payment(1, "EUR", "wal_1234"), &config).as_deref(), Some("invalid_wallet_id"));
        assert_eq!(code(&payment(1, "EUR", "12345678"), &config).as_deref(), Some("invalid_wallet_id"));
        assert_eq!(code(&payment(1, "JPY", "wal_12345678"), &config).as_deref(), Some("unsupported_currency"));
        let config = Config::from_pairs([("limit.EUR", "10")]);
        assert_eq!(code(&payment(11, "EUR", "wal_12345678"), &config).as_deref(), Some("amount_over_limit"));
    }

    #[test]
    fn fee_is_one_percent_rounded_half_up_and_capped() {
        let config = Config::default();
        let fee = |minor_units| Wallet::quote_fee(&payment(minor_units, "EUR", "wal_12345678"), &config);
        assert_eq!(fee(1_050).map(|q| q.total()), Ok(11)); // 10.5 -> 11
        assert_eq!(fee(1_049).map(|q| q.total()), Ok(10)); // 10.49 -> 10
        assert_eq!(fee(40_000).map(|q| q.total()), Ok(200)); // 400 capped at 200
        assert_eq!(fee(1).map(|q| (q.total(), q.bearer())), Ok((0, FeeBearer::Payer)));
    }
}
