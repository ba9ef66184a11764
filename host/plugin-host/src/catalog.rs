//! Loading plugin versions: compile once (or take the compiled code from the cache), link
//! once (`InstancePre`), ask the component who it is, and refuse anything that does not keep
//! the contract, or its manifest's word, before it can serve a payment.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{Component, InstancePre};

use super::bindings::{fee_policy, plugin, validator};
use super::sandbox::{self, Limits, PluginState};
use super::{PluginRuntime, describe_error};
use crate::census::Alive;
use crate::contract::{PluginInfo, check_info};
use crate::health::Health;
use crate::logs::LogBudget;
use crate::manifest::{Manifest, ManifestError, sha256_hex};
use crate::pipeline::PipelineError;
use crate::settings::FeeLimit;

/// A plugin version ready to instantiate.
pub struct LoadedPlugin {
    pub(super) info: PluginInfo,
    pub(super) key: String,
    pub(super) name: Arc<str>,
    pub(super) pre: InstancePre<PluginState>,
    pub(super) validator: Option<validator::GuestIndices>,
    pub(super) fee_policy: Option<fee_policy::GuestIndices>,
    pub(super) config: Arc<Vec<(String, String)>>,
    pub(super) log_budget: Arc<LogBudget>,
    pub(super) limits: Limits,
    pub(super) health: Health,
    pub(super) sha256: String,
    pub(super) manifest: Option<Manifest>,
    pub(super) _alive: Alive,
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
    pub fn sha256(&self) -> &str {
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

/// Why a plugin version was not activated. The version serving before stays.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// The manifest is unusable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The component is not the one the manifest names.
    #[error("the component's sha256 is {actual}, the manifest expects {expected}")]
    HashMismatch {
        /// From the manifest.
        expected: String,
        /// Of the bytes.
        actual: String,
    },
    /// It does not compile, link or describe itself.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// `describe` disagrees with the manifest.
    #[error("the component describes itself as {described}, the manifest says {declared}")]
    Disagrees {
        /// What `describe` said.
        described: String,
        /// What the manifest says.
        declared: String,
    },
    /// A bundled fixture did not get its expected verdict.
    #[error("self-test `{fixture}` failed: {message}")]
    SelfTest {
        /// The fixture's name.
        fixture: String,
        /// What happened instead.
        message: String,
    },
    /// The new plugin set does not fit the node's method pipelines.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// No such plugin, or no such retained version of it.
    #[error("{0}")]
    Unknown(String),
    /// The component cannot be had (missing from the cluster's store, or corrupt there).
    #[error("{0}")]
    Unavailable(String),
    /// The node could not run the checks (its instance pool full, its CPU starved): no
    /// verdict on the version; it is tried again.
    #[error("the node could not run the self-test: {0}")]
    NodeBusy(String),
}

impl ActivationError {
    /// A stable code for the API and the CLI.
    pub fn code(&self) -> &'static str {
        match self {
            ActivationError::Manifest(_) => "invalid_manifest",
            ActivationError::HashMismatch { .. } => "hash_mismatch",
            ActivationError::Load(LoadError::Compile { .. }) => "compile_failed",
            ActivationError::Load(LoadError::Contract { .. }) => "contract_violation",
            ActivationError::Load(LoadError::Describe { .. }) => "describe_failed",
            ActivationError::Disagrees { .. } => "manifest_mismatch",
            ActivationError::SelfTest { .. } => "self_test_failed",
            ActivationError::Pipeline(_) => "pipeline_invalid",
            ActivationError::Unknown(_) => "unknown_version",
            ActivationError::Unavailable(_) => "component_unavailable",
            ActivationError::NodeBusy(_) => "node_busy",
        }
    }

    /// Whether trying the same version again later may pass.
    pub fn is_transient(&self) -> bool {
        matches!(self, ActivationError::NodeBusy(_))
    }
}

impl PluginRuntime {
    /// Compiles, links and describes a plugin that comes without a manifest (a configured
    /// path, or a directory entry without one). `source_name` names it in errors (a path, or
    /// `builtin:card`); `config_of` gives, for the name the plugin describes, what its
    /// `config` import will answer (`describe` itself runs without configuration: it must be
    /// constant).
    pub fn load(
        &self,
        source_name: &str,
        bytes: &[u8],
        config_of: &dyn Fn(&str) -> BTreeMap<String, String>,
    ) -> Result<LoadedPlugin, LoadError> {
        let mut plugin = self.load_with(source_name, bytes, self.limits)?;
        plugin.config = Arc::new(config_of(&plugin.info.name).into_iter().collect());
        Ok(plugin)
    }

    /// Checked activation, all but the switch: the bytes must have the manifest's hash,
    /// compile, keep the contract, describe themselves as the manifest says, and pass every
    /// bundled fixture in the sandbox (with the manifest's own configuration, and the node's
    /// `fee_limits`). The version then serves with `overlay` (the node's
    /// `[plugins.<name>] config`) laid over that.
    pub fn prepare(
        self: &Arc<Self>,
        source_name: &str,
        manifest: &Manifest,
        bytes: &[u8],
        overlay: &BTreeMap<String, String>,
        fee_limits: &BTreeMap<String, FeeLimit>,
    ) -> Result<LoadedPlugin, ActivationError> {
        let expected = manifest.expected_hash()?;
        let actual = sha256_hex(bytes);
        if actual != expected {
            return Err(ActivationError::HashMismatch { expected: expected.to_owned(), actual });
        }
        let limits = self.limits.tightened(&manifest.limits);
        let mut plugin = self.load_with(source_name, bytes, limits)?;
        let info = &plugin.info;
        let sorted = |methods: &[String]| {
            let mut methods = methods.to_vec();
            methods.sort();
            methods.dedup();
            methods
        };
        if info.name != manifest.name
            || info.version != manifest.version
            || sorted(&info.methods) != sorted(&manifest.methods)
        {
            return Err(ActivationError::Disagrees {
                described: format!("{} serving {:?}", plugin.key, info.methods),
                declared: format!("{} serving {:?}", manifest.key(), manifest.methods),
            });
        }
        plugin.config = Arc::new(manifest.config.clone().into_iter().collect());
        plugin.manifest = Some(manifest.clone());
        let plugin = Arc::new(plugin);
        crate::selftest::run(self, &plugin, manifest, fee_limits)?;
        let mut plugin = Arc::into_inner(plugin).ok_or_else(|| ActivationError::SelfTest {
            fixture: "-".into(),
            message: "the self-test kept an instance of the plugin".into(),
        })?;
        let mut config = manifest.config.clone();
        config.extend(overlay.iter().map(|(key, value)| (key.clone(), value.clone())));
        plugin.config = Arc::new(config.into_iter().collect());
        // The self-test's calls are not the version's record in service.
        plugin.health = Health::default();
        Ok(plugin)
    }

    fn load_with(&self, source_name: &str, bytes: &[u8], limits: Limits) -> Result<LoadedPlugin, LoadError> {
        let contract_error = |error: wasmtime::Error| LoadError::Contract {
            source_name: source_name.to_owned(),
            message: describe_error(&error),
        };
        let sha256 = sha256_hex(bytes);
        let component = self.compile(source_name, &sha256, bytes)?;
        let mut linker = self.linker.clone();
        sandbox::deny_wasi(&mut linker, &self.engine, &component).map_err(contract_error)?;
        let pre = linker.instantiate_pre(&component).map_err(contract_error)?;
        let describe = plugin::GuestIndices::new(&pre).map_err(contract_error)?;
        let validator = validator::GuestIndices::new(&pre).ok();
        let fee_policy = fee_policy::GuestIndices::new(&pre).ok();
        if validator.is_none() && fee_policy.is_none() {
            return Err(LoadError::Contract {
                source_name: source_name.to_owned(),
                message: "exports neither `validator` nor `fee-policy`".into(),
            });
        }
        let raw = self.describe(&pre, &describe, &limits).map_err(|error| LoadError::Describe {
            source_name: source_name.to_owned(),
            message: describe_error(&error),
        })?;
        let info = check_info(raw, validator.is_some(), fee_policy.is_some())
            .map_err(|message| LoadError::Describe { source_name: source_name.to_owned(), message })?;
        let key = format!("{}@{}", info.name, info.version);
        Ok(LoadedPlugin {
            name: Arc::from(info.name.as_str()),
            info,
            key,
            pre,
            validator,
            fee_policy,
            config: Arc::default(),
            log_budget: Arc::new(LogBudget::default()),
            limits,
            health: Health::default(),
            sha256,
            manifest: None,
            _alive: self.census.version(),
        })
    }

    /// The component for `bytes`: from the compiled-code cache when it holds it, else compiled
    /// (and then stored there).
    fn compile(&self, source_name: &str, sha256: &str, bytes: &[u8]) -> Result<Component, LoadError> {
        let compile_error = |error: wasmtime::Error| LoadError::Compile {
            source_name: source_name.to_owned(),
            message: describe_error(&error),
        };
        match &self.cache {
            Some(cache) => cache.component(&self.engine, sha256, bytes).map_err(compile_error),
            None => Component::new(&self.engine, bytes).map_err(compile_error),
        }
    }

    fn describe(
        &self,
        pre: &InstancePre<PluginState>,
        describe: &plugin::GuestIndices,
        limits: &Limits,
    ) -> wasmtime::Result<super::bindings::types::PluginInfo> {
        let state = PluginState::new(Arc::from("loading"), Arc::default(), Arc::default(), limits, &self.census);
        let mut store = sandbox::store(&self.engine, state, limits)?;
        let instance = pre.instantiate(&mut store)?;
        describe.load(&mut store, &instance)?.call_describe(&mut store)
    }
}
