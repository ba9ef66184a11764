//! How each loaded plugin version is doing: calls, failures and latency for the operators'
//! view, and quarantine, which takes a version that keeps failing out of the payment path.
//!
//! A version that traps, runs out of fuel or breaks the contract on most calls costs every
//! payment of its method the full call (up to the wall-clock backstop) before the refusal.
//! Quarantine refuses at once instead, on this node, until an operator rolls back or
//! re-activates the version: an automatic retry would just fail the next window's payments
//! the slow way too.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::settings::QuarantineSettings;

/// Latency buckets: bucket `i` counts calls shorter than 2^i µs (the last one, the rest).
const BUCKETS: usize = 24;

/// Counters of one plugin version, shared by every worker that calls it. Every call of the
/// version updates them, on the payment's path: atomics only, and a lock only when the
/// version tips into quarantine or is released.
#[derive(Debug)]
pub struct Health {
    calls: AtomicU64,
    failures: AtomicU64,
    latency: [AtomicU64; BUCKETS],
    /// Windows are `window_ms` long, counted from when the version was loaded.
    born: Instant,
    /// The index of the window `window_calls` and `window_failures` count.
    window: AtomicU64,
    window_calls: AtomicU64,
    window_failures: AtomicU64,
    /// Whether `reason` holds a quarantine: read by every call without the lock.
    quarantined: AtomicBool,
    reason: Mutex<Option<String>>,
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
            born: Instant::now(),
            window: AtomicU64::new(0),
            window_calls: AtomicU64::new(0),
            window_failures: AtomicU64::new(0),
            quarantined: AtomicBool::new(false),
            reason: Mutex::new(None),
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
        // The first call of a new window starts its counts from zero. Calls racing with that
        // may land in either window: the share is a threshold, not a ledger.
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX) / policy.window_ms.max(1);
        let seen = self.window.load(Ordering::Relaxed);
        if now != seen && self.window.compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.window_calls.store(0, Ordering::Relaxed);
            self.window_failures.store(0, Ordering::Relaxed);
        }
        let window_calls = self.window_calls.fetch_add(calls, Ordering::Relaxed) + calls;
        if !failed {
            return None;
        }
        let window_failures = self.window_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let tipped = window_calls >= policy.min_calls.max(1)
            && window_failures * 100 > u64::from(policy.failure_percent) * window_calls;
        if !tipped {
            return None;
        }
        let mut reason = lock(&self.reason);
        if reason.is_some() {
            return None;
        }
        let why = format!(
            "{window_failures} of its last {window_calls} calls failed (more than {} % within {} ms)",
            policy.failure_percent, policy.window_ms
        );
        *reason = Some(why.clone());
        self.quarantined.store(true, Ordering::Release);
        Some(why)
    }

    /// Why the version is quarantined, if it is.
    pub fn quarantined(&self) -> Option<String> {
        if !self.quarantined.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.reason).clone()
    }

    /// Lifts the quarantine and starts the window's counts afresh: the operator re-enabled
    /// the version.
    pub fn release(&self) {
        let mut reason = lock(&self.reason);
        *reason = None;
        self.quarantined.store(false, Ordering::Release);
        self.window_calls.store(0, Ordering::Relaxed);
        self.window_failures.store(0, Ordering::Relaxed);
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
