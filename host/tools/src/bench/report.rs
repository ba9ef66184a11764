//! What a run found: its rows, and the facts a reader needs to compare them with another run
//! (the command, the version, the cores, the durability of each backend), as a table or JSON.

use serde::Serialize;
use wasmpay_ledger::Durability;
use wasmpay_node::config::Config;

use super::load::{Latency, Measured};
use super::{Backend, BenchArgs};
use crate::postgres::PgServer;

/// What a row measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    BusLimit,
    Uniform,
    HotPayee,
    OpenLoop,
    LedgerAlone,
    Pgbench,
    PluginsOnPath,
    PluginsInAll,
    PluginLoadCompiled,
    PluginLoadCached,
    PluginsBesideSlow,
    AuthorizeCapture,
    PayRefund,
    Settlement,
}

impl Scenario {
    /// Its name in the table and on the progress bar.
    pub fn label(self) -> &'static str {
        match self {
            Scenario::BusLimit => "bus limit (no-op responder)",
            Scenario::Uniform => "end to end, ten merchants",
            Scenario::HotPayee => "end to end, hot payee",
            Scenario::OpenLoop => "latency under load (open loop)",
            Scenario::LedgerAlone => "ledger alone (record, no NATS)",
            Scenario::Pgbench => "pgbench TPC-B-like",
            Scenario::PluginsOnPath => "plugins on the payment's path",
            Scenario::PluginsInAll => "plugins: card, + drop and next spares",
            Scenario::PluginLoadCompiled => "plugin load: card, compiled (cold)",
            Scenario::PluginLoadCached => "plugin load: card, from the disk cache",
            Scenario::PluginsBesideSlow => "plugins: card, beside a slow method",
            Scenario::AuthorizeCapture => "authorize + capture (pairs), ten merchants",
            Scenario::PayRefund => "pay + refund (pairs), ten merchants",
            Scenario::Settlement => "two-leg settlement, ten merchants",
        }
    }
}

/// A row's rate over a baseline's.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Ratio {
    /// The baseline: `bus`, `uniform`, `pgbench` or `offered`.
    pub to: &'static str,
    pub value: f64,
}

/// One measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub scenario: Scenario,
    /// The backend of the node or ledger measured; for the bus limit, the one whose rows it
    /// was measured beside.
    pub backend: Option<Backend>,
    /// How it was loaded, for people.
    pub load: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offered_per_second: Option<u64>,
    pub requests: u64,
    pub failed: u64,
    pub per_second: u64,
    #[serde(flatten)]
    pub latency: Option<Latency>,
    /// CPU time (user + system) the node's process spent over the row, per request served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_cpu_ns_per_request: Option<u64>,
    /// The same for the NATS server's process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_cpu_ns_per_request: Option<u64>,
    pub ratios: Vec<Ratio>,
}

impl Row {
    pub fn measured(scenario: Scenario, backend: Option<Backend>, load: String, measured: &Measured) -> Row {
        Row {
            scenario,
            backend,
            load,
            in_flight: None,
            offered_per_second: None,
            requests: measured.requests,
            failed: measured.failed,
            per_second: measured.per_second,
            latency: measured.latency,
            node_cpu_ns_per_request: None,
            nats_cpu_ns_per_request: None,
            ratios: Vec::new(),
        }
    }

    /// With the CPU the node and the NATS server spent per request served, if known.
    pub fn cpu(mut self, per_request: Option<(u64, u64)>) -> Row {
        (self.node_cpu_ns_per_request, self.nats_cpu_ns_per_request) = per_request.unzip();
        self
    }

    pub fn in_flight(mut self, level: usize) -> Row {
        self.in_flight = Some(level);
        self
    }

    pub fn offered(mut self, rate: u64) -> Row {
        self.offered_per_second = Some(rate);
        self
    }

    /// With its rate over `baseline`'s, `per_second`.
    pub fn compare(mut self, to: &'static str, per_second: u64) -> Row {
        self.add_ratio(to, per_second);
        self
    }

    pub fn add_ratio(&mut self, to: &'static str, per_second: u64) {
        self.ratios.push(Ratio { to, value: ratio(self.per_second, per_second) });
    }
}

#[allow(clippy::cast_precision_loss, clippy::float_arithmetic)]
fn ratio(numerator: u64, denominator: u64) -> f64 {
    numerator as f64 / denominator.max(1) as f64
}

/// The facts of the PostgreSQL server.
#[derive(Debug, Serialize)]
struct PostgresFacts {
    version: String,
    /// How the ledger commits.
    ledger_durability: &'static str,
    /// The server's default, which pgbench runs with.
    server_synchronous_commit: String,
    /// This run's schema, dropped at the end.
    schema: String,
}

/// A run's results.
#[derive(Debug, Serialize)]
pub struct Report {
    wasmpay_version: &'static str,
    command: String,
    cores: usize,
    nats_server: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sqlite_durability: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    postgres: Option<PostgresFacts>,
    ledger_batch_size_max: usize,
    payers: u32,
    requests_per_row_max: u32,
    seconds_per_row_max: u64,
    rows: Vec<Row>,
}

impl Report {
    pub fn new(args: &BenchArgs, rows: Vec<Row>, nats_version: String, server: Option<&PgServer>) -> Report {
        let ledger = Config::default().ledger;
        let (sqlite, postgres) = match ledger.synchronous {
            Durability::Full => ("WAL, synchronous=FULL", "synchronous_commit=on"),
            Durability::Normal => ("WAL, synchronous=NORMAL", "synchronous_commit=off"),
        };
        Report {
            wasmpay_version: env!("CARGO_PKG_VERSION"),
            command: command_line(),
            cores: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            nats_server: nats_version,
            sqlite_durability: args.backends.contains(&Backend::Sqlite).then_some(sqlite),
            postgres: server.map(|server| PostgresFacts {
                version: server.version.clone(),
                ledger_durability: postgres,
                server_synchronous_commit: server.synchronous_commit.clone(),
                schema: server.schema().to_owned(),
            }),
            ledger_batch_size_max: ledger.batch_size_max,
            payers: args.payers,
            requests_per_row_max: args.payments,
            seconds_per_row_max: args.seconds_max,
            rows,
        }
    }

    /// Its rows, in the order they were measured.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The facts, then one line per row.
    pub fn print_table(&self) {
        self.print_facts();
        println!(
            "{:<8} {:<38} {:<22} {:>9} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  vs",
            "backend", "scenario", "load", "requests", "failed", "per s", "p50", "p99", "p999", "node CPU", "NATS CPU"
        );
        for row in &self.rows {
            let latency =
                |pick: fn(&Latency) -> u64| row.latency.as_ref().map_or_else(|| "-".to_owned(), |l| duration(pick(l)));
            let cpu = |ns: Option<u64>| ns.map_or_else(|| "-".to_owned(), cpu_per_request);
            let ratios: Vec<String> = row.ratios.iter().map(|r| format!("{:.3} of {}", r.value, r.to)).collect();
            println!(
                "{:<8} {:<38} {:<22} {:>9} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {}",
                row.backend.map_or("-", Backend::name),
                row.scenario.label(),
                row.load,
                thousands(row.requests),
                thousands(row.failed),
                thousands(row.per_second),
                latency(|l| l.p50_us),
                latency(|l| l.p99_us),
                latency(|l| l.p999_us),
                cpu(row.node_cpu_ns_per_request),
                cpu(row.nats_cpu_ns_per_request),
                ratios.join(", ")
            );
        }
    }

    fn print_facts(&self) {
        println!("wasmpay bench, wasmpay {}: `{}`", self.wasmpay_version, self.command);
        let postgres_version = self.postgres.as_ref().map(|pg| format!(" and PostgreSQL {}", pg.version));
        println!(
            "machine: {} cores (available_parallelism), shared by the load generator, nats-server {} (private), \
             the node (a `wasmpay serve` process){}; everything on 127.0.0.1; CPU columns: user + system time of \
             the node's and of nats-server's process over the row, per request served (a pair, in the pair rows)",
            self.cores,
            self.nats_server,
            postgres_version.unwrap_or_default()
        );
        let mut ledgers = Vec::new();
        if let Some(sqlite) = self.sqlite_durability {
            ledgers.push(format!("SQLite {sqlite} (temporary file)"));
        }
        if let Some(pg) = &self.postgres {
            ledgers.push(format!(
                "PostgreSQL {} {} (fresh schema {}, dropped after)",
                pg.version, pg.ledger_durability, pg.schema
            ));
        }
        println!("ledgers: {}; group commit, batches of up to {}", ledgers.join("; "), self.ledger_batch_size_max);
        println!(
            "load: card payments from {} payers; each row at most {} requests and {} s; bus limit: 200-byte no-op \
             request-reply{}",
            thousands(u64::from(self.payers)),
            thousands(u64::from(self.requests_per_row_max)),
            self.seconds_per_row_max,
            self.postgres
                .as_ref()
                .map(|pg| format!(
                    "; pgbench: scale 10, server default synchronous_commit={}",
                    pg.server_synchronous_commit
                ))
                .unwrap_or_default()
        );
        println!(
            "open loop: sent on schedule at half the backend's best end-to-end rate, latency from each scheduled send"
        );
    }
}

/// The command line as typed (quoted where a shell would need it).
fn command_line() -> String {
    let quote = |argument: String| {
        let plain = argument.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
        if plain && !argument.is_empty() { argument } else { format!("'{}'", argument.replace('\'', r"'\''")) }
    };
    std::env::args().map(quote).collect::<Vec<_>>().join(" ")
}

/// `1234567` as `1,234,567`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// CPU time per request, from nanoseconds: `4.2 µs`, `16.5 µs`, `144 µs`.
fn cpu_per_request(nanos: u64) -> String {
    match nanos {
        0..100_000 => format!("{}.{} µs", nanos / 1_000, nanos % 1_000 / 100),
        _ => format!("{} µs", thousands(nanos / 1_000)),
    }
}

/// Microseconds for people: `48 µs`, `2.41 ms`, `31.6 ms`, `290 ms`, `1,400 ms`.
fn duration(micros: u64) -> String {
    match micros {
        0..1_000 => format!("{micros} µs"),
        1_000..10_000 => format!("{}.{:02} ms", micros / 1_000, micros % 1_000 / 10),
        10_000..100_000 => format!("{}.{} ms", micros / 1_000, micros % 1_000 / 100),
        _ => format!("{} ms", thousands(micros / 1_000)),
    }
}

#[cfg(test)]
mod tests {
    use super::{cpu_per_request, duration, thousands};

    #[test]
    fn formats_numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(duration(48), "48 µs");
        assert_eq!(duration(2_414), "2.41 ms");
        assert_eq!(duration(31_650), "31.6 ms");
        assert_eq!(duration(1_400_000), "1,400 ms");
        assert_eq!(cpu_per_request(4_250), "4.2 µs");
        assert_eq!(cpu_per_request(16_549), "16.5 µs");
        assert_eq!(cpu_per_request(144_900), "144 µs");
    }
}
