//! Durable ingestion (`[delivery] durable = true`): payments a client publishes to JetStream
//! and forgets, kept until their partition's owner has posted them.
//!
//! Clients publish on `wasmpay.durable.<partition>.<payer>` with `Nats-Msg-Id` = payment id
//! (JetStream drops a repeat within its duplicate window; the ledger's idempotency covers any
//! later one). The stream keeps each message until the owner of its partition has committed it
//! to the ledger and published the reply on `wasmpay.results.<payer>` (kept in a stream of its
//! own, and in the ledger: `GET /v1/payments/{id}`); only then is it acknowledged, so a node
//! that dies loses nothing: what it had not acknowledged is delivered to the next owner.
//!
//! Each owner of a partition has its own durable pull consumer (one per lease), created from
//! the earlier owners' acknowledgement floor, so what an old owner took but did not
//! acknowledge comes again first, in stream order, ahead of anything newer: one payer's
//! payments stay in order across a handover (a repeat of one already posted gets its stored
//! reply), and a resumed old owner's pulls and acknowledgements reach only its own consumer.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::TryStreamExt;
use serde::Deserialize;
use wasmpay_cluster::jetstream::{self as js, JetStreamError};
use wasmpay_protocol::routing::subjects;

/// How payments may arrive (`[delivery]` in `wasmpay.toml`). Request-reply on
/// `wasmpay.pay.<p>.<payer>` is always served; durable ingestion is added per deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Serve `wasmpay.durable.<p>.<payer>` from the `WASMPAY_PAYMENTS` stream.
    pub durable: bool,
    /// How long a delivered payment may stay unacknowledged before JetStream delivers it
    /// again (a handover or a crash redelivers at once, by recreating the consumer).
    pub ack_wait_ms: u64,
    /// How long results stay in `WASMPAY_RESULTS` (the ledger keeps them for ever).
    pub results_max_age_s: u64,
    /// JetStream replicas of the two streams; unset, the cluster's (`[cluster] replicas`, 3
    /// on a clustered NATS), so durable payments are as safe as the leases that serve them.
    pub replicas: Option<usize>,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings { durable: false, ack_wait_ms: 30_000, results_max_age_s: 7 * 24 * 3600, replicas: None }
    }
}

/// Durable ingestion could not be set up or served.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// JetStream refused or did not answer (every request is bounded: [`js::request`]).
    #[error("durable ingestion: {0}")]
    JetStream(#[from] JetStreamError),
    /// A newer owner's consumer of the partition exists: this node's lease is stale.
    #[error("durable ingestion: a newer owner consumes partition {0}: this lease is stale")]
    Stale(u32),
}

/// The payments and results streams of a node in durable mode.
#[derive(Clone, Debug)]
pub struct Durable {
    jetstream: jetstream::Context,
    payments: stream::Stream,
    settings: DeliverySettings,
}

impl Durable {
    /// Opens (or creates) the two streams.
    /// `replicas` is the streams' JetStream replicas, resolved by the node.
    pub async fn open(
        client: async_nats::Client,
        settings: DeliverySettings,
        replicas: usize,
    ) -> Result<Durable, DurableError> {
        let jetstream = jetstream::new(client);
        let payments = stream::Config {
            name: subjects::PAYMENTS_STREAM.to_owned(),
            subjects: vec![format!("{}.*.*", subjects::DURABLE_PREFIX)],
            storage: stream::StorageType::File,
            num_replicas: replicas.max(1),
            duplicate_window: Duration::from_secs(120),
            ..stream::Config::default()
        };
        let results = stream::Config {
            name: subjects::RESULTS_STREAM.to_owned(),
            subjects: vec![format!("{}.*", subjects::RESULTS_PREFIX)],
            storage: stream::StorageType::File,
            num_replicas: replicas.max(1),
            max_age: Duration::from_secs(settings.results_max_age_s.max(1)),
            duplicate_window: Duration::from_secs(120),
            ..stream::Config::default()
        };
        // Creating a replicated stream waits for the JetStream cluster to place it.
        let payments = js::open_stream(&jetstream, payments).await?;
        js::open_stream(&jetstream, results).await?;
        Ok(Durable { jetstream, payments, settings })
    }

    /// The consumer of `partition`'s durable payments for its owner under lease `token`:
    /// `partition-<p>-t<token>`, one per lease, so an old owner's pulls and acknowledgements
    /// never reach its successor's consumer. It starts after the furthest acknowledgement floor
    /// of the partition's earlier consumers, so nothing an earlier owner left unacknowledged
    /// is skipped and nothing comes out of order; the earlier consumers are deleted once it
    /// exists. Refused if a newer owner's consumer exists (this lease is stale). At most
    /// `in_flight` are delivered unacknowledged.
    pub async fn consumer(&self, partition: u32, token: u64, in_flight: usize) -> Result<PullConsumer, DurableError> {
        let prefix = format!("partition-{partition}-t");
        let name = format!("{prefix}{token}");
        let names: Vec<String> =
            js::request("listing the consumers", self.payments.consumer_names().try_collect::<Vec<String>>()).await?;
        let earlier: Vec<(u64, String)> = names
            .into_iter()
            .filter_map(|name| Some((name.strip_prefix(&prefix)?.parse::<u64>().ok()?, name)))
            .collect();
        if earlier.iter().any(|(theirs, _)| *theirs > token) {
            return Err(DurableError::Stale(partition));
        }
        let mut start = None;
        for (_, consumer) in &earlier {
            let info = js::request("reading a consumer", self.payments.consumer_info(consumer)).await?;
            start = start.max(Some(info.ack_floor.stream_sequence + 1));
        }
        if earlier.iter().any(|(theirs, _)| *theirs == token) {
            // This owner's own consumer, whose pull stream ended: made again from its floor.
            js::request("deleting the consumer", self.payments.delete_consumer(&name)).await?;
        }
        let config = pull::Config {
            durable_name: Some(name),
            filter_subject: format!("{}.{partition}.*", subjects::DURABLE_PREFIX),
            deliver_policy: start
                .map_or(DeliverPolicy::All, |start_sequence| DeliverPolicy::ByStartSequence { start_sequence }),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_millis(self.settings.ack_wait_ms.max(1)),
            max_ack_pending: i64::try_from(in_flight.max(1)).unwrap_or(i64::MAX),
            ..pull::Config::default()
        };
        let consumer = js::request("creating the consumer", self.payments.create_consumer(config)).await?;
        for (_, older) in earlier.iter().filter(|(theirs, _)| *theirs < token) {
            if let Err(error) = js::request("deleting an earlier consumer", self.payments.delete_consumer(older)).await
            {
                // It stays behind, unused: the next owner's floor covers it.
                tracing::warn!(%error, consumer = older, "could not delete an earlier owner's consumer");
            }
        }
        Ok(consumer)
    }

    /// Publishes a durable payment's reply on its payer's results subject and waits until
    /// JetStream has stored it.
    pub async fn publish_result(&self, payer: &str, id: Option<&str>, body: Bytes) -> Result<(), DurableError> {
        let mut headers = HeaderMap::new();
        if let Some(id) = id {
            headers.insert(subjects::PAYMENT_ID_HEADER, id);
            headers.insert("Nats-Msg-Id", format!("result:{id}").as_str());
        }
        let published = js::request(
            "publishing a result",
            self.jetstream.publish_with_headers(subjects::results(payer), headers, body),
        )
        .await?;
        js::request("storing a result", published.into_future()).await?;
        Ok(())
    }
}
