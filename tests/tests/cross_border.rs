//! Cross-border payments over a real NATS server, on SQLite and PostgreSQL: the built-in
//! `xborder` method screens and prices them, the built-in `fx-table` plugin quotes the rate
//! from the operator's table, and the ledger books each currency through its FX account.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use serde_json::{Value, json};
use wasmpay_node::config::Config;
use wasmpay_node::quotes::FxSettings;
use wasmpay_plugin_host::PluginSettings;
use wasmpay_protocol::routing::{AccountId, subjects};
use wasmpay_protocol::{Code, Status};
use wasmpay_tests::{Backend, Harness, card, on_both_backends, parse};

on_both_backends!(
    a_cross_border_payment_converts_at_the_fx_plugins_rate_and_balances_per_currency,
    a_quote_fixes_the_rate_for_one_payment_until_it_expires,
);

/// EUR/USD at 1.0832 less 50 bp (1.077784), GBP not quoted; a deny-listed name; quotes
/// hold 2 s.
fn config() -> Config {
    let settings = |pairs: &[(&str, &str)]| PluginSettings {
        path: None,
        config: pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect(),
    };
    let plugins = BTreeMap::from([
        ("fx-table".to_owned(), settings(&[("EUR/USD", "1.0832"), ("markup_bps", "50")])),
        ("xborder".to_owned(), settings(&[("denied_names", "ACME Shell Co")])),
    ]);
    Config { plugins, fx: FxSettings { quote_ttl_ms: 2_000, ..FxSettings::default() }, ..Config::default() }
}

/// `alice` in EUR with 1,000.00, `bob` in USD, `gbp` in GBP.
async fn accounts(backend: Backend) -> Harness {
    let harness = Harness::start_on_with(backend, config()).await;
    harness.open("alice", "EUR", 0).await;
    harness.open("bob", "USD", 0).await;
    harness.open("gbp", "GBP", 0).await;
    harness.deposit("alice", 100_000).await;
    harness
}

/// A `cross_border` payment of `amount` EUR cents from alice to `payee`.
fn transfer(id: &str, payee: &str, amount: u64, counter: Option<&str>, quote: Option<&str>) -> Value {
    let mut payment = json!({"version": 1, "id": id, "payer": "alice", "payee": payee, "amount": amount,
        "currency": "EUR", "method": "cross_border",
        "details": {"payer_country": "DE", "payee_country": "US"}});
    if let Some(counter) = counter {
        payment["counter_currency"] = json!(counter);
    }
    if let Some(quote) = quote {
        payment["quote"] = json!(quote);
    }
    payment
}

async fn a_cross_border_payment_converts_at_the_fx_plugins_rate_and_balances_per_currency(backend: Backend) {
    let harness = accounts(backend).await;
    let raw = harness.pay_raw(&transfer("x-1", "bob", 10_000, Some("USD"), None)).await;
    let reply = parse(&raw);
    assert_eq!((reply.status, reply.code), (Status::Approved, Code::Ok), "{reply:?}");
    // 0.5 % of 100.00 and 1.00, borne by the payer; 100.00 EUR at 1.077784 is 107.7784 USD,
    // paid as 107.77.
    assert_eq!(
        (reply.fee, reply.plugins.clone()),
        (Some(150), vec!["xborder@0.1.0".to_owned(), "fx-table@0.1.0".to_owned()])
    );
    let conversion = reply.conversion.clone().expect("a conversion");
    assert_eq!(
        (conversion.currency.as_str(), conversion.amount, conversion.rate.to_string()),
        ("USD", 10_777, "1.077784".to_owned())
    );
    assert_eq!(harness.balance("alice").await, 100_000 - 10_150);
    assert_eq!((harness.balance("_fx_EUR").await, harness.balance("_fees_EUR").await), (10_000, 150));
    assert_eq!((harness.balance("_fx_USD").await, harness.balance("bob").await), (-10_777, 10_777));
    let stored = harness.ledger.payment("x-1").await.unwrap().expect("recorded");
    let record = stored.conversion.expect("recorded with its conversion");
    assert_eq!(
        (record.counter_amount, record.rate.as_str(), record.fx_plugin.as_str()),
        (10_777, "1.077784", "fx-table@0.1.0")
    );
    // A retry gets the same bytes; nothing moves twice.
    assert_eq!(harness.pay_raw(&transfer("x-1", "bob", 10_000, Some("USD"), None)).await, raw);
    assert_eq!(harness.balance("bob").await, 10_777);

    // Only the methods of `[fx] methods` convert (by default `cross_border`, whose plugin
    // screens sanctions): a card payment into the dollar account is refused, not recorded.
    let mut by_card = card("x-card", "alice", "bob", 1_000);
    by_card["counter_currency"] = json!("USD");
    let reply = harness.pay(&by_card).await;
    assert_eq!((reply.status, reply.code), (Status::Rejected, Code::UnsupportedCurrency), "{reply:?}");
    assert!(harness.ledger.payment("x-card").await.unwrap().is_none());

    // The FX plugin does not quote EUR/GBP: declined with its reason, recorded, nothing posted.
    let reply = harness.pay(&transfer("x-gbp", "gbp", 1_000, Some("GBP"), None)).await;
    assert_eq!((reply.code, reply.reason.as_deref()), (Code::PluginDeclined, Some("pair_not_quoted")), "{reply:?}");
    assert!(harness.ledger.payment("x-gbp").await.unwrap().expect("recorded").entries.is_empty());
    // A payee on the deny-list: declined by the method's validator before any rate is asked.
    let mut denied = transfer("x-denied", "bob", 1_000, Some("USD"), None);
    denied["details"]["payee_name"] = json!("acme shell co.");
    let reply = harness.pay(&denied).await;
    assert_eq!(
        (reply.reason.as_deref(), reply.plugins.as_slice()),
        (Some("sanctioned_party"), ["xborder@0.1.0".to_owned()].as_slice())
    );
    // The wrong counter currency for the payee, or none at all, converts nothing.
    let reply = harness.pay(&transfer("x-wrong", "bob", 1_000, None, None)).await;
    assert_eq!((reply.status, reply.code), (Status::Rejected, Code::CurrencyMismatch), "{reply:?}");
    // A refund would have to convert back: refused, nothing moves.
    let refund = json!({"version": 1, "type": "refund", "id": "r-1", "payee": "bob", "payment": "x-1"});
    let bob = AccountId::new("bob").unwrap();
    let subject = subjects::pay(harness.partitioner.partition_of(&bob), "bob");
    let reply = parse(&harness.request(&subject, refund.to_string().into_bytes()).await);
    assert_eq!(reply.code, Code::NotRefundable, "{reply:?}");

    let audit = harness.ledger.audit().await.unwrap();
    assert_eq!(audit.first_violation(), None, "{audit:?}");
    for currency in ["EUR", "USD"] {
        assert_eq!(audit.balance_sum_by_currency.get(currency), Some(&0), "{currency}: {audit:?}");
    }
}

async fn a_quote_fixes_the_rate_for_one_payment_until_it_expires(backend: Backend) {
    let harness = accounts(backend).await;
    let ask = json!({"payer": "alice", "payee": "bob", "amount": 5_000, "currency": "EUR", "counter_currency": "USD"});
    let (status, body) = harness.api("POST", "/v1/fx/quotes", Some(ask.clone())).await;
    assert_eq!(status, 201, "{body}");
    let reply = parse(&body);
    let quote = reply.quote.expect("a quote");
    assert_eq!(
        (reply.status, quote.counter_amount.0, quote.rate.to_string()),
        (Status::Quoted, 5_388, "1.077784".to_owned())
    );
    assert!(quote.expires_at_ms > quote.created_at_ms, "{quote:?}");

    // Paid with the quote: exactly its amounts, once.
    let reply = harness.pay(&transfer("q-1", "bob", 5_000, None, Some(&quote.id))).await;
    assert_eq!(reply.status, Status::Approved, "{reply:?}");
    let conversion = reply.conversion.expect("converted");
    assert_eq!((conversion.amount, conversion.quote.as_deref()), (5_388, Some(quote.id.as_str())));
    let again = harness.pay(&transfer("q-2", "bob", 5_000, None, Some(&quote.id))).await;
    assert_eq!((again.status, again.code), (Status::Declined, Code::QuoteUsed), "{again:?}");
    // Other terms than the quote's, or a quote nobody gave: refused, not recorded.
    let other = harness.pay(&transfer("q-3", "bob", 5_001, None, Some(&quote.id))).await;
    assert_eq!(other.code, Code::QuoteMismatch, "{other:?}");
    let unknown = harness.pay(&transfer("q-4", "bob", 5_000, None, Some("q_000000000000000000000000"))).await;
    assert_eq!(unknown.code, Code::UnknownQuote, "{unknown:?}");
    assert!(harness.ledger.payment("q-3").await.unwrap().is_none());

    // Over NATS too; past its expiry, the ledger declines the payment.
    let raw = harness.request(subjects::FX_QUOTE, ask.to_string().into_bytes()).await;
    let late = parse(&raw).quote.expect("a quote over NATS");
    tokio::time::sleep(std::time::Duration::from_millis(2_200)).await;
    let reply = harness.pay(&transfer("q-5", "bob", 5_000, None, Some(&late.id))).await;
    assert_eq!((reply.status, reply.code, reply.retryable), (Status::Declined, Code::QuoteExpired, true), "{reply:?}");
    assert_eq!(harness.balance("bob").await, 5_388);

    // What cannot be quoted: a pair the table lacks, an account of another currency.
    let (status, body) = harness
        .api(
            "POST",
            "/v1/fx/quotes",
            Some(
                json!({"payer": "alice", "payee": "gbp", "amount": 100, "currency": "EUR", "counter_currency": "GBP"}),
            ),
        )
        .await;
    assert_eq!((status, parse(&body).reason.as_deref()), (402, Some("pair_not_quoted")), "{body}");
    let (status, body) = harness
        .api(
            "POST",
            "/v1/fx/quotes",
            Some(
                json!({"payer": "alice", "payee": "gbp", "amount": 100, "currency": "EUR", "counter_currency": "USD"}),
            ),
        )
        .await;
    assert_eq!((status, parse(&body).code), (400, Code::CurrencyMismatch), "{body}");
    assert_eq!(harness.ledger.audit().await.unwrap().first_violation(), None);
}

/// A deployment without an FX plugin refuses a cross-border payment and a quote, and records
/// neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_an_fx_plugin_nothing_converts() {
    let harness = Harness::start_on_custom(Backend::Sqlite, config(), |settings| {
        settings
            .plugin_sources
            .retain(|source| !matches!(source, wasmpay_plugin_host::PluginSource::Builtin("fx-table", ..)));
    })
    .await;
    harness.open("alice", "EUR", 0).await;
    harness.open("bob", "USD", 0).await;
    harness.deposit("alice", 10_000).await;
    let reply = harness.pay(&transfer("n-1", "bob", 1_000, Some("USD"), None)).await;
    assert_eq!((reply.status, reply.code), (Status::Rejected, Code::UnsupportedCurrency), "{reply:?}");
    assert!(harness.ledger.payment("n-1").await.unwrap().is_none());
    let ask = json!({"payer": "alice", "payee": "bob", "amount": 100, "currency": "EUR", "counter_currency": "USD"});
    let (status, body) = harness.api("POST", "/v1/fx/quotes", Some(ask)).await;
    assert_eq!((status, parse(&body).code), (400, Code::UnsupportedCurrency), "{body}");
}
