//! The `mobile_money` payment method: the payer pays from a phone number (the `msisdn` detail,
//! E.164: `+` and the country calling code, then the national number) through a mobile-money
//! operator. The plugin knows each country's calling code, currency, national number length and
//! operators' number prefixes, checks that the payment is in that country's currency and within
//! its per-payment limit, and charges a percentage with a minimum, borne by the payer (the
//! sender pays, as mobile money usually works).
//!
//! Configuration (`[plugins.mobile.config]`, all optional; amounts in major units):
//! - `countries`: the countries served, e.g. `TZ,KE` (default: every one in [`COUNTRIES`]);
//! - `operators.<CC>`: the operators accepted in a country, e.g. `operators.TZ = "vodacom,airtel"`
//!   (default: all of them);
//! - `limit.<CUR>`: largest single payment, e.g. `limit.TZS = "3000000"`;
//! - `fee.percent` (default `1`), `fee.minimum.<CUR>` (defaults in [`COUNTRIES`]).

use wasmpay_sdk::{Config, FeeBearer, FeeQuote, FeeRule, Money, Payment, Plugin, PluginInfo, Rejection};

/// A country's mobile-money terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Country {
    /// ISO 3166-1 alpha-2 code.
    pub code: &'static str,
    /// International calling code, without `+`.
    pub calling_code: &'static str,
    /// The currency payments from its numbers are in.
    pub currency: &'static str,
    /// Digits of a national (subscriber) number.
    pub national_digits: usize,
    /// Operators by the first two digits of the national number.
    pub operators: &'static [(&'static str, &'static str)],
    /// Largest single payment, in major units.
    pub limit: &'static str,
    /// Smallest fee, in major units. Within the node's default fee bound (10 % of the amount
    /// plus one major unit, at least 100 minor units), which knows nothing of what a unit is
    /// worth: an operator who wants an operator-like 100 TZS minimum raises
    /// `[fee_limits.mobile_money]` too.
    pub minimum_fee: &'static str,
}

/// The countries served by default.
pub const COUNTRIES: [Country; 4] = [
    Country {
        code: "TZ",
        calling_code: "255",
        currency: "TZS",
        national_digits: 9,
        operators: &[
            ("62", "halotel"),
            ("65", "tigo"),
            ("67", "tigo"),
            ("68", "airtel"),
            ("69", "airtel"),
            ("71", "tigo"),
            ("74", "vodacom"),
            ("75", "vodacom"),
            ("76", "vodacom"),
            ("78", "airtel"),
        ],
        limit: "5000000",
        minimum_fee: "1",
    },
    Country {
        code: "KE",
        calling_code: "254",
        currency: "KES",
        national_digits: 9,
        operators: &[
            ("70", "safaricom"),
            ("71", "safaricom"),
            ("72", "safaricom"),
            ("73", "airtel"),
            ("74", "safaricom"),
            ("77", "telkom"),
            ("78", "airtel"),
            ("79", "safaricom"),
        ],
        limit: "250000",
        minimum_fee: "1",
    },
    Country {
        code: "UG",
        calling_code: "256",
        currency: "UGX",
        national_digits: 9,
        operators: &[("70", "airtel"), ("74", "airtel"), ("75", "airtel"), ("76", "mtn"), ("77", "mtn"), ("78", "mtn")],
        limit: "5000000",
        minimum_fee: "100",
    },
    Country {
        code: "GH",
        calling_code: "233",
        currency: "GHS",
        national_digits: 9,
        operators: &[
            ("20", "telecel"),
            ("24", "mtn"),
            ("26", "airteltigo"),
            ("27", "airteltigo"),
            ("50", "telecel"),
            ("54", "mtn"),
            ("55", "mtn"),
            ("56", "airteltigo"),
            ("57", "airteltigo"),
            ("59", "mtn"),
        ],
        limit: "10000",
        minimum_fee: "0.50",
    },
];

const DEFAULT_FEE_PERCENT: &str = "1";

/// A payer's number, split and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msisdn {
    /// Its country.
    pub country: &'static Country,
    /// Its operator.
    pub operator: &'static str,
}

impl Msisdn {
    /// `text` as `+<calling code><national number>` of a country in [`COUNTRIES`] (spaces
    /// allowed between digits), with a known operator prefix.
    pub fn parse(text: &str) -> Result<Msisdn, Rejection> {
        let invalid = |why: &str| Rejection::decline("invalid_msisdn", format!("`msisdn` {why}"));
        let digits = text.strip_prefix('+').ok_or_else(|| invalid("must start with + and the country code"))?;
        let digits: String = digits.chars().filter(|c| *c != ' ').collect();
        // E.164: at most 15 digits in all.
        if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("must be 8 to 15 digits after +"));
        }
        let country = COUNTRIES.iter().find(|country| digits.starts_with(country.calling_code)).ok_or_else(|| {
            Rejection::decline("unsupported_country", "no mobile-money country has that calling code")
        })?;
        let national = &digits[country.calling_code.len()..];
        if national.len() != country.national_digits {
            return Err(invalid(&format!(
                "must have {} digits after +{}",
                country.national_digits, country.calling_code
            )));
        }
        let operator = country
            .operators
            .iter()
            .find(|(prefix, _)| national.starts_with(prefix))
            .map(|(_, operator)| *operator)
            .ok_or_else(|| {
                Rejection::decline(
                    "unknown_operator",
                    format!("no {} operator has numbers starting {}", country.code, &national[..2]),
                )
            })?;
        Ok(Msisdn { country, operator })
    }
}

/// The mobile-money plugin.
#[derive(Debug)]
pub struct Mobile;

impl Plugin for Mobile {
    fn describe() -> PluginInfo {
        PluginInfo::new("mobile", env!("CARGO_PKG_VERSION"), ["mobile_money"])
            .with_currencies(COUNTRIES.iter().map(|country| country.currency))
    }

    fn validate(payment: &Payment, config: &Config) -> Result<(), Rejection> {
        let number = Msisdn::parse(payment.detail("msisdn").unwrap_or_default())?;
        let country = number.country;
        if let Some(served) = config.get("countries")
            && !listed(served, country.code)
        {
            return Err(Rejection::decline("unsupported_country", format!("{} is not served", country.code)));
        }
        if let Some(accepted) = config.get(&format!("operators.{}", country.code))
            && !listed(accepted, number.operator)
        {
            let message = format!("{} numbers of {} are not accepted", number.operator, country.code);
            return Err(Rejection::decline("operator_not_supported", message));
        }
        let currency = payment.amount.currency();
        if currency != country.currency {
            let message = format!("a {} number pays in {}, not {currency}", country.code, country.currency);
            return Err(Rejection::decline("currency_not_of_country", message));
        }
        let limit = config.get(&format!("limit.{currency}")).unwrap_or(country.limit);
        if payment.amount.minor_units() > Money::from_major(limit, currency)?.minor_units() {
            let message = format!("more than the {} limit of {limit} {currency} per payment", country.code);
            return Err(Rejection::decline("amount_over_limit", message));
        }
        Ok(())
    }

    fn quote_fee(payment: &Payment, config: &Config) -> Result<FeeQuote, Rejection> {
        let currency = payment.amount.currency();
        let country = COUNTRIES.iter().find(|country| country.currency == currency);
        let minimum = config
            .get(&format!("fee.minimum.{currency}"))
            .or(country.map(|country| country.minimum_fee))
            .unwrap_or("0");
        let rule = FeeRule::percent(config.get("fee.percent").unwrap_or(DEFAULT_FEE_PERCENT))?.at_least(minimum)?;
        Ok(rule.quote(&payment.amount, FeeBearer::Payer)?)
    }
}

/// Whether the comma-separated `list` names `item`.
fn listed(list: &str, item: &str) -> bool {
    list.split(',').any(|entry| entry.trim().eq_ignore_ascii_case(item))
}

wasmpay_sdk::export_plugin!(Mobile);

#[cfg(test)]
mod tests;
