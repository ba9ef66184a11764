//! The asset registry over HTTP: an operator registers a unit beyond ISO 4217 (a security,
//! a commodity, loyalty points) with its exponent, then opens accounts in it
//! (`POST /v1/accounts` with its code as the currency) and moves it in settlement legs.

use hyper::{Response, StatusCode};
use serde::Deserialize;

use super::{ApiState, Body, Problem, json_response, ledger_error, problem, problem_at};
use crate::clock;
use wasmpay_ledger::LedgerError;
use wasmpay_protocol::money::AssetCode;

/// What `POST /v1/assets` takes.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewAsset {
    /// 4-12 of A-Z 0-9 _ -, starting with a letter.
    #[schema(value_type = AssetCode)]
    code: String,
    /// Digits after the decimal point of one unit.
    #[schema(maximum = 15)]
    exponent: u8,
    /// What it is, for people: 1-64 characters.
    #[schema(min_length = 1, max_length = 64)]
    name: String,
}

/// The registered assets, as listed.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Assets {
    assets: Vec<wasmpay_ledger::Asset>,
}

/// Registers an asset; the same terms again are a retry (201), other terms a conflict.
#[utoipa::path(post, path = "/v1/assets", operation_id = "register_asset", tag = "assets", request_body = NewAsset,
    responses((status = 201, description = "Registered", body = wasmpay_ledger::Asset),
              (status = 400, description = "Not a valid code, exponent or name", body = Problem),
              (status = 409, description = "Registered with other terms", body = Problem)),
    security(("admin_token" = [])))]
pub(super) async fn register(state: &ApiState, body: serde_json::Value) -> Response<Body> {
    let request: NewAsset = match serde_json::from_value(body) {
        Ok(request) => request,
        Err(error) => return problem(StatusCode::BAD_REQUEST, "invalid_request", &error.to_string()),
    };
    let code: AssetCode = match request.code.parse() {
        Ok(code) => code,
        Err(_) => {
            let message = format!(
                "`{}` is not an asset code: 4-12 of A-Z 0-9 _ -, starting with a letter (three letters are ISO 4217's)",
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

/// Every registered asset, by code.
#[utoipa::path(get, path = "/v1/assets", operation_id = "list_assets", tag = "assets",
    responses((status = 200, description = "The assets", body = Assets)), security(("admin_token" = [])))]
pub(super) async fn list(state: &ApiState) -> Response<Body> {
    match state.ledger.assets().await {
        Ok(assets) => json_response(StatusCode::OK, &Assets { assets }),
        Err(other) => ledger_error(&other),
    }
}
