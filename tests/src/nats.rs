//! A private `nats-server` on a free loopback port for each test, so tests never share a
//! server (or a node) with each other or with anything on 127.0.0.1:4222. The process is
//! killed when the handle is dropped.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `nats-server` child process.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    port: u16,
    /// JetStream's store (the cluster's buckets), removed with the server unless a
    /// [`NatsCluster`] keeps it for a restart.
    _store: Option<tempfile::TempDir>,
}

/// The server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    /// `nats-server` is not installed.
    #[error("`nats-server` was not found on PATH (install it: `apt-get install nats-server`): {0}")]
    NotInstalled(std::io::Error),
    /// It started but did not accept connections in time, or could not be started.
    #[error("nats-server did not start: {0}")]
    Start(String),
}

impl NatsServer {
    /// Starts `nats-server` with JetStream on 127.0.0.1 and a free port, optionally with a
    /// config file (e.g. subject mappings), and waits until it accepts connections.
    /// Its port is found free and then bound by the server, so another process may take it in
    /// between: a server that could not start is started again on another port, three times at
    /// most.
    pub fn start(config: Option<&Path>) -> Result<NatsServer, NatsServerError> {
        let mut attempt = 1;
        loop {
            match NatsServer::start_once(config) {
                Err(NatsServerError::Start(_)) if attempt < 3 => attempt += 1,
                started => return started,
            }
        }
    }

    fn start_once(config: Option<&Path>) -> Result<NatsServer, NatsServerError> {
        let port = free_port().map_err(|error| NatsServerError::Start(error.to_string()))?;
        let store = tempfile::tempdir().map_err(|error| NatsServerError::Start(error.to_string()))?;
        let mut extra = Vec::new();
        if let Some(config) = config {
            extra.extend(["-c".to_owned(), config.display().to_string()]);
        }
        let directory = store.path().to_owned();
        NatsServer::launch(port, &directory, Some(store), &extra)
    }

    /// Starts a server on `port` with JetStream stored in `directory` (removed with the server
    /// if `owned`) and `extra` arguments.
    fn launch(
        port: u16,
        directory: &Path,
        owned: Option<tempfile::TempDir>,
        extra: &[String],
    ) -> Result<NatsServer, NatsServerError> {
        let mut command = Command::new("nats-server");
        command
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(directory)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn().map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => NatsServerError::NotInstalled(error),
            _ => NatsServerError::Start(error.to_string()),
        })?;
        let mut server = NatsServer { child, port, _store: owned };
        let started = Instant::now();
        while !answers(server.address()) {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(NatsServerError::Start(format!("exited with {status}")));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(NatsServerError::Start(format!("no answer on port {port} after {START_TIMEOUT:?}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// Stops the server and starts it again on the same port with an empty JetStream store,
    /// as a server comes back that lost its storage.
    pub fn restart_empty(&mut self) -> Result<(), NatsServerError> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let store = tempfile::tempdir().map_err(|error| NatsServerError::Start(error.to_string()))?;
        let directory = store.path().to_owned();
        let restarted = NatsServer::launch(self.port, &directory, Some(store), &[])?;
        // The old handle's process is gone; dropping it kills nothing that runs.
        drop(std::mem::replace(self, restarted));
        Ok(())
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn address(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether something accepts TCP connections at `address` within 200 ms.
pub fn answers(address: SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// Three `nats-server` processes routed into one JetStream cluster, each with its own store;
/// a server can be stopped and started again on the same port and store, as an operator
/// restarts one.
#[derive(Debug)]
pub struct NatsCluster {
    servers: Vec<Option<NatsServer>>,
    ports: Vec<u16>,
    /// Each server's arguments beyond port and store.
    arguments: Vec<Vec<String>>,
    stores: Vec<std::path::PathBuf>,
    _stores: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts three routed servers. Their six ports are found free and then bound by the
    /// servers, so another process may take one in between (tests run side by side): a cluster
    /// whose server could not start is started again on other ports, three times at most.
    pub fn start() -> Result<NatsCluster, NatsServerError> {
        let mut attempt = 1;
        loop {
            match NatsCluster::start_once() {
                Err(NatsServerError::Start(_)) if attempt < 3 => attempt += 1,
                started => return started,
            }
        }
    }

    fn start_once() -> Result<NatsCluster, NatsServerError> {
        let failed = |error: std::io::Error| NatsServerError::Start(error.to_string());
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_, _>>().map_err(failed)?;
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_, _>>().map_err(failed)?;
        let all_routes = routes.iter().map(|port| format!("nats://127.0.0.1:{port}")).collect::<Vec<_>>().join(",");
        let stores = tempfile::tempdir().map_err(failed)?;
        let mut cluster =
            NatsCluster { servers: Vec::new(), ports, arguments: Vec::new(), stores: Vec::new(), _stores: stores };
        for (index, route) in routes.iter().enumerate() {
            cluster.arguments.push(vec![
                "-n".to_owned(),
                format!("s{index}"),
                "--cluster_name".to_owned(),
                "wasmpay-test".to_owned(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{route}"),
                "--routes".to_owned(),
                all_routes.clone(),
            ]);
            let store = cluster._stores.path().join(format!("s{index}"));
            std::fs::create_dir_all(&store).map_err(failed)?;
            cluster.stores.push(store);
            cluster.servers.push(None);
            cluster.start_server(index)?;
        }
        Ok(cluster)
    }

    /// Every server's URL, comma-separated (a client tries them in turn).
    pub fn urls(&self) -> String {
        self.ports.iter().map(|port| format!("nats://127.0.0.1:{port}")).collect::<Vec<_>>().join(",")
    }

    /// Server `index`'s URL.
    pub fn url(&self, index: usize) -> String {
        format!("nats://127.0.0.1:{}", self.ports[index])
    }

    /// Kills server `index` (its store stays).
    pub fn stop_server(&mut self, index: usize) {
        self.servers[index] = None;
    }

    /// Starts server `index` again on its port and store.
    pub fn start_server(&mut self, index: usize) -> Result<(), NatsServerError> {
        let server = NatsServer::launch(self.ports[index], &self.stores[index], None, &self.arguments[index])?;
        self.servers[index] = Some(server);
        Ok(())
    }
}
