//! The leases this node holds, and the requests on the lease bucket: take (create), renew
//! (update on the last revision), release (delete on the last revision).
//!
//! Renewals run on a task of their own ([`renew`]), so a slow handover or claim in a round
//! never lets this node's other leases lapse. A lease that NATS says another node has taken
//! (or that expired there) is closed at once without handing over; one whose renewals get no
//! answer is kept, because no answer is what a replicated bucket electing a leader gives, and
//! the lease usually survives it (the ledger's fence, not the lease, keeps a successor safe).
//! Dropping it would close every partition of every node each time a bucket's leader is lost.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{CreateErrorKind, Store, UpdateErrorKind};
use futures::future::join_all;

use crate::jetstream::{self as js, Cause, Damage, JetStreamError};
use crate::ports::{ClusterObserver, Partitions};
use crate::records::{Lease, encode, lease_key};
use crate::repeats::Repeats;
use crate::settings::Identity;

/// A lease this node holds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Held {
    /// The partition's fencing token, from the ledger's claim.
    pub(crate) token: u64,
    /// The bus's number for this opening of the partition.
    pub(crate) opening: u64,
    /// The lease's latest revision, which the next renewal (or the release) must match.
    pub(crate) revision: u64,
    /// When the request that last renewed (or took) it was sent: the lease ends a TTL later
    /// at the latest.
    pub(crate) renewed: Instant,
}

/// The leases this node holds, shared by the rounds and the renewals. Its lock is never held
/// across an await; `renewing` is held while a renewal is in flight, so a release never races
/// a renewal for the lease's revision.
#[derive(Clone, Debug, Default)]
pub(crate) struct Holdings {
    held: Arc<Mutex<BTreeMap<u32, Held>>>,
    renewing: Arc<tokio::sync::Mutex<()>>,
}

impl Holdings {
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<u32, Held>) -> T) -> T {
        f(&mut self.held.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn partitions(&self) -> BTreeSet<u32> {
        self.with(|held| held.keys().copied().collect())
    }

    /// Removes `partitions` once no renewal is in flight (at most one request bound), so the
    /// revisions returned are the ones a release must match.
    pub(crate) async fn remove(&self, partitions: &[u32]) -> Vec<Option<Held>> {
        let _no_renewal_in_flight = self.renewing.lock().await;
        self.with(|held| partitions.iter().map(|partition| held.remove(partition)).collect())
    }
}

/// The lease bucket, as this node writes to it.
#[derive(Clone, Debug)]
pub(crate) struct LeaseBucket {
    pub(crate) store: Store,
    pub(crate) identity: Identity,
    /// Told of every failed request, so the rounds re-create the bucket if it is gone.
    pub(crate) damage: Damage,
}

impl LeaseBucket {
    fn value(&self, token: Option<u64>, lag: Option<u64>) -> bytes::Bytes {
        let identity = &self.identity;
        encode(&Lease {
            node: identity.node.clone(),
            ledger: identity.ledger.clone(),
            partitions: identity.partitions,
            token,
            lag,
        })
    }

    /// Creates the leases of `partitions` (compare-and-set on "no value"); the revision and
    /// the time the request was sent of each one taken. Those another node took first are left
    /// out silently; failures are logged.
    pub(crate) async fn take(&self, partitions: &[u32]) -> BTreeMap<u32, (u64, Instant)> {
        let value = self.value(None, None);
        let attempts = join_all(partitions.iter().map(|partition| {
            let value = value.clone();
            async move {
                let sent = Instant::now();
                let created = js::request("taking a lease", async {
                    match self.store.create(lease_key(*partition), value).await {
                        Ok(revision) => Ok(Some(revision)),
                        Err(error) if error.kind() == CreateErrorKind::AlreadyExists => Ok(None),
                        Err(error) => Err(error),
                    }
                });
                (*partition, sent, created.await)
            }
        }))
        .await;
        let mut taken = BTreeMap::new();
        let mut failed: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (partition, sent, created) in attempts {
            match created {
                Ok(Some(revision)) => {
                    taken.insert(partition, (revision, sent));
                }
                Ok(None) => {}
                Err(error) => failed.entry(error.to_string()).or_default().push(partition),
            }
        }
        if !failed.is_empty() {
            self.damage.report();
        }
        for (error, partitions) in failed {
            tracing::warn!(%error, ?partitions, "could not take leases");
        }
        taken
    }

    /// Deletes the lease of `partition` on `revision`, so the next owner's watch wakes it at
    /// once; one request bound.
    pub(crate) async fn release(&self, partition: u32, revision: u64) -> Result<(), JetStreamError> {
        js::request("releasing a lease", self.store.delete_expect_revision(lease_key(partition), Some(revision))).await
    }

    /// Releases every lease in `leases` at once (partition → revision); one request bound.
    pub(crate) async fn release_all(&self, leases: impl IntoIterator<Item = (u32, u64)>) {
        join_all(leases.into_iter().map(|(partition, revision)| async move {
            if let Err(error) = self.release(partition, revision).await {
                self.damage.report();
                tracing::warn!(partition, %error, "could not release the lease; it will expire instead");
            }
        }))
        .await;
    }
}

/// How a renewal ended.
enum Renewal {
    /// At this new revision.
    Renewed(u64),
    /// Another node holds the lease now.
    Lost,
}

/// Renews, every sixth of the TTL, each lease last renewed a third of the TTL ago. A lease
/// another node holds now is dropped and its partition closed at once; one that expired on
/// the server and that nobody took is created again, and kept. A renewal that gets no answer keeps the lease and
/// is tried again at the next pass: NATS answers again within an election on a clustered
/// NATS, and if the lease expired meanwhile, the answer then says so. Until it does, the
/// partition stays open, which is safe: a node that took the lease after it expired claimed
/// the partition in the ledger first, and the ledger refuses this node's payments under the
/// older token.
pub(crate) async fn renew<P: Partitions>(
    bucket: LeaseBucket,
    holdings: Holdings,
    partitions: P,
    observer: Arc<dyn ClusterObserver>,
    ttl: Duration,
) {
    let mut unanswered = Repeats::default();
    loop {
        tokio::time::sleep(ttl / 6).await;
        let renewing = holdings.renewing.lock().await;
        let due: Vec<(u32, Held)> = holdings.with(|held| {
            held.iter().filter(|(_, held)| held.renewed.elapsed() >= ttl / 3).map(|(p, held)| (*p, *held)).collect()
        });
        if due.is_empty() {
            continue;
        }
        let lags = partitions.lags().await;
        let renewals = due.iter().map(|(partition, held)| {
            let (store, value) = (&bucket.store, bucket.value(Some(held.token), lags.get(partition).copied()));
            async move {
                let sent = Instant::now();
                let renewed = js::request("renewing a lease", async {
                    match store.update(lease_key(*partition), value.clone(), held.revision).await {
                        Ok(revision) => Ok(Renewal::Renewed(revision)),
                        // Expired on the server (an outage longer than the TTL: a replicated
                        // bucket electing a leader) and nobody took it: take it again at once
                        // instead of closing the partition. If another node claimed the
                        // partition meanwhile, the round's fence check gives it up.
                        Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => {
                            match store.create(lease_key(*partition), value).await {
                                Ok(revision) => Ok(Renewal::Renewed(revision)),
                                Err(error) if error.kind() == CreateErrorKind::AlreadyExists => Ok(Renewal::Lost),
                                Err(error) => Err(Cause::from(error)),
                            }
                        }
                        Err(error) => Err(Cause::from(error)),
                    }
                });
                (*partition, sent, renewed.await)
            }
        });
        let results = join_all(renewals).await;
        let mut failed: Vec<(u32, JetStreamError)> = Vec::new();
        let lost: Vec<(u32, u64)> = holdings.with(|held| {
            let mut lost = Vec::new();
            for (partition, sent, renewed) in results {
                let Some(lease) = held.get_mut(&partition) else { continue };
                match renewed {
                    Ok(Renewal::Renewed(revision)) => (lease.revision, lease.renewed) = (revision, sent),
                    Ok(Renewal::Lost) => {
                        observer.renewal_failed();
                        lost.push((partition, lease.opening));
                    }
                    Err(error) => {
                        observer.renewal_failed();
                        failed.push((partition, error));
                    }
                }
            }
            for (partition, _) in &lost {
                held.remove(partition);
            }
            lost
        });
        drop(renewing);
        match failed.first() {
            None => unanswered.clear(),
            Some((_, error)) => {
                bucket.damage.report();
                // One line per outage (and every 30 s while it lasts), not one per lease per pass.
                if let Some(suppressed) = unanswered.admit("could not renew leases") {
                    let partitions: Vec<u32> = failed.iter().map(|(partition, _)| *partition).collect();
                    tracing::warn!(%error, ?partitions, suppressed, "could not renew leases; keeping them and their partitions until NATS answers (the ledger fences a successor)");
                }
            }
        }
        if !lost.is_empty() {
            observer.leases_lost(u64::try_from(lost.len()).unwrap_or(u64::MAX));
            let lost_partitions: Vec<u32> = lost.iter().map(|(partition, _)| *partition).collect();
            tracing::warn!(partitions = ?lost_partitions, "leases lost (expired, or taken over); closing their partitions");
            // Closed on tasks of their own, so the next renewals are not held up; by opening,
            // so a partition this node has taken again meanwhile stays open.
            for (partition, opening) in lost {
                let partitions = partitions.clone();
                tokio::spawn(async move { partitions.close_opening(partition, opening).await });
            }
        }
    }
}
