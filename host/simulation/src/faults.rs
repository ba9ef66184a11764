//! The faults of a run, drawn from its seed before it starts: each is a start and (for those
//! that last) an end, all within the fault phase; a quiet period follows in which everything
//! is healed.

use crate::kv::{BucketId, Loss, NodeId};
use crate::network::Weather;
use crate::rng::Rng;
use crate::time::Millis;

/// One fault's start or end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// SIGSTOP: the node's events wait until it resumes; its subscriptions stay, so NATS
    /// still routes payments to it.
    Pause(NodeId),
    /// SIGCONT: it goes on with what it believed.
    Resume(NodeId),
    /// The process dies (its memory is lost, its ledger stays).
    Kill(NodeId),
    /// A new process starts.
    Restart(NodeId),
    /// The node is cut off from NATS.
    Cut(NodeId),
    Heal(NodeId),
    /// The KV loses a bucket's state (or all three).
    LoseKv {
        bucket: Option<BucketId>,
        loss: Loss,
    },
    /// The node's clock jumps by this many milliseconds.
    JumpClock {
        node: NodeId,
        by: i64,
    },
    /// Messages are lost, duplicated and delayed more for a while.
    Storm(Weather),
    Calm,
}

/// A run's faults, in time order, and when the last one has healed (a clock jump counts as
/// healed once the node's tables have aged through it).
#[derive(Clone, Debug)]
pub struct Schedule {
    pub faults: Vec<(Millis, Fault)>,
    pub healed: Millis,
}

/// Draws between 1 and 8 faults starting in `from..until` on `nodes` nodes.
pub fn schedule(rng: &mut Rng, nodes: u8, from: Millis, until: Millis) -> Schedule {
    let mut faults = Vec::new();
    let mut healed = from;
    let count = rng.between(1, 8);
    for _ in 0..count {
        let at = rng.between(from, until);
        let node = u8::try_from(rng.below(u64::from(nodes))).unwrap_or(0);
        // A fault that lasts: its start, its end, and how long it lasts at least and at most.
        let lasting = match rng.below(7) {
            0 => Some((Fault::Pause(node), Fault::Resume(node), 200, 6_000)),
            1 => Some((Fault::Kill(node), Fault::Restart(node), 200, 6_000)),
            2 => Some((Fault::Cut(node), Fault::Heal(node), 200, 8_000)),
            3 => {
                let weather = Weather {
                    loss: rng.between(0, 300),
                    duplicate: rng.between(0, 200),
                    max_delay: rng.between(5, 1_500),
                };
                Some((Fault::Storm(weather), Fault::Calm, 500, 8_000))
            }
            4 => {
                let by = i64::try_from(rng.between(50, 3_000)).unwrap_or(0);
                let by = if rng.chance(500) { by } else { -by };
                faults.push((at, Fault::JumpClock { node, by }));
                healed = healed.max(at + by.unsigned_abs());
                None
            }
            _ => {
                let bucket = match rng.below(4) {
                    0 => None,
                    1 => Some(BucketId::Members),
                    2 => Some(BucketId::Leases),
                    _ => Some(BucketId::Binding),
                };
                let loss = if rng.chance(500) { Loss::Deleted } else { Loss::Emptied };
                faults.push((at, Fault::LoseKv { bucket, loss }));
                None
            }
        };
        let end = match lasting {
            Some((start, end, shortest, longest)) => {
                let end_at = at + rng.between(shortest, longest);
                faults.push((at, start));
                faults.push((end_at, end));
                end_at
            }
            None => at,
        };
        healed = healed.max(end);
    }
    faults.sort_by_key(|(at, _)| *at);
    Schedule { faults, healed }
}
