//! The cluster's state in JetStream key-value buckets: who is alive, who holds which lease.
//!
//! Both buckets expire what is not renewed (the stream's `max_age`), so a node that dies stops
//! being a member, and its leases end, without anyone deleting them. Each node also watches both
//! buckets ([`Table`]), so a join, a leave or a released lease is seen at once instead of at the
//! next poll.
//!
//! nats-server 2.9 and async-nats ≥ 0.41 disagree on the account-info reply that
//! `create_key_value` reads, so the bucket's stream is created here with the settings a KV
//! bucket has (one value per key, roll-ups, no message deletes, direct gets) and then opened
//! with `get_key_value`: that works on 2.9 and on current servers alike.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{Operation, Store};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Notify;

use super::ClusterError;

/// How long a JetStream request (a put, a lease update) may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one attempt at setting a bucket up may take. Short, because a request to a
/// stream without a leader (a replicated stream just created, or re-electing) gets no answer
/// at all: it is the next attempt that finds the new leader.
const SETUP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a starting node keeps trying to set a bucket up.
const SETUP_DEADLINE: Duration = Duration::from_secs(30);
/// How long to wait before watching a bucket again after its watch ended.
const REWATCH_DELAY: Duration = Duration::from_millis(250);

/// Opens the bucket `name`, creating it if it is missing, whose values live `ttl` unless
/// renewed (`None`: for ever); returns it with the TTL it really has (the first node creates
/// it; the bucket's TTL, not each node's setting, is what every node must use).
pub(crate) async fn open(
    jetstream: &jetstream::Context,
    name: &str,
    ttl: Option<Duration>,
    replicas: usize,
) -> Result<(Store, Duration), ClusterError> {
    let config = stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: ttl.unwrap_or_default(),
        // A key's duplicate window may not outlast its values.
        duplicate_window: ttl.unwrap_or(Duration::from_secs(120)),
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        num_replicas: replicas.max(1),
        ..stream::Config::default()
    };
    let failed =
        |error: &dyn std::fmt::Display| ClusterError::Bucket { bucket: name.to_owned(), message: error.to_string() };
    // The whole set-up is one attempt: a stream whose leader is still being elected answers
    // nothing, and asking again soon finds the leader sooner than waiting out one long request.
    let opened = patiently(name, || async {
        let mut created = jetstream.get_or_create_stream(config.clone()).await.map_err(|error| error.to_string())?;
        let actual = created.info().await.map_err(|error| error.to_string())?.config.max_age;
        let store = jetstream.get_key_value(name).await.map_err(|error| error.to_string())?;
        Ok::<_, String>((store, actual))
    })
    .await;
    opened.map_err(|error| failed(&error))
}

/// Runs a set-up request until it succeeds, each attempt bounded by [`SETUP_TIMEOUT`], for at
/// most [`SETUP_DEADLINE`]: creating a replicated stream waits for the JetStream cluster to
/// place it, the first writes wait for its replicas, and a cluster electing a leader answers
/// nothing for a few seconds. A starting node waits that out instead of failing.
pub(crate) async fn patiently<T, E, F, Fut>(what: &str, mut request: F) -> Result<T, String>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + SETUP_DEADLINE;
    loop {
        let error = match tokio::time::timeout(SETUP_TIMEOUT, request()).await {
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {SETUP_TIMEOUT:?} (is JetStream enabled? nats-server -js)"),
        };
        if tokio::time::Instant::now() + REWATCH_DELAY >= deadline {
            return Err(error);
        }
        tracing::warn!(what, %error, "JetStream is not ready; trying again");
        tokio::time::sleep(REWATCH_DELAY).await;
    }
}

/// One key's newest value, and when this node saw it.
#[derive(Clone, Debug)]
pub(super) struct Seen {
    pub value: Bytes,
    revision: u64,
    at: Instant,
}

/// A bucket's live keys as this node last saw them, kept current by a watch. A key whose value
/// is older than the bucket's TTL here has expired on the server too (expiry sends no event).
#[derive(Clone, Debug, Default)]
pub(super) struct Table {
    entries: Arc<Mutex<HashMap<String, Seen>>>,
    /// Asks the watch to start again (it went quiet: its consumer was lost with a server).
    rewatch: Arc<Notify>,
}

impl Table {
    /// Watches `store` for as long as the returned task runs, waking `changed` on every event.
    pub(super) fn watch(store: Store, changed: Arc<Notify>) -> (Table, tokio::task::JoinHandle<()>) {
        let table = Table::default();
        let (entries, rewatch) = (table.entries.clone(), table.rewatch.clone());
        let task = tokio::spawn(async move {
            loop {
                match store.watch_with_history(">").await {
                    Ok(mut watch) => loop {
                        let entry = tokio::select! {
                            () = rewatch.notified() => break,
                            entry = watch.next() => entry,
                        };
                        let Some(Ok(entry)) = entry else { break };
                        record(&entries, entry);
                        changed.notify_one();
                    },
                    Err(error) => tracing::warn!(%error, bucket = %store.name, "cannot watch the bucket"),
                }
                tracing::debug!(bucket = %store.name, "watching the bucket again");
                tokio::time::sleep(REWATCH_DELAY).await;
            }
        });
        (table, task)
    }

    /// Starts the watch again: an ordered consumer lost with its server can stay silent for
    /// seconds before the client notices, and meanwhile every member looks dead.
    pub(super) fn rewatch(&self) {
        self.rewatch.notify_one();
    }

    /// When `key`'s current value was first seen.
    pub(super) fn seen_at(&self, key: &str) -> Option<Instant> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.get(key).map(|seen| seen.at)
    }

    /// The keys seen within `ttl` before `now`, with their values.
    pub(super) fn live(&self, ttl: Duration, now: Instant) -> HashMap<String, Seen> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .iter()
            .filter(|(_, seen)| now.saturating_duration_since(seen.at) < ttl)
            .map(|(key, seen)| (key.clone(), seen.clone()))
            .collect()
    }
}

fn record(entries: &Mutex<HashMap<String, Seen>>, entry: jetstream::kv::Entry) {
    let mut entries = entries.lock().unwrap_or_else(PoisonError::into_inner);
    match entry.operation {
        // A watch started again replays the values it has seen: they are no fresher for it, so
        // they keep when they were first seen.
        Operation::Put => match entries.get(&entry.key) {
            Some(seen) if seen.revision == entry.revision => {}
            _ => {
                entries.insert(entry.key, Seen { value: entry.value, revision: entry.revision, at: Instant::now() });
            }
        },
        Operation::Delete | Operation::Purge => {
            entries.remove(&entry.key);
        }
    }
}
