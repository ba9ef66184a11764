//! Decoding a payment request: strict and total. Any input, however malformed, becomes
//! either a checked [`PaymentRequest`] or a [`Refusal`] with a code; nothing here panics.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::money::{Currency, MAX_PAYMENT_MINOR_UNITS, Unit, UnknownCurrency, UnknownUnit};
use crate::routing::AccountId;
use crate::{Code, MAX_MESSAGE_BYTES, PROTOCOL_VERSION};

/// A payment or authorization message as it is read, before any check beyond JSON types
/// (`decode` checks it); its schema is the one the HTTP API's document publishes. Over NATS
/// `version` and `id` are required; over HTTP the node fills in the version and takes the id
/// from `Idempotency-Key` when the body has none.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentMessage {
    /// `payment` (the default: posted at once) or `authorize` (held on the payer until a
    /// capture). `decode_operation` reads it first, so it is never set here.
    #[serde(rename = "type", default)]
    _kind: Option<PaymentKind>,
    /// The protocol version, 1 (required over NATS).
    #[serde(rename = "version")]
    #[schema(value_type = u32, minimum = 1, maximum = 1, required = false)]
    _version: serde_json::Value,
    /// The payment's idempotency key (required over NATS; over HTTP, or `Idempotency-Key`).
    #[schema(value_type = PaymentId, required = false)]
    id: String,
    /// The debited account.
    #[schema(value_type = AccountId)]
    payer: String,
    /// The credited account.
    #[schema(value_type = AccountId)]
    payee: String,
    /// Minor units of the currency, an integer literal.
    #[schema(schema_with = crate::openapi::amount_schema)]
    amount: serde_json::Number,
    /// Both accounts' currency.
    #[schema(value_type = Currency)]
    currency: String,
    /// The payment method, e.g. `card`.
    #[schema(pattern = "^[a-z0-9_-]{1,32}$")]
    method: String,
    /// What the method needs (a card's token and expiry, a wallet's id); declined by the
    /// method's plugin when missing or malformed.
    #[serde(default)]
    details: BTreeMap<String, String>,
    /// The client's own data, recorded with the payment.
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// A cross-border payment's payee currency, when it differs from `currency`: the payer
    /// pays `amount` in `currency`, the payee is paid its conversion at the FX plugin's rate.
    #[serde(default)]
    #[schema(value_type = Option<Currency>)]
    counter_currency: Option<String>,
    /// The FX quote to convert at (`POST /v1/fx/quotes`): its rate, if the payment is its terms
    /// and is decided before it expires. Implies the quote's counter currency.
    #[serde(default)]
    #[schema(value_type = Option<PaymentId>)]
    quote: Option<String>,
}

/// Whether a payment is posted at once or only authorized (held on the payer until captured).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    /// `"type": "payment"` (or no `type`): posted at once.
    #[default]
    Payment,
    /// `"type": "authorize"`: held on the payer; a capture posts it.
    Authorize,
}

impl PaymentKind {
    fn is_payment(&self) -> bool {
        *self == PaymentKind::Payment
    }
}

/// A payment or authorization request that passed every stateless check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PaymentRequest {
    /// Posted at once, or authorized. Left out of the fingerprint for a plain payment, so the
    /// fingerprints recorded before authorizations existed still match their retries.
    #[serde(rename = "type", skip_serializing_if = "PaymentKind::is_payment")]
    pub kind: PaymentKind,
    /// Idempotency key.
    pub id: PaymentId,
    /// Debited account.
    pub payer: AccountId,
    /// Credited account.
    pub payee: AccountId,
    /// Minor units, 1 ..= 2^53 - 1.
    pub amount: u64,
    /// ISO 4217 currency.
    pub currency: Currency,
    /// Payment method, `[a-z0-9_-]{1,32}`.
    pub method: String,
    /// Method details.
    pub details: BTreeMap<String, String>,
    /// Client metadata.
    pub metadata: BTreeMap<String, String>,
    /// A cross-border payment's payee currency (left out of the fingerprint when absent, so
    /// every payment's fingerprint from before cross-border payments still matches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter_currency: Option<Currency>,
    /// The FX quote the payment converts at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quote: Option<PaymentId>,
}

impl PaymentRequest {
    /// SHA-256 over the canonical JSON of the checked request (sorted maps, no `version`):
    /// two requests with the same id are "the same payment" exactly when their hashes match.
    pub fn fingerprint(&self) -> String {
        fingerprint(self)
    }
}

/// SHA-256 of the canonical JSON of a checked request, as hex.
fn fingerprint(request: &impl Serialize) -> String {
    let canonical = serde_json::to_vec(request).unwrap_or_default();
    let digest = Sha256::digest(&canonical);
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// What acts on an authorization (`"type": "capture"` or `"void"`), checked. It is sent on the
/// subject of the authorization's payer, whose partition's owner holds the hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HoldRequest {
    /// Capture or void (part of the fingerprint: a capture and a void never share an id).
    #[serde(rename = "type")]
    pub kind: HoldAction,
    /// This operation's own idempotency key.
    pub id: PaymentId,
    /// The authorization's payer: the account the hold is on.
    pub payer: AccountId,
    /// The authorization's id.
    pub payment: PaymentId,
    /// A capture's amount in minor units, at most the authorized amount; `None` captures all of
    /// it (and is always `None` for a void).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<u64>,
}

impl HoldRequest {
    /// SHA-256 over the canonical JSON of the checked request, like
    /// [`PaymentRequest::fingerprint`].
    pub fn fingerprint(&self) -> String {
        fingerprint(self)
    }
}

/// What a [`HoldRequest`] does to its authorization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldAction {
    /// Posts (part of) the authorization and releases the rest.
    Capture,
    /// Releases the whole hold.
    Void,
}

/// A refund of (part of) a payment or capture (`"type": "refund"`), checked. It is sent on the
/// subject of the payment's payee: the account it debits, whose partition's owner orders its
/// debits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RefundRequest {
    /// This refund's own idempotency key.
    pub id: PaymentId,
    /// The refunded payment's payee, who pays the refund.
    pub payee: AccountId,
    /// The approved payment or the capture refunded.
    pub payment: PaymentId,
    /// Minor units to refund; `None` refunds all that is left to refund.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<u64>,
}

impl RefundRequest {
    /// SHA-256 over the canonical JSON of the checked request and its type, like
    /// [`PaymentRequest::fingerprint`].
    pub fn fingerprint(&self) -> String {
        fingerprint(&("refund", self))
    }
}

/// The most legs one settlement may carry: enough for a trade with its fees and taxes, few
/// enough that one settlement's rows and locks stay small next to a batch of payments.
pub const MAX_LEGS: usize = 16;

/// One leg of a settlement: a transfer of `amount` in `currency` from `payer` to `payee`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Leg {
    /// Debited account.
    #[serde(deserialize_with = "deserialize_account")]
    pub payer: AccountId,
    /// Credited account.
    #[serde(deserialize_with = "deserialize_account")]
    pub payee: AccountId,
    /// Minor units, 1 ..= 2^53 - 1.
    pub amount: u64,
    /// The unit of both accounts: a currency or a registered asset (a leg of a trade moves
    /// the asset against the cash of another).
    pub currency: Unit,
}

pub(crate) fn deserialize_account<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<AccountId, D::Error> {
    AccountId::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
}

/// A settlement (`"type": "settle"`), checked: up to [`MAX_LEGS`] legs applied together or not
/// at all (delivery versus payment). It is sent on the subject of the first leg's payer, whose
/// partition's owner coordinates it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SettlementRequest {
    /// The settlement's idempotency key.
    pub id: PaymentId,
    /// Its legs, in order.
    pub legs: Vec<Leg>,
    /// Client metadata.
    pub metadata: BTreeMap<String, String>,
}

impl SettlementRequest {
    /// SHA-256 over the canonical JSON of the checked request and its type, like
    /// [`PaymentRequest::fingerprint`].
    pub fn fingerprint(&self) -> String {
        fingerprint(&("settle", self))
    }
}

/// A settlement message as it is read, before any check beyond JSON types; `type` (`settle`)
/// is read before it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettlementMessage {
    /// The protocol version, 1.
    #[serde(rename = "version")]
    #[schema(value_type = u32, minimum = 1, maximum = 1)]
    _version: serde_json::Value,
    /// The settlement's idempotency key.
    #[schema(value_type = PaymentId)]
    id: String,
    /// 1-16 legs, applied together or not at all.
    #[schema(min_items = 1, max_items = 16)]
    legs: Vec<LegMessage>,
    /// The client's own data, recorded with the settlement.
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// One leg of a [`SettlementMessage`].
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LegMessage {
    /// The debited account.
    #[schema(value_type = AccountId)]
    payer: String,
    /// The credited account.
    #[schema(value_type = AccountId)]
    payee: String,
    /// Minor units of the leg's unit.
    #[schema(schema_with = crate::openapi::amount_schema)]
    amount: serde_json::Number,
    /// The unit of both accounts: a currency or a registered asset.
    #[schema(value_type = Unit)]
    currency: String,
}

fn check_settlement(wire: SettlementMessage) -> Result<SettlementRequest, Refusal> {
    let Ok(checked_id) = PaymentId::new(wire.id.as_str()) else {
        return Err(Refusal::new(None, Code::InvalidRequest, ID_RULE));
    };
    let id = Some(wire.id.as_str());
    let invalid = |message: String| Refusal::new(id, Code::InvalidRequest, message);
    if !(1..=MAX_LEGS).contains(&wire.legs.len()) {
        return Err(invalid(format!("a settlement has 1 ..= {MAX_LEGS} legs, not {}", wire.legs.len())));
    }
    let mut legs = Vec::with_capacity(wire.legs.len());
    for (index, leg) in wire.legs.into_iter().enumerate() {
        let payer = AccountId::new(leg.payer).map_err(|error| invalid(format!("legs[{index}].payer: {error}")))?;
        let payee = AccountId::new(leg.payee).map_err(|error| invalid(format!("legs[{index}].payee: {error}")))?;
        if payer == payee {
            return Err(invalid(format!("legs[{index}]: payer and payee must differ")));
        }
        let amount = check_amount(&leg.amount)
            .map_err(|(code, message)| Refusal::new(id, code, format!("legs[{index}]: {message}")))?;
        let currency = leg.currency.parse().map_err(|error: UnknownUnit| invalid(format!("legs[{index}]: {error}")))?;
        legs.push(Leg { payer, payee, amount, currency });
    }
    Ok(SettlementRequest { id: checked_id, legs, metadata: wire.metadata })
}

/// One checked message on an account's subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A payment, or an authorization.
    Pay(PaymentRequest),
    /// A capture or a void of an authorization.
    Hold(HoldRequest),
    /// A refund of a payment or capture.
    Refund(RefundRequest),
    /// A settlement of several legs at once.
    Settle(SettlementRequest),
}

/// The wire form of a refund.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRefund {
    #[serde(rename = "version")]
    _version: serde_json::Value,
    id: String,
    payee: String,
    payment: String,
    #[serde(default)]
    amount: Option<serde_json::Number>,
}

/// The wire form of a capture or void.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireHold {
    #[serde(rename = "version")]
    _version: serde_json::Value,
    id: String,
    payer: String,
    payment: String,
    #[serde(default)]
    amount: Option<serde_json::Number>,
}

/// Why a message was refused before it reached any state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The request's id, when it could be read.
    pub id: Option<String>,
    /// Stable code.
    pub code: Code,
    /// Explanation for humans.
    pub message: String,
}

impl Refusal {
    fn new(id: Option<&str>, code: Code, message: impl Into<String>) -> Self {
        Refusal { id: id.map(str::to_owned), code, message: message.into() }
    }
}

/// Decodes and checks one payment or authorization request body (any other `type` is refused).
pub fn decode(body: &[u8]) -> Result<PaymentRequest, Refusal> {
    match decode_operation(body)? {
        Operation::Pay(request) => Ok(request),
        Operation::Hold(HoldRequest { id, .. })
        | Operation::Refund(RefundRequest { id, .. })
        | Operation::Settle(SettlementRequest { id, .. }) => {
            Err(Refusal::new(Some(id.as_str()), Code::InvalidRequest, "expected a payment or an authorization"))
        }
    }
}

/// Decodes and checks one message on an account's subject: a payment, an authorization, a
/// capture, a void, a refund or a settlement, told apart by its `type` (`payment` when there is
/// none).
pub fn decode_operation(body: &[u8]) -> Result<Operation, Refusal> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(Refusal::new(None, Code::InvalidRequest, format!("message exceeds {MAX_MESSAGE_BYTES} bytes")));
    }
    let value = crate::json::parse(body)
        .map_err(|error| Refusal::new(None, Code::InvalidRequest, format!("not valid JSON: {error}")))?;
    let id = value.get("id").and_then(serde_json::Value::as_str).map(str::to_owned);
    let id = id.as_deref();
    match value.get("version") {
        None => return Err(Refusal::new(id, Code::InvalidRequest, "missing `version`")),
        Some(version) if version.as_u64() != Some(u64::from(PROTOCOL_VERSION)) => {
            return Err(Refusal::new(
                id,
                Code::UnsupportedVersion,
                format!("version {version} is not supported; this host speaks {PROTOCOL_VERSION}"),
            ));
        }
        Some(_) => {}
    }
    let mut value = value;
    let kind = match value.as_object_mut().and_then(|object| object.remove("type")) {
        None => "payment".to_owned(),
        Some(serde_json::Value::String(kind)) => kind,
        Some(other) => return Err(Refusal::new(id, Code::InvalidRequest, format!("`type` {other} is not a string"))),
    };
    let invalid =
        |error: serde_json::Error| Refusal::new(id, Code::InvalidRequest, format!("invalid request: {error}"));
    match kind.as_str() {
        "payment" | "authorize" => {
            let wire: PaymentMessage = serde_json::from_value(value).map_err(invalid)?;
            let kind = if kind == "payment" { PaymentKind::Payment } else { PaymentKind::Authorize };
            check(wire, kind).map(Operation::Pay)
        }
        "capture" | "void" => {
            let wire: WireHold = serde_json::from_value(value).map_err(invalid)?;
            let action = if kind == "capture" { HoldAction::Capture } else { HoldAction::Void };
            check_hold(wire, action).map(Operation::Hold)
        }
        "refund" => {
            let wire: WireRefund = serde_json::from_value(value).map_err(invalid)?;
            check_refund(wire).map(Operation::Refund)
        }
        "settle" => {
            let wire: SettlementMessage = serde_json::from_value(value).map_err(invalid)?;
            check_settlement(wire).map(Operation::Settle)
        }
        other => Err(Refusal::new(
            id,
            Code::InvalidRequest,
            format!("`type` `{other}` is not one of payment, authorize, capture, void, refund, settle"),
        )),
    }
}

fn check_refund(wire: WireRefund) -> Result<RefundRequest, Refusal> {
    let Ok(checked_id) = PaymentId::new(wire.id.as_str()) else {
        return Err(Refusal::new(None, Code::InvalidRequest, ID_RULE));
    };
    let id = Some(wire.id.as_str());
    let invalid = |message: String| Refusal::new(id, Code::InvalidRequest, message);
    let payee = AccountId::new(wire.payee).map_err(|error| invalid(format!("payee: {error}")))?;
    let payment = PaymentId::new(wire.payment).map_err(|error| invalid(format!("payment: {error}")))?;
    let amount = match wire.amount {
        None => None,
        Some(amount) => Some(check_amount(&amount).map_err(|(code, message)| Refusal::new(id, code, message))?),
    };
    Ok(RefundRequest { id: checked_id, payee, payment, amount })
}

fn check_hold(wire: WireHold, kind: HoldAction) -> Result<HoldRequest, Refusal> {
    let Ok(checked_id) = PaymentId::new(wire.id.as_str()) else {
        return Err(Refusal::new(None, Code::InvalidRequest, ID_RULE));
    };
    let id = Some(wire.id.as_str());
    let invalid = |message: String| Refusal::new(id, Code::InvalidRequest, message);
    let payer = AccountId::new(wire.payer).map_err(|error| invalid(format!("payer: {error}")))?;
    let payment = PaymentId::new(wire.payment).map_err(|error| invalid(format!("payment: {error}")))?;
    let amount = match (kind, wire.amount) {
        (_, None) => None,
        (HoldAction::Void, Some(_)) => return Err(invalid("a void releases the whole hold: no `amount`".into())),
        (HoldAction::Capture, Some(amount)) => {
            Some(check_amount(&amount).map_err(|(code, message)| Refusal::new(id, code, message))?)
        }
    };
    Ok(HoldRequest { kind, id: checked_id, payer, payment, amount })
}

/// The rule for ids, as refusals state it.
pub const ID_RULE: &str = "`id` must be 1-64 characters of A-Z a-z 0-9 _ - . :";

/// The id of a payment or a deposit: its idempotency key, 1-64 characters of
/// `[A-Za-z0-9_.:-]`, checked once where it enters and carried as this type from then on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PaymentId(String);

/// An id that breaks the rule of [`PaymentId`] ([`ID_RULE`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{ID_RULE}, not `{0}`")]
pub struct InvalidPaymentId(pub String);

impl PaymentId {
    /// Checks and wraps `id`.
    pub fn new(id: impl Into<String>) -> Result<PaymentId, InvalidPaymentId> {
        let id = id.into();
        let valid = (1..=64).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if valid { Ok(PaymentId(id)) } else { Err(InvalidPaymentId(id)) }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PaymentId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for PaymentId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

fn check(wire: PaymentMessage, kind: PaymentKind) -> Result<PaymentRequest, Refusal> {
    let Ok(checked_id) = PaymentId::new(wire.id.as_str()) else {
        return Err(Refusal::new(None, Code::InvalidRequest, ID_RULE));
    };
    let id = Some(wire.id.as_str());
    let invalid = |message: String| Refusal::new(id, Code::InvalidRequest, message);
    let payer = AccountId::new(wire.payer).map_err(|error| invalid(format!("payer: {error}")))?;
    let payee = AccountId::new(wire.payee).map_err(|error| invalid(format!("payee: {error}")))?;
    if payer == payee {
        return Err(invalid("payer and payee must differ".into()));
    }
    let amount = check_amount(&wire.amount).map_err(|(code, message)| Refusal::new(id, code, message))?;
    let currency = wire.currency.parse().map_err(|error: UnknownCurrency| invalid(error.to_string()))?;
    let method_ok = (1..=32).contains(&wire.method.len())
        && wire.method.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !method_ok {
        return Err(invalid("`method` must be 1-32 characters of a-z 0-9 _ -".into()));
    }
    let counter_currency: Option<Currency> = wire
        .counter_currency
        .map(|code| code.parse().map_err(|error: UnknownCurrency| invalid(format!("counter_currency: {error}"))))
        .transpose()?;
    if counter_currency == Some(currency) {
        return Err(invalid("`counter_currency` is the payee's currency when it differs from `currency`".into()));
    }
    let quote = wire
        .quote
        .map(|quote| PaymentId::new(quote).map_err(|error| invalid(format!("quote: {error}"))))
        .transpose()?;
    if kind == PaymentKind::Authorize && (counter_currency.is_some() || quote.is_some()) {
        return Err(invalid("an authorization holds one currency: a cross-border payment is posted at once".into()));
    }
    Ok(PaymentRequest {
        kind,
        id: checked_id,
        payer,
        payee,
        amount,
        currency,
        method: wire.method,
        details: wire.details,
        metadata: wire.metadata,
        counter_currency,
        quote,
    })
}

pub(crate) fn check_amount(amount: &serde_json::Number) -> Result<u64, (Code, String)> {
    if let Some(minor_units) = amount.as_u64() {
        if (1..=MAX_PAYMENT_MINOR_UNITS).contains(&minor_units) {
            return Ok(minor_units);
        }
        return Err((
            Code::AmountOutOfRange,
            format!("amount {minor_units} is not within 1 ..= {MAX_PAYMENT_MINOR_UNITS}"),
        ));
    }
    if amount.is_i64() {
        return Err((Code::AmountOutOfRange, format!("amount {amount} is not within 1 ..= {MAX_PAYMENT_MINOR_UNITS}")));
    }
    // Not representable as an integer: a fraction, an exponent, or beyond 64 bits. Only the
    // magnitude decides the code; a fraction is malformed whatever its size.
    let value = amount.as_f64().unwrap_or(f64::NAN);
    let within = (1.0..=9_007_199_254_740_991.0).contains(&value);
    if value.fract() != 0.0 || within {
        return Err((Code::InvalidRequest, format!("amount {amount} must be an integer number of minor units")));
    }
    Err((Code::AmountOutOfRange, format!("amount {amount} is not within 1 ..= {MAX_PAYMENT_MINOR_UNITS}")))
}
