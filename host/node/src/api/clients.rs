//! What clients do over HTTP: pay, authorize, capture, void and refund with a client key the
//! operator issued (or the admin token), and the operator's routes that issue, list and revoke
//! those keys. A client's request becomes exactly the message a NATS client would send, on the
//! subject of the account it debits, with the key's id in a header: the partition's owner
//! decides it as any other, so HTTP adds no second path to the ledger.

use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::{ApiState, Body, json_response, ledger_error, problem, problem_at, raw_json};
use crate::client::request_with_headers;
use crate::clock;
use wasmpay_ledger::ClientKey;
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
        Ok(Some(key)) => Ok(Some(key)),
        Ok(None) => Err(refused()),
        Err(error) => Err(ledger_error(&error)),
    }
}

/// `POST /v1/payments` and `POST /v1/payments/{id}/capture|void|refunds`: builds the message,
/// sends it to the owner of the account it debits, and answers with the reply.
pub(super) async fn operate(
    state: &ApiState,
    path: &[&str],
    idempotency_key: Option<&str>,
    client: Option<&ClientKey>,
    mut body: Value,
) -> Response<Body> {
    let Some(fields) = body.as_object_mut() else {
        return problem(StatusCode::BAD_REQUEST, "invalid_request", "the body must be a JSON object");
    };
    let (message, account) = match path {
        [] => {
            let id = match (fields.remove("id"), idempotency_key) {
                (Some(Value::String(id)), Some(key)) if id != key => {
                    let message = "the body's `id` and the `Idempotency-Key` header differ";
                    return problem_at(StatusCode::BAD_REQUEST, "invalid_request", message, "id");
                }
                (Some(Value::String(id)), _) => id,
                (None, Some(key)) => key.to_owned(),
                (Some(_), _) => {
                    return problem_at(StatusCode::BAD_REQUEST, "invalid_request", "`id` must be a string", "id");
                }
                (None, None) => {
                    let message = "send the payment's id as `id` or as the `Idempotency-Key` header";
                    return problem_at(StatusCode::BAD_REQUEST, "invalid_request", message, "id");
                }
            };
            let Some(payer) = fields.get("payer").and_then(Value::as_str).map(str::to_owned) else {
                return problem_at(StatusCode::BAD_REQUEST, "invalid_request", "`payer` is required", "payer");
            };
            fields.insert("id".into(), json!(id));
            fields.insert("version".into(), json!(PROTOCOL_VERSION));
            (body, payer)
        }
        [payment, action @ ("capture" | "void" | "refunds")] => {
            let Some(key) = idempotency_key else {
                let message = "send this operation's own id as the `Idempotency-Key` header";
                return problem_at(StatusCode::BAD_REQUEST, "invalid_request", message, "Idempotency-Key");
            };
            let allowed: &[&str] = if *action == "void" { &[] } else { &["amount"] };
            if let Some(unknown) = fields.keys().find(|field| !allowed.contains(&field.as_str())) {
                let message = format!("unknown field `{unknown}`");
                return problem_at(StatusCode::BAD_REQUEST, "invalid_request", &message, unknown);
            }
            let Ok(payment_id) = PaymentId::new(*payment) else {
                return problem(StatusCode::NOT_FOUND, "unknown_payment", "no such payment");
            };
            let account = if *action == "refunds" {
                state.ledger.refundable(&payment_id).await.map(|found| found.map(|original| original.payee))
            } else {
                state.ledger.hold(&payment_id).await.map(|found| found.map(|hold| hold.payer))
            };
            let account = match account {
                Ok(Some(account)) => account,
                Ok(None) => {
                    let what = if *action == "refunds" { "payment" } else { "authorization" };
                    return problem(StatusCode::NOT_FOUND, "unknown_payment", &format!("no {what} `{payment}`"));
                }
                Err(error) => return ledger_error(&error),
            };
            let (kind, role) = match *action {
                "refunds" => ("refund", "payee"),
                other => (other, "payer"),
            };
            let mut message = json!({"version": PROTOCOL_VERSION, "type": kind, "id": key, role: account.as_str(),
                                     "payment": payment});
            if let Some(amount) = fields.get("amount") {
                message["amount"] = amount.clone();
            }
            (message, account.to_string())
        }
        _ => return problem(StatusCode::NOT_FOUND, "not_found", "no such route"),
    };
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

/// A reply as an HTTP answer: 201 for what was decided now, 200 for a replay, 402 for a
/// decline, 4xx for a refusal by its code, 503 for an error (retry with the same id).
fn answered(reply: String, replayed: bool) -> Response<Body> {
    let Ok(parsed) = serde_json::from_str::<Reply>(&reply) else {
        return problem(StatusCode::BAD_GATEWAY, "unavailable", "the owner's reply does not parse");
    };
    let status = match (parsed.status, parsed.code) {
        (Status::Error, _) => StatusCode::SERVICE_UNAVAILABLE,
        (Status::Declined, _) => StatusCode::PAYMENT_REQUIRED,
        (Status::Rejected, Code::Conflict) => StatusCode::CONFLICT,
        (Status::Rejected, Code::UnknownAccount | Code::UnknownPayment | Code::UnknownMethod) => StatusCode::NOT_FOUND,
        (Status::Rejected, Code::NotRefundable | Code::ExceedsAuthorized) => StatusCode::UNPROCESSABLE_ENTITY,
        (Status::Rejected, _) => StatusCode::BAD_REQUEST,
        _ if replayed => StatusCode::OK,
        _ => StatusCode::CREATED,
    };
    let mut response = raw_json(status, reply);
    response.headers_mut().insert(REPLAYED_HEADER, HeaderValue::from_static(if replayed { "true" } else { "false" }));
    response
}

/// `POST /v1/client-keys {"name": …}`: a new key, its secret shown this once.
pub(super) async fn issue(state: &ApiState, body: Value) -> Response<Body> {
    let name = match body.as_object().map(|fields| (fields.len(), fields.get("name").and_then(Value::as_str))) {
        Some((1, Some(name))) if (1..=64).contains(&name.len()) => name.to_owned(),
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
        Err(error) => ledger_error(&error),
    }
}

/// `GET /v1/client-keys`: every key, without secrets.
pub(super) async fn list(state: &ApiState) -> Response<Body> {
    match state.ledger.client_keys().await {
        Ok(keys) => json_response(StatusCode::OK, &json!({"keys": keys})),
        Err(error) => ledger_error(&error),
    }
}

/// `DELETE /v1/client-keys/{id}`: the key no longer pays.
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
