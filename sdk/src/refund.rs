//! Refunds: what a plugin sees of a refund and the payment it gives money back from, and what
//! it answers ([`RefundFee`]).

use std::collections::BTreeMap;

use crate::decision::FeeBearer;
use crate::money::Money;

/// The payment a refund gives money back from, as the ledger recorded it. Its method details
/// (a card number, a token) are not here: the host never stores them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundedPayment {
    /// Its idempotency id.
    pub id: String,
    /// The account it debited; the refund credits it.
    pub payer: String,
    /// The account it credited; the refund debits it.
    pub payee: String,
    /// What it moved, before fees.
    pub amount: Money,
    /// The method that decided it.
    pub method: String,
    /// Client metadata on it.
    pub metadata: BTreeMap<String, String>,
    /// When the host accepted it, milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// The fee it was charged, in minor units.
    pub fee: u64,
    /// Who bore the fee.
    pub fee_bearer: FeeBearer,
    /// What its earlier refunds gave back, in minor units.
    pub refunded: u64,
    /// How much of its fee its earlier refunds gave back, in minor units.
    pub fee_reversed: u64,
}

impl RefundedPayment {
    /// The most of its fee that `refund` may give back: the fee prorated to what its refunds
    /// give back in all, rounded down, less what earlier refunds gave back. The host refuses a
    /// [`RefundFee::Reverse`] above it as a breach of the contract.
    pub fn reversible(&self, refund: &Refund) -> u64 {
        let amount = u128::from(self.amount.minor_units());
        if amount == 0 {
            return 0;
        }
        let refunded = u128::from(self.refunded.saturating_add(refund.amount.minor_units())).min(amount);
        let prorated = u128::from(self.fee) * refunded / amount;
        u64::try_from(prorated).unwrap_or(self.fee).saturating_sub(self.fee_reversed)
    }
}

/// One refund, as the host received and checked it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    /// The refund's own idempotency id.
    pub id: String,
    /// What it gives back: at most the payment's amount less what was refunded already.
    pub amount: Money,
    /// When the host accepted it, milliseconds since the Unix epoch.
    pub received_at_ms: u64,
}

/// What a refund costs, in minor units of the payment's currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundFee {
    /// No fee on the refund; the payment's fee stays charged (the host's default, and what a
    /// plugin that does not implement [`crate::Plugin::quote_refund_fee`] answers).
    Keep,
    /// Give this much of the payment's fee back to whoever bore it, at most
    /// [`RefundedPayment::reversible`].
    Reverse(u64),
    /// Charge the refunding payee this fee on top of the refund, within the method's fee limit.
    Charge(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paid(amount: u64, fee: u64, refunded: u64, fee_reversed: u64) -> RefundedPayment {
        RefundedPayment {
            id: "p1".into(),
            payer: "alice".into(),
            payee: "shop".into(),
            amount: Money::new(amount, "EUR"),
            method: "card".into(),
            metadata: BTreeMap::new(),
            received_at_ms: 0,
            fee,
            fee_bearer: FeeBearer::Payee,
            refunded,
            fee_reversed,
        }
    }

    fn refund(amount: u64) -> Refund {
        Refund { id: "r1".into(), amount: Money::new(amount, "EUR"), received_at_ms: 0 }
    }

    #[test]
    fn a_refund_may_give_back_the_fee_prorated_to_what_was_refunded_in_all() {
        // 315 on 10000: a third refunded gives back 105, rounded down.
        assert_eq!(paid(10_000, 315, 0, 0).reversible(&refund(3_333)), 104);
        assert_eq!(paid(10_000, 315, 3_333, 104).reversible(&refund(6_667)), 211);
        // A full refund gives back the whole fee, whatever earlier refunds kept.
        assert_eq!(paid(10_000, 315, 5_000, 0).reversible(&refund(5_000)), 315);
        assert_eq!(paid(10_000, 315, 10_000, 315).reversible(&refund(1)), 0);
        assert_eq!(paid(10_000, 0, 0, 0).reversible(&refund(10_000)), 0);
    }
}
