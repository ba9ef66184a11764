//! One batch of transfers, decided in memory: pure code, no I/O. The backend reads what the
//! batch needs in a few set-based queries (the recorded ids, the accounts it touches, with the
//! payers' rows locked) and writes the [`Writes`] in a few multi-row statements, so the
//! statement count is the same for one transfer or five hundred.
//!
//! Deciding a transfer, in order: an id already recorded (before the batch, or earlier in it)
//! replays its stored reply; a transfer whose balances would leave the 64-bit range, or whose
//! account is missing, fails alone (nothing of it is written); a plugin's decline is recorded
//! without postings; a debit that would cross the payer's floor declines; anything else is
//! approved and its postings change the batch's working balances, which the next transfer of
//! the batch sees.
//!
//! Balances change in two ways. An account whose row the batch holds (every account on
//! SQLite, whose write lock is the whole database; the payers on PostgreSQL) gets its net
//! change added to its row. Any other account (a payee, the fee account) is only credited,
//! and gets its credits as sub-balances keyed by the payment's partition: a hot payee
//! credited by every batch then costs no lock on its account row, and credits never need a
//! floor check.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use wasmpay_protocol::PaymentId;
use wasmpay_protocol::money::{FeeBearer, MinorUnits};
use wasmpay_protocol::routing::AccountId;

use crate::account::{Account, fee_account};
use crate::error::{LedgerError, checked};
use crate::transfer::{Decision, Recorded, Replies, StoredReply, Transfer, postings};

/// The ids and accounts a batch reads, computed before it is decided.
#[derive(Debug)]
pub(crate) struct Keys {
    /// The transfers' ids, for the idempotency lookup.
    pub(crate) ids: Vec<PaymentId>,
    /// Every account a transfer may post to, sorted.
    pub(crate) touched: BTreeSet<AccountId>,
    /// The accounts the batch may debit, sorted: their rows are locked, in this order.
    pub(crate) payers: BTreeSet<AccountId>,
}

impl Keys {
    pub(crate) fn of<'a>(transfers: impl Iterator<Item = &'a Transfer>) -> Keys {
        let mut keys = Keys { ids: Vec::new(), touched: BTreeSet::new(), payers: BTreeSet::new() };
        for transfer in transfers {
            keys.ids.push(transfer.id.clone());
            keys.touched.extend([transfer.payer.clone(), transfer.payee.clone(), fee_account(transfer.currency)]);
            keys.payers.insert(transfer.payer.clone());
        }
        keys
    }
}

/// The recorded payments a batch found, by id.
pub(crate) type Existing = HashMap<String, StoredReply>;

/// Partition → the newest fencing token the ledger has seen for it.
pub(crate) type Fences = HashMap<u32, i64>;

/// What a batch writes once every transfer in it is decided.
#[derive(Debug, Default)]
pub(crate) struct Writes {
    /// The net change of every held account (a payer of the batch) that a posting touched.
    pub(crate) balances: BTreeMap<AccountId, MinorUnits>,
    /// Credits to accounts the batch does not hold: (account, shard) → amount, positive.
    pub(crate) credits: BTreeMap<(AccountId, i64), MinorUnits>,
    /// New payment rows.
    pub(crate) payments: Vec<NewPayment>,
    /// New entries, in posting order.
    pub(crate) entries: Vec<Entry>,
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

/// Decides `jobs` in order against the recorded payments `existing` and the `accounts` they
/// touch, of which the batch holds the rows of `held`. Pure: the same input gives the same
/// output.
pub(crate) fn decide(
    jobs: Vec<(Transfer, Replies)>,
    mut existing: Existing,
    mut accounts: HashMap<AccountId, Account>,
    held: &BTreeSet<AccountId>,
    fences: &Fences,
) -> (Vec<Result<Recorded, LedgerError>>, Writes) {
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
        if let Some(stored) = existing.get(transfer.id.as_str()) {
            outcomes.push(Ok(Recorded::Existing(stored.clone())));
            continue;
        }
        let decided = decide_one(&transfer, replies.declined_by_plugin(), &accounts).and_then(|(decision, changes)| {
            let totals = writes.totals_after(&transfer, &changes, held)?;
            Ok((decision, changes, totals))
        });
        let (decision, changes, totals) = match decided {
            Ok(decided) => decided,
            Err(error) => {
                outcomes.push(Err(error));
                continue;
            }
        };
        if decision == Decision::Approved {
            for (account, balance, amount) in changes {
                if let Some(state) = accounts.get_mut(&account) {
                    state.balance = balance;
                }
                writes.entries.push(Entry { payment_id: transfer.id.clone(), account, amount });
            }
            for (key, total) in totals {
                match key {
                    Sum::Held(account) => writes.balances.insert(account, total),
                    Sum::Credit(account, shard) => writes.credits.insert((account, shard), total),
                };
            }
        }
        let reply = replies.into_reply(decision);
        existing.insert(
            transfer.id.to_string(),
            StoredReply { request_hash: transfer.request_hash.clone(), reply: reply.clone() },
        );
        outcomes.push(Ok(Recorded::New { decision, reply: reply.clone() }));
        writes.payments.push(NewPayment { transfer, decision, reply });
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

/// A running sum of [`Writes`]: a held account's net change, or a credit sub-balance.
enum Sum {
    Held(AccountId),
    Credit(AccountId, i64),
}

impl Writes {
    /// The sums an approval of `transfer` would leave, each checked: (sum, its new total).
    fn totals_after(
        &self,
        transfer: &Transfer,
        changes: &[Change],
        held: &BTreeSet<AccountId>,
    ) -> Result<Vec<(Sum, MinorUnits)>, LedgerError> {
        let mut totals = Vec::with_capacity(changes.len());
        for (account, _, amount) in changes {
            let (key, before) = if held.contains(account) {
                (Sum::Held(account.clone()), self.balances.get(account))
            } else if *amount > MinorUnits::ZERO {
                let shard = transfer.partition.map_or(0, i64::from);
                (Sum::Credit(account.clone(), shard), self.credits.get(&(account.clone(), shard)))
            } else {
                return Err(LedgerError::Invalid(format!("{}: debits `{account}`, not its payer", transfer.id)));
            };
            totals.push((key, checked(account, before.copied().unwrap_or(MinorUnits::ZERO).checked_add(*amount))?));
        }
        Ok(totals)
    }
}

/// A posting as it would change its account: (account, balance after, amount posted).
type Change = (AccountId, MinorUnits, MinorUnits);

/// The ledger's decision on one new transfer with the changes an approval makes, or why it
/// cannot be recorded at all.
fn decide_one(
    transfer: &Transfer,
    declined_by_plugin: bool,
    accounts: &HashMap<AccountId, Account>,
) -> Result<(Decision, Vec<Change>), LedgerError> {
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
    for account in [&transfer.payer, &transfer.payee] {
        let Some(state) = accounts.get(account) else {
            return Err(LedgerError::UnknownAccount(account.to_string()));
        };
        if state.currency != transfer.currency {
            return Err(LedgerError::CurrencyMismatch { account: account.to_string(), holds: state.currency });
        }
    }
    let fee_account = fee_account(transfer.currency);
    let postings = postings(transfer, &fee_account)?;
    // Each posting is computed from the balance before the transfer, so each account may
    // appear once.
    let twice = postings.iter().enumerate().find_map(|(index, posting)| {
        postings[..index].iter().any(|earlier| earlier.account == posting.account).then_some(posting.account)
    });
    if let Some(twice) = twice {
        return Err(LedgerError::Invalid(format!("{}: posts to `{twice}` twice", transfer.id)));
    }
    if declined_by_plugin {
        return Ok((Decision::PluginDeclined, Vec::new()));
    }
    let mut changes = Vec::with_capacity(postings.len());
    for posting in postings {
        let state =
            accounts.get(posting.account).ok_or_else(|| LedgerError::UnknownAccount(posting.account.to_string()))?;
        if state.currency != transfer.currency {
            // The fee account is per currency, so this is not a caller's mistake.
            return Err(LedgerError::Corrupt(format!(
                "{} holds {}, not {}",
                state.id, state.currency, transfer.currency
            )));
        }
        let balance = checked(posting.account, state.balance.checked_add(posting.amount))?;
        if state.floor.is_some_and(|floor| balance < floor) {
            return Ok((Decision::InsufficientFunds, Vec::new()));
        }
        changes.push((posting.account.clone(), balance, posting.amount));
    }
    Ok((Decision::Approved, changes))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use wasmpay_protocol::money::{Currency, FeeBearer};

    use super::*;
    use crate::account::AccountKind;
    use crate::transfer::TransferKind;

    const CUSTOMERS: usize = 4;

    fn eur() -> Currency {
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

    fn job(step: Step) -> (Transfer, Replies) {
        (transfer(step), replies(step.5))
    }

    fn account(id: AccountId, balance: i64, floor: Option<i64>, kind: AccountKind) -> (AccountId, Account) {
        let account = Account {
            id: id.clone(),
            currency: eur(),
            balance: MinorUnits(balance),
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
        writes.balances.get(account).map_or(0, |delta| delta.0) + credits
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
            let (outcomes, writes) = decide(jobs, HashMap::new(), accounts.clone(), &held, &Fences::new());

            let (expected, balances, collected) = reference(&steps, &start);
            let decided: Vec<&str> = outcomes
                .iter()
                .map(|outcome| match outcome {
                    Ok(Recorded::Existing(_)) => "replayed",
                    Ok(Recorded::New { decision: Decision::Approved, .. }) => "approved",
                    Ok(Recorded::New { decision: Decision::InsufficientFunds, .. }) => "insufficient_funds",
                    Ok(Recorded::New { decision: Decision::PluginDeclined, .. }) => "plugin_declined",
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
        let (outcomes, writes) = decide(jobs, HashMap::new(), accounts, &held, &Fences::new());
        assert!(matches!(outcomes[1], Err(LedgerError::Overflow(_))), "{outcomes:?}");
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
        assert_eq!(writes.balances.get(&customer(0)), Some(&MinorUnits(-10 - 20)));
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
            decide(vec![(greedy, replies(false))], HashMap::new(), accounts, &[customer(0)].into(), &Fences::new());
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
        let (outcomes, writes) =
            decide(vec![(looping, replies(false))], HashMap::new(), accounts, &held, &Fences::new());
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
        let (outcomes, writes) = decide(jobs, HashMap::new(), accounts, &held, &fences);
        assert!(matches!(outcomes[0], Err(LedgerError::Fenced(ref lost)) if lost == &[3]), "{outcomes:?}");
        assert!(outcomes[1].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
        assert_eq!(writes.fences, [(3, 7), (4, 2)].into());
        assert_eq!(writes.payments.len(), 2);
    }
}
