//! The backend boundary: one ledger over SQLite (the embedded default) or PostgreSQL (the
//! scale and cluster backend), chosen by the database URL.
//!
//! What both backends do alike is written once: the batch decision is pure code (`batch`),
//! and SQL that both dialects accept (`$1` placeholders work in sqlx's SQLite driver too) runs
//! on either through [`on_store!`]. What differs lives in `sqlite` and `postgres`: how a write
//! locks (the whole database, or the payers' rows), how a batch is bound (`VALUES` lists, or one
//! array per column), and how each is connected and migrated.

use super::{LedgerError, LedgerSettings, postgres::Postgres, sqlite::Sqlite};

/// Runs `$body` with `$backend` bound to whichever backend `$store` is. The body is compiled
/// once per backend, so the same SQL text and bind calls run on either connection type.
macro_rules! on_store {
    ($store:expr, $backend:ident => $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite($backend) => $body,
            $crate::store::Store::Postgres($backend) => $body,
        }
    };
}
pub(crate) use on_store;

/// An account's balance as SQL over the `accounts` row: the row's balance plus its credit
/// sub-balances. The cast keeps the type `BIGINT` on PostgreSQL, whose `SUM` widens.
macro_rules! balance_with_credits {
    () => {
        "CAST(balance + COALESCE((SELECT SUM(c.amount) FROM account_credits c WHERE c.account_id = accounts.id), 0) AS BIGINT)"
    };
}
pub(crate) use balance_with_credits;

/// The columns of an [`AccountRow`](super::accounts::AccountRow), over the `accounts` table.
macro_rules! account_columns {
    () => {
        concat!("id, currency, ", $crate::store::balance_with_credits!(), ", floor, kind")
    };
}
pub(crate) use account_columns;

/// A ledger database.
#[derive(Clone, Debug)]
pub(crate) enum Store {
    Sqlite(Sqlite),
    Postgres(Postgres),
}

impl Store {
    /// Opens the database at `url`: `sqlite://…` or `postgres://…` (`postgresql://…`).
    pub(crate) async fn connect(url: &str, settings: &LedgerSettings) -> Result<Store, LedgerError> {
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(Sqlite::connect(url, settings).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(Postgres::connect(url, settings).await?))
        } else {
            Err(LedgerError::UnsupportedUrl(url.split(':').next().unwrap_or_default().to_owned()))
        }
    }

    /// Waits for running queries and closes every connection.
    pub(crate) async fn close(&self) {
        on_store!(self, backend => backend.pool.close().await);
    }
}
