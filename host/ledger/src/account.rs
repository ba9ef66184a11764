//! What an account is: its kind, currency, balance and floor, and the ledger's own accounts.
//! Types only: the store reads rows into them and the decision decides on them.

use serde::Serialize;

use crate::error::LedgerError;
use wasmpay_protocol::money::{Currency, MinorUnits, Unit};
use wasmpay_protocol::routing::AccountId;

/// What an account is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// A client's account: pays and is paid.
    Customer,
    /// Collects the fees of one currency.
    Fees,
    /// Where deposits come from; no floor.
    External,
    /// The ledger's position in one currency from cross-border payments: credited with what
    /// payers pay in it, debited by what payees are paid in it. No floor: it is the money
    /// changed, and its balance, currency by currency, is what the operator settles with its
    /// FX provider.
    Fx,
}

impl AccountKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AccountKind::Customer => "customer",
            AccountKind::Fees => "fees",
            AccountKind::External => "external",
            AccountKind::Fx => "fx",
        }
    }

    pub(crate) fn parse(kind: &str) -> Result<AccountKind, LedgerError> {
        match kind {
            "customer" => Ok(AccountKind::Customer),
            "fees" => Ok(AccountKind::Fees),
            "external" => Ok(AccountKind::External),
            "fx" => Ok(AccountKind::Fx),
            other => Err(LedgerError::Corrupt(format!("account kind `{other}`"))),
        }
    }
}

/// An account and its balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Account {
    /// Account id.
    pub id: AccountId,
    /// The only unit it holds: a currency or a registered asset.
    pub currency: Unit,
    /// Posted minor units.
    pub balance: MinorUnits,
    /// What its open authorizations reserve: never negative, and the floor applies to the
    /// available balance, `balance - held`.
    pub held: MinorUnits,
    /// The lowest the balance may go; `None` for no floor.
    pub floor: Option<MinorUnits>,
    /// What it is for.
    pub kind: AccountKind,
}

/// A customer account to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAccount {
    /// Account id (not starting with `_`, which is reserved for the ledger's own accounts).
    pub id: AccountId,
    /// Its currency, or a registered asset.
    pub currency: Unit,
    /// Its floor: 0 for a plain account, negative for a credit line.
    pub floor: MinorUnits,
}

/// The fee account of a unit, credited with every fee and debited by what refunds give back.
pub fn fee_account(currency: Unit) -> AccountId {
    system_account("fees", currency)
}

/// The external funding account of a unit, debited by deposits. It has no floor, so its
/// negative balance is the money (or the asset) that entered the ledger.
pub fn external_account(currency: Unit) -> AccountId {
    system_account("external", currency)
}

/// The FX account of a currency: the source side of a cross-border payment is credited to it,
/// the counter side debited from it, so every currency's entries still sum to zero.
pub fn fx_account(currency: Currency) -> AccountId {
    system_account("fx", Unit::Currency(currency))
}

fn system_account(kind: &str, currency: Unit) -> AccountId {
    AccountId::new(format!("_{kind}_{currency}")).unwrap_or_else(|_| unreachable!("system ids are valid"))
}
