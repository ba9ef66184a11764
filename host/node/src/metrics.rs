//! Prometheus metrics, kept in atomics and rendered as text on `GET /metrics`.
//! Durations are counted in whole microseconds; no floats are stored.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmpay_plugin_host::CallObserver;
use wasmpay_protocol::{Code, Status};

/// Bucket upper bounds in microseconds.
const BUCKETS_US: [u64; 12] = [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000];

/// A latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        if let Some(index) = BUCKETS_US.iter().position(|bound| micros <= *bound) {
            self.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS_US.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", seconds(*bound));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", seconds(self.sum_us.load(Ordering::Relaxed)));
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Microseconds written as decimal seconds, e.g. 2500 -> `0.002500`.
fn seconds(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// Every metric of a node.
#[derive(Debug, Default)]
pub struct Metrics {
    payments: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// One plugin export call.
    pub plugin_call: Histogram,
    /// One ledger transaction, begin to commit.
    pub ledger_commit: Histogram,
}

impl Metrics {
    /// Counts one reply.
    pub fn count_payment(&self, status: Status, code: Code) {
        let mut payments = self.payments.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *payments.entry((status.as_str(), code.as_str())).or_default() += 1;
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP wasmpay_payments_total Payment replies by status and code.\n");
        out.push_str("# TYPE wasmpay_payments_total counter\n");
        let payments = self.payments.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        for ((status, code), count) in payments {
            let _ = writeln!(out, "wasmpay_payments_total{{status=\"{status}\",code=\"{code}\"}} {count}");
        }
        self.plugin_call.render("wasmpay_plugin_call_seconds", "Latency of one plugin export call.", &mut out);
        self.ledger_commit.render("wasmpay_ledger_commit_seconds", "Latency of one ledger transaction.", &mut out);
        out
    }
}

impl CallObserver for Metrics {
    fn plugin_called(&self, _plugin: &str, elapsed: Duration) {
        self.plugin_call.observe(elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let metrics = Metrics::default();
        metrics.count_payment(Status::Approved, Code::Ok);
        metrics.count_payment(Status::Approved, Code::Ok);
        metrics.plugin_call.observe(Duration::from_micros(20));
        metrics.plugin_call.observe(Duration::from_micros(3_000));
        let text = metrics.render();
        assert!(text.contains("wasmpay_payments_total{status=\"approved\",code=\"ok\"} 2"), "{text}");
        assert!(text.contains("wasmpay_plugin_call_seconds_bucket{le=\"0.000025\"} 1"), "{text}");
        assert!(text.contains("wasmpay_plugin_call_seconds_bucket{le=\"0.005000\"} 2"), "{text}");
        assert!(text.contains("wasmpay_plugin_call_seconds_sum 0.003020"), "{text}");
    }
}
