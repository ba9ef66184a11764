//! Accepting HTTP/1 connections within stated bounds, so no client (slow, idle or many) can
//! keep the node from answering (health probes and operators included) or from stopping:
//!
//! - at most [`HttpLimits::max_connections`] at once. At the cap, a new connection takes the
//!   place of the one that has been idle longest (no request in progress: it has not sent a
//!   complete request header yet, or it waits between keep-alive requests), which is closed;
//!   only if every connection is inside a request is the new one closed at once. So idle
//!   connections, however many and however often renewed, cannot lock out a probe or an
//!   operator: their new connection sends its request at once and is the newest idle one, the
//!   last to be closed. (Before, the 257th connection was refused while 256 idle ones were
//!   renewed within the header timeout, and `/healthz` and `/readyz` were refused with it.)
//!   Anonymous clients cannot hold a connection inside a request either: a `/v1` request
//!   without the token is answered before its body is read, and the open paths read none;
//! - a client must send a request's headers within [`HttpLimits::header_read_timeout_ms`] of
//!   connecting or of its previous response (idle keep-alive connections included);
//! - an accept error (out of file descriptors) backs off instead of spinning;
//! - finished connections are reaped as they end;
//! - on shutdown, requests in progress get [`HttpLimits::shutdown_grace_ms`] to finish, then
//!   the remaining connections are closed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::{ApiState, handle};
use crate::shutdown::{self, Signal};

/// How long the accept loop pauses after an accept error (e.g. no file descriptor left).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The bounds of the HTTP server (`[http]` in `wasmpay.toml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// Connections open at once; at the cap a new one replaces the one idle longest.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, in milliseconds.
    pub header_read_timeout_ms: u64,
    /// Time requests in progress get to finish once the node stops, in milliseconds.
    pub shutdown_grace_ms: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits { max_connections: 256, header_read_timeout_ms: 10_000, shutdown_grace_ms: 5_000 }
    }
}

/// Serves HTTP/1 on `listener` until `shutdown`, then lets requests in progress finish within
/// the grace period.
pub async fn serve(listener: TcpListener, state: Arc<ApiState>, limits: HttpLimits, mut shutdown: Signal) {
    let open = Connections::default();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown::requested(&mut shutdown) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match open.admit(limits.max_connections.max(1)) {
                    Some(slot) => {
                        connections.spawn(connection(stream, state.clone(), limits, shutdown.clone(), slot));
                    }
                    None => tracing::debug!(
                        "HTTP connection refused: all {} connections are inside a request",
                        limits.max_connections
                    ),
                },
                Err(error) => {
                    tracing::warn!(%error, "cannot accept HTTP connections; retrying shortly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    let finished = tokio::time::timeout(Duration::from_millis(limits.shutdown_grace_ms), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(open = connections.len(), "closing HTTP connections still open after the grace period");
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// The open connections, each with since when it has been idle (`None`: inside a request).
#[derive(Clone, Debug, Default)]
struct Connections(Arc<Mutex<Registry>>);

#[derive(Debug, Default)]
struct Registry {
    next: u64,
    open: BTreeMap<u64, Arc<Slot>>,
}

/// One connection's place among the open ones.
#[derive(Debug)]
struct Slot {
    id: u64,
    idle_since: Mutex<Option<Instant>>,
    /// Told when a newer connection takes this one's place.
    evicted: Notify,
    connections: Connections,
}

impl Connections {
    /// A place for a new connection: a free one, or the place of the connection idle longest
    /// (told to close); `None` when every connection is inside a request.
    fn admit(&self, max_connections: usize) -> Option<Arc<Slot>> {
        let mut registry = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if registry.open.len() >= max_connections {
            let idlest = registry
                .open
                .values()
                .filter_map(|slot| Some((slot.idle_since()?, slot.id)))
                .min()
                .map(|(_, id)| id)?;
            if let Some(evicted) = registry.open.remove(&idlest) {
                evicted.evicted.notify_one();
            }
        }
        let id = registry.next;
        registry.next += 1;
        let slot = Arc::new(Slot {
            id,
            idle_since: Mutex::new(Some(Instant::now())),
            evicted: Notify::new(),
            connections: self.clone(),
        });
        registry.open.insert(id, slot.clone());
        Some(slot)
    }
}

impl Slot {
    fn idle_since(&self) -> Option<Instant> {
        *self.idle_since.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request's headers arrived (`true`), or its answer was handed to the connection.
    fn set_busy(&self, busy: bool) {
        *self.idle_since.lock().unwrap_or_else(PoisonError::into_inner) = (!busy).then(Instant::now);
    }

    /// Frees the place when the connection ends (an evicted one's was taken already; ids are
    /// never reused).
    fn leave(&self) {
        self.connections.0.lock().unwrap_or_else(PoisonError::into_inner).open.remove(&self.id);
    }
}

/// Leaves a connection's place when its task ends, however it ends: a handler that panicked
/// would otherwise keep a place, marked inside a request, for good.
struct Leave(Arc<Slot>);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.leave();
    }
}

async fn connection(
    stream: TcpStream,
    state: Arc<ApiState>,
    limits: HttpLimits,
    mut shutdown: Signal,
    slot: Arc<Slot>,
) {
    let _leave = Leave(slot.clone());
    let tracked = slot.clone();
    let service = service_fn(move |request| {
        let (state, slot) = (state.clone(), tracked.clone());
        async move {
            slot.set_busy(true);
            let answered = handle(state, request).await;
            slot.set_busy(false);
            answered
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms.max(1)))
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        // It was idle when chosen: dropping it closes the socket. (A request whose headers
        // arrived in that very instant is cut; its client sees the connection reset.)
        () = slot.evicted.notified() => {}
        () = shutdown::requested(&mut shutdown) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
