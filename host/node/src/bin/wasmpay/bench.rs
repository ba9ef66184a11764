//! `wasmpay bench`: measures a node on embedded defaults beside the limit of the bus it runs
//! on, in one run, so the ratio means something on a shared, noisy machine. It starts what it
//! needs (a private NATS server, a node with a SQLite ledger in a temporary directory, the
//! built-in plugins), opens and funds the accounts, then for each in-flight level measures:
//!
//! 1. the bus limit: a no-op responder on the same NATS server, same load generator;
//! 2. end to end: card payments from payers spread over every partition to ten merchants;
//! 3. hot payee: the same, every payment to one merchant.
//!
//! Load is bounded in count (`--payments` per measurement) and time (every request times out),
//! and goes to 127.0.0.1 only.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use wasmpay::client::request;
use wasmpay::clock;
use wasmpay::node::{Node, NodeSettings};
use wasmpay_ledger::NewAccount;
use wasmpay_protocol::money::{Currency, MinorUnits};
use wasmpay_protocol::routing::{AccountId, Partitioner, subjects};

use crate::nats::PrivateNats;

/// Options of `wasmpay bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Requests per measurement.
    #[arg(long, default_value_t = 20_000)]
    payments: u32,
    /// In-flight levels to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [64_usize, 512])]
    in_flight: Vec<usize>,
    /// Paying accounts, spread over the partitions.
    #[arg(long, default_value_t = 1_000)]
    payers: u32,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Merchants the uniform scenario pays.
const MERCHANTS: u32 = 10;
/// Subject prefix of the no-op responder.
const NOOP_SUBJECT: &str = "bench.noop";

/// One measurement.
#[derive(Debug, Serialize)]
struct Measurement {
    scenario: &'static str,
    in_flight: usize,
    requests: u32,
    failed: u32,
    per_second: u64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    /// Throughput over the bus limit at the same in-flight level.
    ratio_to_bus: f64,
}

/// Runs the bench.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let workdir = tempfile::tempdir().context("creating a temporary directory")?;
    let nats = PrivateNats::start(workdir.path()).context("starting a private nats-server")?;
    let settings = NodeSettings {
        nats_url: nats.url.clone(),
        database_url: format!("sqlite://{}", workdir.path().join("bench.db").display()),
        http_address: SocketAddr::from(([127, 0, 0, 1], 0)),
        node_id: "bench".into(),
        ..NodeSettings::new()
    };
    let partitioner = Partitioner::new(settings.partitions)?;
    let node = Node::start(settings).await.context("starting the node")?;
    fund(&node, &args).await?;
    let client = async_nats::connect(&nats.url).await?;
    let responder = noop_responder(client.clone()).await?;

    let mut results = Vec::new();
    for &level in &args.in_flight {
        let bus = measure(&client, "bus limit (no-op responder)", level, args.payments, None, |index| {
            (format!("{NOOP_SUBJECT}.{}", index % 64), Bytes::from_static(&[b'x'; 200]))
        })
        .await;
        let bus_rate = bus.per_second;
        results.push(bus);
        for (scenario, hot) in [("end to end, ten merchants", false), ("end to end, hot payee", true)] {
            let payment = |index: u32| payment(partitioner, &args, level, hot, index);
            results.push(measure(&client, scenario, level, args.payments, Some(bus_rate), payment).await);
        }
    }
    responder.abort();
    node.shutdown().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print_table(&results, &args);
    }
    Ok(())
}

/// Opens the merchants and payers and funds every payer for all of its payments.
async fn fund(node: &Node, args: &BenchArgs) -> anyhow::Result<()> {
    let ledger = node.ledger();
    let euro: Currency = "EUR".parse()?;
    let now = clock::ledger_ms();
    for merchant in (0..MERCHANTS).map(merchant).chain(["hot".to_owned()]) {
        let new = NewAccount { id: AccountId::new(merchant)?, currency: euro, floor: MinorUnits::ZERO };
        ledger.open_account(&new, now).await?;
    }
    let mut accounts = Vec::new();
    for index in 0..args.payers {
        let new = NewAccount { id: AccountId::new(payer(index))?, currency: euro, floor: MinorUnits::ZERO };
        accounts.push(ledger.open_account(&new, now).await?);
        progress("opening payers", index + 1, args.payers);
    }
    let deposits = accounts.iter().map(|account| async move {
        ledger.deposit(&format!("fund-{}", account.id), account, MinorUnits(1 << 40), now).await
    });
    for deposited in futures::future::join_all(deposits).await {
        deposited?;
    }
    eprintln!();
    Ok(())
}

fn payer(index: u32) -> String {
    format!("payer-{index:05}")
}

fn merchant(index: u32) -> String {
    format!("shop-{index}")
}

/// The subject and body of payment `index` of a measurement.
fn payment(partitioner: Partitioner, args: &BenchArgs, level: usize, hot: bool, index: u32) -> (String, Bytes) {
    let payer_index = index % args.payers.max(1);
    let payer = payer(payer_index);
    let payee = if hot { "hot".to_owned() } else { merchant(index % MERCHANTS) };
    let subject = match AccountId::new(payer.clone()) {
        Ok(id) => subjects::pay(partitioner.partition_of(&id), &payer),
        Err(_) => unreachable!("bench payer ids are valid"),
    };
    let body = json!({"version": 1, "id": format!("bench-{level}-{hot}-{index}"), "payer": payer, "payee": payee,
                      "amount": 100, "currency": "EUR", "method": "card",
                      "details": {"pan": "4242424242424242", "expiry": "12/30"}});
    (subject, Bytes::from(body.to_string()))
}

/// A responder that answers every request on `bench.noop.*` with a fixed body: what the bus
/// alone can carry with this load generator.
async fn noop_responder(client: async_nats::Client) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut requests = client.subscribe(format!("{NOOP_SUBJECT}.*")).await?;
    client.flush().await?;
    let reply = Bytes::from(vec![b'y'; 200]);
    Ok(tokio::spawn(async move {
        while let Some(message) = requests.next().await {
            if let Some(subject) = message.reply {
                let _ = client.publish(subject, reply.clone()).await;
            }
        }
    }))
}

/// Sends `total` requests made by `make`, `in_flight` at a time, and measures them.
async fn measure(
    client: &async_nats::Client,
    scenario: &'static str,
    in_flight: usize,
    total: u32,
    bus_rate: Option<u64>,
    make: impl Fn(u32) -> (String, Bytes),
) -> Measurement {
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(usize::try_from(total).unwrap_or_default());
    let mut failed = 0_u32;
    let mut answers = futures::stream::iter(0..total)
        .map(|index| {
            let (subject, body) = make(index);
            async move {
                let sent = Instant::now();
                (request(client, &subject, body).await.is_ok(), sent.elapsed())
            }
        })
        .buffer_unordered(in_flight.max(1));
    let mut done = 0;
    while let Some((answered, latency)) = answers.next().await {
        failed += u32::from(!answered);
        latencies.push(latency);
        done += 1;
        if done % 1_000 == 0 || done == total {
            progress(scenario, done, total);
        }
    }
    eprintln!();
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile = |per_mille: usize| {
        let index = (latencies.len() * per_mille / 1_000).min(latencies.len().saturating_sub(1));
        latencies.get(index).copied().unwrap_or_default()
    };
    let micros = |duration: Duration| u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    let per_second = u64::try_from(u128::from(total) * 1_000_000 / elapsed.as_micros().max(1)).unwrap_or(u64::MAX);
    Measurement {
        scenario,
        in_flight,
        requests: total,
        failed,
        per_second,
        p50_us: micros(percentile(500)),
        p99_us: micros(percentile(990)),
        p999_us: micros(percentile(999)),
        ratio_to_bus: bus_rate.map_or(1.0, |bus| ratio(per_second, bus)),
    }
}

#[allow(clippy::cast_precision_loss, clippy::float_arithmetic)]
fn ratio(numerator: u64, denominator: u64) -> f64 {
    numerator as f64 / denominator.max(1) as f64
}

/// A one-line progress bar on standard error.
fn progress(what: &str, done: u32, total: u32) {
    const WIDTH: u32 = 30;
    let filled = usize::try_from(WIDTH * done / total.max(1)).unwrap_or_default();
    let empty = usize::try_from(WIDTH).unwrap_or_default().saturating_sub(filled);
    eprint!("\r{what:<32} [{}{}] {done}/{total}", "#".repeat(filled), " ".repeat(empty));
    let _ = std::io::stderr().flush();
}

fn print_table(results: &[Measurement], args: &BenchArgs) {
    println!(
        "wasmpay bench: {} requests per row, {} payers, SQLite (synchronous=FULL), card payments, one process",
        args.payments, args.payers
    );
    println!(
        "{:<30} {:>9} {:>11} {:>9} {:>9} {:>9} {:>8} {:>7}",
        "scenario", "in flight", "requests/s", "p50 ms", "p99 ms", "p999 ms", "vs bus", "failed"
    );
    for row in results {
        let millis = |micros: u64| format!("{}.{:02}", micros / 1_000, micros % 1_000 / 10);
        println!(
            "{:<30} {:>9} {:>11} {:>9} {:>9} {:>9} {:>8.3} {:>7}",
            row.scenario,
            row.in_flight,
            row.per_second,
            millis(row.p50_us),
            millis(row.p99_us),
            millis(row.p999_us),
            row.ratio_to_bus,
            row.failed
        );
    }
}
