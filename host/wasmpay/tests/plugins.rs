//! Plugin versions rolled into running `wasmpay serve` processes, as an operator does it:
//! `wasmpay plugin push`, `activate` and `rollback` through one node change what every node
//! serves, under load, without a payment failing; bad versions are refused while the serving
//! one stays; a watched directory swaps a plugin replaced in place.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmpay_plugin_host::Sha256;
use wasmpay_protocol::Status;
use wasmpay_protocol::routing::AccountId;
use wasmpay_tests::Backend;

mod support;

use support::*;

/// Every node serves a pushed version within this (the watch delivers a pointer change in
/// milliseconds; loading a new version compiles it once, some 100 ms here).
const CONVERGE_BOUND: Duration = Duration::from_secs(5);
/// Swaps to v2 and back under load.
const ROUNDS: usize = 20;

/// The fee each version charges on [`AMOUNT`] (1.00 EUR): 0.1.0 takes 2.9 % (rounded) +
/// 0.25, 2.0.0 takes 1 % + 0.10.
fn fee_of(plugins: &[String]) -> u64 {
    match plugins {
        [version] if version == "card@0.1.0" => 28,
        [version] if version == "card@2.0.0" => 11,
        other => panic!("unexpected pipeline {other:?}"),
    }
}

/// Runs `wasmpay plugin …` against `member`; its stdout, or its stderr as the error.
fn plugin_command(member: &Member, args: &[&str]) -> Result<String, String> {
    let output = Command::new(BINARY)
        .arg("plugin")
        .args(args)
        .args(["--api", &format!("http://{}", member.http), "--token", TOKEN])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() { Ok(stdout) } else { Err(String::from_utf8_lossy(&output.stderr).into_owned()) }
}

/// `GET /v1/plugins` of `member`.
async fn plugins_of(member: &Member) -> Value {
    serde_json::from_str(&member.get("/v1/plugins").await.unwrap_or_default()).unwrap_or(Value::Null)
}

/// The serving version of `name` on `member`, and its state.
async fn serving(member: &Member, name: &str) -> (Option<String>, Option<String>) {
    let plugins = plugins_of(member).await;
    let plugin = plugins["plugins"].as_array().into_iter().flatten().find(|plugin| plugin["name"] == name);
    let active = plugin.and_then(|plugin| plugin["active"].as_str()).map(str::to_owned);
    let state = plugin.and_then(|plugin| plugin["versions"][0]["state"].as_str()).map(str::to_owned);
    (active, state)
}

/// Waits until every member serves `version` of `card` (`None`: none); how long it took.
async fn all_serve(members: &[&Member], version: Option<&str>) -> Duration {
    let started = Instant::now();
    loop {
        let mut all = true;
        for member in members {
            let (active, state) = serving(member, "card").await;
            all &= active.as_deref() == version && (version.is_none() || state.as_deref() == Some("active"));
        }
        if all {
            return started.elapsed();
        }
        assert!(started.elapsed() < CONVERGE_BOUND, "not every node serves card {version:?} after {CONVERGE_BOUND:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// v2 of `card` and its manifest (without `sha256`: `wasmpay plugin push` fills it in).
fn write_v2(directory: &Path) -> std::path::PathBuf {
    let component = directory.join("card_v2.wasm");
    std::fs::write(&component, wasmpay_plugin_artifacts::CARD_V2).unwrap();
    std::fs::write(directory.join("card_v2.toml"), wasmpay_plugin_artifacts::CARD_V2_MANIFEST).unwrap();
    component
}

/// The 99th percentile of `took` over the payments sent while `inside` says so, and how many.
fn p99(paid: &[Paid], inside: impl Fn(Instant) -> bool) -> (Duration, usize) {
    let mut took: Vec<Duration> = paid.iter().filter(|paid| inside(paid.sent)).map(|paid| paid.took).collect();
    took.sort();
    let index = (took.len() * 99).div_ceil(100).saturating_sub(1);
    (took.get(index).copied().unwrap_or_default(), took.len())
}

/// The live versions and instances a node reports.
async fn census(member: &Member) -> (u64, u64) {
    let plugins = plugins_of(member).await;
    (plugins["versions_loaded"].as_u64().unwrap(), plugins["instances"].as_u64().unwrap())
}

/// Two nodes on one PostgreSQL ledger, clients paying by card all along. `card` 2.0.0 is
/// pushed through one node, then rolled back, twenty times, through either node. Every
/// payment is answered at once (no retry: nothing failed), approved, applied once, and
/// charged the fee of the version its reply and record name; both nodes serve each version
/// within the bound; and the versions and instances alive do not grow with the swaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_roll_out_and_back_under_load_without_failing_a_payment() {
    let Stage { nats, workdir, db, ledger } = Stage::new(Backend::Postgres).await;
    let one = Member::start(&nats, &db, "one", workdir.path());
    let two = Member::start(&nats, &db, "two", workdir.path());
    converged(&[&one, &two]).await;
    let v2 = write_v2(workdir.path());
    let v2 = v2.to_str().unwrap();

    let load = Load::start(&nats.url(), 6).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let swaps_began = Instant::now();
    let mut windows: Vec<(Instant, Instant)> = Vec::new();
    let mut convergence: Vec<Duration> = Vec::new();
    let mut after_first = None;
    for round in 0..ROUNDS {
        let (here, there) = if round % 2 == 0 { (&one, &two) } else { (&two, &one) };
        let began = Instant::now();
        let pushed = match round {
            0 => plugin_command(here, &["push", v2]),
            _ => plugin_command(here, &["activate", "card", "2.0.0"]),
        };
        assert!(pushed.is_ok(), "round {round}: {pushed:?}");
        all_serve(&[&one, &two], Some("2.0.0")).await;
        convergence.push(began.elapsed());
        windows.push((began, Instant::now()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let began = Instant::now();
        let rolled = plugin_command(there, &["rollback", "card"]);
        assert!(rolled.as_deref().is_ok_and(|out| out.contains("rolled back to 0.1.0")), "round {round}: {rolled:?}");
        all_serve(&[&one, &two], Some("0.1.0")).await;
        convergence.push(began.elapsed());
        windows.push((began, Instant::now()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = (census(&one).await, census(&two).await);
        let first = *after_first.get_or_insert(now);
        eprintln!("round {round}: (versions, instances) one {:?} two {:?}", now.0, now.1);
        for ((versions, instances), (first_versions, _)) in [(now.0, first.0), (now.1, first.1)] {
            assert!(
                versions <= first_versions,
                "round {round}: {versions} versions loaded, {first_versions} after the first"
            );
            assert!(instances <= u64::from(PARTITIONS), "round {round}: {instances} instances alive");
        }
    }
    let swaps_ended = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (paid, retries) = load.finish_timed().await;
    // A node that starts now serves what the cluster serves before it takes a payment.
    assert!(plugin_command(&one, &["activate", "card", "2.0.0"]).is_ok());
    let three = Member::start(&nats, &db, "three", workdir.path());
    assert_eq!(serving(&three, "card").await, (Some("2.0.0".to_owned()), Some("active".to_owned())));

    assert_eq!(retries, 0, "a payment was not answered at once, or was answered `error`");
    let mut by_version: BTreeMap<String, usize> = BTreeMap::new();
    for payment in &paid {
        assert_eq!(payment.reply.status, Status::Approved, "{}: {:?}", payment.id, payment.reply);
        assert_eq!(payment.reply.fee, Some(fee_of(&payment.reply.plugins)), "{}: {:?}", payment.id, payment.reply);
        // The record names the same version, and the fee account got that version's fee.
        let stored = ledger.payment(&payment.id).await.unwrap().unwrap();
        let recorded: wasmpay_protocol::Reply = serde_json::from_str(&stored.reply).unwrap();
        assert_eq!(recorded.plugins, payment.reply.plugins, "{}", payment.id);
        let fee_entry = stored.entries.iter().find(|(account, _)| account.starts_with("_fee"));
        assert_eq!(fee_entry.map(|(_, amount)| *amount), Some(fee_of(&payment.reply.plugins) as i64), "{}", payment.id);
        *by_version.entry(payment.reply.plugins.join(",")).or_default() += 1;
    }
    assert!(by_version.len() == 2, "both versions decided payments: {by_version:?}");
    let answered: Vec<_> = paid.iter().map(|paid| (paid.id.clone(), paid.from, paid.reply.clone())).collect();
    assert_paid_exactly_once(&ledger, &answered).await;
    verify(&db);

    let during = |sent: Instant| windows.iter().any(|(began, ended)| (*began..=*ended).contains(&sent));
    let (before, before_count) = p99(&paid, |sent| sent < swaps_began);
    let (in_swaps, in_count) = p99(&paid, during);
    let (after, after_count) = p99(&paid, |sent| sent > swaps_ended);
    convergence.sort();
    eprintln!(
        "{} payments ({by_version:?}), {retries} retries; p99 before {before:?} ({before_count}), during switches \
         {in_swaps:?} ({in_count}), after {after:?} ({after_count}); from the command to both nodes serving the \
         new version: median {:?}, max {:?} over {} switches",
        paid.len(),
        convergence[convergence.len() / 2],
        convergence[convergence.len() - 1],
        convergence.len()
    );
}

/// Bad versions pushed to a serving node are refused with their reason, and the version
/// serving before keeps deciding payments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_versions_are_refused_and_the_serving_one_stays() {
    let Stage { nats, workdir, db, ledger } = Stage::new(Backend::Sqlite).await;
    // A configured pipeline needs `card`: the node cannot stop serving it.
    let config = write_config(workdir.path(), "[methods.card]\nvalidators = [\"card\"]\nfee = \"card\"\n");
    let node = Member::start_with(&nats.url(), &db, "node", workdir.path(), &["--config", &config]);
    converged(&[&node]).await;
    let refused = plugin_command(&node, &["remove", "card"]);
    assert!(refused.as_ref().is_err_and(|error| error.contains("pipeline_invalid")), "{refused:?}");
    let directory = workdir.path();
    let v2 = write_v2(directory);
    let v2_manifest = wasmpay_plugin_artifacts::CARD_V2_MANIFEST;
    let bad = |file: &str, manifest: String| {
        std::fs::write(directory.join(format!("{file}.toml")), manifest).unwrap();
        directory.join(format!("{file}.wasm"))
    };
    // The manifest pins another component's hash.
    std::fs::write(directory.join("pinned.wasm"), wasmpay_plugin_artifacts::CARD_V2).unwrap();
    let pinned = bad("pinned", format!("sha256 = \"{}\"\n{v2_manifest}", Sha256::of(b"another build")));
    // v2 with a fixture that expects v1's fee.
    std::fs::write(directory.join("wrong-fee.wasm"), wasmpay_plugin_artifacts::CARD_V2).unwrap();
    let wrong_fee = bad(
        "wrong-fee",
        v2_manifest.replace(
            "expect = { verdict = \"approved\", fee = 110, bearer = \"payee\" }",
            "expect = { verdict = \"approved\", fee = 315 }",
        ),
    );
    // A component that traps in `describe`.
    std::fs::write(directory.join("bad-describe.wasm"), wasmpay_plugin_artifacts::BAD_DESCRIBE).unwrap();
    let trapping = bad("bad-describe", v2_manifest.to_owned());
    for (component, code) in
        [(&pinned, "hash_mismatch"), (&wrong_fee, "self_test_failed"), (&trapping, "describe_failed")]
    {
        let refused = plugin_command(&node, &["push", component.to_str().unwrap()]);
        assert!(refused.as_ref().is_err_and(|error| error.contains(code)), "{}: {refused:?}", component.display());
        assert_eq!(serving(&node, "card").await, (Some("0.1.0".to_owned()), Some("active".to_owned())));
    }
    assert_eq!(node.metric("wasmpay_plugin_refusals_total").await, 3);
    let listed = plugins_of(&node).await;
    let card = listed["plugins"].as_array().into_iter().flatten().find(|plugin| plugin["name"] == "card").unwrap();
    assert_eq!(card["refused"]["code"], "describe_failed", "{card}");
    // Still v1: a payment is approved with v1's fee.
    let client = connect(&nats.url()).await;
    let partitioner = wasmpay_protocol::routing::Partitioner::new(PARTITIONS).unwrap();
    let retries = std::sync::atomic::AtomicU64::new(0);
    let reply = pay_until_answered(&client, &partitioner, "after-bad-pushes", 0, &retries).await;
    assert_eq!(
        (reply.status, reply.fee, reply.plugins.clone()),
        (Status::Approved, Some(28), vec!["card@0.1.0".to_owned()])
    );
    // A good push still works after the bad ones, and the listing shows both versions.
    assert!(plugin_command(&node, &["push", v2.to_str().unwrap()]).is_ok());
    let listed = plugin_command(&node, &["list"]).unwrap();
    assert!(listed.contains("2.0.0") && listed.contains("retained") && !listed.contains("refused"), "{listed}");
    // A version never changes: other terms under 2.0.0 are refused.
    std::fs::write(directory.join("retermed.wasm"), wasmpay_plugin_artifacts::CARD_V2).unwrap();
    let retermed = bad("retermed", format!("{v2_manifest}\n[config]\n\"fee.bps\" = \"50\"\n"));
    let refused = plugin_command(&node, &["push", retermed.to_str().unwrap()]);
    assert!(refused.as_ref().is_err_and(|error| error.contains("conflict")), "{refused:?}");

    // A rollback sent twice with one idempotency key (a client retrying after a time-out) goes
    // back once: the second answers with the first's change. Sent again without the key, it
    // is a new rollback, and there is nothing left to roll back to.
    let rollback = |key: Option<&'static str>| {
        let url = format!("http://{}/v1/plugins/card/rollback", node.http);
        async move {
            let timeout = Duration::from_secs(30);
            let sent =
                wasmpay_node::client::http_call_within(hyper::Method::POST, &url, TOKEN, None, timeout, key).await;
            sent.unwrap().0
        }
    };
    assert_eq!(rollback(Some("rollback-1")).await, 200);
    assert_eq!(rollback(Some("rollback-1")).await, 200);
    assert_eq!(serving(&node, "card").await.0.as_deref(), Some("0.1.0"));
    assert_eq!(rollback(None).await, 409);
    drop(ledger);
}

/// A node watching a plugin directory swaps `card` when its component and manifest are
/// overwritten in place, under load, and retires it when they are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_directory_swaps_a_plugin_replaced_in_place() {
    let Stage { nats, workdir, db, ledger } = Stage::new(Backend::Sqlite).await;
    let directory = workdir.path().join("plugins");
    std::fs::create_dir(&directory).unwrap();
    let write = |component: &[u8], manifest: &str| {
        let manifest = format!("sha256 = \"{}\"\n{manifest}", Sha256::of(component));
        std::fs::write(directory.join("card.toml"), manifest).unwrap();
        std::fs::write(directory.join("card.wasm"), component).unwrap();
    };
    write(wasmpay_plugin_artifacts::CARD, wasmpay_plugin_artifacts::CARD_MANIFEST);
    let plugins = directory.to_str().unwrap();
    let node = Member::start_with(&nats.url(), &db, "node", workdir.path(), &["--plugins", plugins]);
    converged(&[&node]).await;
    assert_eq!(serving(&node, "card").await.0.as_deref(), Some("0.1.0"));

    let load = Load::start(&nats.url(), 4).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    write(wasmpay_plugin_artifacts::CARD_V2, wasmpay_plugin_artifacts::CARD_V2_MANIFEST);
    let swapped = all_serve(&[&node], Some("2.0.0")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (paid, retries) = load.finish_timed().await;
    eprintln!("the directory's new version served {swapped:?} after the files were written");
    assert_eq!(retries, 0);
    let mut versions = std::collections::BTreeSet::new();
    for payment in &paid {
        assert_eq!(payment.reply.status, Status::Approved, "{}: {:?}", payment.id, payment.reply);
        assert_eq!(payment.reply.fee, Some(fee_of(&payment.reply.plugins)), "{}", payment.id);
        versions.insert(payment.reply.plugins.join(","));
    }
    assert_eq!(versions.len(), 2, "{versions:?}");
    let answered: Vec<_> = paid.iter().map(|paid| (paid.id.clone(), paid.from, paid.reply.clone())).collect();
    assert_paid_exactly_once(&ledger, &answered).await;

    std::fs::remove_file(directory.join("card.wasm")).unwrap();
    std::fs::remove_file(directory.join("card.toml")).unwrap();
    all_serve(&[&node], None).await;
}

/// Pays `payer-0` → `shop` with the `faulty` method and `fault`, and waits for the reply.
async fn pay_faulty(client: &async_nats::Client, id: &str, fault: &str) -> wasmpay_protocol::Reply {
    pay_as(client, id, ("faulty", 100), serde_json::json!({"fault": fault})).await
}

/// Pays `payer-0` → `shop` `amount` minor units of EUR with `method` and `details`, and waits
/// for the reply.
async fn pay_as(
    client: &async_nats::Client,
    id: &str,
    (method, amount): (&str, u64),
    details: Value,
) -> wasmpay_protocol::Reply {
    let payer = payer(0);
    let partitioner = wasmpay_protocol::routing::Partitioner::new(PARTITIONS).unwrap();
    let partition = partitioner.partition_of(&AccountId::new(payer.as_str()).unwrap());
    let body = serde_json::json!({"version": 1, "id": id, "payer": payer, "payee": "shop", "amount": amount,
        "currency": "EUR", "method": method, "details": details});
    let subject = wasmpay_protocol::routing::subjects::pay(partition, &payer);
    // As docs/protocol.md tells a client: no responder, or no reply in time, is retried with
    // the same id. Right after a NATS server failover the partition's lease may be taken again
    // (it answers nothing for up to a TTL), which is not what these tests are about.
    let started = Instant::now();
    loop {
        match client.request(subject.clone(), body.to_string().into()).await {
            Ok(reply) => return serde_json::from_slice(&reply.payload).unwrap(),
            Err(error) if started.elapsed() < NATS_RESTART_BOUND => {
                eprintln!("{id}: {error}; retrying with the same id");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("{id}: no answer within {NATS_RESTART_BOUND:?}: {error}"),
        }
    }
}

/// Pushes the `faulty` fixture to `node` and makes it trap until it is quarantined there
/// (the node's quarantine needs 4 calls): the fifth payment is refused without a call.
async fn push_and_quarantine_faulty(node: &Member, client: &async_nats::Client, workdir: &Path) {
    let component = workdir.join("faulty.wasm");
    std::fs::write(&component, wasmpay_plugin_artifacts::FAULTY).unwrap();
    std::fs::write(workdir.join("faulty.toml"), "name = \"faulty\"\nversion = \"0.1.0\"\nmethods = [\"faulty\"]\n")
        .unwrap();
    let pushed = plugin_command(node, &["push", component.to_str().unwrap()]);
    assert!(pushed.is_ok(), "{pushed:?}");
    for index in 0..4 {
        let reply = pay_faulty(client, &format!("trap-{index}"), "trap").await;
        assert_eq!(reply.code.as_str(), "plugin_failed", "{reply:?}");
        assert!(reply.message.contains("trapped"), "{reply:?}");
    }
    assert_quarantined(node, client, "after-quarantine").await;
}

/// `faulty` is quarantined on `node`: refused at once, whatever the payment, and listed so.
async fn assert_quarantined(node: &Member, client: &async_nats::Client, id: &str) {
    let reply = pay_faulty(client, id, "none").await;
    assert!(reply.code.as_str() == "plugin_failed" && reply.message.contains("quarantined"), "{reply:?}");
    let listed = plugin_command(node, &["list"]).unwrap();
    assert!(listed.contains("quarantined: 4 of its last 4 calls failed"), "{listed}");
}

const QUARANTINE_AFTER_FOUR: &str = "[sandbox.quarantine]\nfailure_percent = 50\nmin_calls = 4\n";

/// A version pushed to the cluster that traps on most calls is quarantined on the node: its
/// method is refused at once, without calling it, the listing and the metric say so; the
/// operator re-enables it with `wasmpay plugin activate`, and it decides payments again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_version_is_quarantined_until_the_operator_reenables_it() {
    let Stage { nats, workdir, db, ledger } = Stage::new(Backend::Sqlite).await;
    let config = write_config(workdir.path(), QUARANTINE_AFTER_FOUR);
    let node = Member::start_with(&nats.url(), &db, "node", workdir.path(), &["--config", &config]);
    converged(&[&node]).await;
    let client = connect(&nats.url()).await;
    push_and_quarantine_faulty(&node, &client, workdir.path()).await;
    assert_eq!(node.metric("wasmpay_plugin_quarantines_total").await, 1);
    // Five payments failed on the plugin (four traps, one refused while quarantined): the
    // log says so once, not once per payment (a complaint is said once per 10 s).
    let log = std::fs::read_to_string(&node.log).unwrap();
    let said = log.lines().filter(|line| line.contains("plugin failed; payment refused")).count();
    assert!((1..=2).contains(&said), "said {said} times:\n{log}");
    // Counted by kind: the traps ran, the payment after the quarantine was refused uncalled.
    let metrics = node.get("/metrics").await.unwrap();
    for series in [
        "wasmpay_plugin_failures_total{plugin=\"faulty\",version=\"0.1.0\",kind=\"trap\"} 4",
        "wasmpay_plugin_failures_total{plugin=\"faulty\",version=\"0.1.0\",kind=\"quarantined\"} ",
    ] {
        assert!(metrics.contains(series), "{series}: {metrics}");
    }

    assert!(plugin_command(&node, &["activate", "faulty", "0.1.0"]).is_ok());
    assert_eq!(serving(&node, "faulty").await, (Some("0.1.0".to_owned()), Some("active".to_owned())));
    let reply = pay_faulty(&client, "re-enabled", "none").await;
    assert_eq!(reply.status, Status::Approved, "{reply:?}");
    drop(ledger);
}

/// The NATS server a node is connected to restarts while a version is pushed: the node gets
/// the version once it is back, and its watch of the store starting again (which replays
/// every pointer) does not lift the quarantine of another plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_during_a_nats_restart_arrives_and_a_quarantine_stays() {
    let (mut nats, client) = nats_cluster().await;
    let workdir = tempfile::tempdir().unwrap();
    let db = Backend::Sqlite.fresh_database(workdir.path());
    let ledger = funded_ledger(&db).await;
    let config = write_config(workdir.path(), &format!("[cluster]\nreplicas = 3\n\n{QUARANTINE_AFTER_FOUR}"));
    // The node's own server first; the others to fail over to.
    let node_urls = format!("{},{}", nats.url(0), nats.urls());
    let node = Member::start_with(&node_urls, &db, "node", workdir.path(), &["--config", &config]);
    converged_within(&[&node], NATS_RESTART_BOUND).await;
    // A new deployment's node takes its leases after the binding's grace period, just before
    // this: let them be renewed once, as on a node that has run a while (a lease taken under a
    // second before JetStream fails over lapses, and its partition answers nothing for a TTL).
    tokio::time::sleep(Duration::from_secs(2)).await;
    push_and_quarantine_faulty(&node, &client, workdir.path()).await;

    nats.stop_server(0);
    let v2 = write_v2(workdir.path());
    // Through the API of a node that is itself failing over, while JetStream elects new
    // leaders: the command waits for the store, and is run again if it still failed.
    let started = Instant::now();
    while let Err(error) = plugin_command(&node, &["push", v2.to_str().unwrap()]) {
        assert!(started.elapsed() < Duration::from_secs(90), "the push never went through: {error}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("pushed {:?} after the node's NATS server stopped", started.elapsed());
    nats.start_server(0).unwrap();
    let restarted = Instant::now();
    while serving(&node, "card").await.0.as_deref() != Some("2.0.0") {
        assert!(restarted.elapsed() < NATS_RESTART_BOUND, "the node never served the pushed version");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Long enough for the node to have watched the store again from its own server.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_quarantined(&node, &client, "after-restart").await;
    drop(ledger);
}

/// A development node (`serve --dev`, SQLite): its plugin directory's manifests need no
/// `sha256`, and a push replaces a stored version in place, the next payment decided by the
/// new terms under the same version (here a lower limit). `--dev` on PostgreSQL does not
/// start. (A node that is not for development refuses the same push:
/// `bad_versions_are_refused_and_the_serving_one_stays`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_development_node_replaces_a_version_in_place() {
    let Stage { nats, workdir, db, ledger: _ledger } = Stage::new(Backend::Sqlite).await;
    let directory = workdir.path().join("plugins");
    std::fs::create_dir(&directory).unwrap();
    std::fs::write(directory.join("card.wasm"), wasmpay_plugin_artifacts::CARD).unwrap();
    std::fs::write(directory.join("card.toml"), wasmpay_plugin_artifacts::CARD_MANIFEST).unwrap();
    let plugins = directory.to_str().unwrap();
    let node = Member::start_with(&nats.url(), &db, "dev", workdir.path(), &["--plugins", plugins, "--dev"]);
    converged(&[&node]).await;
    assert_eq!(serving(&node, "card").await.0.as_deref(), Some("0.1.0"));

    let client = connect(&nats.url()).await;
    let card = || serde_json::json!({"pan": "4242424242424242", "expiry": "12/30"});
    let before = pay_as(&client, "dev-1", ("card", 20_000), card()).await;
    assert_eq!((before.status, before.plugins.as_slice()), (Status::Approved, ["card@0.1.0".to_owned()].as_slice()));

    // card 0.1.0 into the store, then again with a lower limit: the second replaces the first.
    let pushed = workdir.path().join("card.wasm");
    std::fs::write(&pushed, wasmpay_plugin_artifacts::CARD).unwrap();
    let mut replies = Vec::new();
    for (limit, id) in [("30000", "dev-2"), ("10000", "dev-3")] {
        let limited = format!("[config]\n\"limit.EUR\" = \"{limit}\"");
        std::fs::write(
            workdir.path().join("card.toml"),
            wasmpay_plugin_artifacts::CARD_MANIFEST.replace("[config]", &limited),
        )
        .unwrap();
        let pushed = plugin_command(&node, &["push", pushed.to_str().unwrap()]);
        assert!(pushed.as_ref().is_ok_and(|printed| printed.contains("card 0.1.0")), "{pushed:?}");
        replies.push(pay_as(&client, id, ("card", 20_000), card()).await);
    }
    assert_eq!(replies[0].status, Status::Approved, "{:?}", replies[0]);
    let over = (replies[1].status, replies[1].reason.as_deref());
    assert_eq!(over, (Status::Declined, Some("amount_over_limit")), "{:?}", replies[1]);
    assert!(replies.iter().all(|reply| reply.plugins == ["card@0.1.0"]), "{replies:?}");
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(log.contains("plugin version replaced in place"), "{log}");

    // The watched directory's manifest, still without `sha256`, rewritten with a higher limit:
    // the next poll installs it, and the payment over the pushed limit is approved again.
    let higher = wasmpay_plugin_artifacts::CARD_MANIFEST.replace("[config]", "[config]\n\"limit.EUR\" = \"30000\"");
    std::fs::write(directory.join("card.toml"), higher).unwrap();
    let started = Instant::now();
    for attempt in 0.. {
        let reply = pay_as(&client, &format!("dev-4-{attempt}"), ("card", 20_000), card()).await;
        if reply.status == Status::Approved {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the directory's manifest was not installed: {reply:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(node);

    let postgres = Backend::Postgres.fresh_database(workdir.path());
    let output = Command::new(BINARY)
        .args(["serve", "--nats", &nats.url(), "--db", &postgres, "--http", "127.0.0.1:0", "--dev"])
        .env("WASMPAY_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && printed.contains("only on a SQLite ledger"), "{printed}");
}

/// Issue 19: the operators' console in a real browser (headless Chromium through its
/// WebDriver) against a running two-node cluster: it signs in with the admin token, shows
/// both members, the plugins with their versions, the payments just made and an account's
/// statement, and rolls `card` back after a confirmation; the other node follows. The
/// screenshots land in the target directory's `console` folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_cluster_and_rolls_a_plugin_back_on_every_node() {
    let stage = Stage::new(Backend::Postgres).await;
    let one = Member::start(&stage.nats, &stage.db, "n1", stage.workdir.path());
    let two = Member::start(&stage.nats, &stage.db, "n2", stage.workdir.path());
    converged(&[&one, &two]).await;
    let v2 = write_v2(stage.workdir.path());
    plugin_command(&one, &["push", v2.to_str().unwrap()]).unwrap();
    all_serve(&[&one, &two], Some("2.0.0")).await;
    let client = connect(&stage.nats.url()).await;
    let partitioner = wasmpay_protocol::routing::Partitioner::new(PARTITIONS).unwrap();
    let retries = std::sync::atomic::AtomicU64::new(0);
    let mut paid_on_one = None;
    for n in 0..8 {
        let id = format!("console-{n}");
        let reply = pay_until_answered(&client, &partitioner, &id, n, &retries).await;
        assert_eq!(reply.status, Status::Approved);
        // The console lists the answers of its own node's partitions.
        let payer = AccountId::new(payer(n)).unwrap();
        let on_one = one.view().await.unwrap().owned.contains(&partitioner.partition_of(&payer));
        if on_one && paid_on_one.is_none() {
            paid_on_one = Some(id);
        }
    }
    let paid_on_one = paid_on_one.expect("n1 owns some of eight payers' partitions");
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&shots).unwrap();

    let browser = browser::Browser::start().await;
    browser.go(&format!("http://{}/", one.http)).await;
    let bound = Duration::from_secs(20);
    browser.wait_for("the sign-in form", "return document.querySelector('#token') !== null", bound).await;
    browser.type_into("#token", "wrong").await;
    browser.click("#login button").await;
    let refused = "return document.querySelector('#login-error').textContent || null";
    assert_eq!(browser.wait_for("a refused token", refused, bound).await, "the token was refused");
    browser.script("document.querySelector('#token').value = ''; return null").await;
    browser.type_into("#token", TOKEN).await;
    browser.click("#login button").await;

    let members = "const rows = [...document.querySelectorAll('#members tbody tr')].map(row => row.dataset.node); \
                   return rows.length === 2 ? rows.sort() : null";
    assert_eq!(browser.wait_for("both members", members, bound).await, serde_json::json!(["n1", "n2"]));
    let owned = "return [...document.querySelectorAll('#members tbody tr td:last-child')].map(cell => Number(cell.textContent))";
    let owned: Vec<u64> = serde_json::from_value(browser.script(owned).await).unwrap();
    assert_eq!(owned.iter().sum::<u64>(), u64::from(PARTITIONS), "every partition has an owner: {owned:?}");
    let cells = "return document.querySelectorAll('#partition-map span').length";
    assert_eq!(browser.script(cells).await, serde_json::json!(PARTITIONS));
    let card = |version: &str| {
        format!(
            "const row = document.querySelector('#plugins tr[data-plugin=card][data-version=\"{version}\"]'); \
                 return row ? row.dataset.state : null"
        )
    };
    assert_eq!(browser.wait_for("card 2.0.0", &card("2.0.0"), bound).await, "active");
    let recent = format!(
        "return document.querySelector('#recent tr[data-payment=\"{paid_on_one}\"] td:nth-child(2)')?.textContent ?? null"
    );
    assert_eq!(browser.wait_for("the payment just made", &recent, bound).await, "approved");
    // Clients paying while the console watches: its charts move.
    let load = Load::start(&stage.nats.url(), 2).await;
    let charted = "const rate = document.querySelector('#rate-now').textContent; \
                   const latency = document.querySelector('#latency-now').textContent; \
                   return rate && rate !== '0.0/s' && latency ? [rate, latency] : null";
    browser.wait_for("the payment rate and latency", charted, bound).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    browser.script("window.scrollTo(0, 0); return null").await;
    browser.screenshot(&shots.join("overview.png")).await;
    let (answered, _) = load.finish().await;
    assert!(!answered.is_empty());

    browser.type_into("#account", &payer(0)).await;
    browser.click("#lookup button").await;
    let balance = "return document.querySelector('#account-balance')?.textContent ?? null";
    let balance = browser.wait_for("an account's balance", balance, bound).await;
    let account: Value = serde_json::from_str(&one.get("/v1/accounts/payer-0").await.unwrap()).unwrap();
    let exact = wasmpay_protocol::money::format_major(account["balance"].as_i64().unwrap(), 2);
    assert!(balance.as_str().unwrap().starts_with(&format!("payer-0: balance {exact} EUR")), "{balance} {account}");
    let statement = "return document.querySelectorAll('#account-view table tr').length";
    assert!(browser.script(statement).await.as_u64().unwrap() >= 3, "a header, the deposit and the payment");
    browser.screenshot(&shots.join("account.png")).await;
    browser.script("window.scrollTo(0, 0); return null").await;

    browser.click("#plugins tr[data-plugin=card][data-state=active] button.rollback").await;
    let asked =
        "const dialog = document.querySelector('#confirm'); return dialog.open ? dialog.textContent.trim() : null";
    let asked = browser.wait_for("the confirmation", asked, bound).await;
    assert!(asked.as_str().unwrap().contains("Roll card back from 2.0.0"), "{asked}");
    browser.screenshot(&shots.join("confirm.png")).await;
    // Cancelling changes nothing.
    browser.click("#confirm-no").await;
    let cancelled = "return document.querySelector('#status').textContent === 'cancelled' || null";
    browser.wait_for("the cancellation", cancelled, bound).await;
    assert_eq!(serving(&two, "card").await.0.as_deref(), Some("2.0.0"));

    browser.click("#plugins tr[data-plugin=card][data-state=active] button.rollback").await;
    browser.wait_for("the confirmation", "return document.querySelector('#confirm').open || null", bound).await;
    browser.click("#confirm-yes").await;
    let done = "const text = document.querySelector('#status').textContent; return text.includes('done on every node') ? text : null";
    browser.wait_for("the rollback's outcome", done, bound).await;
    // The other node followed, and the console shows the version before as active.
    all_serve(&[&one, &two], Some("0.1.0")).await;
    assert_eq!(browser.wait_for("card 0.1.0 active", &card("0.1.0"), bound).await, "active");
    browser.screenshot(&shots.join("rolled-back.png")).await;
    eprintln!("screenshots: {}", shots.display());
}
