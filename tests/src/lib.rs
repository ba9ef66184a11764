//! Test harness: a private `nats-server` on a free port ([`NatsServer`]) and a real node on a
//! fresh ledger (a SQLite file, or a PostgreSQL schema of its own: [`Backend`]), serving the
//! built-in plugins plus the `faulty` fixture, all built from source. It is test tooling: the
//! product's crates never depend on it.
//!
//! Nothing is skipped: if `nats-server` is missing, or PostgreSQL is unreachable for a test on
//! it, the test fails and says why.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use wasmpay_ledger::Ledger;
use wasmpay_node::config::Config;
use wasmpay_node::node::{Node, NodeSettings, builtin_plugins};
use wasmpay_plugin_host::PluginSource;
use wasmpay_protocol::Reply;
use wasmpay_protocol::routing::{AccountId, Partitioner, subjects};

mod nats;

pub use nats::{NatsCluster, NatsServer, NatsServerError, answers};

/// The admin token of every test node.
pub const TOKEN: &str = "test-admin-token";
/// How long a test waits for any one reply or event.
pub const WAIT: Duration = Duration::from_secs(10);

/// The ledger database a test node runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file in the test's directory.
    Sqlite,
    /// A fresh schema on the PostgreSQL server `WASMPAY_TEST_POSTGRES` (default
    /// `postgres://postgres@127.0.0.1:5432/test`); the ledger creates it.
    Postgres,
}

impl Backend {
    /// The URL of a fresh, empty ledger database for a test working in `workdir`.
    pub fn fresh_database(self, workdir: &Path) -> String {
        match self {
            Backend::Sqlite => format!("sqlite://{}", workdir.join("ledger.db").display()),
            Backend::Postgres => {
                let server = std::env::var("WASMPAY_TEST_POSTGRES")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
                // The work directory's path is unique on this machine while the test runs.
                let unique: String =
                    workdir.to_string_lossy().bytes().map(|byte| format!("{byte:02x}")).collect::<String>();
                format!(
                    "{server}?options[search_path]=node_test_{}_{}",
                    std::process::id(),
                    &unique[unique.len().saturating_sub(24)..]
                )
            }
        }
    }
}

/// Each named `async fn(Backend)` of the calling test file as a test on SQLite (in `sqlite::`)
/// and on PostgreSQL (in `postgres::`).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                super::$name($crate::Backend::Sqlite).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                super::$name($crate::Backend::Postgres).await
            })*
        }
    };
}

/// A node, its NATS server and a client.
#[allow(missing_debug_implementations)]
pub struct Harness {
    /// The node; `None` after [`Harness::stop`].
    pub node: Option<Node>,
    /// A client connection for the test.
    pub client: async_nats::Client,
    /// The node's partitioner.
    pub partitioner: Partitioner,
    /// The node's ledger (the same database).
    pub ledger: Ledger,
    /// The ledger's database URL, to reopen it after the node stopped.
    pub database_url: String,
    /// The node's NATS server; `None` after [`Harness::kill_nats`].
    nats: Option<NatsServer>,
    _workdir: tempfile::TempDir,
}

/// The repository's `examples/nats-server.conf` (the server-side partition mapping).
pub fn mapping_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/nats-server.conf")
}

impl Harness {
    /// A node with default configuration on a plain nats-server, on SQLite.
    pub async fn start() -> Harness {
        Harness::start_on(Backend::Sqlite).await
    }

    /// A node with default configuration on a plain nats-server, on `backend`.
    pub async fn start_on(backend: Backend) -> Harness {
        Harness::start_full(backend, Config::default(), None, |_| {}).await
    }

    /// A node with `config` on a plain nats-server, on `backend`.
    pub async fn start_on_with(backend: Backend, config: Config) -> Harness {
        Harness::start_full(backend, config, None, |_| {}).await
    }

    /// A node with `config` and whatever else `customize` sets, on a plain nats-server, on
    /// `backend`.
    pub async fn start_on_custom(
        backend: Backend,
        config: Config,
        customize: impl FnOnce(&mut NodeSettings),
    ) -> Harness {
        Harness::start_full(backend, config, None, customize).await
    }

    /// A node with `config`, on a nats-server started with `nats_config`.
    pub async fn start_with(config: Config, nats_config: Option<&Path>) -> Harness {
        Harness::start_custom(config, nats_config, |_| {}).await
    }

    /// A node with `config` and whatever else `customize` sets, on a nats-server started with
    /// `nats_config`.
    pub async fn start_custom(
        config: Config,
        nats_config: Option<&Path>,
        customize: impl FnOnce(&mut NodeSettings),
    ) -> Harness {
        Harness::start_full(Backend::Sqlite, config, nats_config, customize).await
    }

    async fn start_full(
        backend: Backend,
        config: Config,
        nats_config: Option<&Path>,
        customize: impl FnOnce(&mut NodeSettings),
    ) -> Harness {
        let nats = NatsServer::start(nats_config).expect("a nats-server is needed for the integration tests");
        let workdir = tempfile::tempdir().unwrap();
        let mut sources = builtin_plugins();
        sources.push(PluginSource::Builtin("faulty", wasmpay_plugin_artifacts::FAULTY, None));
        let mut settings = NodeSettings {
            nats_url: nats.url(),
            database_url: backend.fresh_database(workdir.path()),
            http_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            plugin_sources: sources,
            node_id: "test".into(),
            config,
            admin_token: Some(TOKEN.into()),
            ..NodeSettings::new()
        };
        customize(&mut settings);
        let partitioner = Partitioner::new(settings.partitions).unwrap();
        let database_url = settings.database_url.clone();
        let node = Node::start(settings).await.expect("node starts");
        let ledger = node.ledger().clone();
        let client = async_nats::connect(nats.url()).await.unwrap();
        Harness { node: Some(node), client, partitioner, ledger, database_url, nats: Some(nats), _workdir: workdir }
    }

    /// The node's HTTP base URL.
    pub fn http(&self) -> String {
        format!("http://{}", self.node.as_ref().expect("running").http_address())
    }

    /// Opens an account through the HTTP API.
    pub async fn open(&self, id: &str, currency: &str, floor: i64) {
        let (status, body) =
            self.api("POST", "/v1/accounts", Some(json!({"id": id, "currency": currency, "floor": floor}))).await;
        assert_eq!(status, 201, "{body}");
    }

    /// Opens `payer` and `payee` (EUR, floor 0) and funds `payer` with `funds` minor units.
    pub async fn open_pair(&self, payer: &str, payee: &str, funds: u64) {
        self.open(payer, "EUR", 0).await;
        self.open(payee, "EUR", 0).await;
        self.deposit(payer, funds).await;
    }

    /// Funds an account through the HTTP API.
    pub async fn deposit(&self, account: &str, amount: u64) {
        let path = format!("/v1/accounts/{account}/deposits");
        let body = json!({"id": format!("fund-{account}-{amount}"), "amount": amount});
        let (status, text) = self.api("POST", &path, Some(body)).await;
        assert!(status == 201 || status == 200, "{text}");
    }

    /// The balance of `account`, from the ledger.
    pub async fn balance(&self, account: &str) -> i64 {
        let id = AccountId::new(account).unwrap();
        self.ledger.account(&id).await.unwrap().expect("account exists").balance.0
    }

    /// One authorised call to the node's HTTP API.
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        let url = format!("{}{path}", self.http());
        let method = hyper::Method::from_bytes(method.as_bytes()).unwrap();
        let (status, text) = wasmpay_node::client::http_call(method, &url, TOKEN, body).await.unwrap();
        (status.as_u16(), text)
    }

    /// Sends a payment on its payer's partition subject and returns the raw reply.
    pub async fn pay_raw(&self, payment: &Value) -> String {
        let payer = AccountId::new(payment["payer"].as_str().unwrap()).unwrap();
        let subject = subjects::pay(self.partitioner.partition_of(&payer), payer.as_str());
        self.request(&subject, payment.to_string().into_bytes()).await
    }

    /// Sends a payment and parses the reply.
    pub async fn pay(&self, payment: &Value) -> Reply {
        parse(&self.pay_raw(payment).await)
    }

    /// One request on any subject.
    pub async fn request(&self, subject: &str, body: Vec<u8>) -> String {
        let message = tokio::time::timeout(WAIT, self.client.request(subject.to_owned(), Bytes::from(body)))
            .await
            .expect("reply in time")
            .expect("request succeeds");
        String::from_utf8(message.payload.to_vec()).unwrap()
    }

    /// Kills the NATS server under the node, as a crash or a network cut would.
    pub fn kill_nats(&mut self) {
        self.nats = None;
    }

    /// Gracefully stops the node.
    pub async fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }
}

/// Parses a reply.
pub fn parse(reply: &str) -> Reply {
    serde_json::from_str(reply).unwrap_or_else(|error| panic!("reply {reply} does not parse: {error}"))
}

/// A card payment of `amount` EUR cents from `payer` to `payee`.
pub fn card(id: &str, payer: &str, payee: &str, amount: u64) -> Value {
    json!({"version": 1, "id": id, "payer": payer, "payee": payee, "amount": amount, "currency": "EUR",
           "method": "card", "details": {"pan": "4242 4242 4242 4242", "expiry": "12/30"}})
}

/// A wallet payment of `amount` EUR cents.
pub fn wallet(id: &str, payer: &str, payee: &str, amount: u64) -> Value {
    json!({"version": 1, "id": id, "payer": payer, "payee": payee, "amount": amount, "currency": "EUR",
           "method": "wallet", "details": {"wallet_id": "wal_12345678"}})
}

/// Waits for the next message on a subscription.
pub async fn next_message(subscriber: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(WAIT, subscriber.next()).await.expect("message in time").expect("subscription open")
}
