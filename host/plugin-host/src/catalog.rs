//! Loading plugin versions: compile once, link once (`InstancePre`), ask the component who it
//! is, and refuse anything that does not keep the contract before it can serve a payment.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{Component, InstancePre};

use super::bindings::{fee_policy, plugin, validator};
use super::sandbox::{self, PluginState};
use super::{PluginRuntime, describe_error};
use crate::contract::{PluginInfo, check_info};
use crate::logs::LogBudget;

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

impl PluginRuntime {
    /// Compiles, links and describes a plugin. `source_name` names it in errors (a path, or
    /// `builtin:card`); `config_of` gives, for the name the plugin describes, what its `config`
    /// import will answer (`describe` itself runs without configuration: it must be constant).
    pub fn load(
        &self,
        source_name: &str,
        bytes: &[u8],
        config_of: &dyn Fn(&str) -> BTreeMap<String, String>,
    ) -> Result<LoadedPlugin, LoadError> {
        let compile_error = |error: wasmtime::Error| LoadError::Compile {
            source_name: source_name.to_owned(),
            message: describe_error(&error),
        };
        let contract_error = |error: wasmtime::Error| LoadError::Contract {
            source_name: source_name.to_owned(),
            message: describe_error(&error),
        };
        let component = Component::new(&self.engine, bytes).map_err(compile_error)?;
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
        let raw = self.describe(&pre, &describe).map_err(|error| LoadError::Describe {
            source_name: source_name.to_owned(),
            message: describe_error(&error),
        })?;
        let info = check_info(raw, validator.is_some(), fee_policy.is_some())
            .map_err(|message| LoadError::Describe { source_name: source_name.to_owned(), message })?;
        let key = format!("{}@{}", info.name, info.version);
        let config = Arc::new(config_of(&info.name).into_iter().collect::<Vec<_>>());
        Ok(LoadedPlugin {
            name: Arc::from(info.name.as_str()),
            info,
            key,
            pre,
            validator,
            fee_policy,
            config,
            log_budget: Arc::new(LogBudget::default()),
        })
    }

    fn describe(
        &self,
        pre: &InstancePre<PluginState>,
        describe: &plugin::GuestIndices,
    ) -> wasmtime::Result<super::bindings::types::PluginInfo> {
        let state = PluginState::new(Arc::from("loading"), Arc::default(), Arc::default(), &self.limits);
        let mut store = sandbox::store(&self.engine, state, &self.limits)?;
        let instance = pre.instantiate(&mut store)?;
        describe.load(&mut store, &instance)?.call_describe(&mut store)
    }
}
