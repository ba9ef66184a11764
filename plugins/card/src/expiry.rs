//! Card expiry dates: `MM/YY`, valid through the last day of that month (UTC).

use std::fmt;

use wasmpay_sdk::Rejection;

const MILLISECONDS_PER_DAY: u64 = 86_400_000;

/// The month a card expires at the end of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expiry {
    year: u32,
    month: u32,
}

impl Expiry {
    /// Parses `MM/YY` (years 2000-2099).
    pub fn parse(text: &str) -> Result<Expiry, Rejection> {
        let invalid = || Rejection::decline("invalid_expiry", format!("expiry `{text}` is not MM/YY"));
        let (month, year) = text.trim().split_once('/').ok_or_else(invalid)?;
        if month.len() != 2 || year.len() != 2 {
            return Err(invalid());
        }
        let month: u32 = month.parse().map_err(|_| invalid())?;
        let year: u32 = year.parse().map_err(|_| invalid())?;
        if !(1..=12).contains(&month) {
            return Err(invalid());
        }
        Ok(Expiry { year: 2000 + year, month })
    }

    /// Whether the card is expired at `now_ms` (milliseconds since the Unix epoch, UTC).
    pub fn is_past(self, now_ms: u64) -> bool {
        let (year, month) = year_month(now_ms / MILLISECONDS_PER_DAY);
        (self.year, self.month) < (year, month)
    }
}

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}/{:02}", self.month, self.year % 100)
    }
}

/// The proleptic Gregorian (year, month) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`, restricted to dates after the epoch).
fn year_month(days_since_epoch: u64) -> (u32, u32) {
    let shifted = days_since_epoch + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (u32::try_from(year).unwrap_or(u32::MAX), u32::try_from(month).unwrap_or(12))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_matches_known_dates() {
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(59), (1970, 3)); // 1970-03-01
        assert_eq!(year_month(11_016), (2000, 2)); // 2000-02-29
        assert_eq!(year_month(20_453), (2025, 12)); // 2025-12-31
        assert_eq!(year_month(20_454), (2026, 1)); // 2026-01-01
    }

    #[test]
    fn a_card_is_valid_through_the_end_of_its_month() {
        let expiry = Expiry::parse("12/25").expect("valid expiry");
        let last_day_of_2025 = 20_453 * MILLISECONDS_PER_DAY + MILLISECONDS_PER_DAY - 1;
        assert!(!expiry.is_past(last_day_of_2025));
        assert!(expiry.is_past(last_day_of_2025 + 1));
    }

    #[test]
    fn malformed_expiries_are_refused() {
        for text in ["", "1225", "13/25", "00/25", "1/25", "12/2025", "ab/cd"] {
            assert_eq!(Expiry::parse(text).map_err(|r| r.code), Err("invalid_expiry".to_owned()), "{text}");
        }
    }
}
