//! What is recorded: a transfer (a payment or a deposit), the ledger's decision on it, and its
//! entries, which always sum to zero. `batch` decides and writes them.

use super::LedgerError;
use wasmpay_protocol::money::{Currency, FeeBearer, MinorUnits};
use wasmpay_protocol::routing::AccountId;

/// What is being recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferKind {
    /// A client payment decided by plugins.
    Payment,
    /// Funding from the currency's external account.
    Deposit,
}

impl TransferKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            TransferKind::Payment => "payment",
            TransferKind::Deposit => "deposit",
        }
    }
}

/// One transfer to record. The caller has checked that both accounts exist and hold
/// `currency`; the ledger checks it again under the lock.
#[derive(Clone, Debug)]
pub struct Transfer {
    /// Idempotency key.
    pub id: String,
    /// Payment or deposit.
    pub kind: TransferKind,
    /// Fingerprint of the request: a retry must carry the same one.
    pub request_hash: String,
    /// Debited account.
    pub payer: AccountId,
    /// Credited account.
    pub payee: AccountId,
    /// Currency of the transfer and of both accounts.
    pub currency: Currency,
    /// Amount before fees, positive.
    pub amount: MinorUnits,
    /// Fee, zero or positive.
    pub fee: MinorUnits,
    /// Who bears the fee.
    pub fee_bearer: FeeBearer,
    /// `name@version` of the deciding plugins.
    pub plugins: String,
    /// Partition of the payer, for payments.
    pub partition: Option<u32>,
    /// The fencing token of the lease under which `partition`'s owner decided this transfer
    /// (cluster mode); `None` on a node that holds no leases. The batch is refused whole if
    /// the ledger has seen a newer token for the partition.
    pub lease_token: Option<u64>,
    /// Wall-clock time of the decision.
    pub now_ms: i64,
    /// A plugin already declined: record the decline, post nothing.
    pub declined_by_plugin: bool,
}

/// The ledger's verdict on a new transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Posted.
    Approved,
    /// The payer's balance would fall below its floor; recorded, nothing posted.
    InsufficientFunds,
    /// A plugin declined; recorded, nothing posted.
    PluginDeclined,
}

impl Decision {
    pub(super) fn status_and_code(self) -> (&'static str, &'static str) {
        match self {
            Decision::Approved => ("approved", "ok"),
            Decision::InsufficientFunds => ("declined", "insufficient_funds"),
            Decision::PluginDeclined => ("declined", "plugin_declined"),
        }
    }
}

/// What [`Ledger::record`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// This call decided the transfer; `reply` is what was stored.
    New {
        /// The decision.
        decision: Decision,
        /// The stored reply.
        reply: String,
    },
    /// The id was already recorded (a retry, or a concurrent duplicate).
    Existing {
        /// Fingerprint of the recorded request.
        request_hash: String,
        /// The stored reply, byte for byte.
        reply: String,
    },
}

/// One balance change, before it is written.
pub(super) struct Posting<'a> {
    pub(super) account: &'a AccountId,
    pub(super) amount: MinorUnits,
}

/// The entries of a transfer: they always sum to zero.
pub(super) fn postings<'a>(
    transfer: &'a Transfer,
    fee_account: &'a AccountId,
) -> Result<Vec<Posting<'a>>, LedgerError> {
    let overflow = |account: &AccountId| LedgerError::Overflow(account.to_string());
    let (debit, credit) = match transfer.fee_bearer {
        FeeBearer::Payer => {
            (transfer.amount.checked_add(transfer.fee).map_err(|_| overflow(&transfer.payer))?, transfer.amount)
        }
        FeeBearer::Payee => {
            (transfer.amount, transfer.amount.checked_sub(transfer.fee).map_err(|_| overflow(&transfer.payee))?)
        }
    };
    let mut postings = vec![
        Posting { account: &transfer.payer, amount: debit.checked_neg().map_err(|_| overflow(&transfer.payer))? },
        Posting { account: &transfer.payee, amount: credit },
    ];
    if transfer.fee > MinorUnits::ZERO {
        postings.push(Posting { account: fee_account, amount: transfer.fee });
    }
    postings.retain(|posting| posting.amount != MinorUnits::ZERO);
    let sum = postings.iter().try_fold(MinorUnits::ZERO, |sum, posting| sum.checked_add(posting.amount));
    assert_eq!(sum, Ok(MinorUnits::ZERO), "entries of {} must sum to zero", transfer.id);
    Ok(postings)
}
