//! The demo's mobile-money scenario: a customer in Tanzania pays a shop from her phone number
//! in shillings, through the built-in `mobile_money` method; a Kenyan number trying the same
//! is declined by the plugin.

use anyhow::{Context, bail};
use serde_json::json;

use super::lifecycle::send;
use wasmpay_ledger::{Ledger, NewAccount};
use wasmpay_node::clock;
use wasmpay_protocol::money::{Currency, MinorUnits};
use wasmpay_protocol::routing::{AccountId, Partitioner};
use wasmpay_protocol::{Code, PROTOCOL_VERSION, PaymentId, Status};

const PAYER: &str = "amina";
const PAYEE: &str = "duka-la-mama";

/// Runs the scenario and prints it; fails if a payment is not answered as it should be.
pub(super) async fn run(client: &async_nats::Client, partitioner: Partitioner, ledger: &Ledger) -> anyhow::Result<()> {
    let shilling: Currency = "TZS".parse()?;
    let now = clock::ledger_ms();
    for (id, funds) in [(PAYER, 10_000_000), (PAYEE, 0)] {
        let new = NewAccount { id: AccountId::new(id)?, currency: shilling.into(), floor: MinorUnits::ZERO };
        let account = ledger.open_account(&new, now).await?;
        if funds > 0 {
            ledger.deposit(&PaymentId::new(format!("fund-{id}"))?, &account, MinorUnits(funds), now).await?;
        }
    }
    println!("mobile money ({PAYER}, funded with {} TZS, pays {PAYEE} from her phone):", shilling.format(10_000_000));
    let payment = |id: &str, msisdn: &str| {
        json!({"version": PROTOCOL_VERSION, "id": id, "payer": PAYER, "payee": PAYEE, "amount": 2_500_000,
               "currency": "TZS", "method": "mobile_money", "details": {"msisdn": msisdn}})
    };
    let paid = send(client, partitioner, PAYER, &payment("mobile-1", "+255 754 123 456")).await?;
    if paid.code != Code::Ok {
        bail!("the mobile-money payment was not approved: {} {}", paid.code.as_str(), paid.message);
    }
    let fee = i64::try_from(paid.fee.context("an approved payment has a fee")?).unwrap_or_default();
    let balance = ledger.account(&AccountId::new(PAYER)?).await?.context("the payer exists")?.balance;
    println!(
        "  +255 754 123 456 (Vodacom TZ) pays 25000.00 TZS -> approved, fee {} TZS paid by the sender; {PAYER}: posted {} TZS",
        shilling.format(fee),
        shilling.format(balance.0)
    );
    let declined = send(client, partitioner, PAYER, &payment("mobile-2", "+254 712 345 678")).await?;
    if declined.status != Status::Declined || declined.reason.as_deref() != Some("currency_not_of_country") {
        bail!("a Kenyan number paying shillings was not declined: {} {}", declined.code.as_str(), declined.message);
    }
    println!("  +254 712 345 678 (Safaricom KE) pays TZS -> declined (currency_not_of_country)\n");
    Ok(())
}
