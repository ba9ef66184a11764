//! The sandbox every plugin runs in: one [`Engine`] with the pooling allocator, fuel and epoch
//! interruption, one [`Linker`] that offers only logging and plugin configuration, a memory
//! limiter, and the ticker that drives the wall-clock backstop.
//!
//! Capabilities are denied by default. Rust's std makes a `wasm32-wasip2` component import a
//! dozen `wasi:*` interfaces even when it does no I/O; the sandbox links every one of those
//! functions to a stub that traps and names what was called ([`deny_wasi`]). A plugin gets no
//! clock, no sleep, no randomness, no files, no network, no environment and no stdio: a call
//! to any of them ends that call at once, so no host call can run past a deadline. The
//! contract gives plugins what they need instead (`received-at-ms`, `config`, `log`). One
//! import is answered: `wasi:random/insecure-seed` returns a constant, because Rust's
//! `HashMap` seeds itself from it; a plugin sees one payment of bounded size, so hash flooding
//! is no threat, and its decisions stay a pure function of the payment.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker, ResourceType};
use wasmtime::{Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store};

use super::bindings::{self, HostView};
use crate::census::{Alive, Census};
use crate::logs::{self, LogBudget};
use crate::manifest::ManifestLimits;
use crate::settings::SandboxSettings;

/// How often the epoch advances. The backstop deadline is whole ticks, so a call may overrun
/// it by up to one tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// What `wasi:random/insecure-seed` answers: a constant (see the module documentation).
const INSECURE_SEED: (u64, u64) = (0x7761_736d_7061_7921, 0x0123_4567_89ab_cdef);
/// Core instances, memories and tables one component instance may use (a Rust guest has 3
/// core instances, one memory and a few tables).
const CORE_ITEMS_PER_INSTANCE: u32 = 4;

/// Limits derived from [`SandboxSettings`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Fuel one call may burn.
    pub fuel_per_call: u64,
    /// Epoch ticks one call may run: the wall-clock backstop.
    pub deadline_ticks: u64,
    /// Linear memory cap of one instance, in bytes.
    pub memory_bytes: usize,
    /// Instances alive at once.
    pub max_instances: u32,
}

impl Limits {
    /// Limits from the configuration; zero values are raised to the smallest useful ones.
    pub fn from_settings(settings: &SandboxSettings) -> Limits {
        let tick_ms = u64::try_from(EPOCH_TICK.as_millis()).unwrap_or(1);
        Limits {
            fuel_per_call: settings.fuel_per_call.max(1),
            deadline_ticks: settings.call_timeout_ms.div_ceil(tick_ms).max(1),
            memory_bytes: usize::try_from(settings.memory_limit_mib.max(1) << 20).unwrap_or(usize::MAX),
            max_instances: settings.max_instances.max(1),
        }
    }

    /// These limits, tightened where a plugin's manifest asks for less (never loosened: the
    /// node's limits are the most any plugin gets).
    pub fn tightened(self, manifest: &ManifestLimits) -> Limits {
        let tighter = Limits::from_settings(&SandboxSettings {
            fuel_per_call: manifest.fuel_per_call.unwrap_or(u64::MAX),
            call_timeout_ms: manifest.call_timeout_ms.unwrap_or(u64::MAX / 2),
            memory_limit_mib: manifest.memory_limit_mib.unwrap_or(u64::MAX >> 21),
            ..SandboxSettings::default()
        });
        Limits {
            fuel_per_call: self.fuel_per_call.min(tighter.fuel_per_call),
            deadline_ticks: self.deadline_ticks.min(tighter.deadline_ticks),
            memory_bytes: self.memory_bytes.min(tighter.memory_bytes),
            max_instances: self.max_instances,
        }
    }
}

/// The data of one plugin instance's store: everything the host functions may touch.
pub struct PluginState {
    plugin: Arc<str>,
    config: Arc<Vec<(String, String)>>,
    log_budget: Arc<LogBudget>,
    memory_bytes: usize,
    /// The payment being decided, named in the plugin's log lines.
    payment: Option<Arc<str>>,
    /// Set when the limiter refused a growth: tells a memory blow-up from other traps.
    pub memory_exceeded: bool,
    /// Set when the guest called an import the sandbox denies: which one.
    pub denied_import: Option<String>,
    log_lines: u32,
    _alive: Alive,
}

impl PluginState {
    /// Fresh state for an instance of `plugin`.
    pub fn new(
        plugin: Arc<str>,
        config: Arc<Vec<(String, String)>>,
        log_budget: Arc<LogBudget>,
        limits: &Limits,
        census: &Census,
    ) -> PluginState {
        PluginState {
            plugin,
            config,
            log_budget,
            memory_bytes: limits.memory_bytes,
            payment: None,
            memory_exceeded: false,
            denied_import: None,
            log_lines: 0,
            _alive: census.instance(),
        }
    }

    /// Resets the per-call budgets before a call about `payment`.
    pub fn begin_call(&mut self, payment: Option<Arc<str>>) {
        self.payment = payment;
        self.memory_exceeded = false;
        self.denied_import = None;
        self.log_lines = 0;
    }
}

impl ResourceLimiter for PluginState {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_exceeded = true;
            wasmtime::bail!(
                "plugin {} asked for {desired} bytes of memory, over the {} byte limit",
                self.plugin,
                self.memory_bytes
            );
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl bindings::wasmpay::plugin::log::Host for PluginState {
    fn log(&mut self, level: bindings::wasmpay::plugin::log::Level, message: String) {
        use bindings::wasmpay::plugin::log::Level;
        self.log_lines += 1;
        if self.log_lines > logs::LINES_PER_CALL || !self.log_budget.take() {
            return;
        }
        let message = logs::sanitize(&message);
        let (plugin, payment) = (&*self.plugin, self.payment.as_deref().unwrap_or("-"));
        match level {
            Level::Trace => tracing::trace!(plugin, payment, "{message}"),
            Level::Debug => tracing::debug!(plugin, payment, "{message}"),
            Level::Info => tracing::info!(plugin, payment, "{message}"),
            Level::Warn => tracing::warn!(plugin, payment, "{message}"),
            Level::Error => tracing::error!(plugin, payment, "{message}"),
        }
    }
}

impl bindings::wasmpay::plugin::config::Host for PluginState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
    }

    fn entries(&mut self) -> Vec<(String, String)> {
        self.config.as_ref().clone()
    }
}

impl bindings::wasmpay::plugin::types::Host for PluginState {}

/// Builds the engine: pooling allocator sized explicitly, fuel and epoch interruption on.
///
/// Every payment gets a never-used instance (docs/plugins.md, isolation), so instantiation is
/// on the payment path. Linear memories come from a copy-on-write image, and on release the
/// pool resets in place only the pages the instance dirtied (`pagemap_scan`, Linux 6.7+) and
/// keeps them resident, so the next instance starts without page faults.
pub fn engine(limits: &Limits) -> wasmtime::Result<Engine> {
    let instances = limits.max_instances;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances * CORE_ITEMS_PER_INSTANCE)
        .total_memories(instances)
        .total_tables(instances * CORE_ITEMS_PER_INSTANCE)
        .max_memory_size(limits.memory_bytes)
        .linear_memory_keep_resident(limits.memory_bytes)
        .table_keep_resident(1 << 16)
        .pagemap_scan(Enabled::Auto);
    let mut config = wasmtime::Config::new();
    config
        .consume_fuel(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// The linker every plugin is instantiated with: the wasmpay imports and nothing else.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<PluginState>> {
    let mut linker = Linker::new(engine);
    HostView::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |state| state)?;
    Ok(linker)
}

/// Links every `wasi:*` function `component` imports to a stub that records its name and
/// traps (except `insecure-seed`, a constant), and every `wasi:*` resource to an opaque type. Any other unknown import is left
/// undefined, so linking fails and the plugin is refused at load.
pub fn deny_wasi(linker: &mut Linker<PluginState>, engine: &Engine, component: &Component) -> wasmtime::Result<()> {
    let component_type = component.component_type();
    for (interface, import) in component_type.imports(engine) {
        let ComponentItem::ComponentInstance(instance) = import.ty else { continue };
        if !interface.starts_with("wasi:") {
            continue;
        }
        let mut linked = linker.instance(interface)?;
        for (name, export) in instance.exports(engine) {
            if interface.starts_with("wasi:random/insecure-seed@") && name == "insecure-seed" {
                linked.func_wrap(name, |_, (): ()| Ok((INSECURE_SEED,)))?;
                continue;
            }
            match export.ty {
                ComponentItem::ComponentFunc(_) => {
                    let qualified = format!("{interface}#{name}");
                    linked.func_new(name, move |mut store, _, _, _| {
                        store.data_mut().denied_import = Some(qualified.clone());
                        wasmtime::bail!("the sandbox does not offer `{qualified}`")
                    })?;
                }
                ComponentItem::Resource(_) => linked.resource(name, ResourceType::host::<Denied>(), |_, _| Ok(()))?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// The host type behind every denied WASI resource: no value of it ever exists.
enum Denied {}

/// A store for one instance, with the memory limiter installed, the fuel and deadline of one
/// call set.
pub fn store(engine: &Engine, state: PluginState, limits: &Limits) -> wasmtime::Result<Store<PluginState>> {
    let mut store = Store::new(engine, state);
    store.limiter(|state| state);
    arm(&mut store, limits)?;
    Ok(store)
}

/// Gives `store` the budget of one call.
pub fn arm(store: &mut Store<PluginState>, limits: &Limits) -> wasmtime::Result<()> {
    store.set_fuel(limits.fuel_per_call)?;
    store.set_epoch_deadline(limits.deadline_ticks);
    Ok(())
}

/// One line for a wasmtime error: its chain of causes, without the wasm backtrace wasmtime
/// adds as a context (multi-line, and of no use to a client).
pub fn describe_error(error: &wasmtime::Error) -> String {
    let causes: Vec<String> = error
        .chain()
        .map(|cause| cause.to_string())
        .filter(|text| !text.starts_with("error while executing at wasm backtrace"))
        .map(|text| text.lines().next().unwrap_or_default().to_owned())
        .collect();
    if causes.is_empty() { format!("{error}").lines().next().unwrap_or_default().to_owned() } else { causes.join(": ") }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts ticking `engine`.
    pub fn start(engine: Engine) -> std::io::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("wasmpay-epoch".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })?;
        Ok(EpochTicker { stop, thread: Some(thread) })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for EpochTicker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochTicker").finish_non_exhaustive()
    }
}
