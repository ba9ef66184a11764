//! What can go wrong in the ledger itself, as opposed to a payment it declined.

use wasmpay_protocol::money::{MinorUnits, Overflow, Unit};
use wasmpay_protocol::routing::AccountId;

/// A failure of the ledger itself, as opposed to a payment it declined.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database failed or is unreachable. Nothing was committed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// An account with this id already exists with a different currency or floor.
    #[error("account `{0}` already exists with different terms")]
    AccountExists(String),
    /// An asset with this code is registered with a different exponent or name.
    #[error("asset `{0}` is registered with different terms")]
    AssetExists(String),
    /// An account was opened in an asset nobody registered.
    #[error("asset `{0}` is not registered")]
    UnknownAsset(String),
    /// No such account.
    #[error("unknown account `{0}`")]
    UnknownAccount(String),
    /// An account of the transfer holds another currency.
    #[error("account `{account}` holds {holds}")]
    CurrencyMismatch {
        /// The account.
        account: String,
        /// The currency it holds.
        holds: Unit,
    },
    /// A balance would leave the 64-bit range.
    #[error("balance overflow on account `{0}`")]
    Overflow(String),
    /// Stored data that this code cannot have written.
    #[error("corrupt ledger data: {0}")]
    Corrupt(String),
    /// The transfer itself breaks the ledger's rules (a caller's bug): a non-positive amount,
    /// a negative fee, or two postings to one account.
    #[error("invalid transfer: {0}")]
    Invalid(String),
    /// The batch this transfer was in did not commit; nothing of it was posted.
    #[error("the ledger batch did not commit: {0}")]
    BatchFailed(String),
    /// The payer's row stayed held by another writer (another node's batch, a paused node, an
    /// operator's transaction) for longer than the ledger waits for it; nothing was posted.
    #[error("account `{0}` is held by another writer")]
    Busy(String),
    /// The ledger is closing.
    #[error("the ledger is closed")]
    Closed,
    /// A transfer carried a lease token older than the newest the ledger has seen for its
    /// partition: another node owns the partition now. Nothing of it was posted (nor of its
    /// batch, if a claim committed while the batch was being written).
    #[error("fenced: partitions {0:?} have a newer lease owner")]
    Fenced(Vec<u32>),
    /// There is no ledger at this URL (and nothing was created).
    #[error("no ledger at {0}")]
    NoLedger(String),
    /// Another ledger serves this SQLite file (another node, in this process or another): a
    /// SQLite ledger is one node's. Stable code `ledger_in_use`.
    #[error(
        "ledger_in_use: the SQLite ledger {database} is open by another node (it holds {lock}); \
         SQLite serves one node: use PostgreSQL for a cluster"
    )]
    SqliteInUse {
        /// The database file.
        database: String,
        /// The lock file beside it.
        lock: String,
    },
    /// The database URL names no backend this ledger has.
    #[error("`{0}` is not a database URL: write sqlite://PATH (sqlite://wasmpay.db) or postgres://USER@HOST/DATABASE")]
    UnsupportedUrl(String),
}

impl LedgerError {
    /// Whether trying again later can succeed: the database was unreachable, busy or out of
    /// space, or another node owns the partition now (a retry reaches it). Everything else is
    /// permanent for the same request (a balance that would leave the 64-bit range stays out
    /// of range), and a client must not be told to retry it.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LedgerError::Database(_)
                | LedgerError::BatchFailed(_)
                | LedgerError::Busy(_)
                | LedgerError::Closed
                | LedgerError::Fenced(_)
        )
    }
}

/// `result` of a sum on `account`'s balance, an overflow named after the account.
pub(crate) fn checked(account: &AccountId, result: Result<MinorUnits, Overflow>) -> Result<MinorUnits, LedgerError> {
    result.map_err(|_| LedgerError::Overflow(account.to_string()))
}
