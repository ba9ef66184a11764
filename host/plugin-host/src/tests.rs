//! Loading plugins from files and configuration, with the real components built from source.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::settings::PluginSettings;

fn runtime() -> Arc<PluginRuntime> {
    PluginRuntime::new(&SandboxSettings::default()).expect("runtime")
}

fn builtins() -> Vec<PluginSource> {
    vec![
        PluginSource::Builtin("card", wasmpay_plugin_artifacts::CARD, Some(wasmpay_plugin_artifacts::CARD_MANIFEST)),
        PluginSource::Builtin(
            "wallet",
            wasmpay_plugin_artifacts::WALLET,
            Some(wasmpay_plugin_artifacts::WALLET_MANIFEST),
        ),
    ]
}

/// A plugin loaded without a manifest or configuration.
fn load_bare(runtime: &PluginRuntime, source_name: &str, bytes: &[u8]) -> Result<LoadedPlugin, LoadError> {
    LoadedPlugin::load(runtime, source_name, bytes, &|_| BTreeMap::new())
}

fn load(sources: &[PluginSource], plugins: &BTreeMap<String, PluginSettings>) -> Result<Pipelines, PluginError> {
    load_pipelines(&runtime(), sources, plugins, &BTreeMap::new(), &BTreeMap::new())
}

#[test]
fn a_plugin_directory_replaces_the_builtins() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("card.wasm"), wasmpay_plugin_artifacts::CARD).expect("write");
    std::fs::write(dir.path().join("notes.txt"), "not a plugin").expect("write");
    let sources = directory_sources(dir.path(), false).expect("list");
    let pipelines = load(&sources, &BTreeMap::new()).expect("load");
    assert_eq!(pipelines.methods().collect::<Vec<_>>(), ["card"]);
    let card = pipelines.get("card").expect("card pipeline");
    assert_eq!(card.keys(), ["card@0.1.0"]);
}

#[test]
fn a_configured_path_must_hold_the_named_plugin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("card.wasm");
    std::fs::write(&path, wasmpay_plugin_artifacts::CARD).expect("write");
    let plugins = BTreeMap::from([("wallet".to_owned(), PluginSettings { path: Some(path), config: BTreeMap::new() })]);
    let error = load(&builtins(), &plugins).expect_err("mismatch");
    assert!(matches!(error, PluginError::NameMismatch { .. }), "{error}");
}

#[test]
fn bytes_that_are_not_a_component_are_refused_at_load() {
    let error = load_bare(&runtime(), "garbage", b"\0asm not really").expect_err("refused");
    assert!(matches!(error, LoadError::Compile { .. }), "{error}");
}

#[test]
fn two_plugins_claiming_one_method_need_a_configured_pipeline() {
    let card = PluginSource::Builtin("card", wasmpay_plugin_artifacts::CARD, None);
    let sources = [card.clone(), card];
    let error = load(&sources, &BTreeMap::new()).expect_err("duplicate");
    assert!(matches!(error, PluginError::Pipeline(PipelineError::DuplicatePlugin(_))), "{error}");
}

/// Counts calls; the tests' stand-in for the node's metrics.
#[derive(Debug, Default)]
struct Calls(std::sync::atomic::AtomicU64);

impl CallObserver for Calls {
    fn plugin_called(&self, _plugin: &PluginId, _elapsed: std::time::Duration, _failure: Option<&FailureKind>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn plugin_not_called(&self, _plugin: &PluginId, _failure: &FailureKind) {}
    fn plugin_quarantined(&self, _plugin: &PluginId) {}
}

fn faulty_payment(id: &str, fault: &str) -> PaymentInput {
    let body = format!(
        r#"{{"version":1,"id":"{id}","payer":"alice","payee":"shop","amount":100,"currency":"EUR","method":"faulty","details":{{"fault":"{fault}"}}}}"#
    );
    PaymentInput::new(&wasmpay_protocol::decode(body.as_bytes()).expect("valid request"), 0)
}

/// The `stalling` fixture sleeps a minute in `describe`: loading it must fail at once, not hold
/// up the node's start. The cause proves "at once": its sleep calls `wasi:clocks`, which the
/// sandbox does not offer, so the first call traps (not the call timeout, and not the minute).
/// The time bound only rules the minute out: it also counts compiling the component, which on a
/// loaded 2-core machine took over a second in a debug build.
#[test]
fn a_describe_that_sleeps_is_refused_at_load_at_once() {
    let started = std::time::Instant::now();
    let error = load_bare(&runtime(), "stalling", wasmpay_plugin_artifacts::STALLING).expect_err("refused");
    assert!(matches!(error, LoadError::Describe { .. }), "{error}");
    assert!(error.to_string().contains("wasi:clocks"), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
}

/// Instances live for one payment: a small pool serves many plugins and many payments, and
/// one plugin's traffic cannot starve another (before, warm instances accumulated per worker
/// and plugin until the pool ran dry and every payment failed).
#[test]
fn a_small_pool_serves_many_plugins_and_payments() {
    let settings = SandboxSettings { max_instances: 4, ..SandboxSettings::default() };
    let runtime = PluginRuntime::new(&settings).expect("runtime");
    let plugins: Vec<Arc<LoadedPlugin>> = (0..8)
        .map(|_| Arc::new(load_bare(&runtime, "faulty", wasmpay_plugin_artifacts::FAULTY).expect("load")))
        .collect();
    let calls = Arc::new(Calls::default());
    let mut instances = Instances::new(runtime.clone(), calls.clone());
    for round in 0..5 {
        for plugin in &plugins {
            let pipeline = Pipeline {
                share: runtime.shares.of("faulty"),
                validators: vec![plugin.clone()],
                fee_policy: plugin.clone(),
                fee_limit: FeeLimit::default(),
            };
            let verdict = instances.run(&pipeline, &faulty_payment(&format!("p-{round}"), "none"));
            assert!(matches!(verdict, Ok(Verdict::Priced(_))), "{verdict:?}");
            instances.replenish(&pipeline);
        }
    }
    assert_eq!(calls.0.load(std::sync::atomic::Ordering::Relaxed), 5 * 8 * 2);
}

/// Records when each call ran, to see how many of one plugin's calls overlapped.
#[derive(Debug, Default)]
struct Spans(std::sync::Mutex<Vec<(std::time::Instant, std::time::Instant)>>);

impl CallObserver for Spans {
    fn plugin_called(&self, _plugin: &PluginId, elapsed: std::time::Duration, _failure: Option<&FailureKind>) {
        let ended = std::time::Instant::now();
        self.0.lock().expect("spans").push((ended - elapsed, ended));
    }

    fn plugin_not_called(&self, _plugin: &PluginId, _failure: &FailureKind) {}
    fn plugin_quarantined(&self, _plugin: &PluginId) {}
}

impl Spans {
    /// The most calls that ran at one time.
    fn most_at_once(&self) -> usize {
        let spans = self.0.lock().expect("spans");
        spans
            .iter()
            .map(|(start, _)| spans.iter().filter(|(from, to)| from <= start && start < to).count())
            .max()
            .unwrap_or(0)
    }
}

/// Payments of a method whose plugin is slow but legal, on four partitions at once: at most
/// `method_threads` of them run plugins at a time, whatever the number of busy partitions,
/// so other methods keep a core (without the bound, all four ran at once, each on its own
/// thread, and the operating system shared the cores among them all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_method_runs_at_most_its_share_of_calls_at_once() {
    for threads in [1, 2] {
        let settings = SandboxSettings { method_threads: Some(threads), ..SandboxSettings::default() };
        let runtime = PluginRuntime::new(&settings).expect("runtime");
        let plugin = Arc::new(load_bare(&runtime, "faulty", wasmpay_plugin_artifacts::FAULTY).expect("load"));
        let pipeline = Pipeline {
            share: runtime.shares.of("faulty"),
            validators: vec![plugin.clone()],
            fee_policy: plugin,
            fee_limit: FeeLimit::default(),
        };
        let spans = Arc::new(Spans::default());
        let partitions: Vec<_> = (0..4).map(|partition| {
            let (pipeline, spans, runtime) = (pipeline.clone(), spans.clone(), runtime.clone());
            tokio::spawn(async move {
                let mut instances = Instances::new(runtime, spans);
                let body = format!(
                    r#"{{"version":1,"id":"slow-{partition}","payer":"alice","payee":"shop","amount":100,"currency":"EUR","method":"faulty","details":{{"fault":"work","iterations":"20000000"}}}}"#
                );
                let input = PaymentInput::new(&wasmpay_protocol::decode(body.as_bytes()).expect("valid request"), 0);
                instances.run_payment(pipeline, input).await
            })
        }).collect();
        for partition in partitions {
            assert!(matches!(partition.await.expect("task"), Ok(Verdict::Priced(_))));
        }
        assert_eq!(spans.most_at_once(), threads, "calls of one method running at once");
    }
}

/// Records the thread each counted call ran on.
#[derive(Debug, Default)]
struct Threads(std::sync::Mutex<Vec<std::thread::ThreadId>>);

impl CallObserver for Threads {
    fn plugin_called(&self, _plugin: &PluginId, _elapsed: std::time::Duration, failure: Option<&FailureKind>) {
        assert!(failure.is_none(), "{failure:?}");
        self.0.lock().expect("threads").push(std::thread::current().id());
    }

    fn plugin_not_called(&self, _plugin: &PluginId, failure: &FailureKind) {
        panic!("not called: {failure:?}");
    }

    fn plugin_quarantined(&self, _plugin: &PluginId) {}
}

/// A payment's plugins run on the partition's own thread while their calls fit its small
/// budget; a call that outgrows it is stopped uncounted, and the payment is decided again on a
/// plugin thread with the full budget, unharmed; the version's next calls then go to a plugin
/// thread at once (`inline`).
#[tokio::test(flavor = "current_thread")]
async fn plugins_run_on_the_partitions_thread_until_a_call_outgrows_its_budget() {
    let runtime = runtime();
    let plugin = Arc::new(load_bare(&runtime, "faulty", wasmpay_plugin_artifacts::FAULTY).expect("load"));
    let pipeline = Pipeline {
        share: runtime.shares.of("faulty"),
        validators: vec![plugin.clone()],
        fee_policy: plugin.clone(),
        fee_limit: FeeLimit::default(),
    };
    let threads = Arc::new(Threads::default());
    let mut instances = Instances::new(runtime.clone(), threads.clone());
    let here = std::thread::current().id();
    let calls_on = |ran: &[std::thread::ThreadId], thread| ran.iter().filter(|id| **id == thread).count();
    for index in 0..3 {
        let verdict = instances.run_payment(pipeline.clone(), faulty_payment(&format!("quick-{index}"), "none")).await;
        assert!(matches!(verdict, Ok(Verdict::Priced(_))), "{verdict:?}");
    }
    assert_eq!(calls_on(&threads.0.lock().expect("threads"), here), 6, "validate and quote-fee, three times, here");
    let body = r#"{"version":1,"id":"slow","payer":"alice","payee":"shop","amount":100,"currency":"EUR","method":"faulty","details":{"fault":"work","iterations":"1000000"}}"#;
    let slow = PaymentInput::new(&wasmpay_protocol::decode(body.as_bytes()).expect("valid request"), 0);
    let verdict = instances.run_payment(pipeline.clone(), slow).await;
    assert!(matches!(verdict, Ok(Verdict::Priced(_))), "{verdict:?}");
    let ran = threads.0.lock().expect("threads").clone();
    assert_eq!(ran.len(), 8, "the stopped call is not counted: {ran:?}");
    assert!(ran[6..].iter().all(|id| *id != here), "decided again on a plugin thread: {ran:?}");
    assert_eq!(plugin.health.view().failures, 0, "outgrowing the budget is not a failure");
    let verdict = instances.run_payment(pipeline, faulty_payment("quick-after", "none")).await;
    assert!(matches!(verdict, Ok(Verdict::Priced(_))), "{verdict:?}");
    let ran = threads.0.lock().expect("threads").clone();
    assert!(ran[8..].iter().all(|id| *id != here), "the version's next calls go to a plugin thread: {ran:?}");
}

/// Collects what the `fmt` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The `forge` fault logs a thousand lines that each carry a newline and a fake host line:
/// the host writes at most its per-call budget, each as one line naming the payment.
#[test]
fn plugin_log_lines_are_bounded_single_lines_that_name_the_payment() {
    let runtime = runtime();
    let plugin = Arc::new(load_bare(&runtime, "faulty", wasmpay_plugin_artifacts::FAULTY).expect("load"));
    let mut instances = Instances::new(runtime.clone(), Arc::new(Calls::default()));
    let pipeline = Pipeline {
        share: runtime.shares.of("faulty"),
        validators: vec![plugin.clone()],
        fee_policy: plugin,
        fee_limit: FeeLimit::default(),
    };
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
    let verdict = tracing::subscriber::with_default(subscriber, || {
        instances.run(&pipeline, &faulty_payment("forger-1", "forge"))
    });
    assert!(matches!(verdict, Ok(Verdict::Priced(_))), "{verdict:?}");
    let text =
        String::from_utf8(captured.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 32, "{text}");
    for line in lines {
        assert!(
            line.contains(r#"payment="forger-1""#) && line.contains("ok\\nERROR wasmpay: ledger corrupted"),
            "{line}"
        );
    }
}

fn manifest_of(text: &str, bytes: &[u8]) -> Manifest {
    Manifest { sha256: Some(Sha256::of(bytes)), ..Manifest::parse(text).expect("manifest") }
}

fn host(settings: &SandboxSettings) -> PluginHost {
    let runtime = PluginRuntime::new(settings).expect("runtime");
    PluginHost::start(runtime, &builtins(), &BTreeMap::new(), &BTreeMap::new(), &BTreeMap::new()).expect("start")
}

fn card_key(host: &PluginHost) -> Vec<String> {
    host.pipelines().get("card").expect("card is served").keys()
}

#[test]
fn a_new_version_switches_in_and_rolls_back_without_loading_again() {
    let host = host(&SandboxSettings::default());
    let before = host.pipelines();
    let v2 = manifest_of(wasmpay_plugin_artifacts::CARD_V2_MANIFEST, wasmpay_plugin_artifacts::CARD_V2);
    let switched = host.install(&v2, wasmpay_plugin_artifacts::CARD_V2, Origin::Cluster).expect("v2 passes");
    assert_eq!(switched.active.as_deref(), Some("card@2.0.0"));
    assert_eq!(switched.previous.as_deref(), Some("card@0.1.0"));
    assert_eq!(card_key(&host), ["card@2.0.0"]);
    // A payment that took its snapshot before the switch finishes on the version it started with.
    assert_eq!(before.get("card").expect("card").keys(), ["card@0.1.0"]);
    let versions = host.runtime().census().versions();
    let v1 = host.manifest("card", "0.1.0").expect("v1 is retained with its manifest");
    let rolled_back = host.reuse(&v1, Origin::Builtin).expect("v1 is loaded").expect("switched");
    assert_eq!(rolled_back.active.as_deref(), Some("card@0.1.0"));
    assert_eq!(card_key(&host), ["card@0.1.0"]);
    // Installing v2 again reuses the loaded version.
    host.install(&v2, wasmpay_plugin_artifacts::CARD_V2, Origin::Cluster).expect("v2 again");
    assert_eq!(host.runtime().census().versions(), versions, "nothing was loaded again");
    let card = host.status().into_iter().find(|status| status.name == "card").expect("card status");
    let states: Vec<(String, VersionState)> =
        card.versions.iter().map(|version| (version.version.clone(), version.state)).collect();
    assert_eq!(states, [("2.0.0".into(), VersionState::Active), ("0.1.0".into(), VersionState::Retained)]);
    assert!(card.versions.iter().all(|version| version.checked));
}

#[test]
fn a_bad_version_is_refused_and_the_serving_one_stays() {
    let host = host(&SandboxSettings::default());
    let v2 = manifest_of(wasmpay_plugin_artifacts::CARD_V2_MANIFEST, wasmpay_plugin_artifacts::CARD_V2);
    let refused = |manifest: &Manifest, bytes: &[u8]| {
        let error = host.install(manifest, bytes, Origin::Cluster).expect_err("refused");
        assert_eq!(card_key(&host), ["card@0.1.0"], "{error}");
        error
    };
    // Bytes that are not the ones the manifest names.
    let wrong_hash = Manifest { sha256: Some(Sha256::of(b"other")), ..v2.clone() };
    assert_eq!(refused(&wrong_hash, wasmpay_plugin_artifacts::CARD_V2).code(), "hash_mismatch");
    // A manifest promising another version than the component says it is.
    let other_version = Manifest { version: "2.0.1".into(), ..v2.clone() };
    assert_eq!(refused(&other_version, wasmpay_plugin_artifacts::CARD_V2).code(), "manifest_mismatch");
    // v2's component with v1's fixtures (2.9 % + 0.25 where v2 charges 1 % + 0.10).
    let v1 = Manifest::parse(wasmpay_plugin_artifacts::CARD_MANIFEST).expect("v1 manifest");
    let failing = Manifest { fixtures: v1.fixtures.clone(), ..v2.clone() };
    let error = refused(&failing, wasmpay_plugin_artifacts::CARD_V2);
    assert_eq!(error.code(), "self_test_failed", "{error}");
    assert!(error.to_string().contains("2.9 %"), "{error}");
    // The first failure says how the others went.
    assert!(error.to_string().contains("(0 of 3 fixtures passed, 3 failed)"), "{error}");
    // A component that traps in `describe`.
    let trapping = Manifest {
        name: "bad".into(),
        ..manifest_of(wasmpay_plugin_artifacts::CARD_V2_MANIFEST, wasmpay_plugin_artifacts::BAD_DESCRIBE)
    };
    assert_eq!(refused(&trapping, wasmpay_plugin_artifacts::BAD_DESCRIBE).code(), "describe_failed");
    let card = host.status().into_iter().find(|status| status.name == "card").expect("card status");
    assert_eq!(card.refused.map(|refusal| refusal.code), Some("self_test_failed".to_owned()));
    assert_eq!(card.versions.len(), 1);
}

/// Twenty switches between two versions, with payments on each: the versions and instances
/// alive afterwards are what one version needs, not what twenty did.
#[test]
fn switching_versions_many_times_holds_no_more_than_one_switch_did() {
    let host = host(&SandboxSettings { max_instances: 16, ..SandboxSettings::default() });
    let v2 = manifest_of(wasmpay_plugin_artifacts::CARD_V2_MANIFEST, wasmpay_plugin_artifacts::CARD_V2);
    let mut instances = Instances::new(host.runtime().clone(), Arc::new(Calls::default()));
    let pay = |instances: &mut Instances, round: usize| {
        let body = format!(
            r#"{{"version":1,"id":"p-{round}","payer":"alice","payee":"shop","amount":10000,"currency":"EUR","method":"card","details":{{"pan":"4242 4242 4242 4242","expiry":"12/30"}}}}"#
        );
        let input = PaymentInput::new(&wasmpay_protocol::decode(body.as_bytes()).expect("valid"), 0);
        let pipeline = host.pipelines().get("card").expect("card").clone();
        let verdict = instances.run(&pipeline, &input).expect("decided");
        instances.replenish(&pipeline);
        verdict
    };
    let v1 = host.manifest("card", "0.1.0").expect("v1 manifest");
    let mut after_first = None;
    for round in 0..20 {
        host.install(&v2, wasmpay_plugin_artifacts::CARD_V2, Origin::Cluster).expect("v2");
        assert!(matches!(pay(&mut instances, round), Verdict::Priced(CheckedFee { total: 110, .. })));
        host.reuse(&v1, Origin::Builtin).expect("v1 is loaded").expect("rollback");
        assert!(matches!(pay(&mut instances, round), Verdict::Priced(CheckedFee { total: 315, .. })));
        let census = host.runtime().census();
        let now = (census.versions(), census.instances());
        assert!(
            now <= *after_first.get_or_insert(now),
            "round {round}: {now:?} alive, {after_first:?} after the first"
        );
    }
}

/// A version that fails most of its calls is quarantined: its method is refused at once,
/// without calling it, until it is activated again.
#[test]
fn a_failing_version_is_quarantined_until_reactivated() {
    let settings = SandboxSettings {
        quarantine: QuarantineSettings { failure_percent: 50, window_ms: 60_000, min_calls: 4 },
        ..SandboxSettings::default()
    };
    let runtime = PluginRuntime::new(&settings).expect("runtime");
    const FAULTY_MANIFEST: &str = "name = \"faulty\"\nversion = \"0.1.0\"\nmethods = [\"faulty\"]\n";
    let sources = [PluginSource::Builtin("faulty", wasmpay_plugin_artifacts::FAULTY, Some(FAULTY_MANIFEST))];
    let host =
        PluginHost::start(runtime, &sources, &BTreeMap::new(), &BTreeMap::new(), &BTreeMap::new()).expect("start");
    let calls = Arc::new(Calls::default());
    let mut instances = Instances::new(host.runtime().clone(), calls.clone());
    let pipeline = host.pipelines().get("faulty").expect("faulty").clone();
    for round in 0..4 {
        let failure = instances.run(&pipeline, &faulty_payment(&format!("t-{round}"), "trap")).expect_err("traps");
        assert!(matches!(failure.kind, FailureKind::Trap(_)), "{failure}");
    }
    let called = calls.0.load(std::sync::atomic::Ordering::Relaxed);
    let failure = instances.run(&pipeline, &faulty_payment("t-4", "none")).expect_err("quarantined");
    assert!(matches!(failure.kind, FailureKind::Quarantined(_)), "{failure}");
    assert_eq!(calls.0.load(std::sync::atomic::Ordering::Relaxed), called, "a quarantined version is not called");
    let status = host.status();
    assert_eq!(status[0].versions[0].state, VersionState::Quarantined);
    // Re-enabled as the cluster does it: the serving manifest again.
    let manifest = host.manifest("faulty", "0.1.0").expect("manifest");
    host.reuse(&manifest, Origin::Builtin).expect("loaded").expect("re-enabled");
    assert!(matches!(instances.run(&pipeline, &faulty_payment("t-5", "none")), Ok(Verdict::Priced(_))));
}

/// A restart loads compiled plugins from the cache instead of compiling them again.
#[test]
fn compiled_plugins_are_cached_on_disk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = SandboxSettings { cache_dir: Some(dir.path().to_owned()), ..SandboxSettings::default() };
    let load = || {
        let runtime = PluginRuntime::new(&settings).expect("runtime");
        let plugin = load_bare(&runtime, "card", wasmpay_plugin_artifacts::CARD).expect("load");
        plugin.key().to_owned()
    };
    assert_eq!(load(), "card@0.1.0");
    let entries: Vec<_> = std::fs::read_dir(dir.path()).expect("list").filter_map(Result::ok).collect();
    assert_eq!(entries.len(), 1);
    let entry = entries[0].path();
    let written = std::fs::metadata(&entry).and_then(|metadata| metadata.modified()).expect("mtime");
    // The second load reads the entry: it does not compile and write it again.
    assert_eq!(load(), "card@0.1.0");
    assert_eq!(std::fs::metadata(&entry).and_then(|metadata| metadata.modified()).expect("mtime"), written);
    // The card's entry copied under the wallet's name is not run as the wallet.
    let file_name = entry.file_name().and_then(|name| name.to_str()).expect("name").to_owned();
    let engine_hash = file_name.rsplit('-').next().expect("engine hash");
    let wallet_name = format!("{}-{engine_hash}", Sha256::of(wasmpay_plugin_artifacts::WALLET));
    std::fs::copy(&entry, dir.path().join(wallet_name)).expect("copy");
    let runtime = PluginRuntime::new(&settings).expect("runtime");
    let wallet = load_bare(&runtime, "wallet", wasmpay_plugin_artifacts::WALLET).expect("load");
    assert_eq!(wallet.key(), "wallet@0.1.0");
    // A corrupt entry is compiled again, not run.
    let mut bytes = std::fs::read(&entry).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&entry, &bytes).expect("write");
    assert_eq!(load(), "card@0.1.0");
    assert_ne!(std::fs::read(&entry).expect("read"), bytes, "the corrupt entry was replaced");
    assert_eq!(load(), "card@0.1.0");
}

/// A cache directory that cannot be opened (here a file stands where its parent should be)
/// only costs compiles: the runtime goes without it and plugins load (before, the runtime,
/// and with it `serve`, refused to start).
#[test]
fn an_unusable_cache_directory_is_skipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"").expect("write");
    let settings = SandboxSettings { cache_dir: Some(file.join("cache")), ..SandboxSettings::default() };
    let runtime = PluginRuntime::new(&settings).expect("a runtime without its cache");
    assert!(runtime.cache.is_none());
    let plugin = load_bare(&runtime, "card", wasmpay_plugin_artifacts::CARD).expect("load");
    assert_eq!(plugin.key(), "card@0.1.0");
}

fn configured(pairs: &[(&str, &str, &str)]) -> BTreeMap<String, PluginSettings> {
    let mut plugins: BTreeMap<String, PluginSettings> = BTreeMap::new();
    for (plugin, key, value) in pairs {
        plugins.entry((*plugin).to_owned()).or_default().config.insert((*key).to_owned(), (*value).to_owned());
    }
    plugins
}

/// A validator and a fee policy built with the SDK's single-role macros (`export_validator!`,
/// `export_fee_policy!`) load with exactly their role, and a configured pipeline runs them in
/// turn.
#[test]
fn single_role_plugins_built_with_the_sdk_form_a_configured_pipeline() {
    let sources = [
        PluginSource::Builtin("screen", wasmpay_plugin_artifacts::SCREEN, None),
        PluginSource::Builtin("flat-fee", wasmpay_plugin_artifacts::FLAT_FEE, None),
    ];
    let methods = BTreeMap::from([(
        "screened".to_owned(),
        MethodSettings { validators: vec!["screen".into()], fee: "flat-fee".into() },
    )]);
    let runtime = runtime();
    let plugins = configured(&[("screen", "deny", "mallory, eve"), ("flat-fee", "fee", "40")]);
    let pipelines = load_pipelines(&runtime, &sources, &plugins, &methods, &BTreeMap::new()).expect("load");
    let roles: Vec<(bool, bool, bool, bool)> = pipelines
        .plugins()
        .iter()
        .map(|plugin| {
            let info = plugin.info();
            (info.validates, info.quotes_fees, info.prices_refunds, info.quotes_rates)
        })
        .collect();
    assert_eq!(roles, [(true, false, false, false), (false, true, true, false)]);
    let pipeline = pipelines.get("screened").expect("the configured method").clone();
    assert_eq!(pipeline.keys(), ["screen@0.1.0", "flat-fee@0.1.0"]);
    let mut instances = Instances::new(runtime, Arc::new(Calls::default()));
    let pay = |payer: &str| {
        let body = format!(
            r#"{{"version":1,"id":"s-{payer}","payer":"{payer}","payee":"shop","amount":1000,"currency":"EUR","method":"screened"}}"#
        );
        PaymentInput::new(&wasmpay_protocol::decode(body.as_bytes()).expect("valid request"), 0)
    };
    let verdict = instances.run(&pipeline, &pay("alice")).expect("decided");
    assert_eq!(verdict, Verdict::Priced(CheckedFee { total: 40, bearer: wasmpay_protocol::money::FeeBearer::Payer }));
    match instances.run(&pipeline, &pay("eve")).expect("decided") {
        Verdict::Declined(rejection) => {
            assert_eq!((rejection.plugin.as_str(), rejection.code.as_str()), ("screen@0.1.0", "payer_denied"))
        }
        other => panic!("expected a decline, got {other:?}"),
    }
}

/// The FX plugin built with `export_fx!` serves no method, quotes a pair of its table with
/// the markup applied, and declines one it does not quote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fx_plugin_quotes_its_table() {
    let fx = PluginSource::Builtin("fx-table", wasmpay_plugin_artifacts::FX_TABLE, None);
    let runtime = runtime();
    let plugins = configured(&[("fx-table", "EUR/USD", "1.0832"), ("fx-table", "markup_bps", "50")]);
    let pipelines = load_pipelines(&runtime, &[fx], &plugins, &BTreeMap::new(), &BTreeMap::new()).expect("load");
    assert_eq!(pipelines.methods().count(), 0, "an FX plugin serves no method");
    let fx_pipeline = pipelines.fx().expect("the FX plugin").clone();
    assert_eq!(fx_pipeline.key(), "fx-table@0.1.0");
    let mut instances = Instances::new(runtime.clone(), Arc::new(Calls::default()));
    let (eur, usd, gbp) = ("EUR".parse().expect("EUR"), "USD".parse().expect("USD"), "GBP".parse().expect("GBP"));
    let quoted = instances.quote_rate_blocking(fx_pipeline.clone(), RateInput::new("x-1", eur, usd, 10_000, 0)).await;
    assert_eq!(
        quoted.map(|verdict| format!("{verdict:?}")),
        Ok("Quoted(Rate { mantissa: 1077784, scale: 6 })".to_owned())
    );
    match instances.quote_rate_blocking(fx_pipeline, RateInput::new("x-2", eur, gbp, 10_000, 0)).await {
        Ok(RateVerdict::Declined(rejection)) => assert_eq!(rejection.code, "pair_not_quoted"),
        other => panic!("expected a decline, got {other:?}"),
    }
}

#[test]
fn the_contract_version_is_the_wit_packages() {
    let worlds = include_str!("../../../wit/worlds.wit");
    assert!(worlds.starts_with(&format!("package wasmpay:plugin@{CONTRACT_VERSION};")), "{worlds}");
}
