//! # wasmpay-protocol
//!
//! The wire contract of wasmpay, version 1 (docs/protocol.md, docs/schema/): what a client
//! sends, what it gets back, and where to send it. It depends on serde and nothing async, so
//! any Rust client, the node and the tests share one definition of the protocol.
//!
//! Layout (dependencies point down the list, never up):
//! - [`request`]: decoding a message strictly, into a checked [`Operation`] (a payment or
//!   authorization, a capture or void) or a [`Refusal`].
//! - [`quote`]: decoding a request for an FX quote, before a cross-border payment.
//! - [`reply`]: the [`Reply`], byte for byte what a client receives.
//! - [`cluster`]: what `wasmpay.cluster.info` answers.
//! - [`codes`]: the coarse [`Status`] and the stable [`Code`] of every reply.
//! - [`json`]: strict JSON (no repeated keys), for payments and the HTTP API alike.
//! - [`routing`]: account ids, FNV-1a partitions, subject names.
//! - [`money`]: ISO 4217 currencies, registered assets and checked minor-unit arithmetic.
//! - [`openapi`]: the schemas of the types serde reads from plain strings, for the API document.

pub mod cluster;
pub mod codes;
pub mod json;
pub mod money;
pub mod openapi;
pub mod quote;
pub mod reply;
pub mod request;
pub mod routing;

pub use cluster::ClusterInfo;
pub use codes::{Code, Status};
pub use reply::{Converted, Reply};
pub use request::{
    HoldAction, HoldRequest, ID_RULE, InvalidPaymentId, Leg, MAX_LEGS, Operation, PaymentId, PaymentKind,
    PaymentMessage, PaymentRequest, RefundRequest, Refusal, SettlementMessage, SettlementRequest, decode,
    decode_operation,
};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest accepted message body. Larger messages are refused unread.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests;
