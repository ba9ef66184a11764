//! What a refund takes back: a payment or capture that moved money, and what its refunds have
//! moved back so far. Types only: the store reads rows into them and the decision decides on
//! them.

use wasmpay_protocol::PaymentId;
use wasmpay_protocol::money::{FeeBearer, MinorUnits, Unit};
use wasmpay_protocol::routing::AccountId;

/// A payment or capture that moved money, and what refunds have moved back of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refundable {
    /// Its id.
    pub id: PaymentId,
    /// Who paid: a refund credits it.
    pub payer: AccountId,
    /// Who was paid: a refund debits it.
    pub payee: AccountId,
    /// Currency of the payment and both accounts.
    pub currency: Unit,
    /// The amount it moved, before fees: the most all its refunds may move back.
    pub amount: MinorUnits,
    /// What its refunds have moved back so far.
    pub refunded: MinorUnits,
    /// Whether it moved money (an approved payment, a capture): nothing else can be refunded.
    pub posted: bool,
    /// `name@version` of the plugins that decided it.
    pub plugins: String,
    /// The fee it was charged.
    pub fee: MinorUnits,
    /// Who bore the fee.
    pub fee_bearer: FeeBearer,
    /// How much of the fee its refunds have given back so far.
    pub fee_reversed: MinorUnits,
    /// The method that decided it (a capture's is its authorization's).
    pub method: Option<String>,
    /// The client's metadata on it as a JSON object (a capture's is its authorization's).
    pub metadata: Option<String>,
    /// When it was decided, on the ledger's clock.
    pub at_ms: i64,
    /// Whether it was a cross-border payment (its payee was paid in another currency).
    pub converted: bool,
}
