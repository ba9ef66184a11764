//! Plugin versions arriving while the node runs: from the cluster's plugin store (`store`),
//! which every node follows, and from a watched directory (`directory`), which only this node
//! reads. Both hand a manifest and a component to [`PluginHost::install`], which checks the
//! version and switches to it only if it passes; a refusal leaves the serving version, and is
//! logged, counted (`wasmpay_plugin_refusals_total`) and shown by `GET /v1/plugins`.

pub mod directory;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, Watch};
use futures::StreamExt;
use tokio::task::JoinHandle;
use wasmpay_plugin_host::{ActivationError, Origin, PluginHost, Sha256};

use crate::metrics::Metrics;
use crate::shutdown;
use store::{PluginStore, Pointer, StoreError};

/// How long to wait before watching the pointers again after the watch ended.
const REWATCH_DELAY: Duration = Duration::from_millis(500);
/// How often a pointer that could not be applied for a passing reason is tried again.
const RETRY_DELAY: Duration = Duration::from_secs(2);
/// How often every pointer is read and compared with what was applied, whatever the watch
/// says: a watch whose consumer died with a NATS server can stay silent for a long time
/// before it ends, and a change must not wait for that.
const RECONCILE_EVERY: Duration = Duration::from_secs(10);

/// Why a pointer was not applied.
#[derive(Debug, thiserror::Error)]
pub enum NotApplied {
    /// The store could not be read (NATS reconnecting, JetStream electing): tried again.
    #[error("{0}")]
    Transient(String),
    /// This node refuses what the pointer says (its checks, or its own `[methods]`): it keeps
    /// its version until the pointer changes, and shows why.
    #[error("{0}")]
    Refused(String),
}

/// Switches `host` to what `pointer` says serves `name`, fetching the component from `store`
/// unless this node has the version loaded.
pub async fn apply(
    host: &Arc<PluginHost>,
    store: &PluginStore,
    metrics: &Metrics,
    name: &str,
    pointer: &Pointer,
) -> Result<(), NotApplied> {
    let Some(manifest) = &pointer.active else {
        if !host.is_serving(name) {
            return Ok(());
        }
        let (host, name) = (host.clone(), name.to_owned());
        // Waits for an install in progress (a compile): off the async threads.
        let removed = tokio::task::spawn_blocking(move || host.remove(&name).map(drop)).await;
        return count(metrics, removed.map_err(|error| NotApplied::Refused(error.to_string()))?);
    };
    // Serving this very manifest, and not quarantined: nothing to do. (A pointer put again
    // is a new revision, applied here; a quarantined version is then re-enabled.)
    if host.serves(manifest) {
        return Ok(());
    }
    let (reusing, wanted) = (host.clone(), manifest.clone());
    let reused = tokio::task::spawn_blocking(move || reusing.reuse(&wanted, Origin::Cluster))
        .await
        .map_err(|error| NotApplied::Refused(error.to_string()))?;
    if let Some(switched) = reused {
        return count(metrics, switched.map(drop));
    }
    let sha256 = manifest.sha256.as_ref().map(Sha256::to_string).unwrap_or_default();
    let bytes = match store.component(&sha256).await {
        Ok(bytes) => bytes,
        Err(StoreError::Unavailable(error)) => return Err(NotApplied::Transient(error.to_string())),
        Err(missing) => {
            // Not in the store (or corrupt there): no later fetch will do better.
            let error = ActivationError::Unavailable(missing.to_string());
            host.refuse(manifest, &error);
            return count(metrics, Err(error));
        }
    };
    let (host, manifest) = (host.clone(), manifest.clone());
    let installed = tokio::task::spawn_blocking(move || host.install(&manifest, &bytes, Origin::Cluster))
        .await
        .map_err(|error| NotApplied::Refused(error.to_string()))?;
    match installed {
        Err(error) if error.is_transient() => Err(NotApplied::Transient(error.to_string())),
        installed => count(metrics, installed.map(drop)),
    }
}

/// Counts a switch or a refusal.
fn count(metrics: &Metrics, outcome: Result<(), ActivationError>) -> Result<(), NotApplied> {
    match outcome {
        Ok(()) => {
            metrics.plugin_switches.inc();
            Ok(())
        }
        Err(error) => {
            metrics.plugin_refusals.inc();
            Err(NotApplied::Refused(format!("{}: {error}", error.code())))
        }
    }
}

/// The pointer revision each plugin was last brought to: a watch that starts again replays
/// every pointer, and only a newer revision is a change (re-applying an old one would lift a
/// quarantine nobody lifted, and check again a version already refused).
pub type Applied = BTreeMap<String, u64>;

/// Applies every pointer of the store: a starting node serves what the cluster serves before
/// it takes a payment. A version this node refuses is logged and left; one it could not fetch
/// is left to [`follow`], which starts with every pointer as it is.
pub async fn catch_up(host: &Arc<PluginHost>, store: &PluginStore, metrics: &Metrics) -> Result<Applied, StoreError> {
    let mut applied = Applied::new();
    for (name, pointer, revision) in store.pointers().await? {
        match apply(host, store, metrics, &name, &pointer).await {
            Ok(()) => {
                applied.insert(name, revision);
            }
            Err(error @ NotApplied::Refused(_)) => {
                tracing::error!(plugin = %name, %error, "the cluster's version of this plugin is refused here");
                applied.insert(name, revision);
            }
            Err(error) => {
                tracing::warn!(plugin = %name, %error, "the cluster's version of this plugin cannot be fetched yet")
            }
        }
    }
    Ok(applied)
}

/// Follows the store's pointers until shutdown, from what [`catch_up`] applied: every
/// pointer as it is when the watch starts (so nothing changed before, or while the watch was
/// re-established, is missed), then every change as it comes. A pointer that failed for a
/// passing reason is read again and applied every [`RETRY_DELAY`] until it applies or
/// changes, and every pointer is compared with what was applied every [`RECONCILE_EVERY`].
pub fn follow(
    host: Arc<PluginHost>,
    store: PluginStore,
    metrics: Arc<Metrics>,
    mut applied: Applied,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut retry = tokio::time::interval(RETRY_DELAY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reconcile = tokio::time::interval_at(tokio::time::Instant::now() + RECONCILE_EVERY, RECONCILE_EVERY);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending: BTreeSet<String> = BTreeSet::new();
        let mut watch = None;
        loop {
            if watch.is_none() {
                match store.watch().await {
                    Ok(started) => watch = Some(started),
                    Err(error) => tracing::warn!(%error, "cannot watch the plugin store; trying again"),
                }
            }
            let mut due: Vec<(String, Pointer, u64)> = Vec::new();
            tokio::select! {
                entry = next_entry(&mut watch) => match entry {
                    Some(entry) => due.extend(change(&entry)),
                    // The watch ended (NATS reconnecting, the stream moving): watch again; it
                    // starts with every pointer as it is now.
                    None => watch = None,
                },
                _ = retry.tick() => {
                    for name in std::mem::take(&mut pending) {
                        match store.pointer_entry(&name).await {
                            Ok(Some((pointer, revision))) => due.push((name, pointer, revision)),
                            Ok(None) => {}
                            Err(_) => {
                                pending.insert(name);
                            }
                        }
                    }
                }
                _ = reconcile.tick() => match store.pointers().await {
                    Ok(pointers) => due.extend(pointers),
                    Err(error) => tracing::debug!(%error, "cannot read the plugin pointers; next time"),
                },
                () = shutdown::requested(&mut shutdown) => return,
            }
            for (name, pointer, revision) in due {
                if applied.get(&name).is_some_and(|done| *done >= revision) {
                    continue;
                }
                let outcome = tokio::select! {
                    outcome = apply(&host, &store, &metrics, &name, &pointer) => outcome,
                    () = shutdown::requested(&mut shutdown) => return,
                };
                match outcome {
                    Ok(()) => {
                        pending.remove(&name);
                        applied.insert(name, revision);
                    }
                    Err(NotApplied::Transient(error)) => {
                        tracing::warn!(plugin = %name, %error, "the cluster's new version cannot be had yet; trying again");
                        pending.insert(name);
                    }
                    Err(NotApplied::Refused(error)) => {
                        tracing::error!(plugin = %name, %error, "the cluster's new version is refused here; the serving version stays");
                        pending.remove(&name);
                        applied.insert(name, revision);
                    }
                }
            }
        }
    })
}

/// The pointer an entry of the watch carries, with its revision.
fn change(entry: &kv::Entry) -> Option<(String, Pointer, u64)> {
    let name = entry.key.strip_prefix("active.")?;
    // Pointers are only ever put (a removal is a pointer too).
    if entry.operation != kv::Operation::Put {
        return None;
    }
    match serde_json::from_slice::<Pointer>(&entry.value) {
        Ok(pointer) => Some((name.to_owned(), pointer, entry.revision)),
        Err(error) => {
            tracing::error!(plugin = name, %error, "a plugin pointer does not parse; ignored");
            None
        }
    }
}

/// The next entry of the watch: `None` once it ended (after a pause, so that a watch that
/// keeps ending does not spin); pending for ever without a watch.
async fn next_entry(watch: &mut Option<Watch>) -> Option<kv::Entry> {
    match watch {
        Some(watch) => match watch.next().await {
            Some(Ok(entry)) => Some(entry),
            _ => {
                tokio::time::sleep(REWATCH_DELAY).await;
                None
            }
        },
        None => std::future::pending().await,
    }
}
