//! What the multi-process tests share: `wasmpay serve` processes ([`Member`]), a funded
//! ledger, clients paying all along ([`Load`]) as docs/protocol.md tells them to, and the
//! check that every answered payment was applied exactly once.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use wasmpay_ledger::{Ledger, NewAccount};
use wasmpay_node::cluster::ClusterView;
use wasmpay_protocol::money::MinorUnits;
use wasmpay_protocol::routing::{AccountId, Partitioner, subjects};
use wasmpay_protocol::{PaymentId, Reply, Status};
use wasmpay_tests::{Backend, NatsCluster, NatsServer, card};

pub mod browser;

pub const BINARY: &str = env!("CARGO_BIN_EXE_wasmpay");
pub const TOKEN: &str = "cluster-secret";
pub const PARTITIONS: u32 = 64;
/// The default lease TTL is 3 s and a node looks every 0.5 s: every partition has one owner
/// again about 3.5 s after its owner died. The bound leaves room for a loaded 2-core machine.
pub const REBALANCE_BOUND: Duration = Duration::from_secs(10);
/// After a NATS server of three restarts: JetStream's leader elections, then a lease TTL.
pub const NATS_RESTART_BOUND: Duration = Duration::from_secs(20);
pub const PAYERS: usize = 48;
pub const FUNDS: u64 = 10_000_000;
pub const AMOUNT: u64 = 100;

/// A `wasmpay serve` process; killed when dropped.
pub struct Member {
    pub name: String,
    pub child: Child,
    pub http: String,
    pub log: std::path::PathBuf,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what each node said last.
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of {}:", self.name);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

impl Member {
    pub fn start(nats: &NatsServer, db: &str, name: &str, logs: &Path) -> Member {
        Member::start_with(&nats.url(), db, name, logs, &[])
    }

    pub fn start_with(nats: &str, db: &str, name: &str, logs: &Path, extra: &[&str]) -> Member {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let http = format!("127.0.0.1:{port}");
        let log_path = logs.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(BINARY)
            .args(["serve", "--nats", nats, "--db", db, "--http", &http, "--node-id", name])
            .args(extra)
            .env("WASMPAY_ADMIN_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !wasmpay_tests::answers(http.parse().unwrap()) {
            assert!(started.elapsed() < Duration::from_secs(60), "{name} did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Member { name: name.to_owned(), child, http, log: log_path }
    }

    pub async fn get(&self, path: &str) -> Option<String> {
        let url = format!("http://{}{path}", self.http);
        match wasmpay_node::client::http_call(Method::GET, &url, TOKEN, None).await {
            Ok((status, body)) if status.is_success() => Some(body),
            _ => None,
        }
    }

    pub async fn view(&self) -> Option<ClusterView> {
        serde_json::from_str(&self.get("/v1/cluster").await?).ok()
    }

    /// The sum of every series of counter or gauge `name`, whatever their labels.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self.get("/metrics").await.unwrap_or_default();
        text.lines()
            .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }
}

/// Waits until `members` between them serve every partition exactly once (as each node says
/// in `/v1/cluster`) and each names only `members` as live; how long that took.
pub async fn converged(members: &[&Member]) -> Duration {
    converged_within(members, REBALANCE_BOUND).await
}

/// [`converged`] with another bound.
pub async fn converged_within(members: &[&Member], bound: Duration) -> Duration {
    let started = Instant::now();
    let names: BTreeSet<&str> = members.iter().map(|member| member.name.as_str()).collect();
    loop {
        let mut owners: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
        let mut agreed = true;
        for member in members {
            let Some(view) = member.view().await else {
                agreed = false;
                continue;
            };
            let live: BTreeSet<&str> = view.members.iter().map(|live| live.node.as_str()).collect();
            agreed &= live == names;
            for partition in view.owned {
                owners.entry(partition).or_default().push(&member.name);
            }
        }
        if agreed && owners.len() == PARTITIONS as usize && owners.values().all(|owners| owners.len() == 1) {
            return started.elapsed();
        }
        assert!(started.elapsed() < bound, "no single owner per partition after {bound:?}: {owners:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ledger with `PAYERS` funded payers and a shop, opened again to read only (without the
/// SQLite node lock), so the nodes the test starts can serve it.
pub async fn funded_ledger(db: &str) -> Ledger {
    let ledger = Ledger::open(db).await.unwrap();
    let eur = "EUR".parse().unwrap();
    for account in (0..PAYERS).map(payer).chain(["shop".to_owned()]) {
        let new = NewAccount { id: AccountId::new(account.as_str()).unwrap(), currency: eur, floor: MinorUnits(0) };
        let opened = ledger.open_account(&new, 0).await.unwrap();
        if account != "shop" {
            ledger
                .deposit(&PaymentId::new(format!("fund-{account}")).unwrap(), &opened, MinorUnits(FUNDS as i64), 0)
                .await
                .unwrap();
        }
    }
    ledger.close().await;
    Ledger::open_existing(db).await.unwrap()
}

pub fn payer(index: usize) -> String {
    format!("payer-{index}")
}

/// Clients paying all along, each retrying a payment with the same id until it is answered
/// with a final status, as docs/protocol.md tells them to.
pub struct Load {
    stop: Arc<AtomicBool>,
    retries: Arc<AtomicU64>,
    clients: Vec<tokio::task::JoinHandle<Vec<Paid>>>,
}

/// One payment a [`Load`] client was answered for, with when it was sent and how long the
/// answer took (retries included).
#[derive(Debug)]
pub struct Paid {
    pub id: String,
    pub from: usize,
    pub reply: Reply,
    pub sent: Instant,
    pub took: Duration,
}

impl Load {
    pub async fn start(nats: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let retries = Arc::new(AtomicU64::new(0));
        let partitioner = Partitioner::new(PARTITIONS).unwrap();
        let mut tasks = Vec::new();
        for client_index in 0..clients {
            let client = connect(nats).await;
            let (stop, retries) = (stop.clone(), retries.clone());
            tasks.push(tokio::spawn(async move {
                let mut answered = Vec::new();
                let mut sequence = 0;
                while !stop.load(Ordering::Relaxed) {
                    sequence += 1;
                    let from = (client_index * 7 + sequence) % PAYERS;
                    let id = format!("c{client_index}-{sequence}");
                    let sent = Instant::now();
                    let reply = pay_until_answered(&client, &partitioner, &id, from, &retries).await;
                    answered.push(Paid { id, from, reply, sent, took: sent.elapsed() });
                }
                answered
            }));
        }
        Load { stop, retries, clients: tasks }
    }

    pub async fn finish(self) -> (Vec<(String, usize, Reply)>, u64) {
        let (paid, retries) = self.finish_timed().await;
        (paid.into_iter().map(|paid| (paid.id, paid.from, paid.reply)).collect(), retries)
    }

    /// Stops the clients; every payment they were answered for, with its timing.
    pub async fn finish_timed(self) -> (Vec<Paid>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut answered = Vec::new();
        for client in self.clients {
            answered.extend(client.await.unwrap());
        }
        (answered, self.retries.load(Ordering::Relaxed))
    }
}

/// The longest time between `from` and `to` in which no payment of `paid` was answered.
pub fn longest_gap(paid: &[Paid], from: Instant, to: Instant) -> Duration {
    let mut done: Vec<Instant> =
        paid.iter().map(|paid| paid.sent + paid.took).filter(|at| (from..to).contains(at)).collect();
    done.sort_unstable();
    done.push(to);
    done.iter().scan(from, |last, at| Some(at.duration_since(std::mem::replace(last, *at)))).max().unwrap_or_default()
}

/// Pays until the answer is final: no responder (a partition between owners), no reply in
/// time, or a reply with status `error` are retried with the same id.
pub async fn pay_until_answered(
    client: &async_nats::Client,
    partitioner: &Partitioner,
    id: &str,
    from: usize,
    retries: &AtomicU64,
) -> Reply {
    let from = payer(from);
    let subject = subjects::pay(partitioner.partition_of(&AccountId::new(from.as_str()).unwrap()), &from);
    let body = Bytes::from(card(id, &from, "shop", AMOUNT).to_string());
    let started = Instant::now();
    loop {
        let sent = tokio::time::timeout(Duration::from_secs(2), client.request(subject.clone(), body.clone())).await;
        if let Ok(Ok(message)) = sent {
            let reply: Reply = serde_json::from_slice(&message.payload).unwrap();
            if reply.status != Status::Error {
                return reply;
            }
        }
        retries.fetch_add(1, Ordering::Relaxed);
        assert!(started.elapsed() < Duration::from_secs(60), "{id} was never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every answered payment is approved and in the ledger once, nothing else was paid, each
/// payer's balance is exactly its funds less what it paid, and the books balance.
pub async fn assert_paid_exactly_once(ledger: &Ledger, answered: &[(String, usize, Reply)]) {
    let mut paid = vec![0_u64; PAYERS];
    for (id, from, reply) in answered {
        assert_eq!(reply.status, Status::Approved, "{id}: {reply:?}");
        let stored = ledger.payment(id).await.unwrap().unwrap_or_else(|| panic!("{id} is not in the ledger"));
        assert_eq!(stored.status, "approved", "{id}");
        paid[*from] += AMOUNT;
    }
    for (index, paid) in paid.iter().enumerate() {
        let account = ledger.account(&AccountId::new(payer(index)).unwrap()).await.unwrap().unwrap();
        assert_eq!(account.balance.0, (FUNDS - paid) as i64, "{}", payer(index));
    }
    let audit = ledger.audit().await.unwrap();
    assert!(audit.first_violation().is_none(), "{audit:?}");
    let approved = audit.payments_by_outcome.iter().filter(|(outcome, _)| outcome.starts_with("payment approved"));
    let approved = approved.map(|(_, count)| count);
    assert_eq!(approved.sum::<u64>(), answered.len() as u64, "payments in the ledger that no client was answered for");
}

pub fn verify(db: &str) {
    let output = Command::new(BINARY).args(["ledger", "verify", "--db", db]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// A client of one server, or of a cluster given as comma-separated URLs.
pub async fn connect(urls: &str) -> async_nats::Client {
    let servers: Vec<async_nats::ServerAddr> = urls.split(',').map(|url| url.parse().unwrap()).collect();
    async_nats::connect(servers).await.unwrap()
}

/// Waits until the cluster's JetStream can place a stream on all three servers.
pub async fn jetstream_ready(client: &async_nats::Client) {
    let jetstream = async_nats::jetstream::new(client.clone());
    let started = Instant::now();
    loop {
        let probe = async_nats::jetstream::stream::Config {
            name: "PROBE".to_owned(),
            subjects: vec!["probe".to_owned()],
            num_replicas: 3,
            ..Default::default()
        };
        if jetstream.get_or_create_stream(probe).await.is_ok() {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "JetStream did not form a cluster in 30 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A three-server NATS cluster whose JetStream can place replicated streams, and a client.
pub async fn nats_cluster() -> (NatsCluster, async_nats::Client) {
    let nats = NatsCluster::start().expect("a three-server nats cluster");
    let client = connect(&nats.urls()).await;
    jetstream_ready(&client).await;
    (nats, client)
}

/// `text` as `wasmpay.toml` in `workdir`; its path, for `--config`.
pub fn write_config(workdir: &Path, text: &str) -> String {
    let path = workdir.join("wasmpay.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// What most tests start from: a private NATS server, a work directory, and a fresh ledger on
/// a backend with [`PAYERS`] funded payers and a shop.
pub struct Stage {
    pub nats: NatsServer,
    pub workdir: tempfile::TempDir,
    pub db: String,
    pub ledger: Ledger,
}

impl Stage {
    pub async fn new(backend: Backend) -> Stage {
        let nats = NatsServer::start(None).expect("nats-server");
        let workdir = tempfile::tempdir().unwrap();
        let db = backend.fresh_database(workdir.path());
        let ledger = funded_ledger(&db).await;
        Stage { nats, workdir, db, ledger }
    }
}
