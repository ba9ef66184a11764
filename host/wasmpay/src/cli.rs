//! The `wasmpay` command line: `serve`, `demo`, `pay`, `account`, `asset`, `client-key`,
//! `ledger`, `cluster`, `currencies`; `plugin` is in `plugins`. Every command prints a table
//! for people or JSON for scripts (`-o json`), and ends with an exit code of the contract in
//! `exit`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use tracing::Instrument as _;
use wasmpay_ledger::Ledger;
use wasmpay_node::client::{self, cluster_info};
use wasmpay_node::cluster::ClusterView;
use wasmpay_node::config::Config;
use wasmpay_node::node::{Node, NodeError, NodeSettings, builtin_plugins};
use wasmpay_node::traces::Traces;
use wasmpay_plugin_host::directory_sources;
use wasmpay_protocol::money::{Currency, format_major, parse_major};
use wasmpay_protocol::routing::{AccountId, DEFAULT_PARTITIONS, Partitioner, subjects};
use wasmpay_protocol::{PROTOCOL_VERSION, Reply, Status};

use crate::api::{ApiArgs, call};
use crate::exit::{Exit, code_of, fail};
use crate::output::{Format, Table, amount, tinted};
use crate::plugins::{self, PluginCommand};

#[derive(Parser, Debug)]
#[command(
    name = "wasmpay",
    version,
    about = "Payment orchestration: NATS in, WebAssembly plugins, double-entry ledger."
)]
struct Cli {
    /// What to print: `table` for people, `json` (the node's answer) for scripts.
    #[arg(short = 'o', long, global = true, value_enum, env = "WASMPAY_OUTPUT", default_value = "table")]
    output: Format,
    /// How log lines are written to standard error: `text` for people, `json` (one object per
    /// line) for a log pipeline.
    #[arg(long, global = true, value_enum, env = "WASMPAY_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Which log lines: a level (`debug`) or `target=level` pairs (`warn,wasmpay_ledger=debug`);
    /// overrides `RUST_LOG`. Default: `info` for `serve`, `warn` for other commands.
    #[arg(long, global = true, env = "WASMPAY_LOG_LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node.
    Serve(ServeArgs),
    /// Run a node on embedded defaults, pay a few hundred payments through it, print a summary.
    Demo(wasmpay_tools::demo::DemoArgs),
    /// Send one payment over NATS, retrying with the same id while the answer is not final,
    /// and print the id and the outcome.
    Pay(PayArgs),
    /// Ask for an FX quote over NATS: the rate and what the payee would be paid, until it
    /// expires; pay with it with `wasmpay pay --quote ID`.
    Quote(QuoteArgs),
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
    /// Print a shell's completion script: `wasmpay completions bash > /etc/bash_completion.d/wasmpay`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// The live members and how many partitions each owns (`GET /v1/cluster`); with
    /// `--partitions`, every partition's owner, lease token and lag too.
    Status {
        /// Also list every partition.
        #[arg(long)]
        partitions: bool,
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
        #[arg(long, env = "WASMPAY_DB")]
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
        #[arg(long, env = "WASMPAY_DB", default_value = "sqlite://wasmpay.db")]
        db: String,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// NATS server URL, or a cluster's servers separated by commas.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Ledger database URL.
    #[arg(long, env = "WASMPAY_DB", default_value = "sqlite://wasmpay.db")]
    db: String,
    /// HTTP listen address.
    #[arg(long, env = "WASMPAY_HTTP", default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Load every `*.wasm` in this directory (with its manifest `<name>.toml`, if any)
    /// instead of the built-in plugins, and watch it: adding, replacing or removing a
    /// component with its manifest loads, swaps or retires that plugin.
    #[arg(long, env = "WASMPAY_PLUGINS")]
    plugins: Option<PathBuf>,
    /// Partition count P (fixed for the life of a cluster).
    #[arg(long, default_value_t = DEFAULT_PARTITIONS)]
    partitions: u32,
    /// This node's name in the cluster, unique among the nodes on one NATS (A-Z a-z 0-9 _ -);
    /// by default `<host>-<process id>`, so a second `serve` joins as another member.
    #[arg(long, env = "WASMPAY_NODE_ID")]
    node_id: Option<String>,
    /// Configuration file; without one, `./wasmpay.toml` if it exists, else the defaults.
    #[arg(long, env = "WASMPAY_CONFIG")]
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
    /// Payment id (idempotency key); a random one by default, printed either way.
    #[arg(long)]
    id: Option<String>,
    /// Payer account.
    #[arg(long, value_parser = account_arg)]
    from: AccountId,
    /// Payee account.
    #[arg(long, value_parser = account_arg)]
    to: AccountId,
    /// Amount in major units of the currency, exactly: `12.50` EUR; more decimals than the
    /// currency has are refused.
    #[arg(long, required_unless_present = "amount_minor", conflicts_with = "amount_minor")]
    amount: Option<String>,
    /// Amount in minor units instead: `1250` EUR cents.
    #[arg(long)]
    amount_minor: Option<u64>,
    /// ISO 4217 currency.
    #[arg(long, value_parser = currency_arg)]
    currency: Currency,
    /// A cross-border payment: the payee's currency (converted at the FX plugin's rate).
    #[arg(long, value_parser = currency_arg)]
    counter_currency: Option<Currency>,
    /// A cross-border payment at this FX quote's rate.
    #[arg(long)]
    quote: Option<String>,
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

#[derive(Args, Debug)]
struct QuoteArgs {
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Payer account.
    #[arg(long, value_parser = account_arg)]
    from: AccountId,
    /// Payee account, in the counter currency.
    #[arg(long, value_parser = account_arg)]
    to: AccountId,
    /// Amount in major units of the currency, exactly.
    #[arg(long)]
    amount: String,
    /// The payer's ISO 4217 currency.
    #[arg(long, value_parser = currency_arg)]
    currency: Currency,
    /// The payee's ISO 4217 currency.
    #[arg(long, value_parser = currency_arg)]
    counter_currency: Currency,
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
        /// Lowest balance allowed, in major units of its unit (`0`, or `-500.00` for credit).
        #[arg(long, default_value = "0", allow_negative_numbers = true)]
        floor: String,
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
        /// Amount in major units of the account's unit, exactly: `50.00`.
        #[arg(long, required_unless_present = "amount_minor", conflicts_with = "amount_minor")]
        amount: Option<String>,
        /// Amount in minor units instead.
        #[arg(long)]
        amount_minor: Option<u64>,
        /// Deposit id (idempotency key); a random one by default.
        #[arg(long = "deposit-id")]
        deposit_id: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// An account id given on the command line: a malformed one is a usage error (exit 2).
fn account_arg(text: &str) -> Result<AccountId, String> {
    AccountId::new(text).map_err(|error| error.to_string())
}

/// An ISO 4217 currency given on the command line: an unknown one is a usage error (exit 2).
fn currency_arg(text: &str) -> Result<Currency, String> {
    text.parse::<Currency>().map_err(|error| error.to_string())
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("`{text}` is not key=value"))
}

/// Runs the command line; the exit code says how it ended (`exit`: 0 done, 1 an unexpected
/// failure, 2 a usage error, 3 refused or declined, 4 retry later, 5 unreachable or
/// misconfigured, 6 broken books).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let logging = Logging {
        verbose: matches!(cli.command, Command::Serve(_)),
        filter: cli.log_level.clone(),
        format: cli.log_format,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let traces = match init_tracing(logging, runtime.handle().clone()) {
        Ok(traces) => traces,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(Exit::Unreachable.code());
        }
    };
    let exit = match runtime.block_on(run(cli.command, cli.output)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::from(code_of(&error))
        }
    };
    // The last spans go out on the runtime, which is still alive here.
    if let Some(traces) = traces {
        traces.finish();
    }
    exit
}

/// `error` and its causes on one line, each said once: many errors repeat their source's text
/// in their own (`database error: … at line 948`), and `{:#}` would print it again for every
/// level of the chain.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// How the log is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line: time, level, target, message, fields, spans.
    Json,
}

/// What a log layer takes: what `filter` lets through, and of the spans only those that say
/// whose line it is (a payment, an HTTP request). The span test keeps `filter`'s level as the
/// layer's (it narrows nothing by level), so disabled events stay cheap.
fn logged<S>(filter: tracing_subscriber::filter::Targets) -> impl tracing_subscriber::layer::Filter<S> {
    use tracing_subscriber::filter::{FilterExt as _, LevelFilter, filter_fn};
    const LOGGED_SPANS: [&str; 2] = ["payment", "http request"];
    let spans = filter_fn(|metadata| !metadata.is_span() || LOGGED_SPANS.contains(&metadata.name()));
    filter.and(spans.with_max_level_hint(LevelFilter::TRACE))
}

/// What `init_tracing` sets up.
struct Logging {
    /// Whether the command is a server (`info` by default rather than `warn`).
    verbose: bool,
    /// `--log-level`, which wins over `RUST_LOG`.
    filter: Option<String>,
    format: LogFormat,
}

/// Logs to stderr as text or JSON lines, filtered by `--log-level` or else `RUST_LOG`
/// (`level` or `target=level,...`, e.g. `info,wasmpay_ledger=debug`); `info` for `serve` and
/// `warn` for the other commands otherwise. A filter that does not parse is an error, not
/// silently the default. With an OTLP endpoint in the environment, wasmpay's spans (the
/// `info` ones, whatever the log filter) are exported too; what it returns flushes them.
fn init_tracing(logging: Logging, runtime: tokio::runtime::Handle) -> Result<Option<Traces>, String> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let default = Targets::new().with_default(if logging.verbose { LevelFilter::INFO } else { LevelFilter::WARN });
    let given = match logging.filter {
        Some(text) => Some(("--log-level", text)),
        None => std::env::var("RUST_LOG").ok().filter(|text| !text.trim().is_empty()).map(|text| ("RUST_LOG", text)),
    };
    let filter = match given {
        Some((name, text)) => text.parse::<Targets>().map_err(|error| {
            format!("{name} {text:?} is not a log filter ({error}): write `info` or `warn,wasmpay_ledger=debug`")
        })?,
        None => default,
    };
    // The log lines carry only the spans that say whose line it is (a payment, an HTTP
    // request); the finer ones (a plugin call, a ledger commit) are for traces. A log layer
    // formats the fields of every span it takes when the span opens, logged or not: that was
    // three spans per payment formatted for nothing (docs/performance.md, step 13).
    let text = (logging.format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .with_filter(logged(filter.clone()))
    });
    let json = (logging.format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(logged(filter.clone()))
    });
    // A tracing setting the process cannot honour never stops it (a payment node least of
    // all): it is said, and nothing is exported.
    let (setup, refused) = match Traces::from_env("wasmpay", runtime) {
        Ok(setup) => (setup, None),
        Err(error) => (None, Some(error)),
    };
    let (traces, exported) = match setup {
        Some((traces, tracer)) => {
            let ours = ["wasmpay", "wasmpay_node", "wasmpay_plugin_host", "wasmpay_ledger", "wasmpay_tools"];
            let spans = Targets::new().with_targets(ours.map(|target| (target, LevelFilter::INFO)));
            (Some(traces), Some(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(spans)))
        }
        None => (None, None),
    };
    let _ = tracing_subscriber::registry().with(text).with(json).with(exported).try_init();
    if let Some(error) = refused {
        tracing::warn!(%error, "traces are not exported");
    }
    Ok(traces)
}

async fn run(command: Command, format: Format) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(args).await,
        Command::Demo(args) => wasmpay_tools::demo::run(args).await,
        Command::Pay(args) => pay(args, format).await,
        Command::Quote(args) => quote(args, format).await,
        Command::Account(command) => account(command, format).await,
        Command::Asset(command) => asset(command, format).await,
        Command::ClientKey(command) => client_key(command, format).await,
        Command::Ledger(LedgerCommand::Verify { db }) => verify(&db, format).await,
        Command::Cluster(ClusterCommand::Status { partitions, api }) => cluster_status(&api, partitions, format).await,
        Command::Cluster(ClusterCommand::Unbind { nats }) => cluster_unbind(&nats).await,
        Command::Cluster(ClusterCommand::Adopt { nats, db, deployment }) => {
            cluster_adopt(&nats, &db, &deployment).await
        }
        Command::Plugin(command) => plugins::run(command, format).await,
        Command::Openapi => {
            println!("{}", wasmpay_node::api::openapi::document());
            Ok(())
        }
        Command::Currencies { json } => {
            let mut table = Table::new(["code", "exponent", "name"]);
            for currency in Currency::all() {
                let (code, exponent, name) = (currency.code(), currency.exponent(), currency.name());
                if json || format == Format::Json {
                    println!("{}", json!({"code": code, "exponent": exponent, "name": name}));
                } else {
                    table.row(vec![code.to_owned(), exponent.to_string(), name]);
                }
            }
            if !(json || format == Format::Json) {
                print!("{}", table.render());
            }
            Ok(())
        }
        Command::Bench(args) => wasmpay_tools::bench::run(args).await,
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(shell, &mut Cli::command(), "wasmpay", &mut std::io::stdout());
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // --config (or WASMPAY_CONFIG), else ./wasmpay.toml when there is one, else the defaults:
    // said in the log either way, so a node never runs on a file nobody meant.
    let discovered = PathBuf::from("wasmpay.toml");
    let path = args.config.clone().or_else(|| discovered.is_file().then_some(discovered));
    let mut config = match &path {
        Some(path) => {
            let config = Config::load(path).map_err(|error| fail(Exit::Unreachable, error.to_string()))?;
            tracing::info!(config = %path.display(), "configuration read");
            config
        }
        None => {
            tracing::info!("no --config and no ./wasmpay.toml: the default configuration");
            Config::default()
        }
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
    let database = wasmpay_ledger::redacted_url(&args.db);
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
        started = Node::start(settings) => started.map_err(|error| match error {
            // The ledger's errors do not know which database they are about: say it here.
            NodeError::Ledger(_) => anyhow::Error::new(error).context(format!("the ledger at {database}")),
            error => anyhow::Error::new(error),
        })?,
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

async fn cluster_status(api: &ApiArgs, partitions: bool, format: Format) -> anyhow::Result<()> {
    let answer = call(api, hyper::Method::GET, "/v1/cluster", None).await?;
    if format == Format::Json {
        println!("{answer}");
        return Ok(());
    }
    let view: ClusterView = serde_json::from_value(answer.clone()).with_context(|| format!("reading {answer}"))?;
    print!("{}", view.table(partitions));
    Ok(())
}

async fn cluster_unbind(given: &str) -> anyhow::Result<()> {
    let nats = client::shown_nats(given);
    let client = async_nats::connect(given).await.with_context(|| format!("connecting to {nats}"))?;
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
async fn cluster_adopt(given: &str, db: &str, deployment: &str) -> anyhow::Result<()> {
    let shown = wasmpay_ledger::redacted_url(db);
    let ledger = Ledger::open_existing(db).await.with_context(|| format!("opening the ledger {shown}"))?;
    let identity = ledger.identity().await?;
    let nats = client::shown_nats(given);
    let client = async_nats::connect(given).await.with_context(|| format!("connecting to {nats}"))?;
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

async fn verify(db: &str, format: Format) -> anyhow::Result<()> {
    let shown = wasmpay_ledger::redacted_url(db);
    let ledger = Ledger::open_existing(db).await.with_context(|| format!("opening the ledger at {shown}"))?;
    let audit = ledger.audit().await;
    ledger.close().await;
    let audit = audit?;
    if format == Format::Json {
        println!("{}", serde_json::to_string(&audit)?);
    }
    if let Some(violation) = audit.first_violation() {
        return Err(fail(Exit::BrokenBooks, format!("the ledger at {shown} breaks an invariant: {violation}")));
    }
    if format == Format::Json {
        return Ok(());
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

/// `wasmpay pay`: sends the payment as docs/protocol.md tells a client to (the same id again
/// while the answer is not final, for at most [`client::PAY_RETRY_BOUND`]), then prints the
/// outcome under the payment's id; a payment without a final answer names its id in the
/// error, so an operator can look it up or send it again.
async fn pay(args: PayArgs, format: Format) -> anyhow::Result<()> {
    let currency = args.currency;
    let amount = match (&args.amount, args.amount_minor) {
        (Some(major), _) => {
            let minor = parse_major(major, currency.exponent())
                .map_err(|why| fail(Exit::Refused, format!("--amount: {why}")))?;
            u64::try_from(minor)
                .ok()
                .filter(|minor| *minor > 0)
                .ok_or_else(|| fail(Exit::Refused, format!("--amount: {major} is not positive")))?
        }
        (None, Some(minor)) => minor,
        (None, None) => return Err(fail(Exit::Refused, "give --amount (major units) or --amount-minor")),
    };
    let client = async_nats::connect(&args.nats)
        .await
        .with_context(|| format!("connecting to NATS at {}", client::shown_nats(&args.nats)))?;
    let payer = &args.from;
    let subject = if args.submit {
        format!("{}.{payer}", subjects::SUBMIT_PREFIX)
    } else {
        let info = cluster_info(&client).await?;
        subjects::pay(Partitioner::new(info.partitions)?.partition_of(payer), payer.as_str())
    };
    let id = args.id.unwrap_or_else(random_id);
    let details: BTreeMap<String, String> = args.details.into_iter().collect();
    let mut payment = json!({"version": PROTOCOL_VERSION, "id": id, "payer": payer.as_str(), "payee": args.to.as_str(),
                             "amount": amount, "currency": currency.code(), "method": args.method, "details": details});
    if let Some(counter) = args.counter_currency {
        payment["counter_currency"] = json!(counter.code());
    }
    if let Some(quote) = args.quote {
        payment["quote"] = json!(quote);
    }
    // The client's span: with an OTLP endpoint set, the root of the payment's trace.
    let span = tracing::info_span!("wasmpay pay", payment = %id, subject = %subject);
    let paid = client::pay(&client, &subject, payment.to_string().into()).instrument(span).await;
    let (reply, retries) = paid.map_err(|error| {
        fail(
            Exit::Retryable,
            format!(
                "payment {id} has no final answer after {} s ({error}): nothing may have moved, or it may have; send \
                 it again with --id {id}, which is safe",
                client::PAY_RETRY_BOUND.as_secs()
            ),
        )
    })?;
    let parsed: Reply = serde_json::from_str(&reply).with_context(|| format!("reading the reply {reply}"))?;
    match format {
        Format::Json => println!("{reply}"),
        Format::Table => print!("{}", described(&parsed, currency, retries)),
    }
    match parsed.status {
        Status::Approved => Ok(()),
        status => Err(fail(Exit::Refused, format!("payment {id} {}: {}", status.as_str(), parsed.code.as_str()))),
    }
}

/// `wasmpay quote`: one request on `wasmpay.fx.quote` (a quote changes nothing, so there is
/// nothing to retry with the same id: ask again).
async fn quote(args: QuoteArgs, format: Format) -> anyhow::Result<()> {
    let currency = args.currency;
    let minor = parse_major(&args.amount, currency.exponent())
        .map_err(|why| fail(Exit::Refused, format!("--amount: {why}")))?;
    let client = async_nats::connect(&args.nats)
        .await
        .with_context(|| format!("connecting to NATS at {}", client::shown_nats(&args.nats)))?;
    let ask = json!({"payer": args.from.as_str(), "payee": args.to.as_str(), "amount": minor,
                     "currency": currency.code(), "counter_currency": args.counter_currency.code()});
    let reply = client::request(&client, subjects::FX_QUOTE, ask.to_string()).await?;
    let parsed: Reply = serde_json::from_str(&reply).with_context(|| format!("reading the reply {reply}"))?;
    if format == Format::Json {
        println!("{reply}");
    }
    let Some(quote) = parsed.quote else {
        let exit = if parsed.status == Status::Error { Exit::Retryable } else { Exit::Refused };
        let why = parsed
            .reason
            .map_or_else(|| parsed.code.as_str().to_owned(), |reason| format!("{}: {reason}", parsed.code.as_str()));
        return Err(fail(exit, format!("no quote ({why}): {}", parsed.message)));
    };
    if format == Format::Table {
        let counter = quote.counter_currency;
        println!("quote {}", quote.id);
        println!(
            "  {} pays {} at {} (by {})",
            amount(quote.amount.0, Some(currency.exponent()), currency.code()),
            amount(quote.counter_amount.0, Some(counter.exponent()), counter.code()),
            quote.rate,
            quote.fx_plugin
        );
        println!("  until {} UTC; pay with: wasmpay pay ... --quote {}", utc(quote.expires_at_ms), quote.id);
    }
    Ok(())
}

/// A payment's reply for people: its outcome, then what moved.
fn described(reply: &Reply, currency: Currency, retries: u32) -> String {
    let id = reply.id.as_deref().unwrap_or("?");
    let status = reply.status.as_str();
    let why = match (&reply.reason, reply.code) {
        (Some(reason), code) => format!("{}: {reason}", code.as_str()),
        (None, code) => code.as_str().to_owned(),
    };
    let mut out = format!("payment {id}: {} ({why})\n", tinted(status, status));
    if reply.status != Status::Approved {
        out.push_str(&format!("  {}\n", reply.message));
    }
    let money =
        |minor: u64| amount(i64::try_from(minor).unwrap_or(i64::MAX), Some(currency.exponent()), currency.code());
    if let Some(minor) = reply.amount {
        let mut line = format!("  {}", money(minor));
        if let (Some(fee), Some(bearer)) = (reply.fee, reply.fee_bearer) {
            line.push_str(&format!(", fee {} borne by the {}", money(fee), bearer.as_str()));
        }
        out.push_str(&line);
        out.push('\n');
    }
    if let Some(conversion) = &reply.conversion {
        let exponent = conversion.currency.parse::<Currency>().ok().map(Currency::exponent);
        let paid = amount(i64::try_from(conversion.amount).unwrap_or(i64::MAX), exponent, &conversion.currency);
        out.push_str(&format!("  the payee is paid {paid} at {}\n", conversion.rate));
    }
    if !reply.plugins.is_empty() {
        out.push_str(&format!("  decided by {}\n", reply.plugins.join(", ")));
    }
    if retries > 0 {
        out.push_str(&format!("  sent {} times with the same id before the answer was final\n", retries + 1));
    }
    out
}

async fn account(command: AccountCommand, format: Format) -> anyhow::Result<()> {
    let (api, answer) = match command {
        AccountCommand::Statement { id, limit, after, from_ms, to_ms, json, api } => {
            let query = StatementQuery { limit, after, from_ms, to_ms };
            return statement(&id, &query, json || format == Format::Json, &api).await;
        }
        AccountCommand::Open { id, currency, floor, api } => {
            let exponent = exponent_of(&api, &currency).await?;
            let floor = parse_major(&floor, exponent).map_err(|why| fail(Exit::Refused, format!("--floor: {why}")))?;
            let body = json!({"id": id, "currency": currency, "floor": floor});
            let answer = call(&api, hyper::Method::POST, "/v1/accounts", Some(body)).await?;
            (api, answer)
        }
        AccountCommand::Show { id, api } => {
            let answer = call(&api, hyper::Method::GET, &format!("/v1/accounts/{}", percent_encode(&id)), None).await?;
            (api, answer)
        }
        AccountCommand::Deposit { id, amount, amount_minor, deposit_id, api } => {
            let path = format!("/v1/accounts/{}", percent_encode(&id));
            let account = call(&api, hyper::Method::GET, &path, None).await?;
            let minor = match (amount, amount_minor) {
                (Some(major), _) => {
                    let exponent = account_exponent(&account)?;
                    let minor =
                        parse_major(&major, exponent).map_err(|why| fail(Exit::Refused, format!("--amount: {why}")))?;
                    u64::try_from(minor)
                        .map_err(|_| fail(Exit::Refused, format!("--amount: {major} is not positive")))?
                }
                (None, Some(minor)) => minor,
                (None, None) => return Err(fail(Exit::Refused, "give --amount (major units) or --amount-minor")),
            };
            let deposit_id = deposit_id.unwrap_or_else(random_id);
            let body = json!({"id": deposit_id, "amount": minor});
            // A deposit without a final answer may have landed: sent again with its id, it
            // lands once.
            call(&api, hyper::Method::POST, &format!("{path}/deposits"), Some(body)).await.with_context(|| {
                format!("deposit {deposit_id} (send it again with --deposit-id {deposit_id}, which is safe)")
            })?;
            // What a person wants to see after a deposit is the balance it made.
            let answer = call(&api, hyper::Method::GET, &path, None).await?;
            if format == Format::Table {
                println!("deposit {deposit_id}");
            }
            (api, answer)
        }
    };
    let _ = api;
    match format {
        Format::Json => println!("{answer}"),
        Format::Table => print!("{}", account_table(&answer)?),
    }
    Ok(())
}

/// The exponent of `unit`: an ISO 4217 currency's, or a registered asset's (from the node).
async fn exponent_of(api: &ApiArgs, unit: &str) -> anyhow::Result<u8> {
    if let Ok(currency) = unit.parse::<Currency>() {
        return Ok(currency.exponent());
    }
    let assets = call(api, hyper::Method::GET, "/v1/assets", None).await?;
    assets["assets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|asset| asset["code"].as_str() == Some(unit))
        .and_then(|asset| asset["exponent"].as_u64())
        .and_then(|exponent| u8::try_from(exponent).ok())
        .ok_or_else(|| fail(Exit::Refused, format!("`{unit}` is neither an ISO 4217 currency nor a registered asset")))
}

/// The exponent the node gave with an account.
fn account_exponent(account: &Value) -> anyhow::Result<u8> {
    account["exponent"]
        .as_u64()
        .and_then(|exponent| u8::try_from(exponent).ok())
        .with_context(|| format!("the node gave no exponent for account {account}"))
}

/// An account for people: one row, amounts in major units of its unit.
fn account_table(account: &Value) -> anyhow::Result<String> {
    let unit = account["currency"].as_str().unwrap_or("?");
    let exponent = account_exponent(account).ok();
    let money = |key: &str| account[key].as_i64().map_or_else(|| "-".to_owned(), |minor| amount(minor, exponent, unit));
    let mut table = Table::new(["account", "kind", "posted", "held", "available", "floor"]);
    table.row(vec![
        account["id"].as_str().unwrap_or("?").to_owned(),
        account["kind"].as_str().unwrap_or("?").to_owned(),
        money("balance"),
        money("held"),
        money("available"),
        if account["floor"].is_null() { "none".to_owned() } else { money("floor") },
    ]);
    Ok(table.render())
}

async fn asset(command: AssetCommand, format: Format) -> anyhow::Result<()> {
    let (answer, assets) = match command {
        AssetCommand::Register { code, exponent, name, api } => {
            let body = json!({"code": code, "exponent": exponent, "name": name});
            let answer = call(&api, hyper::Method::POST, "/v1/assets", Some(body)).await?;
            (answer.clone(), vec![answer])
        }
        AssetCommand::List { api } => {
            let answer = call(&api, hyper::Method::GET, "/v1/assets", None).await?;
            let assets = answer["assets"].as_array().cloned().unwrap_or_default();
            (answer, assets)
        }
    };
    if format == Format::Json {
        println!("{answer}");
        return Ok(());
    }
    let mut table = Table::new(["asset", "exponent", "name", "registered (UTC)"]);
    for asset in assets {
        table.row(vec![
            asset["code"].as_str().unwrap_or("?").to_owned(),
            asset["exponent"].as_u64().map_or_else(|| "?".to_owned(), |exponent| exponent.to_string()),
            asset["name"].as_str().unwrap_or_default().to_owned(),
            utc(asset["created_at_ms"].as_i64().unwrap_or_default()),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

async fn client_key(command: ClientKeyCommand, format: Format) -> anyhow::Result<()> {
    let answer = match &command {
        ClientKeyCommand::Issue { name, api } => {
            call(api, hyper::Method::POST, "/v1/client-keys", Some(json!({"name": name}))).await?
        }
        ClientKeyCommand::List { api } => call(api, hyper::Method::GET, "/v1/client-keys", None).await?,
        ClientKeyCommand::Revoke { id, api } => {
            call(api, hyper::Method::DELETE, &format!("/v1/client-keys/{}", percent_encode(id)), None).await?
        }
    };
    if format == Format::Json {
        println!("{answer}");
        return Ok(());
    }
    if let Some(secret) = answer["secret"].as_str() {
        println!("secret (shown this once): {secret}");
    }
    // A list answers `{"keys": [...]}`; an issue or a revocation answers the one key.
    let keys = answer["keys"].as_array().cloned().unwrap_or_else(|| vec![answer.clone()]);
    let mut table = Table::new(["key", "name", "issued (UTC)", "revoked (UTC)"]);
    for key in keys {
        table.row(vec![
            key["id"].as_str().unwrap_or("?").to_owned(),
            key["name"].as_str().unwrap_or_default().to_owned(),
            utc(key["created_at_ms"].as_i64().unwrap_or_default()),
            key["revoked_at_ms"].as_i64().map_or_else(|| "-".to_owned(), utc),
        ]);
    }
    print!("{}", table.render());
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
    let get = |path: String| async move { call(api, hyper::Method::GET, &path, None).await };
    let encoded = percent_encode(id);
    let mut path = format!("/v1/accounts/{encoded}/entries?limit={}", query.limit);
    for (name, value) in [("from_ms", query.from_ms), ("to_ms", query.to_ms)] {
        if let Some(value) = value {
            path.push_str(&format!("&{name}={value}"));
        }
    }
    if let Some(after) = &query.after {
        path.push_str(&format!("&after={}", percent_encode(after)));
    }
    let account = get(format!("/v1/accounts/{encoded}")).await?;
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
    let major = |field: &Value| in_major(field.as_i64().unwrap_or_default());
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
