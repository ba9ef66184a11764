//! What a plugin answers.

use crate::money::MoneyError;

/// Why a plugin declines a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Stable snake_case code, e.g. `card_expired`.
    pub code: String,
    /// Human readable explanation.
    pub message: String,
    /// Whether sending the same payment again later can succeed.
    pub retryable: bool,
}

impl Rejection {
    /// A refusal that will not change on retry (bad card number, expired card).
    pub fn decline(code: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection { code: code.into(), message: message.into(), retryable: false }
    }

    /// A refusal that a later retry may turn into an approval (a limit that resets).
    pub fn retry_later(code: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection { code: code.into(), message: message.into(), retryable: true }
    }
}

/// A fee that cannot be computed refuses the payment, so a fee policy can use `?` on money
/// arithmetic: an overflow is this payment's (`fee_overflow`, permanent); an amount that does
/// not fit the currency, or a currency without a minor unit, is the plugin's configuration
/// (`plugin_misconfigured`, retryable, as a configuration value that does not parse).
impl From<MoneyError> for Rejection {
    fn from(error: MoneyError) -> Rejection {
        match error {
            MoneyError::Overflow => Rejection::decline("fee_overflow", error.to_string()),
            other => Rejection::retry_later("plugin_misconfigured", other.to_string()),
        }
    }
}

/// Who bears a fee.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeeBearer {
    /// Debited amount + fee; the payee receives the amount.
    Payer,
    /// The payee receives amount − fee.
    Payee,
}

/// One itemised part of a fee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeeLine {
    /// What this part is for.
    pub label: String,
    /// Minor units of the payment's currency.
    pub minor_units: u64,
}

/// The fee for one payment. The total is always the checked sum of the lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeeQuote {
    lines: Vec<FeeLine>,
    total: u64,
    bearer: FeeBearer,
}

impl FeeQuote {
    /// No fee.
    pub fn free(bearer: FeeBearer) -> Self {
        FeeQuote { lines: Vec::new(), total: 0, bearer }
    }

    /// Adds a line; fails if the total would overflow.
    pub fn with_line(mut self, label: impl Into<String>, minor_units: u64) -> Result<Self, MoneyError> {
        self.total = self.total.checked_add(minor_units).ok_or(MoneyError::Overflow)?;
        self.lines.push(FeeLine { label: label.into(), minor_units });
        Ok(self)
    }

    /// Sum of the lines in minor units.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The itemised lines.
    pub fn lines(&self) -> &[FeeLine] {
        &self.lines
    }

    /// Who bears the fee.
    pub fn bearer(&self) -> FeeBearer {
        self.bearer
    }
}

/// What a plugin is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    /// Stable plugin name.
    pub name: String,
    /// Semantic version of this build.
    pub version: String,
    /// Methods served by default.
    pub methods: Vec<String>,
    /// Accepted ISO 4217 codes; empty means any.
    pub currencies: Vec<String>,
}

impl PluginInfo {
    /// A plugin `name`@`version` serving `methods` in any currency.
    pub fn new<M: Into<String>>(
        name: impl Into<String>,
        version: impl Into<String>,
        methods: impl IntoIterator<Item = M>,
    ) -> Self {
        PluginInfo {
            name: name.into(),
            version: version.into(),
            methods: methods.into_iter().map(Into::into).collect(),
            currencies: Vec::new(),
        }
    }

    /// Restricts the plugin to these currencies.
    pub fn with_currencies<C: Into<String>>(mut self, currencies: impl IntoIterator<Item = C>) -> Self {
        self.currencies = currencies.into_iter().map(Into::into).collect();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fee_total_is_the_checked_sum_of_lines() {
        let quote = FeeQuote::free(FeeBearer::Payee).with_line("percentage", 30).and_then(|q| q.with_line("fixed", 25));
        assert_eq!(quote.as_ref().map(FeeQuote::total), Ok(55));
        let overflow = FeeQuote::free(FeeBearer::Payee).with_line("a", u64::MAX).and_then(|q| q.with_line("b", 1));
        assert_eq!(overflow, Err(MoneyError::Overflow));
    }
}
