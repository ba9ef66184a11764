//! The node under load, as a process of its own (`wasmpay serve`), so that what it costs can
//! be read off the kernel's accounting: the CPU time of the node's process over a row,
//! divided by the payments it served, apart from the load generator's and the NATS server's.
//! In one process with the load generator, the node's share of the CPU could only be guessed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::Backend;
use crate::nats::PrivateNats;

/// How long a node may take from its start to its first approved payment: it compiles or
/// loads the plugins, binds the deployment and takes every partition's lease.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to stop after SIGTERM (it hands its partitions over); then it is
/// killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A `wasmpay serve` child on one ledger, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct NodeProcess {
    child: Child,
    log: PathBuf,
}

impl NodeProcess {
    /// Starts the node of `backend` on the ledger at `url` and the NATS server at
    /// `nats_url`, this binary's `serve` with its defaults (the built-in plugins), writing
    /// its log under `workdir`, named after the bench's `phase`. Ready only once [`NodeProcess::until_serving`] says so.
    pub fn start(
        (backend, phase): (Backend, &str),
        url: &str,
        nats_url: &str,
        workdir: &Path,
    ) -> anyhow::Result<NodeProcess> {
        let binary = std::env::current_exe().context("finding this program, which runs the node")?;
        let log = workdir.join(format!("node-{}-{phase}.log", backend.name()));
        let output = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(binary)
            .args(["serve", "--nats", nats_url, "--db", url, "--http", "127.0.0.1:0", "--node-id"])
            .arg(format!("bench-{}", backend.name()))
            // No `./wasmpay.toml` of the caller's: the node runs on the defaults.
            .current_dir(workdir)
            .env_remove("WASMPAY_CONFIG")
            .env_remove("WASMPAY_PLUGINS")
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .context("running `wasmpay serve` for the bench")?;
        Ok(NodeProcess { child, log })
    }

    /// Waits until `served` (one payment through the node) is true, trying again every
    /// 100 ms, for at most [`READY_TIMEOUT`]; fails at once if the node exits.
    pub async fn until_serving<F: Future<Output = bool>>(
        &mut self,
        mut served: impl FnMut(u32) -> F,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        for attempt in 0.. {
            if served(attempt).await {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the bench's node exited with {status}; its log:\n{}", self.log_tail());
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!("the bench's node approved no payment within {READY_TIMEOUT:?}; its log:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        unreachable!("the attempts end in a return or a bail")
    }

    /// The CPU time (user + system) the node has used so far.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        cpu_of(self.child.id())
    }

    /// Stops the node: SIGTERM, then (after [`STOP_TIMEOUT`]) SIGKILL.
    pub async fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        while started.elapsed() < STOP_TIMEOUT {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("warning: the bench's node did not stop within {STOP_TIMEOUT:?} of SIGTERM; killing it");
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU time used by a row: the node's and the NATS server's, each per request the row served.
#[derive(Clone, Copy, Debug)]
pub struct CpuClock {
    node: Duration,
    nats: Duration,
}

impl CpuClock {
    /// The CPU both processes have used so far.
    pub fn read(node: &NodeProcess, nats: &PrivateNats) -> anyhow::Result<CpuClock> {
        Ok(CpuClock { node: node.cpu()?, nats: cpu_of(nats.pid())? })
    }

    /// What each process used since `self`, in nanoseconds per request of the `served`:
    /// (node, NATS server). `None` if nothing was served.
    pub fn per_request(self, now: CpuClock, served: u64) -> Option<(u64, u64)> {
        let per = |before: Duration, after: Duration| {
            let used = u64::try_from(after.saturating_sub(before).as_nanos()).unwrap_or(u64::MAX);
            used.checked_div(served)
        };
        Some((per(self.node, now.node)?, per(self.nats, now.nats)?))
    }
}

/// User + system CPU time of process `pid`, every thread of it, dead ones included
/// (`/proc/<pid>/stat`, fields 14 and 15, in clock ticks of 1/`CLK_TCK` s).
pub fn cpu_of(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading process {pid}'s stat"))?;
    parse_cpu(&stat, clock_ticks()).with_context(|| format!("process {pid}'s stat is not as expected: {stat}"))
}

/// Clock ticks per second: what `getconf CLK_TCK` says, else Linux's USER_HZ of 100.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let output = Command::new("getconf").arg("CLK_TCK").output().ok();
        output.and_then(|output| String::from_utf8(output.stdout).ok()?.trim().parse().ok()).unwrap_or(100)
    })
}

/// utime + stime of a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses
/// and may hold spaces and parentheses itself: the fields are counted after its last `)`.
fn parse_cpu(stat: &str, ticks_per_second: u64) -> Option<Duration> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace();
    // After the name: state (3), ppid (4), ... utime is field 14, the 12th after the name.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime.checked_add(stime)?;
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(ticks_per_second.max(1));
    Some(Duration::from_nanos(u64::try_from(nanos).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_time_past_an_odd_command_name() {
        // A real line of `/proc/<pid>/stat` (utime 1234, stime 56), its name holding `) (`.
        let stat = "4242 (a) (b c) S 1 4242 4242 0 -1 4194560 1000 0 0 0 1234 56 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_cpu(stat, 100), Some(Duration::from_millis(12_900)));
        assert_eq!(parse_cpu(stat, 1_000), Some(Duration::from_millis(1_290)));
        assert_eq!(parse_cpu("4242 (a) S 1", 100), None);
    }

    #[test]
    fn reads_this_process() {
        let spent = cpu_of(std::process::id()).expect("this process's stat");
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(200) {
            std::hint::black_box(start.elapsed());
        }
        let later = cpu_of(std::process::id()).expect("this process's stat");
        assert!(later > spent, "200 ms of spinning used no CPU: {spent:?} then {later:?}");
    }

    #[test]
    fn shares_the_cpu_per_request_served() {
        let before = CpuClock { node: Duration::from_millis(100), nats: Duration::from_millis(10) };
        let after = CpuClock { node: Duration::from_millis(1_100), nats: Duration::from_millis(210) };
        assert_eq!(before.per_request(after, 10_000), Some((100_000, 20_000)));
        assert_eq!(before.per_request(after, 0), None);
    }
}
