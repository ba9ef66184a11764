//! FX quotes: stored when a client asks for one, read when it pays with one. The ledger
//! decides whether a payment may still use its quote (`decision`); here a quote is only kept
//! and looked up.

use crate::conversion::Quote;
use crate::error::LedgerError;
use crate::handle::Ledger;
use crate::store::on_store;
use crate::store::sql::{QuoteRow, SELECT_QUOTES};

/// How long a quote is kept after its expiry: long enough to answer `quote_expired` to a late
/// payment and to look it up, short enough that quotes do not pile up.
pub const QUOTE_RETENTION_MS: i64 = 24 * 60 * 60 * 1_000;

/// Old quotes deleted with each new one: more than one, so that deletion outpaces creation.
const PRUNED_PER_QUOTE: i64 = 4;

/// A new quote's id: `q_` and 24 random hex digits, so that nobody can guess another
/// client's quote (its id is all a payment needs to use it).
pub fn new_quote_id() -> Result<String, LedgerError> {
    let mut random = [0_u8; 12];
    getrandom::getrandom(&mut random)
        .map_err(|error| LedgerError::Invalid(format!("no randomness for a quote id: {error}")))?;
    Ok(std::iter::once("q_".to_owned()).chain(random.iter().map(|byte| format!("{byte:02x}"))).collect())
}

impl Ledger {
    /// Stores `quote`, whose id the caller made unique (a random one), and deletes a few quotes
    /// that expired more than [`QUOTE_RETENTION_MS`] ago, oldest first (through the index on
    /// expiry): quotes cost a row each, and anyone with a client key may ask for them, so they
    /// must not pile up. A used quote's terms stay in its payment's `conversions` row; a retry of
    /// that payment gets its stored reply before any quote is read.
    pub async fn store_quote(&self, quote: &Quote) -> Result<(), LedgerError> {
        on_store!(&self.store, backend => {
            let mut transaction = backend.begin_write().await?;
            sqlx::query(
                "DELETE FROM fx_quotes WHERE id IN (
                     SELECT id FROM fx_quotes WHERE expires_at_ms < $1 ORDER BY expires_at_ms LIMIT $2)",
            )
            .bind(quote.created_at_ms.saturating_sub(QUOTE_RETENTION_MS))
            .bind(PRUNED_PER_QUOTE)
            .execute(&mut *transaction)
            .await?;
            sqlx::query(
                "INSERT INTO fx_quotes (id, payer, payee, currency, amount, counter_currency, counter_amount, rate,
                                        fx_plugin, created_at_ms, expires_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(quote.id.as_str())
            .bind(quote.payer.as_str())
            .bind(quote.payee.as_str())
            .bind(quote.currency.code())
            .bind(quote.amount.0)
            .bind(quote.counter_currency.code())
            .bind(quote.counter_amount.0)
            .bind(quote.rate.to_string())
            .bind(quote.fx_plugin.as_str())
            .bind(quote.created_at_ms)
            .bind(quote.expires_at_ms)
            .execute(&mut *transaction)
            .await?;
            transaction.commit().await?;
        });
        Ok(())
    }

    /// The quote `id`, as stored. Whether a payment may still use it is the ledger's decision
    /// on that payment (`quote_used`, `quote_expired`), not a reader's.
    pub async fn quote(&self, id: &str) -> Result<Option<Quote>, LedgerError> {
        let sql = format!("{SELECT_QUOTES} q.id = $1");
        let row: Option<QuoteRow> = on_store!(&self.store, backend => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&backend.pool)
            .await?);
        row.map(|row| crate::conversion::QuoteState::try_from(row).map(|state| state.quote)).transpose()
    }
}
