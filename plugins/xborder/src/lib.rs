//! The `cross_border` payment method: a payment between accounts in two countries, usually in
//! two currencies (the host converts at the FX plugin's rate; this plugin never sees a rate).
//! It screens the payment before any money moves, and prices it with an itemised fee borne by
//! the payer, so that the payee gets exactly what a quote said.
//!
//! Details a client sends: `payer_country` and `payee_country` (ISO 3166-1 alpha-2, e.g. `DE`,
//! `US`), and optionally `payer_name` and `payee_name` (screened against the deny-list).
//!
//! Configuration (`[plugins.xborder.config]`, all optional):
//! - `corridors`: the country pairs served, e.g. `"DE>US, FR>US, DE>GB"` (default: every pair of
//!   two different countries not sanctioned);
//! - `sanctioned_countries`: countries no payment may come from or go to (default
//!   [`SANCTIONED_COUNTRIES`], the comprehensively sanctioned jurisdictions; an operator sets
//!   its own list from its regulator's);
//! - `denied_accounts`: account ids, and `denied_names`: names (`;` separated, matched without
//!   case, spaces or punctuation against `payer_name` and `payee_name`), that may not pay or be
//!   paid;
//! - `limit.<CUR>`: the largest payment in a currency, in major units (default none);
//! - `fee.percent` (default [`DEFAULT_FEE_PERCENT`]) and `fee.fixed.<CUR>` (default one major
//!   unit): the fee's two lines.

use wasmpay_sdk::{Config, FeeBearer, FeeQuote, FeeRule, Money, Payment, Plugin, PluginInfo, Rejection};

/// Countries no payment may come from or go to unless configured otherwise: North Korea, Iran,
/// Syria and Cuba, under comprehensive sanctions programmes in 2026.
pub const SANCTIONED_COUNTRIES: &str = "KP,IR,SY,CU";

/// The percentage line of the fee by default.
pub const DEFAULT_FEE_PERCENT: &str = "0.5";

/// The cross-border plugin.
#[derive(Debug)]
pub struct CrossBorder;

impl Plugin for CrossBorder {
    fn describe() -> PluginInfo {
        PluginInfo::new("xborder", env!("CARGO_PKG_VERSION"), ["cross_border"])
    }

    fn validate(payment: &Payment, config: &Config) -> Result<(), Rejection> {
        let from = country(payment, "payer_country")?;
        let to = country(payment, "payee_country")?;
        let sanctioned = config.get("sanctioned_countries").unwrap_or(SANCTIONED_COUNTRIES);
        for country in [from, to] {
            if listed(sanctioned, ',', country) {
                return Err(Rejection::decline("sanctioned_country", format!("no payment may involve {country}")));
            }
        }
        let denied_accounts = config.get("denied_accounts").unwrap_or_default();
        let denied_names = config.get("denied_names").unwrap_or_default();
        for (account, name) in [(&payment.payer, "payer_name"), (&payment.payee, "payee_name")] {
            let name = payment.detail(name).map(normalized).unwrap_or_default();
            let denied_name = !name.is_empty() && denied_names.split(';').any(|denied| normalized(denied) == name);
            if listed(denied_accounts, ',', account) || denied_name {
                // The code says what kind of hit; the message never echoes the list.
                return Err(Rejection::decline("sanctioned_party", "a party of the payment is on the deny-list"));
            }
        }
        if from == to {
            return Err(Rejection::decline("not_cross_border", format!("both parties are in {from}")));
        }
        if let Some(corridors) = config.get("corridors")
            && !listed(corridors, ',', &format!("{from}>{to}"))
        {
            return Err(Rejection::decline("corridor_closed", format!("{from} to {to} is not served")));
        }
        let currency = payment.amount.currency();
        if let Some(limit) = config.get(&format!("limit.{currency}"))
            && payment.amount.minor_units() > Money::from_major(limit, currency)?.minor_units()
        {
            let message = format!("more than the limit of {limit} {currency} per payment");
            return Err(Rejection::decline("amount_over_limit", message));
        }
        Ok(())
    }

    fn quote_fee(payment: &Payment, config: &Config) -> Result<FeeQuote, Rejection> {
        let currency = payment.amount.currency();
        let fixed = config.get(&format!("fee.fixed.{currency}")).unwrap_or("1");
        let rule = FeeRule::percent(config.get("fee.percent").unwrap_or(DEFAULT_FEE_PERCENT))?.plus(fixed)?;
        Ok(rule.quote(&payment.amount, FeeBearer::Payer)?)
    }
}

/// The ISO 3166-1 alpha-2 code in detail `key`.
fn country<'p>(payment: &'p Payment, key: &str) -> Result<&'p str, Rejection> {
    let code = payment.detail(key).unwrap_or_default();
    if code.len() != 2 || !code.bytes().all(|byte| byte.is_ascii_uppercase()) {
        return Err(Rejection::decline(
            "invalid_country",
            format!("`{key}` must be an ISO 3166-1 alpha-2 code like DE"),
        ));
    }
    Ok(code)
}

/// Whether the `separator`-separated `list` names `item`, ignoring case and spaces.
fn listed(list: &str, separator: char, item: &str) -> bool {
    list.split(separator).any(|entry| entry.trim().eq_ignore_ascii_case(item))
}

/// `name` without case, spaces or punctuation, so `ACME Shell Co.` matches `acme shell co`.
fn normalized(name: &str) -> String {
    name.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

wasmpay_sdk::export_plugin!(CrossBorder);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn payment(amount: u64, currency: &str, details: &[(&str, &str)]) -> Payment {
        Payment {
            id: "x-1".into(),
            payer: "alice".into(),
            payee: "bob".into(),
            amount: Money::new(amount, currency),
            method: "cross_border".into(),
            details: details.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect(),
            metadata: BTreeMap::new(),
            received_at_ms: 0,
        }
    }

    fn verdict(payment: &Payment, config: &Config) -> Result<(), String> {
        CrossBorder::validate(payment, config).map_err(|rejection| rejection.code)
    }

    const DE_US: [(&str, &str); 2] = [("payer_country", "DE"), ("payee_country", "US")];

    #[test]
    fn a_payment_between_two_countries_passes_and_pays_an_itemised_fee() {
        let config = Config::default();
        let paid = payment(10_000, "EUR", &DE_US);
        assert_eq!(verdict(&paid, &config), Ok(()));
        let fee = CrossBorder::quote_fee(&paid, &config).expect("priced");
        // 0.5 % of 100.00 is 0.50, plus 1.00: 1.50 borne by the payer, in two lines.
        assert_eq!((fee.total(), fee.bearer()), (150, FeeBearer::Payer));
        let lines: Vec<(&str, u64)> = fee.lines().iter().map(|line| (line.label.as_str(), line.minor_units)).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines.iter().map(|(_, amount)| amount).sum::<u64>(), 150);
    }

    #[test]
    fn sanctioned_countries_and_parties_are_declined_without_naming_the_list() {
        let config = Config::from_pairs([("denied_accounts", "mallory"), ("denied_names", "ACME Shell Co.; Ivan Q")]);
        let to_iran = payment(100, "EUR", &[("payer_country", "DE"), ("payee_country", "IR")]);
        assert_eq!(verdict(&to_iran, &config), Err("sanctioned_country".into()));
        let named =
            payment(100, "EUR", &[("payer_country", "DE"), ("payee_country", "US"), ("payee_name", "acme shell co")]);
        assert_eq!(verdict(&named, &config), Err("sanctioned_party".into()));
        let mut denied = payment(100, "EUR", &DE_US);
        denied.payee = "MALLORY".into();
        assert_eq!(verdict(&denied, &config), Err("sanctioned_party".into()));
        let rejection = CrossBorder::validate(&named, &config).expect_err("denied");
        assert!(!rejection.message.to_lowercase().contains("acme"), "{}", rejection.message);
        // An operator's own list replaces the default.
        let own = Config::from_pairs([("sanctioned_countries", "RU")]);
        assert_eq!(verdict(&to_iran, &own), Ok(()));
    }

    #[test]
    fn corridors_countries_and_limits_are_checked() {
        let config = Config::from_pairs([("corridors", "DE>US, FR>US"), ("limit.EUR", "10000")]);
        assert_eq!(verdict(&payment(100, "EUR", &DE_US), &config), Ok(()));
        let back = payment(100, "EUR", &[("payer_country", "US"), ("payee_country", "DE")]);
        assert_eq!(verdict(&back, &config), Err("corridor_closed".into()));
        assert_eq!(verdict(&payment(1_000_001, "EUR", &DE_US), &config), Err("amount_over_limit".into()));
        assert_eq!(verdict(&payment(1_000_000, "EUR", &DE_US), &config), Ok(()));
        let home = payment(100, "EUR", &[("payer_country", "DE"), ("payee_country", "DE")]);
        assert_eq!(verdict(&home, &config), Err("not_cross_border".into()));
        for bad in ["", "de", "DEU", "D1"] {
            let payment = payment(100, "EUR", &[("payer_country", bad), ("payee_country", "US")]);
            assert_eq!(verdict(&payment, &config), Err("invalid_country".into()), "{bad:?}");
        }
    }
}
