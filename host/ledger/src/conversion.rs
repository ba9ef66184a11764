//! Cross-border payments: a payment whose payee holds another currency than its payer. The
//! payer pays in its currency, the payee is paid in its own, and the ledger books each side in
//! its currency through that currency's FX account, so every currency's entries still sum to
//! zero: `payer → _fx_EUR` in euros, `_fx_USD → payee` in dollars. The FX accounts' balances
//! are the ledger's position, what the operator settles with its FX provider.
//!
//! A rate comes from an FX plugin, live or fixed in advance by a [`Quote`]: an offer for one
//! payment (payer, payee, amount, currencies) at one rate until it expires. The ledger decides a
//! quoted payment under its payer's lock, like every payment of the payer: a quote converts one
//! payment, and only before its expiry. Types and pure rules only: `decision` decides on them,
//! `quotes` stores quotes, the store writes conversions.

use serde::Serialize;

use crate::account::fx_account;
use wasmpay_protocol::money::{Currency, MinorUnits, Rate};
use wasmpay_protocol::routing::AccountId;

/// The other side of a cross-border payment: the payee's currency, the rate, and where it
/// came from. The amount it pays out follows from them ([`Conversion::counter_amount`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversion {
    /// The payer's currency (the transfer's).
    pub source: Currency,
    /// The payee's currency.
    pub counter: Currency,
    /// How many major units of `counter` one of `source` buys, the FX plugin's markup applied;
    /// `None` only for a payment a plugin declined before a rate was quoted (the FX plugin
    /// itself, or the method's plugins): it is recorded, and never posted.
    pub rate: Option<Rate>,
    /// The quote the payment was made with, if it was.
    pub quote: Option<String>,
    /// `name@version` of the FX plugin that priced it.
    pub fx_plugin: String,
    fx_source: AccountId,
    fx_counter: AccountId,
}

impl Conversion {
    /// A conversion from `source` to `counter` at `rate`, priced by `fx_plugin`, with the quote
    /// it was made with, if any.
    pub fn new(
        source: Currency,
        counter: Currency,
        rate: Option<Rate>,
        quote: Option<String>,
        fx_plugin: String,
    ) -> Conversion {
        Conversion {
            source,
            counter,
            rate,
            quote,
            fx_plugin,
            fx_source: fx_account(source),
            fx_counter: fx_account(counter),
        }
    }

    /// What the payee is paid, in `counter`, for `credited` (the amount less a payee-borne fee)
    /// in `source`: rounded down ([`Rate::convert`]). `None` when that is not a payment
    /// amount (nothing, or more than one payment may move).
    pub fn counter_amount(&self, credited: MinorUnits) -> Option<MinorUnits> {
        self.rate?.convert(credited, self.source, self.counter)
    }

    /// The FX account credited in the payer's currency.
    pub(crate) fn fx_source(&self) -> &AccountId {
        &self.fx_source
    }

    /// The FX account debited in the payee's currency.
    pub(crate) fn fx_counter(&self) -> &AccountId {
        &self.fx_counter
    }
}

/// An FX quote, as the protocol carries it and the ledger keeps it.
pub use wasmpay_protocol::quote::FxQuote as Quote;

/// Whether a payment of `amount` from `payer` to `payee` converted by `conversion` is on
/// `quote`'s terms: the same accounts, currencies, amount, rate and FX plugin.
pub(crate) fn fits(
    quote: &Quote,
    payer: &AccountId,
    payee: &AccountId,
    amount: MinorUnits,
    conversion: &Conversion,
) -> bool {
    quote.payer == *payer
        && quote.payee == *payee
        && quote.amount == amount
        && quote.currency == conversion.source
        && quote.counter_currency == conversion.counter
        && Some(quote.rate) == conversion.rate
        && quote.fx_plugin == conversion.fx_plugin
}

/// A quote a batch found, and whether a payment converted with it already.
#[derive(Clone, Debug)]
pub(crate) struct QuoteState {
    pub(crate) quote: Quote,
    pub(crate) used: bool,
}

/// A recorded conversion, as a payment's record shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ConversionRecord {
    /// The payee's currency.
    pub counter_currency: String,
    /// What the payee was paid, in minor units of `counter_currency`.
    pub counter_amount: i64,
    /// The rate, markup applied.
    pub rate: String,
    /// The quote it was made with, if any.
    pub quote: Option<String>,
    /// `name@version` of the FX plugin that priced it.
    pub fx_plugin: String,
}
