//! The protocol's types as OpenAPI 3.1 schemas, for the node's generated API document.
//!
//! Most types derive theirs beside their definition. The ones here are written by hand because
//! serde reads them from a plain string (`try_from = "String"`, or a checked constructor): a
//! derive would describe their Rust fields, not what is on the wire. Each one is built from the
//! same rule its parser checks (the ISO 4217 table, the id alphabets), so the document cannot
//! drift from the code.

use utoipa::PartialSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};

use crate::PaymentId;
use crate::money::{AssetCode, Currency, MAX_PAYMENT_MINOR_UNITS, Rate, Unit};
use crate::routing::AccountId;

/// A string schema that matches `pattern`.
fn text(description: &str, pattern: &str, example: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(pattern))
        .examples([example])
}

/// The account id rule of [`AccountId::new`].
pub const ACCOUNT_ID_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";
/// The id rule of [`PaymentId::new`] ([`crate::ID_RULE`]).
pub const PAYMENT_ID_PATTERN: &str = "^[A-Za-z0-9_.:-]{1,64}$";
/// The asset code rule of [`AssetCode`]'s parser.
pub const ASSET_CODE_PATTERN: &str = "^[A-Z][A-Z0-9_-]{3,11}$";

impl PartialSchema for AccountId {
    fn schema() -> RefOr<Schema> {
        text("An account id; ids starting with `_` are the ledger's own accounts.", ACCOUNT_ID_PATTERN, "alice").into()
    }
}
impl utoipa::ToSchema for AccountId {}

impl PartialSchema for PaymentId {
    fn schema() -> RefOr<Schema> {
        text("A payment's (or operation's) id: its idempotency key.", PAYMENT_ID_PATTERN, "order-1001").into()
    }
}
impl utoipa::ToSchema for PaymentId {}

impl PartialSchema for Currency {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("An ISO 4217 currency this host supports (its exponent: docs/protocol.md)."))
            .enum_values(Some(Currency::all().map(Currency::code)))
            .into()
    }
}
impl utoipa::ToSchema for Currency {}

impl PartialSchema for AssetCode {
    fn schema() -> RefOr<Schema> {
        text(
            "A registered asset's code: 4-12 of A-Z 0-9 _ -, starting with a letter (three letters are ISO 4217's).",
            ASSET_CODE_PATTERN,
            "AAPL",
        )
        .into()
    }
}
impl utoipa::ToSchema for AssetCode {}

impl PartialSchema for Unit {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some("What an account holds and a transfer moves: a currency or a registered asset."))
            .item(Currency::schema())
            .item(AssetCode::schema())
            .into()
    }
}
impl utoipa::ToSchema for Unit {}

/// The rule of [`Rate`]'s parser: a positive decimal, at most 12 digits after the point.
pub const RATE_PATTERN: &str = "^[0-9]{1,18}(\\.[0-9]{1,12})?$";

impl PartialSchema for Rate {
    fn schema() -> RefOr<Schema> {
        text(
            "An exchange rate as an exact decimal: major units of the counter currency per major unit of the source.",
            RATE_PATTERN,
            "1.077784",
        )
        .into()
    }
}
impl utoipa::ToSchema for Rate {}

/// A payment's amount in minor units, as every message and body carries it.
pub fn amount_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(utoipa::openapi::schema::KnownFormat::Int64)))
        .minimum(Some(1))
        .maximum(Some(MAX_PAYMENT_MINOR_UNITS))
        .description(Some("Minor units, 1 ..= 2^53 - 1 (exact in every client language)."))
        .into()
}
