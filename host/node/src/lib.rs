//! # wasmpay
//!
//! A payment orchestration node: payments arrive over NATS, WebAssembly plugins validate and
//! price them, a double-entry ledger posts them. This crate wires the lower crates together
//! and puts them on the network; the `wasmpay` binary (`host/wasmpay`) is its edge.
//!
//! The crates below it, each usable alone:
//! - `wasmpay-protocol`: the wire contract (requests, replies, codes, money, partitions).
//! - `wasmpay-ledger`: accounts and idempotent double-entry postings (sqlx).
//! - `wasmpay-plugin-host`: the wasmtime sandbox, plugin loading, method pipelines.
//! - `wasmpay-cluster`: membership, fenced partition leases, the binding, the operator's view,
//!   and the one JetStream layer (bounded requests, opening buckets and streams) the node's
//!   durable streams and plugin store use too.
//!
//! Layout of this crate (dependencies point down the list, never up):
//! - [`node`]: starts and stops a node: plugins, ledger, bus, cluster, HTTP API.
//! - [`config`]: the configuration file (every part's settings, the cluster's included).
//! - [`api`]: the operators' HTTP API (health, metrics, accounts, deposits, payments, plugins).
//! - [`plugins`]: plugin versions arriving while the node runs: the cluster's plugin store
//!   (JetStream object store and KV), and the watched plugin directory.
//! - [`bus`]: NATS subscriptions of owned partitions, per-partition workers, forwarding, events;
//!   its `Intake` is the partitions `wasmpay-cluster` opens and closes.
//! - [`payments`]: deciding one payment, from message bytes to reply bytes.
//! - [`quotes`]: FX quotes, priced by the FX plugin and kept by the ledger, for any node to answer.
//! - [`holds`]: how long authorizations hold money, and the sweep that releases them.
//! - [`durable`]: durable ingestion (JetStream payments stream, per-partition consumers).
//! - [`cluster`]: the ledger's fences for `wasmpay-cluster`, and the names the node's users
//!   take from it.
//! - [`client`]: a client of running nodes (NATS request/reply, the HTTP API).
//! - [`metrics`], [`traces`], [`complaints`], [`shutdown`], [`clock`]: Prometheus metrics
//!   (also the plugins', the ledger's and the cluster's observer), OpenTelemetry traces and W3C
//!   trace context in NATS headers, a complaint said once while its cause lasts, the stop
//!   signal, the wall clock.

pub mod api;
pub mod bus;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod complaints;
pub mod config;
pub mod durable;
pub mod holds;
pub mod metrics;
pub mod node;
pub mod payments;
pub mod plugins;
pub mod quotes;
pub mod shutdown;
pub mod traces;
