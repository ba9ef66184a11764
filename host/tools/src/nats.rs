//! A private `nats-server` for the commands that need one of their own (`demo` when nothing
//! answers on 127.0.0.1:4222, `bench` always, so no other node answers its payments).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A `nats-server` child on a port it picks itself, killed when dropped. The server writes the
/// port to a "ports file", so there is no window in which another process can take it.
pub struct PrivateNats {
    child: Child,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
}

impl PrivateNats {
    /// How long a starting server may take to write its ports file.
    const START_TIMEOUT: Duration = Duration::from_secs(10);

    /// Starts one, writing its ports file under `workdir`.
    pub fn start(workdir: &Path) -> anyhow::Result<PrivateNats> {
        let ports_dir = workdir.join("nats-ports");
        std::fs::create_dir_all(&ports_dir)?;
        // JetStream holds the cluster's membership and leases.
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
            .arg(workdir.join("nats-jetstream"))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("running `nats-server`")?;
        let mut server = PrivateNats { child, url: String::new() };
        let ports_file = ports_dir.join(format!("nats-server_{}.ports", server.child.id()));
        let started = Instant::now();
        loop {
            let ports: Option<serde_json::Value> =
                std::fs::read(&ports_file).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok());
            if let Some(url) = ports.as_ref().and_then(|ports| ports["nats"][0].as_str()) {
                server.url = url.to_owned();
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("nats-server exited with {status}");
            }
            if started.elapsed() > Self::START_TIMEOUT {
                bail!("nats-server wrote no ports file within {:?}", Self::START_TIMEOUT);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl PrivateNats {
    /// The server's process id, for its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
