//! The PostgreSQL baseline: `pgbench`'s TPC-B-like transaction (three updates, a select and
//! an insert, committed one by one) on the same server, what the ledger alone is compared
//! with. It initialises its own database, `wasmpay_pgbench`, at scale 10 on every run.

use std::io::{Read as _, Seek as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::load::Measured;
use super::report::{Row, Scenario};
use crate::bench::Backend;
use crate::postgres::PgServer;

/// The database pgbench owns; created if missing, its tables rebuilt on every run.
const DATABASE: &str = "wasmpay_pgbench";
/// Scale factor: 1,000,000 accounts, 10 branches.
const SCALE: &str = "10";
/// Clients and pgbench threads.
const CLIENTS: &str = "8";
const THREADS: &str = "2";
/// How long initialising may take at most.
const INIT_TIMEOUT: Duration = Duration::from_secs(300);

/// Initialises and runs pgbench for `seconds`; a row with its transactions per second.
pub async fn run(server: &PgServer, seconds: u32) -> anyhow::Result<Row> {
    server.ensure_database(DATABASE).await?;
    let tool = server.tool_arguments();
    eprint!("{:<58} initialising (scale {SCALE})", Scenario::Pgbench.label());
    let init = ["-i", "-s", SCALE, "-q"].map(str::to_owned);
    run_pgbench([&tool[..], &init, &[DATABASE.to_owned()]].concat(), INIT_TIMEOUT).await?;
    eprint!("\r{:<58} running {seconds} s                  ", Scenario::Pgbench.label());
    let run = ["-c", CLIENTS, "-j", THREADS, "-T", &seconds.to_string()].map(str::to_owned);
    let output =
        run_pgbench([&tool[..], &run, &[DATABASE.to_owned()]].concat(), Duration::from_secs(u64::from(seconds) + 60))
            .await?;
    eprintln!();
    let tps = parse_tps(&output).with_context(|| format!("no `tps = ` line in pgbench's output:\n{output}"))?;
    let measured = Measured { requests: transactions(&output), failed: 0, per_second: tps, latency: None };
    let load = format!("-c {CLIENTS} -j {THREADS} -T {seconds}");
    Ok(Row::measured(Scenario::Pgbench, Some(Backend::Postgres), load, &measured))
}

/// Runs `pgbench arguments`, killing it after `timeout`; its standard output.
async fn run_pgbench(arguments: Vec<String>, timeout: Duration) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || run_blocking(&arguments, timeout)).await?
}

fn run_blocking(arguments: &[String], timeout: Duration) -> anyhow::Result<String> {
    // Files, not pipes: a pipe nobody reads while waiting could fill up and stall pgbench.
    let (mut stdout, mut stderr) = (tempfile::tempfile()?, tempfile::tempfile()?);
    let mut child = Command::new("pgbench")
        .args(arguments)
        .stdin(Stdio::null())
        .stdout(stdout.try_clone()?)
        .stderr(stderr.try_clone()?)
        .spawn()
        .context("running `pgbench` (install PostgreSQL's client tools)")?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("pgbench {} ran past {timeout:?}", arguments.join(" "));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |file: &mut std::fs::File| -> anyhow::Result<String> {
        let mut text = String::new();
        file.rewind()?;
        file.read_to_string(&mut text)?;
        Ok(text)
    };
    if !status.success() {
        bail!("pgbench {} failed ({status}):\n{}", arguments.join(" "), read(&mut stderr)?);
    }
    read(&mut stdout)
}

/// The whole transactions per second of `tps = 2213.123456 (without initial connection time)`.
fn parse_tps(output: &str) -> Option<u64> {
    let line = output.lines().find(|line| line.starts_with("tps = ") && line.contains("without initial connection"))?;
    let number = line.strip_prefix("tps = ")?.split_whitespace().next()?;
    number.split('.').next()?.parse().ok()
}

/// The `number of transactions actually processed: 44207` (0 if missing).
fn transactions(output: &str) -> u64 {
    let line = output.lines().find_map(|line| line.strip_prefix("number of transactions actually processed: "));
    line.and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{parse_tps, transactions};

    #[test]
    fn reads_pgbench_output() {
        let output = "number of transactions actually processed: 44207\nlatency average = 3.619 ms\n\
                      initial connection time = 6.102 ms\ntps = 2210.593124 (without initial connection time)\n";
        assert_eq!(parse_tps(output), Some(2210));
        assert_eq!(transactions(output), 44207);
        assert_eq!(parse_tps("tps = 12.5 (including connections establishing)"), None);
    }
}
