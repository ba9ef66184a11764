//! A wasmpay client written from `docs/protocol.md` alone: ask the cluster for its partition
//! count, hash the account id with FNV-1a, request on `wasmpay.pay.<partition>.<account>`,
//! and retry with the same id when the reply says `error` or none comes.
//!
//! ```text
//! cargo run -p wasmpay-examples -- pay alice shop 1250 EUR
//! cargo run -p wasmpay-examples -- authorize alice shop 4000 EUR   # prints the authorization's id
//! cargo run -p wasmpay-examples -- capture alice <authorization id> 2500
//! cargo run -p wasmpay-examples -- void alice <authorization id>
//! cargo run -p wasmpay-examples -- refund shop <payment or capture id> 500
//! ```

use std::time::Duration;

use serde_json::{Value, json};

const ATTEMPTS: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(5);
const USAGE: &str = "usage: pay-over-nats pay|authorize <payer> <payee> <amount-in-minor-units> <currency>
       pay-over-nats capture <payer> <authorization> [<amount>]
       pay-over-nats void <payer> <authorization>
       pay-over-nats refund <payee> <payment or capture> [<amount>]";

/// FNV-1a, 32-bit, over the UTF-8 bytes of the account id (docs/protocol.md, "Partitions").
fn partition(account: &str, partitions: u32) -> u32 {
    let hash = account.bytes().fold(0x811c_9dc5_u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193));
    hash % partitions
}

async fn request(client: &async_nats::Client, subject: String, body: String) -> Option<Value> {
    let message = tokio::time::timeout(TIMEOUT, client.request(subject, body.into())).await.ok()?.ok()?;
    serde_json::from_slice(&message.payload).ok()
}

/// The message of the command line, and the account whose subject it goes on: the payer of a
/// payment, authorization, capture or void; the payee of a refund (the account it debits).
fn message(args: &[&str], id: &str) -> Result<(Value, String), Box<dyn std::error::Error>> {
    let amount = |text: Option<&&str>| text.map(|text| text.parse::<u64>()).transpose();
    let with_amount = |mut body: Value, text: Option<&&str>| -> Result<Value, Box<dyn std::error::Error>> {
        if let Some(amount) = amount(text)? {
            body["amount"] = json!(amount);
        }
        Ok(body)
    };
    match args {
        [kind @ ("pay" | "authorize"), payer, payee, value, currency] => {
            let body = json!({
                "version": 1, "type": if *kind == "pay" { "payment" } else { "authorize" }, "id": id,
                "payer": payer, "payee": payee, "amount": value.parse::<u64>()?, "currency": currency,
                "method": "card", "details": {"pan": "4242 4242 4242 4242", "expiry": "12/30"},
                "metadata": {"source": "examples/pay_over_nats.rs"}
            });
            Ok((body, (*payer).to_owned()))
        }
        [kind @ ("capture" | "void"), payer, authorization, rest @ ..] if rest.len() <= 1 => {
            let body = json!({"version": 1, "type": kind, "id": id, "payer": payer, "payment": authorization});
            Ok((with_amount(body, rest.first())?, (*payer).to_owned()))
        }
        [kind @ "refund", payee, payment, rest @ ..] if rest.len() <= 1 => {
            let body = json!({"version": 1, "type": kind, "id": id, "payee": payee, "payment": payment});
            Ok((with_amount(body, rest.first())?, (*payee).to_owned()))
        }
        _ => Err(USAGE.into()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let id = format!("example-{}-{}", args.first().unwrap_or(&""), std::process::id());
    let (body, account) = message(&args, &id)?;
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let client = async_nats::connect(url).await?;
    let info = request(&client, "wasmpay.cluster.info".into(), String::new()).await.ok_or("no wasmpay node answers")?;
    let partitions = info["partitions"].as_u64().and_then(|p| u32::try_from(p).ok()).ok_or("bad cluster info")?;
    let subject = format!("wasmpay.pay.{}.{account}", partition(&account, partitions));
    for attempt in 1..=ATTEMPTS {
        match request(&client, subject.clone(), body.to_string()).await {
            // `error` means nothing was recorded: the same id may be retried safely.
            Some(reply) if reply["status"] != "error" => {
                println!("{}", serde_json::to_string_pretty(&reply)?);
                return Ok(());
            }
            other => eprintln!("attempt {attempt}: {other:?}; retrying with the same id"),
        }
    }
    Err("no decision after retries".into())
}
