//! What a reply says: the coarse [`Status`] and the stable [`Code`] a client branches on.

use serde::{Deserialize, Serialize};

/// What happened to a payment, coarsely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Posted to the ledger.
    Approved,
    /// Refused by a plugin or for lack of funds; recorded, a retry replays it.
    Declined,
    /// The request itself is invalid; not recorded, a retry gets the same answer.
    Rejected,
    /// Nothing was recorded; retry with the same id.
    Error,
    /// An authorization: the amount and a payer-borne fee are held on the payer, nothing is
    /// posted until a capture.
    Authorized,
    /// A capture posted (part of) an authorization; the rest of its hold was released.
    Captured,
    /// A void released an authorization's hold.
    Voided,
    /// The ledger released an authorization's hold at its expiry (an event, never a reply).
    Expired,
    /// A refund moved money back from a payment's payee to its payer.
    Refunded,
    /// A settlement applied all its legs.
    Settled,
    /// An FX quote was given (`wasmpay.fx.quote`); nothing was recorded but the quote.
    Quoted,
}

impl Status {
    /// The snake_case name, as on the wire and in event subjects.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Approved => "approved",
            Status::Declined => "declined",
            Status::Rejected => "rejected",
            Status::Error => "error",
            Status::Authorized => "authorized",
            Status::Captured => "captured",
            Status::Voided => "voided",
            Status::Expired => "expired",
            Status::Refunded => "refunded",
            Status::Settled => "settled",
            Status::Quoted => "quoted",
        }
    }
}

/// The stable reason code of a reply. Never renamed; new codes may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// Approved and posted.
    Ok,
    /// The message is not a valid request (JSON, fields, limits).
    InvalidRequest,
    /// The `version` field names a protocol this host does not speak.
    UnsupportedVersion,
    /// The payer or payee does not exist.
    UnknownAccount,
    /// No pipeline serves the method.
    UnknownMethod,
    /// A plugin of the method's pipeline does not take the payment's currency.
    UnsupportedCurrency,
    /// The currency differs from the payer's or the payee's.
    CurrencyMismatch,
    /// The amount is not within 1 ..= 2^53 - 1.
    AmountOutOfRange,
    /// The payer's balance would fall below its floor.
    InsufficientFunds,
    /// A plugin declined; `reason` holds its own code.
    PluginDeclined,
    /// A plugin trapped, timed out, ran out of memory or broke the contract.
    PluginFailed,
    /// The id was already used for a different request.
    Conflict,
    /// The subject's partition is not the payer's.
    WrongPartition,
    /// The node cannot decide now (ledger unreachable, shutting down); retry.
    Unavailable,
    /// Authorized: the amount and a payer-borne fee are held until captured, voided or expired.
    Authorized,
    /// Captured: the transfer and its (prorated) fee are posted, the hold is released.
    Captured,
    /// Voided: the hold is released, nothing is posted.
    Voided,
    /// Expired: the ledger released a hold nobody captured by its expiry.
    Expired,
    /// The authorization expired before this capture or void; its hold is released.
    HoldExpired,
    /// The authorization is no longer open (captured, voided or expired already).
    InvalidState,
    /// No authorization (or payment) of this payer has the referenced id.
    UnknownPayment,
    /// A capture of more than was authorized.
    ExceedsAuthorized,
    /// Refunded: the amount moved back from the payment's payee to its payer.
    Refunded,
    /// A refund of more than is left to refund of its payment.
    ExceedsRefundable,
    /// A refund of a payment that moved no money (declined, an authorization not captured).
    NotRefundable,
    /// Settled: every leg of the settlement is posted.
    Settled,
    /// The payment named an FX quote that does not exist.
    UnknownQuote,
    /// The payment differs from the FX quote it names (payer, payee, currencies or amount).
    QuoteMismatch,
    /// The FX quote expired before the ledger decided the payment; ask for a new one.
    QuoteExpired,
    /// The FX quote converted another payment already: a quote converts one payment.
    QuoteUsed,
    /// Quoted: the reply's `quote` holds the rate and both amounts until its expiry.
    Quoted,
}

impl Code {
    /// The status a reply with this code has.
    pub fn status(self) -> Status {
        match self {
            Code::Ok => Status::Approved,
            Code::Authorized => Status::Authorized,
            Code::Captured => Status::Captured,
            Code::Voided => Status::Voided,
            Code::Expired => Status::Expired,
            Code::Refunded => Status::Refunded,
            Code::Settled => Status::Settled,
            Code::Quoted => Status::Quoted,
            Code::InsufficientFunds
            | Code::PluginDeclined
            | Code::HoldExpired
            | Code::InvalidState
            | Code::ExceedsRefundable
            | Code::QuoteExpired
            | Code::QuoteUsed => Status::Declined,
            Code::PluginFailed | Code::Unavailable => Status::Error,
            Code::InvalidRequest
            | Code::UnsupportedVersion
            | Code::UnknownAccount
            | Code::UnknownMethod
            | Code::UnsupportedCurrency
            | Code::CurrencyMismatch
            | Code::AmountOutOfRange
            | Code::Conflict
            | Code::WrongPartition
            | Code::UnknownPayment
            | Code::ExceedsAuthorized
            | Code::NotRefundable
            | Code::UnknownQuote
            | Code::QuoteMismatch => Status::Rejected,
        }
    }

    /// The snake_case name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::InvalidRequest => "invalid_request",
            Code::UnsupportedVersion => "unsupported_version",
            Code::UnknownAccount => "unknown_account",
            Code::UnknownMethod => "unknown_method",
            Code::UnsupportedCurrency => "unsupported_currency",
            Code::CurrencyMismatch => "currency_mismatch",
            Code::AmountOutOfRange => "amount_out_of_range",
            Code::InsufficientFunds => "insufficient_funds",
            Code::PluginDeclined => "plugin_declined",
            Code::PluginFailed => "plugin_failed",
            Code::Conflict => "conflict",
            Code::WrongPartition => "wrong_partition",
            Code::Unavailable => "unavailable",
            Code::Authorized => "authorized",
            Code::Captured => "captured",
            Code::Voided => "voided",
            Code::Expired => "expired",
            Code::HoldExpired => "hold_expired",
            Code::InvalidState => "invalid_state",
            Code::UnknownPayment => "unknown_payment",
            Code::ExceedsAuthorized => "exceeds_authorized",
            Code::Refunded => "refunded",
            Code::ExceedsRefundable => "exceeds_refundable",
            Code::NotRefundable => "not_refundable",
            Code::Settled => "settled",
            Code::UnknownQuote => "unknown_quote",
            Code::QuoteMismatch => "quote_mismatch",
            Code::QuoteExpired => "quote_expired",
            Code::QuoteUsed => "quote_used",
            Code::Quoted => "quoted",
        }
    }
}
