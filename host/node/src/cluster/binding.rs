//! The binding of a NATS deployment's payment subjects to one ledger.
//!
//! Leases keep two ledgers from serving a partition at the same time, but not one after the
//! other: when the last node of ledger A dies, its leases expire, and a node of ledger B could
//! take the partitions, so a payer's next payment would be posted in a ledger that has never
//! seen its account or its earlier payments. So the first node binds the subjects to its
//! ledger with a key that never expires (`ledger` in `wasmpay_cluster`), and a node of any
//! other ledger (or partition count) serves nothing while it is there. Moving a deployment to
//! another ledger is an operator's decision: `wasmpay cluster unbind`, once the bound ledger's
//! nodes are stopped.

use async_nats::jetstream;
use async_nats::jetstream::kv::{CreateErrorKind, Store};
use serde::{Deserialize, Serialize};

use super::buckets::{self, REQUEST_TIMEOUT};
use super::ownership::{MEMBERS, Member};
use super::{ClusterError, Identity};

const BINDING: &str = "wasmpay_cluster";
const KEY: &str = "ledger";

/// The value of the binding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Binding {
    ledger: String,
    partitions: u32,
}

fn failed(error: impl std::fmt::Display) -> ClusterError {
    ClusterError::Bucket { bucket: BINDING.to_owned(), message: error.to_string() }
}

/// Opens the binding's bucket (waiting out a JetStream cluster that is placing it).
pub(super) async fn open(jetstream: &jetstream::Context, replicas: usize) -> Result<Store, ClusterError> {
    Ok(buckets::open(jetstream, BINDING, None, replicas).await?.0)
}

/// Binds the deployment to `identity`'s ledger if nothing is bound yet. `None` if this node may
/// serve; otherwise why not. A `starting` node waits out a JetStream that is not ready; a
/// running one asks once, within [`REQUEST_TIMEOUT`] per request, so a round (and stopping)
/// is never held up by it.
pub(super) async fn bind(store: &Store, identity: &Identity, starting: bool) -> Result<Option<String>, ClusterError> {
    let ours = Binding { ledger: identity.ledger.clone(), partitions: identity.partitions };
    let value = bytes::Bytes::from(serde_json::to_vec(&ours).unwrap_or_default());
    let create = || async {
        match store.create(KEY, value.clone()).await {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == CreateErrorKind::AlreadyExists => Ok(false),
            Err(error) => Err(error),
        }
    };
    let created = ask(starting, create).await?;
    if created {
        tracing::info!(ledger = %ours.ledger, partitions = ours.partitions, "bound this NATS deployment's payment subjects to this node's ledger");
        return Ok(None);
    }
    let bound =
        ask(starting, || store.get(KEY)).await?.and_then(|value| serde_json::from_slice::<Binding>(&value).ok());
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

/// One request: patiently while starting, else once within [`REQUEST_TIMEOUT`].
async fn ask<T, E, F, Fut>(starting: bool, request: F) -> Result<T, ClusterError>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    if starting {
        return buckets::patiently(BINDING, request).await.map_err(failed);
    }
    let mut request = request;
    tokio::time::timeout(REQUEST_TIMEOUT, request())
        .await
        .map_err(|_| failed(format!("no answer within {REQUEST_TIMEOUT:?}")))?
        .map_err(failed)
}

/// Removes the binding, so the next node to start binds the deployment to its ledger. Refused
/// while the bound ledger has live members. Returns the ledger that was bound, if any.
pub async fn unbind(client: async_nats::Client) -> Result<Option<String>, ClusterError> {
    let jetstream = jetstream::new(client);
    let within = |what: &'static str| move |_| failed(format!("{what}: no answer within {REQUEST_TIMEOUT:?}"));
    let store = tokio::time::timeout(REQUEST_TIMEOUT, jetstream.get_key_value(BINDING))
        .await
        .map_err(within("opening the binding"))?;
    let Ok(store) = store else { return Ok(None) };
    let bound = tokio::time::timeout(REQUEST_TIMEOUT, store.get(KEY))
        .await
        .map_err(within("reading the binding"))?
        .map_err(failed)?
        .and_then(|value| serde_json::from_slice::<Binding>(&value).ok());
    let Some(bound) = bound else { return Ok(None) };
    let members = tokio::time::timeout(REQUEST_TIMEOUT, jetstream.get_key_value(MEMBERS))
        .await
        .map_err(within("opening the members"))?
        .map_err(failed)?;
    let live = live_members(&members, &bound.ledger).await?;
    if !live.is_empty() {
        return Err(ClusterError::StillBound { ledger: bound.ledger, members: live.join(", ") });
    }
    tokio::time::timeout(REQUEST_TIMEOUT, store.purge(KEY))
        .await
        .map_err(within("removing the binding"))?
        .map_err(failed)?;
    Ok(Some(bound.ledger))
}

/// How long listing the members may take.
const LISTING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The members of `ledger` whose records have not expired.
async fn live_members(members: &Store, ledger: &str) -> Result<Vec<String>, ClusterError> {
    use futures::TryStreamExt;
    // A listing is a consumer created and read to its end, several round trips: bounded
    // more loosely than one request (this runs for an operator's command only).
    let listed = tokio::time::timeout(LISTING_TIMEOUT, async {
        let keys = members.keys().await.map_err(failed)?;
        keys.try_collect::<Vec<String>>().await.map_err(failed)
    });
    let keys = listed.await.map_err(|_| failed(format!("listing members: no answer within {LISTING_TIMEOUT:?}")))??;
    let mut live = Vec::new();
    for key in keys {
        let record = tokio::time::timeout(REQUEST_TIMEOUT, members.get(&key))
            .await
            .map_err(|_| failed(format!("reading a member: no answer within {REQUEST_TIMEOUT:?}")))?
            .map_err(failed)?;
        if record.and_then(|value| serde_json::from_slice::<Member>(&value).ok()).is_some_and(|m| m.ledger == ledger) {
            live.push(key);
        }
    }
    Ok(live)
}
