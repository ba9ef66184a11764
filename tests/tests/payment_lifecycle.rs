//! The payment lifecycle over a real NATS server: authorizations held, captured in part,
//! voided, expired by the partition's sweep; refunds of payments and captures; each with its
//! own reply, replay and event.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use wasmpay_node::config::Config;
use wasmpay_node::holds::{DEFAULT_EXPIRY_S, HoldSettings};
use wasmpay_plugin_host::{PluginSettings, PluginSource};
use wasmpay_protocol::money::FeeBearer;
use wasmpay_protocol::{Code, PaymentId, Reply, Status};
use wasmpay_tests::{Backend, Harness, card, next_message, on_both_backends, parse};

on_both_backends!(
    an_authorization_is_captured_in_part_and_the_rest_released,
    a_void_releases_the_hold_and_bad_captures_change_nothing,
    an_uncaptured_authorization_expires_and_a_late_capture_hears_so,
    refunds_move_money_back_on_the_payees_subject_up_to_what_was_paid,
    a_refunds_fee_is_the_fee_policys_and_a_plugin_built_against_0_1_0_keeps_it,
    statements_page_through_entries_and_payments_and_a_record_shows_its_history,
    a_settlement_applies_every_leg_or_none_across_partitions,
    clients_pay_and_operate_over_http_with_keys_the_operator_issues_and_revokes,
    an_operator_registers_an_asset_and_a_trade_settles_cash_against_it,
);

async fn funded(backend: Backend, config: Config) -> Harness {
    let harness = Harness::start_on_with(backend, config).await;
    harness.open("alice", "EUR", 0).await;
    harness.open("shop", "EUR", 0).await;
    harness.deposit("alice", 10_000).await;
    harness
}

fn authorize(id: &str, amount: u64) -> Value {
    let mut authorization = card(id, "alice", "shop", amount);
    authorization["type"] = json!("authorize");
    authorization
}

fn capture(id: &str, payment: &str, amount: Option<u64>) -> Value {
    let mut capture = json!({"version": 1, "type": "capture", "id": id, "payer": "alice", "payment": payment});
    if let Some(amount) = amount {
        capture["amount"] = json!(amount);
    }
    capture
}

fn void(id: &str, payment: &str) -> Value {
    json!({"version": 1, "type": "void", "id": id, "payer": "alice", "payment": payment})
}

fn refund(id: &str, payee: &str, payment: &str, amount: Option<u64>) -> Value {
    let mut refund = json!({"version": 1, "type": "refund", "id": id, "payee": payee, "payment": payment});
    if let Some(amount) = amount {
        refund["amount"] = json!(amount);
    }
    refund
}

/// Sends `body` on the subject of `account` (a refund goes on its payee's, a settlement on its
/// first leg's payer's); the reply's bytes.
async fn send_raw_as(harness: &Harness, account: &str, body: &Value) -> String {
    let account = wasmpay_protocol::routing::AccountId::new(account).unwrap();
    let subject =
        wasmpay_protocol::routing::subjects::pay(harness.partitioner.partition_of(&account), account.as_str());
    harness.request(&subject, body.to_string().into_bytes()).await
}

/// [`send_raw_as`], parsed.
async fn send_as(harness: &Harness, account: &str, body: &Value) -> Reply {
    parse(&send_raw_as(harness, account, body).await)
}

async fn held(harness: &Harness, account: &str) -> i64 {
    harness
        .ledger
        .account(&wasmpay_protocol::routing::AccountId::new(account).unwrap())
        .await
        .unwrap()
        .expect("opened")
        .held
        .0
}

async fn an_authorization_is_captured_in_part_and_the_rest_released(backend: Backend) {
    let harness = funded(backend, Config::default()).await;
    let mut events = harness.client.subscribe("wasmpay.events.payment.>").await.unwrap();
    harness.client.flush().await.unwrap();

    let before_ms = i64::try_from(std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap().as_millis()).unwrap();
    let authorized = harness.pay(&authorize("a-1", 1_000)).await;
    assert_eq!((authorized.status, authorized.code), (Status::Authorized, Code::Authorized), "{authorized:?}");
    // 2.9 % of 10.00 = 0.29, plus 0.25 fixed, borne by the payee: nothing of it is held.
    assert_eq!((authorized.amount, authorized.fee), (Some(1_000), Some(54)));
    let expires_at_ms = authorized.expires_at_ms.expect("an authorization says when it lapses");
    let seven_days_ms = i64::try_from(DEFAULT_EXPIRY_S * 1_000).unwrap();
    assert!((before_ms + seven_days_ms..before_ms + seven_days_ms + 60_000).contains(&expires_at_ms));
    assert_eq!((harness.balance("alice").await, held(&harness, "alice").await), (10_000, 1_000));
    // The hold counts against the floor: 9,001 more is more than is available.
    let over = harness.pay(&card("p-over", "alice", "shop", 9_001)).await;
    assert_eq!(over.code, Code::InsufficientFunds, "{over:?}");

    let raw = harness.pay_raw(&capture("c-1", "a-1", Some(600))).await;
    let captured = parse(&raw);
    assert_eq!((captured.status, captured.code), (Status::Captured, Code::Captured), "{captured:?}");
    // The fee prorated: 54 x 600 / 1,000 = 32.4, rounded down.
    assert_eq!((captured.amount, captured.fee, captured.payment.as_deref()), (Some(600), Some(32), Some("a-1")));
    assert_eq!((harness.balance("alice").await, held(&harness, "alice").await), (9_400, 0));
    assert_eq!(harness.balance("shop").await, 600 - 32);
    assert_eq!(harness.balance("_fees_EUR").await, 32);
    // A retry gets the stored bytes; a second capture finds the authorization closed.
    assert_eq!(harness.pay_raw(&capture("c-1", "a-1", Some(600))).await, raw);
    let again = harness.pay(&capture("c-2", "a-1", Some(100))).await;
    assert_eq!((again.status, again.code), (Status::Declined, Code::InvalidState), "{again:?}");
    let conflicting = harness.pay(&capture("c-1", "a-1", Some(500))).await;
    assert_eq!(conflicting.code, Code::Conflict, "{conflicting:?}");

    let mut subjects = Vec::new();
    for _ in 0..4 {
        let event = next_message(&mut events).await;
        subjects.push((event.subject.to_string(), parse(std::str::from_utf8(&event.payload).unwrap()).id));
    }
    let named = |status: &str, id: &str| (format!("wasmpay.events.payment.{status}"), Some(id.to_owned()));
    assert_eq!(
        subjects,
        [named("authorized", "a-1"), named("declined", "p-over"), named("captured", "c-1"), named("declined", "c-2")]
    );
    let stored = harness.ledger.payment("c-1").await.unwrap().expect("recorded");
    assert_eq!(stored.entries, [("alice".into(), -600), ("shop".into(), 568), ("_fees_EUR".into(), 32)]);
    let audit = harness.ledger.audit().await.unwrap();
    assert_eq!(audit.first_violation(), None, "{audit:?}");
}

async fn a_void_releases_the_hold_and_bad_captures_change_nothing(backend: Backend) {
    let harness = funded(backend, Config::default()).await;
    assert_eq!(harness.pay(&authorize("a-1", 2_000)).await.code, Code::Authorized);

    let refused = |reply: &Reply, code: Code| {
        assert_eq!((reply.status, reply.code), (Status::Rejected, code), "{reply:?}");
    };
    refused(&harness.pay(&capture("c-big", "a-1", Some(2_001))).await, Code::ExceedsAuthorized);
    refused(&harness.pay(&capture("c-none", "nobody", None)).await, Code::UnknownPayment);
    // Another payer's subject: the authorization is not theirs.
    harness.open("bob", "EUR", 0).await;
    let mut bobs = capture("c-bob", "a-1", None);
    bobs["payer"] = json!("bob");
    refused(&harness.pay(&bobs).await, Code::UnknownPayment);
    let mut void_amount = void("v-amount", "a-1");
    void_amount["amount"] = json!(5);
    refused(&harness.pay(&void_amount).await, Code::InvalidRequest);
    for unrecorded in ["c-big", "c-none", "c-bob", "v-amount"] {
        assert!(harness.ledger.payment(unrecorded).await.unwrap().is_none(), "{unrecorded} was recorded");
    }
    assert_eq!(held(&harness, "alice").await, 2_000);

    let voided = harness.pay(&void("v-1", "a-1")).await;
    assert_eq!((voided.status, voided.code, voided.fee), (Status::Voided, Code::Voided, None), "{voided:?}");
    assert_eq!((harness.balance("alice").await, held(&harness, "alice").await), (10_000, 0));
    let late = harness.pay(&capture("c-1", "a-1", None)).await;
    assert_eq!(late.code, Code::InvalidState, "{late:?}");
    assert_eq!(harness.balance("shop").await, 0);
    let audit = harness.ledger.audit().await.unwrap();
    assert_eq!(audit.first_violation(), None, "{audit:?}");
}

async fn an_uncaptured_authorization_expires_and_a_late_capture_hears_so(backend: Backend) {
    let holds =
        HoldSettings { by_method: [("card".to_owned(), 1)].into(), sweep_interval_ms: 100, ..HoldSettings::default() };
    let harness = funded(backend, Config { holds, ..Config::default() }).await;
    let mut expired = harness.client.subscribe("wasmpay.events.payment.expired").await.unwrap();
    harness.client.flush().await.unwrap();

    let authorized = harness.pay(&authorize("a-1", 3_000)).await;
    assert_eq!(authorized.code, Code::Authorized, "{authorized:?}");
    assert_eq!(held(&harness, "alice").await, 3_000);

    // Released by the partition's owner within a second of its expiry (plus a sweep).
    let event =
        tokio::time::timeout(Duration::from_secs(5), next_message(&mut expired)).await.expect("expired in time");
    let reply = parse(std::str::from_utf8(&event.payload).unwrap());
    assert_eq!((reply.status, reply.code, reply.id.as_deref()), (Status::Expired, Code::Expired, Some("a-1")));
    assert_eq!((harness.balance("alice").await, held(&harness, "alice").await), (10_000, 0));
    let hold = harness.ledger.hold(&PaymentId::new("a-1").unwrap()).await.unwrap().expect("recorded");
    assert_eq!(hold.state, wasmpay_ledger::HoldState::Expired);

    let late = harness.pay(&capture("c-1", "a-1", None)).await;
    assert_eq!((late.status, late.code), (Status::Declined, Code::HoldExpired), "{late:?}");
    assert_eq!(harness.balance("shop").await, 0);
    let audit = harness.ledger.audit().await.unwrap();
    assert_eq!(audit.first_violation(), None, "{audit:?}");
}

async fn refunds_move_money_back_on_the_payees_subject_up_to_what_was_paid(backend: Backend) {
    // The card's fee is kept on refunds, the default rule (the next test prices them).
    let mut config = Config::default();
    let keeps = PluginSettings { path: None, config: [("refund.reverse".to_owned(), "none".to_owned())].into() };
    config.plugins.insert("card".into(), keeps);
    let harness = funded(backend, config).await;
    let mut refunded = harness.client.subscribe("wasmpay.events.payment.refunded").await.unwrap();
    harness.client.flush().await.unwrap();
    assert_eq!(harness.pay(&card("p-1", "alice", "shop", 1_000)).await.code, Code::Ok);
    // The shop got 1,000 less the 54 fee it bore.
    assert_eq!(harness.balance("shop").await, 946);

    let first = send_as(&harness, "shop", &refund("r-1", "shop", "p-1", Some(400))).await;
    assert_eq!((first.status, first.code, first.amount), (Status::Refunded, Code::Refunded, Some(400)), "{first:?}");
    assert_eq!(first.payment.as_deref(), Some("p-1"));
    assert_eq!((harness.balance("alice").await, harness.balance("shop").await), (9_400, 546));
    let event = next_message(&mut refunded).await;
    assert_eq!(parse(std::str::from_utf8(&event.payload).unwrap()), first);

    // All that is left (600) is more than the shop holds: declined, nothing posted.
    let short = send_as(&harness, "shop", &refund("r-2", "shop", "p-1", None)).await;
    assert_eq!((short.status, short.code, short.retryable), (Status::Declined, Code::InsufficientFunds, true));
    harness.deposit("shop", 100).await;
    let rest = send_as(&harness, "shop", &refund("r-3", "shop", "p-1", None)).await;
    assert_eq!((rest.code, rest.amount), (Code::Refunded, Some(600)), "{rest:?}");
    let more = send_as(&harness, "shop", &refund("r-4", "shop", "p-1", Some(1))).await;
    assert_eq!((more.status, more.code), (Status::Declined, Code::ExceedsRefundable), "{more:?}");
    assert_eq!((harness.balance("alice").await, harness.balance("shop").await), (10_000, 46));
    // The fee stays collected: the merchant paid for the work the payment caused.
    assert_eq!(harness.balance("_fees_EUR").await, 54);

    // A capture is refunded like a payment; an authorization moved nothing to refund.
    assert_eq!(harness.pay(&authorize("a-1", 500)).await.code, Code::Authorized);
    assert_eq!(harness.pay(&capture("c-1", "a-1", Some(300))).await.code, Code::Captured);
    let of_capture = send_as(&harness, "shop", &refund("r-5", "shop", "c-1", Some(100))).await;
    assert_eq!(of_capture.code, Code::Refunded, "{of_capture:?}");
    let rejected =
        |reply: Reply, code: Code| assert_eq!((reply.status, reply.code), (Status::Rejected, code), "{reply:?}");
    rejected(send_as(&harness, "shop", &refund("r-6", "shop", "a-1", None)).await, Code::NotRefundable);
    rejected(send_as(&harness, "shop", &refund("r-7", "shop", "nothing", None)).await, Code::UnknownPayment);
    // Only the payee refunds, and only on its own subject.
    rejected(send_as(&harness, "alice", &refund("r-8", "alice", "p-1", None)).await, Code::UnknownPayment);
    rejected(send_as(&harness, "alice", &refund("r-9", "shop", "p-1", None)).await, Code::WrongPartition);
    let audit = harness.ledger.audit().await.unwrap();
    assert_eq!(audit.first_violation(), None, "{audit:?}");
}

async fn a_refunds_fee_is_the_fee_policys_and_a_plugin_built_against_0_1_0_keeps_it(backend: Backend) {
    let legacy = PluginSource::Builtin("contract_0_1_0", wasmpay_plugin_artifacts::CONTRACT_0_1_0, None);
    let harness =
        Harness::start_on_custom(backend, Config::default(), |settings| settings.plugin_sources.push(legacy)).await;
    harness.open("alice", "EUR", 0).await;
    harness.open("shop", "EUR", 0).await;
    harness.deposit("alice", 100_000).await;
    harness.deposit("shop", 10_000).await;
    let (status, plugins) = harness.api("GET", "/v1/plugins", None).await;
    assert_eq!(status, 200, "{plugins}");
    let plugins: Value = serde_json::from_str(&plugins).unwrap();
    let prices_refunds = |name: &str| {
        let plugin =
            plugins["plugins"].as_array().unwrap().iter().find(|plugin| plugin["name"] == name).expect("listed");
        plugin["versions"][0]["prices_refunds"].as_bool()
    };
    // Built with the SDK (0.1.1) or by hand against 0.1.0: both load, one prices refunds.
    assert_eq!((prices_refunds("card"), prices_refunds("legacy")), (Some(true), Some(false)), "{plugins}");

    // card: 2.9 % + 0.25 borne by the shop; a refund gives back 2.9 % of itself, never the
    // fixed part, never more than the fee prorated to what was refunded.
    assert_eq!(harness.pay(&card("p-1", "alice", "shop", 1_000)).await.fee, Some(54));
    let raw = send_raw_as(&harness, "shop", &refund("r-1", "shop", "p-1", Some(400))).await;
    let first = parse(&raw);
    assert_eq!((first.code, first.fee, first.fee_reversed), (Code::Refunded, Some(0), Some(12)), "{first:?}");
    assert_eq!(first.plugins, ["card@0.1.0"]);
    // Back to whoever bore the fee: the shop pays 400 and gets 12 of its fee back.
    assert_eq!(harness.balance("shop").await, 10_000 + 946 - 400 + 12);
    assert_eq!(harness.balance("_fees_EUR").await, 54 - 12);
    assert_eq!(send_raw_as(&harness, "shop", &refund("r-1", "shop", "p-1", Some(400))).await, raw);
    let rest = send_as(&harness, "shop", &refund("r-2", "shop", "p-1", None)).await;
    assert_eq!((rest.code, rest.amount, rest.fee_reversed), (Code::Refunded, Some(600), Some(17)), "{rest:?}");
    assert_eq!(harness.balance("_fees_EUR").await, 25, "the fixed part is kept");

    // A plugin built against wasmpay:plugin@0.1.0 decides payments as before and, having no
    // refund-fee export, keeps its fee.
    let mut old = card("l-1", "alice", "shop", 1_000);
    old["method"] = json!("legacy");
    let paid = harness.pay(&old).await;
    assert_eq!((paid.code, paid.fee, paid.plugins.clone()), (Code::Ok, Some(10), vec!["legacy@0.1.0".to_owned()]));
    let kept = send_as(&harness, "shop", &refund("r-3", "shop", "l-1", None)).await;
    assert_eq!((kept.code, kept.fee, kept.fee_reversed), (Code::Refunded, Some(0), None), "{kept:?}");
    assert_eq!(harness.balance("_fees_EUR").await, 25 + 10);

    // A hostile fee policy: what it charges is within the method's bound, what it gives back
    // within the fee, a trap or a loop refuses the refund and records nothing.
    let faulty = |id: &str, fault: &str, fee: u64| {
        json!({"version": 1, "id": id, "payer": "alice", "payee": "shop", "amount": 500, "currency": "EUR",
               "method": "faulty", "metadata": {"refund_fault": fault, "refund_fee": fee.to_string()}})
    };
    let fees = harness.balance("_fees_EUR").await;
    for (id, fault, fee) in [("f-1", "charge", 30), ("f-2", "decline", 0), ("f-3", "reverse", 1), ("f-4", "trap", 0)] {
        assert_eq!(harness.pay(&faulty(id, fault, fee)).await.code, Code::Ok);
    }
    let charged = send_as(&harness, "shop", &refund("r-f1", "shop", "f-1", None)).await;
    assert_eq!((charged.code, charged.fee, charged.fee_bearer), (Code::Refunded, Some(30), Some(FeeBearer::Payer)));
    assert_eq!(harness.balance("_fees_EUR").await, fees + 30);
    let declined = send_as(&harness, "shop", &refund("r-f2", "shop", "f-2", None)).await;
    assert_eq!((declined.status, declined.code), (Status::Declined, Code::PluginDeclined), "{declined:?}");
    assert_eq!(declined.reason.as_deref(), Some("refund_window_closed"));
    for (id, payment) in [("r-f3", "f-3"), ("r-f4", "f-4")] {
        let failed = send_as(&harness, "shop", &refund(id, "shop", payment, None)).await;
        assert_eq!(
            (failed.status, failed.code, failed.retryable),
            (Status::Error, Code::PluginFailed, true),
            "{failed:?}"
        );
        assert_eq!(failed.plugins, ["faulty@0.1.0"]);
        assert_eq!(harness.ledger.payment(id).await.unwrap(), None, "a failed plugin records nothing");
    }
    let charged_too_much = faulty("f-5", "charge", 1_000);
    assert_eq!(harness.pay(&charged_too_much).await.code, Code::Ok);
    let refused = send_as(&harness, "shop", &refund("r-f5", "shop", "f-5", None)).await;
    assert_eq!(refused.code, Code::PluginFailed, "{refused:?}");
    assert!(refused.message.contains("bound"), "{refused:?}");
    assert_eq!(harness.balance("_fees_EUR").await, fees + 30);

    let audit = harness.ledger.audit().await.unwrap();
    assert_eq!(audit.first_violation(), None, "{audit:?}");
}

async fn statements_page_through_entries_and_payments_and_a_record_shows_its_history(backend: Backend) {
    let harness = funded(backend, Config::default()).await;
    let mut paid = card("p-1", "alice", "shop", 1_000);
    paid["metadata"] = json!({"order": "7781"});
    assert_eq!(harness.pay(&paid).await.code, Code::Ok);
    assert_eq!(harness.pay(&authorize("a-1", 500)).await.code, Code::Authorized);
    assert_eq!(harness.pay(&capture("c-1", "a-1", Some(300))).await.code, Code::Captured);
    assert_eq!(send_as(&harness, "shop", &refund("r-1", "shop", "p-1", Some(100))).await.code, Code::Refunded);
    assert_eq!(harness.pay(&authorize("a-2", 200)).await.code, Code::Authorized);
    let get = |path: String| {
        let harness = &harness;
        async move {
            let (status, body) = harness.api("GET", &path, None).await;
            (status, serde_json::from_str::<Value>(&body).unwrap_or(Value::Null))
        }
    };

    let (status, account) = get("/v1/accounts/alice".into()).await;
    assert_eq!(status, 200);
    let balance = 10_000 - 1_000 - 300 + 100;
    assert_eq!((account["balance"].as_i64(), account["held"].as_i64()), (Some(balance), Some(200)), "{account}");
    assert_eq!(account["available"].as_i64(), Some(balance - 200), "{account}");

    // Entries, two at a time: the deposit, the payment, the capture, the refund.
    let mut entries = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let cursor = after.as_ref().map(|after| format!("&after={after}")).unwrap_or_default();
        let (status, page) = get(format!("/v1/accounts/alice/entries?limit=2{cursor}")).await;
        assert_eq!(status, 200, "{page}");
        let rows = page["entries"].as_array().cloned().unwrap_or_default();
        assert!(rows.len() <= 2, "{page}");
        entries.extend(rows);
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    let posted: Vec<(&str, i64)> =
        entries.iter().map(|entry| (entry["payment"].as_str().unwrap(), entry["amount"].as_i64().unwrap())).collect();
    assert_eq!(posted[1..], [("p-1", -1_000), ("c-1", -300), ("r-1", 100)], "{entries:?}");
    assert_eq!(posted[0].1, 10_000);
    let ids: Vec<i64> = entries.iter().map(|entry| entry["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    let (_, none) = get("/v1/accounts/alice/entries?to_ms=1".into()).await;
    assert_eq!(none["entries"].as_array().map(Vec::len), Some(0), "{none}");

    // Payments that posted on it, in the order they posted; authorizations among its open
    // holds until captured.
    let (status, page) = get("/v1/accounts/alice/payments?limit=10".into()).await;
    assert_eq!(status, 200, "{page}");
    let kinds: Vec<(&str, &str)> = page["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|payment| (payment["id"].as_str().unwrap(), payment["kind"].as_str().unwrap()))
        .filter(|(id, _)| !id.starts_with("fund") && !id.starts_with("dep"))
        .collect();
    assert_eq!(kinds, [("p-1", "payment"), ("c-1", "capture"), ("r-1", "refund")], "{page}");
    let (status, holds) = get("/v1/accounts/alice/holds".into()).await;
    assert_eq!(status, 200, "{holds}");
    let open: Vec<(&str, i64)> = holds["holds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hold| (hold["id"].as_str().unwrap(), hold["held"].as_i64().unwrap()))
        .collect();
    assert_eq!(open, [("a-2", 200)], "{holds}");
    for (query, why) in
        [("limit=0", "limit"), ("limit=501", "limit"), ("after=nonsense", "cursor"), ("page=2", "unknown")]
    {
        let (status, body) = get(format!("/v1/accounts/alice/payments?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.to_string().contains(why), "{query}: {body}");
    }
    assert_eq!(get("/v1/accounts/nobody/entries".into()).await.0, 404);

    // Records: what a payment was and what happened to it since.
    let (_, payment) = get("/v1/payments/p-1".into()).await;
    assert_eq!((payment["method"].as_str(), payment["refunded"].as_i64()), (Some("card"), Some(100)), "{payment}");
    assert_eq!(payment["metadata"], json!({"order": "7781"}));
    assert_eq!(payment["plugins"], json!(["card@0.1.0"]));
    assert_eq!(payment["history"][0]["id"], "r-1", "{payment}");
    let (_, authorization) = get("/v1/payments/a-1".into()).await;
    assert_eq!(authorization["hold"]["state"], "captured", "{authorization}");
    assert_eq!(
        (authorization["hold"]["captured"].as_i64(), authorization["hold"]["closed_by"].as_str()),
        (Some(300), Some("c-1"))
    );
    assert_eq!(authorization["history"][0]["kind"], "capture", "{authorization}");
    let (_, open) = get("/v1/payments/a-2".into()).await;
    assert_eq!(open["hold"]["state"], "open", "{open}");
    assert!(open["hold"]["expires_at_ms"].as_i64().is_some_and(|at| at > open["at_ms"].as_i64().unwrap()), "{open}");
}

async fn a_settlement_applies_every_leg_or_none_across_partitions(backend: Backend) {
    let harness = funded(backend, Config::default()).await;
    harness.open("alice-usd", "USD", 0).await;
    harness.open("shop-usd", "USD", 0).await;
    harness.deposit("shop-usd", 100).await;
    let partition =
        |account: &str| harness.partitioner.partition_of(&wasmpay_protocol::routing::AccountId::new(account).unwrap());
    assert_ne!(partition("alice"), partition("shop-usd"), "the legs should debit accounts of two partitions");
    let mut settled = harness.client.subscribe("wasmpay.events.payment.settled").await.unwrap();
    harness.client.flush().await.unwrap();
    let settle = |id: &str, cash: u64, shares: u64| {
        json!({"version": 1, "type": "settle", "id": id, "legs": [
            {"payer": "alice", "payee": "shop", "amount": cash, "currency": "EUR"},
            {"payer": "shop-usd", "payee": "alice-usd", "amount": shares, "currency": "USD"}]})
    };

    let raw = send_raw_as(&harness, "alice", &settle("s-1", 6_000, 30)).await;
    let reply = parse(&raw);
    assert_eq!((reply.status, reply.code), (Status::Settled, Code::Settled), "{reply:?}");
    assert_eq!(reply.legs.as_ref().map(Vec::len), Some(2));
    let balances = || async {
        [
            harness.balance("alice").await,
            harness.balance("shop").await,
            harness.balance("alice-usd").await,
            harness.balance("shop-usd").await,
        ]
    };
    assert_eq!(balances().await, [4_000, 6_000, 30, 70]);
    assert_eq!(send_raw_as(&harness, "alice", &settle("s-1", 6_000, 30)).await, raw, "a replay gets the stored bytes");
    let event = next_message(&mut settled).await;
    assert_eq!(parse(std::str::from_utf8(&event.payload).unwrap()), reply);

    // The shop has 70 USD: its leg fails, and alice's cash stays where it is.
    let short = send_as(&harness, "alice", &settle("s-2", 1_000, 71)).await;
    assert_eq!((short.status, short.code), (Status::Declined, Code::InsufficientFunds), "{short:?}");
    assert_eq!(balances().await, [4_000, 6_000, 30, 70]);
    // Sent on another leg's payer's subject, or with too many legs: refused, nothing recorded.
    let misrouted = send_as(&harness, "shop-usd", &settle("s-3", 1, 1)).await;
    assert_eq!(misrouted.code, Code::WrongPartition, "{misrouted:?}");
    let leg = json!({"payer": "alice", "payee": "shop", "amount": 1, "currency": "EUR"});
    let crowded = json!({"version": 1, "type": "settle", "id": "s-4", "legs": vec![leg; 17]});
    assert_eq!(send_as(&harness, "alice", &crowded).await.code, Code::InvalidRequest);
    let unknown = json!({"version": 1, "type": "settle", "id": "s-5", "legs": [
        {"payer": "alice", "payee": "shop", "amount": 1, "currency": "EUR"},
        {"payer": "nobody", "payee": "alice-usd", "amount": 1, "currency": "USD"}]});
    assert_eq!(send_as(&harness, "alice", &unknown).await.code, Code::UnknownAccount);
    for id in ["s-3", "s-4", "s-5"] {
        assert!(harness.ledger.payment(id).await.unwrap().is_none(), "{id} was recorded");
    }
    assert_eq!(balances().await, [4_000, 6_000, 30, 70]);
    // Two legs on alice's account: two entries, one line of her statement.
    let there_and_back = json!({"version": 1, "type": "settle", "id": "s-6", "legs": [
        {"payer": "alice", "payee": "shop", "amount": 10, "currency": "EUR"},
        {"payer": "shop", "payee": "alice", "amount": 3, "currency": "EUR"}]});
    assert_eq!(send_as(&harness, "alice", &there_and_back).await.code, Code::Settled);
    let (status, page) = harness.api("GET", "/v1/accounts/alice/payments", None).await;
    assert_eq!(status, 200, "{page}");
    let page: Value = serde_json::from_str(&page).unwrap();
    let ids: Vec<&str> = page["payments"].as_array().unwrap().iter().filter_map(|line| line["id"].as_str()).collect();
    assert_eq!(ids.iter().filter(|id| id.starts_with("s-")).collect::<Vec<_>>(), [&"s-1", &"s-6"], "{page}");
    let audit = harness.ledger.audit().await.unwrap();
    assert_eq!(audit.first_violation(), None, "{audit:?}");
}

async fn clients_pay_and_operate_over_http_with_keys_the_operator_issues_and_revokes(backend: Backend) {
    let harness = funded(backend, Config::default()).await;
    for bad in ["", "tab\there", "nul\u{0}byte"] {
        let (status, body) = harness.api("POST", "/v1/client-keys", Some(json!({"name": bad}))).await;
        assert!(status == 400 && body.contains("\"field\":\"name\""), "{bad:?}: {status} {body}");
    }
    let (status, issued) = harness.api("POST", "/v1/client-keys", Some(json!({"name": "shop-app"}))).await;
    assert_eq!(status, 201, "{issued}");
    let issued: Value = serde_json::from_str(&issued).unwrap();
    let (secret, key_id) = (issued["secret"].as_str().unwrap().to_owned(), issued["id"].as_str().unwrap().to_owned());
    let call = |method: &str, path: &str, token: &str, idempotency_key: Option<&str>, body: Option<Value>| {
        let url = format!("{}{path}", harness.http());
        let (method, token, key) = (
            hyper::Method::from_bytes(method.as_bytes()).unwrap(),
            token.to_owned(),
            idempotency_key.map(str::to_owned),
        );
        async move {
            let limit = Duration::from_secs(10);
            let (status, text) =
                wasmpay_node::client::http_call_within(method, &url, &token, body, limit, key.as_deref())
                    .await
                    .unwrap();
            (status.as_u16(), serde_json::from_str::<Value>(&text).unwrap_or(Value::Null))
        }
    };
    let mut payment = card("ignored", "alice", "shop", 1_000);
    payment.as_object_mut().unwrap().remove("id");
    payment.as_object_mut().unwrap().remove("version");

    let (status, reply) = call("POST", "/v1/payments", &secret, Some("h-1"), Some(payment.clone())).await;
    assert_eq!((status, reply["code"].as_str()), (201, Some("ok")), "{reply}");
    let (status, again) = call("POST", "/v1/payments", &secret, Some("h-1"), Some(payment.clone())).await;
    assert_eq!((status, &again), (200, &reply), "a replay is the stored reply, marked 200");
    let mut other = payment.clone();
    other["amount"] = json!(999);
    let (status, conflict) = call("POST", "/v1/payments", &secret, Some("h-1"), Some(other)).await;
    assert_eq!((status, conflict["code"].as_str()), (409, Some("conflict")), "{conflict}");
    let (status, missing) = call("POST", "/v1/payments", &secret, None, Some(payment.clone())).await;
    assert_eq!((status, missing["field"].as_str()), (400, Some("id")), "{missing}");
    assert!(missing["request_id"].as_str().is_some_and(|id| id.starts_with("req-")), "{missing}");

    let mut authorization = payment.clone();
    authorization["type"] = json!("authorize");
    let (status, authorized) = call("POST", "/v1/payments", &secret, Some("a-1"), Some(authorization.clone())).await;
    assert_eq!((status, authorized["code"].as_str()), (201, Some("authorized")), "{authorized}");
    let (status, captured) =
        call("POST", "/v1/payments/a-1/capture", &secret, Some("c-1"), Some(json!({"amount": 300}))).await;
    assert_eq!((status, captured["code"].as_str()), (201, Some("captured")), "{captured}");
    let (status, refunded) =
        call("POST", "/v1/payments/c-1/refunds", &secret, Some("r-1"), Some(json!({"amount": 100}))).await;
    assert_eq!((status, refunded["code"].as_str()), (201, Some("refunded")), "{refunded}");
    let (status, _) = call("POST", "/v1/payments", &secret, Some("a-2"), Some(authorization)).await;
    assert_eq!(status, 201);
    let (status, voided) = call("POST", "/v1/payments/a-2/void", &secret, Some("v-1"), Some(json!({}))).await;
    assert_eq!((status, voided["code"].as_str()), (201, Some("voided")), "{voided}");
    let (status, declined) = call("POST", "/v1/payments/a-1/capture", &secret, Some("c-2"), Some(json!({}))).await;
    assert_eq!((status, declined["code"].as_str()), (402, Some("invalid_state")), "{declined}");
    let (status, unknown) = call("POST", "/v1/payments/nope/capture", &secret, Some("c-3"), Some(json!({}))).await;
    assert_eq!((status, unknown["code"].as_str()), (404, Some("unknown_payment")), "{unknown}");
    // A settlement, with its id in the header; the same again replays. The admin token only:
    // a settlement runs no plugin and charges no fee, so a client key cannot send one.
    let settlement = json!({"legs": [{"payer": "alice", "payee": "shop", "amount": 50, "currency": "EUR"},
                                     {"payer": "shop", "payee": "alice", "amount": 20, "currency": "EUR"}]});
    let (status, _) = call("POST", "/v1/settlements", &secret, Some("s-0"), Some(settlement.clone())).await;
    assert_eq!(status, 401, "a client key settles");
    let admin = wasmpay_tests::TOKEN;
    let (status, settled) = call("POST", "/v1/settlements", admin, Some("s-1"), Some(settlement.clone())).await;
    assert_eq!(
        (status, settled["code"].as_str(), settled["id"].as_str()),
        (201, Some("settled"), Some("s-1")),
        "{settled}"
    );
    let (status, again) = call("POST", "/v1/settlements", admin, Some("s-1"), Some(settlement)).await;
    assert_eq!((status, again), (200, settled), "a replay");
    let (status, short) = call("POST", "/v1/settlements", admin, Some("s-2"), Some(json!({"legs": []}))).await;
    assert_eq!((status, short["field"].as_str()), (400, Some("legs")), "{short}");
    let (status, void) = call("POST", "/v1/payments/a-1/void", admin, Some("v-9"), Some(json!({"amount": null}))).await;
    assert_eq!((status, void["field"].as_str()), (400, Some("amount")), "a void has no amount: {void}");
    let (status, listed) = call("POST", "/v1/payments/a-1/capture", admin, Some("c-9"), Some(json!([5]))).await;
    assert_eq!(status, 400, "a capture's body is an object: {listed}");

    // A client key pays, and does nothing else.
    for (method, path) in [("GET", "/v1/accounts/alice"), ("POST", "/v1/client-keys"), ("GET", "/v1/payments/h-1")] {
        let (status, _) = call(method, path, &secret, None, Some(json!({"name": "x"}))).await;
        assert_eq!(status, 401, "{method} {path} with a client key");
    }
    let (_, record) = harness.api("GET", "/v1/payments/h-1", None).await;
    let record: Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["client_key"].as_str(), Some(key_id.as_str()), "{record}");
    let (_, record) = harness.api("GET", "/v1/payments/s-1", None).await;
    let record: Value = serde_json::from_str(&record).unwrap();
    assert_eq!((record["kind"].as_str(), record["client_key"].as_str()), (Some("settlement"), None), "{record}");

    let (status, _) = harness.api("DELETE", &format!("/v1/client-keys/{key_id}"), None).await;
    assert_eq!(status, 200);
    let (status, _) = call("POST", "/v1/payments", &secret, Some("h-2"), Some(payment)).await;
    assert_eq!(status, 401, "a revoked key pays no more");
    let (_, keys) = harness.api("GET", "/v1/client-keys", None).await;
    assert!(keys.contains(&key_id) && !keys.contains(&secret), "{keys}");
    let audit = harness.ledger.audit().await.unwrap();
    assert_eq!(audit.first_violation(), None, "{audit:?}");
}

/// Units beyond ISO 4217: an operator registers a share (exponent 0) and a coin (exponent 8),
/// opens accounts in them, and a trade moves cash one way and shares the other, all or none;
/// every unit's balances still sum to zero.
async fn an_operator_registers_an_asset_and_a_trade_settles_cash_against_it(backend: Backend) {
    let harness = funded(backend, Config::default()).await;
    let post = |path: &'static str, body: Value| {
        let harness = &harness;
        async move {
            let (status, text) = harness.api("POST", path, Some(body)).await;
            (status, serde_json::from_str::<Value>(&text).unwrap_or(Value::Null))
        }
    };
    // Not registered yet: no account can be opened in it.
    let (status, refused) = post("/v1/accounts", json!({"id": "alice-aapl", "currency": "AAPL"})).await;
    assert_eq!(
        (status, refused["code"].as_str(), refused["field"].as_str()),
        (400, Some("unknown_asset"), Some("currency"))
    );
    let share = json!({"code": "AAPL", "exponent": 0, "name": "Apple Inc. common stock"});
    let (status, asset) = post("/v1/assets", share.clone()).await;
    assert_eq!((status, asset["code"].as_str(), asset["exponent"].as_u64()), (201, Some("AAPL"), Some(0)), "{asset}");
    assert_eq!(post("/v1/assets", share).await.0, 201, "the same terms again are a retry");
    let (status, conflict) = post("/v1/assets", json!({"code": "AAPL", "exponent": 2, "name": "Apple"})).await;
    assert_eq!((status, conflict["code"].as_str()), (409, Some("conflict")), "{conflict}");
    for (bad, why) in [
        (json!({"code": "BTC", "exponent": 8, "name": "three letters"}), "ISO 4217"),
        (json!({"code": "COIN", "exponent": 19, "name": "too fine"}), "exponent"),
        (json!({"code": "COIN", "exponent": 8, "name": ""}), "name"),
        // PostgreSQL refuses a NUL in text: checked before, so it is the caller's 400, not a 503.
        (json!({"code": "COIN", "exponent": 8, "name": "nul\u{0}byte"}), "control character"),
        (json!({"code": "aapl", "exponent": 0, "name": "lower case"}), "asset code"),
    ] {
        let (status, body) = post("/v1/assets", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["message"].as_str().unwrap_or_default().contains(why), "{bad}: {body}");
    }
    let (status, _) = post("/v1/assets", json!({"code": "WCOIN", "exponent": 8, "name": "A coin"})).await;
    assert_eq!(status, 201);
    harness.open("alice-aapl", "AAPL", 0).await;
    harness.open("shop-aapl", "AAPL", 0).await;
    harness.open("alice-coin", "WCOIN", 0).await;
    harness.deposit("shop-aapl", 100).await;
    harness.deposit("alice-coin", 150_000_000).await;
    let (_, coin) = harness.api("GET", "/v1/accounts/alice-coin", None).await;
    let coin: Value = serde_json::from_str(&coin).unwrap();
    assert_eq!((coin["currency"].as_str(), coin["exponent"].as_u64()), (Some("WCOIN"), Some(8)), "{coin}");

    // Delivery versus payment: 3 shares for 45.00 EUR, in one settlement.
    let trade = |id: &str, shares: u64, unit: &str| {
        json!({"version": 1, "type": "settle", "id": id, "legs": [
            {"payer": "alice", "payee": "shop", "amount": 4_500, "currency": "EUR"},
            {"payer": "shop-aapl", "payee": "alice-aapl", "amount": shares, "currency": unit}]})
    };
    let settled = send_as(&harness, "alice", &trade("t-1", 3, "AAPL")).await;
    assert_eq!(settled.code, Code::Settled, "{settled:?}");
    let holdings = || async {
        [harness.balance("alice").await, harness.balance("alice-aapl").await, harness.balance("shop-aapl").await]
    };
    assert_eq!(holdings().await, [5_500, 3, 97]);
    // The seller is three shares short: neither leg moves.
    let short = send_as(&harness, "alice", &trade("t-2", 100, "AAPL")).await;
    assert_eq!((short.status, short.code), (Status::Declined, Code::InsufficientFunds), "{short:?}");
    // A leg in a unit its accounts do not hold, or in no unit at all: refused, nothing recorded.
    let mismatch = send_as(&harness, "alice", &trade("t-3", 1, "WCOIN")).await;
    assert_eq!(mismatch.code, Code::CurrencyMismatch, "{mismatch:?}");
    // Not a code: refused before the ledger. A `.` would name the unit's system accounts
    // `_fees_ACME.SH`, which is no account id: the ledger must never see one.
    for bad in ["aapl", "ACME.SH"] {
        let malformed = send_as(&harness, "alice", &trade("t-4", 1, bad)).await;
        assert_eq!(malformed.code, Code::InvalidRequest, "{bad}: {malformed:?}");
    }
    let (status, _) = harness.api("POST", "/v1/accounts", Some(json!({"id": "dotted", "currency": "ACME.SH"}))).await;
    assert_eq!(status, 400);
    assert_eq!(holdings().await, [5_500, 3, 97]);
    for id in ["t-3", "t-4"] {
        assert!(harness.ledger.payment(id).await.unwrap().is_none(), "{id} was recorded");
    }
    let (_, page) = harness.api("GET", "/v1/accounts/alice-aapl/payments", None).await;
    let page: Value = serde_json::from_str(&page).unwrap();
    assert_eq!(page["payments"][0]["id"], "t-1", "{page}");
    let (_, listed) = harness.api("GET", "/v1/assets", None).await;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let codes: Vec<&str> =
        listed["assets"].as_array().unwrap().iter().filter_map(|asset| asset["code"].as_str()).collect();
    assert_eq!(codes, ["AAPL", "WCOIN"]);
    // Conservation holds per unit: the shares and the coins sum to zero like the euros.
    let audit = harness.ledger.audit().await.unwrap();
    assert_eq!(audit.first_violation(), None, "{audit:?}");
    assert_eq!(audit.balance_sum_by_currency.get("AAPL"), Some(&0), "{audit:?}");
    assert_eq!(audit.balance_sum_by_currency.get("WCOIN"), Some(&0), "{audit:?}");
}
