//! What an authorization holds: the amount (and a payer-borne fee) reserved on the payer until
//! a capture posts it, a void releases it, or the ledger releases it at its expiry. Types only:
//! the store reads rows into them and the decision decides on them.

use serde::Serialize;

use crate::error::LedgerError;
use wasmpay_protocol::PaymentId;
use wasmpay_protocol::money::{Currency, FeeBearer, MinorUnits};
use wasmpay_protocol::routing::AccountId;

/// Where a hold is in its life. It is opened once and closed once; nothing reopens it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    /// Reserved on the payer.
    Open,
    /// A capture posted (part of) it.
    Captured,
    /// A void released it.
    Voided,
    /// The ledger released it at its expiry (or a late capture or void found it expired).
    Expired,
}

impl HoldState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HoldState::Open => "open",
            HoldState::Captured => "captured",
            HoldState::Voided => "voided",
            HoldState::Expired => "expired",
        }
    }

    pub(crate) fn parse(state: &str) -> Result<HoldState, LedgerError> {
        match state {
            "open" => Ok(HoldState::Open),
            "captured" => Ok(HoldState::Captured),
            "voided" => Ok(HoldState::Voided),
            "expired" => Ok(HoldState::Expired),
            other => Err(LedgerError::Corrupt(format!("hold state `{other}`"))),
        }
    }
}

/// An authorization and its hold, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// The authorization's id.
    pub id: PaymentId,
    /// The account the hold is on.
    pub payer: AccountId,
    /// Who a capture pays.
    pub payee: AccountId,
    /// Currency of the authorization and both accounts.
    pub currency: Currency,
    /// The authorized amount, before fees.
    pub amount: MinorUnits,
    /// The fee quoted at authorization.
    pub fee: MinorUnits,
    /// Who bears the fee.
    pub fee_bearer: FeeBearer,
    /// What the hold reserves on the payer: the amount, plus the fee when the payer bears it.
    pub held: MinorUnits,
    /// When it lapses, on the ledger's clock.
    pub expires_at_ms: i64,
    /// Where it is in its life.
    pub state: HoldState,
    /// The amount a capture posted (zero unless captured).
    pub captured: MinorUnits,
    /// `name@version` of the plugins that decided the authorization.
    pub plugins: String,
    /// The payer's partition.
    pub partition: Option<u32>,
}
