//! The plugins' cost per payment, under the node's isolation model: each built-in method's
//! validate + quote-fee on instances never used before, as a partition worker runs them
//! (`Instances`: the spares are made after the previous payment, the used ones dropped after
//! this one). Measured in process on one thread, like `benches/payment_path.rs`, because the
//! node only exposes call timings as coarse histogram buckets.
//!
//! Also the time to load the card plugin (compile, link, `describe`, self-test): compiled from
//! the component, as every start did before the disk cache, and from the cache, as a restart
//! does now.
//!
//! And a card payment's plugins beside a slow but legal method (the `faulty` fixture burning
//! about 38 ms of CPU per call, within its fuel) busy on 8 partitions: with each method's
//! share of the plugin CPU bounded (`[sandbox] method_threads`, the default) and without it
//! (as many threads as busy partitions, as before issue 16's finding 8), timed as a partition
//! worker waits for them (`Instances::run_payment`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use wasmpay_node::clock;
use wasmpay_node::config::Config;
use wasmpay_node::metrics::Metrics;
use wasmpay_node::node::builtin_plugins;
use wasmpay_plugin_host::{
    Instances, PaymentInput, Pipeline, PluginRuntime, PluginSettings, PluginSource, RateInput, RateVerdict,
    SandboxSettings, Verdict, load_pipelines,
};

use super::load::{Latency, Measured};
use super::report::{Row, Scenario};

/// Payments measured, after as many to warm up.
const PAYMENTS: u32 = 2_000;
/// Loads measured each way.
const LOADS: u32 = 10;
/// Partitions busy with the slow method, as in finding 8 of issue 16.
const SLOW_PARTITIONS: usize = 8;
/// CPU a slow call burns, about: legal, well within the default fuel.
const SLOW_CALL: Duration = Duration::from_millis(38);
/// Card payments timed beside the slow method, one after another.
const BESIDE: u32 = 200;

/// A payment of each built-in method, as the rows on the payment's path time it.
const METHOD_PAYMENTS: [(&str, &str); 4] = [
    (
        "card",
        r#"{"version":1,"id":"bench","payer":"payer-00000","payee":"shop-0","amount":100,"currency":"EUR",
            "method":"card","details":{"pan":"4242424242424242","expiry":"12/30"}}"#,
    ),
    (
        "wallet",
        r#"{"version":1,"id":"bench","payer":"payer-00000","payee":"shop-0","amount":100,"currency":"EUR",
            "method":"wallet","details":{"wallet_id":"wal_bench0001"}}"#,
    ),
    (
        "mobile_money",
        r#"{"version":1,"id":"bench","payer":"payer-00000","payee":"shop-0","amount":2500000,"currency":"TZS",
            "method":"mobile_money","details":{"msisdn":"+255754123456"}}"#,
    ),
    (
        "cross_border",
        r#"{"version":1,"id":"bench","payer":"payer-00000","payee":"shop-0","amount":10000,"currency":"EUR",
            "method":"cross_border","details":{"payer_country":"DE","payee_country":"US"}}"#,
    ),
];

/// Rows: each built-in method on the payment's path (the calls); the card's in all (plus
/// dropping the used instances and making the next spares, which a worker does while the
/// ledger commits); loading the card plugin compiled and from the disk cache; the card beside
/// a slow method.
pub async fn measure() -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut card_in_all = Vec::new();
    for (method, body) in METHOD_PAYMENTS {
        // Guest code is synchronous: off the async threads, as the node runs it.
        let (mut on_path, in_all) = tokio::task::spawn_blocking(move || time_payments(method, body)).await??;
        rows.push(row(Scenario::PluginsOnPath, &mut on_path, format!("{method}, 1 thread")));
        if method == "card" {
            card_in_all = in_all;
        }
    }
    let mut rates = tokio::task::spawn_blocking(time_rates).await??;
    rows.push(row(Scenario::PluginsOnPath, &mut rates, "fx-table rate, 1 thread".to_owned()));
    eprintln!("{:<58} done", Scenario::PluginsOnPath.label());
    let (mut compiled, mut cached) = tokio::task::spawn_blocking(time_loads).await??;
    eprintln!("{:<58} done", Scenario::PluginLoadCached.label());
    let mut bounded = beside_a_slow_method(None).await?;
    let mut unbounded = beside_a_slow_method(Some(SLOW_PARTITIONS + 1)).await?;
    eprintln!("{:<58} done", Scenario::PluginsBesideSlow.label());
    let beside = |share: &str| format!("{SLOW_PARTITIONS} slow, {share}");
    rows.extend([
        row(Scenario::PluginsInAll, &mut card_in_all, "card, 1 thread".to_owned()),
        row(Scenario::PluginLoadCompiled, &mut compiled, "1 thread".to_owned()),
        row(Scenario::PluginLoadCached, &mut cached, "1 thread".to_owned()),
        row(Scenario::PluginsBesideSlow, &mut bounded, beside("bounded")),
        row(Scenario::PluginsBesideSlow, &mut unbounded, beside("unbounded")),
    ]);
    Ok(rows)
}

/// Card payments' plugin time, as a partition worker waits for it, while `SLOW_PARTITIONS`
/// workers run the slow method back to back; `method_threads` as configured.
async fn beside_a_slow_method(method_threads: Option<usize>) -> anyhow::Result<Vec<Duration>> {
    let runtime = PluginRuntime::new(&SandboxSettings { method_threads, ..SandboxSettings::default() })?;
    let mut sources = builtin_plugins();
    sources.push(PluginSource::Builtin("faulty", wasmpay_plugin_artifacts::FAULTY, None));
    let pipelines = load_pipelines(&runtime, &sources, &Default::default(), &Default::default(), &Default::default())?;
    let card = pipelines.get("card").context("no `card` method")?.clone();
    let slow = pipelines.get("faulty").context("no `faulty` method")?.clone();
    let iterations = calibrate(&runtime, &slow).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..SLOW_PARTITIONS)
        .map(|partition| {
            let (runtime, slow, stop) = (runtime.clone(), slow.clone(), stop.clone());
            tokio::spawn(async move {
                let mut instances = Instances::new(runtime, Arc::new(Metrics::new("bench")));
                while !stop.load(Ordering::Relaxed) {
                    let input = slow_payment(&format!("slow-{partition}"), iterations)?;
                    instances.run_payment(slow.clone(), input).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    tokio::time::sleep(SLOW_CALL * 2).await;
    let mut instances = Instances::new(runtime.clone(), Arc::new(Metrics::new("bench")));
    let mut latencies = Vec::new();
    for _ in 0..BESIDE {
        let input = card_payment()?;
        let started = Instant::now();
        let verdict = instances.run_payment(card.clone(), input).await?;
        latencies.push(started.elapsed());
        if !matches!(verdict, Verdict::Priced(_)) {
            bail!("the card plugin declined the bench payment: {verdict:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await??;
    }
    Ok(latencies)
}

/// The `faulty` fixture's iterations that take about [`SLOW_CALL`] on this machine, alone.
async fn calibrate(runtime: &Arc<PluginRuntime>, slow: &Pipeline) -> anyhow::Result<u64> {
    const PROBE: u64 = 2_000_000;
    let mut instances = Instances::new(runtime.clone(), Arc::new(Metrics::new("bench")));
    let started = Instant::now();
    instances.run_payment(slow.clone(), slow_payment("calibrate", PROBE)?).await?;
    let per_probe = started.elapsed().as_micros().max(1);
    let iterations = u128::from(PROBE) * SLOW_CALL.as_micros() / per_probe;
    Ok(u64::try_from(iterations).unwrap_or(u64::MAX))
}

/// A payment of the slow method: `iterations` of busy work, then approved.
fn slow_payment(id: &str, iterations: u64) -> anyhow::Result<PaymentInput> {
    let body = format!(
        r#"{{"version":1,"id":"{id}","payer":"payer-00001","payee":"shop-0","amount":100,"currency":"EUR",
             "method":"faulty","details":{{"fault":"work","iterations":"{iterations}"}}}}"#
    );
    let request = wasmpay_protocol::decode(body.as_bytes()).map_err(|refusal| anyhow!("{}", refusal.message))?;
    Ok(PaymentInput::new(&request, clock::unix_ms()))
}

/// The card payment the rows beside a slow method time.
fn card_payment() -> anyhow::Result<PaymentInput> {
    payment(METHOD_PAYMENTS[0].1)
}

/// The plugins' view of the payment `body`.
fn payment(body: &str) -> anyhow::Result<PaymentInput> {
    let request = wasmpay_protocol::decode(body.as_bytes()).map_err(|refusal| anyhow!("{}", refusal.message))?;
    Ok(PaymentInput::new(&request, clock::unix_ms()))
}

/// A row of operations timed one after another.
fn row(scenario: Scenario, latencies: &mut [Duration], load: String) -> Row {
    let count = u64::try_from(latencies.len()).unwrap_or(u64::MAX);
    let busy: Duration = latencies.iter().sum();
    let measured = Measured {
        requests: count,
        failed: 0,
        per_second: super::load::per_second(count, busy),
        latency: Some(Latency::of(latencies)),
    };
    Row::measured(scenario, None, load, &measured)
}

/// How long loading the built-in card plugin takes: compiled each time, and from a warm
/// disk cache, each on a new runtime as a starting node has.
fn time_loads() -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let cache = tempfile::tempdir()?;
    let card = builtin_plugins().into_iter().take(1).collect::<Vec<_>>();
    let load = |cache_dir: Option<std::path::PathBuf>| -> anyhow::Result<Duration> {
        let sandbox = SandboxSettings { cache_dir, ..SandboxSettings::default() };
        let runtime = PluginRuntime::new(&sandbox)?;
        let started = Instant::now();
        load_pipelines(&runtime, &card, &Default::default(), &Default::default(), &Default::default())?;
        Ok(started.elapsed())
    };
    // Fills the cache.
    load(Some(cache.path().to_owned()))?;
    let mut compiled = Vec::new();
    let mut cached = Vec::new();
    for _ in 0..LOADS {
        compiled.push(load(None)?);
        cached.push(load(Some(cache.path().to_owned()))?);
    }
    Ok((compiled, cached))
}

/// The time of each FX rate call a cross-border payment adds (EUR to USD, from `fx-table`'s
/// table), on an instance made for it, as a payment's.
fn time_rates() -> anyhow::Result<Vec<Duration>> {
    let config = Config::default();
    let runtime = PluginRuntime::new(&config.sandbox)?;
    let table = PluginSettings {
        path: None,
        config: [("EUR/USD", "1.0832"), ("markup_bps", "50")]
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .into(),
    };
    let plugins = [("fx-table".to_owned(), table)].into();
    let pipelines = load_pipelines(&runtime, &builtin_plugins(), &plugins, &config.methods, &config.fee_limits)?;
    let fx = pipelines.fx().context("the built-in plugins have no FX plugin")?;
    let (eur, usd) = ("EUR".parse()?, "USD".parse()?);
    let mut instances = Instances::new(Arc::clone(&runtime), Arc::new(Metrics::new("bench")));
    let mut times = Vec::new();
    for call in 0..2 * PAYMENTS {
        let input = RateInput::new("bench", eur, usd, 10_000, clock::unix_ms());
        let started = Instant::now();
        let verdict = instances.quote_rate(fx.plugin(), &input)?;
        let called = started.elapsed();
        if !matches!(verdict, RateVerdict::Quoted(_)) {
            bail!("the FX plugin did not quote the bench pair: {verdict:?}");
        }
        if call >= PAYMENTS {
            times.push(called);
        }
    }
    Ok(times)
}

/// The time of each of `method`'s payments' calls (paying `body`), and of the calls plus the
/// replenishing after them.
fn time_payments(method: &str, body: &str) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let config = Config::default();
    let runtime = PluginRuntime::new(&config.sandbox)?;
    let pipelines = load_pipelines(&runtime, &builtin_plugins(), &config.plugins, &config.methods, &config.fee_limits)?;
    let pipeline = pipelines.get(method).with_context(|| format!("the built-in plugins serve no `{method}` method"))?;
    let input = payment(body)?;
    let mut instances = Instances::new(Arc::clone(&runtime), Arc::new(Metrics::new("bench")));
    let (mut on_path, mut in_all) = (Vec::new(), Vec::new());
    for payment in 0..2 * PAYMENTS {
        let started = Instant::now();
        let verdict = instances.run(pipeline, &input)?;
        let called = started.elapsed();
        instances.replenish(pipeline);
        if !matches!(verdict, Verdict::Priced(_)) {
            bail!("the {method} plugin declined the bench payment: {verdict:?}");
        }
        if payment >= PAYMENTS {
            on_path.push(called);
            in_all.push(started.elapsed());
        }
    }
    Ok((on_path, in_all))
}
