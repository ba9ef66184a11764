//! The asset registry: units beyond ISO 4217 that an operator registers (a security, a
//! commodity, loyalty points), each with its exponent, before opening accounts in them.
//!
//! An asset is registered once and never changes or goes away: its exponent is how every
//! amount ever posted in it is read, so changing it would rewrite history. Registering the
//! same code again with the same terms is a no-op, so an operator can retry.

use serde::Serialize;

use crate::error::LedgerError;
use crate::handle::Ledger;
use crate::names::checked_name;
use crate::store::on_store;
use wasmpay_protocol::money::{AssetCode, MAX_EXPONENT, Unit};

/// A registered asset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Asset {
    /// Its code, e.g. `AAPL`.
    pub code: AssetCode,
    /// Digits after the decimal point of one unit, 0 ..= 15 (0 for a share, 8 for a coin).
    pub exponent: u8,
    /// What it is, for people.
    pub name: String,
    /// When it was registered (Unix milliseconds).
    pub created_at_ms: i64,
}

type AssetRow = (String, i64, String, i64);

fn asset(row: AssetRow) -> Result<Asset, LedgerError> {
    let (code, exponent, name, created_at_ms) = row;
    Ok(Asset {
        code: code.parse().map_err(|_| LedgerError::Corrupt(format!("asset code `{code}`")))?,
        exponent: u8::try_from(exponent).map_err(|_| LedgerError::Corrupt(format!("asset exponent {exponent}")))?,
        name,
        created_at_ms,
    })
}

impl Ledger {
    /// Registers `code` with `exponent` and `name`; the same terms again return the asset,
    /// other terms are [`LedgerError::AssetExists`].
    pub async fn register_asset(
        &self,
        code: AssetCode,
        exponent: u8,
        name: &str,
        now_ms: i64,
    ) -> Result<Asset, LedgerError> {
        if exponent > MAX_EXPONENT {
            return Err(LedgerError::Invalid(format!("an asset has an exponent within 0 ..= {MAX_EXPONENT}")));
        }
        let name = checked_name(name.trim(), "an asset")?;
        let row: AssetRow = on_store!(&self.store, backend => {
            let mut transaction = backend.begin_write().await?;
            sqlx::query(
                "INSERT INTO assets (code, exponent, name, created_at_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (code) DO NOTHING",
            )
            .bind(code.as_str())
            .bind(i16::from(exponent))
            .bind(name)
            .bind(now_ms)
            .execute(&mut *transaction)
            .await?;
            let row = sqlx::query_as("SELECT code, CAST(exponent AS BIGINT), name, created_at_ms FROM assets WHERE code = $1")
                .bind(code.as_str())
                .fetch_one(&mut *transaction)
                .await?;
            transaction.commit().await?;
            row
        });
        let registered = asset(row)?;
        if registered.exponent == exponent && registered.name == name {
            Ok(registered)
        } else {
            Err(LedgerError::AssetExists(code.as_str().to_owned()))
        }
    }

    /// Every registered asset, by code.
    pub async fn assets(&self) -> Result<Vec<Asset>, LedgerError> {
        let rows: Vec<AssetRow> = on_store!(&self.store, backend => sqlx::query_as(
            "SELECT code, CAST(exponent AS BIGINT), name, created_at_ms FROM assets ORDER BY code",
        )
        .fetch_all(&backend.pool)
        .await?);
        rows.into_iter().map(asset).collect()
    }

    /// The exponent of `unit`: a currency's from ISO 4217, an asset's from the registry
    /// (`None` when it is not registered).
    pub async fn exponent_of(&self, unit: Unit) -> Result<Option<u8>, LedgerError> {
        let code = match unit {
            Unit::Currency(currency) => return Ok(Some(currency.exponent())),
            Unit::Asset(code) => code,
        };
        let exponent: Option<i64> = on_store!(&self.store, backend => sqlx::query_scalar(
            "SELECT CAST(exponent AS BIGINT) FROM assets WHERE code = $1",
        )
        .bind(code.as_str())
        .fetch_optional(&backend.pool)
        .await?);
        exponent
            .map(|exponent| {
                u8::try_from(exponent).map_err(|_| LedgerError::Corrupt(format!("asset exponent {exponent}")))
            })
            .transpose()
    }
}
