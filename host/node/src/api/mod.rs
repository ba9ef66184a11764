//! The operators' HTTP API (hyper): health, readiness, metrics, the console's files, and
//! under `/v1` (bearer token required) accounts, deposits, payments, plugins and the cluster.
//!
//! Layout: this module routes and answers; [`server`] accepts connections within bounds
//! (how many, how long); `incoming` reads what a request says (path, token, JSON body);
//! [`readiness`] decides whether the node is ready from what `/readyz` observed; `console`
//! serves the operators' console.

mod assets;
mod clients;
mod console;
mod incoming;
pub mod openapi;
mod plugins;
pub mod readiness;
pub mod server;

pub use server::{HttpLimits, serve};

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

use crate::bus::Intake;
use crate::clock;
use crate::cluster::Views;
use crate::metrics::Metrics;
use crate::payments::RecentPayments;
use crate::plugins::store::PluginStore;
use wasmpay_ledger::{Account, Deposited, Ledger, LedgerError, MAX_PAGE, NewAccount, Page};
use wasmpay_plugin_host::{PluginHost, PluginSource, Sha256};
use wasmpay_protocol::money::{MAX_PAYMENT_MINOR_UNITS, MinorUnits, Unit};
use wasmpay_protocol::routing::{AccountId, Partitioner};
use wasmpay_protocol::{ID_RULE, PaymentId};

type Body = Full<Bytes>;

/// The plugin side of a node, as the API needs it.
#[derive(Debug)]
pub struct PluginParts<'a> {
    /// The node's plugins.
    pub host: Arc<PluginHost>,
    /// The cluster's plugin store.
    pub store: PluginStore,
    /// Where the node's plugins came from at start (the built-in components among them).
    pub sources: &'a [PluginSource],
    /// A development node: an upload may replace a stored version ([`NodeSettings::development`](crate::node::NodeSettings::development)).
    pub development: bool,
}

/// What the handlers share.
#[derive(Debug)]
pub struct ApiState {
    nats: async_nats::Client,
    /// How accounts map to partitions: a client's payment is forwarded to its account's subject.
    partitioner: Partitioner,
    ledger: Ledger,
    metrics: Arc<Metrics>,
    /// The last answers of this node's partitions.
    recent: Arc<RecentPayments>,
    plugins: Arc<PluginHost>,
    plugin_store: PluginStore,
    /// One plugin upload at a time: an upload is held in memory (up to 43 MiB of base64) and
    /// checked (compiled, fixtures run), so concurrent ones would only compete for memory and
    /// both cores.
    uploads: tokio::sync::Semaphore,
    /// The built-in components by SHA-256, so that a built-in version can enter the store.
    builtins: std::collections::BTreeMap<Sha256, &'static [u8]>,
    /// Whether an upload may replace a stored version in place.
    development: bool,
    cluster: Views,
    /// The bus's partitions, whose confirmed subscriptions readiness checks.
    intake: Intake,
    admin_token: Option<String>,
}

impl ApiState {
    /// State over a node's parts.
    pub fn new(
        (nats, partitioner): (async_nats::Client, Partitioner),
        ledger: Ledger,
        (metrics, recent): (Arc<Metrics>, Arc<RecentPayments>),
        plugins: PluginParts<'_>,
        (cluster, intake): (Views, Intake),
        admin_token: Option<String>,
    ) -> ApiState {
        let admin_token = admin_token.filter(|token| !token.is_empty());
        let uploads = tokio::sync::Semaphore::new(1);
        let PluginParts { host: plugins, store: plugin_store, sources, development } = plugins;
        let builtins = sources
            .iter()
            .filter_map(|source| match source {
                PluginSource::Builtin(_, bytes, _) => Some((Sha256::of(bytes), *bytes)),
                PluginSource::File(_) | PluginSource::Development(_) => None,
            })
            .collect();
        ApiState {
            nats,
            partitioner,
            ledger,
            metrics,
            recent,
            plugins,
            plugin_store,
            uploads,
            builtins,
            development,
            cluster,
            intake,
            admin_token,
        }
    }
}

tokio::task_local! {
    /// The id of the request being answered, in its error bodies and its `X-Request-Id`.
    static REQUEST_ID: String;
}

/// Numbers this node's requests; with the process id, an id an operator can find in the logs.
static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Answers one request, under a request id every answer carries (`X-Request-Id`, and
/// `request_id` in an error's body) and the log line of the call names.
async fn handle(state: Arc<ApiState>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let number = REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("req-{:x}-{number:x}", std::process::id());
    // Who called what, and how it ended: every call of the API is an operator's or a client's
    // act on the ledger or the cluster, so each is logged (probes and metrics at debug only).
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let caller = caller(state.admin_token.as_deref(), &request);
    let started = std::time::Instant::now();
    let metrics = state.metrics.clone();
    // A client's trace context makes its span the parent of what the node does for it.
    // Probes and scrapes are not worth a trace.
    // A client key's id is recorded on the span once the route has checked it.
    let span = if path.starts_with("/v1/") {
        tracing::info_span!("http request", request = %id, %method, client_key = tracing::field::Empty)
    } else {
        tracing::debug_span!("http request", request = %id, %method, client_key = tracing::field::Empty)
    };
    crate::traces::adopt_http(&span, request.headers());
    let routed = REQUEST_ID.scope(id.clone(), route(state, request)).instrument(span.clone()).await;
    let (template, mut response) = routed;
    let (status, elapsed) = (response.status().as_u16(), started.elapsed());
    metrics.http_answered(template, &method, status, elapsed);
    let elapsed_ms = elapsed.as_millis();
    // Inside the request's span: the line names the client key that called, if one did.
    span.in_scope(|| {
        if path.starts_with("/v1/") {
            tracing::info!(%path, caller, status, elapsed_ms, "api call");
        } else {
            tracing::debug!(%path, caller, status, elapsed_ms, "api call");
        }
    });
    if let Ok(value) = hyper::header::HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    Ok(response)
}

/// Who a request says it is: `admin` (the admin token), `client` (a client key, checked by the
/// route), or `anonymous`. Never the secret itself.
fn caller(admin_token: Option<&str>, request: &Request<Incoming>) -> &'static str {
    if incoming::authorized(admin_token, request) {
        return "admin";
    }
    let bearer = request.headers().get(hyper::header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    match bearer {
        Some(value) if value.contains("wpk_") => "client",
        Some(_) => "wrong token",
        None => "anonymous",
    }
}

/// Answers `request`, with the template of the route that answered it (`/v1/accounts/{id}`):
/// the metrics' label, never the path itself, which a caller chooses.
async fn route(state: Arc<ApiState>, request: Request<Incoming>) -> (&'static str, Response<Body>) {
    let method = request.method().clone();
    let Some(segments) = incoming::path_segments(request.uri().path()) else {
        let response =
            problem(StatusCode::BAD_REQUEST, "invalid_request", "the path is not valid percent-encoded UTF-8");
        return ("unmatched", response);
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let key = match incoming::idempotency_key(&request) {
        Ok(key) => key,
        Err(message) => return ("unmatched", problem(StatusCode::BAD_REQUEST, "invalid_request", message)),
    };
    let key = key.as_deref();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => ("/healthz", healthz()),
        (&Method::GET, ["readyz"]) => ("/readyz", readiness(&state).await),
        (&Method::GET, ["metrics"]) => ("/metrics", metrics(&state)),
        (&Method::GET, ["v1", "openapi.json"]) => ("/v1/openapi.json", openapi::serve()),
        (&Method::GET, [""]) => ("/", console::home()),
        (&Method::GET, ["console"]) => ("/console", console::file(None)),
        (&Method::GET, ["console", name]) => ("/console/{file}", console::file(Some(name))),
        // A client key reaches the payment routes and nothing else. Not settlements: they run
        // no plugin and charge no fee, and a key is not scoped to accounts, so a key that could
        // settle could move any customer's money anywhere.
        (&Method::POST, ["v1", "payments" | "fx", ..])
            if !incoming::authorized(state.admin_token.as_deref(), &request) =>
        {
            let Some((template, operation)) = clients::Operation::of(&segments[1..]) else {
                return ("unmatched", problem(StatusCode::NOT_FOUND, "not_found", "no such route"));
            };
            let response = match clients::client(&state, &request).await {
                Ok(client) => match incoming::read_json(request).await {
                    Ok(body) => {
                        let caller = clients::Caller { idempotency_key: key, client: client.as_ref() };
                        clients::dispatch(&state, operation, caller, body).await
                    }
                    Err(response) => response,
                },
                Err(response) => response,
            };
            (template, response)
        }
        (_, ["v1", ..]) if !incoming::authorized(state.admin_token.as_deref(), &request) => {
            let message = "send `Authorization: Bearer <WASMPAY_ADMIN_TOKEN>`";
            ("unauthorized", problem(StatusCode::UNAUTHORIZED, "unauthorized", message))
        }
        (&Method::POST, ["v1", "payments" | "settlements" | "fx", ..]) => {
            let Some((template, operation)) = clients::Operation::of(&segments[1..]) else {
                return ("unmatched", problem(StatusCode::NOT_FOUND, "not_found", "no such route"));
            };
            let response = match incoming::read_json(request).await {
                Ok(body) => {
                    let caller = clients::Caller { idempotency_key: key, client: None };
                    clients::dispatch(&state, operation, caller, body).await
                }
                Err(response) => response,
            };
            (template, response)
        }
        (&Method::POST, ["v1", "client-keys"]) => (
            "/v1/client-keys",
            match incoming::read_json(request).await {
                Ok(body) => clients::issue(&state, body).await,
                Err(response) => response,
            },
        ),
        (&Method::GET, ["v1", "client-keys"]) => ("/v1/client-keys", clients::list(&state).await),
        (&Method::DELETE, ["v1", "client-keys", id]) => ("/v1/client-keys/{id}", clients::revoke(&state, id).await),
        (&Method::POST, ["v1", "assets"]) => (
            "/v1/assets",
            match incoming::read_json(request).await {
                Ok(body) => assets::register(&state, body).await,
                Err(response) => response,
            },
        ),
        (&Method::GET, ["v1", "assets"]) => ("/v1/assets", assets::list(&state).await),
        (&Method::POST, ["v1", "accounts"]) => (
            "/v1/accounts",
            match incoming::read_json(request).await {
                Ok(body) => open_account(&state, body).await,
                Err(response) => response,
            },
        ),
        (&Method::GET, ["v1", "accounts", id]) => ("/v1/accounts/{id}", show_account(&state, id).await),
        (&Method::GET, ["v1", "accounts", id, "entries"]) => {
            ("/v1/accounts/{id}/entries", entries(&state, id, request.uri().query()).await)
        }
        (&Method::GET, ["v1", "accounts", id, "payments"]) => {
            ("/v1/accounts/{id}/payments", payments(&state, id, request.uri().query()).await)
        }
        (&Method::GET, ["v1", "accounts", id, "holds"]) => {
            ("/v1/accounts/{id}/holds", holds(&state, id, request.uri().query()).await)
        }
        (&Method::POST, ["v1", "accounts", id, "deposits"]) => {
            let id = (*id).to_owned();
            (
                "/v1/accounts/{id}/deposits",
                match incoming::read_json(request).await {
                    Ok(body) => deposit(&state, &id, body).await,
                    Err(response) => response,
                },
            )
        }
        (&Method::GET, ["v1", "payments"]) => ("/v1/payments", console::recent(&state)),
        (&Method::GET, ["v1", "payments", id]) => ("/v1/payments/{id}", show_payment(&state, id).await),
        (&Method::GET, ["v1", "plugins"]) => ("/v1/plugins", plugins::list(&state)),
        (_, ["v1", "plugins", name, ..]) if !wasmpay_plugin_host::manifest::valid_plugin_name(name) => {
            let message = "a plugin name is 1-32 characters of a-z 0-9 -";
            ("unmatched", problem(StatusCode::NOT_FOUND, "unknown_plugin", message))
        }
        (&Method::PUT, ["v1", "plugins", name]) => (
            "/v1/plugins/{name}",
            match state.uploads.try_acquire() {
                Err(_) => problem(StatusCode::TOO_MANY_REQUESTS, "busy", "another plugin upload is in progress; retry"),
                Ok(_permit) => {
                    let name = (*name).to_owned();
                    match incoming::read_json_up_to(request, plugins::MAX_UPLOAD_BYTES).await {
                        Ok(body) => plugins::upload(&state, &name, key, body).await,
                        Err(response) => response,
                    }
                }
            },
        ),
        (&Method::POST, ["v1", "plugins", name, "activate"]) => {
            let name = (*name).to_owned();
            (
                "/v1/plugins/{name}/activate",
                match incoming::read_json(request).await {
                    Ok(body) => plugins::activate(&state, &name, key, body).await,
                    Err(response) => response,
                },
            )
        }
        (&Method::POST, ["v1", "plugins", name, "rollback"]) => {
            ("/v1/plugins/{name}/rollback", plugins::rollback(&state, name, key).await)
        }
        (&Method::DELETE, ["v1", "plugins", name]) => ("/v1/plugins/{name}", plugins::remove(&state, name, key).await),
        (&Method::GET, ["v1", "cluster"]) => ("/v1/cluster", cluster(&state)),
        _ => ("unmatched", problem(StatusCode::NOT_FOUND, "not_found", "no such route")),
    }
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations", responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
fn healthz() -> Response<Body> {
    text(StatusCode::OK, "ok\n")
}

/// The node's metrics, in the OpenMetrics text format (which Prometheus scrapes natively).
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses((status = 200, description = "The OpenMetrics text format; docs/operators.md lists every metric", body = String,
        content_type = "application/openmetrics-text")))]
fn metrics(state: &ApiState) -> Response<Body> {
    response(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", state.metrics.render())
}

/// The cluster as this node sees it: members, partitions, leases.
#[utoipa::path(get, path = "/v1/cluster", operation_id = "show_cluster", tag = "operations",
    responses((status = 200, description = "The node's view of the cluster", body = Object)), security(("admin_token" = [])))]
fn cluster(state: &ApiState) -> Response<Body> {
    json_response(StatusCode::OK, &state.cluster.current())
}

/// What `POST /v1/accounts` takes.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct OpenAccount {
    /// Not starting with `_` (the ledger's own accounts).
    #[schema(value_type = AccountId)]
    id: String,
    /// An ISO 4217 currency or a registered asset.
    #[schema(value_type = Unit)]
    currency: String,
    /// The lowest balance allowed: 0, or negative for a credit line.
    #[serde(default)]
    #[schema(maximum = 0)]
    floor: i64,
}

/// Opens a customer account; the same terms again return it (a retry).
#[utoipa::path(post, path = "/v1/accounts", operation_id = "open_account", tag = "accounts", request_body = OpenAccount,
    responses((status = 201, description = "Opened (or already open with these terms), as `GET` shows it", body = AccountView),
              (status = 400, description = "Not a valid id, unit or floor; an unregistered asset (`unknown_asset`)", body = Problem),
              (status = 409, description = "Open with other terms", body = Problem)),
    security(("admin_token" = [])))]
async fn open_account(state: &ApiState, body: serde_json::Value) -> Response<Body> {
    let request: OpenAccount = match serde_json::from_value(body) {
        Ok(request) => request,
        Err(error) => return problem(StatusCode::BAD_REQUEST, "invalid_request", &error.to_string()),
    };
    let id = match AccountId::new(request.id) {
        Ok(id) if !id.is_system() => id,
        Ok(_) => return problem(StatusCode::BAD_REQUEST, "invalid_request", "ids starting with `_` are reserved"),
        Err(error) => return problem(StatusCode::BAD_REQUEST, "invalid_request", &error.to_string()),
    };
    let currency: Unit = match request.currency.parse() {
        Ok(currency) => currency,
        Err(error) => return problem_at(StatusCode::BAD_REQUEST, "invalid_request", &format!("{error}"), "currency"),
    };
    // A floor is a (negated) amount: bounded like one, so no balance can be driven to the edge
    // of the 64-bit range by a credit line.
    let lowest = -MAX_PAYMENT_MINOR_UNITS.cast_signed();
    if !(lowest..=0).contains(&request.floor) {
        let message = format!("a floor must be within {lowest} ..= 0 (0, or a negative credit line)");
        return problem(StatusCode::BAD_REQUEST, "invalid_request", &message);
    }
    let new = NewAccount { id, currency, floor: MinorUnits(request.floor) };
    match state.ledger.open_account(&new, clock::ledger_ms()).await {
        Ok(account) => match state.ledger.exponent_of(account.currency).await {
            Ok(exponent) => json_response(StatusCode::CREATED, &AccountView::new(account, exponent)),
            Err(other) => ledger_error(&other),
        },
        Err(LedgerError::AccountExists(id)) => {
            problem(StatusCode::CONFLICT, "conflict", &format!("account `{id}` exists with other terms"))
        }
        Err(LedgerError::UnknownAsset(code)) => problem_at(
            StatusCode::BAD_REQUEST,
            "unknown_asset",
            &format!("asset `{code}` is not registered: POST /v1/assets first"),
            "currency",
        ),
        Err(other) => ledger_error(&other),
    }
}

/// An account: posted, held and available, and its unit's exponent.
#[utoipa::path(get, path = "/v1/accounts/{id}", operation_id = "show_account", tag = "accounts", params(("id" = String, Path, description = "The account")),
    responses((status = 200, description = "The account", body = AccountView),
              (status = 404, description = "No such account", body = Problem)),
    security(("admin_token" = [])))]
async fn show_account(state: &ApiState, id: &str) -> Response<Body> {
    let Ok(id) = AccountId::new(id) else {
        return problem(StatusCode::NOT_FOUND, "unknown_account", "no such account");
    };
    let account = match state.ledger.account(&id).await {
        Ok(Some(account)) => account,
        Ok(None) => return problem(StatusCode::NOT_FOUND, "unknown_account", "no such account"),
        Err(other) => return ledger_error(&other),
    };
    match state.ledger.exponent_of(account.currency).await {
        Ok(exponent) => json_response(StatusCode::OK, &AccountView::new(account, exponent)),
        Err(other) => ledger_error(&other),
    }
}

/// An account as the API shows it: what is posted, what its open authorizations hold, what
/// is available to spend (posted − held; the floor applies to it), and the exponent of its
/// unit, so a client can show `12.50 EUR` or `3 AAPL` without a table of its own.
#[derive(Serialize, utoipa::ToSchema)]
struct AccountView {
    #[serde(flatten)]
    account: Account,
    /// `balance − held`, minor units.
    available: i64,
    /// Digits after the decimal point of its unit.
    exponent: Option<u8>,
}

impl AccountView {
    fn new(account: Account, exponent: Option<u8>) -> AccountView {
        let available = account.balance.0.saturating_sub(account.held.0);
        AccountView { account, available, exponent }
    }
}

/// The page a statement's query asks for: `limit`, `after`, `from_ms`, `to_ms`.
fn statement_page(parameters: &std::collections::BTreeMap<String, String>) -> Result<Page, String> {
    let mut page = Page::default();
    for (name, value) in parameters {
        let number =
            |what: &str| value.parse::<i64>().map_err(|_| format!("`{what}` must be an integer, not `{value}`"));
        match name.as_str() {
            "limit" => {
                page.limit = value
                    .parse()
                    .ok()
                    .filter(|limit| (1..=MAX_PAGE).contains(limit))
                    .ok_or_else(|| format!("`limit` must be within 1 ..= {MAX_PAGE}, not `{value}`"))?;
            }
            "after" => page.after = Some(value.clone()),
            "from_ms" => page.from_ms = Some(number("from_ms")?),
            "to_ms" => page.to_ms = Some(number("to_ms")?),
            other => return Err(format!("unknown parameter `{other}`; expected limit, after, from_ms, to_ms")),
        }
    }
    Ok(page)
}

/// A page of the account's entries, oldest first.
#[utoipa::path(get, path = "/v1/accounts/{id}/entries", operation_id = "list_entries", tag = "statements",
    params(("id" = String, Path, description = "The account"),
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Rows, default 50"),
           ("after" = Option<String>, Query, description = "The `next` of the page before"),
           ("from_ms" = Option<i64>, Query, description = "Recorded at or after (Unix ms)"),
           ("to_ms" = Option<i64>, Query, description = "Recorded before (Unix ms)")),
    responses((status = 200, description = "A page", body = wasmpay_ledger::Entries),
              (status = 400, description = "A bad parameter or cursor", body = Problem),
              (status = 404, description = "No such account", body = Problem)),
    security(("admin_token" = [])))]
async fn entries(state: &ApiState, id: &str, query: Option<&str>) -> Response<Body> {
    statement(state, id, "entries", query).await
}

/// A page of the payments that posted on the account, in the order they posted.
#[utoipa::path(get, path = "/v1/accounts/{id}/payments", operation_id = "list_account_payments", tag = "statements",
    params(("id" = String, Path, description = "The account"),
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Rows, default 50"),
           ("after" = Option<String>, Query, description = "The `next` of the page before"),
           ("from_ms" = Option<i64>, Query, description = "Recorded at or after (Unix ms)"),
           ("to_ms" = Option<i64>, Query, description = "Recorded before (Unix ms)")),
    responses((status = 200, description = "A page", body = wasmpay_ledger::Payments),
              (status = 400, description = "A bad parameter or cursor", body = Problem),
              (status = 404, description = "No such account", body = Problem)),
    security(("admin_token" = [])))]
async fn payments(state: &ApiState, id: &str, query: Option<&str>) -> Response<Body> {
    statement(state, id, "payments", query).await
}

/// A page of the account's open authorizations, the soonest to expire first.
#[utoipa::path(get, path = "/v1/accounts/{id}/holds", operation_id = "list_open_holds", tag = "statements",
    params(("id" = String, Path, description = "The account"),
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Rows, default 50"),
           ("after" = Option<String>, Query, description = "The `next` of the page before"),
           ("from_ms" = Option<i64>, Query, description = "Expiring at or after (Unix ms)"),
           ("to_ms" = Option<i64>, Query, description = "Expiring before (Unix ms)")),
    responses((status = 200, description = "A page", body = wasmpay_ledger::OpenHolds),
              (status = 400, description = "A bad parameter or cursor", body = Problem),
              (status = 404, description = "No such account", body = Problem)),
    security(("admin_token" = [])))]
async fn holds(state: &ApiState, id: &str, query: Option<&str>) -> Response<Body> {
    statement(state, id, "holds", query).await
}

/// A page of an account's entries, payments or open holds, as its `query` asks.
async fn statement(state: &ApiState, id: &str, listing: &str, query: Option<&str>) -> Response<Body> {
    let page = &match incoming::query_parameters(query).as_ref().map(statement_page) {
        Some(Ok(page)) => page,
        Some(Err(message)) => return problem(StatusCode::BAD_REQUEST, "invalid_request", &message),
        None => {
            return problem(StatusCode::BAD_REQUEST, "invalid_request", "the query is not valid or repeats a name");
        }
    };
    let account = match AccountId::new(id) {
        Ok(id) => match state.ledger.account(&id).await {
            Ok(Some(_)) => id,
            Ok(None) => return problem(StatusCode::NOT_FOUND, "unknown_account", "no such account"),
            Err(other) => return ledger_error(&other),
        },
        Err(_) => return problem(StatusCode::NOT_FOUND, "unknown_account", "no such account"),
    };
    let listed = match listing {
        "entries" => state.ledger.entries_of(&account, page).await.map(serde_json::to_value),
        "holds" => state.ledger.holds_of(&account, page).await.map(serde_json::to_value),
        _ => state.ledger.payments_of(&account, page).await.map(serde_json::to_value),
    };
    match listed {
        Ok(Ok(body)) => json_response(StatusCode::OK, &body),
        Ok(Err(error)) => problem(StatusCode::INTERNAL_SERVER_ERROR, "internal", &error.to_string()),
        Err(LedgerError::Invalid(message)) => problem(StatusCode::BAD_REQUEST, "invalid_request", &message),
        Err(other) => ledger_error(&other),
    }
}

/// What `POST /v1/accounts/{id}/deposits` takes.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DepositRequest {
    /// Its idempotency key (one id space with payments).
    #[schema(value_type = PaymentId)]
    id: String,
    /// Minor units.
    #[schema(schema_with = wasmpay_protocol::openapi::amount_schema)]
    amount: u64,
}

/// Funding from the unit's external account. The id makes it idempotent like a payment.
#[utoipa::path(post, path = "/v1/accounts/{id}/deposits", operation_id = "deposit", tag = "accounts",
    params(("id" = String, Path, description = "The account")), request_body = DepositRequest,
    responses((status = 201, description = "Posted now", body = wasmpay_ledger::DepositReceipt),
              (status = 200, description = "A replay of the same deposit", body = wasmpay_ledger::DepositReceipt),
              (status = 400, description = "Not a valid id or amount", body = Problem),
              (status = 404, description = "No such account", body = Problem),
              (status = 409, description = "The id was used for another transfer", body = Problem)),
    security(("admin_token" = [])))]
async fn deposit(state: &ApiState, account: &str, body: serde_json::Value) -> Response<Body> {
    let request: DepositRequest = match serde_json::from_value(body) {
        Ok(request) => request,
        Err(error) => return problem(StatusCode::BAD_REQUEST, "invalid_request", &error.to_string()),
    };
    let Some(amount) = MinorUnits::payment_amount(request.amount) else {
        return problem(StatusCode::BAD_REQUEST, "amount_out_of_range", "amount must be within 1 ..= 2^53 - 1");
    };
    let Ok(id) = PaymentId::new(request.id) else {
        return problem(StatusCode::BAD_REQUEST, "invalid_request", ID_RULE);
    };
    let account = match AccountId::new(account).ok().filter(|id| !id.is_system()) {
        Some(id) => match state.ledger.account(&id).await {
            Ok(Some(account)) => account,
            Ok(None) => return problem(StatusCode::NOT_FOUND, "unknown_account", "no such account"),
            Err(other) => return ledger_error(&other),
        },
        None => return problem(StatusCode::NOT_FOUND, "unknown_account", "no such account"),
    };
    match state.ledger.deposit(&id, &account, amount, clock::ledger_ms()).await {
        Ok(Deposited::New(receipt)) => raw_json(StatusCode::CREATED, receipt),
        Ok(Deposited::Replayed(receipt)) => raw_json(StatusCode::OK, receipt),
        Ok(Deposited::Conflict) => problem(StatusCode::CONFLICT, "conflict", "this id was used for another transfer"),
        Err(other) => ledger_error(&other),
    }
}

/// A payment's record: what it was, how it was decided (its plugins, its reply), its hold, its
/// history (captures, voids, refunds) and its entries.
#[utoipa::path(get, path = "/v1/payments/{id}", operation_id = "show_payment", tag = "payments", params(("id" = String, Path, description = "The payment, deposit or operation")),
    responses((status = 200, description = "Its record", body = wasmpay_ledger::StoredPayment),
              (status = 404, description = "No such payment", body = Problem)),
    security(("admin_token" = [])))]
async fn show_payment(state: &ApiState, id: &str) -> Response<Body> {
    match state.ledger.payment(id).await {
        Ok(Some(payment)) => json_response(StatusCode::OK, &payment),
        Ok(None) => problem(StatusCode::NOT_FOUND, "not_found", "no payment with this id"),
        Err(other) => ledger_error(&other),
    }
}

/// Whether a payment sent now is served and can be written ([`readiness`]); a 503 lists what
/// is wrong, each problem with its stable code. Within `wasmpay_ledger::PROBE_TIMEOUT` (3 s):
/// the NATS round trip and the ledger's probe run side by side.
/// Whether this node can take payments now (NATS, the ledger, plugins, its partitions).
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    responses((status = 200, description = "`ready`", body = String, content_type = "text/plain"),
              (status = 503, description = "`not ready: …` with every reason", body = String, content_type = "text/plain")))]
async fn readiness(state: &ApiState) -> Response<Body> {
    let nats = async {
        if state.nats.connection_state() != async_nats::connection::State::Connected {
            return Err("the client is disconnected".to_owned());
        }
        match tokio::time::timeout(readiness::READINESS_FLUSH_TIMEOUT, state.nats.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("the server did not answer within {:?}", readiness::READINESS_FLUSH_TIMEOUT)),
        }
    };
    let (nats, ledger, subscribed) = tokio::join!(nats, state.ledger.writable(), state.intake.subscribed());
    let cluster = state.cluster.current();
    let methods_served = state.plugins.pipelines().methods().next().is_some();
    let observed = readiness::Observed { nats, ledger, methods_served, cluster: &cluster, subscribed: &subscribed };
    let problems: Vec<String> = readiness::problems(&observed).iter().map(ToString::to_string).collect();
    if problems.is_empty() {
        text(StatusCode::OK, "ready\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, &format!("not ready: {}\n", problems.join("; ")))
    }
}

/// A ledger failure as an answer: retry later only if it is transient.
fn ledger_error(error: &LedgerError) -> Response<Body> {
    match error {
        LedgerError::Overflow(_) => {
            problem(StatusCode::UNPROCESSABLE_ENTITY, "amount_out_of_range", &error.to_string())
        }
        LedgerError::UnknownAccount(_) => problem(StatusCode::NOT_FOUND, "unknown_account", &error.to_string()),
        LedgerError::CurrencyMismatch { .. } => {
            problem(StatusCode::UNPROCESSABLE_ENTITY, "currency_mismatch", &error.to_string())
        }
        transient if transient.is_transient() => {
            tracing::error!(%error, "ledger unavailable in the HTTP API");
            problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &error.to_string())
        }
        _ => {
            tracing::error!(%error, "ledger failure in the HTTP API");
            problem(StatusCode::INTERNAL_SERVER_ERROR, "internal", &error.to_string())
        }
    }
}

/// An error's body.
#[derive(Serialize, utoipa::ToSchema)]
struct Problem<'a> {
    /// Stable: a client branches on it.
    code: &'a str,
    /// For people.
    message: &'a str,
    /// The offending field of the request, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    /// The request's id (also in `X-Request-Id`), to quote to an operator.
    request_id: Option<String>,
}

/// An error's body: its stable `code`, a `message` for people, and the `request_id` to quote.
fn problem(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    problem_naming(status, code, message, None)
}

/// [`problem`] naming the offending `field` of the request.
fn problem_at(status: StatusCode, code: &str, message: &str, field: &str) -> Response<Body> {
    problem_naming(status, code, message, Some(field))
}

fn problem_naming(status: StatusCode, code: &str, message: &str, field: Option<&str>) -> Response<Body> {
    let request_id = REQUEST_ID.try_with(Clone::clone).ok();
    json_response(status, &Problem { code, message, field, request_id })
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    raw_json(status, serde_json::to_string(body).unwrap_or_default())
}

fn raw_json(status: StatusCode, body: String) -> Response<Body> {
    response(status, "application/json", body)
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    response(status, "text/plain; charset=utf-8", body.to_owned())
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    response
}
