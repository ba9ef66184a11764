//! One batch of transfers, decided in memory: pure code, no I/O. The backend reads what the
//! batch needs in a few set-based queries (the recorded ids, the accounts it touches, with the
//! payers' rows locked, the holds it closes) and writes the [`Writes`] in a few multi-row
//! statements, so the statement count is the same for one transfer or five hundred.
//!
//! Deciding a transfer, in order: an id already recorded (before the batch, or earlier in it)
//! replays its stored reply; a transfer whose balances would leave the 64-bit range, or whose
//! account is missing, fails alone (nothing of it is written); a plugin's decline is recorded
//! without postings; a debit or a hold that would take the payer's *available* balance
//! (balance − held) below its floor declines; a capture or void of a hold that is closed or
//! past its expiry declines; anything else is approved and its postings and hold change the
//! batch's working balances and holds, which the next transfer of the batch sees.
//!
//! Balances change in two ways. An account whose row the batch locks (every account on
//! SQLite, whose write lock is the whole database; the payers on PostgreSQL, and the fee
//! account when a refund gives fee back) gets its net change (balance and held) added to its
//! row. Any other account (a payee, the fee account) is only credited, and gets its credits as sub-balances keyed by the payment's partition: a hot
//! payee credited by every batch then costs no lock on its account row, and credits never need
//! a floor check. Holds are only ever opened and closed on a payer, under its row lock, by its
//! partition's owner: the same lock orders a capture, a void and an expiry of one hold.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use wasmpay_protocol::money::{FeeBearer, MinorUnits, Unit, prorated_fee, reversible_fee};
use wasmpay_protocol::routing::AccountId;
use wasmpay_protocol::{Leg, PaymentId};

use crate::account::{Account, fee_account};
use crate::conversion::{QuoteState, fits};
use crate::error::{LedgerError, checked};
use crate::hold::{Hold, HoldState};
use crate::refund::Refundable;
use crate::transfer::{
    Decision, FeeReversal, Posting, Recorded, Replies, StoredReply, Transfer, TransferKind, postings,
};

/// The ids, accounts and holds a batch reads, computed before it is decided.
#[derive(Debug)]
pub(crate) struct Keys {
    /// The transfers' ids, for the idempotency lookup (an expiry has none of its own).
    pub(crate) ids: Vec<PaymentId>,
    /// Every account a transfer may post to, sorted.
    pub(crate) touched: BTreeSet<AccountId>,
    /// The accounts the batch may debit, sorted: their rows are locked, in this order.
    pub(crate) payers: BTreeSet<AccountId>,
    /// The authorizations whose holds a capture, void or expiry of the batch closes.
    pub(crate) holds: Vec<PaymentId>,
    /// The payments and captures a refund of the batch takes back from.
    pub(crate) refunds: Vec<PaymentId>,
    /// The FX quotes its cross-border payments were made with.
    pub(crate) quotes: Vec<String>,
}

impl Keys {
    pub(crate) fn of<'a>(transfers: impl Iterator<Item = &'a Transfer>) -> Keys {
        let mut keys = Keys {
            ids: Vec::new(),
            touched: BTreeSet::new(),
            payers: BTreeSet::new(),
            holds: Vec::new(),
            refunds: Vec::new(),
            quotes: Vec::new(),
        };
        for transfer in transfers {
            match &transfer.kind {
                TransferKind::Expiry => keys.holds.push(transfer.id.clone()),
                TransferKind::Refund { payment, .. } => {
                    keys.ids.push(transfer.id.clone());
                    keys.refunds.push(payment.clone());
                }
                kind => {
                    keys.ids.push(transfer.id.clone());
                    keys.holds.extend(kind.closes().cloned());
                }
            }
            keys.quotes.extend(transfer.kind.conversion().and_then(|conversion| conversion.quote.clone()));
            keys.touched.extend(transfer.accounts().cloned());
            keys.touched.insert(fee_account(transfer.currency));
            keys.payers.extend(transfer.debited().cloned());
        }
        keys
    }
}

/// The recorded payments a batch found, by id.
pub(crate) type Existing = HashMap<String, StoredReply>;

/// The holds a batch found, by authorization id.
pub(crate) type Holds = HashMap<PaymentId, Hold>;

/// The payments and captures a batch's refunds take back from, by id.
pub(crate) type Refundables = HashMap<PaymentId, Refundable>;

/// The FX quotes a batch's cross-border payments were made with, by id.
pub(crate) type Quotes = HashMap<String, QuoteState>;

/// What a batch read before it is decided, as its transaction found it.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// Its ids that are recorded already.
    pub(crate) existing: Existing,
    /// The accounts it may post to, that exist.
    pub(crate) accounts: HashMap<AccountId, Account>,
    /// The holds its captures, voids and expiries close.
    pub(crate) holds: Holds,
    /// What its refunds take back from.
    pub(crate) refundables: Refundables,
    /// The quotes its cross-border payments were made with, and whether each was used.
    pub(crate) quotes: Quotes,
}

/// Partition → the newest fencing token the ledger has seen for it.
pub(crate) type Fences = HashMap<u32, i64>;

/// The net change of a locked account's row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RowChange {
    /// Added to its balance.
    pub(crate) balance: MinorUnits,
    /// Added to what its open holds reserve.
    pub(crate) held: MinorUnits,
}

/// What a batch writes once every transfer in it is decided.
#[derive(Debug, Default)]
pub(crate) struct Writes {
    /// The net change of every locked account (a payer of the batch) that a posting or a hold
    /// touched.
    pub(crate) balances: BTreeMap<AccountId, RowChange>,
    /// Credits to accounts the batch does not hold: (account, shard) → amount, positive.
    pub(crate) credits: BTreeMap<(AccountId, i64), MinorUnits>,
    /// New payment rows.
    pub(crate) payments: Vec<NewPayment>,
    /// New entries, in posting order.
    pub(crate) entries: Vec<Entry>,
    /// Holds opened by authorizations of the batch.
    pub(crate) opened: Vec<OpenedHold>,
    /// Holds closed by captures, voids and expiries of the batch (each at most once).
    pub(crate) closed: Vec<ClosedHold>,
    /// What the batch's refunds add to each refunded payment's `refunded` and `fee_reversed`.
    pub(crate) refunded: BTreeMap<PaymentId, (MinorUnits, MinorUnits)>,
    /// The batch's refunds that give part of their payment's fee back, and how much: written
    /// to their own rows (a rare statement, not a column of every payment's insert).
    pub(crate) reversals: Vec<(PaymentId, MinorUnits)>,
    /// Per partition, the oldest lease token its transfers carry: the batch is refused if the
    /// ledger has seen a newer one, and stores it otherwise.
    pub(crate) fences: BTreeMap<u32, i64>,
}

/// A payment row to insert: the transfer, the ledger's decision and the reply stored with it.
#[derive(Debug)]
pub(crate) struct NewPayment {
    pub(crate) transfer: Transfer,
    pub(crate) decision: Decision,
    pub(crate) reply: String,
}

/// An entry row to insert: one posting of an approved payment.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) payment_id: PaymentId,
    pub(crate) account: AccountId,
    pub(crate) amount: MinorUnits,
}

/// A hold row to insert: an approved authorization's reservation on its payer.
#[derive(Debug)]
pub(crate) struct OpenedHold {
    pub(crate) id: PaymentId,
    pub(crate) payer: AccountId,
    pub(crate) held: MinorUnits,
    pub(crate) expires_at_ms: i64,
    pub(crate) partition: Option<u32>,
}

/// A hold row to close: from `open` to `state`, by `closed_by` (a capture's or void's id;
/// `None` for the ledger's expiry).
#[derive(Debug)]
pub(crate) struct ClosedHold {
    pub(crate) id: PaymentId,
    pub(crate) state: HoldState,
    pub(crate) captured: MinorUnits,
    pub(crate) closed_by: Option<PaymentId>,
    pub(crate) closed_at_ms: i64,
}

/// Decides `jobs` in order against what the batch `found` (recorded ids, accounts, holds,
/// refundable payments), of which it locks the rows of `locked`. Pure: the same input gives
/// the same output.
pub(crate) fn decide(
    jobs: Vec<(Transfer, Replies)>,
    found: Found,
    locked: &BTreeSet<AccountId>,
    fences: &Fences,
) -> (Vec<Result<Recorded, LedgerError>>, Writes) {
    let Found { mut existing, mut accounts, mut holds, mut refundables, mut quotes } = found;
    let mut writes = Writes::default();
    let mut outcomes = Vec::with_capacity(jobs.len());
    // A transfer under a token older than its partition's newest is refused alone: an old
    // owner's stale payment must not fail the other partitions' payments batched with it.
    let stale = |transfer: &Transfer| match (transfer.partition, transfer.lease_token.map(i64::try_from)) {
        (Some(partition), Some(Ok(token))) => fences.get(&partition).is_some_and(|newest| token < *newest),
        _ => false,
    };
    for (transfer, _) in &jobs {
        // A token out of range fails its transfer alone (in `decide_one`).
        if let (Some(partition), Some(Ok(token))) = (transfer.partition, transfer.lease_token.map(i64::try_from))
            && !stale(transfer)
        {
            let oldest = writes.fences.entry(partition).or_insert(token);
            *oldest = (*oldest).min(token);
        }
    }
    for (transfer, replies) in jobs {
        if stale(&transfer) {
            outcomes.push(Err(LedgerError::Fenced(transfer.partition.into_iter().collect())));
            continue;
        }
        let expiry = transfer.kind == TransferKind::Expiry;
        if !expiry && let Some(stored) = existing.get(transfer.id.as_str()) {
            outcomes.push(Ok(Recorded::Existing(stored.clone())));
            continue;
        }
        let parents = (&holds, &refundables, &quotes);
        let decided = decide_one(&transfer, replies.declined_by_plugin(), &accounts, parents).and_then(|decided| {
            let totals = writes.totals_after(&transfer, &decided, locked)?;
            let reply = replies.into_reply(decided.decision).ok_or_else(|| {
                LedgerError::Invalid(format!("{}: no reply was rendered for {:?}", transfer.id, decided.decision))
            })?;
            Ok((decided, totals, reply))
        });
        let (decided, totals, reply) = match decided {
            Ok(decided) => decided,
            Err(error) => {
                outcomes.push(Err(error));
                continue;
            }
        };
        let Decided { decision, changes, hold, held, refunded, legs } = decided;
        if let Some(refunded) = refunded {
            if let Some(original) = refundables.get_mut(&refunded.payment) {
                original.refunded = refunded.after;
                original.fee_reversed = refunded.fee_reversed_after;
            }
            let total = writes.refunded.entry(refunded.payment).or_insert((MinorUnits::ZERO, MinorUnits::ZERO));
            *total = (
                MinorUnits(total.0.0.saturating_add(refunded.amount.0)),
                MinorUnits(total.1.0.saturating_add(refunded.fee_reversed.0)),
            );
            if refunded.fee_reversed > MinorUnits::ZERO {
                writes.reversals.push((transfer.id.clone(), refunded.fee_reversed));
            }
        }
        if decision == Decision::Approved
            && let Some(quote) = transfer.kind.conversion().and_then(|conversion| conversion.quote.as_ref())
            && let Some(state) = quotes.get_mut(quote)
        {
            state.used = true;
        }
        if let (Some((_, after)), Some(state)) = (held, accounts.get_mut(&transfer.payer)) {
            state.held = after;
        }
        for (account, balance, amount) in changes {
            if let Some(state) = accounts.get_mut(&account) {
                state.balance = balance;
            }
            if legs.is_none() {
                writes.entries.push(Entry { payment_id: transfer.id.clone(), account, amount });
            }
        }
        for (account, amount) in legs.into_iter().flatten() {
            writes.entries.push(Entry { payment_id: transfer.id.clone(), account, amount });
        }
        for (key, total) in totals {
            match key {
                Sum::Locked(account) => writes.balances.insert(account, total),
                Sum::Credit(account, shard) => {
                    writes.credits.insert((account, shard), total.balance);
                    None
                }
            };
        }
        match hold {
            Some(HoldChange::Open { held, expires_at_ms }) => {
                writes.opened.push(OpenedHold {
                    id: transfer.id.clone(),
                    payer: transfer.payer.clone(),
                    held,
                    expires_at_ms,
                    partition: transfer.partition,
                });
            }
            Some(HoldChange::Close { id, state: closed, captured }) => {
                if let Some(open) = holds.get_mut(&id) {
                    (open.state, open.captured) = (closed, captured);
                }
                let closed_by = (!expiry).then(|| transfer.id.clone());
                writes.closed.push(ClosedHold {
                    id,
                    state: closed,
                    captured,
                    closed_by,
                    closed_at_ms: transfer.now_ms,
                });
            }
            None => {}
        }
        outcomes.push(Ok(Recorded::New { decision, reply: reply.clone() }));
        if !expiry {
            existing.insert(
                transfer.id.to_string(),
                StoredReply { request_hash: transfer.request_hash.clone(), reply: reply.clone() },
            );
            writes.payments.push(NewPayment { transfer, decision, reply });
        }
    }
    (outcomes, writes)
}

/// The error if a partition of `fences` is missing from `taken` (the partitions whose fence row
/// the transaction could take): a newer lease owner has written there.
pub(crate) fn fenced(fences: &BTreeMap<u32, i64>, taken: impl Iterator<Item = i64>) -> Result<(), LedgerError> {
    let taken: BTreeSet<i64> = taken.collect();
    let lost: Vec<u32> = fences.keys().copied().filter(|partition| !taken.contains(&i64::from(*partition))).collect();
    if lost.is_empty() { Ok(()) } else { Err(LedgerError::Fenced(lost)) }
}

/// A running sum of [`Writes`]: a locked account's net change, or a credit sub-balance.
enum Sum {
    Locked(AccountId),
    Credit(AccountId, i64),
}

impl Writes {
    /// The sums an approval of `decided` would leave, each checked: (sum, its new total).
    fn totals_after(
        &self,
        transfer: &Transfer,
        decided: &Decided,
        locked: &BTreeSet<AccountId>,
    ) -> Result<Vec<(Sum, RowChange)>, LedgerError> {
        let mut totals: Vec<(Sum, RowChange)> = Vec::with_capacity(decided.changes.len() + 1);
        for (account, _, amount) in &decided.changes {
            if locked.contains(account) {
                let before = self.balances.get(account).copied().unwrap_or_default();
                let balance = checked(account, before.balance.checked_add(*amount))?;
                totals.push((Sum::Locked(account.clone()), RowChange { balance, ..before }));
            } else if *amount > MinorUnits::ZERO {
                let shard = transfer.partition.map_or(0, i64::from);
                let before = self.credits.get(&(account.clone(), shard)).copied().unwrap_or(MinorUnits::ZERO);
                let balance = checked(account, before.checked_add(*amount))?;
                totals.push((Sum::Credit(account.clone(), shard), RowChange { balance, held: MinorUnits::ZERO }));
            } else {
                return Err(LedgerError::Invalid(format!("{}: debits `{account}`, not its payer", transfer.id)));
            }
        }
        let Some((held, _)) = decided.held else {
            return Ok(totals);
        };
        if !locked.contains(&transfer.payer) {
            return Err(LedgerError::Invalid(format!("{}: holds on `{}`, not locked", transfer.id, transfer.payer)));
        }
        let payer = Sum::Locked(transfer.payer.clone());
        let index =
            totals.iter().position(|(sum, _)| matches!(sum, Sum::Locked(account) if *account == transfer.payer));
        let before = match index {
            Some(index) => totals[index].1,
            None => self.balances.get(&transfer.payer).copied().unwrap_or_default(),
        };
        let after = RowChange { held: checked(&transfer.payer, before.held.checked_add(held))?, ..before };
        match index {
            Some(index) => totals[index].1 = after,
            None => totals.push((payer, after)),
        }
        Ok(totals)
    }
}

/// A posting as it would change its account: (account, balance after, amount posted).
type Change = (AccountId, MinorUnits, MinorUnits);

/// What a transfer does to a hold.
#[derive(Debug)]
enum HoldChange {
    /// An authorization reserves `held` on its payer until `expires_at_ms`.
    Open { held: MinorUnits, expires_at_ms: i64 },
    /// A capture, void or expiry closes hold `id` in `state`, having posted `captured`.
    Close { id: PaymentId, state: HoldState, captured: MinorUnits },
}

/// The ledger's decision on one new transfer with what an approval changes.
#[derive(Debug)]
struct Decided {
    decision: Decision,
    changes: Vec<Change>,
    hold: Option<HoldChange>,
    /// How the hold changes what the payer's holds reserve: (change, total after).
    held: Option<(MinorUnits, MinorUnits)>,
    /// What a refund gives back of its payment.
    refunded: Option<Refunded>,
    /// A settlement's entries, leg by leg (its `changes` are netted per account).
    legs: Option<Vec<(AccountId, MinorUnits)>>,
}

impl Decided {
    fn only(decision: Decision) -> Decided {
        Decided { decision, changes: Vec::new(), hold: None, held: None, refunded: None, legs: None }
    }

    fn posting(changes: Vec<Change>) -> Decided {
        Decided { changes, ..Decided::only(Decision::Approved) }
    }
}

/// The ledger's decision on one new transfer with the changes an approval makes, or why it
/// cannot be recorded at all.
fn decide_one(
    transfer: &Transfer,
    declined_by_plugin: bool,
    accounts: &HashMap<AccountId, Account>,
    (holds, refundables, quotes): (&Holds, &Refundables, &Quotes),
) -> Result<Decided, LedgerError> {
    // What the schema would refuse is refused here, for this transfer alone: at commit it
    // would fail the whole batch.
    if transfer.amount <= MinorUnits::ZERO || transfer.fee < MinorUnits::ZERO {
        let message = format!("{}: the amount must be positive and the fee not negative", transfer.id);
        return Err(LedgerError::Invalid(message));
    }
    if transfer.fee_bearer == FeeBearer::Payee && transfer.fee > transfer.amount {
        return Err(LedgerError::Invalid(format!("{}: the payee cannot bear a fee above the amount", transfer.id)));
    }
    if transfer.lease_token.is_some_and(|token| i64::try_from(token).is_err()) {
        return Err(LedgerError::Invalid(format!("{}: the lease token is out of range", transfer.id)));
    }
    if transfer.payer == transfer.payee {
        return Err(LedgerError::Invalid(format!("{}: pays its own payer", transfer.id)));
    }
    // Both accounts must exist and hold the transfer's currency: checked before a plugin's
    // decline is recorded, since a payment between these accounts cannot exist at all.
    let payee_unit =
        transfer.kind.conversion().map_or(transfer.currency, |conversion| Unit::Currency(conversion.counter));
    for (account, unit) in [(&transfer.payer, transfer.currency), (&transfer.payee, payee_unit)] {
        let Some(state) = accounts.get(account) else {
            return Err(LedgerError::UnknownAccount(account.to_string()));
        };
        if state.currency != unit {
            return Err(LedgerError::CurrencyMismatch { account: account.to_string(), holds: state.currency });
        }
    }
    let fee_account = fee_account(transfer.currency);
    // A cross-border payment declined before its rate was quoted has no conversion to post.
    let unpriced = transfer.kind.conversion().is_some_and(|conversion| conversion.rate.is_none());
    let postings = if declined_by_plugin && unpriced { Vec::new() } else { postings(transfer, &fee_account)? };
    // Each posting is computed from the balance before the transfer, so each account may
    // appear once.
    let twice = postings.iter().enumerate().find_map(|(index, posting)| {
        postings[..index].iter().any(|earlier| earlier.account == posting.account).then_some(posting.account)
    });
    if let Some(twice) = twice {
        return Err(LedgerError::Invalid(format!("{}: posts to `{twice}` twice", transfer.id)));
    }
    let closing = match &transfer.kind {
        TransferKind::Capture { authorization } | TransferKind::Void { authorization } => {
            Some(closed_hold(transfer, authorization, holds)?)
        }
        TransferKind::Expiry => Some(closed_hold(transfer, &transfer.id, holds)?),
        _ => None,
    };
    if declined_by_plugin {
        return Ok(Decided::only(Decision::PluginDeclined));
    }
    let payer = accounts.get(&transfer.payer).ok_or_else(|| LedgerError::UnknownAccount(transfer.payer.to_string()))?;
    if let Some(decision) = quoted(transfer, quotes)? {
        return Ok(Decided::only(decision));
    }
    if let Some(hold) = closing {
        match (hold.state, &transfer.kind) {
            (HoldState::Open, _) => {}
            // A capture or void after the sweep released the hold hears why, as before it.
            (HoldState::Expired, TransferKind::Capture { .. } | TransferKind::Void { .. }) => {
                return Ok(Decided::only(Decision::HoldExpired));
            }
            _ => return Ok(Decided::only(Decision::HoldNotOpen)),
        }
        let due = hold.expires_at_ms <= transfer.now_ms;
        let (decision, state) = match &transfer.kind {
            TransferKind::Expiry if !due => return Ok(Decided::only(Decision::HoldNotOpen)),
            TransferKind::Expiry => (Decision::Approved, HoldState::Expired),
            _ if due => (Decision::HoldExpired, HoldState::Expired),
            TransferKind::Capture { .. } => (Decision::Approved, HoldState::Captured),
            _ => (Decision::Approved, HoldState::Voided),
        };
        let released = checked(&transfer.payer, hold.held.checked_neg())?;
        let after = checked(&transfer.payer, payer.held.checked_add(released))?;
        let captured = if state == HoldState::Captured { transfer.amount } else { MinorUnits::ZERO };
        let close = HoldChange::Close { id: hold.id.clone(), state, captured };
        let mut decided = Decided { hold: Some(close), held: Some((released, after)), ..Decided::only(decision) };
        if state == HoldState::Captured {
            // The capture's debit is at most what the hold reserved, so the available balance
            // only grows; the floor is checked all the same.
            decided.changes = changes(transfer, postings, accounts, after)?
                .ok_or_else(|| LedgerError::Corrupt(format!("{}: a capture crossed a floor", transfer.id)))?;
        }
        return Ok(decided);
    }
    if let TransferKind::Authorization { expires_at_ms } = transfer.kind {
        let held = match transfer.fee_bearer {
            FeeBearer::Payer => checked(&transfer.payer, transfer.amount.checked_add(transfer.fee))?,
            FeeBearer::Payee => transfer.amount,
        };
        let after = checked(&transfer.payer, payer.held.checked_add(held))?;
        let available = checked(&transfer.payer, payer.balance.checked_sub(after))?;
        if payer.floor.is_some_and(|floor| available < floor) {
            return Ok(Decided::only(Decision::InsufficientFunds));
        }
        let open = HoldChange::Open { held, expires_at_ms };
        return Ok(Decided { hold: Some(open), held: Some((held, after)), ..Decided::only(Decision::Approved) });
    }
    if let TransferKind::Settlement { legs } = &transfer.kind {
        return settle(transfer, legs, accounts);
    }
    let refunded = match &transfer.kind {
        TransferKind::Refund { payment, reversal } => {
            let original = refunded_payment(transfer, payment, refundables)?;
            let after = checked(&transfer.payer, original.refunded.checked_add(transfer.amount))?;
            if after > original.amount {
                return Ok(Decided::only(Decision::ExceedsRefundable));
            }
            let fee_reversed = transfer.kind.fee_reversed();
            if reversal.is_some() {
                check_reversal(transfer, original)?;
                if fee_reversed > reversible_fee(original.fee, original.amount, after, original.fee_reversed) {
                    return Ok(Decided::only(Decision::ExceedsRefundable));
                }
            }
            let fee_reversed_after = checked(&transfer.payer, original.fee_reversed.checked_add(fee_reversed))?;
            Some(Refunded {
                payment: payment.clone(),
                amount: transfer.amount,
                after,
                fee_reversed,
                fee_reversed_after,
            })
        }
        _ => None,
    };
    match changes(transfer, postings, accounts, payer.held)? {
        Some(changes) => Ok(Decided { refunded, ..Decided::posting(changes) }),
        None => Ok(Decided::only(Decision::InsufficientFunds)),
    }
}

/// The decision on a cross-border payment's quote, if it declines the payment: expired at
/// the payment's time, or used by another payment already. A quote that does not exist or
/// whose terms are not the payment's is the caller's mistake (it read the quote to price the
/// payment), not a decision.
fn quoted(transfer: &Transfer, quotes: &Quotes) -> Result<Option<Decision>, LedgerError> {
    let Some(conversion) = transfer.kind.conversion() else {
        return Ok(None);
    };
    let Some(id) = &conversion.quote else {
        return Ok(None);
    };
    let invalid = |what: &str| LedgerError::Invalid(format!("{}: {what} quote `{id}`", transfer.id));
    let state = quotes.get(id).ok_or_else(|| invalid("no"))?;
    if !fits(&state.quote, &transfer.payer, &transfer.payee, transfer.amount, conversion) {
        return Err(invalid("not the terms of"));
    }
    Ok(if state.quote.expires_at_ms < transfer.now_ms {
        Some(Decision::QuoteExpired)
    } else if state.used {
        Some(Decision::QuoteUsed)
    } else {
        None
    })
}

/// What a refund gives back of its payment, and the payment's totals after it.
#[derive(Debug)]
struct Refunded {
    payment: PaymentId,
    amount: MinorUnits,
    after: MinorUnits,
    fee_reversed: MinorUnits,
    fee_reversed_after: MinorUnits,
}

/// A refund's fee reversal, checked against its payment: it charges no fee of its own, comes
/// from the unit's fee account, and goes to whoever bore the payment's fee (the refund's
/// payer if the payment's payee bore it, its payee otherwise). A mismatch is the caller's
/// mistake, not a decision.
fn check_reversal(transfer: &Transfer, original: &Refundable) -> Result<(), LedgerError> {
    let TransferKind::Refund { reversal: Some(reversal), .. } = &transfer.kind else {
        return Ok(());
    };
    let to_its_bearer = match original.fee_bearer {
        FeeBearer::Payee => FeeBearer::Payer,
        FeeBearer::Payer => FeeBearer::Payee,
    };
    if reversal.amount <= MinorUnits::ZERO
        || transfer.fee != MinorUnits::ZERO
        || transfer.fee_bearer != to_its_bearer
        || reversal != &FeeReversal::new(reversal.amount, transfer.currency)
    {
        return Err(LedgerError::Invalid(format!(
            "{}: a fee reversal is positive, charges no fee, and goes from the fee account to the fee's bearer",
            transfer.id
        )));
    }
    Ok(())
}

/// A settlement's legs, all or none: each leg's accounts exist and hold its currency; the
/// legs' postings are netted per account (a party may pay in one leg what it receives in
/// another) and every account left with less must stay at or above its floor, available
/// balance counted. Entries are kept per leg.
fn settle(transfer: &Transfer, legs: &[Leg], accounts: &HashMap<AccountId, Account>) -> Result<Decided, LedgerError> {
    if legs.is_empty() || legs.len() > wasmpay_protocol::MAX_LEGS || transfer.fee != MinorUnits::ZERO {
        return Err(LedgerError::Invalid(format!(
            "{}: 1 ..= {} legs and no fee",
            transfer.id,
            wasmpay_protocol::MAX_LEGS
        )));
    }
    let mut net: BTreeMap<&AccountId, MinorUnits> = BTreeMap::new();
    let mut entries = Vec::with_capacity(legs.len() * 2);
    for (index, leg) in legs.iter().enumerate() {
        let amount = MinorUnits::payment_amount(leg.amount)
            .ok_or_else(|| LedgerError::Invalid(format!("{}: leg {index} has no valid amount", transfer.id)))?;
        if leg.payer == leg.payee {
            return Err(LedgerError::Invalid(format!("{}: leg {index} pays its own payer", transfer.id)));
        }
        for (account, posted) in [(&leg.payer, checked(&leg.payer, amount.checked_neg())?), (&leg.payee, amount)] {
            let state = accounts.get(account).ok_or_else(|| LedgerError::UnknownAccount(account.to_string()))?;
            if state.currency != leg.currency {
                return Err(LedgerError::CurrencyMismatch { account: account.to_string(), holds: state.currency });
            }
            let sum = net.entry(account).or_insert(MinorUnits::ZERO);
            *sum = checked(account, sum.checked_add(posted))?;
            entries.push((account.clone(), posted));
        }
    }
    let mut changes = Vec::with_capacity(net.len());
    for (account, amount) in net.into_iter().filter(|(_, amount)| *amount != MinorUnits::ZERO) {
        let state = accounts.get(account).ok_or_else(|| LedgerError::UnknownAccount(account.to_string()))?;
        let balance = checked(account, state.balance.checked_add(amount))?;
        let available = checked(account, balance.checked_sub(state.held))?;
        if amount < MinorUnits::ZERO && state.floor.is_some_and(|floor| available < floor) {
            return Ok(Decided::only(Decision::InsufficientFunds));
        }
        changes.push((account.clone(), balance, amount));
    }
    Ok(Decided { legs: Some(entries), ..Decided::posting(changes) })
}

/// The payment `payment` that `transfer` (a refund) takes back from, checked against it: it
/// moved money, and the refund runs the other way between the same accounts in its currency.
/// The caller read it to render the replies, so a mismatch is its mistake, not a decision.
fn refunded_payment<'r>(
    transfer: &Transfer,
    payment: &PaymentId,
    refundables: &'r Refundables,
) -> Result<&'r Refundable, LedgerError> {
    let invalid = |what: &str| LedgerError::Invalid(format!("{}: {what} of payment {payment}", transfer.id));
    let original = refundables.get(payment).ok_or_else(|| invalid("a refund of no payment"))?;
    if !original.posted {
        return Err(invalid("a refund of nothing posted"));
    }
    if original.payee != transfer.payer || original.payer != transfer.payee || original.currency != transfer.currency {
        return Err(invalid("not the reverse accounts or the currency"));
    }
    Ok(original)
}

/// The hold `authorization` that `transfer` (a capture, void or expiry) closes, checked
/// against it: the same payer, payee and currency, a capture of at most the authorized amount
/// with its fee prorated by [`prorated_fee`], a void of the whole amount. The caller read the
/// hold to render the replies, so a mismatch is its mistake, not a decision.
fn closed_hold<'h>(transfer: &Transfer, authorization: &PaymentId, holds: &'h Holds) -> Result<&'h Hold, LedgerError> {
    let invalid =
        |what: &str| LedgerError::Invalid(format!("{}: {what} of authorization {authorization}", transfer.id));
    let hold = holds.get(authorization).ok_or_else(|| invalid("no hold"))?;
    if hold.payer != transfer.payer || hold.payee != transfer.payee || Unit::from(hold.currency) != transfer.currency {
        return Err(invalid("not the payer, payee or currency"));
    }
    let (amount, fee) = match transfer.kind {
        TransferKind::Capture { .. } => {
            if transfer.amount > hold.amount {
                return Err(invalid("a capture of more than the amount"));
            }
            (transfer.amount, prorated_fee(hold.fee, transfer.amount, hold.amount))
        }
        _ => (hold.amount, MinorUnits::ZERO),
    };
    if transfer.amount != amount || transfer.fee != fee || transfer.fee_bearer != hold.fee_bearer {
        return Err(invalid("not the amount and fee"));
    }
    Ok(hold)
}

/// The changes `postings` make, or `None` if a debit would take its account's available
/// balance (balance − held) below its floor. `payer_held` is what the payer's holds reserve
/// once the transfer is applied (less, for a capture, than before it).
fn changes(
    transfer: &Transfer,
    postings: Vec<Posting<'_>>,
    accounts: &HashMap<AccountId, Account>,
    payer_held: MinorUnits,
) -> Result<Option<Vec<Change>>, LedgerError> {
    let mut changes = Vec::with_capacity(postings.len());
    for posting in postings {
        let state =
            accounts.get(posting.account).ok_or_else(|| LedgerError::UnknownAccount(posting.account.to_string()))?;
        if state.currency != posting.unit {
            // The fee and FX accounts are per currency, so this is not a caller's mistake.
            return Err(LedgerError::Corrupt(format!("{} holds {}, not {}", state.id, state.currency, posting.unit)));
        }
        let balance = checked(posting.account, state.balance.checked_add(posting.amount))?;
        let held = if posting.account == &transfer.payer { payer_held } else { state.held };
        let available = checked(posting.account, balance.checked_sub(held))?;
        if posting.amount < MinorUnits::ZERO && state.floor.is_some_and(|floor| available < floor) {
            return Ok(None);
        }
        changes.push((posting.account.clone(), balance, posting.amount));
    }
    Ok(Some(changes))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use wasmpay_protocol::money::FeeBearer;

    use super::*;
    use crate::account::AccountKind;
    use crate::transfer::TransferKind;

    const CUSTOMERS: usize = 4;

    fn eur() -> Unit {
        "EUR".parse().unwrap_or_else(|_| unreachable!())
    }

    fn customer(index: usize) -> AccountId {
        AccountId::new(format!("c{index}")).unwrap_or_else(|_| unreachable!())
    }

    /// (payer, payee offset, amount, fee, payer bears the fee, declined by a plugin, id)
    type Step = (usize, usize, i64, i64, bool, bool, u8);

    fn transfer((payer, offset, amount, fee, payer_bears, _, id): Step) -> Transfer {
        Transfer {
            id: PaymentId::new(format!("t{id}")).unwrap_or_else(|_| unreachable!()),
            kind: TransferKind::Payment,
            request_hash: format!("h{id}"),
            payer: customer(payer),
            payee: customer((payer + 1 + offset) % CUSTOMERS),
            currency: eur(),
            amount: MinorUnits(amount),
            fee: MinorUnits(fee.min(amount)),
            fee_bearer: if payer_bears { FeeBearer::Payer } else { FeeBearer::Payee },
            plugins: String::new(),
            method: None,
            metadata: None,
            client: None,
            partition: None,
            now_ms: 0,
            lease_token: None,
        }
    }

    /// The replies of a step: each decision's name, so a test can tell which one was stored.
    fn replies(declined: bool) -> Replies {
        if declined {
            Replies::DeclinedByPlugin("PluginDeclined".to_owned())
        } else {
            Replies::Posting { approved: "Approved".to_owned(), insufficient_funds: "InsufficientFunds".to_owned() }
        }
    }

    /// What a batch over `accounts` finds when nothing is recorded yet.
    fn found(accounts: HashMap<AccountId, Account>) -> Found {
        Found { accounts, ..Found::default() }
    }

    fn job(step: Step) -> (Transfer, Replies) {
        (transfer(step), replies(step.5))
    }

    fn account(id: AccountId, balance: i64, floor: Option<i64>, kind: AccountKind) -> (AccountId, Account) {
        let account = Account {
            id: id.clone(),
            currency: eur(),
            balance: MinorUnits(balance),
            held: MinorUnits::ZERO,
            floor: floor.map(MinorUnits),
            kind,
        };
        (id, account)
    }

    /// The ledger's rules, one transfer at a time, written as plainly as possible.
    fn reference(steps: &[Step], start: &[(i64, i64)]) -> (Vec<&'static str>, Vec<i64>, i64) {
        let mut balances: Vec<i64> = start.iter().map(|(balance, _)| *balance).collect();
        let mut fees = 0_i64;
        let mut seen = BTreeSet::new();
        let mut decisions = Vec::new();
        for step in steps {
            let transfer = transfer(*step);
            if !seen.insert(transfer.id.clone()) {
                decisions.push("replayed");
                continue;
            }
            if step.5 {
                decisions.push("plugin_declined");
                continue;
            }
            let (payer, payee) = (step.0, (step.0 + 1 + step.1) % CUSTOMERS);
            let fee = transfer.fee.0;
            let (debit, credit) = if step.4 {
                (transfer.amount.0 + fee, transfer.amount.0)
            } else {
                (transfer.amount.0, transfer.amount.0 - fee)
            };
            if balances[payer] - debit < start[payer].1 {
                decisions.push("insufficient_funds");
                continue;
            }
            balances[payer] -= debit;
            balances[payee] += credit;
            fees += fee;
            decisions.push("approved");
        }
        (decisions, balances, fees)
    }

    /// What `writes` adds to `account`: its net change if held, else the sum of its credits.
    fn written(writes: &Writes, account: &AccountId) -> i64 {
        let credits: i64 =
            writes.credits.iter().filter(|((credited, _), _)| credited == account).map(|(_, amount)| amount.0).sum();
        writes.balances.get(account).map_or(0, |change| change.balance.0) + credits
    }

    proptest! {
        /// Any sequence of transfers, decided as one batch, gives the decisions and balances of
        /// the plain one-at-a-time rules, posts entries that sum to zero, and conserves money.
        #[test]
        fn a_batch_decides_like_one_transfer_at_a_time(
            // Small amounts against small balances, so debits often land exactly on a floor.
            start in proptest::collection::vec((0_i64..300, -100_i64..=0), CUSTOMERS),
            steps in proptest::collection::vec(
                (0..CUSTOMERS, 0..CUSTOMERS - 1, 1_i64..120, 0_i64..20, any::<bool>(), proptest::bool::weighted(0.1), 0_u8..40),
                1..80,
            ),
        ) {
            let mut accounts: HashMap<AccountId, Account> = (0..CUSTOMERS)
                .map(|index| account(customer(index), start[index].0, Some(start[index].1), AccountKind::Customer))
                .collect();
            let (fees_id, fees) = account(fee_account(eur()), 0, Some(0), AccountKind::Fees);
            accounts.insert(fees_id.clone(), fees);
            let jobs: Vec<(Transfer, Replies)> = steps.iter().map(|step| job(*step)).collect();
            let held = Keys::of(jobs.iter().map(|(transfer, _)| transfer)).payers;
            let (outcomes, writes) = decide(jobs, found(accounts.clone()), &held, &Fences::new());

            let (expected, balances, collected) = reference(&steps, &start);
            let decided: Vec<&str> = outcomes
                .iter()
                .map(|outcome| match outcome {
                    Ok(Recorded::Existing(_)) => "replayed",
                    Ok(Recorded::New { decision: Decision::Approved, .. }) => "approved",
                    Ok(Recorded::New { decision: Decision::InsufficientFunds, .. }) => "insufficient_funds",
                    Ok(Recorded::New { decision: Decision::PluginDeclined, .. }) => "plugin_declined",
                    Ok(Recorded::New {
                        decision: Decision::HoldExpired
                            | Decision::HoldNotOpen
                            | Decision::ExceedsRefundable
                            | Decision::QuoteExpired
                            | Decision::QuoteUsed,
                        ..
                    }) => "not a payment's",
                    Err(_) => "failed",
                })
                .collect();
            prop_assert_eq!(&decided, &expected);
            for (index, expected_balance) in balances.iter().enumerate() {
                prop_assert_eq!(start[index].0 + written(&writes, &customer(index)), *expected_balance);
            }
            prop_assert_eq!(written(&writes, &fees_id), collected);
            prop_assert!(writes.balances.keys().all(|account| held.contains(account)));
            prop_assert!(writes.credits.iter().all(|((account, _), amount)| !held.contains(account) && amount.0 > 0));
            let mut per_payment: BTreeMap<&str, i64> = BTreeMap::new();
            for entry in &writes.entries {
                *per_payment.entry(entry.payment_id.as_str()).or_default() += entry.amount.0;
            }
            prop_assert!(per_payment.values().all(|sum| *sum == 0), "{:?}", per_payment);
            let before: i64 = start.iter().map(|(balance, _)| balance).sum();
            let after: i64 = balances.iter().sum::<i64>() + collected;
            prop_assert_eq!(before, after);
            prop_assert_eq!(writes.payments.len(), expected.iter().filter(|decision| **decision != "replayed").count());
        }
    }

    /// One transfer of a batch that cannot be recorded fails alone: nothing of it is written,
    /// and the transfers around it are decided as if it were not there.
    #[test]
    fn a_failing_transfer_leaves_no_trace_in_its_batch() {
        let mut accounts: HashMap<AccountId, Account> = [
            account(customer(0), 1_000, Some(0), AccountKind::Customer),
            account(customer(1), i64::MAX - 50, Some(0), AccountKind::Customer),
        ]
        .into_iter()
        .collect();
        let (fees_id, fees) = account(fee_account(eur()), 0, Some(0), AccountKind::Fees);
        accounts.insert(fees_id, fees);
        let jobs = vec![
            job((0, 0, 10, 0, false, false, 1)),
            // Credits 100 to c1, whose balance would leave the 64-bit range.
            job((0, 0, 100, 0, false, false, 2)),
            job((0, 0, 20, 0, false, false, 3)),
        ];
        let held = Keys::of(jobs.iter().map(|(transfer, _)| transfer)).payers;
        let (outcomes, writes) = decide(jobs, found(accounts), &held, &Fences::new());
        assert!(matches!(outcomes[1], Err(LedgerError::Overflow(_))), "{outcomes:?}");
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
        assert_eq!(writes.balances.get(&customer(0)).map(|change| change.balance), Some(MinorUnits(-10 - 20)));
        assert_eq!(written(&writes, &customer(1)), 30);
        assert_eq!(writes.payments.len(), 2);
        assert!(writes.entries.iter().all(|entry| entry.payment_id.as_str() != "t2"));
    }

    #[test]
    fn a_payee_cannot_bear_a_fee_above_the_amount() {
        let accounts: HashMap<AccountId, Account> = [
            account(customer(0), 1_000, Some(0), AccountKind::Customer),
            account(customer(1), 1_000, Some(0), AccountKind::Customer),
        ]
        .into_iter()
        .collect();
        let mut greedy = transfer((0, 0, 10, 0, false, false, 1));
        greedy.fee = MinorUnits(11);
        let (outcomes, writes) =
            decide(vec![(greedy, replies(false))], found(accounts), &[customer(0)].into(), &Fences::new());
        assert!(matches!(outcomes[0], Err(LedgerError::Invalid(_))), "{outcomes:?}");
        assert!(writes.payments.is_empty() && writes.entries.is_empty());
    }

    #[test]
    fn a_transfer_to_its_own_payer_is_refused() {
        let accounts: HashMap<AccountId, Account> =
            [account(customer(0), 1_000, Some(0), AccountKind::Customer)].into_iter().collect();
        let mut looping = transfer((0, 0, 10, 0, false, false, 1));
        looping.payee = customer(0);
        let held = [customer(0)].into();
        let (outcomes, writes) = decide(vec![(looping, replies(false))], found(accounts), &held, &Fences::new());
        assert!(matches!(outcomes[0], Err(LedgerError::Invalid(_))), "{outcomes:?}");
        assert!(writes.balances.is_empty() && writes.payments.is_empty());
    }

    /// An old owner's stale payment fails alone: the payments of other partitions batched with
    /// it are decided as usual, and only their partitions' fences are written.
    #[test]
    fn a_transfer_under_an_older_token_is_refused_alone() {
        let accounts: HashMap<AccountId, Account> = [
            account(customer(0), 1_000, Some(0), AccountKind::Customer),
            account(customer(1), 1_000, Some(0), AccountKind::Customer),
            account(fee_account(eur()), 0, Some(0), AccountKind::Fees),
        ]
        .into_iter()
        .collect();
        let leased = |key: u8, partition: u32, token: u64| {
            let mut leased = transfer((0, 0, 10, 0, false, false, key));
            (leased.partition, leased.lease_token) = (Some(partition), Some(token));
            (leased, replies(false))
        };
        let fences: Fences = [(3, 7), (4, 2)].into();
        let jobs = vec![leased(1, 3, 6), leased(2, 4, 2), leased(3, 3, 7)];
        let held = Keys::of(jobs.iter().map(|(transfer, _)| transfer)).payers;
        let (outcomes, writes) = decide(jobs, found(accounts), &held, &fences);
        assert!(matches!(outcomes[0], Err(LedgerError::Fenced(ref lost)) if lost == &[3]), "{outcomes:?}");
        assert!(outcomes[1].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
        assert_eq!(writes.fences, [(3, 7), (4, 2)].into());
        assert_eq!(writes.payments.len(), 2);
    }
}
