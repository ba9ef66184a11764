//! The backend boundary: one ledger over SQLite (the embedded default) or PostgreSQL (the
//! scale and cluster backend), chosen by the database URL.
//!
//! What both backends do alike is written once: the batch decision is pure code
//! (`crate::decision`, which this module imports and which imports nothing of it), row shapes
//! and shared SQL fragments are in `sql`, and SQL that both dialects accept (`$1` placeholders work in sqlx's SQLite driver too) runs
//! on either through [`on_store!`]. What differs lives in `sqlite` and `postgres`: how a write
//! locks (the whole database, or the payers' rows), how a batch is bound (`VALUES` lists, or one
//! array per column), and how each is connected and migrated.

mod postgres;
pub(crate) mod schema;
pub(crate) mod sql;
mod sqlite;

use std::collections::BTreeSet;

use wasmpay_protocol::PaymentId;
use wasmpay_protocol::routing::AccountId;

use crate::conversion::Conversion;
use crate::decision::{Fences, Found, Holds, Keys, Quotes, Refundables, Writes};
use crate::error::LedgerError;
use crate::settings::LedgerSettings;
use crate::transfer::Decision;
pub(crate) use postgres::Postgres;
pub(crate) use sqlite::Sqlite;
use wasmpay_protocol::money::MinorUnits;

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

/// `url` without its password, to name a database (or a NATS server) in a message or a log
/// line: the user part keeps its user name (`postgres://app@host/db`), a `password=` query
/// parameter is starred, and a password holding an unencoded `@` is cut at the last `@`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (rest, query) = rest.split_once('?').map_or((rest, None), |(rest, query)| (rest, Some(query)));
    let rest = match rest.rsplit_once('@') {
        Some((user, host)) => format!("{}@{host}", user.split(':').next().unwrap_or_default()),
        None => rest.to_owned(),
    };
    let Some(query) = query else {
        return format!("{scheme}://{rest}");
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{scheme}://{rest}?{}", query.join("&"))
}

/// A ledger database.
#[derive(Clone, Debug)]
pub(crate) enum Store {
    Sqlite(Sqlite),
    Postgres(Postgres),
}

impl Store {
    /// Opens the database at `url`: `sqlite://…` or `postgres://…` (`postgresql://…`). With
    /// `create`, a missing SQLite file or PostgreSQL schema is created; without, a URL with no
    /// ledger is [`LedgerError::NoLedger`].
    pub(crate) async fn connect(url: &str, settings: &LedgerSettings, create: bool) -> Result<Store, LedgerError> {
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(Sqlite::connect(url, settings, create).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(Postgres::connect(url, settings, create).await?))
        } else {
            Err(LedgerError::UnsupportedUrl(url.split(':').next().unwrap_or_default().to_owned()))
        }
    }

    /// Waits for running queries and closes every connection (and lets another node open a
    /// SQLite file).
    pub(crate) async fn close(&self) {
        match self {
            Store::Sqlite(backend) => backend.close().await,
            Store::Postgres(backend) => backend.pool.close().await,
        }
    }
}

/// Every partition's newest fencing token (one row per partition).
const SELECT_FENCES: &str = "SELECT partition, token FROM partition_fences";

/// The rows of [`SELECT_FENCES`] by partition (a partition number out of range is no partition).
fn fences_of(rows: Vec<(i64, i64)>) -> Fences {
    rows.into_iter().filter_map(|(partition, token)| Some((u32::try_from(partition).ok()?, token))).collect()
}

impl Store {
    /// Every partition's newest fencing token, outside any batch (an owner checking whether
    /// it was fenced).
    pub(crate) async fn fences(&self) -> Result<Fences, LedgerError> {
        let rows: Vec<(i64, i64)> =
            on_store!(self, backend => sqlx::query_as(SELECT_FENCES).fetch_all(&backend.pool).await?);
        Ok(fences_of(rows))
    }
}

/// What a batch read, with its transaction open.
pub(crate) struct Begun {
    pub(crate) transaction: Transaction,
    /// What the batch decides on: its recorded ids, its accounts, the holds and payments its
    /// transfers act on.
    pub(crate) found: Found,
    /// The accounts the transaction holds, and so may debit.
    pub(crate) held: BTreeSet<AccountId>,
    /// Every partition's newest fencing token.
    pub(crate) fences: Fences,
    /// Payers that exist but another transaction holds (PostgreSQL): their transfers wait for
    /// a later batch instead of holding this one up.
    pub(crate) busy: BTreeSet<AccountId>,
}

impl Store {
    /// Begins a batch's transaction and reads (and locks) what the batch needs.
    pub(crate) async fn begin_batch(&self, keys: &Keys) -> Result<Begun, LedgerError> {
        let (mut transaction, existing, accounts, held) = match self {
            Store::Sqlite(backend) => {
                let (transaction, existing, accounts, held) = backend.begin_batch(keys).await?;
                (Transaction::Sqlite(transaction), existing, accounts, held)
            }
            Store::Postgres(backend) => {
                let (transaction, existing, accounts, held) = backend.begin_batch(keys).await?;
                (Transaction::Postgres(transaction), existing, accounts, held)
            }
        };
        let fences = transaction.fences().await?;
        let holds = transaction.holds(&keys.holds).await?;
        let refundables = transaction.refundables(&keys.refunds).await?;
        let quotes = transaction.quotes(&keys.quotes).await?;
        // A payer this batch does not hold is never debited: its transfers wait (`commit`). It
        // stays among the accounts, since another transfer of the batch may credit it, which
        // takes no lock (a credit sub-balance).
        let busy: BTreeSet<AccountId> = keys
            .payers
            .iter()
            .filter(|payer| accounts.contains_key(*payer) && !held.contains(*payer))
            .cloned()
            .collect();
        let found = Found { existing, accounts, holds, refundables, quotes };
        Ok(Begun { transaction, found, held, fences, busy })
    }

    /// Whether the next batch may be read, locked and decided while the one before it is
    /// written and committed. On PostgreSQL the payer row locks order the two: a payer of both
    /// batches is read by the second only once the first committed, and any other account is
    /// at worst read without the first batch's credits, which can only make a floor check
    /// stricter. On SQLite the second batch would wait for the write lock anyway.
    pub(crate) fn overlaps_batches(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }
}

/// A batch's open write transaction, on its backend.
pub(crate) enum Transaction {
    Sqlite(sqlite::WriteTransaction),
    Postgres(postgres::WriteTransaction),
}

impl Transaction {
    /// Every partition's newest token, read without a lock (at most one row per partition): it
    /// lets a batch refuse only its transfers under an older token. The write phase's upsert
    /// stays the guard against a claim that commits after this read.
    async fn fences(&mut self) -> Result<Fences, LedgerError> {
        let rows: Vec<(i64, i64)> = match self {
            Transaction::Sqlite(transaction) => sqlx::query_as(SELECT_FENCES).fetch_all(&mut **transaction).await?,
            Transaction::Postgres(transaction) => sqlx::query_as(SELECT_FENCES).fetch_all(&mut **transaction).await?,
        };
        Ok(fences_of(rows))
    }

    /// The holds of the authorizations among `ids`, read after the payers' rows were locked:
    /// only their partitions' owners change them, under those locks.
    async fn holds(&mut self, ids: &[PaymentId]) -> Result<Holds, LedgerError> {
        match self {
            Transaction::Sqlite(transaction) => Sqlite::holds_in(transaction, ids).await,
            Transaction::Postgres(transaction) => Postgres::holds_in(transaction, ids).await,
        }
    }

    /// The payments and captures among `ids` that refunds take back from, read after the
    /// payers' rows were locked: only refunds change what was refunded, under the lock of the
    /// account they debit.
    async fn refundables(&mut self, ids: &[PaymentId]) -> Result<Refundables, LedgerError> {
        match self {
            Transaction::Sqlite(transaction) => Sqlite::refundables_in(transaction, ids).await,
            Transaction::Postgres(transaction) => Postgres::refundables_in(transaction, ids).await,
        }
    }

    /// The FX quotes among `ids` with whether each was used, read after the payers' rows were
    /// locked: a quote is its payer's, and only its payer's payments use it.
    async fn quotes(&mut self, ids: &[String]) -> Result<Quotes, LedgerError> {
        match self {
            Transaction::Sqlite(transaction) => Sqlite::quotes_in(transaction, ids).await,
            Transaction::Postgres(transaction) => Postgres::quotes_in(transaction, ids).await,
        }
    }

    /// Writes a decided batch and commits it.
    pub(crate) async fn write_batch(mut self, writes: &Writes) -> Result<(), LedgerError> {
        match &mut self {
            Transaction::Sqlite(transaction) => Sqlite::write_batch(transaction, writes).await?,
            Transaction::Postgres(transaction) => Postgres::write_batch(transaction, writes).await?,
        }
        // The same statement on either connection type (as `on_store!` runs one body on either).
        macro_rules! insert_conversions {
            ($connection:expr) => {
                for (id, conversion, paid) in conversions(writes) {
                    sqlx::query(INSERT_CONVERSION)
                        .bind(id)
                        .bind(conversion.counter.code())
                        .bind(paid.0)
                        .bind(conversion.rate.map(|rate| rate.to_string()))
                        .bind(conversion.fx_plugin.as_str())
                        .bind(conversion.quote.as_deref())
                        .execute(&mut *$connection)
                        .await?;
                }
            };
        }
        match self {
            Transaction::Sqlite(mut transaction) => {
                insert_conversions!(transaction);
                transaction.commit().await
            }
            Transaction::Postgres(mut transaction) => {
                insert_conversions!(transaction);
                Ok(transaction.commit().await?)
            }
        }
    }
}

/// A conversion's row: one per approved cross-border payment. They are few beside plain
/// payments, so a statement each costs less than widening every batch's statements.
const INSERT_CONVERSION: &str = "INSERT INTO conversions (payment_id, currency, amount, rate, fx_plugin, quote_id)
     VALUES ($1, $2, $3, $4, $5, $6)";

/// The batch's approved cross-border payments: (id, conversion, what the payee was paid),
/// the amount by the same rule the postings used (an approved one posted it, so it exists),
/// not by searching the batch's entries.
fn conversions(writes: &Writes) -> impl Iterator<Item = (&str, &Conversion, MinorUnits)> {
    writes.payments.iter().filter(|payment| payment.decision == Decision::Approved).filter_map(|payment| {
        let conversion = payment.transfer.kind.conversion()?;
        let paid = conversion.counter_amount(payment.transfer.credited().ok()?)?;
        Some((payment.transfer.id.as_str(), conversion, paid))
    })
}
