//! Opening and reading accounts.

use std::collections::HashMap;

use serde::Serialize;

use super::store::on_store;
use super::{Ledger, LedgerError, external_account, fee_account, parse_account_id, parse_currency};
use wasmpay_protocol::money::{Currency, MinorUnits};
use wasmpay_protocol::routing::AccountId;

/// What an account is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// A client's account: pays and is paid.
    Customer,
    /// Collects the fees of one currency.
    Fees,
    /// Where deposits come from; no floor.
    External,
}

impl AccountKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            AccountKind::Customer => "customer",
            AccountKind::Fees => "fees",
            AccountKind::External => "external",
        }
    }

    fn parse(kind: &str) -> Result<AccountKind, LedgerError> {
        match kind {
            "customer" => Ok(AccountKind::Customer),
            "fees" => Ok(AccountKind::Fees),
            "external" => Ok(AccountKind::External),
            other => Err(LedgerError::Corrupt(format!("account kind `{other}`"))),
        }
    }
}

/// An account and its balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Account {
    /// Account id.
    #[serde(serialize_with = "serialize_id")]
    pub id: AccountId,
    /// The only currency it holds.
    pub currency: Currency,
    /// Minor units.
    pub balance: MinorUnits,
    /// The lowest the balance may go; `None` for no floor.
    pub floor: Option<MinorUnits>,
    /// What it is for.
    pub kind: AccountKind,
}

fn serialize_id<S: serde::Serializer>(id: &AccountId, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(id.as_str())
}

/// A customer account to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAccount {
    /// Account id (not starting with `_`, which is reserved for the ledger's own accounts).
    pub id: AccountId,
    /// Its currency.
    pub currency: Currency,
    /// Its floor: 0 for a plain account, negative for a credit line.
    pub floor: MinorUnits,
}

pub(super) type AccountRow = (String, String, i64, Option<i64>, String);

impl Ledger {
    /// Opens a customer account, and the fee and external accounts of its currency if this is
    /// the currency's first account. Opening the same account again with the same terms is a
    /// no-op (so a client can retry); with other terms it is [`LedgerError::AccountExists`].
    pub async fn open_account(&self, new: &NewAccount, now_ms: i64) -> Result<Account, LedgerError> {
        let system =
            [(fee_account(new.currency), AccountKind::Fees), (external_account(new.currency), AccountKind::External)];
        let account = on_store!(&self.store, backend => {
            let mut transaction = backend.begin_write().await?;
            for (id, kind) in &system {
                let floor = (*kind == AccountKind::Fees).then_some(0_i64);
                sqlx::query(
                    "INSERT INTO accounts (id, currency, floor, kind, created_at_ms) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(id.as_str())
                .bind(new.currency.code())
                .bind(floor)
                .bind(kind.as_str())
                .bind(now_ms)
                .execute(&mut *transaction)
                .await?;
            }
            sqlx::query(
                "INSERT INTO accounts (id, currency, floor, kind, created_at_ms) VALUES ($1, $2, $3, 'customer', $4)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(new.id.as_str())
            .bind(new.currency.code())
            .bind(new.floor.0)
            .bind(now_ms)
            .execute(&mut *transaction)
            .await?;
            let account = backend.accounts_in(&mut transaction, &[&new.id]).await?.remove(&new.id);
            transaction.commit().await?;
            account.ok_or_else(|| LedgerError::UnknownAccount(new.id.to_string()))?
        });
        let same_terms = account.kind == AccountKind::Customer
            && account.currency == new.currency
            && account.floor == Some(new.floor);
        if same_terms { Ok(account) } else { Err(LedgerError::AccountExists(new.id.to_string())) }
    }

    /// The account `id`, if it exists.
    pub async fn account(&self, id: &AccountId) -> Result<Option<Account>, LedgerError> {
        Ok(self.accounts(&[id]).await?.remove(id))
    }

    /// The accounts among `ids` that exist, by id, in one query.
    pub async fn accounts(&self, ids: &[&AccountId]) -> Result<HashMap<AccountId, Account>, LedgerError> {
        on_store!(&self.store, backend => {
            let mut connection = backend.pool.acquire().await?;
            backend.accounts_in(&mut connection, ids).await
        })
    }
}

/// Rows of [`AccountRow`] as accounts by id: what every backend's account read returns.
pub(super) fn accounts_by_id(rows: Vec<AccountRow>) -> Result<HashMap<AccountId, Account>, LedgerError> {
    rows.into_iter().map(|row| account_from_row(row).map(|account| (account.id.clone(), account))).collect()
}

fn account_from_row((id, currency, balance, floor, kind): AccountRow) -> Result<Account, LedgerError> {
    Ok(Account {
        id: parse_account_id(id)?,
        currency: parse_currency(&currency)?,
        balance: MinorUnits(balance),
        floor: floor.map(MinorUnits),
        kind: AccountKind::parse(&kind)?,
    })
}
