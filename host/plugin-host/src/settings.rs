//! What an operator configures about plugins: sandbox limits, each plugin's file and
//! key/value configuration, and method pipelines. The node reads these from the `[sandbox]`,
//! `[plugins.<name>]` and `[methods.<method>]` sections of `wasmpay.toml`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// Limits of the plugin sandbox.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSettings {
    /// Wall-clock budget of one plugin call, enforced by an epoch deadline.
    pub call_timeout_ms: u64,
    /// Linear memory cap of one plugin instance.
    pub memory_limit_mib: u64,
    /// How many calls a warm instance serves before it is replaced by a fresh one.
    pub calls_per_instance: u32,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings { call_timeout_ms: 50, memory_limit_mib: 16, calls_per_instance: 1_000 }
    }
}

/// One plugin.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PluginSettings {
    /// The component file; `None` for a built-in plugin or one found with `--plugins`.
    pub path: Option<PathBuf>,
    /// Key/value configuration the plugin reads through the `config` import.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// The pipeline of one payment method.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MethodSettings {
    /// Validator plugins, run in order; the first refusal declines the payment.
    pub validators: Vec<String>,
    /// The fee policy plugin.
    pub fee: String,
}
