//! A client of running wasmpay nodes: payments over NATS request/reply and calls to the
//! operators' HTTP API. The binary's `pay`, `account` and `demo` commands are built on it, and
//! so are the integration tests. Every call is bounded by [`REQUEST_TIMEOUT`].

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use wasmpay_protocol::ClusterInfo;
use wasmpay_protocol::routing::subjects;

/// How long one request, NATS or HTTP, may take from send to the last byte of the reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A request that got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered in time.
    #[error("no reply from {target} within {after:?}")]
    Timeout {
        /// The subject or URL.
        target: String,
        /// How long it waited.
        after: Duration,
    },
    /// The request could not be sent or its reply not read (no node serving it, connection lost).
    #[error("request to {target} failed: {message}")]
    Failed {
        /// The subject or URL.
        target: String,
        /// Why.
        message: String,
    },
    /// The reply is not what the protocol promises.
    #[error("unreadable reply from {target}: {message}")]
    Unreadable {
        /// The subject or URL.
        target: String,
        /// Why.
        message: String,
    },
}

/// One NATS request; the reply body as text.
pub async fn request(
    client: &async_nats::Client,
    subject: &str,
    body: impl Into<Bytes>,
) -> Result<String, ClientError> {
    request_with_headers(client, subject, async_nats::HeaderMap::new(), body).await
}

/// One NATS request with `headers`; the reply body as text.
pub async fn request_with_headers(
    client: &async_nats::Client,
    subject: &str,
    headers: async_nats::HeaderMap,
    body: impl Into<Bytes>,
) -> Result<String, ClientError> {
    let target = || subject.to_owned();
    let mut headers = headers;
    // The caller's span is the parent of what the node does for the request.
    crate::traces::context::inject(&tracing::Span::current(), &mut headers);
    let sent = client.request_with_headers(subject.to_owned(), headers, body.into());
    let message = tokio::time::timeout(REQUEST_TIMEOUT, sent)
        .await
        .map_err(|_| ClientError::Timeout { target: target(), after: REQUEST_TIMEOUT })?
        .map_err(|error| ClientError::Failed { target: target(), message: error.to_string() })?;
    Ok(String::from_utf8_lossy(&message.payload).into_owned())
}

/// Asks the cluster for its partition count and hash, so payments can go straight to their
/// partition's subject.
pub async fn cluster_info(client: &async_nats::Client) -> Result<ClusterInfo, ClientError> {
    let reply = request(client, subjects::CLUSTER_INFO, Bytes::new()).await?;
    serde_json::from_str(&reply).map_err(|error| ClientError::Unreadable {
        target: subjects::CLUSTER_INFO.to_owned(),
        message: error.to_string(),
    })
}

/// NATS server URLs (one, or several separated by commas) as they may be shown: a user,
/// password or token (`nats://user:pass@host`, `nats://token@host`) becomes `***`.
pub fn shown_nats(urls: &str) -> String {
    urls.split(',')
        .map(|url| match url.trim().split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => url.trim().to_owned(),
            },
            None => url.trim().to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// How long [`pay`] keeps retrying one payment: longer than a partition takes to move after
/// its owner died (a lease TTL, 3 s by default, and a round).
pub const PAY_RETRY_BOUND: Duration = Duration::from_secs(30);
/// The pause between two attempts of [`pay`].
const PAY_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Pays as docs/protocol.md tells a client to: sends `body` on `subject` and, while the answer
/// is not final, sends the same bytes (the same id) again: no responder (the partition is
/// between owners), no reply in time, or a reply with status `error` (nothing recorded, e.g.
/// `unavailable`). The ledger makes the effect exactly-once, so a retry of a payment that was
/// posted gets its stored reply.
/// Returns the final reply and how many attempts were retried; gives up after
/// [`PAY_RETRY_BOUND`] with the last error.
pub async fn pay(client: &async_nats::Client, subject: &str, body: Bytes) -> Result<(String, u32), ClientError> {
    let started = std::time::Instant::now();
    let mut retries = 0;
    loop {
        let failure = match request(client, subject, body.clone()).await {
            Ok(reply) => match serde_json::from_str::<wasmpay_protocol::Reply>(&reply) {
                Ok(parsed) if parsed.status == wasmpay_protocol::Status::Error => {
                    ClientError::Failed { target: subject.to_owned(), message: parsed.message }
                }
                _ => return Ok((reply, retries)),
            },
            Err(error) => error,
        };
        if started.elapsed() + PAY_RETRY_PAUSE >= PAY_RETRY_BOUND {
            return Err(failure);
        }
        retries += 1;
        tokio::time::sleep(PAY_RETRY_PAUSE).await;
    }
}

/// One HTTP/1 call with a bearer token and an optional JSON body; the status and body text.
/// `url` is `http://host:port/path`: the operators' API speaks plain HTTP/1 on a private
/// address, so one connection per call is all a command line needs.
pub async fn http_call(
    method: Method,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> Result<(StatusCode, String), ClientError> {
    http_call_within(method, url, token, body, REQUEST_TIMEOUT, None).await
}

/// [`http_call`] bounded by `limit` instead of [`REQUEST_TIMEOUT`], for a call the node itself
/// bounds by more (a plugin push compiles, checks, stores and waits for the switch), sent
/// with an `Idempotency-Key` if given (so that sending it again changes nothing more).
pub async fn http_call_within(
    method: Method,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
    limit: Duration,
    idempotency_key: Option<&str>,
) -> Result<(StatusCode, String), ClientError> {
    let failed =
        |error: &dyn std::fmt::Display| ClientError::Failed { target: url.to_owned(), message: error.to_string() };
    let uri: Uri = url.parse().map_err(|error| failed(&error))?;
    let authority =
        uri.authority().filter(|_| uri.scheme_str() == Some("http")).ok_or_else(|| failed(&"not an http:// URL"))?;
    let mut request = hyper::Request::builder();
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let request = request
        .method(method)
        .uri(uri.path_and_query().map_or("/", |path| path.as_str()))
        .header(HOST, authority.as_str())
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.map(|value| value.to_string()).unwrap_or_default())))
        .map_err(|error| failed(&error))?;
    let (status, bytes) = send_http(url, authority.as_str(), request, limit).await?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Sends `request` to `authority` (`host:port`) over one plain HTTP/1 connection, within
/// `limit`; its status and body. `target` names the call in errors.
pub async fn send_http(
    target: &str,
    authority: &str,
    request: hyper::Request<Full<Bytes>>,
    limit: Duration,
) -> Result<(StatusCode, Bytes), ClientError> {
    let failed =
        |error: &dyn std::fmt::Display| ClientError::Failed { target: target.to_owned(), message: error.to_string() };
    let exchange = async {
        let stream = TcpStream::connect(authority).await.map_err(|error| failed(&error))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|error| failed(&error))?;
        let response = async move {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            // Without a sender the connection closes once idle, which ends the join below.
            drop(sender);
            Ok::<_, hyper::Error>((status, bytes))
        };
        let (response, _closed) = tokio::join!(response, connection);
        response.map_err(|error| failed(&error))
    };
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| ClientError::Timeout { target: target.to_owned(), after: limit })?
}

#[cfg(test)]
mod tests {
    #[test]
    fn nats_credentials_are_never_shown() {
        assert_eq!(super::shown_nats("nats://tok3n@a:4222, nats://u:p@b:4222"), "nats://***@a:4222,nats://***@b:4222");
        assert_eq!(super::shown_nats("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
