//! A version's bundled fixtures, run in the sandbox before it may decide a payment: the same
//! calls, limits and output checks a real payment gets, on instances made for the test and
//! dropped after it.

use std::sync::Arc;
use std::time::Duration;

use wasmpay_protocol::money::Currency;

use super::PluginRuntime;
use super::bindings::types;
use super::catalog::{ActivationError, LoadedPlugin};
use super::instances::{CallObserver, Instances, PaymentInput};
use crate::contract::{check_quote, check_rejection};
use crate::manifest::{Expected, Fixture, Manifest};
use crate::settings::FeeLimit;

/// Self-test calls are not payments: they are not counted as such.
#[derive(Debug)]
struct Unobserved;

impl CallObserver for Unobserved {
    fn plugin_called(&self, _: &str, _: Duration) {}
    fn plugin_quarantined(&self, _: &str) {}
}

/// What a fixture got.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Approved { fee: Option<u64>, bearer: Option<wasmpay_protocol::money::FeeBearer> },
    Declined { code: String },
}

/// Runs every fixture of `manifest` on `plugin`; the first that does not get its expected
/// verdict refuses the version.
pub fn run(
    runtime: &Arc<PluginRuntime>,
    plugin: &Arc<LoadedPlugin>,
    manifest: &Manifest,
) -> Result<(), ActivationError> {
    let mut instances = Instances::new(runtime.clone(), Arc::new(Unobserved));
    for (index, fixture) in manifest.fixtures.iter().enumerate() {
        let failed = |message: String| ActivationError::SelfTest { fixture: fixture.name.clone(), message };
        let outcome = decide(&mut instances, plugin, manifest, fixture, index).map_err(failed)?;
        let matches = match (&fixture.expect, &outcome) {
            (Expected::Approved { fee, bearer }, Outcome::Approved { fee: got_fee, bearer: got_bearer }) => {
                fee.is_none_or(|fee| Some(fee) == *got_fee) && bearer.is_none_or(|bearer| Some(bearer) == *got_bearer)
            }
            (Expected::Declined { code }, Outcome::Declined { code: got }) => code == got,
            _ => false,
        };
        if !matches {
            return Err(failed(format!("expected {:?}, got {outcome:?}", fixture.expect)));
        }
        // Every fixture gets instances of its own, as every payment does.
        instances.end_payment();
    }
    Ok(())
}

fn decide(
    instances: &mut Instances,
    plugin: &Arc<LoadedPlugin>,
    manifest: &Manifest,
    fixture: &Fixture,
    index: usize,
) -> Result<Outcome, String> {
    let payment = &fixture.payment;
    let currency: Currency =
        payment.currency.parse().map_err(|_| format!("currency `{}` is not supported", payment.currency))?;
    let method = payment.method.clone().or_else(|| manifest.methods.first().cloned()).unwrap_or_default();
    let pairs = |map: &std::collections::BTreeMap<String, String>| map.clone().into_iter().collect();
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
    if info.validates {
        let result = instances.validate(plugin, &input).map_err(|failure| failure.to_string())?;
        if let Err(rejection) = result {
            return check_rejection(rejection).map(|checked| Outcome::Declined { code: checked.code });
        }
    }
    if !info.quotes_fees {
        return Ok(Outcome::Approved { fee: None, bearer: None });
    }
    match instances.quote_fee(plugin, &input).map_err(|failure| failure.to_string())? {
        Err(rejection) => check_rejection(rejection).map(|checked| Outcome::Declined { code: checked.code }),
        Ok(quote) => check_quote(&quote, payment.amount, currency, &FeeLimit::default())
            .map(|fee| Outcome::Approved { fee: Some(fee.total), bearer: Some(fee.bearer) }),
    }
}
