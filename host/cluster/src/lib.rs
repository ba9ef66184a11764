//! # wasmpay-cluster
//!
//! Partition ownership across wasmpay nodes: membership, fenced leases, handover, the NATS
//! deployment's binding to one ledger, and the operator's view, over JetStream.
//!
//! - Binding: a deployment is bound to one ledger, recorded in the ledger itself (the truth,
//!   reached through [`Fences`]) and cached in NATS (a key without TTL in `wasmpay_cluster`)
//!   ([`decide`]); a node on another ledger serves nothing until an operator adopts the
//!   deployment in its ledger, so payments never move between ledgers, even when NATS loses
//!   its state.
//! - Membership: every node puts its record in the `wasmpay_members` bucket every heartbeat;
//!   the bucket forgets a record one TTL after its last put, so a dead node leaves by itself.
//! - Assignment: partitions go to the live members that write this node's ledger by
//!   rendezvous hashing ([`assignment`]), which every node computes alike.
//! - Ownership: a node serves a partition only while it holds the partition's lease in the
//!   `wasmpay_leases` bucket: taken by create (compare-and-set on "no value"), renewed by
//!   update on its last revision well inside the TTL, released by a delete on its revision
//!   after handing over. The new owner claims the partition in the ledger, which hands out a
//!   fencing token, before serving, and every payment it posts carries it, so an owner that
//!   was paused or cut off past its lease cannot post after its successor.
//!
//! The crate knows nothing of the node: the node's bus, ledger and metrics reach it through
//! the traits of [`ports`], as the ledger's `CommitObserver` does. docs/cluster.md has the
//! protocol and its numbers.
//!
//! Layout (each module uses only modules below it):
//! - [`Cluster`] (`cluster`): join and leave, the handle a node keeps.
//! - `ownership`: the driver of the rounds: gathers a round's inputs, carries out its plan.
//! - `leases`: the leases held, and taking, renewing and releasing them.
//! - [`decide`] (`binding`): the deployment's binding to one ledger, the pure rule and its
//!   requests; [`unbind`] for operators.
//! - `repeats`: a lasting complaint logged once, not every round.
//! - `table`: a bucket's live keys, kept current by a watch.
//! - [`bounds`]: how long each step may take, computed from its parts.
//! - [`plan`]: the pure decision of one round.
//! - [`assignment`]: rendezvous hashing, partition → member.
//! - `records`: the buckets' names, keys and JSON records.
//! - [`ClusterView`] (`view`): the operator's view.
//! - [`ports`]: what the node provides (partitions, fences, metrics).
//! - [`ClusterSettings`], [`Identity`] (`settings`) and [`ClusterError`] (`error`).
//! - [`jetstream`]: the one JetStream layer: opening (and re-creating) buckets and streams,
//!   bounded requests, [`jetstream::JetStreamError`]. The node's durable streams and plugin store use it too.

pub mod assignment;
mod binding;
pub mod bounds;
mod cluster;
mod error;
pub mod jetstream;
mod leases;
mod ownership;
pub mod plan;
pub mod ports;
mod records;
mod repeats;
mod settings;
mod table;
mod view;

pub use binding::{Facts, Step, decide, unbind};
pub use cluster::Cluster;
pub use error::ClusterError;
pub use ports::{ClusterObserver, Fences, Partitions, Ports};
pub use settings::{ClusterSettings, DEFAULT_DEPLOYMENT, Identity};
pub use view::{ClusterView, LeaseView, MemberView, Views};
