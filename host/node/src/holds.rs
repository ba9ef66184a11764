//! How long authorizations hold money, and how the partition owners release the holds nobody
//! captured: the settings of `[holds]` in `wasmpay.toml`.
//!
//! ```toml
//! [holds]
//! expiry_s = 604800                # an authorization not captured within this is released
//! by_method = { card = 604800, wallet = 3600 }  # per method, in seconds
//! sweep_interval_ms = 1000         # how often a partition's owner releases its due holds
//! sweep_limit = 256                # holds one sweep of one partition releases at most
//! ```
//!
//! Seven days by default: the life card networks usually give an authorization, after which
//! an issuer releases the cardholder's funds whatever the merchant does. The sweeper is the
//! partition's worker itself (a job in its queue), so an expiry is ordered with the payer's
//! captures and voids and goes through the ledger's batch under the partition's lease like any
//! payment: a node that lost the lease cannot expire anything, a restart or a handover leaves
//! the holds in the ledger for the next owner's sweeps, and an expiry that lost a race to a
//! capture finds the hold closed and does nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// The default life of an authorization: seven days.
pub const DEFAULT_EXPIRY_S: u64 = 7 * 24 * 60 * 60;

/// `[holds]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HoldSettings {
    /// Seconds an authorization holds money unless its method says otherwise.
    pub expiry_s: u64,
    /// Seconds per method.
    pub by_method: BTreeMap<String, u64>,
    /// How often a partition's owner looks for due holds, in milliseconds.
    pub sweep_interval_ms: u64,
    /// Holds one sweep of one partition releases at most.
    pub sweep_limit: u32,
}

impl Default for HoldSettings {
    fn default() -> HoldSettings {
        HoldSettings {
            expiry_s: DEFAULT_EXPIRY_S,
            by_method: BTreeMap::new(),
            sweep_interval_ms: 1_000,
            sweep_limit: 256,
        }
    }
}

impl HoldSettings {
    /// How long an authorization of `method` holds money.
    pub fn expiry_of(&self, method: &str) -> Duration {
        Duration::from_secs(self.by_method.get(method).copied().unwrap_or(self.expiry_s))
    }

    /// How often each owned partition is swept.
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms.max(10))
    }

    /// What is wrong with these settings, if anything.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.sweep_limit == 0 {
            return Err("holds.sweep_limit must be at least 1".into());
        }
        if let Some((method, _)) = std::iter::once(("", &self.expiry_s))
            .chain(self.by_method.iter().map(|(m, s)| (m.as_str(), s)))
            .find(|(_, seconds)| **seconds == 0)
        {
            return Err(format!("holds: the expiry of `{method}` must be at least one second"));
        }
        Ok(())
    }
}
