//! What every plugin of a node shares: one engine, one linker, the node's limits, the
//! compiled-code cache and the census. It knows no plugin: versions are loaded onto it
//! (`version`), checked (`activation`) and run (`instances`) by the modules above.

use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::cache::CompiledCache;
use crate::census::Census;
use crate::sandbox::{self, EpochTicker, Limits, PluginState, describe_error};
use crate::settings::{QuarantineSettings, SandboxSettings};
use crate::shares::MethodShares;

/// The engine, linker and limits shared by every plugin of a node.
pub struct PluginRuntime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<PluginState>,
    pub(crate) limits: Limits,
    pub(crate) quarantine: QuarantineSettings,
    pub(crate) census: Census,
    pub(crate) cache: Option<CompiledCache>,
    pub(crate) shares: MethodShares,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// The runtime could not be set up. Worded as the matching `PluginError` variant, into which
/// it converts, so a node that cannot start says the same whichever layer reports it. (A
/// compiled-code cache that cannot be opened is no such failure: the runtime goes without it.)
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine, linker or epoch ticker could not be built.
    #[error("plugin runtime: {0}")]
    Engine(String),
}

impl PluginRuntime {
    /// Builds the engine and linker and starts the epoch ticker.
    pub fn new(settings: &SandboxSettings) -> Result<Arc<PluginRuntime>, RuntimeError> {
        let limits = Limits::from_settings(settings);
        let runtime_error = |error: wasmtime::Error| RuntimeError::Engine(describe_error(&error));
        let engine = sandbox::engine(&limits).map_err(runtime_error)?;
        let linker = sandbox::linker(&engine).map_err(runtime_error)?;
        let cache = settings.cache_dir.as_deref().and_then(|directory| CompiledCache::open_or_skip(directory, &engine));
        let ticker = EpochTicker::start(engine.clone()).map_err(|error| RuntimeError::Engine(error.to_string()))?;
        Ok(Arc::new(PluginRuntime {
            engine,
            linker,
            limits,
            quarantine: settings.quarantine,
            census: Census::default(),
            cache,
            shares: MethodShares::new(settings.method_threads),
            _ticker: ticker,
        }))
    }

    /// Live versions and instances.
    pub fn census(&self) -> &Census {
        &self.census
    }
}
