//! The operators' HTTP API against a running node.

#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use wasmpay_tests::{Harness, card};

#[tokio::test]
async fn v1_refuses_calls_without_the_right_token_and_changes_nothing() {
    let harness = Harness::start().await;
    let url = format!("{}/v1/accounts", harness.http());
    let body = Some(json!({"id": "mallory", "currency": "EUR"}));
    for token in ["", "wrong", "test-admin-tokeN"] {
        let (status, _) =
            wasmpay_node::client::http_call(hyper::Method::POST, &url, token, body.clone()).await.unwrap();
        assert_eq!(status.as_u16(), 401, "token {token:?}");
    }
    let (status, _) = harness.api("GET", "/v1/accounts/mallory", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn accounts_deposits_and_payments_over_http() {
    let harness = Harness::start().await;
    harness.open("alice", "EUR", -500).await;
    let (status, body) = harness.api("POST", "/v1/accounts", Some(json!({"id": "alice", "currency": "USD"}))).await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = harness.api("POST", "/v1/accounts", Some(json!({"id": "_sys", "currency": "EUR"}))).await;
    assert_eq!(status, 400);
    let (status, _) = harness.api("POST", "/v1/accounts", Some(json!({"id": "bad", "currency": "XXX"}))).await;
    assert_eq!(status, 400);

    let deposit = Some(json!({"id": "dep-1", "amount": 2_500}));
    let (first_status, first) = harness.api("POST", "/v1/accounts/alice/deposits", deposit.clone()).await;
    let (again_status, again) = harness.api("POST", "/v1/accounts/alice/deposits", deposit).await;
    assert_eq!((first_status, again_status), (201, 200));
    assert_eq!(first, again);
    let (status, _) =
        harness.api("POST", "/v1/accounts/alice/deposits", Some(json!({"id": "dep-1", "amount": 1}))).await;
    assert_eq!(status, 409);
    let (status, _) =
        harness.api("POST", "/v1/accounts/alice/deposits", Some(json!({"id": "dep-2", "amount": 0}))).await;
    assert_eq!(status, 400);

    let (status, body) = harness.api("GET", "/v1/accounts/alice", None).await;
    let account: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, account["balance"].as_i64(), account["floor"].as_i64()), (200, Some(2_500), Some(-500)));

    harness.open("shop", "EUR", 0).await;
    assert_eq!(harness.pay(&card("h-1", "alice", "shop", 3_000)).await.status, wasmpay_protocol::Status::Approved);
    let (status, body) = harness.api("GET", "/v1/payments/h-1", None).await;
    let payment: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200);
    assert_eq!(payment["reply"]["fee"], 112); // 2.9 % of 30.00 = 0.87, plus 0.25
    assert_eq!(payment["entries"].as_array().map(Vec::len), Some(3));
    let (status, _) = harness.api("GET", "/v1/payments/nope", None).await;
    assert_eq!(status, 404);

    let (status, body) = harness.api("GET", "/v1/plugins", None).await;
    assert_eq!(status, 200);
    assert!(body.contains("card") && body.contains("wallet"), "{body}");
}

/// Labels come from what the node knows, never from what a caller sends: a method nobody
/// serves and paths nobody routes add no series of their own.
#[tokio::test]
async fn metrics_labels_stay_bounded_whatever_a_caller_sends() {
    let harness = Harness::start().await;
    harness.open_pair("alice", "shop", 1_000).await;
    for n in 0..5 {
        let mut payment = card(&format!("m-{n}"), "alice", "shop", 100);
        payment["method"] = json!(format!("invented-{n}"));
        assert_eq!(harness.pay(&payment).await.code, wasmpay_protocol::Code::UnknownMethod);
        let (status, _) = harness.api("GET", &format!("/v1/nowhere-{n}/x"), None).await;
        assert_eq!(status, 404);
        let (status, _) = harness.api("GET", &format!("/v1/accounts/ghost-{n}"), None).await;
        assert_eq!(status, 404);
    }
    let (_, text) = harness.api("GET", "/metrics", None).await;
    assert!(!text.contains("invented") && !text.contains("nowhere") && !text.contains("ghost"), "{text}");
    let expected = [
        "wasmpay_payments_total{operation=\"pay\",method=\"\",status=\"rejected\",code=\"unknown_method\"} 5",
        "wasmpay_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 5",
        "wasmpay_http_requests_total{route=\"/v1/accounts/{id}\",method=\"GET\",status=\"404\"} 5",
    ];
    for needle in expected {
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

#[tokio::test]
async fn health_readiness_and_metrics_need_no_token() {
    let harness = Harness::start().await;
    harness.open_pair("alice", "shop", 1_000).await;
    harness.pay(&card("m-1", "alice", "shop", 100)).await;
    for (path, needle) in [
        ("/healthz", "ok"),
        ("/readyz", "ready"),
        ("/metrics", "wasmpay_payments_total{operation=\"pay\",method=\"card\",status=\"approved\",code=\"ok\"} 1"),
        ("/metrics", "wasmpay_payment_seconds_count{operation=\"pay\",method=\"card\",status=\"approved\"} 1"),
        ("/metrics", "wasmpay_plugin_call_seconds_count{plugin=\"card\",version=\"0.1.0\"} 2"),
        ("/metrics", "wasmpay_ledger_commit_seconds_count 1"),
        // The probes answered above, each under its route.
        ("/metrics", "wasmpay_http_requests_total{route=\"/readyz\",method=\"GET\",status=\"200\"} 1"),
        ("/metrics", "wasmpay_build_info{version=\""),
        ("/metrics", "process_cpu_seconds_total "),
    ] {
        let url = format!("{}{path}", harness.http());
        let (status, body) = wasmpay_node::client::http_call(hyper::Method::GET, &url, "", None).await.unwrap();
        assert_eq!(status.as_u16(), 200, "{path}");
        assert!(body.contains(needle), "{path}: {body}");
    }
}

/// The OpenAPI document is served without a token, is OpenAPI 3.1, and every operation it
/// lists is a route the node answers (never the router's "no such route"), so the document
/// cannot name a route the code lost. (CI also validates it against the OpenAPI 3.1 schema.)
#[tokio::test]
async fn the_openapi_document_lists_routes_the_node_serves() {
    let harness = Harness::start().await;
    let url = format!("{}/v1/openapi.json", harness.http());
    let (status, text) = wasmpay_node::client::http_call(hyper::Method::GET, &url, "", None).await.unwrap();
    assert_eq!(status.as_u16(), 200, "{text}");
    let document: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(text, wasmpay_node::api::openapi::document(), "`wasmpay openapi` prints what is served");
    let mut operations = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            // Every parameter a harmless value: nothing exists under it, the body is empty.
            let concrete = path.replace("{id}", "nothing-here").replace("{name}", "nothing-here");
            let body = (method != "get" && method != "delete").then(|| json!({}));
            let verb = hyper::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, answer) = harness.api(verb.as_str(), &concrete, body).await;
            assert!(
                !answer.contains("no such route"),
                "{method} {path} is documented but not routed: {status} {answer}"
            );
            operations += 1;
        }
    }
    assert!(operations >= 25, "only {operations} operations documented");
    let schemas = &document["components"]["schemas"];
    for schema in
        ["PaymentMessage", "Reply", "Problem", "AccountView", "StoredPayment", "Payments", "OpenHolds", "Asset"]
    {
        assert!(schemas.get(schema).is_some(), "{schema} is not in the document");
    }
}

/// A client's view of a node stopping under load. Every request ends: with the reply (and then
/// the payment is recorded), with "no responders" once the node's subscriptions are gone, or,
/// for a message that was on the wire when the node unsubscribed, with the client's own
/// timeout (async-nats drops a message that arrives after it sent UNSUB; docs/protocol.md
/// tells clients to retry with the same id). Nothing unanswered is ever recorded, and a retry
/// of a lost request after the stop finds no node rather than silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_every_payment_it_took_and_records_nothing_unanswered() {
    // Longer than the node's drain (5 s): a payment the node took is answered before the
    // client gives up, so only a message dropped on the wire can end in a timeout.
    const CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
    let mut harness = Harness::start().await;
    harness.open_pair("alice", "shop", 1_000_000).await;
    let subject = "wasmpay.submit.alice";
    let (first_reply, mut first_reply_seen) = tokio::sync::watch::channel(false);
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..200 {
        let client = harness.client.clone();
        let id = format!("sd-{i:03}");
        let body = card(&id, "alice", "shop", 100).to_string();
        let first_reply = first_reply.clone();
        requests.spawn(async move {
            let result = tokio::time::timeout(CLIENT_TIMEOUT, client.request(subject, body.clone().into())).await;
            let _ = first_reply.send(true);
            (id, body, result)
        });
    }
    first_reply_seen.wait_for(|seen| *seen).await.unwrap();
    harness.stop().await;
    let (mut answered, mut lost) = (Vec::new(), Vec::new());
    while let Some(joined) = requests.join_next().await {
        match joined.unwrap() {
            (id, _, Ok(Ok(message))) => {
                let reply = wasmpay_tests::parse(std::str::from_utf8(&message.payload).unwrap());
                assert_eq!(reply.status, wasmpay_protocol::Status::Approved, "{reply:?}");
                answered.push(id);
            }
            // No node was subscribed any more: refused at once, never taken.
            (_, _, Ok(Err(_))) => {}
            (id, body, Err(_elapsed)) => lost.push((id, body)),
        }
    }
    let ledger = wasmpay_ledger::Ledger::open(&harness.database_url).await.unwrap();
    for id in &answered {
        assert!(ledger.payment(id).await.unwrap().is_some(), "{id} was answered but not recorded");
    }
    for (id, body) in &lost {
        assert!(ledger.payment(id).await.unwrap().is_none(), "{id} was recorded but never answered");
        let retry = tokio::time::timeout(CLIENT_TIMEOUT, harness.client.request(subject, body.clone().into())).await;
        assert!(matches!(retry, Ok(Err(_))), "a retry of {id} after the stop must find no node, not silence");
    }
    let audit = ledger.audit().await.unwrap();
    let approved = audit.payments_by_outcome.get("payment approved ok").copied().unwrap_or_default();
    assert_eq!(usize::try_from(approved).unwrap(), answered.len());
    assert!(!answered.is_empty() && audit.is_balanced(), "{audit:?}");
}

/// Sends `request` as raw bytes and returns the status code of the answer.
async fn raw_status(harness: &Harness, request: String) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = harness.http().trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0; 4_096];
    let read = tokio::time::timeout(wasmpay_tests::WAIT, stream.read(&mut answer)).await.unwrap().unwrap();
    let head = String::from_utf8_lossy(&answer[..read]).into_owned();
    head.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("no status in {head}"))
}

#[tokio::test]
async fn requests_are_read_exactly() {
    let harness = Harness::start().await;
    harness.open_pair("alice", "shop", 10_000).await;
    assert_eq!(harness.pay(&card("x:card:1", "alice", "shop", 100)).await.status, wasmpay_protocol::Status::Approved);
    // Paths are percent-decoded; the scheme of the token is case-insensitive (RFC 9110).
    for path in ["/v1/payments/x%3Acard%3A1", "/v1/accounts/sh%6Fp"] {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: bearer {}\r\n\r\n", wasmpay_tests::TOKEN);
        assert_eq!(raw_status(&harness, request).await, 200, "{path}");
    }
    // A repeated key in a body is refused, whichever value a reader would keep.
    let body = r#"{"id":"dup-1","amount":1,"amount":999999}"#;
    let request = format!(
        "POST /v1/accounts/alice/deposits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n{body}",
        wasmpay_tests::TOKEN,
        body.len()
    );
    assert_eq!(raw_status(&harness, request).await, 400);
    assert_eq!(harness.balance("alice").await, 9_900);
    // Floors are bounded like amounts.
    let (status, body) =
        harness.api("POST", "/v1/accounts", Some(json!({"id": "deep", "currency": "EUR", "floor": i64::MIN}))).await;
    assert_eq!(status, 400, "{body}");
}

/// Deposits debit the currency's external account; once that balance would leave the 64-bit
/// range the deposit is refused as permanently out of range, not as "retry later".
#[tokio::test]
async fn a_permanent_ledger_condition_is_not_answered_as_retryable() {
    let harness = Harness::start().await;
    harness.open("whale", "EUR", 0).await;
    harness.open("whale-2", "EUR", 0).await;
    let largest = wasmpay_protocol::money::MAX_PAYMENT_MINOR_UNITS;
    for (index, account) in ["whale", "whale-2"].into_iter().enumerate() {
        let id = wasmpay_protocol::routing::AccountId::new(account).unwrap();
        let account = harness.ledger.account(&id).await.unwrap().unwrap();
        for deposit in 0..512 {
            let amount = wasmpay_protocol::money::MinorUnits::payment_amount(largest).unwrap();
            harness
                .ledger
                .deposit(
                    &wasmpay_protocol::PaymentId::new(format!("fill-{index}-{deposit}")).unwrap(),
                    &account,
                    amount,
                    0,
                )
                .await
                .unwrap();
        }
    }
    let (status, body) = harness
        .api("POST", "/v1/accounts/whale/deposits", Some(json!({"id": "one-too-many", "amount": largest})))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("amount_out_of_range"), "{body}");
}

/// `/readyz` polled from the moment a node starts: at its first 200 a payment for every one of
/// its partitions is answered (before, the first 200 came before any partition was open, and
/// the first payment got "no responders" in 10 of 10 starts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_first_ready_every_partition_answers() {
    use wasmpay_node::node::{Node, NodeSettings};
    const STARTS: usize = 3;
    let partitioner =
        wasmpay_protocol::routing::Partitioner::new(wasmpay_protocol::routing::DEFAULT_PARTITIONS).unwrap();
    // One payer per partition.
    let mut payers = std::collections::BTreeMap::new();
    for index in 0.. {
        let payer = wasmpay_protocol::routing::AccountId::new(format!("payer-{index}")).unwrap();
        payers.entry(partitioner.partition_of(&payer)).or_insert(payer);
        if payers.len() == partitioner.partitions() as usize {
            break;
        }
    }
    for start in 0..STARTS {
        // A server of its own: a deployment is bound to the first ledger that served it.
        let nats = wasmpay_tests::NatsServer::start(None).unwrap();
        let client = async_nats::connect(nats.url()).await.unwrap();
        let workdir = tempfile::tempdir().unwrap();
        let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let settings = NodeSettings {
            nats_url: nats.url(),
            database_url: wasmpay_tests::Backend::Sqlite.fresh_database(workdir.path()),
            http_address: address,
            node_id: "starting".into(),
            ..NodeSettings::new()
        };
        let node = tokio::spawn(Node::start(settings));
        let url = format!("http://{address}/readyz");
        let started = std::time::Instant::now();
        loop {
            if let Ok((status, _)) = wasmpay_node::client::http_call(hyper::Method::GET, &url, "", None).await
                && status.as_u16() == 200
            {
                break;
            }
            assert!(started.elapsed() < 3 * wasmpay_tests::WAIT, "start {start}: never ready");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let requests = payers.iter().map(|(partition, payer)| {
            let subject = wasmpay_protocol::routing::subjects::pay(*partition, payer.as_str());
            let body = card(&format!("first-{start}-{partition}"), payer.as_str(), "shop", 100).to_string();
            let client = client.clone();
            async move { (partition, client.request(subject, body.into()).await) }
        });
        for (partition, answered) in futures::future::join_all(requests).await {
            assert!(answered.is_ok(), "start {start}: partition {partition} at the first 200: {answered:?}");
        }
        node.await.unwrap().unwrap().shutdown().await;
    }
}

/// A second connection holds `LOCK TABLE payments IN ACCESS EXCLUSIVE MODE`: every batch
/// stalls, and `/readyz` says so within its bound (before, 200 in 31 of 31 samples), then
/// says ready again once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_sees_a_locked_ledger_table() {
    use sqlx::Connection as _;
    let harness = Harness::start_on(wasmpay_tests::Backend::Postgres).await;
    let readyz = || async {
        let started = std::time::Instant::now();
        let (status, body) = harness.api("GET", "/readyz", None).await;
        assert!(started.elapsed() <= wasmpay_ledger::PROBE_TIMEOUT + std::time::Duration::from_millis(500));
        (status, body)
    };
    assert_eq!(readyz().await.0, 200);
    let mut peer = sqlx::PgConnection::connect(&harness.database_url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE payments IN ACCESS EXCLUSIVE MODE").execute(&mut peer).await.unwrap();
    tokio::time::sleep(wasmpay_ledger::PROBE_INTERVAL).await;
    let (status, body) = readyz().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("ledger_unwritable") && body.contains("lock"), "{body}");
    sqlx::raw_sql("COMMIT").execute(&mut peer).await.unwrap();
    tokio::time::sleep(wasmpay_ledger::PROBE_INTERVAL).await;
    let (status, body) = readyz().await;
    assert_eq!(status, 200, "{body}");
}

/// Payments fail in the ledger while a probe's small write would pass (a trigger refuses every
/// payment row, as a disk whose last pages fit the probe but not a batch): the node is not
/// ready until a batch commits again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_sees_failing_batches() {
    let harness = Harness::start().await;
    harness.open_pair("alice", "shop", 10_000).await;
    let raw = sqlx::SqlitePool::connect(&harness.database_url).await.unwrap();
    sqlx::query("CREATE TRIGGER no_room BEFORE INSERT ON payments BEGIN SELECT RAISE(ABORT, 'no room'); END")
        .execute(&raw)
        .await
        .unwrap();
    let failed = harness.pay(&card("fails-1", "alice", "shop", 100)).await;
    assert_eq!(failed.status, wasmpay_protocol::Status::Error, "{failed:?}");
    let (status, body) = harness.api("GET", "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("ledger_unwritable") && body.contains("no room"), "{body}");
    sqlx::query("DROP TRIGGER no_room").execute(&raw).await.unwrap();
    let retried = harness.pay(&card("fails-1", "alice", "shop", 100)).await;
    assert_eq!(retried.status, wasmpay_protocol::Status::Approved, "{retried:?}");
    let (status, body) = harness.api("GET", "/readyz", None).await;
    assert_eq!(status, 200, "{body}");
}

/// A few hundred idle connections, renewed all along, as many as the node's cap and more:
/// `/healthz`, `/readyz` and an authenticated call still answer, each within a bound. Before,
/// the cap (256) refused every new connection while the idle ones held it, probes included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_anonymous_connections_cannot_lock_out_probes_or_operators() {
    use std::time::{Duration, Instant};
    const IDLE: usize = 300;
    const RENEWED_PER_ROUND: usize = 20;
    const ANSWER_BOUND: Duration = Duration::from_secs(4); // readiness itself may take 3 s
    let harness = Harness::start().await;
    harness.open("alice", "EUR", 0).await;
    let address = harness.http().trim_start_matches("http://").to_owned();
    let mut idle = std::collections::VecDeque::new();
    for _ in 0..IDLE {
        idle.push_back(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    // Keeps renewing them: the oldest go, new ones come, as a client evading the header
    // timeout would.
    let renewer = tokio::spawn({
        let address = address.clone();
        async move {
            while !*stopped.borrow() {
                for _ in 0..RENEWED_PER_ROUND {
                    idle.pop_front();
                    idle.push_back(tokio::net::TcpStream::connect(&address).await.unwrap());
                }
                tokio::select! {
                    _ = stopped.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            idle.len()
        }
    });
    let base = harness.http();
    for round in 0..5 {
        for (path, token, expected) in
            [("/healthz", "", "ok"), ("/readyz", "", "ready"), ("/v1/accounts/alice", wasmpay_tests::TOKEN, "alice")]
        {
            let started = Instant::now();
            let url = format!("{base}{path}");
            let answered = tokio::time::timeout(
                ANSWER_BOUND,
                wasmpay_node::client::http_call(hyper::Method::GET, &url, token, None),
            )
            .await;
            let (status, body) = answered
                .unwrap_or_else(|_| panic!("round {round}: {path} unanswered after {ANSWER_BOUND:?}"))
                .unwrap_or_else(|error| panic!("round {round}: {path}: {error}"));
            assert_eq!(status.as_u16(), 200, "round {round}: {path}: {body}");
            assert!(body.contains(expected), "round {round}: {path}: {body}");
            assert!(started.elapsed() < ANSWER_BOUND);
        }
    }
    stop.send(true).unwrap();
    assert_eq!(renewer.await.unwrap(), IDLE);
}
