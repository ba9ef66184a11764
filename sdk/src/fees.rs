//! Fees written the way a price list states them: "1.5 %, at least 0.05", "2.9 % + 0.25",
//! "0.30, at most 5.00", in major units of the payment's currency, turned into an itemised
//! [`FeeQuote`] in minor units without hand conversion or floats.
//!
//! ```
//! use wasmpay_sdk::{FeeBearer, Money, fees::FeeRule};
//!
//! let rule = FeeRule::percent("1.5")?.at_least("0.05")?;
//! let quote = rule.quote(&Money::new(200, "EUR"), FeeBearer::Payee)?; // 1.5 % of 2.00 is 0.03
//! assert_eq!(quote.total(), 5);
//! # Ok::<(), wasmpay_sdk::MoneyError>(())
//! ```

use crate::decision::{FeeBearer, FeeQuote};
use crate::money::{Decimal, Money, MoneyError};

/// A percentage of the amount plus a fixed part, raised to a minimum and capped at a maximum.
/// The amounts are kept as written and converted with the currency's exponent when a payment
/// is quoted, so one rule serves every currency whose exponent its amounts fit (`0.05` suits
/// EUR and KWD, not JPY: quoting a yen payment with it is an error, never a rounding).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeeRule {
    basis_points: u32,
    fixed: Option<Decimal>,
    minimum: Option<Decimal>,
    maximum: Option<Decimal>,
}

impl FeeRule {
    /// `percent` % of the amount (`"2.9"`, `"1.5"`, `"0.75"`): at most two decimals, one basis
    /// point, and at most 100 %.
    pub fn percent(percent: &str) -> Result<FeeRule, MoneyError> {
        let basis_points = Decimal::parse(percent)?.scaled(2, "a percentage in basis points")?;
        let basis_points = u32::try_from(basis_points)
            .ok()
            .filter(|points| *points <= 10_000)
            .ok_or_else(|| MoneyError::InvalidAmount(format!("{percent} % is more than the whole amount")))?;
        Ok(FeeRule { basis_points, ..FeeRule::default() })
    }

    /// A fixed fee of `amount` major units and no percentage.
    pub fn fixed(amount: &str) -> Result<FeeRule, MoneyError> {
        FeeRule::default().plus(amount)
    }

    /// Adds a fixed part of `amount` major units.
    pub fn plus(self, amount: &str) -> Result<FeeRule, MoneyError> {
        Ok(FeeRule { fixed: Some(Decimal::parse(amount)?), ..self })
    }

    /// Raises a smaller fee to `amount` major units (an extra `minimum` line).
    pub fn at_least(self, amount: &str) -> Result<FeeRule, MoneyError> {
        Ok(FeeRule { minimum: Some(Decimal::parse(amount)?), ..self })
    }

    /// Caps the fee at `amount` major units (the percentage part is cut first, then the
    /// fixed part).
    pub fn at_most(self, amount: &str) -> Result<FeeRule, MoneyError> {
        Ok(FeeRule { maximum: Some(Decimal::parse(amount)?), ..self })
    }

    /// The fee on `amount`, borne by `bearer`, itemised as `percentage`, `fixed` and
    /// `minimum` lines (zero lines left out). The percentage rounds half up at the minor unit
    /// ([`Money::basis_points`]). A fee borne by the payee is never more than the amount, which
    /// the host would refuse.
    pub fn quote(&self, amount: &Money, bearer: FeeBearer) -> Result<FeeQuote, MoneyError> {
        let exponent = u32::from(amount.exponent()?);
        let minor = |part: Option<Decimal>| part.map_or(Ok(0), |part| part.scaled(exponent, amount.currency()));
        let (fixed, minimum, maximum) = (minor(self.fixed)?, minor(self.minimum)?, minor(self.maximum)?);
        let mut percentage = amount.basis_points(self.basis_points)?.minor_units();
        let mut fixed = fixed;
        let mut cap = self.maximum.map_or(u64::MAX, |_| maximum);
        if bearer == FeeBearer::Payee {
            cap = cap.min(amount.minor_units());
        }
        percentage = percentage.min(cap);
        fixed = fixed.min(cap - percentage);
        let raised = minimum.min(cap).saturating_sub(percentage + fixed);
        [("percentage", percentage), ("fixed", fixed), ("minimum", raised)]
            .into_iter()
            .filter(|(_, minor_units)| *minor_units > 0)
            .try_fold(FeeQuote::free(bearer), |quote, (label, minor_units)| quote.with_line(label, minor_units))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(minor_units: u64) -> Money {
        Money::new(minor_units, "EUR")
    }

    fn lines(quote: &FeeQuote) -> Vec<(&str, u64)> {
        quote.lines().iter().map(|line| (line.label.as_str(), line.minor_units)).collect()
    }

    #[test]
    fn a_percentage_plus_a_fixed_part_is_itemised() {
        let rule = FeeRule::percent("2.9").and_then(|rule| rule.plus("0.25")).expect("rule");
        let quote = rule.quote(&eur(10_000), FeeBearer::Payee).expect("quote");
        assert_eq!((quote.total(), lines(&quote)), (315, vec![("percentage", 290), ("fixed", 25)]));
    }

    #[test]
    fn a_minimum_tops_up_and_a_maximum_cuts_the_percentage_first() {
        let rule = FeeRule::percent("1.5").and_then(|rule| rule.at_least("0.05")).expect("rule");
        let small = rule.quote(&eur(200), FeeBearer::Payer).expect("quote");
        assert_eq!(lines(&small), [("percentage", 3), ("minimum", 2)]);
        assert_eq!(rule.quote(&eur(10_000), FeeBearer::Payer).map(|quote| quote.total()), Ok(150));
        let capped = FeeRule::percent("2").and_then(|rule| rule.plus("1.00")).and_then(|rule| rule.at_most("5.00"));
        let quote = capped.expect("rule").quote(&eur(1_000_000), FeeBearer::Payer).expect("quote");
        assert_eq!(lines(&quote), [("percentage", 500)]);
    }

    #[test]
    fn a_fee_the_payee_bears_never_exceeds_the_amount() {
        let rule = FeeRule::fixed("0.30").expect("rule");
        assert_eq!(rule.quote(&eur(10), FeeBearer::Payee).map(|quote| quote.total()), Ok(10));
        assert_eq!(rule.quote(&eur(10), FeeBearer::Payer).map(|quote| quote.total()), Ok(30));
    }

    #[test]
    fn amounts_meet_each_currencys_exponent_exactly() {
        let rule = FeeRule::percent("1").and_then(|rule| rule.at_least("0.05")).expect("rule");
        assert_eq!(rule.quote(&Money::new(1_000, "KWD"), FeeBearer::Payer).map(|quote| quote.total()), Ok(50));
        assert!(matches!(rule.quote(&Money::new(1_000, "JPY"), FeeBearer::Payer), Err(MoneyError::InvalidAmount(_))));
        let yen = FeeRule::percent("1").and_then(|rule| rule.at_least("5")).expect("rule");
        assert_eq!(yen.quote(&Money::new(100, "JPY"), FeeBearer::Payer).map(|quote| quote.total()), Ok(5));
    }

    #[test]
    fn percentages_are_basis_points_at_most_the_whole() {
        assert!(FeeRule::percent("0.01").is_ok());
        assert!(FeeRule::percent("100").is_ok());
        for bad in ["0.005", "100.01", "-1", "1,5", "abc", ""] {
            assert!(FeeRule::percent(bad).is_err(), "{bad}");
        }
    }
}
