//! Simulated time: milliseconds since the run began, on the world's clock (which is also the
//! KV's and the ledgers' clock), and the protocol's timing, taken from the real crate where it
//! is public and mirrored (with the item cited) where it is not.

use std::time::Duration;

use wasmpay_cluster::ClusterSettings;
use wasmpay_cluster::jetstream::REQUEST_TIMEOUT;

/// A point or a span of simulated time, in milliseconds.
pub type Millis = u64;

/// The world's clock starts here, so a node clock jumped backward never goes below zero.
pub const EPOCH: Millis = 1_000_000;

/// How the protocol is timed in a run.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Lease and member TTL (`ClusterSettings::lease_ttl_ms`).
    pub ttl: Millis,
    /// The heartbeat in effect: `heartbeat_ms`, at most a third of the TTL (`Owner::start`).
    pub heartbeat: Millis,
    /// One JetStream request's bound (`jetstream::REQUEST_TIMEOUT`).
    pub request: Millis,
    /// A ledger claim's bound (`bounds::CLAIM_TIMEOUT`, crate-private: 5 s).
    pub claim: Millis,
    /// Settling the binding in a round (`bounds::BINDING_TIMEOUT` = claim + request).
    pub binding: Millis,
}

impl Timing {
    /// The real defaults.
    pub fn real() -> Timing {
        let settings = ClusterSettings::default();
        let ttl = settings.lease_ttl_ms.max(1);
        let request = millis(REQUEST_TIMEOUT);
        let claim = 5_000;
        Timing { ttl, heartbeat: settings.heartbeat_ms.max(1).min(ttl / 3), request, claim, binding: claim + request }
    }

    /// The grace a node with no record waits before binding (`Owner::grace`).
    pub fn grace(&self) -> Millis {
        self.ttl + self.heartbeat
    }
}

/// `duration` in whole milliseconds (saturating).
pub fn millis(duration: Duration) -> Millis {
    Millis::try_from(duration.as_millis()).unwrap_or(Millis::MAX)
}

/// A node's clock: the world's, shifted by an offset that clock-jump faults change. The real
/// code measures with `Instant` (monotonic), so a backward jump is harsher than anything it
/// sees; it stands for a clock that is wrong, which the fencing must survive.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    pub offset: i64,
}

impl Clock {
    pub fn local(&self, world: Millis) -> Millis {
        world.saturating_add_signed(self.offset)
    }
}
