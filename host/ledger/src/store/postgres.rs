//! The PostgreSQL backend: the scale and cluster backend, `postgres://…`.
//!
//! PostgreSQL runs writers concurrently under READ COMMITTED, so a balance written from an
//! earlier read would be a lost update. A batch therefore locks the rows of every account it
//! may debit (its payers) before reading them, in a stable order so that two writers never
//! wait on each other in a cycle, and changes balances only by relative updates. The lock is
//! `FOR NO KEY UPDATE`, not `FOR UPDATE`: every insert that references an account (a payment,
//! an entry, a credit) takes a key-share lock on it, which `FOR UPDATE` would block, so two
//! batches paying each other's payers would deadlock (`concurrent_writers_on_postgres_lose_no_update`
//! shows it). Every other account of the batch is only credited, through relative upserts of
//! its credit sub-balances (`account_credits`), which need no lock on its account row: a
//! merchant or fee account credited by every batch does not serialise the writers. Credit rows only ever grow, so any
//! read of them is a lower bound of the balance: the floor check of a locked payer (its row,
//! exact, plus its credits as last committed) can only be too careful, never too lax.
//! Credits are never folded back into the account row: a fold would lock the credit rows that
//! other writers upsert while they hold payer rows of their own, which can deadlock.
//!
//! Writes bind one array per column (`unnest`), so every batch size uses the same prepared
//! statement and no batch comes near PostgreSQL's 65,535 bound parameters.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _, PgConnection, PgPool, Postgres as Db};
use wasmpay_protocol::PaymentId;
use wasmpay_protocol::routing::AccountId;

use super::schema;
use super::sql::{
    AccountRow, HoldRow, QuoteRow, RecordedRow, RefundableRow, SELECT_HOLDS, SELECT_QUOTES, SELECT_REFUNDABLES,
    account_columns, accounts_by_id, existing, holds, parse_account_id, quotes, refundables,
};
use crate::account::Account;
use crate::decision::{Existing, Holds, Keys, NewPayment, Quotes, Refundables, Writes, fenced};
use crate::error::LedgerError;
use crate::settings::{Durability, LedgerSettings};

/// A PostgreSQL ledger database.
#[derive(Clone, Debug)]
pub(crate) struct Postgres {
    pub(crate) pool: PgPool,
}

/// A write transaction: rolled back when dropped uncommitted.
pub(crate) type WriteTransaction = sqlx::Transaction<'static, Db>;

/// How long a statement waits for another transaction's row lock before its batch fails.
/// Payer rows are never waited for (`lock` skips them); this bounds the rest (a credit or
/// fence row, an operator's lock).
const LOCK_TIMEOUT: &str = "2s";

/// How long the readiness probe waits for a table lock (1 s) and for any one of its
/// statements (2 s): shorter than the handle's 3 s `PROBE_TIMEOUT`, so the server ends a stuck
/// probe itself and the probe's connection goes back to the pool clean.
const PROBE_TIMEOUTS: &str = "SET LOCAL lock_timeout = '1s'; SET LOCAL statement_timeout = '2s'";

/// How long opening the ledger waits for the server, and a query for a pooled connection.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Postgres {
    /// Connects to the database at `url` and migrates it. The schema first on the URL's
    /// `search_path` (`?options[search_path]=name`) is created if missing, as SQLite creates
    /// a missing file, so each deployment or test can have its own.
    /// Without `create`, a database or schema that holds no ledger is
    /// [`LedgerError::NoLedger`] and nothing is created.
    pub(crate) async fn connect(url: &str, settings: &LedgerSettings, create: bool) -> Result<Postgres, LedgerError> {
        let commit = match settings.synchronous {
            Durability::Full => "on",
            Durability::Normal => "off",
        };
        let options: PgConnectOptions = url.parse()?;
        // Every wait on another writer is bounded: a row lock held by a stalled peer (a node
        // paused mid-batch) fails this batch with a retryable error after LOCK_TIMEOUT instead
        // of stalling every payment behind it, and the server ends a transaction left open by
        // a stalled client within the idle timeout, before its partitions can change owner.
        let idle = format!("{}ms", settings.idle_transaction_timeout_ms.max(1));
        let options = options.options([
            ("synchronous_commit", commit),
            ("lock_timeout", LOCK_TIMEOUT),
            ("idle_in_transaction_session_timeout", idle.as_str()),
        ]);
        // One plain connection first: a pool retries until its timeout and then reports only
        // that it timed out, while this names the cause (refused, unknown database, auth).
        let reached = tokio::time::timeout(ACQUIRE_TIMEOUT, options.connect()).await;
        let unanswered =
            || sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer from the database"));
        reached.map_err(|_| unanswered())??.close().await?;
        let pool =
            PgPoolOptions::new().max_connections(8).acquire_timeout(ACQUIRE_TIMEOUT).connect_with(options).await?;
        if create {
            create_schema(&pool).await?;
        } else {
            let (found,): (bool,) =
                sqlx::query_as("SELECT to_regclass('accounts') IS NOT NULL").fetch_one(&pool).await?;
            if !found {
                pool.close().await;
                return Err(LedgerError::NoLedger(crate::store::redacted(url)));
            }
        }
        schema::migrator(schema::POSTGRES).run(&pool).await?;
        Ok(Postgres { pool })
    }

    /// Begins a write transaction.
    pub(crate) async fn begin_write(&self) -> Result<WriteTransaction, LedgerError> {
        Ok(self.pool.begin().await?)
    }

    /// Begins a read transaction whose queries all see one snapshot.
    pub(crate) async fn begin_snapshot(&self) -> Result<WriteTransaction, LedgerError> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *transaction).await?;
        Ok(transaction)
    }

    /// Takes, on every table a batch writes, the lock its writes take (`ROW EXCLUSIVE`), then
    /// commits a transaction that has a transaction id, so its commit record is written and
    /// flushed like any payment's: a table locked by someone else (`LOCK TABLE`, a migration,
    /// a `VACUUM FULL`) fails it within 1 s ([`PROBE_TIMEOUTS`]), and a server that cannot write
    /// its WAL fails the commit. It changes no row.
    pub(crate) async fn probe_write(&self) -> Result<(), LedgerError> {
        let mut transaction = self.begin_write().await?;
        sqlx::raw_sql(PROBE_TIMEOUTS).execute(&mut *transaction).await?;
        sqlx::query("LOCK TABLE accounts, account_credits, payments, entries, partition_fences IN ROW EXCLUSIVE MODE")
            .execute(&mut *transaction)
            .await?;
        sqlx::query("SELECT pg_current_xact_id()::text").execute(&mut *transaction).await?;
        Ok(transaction.commit().await?)
    }

    /// Begins a batch's transaction and reads what it needs: the payers' rows locked (in id
    /// order), then the recorded ids and every account. The batch holds the payers it locked.
    pub(crate) async fn begin_batch(
        &self,
        keys: &Keys,
    ) -> Result<(WriteTransaction, Existing, HashMap<AccountId, Account>, BTreeSet<AccountId>), LedgerError> {
        let mut transaction = self.begin_write().await?;
        let payers: Vec<&str> = keys.payers.iter().map(AccountId::as_str).collect();
        let mut held = lock(&mut transaction, &payers).await?;
        // Looked up under the payers' locks: a writer that recorded one of these ids for the
        // same payer has committed by now, so its payment is seen, not inserted twice.
        let ids: Vec<&str> = keys.ids.iter().map(PaymentId::as_str).collect();
        let existing = self.recorded_in(&mut transaction, &ids).await?;
        let touched: Vec<&AccountId> = keys.touched.iter().collect();
        let mut accounts = self.accounts_in(&mut transaction, &touched).await?;
        // A payer opened while the lock statement ran was not in its snapshot, so it is not
        // locked: lock it now and read it again. A payer another transaction holds is tried
        // again here too, and stays unheld if it is still held (the store defers it).
        let late: Vec<&str> = keys
            .payers
            .iter()
            .filter(|payer| accounts.contains_key(*payer) && !held.contains(*payer))
            .map(AccountId::as_str)
            .collect();
        if !late.is_empty() {
            let locked = lock(&mut transaction, &late).await?;
            let relocked: Vec<&AccountId> = locked.iter().collect();
            accounts.extend(self.accounts_in(&mut transaction, &relocked).await?);
            held.extend(locked);
        }
        Ok((transaction, existing, accounts, held))
    }

    /// The recorded payments among `ids`, by id.
    pub(crate) async fn recorded_in(
        &self,
        connection: &mut PgConnection,
        ids: &[&str],
    ) -> Result<Existing, LedgerError> {
        let rows: Vec<RecordedRow> = sqlx::query_as("SELECT id, request_hash, reply FROM payments WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(connection)
            .await?;
        Ok(existing(rows))
    }

    /// The holds of the authorizations among `ids`, by id.
    pub(crate) async fn holds_in(connection: &mut PgConnection, ids: &[PaymentId]) -> Result<Holds, LedgerError> {
        if ids.is_empty() {
            return Ok(Holds::new());
        }
        let ids: Vec<&str> = ids.iter().map(PaymentId::as_str).collect();
        let sql = format!("{SELECT_HOLDS} h.id = ANY($1)");
        let rows: Vec<HoldRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(ids).fetch_all(connection).await?;
        holds(rows)
    }

    /// The payments among `ids` that a refund may take back from, by id.
    pub(crate) async fn refundables_in(
        connection: &mut PgConnection,
        ids: &[PaymentId],
    ) -> Result<Refundables, LedgerError> {
        if ids.is_empty() {
            return Ok(Refundables::new());
        }
        let ids: Vec<&str> = ids.iter().map(PaymentId::as_str).collect();
        let sql = format!("{SELECT_REFUNDABLES} p.id = ANY($1)");
        let rows: Vec<RefundableRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(ids).fetch_all(connection).await?;
        refundables(rows)
    }

    /// The FX quotes among `ids`, by id, with whether each was used.
    pub(crate) async fn quotes_in(connection: &mut PgConnection, ids: &[String]) -> Result<Quotes, LedgerError> {
        if ids.is_empty() {
            return Ok(Quotes::new());
        }
        let sql = format!("{SELECT_QUOTES} q.id = ANY($1)");
        let rows: Vec<QuoteRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(ids).fetch_all(connection).await?;
        quotes(rows)
    }

    /// The accounts among `ids`, by id, their credits included.
    pub(crate) async fn accounts_in(
        &self,
        connection: &mut PgConnection,
        ids: &[&AccountId],
    ) -> Result<HashMap<AccountId, Account>, LedgerError> {
        let rows: Vec<AccountRow> =
            sqlx::query_as(concat!("SELECT ", account_columns!(), " FROM accounts WHERE id = ANY($1)"))
                .bind(ids.iter().map(|id| id.as_str()).collect::<Vec<_>>())
                .fetch_all(connection)
                .await?;
        accounts_by_id(rows)
    }

    /// Writes a decided batch (held balances, credits, payments, entries: one statement each),
    /// uncommitted.
    pub(crate) async fn write_batch(transaction: &mut WriteTransaction, writes: &Writes) -> Result<(), LedgerError> {
        // First, so that a fenced batch stops before writing anything. The upsert holds each
        // partition's row until commit: an old and a new owner are ordered by it.
        take_fences(transaction, &writes.fences).await?;
        // The four writes as one statement (one round trip instead of four): PostgreSQL runs
        // every data-modifying CTE to completion whether or not the query reads it, and an
        // empty array writes nothing.
        let mut balances = (Vec::new(), Vec::new(), Vec::new());
        for (account, change) in &writes.balances {
            balances.0.push(account.as_str());
            balances.1.push(change.balance.0);
            balances.2.push(change.held.0);
        }
        let mut credits = (Vec::new(), Vec::new(), Vec::new());
        for ((account, shard), amount) in &writes.credits {
            credits.0.push(account.as_str());
            credits.1.push(*shard);
            credits.2.push(amount.0);
        }
        let mut entries = (Vec::new(), Vec::new(), Vec::new());
        for entry in &writes.entries {
            entries.0.push(entry.payment_id.as_str());
            entries.1.push(entry.account.as_str());
            entries.2.push(entry.amount.0);
        }
        let query = sqlx::query_as::<_, (i64,)>(WRITE_BATCH).bind(balances.0).bind(balances.1);
        let query = bind_payments(query.bind(credits.0).bind(credits.1).bind(credits.2), writes);
        let query = query.bind(entries.0).bind(entries.1).bind(entries.2).bind(balances.2);
        let parents: Vec<Option<&str>> =
            writes.payments.iter().map(|payment| payment.transfer.kind.parent().map(PaymentId::as_str)).collect();
        let methods: Vec<Option<&str>> =
            writes.payments.iter().map(|payment| payment.transfer.method.as_deref()).collect();
        let metadata: Vec<Option<&str>> =
            writes.payments.iter().map(|payment| payment.transfer.metadata.as_deref()).collect();
        let clients: Vec<Option<&str>> =
            writes.payments.iter().map(|payment| payment.transfer.client.as_deref()).collect();
        let query = query.bind(parents).bind(methods).bind(metadata).bind(clients);
        let (updated,) = query.fetch_one(&mut **transaction).await?;
        if usize::try_from(updated).ok() != Some(writes.balances.len()) {
            return Err(LedgerError::Corrupt("an account of the batch vanished".into()));
        }
        write_holds(transaction, writes).await
    }
}

/// A decided batch's writes: held balances (relative), credits (in (account, shard) order, so
/// two writers crediting the same rows lock them in the same order), payments, entries (in
/// order). Returns how many balances it updated.
const WRITE_BATCH: &str = "
    WITH b AS (
        UPDATE accounts SET balance = accounts.balance + d.delta, held = accounts.held + d.held
        FROM unnest($1::text[], $2::bigint[], $24::bigint[]) AS d(id, delta, held) WHERE accounts.id = d.id
        RETURNING 1),
    c AS (
        INSERT INTO account_credits (account_id, shard, amount)
        SELECT * FROM unnest($3::text[], $4::bigint[], $5::bigint[])
        ON CONFLICT (account_id, shard) DO UPDATE SET amount = account_credits.amount + excluded.amount),
    p AS (
        INSERT INTO payments (id, kind, request_hash, status, code, payer, payee, currency, amount, fee,
                              fee_bearer, plugins, partition, reply, created_at_ms, parent, method, metadata,
                              client_key)
        SELECT * FROM unnest($6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                             $13::text[], $14::bigint[], $15::bigint[], $16::text[], $17::text[], $18::bigint[],
                             $19::text[], $20::bigint[], $25::text[], $26::text[], $27::text[], $28::text[])),
    e AS (
        INSERT INTO entries (payment_id, account_id, amount)
        SELECT payment_id, account_id, amount
        FROM unnest($21::text[], $22::text[], $23::bigint[]) WITH ORDINALITY AS e(payment_id, account_id, amount, n)
        ORDER BY n)
    SELECT count(*) FROM b";

type WriteQuery<'q> = sqlx::query::QueryAs<'q, Db, (i64,), sqlx::postgres::PgArguments>;

/// Binds the payment columns of `writes`, one array each.
fn bind_payments<'q>(query: WriteQuery<'q>, writes: &'q Writes) -> WriteQuery<'q> {
    let texts =
        |column: fn(&'q NewPayment) -> &'q str| -> Vec<&'q str> { writes.payments.iter().map(column).collect() };
    let numbers = |column: fn(&NewPayment) -> i64| -> Vec<i64> { writes.payments.iter().map(column).collect() };
    let partitions: Vec<Option<i64>> =
        writes.payments.iter().map(|payment| payment.transfer.partition.map(i64::from)).collect();
    query
        .bind(texts(|payment| payment.transfer.id.as_str()))
        .bind(texts(|payment| payment.transfer.kind.as_str()))
        .bind(texts(|payment| &payment.transfer.request_hash))
        .bind(texts(|payment| payment.decision.code(&payment.transfer.kind).status().as_str()))
        .bind(texts(|payment| payment.decision.code(&payment.transfer.kind).as_str()))
        .bind(texts(|payment| payment.transfer.payer.as_str()))
        .bind(texts(|payment| payment.transfer.payee.as_str()))
        .bind(texts(|payment| payment.transfer.currency.code()))
        .bind(numbers(|payment| payment.transfer.amount.0))
        .bind(numbers(|payment| payment.transfer.fee.0))
        .bind(texts(|payment| payment.transfer.fee_bearer.as_str()))
        .bind(texts(|payment| &payment.transfer.plugins))
        .bind(partitions)
        .bind(texts(|payment| &payment.reply))
        .bind(numbers(|payment| payment.transfer.now_ms))
}

/// Opens and closes the batch's holds and adds its refunds to their payments: rare next to
/// payments, so they are statements of their own, run only when there is one to write. A hold closed twice would release its amount
/// twice: the update takes only open holds and the batch fails unless each was.
async fn write_holds(connection: &mut PgConnection, writes: &Writes) -> Result<(), LedgerError> {
    if !writes.opened.is_empty() {
        let mut opened = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for hold in &writes.opened {
            opened.0.push(hold.id.as_str());
            opened.1.push(hold.payer.as_str());
            opened.2.push(hold.held.0);
            opened.3.push(hold.expires_at_ms);
            opened.4.push(hold.partition.map(i64::from));
        }
        sqlx::query(
            "INSERT INTO holds (id, account_id, held, expires_at_ms, partition, state)
             SELECT *, 'open' FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])",
        )
        .bind(opened.0)
        .bind(opened.1)
        .bind(opened.2)
        .bind(opened.3)
        .bind(opened.4)
        .execute(&mut *connection)
        .await?;
    }
    if !writes.closed.is_empty() {
        let mut closed = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for hold in &writes.closed {
            closed.0.push(hold.id.as_str());
            closed.1.push(hold.state.as_str());
            closed.2.push(hold.captured.0);
            closed.3.push(hold.closed_by.as_ref().map(PaymentId::as_str));
            closed.4.push(hold.closed_at_ms);
        }
        let updated = sqlx::query(
            "UPDATE holds SET state = c.state, captured = c.captured, closed_by = c.closed_by,
                              closed_at_ms = c.closed_at_ms
             FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[])
                  AS c(id, state, captured, closed_by, closed_at_ms)
             WHERE holds.id = c.id AND holds.state = 'open'",
        )
        .bind(closed.0)
        .bind(closed.1)
        .bind(closed.2)
        .bind(closed.3)
        .bind(closed.4)
        .execute(&mut *connection)
        .await?;
        if usize::try_from(updated.rows_affected()).ok() != Some(writes.closed.len()) {
            return Err(LedgerError::Corrupt("a hold of the batch was not open".into()));
        }
    }
    if !writes.refunded.is_empty() {
        let ids: Vec<&str> = writes.refunded.keys().map(PaymentId::as_str).collect();
        let (amounts, fees): (Vec<i64>, Vec<i64>) =
            writes.refunded.values().map(|(amount, fee)| (amount.0, fee.0)).unzip();
        sqlx::query(
            "UPDATE payments SET refunded = payments.refunded + r.amount, fee_reversed = payments.fee_reversed + r.fee
             FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS r(id, amount, fee) WHERE payments.id = r.id",
        )
        .bind(ids)
        .bind(amounts)
        .bind(fees)
        .execute(&mut *connection)
        .await?;
    }
    if !writes.reversals.is_empty() {
        let (ids, fees): (Vec<&str>, Vec<i64>) = writes.reversals.iter().map(|(id, fee)| (id.as_str(), fee.0)).unzip();
        sqlx::query(
            "UPDATE payments SET fee_reversed = r.fee
             FROM unnest($1::text[], $2::bigint[]) AS r(id, fee) WHERE payments.id = r.id",
        )
        .bind(ids)
        .bind(fees)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// Creates the schema the connection's `search_path` names first, if there is none.
async fn create_schema(pool: &PgPool) -> Result<(), LedgerError> {
    let (current, path): (Option<String>, String) =
        sqlx::query_as("SELECT current_schema(), current_setting('search_path')").fetch_one(pool).await?;
    if current.is_some() {
        return Ok(());
    }
    let Some(first) = path.split(',').map(str::trim).find(|name| !name.is_empty() && *name != "\"$user\"") else {
        return Ok(());
    };
    let name = first.trim_matches('"');
    let (quoted,): (String,) = sqlx::query_as("SELECT quote_ident($1)").bind(name).fetch_one(pool).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))).execute(pool).await?;
    Ok(())
}

/// Locks the rows of `payers` that exist and no other transaction holds, in id order, and
/// returns them. A row another transaction holds is skipped, not waited for: its holder may
/// be a paused node, and its payers' transfers wait for a later batch (`commit`) while the
/// rest of this one goes on.
async fn lock(connection: &mut PgConnection, payers: &[&str]) -> Result<BTreeSet<AccountId>, LedgerError> {
    let locked: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM accounts WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE SKIP LOCKED")
            .bind(payers)
            .fetch_all(connection)
            .await?;
    locked.into_iter().map(|(id,)| parse_account_id(id)).collect()
}

/// Takes each partition's fence row for its token, if the stored token is not newer; a row not
/// taken is a partition another owner has written under a newer lease, and fails the whole
/// transaction with [`LedgerError::Fenced`].
async fn take_fences(connection: &mut PgConnection, fences: &BTreeMap<u32, i64>) -> Result<(), LedgerError> {
    if fences.is_empty() {
        return Ok(());
    }
    let partitions: Vec<i64> = fences.keys().map(|partition| i64::from(*partition)).collect();
    let tokens: Vec<i64> = fences.values().copied().collect();
    let taken: Vec<(i64,)> = sqlx::query_as(
        "INSERT INTO partition_fences (partition, token) SELECT * FROM unnest($1::bigint[], $2::bigint[])
         ON CONFLICT (partition) DO UPDATE SET token = excluded.token
         WHERE partition_fences.token <= excluded.token
         RETURNING partition",
    )
    .bind(partitions)
    .bind(tokens)
    .fetch_all(connection)
    .await?;
    fenced(fences, taken.into_iter().map(|(partition,)| partition))
}
