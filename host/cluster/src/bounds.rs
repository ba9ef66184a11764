//! How long each step of a node's part in the cluster may take, computed from the bounds of
//! the steps it is made of, so the bound a caller waits for is true by construction instead of
//! argued in prose.
//!
//! The bus's bounds come in through [`crate::ports::Partitions`] (`CLOSE_TIMEOUT`,
//! `OPEN_TIMEOUT`): the cluster waits for them and cannot know them otherwise. Every
//! JetStream request is bounded by [`REQUEST_TIMEOUT`]; the ledger's claim by
//! [`CLAIM_TIMEOUT`]. Steps that run at once (closing many partitions, releasing many leases)
//! count once.

use std::time::Duration;

use crate::jetstream::{REQUEST_TIMEOUT, SETUP_ATTEMPT_TIMEOUT};

/// How long claiming partitions in the ledger may take (PostgreSQL waits for an old owner's
/// batch holding a partition's fence row, up to its 2 s lock timeout).
pub(crate) const CLAIM_TIMEOUT: Duration = Duration::from_secs(5);
/// How long settling the deployment's binding may take in a round: reading the ledger's
/// record (a ledger call, bounded like a claim) and NATS's binding; the steps that follow (a
/// record, a bind) share the bound, and one cut short is taken again by the next round, which
/// reads both again.
pub(crate) const BINDING_TIMEOUT: Duration = sum(&[CLAIM_TIMEOUT, REQUEST_TIMEOUT]);
/// Room for the scheduler between the bounded steps (2 cores, a busy node).
const SCHEDULING_SLACK: Duration = Duration::from_secs(1);

/// The sum of `parts`, saturating.
pub const fn sum(parts: &[Duration]) -> Duration {
    let mut total = Duration::ZERO;
    let mut index = 0;
    while index < parts.len() {
        total = total.saturating_add(parts[index]);
        index += 1;
    }
    total
}

/// Handing partitions over: closing them (at once), waiting out a renewal in flight, then
/// releasing their leases (at once).
pub const fn hand_over(close: Duration) -> Duration {
    sum(&[close, REQUEST_TIMEOUT, REQUEST_TIMEOUT])
}

/// Taking partitions: creating their leases (at once), claiming them in the ledger, opening
/// them (at once), releasing the leases of those that failed (at once).
pub const fn take(open: Duration) -> Duration {
    sum(&[REQUEST_TIMEOUT, CLAIM_TIMEOUT, open, REQUEST_TIMEOUT])
}

/// One round: re-creating lost buckets (one set-up attempt, all at once), announcing,
/// settling the binding, announcing again before it starts serving, reading the ledger's
/// fences (bounded like a claim), handing over (once: what the plan gives away and what the
/// fences took), taking.
pub const fn round(close: Duration, open: Duration) -> Duration {
    sum(&[
        SETUP_ATTEMPT_TIMEOUT,
        REQUEST_TIMEOUT,
        BINDING_TIMEOUT,
        REQUEST_TIMEOUT,
        CLAIM_TIMEOUT,
        hand_over(close),
        take(open),
    ])
}

/// Leaving: withdrawing the membership, then handing every partition over.
pub const fn leave(close: Duration) -> Duration {
    sum(&[REQUEST_TIMEOUT, hand_over(close)])
}

/// How long `Cluster::leave` waits before it gives up and lets the leases expire: a
/// round in progress when asked to stop is finished first (cut short, it could leave a
/// partition open that no lease covers), then the leave.
pub const fn stop(close: Duration, open: Duration) -> Duration {
    sum(&[round(close, open), leave(close), SCHEDULING_SLACK])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The arithmetic, written out once with round numbers (a 16 s close, an 18 s open):
    /// hand over 16 + 2 + 2 = 20; take 2 + 5 + 18 + 2 = 27; binding 5 + 2 = 7; round
    /// 3 + 2 + 7 + 2 + 5 + 20 + 27 = 66; leave 2 + 20 = 22; stop 66 + 22 + 1 = 89.
    #[test]
    fn the_stop_bound_is_the_sum_of_its_steps() {
        let (close, open) = (Duration::from_secs(16), Duration::from_secs(18));
        assert_eq!(hand_over(close), Duration::from_secs(20));
        assert_eq!(take(open), Duration::from_secs(27));
        assert_eq!(BINDING_TIMEOUT, Duration::from_secs(7));
        assert_eq!(round(close, open), Duration::from_secs(66));
        assert_eq!(leave(close), Duration::from_secs(22));
        assert_eq!(stop(close, open), Duration::from_secs(89));
        assert_eq!(sum(&[Duration::MAX, Duration::from_secs(1)]), Duration::MAX);
    }
}
