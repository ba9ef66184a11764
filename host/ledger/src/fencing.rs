//! The ledger's side of partition ownership: fencing tokens and the ledger's identity.
//!
//! A node owns a partition under a lease, and claims it here before serving it: the claim
//! hands out the partition's next fencing token, and the ledger refuses any batch under an
//! older one (`partition_fences`), so a paused or cut-off owner cannot write after its
//! successor claimed the partition.
//! Nodes may share partitions only if they write one ledger, which the ledger's identity tells.

use std::collections::BTreeMap;

use crate::error::LedgerError;
use crate::handle::Ledger;
use crate::store;

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

    /// This ledger's identity, made at random when it was created: nodes that report the same
    /// identity write the same ledger (one SQLite file, or one PostgreSQL schema).
    pub async fn identity(&self) -> Result<String, LedgerError> {
        let (identity,): (String,) = store::on_store!(&self.store, backend => {
            sqlx::query_as("SELECT id FROM ledger_identity").fetch_one(&backend.pool).await?
        });
        Ok(identity)
    }
}
