//! Compiled plugins kept on disk (`[sandbox] cache_dir`), so a node that restarts with many
//! plugins loads them in milliseconds instead of compiling each again (docs/operators.md has
//! the numbers).
//!
//! An entry is named by the component's SHA-256 and a hash of the engine's settings
//! (`Engine::precompile_compatibility_hash`: wasmtime's version, target and every codegen
//! setting), so a changed component, an upgrade or a changed sandbox setting misses the cache
//! instead of loading code made for another engine. Entries are written to a temporary file
//! and renamed into place, and carry the SHA-256 of their name and bytes, checked before use:
//! a torn or corrupt file, or one copied under another entry's name, is compiled again, never
//! run. The directory is created readable by the node's user only.
//!
//! Compiled code is native code: the cache directory must be as trusted as the binary (the
//! node's own, not writable by plugin authors). That is why loading from it is the one
//! `unsafe` call of the workspace, and why the checksum guards against accidents only.

use std::hash::Hasher;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Length of the checksum header of an entry.
const CHECKSUM_BYTES: usize = 32;

/// A directory of compiled components for one engine.
#[derive(Debug)]
pub struct CompiledCache {
    directory: PathBuf,
    engine_hash: String,
}

/// Feeds what an engine hashes into SHA-256, so the name of an entry is the same in every
/// process (std's hashers are not).
struct EngineHasher(Sha256);

impl Hasher for EngineHasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl CompiledCache {
    /// The cache in `directory` (created if missing) for `engine`.
    fn open(directory: &Path, engine: &Engine) -> std::io::Result<CompiledCache> {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(directory)?;
        // An existing directory too: only the node's user may put code there.
        std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o700))?;
        let mut hasher = EngineHasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        let engine_hash = hasher.0.finalize().iter().take(8).map(|byte| format!("{byte:02x}")).collect();
        Ok(CompiledCache { directory: directory.to_owned(), engine_hash })
    }

    /// The cache in `directory`, or none if it cannot be opened (an unreadable directory, a
    /// file in its place, a read-only disk): the cache only saves compiles, so a node runs
    /// without it rather than not at all. Said once, at `WARN`, with the path and the cause;
    /// every plugin is then compiled at load.
    pub fn open_or_skip(directory: &Path, engine: &Engine) -> Option<CompiledCache> {
        match CompiledCache::open(directory, engine) {
            Ok(cache) => Some(cache),
            Err(error) => {
                tracing::warn!(
                    path = %directory.display(),
                    %error,
                    "cannot use the compiled plugin cache; running without it (every plugin is compiled at load)"
                );
                None
            }
        }
    }

    /// The compiled component of `bytes` (whose hash is `sha256`): from the cache, or compiled
    /// and then stored. A cache that cannot be read or written only costs a compile.
    pub fn component(
        &self,
        engine: &Engine,
        sha256: &crate::manifest::Sha256,
        bytes: &[u8],
    ) -> wasmtime::Result<Component> {
        let name = format!("{sha256}-{}.cwasm", self.engine_hash);
        let path = self.directory.join(&name);
        if let Some(component) = std::fs::read(&path).ok().and_then(|entry| self.load(engine, &name, &entry)) {
            return Ok(component);
        }
        let component = Component::new(engine, bytes)?;
        if let Err(error) = self.store(&name, &component) {
            tracing::warn!(path = %path.display(), %error, "cannot write the compiled plugin to the cache");
        }
        Ok(component)
    }

    fn load(&self, engine: &Engine, name: &str, entry: &[u8]) -> Option<Component> {
        let (checksum, code) = entry.split_at_checked(CHECKSUM_BYTES)?;
        if checksum_of(name, code)[..] != *checksum {
            tracing::warn!(directory = %self.directory.display(), "a compiled plugin in the cache is corrupt; compiling again");
            return None;
        }
        // SAFETY: `code` is what `Component::serialize` wrote for an engine with these exact
        // settings (the file name carries their hash, and wasmtime checks its own header
        // again), intact (its checksum matched), in a directory only the node writes (see the
        // module documentation).
        #[expect(unsafe_code, reason = "loading compiled code is unsafe by nature; see the module documentation")]
        let component = unsafe { Component::deserialize(engine, code) };
        component.ok()
    }

    fn store(&self, name: &str, component: &Component) -> wasmtime::Result<()> {
        let code = component.serialize()?;
        let mut entry = checksum_of(name, &code);
        entry.extend_from_slice(&code);
        // Unique per writer: two nodes sharing the directory never write one temporary file.
        let unique = TEMPORARIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temporary = self.directory.join(format!(".{name}.{}.{unique}.tmp", std::process::id()));
        let written =
            std::fs::write(&temporary, &entry).and_then(|()| std::fs::rename(&temporary, self.directory.join(name)));
        if written.is_err() {
            // A full disk must not fill up with partial entries.
            let _ = std::fs::remove_file(&temporary);
        }
        Ok(written?)
    }
}

/// Temporary files written by this process.
static TEMPORARIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// SHA-256 of an entry's name and code: an entry is valid under its own name only.
fn checksum_of(name: &str, code: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([0]);
    hasher.update(code);
    hasher.finalize().to_vec()
}
