//! Load generation and timing. Closed loop keeps a fixed number of requests in flight and
//! sends the next when one is answered: what a level can carry. Open loop sends on a fixed
//! schedule whatever the answers, and times each request from when it was due: what a client
//! arriving at that rate sees, queueing included (a closed loop hides it by slowing down).

use std::future::Future;
use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use tokio::time::Instant;
use wasmpay_node::client::request;
use wasmpay_protocol::{Reply, Status};

/// Subject prefix of the no-op responder.
const NOOP_SUBJECT: &str = "bench.noop";

/// How far one measurement may go: whichever comes first.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Requests.
    pub count: u32,
    /// Time to keep sending.
    pub time: Duration,
}

/// Percentiles of one measurement's latencies, in microseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
}

impl Latency {
    /// The percentiles of `latencies`, which it sorts.
    pub fn of(latencies: &mut [Duration]) -> Latency {
        latencies.sort_unstable();
        let at = |per_mille: usize| {
            let index = (latencies.len() * per_mille / 1_000).min(latencies.len().saturating_sub(1));
            micros(latencies.get(index).copied().unwrap_or_default())
        };
        Latency { p50_us: at(500), p99_us: at(990), p999_us: at(999) }
    }
}

/// Whole microseconds.
pub fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// What one measurement found.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// Requests sent and answered or timed out.
    pub requests: u64,
    /// Of those, not served (no reply, or a reply other than the one expected).
    pub failed: u64,
    /// Requests completed per second, over the whole measurement.
    pub per_second: u64,
    /// None where only a rate is known (pgbench).
    pub latency: Option<Latency>,
}

/// The answers of a measurement so far.
struct Tally {
    what: String,
    total: u32,
    latencies: Vec<Duration>,
    failed: u64,
}

impl Tally {
    fn new(what: &str, total: u32) -> Tally {
        let latencies = Vec::with_capacity(usize::try_from(total).unwrap_or_default());
        Tally { what: what.to_owned(), total, latencies, failed: 0 }
    }

    fn add(&mut self, served: bool, latency: Duration) {
        self.failed += u64::from(!served);
        self.latencies.push(latency);
        if self.latencies.len().is_multiple_of(1_000) {
            self.show();
        }
    }

    fn show(&self) {
        progress(&self.what, u32::try_from(self.latencies.len()).unwrap_or(u32::MAX), self.total);
    }

    fn finish(mut self, elapsed: Duration) -> Measured {
        if !self.latencies.len().is_multiple_of(1_000) || self.latencies.is_empty() {
            self.show();
        }
        eprintln!();
        let requests = u64::try_from(self.latencies.len()).unwrap_or(u64::MAX);
        Measured {
            requests,
            failed: self.failed,
            per_second: per_second(requests, elapsed),
            latency: Some(Latency::of(&mut self.latencies)),
        }
    }
}

/// `count` per `elapsed`, per second.
pub fn per_second(count: u64, elapsed: Duration) -> u64 {
    u64::try_from(u128::from(count) * 1_000_000 / elapsed.as_micros().max(1)).unwrap_or(u64::MAX)
}

/// Runs the requests `make` returns (each resolves to whether it was served), `in_flight` at a
/// time, until `limits`, and times each from its send to its answer.
pub async fn closed_loop<F, Fut>(what: &str, in_flight: usize, limits: Limits, make: F) -> Measured
where
    F: Fn(u32) -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    let deadline = started + limits.time;
    let mut answers = futures::stream::iter(0..limits.count)
        .take_while(move |_| std::future::ready(Instant::now() < deadline))
        .map(|index| {
            let served = make(index);
            async move {
                let sent = Instant::now();
                (served.await, sent.elapsed())
            }
        })
        .buffer_unordered(in_flight.max(1));
    let mut tally = Tally::new(what, limits.count);
    while let Some((served, latency)) = answers.next().await {
        tally.add(served, latency);
    }
    tally.finish(started.elapsed())
}

/// Sends `count` requests made by `make` at `rate` per second on a fixed schedule, never
/// waiting for answers, and times each from when it was due to its answer. `count` bounds
/// the time (count / rate) and the requests in flight.
pub async fn open_loop<F, Fut>(what: &str, rate: u64, count: u32, make: F) -> Measured
where
    F: Fn(u32) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    let started = Instant::now();
    let due = |index: u32| started + Duration::from_nanos(u64::from(index).saturating_mul(1_000_000_000) / rate.max(1));
    let mut answers = tokio::task::JoinSet::new();
    let mut tally = Tally::new(what, count);
    let mut next = 0;
    while next < count {
        // The timer wakes up to a millisecond late: send everything due by now, each timed
        // from its own due time.
        let now = Instant::now();
        while next < count && due(next) <= now {
            let (served, at) = (make(next), due(next));
            answers.spawn(async move { (served.await, at.elapsed()) });
            next += 1;
        }
        while let Some(joined) = answers.try_join_next() {
            tally_joined(&mut tally, joined);
        }
        if next < count {
            tokio::time::sleep_until(due(next)).await;
        }
    }
    while let Some(joined) = answers.join_next().await {
        tally_joined(&mut tally, joined);
    }
    tally.finish(started.elapsed())
}

/// A request task's answer; one that panicked counts as failed, untimed.
fn tally_joined(tally: &mut Tally, joined: Result<(bool, Duration), tokio::task::JoinError>) {
    match joined {
        Ok((served, latency)) => tally.add(served, latency),
        Err(_) => tally.failed += 1,
    }
}

/// What counts as served.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// Any reply (the no-op responder's).
    AnyReply,
    /// A payment reply with status `approved`: a refusal or decline is a failure here.
    Approved,
    /// A settlement's reply with status `settled`.
    Settled,
}

/// One NATS request, resolving to whether it was served as `expect`ed.
pub fn nats_request(
    client: &async_nats::Client,
    subject: String,
    body: Bytes,
    expect: Expect,
) -> impl Future<Output = bool> + Send + use<> {
    let client = client.clone();
    async move {
        let Ok(reply) = request(&client, &subject, body).await else {
            return false;
        };
        match expect {
            Expect::AnyReply => true,
            Expect::Approved => {
                serde_json::from_str::<Reply>(&reply).is_ok_and(|reply| reply.status == Status::Approved)
            }
            Expect::Settled => serde_json::from_str::<Reply>(&reply).is_ok_and(|reply| reply.status == Status::Settled),
        }
    }
}

/// The `index`th request to the no-op responder: 200 bytes, spread over 64 subjects as
/// payments are over 64 partitions.
pub fn noop_request(client: &async_nats::Client, index: u32) -> impl Future<Output = bool> + Send + use<> {
    nats_request(client, format!("{NOOP_SUBJECT}.{}", index % 64), Bytes::from_static(&[b'x'; 200]), Expect::AnyReply)
}

/// A responder that answers every request on `bench.noop.*` with a fixed body: what the bus
/// alone can carry with this load generator. It has a connection of its own, as the node
/// has, so a request crosses the same sockets as a payment. Aborted when the handle is
/// dropped.
pub async fn noop_responder(nats_url: &str) -> anyhow::Result<AbortOnDrop> {
    let client = async_nats::connect(nats_url).await?;
    let mut requests = client.subscribe(format!("{NOOP_SUBJECT}.*")).await?;
    client.flush().await?;
    let reply = Bytes::from(vec![b'y'; 200]);
    Ok(AbortOnDrop(tokio::spawn(async move {
        while let Some(message) = requests.next().await {
            if let Some(subject) = message.reply {
                let _ = client.publish(subject, reply.clone()).await;
            }
        }
    })))
}

/// Waits (at most 5 s) until a no-op request from `client` is answered: the responder's
/// subscription is then known to the server and the path is warm, so a measurement's first
/// requests cannot fail for reasons of the start (a CI run once lost one wave of 8 there).
pub async fn until_answered(client: &async_nats::Client) -> anyhow::Result<()> {
    let answered = async {
        while !noop_request(client, 0).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), answered)
        .await
        .map_err(|_| anyhow::anyhow!("the no-op responder did not answer within 5 s"))
}

/// A task aborted when this is dropped, early returns included.
#[derive(Debug)]
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A one-line progress bar on standard error.
pub fn progress(what: &str, done: u32, total: u32) {
    const WIDTH: u64 = 30;
    let filled = WIDTH * u64::from(done.min(total)) / u64::from(total.max(1));
    let (filled, empty) =
        (usize::try_from(filled).unwrap_or_default(), usize::try_from(WIDTH - filled).unwrap_or_default());
    eprint!("\r{what:<58} [{}{}] {done}/{total}", "#".repeat(filled), " ".repeat(empty));
    let _ = std::io::stderr().flush();
}
