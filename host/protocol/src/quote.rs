//! Asking for an FX quote before a cross-border payment: strict decoding of the request, like
//! a payment's. The quote itself (its id, rate, amounts and expiry) is the ledger's record.

use serde::{Deserialize, Serialize};

use crate::money::{Currency, MinorUnits, Rate, UnknownCurrency};
use crate::request::check_amount;
use crate::routing::AccountId;
use crate::{Code, MAX_MESSAGE_BYTES, Refusal};

/// An FX quote: the rate one payment from `payer` to `payee` of `amount` gets, and what the
/// payee is paid when the payer bears the fee, until `expires_at_ms`. What `wasmpay.fx.quote`
/// and `POST /v1/fx/quotes` answer (in the reply's `quote`), and what the ledger keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FxQuote {
    /// Its id, which the payment names (`quote`).
    pub id: String,
    /// The paying account.
    #[serde(deserialize_with = "crate::request::deserialize_account")]
    pub payer: AccountId,
    /// The paid account, which holds `counter_currency`.
    #[serde(deserialize_with = "crate::request::deserialize_account")]
    pub payee: AccountId,
    /// The payer's currency.
    #[serde(deserialize_with = "deserialize_currency")]
    pub currency: Currency,
    /// What the payer sends, before fees, in minor units of `currency`.
    pub amount: MinorUnits,
    /// The payee's currency.
    #[serde(deserialize_with = "deserialize_currency")]
    pub counter_currency: Currency,
    /// What the payee is paid, in minor units of `counter_currency`, when the payer bears the
    /// fee (a payee-borne fee is taken off `amount` before it is converted).
    pub counter_amount: MinorUnits,
    /// Major units of `counter_currency` per major unit of `currency`, markup applied.
    pub rate: Rate,
    /// `name@version` of the FX plugin that priced it.
    pub fx_plugin: String,
    /// When it was made (Unix milliseconds).
    pub created_at_ms: i64,
    /// The last instant a payment may be decided with it (Unix milliseconds, the deciding
    /// node's clock).
    pub expires_at_ms: i64,
}

/// A currency read back from a quote (`Currency`'s own derive asks for a `'static` input).
fn deserialize_currency<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Currency, D::Error> {
    String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
}

/// A quote request as it is read (`POST /v1/fx/quotes`, or `wasmpay.fx.quote` over NATS).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuoteMessage {
    /// The protocol version, 1 (optional).
    #[serde(rename = "version", default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 1)]
    _version: Option<serde_json::Value>,
    /// The account that will pay, in `currency`.
    #[schema(value_type = AccountId)]
    payer: String,
    /// The account that will be paid, in `counter_currency`.
    #[schema(value_type = AccountId)]
    payee: String,
    /// What the payer will send, before fees, in minor units of `currency`.
    #[schema(schema_with = crate::openapi::amount_schema)]
    amount: serde_json::Number,
    /// The payer's currency.
    #[schema(value_type = Currency)]
    currency: String,
    /// The payee's currency.
    #[schema(value_type = Currency)]
    counter_currency: String,
}

/// A quote request that passed every stateless check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteRequest {
    /// The paying account.
    pub payer: AccountId,
    /// The paid account.
    pub payee: AccountId,
    /// Minor units of `currency`, 1 ..= 2^53 - 1.
    pub amount: u64,
    /// The payer's currency.
    pub currency: Currency,
    /// The payee's currency, never `currency`.
    pub counter_currency: Currency,
}

/// Decodes and checks a quote request body.
pub fn decode_quote(body: &[u8]) -> Result<QuoteRequest, Refusal> {
    let refuse = |code: Code, message: String| Refusal { id: None, code, message };
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(refuse(Code::InvalidRequest, format!("message exceeds {MAX_MESSAGE_BYTES} bytes")));
    }
    let value =
        crate::json::parse(body).map_err(|error| refuse(Code::InvalidRequest, format!("not valid JSON: {error}")))?;
    if let Some(version) = value.get("version")
        && version.as_u64() != Some(u64::from(crate::PROTOCOL_VERSION))
    {
        return Err(refuse(Code::UnsupportedVersion, format!("version {version} is not supported")));
    }
    let wire: QuoteMessage = serde_json::from_value(value)
        .map_err(|error| refuse(Code::InvalidRequest, format!("invalid quote request: {error}")))?;
    let invalid = |message: String| refuse(Code::InvalidRequest, message);
    let payer = AccountId::new(wire.payer).map_err(|error| invalid(format!("payer: {error}")))?;
    let payee = AccountId::new(wire.payee).map_err(|error| invalid(format!("payee: {error}")))?;
    if payer == payee {
        return Err(invalid("payer and payee must differ".into()));
    }
    let amount = check_amount(&wire.amount).map_err(|(code, message)| refuse(code, message))?;
    let currency: Currency =
        wire.currency.parse().map_err(|error: UnknownCurrency| invalid(format!("currency: {error}")))?;
    let counter_currency: Currency = wire
        .counter_currency
        .parse()
        .map_err(|error: UnknownCurrency| invalid(format!("counter_currency: {error}")))?;
    if counter_currency == currency {
        return Err(invalid("`counter_currency` must differ from `currency`: a quote converts".into()));
    }
    Ok(QuoteRequest { payer, payee, amount, currency, counter_currency })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quote_request_is_checked_like_a_payment() {
        let request = |body: &str| decode_quote(body.as_bytes()).map_err(|refusal| refusal.code);
        let good = r#"{"payer":"alice","payee":"bob","amount":10000,"currency":"EUR","counter_currency":"USD"}"#;
        let decoded = request(good).expect("valid");
        assert_eq!((decoded.amount, decoded.counter_currency.code()), (10_000, "USD"));
        assert!(request(&good.replace('{', r#"{"version":1,"#)).is_ok());
        for (bad, code) in [
            (good.replace("\"USD\"", "\"EUR\""), Code::InvalidRequest),
            (good.replace("\"USD\"", "\"XXX\""), Code::InvalidRequest),
            (good.replace("10000", "0"), Code::AmountOutOfRange),
            (good.replace("10000", "1.5"), Code::InvalidRequest),
            (good.replace("\"bob\"", "\"alice\""), Code::InvalidRequest),
            (good.replace('{', r#"{"rate":"2","#), Code::InvalidRequest),
            (good.replace('{', r#"{"version":2,"#), Code::UnsupportedVersion),
            ("not json".to_owned(), Code::InvalidRequest),
        ] {
            assert_eq!(request(&bad), Err(code), "{bad}");
        }
    }
}
