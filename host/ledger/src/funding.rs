//! Deposits: money entering the ledger from a currency's external account.

use serde::Serialize;

use crate::account::{Account, external_account};
use crate::error::LedgerError;
use crate::handle::Ledger;
use crate::transfer::{Recorded, Replies, StoredReply, Transfer, TransferKind};
use wasmpay_protocol::PaymentId;
use wasmpay_protocol::money::{FeeBearer, MinorUnits, Unit};
use wasmpay_protocol::routing::AccountId;

/// What a deposit answers, stored with it and sent again to a retry. Its fields are in the
/// order deposits have always been written (alphabetical).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DepositReceipt {
    /// The funded account.
    pub account: AccountId,
    /// Minor units deposited.
    pub amount: MinorUnits,
    /// The account's unit.
    pub currency: Unit,
    /// The deposit's idempotency key.
    pub id: PaymentId,
    /// Always `approved`: the external account has no floor.
    pub status: wasmpay_protocol::Status,
}

/// What [`Ledger::deposit`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deposited {
    /// Posted now; the receipt (JSON) was stored.
    New(String),
    /// This id was already posted for the same account and amount: the stored receipt.
    Replayed(String),
    /// This id was already used for another transfer; nothing changed.
    Conflict,
}

impl Ledger {
    /// Funds `account` with `amount` from its currency's external account, once per `id`:
    /// a retry with the same id, account and amount returns the stored receipt.
    pub async fn deposit(
        &self,
        id: &PaymentId,
        account: &Account,
        amount: MinorUnits,
        now_ms: i64,
    ) -> Result<Deposited, LedgerError> {
        let request_hash = format!("deposit:{}:{}:{}", account.id, amount, account.currency);
        let receipt = DepositReceipt {
            account: account.id.clone(),
            amount,
            currency: account.currency,
            id: id.clone(),
            status: wasmpay_protocol::Status::Approved,
        };
        let receipt = serde_json::to_string(&receipt).map_err(|error| LedgerError::Invalid(error.to_string()))?;
        let transfer = Transfer {
            id: id.clone(),
            kind: TransferKind::Deposit,
            request_hash: request_hash.clone(),
            payer: external_account(account.currency),
            payee: account.id.clone(),
            currency: account.currency,
            amount,
            fee: MinorUnits::ZERO,
            fee_bearer: FeeBearer::Payee,
            plugins: String::new(),
            method: None,
            metadata: None,
            client: None,
            partition: None,
            lease_token: None,
            now_ms,
        };
        // The external account has no floor, so a deposit is always approved; the receipt
        // stands for both replies all the same.
        let replies = Replies::Posting { approved: receipt.clone(), insufficient_funds: receipt };
        Ok(match self.record(transfer, replies).await? {
            Recorded::New { reply, .. } => Deposited::New(reply),
            Recorded::Existing(StoredReply { request_hash: recorded, reply }) if recorded == request_hash => {
                Deposited::Replayed(reply)
            }
            Recorded::Existing(_) => Deposited::Conflict,
        })
    }
}
