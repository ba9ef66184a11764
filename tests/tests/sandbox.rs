//! Misbehaving plugins are contained: each is refused with `plugin_failed`, nothing is
//! recorded, and the next good payment is approved. The `faulty` fixture is built from
//! `tests/fixtures/faulty`.

#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use wasmpay_protocol::{Code, Status};
use wasmpay_tests::{Harness, card};

fn faulty(id: &str, fault: &str) -> Value {
    json!({"version": 1, "id": id, "payer": "alice", "payee": "shop", "amount": 100, "currency": "EUR",
           "method": "faulty", "details": {"fault": fault}})
}

async fn contained(fault: &str, expected_message: &str) {
    let harness = Harness::start().await;
    harness.open("alice", "EUR", 0).await;
    harness.open("shop", "EUR", 0).await;
    harness.deposit("alice", 1_000).await;

    let reply = harness.pay(&faulty(&format!("bad-{fault}"), fault)).await;
    assert_eq!((reply.status, reply.code), (Status::Error, Code::PluginFailed), "{reply:?}");
    assert!(reply.message.contains(expected_message), "{reply:?}");
    assert_eq!(reply.plugins, ["faulty@0.1.0"]);
    assert!(harness.ledger.payment(&format!("bad-{fault}")).await.unwrap().is_none());

    // The same plugin serves the next payment on a fresh instance; the other plugins are untouched.
    let fine = harness.pay(&faulty("good-faulty", "none")).await;
    assert_eq!(fine.status, Status::Approved, "{fine:?}");
    let card_payment = harness.pay(&card("good-card", "alice", "shop", 100)).await;
    assert_eq!(card_payment.status, Status::Approved, "{card_payment:?}");
    assert_eq!(harness.balance("alice").await, 800);
}

#[tokio::test]
async fn a_plugin_that_loops_forever_times_out() {
    contained("loop", "time limit").await;
}

#[tokio::test]
async fn a_plugin_that_grows_memory_without_bound_hits_the_cap() {
    contained("grow", "memory limit").await;
}

#[tokio::test]
async fn a_plugin_that_traps_is_refused() {
    contained("trap", "trapped").await;
}
