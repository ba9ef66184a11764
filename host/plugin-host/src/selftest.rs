//! A version's bundled fixtures, run in the sandbox before it may decide a payment: the same
//! calls, limits and output checks a real payment gets, on instances made for the test and
//! dropped after it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmpay_protocol::money::{Currency, FeeBearer};

use crate::bindings::types;
use crate::contract::{check_quote, check_rejection};
use crate::instances::{CallObserver, FailureKind, Instances, PaymentInput, PluginFailure, RateInput, RateVerdict};
use crate::manifest::{Expected, Fixture, Manifest};
use crate::runtime::PluginRuntime;
use crate::settings::FeeLimit;
use crate::version::{LoadedPlugin, PluginId};

/// Self-test calls are not payments: they are not counted as such.
#[derive(Debug)]
struct Unobserved;

impl CallObserver for Unobserved {
    fn plugin_called(&self, _: &PluginId, _: Duration, _: Option<&FailureKind>) {}
    fn plugin_not_called(&self, _: &PluginId, _: &FailureKind) {}
    fn plugin_quarantined(&self, _: &PluginId) {}
}

/// What a fixture got.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Approved { fee: Option<u64>, bearer: Option<FeeBearer>, rate: Option<String> },
    Declined { code: String },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Approved { fee, bearer, rate } => write!(f, "approved{}", priced(*fee, *bearer, rate.as_deref())),
            Outcome::Declined { code } => write!(f, "declined with `{code}`"),
        }
    }
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::Approved { fee, bearer, rate } => write!(f, "approved{}", priced(*fee, *bearer, rate.as_deref())),
            Expected::Declined { code } => write!(f, "declined with `{code}`"),
        }
    }
}

/// ", fee 110 borne by the payee" (or ", rate 1.077784"), as far as it is known.
fn priced(fee: Option<u64>, bearer: Option<FeeBearer>, rate: Option<&str>) -> String {
    let fee = fee.map(|fee| format!(", fee {fee}")).unwrap_or_default();
    let bearer = bearer.map(|bearer| format!(" borne by the {}", bearer.as_str())).unwrap_or_default();
    let rate = rate.map(|rate| format!(", rate {rate}")).unwrap_or_default();
    format!("{fee}{bearer}{rate}")
}

/// Why the fixtures did not all pass.
#[derive(Debug)]
pub enum SelfTestError {
    /// `fixture` did not get its expected verdict: the version is refused.
    Failed {
        /// The fixture's name.
        fixture: String,
        /// What happened instead.
        message: String,
    },
    /// The node could not run a fixture (its pool full, its CPU starved): no verdict on the
    /// version, try again later.
    NodeBusy(String),
}

/// What one fixture got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixtureResult {
    /// The fixture's name.
    pub name: String,
    /// What the plugin answered (`approved, fee 315 borne by the payee`), or why the fixture
    /// failed.
    pub result: Result<String, String>,
    /// The median of its runs' times, each on instances made for it (plugin calls included,
    /// as a payment pays them).
    pub median: Duration,
    /// The longest of its runs.
    pub slowest: Duration,
}

/// Runs every fixture of `manifest` on `plugin`; the first that does not get its expected
/// verdict refuses the version. Fees are held to the node's bound of the fixture's method
/// (`fee_limits`), as they will be in service.
pub fn run(
    runtime: &Arc<PluginRuntime>,
    plugin: &Arc<LoadedPlugin>,
    manifest: &Manifest,
    fee_limits: &BTreeMap<String, FeeLimit>,
) -> Result<(), SelfTestError> {
    let results = report(runtime, plugin, manifest, fee_limits, 1)?;
    let total = results.len();
    let mut failed =
        results.into_iter().filter_map(|fixture| fixture.result.err().map(|message| (fixture.name, message)));
    let Some((fixture, message)) = failed.next() else {
        return Ok(());
    };
    // The first failure, and how the rest went: an operator pushing sees the whole picture.
    let more = failed.count();
    let message = format!("{message} ({} of {total} fixtures passed, {} failed)", total - more - 1, more + 1);
    Err(SelfTestError::Failed { fixture, message })
}

/// Runs every fixture of `manifest` on `plugin` `runs` times (each run on instances of its
/// own, as every payment is), and says what each got: a fixture fails when a run does not get
/// its expected verdict, or when two runs do not get the same (a decision must be a pure
/// function of the payment and the configuration). Only a node that cannot run fixtures at
/// all (its pool full, its CPU starved) is an error.
pub fn report(
    runtime: &Arc<PluginRuntime>,
    plugin: &Arc<LoadedPlugin>,
    manifest: &Manifest,
    fee_limits: &BTreeMap<String, FeeLimit>,
    runs: usize,
) -> Result<Vec<FixtureResult>, SelfTestError> {
    let mut instances = Instances::new(runtime.clone(), Arc::new(Unobserved));
    let mut results = Vec::with_capacity(manifest.fixtures.len());
    for (index, fixture) in manifest.fixtures.iter().enumerate() {
        let mut outcomes: Vec<Result<Outcome, String>> = Vec::with_capacity(runs);
        let mut times = Vec::with_capacity(runs.max(1));
        for _ in 0..runs.max(1) {
            let started = Instant::now();
            let outcome = match decide(&mut instances, plugin, manifest, fixture, index, fee_limits) {
                Err(Undecided::Node(message)) => return Err(SelfTestError::NodeBusy(message)),
                Err(Undecided::Plugin(message)) => Err(message),
                Ok(outcome) => Ok(outcome),
            };
            times.push(started.elapsed());
            outcomes.push(outcome);
            // Every run gets instances of its own, as every payment does.
            instances.end_payment();
        }
        let result = match outcomes.as_slice() {
            [Err(message), ..] => Err(message.clone()),
            [first, rest @ ..] if rest.iter().any(|other| other != first) => {
                let seen: Vec<String> = outcomes.iter().map(shown).collect();
                Err(format!("not deterministic: the same payment got {}", seen.join(", then ")))
            }
            [Ok(outcome), ..] if !fixture.expect.matches(outcome) => {
                Err(format!("expected {}, got {outcome}", fixture.expect))
            }
            [Ok(outcome), ..] => Ok(outcome.to_string()),
            [] => Err("no run".into()),
        };
        times.sort();
        let (median, slowest) = (times[times.len() / 2], times[times.len() - 1]);
        results.push(FixtureResult { name: fixture.name.clone(), result, median, slowest });
    }
    Ok(results)
}

fn shown(outcome: &Result<Outcome, String>) -> String {
    match outcome {
        Ok(outcome) => outcome.to_string(),
        Err(message) => message.clone(),
    }
}

impl Expected {
    /// Whether `outcome` is what this expects.
    fn matches(&self, outcome: &Outcome) -> bool {
        match (self, outcome) {
            (
                Expected::Approved { fee, bearer, rate },
                Outcome::Approved { fee: got_fee, bearer: got_bearer, rate: got_rate },
            ) => {
                fee.is_none_or(|fee| Some(fee) == *got_fee)
                    && bearer.is_none_or(|bearer| Some(bearer) == *got_bearer)
                    && rate.as_ref().is_none_or(|rate| Some(rate) == got_rate.as_ref())
            }
            (Expected::Declined { code }, Outcome::Declined { code: got }) => code == got,
            _ => false,
        }
    }
}

/// Why a fixture got no outcome.
enum Undecided {
    /// The plugin failed, or the fixture is wrong.
    Plugin(String),
    /// The node failed to run it.
    Node(String),
}

impl From<PluginFailure> for Undecided {
    fn from(failure: PluginFailure) -> Undecided {
        match failure.kind.is_the_plugins() {
            true => Undecided::Plugin(failure.to_string()),
            false => Undecided::Node(failure.to_string()),
        }
    }
}

fn decide(
    instances: &mut Instances,
    plugin: &Arc<LoadedPlugin>,
    manifest: &Manifest,
    fixture: &Fixture,
    index: usize,
    fee_limits: &BTreeMap<String, FeeLimit>,
) -> Result<Outcome, Undecided> {
    let payment = &fixture.payment;
    let currency: Currency = payment
        .currency
        .parse()
        .map_err(|_| Undecided::Plugin(format!("currency `{}` is not supported", payment.currency)))?;
    let method = payment.method.clone().or_else(|| manifest.methods.first().cloned()).unwrap_or_default();
    let fee_limit = fee_limits.get(&method).cloned().unwrap_or_default();
    let pairs = |map: &BTreeMap<String, String>| map.clone().into_iter().collect();
    let input = PaymentInput::made_up(
        types::Payment {
            id: format!("selftest-{index}"),
            payer: "selftest-payer".into(),
            payee: "selftest-payee".into(),
            amount: types::Money { minor_units: payment.amount, currency: currency.code().to_owned() },
            method,
            details: pairs(&payment.details),
            metadata: pairs(&payment.metadata),
            received_at_ms: payment.received_at_ms,
        },
        currency,
    );
    let info = &plugin.info;
    if let Some(counter) = &payment.counter_currency {
        let counter: Currency =
            counter.parse().map_err(|_| Undecided::Plugin(format!("counter currency `{counter}` is not supported")))?;
        if !info.quotes_rates {
            return Err(Undecided::Plugin("a fixture with a counter currency needs a plugin that exports `fx`".into()));
        }
        let id = format!("selftest-{index}");
        let input = RateInput::new(&id, currency, counter, payment.amount, payment.received_at_ms);
        return match instances.quote_rate(plugin, &input)? {
            RateVerdict::Quoted(rate) => {
                Ok(Outcome::Approved { fee: None, bearer: None, rate: Some(rate.to_string()) })
            }
            RateVerdict::Declined(rejection) => Ok(Outcome::Declined { code: rejection.code }),
        };
    }
    if info.validates
        && let Err(rejection) = instances.validate(plugin, &input)?
    {
        return check_rejection(rejection)
            .map(|checked| Outcome::Declined { code: checked.code })
            .map_err(Undecided::Plugin);
    }
    if !info.quotes_fees {
        return Ok(Outcome::Approved { fee: None, bearer: None, rate: None });
    }
    match instances.quote_fee(plugin, &input)? {
        Err(rejection) => check_rejection(rejection).map(|checked| Outcome::Declined { code: checked.code }),
        Ok(quote) => check_quote(&quote, payment.amount, currency, &fee_limit).map(|fee| Outcome::Approved {
            fee: Some(fee.total),
            bearer: Some(fee.bearer),
            rate: None,
        }),
    }
    .map_err(Undecided::Plugin)
}
