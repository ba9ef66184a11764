//! Statements: an account's entries, payments and open holds, a page at a time, in a stable
//! order, and what a page's cursor means.
//!
//! Entries are ordered by their id; payments by the id of their first entry on the account,
//! so a statement is read through the entries' index by account (SQLite's `entries_by_account`,
//! PostgreSQL's primary key `(account_id, id)`) and the payment path pays for no index
//! of its own (two indexes on `payments` by payer and payee cost the ledger 40 % of its rate
//! on SQLite, docs/performance.md); open holds by (expiry, id). A page's `next` cursor is the
//! last row's key, so the next page starts exactly after it however many rows arrive
//! meanwhile. On PostgreSQL with several nodes writing, an entry id is taken when a batch
//! writes and becomes visible when it commits, so a batch that commits after a later-numbered
//! one can show up behind a cursor already passed: a statement of a closed period (`to_ms` in
//! the past by more than a batch's bound, 10 s) never misses a row. A time filter is applied
//! to the rows read in entry order: a page far into an account's history reads the history
//! before it once.

use serde::Serialize;
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::error::LedgerError;
use crate::handle::Ledger;
use crate::store::on_store;
use wasmpay_protocol::routing::AccountId;

/// Rows a page holds unless asked otherwise.
pub const DEFAULT_PAGE: u32 = 50;
/// The most rows one page holds.
pub const MAX_PAGE: u32 = 500;

/// Which rows of a statement to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Rows at most: 1 ..= [`MAX_PAGE`]; 0 means [`DEFAULT_PAGE`].
    pub limit: u32,
    /// The `next` cursor of the page before, if any.
    pub after: Option<String>,
    /// Only rows recorded at or after this time (Unix milliseconds).
    pub from_ms: Option<i64>,
    /// Only rows recorded before this time (Unix milliseconds).
    pub to_ms: Option<i64>,
}

impl Page {
    fn rows(&self) -> i64 {
        i64::from(if self.limit == 0 { DEFAULT_PAGE } else { self.limit.min(MAX_PAGE) })
    }

    fn window(&self) -> (i64, i64) {
        (self.from_ms.unwrap_or(i64::MIN), self.to_ms.unwrap_or(i64::MAX))
    }
}

/// One entry of an account's statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EntryLine {
    /// The entry's id, its place in the statement.
    pub id: i64,
    /// The payment, capture, refund or deposit that posted it.
    pub payment: String,
    /// What that was: `payment`, `deposit`, `capture`, `refund`.
    pub kind: String,
    /// Signed minor units: negative for a debit.
    pub amount: i64,
    /// When it was recorded (Unix milliseconds, the deciding node's clock).
    pub at_ms: i64,
}

/// One page of an account's entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Entries {
    /// The page's entries, oldest first.
    pub entries: Vec<EntryLine>,
    /// The cursor of the next page; `None` on the last.
    pub next: Option<String>,
}

/// One payment (or deposit, authorization, capture, void, refund) in a statement or in a
/// payment's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PaymentLine {
    /// Its id.
    pub id: String,
    /// `payment`, `deposit`, `authorization`, `capture`, `void`, `refund`.
    pub kind: String,
    /// Its status, as in its reply.
    pub status: String,
    /// Its code, as in its reply.
    pub code: String,
    /// Debited (or held) account.
    pub payer: String,
    /// Credited account.
    pub payee: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Minor units, before fees.
    pub amount: i64,
    /// Fee in minor units.
    pub fee: i64,
    /// Who bore the fee.
    pub fee_bearer: String,
    /// The payment method, for payments and authorizations.
    pub method: Option<String>,
    /// When it was recorded (Unix milliseconds, the deciding node's clock).
    pub at_ms: i64,
    /// The payment it acts on (a capture's or void's authorization, a refund's payment).
    pub parent: Option<String>,
    /// What refunds have moved back of it.
    pub refunded: i64,
    /// A refund's: what of its payment's fee it gave back. A payment's or capture's: what of
    /// its fee its refunds gave back in all.
    pub fee_reversed: i64,
}

impl<'r, R: Row> sqlx::FromRow<'r, R> for PaymentLine
where
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(PaymentLine {
            id: row.try_get("id")?,
            kind: row.try_get("kind")?,
            status: row.try_get("status")?,
            code: row.try_get("code")?,
            payer: row.try_get("payer")?,
            payee: row.try_get("payee")?,
            currency: row.try_get("currency")?,
            amount: row.try_get("amount")?,
            fee: row.try_get("fee")?,
            fee_bearer: row.try_get("fee_bearer")?,
            method: row.try_get("method")?,
            at_ms: row.try_get("at_ms")?,
            parent: row.try_get("parent")?,
            refunded: row.try_get("refunded")?,
            fee_reversed: row.try_get("fee_reversed")?,
        })
    }
}

/// One page of an account's payments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Payments {
    /// The page's payments, oldest first.
    pub payments: Vec<PaymentLine>,
    /// The cursor of the next page; `None` on the last.
    pub next: Option<String>,
}

/// A [`PaymentLine`] and where it is in a statement: the id of its first entry there.
struct Posted {
    line: PaymentLine,
    position: i64,
}

/// One open hold of an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HoldLine {
    /// The authorization that holds it.
    #[serde(flatten)]
    pub authorization: PaymentLine,
    /// What it reserves: the amount, plus the fee when the payer bears it.
    pub held: i64,
    /// When the ledger releases it unless captured or voided (Unix milliseconds).
    pub expires_at_ms: i64,
}

/// One page of an account's open holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OpenHolds {
    /// The page's holds, the soonest to expire first.
    pub holds: Vec<HoldLine>,
    /// The cursor of the next page; `None` on the last.
    pub next: Option<String>,
}

/// Reads a [`PaymentLine`] and, beside it, the columns of what wraps it.
macro_rules! beside_a_payment_line {
    ($wrapper:ident { $line:ident, $($column:ident),+ }) => {
        impl<'r, R: Row> sqlx::FromRow<'r, R> for $wrapper
        where
            &'static str: ColumnIndex<R>,
            String: Decode<'r, R::Database> + Type<R::Database>,
            i64: Decode<'r, R::Database> + Type<R::Database>,
        {
            fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
                Ok($wrapper { $line: <PaymentLine as sqlx::FromRow<'r, R>>::from_row(row)?, $($column: row.try_get(stringify!($column))?),+ })
            }
        }
    };
}
beside_a_payment_line!(Posted { line, position });
beside_a_payment_line!(HoldLine { authorization, held, expires_at_ms });

/// The columns of a [`PaymentLine`], over `payments p`.
pub(crate) const PAYMENT_LINE: &str = "p.id, p.kind, p.status, p.code, p.payer, p.payee, p.currency, p.amount, p.fee,
     p.fee_bearer, p.method, p.created_at_ms AS at_ms, p.parent, p.refunded, p.fee_reversed";

impl Ledger {
    /// A page of `account`'s entries, in id order.
    pub async fn entries_of(&self, account: &AccountId, page: &Page) -> Result<Entries, LedgerError> {
        let after = entry_cursor(page)?;
        let (from, to) = page.window();
        let rows: Vec<(i64, String, String, i64, i64)> = on_store!(&self.store, backend => sqlx::query_as(
            "SELECT e.id, e.payment_id, p.kind, e.amount, p.created_at_ms FROM entries e
             JOIN payments p ON p.id = e.payment_id
             WHERE e.account_id = $1 AND e.id > $2 AND p.created_at_ms >= $3 AND p.created_at_ms < $4
             ORDER BY e.id LIMIT $5",
        )
        .bind(account.as_str())
        .bind(after)
        .bind(from)
        .bind(to)
        .bind(page.rows() + 1)
        .fetch_all(&backend.pool)
        .await?);
        let mut entries: Vec<EntryLine> = rows
            .into_iter()
            .map(|(id, payment, kind, amount, at_ms)| EntryLine { id, payment, kind, amount, at_ms })
            .collect();
        let next = more(&mut entries, page.rows()).then(|| entries.last().map(|entry| entry.id.to_string())).flatten();
        Ok(Entries { entries, next })
    }

    /// A page of the payments that posted on `account` (payments it made or received,
    /// deposits, captures, refunds, settlements), in the order they posted: by the account's
    /// first entry of each. Declines, authorizations and voids post nothing and are not in a
    /// statement (its open holds are, in [`Ledger::holds_of`]). Read through the entries, so
    /// a statement costs the payment path no index of its own.
    pub async fn payments_of(&self, account: &AccountId, page: &Page) -> Result<Payments, LedgerError> {
        let after = entry_cursor(page)?;
        let (from, to) = page.window();
        // A payment may post several entries on one account (a settlement's legs, a fee paid
        // to the fee account that is also the payee): it is listed at the first.
        let sql = format!(
            "SELECT {PAYMENT_LINE}, e.id AS position FROM entries e JOIN payments p ON p.id = e.payment_id
             WHERE e.account_id = $1 AND e.id > $2 AND p.created_at_ms >= $3 AND p.created_at_ms < $4
               AND NOT EXISTS (SELECT 1 FROM entries f
                               WHERE f.payment_id = e.payment_id AND f.account_id = e.account_id AND f.id < e.id)
             ORDER BY e.id LIMIT $5"
        );
        let mut rows: Vec<Posted> = on_store!(&self.store, backend => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(account.as_str())
            .bind(after)
            .bind(from)
            .bind(to)
            .bind(page.rows() + 1)
            .fetch_all(&backend.pool)
            .await?);
        let next = more(&mut rows, page.rows()).then(|| rows.last().map(|row| row.position.to_string())).flatten();
        Ok(Payments { payments: rows.into_iter().map(|row| row.line).collect(), next })
    }

    /// A page of `account`'s open holds, the soonest to expire first; `from_ms` and `to_ms`
    /// bound their expiry.
    pub async fn holds_of(&self, account: &AccountId, page: &Page) -> Result<OpenHolds, LedgerError> {
        let (after_ms, after_id) = match page.after.as_deref() {
            None => (i64::MIN, String::new()),
            Some(cursor) => {
                let (at, id) = cursor.split_once(':').ok_or_else(|| bad_cursor(cursor))?;
                (at.parse().map_err(|_| bad_cursor(cursor))?, id.to_owned())
            }
        };
        let (from, to) = page.window();
        let sql = format!(
            "SELECT {PAYMENT_LINE}, h.held, h.expires_at_ms FROM holds h JOIN payments p ON p.id = h.id
             WHERE h.account_id = $1 AND h.state = 'open'
               AND (h.expires_at_ms > $2 OR (h.expires_at_ms = $2 AND h.id > $3))
               AND h.expires_at_ms >= $4 AND h.expires_at_ms < $5
             ORDER BY h.expires_at_ms, h.id LIMIT $6"
        );
        let mut holds: Vec<HoldLine> = on_store!(&self.store, backend => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(account.as_str())
            .bind(after_ms)
            .bind(after_id)
            .bind(from)
            .bind(to)
            .bind(page.rows() + 1)
            .fetch_all(&backend.pool)
            .await?);
        let next = more(&mut holds, page.rows())
            .then(|| holds.last().map(|hold| format!("{}:{}", hold.expires_at_ms, hold.authorization.id)))
            .flatten();
        Ok(OpenHolds { holds, next })
    }
}

/// The entry id a page of entries or payments starts after.
fn entry_cursor(page: &Page) -> Result<i64, LedgerError> {
    match page.after.as_deref() {
        None => Ok(-1),
        Some(cursor) => cursor.parse().map_err(|_| bad_cursor(cursor)),
    }
}

/// Whether `rows` (read with one row more than a page) has a next page; cuts it to the page.
fn more<T>(rows: &mut Vec<T>, page: i64) -> bool {
    let page = usize::try_from(page).unwrap_or(usize::MAX);
    let more = rows.len() > page;
    rows.truncate(page);
    more
}

fn bad_cursor(cursor: &str) -> LedgerError {
    LedgerError::Invalid(format!("`{cursor}` is not a cursor of this statement"))
}
