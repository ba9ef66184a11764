//! Deciding and writing one transfer (a payment or a deposit) idempotently, inside the write
//! transaction of its batch (`commit`): look the id up (a retry replays the stored reply),
//! re-read the balances, check the payer's floor, update balances, insert the entries and the
//! payment row with its reply.

use super::accounts::fetch;
use super::{LedgerError, checked, fee_account};
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
    fn as_str(self) -> &'static str {
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
    fn status_and_code(self) -> (&'static str, &'static str) {
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
struct Posting<'a> {
    account: &'a AccountId,
    amount: MinorUnits,
}

/// Records `transfer` on `connection`, inside a transaction the caller commits. `render`
/// turns the decision into the reply to store and send, so the stored reply is exactly the one
/// the client gets.
pub(super) async fn record_in(
    connection: &mut sqlx::SqliteConnection,
    transfer: &Transfer,
    render: impl FnOnce(Decision) -> String,
) -> Result<Recorded, LedgerError> {
    let existing: Option<(String, String)> = sqlx::query_as("SELECT request_hash, reply FROM payments WHERE id = ?")
        .bind(transfer.id.as_str())
        .fetch_optional(&mut *connection)
        .await?;
    if let Some((request_hash, reply)) = existing {
        return Ok(Recorded::Existing { request_hash, reply });
    }
    let fee_account = fee_account(transfer.currency);
    let postings = postings(transfer, &fee_account)?;
    let decision = if transfer.declined_by_plugin {
        Decision::PluginDeclined
    } else {
        match new_balances(connection, transfer, &postings).await? {
            None => Decision::InsufficientFunds,
            Some(balances) => {
                write_postings(connection, &transfer.id, &postings, &balances).await?;
                Decision::Approved
            }
        }
    };
    let reply = render(decision);
    insert_payment(connection, transfer, decision, &reply).await?;
    if decision == Decision::Approved {
        insert_entries(connection, &transfer.id, &postings).await?;
    }
    Ok(Recorded::New { decision, reply })
}

/// The entries of a transfer: they always sum to zero.
fn postings<'a>(transfer: &'a Transfer, fee_account: &'a AccountId) -> Result<Vec<Posting<'a>>, LedgerError> {
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

/// The balance of each posting's account after it, or `None` if one would cross its floor.
async fn new_balances(
    connection: &mut sqlx::SqliteConnection,
    transfer: &Transfer,
    postings: &[Posting<'_>],
) -> Result<Option<Vec<MinorUnits>>, LedgerError> {
    let mut balances = Vec::with_capacity(postings.len());
    for posting in postings {
        let account = fetch(connection, posting.account)
            .await?
            .ok_or_else(|| LedgerError::UnknownAccount(posting.account.to_string()))?;
        if account.currency != transfer.currency {
            return Err(LedgerError::Corrupt(format!(
                "{} holds {}, not {}",
                account.id, account.currency, transfer.currency
            )));
        }
        let balance = checked(posting.account, account.balance.checked_add(posting.amount))?;
        if account.floor.is_some_and(|floor| balance < floor) {
            return Ok(None);
        }
        balances.push(balance);
    }
    Ok(Some(balances))
}

async fn write_postings(
    connection: &mut sqlx::SqliteConnection,
    id: &str,
    postings: &[Posting<'_>],
    balances: &[MinorUnits],
) -> Result<(), LedgerError> {
    for (posting, balance) in postings.iter().zip(balances) {
        let updated = sqlx::query("UPDATE accounts SET balance = ? WHERE id = ?")
            .bind(balance.0)
            .bind(posting.account.as_str())
            .execute(&mut *connection)
            .await?;
        if updated.rows_affected() != 1 {
            return Err(LedgerError::Corrupt(format!("{id}: account {} vanished", posting.account)));
        }
    }
    Ok(())
}

async fn insert_entries(
    connection: &mut sqlx::SqliteConnection,
    id: &str,
    postings: &[Posting<'_>],
) -> Result<(), LedgerError> {
    for posting in postings {
        sqlx::query("INSERT INTO entries (payment_id, account_id, amount) VALUES (?, ?, ?)")
            .bind(id)
            .bind(posting.account.as_str())
            .bind(posting.amount.0)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

async fn insert_payment(
    connection: &mut sqlx::SqliteConnection,
    transfer: &Transfer,
    decision: Decision,
    reply: &str,
) -> Result<(), LedgerError> {
    let (status, code) = decision.status_and_code();
    sqlx::query(
        "INSERT INTO payments (id, kind, request_hash, status, code, payer, payee, currency, amount, fee,
                               fee_bearer, plugins, partition, reply, created_at_ms)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(transfer.id.as_str())
    .bind(transfer.kind.as_str())
    .bind(transfer.request_hash.as_str())
    .bind(status)
    .bind(code)
    .bind(transfer.payer.as_str())
    .bind(transfer.payee.as_str())
    .bind(transfer.currency.code())
    .bind(transfer.amount.0)
    .bind(transfer.fee.0)
    .bind(transfer.fee_bearer.as_str())
    .bind(transfer.plugins.as_str())
    .bind(transfer.partition.map(i64::from))
    .bind(reply)
    .bind(transfer.now_ms)
    .execute(&mut *connection)
    .await?;
    Ok(())
}
