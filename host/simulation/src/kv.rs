//! The NATS JetStream KV as the cluster uses it: three buckets (`wasmpay_members`,
//! `wasmpay_leases` with a TTL, `wasmpay_cluster` without), per-bucket revisions (a stream's
//! sequence), create-if-absent, update and delete on a revision, expiry on the KV's own clock,
//! watch events for every change, and the loss of a bucket's state.

use std::collections::BTreeMap;

use crate::ledger::LedgerId;
use crate::time::Millis;

/// A node's index in the run.
pub type NodeId = u8;

/// The three buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BucketId {
    Members,
    Leases,
    Binding,
}

impl BucketId {
    pub const ALL: [BucketId; 3] = [BucketId::Members, BucketId::Leases, BucketId::Binding];

    fn index(self) -> usize {
        match self {
            BucketId::Members => 0,
            BucketId::Leases => 1,
            BucketId::Binding => 2,
        }
    }
}

/// A key, with the bucket it lives in: a member's node, a partition's lease, the binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Member(NodeId),
    Lease(u32),
    Binding,
}

impl Key {
    pub fn bucket(self) -> BucketId {
        match self {
            Key::Member(_) => BucketId::Members,
            Key::Lease(_) => BucketId::Leases,
            Key::Binding => BucketId::Binding,
        }
    }
}

/// The records (`records.rs`), reduced to what the protocol reads. Every node partitions
/// alike in the simulation, so the partition count is left out of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    /// `Member`: the node's ledger, and whether its ledger records that it serves the
    /// deployment (`serves`).
    Member { ledger: LedgerId, serves: bool },
    /// `Lease`: the holder and its ledger, and its token once renewed.
    Lease { node: NodeId, ledger: LedgerId, token: Option<u64> },
    /// `Binding`: the ledger the deployment is bound to.
    Binding { ledger: LedgerId },
}

/// A request on the KV.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    Put(Key, Value),
    Get(Key),
    /// Create if absent (or deleted): compare-and-set on "no value".
    Create(Key, Value),
    /// Update on the key's last revision.
    Update(Key, Value, u64),
    /// Delete on the key's last revision.
    Delete(Key, u64),
    /// Re-create the bucket if it is missing (`jetstream::ensure_bucket`).
    Ensure(BucketId),
}

/// The KV's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvReply {
    Put(u64),
    Got(Option<Value>),
    /// The new revision, or `None`: the key exists.
    Created(Option<u64>),
    /// The new revision, or `None`: wrong last revision.
    Updated(Option<u64>),
    /// Whether the revision matched.
    Deleted(bool),
    Ensured,
    /// The bucket does not exist (its stream was deleted).
    NoBucket,
}

/// A change, as a watch delivers it: a value (a put) or its removal (a delete marker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Change {
    pub key: Key,
    pub value: Option<Value>,
    pub revision: u64,
}

/// One key's last message: a value or a delete marker, its revision, when it was written.
#[derive(Clone, Copy, Debug)]
struct Entry {
    value: Option<Value>,
    revision: u64,
    at: Millis,
}

#[derive(Clone, Debug)]
struct Bucket {
    exists: bool,
    ttl: Option<Millis>,
    /// The stream's last sequence: revisions start again at 1 after a loss.
    sequence: u64,
    entries: BTreeMap<Key, Entry>,
}

/// How a fault loses a bucket's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Loss {
    /// The stream is deleted: requests fail until a node re-creates it.
    Deleted,
    /// The server comes back with an empty store: the bucket is there, empty.
    Emptied,
}

/// The three buckets, on the KV's clock (the world's).
#[derive(Clone, Debug)]
pub struct Kv {
    buckets: [Bucket; 3],
}

impl Kv {
    pub fn new(ttl: Millis) -> Kv {
        let bucket = |ttl| Bucket { exists: true, ttl, sequence: 0, entries: BTreeMap::new() };
        Kv { buckets: [bucket(Some(ttl)), bucket(Some(ttl)), bucket(None)] }
    }

    fn bucket(&mut self, id: BucketId) -> &mut Bucket {
        &mut self.buckets[id.index()]
    }

    /// Carries out `op` at `now`; the answer and the change to send to the watches.
    pub fn apply(&mut self, op: KvOp, now: Millis) -> (KvReply, Option<Change>) {
        let bucket_id = match op {
            KvOp::Put(key, _)
            | KvOp::Get(key)
            | KvOp::Create(key, _)
            | KvOp::Update(key, _, _)
            | KvOp::Delete(key, _) => key.bucket(),
            KvOp::Ensure(bucket) => bucket,
        };
        let bucket = self.bucket(bucket_id);
        if let KvOp::Ensure(_) = op {
            bucket.exists = true;
            return (KvReply::Ensured, None);
        }
        if !bucket.exists {
            return (KvReply::NoBucket, None);
        }
        bucket.expire(now);
        let last = |bucket: &Bucket, key: Key| bucket.entries.get(&key).copied();
        match op {
            KvOp::Put(key, value) => {
                let revision = bucket.write(key, Some(value), now);
                (KvReply::Put(revision), Some(Change { key, value: Some(value), revision }))
            }
            KvOp::Get(key) => (KvReply::Got(last(bucket, key).and_then(|entry| entry.value)), None),
            KvOp::Create(key, value) => match last(bucket, key) {
                Some(Entry { value: Some(_), .. }) => (KvReply::Created(None), None),
                _ => {
                    let revision = bucket.write(key, Some(value), now);
                    (KvReply::Created(Some(revision)), Some(Change { key, value: Some(value), revision }))
                }
            },
            KvOp::Update(key, value, expected) => match last(bucket, key) {
                Some(entry) if entry.revision == expected => {
                    let revision = bucket.write(key, Some(value), now);
                    (KvReply::Updated(Some(revision)), Some(Change { key, value: Some(value), revision }))
                }
                _ => (KvReply::Updated(None), None),
            },
            KvOp::Delete(key, expected) => match last(bucket, key) {
                Some(entry) if entry.revision == expected => {
                    let revision = bucket.write(key, None, now);
                    (KvReply::Deleted(true), Some(Change { key, value: None, revision }))
                }
                _ => (KvReply::Deleted(false), None),
            },
            KvOp::Ensure(_) => (KvReply::Ensured, None),
        }
    }

    /// Loses `bucket`'s state.
    pub fn lose(&mut self, bucket: BucketId, loss: Loss) {
        let bucket = self.bucket(bucket);
        bucket.exists = loss == Loss::Emptied;
        bucket.sequence = 0;
        bucket.entries.clear();
    }

    /// What a watch started now replays (`watch_with_history`): each live key's last message.
    pub fn history(&mut self, bucket: BucketId, now: Millis) -> Vec<Change> {
        let bucket = self.bucket(bucket);
        if !bucket.exists {
            return Vec::new();
        }
        bucket.expire(now);
        bucket
            .entries
            .iter()
            .map(|(key, entry)| Change { key: *key, value: entry.value, revision: entry.revision })
            .collect()
    }

    /// The binding's value, for the checks.
    pub fn binding(&self) -> Option<Value> {
        self.buckets[BucketId::Binding.index()].entries.get(&Key::Binding).and_then(|entry| entry.value)
    }
}

impl Bucket {
    /// Forgets the messages older than the TTL (the stream's `max_age`); no event is sent.
    fn expire(&mut self, now: Millis) {
        if let Some(ttl) = self.ttl {
            self.entries.retain(|_, entry| now.saturating_sub(entry.at) < ttl);
        }
    }

    fn write(&mut self, key: Key, value: Option<Value>, now: Millis) -> u64 {
        self.sequence += 1;
        self.entries.insert(key, Entry { value, revision: self.sequence, at: now });
        self.sequence
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Value = Value::Lease { node: 0, ledger: LedgerId::A, token: None };

    #[test]
    fn leases_are_compare_and_set_and_expire() {
        let mut kv = Kv::new(3_000);
        let key = Key::Lease(1);
        assert_eq!(kv.apply(KvOp::Create(key, LEASE), 0).0, KvReply::Created(Some(1)));
        assert_eq!(kv.apply(KvOp::Create(key, LEASE), 10).0, KvReply::Created(None));
        assert_eq!(kv.apply(KvOp::Update(key, LEASE, 7), 20).0, KvReply::Updated(None));
        assert_eq!(kv.apply(KvOp::Update(key, LEASE, 1), 20).0, KvReply::Updated(Some(2)));
        assert_eq!(kv.apply(KvOp::Delete(key, 1), 30).0, KvReply::Deleted(false));
        assert_eq!(kv.apply(KvOp::Delete(key, 2), 30).0, KvReply::Deleted(true));
        assert_eq!(kv.apply(KvOp::Create(key, LEASE), 40).0, KvReply::Created(Some(4)));
        assert_eq!(kv.apply(KvOp::Get(key), 3_039).0, KvReply::Got(Some(LEASE)));
        assert_eq!(kv.apply(KvOp::Get(key), 3_040).0, KvReply::Got(None));
        assert_eq!(kv.apply(KvOp::Update(key, LEASE, 4), 3_040).0, KvReply::Updated(None));
    }

    #[test]
    fn a_deleted_bucket_fails_until_ensured_and_revisions_start_again() {
        let mut kv = Kv::new(3_000);
        kv.apply(KvOp::Put(Key::Binding, Value::Binding { ledger: LedgerId::A }), 0);
        kv.lose(BucketId::Binding, Loss::Deleted);
        assert_eq!(kv.apply(KvOp::Get(Key::Binding), 1).0, KvReply::NoBucket);
        assert_eq!(kv.apply(KvOp::Ensure(BucketId::Binding), 2).0, KvReply::Ensured);
        assert_eq!(kv.apply(KvOp::Get(Key::Binding), 3).0, KvReply::Got(None));
        let bound = Value::Binding { ledger: LedgerId::B };
        assert_eq!(kv.apply(KvOp::Create(Key::Binding, bound), 4).0, KvReply::Created(Some(1)));
        // No TTL on the binding.
        assert_eq!(kv.apply(KvOp::Get(Key::Binding), 1_000_000).0, KvReply::Got(Some(bound)));
    }
}
