//! The cluster's plugin store, in JetStream: every node serves what it says.
//!
//! - Components live in the object store `wasmpay_plugins`, named by their SHA-256: a name is
//!   its content, so an upload can never change what another version runs, and the same bytes
//!   are stored once.
//! - The KV bucket `wasmpay_plugin_pointers` holds, per plugin, `version.<name>.<version>` (the
//!   manifest of each uploaded version, checked on the uploading node) and `active.<name>`
//!   (the [`Pointer`]: the version that serves, and the ones before it, for a rollback).
//!
//! A version is immutable: `name@version` names one manifest (and so one component) for the
//! life of the store, so that the version a payment records says exactly what decided it on
//! every node. Uploading other terms under a stored version is refused: they are a new version.
//!
//! Every node watches `active.*` and switches when a pointer changes; a node that starts
//! later reads the pointers before it takes payments. A pointer is changed by
//! compare-and-set on its revision, so two operators' commands cannot lose one another's
//! change: one of them is retried on the other's result.

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use wasmpay_plugin_host::Manifest;
use wasmpay_plugin_host::Sha256;

use wasmpay_cluster::jetstream::{self as js, Bucket, Cause, JetStreamError};

/// The object store of components.
pub const OBJECTS: &str = "wasmpay_plugins";
/// The KV bucket of manifests and pointers.
pub const POINTERS: &str = "wasmpay_plugin_pointers";
/// How many earlier versions a pointer remembers for rollbacks.
pub const HISTORY: usize = 8;
/// How long moving a component in or out of the store may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a pointer change is tried again after another change won the race.
const CAS_ATTEMPTS: usize = 8;
/// Largest component the store takes: the pooling allocator and compile time, not the store,
/// are the limit, and an upload is held in memory.
pub const MAX_COMPONENT_BYTES: usize = 32 << 20;

/// What serves for one plugin name, cluster-wide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    /// The serving version; `None` once the plugin was removed.
    pub active: Option<Manifest>,
    /// Versions that served before, most recent last, at most [`HISTORY`].
    pub history: Vec<Manifest>,
    /// The idempotency key of the command that wrote it: the same command again (a client
    /// retrying after a time-out) finds its change made and changes nothing more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
}

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// JetStream refused or did not answer.
    #[error("plugin store: {0}")]
    Unavailable(#[from] JetStreamError),
    /// No such version or plugin.
    #[error("{0}")]
    NotFound(String),
    /// A stored component is not what its name says.
    #[error("plugin store: component {0} is corrupt")]
    Corrupt(String),
    /// The change cannot be made (nothing to roll back to, a conflicting race).
    #[error("{0}")]
    Conflict(String),
}

/// The cluster's plugin store.
#[derive(Clone)]
pub struct PluginStore {
    pointers: kv::Store,
    objects: object_store::ObjectStore,
}

impl std::fmt::Debug for PluginStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginStore").field("objects", &OBJECTS).field("pointers", &POINTERS).finish()
    }
}

/// A value that could not be encoded (only plain strings and numbers are: never in practice).
fn unencodable(what: &'static str, error: serde_json::Error) -> StoreError {
    StoreError::Unavailable(JetStreamError::failed(what, error))
}

impl PluginStore {
    /// Opens the store, creating its bucket and object store if missing.
    pub async fn open(client: async_nats::Client, replicas: usize) -> Result<PluginStore, StoreError> {
        let jetstream = jetstream::new(client);
        let (pointers, _) = js::open_bucket(&jetstream, Bucket { name: POINTERS, ttl: None, replicas }).await?;
        let config = object_store::Config {
            bucket: OBJECTS.to_owned(),
            description: Some("wasmpay plugin components, by SHA-256".to_owned()),
            num_replicas: replicas.max(1),
            ..object_store::Config::default()
        };
        let objects = js::open_object_store(&jetstream, config).await?;
        Ok(PluginStore { pointers, objects })
    }

    /// Stores a version that passed its checks on the uploading node: the component (unless
    /// the store has it) and the manifest. The same version again is a no-op; other terms
    /// under a stored version are refused.
    pub async fn upload(&self, manifest: &Manifest, bytes: &[u8]) -> Result<(), StoreError> {
        match self.stored_version(&manifest.name, &manifest.version).await? {
            // The component went in before its manifest: both are there.
            Some(stored) if stored == *manifest => return Ok(()),
            Some(_) => {
                return Err(StoreError::Conflict(format!(
                    "{} is stored with another component or other terms: a version never changes, publish a new one",
                    manifest.key()
                )));
            }
            None => {}
        }
        self.store_component(manifest, bytes).await?;
        let value = serde_json::to_vec(manifest).map_err(|error| unencodable("encoding a manifest", error))?;
        let key = version_key(&manifest.name, &manifest.version);
        let created = js::request("storing a manifest", async {
            match self.pointers.create(key, value.into()).await {
                Ok(_) => Ok(true),
                Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(error) => Err(error),
            }
        })
        .await?;
        // Uploaded meanwhile by another: fine if it is the same version.
        if !created && self.stored_version(&manifest.name, &manifest.version).await?.as_ref() != Some(manifest) {
            return Err(StoreError::Conflict(format!(
                "{} was uploaded meanwhile with other terms: a version never changes, publish a new one",
                manifest.key()
            )));
        }
        Ok(())
    }

    /// Stores a version that passed its checks, replacing what `name@version` named before:
    /// only for a development node that serves its deployment alone (the API checks), where a
    /// rebuilt plugin keeps its version. The component it replaces stays in the object store
    /// (content-addressed: another version may name it).
    pub async fn replace(&self, manifest: &Manifest, bytes: &[u8]) -> Result<(), StoreError> {
        self.store_component(manifest, bytes).await?;
        let value = serde_json::to_vec(manifest).map_err(|error| unencodable("encoding a manifest", error))?;
        let key = version_key(&manifest.name, &manifest.version);
        js::request("replacing a manifest", self.pointers.put(key, value.into())).await?;
        Ok(())
    }

    /// Stores `manifest`'s component, `bytes`, unless the store has it.
    async fn store_component(&self, manifest: &Manifest, bytes: &[u8]) -> Result<(), StoreError> {
        // Checked against the bytes by the uploading node's checks.
        let sha256 = manifest.expected_hash().map_err(|error| StoreError::Conflict(error.to_string()))?.as_str();
        // Its metadata says whether the store has it (no need to read the component); the
        // same bytes stored again would only cost the transfer.
        if js::request("reading a component's metadata", self.objects.info(sha256)).await.is_err() {
            let mut reader = bytes;
            js::bounded("storing a component", TRANSFER_TIMEOUT, self.objects.put(sha256, &mut reader)).await?;
        }
        Ok(())
    }

    /// The manifest stored as `name@version`, if any.
    pub async fn stored_version(&self, name: &str, version: &str) -> Result<Option<Manifest>, StoreError> {
        let value = js::request("reading a manifest", self.pointers.get(version_key(name, version))).await?;
        value
            .map(|value| {
                serde_json::from_slice(&value)
                    .map_err(|error| StoreError::Corrupt(format!("manifest of {name}@{version}: {error}")))
            })
            .transpose()
    }

    /// The component named `sha256`, checked against its name.
    pub async fn component(&self, sha256: &str) -> Result<Vec<u8>, StoreError> {
        // Ok(None): no such component.
        let read = async {
            let mut object = match self.objects.get(sha256).await {
                Ok(object) => object,
                Err(error) if error.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
                Err(error) => return Err(Cause::from(error)),
            };
            let mut bytes = Vec::new();
            object.read_to_end(&mut bytes).await?;
            Ok(Some(bytes))
        };
        let bytes = js::bounded("reading a component", TRANSFER_TIMEOUT, read)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no component {sha256}")))?;
        // Hashing up to 32 MiB is blocking work.
        let expected = sha256.to_owned();
        let checked =
            tokio::task::spawn_blocking(move || (Sha256::of(&bytes).as_str() == expected).then_some(bytes)).await;
        checked.ok().flatten().ok_or_else(|| StoreError::Corrupt(sha256.to_owned()))
    }

    /// The uploaded version `version` of `name`.
    pub async fn version(&self, name: &str, version: &str) -> Result<Manifest, StoreError> {
        self.stored_version(name, version)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no version {version} of plugin `{name}` was uploaded")))
    }

    /// The pointer of `name`, if it has one.
    pub async fn pointer(&self, name: &str) -> Result<Option<Pointer>, StoreError> {
        Ok(self.pointer_entry(name).await?.map(|(pointer, _)| pointer))
    }

    /// Every pointer, by name, with its revision: what a starting node serves. A pointer that
    /// does not parse is skipped (and logged): it must not keep a node from starting.
    pub async fn pointers(&self) -> Result<Vec<(String, Pointer, u64)>, StoreError> {
        let listing = async {
            let keys = self.pointers.keys().await?;
            Ok::<Vec<String>, Cause>(keys.filter_map(|key| async { key.ok() }).collect().await)
        };
        let keys = js::bounded("listing the pointers", TRANSFER_TIMEOUT, listing).await?;
        let mut pointers = Vec::new();
        for name in keys.iter().filter_map(|key| key.strip_prefix("active.")) {
            match self.pointer_entry(name).await {
                Ok(Some((pointer, revision))) => pointers.push((name.to_owned(), pointer, revision)),
                Ok(None) => {}
                Err(StoreError::Corrupt(message)) => tracing::error!(plugin = name, %message, "plugin pointer skipped"),
                Err(error) => return Err(error),
            }
        }
        Ok(pointers)
    }

    /// Makes `manifest` the serving version of its plugin (the one serving before goes to the
    /// history). Putting the serving version again makes every node re-enable it (a
    /// quarantine is lifted).
    /// `serving` is the version the asking node serves, remembered for a rollback when the
    /// store has no pointer yet (a built-in version).
    pub async fn activate(
        &self,
        manifest: Manifest,
        serving: Option<Manifest>,
        key: Option<&str>,
    ) -> Result<Pointer, StoreError> {
        let name = manifest.name.clone();
        self.change(&name, key, |pointer| {
            let mut history = pointer.map(|pointer| pointer.history.clone()).unwrap_or_default();
            let before = match pointer {
                Some(pointer) => pointer.active.clone(),
                None => serving.clone(),
            };
            if let Some(before) = before
                && before != manifest
            {
                history.push(before);
            }
            history.retain(|earlier| *earlier != manifest);
            let excess = history.len().saturating_sub(HISTORY);
            history.drain(..excess);
            Ok(Pointer { active: Some(manifest.clone()), history, change: None })
        })
        .await
    }

    /// Makes the version that served before the current one serve again.
    pub async fn rollback(&self, name: &str, key: Option<&str>) -> Result<Pointer, StoreError> {
        self.change(name, key, |pointer| {
            let mut history = pointer.map(|pointer| pointer.history.clone()).unwrap_or_default();
            let previous = history.pop().ok_or_else(|| {
                StoreError::Conflict(format!("plugin `{name}` has no earlier version in the cluster store"))
            })?;
            Ok(Pointer { active: Some(previous), history, change: None })
        })
        .await
    }

    /// Stops every node serving `name`; a rollback brings the removed version back.
    pub async fn remove(
        &self,
        name: &str,
        serving: Option<Manifest>,
        key: Option<&str>,
    ) -> Result<Pointer, StoreError> {
        self.change(name, key, |pointer| {
            let mut history = pointer.map(|pointer| pointer.history.clone()).unwrap_or_default();
            // A plugin the store never held (a built-in one) is recorded as the node serves
            // it, so that a rollback can bring it back.
            match pointer.and_then(|pointer| pointer.active.clone()).or_else(|| serving.clone()) {
                Some(active) => history.push(active),
                None if pointer.is_some() => {
                    return Err(StoreError::Conflict(format!("plugin `{name}` is removed already")));
                }
                None => {}
            }
            let excess = history.len().saturating_sub(HISTORY);
            history.drain(..excess);
            Ok(Pointer { active: None, history, change: None })
        })
        .await
    }

    /// Watches every pointer: first every pointer as it is now, then each change.
    pub async fn watch(&self) -> Result<kv::Watch, StoreError> {
        Ok(js::request("watching the pointers", self.pointers.watch_with_history("active.>")).await?)
    }

    /// The pointer of `name` and its revision, if it has one.
    pub async fn pointer_entry(&self, name: &str) -> Result<Option<(Pointer, u64)>, StoreError> {
        let entry = js::request("reading a pointer", self.pointers.entry(active_key(name))).await?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let pointer = serde_json::from_slice(&entry.value)
                    .map_err(|error| StoreError::Corrupt(format!("pointer of `{name}`: {error}")))?;
                Ok(Some((pointer, entry.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Compare-and-set of `name`'s pointer through `next`, tried again when another change
    /// came first. A change under idempotency `key` that the pointer already shows is not
    /// made again: its pointer is the answer.
    async fn change(
        &self,
        name: &str,
        key: Option<&str>,
        next: impl Fn(Option<&Pointer>) -> Result<Pointer, StoreError>,
    ) -> Result<Pointer, StoreError> {
        for _ in 0..CAS_ATTEMPTS {
            let current = self.pointer_entry(name).await?;
            if let Some((pointer, _)) = &current
                && key.is_some()
                && pointer.change.as_deref() == key
            {
                return Ok(pointer.clone());
            }
            let mut pointer = next(current.as_ref().map(|(pointer, _)| pointer))?;
            pointer.change = key.map(str::to_owned);
            let value: bytes::Bytes =
                serde_json::to_vec(&pointer).map_err(|error| unencodable("encoding a pointer", error))?.into();
            // Ok(true): written; Ok(false): another change came first, so again on its result.
            let written = match current {
                Some((_, revision)) => {
                    js::request("changing a pointer", async {
                        match self.pointers.update(active_key(name), value, revision).await {
                            Ok(_) => Ok(true),
                            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                            Err(error) => Err(error),
                        }
                    })
                    .await?
                }
                None => {
                    js::request("changing a pointer", async {
                        match self.pointers.create(active_key(name), value).await {
                            Ok(_) => Ok(true),
                            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                            Err(error) => Err(error),
                        }
                    })
                    .await?
                }
            };
            if written {
                return Ok(pointer);
            }
            tracing::debug!(plugin = name, "pointer changed meanwhile; trying again");
        }
        Err(StoreError::Conflict(format!("the pointer of `{name}` kept changing; try again")))
    }
}

fn active_key(name: &str) -> String {
    format!("active.{name}")
}

/// `version.<name>.<version>`; a version's `+build` becomes `_build` (a key cannot hold `+`,
/// and a version cannot hold `_`, so no two versions share a key).
fn version_key(name: &str, version: &str) -> String {
    format!("version.{name}.{}", version.replace('+', "_"))
}
