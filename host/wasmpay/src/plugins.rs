//! `wasmpay plugin …`: the operators' plugin commands, over a node's `/v1/plugins` API (the
//! node checks and stores; every node of the cluster follows the store, docs/operators.md),
//! and the integrators' `test`, which runs a version's fixtures here, without a node.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine as _;
use clap::Subcommand;
use serde_json::{Value, json};
use wasmpay_node::client::http_call_within;
use wasmpay_plugin_host::{Import, Inspection, Manifest, SandboxSettings, Sha256, inspect, test_version};

use crate::api::{ApiArgs, answer};
use crate::exit::{Exit, fail};
use crate::output::Format;
use crate::plugin_crate;

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
    /// Start a plugin: a crate of its own in NAME/ (a working method `NAME` with a manifest,
    /// fixtures and a README) that `wasmpay plugin build` turns into a component.
    New {
        /// The plugin's name, which is also its method's: 1-32 characters of a-z 0-9 -,
        /// starting with a letter.
        name: String,
        /// Where to write it (empty or new); by default `./NAME`.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The wasmpay SDK it depends on (the `sdk/` directory of a checkout); by default the
        /// one of the checkout this binary was built from.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build the plugin crate in DIR for `wasm32-wasip2` (added when missing): writes
    /// `dist/<name>.wasm` and its manifest `dist/<name>.toml` with the component's sha256.
    Build {
        /// The crate (holding `wasmpay-plugin.toml`).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Check a component and its manifest here, as a node would before it serves (hash when
    /// the manifest has one, contract, what it describes), and run every fixture in the
    /// production sandbox: each one's verdict and time, every failure, exit 3 if any failed.
    Test {
        /// The component (`.wasm`).
        component: PathBuf,
        /// Its manifest; by default the `.toml` beside the component.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Runs of each fixture, each on instances of its own: verdicts that differ between
        /// runs fail (a decision must be a pure function of the payment and the configuration).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=100))]
        runs: u16,
    },
    /// Show what a component is: the world of `wasmpay:plugin` it fits, its imports (which
    /// the sandbox offers, traps or refuses) and exports, and what `describe` answers.
    Inspect {
        /// The component (`.wasm`).
        component: PathBuf,
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
pub async fn run(command: PluginCommand, format: Format) -> anyhow::Result<()> {
    match command {
        PluginCommand::List { api } => {
            let body = call(&api, hyper::Method::GET, "/v1/plugins", None).await?;
            match format {
                Format::Table => print!("{}", table(&body)),
                Format::Json => println!("{body}"),
            }
            Ok(())
        }
        PluginCommand::New { name, dir, sdk } => {
            let directory = plugin_crate::new(&name, dir, sdk)?;
            println!("{name}: a plugin crate in {}", directory.display());
            println!(
                "next: cd {} && wasmpay plugin build && wasmpay plugin test dist/{name}.wasm",
                directory.display()
            );
            Ok(())
        }
        PluginCommand::Build { dir } => {
            let built = plugin_crate::build(&dir)?;
            println!(
                "{} {}: {} ({} bytes, sha256 {})",
                built.name,
                built.version,
                built.component.display(),
                built.bytes,
                built.sha256
            );
            println!("manifest: {}", built.manifest.display());
            Ok(())
        }
        PluginCommand::Test { component, manifest, runs } => test(&component, manifest, runs),
        PluginCommand::Inspect { component } => {
            let bytes = std::fs::read(&component).with_context(|| format!("reading {}", component.display()))?;
            let found = inspect(&SandboxSettings::default(), &component.display().to_string(), &bytes)?;
            print!("{}", inspection(&found));
            Ok(())
        }
        PluginCommand::Push { component, manifest, no_activate, api } => {
            let Version { bytes, mut text, manifest: parsed } = Version::read(&component, manifest)?;
            let sha256 = Sha256::of(&bytes);
            if parsed.sha256.is_none() {
                text = Manifest::stamped(&text, &sha256);
            }
            let body = json!({
                "manifest": text,
                "component": base64::engine::general_purpose::STANDARD.encode(&bytes),
                "activate": !no_activate,
            });
            let path = format!("/v1/plugins/{}", parsed.name);
            let answer = call(&api, hyper::Method::PUT, &path, Some(body)).await?;
            if format == Format::Json {
                println!("{answer}");
                return Ok(());
            }
            let state = if no_activate { "uploaded; activate it with `wasmpay plugin activate`" } else { "active" };
            println!("{} {} (sha256 {sha256}) {state}", parsed.name, parsed.version);
            print_pointer(&answer);
            Ok(())
        }
        PluginCommand::Activate { name, version, api } => {
            let path = format!("/v1/plugins/{name}/activate");
            let answer = call(&api, hyper::Method::POST, &path, Some(json!({"version": version}))).await?;
            if format == Format::Json {
                println!("{answer}");
                return Ok(());
            }
            println!("{name} {version} active");
            print_pointer(&answer);
            Ok(())
        }
        PluginCommand::Rollback { name, api } => {
            let answer = call(&api, hyper::Method::POST, &format!("/v1/plugins/{name}/rollback"), None).await?;
            if format == Format::Json {
                println!("{answer}");
                return Ok(());
            }
            let active = answer["pointer"]["active"]["version"].as_str().unwrap_or("?").to_owned();
            println!("{name} rolled back to {active}");
            print_pointer(&answer);
            Ok(())
        }
        PluginCommand::Remove { name, api } => {
            let answer = call(&api, hyper::Method::DELETE, &format!("/v1/plugins/{name}"), None).await?;
            if format == Format::Json {
                println!("{answer}");
                return Ok(());
            }
            println!("{name} removed: its methods are no longer served (`wasmpay plugin rollback {name}` restores it)");
            Ok(())
        }
    }
}

/// A component and its manifest, as read from files.
struct Version {
    bytes: Vec<u8>,
    /// The manifest as written.
    text: String,
    manifest: Manifest,
}

impl Version {
    /// `component`, and `manifest` or else the `.toml` beside it.
    fn read(component: &Path, manifest: Option<PathBuf>) -> anyhow::Result<Version> {
        let bytes = std::fs::read(component).with_context(|| format!("reading {}", component.display()))?;
        let path = manifest.unwrap_or_else(|| component.with_extension("toml"));
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("reading the manifest {}", path.display()))?;
        let manifest = Manifest::parse(&text).with_context(|| format!("{}", path.display()))?;
        Ok(Version { bytes, text, manifest })
    }
}

/// `wasmpay plugin test`: every fixture's verdict and time, then a summary; an error (exit 3)
/// when the version would be refused or any fixture failed.
fn test(component: &Path, manifest: Option<PathBuf>, runs: u16) -> anyhow::Result<()> {
    let Version { bytes, manifest, .. } = Version::read(component, manifest)?;
    let source = component.display().to_string();
    let report = test_version(&SandboxSettings::default(), &source, &manifest, &bytes, usize::from(runs))
        .map_err(|error| fail(Exit::Refused, format!("{}: {error}", error.code())))?;
    let info = &report.info;
    println!(
        "{} {} (sha256 {}), methods {}, {} fixtures, each run {runs} times in the sandbox (median, slowest)",
        info.name,
        info.version,
        report.sha256,
        if info.methods.is_empty() { "none (an FX plugin)".to_owned() } else { info.methods.join(", ") },
        report.fixtures.len()
    );
    let width = report.fixtures.iter().map(|fixture| fixture.name.chars().count()).max().unwrap_or(0);
    for fixture in &report.fixtures {
        let (mark, said) = match &fixture.result {
            Ok(outcome) => ("ok  ", outcome),
            Err(failure) => ("FAIL", failure),
        };
        let (median, slowest) = (fixture.median.as_micros(), fixture.slowest.as_micros());
        println!("  {mark}  {:<width$}  {median:>7} µs {slowest:>7} µs  {said}", fixture.name);
    }
    let failed = report.fixtures.iter().filter(|fixture| fixture.result.is_err()).count();
    let passed = report.fixtures.len() - failed;
    if failed > 0 {
        return Err(fail(Exit::Refused, format!("{passed} passed, {failed} failed")));
    }
    println!("{passed} passed, 0 failed");
    Ok(())
}

/// `wasmpay plugin inspect`'s report.
fn inspection(found: &Inspection) -> String {
    let mut out = String::new();
    let world = found.world.map_or("none: it exports no plugin role of wasmpay:plugin@0.1.x".to_owned(), |world| {
        format!("{world} (wasmpay:plugin@0.1.x)")
    });
    let _ = writeln!(out, "world: {world}");
    match &found.described {
        Ok(info) => {
            let currencies = if info.currencies.is_empty() { "any".to_owned() } else { info.currencies.join(" ") };
            let methods = if info.methods.is_empty() { "none".to_owned() } else { info.methods.join(" ") };
            let refunds = match (info.quotes_fees, info.prices_refunds) {
                (false, _) => "",
                (true, true) => ", refunds priced by the plugin",
                (true, false) => ", refunds keep their fee",
            };
            let fx = if info.quotes_rates { ", prices conversions (fx)" } else { "" };
            let _ = writeln!(
                out,
                "describe: {} {}, methods {methods}, currencies {currencies}{refunds}{fx}",
                info.name, info.version
            );
        }
        Err(refused) => {
            let _ = writeln!(out, "refused at load: {refused}");
        }
    }
    let _ = writeln!(out, "imports:");
    let width = found.imports.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    for (name, how) in &found.imports {
        let how = match how {
            Import::Offered => "offered",
            Import::Trapped => "linked, every call traps (the payment fails with plugin_failed)",
            Import::Refused => "REFUSED: not offered, the component cannot load",
        };
        let _ = writeln!(out, "  {name:<width$}  {how}");
    }
    let _ = writeln!(out, "exports:");
    for name in &found.exports {
        let _ = writeln!(out, "  {name}");
    }
    out
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
    let value = answer(&url, status, &text)?;
    if status == hyper::StatusCode::ACCEPTED {
        // Stored, but not serving everywhere yet: nothing failed, and nothing is done.
        return Err(fail(Exit::Retryable, value["message"].as_str().unwrap_or(&text).to_owned()));
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
