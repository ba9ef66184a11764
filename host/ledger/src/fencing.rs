//! The ledger's side of partition ownership: fencing tokens and the ledger's identity.
//!
//! A node owns a partition under a lease, and claims it here before serving it: the claim
//! hands out the partition's next fencing token, and the ledger refuses any batch under an
//! older one (`partition_fences`), so a paused or cut-off owner cannot write after its
//! successor claimed the partition.
//! Nodes may share partitions only if they write one ledger, which the ledger's identity tells.
//! Which ledger a NATS deployment is bound to is recorded here too (`deployment_binding`):
//! the binding in NATS is a cache of it, so losing NATS's state can neither move a deployment
//! to another ledger nor stop it for good.

use std::collections::BTreeMap;

use crate::error::LedgerError;
use crate::handle::Ledger;
use crate::store;

/// Now, in milliseconds since the Unix epoch (when a binding was recorded, for operators).
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

impl Ledger {
    /// Claims `partitions` for a new owner before it serves them, and returns each one's
    /// fencing token: one more than any token the ledger has handed out for it. From this
    /// commit on, a batch under an older token is refused, even one the old owner decided
    /// before it was paused; so the ledger, not the lease store, orders the owners of a
    /// partition, and a lease store that was reset (its revisions start again at 1) cannot
    /// hand two owners tokens that pass. On PostgreSQL a claim waits for an old owner's batch
    /// that holds the partition's row (bounded by the lock timeout).
    pub async fn claim(&self, partitions: &[u32]) -> Result<BTreeMap<u32, u64>, LedgerError> {
        store::on_store!(&self.store, backend => {
            let mut transaction = backend.begin_write().await?;
            let mut tokens = BTreeMap::new();
            for partition in partitions {
                let (token,): (i64,) = sqlx::query_as(
                    "INSERT INTO partition_fences (partition, token) VALUES ($1, 1)
                     ON CONFLICT (partition) DO UPDATE SET token = partition_fences.token + 1
                     RETURNING token",
                )
                .bind(i64::from(*partition))
                .fetch_one(&mut *transaction)
                .await?;
                let token = u64::try_from(token).map_err(|_| LedgerError::Corrupt(format!("fence token {token}")))?;
                tokens.insert(*partition, token);
            }
            transaction.commit().await?;
            Ok(tokens)
        })
    }

    /// Every claimed partition's newest fencing token. An owner compares its own with it: a
    /// lower one means another node claimed the partition since, and every payment it posts
    /// there is refused, so it must give the partition up and take it again (a fresh claim)
    /// rather than hold a lease it can never write under.
    pub async fn fence_tokens(&self) -> Result<BTreeMap<u32, u64>, LedgerError> {
        let fences = self.store.fences().await?;
        fences
            .into_iter()
            .map(|(partition, token)| {
                let token = u64::try_from(token)
                    .map_err(|_| LedgerError::Corrupt(format!("fence of partition {partition}: token {token}")))?;
                Ok((partition, token))
            })
            .collect()
    }

    /// This ledger's identity, made at random when it was created: nodes that report the same
    /// identity write the same ledger (one SQLite file, or one PostgreSQL schema).
    pub async fn identity(&self) -> Result<String, LedgerError> {
        let (identity,): (String,) = store::on_store!(&self.store, backend => {
            sqlx::query_as("SELECT id FROM ledger_identity").fetch_one(&backend.pool).await?
        });
        Ok(identity)
    }

    /// The ledger `deployment` is bound to, as this ledger recorded it: its own identity if
    /// its nodes served the deployment, another's if they were refused because the deployment
    /// was bound there; `None` if its nodes never joined it.
    pub async fn deployment_binding(&self, deployment: &str) -> Result<Option<String>, LedgerError> {
        let row: Option<(String,)> = store::on_store!(&self.store, backend => {
            sqlx::query_as("SELECT ledger FROM deployment_binding WHERE deployment = $1")
                .bind(deployment)
                .fetch_optional(&backend.pool)
                .await?
        });
        Ok(row.map(|(ledger,)| ledger))
    }

    /// Records that `deployment` is bound to `ledger`, unless a binding is recorded already
    /// (the first record stands: only [`Ledger::adopt_deployment`] changes it). Returns the
    /// ledger recorded now, which is `ledger` only if nothing was recorded before.
    pub async fn record_deployment_binding(&self, deployment: &str, ledger: &str) -> Result<String, LedgerError> {
        store::on_store!(&self.store, backend => {
            let mut transaction = backend.begin_write().await?;
            sqlx::query(
                "INSERT INTO deployment_binding (deployment, ledger, recorded_at_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (deployment) DO NOTHING",
            )
            .bind(deployment)
            .bind(ledger)
            .bind(now_ms())
            .execute(&mut *transaction)
            .await?;
            let (recorded,): (String,) = sqlx::query_as("SELECT ledger FROM deployment_binding WHERE deployment = $1")
                .bind(deployment)
                .fetch_one(&mut *transaction)
                .await?;
            transaction.commit().await?;
            Ok(recorded)
        })
    }

    /// An operator's command: binds `deployment` to this ledger, whatever was recorded before
    /// (returned). The only way a recorded binding changes.
    pub async fn adopt_deployment(&self, deployment: &str) -> Result<Option<String>, LedgerError> {
        let identity = self.identity().await?;
        store::on_store!(&self.store, backend => {
            let mut transaction = backend.begin_write().await?;
            let before: Option<(String,)> =
                sqlx::query_as("SELECT ledger FROM deployment_binding WHERE deployment = $1")
                    .bind(deployment)
                    .fetch_optional(&mut *transaction)
                    .await?;
            sqlx::query(
                "INSERT INTO deployment_binding (deployment, ledger, recorded_at_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (deployment) DO UPDATE SET ledger = excluded.ledger, recorded_at_ms = excluded.recorded_at_ms",
            )
            .bind(deployment)
            .bind(&identity)
            .bind(now_ms())
            .execute(&mut *transaction)
            .await?;
            transaction.commit().await?;
            Ok(before.map(|(ledger,)| ledger))
        })
    }
}
