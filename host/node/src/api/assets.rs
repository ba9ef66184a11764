//! The asset registry over HTTP: an operator registers a unit beyond ISO 4217 (a security,
//! a commodity, loyalty points) with its exponent, then opens accounts in it
//! (`POST /v1/accounts` with its code as the currency) and moves it in settlement legs.

use hyper::{Response, StatusCode};
use serde::Deserialize;

use super::{ApiState, Body, json_response, ledger_error, problem, problem_at};
use crate::clock;
use wasmpay_ledger::LedgerError;
use wasmpay_protocol::money::AssetCode;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAsset {
    code: String,
    exponent: u8,
    name: String,
}

/// `POST /v1/assets`: 201 with the asset; the same terms again are 201 too (a retry), other
/// terms 409.
pub(super) async fn register(state: &ApiState, body: serde_json::Value) -> Response<Body> {
    let request: NewAsset = match serde_json::from_value(body) {
        Ok(request) => request,
        Err(error) => return problem(StatusCode::BAD_REQUEST, "invalid_request", &error.to_string()),
    };
    let code: AssetCode = match request.code.parse() {
        Ok(code) => code,
        Err(_) => {
            let message = format!(
                "`{}` is not an asset code: 4-12 of A-Z 0-9 . _ -, starting with a letter (three letters are ISO 4217's)",
                request.code
            );
            return problem_at(StatusCode::BAD_REQUEST, "invalid_request", &message, "code");
        }
    };
    match state.ledger.register_asset(code, request.exponent, &request.name, clock::ledger_ms()).await {
        Ok(asset) => json_response(StatusCode::CREATED, &asset),
        Err(LedgerError::Invalid(message)) => problem(StatusCode::BAD_REQUEST, "invalid_request", &message),
        Err(LedgerError::AssetExists(code)) => {
            problem(StatusCode::CONFLICT, "conflict", &format!("asset `{code}` is registered with other terms"))
        }
        Err(other) => ledger_error(&other),
    }
}

/// `GET /v1/assets`: every registered asset, by code.
pub(super) async fn list(state: &ApiState) -> Response<Body> {
    match state.ledger.assets().await {
        Ok(assets) => json_response(StatusCode::OK, &serde_json::json!({ "assets": assets })),
        Err(other) => ledger_error(&other),
    }
}
