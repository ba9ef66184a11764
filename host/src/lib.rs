//! # wasmpay
//!
//! A payment orchestration node: payments arrive over NATS, WebAssembly plugins validate and
//! price them, a double-entry ledger posts them.
//!
//! Layout (dependencies point down the list, never up):
//! - [`cli`], [`demo`]: the `wasmpay` binary's commands (the only `anyhow` users).
//! - [`node`]: starts and stops a node: bus, HTTP API, plugins, ledger.
//! - [`bus`]: NATS subscriptions, per-partition workers, forwarding, events.
//! - [`api`]: the operators' HTTP API (health, metrics, accounts, deposits, payments).
//! - [`payments`]: deciding one payment, from message bytes to reply bytes.
//! - [`plugins`]: the wasmtime sandbox, plugin loading, method pipelines.
//! - [`ledger`]: accounts, idempotent double-entry postings, audits (sqlx, SQLite).
//! - [`protocol`]: the wire format, its limits and its stable codes.
//! - [`routing`]: account ids, FNV-1a partitions, subjects.
//! - [`money`]: currencies and checked minor-unit arithmetic.
//! - [`config`], [`metrics`], [`shutdown`], [`nats_server`]: configuration file, Prometheus counters,
//!   the stop signal, a
//!   private `nats-server` for the demo and tests.

pub mod api;
pub mod bus;
pub mod cli;
pub mod config;
pub mod demo;
pub mod ledger;
pub mod metrics;
pub mod money;
pub mod nats_server;
pub mod node;
pub mod payments;
pub mod plugins;
pub mod protocol;
pub mod routing;
pub mod shutdown;
