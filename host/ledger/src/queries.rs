//! Reads: a recorded payment, and an audit of the books.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Ledger, LedgerError};

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
    /// Recorded payments by (status, code).
    pub payments_by_outcome: BTreeMap<String, u64>,
    /// Fees collected per currency, in minor units.
    pub fees_by_currency: BTreeMap<String, i64>,
}

impl Audit {
    /// Whether money is conserved and every balance matches its entries.
    pub fn is_balanced(&self) -> bool {
        self.balance_sum_by_currency.values().all(|sum| *sum == 0)
            && self.unbalanced_payments.is_empty()
            && self.drifted_accounts.is_empty()
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
        Ok(sqlx::query_as("SELECT request_hash, reply FROM payments WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Checks conservation of money, balanced entries and balances against entries.
    pub async fn audit(&self) -> Result<Audit, LedgerError> {
        let sums: Vec<(String, i64)> =
            sqlx::query_as("SELECT currency, SUM(balance) FROM accounts GROUP BY currency ORDER BY currency")
                .fetch_all(&self.pool)
                .await?;
        let unbalanced: Vec<(String,)> =
            sqlx::query_as("SELECT payment_id FROM entries GROUP BY payment_id HAVING SUM(amount) <> 0")
                .fetch_all(&self.pool)
                .await?;
        let drifted: Vec<(String,)> = sqlx::query_as(
            "SELECT a.id FROM accounts a LEFT JOIN entries e ON e.account_id = a.id
             GROUP BY a.id HAVING a.balance <> COALESCE(SUM(e.amount), 0)",
        )
        .fetch_all(&self.pool)
        .await?;
        let outcomes: Vec<(String, i64)> =
            sqlx::query_as("SELECT kind || ' ' || status || ' ' || code, COUNT(*) FROM payments GROUP BY 1 ORDER BY 1")
                .fetch_all(&self.pool)
                .await?;
        let fees: Vec<(String, i64)> =
            sqlx::query_as("SELECT currency, balance FROM accounts WHERE kind = 'fees' ORDER BY currency")
                .fetch_all(&self.pool)
                .await?;
        Ok(Audit {
            balance_sum_by_currency: sums.into_iter().collect(),
            unbalanced_payments: unbalanced.into_iter().map(|(id,)| id).collect(),
            drifted_accounts: drifted.into_iter().map(|(id,)| id).collect(),
            payments_by_outcome: outcomes
                .into_iter()
                .map(|(outcome, count)| (outcome, u64::try_from(count).unwrap_or_default()))
                .collect(),
            fees_by_currency: fees.into_iter().collect(),
        })
    }
}
