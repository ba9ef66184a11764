//! The watched plugin directory (`serve --plugins DIR`): adding, replacing or removing a
//! `<name>.wasm` with its manifest `<name>.toml` loads, swaps or retires that plugin on this
//! node.
//!
//! The directory is polled, not watched with inotify: polling sees every kind of change
//! (in-place writes, renames, network file systems) with the same code, and one `stat` per
//! file twice a second costs nothing. A change is acted on only once both files stayed the
//! same over a whole poll interval (debounce), so a file being written is never read half
//! done; and even if it were, its hash would not match its manifest and it would be refused
//! and then loaded once complete. Replacing files by rename is still the way to do it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use wasmpay_plugin_host::manifest::sha256_hex;
use wasmpay_plugin_host::{Manifest, Origin, PluginHost};

use crate::metrics::Metrics;
use crate::shutdown;

/// How often the directory is read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What a file looked like at one poll: if it is the same at the next, it is settled.
type Stamp = Option<(u64, SystemTime)>;

#[derive(Debug, Default)]
struct Seen {
    /// The component's and the manifest's stamps at the last poll.
    stamps: (Stamp, Stamp),
    /// The hashes of the component and manifest last acted on.
    acted_on: Option<(String, String)>,
    /// The plugin name this file serves, once loaded.
    name: Option<String>,
}

/// Polls `directory` until shutdown. What it holds at the start was loaded with the node, so
/// it is not loaded again.
pub fn watch(
    directory: PathBuf,
    host: Arc<PluginHost>,
    metrics: Arc<Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen: BTreeMap<PathBuf, Seen> = BTreeMap::new();
        for path in components(&directory) {
            let stamps = (stamp(&path), stamp(&path.with_extension("toml")));
            let acted_on = contents(&path).map(|(component, manifest)| (sha256_hex(&component), sha256_hex(&manifest)));
            let name = serving_name(&host, &path);
            seen.insert(path, Seen { stamps, acted_on, name });
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep(POLL_INTERVAL) => {}
                () = shutdown::requested(&mut shutdown) => return,
            }
            poll(&directory, &mut seen, &host, &metrics).await;
        }
    })
}

async fn poll(directory: &Path, seen: &mut BTreeMap<PathBuf, Seen>, host: &Arc<PluginHost>, metrics: &Metrics) {
    let present = components(directory);
    for path in &present {
        let stamps = (stamp(path), stamp(&path.with_extension("toml")));
        let entry = seen.entry(path.clone()).or_default();
        let settled = entry.stamps == stamps;
        entry.stamps = stamps;
        if !settled {
            continue;
        }
        let Some((component, manifest_text)) = contents(path) else { continue };
        let hashes = (sha256_hex(&component), sha256_hex(&manifest_text));
        if entry.acted_on.as_ref() == Some(&hashes) {
            continue;
        }
        entry.acted_on = Some(hashes);
        let manifest = match Manifest::parse(&String::from_utf8_lossy(&manifest_text)) {
            Ok(manifest) => manifest,
            Err(error) => {
                metrics.plugin_refusals.fetch_add(1, Ordering::Relaxed);
                tracing::error!(file = %path.display(), %error, "plugin manifest refused; the serving version stays");
                continue;
            }
        };
        let (host, origin) = (host.clone(), Origin::File(path.display().to_string()));
        let name = manifest.name.clone();
        let installed = tokio::task::spawn_blocking(move || host.install(&manifest, &component, origin)).await;
        match installed {
            Ok(Ok(switched)) => {
                metrics.plugin_switches.fetch_add(1, Ordering::Relaxed);
                tracing::info!(file = %path.display(), active = ?switched.active, "plugin loaded from the directory");
                entry.name = Some(name);
            }
            // Logged and recorded by `install`.
            Ok(Err(_)) => {
                metrics.plugin_refusals.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => tracing::error!(%error, "loading a plugin panicked"),
        }
    }
    // A component gone for a whole poll retires its plugin, if this file still serves it.
    let gone: Vec<PathBuf> = seen.keys().filter(|path| !present.contains(path)).cloned().collect();
    for path in gone {
        let Some(entry) = seen.remove(&path) else { continue };
        let Some(name) = entry.name else { continue };
        if serving_name(host, &path).as_deref() != Some(name.as_str()) {
            continue;
        }
        match host.remove(&name) {
            Ok(_) => {
                metrics.plugin_switches.fetch_add(1, Ordering::Relaxed);
                tracing::info!(file = %path.display(), plugin = %name, "plugin file removed: plugin retired");
            }
            Err(error) => tracing::error!(file = %path.display(), %error, "the plugin cannot be retired"),
        }
    }
}

/// The `*.wasm` files of `directory`, sorted.
fn components(directory: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(directory)
        .map(|entries| entries.filter_map(|entry| entry.ok().map(|entry| entry.path())).collect())
        .unwrap_or_default();
    files.retain(|path| path.extension().is_some_and(|ext| ext == "wasm"));
    files.sort();
    files
}

fn stamp(path: &Path) -> Stamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.len(), metadata.modified().ok()?))
}

/// The component and its manifest, if both can be read.
fn contents(path: &Path) -> Option<(Vec<u8>, Vec<u8>)> {
    Some((std::fs::read(path).ok()?, std::fs::read(path.with_extension("toml")).ok()?))
}

/// The plugin whose serving version came from `path`.
fn serving_name(host: &PluginHost, path: &Path) -> Option<String> {
    let origin = Origin::File(path.display().to_string());
    host.status().into_iter().find(|status| status.origin.as_ref() == Some(&origin)).map(|status| status.name)
}
