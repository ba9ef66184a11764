//! Many concurrent payments from one payer: the floor holds, nothing is lost or doubled.

#![allow(clippy::unwrap_used)]

use futures::future::join_all;
use wasmpay_protocol::{Code, Status};
use wasmpay_tests::{Backend, Harness, card, on_both_backends};

on_both_backends!(
    two_hundred_concurrent_payments_against_a_balance_for_fifty,
    many_payers_paying_one_merchant_share_batches_and_stay_exact,
);

async fn two_hundred_concurrent_payments_against_a_balance_for_fifty(backend: Backend) {
    let harness = Harness::start_on(backend).await;
    harness.open("payer", "EUR", 0).await;
    for shop in ["shop-a", "shop-b"] {
        harness.open(shop, "EUR", 0).await;
    }
    harness.deposit("payer", 50 * 1_000).await;
    let payments: Vec<_> = (0..200)
        .map(|i| card(&format!("c-{i:03}"), "payer", if i % 2 == 0 { "shop-a" } else { "shop-b" }, 1_000))
        .collect();
    let replies = join_all(payments.iter().map(|payment| harness.pay(payment))).await;

    let approved = replies.iter().filter(|reply| reply.status == Status::Approved).count();
    let insufficient = replies.iter().filter(|reply| reply.code == Code::InsufficientFunds).count();
    assert_eq!((approved, insufficient), (50, 150), "{:?}", replies.iter().find(|r| r.status == Status::Error));
    assert_eq!(harness.balance("payer").await, 0);
    // Each approved card payment of 10.00 pays 0.29 + 0.25 in fees, borne by the payee.
    assert_eq!(harness.balance("shop-a").await + harness.balance("shop-b").await, 50 * (1_000 - 54));
    assert_eq!(harness.balance("_fees_EUR").await, 50 * 54);
    let audit = harness.ledger.audit().await.unwrap();
    assert!(audit.is_balanced(), "{audit:?}");
    assert_eq!(audit.payments_by_outcome.get("payment approved ok"), Some(&50));
    assert_eq!(audit.payments_by_outcome.get("payment declined insufficient_funds"), Some(&150));
}

/// Payers on many partitions paying one merchant at once: their payments meet in shared ledger
/// batches (the hot payee and the fee account credited by every one of them), and every
/// balance comes out exact, with each payer's own floor holding.
async fn many_payers_paying_one_merchant_share_batches_and_stay_exact(backend: Backend) {
    let harness = Harness::start_on(backend).await;
    harness.open("merchant", "EUR", 0).await;
    let payers: Vec<String> = (0..32).map(|index| format!("payer-{index:02}")).collect();
    for payer in &payers {
        harness.open(payer, "EUR", 0).await;
        harness.deposit(payer, 3 * 1_000).await;
    }
    // Four payments of 10.00 per payer against funds for three.
    let payments: Vec<_> = (0..4)
        .flat_map(|round| payers.iter().map(move |payer| (round, payer)))
        .map(|(round, payer)| card(&format!("{payer}-{round}"), payer, "merchant", 1_000))
        .collect();
    let replies = join_all(payments.iter().map(|payment| harness.pay(payment))).await;

    let approved = replies.iter().filter(|reply| reply.status == Status::Approved).count();
    let insufficient = replies.iter().filter(|reply| reply.code == Code::InsufficientFunds).count();
    assert_eq!((approved, insufficient), (3 * 32, 32), "{:?}", replies.iter().find(|r| r.status == Status::Error));
    for payer in &payers {
        assert_eq!(harness.balance(payer).await, 0, "{payer}");
    }
    assert_eq!(harness.balance("merchant").await, 3 * 32 * (1_000 - 54));
    assert_eq!(harness.balance("_fees_EUR").await, 3 * 32 * 54);
    let (_, metrics) = harness.api("GET", "/metrics", None).await;
    let single_batches = metric(&metrics, "wasmpay_ledger_batch_size_bucket{le=\"1.0\"}");
    let batches = metric(&metrics, "wasmpay_ledger_batch_size_count");
    assert!(single_batches < batches, "every batch held one transfer: {single_batches} of {batches}");
    assert!(harness.ledger.audit().await.unwrap().is_balanced());
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name).map(|value| value.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}
