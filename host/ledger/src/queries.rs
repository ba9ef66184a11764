//! Reads: a recorded payment with its history, a hold, a refundable payment, the holds due, and
//! an audit of the books.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::conversion::ConversionRecord;
use crate::error::LedgerError;
use crate::handle::Ledger;
use crate::hold::{Hold, HoldState};
use crate::refund::Refundable;
use crate::statements::{PAYMENT_LINE, PaymentLine};
use crate::store::sql::{HoldRow, SELECT_HOLDS, balance_with_credits};
use crate::store::{Postgres, Sqlite, Store, on_store};
use crate::transfer::StoredReply;
use sqlx::{FromRow as _, Row as _};
use wasmpay_protocol::PaymentId;

/// A recorded payment, deposit or operation (authorization, capture, void, refund): what it
/// was, how it was decided, what it posted, and what happened to it since.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StoredPayment {
    /// Idempotency key.
    pub id: String,
    /// `payment`, `deposit`, `authorization`, `capture`, `void` or `refund`.
    pub kind: String,
    /// Fingerprint of the request that created it (kept from the API's answer: it says
    /// nothing a client needs).
    #[serde(skip)]
    pub request_hash: String,
    /// Its status, as in its reply.
    pub status: String,
    /// Stable code.
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
    /// The client's metadata.
    pub metadata: Option<serde_json::Value>,
    /// `name@version` of the plugins that decided it, in pipeline order.
    pub plugins: Vec<String>,
    /// When it was recorded (Unix milliseconds, the deciding node's clock).
    pub at_ms: i64,
    /// The payment it acts on (a capture's or void's authorization, a refund's payment).
    pub parent: Option<String>,
    /// What refunds have moved back of it.
    pub refunded: i64,
    /// A refund's: what of its payment's fee it gave back. A payment's or capture's: what of
    /// its fee its refunds gave back in all.
    pub fee_reversed: i64,
    /// The client key it came with over HTTP, if any.
    pub client_key: Option<String>,
    /// An authorization's hold: its state and how it ended.
    pub hold: Option<HoldRecord>,
    /// A cross-border payment's conversion: what its payee was paid in its own currency, at
    /// which rate. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion: Option<ConversionRecord>,
    /// What acted on it since, oldest first: captures, voids and refunds.
    pub history: Vec<PaymentLine>,
    /// The reply sent when it was decided, as JSON text (shown as the JSON it is).
    #[serde(serialize_with = "as_json")]
    #[schema(value_type = wasmpay_protocol::Reply)]
    pub reply: String,
    /// Its entries: (account, signed minor units). Empty unless it posted.
    #[serde(serialize_with = "as_postings")]
    #[schema(value_type = Vec<Posting>)]
    pub entries: Vec<(String, i64)>,
}

/// One entry of a recorded payment, as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Posting<'a> {
    /// The account.
    pub account: &'a str,
    /// Signed minor units: negative for a debit.
    pub amount: i64,
}

/// A stored reply as the JSON it is (`null` if it ever were not: the ledger only stores what
/// it rendered, so a record is shown rather than refused).
fn as_json<S: serde::Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serde_json::from_str::<serde_json::Value>(text).unwrap_or_default().serialize(serializer)
}

fn as_postings<S: serde::Serializer>(entries: &[(String, i64)], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(entries.iter().map(|(account, amount)| Posting { account, amount: *amount }))
}

/// A `holds` row as a payment's record reads it: state, held, expires_at_ms, captured,
/// closed_by, closed_at_ms.
type HoldColumns = (String, i64, i64, i64, Option<String>, Option<i64>);

/// An authorization's hold, as its record shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HoldRecord {
    /// `open`, `captured`, `voided` or `expired`.
    pub state: HoldState,
    /// What it reserves (or reserved) on the payer.
    pub held: i64,
    /// When it lapses (lapsed), Unix milliseconds.
    pub expires_at_ms: i64,
    /// What a capture posted of it.
    pub captured: i64,
    /// The capture or void that closed it.
    pub closed_by: Option<String>,
    /// When it was closed.
    pub closed_at_ms: Option<i64>,
}

/// The state of the books: what must always hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Audit {
    /// Sum of all balances per currency. Always zero.
    pub balance_sum_by_currency: BTreeMap<String, i64>,
    /// Payments whose entries do not sum to zero. Always empty.
    pub unbalanced_payments: Vec<String>,
    /// Accounts whose balance differs from the sum of their entries. Always empty.
    pub drifted_accounts: Vec<String>,
    /// Accounts whose available balance (balance − held) is below their floor. Always empty.
    pub accounts_below_floor: Vec<String>,
    /// Accounts whose `held` differs from the sum of their open holds. Always empty.
    pub drifted_holds: Vec<String>,
    /// Holds not closed exactly once by what their state says (a captured hold by one
    /// capture, a voided one by one void, an open or expired one by none), or that captured
    /// more than was authorized. Always empty.
    pub holds_not_closed_once: Vec<String>,
    /// Payments whose refunds moved back more than they moved or gave back more than their
    /// fee, or whose `refunded` or `fee_reversed` differs from the sum of their refunds', and
    /// refunds of payments that moved nothing. Always empty.
    pub refunds_beyond_payments: Vec<String>,
    /// Posted payments, captures, refunds and settlements whose entries on fee accounts differ
    /// from their fee (a refund's: its fee less what it gave back of its payment's). Always
    /// empty.
    pub fees_off_entries: Vec<String>,
    /// Cross-border payments whose entries are not their conversion (the payee paid its
    /// recorded amount in its currency from that currency's FX account), conversions of
    /// anything but an approved payment, and approved payments into an account of another
    /// currency without a conversion. Always empty.
    pub conversions_off_entries: Vec<String>,
    /// Approved payments, captures, refunds and settlements without entries. Always empty.
    pub approved_without_entries: Vec<String>,
    /// Records that post nothing (declines, authorizations, voids) with entries. Always empty.
    pub declined_with_entries: Vec<String>,
    /// Payments with an entry for an account that does not exist, or whose own payer or
    /// payee does not exist; and ids in entries that name no payment. Always empty (the
    /// PostgreSQL schema leaves these to the ledger and to this check, not to foreign keys).
    pub dangling_references: Vec<String>,
    /// Recorded payments by (status, code).
    pub payments_by_outcome: BTreeMap<String, u64>,
    /// Fees collected per currency, in minor units.
    pub fees_by_currency: BTreeMap<String, i64>,
}

impl Audit {
    /// Whether every invariant of the books holds.
    pub fn is_balanced(&self) -> bool {
        self.first_violation().is_none()
    }

    /// The first invariant that does not hold, said as a sentence; `None` when the books are
    /// sound. The order is fixed, so two runs over the same data name the same violation.
    pub fn first_violation(&self) -> Option<String> {
        if let Some((currency, sum)) = self.balance_sum_by_currency.iter().find(|(_, sum)| **sum != 0) {
            return Some(format!("conservation: the {currency} balances sum to {sum}, not 0"));
        }
        let lists = [
            ("a payment's entries do not sum to zero", &self.unbalanced_payments),
            ("a balance differs from the sum of its entries", &self.drifted_accounts),
            ("a balance is below its floor", &self.accounts_below_floor),
            ("an account's held differs from its open holds", &self.drifted_holds),
            ("a hold was not closed exactly once", &self.holds_not_closed_once),
            ("refunds moved back what their payment did not move", &self.refunds_beyond_payments),
            ("a payment's fee entries differ from its fee", &self.fees_off_entries),
            ("a cross-border payment's entries differ from its conversion", &self.conversions_off_entries),
            ("an approved payment has no entries", &self.approved_without_entries),
            ("a declined payment has entries", &self.declined_with_entries),
            ("a payment or entry references nothing", &self.dangling_references),
        ];
        lists.into_iter().find_map(|(what, ids)| ids.first().map(|id| format!("{what}: `{id}` ({} in all)", ids.len())))
    }
}

impl Ledger {
    /// The payment, deposit or operation recorded under `id`, with its hold, its history and
    /// its entries, read in one snapshot.
    pub async fn payment(&self, id: &str) -> Result<Option<StoredPayment>, LedgerError> {
        on_store!(&self.store, backend => {
            let mut snapshot = backend.begin_snapshot().await?;
            let connection = &mut *snapshot;
            let sql = format!(
                "SELECT {PAYMENT_LINE}, request_hash, reply, plugins, metadata, client_key FROM payments p WHERE id = $1"
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut *connection).await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let line = PaymentLine::from_row(&row)?;
            let (request_hash, reply, plugins, metadata): (String, String, String, Option<String>) =
                (row.try_get("request_hash")?, row.try_get("reply")?, row.try_get("plugins")?, row.try_get("metadata")?);
            let client_key: Option<String> = row.try_get("client_key")?;
            let hold: Option<HoldColumns> = sqlx::query_as(
                "SELECT state, held, expires_at_ms, captured, closed_by, closed_at_ms FROM holds WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *connection)
            .await?;
            let hold = hold
                .map(|(state, held, expires_at_ms, captured, closed_by, closed_at_ms)| {
                    Ok::<_, LedgerError>(HoldRecord {
                        state: HoldState::parse(&state)?,
                        held,
                        expires_at_ms,
                        captured,
                        closed_by,
                        closed_at_ms,
                    })
                })
                .transpose()?;
            let conversion: Option<(String, i64, String, String, Option<String>)> = sqlx::query_as(
                "SELECT currency, amount, rate, fx_plugin, quote_id FROM conversions WHERE payment_id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *connection)
            .await?;
            let conversion = conversion.map(|(counter_currency, counter_amount, rate, fx_plugin, quote)| {
                ConversionRecord { counter_currency, counter_amount, rate, quote, fx_plugin }
            });
            let sql = format!("SELECT {PAYMENT_LINE} FROM payments p WHERE parent = $1 ORDER BY created_at_ms, id");
            let history = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_all(&mut *connection).await?;
            let entries = sqlx::query_as("SELECT account_id, amount FROM entries WHERE payment_id = $1 ORDER BY id")
                .bind(id)
                .fetch_all(&mut *connection)
                .await?;
            let PaymentLine {
                id,
                kind,
                status,
                code,
                payer,
                payee,
                currency,
                amount,
                fee,
                fee_bearer,
                method,
                at_ms,
                parent,
                refunded,
                fee_reversed,
            } = line;
            Ok(Some(StoredPayment {
                id,
                kind,
                request_hash,
                status,
                code,
                payer,
                payee,
                currency,
                amount,
                fee,
                fee_bearer,
                method,
                metadata: metadata.and_then(|text| serde_json::from_str(&text).ok()),
                plugins: plugins.split(',').filter(|key| !key.is_empty()).map(str::to_owned).collect(),
                at_ms,
                parent,
                refunded,
                fee_reversed,
                client_key,
                hold,
                conversion,
                history,
                reply,
                entries,
            }))
        })
    }

    /// The authorization `id` and its hold, as last committed. Its terms never change once
    /// written; its state does, under its payer's lock, so a caller that renders a capture's
    /// replies from it leaves the state to the ledger's batch.
    pub async fn hold(&self, id: &PaymentId) -> Result<Option<Hold>, LedgerError> {
        Ok(match &self.store {
            Store::Sqlite(backend) => {
                let mut connection = backend.pool.acquire().await?;
                Sqlite::holds_in(&mut connection, std::slice::from_ref(id)).await?.remove(id)
            }
            Store::Postgres(backend) => {
                let mut connection = backend.pool.acquire().await?;
                Postgres::holds_in(&mut connection, std::slice::from_ref(id)).await?.remove(id)
            }
        })
    }

    /// At most `limit` open holds of `partition` whose expiry is at or before `now_ms`, the
    /// soonest first: what the partition's owner releases next.
    pub async fn due_holds(&self, partition: u32, now_ms: i64, limit: u32) -> Result<Vec<Hold>, LedgerError> {
        let sql = format!(
            "{SELECT_HOLDS} h.state = 'open' AND h.partition = $1 AND h.expires_at_ms <= $2
             ORDER BY h.expires_at_ms, h.id LIMIT $3"
        );
        let rows: Vec<HoldRow> = on_store!(&self.store, backend => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(partition))
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&backend.pool)
            .await?);
        rows.into_iter().map(Hold::try_from).collect()
    }

    /// The payment `id` as a refund sees it, as last committed: whom it moved money between,
    /// how much, and what refunds have moved back. Only refunds change the last, under the lock
    /// of its payee, so a caller that renders a refund's replies from it leaves the decision to
    /// the ledger's batch.
    pub async fn refundable(&self, id: &PaymentId) -> Result<Option<Refundable>, LedgerError> {
        Ok(match &self.store {
            Store::Sqlite(backend) => {
                let mut connection = backend.pool.acquire().await?;
                Sqlite::refundables_in(&mut connection, std::slice::from_ref(id)).await?.remove(id)
            }
            Store::Postgres(backend) => {
                let mut connection = backend.pool.acquire().await?;
                Postgres::refundables_in(&mut connection, std::slice::from_ref(id)).await?.remove(id)
            }
        })
    }

    /// The fingerprint and reply recorded under `id`: the idempotency check before any work.
    pub async fn recorded_reply(&self, id: &str) -> Result<Option<StoredReply>, LedgerError> {
        on_store!(&self.store, backend => {
            let mut connection = backend.pool.acquire().await?;
            Ok(backend.recorded_in(&mut connection, &[id]).await?.remove(id))
        })
    }

    /// Checks conservation of money, balanced entries and balances against entries.
    pub async fn audit(&self) -> Result<Audit, LedgerError> {
        // One read transaction: every query sees the same snapshot, so a live ledger being
        // written to is audited as of one instant.
        on_store!(&self.store, backend => {
            let mut snapshot = backend.begin_snapshot().await?;
            let connection = &mut *snapshot;
            let text = |sql| sqlx::query_as::<_, (String,)>(sql);
            let counted = |sql| sqlx::query_as::<_, (String, i64)>(sql);
            // Sorted here: the backends' collations order `_` differently.
            let ids = |rows: Vec<(String,)>| {
                let mut ids: Vec<String> = rows.into_iter().map(|(id,)| id).collect();
                ids.sort();
                ids
            };
            Ok(Audit {
                balance_sum_by_currency: counted(SUMS).fetch_all(&mut *connection).await?.into_iter().collect(),
                unbalanced_payments: ids(text(UNBALANCED).fetch_all(&mut *connection).await?),
                drifted_accounts: ids(text(DRIFTED).fetch_all(&mut *connection).await?),
                accounts_below_floor: ids(text(BELOW_FLOOR).fetch_all(&mut *connection).await?),
                drifted_holds: ids(text(DRIFTED_HOLDS).fetch_all(&mut *connection).await?),
                holds_not_closed_once: ids(text(HOLDS_NOT_CLOSED_ONCE).fetch_all(&mut *connection).await?),
                refunds_beyond_payments: ids(text(REFUNDS_BEYOND_PAYMENTS).fetch_all(&mut *connection).await?),
                fees_off_entries: ids(text(FEES_OFF_ENTRIES).fetch_all(&mut *connection).await?),
                conversions_off_entries: ids(text(CONVERSIONS_OFF_ENTRIES).fetch_all(&mut *connection).await?),
                approved_without_entries: ids(text(APPROVED_WITHOUT_ENTRIES).fetch_all(&mut *connection).await?),
                declined_with_entries: ids(text(DECLINED_WITH_ENTRIES).fetch_all(&mut *connection).await?),
                dangling_references: ids(text(DANGLING).fetch_all(&mut *connection).await?),
                payments_by_outcome: counted(OUTCOMES)
                    .fetch_all(&mut *connection)
                    .await?
                    .into_iter()
                    .map(|(outcome, count)| (outcome, u64::try_from(count).unwrap_or_default()))
                    .collect(),
                fees_by_currency: counted(FEES).fetch_all(&mut *connection).await?.into_iter().collect(),
            })
        })
    }
}

// The audit's queries, in SQL both backends run. Balances include credit sub-balances.
const SUMS: &str = concat!(
    "SELECT currency, CAST(SUM(balance) AS BIGINT) FROM (SELECT currency, ",
    balance_with_credits!(),
    " AS balance FROM accounts) AS a GROUP BY currency ORDER BY currency"
);
/// Per unit: a settlement's legs in two units must each sum to zero, not only together.
const UNBALANCED: &str =
    "SELECT payment_id FROM (SELECT e.payment_id FROM entries e LEFT JOIN accounts a ON a.id = e.account_id
     GROUP BY e.payment_id, a.currency HAVING SUM(e.amount) <> 0) AS u GROUP BY payment_id ORDER BY payment_id";
const DRIFTED: &str = concat!(
    "SELECT id FROM (SELECT id, ",
    balance_with_credits!(),
    " AS balance FROM accounts) AS a
     WHERE balance <> COALESCE((SELECT SUM(e.amount) FROM entries e WHERE e.account_id = a.id), 0) ORDER BY id"
);
const BELOW_FLOOR: &str = concat!(
    "SELECT id FROM accounts WHERE floor IS NOT NULL AND ",
    balance_with_credits!(),
    " - held < floor ORDER BY id"
);
const DRIFTED_HOLDS: &str = "SELECT a.id FROM accounts a
     WHERE a.held <> COALESCE((SELECT SUM(h.held) FROM holds h WHERE h.account_id = a.id AND h.state = 'open'), 0)
     ORDER BY a.id";
const HOLDS_NOT_CLOSED_ONCE: &str = "SELECT h.id FROM holds h JOIN payments a ON a.id = h.id
     WHERE a.kind <> 'authorization' OR a.status <> 'authorized' OR h.captured > a.amount
        OR (h.state = 'captured') <> (h.captured > 0)
        OR (SELECT COUNT(*) FROM payments c WHERE c.parent = h.id AND c.status = 'captured')
           <> CASE WHEN h.state = 'captured' THEN 1 ELSE 0 END
        OR (SELECT COUNT(*) FROM payments v WHERE v.parent = h.id AND v.status = 'voided')
           <> CASE WHEN h.state = 'voided' THEN 1 ELSE 0 END
     UNION
     SELECT a.id FROM payments a WHERE a.status = 'authorized'
        AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.id = a.id)";
const REFUNDS_BEYOND_PAYMENTS: &str = "SELECT p.id FROM payments p
     WHERE p.refunded > p.amount
        OR p.refunded <> COALESCE((SELECT SUM(r.amount) FROM payments r
                                   WHERE r.parent = p.id AND r.kind = 'refund' AND r.status = 'refunded'), 0)
        OR (p.refunded > 0 AND NOT ((p.kind = 'payment' AND p.status = 'approved')
                                    OR (p.kind = 'capture' AND p.status = 'captured')))
        OR (p.kind <> 'refund' AND p.fee_reversed > p.fee)
        OR (p.kind <> 'refund' AND p.fee_reversed <> COALESCE((SELECT SUM(r.fee_reversed) FROM payments r
                                   WHERE r.parent = p.id AND r.kind = 'refund' AND r.status = 'refunded'), 0))
        OR (p.kind = 'refund' AND p.status <> 'refunded' AND p.fee_reversed > 0)
     UNION
     SELECT r.id FROM payments r WHERE r.kind = 'refund' AND r.status = 'refunded'
        AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.id = r.parent AND p.payer = r.payee AND p.payee = r.payer)";
const FEES_OFF_ENTRIES: &str = "SELECT p.id FROM payments p
     WHERE p.status IN ('approved', 'captured', 'refunded', 'settled')
       AND COALESCE((SELECT SUM(e.amount) FROM entries e JOIN accounts a ON a.id = e.account_id
                     WHERE e.payment_id = p.id AND a.kind = 'fees'), 0)
           <> CASE WHEN p.kind = 'refund' THEN p.fee - p.fee_reversed ELSE p.fee END
     ORDER BY p.id";
const CONVERSIONS_OFF_ENTRIES: &str =
    "SELECT c.payment_id FROM conversions c LEFT JOIN payments p ON p.id = c.payment_id
     WHERE p.id IS NULL OR p.kind <> 'payment' OR p.status <> 'approved' OR c.currency = p.currency
        OR c.amount <> COALESCE((SELECT SUM(e.amount) FROM entries e JOIN accounts a ON a.id = e.account_id
                                 WHERE e.payment_id = p.id AND e.account_id = p.payee AND a.currency = c.currency), 0)
        OR c.amount <> -COALESCE((SELECT SUM(e.amount) FROM entries e JOIN accounts a ON a.id = e.account_id
                                  WHERE e.payment_id = p.id AND a.kind = 'fx' AND a.currency = c.currency), 0)
     UNION
     SELECT p.id FROM payments p JOIN accounts b ON b.id = p.payee
     WHERE p.kind = 'payment' AND p.status = 'approved' AND b.currency <> p.currency
       AND NOT EXISTS (SELECT 1 FROM conversions c WHERE c.payment_id = p.id)";
const APPROVED_WITHOUT_ENTRIES: &str =
    "SELECT p.id FROM payments p WHERE p.status IN ('approved', 'captured', 'refunded', 'settled')
     AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.payment_id = p.id) ORDER BY p.id";
const DECLINED_WITH_ENTRIES: &str =
    "SELECT p.id FROM payments p WHERE p.status NOT IN ('approved', 'captured', 'refunded', 'settled')
     AND EXISTS (SELECT 1 FROM entries e WHERE e.payment_id = p.id) ORDER BY p.id";
const DANGLING: &str = "SELECT e.payment_id FROM entries e
     WHERE NOT EXISTS (SELECT 1 FROM payments p WHERE p.id = e.payment_id)
        OR NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = e.account_id)
     UNION
     SELECT p.id FROM payments p
     WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = p.payer)
        OR NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = p.payee)";
const OUTCOMES: &str = "SELECT kind || ' ' || status || ' ' || code, COUNT(*) FROM payments GROUP BY 1 ORDER BY 1";
const FEES: &str =
    concat!("SELECT currency, ", balance_with_credits!(), " FROM accounts WHERE kind = 'fees' ORDER BY currency");
