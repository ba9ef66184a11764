//! The binding of a NATS deployment's payment subjects to one ledger.
//!
//! Leases keep two ledgers from serving a partition at the same time, but not one after the
//! other: when the last node of ledger A dies, its leases expire, and a node of ledger B could
//! take the partitions, so a payer's next payment would be posted in a ledger that has never
//! seen its account or its earlier payments. So a deployment is bound to one ledger, in two
//! places:
//!
//! - the **ledger's record** (`deployment_binding`, through [`Fences`]), which is the truth:
//!   a ledger whose nodes served the deployment records itself, a ledger whose nodes were
//!   refused records the ledger they were refused for; the first record stands, and only an
//!   operator's `wasmpay cluster adopt` changes it;
//! - **NATS's binding** (`ledger` in the bucket `wasmpay_cluster`, no TTL), a cache of it that
//!   every node reads, and that the bound ledger's nodes re-create if it is lost.
//!
//! [`decide`] is the rule, a pure function of what both say; the rounds carry its steps out.
//! Losing NATS's state therefore never moves a deployment: a ledger that recorded another
//! ledger never binds, and one with no record binds only after a grace period in which no live
//! node of another ledger said it serves the deployment ([`crate::records::Member::serves`]).
//!
//! [`Fences`]: crate::ports::Fences

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv::{CreateErrorKind, Store};
use futures::TryStreamExt;

use crate::error::ClusterError;
use crate::jetstream::{self as js, Bucket, Cause, JetStreamError};
use crate::records::{BINDING, BINDING_KEY, Binding, MEMBERS, Member, encode};
use crate::settings::Identity;

/// How long listing the members may take: a listing is a consumer created and read to its
/// end, several round trips, so it is bounded more loosely than one request (it runs for an
/// operator's command only).
const LISTING_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a listing that timed out is started again (so at most 30 s in all).
const LISTING_ATTEMPTS: u32 = 3;

/// What a node knows about its deployment's binding in one round: [`decide`]'s input.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// This node's ledger.
    pub ledger: &'a str,
    /// This node's partition count.
    pub partitions: u32,
    /// The ledger the deployment is bound to as this node's ledger recorded it.
    pub recorded: Option<&'a str>,
    /// NATS's binding: the ledger and partition count, if the key is there.
    pub nats: Option<(&'a str, u32)>,
    /// A live member of another ledger whose ledger records that it serves this deployment:
    /// its node and ledger.
    pub claimant: Option<(&'a str, &'a str)>,
    /// How long this node has seen neither a record nor a binding.
    pub unbound_for: Duration,
    /// How long a node with no record waits, listening to the members, before it binds: a
    /// member record's TTL and a heartbeat, so every live node has announced itself since.
    pub grace: Duration,
}

/// What a node does about the binding, as [`decide`] says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Bound to this node's ledger, in the ledger and in NATS: serve.
    Serve,
    /// The ledger has no record: record this ledger as the deployment's (the one NATS
    /// names), then decide again.
    Record(String),
    /// Create NATS's binding for this ledger (compare-and-set on "no value"), then decide
    /// again.
    Bind,
    /// Serve nothing for now; it resolves without an operator (the grace period ends, or a
    /// live node of the bound ledger re-creates NATS's binding).
    Wait(String),
    /// Serve nothing until an operator acts (`wasmpay cluster adopt`).
    Refuse(String),
}

/// The rule of the binding, per round. The ledger's record decides; NATS's binding is
/// followed only by a ledger with no record, and re-created only by the recorded ledger.
pub fn decide(facts: &Facts<'_>) -> Step {
    let me = facts.ledger;
    match (facts.recorded, facts.nats) {
        (Some(recorded), _) if recorded != me => Step::Refuse(format!(
            "this deployment is bound to ledger {recorded} (recorded in this node's ledger {me}); \
             run `wasmpay cluster adopt` against this ledger to move the deployment here"
        )),
        (Some(_), Some((ledger, partitions))) if ledger == me && partitions == facts.partitions => Step::Serve,
        (Some(_), Some((ledger, partitions))) if ledger == me => Step::Refuse(format!(
            "this NATS deployment is bound to ledger {ledger} with {partitions} partitions, and this node has {}",
            facts.partitions
        )),
        (Some(_), Some((ledger, _))) => Step::Refuse(format!(
            "CONFLICT: this NATS deployment is bound to ledger {ledger}, but this node's ledger {me} records that \
             it serves the deployment: one of the two was moved without the other; serving nothing until an \
             operator runs `wasmpay cluster adopt`"
        )),
        (Some(_), None) => match facts.claimant {
            Some((node, ledger)) => Step::Refuse(format!(
                "CONFLICT: this NATS deployment has no binding, and node {node} of ledger {ledger} says its ledger \
                 serves it, as this node's ledger {me} says of itself; serving nothing until an operator runs \
                 `wasmpay cluster adopt`"
            )),
            None => Step::Bind,
        },
        // Recorded, it would bind this ledger to no ledger for good; NATS's value is fixed by
        // the bound ledger's nodes, or by an operator.
        (None, Some((UNREADABLE, _))) => {
            Step::Wait("this NATS deployment's binding cannot be read: waiting for it to be bound again".to_owned())
        }
        (None, Some((ledger, _))) => Step::Record(ledger.to_owned()),
        (None, None) => match facts.claimant {
            Some((node, ledger)) => Step::Wait(format!(
                "this NATS deployment has no binding, and node {node} says it is bound to ledger {ledger}: \
                 waiting for that ledger's nodes to bind it again"
            )),
            None if facts.unbound_for < facts.grace => Step::Wait(format!(
                "this NATS deployment has no binding: listening to the members for {:?} before binding it to \
                 ledger {me}",
                facts.grace
            )),
            None => Step::Bind,
        },
    }
}

/// Opens the binding's bucket (waiting out a JetStream cluster that is placing it).
pub(crate) async fn open(jetstream: &jetstream::Context, replicas: usize) -> Result<Store, ClusterError> {
    Ok(js::open_bucket(jetstream, bucket(replicas)).await?.0)
}

/// The binding's bucket.
pub(crate) fn bucket(replicas: usize) -> Bucket<'static> {
    Bucket { name: BINDING, ttl: None, replicas }
}

/// The ledger a binding names when its value does not parse (a newer schema, a corrupted
/// value): no ledger's identity, so no node serves under it, and no ledger records it
/// ([`decide`] waits instead).
pub const UNREADABLE: &str = "?";

/// NATS's binding, within one request bound. A value that does not parse reads as a binding
/// to [`UNREADABLE`].
pub(crate) async fn read(store: &Store) -> Result<Option<Binding>, JetStreamError> {
    let value = js::request("reading the binding", store.get(BINDING_KEY)).await?;
    Ok(value.map(|value| {
        serde_json::from_slice::<Binding>(&value).unwrap_or(Binding { ledger: UNREADABLE.to_owned(), partitions: 0 })
    }))
}

/// Binds the deployment to `identity`'s ledger in NATS, unless it is bound already; within
/// one request bound. Whether this call bound it.
pub(crate) async fn create(store: &Store, identity: &Identity) -> Result<bool, JetStreamError> {
    let ours = Binding { ledger: identity.ledger.clone(), partitions: identity.partitions };
    js::request("binding the deployment", async {
        match store.create(BINDING_KEY, encode(&ours)).await {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == CreateErrorKind::AlreadyExists => Ok(false),
            Err(error) => Err(Cause::from(error)),
        }
    })
    .await
}

/// Removes NATS's binding. Refused while the bound ledger has live members, and, when
/// `adopting` names the ledger the deployment moves to, while any other ledger has (NATS's
/// binding may be lost, and a live node of the old ledger would bind it again). Returns the
/// ledger that was bound, if any. This alone moves nothing to a ledger that recorded another
/// binding: the operator adopts the deployment in the new ledger too (`wasmpay cluster adopt`).
pub async fn unbind(client: async_nats::Client, adopting: Option<&str>) -> Result<Option<String>, ClusterError> {
    let jetstream = jetstream::new(client);
    // A missing bucket is nothing bound, or nobody live.
    let binding = open_existing(&jetstream, BINDING).await?;
    let bound = match &binding {
        Some(store) => read(store).await?.map(|bound| bound.ledger),
        None => None,
    };
    let blocking = |ledger: &str| bound.as_deref() == Some(ledger) || adopting.is_some_and(|new| new != ledger);
    let live = match open_existing(&jetstream, MEMBERS).await? {
        Some(members) => live_members(&members, blocking).await?,
        None => Vec::new(),
    };
    if let Some((_, ledger)) = live.first() {
        let members = live.iter().map(|(node, _)| node.as_str()).collect::<Vec<_>>().join(", ");
        return Err(ClusterError::StillBound { ledger: ledger.clone(), members });
    }
    if let (Some(store), Some(_)) = (&binding, &bound) {
        js::request("removing the binding", store.purge(BINDING_KEY)).await?;
    }
    Ok(bound)
}

/// The bucket `name` if it exists, within one request bound.
async fn open_existing(jetstream: &jetstream::Context, name: &str) -> Result<Option<Store>, JetStreamError> {
    match tokio::time::timeout(js::REQUEST_TIMEOUT, jetstream.get_key_value(name)).await {
        Err(_) => {
            Err(JetStreamError::Timeout { what: format!("opening bucket `{name}`").into(), after: js::REQUEST_TIMEOUT })
        }
        Ok(Err(_)) => Ok(None),
        Ok(Ok(store)) => Ok(Some(store)),
    }
}

/// The live members (node, ledger) whose ledger is `blocking`.
async fn live_members(
    members: &Store,
    blocking: impl Fn(&str) -> bool,
) -> Result<Vec<(String, String)>, JetStreamError> {
    // A listing is an ordered push consumer, whose first messages the server may push before
    // the client's subscription to them exists; async-nats then recovers only at a missed
    // heartbeat, which under load can outlast the bound. A listing is a read: a stalled one
    // is tried afresh, at most LISTING_ATTEMPTS times in all.
    let mut attempt = 1;
    let keys = loop {
        let listing = async {
            members.keys().await.map_err(Cause::from)?.try_collect::<Vec<String>>().await.map_err(Cause::from)
        };
        match js::bounded("listing the members", LISTING_TIMEOUT, listing).await {
            Err(JetStreamError::Timeout { .. }) if attempt < LISTING_ATTEMPTS => attempt += 1,
            listed => break listed?,
        }
    };
    let mut live = Vec::new();
    for key in keys {
        let record = js::request("reading a member", members.get(&key)).await?;
        let member = record.and_then(|value| serde_json::from_slice::<Member>(&value).ok());
        if let Some(member) = member.filter(|member| blocking(&member.ledger)) {
            live.push((key, member.ledger));
        }
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_millis(3_500);

    fn facts<'a>(recorded: Option<&'a str>, nats: Option<(&'a str, u32)>) -> Facts<'a> {
        Facts { ledger: "A", partitions: 64, recorded, nats, claimant: None, unbound_for: GRACE, grace: GRACE }
    }

    fn refused(step: &Step) -> bool {
        matches!(step, Step::Refuse(_))
    }

    #[test]
    fn the_recorded_ledger_serves_and_binds_again_what_nats_lost() {
        assert_eq!(decide(&facts(Some("A"), Some(("A", 64)))), Step::Serve);
        assert_eq!(decide(&facts(Some("A"), None)), Step::Bind);
        // Another ledger's node says it serves the deployment too: someone moved one side only.
        let conflict = Facts { claimant: Some(("b-1", "B")), ..facts(Some("A"), None) };
        assert!(refused(&decide(&conflict)));
        assert!(refused(&decide(&facts(Some("A"), Some(("B", 64))))));
        assert!(refused(&decide(&facts(Some("A"), Some(("A", 256))))));
    }

    /// The finding: a ledger that was refused keeps refusing when NATS loses the binding, and
    /// even if NATS is later bound to it (only `adopt` changes its record).
    #[test]
    fn a_ledger_that_recorded_another_never_binds() {
        for nats in [None, Some(("A", 64)), Some(("B", 64))] {
            for unbound_for in [Duration::ZERO, GRACE * 100] {
                let step = decide(&Facts { recorded: Some("B"), unbound_for, ..facts(None, nats) });
                assert!(refused(&step), "{nats:?}: {step:?}");
            }
        }
    }

    #[test]
    fn a_ledger_without_a_record_follows_nats_or_binds_only_after_the_grace_unclaimed() {
        assert_eq!(decide(&facts(None, Some(("B", 64)))), Step::Record("B".to_owned()));
        assert_eq!(decide(&facts(None, Some(("A", 64)))), Step::Record("A".to_owned()));
        let early = Facts { unbound_for: GRACE - Duration::from_millis(1), ..facts(None, None) };
        assert!(matches!(decide(&early), Step::Wait(_)));
        assert_eq!(decide(&facts(None, None)), Step::Bind);
        let claimed = Facts { claimant: Some(("b-1", "B")), unbound_for: GRACE * 100, ..facts(None, None) };
        assert!(matches!(decide(&claimed), Step::Wait(_)));
        // A value that does not parse is never recorded as the deployment's ledger.
        assert!(matches!(decide(&facts(None, Some((UNREADABLE, 0)))), Step::Wait(_)));
    }

    /// Whatever NATS says, the ledger's record is never overruled: a node serves only a
    /// deployment its ledger records as its own and NATS names alike, and binds only if its
    /// ledger records it or records nothing (then only unclaimed after the grace).
    #[test]
    fn only_the_recorded_or_an_unclaimed_unrecorded_ledger_serves_or_binds() {
        let ledgers = [None, Some("A"), Some("B")];
        let bindings = [None, Some(("A", 64)), Some(("A", 256)), Some(("B", 64))];
        let claimants = [None, Some(("b-1", "B"))];
        for recorded in ledgers {
            for nats in bindings {
                for claimant in claimants {
                    for unbound_for in [Duration::ZERO, GRACE] {
                        let input = Facts { claimant, unbound_for, ..facts(recorded, nats) };
                        match decide(&input) {
                            Step::Serve => assert!(recorded == Some("A") && nats == Some(("A", 64)), "{input:?}"),
                            Step::Bind => {
                                assert!(nats.is_none() && claimant.is_none(), "{input:?}");
                                assert!(recorded == Some("A") || unbound_for >= GRACE, "{input:?}");
                            }
                            Step::Record(ledger) => {
                                assert!(recorded.is_none() && nats.map(|n| n.0) == Some(ledger.as_str()))
                            }
                            Step::Wait(_) => assert!(recorded.is_none() && nats.is_none(), "{input:?}"),
                            Step::Refuse(_) => assert!(recorded.is_some(), "{input:?}"),
                        }
                    }
                }
            }
        }
    }
}
