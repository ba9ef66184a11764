//! The binding of a NATS deployment's payment subjects to one ledger.
//!
//! Leases keep two ledgers from serving a partition at the same time, but not one after the
//! other: when the last node of ledger A dies, its leases expire, and a node of ledger B could
//! take the partitions, so a payer's next payment would be posted in a ledger that has never
//! seen its account or its earlier payments. So the first node binds the subjects to its
//! ledger with a key that never expires (`ledger` in `wasmpay_cluster`), and a node of any
//! other ledger (or partition count) serves nothing while it is there. Moving a deployment to
//! another ledger is an operator's decision: [`unbind`], once the bound ledger's nodes are
//! stopped.

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

/// Opens the binding's bucket (waiting out a JetStream cluster that is placing it).
pub(crate) async fn open(jetstream: &jetstream::Context, replicas: usize) -> Result<Store, ClusterError> {
    Ok(js::open_bucket(jetstream, Bucket { name: BINDING, ttl: None, replicas }).await?.0)
}

/// Binds the deployment to `identity`'s ledger if nothing is bound yet. `None` if this node may
/// serve; otherwise why not. A `starting` node waits out a JetStream that is not ready; a
/// running one asks once per request, within the request bound, so a round (and stopping) is
/// never held up by it.
pub(crate) async fn bind(store: &Store, identity: &Identity, starting: bool) -> Result<Option<String>, ClusterError> {
    let ours = Binding { ledger: identity.ledger.clone(), partitions: identity.partitions };
    let value = encode(&ours);
    let create = || async {
        match store.create(BINDING_KEY, value.clone()).await {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == CreateErrorKind::AlreadyExists => Ok(false),
            Err(error) => Err(Cause::from(error)),
        }
    };
    let created = ask(starting, "binding the deployment", create).await?;
    if created {
        tracing::info!(ledger = %ours.ledger, partitions = ours.partitions, "bound this NATS deployment's payment subjects to this node's ledger");
        return Ok(None);
    }
    let bound = ask(starting, "reading the binding", || async { store.get(BINDING_KEY).await.map_err(Cause::from) })
        .await?
        .and_then(|value| serde_json::from_slice::<Binding>(&value).ok());
    Ok(match bound {
        Some(bound) if bound == ours => None,
        Some(bound) => {
            let reason = format!(
                "this NATS deployment is bound to ledger {} with {} partitions, and this node writes ledger {} with {}; \
                 stop that ledger's nodes and run `wasmpay cluster unbind` to move the deployment",
                bound.ledger, bound.partitions, ours.ledger, ours.partitions
            );
            tracing::error!("{reason}");
            Some(reason)
        }
        // Unbound between the create and the read: the next reading binds it.
        None => Some("the binding changed while this node read it".to_owned()),
    })
}

/// One request: patiently while starting, else once within the request bound.
async fn ask<T, F, Fut>(starting: bool, what: &'static str, mut request: F) -> Result<T, JetStreamError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Cause>>,
{
    match starting {
        true => js::patiently(what, request).await,
        false => js::request(what, request()).await,
    }
}

/// Removes the binding, so the next node to start binds the deployment to its ledger. Refused
/// while the bound ledger has live members. Returns the ledger that was bound, if any.
pub async fn unbind(client: async_nats::Client) -> Result<Option<String>, ClusterError> {
    let jetstream = jetstream::new(client);
    let opened = tokio::time::timeout(js::REQUEST_TIMEOUT, jetstream.get_key_value(BINDING)).await;
    let store = match opened {
        Err(_) => {
            return Err(
                JetStreamError::Timeout { what: "opening the binding".into(), after: js::REQUEST_TIMEOUT }.into()
            );
        }
        // No binding bucket: nothing was ever bound.
        Ok(Err(_)) => return Ok(None),
        Ok(Ok(store)) => store,
    };
    let bound = js::request("reading the binding", store.get(BINDING_KEY))
        .await?
        .and_then(|value| serde_json::from_slice::<Binding>(&value).ok());
    let Some(bound) = bound else { return Ok(None) };
    let members = js::request("opening the members", jetstream.get_key_value(MEMBERS)).await?;
    let live = live_members(&members, &bound.ledger).await?;
    if !live.is_empty() {
        return Err(ClusterError::StillBound { ledger: bound.ledger, members: live.join(", ") });
    }
    js::request("removing the binding", store.purge(BINDING_KEY)).await?;
    Ok(Some(bound.ledger))
}

/// The members of `ledger` whose records have not expired.
async fn live_members(members: &Store, ledger: &str) -> Result<Vec<String>, JetStreamError> {
    let listing =
        async { members.keys().await.map_err(Cause::from)?.try_collect::<Vec<String>>().await.map_err(Cause::from) };
    let keys = js::bounded("listing the members", LISTING_TIMEOUT, listing).await?;
    let mut live = Vec::new();
    for key in keys {
        let record = js::request("reading a member", members.get(&key)).await?;
        if record.and_then(|value| serde_json::from_slice::<Member>(&value).ok()).is_some_and(|m| m.ledger == ledger) {
            live.push(key);
        }
    }
    Ok(live)
}
