//! The sandbox every plugin runs in: one [`Engine`] with the pooling allocator and epoch
//! interruption, one [`Linker`] that offers only logging, plugin configuration and an empty
//! WASI context (no files, no environment, no sockets; Rust's std needs the interfaces to
//! link), a memory limiter and the ticker that drives epoch deadlines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{self, PaymentMethod};
use crate::settings::SandboxSettings;

/// How often the epoch advances. Deadlines are whole ticks, so a call may overrun its
/// budget by up to one tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Live instances the pool holds: one warm instance per (worker, plugin), plus loads.
const POOL_INSTANCES: u32 = 512;
/// Log lines one call may write; the rest are dropped so a chatty plugin cannot flood logs.
const LOG_LINES_PER_CALL: u32 = 32;
/// Longest log line kept, in bytes.
const LOG_LINE_BYTES: usize = 1_024;

/// Limits derived from [`SandboxSettings`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Epoch ticks one call may run.
    pub deadline_ticks: u64,
    /// Linear memory cap of one instance, in bytes.
    pub memory_bytes: usize,
    /// Calls before a warm instance is replaced.
    pub calls_per_instance: u32,
}

impl Limits {
    /// Limits from the configuration; zero values are raised to the smallest useful ones.
    pub fn from_settings(settings: &SandboxSettings) -> Limits {
        let tick_ms = u64::try_from(EPOCH_TICK.as_millis()).unwrap_or(1);
        Limits {
            deadline_ticks: settings.call_timeout_ms.div_ceil(tick_ms).max(1),
            memory_bytes: usize::try_from(settings.memory_limit_mib.max(1) << 20).unwrap_or(usize::MAX),
            calls_per_instance: settings.calls_per_instance.max(1),
        }
    }
}

/// The data of one plugin instance's store.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    plugin: Arc<str>,
    config: Arc<Vec<(String, String)>>,
    memory_bytes: usize,
    /// Set when the limiter refused a growth: tells a memory blow-up from other traps.
    pub memory_exceeded: bool,
    log_lines: u32,
}

impl PluginState {
    /// Fresh state for an instance of `plugin`.
    pub fn new(plugin: Arc<str>, config: Arc<Vec<(String, String)>>, limits: &Limits) -> PluginState {
        PluginState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            plugin,
            config,
            memory_bytes: limits.memory_bytes,
            memory_exceeded: false,
            log_lines: 0,
        }
    }

    /// Resets the per-call budgets before a call.
    pub fn begin_call(&mut self) {
        self.memory_exceeded = false;
        self.log_lines = 0;
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
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
    fn log(&mut self, level: bindings::wasmpay::plugin::log::Level, mut message: String) {
        use bindings::wasmpay::plugin::log::Level;
        self.log_lines += 1;
        if self.log_lines > LOG_LINES_PER_CALL {
            return;
        }
        if message.len() > LOG_LINE_BYTES {
            let cut = (0..=LOG_LINE_BYTES).rev().find(|i| message.is_char_boundary(*i)).unwrap_or(0);
            message.truncate(cut);
        }
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
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

/// Builds the engine: pooling allocator sized explicitly, epoch interruption on.
pub fn engine(limits: &Limits) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOL_INSTANCES)
        .total_core_instances(POOL_INSTANCES * 4)
        .total_memories(POOL_INSTANCES)
        .total_tables(POOL_INSTANCES * 4)
        .max_memory_size(limits.memory_bytes);
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true).allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// The linker every plugin is instantiated with.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<PluginState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    PaymentMethod::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |state| state)?;
    Ok(linker)
}

/// A store for one instance, with the memory limiter installed and a deadline set.
pub fn store(engine: &Engine, state: PluginState, limits: &Limits) -> Store<PluginState> {
    let mut store = Store::new(engine, state);
    store.limiter(|state| state);
    store.set_epoch_deadline(limits.deadline_ticks);
    store
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
