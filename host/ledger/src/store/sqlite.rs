//! The SQLite backend: the embedded default, one node, one file.
//!
//! One node: a ledger opened to serve ([`Sqlite::connect`] with `create`) holds an exclusive
//! `flock` on `<file>.lock` beside the database for its whole life, and a second one (another
//! process, or the same) is refused with [`LedgerError::SqliteInUse`]. Two nodes on one file
//! would take turns at its one write lock, so a paused node holding it would stall every
//! payment of the other; PostgreSQL is the backend for a cluster. The OS releases a `flock`
//! when its holder dies, so a crash leaves no stale lock to clean up. A ledger opened only to
//! inspect (`create` false: `wasmpay ledger verify`) takes no lock and works beside a node.
//! The lock is on a file of its own because SQLite's own locks are POSIX record locks, which a
//! process loses on the database file when it closes any descriptor of it.
//!
//! SQLite has one writer. Every write runs in `BEGIN IMMEDIATE`, which takes the database's
//! write lock before any balance is read, so a batch holds every row it reads. Writes use
//! multi-row `VALUES` lists (SQLite has no arrays), bounded by the batch size limit.
//!
//! A write transaction cannot poison the pool: if anything fails before `COMMIT` succeeds,
//! its connection is closed instead of going back to the pool. After an I/O error (a full
//! disk, a read-only file) SQLite and sqlx can leave a connection inside a transaction that
//! every later write on it trips over ("non-zero transaction depth"); a closed connection is
//! replaced by a fresh one, so the ledger heals by itself as soon as the cause is gone.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, TryLockError};
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Sqlite as Db, SqliteConnection, SqlitePool};
use wasmpay_protocol::PaymentId;
use wasmpay_protocol::routing::AccountId;

use super::schema;
use super::sql::{
    AccountRow, HoldRow, QuoteRow, RecordedRow, RefundableRow, SELECT_HOLDS, SELECT_QUOTES, SELECT_REFUNDABLES,
    account_columns, accounts_by_id, existing, holds, quotes, refundables,
};
use crate::account::Account;
use crate::decision::{Existing, Holds, Keys, NewPayment, Quotes, Refundables, Writes, fenced};
use crate::error::LedgerError;
use crate::settings::{Durability, LedgerSettings};

/// A SQLite ledger database.
#[derive(Clone, Debug)]
pub(crate) struct Sqlite {
    pub(crate) pool: SqlitePool,
    /// The node's lock file, held (locked) while the ledger serves; `None` inside once closed,
    /// and for a ledger opened only to inspect.
    lock: Arc<Mutex<Option<File>>>,
}

impl Sqlite {
    /// Opens the database at `url` (creating it if missing and `create`) and migrates it.
    pub(crate) async fn connect(url: &str, settings: &LedgerSettings, create: bool) -> Result<Sqlite, LedgerError> {
        let options = SqliteConnectOptions::from_str(url)?;
        if !create && !options.get_filename().exists() {
            return Err(LedgerError::NoLedger(options.get_filename().display().to_string()));
        }
        // Before the pool: a second node must not even migrate the file under the first.
        let lock = match create {
            true => Some(lock_for_one_node(options.get_filename())?),
            false => None,
        };
        let options = options
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match settings.synchronous {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        schema::migrator(schema::SQLITE).run(&pool).await?;
        Ok(Sqlite { pool, lock: Arc::new(Mutex::new(lock)) })
    }

    /// Waits for running transactions, closes every connection, then lets another node open
    /// the file.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
        drop(self.lock.lock().unwrap_or_else(PoisonError::into_inner).take());
    }

    /// Begins a write transaction, holding the database's write lock.
    pub(crate) async fn begin_write(&self) -> Result<WriteTransaction, LedgerError> {
        let mut transaction = WriteTransaction { connection: Some(self.pool.acquire().await?) };
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *transaction).await?;
        Ok(transaction)
    }

    /// Begins a read transaction: its queries see one snapshot, and WAL readers do not block
    /// the writer.
    pub(crate) async fn begin_snapshot(&self) -> Result<sqlx::Transaction<'static, Db>, LedgerError> {
        Ok(self.pool.begin().await?)
    }

    /// Takes the write lock a batch takes (within the 5 s busy timeout), reads the tables a
    /// batch reads, and commits a write of the database header (`user_version`, which nothing
    /// else uses): a full disk or a read-only file shows only when something is written. A
    /// disk whose last free pages fit this write but not a batch shows in the batches
    /// themselves (`Ledger::writable` asks them too).
    pub(crate) async fn probe_write(&self) -> Result<(), LedgerError> {
        let mut transaction = self.begin_write().await?;
        for read in [
            "SELECT count(*) FROM (SELECT 1 FROM accounts LIMIT 1)",
            "SELECT count(*) FROM (SELECT 1 FROM payments LIMIT 1)",
        ] {
            sqlx::query(read).execute(&mut *transaction).await?;
        }
        sqlx::query("PRAGMA user_version = 1").execute(&mut *transaction).await?;
        transaction.commit().await
    }

    /// Begins a batch's transaction and reads what it needs: the recorded ids and the
    /// accounts. The write lock holds every account, so the batch writes every change to the
    /// accounts' rows and never needs credit sub-balances.
    pub(crate) async fn begin_batch(
        &self,
        keys: &Keys,
    ) -> Result<(WriteTransaction, Existing, HashMap<AccountId, Account>, BTreeSet<AccountId>), LedgerError> {
        let mut transaction = self.begin_write().await?;
        let ids: Vec<&str> = keys.ids.iter().map(PaymentId::as_str).collect();
        let existing = self.recorded_in(&mut transaction, &ids).await?;
        let accounts = self.accounts_in(&mut transaction, &keys.touched.iter().collect::<Vec<_>>()).await?;
        Ok((transaction, existing, accounts, keys.touched.clone()))
    }

    /// The recorded payments among `ids`, by id.
    pub(crate) async fn recorded_in(
        &self,
        connection: &mut SqliteConnection,
        ids: &[&str],
    ) -> Result<Existing, LedgerError> {
        let sql = format!("SELECT id, request_hash, reply FROM payments WHERE id IN ({})", placeholders(ids.len(), 1));
        let mut query = sqlx::query_as::<_, RecordedRow>(AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(*id);
        }
        let rows = query.fetch_all(&mut *connection).await?;
        Ok(existing(rows))
    }

    /// The holds of the authorizations among `ids`, by id.
    pub(crate) async fn holds_in(connection: &mut SqliteConnection, ids: &[PaymentId]) -> Result<Holds, LedgerError> {
        if ids.is_empty() {
            return Ok(Holds::new());
        }
        let sql = format!("{SELECT_HOLDS} h.id IN ({})", placeholders(ids.len(), 1));
        let mut query = sqlx::query_as::<_, HoldRow>(AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(id.as_str());
        }
        holds(query.fetch_all(&mut *connection).await?)
    }

    /// The payments among `ids` that a refund may take back from, by id.
    pub(crate) async fn refundables_in(
        connection: &mut SqliteConnection,
        ids: &[PaymentId],
    ) -> Result<Refundables, LedgerError> {
        if ids.is_empty() {
            return Ok(Refundables::new());
        }
        let sql = format!("{SELECT_REFUNDABLES} p.id IN ({})", placeholders(ids.len(), 1));
        let mut query = sqlx::query_as::<_, RefundableRow>(AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(id.as_str());
        }
        refundables(query.fetch_all(&mut *connection).await?)
    }

    /// The FX quotes among `ids`, by id, with whether each was used.
    pub(crate) async fn quotes_in(connection: &mut SqliteConnection, ids: &[String]) -> Result<Quotes, LedgerError> {
        if ids.is_empty() {
            return Ok(Quotes::new());
        }
        let sql = format!("{SELECT_QUOTES} q.id IN ({})", placeholders(ids.len(), 1));
        let mut query = sqlx::query_as::<_, QuoteRow>(AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(id.as_str());
        }
        quotes(query.fetch_all(&mut *connection).await?)
    }

    /// The accounts among `ids`, by id, their credits included.
    pub(crate) async fn accounts_in(
        &self,
        connection: &mut SqliteConnection,
        ids: &[&AccountId],
    ) -> Result<HashMap<AccountId, Account>, LedgerError> {
        let sql = format!(
            concat!("SELECT ", account_columns!(), " FROM accounts WHERE id IN ({})"),
            placeholders(ids.len(), 1)
        );
        let mut query = sqlx::query_as::<_, AccountRow>(AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(id.as_str());
        }
        let rows = query.fetch_all(&mut *connection).await?;
        accounts_by_id(rows)
    }

    /// Writes a decided batch (held balances, credits, payments, entries: one statement
    /// each), uncommitted.
    pub(crate) async fn write_batch(transaction: &mut WriteTransaction, writes: &Writes) -> Result<(), LedgerError> {
        take_fences(transaction, &writes.fences).await?;
        if !writes.balances.is_empty() {
            let sql = format!(
                "UPDATE accounts SET balance = balance + new.column2, held = held + new.column3
                 FROM (VALUES {}) AS new WHERE accounts.id = new.column1",
                placeholders(writes.balances.len(), 3)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (account, change) in &writes.balances {
                query = query.bind(account.as_str()).bind(change.balance.0).bind(change.held.0);
            }
            let updated = query.execute(&mut **transaction).await?;
            if usize::try_from(updated.rows_affected()).ok() != Some(writes.balances.len()) {
                return Err(LedgerError::Corrupt("an account of the batch vanished".into()));
            }
        }
        if !writes.credits.is_empty() {
            let sql = format!(
                "INSERT INTO account_credits (account_id, shard, amount) VALUES {}
                 ON CONFLICT (account_id, shard) DO UPDATE SET amount = amount + excluded.amount",
                placeholders(writes.credits.len(), 3)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for ((account, shard), amount) in &writes.credits {
                query = query.bind(account.as_str()).bind(shard).bind(amount.0);
            }
            query.execute(&mut **transaction).await?;
        }
        if !writes.payments.is_empty() {
            let sql = format!(
                "INSERT INTO payments (id, kind, request_hash, status, code, payer, payee, currency, amount, fee,
                                       fee_bearer, plugins, partition, reply, created_at_ms, parent, method,
                                       metadata, client_key) VALUES {}",
                placeholders(writes.payments.len(), 19)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for NewPayment { transfer, decision, reply } in &writes.payments {
                let code = decision.code(&transfer.kind);
                query = query
                    .bind(transfer.id.as_str())
                    .bind(transfer.kind.as_str())
                    .bind(transfer.request_hash.as_str())
                    .bind(code.status().as_str())
                    .bind(code.as_str())
                    .bind(transfer.payer.as_str())
                    .bind(transfer.payee.as_str())
                    .bind(transfer.currency.code())
                    .bind(transfer.amount.0)
                    .bind(transfer.fee.0)
                    .bind(transfer.fee_bearer.as_str())
                    .bind(transfer.plugins.as_str())
                    .bind(transfer.partition.map(i64::from))
                    .bind(reply.as_str())
                    .bind(transfer.now_ms)
                    .bind(transfer.kind.parent().map(PaymentId::as_str))
                    .bind(transfer.method.as_deref())
                    .bind(transfer.metadata.as_deref())
                    .bind(transfer.client.as_deref());
            }
            query.execute(&mut **transaction).await?;
        }
        if !writes.entries.is_empty() {
            let sql = format!(
                "INSERT INTO entries (payment_id, account_id, amount) VALUES {}",
                placeholders(writes.entries.len(), 3)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for entry in &writes.entries {
                query = query.bind(entry.payment_id.as_str()).bind(entry.account.as_str()).bind(entry.amount.0);
            }
            query.execute(&mut **transaction).await?;
        }
        write_holds(transaction, writes).await
    }
}

/// Opens and closes the batch's holds and adds its refunds to their payments. A hold closed
/// twice would release its amount twice: the update takes only open holds and the batch fails
/// unless each was.
async fn write_holds(connection: &mut SqliteConnection, writes: &Writes) -> Result<(), LedgerError> {
    if !writes.opened.is_empty() {
        let sql = format!(
            "INSERT INTO holds (id, account_id, held, expires_at_ms, partition, state) VALUES {}",
            placeholders(writes.opened.len(), 6)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for hold in &writes.opened {
            query = query
                .bind(hold.id.as_str())
                .bind(hold.payer.as_str())
                .bind(hold.held.0)
                .bind(hold.expires_at_ms)
                .bind(hold.partition.map(i64::from))
                .bind("open");
        }
        query.execute(&mut *connection).await?;
    }
    for hold in &writes.closed {
        let updated = sqlx::query(
            "UPDATE holds SET state = $1, captured = $2, closed_by = $3, closed_at_ms = $4
             WHERE id = $5 AND state = 'open'",
        )
        .bind(hold.state.as_str())
        .bind(hold.captured.0)
        .bind(hold.closed_by.as_ref().map(PaymentId::as_str))
        .bind(hold.closed_at_ms)
        .bind(hold.id.as_str())
        .execute(&mut *connection)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(LedgerError::Corrupt(format!("hold {} was not open", hold.id)));
        }
    }
    for (id, (amount, fee_reversed)) in &writes.refunded {
        sqlx::query("UPDATE payments SET refunded = refunded + $1, fee_reversed = fee_reversed + $2 WHERE id = $3")
            .bind(amount.0)
            .bind(fee_reversed.0)
            .bind(id.as_str())
            .execute(&mut *connection)
            .await?;
    }
    for (id, fee_reversed) in &writes.reversals {
        sqlx::query("UPDATE payments SET fee_reversed = $1 WHERE id = $2")
            .bind(fee_reversed.0)
            .bind(id.as_str())
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// Locks `<database>.lock` (created if missing) for this ledger alone, or says which node's
/// file it is: [`LedgerError::SqliteInUse`] while another ledger holds it.
fn lock_for_one_node(database: &Path) -> Result<File, LedgerError> {
    // The file's real path when it exists, so that two names of one file (a symlink, a
    // relative path) lock one lock file.
    let database = &database.canonicalize().unwrap_or_else(|_| database.to_owned());
    let mut path = database.as_os_str().to_owned();
    path.push(".lock");
    let io_error = |error: std::io::Error| LedgerError::Database(sqlx::Error::Io(error));
    let file = File::options().create(true).truncate(false).write(true).open(&path).map_err(io_error)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(LedgerError::SqliteInUse {
            database: database.display().to_string(),
            lock: Path::new(&path).display().to_string(),
        }),
        Err(TryLockError::Error(error)) => Err(io_error(error)),
    }
}

/// Takes each partition's fence row for its token, if the stored token is not newer; a row not
/// taken is a partition another owner has written under a newer lease, and fails the whole
/// transaction with [`LedgerError::Fenced`].
async fn take_fences(connection: &mut SqliteConnection, fences: &BTreeMap<u32, i64>) -> Result<(), LedgerError> {
    if fences.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO partition_fences (partition, token) VALUES {}
         ON CONFLICT (partition) DO UPDATE SET token = excluded.token WHERE token <= excluded.token
         RETURNING partition",
        placeholders(fences.len(), 2)
    );
    let mut query = sqlx::query_as::<_, (i64,)>(AssertSqlSafe(sql));
    for (partition, token) in fences {
        query = query.bind(i64::from(*partition)).bind(*token);
    }
    let taken = query.fetch_all(&mut *connection).await?;
    fenced(fences, taken.into_iter().map(|(partition,)| partition))
}

/// A write transaction. [`WriteTransaction::commit`] returns its connection to the pool;
/// dropping it any other way (an error, a panic) closes it.
pub(crate) struct WriteTransaction {
    connection: Option<PoolConnection<Db>>,
}

impl WriteTransaction {
    /// Commits; the connection goes back to the pool only if the commit succeeded.
    pub(crate) async fn commit(mut self) -> Result<(), LedgerError> {
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

/// `rows` groups of `columns` placeholders: `(?, ?), (?, ?)`, or `?, ?` for one column.
fn placeholders(rows: usize, columns: usize) -> String {
    let row = if columns == 1 { "?".to_owned() } else { format!("({})", vec!["?"; columns].join(", ")) };
    vec![row; rows].join(", ")
}
