//! Ledger behaviour against real databases: every test in [`on_both_backends!`] runs once on
//! a fresh SQLite file and once on a fresh PostgreSQL schema. The PostgreSQL server is
//! `WASMPAY_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`); a test fails
//! when it is unreachable, it never skips.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::*;
use wasmpay_protocol::PaymentId;
use wasmpay_protocol::money::{Currency, FeeBearer, MinorUnits, prorated_fee};
use wasmpay_protocol::routing::AccountId;

/// A database a test opens its ledgers on.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database of a backend: its URL, and what keeps it alive.
struct Fresh {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    fn fresh(self) -> Fresh {
        match self {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                Fresh { url: format!("sqlite://{}", dir.path().join("ledger.db").display()), _dir: Some(dir) }
            }
            Backend::Postgres => {
                static SCHEMAS: AtomicUsize = AtomicUsize::new(0);
                let server = std::env::var("WASMPAY_TEST_POSTGRES")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock after 1970")
                    .subsec_nanos();
                let schema =
                    format!("ledger_test_{}_{}_{nanos}", std::process::id(), SCHEMAS.fetch_add(1, Ordering::Relaxed));
                Fresh { url: format!("{server}?options[search_path]={schema}"), _dir: None }
            }
        }
    }
}

/// Each named `async fn(Backend)` as a test on SQLite (in `sqlite::`) and on PostgreSQL (in
/// `postgres::`).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::Backend::Sqlite).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::Backend::Postgres).await
            })*
        }
    };
}

on_both_backends!(
    a_payment_posts_balanced_entries_and_fees,
    a_debit_below_the_floor_declines_only_that_payment,
    the_same_id_is_recorded_once,
    a_deposit_is_posted_once_per_id,
    reopening_an_account_is_idempotent_only_with_the_same_terms,
    the_audit_sees_each_broken_invariant,
    concurrent_transfers_share_batches_and_a_failing_one_fails_alone,
    transfers_are_decided_in_the_order_they_were_submitted,
    a_batch_with_an_older_lease_token_is_refused,
    a_new_owners_claim_fences_the_old_owner_at_once,
    a_ledger_keeps_one_identity,
    a_recorded_deployment_binding_changes_only_by_adoption,
    opening_an_existing_ledger_creates_nothing,
    a_credit_is_seen_by_a_spend_submitted_after_it,
    an_authorization_holds_until_captured_voided_or_expired,
    refunds_move_money_back_up_to_what_was_paid,
    refunds_give_fees_back_within_the_prorated_fee_or_charge_one,
    a_settlement_posts_every_leg_or_none,
    a_cross_border_payment_books_each_currency_through_its_fx_account,
    a_quote_converts_one_payment_at_its_terms_until_it_expires,
);

fn id(text: &str) -> AccountId {
    AccountId::new(text).expect("valid id")
}

fn eur() -> Currency {
    "EUR".parse().expect("EUR")
}

/// `transfer`, decided by `partition`'s owner under the lease with `token`.
fn leased(mut transfer: Transfer, partition: u32, token: u64) -> Transfer {
    (transfer.partition, transfer.lease_token) = (Some(partition), Some(token));
    transfer
}

async fn ledger(backend: Backend) -> (Ledger, Fresh) {
    let fresh = backend.fresh();
    (Ledger::open(&fresh.url).await.expect("open ledger"), fresh)
}

async fn open(ledger: &Ledger, account: &str, floor: i64) {
    let new = NewAccount { id: id(account), currency: eur().into(), floor: MinorUnits(floor) };
    ledger.open_account(&new, 0).await.expect("open account");
}

fn transfer(id: &str, payer: &AccountId, payee: &AccountId, amount: i64, fee: i64) -> Transfer {
    Transfer {
        id: PaymentId::new(id).expect("a valid id"),
        kind: TransferKind::Payment,
        request_hash: "hash".to_owned(),
        payer: payer.clone(),
        payee: payee.clone(),
        currency: eur().into(),
        amount: MinorUnits(amount),
        fee: MinorUnits(fee),
        fee_bearer: FeeBearer::Payee,
        plugins: "card@0.1.0".to_owned(),
        method: None,
        metadata: None,
        client: None,
        partition: Some(0),
        lease_token: None,
        now_ms: 0,
    }
}

/// Replies that name their decision, so a test can tell which one the ledger stored.
fn named() -> Replies {
    Replies::Posting { approved: "Approved".to_owned(), insufficient_funds: "InsufficientFunds".to_owned() }
}

/// A refund's replies, one per decision the ledger may make.
fn refund_replies() -> Replies {
    Replies::Refunding {
        approved: "refunded".into(),
        insufficient_funds: "short".into(),
        exceeds_refundable: "too much".into(),
    }
}

/// The decision of a transfer this call recorded.
fn decided(recorded: Result<Recorded, LedgerError>) -> Decision {
    match recorded.expect("recorded") {
        Recorded::New { decision, .. } => decision,
        other => panic!("expected a new decision, got {other:?}"),
    }
}

/// The same reply whatever the decision.
fn fixed(reply: &str) -> Replies {
    Replies::Posting { approved: reply.to_owned(), insufficient_funds: reply.to_owned() }
}

async fn deposit(ledger: &Ledger, deposit_id: &str, account: &str, amount: i64) {
    let account = ledger.account(&id(account)).await.expect("read").expect("exists");
    let deposited = ledger
        .deposit(&PaymentId::new(deposit_id).expect("a valid id"), &account, MinorUnits(amount), 0)
        .await
        .expect("deposit");
    assert!(matches!(deposited, Deposited::New(_)), "{deposited:?}");
}

async fn balance(ledger: &Ledger, account: &str) -> i64 {
    ledger.account(&id(account)).await.expect("read").expect("exists").balance.0
}

fn usd() -> Currency {
    "USD".parse().expect("USD")
}

/// `amount` EUR cents from `payer` (EUR) to `payee` (USD) at `rate`, with `fee` borne by
/// `bearer`, quoted by `quote` if given.
fn converted(id: &str, amount: i64, fee: i64, bearer: FeeBearer, rate: &str, quote: Option<&str>) -> Transfer {
    let conversion =
        Conversion::new(eur(), usd(), rate.parse().ok(), quote.map(str::to_owned), "fx-table@1.0.0".into());
    Transfer {
        kind: TransferKind::CrossBorder(Box::new(conversion)),
        fee_bearer: bearer,
        ..transfer(id, &self::id("alice"), &self::id("bob"), amount, fee)
    }
}

/// Opens `alice` in EUR with 1,000.00 and `bob` in USD.
async fn two_currencies(ledger: &Ledger) {
    open(ledger, "alice", 0).await;
    deposit(ledger, "fund", "alice", 100_000).await;
    let bob = NewAccount { id: id("bob"), currency: usd().into(), floor: MinorUnits(0) };
    ledger.open_account(&bob, 0).await.expect("a dollar account");
}

/// A payment from a euro account to a dollar account: the payer pays euros (and a payer-borne
/// fee) into `_fx_EUR`, the payee is paid the conversion, rounded down, out of `_fx_USD`; a
/// payee-borne fee is taken off before the conversion. Each currency sums to zero, the
/// payment's record shows the conversion, and a payer short of funds converts nothing.
async fn a_cross_border_payment_books_each_currency_through_its_fx_account(backend: Backend) {
    let (ledger, _db) = ledger(backend).await;
    two_currencies(&ledger).await;
    let payer_pays = converted("x-1", 10_000, 50, FeeBearer::Payer, "1.0832", None);
    assert_eq!(decided(ledger.record(payer_pays, named()).await), Decision::Approved);
    assert_eq!(
        (balance(&ledger, "alice").await, balance(&ledger, "_fx_EUR").await, balance(&ledger, "_fees_EUR").await),
        (100_000 - 10_050, 10_000, 50)
    );
    assert_eq!((balance(&ledger, "_fx_USD").await, balance(&ledger, "bob").await), (-10_832, 10_832));
    // 99.00 EUR at 1.0832 is 107.2368 USD: the payee gets 107.23.
    let payee_pays = converted("x-2", 10_000, 100, FeeBearer::Payee, "1.0832", None);
    assert_eq!(decided(ledger.record(payee_pays, named()).await), Decision::Approved);
    assert_eq!(balance(&ledger, "bob").await, 10_832 + 10_723);
    let record = ledger.payment("x-2").await.expect("read").expect("recorded");
    let conversion = record.conversion.expect("a conversion");
    assert_eq!(
        (conversion.counter_currency.as_str(), conversion.counter_amount, conversion.rate.as_str()),
        ("USD", 10_723, "1.0832")
    );
    assert_eq!(record.entries.len(), 5, "{:?}", record.entries);
    let too_much = converted("x-3", 1_000_000, 0, FeeBearer::Payer, "1.0832", None);
    assert_eq!(decided(ledger.record(too_much, named()).await), Decision::InsufficientFunds);
    assert!(ledger.payment("x-3").await.expect("read").expect("recorded").conversion.is_none());
    // A payment into the dollar account without a conversion is refused, as before.
    let plain = transfer("x-4", &id("alice"), &id("bob"), 100, 0);
    assert!(matches!(ledger.record(plain, named()).await, Err(LedgerError::CurrencyMismatch { .. })));
    // A conversion into the payer's own currency, or to nothing, is the caller's mistake.
    let mut same = converted("x-5", 100, 0, FeeBearer::Payer, "1", None);
    same.payee = id("alice2");
    open(&ledger, "alice2", 0).await;
    same.kind = TransferKind::CrossBorder(Box::new(Conversion::new(
        eur(),
        eur(),
        "1".parse().ok(),
        None,
        "fx-table@1.0.0".into(),
    )));
    assert!(matches!(ledger.record(same, named()).await, Err(LedgerError::Invalid(_))));
    let dust = converted("x-6", 1, 0, FeeBearer::Payer, "0.5", None);
    assert!(matches!(ledger.record(dust, named()).await, Err(LedgerError::Invalid(_))));
    // Declined before a rate was quoted (the pair is not quoted): recorded, nothing posted; the
    // same payment approved without a rate is the caller's mistake.
    let unpriced = || converted("x-7", 100, 0, FeeBearer::Payer, "no rate", None);
    assert!(matches!(ledger.record(unpriced(), named()).await, Err(LedgerError::Invalid(_))));
    let declined = ledger.record(unpriced(), Replies::DeclinedByPlugin("pair_not_quoted".into())).await;
    assert_eq!(decided(declined), Decision::PluginDeclined);
    assert!(ledger.payment("x-7").await.expect("read").expect("recorded").entries.is_empty());

    let audit = ledger.audit().await.expect("audit");
    assert_eq!(audit.first_violation(), None, "{audit:?}");
    assert_eq!(
        (audit.balance_sum_by_currency.get("EUR"), audit.balance_sum_by_currency.get("USD")),
        (Some(&0), Some(&0))
    );
    let tamper = |sql: &'static str| {
        let store = ledger.store.clone();
        async move {
            store::on_store!(&store, backend => { sqlx::raw_sql(sql).execute(&backend.pool).await.expect("tamper"); });
        }
    };
    tamper("UPDATE conversions SET amount = amount + 1 WHERE payment_id = 'x-1'").await;
    assert_eq!(ledger.audit().await.expect("audit").conversions_off_entries, ["x-1"]);
    tamper("UPDATE conversions SET amount = amount - 1 WHERE payment_id = 'x-1'").await;
    tamper("DELETE FROM conversions WHERE payment_id = 'x-2'").await;
    assert_eq!(ledger.audit().await.expect("audit").conversions_off_entries, ["x-2"]);
}

/// A quote fixes a payment's rate: a payment on its terms before it expires is converted at
/// it; a second payment with it, or one after its expiry, is declined and recorded; a payment
/// on other terms is the caller's mistake.
async fn a_quote_converts_one_payment_at_its_terms_until_it_expires(backend: Backend) {
    let (ledger, _db) = ledger(backend).await;
    two_currencies(&ledger).await;
    let rate: wasmpay_protocol::money::Rate = "1.0832".parse().expect("rate");
    let quote = |id: &str, expires_at_ms: i64| Quote {
        id: id.to_owned(),
        payer: self::id("alice"),
        payee: self::id("bob"),
        currency: eur(),
        amount: MinorUnits(5_000),
        counter_currency: usd(),
        counter_amount: MinorUnits(5_416),
        rate,
        fx_plugin: "fx-table@1.0.0".to_owned(),
        created_at_ms: 0,
        expires_at_ms,
    };
    // A quote long expired and never used is deleted when later quotes are stored.
    ledger.store_quote(&Quote { created_at_ms: -200_000_000, ..quote("q-old", -199_000_000) }).await.expect("store");
    ledger.store_quote(&quote("q-1", 1_000)).await.expect("store");
    ledger.store_quote(&quote("q-2", 1_000)).await.expect("store");
    assert_eq!(ledger.quote("q-old").await.expect("read"), None);
    assert_eq!(ledger.quote("q-1").await.expect("read"), Some(quote("q-1", 1_000)));
    assert_eq!(ledger.quote("q-9").await.expect("read"), None);
    let replies = || Replies::Quoted {
        approved: "approved".into(),
        insufficient_funds: "short".into(),
        quote_expired: "expired".into(),
        quote_used: "used".into(),
    };
    let paid = |id: &str, quote: &str, amount: i64, now_ms: i64| Transfer {
        now_ms,
        ..converted(id, amount, 0, FeeBearer::Payer, "1.0832", Some(quote))
    };
    // Two payments with one quote in one batch: the first converts, the second is declined.
    let (first, second) = tokio::join!(
        ledger.record(paid("q-pay-1", "q-1", 5_000, 1_000), replies()),
        ledger.record(paid("q-pay-2", "q-1", 5_000, 1_000), replies())
    );
    let mut decisions = [decided(first), decided(second)];
    decisions.sort_by_key(|decision| format!("{decision:?}"));
    assert_eq!(decisions, [Decision::Approved, Decision::QuoteUsed]);
    assert_eq!(balance(&ledger, "bob").await, 5_416);
    let late = ledger.record(paid("q-pay-3", "q-2", 5_000, 1_001), replies()).await;
    assert!(
        matches!(late, Ok(Recorded::New { decision: Decision::QuoteExpired, ref reply }) if reply == "expired"),
        "{late:?}"
    );
    assert!(matches!(ledger.record(paid("q-pay-4", "q-2", 4_999, 0), replies()).await, Err(LedgerError::Invalid(_))));
    assert!(matches!(ledger.record(paid("q-pay-5", "q-9", 5_000, 0), replies()).await, Err(LedgerError::Invalid(_))));
    // The expired decline did not use the quote: on time, it converts.
    assert_eq!(decided(ledger.record(paid("q-pay-6", "q-2", 5_000, 999), replies()).await), Decision::Approved);
    assert_eq!(balance(&ledger, "bob").await, 2 * 5_416);
    assert_eq!(ledger.audit().await.expect("audit").first_violation(), None);
}

/// One authorization's life, each way it can end: a hold lowers the available balance (a
/// payment it would cross is declined), a partial capture posts its share of the fee and
/// releases the rest, a second capture and a capture after expiry are declined, an expiry
/// releases only a hold that is due, and the audit holds throughout.
async fn an_authorization_holds_until_captured_voided_or_expired(backend: Backend) {
    let (ledger, _db) = ledger(backend).await;
    open(&ledger, "alice", 0).await;
    open(&ledger, "shop", 0).await;
    deposit(&ledger, "d1", "alice", 1_000).await;
    let (alice, shop) = (id("alice"), id("shop"));
    let held = |ledger: &Ledger| {
        let ledger = ledger.clone();
        async move { ledger.account(&id("alice")).await.expect("read").expect("exists").held.0 }
    };
    let authorization = |key: &str, amount: i64, fee: i64, bearer: FeeBearer, expires_at_ms: i64| {
        let mut authorization = transfer(key, &alice, &shop, amount, fee);
        (authorization.kind, authorization.fee_bearer) = (TransferKind::Authorization { expires_at_ms }, bearer);
        authorization
    };
    let closing = |key: &str, of: &str, kind: fn(PaymentId) -> TransferKind, amount: i64, fee: i64, now_ms: i64| {
        let mut closing = transfer(key, &alice, &shop, amount, fee);
        closing.kind = kind(PaymentId::new(of).expect("id"));
        closing.now_ms = now_ms;
        closing
    };
    let capture = |authorization| TransferKind::Capture { authorization };
    let void = |authorization| TransferKind::Void { authorization };
    let replies =
        || Replies::Closing { closed: "closed".into(), hold_expired: "expired".into(), not_open: "shut".into() };

    let a1 = authorization("a1", 600, 10, FeeBearer::Payer, 100);
    assert_eq!(decided(ledger.record(a1, named()).await), Decision::Approved);
    assert_eq!((balance(&ledger, "alice").await, held(&ledger).await), (1_000, 610));
    let too_much = transfer("p1", &alice, &shop, 391, 0);
    assert_eq!(decided(ledger.record(too_much, named()).await), Decision::InsufficientFunds);
    let a2 = authorization("a2", 300, 30, FeeBearer::Payee, 50);
    assert_eq!(decided(ledger.record(a2, named()).await), Decision::Approved);
    assert_eq!(held(&ledger).await, 910);

    // Half of a1: half of its fee, and the whole hold released.
    let fee = prorated_fee(MinorUnits(10), MinorUnits(300), MinorUnits(600));
    assert_eq!(fee, MinorUnits(5));
    let mut c1 = closing("c1", "a1", capture, 300, fee.0, 10);
    c1.fee_bearer = FeeBearer::Payer;
    assert_eq!(decided(ledger.record(c1.clone(), replies()).await), Decision::Approved);
    assert_eq!((balance(&ledger, "alice").await, held(&ledger).await), (695, 300));
    assert_eq!((balance(&ledger, "shop").await, balance(&ledger, "_fees_EUR").await), (300, 5));
    c1.id = PaymentId::new("c2").expect("id");
    assert_eq!(decided(ledger.record(c1, replies()).await), Decision::HoldNotOpen);

    // a2 lapsed at 50: a void at 60 finds it expired and releases it.
    let v1 = closing("v1", "a2", void, 300, 0, 60);
    assert_eq!(decided(ledger.record(v1, replies()).await), Decision::HoldExpired);
    assert_eq!(held(&ledger).await, 0);

    let a3 = authorization("a3", 100, 0, FeeBearer::Payee, 70);
    assert_eq!(decided(ledger.record(a3.clone(), named()).await), Decision::Approved);
    let mut expiry = a3;
    (expiry.kind, expiry.now_ms) = (TransferKind::Expiry, 69);
    assert_eq!(decided(ledger.record(expiry.clone(), replies()).await), Decision::HoldNotOpen);
    assert_eq!(held(&ledger).await, 100);
    expiry.now_ms = 70;
    assert_eq!(decided(ledger.record(expiry.clone(), replies()).await), Decision::Approved);
    assert_eq!(decided(ledger.record(expiry, replies()).await), Decision::HoldNotOpen);
    assert_eq!(held(&ledger).await, 0);
    let late = closing("c3", "a3", capture, 100, 0, 71);
    assert_eq!(decided(ledger.record(late, replies()).await), Decision::HoldExpired);

    let hold = ledger.hold(&PaymentId::new("a1").expect("id")).await.expect("read").expect("a1 holds");
    assert_eq!((hold.state, hold.captured, hold.held), (HoldState::Captured, MinorUnits(300), MinorUnits(610)));
    let due = ledger.due_holds(0, i64::MAX, 10).await.expect("due");
    assert!(due.is_empty(), "{due:?}");
    let audit = ledger.audit().await.expect("audit");
    assert_eq!(audit.first_violation(), None, "{audit:?}");
}

/// Refunds of a payment move money from its payee back to its payer, any number of them, up to
/// what it moved; one the payee cannot fund is declined with nothing posted; the payment keeps
/// what was refunded, and the audit holds.
async fn refunds_move_money_back_up_to_what_was_paid(backend: Backend) {
    let (ledger, _db) = ledger(backend).await;
    open(&ledger, "alice", 0).await;
    open(&ledger, "shop", 0).await;
    deposit(&ledger, "d1", "alice", 1_000).await;
    let (alice, shop) = (id("alice"), id("shop"));
    let paid = ledger.record(transfer("p1", &alice, &shop, 500, 20), named()).await.expect("p1");
    assert!(matches!(paid, Recorded::New { decision: Decision::Approved, .. }), "{paid:?}");
    let refund = |key: &str, amount: i64| {
        let mut refund = transfer(key, &shop, &alice, amount, 0);
        refund.kind = TransferKind::Refund { payment: PaymentId::new("p1").expect("id"), reversal: None };
        refund
    };
    assert_eq!(decided(ledger.record(refund("r1", 200), refund_replies()).await), Decision::Approved);
    assert_eq!((balance(&ledger, "alice").await, balance(&ledger, "shop").await), (700, 280));
    // The shop has 280 left of the 480 it received: a refund of 300 is within what was paid
    // (300 left) but not what the shop holds.
    assert_eq!(decided(ledger.record(refund("r2", 300), refund_replies()).await), Decision::InsufficientFunds);
    deposit(&ledger, "d2", "shop", 100).await;
    assert_eq!(decided(ledger.record(refund("r3", 301), refund_replies()).await), Decision::ExceedsRefundable);
    assert_eq!(decided(ledger.record(refund("r4", 300), refund_replies()).await), Decision::Approved);
    assert_eq!(decided(ledger.record(refund("r5", 1), refund_replies()).await), Decision::ExceedsRefundable);
    assert_eq!((balance(&ledger, "alice").await, balance(&ledger, "shop").await), (1_000, 80));
    // The original fee stays collected.
    assert_eq!(balance(&ledger, "_fees_EUR").await, 20);
    let original = ledger.refundable(&PaymentId::new("p1").expect("id")).await.expect("read").expect("p1");
    assert_eq!((original.amount, original.refunded, original.posted), (MinorUnits(500), MinorUnits(500), true));
    let audit = ledger.audit().await.expect("audit");
    assert_eq!(audit.first_violation(), None, "{audit:?}");
}

/// A refund may give part of its payment's fee back, from the fee account to whoever bore it,
/// at most the fee prorated to what the refunds give back in all (rechecked under the lock);
/// or charge the refunding payee a fee. A reversal that does not go to the fee's bearer, or
/// that also charges, is the caller's mistake and records nothing.
async fn refunds_give_fees_back_within_the_prorated_fee_or_charge_one(backend: Backend) {
    let (ledger, _db) = ledger(backend).await;
    open(&ledger, "alice", 0).await;
    open(&ledger, "shop", 0).await;
    deposit(&ledger, "d1", "alice", 1_000).await;
    let (alice, shop) = (id("alice"), id("shop"));
    // 500 paid with a fee of 20 borne by the shop: it received 480.
    ledger.record(transfer("p1", &alice, &shop, 500, 20), named()).await.expect("p1");
    let refund = |key: &str, amount: i64, reversed: i64| {
        let mut refund = transfer(key, &shop, &alice, amount, 0);
        let reversal = (reversed > 0).then(|| FeeReversal::new(MinorUnits(reversed), eur().into()));
        refund.kind = TransferKind::Refund { payment: PaymentId::new("p1").expect("id"), reversal };
        // The shop bore the fee and is the refund's payer: the reversal is its.
        refund.fee_bearer = FeeBearer::Payer;
        refund
    };
    // 250 refunded in all: at most 20 x 250 / 500 = 10 of the fee comes back.
    assert_eq!(decided(ledger.record(refund("r1", 250, 11), refund_replies()).await), Decision::ExceedsRefundable);
    assert_eq!(decided(ledger.record(refund("r2", 250, 4), refund_replies()).await), Decision::Approved);
    assert_eq!((balance(&ledger, "shop").await, balance(&ledger, "_fees_EUR").await), (480 - 250 + 4, 16));
    // Cumulative: the rest of the payment may bring back the rest of the fee.
    assert_eq!(decided(ledger.record(refund("r3", 250, 16), refund_replies()).await), Decision::Approved);
    assert_eq!((balance(&ledger, "alice").await, balance(&ledger, "_fees_EUR").await), (1_000, 0));
    let original = ledger.refundable(&PaymentId::new("p1").expect("id")).await.expect("read").expect("p1");
    assert_eq!((original.refunded, original.fee_reversed), (MinorUnits(500), MinorUnits(20)));
    let record = ledger.payment("r3").await.expect("read").expect("r3");
    assert_eq!(record.fee_reversed, 16);

    // Charged: the shop pays the refund and its fee (it has 100 of the payment and 7 more).
    ledger.record(transfer("p2", &alice, &shop, 100, 0), named()).await.expect("p2");
    deposit(&ledger, "d2", "shop", 7).await;
    let mut charged = transfer("r4", &shop, &alice, 100, 7);
    charged.kind = TransferKind::Refund { payment: PaymentId::new("p2").expect("id"), reversal: None };
    charged.fee_bearer = FeeBearer::Payer;
    let before = balance(&ledger, "shop").await;
    assert_eq!(decided(ledger.record(charged, refund_replies()).await), Decision::Approved);
    assert_eq!((balance(&ledger, "shop").await, balance(&ledger, "_fees_EUR").await), (before - 107, 7));

    // Back to the wrong side, or a reversal that charges too: refused, nothing recorded.
    ledger.record(transfer("p3", &alice, &shop, 100, 10), named()).await.expect("p3");
    let mut wrong_side = refund("r5", 100, 5);
    (wrong_side.kind, wrong_side.fee_bearer) = (
        TransferKind::Refund {
            payment: PaymentId::new("p3").expect("id"),
            reversal: Some(FeeReversal::new(MinorUnits(5), eur().into())),
        },
        FeeBearer::Payee,
    );
    assert!(matches!(ledger.record(wrong_side, refund_replies()).await, Err(LedgerError::Invalid(_))));
    let mut both = refund("r6", 100, 5);
    both.kind = TransferKind::Refund {
        payment: PaymentId::new("p3").expect("id"),
        reversal: Some(FeeReversal::new(MinorUnits(5), eur().into())),
    };
    both.fee = MinorUnits(1);
    assert!(matches!(ledger.record(both, refund_replies()).await, Err(LedgerError::Invalid(_))));
    assert_eq!(ledger.payment("r6").await.expect("read"), None);
    let audit = ledger.audit().await.expect("audit");
    assert_eq!(audit.first_violation(), None, "{audit:?}");
}

/// A settlement (delivery versus payment): cash one way and another currency the other, both
/// posted or neither; legs net per account, so a party may pay what it receives in the same
/// settlement; a leg with an unknown account fails the whole settlement.
async fn a_settlement_posts_every_leg_or_none(backend: Backend) {
    let (ledger, _db) = ledger(backend).await;
    let usd: Currency = "USD".parse().expect("USD");
    for (account, currency) in [("buyer", eur()), ("seller", eur()), ("buyer-usd", usd), ("seller-usd", usd)] {
        let new = NewAccount { id: id(account), currency: currency.into(), floor: MinorUnits::ZERO };
        ledger.open_account(&new, 0).await.expect("open");
    }
    deposit(&ledger, "d1", "buyer", 1_000).await;
    deposit(&ledger, "d2", "seller-usd", 50).await;
    let leg = |payer: &str, payee: &str, amount: u64, currency: Currency| wasmpay_protocol::Leg {
        payer: id(payer),
        payee: id(payee),
        amount,
        currency: currency.into(),
    };
    let settlement = |key: &str, legs: Vec<wasmpay_protocol::Leg>| {
        let first = legs[0].clone();
        let mut settlement = transfer(key, &first.payer, &first.payee, first.amount.cast_signed(), 0);
        settlement.currency = first.currency;
        settlement.kind = TransferKind::Settlement { legs };
        settlement
    };
    let trade = settlement("s1", vec![leg("buyer", "seller", 600, eur()), leg("seller-usd", "buyer-usd", 30, usd)]);
    assert_eq!(decided(ledger.record(trade, named()).await), Decision::Approved);
    let balances = || async {
        let mut all = Vec::new();
        for account in ["buyer", "seller", "buyer-usd", "seller-usd"] {
            all.push(balance(&ledger, account).await);
        }
        all
    };
    assert_eq!(balances().await, [400, 600, 30, 20]);
    // The seller has 20 left: its leg fails, so the buyer's cash does not move either.
    let short = settlement("s2", vec![leg("buyer", "seller", 100, eur()), leg("seller-usd", "buyer-usd", 30, usd)]);
    assert_eq!(decided(ledger.record(short, named()).await), Decision::InsufficientFunds);
    assert_eq!(balances().await, [400, 600, 30, 20]);
    // Netted: the seller pays back 700 it has only once the first leg pays it 200 more.
    let netted = settlement("s3", vec![leg("buyer", "seller", 200, eur()), leg("seller", "buyer", 700, eur())]);
    assert_eq!(decided(ledger.record(netted, named()).await), Decision::Approved);
    assert_eq!(balances().await, [900, 100, 30, 20]);
    let unknown = settlement("s4", vec![leg("buyer", "seller", 1, eur()), leg("nobody", "buyer-usd", 1, usd)]);
    assert!(matches!(ledger.record(unknown, named()).await, Err(LedgerError::UnknownAccount(_))));
    assert_eq!(balances().await, [900, 100, 30, 20]);
    let stored = ledger.payment("s1").await.expect("read").expect("s1");
    assert_eq!((stored.kind.as_str(), stored.status.as_str()), ("settlement", "settled"));
    assert_eq!(
        stored.entries,
        [("buyer".into(), -600), ("seller".into(), 600), ("seller-usd".into(), -30), ("buyer-usd".into(), 30)]
    );
    let audit = ledger.audit().await.expect("audit");
    assert_eq!(audit.first_violation(), None, "{audit:?}");
}

async fn a_payment_posts_balanced_entries_and_fees(backend: Backend) {
    let (ledger, _db) = ledger(backend).await;
    open(&ledger, "alice", 0).await;
    open(&ledger, "shop", 0).await;
    deposit(&ledger, "d1", "alice", 10_000).await;
    let (alice, shop) = (id("alice"), id("shop"));
    let recorded = ledger.record(transfer("p1", &alice, &shop, 1_000, 55), named()).await;
    assert_eq!(recorded.expect("record"), Recorded::New { decision: Decision::Approved, reply: "Approved".into() });
    assert_eq!(balance(&ledger, "alice").await, 9_000);
    assert_eq!(balance(&ledger, "shop").await, 945);
    assert_eq!(balance(&ledger, "_fees_EUR").await, 55);
    assert_eq!(balance(&ledger, "_external_EUR").await, -10_000);
    let stored = ledger.payment("p1").await.expect("read").expect("stored");
    assert_eq!(stored.entries, vec![("alice".into(), -1_000), ("shop".into(), 945), ("_fees_EUR".into(), 55)]);
    let audit = ledger.audit().await.expect("audit");
    assert!(audit.is_balanced(), "{audit:?}");
}

async fn a_debit_below_the_floor_declines_only_that_payment(backend: Backend) {
    let (ledger, _db) = ledger(backend).await;
    open(&ledger, "alice", -500).await;
    open(&ledger, "shop", 0).await;
    deposit(&ledger, "d1", "alice", 1_000).await;
    let (alice, shop) = (id("alice"), id("shop"));
    let first = ledger.record(transfer("p1", &alice, &shop, 1_500, 0), named()).await.expect("p1");
    assert!(matches!(first, Recorded::New { decision: Decision::Approved, .. }));
    let second = ledger.record(transfer("p2", &alice, &shop, 1, 0), named()).await.expect("p2");
    assert!(matches!(second, Recorded::New { decision: Decision::InsufficientFunds, .. }));
    assert_eq!(balance(&ledger, "alice").await, -500);
    assert!(ledger.payment("p2").await.expect("read").expect("recorded").entries.is_empty());
}

async fn the_same_id_is_recorded_once(backend: Backend) {
    let (ledger, _db) = ledger(backend).await;
    open(&ledger, "alice", 0).await;
    open(&ledger, "shop", 0).await;
    deposit(&ledger, "d1", "alice", 1_000).await;
    let (alice, shop) = (id("alice"), id("shop"));
    let transfer = transfer("p1", &alice, &shop, 100, 0);
    ledger.record(transfer.clone(), fixed("first")).await.expect("first");
    let again = ledger.record(transfer, fixed("second")).await.expect("again");
    assert_eq!(again, Recorded::Existing(StoredReply { request_hash: "hash".into(), reply: "first".into() }));
    assert_eq!(balance(&ledger, "alice").await, 900);
}

async fn a_deposit_is_posted_once_per_id(backend: Backend) {
    let (ledger, _db) = ledger(backend).await;
    open(&ledger, "alice", 0).await;
    deposit(&ledger, "d1", "alice", 700).await;
    let alice = ledger.account(&id("alice")).await.expect("read").expect("exists");
    let replay =
        ledger.deposit(&PaymentId::new("d1").expect("a valid id"), &alice, MinorUnits(700), 0).await.expect("replay");
    assert!(matches!(replay, Deposited::Replayed(ref receipt) if receipt.contains("\"amount\":700")), "{replay:?}");
    assert_eq!(
        ledger.deposit(&PaymentId::new("d1").expect("a valid id"), &alice, MinorUnits(701), 0).await.expect("conflict"),
        Deposited::Conflict
    );
    assert_eq!(balance(&ledger, "alice").await, 700);
    assert_eq!(balance(&ledger, "_external_EUR").await, -700);
}

async fn reopening_an_account_is_idempotent_only_with_the_same_terms(backend: Backend) {
    let (ledger, _db) = ledger(backend).await;
    open(&ledger, "alice", 0).await;
    open(&ledger, "alice", 0).await;
    let other = NewAccount { id: id("alice"), currency: eur().into(), floor: MinorUnits(-1) };
    assert!(matches!(ledger.open_account(&other, 0).await, Err(LedgerError::AccountExists(_))));
}

/// A small filesystem of its own, unmounted when dropped. Mounting needs root, which the
/// project's machines and CI have; elsewhere the test fails and says so (it never skips).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs failed: this test simulates a full disk and needs root");
        SmallDisk { dir }
    }

    /// Fills the disk; the returned path frees it when removed.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let path = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("create filler");
        let chunk = vec![0_u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.write_all(&chunk[..1]);
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

/// After a full disk every later write used to fail until a restart ("non-zero transaction
/// depth" on the connection that hit the error). Now writes fail while the disk is full,
/// `writable` says so, and both recover by themselves once space is free again (`writable`
/// once a batch commits).
#[tokio::test]
async fn the_ledger_recovers_by_itself_after_the_disk_was_full() {
    let disk = SmallDisk::mount("4m");
    let url = format!("sqlite://{}", disk.dir.path().join("ledger.db").display());
    let ledger = Ledger::open(&url).await.expect("open ledger");
    open(&ledger, "alice", 0).await;
    deposit(&ledger, "before", "alice", 100).await;
    assert_eq!(ledger.writable().await, Ok(()));

    let filler = disk.fill();
    let account = ledger.account(&id("alice")).await.expect("read").expect("exists");
    let mut failures = 0;
    for attempt in 0..8 {
        if ledger
            .deposit(&PaymentId::new(format!("while-full-{attempt}")).expect("a valid id"), &account, MinorUnits(1), 0)
            .await
            .is_err()
        {
            failures += 1;
        }
    }
    assert!(failures > 0, "a full disk must refuse some write");
    tokio::time::sleep(PROBE_INTERVAL).await;
    assert!(ledger.writable().await.is_err(), "a full disk is reported");

    std::fs::remove_file(filler).expect("free the disk");
    tokio::time::sleep(PROBE_INTERVAL).await;
    // The failed batches count until one commits (or BATCH_FAILURE_WINDOW passes).
    deposit(&ledger, "after-free", "alice", 1).await;
    assert_eq!(ledger.writable().await, Ok(()));
    for attempt in 0..20 {
        deposit(&ledger, &format!("after-{attempt}"), "alice", 1).await;
    }
    assert!(ledger.audit().await.expect("audit").is_balanced());
}

/// Each invariant is seen by the audit when the stored data breaks it (the schema's own
/// checks are bypassed with raw SQL, as a bug or a hand edit would).
async fn the_audit_sees_each_broken_invariant(backend: Backend) {
    let (ledger, _db) = ledger(backend).await;
    open(&ledger, "alice", 0).await;
    open(&ledger, "shop", 0).await;
    deposit(&ledger, "fund", "alice", 1_000).await;
    assert_eq!(ledger.audit().await.expect("audit").first_violation(), None);

    let tamper = |sql: &'static str| {
        let store = ledger.store.clone();
        async move {
            store::on_store!(&store, backend => { sqlx::raw_sql(sql).execute(&backend.pool).await.expect("tamper"); });
        }
    };
    tamper("UPDATE payments SET status = 'declined' WHERE id = 'fund'").await;
    assert_eq!(ledger.audit().await.expect("audit").declined_with_entries, ["fund"]);
    tamper("UPDATE payments SET status = 'approved' WHERE id = 'fund'").await;
    // Entries of two units that sum to zero together but not each: unbalanced.
    let dollars = NewAccount {
        id: id("usd"),
        currency: "USD".parse::<Currency>().expect("USD").into(),
        floor: MinorUnits(-1_000),
    };
    ledger.open_account(&dollars, 0).await.expect("a dollar account");
    tamper("INSERT INTO entries (payment_id, account_id, amount) VALUES ('fund', 'alice', 7), ('fund', 'usd', -7)")
        .await;
    assert_eq!(ledger.audit().await.expect("audit").unbalanced_payments, ["fund"]);
    tamper("DELETE FROM entries WHERE payment_id = 'fund' AND amount IN (7, -7)").await;
    // SQLite's schema refuses this too (a CHECK constraint); the audit must not rely on it.
    tamper(match backend {
        Backend::Sqlite => "PRAGMA ignore_check_constraints = ON; UPDATE accounts SET floor = 2000 WHERE id = 'alice'",
        Backend::Postgres => "UPDATE accounts SET floor = 2000 WHERE id = 'alice'",
    })
    .await;
    let audit = ledger.audit().await.expect("audit");
    assert_eq!(audit.accounts_below_floor, ["alice"]);
    assert!(audit.first_violation().is_some_and(|violation| violation.contains("below its floor")), "{audit:?}");
    tamper("UPDATE accounts SET floor = 0 WHERE id = 'alice'").await;
    tamper("DELETE FROM entries WHERE payment_id = 'fund'").await;
    let audit = ledger.audit().await.expect("audit");
    assert_eq!(audit.approved_without_entries, ["fund"]);
    assert_eq!(audit.drifted_accounts, ["_external_EUR", "alice"]);
    assert!(audit.dangling_references.is_empty(), "{audit:?}");
    // SQLite's foreign keys refuse this too; PostgreSQL's schema leaves it to the audit.
    tamper(match backend {
        Backend::Sqlite => {
            "PRAGMA foreign_keys = OFF; INSERT INTO entries (payment_id, account_id, amount)
             VALUES ('ghost', 'alice', 5), ('ghost', 'nobody', -5); PRAGMA foreign_keys = ON"
        }
        Backend::Postgres => {
            "INSERT INTO entries (payment_id, account_id, amount) VALUES ('ghost', 'alice', 5), ('ghost', 'nobody', -5)"
        }
    })
    .await;
    assert_eq!(ledger.audit().await.expect("audit").dangling_references, ["ghost"]);
}

/// A SQLite ledger written before holds existed keeps its accounts, payments and entries when
/// the migrations rebuild `payments` and `entries`, then `accounts` (SQLite cannot change a
/// CHECK in place; assets widened the currency's), then `payments` and `holds` again (checks
/// without `IN` lists), and its foreign keys and checks still hold afterwards.
#[tokio::test]
async fn a_sqlite_ledger_from_before_holds_keeps_its_books() {
    let fresh = Backend::Sqlite.fresh();
    let options: sqlx::sqlite::SqliteConnectOptions = fresh.url.parse().expect("url");
    let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true).foreign_keys(true)).await.expect("pool");
    store::schema::migrator(&store::schema::SQLITE[..5]).run(&pool).await.expect("the schema before holds");
    sqlx::raw_sql(
        "INSERT INTO accounts (id, currency, balance, floor, kind, created_at_ms) VALUES
           ('alice', 'EUR', 900, 0, 'customer', 0), ('shop', 'EUR', 100, 0, 'customer', 0);
         INSERT INTO payments (id, kind, request_hash, status, code, payer, payee, currency, amount, fee, fee_bearer,
                               plugins, partition, reply, created_at_ms)
           VALUES ('p1', 'payment', 'h', 'approved', 'ok', 'alice', 'shop', 'EUR', 100, 0, 'payee', 'card@1', 3,
                   '{}', 0);
         INSERT INTO entries (payment_id, account_id, amount) VALUES ('p1', 'alice', -100), ('p1', 'shop', 100);",
    )
    .execute(&pool)
    .await
    .expect("books before holds");
    pool.close().await;

    let ledger = Ledger::open(&fresh.url).await.expect("migrated");
    let stored = ledger.payment("p1").await.expect("read").expect("kept");
    assert_eq!(stored.entries, vec![("alice".into(), -100), ("shop".into(), 100)]);
    assert_eq!((balance(&ledger, "alice").await, balance(&ledger, "shop").await), (900, 100));
    store::on_store!(&ledger.store, backend => {
        let broken: Vec<(String, i64, String, i64)> =
            sqlx::query_as("PRAGMA foreign_key_check").fetch_all(&backend.pool).await.expect("check");
        assert!(broken.is_empty(), "{broken:?}");
        let refused = sqlx::query("INSERT INTO entries (payment_id, account_id, amount) VALUES ('ghost', 'alice', 1)")
            .execute(&backend.pool)
            .await;
        assert!(refused.is_err(), "entries must still reference payments");
        let refused = sqlx::query("INSERT INTO entries (payment_id, account_id, amount) VALUES ('p1', 'ghost', 1)")
            .execute(&backend.pool)
            .await;
        assert!(refused.is_err(), "entries must still reference accounts");
        let refused = sqlx::query("UPDATE payments SET kind = 'gift' WHERE id = 'p1'").execute(&backend.pool).await;
        assert!(refused.is_err(), "payments must still check their kind");
        let refused = sqlx::query(
            "INSERT INTO holds (id, account_id, held, expires_at_ms, state) VALUES ('ghost', 'alice', 1, 0, 'open')",
        )
        .execute(&backend.pool)
        .await;
        assert!(refused.is_err(), "holds must still reference payments");
    });
    let (alice, shop) = (id("alice"), id("shop"));
    let recorded = ledger.record(transfer("p2", &alice, &shop, 50, 0), named()).await.expect("p2");
    assert!(matches!(recorded, Recorded::New { decision: Decision::Approved, .. }), "{recorded:?}");
}

/// SQLite builds a temporary B-tree for an `IN` list of more than two constants in a CHECK
/// constraint, again for every row written: on the rows every payment and hold writes, that
/// cost the ledger 12 % of its rate (docs/performance.md, step 11). Their plans open none.
#[tokio::test]
async fn sqlite_writes_payments_and_holds_without_temporary_b_trees() {
    let (ledger, _fresh) = ledger(Backend::Sqlite).await;
    let writes = [
        "INSERT INTO payments (id, kind, request_hash, status, code, payer, payee, currency, amount, fee, fee_bearer,
                               plugins, partition, reply, created_at_ms, parent, method, metadata, client_key)
         VALUES ('p', 'payment', 'h', 'approved', 'ok', 'a', 'b', 'EUR', 1, 0, 'payer', 'card@1', 0, '{}', 0,
                 NULL, NULL, NULL, NULL)",
        "INSERT INTO holds (id, account_id, held, expires_at_ms, partition, state) VALUES ('p', 'a', 1, 0, 0, 'open')",
        "UPDATE holds SET state = 'captured', captured = 1, closed_by = 'c', closed_at_ms = 0
         WHERE id = 'p' AND state = 'open'",
        "UPDATE accounts SET balance = balance + 1, held = held + 1 WHERE id = 'a'",
    ];
    let store::Store::Sqlite(backend) = &ledger.store else { panic!("a SQLite ledger") };
    for write in writes {
        let plan: Vec<(i64, String)> = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {write}")))
            .fetch_all(&backend.pool)
            .await
            .expect("explain")
            .iter()
            .map(|row| (sqlx::Row::get::<i64, _>(row, 0), sqlx::Row::get::<String, _>(row, 1)))
            .collect();
        assert!(!plan.is_empty(), "no plan for {write}");
        let temporary: Vec<_> = plan.iter().filter(|(_, opcode)| opcode == "OpenEphemeral").collect();
        assert!(temporary.is_empty(), "{write} opens temporary B-trees at {temporary:?}");
    }
}

/// Batch sizes as the committer reports them.
#[derive(Debug, Default)]
struct Batches(Mutex<Vec<usize>>);

impl CommitObserver for Batches {
    fn batch_committed(&self, size: usize, _elapsed: Duration) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(size);
    }

    fn batch_fenced(&self, _partitions: &[u32]) {}
}

/// Transfers in flight together share batches (one commit each), in arrival order, and one
/// that fails (its balance would overflow) is rolled back alone while the rest commit.
async fn concurrent_transfers_share_batches_and_a_failing_one_fails_alone(backend: Backend) {
    let fresh = backend.fresh();
    let batches = Arc::new(Batches::default());
    let observer: Arc<dyn CommitObserver> = batches.clone();
    let batching = LedgerSettings { batch_size_max: 64, batch_delay_us_max: 5_000, ..LedgerSettings::default() };
    let ledger = Ledger::open_with(&fresh.url, batching, Some(observer)).await.expect("open ledger");
    open(&ledger, "alice", 0).await;
    open(&ledger, "shop", 0).await;
    deposit(&ledger, "fund", "alice", 1_000).await;
    let (alice, shop) = (id("alice"), id("shop"));
    let mut transfers: Vec<Transfer> =
        (0..40).map(|index| transfer(&format!("p{index}"), &alice, &shop, 10, 0)).collect();
    let mut overflowing = transfer("too-big", &alice, &shop, i64::MAX, 1);
    overflowing.fee_bearer = FeeBearer::Payer;
    transfers.insert(20, overflowing);
    let outcomes = in_flight(transfers.into_iter().map(|transfer| {
        let ledger = ledger.clone();
        async move { ledger.record(transfer, named()).await }
    }))
    .await;
    let approved = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Ok(Recorded::New { decision: Decision::Approved, .. })))
        .count();
    assert_eq!(approved, 40, "{outcomes:?}");
    assert!(matches!(outcomes[20], Err(LedgerError::Overflow(_))), "{:?}", outcomes[20]);
    assert_eq!(balance(&ledger, "alice").await, 600);
    assert!(ledger.payment("too-big").await.expect("read").is_none());
    let sizes = batches.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
    assert!(sizes.iter().any(|size| *size > 1), "transfers in flight together were committed one by one: {sizes:?}");
    assert!(ledger.audit().await.expect("audit").is_balanced());
}

/// Runs `futures` as tasks, all in flight at once, and returns their outputs in order.
async fn in_flight<T: Send + 'static>(
    futures: impl IntoIterator<Item = impl Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}

/// Several ledgers (committers with pools of their own, as several nodes would be) write one
/// PostgreSQL database at once, from the same payers to the same hot payee, and cross-pay each
/// other's payers. Relative updates under row locks lose nothing: every approved payment is
/// posted exactly once, no payer goes below its floor, and no two batches deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_postgres_lose_no_update() {
    const WRITERS: usize = 3;
    const PAYMENTS: usize = 300;
    let fresh = Backend::Postgres.fresh();
    let batching = LedgerSettings { batch_size_max: 16, ..LedgerSettings::default() };
    let mut ledgers = Vec::new();
    for _ in 0..WRITERS {
        ledgers.push(Ledger::open_with(&fresh.url, batching, None).await.expect("open ledger"));
    }
    let payers = ["alice", "bob", "carol"];
    for payer in payers {
        open(&ledgers[0], payer, 0).await;
        deposit(&ledgers[0], &format!("fund-{payer}"), payer, 1_000).await;
    }
    open(&ledgers[0], "shop", 0).await;
    // Each payer can afford 100 payments of 10; 3 writers x 300 attempts ask for more.
    let attempts = (0..WRITERS).flat_map(|writer| (0..PAYMENTS).map(move |index| (writer, index)));
    let outcomes = in_flight(attempts.map(|(writer, index)| {
        let ledger = ledgers[writer].clone();
        let payer = id(payers[(writer + index) % payers.len()]);
        // A third of the payments go to another payer, which the other writers debit.
        let payee = if index % 3 == 0 { id(payers[(writer + index + 1) % payers.len()]) } else { id("shop") };
        async move {
            let mut transfer = transfer(&format!("w{writer}-p{index}"), &payer, &payee, 10, 1);
            transfer.partition = u32::try_from(writer).ok();
            ledger.record(transfer, named()).await
        }
    }))
    .await;
    let approved = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Ok(Recorded::New { decision: Decision::Approved, .. })))
        .count();
    let failed: Vec<_> = outcomes.iter().filter(|outcome| outcome.is_err()).collect();
    assert!(failed.is_empty(), "no batch may fail: {failed:?}");
    let ledger = &ledgers[0];
    let audit = ledger.audit().await.expect("audit");
    assert_eq!(audit.first_violation(), None, "{audit:?}");
    let shop = balance(ledger, "shop").await;
    let fees = balance(ledger, "_fees_EUR").await;
    let customers: i64 = [balance(ledger, "alice").await, balance(ledger, "bob").await, balance(ledger, "carol").await]
        .into_iter()
        .sum();
    assert_eq!(customers + shop + fees, 3_000, "money is conserved");
    assert_eq!(fees, i64::try_from(approved).expect("count"), "one fee per approved payment");
    let spent = 3_000 - customers - fees;
    assert_eq!(shop, spent, "the shop got what the payers paid it, net of fees");
    assert!(approved >= 300, "the payers' money ran out before {approved} approvals");
}

/// Random sequences of account opens, deposits, payments, replays and conflicting replays go
/// through the real ledger, and after every step each balance equals that of a plain in-memory
/// model of the ledger's rules; the audit holds at the end.
mod model {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    use super::*;

    /// Accounts a sequence may use; ids of transfers, few enough that they repeat often.
    const ACCOUNTS: usize = 4;
    const IDS: u8 = 10;

    #[derive(Clone, Debug)]
    enum Step {
        /// Opens customer `account` with `floor` (a reopen with other terms is refused).
        Open { account: usize, floor: i64 },
        /// Deposits `amount` to `account` under `id`.
        Deposit { id: u8, account: usize, amount: i64 },
        /// Pays `amount` with `fee` from `payer` to `payee` under `id`; with `expires`, only
        /// authorizes it, until the model's clock reaches `expires`.
        Pay {
            id: u8,
            payer: usize,
            payee: usize,
            amount: i64,
            fee: i64,
            payer_bears: bool,
            declined: bool,
            expires: Option<i64>,
        },
        /// Captures `amount` (at most all) of authorization `of` under `id`.
        Capture { id: u8, of: u8, amount: i64 },
        /// Voids authorization `of` under `id`.
        Void { id: u8, of: u8 },
        /// The owner's sweep: expires authorization `of` if it is due.
        Expire { of: u8 },
        /// Refunds `amount` of payment or capture `of` under `id`, charging `fee` if positive,
        /// giving `-fee` of the payment's fee back if negative.
        Refund { id: u8, of: u8, amount: i64, fee: i64 },
        /// Settles `legs` (payer, payee, amount) under `id`: all or none.
        Settle { id: u8, legs: Vec<(usize, usize, i64)> },
        /// The clock moves on by one.
        Tick,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            1 => (0..ACCOUNTS, prop_oneof![Just(0_i64), Just(-50)]).prop_map(|(account, floor)| Step::Open { account, floor }),
            2 => (0..IDS, 0..ACCOUNTS, 1_i64..200).prop_map(|(id, account, amount)| Step::Deposit { id, account, amount }),
            5 => (0..IDS, 0..ACCOUNTS, 0..ACCOUNTS, 1_i64..150, 0_i64..20, any::<bool>(), proptest::bool::weighted(0.1), proptest::option::weighted(0.4, 1_i64..3))
                .prop_map(|(id, payer, payee, amount, fee, payer_bears, declined, expires)| Step::Pay {
                    id, payer, payee, amount, fee: fee.min(amount), payer_bears, declined, expires,
                }),
            3 => (0..IDS, 0..IDS, 1_i64..160).prop_map(|(id, of, amount)| Step::Capture { id, of, amount }),
            1 => (0..IDS, 0..IDS).prop_map(|(id, of)| Step::Void { id, of }),
            1 => (0..IDS).prop_map(|of| Step::Expire { of }),
            3 => (0..IDS, 0..IDS, 1_i64..120, prop_oneof![Just(0_i64), -25_i64..25]).prop_map(|(id, of, amount, fee)| Step::Refund { id, of, amount, fee }),
            2 => (0..IDS, proptest::collection::vec((0..ACCOUNTS, 1..ACCOUNTS, 1_i64..200), 1..4)).prop_map(|(id, legs)| Step::Settle {
                id,
                legs: legs.into_iter().map(|(payer, offset, amount)| (payer, (payer + offset) % ACCOUNTS, amount)).collect(),
            }),
            2 => Just(Step::Tick),
        ]
    }

    fn name(account: usize) -> String {
        format!("acct{account}")
    }

    /// The ledger's rules, as plainly as possible.
    #[derive(Debug, Default)]
    struct Model {
        /// Opened accounts: (balance, floor).
        accounts: HashMap<String, (i64, i64)>,
        /// What each account's open holds reserve.
        held: HashMap<String, i64>,
        /// Approved authorizations by id.
        holds: HashMap<String, ModelHold>,
        fees: i64,
        /// Recorded ids and their request fingerprints.
        recorded: HashMap<String, String>,
        /// The ledger's clock.
        now: i64,
        /// Payments and captures that moved money.
        refundable: HashMap<String, Paid>,
    }

    /// A payment or capture that moved money, as the model keeps it.
    #[derive(Clone, Debug)]
    struct Paid {
        payer: String,
        payee: String,
        amount: i64,
        fee: i64,
        payer_bears: bool,
        refunded: i64,
        fee_reversed: i64,
    }

    /// An authorization as the model keeps it.
    #[derive(Clone, Debug)]
    struct ModelHold {
        payer: String,
        payee: String,
        amount: i64,
        fee: i64,
        payer_bears: bool,
        held: i64,
        expires: i64,
        open: bool,
        /// Closed by its expiry (by the sweep, or by a late capture or void).
        expired: bool,
    }

    async fn check(backend: Backend, steps: Vec<Step>) -> Result<(), TestCaseError> {
        let (ledger, _db) = ledger(backend).await;
        let mut model = Model::default();
        for step in steps {
            apply(&ledger, &mut model, &step).await?;
            let names: Vec<String> = model.accounts.keys().cloned().collect();
            for account in &names {
                let stored = ledger.account(&id(account)).await.expect("read");
                let balance = stored.as_ref().map(|account| account.balance.0);
                prop_assert_eq!(balance, Some(model.accounts[account].0), "{} after {:?}", account, step);
                let held = stored.map(|account| account.held.0);
                let expected = model.held.get(account).copied().unwrap_or_default();
                prop_assert_eq!(held, Some(expected), "{} held after {:?}", account, step);
            }
            if !model.accounts.is_empty() {
                prop_assert_eq!(balance(&ledger, "_fees_EUR").await, model.fees, "fees after {:?}", step);
            }
        }
        let audit = ledger.audit().await.expect("audit");
        prop_assert_eq!(audit.first_violation(), None);
        Ok(())
    }

    async fn apply(ledger: &Ledger, model: &mut Model, step: &Step) -> Result<(), TestCaseError> {
        match *step {
            Step::Open { account, floor } => {
                let new = NewAccount { id: id(&name(account)), currency: eur().into(), floor: MinorUnits(floor) };
                let opened = ledger.open_account(&new, 0).await;
                match model.accounts.get(&name(account)) {
                    Some((_, existing)) if *existing != floor => {
                        prop_assert!(matches!(opened, Err(LedgerError::AccountExists(_))), "{:?}", opened);
                    }
                    Some(_) => prop_assert!(opened.is_ok(), "{:?}", opened),
                    None => {
                        prop_assert!(opened.is_ok(), "{:?}", opened);
                        model.accounts.insert(name(account), (0, floor));
                    }
                }
            }
            Step::Deposit { id: key, account, amount } => {
                let Some(stored) = ledger.account(&id(&name(account))).await.expect("read") else {
                    return Ok(());
                };
                let key = format!("t{key}");
                let hash = format!("deposit:{}:{amount}:EUR", name(account));
                let deposited = ledger
                    .deposit(&PaymentId::new(key.as_str()).expect("a valid id"), &stored, MinorUnits(amount), 0)
                    .await
                    .expect("deposit");
                match model.recorded.get(&key) {
                    Some(recorded) if *recorded == hash => {
                        prop_assert!(matches!(deposited, Deposited::Replayed(_)), "{:?}", deposited);
                    }
                    Some(_) => prop_assert_eq!(deposited, Deposited::Conflict),
                    None => {
                        prop_assert!(matches!(deposited, Deposited::New(_)), "{:?}", deposited);
                        model.recorded.insert(key, hash);
                        if let Some(entry) = model.accounts.get_mut(&name(account)) {
                            entry.0 += amount;
                        }
                    }
                }
            }
            Step::Pay { id: key, payer, payee, amount, fee, payer_bears, declined, expires } => {
                let key = format!("t{key}");
                let mut transfer = transfer(&key, &id(&name(payer)), &id(&name(payee)), amount, fee);
                transfer.request_hash = format!("{payer}:{payee}:{amount}:{fee}:{payer_bears}:{declined}:{expires:?}");
                transfer.fee_bearer = if payer_bears { FeeBearer::Payer } else { FeeBearer::Payee };
                transfer.now_ms = model.now;
                if let Some(expires) = expires {
                    transfer.kind = TransferKind::Authorization { expires_at_ms: expires };
                }
                let replies = if declined { Replies::DeclinedByPlugin("PluginDeclined".to_owned()) } else { named() };
                let hash = transfer.request_hash.clone();
                let recorded = ledger.record(transfer, replies).await;
                if let Some(existing) = model.recorded.get(&key) {
                    // A replay, or a conflicting one: the first request's fingerprint, nothing new.
                    prop_assert!(
                        matches!(&recorded, Ok(Recorded::Existing(stored)) if &stored.request_hash == existing),
                        "{:?}, recorded as {}",
                        recorded,
                        existing
                    );
                    return Ok(());
                }
                let (payer, payee) = (name(payer), name(payee));
                if payer == payee {
                    prop_assert!(matches!(recorded, Err(LedgerError::Invalid(_))), "{:?}", recorded);
                    return Ok(());
                }
                if !model.accounts.contains_key(&payer) || !model.accounts.contains_key(&payee) {
                    prop_assert!(matches!(recorded, Err(LedgerError::UnknownAccount(_))), "{:?}", recorded);
                    return Ok(());
                }
                model.recorded.insert(key.clone(), hash);
                let decision = match recorded {
                    Ok(Recorded::New { decision, .. }) => decision,
                    other => return Err(TestCaseError::fail(format!("expected a new decision, got {other:?}"))),
                };
                let (debit, credit) = if payer_bears { (amount + fee, amount) } else { (amount, amount - fee) };
                let (balance, floor) = model.accounts[&payer];
                let held = model.held.get(&payer).copied().unwrap_or_default();
                let expected = if declined {
                    Decision::PluginDeclined
                } else if balance - held - debit < floor {
                    Decision::InsufficientFunds
                } else {
                    Decision::Approved
                };
                prop_assert_eq!(decision, expected);
                match (decision, expires) {
                    (Decision::Approved, None) => {
                        model.post(&payer, &payee, debit, credit, fee);
                        let paid = Paid { payer, payee, amount, fee, payer_bears, refunded: 0, fee_reversed: 0 };
                        model.refundable.insert(key, paid);
                    }
                    (Decision::Approved, Some(expires)) => {
                        *model.held.entry(payer.clone()).or_default() += debit;
                        let hold = ModelHold {
                            payer,
                            payee,
                            amount,
                            fee,
                            payer_bears,
                            held: debit,
                            expires,
                            open: true,
                            expired: false,
                        };
                        model.holds.insert(key, hold);
                    }
                    _ => {}
                }
            }
            Step::Capture { id: key, of, amount } => close(ledger, model, key, of, Some(amount)).await?,
            Step::Void { id: key, of } => close(ledger, model, key, of, None).await?,
            Step::Expire { of } => {
                let of = format!("t{of}");
                let Some(hold) = model.holds.get(&of).cloned() else { return Ok(()) };
                let mut expiry = closing(&of, &hold, hold.amount, MinorUnits::ZERO, model.now);
                expiry.kind = TransferKind::Expiry;
                let recorded = ledger.record(expiry, closing_replies()).await;
                let decision = match recorded {
                    Ok(Recorded::New { decision, .. }) => decision,
                    other => return Err(TestCaseError::fail(format!("expected a new decision, got {other:?}"))),
                };
                let due = hold.open && hold.expires <= model.now;
                prop_assert_eq!(decision, if due { Decision::Approved } else { Decision::HoldNotOpen });
                if due {
                    model.release(&of, true);
                }
            }
            Step::Refund { id: key, of, amount, fee } => refund_payment(ledger, model, key, of, amount, fee).await?,
            Step::Settle { id: key, ref legs } => settle(ledger, model, key, legs).await?,
            Step::Tick => model.now += 1,
        }
        Ok(())
    }

    /// A capture (of `amount`) or a void (`None`) of authorization `of` under `key`.
    async fn close(
        ledger: &Ledger,
        model: &mut Model,
        key: u8,
        of: u8,
        amount: Option<i64>,
    ) -> Result<(), TestCaseError> {
        let (key, of) = (format!("t{key}"), format!("t{of}"));
        // A node refuses an unknown authorization or a capture above it before the ledger.
        let Some(hold) = model.holds.get(&of).cloned() else { return Ok(()) };
        if amount.is_some_and(|amount| amount > hold.amount) {
            return Ok(());
        }
        let captured = amount.unwrap_or(hold.amount);
        let fee = match amount {
            Some(_) => prorated_fee(MinorUnits(hold.fee), MinorUnits(captured), MinorUnits(hold.amount)),
            None => MinorUnits::ZERO,
        };
        let mut transfer = closing(&key, &hold, captured, fee, model.now);
        transfer.kind = match amount {
            Some(_) => TransferKind::Capture { authorization: PaymentId::new(of.as_str()).expect("id") },
            None => TransferKind::Void { authorization: PaymentId::new(of.as_str()).expect("id") },
        };
        transfer.request_hash = format!("close:{of}:{amount:?}");
        let hash = transfer.request_hash.clone();
        let recorded = ledger.record(transfer, closing_replies()).await;
        if let Some(existing) = model.recorded.get(&key) {
            prop_assert!(
                matches!(&recorded, Ok(Recorded::Existing(stored)) if &stored.request_hash == existing),
                "{:?}, recorded as {}",
                recorded,
                existing
            );
            return Ok(());
        }
        model.recorded.insert(key.clone(), hash);
        let decision = match recorded {
            Ok(Recorded::New { decision, .. }) => decision,
            other => return Err(TestCaseError::fail(format!("expected a new decision, got {other:?}"))),
        };
        let expected = if !hold.open && hold.expired {
            Decision::HoldExpired
        } else if !hold.open {
            Decision::HoldNotOpen
        } else if hold.expires <= model.now {
            Decision::HoldExpired
        } else {
            Decision::Approved
        };
        prop_assert_eq!(decision, expected);
        if hold.open {
            model.release(&of, expected == Decision::HoldExpired);
        }
        if expected == Decision::Approved && amount.is_some() {
            let fee = fee.0;
            let (debit, credit) =
                if hold.payer_bears { (captured + fee, captured) } else { (captured, captured - fee) };
            model.post(&hold.payer, &hold.payee, debit, credit, fee);
            let paid = Paid {
                payer: hold.payer.clone(),
                payee: hold.payee.clone(),
                amount: captured,
                fee,
                payer_bears: hold.payer_bears,
                refunded: 0,
                fee_reversed: 0,
            };
            model.refundable.insert(key, paid);
        }
        Ok(())
    }

    /// A refund of `amount` of payment `of` under `key`, charging `fee` if positive, giving
    /// `-fee` of the payment's fee back to whoever bore it if negative.
    async fn refund_payment(
        ledger: &Ledger,
        model: &mut Model,
        key: u8,
        of: u8,
        amount: i64,
        fee: i64,
    ) -> Result<(), TestCaseError> {
        // Refunds have ids of their own (`r…`), so that most reach the ledger as new ones
        // rather than as replays of a payment's id; they still replay each other.
        let (key, of) = (format!("r{key}"), format!("t{of}"));
        // A node refuses a refund of what moved no money before the ledger.
        let Some(paid) = model.refundable.get(&of).cloned() else { return Ok(()) };
        let Paid { payer, payee, refunded, .. } = paid.clone();
        let (charged, reversed) = (fee.max(0), (-fee).max(0));
        let mut transfer = transfer(&key, &id(&payee), &id(&payer), amount, charged);
        let reversal = (reversed > 0).then(|| FeeReversal::new(MinorUnits(reversed), eur().into()));
        transfer.kind = TransferKind::Refund { payment: PaymentId::new(of.as_str()).expect("id"), reversal };
        // A charge is the refunding payee's; a reversal goes back to whoever bore the fee.
        transfer.fee_bearer = if reversed > 0 && paid.payer_bears { FeeBearer::Payee } else { FeeBearer::Payer };
        transfer.request_hash = format!("refund:{of}:{amount}:{fee}");
        let hash = transfer.request_hash.clone();
        let replies = refund_replies();
        let recorded = ledger.record(transfer, replies).await;
        if let Some(existing) = model.recorded.get(&key) {
            prop_assert!(
                matches!(&recorded, Ok(Recorded::Existing(stored)) if &stored.request_hash == existing),
                "{:?}, recorded as {}",
                recorded,
                existing
            );
            return Ok(());
        }
        model.recorded.insert(key, hash);
        let decision = match recorded {
            Ok(Recorded::New { decision, .. }) => decision,
            other => return Err(TestCaseError::fail(format!("expected a new decision, got {other:?}"))),
        };
        let (balance, floor) = model.accounts[&payee];
        let held = model.held.get(&payee).copied().unwrap_or_default();
        // Prorated in all: at most fee x (refunded + amount) / paid, less what came back before.
        let reversible =
            if refunded + amount >= paid.amount { paid.fee } else { paid.fee * (refunded + amount) / paid.amount }
                - paid.fee_reversed;
        let (debit, credit) = if paid.payer_bears {
            (amount + charged, amount + reversed)
        } else {
            (amount + charged - reversed, amount)
        };
        let expected = if refunded + amount > paid.amount || reversed > reversible {
            Decision::ExceedsRefundable
        } else if debit > 0 && balance - held - debit < floor {
            Decision::InsufficientFunds
        } else {
            Decision::Approved
        };
        prop_assert_eq!(decision, expected);
        if decision == Decision::Approved {
            model.post(&payee, &payer, debit, credit, charged - reversed);
            if let Some(original) = model.refundable.get_mut(&of) {
                original.refunded += amount;
                original.fee_reversed += reversed;
            }
        }
        Ok(())
    }

    /// A settlement of `legs` under `key`: every leg or none, netted per account.
    async fn settle(
        ledger: &Ledger,
        model: &mut Model,
        key: u8,
        legs: &[(usize, usize, i64)],
    ) -> Result<(), TestCaseError> {
        let key = format!("t{key}");
        let legs: Vec<wasmpay_protocol::Leg> = legs
            .iter()
            .map(|(payer, payee, amount)| wasmpay_protocol::Leg {
                payer: id(&name(*payer)),
                payee: id(&name(*payee)),
                amount: amount.cast_unsigned(),
                currency: eur().into(),
            })
            .collect();
        let first = legs[0].clone();
        let mut transfer = transfer(&key, &first.payer, &first.payee, first.amount.cast_signed(), 0);
        transfer.request_hash = format!("settle:{legs:?}");
        transfer.kind = TransferKind::Settlement { legs: legs.clone() };
        let hash = transfer.request_hash.clone();
        let recorded = ledger.record(transfer, named()).await;
        if let Some(existing) = model.recorded.get(&key) {
            prop_assert!(
                matches!(&recorded, Ok(Recorded::Existing(stored)) if &stored.request_hash == existing),
                "{:?}, recorded as {}",
                recorded,
                existing
            );
            return Ok(());
        }
        model.recorded.insert(key, hash);
        let decision = match recorded {
            Ok(Recorded::New { decision, .. }) => decision,
            other => return Err(TestCaseError::fail(format!("expected a new decision, got {other:?}"))),
        };
        let mut net: HashMap<String, i64> = HashMap::new();
        for leg in &legs {
            *net.entry(leg.payer.to_string()).or_default() -= leg.amount.cast_signed();
            *net.entry(leg.payee.to_string()).or_default() += leg.amount.cast_signed();
        }
        let short = net.iter().any(|(account, change)| {
            let (balance, floor) = model.accounts[account];
            let held = model.held.get(account).copied().unwrap_or_default();
            *change < 0 && balance - held + change < floor
        });
        prop_assert_eq!(decision, if short { Decision::InsufficientFunds } else { Decision::Approved });
        if !short {
            for (account, change) in net {
                model.accounts.get_mut(&account).expect("opened").0 += change;
            }
        }
        Ok(())
    }

    /// A transfer closing `hold` as a node builds it from the stored authorization.
    fn closing(key: &str, hold: &ModelHold, amount: i64, fee: MinorUnits, now: i64) -> Transfer {
        let mut transfer = transfer(key, &id(&hold.payer), &id(&hold.payee), amount, fee.0);
        transfer.fee_bearer = if hold.payer_bears { FeeBearer::Payer } else { FeeBearer::Payee };
        transfer.now_ms = now;
        transfer
    }

    fn closing_replies() -> Replies {
        Replies::Closing { closed: "closed".into(), hold_expired: "expired".into(), not_open: "not open".into() }
    }

    impl Model {
        fn post(&mut self, payer: &str, payee: &str, debit: i64, credit: i64, fee: i64) {
            self.accounts.get_mut(payer).expect("opened").0 -= debit;
            self.accounts.get_mut(payee).expect("opened").0 += credit;
            self.fees += fee;
        }

        /// Closes an open hold: what it reserved is available again.
        fn release(&mut self, of: &str, expired: bool) {
            if let Some(hold) = self.holds.get_mut(of) {
                (hold.open, hold.expired) = (false, expired);
                *self.held.entry(hold.payer.clone()).or_default() -= hold.held;
            }
        }
    }

    /// Runs `steps` after every account was opened and funded, so that most payments can be
    /// approved and the operations on them (captures, voids, refunds) reach the ledger.
    fn run(backend: Backend, steps: Vec<Step>) -> Result<(), TestCaseError> {
        let funded = (0..ACCOUNTS).flat_map(|account| {
            let key = u8::try_from(100 + account).expect("few accounts");
            [Step::Open { account, floor: 0 }, Step::Deposit { id: key, account, amount: 300 }]
        });
        let steps = funded.chain(steps).collect();
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        runtime.block_on(check(backend, steps))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn sqlite_matches_the_model(steps in proptest::collection::vec(step(), 1..40)) {
            run(Backend::Sqlite, steps)?;
        }

        #[test]
        fn postgres_matches_the_model(steps in proptest::collection::vec(step(), 1..40)) {
            run(Backend::Postgres, steps)?;
        }
    }
}

/// Transfers submitted one after the other without waiting (as a partition's worker does) are
/// decided in that order across many small batches, which on PostgreSQL overlap (the next
/// batch is read and locked while the one before commits): exactly the first ones the payer
/// can afford are approved, and a repeated id, even of a payment still committing, replays.
async fn transfers_are_decided_in_the_order_they_were_submitted(backend: Backend) {
    let fresh = backend.fresh();
    let small = LedgerSettings { batch_size_max: 4, ..LedgerSettings::default() };
    let ledger = Ledger::open_with(&fresh.url, small, None).await.expect("open ledger");
    open(&ledger, "alice", 0).await;
    open(&ledger, "shop", 0).await;
    deposit(&ledger, "fund", "alice", 1_000).await;
    let (alice, shop) = (id("alice"), id("shop"));
    let mut committed = Vec::new();
    for index in 0..300 {
        // Every tenth transfer repeats the id of the one just before it.
        let key = if index % 10 == 9 { index - 1 } else { index };
        let transfer = transfer(&format!("p{key}"), &alice, &shop, 10, 0);
        committed.push(ledger.submit(transfer, named()).await.expect("submit"));
    }
    let mut decided = Vec::new();
    for commit in committed {
        decided.push(match commit.await.expect("recorded") {
            Recorded::New { decision, .. } => format!("{decision:?}"),
            Recorded::Existing(_) => "replayed".to_owned(),
        });
    }
    let first_decline = decided.iter().position(|decision| decision == "InsufficientFunds").expect("a decline");
    assert!(decided[..first_decline].iter().all(|decision| decision != "InsufficientFunds"));
    assert!(decided[first_decline..].iter().all(|decision| decision != "Approved"), "{decided:?}");
    assert_eq!(decided.iter().filter(|decision| *decision == "Approved").count(), 100);
    assert!(decided.iter().skip(9).step_by(10).all(|decision| decision == "replayed"), "{decided:?}");
    assert_eq!(balance(&ledger, "alice").await, 0);
    assert!(ledger.audit().await.expect("audit").is_balanced());
}

/// A transfer decided under an older lease token than the ledger has seen for its partition
/// (an owner that was paused while another took the partition over) is refused, in the same
/// transaction, with a retryable error, and nothing of it is posted; the same or a newer token
/// passes, and partitions are fenced independently.
async fn a_batch_with_an_older_lease_token_is_refused(backend: Backend) {
    let (ledger, _db) = ledger(backend).await;
    open(&ledger, "alice", 0).await;
    open(&ledger, "shop", 0).await;
    deposit(&ledger, "fund", "alice", 1_000).await;
    let (alice, shop) = (id("alice"), id("shop"));
    let record = |key: &str, partition: u32, token: u64| {
        ledger.record(leased(transfer(key, &alice, &shop, 10, 0), partition, token), named())
    };
    let approved = |recorded: Result<Recorded, LedgerError>| {
        matches!(recorded, Ok(Recorded::New { decision: Decision::Approved, .. }))
    };
    let fenced =
        |recorded: Result<Recorded, LedgerError>| matches!(recorded, Err(LedgerError::Fenced(ref p)) if p == &[3]);
    assert!(approved(record("new-owner", 3, 6).await));
    let stale = record("old-owner", 3, 5).await;
    assert!(stale.as_ref().is_err_and(LedgerError::is_transient), "{stale:?}");
    assert!(fenced(stale));
    assert!(ledger.payment("old-owner").await.expect("read").is_none());
    assert!(approved(record("same-lease", 3, 6).await));
    assert!(approved(record("renewed", 3, 7).await));
    assert!(fenced(record("superseded", 3, 6).await));
    assert!(approved(record("other-partition", 4, 1).await));
    assert_eq!(balance(&ledger, "alice").await, 1_000 - 40);
    assert!(ledger.audit().await.expect("audit").is_balanced());
}

/// A new owner's claim hands out the partition's next token and fences the old owner before
/// the new one has written anything; partitions count their tokens independently.
async fn a_new_owners_claim_fences_the_old_owner_at_once(backend: Backend) {
    let (ledger, _db) = ledger(backend).await;
    open(&ledger, "alice", 0).await;
    open(&ledger, "shop", 0).await;
    deposit(&ledger, "fund", "alice", 1_000).await;
    let (alice, shop) = (id("alice"), id("shop"));
    let record = |key: &str, partition: u32, token: u64| {
        ledger.record(leased(transfer(key, &alice, &shop, 10, 0), partition, token), named())
    };
    let first = ledger.claim(&[3, 4]).await.expect("claim");
    assert_eq!(first.into_iter().collect::<Vec<_>>(), [(3, 1), (4, 1)]);
    assert!(record("old-owner", 3, 1).await.is_ok());
    let second = ledger.claim(&[3]).await.expect("claim");
    assert_eq!(second[&3], 2);
    let stale = record("old-owner-later", 3, 1).await;
    assert!(matches!(stale, Err(LedgerError::Fenced(ref lost)) if lost == &[3]), "{stale:?}");
    assert!(record("new-owner", 3, 2).await.is_ok());
    // Partition 4 was not claimed again: its first owner still writes.
    assert!(record("partition-4", 4, 1).await.is_ok());
    assert_eq!(balance(&ledger, "alice").await, 1_000 - 30);
}

/// A ledger's identity is made once and survives reopening; another ledger has another.
async fn a_ledger_keeps_one_identity(backend: Backend) {
    let (first, first_db) = ledger(backend).await;
    let (second, _second_db) = ledger(backend).await;
    let identity = first.identity().await.expect("identity");
    assert_eq!(identity.len(), 32, "{identity}");
    first.close().await;
    let reopened = Ledger::open(&first_db.url).await.expect("reopen");
    assert_eq!(reopened.identity().await.expect("identity"), identity);
    assert_ne!(second.identity().await.expect("identity"), identity);
}

/// The first binding recorded for a deployment stands, whoever records another later and
/// across reopening; only adoption changes it, to the adopting ledger. Deployments are
/// independent.
async fn a_recorded_deployment_binding_changes_only_by_adoption(backend: Backend) {
    let (ledger, db) = ledger(backend).await;
    let me = ledger.identity().await.expect("identity");
    assert_eq!(ledger.deployment_binding("default").await.expect("read"), None);
    assert_eq!(ledger.record_deployment_binding("default", "elsewhere").await.expect("record"), "elsewhere");
    assert_eq!(ledger.record_deployment_binding("default", &me).await.expect("record"), "elsewhere");
    assert_eq!(ledger.record_deployment_binding("other", &me).await.expect("record"), me);
    ledger.close().await;
    let ledger = Ledger::open(&db.url).await.expect("reopen");
    assert_eq!(ledger.deployment_binding("default").await.expect("read").as_deref(), Some("elsewhere"));
    assert_eq!(ledger.adopt_deployment("default").await.expect("adopt").as_deref(), Some("elsewhere"));
    assert_eq!(ledger.deployment_binding("default").await.expect("read"), Some(me.clone()));
    assert_eq!(ledger.adopt_deployment("new").await.expect("adopt"), None);
    assert_eq!(ledger.deployment_binding("other").await.expect("read"), Some(me));
}

/// `open_existing` (what `wasmpay ledger verify` uses) finds no ledger at a fresh URL and leaves
/// nothing behind; once a ledger is there, it opens it.
async fn opening_an_existing_ledger_creates_nothing(backend: Backend) {
    let fresh = backend.fresh();
    for _ in 0..2 {
        let missing = Ledger::open_existing(&fresh.url).await;
        assert!(matches!(missing, Err(LedgerError::NoLedger(_))), "{missing:?}");
    }
    let ledger = Ledger::open(&fresh.url).await.expect("open");
    open(&ledger, "alice", 0).await;
    ledger.close().await;
    let existing = Ledger::open_existing(&fresh.url).await.expect("open existing");
    assert!(existing.account(&id("alice")).await.expect("read").is_some());
}

/// A payment into an account, then one out of it, submitted in that order (different
/// partitions' workers do this): the second sees the first's credit. On PostgreSQL a credit
/// takes no lock on the payee's row, so the committer must not read the next batch before the
/// credit committed.
async fn a_credit_is_seen_by_a_spend_submitted_after_it(backend: Backend) {
    let fresh = backend.fresh();
    let one = LedgerSettings { batch_size_max: 1, ..LedgerSettings::default() };
    let ledger = Ledger::open_with(&fresh.url, one, None).await.expect("open ledger");
    open(&ledger, "bob", 0).await;
    open(&ledger, "shop", 0).await;
    deposit(&ledger, "fund", "bob", 1_000).await;
    for round in 0..30 {
        let middle = format!("m{round}");
        open(&ledger, &middle, 0).await;
        let (bob, shop, middle) = (id("bob"), id("shop"), id(&middle));
        let credit =
            ledger.submit(transfer(&format!("c{round}"), &bob, &middle, 10, 0), named()).await.expect("submit");
        let spend =
            ledger.submit(transfer(&format!("s{round}"), &middle, &shop, 10, 0), named()).await.expect("submit");
        assert!(matches!(credit.await, Ok(Recorded::New { decision: Decision::Approved, .. })));
        let spent = spend.await;
        assert!(matches!(spent, Ok(Recorded::New { decision: Decision::Approved, .. })), "round {round}: {spent:?}");
    }
}

/// A raw PostgreSQL connection of the test's schema, inside a transaction holding `account`'s
/// row lock, as another node's batch does while it writes (or while that node is paused).
async fn hold_row(fresh: &Fresh, account: &str) -> sqlx::PgConnection {
    use sqlx::Connection as _;
    let mut raw = sqlx::PgConnection::connect(&fresh.url).await.expect("connect");
    sqlx::raw_sql("BEGIN").execute(&mut raw).await.expect("begin");
    sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
        .bind(account)
        .execute(&mut raw)
        .await
        .expect("lock");
    raw
}

/// A payer whose row another writer holds (a paused node's open batch, an operator) holds
/// back only its own transfers: the rest of the batch commits at once, and the held payer's
/// transfers go through, in order, once the row is free, under its lock, so its floor holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_holds_back_only_the_payer_another_writer_holds() {
    let fresh = Backend::Postgres.fresh();
    let gathering = LedgerSettings { batch_delay_us_max: 50_000, ..LedgerSettings::default() };
    let ledger = Ledger::open_with(&fresh.url, gathering, None).await.expect("open ledger");
    for account in ["p", "q", "shop"] {
        open(&ledger, account, 0).await;
    }
    deposit(&ledger, "fund-p", "p", 1_000).await;
    deposit(&ledger, "fund-q", "q", 1_000).await;
    let mut peer = hold_row(&fresh, "q").await;
    let (p, q, shop) = (id("p"), id("q"), id("shop"));
    let first_q = ledger.submit(transfer("q-1", &q, &shop, 600, 0), named()).await.expect("submit");
    let from_p = ledger.submit(transfer("p-1", &p, &shop, 10, 0), named()).await.expect("submit");
    let second_q = ledger.submit(transfer("q-2", &q, &shop, 600, 0), named()).await.expect("submit");
    let from_p = from_p.await;
    assert!(matches!(from_p, Ok(Recorded::New { decision: Decision::Approved, .. })), "{from_p:?}");
    let mut first_q = std::pin::pin!(first_q);
    let early = tokio::time::timeout(Duration::from_millis(200), first_q.as_mut()).await;
    assert!(early.is_err(), "q's transfer waits while another writer holds q: {early:?}");
    sqlx::raw_sql("COMMIT").execute(&mut peer).await.expect("release q");
    let (first_q, second_q) = (first_q.await, second_q.await);
    assert!(matches!(first_q, Ok(Recorded::New { decision: Decision::Approved, .. })), "{first_q:?}");
    // In submission order, under q's lock: the second would cross q's floor.
    assert!(matches!(second_q, Ok(Recorded::New { decision: Decision::InsufficientFunds, .. })), "{second_q:?}");
    assert_eq!(balance(&ledger, "q").await, 400);
    assert!(ledger.audit().await.expect("audit").is_balanced());
}

/// A payer row held by a stalled peer fails that payer's transfer after the ledger's wait, with
/// a retryable error, instead of stalling every payment behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_gives_up_on_a_stalled_peer_lock() {
    let fresh = Backend::Postgres.fresh();
    let ledger = Ledger::open(&fresh.url).await.expect("open ledger");
    for account in ["alice", "bob", "shop"] {
        open(&ledger, account, 0).await;
    }
    deposit(&ledger, "fund-alice", "alice", 1_000).await;
    deposit(&ledger, "fund-bob", "bob", 1_000).await;
    let mut peer = hold_row(&fresh, "alice").await;
    let (alice, bob, shop) = (id("alice"), id("bob"), id("shop"));
    let blocked = ledger.record(transfer("from-alice", &alice, &shop, 10, 0), named());
    let blocked = tokio::time::timeout(Duration::from_secs(10), blocked).await.expect("a bounded wait");
    assert!(blocked.as_ref().is_err_and(LedgerError::is_transient), "{blocked:?}");
    let unrelated = ledger.record(transfer("from-bob", &bob, &shop, 10, 0), named());
    let unrelated = tokio::time::timeout(Duration::from_secs(10), unrelated).await.expect("a bounded wait");
    assert!(matches!(unrelated, Ok(Recorded::New { decision: Decision::Approved, .. })), "{unrelated:?}");
    sqlx::raw_sql("ROLLBACK").execute(&mut peer).await.expect("release alice");
    assert!(ledger.payment("from-alice").await.expect("read").is_none());
}

/// A SQLite file serves one node: a second ledger opened to serve it (as a second node in this
/// process or another would) is refused with a typed error naming the file, while a reading
/// tool still opens it beside the first; once the first closes, another node may open it.
#[tokio::test]
async fn a_sqlite_ledger_serves_one_node() {
    let fresh = Backend::Sqlite.fresh();
    let first = Ledger::open(&fresh.url).await.expect("open ledger");
    open(&first, "alice", 0).await;
    let second = Ledger::open(&fresh.url).await;
    let path = fresh.url.trim_start_matches("sqlite://");
    match &second {
        Err(error @ LedgerError::SqliteInUse { database, .. }) => {
            assert_eq!(database, path);
            let message = error.to_string();
            assert!(message.contains("ledger_in_use") && message.contains("PostgreSQL"), "{message}");
        }
        other => panic!("a second node on one SQLite file must be refused: {other:?}"),
    }
    let alias = std::path::Path::new(path).with_file_name("alias.db");
    std::os::unix::fs::symlink(path, &alias).expect("symlink");
    let by_alias = Ledger::open(&format!("sqlite://{}", alias.display())).await;
    assert!(matches!(by_alias, Err(LedgerError::SqliteInUse { .. })), "another name of the file: {by_alias:?}");
    let reader = Ledger::open_existing(&fresh.url).await.expect("a reading tool opens it beside the node");
    assert!(reader.account(&id("alice")).await.expect("read").is_some());
    assert!(reader.audit().await.expect("audit").is_balanced());
    reader.close().await;
    // Still refused after the reader closed: the reader never held the node's lock.
    assert!(matches!(Ledger::open(&fresh.url).await, Err(LedgerError::SqliteInUse { .. })));
    first.close().await;
    let next = Ledger::open(&fresh.url).await.expect("the next node opens it once the first closed");
    assert!(next.account(&id("alice")).await.expect("read").is_some());
}

/// A table locked by someone else stalls every batch; the probe takes the locks a batch takes,
/// so `writable` says so within its bound (before, it probed no table and said yes), and says
/// yes again once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_probe_sees_a_locked_table() {
    use sqlx::Connection as _;
    let fresh = Backend::Postgres.fresh();
    let ledger = Ledger::open(&fresh.url).await.expect("open ledger");
    assert_eq!(ledger.writable().await, Ok(()));
    let mut peer = sqlx::PgConnection::connect(&fresh.url).await.expect("connect");
    sqlx::raw_sql("BEGIN; LOCK TABLE payments IN ACCESS EXCLUSIVE MODE").execute(&mut peer).await.expect("lock");
    tokio::time::sleep(PROBE_INTERVAL).await;
    let started = std::time::Instant::now();
    let found = ledger.writable().await;
    assert!(started.elapsed() <= PROBE_TIMEOUT, "the probe took {:?}", started.elapsed());
    assert!(found.as_ref().is_err_and(|error| error.contains("lock")), "{found:?}");
    sqlx::raw_sql("COMMIT").execute(&mut peer).await.expect("unlock");
    tokio::time::sleep(PROBE_INTERVAL).await;
    assert_eq!(ledger.writable().await, Ok(()));
}

/// Batches that fail while a probe's small write still succeeds (here a trigger refuses every
/// payment row, as a disk whose last pages fit the probe but not a batch would): `writable`
/// reports the failed batch until one commits, or until the failure is older than
/// `BATCH_FAILURE_WINDOW`.
#[tokio::test]
async fn failed_batches_make_the_ledger_unwritable_until_one_commits() {
    let fresh = Backend::Sqlite.fresh();
    let ledger = Ledger::open(&fresh.url).await.expect("open ledger");
    for account in ["alice", "shop"] {
        open(&ledger, account, 0).await;
    }
    deposit(&ledger, "fund", "alice", 1_000).await;
    let raw = sqlx::SqlitePool::connect(&fresh.url).await.expect("raw connection");
    sqlx::query("CREATE TRIGGER no_room BEFORE INSERT ON payments BEGIN SELECT RAISE(ABORT, 'no room'); END")
        .execute(&raw)
        .await
        .expect("trigger");
    let (alice, shop) = (id("alice"), id("shop"));
    let failed = ledger.record(transfer("refused", &alice, &shop, 10, 0), named()).await;
    assert!(matches!(failed, Err(LedgerError::BatchFailed(_))), "{failed:?}");
    let found = ledger.writable().await;
    assert!(found.as_ref().is_err_and(|error| error.contains("no room")), "{found:?}");
    sqlx::query("DROP TRIGGER no_room").execute(&raw).await.expect("drop trigger");
    assert!(ledger.writable().await.is_err(), "the failure counts until a batch commits");
    assert!(ledger.record(transfer("accepted", &alice, &shop, 10, 0), named()).await.is_ok());
    assert_eq!(ledger.writable().await, Ok(()));
    sqlx::query("CREATE TRIGGER no_room BEFORE INSERT ON payments BEGIN SELECT RAISE(ABORT, 'no room'); END")
        .execute(&raw)
        .await
        .expect("trigger");
    assert!(ledger.record(transfer("refused-again", &alice, &shop, 10, 0), named()).await.is_err());
    assert!(ledger.writable().await.is_err());
    tokio::time::sleep(BATCH_FAILURE_WINDOW).await;
    assert_eq!(ledger.writable().await, Ok(()), "a failure older than the window no longer counts");
}

#[test]
fn urls_are_shown_without_their_passwords() {
    assert_eq!(redacted_url("postgres://app:hunter2@db:5432/ledger"), "postgres://app@db:5432/ledger");
    assert_eq!(redacted_url("postgres://app:p@ss@db/ledger"), "postgres://app@db/ledger");
    assert_eq!(
        redacted_url("postgres://db/ledger?user=app&password=hunter2"),
        "postgres://db/ledger?user=app&password=***"
    );
    assert_eq!(redacted_url("sqlite://wasmpay.db"), "sqlite://wasmpay.db");
}
