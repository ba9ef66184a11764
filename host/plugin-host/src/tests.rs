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
    load_pipelines(&runtime(), sources, plugins, &BTreeMap::new())
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
