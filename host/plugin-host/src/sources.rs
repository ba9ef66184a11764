//! The plugins a node starts with: built into the binary, in a plugin directory, or at a
//! configured `[plugins.<name>] path`. One with a manifest goes through checked activation;
//! one without is loaded as it describes itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::activation::{self, ActivationError};
use crate::manifest::{Manifest, Sha256};
use crate::pipeline::{PipelineError, Pipelines};
use crate::runtime::{PluginRuntime, RuntimeError};
use crate::settings::{FeeLimit, MethodSettings, PluginSettings};
use crate::version::{LoadError, LoadedPlugin};

/// Where the serving version of a plugin came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "from")]
pub enum Origin {
    /// Compiled into the binary.
    Builtin,
    /// A file: in the plugin directory (`--plugins`), or a `[plugins.<name>] path`.
    File(String),
    /// The cluster's plugin store (`wasmpay plugin push`, or the API).
    Cluster,
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

impl From<RuntimeError> for PluginError {
    fn from(error: RuntimeError) -> PluginError {
        match error {
            RuntimeError::Engine(message) => PluginError::Runtime(message),
        }
    }
}

impl PluginError {
    /// `error`, naming where the plugin came from (a load error names it already).
    fn activation(source_name: &str, error: ActivationError) -> PluginError {
        match error {
            ActivationError::Load(error) => PluginError::Load(error),
            error => PluginError::Activation { source_name: source_name.to_owned(), error },
        }
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
    /// A file of a development node's plugin directory (`serve --dev`): as [`PluginSource::File`],
    /// but a manifest without `sha256` is taken to describe the file as it is.
    Development(std::path::PathBuf),
}

impl PluginSource {
    /// The file at `path`: a [`PluginSource::Development`] one on a development node.
    pub fn of_file(path: std::path::PathBuf, development: bool) -> PluginSource {
        match development {
            true => PluginSource::Development(path),
            false => PluginSource::File(path),
        }
    }

    /// Reads the component and its manifest: where it came from, its bytes, its manifest.
    pub fn read(&self) -> Result<(String, Vec<u8>, Option<Manifest>), PluginError> {
        match self {
            PluginSource::Builtin(name, bytes, manifest) => {
                let source_name = format!("builtin:{name}");
                let manifest = manifest
                    .map(Manifest::parse)
                    .transpose()
                    .map_err(|error| PluginError::activation(&source_name, ActivationError::Manifest(error)))?
                    .map(|manifest| Manifest { sha256: Some(Sha256::of(bytes)), ..manifest });
                Ok((source_name, bytes.to_vec(), manifest))
            }
            PluginSource::File(path) | PluginSource::Development(path) => {
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
                            PluginError::activation(
                                &manifest_path.display().to_string(),
                                ActivationError::Manifest(error),
                            )
                        })?;
                        Some(manifest)
                    }
                };
                let manifest = match self {
                    PluginSource::Development(_) => manifest.map(|manifest| manifest.hashed_if_unstated(&bytes)),
                    _ => manifest,
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
            Some(manifest) => {
                activation::prepare(runtime, &source_name, &manifest, &bytes, &config_of(&manifest.name), fee_limits)
                    .map_err(|error| PluginError::activation(&source_name, error))
            }
            None => Ok(LoadedPlugin::load(runtime, &source_name, &bytes, &config_of)?),
        }
    }
}

/// Every `*.wasm` file in `directory`, sorted by name; as [`PluginSource::Development`] files
/// when `development`.
pub fn directory_sources(directory: &std::path::Path, development: bool) -> Result<Vec<PluginSource>, PluginError> {
    let read_error = |source| PluginError::Read { path: directory.to_owned(), source };
    let mut files: Vec<_> = std::fs::read_dir(directory)
        .map_err(read_error)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "wasm"))
        .collect();
    files.sort();
    Ok(files.into_iter().map(|path| PluginSource::of_file(path, development)).collect())
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
    Ok(Pipelines::build(&runtime.shares, loaded.into_iter().map(|(plugin, _)| plugin).collect(), methods, fee_limits)?)
}

/// Loads `sources` and every configured path, each with where it came from.
pub(crate) fn load_plugins(
    runtime: &Arc<PluginRuntime>,
    sources: &[PluginSource],
    plugins: &BTreeMap<String, PluginSettings>,
    fee_limits: &BTreeMap<String, FeeLimit>,
) -> Result<Vec<(Arc<LoadedPlugin>, Origin)>, PluginError> {
    let mut loaded: Vec<(Arc<LoadedPlugin>, Origin)> = Vec::new();
    for source in sources {
        let origin = match source {
            PluginSource::Builtin(..) => Origin::Builtin,
            PluginSource::File(path) | PluginSource::Development(path) => Origin::File(path.display().to_string()),
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
