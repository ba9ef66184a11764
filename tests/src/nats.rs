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
    /// JetStream's store (the cluster's buckets), removed with the server.
    _store: tempfile::TempDir,
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
    pub fn start(config: Option<&Path>) -> Result<NatsServer, NatsServerError> {
        let port = free_port().map_err(|error| NatsServerError::Start(error.to_string()))?;
        let store = tempfile::tempdir().map_err(|error| NatsServerError::Start(error.to_string()))?;
        let mut command = Command::new("nats-server");
        command
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(config) = config {
            command.arg("-c").arg(config);
        }
        let child = command.spawn().map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => NatsServerError::NotInstalled(error),
            _ => NatsServerError::Start(error.to_string()),
        })?;
        let mut server = NatsServer { child, port, _store: store };
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
