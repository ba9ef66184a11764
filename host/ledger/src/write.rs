//! Write transactions that cannot poison the pool. Every write runs in `BEGIN IMMEDIATE` (the
//! database's write lock is taken before any balance is read) on a connection of its own; if
//! anything fails before `COMMIT` succeeds, that connection is closed instead of going back to
//! the pool. After an I/O error (a full disk, a read-only file) SQLite and sqlx can leave a
//! connection inside a transaction that every later write on it trips over ("non-zero
//! transaction depth"); a closed connection is replaced by a fresh one, so the ledger heals by
//! itself as soon as the cause is gone.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqliteConnection, SqlitePool};

use super::{Ledger, LedgerError};

/// A write transaction. [`WriteTransaction::commit`] returns its connection to the pool;
/// dropping it any other way (an error, a panic) closes it.
pub(super) struct WriteTransaction {
    connection: Option<PoolConnection<Sqlite>>,
}

impl Ledger {
    /// Begins a write transaction, holding the database's write lock.
    pub(super) async fn begin_write(&self) -> Result<WriteTransaction, LedgerError> {
        WriteTransaction::begin(&self.pool).await
    }
}

impl WriteTransaction {
    /// Begins a write transaction on a connection of `pool`, holding the write lock.
    pub(super) async fn begin(pool: &SqlitePool) -> Result<WriteTransaction, LedgerError> {
        let mut transaction = WriteTransaction { connection: Some(pool.acquire().await?) };
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *transaction).await?;
        Ok(transaction)
    }

    /// Commits; the connection goes back to the pool only if the commit succeeded.
    pub(super) async fn commit(mut self) -> Result<(), LedgerError> {
        sqlx::query("COMMIT").execute(&mut *self).await?;
        self.connection.take();
        Ok(())
    }
}

impl Deref for WriteTransaction {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.connection.as_deref().unwrap_or_else(|| unreachable!("a transaction keeps its connection until it ends"))
    }
}

impl DerefMut for WriteTransaction {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.connection
            .as_deref_mut()
            .unwrap_or_else(|| unreachable!("a transaction keeps its connection until it ends"))
    }
}

impl Drop for WriteTransaction {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            // Detached, the connection is closed when dropped (SQLite rolls back what was not
            // committed) and the pool opens a new one when it needs one.
            drop(connection.detach());
        }
    }
}
