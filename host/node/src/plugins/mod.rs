//! Plugin versions arriving while the node runs: from the cluster's plugin store (`store`),
//! which every node follows, and from a watched directory (`directory`), which only this node
//! reads. Both hand a manifest and a component to [`PluginHost::install`], which checks the
//! version and switches to it only if it passes; a refusal leaves the serving version, and is
//! logged, counted (`wasmpay_plugin_refusals_total`) and shown by `GET /v1/plugins`.

pub mod directory;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use tokio::task::JoinHandle;
use wasmpay_plugin_host::{Origin, PluginHost, VersionState, VersionStatus};

use crate::metrics::Metrics;
use crate::shutdown;
use store::{PluginStore, Pointer, StoreError};

/// How long to wait before watching the pointers again after the watch ended.
const REWATCH_DELAY: Duration = Duration::from_millis(500);

/// Switches `host` to what `pointer` says serves `name`, fetching the component from `store`
/// unless this node has the version loaded.
pub async fn apply(
    host: &Arc<PluginHost>,
    store: &PluginStore,
    metrics: &Metrics,
    name: &str,
    pointer: &Pointer,
) -> Result<(), String> {
    let Some(manifest) = &pointer.active else {
        return match host.remove(name) {
            Ok(_) => {
                metrics.plugin_switches.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            // Not serving here: nothing to do.
            Err(_) => Ok(()),
        };
    };
    let sha256 = manifest.sha256.clone().unwrap_or_default();
    let status = host.status().into_iter().find(|status| status.name == *name);
    let versions = status.as_ref().map(|status| status.versions.as_slice()).unwrap_or_default();
    let same = |version: &&VersionStatus| version.version == manifest.version && version.sha256 == sha256;
    // Serving it, and not quarantined (a pointer put again re-enables a quarantined version).
    if versions.first().filter(same).is_some_and(|version| version.state == VersionState::Active) {
        return Ok(());
    }
    let loaded = versions.iter().any(|version| same(&version));
    let bytes = if loaded { Vec::new() } else { store.component(&sha256).await.map_err(|error| error.to_string())? };
    let (host, manifest_owned) = (host.clone(), manifest.clone());
    let installed = tokio::task::spawn_blocking(move || host.install(&manifest_owned, &bytes, Origin::Cluster))
        .await
        .map_err(|error| error.to_string())?;
    match installed {
        Ok(_) => {
            metrics.plugin_switches.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(error) => {
            metrics.plugin_refusals.fetch_add(1, Ordering::Relaxed);
            Err(format!("{}: {error}", error.code()))
        }
    }
}

/// Applies every pointer of the store: a starting node serves what the cluster serves before
/// it takes a payment. A version this node refuses is logged and left.
pub async fn catch_up(host: &Arc<PluginHost>, store: &PluginStore, metrics: &Metrics) -> Result<(), StoreError> {
    for (name, pointer) in store.pointers().await? {
        if let Err(error) = apply(host, store, metrics, &name, &pointer).await {
            tracing::error!(plugin = %name, %error, "the cluster's version of this plugin is not served here");
        }
    }
    Ok(())
}

/// Follows the store's pointers until shutdown: every change is applied as it comes.
pub fn follow(
    host: Arc<PluginHost>,
    store: PluginStore,
    metrics: Arc<Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mut watch = match store.watch().await {
                Ok(watch) => watch,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch the plugin store; trying again");
                    tokio::select! {
                        () = tokio::time::sleep(REWATCH_DELAY) => continue,
                        () = shutdown::requested(&mut shutdown) => return,
                    }
                }
            };
            loop {
                let entry = tokio::select! {
                    entry = watch.next() => entry,
                    () = shutdown::requested(&mut shutdown) => return,
                };
                let Some(Ok(entry)) = entry else { break };
                let Some(name) = entry.key.strip_prefix("active.") else { continue };
                let Ok(pointer) = serde_json::from_slice::<Pointer>(&entry.value) else {
                    tracing::warn!(plugin = name, "a plugin pointer does not parse; ignored");
                    continue;
                };
                match apply(&host, &store, &metrics, name, &pointer).await {
                    Ok(()) => {}
                    Err(error) => {
                        tracing::error!(plugin = name, %error, "the cluster's new version is refused here; the serving version stays")
                    }
                }
            }
            // The watch ended (NATS reconnecting, the stream moving): watch again; its first
            // values are the pointers as they are now, so nothing is missed.
            tokio::select! {
                () = tokio::time::sleep(REWATCH_DELAY) => {}
                () = shutdown::requested(&mut shutdown) => return,
            }
        }
    })
}
