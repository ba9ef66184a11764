//! What clients do over HTTP: pay, authorize, capture, void and refund with a client key the
//! operator issued (or the admin token), and the operator's routes that issue, list and revoke
//! those keys. A client's request becomes exactly the message a NATS client would send, on the
//! subject of the account it debits, with the key's id in a header: the partition's owner
//! decides it as any other, so HTTP adds no second path to the ledger.

use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::{ApiState, Body, Problem, json_response, ledger_error, problem, problem_at, raw_json};
use crate::client::request_with_headers;
use crate::clock;
use wasmpay_ledger::{ClientKey, LedgerError};
use wasmpay_protocol::routing::{AccountId, subjects};
use wasmpay_protocol::{Code, PROTOCOL_VERSION, PaymentId, Reply, Status};

/// The header that says a reply is the stored one of an earlier request with the same id.
const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The client key the request presents, if its bearer token is not the admin token: `Ok(None)`
/// never happens for a client (the admin token was checked first), so a token that is neither
/// is a 401.
pub(super) async fn client(state: &ApiState, request: &Request<Incoming>) -> Result<Option<ClientKey>, Response<Body>> {
    let header = request.headers().get(AUTHORIZATION).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let secret = match header.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim_start_matches(' '),
        _ => "",
    };
    let refused = || problem(StatusCode::UNAUTHORIZED, "unauthorized", "send `Authorization: Bearer <client key>`");
    if !secret.starts_with("wpk_") {
        return Err(refused());
    }
    match state.ledger.client_key(secret).await {
        Ok(Some(key)) => {
            // The request's log line names the key (its id, never its secret).
            tracing::Span::current().record("client_key", tracing::field::display(&key.id));
            Ok(Some(key))
        }
        Ok(None) => Err(refused()),
        Err(error) => Err(ledger_error(&error)),
    }
}

/// Who sends an operation, and under which key: what every client route needs beside its body.
pub(super) struct Caller<'a> {
    /// The `Idempotency-Key` header, if sent.
    pub(super) idempotency_key: Option<&'a str>,
    /// The client key it came with (`None` for the admin token).
    pub(super) client: Option<&'a ClientKey>,
}

/// What a client may ask under `POST /v1/payments…`, `/v1/settlements` and `/v1/fx/quotes`.
#[derive(Clone, Copy, Debug)]
pub(super) enum Operation<'a> {
    Pay,
    Capture(&'a str),
    Void(&'a str),
    Refund(&'a str),
    Settle,
    Quote,
}

impl<'a> Operation<'a> {
    /// The operation `path` (after `v1`) names, with its route's template; `None` for no route.
    pub(super) fn of(path: &[&'a str]) -> Option<(&'static str, Operation<'a>)> {
        Some(match *path {
            ["payments"] => ("/v1/payments", Operation::Pay),
            ["payments", payment, "capture"] => ("/v1/payments/{id}/capture", Operation::Capture(payment)),
            ["payments", payment, "void"] => ("/v1/payments/{id}/void", Operation::Void(payment)),
            ["payments", payment, "refunds"] => ("/v1/payments/{id}/refunds", Operation::Refund(payment)),
            ["settlements"] => ("/v1/settlements", Operation::Settle),
            ["fx", "quotes"] => ("/v1/fx/quotes", Operation::Quote),
            _ => return None,
        })
    }
}

/// Answers `operation`.
pub(super) async fn dispatch(
    state: &ApiState,
    operation: Operation<'_>,
    caller: Caller<'_>,
    body: Value,
) -> Response<Body> {
    match operation {
        Operation::Pay => create(state, caller, body).await,
        Operation::Capture(payment) => capture(state, payment, caller, body).await,
        Operation::Void(payment) => void(state, payment, caller, body).await,
        Operation::Refund(payment) => refund(state, payment, caller, body).await,
        Operation::Settle => settle(state, caller, body).await,
        Operation::Quote => quote(state, body).await,
    }
}

/// A payment or authorization: the NATS payment message, with `id` from the body or the
/// `Idempotency-Key` header (both, if sent, must agree) and `version` optional.
#[utoipa::path(post, path = "/v1/payments", operation_id = "create_payment", tag = "payments",
    params(("Idempotency-Key" = Option<String>, Header, description = "The payment's id, if the body has none")),
    request_body(content = wasmpay_protocol::PaymentMessage,
                 description = "The payment message of docs/protocol.md; `id` and `version` may be left out, `type` may be `authorize`"),
    responses(
        (status = 201, description = "Decided now: approved or authorized", body = Reply),
        (status = 200, description = "A replay of the stored reply (`Idempotent-Replayed: true`)", body = Reply),
        (status = 402, description = "Declined (recorded; a retry replays it)", body = Reply),
        (status = 400, description = "Refused before any state changed: a reply, or a `Problem` when the HTTP request itself is malformed (no id, no payer, not an object)", body = Reply),
        (status = 401, description = "No valid client key or admin token", body = Problem),
        (status = 404, description = "Unknown account or method", body = Reply),
        (status = 409, description = "The id was used for another request", body = Reply),
        (status = 503, description = "No final answer yet: retry with the same id", body = Problem),
    ),
    security(("client_key" = []), ("admin_token" = [])))]
pub(super) async fn create(state: &ApiState, caller: Caller<'_>, mut body: Value) -> Response<Body> {
    let Some(fields) = body.as_object_mut() else {
        return problem(StatusCode::BAD_REQUEST, "invalid_request", "the body must be a JSON object");
    };
    let id = match identified(fields, caller.idempotency_key, "payment") {
        Ok(id) => id,
        Err(message) => return problem_at(StatusCode::BAD_REQUEST, "invalid_request", &message, "id"),
    };
    let Some(payer) = fields.get("payer").and_then(Value::as_str).map(str::to_owned) else {
        return problem_at(StatusCode::BAD_REQUEST, "invalid_request", "`payer` is required", "payer");
    };
    fields.insert("id".into(), json!(id));
    fields.insert("version".into(), json!(PROTOCOL_VERSION));
    forward(state, body, payer, caller.client).await
}

/// A settlement: the NATS settlement message, sent to the owner of its first leg's payer.
/// The admin token only: a settlement runs no plugin and charges no fee, and client keys are
/// not scoped to accounts.
#[utoipa::path(post, path = "/v1/settlements", tag = "payments", operation_id = "settle",
    params(("Idempotency-Key" = Option<String>, Header, description = "The settlement's id, if the body has none")),
    request_body(content = wasmpay_protocol::SettlementMessage,
                 description = "The settlement message of docs/protocol.md; `id`, `version` and `type` may be left out"),
    responses(
        (status = 201, description = "Settled now: every leg posted", body = Reply),
        (status = 200, description = "A replay of the stored reply (`Idempotent-Replayed: true`)", body = Reply),
        (status = 402, description = "Declined: a leg's payer cannot fund it; no leg posted", body = Reply),
        (status = 400, description = "Refused before any state changed: a reply, or a `Problem` when the HTTP request itself is malformed (no id, no payer, not an object)", body = Reply),
        (status = 401, description = "Not the admin token", body = Problem),
        (status = 404, description = "An unknown account", body = Reply),
        (status = 409, description = "The id was used for another request", body = Reply),
        (status = 503, description = "No final answer yet: retry with the same id", body = Problem),
    ),
    security(("admin_token" = [])))]
pub(super) async fn settle(state: &ApiState, caller: Caller<'_>, mut body: Value) -> Response<Body> {
    let Some(fields) = body.as_object_mut() else {
        return problem(StatusCode::BAD_REQUEST, "invalid_request", "the body must be a JSON object");
    };
    let id = match identified(fields, caller.idempotency_key, "settlement") {
        Ok(id) => id,
        Err(message) => return problem_at(StatusCode::BAD_REQUEST, "invalid_request", &message, "id"),
    };
    let Some(first) = fields.get("legs").and_then(Value::as_array).and_then(|legs| legs.first()) else {
        return problem_at(StatusCode::BAD_REQUEST, "invalid_request", "`legs` must be a list of 1-16 legs", "legs");
    };
    let Some(payer) = first.get("payer").and_then(Value::as_str).map(str::to_owned) else {
        let message = "the first leg's `payer` is required";
        return problem_at(StatusCode::BAD_REQUEST, "invalid_request", message, "legs[0].payer");
    };
    if let Err(error) = AccountId::new(payer.as_str()) {
        return problem_at(StatusCode::BAD_REQUEST, "invalid_request", &error.to_string(), "legs[0].payer");
    }
    fields.insert("id".into(), json!(id));
    fields.insert("version".into(), json!(PROTOCOL_VERSION));
    fields.insert("type".into(), json!("settle"));
    forward(state, body, payer, caller.client).await
}

/// The id of a new payment or settlement: the body's `id` or the `Idempotency-Key` header
/// (both, if sent, must agree); removed from `fields`, the caller puts it back. The error is
/// what is wrong with the `id` field.
fn identified(
    fields: &mut serde_json::Map<String, Value>,
    idempotency_key: Option<&str>,
    what: &str,
) -> Result<String, String> {
    match (fields.remove("id"), idempotency_key) {
        (Some(Value::String(id)), Some(key)) if id != key => {
            Err("the body's `id` and the `Idempotency-Key` header differ".to_owned())
        }
        (Some(Value::String(id)), _) => Ok(id),
        (None, Some(key)) => Ok(key.to_owned()),
        (Some(_), _) => Err("`id` must be a string".to_owned()),
        (None, None) => Err(format!("send the {what}'s id as `id` or as the `Idempotency-Key` header")),
    }
}

/// The body of a capture or refund: the amount, when less than all.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Amount {
    /// Minor units; left out means everything left (the authorized amount, or what the
    /// payment moved less what was refunded).
    #[serde(default)]
    #[schema(schema_with = wasmpay_protocol::openapi::amount_schema)]
    amount: Option<Value>,
}

/// A capture of an open authorization, in full or in part.
#[utoipa::path(post, path = "/v1/payments/{id}/capture", operation_id = "capture_authorization", tag = "payments",
    params(("id" = String, Path, description = "The authorization"),
           ("Idempotency-Key" = String, Header, description = "The capture's own id")),
    request_body(content = Amount, description = "`{}` captures all"),
    responses(
        (status = 201, description = "Captured now", body = Reply),
        (status = 200, description = "A replay (`Idempotent-Replayed: true`)", body = Reply),
        (status = 400, description = "Refused: hold_expired, invalid_state, …; a `Problem` when the HTTP request is malformed (no `Idempotency-Key`, an unknown field)", body = Reply),
        (status = 401, description = "No valid client key or admin token", body = Problem),
        (status = 404, description = "No such authorization", body = Problem),
        (status = 422, description = "More than authorized", body = Reply),
        (status = 503, description = "No final answer yet: retry with the same id", body = Problem),
    ),
    security(("client_key" = []), ("admin_token" = [])))]
pub(super) async fn capture(state: &ApiState, payment: &str, caller: Caller<'_>, body: Value) -> Response<Body> {
    act(state, payment, "capture", caller, body).await
}

/// A void: releases an open authorization's hold.
#[utoipa::path(post, path = "/v1/payments/{id}/void", operation_id = "void_authorization", tag = "payments",
    params(("id" = String, Path, description = "The authorization"),
           ("Idempotency-Key" = String, Header, description = "The void's own id")),
    request_body(content = Object, description = "`{}`"),
    responses(
        (status = 201, description = "Voided now", body = Reply),
        (status = 200, description = "A replay (`Idempotent-Replayed: true`)", body = Reply),
        (status = 400, description = "Refused: hold_expired, invalid_state, …; a `Problem` when the HTTP request is malformed (no `Idempotency-Key`, an unknown field)", body = Reply),
        (status = 401, description = "No valid client key or admin token", body = Problem),
        (status = 404, description = "No such authorization", body = Problem),
        (status = 503, description = "No final answer yet: retry with the same id", body = Problem),
    ),
    security(("client_key" = []), ("admin_token" = [])))]
pub(super) async fn void(state: &ApiState, payment: &str, caller: Caller<'_>, body: Value) -> Response<Body> {
    act(state, payment, "void", caller, body).await
}

/// A refund of a payment or capture, in full or in part, from its payee back to its payer.
#[utoipa::path(post, path = "/v1/payments/{id}/refunds", operation_id = "refund_payment", tag = "payments",
    params(("id" = String, Path, description = "The payment or capture"),
           ("Idempotency-Key" = String, Header, description = "The refund's own id")),
    request_body(content = Amount, description = "`{}` refunds what is left"),
    responses(
        (status = 201, description = "Refunded now", body = Reply),
        (status = 200, description = "A replay (`Idempotent-Replayed: true`)", body = Reply),
        (status = 402, description = "Declined: the payee cannot fund it", body = Reply),
        (status = 401, description = "No valid client key or admin token", body = Problem),
        (status = 404, description = "No such payment", body = Problem),
        (status = 422, description = "More than refundable, or not refundable", body = Reply),
        (status = 503, description = "No final answer yet: retry with the same id", body = Problem),
    ),
    security(("client_key" = []), ("admin_token" = [])))]
pub(super) async fn refund(state: &ApiState, payment: &str, caller: Caller<'_>, body: Value) -> Response<Body> {
    act(state, payment, "refunds", caller, body).await
}

/// A capture, void or refund of `payment`: the message, on the subject of the account it
/// debits (the authorization's payer, or the payment's payee).
async fn act(state: &ApiState, payment: &str, action: &str, caller: Caller<'_>, body: Value) -> Response<Body> {
    let Some(key) = caller.idempotency_key else {
        let message = "send this operation's own id as the `Idempotency-Key` header";
        return problem_at(StatusCode::BAD_REQUEST, "invalid_request", message, "Idempotency-Key");
    };
    let Value::Object(fields) = body else {
        return problem(StatusCode::BAD_REQUEST, "invalid_request", "the body must be a JSON object");
    };
    let allowed: &[&str] = if action == "void" { &[] } else { &["amount"] };
    if let Some(unknown) = fields.keys().find(|field| !allowed.contains(&field.as_str())) {
        let message = format!("unknown field `{unknown}`");
        return problem_at(StatusCode::BAD_REQUEST, "invalid_request", &message, unknown);
    }
    let amount = match serde_json::from_value::<Amount>(Value::Object(fields)) {
        Ok(Amount { amount }) => amount,
        Err(error) => return problem_at(StatusCode::BAD_REQUEST, "invalid_request", &error.to_string(), "amount"),
    };
    let Ok(payment_id) = PaymentId::new(payment) else {
        return problem(StatusCode::NOT_FOUND, "unknown_payment", "no such payment");
    };
    let account = if action == "refunds" {
        state.ledger.refundable(&payment_id).await.map(|found| found.map(|original| original.payee))
    } else {
        state.ledger.hold(&payment_id).await.map(|found| found.map(|hold| hold.payer))
    };
    let account = match account {
        Ok(Some(account)) => account,
        Ok(None) => {
            let what = if action == "refunds" { "payment" } else { "authorization" };
            return problem(StatusCode::NOT_FOUND, "unknown_payment", &format!("no {what} `{payment}`"));
        }
        Err(error) => return ledger_error(&error),
    };
    let (kind, role) = match action {
        "refunds" => ("refund", "payee"),
        other => (other, "payer"),
    };
    let mut message =
        json!({"version": PROTOCOL_VERSION, "type": kind, "id": key, role: account.as_str(), "payment": payment});
    if let Some(amount) = amount {
        message["amount"] = amount;
    }
    forward(state, message, account.to_string(), caller.client).await
}

/// Sends `message` to the owner of `account` and answers with its reply.
async fn forward(state: &ApiState, message: Value, account: String, client: Option<&ClientKey>) -> Response<Body> {
    let Ok(account) = AccountId::new(account) else {
        return problem_at(StatusCode::BAD_REQUEST, "invalid_request", "not a valid account id", "payer");
    };
    let id = message["id"].as_str().unwrap_or_default().to_owned();
    let stored = match state.ledger.recorded_reply(&id).await {
        Ok(stored) => stored,
        Err(error) => return ledger_error(&error),
    };
    let subject = subjects::pay(state.partitioner.partition_of(&account), account.as_str());
    let mut headers = async_nats::HeaderMap::new();
    if let Some(key) = client {
        headers.insert(subjects::CLIENT_KEY_HEADER, key.id.as_str());
    }
    let reply = match request_with_headers(&state.nats, &subject, headers, message.to_string()).await {
        Ok(reply) => reply,
        Err(error) => {
            let message = format!("no answer from the account's owner, retry with the same id: {error}");
            return problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &message);
        }
    };
    let replayed = stored.is_some_and(|stored| stored.reply == reply);
    answered(reply, replayed)
}

/// An FX quote for a cross-border payment: the `wasmpay.fx.quote` request, answered by any
/// node. Nothing but the quote is stored, so asking again gives a new quote.
#[utoipa::path(post, path = "/v1/fx/quotes", operation_id = "create_fx_quote", tag = "payments",
    request_body(content = wasmpay_protocol::quote::QuoteMessage,
                 description = "The quote request of docs/protocol.md: payer, payee, amount, currency, counter_currency"),
    responses(
        (status = 201, description = "Quoted: the reply's `quote` holds its id, rate, both amounts and expiry", body = Reply),
        (status = 402, description = "The FX plugin does not quote the pair or the amount (`plugin_declined`)", body = Reply),
        (status = 400, description = "Refused: an invalid request, a currency an account does not hold, no FX plugin", body = Reply),
        (status = 401, description = "No valid client key or admin token", body = Problem),
        (status = 404, description = "An unknown account", body = Reply),
        (status = 503, description = "No answer now: ask again (a `Reply` when a node answered `unavailable`, a `Problem` when none answered)", body = Reply),
    ),
    security(("client_key" = []), ("admin_token" = [])))]
pub(super) async fn quote(state: &ApiState, body: Value) -> Response<Body> {
    match request_with_headers(&state.nats, subjects::FX_QUOTE, async_nats::HeaderMap::new(), body.to_string()).await {
        Ok(reply) => answered(reply, false),
        Err(error) => {
            problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &format!("no node answered the quote: {error}"))
        }
    }
}

/// A reply as an HTTP answer: 201 for what was decided now, 200 for a replay, 402 for a
/// decline, 4xx for a refusal by its code, 503 for an error (retry with the same id).
fn answered(reply: String, replayed: bool) -> Response<Body> {
    let Ok(outcome) = Reply::outcome_of(&reply) else {
        return problem(StatusCode::BAD_GATEWAY, "unavailable", "the owner's reply does not parse");
    };
    let status = match outcome {
        (Status::Error, _) => StatusCode::SERVICE_UNAVAILABLE,
        (Status::Declined, _) => StatusCode::PAYMENT_REQUIRED,
        (Status::Rejected, Code::Conflict) => StatusCode::CONFLICT,
        (Status::Rejected, Code::UnknownAccount | Code::UnknownPayment | Code::UnknownMethod | Code::UnknownQuote) => {
            StatusCode::NOT_FOUND
        }
        (Status::Rejected, Code::NotRefundable | Code::ExceedsAuthorized) => StatusCode::UNPROCESSABLE_ENTITY,
        (Status::Rejected, _) => StatusCode::BAD_REQUEST,
        _ if replayed => StatusCode::OK,
        _ => StatusCode::CREATED,
    };
    let mut response = raw_json(status, reply);
    response.headers_mut().insert(REPLAYED_HEADER, HeaderValue::from_static(if replayed { "true" } else { "false" }));
    response
}

/// What `POST /v1/client-keys` takes.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewKey {
    /// What to call it: 1-64 characters.
    #[schema(min_length = 1, max_length = 64)]
    name: String,
}

/// A new client key, its secret shown this once.
#[utoipa::path(post, path = "/v1/client-keys", operation_id = "issue_client_key", tag = "client keys", request_body = NewKey,
    responses((status = 201, description = "Issued; the secret is not shown again", body = wasmpay_ledger::IssuedKey),
              (status = 400, description = "No valid name", body = Problem)),
    security(("admin_token" = [])))]
pub(super) async fn issue(state: &ApiState, body: Value) -> Response<Body> {
    let name = match serde_json::from_value::<NewKey>(body) {
        Ok(NewKey { name }) => name,
        _ => {
            let message = "the body is `{\"name\": \"<1-64 characters>\"}`";
            return problem_at(StatusCode::BAD_REQUEST, "invalid_request", message, "name");
        }
    };
    match state.ledger.issue_client_key(&name, clock::ledger_ms()).await {
        Ok(issued) => {
            tracing::info!(key = %issued.key.id, name = %issued.key.name, "client key issued");
            json_response(StatusCode::CREATED, &issued)
        }
        Err(LedgerError::Invalid(message)) => problem_at(StatusCode::BAD_REQUEST, "invalid_request", &message, "name"),
        Err(error) => ledger_error(&error),
    }
}

/// Every client key, without secrets.
#[utoipa::path(get, path = "/v1/client-keys", operation_id = "list_client_keys", tag = "client keys",
    responses((status = 200, description = "`{\"keys\": [...]}`", body = Keys)),
    security(("admin_token" = [])))]
pub(super) async fn list(state: &ApiState) -> Response<Body> {
    match state.ledger.client_keys().await {
        Ok(keys) => json_response(StatusCode::OK, &Keys { keys }),
        Err(error) => ledger_error(&error),
    }
}

/// The client keys, as listed.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Keys {
    keys: Vec<ClientKey>,
}

/// Revokes a client key: it pays no more.
#[utoipa::path(delete, path = "/v1/client-keys/{id}", operation_id = "revoke_client_key", tag = "client keys",
    params(("id" = String, Path, description = "The key's id, `ck_…`")),
    responses((status = 200, description = "Revoked", body = ClientKey),
              (status = 404, description = "No such key", body = Problem)),
    security(("admin_token" = [])))]
pub(super) async fn revoke(state: &ApiState, id: &str) -> Response<Body> {
    match state.ledger.revoke_client_key(id, clock::ledger_ms()).await {
        Ok(Some(key)) => {
            tracing::info!(key = %key.id, "client key revoked");
            json_response(StatusCode::OK, &key)
        }
        Ok(None) => problem(StatusCode::NOT_FOUND, "unknown_key", "no client key with this id"),
        Err(error) => ledger_error(&error),
    }
}
