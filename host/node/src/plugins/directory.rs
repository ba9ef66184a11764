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
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use wasmpay_plugin_host::{Origin, PluginHost, PluginSource};

use crate::metrics::Metrics;
use crate::shutdown;

/// How often the directory is read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What a file looked like at one poll (inode, size, modification and change times): if it
/// is the same at the next, it is settled. The change time moves with any write or rename,
/// even one that keeps the size and sets the modification time back (`cp -p`, `rsync -t`).
type Stamp = Option<(u64, u64, SystemTime, (i64, i64))>;

#[derive(Debug, Default)]
struct Seen {
    /// The component's and the manifest's stamps at the last poll.
    stamps: (Stamp, Stamp),
    /// Their stamps when last acted on: a settled file is read again only once they differ.
    acted_on: Option<(Stamp, Stamp)>,
    /// The plugin name this file serves, once loaded.
    name: Option<String>,
}

/// A watched plugin directory.
#[derive(Clone, Debug)]
pub struct Watched {
    /// The directory.
    pub directory: PathBuf,
    /// A development node's: a manifest without `sha256` describes the component beside it
    /// as it is, so a rebuilt component replaces its version in place.
    pub development: bool,
}

/// Polls the directory until shutdown. What it holds at the start was loaded with the node,
/// so it is not loaded again.
pub fn watch(
    watched: Watched,
    host: Arc<PluginHost>,
    metrics: Arc<Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen: BTreeMap<PathBuf, Seen> = BTreeMap::new();
        for path in components(&watched.directory) {
            let stamps = stamps(&path);
            let name = serving_name(&host, &path);
            seen.insert(path, Seen { stamps, acted_on: Some(stamps), name });
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep(POLL_INTERVAL) => {}
                () = shutdown::requested(&mut shutdown) => return,
            }
            // A poll may wait for a compile and self-test; shutdown does not wait for it (the
            // load finishes on its blocking thread, into a node that is stopping).
            tokio::select! {
                () = poll(&watched, &mut seen, &host, &metrics) => {}
                () = shutdown::requested(&mut shutdown) => return,
            }
        }
    })
}

async fn poll(watched: &Watched, seen: &mut BTreeMap<PathBuf, Seen>, host: &Arc<PluginHost>, metrics: &Metrics) {
    let Watched { directory, development } = watched;
    let development = *development;
    let present = components(directory);
    for path in &present {
        let stamps = stamps(path);
        let entry = seen.entry(path.clone()).or_default();
        let settled = entry.stamps == stamps;
        entry.stamps = stamps;
        if !settled || entry.acted_on == Some(stamps) || stamps.1.is_none() {
            continue;
        }
        entry.acted_on = Some(stamps);
        // Reading, hashing and checking a component is blocking work.
        let (host, file) = (host.clone(), path.clone());
        let loaded = tokio::task::spawn_blocking(move || load(&host, &file, development)).await;
        match loaded {
            Ok(Ok(name)) => {
                metrics.plugin_switches.inc();
                entry.name = Some(name);
            }
            Ok(Err(error)) => {
                metrics.plugin_refusals.inc();
                tracing::error!(file = %path.display(), %error, "plugin file refused; the serving version stays");
            }
            Err(error) => tracing::error!(%error, "loading a plugin file panicked"),
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
        let (removing, plugin) = (host.clone(), name.clone());
        // Waits for an install in progress (a compile): off the async threads.
        let removed = tokio::task::spawn_blocking(move || removing.remove(&plugin)).await;
        match removed.map_err(|error| error.to_string()).and_then(|removed| removed.map_err(|error| error.to_string()))
        {
            Ok(_) => {
                metrics.plugin_switches.inc();
                tracing::info!(file = %path.display(), plugin = %name, "plugin file removed: plugin retired");
            }
            Err(error) => tracing::error!(file = %path.display(), %error, "the plugin cannot be retired"),
        }
    }
}

/// Loads the component at `path` with its manifest beside it, read as the node read its
/// directory at start; the plugin's name.
fn load(host: &PluginHost, path: &Path, development: bool) -> Result<String, String> {
    let (_, component, manifest) =
        PluginSource::of_file(path.to_owned(), development).read().map_err(|error| error.to_string())?;
    let manifest =
        manifest.ok_or_else(|| format!("no manifest {} beside it", path.with_extension("toml").display()))?;
    let switched = host
        .install(&manifest, &component, Origin::File(path.display().to_string()))
        .map_err(|error| format!("{}: {error}", error.code()))?;
    tracing::info!(file = %path.display(), active = switched.active.as_deref().unwrap_or("none"), "plugin loaded from the directory");
    Ok(manifest.name)
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

/// The stamps of a component and of its manifest.
fn stamps(path: &Path) -> (Stamp, Stamp) {
    let stamp = |path: &Path| {
        let metadata = std::fs::metadata(path).ok()?;
        Some((metadata.ino(), metadata.len(), metadata.modified().ok()?, (metadata.ctime(), metadata.ctime_nsec())))
    };
    (stamp(path), stamp(&path.with_extension("toml")))
}

/// The plugin whose serving version came from `path`.
fn serving_name(host: &PluginHost, path: &Path) -> Option<String> {
    let origin = Origin::File(path.display().to_string());
    host.status().into_iter().find(|status| status.origin.as_ref() == Some(&origin)).map(|status| status.name)
}
