//! The `wasmpay` command line: `serve`, `demo`, `pay`, `account open|show|deposit`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use wasmpay_ledger::Ledger;
use wasmpay_node::client::{cluster_info, http_call, request};
use wasmpay_node::cluster::ClusterView;
use wasmpay_node::config::Config;
use wasmpay_node::node::{Node, NodeSettings, builtin_plugins};
use wasmpay_plugin_host::directory_sources;
use wasmpay_protocol::money::{Currency, format_major};
use wasmpay_protocol::routing::{AccountId, DEFAULT_PARTITIONS, Partitioner, subjects};
use wasmpay_protocol::{PROTOCOL_VERSION, Reply, Status};

use crate::api::ApiArgs;
use crate::plugins::{self, PluginCommand};

#[derive(Parser, Debug)]
#[command(
    name = "wasmpay",
    version,
    about = "Payment orchestration: NATS in, WebAssembly plugins, double-entry ledger."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node.
    Serve(ServeArgs),
    /// Run a node on embedded defaults, pay a few hundred payments through it, print a summary.
    Demo(wasmpay_tools::demo::DemoArgs),
    /// Send one payment over NATS and print the reply.
    Pay(PayArgs),
    /// Open, show or fund accounts through a node's HTTP API.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Register or list assets (units beyond ISO 4217: securities, points), through a node's
    /// HTTP API.
    #[command(subcommand)]
    Asset(AssetCommand),
    /// Issue, list or revoke the keys clients pay with over HTTP, through a node's HTTP API.
    #[command(subcommand, name = "client-key")]
    ClientKey(ClientKeyCommand),
    /// Check a ledger database directly.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Show the cluster as a node sees it.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// List, push, activate, roll back or remove plugin versions, cluster-wide, through a
    /// node's HTTP API.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Print the HTTP API's OpenAPI 3.1 document (what `GET /v1/openapi.json` serves).
    Openapi,
    /// List the ISO 4217 currencies accounts and payments may be in, with their exponents.
    Currencies {
        /// One JSON object per line (`code`, `exponent`, `name`) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Measure the node, the ledger and the plugins beside their baselines (private NATS,
    /// SQLite and PostgreSQL, pgbench), in one run.
    Bench(wasmpay_tools::bench::BenchArgs),
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// The live members, and every partition's owner and lease token (`GET /v1/cluster`).
    Status {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Remove the binding of the NATS deployment's payment subjects to a ledger, so the next
    /// node to start binds them to its own. Refused while the bound ledger has live nodes.
    Unbind {
        /// NATS server URL.
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats: String,
    },
    /// Move the deployment to the ledger at `--db`: records in that ledger that the
    /// deployment is bound to it (whatever it recorded before) and removes NATS's binding, so
    /// that ledger's nodes bind it and serve. Refused while any other ledger has live nodes on
    /// the NATS. The ledger the deployment leaves keeps its own record: do not start its
    /// nodes on this NATS again (they would serve nothing and say why).
    Adopt {
        /// NATS server URL.
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats: String,
        /// The ledger that takes the deployment over.
        #[arg(long)]
        db: String,
        /// The deployment's name (`[cluster] deployment`).
        #[arg(long, default_value = wasmpay_node::cluster::DEFAULT_DEPLOYMENT)]
        deployment: String,
    },
}

#[derive(Subcommand, Debug)]
enum LedgerCommand {
    /// Check every invariant of the books (conservation per currency, every payment's entries
    /// summing to zero, balances equal to their entries and at or above their floors, entries
    /// exactly for approved payments); exits non-zero with the first violation. Safe on a live
    /// database: it reads one consistent snapshot.
    Verify {
        /// Ledger database URL.
        #[arg(long, default_value = "sqlite://wasmpay.db")]
        db: String,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// NATS server URL, or a cluster's servers separated by commas.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Ledger database URL.
    #[arg(long, default_value = "sqlite://wasmpay.db")]
    db: String,
    /// HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Load every `*.wasm` in this directory (with its manifest `<name>.toml`, if any)
    /// instead of the built-in plugins, and watch it: adding, replacing or removing a
    /// component with its manifest loads, swaps or retires that plugin.
    #[arg(long)]
    plugins: Option<PathBuf>,
    /// Partition count P (fixed for the life of a cluster).
    #[arg(long, default_value_t = DEFAULT_PARTITIONS)]
    partitions: u32,
    /// This node's name in the cluster, unique among the nodes on one NATS (A-Z a-z 0-9 _ -);
    /// by default `<host>-<process id>`, so a second `serve` joins as another member.
    #[arg(long)]
    node_id: Option<String>,
    /// Configuration file (wasmpay.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A node for developing plugins: `plugin push` may replace a stored version in place
    /// (while this node serves its deployment alone) and `--plugins` manifests need no
    /// `sha256`. Only on a SQLite ledger: a cluster that serves real money must keep every
    /// version as it decided payments.
    #[arg(long)]
    dev: bool,
    /// Compile every plugin at every start instead of keeping compiled plugins in the cache
    /// (`[sandbox] cache_dir`, by default `$XDG_CACHE_HOME/wasmpay` or `~/.cache/wasmpay`).
    #[arg(long)]
    no_plugin_cache: bool,
}

#[derive(Args, Debug)]
struct PayArgs {
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Payment id (idempotency key); a random one by default.
    #[arg(long)]
    id: Option<String>,
    /// Payer account.
    #[arg(long)]
    from: String,
    /// Payee account.
    #[arg(long)]
    to: String,
    /// Amount in minor units.
    #[arg(long)]
    amount: u64,
    /// ISO 4217 currency.
    #[arg(long)]
    currency: String,
    /// Payment method.
    #[arg(long)]
    method: String,
    /// Method details, `key=value`, repeatable.
    #[arg(long = "detail", value_parser = parse_pair)]
    details: Vec<(String, String)>,
    /// Publish on `wasmpay.submit.<payer>` instead of hashing to the partition subject.
    #[arg(long)]
    submit: bool,
}

#[derive(Subcommand, Debug)]
enum AssetCommand {
    /// Register an asset; accounts can then be opened in it (`account open ID --currency CODE`).
    Register {
        /// Its code: 4-12 of A-Z 0-9 _ -, starting with a letter (e.g. AAPL, POINTS).
        code: String,
        /// Digits after the decimal point of one unit (0 for a share, 8 for a coin).
        #[arg(long)]
        exponent: u8,
        /// What it is, for people.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List the registered assets.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand, Debug)]
enum ClientKeyCommand {
    /// Issue a key; its secret is printed this once.
    Issue {
        /// What to call it (1-64 characters).
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List the keys, without secrets.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Revoke a key: it pays no more.
    Revoke {
        /// The key's id (`ck_…`).
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand, Debug)]
enum AccountCommand {
    /// Open an account.
    Open {
        /// Account id.
        id: String,
        /// ISO 4217 currency, or a registered asset's code (`wasmpay asset register`).
        #[arg(long)]
        currency: String,
        /// Lowest balance allowed, in minor units (0, or negative for credit).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        floor: i64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show an account and its balance.
    Show {
        /// Account id.
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// An account's statement: posted, held and available, then its entries, oldest first, with
    /// amounts in major units.
    Statement {
        /// Account id.
        id: String,
        /// Entries at most (1-500).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
        /// The cursor a previous page printed.
        #[arg(long)]
        after: Option<String>,
        /// Only entries recorded at or after this time (Unix milliseconds).
        #[arg(long = "from-ms")]
        from_ms: Option<i64>,
        /// Only entries recorded before this time (Unix milliseconds).
        #[arg(long = "to-ms")]
        to_ms: Option<i64>,
        /// Print the API's JSON (the account and the page of entries) instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Fund an account from outside the ledger.
    Deposit {
        /// Account id.
        id: String,
        /// Amount in minor units.
        #[arg(long)]
        amount: u64,
        /// Deposit id (idempotency key); a random one by default.
        #[arg(long = "deposit-id")]
        deposit_id: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("`{text}` is not key=value"))
}

/// Runs the command line; the exit code is non-zero on any failure.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(matches!(cli.command, Command::Serve(_)));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (`level` or `target=level,...`, e.g.
/// `info,wasmpay_ledger=debug`); `info` for `serve` and `warn` for the other commands otherwise.
fn init_tracing(verbose: bool) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let default = Targets::new().with_default(if verbose { LevelFilter::INFO } else { LevelFilter::WARN });
    let filter = std::env::var("RUST_LOG").ok().and_then(|text| text.parse::<Targets>().ok()).unwrap_or(default);
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(std::io::stderr))
        .with(filter)
        .try_init();
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(args).await,
        Command::Demo(args) => wasmpay_tools::demo::run(args).await,
        Command::Pay(args) => pay(args).await,
        Command::Account(command) => account(command).await,
        Command::Asset(AssetCommand::Register { code, exponent, name, api }) => {
            let body = json!({"code": code, "exponent": exponent, "name": name});
            call_api(hyper::Method::POST, &api, "/v1/assets", Some(body)).await
        }
        Command::Asset(AssetCommand::List { api }) => call_api(hyper::Method::GET, &api, "/v1/assets", None).await,
        Command::ClientKey(command) => client_key(command).await,
        Command::Ledger(LedgerCommand::Verify { db }) => verify(&db).await,
        Command::Cluster(ClusterCommand::Status { api }) => cluster_status(&api).await,
        Command::Cluster(ClusterCommand::Unbind { nats }) => cluster_unbind(&nats).await,
        Command::Cluster(ClusterCommand::Adopt { nats, db, deployment }) => {
            cluster_adopt(&nats, &db, &deployment).await
        }
        Command::Plugin(command) => plugins::run(command).await,
        Command::Openapi => {
            println!("{}", wasmpay_node::api::openapi::document());
            Ok(())
        }
        Command::Currencies { json } => {
            for currency in Currency::all() {
                let (code, exponent, name) = (currency.code(), currency.exponent(), currency.name());
                if json {
                    println!("{}", json!({"code": code, "exponent": exponent, "name": name}));
                } else {
                    println!("{code}  {exponent}  {name}");
                }
            }
            Ok(())
        }
        Command::Bench(args) => wasmpay_tools::bench::run(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if args.no_plugin_cache {
        config.sandbox.cache_dir = None;
    } else if config.sandbox.cache_dir.is_none() {
        config.sandbox.cache_dir = default_cache_dir();
    }
    let plugin_sources = match &args.plugins {
        Some(directory) => directory_sources(directory, args.dev)?,
        None => builtin_plugins(),
    };
    let admin_token = std::env::var("WASMPAY_ADMIN_TOKEN").ok().filter(|token| !token.is_empty());
    if admin_token.is_none() {
        tracing::warn!("WASMPAY_ADMIN_TOKEN is not set: every /v1 call will be refused");
    }
    let settings = NodeSettings {
        nats_url: args.nats,
        database_url: args.db,
        http_address: args.http,
        plugin_sources,
        plugin_directory: args.plugins.clone(),
        partitions: args.partitions,
        node_id: args.node_id.unwrap_or_else(default_node_id),
        config,
        admin_token,
        development: args.dev,
        ..NodeSettings::new()
    };
    // Listening for the signals from the start: joining can wait for the binding's grace
    // period, and a node asked to stop meanwhile exits cleanly (it serves nothing yet; any
    // lease it took expires, and the ledger fences it).
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut node = tokio::select! {
        started = Node::start(settings) => started?,
        () = &mut stop => {
            tracing::info!("stopped while starting");
            return Ok(());
        }
    };
    let failure = tokio::select! {
        () = &mut stop => None,
        cause = node.failed() => Some(cause),
    };
    tracing::info!("shutting down: finishing payments in flight");
    node.shutdown().await;
    match failure {
        None => Ok(()),
        Some(cause) => bail!("the node failed and stopped: {cause}"),
    }
}

async fn cluster_status(api: &ApiArgs) -> anyhow::Result<()> {
    let url = format!("{}/v1/cluster", api.api.trim_end_matches('/'));
    let (status, body) = http_call(hyper::Method::GET, &url, &api.token, None).await?;
    if !status.is_success() {
        bail!("{url} answered {status}: {body}");
    }
    let view: ClusterView = serde_json::from_str(&body).with_context(|| format!("{url} answered {body}"))?;
    print!("{}", view.table());
    Ok(())
}

async fn cluster_unbind(nats: &str) -> anyhow::Result<()> {
    let client = async_nats::connect(nats).await.with_context(|| format!("connecting to {nats}"))?;
    match wasmpay_node::cluster::unbind(client, None).await? {
        Some(ledger) => println!(
            "unbound ledger {ledger}: its nodes bind {nats} again if they start; a node of a ledger that recorded \
             no binding binds it after a grace period; to move the deployment, `wasmpay cluster adopt`"
        ),
        None => println!("{nats} is not bound to a ledger"),
    }
    Ok(())
}

/// Unbinds NATS first (refused while another ledger's nodes are live), then records the
/// adoption in the ledger: a refusal leaves the ledger's record as it was.
async fn cluster_adopt(nats: &str, db: &str, deployment: &str) -> anyhow::Result<()> {
    let ledger = Ledger::open_existing(db).await.with_context(|| format!("opening the ledger {db}"))?;
    let identity = ledger.identity().await?;
    let client = async_nats::connect(nats).await.with_context(|| format!("connecting to {nats}"))?;
    let unbound = wasmpay_node::cluster::unbind(client, Some(&identity)).await?;
    let before = ledger.adopt_deployment(deployment).await?;
    ledger.close().await;
    let was = |ledger: Option<String>| ledger.unwrap_or_else(|| "nothing".to_owned());
    println!(
        "deployment `{deployment}` adopted by ledger {identity} (its record was {}, NATS's binding {}): its nodes \
         bind {nats} and serve",
        was(before),
        was(unbound)
    );
    Ok(())
}

/// Where compiled plugins are kept unless the configuration says otherwise: the user's cache
/// directory, as wasmtime's own CLI does.
fn default_cache_dir() -> Option<PathBuf> {
    let base =
        std::env::var_os("XDG_CACHE_HOME").filter(|value| !value.is_empty()).map(PathBuf::from).or_else(|| {
            std::env::var_os("HOME").filter(|value| !value.is_empty()).map(|home| PathBuf::from(home).join(".cache"))
        })?;
    Some(base.join("wasmpay"))
}

/// `<host>-<process id>`, with anything a cluster key cannot hold left out of the host name.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String =
        host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(40).collect();
    let host = if host.is_empty() { "node".to_owned() } else { host };
    format!("{host}-{}", std::process::id())
}

async fn verify(db: &str) -> anyhow::Result<()> {
    let ledger = Ledger::open_existing(db).await.with_context(|| format!("opening {db}"))?;
    let audit = ledger.audit().await;
    ledger.close().await;
    let audit = audit?;
    if let Some(violation) = audit.first_violation() {
        bail!("the ledger at {db} breaks an invariant: {violation}");
    }
    let payments: u64 = audit.payments_by_outcome.values().sum();
    // Every unit sums to zero on its own: a cross-border payment's two currencies, a
    // settlement's cash and asset, each balance through its own FX, fee and external accounts.
    let units: Vec<&str> = audit.balance_sum_by_currency.keys().map(String::as_str).collect();
    println!(
        "ledger OK: {payments} transfers; money is conserved in each of {} units ({})",
        units.len(),
        units.join(" ")
    );
    for (outcome, count) in &audit.payments_by_outcome {
        println!("  {outcome:<40} {count:>8}");
    }
    Ok(())
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}

async fn pay(args: PayArgs) -> anyhow::Result<()> {
    let client = async_nats::connect(&args.nats).await.with_context(|| format!("connecting to {}", args.nats))?;
    let payer = AccountId::new(args.from.clone())?;
    let subject = if args.submit {
        format!("{}.{payer}", subjects::SUBMIT_PREFIX)
    } else {
        let info = cluster_info(&client).await?;
        subjects::pay(Partitioner::new(info.partitions)?.partition_of(&payer), payer.as_str())
    };
    let id = args.id.unwrap_or_else(random_id);
    let details: BTreeMap<String, String> = args.details.into_iter().collect();
    let payment = json!({"version": PROTOCOL_VERSION, "id": id, "payer": args.from, "payee": args.to,
                         "amount": args.amount, "currency": args.currency, "method": args.method, "details": details});
    let reply = request(&client, &subject, payment.to_string()).await?;
    println!("{reply}");
    let parsed: Reply = serde_json::from_str(&reply)?;
    if parsed.status != Status::Approved {
        bail!("payment {}: {}", parsed.status.as_str(), parsed.code.as_str());
    }
    Ok(())
}

async fn account(command: AccountCommand) -> anyhow::Result<()> {
    let (method, api, path, body) = match command {
        AccountCommand::Statement { id, limit, after, from_ms, to_ms, json, api } => {
            let query = StatementQuery { limit, after, from_ms, to_ms };
            return statement(&id, &query, json, &api).await;
        }
        AccountCommand::Open { id, currency, floor, api } => (
            hyper::Method::POST,
            api,
            "/v1/accounts".to_owned(),
            Some(json!({"id": id, "currency": currency, "floor": floor})),
        ),
        AccountCommand::Show { id, api } => (hyper::Method::GET, api, format!("/v1/accounts/{id}"), None),
        AccountCommand::Deposit { id, amount, deposit_id, api } => {
            let deposit_id = deposit_id.unwrap_or_else(random_id);
            (
                hyper::Method::POST,
                api,
                format!("/v1/accounts/{id}/deposits"),
                Some(json!({"id": deposit_id, "amount": amount})),
            )
        }
    };
    call_api(method, &api, &path, body).await
}

async fn client_key(command: ClientKeyCommand) -> anyhow::Result<()> {
    let (method, api, path, body) = match command {
        ClientKeyCommand::Issue { name, api } => {
            (hyper::Method::POST, api, "/v1/client-keys".to_owned(), Some(json!({"name": name})))
        }
        ClientKeyCommand::List { api } => (hyper::Method::GET, api, "/v1/client-keys".to_owned(), None),
        ClientKeyCommand::Revoke { id, api } => (hyper::Method::DELETE, api, format!("/v1/client-keys/{id}"), None),
    };
    call_api(method, &api, &path, body).await
}

/// One call of the node's HTTP API: prints the answer, fails on an error status.
async fn call_api(
    method: hyper::Method,
    api: &ApiArgs,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    let (status, text) =
        http_call(method, &format!("{}{path}", api.api.trim_end_matches('/')), &api.token, body).await?;
    println!("{text}");
    if !status.is_success() {
        bail!("HTTP {status}");
    }
    Ok(())
}

/// Which entries `account statement` asks for.
struct StatementQuery {
    limit: u32,
    after: Option<String>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
}

/// `wasmpay account statement`: the account, then a page of its entries.
async fn statement(id: &str, query: &StatementQuery, as_json: bool, api: &ApiArgs) -> anyhow::Result<()> {
    let base = api.api.trim_end_matches('/');
    let get = |path: String| async move {
        let (status, text) = http_call(hyper::Method::GET, &format!("{base}{path}"), &api.token, None).await?;
        if !status.is_success() {
            bail!("HTTP {status}: {text}");
        }
        serde_json::from_str::<serde_json::Value>(&text).context("reading the node's answer")
    };
    let mut path = format!("/v1/accounts/{id}/entries?limit={}", query.limit);
    for (name, value) in [("from_ms", query.from_ms), ("to_ms", query.to_ms)] {
        if let Some(value) = value {
            path.push_str(&format!("&{name}={value}"));
        }
    }
    if let Some(after) = &query.after {
        path.push_str(&format!("&after={}", percent_encode(after)));
    }
    let account = get(format!("/v1/accounts/{id}")).await?;
    let page = get(path).await?;
    if as_json {
        println!("{}", json!({"account": account, "entries": page["entries"], "next": page["next"]}));
        return Ok(());
    }
    let code = account["currency"].as_str().unwrap_or_default();
    let exponent = account["exponent"]
        .as_u64()
        .and_then(|exponent| u8::try_from(exponent).ok())
        .with_context(|| format!("the node gave no exponent for `{code}`"))?;
    let in_major = |amount: i64| format_major(amount, exponent);
    let major = |field: &serde_json::Value| in_major(field.as_i64().unwrap_or_default());
    println!(
        "account {id} ({code}): posted {}, held {}, available {}",
        major(&account["balance"]),
        major(&account["held"]),
        major(&account["available"])
    );
    println!(
        "{:>10}  {:<23}  {:<8}  {:<32}  {:>16}",
        "entry",
        "time (UTC)",
        "kind",
        "payment",
        format!("amount {code}")
    );
    for entry in page["entries"].as_array().into_iter().flatten() {
        let amount = entry["amount"].as_i64().unwrap_or_default();
        let signed = if amount > 0 { format!("+{}", in_major(amount)) } else { in_major(amount) };
        println!(
            "{:>10}  {:<23}  {:<8}  {:<32}  {signed:>16}",
            entry["id"].as_i64().unwrap_or_default(),
            utc(entry["at_ms"].as_i64().unwrap_or_default()),
            entry["kind"].as_str().unwrap_or_default(),
            entry["payment"].as_str().unwrap_or_default(),
        );
    }
    if let Some(next) = page["next"].as_str() {
        println!("more: wasmpay account statement {id} --after {next}");
    }
    Ok(())
}

/// `text` with everything but unreserved URL characters percent-encoded.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(byte).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS.mmm` in UTC (the civil-from-days algorithm of
/// Howard Hinnant's date library).
fn utc(ms: i64) -> String {
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let (hours, minutes, seconds, millis) =
        (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1_000 % 60, in_day % 1_000);
    format!("{year:04}-{month:02}-{day:02} {hours:02}:{minutes:02}:{seconds:02}.{millis:03}")
}

/// A random-enough id for ad-hoc commands: time and process id.
fn random_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("cli-{nanos:x}-{}", std::process::id())
}
