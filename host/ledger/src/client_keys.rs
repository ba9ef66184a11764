//! Client keys: what a client presents to pay over HTTP, issued and revoked by an operator.
//! The ledger keeps a key's id, name and the SHA-256 of its secret, never the secret: it is
//! shown once, when the key is issued, and a stolen database does not give the keys away.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::LedgerError;
use crate::handle::Ledger;
use crate::names::checked_name;
use crate::store::on_store;

/// A client key, without its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ClientKey {
    /// Its id, recorded on the payments made with it: `ck_` and 16 hex digits.
    pub id: String,
    /// What the operator called it.
    pub name: String,
    /// When it was issued (Unix milliseconds).
    pub created_at_ms: i64,
    /// When it was revoked, if it was.
    pub revoked_at_ms: Option<i64>,
}

/// A key just issued, with its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IssuedKey {
    /// The key.
    #[serde(flatten)]
    pub key: ClientKey,
    /// The secret a client sends as `Authorization: Bearer <secret>`: `wpk_` and 48 hex digits.
    pub secret: String,
}

/// The SHA-256 of a secret, as hex.
fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

const KEY_COLUMNS: &str = "id, name, created_at_ms, revoked_at_ms";

impl Ledger {
    /// Issues a key called `name`.
    pub async fn issue_client_key(&self, name: &str, now_ms: i64) -> Result<IssuedKey, LedgerError> {
        let name = checked_name(name, "a client key")?;
        let mut random = [0_u8; 24];
        getrandom::getrandom(&mut random)
            .map_err(|error| LedgerError::Invalid(format!("no randomness for a client key: {error}")))?;
        let secret: String =
            std::iter::once("wpk_".to_owned()).chain(random.iter().map(|byte| format!("{byte:02x}"))).collect();
        let hash = digest(&secret);
        let key = ClientKey {
            id: format!("ck_{}", &hash[..16]),
            name: name.to_owned(),
            created_at_ms: now_ms,
            revoked_at_ms: None,
        };
        on_store!(&self.store, backend => sqlx::query(
            "INSERT INTO client_keys (id, name, secret_sha256, created_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(&hash)
        .bind(now_ms)
        .execute(&backend.pool)
        .await
        .map(|_| ())?);
        Ok(IssuedKey { key, secret })
    }

    /// Every key, revoked ones too, oldest first.
    pub async fn client_keys(&self) -> Result<Vec<ClientKey>, LedgerError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM client_keys ORDER BY created_at_ms, id");
        let rows: Vec<(String, String, i64, Option<i64>)> =
            on_store!(&self.store, backend => sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&backend.pool).await?);
        Ok(rows.into_iter().map(key).collect())
    }

    /// Revokes key `id` (a revoked key stays revoked at its first revocation's time); `None`
    /// if there is no such key.
    pub async fn revoke_client_key(&self, id: &str, now_ms: i64) -> Result<Option<ClientKey>, LedgerError> {
        let sql = format!(
            "UPDATE client_keys SET revoked_at_ms = COALESCE(revoked_at_ms, $1) WHERE id = $2 RETURNING {KEY_COLUMNS}"
        );
        let row: Option<(String, String, i64, Option<i64>)> = on_store!(&self.store, backend => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(now_ms)
            .bind(id)
            .fetch_optional(&backend.pool)
            .await?);
        Ok(row.map(key))
    }

    /// The live key whose secret is `secret`, if any.
    pub async fn client_key(&self, secret: &str) -> Result<Option<ClientKey>, LedgerError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM client_keys WHERE secret_sha256 = $1 AND revoked_at_ms IS NULL");
        let row: Option<(String, String, i64, Option<i64>)> = on_store!(&self.store, backend => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(digest(secret))
            .fetch_optional(&backend.pool)
            .await?);
        Ok(row.map(key))
    }
}

fn key((id, name, created_at_ms, revoked_at_ms): (String, String, i64, Option<i64>)) -> ClientKey {
    ClientKey { id, name, created_at_ms, revoked_at_ms }
}
