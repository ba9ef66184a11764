//! The rounds that keep a node's leases matching the assignment.
//!
//! Each round (every heartbeat, and whenever a bucket changes): announce this node, renew the
//! leases that are due, drop those that are lost, hand over those the assignment now gives to
//! another member, and take those it gives to this node that nobody holds. Taking a lease is a
//! create on its key; the revision it returns is the fencing token, claimed in the ledger before
//! the partition is opened. Handing over is close (stop taking, answer what was taken), then a
//! delete on the lease's revision, which wakes the next owner through its watch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{CreateErrorKind, Store, UpdateErrorKind};
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use super::buckets::{self, REQUEST_TIMEOUT, Table};
use super::{ClusterError, ClusterSettings, ClusterView, Identity, LeaseView, MemberView, Views};
use crate::assignment;
use crate::bus::Intake;
use crate::metrics::Metrics;
use wasmpay_ledger::{Ledger, LedgerError};

const MEMBERS: &str = "wasmpay_members";
const LEASES: &str = "wasmpay_leases";

/// A member's record in `wasmpay_members`, under its node name.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Member {
    ledger: String,
    http: String,
    partitions: u32,
}

/// A lease's value in `wasmpay_leases`, under `partition.<p>`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Lease {
    node: String,
    ledger: String,
    /// The fencing token, known from the first renewal on (a create cannot know its revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<u64>,
    /// Durable mode: stored payments not yet delivered to the owner, as of the last renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lag: Option<u64>,
}

/// A lease this node holds.
#[derive(Clone, Copy, Debug)]
struct Held {
    /// The revision it was taken at: its fencing token.
    token: u64,
    /// Its latest revision, which the next renewal must match.
    revision: u64,
    /// When it was last renewed (or taken).
    renewed: Instant,
}

fn lease_key(partition: u32) -> String {
    format!("partition.{partition}")
}

/// The state of the rounds.
pub(super) struct Owner {
    client: async_nats::Client,
    identity: Identity,
    /// The lease (and membership) TTL in effect.
    ttl: Duration,
    heartbeat: Duration,
    members: Store,
    leases: Store,
    member_table: Table,
    lease_table: Table,
    watches: Vec<JoinHandle<()>>,
    changed: Arc<Notify>,
    intake: Intake,
    ledger: Ledger,
    metrics: Arc<Metrics>,
    views: Views,
    held: BTreeMap<u32, Held>,
    heartbeat_at: Option<Instant>,
    /// Partitions reported as held by a node on another ledger, so each is said once.
    foreign: BTreeSet<u32>,
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner").field("node", &self.identity.node).field("held", &self.held).finish_non_exhaustive()
    }
}

impl Owner {
    /// Opens (or creates) the buckets and starts watching them.
    pub(super) async fn start(
        client: async_nats::Client,
        identity: Identity,
        settings: ClusterSettings,
        intake: Intake,
        ledger: Ledger,
        metrics: Arc<Metrics>,
        views: Views,
    ) -> Result<Owner, ClusterError> {
        let jetstream = async_nats::jetstream::new(client.clone());
        let wanted = Duration::from_millis(settings.lease_ttl_ms.max(1));
        let (members, _) = buckets::open(&jetstream, MEMBERS, wanted, settings.replicas).await?;
        let (leases, ttl) = buckets::open(&jetstream, LEASES, wanted, settings.replicas).await?;
        if ttl != wanted {
            tracing::warn!(configured = ?wanted, in_effect = ?ttl, "the lease bucket exists with another TTL; using the bucket's");
        }
        let changed = Arc::new(Notify::new());
        let (member_table, member_watch) = Table::watch(members.clone(), changed.clone());
        let (lease_table, lease_watch) = Table::watch(leases.clone(), changed.clone());
        Ok(Owner {
            client,
            identity,
            ttl,
            heartbeat: Duration::from_millis(settings.heartbeat_ms.max(1)).min(ttl / 3),
            members,
            leases,
            member_table,
            lease_table,
            watches: vec![member_watch, lease_watch],
            changed,
            intake,
            ledger,
            metrics,
            views,
            held: BTreeMap::new(),
            heartbeat_at: None,
            foreign: BTreeSet::new(),
        })
    }

    /// Runs rounds until `stop`, then hands everything over and leaves.
    pub(super) async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        loop {
            tokio::select! {
                _ = &mut stop => break,
                () = tokio::time::sleep(self.heartbeat) => {}
                () = self.changed.notified() => {}
            }
            self.round().await;
        }
        self.leave().await;
    }

    /// One round: announce, renew, drop the lost, hand over, take.
    pub(super) async fn round(&mut self) {
        self.announce().await;
        self.renew().await;
        let assigned = self.assignment();
        let mine: BTreeSet<u32> = assigned
            .iter()
            .filter(|(_, member)| member.as_deref() == Some(self.identity.node.as_str()))
            .map(|(partition, _)| *partition)
            .collect();
        let leaving: Vec<u32> = self.held.keys().copied().filter(|partition| !mine.contains(partition)).collect();
        if !leaving.is_empty() {
            self.hand_over(&leaving).await;
        }
        let wanted: Vec<u32> = mine.iter().copied().filter(|partition| !self.held.contains_key(partition)).collect();
        if !wanted.is_empty() {
            self.take(&wanted).await;
        }
        self.publish_view(&assigned);
    }

    /// Puts this node's member record, once per heartbeat.
    async fn announce(&mut self) {
        if self.heartbeat_at.is_some_and(|at| at.elapsed() < self.heartbeat) {
            return;
        }
        let record = Member {
            ledger: self.identity.ledger.clone(),
            http: self.identity.http.clone(),
            partitions: self.identity.partitions,
        };
        let body = serde_json::to_vec(&record).unwrap_or_default();
        match tokio::time::timeout(REQUEST_TIMEOUT, self.members.put(&self.identity.node, body.into())).await {
            Ok(Ok(_)) => self.heartbeat_at = Some(Instant::now()),
            Ok(Err(error)) => tracing::warn!(%error, "could not announce this node"),
            Err(_) => tracing::warn!("could not announce this node within {REQUEST_TIMEOUT:?}"),
        }
    }

    /// Renews every lease last renewed a third of the TTL ago. A lease whose revision moved
    /// belongs to another node now; one not renewed for nearly a TTL (NATS unreachable) may have
    /// expired on the server: both are closed at once, without handing over (the ledger fences
    /// whatever this node still posts under them).
    async fn renew(&mut self) {
        let due: Vec<(u32, Held)> = self
            .held
            .iter()
            .filter(|(_, held)| held.renewed.elapsed() >= self.ttl / 3)
            .map(|(partition, held)| (*partition, *held))
            .collect();
        let lags = self.intake.lags().await;
        let renewals = due.iter().map(|(partition, held)| {
            let (leases, value) = (&self.leases, self.lease_value(Some(held.token), lags.get(partition).copied()));
            async move {
                let sent = Instant::now();
                let renewed =
                    tokio::time::timeout(REQUEST_TIMEOUT, leases.update(lease_key(*partition), value, held.revision))
                        .await;
                (*partition, sent, renewed)
            }
        });
        let mut lost = Vec::new();
        for (partition, sent, renewed) in join_all(renewals).await {
            let Some(held) = self.held.get_mut(&partition) else { continue };
            match renewed {
                Ok(Ok(revision)) => (held.revision, held.renewed) = (revision, sent),
                Ok(Err(error)) if error.kind() == UpdateErrorKind::WrongLastRevision => {
                    self.metrics.lease_renewal_failures.fetch_add(1, Ordering::Relaxed);
                    lost.push(partition);
                }
                failed => {
                    self.metrics.lease_renewal_failures.fetch_add(1, Ordering::Relaxed);
                    let error = match failed {
                        Ok(Err(error)) => error.to_string(),
                        _ => format!("no answer within {REQUEST_TIMEOUT:?}"),
                    };
                    if held.renewed.elapsed() + self.heartbeat >= self.ttl {
                        tracing::warn!(partition, %error, "could not renew the lease before it expires");
                        lost.push(partition);
                    } else {
                        tracing::warn!(partition, %error, "could not renew the lease; trying again");
                    }
                }
            }
        }
        if !lost.is_empty() {
            tracing::warn!(partitions = ?lost, "leases lost (expired or taken over); closing their partitions");
            join_all(lost.iter().map(|partition| self.intake.close(*partition))).await;
            for partition in lost {
                self.held.remove(&partition);
            }
        }
    }

    /// Every partition's member by rendezvous hashing over the live members on this node's
    /// ledger, this node included.
    fn assignment(&self) -> BTreeMap<u32, Option<String>> {
        let live = self.member_table.live(self.ttl);
        let mut names: Vec<String> = live
            .into_iter()
            .filter(|(_, seen)| {
                serde_json::from_slice::<Member>(&seen.value).is_ok_and(|member| {
                    member.ledger == self.identity.ledger && member.partitions == self.identity.partitions
                })
            })
            .map(|(node, _)| node)
            .collect();
        if !names.contains(&self.identity.node) {
            names.push(self.identity.node.clone());
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        (0..self.identity.partitions)
            .map(|partition| (partition, assignment::owner(partition, &names).map(str::to_owned)))
            .collect()
    }

    /// Hands `partitions` over: stops taking them and answers what they took, then releases
    /// their leases so the next owner starts at once.
    async fn hand_over(&mut self, partitions: &[u32]) {
        join_all(partitions.iter().map(|partition| self.intake.close(*partition))).await;
        let releases =
            partitions.iter().filter_map(|partition| self.held.remove(partition).map(|held| (*partition, held)));
        let releases: Vec<(u32, Held)> = releases.collect();
        let leases = &self.leases;
        join_all(releases.iter().map(|(partition, held)| async move {
            let released = tokio::time::timeout(
                REQUEST_TIMEOUT,
                leases.delete_expect_revision(lease_key(*partition), Some(held.revision)),
            )
            .await;
            if !matches!(released, Ok(Ok(()))) {
                tracing::warn!(partition, "could not release the lease; it will expire instead");
            }
        }))
        .await;
        self.metrics.handoffs.fetch_add(u64::try_from(partitions.len()).unwrap_or(u64::MAX), Ordering::Relaxed);
        tracing::info!(?partitions, "handed partitions over");
    }

    /// Takes the leases of `partitions` that nobody holds, claims them in the ledger, and
    /// opens them.
    async fn take(&mut self, partitions: &[u32]) {
        let holders = self.lease_table.live(self.ttl);
        let mut free = Vec::new();
        let mut foreign: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for partition in partitions {
            match holders.get(&lease_key(*partition)).and_then(|seen| serde_json::from_slice::<Lease>(&seen.value).ok())
            {
                Some(lease) if lease.ledger != self.identity.ledger => {
                    if self.foreign.insert(*partition) {
                        foreign.entry(lease.node).or_default().push(*partition);
                    }
                }
                // Held (by another member handing it over, or by a dead one until it expires).
                Some(_) => {}
                None => free.push(*partition),
            }
        }
        for (holder, partitions) in foreign {
            tracing::error!(
                %holder,
                ?partitions,
                "partitions are held by a node that writes another ledger: this node cannot serve them \
                 (nodes share partitions only on one ledger; a SQLite node is a cluster of one)"
            );
        }
        if free.is_empty() {
            return;
        }
        let value = self.lease_value(None, None);
        let leases = &self.leases;
        let attempts = join_all(free.iter().map(|partition| {
            let value = value.clone();
            async move {
                let created = tokio::time::timeout(REQUEST_TIMEOUT, leases.create(lease_key(*partition), value)).await;
                (*partition, Instant::now(), created)
            }
        }))
        .await;
        let mut taken = Vec::new();
        for (partition, at, created) in attempts {
            match created {
                Ok(Ok(revision)) => taken.push((partition, Held { token: revision, revision, renewed: at })),
                Ok(Err(error)) if error.kind() == CreateErrorKind::AlreadyExists => {}
                Ok(Err(error)) => tracing::warn!(partition, %error, "could not take the lease"),
                Err(_) => tracing::warn!(partition, "could not take the lease within {REQUEST_TIMEOUT:?}"),
            }
        }
        if taken.is_empty() {
            return;
        }
        let claims: Vec<(u32, u64)> = taken.iter().map(|(partition, held)| (*partition, held.token)).collect();
        if let Err(error) = self.ledger.claim(&claims).await {
            match &error {
                LedgerError::Fenced(newer) => tracing::error!(
                    partitions = ?newer,
                    "the ledger has seen newer lease tokens than the lease bucket hands out: was the bucket deleted? \
                     These partitions cannot be served until it is mended (docs/cluster.md)"
                ),
                _ => tracing::warn!(%error, "could not claim the partitions in the ledger; releasing their leases"),
            }
            self.held.extend(taken.iter().copied());
            let partitions: Vec<u32> = taken.iter().map(|(partition, _)| *partition).collect();
            self.release(&partitions).await;
            return;
        }
        let opened = join_all(taken.iter().map(|(partition, held)| {
            let intake = &self.intake;
            async move { (*partition, intake.open(*partition, held.token).await) }
        }))
        .await;
        let mut failed = Vec::new();
        for ((partition, held), (_, result)) in taken.into_iter().zip(opened) {
            self.held.insert(partition, held);
            self.foreign.remove(&partition);
            if let Err(error) = result {
                tracing::warn!(partition, %error, "could not subscribe to the partition; releasing its lease");
                failed.push(partition);
            }
        }
        if !failed.is_empty() {
            self.release(&failed).await;
        }
        tracing::info!(partitions = ?claims.iter().map(|(partition, _)| *partition).collect::<Vec<_>>(), "took partitions");
    }

    /// Releases leases without handing over (nothing was taken under them).
    async fn release(&mut self, partitions: &[u32]) {
        for partition in partitions {
            if let Some(held) = self.held.remove(partition) {
                let release = self.leases.delete_expect_revision(lease_key(*partition), Some(held.revision));
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, release).await;
            }
        }
    }

    /// Hands every partition over and withdraws the membership.
    async fn leave(mut self) {
        let partitions: Vec<u32> = self.held.keys().copied().collect();
        if self.connected() {
            if !partitions.is_empty() {
                self.hand_over(&partitions).await;
            }
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, self.members.delete(&self.identity.node)).await;
        } else {
            // Nothing can be released without the server: the leases and the membership expire.
            join_all(partitions.iter().map(|partition| self.intake.close(*partition))).await;
        }
        for watch in &self.watches {
            watch.abort();
        }
        self.metrics.partitions_owned.store(0, Ordering::Relaxed);
        tracing::info!("left the cluster");
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn lease_value(&self, token: Option<u64>, lag: Option<u64>) -> bytes::Bytes {
        let lease = Lease { node: self.identity.node.clone(), ledger: self.identity.ledger.clone(), token, lag };
        serde_json::to_vec(&lease).unwrap_or_default().into()
    }

    fn publish_view(&self, assigned: &BTreeMap<u32, Option<String>>) {
        let members: Vec<MemberView> = self
            .member_table
            .live(self.ttl)
            .into_iter()
            .filter_map(|(node, seen)| {
                let member: Member = serde_json::from_slice(&seen.value).ok()?;
                Some((node.clone(), MemberView { node, ledger: member.ledger, http: member.http }))
            })
            .collect::<BTreeMap<String, MemberView>>()
            .into_values()
            .collect();
        let holders: HashMap<String, buckets::Seen> = self.lease_table.live(self.ttl);
        let leases = assigned
            .iter()
            .map(|(partition, member)| {
                let seen = holders.get(&lease_key(*partition));
                let lease =
                    seen.and_then(|seen| Some((serde_json::from_slice::<Lease>(&seen.value).ok()?, seen.revision)));
                // A lease not renewed yet has no token in its value: its revision is its token.
                let token = match self.held.get(partition) {
                    Some(held) => Some(held.token),
                    None => lease.as_ref().map(|(lease, revision)| lease.token.unwrap_or(*revision)),
                };
                let lag = lease.as_ref().and_then(|(lease, _)| lease.lag);
                let owner = lease.map(|(lease, _)| lease.node);
                LeaseView { partition: *partition, assigned: member.clone(), owner, token, lag }
            })
            .collect();
        let owned: Vec<u32> = self.held.keys().copied().collect();
        self.metrics.partitions_owned.store(u64::try_from(owned.len()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.views.set(ClusterView {
            node: self.identity.node.clone(),
            ledger: self.identity.ledger.clone(),
            partitions: self.identity.partitions,
            lease_ttl_ms: u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
            members,
            leases,
            owned,
        });
    }
}
