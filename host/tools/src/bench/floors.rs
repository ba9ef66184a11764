//! The bench as a regression check (`--floors`): CI runs a short bench and fails when an
//! end-to-end rate, as a share of the bus limit measured beside it, falls below half of the
//! share recorded in docs/performance.md. A share of the bus, not a rate: the machine drifts
//! by up to 2x between runs, and the bus row, which runs none of our code, drifts with it.
//! Half: a noisy run stays above it, a change that doubles a payment's cost does not.

use anyhow::{Context, bail};

use super::Backend;
use super::report::{Row, Scenario};

/// What a line of the floors file says.
const PREFIX: &str = "bench-floor:";

/// One recorded share: the ten-merchant end-to-end row of `backend` at `in_flight`, in
/// thousandths of the bus limit.
#[derive(Debug, PartialEq, Eq)]
pub struct Floor {
    backend: Backend,
    in_flight: usize,
    per_mille: u64,
}

/// The floors of `text`: every line `bench-floor: <backend> <in flight> <share>`, the share a
/// decimal with up to three digits after the point (`0.072`). Other lines are prose.
pub fn parse(text: &str) -> anyhow::Result<Vec<Floor>> {
    let floors: Vec<Floor> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix(PREFIX))
        .map(|line| {
            parse_line(line)
                .with_context(|| format!("`{PREFIX}{line}` is not `{PREFIX} <backend> <in flight> <share>`"))
        })
        .collect::<anyhow::Result<_>>()?;
    if floors.is_empty() {
        bail!("no `{PREFIX}` line: nothing to check the bench against");
    }
    Ok(floors)
}

fn parse_line(line: &str) -> anyhow::Result<Floor> {
    let [backend, in_flight, share] = line.split_whitespace().collect::<Vec<_>>()[..] else {
        bail!("three words expected");
    };
    let backend = match backend {
        "sqlite" => Backend::Sqlite,
        "postgres" => Backend::Postgres,
        other => bail!("unknown backend `{other}`"),
    };
    let (whole, fraction) = share.split_once('.').unwrap_or((share, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|byte| byte.is_ascii_digit()) {
        bail!("the share `{share}` has more than three decimals");
    }
    let thousandths: u64 = format!("{fraction:0<3}").parse()?;
    let per_mille = whole.parse::<u64>()?.checked_mul(1_000).and_then(|whole| whole.checked_add(thousandths));
    Ok(Floor { backend, in_flight: in_flight.parse()?, per_mille: per_mille.context("the share is too large")? })
}

/// Fails, naming each, if a floor's row falls below half of it, or was not measured.
pub fn check(floors: &[Floor], rows: &[Row]) -> anyhow::Result<()> {
    let find = |scenario: Scenario, floor: &Floor| {
        rows.iter().find(|row| {
            row.scenario == scenario && row.backend == Some(floor.backend) && row.in_flight == Some(floor.in_flight)
        })
    };
    let mut below = Vec::new();
    for floor in floors {
        let what = format!("{} end to end at {} in flight", floor.backend.name(), floor.in_flight);
        let (Some(bus), Some(uniform)) = (find(Scenario::BusLimit, floor), find(Scenario::Uniform, floor)) else {
            bail!("{what} has a floor but was not measured (--backends, --in-flight)");
        };
        // Twice the measured share against the recorded one, in thousandths.
        let doubled = uniform.per_second.saturating_mul(2_000) / bus.per_second.max(1);
        let shown = |per_mille: u64| format!("{}.{:03}", per_mille / 1_000, per_mille % 1_000);
        eprintln!(
            "{what}: {} of the bus limit, floor {} (half of the recorded {})",
            shown(uniform.per_second.saturating_mul(1_000) / bus.per_second.max(1)),
            shown(floor.per_mille / 2),
            shown(floor.per_mille)
        );
        if doubled < floor.per_mille {
            below.push(what);
        }
    }
    if !below.is_empty() {
        bail!("below half of the recorded share of the bus limit: {}", below.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::load::Measured;

    fn row(scenario: Scenario, per_second: u64) -> Row {
        let measured = Measured { requests: 1, failed: 0, per_second, latency: None };
        Row::measured(scenario, Some(Backend::Sqlite), String::new(), &measured).in_flight(64)
    }

    #[test]
    fn reads_the_floor_lines_and_only_them() {
        let text = "prose\n```text\nbench-floor: sqlite 64 0.07\n  bench-floor: postgres 512 1.25\n```\n";
        let floors = parse(text).expect("two floors");
        assert_eq!(
            floors,
            [
                Floor { backend: Backend::Sqlite, in_flight: 64, per_mille: 70 },
                Floor { backend: Backend::Postgres, in_flight: 512, per_mille: 1_250 },
            ]
        );
        assert!(parse("no floors here").is_err());
        assert!(parse("bench-floor: sqlite 64 0.0701").is_err());
        assert!(parse("bench-floor: mysql 64 0.07").is_err());
        assert!(parse("bench-floor: sqlite 64").is_err());
        assert!(parse("bench-floor: sqlite 64 -0.1").is_err());
    }

    #[test]
    fn fails_below_half_of_the_recorded_share_only() {
        let floors = parse("bench-floor: sqlite 64 0.070").expect("a floor");
        let rows = |uniform| [row(Scenario::BusLimit, 100_000), row(Scenario::Uniform, uniform)];
        assert!(check(&floors, &rows(7_000)).is_ok());
        assert!(check(&floors, &rows(3_500)).is_ok(), "exactly half holds");
        assert!(check(&floors, &rows(3_499)).is_err());
        assert!(check(&floors, &rows(0)).is_err());
        assert!(check(&floors, &[row(Scenario::BusLimit, 100_000)]).is_err(), "a floor without its row");
    }
}
