//! The ledgers' side of ownership, mirroring `host/ledger/src/fencing.rs` and the fence a
//! batch checks: per-partition fencing tokens handed out by claims, commits refused under an
//! older token, payments idempotent by id, and the deployment's `deployment_binding` record
//! (the first record stands).

use std::collections::BTreeMap;

/// One of the run's two ledgers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LedgerId {
    A,
    B,
}

impl LedgerId {
    /// The ledger's identity, as nodes compare it (`Facts::ledger`).
    pub fn name(self) -> &'static str {
        match self {
            LedgerId::A => "A",
            LedgerId::B => "B",
        }
    }

    /// The ledger named `name`, if it is one of the run's.
    pub fn named(name: &str) -> Option<LedgerId> {
        [LedgerId::A, LedgerId::B].into_iter().find(|ledger| ledger.name() == name)
    }

    pub fn index(self) -> usize {
        match self {
            LedgerId::A => 0,
            LedgerId::B => 1,
        }
    }
}

/// A payment's id, unique in a run.
pub type PaymentId = u64;

/// A request to a ledger (the `Fences` port, and a batch's commit of one payment).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LedgerOp {
    /// `Ledger::deployment_binding`.
    Binding,
    /// `Ledger::record_deployment_binding`.
    Record(LedgerId),
    /// `Ledger::claim`.
    Claim(Vec<u32>),
    /// `Ledger::fence_tokens` (`Fences::tokens`, from c501df9): every partition's newest token.
    Tokens,
    /// A payment posted under its partition's token.
    Commit { payment: PaymentId, partition: u32, token: u64 },
}

/// How a commit ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Commit {
    Applied,
    /// Applied before: answered again, not applied again.
    Duplicate,
    /// Refused: its token is older than the partition's (`LedgerError::Fenced`).
    Fenced,
}

/// A ledger's answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LedgerReply {
    Binding(Option<LedgerId>),
    Recorded(LedgerId),
    Claimed(BTreeMap<u32, u64>),
    Tokens(BTreeMap<u32, u64>),
    Committed(Commit),
}

/// One ledger's state.
#[derive(Clone, Debug)]
pub struct Ledger {
    pub id: LedgerId,
    /// `partition_fences`: the last token handed out per partition.
    pub fences: BTreeMap<u32, u64>,
    /// The payments applied, with the partition and token they were posted under.
    pub applied: BTreeMap<PaymentId, (u32, u64)>,
    /// `deployment_binding` for the run's one deployment.
    pub binding: Option<LedgerId>,
    /// Whether commits are checked against the fence: false only to show the simulation
    /// catches a ledger that does not fence.
    pub fencing: bool,
}

impl Ledger {
    pub fn new(id: LedgerId, fencing: bool) -> Ledger {
        Ledger { id, fences: BTreeMap::new(), applied: BTreeMap::new(), binding: None, fencing }
    }

    pub fn apply(&mut self, op: &LedgerOp) -> LedgerReply {
        match op {
            LedgerOp::Binding => LedgerReply::Binding(self.binding),
            LedgerOp::Record(ledger) => LedgerReply::Recorded(*self.binding.get_or_insert(*ledger)),
            LedgerOp::Claim(partitions) => LedgerReply::Claimed(
                partitions
                    .iter()
                    .map(|partition| {
                        let token = self.fences.entry(*partition).or_insert(0);
                        *token += 1;
                        (*partition, *token)
                    })
                    .collect(),
            ),
            LedgerOp::Tokens => LedgerReply::Tokens(self.fences.clone()),
            LedgerOp::Commit { payment, partition, token } => {
                let current = self.fences.get(partition).copied().unwrap_or(0);
                if self.fencing && *token < current {
                    return LedgerReply::Committed(Commit::Fenced);
                }
                if self.applied.contains_key(payment) {
                    return LedgerReply::Committed(Commit::Duplicate);
                }
                self.applied.insert(*payment, (*partition, *token));
                LedgerReply::Committed(Commit::Applied)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_fence_older_tokens_and_payments_apply_once() {
        let mut ledger = Ledger::new(LedgerId::A, true);
        let claim = |ledger: &mut Ledger| match ledger.apply(&LedgerOp::Claim(vec![3])) {
            LedgerReply::Claimed(tokens) => tokens[&3],
            other => panic!("{other:?}"),
        };
        assert_eq!(claim(&mut ledger), 1);
        assert_eq!(claim(&mut ledger), 2);
        assert_eq!(ledger.apply(&LedgerOp::Tokens), LedgerReply::Tokens(BTreeMap::from([(3, 2)])));
        let commit = |payment, token| LedgerOp::Commit { payment, partition: 3, token };
        assert_eq!(ledger.apply(&commit(1, 1)), LedgerReply::Committed(Commit::Fenced));
        assert_eq!(ledger.apply(&commit(1, 2)), LedgerReply::Committed(Commit::Applied));
        assert_eq!(ledger.apply(&commit(1, 2)), LedgerReply::Committed(Commit::Duplicate));
        assert_eq!(ledger.apply(&LedgerOp::Record(LedgerId::B)), LedgerReply::Recorded(LedgerId::B));
        assert_eq!(ledger.apply(&LedgerOp::Record(LedgerId::A)), LedgerReply::Recorded(LedgerId::B));
    }
}
