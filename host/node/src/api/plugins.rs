//! `/v1/plugins`: the operators' view of the plugins and the commands that roll versions out
//! through the cluster's plugin store (docs/operators.md).
//!
//! A command changes the store, not this node: every node, this one included, follows the
//! store and switches. A command sent with an `Idempotency-Key` header is made once: sent
//! again with the same key (a client retrying after a time-out), it answers with the change
//! already made instead of making another (a second rollback would go back one more version). The answer waits (at most [`CONVERGE_TIMEOUT`]) until this node serves
//! what the store now says, or refused it, and tells which.

use std::time::Duration;

use base64::Engine as _;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;
use wasmpay_plugin_host::manifest::valid_plugin_version;
use wasmpay_plugin_host::{Manifest, Origin, PluginStatus, Refusal, Sha256};

use super::{ApiState, Body, Problem, json_response, problem};
use crate::plugins::store::{MAX_COMPONENT_BYTES, Pointer, StoreError};

/// How long a command waits for this node to serve what it asked for.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest upload body: the component in base64 and its manifest.
pub const MAX_UPLOAD_BYTES: usize = MAX_COMPONENT_BYTES / 3 * 4 + 128 * 1024;

type Response = hyper::Response<Body>;

/// Every plugin on this node with its versions and state, the pipeline of each method, and
/// the loaded versions and instances.
#[utoipa::path(get, path = "/v1/plugins", operation_id = "list_plugins", tag = "plugins",
    responses((status = 200, description = "`plugins`, `methods`, `versions_loaded`, `instances`", body = Object)),
    security(("admin_token" = [])))]
pub fn list(state: &ApiState) -> Response {
    let pipelines = state.plugins.pipelines();
    let methods: Vec<_> = pipelines
        .methods()
        .filter_map(|method| {
            pipelines.get(method).map(|pipeline| json!({"method": method, "plugins": pipeline.keys()}))
        })
        .collect();
    let census = state.plugins.runtime().census();
    json_response(
        StatusCode::OK,
        &json!({
            "plugins": state.plugins.status(),
            "methods": methods,
            "versions_loaded": census.versions(),
            "instances": census.instances(),
        }),
    )
}

/// What `PUT /v1/plugins/{name}` takes.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    /// The manifest, TOML.
    manifest: String,
    /// The component, base64.
    component: String,
    /// Activate it once stored.
    #[serde(default)]
    activate: bool,
}

/// Checks a version on this node (hash, compile, contract, `describe`, fixtures) and stores it
/// for the cluster; with `"activate": true` also makes it serve.
#[utoipa::path(put, path = "/v1/plugins/{name}", operation_id = "upload_plugin", tag = "plugins", params(("name" = String, Path, description = "The plugin: 1-32 of a-z 0-9 -")), request_body = Upload,
    responses((status = 200, description = "`{\"plugin\": …, \"pointer\": …}`: the plugin's status on this node once every node answered, and the cluster's pointer", body = Object),
              (status = 404, description = "No such plugin or version", body = Problem),
              (status = 409, description = "Another change of this plugin won the race; retry", body = Problem),
              (status = 422, description = "Refused: a check failed or a pipeline needs it", body = Problem),
              (status = 503, description = "The plugin store is unavailable", body = Problem),
              (status = 400, description = "Not a manifest, component or matching name", body = Problem),
              (status = 429, description = "Another upload is in progress; retry", body = Problem)),
    security(("admin_token" = [])))]
pub async fn upload(state: &ApiState, name: &str, key: Option<&str>, body: serde_json::Value) -> Response {
    let upload: Upload = match serde_json::from_value(body) {
        Ok(upload) => upload,
        Err(error) => return problem(StatusCode::BAD_REQUEST, "invalid_request", &error.to_string()),
    };
    let manifest = match Manifest::parse(&upload.manifest) {
        Ok(manifest) => manifest,
        Err(error) => return problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_manifest", &error.to_string()),
    };
    if manifest.name != name {
        let message = format!("the manifest is for `{}`, the path names `{name}`", manifest.name);
        return problem(StatusCode::BAD_REQUEST, "invalid_request", &message);
    }
    if manifest.sha256.is_none() {
        let message = "the manifest has no `sha256` (wasmpay plugin push fills it in)";
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_manifest", message);
    }
    // Decoding up to 43 MiB of base64 is blocking work.
    let component = upload.component;
    let decoded =
        tokio::task::spawn_blocking(move || base64::engine::general_purpose::STANDARD.decode(component.as_bytes()))
            .await;
    let bytes = match decoded {
        Ok(Ok(bytes)) if bytes.len() <= MAX_COMPONENT_BYTES => bytes,
        Ok(Ok(_)) => return problem(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", "component over 32 MiB"),
        Ok(Err(error)) => return problem(StatusCode::BAD_REQUEST, "invalid_request", &format!("component: {error}")),
        Err(error) => return problem(StatusCode::INTERNAL_SERVER_ERROR, "internal", &error.to_string()),
    };
    // A version never changes: other terms under a stored version are refused before any
    // work is spent on them, except on a development node that serves its deployment alone.
    let replaces = match state.plugin_store.stored_version(name, &manifest.version).await {
        Ok(Some(stored)) if stored != manifest => match replacement_refused(state, &stored) {
            None => true,
            Some(why) => {
                let message = format!(
                    "{} is stored with other terms: a version never changes, publish a new one{why}",
                    manifest.key()
                );
                return problem(StatusCode::CONFLICT, "conflict", &message);
            }
        },
        Ok(_) => false,
        Err(error) => return store_problem(&error),
    };
    // The whole check, on this node, before anything is stored: a version the store holds
    // passed it once.
    let (host, checked_manifest, checked_bytes) = (state.plugins.clone(), manifest.clone(), bytes.clone());
    let checked =
        tokio::task::spawn_blocking(move || host.check(&checked_manifest, &checked_bytes, &Origin::Cluster)).await;
    match checked {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            state.metrics.plugin_refusals.inc();
            return problem(StatusCode::UNPROCESSABLE_ENTITY, error.code(), &error.to_string());
        }
        Err(error) => return problem(StatusCode::INTERNAL_SERVER_ERROR, "internal", &error.to_string()),
    }
    let stored = match replaces {
        true => state.plugin_store.replace(&manifest, &bytes).await,
        false => state.plugin_store.upload(&manifest, &bytes).await,
    };
    if let Err(error) = stored {
        return store_problem(&error);
    }
    let sha256 = manifest.sha256.as_ref().map(Sha256::as_str).unwrap_or_default();
    match replaces {
        true => tracing::warn!(plugin = %manifest.key(), sha256, "plugin version replaced in place (development node)"),
        false => tracing::info!(plugin = %manifest.key(), sha256, "plugin version uploaded"),
    }
    if upload.activate {
        let serving = serving(state, name).await;
        let since = state.plugins.attempts();
        return settle(state, name, since, state.plugin_store.activate(manifest.clone(), serving, key).await).await;
    }
    json_response(
        StatusCode::CREATED,
        &json!({"name": manifest.name, "version": manifest.version, "sha256": manifest.sha256, "activated": false}),
    )
}

/// What `POST /v1/plugins/{name}/activate` takes.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Activate {
    /// The stored version to serve.
    version: String,
}

/// Makes an uploaded version serve everywhere; the serving one again lifts its quarantine
/// everywhere.
#[utoipa::path(post, path = "/v1/plugins/{name}/activate", operation_id = "activate_plugin", tag = "plugins", params(("name" = String, Path, description = "The plugin: 1-32 of a-z 0-9 -")), request_body = Activate,
    responses((status = 200, description = "`{\"plugin\": …, \"pointer\": …}`: the plugin's status on this node once every node answered, and the cluster's pointer", body = Object),
              (status = 404, description = "No such plugin or version", body = Problem),
              (status = 409, description = "Another change of this plugin won the race; retry", body = Problem),
              (status = 422, description = "Refused: a check failed or a pipeline needs it", body = Problem),
              (status = 503, description = "The plugin store is unavailable", body = Problem)), security(("admin_token" = [])))]
pub async fn activate(state: &ApiState, name: &str, key: Option<&str>, body: serde_json::Value) -> Response {
    let request = match serde_json::from_value::<Activate>(body) {
        Ok(request) if valid_plugin_version(&request.version) => request,
        Ok(_) => return problem(StatusCode::BAD_REQUEST, "invalid_request", "`version` is not MAJOR.MINOR.PATCH"),
        Err(error) => return problem(StatusCode::BAD_REQUEST, "invalid_request", &error.to_string()),
    };
    // An uploaded version, or a built-in one (then uploaded, so every node can fetch it).
    let manifest = match state.plugin_store.version(name, &request.version).await {
        Ok(manifest) => manifest,
        Err(StoreError::NotFound(message)) => match loaded_manifest(state, name, &request.version).await {
            Some(manifest) => manifest,
            None => return problem(StatusCode::NOT_FOUND, "unknown_version", &message),
        },
        Err(error) => return store_problem(&error),
    };
    let serving = serving(state, name).await;
    let since = state.plugins.attempts();
    settle(state, name, since, state.plugin_store.activate(manifest, serving, key).await).await
}

/// Makes the version before the current one serve again.
#[utoipa::path(post, path = "/v1/plugins/{name}/rollback", operation_id = "roll_back_plugin", tag = "plugins", params(("name" = String, Path, description = "The plugin: 1-32 of a-z 0-9 -")),
    responses((status = 200, description = "`{\"plugin\": …, \"pointer\": …}`: the plugin's status on this node once every node answered, and the cluster's pointer", body = Object),
              (status = 404, description = "No such plugin or version", body = Problem),
              (status = 409, description = "Another change of this plugin won the race; retry", body = Problem),
              (status = 422, description = "Refused: a check failed or a pipeline needs it", body = Problem),
              (status = 503, description = "The plugin store is unavailable", body = Problem)), security(("admin_token" = [])))]
pub async fn rollback(state: &ApiState, name: &str, key: Option<&str>) -> Response {
    let since = state.plugins.attempts();
    settle(state, name, since, state.plugin_store.rollback(name, key).await).await
}

/// Stops serving the plugin everywhere.
#[utoipa::path(delete, path = "/v1/plugins/{name}", operation_id = "remove_plugin", tag = "plugins", params(("name" = String, Path, description = "The plugin: 1-32 of a-z 0-9 -")),
    responses((status = 200, description = "`{\"plugin\": …, \"pointer\": …}`: the plugin's status on this node once every node answered, and the cluster's pointer", body = Object),
              (status = 404, description = "No such plugin or version", body = Problem),
              (status = 409, description = "Another change of this plugin won the race; retry", body = Problem),
              (status = 422, description = "Refused: a check failed or a pipeline needs it", body = Problem),
              (status = 503, description = "The plugin store is unavailable", body = Problem)), security(("admin_token" = [])))]
pub async fn remove(state: &ApiState, name: &str, key: Option<&str>) -> Response {
    if state.plugins.status().iter().all(|status| status.name != name) {
        return problem(StatusCode::NOT_FOUND, "unknown_plugin", &format!("no plugin `{name}`"));
    }
    // Refused here already (a configured pipeline needs it): say so before every node
    // refuses it.
    if let Err(error) = state.plugins.check_removal(name) {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, error.code(), &error.to_string());
    }
    let serving = serving(state, name).await;
    let since = state.plugins.attempts();
    settle(state, name, since, state.plugin_store.remove(name, serving, key).await).await
}

/// The manifest of the version of `name` this node serves, for a pointer's history when the
/// store has no pointer yet: a rollback must be able to return to the built-in version. Once
/// the store has a pointer, its history is the one that counts, and this is `None`.
async fn serving(state: &ApiState, name: &str) -> Option<Manifest> {
    if !matches!(state.plugin_store.pointer(name).await, Ok(None)) {
        return None;
    }
    storable(state, state.plugins.active_manifest(name)?).await
}

/// The manifest of the loaded `version` of `name`, if it can enter a pointer.
async fn loaded_manifest(state: &ApiState, name: &str, version: &str) -> Option<Manifest> {
    storable(state, state.plugins.manifest(name, version)?).await
}

/// `manifest`, if its version can enter a pointer: the store holds it, or it is a built-in
/// one, which is uploaded first (a node running another build must be able to fetch it). A
/// version loaded from a file here is this node's only, and cannot.
async fn storable(state: &ApiState, manifest: Manifest) -> Option<Manifest> {
    if state.plugin_store.stored_version(&manifest.name, &manifest.version).await.ok().flatten().as_ref()
        == Some(&manifest)
    {
        return Some(manifest);
    }
    let bytes = state.builtins.get(manifest.sha256.as_ref()?)?;
    match state.plugin_store.upload(&manifest, bytes).await {
        Ok(()) => Some(manifest),
        Err(error) => {
            tracing::warn!(plugin = %manifest.key(), %error, "cannot store the built-in version");
            None
        }
    }
}

/// Why this node may not replace `stored` in place (appended to the refusal), or `None` when
/// it may: it is a development node and serves its deployment alone, so no other node can
/// have decided a payment with the version being replaced, and the version is not one this
/// binary ships (a replaced built-in would shadow it for every later node on this NATS).
fn replacement_refused(state: &ApiState, stored: &Manifest) -> Option<String> {
    if !state.development {
        return Some(String::new());
    }
    if stored.sha256.as_ref().is_some_and(|sha256| state.builtins.contains_key(sha256)) {
        return Some(" (a built-in version is never replaced, even on a development node)".to_owned());
    }
    let view = state.cluster.current();
    if let Some(refused) = view.refused {
        return Some(format!(" (this development node serves nothing: {refused})"));
    }
    let others: Vec<&str> =
        view.members.iter().map(|member| member.node.as_str()).filter(|node| *node != view.node).collect();
    match others.is_empty() {
        true => None,
        false => Some(format!(
            " (a development node replaces versions only while it is alone; also live: {})",
            others.join(", ")
        )),
    }
}

/// Waits until this node serves what `pointer` says (that very manifest), or refused it
/// after `since` ([`wasmpay_plugin_host::PluginHost::attempts`] before the change).
async fn settle(state: &ApiState, name: &str, since: u64, pointer: Result<Pointer, StoreError>) -> Response {
    let pointer = match pointer {
        Ok(pointer) => pointer,
        Err(error) => return store_problem(&error),
    };
    let deadline = tokio::time::Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let status = state.plugins.status().into_iter().find(|status| status.name == name);
        let serving = status.as_ref().and_then(|status| status.active.as_ref().and(status.versions.first()));
        // The very manifest, not only its version and component: other terms (a development
        // node's replacement, a built-in's component under another configuration) switch too.
        // A quarantined version does not serve.
        let switched = match &pointer.active {
            Some(manifest) => state.plugins.serves(manifest),
            None => serving.is_none(),
        };
        if switched {
            return json_response(StatusCode::OK, &json!({"plugin": status, "pointer": pointer}));
        }
        if let Some(refusal) = status.as_ref().and_then(|status| refused(status, &pointer, since)) {
            return problem(StatusCode::UNPROCESSABLE_ENTITY, &refusal.code, &refusal.message);
        }
        if tokio::time::Instant::now() >= deadline {
            let message = format!(
                "the cluster store now says {name} {}, but this node still serves {} after {CONVERGE_TIMEOUT:?}",
                pointer.active.as_ref().map_or("(removed)", |manifest| manifest.version.as_str()),
                serving.map_or("nothing", |version| version.version.as_str())
            );
            return problem(StatusCode::ACCEPTED, "pending", &message);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// This node's refusal of what `pointer` asks for (that component, or the removal), if it
/// refused it after `since`.
fn refused<'a>(status: &'a PluginStatus, pointer: &Pointer, since: u64) -> Option<&'a Refusal> {
    let refusal = status.refused.as_ref().filter(|refusal| refusal.attempt > since)?;
    let answers = match &pointer.active {
        Some(manifest) => {
            refusal.version == manifest.key()
                && manifest.sha256.as_ref().map(Sha256::as_str) == Some(refusal.sha256.as_str())
        }
        None => refusal.version == format!("{} (removal)", status.name),
    };
    answers.then_some(refusal)
}

fn store_problem(error: &StoreError) -> Response {
    match error {
        StoreError::NotFound(message) => problem(StatusCode::NOT_FOUND, "unknown_version", message),
        StoreError::Conflict(message) => problem(StatusCode::CONFLICT, "conflict", message),
        StoreError::Unavailable(_) | StoreError::Corrupt(_) => {
            problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &error.to_string())
        }
    }
}
