//! The reply to a payment request, exactly as published on NATS.

use serde::{Deserialize, Serialize};

use crate::money::{FeeBearer, Rate};
use crate::quote::FxQuote;
use crate::{Code, Leg, PROTOCOL_VERSION, Refusal, Status};

/// A reply, exactly as published. For recorded payments the bytes are stored with the payment
/// and a retry with the same id gets them back unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reply {
    /// Always [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The request's id; `null` when it could not be read.
    pub id: Option<String>,
    /// Coarse outcome.
    pub status: Status,
    /// Stable reason code.
    pub code: Code,
    /// Human explanation.
    pub message: String,
    /// The deciding plugin's own code when `code` is `plugin_declined`.
    pub reason: Option<String>,
    /// Whether a later retry of the same request can succeed.
    pub retryable: bool,
    /// Minor units requested.
    pub amount: Option<u64>,
    /// Fee in minor units, once quoted.
    pub fee: Option<u64>,
    /// `payer` or `payee`, once quoted.
    pub fee_bearer: Option<FeeBearer>,
    /// What of the refunded payment's fee a refund gave back to `fee_bearer`, in minor units
    /// (absent otherwise: a refund that keeps the fee, every other reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_reversed: Option<u64>,
    /// ISO 4217 code.
    pub currency: Option<String>,
    /// `name@version` of every plugin that took part in the decision, in order.
    pub plugins: Vec<String>,
    /// The payer's partition, when known.
    pub partition: Option<u32>,
    /// The authorization a capture or void acted on (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<String>,
    /// When an authorization's hold lapses, in Unix milliseconds on the ledger's clock (absent
    /// otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    /// A settlement's legs, as requested (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legs: Option<Vec<Leg>>,
    /// A cross-border payment's other side: what the payee is (or, declined, would have been)
    /// paid in its currency, at which rate (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion: Option<Converted>,
    /// The FX quote given, in the reply to a quote request (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<FxQuote>,
}

/// What a cross-border payment pays its payee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Converted {
    /// The payee's currency.
    pub currency: String,
    /// Minor units of `currency` paid to the payee: the amount (less a payee-borne fee) at
    /// `rate`, rounded down.
    pub amount: u64,
    /// Major units of `currency` per major unit of the payment's, the FX markup applied.
    pub rate: Rate,
    /// The quote it converted at, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<String>,
}

impl Reply {
    /// The reply of `id` with `code` and `message` and nothing else said: every other field
    /// empty, not retryable. A caller sets what its operation has to say with struct update
    /// syntax, so each kind of reply names only what it adds.
    pub fn decided(id: Option<String>, code: Code, message: String, partition: Option<u32>) -> Reply {
        Reply {
            version: PROTOCOL_VERSION,
            id,
            status: code.status(),
            code,
            message,
            reason: None,
            retryable: false,
            amount: None,
            fee: None,
            fee_bearer: None,
            fee_reversed: None,
            currency: None,
            plugins: Vec::new(),
            partition,
            payment: None,
            expires_at_ms: None,
            legs: None,
            conversion: None,
            quote: None,
        }
    }

    /// A reply for a message refused before it reached any state.
    pub fn refused(refusal: &Refusal, partition: Option<u32>) -> Reply {
        Reply {
            retryable: matches!(refusal.code.status(), Status::Error),
            ..Reply::decided(refusal.id.clone(), refusal.code, refusal.message.clone(), partition)
        }
    }

    /// The JSON bytes of this reply.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// The status and code of a reply's JSON, reading nothing else: what a node needs to
    /// replay stored bytes or map them to an HTTP status, so that no other field of a recorded
    /// reply can ever make its payment unanswerable.
    pub fn outcome_of(text: &str) -> Result<(Status, Code), serde_json::Error> {
        #[derive(Deserialize)]
        struct Outcome {
            status: Status,
            code: Code,
        }
        serde_json::from_str::<Outcome>(text).map(|outcome| (outcome.status, outcome.code))
    }
}
