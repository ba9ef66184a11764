//! # wasmpay-plugin-host
//!
//! Payment-method plugins: WebAssembly components, built against `wit/`, that validate and
//! price payments, run by wasmtime in a sandbox. This crate knows the plugin contract and the
//! wire types of `wasmpay-protocol`; it knows nothing of NATS, HTTP or the ledger.
//!
//! Layout (each module imports only modules below it in this list):
//! - `lifecycle`: the node's plugin set over time: activation, rollback, removal, status.
//! - `sources`: the plugins a node starts with: built in, a plugin directory, configured paths.
//! - `activation`: the ordered checks a version with a manifest passes before it may serve,
//!   and the stable code of each refusal.
//! - `selftest`: a version's bundled fixtures, run before it may serve.
//! - `inspect`: what a component imports, exports and describes, for `wasmpay plugin inspect`.
//! - `instances`: running a pipeline, one fresh instance per plugin per payment.
//! - `pipeline`: which plugins decide each payment method, and its fee bound; the FX plugin.
//! - `version`: a loaded plugin version: compiled, linked, described, within the contract.
//! - `runtime`: the engine, linker, limits and census every plugin of a node shares.
//! - `shares`: how many of a method's payments may run plugins at once.
//! - `cache`: compiled code kept on disk.
//! - `sandbox`: engine, linker, limits, store data, denied imports, epoch ticker.
//! - `manifest`: what an operator states about a version (hash, methods, config, fixtures).
//! - `health`: calls, failures, latency and quarantine of each version.
//! - `logs`: plugin log lines: escaped, capped, rate limited.
//! - `contract`: what a plugin may answer (shapes, caps, fee checks).
//! - `census`: how many versions and instances are alive.
//! - `bindings`: the `wasmpay:plugin` world, generated; private.
//! - `settings`: what an operator configures (limits, plugin files and config, pipelines).

mod activation;
mod bindings;
mod cache;
mod census;
mod contract;
mod health;
mod inline;
mod inspect;
mod instances;
mod lifecycle;
mod logs;
pub mod manifest;
mod pipeline;
mod runtime;
mod sandbox;
mod selftest;
mod settings;
mod shares;
mod sources;
mod version;

/// The version of the `wasmpay:plugin` WIT package this host serves (components built against
/// its older minor versions load unchanged), as `wit/` declares it.
pub const CONTRACT_VERSION: &str = "0.1.2";

pub use activation::{ActivationError, TestReport, test_version};
pub use census::Census;
pub use contract::{CheckedFee, PluginInfo, RefundFee, valid_plugin_name};
pub use health::HealthView;
pub use inspect::{Import, Inspection, inspect};
pub use instances::{
    CallObserver, FailureKind, Instances, PaymentInput, PluginFailure, PluginRejection, RateInput, RateVerdict,
    RefundInput, RefundVerdict, RefundedPayment, Verdict,
};
pub use lifecycle::{PluginHost, PluginStatus, Refusal, Switched, VersionState, VersionStatus};
pub use manifest::{Manifest, Sha256};
pub use pipeline::{FxPipeline, Pipeline, PipelineError, Pipelines};
pub use runtime::{PluginRuntime, RuntimeError};
pub use selftest::FixtureResult;
pub use settings::{FeeLimit, MethodSettings, PluginSettings, QuarantineSettings, SandboxSettings};
pub use sources::{Origin, PluginError, PluginSource, directory_sources, load_pipelines};
pub use version::{LoadError, LoadedPlugin, PluginId};

#[cfg(test)]
mod tests;
