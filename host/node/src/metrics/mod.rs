//! The node's metrics, kept by `prometheus-client` and written in the OpenMetrics text format
//! on `GET /metrics` (Prometheus scrapes it as it is).
//!
//! Every label is bounded, so a hostile client cannot grow the series without end: a
//! payment's `method` is one the plugins serve when it arrived (anything else is empty), a
//! plugin `version` is one that was loaded, an HTTP `route` is its template, a `code` and a
//! `status` are the protocol's. Durations are observed as they are measured; no balance or
//! amount is ever a metric.

mod process;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use wasmpay_cluster::ClusterObserver;
use wasmpay_ledger::CommitObserver;
use wasmpay_plugin_host::{CallObserver, Census, FailureKind, PluginId};
use wasmpay_protocol::{Code, Status};

/// A payment's time in the node, from being taken off NATS to its answer, in seconds: up to
/// the 30 s a client retries for (`wasmpay pay`, docs/protocol.md), so a stalled ledger shows
/// in its buckets and not only in `+Inf`.
const PAYMENT_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0];
/// One plugin call, in seconds: from a few microseconds (a compiled Rust plugin) up to the
/// wall-clock backstop (`[plugins.sandbox] call_timeout_ms`, 1 s by default).
const PLUGIN_CALL_BUCKETS: [f64; 16] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.5, 1.0,
];
/// A ledger batch or a payment's wait for one, in seconds.
const LEDGER_BUCKETS: [f64; 15] =
    [0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];
/// Transfers per ledger batch.
const BATCH_SIZE_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// An HTTP request, in seconds (a plugin upload compiles a component: seconds).
const HTTP_BUCKETS: [f64; 12] = [0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];

/// What a message asked, as the payment metrics label it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    /// `pay`, `refund`, `settle`, `hold` (a capture or a void), `expire`, `unreadable` (a
    /// message that is not one), or `unread` (refused before a partition worker took it: a
    /// saturated partition, a node shutting down, a submit subject naming no account).
    operation: &'static str,
    /// A payment's method, if the plugins served it when it arrived; empty otherwise.
    method: Option<Arc<str>>,
}

impl Operation {
    /// A payment by `method`, which the plugins serve.
    pub fn pay(method: Arc<str>) -> Operation {
        Operation { operation: "pay", method: Some(method) }
    }

    /// Any other operation, or a payment by a method nobody serves (`pay`).
    pub fn named(operation: &'static str) -> Operation {
        Operation { operation, method: None }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    #[prometheus(flatten)]
    operation: Operation,
    status: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answered {
    #[prometheus(flatten)]
    operation: Operation,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: Arc<str>,
    version: Arc<str>,
}

impl From<&PluginId> for PluginLabels {
    fn from(id: &PluginId) -> Self {
        PluginLabels { plugin: id.name.clone(), version: id.version.clone() }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginFailureLabels {
    plugin: Arc<str>,
    version: Arc<str>,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn histograms<L: Clone + std::hash::Hash + Eq>(buckets: fn() -> Histogram) -> HistogramFamily<L> {
    Family::new_with_constructor(buckets)
}

/// Every metric of a node, and the registry that writes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    payments: Family<Outcome, Counter>,
    payment_seconds: HistogramFamily<Answered>,
    plugin_calls: HistogramFamily<PluginLabels>,
    plugin_failures: Family<PluginFailureLabels, Counter>,
    plugin_quarantines: Family<PluginLabels, Counter>,
    /// Plugin versions switched to (activations, rollbacks, removals) on this node.
    pub plugin_switches: Counter,
    /// Plugin versions refused by their checks on this node.
    pub plugin_refusals: Counter,
    /// Live plugin versions and instances, once the plugins are loaded.
    pub plugin_census: Arc<OnceLock<Census>>,
    /// How long a payment waits for the ledger: its batch's queue, write and commit.
    ledger_wait: Histogram,
    ledger_batch_size: Histogram,
    ledger_batch: Histogram,
    partitions_owned: Gauge,
    handoffs: Counter,
    lease_renewal_failures: Counter,
    leases_lost: Counter,
    fenced_batches: Counter,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: HistogramFamily<RouteLabel>,
}

impl Metrics {
    /// The metrics of node `node_id`, registered once: the registry is never changed after.
    pub fn new(node_id: &str) -> Metrics {
        let mut root = Registry::default();
        // The process's metrics under the names every client library gives them.
        root.register_collector(Box::new(process::Process));
        let registry = root.sub_registry_with_prefix("wasmpay");
        let build = Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("contract", wasmpay_plugin_host::CONTRACT_VERSION.to_owned()),
            ("node", node_id.to_owned()),
        ]);
        registry.register("build", "This build's version, its plugin contract (WIT) and the node's id", build);

        let payments = Family::<Outcome, Counter>::default();
        registry.register(
            "payments",
            "Answers to payment messages by operation, method, status and code",
            payments.clone(),
        );
        let payment_seconds = histograms(|| Histogram::new(PAYMENT_BUCKETS));
        registry.register_with_unit(
            "payment",
            "A message's time in the node, from being taken off NATS to its answer (its ledger commit included)",
            Unit::Seconds,
            payment_seconds.clone(),
        );

        let plugin_calls = histograms(|| Histogram::new(PLUGIN_CALL_BUCKETS));
        registry.register_with_unit(
            "plugin_call",
            "One plugin export call, by plugin and version",
            Unit::Seconds,
            plugin_calls.clone(),
        );
        let plugin_failures = Family::<PluginFailureLabels, Counter>::default();
        registry.register(
            "plugin_failures",
            "Plugin calls that failed, by kind (fuel, timeout, denied, memory, trap, contract; instantiation, quarantined: not called)",
            plugin_failures.clone(),
        );
        let plugin_quarantines = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_quarantines",
            "Plugin versions quarantined on this node for failing",
            plugin_quarantines.clone(),
        );
        let plugin_switches = Counter::default();
        registry.register(
            "plugin_switches",
            "Plugin version switches (activate, rollback, remove)",
            plugin_switches.clone(),
        );
        let plugin_refusals = Counter::default();
        registry.register("plugin_refusals", "Plugin versions refused by their checks", plugin_refusals.clone());
        let plugin_census = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(process::PluginCensus(plugin_census.clone())));

        let ledger_wait = Histogram::new(LEDGER_BUCKETS);
        registry.register_with_unit(
            "ledger_commit",
            "Time a payment waits for the ledger, its batch's commit included",
            Unit::Seconds,
            ledger_wait.clone(),
        );
        let ledger_batch_size = Histogram::new(BATCH_SIZE_BUCKETS);
        registry.register("ledger_batch_size", "Transfers per committed ledger batch", ledger_batch_size.clone());
        let ledger_batch = Histogram::new(LEDGER_BUCKETS);
        registry.register_with_unit(
            "ledger_batch",
            "Write and commit of one ledger batch",
            Unit::Seconds,
            ledger_batch.clone(),
        );

        let partitions_owned = Gauge::default();
        registry.register("partitions_owned", "Partitions this node holds the lease of", partitions_owned.clone());
        let handoffs = Counter::default();
        registry.register("handoffs", "Partitions handed over to another node", handoffs.clone());
        let lease_renewal_failures = Counter::default();
        registry.register(
            "lease_renewal_failures",
            "Lease renewals that failed (lost or unanswered)",
            lease_renewal_failures.clone(),
        );
        let leases_lost = Counter::default();
        registry.register(
            "leases_lost",
            "Leases dropped because NATS said another node holds them or they expired",
            leases_lost.clone(),
        );
        let fenced_batches = Counter::default();
        registry.register(
            "fenced_batches",
            "Ledger batches that refused payments under an older lease token",
            fenced_batches.clone(),
        );

        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP API requests by route template, method and status",
            http_requests.clone(),
        );
        let http_seconds = histograms(|| Histogram::new(HTTP_BUCKETS));
        registry.register_with_unit(
            "http_request",
            "HTTP API requests by route template, read to answer",
            Unit::Seconds,
            http_seconds.clone(),
        );

        Metrics {
            registry: root,
            payments,
            payment_seconds,
            plugin_calls,
            plugin_failures,
            plugin_quarantines,
            plugin_switches,
            plugin_refusals,
            plugin_census,
            ledger_wait,
            ledger_batch_size,
            ledger_batch,
            partitions_owned,
            handoffs,
            lease_renewal_failures,
            leases_lost,
            fenced_batches,
            http_requests,
            http_seconds,
        }
    }

    /// Counts one answer to a message, and how long the node took to give it (`None` for a
    /// message refused before a worker took it: it never waited for anything).
    pub fn answered(&self, operation: &Operation, status: Status, code: Code, took: Option<Duration>) {
        let outcome = Outcome { operation: operation.clone(), status: status.as_str(), code: code.as_str() };
        self.payments.get_or_create(&outcome).inc();
        if let Some(took) = took {
            let answered = Answered { operation: outcome.operation, status: outcome.status };
            self.payment_seconds.get_or_create(&answered).observe(took.as_secs_f64());
        }
    }

    /// A payment's wait for its ledger batch.
    pub fn ledger_waited(&self, waited: Duration) {
        self.ledger_wait.observe(waited.as_secs_f64());
    }

    /// One HTTP request, by its route's template (`/v1/accounts/{id}`) and HTTP method.
    pub fn http_answered(&self, route: &'static str, method: &hyper::Method, status: u16, took: Duration) {
        let method = match *method {
            hyper::Method::GET => "GET",
            hyper::Method::POST => "POST",
            hyper::Method::PUT => "PUT",
            hyper::Method::DELETE => "DELETE",
            hyper::Method::HEAD => "HEAD",
            _ => "other",
        };
        self.http_requests.get_or_create(&HttpLabels { route, method, status }).inc();
        self.http_seconds.get_or_create(&RouteLabel { route }).observe(took.as_secs_f64());
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail; an encoder error would be a bug in a label.
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%error, "metrics could not be written");
        }
        out
    }
}

impl CommitObserver for Metrics {
    fn batch_committed(&self, size: usize, elapsed: Duration) {
        self.ledger_batch_size.observe(f64::from(u32::try_from(size).unwrap_or(u32::MAX)));
        self.ledger_batch.observe(elapsed.as_secs_f64());
    }

    fn batch_fenced(&self, _partitions: &[u32]) {
        self.fenced_batches.inc();
    }
}

impl ClusterObserver for Metrics {
    fn handed_over(&self, count: u64) {
        self.handoffs.inc_by(count);
    }

    fn partitions_owned(&self, count: u64) {
        self.partitions_owned.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    fn renewal_failed(&self) {
        self.lease_renewal_failures.inc();
    }

    fn leases_lost(&self, count: u64) {
        self.leases_lost.inc_by(count);
    }
}

impl CallObserver for Metrics {
    fn plugin_called(&self, plugin: &PluginId, elapsed: Duration, failure: Option<&FailureKind>) {
        let labels = PluginLabels::from(plugin);
        self.plugin_calls.get_or_create(&labels).observe(elapsed.as_secs_f64());
        if let Some(failure) = failure {
            let labels = PluginFailureLabels { plugin: labels.plugin, version: labels.version, kind: failure.label() };
            self.plugin_failures.get_or_create(&labels).inc();
        }
    }

    fn plugin_not_called(&self, plugin: &PluginId, failure: &FailureKind) {
        let labels =
            PluginFailureLabels { plugin: plugin.name.clone(), version: plugin.version.clone(), kind: failure.label() };
        self.plugin_failures.get_or_create(&labels).inc();
    }

    fn plugin_quarantined(&self, plugin: &PluginId) {
        self.plugin_quarantines.get_or_create(&PluginLabels::from(plugin)).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(name: &str, version: &str) -> PluginId {
        PluginId { name: Arc::from(name), version: Arc::from(version) }
    }

    #[test]
    fn labels_each_series_and_keeps_buckets_cumulative() {
        let metrics = Metrics::new("node-a");
        let card = Operation::pay(Arc::from("card"));
        metrics.answered(&card, Status::Approved, Code::Ok, Some(Duration::from_micros(700)));
        metrics.answered(&card, Status::Approved, Code::Ok, Some(Duration::from_millis(40)));
        metrics.answered(&Operation::named("pay"), Status::Rejected, Code::UnknownMethod, Some(Duration::ZERO));
        metrics.answered(&Operation::named("unread"), Status::Rejected, Code::Unavailable, None);
        metrics.plugin_called(&plugin("card", "2.0.0"), Duration::from_micros(20), None);
        let fuel = FailureKind::OutOfFuel(10);
        metrics.plugin_called(&plugin("card", "2.0.0"), Duration::from_millis(3), Some(&fuel));
        metrics.plugin_quarantined(&plugin("card", "2.0.0"));
        metrics.batch_committed(3, Duration::from_micros(400));
        metrics.http_answered("/v1/accounts/{id}", &hyper::Method::GET, 200, Duration::from_millis(2));
        let text = metrics.render();
        for expected in [
            "wasmpay_build_info{version=\"0.1.0\",contract=\"0.1.2\",node=\"node-a\"} 1",
            "wasmpay_payments_total{operation=\"pay\",method=\"card\",status=\"approved\",code=\"ok\"} 2",
            "wasmpay_payments_total{operation=\"pay\",method=\"\",status=\"rejected\",code=\"unknown_method\"} 1",
            "wasmpay_payments_total{operation=\"unread\",method=\"\",status=\"rejected\",code=\"unavailable\"} 1",
            "wasmpay_payment_seconds_bucket{le=\"0.001\",operation=\"pay\",method=\"card\",status=\"approved\"} 1",
            "wasmpay_payment_seconds_bucket{le=\"0.05\",operation=\"pay\",method=\"card\",status=\"approved\"} 2",
            "wasmpay_payment_seconds_bucket{le=\"30.0\",operation=\"pay\",method=\"card\",status=\"approved\"} 2",
            "wasmpay_payment_seconds_count{operation=\"pay\",method=\"card\",status=\"approved\"} 2",
            "wasmpay_plugin_call_seconds_bucket{le=\"0.000025\",plugin=\"card\",version=\"2.0.0\"} 1",
            "wasmpay_plugin_call_seconds_count{plugin=\"card\",version=\"2.0.0\"} 2",
            "wasmpay_plugin_failures_total{plugin=\"card\",version=\"2.0.0\",kind=\"fuel\"} 1",
            "wasmpay_plugin_quarantines_total{plugin=\"card\",version=\"2.0.0\"} 1",
            "wasmpay_ledger_batch_size_bucket{le=\"2.0\"} 0",
            "wasmpay_ledger_batch_size_bucket{le=\"4.0\"} 1",
            "wasmpay_http_requests_total{route=\"/v1/accounts/{id}\",method=\"GET\",status=\"200\"} 1",
            "wasmpay_fenced_batches_total 0",
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "# EOF",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
        assert!(text.contains("wasmpay_http_request_seconds_count{route=\"/v1/accounts/{id}\"} 1"), "{text}");
        // A message refused before a worker took it waited for nothing: no latency series.
        assert!(!text.contains("wasmpay_payment_seconds_count{operation=\"unread\""), "{text}");
        metrics.batch_fenced(&[3]);
        assert!(metrics.render().contains("wasmpay_fenced_batches_total 1\n"));
    }

    /// The Grafana dashboard in `examples/` asks only for metrics a node exports: each name in
    /// its queries (less a histogram's or counter's suffix) is described once every metric has
    /// a series.
    #[test]
    fn the_grafana_dashboard_queries_only_metrics_a_node_exports() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/grafana/wasmpay.json");
        let text = std::fs::read_to_string(path).expect("examples/grafana/wasmpay.json");
        let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
        let mut queries = vec![dashboard["templating"]["list"][0]["definition"].as_str().unwrap_or_default()];
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                queries.push(target["expr"].as_str().unwrap_or_default());
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for query in queries {
            for prefix in ["wasmpay_", "process_"] {
                for (start, _) in query.match_indices(prefix) {
                    let name: String =
                        query[start..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                    names.insert(name);
                }
            }
        }
        assert!(names.len() > 20, "{names:?}");

        let metrics = Metrics::new("node-a");
        let _ = metrics.plugin_census.set(Census::default());
        metrics.answered(&Operation::pay(Arc::from("card")), Status::Approved, Code::Ok, Some(Duration::ZERO));
        metrics.plugin_called(&plugin("card", "1.0.0"), Duration::ZERO, Some(&FailureKind::MemoryLimit));
        metrics.plugin_quarantined(&plugin("card", "1.0.0"));
        metrics.http_answered("/metrics", &hyper::Method::GET, 200, Duration::ZERO);
        let exported = metrics.render();
        for name in &names {
            let family = ["_bucket", "_sum", "_count", "_total", "_info"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            assert!(
                exported.contains(&format!("# TYPE {family} ")),
                "the dashboard queries `{name}`, which no node exports"
            );
        }
    }
}
