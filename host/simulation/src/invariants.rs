//! The invariants, checked from what the ledgers did and what clients were told, never from
//! what the nodes believe (a broken node must not be able to hide its own bug):
//!
//! 1. **Fencing**: per ledger and partition, a claim hands out a token above every earlier
//!    one, accepted commits carry non-decreasing tokens, and none carries a token below the
//!    partition's current one.
//! 2. **Once**: a payment is applied in at most one ledger, once.
//! 3. **Nothing lost, nothing moved**: every payment is applied in the ledger of the
//!    deployment's first commit (its home); every payment acknowledged to a client is there;
//!    the home ledger's `deployment_binding` names itself.
//! 4. **Liveness**: checked by the world at the end of the quiet period.

use std::collections::BTreeMap;

use crate::ledger::{Commit, Ledger, LedgerId, LedgerOp, LedgerReply, PaymentId};

/// A broken invariant: its number and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    pub invariant: u8,
    pub message: String,
}

fn broken(invariant: u8, message: String) -> Result<(), Broken> {
    Err(Broken { invariant, message })
}

#[derive(Clone, Debug, Default)]
pub struct Checker {
    /// The partition's current token per ledger: the last one claimed.
    claimed: BTreeMap<(LedgerId, u32), u64>,
    /// The token of the last accepted commit per ledger and partition.
    committed: BTreeMap<(LedgerId, u32), u64>,
    /// Where each payment was applied.
    applied: BTreeMap<PaymentId, LedgerId>,
    /// The ledger of the deployment's first commit.
    pub home: Option<LedgerId>,
}

impl Checker {
    /// A ledger carried out `op` and answered `reply`.
    pub fn ledger(&mut self, ledger: LedgerId, op: &LedgerOp, reply: &LedgerReply) -> Result<(), Broken> {
        match (op, reply) {
            (LedgerOp::Claim(_), LedgerReply::Claimed(tokens)) => {
                for (partition, token) in tokens {
                    let current = self.claimed.entry((ledger, *partition)).or_insert(0);
                    if *token <= *current {
                        return broken(
                            1,
                            format!(
                                "ledger {ledger:?} handed out token {token} for partition {partition} after {current}"
                            ),
                        );
                    }
                    *current = *token;
                }
                Ok(())
            }
            (LedgerOp::Commit { payment, partition, token }, LedgerReply::Committed(Commit::Applied)) => {
                let current = self.claimed.get(&(ledger, *partition)).copied().unwrap_or(0);
                if *token < current {
                    return broken(
                        1,
                        format!(
                            "ledger {ledger:?} accepted payment {payment} on partition {partition} under token {token}, \
                             below the partition's current token {current}: two owners committed"
                        ),
                    );
                }
                let last = self.committed.entry((ledger, *partition)).or_insert(0);
                if *token < *last {
                    return broken(
                        1,
                        format!("ledger {ledger:?} partition {partition}: token {token} committed after token {last}"),
                    );
                }
                *last = *token;
                if let Some(earlier) = self.applied.insert(*payment, ledger) {
                    return broken(
                        2,
                        format!("payment {payment} applied in ledger {ledger:?}, and before in {earlier:?}"),
                    );
                }
                match self.home {
                    None => self.home = Some(ledger),
                    Some(home) if home != ledger => {
                        return broken(
                            3,
                            format!(
                                "payment {payment} applied in ledger {ledger:?}, but the deployment's payments are in \
                                 ledger {home:?}: the deployment moved (lost binding)"
                            ),
                        );
                    }
                    Some(_) => {}
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A client was told `payment` is done.
    pub fn acknowledged(&self, payment: PaymentId) -> Result<(), Broken> {
        match (self.applied.get(&payment), self.home) {
            (Some(ledger), Some(home)) if *ledger == home => Ok(()),
            (found, home) => broken(
                3,
                format!("payment {payment} acknowledged, but it is in ledger {found:?}, the deployment's is {home:?}"),
            ),
        }
    }

    /// At the end: the home ledger records that the deployment is bound to it (under a rule
    /// that records the binding in the ledger).
    pub fn finish(&self, ledgers: &[Ledger], recorded: bool) -> Result<(), Broken> {
        let Some(home) = self.home.filter(|_| recorded) else { return Ok(()) };
        let recorded = ledgers.iter().find(|ledger| ledger.id == home).and_then(|ledger| ledger.binding);
        if recorded != Some(home) {
            return broken(
                3,
                format!("the deployment's payments are in ledger {home:?}, whose record names {recorded:?}"),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_commit_or_a_second_ledger_is_caught() {
        let mut checker = Checker::default();
        let claim = |token| LedgerReply::Claimed(BTreeMap::from([(0, token)]));
        let commit = |payment, token| LedgerOp::Commit { payment, partition: 0, token };
        let applied = LedgerReply::Committed(Commit::Applied);
        checker.ledger(LedgerId::A, &LedgerOp::Claim(vec![0]), &claim(1)).unwrap();
        checker.ledger(LedgerId::A, &commit(1, 1), &applied).unwrap();
        checker.acknowledged(1).unwrap();
        checker.ledger(LedgerId::A, &LedgerOp::Claim(vec![0]), &claim(2)).unwrap();
        assert_eq!(checker.ledger(LedgerId::A, &commit(2, 1), &applied).unwrap_err().invariant, 1);
        assert_eq!(checker.ledger(LedgerId::A, &commit(1, 2), &applied).unwrap_err().invariant, 2);
        assert_eq!(checker.ledger(LedgerId::B, &commit(3, 7), &applied).unwrap_err().invariant, 3);
        assert_eq!(checker.acknowledged(9).unwrap_err().invariant, 3);
    }
}
