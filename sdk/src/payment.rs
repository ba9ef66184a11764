//! The payment a plugin decides on.

use std::collections::BTreeMap;

use crate::money::Money;

/// One payment, already checked by the host: the accounts exist, the currency is valid and
/// matches both accounts, the amount is within 1 ..= 2^53-1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// The client's idempotency key.
    pub id: String,
    /// Account debited.
    pub payer: String,
    /// Account credited.
    pub payee: String,
    /// The amount before fees.
    pub amount: Money,
    /// The payment method that routed the payment here.
    pub method: String,
    /// Method specific details.
    pub details: BTreeMap<String, String>,
    /// Client metadata.
    pub metadata: BTreeMap<String, String>,
    /// When the host accepted the payment, milliseconds since the Unix epoch. Use it instead
    /// of a clock: a decision must be a pure function of its input.
    pub received_at_ms: u64,
}

impl Payment {
    /// The method detail `key`, if the client sent it.
    pub fn detail(&self, key: &str) -> Option<&str> {
        self.details.get(key).map(String::as_str)
    }
}
