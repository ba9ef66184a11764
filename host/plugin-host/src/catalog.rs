//! Loading plugin versions: compile once, link once (`InstancePre`), ask the component who it
//! is, and refuse anything that does not keep the contract before it can serve a payment.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::component::{Component, InstancePre};

use super::bindings::{fee_policy, plugin, validator};
use super::sandbox::{self, PluginState};
use super::{PluginRuntime, describe_error};
use wasmpay_protocol::money::Currency;

/// Distinguishes every load, so a warm instance is never reused for another load of the same
/// `name@version` (whose configuration may differ).
static NEXT_LOAD_ID: AtomicU64 = AtomicU64::new(1);

/// What a plugin says it is, checked.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PluginInfo {
    /// Stable name, `[a-z0-9-]{1,32}`.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// Methods it serves by default.
    pub methods: Vec<String>,
    /// Currencies it accepts; empty means any.
    pub currencies: Vec<String>,
    /// Whether it exports `validator`.
    pub validates: bool,
    /// Whether it exports `fee-policy`.
    pub quotes_fees: bool,
}

/// A plugin version ready to instantiate.
pub struct LoadedPlugin {
    pub(super) load_id: u64,
    pub(super) info: PluginInfo,
    pub(super) key: String,
    pub(super) name: Arc<str>,
    pub(super) pre: InstancePre<PluginState>,
    pub(super) validator: Option<validator::GuestIndices>,
    pub(super) fee_policy: Option<fee_policy::GuestIndices>,
    pub(super) config: Arc<Vec<(String, String)>>,
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
        f.debug_struct("LoadedPlugin").field("key", &self.key).field("load_id", &self.load_id).finish_non_exhaustive()
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
        let pre = self.linker.instantiate_pre(&component).map_err(contract_error)?;
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
            load_id: NEXT_LOAD_ID.fetch_add(1, Ordering::Relaxed),
            name: Arc::from(info.name.as_str()),
            info,
            key,
            pre,
            validator,
            fee_policy,
            config,
        })
    }

    fn describe(
        &self,
        pre: &InstancePre<PluginState>,
        describe: &plugin::GuestIndices,
    ) -> wasmtime::Result<super::bindings::types::PluginInfo> {
        let state = PluginState::new(Arc::from("loading"), Arc::default(), &self.limits);
        let mut store = sandbox::store(&self.engine, state, &self.limits);
        let instance = pre.instantiate(&mut store)?;
        describe.load(&mut store, &instance)?.call_describe(&mut store)
    }
}

fn check_info(
    raw: super::bindings::types::PluginInfo,
    validates: bool,
    quotes_fees: bool,
) -> Result<PluginInfo, String> {
    let token = |text: &str, extra: &[u8]| {
        (1..=32).contains(&text.len())
            && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
    };
    if !token(&raw.name, b"-") {
        return Err(format!("name `{}` must be 1-32 characters of a-z 0-9 -", raw.name));
    }
    if !is_semver(&raw.version) {
        return Err(format!("version `{}` is not MAJOR.MINOR.PATCH", raw.version));
    }
    if let Some(method) = raw.methods.iter().find(|method| !token(method, b"-_")) {
        return Err(format!("method `{method}` must be 1-32 characters of a-z 0-9 _ -"));
    }
    if let Some(currency) = raw.currencies.iter().find(|code| code.parse::<Currency>().is_err()) {
        return Err(format!("currency `{currency}` is not a supported ISO 4217 code"));
    }
    Ok(PluginInfo {
        name: raw.name,
        version: raw.version,
        methods: raw.methods,
        currencies: raw.currencies,
        validates,
        quotes_fees,
    })
}

/// `MAJOR.MINOR.PATCH` with an optional `-pre` or `+build` suffix.
fn is_semver(version: &str) -> bool {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3 && parts.iter().all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_shapes() {
        for good in ["0.1.0", "1.22.333", "1.0.0-rc.1", "1.0.0+build5"] {
            assert!(is_semver(good), "{good}");
        }
        for bad in ["", "1", "1.0", "1.0.x", "v1.0.0", "1..0"] {
            assert!(!is_semver(bad), "{bad}");
        }
    }
}
