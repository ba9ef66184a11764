//! Plugins on the partition's own thread. A card payment's plugins take some 10 µs of CPU,
//! and sending them to a plugin thread and back cost the node more than that: two thread
//! wake-ups, a task, a channel (docs/performance.md, step 13). So a payment's plugins first
//! run where its partition's work runs, each call and each instantiation on a small budget,
//! [`INLINE_FUEL`] and [`INLINE_DEADLINE_TICKS`]; a call that needs more is stopped there,
//! uncounted, and the
//! payment's plugins run again from fresh instances on a plugin thread with the full budget,
//! under the method's share of the plugin CPU (`shares`), as before. Plugins see one payment
//! and nothing else (no clock, no state between payments), so the second run decides what the
//! first would have. Stopping costs at most that budget per call, and after it the
//! version's next [`BACKOFF`] calls go to a plugin thread straight away: a slow method costs
//! its partition's thread one budget per [`BACKOFF`] payments, not one per payment, and never
//! holds that thread (which other partitions' payments share) longer than the budget.

use std::sync::atomic::{AtomicU32, Ordering};

/// Fuel one call, or one instantiation, may burn on the partition's thread: about a tenth of a
/// millisecond of guest code, some ten times what a built-in plugin's call burns.
pub(crate) const INLINE_FUEL: u64 = 250_000;
/// Epoch ticks (of 5 ms) one call, or one instantiation, may run on the partition's thread:
/// fuel does not bound time on its own (a bulk memory instruction costs one unit whatever its
/// length), so the budget has a deadline too, of 15-20 ms (the first tick may come at once).
/// Far above a call's 10 µs, so that a call a busy machine preempts is rarely stopped: one
/// that is runs again on a plugin thread, which only costs time.
pub(crate) const INLINE_DEADLINE_TICKS: u64 = 4;
/// How many of a version's calls go to a plugin thread after one outgrew [`INLINE_FUEL`] or
/// [`INLINE_DEADLINE_TICKS`].
const BACKOFF: u32 = 1_000;

/// Whether a plugin version's calls try the partition's thread first; shared by every worker.
#[derive(Debug, Default)]
pub(crate) struct InlineRuns {
    /// Calls still to send to a plugin thread straight away.
    skip: AtomicU32,
}

impl InlineRuns {
    /// Whether the next call may try the partition's thread; if not, one fewer to skip.
    pub(crate) fn allowed(&self) -> bool {
        self.skip.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |skip| skip.checked_sub(1)).is_err()
    }

    /// A call outgrew the budget: the next [`BACKOFF`] calls skip the partition's thread.
    pub(crate) fn outgrown(&self) {
        self.skip.store(BACKOFF, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_that_outgrew_the_budget_skips_the_next_calls_then_tries_again() {
        let runs = InlineRuns::default();
        assert!(runs.allowed() && runs.allowed());
        runs.outgrown();
        for _ in 0..BACKOFF {
            assert!(!runs.allowed());
        }
        assert!(runs.allowed(), "tried again after the backoff");
    }
}
