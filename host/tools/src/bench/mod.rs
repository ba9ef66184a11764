//! `wasmpay bench`: measures the product beside its baselines, in one run, so each ratio
//! means something on a shared, noisy machine. It starts what it needs (a private NATS
//! server, a node per ledger backend on embedded defaults and the built-in plugins, a fresh
//! PostgreSQL schema), opens and funds the accounts, then measures:
//!
//! 1. the bus limit: a no-op responder on the same NATS server, same load generator, at each
//!    in-flight level (measured again beside each backend's rows, as the machine drifts);
//! 2. end to end: card payments from payers spread over every partition to ten merchants,
//!    against the bus limit at the same level;
//! 3. hot payee: the same with every payment to one merchant, against 2;
//! 4. the ledger alone: [`Ledger::record`](wasmpay_ledger::Ledger::record) called directly
//!    (group commit, no NATS, no plugins), against `pgbench` TPC-B-like on the same server;
//! 5. the plugins: one card payment's validate + quote-fee on the node's isolation model;
//! 6. the payment lifecycle at the highest in-flight level: authorize + capture and pay + refund
//!    pairs, and two-leg settlements, each against 2 at the same level;
//! 7. latency under load: open-loop arrivals at half the best end-to-end rate, timed from each
//!    payment's scheduled send, so queueing in the load generator counts too.
//!
//! Layout: `load` generates load and times it (closed and open loop); `setup` opens and
//! funds accounts; `end_to_end` runs a node through 1-3, 6 and 7; `ledger` is 4; `plugins` is 5;
//! `postgres` holds the scratch schema and the server facts; `pgbench` runs the baseline;
//! `report` prints the table or JSON.
//!
//! Load is bounded in count (`--payments` per row) and time (`--seconds-max` per row, and
//! every request times out), and goes to 127.0.0.1 only.

mod end_to_end;
mod floors;
mod ledger;
mod load;
mod node;
mod pgbench;
mod plugins;
mod report;
mod setup;

use std::time::Duration;

use anyhow::{Context, anyhow};
use serde::Serialize;

use crate::nats::PrivateNats;
use crate::postgres::PgServer;
use load::Limits;
use report::{Report, Row, Scenario};

/// Options of `wasmpay bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Requests per measurement (a row stops earlier at --seconds-max).
    #[arg(long, default_value_t = 20_000)]
    payments: u32,
    /// Time limit of one measurement in seconds: it stops sending then and waits for the
    /// requests in flight.
    #[arg(long, default_value_t = 15)]
    seconds_max: u64,
    /// In-flight levels to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1_usize, 64, 512])]
    in_flight: Vec<usize>,
    /// Paying accounts, spread over the partitions.
    #[arg(long, default_value_t = 10_000)]
    payers: u32,
    /// Ledger backends to measure, comma separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Backend::Sqlite, Backend::Postgres])]
    backends: Vec<Backend>,
    /// PostgreSQL server, on 127.0.0.1; the bench uses a fresh schema on it and drops it after.
    #[arg(long, env = "WASMPAY_POSTGRES", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
    /// Transfers of the ledger-alone measurement (also bounded by --seconds-max).
    #[arg(long, default_value_t = 100_000)]
    ledger_transfers: u32,
    /// Seconds of the pgbench baseline (`pgbench -c 8 -j 2 -T <seconds>`); 0 skips it.
    #[arg(long, default_value_t = 20)]
    pgbench_seconds: u32,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Fail if an end-to-end row's rate, as a share of the bus limit beside it, falls below
    /// half of what this file records for its backend and in-flight level, in lines
    /// `bench-floor: <backend> <in flight> <share>` (docs/performance.md holds CI's).
    #[arg(long, value_name = "FILE")]
    floors: Option<std::path::PathBuf>,
}

impl BenchArgs {
    /// How far one measurement may go.
    fn limits(&self) -> Limits {
        Limits { count: self.payments, time: Duration::from_secs(self.seconds_max) }
    }
}

/// A ledger backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Backend {
    /// An SQLite file in a temporary directory.
    Sqlite,
    /// A fresh schema on the `--postgres` server.
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Runs the bench. The PostgreSQL schema is dropped whatever happens to the measurements,
/// ctrl-c included.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let server = if args.backends.contains(&Backend::Postgres) {
        Some(PgServer::connect(&args.postgres, "wasmpay_bench").await?)
    } else {
        None
    };
    let measured = tokio::select! {
        measured = measure_all(&args, server.as_ref()) => measured,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    eprintln!();
    if let Some(server) = &server
        && let Err(error) = server.drop_scratch().await
    {
        eprintln!("warning: could not drop the PostgreSQL schema {}: {error:#}", server.schema());
    }
    let report = measured?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report.print_table();
    }
    match &args.floors {
        Some(path) => {
            let recorded = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            floors::check(&floors::parse(&recorded)?, report.rows())
        }
        None => Ok(()),
    }
}

/// Every measurement, in order: plugins first on a quiet machine, then each backend (its
/// node, then its ledger alone), then pgbench right after the PostgreSQL ledger it is the
/// baseline of.
async fn measure_all(args: &BenchArgs, server: Option<&PgServer>) -> anyhow::Result<Report> {
    let mut rows = plugins::measure().await?;
    let workdir = tempfile::tempdir().context("creating a temporary directory")?;
    let nats = PrivateNats::start(workdir.path()).context("starting a private nats-server")?;
    let client = async_nats::connect(&nats.url).await.context("connecting to the private nats-server")?;
    let nats_version = client.server_info().version;
    for (index, &backend) in args.backends.iter().enumerate() {
        if args.backends[..index].contains(&backend) {
            continue; // Named twice: its ledger already holds this run's payment ids.
        }
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}", workdir.path().join("bench.db").display()),
            Backend::Postgres => server.context("PostgreSQL is not connected")?.ledger_url(),
        };
        let plain = end_to_end::measure(args, backend, (&url, workdir.path()), &nats, &client).await?;
        let level = args.in_flight.iter().max();
        let uniform = plain.iter().find(|row| row.scenario == Scenario::Uniform && row.in_flight.as_ref() == level);
        let uniform = uniform.map_or(0, |row| row.per_second);
        rows.extend(plain);
        rows.push(ledger::measure(args, backend, &url).await?);
        // The NATS server stays bound to this ledger, so the lifecycle's node serves at once.
        let lifecycle = end_to_end::measure_lifecycle(args, backend, (&url, workdir.path()), &nats, &client, uniform);
        rows.extend(lifecycle.await?);
        // The next backend's node binds it to its own ledger.
        wasmpay_node::cluster::unbind(client.clone(), None).await.context("unbinding the private nats-server")?;
    }
    if let Some(server) = server
        && args.pgbench_seconds > 0
    {
        let baseline = pgbench::run(server, args.pgbench_seconds).await?;
        compare_to_pgbench(&mut rows, baseline.per_second);
        rows.push(baseline);
    }
    Ok(Report::new(args, rows, nats_version, server))
}

/// The ledger alone against pgbench's transactions per second.
fn compare_to_pgbench(rows: &mut [Row], tps: u64) {
    for row in rows.iter_mut().filter(|row| row.scenario == Scenario::LedgerAlone) {
        row.add_ratio("pgbench", tps);
    }
}
