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
    /// Work one plugin call may do, in fuel (about one unit per WebAssembly instruction; the
    /// default is some 25-60 ms of CPU on a 2-core machine of 2026). This is the limit a
    /// plugin is judged by: it does not depend on how busy the machine is.
    pub fuel_per_call: u64,
    /// Wall-clock backstop of one call, enforced by an epoch deadline: it only catches what
    /// fuel cannot (a host call that should never take long), so it is generous.
    pub call_timeout_ms: u64,
    /// Linear memory cap of one instance.
    pub memory_limit_mib: u64,
    /// Instances alive at once across all plugins (the pooling allocator's slots). A payment
    /// holds one instance per plugin of its pipeline, and a node decides at most one payment
    /// per partition at a time, so `partitions x plugins per pipeline` (64 x 4 by default)
    /// is the most it needs; the rest is headroom for loading plugins.
    pub max_instances: u32,
    /// Payments of one method whose plugins may run at once; unset, one less than the cores
    /// (at least one), so a slow method leaves a core to the others and to the node.
    pub method_threads: Option<usize>,
    /// When a version that keeps failing is taken out of the payment path.
    pub quarantine: QuarantineSettings,
    /// Where compiled plugins are kept between runs, keyed by the component's hash and the
    /// engine's settings; `None` compiles every plugin at every start.
    pub cache_dir: Option<PathBuf>,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            fuel_per_call: 1_000_000_000,
            call_timeout_ms: 1_000,
            memory_limit_mib: 16,
            max_instances: 1_000,
            method_threads: None,
            quarantine: QuarantineSettings::default(),
            cache_dir: None,
        }
    }
}

/// Quarantine (`[sandbox.quarantine]`): a plugin version whose calls fail (trap, fuel,
/// timeout, memory, contract breach) more than `failure_percent` of the time within a window
/// of `window_ms`, once it made at least `min_calls` calls in it, is refused at once on this
/// node until an operator rolls back or re-activates it.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantineSettings {
    /// Share of failed calls, in percent, above which the version is quarantined; 100 turns
    /// quarantine off.
    pub failure_percent: u32,
    /// Length of the window, in milliseconds.
    pub window_ms: u64,
    /// Calls a window must hold before it can quarantine.
    pub min_calls: u64,
}

impl Default for QuarantineSettings {
    fn default() -> Self {
        QuarantineSettings { failure_percent: 50, window_ms: 60_000, min_calls: 20 }
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

/// The most a method's fees may be, enforced by the host whatever the fee plugin quotes
/// (`[fee_limits.<method>]`): `amount x max_bps / 10 000` plus a fixed allowance in minor
/// units per currency. Unset: 10 % of the amount plus one major unit of the currency, and at
/// least 100 minor units (1.00 EUR, 100 JPY, 1.000 BHD).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FeeLimit {
    /// Proportional part, in basis points of the amount.
    pub max_bps: u32,
    /// Fixed allowance per ISO 4217 code, in minor units; a currency not listed gets one
    /// major unit, at least 100 minor units.
    pub fixed: BTreeMap<String, u64>,
}

impl Default for FeeLimit {
    fn default() -> Self {
        FeeLimit { max_bps: 1_000, fixed: BTreeMap::new() }
    }
}
