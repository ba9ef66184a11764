//! The demo's cross-border scenario: a designer in Berlin pays a studio in New York. She asks
//! for a quote (euros to dollars at the FX plugin's rate, from the demo's rate table), pays
//! with it and the studio gets exactly the quoted dollars; the quote cannot be used twice; a
//! payment without a quote converts at the rate of the moment; a payment to a sanctioned
//! country is declined before any rate is asked. Every currency's books still sum to zero:
//! the FX accounts hold the position.

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::lifecycle::send;
use wasmpay_ledger::{Ledger, NewAccount, fx_account};
use wasmpay_node::client::request;
use wasmpay_node::clock;
use wasmpay_plugin_host::PluginSettings;
use wasmpay_protocol::money::{Currency, MinorUnits};
use wasmpay_protocol::routing::{AccountId, Partitioner, subjects};
use wasmpay_protocol::{Code, PROTOCOL_VERSION, PaymentId, Reply, Status};

const PAYER: &str = "lena-berlin";
const PAYEE: &str = "studio-nyc";

/// The demo's rate table: made up for the demo, and said so wherever it is printed.
pub(super) fn fx_table() -> (String, PluginSettings) {
    let config = [("EUR/USD", "1.0832"), ("markup_bps", "50")];
    let config = config.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect();
    ("fx-table".to_owned(), PluginSettings { path: None, config })
}

/// Runs the scenario and prints it; fails if a payment is not answered as it should be.
pub(super) async fn run(client: &async_nats::Client, partitioner: Partitioner, ledger: &Ledger) -> anyhow::Result<()> {
    let (euro, dollar): (Currency, Currency) = ("EUR".parse()?, "USD".parse()?);
    let now = clock::ledger_ms();
    for (id, currency, funds) in [(PAYER, euro, 50_000), (PAYEE, dollar, 0)] {
        let new = NewAccount { id: AccountId::new(id)?, currency: currency.into(), floor: MinorUnits::ZERO };
        let account = ledger.open_account(&new, now).await?;
        if funds > 0 {
            ledger.deposit(&PaymentId::new(format!("fund-{id}"))?, &account, MinorUnits(funds), now).await?;
        }
    }
    println!(
        "cross-border ({PAYER}, 500.00 EUR in Germany, pays {PAYEE} in dollars; demo rate EUR/USD 1.0832, 50 bp markup):"
    );
    let ask = json!({"payer": PAYER, "payee": PAYEE, "amount": 20_000, "currency": "EUR", "counter_currency": "USD"});
    let quoted: Reply = serde_json::from_str(&request(client, subjects::FX_QUOTE, ask.to_string()).await?)?;
    let quote = quoted.quote.context(format!("no quote: {} {}", quoted.code.as_str(), quoted.message))?;
    println!(
        "  quote {}: 200.00 EUR pays {} USD at {}, for {} s",
        quote.id,
        dollar.format(quote.counter_amount.0),
        quote.rate,
        (quote.expires_at_ms - quote.created_at_ms) / 1_000
    );
    let payment = |id: &str, amount: u64, extra: Value| {
        let mut body = json!({"version": PROTOCOL_VERSION, "id": id, "payer": PAYER, "payee": PAYEE, "amount": amount,
            "currency": "EUR", "method": "cross_border", "details": {"payer_country": "DE", "payee_country": "US"}});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    };
    let paid = send(client, partitioner, PAYER, &payment("xb-1", 20_000, json!({"quote": quote.id}))).await?;
    let conversion = paid.conversion.clone().context("a cross-border payment has a conversion")?;
    if paid.code != Code::Ok || conversion.amount != u64::try_from(quote.counter_amount.0).unwrap_or_default() {
        bail!("the quoted payment was not paid as quoted: {} {}", paid.code.as_str(), paid.message);
    }
    let fee = i64::try_from(paid.fee.unwrap_or_default()).unwrap_or_default();
    println!(
        "  pays with the quote -> approved, fee {} EUR (two lines) paid by her; {PAYEE} gets {} USD, as quoted",
        euro.format(fee),
        dollar.format(i64::try_from(conversion.amount).unwrap_or_default())
    );
    let again = send(client, partitioner, PAYER, &payment("xb-2", 20_000, json!({"quote": quote.id}))).await?;
    if again.code != Code::QuoteUsed {
        bail!("a quote converted twice: {} {}", again.code.as_str(), again.message);
    }
    println!("  pays with the same quote again -> declined (quote_used)");
    let live = send(client, partitioner, PAYER, &payment("xb-3", 5_000, json!({"counter_currency": "USD"}))).await?;
    let live_amount = live.conversion.map(|conversion| conversion.amount).context("converted at the live rate")?;
    println!(
        "  pays 50.00 EUR without a quote -> approved at the rate of the moment: {} USD",
        dollar.format(i64::try_from(live_amount).unwrap_or_default())
    );
    let sanctioned = payment(
        "xb-4",
        5_000,
        json!({"counter_currency": "USD", "details": {"payer_country": "DE", "payee_country": "KP"}}),
    );
    let declined = send(client, partitioner, PAYER, &sanctioned).await?;
    if declined.status != Status::Declined || declined.reason.as_deref() != Some("sanctioned_country") {
        bail!("a payment to a sanctioned country was not declined: {} {}", declined.code.as_str(), declined.message);
    }
    println!("  pays into North Korea -> declined (sanctioned_country), no rate asked");
    let position = |currency: Currency| async move {
        ledger.account(&fx_account(currency)).await.map(|account| account.map_or(0, |account| account.balance.0))
    };
    println!(
        "  FX position: _fx_EUR {} EUR, _fx_USD {} USD\n",
        euro.format(position(euro).await?),
        dollar.format(position(dollar).await?)
    );
    Ok(())
}
