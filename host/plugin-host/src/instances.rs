//! Running a pipeline, one never-used instance per plugin per payment, with every failure
//! contained.
//!
//! Isolation (docs/plugins.md): a payment's plugins run on instances created for that payment
//! and dropped after it, so nothing a plugin keeps in memory (a global, a cache, the last card
//! number) can reach another payment, whatever the plugin does. Within one payment a plugin
//! that is both validator and fee policy answers both calls from the same instance: it sees
//! that one payment only. Instances come from the pooling allocator's warm slots, so a fresh
//! one costs a few microseconds, not a cold start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmpay_protocol::PaymentRequest;
use wasmpay_protocol::money::Currency;
use wasmtime::{Store, Trap};

use super::bindings::{fee_policy, types, validator};
use super::catalog::LoadedPlugin;
use super::pipeline::Pipeline;
use super::sandbox::{self, PluginState};
use super::{PluginRuntime, describe_error};
use crate::contract::{CheckedFee, check_quote, check_rejection};

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
    id: Arc<str>,
    currency: Currency,
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
            id: Arc::from(request.id.as_str()),
            currency: request.currency,
        }
    }
}

/// A plugin's refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginRejection {
    /// `name@version` of the refusing plugin.
    pub plugin: String,
    /// Its stable code.
    pub code: String,
    /// Its explanation, capped.
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
    /// The call used up its fuel: more work than one call may do.
    #[error("exceeded its work budget of {0} fuel")]
    OutOfFuel(u64),
    /// The call ran past the wall-clock backstop.
    #[error("ran past its time limit")]
    Timeout,
    /// The guest called an import the sandbox denies (a clock, sleep, randomness, I/O).
    #[error("called `{0}`, which the sandbox does not offer")]
    Denied(String),
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

/// The instance of one plugin for one payment.
struct Fresh {
    plugin: Arc<LoadedPlugin>,
    store: Store<PluginState>,
    validator: Option<validator::Guest>,
    fee_policy: Option<fee_policy::Guest>,
}

/// Runs pipelines for one worker, one payment at a time.
pub struct Instances {
    runtime: Arc<PluginRuntime>,
    observer: Arc<dyn CallObserver>,
}

impl std::fmt::Debug for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instances").finish_non_exhaustive()
    }
}

impl Instances {
    /// A runner over `runtime` that reports every call to `observer`.
    pub fn new(runtime: Arc<PluginRuntime>, observer: Arc<dyn CallObserver>) -> Instances {
        Instances { runtime, observer }
    }

    /// Runs `pipeline` on a blocking thread, outside the async runtime: guest code is
    /// synchronous and may run until its budget ends.
    pub async fn run_blocking(&self, pipeline: Pipeline, input: PaymentInput) -> Result<Verdict, PluginFailure> {
        let runner = Instances { runtime: self.runtime.clone(), observer: self.observer.clone() };
        match tokio::task::spawn_blocking(move || runner.run(&pipeline, &input)).await {
            Ok(verdict) => verdict,
            // Only a panic in the host's own code gets here.
            Err(error) => Err(PluginFailure { plugin: "host".into(), kind: FailureKind::Trap(error.to_string()) }),
        }
    }

    /// Runs the validators in order, then the fee policy, each on this payment's own instance.
    pub fn run(&self, pipeline: &Pipeline, input: &PaymentInput) -> Result<Verdict, PluginFailure> {
        let mut fresh: Vec<Fresh> = Vec::with_capacity(pipeline.validators.len() + 1);
        for plugin in &pipeline.validators {
            let result = self.call(&mut fresh, plugin, input, |instance| {
                instance.validator.as_ref().map(|guest| guest.call_validate(&mut instance.store, &input.payment))
            })?;
            if let Err(rejection) = result {
                return declined(plugin, rejection);
            }
        }
        let plugin = &pipeline.fee_policy;
        let quote = self.call(&mut fresh, plugin, input, |instance| {
            instance.fee_policy.as_ref().map(|guest| guest.call_quote_fee(&mut instance.store, &input.payment))
        })?;
        match quote {
            Err(rejection) => declined(plugin, rejection),
            Ok(quote) => check_quote(&quote, input.payment.amount.minor_units, input.currency, &pipeline.fee_limit)
                .map(Verdict::Priced)
                .map_err(|message| PluginFailure { plugin: plugin.key.clone(), kind: FailureKind::Contract(message) }),
        }
    }

    /// One call on this payment's instance of `plugin`, created on first use.
    fn call<R>(
        &self,
        fresh: &mut Vec<Fresh>,
        plugin: &Arc<LoadedPlugin>,
        input: &PaymentInput,
        invoke: impl FnOnce(&mut Fresh) -> Option<wasmtime::Result<R>>,
    ) -> Result<R, PluginFailure> {
        let failure = |kind| PluginFailure { plugin: plugin.key.clone(), kind };
        let index = match fresh.iter().position(|instance| Arc::ptr_eq(&instance.plugin, plugin)) {
            Some(index) => index,
            None => {
                fresh.push(instantiate(&self.runtime, plugin).map_err(failure)?);
                fresh.len() - 1
            }
        };
        let instance = &mut fresh[index];
        sandbox::arm(&mut instance.store, &self.runtime.limits)
            .map_err(|error| failure(FailureKind::Trap(describe_error(&error))))?;
        instance.store.data_mut().begin_call(Some(input.id.clone()));
        let started = Instant::now();
        let result = invoke(instance);
        self.observer.plugin_called(&plugin.key, started.elapsed());
        match result {
            None => Err(failure(FailureKind::Contract("does not export the interface its pipeline role needs".into()))),
            Some(Ok(value)) => Ok(value),
            Some(Err(error)) => {
                Err(failure(classify(&error, instance.store.data(), self.runtime.limits.fuel_per_call)))
            }
        }
    }
}

fn instantiate(runtime: &PluginRuntime, plugin: &Arc<LoadedPlugin>) -> Result<Fresh, FailureKind> {
    let state =
        PluginState::new(plugin.name.clone(), plugin.config.clone(), plugin.log_budget.clone(), &runtime.limits);
    let mut store = sandbox::store(&runtime.engine, state, &runtime.limits)
        .map_err(|error| FailureKind::Instantiation(describe_error(&error)))?;
    let instance = plugin.pre.instantiate(&mut store).map_err(|error| {
        match classify(&error, store.data(), runtime.limits.fuel_per_call) {
            FailureKind::Trap(message) => FailureKind::Instantiation(message),
            other => other,
        }
    })?;
    let load = |error: wasmtime::Error| FailureKind::Instantiation(describe_error(&error));
    let validator =
        plugin.validator.as_ref().map(|indices| indices.load(&mut store, &instance)).transpose().map_err(load)?;
    let fee_policy =
        plugin.fee_policy.as_ref().map(|indices| indices.load(&mut store, &instance)).transpose().map_err(load)?;
    Ok(Fresh { plugin: plugin.clone(), store, validator, fee_policy })
}

fn classify(error: &wasmtime::Error, state: &PluginState, fuel_per_call: u64) -> FailureKind {
    if state.memory_exceeded {
        return FailureKind::MemoryLimit;
    }
    if let Some(import) = &state.denied_import {
        return FailureKind::Denied(import.clone());
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => FailureKind::OutOfFuel(fuel_per_call),
        Some(Trap::Interrupt) => FailureKind::Timeout,
        Some(trap) => FailureKind::Trap(trap.to_string()),
        None => FailureKind::Trap(describe_error(error)),
    }
}

/// A plugin's refusal as a verdict, or a breach if the refusal itself breaks the contract.
fn declined(plugin: &LoadedPlugin, rejection: types::Rejection) -> Result<Verdict, PluginFailure> {
    let checked = check_rejection(rejection)
        .map_err(|message| PluginFailure { plugin: plugin.key.clone(), kind: FailureKind::Contract(message) })?;
    Ok(Verdict::Declined(PluginRejection {
        plugin: plugin.key.clone(),
        code: checked.code,
        message: checked.message,
        retryable: checked.retryable,
    }))
}
