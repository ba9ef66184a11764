//! Where a payment goes: account → partition → NATS subject.
//!
//! The partition of an account is FNV-1a (32-bit) of its UTF-8 id modulo P. That is exactly
//! what the NATS server's `{{partition(P,1)}}` subject mapping computes, so a client may
//! hash itself, publish to `wasmpay.submit.<payer>` and let a node forward, or let the
//! server map it. P is fixed when a cluster is created: changing it moves every account.

use std::fmt;

/// Default partition count of a new cluster.
pub const DEFAULT_PARTITIONS: u32 = 64;
/// Name of the hash in `wasmpay.cluster.info`, part of the wire contract.
pub const HASH_NAME: &str = "fnv1a32";

/// Subjects of the wire protocol (docs/protocol.md).
pub mod subjects {
    /// Payments for partition `p` and payer `a`: `wasmpay.pay.<p>.<a>`.
    pub const PAY_PREFIX: &str = "wasmpay.pay";
    /// Payments from clients that do not hash: `wasmpay.submit.<payer>`.
    pub const SUBMIT_PREFIX: &str = "wasmpay.submit";
    /// Request/reply: the cluster's partition count, hash and protocol version.
    pub const CLUSTER_INFO: &str = "wasmpay.cluster.info";
    /// Events after commit: `wasmpay.events.payment.<status>`.
    pub const EVENTS_PREFIX: &str = "wasmpay.events.payment";
    /// Queue group in which nodes share `wasmpay.submit.*`.
    pub const SUBMIT_QUEUE_GROUP: &str = "wasmpay-submit";
    /// Request/reply: an FX quote for a cross-border payment, answered by any node (in the
    /// queue group [`FX_QUOTE_QUEUE_GROUP`]).
    pub const FX_QUOTE: &str = "wasmpay.fx.quote";
    /// Queue group in which nodes share [`FX_QUOTE`].
    pub const FX_QUOTE_QUEUE_GROUP: &str = "wasmpay-fx";

    /// Durable payments (JetStream, `Nats-Msg-Id` = payment id): `wasmpay.durable.<p>.<a>`.
    pub const DURABLE_PREFIX: &str = "wasmpay.durable";
    /// The stream that keeps durable payments until their partition's owner has posted them.
    pub const PAYMENTS_STREAM: &str = "WASMPAY_PAYMENTS";
    /// Replies to durable payments, per payer: `wasmpay.results.<payer>`.
    pub const RESULTS_PREFIX: &str = "wasmpay.results";
    /// The stream that keeps the replies to durable payments.
    pub const RESULTS_STREAM: &str = "WASMPAY_RESULTS";
    /// The header naming the payment a result answers.
    pub const PAYMENT_ID_HEADER: &str = "Wasmpay-Payment-Id";
    /// The header an HTTP node sets on a client's request: the id of the client key it came
    /// with, recorded on what the request creates. NATS permissions decide who may publish
    /// payments at all; a node forwarding over HTTP sets this itself.
    pub const CLIENT_KEY_HEADER: &str = "Wasmpay-Client-Key";

    /// The value of a [`CLIENT_KEY_HEADER`] if it is a client key id (`ck_` and 16 lower-case
    /// hex digits, as the ledger issues them): anything else a NATS client puts there (a huge
    /// or strange value) is not recorded.
    pub fn client_key_id(value: &str) -> Option<&str> {
        let digits = value.strip_prefix("ck_")?;
        (digits.len() == 16 && digits.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))).then_some(value)
    }

    /// The subject a payment from `payer` in partition `partition` is requested on.
    pub fn pay(partition: u32, payer: &str) -> String {
        format!("{PAY_PREFIX}.{partition}.{payer}")
    }

    /// The subject a durable payment from `payer` in partition `partition` is published on.
    pub fn durable(partition: u32, payer: &str) -> String {
        format!("{DURABLE_PREFIX}.{partition}.{payer}")
    }

    /// The subject the replies to `payer`'s durable payments are published on.
    pub fn results(payer: &str) -> String {
        format!("{RESULTS_PREFIX}.{payer}")
    }
}

/// FNV-1a, 32-bit.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| (hash ^ u32::from(*byte)).wrapping_mul(PRIME))
}

/// Maps accounts to a fixed number of partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partitioner {
    partitions: u32,
}

/// A partition count of zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the partition count must be at least 1")]
pub struct NoPartitions;

impl Partitioner {
    /// A partitioner over `partitions` partitions.
    pub fn new(partitions: u32) -> Result<Self, NoPartitions> {
        if partitions == 0 { Err(NoPartitions) } else { Ok(Partitioner { partitions }) }
    }

    /// The partition count P.
    pub fn partitions(self) -> u32 {
        self.partitions
    }

    /// The partition of `account`.
    pub fn partition_of(self, account: &AccountId) -> u32 {
        fnv1a32(account.as_str().as_bytes()) % self.partitions
    }
}

/// An account id: 1-64 characters of `[A-Za-z0-9_-]`, so it is always one valid NATS token.
/// Written as its text; read only through [`AccountId::new`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct AccountId(String);

/// An account id that breaks the rules of [`AccountId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("account id `{0}` must be 1-64 characters of A-Z, a-z, 0-9, `_` and `-`")]
pub struct InvalidAccountId(pub String);

/// Account ids reserved for the ledger's own accounts (fees, external funding).
pub const SYSTEM_ACCOUNT_PREFIX: char = '_';

impl AccountId {
    /// Checks and wraps `id`.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidAccountId> {
        let id = id.into();
        let valid =
            (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid { Ok(AccountId(id)) } else { Err(InvalidAccountId(id)) }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is one of the ledger's own accounts, which clients never pay from or to.
    pub fn is_system(&self) -> bool {
        self.0.starts_with(SYSTEM_ACCOUNT_PREFIX)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a32_known_vectors() {
        // Reference values of the FNV specification (draft-eastlake-fnv).
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn partition_is_hash_modulo_count() {
        let partitioner = Partitioner::new(64).expect("64 partitions");
        let alice = AccountId::new("alice").expect("valid");
        assert_eq!(partitioner.partition_of(&alice), fnv1a32(b"alice") % 64);
        assert!(Partitioner::new(0).is_err());
        let one = Partitioner::new(1).expect("1 partition");
        assert_eq!(one.partition_of(&alice), 0);
    }

    #[test]
    fn account_ids_are_single_nats_tokens() {
        for good in ["a", "alice_01", "A-b-C", &"x".repeat(64)] {
            assert!(AccountId::new(good).is_ok(), "{good}");
        }
        for bad in ["", "a.b", "a b", "a*", "a>", "é", &"x".repeat(65)] {
            assert!(AccountId::new(bad).is_err(), "{bad}");
        }
        assert!(AccountId::new("_fees_EUR").map(|id| id.is_system()).unwrap_or(false));
    }
}
