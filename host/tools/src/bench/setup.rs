//! The accounts every measurement pays between: payers spread over the partitions, ten
//! merchants and one hot payee, opened and funded through the ledger's own API before any
//! load, so no measurement pays for them.

use anyhow::Context;
use futures::StreamExt;
use wasmpay_ledger::{Deposited, Ledger, NewAccount};
use wasmpay_node::clock;
use wasmpay_protocol::PaymentId;
use wasmpay_protocol::money::{Currency, MinorUnits};
use wasmpay_protocol::routing::{AccountId, Partitioner, subjects};

use super::Backend;
use super::load::progress;
use wasmpay_node::config::Config;

/// Merchants the uniform scenarios pay, in turn.
pub const MERCHANTS: u32 = 10;
/// The one payee of the hot-payee scenario.
const HOT_PAYEE: &str = "hot";
/// What every payer gets: far more than all of its payments.
const FUNDS: MinorUnits = MinorUnits(1 << 40);
/// Accounts opened at once: each is a transaction of its own, and PostgreSQL runs them side
/// by side (SQLite queues them on its one writer).
const OPENING_IN_FLIGHT: usize = 8;
/// Deposits in flight: they go through group commit like payments.
const DEPOSITS_IN_FLIGHT: usize = 512;

/// Where the payments of a measurement go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payees {
    /// The ten merchants in turn.
    Uniform,
    /// Every payment to one merchant.
    Hot,
}

impl Payees {
    /// The payee of payment `index`.
    pub fn of(self, index: u32) -> &'static str {
        const NAMES: [&str; MERCHANTS as usize] =
            ["shop-0", "shop-1", "shop-2", "shop-3", "shop-4", "shop-5", "shop-6", "shop-7", "shop-8", "shop-9"];
        match self {
            Payees::Uniform => NAMES[usize::try_from(index % MERCHANTS).unwrap_or_default()],
            Payees::Hot => HOT_PAYEE,
        }
    }

    /// Every payee of every scenario.
    fn all() -> impl Iterator<Item = &'static str> {
        (0..MERCHANTS).map(|index| Payees::Uniform.of(index)).chain([HOT_PAYEE])
    }

    /// The name of the scenario in payment ids.
    pub fn tag(self) -> &'static str {
        match self {
            Payees::Uniform => "uniform",
            Payees::Hot => "hot",
        }
    }
}

/// The paying accounts, with the subject each one's payments go to.
#[derive(Clone, Debug)]
pub struct Payers {
    accounts: Vec<(AccountId, String)>,
    partitioner: Partitioner,
}

impl Payers {
    /// `count` payers (at least one).
    pub fn new(count: u32, partitioner: Partitioner) -> anyhow::Result<Payers> {
        let accounts = (0..count.max(1))
            .map(|index| {
                let id = AccountId::new(format!("payer-{index:05}"))?;
                let subject = subjects::pay(partitioner.partition_of(&id), id.as_str());
                Ok((id, subject))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Payers { accounts, partitioner })
    }

    /// The payer of payment `index` and its subject: every payer in turn, so a measurement
    /// spreads evenly over the accounts and the partitions.
    pub fn of(&self, index: u32) -> &(AccountId, String) {
        let at = usize::try_from(index).unwrap_or_default() % self.accounts.len().max(1);
        &self.accounts[at]
    }

    /// The subject of any `account`'s payments (a merchant's refunds).
    pub fn subject_of(&self, account: &str) -> String {
        let partition = AccountId::new(account).map_or(0, |account| self.partitioner.partition_of(&account));
        subjects::pay(partition, account)
    }
}

/// The currency of every account and payment.
pub fn euro() -> anyhow::Result<Currency> {
    Ok("EUR".parse()?)
}

/// The ledger at `url`, opened with the node's own ledger settings.
pub async fn ledger(backend: Backend, url: &str) -> anyhow::Result<Ledger> {
    Ledger::open_with(url, Config::default().ledger, None)
        .await
        .with_context(|| format!("opening the {} ledger", backend.name()))
}

/// Opens the payees and `payers`, and funds every payer with [`FUNDS`].
pub async fn open_and_fund(ledger: &Ledger, payers: &Payers) -> anyhow::Result<()> {
    let euro = euro()?;
    let now = clock::ledger_ms();
    let open = |id: AccountId| {
        let ledger = ledger.clone();
        async move { ledger.open_account(&NewAccount { id, currency: euro.into(), floor: MinorUnits::ZERO }, now).await }
    };
    // One at a time first: the first account of a currency also opens its system accounts.
    for payee in Payees::all() {
        open(AccountId::new(payee)?).await.with_context(|| format!("opening {payee}"))?;
    }
    let total = u32::try_from(payers.accounts.len()).unwrap_or(u32::MAX);
    let mut opened = Vec::with_capacity(payers.accounts.len());
    let mut opening = futures::stream::iter(payers.accounts.iter().map(|(id, _)| open(id.clone())))
        .buffer_unordered(OPENING_IN_FLIGHT);
    while let Some(account) = opening.next().await {
        opened.push(account.context("opening a payer")?);
        let done = u32::try_from(opened.len()).unwrap_or(u32::MAX);
        if done.is_multiple_of(100) || done == total {
            progress("opening payers", done, total);
        }
    }
    eprintln!();
    let mut deposits = futures::stream::iter(opened.iter().map(|account| {
        let ledger = ledger.clone();
        async move {
            let id = PaymentId::new(format!("fund-{}", account.id))?;
            anyhow::Ok(ledger.deposit(&id, account, FUNDS, now).await?)
        }
    }))
    .buffer_unordered(DEPOSITS_IN_FLIGHT);
    let mut funded = 0_u32;
    while let Some(deposited) = deposits.next().await {
        if let Deposited::Conflict = deposited.context("funding a payer")? {
            anyhow::bail!("a funding deposit id was already used for another transfer");
        }
        funded += 1;
        if funded.is_multiple_of(500) || funded == total {
            progress("funding payers", funded, total);
        }
    }
    eprintln!();
    Ok(())
}
