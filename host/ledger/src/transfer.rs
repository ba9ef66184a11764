//! What is recorded: a transfer (a payment or a deposit), the replies its caller stores with
//! it, the ledger's decision on it, and its entries, which always sum to zero. Types and pure
//! rules only: `decision` decides batches of them, the store writes them.

use crate::account::fee_account;
use crate::conversion::Conversion;
use crate::error::LedgerError;
use wasmpay_protocol::money::{FeeBearer, MinorUnits, Unit};
use wasmpay_protocol::routing::AccountId;
use wasmpay_protocol::{Code, Leg, PaymentId};

/// What is being recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferKind {
    /// A client payment decided by plugins.
    Payment,
    /// Funding from the currency's external account.
    Deposit,
    /// A client payment decided by plugins into an account of another currency: the payer
    /// pays the amount (and a payer-borne fee) in the transfer's currency, the payee is paid
    /// [`Conversion::counter_amount`] in its own, through the two currencies' FX accounts.
    CrossBorder(Box<Conversion>),
    /// A client payment decided by plugins whose amount and payer-borne fee are held on the
    /// payer (its available balance drops) until a capture posts it, a void releases it, or
    /// the ledger releases it at `expires_at_ms`.
    Authorization {
        /// When the hold lapses, on the ledger's clock (the deciding owner's wall clock).
        expires_at_ms: i64,
    },
    /// Posts (part of) an authorization: `amount` of it, with the fee prorated by
    /// [`prorated_fee`](wasmpay_protocol::money::prorated_fee), and releases the whole hold.
    Capture {
        /// The authorization's id.
        authorization: PaymentId,
    },
    /// Releases an authorization's hold; posts nothing.
    Void {
        /// The authorization's id.
        authorization: PaymentId,
    },
    /// Moves `amount` back from a payment's payee (this transfer's payer) to its payer (this
    /// transfer's payee), up to what the payment (or capture) moved in all. Its `fee` is one
    /// the fee policy charges the refunding payee; or, instead, `reversal` gives part of the
    /// payment's fee back.
    Refund {
        /// The approved payment or the capture refunded.
        payment: PaymentId,
        /// What of the payment's fee the refund gives back, if any.
        reversal: Option<FeeReversal>,
    },
    /// Every leg posted, or none: a settlement (delivery versus payment). The transfer's own
    /// payer, payee, currency and amount are its first leg's; its fee is zero.
    Settlement {
        /// The legs, in order (at most [`wasmpay_protocol::MAX_LEGS`]).
        legs: Vec<Leg>,
    },
    /// The ledger's own release of a hold at its expiry, by the payer's owner. It has no id of
    /// its own (the transfer's id is the authorization's) and records no payment row: it
    /// closes the hold, once, or does nothing.
    Expiry,
}

/// Part of a payment's fee given back by one of its refunds: debited from the unit's fee
/// account and credited to whoever bore the fee, which is the refund's `fee_bearer` (its payer,
/// the payment's payee, when the payee bore the fee; its payee otherwise). In all, a payment's
/// refunds give back at most [`reversible_fee`](wasmpay_protocol::money::reversible_fee).
///
/// The fee account is debited, so the batch locks its row like a payer's: reversing refunds
/// wait on each other, never on payments, which only credit it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeeReversal {
    /// How much, positive.
    pub amount: MinorUnits,
    fee_account: AccountId,
}

impl FeeReversal {
    /// `amount` of a fee in `unit`, given back from the unit's fee account.
    pub fn new(amount: MinorUnits, unit: Unit) -> FeeReversal {
        FeeReversal { amount, fee_account: fee_account(unit) }
    }
}

impl TransferKind {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            TransferKind::Payment | TransferKind::CrossBorder(_) => "payment",
            TransferKind::Deposit => "deposit",
            TransferKind::Authorization { .. } => "authorization",
            TransferKind::Capture { .. } => "capture",
            TransferKind::Void { .. } => "void",
            TransferKind::Refund { .. } => "refund",
            TransferKind::Settlement { .. } => "settlement",
            TransferKind::Expiry => "expiry",
        }
    }

    /// The payment this transfer acts on, recorded as its `parent`.
    pub(crate) fn parent(&self) -> Option<&PaymentId> {
        match self {
            TransferKind::Refund { payment, .. } => Some(payment),
            kind => kind.closes(),
        }
    }

    /// What of its payment's fee a refund gives back (zero for every other transfer).
    pub fn fee_reversed(&self) -> MinorUnits {
        match self {
            TransferKind::Refund { reversal: Some(reversal), .. } => reversal.amount,
            _ => MinorUnits::ZERO,
        }
    }

    /// A cross-border payment's conversion.
    pub fn conversion(&self) -> Option<&Conversion> {
        match self {
            TransferKind::CrossBorder(conversion) => Some(conversion),
            _ => None,
        }
    }

    /// The authorization whose hold this transfer closes, if it closes one.
    pub(crate) fn closes(&self) -> Option<&PaymentId> {
        match self {
            TransferKind::Capture { authorization } | TransferKind::Void { authorization } => Some(authorization),
            _ => None,
        }
    }
}

/// One transfer to record. The caller has checked that both accounts exist and hold
/// `currency`; the ledger checks it again under the lock.
#[derive(Clone, Debug)]
pub struct Transfer {
    /// Idempotency key.
    pub id: PaymentId,
    /// Payment or deposit.
    pub kind: TransferKind,
    /// Fingerprint of the request: a retry must carry the same one.
    pub request_hash: String,
    /// Debited account.
    pub payer: AccountId,
    /// Credited account.
    pub payee: AccountId,
    /// Unit of the transfer and of both accounts (a currency, except in a settlement's or a
    /// deposit's asset legs).
    pub currency: Unit,
    /// Amount before fees, positive.
    pub amount: MinorUnits,
    /// Fee, zero or positive.
    pub fee: MinorUnits,
    /// Who bears the fee.
    pub fee_bearer: FeeBearer,
    /// `name@version` of the deciding plugins.
    pub plugins: String,
    /// The payment method, for payments and authorizations.
    pub method: Option<String>,
    /// The client's metadata as a JSON object, when it sent any: recorded for statements and
    /// the payment's record, never interpreted.
    pub metadata: Option<String>,
    /// The id of the client key it came with over HTTP, if any.
    pub client: Option<String>,
    /// Partition of the payer, for payments.
    pub partition: Option<u32>,
    /// The fencing token of the lease under which `partition`'s owner decided this transfer
    /// (cluster mode); `None` on a node that holds no leases. The batch is refused whole if
    /// the ledger has seen a newer token for the partition.
    pub lease_token: Option<u64>,
    /// Wall-clock time of the decision.
    pub now_ms: i64,
}

impl Transfer {
    /// What the payee is credited in the transfer's currency, before any conversion: the
    /// amount, less the fee (net of a refund's reversal) when the payee bears it. A cross-border
    /// payment converts exactly this.
    pub fn credited(&self) -> Result<MinorUnits, LedgerError> {
        let overflow = || LedgerError::Overflow(self.payee.to_string());
        let fee = self.fee.checked_sub(self.kind.fee_reversed()).map_err(|_| overflow())?;
        match self.fee_bearer {
            FeeBearer::Payer => Ok(self.amount),
            FeeBearer::Payee => self.amount.checked_sub(fee).map_err(|_| overflow()),
        }
    }

    /// Every account the transfer may debit: its payer, a settlement's other legs' payers, the
    /// fee account a refund gives a fee back from, and the FX account a cross-border payment
    /// pays its payee from. The batch locks them all, and a transfer waits while another
    /// writer holds any.
    pub(crate) fn debited(&self) -> impl Iterator<Item = &AccountId> {
        let (legs, system) = match &self.kind {
            TransferKind::Settlement { legs } => (legs.as_slice(), None),
            TransferKind::Refund { reversal, .. } => (&[][..], reversal.as_ref().map(|reversal| &reversal.fee_account)),
            TransferKind::CrossBorder(conversion) => (&[][..], Some(conversion.fx_counter())),
            _ => (&[][..], None),
        };
        std::iter::once(&self.payer).chain(legs.iter().map(|leg| &leg.payer)).chain(system)
    }

    /// Every account the transfer may post to, fee accounts aside.
    pub(crate) fn accounts(&self) -> impl Iterator<Item = &AccountId> {
        let (legs, fx) = match &self.kind {
            TransferKind::Settlement { legs } => (legs.as_slice(), None),
            TransferKind::CrossBorder(conversion) => (&[][..], Some([conversion.fx_source(), conversion.fx_counter()])),
            _ => (&[][..], None),
        };
        [&self.payer, &self.payee]
            .into_iter()
            .chain(legs.iter().flat_map(|leg| [&leg.payer, &leg.payee]))
            .chain(fx.into_iter().flatten())
    }
}

/// The reply a caller stores with a transfer, rendered before the transfer is submitted for
/// each decision the ledger can make. The ledger stores and returns the bytes it was given, so
/// a retry gets exactly what the first caller got, and no caller code runs inside a ledger
/// transaction (where a panic would take the batch, and the committer, with it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replies {
    /// A plugin declined the transfer: the ledger records the decline with this reply and
    /// posts nothing.
    DeclinedByPlugin(String),
    /// A payment, deposit or authorization the ledger decides: `approved` is stored if it
    /// posts (or holds) the amount, `insufficient_funds` if the payer's floor declines it.
    Posting {
        /// The reply of an approval.
        approved: String,
        /// The reply of a decline for insufficient funds.
        insufficient_funds: String,
    },
    /// A refund: `approved` if it posts, `insufficient_funds` if the refunding payee's floor
    /// declines it, `exceeds_refundable` if it would take back more than the payment moved.
    Refunding {
        /// The reply of an approval.
        approved: String,
        /// The reply of a decline for insufficient funds.
        insufficient_funds: String,
        /// The reply of a refund of more than is left to refund.
        exceeds_refundable: String,
    },
    /// A cross-border payment made with an FX quote: `approved` if it posts,
    /// `insufficient_funds` if the payer's floor declines it, `quote_expired` if the ledger
    /// decides it after the quote's expiry, `quote_used` if another payment converted with the
    /// quote already.
    Quoted {
        /// The reply of an approval.
        approved: String,
        /// The reply of a decline for insufficient funds.
        insufficient_funds: String,
        /// The reply when the quote expired.
        quote_expired: String,
        /// The reply when the quote was used already.
        quote_used: String,
    },
    /// A capture, void or expiry of an authorization: the ledger decides on the hold's state
    /// under the payer's lock.
    Closing {
        /// The reply when this transfer closes the open hold.
        closed: String,
        /// The reply when the hold had expired (the hold is released as expired).
        hold_expired: String,
        /// The reply when the hold was closed already (captured, voided or expired).
        not_open: String,
    },
}

impl Replies {
    /// Whether a plugin already declined: the decline is recorded and nothing is posted.
    pub(crate) fn declined_by_plugin(&self) -> bool {
        matches!(self, Replies::DeclinedByPlugin(_))
    }

    /// The reply of `decision`, if the caller rendered one for it. A plugin's decline has one
    /// reply whatever the decision (the ledger decides [`Decision::PluginDeclined`] for it and
    /// nothing else).
    pub(crate) fn into_reply(self, decision: Decision) -> Option<String> {
        match (self, decision) {
            (Replies::DeclinedByPlugin(reply), _) => Some(reply),
            (Replies::Posting { approved, .. }, Decision::Approved) => Some(approved),
            (Replies::Posting { insufficient_funds, .. }, Decision::InsufficientFunds) => Some(insufficient_funds),
            (Replies::Refunding { approved, .. }, Decision::Approved) => Some(approved),
            (Replies::Refunding { insufficient_funds, .. }, Decision::InsufficientFunds) => Some(insufficient_funds),
            (Replies::Refunding { exceeds_refundable, .. }, Decision::ExceedsRefundable) => Some(exceeds_refundable),
            (Replies::Quoted { approved, .. }, Decision::Approved) => Some(approved),
            (Replies::Quoted { insufficient_funds, .. }, Decision::InsufficientFunds) => Some(insufficient_funds),
            (Replies::Quoted { quote_expired, .. }, Decision::QuoteExpired) => Some(quote_expired),
            (Replies::Quoted { quote_used, .. }, Decision::QuoteUsed) => Some(quote_used),
            (Replies::Closing { closed, .. }, Decision::Approved) => Some(closed),
            (Replies::Closing { hold_expired, .. }, Decision::HoldExpired) => Some(hold_expired),
            (Replies::Closing { not_open, .. }, Decision::HoldNotOpen) => Some(not_open),
            _ => None,
        }
    }
}

/// The ledger's verdict on a new transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Posted (a payment, deposit or capture), held (an authorization) or released (a void or
    /// an expiry).
    Approved,
    /// The payer's available balance would fall below its floor; recorded, nothing posted.
    InsufficientFunds,
    /// A plugin declined; recorded, nothing posted.
    PluginDeclined,
    /// A capture or void found its authorization expired: recorded, and the hold released as
    /// expired.
    HoldExpired,
    /// A capture or void found its authorization closed already (an expiry: nothing due);
    /// recorded, nothing changed.
    HoldNotOpen,
    /// A refund would take back more than the payment moved, with the refunds before it;
    /// recorded, nothing posted.
    ExceedsRefundable,
    /// A cross-border payment's quote expired before the ledger decided it; recorded, nothing
    /// posted.
    QuoteExpired,
    /// A cross-border payment's quote converted another payment already; recorded, nothing
    /// posted.
    QuoteUsed,
}

impl Decision {
    /// The decision's code on the wire and in the ledger's `payments` rows (with its status,
    /// [`Code::status`]) for a transfer of `kind`: the one mapping from a ledger decision to a
    /// reply code.
    pub fn code(self, kind: &TransferKind) -> Code {
        match (self, kind) {
            (Decision::Approved, TransferKind::Payment | TransferKind::CrossBorder(_) | TransferKind::Deposit) => {
                Code::Ok
            }
            (Decision::Approved, TransferKind::Authorization { .. }) => Code::Authorized,
            (Decision::Approved, TransferKind::Capture { .. }) => Code::Captured,
            (Decision::Approved, TransferKind::Void { .. }) => Code::Voided,
            (Decision::Approved, TransferKind::Refund { .. }) => Code::Refunded,
            (Decision::Approved, TransferKind::Settlement { .. }) => Code::Settled,
            (Decision::Approved, TransferKind::Expiry) => Code::Expired,
            (Decision::InsufficientFunds, _) => Code::InsufficientFunds,
            (Decision::PluginDeclined, _) => Code::PluginDeclined,
            (Decision::HoldExpired, _) => Code::HoldExpired,
            (Decision::HoldNotOpen, _) => Code::InvalidState,
            (Decision::ExceedsRefundable, _) => Code::ExceedsRefundable,
            (Decision::QuoteExpired, _) => Code::QuoteExpired,
            (Decision::QuoteUsed, _) => Code::QuoteUsed,
        }
    }
}

/// What [`Ledger::record`](crate::Ledger::record) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// This call decided the transfer; `reply` is what was stored.
    New {
        /// The decision.
        decision: Decision,
        /// The stored reply.
        reply: String,
    },
    /// The id was already recorded (a retry, or a concurrent duplicate): its fingerprint and
    /// stored reply, byte for byte.
    Existing(StoredReply),
}

/// One balance change, before it is written: `amount` of `unit` on `account`, which must hold
/// `unit`.
pub(crate) struct Posting<'a> {
    pub(crate) account: &'a AccountId,
    pub(crate) amount: MinorUnits,
    pub(crate) unit: Unit,
}

/// The entries of a transfer: they always sum to zero, unit by unit. A fee goes from its
/// bearer to the fee account; a refund's fee reversal comes back from it to the bearer. A
/// cross-border payment credits what its payee would get to the FX account of its currency,
/// and pays the payee its conversion from the FX account of the payee's.
pub(crate) fn postings<'a>(
    transfer: &'a Transfer,
    fee_account: &'a AccountId,
) -> Result<Vec<Posting<'a>>, LedgerError> {
    let overflow = |account: &AccountId| LedgerError::Overflow(account.to_string());
    let fee = transfer.fee.checked_sub(transfer.kind.fee_reversed()).map_err(|_| overflow(fee_account))?;
    let credit = transfer.credited()?;
    let debit = match transfer.fee_bearer {
        FeeBearer::Payer => transfer.amount.checked_add(fee).map_err(|_| overflow(&transfer.payer))?,
        FeeBearer::Payee => transfer.amount,
    };
    let unit = transfer.currency;
    let mut postings = vec![Posting {
        account: &transfer.payer,
        amount: debit.checked_neg().map_err(|_| overflow(&transfer.payer))?,
        unit,
    }];
    match &transfer.kind {
        TransferKind::CrossBorder(conversion) => {
            if unit != Unit::Currency(conversion.source) || conversion.counter == conversion.source {
                return Err(LedgerError::Invalid(format!(
                    "{}: a conversion from the payment's currency to another one",
                    transfer.id
                )));
            }
            if conversion.rate.is_none() {
                return Err(LedgerError::Invalid(format!("{}: a conversion posts only at a rate", transfer.id)));
            }
            let paid = conversion.counter_amount(credit).ok_or_else(|| {
                LedgerError::Invalid(format!("{}: {credit} converts to no payable amount", transfer.id))
            })?;
            let counter = Unit::Currency(conversion.counter);
            postings.push(Posting { account: conversion.fx_source(), amount: credit, unit });
            postings.push(Posting {
                account: conversion.fx_counter(),
                amount: paid.checked_neg().map_err(|_| overflow(conversion.fx_counter()))?,
                unit: counter,
            });
            postings.push(Posting { account: &transfer.payee, amount: paid, unit: counter });
        }
        _ => postings.push(Posting { account: &transfer.payee, amount: credit, unit }),
    }
    if fee != MinorUnits::ZERO {
        postings.push(Posting { account: fee_account, amount: fee, unit });
    }
    postings.retain(|posting| posting.amount != MinorUnits::ZERO);
    // At most two units (the transfer's, and a conversion's counter): summed without a
    // collection, since this runs for every payment.
    let (mut own, mut counter) = (MinorUnits::ZERO, MinorUnits::ZERO);
    for posting in &postings {
        let sum = if posting.unit == unit { &mut own } else { &mut counter };
        *sum = sum.checked_add(posting.amount).map_err(|_| overflow(posting.account))?;
    }
    assert!(
        own == MinorUnits::ZERO && counter == MinorUnits::ZERO,
        "entries of {} must sum to zero per unit",
        transfer.id
    );
    Ok(postings)
}

/// What the ledger keeps of a recorded transfer to answer a retry: the fingerprint of the
/// request that created it, and the reply stored with it, byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredReply {
    /// Fingerprint of the recorded request.
    pub request_hash: String,
    /// The stored reply.
    pub reply: String,
}
