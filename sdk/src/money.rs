//! Money as integer minor units. No floats: percentages are basis points (1 bp = 0.01 %).
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

/// Arithmetic that would leave the representable range, or mix currencies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoneyError {
    /// The result does not fit in 64 bits of minor units.
    Overflow,
    /// The operands are in different currencies.
    CurrencyMismatch,
}

impl fmt::Display for MoneyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MoneyError::Overflow => f.write_str("amount overflows 64-bit minor units"),
            MoneyError::CurrencyMismatch => f.write_str("amounts are in different currencies"),
        }
    }
}

impl std::error::Error for MoneyError {}

const BASIS_POINTS_PER_UNIT: u128 = 10_000;

impl Money {
    /// `minor_units` of `currency` (an upper-case ISO 4217 code, checked by the host).
    pub fn new(minor_units: u64, currency: impl Into<String>) -> Self {
        Money { minor_units, currency: currency.into() }
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
    fn min_keeps_the_smaller_amount() {
        assert_eq!(eur(5).min(eur(3)), Ok(eur(3)));
        assert_eq!(eur(3).min(eur(5)), Ok(eur(3)));
        assert_eq!(eur(3).min(Money::new(1, "USD")), Err(MoneyError::CurrencyMismatch));
    }
}
