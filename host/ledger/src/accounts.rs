//! Opening and reading accounts.

use std::collections::HashMap;

use wasmpay_protocol::money::Unit;
use wasmpay_protocol::routing::AccountId;

use crate::account::{Account, AccountKind, NewAccount, external_account, fee_account, fx_account};
use crate::error::LedgerError;
use crate::handle::Ledger;
use crate::store::on_store;

impl Ledger {
    /// Opens a customer account, and the fee, external and (for a currency) FX accounts of its
    /// unit if this is the unit's first account. An asset's account needs the asset registered first
    /// ([`LedgerError::UnknownAsset`]). Opening the same account again with the same terms is a
    /// no-op (so a client can retry); with other terms it is [`LedgerError::AccountExists`].
    pub async fn open_account(&self, new: &NewAccount, now_ms: i64) -> Result<Account, LedgerError> {
        // A currency's FX account too: a cross-border payment may pay into or out of it.
        let fx = new.currency.currency().map(|currency| (fx_account(currency), AccountKind::Fx));
        let system =
            [(fee_account(new.currency), AccountKind::Fees), (external_account(new.currency), AccountKind::External)]
                .into_iter()
                .chain(fx)
                .collect::<Vec<_>>();
        let account = on_store!(&self.store, backend => {
            let mut transaction = backend.begin_write().await?;
            // Assets are never removed, so a registration seen here holds when this commits.
            if let Unit::Asset(code) = new.currency {
                let registered: Option<String> = sqlx::query_scalar("SELECT code FROM assets WHERE code = $1")
                    .bind(code.as_str())
                    .fetch_optional(&mut *transaction)
                    .await?;
                if registered.is_none() {
                    return Err(LedgerError::UnknownAsset(code.as_str().to_owned()));
                }
            }
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
