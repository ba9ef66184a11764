//! Money on the host side: ISO 4217 currencies and signed minor-unit amounts with checked
//! arithmetic. Balances and ledger entries are `i64` minor units (signed: entries are debits
//! and credits); payment amounts on the wire are bounded by [`MAX_PAYMENT_MINOR_UNITS`] so that
//! every client language can hold them exactly (JavaScript numbers are exact up to 2^53 - 1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The largest amount of one payment: 2^53 - 1 minor units.
pub const MAX_PAYMENT_MINOR_UNITS: u64 = (1 << 53) - 1;

/// ISO 4217 alphabetic codes this host accepts, with their minor-unit exponent.
/// Funds and precious metals (XAU, XDR, ...) are deliberately absent.
const ISO_4217: &[(&str, u8)] = &[
    ("AED", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("MAD", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PEN", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("QAR", 2),
    ("RON", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("USD", 2),
    ("UYU", 2),
    ("VND", 0),
    ("ZAR", 2),
];

/// An ISO 4217 currency this host knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency {
    code: &'static str,
    exponent: u8,
}

/// A currency code that is not an active ISO 4217 code known to this host.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a supported ISO 4217 currency code")]
pub struct UnknownCurrency(pub String);

impl Currency {
    /// The alphabetic code, e.g. `EUR`.
    pub fn code(self) -> &'static str {
        self.code
    }

    /// Digits after the decimal point in the major unit (2 for EUR, 0 for JPY).
    pub fn exponent(self) -> u8 {
        self.exponent
    }

    /// `minor_units` written in major units, e.g. `-12.05` for -1205 EUR cents.
    pub fn format(self, minor_units: i64) -> String {
        if self.exponent == 0 {
            return minor_units.to_string();
        }
        let scale = 10_u64.pow(u32::from(self.exponent));
        let magnitude = minor_units.unsigned_abs();
        let sign = if minor_units < 0 { "-" } else { "" };
        let width = usize::from(self.exponent);
        format!("{sign}{}.{:0width$}", magnitude / scale, magnitude % scale)
    }
}

impl FromStr for Currency {
    type Err = UnknownCurrency;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        ISO_4217
            .binary_search_by(|(known, _)| (*known).cmp(code))
            .map(|index| Currency { code: ISO_4217[index].0, exponent: ISO_4217[index].1 })
            .map_err(|_| UnknownCurrency(code.to_owned()))
    }
}

impl TryFrom<String> for Currency {
    type Error = UnknownCurrency;

    fn try_from(code: String) -> Result<Self, Self::Error> {
        code.parse()
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> String {
        currency.code.to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

/// Who bears a payment's fee, as the fee policy plugin quoted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeeBearer {
    /// The payer is debited amount + fee; the payee receives the amount.
    Payer,
    /// The payer is debited the amount; the payee receives amount - fee.
    Payee,
}

impl FeeBearer {
    /// The snake_case name, as on the wire and in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            FeeBearer::Payer => "payer",
            FeeBearer::Payee => "payee",
        }
    }
}

/// A signed amount of minor units: a balance, an entry or a floor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MinorUnits(pub i64);

/// Arithmetic on minor units left the 64-bit range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("amount overflows 64-bit minor units")]
pub struct Overflow;

impl MinorUnits {
    /// Zero.
    pub const ZERO: MinorUnits = MinorUnits(0);

    /// A payment or deposit amount: `value` if it is within 1 ..= [`MAX_PAYMENT_MINOR_UNITS`].
    pub fn payment_amount(value: u64) -> Option<MinorUnits> {
        (1..=MAX_PAYMENT_MINOR_UNITS).contains(&value).then(|| MinorUnits(value.cast_signed()))
    }

    /// A payment amount (at most 2^53 - 1, so always representable).
    pub fn from_unsigned(value: u64) -> Result<MinorUnits, Overflow> {
        i64::try_from(value).map(MinorUnits).map_err(|_| Overflow)
    }

    /// `self + other`, or an error on overflow.
    pub fn checked_add(self, other: MinorUnits) -> Result<MinorUnits, Overflow> {
        self.0.checked_add(other.0).map(MinorUnits).ok_or(Overflow)
    }

    /// `self - other`, or an error on overflow.
    pub fn checked_sub(self, other: MinorUnits) -> Result<MinorUnits, Overflow> {
        self.0.checked_sub(other.0).map(MinorUnits).ok_or(Overflow)
    }

    /// `-self`, or an error for `i64::MIN`.
    pub fn checked_neg(self) -> Result<MinorUnits, Overflow> {
        self.0.checked_neg().map(MinorUnits).ok_or(Overflow)
    }
}

impl fmt::Display for MinorUnits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_for_binary_search() {
        assert!(ISO_4217.windows(2).all(|pair| pair[0].0 < pair[1].0));
    }

    #[test]
    fn parses_known_codes_only() {
        let eur: Currency = "EUR".parse().expect("EUR");
        assert_eq!((eur.code(), eur.exponent()), ("EUR", 2));
        assert_eq!("JPY".parse::<Currency>().map(Currency::exponent), Ok(0));
        for bad in ["eur", "EURO", "", "XXX", "XAU", "E1R"] {
            assert!(bad.parse::<Currency>().is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_in_major_units() {
        let eur: Currency = "EUR".parse().expect("EUR");
        assert_eq!(eur.format(1_205), "12.05");
        assert_eq!(eur.format(-5), "-0.05");
        assert_eq!(eur.format(0), "0.00");
        let bhd: Currency = "BHD".parse().expect("BHD");
        assert_eq!(bhd.format(1_000_001), "1000.001");
        let jpy: Currency = "JPY".parse().expect("JPY");
        assert_eq!(jpy.format(-1_500), "-1500");
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(MinorUnits(1).checked_add(MinorUnits(2)), Ok(MinorUnits(3)));
        assert_eq!(MinorUnits(i64::MAX).checked_add(MinorUnits(1)), Err(Overflow));
        assert_eq!(MinorUnits(i64::MIN).checked_sub(MinorUnits(1)), Err(Overflow));
        assert_eq!(MinorUnits(i64::MIN).checked_neg(), Err(Overflow));
        assert_eq!(MinorUnits::from_unsigned(MAX_PAYMENT_MINOR_UNITS), Ok(MinorUnits((1 << 53) - 1)));
        assert_eq!(MinorUnits::from_unsigned(u64::MAX), Err(Overflow));
        assert_eq!(MinorUnits::payment_amount(MAX_PAYMENT_MINOR_UNITS), Some(MinorUnits((1 << 53) - 1)));
        assert_eq!(MinorUnits::payment_amount(0), None);
        assert_eq!(MinorUnits::payment_amount(MAX_PAYMENT_MINOR_UNITS + 1), None);
    }
}
