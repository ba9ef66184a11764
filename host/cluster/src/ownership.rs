//! The driver of the rounds that keep a node's leases matching the assignment: it gathers a
//! round's inputs from the tables, asks [`crate::plan`] what to do, and does it.
//!
//! Each round (every heartbeat, and whenever a bucket changes): announce this node, hand over
//! the partitions the assignment now gives to another member, and take those it gives to this
//! node that nobody holds. Taking a lease is a create on its key; the partition is then claimed
//! in the ledger, which hands out its fencing token, and only then opened. Handing over is
//! close (stop taking, answer what was taken), then a delete on the lease's revision, which
//! wakes the next owner through its watch.
//!
//! The state is kept in a few parts, each with one job: the buckets it writes, the tables it
//! reads (and their tasks), the leases it holds ([`Holdings`]), the node's ports, and what it
//! remembers between rounds ([`Memory`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::Store;
use futures::future::join_all;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use crate::binding::{self, Facts, Step};
use crate::bounds::{BINDING_TIMEOUT, CLAIM_TIMEOUT};
use crate::error::ClusterError;
use crate::jetstream::{self as js, Bucket, Damage};
use crate::leases::{self, Held, Holdings, LeaseBucket};
use crate::plan::{self, Holder};
use crate::ports::{Fences, Partitions, Ports};
use crate::records::{Binding, LEASES, Lease, MEMBERS, Member, encode};
use crate::repeats::Repeats;
use crate::settings::{ClusterSettings, Identity};
use crate::table::Table;
use crate::view::{ClusterView, LeaseView, MemberView, Views};

/// The tasks a node's part in the cluster runs beside its rounds (the two watches, the
/// renewals); aborted when dropped, so an owner that was stopped mid-leave leaves no task
/// renewing leases behind it.
#[derive(Debug, Default)]
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The buckets' contents as this node watches them.
#[derive(Debug)]
struct Tables {
    members: Table,
    leases: Table,
    /// Woken by every change in either bucket: a round follows at once.
    changed: Arc<Notify>,
    /// Held for its drop: the tasks end with the owner.
    _tasks: Tasks,
}

/// What the rounds remember from one round to the next.
#[derive(Debug, Default)]
struct Memory {
    /// When this node last announced itself.
    heartbeat_at: Option<Instant>,
    /// When the watches were last started again.
    rewatched: Option<Instant>,
    /// Why this node may serve nothing: the deployment is bound to another ledger, or not
    /// yet bound ([`Step::Wait`], [`Step::Refuse`]).
    refused: Option<String>,
    /// Whether the refusal resolves by itself ([`Step::Wait`]): the binding is then read
    /// every round, and joining waits for it.
    waiting: bool,
    /// When the binding was last read.
    rebound_at: Option<Instant>,
    /// The ledger this node's ledger records the deployment as bound to. Once it is this
    /// node's own, it cannot change while the node runs (only an adoption changes a record,
    /// and adopting the ledger's own deployment changes nothing), so it is not read again.
    recorded: Option<String>,
    /// Since when this node has seen neither a record nor NATS's binding.
    unbound_since: Option<Instant>,
    /// When the buckets were last re-created after a request failed.
    repaired_at: Option<Instant>,
    /// No lease is taken before this instant: the ledger's last claim failed, and retrying
    /// at every bucket change would spin.
    claim_retry_at: Option<Instant>,
    /// The complaints that last: a claim that fails, a binding that cannot be read.
    claim_failures: Repeats,
    binding_failures: Repeats,
    /// Partitions reported as held by a node on another ledger (or partitioning), so each is
    /// said once.
    foreign: BTreeSet<u32>,
    /// When this node last compared its tokens with the ledger's fences.
    fences_checked_at: Option<Instant>,
    /// When NATS first acknowledged this node's announcement that its ledger serves the
    /// deployment (reset by an announcement that does not say so).
    serves_announced_at: Option<Instant>,
}

/// The state of the rounds.
pub(crate) struct Owner<P, F> {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    identity: Identity,
    /// The deployment's name, as the ledger records its binding.
    deployment: String,
    replicas: usize,
    /// Set by any failed request on the buckets; the next round re-creates missing buckets.
    damage: Damage,
    /// The lease (and membership) TTL in effect.
    ttl: Duration,
    heartbeat: Duration,
    members: Store,
    leases: LeaseBucket,
    binding: Store,
    tables: Tables,
    holdings: Holdings,
    ports: Ports<P, F>,
    views: Views,
    memory: Memory,
}

impl<P, F> std::fmt::Debug for Owner<P, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner").field("node", &self.identity.node).finish_non_exhaustive()
    }
}

impl<P: Partitions, F: Fences> Owner<P, F> {
    /// Opens (or creates) the buckets, starts watching them and renewing what this node holds.
    pub(crate) async fn start(
        client: async_nats::Client,
        identity: Identity,
        settings: ClusterSettings,
        ports: Ports<P, F>,
        views: Views,
    ) -> Result<Self, ClusterError> {
        let jetstream = async_nats::jetstream::new(client.clone());
        let wanted = Duration::from_millis(settings.lease_ttl_ms.max(1));
        let replicas = js::replicas(&client, settings.replicas);
        if let Some(cluster) = js::clustered(&client).filter(|_| replicas == 1) {
            tracing::warn!(
                %cluster,
                "[cluster] replicas = 1 on a clustered NATS: each bucket lives on one server, and losing it stops \
                 payments until it is back; leave replicas unset (3 on a cluster) or set 3"
            );
        }
        let binding = binding::open(&jetstream, replicas).await?;
        let bucket = |name| Bucket { name, ttl: Some(wanted), replicas };
        let (members, _) = js::open_bucket(&jetstream, bucket(MEMBERS)).await?;
        let (leases, ttl) = js::open_bucket(&jetstream, bucket(LEASES)).await?;
        if ttl != wanted {
            tracing::warn!(configured = ?wanted, in_effect = ?ttl, "the lease bucket exists with another TTL; using the bucket's");
        }
        let changed = Arc::new(Notify::new());
        let (member_table, member_watch) = Table::watch(members.clone(), changed.clone());
        let (lease_table, lease_watch) = Table::watch(leases.clone(), changed.clone());
        let damage = Damage::default();
        let leases = LeaseBucket { store: leases, identity: identity.clone(), damage: damage.clone() };
        let holdings = Holdings::default();
        let renewals = tokio::spawn(leases::renew(
            leases.clone(),
            holdings.clone(),
            ports.partitions.clone(),
            ports.observer.clone(),
            ttl,
        ));
        let tables = Tables {
            members: member_table,
            leases: lease_table,
            changed,
            _tasks: Tasks(vec![member_watch, lease_watch, renewals]),
        };
        Ok(Owner {
            client,
            jetstream,
            identity,
            deployment: settings.deployment,
            replicas,
            damage,
            ttl,
            heartbeat: Duration::from_millis(settings.heartbeat_ms.max(1)).min(ttl / 3),
            members,
            leases,
            binding,
            tables,
            holdings,
            ports,
            views,
            // Nothing is served before the binding is settled.
            memory: Memory {
                refused: Some("the deployment's binding is not settled yet".to_owned()),
                waiting: true,
                ..Memory::default()
            },
        })
    }

    /// Runs rounds until `stop`, then hands everything over and leaves. A round in progress
    /// when `stop` comes is finished first: cut short, it could leave a partition open that no
    /// lease covers.
    pub(crate) async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        loop {
            tokio::select! {
                _ = &mut stop => break,
                () = tokio::time::sleep(self.heartbeat) => {}
                () = self.tables.changed.notified() => {}
            }
            self.round().await;
        }
        self.leave().await;
    }

    /// Whether this node waits for the deployment's binding to settle (a grace period, or a
    /// binding a live node of the bound ledger re-creates).
    pub(crate) fn waiting(&self) -> bool {
        self.memory.waiting
    }

    /// The grace a node whose ledger has no record waits before binding: one member TTL and
    /// a heartbeat, so every live node has announced itself since.
    pub(crate) fn grace(&self) -> Duration {
        self.ttl + self.heartbeat
    }

    /// The heartbeat in effect.
    pub(crate) fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// One round: repair, announce, settle the binding, hand over, take.
    pub(crate) async fn round(&mut self) {
        self.repair().await;
        self.announce().await;
        let assigned = self.assigned();
        self.read_binding().await;
        if self.memory.refused.is_some() {
            self.publish_view(&assigned);
            return;
        }
        let fenced = self.fenced().await;
        let held = self.holdings.partitions();
        let plan = plan::plan(&self.identity.node, &assigned, &held, &self.holders());
        self.report_foreign(&plan.foreign);
        // One hand-over per round (its bound counts once): what the plan gives away, and what
        // the ledger says another node claimed since.
        let mut hand_over: Vec<u32> = plan.hand_over.clone();
        hand_over.extend(fenced.iter().filter(|partition| !plan.hand_over.contains(partition)));
        if !hand_over.is_empty() {
            self.hand_over(&hand_over).await;
        }
        let claim_due = self.memory.claim_retry_at.is_none_or(|at| Instant::now() >= at);
        if !plan.take.is_empty() && claim_due {
            self.take(&plan.take).await;
        }
        self.publish_view(&assigned);
    }

    /// Re-creates the buckets if a request on them failed since the last round and NATS is
    /// connected (a stream deleted, or a server back with an empty store), at most once a
    /// heartbeat. What they held is rebuilt by the nodes: records by the next announcements,
    /// leases by the next takes (fenced by the ledger's tokens), the binding from the ledger's
    /// record ([`binding::decide`]). Leases held across the loss fail their next renewal and
    /// are taken again.
    async fn repair(&mut self) {
        let due = self.memory.repaired_at.is_none_or(|at| at.elapsed() >= self.heartbeat);
        if !due || !self.connected() || !self.damage.take() {
            return;
        }
        self.memory.repaired_at = Some(Instant::now());
        let replicas = self.replicas;
        let buckets = [
            Bucket { name: MEMBERS, ttl: Some(self.ttl), replicas },
            Bucket { name: LEASES, ttl: Some(self.ttl), replicas },
            binding::bucket(replicas),
        ];
        let repaired = join_all(buckets.map(|bucket| js::ensure_bucket(&self.jetstream, bucket))).await;
        let failed: Vec<String> = repaired.into_iter().filter_map(Result::err).map(|error| error.to_string()).collect();
        if failed.is_empty() {
            tracing::debug!("the cluster's buckets are all there");
            // Read the binding in this round: if its bucket was lost, it is bound again now.
            self.memory.rebound_at = None;
            // The members' records may be lost with them: the binding's grace starts again.
            self.memory.unbound_since = None;
        } else {
            tracing::warn!(?failed, "could not re-create the cluster's buckets; trying again");
            self.damage.report();
        }
    }

    /// Settles the deployment's binding ([`binding::decide`]): every round while waiting for
    /// it, else once a TTL, so a serving node re-creates a lost binding and stops if another
    /// ledger's binding appears. A node that stops serving hands everything over.
    async fn read_binding(&mut self) {
        let due = self.memory.waiting || self.memory.rebound_at.is_none_or(|at| at.elapsed() >= self.ttl);
        if !due || !self.connected() {
            return;
        }
        let read_at = Instant::now();
        self.memory.rebound_at = Some(read_at);
        let settled = tokio::time::timeout(BINDING_TIMEOUT, self.settle_binding()).await;
        let step = match settled.unwrap_or_else(|_| Err(format!("no answer within {BINDING_TIMEOUT:?}"))) {
            Ok(step) => step,
            Err(error) => {
                if let Some(suppressed) = self.memory.binding_failures.admit(&error) {
                    tracing::warn!(%error, suppressed, "could not read the deployment's binding");
                }
                return;
            }
        };
        self.memory.binding_failures.clear();
        let starts_serving = matches!(step, Step::Serve) && self.memory.refused.is_some();
        let (refused, waiting) = match step {
            Step::Wait(reason) => (Some(reason), true),
            Step::Refuse(reason) => (Some(reason), false),
            _ if starts_serving && !self.announced_serving_before(read_at).await => {
                (Some("announcing that this node's ledger serves the deployment before serving it".to_owned()), true)
            }
            _ => (None, false),
        };
        if refused != self.memory.refused {
            match (&refused, waiting) {
                (None, _) => {
                    tracing::info!(deployment = %self.deployment, ledger = %self.identity.ledger, "the deployment is bound to this node's ledger: serving")
                }
                (Some(reason), true) => tracing::info!(deployment = %self.deployment, "{reason}"),
                (Some(reason), false) => {
                    tracing::error!(deployment = %self.deployment, "this node serves nothing: {reason}")
                }
            }
        }
        if refused.is_some() && self.memory.refused.is_none() {
            let held: Vec<u32> = self.holdings.partitions().into_iter().collect();
            if !held.is_empty() {
                self.hand_over(&held).await;
            }
        }
        (self.memory.refused, self.memory.waiting) = (refused, waiting);
    }

    /// Reads the ledger's record and NATS's binding and carries out [`binding::decide`]'s
    /// steps until it says serve, wait or refuse (a record and a bind take one step each).
    async fn settle_binding(&mut self) -> Result<Step, String> {
        // Bind, record, then the verdict: three decisions at most.
        const STEPS_MAX: usize = 3;
        let me = self.identity.ledger.clone();
        if self.memory.recorded.as_deref() != Some(me.as_str()) {
            let read = self.ports.fences.binding(&self.deployment).await;
            self.memory.recorded = read.map_err(|error| format!("reading the ledger's binding: {error}"))?;
        }
        let mut nats = self.read_nats_binding().await?;
        for _ in 0..STEPS_MAX {
            let unbound = self.memory.recorded.is_none() && nats.is_none();
            // The grace counts only time in which this node hears the members: while its own
            // announcements do not come back (the member bucket lost, or electing a leader), a
            // live node of the bound ledger may not have announced itself again, and an old
            // start of the count would bind at once when the buckets return (found by the
            // deterministic simulation).
            let since = match unbound && self.hears_members() {
                true => *self.memory.unbound_since.get_or_insert_with(Instant::now),
                false => {
                    self.memory.unbound_since = None;
                    Instant::now()
                }
            };
            let claimant = self.claimant();
            let facts = Facts {
                ledger: &me,
                partitions: self.identity.partitions,
                recorded: self.memory.recorded.as_deref(),
                nats: nats.as_ref().map(|bound| (bound.ledger.as_str(), bound.partitions)),
                claimant: claimant.as_ref().map(|(node, ledger)| (node.as_str(), ledger.as_str())),
                unbound_for: since.elapsed(),
                grace: self.grace(),
            };
            match binding::decide(&facts) {
                Step::Record(ledger) => {
                    let recorded = self.ports.fences.record_binding(&self.deployment, &ledger).await;
                    let recorded = recorded.map_err(|error| format!("recording the binding: {error}"))?;
                    tracing::info!(deployment = %self.deployment, ledger = %recorded, "recorded the deployment's binding in this node's ledger");
                    self.memory.recorded = Some(recorded);
                }
                Step::Bind => {
                    let created = binding::create(&self.binding, &self.identity).await.map_err(|error| {
                        self.damage.report();
                        error.to_string()
                    })?;
                    if created {
                        tracing::info!(deployment = %self.deployment, ledger = %me, "bound this NATS deployment's payment subjects to this node's ledger");
                    }
                    nats = self.read_nats_binding().await?;
                    // A replica that lags (a server just restarted) answers direct gets from
                    // what it has: a binding the leader has may read as missing there.
                    if !created && nats.is_none() {
                        return Err("the binding exists, but the replica that answered does not have it yet".to_owned());
                    }
                }
                verdict => return Ok(verdict),
            }
        }
        // Reads that disagree with each other: an error, so the node stays as it was.
        Err("the binding changed while this node read it".to_owned())
    }

    /// NATS's binding; a failure is reported as damage, so a lost bucket is re-created.
    async fn read_nats_binding(&self) -> Result<Option<Binding>, String> {
        binding::read(&self.binding).await.map_err(|error| {
            self.damage.report();
            error.to_string()
        })
    }

    /// A live member of another ledger that says its ledger serves this deployment: (node,
    /// ledger).
    fn claimant(&self) -> Option<(String, String)> {
        let live = self.tables.members.live(self.ttl, self.tables_now());
        live.into_iter().find_map(|(node, seen)| {
            let member = seen.record::<Member>()?;
            let serves = member.serves.as_deref() == Some(self.deployment.as_str());
            (serves && member.ledger != self.identity.ledger).then_some((node, member.ledger))
        })
    }

    /// Puts this node's member record, once per heartbeat.
    async fn announce(&mut self) {
        if self.memory.heartbeat_at.is_some_and(|at| at.elapsed() < self.heartbeat) {
            return;
        }
        let ours = self.memory.recorded.as_deref() == Some(self.identity.ledger.as_str());
        let record = Member {
            ledger: self.identity.ledger.clone(),
            http: self.identity.http.clone(),
            partitions: self.identity.partitions,
            serves: ours.then(|| self.deployment.clone()),
        };
        match js::request("announcing this node", self.members.put(&self.identity.node, encode(&record))).await {
            Ok(_) => {
                // This node's own announcements must come back through the watch; if the last
                // ones did not, the watches went quiet and the tables are stale.
                let now = Instant::now();
                let seen = self.tables.members.seen_at(&self.identity.node);
                let quiet = self.memory.heartbeat_at.is_some_and(|at| now.duration_since(at) < self.heartbeat * 2)
                    && seen.is_none_or(|seen| now.duration_since(seen) > self.heartbeat * 4);
                if quiet && self.memory.rewatched.is_none_or(|at| at.elapsed() > self.ttl) {
                    tracing::warn!("the bucket watches went quiet; watching again");
                    self.tables.members.rewatch();
                    self.tables.leases.rewatch();
                    self.memory.rewatched = Some(now);
                }
                self.memory.heartbeat_at = Some(now);
                self.memory.serves_announced_at = match record.serves {
                    Some(_) => self.memory.serves_announced_at.or(Some(now)),
                    None => None,
                };
            }
            Err(error) => {
                self.damage.report();
                tracing::warn!(%error, "could not announce this node");
            }
        }
    }

    /// The instant the tables' ages are measured at: now, unless this node's own announcements
    /// have stopped coming back (JetStream unreachable, or electing a leader); then the last
    /// time they did. Without a way to hear the others, a node must not conclude they died
    /// and take everything, so their records age only while its own keep arriving.
    fn tables_now(&self) -> Instant {
        let now = Instant::now();
        match self.tables.members.seen_at(&self.identity.node) {
            Some(seen) => (seen + self.heartbeat * 2).min(now),
            None => now,
        }
    }

    /// Whether NATS had stored this node's announcement that its ledger serves the deployment
    /// before `read_at` (when this round read the binding); if not, announces it at once. A
    /// node starts serving only then: a node of a ledger with no record binds a deployment whose
    /// binding NATS lost only if no live member says its ledger serves it, so a node that served
    /// before saying so could lose the binding in between and see the deployment bound to
    /// another ledger while its own ledger had taken payments (found by the deterministic
    /// simulation: F3, a binding made and lost within a heartbeat; and F4, the same race when
    /// the check was that the watch showed the announcement, which can come before the binding
    /// is read again). The next round, which reads the binding after the announcement was
    /// stored, serves.
    async fn announced_serving_before(&mut self, read_at: Instant) -> bool {
        if self.memory.serves_announced_at.is_some_and(|at| at <= read_at) {
            return true;
        }
        self.memory.heartbeat_at = None;
        self.announce().await;
        false
    }

    /// Whether this node's own announcements come back through the member watch, so its
    /// member table shows every live node ([`Owner::tables_now`]).
    fn hears_members(&self) -> bool {
        let seen = self.tables.members.seen_at(&self.identity.node);
        seen.is_some_and(|seen| seen.elapsed() <= self.heartbeat * 2)
    }

    /// Whether `ledger` and `partitions` are this node's: only such nodes share partitions.
    fn alike(&self, ledger: &str, partitions: u32) -> bool {
        ledger == self.identity.ledger && partitions == self.identity.partitions
    }

    /// Every partition's member by rendezvous hashing over the live members on this node's
    /// ledger and partitioning, this node included.
    fn assigned(&self) -> BTreeMap<u32, Option<String>> {
        let live = self.tables.members.live(self.ttl, self.tables_now());
        let mut names: Vec<String> = live
            .into_iter()
            .filter(|(_, seen)| {
                seen.record::<Member>().is_some_and(|member| self.alike(&member.ledger, member.partitions))
            })
            .map(|(node, _)| node)
            .collect();
        if !names.contains(&self.identity.node) {
            names.push(self.identity.node.clone());
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        plan::assign(self.identity.partitions, &names)
    }

    /// Who holds each live lease, as far as this node has seen.
    fn holders(&self) -> BTreeMap<u32, Holder> {
        let live = self.tables.leases.live(self.ttl, self.tables_now());
        live.into_iter()
            .filter_map(|(key, seen)| {
                let partition = key.strip_prefix("partition.")?.parse::<u32>().ok()?;
                let holder = match seen.record::<Lease>() {
                    Some(lease) if self.alike(&lease.ledger, lease.partitions) => Holder::Member(lease.node),
                    Some(lease) => Holder::Foreign(lease.node),
                    None => Holder::Foreign("(unreadable lease)".to_owned()),
                };
                Some((partition, holder))
            })
            .collect()
    }

    /// Says once which partitions are held by a node that writes another ledger or partitions
    /// differently.
    fn report_foreign(&mut self, foreign: &BTreeMap<u32, String>) {
        let mut by_holder: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (partition, holder) in foreign {
            if self.memory.foreign.insert(*partition) {
                by_holder.entry(holder.as_str()).or_default().push(*partition);
            }
        }
        for (holder, partitions) in by_holder {
            tracing::error!(
                %holder,
                ?partitions,
                "partitions are held by a node that writes another ledger or partitions differently: this node \
                 cannot serve them (nodes share partitions only on one ledger; a SQLite node is a cluster of one)"
            );
        }
    }

    /// Every third of the TTL, the held partitions whose fence a later claim has passed, to
    /// be given up: another node claimed them (after this node's lease expired during an
    /// outage and was taken), so the ledger refuses every payment this node posts there, and
    /// holding the lease would keep the partition unserved for good. Handed over like any
    /// other, each is taken again with a fresh claim by whichever member the assignment gives
    /// it to. Found by the deterministic simulation (docs/cluster.md, F1).
    async fn fenced(&mut self) -> Vec<u32> {
        let due = self.memory.fences_checked_at.is_none_or(|at| at.elapsed() >= self.ttl / 3);
        let held: BTreeMap<u32, u64> =
            self.holdings.with(|held| held.iter().map(|(partition, held)| (*partition, held.token)).collect());
        if !due || held.is_empty() {
            return Vec::new();
        }
        self.memory.fences_checked_at = Some(Instant::now());
        let newest = match tokio::time::timeout(CLAIM_TIMEOUT, self.ports.fences.tokens()).await {
            Ok(Ok(newest)) => newest,
            // The ledger is what the payments need too: its failures are reported there.
            _ => return Vec::new(),
        };
        let fenced: Vec<u32> = held
            .iter()
            .filter(|(partition, token)| newest.get(partition).is_some_and(|newest| newest > token))
            .map(|(partition, _)| *partition)
            .collect();
        if !fenced.is_empty() {
            tracing::warn!(partitions = ?fenced, "another node claimed these partitions after this node did: giving them up, to be taken again under a new claim");
        }
        fenced
    }

    /// Hands `partitions` over: stops taking them and answers what they took (renewing their
    /// leases meanwhile), then releases the leases so the next owner starts at once. A
    /// partition whose worker did not answer everything in time is not released: its lease
    /// expires instead, and the ledger fences what this node still posts.
    async fn hand_over(&mut self, partitions: &[u32]) {
        let closed = join_all(partitions.iter().map(|partition| self.ports.partitions.close(*partition))).await;
        let removed = self.holdings.remove(partitions).await;
        let handed = removed.iter().flatten().count();
        let releases = partitions
            .iter()
            .zip(removed)
            .zip(closed)
            .filter_map(|((partition, held), answered)| Some((*partition, held?.revision)).filter(|_| answered));
        self.leases.release_all(releases).await;
        self.ports.observer.handed_over(u64::try_from(handed).unwrap_or(u64::MAX));
        tracing::info!(?partitions, "handed partitions over");
    }

    /// Takes the leases of `partitions`, claims them in the ledger (which hands out their
    /// fencing tokens), and opens them.
    async fn take(&mut self, partitions: &[u32]) {
        let taken = self.leases.take(partitions).await;
        if taken.is_empty() {
            return;
        }
        let claimed: Vec<u32> = taken.keys().copied().collect();
        let tokens = match tokio::time::timeout(CLAIM_TIMEOUT, self.ports.fences.claim(&claimed)).await {
            Ok(Ok(tokens)) => {
                self.memory.claim_failures.clear();
                tokens
            }
            failed => {
                let error = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("no answer within {CLAIM_TIMEOUT:?}"),
                };
                let retry_in = self.ttl / 3;
                self.memory.claim_retry_at = Some(Instant::now() + retry_in);
                if let Some(suppressed) = self.memory.claim_failures.admit(&error) {
                    tracing::warn!(%error, suppressed, ?retry_in, "could not claim the partitions in the ledger; releasing their leases");
                }
                self.leases.release_all(taken.iter().map(|(partition, (revision, _))| (*partition, *revision))).await;
                return;
            }
        };
        let opened = join_all(tokens.iter().map(|(partition, token)| {
            let partitions = &self.ports.partitions;
            async move { (*partition, partitions.open(*partition, *token).await) }
        }))
        .await;
        let mut failed = Vec::new();
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
                    self.memory.foreign.remove(&partition);
                }
                Err(error) => {
                    tracing::warn!(
                        partition,
                        error = &error as &dyn std::error::Error,
                        "could not open the partition; releasing its lease"
                    );
                    failed.push((partition, *revision));
                }
            }
        }
        if !failed.is_empty() {
            self.leases.release_all(failed).await;
        }
        tracing::info!(partitions = ?tokens.keys().collect::<Vec<_>>(), "took partitions");
    }

    /// Withdraws the membership (so the others stop assigning partitions to this node), then
    /// hands every partition over. The watches and renewals end when the owner is dropped.
    async fn leave(mut self) {
        let partitions: Vec<u32> = self.holdings.partitions().into_iter().collect();
        if self.connected() {
            if let Err(error) =
                js::request("withdrawing the membership", self.members.delete(&self.identity.node)).await
            {
                tracing::warn!(%error, "could not withdraw the membership; it will expire instead");
            }
            if !partitions.is_empty() {
                self.hand_over(&partitions).await;
            }
        } else {
            // Nothing can be released without the server: the leases and the membership expire.
            join_all(partitions.iter().map(|partition| self.ports.partitions.close(*partition))).await;
        }
        self.ports.observer.partitions_owned(0);
        tracing::info!("left the cluster");
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn publish_view(&self, assigned: &BTreeMap<u32, Option<String>>) {
        let now = self.tables_now();
        let members: Vec<MemberView> = self
            .tables
            .members
            .live(self.ttl, now)
            .into_iter()
            .filter_map(|(node, seen)| {
                let member: Member = seen.record()?;
                Some((node.clone(), MemberView { node, ledger: member.ledger, http: member.http }))
            })
            .collect::<BTreeMap<String, MemberView>>()
            .into_values()
            .collect();
        let holders = self.tables.leases.live(self.ttl, now);
        let held = self.holdings.with(|held| held.clone());
        let leases = assigned
            .iter()
            .map(|(partition, member)| {
                let lease = holders.get(&crate::records::lease_key(*partition)).and_then(|seen| seen.record::<Lease>());
                let token = held.get(partition).map(|held| held.token).or(lease.as_ref().and_then(|lease| lease.token));
                let lag = lease.as_ref().and_then(|lease| lease.lag);
                let owner = lease.map(|lease| lease.node);
                LeaseView { partition: *partition, assigned: member.clone(), owner, token, lag }
            })
            .collect();
        let owned: Vec<u32> = held.keys().copied().collect();
        self.ports.observer.partitions_owned(u64::try_from(owned.len()).unwrap_or(u64::MAX));
        self.views.set(ClusterView {
            node: self.identity.node.clone(),
            ledger: self.identity.ledger.clone(),
            partitions: self.identity.partitions,
            lease_ttl_ms: u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
            members,
            leases,
            owned,
            refused: self.memory.refused.clone(),
        });
    }
}
