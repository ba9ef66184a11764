//! Plugin versions arriving while the node runs: from the cluster's plugin store (`store`),
//! which every node follows, and from a watched directory (`directory`), which only this node
//! reads. Both hand a manifest and a component to [`PluginHost::install`], which checks the
//! version and switches to it only if it passes; a refusal leaves the serving version, and is
//! logged, counted (`wasmpay_plugin_refusals_total`) and shown by `GET /v1/plugins`.

pub mod directory;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::kv::{self, Watch};
use futures::StreamExt;
use tokio::task::JoinHandle;
use wasmpay_plugin_host::{ActivationError, Origin, PluginHost, VersionState};

use crate::metrics::Metrics;
use crate::shutdown;
use store::{PluginStore, Pointer, StoreError};

/// How long to wait before watching the pointers again after the watch ended.
const REWATCH_DELAY: Duration = Duration::from_millis(500);
/// How often a pointer that could not be applied for a passing reason is tried again.
const RETRY_DELAY: Duration = Duration::from_secs(2);

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
        if host.status().iter().all(|status| status.name != name || status.active.is_none()) {
            return Ok(());
        }
        return count(metrics, host.remove(name).map(drop));
    };
    let status = host.status().into_iter().find(|status| status.name == *name);
    let serving = status
        .as_ref()
        .and_then(|status| status.versions.first())
        .filter(|version| version.state == VersionState::Active && version.version == manifest.version);
    // Serving this very manifest, and not quarantined (a pointer put again re-enables a
    // quarantined version): nothing to do.
    if serving.is_some() && host.manifest(name, &manifest.version).as_ref() == Some(manifest) {
        return Ok(());
    }
    if let Some(switched) = host.reuse(manifest, Origin::Cluster) {
        return count(metrics, switched.map(drop));
    }
    let sha256 = manifest.sha256.clone().unwrap_or_default();
    let bytes = store.component(&sha256).await.map_err(|error| NotApplied::Transient(error.to_string()))?;
    let (host, manifest) = (host.clone(), manifest.clone());
    let installed = tokio::task::spawn_blocking(move || host.install(&manifest, &bytes, Origin::Cluster))
        .await
        .map_err(|error| NotApplied::Refused(error.to_string()))?;
    count(metrics, installed.map(drop))
}

/// Counts a switch or a refusal.
fn count(metrics: &Metrics, outcome: Result<(), ActivationError>) -> Result<(), NotApplied> {
    match outcome {
        Ok(()) => {
            metrics.plugin_switches.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(error) => {
            metrics.plugin_refusals.fetch_add(1, Ordering::Relaxed);
            Err(NotApplied::Refused(format!("{}: {error}", error.code())))
        }
    }
}

/// Applies every pointer of the store: a starting node serves what the cluster serves before
/// it takes a payment. A version this node refuses is logged and left; one it could not fetch
/// is applied by [`follow`], which starts with every pointer as it is.
pub async fn catch_up(host: &Arc<PluginHost>, store: &PluginStore, metrics: &Metrics) -> Result<(), StoreError> {
    for (name, pointer) in store.pointers().await? {
        if let Err(error) = apply(host, store, metrics, &name, &pointer).await {
            tracing::error!(plugin = %name, %error, "the cluster's version of this plugin is not served here (yet)");
        }
    }
    Ok(())
}

/// Follows the store's pointers until shutdown: every pointer as it is when the watch starts
/// (so nothing changed before, or while the watch was re-established, is missed), then every
/// change as it comes. A pointer that failed for a passing reason is tried again every
/// [`RETRY_DELAY`] until it applies or changes.
pub fn follow(
    host: Arc<PluginHost>,
    store: PluginStore,
    metrics: Arc<Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut pending: BTreeMap<String, Pointer> = BTreeMap::new();
        let mut retry = tokio::time::interval(RETRY_DELAY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch = None;
        loop {
            if watch.is_none() {
                match store.watch().await {
                    Ok(started) => watch = Some(started),
                    Err(error) => tracing::warn!(%error, "cannot watch the plugin store; trying again"),
                }
            }
            let entry = tokio::select! {
                entry = next_entry(&mut watch) => entry,
                _ = retry.tick() => None,
                () = shutdown::requested(&mut shutdown) => return,
            };
            let mut due: Vec<(String, Pointer)> = Vec::new();
            match entry {
                Some(Some(entry)) => match entry.key.strip_prefix("active.") {
                    // Pointers are only ever put (a removal is a pointer too).
                    Some(_) if entry.operation != kv::Operation::Put => {}
                    Some(name) => match serde_json::from_slice::<Pointer>(&entry.value) {
                        Ok(pointer) => due.push((name.to_owned(), pointer)),
                        Err(error) => {
                            tracing::error!(plugin = name, %error, "a plugin pointer does not parse; ignored")
                        }
                    },
                    None => {}
                },
                // The watch ended (NATS reconnecting, the stream moving): watch again; it
                // starts with every pointer as it is now.
                Some(None) => {
                    watch = None;
                    tokio::time::sleep(REWATCH_DELAY).await;
                }
                None => due.extend(std::mem::take(&mut pending)),
            }
            for (name, pointer) in due {
                match apply(&host, &store, &metrics, &name, &pointer).await {
                    Ok(()) => {
                        pending.remove(&name);
                    }
                    Err(NotApplied::Transient(error)) => {
                        tracing::warn!(plugin = %name, %error, "the cluster's new version cannot be fetched yet; trying again");
                        pending.insert(name, pointer);
                    }
                    Err(NotApplied::Refused(error)) => {
                        pending.remove(&name);
                        tracing::error!(plugin = %name, %error, "the cluster's new version is refused here; the serving version stays");
                    }
                }
            }
        }
    })
}

/// The next entry of the watch: `Some(None)` once it ended; pending for ever without one.
async fn next_entry(watch: &mut Option<Watch>) -> Option<Option<kv::Entry>> {
    match watch {
        Some(watch) => Some(watch.next().await.and_then(Result::ok)),
        None => std::future::pending().await,
    }
}
