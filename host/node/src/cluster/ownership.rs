//! The rounds that keep a node's leases matching the assignment, and the renewals that keep
//! them alive.
//!
//! Each round (every heartbeat, and whenever a bucket changes): announce this node, hand over
//! the partitions the assignment now gives to another member, and take those it gives to this
//! node that nobody holds. Taking a lease is a create on its key; the partition is then claimed
//! in the ledger, which hands out its fencing token, and only then opened. Handing over is
//! close (stop taking, answer what was taken), then a delete on the lease's revision, which
//! wakes the next owner through its watch.
//!
//! Renewals run on a task of their own ([`renew`]), so a slow handover or claim in a round
//! never lets this node's other leases lapse; a lease that could not be renewed in time, or
//! that another node has taken, is closed at once without handing over (the ledger fences
//! whatever this node still posts under it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{CreateErrorKind, Store, UpdateErrorKind};
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use super::binding;
use super::buckets::{self, REQUEST_TIMEOUT, Table};
use super::{ClusterError, ClusterSettings, ClusterView, Identity, LeaseView, MemberView, Views};
use crate::assignment;
use crate::bus::Intake;
use crate::metrics::Metrics;
use wasmpay_ledger::Ledger;

pub(super) const MEMBERS: &str = "wasmpay_members";
const LEASES: &str = "wasmpay_leases";
/// How long claiming partitions in the ledger may take (PostgreSQL waits for an old owner's
/// batch holding a partition's fence row, up to its 2 s lock timeout).
const CLAIM_TIMEOUT: Duration = Duration::from_secs(5);

/// A member's record in `wasmpay_members`, under its node name.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Member {
    pub(super) ledger: String,
    http: String,
    partitions: u32,
}

/// A lease's value in `wasmpay_leases`, under `partition.<p>`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Lease {
    node: String,
    ledger: String,
    /// The holder's partition count: a lease key means one partition only among nodes that
    /// partition alike.
    partitions: u32,
    /// The fencing token the ledger handed out, known from the first renewal on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<u64>,
    /// Durable mode: stored payments not yet delivered to the owner, as of the last renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lag: Option<u64>,
}

/// A lease this node holds.
#[derive(Clone, Copy, Debug)]
struct Held {
    /// The partition's fencing token, from the ledger's claim.
    token: u64,
    /// The bus's number for this opening of the partition.
    opening: u64,
    /// The lease's latest revision, which the next renewal must match.
    revision: u64,
    /// When the request that last renewed (or took) it was sent: the lease ends a TTL later
    /// at the latest.
    renewed: Instant,
}

/// The leases this node holds, shared by the rounds and the renewals. Its lock is never held
/// across an await; `renewing` is held while a renewal is in flight, so a release never races
/// a renewal for the lease's revision.
#[derive(Clone, Debug, Default)]
struct Holdings {
    held: Arc<Mutex<BTreeMap<u32, Held>>>,
    renewing: Arc<tokio::sync::Mutex<()>>,
}

impl Holdings {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<u32, Held>) -> T) -> T {
        f(&mut self.held.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn partitions(&self) -> BTreeSet<u32> {
        self.with(|held| held.keys().copied().collect())
    }
}

fn lease_key(partition: u32) -> String {
    format!("partition.{partition}")
}

/// What a lease's value says about its holder.
#[derive(Clone, Debug)]
struct LeaseValue {
    identity: Identity,
}

impl LeaseValue {
    fn of(&self, token: Option<u64>, lag: Option<u64>) -> bytes::Bytes {
        let lease = Lease {
            node: self.identity.node.clone(),
            ledger: self.identity.ledger.clone(),
            partitions: self.identity.partitions,
            token,
            lag,
        };
        serde_json::to_vec(&lease).unwrap_or_default().into()
    }
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
    tasks: Vec<JoinHandle<()>>,
    changed: Arc<Notify>,
    intake: Intake,
    ledger: Ledger,
    metrics: Arc<Metrics>,
    views: Views,
    holdings: Holdings,
    heartbeat_at: Option<Instant>,
    /// When the watches were last started again.
    rewatched: Option<Instant>,
    /// Why this node may serve nothing: the NATS deployment is bound to another ledger.
    refused: Option<String>,
    /// When the binding was last read again while refused.
    rebound_at: Option<Instant>,
    /// The binding's bucket.
    binding: Store,
    /// Partitions reported as held by a node on another ledger (or partitioning), so each is
    /// said once.
    foreign: BTreeSet<u32>,
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner").field("node", &self.identity.node).finish_non_exhaustive()
    }
}

impl Owner {
    /// Opens (or creates) the buckets, starts watching them and renewing what this node holds.
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
        let binding = binding::open(&jetstream, settings.replicas).await?;
        let refused = binding::bind(&binding, &identity, true).await?;
        let (members, _) = buckets::open(&jetstream, MEMBERS, Some(wanted), settings.replicas).await?;
        let (leases, ttl) = buckets::open(&jetstream, LEASES, Some(wanted), settings.replicas).await?;
        if ttl != wanted {
            tracing::warn!(configured = ?wanted, in_effect = ?ttl, "the lease bucket exists with another TTL; using the bucket's");
        }
        let changed = Arc::new(Notify::new());
        let (member_table, member_watch) = Table::watch(members.clone(), changed.clone());
        let (lease_table, lease_watch) = Table::watch(leases.clone(), changed.clone());
        let holdings = Holdings::default();
        let renewals = tokio::spawn(renew(
            leases.clone(),
            holdings.clone(),
            LeaseValue { identity: identity.clone() },
            intake.clone(),
            metrics.clone(),
            ttl,
        ));
        Ok(Owner {
            client,
            identity,
            ttl,
            heartbeat: Duration::from_millis(settings.heartbeat_ms.max(1)).min(ttl / 3),
            members,
            leases,
            member_table,
            lease_table,
            tasks: vec![member_watch, lease_watch, renewals],
            changed,
            intake,
            ledger,
            metrics,
            views,
            holdings,
            heartbeat_at: None,
            rewatched: None,
            refused,
            rebound_at: Some(Instant::now()),
            binding,
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

    /// One round: announce, hand over, take.
    pub(super) async fn round(&mut self) {
        self.announce().await;
        let assigned = self.assignment();
        // Read again once a TTL: a refused node binds the deployment once an operator unbound
        // it; a serving node stops at once if the deployment was bound to another ledger.
        if self.rebound_at.is_none_or(|at| at.elapsed() >= self.ttl) && self.connected() {
            self.rebound_at = Some(Instant::now());
            match binding::bind(&self.binding, &self.identity, false).await {
                Ok(refused) => {
                    if refused.is_some() && self.refused.is_none() {
                        let held: Vec<u32> = self.holdings.partitions().into_iter().collect();
                        self.hand_over(&held).await;
                    }
                    self.refused = refused;
                }
                Err(error) => tracing::warn!(%error, "could not read the deployment's binding"),
            }
        }
        if self.refused.is_some() {
            self.publish_view(&assigned);
            return;
        }
        let mine: BTreeSet<u32> = assigned
            .iter()
            .filter(|(_, member)| member.as_deref() == Some(self.identity.node.as_str()))
            .map(|(partition, _)| *partition)
            .collect();
        let held = self.holdings.partitions();
        let leaving: Vec<u32> = held.iter().copied().filter(|partition| !mine.contains(partition)).collect();
        if !leaving.is_empty() {
            self.hand_over(&leaving).await;
        }
        let wanted: Vec<u32> = mine.iter().copied().filter(|partition| !held.contains(partition)).collect();
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
            Ok(Ok(_)) => {
                // This node's own announcements must come back through the watch; if the last
                // ones did not, the watches went quiet and the tables are stale.
                let now = Instant::now();
                let seen = self.member_table.seen_at(&self.identity.node);
                let quiet = self.heartbeat_at.is_some_and(|at| now.duration_since(at) < self.heartbeat * 2)
                    && seen.is_none_or(|seen| now.duration_since(seen) > self.heartbeat * 4);
                if quiet && self.rewatched.is_none_or(|at| at.elapsed() > self.ttl) {
                    tracing::warn!("the bucket watches went quiet; watching again");
                    self.member_table.rewatch();
                    self.lease_table.rewatch();
                    self.rewatched = Some(now);
                }
                self.heartbeat_at = Some(now);
            }
            Ok(Err(error)) => tracing::warn!(%error, "could not announce this node"),
            Err(_) => tracing::warn!("could not announce this node within {REQUEST_TIMEOUT:?}"),
        }
    }

    /// The instant the tables' ages are measured at: now, unless this node's own announcements
    /// have stopped coming back (JetStream unreachable, or electing a leader); then the last
    /// time they did. Without a way to hear the others, a node must not conclude they died
    /// and take everything, so their records age only while its own keep arriving.
    fn tables_now(&self) -> Instant {
        let now = Instant::now();
        match self.member_table.seen_at(&self.identity.node) {
            Some(seen) => (seen + self.heartbeat * 2).min(now),
            None => now,
        }
    }

    /// Every partition's member by rendezvous hashing over the live members on this node's
    /// ledger and partitioning, this node included.
    fn assignment(&self) -> BTreeMap<u32, Option<String>> {
        let live = self.member_table.live(self.ttl, self.tables_now());
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

    /// Hands `partitions` over: stops taking them and answers what they took (renewing their
    /// leases meanwhile), then releases the leases so the next owner starts at once. A
    /// partition whose worker did not answer everything in time is not released: its lease
    /// expires instead, and the ledger fences what this node still posts.
    async fn hand_over(&mut self, partitions: &[u32]) {
        let closed = join_all(partitions.iter().map(|partition| self.intake.close(*partition))).await;
        let releases: Vec<(u32, Held, bool)> = {
            let _no_renewal_in_flight = self.holdings.renewing.lock().await;
            self.holdings.with(|held| {
                partitions
                    .iter()
                    .zip(closed)
                    .filter_map(|(partition, answered)| Some((*partition, held.remove(partition)?, answered)))
                    .collect()
            })
        };
        let leases = &self.leases;
        join_all(releases.iter().filter(|(_, _, answered)| *answered).map(|(partition, held, _)| async move {
            let release = leases.delete_expect_revision(lease_key(*partition), Some(held.revision));
            if !matches!(tokio::time::timeout(REQUEST_TIMEOUT, release).await, Ok(Ok(()))) {
                tracing::warn!(partition, "could not release the lease; it will expire instead");
            }
        }))
        .await;
        self.metrics.handoffs.fetch_add(u64::try_from(releases.len()).unwrap_or(u64::MAX), Ordering::Relaxed);
        tracing::info!(?partitions, "handed partitions over");
    }

    /// Takes the leases of `partitions` that nobody holds, claims them in the ledger (which
    /// hands out their fencing tokens), and opens them.
    async fn take(&mut self, partitions: &[u32]) {
        let free = self.free(partitions);
        if free.is_empty() {
            return;
        }
        let value = LeaseValue { identity: self.identity.clone() }.of(None, None);
        let leases = &self.leases;
        let attempts = join_all(free.iter().map(|partition| {
            let value = value.clone();
            async move {
                let sent = Instant::now();
                let created = tokio::time::timeout(REQUEST_TIMEOUT, leases.create(lease_key(*partition), value)).await;
                (*partition, sent, created)
            }
        }))
        .await;
        let mut taken: BTreeMap<u32, (u64, Instant)> = BTreeMap::new();
        let mut failed: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (partition, sent, created) in attempts {
            match created {
                Ok(Ok(revision)) => {
                    taken.insert(partition, (revision, sent));
                }
                Ok(Err(error)) if error.kind() == CreateErrorKind::AlreadyExists => {}
                Ok(Err(error)) => failed.entry(error.to_string()).or_default().push(partition),
                Err(_) => failed.entry(format!("no answer within {REQUEST_TIMEOUT:?}")).or_default().push(partition),
            }
        }
        for (error, partitions) in failed {
            tracing::warn!(%error, ?partitions, "could not take leases");
        }
        if taken.is_empty() {
            return;
        }
        let partitions: Vec<u32> = taken.keys().copied().collect();
        let tokens = match tokio::time::timeout(CLAIM_TIMEOUT, self.ledger.claim(&partitions)).await {
            Ok(Ok(tokens)) => tokens,
            failed => {
                let error = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("no answer within {CLAIM_TIMEOUT:?}"),
                };
                tracing::warn!(%error, "could not claim the partitions in the ledger; releasing their leases");
                self.release(&taken).await;
                return;
            }
        };
        let opened = join_all(tokens.iter().map(|(partition, token)| {
            let intake = &self.intake;
            async move { (*partition, intake.open(*partition, *token).await) }
        }))
        .await;
        let mut failed = BTreeMap::new();
        for (partition, result) in opened {
            let (Some(token), Some((revision, renewed))) = (tokens.get(&partition), taken.get(&partition)) else {
                continue;
            };
            match result {
                Ok(opening) => {
                    // Due for renewal at once, so the lease's value shows the token soon.
                    let renewed = renewed.checked_sub(self.ttl / 3).unwrap_or(*renewed);
                    let held = Held { token: *token, opening, revision: *revision, renewed };
                    self.holdings.with(|holdings| holdings.insert(partition, held));
                    self.foreign.remove(&partition);
                }
                Err(error) => {
                    tracing::warn!(partition, %error, "could not open the partition; releasing its lease");
                    failed.insert(partition, (*revision, *renewed));
                }
            }
        }
        if !failed.is_empty() {
            self.release(&failed).await;
        }
        tracing::info!(partitions = ?tokens.keys().collect::<Vec<_>>(), "took partitions");
    }

    /// Those of `partitions` whose lease nobody holds, as far as this node has seen; says once
    /// which are held by a node that writes another ledger or partitions differently.
    fn free(&mut self, partitions: &[u32]) -> Vec<u32> {
        let holders = self.lease_table.live(self.ttl, self.tables_now());
        let mut free = Vec::new();
        let mut foreign: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for partition in partitions {
            let lease = holders.get(&lease_key(*partition));
            match lease.map(|seen| serde_json::from_slice::<Lease>(&seen.value)) {
                None => free.push(*partition),
                Some(Ok(lease))
                    if lease.ledger == self.identity.ledger && lease.partitions == self.identity.partitions => {}
                Some(lease) => {
                    if self.foreign.insert(*partition) {
                        let holder = lease.map_or_else(|_| "(unreadable lease)".to_owned(), |lease| lease.node);
                        foreign.entry(holder).or_default().push(*partition);
                    }
                }
            }
        }
        for (holder, partitions) in foreign {
            tracing::error!(
                %holder,
                ?partitions,
                "partitions are held by a node that writes another ledger or partitions differently: this node \
                 cannot serve them (nodes share partitions only on one ledger; a SQLite node is a cluster of one)"
            );
        }
        free
    }

    /// Releases leases that were taken but never served.
    async fn release(&self, taken: &BTreeMap<u32, (u64, Instant)>) {
        for (partition, (revision, _)) in taken {
            let release = self.leases.delete_expect_revision(lease_key(*partition), Some(*revision));
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, release).await;
        }
    }

    /// Withdraws the membership (so the others stop assigning partitions to this node), then
    /// hands every partition over.
    async fn leave(mut self) {
        let partitions: Vec<u32> = self.holdings.partitions().into_iter().collect();
        if self.connected() {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, self.members.delete(&self.identity.node)).await;
            if !partitions.is_empty() {
                self.hand_over(&partitions).await;
            }
        } else {
            // Nothing can be released without the server: the leases and the membership expire.
            join_all(partitions.iter().map(|partition| self.intake.close(*partition))).await;
        }
        for task in &self.tasks {
            task.abort();
        }
        self.metrics.partitions_owned.store(0, Ordering::Relaxed);
        tracing::info!("left the cluster");
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn publish_view(&self, assigned: &BTreeMap<u32, Option<String>>) {
        let members: Vec<MemberView> = self
            .member_table
            .live(self.ttl, self.tables_now())
            .into_iter()
            .filter_map(|(node, seen)| {
                let member: Member = serde_json::from_slice(&seen.value).ok()?;
                Some((node.clone(), MemberView { node, ledger: member.ledger, http: member.http }))
            })
            .collect::<BTreeMap<String, MemberView>>()
            .into_values()
            .collect();
        let holders: HashMap<String, buckets::Seen> = self.lease_table.live(self.ttl, self.tables_now());
        let held = self.holdings.with(|held| held.clone());
        let leases = assigned
            .iter()
            .map(|(partition, member)| {
                let lease = holders
                    .get(&lease_key(*partition))
                    .and_then(|seen| serde_json::from_slice::<Lease>(&seen.value).ok());
                let token = held.get(partition).map(|held| held.token).or(lease.as_ref().and_then(|lease| lease.token));
                let lag = lease.as_ref().and_then(|lease| lease.lag);
                let owner = lease.map(|lease| lease.node);
                LeaseView { partition: *partition, assigned: member.clone(), owner, token, lag }
            })
            .collect();
        let owned: Vec<u32> = held.keys().copied().collect();
        self.metrics.partitions_owned.store(u64::try_from(owned.len()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.views.set(ClusterView {
            node: self.identity.node.clone(),
            ledger: self.identity.ledger.clone(),
            partitions: self.identity.partitions,
            lease_ttl_ms: u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
            members,
            leases,
            owned,
            refused: self.refused.clone(),
        });
    }
}

/// Renews, every sixth of the TTL, each lease last renewed a third of the TTL ago. A lease
/// whose revision moved belongs to another node now; one that could not be renewed for nearly
/// a TTL (NATS unreachable) may have expired on the server: both are dropped and their
/// partitions closed at once.
async fn renew(
    leases: Store,
    holdings: Holdings,
    value: LeaseValue,
    intake: Intake,
    metrics: Arc<Metrics>,
    ttl: Duration,
) {
    loop {
        tokio::time::sleep(ttl / 6).await;
        let renewing = holdings.renewing.lock().await;
        let due: Vec<(u32, Held)> = holdings.with(|held| {
            held.iter().filter(|(_, held)| held.renewed.elapsed() >= ttl / 3).map(|(p, held)| (*p, *held)).collect()
        });
        if due.is_empty() {
            continue;
        }
        let lags = intake.lags().await;
        let renewals = due.iter().map(|(partition, held)| {
            let (leases, value) = (&leases, value.of(Some(held.token), lags.get(partition).copied()));
            async move {
                let sent = Instant::now();
                let renewed =
                    tokio::time::timeout(REQUEST_TIMEOUT, leases.update(lease_key(*partition), value, held.revision))
                        .await;
                (*partition, sent, renewed)
            }
        });
        let results = join_all(renewals).await;
        let lost: Vec<(u32, u64)> = holdings.with(|held| {
            let mut lost = Vec::new();
            for (partition, sent, renewed) in results {
                let Some(lease) = held.get_mut(&partition) else { continue };
                match renewed {
                    Ok(Ok(revision)) => (lease.revision, lease.renewed) = (revision, sent),
                    Ok(Err(error)) if error.kind() == UpdateErrorKind::WrongLastRevision => {
                        metrics.lease_renewal_failures.fetch_add(1, Ordering::Relaxed);
                        lost.push((partition, lease.opening));
                    }
                    failed => {
                        metrics.lease_renewal_failures.fetch_add(1, Ordering::Relaxed);
                        let error = match failed {
                            Ok(Err(error)) => error.to_string(),
                            _ => format!("no answer within {REQUEST_TIMEOUT:?}"),
                        };
                        tracing::warn!(partition, %error, "could not renew the lease");
                        if lease.renewed.elapsed() + ttl / 6 >= ttl {
                            lost.push((partition, lease.opening));
                        }
                    }
                }
            }
            for (partition, _) in &lost {
                held.remove(partition);
            }
            lost
        });
        drop(renewing);
        if !lost.is_empty() {
            let partitions: Vec<u32> = lost.iter().map(|(partition, _)| *partition).collect();
            tracing::warn!(?partitions, "leases lost (expired, or taken over); closing their partitions");
            // Closed on tasks of their own, so the next renewals are not held up; by opening,
            // so a partition this node has taken again meanwhile stays open.
            for (partition, opening) in lost {
                let intake = intake.clone();
                tokio::spawn(async move { intake.close_opening(partition, opening).await });
            }
        }
    }
}
