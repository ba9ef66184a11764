//! A wasmpay client written from `docs/protocol.md` alone: ask the cluster for its partition
//! count, hash the payer's account id with FNV-1a, request on `wasmpay.pay.<partition>.<payer>`,
//! and retry with the same id when the reply says `error` or none comes.
//!
//! ```text
//! cargo run -p wasmpay-examples -- alice shop 1250 EUR
//! ```

use std::time::Duration;

use serde_json::{Value, json};

const ATTEMPTS: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(5);

/// FNV-1a, 32-bit, over the UTF-8 bytes of the account id (docs/protocol.md, "Partitions").
fn partition(account: &str, partitions: u32) -> u32 {
    let hash = account.bytes().fold(0x811c_9dc5_u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193));
    hash % partitions
}

async fn request(client: &async_nats::Client, subject: String, body: String) -> Option<Value> {
    let message = tokio::time::timeout(TIMEOUT, client.request(subject, body.into())).await.ok()?.ok()?;
    serde_json::from_slice(&message.payload).ok()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [payer, payee, amount, currency] = args.as_slice() else {
        return Err("usage: pay-over-nats <payer> <payee> <amount-in-minor-units> <currency>".into());
    };
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let client = async_nats::connect(url).await?;
    let info = request(&client, "wasmpay.cluster.info".into(), String::new()).await.ok_or("no wasmpay node answers")?;
    let partitions = info["partitions"].as_u64().and_then(|p| u32::try_from(p).ok()).ok_or("bad cluster info")?;
    let id = format!("example-{}", std::process::id());
    let payment = json!({
        "version": 1, "id": id, "payer": payer, "payee": payee, "amount": amount.parse::<u64>()?,
        "currency": currency, "method": "card",
        "details": {"pan": "4242 4242 4242 4242", "expiry": "12/30"},
        "metadata": {"source": "examples/pay_over_nats.rs"}
    });
    let subject = format!("wasmpay.pay.{}.{payer}", partition(payer, partitions));
    for attempt in 1..=ATTEMPTS {
        match request(&client, subject.clone(), payment.to_string()).await {
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
