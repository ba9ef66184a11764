//! How each loaded plugin version is doing: calls, failures and latency for the operators'
//! view, and quarantine, which takes a version that keeps failing out of the payment path.
//!
//! A version that traps, runs out of fuel or breaks the contract on most calls costs every
//! payment of its method the full call (up to the wall-clock backstop) before the refusal.
//! Quarantine refuses at once instead, on this node, until an operator rolls back or
//! re-activates the version: an automatic retry would just fail the next window's payments
//! the slow way too.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::settings::QuarantineSettings;

/// Latency buckets: bucket `i` counts calls shorter than 2^i µs (the last one, the rest).
const BUCKETS: usize = 24;

/// Counters of one plugin version, shared by every worker that calls it.
#[derive(Debug)]
pub struct Health {
    calls: AtomicU64,
    failures: AtomicU64,
    latency: [AtomicU64; BUCKETS],
    window: Mutex<Window>,
    quarantined: Mutex<Option<String>>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    calls: u64,
    failures: u64,
}

/// What [`Health`] shows an operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HealthView {
    /// Export calls since the version was loaded.
    pub calls: u64,
    /// Calls that failed (trap, fuel, timeout, memory, contract breach, instantiation).
    pub failures: u64,
    /// Median call time, µs (the upper bound of its power-of-two bucket).
    pub p50_us: u64,
    /// 99th percentile call time, µs (likewise).
    pub p99_us: u64,
    /// Why the version is quarantined on this node, if it is.
    pub quarantined: Option<String>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            window: Mutex::new(Window { started: Instant::now(), calls: 0, failures: 0 }),
            quarantined: Mutex::new(None),
        }
    }
}

impl Health {
    /// Records one call; `failed` when it failed by the plugin's own doing. Returns why, if
    /// this call tipped the version into quarantine.
    pub fn record(&self, elapsed: Duration, failed: bool, policy: &QuarantineSettings) -> Option<String> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = usize::try_from(u64::BITS - micros.leading_zeros()).unwrap_or(BUCKETS).min(BUCKETS - 1);
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.tally(1, failed, policy)
    }

    /// Records that the answer of the call recorded last broke the contract (found by the
    /// host's checks after the call returned): that call failed after all.
    pub fn record_breach(&self, policy: &QuarantineSettings) -> Option<String> {
        self.tally(0, true, policy)
    }

    fn tally(&self, calls: u64, failed: bool, policy: &QuarantineSettings) -> Option<String> {
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        if policy.failure_percent >= 100 {
            return None;
        }
        let mut window = lock(&self.window);
        if window.started.elapsed() > Duration::from_millis(policy.window_ms) {
            *window = Window { started: Instant::now(), calls: 0, failures: 0 };
        }
        window.calls += calls;
        window.failures += u64::from(failed);
        let tipped = failed
            && window.calls >= policy.min_calls.max(1)
            && window.failures * 100 > u64::from(policy.failure_percent) * window.calls;
        if !tipped {
            return None;
        }
        let reason = format!(
            "{} of its last {} calls failed (more than {} % within {} ms)",
            window.failures, window.calls, policy.failure_percent, policy.window_ms
        );
        let mut quarantined = lock(&self.quarantined);
        if quarantined.is_some() {
            return None;
        }
        *quarantined = Some(reason.clone());
        Some(reason)
    }

    /// Why the version is quarantined, if it is.
    pub fn quarantined(&self) -> Option<String> {
        lock(&self.quarantined).clone()
    }

    /// Lifts the quarantine and starts a new window: the operator re-enabled the version.
    pub fn release(&self) {
        *lock(&self.quarantined) = None;
        *lock(&self.window) = Window { started: Instant::now(), calls: 0, failures: 0 };
    }

    /// The counters now.
    pub fn view(&self) -> HealthView {
        let counts: Vec<u64> = self.latency.iter().map(|count| count.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let percentile = |permille: u64| {
            let rank = (total * permille).div_ceil(1000).max(1);
            let mut seen = 0;
            for (bucket, count) in counts.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    return 1_u64 << bucket;
                }
            }
            0
        };
        HealthView {
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            p50_us: if total == 0 { 0 } else { percentile(500) },
            p99_us: if total == 0 { 0 } else { percentile(990) },
            quarantined: self.quarantined(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> QuarantineSettings {
        QuarantineSettings { failure_percent: 50, window_ms: 60_000, min_calls: 10 }
    }

    #[test]
    fn a_version_failing_most_calls_in_a_window_is_quarantined_once() {
        let health = Health::default();
        let call = |failed| health.record(Duration::from_micros(300), failed, &policy());
        // Half failing is not more than half.
        for index in 0..20 {
            assert_eq!(call(index % 2 == 1), None);
        }
        assert_eq!(health.quarantined(), None);
        assert_eq!(call(true).map(|reason| reason.starts_with("11 of its last 21 calls failed")), Some(true));
        assert_eq!(call(true), None, "reported once");
        assert!(health.quarantined().is_some());
        health.release();
        assert_eq!(health.quarantined(), None);
        // A call that returned but broke the contract counts as failed too.
        assert_eq!(call(false), None);
        assert_eq!(health.record_breach(&policy()), None, "1 failure of 1 call: too few calls");
        let view = health.view();
        assert_eq!((view.calls, view.failures, view.p50_us, view.p99_us), (23, 13, 512, 512));
    }

    #[test]
    fn too_few_calls_or_a_disabled_policy_never_quarantine() {
        let health = Health::default();
        for _ in 0..9 {
            assert_eq!(health.record(Duration::ZERO, true, &policy()), None);
        }
        let off = QuarantineSettings { failure_percent: 100, ..policy() };
        for _ in 0..100 {
            assert_eq!(health.record(Duration::ZERO, true, &off), None);
        }
        assert_eq!(health.view().quarantined, None);
    }
}
