//! # wasmpay-simulation
//!
//! A deterministic simulation of the cluster's ownership protocol, in the manner of
//! FoundationDB's and TigerBeetle's simulators: one process, one seed, no threads, no wall
//! clock, no hash-map iteration, simulated time in milliseconds driven by an event queue
//! ordered by (time, sequence number), so a seed replays exactly.
//!
//! The decisions are the real code (`wasmpay_cluster::decide`, `plan::assign`, `plan::plan`);
//! the driver's rounds and renewals are modelled step by step after `ownership.rs` and
//! `leases.rs` ([`node`]); the KV, the network, the ledgers and the clients are models
//! ([`kv`], [`network`], [`ledger`], [`world`]); faults are drawn from the seed ([`faults`]);
//! the invariants are checked from what the ledgers did ([`invariants`]). docs/cluster.md,
//! "Deterministic simulation", has what is modelled and the measurements.
//!
//! Layout (each module uses only modules above it in this list):
//! - [`rng`]: SplitMix64, the only randomness.
//! - [`time`]: simulated time, the protocol's timing, a node's clock.
//! - [`ledger`]: fencing tokens, idempotent commits, the deployment's record.
//! - [`kv`]: the three buckets.
//! - [`table`]: a bucket as a node's watch shows it.
//! - [`network`]: delays, losses, duplicates, cuts.
//! - [`protocol`]: the protocol version (the real one, or an older one).
//! - [`node`]: a node's rounds, renewals and bus.
//! - [`trace`]: the run's record, generic over its events.
//! - [`faults`]: a run's faults.
//! - [`invariants`]: what must hold.
//! - [`world`]: one run.

pub mod faults;
pub mod invariants;
pub mod kv;
pub mod ledger;
pub mod network;
pub mod node;
pub mod protocol;
pub mod rng;
pub mod table;
pub mod time;
pub mod trace;
pub mod world;

pub use node::Stats;
pub use protocol::Protocol;
pub use world::{Config, Outcome, Violation, run};
