//! # wasmpay-ledger
//!
//! The double-entry ledger: accounts, payments (the idempotency record) and entries, on
//! SQLite (`sqlite://…`, the embedded default) or PostgreSQL (`postgres://…`).
//!
//! Every transfer goes through group commit (`commit`): batches are decided in memory by pure
//! code (`batch`) and written in one transaction that holds every row it may debit (SQLite's
//! write lock, or PostgreSQL row locks taken in a stable order), so the check of a balance and
//! the update that depends on it never interleave with another writer. The schema backs the
//! code: balances below a floor, zero entries and unknown accounts are refused by constraints
//! too.
//!
//! Layout, from the top down (a module imports only modules below it):
//! - operations on the handle: `accounts` (open and read accounts), `assets` (units beyond
//!   ISO 4217), `funding` (deposits), `fencing` (partition claims, the ledger's identity),
//!   `client_keys` (who may pay over HTTP), `quotes` (FX quotes), `queries` (a recorded payment, the audit of the
//!   books), `statements` (an account's entries, payments and open holds, a page at a time);
//! - `handle`: the [`Ledger`] handle (open, record and submit transfers, probe, close);
//! - `commit`: group commit, the committer task that [`Ledger::record`] and
//!   [`Ledger::submit`] queue transfers for;
//! - `store`: the backend boundary, one `Store` over `store::sqlite` or
//!   `store::postgres`, which share row shapes and SQL fragments (`store::sql`) and their
//!   migrations (`store::schema`);
//! - `decision`: one batch decided in memory, pure code with no I/O;
//! - the types everything above decides on and stores: `transfer` (a transfer, the replies its
//!   caller stores with it, the decision, the entries' rule), `hold` (an authorization's
//!   reservation), `refund` (what a refund takes back), `conversion` (a cross-border
//!   payment's other currency, and quotes), `account`, `names` (what an operator
//!   may call an asset or a key), `settings`, `error`.
//!
//! Money and account ids come from `wasmpay-protocol`; nothing here knows about plugins, NATS
//! or HTTP. The ledger runs no caller code: a caller renders a transfer's replies before
//! submitting it ([`Replies`]), and the ledger stores the one its decision picks.

mod account;
mod accounts;
mod assets;
mod client_keys;
mod commit;
mod conversion;
mod decision;
mod error;
mod fencing;
mod funding;
mod handle;
mod hold;
mod names;
mod queries;
mod quotes;
mod refund;
mod settings;
mod statements;
mod store;
mod transfer;

pub use account::{Account, AccountKind, NewAccount, external_account, fee_account, fx_account};
pub use assets::Asset;
pub use client_keys::{ClientKey, IssuedKey};
pub use commit::CommitObserver;
pub use conversion::{Conversion, ConversionRecord, Quote};
pub use error::LedgerError;
pub use funding::{DepositReceipt, Deposited};
pub use handle::{BATCH_FAILURE_WINDOW, Ledger, PROBE_INTERVAL, PROBE_TIMEOUT};
pub use hold::{Hold, HoldState};
pub use queries::{Audit, HoldRecord, Posting, StoredPayment};
pub use quotes::new_quote_id;
pub use refund::Refundable;
pub use settings::{Durability, LedgerSettings};
pub use statements::{DEFAULT_PAGE, Entries, EntryLine, HoldLine, MAX_PAGE, OpenHolds, Page, PaymentLine, Payments};
pub use store::redacted as redacted_url;
pub use transfer::{Decision, FeeReversal, Recorded, Replies, StoredReply, Transfer, TransferKind};

#[cfg(test)]
mod tests;
