//! A node on one backend, in a process of its own (`node`), loaded over NATS: at each in-flight level the bus limit, card
//! payments to ten merchants and to one hot payee, back to back so each ratio compares
//! neighbours; then open-loop arrivals at half the best end-to-end rate, for the latency a
//! client sees under load; last, on a node started again, the lifecycle's pairs.

use std::future::Future;
use std::path::Path;

use bytes::Bytes;
use futures::FutureExt as _;
use serde_json::json;
use wasmpay_node::client::request;
use wasmpay_protocol::routing::{DEFAULT_PARTITIONS, Partitioner};
use wasmpay_protocol::{PROTOCOL_VERSION, Reply, Status};

use super::load::{self, Expect, Measured, closed_loop, nats_request, noop_request, open_loop};
use super::node::{CpuClock, NodeProcess};
use super::report::{Row, Scenario};
use super::setup::{self, Payees, Payers};
use super::{Backend, BenchArgs};
use crate::nats::PrivateNats;

/// Amount of every payment, in minor units.
const AMOUNT: u64 = 100;

/// Opens and funds the accounts on the ledger at `url`, starts a node on it, measures the
/// plain payment's rows, and stops the node whatever the outcome.
pub async fn measure(
    args: &BenchArgs,
    backend: Backend,
    (url, workdir): (&str, &Path),
    nats: &PrivateNats,
    client: &async_nats::Client,
) -> anyhow::Result<Vec<Row>> {
    let payers = Payers::new(args.payers, Partitioner::new(DEFAULT_PARTITIONS)?)?;
    let ledger = setup::ledger(backend, url).await?;
    let funded = setup::open_and_fund(&ledger, &payers).await;
    ledger.close().await;
    funded?;
    let mut node = NodeProcess::start((backend, "plain"), url, &nats.url, workdir)?;
    let measured = async {
        node.until_serving(|attempt| pay(client, &payers, Payees::Uniform, "warmup", attempt)).await?;
        let _responder = load::noop_responder(&nats.url).await?;
        load::until_answered(client).await?;
        let processes = (&node, nats);
        let mut rows = closed_loop_rows(args, backend, client, &payers, processes).await?;
        let best = rows.iter().filter(|row| row.scenario == Scenario::Uniform).map(|row| row.per_second).max();
        rows.push(open_loop_row(args, backend, client, &payers, best.unwrap_or_default() / 2, processes).await?);
        anyhow::Ok(rows)
    }
    .await;
    node.stop().await;
    measured
}

/// Starts a node again on the ledger [`measure`] funded and measures the lifecycle's rows at
/// the highest in-flight level, each beside `uniform`, the plain payment's rate at that level.
/// They run after every plain payment row of the backend, its ledger alone included, so that
/// those see the same history in every build: the lifecycle's rows add some 15,000 transfers.
pub async fn measure_lifecycle(
    args: &BenchArgs,
    backend: Backend,
    (url, workdir): (&str, &Path),
    nats: &PrivateNats,
    client: &async_nats::Client,
    uniform: u64,
) -> anyhow::Result<Vec<Row>> {
    let payers = Payers::new(args.payers, Partitioner::new(DEFAULT_PARTITIONS)?)?;
    let mut node = NodeProcess::start((backend, "lifecycle"), url, &nats.url, workdir)?;
    let measured = async {
        node.until_serving(|attempt| pay(client, &payers, Payees::Uniform, "life-warmup", attempt)).await?;
        let level = args.in_flight.iter().copied().max().unwrap_or(1);
        let what = |scenario: Scenario| format!("{} {}, {level} in flight", backend.name(), scenario.label());
        let tag = format!("life-{level}");
        let mut rows = Vec::new();
        for scenario in [Scenario::AuthorizeCapture, Scenario::PayRefund, Scenario::Settlement] {
            let load = |index| match scenario {
                Scenario::Settlement => settle(client, &payers, &tag, index).boxed(),
                _ => lifecycle_pair(client, &payers, scenario, &tag, index).boxed(),
            };
            let (measured, cpu) =
                metered((&node, nats), closed_loop(&what(scenario), level, args.limits(), load)).await?;
            let row = Row::measured(scenario, Some(backend), format!("{level} in flight"), &measured);
            rows.push(row.in_flight(level).compare("uniform", uniform).cpu(cpu));
        }
        anyhow::Ok(rows)
    }
    .await;
    node.stop().await;
    measured
}

/// A measurement and the CPU each process spent per request served in it.
type Metered = anyhow::Result<(Measured, Option<(u64, u64)>)>;

/// Runs `measurement` and reads the node's and the NATS server's CPU clocks around it.
async fn metered((node, nats): (&NodeProcess, &PrivateNats), measurement: impl Future<Output = Measured>) -> Metered {
    let before = CpuClock::read(node, nats)?;
    let measured = measurement.await;
    let after = CpuClock::read(node, nats)?;
    Ok((measured, before.per_request(after, measured.requests.saturating_sub(measured.failed))))
}

/// The bus limit, ten merchants and hot payee at each in-flight level.
async fn closed_loop_rows(
    args: &BenchArgs,
    backend: Backend,
    client: &async_nats::Client,
    payers: &Payers,
    processes: (&NodeProcess, &PrivateNats),
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &level in &args.in_flight {
        let what = |scenario: Scenario| format!("{} {}, {level} in flight", backend.name(), scenario.label());
        let bus = |index| noop_request(client, index);
        let (bus, bus_cpu) =
            metered(processes, closed_loop(&what(Scenario::BusLimit), level, args.limits(), bus)).await?;
        let pay = |payees: Payees| {
            let tag = format!("{}-{level}", payees.tag());
            move |index| pay(client, payers, payees, &tag, index)
        };
        let (uniform, uniform_cpu) =
            metered(processes, closed_loop(&what(Scenario::Uniform), level, args.limits(), pay(Payees::Uniform)))
                .await?;
        let (hot, hot_cpu) =
            metered(processes, closed_loop(&what(Scenario::HotPayee), level, args.limits(), pay(Payees::Hot))).await?;
        let row = |scenario: Scenario, measured: &Measured, cpu| {
            Row::measured(scenario, Some(backend), format!("{level} in flight"), measured).in_flight(level).cpu(cpu)
        };
        rows.push(row(Scenario::BusLimit, &bus, bus_cpu));
        rows.push(row(Scenario::Uniform, &uniform, uniform_cpu).compare("bus", bus.per_second));
        rows.push(
            row(Scenario::HotPayee, &hot, hot_cpu)
                .compare("uniform", uniform.per_second)
                .compare("bus", bus.per_second),
        );
    }
    Ok(rows)
}

/// Settlement `index`: the payer pays a merchant [`AMOUNT`] and the merchant pays one minor
/// unit back, both legs or neither; sent on the payer's subject, it locks the merchant too.
fn settle(
    client: &async_nats::Client,
    payers: &Payers,
    tag: &str,
    index: u32,
) -> impl Future<Output = bool> + Send + use<> {
    let (payer, subject) = payers.of(index);
    let payee = Payees::Uniform.of(index);
    let body = json!({"version": PROTOCOL_VERSION, "type": "settle", "id": format!("bench-{tag}-s-{index}"), "legs": [
        {"payer": payer.as_str(), "payee": payee, "amount": AMOUNT, "currency": "EUR"},
        {"payer": payee, "payee": payer.as_str(), "amount": 1, "currency": "EUR"}]});
    nats_request(client, subject.clone(), Bytes::from(body.to_string()), Expect::Settled)
}

/// Pair `index` of a lifecycle row, over NATS: an authorization of [`AMOUNT`] and its capture
/// (`Scenario::AuthorizeCapture`), or a payment and its full refund by the merchant on its own
/// subject (otherwise); served when the second is captured or refunded.
fn lifecycle_pair(
    client: &async_nats::Client,
    payers: &Payers,
    scenario: Scenario,
    tag: &str,
    index: u32,
) -> impl Future<Output = bool> + Send + use<> {
    let (payer, subject) = payers.of(index).clone();
    let payee = Payees::Uniform.of(index);
    let first_id = format!("bench-{tag}-{}-{index}", if scenario == Scenario::AuthorizeCapture { "ac" } else { "pr" });
    let authorizing = scenario == Scenario::AuthorizeCapture;
    let mut first = json!({"version": PROTOCOL_VERSION, "id": first_id, "payer": payer.as_str(), "payee": payee,
                           "amount": AMOUNT, "currency": "EUR", "method": "card",
                           "details": {"pan": "4242424242424242", "expiry": "12/30"}});
    let (second, second_subject) = if authorizing {
        first["type"] = json!("authorize");
        let capture = json!({"version": PROTOCOL_VERSION, "type": "capture", "id": format!("{first_id}-c"),
                             "payer": payer.as_str(), "payment": first_id});
        (capture, subject.clone())
    } else {
        let refund = json!({"version": PROTOCOL_VERSION, "type": "refund", "id": format!("{first_id}-r"),
                            "payee": payee, "payment": first_id});
        (refund, payers.subject_of(payee))
    };
    let (client, expected) = (client.clone(), if authorizing { Status::Authorized } else { Status::Approved });
    async move {
        let answered = |subject: String, body: &serde_json::Value| {
            let (client, body) = (client.clone(), Bytes::from(body.to_string()));
            async move {
                request(&client, &subject, body).await.ok().and_then(|reply| serde_json::from_str::<Reply>(&reply).ok())
            }
        };
        if !answered(subject, &first).await.is_some_and(|reply| reply.status == expected) {
            return false;
        }
        let done = if authorizing { Status::Captured } else { Status::Refunded };
        answered(second_subject, &second).await.is_some_and(|reply| reply.status == done)
    }
}

/// Payments to the ten merchants sent at `rate` per second whatever the answers, for at most
/// `--payments` payments and `--seconds-max` seconds.
async fn open_loop_row(
    args: &BenchArgs,
    backend: Backend,
    client: &async_nats::Client,
    payers: &Payers,
    rate: u64,
    processes: (&NodeProcess, &PrivateNats),
) -> anyhow::Result<Row> {
    let rate = rate.max(1);
    let count = u64::from(args.payments).min(rate.saturating_mul(args.seconds_max)).max(1);
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    let what = format!("{} {}, {rate}/s", backend.name(), Scenario::OpenLoop.label());
    let measured = open_loop(&what, rate, count, |index| pay(client, payers, Payees::Uniform, "open", index));
    let (measured, cpu) = metered(processes, measured).await?;
    let load = format!("{}/s offered", super::report::thousands(rate));
    Ok(Row::measured(Scenario::OpenLoop, Some(backend), load, &measured)
        .offered(rate)
        .compare("offered", rate)
        .cpu(cpu))
}

/// Payment `index` of the measurement `tag` to `payees`, over NATS; served when approved.
fn pay(
    client: &async_nats::Client,
    payers: &Payers,
    payees: Payees,
    tag: &str,
    index: u32,
) -> impl Future<Output = bool> + Send + use<> {
    let (payer, subject) = payers.of(index);
    let body = json!({"version": PROTOCOL_VERSION, "id": format!("bench-{tag}-{index}"), "payer": payer.as_str(),
                      "payee": payees.of(index), "amount": AMOUNT, "currency": "EUR", "method": "card",
                      "details": {"pan": "4242424242424242", "expiry": "12/30"}});
    nats_request(client, subject.clone(), Bytes::from(body.to_string()), Expect::Approved)
}
