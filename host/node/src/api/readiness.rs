//! Readiness (`GET /readyz`): whether a payment sent now is served and can be written. It
//! looks at what a payment touches, not at a neighbour of it: the NATS connection (confirmed by
//! a round trip, which also confirms every subscription sent before it), the subscriptions of
//! the partitions this node should serve (each confirmed by the server when it was opened), the
//! ledger's own tables and its latest batches (`Ledger::writable`), and the payment methods.
//!
//! The decision is a pure function of what was observed ([`problems`]), so each rule is
//! tested without a server; gathering the observations is bounded ([`READINESS_FLUSH_TIMEOUT`],
//! `wasmpay_ledger::PROBE_TIMEOUT`), so a probe answers even when NATS or the database does not.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use crate::cluster::ClusterView;

/// How long the readiness check waits for the NATS server to answer a round trip.
pub const READINESS_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// What a readiness check observed.
#[derive(Debug)]
pub struct Observed<'a> {
    /// The NATS server answered a round trip just now.
    pub nats: Result<(), String>,
    /// Whether the ledger can write now (`Ledger::writable`).
    pub ledger: Result<(), String>,
    /// At least one payment method is served.
    pub methods_served: bool,
    /// The cluster as this node sees it.
    pub cluster: &'a ClusterView,
    /// The partitions whose subscription the NATS server confirmed on this node.
    pub subscribed: &'a BTreeSet<u32>,
}

/// One reason a node is not ready, with a stable code first.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    /// Stable, for scripts: `nats_unreachable`, `ledger_unwritable`, `no_method`,
    /// `not_joined`, `ledger_refused`, `partitions_unsubscribed`, `partitions_held_elsewhere`,
    /// `serves_nothing`.
    pub code: &'static str,
    /// For a person.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.code, self.message)
    }
}

fn problem(code: &'static str, message: String) -> Problem {
    Problem { code, message }
}

/// Why a payment sent now might not be served or written; empty when the node is ready.
pub fn problems(observed: &Observed<'_>) -> Vec<Problem> {
    let mut found = Vec::new();
    if let Err(error) = &observed.nats {
        found.push(problem("nats_unreachable", format!("NATS is not connected: {error}")));
    }
    if let Err(error) = &observed.ledger {
        found.push(problem("ledger_unwritable", format!("the ledger cannot write: {error}")));
    }
    if !observed.methods_served {
        found.push(problem("no_method", "no payment method is served".to_owned()));
    }
    found.extend(partitions(observed.cluster, observed.subscribed));
    found
}

/// The bus's part: every partition assigned to this node that it holds, or that nobody else
/// holds, must be subscribed (confirmed), else a payment for it finds no responder. A
/// partition this node is handing over (assigned elsewhere now) is the next owner's concern.
fn partitions(cluster: &ClusterView, subscribed: &BTreeSet<u32>) -> Option<Problem> {
    if cluster.partitions == 0 {
        return Some(problem("not_joined", "it has not joined the cluster yet: no partition is open".to_owned()));
    }
    if let Some(refused) = &cluster.refused {
        return Some(problem("ledger_refused", format!("it may serve nothing: {refused}")));
    }
    let me = cluster.node.as_str();
    let assigned: Vec<_> = cluster.leases.iter().filter(|lease| lease.assigned.as_deref() == Some(me)).collect();
    let ours = |partition: u32, owner: Option<&str>| {
        cluster.owned.contains(&partition) || owner.is_none_or(|owner| owner == me)
    };
    let unsubscribed: Vec<u32> = assigned
        .iter()
        .filter(|lease| ours(lease.partition, lease.owner.as_deref()))
        .map(|lease| lease.partition)
        .filter(|partition| !subscribed.contains(partition))
        .collect();
    if !unsubscribed.is_empty() {
        let message = format!(
            "{} of its partitions have no subscription the NATS server confirmed yet ({}): a payment for them \
             finds no responder",
            unsubscribed.len(),
            listed(&unsubscribed)
        );
        return Some(problem("partitions_unsubscribed", message));
    }
    if !subscribed.is_empty() {
        return None;
    }
    if assigned.is_empty() {
        let others = cluster.members.iter().filter(|member| member.node != me).count();
        let message = format!(
            "it serves no partition: none of the {} partitions is assigned to it (the {others} other members \
             have them all)",
            cluster.partitions
        );
        return Some(problem("serves_nothing", message));
    }
    let mut holders: BTreeMap<&str, usize> = BTreeMap::new();
    for lease in &assigned {
        *holders.entry(lease.owner.as_deref().unwrap_or("nobody")).or_default() += 1;
    }
    let holders: Vec<String> = holders.iter().map(|(holder, count)| format!("{holder} {count}")).collect();
    let message = format!(
        "it holds none of the {} partitions assigned to it; their leases are held by {} (a handover in progress, \
         or a stopped node's leases not yet expired: see /v1/cluster)",
        assigned.len(),
        holders.join(", ")
    );
    Some(problem("partitions_held_elsewhere", message))
}

/// Up to 8 partition numbers, and how many more.
fn listed(partitions: &[u32]) -> String {
    const SHOWN: usize = 8;
    let shown: Vec<String> = partitions.iter().take(SHOWN).map(u32::to_string).collect();
    match partitions.len().saturating_sub(SHOWN) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{LeaseView, MemberView};

    fn view(node: &str, leases: &[(u32, &str, Option<&str>)], owned: &[u32]) -> ClusterView {
        let member = |node: &str| MemberView { node: node.to_owned(), ledger: "l".to_owned(), http: String::new() };
        let mut members: Vec<MemberView> = leases.iter().map(|(_, assigned, _)| member(assigned)).collect();
        members.push(member(node));
        members.sort_by(|a, b| a.node.cmp(&b.node));
        members.dedup_by(|a, b| a.node == b.node);
        ClusterView {
            node: node.to_owned(),
            ledger: "l".to_owned(),
            partitions: u32::try_from(leases.len()).unwrap_or(u32::MAX),
            lease_ttl_ms: 10_000,
            members,
            leases: leases
                .iter()
                .map(|(partition, assigned, owner)| LeaseView {
                    partition: *partition,
                    assigned: Some((*assigned).to_owned()),
                    owner: owner.map(str::to_owned),
                    token: None,
                    lag: None,
                })
                .collect(),
            owned: owned.to_vec(),
            refused: None,
        }
    }

    fn codes(cluster: &ClusterView, subscribed: &[u32]) -> Vec<&'static str> {
        let subscribed = subscribed.iter().copied().collect();
        let observed =
            Observed { nats: Ok(()), ledger: Ok(()), methods_served: true, cluster, subscribed: &subscribed };
        problems(&observed).into_iter().map(|problem| problem.code).collect()
    }

    #[test]
    fn ready_only_once_every_partition_of_its_own_is_subscribed() {
        let none: &[u32] = &[];
        // Before the first round: the view is empty, nothing is open.
        assert_eq!(codes(&ClusterView::default(), none), ["not_joined"]);
        // Assigned and free, or held: not subscribed yet, so a payment finds no responder.
        // A partition being handed over (assigned to another now) does not count.
        let joining = view("a", &[(0, "a", None), (1, "a", Some("a"))], &[1]);
        assert_eq!(codes(&joining, none), ["partitions_unsubscribed"]);
        assert_eq!(codes(&joining, &[1]), ["partitions_unsubscribed"]);
        assert!(codes(&view("a", &[(0, "a", Some("a")), (1, "a", Some("a"))], &[0, 1]), &[0, 1]).is_empty());
        assert!(codes(&view("a", &[(0, "a", Some("a")), (1, "b", Some("a"))], &[0, 1]), &[0]).is_empty());
    }

    #[test]
    fn a_partition_still_held_by_its_old_owner_is_served_there() {
        // One of two moves over: the other is served by its old owner meanwhile.
        let moving = view("a", &[(0, "a", Some("a")), (1, "a", Some("b"))], &[0]);
        assert!(codes(&moving, &[0]).is_empty());
        // None of them yet: it says who holds them.
        let waiting = view("a", &[(0, "a", Some("b")), (1, "a", Some("c"))], &[]);
        assert_eq!(codes(&waiting, &[]), ["partitions_held_elsewhere"]);
        let subscribed = BTreeSet::new();
        let observed =
            Observed { nats: Ok(()), ledger: Ok(()), methods_served: true, cluster: &waiting, subscribed: &subscribed };
        assert!(problems(&observed)[0].message.contains("held by b 1, c 1"), "{:?}", problems(&observed));
    }

    #[test]
    fn a_node_with_nothing_assigned_says_so() {
        let idle = view("c", &[(0, "a", Some("a")), (1, "b", Some("b"))], &[]);
        assert_eq!(codes(&idle, &[]), ["serves_nothing"]);
        let refused = ClusterView { refused: Some("bound to ledger x".to_owned()), ..idle };
        assert_eq!(codes(&refused, &[]), ["ledger_refused"]);
    }

    #[test]
    fn every_problem_is_listed_with_its_code() {
        let cluster = view("a", &[(0, "a", Some("a"))], &[0]);
        let subscribed = [0].into_iter().collect();
        let observed = Observed {
            nats: Err("no PONG within 1s".to_owned()),
            ledger: Err("the last ledger batch failed".to_owned()),
            methods_served: false,
            cluster: &cluster,
            subscribed: &subscribed,
        };
        let found: Vec<String> = problems(&observed).iter().map(ToString::to_string).collect();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("nats_unreachable: NATS is not connected"), "{found:?}");
        assert!(found[1].starts_with("ledger_unwritable: the ledger cannot write"), "{found:?}");
        assert!(found[2].starts_with("no_method"), "{found:?}");
    }
}
