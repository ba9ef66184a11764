//! Checked activation: whether a version, with its manifest, may serve on this node. The
//! checks run in this order, and the first that fails refuses the version with its
//! [`ActivationError::code`], leaving the serving one in place:
//!
//! 1. hash: the manifest names one, and the bytes have it (`invalid_manifest`,
//!    `hash_mismatch`);
//! 2. compile, contract, describe: the component loads (`version`) under the manifest's
//!    limits (`compile_failed`, `contract_violation`, `describe_failed`);
//! 3. manifest agreement: it describes itself as the manifest says (`manifest_mismatch`);
//! 4. self-test: every bundled fixture gets its verdict in the sandbox (`self_test_failed`,
//!    or `node_busy` when the node could not run them);
//! 5. pipeline table: the node's method table, rebuilt with the version in place of the
//!    serving one, still fits (`pipeline_invalid`). It needs the node's other versions, so
//!    `lifecycle` runs it, on the table it then swaps in.
//!
//! [`test_version`] runs checks 1 to 4 off any node for `wasmpay plugin test`, reporting every
//! fixture rather than stopping at the first failure.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::contract::PluginInfo;
use crate::health::Health;
use crate::manifest::{Manifest, ManifestError, Sha256};
use crate::pipeline::PipelineError;
use crate::runtime::PluginRuntime;
use crate::selftest::{self, FixtureResult, SelfTestError};
use crate::settings::{FeeLimit, SandboxSettings};
use crate::version::{LoadError, LoadedPlugin};

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
        expected: Sha256,
        /// Of the bytes.
        actual: Sha256,
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

impl From<SelfTestError> for ActivationError {
    fn from(error: SelfTestError) -> ActivationError {
        match error {
            SelfTestError::Failed { fixture, message } => ActivationError::SelfTest { fixture, message },
            SelfTestError::NodeBusy(message) => ActivationError::NodeBusy(message),
        }
    }
}

/// Checks 1 to 4 (all but the switch): the bytes must have the manifest's hash, compile, keep
/// the contract, describe themselves as the manifest says, and pass every bundled fixture in
/// the sandbox (with the manifest's own configuration, and the node's `fee_limits`). The
/// version then serves with `overlay` (the node's `[plugins.<name>] config`) laid over that.
pub(crate) fn prepare(
    runtime: &Arc<PluginRuntime>,
    source_name: &str,
    manifest: &Manifest,
    bytes: &[u8],
    overlay: &BTreeMap<String, String>,
    fee_limits: &BTreeMap<String, FeeLimit>,
) -> Result<LoadedPlugin, ActivationError> {
    check_hash(manifest.expected_hash()?, bytes)?;
    let plugin = Arc::new(described_as_declared(runtime, source_name, manifest, bytes)?);
    selftest::run(runtime, &plugin, manifest, fee_limits)?;
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

/// What `wasmpay plugin test` found of a version.
#[derive(Debug)]
pub struct TestReport {
    /// What it says it is.
    pub info: PluginInfo,
    /// The component's hash.
    pub sha256: Sha256,
    /// Every fixture's result, in the manifest's order.
    pub fixtures: Vec<FixtureResult>,
}

/// Checks a version the way a node does before it may serve (the manifest's hash when it
/// states one, the contract, what it describes itself as), with `settings`' sandbox tightened
/// by the manifest's limits and the default fee bound, then runs *every* fixture `runs` times
/// and reports each: an integrator sees all that fails, and verdicts that change between runs.
pub fn test_version(
    settings: &SandboxSettings,
    source_name: &str,
    manifest: &Manifest,
    bytes: &[u8],
    runs: usize,
) -> Result<TestReport, ActivationError> {
    if let Some(expected) = &manifest.sha256 {
        check_hash(expected, bytes)?;
    }
    let runtime = PluginRuntime::new(settings).map_err(|error| ActivationError::NodeBusy(error.to_string()))?;
    let plugin = Arc::new(described_as_declared(&runtime, source_name, manifest, bytes)?);
    let fixtures = selftest::report(&runtime, &plugin, manifest, &BTreeMap::new(), runs)?;
    Ok(TestReport { info: plugin.info.clone(), sha256: plugin.sha256().clone(), fixtures })
}

fn check_hash(expected: &Sha256, bytes: &[u8]) -> Result<(), ActivationError> {
    let actual = Sha256::of(bytes);
    if actual != *expected {
        return Err(ActivationError::HashMismatch { expected: expected.clone(), actual });
    }
    Ok(())
}

/// The version in `bytes`, compiled and linked under the manifest's limits, with the
/// manifest's configuration, if it describes itself as the manifest declares it.
fn described_as_declared(
    runtime: &Arc<PluginRuntime>,
    source_name: &str,
    manifest: &Manifest,
    bytes: &[u8],
) -> Result<LoadedPlugin, ActivationError> {
    let limits = runtime.limits.tightened(&manifest.limits);
    let mut plugin = LoadedPlugin::load_with(runtime, source_name, bytes, limits)?;
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
    Ok(plugin)
}
