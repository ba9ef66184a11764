//! `wasmpay plugin …`: the operators' plugin commands, over a node's `/v1/plugins` API. The
//! node checks and stores; every node of the cluster follows the store (docs/operators.md).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::Subcommand;
use serde_json::{Value, json};
use wasmpay_node::client::http_call_within;
use wasmpay_plugin_host::{Manifest, Sha256};

use crate::api::ApiArgs;

/// `wasmpay plugin …`: a plugin's versions across the cluster.
#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Every plugin on the node: serving version, state, calls, failures, latency.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Upload a component with its manifest (checked on the node, then stored for the whole
    /// cluster) and activate it everywhere.
    Push {
        /// The component (`.wasm`).
        component: PathBuf,
        /// Its manifest; by default the `.toml` beside the component. A manifest without
        /// `sha256` gets the component's.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Only upload; activate later with `wasmpay plugin activate`.
        #[arg(long)]
        no_activate: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Make an uploaded version serve everywhere (the serving one again lifts a quarantine).
    Activate {
        /// The plugin.
        name: String,
        /// Its version.
        version: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Make the version before the current one serve again, everywhere.
    Rollback {
        /// The plugin.
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Stop serving a plugin everywhere (a rollback brings it back).
    Remove {
        /// The plugin.
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// How long a command waits for the node: a push is checked there (compiled, fixtures run),
/// stored in JetStream (each request bounded, retried through a failover), and answered once
/// the node serves it (at most 10 s).
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long to wait before sending a command again.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// A key for one command: the time and the process, unique enough for one operator's commands.
fn command_key() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("cli-{nanos:x}-{}", std::process::id())
}

/// Runs one plugin command.
pub async fn run(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::List { api } => {
            let body = call(&api, hyper::Method::GET, "/v1/plugins", None).await?;
            print!("{}", table(&body));
            Ok(())
        }
        PluginCommand::Push { component, manifest, no_activate, api } => {
            let bytes = std::fs::read(&component).with_context(|| format!("reading {}", component.display()))?;
            let manifest_path = manifest.unwrap_or_else(|| component.with_extension("toml"));
            let mut text = std::fs::read_to_string(&manifest_path)
                .with_context(|| format!("reading the manifest {}", manifest_path.display()))?;
            let parsed = Manifest::parse(&text).with_context(|| format!("{}", manifest_path.display()))?;
            let sha256 = Sha256::of(&bytes);
            if parsed.sha256.is_none() {
                // A top-level key must come before any table: first is always right.
                text = format!("sha256 = \"{sha256}\"\n{text}");
            }
            let body = json!({
                "manifest": text,
                "component": base64::engine::general_purpose::STANDARD.encode(&bytes),
                "activate": !no_activate,
            });
            let path = format!("/v1/plugins/{}", parsed.name);
            let answer = call(&api, hyper::Method::PUT, &path, Some(body)).await?;
            let state = if no_activate { "uploaded; activate it with `wasmpay plugin activate`" } else { "active" };
            println!("{} {} (sha256 {sha256}) {state}", parsed.name, parsed.version);
            print_pointer(&answer);
            Ok(())
        }
        PluginCommand::Activate { name, version, api } => {
            let path = format!("/v1/plugins/{name}/activate");
            let answer = call(&api, hyper::Method::POST, &path, Some(json!({"version": version}))).await?;
            println!("{name} {version} active");
            print_pointer(&answer);
            Ok(())
        }
        PluginCommand::Rollback { name, api } => {
            let answer = call(&api, hyper::Method::POST, &format!("/v1/plugins/{name}/rollback"), None).await?;
            let active = answer["pointer"]["active"]["version"].as_str().unwrap_or("?").to_owned();
            println!("{name} rolled back to {active}");
            print_pointer(&answer);
            Ok(())
        }
        PluginCommand::Remove { name, api } => {
            call(&api, hyper::Method::DELETE, &format!("/v1/plugins/{name}"), None).await?;
            println!("{name} removed: its methods are no longer served (`wasmpay plugin rollback {name}` restores it)");
            Ok(())
        }
    }
}

/// One command to the node. A command that changes something carries an idempotency key and
/// is sent again, with the same key, when the node could not be reached or answered
/// `unavailable` (its NATS failing over): the node makes it once, however often it arrives.
async fn call(api: &ApiArgs, method: hyper::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let url = format!("{}{path}", api.api.trim_end_matches('/'));
    let key = (method != hyper::Method::GET).then(command_key);
    let started = std::time::Instant::now();
    let (status, text) = loop {
        let sent =
            http_call_within(method.clone(), &url, &api.token, body.clone(), COMMAND_TIMEOUT, key.as_deref()).await;
        let again = match &sent {
            Err(_) => true,
            Ok((status, _)) => *status == hyper::StatusCode::SERVICE_UNAVAILABLE,
        };
        if !again || key.is_none() || started.elapsed() + RETRY_PAUSE >= COMMAND_TIMEOUT {
            break sent?;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    };
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    if status == hyper::StatusCode::ACCEPTED {
        bail!("{}", value["message"].as_str().unwrap_or(&text));
    }
    if !status.is_success() {
        let code = value["code"].as_str().unwrap_or("error");
        bail!("{url} answered {status}: {code}: {}", value["message"].as_str().unwrap_or(&text));
    }
    Ok(value)
}

/// The versions a rollback would go back through.
fn print_pointer(answer: &Value) {
    let history: Vec<&str> = answer["pointer"]["history"]
        .as_array()
        .map(|history| history.iter().rev().filter_map(|manifest| manifest["version"].as_str()).collect())
        .unwrap_or_default();
    if !history.is_empty() {
        println!("earlier versions, most recent first: {}", history.join(", "));
    }
}

/// `GET /v1/plugins` as a table.
fn table(body: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<10} {:<12} {:<10} {:>8} {:>8} {:>9} {:>9}  {:<12} origin",
        "plugin", "version", "state", "sha256", "calls", "failures", "p50 µs", "p99 µs", "methods"
    );
    for plugin in body["plugins"].as_array().into_iter().flatten() {
        let methods: Vec<&str> = plugin["methods"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let origin = match (plugin["origin"]["kind"].as_str(), plugin["origin"]["from"].as_str()) {
            (Some(kind), Some(from)) => format!("{kind} {from}"),
            (Some(kind), None) => kind.to_owned(),
            _ => "-".to_owned(),
        };
        let name = plugin["name"].as_str().unwrap_or("?");
        if plugin["active"].is_null() {
            let loaded = plugin["versions"].as_array().is_some_and(|versions| !versions.is_empty());
            let _ = writeln!(out, "{name:<10} {:<10} {:<12}", "-", if loaded { "removed" } else { "not loaded" });
        }
        for (index, version) in plugin["versions"].as_array().into_iter().flatten().enumerate() {
            // Where a version came from is known for the serving one.
            let origin = if index == 0 && !plugin["active"].is_null() { origin.as_str() } else { "" };
            let text = |key: &str| version[key].as_str().unwrap_or("-").to_owned();
            let number = |key: &str| version[key].as_u64().unwrap_or(0);
            let line = format!(
                "{name:<10} {:<10} {:<12} {:<10} {:>8} {:>8} {:>9} {:>9}  {:<12} {origin}",
                text("version"),
                text("state"),
                text("sha256").get(..8).unwrap_or("-"),
                number("calls"),
                number("failures"),
                number("p50_us"),
                number("p99_us"),
                methods.join(","),
            );
            let _ = writeln!(out, "{}", line.trim_end());
            if let Some(reason) = version["quarantined"].as_str() {
                let _ = writeln!(out, "  quarantined: {reason}");
            }
        }
        if let Some(refused) = plugin["refused"].as_object() {
            let field = |key: &str| refused.get(key).and_then(Value::as_str).unwrap_or("?");
            let _ = writeln!(out, "  refused {}: {}: {}", field("version"), field("code"), field("message"));
        }
    }
    let _ = writeln!(
        out,
        "versions loaded: {}, instances alive: {}",
        body["versions_loaded"].as_u64().unwrap_or(0),
        body["instances"].as_u64().unwrap_or(0)
    );
    out
}
