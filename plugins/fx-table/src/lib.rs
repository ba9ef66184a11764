//! The deployment's FX plugin: the rate of a currency pair from the operator's table, less a
//! markup in basis points. A rate table is what a treasury desk publishes each morning (or a
//! provider's feed, replayed into configuration by an operator's tool); the host re-reads it
//! when the plugin's configuration changes, and the ledger records the rate with every
//! conversion.
//!
//! Configuration (`[plugins.fx-table.config]`):
//! - `"EUR/USD" = "1.0832"`: major units of USD one EUR buys, an exact decimal (at most 12
//!   decimals). A pair not listed is quoted from its inverse when that is listed
//!   (`1 / rate`, to 12 decimals, rounded down), and declined otherwise (`pair_not_quoted`);
//! - `markup_bps = "50"`: what the provider keeps, in basis points (default 0), and
//!   `"markup_bps.EUR/USD"` for one pair;
//! - `"max_amount.EUR" = "50000"`: the largest amount converted from a currency, in its major
//!   units (none by default): above it, `amount_over_limit`.

use wasmpay_sdk::{Config, FxPlugin, FxRate, Money, PluginInfo, RateRequest, Rejection};

/// Quotes from the operator's table.
#[derive(Debug)]
pub struct FxTable;

impl FxPlugin for FxTable {
    fn describe() -> PluginInfo {
        PluginInfo::new("fx-table", env!("CARGO_PKG_VERSION"), [] as [&str; 0])
    }

    fn quote_rate(request: &RateRequest, config: &Config) -> Result<FxRate, Rejection> {
        if let Some(limit) = config.get(&format!("max_amount.{}", request.source)) {
            let limit = Money::from_major(limit, request.source.as_str())?;
            if request.amount.minor_units() > limit.minor_units() {
                return Err(Rejection::decline(
                    "amount_over_limit",
                    format!("converting more than {limit} {} at once is not quoted", request.source),
                ));
            }
        }
        let pair = request.pair();
        let rate = match config.get(&pair) {
            Some(rate) => FxRate::parse(rate)?,
            None => match config.get(&format!("{}/{}", request.target, request.source)) {
                Some(inverse) => inverse_of(FxRate::parse(inverse)?)?,
                None => return Err(Rejection::decline("pair_not_quoted", format!("{pair} is not in the rate table"))),
            },
        };
        let markup =
            config.parse(&format!("markup_bps.{pair}"))?.map_or_else(|| config.parse_or("markup_bps", 0), Ok)?;
        rate.with_markup_bps(markup)
    }
}

/// `1 / rate` to 12 decimals, rounded down (the table's rate for the pair the other way).
fn inverse_of(rate: FxRate) -> Result<FxRate, Rejection> {
    // rate = digits / 10^scale, so 1 / rate = 10^scale / digits; times 10^12 for 12 decimals.
    let numerator = 10_u128.pow(u32::from(rate.scale()) + u32::from(FxRate::MAX_SCALE));
    let inverse = numerator / u128::from(rate.digits());
    let digits = inverse.to_string();
    let scale = usize::from(FxRate::MAX_SCALE);
    let text = if digits.len() > scale {
        format!("{}.{}", &digits[..digits.len() - scale], &digits[digits.len() - scale..])
    } else {
        format!("0.{digits:0>scale$}")
    };
    // Eighteen digits at most: drop the decimals beyond them, rounding down again.
    let whole = text.split('.').next().unwrap_or_default().trim_start_matches('0').len();
    let kept = (18_usize.saturating_sub(whole)).min(scale);
    let (integer, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let text = format!("{integer}.{}", &fraction[..kept.min(fraction.len())]);
    FxRate::parse(text.trim_end_matches('.')).map_err(|_| {
        Rejection::retry_later("plugin_misconfigured", "the inverse rate is beyond what a rate can state".to_owned())
    })
}

wasmpay_sdk::export_fx!(FxTable);

#[cfg(test)]
mod tests {
    use super::*;

    fn request(source: &str, target: &str, amount: u64) -> RateRequest {
        RateRequest {
            source: source.into(),
            target: target.into(),
            amount: Money::new(amount, source),
            received_at_ms: 0,
        }
    }

    fn table() -> Config {
        Config::from_pairs([
            ("EUR/USD", "1.0832"),
            ("USD/JPY", "157.3"),
            ("markup_bps", "50"),
            ("markup_bps.USD/JPY", "25"),
            ("max_amount.EUR", "50000"),
        ])
    }

    fn quoted(source: &str, target: &str, amount: u64) -> Result<(u64, u8, u32), String> {
        FxTable::quote_rate(&request(source, target, amount), &table())
            .map(|rate| (rate.digits(), rate.scale(), rate.markup_bps()))
            .map_err(|rejection| rejection.code)
    }

    #[test]
    fn a_listed_pair_is_quoted_with_its_markup() {
        assert_eq!(quoted("EUR", "USD", 10_000), Ok((10_832, 4, 50)));
        assert_eq!(quoted("USD", "JPY", 10_000), Ok((1_573, 1, 25)));
    }

    #[test]
    fn a_pair_is_quoted_from_its_inverse_rounded_down() {
        // 1 / 1.0832 = 0.923190546528803...
        assert_eq!(quoted("USD", "EUR", 10_000), Ok((923_190_546_528, 12, 50)));
        // 1 / 157.3 = 0.006357279084551...
        assert_eq!(quoted("JPY", "USD", 10_000), Ok((6_357_279_084, 12, 50)));
    }

    #[test]
    fn unquoted_pairs_and_amounts_over_the_limit_are_declined() {
        assert_eq!(quoted("EUR", "GBP", 10_000), Err("pair_not_quoted".to_owned()));
        assert_eq!(quoted("EUR", "USD", 5_000_001), Err("amount_over_limit".to_owned()));
        assert_eq!(quoted("EUR", "USD", 5_000_000), Ok((10_832, 4, 50)));
        let broken = Config::from_pairs([("EUR/USD", "1,08")]);
        let answer = FxTable::quote_rate(&request("EUR", "USD", 1), &broken).map_err(|rejection| rejection.code);
        assert_eq!(answer, Err("plugin_misconfigured".to_owned()));
    }
}
