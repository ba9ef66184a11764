//! The decision of one round of ownership, as a pure function: given who the assignment gives
//! each partition to, which leases this node holds and who holds the others, what to hand
//! over, what to take, and what to wait for.
//!
//! The driver (`ownership`) gathers the inputs from its tables and carries the plan
//! out; keeping the decision here lets it be tested without NATS, a ledger or a clock, and the
//! properties below are the cluster's safety and stability claims: no partition is planned for
//! two owners, every assigned partition is planned by its assignee, and a member that joins
//! moves only the partitions it wins.

use std::collections::{BTreeMap, BTreeSet};

use crate::assignment;

/// Who holds a partition's lease, as this node's lease table says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// A node on this node's ledger and partitioning (possibly this node itself, whose lease
    /// it no longer counts as held: lost, and not yet expired).
    Member(String),
    /// A node on another ledger or partitioning, or a lease that does not parse: this node
    /// can never serve the partition while it stands.
    Foreign(String),
}

/// Every partition's member under rendezvous hashing over `members`; `None` without members.
pub fn assign(partitions: u32, members: &[&str]) -> BTreeMap<u32, Option<String>> {
    (0..partitions).map(|partition| (partition, assignment::owner(partition, members).map(str::to_owned))).collect()
}

/// What one round does. Every partition the assignment gives this node is in exactly one of
/// `keep`, `take`, `wait` and `foreign`; `hand_over` is what it holds and is not given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Held, and given to another member: close, answer what it took, release the lease.
    pub hand_over: Vec<u32>,
    /// Held, and given to this node: nothing to do (renewals keep it).
    pub keep: Vec<u32>,
    /// Given to this node and nobody holds it: create the lease, claim, open.
    pub take: Vec<u32>,
    /// Given to this node and held by another member: it hands over at its next round, or its
    /// lease expires.
    pub wait: Vec<u32>,
    /// Given to this node and held by a node of another ledger or partitioning, by holder.
    pub foreign: BTreeMap<u32, String>,
}

/// The plan of `me` for one round: `assigned` is every partition's member, `held` the leases
/// `me` holds, `holders` every other live lease.
pub fn plan(
    me: &str,
    assigned: &BTreeMap<u32, Option<String>>,
    held: &BTreeSet<u32>,
    holders: &BTreeMap<u32, Holder>,
) -> Plan {
    let mine: BTreeSet<u32> =
        assigned.iter().filter(|(_, member)| member.as_deref() == Some(me)).map(|(partition, _)| *partition).collect();
    let mut plan = Plan { hand_over: held.difference(&mine).copied().collect(), ..Plan::default() };
    for partition in mine {
        if held.contains(&partition) {
            plan.keep.push(partition);
            continue;
        }
        match holders.get(&partition) {
            None => plan.take.push(partition),
            Some(Holder::Member(_)) => plan.wait.push(partition),
            Some(Holder::Foreign(holder)) => {
                plan.foreign.insert(partition, holder.clone());
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POOL: [&str; 6] = ["node-a", "node-b", "node-c", "node-d", "node-e", "node-f"];

    fn set(partitions: &[u32]) -> BTreeSet<u32> {
        partitions.iter().copied().collect()
    }

    #[test]
    fn a_lone_node_takes_every_free_partition_and_waits_for_held_ones() {
        let assigned = assign(4, &["a"]);
        let holders = BTreeMap::from([(1, Holder::Member("b".into())), (2, Holder::Foreign("x".into()))]);
        let plan = plan("a", &assigned, &set(&[3]), &holders);
        assert_eq!(
            plan,
            Plan {
                hand_over: vec![],
                keep: vec![3],
                take: vec![0],
                wait: vec![1],
                foreign: BTreeMap::from([(2, "x".to_owned())]),
            }
        );
    }

    #[test]
    fn a_node_hands_over_what_it_holds_and_is_not_given() {
        let assigned = assign(16, &["a", "b"]);
        let everything: BTreeSet<u32> = (0..16).collect();
        let plan = plan("a", &assigned, &everything, &BTreeMap::new());
        let of_b: Vec<u32> = assigned.iter().filter(|(_, m)| m.as_deref() == Some("b")).map(|(p, _)| *p).collect();
        assert!(!of_b.is_empty());
        assert_eq!(plan.hand_over, of_b);
        assert!(plan.take.is_empty() && plan.wait.is_empty());
    }

    /// A cluster's leases as the members see them: each partition held by one live member, by
    /// a member that died (its lease not yet expired), by a foreign node, or by nobody.
    fn world() -> impl Strategy<Value = (u32, Vec<&'static str>, BTreeMap<u32, Holder>)> {
        (1_u32..48, 1_usize..=POOL.len()).prop_flat_map(|(partitions, count)| {
            let members: Vec<&'static str> = POOL[..count].to_vec();
            // 0..count: that member; count: a foreign node; count + 1: a dead member; above: nobody.
            let holders = proptest::collection::vec(0..count + 4, partitions as usize);
            (Just(partitions), Just(members), holders).prop_map(|(partitions, members, picks)| {
                let holders = picks
                    .into_iter()
                    .zip(0..)
                    .filter_map(|(pick, partition)| match pick {
                        pick if pick < members.len() => Some((partition, Holder::Member(members[pick].to_owned()))),
                        pick if pick == members.len() => Some((partition, Holder::Foreign("elsewhere".to_owned()))),
                        pick if pick == members.len() + 1 => Some((partition, Holder::Member("node-gone".to_owned()))),
                        _ => None,
                    })
                    .collect();
                (partitions, members, holders)
            })
        })
    }

    /// What `member` holds, and the leases of everyone else, in `holders`.
    fn view_of(member: &str, holders: &BTreeMap<u32, Holder>) -> (BTreeSet<u32>, BTreeMap<u32, Holder>) {
        let ours = Holder::Member(member.to_owned());
        let held = holders.iter().filter(|(_, holder)| **holder == ours).map(|(p, _)| *p).collect();
        let others = holders.iter().filter(|(_, holder)| **holder != ours).map(|(p, h)| (*p, h.clone())).collect();
        (held, others)
    }

    proptest! {
        /// Each member's plan covers what it is given exactly once, hands over exactly what
        /// it holds and is not given, and takes only what nobody holds.
        #[test]
        fn a_plan_partitions_what_the_member_is_given((partitions, members, holders) in world()) {
            let assigned = assign(partitions, &members);
            for member in &members {
                let (held, others) = view_of(member, &holders);
                let plan = plan(member, &assigned, &held, &others);
                let given: BTreeSet<u32> =
                    assigned.iter().filter(|(_, m)| m.as_deref() == Some(*member)).map(|(p, _)| *p).collect();
                let mut covered: Vec<u32> = plan.keep.iter().chain(&plan.take).chain(&plan.wait).copied().collect();
                covered.extend(plan.foreign.keys());
                covered.sort_unstable();
                prop_assert_eq!(covered, given.iter().copied().collect::<Vec<_>>());
                prop_assert_eq!(set(&plan.hand_over), held.difference(&given).copied().collect::<BTreeSet<_>>());
                prop_assert!(plan.take.iter().all(|p| !holders.contains_key(p)));
                prop_assert!(plan.keep.iter().all(|p| held.contains(p)));
            }
        }

        /// With every member planning on the same tables, no partition has two owners after
        /// the round (what a member holds and does not hand over, or takes), none is taken that
        /// anyone holds, and every assigned partition is planned: taken or kept by its assignee,
        /// handed over by the live member holding it (the assignee waits for it), waited for
        /// while a dead member's lease expires, or reported as held by a foreign node.
        #[test]
        fn every_partition_is_planned_for_one_owner((partitions, members, holders) in world()) {
            let assigned = assign(partitions, &members);
            let mut plans: BTreeMap<&str, Plan> = BTreeMap::new();
            let mut owners: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
            for member in &members {
                let (held, others) = view_of(member, &holders);
                let plan = plan(member, &assigned, &held, &others);
                let kept = held.iter().filter(|p| !plan.hand_over.contains(p));
                for partition in kept.chain(&plan.take) {
                    owners.entry(*partition).or_default().push(member);
                }
                plans.insert(member, plan);
            }
            for (partition, owners) in &owners {
                prop_assert_eq!(owners.len(), 1, "partition {} planned for {:?}", partition, owners);
            }
            let handed_over: BTreeSet<u32> = plans.values().flat_map(|plan| plan.hand_over.clone()).collect();
            for (partition, assignee) in &assigned {
                let Some(assignee) = assignee.as_deref() else { continue };
                let plan = &plans[assignee];
                match holders.get(partition) {
                    None => prop_assert!(plan.take.contains(partition)),
                    Some(Holder::Member(holder)) if holder == assignee => prop_assert!(plan.keep.contains(partition)),
                    Some(Holder::Member(holder)) => {
                        prop_assert!(plan.wait.contains(partition) && !plan.take.contains(partition));
                        let live = members.contains(&holder.as_str());
                        prop_assert_eq!(handed_over.contains(partition), live, "partition {} held by {}", partition, holder);
                    }
                    Some(Holder::Foreign(_)) => prop_assert!(plan.foreign.contains_key(partition)),
                }
            }
        }

        /// In a settled cluster (each member holds exactly what it is given), a member that
        /// joins makes the others hand over exactly the partitions it wins, and then takes
        /// exactly those; nothing else moves.
        #[test]
        fn a_joining_member_moves_only_what_it_wins(partitions in 1_u32..256, count in 1_usize..POOL.len()) {
            let before: Vec<&str> = POOL[..count].to_vec();
            let after: Vec<&str> = POOL[..=count].to_vec();
            let joined = POOL[count];
            let settled = assign(partitions, &before);
            let holders: BTreeMap<u32, Holder> = settled
                .iter()
                .filter_map(|(p, m)| Some((*p, Holder::Member(m.clone()?))))
                .collect();
            let assigned = assign(partitions, &after);
            let won: BTreeSet<u32> =
                assigned.iter().filter(|(_, m)| m.as_deref() == Some(joined)).map(|(p, _)| *p).collect();
            let mut handed_over = BTreeSet::new();
            for member in &before {
                let (held, others) = view_of(member, &holders);
                let plan = plan(member, &assigned, &held, &others);
                prop_assert!(plan.take.is_empty() && plan.wait.is_empty());
                handed_over.extend(plan.hand_over);
            }
            prop_assert_eq!(&handed_over, &won);
            let newcomer = plan(joined, &assigned, &BTreeSet::new(), &holders);
            prop_assert_eq!(set(&newcomer.wait), won.clone());
            prop_assert!(newcomer.take.is_empty());
            // Once the others released them, it takes them, and only them.
            let released: BTreeMap<u32, Holder> =
                holders.into_iter().filter(|(p, _)| !handed_over.contains(p)).collect();
            let newcomer = plan(joined, &assigned, &BTreeSet::new(), &released);
            prop_assert_eq!(set(&newcomer.take), won);
        }
    }
}
