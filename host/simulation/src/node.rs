//! A node's part in the cluster, as a state machine driven by the world's events: the rounds
//! of `Owner` (`host/cluster/src/ownership.rs`) and the renewals of `leases::renew`
//! (`host/cluster/src/leases.rs`), with every `await` on NATS or the ledger turned into a
//! request and its answer (or its timeout). The decisions are the real pure functions:
//! `wasmpay_cluster::decide` for the binding, `plan::assign` and `plan::plan` for ownership.
//! The bus (which partitions are open, under which token) and a payment's commit are modelled
//! after `host/node/src/bus/`: a node commits a payment of a partition it has open, under its
//! token, and answers the client.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use wasmpay_cluster::plan::{self, Holder};
use wasmpay_cluster::{Facts, Step, decide};

use crate::kv::{BucketId, Key, KvOp, KvReply, NodeId, Value};
use crate::ledger::{Commit, LedgerId, LedgerOp, LedgerReply, PaymentId};
use crate::protocol::Protocol;
use crate::table::Table;
use crate::time::{Clock, Millis, Timing};

/// What a node asks of the world.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    /// A KV request, timed out after `timeout` without an answer.
    Kv { request: u64, op: KvOp, timeout: Millis },
    /// A ledger request, timed out likewise.
    Ledger { request: u64, op: LedgerOp, timeout: Millis },
    /// The run loop's sleep: wake for a round after `delay` unless woken before.
    Wake { delay: Millis, generation: u64 },
    /// The renewal task's sleep.
    Renew { delay: Millis },
    /// The answer to a client's payment.
    Answer { payment: PaymentId, attempt: u32, ack: bool },
}

/// An answer to a request; `None` where a request timed out.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Answer {
    Kv(KvReply),
    Ledger(LedgerReply),
}

/// What a node works with in one step.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The world's time.
    pub now: Millis,
    pub timing: Timing,
    pub protocol: Protocol,
    pub partitions: u32,
    /// Whether the node's NATS connection is up (`Owner::connected`).
    pub connected: bool,
    pub next_request: &'a mut u64,
    pub effects: &'a mut Vec<Effect>,
}

impl Ctx<'_> {
    fn request(&mut self) -> u64 {
        *self.next_request += 1;
        *self.next_request
    }
}

/// A lease this node holds (`leases::Held`); times on the node's clock.
#[derive(Clone, Copy, Debug)]
struct Held {
    token: u64,
    opening: u64,
    revision: u64,
    renewed: Millis,
}

/// An open partition: the bus subscribed, posting under `token`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opening {
    pub token: u64,
    number: u64,
}

/// What the rounds remember (`ownership::Memory`); instants on the node's clock.
#[derive(Debug, Default)]
struct Memory {
    heartbeat_at: Option<Millis>,
    refused: Option<String>,
    waiting: bool,
    rebound_at: Option<Millis>,
    recorded: Option<LedgerId>,
    unbound_since: Option<Millis>,
    repaired_at: Option<Millis>,
    claim_retry_at: Option<Millis>,
    /// When this node last compared its tokens with the ledger's fences.
    fences_checked_at: Option<Millis>,
    /// When NATS first acknowledged this node's announcement that its ledger serves the
    /// deployment, reset by an announcement that does not say so (`Owner::announce`, from
    /// 24d3bd9).
    serves_announced_at: Option<Millis>,
}

/// Where a round is: each stage either goes on at once or waits for the answers to the
/// requests it sent.
#[derive(Debug)]
enum Stage {
    /// `Owner::repair`.
    Repair,
    Repaired,
    /// `Owner::announce`.
    Announce,
    Announced {
        serves: bool,
    },
    /// `Owner::assigned`, then `Owner::read_binding`.
    Binding,
    /// `settle_binding`: the ledger's record read.
    LedgerRead,
    /// `settle_binding`: NATS's binding read (`read_nats_binding`).
    NatsRead {
        steps: usize,
    },
    /// `settle_binding`: one `decide`.
    Decide {
        steps: usize,
    },
    Recorded {
        steps: usize,
    },
    Created {
        steps: usize,
    },
    CreatedRead {
        steps: usize,
        created: bool,
    },
    /// cbf9137's `bind`: the create, then the read.
    OldCreated,
    OldRead,
    /// `read_binding` when `decide` says serve and this node serves nothing yet (from
    /// cca8b70): `Owner::announced_serving_before(read_at)` (from 24d3bd9), which serves if
    /// NATS acknowledged a `serves` announcement before this round read the binding, and else
    /// announces at once and waits; under `Cca8b70`, `Owner::announced_serving`, which
    /// announces at once unless the member table shows this node's ledger serving already,
    /// then looks again once the put is answered.
    StartServing,
    AnnouncedServing {
        serves: bool,
    },
    /// `read_binding`'s end: hand everything over if this node stops serving, then remember.
    Verdict {
        refused: Option<String>,
        waiting: bool,
    },
    Remember {
        refused: Option<String>,
        waiting: bool,
    },
    /// `Owner::round` after the binding: stop if refused, then `Owner::fenced`
    /// (`Owner::check_fences` before c367496).
    Fences,
    /// `fenced`: the ledger's tokens read; the held tokens as they were before.
    FencesRead {
        held: BTreeMap<u32, u64>,
    },
    /// `Owner::round`: the plan, and (from c367496) one hand-over of the plan's and the
    /// `fenced` partitions.
    Plan {
        fenced: Vec<u32>,
    },
    /// `Owner::hand_over`: close, remove once no renewal is in flight, release.
    Close {
        partitions: Vec<u32>,
        then: Box<Stage>,
    },
    Remove {
        partitions: Vec<u32>,
        then: Box<Stage>,
    },
    Released {
        then: Box<Stage>,
    },
    /// `Owner::take`: create the leases, claim, open (or release if the claim failed).
    Take {
        partitions: Vec<u32>,
    },
    Taken {
        partitions: Vec<u32>,
        sent: Millis,
    },
    Claimed {
        taken: BTreeMap<u32, (u64, Millis)>,
    },
    Done,
}

/// How a stage ends.
enum Flow {
    /// Go on with this stage now.
    Next(Stage),
    /// Requests were sent: wait for their answers, then this stage.
    Await(Stage),
    /// Wait for the renewal in flight (`Holdings::remove`'s lock).
    Blocked(Stage),
}

#[derive(Debug)]
struct Round {
    stage: Stage,
    assigned: BTreeMap<u32, Option<String>>,
    waiting: BTreeSet<u64>,
    answers: BTreeMap<u64, Option<Answer>>,
    /// NATS's binding as last read in this round's settle (a `Value::Binding`).
    nats: Option<Value>,
    /// When settling the binding is cut short (`BINDING_TIMEOUT`), world time.
    settle_deadline: Millis,
    /// When this round read the binding, on the node's clock (`read_binding`'s `read_at`).
    read_at: Millis,
}

/// A renewal in flight (`leases::renew`'s iteration).
#[derive(Debug)]
struct Renewal {
    /// When it was sent, on the node's clock (what a renewed lease records).
    sent: Millis,
    /// When it was sent, world time: each lease's update and create share one request bound.
    sent_at: Millis,
    /// The partition each request (an update, or the create that follows it) renews.
    partitions: BTreeMap<u64, u32>,
    waiting: BTreeSet<u64>,
    answers: BTreeMap<u64, Option<Answer>>,
}

/// Who a request's answer is for.
#[derive(Clone, Copy, Debug)]
enum Purpose {
    Round,
    Renewal,
    Payment { payment: PaymentId, attempt: u32 },
}

/// A running node process: everything a kill loses.
#[derive(Debug)]
pub struct Process {
    pub incarnation: u32,
    memory: Memory,
    members: Table,
    leases: Table,
    held: BTreeMap<u32, Held>,
    /// The partitions the bus has open: NATS routes their payments here.
    pub open: BTreeMap<u32, Opening>,
    openings: u64,
    round: Option<Round>,
    /// A bucket changed while a round ran: another round follows at once (`Notify`).
    changed: bool,
    wake: u64,
    renewal: Option<Renewal>,
    /// `jetstream::Damage`: a request failed since the last repair.
    damage: bool,
    pending: BTreeMap<u64, Purpose>,
}

/// A node: its identity, its clock, and its process while it runs.
#[derive(Debug)]
pub struct Node {
    pub id: NodeId,
    pub ledger: LedgerId,
    pub clock: Clock,
    /// Every node's name by id (this one's at `id`): the names rendezvous hashing weighs.
    names: Vec<String>,
    pub process: Option<Process>,
    /// What the node's processes did, over the run (kept across kills).
    pub stats: Stats,
}

/// How often a run took the paths the protocol's fixes added (and the ones they replaced),
/// so a sweep shows it exercised them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Partitions given up by `fenced` (`check_fences` before c367496): a later claim had
    /// passed their token.
    pub fenced: u64,
    /// Leases a renewal created again after they expired on the server.
    pub recreated: u64,
    /// Lease renewals that got no answer (the lease kept; before c501df9, dropped after
    /// nearly a TTL of them).
    pub unanswered: u64,
    /// Leases dropped by the renewals, their partitions closed.
    pub lost: u64,
    /// Times a node that `decide` let serve announced `serves` at once instead: from 24d3bd9
    /// because NATS had not acknowledged such an announcement before the round read the
    /// binding (`Owner::announced_serving_before`); under `Cca8b70` because its member table
    /// did not show it yet (`Owner::announced_serving`).
    pub announced: u64,
    /// Under `Cca8b70`, the times the watch brought the announcement back before the put's
    /// answer, so the node served in the same round, on the binding it read before
    /// announcing (finding F4). Always 0 under `Current`.
    pub served_at_once: u64,
}

impl Process {
    /// `Owner::announce`'s answer: stored (the heartbeat and `serves_announced_at` move), or a
    /// failure (the buckets are checked at the next repair).
    fn announcement_answered(&mut self, answer: Option<&Option<Answer>>, local: Millis, serves: bool) {
        match answer {
            Some(Some(Answer::Kv(KvReply::Put(_)))) => self.memory.announced(local, serves),
            _ => self.damage = true,
        }
    }
}

impl Memory {
    /// `Owner::announce`'s answer: the heartbeat, and (from 24d3bd9) when NATS first
    /// acknowledged an announcement that says this node's ledger serves the deployment.
    fn announced(&mut self, local: Millis, serves: bool) {
        self.heartbeat_at = Some(local);
        self.serves_announced_at = match serves {
            true => self.serves_announced_at.or(Some(local)),
            false => None,
        };
    }
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, other: Stats) {
        self.fenced += other.fenced;
        self.recreated += other.recreated;
        self.unanswered += other.unanswered;
        self.lost += other.lost;
        self.announced += other.announced;
        self.served_at_once += other.served_at_once;
    }
}

impl Node {
    pub fn new(id: NodeId, ledger: LedgerId, names: Vec<String>) -> Node {
        Node { id, ledger, clock: Clock::default(), names, process: None, stats: Stats::default() }
    }

    pub fn name(&self) -> &str {
        &self.names[usize::from(self.id)]
    }

    fn local(&self, cx: &Ctx<'_>) -> Millis {
        self.clock.local(cx.now)
    }

    /// Starts a process (`Owner::start`): nothing served before the binding is settled; the
    /// first round after a heartbeat (or a bucket change), renewals every sixth of the TTL.
    pub fn boot(&mut self, incarnation: u32, cx: &mut Ctx<'_>) {
        let memory = Memory {
            refused: Some("the deployment's binding is not settled yet".to_owned()),
            waiting: true,
            ..Memory::default()
        };
        self.process = Some(Process {
            incarnation,
            memory,
            members: Table::default(),
            leases: Table::default(),
            held: BTreeMap::new(),
            open: BTreeMap::new(),
            openings: 0,
            round: None,
            changed: false,
            wake: 0,
            renewal: None,
            damage: false,
            pending: BTreeMap::new(),
        });
        self.sleep(cx.timing.heartbeat, cx);
        cx.effects.push(Effect::Renew { delay: cx.timing.ttl / 6 });
    }

    fn sleep(&mut self, delay: Millis, cx: &mut Ctx<'_>) {
        if let Some(process) = &mut self.process {
            process.wake += 1;
            cx.effects.push(Effect::Wake { delay, generation: process.wake });
        }
    }

    /// The run loop's sleep ended (`Owner::run`).
    pub fn wake(&mut self, generation: u64, cx: &mut Ctx<'_>) {
        let due = self.process.as_ref().is_some_and(|p| p.wake == generation && p.round.is_none());
        if due {
            self.start_round(cx);
        }
    }

    /// A watch delivered a change (`Table::watch`): recorded, and a round follows.
    pub fn watched(&mut self, change: crate::kv::Change, cx: &mut Ctx<'_>) {
        let local = self.local(cx);
        let Some(process) = &mut self.process else { return };
        match change.key.bucket() {
            BucketId::Members => process.members.record(change, local, cx.protocol.new_bytes_are_fresh()),
            BucketId::Leases => process.leases.record(change, local, cx.protocol.new_bytes_are_fresh()),
            BucketId::Binding => return,
        }
        if process.round.is_some() {
            process.changed = true;
        } else {
            self.start_round(cx);
        }
    }

    fn start_round(&mut self, cx: &mut Ctx<'_>) {
        let Some(process) = &mut self.process else { return };
        process.round = Some(Round {
            stage: Stage::Repair,
            assigned: BTreeMap::new(),
            waiting: BTreeSet::new(),
            answers: BTreeMap::new(),
            nats: None,
            settle_deadline: 0,
            read_at: 0,
        });
        self.advance(cx);
    }

    /// An answer to request `request`, or its timeout (`None`).
    pub fn answered(&mut self, request: u64, answer: Option<Answer>, cx: &mut Ctx<'_>) {
        let Some(process) = &mut self.process else { return };
        let Some(purpose) = process.pending.remove(&request) else { return };
        match purpose {
            Purpose::Round => {
                let Some(round) = &mut process.round else { return };
                if round.waiting.remove(&request) {
                    round.answers.insert(request, answer);
                    if round.waiting.is_empty() {
                        self.advance(cx);
                    }
                }
            }
            Purpose::Renewal => {
                let Some(renewal) = &mut process.renewal else { return };
                if renewal.waiting.remove(&request) {
                    let moved = answer == Some(Answer::Kv(KvReply::Updated(None)));
                    let partition = renewal.partitions.get(&request).copied();
                    if let Some(partition) = partition.filter(|_| moved && cx.protocol.keeps_unanswered_leases())
                        && self.create_again(partition, cx)
                    {
                        return;
                    }
                    let Some(renewal) = self.process.as_mut().and_then(|p| p.renewal.as_mut()) else { return };
                    renewal.answers.insert(request, answer);
                    if renewal.waiting.is_empty() {
                        self.renewed(cx);
                    }
                }
            }
            Purpose::Payment { payment, attempt } => {
                let ack =
                    matches!(answer, Some(Answer::Ledger(LedgerReply::Committed(Commit::Applied | Commit::Duplicate))));
                cx.effects.push(Effect::Answer { payment, attempt, ack });
            }
        }
    }

    fn send(&mut self, purpose: Purpose, request: Request, cx: &mut Ctx<'_>) {
        let Some(process) = &mut self.process else { return };
        let id = cx.request();
        process.pending.insert(id, purpose);
        match purpose {
            Purpose::Round => {
                if let Some(round) = &mut process.round {
                    round.waiting.insert(id);
                }
            }
            Purpose::Renewal => {
                if let Some(renewal) = &mut process.renewal {
                    renewal.waiting.insert(id);
                }
            }
            Purpose::Payment { .. } => {}
        }
        cx.effects.push(match request {
            Request::Kv(op, timeout) => Effect::Kv { request: id, op, timeout },
            Request::Ledger(op, timeout) => Effect::Ledger { request: id, op, timeout },
        });
    }

    /// Sends a KV request of the round, bounded by one request bound.
    /// `Owner::announce`'s put: this node's member record, saying whether its ledger records
    /// that it serves the deployment.
    fn put_announcement(&mut self, serves: bool, cx: &mut Ctx<'_>) {
        let (me, ledger) = (self.id, self.ledger);
        self.round_kv(KvOp::Put(Key::Member(me), Value::Member { ledger, serves }), cx);
    }

    fn round_kv(&mut self, op: KvOp, cx: &mut Ctx<'_>) {
        let timeout = cx.timing.request;
        self.send(Purpose::Round, Request::Kv(op, timeout), cx);
    }

    /// Sends a KV request of the binding's settling, bounded also by the settling's end.
    fn settle_kv(&mut self, op: KvOp, cx: &mut Ctx<'_>) {
        let timeout = self.settle_bound(cx.timing.request, cx);
        self.send(Purpose::Round, Request::Kv(op, timeout), cx);
    }

    fn settle_ledger(&mut self, op: LedgerOp, cx: &mut Ctx<'_>) {
        let timeout = self.settle_bound(cx.timing.binding, cx);
        self.send(Purpose::Round, Request::Ledger(op, timeout), cx);
    }

    fn settle_bound(&self, bound: Millis, cx: &Ctx<'_>) -> Millis {
        let deadline = self.process.as_ref().and_then(|p| p.round.as_ref()).map_or(0, |r| r.settle_deadline);
        bound.min(deadline.saturating_sub(cx.now)).max(1)
    }

    /// Runs the round's stages until one waits or the round ends.
    fn advance(&mut self, cx: &mut Ctx<'_>) {
        loop {
            let Some(round) = self.process.as_mut().and_then(|p| p.round.as_mut()) else { return };
            if !round.waiting.is_empty() {
                return;
            }
            let stage = std::mem::replace(&mut round.stage, Stage::Done);
            let answers: Vec<Option<Answer>> = std::mem::take(&mut round.answers).into_values().collect();
            if let Stage::Done = stage {
                self.end_round(cx);
                return;
            }
            let flow = self.stage(stage, answers, cx);
            let Some(round) = self.process.as_mut().and_then(|p| p.round.as_mut()) else { return };
            match flow {
                Flow::Next(stage) => round.stage = stage,
                Flow::Await(stage) => {
                    round.stage = stage;
                    if !round.waiting.is_empty() {
                        return;
                    }
                }
                Flow::Blocked(stage) => {
                    round.stage = stage;
                    return;
                }
            }
        }
    }

    fn end_round(&mut self, cx: &mut Ctx<'_>) {
        let Some(process) = &mut self.process else { return };
        process.round = None;
        if std::mem::take(&mut process.changed) {
            self.sleep(0, cx);
        } else {
            self.sleep(cx.timing.heartbeat, cx);
        }
    }

    /// One stage of `Owner::round`.
    fn stage(&mut self, stage: Stage, answers: Vec<Option<Answer>>, cx: &mut Ctx<'_>) -> Flow {
        let local = self.local(cx);
        let timing = cx.timing;
        let me = self.id;
        let ledger = self.ledger;
        let Some(process) = &mut self.process else { return Flow::Next(Stage::Done) };
        let memory = &mut process.memory;
        match stage {
            Stage::Repair => {
                let due = memory.repaired_at.is_none_or(|at| local.saturating_sub(at) >= timing.heartbeat);
                if !due || !cx.connected || !std::mem::take(&mut process.damage) {
                    return Flow::Next(Stage::Announce);
                }
                memory.repaired_at = Some(local);
                for bucket in BucketId::ALL {
                    self.send(Purpose::Round, Request::Kv(KvOp::Ensure(bucket), timing.request), cx);
                }
                Flow::Await(Stage::Repaired)
            }
            Stage::Repaired => {
                if answers.iter().all(|answer| *answer == Some(Answer::Kv(KvReply::Ensured))) {
                    memory.rebound_at = None;
                    // The members' records may be lost with them: the binding's grace starts
                    // again (`Owner::repair`, from c501df9).
                    if cx.protocol.grace_while_heard() {
                        memory.unbound_since = None;
                    }
                } else {
                    process.damage = true;
                }
                Flow::Next(Stage::Announce)
            }
            Stage::Announce => {
                if memory.heartbeat_at.is_some_and(|at| local.saturating_sub(at) < timing.heartbeat) {
                    return Flow::Next(Stage::Binding);
                }
                let serves = memory.recorded == Some(ledger);
                self.put_announcement(serves, cx);
                Flow::Await(Stage::Announced { serves })
            }
            Stage::Announced { serves } => {
                process.announcement_answered(answers.first(), local, serves);
                Flow::Next(Stage::Binding)
            }
            Stage::Binding => {
                let assigned = self.assigned(local, timing, cx.partitions);
                let Some(process) = &mut self.process else { return Flow::Next(Stage::Done) };
                let memory = &mut process.memory;
                let Some(round) = &mut process.round else { return Flow::Next(Stage::Done) };
                round.assigned = assigned;
                let stale = memory.rebound_at.is_none_or(|at| local.saturating_sub(at) >= timing.ttl);
                let due = match cx.protocol.records_binding() {
                    true => memory.waiting || stale,
                    false => stale,
                };
                if !due || !cx.connected {
                    return Flow::Next(Stage::Fences);
                }
                memory.rebound_at = Some(local);
                round.read_at = local;
                round.settle_deadline = cx.now + timing.binding;
                match cx.protocol {
                    Protocol::Current | Protocol::Cca8b70 | Protocol::C501df9 | Protocol::Before16
                        if memory.recorded != Some(ledger) =>
                    {
                        self.settle_ledger(LedgerOp::Binding, cx);
                        Flow::Await(Stage::LedgerRead)
                    }
                    Protocol::Current | Protocol::Cca8b70 | Protocol::C501df9 | Protocol::Before16 => {
                        self.settle_kv(KvOp::Get(Key::Binding), cx);
                        Flow::Await(Stage::NatsRead { steps: 3 })
                    }
                    Protocol::Cbf9137 => {
                        self.round_kv(KvOp::Create(Key::Binding, Value::Binding { ledger }), cx);
                        Flow::Await(Stage::OldCreated)
                    }
                }
            }
            Stage::LedgerRead => match answers.first() {
                Some(Some(Answer::Ledger(LedgerReply::Binding(recorded)))) => {
                    memory.recorded = *recorded;
                    self.settle_kv(KvOp::Get(Key::Binding), cx);
                    Flow::Await(Stage::NatsRead { steps: 3 })
                }
                _ => Flow::Next(Stage::Fences),
            },
            Stage::NatsRead { steps } => match answers.first() {
                Some(Some(Answer::Kv(KvReply::Got(value)))) => {
                    if let Some(round) = &mut process.round {
                        round.nats = *value;
                    }
                    Flow::Next(Stage::Decide { steps })
                }
                _ => {
                    process.damage = true;
                    Flow::Next(Stage::Fences)
                }
            },
            Stage::Decide { steps } => self.decide(steps, local, timing, cx),
            Stage::Recorded { steps } => match answers.first() {
                Some(Some(Answer::Ledger(LedgerReply::Recorded(recorded)))) => {
                    memory.recorded = Some(*recorded);
                    Flow::Next(Stage::Decide { steps })
                }
                _ => Flow::Next(Stage::Fences),
            },
            Stage::Created { steps } => {
                let created = match answers.first() {
                    Some(Some(Answer::Kv(KvReply::Created(revision)))) => revision.is_some(),
                    _ => {
                        process.damage = true;
                        return Flow::Next(Stage::Fences);
                    }
                };
                self.settle_kv(KvOp::Get(Key::Binding), cx);
                Flow::Await(Stage::CreatedRead { steps, created })
            }
            Stage::CreatedRead { steps, created } => match answers.first() {
                Some(Some(Answer::Kv(KvReply::Got(value)))) => {
                    if !created && value.is_none() {
                        return Flow::Next(Stage::Fences);
                    }
                    if let Some(round) = &mut process.round {
                        round.nats = *value;
                    }
                    Flow::Next(Stage::Decide { steps })
                }
                _ => {
                    process.damage = true;
                    Flow::Next(Stage::Fences)
                }
            },
            Stage::OldCreated => match answers.first() {
                Some(Some(Answer::Kv(KvReply::Created(Some(_))))) => {
                    Flow::Next(Stage::Verdict { refused: None, waiting: false })
                }
                Some(Some(Answer::Kv(KvReply::Created(None)))) => {
                    self.round_kv(KvOp::Get(Key::Binding), cx);
                    Flow::Await(Stage::OldRead)
                }
                _ => {
                    process.damage = true;
                    Flow::Next(Stage::Fences)
                }
            },
            Stage::OldRead => match answers.first() {
                Some(Some(Answer::Kv(KvReply::Got(value)))) => {
                    let refused = match value {
                        Some(Value::Binding { ledger: bound }) if *bound == ledger => None,
                        Some(_) => Some(format!("bound to another ledger: {value:?}")),
                        None => Some("the binding changed while this node read it".to_owned()),
                    };
                    Flow::Next(Stage::Verdict { refused, waiting: false })
                }
                _ => {
                    process.damage = true;
                    Flow::Next(Stage::Fences)
                }
            },
            Stage::StartServing => {
                let announced = match cx.protocol.serves_once_the_watch_shows_it() {
                    true => self.announced_serving(local, timing),
                    // `announced_serving_before(read_at)` (from 24d3bd9).
                    false => {
                        let read_at = process.round.as_ref().map_or(0, |round| round.read_at);
                        memory.serves_announced_at.is_some_and(|at| at <= read_at)
                    }
                };
                if announced {
                    return Flow::Next(Stage::Verdict { refused: None, waiting: false });
                }
                let Some(process) = &mut self.process else { return Flow::Next(Stage::Done) };
                let memory = &mut process.memory;
                // `self.memory.heartbeat_at = None; self.announce().await`: a put now.
                memory.heartbeat_at = None;
                self.stats.announced += 1;
                let serves = memory.recorded == Some(ledger);
                self.put_announcement(serves, cx);
                Flow::Await(Stage::AnnouncedServing { serves })
            }
            Stage::AnnouncedServing { serves } => {
                process.announcement_answered(answers.first(), local, serves);
                // Under `Cca8b70`, the watch may have brought the put back before its answer:
                // then this round serves, on the binding it read before the put (finding F4).
                // From 24d3bd9 the round that announces never serves: the next one, which
                // reads the binding again, does.
                if cx.protocol.serves_once_the_watch_shows_it() && self.announced_serving(local, timing) {
                    self.stats.served_at_once += 1;
                    return Flow::Next(Stage::Verdict { refused: None, waiting: false });
                }
                let reason = "announcing that this node's ledger serves the deployment before serving it".to_owned();
                Flow::Next(Stage::Verdict { refused: Some(reason), waiting: true })
            }
            Stage::Verdict { refused, waiting } => {
                let remember = Stage::Remember { refused: refused.clone(), waiting };
                if refused.is_some() && memory.refused.is_none() && !process.held.is_empty() {
                    let partitions = process.held.keys().copied().collect();
                    return Flow::Next(Stage::Close { partitions, then: Box::new(remember) });
                }
                Flow::Next(remember)
            }
            Stage::Remember { refused, waiting } => {
                (memory.refused, memory.waiting) = (refused, waiting);
                Flow::Next(Stage::Fences)
            }
            Stage::Fences => {
                if memory.refused.is_some() {
                    return Flow::Next(Stage::Done);
                }
                // `Owner::fenced` (`check_fences` from c501df9): at most every third of the TTL, and
                // only while something is held.
                let due = memory.fences_checked_at.is_none_or(|at| local.saturating_sub(at) >= timing.ttl / 3);
                let held: BTreeMap<u32, u64> =
                    process.held.iter().map(|(partition, held)| (*partition, held.token)).collect();
                if !cx.protocol.checks_fences() || !due || held.is_empty() {
                    return Flow::Next(Stage::Plan { fenced: Vec::new() });
                }
                memory.fences_checked_at = Some(local);
                self.send(Purpose::Round, Request::Ledger(LedgerOp::Tokens, timing.claim), cx);
                Flow::Await(Stage::FencesRead { held })
            }
            Stage::FencesRead { held } => {
                // A failed or late read leaves everything as it is (`_ => return`).
                let Some(Some(Answer::Ledger(LedgerReply::Tokens(newest)))) = answers.first() else {
                    return Flow::Next(Stage::Plan { fenced: Vec::new() });
                };
                let fenced: Vec<u32> = held
                    .iter()
                    .filter(|(partition, token)| newest.get(partition).is_some_and(|newest| newest > token))
                    .map(|(partition, _)| *partition)
                    .collect();
                if fenced.is_empty() {
                    return Flow::Next(Stage::Plan { fenced });
                }
                self.stats.fenced += u64::try_from(fenced.len()).unwrap_or(u64::MAX);
                // From c367496, handed over with the plan's partitions (`Owner::round`), the
                // plan made while they are still held. Before, handed over at once on their own
                // (`Owner::check_fences`), the plan that follows reading what is held after.
                if cx.protocol.one_hand_over() {
                    return Flow::Next(Stage::Plan { fenced });
                }
                let plan = Stage::Plan { fenced: Vec::new() };
                Flow::Next(Stage::Close { partitions: fenced, then: Box::new(plan) })
            }
            Stage::Plan { fenced } => {
                if memory.refused.is_some() {
                    return Flow::Next(Stage::Done);
                }
                let held: BTreeSet<u32> = process.held.keys().copied().collect();
                let holders = self.holders(local, timing);
                let Some(round) = self.process.as_ref().and_then(|p| p.round.as_ref()) else {
                    return Flow::Next(Stage::Done);
                };
                let plan = plan::plan(self.name(), &round.assigned, &held, &holders);
                let take = Stage::Take { partitions: plan.take };
                let mut hand_over = plan.hand_over.clone();
                hand_over.extend(fenced.iter().filter(|partition| !plan.hand_over.contains(partition)));
                if hand_over.is_empty() {
                    return Flow::Next(take);
                }
                Flow::Next(Stage::Close { partitions: hand_over, then: Box::new(take) })
            }
            Stage::Close { partitions, then } => {
                for partition in &partitions {
                    process.open.remove(partition);
                }
                Flow::Next(Stage::Remove { partitions, then })
            }
            Stage::Remove { partitions, then } => {
                if process.renewal.is_some() {
                    return Flow::Blocked(Stage::Remove { partitions, then });
                }
                let removed: Vec<(u32, u64)> = partitions
                    .iter()
                    .filter_map(|partition| process.held.remove(partition).map(|held| (*partition, held.revision)))
                    .collect();
                for (partition, revision) in &removed {
                    self.round_kv(KvOp::Delete(Key::Lease(*partition), *revision), cx);
                }
                Flow::Await(Stage::Released { then })
            }
            Stage::Released { then } => {
                if !answers.iter().all(|answer| *answer == Some(Answer::Kv(KvReply::Deleted(true)))) {
                    process.damage = true;
                }
                Flow::Next(*then)
            }
            Stage::Take { partitions } => {
                let claim_due = memory.claim_retry_at.is_none_or(|at| local >= at);
                if partitions.is_empty() || !claim_due {
                    return Flow::Next(Stage::Done);
                }
                let lease = Value::Lease { node: me, ledger, token: None };
                for partition in &partitions {
                    self.round_kv(KvOp::Create(Key::Lease(*partition), lease), cx);
                }
                Flow::Await(Stage::Taken { partitions, sent: local })
            }
            Stage::Taken { partitions, sent } => {
                let mut taken = BTreeMap::new();
                for (partition, answer) in partitions.iter().zip(&answers) {
                    match answer {
                        Some(Answer::Kv(KvReply::Created(Some(revision)))) => {
                            taken.insert(*partition, (*revision, sent));
                        }
                        Some(Answer::Kv(KvReply::Created(None))) => {}
                        _ => process.damage = true,
                    }
                }
                if taken.is_empty() {
                    return Flow::Next(Stage::Done);
                }
                let claim = LedgerOp::Claim(taken.keys().copied().collect());
                self.send(Purpose::Round, Request::Ledger(claim, timing.claim), cx);
                Flow::Await(Stage::Claimed { taken })
            }
            Stage::Claimed { taken } => {
                if let Some(Some(Answer::Ledger(LedgerReply::Claimed(tokens)))) = answers.first() {
                    for (partition, token) in tokens {
                        let Some((revision, sent)) = taken.get(partition) else { continue };
                        process.openings += 1;
                        let opening = Opening { token: *token, number: process.openings };
                        process.open.insert(*partition, opening);
                        // Due for renewal at once, so the lease's value shows the token soon.
                        let renewed = sent.saturating_sub(timing.ttl / 3);
                        let held = Held { token: *token, opening: opening.number, revision: *revision, renewed };
                        process.held.insert(*partition, held);
                    }
                    return Flow::Next(Stage::Done);
                }
                memory.claim_retry_at = Some(local + timing.ttl / 3);
                for (partition, (revision, _)) in &taken {
                    self.round_kv(KvOp::Delete(Key::Lease(*partition), *revision), cx);
                }
                Flow::Await(Stage::Released { then: Box::new(Stage::Done) })
            }
            Stage::Done => Flow::Next(Stage::Done),
        }
    }

    /// One pass of `settle_binding`'s loop: the real `decide`, and the step it asks for.
    fn decide(&mut self, steps: usize, local: Millis, timing: Timing, cx: &mut Ctx<'_>) -> Flow {
        if steps == 0 {
            return Flow::Next(Stage::Fences);
        }
        let claimant = self.claimant(local, timing);
        let hears_members = self.hears_members(local, timing);
        let ledger = self.ledger;
        let Some(process) = &mut self.process else { return Flow::Next(Stage::Done) };
        let Some(round) = &process.round else { return Flow::Next(Stage::Done) };
        let memory = &mut process.memory;
        let nats = match round.nats {
            Some(Value::Binding { ledger }) => Some((ledger.name(), cx.partitions)),
            _ => None,
        };
        // From c501df9 the grace counts only while this node hears its own announcements
        // (`settle_binding`, `Owner::hears_members`).
        let heard = !cx.protocol.grace_while_heard() || hears_members;
        let since = match memory.recorded.is_none() && nats.is_none() && heard {
            true => *memory.unbound_since.get_or_insert(local),
            false => {
                memory.unbound_since = None;
                local
            }
        };
        let starts_serving = cx.protocol.announces_before_serving() && memory.refused.is_some();
        let facts = Facts {
            ledger: ledger.name(),
            partitions: cx.partitions,
            recorded: memory.recorded.map(LedgerId::name),
            nats,
            claimant: claimant.as_ref().map(|(node, ledger)| (node.as_str(), ledger.name())),
            unbound_for: Duration::from_millis(local.saturating_sub(since)),
            grace: Duration::from_millis(timing.grace()),
        };
        match decide(&facts) {
            Step::Record(named) => {
                let Some(named) = LedgerId::named(&named) else { return Flow::Next(Stage::Fences) };
                self.settle_ledger(LedgerOp::Record(named), cx);
                Flow::Await(Stage::Recorded { steps: steps - 1 })
            }
            Step::Bind => {
                self.settle_kv(KvOp::Create(Key::Binding, Value::Binding { ledger }), cx);
                Flow::Await(Stage::Created { steps: steps - 1 })
            }
            Step::Wait(reason) => Flow::Next(Stage::Verdict { refused: Some(reason), waiting: true }),
            Step::Refuse(reason) => Flow::Next(Stage::Verdict { refused: Some(reason), waiting: false }),
            // `read_binding`'s `starts_serving` (from cca8b70).
            Step::Serve if starts_serving => Flow::Next(Stage::StartServing),
            Step::Serve => Flow::Next(Stage::Verdict { refused: None, waiting: false }),
        }
    }

    /// `Owner::announced_serving`'s check (cca8b70 to 24d3bd9, `Cca8b70`): whether this node's own member
    /// record, live as of `tables_now`, says its ledger serves the deployment.
    fn announced_serving(&self, local: Millis, timing: Timing) -> bool {
        let now = self.tables_now(local, timing);
        let Some(process) = &self.process else { return false };
        process
            .members
            .live(timing.ttl, now)
            .any(|(key, seen)| key == Key::Member(self.id) && matches!(seen.value, Value::Member { serves: true, .. }))
    }

    /// `Owner::hears_members` (from c501df9): whether this node's own announcement came back
    /// through the member watch within two heartbeats.
    fn hears_members(&self, local: Millis, timing: Timing) -> bool {
        let seen = self.process.as_ref().and_then(|p| p.members.seen_at(Key::Member(self.id)));
        seen.is_some_and(|seen| local.saturating_sub(seen) <= timing.heartbeat * 2)
    }

    /// `Owner::tables_now`.
    fn tables_now(&self, local: Millis, timing: Timing) -> Millis {
        let seen = self.process.as_ref().and_then(|p| p.members.seen_at(Key::Member(self.id)));
        match seen {
            Some(seen) => (seen + timing.heartbeat * 2).min(local),
            None => local,
        }
    }

    /// `Owner::assigned`: rendezvous hashing (the real `plan::assign`) over the live members
    /// of this node's ledger, this node included.
    fn assigned(&self, local: Millis, timing: Timing, partitions: u32) -> BTreeMap<u32, Option<String>> {
        let now = self.tables_now(local, timing);
        let mut names: Vec<&str> = Vec::new();
        if let Some(process) = &self.process {
            for (key, seen) in process.members.live(timing.ttl, now) {
                if let (Key::Member(node), Value::Member { ledger, .. }) = (key, seen.value)
                    && ledger == self.ledger
                {
                    names.push(&self.names[usize::from(node)]);
                }
            }
        }
        if !names.contains(&self.name()) {
            names.push(self.name());
        }
        plan::assign(partitions, &names)
    }

    /// `Owner::holders`.
    fn holders(&self, local: Millis, timing: Timing) -> BTreeMap<u32, Holder> {
        let now = self.tables_now(local, timing);
        let Some(process) = &self.process else { return BTreeMap::new() };
        process
            .leases
            .live(timing.ttl, now)
            .filter_map(|(key, seen)| match (key, seen.value) {
                (Key::Lease(partition), Value::Lease { node, ledger, .. }) => {
                    let name = self.names[usize::from(node)].clone();
                    Some((partition, if ledger == self.ledger { Holder::Member(name) } else { Holder::Foreign(name) }))
                }
                _ => None,
            })
            .collect()
    }

    /// `Owner::claimant`.
    fn claimant(&self, local: Millis, timing: Timing) -> Option<(String, LedgerId)> {
        let now = self.tables_now(local, timing);
        let process = self.process.as_ref()?;
        process.members.live(timing.ttl, now).find_map(|(key, seen)| match (key, seen.value) {
            (Key::Member(node), Value::Member { ledger, serves: true }) if ledger != self.ledger => {
                Some((self.names[usize::from(node)].clone(), ledger))
            }
            _ => None,
        })
    }

    /// The renewal task's sleep ended (`leases::renew`): renew each lease last renewed a
    /// third of the TTL ago.
    pub fn renew(&mut self, cx: &mut Ctx<'_>) {
        let local = self.local(cx);
        let (me, ledger, timing) = (self.id, self.ledger, cx.timing);
        let Some(process) = &mut self.process else { return };
        let due: Vec<(u32, Held)> = process
            .held
            .iter()
            .filter(|(_, held)| local.saturating_sub(held.renewed) >= timing.ttl / 3)
            .map(|(partition, held)| (*partition, *held))
            .collect();
        if due.is_empty() {
            cx.effects.push(Effect::Renew { delay: timing.ttl / 6 });
            return;
        }
        process.renewal = Some(Renewal {
            sent: local,
            sent_at: cx.now,
            partitions: BTreeMap::new(),
            waiting: BTreeSet::new(),
            answers: BTreeMap::new(),
        });
        for (partition, held) in due {
            let value = Value::Lease { node: me, ledger, token: Some(held.token) };
            let op = KvOp::Update(Key::Lease(partition), value, held.revision);
            self.send(Purpose::Renewal, Request::Kv(op, timing.request), cx);
            if let Some(renewal) = self.process.as_mut().and_then(|p| p.renewal.as_mut()) {
                renewal.partitions.insert(*cx.next_request, partition);
            }
        }
    }

    /// A renewal answered "wrong last revision" (`leases::renew` from c501df9): the lease
    /// expired on the server, or another node holds it. Create the key again with the same
    /// value, within what is left of the renewal's one request bound (`js::request` bounds
    /// the update and the create together).
    /// Whether the create was sent (the lease is still held; it always is while a renewal is
    /// in flight, since `hand_over` waits for it).
    fn create_again(&mut self, partition: u32, cx: &mut Ctx<'_>) -> bool {
        let (me, ledger) = (self.id, self.ledger);
        let Some(process) = &mut self.process else { return false };
        let Some(held) = process.held.get(&partition) else { return false };
        let Some(renewal) = &process.renewal else { return false };
        let value = Value::Lease { node: me, ledger, token: Some(held.token) };
        let timeout = (renewal.sent_at + cx.timing.request).saturating_sub(cx.now).max(1);
        self.send(Purpose::Renewal, Request::Kv(KvOp::Create(Key::Lease(partition), value), timeout), cx);
        if let Some(renewal) = self.process.as_mut().and_then(|p| p.renewal.as_mut()) {
            renewal.partitions.insert(*cx.next_request, partition);
        }
        true
    }

    /// Every renewal of an iteration answered (`leases::renew`). A lease renewed (or created
    /// again) is kept at its new revision; one another node holds now (the create found the
    /// key; before c501df9, any moved revision) is dropped and its partition closed at once.
    /// One whose renewal got no answer is kept, to be renewed at the next pass; before
    /// c501df9 it was dropped and closed once nearly a TTL had passed without a renewal.
    fn renewed(&mut self, cx: &mut Ctx<'_>) {
        let local = self.local(cx);
        let ttl = cx.timing.ttl;
        let keeps = cx.protocol.keeps_unanswered_leases();
        let Some(process) = &mut self.process else { return };
        let Some(renewal) = process.renewal.take() else { return };
        let stats = &mut self.stats;
        for (request, answer) in renewal.answers {
            let Some(partition) = renewal.partitions.get(&request) else { continue };
            let Some(lease) = process.held.get_mut(partition) else { continue };
            let lost = match answer {
                Some(Answer::Kv(KvReply::Updated(Some(revision)))) => {
                    (lease.revision, lease.renewed) = (revision, renewal.sent);
                    false
                }
                Some(Answer::Kv(KvReply::Created(Some(revision)))) => {
                    stats.recreated += 1;
                    (lease.revision, lease.renewed) = (revision, renewal.sent);
                    false
                }
                Some(Answer::Kv(KvReply::Updated(None) | KvReply::Created(None))) => true,
                _ => {
                    stats.unanswered += 1;
                    process.damage = true;
                    !keeps && local.saturating_sub(lease.renewed) + ttl / 6 >= ttl
                }
            };
            if lost {
                stats.lost += 1;
                let opening = lease.opening;
                process.held.remove(partition);
                // `Partitions::close_opening`: a later opening stays open.
                if process.open.get(partition).is_some_and(|open| open.number == opening) {
                    process.open.remove(partition);
                }
            }
        }
        cx.effects.push(Effect::Renew { delay: ttl / 6 });
        let blocked = process.round.as_ref().is_some_and(|round| matches!(round.stage, Stage::Remove { .. }));
        if blocked {
            self.advance(cx);
        }
    }

    /// A client's payment, delivered by NATS to this node's subscription of `partition`: the
    /// bus posts it under the partition's token and answers.
    pub fn payment(&mut self, payment: PaymentId, partition: u32, attempt: u32, cx: &mut Ctx<'_>) {
        let Some(process) = &mut self.process else { return };
        match process.open.get(&partition) {
            Some(opening) => {
                let op = LedgerOp::Commit { payment, partition, token: opening.token };
                self.send(Purpose::Payment { payment, attempt }, Request::Ledger(op, cx.timing.request), cx);
            }
            None => cx.effects.push(Effect::Answer { payment, attempt, ack: false }),
        }
    }

    /// Whether the node has `partition` open (NATS routes its payments here).
    pub fn serves(&self, partition: u32) -> bool {
        self.open_token(partition).is_some()
    }

    /// The token the node posts `partition`'s payments under, if it has it open.
    pub fn open_token(&self, partition: u32) -> Option<u64> {
        self.process.as_ref().and_then(|p| p.open.get(&partition)).map(|opening| opening.token)
    }

    pub fn incarnation(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.incarnation)
    }

    /// Why the node serves nothing, if it does not (for the trace).
    pub fn refused(&self) -> Option<&str> {
        self.process.as_ref().and_then(|p| p.memory.refused.as_deref())
    }
}

/// A request before it is numbered.
enum Request {
    Kv(KvOp, Millis),
    Ledger(LedgerOp, Millis),
}
