//! Decoding a payment request: strict and total. Any input, however malformed, becomes
//! either a checked [`PaymentRequest`] or a [`Refusal`] with a code; nothing here panics.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::money::{Currency, MAX_PAYMENT_MINOR_UNITS, UnknownCurrency};
use crate::routing::AccountId;
use crate::{Code, MAX_MESSAGE_BYTES, PROTOCOL_VERSION};

/// The wire form of a request, before any check beyond JSON types.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRequest {
    #[serde(rename = "version")]
    _version: serde_json::Value,
    id: String,
    payer: String,
    payee: String,
    amount: serde_json::Number,
    currency: String,
    method: String,
    #[serde(default)]
    details: BTreeMap<String, String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// A request that passed every stateless check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PaymentRequest {
    /// Idempotency key.
    pub id: PaymentId,
    /// Debited account.
    #[serde(serialize_with = "serialize_account")]
    pub payer: AccountId,
    /// Credited account.
    #[serde(serialize_with = "serialize_account")]
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
}

fn serialize_account<S: serde::Serializer>(account: &AccountId, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(account.as_str())
}

impl PaymentRequest {
    /// SHA-256 over the canonical JSON of the checked request (sorted maps, no `version`):
    /// two requests with the same id are "the same payment" exactly when their hashes match.
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&canonical);
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }
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

/// Decodes and checks one request body.
pub fn decode(body: &[u8]) -> Result<PaymentRequest, Refusal> {
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
    let wire: WireRequest = serde_json::from_value(value)
        .map_err(|error| Refusal::new(id, Code::InvalidRequest, format!("invalid request: {error}")))?;
    check(wire)
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

fn check(wire: WireRequest) -> Result<PaymentRequest, Refusal> {
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
    Ok(PaymentRequest {
        id: checked_id,
        payer,
        payee,
        amount,
        currency,
        method: wire.method,
        details: wire.details,
        metadata: wire.metadata,
    })
}

fn check_amount(amount: &serde_json::Number) -> Result<u64, (Code, String)> {
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
