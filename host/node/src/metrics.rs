//! Prometheus metrics, kept in atomics and rendered as text on `GET /metrics`.
//! Durations are counted in whole microseconds; no floats are stored.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmpay_cluster::ClusterObserver;
use wasmpay_ledger::CommitObserver;
use wasmpay_plugin_host::{CallObserver, Census};
use wasmpay_protocol::{Code, Status};

/// Bucket upper bounds of latencies, in microseconds.
const LATENCY_BOUNDS_US: &[u64] = &[10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000];
/// Bucket upper bounds of ledger batch sizes, in transfers.
const BATCH_SIZE_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/// How a histogram's values are written out.
#[derive(Clone, Copy, Debug)]
enum Unit {
    /// Stored in microseconds, written in seconds.
    Seconds,
    /// Written as they are.
    Count,
}

/// A Prometheus histogram over fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    unit: Unit,
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [u64], unit: Unit) -> Histogram {
        let buckets = bounds.iter().map(|_| AtomicU64::new(0)).collect();
        Histogram { bounds, unit, buckets, count: AtomicU64::new(0), sum: AtomicU64::new(0) }
    }

    /// Records one duration (a latency histogram).
    pub fn observe(&self, elapsed: Duration) {
        self.observe_value(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    fn observe_value(&self, value: u64) {
        if let Some(index) = self.bounds.iter().position(|bound| value <= *bound) {
            self.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let written = |value: u64| match self.unit {
            Unit::Seconds => seconds(value),
            Unit::Count => value.to_string(),
        };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", written(*bound));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", written(self.sum.load(Ordering::Relaxed)));
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Microseconds written as decimal seconds, e.g. 2500 -> `0.002500`.
fn seconds(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// Every metric of a node.
#[derive(Debug)]
pub struct Metrics {
    payments: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// One plugin export call.
    pub plugin_call: Histogram,
    /// How long a payment waits for the ledger: its batch's queue, write and commit.
    pub ledger_commit: Histogram,
    /// Transfers per committed ledger batch.
    ledger_batch_size: Histogram,
    /// One ledger batch, begin to commit.
    ledger_batch: Histogram,
    /// Partitions this node holds the lease of and serves now.
    partitions_owned: AtomicU64,
    /// Partitions this node handed over to another (closed, drained, lease released).
    handoffs: AtomicU64,
    /// Lease renewals that failed: the lease was lost (another owner) or NATS did not answer.
    lease_renewal_failures: AtomicU64,
    leases_lost: AtomicU64,
    /// Ledger batches that refused payments under an older lease token (a newer owner claimed
    /// their partition).
    fenced_batches: AtomicU64,
    /// Plugin versions switched to (activations, rollbacks, removals) on this node.
    pub plugin_switches: AtomicU64,
    /// Plugin versions refused by their checks on this node.
    pub plugin_refusals: AtomicU64,
    /// Plugin versions quarantined on this node.
    plugin_quarantines: AtomicU64,
    /// Live plugin versions and instances, once the plugins are loaded.
    pub plugin_census: std::sync::OnceLock<Census>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            payments: Mutex::default(),
            plugin_call: Histogram::new(LATENCY_BOUNDS_US, Unit::Seconds),
            ledger_commit: Histogram::new(LATENCY_BOUNDS_US, Unit::Seconds),
            ledger_batch_size: Histogram::new(BATCH_SIZE_BOUNDS, Unit::Count),
            ledger_batch: Histogram::new(LATENCY_BOUNDS_US, Unit::Seconds),
            partitions_owned: AtomicU64::new(0),
            handoffs: AtomicU64::new(0),
            lease_renewal_failures: AtomicU64::new(0),
            leases_lost: AtomicU64::new(0),
            fenced_batches: AtomicU64::new(0),
            plugin_switches: AtomicU64::new(0),
            plugin_refusals: AtomicU64::new(0),
            plugin_quarantines: AtomicU64::new(0),
            plugin_census: std::sync::OnceLock::new(),
        }
    }
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
        let waited = "Time a payment waits for the ledger, its batch's commit included.";
        self.ledger_commit.render("wasmpay_ledger_commit_seconds", waited, &mut out);
        self.ledger_batch_size.render("wasmpay_ledger_batch_size", "Transfers per committed ledger batch.", &mut out);
        self.ledger_batch.render("wasmpay_ledger_batch_seconds", "Write and commit of one ledger batch.", &mut out);
        let (versions, instances) =
            self.plugin_census.get().map_or((0, 0), |census| (census.versions(), census.instances()));
        let plugins: [(&str, &str, &str, u64); 5] = [
            (
                "wasmpay_plugin_switches_total",
                "counter",
                "Plugin version switches (activate, rollback, remove).",
                self.plugin_switches.load(Ordering::Relaxed),
            ),
            (
                "wasmpay_plugin_refusals_total",
                "counter",
                "Plugin versions refused by their checks.",
                self.plugin_refusals.load(Ordering::Relaxed),
            ),
            (
                "wasmpay_plugin_quarantines_total",
                "counter",
                "Plugin versions quarantined for failing.",
                self.plugin_quarantines.load(Ordering::Relaxed),
            ),
            (
                "wasmpay_plugin_versions_loaded",
                "gauge",
                "Plugin versions loaded (serving, retained, or held by a payment).",
                u64::try_from(versions).unwrap_or(u64::MAX),
            ),
            (
                "wasmpay_plugin_instances",
                "gauge",
                "Plugin instances alive.",
                u64::try_from(instances).unwrap_or(u64::MAX),
            ),
        ];
        for (name, kind, help, value) in plugins {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        let cluster: [(&str, &str, &str, &AtomicU64); 5] = [
            ("wasmpay_partitions_owned", "gauge", "Partitions this node holds the lease of.", &self.partitions_owned),
            ("wasmpay_handoffs_total", "counter", "Partitions handed over to another node.", &self.handoffs),
            (
                "wasmpay_lease_renewal_failures_total",
                "counter",
                "Lease renewals that failed (lost or unanswered).",
                &self.lease_renewal_failures,
            ),
            (
                "wasmpay_leases_lost_total",
                "counter",
                "Leases dropped because NATS said another node holds them or they expired.",
                &self.leases_lost,
            ),
            (
                "wasmpay_fenced_batches_total",
                "counter",
                "Ledger batches that refused payments under an older lease token.",
                &self.fenced_batches,
            ),
        ];
        for (name, kind, help, value) in cluster {
            let _ =
                writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", value.load(Ordering::Relaxed));
        }
        out
    }
}

impl CommitObserver for Metrics {
    fn batch_committed(&self, size: usize, elapsed: Duration) {
        self.ledger_batch_size.observe_value(u64::try_from(size).unwrap_or(u64::MAX));
        self.ledger_batch.observe(elapsed);
    }

    fn batch_fenced(&self, _partitions: &[u32]) {
        self.fenced_batches.fetch_add(1, Ordering::Relaxed);
    }
}

impl ClusterObserver for Metrics {
    fn handed_over(&self, count: u64) {
        self.handoffs.fetch_add(count, Ordering::Relaxed);
    }

    fn partitions_owned(&self, count: u64) {
        self.partitions_owned.store(count, Ordering::Relaxed);
    }

    fn renewal_failed(&self) {
        self.lease_renewal_failures.fetch_add(1, Ordering::Relaxed);
    }

    fn leases_lost(&self, count: u64) {
        self.leases_lost.fetch_add(count, Ordering::Relaxed);
    }
}

impl CallObserver for Metrics {
    fn plugin_called(&self, _plugin: &str, elapsed: Duration) {
        self.plugin_call.observe(elapsed);
    }

    fn plugin_quarantined(&self, _plugin: &str) {
        self.plugin_quarantines.fetch_add(1, Ordering::Relaxed);
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
        metrics.batch_committed(3, Duration::from_micros(400));
        let text = metrics.render();
        assert!(text.contains("wasmpay_payments_total{status=\"approved\",code=\"ok\"} 2"), "{text}");
        assert!(text.contains("wasmpay_plugin_call_seconds_bucket{le=\"0.000025\"} 1"), "{text}");
        assert!(text.contains("wasmpay_plugin_call_seconds_bucket{le=\"0.005000\"} 2"), "{text}");
        assert!(text.contains("wasmpay_plugin_call_seconds_sum 0.003020"), "{text}");
        assert!(text.contains("wasmpay_ledger_batch_size_bucket{le=\"2\"} 0"), "{text}");
        assert!(text.contains("wasmpay_ledger_batch_size_bucket{le=\"4\"} 1"), "{text}");
        metrics.batch_fenced(&[3]);
        assert!(text.contains("wasmpay_fenced_batches_total 0"), "{text}");
        assert!(metrics.render().contains("wasmpay_fenced_batches_total 1\n"));
    }
}
