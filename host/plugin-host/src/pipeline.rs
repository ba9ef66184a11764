//! Method pipelines: which plugins decide a payment of a given method.
//!
//! A pipeline is an ordered list of validators and exactly one fee policy. The operator can
//! spell each one out (`[methods.<name>]`); otherwise a plugin that exports both interfaces
//! serves the methods it lists in `describe`.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Semaphore;
use wasmpay_protocol::money::Currency;

use crate::settings::{FeeLimit, MethodSettings};
use crate::shares::MethodShares;
use crate::version::LoadedPlugin;

/// The share of the plugin CPU that conversions run under: no method can be named so (a
/// method is `[a-z0-9_-]`).
const FX_SHARE: &str = "@fx";

/// The plugins of one method.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// The method's share of the plugin CPU (`shares`), looked up once when the method table
    /// is built rather than per payment.
    pub(crate) share: Arc<Semaphore>,
    pub(crate) validators: Vec<Arc<LoadedPlugin>>,
    pub(crate) fee_policy: Arc<LoadedPlugin>,
    pub(crate) fee_limit: FeeLimit,
}

impl Pipeline {
    /// The first plugin of the pipeline that does not take `currency` (its `describe` lists
    /// currencies, and not this one): the payment must not reach any of them.
    pub fn refuses(&self, currency: Currency) -> Option<&LoadedPlugin> {
        self.validators.iter().chain([&self.fee_policy]).map(Arc::as_ref).find(|plugin| !plugin.info.accepts(currency))
    }

    /// The method's fee policy.
    pub fn fee_policy(&self) -> &LoadedPlugin {
        &self.fee_policy
    }

    /// Every plugin of the pipeline, validators first, each once (a plugin may fill both roles).
    /// Asked on every payment, so it allocates nothing: a plugin is skipped if a validator
    /// before it is the same one.
    pub(crate) fn plugins(&self) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        let earlier = |index: usize, plugin: &Arc<LoadedPlugin>| {
            self.validators[..index].iter().any(|seen| Arc::ptr_eq(seen, plugin))
        };
        let all = self.validators.iter().chain([&self.fee_policy]).enumerate();
        all.filter(move |(index, plugin)| !earlier(*index, plugin)).map(|(_, plugin)| plugin)
    }

    /// `name@version` of every plugin in the pipeline, validators first, each once.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.validators.iter().map(|plugin| plugin.key.clone()).collect();
        if !keys.contains(&self.fee_policy.key) {
            keys.push(self.fee_policy.key.clone());
        }
        keys
    }
}

/// The deployment's FX plugin: it prices the conversion of every cross-border payment and
/// quote, whatever the method.
#[derive(Clone, Debug)]
pub struct FxPipeline {
    /// Its own share of the plugin CPU, like a method's.
    pub(crate) share: Arc<Semaphore>,
    pub(crate) plugin: Arc<LoadedPlugin>,
}

impl FxPipeline {
    /// `name@version` of the FX plugin, recorded with every conversion it prices.
    pub fn key(&self) -> &str {
        &self.plugin.key
    }

    /// The FX plugin.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }
}

/// Every method this node serves, and the plugins behind them.
#[derive(Clone, Debug, Default)]
pub struct Pipelines {
    by_method: BTreeMap<String, Pipeline>,
    fx: Option<FxPipeline>,
    plugins: Vec<Arc<LoadedPlugin>>,
}

/// A plugin set and method table that do not fit together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// Two loaded plugins have the same name.
    #[error("two plugins are named `{0}`")]
    DuplicatePlugin(String),
    /// A method names a plugin that is not loaded.
    #[error("method `{method}` uses plugin `{plugin}`, which is not loaded")]
    UnknownPlugin {
        /// The method.
        method: String,
        /// The missing plugin.
        plugin: String,
    },
    /// A method uses a plugin for a role it does not export.
    #[error("method `{method}`: plugin `{plugin}` does not export `{role}`")]
    MissingRole {
        /// The method.
        method: String,
        /// The plugin.
        plugin: String,
        /// `validator` or `fee-policy`.
        role: &'static str,
    },
    /// Two plugins claim the same method and no `[methods]` entry settles it.
    #[error("plugins `{0}` and `{1}` both serve method `{2}`: configure [methods.{2}]")]
    AmbiguousMethod(String, String, String),
    /// Two plugins export `fx`: a deployment prices conversions with one.
    #[error("plugins `{0}` and `{1}` both export `fx`: a deployment has one FX plugin, remove one")]
    AmbiguousFx(String, String),
}

impl Pipelines {
    /// Builds the method table from the loaded plugins, the configured pipelines and the fee
    /// limits by method; each method's calls share `shares`'s bound.
    pub(crate) fn build(
        shares: &MethodShares,
        plugins: Vec<Arc<LoadedPlugin>>,
        configured: &BTreeMap<String, MethodSettings>,
        fee_limits: &BTreeMap<String, FeeLimit>,
    ) -> Result<Pipelines, PipelineError> {
        let fee_limit = |method: &str| fee_limits.get(method).cloned().unwrap_or_default();
        let mut by_name: BTreeMap<&str, &Arc<LoadedPlugin>> = BTreeMap::new();
        for plugin in &plugins {
            if by_name.insert(&plugin.info.name, plugin).is_some() {
                return Err(PipelineError::DuplicatePlugin(plugin.info.name.clone()));
            }
        }
        let mut by_method = BTreeMap::new();
        for (method, settings) in configured {
            let find = |name: &str, role: &'static str, has_role: fn(&LoadedPlugin) -> bool| {
                let plugin = by_name
                    .get(name)
                    .ok_or_else(|| PipelineError::UnknownPlugin { method: method.clone(), plugin: name.to_owned() })?;
                if !has_role(plugin) {
                    return Err(PipelineError::MissingRole { method: method.clone(), plugin: name.to_owned(), role });
                }
                Ok(Arc::clone(plugin))
            };
            let validators = settings
                .validators
                .iter()
                .map(|name| find(name, "validator", |p| p.info.validates))
                .collect::<Result<Vec<_>, _>>()?;
            let fee_policy = find(&settings.fee, "fee-policy", |p| p.info.quotes_fees)?;
            by_method.insert(
                method.clone(),
                Pipeline { share: shares.of(method), validators, fee_policy, fee_limit: fee_limit(method) },
            );
        }
        let mut claimed_by: BTreeMap<&str, &str> = BTreeMap::new();
        for plugin in &plugins {
            let info = &plugin.info;
            if !(info.validates && info.quotes_fees) {
                continue;
            }
            for method in info.methods.iter().filter(|method| !configured.contains_key(*method)) {
                if let Some(other) = claimed_by.insert(method, &info.name) {
                    return Err(PipelineError::AmbiguousMethod(other.to_owned(), info.name.clone(), method.clone()));
                }
                let pipeline = Pipeline {
                    share: shares.of(method),
                    validators: vec![plugin.clone()],
                    fee_policy: plugin.clone(),
                    fee_limit: fee_limit(method),
                };
                by_method.insert(method.clone(), pipeline);
            }
        }
        let mut rates = plugins.iter().filter(|plugin| plugin.info.quotes_rates);
        let fx = rates.next().map(|plugin| FxPipeline { share: shares.of(FX_SHARE), plugin: plugin.clone() });
        if let (Some(first), Some(second)) = (&fx, rates.next()) {
            return Err(PipelineError::AmbiguousFx(first.plugin.info.name.clone(), second.info.name.clone()));
        }
        Ok(Pipelines { by_method, fx, plugins })
    }

    /// The FX plugin, if one is loaded: without it, cross-border payments are refused.
    pub fn fx(&self) -> Option<&FxPipeline> {
        self.fx.as_ref()
    }

    /// The pipeline of `method`.
    pub fn get(&self, method: &str) -> Option<&Pipeline> {
        self.by_method.get(method)
    }

    /// The methods served.
    pub fn methods(&self) -> impl Iterator<Item = &str> {
        self.by_method.keys().map(String::as_str)
    }

    /// The loaded plugins.
    pub fn plugins(&self) -> &[Arc<LoadedPlugin>] {
        &self.plugins
    }
}
