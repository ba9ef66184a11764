//! The payment path over a real NATS server: approvals, every kind of refusal, idempotency.

#![allow(clippy::unwrap_used)]

use serde_json::json;
use wasmpay_protocol::{Code, Status};
use wasmpay_tests::{Backend, Harness, card, next_message, on_both_backends, parse, wallet};

on_both_backends!(
    a_card_payment_is_approved_end_to_end_with_exact_entries_and_an_event,
    a_wallet_fee_is_borne_by_the_payer,
    each_plugin_declines_with_its_own_reason_and_the_decline_is_recorded,
    insufficient_funds_declines_and_changes_nothing,
    invalid_requests_are_rejected_with_stable_codes_and_not_recorded,
    malformed_and_oversized_messages_get_a_reply_and_the_subscriber_keeps_serving,
    a_payment_on_the_wrong_partition_is_refused,
    clients_that_do_not_hash_pay_on_the_submit_subject,
    cluster_info_tells_clients_how_to_hash,
    a_replay_returns_the_identical_reply_and_a_different_body_conflicts,
    a_reused_id_sent_while_the_first_is_committing_conflicts,
);

async fn funded(backend: Backend) -> Harness {
    let harness = Harness::start_on(backend).await;
    harness.open("alice", "EUR", 0).await;
    harness.open("shop", "EUR", 0).await;
    harness.open("yen", "JPY", 0).await;
    harness.deposit("alice", 10_000).await;
    harness
}

async fn a_card_payment_is_approved_end_to_end_with_exact_entries_and_an_event(backend: Backend) {
    let harness = funded(backend).await;
    let mut events = harness.client.subscribe("wasmpay.events.payment.>").await.unwrap();
    harness.client.flush().await.unwrap();

    let reply = harness.pay(&card("p-1", "alice", "shop", 1_050)).await;

    assert_eq!((reply.status, reply.code), (Status::Approved, Code::Ok), "{reply:?}");
    // 2.9 % of 10.50 = 0.3045 -> 0.30, plus 0.25 fixed, borne by the payee.
    assert_eq!((reply.amount, reply.fee), (Some(1_050), Some(55)));
    assert_eq!(reply.plugins, ["card@0.1.0"]);
    assert_eq!(harness.balance("alice").await, 10_000 - 1_050);
    assert_eq!(harness.balance("shop").await, 1_050 - 55);
    assert_eq!(harness.balance("_fees_EUR").await, 55);
    let stored = harness.ledger.payment("p-1").await.unwrap().expect("recorded");
    assert_eq!(stored.entries, [("alice".into(), -1_050), ("shop".into(), 995), ("_fees_EUR".into(), 55)]);

    let event = next_message(&mut events).await;
    assert_eq!(event.subject.as_str(), "wasmpay.events.payment.approved");
    assert_eq!(parse(std::str::from_utf8(&event.payload).unwrap()), reply);
    assert!(harness.ledger.audit().await.unwrap().is_balanced());
}

async fn a_wallet_fee_is_borne_by_the_payer(backend: Backend) {
    let harness = funded(backend).await;
    let reply = harness.pay(&wallet("w-1", "alice", "shop", 1_050)).await;
    assert_eq!((reply.status, reply.fee), (Status::Approved, Some(11)), "{reply:?}");
    assert_eq!(harness.balance("alice").await, 10_000 - 1_050 - 11);
    assert_eq!(harness.balance("shop").await, 1_050);
    assert_eq!(harness.balance("_fees_EUR").await, 11);
}

async fn each_plugin_declines_with_its_own_reason_and_the_decline_is_recorded(backend: Backend) {
    let harness = funded(backend).await;
    let mut expired = card("c-expired", "alice", "shop", 100);
    expired["details"]["expiry"] = json!("01/24");
    let mut bad_pan = card("c-luhn", "alice", "shop", 100);
    bad_pan["details"]["pan"] = json!("4242424242424241");
    let mut bad_wallet = wallet("w-id", "alice", "shop", 100);
    bad_wallet["details"]["wallet_id"] = json!("nope");
    let cases = [
        (expired, "card_expired"),
        (bad_pan, "invalid_card_number"),
        (card("c-limit", "alice", "shop", 1_000_001), "amount_over_limit"),
        (bad_wallet, "invalid_wallet_id"),
        (wallet("w-limit", "alice", "shop", 50_001), "amount_over_limit"),
    ];
    for (payment, reason) in cases {
        let reply = harness.pay(&payment).await;
        assert_eq!((reply.status, reply.code), (Status::Declined, Code::PluginDeclined), "{reply:?}");
        assert_eq!(reply.reason.as_deref(), Some(reason));
        let stored = harness.ledger.payment(payment["id"].as_str().unwrap()).await.unwrap().expect("recorded");
        assert_eq!((stored.status.as_str(), stored.entries.len()), ("declined", 0));
    }
    assert_eq!(harness.balance("alice").await, 10_000);
}

async fn insufficient_funds_declines_and_changes_nothing(backend: Backend) {
    let harness = funded(backend).await;
    let reply = harness.pay(&card("big", "alice", "shop", 10_001)).await;
    assert_eq!((reply.status, reply.code), (Status::Declined, Code::InsufficientFunds), "{reply:?}");
    assert_eq!(harness.balance("alice").await, 10_000);
    assert_eq!(harness.balance("shop").await, 0);
    let exact = harness.pay(&card("exact", "alice", "shop", 10_000)).await;
    assert_eq!(exact.status, Status::Approved, "{exact:?}");
    assert_eq!(harness.balance("alice").await, 0);
}

async fn invalid_requests_are_rejected_with_stable_codes_and_not_recorded(backend: Backend) {
    let harness = funded(backend).await;
    let mut unknown_method = card("r-1", "alice", "shop", 100);
    unknown_method["method"] = json!("crypto");
    let mut mismatch = card("r-3", "alice", "shop", 100);
    mismatch["currency"] = json!("USD");
    let mut bad_currency = card("r-4", "alice", "shop", 100);
    bad_currency["currency"] = json!("EURO");
    let cases = [
        (unknown_method, Code::UnknownMethod),
        (card("r-2", "alice", "nobody", 100), Code::UnknownAccount),
        (card("r-2b", "alice", "_fees_EUR", 100), Code::UnknownAccount),
        (mismatch, Code::CurrencyMismatch),
        (card("r-5", "alice", "yen", 100), Code::CurrencyMismatch),
        (bad_currency, Code::InvalidRequest),
        (card("r-6", "alice", "shop", 0), Code::AmountOutOfRange),
        (card("r-8", "alice", "shop", 9_007_199_254_740_992), Code::AmountOutOfRange),
    ];
    for (payment, code) in cases {
        let reply = harness.pay(&payment).await;
        assert_eq!((reply.status, reply.code), (Status::Rejected, code), "{reply:?}");
        assert!(harness.ledger.payment(payment["id"].as_str().unwrap()).await.unwrap().is_none());
    }
    for amount in ["-5", "12.5", "\"100\""] {
        let body =
            card("r-9", "alice", "shop", 1).to_string().replace("\"amount\":1,", &format!("\"amount\":{amount},"));
        let reply = parse(&harness.request("wasmpay.pay.0.alice", body.into_bytes()).await);
        let expected = if amount == "-5" { Code::AmountOutOfRange } else { Code::InvalidRequest };
        // The partition check comes after decoding, so a bad amount is reported first.
        assert_eq!(reply.code, expected, "{amount}: {reply:?}");
    }
    // One document, one meaning: a repeated key is refused, whichever value a reader keeps.
    let twice =
        card("r-10", "alice", "shop", 1).to_string().replace("\"amount\":1,", "\"amount\":1,\"amount\":999999,");
    let reply =
        parse(&harness.request(&format!("wasmpay.pay.{}.alice", alice_partition(&harness)), twice.into_bytes()).await);
    assert_eq!((reply.status, reply.code), (Status::Rejected, Code::InvalidRequest), "{reply:?}");
    assert!(reply.message.contains("duplicate key `amount`"), "{reply:?}");
    assert!(harness.ledger.payment("r-10").await.unwrap().is_none());
    assert_eq!(harness.balance("alice").await, 10_000);
}

fn alice_partition(harness: &Harness) -> u32 {
    harness.partitioner.partition_of(&wasmpay_protocol::routing::AccountId::new("alice").unwrap())
}

async fn malformed_and_oversized_messages_get_a_reply_and_the_subscriber_keeps_serving(backend: Backend) {
    let harness = funded(backend).await;
    let garbage = parse(&harness.request("wasmpay.pay.0.alice", b"{not json".to_vec()).await);
    assert_eq!((garbage.status, garbage.code, garbage.id), (Status::Rejected, Code::InvalidRequest, None));
    let oversized = vec![b' '; 64 * 1024 + 1];
    let reply = parse(&harness.request("wasmpay.pay.0.alice", oversized).await);
    assert_eq!(reply.code, Code::InvalidRequest);
    assert!(reply.message.contains("exceeds"), "{reply:?}");
    let version = card("v-2", "alice", "shop", 1).to_string().replace("\"version\":1", "\"version\":2");
    let reply = parse(&harness.request("wasmpay.pay.0.alice", version.into_bytes()).await);
    assert_eq!((reply.code, reply.id.as_deref()), (Code::UnsupportedVersion, Some("v-2")));
    // Garbage without a reply subject must not stop the subscriber either.
    harness.client.publish("wasmpay.pay.0.alice", "\u{0}\u{1}".into()).await.unwrap();
    let after = harness.pay(&card("after", "alice", "shop", 100)).await;
    assert_eq!(after.status, Status::Approved, "{after:?}");
}

async fn a_payment_on_the_wrong_partition_is_refused(backend: Backend) {
    let harness = funded(backend).await;
    let right = harness.partitioner.partition_of(&wasmpay_protocol::routing::AccountId::new("alice").unwrap());
    let wrong = (right + 1) % harness.partitioner.partitions();
    let body = card("wp-1", "alice", "shop", 100).to_string().into_bytes();
    for subject in [format!("wasmpay.pay.{wrong}.alice"), format!("wasmpay.pay.{right}.bob")] {
        let reply = parse(&harness.request(&subject, body.clone()).await);
        assert_eq!((reply.status, reply.code), (Status::Rejected, Code::WrongPartition), "{subject}: {reply:?}");
    }
    // A partition nobody owns, and a token that is not canonical (a NATS permission on
    // `wasmpay.pay.<right>.alice` would not see it): no node subscribes to either.
    for subject in ["wasmpay.pay.999.alice".to_owned(), format!("wasmpay.pay.0{right}.alice")] {
        let sent = harness.client.request(subject.clone(), body.clone().into()).await;
        let no_responders =
            sent.as_ref().is_err_and(|error| error.kind() == async_nats::RequestErrorKind::NoResponders);
        assert!(no_responders, "{subject}: {sent:?}");
    }
    // A readable request is echoed, and the partition named is the payer's, not the subject's.
    let reply = parse(&harness.request(&format!("wasmpay.pay.{wrong}.alice"), body.clone()).await);
    assert_eq!((reply.partition, reply.amount, reply.currency.as_deref()), (Some(right), Some(100), Some("EUR")));
    assert!(harness.ledger.payment("wp-1").await.unwrap().is_none());
}

async fn clients_that_do_not_hash_pay_on_the_submit_subject(backend: Backend) {
    let harness = funded(backend).await;
    let body = card("s-1", "alice", "shop", 100).to_string().into_bytes();
    let reply = parse(&harness.request("wasmpay.submit.alice", body).await);
    assert_eq!(reply.status, Status::Approved, "{reply:?}");
    let expected = harness.partitioner.partition_of(&wasmpay_protocol::routing::AccountId::new("alice").unwrap());
    assert_eq!(reply.partition, Some(expected));
}

async fn cluster_info_tells_clients_how_to_hash(backend: Backend) {
    let harness = Harness::start_on(backend).await;
    let info: serde_json::Value =
        serde_json::from_str(&harness.request("wasmpay.cluster.info", Vec::new()).await).unwrap();
    assert_eq!(info["version"], 1);
    assert_eq!(info["partitions"], 64);
    assert_eq!(info["hash"], "fnv1a32");
}

async fn a_replay_returns_the_identical_reply_and_a_different_body_conflicts(backend: Backend) {
    let harness = funded(backend).await;
    let payment = card("idem-1", "alice", "shop", 1_234);
    let first = harness.pay_raw(&payment).await;
    let second = harness.pay_raw(&payment).await;
    assert_eq!(first, second, "a replay must be byte-identical");
    assert_eq!(harness.balance("alice").await, 10_000 - 1_234);

    let declined = card("idem-2", "alice", "shop", 1_000_000);
    let first_decline = harness.pay_raw(&declined).await;
    assert_eq!(parse(&first_decline).status, Status::Declined);
    harness.deposit("alice", 2_000_000).await;
    assert_eq!(harness.pay_raw(&declined).await, first_decline, "a recorded decline replays, even after funding");

    let conflicting = card("idem-1", "alice", "shop", 1_235);
    let reply = harness.pay(&conflicting).await;
    assert_eq!((reply.status, reply.code), (Status::Rejected, Code::Conflict), "{reply:?}");
    assert_eq!(harness.balance("alice").await, 10_000 - 1_234 + 2_000_000);
    assert!(harness.ledger.audit().await.unwrap().is_balanced());
}

/// A request reusing the id of a payment still on its way to the ledger (sent right behind it,
/// before its reply) is refused before the ledger (an unknown method), but that refusal looks
/// the id up only after the first payment was answered: so it gets `conflict`, the answer it
/// would get a moment later, not a refusal that contradicts the recorded payment.
async fn a_reused_id_sent_while_the_first_is_committing_conflicts(backend: Backend) {
    let harness = funded(backend).await;
    let first = card("reused", "alice", "shop", 100);
    let mut second = first.clone();
    second["method"] = serde_json::json!("no_such_method");
    let (first, second) = tokio::join!(harness.pay(&first), harness.pay(&second));
    assert_eq!((first.status, first.code), (Status::Approved, Code::Ok), "{first:?}");
    assert_eq!(second.code, Code::Conflict, "{second:?}");
}
