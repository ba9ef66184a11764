//! `wasmpay demo`: the main job on embedded defaults. Starts a node (SQLite in a temporary
//! directory, a private NATS server), opens and
//! funds accounts, pays a few hundred payments over NATS across both built-in methods (some
//! declined on purpose), replays some, walks one customer's payments through their lifecycle
//! (an authorization captured in part, one voided, one expired, a partial refund, a
//! two-currency settlement), pays by mobile money in shillings, pays across a border from
//! euros to dollars with a quote, and prints what happened and whether the books balance.
//! `--nodes N` does the same on a cluster (`cluster`): N `serve` processes on PostgreSQL, one
//! of which is killed mid-run.

mod cluster;
mod cross_border;
mod lifecycle;
mod mobile;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::json;

use wasmpay_ledger::{Audit, Ledger, NewAccount, external_account, fee_account};
use wasmpay_node::client::{ClientError, cluster_info, request};
use wasmpay_node::clock;
use wasmpay_node::config::Config;
use wasmpay_node::holds::HoldSettings;
use wasmpay_node::node::{Node, NodeSettings};
use wasmpay_protocol::money::{Currency, MinorUnits};
use wasmpay_protocol::routing::{AccountId, Partitioner, subjects};
use wasmpay_protocol::{PROTOCOL_VERSION, PaymentId, Reply};

use crate::nats::PrivateNats;

/// Options of `wasmpay demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Payments to send.
    #[arg(long, default_value_t = 300)]
    payments: u32,
    /// Payments in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Use this NATS server (with JetStream) instead of starting a private one. (Not
    /// `NATS_URL`: the demo's payments belong on a server of their own unless asked.)
    #[arg(long)]
    nats: Option<String>,
    /// Run a cluster of this many `serve` processes on PostgreSQL (and a private NATS server),
    /// and kill one of them with SIGKILL a third of the way through.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    nodes: u32,
    /// The PostgreSQL server of `--nodes` (on this machine): the demo works in a fresh schema
    /// there and drops it at the end.
    #[arg(long, env = "WASMPAY_POSTGRES", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
}

const CUSTOMERS: u32 = 24;
/// Customers from this index on get only a little money, so some of their payments decline.
const FIRST_POOR_CUSTOMER: u32 = 20;
const SHOPS: [&str; 3] = ["shop-a", "shop-b", "shop-c"];
/// Every this many payments, one is sent twice with the same id to show idempotent replay.
const REPLAY_EVERY: u32 = 25;

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.nodes > 1 {
        return cluster::run(args).await;
    }
    let workdir = tempfile::tempdir().context("creating a temporary directory")?;
    let (nats_url, _private_server) = match args.nats {
        Some(url) => (url, None),
        None => nats(workdir.path())?,
    };
    let database_url = format!("sqlite://{}", workdir.path().join("demo.db").display());
    println!("ledger:  {database_url}");
    let settings = NodeSettings {
        nats_url: nats_url.clone(),
        database_url,
        http_address: SocketAddr::from(([127, 0, 0, 1], 0)),
        node_id: format!("demo-{}", std::process::id()),
        admin_token: Some(format!("demo-{}", std::process::id())),
        config: Config { holds: demo_holds(), plugins: [cross_border::fx_table()].into(), ..Config::default() },
        ..NodeSettings::new()
    };
    let node = Node::start(settings).await.context("starting the node")?;
    println!("node:    http://{} (metrics at /metrics)", node.http_address());
    let cluster = node.cluster();
    if cluster.owned.len() < cluster.partitions as usize {
        let holders: std::collections::BTreeSet<&str> =
            cluster.leases.iter().filter_map(|lease| lease.owner.as_deref()).collect();
        node.shutdown().await;
        bail!(
            "another node on {nats_url} holds {} of the {} partitions ({holders:?}): stop it, or run the demo on \
             a NATS server of its own (--nats)",
            cluster.partitions as usize - cluster.owned.len(),
            cluster.partitions
        );
    }
    let euro: Currency = "EUR".parse()?;
    fund_accounts(node.ledger(), euro).await?;

    let client = async_nats::connect(&nats_url).await?;
    let info = cluster_info(&client).await?;
    let partitioner = Partitioner::new(info.partitions)?;
    println!("cluster: {} partitions, hash {}, protocol v{}\n", info.partitions, info.hash, info.version);

    let plans: Vec<Plan> = (0..args.payments).map(plan).collect();
    let replies: Vec<(Plan, Result<String, ClientError>)> = futures::stream::iter(plans)
        .map(|plan| {
            let client = client.clone();
            async move {
                let subject = subjects::pay(partitioner.partition_of(&plan.payer), plan.payer.as_str());
                let reply = request(&client, &subject, plan.body.clone()).await;
                (plan, reply)
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    let (tally, replays) = summarize(&client, partitioner, replies).await?;
    lifecycle::run(&client, partitioner, node.ledger(), euro).await?;
    mobile::run(&client, partitioner, node.ledger()).await?;
    cross_border::run(&client, partitioner, node.ledger()).await?;
    let audit = node.ledger().audit().await?;
    print_summary(&tally, replays, &audit, node.ledger(), euro).await?;
    node.shutdown().await;
    if !audit.is_balanced() {
        bail!("the books do not balance: {audit:?}");
    }
    Ok(())
}

/// The demo node's holds: wallet authorizations lapse within the run, so its expiry is seen.
fn demo_holds() -> HoldSettings {
    HoldSettings {
        by_method: [("wallet".to_owned(), lifecycle::WALLET_EXPIRY_S)].into(),
        sweep_interval_ms: lifecycle::SWEEP_INTERVAL_MS,
        ..HoldSettings::default()
    }
}

/// A private NATS server in `workdir`: a deployment on 127.0.0.1:4222 is bound to its own
/// ledger (docs/cluster.md), and the demo's payments do not belong there anyway.
fn nats(workdir: &Path) -> anyhow::Result<(String, Option<PrivateNats>)> {
    let server = PrivateNats::start(workdir).context(
        "no nats-server could be started; install one (Debian: `apt-get install nats-server`) or point the \
         demo at a server with JetStream: --nats <url>",
    )?;
    println!("nats:    a private nats-server at {}", server.url);
    Ok((server.url.clone(), Some(server)))
}

fn customer(index: u32) -> String {
    format!("cust-{index:02}")
}

/// What a customer is funded with, in cents: the poor ones get only a little.
fn funds(customer: &str) -> i64 {
    let index: u32 = customer.trim_start_matches("cust-").parse().unwrap_or_default();
    if index < FIRST_POOR_CUSTOMER { 20_000 } else { 1_500 }
}

async fn fund_accounts(ledger: &Ledger, euro: Currency) -> anyhow::Result<()> {
    let now = clock::ledger_ms();
    for index in 0..CUSTOMERS {
        let id = AccountId::new(customer(index))?;
        let amount = funds(id.as_str());
        let account =
            ledger.open_account(&NewAccount { id, currency: euro.into(), floor: MinorUnits::ZERO }, now).await?;
        ledger.deposit(&PaymentId::new(format!("fund-{}", account.id))?, &account, MinorUnits(amount), now).await?;
    }
    for shop in SHOPS {
        let new = NewAccount { id: AccountId::new(shop)?, currency: euro.into(), floor: MinorUnits::ZERO };
        ledger.open_account(&new, now).await?;
    }
    println!(
        "accounts: {CUSTOMERS} customers (cust-00..cust-{:02}, 200.00 EUR each, the last {} only 15.00 EUR), {} shops",
        CUSTOMERS - 1,
        CUSTOMERS - FIRST_POOR_CUSTOMER,
        SHOPS.len()
    );
    Ok(())
}

/// One payment of the demo.
#[derive(Clone, Debug)]
struct Plan {
    index: u32,
    payer: AccountId,
    body: String,
}

impl Plan {
    /// The payment's id.
    fn id(&self) -> String {
        format!("demo-{:05}", self.index)
    }
}

/// A deterministic mix: mostly good card and wallet payments, and a known share of bad ones.
fn plan(index: u32) -> Plan {
    let payer = customer(index % CUSTOMERS);
    let payee = SHOPS[usize::try_from(index).unwrap_or_default() % SHOPS.len()];
    let spread = u64::from(index.wrapping_mul(2_654_435_761) % 1_000);
    let (method, amount, details) = match index % 10 {
        0..=4 => ("card", 500 + spread * 4, json!({"pan": "4242 4242 4242 4242", "expiry": "12/30"})),
        5 | 6 => ("wallet", 100 + spread * 2, json!({"wallet_id": format!("wal_{:08}", index)})),
        7 => ("card", 1_000 + spread, json!({"pan": "5555555555554444", "expiry": "01/24"})),
        8 => ("card", 1_000 + spread, json!({"pan": "4242424242424241", "expiry": "12/30"})),
        _ => ("wallet", 60_000, json!({"wallet_id": format!("wal_{:08}", index)})),
    };
    let id = format!("demo-{index:05}");
    let body = json!({"version": PROTOCOL_VERSION, "id": id, "payer": payer, "payee": payee,
                      "amount": amount, "currency": "EUR", "method": method, "details": details});
    Plan {
        index,
        payer: AccountId::new(payer).unwrap_or_else(|_| unreachable!("demo ids are valid")),
        body: body.to_string(),
    }
}

/// Replies by outcome, and (replays sent, replays identical).
async fn summarize(
    client: &async_nats::Client,
    partitioner: Partitioner,
    replies: Vec<(Plan, Result<String, ClientError>)>,
) -> anyhow::Result<(BTreeMap<String, u32>, (u32, u32))> {
    let mut tally = BTreeMap::new();
    let (mut replays, mut identical) = (0, 0);
    for (plan, reply) in replies {
        let reply = reply?;
        let parsed: Reply = serde_json::from_str(&reply).context("reading a reply")?;
        let reason = parsed.reason.as_deref().map(|reason| format!(" ({reason})")).unwrap_or_default();
        *tally.entry(format!("{:<9} {}{reason}", parsed.status.as_str(), parsed.code.as_str())).or_default() += 1;
        if plan.index % REPLAY_EVERY == 0 {
            let subject = subjects::pay(partitioner.partition_of(&plan.payer), plan.payer.as_str());
            let again = request(client, &subject, plan.body.clone()).await?;
            replays += 1;
            identical += u32::from(again == reply);
        }
    }
    Ok((tally, (replays, identical)))
}

async fn print_summary(
    tally: &BTreeMap<String, u32>,
    (replays, identical): (u32, u32),
    audit: &Audit,
    ledger: &Ledger,
    euro: Currency,
) -> anyhow::Result<()> {
    println!("{:<58} {:>6}", "outcome (status code (plugin reason))", "count");
    println!("{}", "-".repeat(65));
    for (outcome, count) in tally {
        println!("{outcome:<58} {count:>6}");
    }
    println!("{}", "-".repeat(65));
    println!("{:<58} {:>6}", "total", tally.values().sum::<u32>());
    println!("idempotent replays: {identical}/{replays} returned the identical reply\n");
    let balance = |id: AccountId| async move { ledger.account(&id).await.map(|a| a.map_or(0, |a| a.balance.0)) };
    let mut customers = 0_i64;
    for index in 0..CUSTOMERS {
        customers += balance(AccountId::new(customer(index))?).await?;
    }
    let mut rows = vec![("customers (24)".to_owned(), customers)];
    for shop in SHOPS {
        rows.push((shop.to_owned(), balance(AccountId::new(shop)?).await?));
    }
    rows.push(("fees (_fees_EUR)".into(), balance(fee_account(euro.into())).await?));
    rows.push(("external funding (_external_EUR)".into(), balance(external_account(euro.into())).await?));
    println!("{:<40} {:>14}", "balances", "EUR");
    for (name, minor_units) in &rows {
        println!("{name:<40} {:>14}", euro.format(*minor_units));
    }
    let fees = audit.fees_by_currency.get("EUR").copied().unwrap_or_default();
    println!("\nfees collected: {} EUR", euro.format(fees));
    let sum = audit.balance_sum_by_currency.get("EUR").copied().unwrap_or_default();
    let verdict = if audit.is_balanced() { "OK" } else { "FAILED" };
    println!(
        "conservation: sum of all EUR balances = {} ({} unbalanced payments, {} drifted accounts) -> {verdict}",
        euro.format(sum),
        audit.unbalanced_payments.len(),
        audit.drifted_accounts.len()
    );
    let sums: Vec<String> = audit.balance_sum_by_currency.iter().map(|(unit, sum)| format!("{unit} {sum}")).collect();
    println!("conservation per unit (minor units): {}", sums.join(", "));
    Ok(())
}
