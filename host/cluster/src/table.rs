//! A bucket's live keys as this node last saw them, kept current by a watch.
//!
//! Both cluster buckets expire what is not renewed (the stream's `max_age`), so a node that
//! dies stops being a member, and its leases end, without anyone deleting them. Expiry sends no
//! event, so a [`Table`] ages its entries itself: a key whose value is older than the bucket's
//! TTL here has expired on the server too. Each node watches both buckets, so a join, a leave
//! or a released lease is seen at once instead of at the next poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::kv::{Operation, Store};
use bytes::Bytes;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::jetstream as js;

/// How long to wait before watching a bucket again after its watch ended.
const REWATCH_DELAY: Duration = Duration::from_millis(250);

/// One key's newest value, and when this node saw it.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) value: Bytes,
    revision: u64,
    at: Instant,
}

/// A bucket's live keys as this node last saw them, kept current by a watch. A key whose value
/// is older than the bucket's TTL here has expired on the server too (expiry sends no event).
#[derive(Clone, Debug, Default)]
pub(crate) struct Table {
    entries: Arc<Mutex<HashMap<String, Seen>>>,
    /// Asks the watch to start again (it went quiet: its consumer was lost with a server).
    rewatch: Arc<Notify>,
}

impl Table {
    /// Watches `store` for as long as the returned task runs, waking `changed` on every event.
    pub(crate) fn watch(store: Store, changed: Arc<Notify>) -> (Table, tokio::task::JoinHandle<()>) {
        let table = Table::default();
        let (entries, rewatch) = (table.entries.clone(), table.rewatch.clone());
        let task = tokio::spawn(async move {
            // Said once per outage: a deleted bucket fails every attempt until it is re-created.
            let mut failing = false;
            loop {
                // Bounded: creating the watch's consumer on a stream that is electing a leader
                // gets no answer, and the next attempt finds the new leader sooner than the
                // client's own time-out would (nodes stayed out ~12 s behind it).
                match js::request("watching the bucket", store.watch_with_history(">")).await {
                    Ok(mut watch) => loop {
                        if std::mem::take(&mut failing) {
                            tracing::info!(bucket = %store.name, "watching the bucket again");
                        }
                        let entry = tokio::select! {
                            () = rewatch.notified() => break,
                            entry = watch.next() => entry,
                        };
                        let Some(Ok(entry)) = entry else { break };
                        record(&entries, entry);
                        changed.notify_one();
                    },
                    Err(error) if !failing => {
                        failing = true;
                        tracing::warn!(%error, bucket = %store.name, "cannot watch the bucket; trying again");
                    }
                    Err(_) => {}
                }
                tracing::debug!(bucket = %store.name, "watching the bucket again");
                tokio::time::sleep(REWATCH_DELAY).await;
            }
        });
        (table, task)
    }

    /// Starts the watch again: an ordered consumer lost with its server can stay silent for
    /// seconds before the client notices, and meanwhile every member looks dead.
    pub(crate) fn rewatch(&self) {
        self.rewatch.notify_one();
    }

    /// When `key`'s current value was first seen.
    pub(crate) fn seen_at(&self, key: &str) -> Option<Instant> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.get(key).map(|seen| seen.at)
    }

    /// The keys seen within `ttl` before `now`, with their values.
    pub(crate) fn live(&self, ttl: Duration, now: Instant) -> HashMap<String, Seen> {
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
        // they keep when they were first seen. A bucket re-created after a loss numbers its
        // revisions again, so a new value may come with a revision seen before: it counts as
        // new (a stale `serves` kept would mislead the binding's claimant check).
        Operation::Put => match entries.get(&entry.key) {
            Some(seen) if seen.revision == entry.revision && seen.value == entry.value => {}
            _ => {
                entries.insert(entry.key, Seen { value: entry.value, revision: entry.revision, at: Instant::now() });
            }
        },
        Operation::Delete | Operation::Purge => {
            entries.remove(&entry.key);
        }
    }
}

impl Seen {
    /// The value as the record `R`, if it is one.
    pub(crate) fn record<R: DeserializeOwned>(&self) -> Option<R> {
        serde_json::from_slice(&self.value).ok()
    }
}
