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

use std::collections::BTreeMap;

use tokio::sync::Semaphore;
use wasmpay_protocol::money::{Currency, FeeBearer, MinorUnits, Rate, reversible_fee};
use wasmpay_protocol::{PaymentId, PaymentRequest};
use wasmtime::component::Instance;
use wasmtime::{Store, Trap};

use crate::bindings::{fee_policy, refund_fee, types, validator};
use crate::contract::{CheckedFee, RefundFee, check_quote, check_rate, check_refund_fee, check_rejection};
use crate::inline::{INLINE_DEADLINE_TICKS, INLINE_FUEL};
use crate::pipeline::{FxPipeline, Pipeline};
use crate::runtime::PluginRuntime;
use crate::sandbox::{self, Limits, PluginState, describe_error};
use crate::version::{LoadedPlugin, PluginId};

/// Told of every plugin call, so the node can count and time calls without this crate
/// knowing how they are reported.
pub trait CallObserver: Send + Sync + std::fmt::Debug {
    /// One export call of `plugin` finished after `elapsed`, with `failure` if it failed.
    fn plugin_called(&self, plugin: &PluginId, elapsed: Duration, failure: Option<&FailureKind>);

    /// A call of `plugin` could not be made (`failure`: it is quarantined, or no instance
    /// could be made or armed): the payment failed without guest code running.
    fn plugin_not_called(&self, plugin: &PluginId, failure: &FailureKind);

    /// `plugin` failed too often and is quarantined on this node.
    fn plugin_quarantined(&self, plugin: &PluginId);
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
        let pairs = |map: &BTreeMap<String, String>| map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        PaymentInput {
            payment: types::Payment {
                id: request.id.to_string(),
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

    /// A payment made up by the host (a self-test fixture), not one a client sent.
    pub(crate) fn made_up(payment: types::Payment, currency: Currency) -> PaymentInput {
        PaymentInput { id: Arc::from(payment.id.as_str()), payment, currency }
    }
}

/// The payment a refund gives money back from, as the ledger recorded it: what a fee policy
/// is shown to price the refund (never its method details, which the host does not keep).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundedPayment {
    /// Its id.
    pub id: PaymentId,
    /// The account it debited.
    pub payer: String,
    /// The account it credited.
    pub payee: String,
    /// What it moved, in minor units.
    pub amount: u64,
    /// Its currency.
    pub currency: Currency,
    /// The method that decided it.
    pub method: String,
    /// The client's metadata on it.
    pub metadata: BTreeMap<String, String>,
    /// When it was decided, milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// Its fee, in minor units.
    pub fee: u64,
    /// Who bore the fee.
    pub fee_bearer: FeeBearer,
    /// What its refunds gave back so far.
    pub refunded: u64,
    /// What of its fee its refunds gave back so far.
    pub fee_reversed: u64,
}

/// A refund as a fee policy sees it, with the payment it gives money back from.
#[derive(Debug)]
pub struct RefundInput {
    payment: refund_fee::RefundedPayment,
    refund: refund_fee::Refund,
    id: Arc<str>,
    currency: Currency,
    /// The most of the fee this refund may give back.
    reversible: u64,
}

impl RefundInput {
    /// The plugin view of a refund `id` of `amount` minor units of `payment`, stamped with
    /// when the host accepted it.
    pub fn new(payment: &RefundedPayment, id: &PaymentId, amount: u64, received_at_ms: u64) -> RefundInput {
        let units = |value: u64| MinorUnits(i64::try_from(value).unwrap_or(i64::MAX));
        let refunded = units(payment.refunded.saturating_add(amount));
        let reversible =
            reversible_fee(units(payment.fee), units(payment.amount), refunded, units(payment.fee_reversed));
        let money = |minor_units| types::Money { minor_units, currency: payment.currency.code().to_owned() };
        RefundInput {
            payment: refund_fee::RefundedPayment {
                id: payment.id.to_string(),
                payer: payment.payer.clone(),
                payee: payment.payee.clone(),
                amount: money(payment.amount),
                method: payment.method.clone(),
                metadata: payment.metadata.iter().map(|(key, value)| (key.clone(), value.clone())).collect(),
                received_at_ms: payment.received_at_ms,
                fee: payment.fee,
                fee_bearer: match payment.fee_bearer {
                    FeeBearer::Payer => types::FeeBearer::Payer,
                    FeeBearer::Payee => types::FeeBearer::Payee,
                },
                refunded: payment.refunded,
                fee_reversed: payment.fee_reversed,
            },
            refund: refund_fee::Refund { id: id.to_string(), amount: money(amount), received_at_ms },
            id: Arc::from(id.as_str()),
            currency: payment.currency,
            reversible: u64::try_from(reversible.0).unwrap_or_default(),
        }
    }
}

/// A conversion as the FX plugin sees it: the pair and the amount, nothing of the accounts.
#[derive(Debug)]
pub struct RateInput {
    request: types::RateRequest,
    id: Arc<str>,
}

impl RateInput {
    /// The rate request for converting `amount` minor units of `source` into `target`, for
    /// the payment or quote `id` (which tags the plugin's log lines), stamped with when the
    /// host accepted it.
    pub fn new(id: &str, source: Currency, target: Currency, amount: u64, received_at_ms: u64) -> RateInput {
        RateInput {
            request: types::RateRequest {
                source: source.code().to_owned(),
                target: target.code().to_owned(),
                amount: types::Money { minor_units: amount, currency: source.code().to_owned() },
                received_at_ms,
            },
            id: Arc::from(id),
        }
    }
}

/// What the FX plugin decided on a conversion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RateVerdict {
    /// The rate, checked, its markup applied.
    Quoted(Rate),
    /// The plugin does not quote the pair (or the amount).
    Declined(PluginRejection),
}

/// What a method's fee policy decided on a refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundVerdict {
    /// The refund's fee, checked ([`RefundFee::Keep`] when the policy does not price refunds).
    Priced(RefundFee),
    /// The fee policy refused the refund.
    Declined(PluginRejection),
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
    /// The version is quarantined on this node: it was not called.
    #[error("is quarantined on this node: {0}")]
    Quarantined(String),
}

impl FailureKind {
    /// A stable one-word name of the kind, for metrics: `fuel`, `timeout`, `denied`,
    /// `memory`, `trap`, `contract`, `instantiation`, `quarantined`.
    pub fn label(&self) -> &'static str {
        match self {
            FailureKind::OutOfFuel(_) => "fuel",
            FailureKind::Timeout => "timeout",
            FailureKind::Denied(_) => "denied",
            FailureKind::MemoryLimit => "memory",
            FailureKind::Trap(_) => "trap",
            FailureKind::Contract(_) => "contract",
            FailureKind::Instantiation(_) => "instantiation",
            FailureKind::Quarantined(_) => "quarantined",
        }
    }

    /// Whether the plugin caused it whatever the machine was doing, so that it counts toward
    /// quarantine. A time-out is not: fuel, not the clock, bounds a plugin's work, and the
    /// wall-clock backstop fires only when the machine is starved. Nor is an instance that
    /// could not be made (the pool is the node's).
    pub fn is_the_plugins(&self) -> bool {
        matches!(
            self,
            FailureKind::OutOfFuel(_)
                | FailureKind::Denied(_)
                | FailureKind::MemoryLimit
                | FailureKind::Trap(_)
                | FailureKind::Contract(_)
        )
    }
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

/// An instance of one plugin, made for one payment.
struct Fresh {
    plugin: Arc<LoadedPlugin>,
    store: Store<PluginState>,
    /// Kept for the exports looked up only when called (`refund-fee`), not on every payment.
    instance: Instance,
    validator: Option<validator::Guest>,
    fee_policy: Option<fee_policy::Guest>,
}

/// Runs the pipelines of one worker, one payment at a time, each on never-used instances.
///
/// To keep instantiation off the payment's path, the worker keeps one *spare* instance per
/// plugin of the pipeline it ran last, made after that payment was answered: the next payment
/// takes the spares (or makes what is missing) and its used instances are dropped afterwards.
/// A spare has run no guest code but its own initialisation, and has seen no payment. Spares
/// of plugins the last pipeline does not use are dropped, so a worker holds at most two
/// instances per plugin of one pipeline.
pub struct Instances {
    runtime: Arc<PluginRuntime>,
    observer: Arc<dyn CallObserver>,
    spares: Vec<Fresh>,
    used: Vec<Fresh>,
    /// The blocking task that ran the last payment and is now replacing its instances.
    replenishing: Option<tokio::task::JoinHandle<Instances>>,
    /// The fuel each call and instantiation gets while running on the partition's thread
    /// (`inline`); `None` on a plugin thread, where each gets its version's full budget.
    slice: Option<u64>,
    /// The version whose call outgrew `slice` in the run on the partition's thread, if one did.
    outgrown: Option<Arc<LoadedPlugin>>,
    /// The calls of the run on the partition's thread, counted once it ends within its budget.
    unreported: Vec<Made>,
}

/// A plugin call that was made: what it costs and how it ended.
struct Made {
    plugin: Arc<LoadedPlugin>,
    elapsed: Duration,
    failure: Option<FailureKind>,
}

impl std::fmt::Debug for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instances").field("spares", &self.spares.len()).finish_non_exhaustive()
    }
}

impl Instances {
    /// A runner over `runtime` that reports every call to `observer`.
    pub fn new(runtime: Arc<PluginRuntime>, observer: Arc<dyn CallObserver>) -> Instances {
        let (spares, used) = (Vec::new(), Vec::new());
        Instances {
            runtime,
            observer,
            spares,
            used,
            replenishing: None,
            slice: None,
            outgrown: None,
            unreported: Vec::new(),
        }
    }

    /// Runs `pipeline` on the caller's thread on a small fuel budget per call (`inline`), or,
    /// if a call outgrows it or one of its versions did lately, on a blocking thread, outside
    /// the async runtime (guest code is synchronous and may run until its budget ends), once
    /// its method has a free share of the plugin CPU (`shares`). There the verdict is returned
    /// as soon as it is known; the same thread then drops the used instances and makes the
    /// spares (guest code too: the share is held until then) while the caller records and
    /// answers the payment.
    pub async fn run_payment(&mut self, pipeline: Pipeline, input: PaymentInput) -> Result<Verdict, PluginFailure> {
        // Every version is asked once, so each counts its backoff down once per payment.
        if pipeline.plugins().filter(|plugin| !plugin.inline.allowed()).count() == 0 {
            let runner = self.take_back().await;
            *self = runner;
            self.slice = Some(INLINE_FUEL);
            // A panic in the host's own code refuses this payment, as on a plugin thread,
            // rather than ending the partition's worker (and with it the node).
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(&pipeline, &input)));
            let Ok(verdict) = ran else {
                *self = Instances::new(self.runtime.clone(), self.observer.clone());
                return Err(host_panicked());
            };
            self.slice = None;
            self.end_payment();
            self.keep_spares_of(&pipeline);
            // Taken out and put back, so its allocation serves the next payment too.
            let mut made = std::mem::take(&mut self.unreported);
            let outgrown = self.outgrown.take();
            if outgrown.is_none() {
                for call in made.drain(..) {
                    self.report(call);
                }
            }
            made.clear();
            self.unreported = made;
            match outgrown {
                None => return verdict,
                Some(plugin) => plugin.inline.outgrown(),
            }
        }
        let share = pipeline.share.clone();
        let work = move |runner: &mut Instances, pipeline: &Pipeline| runner.run(pipeline, &input);
        self.on_blocking_thread(share, pipeline, work, Instances::replenish).await
    }

    /// Asks the FX plugin the rate of one conversion, on a blocking thread once conversions
    /// have a free share of the plugin CPU, on an instance made for it and dropped after it.
    pub async fn quote_rate_blocking(
        &mut self,
        fx: FxPipeline,
        input: RateInput,
    ) -> Result<RateVerdict, PluginFailure> {
        let share = fx.share.clone();
        let work = move |runner: &mut Instances, fx: &FxPipeline| runner.quote_rate(&fx.plugin, &input);
        self.on_blocking_thread(share, fx, work, |runner, _| runner.end_payment()).await
    }

    /// Asks `pipeline`'s fee policy the fee of a refund, on a blocking thread once its method
    /// has a free share of the plugin CPU, as [`Instances::run_payment`] does for a payment's
    /// plugins that outgrow the partition's thread.
    /// A fee policy without the `refund-fee` export keeps the fee and is not called.
    pub async fn quote_refund_blocking(
        &mut self,
        pipeline: Pipeline,
        input: RefundInput,
    ) -> Result<RefundVerdict, PluginFailure> {
        if !pipeline.fee_policy.info.prices_refunds {
            return Ok(RefundVerdict::Priced(RefundFee::Keep));
        }
        // Refunds are rare: their instances are dropped, not replaced by spares.
        let share = pipeline.share.clone();
        let work = move |runner: &mut Instances, pipeline: &Pipeline| runner.quote_refund(pipeline, &input);
        self.on_blocking_thread(share, pipeline, work, |runner, _| runner.end_payment()).await
    }

    /// Runs `work` on a blocking thread with these instances once `share` has a free place,
    /// answers as soon as it returns, then (on the same thread, the share still held) runs
    /// `after`: drops the used instances and, for a payment, makes the spares.
    async fn on_blocking_thread<C: Send + 'static, T: Send + 'static>(
        &mut self,
        share: Arc<Semaphore>,
        context: C,
        work: impl FnOnce(&mut Instances, &C) -> Result<T, PluginFailure> + Send + 'static,
        after: impl FnOnce(&mut Instances, &C) + Send + 'static,
    ) -> Result<T, PluginFailure> {
        let mut runner = self.take_back().await;
        // The semaphore is never closed, so the permit always comes.
        let share = share.acquire_owned().await.ok();
        let (verdict_sender, verdict) = tokio::sync::oneshot::channel();
        // The payment's span goes with its work to the blocking thread; the spares are not its.
        let span = tracing::Span::current();
        self.replenishing = Some(tokio::task::spawn_blocking(move || {
            let _ = verdict_sender.send(span.in_scope(|| work(&mut runner, &context)));
            after(&mut runner, &context);
            drop(share);
            runner
        }));
        // Only a panic in the host's own code gets here; the spares are lost with it.
        verdict.await.unwrap_or_else(|_| Err(host_panicked()))
    }

    /// The instances back from the last blocking run (a new, empty set if it panicked).
    async fn take_back(&mut self) -> Instances {
        let fresh = || Instances::new(self.runtime.clone(), self.observer.clone());
        match self.replenishing.take() {
            Some(handle) => handle.await.unwrap_or_else(|_| fresh()),
            None => {
                Instances { spares: std::mem::take(&mut self.spares), used: std::mem::take(&mut self.used), ..fresh() }
            }
        }
    }

    /// Runs the validators in order, then the fee policy, each on an instance of its own made
    /// for this payment. Call [`Instances::replenish`] after it, off the payment's path.
    pub fn run(&mut self, pipeline: &Pipeline, input: &PaymentInput) -> Result<Verdict, PluginFailure> {
        // Whatever the last payment used is gone before this one starts, replenished or not.
        self.used.clear();
        for plugin in &pipeline.validators {
            if let Err(rejection) = self.validate(plugin, input)? {
                return self.declined(plugin, rejection).map(Verdict::Declined);
            }
        }
        let plugin = &pipeline.fee_policy;
        match self.quote_fee(plugin, input)? {
            Err(rejection) => self.declined(plugin, rejection).map(Verdict::Declined),
            Ok(quote) => check_quote(&quote, input.payment.amount.minor_units, input.currency, &pipeline.fee_limit)
                .map(Verdict::Priced)
                .map_err(|message| self.breach(plugin, message)),
        }
    }

    /// `quote-refund-fee` of `pipeline`'s fee policy on an instance made for this refund.
    fn quote_refund(&mut self, pipeline: &Pipeline, input: &RefundInput) -> Result<RefundVerdict, PluginFailure> {
        self.used.clear();
        let plugin = &pipeline.fee_policy;
        let answer = self.call(plugin, &input.id, "refund-fee", |instance| {
            let indices = instance.plugin.refund_fee.as_ref()?;
            let guest = indices.load(&mut instance.store, &instance.instance);
            Some(
                guest.and_then(|guest| guest.call_quote_refund_fee(&mut instance.store, &input.payment, &input.refund)),
            )
        })?;
        match answer {
            Err(rejection) => self.declined(plugin, rejection).map(RefundVerdict::Declined),
            Ok(outcome) => {
                let amount = input.refund.amount.minor_units;
                check_refund_fee(&outcome, input.reversible, amount, input.currency, &pipeline.fee_limit)
                    .map(RefundVerdict::Priced)
                    .map_err(|message| self.breach(plugin, message))
            }
        }
    }

    /// `quote-rate` of `plugin` (an FX plugin) on an instance made for this conversion, on
    /// this thread: what [`Instances::quote_rate_blocking`] runs off the async threads.
    pub fn quote_rate(&mut self, plugin: &Arc<LoadedPlugin>, input: &RateInput) -> Result<RateVerdict, PluginFailure> {
        self.used.clear();
        let answer = self.call(plugin, &input.id, "quote-rate", |instance| {
            let indices = instance.plugin.fx.as_ref()?;
            let guest = indices.load(&mut instance.store, &instance.instance);
            Some(guest.and_then(|guest| guest.call_quote_rate(&mut instance.store, &input.request)))
        })?;
        match answer {
            Err(rejection) => self.declined(plugin, rejection).map(RateVerdict::Declined),
            Ok(rate) => check_rate(&rate).map(RateVerdict::Quoted).map_err(|message| self.breach(plugin, message)),
        }
    }

    /// A plugin's refusal, checked, or a breach if the refusal itself breaks the contract.
    fn declined(&self, plugin: &LoadedPlugin, rejection: types::Rejection) -> Result<PluginRejection, PluginFailure> {
        let checked = check_rejection(rejection).map_err(|message| self.breach(plugin, message))?;
        Ok(PluginRejection {
            plugin: plugin.key.clone(),
            code: checked.code,
            message: checked.message,
            retryable: checked.retryable,
        })
    }

    /// The failure of a call whose answer broke the contract, counted against the version.
    fn breach(&self, plugin: &LoadedPlugin, message: String) -> PluginFailure {
        if let Some(reason) = plugin.health.record_breach(&self.runtime.quarantine) {
            self.quarantined(plugin, &reason);
        }
        PluginFailure { plugin: plugin.key.clone(), kind: FailureKind::Contract(message) }
    }

    /// Drops the instances the last payment used, so the next call makes new ones.
    pub(crate) fn end_payment(&mut self) {
        self.used.clear();
    }

    /// Drops the instances the last payment used, and the spares of plugins `pipeline` does
    /// not use, then makes a spare for each plugin of `pipeline` that has none.
    pub fn replenish(&mut self, pipeline: &Pipeline) {
        self.used.clear();
        self.keep_spares_of(pipeline);
        for plugin in pipeline.plugins() {
            if !self.spares.iter().any(|spare| Arc::ptr_eq(&spare.plugin, plugin)) {
                // A failure here is met again, and reported, when a payment needs the instance.
                if let Ok(spare) = instantiate(&self.runtime, plugin, &plugin.limits) {
                    self.spares.push(spare);
                }
            }
        }
    }

    /// Drops the spares of plugins `pipeline` does not use (a version replaced since, another
    /// method's), so they hold no pool slot and no old version.
    fn keep_spares_of(&mut self, pipeline: &Pipeline) {
        self.spares.retain(|spare| pipeline.plugins().any(|plugin| Arc::ptr_eq(&spare.plugin, plugin)));
    }

    /// `validate` of `plugin` on this payment's instance of it.
    pub(crate) fn validate(
        &mut self,
        plugin: &Arc<LoadedPlugin>,
        input: &PaymentInput,
    ) -> Result<Result<(), types::Rejection>, PluginFailure> {
        self.call(plugin, &input.id, "validate", |instance| {
            instance.validator.as_ref().map(|guest| guest.call_validate(&mut instance.store, &input.payment))
        })
    }

    /// `quote-fee` of `plugin` on this payment's instance of it.
    pub(crate) fn quote_fee(
        &mut self,
        plugin: &Arc<LoadedPlugin>,
        input: &PaymentInput,
    ) -> Result<Result<types::FeeQuote, types::Rejection>, PluginFailure> {
        self.call(plugin, &input.id, "quote-fee", |instance| {
            instance.fee_policy.as_ref().map(|guest| guest.call_quote_fee(&mut instance.store, &input.payment))
        })
    }

    /// One call of `export` on the instance of `plugin` of payment `id`: the one it already
    /// used, a spare, or a new one. A span of its own, inside the payment's: a trace shows
    /// each plugin's share of a payment.
    fn call<R>(
        &mut self,
        plugin: &Arc<LoadedPlugin>,
        id: &Arc<str>,
        export: &'static str,
        invoke: impl FnOnce(&mut Fresh) -> Option<wasmtime::Result<R>>,
    ) -> Result<R, PluginFailure> {
        let _span = tracing::info_span!("plugin call", plugin = %plugin.key, export = %export).entered();
        let failure = |kind| PluginFailure { plugin: plugin.key.clone(), kind };
        // A call that could not be made is counted too, without a duration.
        let not_called = |observer: &dyn CallObserver, kind: FailureKind| {
            observer.plugin_not_called(&plugin.id, &kind);
            failure(kind)
        };
        if let Some(reason) = plugin.health.quarantined() {
            return Err(not_called(&*self.observer, FailureKind::Quarantined(reason)));
        }
        // On the partition's thread, a budget smaller than the version's, in fuel and in time
        // (bulk memory instructions and host calls cost little fuel for their time): running
        // out of it is not the plugin's failure, and is neither counted nor reported (`inline`).
        let limits = match self.slice {
            Some(fuel) => Limits {
                fuel_per_call: fuel.min(plugin.limits.fuel_per_call),
                deadline_ticks: INLINE_DEADLINE_TICKS.min(plugin.limits.deadline_ticks),
                ..plugin.limits
            },
            None => plugin.limits,
        };
        let sliced = limits != plugin.limits;
        let outgrew = |kind: &FailureKind| sliced && matches!(kind, FailureKind::OutOfFuel(_) | FailureKind::Timeout);
        let index = match self.used.iter().position(|instance| Arc::ptr_eq(&instance.plugin, plugin)) {
            Some(index) => index,
            None => {
                let spare = self.spares.iter().position(|spare| Arc::ptr_eq(&spare.plugin, plugin));
                let instance = match spare {
                    Some(index) => self.spares.swap_remove(index),
                    None => match instantiate(&self.runtime, plugin, &limits) {
                        Ok(instance) => instance,
                        Err(kind) if outgrew(&kind) => {
                            self.outgrown = Some(plugin.clone());
                            return Err(failure(kind));
                        }
                        Err(kind) => return Err(not_called(&*self.observer, kind)),
                    },
                };
                self.used.push(instance);
                self.used.len() - 1
            }
        };
        let observer = &*self.observer;
        let instance = &mut self.used[index];
        sandbox::arm(&mut instance.store, &limits)
            .map_err(|error| not_called(observer, FailureKind::Trap(describe_error(&error))))?;
        instance.store.data_mut().begin_call(Some(id.clone()));
        let started = Instant::now();
        let result = invoke(instance);
        let elapsed = started.elapsed();
        let outcome = match result {
            None => Err(FailureKind::Contract("does not export the interface its pipeline role needs".into())),
            Some(Ok(value)) => Ok(value),
            Some(Err(error)) => Err(classify(&error, instance.store.data(), limits.fuel_per_call)),
        };
        if outcome.as_ref().err().is_some_and(outgrew) {
            self.outgrown = Some(plugin.clone());
            return outcome.map_err(failure);
        }
        let made = Made { plugin: plugin.clone(), elapsed, failure: outcome.as_ref().err().cloned() };
        if self.slice.is_some() {
            // Reported once the run on the partition's thread ends without outgrowing its
            // budget: if it does outgrow it, this call is made again on a plugin thread.
            self.unreported.push(made);
        } else {
            self.report(made);
        }
        outcome.map_err(failure)
    }

    /// Counts a call that was made, in the observer and the version's health.
    fn report(&self, Made { plugin, elapsed, failure }: Made) {
        self.observer.plugin_called(&plugin.id, elapsed, failure.as_ref());
        let its_fault = failure.as_ref().is_some_and(FailureKind::is_the_plugins);
        if let Some(reason) = plugin.health.record(elapsed, its_fault, &self.runtime.quarantine) {
            self.quarantined(&plugin, &reason);
        }
    }

    fn quarantined(&self, plugin: &LoadedPlugin, reason: &str) {
        tracing::error!(plugin = %plugin.key, %reason, "plugin quarantined on this node: its method is refused at once until an operator rolls back or re-activates it");
        self.observer.plugin_quarantined(&plugin.id);
    }
}

/// The failure of a payment whose plugins' host code panicked.
fn host_panicked() -> PluginFailure {
    PluginFailure { plugin: "host".into(), kind: FailureKind::Trap("the plugin thread panicked".into()) }
}

/// A new instance of `plugin`, its initialisation within `limits`.
fn instantiate(runtime: &PluginRuntime, plugin: &Arc<LoadedPlugin>, limits: &Limits) -> Result<Fresh, FailureKind> {
    let state = PluginState::new(
        plugin.id.name.clone(),
        plugin.config.clone(),
        plugin.log_budget.clone(),
        &plugin.limits,
        &runtime.census,
    );
    let mut store = sandbox::store(&runtime.engine, state, limits)
        .map_err(|error| FailureKind::Instantiation(describe_error(&error)))?;
    let instance = plugin.pre.instantiate(&mut store).map_err(|error| {
        match classify(&error, store.data(), limits.fuel_per_call) {
            FailureKind::Trap(message) => FailureKind::Instantiation(message),
            other => other,
        }
    })?;
    let load = |error: wasmtime::Error| FailureKind::Instantiation(describe_error(&error));
    let validator =
        plugin.validator.as_ref().map(|indices| indices.load(&mut store, &instance)).transpose().map_err(load)?;
    let fee_policy =
        plugin.fee_policy.as_ref().map(|indices| indices.load(&mut store, &instance)).transpose().map_err(load)?;
    Ok(Fresh { plugin: plugin.clone(), store, instance, validator, fee_policy })
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
