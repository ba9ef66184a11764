//! What both SQL dialects share: the rows the store reads, as typed structs, and the SQL
//! fragments that select them. A leaf below the backends, so that `sqlite` and `postgres`
//! never import the boundary above them.

use std::collections::HashMap;

use sqlx::{ColumnIndex, Decode, Row, Type};
use wasmpay_protocol::PaymentId;
use wasmpay_protocol::money::{FeeBearer, MinorUnits};
use wasmpay_protocol::routing::AccountId;

use crate::account::{Account, AccountKind};
use crate::conversion::{Quote, QuoteState};
use crate::decision::{Existing, Holds, Quotes, Refundables};
use crate::error::LedgerError;
use crate::hold::{Hold, HoldState};
use crate::refund::Refundable;
use crate::transfer::StoredReply;

/// An account's balance as SQL over the `accounts` row: the row's balance plus its credit
/// sub-balances. The cast keeps the type `BIGINT` on PostgreSQL, whose `SUM` widens.
macro_rules! balance_with_credits {
    () => {
        "CAST(balance + COALESCE((SELECT SUM(c.amount) FROM account_credits c WHERE c.account_id = accounts.id), 0) AS BIGINT)"
    };
}
pub(crate) use balance_with_credits;

/// The columns of an [`AccountRow`], over the `accounts` table.
macro_rules! account_columns {
    () => {
        concat!("id, currency, ", $crate::store::sql::balance_with_credits!(), " AS balance, held, floor, kind")
    };
}
pub(crate) use account_columns;

/// An `accounts` row as the store selects it (`store::sql::account_columns!`): the balance
/// with its credit sub-balances added.
#[derive(Debug)]
pub(crate) struct AccountRow {
    id: String,
    currency: String,
    balance: i64,
    held: i64,
    floor: Option<i64>,
    kind: String,
}

impl<'r, R: Row> sqlx::FromRow<'r, R> for AccountRow
where
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(AccountRow {
            id: row.try_get("id")?,
            currency: row.try_get("currency")?,
            balance: row.try_get("balance")?,
            held: row.try_get("held")?,
            floor: row.try_get("floor")?,
            kind: row.try_get("kind")?,
        })
    }
}

/// Rows of [`AccountRow`] as accounts by id: what every backend's account read returns.
pub(crate) fn accounts_by_id(rows: Vec<AccountRow>) -> Result<HashMap<AccountId, Account>, LedgerError> {
    rows.into_iter().map(|row| Account::try_from(row).map(|account| (account.id.clone(), account))).collect()
}

impl TryFrom<AccountRow> for Account {
    type Error = LedgerError;

    fn try_from(row: AccountRow) -> Result<Account, LedgerError> {
        Ok(Account {
            id: parse_account_id(row.id)?,
            currency: parse_currency(&row.currency)?,
            balance: MinorUnits(row.balance),
            held: MinorUnits(row.held),
            floor: row.floor.map(MinorUnits),
            kind: AccountKind::parse(&row.kind)?,
        })
    }
}

/// A currency or unit code read back from the database.
pub(crate) fn parse_currency<T: std::str::FromStr>(code: &str) -> Result<T, LedgerError> {
    code.parse().map_err(|_| LedgerError::Corrupt(format!("currency `{code}`")))
}

/// An account id read back from the database.
pub(crate) fn parse_account_id(id: String) -> Result<AccountId, LedgerError> {
    AccountId::new(id).map_err(|error| LedgerError::Corrupt(error.to_string()))
}

/// A `payments` row as the idempotency lookup reads it (`id, request_hash, reply`).
#[derive(Debug)]
pub(crate) struct RecordedRow {
    id: String,
    request_hash: String,
    reply: String,
}

impl<'r, R: Row> sqlx::FromRow<'r, R> for RecordedRow
where
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(RecordedRow {
            id: row.try_get("id")?,
            request_hash: row.try_get("request_hash")?,
            reply: row.try_get("reply")?,
        })
    }
}

/// Rows of [`RecordedRow`] by id: what every backend's idempotency lookup returns.
pub(crate) fn existing(rows: Vec<RecordedRow>) -> Existing {
    rows.into_iter().map(|row| (row.id, StoredReply { request_hash: row.request_hash, reply: row.reply })).collect()
}

/// The holds with their authorizations, as [`HoldRow`]s; a backend appends its `IN` list.
pub(crate) const SELECT_HOLDS: &str = "SELECT h.id, p.payer, p.payee, p.currency, p.amount, p.fee, p.fee_bearer,
       h.held, h.expires_at_ms, h.state, h.captured, p.plugins, h.partition
     FROM holds h JOIN payments p ON p.id = h.id WHERE ";

/// A `holds` row joined with its authorization's `payments` row ([`SELECT_HOLDS`]).
#[derive(Debug)]
pub(crate) struct HoldRow {
    id: String,
    payer: String,
    payee: String,
    currency: String,
    amount: i64,
    fee: i64,
    fee_bearer: String,
    held: i64,
    expires_at_ms: i64,
    state: String,
    captured: i64,
    plugins: String,
    partition: Option<i64>,
}

impl<'r, R: Row> sqlx::FromRow<'r, R> for HoldRow
where
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(HoldRow {
            id: row.try_get("id")?,
            payer: row.try_get("payer")?,
            payee: row.try_get("payee")?,
            currency: row.try_get("currency")?,
            amount: row.try_get("amount")?,
            fee: row.try_get("fee")?,
            fee_bearer: row.try_get("fee_bearer")?,
            held: row.try_get("held")?,
            expires_at_ms: row.try_get("expires_at_ms")?,
            state: row.try_get("state")?,
            captured: row.try_get("captured")?,
            plugins: row.try_get("plugins")?,
            partition: row.try_get("partition")?,
        })
    }
}

impl TryFrom<HoldRow> for Hold {
    type Error = LedgerError;

    fn try_from(row: HoldRow) -> Result<Hold, LedgerError> {
        let corrupt = |what: String| LedgerError::Corrupt(what);
        Ok(Hold {
            id: PaymentId::new(row.id).map_err(|error| corrupt(error.to_string()))?,
            payer: parse_account_id(row.payer)?,
            payee: parse_account_id(row.payee)?,
            currency: parse_currency(&row.currency)?,
            amount: MinorUnits(row.amount),
            fee: MinorUnits(row.fee),
            fee_bearer: parse_fee_bearer(&row.fee_bearer)?,
            held: MinorUnits(row.held),
            expires_at_ms: row.expires_at_ms,
            state: HoldState::parse(&row.state)?,
            captured: MinorUnits(row.captured),
            plugins: row.plugins,
            partition: row
                .partition
                .map(|partition| u32::try_from(partition).map_err(|_| corrupt(format!("partition {partition}"))))
                .transpose()?,
        })
    }
}

/// A stored fee bearer.
fn parse_fee_bearer(text: &str) -> Result<FeeBearer, LedgerError> {
    match text {
        "payer" => Ok(FeeBearer::Payer),
        "payee" => Ok(FeeBearer::Payee),
        other => Err(LedgerError::Corrupt(format!("fee bearer `{other}`"))),
    }
}

/// Rows of [`HoldRow`] by authorization id: what every backend's hold read returns.
pub(crate) fn holds(rows: Vec<HoldRow>) -> Result<Holds, LedgerError> {
    rows.into_iter().map(|row| Hold::try_from(row).map(|hold| (hold.id.clone(), hold))).collect()
}

/// The payments a refund may take back from, as [`RefundableRow`]s; a backend appends its
/// condition on `p.id`. A capture's method and metadata are its authorization's.
pub(crate) const SELECT_REFUNDABLES: &str =
    "SELECT p.id, p.kind, p.status, p.payer, p.payee, p.currency, p.amount, p.refunded, p.plugins, p.fee,
            p.fee_bearer, p.fee_reversed, COALESCE(p.method, a.method) AS method,
            COALESCE(p.metadata, a.metadata) AS metadata, p.created_at_ms,
            (SELECT COUNT(*) FROM conversions c WHERE c.payment_id = p.id) AS conversions
     FROM payments p LEFT JOIN payments a ON a.id = p.parent WHERE ";

/// A `payments` row as a refund reads it ([`SELECT_REFUNDABLES`]).
#[derive(Debug)]
pub(crate) struct RefundableRow {
    id: String,
    kind: String,
    status: String,
    payer: String,
    payee: String,
    currency: String,
    amount: i64,
    refunded: i64,
    plugins: String,
    fee: i64,
    fee_bearer: String,
    fee_reversed: i64,
    method: Option<String>,
    metadata: Option<String>,
    created_at_ms: i64,
    conversions: i64,
}

impl<'r, R: Row> sqlx::FromRow<'r, R> for RefundableRow
where
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(RefundableRow {
            id: row.try_get("id")?,
            kind: row.try_get("kind")?,
            status: row.try_get("status")?,
            payer: row.try_get("payer")?,
            payee: row.try_get("payee")?,
            currency: row.try_get("currency")?,
            amount: row.try_get("amount")?,
            refunded: row.try_get("refunded")?,
            plugins: row.try_get("plugins")?,
            fee: row.try_get("fee")?,
            fee_bearer: row.try_get("fee_bearer")?,
            fee_reversed: row.try_get("fee_reversed")?,
            method: row.try_get("method")?,
            metadata: row.try_get("metadata")?,
            created_at_ms: row.try_get("created_at_ms")?,
            conversions: row.try_get("conversions")?,
        })
    }
}

impl TryFrom<RefundableRow> for Refundable {
    type Error = LedgerError;

    fn try_from(row: RefundableRow) -> Result<Refundable, LedgerError> {
        let posted =
            matches!((row.kind.as_str(), row.status.as_str()), ("payment", "approved") | ("capture", "captured"));
        Ok(Refundable {
            id: PaymentId::new(row.id).map_err(|error| LedgerError::Corrupt(error.to_string()))?,
            payer: parse_account_id(row.payer)?,
            payee: parse_account_id(row.payee)?,
            currency: parse_currency(&row.currency)?,
            amount: MinorUnits(row.amount),
            refunded: MinorUnits(row.refunded),
            posted,
            plugins: row.plugins,
            fee: MinorUnits(row.fee),
            fee_bearer: parse_fee_bearer(&row.fee_bearer)?,
            fee_reversed: MinorUnits(row.fee_reversed),
            method: row.method,
            metadata: row.metadata,
            at_ms: row.created_at_ms,
            converted: row.conversions > 0,
        })
    }
}

/// Rows of [`RefundableRow`] by id: what every backend's refundable read returns.
pub(crate) fn refundables(rows: Vec<RefundableRow>) -> Result<Refundables, LedgerError> {
    rows.into_iter().map(|row| Refundable::try_from(row).map(|found| (found.id.clone(), found))).collect()
}

/// The FX quotes with how many payments converted with each, as [`QuoteRow`]s; a backend
/// appends its condition on `q.id`.
pub(crate) const SELECT_QUOTES: &str =
    "SELECT q.id, q.payer, q.payee, q.currency, q.amount, q.counter_currency, q.counter_amount, q.rate,
            q.fx_plugin, q.created_at_ms, q.expires_at_ms,
            (SELECT COUNT(*) FROM conversions c WHERE c.quote_id = q.id) AS uses
     FROM fx_quotes q WHERE ";

/// An `fx_quotes` row as [`SELECT_QUOTES`] reads it.
#[derive(Debug)]
pub(crate) struct QuoteRow {
    id: String,
    payer: String,
    payee: String,
    currency: String,
    amount: i64,
    counter_currency: String,
    counter_amount: i64,
    rate: String,
    fx_plugin: String,
    created_at_ms: i64,
    expires_at_ms: i64,
    uses: i64,
}

impl<'r, R: Row> sqlx::FromRow<'r, R> for QuoteRow
where
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(QuoteRow {
            id: row.try_get("id")?,
            payer: row.try_get("payer")?,
            payee: row.try_get("payee")?,
            currency: row.try_get("currency")?,
            amount: row.try_get("amount")?,
            counter_currency: row.try_get("counter_currency")?,
            counter_amount: row.try_get("counter_amount")?,
            rate: row.try_get("rate")?,
            fx_plugin: row.try_get("fx_plugin")?,
            created_at_ms: row.try_get("created_at_ms")?,
            expires_at_ms: row.try_get("expires_at_ms")?,
            uses: row.try_get("uses")?,
        })
    }
}

impl TryFrom<QuoteRow> for QuoteState {
    type Error = LedgerError;

    fn try_from(row: QuoteRow) -> Result<QuoteState, LedgerError> {
        let quote = Quote {
            id: row.id,
            payer: parse_account_id(row.payer)?,
            payee: parse_account_id(row.payee)?,
            currency: parse_currency(&row.currency)?,
            amount: MinorUnits(row.amount),
            counter_currency: parse_currency(&row.counter_currency)?,
            counter_amount: MinorUnits(row.counter_amount),
            rate: row.rate.parse().map_err(|_| LedgerError::Corrupt(format!("rate `{}`", row.rate)))?,
            fx_plugin: row.fx_plugin,
            created_at_ms: row.created_at_ms,
            expires_at_ms: row.expires_at_ms,
        };
        Ok(QuoteState { quote, used: row.uses > 0 })
    }
}

/// Rows of [`QuoteRow`] by id: what every backend's quote read returns.
pub(crate) fn quotes(rows: Vec<QuoteRow>) -> Result<Quotes, LedgerError> {
    rows.into_iter().map(|row| QuoteState::try_from(row).map(|state| (state.quote.id.clone(), state))).collect()
}
