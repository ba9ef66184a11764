//! Running a pipeline on warm instances, with every failure contained.
//!
//! Isolation model (a deliberate choice, see docs/plugins.md): each payment worker keeps one
//! warm instance per plugin version and reuses it for up to `calls_per_instance` calls
//! (≈ 3 µs a call instead of ≈ 30 µs for a fresh instance). Plugins must be stateless; the SDK's
//! associated-function trait makes that the natural way to write one. An instance is
//! discarded after any trap, timeout or memory blow-up, so a poisoned instance never serves
//! again, and after `calls_per_instance` calls, which bounds whatever a plugin accumulates.
//! A worker serves one partition, so state a plugin might keep never crosses partitions.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap};

use super::bindings::{fee_policy, types, validator};
use super::catalog::LoadedPlugin;
use super::pipeline::Pipeline;
use super::sandbox::{self, PluginState};
use super::{PluginRuntime, describe_error};
use wasmpay_protocol::PaymentRequest;
use wasmpay_protocol::money::{FeeBearer, MAX_PAYMENT_MINOR_UNITS};

/// Told of every plugin call, so the node can count and time calls without this crate
/// knowing how they are reported.
pub trait CallObserver: Send + Sync + std::fmt::Debug {
    /// One export call of `plugin` (`name@version`) finished after `elapsed`.
    fn plugin_called(&self, plugin: &str, elapsed: Duration);
}

/// A payment as the plugins see it.
#[derive(Debug)]
pub struct PaymentInput {
    payment: types::Payment,
}

impl PaymentInput {
    /// The plugin view of `request`, stamped with when the host accepted it.
    pub fn new(request: &PaymentRequest, received_at_ms: u64) -> PaymentInput {
        let pairs = |map: &std::collections::BTreeMap<String, String>| {
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        PaymentInput {
            payment: types::Payment {
                id: request.id.clone(),
                payer: request.payer.to_string(),
                payee: request.payee.to_string(),
                amount: types::Money { minor_units: request.amount, currency: request.currency.code().to_owned() },
                method: request.method.clone(),
                details: pairs(&request.details),
                metadata: pairs(&request.metadata),
                received_at_ms,
            },
        }
    }
}

/// A fee quote that passed the host's checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedFee {
    /// Minor units.
    pub total: u64,
    /// Who bears it.
    pub bearer: FeeBearer,
}

/// A plugin's refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginRejection {
    /// `name@version` of the refusing plugin.
    pub plugin: String,
    /// Its stable code.
    pub code: String,
    /// Its explanation.
    pub message: String,
    /// Whether a retry can help.
    pub retryable: bool,
}

/// What the plugins decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every validator passed and the fee policy quoted.
    Priced(CheckedFee),
    /// A validator or the fee policy refused.
    Declined(PluginRejection),
}

/// How a plugin call failed. The payment is refused with `plugin_failed`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FailureKind {
    /// The call ran past its epoch deadline.
    #[error("ran past its time limit")]
    Timeout,
    /// The instance tried to grow memory past the cap.
    #[error("exceeded its memory limit")]
    MemoryLimit,
    /// The guest trapped (a panic, an unreachable, a bad memory access).
    #[error("trapped: {0}")]
    Trap(String),
    /// The guest answered something the contract forbids.
    #[error("broke the contract: {0}")]
    Contract(String),
    /// No instance could be created (the pool is exhausted, or instantiation trapped).
    #[error("could not be instantiated: {0}")]
    Instantiation(String),
}

/// A failed plugin call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("plugin {plugin} {kind}")]
pub struct PluginFailure {
    /// `name@version`.
    pub plugin: String,
    /// What went wrong.
    pub kind: FailureKind,
}

/// One warm instance of a plugin version.
struct Warm {
    store: Store<PluginState>,
    validator: Option<validator::Guest>,
    fee_policy: Option<fee_policy::Guest>,
    calls: u32,
    /// Keeps the version (and its `load_id`, the cache key) alive while warm.
    _plugin: Arc<LoadedPlugin>,
}

/// The warm instances of one worker. Not shared: a worker runs one payment at a time.
pub struct Instances {
    runtime: Arc<PluginRuntime>,
    observer: Arc<dyn CallObserver>,
    warm: HashMap<u64, Warm>,
}

impl std::fmt::Debug for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instances").field("warm", &self.warm.len()).finish_non_exhaustive()
    }
}

impl Instances {
    /// An empty set of warm instances.
    pub fn new(runtime: Arc<PluginRuntime>, observer: Arc<dyn CallObserver>) -> Instances {
        Instances { runtime, observer, warm: HashMap::new() }
    }

    /// Runs `pipeline` on a blocking thread, outside the async runtime: guest code is
    /// synchronous (a call may spin until its deadline), and WASI's synchronous bindings must
    /// not be entered from an async task. The warm instances travel with the call and back.
    pub async fn run_blocking(&mut self, pipeline: Pipeline, input: PaymentInput) -> Result<Verdict, PluginFailure> {
        let mut detached = Instances {
            runtime: self.runtime.clone(),
            observer: self.observer.clone(),
            warm: std::mem::take(&mut self.warm),
        };
        let joined = tokio::task::spawn_blocking(move || {
            let verdict = detached.run(&pipeline, &input);
            (detached.warm, verdict)
        })
        .await;
        match joined {
            Ok((warm, verdict)) => {
                self.warm = warm;
                verdict
            }
            // Only a panic in the host's own code gets here; the instances are lost with it.
            Err(error) => Err(PluginFailure { plugin: "host".into(), kind: FailureKind::Trap(error.to_string()) }),
        }
    }

    /// Runs the validators in order, then the fee policy.
    pub fn run(&mut self, pipeline: &Pipeline, input: &PaymentInput) -> Result<Verdict, PluginFailure> {
        for plugin in &pipeline.validators {
            let result = self.call(plugin, |warm| {
                warm.validator.as_ref().map(|guest| guest.call_validate(&mut warm.store, &input.payment))
            })?;
            if let Err(rejection) = result {
                return Ok(Verdict::Declined(rejection_of(plugin, rejection)));
            }
        }
        let plugin = &pipeline.fee_policy;
        let quote = self.call(plugin, |warm| {
            warm.fee_policy.as_ref().map(|guest| guest.call_quote_fee(&mut warm.store, &input.payment))
        })?;
        match quote {
            Err(rejection) => Ok(Verdict::Declined(rejection_of(plugin, rejection))),
            Ok(quote) => check_quote(&quote, input.payment.amount.minor_units)
                .map(Verdict::Priced)
                .map_err(|message| PluginFailure { plugin: plugin.key.clone(), kind: FailureKind::Contract(message) }),
        }
    }

    /// One call on a warm instance of `plugin`; the instance is dropped after any failure.
    fn call<R>(
        &mut self,
        plugin: &Arc<LoadedPlugin>,
        invoke: impl FnOnce(&mut Warm) -> Option<wasmtime::Result<R>>,
    ) -> Result<R, PluginFailure> {
        let failure = |kind| PluginFailure { plugin: plugin.key.clone(), kind };
        let limits = self.runtime.limits;
        let warm = match self.warm.entry(plugin.load_id) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(instantiate(&self.runtime, plugin).map_err(failure)?),
        };
        warm.store.set_epoch_deadline(limits.deadline_ticks);
        warm.store.data_mut().begin_call();
        let started = Instant::now();
        let result = invoke(warm);
        self.observer.plugin_called(&plugin.key, started.elapsed());
        let outcome = match result {
            None => Err(FailureKind::Contract("does not export the interface its pipeline role needs".into())),
            Some(Ok(value)) => Ok(value),
            Some(Err(error)) => Err(classify(&error, warm.store.data())),
        };
        warm.calls += 1;
        if outcome.is_err() || warm.calls >= limits.calls_per_instance {
            self.warm.remove(&plugin.load_id);
        }
        outcome.map_err(failure)
    }
}

fn instantiate(runtime: &PluginRuntime, plugin: &Arc<LoadedPlugin>) -> Result<Warm, FailureKind> {
    let state = PluginState::new(plugin.name.clone(), plugin.config.clone(), &runtime.limits);
    let mut store = sandbox::store(&runtime.engine, state, &runtime.limits);
    let instance = plugin.pre.instantiate(&mut store).map_err(|error| match classify(&error, store.data()) {
        FailureKind::Trap(message) => FailureKind::Instantiation(message),
        other => other,
    })?;
    let load = |error: wasmtime::Error| FailureKind::Instantiation(describe_error(&error));
    let validator =
        plugin.validator.as_ref().map(|indices| indices.load(&mut store, &instance)).transpose().map_err(load)?;
    let fee_policy =
        plugin.fee_policy.as_ref().map(|indices| indices.load(&mut store, &instance)).transpose().map_err(load)?;
    Ok(Warm { store, validator, fee_policy, calls: 0, _plugin: plugin.clone() })
}

fn classify(error: &wasmtime::Error, state: &PluginState) -> FailureKind {
    if state.memory_exceeded {
        return FailureKind::MemoryLimit;
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => FailureKind::Timeout,
        Some(trap) => FailureKind::Trap(trap.to_string()),
        None => FailureKind::Trap(describe_error(error)),
    }
}

fn rejection_of(plugin: &LoadedPlugin, rejection: types::Rejection) -> PluginRejection {
    PluginRejection {
        plugin: plugin.key.clone(),
        code: rejection.code,
        message: rejection.message,
        retryable: rejection.retryable,
    }
}

/// The host does not trust a quote: the lines must add up to the total, and a fee borne by
/// the payee cannot exceed the amount.
fn check_quote(quote: &types::FeeQuote, amount: u64) -> Result<CheckedFee, String> {
    let sum = quote.lines.iter().try_fold(0_u64, |sum, line| sum.checked_add(line.minor_units));
    if sum != Some(quote.total) {
        return Err(format!("fee lines add up to {sum:?}, not the total {}", quote.total));
    }
    if quote.total > MAX_PAYMENT_MINOR_UNITS {
        return Err(format!("fee {} exceeds 2^53 - 1", quote.total));
    }
    let bearer = match quote.bearer {
        types::FeeBearer::Payer => FeeBearer::Payer,
        types::FeeBearer::Payee => FeeBearer::Payee,
    };
    if bearer == FeeBearer::Payee && quote.total > amount {
        return Err(format!("fee {} borne by the payee exceeds the amount {amount}", quote.total));
    }
    Ok(CheckedFee { total: quote.total, bearer })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(total: u64, lines: &[u64], bearer: types::FeeBearer) -> types::FeeQuote {
        types::FeeQuote {
            total,
            lines: lines
                .iter()
                .map(|minor_units| types::FeeLine { label: "x".into(), minor_units: *minor_units })
                .collect(),
            bearer,
        }
    }

    #[test]
    fn quotes_must_add_up_and_fit_the_amount() {
        let payee = types::FeeBearer::Payee;
        assert_eq!(
            check_quote(&quote(55, &[30, 25], payee), 100),
            Ok(CheckedFee { total: 55, bearer: FeeBearer::Payee })
        );
        assert!(check_quote(&quote(56, &[30, 25], payee), 100).is_err());
        assert!(check_quote(&quote(101, &[101], payee), 100).is_err());
        assert!(check_quote(&quote(101, &[101], types::FeeBearer::Payer), 100).is_ok());
        assert!(check_quote(&quote(0, &[u64::MAX, 1], payee), 100).is_err());
    }
}
