//! Currency conversion: what an FX plugin is asked ([`RateRequest`]) and answers ([`FxRate`]).
//!
//! A rate is an exact decimal, never a float: `FxRate::parse("1.0832")` is 10832 × 10⁻⁴. The
//! host applies the markup and converts in 128-bit integers, rounding the payee's amount down,
//! so an FX plugin only ever states a decimal and a number of basis points.

use crate::decision::Rejection;
use crate::money::{Decimal, Money};

/// What the host asks an FX plugin: the rate from `source` to `target` for `amount`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateRequest {
    /// ISO 4217 code the payer pays in.
    pub source: String,
    /// ISO 4217 code the payee is paid in, never `source`.
    pub target: String,
    /// What is converted, in `source`.
    pub amount: Money,
    /// When the host asked, in milliseconds since the Unix epoch (UTC).
    pub received_at_ms: u64,
}

impl RateRequest {
    /// The pair as `SOURCE/TARGET`, e.g. `EUR/USD`: how rate tables usually key it.
    pub fn pair(&self) -> String {
        format!("{}/{}", self.source, self.target)
    }
}

/// An exchange rate: major units of the target currency per major unit of the source, and the
/// markup the provider keeps, in basis points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FxRate {
    digits: u64,
    scale: u8,
    markup_bps: u32,
}

impl FxRate {
    /// The most digits after the point the host takes.
    pub const MAX_SCALE: u8 = 12;

    /// `text` as written, e.g. `1.0832` or `157.3`, with no markup. Refused (as the plugin's
    /// configuration, `plugin_misconfigured`) when it is not a positive decimal of at most 18
    /// digits, 12 of them after the point.
    pub fn parse(text: &str) -> Result<FxRate, Rejection> {
        let misconfigured =
            || Rejection::retry_later("plugin_misconfigured", format!("`{text}` is not an exchange rate"));
        let decimal = Decimal::parse(text.trim()).map_err(|_| misconfigured())?;
        let (digits, scale) = decimal.parts();
        let scale = u8::try_from(scale).ok().filter(|scale| *scale <= FxRate::MAX_SCALE).ok_or_else(misconfigured)?;
        if digits == 0 {
            return Err(misconfigured());
        }
        Ok(FxRate { digits, scale, markup_bps: 0 })
    }

    /// The same rate with a markup of `bps` basis points (1 bp = 0.01 %): the payee is paid at
    /// `rate × (1 − bps / 10 000)`. At most 9 999.
    pub fn with_markup_bps(self, bps: u32) -> Result<FxRate, Rejection> {
        if bps >= 10_000 {
            return Err(Rejection::retry_later("plugin_misconfigured", format!("a markup of {bps} bp is all of it")));
        }
        Ok(FxRate { markup_bps: bps, ..self })
    }

    /// Significant digits.
    pub fn digits(&self) -> u64 {
        self.digits
    }

    /// Digits after the decimal point.
    pub fn scale(&self) -> u8 {
        self.scale
    }

    /// The markup, in basis points.
    pub fn markup_bps(&self) -> u32 {
        self.markup_bps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_exact_decimals_with_a_markup_below_all_of_it() {
        let rate = FxRate::parse("1.0832").and_then(|rate| rate.with_markup_bps(50)).expect("rate");
        assert_eq!((rate.digits(), rate.scale(), rate.markup_bps()), (10_832, 4, 50));
        assert_eq!(FxRate::parse("157").map(|rate| (rate.digits(), rate.scale())), Ok((157, 0)));
        for bad in ["0", "0.00", "-1", "1e3", "1.0000000000001", "abc", ""] {
            assert!(FxRate::parse(bad).is_err(), "{bad}");
        }
        assert!(FxRate::parse("1").and_then(|rate| rate.with_markup_bps(10_000)).is_err());
    }
}
