//! What a plugin may answer. Everything a guest returns is checked here before it can reach a
//! client, a log line or the ledger: codes have a fixed shape, text is capped (and marked
//! where it was cut), lists are bounded, money adds up and stays within the method's bound.
//! A breach is the plugin's failure (`plugin_failed`), never a stored oversize reply.

use wasmpay_protocol::money::{Currency, FeeBearer, MAX_PAYMENT_MINOR_UNITS, Rate};

use crate::bindings::{refund_fee, types};
use crate::settings::FeeLimit;

/// Longest rejection code: `[a-z][a-z0-9_]*`, at most this many bytes.
pub const MAX_CODE_BYTES: usize = 64;
/// Longest rejection message kept; a longer one is cut and marked.
pub const MAX_MESSAGE_BYTES: usize = 512;
/// Most lines a fee quote may have.
pub const MAX_FEE_LINES: usize = 16;
/// Most methods, or currencies, a plugin may describe.
pub const MAX_DESCRIBED_ITEMS: usize = 64;
/// Longest version string.
const MAX_VERSION_BYTES: usize = 64;
/// Appended where text was cut.
const TRUNCATED: &str = "…[truncated]";

/// `text`, or its longest prefix that fits `max_bytes` with the truncation marker.
pub fn truncate(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let room = max_bytes.saturating_sub(TRUNCATED.len());
    let cut = (0..=room).rev().find(|index| text.is_char_boundary(*index)).unwrap_or(0);
    format!("{}{TRUNCATED}", &text[..cut])
}

/// A plugin's refusal, checked: the code is stable and short, the message capped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedRejection {
    /// Stable snake_case code.
    pub code: String,
    /// Explanation, at most [`MAX_MESSAGE_BYTES`].
    pub message: String,
    /// Whether a retry can help.
    pub retryable: bool,
}

/// Checks a rejection; a malformed code is a breach of the contract.
pub fn check_rejection(rejection: types::Rejection) -> Result<CheckedRejection, String> {
    let code = rejection.code;
    let shaped = (1..=MAX_CODE_BYTES).contains(&code.len())
        && code.starts_with(|c: char| c.is_ascii_lowercase())
        && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !shaped {
        return Err(format!(
            "rejection code `{}` is not 1-{MAX_CODE_BYTES} characters of snake_case",
            truncate(&code, MAX_CODE_BYTES).escape_debug()
        ));
    }
    Ok(CheckedRejection {
        code,
        message: truncate(&rejection.message, MAX_MESSAGE_BYTES),
        retryable: rejection.retryable,
    })
}

/// A fee quote that passed the host's checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedFee {
    /// Minor units.
    pub total: u64,
    /// Who bears it.
    pub bearer: FeeBearer,
}

/// The host does not trust a quote: a bounded number of lines that add up to the total, a fee
/// borne by the payee no larger than the amount, and any fee within the method's bound.
pub fn check_quote(
    quote: &types::FeeQuote,
    amount: u64,
    currency: Currency,
    limit: &FeeLimit,
) -> Result<CheckedFee, String> {
    if quote.lines.len() > MAX_FEE_LINES {
        return Err(format!("{} fee lines, at most {MAX_FEE_LINES} are allowed", quote.lines.len()));
    }
    let sum = quote.lines.iter().try_fold(0_u64, |sum, line| sum.checked_add(line.minor_units));
    if sum != Some(quote.total) {
        return Err(format!("fee lines add up to {sum:?}, not the total {}", quote.total));
    }
    if quote.total > MAX_PAYMENT_MINOR_UNITS {
        return Err(format!("fee {} exceeds 2^53 - 1", quote.total));
    }
    let bearer = match quote.bearer {
        types::FeeBearer::Payer => FeeBearer::Payer,
        types::FeeBearer::Payee => FeeBearer::Payee,
    };
    if bearer == FeeBearer::Payee && quote.total > amount {
        return Err(format!("fee {} borne by the payee exceeds the amount {amount}", quote.total));
    }
    let bound = limit.bound(amount, currency);
    if quote.total > bound {
        return Err(format!("fee {} exceeds the method's bound of {bound} for an amount of {amount}", quote.total));
    }
    Ok(CheckedFee { total: quote.total, bearer })
}

/// A refund's fee that passed the host's checks, in minor units of the payment's currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundFee {
    /// No fee on the refund; the payment's fee stays charged.
    Keep,
    /// This much of the payment's fee goes back to whoever bore it.
    Reverse(u64),
    /// The refunding payee pays this fee.
    Charge(u64),
}

/// The host does not trust a refund's fee either: a reversal within what the payment's
/// refunds may give back (`reversible`), a charge within the method's bound for the refund's
/// amount. Zero in either is [`RefundFee::Keep`].
pub fn check_refund_fee(
    outcome: &refund_fee::RefundFeeOutcome,
    reversible: u64,
    refund: u64,
    currency: Currency,
    limit: &FeeLimit,
) -> Result<RefundFee, String> {
    match *outcome {
        refund_fee::RefundFeeOutcome::Keep
        | refund_fee::RefundFeeOutcome::Reverse(0)
        | refund_fee::RefundFeeOutcome::Charge(0) => Ok(RefundFee::Keep),
        refund_fee::RefundFeeOutcome::Reverse(amount) if amount > reversible => Err(format!(
            "reverses {amount} of the fee; this refund may give back at most {reversible} (the fee prorated to what was refunded)"
        )),
        refund_fee::RefundFeeOutcome::Reverse(amount) => Ok(RefundFee::Reverse(amount)),
        refund_fee::RefundFeeOutcome::Charge(amount) => {
            let bound = limit.bound(refund, currency).min(MAX_PAYMENT_MINOR_UNITS);
            if amount > bound {
                return Err(format!(
                    "refund fee {amount} exceeds the method's bound of {bound} for an amount of {refund}"
                ));
            }
            Ok(RefundFee::Charge(amount))
        }
    }
}

/// What a plugin says it is, checked.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PluginInfo {
    /// Stable name, `[a-z0-9-]{1,32}`.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// Methods it serves by default.
    pub methods: Vec<String>,
    /// Currencies it accepts; empty means any.
    pub currencies: Vec<String>,
    /// Whether it exports `validator`.
    pub validates: bool,
    /// Whether it exports `fee-policy`.
    pub quotes_fees: bool,
    /// Whether it exports `refund-fee` (0.1.1): without it, its refunds keep the fee.
    pub prices_refunds: bool,
    /// Whether it exports `fx` (0.1.2): it prices cross-border payments' conversions.
    pub quotes_rates: bool,
}

impl PluginInfo {
    /// Whether it takes payments in `currency`.
    pub fn accepts(&self, currency: Currency) -> bool {
        self.currencies.is_empty() || self.currencies.iter().any(|code| code == currency.code())
    }
}

/// 1-32 characters of `a-z 0-9` and `extra`.
fn token(text: &str, extra: &[u8]) -> bool {
    (1..=32).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
}

/// Whether `name` is a valid plugin name: 1-32 characters of `a-z 0-9 -` (it is used in
/// store keys and URLs as it is).
pub fn valid_plugin_name(name: &str) -> bool {
    token(name, b"-")
}

/// Whether `version` is a valid plugin version (`MAJOR.MINOR.PATCH`, an optional `-pre` or
/// `+build`, at most 64 bytes).
pub fn valid_plugin_version(version: &str) -> bool {
    version.len() <= MAX_VERSION_BYTES && is_semver(version)
}

/// Checks what `describe` returned.
pub fn check_info(
    raw: types::PluginInfo,
    validates: bool,
    quotes_fees: bool,
    prices_refunds: bool,
    quotes_rates: bool,
) -> Result<PluginInfo, String> {
    let shown = |text: &str| truncate(text, 64).escape_debug().to_string();
    if !valid_plugin_name(&raw.name) {
        return Err(format!("name `{}` must be 1-32 characters of a-z 0-9 -", shown(&raw.name)));
    }
    if !valid_plugin_version(&raw.version) {
        return Err(format!("version `{}` is not MAJOR.MINOR.PATCH", shown(&raw.version)));
    }
    if raw.methods.len() > MAX_DESCRIBED_ITEMS || raw.currencies.len() > MAX_DESCRIBED_ITEMS {
        return Err(format!("at most {MAX_DESCRIBED_ITEMS} methods and {MAX_DESCRIBED_ITEMS} currencies"));
    }
    if let Some(method) = raw.methods.iter().find(|method| !token(method, b"-_")) {
        return Err(format!("method `{}` must be 1-32 characters of a-z 0-9 _ -", shown(method)));
    }
    if let Some(currency) = raw.currencies.iter().find(|code| code.parse::<Currency>().is_err()) {
        return Err(format!("currency `{}` is not a supported ISO 4217 code", shown(currency)));
    }
    Ok(PluginInfo {
        name: raw.name,
        version: raw.version,
        methods: raw.methods,
        currencies: raw.currencies,
        validates,
        quotes_fees,
        prices_refunds,
        quotes_rates,
    })
}

/// An FX plugin's rate, checked and with its markup applied: a positive decimal of at most 18
/// digits and 12 decimals, a markup below 100 %. Anything else breaks the contract.
pub fn check_rate(rate: &types::FxRate) -> Result<Rate, String> {
    if rate.scale > Rate::MAX_QUOTED_SCALE {
        return Err(format!("a rate has at most {} decimals, not {}", Rate::MAX_QUOTED_SCALE, rate.scale));
    }
    Rate::new(rate.digits, rate.scale)
        .and_then(|mid| mid.with_markup(rate.markup_bps))
        .map_err(|error| format!("{error} (markup {} bp)", rate.markup_bps))
}

/// `MAJOR.MINOR.PATCH` with an optional `-pre` or `+build` suffix.
fn is_semver(version: &str) -> bool {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3 && parts.iter().all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

impl FeeLimit {
    /// The largest fee allowed on `amount` minor units of `currency`:
    /// `amount x max_bps / 10 000` plus the currency's fixed allowance (by default one major
    /// unit, and at least 100 minor units: 1.00 EUR, 100 JPY, 1.000 BHD).
    pub fn bound(&self, amount: u64, currency: Currency) -> u64 {
        let proportional = u128::from(amount) * u128::from(self.max_bps) / 10_000;
        let default_fixed = 10_u64.pow(u32::from(currency.exponent())).max(100);
        let fixed = self.fixed.get(currency.code()).copied().unwrap_or(default_fixed);
        u64::try_from(proportional).unwrap_or(u64::MAX).saturating_add(fixed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(total: u64, lines: &[u64], bearer: types::FeeBearer) -> types::FeeQuote {
        types::FeeQuote {
            total,
            lines: lines
                .iter()
                .map(|minor_units| types::FeeLine { label: "x".into(), minor_units: *minor_units })
                .collect(),
            bearer,
        }
    }

    fn eur() -> Currency {
        "EUR".parse().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn quotes_must_add_up_fit_the_amount_and_the_bound() {
        let (payee, payer) = (types::FeeBearer::Payee, types::FeeBearer::Payer);
        let limit = FeeLimit::default();
        let check = |quote: &types::FeeQuote, amount| check_quote(quote, amount, eur(), &limit);
        assert_eq!(check(&quote(55, &[30, 25], payee), 100), Ok(CheckedFee { total: 55, bearer: FeeBearer::Payee }));
        assert!(check(&quote(56, &[30, 25], payee), 100).is_err());
        assert!(check(&quote(101, &[101], payee), 100).is_err());
        assert!(check(&quote(101, &[101], payer), 100).is_ok());
        assert!(check(&quote(0, &[u64::MAX, 1], payee), 100).is_err());
        // 5,000.00 on a 0.01 payment: far past 10 % + 1.00.
        assert!(check(&quote(500_000, &[500_000], payer), 1).is_err());
        assert_eq!(limit.bound(10_000, eur()), 1_000 + 100);
        assert_eq!(limit.bound(1, "JPY".parse().unwrap_or_else(|_| unreachable!())), 100);
        assert!(check(&quote(17, &[1; 17], payer), 100_000).is_err());
    }

    #[test]
    fn rejection_codes_are_snake_case_and_messages_are_capped() {
        let rejection = |code: &str, message: String| types::Rejection { code: code.into(), message, retryable: false };
        let long = check_rejection(rejection("card_expired", "x".repeat(10_000_000))).expect("valid code");
        assert!(long.message.len() <= MAX_MESSAGE_BYTES && long.message.ends_with(TRUNCATED));
        for bad in ["", "Card", "card-expired", "9lives", "a\nb", &"a".repeat(65)] {
            assert!(check_rejection(rejection(bad, String::new())).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rates_are_exact_decimals_with_a_markup_below_all_of_it() {
        let rate = |digits, scale, markup_bps| check_rate(&types::FxRate { digits, scale, markup_bps });
        assert_eq!(rate(10_832, 4, 50).map(|rate| rate.to_string()), Ok("1.077784".to_owned()));
        assert_eq!(rate(157, 0, 0).map(|rate| rate.to_string()), Ok("157".to_owned()));
        for (digits, scale, markup_bps) in
            [(0, 0, 0), (1, 13, 0), (10_u64.pow(18), 0, 0), (1, 0, 10_000), (1, 0, u32::MAX)]
        {
            assert!(rate(digits, scale, markup_bps).is_err(), "{digits}e-{scale} less {markup_bps} bp");
        }
    }

    #[test]
    fn truncation_respects_characters() {
        let cut = truncate(&"é".repeat(100), 21);
        assert!(cut.len() <= 21 && cut.ends_with(TRUNCATED), "{cut}");
        assert_eq!(truncate("short", 21), "short");
    }

    #[test]
    fn semver_shapes() {
        for good in ["0.1.0", "1.22.333", "1.0.0-rc.1", "1.0.0+build5"] {
            assert!(is_semver(good), "{good}");
        }
        for bad in ["", "1", "1.2", "1.2.x", "1..2", "v1.2.3"] {
            assert!(!is_semver(bad), "{bad}");
        }
    }
}
