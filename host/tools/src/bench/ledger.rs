//! The ledger alone: payments recorded straight through [`Ledger::record`] (group commit,
//! the node's ledger settings), without NATS, plugins or the payment path's reads, on the
//! accounts the end-to-end phase opened and funded. pgbench is its baseline: what the same
//! PostgreSQL does with a textbook small write transaction.

use wasmpay_ledger::{Decision, Recorded, Replies, Transfer, TransferKind};
use wasmpay_node::clock;
use wasmpay_protocol::PaymentId;
use wasmpay_protocol::money::{Currency, FeeBearer, MinorUnits};
use wasmpay_protocol::routing::{AccountId, DEFAULT_PARTITIONS, Partitioner};

use super::load::{Limits, closed_loop};
use super::report::{Row, Scenario};
use super::setup::{self, MERCHANTS, Payees, Payers};
use super::{Backend, BenchArgs};

/// Transfers in flight: one full batch (`batch_size_max`) committing while the next fills.
const IN_FLIGHT: usize = 512;

/// Records `--ledger-transfers` payments (or as many as `--seconds-max` allows) on the
/// ledger at `url`, which the end-to-end phase has opened and funded.
pub async fn measure(args: &BenchArgs, backend: Backend, url: &str) -> anyhow::Result<Row> {
    let ledger = setup::ledger(backend, url).await?;
    let partitioner = Partitioner::new(DEFAULT_PARTITIONS)?;
    let payers = Payers::new(args.payers, partitioner)?;
    let merchants =
        (0..MERCHANTS).map(|index| AccountId::new(Payees::Uniform.of(index))).collect::<Result<Vec<_>, _>>()?;
    let parts = Parts { payers, merchants, partitioner, euro: setup::euro()? };
    let limits = Limits { count: args.ledger_transfers, time: args.limits().time };
    let what = format!("{} {}, {IN_FLIGHT} in flight", backend.name(), Scenario::LedgerAlone.label());
    let measured = closed_loop(&what, IN_FLIGHT, limits, |index| {
        let (ledger, transfer) = (ledger.clone(), parts.transfer(index));
        async move {
            let replies = Replies::Posting {
                approved: r#"{"decision":"Approved"}"#.to_owned(),
                insufficient_funds: r#"{"decision":"InsufficientFunds"}"#.to_owned(),
            };
            let recorded = ledger.record(transfer, replies).await;
            matches!(recorded, Ok(Recorded::New { decision: Decision::Approved, .. }))
        }
    })
    .await;
    ledger.close().await;
    Ok(Row::measured(Scenario::LedgerAlone, Some(backend), format!("{IN_FLIGHT} in flight"), &measured)
        .in_flight(IN_FLIGHT))
}

/// What the transfers are made of.
#[derive(Debug)]
struct Parts {
    payers: Payers,
    merchants: Vec<AccountId>,
    partitioner: Partitioner,
    euro: Currency,
}

impl Parts {
    /// Payment `index`: like a card payment's, a payer in turn to a merchant in turn, with a
    /// fee (so the fee account is credited every time, as on the payment path).
    fn transfer(&self, index: u32) -> Transfer {
        let (payer, _) = self.payers.of(index);
        let merchant = usize::try_from(index).unwrap_or_default() % self.merchants.len().max(1);
        Transfer {
            id: PaymentId::new(format!("ledger-{index}")).unwrap_or_else(|_| unreachable!("a valid id")),
            kind: TransferKind::Payment,
            request_hash: format!("ledger-{index}"),
            payer: payer.clone(),
            payee: self.merchants[merchant].clone(),
            currency: self.euro.into(),
            amount: MinorUnits(100),
            fee: MinorUnits(3),
            fee_bearer: FeeBearer::Payer,
            plugins: "bench".to_owned(),
            method: None,
            metadata: None,
            client: None,
            partition: Some(self.partitioner.partition_of(payer)),
            lease_token: None,
            now_ms: clock::ledger_ms(),
        }
    }
}
