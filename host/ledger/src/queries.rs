//! Reads: a recorded payment, and an audit of the books.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Ledger, LedgerError, batch};

/// A recorded payment or deposit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoredPayment {
    /// Idempotency key.
    pub id: String,
    /// `payment` or `deposit`.
    pub kind: String,
    /// Fingerprint of the request that created it.
    pub request_hash: String,
    /// `approved` or `declined`.
    pub status: String,
    /// Stable code.
    pub code: String,
    /// The reply sent when it was decided, as JSON text.
    pub reply: String,
    /// Its entries: (account, signed minor units). Empty unless approved.
    pub entries: Vec<(String, i64)>,
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
    /// Accounts whose balance is below their floor. Always empty.
    pub accounts_below_floor: Vec<String>,
    /// Approved payments without entries. Always empty.
    pub approved_without_entries: Vec<String>,
    /// Declined payments with entries. Always empty.
    pub declined_with_entries: Vec<String>,
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
            ("an approved payment has no entries", &self.approved_without_entries),
            ("a declined payment has entries", &self.declined_with_entries),
        ];
        lists.into_iter().find_map(|(what, ids)| ids.first().map(|id| format!("{what}: `{id}` ({} in all)", ids.len())))
    }
}

impl Ledger {
    /// The payment or deposit recorded under `id`.
    pub async fn payment(&self, id: &str) -> Result<Option<StoredPayment>, LedgerError> {
        let row: Option<(String, String, String, String, String, String)> =
            sqlx::query_as("SELECT id, kind, request_hash, status, code, reply FROM payments WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let Some((id, kind, request_hash, status, code, reply)) = row else {
            return Ok(None);
        };
        let entries = sqlx::query_as("SELECT account_id, amount FROM entries WHERE payment_id = ? ORDER BY id")
            .bind(&id)
            .fetch_all(&self.pool)
            .await?;
        Ok(Some(StoredPayment { id, kind, request_hash, status, code, reply, entries }))
    }

    /// The fingerprint and reply recorded under `id`: the idempotency check before any work.
    pub async fn recorded_reply(&self, id: &str) -> Result<Option<(String, String)>, LedgerError> {
        let mut connection = self.pool.acquire().await?;
        Ok(batch::recorded(&mut connection, &[id]).await?.remove(id))
    }

    /// Checks conservation of money, balanced entries and balances against entries.
    pub async fn audit(&self) -> Result<Audit, LedgerError> {
        // One read transaction: every query sees the same snapshot, so a live ledger being
        // written to is audited as of one instant (WAL readers do not block the writer).
        let mut connection = self.pool.acquire().await?;
        sqlx::query("BEGIN").execute(&mut *connection).await?;
        let audit = audit_snapshot(&mut connection).await;
        sqlx::query("ROLLBACK").execute(&mut *connection).await?;
        audit
    }
}

async fn audit_snapshot(connection: &mut sqlx::SqliteConnection) -> Result<Audit, LedgerError> {
    let sums: Vec<(String, i64)> =
        sqlx::query_as("SELECT currency, SUM(balance) FROM accounts GROUP BY currency ORDER BY currency")
            .fetch_all(&mut *connection)
            .await?;
    let unbalanced: Vec<(String,)> =
        sqlx::query_as("SELECT payment_id FROM entries GROUP BY payment_id HAVING SUM(amount) <> 0")
            .fetch_all(&mut *connection)
            .await?;
    let drifted: Vec<(String,)> = sqlx::query_as(
        "SELECT a.id FROM accounts a LEFT JOIN entries e ON e.account_id = a.id
             GROUP BY a.id HAVING a.balance <> COALESCE(SUM(e.amount), 0)",
    )
    .fetch_all(&mut *connection)
    .await?;
    let accounts_below_floor =
        ids(connection, "SELECT id FROM accounts WHERE floor IS NOT NULL AND balance < floor ORDER BY id").await?;
    let approved_without_entries = ids(
        connection,
        "SELECT p.id FROM payments p WHERE p.status = 'approved'
             AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.payment_id = p.id) ORDER BY p.id",
    )
    .await?;
    let declined_with_entries = ids(
        connection,
        "SELECT p.id FROM payments p WHERE p.status = 'declined'
             AND EXISTS (SELECT 1 FROM entries e WHERE e.payment_id = p.id) ORDER BY p.id",
    )
    .await?;
    let outcomes: Vec<(String, i64)> =
        sqlx::query_as("SELECT kind || ' ' || status || ' ' || code, COUNT(*) FROM payments GROUP BY 1 ORDER BY 1")
            .fetch_all(&mut *connection)
            .await?;
    let fees: Vec<(String, i64)> =
        sqlx::query_as("SELECT currency, balance FROM accounts WHERE kind = 'fees' ORDER BY currency")
            .fetch_all(&mut *connection)
            .await?;
    Ok(Audit {
        balance_sum_by_currency: sums.into_iter().collect(),
        unbalanced_payments: unbalanced.into_iter().map(|(id,)| id).collect(),
        drifted_accounts: drifted.into_iter().map(|(id,)| id).collect(),
        accounts_below_floor,
        approved_without_entries,
        declined_with_entries,
        payments_by_outcome: outcomes
            .into_iter()
            .map(|(outcome, count)| (outcome, u64::try_from(count).unwrap_or_default()))
            .collect(),
        fees_by_currency: fees.into_iter().collect(),
    })
}

/// The ids a query of one text column returns, in its order.
async fn ids(connection: &mut sqlx::SqliteConnection, sql: &'static str) -> Result<Vec<String>, LedgerError> {
    let rows: Vec<(String,)> = sqlx::query_as(sql).fetch_all(connection).await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}
