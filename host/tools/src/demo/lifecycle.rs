//! The demo's payment lifecycle: one customer's authorizations captured, voided and left to
//! expire, a partial refund and a trade of euros for shares of a registered asset, each sent
//! over NATS as a client would and answered by the node, with the customer's posted, held and
//! available balances after each step.

use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};

use wasmpay_ledger::{Ledger, NewAccount};
use wasmpay_node::client::pay;
use wasmpay_node::clock;
use wasmpay_protocol::money::{AssetCode, Currency, MinorUnits, Unit};
use wasmpay_protocol::routing::{AccountId, Partitioner, subjects};
use wasmpay_protocol::{PROTOCOL_VERSION, PaymentId, Reply, Status};

/// How long the demo's wallet authorizations hold: short, so the expiry is seen in the run.
pub(super) const WALLET_EXPIRY_S: u64 = 2;
/// How often the demo's node sweeps due holds.
pub(super) const SWEEP_INTERVAL_MS: u64 = 100;

/// A customer of its own, so the payments before it do not decide what it can afford.
const PAYER: &str = "cust-life";
/// What it is funded with: 500.00.
const FUNDS: i64 = 50_000;
const PAYEE: &str = "shop-a";
/// The asset the settlement trades: a share, registered by the demo as an operator would.
const SHARE: &str = "ACME";
/// The customer's and the shop's accounts in it.
const SHARES: &str = "cust-life-acme";
const PAYEE_SHARES: &str = "shop-a-acme";

/// Runs the lifecycle and prints each step; fails if any step is not answered as it should be.
pub(super) async fn run(
    client: &async_nats::Client,
    partitioner: Partitioner,
    ledger: &Ledger,
    euro: Currency,
) -> anyhow::Result<()> {
    let new = NewAccount { id: AccountId::new(PAYER)?, currency: euro.into(), floor: MinorUnits::ZERO };
    let account = ledger.open_account(&new, clock::ledger_ms()).await?;
    ledger.deposit(&PaymentId::new("fund-cust-life")?, &account, MinorUnits(FUNDS), clock::ledger_ms()).await?;
    println!(
        "payment lifecycle ({PAYER}, funded with {} EUR, pays {PAYEE}; wallet authorizations lapse after \
         {WALLET_EXPIRY_S} s here):",
        euro.format(FUNDS)
    );
    let mut expired = client.subscribe(format!("{}.expired", subjects::EVENTS_PREFIX)).await?;
    client.flush().await?;
    let card = json!({"pan": "4242 4242 4242 4242", "expiry": "12/30"});
    let wallet = json!({"wallet_id": "wal_demo0001"});
    let steps = [
        ("authorize", authorize("life-auth-1", 12_000, "card", &card), Status::Authorized),
        ("capture 80.00", hold("capture", "life-cap-1", "life-auth-1", Some(8_000)), Status::Captured),
        ("authorize", authorize("life-auth-2", 5_000, "card", &card), Status::Authorized),
        ("void", hold("void", "life-void-2", "life-auth-2", None), Status::Voided),
        ("authorize", authorize("life-auth-3", 3_000, "wallet", &wallet), Status::Authorized),
    ];
    for (what, body, expected) in steps {
        let reply = send(client, partitioner, PAYER, &body).await?;
        show(what, &reply, expected, ledger, euro).await?;
    }
    let event = tokio::time::timeout(Duration::from_secs(WALLET_EXPIRY_S + 5), expired.next())
        .await
        .context("the wallet authorization did not expire in time")?
        .context("the event subscription ended")?;
    let reply: Reply = serde_json::from_slice(&event.payload).context("reading the expiry event")?;
    show("(expiry)", &reply, Status::Expired, ledger, euro).await?;
    let refund = json!({"version": PROTOCOL_VERSION, "type": "refund", "id": "life-refund-1", "payee": PAYEE,
                        "payment": "life-cap-1", "amount": 2_500});
    let reply = send(client, partitioner, PAYEE, &refund).await?;
    show("refund 25.00 (on the payee's subject)", &reply, Status::Refunded, ledger, euro).await?;
    settle(client, partitioner, ledger, euro).await?;
    println!();
    Ok(())
}

/// A trade settled in one step: the customer's euros to the shop and the shop's shares (an
/// asset the operator registered, exponent 0) to the customer's share account, both legs or
/// neither.
async fn settle(
    client: &async_nats::Client,
    partitioner: Partitioner,
    ledger: &Ledger,
    euro: Currency,
) -> anyhow::Result<()> {
    let code: AssetCode = SHARE.parse()?;
    ledger.register_asset(code, 0, "ACME Corp. common stock", clock::ledger_ms()).await?;
    for account in [SHARES, PAYEE_SHARES] {
        let new = NewAccount { id: AccountId::new(account)?, currency: Unit::Asset(code), floor: MinorUnits::ZERO };
        ledger.open_account(&new, clock::ledger_ms()).await?;
    }
    let shop = ledger.account(&AccountId::new(PAYEE_SHARES)?).await?.context("the shop's share account exists")?;
    ledger.deposit(&PaymentId::new("fund-shop-a-acme")?, &shop, MinorUnits(100), clock::ledger_ms()).await?;
    let trade = json!({"version": PROTOCOL_VERSION, "type": "settle", "id": "life-trade-1", "legs": [
        {"payer": PAYER, "payee": PAYEE, "amount": 5_000, "currency": "EUR"},
        {"payer": PAYEE_SHARES, "payee": SHARES, "amount": 4, "currency": SHARE}]});
    let reply = send(client, partitioner, PAYER, &trade).await?;
    show("settle: 50.00 EUR for 4 ACME shares", &reply, Status::Settled, ledger, euro).await?;
    let shares = ledger.account(&AccountId::new(SHARES)?).await?.context("the share account exists")?;
    println!("  {:<38} {SHARES} now holds {} {SHARE}, in the same transaction", "", shares.balance.0);
    Ok(())
}

fn authorize(id: &str, amount: u64, method: &str, details: &Value) -> Value {
    json!({"version": PROTOCOL_VERSION, "type": "authorize", "id": id, "payer": PAYER, "payee": PAYEE,
           "amount": amount, "currency": "EUR", "method": method, "details": details})
}

fn hold(kind: &str, id: &str, authorization: &str, amount: Option<u64>) -> Value {
    let mut body =
        json!({"version": PROTOCOL_VERSION, "type": kind, "id": id, "payer": PAYER, "payment": authorization});
    if let Some(amount) = amount {
        body["amount"] = json!(amount);
    }
    body
}

/// Sends `body` on `account`'s subject with the protocol's retry rule.
pub(super) async fn send(
    client: &async_nats::Client,
    partitioner: Partitioner,
    account: &str,
    body: &Value,
) -> anyhow::Result<Reply> {
    let account = AccountId::new(account)?;
    let subject = subjects::pay(partitioner.partition_of(&account), account.as_str());
    let (reply, _) = pay(client, &subject, body.to_string().into()).await?;
    serde_json::from_str(&reply).context("reading a reply")
}

/// Prints one step: the reply and the payer's balances after it.
async fn show(what: &str, reply: &Reply, expected: Status, ledger: &Ledger, euro: Currency) -> anyhow::Result<()> {
    if reply.status != expected {
        bail!(
            "{what}: expected {}, got {} {}: {}",
            expected.as_str(),
            reply.status.as_str(),
            reply.code.as_str(),
            reply.message
        );
    }
    let account = ledger.account(&AccountId::new(PAYER)?).await?.context("the payer exists")?;
    let amount = reply.amount.and_then(|amount| i64::try_from(amount).ok()).unwrap_or_default();
    let fee = match (reply.fee_reversed, reply.fee) {
        // The card gives the percentage part of its fee back on a refund.
        (Some(back), _) => format!(", fee {} back", euro.format(i64::try_from(back).unwrap_or_default())),
        (None, Some(fee)) if reply.status != Status::Authorized => {
            format!(", fee {}", euro.format(i64::try_from(fee).unwrap_or_default()))
        }
        _ => String::new(),
    };
    let available = account.balance.0 - account.held.0;
    let outcome = format!("{}{fee}", reply.status.as_str());
    println!(
        "  {what:<38} {:>8} EUR -> {outcome:<22} {PAYER}: posted {}, held {}, available {}",
        euro.format(amount),
        euro.format(account.balance.0),
        euro.format(account.held.0),
        euro.format(available),
    );
    Ok(())
}
