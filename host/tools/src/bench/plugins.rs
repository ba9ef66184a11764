//! The plugins' cost per payment, under the node's isolation model: the card method's
//! validate + quote-fee on instances never used before, as a partition worker runs them
//! (`Instances`: the spares are made after the previous payment, the used ones dropped after
//! this one). Measured in process on one thread, like `benches/payment_path.rs`, because the
//! node only exposes call timings as coarse histogram buckets.
//!
//! Also the time to load the card plugin (compile, link, `describe`, self-test): compiled from
//! the component, as every start did before the disk cache, and from the cache, as a restart
//! does now.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use wasmpay_node::clock;
use wasmpay_node::config::Config;
use wasmpay_node::metrics::Metrics;
use wasmpay_node::node::builtin_plugins;
use wasmpay_plugin_host::{Instances, PaymentInput, PluginRuntime, SandboxSettings, Verdict, load_pipelines};

use super::load::{Latency, Measured};
use super::report::{Row, Scenario};

/// Payments measured, after as many to warm up.
const PAYMENTS: u32 = 2_000;
/// Loads measured each way.
const LOADS: u32 = 10;

/// Four rows: on the payment's path (the calls), in all (plus dropping the used instances
/// and making the next spares, which a worker does while the ledger commits), and loading the
/// plugin compiled and from the disk cache.
pub async fn measure() -> anyhow::Result<Vec<Row>> {
    // Guest code is synchronous: off the async threads, as the node runs it.
    let (mut on_path, mut in_all) = tokio::task::spawn_blocking(time_payments).await??;
    eprintln!("{:<58} done", Scenario::PluginsOnPath.label());
    let (mut compiled, mut cached) = tokio::task::spawn_blocking(time_loads).await??;
    eprintln!("{:<58} done", Scenario::PluginLoadCached.label());
    Ok(vec![
        row(Scenario::PluginsOnPath, &mut on_path),
        row(Scenario::PluginsInAll, &mut in_all),
        row(Scenario::PluginLoadCompiled, &mut compiled),
        row(Scenario::PluginLoadCached, &mut cached),
    ])
}

/// A row of operations timed one after another on one thread.
fn row(scenario: Scenario, latencies: &mut [Duration]) -> Row {
    let count = u64::try_from(latencies.len()).unwrap_or(u64::MAX);
    let busy: Duration = latencies.iter().sum();
    let measured = Measured {
        requests: count,
        failed: 0,
        per_second: super::load::per_second(count, busy),
        latency: Some(Latency::of(latencies)),
    };
    Row::measured(scenario, None, "1 thread".to_owned(), &measured)
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

/// The time of each payment's calls, and of the calls plus the replenishing after them.
fn time_payments() -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let config = Config::default();
    let runtime = PluginRuntime::new(&config.sandbox)?;
    let pipelines = load_pipelines(&runtime, &builtin_plugins(), &config.plugins, &config.methods, &config.fee_limits)?;
    let pipeline = pipelines.get("card").context("the built-in plugins serve no `card` method")?;
    let body = r#"{"version":1,"id":"bench","payer":"payer-00000","payee":"shop-0","amount":100,"currency":"EUR",
                   "method":"card","details":{"pan":"4242424242424242","expiry":"12/30"}}"#;
    let request = wasmpay_protocol::decode(body.as_bytes()).map_err(|refusal| anyhow!("{}", refusal.message))?;
    let input = PaymentInput::new(&request, clock::unix_ms());
    let mut instances = Instances::new(Arc::clone(&runtime), Arc::new(Metrics::default()));
    let (mut on_path, mut in_all) = (Vec::new(), Vec::new());
    for payment in 0..2 * PAYMENTS {
        let started = Instant::now();
        let verdict = instances.run(pipeline, &input)?;
        let called = started.elapsed();
        instances.replenish(pipeline);
        if !matches!(verdict, Verdict::Priced(_)) {
            bail!("the card plugin declined the bench payment: {verdict:?}");
        }
        if payment >= PAYMENTS {
            on_path.push(called);
            in_all.push(started.elapsed());
        }
    }
    Ok((on_path, in_all))
}
