//! # wasmpay-plugin-host
//!
//! Payment-method plugins: WebAssembly components, built against `wit/`, that validate and
//! price payments, run by wasmtime in a sandbox. This crate knows the plugin contract and the
//! wire types of `wasmpay-protocol`; it knows nothing of NATS, HTTP or the ledger.
//!
//! Layout (dependencies point down the list):
//! - `lifecycle`: the node's plugin set over time: activation, rollback, removal, status.
//! - `selftest`: a version's bundled fixtures, run before it may serve.
//! - `instances`: running a pipeline, one fresh instance per plugin per payment.
//! - `pipeline`: which plugins decide each payment method, and its fee bound.
//! - `catalog`: loading a plugin version and checking it against the contract and its
//!   manifest; `cache`: compiled code kept on disk.
//! - `manifest`: what an operator states about a version (hash, methods, config, fixtures).
//! - `health`: calls, failures, latency and quarantine of each version.
//! - `contract`: what a plugin may answer (shapes, caps, fee checks).
//! - `sandbox`: engine, linker, limits, store data, denied imports, epoch ticker.
//! - `census`: how many versions and instances are alive.
//! - `logs`: plugin log lines: escaped, capped, rate limited.
//! - `bindings`: the `wasmpay:plugin` world, generated; private.
//! - `settings`: what an operator configures (limits, plugin files and config, pipelines).

mod bindings;
mod cache;
mod catalog;
mod census;
mod contract;
mod health;
mod instances;
mod lifecycle;
mod logs;
pub mod manifest;
mod pipeline;
mod sandbox;
mod selftest;
mod settings;

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::component::Linker;

pub use catalog::{ActivationError, LoadError, LoadedPlugin};
pub use census::Census;
pub use contract::{CheckedFee, PluginInfo};
pub use health::HealthView;
pub use instances::{CallObserver, FailureKind, Instances, PaymentInput, PluginFailure, PluginRejection, Verdict};
pub use lifecycle::{Origin, PluginHost, PluginStatus, Refusal, Switched, VersionState, VersionStatus};
pub use manifest::Manifest;
pub use pipeline::{Pipeline, PipelineError, Pipelines};
pub use settings::{FeeLimit, MethodSettings, PluginSettings, QuarantineSettings, SandboxSettings};

use cache::CompiledCache;
use sandbox::{EpochTicker, Limits, PluginState};

/// The engine, linker and limits shared by every plugin of a node.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<PluginState>,
    limits: Limits,
    quarantine: QuarantineSettings,
    census: Census,
    cache: Option<CompiledCache>,
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
    /// A plugin failed its checked activation.
    #[error("{source_name}: {error}")]
    Activation {
        /// Where it came from.
        source_name: String,
        /// Why.
        error: ActivationError,
    },
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
        let cache = match &settings.cache_dir {
            Some(directory) => Some(
                CompiledCache::open(directory, &engine)
                    .map_err(|source| PluginError::Read { path: directory.clone(), source })?,
            ),
            None => None,
        };
        let ticker = EpochTicker::start(engine.clone()).map_err(|error| PluginError::Runtime(error.to_string()))?;
        Ok(Arc::new(PluginRuntime {
            engine,
            linker,
            limits,
            quarantine: settings.quarantine,
            census: Census::default(),
            cache,
            _ticker: ticker,
        }))
    }

    /// Live versions and instances.
    pub fn census(&self) -> &Census {
        &self.census
    }
}

/// Where a plugin's component comes from.
#[derive(Clone, Debug)]
pub enum PluginSource {
    /// Compiled into the binary: its name, bytes and manifest (whose `sha256` is filled in
    /// from the bytes: the build made them).
    Builtin(&'static str, &'static [u8], Option<&'static str>),
    /// A file, with its manifest beside it (`card.wasm`, `card.toml`) if there is one.
    File(std::path::PathBuf),
}

impl PluginSource {
    /// Reads the component and its manifest.
    fn read(&self) -> Result<(String, Vec<u8>, Option<Manifest>), PluginError> {
        match self {
            PluginSource::Builtin(name, bytes, manifest) => {
                let source_name = format!("builtin:{name}");
                let manifest = manifest
                    .map(Manifest::parse)
                    .transpose()
                    .map_err(|error| ActivationError::Manifest(error).at(&source_name))?
                    .map(|manifest| Manifest { sha256: Some(manifest::sha256_hex(bytes)), ..manifest });
                Ok((source_name, bytes.to_vec(), manifest))
            }
            PluginSource::File(path) => {
                let read = |path: &std::path::Path| {
                    std::fs::read(path).map_err(|source| PluginError::Read { path: path.to_owned(), source })
                };
                let bytes = read(path)?;
                let manifest_path = path.with_extension("toml");
                let manifest = match manifest_path.exists() {
                    false => None,
                    true => {
                        let text = String::from_utf8_lossy(&read(&manifest_path)?).into_owned();
                        let manifest = Manifest::parse(&text).map_err(|error| {
                            ActivationError::Manifest(error).at(&manifest_path.display().to_string())
                        })?;
                        Some(manifest)
                    }
                };
                Ok((path.display().to_string(), bytes, manifest))
            }
        }
    }

    /// Loads it: checked against its manifest if it has one.
    fn load(
        &self,
        runtime: &Arc<PluginRuntime>,
        plugins: &BTreeMap<String, PluginSettings>,
        fee_limits: &BTreeMap<String, FeeLimit>,
    ) -> Result<LoadedPlugin, PluginError> {
        let config_of = |name: &str| plugins.get(name).map(|settings| settings.config.clone()).unwrap_or_default();
        let (source_name, bytes, manifest) = self.read()?;
        match manifest {
            Some(manifest) => runtime
                .prepare(&source_name, &manifest, &bytes, &config_of(&manifest.name), fee_limits)
                .map_err(|error| error.at(&source_name)),
            None => Ok(runtime.load(&source_name, &bytes, &config_of)?),
        }
    }
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
    runtime: &Arc<PluginRuntime>,
    sources: &[PluginSource],
    plugins: &BTreeMap<String, PluginSettings>,
    methods: &BTreeMap<String, MethodSettings>,
    fee_limits: &BTreeMap<String, FeeLimit>,
) -> Result<Pipelines, PluginError> {
    let loaded = load_plugins(runtime, sources, plugins, fee_limits)?;
    Ok(Pipelines::build(loaded.into_iter().map(|(plugin, _)| plugin).collect(), methods, fee_limits)?)
}

/// Loads `sources` and every configured path, each with where it came from.
fn load_plugins(
    runtime: &Arc<PluginRuntime>,
    sources: &[PluginSource],
    plugins: &BTreeMap<String, PluginSettings>,
    fee_limits: &BTreeMap<String, FeeLimit>,
) -> Result<Vec<(Arc<LoadedPlugin>, Origin)>, PluginError> {
    let mut loaded: Vec<(Arc<LoadedPlugin>, Origin)> = Vec::new();
    for source in sources {
        let origin = match source {
            PluginSource::Builtin(..) => Origin::Builtin,
            PluginSource::File(path) => Origin::File(path.display().to_string()),
        };
        loaded.push((Arc::new(source.load(runtime, plugins, fee_limits)?), origin));
    }
    for (name, settings) in plugins {
        if let Some(path) = &settings.path {
            let plugin = PluginSource::File(path.clone()).load(runtime, plugins, fee_limits)?;
            if plugin.info().name != *name {
                return Err(PluginError::NameMismatch {
                    path: path.clone(),
                    configured: name.clone(),
                    described: plugin.info().name.clone(),
                });
            }
            // A configured path replaces a built-in plugin of the same name.
            loaded.retain(|(other, _)| other.info().name != *name);
            loaded.push((Arc::new(plugin), Origin::File(path.display().to_string())));
        }
    }
    Ok(loaded)
}

impl ActivationError {
    /// This error, naming where the plugin came from.
    fn at(self, source_name: &str) -> PluginError {
        match self {
            ActivationError::Load(error) => PluginError::Load(error),
            error => PluginError::Activation { source_name: source_name.to_owned(), error },
        }
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
