//! Every wait of a node has a bound: it stops with its NATS server gone and with HTTP
//! clients that never finish a request; idle connections cannot lock operators out; one
//! saturated partition does not delay the others.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use wasmpay_node::api::HttpLimits;
use wasmpay_node::config::Config;
use wasmpay_plugin_host::SandboxSettings;
use wasmpay_protocol::{Code, Status};
use wasmpay_tests::{Harness, card};

/// How long any stop below may take: bus drain (5 s) and HTTP grace are both well inside it.
const STOP_BOUND: Duration = Duration::from_secs(15);

async fn stop_within_bound(harness: &mut Harness) {
    let started = Instant::now();
    tokio::time::timeout(STOP_BOUND, harness.stop()).await.expect("the node stops within its bound");
    assert!(started.elapsed() < STOP_BOUND);
}

/// With its NATS server gone a node says it is not ready (and why), and still stops.
#[tokio::test]
async fn a_node_stops_when_its_nats_server_is_gone() {
    let mut harness = Harness::start().await;
    let (status, body) = harness.api("GET", "/readyz", None).await;
    assert_eq!(status, 200, "{body}");
    harness.kill_nats();
    let started = Instant::now();
    loop {
        let (status, body) = harness.api("GET", "/readyz", None).await;
        if status == 503 {
            assert!(body.contains("NATS is not connected"), "{body}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still ready without NATS: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_within_bound(&mut harness).await;
}

#[tokio::test]
async fn a_node_stops_while_a_client_holds_a_half_sent_request() {
    let http = HttpLimits { shutdown_grace_ms: 1_000, ..HttpLimits::default() };
    let mut harness = Harness::start_with(Config { http, ..Config::default() }, None).await;
    let address = harness.http().trim_start_matches("http://").to_owned();
    let mut slow = TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"POST /v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"id\":").await.unwrap();
    let mut idle = TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop_within_bound(&mut harness).await;
}

/// Idle connections beyond the cap take the places of the idlest ones, which are closed, and
/// those within it are closed once they have sent no request for the header timeout: a probe
/// gets through.
#[tokio::test]
async fn idle_connections_cannot_lock_out_the_health_check() {
    let http = HttpLimits { max_connections: 8, header_read_timeout_ms: 1_000, ..HttpLimits::default() };
    let harness = Harness::start_with(Config { http, ..Config::default() }, None).await;
    let address = harness.http().trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..32 {
        idle.push(TcpStream::connect(&address).await.unwrap());
    }
    let started = Instant::now();
    loop {
        let url = format!("{}/healthz", harness.http());
        if let Ok((status, _)) = wasmpay_node::client::http_call(hyper::Method::GET, &url, "", None).await
            && status == 200
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the health check never got through");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(idle);
}

fn work(id: &str, payer: &str, iterations: u64) -> Value {
    json!({"version": 1, "id": id, "payer": payer, "payee": "shop", "amount": 100, "currency": "EUR",
           "method": "faulty", "details": {"fault": "work", "iterations": iterations.to_string()}})
}

/// One payer floods its partition with slow payments; another partition's payment is decided
/// while that backlog is still being worked off, and the flood's overflow is refused at once
/// as `unavailable` rather than holding the dispatcher (and every other partition) back. The
/// slow payments take ~100 ms each on this machine kind (10x the fuel budget's default lets
/// them), so the backlog outlasts the other payment's 100 ms head start by several times: at
/// 20 M iterations each took ~20 ms once plugins compiled faster, and the whole backlog was
/// gone before the other payment was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_partition_does_not_delay_the_others() {
    let sandbox = SandboxSettings { fuel_per_call: 10_000_000_000, ..SandboxSettings::default() };
    let config = Config { sandbox, ..Config::default() };
    let harness = Harness::start_custom(config, None, |settings| settings.partition_queue_depth = 4).await;
    for account in ["alice", "bob", "shop"] {
        harness.open(account, "EUR", 0).await;
    }
    harness.deposit("alice", 1_000_000).await;
    harness.deposit("bob", 1_000_000).await;
    let flood: Vec<Value> = (0..40).map(|index| work(&format!("flood-{index:02}"), "alice", 100_000_000)).collect();
    let started = Instant::now();
    let flooding = futures::future::join_all(flood.iter().map(|payment| async {
        let reply = harness.pay(payment).await;
        (reply, Instant::now())
    }));
    let other = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reply = harness.pay(&card("other-partition", "bob", "shop", 100)).await;
        (reply, Instant::now())
    };
    let (flood_replies, (other_reply, other_answered)) = tokio::join!(flooding, other);
    assert_eq!(other_reply.status, Status::Approved, "{other_reply:?}");
    let approved: Vec<Instant> =
        flood_replies.iter().filter(|(reply, _)| reply.status == Status::Approved).map(|(_, at)| *at).collect();
    let saturated = flood_replies.iter().filter(|(reply, _)| reply.code == Code::Unavailable).count();
    assert!(saturated > 0, "the overflow must be refused, not queued without bound");
    assert!(approved.len() + saturated == flood.len(), "{flood_replies:?}");
    let last_flood = approved.iter().max().copied().unwrap();
    assert!(
        last_flood.duration_since(started) > Duration::from_millis(300),
        "the backlog was worked off in {:?}, too soon to show anything: make the flood slower",
        last_flood.duration_since(started)
    );
    assert!(other_answered < last_flood, "the other partition waited for the flooded one");
}
