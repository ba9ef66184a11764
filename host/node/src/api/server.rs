//! Accepting HTTP/1 connections within stated bounds, so no client (slow, idle or many) can
//! keep the node from answering or from stopping:
//!
//! - at most [`HttpLimits::max_connections`] at once; a connection over the cap is closed at
//!   once, so its file descriptor is freed rather than queued;
//! - a client must send a request's headers within [`HttpLimits::header_read_timeout_ms`] of
//!   connecting or of its previous response (idle keep-alive connections included);
//! - an accept error (out of file descriptors) backs off instead of spinning;
//! - finished connections are reaped as they end;
//! - on shutdown, requests in progress get [`HttpLimits::shutdown_grace_ms`] to finish, then
//!   the remaining connections are closed.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::{ApiState, handle};
use crate::shutdown::{self, Signal};

/// How long the accept loop pauses after an accept error (e.g. no file descriptor left).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The bounds of the HTTP server (`[http]` in `wasmpay.toml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// Connections served at once.
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
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown::requested(&mut shutdown) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        connections.spawn(connection(stream, state.clone(), limits, shutdown.clone(), permit));
                    }
                    Err(_) => tracing::debug!("HTTP connection refused: {} connections open", limits.max_connections),
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

async fn connection(
    stream: TcpStream,
    state: Arc<ApiState>,
    limits: HttpLimits,
    mut shutdown: Signal,
    _permit: OwnedSemaphorePermit,
) {
    let service = service_fn(move |request| handle(state.clone(), request));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms.max(1)))
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = shutdown::requested(&mut shutdown) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
