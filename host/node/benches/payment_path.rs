//! Medians of the payment path's two costly steps, against baselines measured in the same run
//! (this machine is shared and noisy: compare ratios, not absolute numbers).
//!
//! - plugins: the `card` pipeline (validate + quote-fee) as a payment runs it, on instances
//!   created for that payment and dropped after it (the isolation model of docs/plugins.md),
//!   against the floor of that model: the `faulty` fixture's no-op validate and free quote on
//!   the same kind of fresh instance (create, two empty calls, drop);
//! - ledger: approved payments one at a time (a batch each) and 640 in flight (group commit
//!   gathers them into batches), against a transaction inserting one row into a scratch
//!   database with the same settings (`synchronous = FULL`): the lock, commit and fsync that
//!   any write pays.
//!
//! `cargo bench -p wasmpay-node --bench payment_path`
#![allow(clippy::unwrap_used, clippy::float_arithmetic, clippy::cast_possible_truncation)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use wasmpay_ledger::{Ledger, NewAccount, Replies, Transfer, TransferKind, external_account};
use wasmpay_node::metrics::Metrics;
use wasmpay_node::node::builtin_plugins;
use wasmpay_plugin_host::{Instances, PaymentInput, PluginRuntime, PluginSource, SandboxSettings, load_pipelines};
use wasmpay_protocol::PaymentId;
use wasmpay_protocol::money::{Currency, FeeBearer, MinorUnits};
use wasmpay_protocol::routing::AccountId;

const SAMPLES: usize = 15;

/// Median over `SAMPLES` samples of the mean time of `per_sample` runs of `step`.
fn median_per_run(per_sample: u32, mut step: impl FnMut()) -> Duration {
    let mut samples: Vec<Duration> = (0..SAMPLES)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..per_sample {
                step();
            }
            started.elapsed() / per_sample
        })
        .collect();
    samples.sort();
    samples[SAMPLES / 2]
}

/// Medians of one payment's pipeline for `method`, with `details`: on the payment's path
/// (the worker's spare instances are ready, as after any earlier payment), and in all (that
/// plus dropping the used instances and making the next spares, which a worker does while the
/// ledger commits and the reply goes out).
fn plugin_pipeline(method: &str, details: &str) -> (Duration, Duration) {
    let runtime = PluginRuntime::new(&SandboxSettings::default()).unwrap();
    let mut sources = builtin_plugins();
    sources.push(PluginSource::Builtin("faulty", wasmpay_plugin_artifacts::FAULTY, None));
    let pipelines = load_pipelines(&runtime, &sources, &BTreeMap::new(), &BTreeMap::new(), &BTreeMap::new()).unwrap();
    let pipeline = pipelines.get(method).unwrap();
    let body = format!(
        r#"{{"version":1,"id":"bench","payer":"alice","payee":"shop","amount":1250,"currency":"EUR",
             "method":"{method}","details":{details}}}"#
    );
    let request = wasmpay_protocol::decode(body.as_bytes()).unwrap();
    let input = PaymentInput::new(&request, wasmpay_node::clock::unix_ms());
    let mut instances = Instances::new(Arc::clone(&runtime), Arc::new(Metrics::new("bench")));
    instances.run(pipeline, &input).unwrap();
    instances.replenish(pipeline);
    let total = median_per_run(500, || {
        instances.run(pipeline, &input).unwrap();
        instances.replenish(pipeline);
    });
    let mut path_samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let mut elapsed = Duration::ZERO;
        for _ in 0..500 {
            let started = Instant::now();
            instances.run(pipeline, &input).unwrap();
            elapsed += started.elapsed();
            instances.replenish(pipeline);
        }
        path_samples.push(elapsed / 500);
    }
    path_samples.sort();
    (path_samples[SAMPLES / 2], total)
}

/// Medians of (one payment at a time, 64 payments in flight, a bare one-row transaction),
/// each per payment or per transaction.
fn ledger(runtime: &tokio::runtime::Runtime) -> (Duration, Duration, Duration) {
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&format!("sqlite://{}", dir.path().join("bench.db").display())).await.unwrap();
        let euro: Currency = "EUR".parse().unwrap();
        let (alice, shop) = (AccountId::new("alice").unwrap(), AccountId::new("shop").unwrap());
        for id in [&alice, &shop] {
            ledger
                .open_account(&NewAccount { id: id.clone(), currency: euro.into(), floor: MinorUnits::ZERO }, 0)
                .await
                .unwrap();
        }
        let next = std::cell::Cell::new(0_u64);
        let transfer = |payer: &AccountId, payee: &AccountId, amount: i64| {
            next.set(next.get() + 1);
            let transfer = Transfer {
                id: PaymentId::new(format!("t-{}", next.get())).unwrap(),
                kind: TransferKind::Payment,
                request_hash: "bench".to_owned(),
                payer: payer.clone(),
                payee: payee.clone(),
                currency: euro.into(),
                amount: MinorUnits(amount),
                fee: MinorUnits(3),
                fee_bearer: FeeBearer::Payee,
                plugins: "card@0.1.0".to_owned(),
                method: None,
                metadata: None,
                client: None,
                partition: Some(0),
                lease_token: None,
                now_ms: 0,
            };
            let ledger = ledger.clone();
            async move {
                let replies = Replies::Posting { approved: "{}".to_owned(), insufficient_funds: "{}".to_owned() };
                ledger.record(transfer, replies).await.unwrap();
            }
        };
        transfer(&external_account(euro.into()), &alice, 1_000_000_000).await;
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("scratch.db"))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
        let scratch = sqlx::SqlitePool::connect_with(options).await.unwrap();
        sqlx::query("CREATE TABLE rows (value INTEGER)").execute(&scratch).await.unwrap();
        let (mut one_samples, mut flight_samples, mut empty_samples) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..SAMPLES {
            let started = Instant::now();
            for _ in 0..50 {
                transfer(&alice, &shop, 10).await;
            }
            one_samples.push(started.elapsed() / 50);
            let started = Instant::now();
            for _ in 0..50 {
                let mut transaction = scratch.begin_with("BEGIN IMMEDIATE").await.unwrap();
                sqlx::query("INSERT INTO rows (value) VALUES (1)").execute(&mut *transaction).await.unwrap();
                transaction.commit().await.unwrap();
            }
            empty_samples.push(started.elapsed() / 50);
        }
        // Apart from the others: the WAL this writes (and its checkpoints) would otherwise be
        // charged to the one-at-a-time samples.
        for _ in 0..SAMPLES {
            let started = Instant::now();
            futures::future::join_all((0..640).map(|_| transfer(&alice, &shop, 10))).await;
            flight_samples.push(started.elapsed() / 640);
        }
        for samples in [&mut one_samples, &mut flight_samples, &mut empty_samples] {
            samples.sort();
        }
        (one_samples[SAMPLES / 2], flight_samples[SAMPLES / 2], empty_samples[SAMPLES / 2])
    })
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn ratio(numerator: Duration, denominator: Duration) -> f64 {
    numerator.as_secs_f64() / denominator.as_secs_f64()
}

fn main() {
    let (card_path, card_total) = plugin_pipeline("card", r#"{"pan":"4242424242424242","expiry":"12/30"}"#);
    let (floor_path, floor_total) = plugin_pipeline("faulty", r#"{"fault":"none"}"#);
    println!(
        "plugins: validate + quote-fee, never-used instances for every payment, median of {SAMPLES} samples of 500"
    );
    println!("                          on the path   in all (with the next spares)");
    println!("  card payment         {:>9.1} µs  {:>9.1} µs", micros(card_path), micros(card_total));
    println!("  no-op plugin (floor) {:>9.1} µs  {:>9.1} µs", micros(floor_path), micros(floor_total));
    println!(
        "  card / floor         {:>9.2} x   {:>9.2} x",
        ratio(card_path, floor_path),
        ratio(card_total, floor_total)
    );

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (one, in_flight, empty) = ledger(&runtime);
    println!("ledger: SQLite WAL synchronous=FULL, group commit, median of {SAMPLES} samples");
    println!("  one payment at a time  {:>9.1} µs  ({:.0}/s)", micros(one), 1.0 / one.as_secs_f64());
    println!("  640 in flight          {:>9.1} µs  ({:.0}/s)", micros(in_flight), 1.0 / in_flight.as_secs_f64());
    println!("  one-row write tx       {:>9.1} µs", micros(empty));
    println!("  one payment / one-row  {:>9.2} x", ratio(one, empty));
    println!("  in flight / one-row    {:>9.2} x", ratio(in_flight, empty));
}
