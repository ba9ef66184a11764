//! The operators' console: a page, its script and its style, compiled into the binary (no
//! build step beyond cargo), and what only it asks for (`GET /v1/payments`, the last answers).
//! The page holds no data: everything it shows comes from the `/v1` API with the admin token
//! the operator types in, kept in the browser tab's session storage. Its script draws with
//! `textContent` only, and the answers forbid any script or style from elsewhere (a
//! Content-Security-Policy of `'self'`) and framing.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;

use super::{ApiState, Body, json_response, problem};

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// What the console's answers allow: its own origin's script, style and calls, nothing else.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                      form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// One of the console's files: `None` (the page), `console.js`, `console.css`.
pub(super) fn file(name: Option<&str>) -> Response<Body> {
    let (content_type, body) = match name {
        None | Some("" | "index.html") => ("text/html; charset=utf-8", INDEX),
        Some("console.js") => ("text/javascript; charset=utf-8", SCRIPT),
        Some("console.css") => ("text/css; charset=utf-8", STYLE),
        Some(_) => return problem(StatusCode::NOT_FOUND, "not_found", "no such file of the console"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("content-security-policy", HeaderValue::from_static(POLICY));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    // A new binary's console is loaded at once, never a cached older one.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /` goes to the console.
pub(super) fn home() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    response.headers_mut().insert(hyper::header::LOCATION, HeaderValue::from_static("/console"));
    response
}

/// The last answers of this node's partitions, newest first (each the reply its client got:
/// refusals included, which the ledger never records).
#[utoipa::path(get, path = "/v1/payments", operation_id = "recent_payments", tag = "payments",
    responses((status = 200, description = "`{\"node\": …, \"payments\": [reply, …]}`: at most 50, newest first, of this node's partitions only", body = Object)),
    security(("admin_token" = [])))]
pub(super) fn recent(state: &ApiState) -> Response<Body> {
    let node = state.cluster.current().node;
    json_response(StatusCode::OK, &json!({"node": node, "payments": state.recent.list()}))
}
