//! `wasmpay.toml`: plugins, their configuration, method pipelines, fee limits and sandbox
//! limits. Every section is optional; an empty file (or none) serves the built-in `card` and
//! `wallet` plugins with their default terms.
//!
//! ```toml
//! [sandbox]
//! fuel_per_call = 1000000000  # work one plugin call may do (~ WebAssembly instructions)
//! call_timeout_ms = 1000      # wall-clock backstop of one call
//! memory_limit_mib = 16       # linear memory cap of one instance
//! max_instances = 1000        # instances alive at once, all plugins together
//! method_threads = 1          # payments of one method running plugins at once (default: cores - 1)
//! cache_dir = "/var/cache/wasmpay"  # compiled plugins (serve's default: ~/.cache/wasmpay)
//!
//! [sandbox.quarantine]        # a version failing more than this share of its calls
//! failure_percent = 50        # is refused at once on this node (100: never)
//! window_ms = 60000
//! min_calls = 20
//!
//! [plugins.card]
//! path = "plugins/card.wasm"  # optional: a built-in plugin needs no path
//! config = { "fee.bps" = "250", "limit.EUR" = "500000" }
//!
//! [methods.card]              # optional: by default a plugin serves the methods it describes
//! validators = ["card"]
//! fee = "card"
//!
//! [fee_limits.card]           # optional: fee <= amount x max_bps / 10 000 + fixed[currency]
//! max_bps = 1000              # default 10 %
//! fixed = { EUR = 100 }       # default one major unit, at least 100 minor units
//!
//! [ledger]                    # group commit: one transaction and one fsync per batch
//! batch_size_max = 512        # transfers in one batch at most
//! batch_delay_us_max = 0      # 0: a batch takes what is waiting; > 0: waits this long for more
//! synchronous = "full"        # "full": fsync every commit; "normal": a power cut may lose the last
//! idle_transaction_timeout_ms = 1000  # PostgreSQL ends a paused node's open batch after this (<= lease_ttl_ms / 2)
//!
//! [cluster]                   # nodes on one NATS and one ledger share the partitions
//! deployment = "default"      # the name a ledger records its binding to this NATS deployment under
//! lease_ttl_ms = 3000         # a dead node's partitions move after about this long
//! heartbeat_ms = 500          # how often a node announces itself and checks the assignment
//! replicas = 3                # JetStream replicas of buckets, plugin store; unset: 3 on a NATS cluster, else 1
//!
//! [delivery]                  # request-reply on wasmpay.pay.<p>.<payer> is always served
//! durable = false             # true: also wasmpay.durable.<p>.<payer> through JetStream
//! ack_wait_ms = 30000         # an unacknowledged durable payment is delivered again after this
//! results_max_age_s = 604800  # how long wasmpay.results.<payer> keeps replies (the ledger: always)
//! replicas = 3                # JetStream replicas of the two streams; unset: the cluster's
//!
//! [holds]                     # authorizations (docs/protocol.md)
//! expiry_s = 604800           # an authorization not captured within this is released (7 days)
//! by_method = { wallet = 3600 }  # per method, in seconds
//!
//! [http]
//! max_connections = 256       # connections open at once; at the cap the idlest one is closed
//! header_read_timeout_ms = 10000  # a request's headers must arrive within this (idle included)
//! shutdown_grace_ms = 5000    # requests in progress get this long to finish on shutdown
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::quotes::FxSettings;
use serde::Deserialize;
use wasmpay_plugin_host::{FeeLimit, MethodSettings, PluginSettings, SandboxSettings};

use wasmpay_ledger::LedgerSettings;

use crate::api::HttpLimits;
use crate::cluster::ClusterSettings;
use crate::durable::DeliverySettings;
use crate::holds::HoldSettings;

/// The parsed configuration file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Sandbox limits.
    #[serde(default)]
    pub sandbox: SandboxSettings,
    /// Plugins by name.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginSettings>,
    /// Method pipelines by method name.
    #[serde(default)]
    pub methods: BTreeMap<String, MethodSettings>,
    /// The most each method's fees may be; unset methods get [`FeeLimit::default`].
    #[serde(default)]
    pub fee_limits: BTreeMap<String, FeeLimit>,
    /// Bounds of the operators' HTTP server.
    #[serde(default)]
    pub http: HttpLimits,
    /// How the ledger writes: group commit, durability.
    #[serde(default)]
    pub ledger: LedgerSettings,
    /// How membership and partition leases are timed.
    #[serde(default)]
    pub cluster: ClusterSettings,
    /// How payments may arrive: request-reply always, durable ingestion if enabled.
    #[serde(default)]
    pub delivery: DeliverySettings,
    /// How long authorizations hold money, and how their expiry is swept.
    #[serde(default)]
    pub holds: HoldSettings,
    /// How long FX quotes hold.
    #[serde(default)]
    pub fx: FxSettings,
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// Settings of the file contradict each other.
    #[error("invalid {path}: {reason}")]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// Which settings, and why.
        reason: String,
    },
}

impl Config {
    /// Reads, parses and checks `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let config: Config =
            toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })?;
        config.check().map_err(|reason| ConfigError::Inconsistent { path: path.into(), reason })?;
        Ok(config)
    }

    /// Whether the settings agree with each other: a paused node's open batch must be rolled
    /// back, and its row locks freed, before its leases can expire and its partitions move.
    fn check(&self) -> Result<(), String> {
        self.holds.check()?;
        self.fx.check()?;
        if !self.ledger.frees_locks_within(self.cluster.lease_ttl_ms) {
            return Err(format!(
                "[ledger] idle_transaction_timeout_ms = {} must be at most half of [cluster] lease_ttl_ms = {}: \
                 a paused node's row locks must be freed before its partitions can move",
                self.ledger.idle_transaction_timeout_ms, self.cluster.lease_ttl_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = r#"
            [sandbox]
            call_timeout_ms = 20
            [plugins.card]
            config = { "fee.bps" = "250" }
            [methods.card]
            validators = ["card", "limits"]
            fee = "card"
            [fee_limits.card]
            max_bps = 500
            fixed = { EUR = 30 }
            [ledger]
            synchronous = "normal"
            [cluster]
            lease_ttl_ms = 6000
        "#;
        let config: Config = toml::from_str(text).expect("valid");
        assert_eq!(config.sandbox.call_timeout_ms, 20);
        assert_eq!(config.sandbox.memory_limit_mib, 16);
        assert_eq!(config.plugins["card"].config["fee.bps"], "250");
        assert_eq!(config.methods["card"].validators, ["card", "limits"]);
        assert_eq!((config.fee_limits["card"].max_bps, config.fee_limits["card"].fixed["EUR"]), (500, 30));
        assert_eq!(config.ledger.synchronous, wasmpay_ledger::Durability::Normal);
        assert_eq!(config.ledger.batch_size_max, 512);
        assert_eq!((config.cluster.lease_ttl_ms, config.cluster.heartbeat_ms), (6000, 500));
        assert!(toml::from_str::<Config>("[sandbox]\ncall_timeout = 1").is_err());
        assert_eq!(toml::from_str::<Config>("").expect("empty"), Config::default());
    }

    /// A lease TTL that a paused node's open batch could outlive is refused with both
    /// settings named; the defaults agree.
    #[test]
    fn a_lease_shorter_than_twice_the_idle_transaction_timeout_is_refused() {
        assert_eq!(Config::default().check(), Ok(()));
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("wasmpay.toml");
        std::fs::write(&path, "[ledger]\nidle_transaction_timeout_ms = 2000\n[cluster]\nlease_ttl_ms = 3000\n")
            .expect("write");
        let refused = Config::load(&path).expect_err("inconsistent");
        let message = refused.to_string();
        assert!(
            message.contains("idle_transaction_timeout_ms = 2000") && message.contains("lease_ttl_ms = 3000"),
            "{message}"
        );
    }
}
