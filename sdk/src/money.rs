//! Money as integer minor units. No floats: percentages are basis points (1 bp = 0.01 %), and
//! amounts written in major units (`"12.50"`) are parsed exactly, with the currency's ISO 4217
//! exponent ([`exponent`]), and refused when they have more decimals than it.
//!
//! Rounding rule, used by every fee helper: **round half up at the minor unit**. The exact
//! product `amount × bp / 10 000` is computed in 128-bit integers and a remainder of half a minor
//! unit or more rounds away from zero. 2.9 % of 1 050 cents is 30.45 → 30; of 1 550 is 44.95 → 45.

use std::fmt;

/// An amount in minor units of an ISO 4217 currency.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Money {
    minor_units: u64,
    currency: String,
}

/// Arithmetic that would leave the representable range or mix currencies, and amounts or
/// currencies that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoneyError {
    /// The result does not fit in 64 bits of minor units.
    Overflow,
    /// The operands are in different currencies.
    CurrencyMismatch,
    /// Not an ISO 4217 code with a minor unit.
    UnknownCurrency(String),
    /// Not a decimal amount (`12`, `12.5`, `0.05`), or more decimals than its currency has.
    InvalidAmount(String),
}

impl fmt::Display for MoneyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MoneyError::Overflow => f.write_str("amount overflows 64-bit minor units"),
            MoneyError::CurrencyMismatch => f.write_str("amounts are in different currencies"),
            MoneyError::UnknownCurrency(code) => write!(f, "`{code}` is not an ISO 4217 currency with a minor unit"),
            MoneyError::InvalidAmount(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for MoneyError {}

/// Digits after the decimal point of `currency`'s major unit, from ISO 4217: 2 for EUR, 0 for
/// JPY, 3 for KWD. The host has already checked every currency it shows a plugin.
pub fn exponent(currency: &str) -> Result<u8, MoneyError> {
    iso_currency::Currency::from_code(currency)
        .and_then(iso_currency::Currency::exponent)
        .and_then(|exponent| u8::try_from(exponent).ok())
        .ok_or_else(|| MoneyError::UnknownCurrency(currency.to_owned()))
}

/// A non-negative decimal as written (`"1.5"`, `"0.05"`): its digits and how many of them
/// follow the point. Kept exact until it meets a currency's exponent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Decimal {
    digits: u64,
    scale: u32,
}

impl Decimal {
    /// Its digits and how many of them follow the point.
    pub(crate) fn parts(self) -> (u64, u32) {
        (self.digits, self.scale)
    }

    /// `text` as `DIGITS[.DIGITS]`, at most 18 digits in all.
    pub(crate) fn parse(text: &str) -> Result<Decimal, MoneyError> {
        let invalid = || MoneyError::InvalidAmount(format!("`{text}` is not a decimal amount like 12 or 0.05"));
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits_only = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits_only(whole)
            || !digits_only(fraction)
            || (text.contains('.') && fraction.is_empty())
        {
            return Err(invalid());
        }
        if whole.len() + fraction.len() > 18 {
            return Err(MoneyError::Overflow);
        }
        let digits = format!("{whole}{fraction}").parse().map_err(|_| invalid())?;
        Ok(Decimal { digits, scale: u32::try_from(fraction.len()).map_err(|_| invalid())? })
    }

    /// The value times 10^`exponent`, exactly, or an error naming what would be lost.
    pub(crate) fn scaled(self, exponent: u32, what: &str) -> Result<u64, MoneyError> {
        if exponent >= self.scale {
            let factor = 10_u64.checked_pow(exponent - self.scale).ok_or(MoneyError::Overflow)?;
            return self.digits.checked_mul(factor).ok_or(MoneyError::Overflow);
        }
        let divisor = 10_u64.pow(self.scale - exponent);
        if !self.digits.is_multiple_of(divisor) {
            return Err(MoneyError::InvalidAmount(format!("{self} has more decimals than {what} allows ({exponent})")));
        }
        Ok(self.digits / divisor)
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scale = usize::try_from(self.scale).unwrap_or(0);
        let padded = format!("{:0>width$}", self.digits, width = scale + 1);
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        if fraction.is_empty() { f.write_str(whole) } else { write!(f, "{whole}.{fraction}") }
    }
}

const BASIS_POINTS_PER_UNIT: u128 = 10_000;

impl Money {
    /// `minor_units` of `currency` (an upper-case ISO 4217 code, checked by the host).
    pub fn new(minor_units: u64, currency: impl Into<String>) -> Self {
        Money { minor_units, currency: currency.into() }
    }

    /// `major` units of `currency` written as a decimal (`"12.50"`, `"0.05"`, `"1000"`),
    /// exactly: `12.50` EUR is 1 250 cents, `"0.5"` JPY is refused (the yen has no decimals).
    pub fn from_major(major: &str, currency: impl Into<String>) -> Result<Money, MoneyError> {
        let currency = currency.into();
        let minor_units = Decimal::parse(major)?.scaled(u32::from(exponent(&currency)?), &currency)?;
        Ok(Money { minor_units, currency })
    }

    /// Digits after the decimal point of its currency's major unit ([`exponent`]).
    pub fn exponent(&self) -> Result<u8, MoneyError> {
        exponent(&self.currency)
    }

    /// The amount in minor units.
    pub fn minor_units(&self) -> u64 {
        self.minor_units
    }

    /// The ISO 4217 code.
    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// `basis_points` / 10 000 of this amount, rounded half up at the minor unit.
    pub fn basis_points(&self, basis_points: u32) -> Result<Money, MoneyError> {
        let exact = u128::from(self.minor_units) * u128::from(basis_points);
        let rounded = (exact + BASIS_POINTS_PER_UNIT / 2) / BASIS_POINTS_PER_UNIT;
        let minor_units = u64::try_from(rounded).map_err(|_| MoneyError::Overflow)?;
        Ok(Money::new(minor_units, self.currency.clone()))
    }

    /// The sum, or an error on overflow or a currency mismatch.
    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch);
        }
        let minor_units = self.minor_units.checked_add(other.minor_units).ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor_units, self.currency.clone()))
    }

    /// The smaller of the two amounts (same currency).
    pub fn min(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch);
        }
        Ok(if other.minor_units < self.minor_units { other } else { self })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (minor units)", self.minor_units, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(minor_units: u64) -> Money {
        Money::new(minor_units, "EUR")
    }

    #[test]
    fn basis_points_round_half_up() {
        assert_eq!(eur(1_050).basis_points(290), Ok(eur(30))); // 30.45
        assert_eq!(eur(1_550).basis_points(290), Ok(eur(45))); // 44.95
        assert_eq!(eur(50).basis_points(100), Ok(eur(1))); // 0.5 rounds up
        assert_eq!(eur(49).basis_points(100), Ok(eur(0))); // 0.49 rounds down
        assert_eq!(eur(10_000).basis_points(100), Ok(eur(100))); // exact
        assert_eq!(eur(0).basis_points(9_999), Ok(eur(0)));
    }

    #[test]
    fn basis_points_of_the_largest_amounts_do_not_overflow() {
        let max_payment = eur((1 << 53) - 1);
        assert_eq!(max_payment.basis_points(10_000), Ok(max_payment.clone()));
        assert_eq!(eur(u64::MAX).basis_points(10_000), Ok(eur(u64::MAX)));
        assert_eq!(eur(u64::MAX).basis_points(10_001), Err(MoneyError::Overflow));
    }

    #[test]
    fn addition_is_checked_and_commutes() {
        assert_eq!(eur(1).checked_add(&eur(2)), eur(2).checked_add(&eur(1)));
        assert_eq!(eur(u64::MAX).checked_add(&eur(1)), Err(MoneyError::Overflow));
        assert_eq!(eur(1).checked_add(&Money::new(1, "USD")), Err(MoneyError::CurrencyMismatch));
    }

    #[test]
    fn major_units_are_parsed_exactly_with_the_currencys_exponent() {
        assert_eq!(Money::from_major("12.50", "EUR"), Ok(eur(1_250)));
        assert_eq!(Money::from_major("0.05", "EUR"), Ok(eur(5)));
        assert_eq!(Money::from_major("7", "EUR"), Ok(eur(700)));
        assert_eq!(Money::from_major("1500", "JPY"), Ok(Money::new(1_500, "JPY")));
        assert_eq!(Money::from_major("1500.00", "JPY"), Ok(Money::new(1_500, "JPY")));
        assert_eq!(Money::from_major("1.234", "KWD"), Ok(Money::new(1_234, "KWD")));
        assert_eq!(Money::from_major("2500", "TZS").map(|money| money.minor_units()), Ok(250_000));
        assert!(matches!(Money::from_major("0.5", "JPY"), Err(MoneyError::InvalidAmount(_))));
        assert!(matches!(Money::from_major("0.001", "EUR"), Err(MoneyError::InvalidAmount(_))));
        for bad in ["", ".5", "5.", "1,5", "-1", "1e3", "1.2.3", " 1"] {
            assert!(matches!(Money::from_major(bad, "EUR"), Err(MoneyError::InvalidAmount(_))), "{bad}");
        }
        assert_eq!(Money::from_major("99999999999999999.99", "EUR"), Err(MoneyError::Overflow));
        assert_eq!(Money::from_major("1", "XYZ"), Err(MoneyError::UnknownCurrency("XYZ".into())));
        assert_eq!((eur(1).exponent(), exponent("JPY"), exponent("BHD")), (Ok(2), Ok(0), Ok(3)));
    }

    #[test]
    fn min_keeps_the_smaller_amount() {
        assert_eq!(eur(5).min(eur(3)), Ok(eur(3)));
        assert_eq!(eur(3).min(eur(5)), Ok(eur(3)));
        assert_eq!(eur(3).min(Money::new(1, "USD")), Err(MoneyError::CurrencyMismatch));
    }
}
