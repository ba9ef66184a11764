//! # wasmpay-tools
//!
//! What the `wasmpay` binary runs besides a node: `wasmpay demo` (the main job on embedded
//! defaults, or a cluster of `serve` processes on PostgreSQL) and `wasmpay bench` (the node
//! measured beside its baselines, in one run). They start real servers and drive them from the
//! outside, the way a user would, and report to a person: this crate is the binary's edge
//! split off so that `wasmpay-node` holds only the node, and its errors are `anyhow` reports.
//!
//! Layout: [`demo`] and [`bench`] are the two commands; `nats` starts a private NATS server
//! for both, `postgres` makes them a scratch schema on a PostgreSQL server.

pub mod bench;
pub mod demo;
mod nats;
mod postgres;
