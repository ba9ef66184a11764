//! One run: the nodes, the KV, the network, the ledgers and the clients, driven by an event
//! queue ordered by (time, sequence number), with every random choice drawn from one seed.

use std::collections::{BTreeMap, BTreeSet};

use crate::faults::{self, Fault};
use crate::invariants::{Broken, Checker};
use crate::kv::{BucketId, Change, Kv, KvOp, NodeId};
use crate::ledger::{Ledger, LedgerId, LedgerOp, PaymentId};
use crate::network::{Network, Weather};
use crate::node::{Answer, Ctx, Effect, Node, Stats};
use crate::protocol::Protocol;
use crate::rng::Rng;
use crate::time::{EPOCH, Millis, Timing};
use crate::trace::Trace;

/// What a run simulates.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub protocol: Protocol,
    /// Whether the ledgers check the fence (false: the deliberately broken ledger).
    pub fencing: bool,
    pub partitions: u32,
    /// Faults start between these instants after the start.
    pub faults_from: Millis,
    pub faults_until: Millis,
    /// Payments sent by clients during the fault phase.
    pub payments: u32,
    /// Print every event.
    pub verbose: bool,
}

impl Config {
    /// The model the seed tests run: 16 partitions; faults start between 2 s and 30 s.
    ///
    /// From 2 s, not from 8 s (when every node has started and every ledger has recorded the
    /// binding): the start is where finding F2 lives (a node of ledger B that has not yet
    /// recorded the binding when NATS loses its state), and about one fault in five now falls
    /// on a cluster still forming (binding, taking its first leases). Liveness stays
    /// meaningful: it is checked a fixed bound after the *last* fault heals, whenever the
    /// faults began, and every node has booted (by 6 s) long before that (a fault drawn for a
    /// node not yet booted does what it would to a stopped process: a kill or a pause of
    /// nothing, a restart that boots it early).
    pub fn standard(protocol: Protocol) -> Config {
        Config {
            protocol,
            fencing: true,
            partitions: 16,
            faults_from: 2_000,
            faults_until: 30_000,
            payments: 120,
            verbose: false,
        }
    }
}

/// After the last fault heals, how long until every partition must be served: a lease TTL
/// (a dead or stale owner's lease expires and a table's stale entries age out), a heartbeat
/// (the round that notices), and a margin for a round's bounded requests (a repair, the
/// binding's settling, a take and a claim, each a request bound) and the grace of a
/// binding lost and made again.
pub fn liveness_bound(timing: &Timing) -> Millis {
    timing.ttl + timing.heartbeat + timing.grace() + 2 * timing.request
}

/// How long a probe payment has, once sent, to be acknowledged.
pub const PROBE_DEADLINE: Millis = 3_000;
/// How long a client waits for an answer before it sends again (same id).
const CLIENT_TIMEOUT: Millis = 1_000;
/// How long a client waits after a refusal or "no responders" before it sends again.
const CLIENT_BACKOFF: Millis = 100;

/// Something that happens at an instant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    Boot {
        node: NodeId,
    },
    Wake {
        node: NodeId,
        incarnation: u32,
        generation: u64,
    },
    Renew {
        node: NodeId,
        incarnation: u32,
    },
    /// A node's request reaches the KV.
    KvArrives {
        node: NodeId,
        incarnation: u32,
        request: u64,
        op: KvOp,
    },
    /// A node's request reaches its ledger.
    LedgerArrives {
        node: NodeId,
        incarnation: u32,
        request: u64,
        ledger: LedgerId,
        op: LedgerOp,
    },
    /// An answer reaches the node.
    Answer {
        node: NodeId,
        incarnation: u32,
        request: u64,
        answer: Answer,
    },
    Timeout {
        node: NodeId,
        incarnation: u32,
        request: u64,
    },
    Watch {
        node: NodeId,
        incarnation: u32,
        change: Change,
    },
    /// A client's payment reaches a node that subscribes to its partition.
    Payment {
        node: NodeId,
        incarnation: u32,
        payment: PaymentId,
        partition: u32,
        attempt: u32,
    },
    ClientSends {
        payment: PaymentId,
    },
    ClientHears {
        payment: PaymentId,
        attempt: u32,
        ack: bool,
    },
    ClientTimeout {
        payment: PaymentId,
        attempt: u32,
    },
    Fault(Fault),
    /// Liveness: a fresh payment to every partition.
    Probe,
    Finish,
}

impl Event {
    /// The node process an event is for, if it is for one.
    fn addressee(&self) -> Option<(NodeId, u32)> {
        match *self {
            Event::Wake { node, incarnation, .. }
            | Event::Renew { node, incarnation }
            | Event::Answer { node, incarnation, .. }
            | Event::Timeout { node, incarnation, .. }
            | Event::Watch { node, incarnation, .. }
            | Event::Payment { node, incarnation, .. } => Some((node, incarnation)),
            _ => None,
        }
    }
}

/// A client's payment.
#[derive(Clone, Copy, Debug)]
struct Payment {
    partition: u32,
    attempt: u32,
    acked: bool,
}

/// An invariant broken in a run: the seed, where, and the events that led to it.
#[derive(Clone, Debug)]
pub struct Violation {
    pub seed: u64,
    pub step: u64,
    pub at: Millis,
    pub broken: Broken,
    pub trace: Vec<String>,
    /// Each ledger's `deployment_binding` record when the invariant broke: A's, then B's.
    pub records: [Option<LedgerId>; 2],
    /// Each running node's name and why it serves nothing, if it does not (killed nodes left
    /// out).
    pub refusals: Vec<(String, Option<String>)>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} broke invariant {} at step {} (t={} ms): {}",
            self.seed, self.broken.invariant, self.step, self.at, self.broken.message
        )?;
        writeln!(f, "the ledgers' records (A, B): {:?}", self.records)?;
        for (node, refused) in &self.refusals {
            writeln!(f, "{node}: {}", refused.as_deref().unwrap_or("serving"))?;
        }
        writeln!(f, "replay: WASMPAY_SIM_SEED={} (prints every event); the last events:", self.seed)?;
        for line in &self.trace {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// What a run that kept every invariant did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The hash of every event in order: equal for two runs of one seed.
    pub trace: u64,
    pub steps: u64,
    pub nodes: usize,
    pub home: Option<LedgerId>,
    pub applied: usize,
    /// How often the nodes took the paths the protocol's fixes added.
    pub stats: Stats,
}

struct World {
    config: Config,
    timing: Timing,
    seed: u64,
    now: Millis,
    sequence: u64,
    queue: BTreeMap<(Millis, u64), Event>,
    rng: Rng,
    nodes: Vec<Node>,
    incarnations: u32,
    /// Per node, how many pauses are in effect, and the events held meanwhile.
    paused: Vec<u32>,
    deferred: Vec<Vec<Event>>,
    /// Per node, when its watch last delivered: watches deliver in order.
    watched_at: Vec<Millis>,
    kv: Kv,
    network: Network,
    ledgers: Vec<Ledger>,
    payments: Vec<Payment>,
    checker: Checker,
    next_request: u64,
    step: u64,
    trace: Trace<Event>,
}

/// Runs `seed` under `config`.
pub fn run(seed: u64, config: &Config) -> Result<Outcome, Violation> {
    let mut rng = Rng::new(seed);
    let timing = Timing::real();
    // Two or three nodes on ledger A and one on B; or three on A and two on B.
    let count = rng.between(3, 5);
    let on_b = if count == 5 { 2 } else { 1 };
    let ledgers_of: Vec<LedgerId> =
        (0..count).map(|index| if index < count - on_b { LedgerId::A } else { LedgerId::B }).collect();
    let names: Vec<String> = ledgers_of
        .iter()
        .enumerate()
        .map(|(index, ledger)| {
            let of_ledger = ledgers_of[..index].iter().filter(|other| *other == ledger).count() + 1;
            format!("{}{of_ledger}", ledger.name().to_lowercase())
        })
        .collect();
    let nodes: Vec<Node> = ledgers_of
        .iter()
        .enumerate()
        .map(|(index, ledger)| Node::new(u8::try_from(index).unwrap_or(u8::MAX), *ledger, names.clone()))
        .collect();
    let size = nodes.len();
    let mut world = World {
        config: *config,
        timing,
        seed,
        now: EPOCH,
        sequence: 0,
        queue: BTreeMap::new(),
        rng,
        nodes,
        incarnations: 0,
        paused: vec![0; size],
        deferred: vec![Vec::new(); size],
        watched_at: vec![0; size],
        kv: Kv::new(timing.ttl),
        network: Network::new(size),
        ledgers: vec![Ledger::new(LedgerId::A, config.fencing), Ledger::new(LedgerId::B, config.fencing)],
        payments: Vec::new(),
        checker: Checker::default(),
        next_request: 0,
        step: 0,
        trace: Trace::new(config.verbose),
    };
    world.set_up(size)?;
    world.run()
}

impl World {
    fn at(&mut self, at: Millis, event: Event) {
        self.sequence += 1;
        self.queue.insert((at, self.sequence), event);
    }

    fn after(&mut self, delay: Millis, event: Event) {
        self.at(self.now + delay, event);
    }

    fn violation(&self, broken: Broken) -> Violation {
        let records = [self.ledgers[LedgerId::A.index()].binding, self.ledgers[LedgerId::B.index()].binding];
        let refusals = self
            .nodes
            .iter()
            .filter(|node| node.process.is_some())
            .map(|node| (node.name().to_owned(), node.refused().map(str::to_owned)))
            .collect();
        Violation {
            seed: self.seed,
            step: self.step,
            at: self.now - EPOCH,
            broken,
            trace: self.trace.tail(),
            records,
            refusals,
        }
    }

    fn set_up(&mut self, size: usize) -> Result<(), Violation> {
        // Ledger A's nodes start first, B's within the next few seconds: mostly after A bound
        // the deployment (the tester's setup), sometimes before.
        for node in 0..size {
            let latest = if self.nodes[node].ledger == LedgerId::A { 1_500 } else { 6_000 };
            let start = self.rng.between(0, latest);
            self.after(start, Event::Boot { node: u8::try_from(node).unwrap_or(u8::MAX) });
        }
        let node_count = u8::try_from(size).unwrap_or(u8::MAX);
        let schedule = faults::schedule(&mut self.rng, node_count, self.config.faults_from, self.config.faults_until);
        if self.config.verbose {
            println!("nodes: {:?}", self.nodes.iter().map(|n| (n.name(), n.ledger)).collect::<Vec<_>>());
            println!("faults (healed by t={}): {:?}", schedule.healed, schedule.faults);
        }
        for (at, fault) in &schedule.faults {
            self.after(*at, Event::Fault(*fault));
        }
        for _ in 0..self.config.payments {
            let partition = u32::try_from(self.rng.below(u64::from(self.config.partitions))).unwrap_or(0);
            let at = self.rng.between(500, schedule.healed);
            let payment = self.new_payment(partition);
            self.after(at, Event::ClientSends { payment });
        }
        let probe = schedule.healed + liveness_bound(&self.timing);
        self.after(probe, Event::Probe);
        self.after(probe + PROBE_DEADLINE, Event::Finish);
        Ok(())
    }

    fn new_payment(&mut self, partition: u32) -> PaymentId {
        self.payments.push(Payment { partition, attempt: 0, acked: false });
        PaymentId::try_from(self.payments.len() - 1).unwrap_or(PaymentId::MAX)
    }

    fn run(mut self) -> Result<Outcome, Violation> {
        while let Some(((at, _), event)) = self.queue.pop_first() {
            self.now = at;
            self.step += 1;
            self.trace.record(self.step, at - EPOCH, &event);
            let finished = event == Event::Finish;
            self.handle(event).map_err(|broken| self.violation(broken))?;
            if finished {
                break;
            }
        }
        Ok(Outcome {
            trace: self.trace.hash(),
            steps: self.step,
            nodes: self.nodes.len(),
            home: self.checker.home,
            applied: self.ledgers.iter().map(|ledger| ledger.applied.len()).sum(),
            stats: self.nodes.iter().fold(Stats::default(), |mut sum, node| {
                sum += node.stats;
                sum
            }),
        })
    }

    fn handle(&mut self, event: Event) -> Result<(), Broken> {
        if let Some((node, incarnation)) = event.addressee() {
            let index = usize::from(node);
            if self.nodes[index].incarnation() != Some(incarnation) {
                return Ok(());
            }
            if self.paused[index] > 0 {
                self.deferred[index].push(event);
                return Ok(());
            }
        }
        match event {
            Event::Boot { node } => self.boot(node),
            Event::Wake { node, generation, .. } => self.with_node(node, |node, cx| node.wake(generation, cx)),
            Event::Renew { node, .. } => self.with_node(node, Node::renew),
            Event::Answer { node, request, answer, .. } => {
                self.with_node(node, |node, cx| node.answered(request, Some(answer), cx))
            }
            Event::Timeout { node, request, .. } => self.with_node(node, |node, cx| node.answered(request, None, cx)),
            Event::Watch { node, change, .. } => self.with_node(node, |node, cx| node.watched(change, cx)),
            Event::Payment { node, payment, partition, attempt, .. } => {
                self.with_node(node, |node, cx| node.payment(payment, partition, attempt, cx))
            }
            Event::KvArrives { node, incarnation, request, op } => self.kv_request(node, incarnation, request, op),
            Event::LedgerArrives { node, incarnation, request, ledger, op } => {
                let reply = self.ledgers[ledger.index()].apply(&op);
                self.checker.ledger(ledger, &op, &reply)?;
                if let Some(delay) = self.network.ledger(&mut self.rng) {
                    let answer = Answer::Ledger(reply);
                    self.after(delay, Event::Answer { node, incarnation, request, answer });
                }
            }
            Event::ClientSends { payment } => self.client_sends(payment),
            Event::ClientHears { payment, attempt, ack } => {
                let index = usize::try_from(payment).unwrap_or(usize::MAX);
                let Some(state) = self.payments.get_mut(index) else { return Ok(()) };
                if state.acked || state.attempt != attempt {
                    return Ok(());
                }
                if ack {
                    state.acked = true;
                    self.checker.acknowledged(payment)?;
                } else {
                    self.after(CLIENT_BACKOFF, Event::ClientSends { payment });
                }
            }
            Event::ClientTimeout { payment, attempt } => {
                let index = usize::try_from(payment).unwrap_or(usize::MAX);
                if self.payments.get(index).is_some_and(|state| !state.acked && state.attempt == attempt) {
                    self.after(0, Event::ClientSends { payment });
                }
            }
            Event::Fault(fault) => self.fault(fault),
            Event::Probe => {
                for partition in 0..self.config.partitions {
                    let payment = self.new_payment(partition);
                    self.after(0, Event::ClientSends { payment });
                }
            }
            Event::Finish => self.finish()?,
        }
        Ok(())
    }

    /// Invariant 4, and the end-of-run checks. No partition is excused: one left unserved
    /// because a node has it open under a token its ledger has since fenced (finding F1, which
    /// the sweep tolerated until `Owner::check_fences`) fails like any other, and the message
    /// names such holders so a failure of that shape is told apart.
    fn finish(&mut self) -> Result<(), Broken> {
        let unserved: BTreeSet<u32> =
            self.payments.iter().filter(|payment| !payment.acked).map(|payment| payment.partition).collect();
        if !unserved.is_empty() {
            let fenced: Vec<String> = unserved.iter().filter_map(|partition| self.fenced_holder(*partition)).collect();
            return Err(Broken {
                invariant: 4,
                message: format!(
                    "payments of partitions {unserved:?} not acknowledged {} ms after the last fault healed \
                     (+{PROBE_DEADLINE} ms for the probes); open under a fenced token: {fenced:?}",
                    liveness_bound(&self.timing)
                ),
            });
        }
        self.checker.finish(&self.ledgers, self.config.protocol.records_binding())
    }

    /// Which running node has `partition` open under a token its ledger has fenced, if one
    /// does: "partition 9: a2 token 2 < fence 3".
    fn fenced_holder(&self, partition: u32) -> Option<String> {
        self.nodes.iter().find_map(|node| {
            let fence = self.ledgers[node.ledger.index()].fences.get(&partition).copied().unwrap_or(0);
            let token = node.open_token(partition).filter(|token| *token < fence)?;
            Some(format!("partition {partition}: {} token {token} < fence {fence}", node.name()))
        })
    }

    fn boot(&mut self, node: NodeId) {
        let index = usize::from(node);
        if self.nodes[index].process.is_some() {
            return;
        }
        self.incarnations += 1;
        let incarnation = self.incarnations;
        self.with_node(node, |node, cx| node.boot(incarnation, cx));
        self.rewatch(node);
    }

    /// A watch (re)started: it replays each live key's last message (`watch_with_history`).
    fn rewatch(&mut self, node: NodeId) {
        for bucket in [BucketId::Members, BucketId::Leases] {
            for change in self.kv.history(bucket, self.now) {
                self.watch(node, change);
            }
        }
    }

    fn watch(&mut self, node: NodeId, change: Change) {
        let index = usize::from(node);
        let Some(incarnation) = self.nodes[index].incarnation() else { return };
        if !self.network.connected(index) {
            return;
        }
        let at = (self.now + self.network.watch(&mut self.rng)).max(self.watched_at[index]);
        self.watched_at[index] = at;
        self.at(at, Event::Watch { node, incarnation, change });
    }

    fn kv_request(&mut self, node: NodeId, incarnation: u32, request: u64, op: KvOp) {
        let (reply, change) = self.kv.apply(op, self.now);
        if let Some(change) = change {
            for other in 0..self.nodes.len() {
                self.watch(u8::try_from(other).unwrap_or(u8::MAX), change);
            }
        }
        if !self.network.connected(usize::from(node)) {
            return;
        }
        for delay in self.network.nats(&mut self.rng) {
            let answer = Answer::Kv(reply);
            self.after(delay, Event::Answer { node, incarnation, request, answer });
        }
    }

    /// A client sends (or sends again) a payment: NATS hands it to one of the nodes that
    /// subscribe to its partition (a queue group), or answers "no responders".
    fn client_sends(&mut self, payment: PaymentId) {
        let index = usize::try_from(payment).unwrap_or(usize::MAX);
        let Some(state) = self.payments.get_mut(index) else { return };
        if state.acked {
            return;
        }
        state.attempt += 1;
        let (partition, attempt) = (state.partition, state.attempt);
        let subscribers: Vec<usize> = (0..self.nodes.len())
            .filter(|node| self.network.connected(*node) && self.nodes[*node].serves(partition))
            .collect();
        if subscribers.is_empty() {
            self.after(CLIENT_BACKOFF, Event::ClientSends { payment });
            return;
        }
        let chosen = subscribers[self.rng.index(subscribers.len())];
        if let Some(incarnation) = self.nodes[chosen].incarnation() {
            let node = u8::try_from(chosen).unwrap_or(u8::MAX);
            for delay in self.network.nats(&mut self.rng) {
                self.after(delay, Event::Payment { node, incarnation, payment, partition, attempt });
            }
        }
        self.after(CLIENT_TIMEOUT, Event::ClientTimeout { payment, attempt });
    }

    fn fault(&mut self, fault: Fault) {
        match fault {
            Fault::Pause(node) => {
                let index = usize::from(node);
                if self.nodes[index].process.is_some() {
                    self.paused[index] += 1;
                }
            }
            Fault::Resume(node) => {
                let index = usize::from(node);
                if self.paused[index] == 0 {
                    return;
                }
                self.paused[index] -= 1;
                if self.paused[index] == 0 {
                    for event in std::mem::take(&mut self.deferred[index]) {
                        self.after(0, event);
                    }
                }
            }
            Fault::Kill(node) => {
                let index = usize::from(node);
                self.nodes[index].process = None;
                self.paused[index] = 0;
                self.deferred[index].clear();
            }
            Fault::Restart(node) => self.boot(node),
            Fault::Cut(node) => self.network.cut(usize::from(node)),
            Fault::Heal(node) => {
                if self.network.heal(usize::from(node)) {
                    self.rewatch(node);
                }
            }
            Fault::LoseKv { bucket, loss } => match bucket {
                Some(bucket) => self.kv.lose(bucket, loss),
                None => BucketId::ALL.into_iter().for_each(|bucket| self.kv.lose(bucket, loss)),
            },
            Fault::JumpClock { node, by } => {
                let clock = &mut self.nodes[usize::from(node)].clock;
                clock.offset = clock.offset.saturating_add(by);
            }
            Fault::Storm(weather) => self.network.weather = weather,
            Fault::Calm => self.network.weather = Weather::CALM,
        }
    }

    /// Lets `node` handle an event, then carries out what it asked for.
    fn with_node(&mut self, node: NodeId, handle: impl FnOnce(&mut Node, &mut Ctx<'_>)) {
        let index = usize::from(node);
        let refused_before = self.nodes[index].refused().map(str::to_owned);
        let mut effects = Vec::new();
        let mut cx = Ctx {
            now: self.now,
            timing: self.timing,
            protocol: self.config.protocol,
            partitions: self.config.partitions,
            connected: self.network.connected(index),
            next_request: &mut self.next_request,
            effects: &mut effects,
        };
        handle(&mut self.nodes[index], &mut cx);
        if self.trace.verbose && self.nodes[index].refused() != refused_before.as_deref() {
            let (name, refused) = (self.nodes[index].name(), self.nodes[index].refused());
            self.trace.note(self.now - EPOCH, || format!("{name}: {}", refused.unwrap_or("serving")));
        }
        let Some(incarnation) = self.nodes[index].incarnation() else { return };
        for effect in effects {
            self.effect(node, incarnation, effect);
        }
    }

    fn effect(&mut self, node: NodeId, incarnation: u32, effect: Effect) {
        let index = usize::from(node);
        match effect {
            Effect::Kv { request, op, timeout } => {
                self.after(timeout, Event::Timeout { node, incarnation, request });
                if self.network.connected(index) {
                    for delay in self.network.nats(&mut self.rng) {
                        self.after(delay, Event::KvArrives { node, incarnation, request, op });
                    }
                }
            }
            Effect::Ledger { request, op, timeout } => {
                self.after(timeout, Event::Timeout { node, incarnation, request });
                if let Some(delay) = self.network.ledger(&mut self.rng) {
                    let ledger = self.nodes[index].ledger;
                    self.after(delay, Event::LedgerArrives { node, incarnation, request, ledger, op });
                }
            }
            Effect::Wake { delay, generation } => self.after(delay, Event::Wake { node, incarnation, generation }),
            Effect::Renew { delay } => self.after(delay, Event::Renew { node, incarnation }),
            Effect::Answer { payment, attempt, ack } => {
                if self.network.connected(index) {
                    for delay in self.network.nats(&mut self.rng) {
                        self.after(delay, Event::ClientHears { payment, attempt, ack });
                    }
                }
            }
        }
    }
}
