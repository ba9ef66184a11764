//! The node's plugin set over time: which version of each plugin serves, which earlier ones
//! are kept for a rollback, and the switch between them.
//!
//! A switch builds the complete new method table first and then replaces the current one in
//! a single pointer swap. A payment takes a snapshot of the table when it starts and finishes
//! on it, so it is decided by one version from start to end and records that version; nothing
//! waits for payments in flight, and a check that fails changes nothing.
//!
//! What a retired version holds goes with its last reference: the method table a payment in
//! flight still uses, and the spare instances of the workers, each of which keeps spares for
//! the pipeline it ran last only. Only the last [`RETAINED`] earlier versions of a plugin stay
//! loaded for a rollback; older ones are dropped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use crate::activation::{self, ActivationError};
use crate::health::HealthView;
use crate::manifest::{Manifest, Sha256};
use crate::pipeline::Pipelines;
use crate::runtime::PluginRuntime;
use crate::settings::{FeeLimit, MethodSettings, PluginSettings};
use crate::shares::MethodShares;
use crate::sources::{self, Origin, PluginError, PluginSource};
use crate::version::LoadedPlugin;

/// Earlier versions of a plugin kept loaded for a rollback.
pub const RETAINED: usize = 3;

/// The last version of a plugin that was refused, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// `name@version` as the manifest gave it, or `name (removal)`.
    pub version: String,
    /// The refused component's SHA-256 (empty for a removal).
    pub sha256: String,
    /// Stable code ([`ActivationError::code`]).
    pub code: String,
    /// Why.
    pub message: String,
    /// Which attempt it was ([`PluginHost::attempts`]): a refusal is news to a caller only
    /// if it came after the caller asked.
    pub attempt: u64,
}

/// A plugin version's place on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionState {
    /// It decides its methods' payments.
    Active,
    /// It would, but fails too often: its methods are refused at once.
    Quarantined,
    /// Kept loaded for a rollback.
    Retained,
}

/// One loaded version of a plugin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionStatus {
    /// Semantic version.
    pub version: String,
    /// SHA-256 of the component.
    pub sha256: Sha256,
    /// Its place.
    pub state: VersionState,
    /// Whether it was checked against a manifest (with its fixtures) when it was loaded.
    pub checked: bool,
    /// Whether it prices refunds (exports `refund-fee`, WIT 0.1.1); if not, they keep the fee.
    pub prices_refunds: bool,
    /// Whether it prices conversions (exports `fx`, WIT 0.1.2): the deployment's FX plugin.
    pub quotes_rates: bool,
    /// Calls, failures, latency.
    #[serde(flatten)]
    pub health: HealthView,
}

/// A plugin as the operators' API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PluginStatus {
    /// Its name.
    pub name: String,
    /// The serving version; `None` once removed.
    pub active: Option<String>,
    /// The methods it serves by default.
    pub methods: Vec<String>,
    /// Where the serving version came from.
    pub origin: Option<Origin>,
    /// The serving version first, then those retained, most recent first.
    pub versions: Vec<VersionStatus>,
    /// The last version that failed its checks, if the last attempt failed.
    pub refused: Option<Refusal>,
}

/// What a switch did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switched {
    /// `name@version` now serving (`None`: the plugin was removed).
    pub active: Option<String>,
    /// `name@version` that served before.
    pub previous: Option<String>,
}

#[derive(Debug, Default)]
struct Slot {
    active: Option<(Arc<LoadedPlugin>, Origin)>,
    /// Earlier versions, most recent last.
    retained: Vec<Arc<LoadedPlugin>>,
    refused: Option<Refusal>,
}

#[derive(Debug)]
struct Registry {
    methods: BTreeMap<String, MethodSettings>,
    fee_limits: BTreeMap<String, FeeLimit>,
    overlays: BTreeMap<String, BTreeMap<String, String>>,
    slots: BTreeMap<String, Slot>,
}

/// The node's plugins: a snapshot for each payment, and the operations that change them.
#[derive(Debug)]
pub struct PluginHost {
    runtime: Arc<PluginRuntime>,
    current: RwLock<Arc<Pipelines>>,
    registry: Mutex<Registry>,
    /// Held by every change, from its check to its switch: versions arriving from the store
    /// and the watched directory at once are installed one after the other, in arrival order.
    /// (So a change can wait for another's compile: call them off the async threads.)
    installing: Mutex<()>,
    /// Attempts at changing a plugin so far.
    attempts: std::sync::atomic::AtomicU64,
}

impl PluginHost {
    /// Loads `sources` and the configured plugins (CPU work and guest code: call it off the
    /// async threads) and serves them with `methods` and `fee_limits`.
    pub fn start(
        runtime: Arc<PluginRuntime>,
        sources: &[PluginSource],
        plugins: &BTreeMap<String, PluginSettings>,
        methods: &BTreeMap<String, MethodSettings>,
        fee_limits: &BTreeMap<String, FeeLimit>,
    ) -> Result<PluginHost, PluginError> {
        let loaded = sources::load_plugins(&runtime, sources, plugins, fee_limits)?;
        let pipelines = Pipelines::build(
            &runtime.shares,
            loaded.iter().map(|(plugin, _)| plugin.clone()).collect(),
            methods,
            fee_limits,
        )?;
        let mut slots: BTreeMap<String, Slot> = BTreeMap::new();
        for (plugin, origin) in loaded {
            let name = plugin.info().name.clone();
            slots.entry(name).or_default().active = Some((plugin, origin));
        }
        let overlays = plugins.iter().map(|(name, settings)| (name.clone(), settings.config.clone())).collect();
        let registry = Registry { methods: methods.clone(), fee_limits: fee_limits.clone(), overlays, slots };
        Ok(PluginHost {
            runtime,
            current: RwLock::new(Arc::new(pipelines)),
            registry: Mutex::new(registry),
            installing: Mutex::new(()),
            attempts: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<PluginRuntime> {
        &self.runtime
    }

    /// A snapshot of the current pipelines: a payment decides on one snapshot.
    pub fn pipelines(&self) -> Arc<Pipelines> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Checked activation of the version `manifest` describes, from `bytes`: it must pass the
    /// checks of the `activation` module, the method table last, before it replaces the
    /// serving version of its name. A version loaded here with this very manifest (hash, config, limits, fixtures)
    /// is switched to without loading it again ([`PluginHost::reuse`]). Compiles and runs
    /// guest code: call it off the async threads.
    pub fn install(&self, manifest: &Manifest, bytes: &[u8], origin: Origin) -> Result<Switched, ActivationError> {
        let _installing = self.installing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(switched) = self.reuse_locked(manifest, origin.clone()) {
            return switched;
        }
        let attempt = self.attempt();
        let plugin = self.prepare(manifest, bytes, &origin, attempt)?;
        let switched = self.switch(&manifest.name, Some((Arc::new(plugin), origin)));
        self.note(manifest, attempt, switched.as_ref().err(), true);
        switched
    }

    /// Switches to the version `manifest` describes if it is loaded here with this very
    /// manifest, lifting its quarantine if any; `None` if it is not loaded (then
    /// [`PluginHost::install`] it with its bytes).
    pub fn reuse(&self, manifest: &Manifest, origin: Origin) -> Option<Result<Switched, ActivationError>> {
        let _installing = self.installing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.reuse_locked(manifest, origin)
    }

    fn reuse_locked(&self, manifest: &Manifest, origin: Origin) -> Option<Result<Switched, ActivationError>> {
        let loaded = self.loaded(&manifest.name, |plugin| plugin.manifest() == Some(manifest))?;
        let attempt = self.attempt();
        let switched = self.switch(&manifest.name, Some((loaded, origin)));
        self.note(manifest, attempt, switched.as_ref().err(), true);
        Some(switched)
    }

    /// Records that `manifest`'s version cannot be installed here for a reason found outside
    /// this host (its component is missing from the store), as an install's refusal would be.
    pub fn refuse(&self, manifest: &Manifest, error: &ActivationError) {
        let attempt = self.attempt();
        self.note(manifest, attempt, Some(error), false);
    }

    /// Attempts at changing a plugin so far: a caller that reads it before asking for a change
    /// knows a refusal with a larger `attempt` answers its request.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn attempt(&self) -> u64 {
        self.attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
    }

    /// Checked activation without the switch: whether the version described by `manifest`
    /// would go live here, its place in the method table included. The outcome is shown as
    /// an install's would be (the API checks an upload this way before it stores it for the
    /// cluster).
    pub fn check(&self, manifest: &Manifest, bytes: &[u8], origin: &Origin) -> Result<(), ActivationError> {
        let attempt = self.attempt();
        let plugin = self.prepare(manifest, bytes, origin, attempt)?;
        let fits = self.table_with(&manifest.name, Some(&Arc::new(plugin))).map(drop);
        // A passing check changes nothing here: it must not hide a refusal of what serves.
        if let Err(error) = &fits {
            self.note(manifest, attempt, Some(error), false);
        }
        fits
    }

    /// Whether `name` could stop serving here (no configured pipeline needs it).
    pub fn check_removal(&self, name: &str) -> Result<(), ActivationError> {
        self.table_with(name, None).map(drop)
    }

    fn prepare(
        &self,
        manifest: &Manifest,
        bytes: &[u8],
        origin: &Origin,
        attempt: u64,
    ) -> Result<LoadedPlugin, ActivationError> {
        let (overlay, fee_limits) = {
            let registry = self.lock();
            (registry.overlays.get(&manifest.name).cloned().unwrap_or_default(), registry.fee_limits.clone())
        };
        let source_name = format!("{} ({})", manifest.key(), origin_label(origin));
        let prepared = activation::prepare(&self.runtime, &source_name, manifest, bytes, &overlay, &fee_limits);
        if let Err(error) = &prepared {
            self.note(manifest, attempt, Some(error), false);
        }
        prepared
    }

    /// Records the outcome of an attempt at `manifest`'s plugin: a refusal is shown (and
    /// logged) until a later change passes (`passed`: an install or switch that went through).
    fn note(&self, manifest: &Manifest, attempt: u64, error: Option<&ActivationError>, passed: bool) {
        let refusal = error.map(|error| {
            tracing::error!(plugin = %manifest.key(), code = error.code(), %error, "plugin version refused; the serving version stays");
            Refusal {
                version: manifest.key(),
                sha256: manifest.sha256.as_ref().map(Sha256::to_string).unwrap_or_default(),
                code: error.code().to_owned(),
                message: error.to_string(),
                attempt,
            }
        });
        self.record(&manifest.name, refusal, passed);
    }

    fn record(&self, name: &str, refusal: Option<Refusal>, passed: bool) {
        let mut registry = self.lock();
        match (registry.slots.get_mut(name), refusal) {
            (Some(slot), Some(refusal)) => slot.refused = Some(refusal),
            (Some(slot), None) if passed => slot.refused = None,
            // A plugin never loaded here is shown by name, for its refusal only.
            (None, Some(refusal)) => registry.slots.entry(name.to_owned()).or_default().refused = Some(refusal),
            _ => {}
        }
    }

    /// Stops serving `name`: its methods are refused as unknown (unless a configured pipeline
    /// needs it, which refuses the removal, and shows it as `<name> (removal)`).
    pub fn remove(&self, name: &str) -> Result<Switched, ActivationError> {
        let _installing = self.installing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !self.is_serving(name) {
            return Err(ActivationError::Unknown(format!("plugin `{name}` is not serving")));
        }
        let attempt = self.attempt();
        let removed = self.switch(name, None);
        let refusal = removed.as_ref().err().map(|error| {
            tracing::error!(plugin = name, code = error.code(), %error, "plugin removal refused; the plugin keeps serving");
            Refusal {
                version: format!("{name} (removal)"),
                sha256: String::new(),
                code: error.code().to_owned(),
                message: error.to_string(),
                attempt,
            }
        });
        self.record(name, refusal, removed.is_ok());
        removed
    }

    /// Whether `manifest`'s version serves here, with this very manifest, and is not
    /// quarantined: then there is nothing to switch.
    pub fn serves(&self, manifest: &Manifest) -> bool {
        let registry = self.lock();
        let active = registry.slots.get(&manifest.name).and_then(|slot| slot.active.as_ref());
        active.is_some_and(|(plugin, _)| plugin.manifest() == Some(manifest) && plugin.health().quarantined().is_none())
    }

    /// The manifest of the version of `name` serving here, if it was loaded with one.
    pub fn active_manifest(&self, name: &str) -> Option<Manifest> {
        let registry = self.lock();
        registry.slots.get(name)?.active.as_ref()?.0.manifest().cloned()
    }

    /// Whether some version of `name` serves here.
    pub fn is_serving(&self, name: &str) -> bool {
        self.lock().slots.get(name).is_some_and(|slot| slot.active.is_some())
    }

    /// The manifest (with its hash) of the loaded `version` of `name`, if it was loaded with
    /// one.
    pub fn manifest(&self, name: &str, version: &str) -> Option<Manifest> {
        self.loaded(name, |plugin| plugin.info().version == version)?.manifest().cloned()
    }

    /// Every plugin, by name.
    pub fn status(&self) -> Vec<PluginStatus> {
        let registry = self.lock();
        registry
            .slots
            .iter()
            .map(|(name, slot)| {
                let active = slot.active.as_ref().map(|(plugin, _)| plugin);
                let version = |plugin: &Arc<LoadedPlugin>, serving: bool| {
                    let health = plugin.health().view();
                    let state = match (serving, health.quarantined.is_some()) {
                        (true, true) => VersionState::Quarantined,
                        (true, false) => VersionState::Active,
                        (false, _) => VersionState::Retained,
                    };
                    VersionStatus {
                        version: plugin.info().version.clone(),
                        sha256: plugin.sha256().clone(),
                        state,
                        checked: plugin.manifest().is_some(),
                        prices_refunds: plugin.info().prices_refunds,
                        quotes_rates: plugin.info().quotes_rates,
                        health,
                    }
                };
                let mut versions: Vec<VersionStatus> = active.map(|plugin| version(plugin, true)).into_iter().collect();
                versions.extend(slot.retained.iter().rev().map(|plugin| version(plugin, false)));
                PluginStatus {
                    name: name.clone(),
                    active: active.map(|plugin| plugin.info().version.clone()),
                    methods: active.map(|plugin| plugin.info().methods.clone()).unwrap_or_default(),
                    origin: slot.active.as_ref().map(|(_, origin)| origin.clone()),
                    versions,
                    refused: slot.refused.clone(),
                }
            })
            .collect()
    }

    /// The serving or retained version of `name` that `wanted` picks.
    fn loaded(&self, name: &str, wanted: impl Fn(&LoadedPlugin) -> bool) -> Option<Arc<LoadedPlugin>> {
        let registry = self.lock();
        let slot = registry.slots.get(name)?;
        slot.active
            .iter()
            .map(|(plugin, _)| plugin)
            .chain(slot.retained.iter().rev())
            .find(|plugin| wanted(plugin))
            .cloned()
    }

    /// Makes `next` the serving version of `name` (`None` removes it): builds the whole new
    /// method table, and only if it fits, swaps it in and moves the serving version to the
    /// retained ones.
    fn switch(&self, name: &str, next: Option<(Arc<LoadedPlugin>, Origin)>) -> Result<Switched, ActivationError> {
        let mut registry = self.lock();
        let pipelines = table(&self.runtime.shares, &registry, name, next.as_ref().map(|(plugin, _)| plugin))?;
        let slot = registry.slots.entry(name.to_owned()).or_default();
        let previous = match next {
            Some((plugin, origin)) => {
                plugin.health().release();
                slot.retained.retain(|kept| !Arc::ptr_eq(kept, &plugin));
                slot.active.replace((plugin, origin))
            }
            None => slot.active.take(),
        };
        let switched = Switched {
            active: slot.active.as_ref().map(|(plugin, _)| plugin.key().to_owned()),
            previous: previous.as_ref().map(|(plugin, _)| plugin.key().to_owned()),
        };
        if let Some((previous, _)) = previous
            && !slot.active.as_ref().is_some_and(|(plugin, _)| Arc::ptr_eq(plugin, &previous))
        {
            slot.retained.push(previous);
            let excess = slot.retained.len().saturating_sub(RETAINED);
            slot.retained.drain(..excess);
        }
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(pipelines);
        tracing::info!(
            plugin = name,
            active = switched.active.as_deref().unwrap_or("none"),
            previous = switched.previous.as_deref().unwrap_or("none"),
            "plugin switched"
        );
        Ok(switched)
    }

    /// The method table with `plugin` serving `name` (`None`: without `name`), or why it
    /// cannot be built.
    fn table_with(&self, name: &str, plugin: Option<&Arc<LoadedPlugin>>) -> Result<Pipelines, ActivationError> {
        table(&self.runtime.shares, &self.lock(), name, plugin)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The method table of `registry` with `plugin` serving `name` (`None`: without `name`).
fn table(
    shares: &MethodShares,
    registry: &Registry,
    name: &str,
    plugin: Option<&Arc<LoadedPlugin>>,
) -> Result<Pipelines, ActivationError> {
    let mut plugins: Vec<Arc<LoadedPlugin>> = registry
        .slots
        .iter()
        .filter(|(other, _)| other.as_str() != name)
        .filter_map(|(_, slot)| slot.active.as_ref().map(|(plugin, _)| plugin.clone()))
        .collect();
    plugins.extend(plugin.cloned());
    Ok(Pipelines::build(shares, plugins, &registry.methods, &registry.fee_limits)?)
}

fn origin_label(origin: &Origin) -> String {
    match origin {
        Origin::Builtin => "built in".into(),
        Origin::File(path) => path.clone(),
        Origin::Cluster => "cluster store".into(),
    }
}
