//! Metrics read when scraped rather than counted: the process's own (the names every
//! Prometheus client library uses, so stock dashboards and alerts work) and the plugin census.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use wasmpay_plugin_host::Census;

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`): 100 on every Linux ABI.
const TICKS_PER_SECOND: u64 = 100;

/// The process's CPU time, memory, threads, descriptors and start, from `/proc/self`. On a
/// system without `/proc` the metrics are left out, never invented.
#[derive(Debug)]
pub(super) struct Process;

/// What `/proc/self` says.
#[derive(Debug, Default, PartialEq, Eq)]
struct Sample {
    cpu_ticks: u64,
    threads: i64,
    start_ticks: u64,
    resident_bytes: Option<i64>,
    virtual_bytes: i64,
}

/// The fields of `/proc/self/stat` after the command (which may hold spaces and parentheses,
/// hence the last `)`).
fn parse_stat(stat: &str) -> Option<Sample> {
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    // Numbered from the state, field 3 of proc(5).
    let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
    Some(Sample {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        threads: i64::try_from(field(20)?).ok()?,
        start_ticks: field(22)?,
        resident_bytes: None,
        virtual_bytes: i64::try_from(field(23)?).ok()?,
    })
}

/// `VmRSS:   1234 kB` of `/proc/self/status`, in bytes.
fn parse_resident(status: &str) -> Option<i64> {
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kilobytes: i64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kilobytes.checked_mul(1024)
}

/// `btime` of `/proc/stat`: the boot time, in seconds since the epoch.
fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines().find_map(|line| line.strip_prefix("btime "))?.trim().parse().ok()
}

/// `Max open files` of `/proc/self/limits` (its soft limit).
fn parse_max_files(limits: &str) -> Option<i64> {
    let line = limits.lines().find_map(|line| line.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, unit: Option<&Unit>, value: i64) -> std::fmt::Result {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, unit, gauge.metric_type())?)
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(mut sample) = read("/proc/self/stat").as_deref().and_then(parse_stat) else {
            return Ok(());
        };
        sample.resident_bytes = read("/proc/self/status").as_deref().and_then(parse_resident);
        let cpu = ConstCounter::new(
            Duration::from_millis(sample.cpu_ticks.saturating_mul(1000 / TICKS_PER_SECOND)).as_secs_f64(),
        );
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "User and system CPU time the process spent",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        if let Some(resident) = sample.resident_bytes {
            gauge(&mut encoder, "process_resident_memory", "Resident memory", Some(&Unit::Bytes), resident)?;
        }
        gauge(&mut encoder, "process_virtual_memory", "Virtual memory", Some(&Unit::Bytes), sample.virtual_bytes)?;
        gauge(&mut encoder, "process_threads", "Operating system threads of the process", None, sample.threads)?;
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            let open = i64::try_from(entries.count()).unwrap_or(i64::MAX);
            gauge(&mut encoder, "process_open_fds", "Open file descriptors", None, open)?;
        }
        if let Some(max) = read("/proc/self/limits").as_deref().and_then(parse_max_files) {
            gauge(&mut encoder, "process_max_fds", "The limit of open file descriptors", None, max)?;
        }
        if let Some(boot) = read("/proc/stat").as_deref().and_then(parse_boot_time) {
            let started = boot.saturating_add(sample.start_ticks / TICKS_PER_SECOND);
            let started = i64::try_from(started).unwrap_or(i64::MAX);
            let help = "When the process started, in seconds since the Unix epoch";
            gauge(&mut encoder, "process_start_time", help, Some(&Unit::Seconds), started)?;
        }
        Ok(())
    }
}

/// Plugin versions and instances alive, once the plugins are loaded.
#[derive(Debug)]
pub(super) struct PluginCensus(pub(super) Arc<OnceLock<Census>>);

impl Collector for PluginCensus {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(census) = self.0.get() else { return Ok(()) };
        let count = |value: usize| i64::try_from(value).unwrap_or(i64::MAX);
        let versions = "Plugin versions loaded (serving, retained, or held by a payment)";
        gauge(&mut encoder, "plugin_versions_loaded", versions, None, count(census.versions()))?;
        gauge(&mut encoder, "plugin_instances", "Plugin instances alive", None, count(census.instances()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_proc_files_it_needs() {
        // A command with a space and a parenthesis, as proc(5) allows.
        let stat = "4242 (wasm pay) (x) S 1 4242 4242 0 -1 4194560 9000 0 0 0 1234 566 0 0 20 0 7 0 \
                    31337 1048576000 5000 18446744073709551615";
        let sample = parse_stat(stat).expect("parses");
        assert_eq!(
            sample,
            Sample {
                cpu_ticks: 1800,
                threads: 7,
                start_ticks: 31337,
                resident_bytes: None,
                virtual_bytes: 1_048_576_000
            }
        );
        assert_eq!(parse_stat("4242 (truncated"), None);
        assert_eq!(parse_resident("Name:\twasmpay\nVmRSS:\t   20480 kB\n"), Some(20_971_520));
        assert_eq!(parse_boot_time("cpu  1 2 3\nbtime 1765000000\n"), Some(1_765_000_000));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_files(limits), Some(1024));
    }
}
