//! The ledger's side of partition ownership: fencing tokens and the ledger's identity.
//!
//! A node owns a partition under a lease whose token grows with every new owner. The ledger
//! keeps, per partition, the newest token it has been written under and refuses anything older
//! (`partition_fences`), so a paused or cut-off owner cannot write after its successor did.
//! Nodes may share partitions only if they write one ledger, which the ledger's identity tells.

use std::collections::BTreeMap;

use super::{Ledger, LedgerError, store};

impl Ledger {
    /// Claims `partitions` (partition, lease token) for a new lease owner before it serves
    /// them: from this commit on, a batch under an older token for any of them is refused,
    /// even one the old owner decided before it was paused. Fails whole with
    /// [`LedgerError::Fenced`] if the ledger has seen a newer token for any of them (the lease
    /// store was reset, or this lease is stale): then the caller must not serve them.
    pub async fn claim(&self, partitions: &[(u32, u64)]) -> Result<(), LedgerError> {
        let fences = partitions
            .iter()
            .map(|(partition, token)| {
                let token = i64::try_from(*token)
                    .map_err(|_| LedgerError::Invalid(format!("lease token {token} is out of range")))?;
                Ok((*partition, token))
            })
            .collect::<Result<BTreeMap<u32, i64>, LedgerError>>()?;
        store::on_store!(&self.store, backend => backend.claim(&fences).await)
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
