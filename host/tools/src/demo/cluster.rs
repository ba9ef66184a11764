//! `wasmpay demo --nodes N`: the demo on a cluster. N `wasmpay serve` processes share a private
//! NATS server and a fresh PostgreSQL schema; clients pay with the retry rule of
//! docs/protocol.md while the last node is killed with SIGKILL a third of the way through, and
//! the summary ends with what a client was told against what the ledger holds.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;

use super::{DemoArgs, Plan, fund_accounts, funds, plan, print_summary, summarize};
use crate::nats::PrivateNats;
use crate::postgres::PgServer;
use wasmpay_ledger::Ledger;
use wasmpay_node::client::{ClientError, cluster_info, http_call, pay};
use wasmpay_node::cluster::ClusterView;
use wasmpay_protocol::money::Currency;
use wasmpay_protocol::money::FeeBearer;
use wasmpay_protocol::routing::{AccountId, Partitioner, subjects};
use wasmpay_protocol::{Reply, Status};

/// How long the cluster may take to give every partition one owner (at start, and after the
/// kill: a lease TTL, 3 s by default, and a round).
const SETTLE_BOUND: Duration = Duration::from_secs(30);

/// One `wasmpay serve` child; killed when dropped.
struct Member {
    name: String,
    child: Child,
    api: String,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Member {
    fn spawn(nats: &str, db: &str, name: &str, token: &str, logs: &Path) -> anyhow::Result<Member> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let http = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
        let child = Command::new(std::env::current_exe().context("finding this program")?)
            .args(["serve", "--nats", nats, "--db", db, "--http", &http, "--node-id", name])
            .env("WASMPAY_ADMIN_TOKEN", token)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting wasmpay serve")?;
        Ok(Member { name: name.to_owned(), child, api: format!("http://{http}") })
    }

    async fn view(&self, token: &str) -> Option<ClusterView> {
        let (status, body) =
            http_call(hyper::Method::GET, &format!("{}/v1/cluster", self.api), token, None).await.ok()?;
        if !status.is_success() {
            return None;
        }
        serde_json::from_str(&body).ok()
    }
}

/// Waits until `members` between them own every partition once, each naming exactly the
/// others as live; each one's partitions.
async fn settled(members: &[&Member], token: &str, partitions: u32) -> anyhow::Result<BTreeMap<String, usize>> {
    let started = Instant::now();
    let names: Vec<&str> = members.iter().map(|member| member.name.as_str()).collect();
    loop {
        let mut owned = BTreeMap::new();
        let mut owners: BTreeMap<u32, usize> = BTreeMap::new();
        let mut agreed = true;
        for member in members {
            let Some(view) = member.view(token).await else {
                agreed = false;
                continue;
            };
            agreed &= view.members.iter().map(|live| live.node.as_str()).eq(names.iter().copied());
            for partition in &view.owned {
                *owners.entry(*partition).or_default() += 1;
            }
            owned.insert(member.name.clone(), view.owned.len());
        }
        if agreed && owners.len() == partitions as usize && owners.values().all(|count| *count == 1) {
            return Ok(owned);
        }
        if started.elapsed() > SETTLE_BOUND {
            bail!("the cluster did not give every partition one owner within {SETTLE_BOUND:?}: {owned:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn shares(owned: &BTreeMap<String, usize>) -> String {
    owned.iter().map(|(node, count)| format!("{node} {count}")).collect::<Vec<_>>().join(", ")
}

/// Runs the cluster demo.
pub(super) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let workdir = tempfile::tempdir().context("creating a temporary directory")?;
    let (nats_url, _private_server) = match &args.nats {
        Some(url) => (url.clone(), None),
        None => {
            let server = PrivateNats::start(workdir.path()).context("starting a private nats-server")?;
            (server.url.clone(), Some(server))
        }
    };
    println!("nats:    {nats_url}");
    let postgres = PgServer::connect(&args.postgres, "wasmpay_demo").await?;
    let db = postgres.ledger_url();
    println!("ledger:  {db}");
    let outcome = run_on(&args, &nats_url, &db, workdir.path()).await;
    if let Err(error) = postgres.drop_scratch().await {
        eprintln!("warning: could not drop the demo's schema {}: {error:#}", postgres.schema());
    }
    outcome
}

async fn run_on(args: &DemoArgs, nats_url: &str, db: &str, workdir: &Path) -> anyhow::Result<()> {
    let ledger = Ledger::open(db).await.context("opening the ledger")?;
    let euro: Currency = "EUR".parse()?;
    fund_accounts(&ledger, euro).await?;
    let token = format!("demo-{}", std::process::id());
    let mut members = Vec::new();
    for index in 1..=args.nodes {
        members.push(Member::spawn(nats_url, db, &format!("demo-n{index}"), &token, workdir)?);
    }
    let client = async_nats::connect(nats_url).await?;
    let info = wait_for_cluster_info(&client).await?;
    let partitioner = Partitioner::new(info.partitions)?;
    let everyone: Vec<&Member> = members.iter().collect();
    let started = Instant::now();
    let owned = settled(&everyone, &token, info.partitions).await?;
    println!(
        "cluster: {} nodes own the {} partitions after {:.1} s: {}\n",
        members.len(),
        info.partitions,
        started.elapsed().as_secs_f64(),
        shares(&owned)
    );

    let answered = Arc::new(AtomicU32::new(0));
    let retries = Arc::new(AtomicU32::new(0));
    let plans: Vec<Plan> = (0..args.payments).map(plan).collect();
    let paying = futures::stream::iter(plans)
        .map(|plan| {
            let (client, answered, retries) = (client.clone(), answered.clone(), retries.clone());
            async move {
                let subject = subjects::pay(partitioner.partition_of(&plan.payer), plan.payer.as_str());
                let reply = pay(&client, &subject, Bytes::from(plan.body.clone())).await;
                answered.fetch_add(1, Ordering::Relaxed);
                let reply = reply.map(|(reply, retried)| {
                    retries.fetch_add(retried, Ordering::Relaxed);
                    reply
                });
                (plan, reply)
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect::<Vec<(Plan, Result<String, ClientError>)>>();
    let (victim, survivors) = members.split_last().context("at least two nodes")?;
    let survivors: Vec<&Member> = survivors.iter().collect();
    let killing = async {
        while answered.load(Ordering::Relaxed) < args.payments / 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let held = victim.view(&token).await.map(|view| view.owned.len()).unwrap_or_default();
        let paid = answered.load(Ordering::Relaxed);
        let killed = Command::new("kill").args(["-KILL", &victim.child.id().to_string()]).status();
        let killed_at = Instant::now();
        anyhow::ensure!(killed.is_ok_and(|status| status.success()), "could not kill {}", victim.name);
        let owned = settled(&survivors, &token, info.partitions).await?;
        Ok((held, paid, killed_at.elapsed(), owned))
    };
    let (replies, killed) = tokio::join!(paying, killing);
    let (held, paid, moved_in, owned) = killed?;
    println!(
        "killed {} with SIGKILL after {paid} payments were answered; its {held} partitions had new owners {:.1} s \
         later: {}\n",
        victim.name,
        moved_in.as_secs_f64(),
        shares(&owned)
    );
    let told: Vec<Told> = replies
        .iter()
        .map(|(plan, reply)| Told {
            id: plan.id(),
            payer: plan.payer.clone(),
            reply: reply.as_ref().ok().and_then(|reply| serde_json::from_str(reply).ok()),
        })
        .collect();
    let (tally, replays) = summarize(&client, partitioner, replies).await?;
    let audit = ledger.audit().await?;
    print_summary(&tally, replays, &audit, &ledger, euro).await?;
    let (lost, doubled) = lost_and_doubled(&ledger, &told).await?;
    println!(
        "clients retried {} times while partitions moved; lost {lost}, doubled {doubled}",
        retries.load(Ordering::Relaxed)
    );
    for member in &survivors {
        let _ = Command::new("kill").args(["-TERM", &member.child.id().to_string()]).status();
    }
    ledger.close().await;
    if !audit.is_balanced() || lost > 0 || doubled > 0 {
        bail!("the cluster lost or doubled payments, or the books do not balance");
    }
    Ok(())
}

/// The nodes answer `wasmpay.cluster.info` once they are up.
async fn wait_for_cluster_info(client: &async_nats::Client) -> anyhow::Result<wasmpay_protocol::ClusterInfo> {
    let started = Instant::now();
    loop {
        match cluster_info(client).await {
            Ok(info) => return Ok(info),
            Err(error) if started.elapsed() > SETTLE_BOUND => return Err(error.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// What a client was told about one payment.
struct Told {
    id: String,
    payer: AccountId,
    reply: Option<Reply>,
}

/// What the clients were told against what the ledger holds: payments answered `approved`
/// that the ledger does not hold as approved (lost); and payments the ledger holds as approved
/// that no client was told were, plus payers whose balance is not their funding less what
/// their approved payments add up to (doubled).
async fn lost_and_doubled(ledger: &Ledger, told: &[Told]) -> anyhow::Result<(usize, usize)> {
    let (mut lost, mut doubled) = (0, 0);
    let mut debits: BTreeMap<&AccountId, i64> = BTreeMap::new();
    for payment in told {
        let approved_reply = payment.reply.as_ref().filter(|reply| reply.status == Status::Approved);
        let stored = ledger.payment(&payment.id).await?;
        let approved_stored = stored.is_some_and(|stored| stored.status == "approved");
        lost += usize::from(approved_reply.is_some() && !approved_stored);
        doubled += usize::from(approved_stored && approved_reply.is_none());
        let debit = debits.entry(&payment.payer).or_default();
        if let Some(reply) = approved_reply {
            let fee = if reply.fee_bearer == Some(FeeBearer::Payer) { reply.fee.unwrap_or(0) } else { 0 };
            *debit += i64::try_from(reply.amount.unwrap_or(0) + fee)?;
        }
    }
    for (payer, debit) in debits {
        let account = ledger.account(payer).await?.context("a payer of the demo")?;
        doubled += usize::from(account.balance.0 != funds(payer.as_str()) - debit);
    }
    Ok((lost, doubled))
}
