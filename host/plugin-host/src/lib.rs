//! # wasmpay-plugin-host
//!
//! Payment-method plugins: WebAssembly components, built against `wit/`, that validate and
//! price payments, run by wasmtime in a sandbox. This crate knows the plugin contract and the
//! wire types of `wasmpay-protocol`; it knows nothing of NATS, HTTP or the ledger.
//!
//! Layout (dependencies point down the list):
//! - `instances`: running a pipeline, one fresh instance per plugin per payment.
//! - `pipeline`: which plugins decide each payment method, and its fee bound.
//! - `catalog`: loading a plugin version and checking what it says it is.
//! - `contract`: what a plugin may answer (shapes, caps, fee checks).
//! - `sandbox`: engine, linker, limits, store data, denied imports, epoch ticker.
//! - `logs`: plugin log lines: escaped, capped, rate limited.
//! - `bindings`: the `wasmpay:plugin` world, generated; private.
//! - `settings`: what an operator configures (limits, plugin files and config, pipelines).

mod bindings;
mod catalog;
mod contract;
mod instances;
mod logs;
mod pipeline;
mod sandbox;
mod settings;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use wasmtime::Engine;
use wasmtime::component::Linker;

pub use catalog::{LoadError, LoadedPlugin};
pub use contract::{CheckedFee, PluginInfo};
pub use instances::{CallObserver, FailureKind, Instances, PaymentInput, PluginFailure, PluginRejection, Verdict};
pub use pipeline::{Pipeline, PipelineError, Pipelines};
pub use settings::{FeeLimit, MethodSettings, PluginSettings, SandboxSettings};

use sandbox::{EpochTicker, Limits, PluginState};

/// The engine, linker and limits shared by every plugin of a node.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<PluginState>,
    limits: Limits,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// The runtime could not be set up, or the configured plugins could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The engine or linker could not be built.
    #[error("plugin runtime: {0}")]
    Runtime(String),
    /// A plugin file could not be read.
    #[error("cannot read plugin {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A plugin failed to load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A configured `[plugins.<name>] path` holds a plugin with another name.
    #[error("{path} describes itself as `{described}`, not `{configured}`")]
    NameMismatch {
        /// The file.
        path: std::path::PathBuf,
        /// The name in the configuration.
        configured: String,
        /// The name the plugin gave.
        described: String,
    },
    /// The pipelines do not fit the plugins.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl PluginRuntime {
    /// Builds the engine and linker and starts the epoch ticker.
    pub fn new(settings: &SandboxSettings) -> Result<Arc<PluginRuntime>, PluginError> {
        let limits = Limits::from_settings(settings);
        let runtime_error = |error: wasmtime::Error| PluginError::Runtime(describe_error(&error));
        let engine = sandbox::engine(&limits).map_err(runtime_error)?;
        let linker = sandbox::linker(&engine).map_err(runtime_error)?;
        let ticker = EpochTicker::start(engine.clone()).map_err(|error| PluginError::Runtime(error.to_string()))?;
        Ok(Arc::new(PluginRuntime { engine, linker, limits, _ticker: ticker }))
    }
}

/// Where a plugin's component comes from.
#[derive(Clone, Debug)]
pub enum PluginSource {
    /// Compiled into the binary.
    Builtin(&'static str, &'static [u8]),
    /// A file.
    File(std::path::PathBuf),
}

/// Every `*.wasm` file in `directory`, sorted by name.
pub fn directory_sources(directory: &std::path::Path) -> Result<Vec<PluginSource>, PluginError> {
    let read_error = |source| PluginError::Read { path: directory.to_owned(), source };
    let mut files: Vec<_> = std::fs::read_dir(directory)
        .map_err(read_error)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "wasm"))
        .collect();
    files.sort();
    Ok(files.into_iter().map(PluginSource::File).collect())
}

/// Loads `sources` plus every plugin with a `path` in `plugins`, and builds the pipelines of
/// `methods` (by default each plugin serves the methods it describes) with their
/// `fee_limits`.
pub fn load_pipelines(
    runtime: &PluginRuntime,
    sources: &[PluginSource],
    plugins: &BTreeMap<String, PluginSettings>,
    methods: &BTreeMap<String, MethodSettings>,
    fee_limits: &BTreeMap<String, FeeLimit>,
) -> Result<Pipelines, PluginError> {
    let config_of = |name: &str| plugins.get(name).map(|settings| settings.config.clone()).unwrap_or_default();
    let mut loaded: Vec<Arc<LoadedPlugin>> = Vec::new();
    for source in sources {
        let plugin = match source {
            PluginSource::Builtin(name, bytes) => runtime.load(&format!("builtin:{name}"), bytes, &config_of)?,
            PluginSource::File(path) => load_file(runtime, path, &config_of)?,
        };
        loaded.push(Arc::new(plugin));
    }
    for (name, settings) in plugins {
        if let Some(path) = &settings.path {
            let plugin = load_file(runtime, path, &config_of)?;
            if plugin.info().name != *name {
                return Err(PluginError::NameMismatch {
                    path: path.clone(),
                    configured: name.clone(),
                    described: plugin.info().name.clone(),
                });
            }
            // A configured path replaces a built-in plugin of the same name.
            loaded.retain(|other| other.info().name != *name);
            loaded.push(Arc::new(plugin));
        }
    }
    Ok(Pipelines::build(loaded, methods, fee_limits)?)
}

fn load_file(
    runtime: &PluginRuntime,
    path: &std::path::Path,
    config_of: &dyn Fn(&str) -> BTreeMap<String, String>,
) -> Result<LoadedPlugin, PluginError> {
    let bytes = std::fs::read(path).map_err(|source| PluginError::Read { path: path.to_owned(), source })?;
    Ok(runtime.load(&path.display().to_string(), &bytes, config_of)?)
}

/// The node's current plugin set. Payments take a snapshot (`Arc<Pipelines>`) and finish on it,
/// so replacing the set never disturbs a payment in flight.
#[derive(Debug)]
pub struct PluginHost {
    runtime: Arc<PluginRuntime>,
    current: RwLock<Arc<Pipelines>>,
}

impl PluginHost {
    /// A host serving `pipelines`.
    pub fn new(runtime: Arc<PluginRuntime>, pipelines: Pipelines) -> PluginHost {
        PluginHost { runtime, current: RwLock::new(Arc::new(pipelines)) }
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<PluginRuntime> {
        &self.runtime
    }

    /// A snapshot of the current pipelines.
    pub fn pipelines(&self) -> Arc<Pipelines> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// One line for a wasmtime error: its chain of causes, without the wasm backtrace wasmtime
/// adds as a context (multi-line, and of no use to a client).
fn describe_error(error: &wasmtime::Error) -> String {
    let causes: Vec<String> = error
        .chain()
        .map(|cause| cause.to_string())
        .filter(|text| !text.starts_with("error while executing at wasm backtrace"))
        .map(|text| text.lines().next().unwrap_or_default().to_owned())
        .collect();
    if causes.is_empty() { format!("{error}").lines().next().unwrap_or_default().to_owned() } else { causes.join(": ") }
}

#[cfg(test)]
mod tests;
