//! The one layer between wasmpay and JetStream: opening KV buckets, streams and object stores,
//! bounding every request, and one error type that keeps its cause.
//!
//! Every JetStream call of a node goes through [`request`] (bounded by [`REQUEST_TIMEOUT`]) or
//! [`bounded`] (a named longer bound, for transfers and listings), or through [`patiently`]
//! while setting up. async-nats reconnects for ever and a request to a stream without a leader
//! gets no answer at all, so an unbounded call could hold a round, a handover or a shutdown
//! for good.
//!
//! nats-server 2.9 (Debian's) and async-nats ≥ 0.41 disagree on the account-info reply that
//! `create_key_value` reads, so [`open_bucket`] creates the bucket's stream itself with the
//! settings a KV bucket has (one value per key, roll-ups, no message deletes, direct gets) and
//! then opens it with `get_key_value`: that works on 2.9 and on current servers alike.

use std::borrow::Cow;
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store, stream};

/// How long one JetStream request (a put, a lease update, an ack, a consumer's set-up) may
/// take. One value for every request of a node, so bounds built from it add up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one attempt at setting something up may take. Short, because a request to a
/// stream without a leader (a replicated stream just created, or re-electing) gets no answer
/// at all: it is the next attempt that finds the new leader.
pub const SETUP_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a starting node keeps trying to set something up.
const SETUP_DEADLINE: Duration = Duration::from_secs(30);
/// How long to wait between two set-up attempts.
const SETUP_RETRY_DELAY: Duration = Duration::from_millis(250);

/// Any error a JetStream call returns: async-nats has one error type per call.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// A JetStream call that failed: what was asked, and why, with the cause kept as the error's
/// source. The message repeats the cause's text because most readers (logs, HTTP problems)
/// print one line.
#[derive(Debug, thiserror::Error)]
pub enum JetStreamError {
    /// JetStream did not answer within the call's bound (server gone, no stream leader).
    #[error("{what}: no answer within {after:?}")]
    Timeout {
        /// What was asked.
        what: Cow<'static, str>,
        /// The bound.
        after: Duration,
    },
    /// JetStream (or the connection) refused the call.
    #[error("{what}: {source}")]
    Failed {
        /// What was asked.
        what: Cow<'static, str>,
        /// Why.
        #[source]
        source: Cause,
    },
}

impl JetStreamError {
    /// A refusal of `what` because of `source`.
    pub fn failed(what: impl Into<Cow<'static, str>>, source: impl Into<Cause>) -> JetStreamError {
        JetStreamError::Failed { what: what.into(), source: source.into() }
    }
}

/// `request`, given [`REQUEST_TIMEOUT`] to answer.
pub async fn request<T, E: Into<Cause>>(
    what: impl Into<Cow<'static, str>>,
    request: impl Future<Output = Result<T, E>>,
) -> Result<T, JetStreamError> {
    bounded(what, REQUEST_TIMEOUT, request).await
}

/// `request`, given `limit` to answer: for the few calls that are several round trips (moving a
/// component, listing keys), each with its own named bound.
pub async fn bounded<T, E: Into<Cause>>(
    what: impl Into<Cow<'static, str>>,
    limit: Duration,
    request: impl Future<Output = Result<T, E>>,
) -> Result<T, JetStreamError> {
    match tokio::time::timeout(limit, request).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(JetStreamError::failed(what, error)),
        Err(_) => Err(JetStreamError::Timeout { what: what.into(), after: limit }),
    }
}

/// Runs a set-up request until it succeeds, each attempt bounded by a few seconds, for at most
/// half a minute: creating a replicated stream waits for the JetStream cluster to place it, the
/// first writes wait for its replicas, and a cluster electing a leader answers nothing for a
/// few seconds. A starting node waits that out instead of failing. The last attempt's error is
/// returned.
pub async fn patiently<T, E, F, Fut>(what: impl Into<Cow<'static, str>>, mut attempt: F) -> Result<T, JetStreamError>
where
    E: Into<Cause>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let what = what.into();
    let deadline = tokio::time::Instant::now() + SETUP_DEADLINE;
    loop {
        let error = match bounded(what.clone(), SETUP_ATTEMPT_TIMEOUT, attempt()).await {
            Ok(done) => return Ok(done),
            Err(error) => error,
        };
        if tokio::time::Instant::now() + SETUP_RETRY_DELAY >= deadline {
            return Err(error);
        }
        tracing::warn!(%error, "JetStream is not ready (is it enabled? nats-server -js); trying again");
        tokio::time::sleep(SETUP_RETRY_DELAY).await;
    }
}

/// A KV bucket to open.
#[derive(Clone, Copy, Debug)]
pub struct Bucket<'a> {
    /// Its name.
    pub name: &'a str,
    /// How long a value lives unless put again (`None`: for ever).
    pub ttl: Option<Duration>,
    /// JetStream replicas of its stream.
    pub replicas: usize,
}

/// Opens `bucket`, creating it if it is missing; returns it with the TTL it really has (the
/// first node creates it; the bucket's TTL, not each node's setting, is what every node must
/// use). Waits out a JetStream that is placing it ([`patiently`]).
pub async fn open_bucket(
    jetstream: &jetstream::Context,
    bucket: Bucket<'_>,
) -> Result<(kv::Store, Duration), JetStreamError> {
    let config = bucket_config(bucket);
    // The whole set-up is one attempt: a stream whose leader is still being elected answers
    // nothing, and asking again soon finds the leader sooner than waiting out one long request.
    patiently(format!("bucket `{}`", bucket.name), || open_bucket_once(jetstream, bucket.name, &config)).await
}

/// Re-creates `bucket` if it is missing, in one attempt bounded like one set-up attempt: a
/// running node calls it when its requests found a bucket gone (its stream deleted, or a NATS
/// server back with an empty store). The buckets hold only state the nodes rebuild (their
/// records, leases the ledger fences, a binding the ledger records), so re-creating them
/// empty is safe.
pub async fn ensure_bucket(jetstream: &jetstream::Context, bucket: Bucket<'_>) -> Result<(), JetStreamError> {
    let config = bucket_config(bucket);
    let opened = open_bucket_once(jetstream, bucket.name, &config);
    bounded(format!("re-creating bucket `{}`", bucket.name), SETUP_ATTEMPT_TIMEOUT, opened).await.map(|_| ())
}

/// The stream of a KV bucket, with the settings a KV bucket has.
fn bucket_config(bucket: Bucket<'_>) -> stream::Config {
    let name = bucket.name;
    stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: bucket.ttl.unwrap_or_default(),
        // A key's duplicate window may not outlast its values.
        duplicate_window: bucket.ttl.unwrap_or(Duration::from_secs(120)),
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        num_replicas: bucket.replicas.max(1),
        ..stream::Config::default()
    }
}

/// One attempt at creating (or finding) a bucket's stream and opening it as a bucket.
async fn open_bucket_once(
    jetstream: &jetstream::Context,
    name: &str,
    config: &stream::Config,
) -> Result<(kv::Store, Duration), Cause> {
    let mut created = jetstream.get_or_create_stream(config.clone()).await.map_err(Cause::from)?;
    let actual = reconcile_replicas(jetstream, &mut created, config.num_replicas).await?.max_age;
    let store = jetstream.get_key_value(name).await.map_err(Cause::from)?;
    Ok((store, actual))
}

/// JetStream replicas of the cluster's state (buckets, durable streams, the plugin store) when
/// the operator set none: three on a clustered NATS, whose point is to survive the loss of a
/// server, and one on a single server, which cannot place more.
pub fn replicas(client: &async_nats::Client, configured: Option<usize>) -> usize {
    match (configured, clustered(client)) {
        (Some(replicas), _) => replicas.max(1),
        (None, Some(_)) => CLUSTERED_REPLICAS,
        (None, None) => 1,
    }
}

/// The name of the NATS cluster `client` is connected to, if the server is in one.
pub fn clustered(client: &async_nats::Client) -> Option<String> {
    client.server_info().cluster.filter(|name| !name.is_empty())
}

/// Replicas on a clustered NATS unless configured: any one server can be lost.
pub const CLUSTERED_REPLICAS: usize = 3;

/// Sets `stream`'s replicas to `wanted` in place if they differ (an operator changed
/// `replicas` after the first start: without this the first node's choice stayed for ever,
/// silently); the stream's other settings are left as they are. Returns its configuration.
async fn reconcile_replicas(
    jetstream: &jetstream::Context,
    stream: &mut stream::Stream,
    wanted: usize,
) -> Result<stream::Config, Cause> {
    let mut config = stream.info().await.map_err(Cause::from)?.config.clone();
    let wanted = wanted.max(1);
    if config.num_replicas.max(1) != wanted {
        let had = config.num_replicas;
        config.num_replicas = wanted;
        jetstream.update_stream(config.clone()).await.map_err(Cause::from)?;
        tracing::info!(stream = %config.name, from = had, to = wanted, "changed the stream's JetStream replicas");
    }
    Ok(config)
}

/// Whether a request on the cluster's buckets failed since the rounds last looked: they then
/// re-create whatever bucket is missing ([`ensure_bucket`]) instead of failing until a restart.
/// Shared by every task that writes a bucket.
#[derive(Clone, Debug, Default)]
pub struct Damage(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Damage {
    /// A request failed (a missing stream, or no answer).
    pub fn report(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether one was reported since the last call.
    pub fn take(&self) -> bool {
        self.0.swap(false, std::sync::atomic::Ordering::Relaxed)
    }
}

/// Opens the stream `config` names, creating it if it is missing ([`patiently`]).
pub async fn open_stream(
    jetstream: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, JetStreamError> {
    patiently(format!("stream `{}`", config.name), || async {
        let mut stream = jetstream.get_or_create_stream(config.clone()).await.map_err(Cause::from)?;
        reconcile_replicas(jetstream, &mut stream, config.num_replicas).await?;
        Ok::<_, Cause>(stream)
    })
    .await
}

/// Opens the object store `config` names, creating it if it is missing ([`patiently`]).
pub async fn open_object_store(
    jetstream: &jetstream::Context,
    config: object_store::Config,
) -> Result<object_store::ObjectStore, JetStreamError> {
    patiently(format!("object store `{}`", config.bucket), || async {
        let store = match jetstream.get_object_store(&config.bucket).await {
            Ok(store) => store,
            Err(_) => jetstream.create_object_store(config.clone()).await.map_err(Cause::from)?,
        };
        let mut stream = jetstream.get_stream(format!("OBJ_{}", config.bucket)).await.map_err(Cause::from)?;
        reconcile_replicas(jetstream, &mut stream, config.num_replicas).await?;
        Ok::<_, Cause>(store)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bounded_request_keeps_its_cause_or_says_it_timed_out() {
        let refused = request("reading", async { Err::<(), _>(std::io::Error::other("no stream")) }).await;
        let Err(error) = refused else { panic!("an error was expected") };
        assert_eq!(error.to_string(), "reading: no stream");
        let source = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("no stream"));

        let silent = bounded("writing", Duration::from_millis(5), std::future::pending::<Result<(), Cause>>()).await;
        let Err(error) = silent else { panic!("a time-out was expected") };
        assert_eq!(error.to_string(), "writing: no answer within 5ms");
    }
}
