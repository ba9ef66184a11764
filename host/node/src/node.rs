//! One node: ledger, plugins, bus and HTTP API, started together and stopped in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, ApiState, PluginParts};
use crate::bus::{self, Bus, BusError, BusSettings, Intake, Serving};
use crate::cluster::{Cluster, ClusterError, ClusterSettings, ClusterView, Identity, LedgerFences, Views};
use crate::config::Config;
use crate::durable::{Durable, DurableError};
use crate::metrics::Metrics;
use crate::payments::Processor;
use crate::plugins::{self, store::PluginStore, store::StoreError};
use crate::quotes::Quoter;
use wasmpay_cluster::{bounds, jetstream as js};
use wasmpay_ledger::{CommitObserver, Ledger, LedgerError};
use wasmpay_plugin_host::{PluginError, PluginHost, PluginRuntime, PluginSource};
use wasmpay_protocol::routing::{DEFAULT_PARTITIONS, Partitioner};

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// NATS server URL, or several (a cluster's servers) separated by commas.
    pub nats_url: String,
    /// Ledger database URL.
    pub database_url: String,
    /// HTTP listen address (port 0 picks a free one).
    pub http_address: SocketAddr,
    /// Plugin components to load (besides those with a `path` in `config`).
    pub plugin_sources: Vec<PluginSource>,
    /// A directory to watch for plugin versions (`<name>.wasm` with `<name>.toml`) while the
    /// node runs; its contents at start belong in `plugin_sources`.
    pub plugin_directory: Option<std::path::PathBuf>,
    /// Partition count P.
    pub partitions: u32,
    /// Payments one partition may hold waiting; more are refused at once (`unavailable`).
    pub partition_queue_depth: usize,
    /// This node's name in cluster info and traces.
    pub node_id: String,
    /// The configuration file's contents.
    pub config: Config,
    /// Bearer token of the `/v1` API; `None` refuses every `/v1` call.
    pub admin_token: Option<String>,
    /// A node for developing plugins (`serve --dev`): a push may replace a stored version in
    /// place, and a plugin directory's manifests need no `sha256`. Only on a SQLite ledger (one
    /// node), and a replacement only while the node serves its deployment alone: elsewhere a
    /// version's name must say what decided a payment.
    pub development: bool,
}

impl NodeSettings {
    /// Defaults: local NATS, `wasmpay.db`, port 8080, the built-in plugins, 64 partitions.
    pub fn new() -> NodeSettings {
        NodeSettings {
            nats_url: "nats://127.0.0.1:4222".into(),
            database_url: "sqlite://wasmpay.db".into(),
            http_address: SocketAddr::from(([127, 0, 0, 1], 8080)),
            plugin_sources: builtin_plugins(),
            plugin_directory: None,
            partitions: DEFAULT_PARTITIONS,
            partition_queue_depth: 256,
            node_id: "node-1".into(),
            config: Config::default(),
            admin_token: None,
            development: false,
        }
    }
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings::new()
    }
}

/// The repository's own plugins (`plugins/`), compiled into this binary at build time: the
/// card, wallet, mobile-money and cross-border methods, and the FX plugin (which quotes no pair until an
/// operator configures its rate table).
pub fn builtin_plugins() -> Vec<PluginSource> {
    vec![
        PluginSource::Builtin("card", wasmpay_plugin_artifacts::CARD, Some(wasmpay_plugin_artifacts::CARD_MANIFEST)),
        PluginSource::Builtin(
            "wallet",
            wasmpay_plugin_artifacts::WALLET,
            Some(wasmpay_plugin_artifacts::WALLET_MANIFEST),
        ),
        PluginSource::Builtin(
            "mobile",
            wasmpay_plugin_artifacts::MOBILE,
            Some(wasmpay_plugin_artifacts::MOBILE_MANIFEST),
        ),
        PluginSource::Builtin(
            "xborder",
            wasmpay_plugin_artifacts::XBORDER,
            Some(wasmpay_plugin_artifacts::XBORDER_MANIFEST),
        ),
        PluginSource::Builtin(
            "fx-table",
            wasmpay_plugin_artifacts::FX_TABLE,
            Some(wasmpay_plugin_artifacts::FX_TABLE_MANIFEST),
        ),
    ]
}

/// A node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Bad partition count.
    #[error(transparent)]
    Partitions(#[from] wasmpay_protocol::routing::NoPartitions),
    /// Plugins could not be loaded.
    #[error(transparent)]
    Plugins(#[from] PluginError),
    /// The ledger could not be opened.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// `development` on a ledger that is not SQLite.
    #[error(
        "--dev replaces plugin versions in place, which a cluster that serves real money must never do: it runs \
         only on a SQLite ledger (one node), not on {0}"
    )]
    DevelopmentLedger(String),
    /// NATS could not be reached.
    #[error("cannot connect to NATS at {url}")]
    Connect {
        /// The URL tried.
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The NATS server runs without JetStream, which the node cannot do without.
    #[error(
        "the NATS server at {0} runs without JetStream: start it with `nats-server -js` (JetStream keeps the \
         cluster's leases, the plugin store and durable payments)"
    )]
    NoJetStream(String),
    /// Subscribing failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Durable ingestion could not be set up.
    #[error(transparent)]
    Durable(#[from] DurableError),
    /// The cluster could not be joined.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The cluster's plugin store could not be read.
    #[error(transparent)]
    PluginStore(#[from] StoreError),
    /// The HTTP address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    ledger: Ledger,
    http_address: SocketAddr,
    shutdown: watch::Sender<bool>,
    failure: watch::Receiver<Option<String>>,
    bus: Serving,
    intake: Intake,
    cluster: Cluster,
    views: Views,
    http: JoinHandle<()>,
    plugin_tasks: Vec<JoinHandle<()>>,
}

impl Node {
    /// Opens the ledger, loads the plugins, subscribes and listens. Returns once the node
    /// is ready to take payments.
    pub async fn start(settings: NodeSettings) -> Result<Node, NodeError> {
        if settings.development && !settings.database_url.starts_with("sqlite:") {
            let scheme = settings.database_url.split(':').next().unwrap_or_default();
            return Err(NodeError::DevelopmentLedger(format!("a {scheme} ledger")));
        }
        let partitioner = Partitioner::new(settings.partitions)?;
        let metrics = Arc::new(Metrics::new(&settings.node_id));
        let runtime = PluginRuntime::new(&settings.config.sandbox).map_err(PluginError::from)?;
        // Compiling is CPU work and `describe` runs guest code: both stay off the async threads.
        let plugin_host = {
            let (runtime, sources, config) = (runtime, settings.plugin_sources.clone(), settings.config.clone());
            tokio::task::spawn_blocking(move || {
                PluginHost::start(runtime, &sources, &config.plugins, &config.methods, &config.fee_limits)
            })
            .await
            .map_err(|error| PluginError::Runtime(error.to_string()))??
        };
        for plugin in plugin_host.pipelines().plugins() {
            tracing::info!(plugin = plugin.key(), methods = %plugin.info().methods.join(","), checked = plugin.manifest().is_some(), "plugin loaded");
        }
        let _ = metrics.plugin_census.set(plugin_host.runtime().census().clone());
        let plugin_host = Arc::new(plugin_host);
        let observer: Arc<dyn CommitObserver> = metrics.clone();
        let ledger = Ledger::open_with(&settings.database_url, settings.config.ledger, Some(observer)).await?;
        let connect_failed = |source: Box<dyn std::error::Error + Send + Sync>| NodeError::Connect {
            url: crate::client::shown_nats(&settings.nats_url),
            source,
        };
        // A NATS cluster is given as its servers' URLs, comma-separated: the client fails over
        // between them.
        let servers = settings
            .nats_url
            .split(',')
            .map(|url| url.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| connect_failed(error.into()))?;
        let client = async_nats::ConnectOptions::new()
            .name(format!("wasmpay {}", settings.node_id))
            .connect(servers)
            .await
            .map_err(|error| connect_failed(error.into()))?;
        // Said at once, rather than after half a minute of JetStream requests that cannot succeed.
        if !client.server_info().jetstream {
            return Err(NodeError::NoJetStream(crate::client::shown_nats(&settings.nats_url)));
        }
        // Serve what the cluster serves before taking a payment, then follow its changes.
        let replicas = js::replicas(&client, settings.config.cluster.replicas);
        let plugin_store = PluginStore::open(client.clone(), replicas).await?;
        let applied = plugins::catch_up(&plugin_host, &plugin_store, &metrics).await?;
        let holds = settings.config.holds.clone();
        let processor = Arc::new(Processor::new(
            ledger.clone(),
            plugin_host.clone(),
            partitioner,
            metrics.clone(),
            (holds, settings.config.fx.clone()),
        ));
        let (shutdown, shutdown_signal) = watch::channel(false);
        let (failed, failure) = watch::channel(None);
        let durable = match settings.config.delivery.durable {
            true => {
                let durable_replicas = settings.config.delivery.replicas.unwrap_or(replicas);
                Some(Durable::open(client.clone(), settings.config.delivery, durable_replicas).await?)
            }
            false => None,
        };
        let bus_settings = BusSettings {
            partitioner,
            node_id: settings.node_id.clone(),
            partition_queue_depth: settings.partition_queue_depth,
            durable,
            hold_sweep: settings.config.holds.sweep_interval(),
        };
        let mut plugin_tasks = vec![plugins::follow(
            plugin_host.clone(),
            plugin_store.clone(),
            metrics.clone(),
            applied,
            shutdown_signal.clone(),
        )];
        if let Some(directory) = &settings.plugin_directory {
            plugin_tasks.push(plugins::directory::watch(
                plugins::directory::Watched { directory: directory.clone(), development: settings.development },
                plugin_host.clone(),
                metrics.clone(),
                shutdown_signal.clone(),
            ));
        }
        let quoter =
            Arc::new(Quoter::new(ledger.clone(), plugin_host.clone(), metrics.clone(), settings.config.fx.clone()));
        let recent = processor.recent().clone();
        let (bus, intake) = Bus::new(client.clone(), (processor, quoter), metrics.clone(), bus_settings)
            .start(shutdown_signal.clone(), failed)
            .await?;
        let listener = TcpListener::bind(settings.http_address)
            .await
            .map_err(|source| NodeError::Listen { address: settings.http_address, source })?;
        let http_address =
            listener.local_addr().map_err(|source| NodeError::Listen { address: settings.http_address, source })?;
        let views = Views::default();
        let state = Arc::new(ApiState::new(
            (client.clone(), partitioner),
            ledger.clone(),
            (metrics.clone(), recent),
            PluginParts {
                host: plugin_host,
                store: plugin_store,
                sources: &settings.plugin_sources,
                development: settings.development,
            },
            (views.clone(), intake.clone()),
            settings.admin_token.clone(),
        ));
        let http = tokio::spawn(api::serve(listener, state, settings.config.http, shutdown_signal));
        let identity = Identity {
            node: settings.node_id.clone(),
            ledger: ledger.identity().await?,
            http: http_address.to_string(),
            partitions: settings.partitions,
        };
        // The replicas resolved once, so the buckets get what the streams and the store got.
        let cluster_settings = ClusterSettings { replicas: Some(replicas), ..settings.config.cluster };
        let ports = wasmpay_cluster::Ports {
            partitions: intake.clone(),
            fences: LedgerFences(ledger.clone()),
            observer: metrics,
        };
        let joined = Cluster::join(client, identity, cluster_settings, ports, views.clone()).await;
        let cluster = match joined {
            Ok(cluster) => cluster,
            Err(error) => {
                // Stop what was started, so nothing reads the closed queues as dead workers.
                let _ = shutdown.send(true);
                if let Ok(workers) = bus.await {
                    intake.finish(workers).await;
                }
                let _ = http.await;
                for task in plugin_tasks {
                    let _ = task.await;
                }
                return Err(error.into());
            }
        };
        tracing::info!(node = %settings.node_id, %http_address, nats = %crate::client::shown_nats(&settings.nats_url), partitions = settings.partitions, "node ready");
        Ok(Node { ledger, http_address, shutdown, failure, bus, intake, cluster, views, http, plugin_tasks })
    }

    /// Where the HTTP API listens.
    pub fn http_address(&self) -> SocketAddr {
        self.http_address
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The cluster as this node sees it now (`GET /v1/cluster`).
    pub fn cluster(&self) -> ClusterView {
        self.views.current()
    }

    /// Resolves if the node can no longer serve every partition (a worker died, or the
    /// ledger's committer), with why.
    /// The node has stopped taking payments by then: shut it down and exit with an error, so a
    /// supervisor restarts it.
    pub async fn failed(&mut self) -> String {
        tokio::select! {
            cause = self.failure.wait_for(Option::is_some) => match cause {
                Ok(cause) => cause.clone().unwrap_or_default(),
                // The bus is gone without saying why: that is a failure too.
                Err(_) => "the bus stopped".to_owned(),
            },
            () = self.ledger.stopped() => "the ledger's committer stopped".to_owned(),
        }
    }

    /// How long [`Node::shutdown`] may take before the HTTP API's grace period: the
    /// submissions drained, the cluster left (a round in progress, then every partition handed
    /// over), the bus finished. Logged when a node stops, so a supervisor's stop timeout can be
    /// set above it.
    pub const fn stop_timeout() -> Duration {
        bounds::sum(&[bus::SUBSCRIPTION_STOP_TIMEOUT, Cluster::stop_timeout::<Intake>(), bus::FINISH_TIMEOUT])
    }

    /// Stops taking messages, hands its partitions over (answering what they took), stops the
    /// API and closes the ledger.
    pub async fn shutdown(self) {
        tracing::info!(
            bound_ms = Node::stop_timeout().as_millis(),
            "stopping (at most this long, and the HTTP API's grace)"
        );
        let _ = self.shutdown.send(true);
        // Submissions first: what they forward still reaches the partitions' owners.
        let workers = self.bus.await.unwrap_or_else(|error| {
            tracing::error!(%error, "bus task failed");
            tokio::task::JoinSet::new()
        });
        self.cluster.leave().await;
        self.intake.finish(workers).await;
        if let Err(error) = self.http.await {
            tracing::error!(%error, "http task failed");
        }
        // They end at the shutdown signal, without waiting for a load in progress (it finishes
        // on its blocking thread).
        for task in self.plugin_tasks {
            let _ = task.await;
        }
        self.ledger.close().await;
        tracing::info!("node stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stop bounds, with the bus's bounds as they are: a close is 5 + 1 (the intake's
    /// drain and a publish) + 10 (the worker's answers) = 16 s and an open 16 + 2 (the flush)
    /// = 18 s, so the cluster's stop is a round (3 + 2 + 7 + 2 + 5 + 20 + 27) plus a leave
    /// (2 + 20) plus 1 s of slack = 89 s, and the node's 6 + 89 + (16 + 10 + 2) = 123 s.
    #[test]
    fn the_stop_bounds_add_up() {
        assert_eq!(Cluster::stop_timeout::<Intake>(), Duration::from_secs(89));
        assert_eq!(Node::stop_timeout(), Duration::from_secs(123));
    }
}
