//! Loading plugins from files and configuration, with the real components built from source.

use std::collections::BTreeMap;

use super::*;
use crate::settings::PluginSettings;

fn runtime() -> Arc<PluginRuntime> {
    PluginRuntime::new(&SandboxSettings::default()).expect("runtime")
}

fn builtins() -> Vec<PluginSource> {
    vec![
        PluginSource::Builtin("card", wasmpay_plugin_artifacts::CARD),
        PluginSource::Builtin("wallet", wasmpay_plugin_artifacts::WALLET),
    ]
}

fn load(sources: &[PluginSource], plugins: &BTreeMap<String, PluginSettings>) -> Result<Pipelines, PluginError> {
    load_pipelines(&runtime(), sources, plugins, &BTreeMap::new(), &BTreeMap::new())
}

#[test]
fn a_plugin_directory_replaces_the_builtins() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("card.wasm"), wasmpay_plugin_artifacts::CARD).expect("write");
    std::fs::write(dir.path().join("notes.txt"), "not a plugin").expect("write");
    let sources = directory_sources(dir.path()).expect("list");
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
    let error = runtime().load("garbage", b"\0asm not really", &|_| BTreeMap::new()).expect_err("refused");
    assert!(matches!(error, LoadError::Compile { .. }), "{error}");
}

#[test]
fn two_plugins_claiming_one_method_need_a_configured_pipeline() {
    let card = PluginSource::Builtin("card", wasmpay_plugin_artifacts::CARD);
    let sources = [card.clone(), card];
    let error = load(&sources, &BTreeMap::new()).expect_err("duplicate");
    assert!(matches!(error, PluginError::Pipeline(PipelineError::DuplicatePlugin(_))), "{error}");
}

/// Counts calls; the tests' stand-in for the node's metrics.
#[derive(Debug, Default)]
struct Calls(std::sync::atomic::AtomicU64);

impl CallObserver for Calls {
    fn plugin_called(&self, _plugin: &str, _elapsed: std::time::Duration) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn faulty_payment(id: &str, fault: &str) -> PaymentInput {
    let body = format!(
        r#"{{"version":1,"id":"{id}","payer":"alice","payee":"shop","amount":100,"currency":"EUR","method":"faulty","details":{{"fault":"{fault}"}}}}"#
    );
    PaymentInput::new(&wasmpay_protocol::decode(body.as_bytes()).expect("valid request"), 0)
}

/// The `stalling` fixture sleeps in `describe`: loading it must fail at once, not hold up the
/// node's start.
#[test]
fn a_describe_that_sleeps_is_refused_at_load_at_once() {
    let started = std::time::Instant::now();
    let error =
        runtime().load("stalling", wasmpay_plugin_artifacts::STALLING, &|_| BTreeMap::new()).expect_err("refused");
    assert!(matches!(error, LoadError::Describe { .. }), "{error}");
    assert!(error.to_string().contains("wasi:clocks"), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
}

/// Instances live for one payment: a small pool serves many plugins and many payments, and
/// one plugin's traffic cannot starve another (before, warm instances accumulated per worker
/// and plugin until the pool ran dry and every payment failed).
#[test]
fn a_small_pool_serves_many_plugins_and_payments() {
    let settings = SandboxSettings { max_instances: 4, ..SandboxSettings::default() };
    let runtime = PluginRuntime::new(&settings).expect("runtime");
    let plugins: Vec<Arc<LoadedPlugin>> = (0..8)
        .map(|_| {
            Arc::new(runtime.load("faulty", wasmpay_plugin_artifacts::FAULTY, &|_| BTreeMap::new()).expect("load"))
        })
        .collect();
    let calls = Arc::new(Calls::default());
    let mut instances = Instances::new(runtime.clone(), calls.clone());
    for round in 0..5 {
        for plugin in &plugins {
            let pipeline = Pipeline {
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
    let plugin =
        Arc::new(runtime.load("faulty", wasmpay_plugin_artifacts::FAULTY, &|_| BTreeMap::new()).expect("load"));
    let mut instances = Instances::new(runtime.clone(), Arc::new(Calls::default()));
    let pipeline = Pipeline { validators: vec![plugin.clone()], fee_policy: plugin, fee_limit: FeeLimit::default() };
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
