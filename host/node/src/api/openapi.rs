//! The HTTP API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! attributes and the schemas their types derive, and served at `GET /v1/openapi.json`
//! (no token: it describes the API, it holds no data). `wasmpay openapi` prints the same
//! document, and CI validates it against the OpenAPI 3.1 schema.

use std::sync::OnceLock;

use hyper::{Response, StatusCode};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::{Body, assets, clients, plugins, raw_json};

/// The operators' bearer token and the clients' keys.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let admin = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("The operators' token, `WASMPAY_ADMIN_TOKEN`: every `/v1` route."));
        components.add_security_scheme("admin_token", SecurityScheme::Http(admin.build()));
        let client = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("wpk_…")
            .description(Some("A client key an operator issued (`POST /v1/client-keys`): the payment routes only."));
        components.add_security_scheme("client_key", SecurityScheme::Http(client.build()));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wasmpay node",
        description = "Payments, authorizations, captures, voids and refunds for clients; accounts, statements, \
                       assets, client keys, plugins and the cluster for operators. Errors are `Problem` bodies \
                       unless a reply decided the request. docs/protocol.md has the rules behind every field.",
        license(name = "Apache-2.0")
    ),
    paths(
        super::healthz, super::readiness, super::metrics,
        clients::create, clients::capture, clients::void, clients::refund, clients::settle, clients::quote,
        super::show_payment, super::console::recent,
        super::open_account, super::show_account, super::deposit,
        super::entries, super::payments, super::holds,
        assets::register, assets::list,
        clients::issue, clients::list, clients::revoke,
        plugins::list, plugins::upload, plugins::activate, plugins::rollback, plugins::remove,
        super::cluster, serve,
    ),
    modifiers(&Security),
    tags(
        (name = "payments", description = "What clients send, with a client key or the admin token"),
        (name = "accounts", description = "Opening, reading and funding accounts"),
        (name = "statements", description = "An account's history, a page at a time"),
        (name = "assets", description = "Units beyond ISO 4217"),
        (name = "client keys", description = "Who may pay over HTTP"),
        (name = "plugins", description = "Payment-method plugins, cluster-wide"),
        (name = "operations", description = "Health, readiness, metrics and the cluster"),
    )
)]
struct ApiDoc;

/// The document, as JSON.
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.to_pretty_json().unwrap_or_default()
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)))]
pub(super) fn serve() -> Response<Body> {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    raw_json(StatusCode::OK, DOCUMENT.get_or_init(document).clone())
}
