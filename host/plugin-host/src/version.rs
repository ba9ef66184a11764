//! A loaded plugin version: compiled once (or taken from the compiled-code cache), linked
//! once (`InstancePre`), asked who it is, and refused if it does not keep the contract. This
//! is all a version is to the modules that run it; what its manifest adds (the hash, its word,
//! its fixtures) is checked above, in `activation`.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{Component, InstancePre};

use crate::bindings::{fee_policy, fx, plugin, refund_fee, types, validator};
use crate::census::Alive;
use crate::contract::{PluginInfo, check_info};
use crate::health::Health;
use crate::inline::InlineRuns;
use crate::logs::LogBudget;
use crate::manifest::{Manifest, Sha256};
use crate::runtime::PluginRuntime;
use crate::sandbox::{self, Limits, PluginState, describe_error};

/// A plugin version ready to instantiate.
pub struct LoadedPlugin {
    pub(crate) info: PluginInfo,
    pub(crate) key: String,
    pub(crate) id: PluginId,
    pub(crate) pre: InstancePre<PluginState>,
    pub(crate) validator: Option<validator::GuestIndices>,
    pub(crate) fee_policy: Option<fee_policy::GuestIndices>,
    pub(crate) refund_fee: Option<refund_fee::GuestIndices>,
    pub(crate) fx: Option<fx::GuestIndices>,
    pub(crate) config: Arc<Vec<(String, String)>>,
    pub(crate) log_budget: Arc<LogBudget>,
    pub(crate) limits: Limits,
    pub(crate) health: Health,
    /// Whether its calls try the partition's thread first (`inline`).
    pub(crate) inline: InlineRuns,
    sha256: Sha256,
    pub(crate) manifest: Option<Manifest>,
    _alive: Alive,
}

impl LoadedPlugin {
    /// What it is.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// `name@version`, as recorded with every payment it decides.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Lowercase hex SHA-256 of the component.
    pub fn sha256(&self) -> &Sha256 {
        &self.sha256
    }

    /// The manifest it was checked against; `None` for a component loaded without one.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// Its calls, failures, latency and quarantine on this node.
    pub fn health(&self) -> &Health {
        &self.health
    }
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin").field("key", &self.key).finish_non_exhaustive()
    }
}

/// A plugin version as an observer names it: shared strings, so that counting a call copies
/// no text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PluginId {
    /// Its name.
    pub name: Arc<str>,
    /// Its version.
    pub version: Arc<str>,
}

/// A plugin that cannot be loaded. Nothing of it is used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a valid component for this engine.
    #[error("{source_name}: not a valid component: {message}")]
    Compile {
        /// Where the bytes came from.
        source_name: String,
        /// Why.
        message: String,
    },
    /// It imports something the sandbox does not offer, or exports no plugin interface.
    #[error("{source_name}: does not fit the wasmpay:plugin contract: {message}")]
    Contract {
        /// Where the bytes came from.
        source_name: String,
        /// Why.
        message: String,
    },
    /// Its `describe` failed or returned invalid data.
    #[error("{source_name}: invalid `describe`: {message}")]
    Describe {
        /// Where the bytes came from.
        source_name: String,
        /// Why.
        message: String,
    },
}

impl LoadedPlugin {
    /// Compiles, links and describes a plugin that comes without a manifest (a configured
    /// path, or a directory entry without one). `source_name` names it in errors (a path, or
    /// `builtin:card`); `config_of` gives, for the name the plugin describes, what its
    /// `config` import will answer (`describe` itself runs without configuration: it must be
    /// constant).
    pub fn load(
        runtime: &PluginRuntime,
        source_name: &str,
        bytes: &[u8],
        config_of: &dyn Fn(&str) -> BTreeMap<String, String>,
    ) -> Result<LoadedPlugin, LoadError> {
        let mut plugin = LoadedPlugin::load_with(runtime, source_name, bytes, runtime.limits)?;
        plugin.config = Arc::new(config_of(&plugin.info.name).into_iter().collect());
        Ok(plugin)
    }

    /// The version in `bytes` under `limits`, without configuration or manifest: what a
    /// checked activation starts from.
    pub(crate) fn load_with(
        runtime: &PluginRuntime,
        source_name: &str,
        bytes: &[u8],
        limits: Limits,
    ) -> Result<LoadedPlugin, LoadError> {
        let contract_error = |error: wasmtime::Error| LoadError::Contract {
            source_name: source_name.to_owned(),
            message: describe_error(&error),
        };
        let sha256 = Sha256::of(bytes);
        let component = compile(runtime, source_name, &sha256, bytes)?;
        let mut linker = runtime.linker.clone();
        sandbox::deny_wasi(&mut linker, &runtime.engine, &component).map_err(contract_error)?;
        let pre = linker.instantiate_pre(&component).map_err(contract_error)?;
        let describe = plugin::GuestIndices::new(&pre).map_err(contract_error)?;
        let validator = validator::GuestIndices::new(&pre).ok();
        let fee_policy = fee_policy::GuestIndices::new(&pre).ok();
        // Optional (0.1.1): a component without it, or built against 0.1.0, keeps refund fees.
        let refund_fee = refund_fee::GuestIndices::new(&pre).ok();
        // 0.1.2: a plugin that prices conversions, alone or beside the other roles.
        let fx = fx::GuestIndices::new(&pre).ok();
        if validator.is_none() && fee_policy.is_none() && fx.is_none() {
            return Err(LoadError::Contract {
                source_name: source_name.to_owned(),
                message: "exports none of `validator`, `fee-policy` and `fx`".into(),
            });
        }
        let optional = (refund_fee.as_ref(), fx.as_ref());
        let raw = describe_itself(runtime, &pre, &describe, optional, &limits).map_err(|error| {
            LoadError::Describe { source_name: source_name.to_owned(), message: describe_error(&error) }
        })?;
        let info = check_info(raw, validator.is_some(), fee_policy.is_some(), refund_fee.is_some(), fx.is_some())
            .map_err(|message| LoadError::Describe { source_name: source_name.to_owned(), message })?;
        let key = format!("{}@{}", info.name, info.version);
        Ok(LoadedPlugin {
            id: PluginId { name: Arc::from(info.name.as_str()), version: Arc::from(info.version.as_str()) },
            info,
            key,
            pre,
            validator,
            fee_policy,
            refund_fee,
            fx,
            config: Arc::default(),
            log_budget: Arc::new(LogBudget::default()),
            limits,
            health: Health::default(),
            inline: InlineRuns::default(),
            sha256,
            manifest: None,
            _alive: runtime.census.version(),
        })
    }
}

/// The component for `bytes`: from the compiled-code cache when it holds it, else compiled
/// (and then stored there).
fn compile(runtime: &PluginRuntime, source_name: &str, sha256: &Sha256, bytes: &[u8]) -> Result<Component, LoadError> {
    let compile_error = |error: wasmtime::Error| LoadError::Compile {
        source_name: source_name.to_owned(),
        message: describe_error(&error),
    };
    match &runtime.cache {
        Some(cache) => cache.component(&runtime.engine, sha256, bytes).map_err(compile_error),
        None => Component::new(&runtime.engine, bytes).map_err(compile_error),
    }
}

/// What the component says it is, asked on an instance made for the question. The same
/// instance type-checks its `refund-fee` and `fx` exports, if it has them, so that a wrong
/// signature refuses the version now rather than every refund or conversion later.
fn describe_itself(
    runtime: &PluginRuntime,
    pre: &InstancePre<PluginState>,
    describe: &plugin::GuestIndices,
    (refund_fee, fx): (Option<&refund_fee::GuestIndices>, Option<&fx::GuestIndices>),
    limits: &Limits,
) -> wasmtime::Result<types::PluginInfo> {
    let state = PluginState::new(Arc::from("loading"), Arc::default(), Arc::default(), limits, &runtime.census);
    let mut store = sandbox::store(&runtime.engine, state, limits)?;
    let instance = pre.instantiate(&mut store)?;
    if let Some(refund_fee) = refund_fee {
        refund_fee.load(&mut store, &instance)?;
    }
    if let Some(fx) = fx {
        fx.load(&mut store, &instance)?;
    }
    describe.load(&mut store, &instance)?.call_describe(&mut store)
}
