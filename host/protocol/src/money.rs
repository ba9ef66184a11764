//! Money on the host side: ISO 4217 currencies and signed minor-unit amounts with checked
//! arithmetic. Balances and ledger entries are `i64` minor units (signed: entries are debits
//! and credits); payment amounts on the wire are bounded by [`MAX_PAYMENT_MINOR_UNITS`] so that
//! every client language can hold them exactly (JavaScript numbers are exact up to 2^53 - 1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The largest amount of one payment: 2^53 - 1 minor units.
pub const MAX_PAYMENT_MINOR_UNITS: u64 = (1 << 53) - 1;

/// An ISO 4217 currency this host accepts. The list and the exponents are the `iso_currency`
/// crate's copy of ISO 4217 (kept current by a release of the crate, not by a table of ours):
/// every code with a minor unit, except funds (BOV, CLF, ...: units of account, not money a
/// payment moves), specials (precious metals, SDRs, test codes: no minor unit) and codes the
/// list marks superseded (HRK, replaced by EUR).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency {
    code: &'static str,
    exponent: u8,
}

/// A currency code that is not an active ISO 4217 code known to this host.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a supported ISO 4217 currency code")]
pub struct UnknownCurrency(pub String);

impl Currency {
    /// Every currency this host accepts, by code.
    pub fn all() -> impl Iterator<Item = Currency> {
        // ISO 4217 numeric codes are three digits: asking for each lists the whole table
        // without the crate's iterator feature (and its dependency).
        let mut all: Vec<Currency> =
            (0..1_000).filter_map(iso_currency::Currency::from_numeric).filter_map(Currency::accepted).collect();
        all.sort_unstable();
        all.dedup();
        all.into_iter()
    }

    /// `currency`, if it is one this host accepts (see [`Currency`]).
    fn accepted(currency: iso_currency::Currency) -> Option<Currency> {
        if currency.is_fund() || currency.is_special() || currency.is_superseded().is_some() {
            return None;
        }
        let exponent = u8::try_from(currency.exponent()?).ok().filter(|exponent| *exponent <= MAX_EXPONENT)?;
        Some(Currency { code: currency.code(), exponent })
    }

    /// The alphabetic code, e.g. `EUR`.
    pub fn code(self) -> &'static str {
        self.code
    }

    /// Its English name, e.g. `Tanzanian shilling`.
    pub fn name(self) -> String {
        iso_currency::Currency::from_code(self.code).map(|currency| currency.name().to_owned()).unwrap_or_default()
    }

    /// Digits after the decimal point in the major unit (2 for EUR, 0 for JPY).
    pub fn exponent(self) -> u8 {
        self.exponent
    }

    /// `minor_units` written in major units, e.g. `-12.05` for -1205 EUR cents.
    pub fn format(self, minor_units: i64) -> String {
        format_major(minor_units, self.exponent)
    }
}

/// `minor_units` written in major units of a unit with `exponent` decimals (at most
/// [`MAX_EXPONENT`]), e.g. `-12.05` for -1205 and 2.
pub fn format_major(minor_units: i64, exponent: u8) -> String {
    if exponent == 0 {
        return minor_units.to_string();
    }
    let exponent = exponent.min(MAX_EXPONENT);
    let scale = 10_u64.pow(u32::from(exponent));
    let magnitude = minor_units.unsigned_abs();
    let sign = if minor_units < 0 { "-" } else { "" };
    let width = usize::from(exponent);
    format!("{sign}{}.{:0width$}", magnitude / scale, magnitude % scale)
}

/// `text`, an amount written in major units (`12.50`, `-3`, `0.005`), as minor units of a unit
/// with `exponent` decimals: exact, or an error that says why (more decimals than the unit
/// has, not a number, beyond 64 bits). The inverse of [`format_major`].
pub fn parse_major(text: &str, exponent: u8) -> Result<i64, String> {
    let trimmed = text.trim();
    let (negative, digits) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || (digits.contains('.') && fraction.is_empty())
    {
        return Err(format!("`{text}` is not an amount like 12.50"));
    }
    if fraction.len() > usize::from(exponent) {
        return Err(format!(
            "`{text}` has {} decimals; this currency has {exponent} (its minor unit is 10^-{exponent})",
            fraction.len()
        ));
    }
    let padded = format!("{whole}{fraction:0<width$}", width = usize::from(exponent));
    let magnitude: i64 = padded.parse().map_err(|_| format!("`{text}` is beyond what 64-bit minor units hold"))?;
    Ok(if negative { -magnitude } else { magnitude })
}

/// The most decimals a registered asset may have: one whole unit, 10^15 minor units, must fit
/// in one transfer, whose amount is at most 2^53 - 1 (about 9.007 × 10^15); at 16 not even
/// one unit could be deposited or moved at once.
pub const MAX_EXPONENT: u8 = 15;

/// The code of an asset an operator registers beside the ISO 4217 currencies: a security, a
/// commodity, loyalty points. 4 to 12 characters of `A-Z 0-9 _ -`, starting with a letter:
/// the ledger names its accounts of a unit `_fees_<code>` and `_external_<code>`, so a code
/// holds only what an account id may.
/// Three-letter codes belong to ISO 4217, so no asset can ever collide with a currency,
/// including one ISO adds later.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssetCode {
    bytes: [u8; AssetCode::MAX_LEN],
    len: u8,
}

impl AssetCode {
    /// The longest asset code.
    pub const MAX_LEN: usize = 12;

    /// The code, e.g. `AAPL`.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (`FromStr` checks), so this cannot fail.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl Serialize for AssetCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl fmt::Debug for AssetCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AssetCode({})", self.as_str())
    }
}

impl FromStr for AssetCode {
    type Err = UnknownUnit;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        let valid = (4..=Self::MAX_LEN).contains(&code.len())
            && code.starts_with(|c: char| c.is_ascii_uppercase())
            && code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"_-".contains(&b));
        if !valid {
            return Err(UnknownUnit(code.to_owned()));
        }
        let mut bytes = [0; Self::MAX_LEN];
        bytes[..code.len()].copy_from_slice(code.as_bytes());
        Ok(AssetCode { bytes, len: u8::try_from(code.len()).map_err(|_| UnknownUnit(code.to_owned()))? })
    }
}

/// What an account holds and a transfer moves: an ISO 4217 currency or a registered asset.
/// The money rules are the same for both (integer minor units, checked arithmetic, every
/// transfer's entries sum to zero per unit); only payments through a payment method are in
/// currencies, because that is what the methods' plugins quote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Unit {
    /// An ISO 4217 currency.
    Currency(Currency),
    /// An asset an operator registered (its exponent is in the ledger's registry).
    Asset(AssetCode),
}

/// A unit code that is neither an ISO 4217 currency this host knows nor a well-formed asset
/// code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is neither a supported ISO 4217 currency code nor an asset code (4-12 of A-Z 0-9 _ -, starting with a letter)"
)]
pub struct UnknownUnit(pub String);

impl Unit {
    /// The code, e.g. `EUR` or `AAPL`.
    pub fn code(&self) -> &str {
        match self {
            Unit::Currency(currency) => currency.code(),
            Unit::Asset(asset) => asset.as_str(),
        }
    }

    /// The currency, when the unit is one.
    pub fn currency(self) -> Option<Currency> {
        match self {
            Unit::Currency(currency) => Some(currency),
            Unit::Asset(_) => None,
        }
    }
}

impl From<Currency> for Unit {
    fn from(currency: Currency) -> Unit {
        Unit::Currency(currency)
    }
}

impl FromStr for Unit {
    type Err = UnknownUnit;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        if code.len() == 3 {
            return code.parse().map(Unit::Currency).map_err(|UnknownCurrency(code)| UnknownUnit(code));
        }
        code.parse().map(Unit::Asset)
    }
}

impl TryFrom<String> for Unit {
    type Error = UnknownUnit;

    fn try_from(code: String) -> Result<Self, Self::Error> {
        code.parse()
    }
}

impl From<Unit> for String {
    fn from(unit: Unit) -> String {
        unit.code().to_owned()
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = UnknownCurrency;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        iso_currency::Currency::from_code(code)
            .and_then(Currency::accepted)
            .ok_or_else(|| UnknownCurrency(code.to_owned()))
    }
}

impl TryFrom<String> for Currency {
    type Error = UnknownCurrency;

    fn try_from(code: String) -> Result<Self, Self::Error> {
        code.parse()
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> String {
        currency.code.to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

/// Who bears a payment's fee, as the fee policy plugin quoted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeeBearer {
    /// The payer is debited amount + fee; the payee receives the amount.
    Payer,
    /// The payer is debited the amount; the payee receives amount - fee.
    Payee,
}

impl FeeBearer {
    /// The snake_case name, as on the wire and in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            FeeBearer::Payer => "payer",
            FeeBearer::Payee => "payee",
        }
    }
}

/// A signed amount of minor units: a balance, an entry or a floor.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct MinorUnits(pub i64);

/// Arithmetic on minor units left the 64-bit range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("amount overflows 64-bit minor units")]
pub struct Overflow;

impl MinorUnits {
    /// Zero.
    pub const ZERO: MinorUnits = MinorUnits(0);

    /// A payment or deposit amount: `value` if it is within 1 ..= [`MAX_PAYMENT_MINOR_UNITS`].
    pub fn payment_amount(value: u64) -> Option<MinorUnits> {
        (1..=MAX_PAYMENT_MINOR_UNITS).contains(&value).then(|| MinorUnits(value.cast_signed()))
    }

    /// A payment amount (at most 2^53 - 1, so always representable).
    pub fn from_unsigned(value: u64) -> Result<MinorUnits, Overflow> {
        i64::try_from(value).map(MinorUnits).map_err(|_| Overflow)
    }

    /// `self + other`, or an error on overflow.
    pub fn checked_add(self, other: MinorUnits) -> Result<MinorUnits, Overflow> {
        self.0.checked_add(other.0).map(MinorUnits).ok_or(Overflow)
    }

    /// `self - other`, or an error on overflow.
    pub fn checked_sub(self, other: MinorUnits) -> Result<MinorUnits, Overflow> {
        self.0.checked_sub(other.0).map(MinorUnits).ok_or(Overflow)
    }

    /// `-self`, or an error for `i64::MIN`.
    pub fn checked_neg(self) -> Result<MinorUnits, Overflow> {
        self.0.checked_neg().map(MinorUnits).ok_or(Overflow)
    }
}

/// The part of `fee` due on `part` of the `whole` amount it was quoted on: `fee × part /
/// whole`, rounded down, and exactly `fee` for the whole amount or more.
///
/// Used twice. A capture of part of an authorization pays the authorized fee prorated:
/// prorating keeps the price the payer agreed to at authorization (re-quoting at capture
/// would run the plugins twice for one payment and could change it), and rounding down never
/// charges more than the quote implied, by at most one minor unit. And the refunds of a
/// payment may give back at most its fee prorated to what they refunded in all
/// ([`reversible_fee`]).
pub fn prorated_fee(fee: MinorUnits, part: MinorUnits, whole: MinorUnits) -> MinorUnits {
    if whole.0 <= 0 || part >= whole {
        return fee;
    }
    let prorated = i128::from(fee.0) * i128::from(part.0.max(0)) / i128::from(whole.0);
    // At most `fee`, which is an i64.
    MinorUnits(i64::try_from(prorated).unwrap_or(fee.0))
}

/// The most of a payment's `fee` that a refund may give back, when the payment's refunds,
/// this one included, give back `refunded` of its `amount` and the earlier ones gave back
/// `fee_reversed` of its fee: [`prorated_fee`] of the refunded total, less what was given
/// back already (never below zero). The bound is cumulative, so a plugin that kept the fee on
/// an early refund may give it back on a later one, and a full refund may give back all of it.
pub fn reversible_fee(
    fee: MinorUnits,
    amount: MinorUnits,
    refunded: MinorUnits,
    fee_reversed: MinorUnits,
) -> MinorUnits {
    let due = prorated_fee(fee, refunded, amount);
    MinorUnits(due.0.saturating_sub(fee_reversed.0).max(0))
}

/// An exchange rate: how many major units of the counter currency one major unit of the source
/// currency buys, as an exact decimal `mantissa × 10^-scale` (`1.0832` is 10832 at scale 4).
/// Never a float: a conversion is integer arithmetic on minor units ([`Rate::convert`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    mantissa: u64,
    scale: u8,
}

/// A rate that is zero, has more than [`Rate::MAX_SCALE`] decimals or more than
/// [`Rate::MAX_DIGITS`] significant digits, or is not written as a decimal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an exchange rate: a positive decimal of at most 18 digits, 16 after the point")]
pub struct InvalidRate(pub String);

impl Rate {
    /// The most digits after the point an FX plugin may state. Twelve is far beyond any quoted
    /// rate (six to eight is the market's usual).
    pub const MAX_QUOTED_SCALE: u8 = 12;
    /// The most digits after the point of any rate: a quoted one with a markup applied (four
    /// more, for basis points). Every rate the host makes parses back (`Display`, `FromStr`).
    pub const MAX_SCALE: u8 = Rate::MAX_QUOTED_SCALE + 4;
    /// The most significant digits: `10^18 - 1` still fits a `u64`.
    pub const MAX_DIGITS: u32 = 18;

    /// `mantissa × 10^-scale`, positive and within the bounds above (an FX plugin's answer is
    /// further held to [`Rate::MAX_QUOTED_SCALE`] decimals by the host's contract check).
    pub fn new(mantissa: u64, scale: u8) -> Result<Rate, InvalidRate> {
        let invalid = || InvalidRate(format!("{mantissa}e-{scale}"));
        if mantissa == 0 || scale > Rate::MAX_SCALE || mantissa >= 10_u64.pow(Rate::MAX_DIGITS) {
            return Err(invalid());
        }
        Ok(Rate { mantissa, scale }.normalized())
    }

    /// The rate less a markup of `bps` basis points (1 bp = 0.01 %), rounded down at the
    /// 16th decimal: what a provider that quotes the mid-market rate and keeps `bps` of every
    /// conversion pays out. The markup is below 100 %.
    pub fn with_markup(self, bps: u32) -> Result<Rate, InvalidRate> {
        let invalid = || InvalidRate(format!("{self} less {bps} bp"));
        if bps >= 10_000 {
            return Err(invalid());
        }
        let mut mantissa = u128::from(self.mantissa) * u128::from(10_000 - bps);
        let mut scale = self.scale + 4;
        // Down to 16 decimals (at most 18 digits): drop whole digits, rounding down.
        while mantissa % 10 == 0 && scale > 0 {
            (mantissa, scale) = (mantissa / 10, scale - 1);
        }
        while scale > Rate::MAX_SCALE || mantissa >= u128::from(10_u64.pow(Rate::MAX_DIGITS)) {
            if scale == 0 {
                return Err(invalid());
            }
            (mantissa, scale) = (mantissa / 10, scale - 1);
        }
        let mantissa = u64::try_from(mantissa).map_err(|_| invalid())?;
        if mantissa == 0 {
            return Err(invalid());
        }
        Ok(Rate { mantissa, scale }.normalized())
    }

    /// `amount` minor units of `from` in minor units of `to` at this rate, **rounded down**:
    /// `amount × rate × 10^(exponent(to) − exponent(from))`, exact in 128-bit integers. The
    /// rounding never pays out more than the rate buys; what it keeps (under one minor unit of
    /// `to`) stays with the ledger's FX position. `None` when the result is not a payment
    /// amount (zero, or above [`MAX_PAYMENT_MINOR_UNITS`]).
    pub fn convert(self, amount: MinorUnits, from: Currency, to: Currency) -> Option<MinorUnits> {
        let amount = u128::try_from(amount.0).ok()?;
        let mut numerator = amount.checked_mul(u128::from(self.mantissa))?;
        let mut denominator = 10_u128.pow(u32::from(self.scale));
        match to.exponent().cmp(&from.exponent()) {
            std::cmp::Ordering::Greater => {
                numerator = numerator.checked_mul(10_u128.pow(u32::from(to.exponent() - from.exponent())))?;
            }
            std::cmp::Ordering::Less => {
                denominator = denominator.checked_mul(10_u128.pow(u32::from(from.exponent() - to.exponent())))?;
            }
            std::cmp::Ordering::Equal => {}
        }
        MinorUnits::payment_amount(u64::try_from(numerator / denominator).ok()?)
    }

    /// Without trailing zeros, so that one rate has one representation (and one spelling).
    fn normalized(self) -> Rate {
        let Rate { mut mantissa, mut scale } = self;
        while scale > 0 && mantissa % 10 == 0 {
            (mantissa, scale) = (mantissa / 10, scale - 1);
        }
        Rate { mantissa, scale }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scale == 0 {
            return self.mantissa.fmt(f);
        }
        let unit = 10_u64.pow(u32::from(self.scale));
        let width = usize::from(self.scale);
        write!(f, "{}.{:0width$}", self.mantissa / unit, self.mantissa % unit)
    }
}

impl FromStr for Rate {
    type Err = InvalidRate;

    /// `DIGITS[.DIGITS]`, e.g. `1.0832` or `157`: at most 16 decimals and 18 digits in all.
    fn from_str(text: &str) -> Result<Rate, InvalidRate> {
        let invalid = || InvalidRate(text.to_owned());
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || (text.contains('.') && fraction.is_empty()) {
            return Err(invalid());
        }
        let whole = whole.trim_start_matches('0');
        if whole.len() + fraction.len() > Rate::MAX_DIGITS as usize {
            return Err(invalid());
        }
        let mantissa = format!("{whole}{fraction}").parse::<u64>().unwrap_or(0);
        Rate::new(mantissa, u8::try_from(fraction.len()).map_err(|_| invalid())?).map_err(|_| invalid())
    }
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Rate, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for MinorUnits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_active_iso_4217_currency_parses_with_its_exponent() {
        let eur: Currency = "EUR".parse().expect("EUR");
        assert_eq!((eur.code(), eur.exponent()), ("EUR", 2));
        let exponent = |code: &str| code.parse::<Currency>().map(Currency::exponent);
        // Beyond the ~50 a hand-written table once held: a mobile-money market's shilling.
        for (code, expected) in [("JPY", 0), ("TZS", 2), ("KWD", 3), ("UGX", 0), ("XOF", 0), ("ZWG", 2)] {
            assert_eq!(exponent(code), Ok(expected), "{code}");
        }
        // Funds, metals, SDRs, test codes and superseded codes are no money a payment moves.
        for bad in ["eur", "EURO", "", "XXX", "XAU", "XDR", "XTS", "BOV", "CLF", "HRK", "E1R"] {
            assert!(bad.parse::<Currency>().is_err(), "{bad}");
        }
        let all: Vec<Currency> = Currency::all().collect();
        assert!(all.len() > 150, "{}", all.len());
        assert!(all.windows(2).all(|pair| pair[0].code() < pair[1].code()));
        assert!(all.iter().all(|currency| currency.code().parse() == Ok(*currency)));
    }

    #[test]
    fn formats_in_major_units() {
        let eur: Currency = "EUR".parse().expect("EUR");
        assert_eq!(eur.format(1_205), "12.05");
        assert_eq!(eur.format(-5), "-0.05");
        assert_eq!(eur.format(0), "0.00");
        let bhd: Currency = "BHD".parse().expect("BHD");
        assert_eq!(bhd.format(1_000_001), "1000.001");
        let jpy: Currency = "JPY".parse().expect("JPY");
        assert_eq!(jpy.format(-1_500), "-1500");
    }

    #[test]
    fn amounts_in_major_units_parse_exactly() {
        assert_eq!(parse_major("12.50", 2), Ok(1_250));
        assert_eq!(parse_major("12.5", 2), Ok(1_250));
        assert_eq!(parse_major("12", 2), Ok(1_200));
        assert_eq!(parse_major("-0.05", 2), Ok(-5));
        assert_eq!(parse_major("1500", 0), Ok(1_500));
        assert_eq!(parse_major("1.005", 3), Ok(1_005));
        for bad in ["12.505", "1.5", "abc", "", "1.", ".5", "1e3", "--1", "+1", "1,50", "99999999999999999999"] {
            let exponent = if bad == "1.5" { 0 } else { 2 };
            assert!(parse_major(bad, exponent).is_err(), "{bad}");
        }
        assert!(parse_major("12.505", 2).is_err_and(|why| why.contains("3 decimals")));
        for minor in [0_i64, 5, -5, 1_250, i64::MAX / 10] {
            assert_eq!(parse_major(&format_major(minor, 2), 2), Ok(minor));
        }
    }

    #[test]
    fn units_are_currencies_or_well_formed_asset_codes() {
        assert_eq!("EUR".parse::<Unit>(), Ok(Unit::Currency("EUR".parse().expect("EUR"))));
        for asset in ["AAPL", "POINTS", "ACME_SH", "GOLD_1G", "B-2025-03-XX"] {
            let unit: Unit = asset.parse().expect(asset);
            assert_eq!((unit.code(), unit.currency()), (asset, None));
            assert_eq!(serde_json::to_string(&unit).expect("json"), format!("\"{asset}\""));
        }
        // Three letters are ISO 4217's, known or not; the rest must be well formed.
        for bad in ["XXX", "BTC", "aapl", "1ABC", "ABCDEFGHIJKLM", "AB", "", "AA PL", "ÄPPL", "EU", "ACME.SH", "A/BC"]
        {
            assert!(bad.parse::<Unit>().is_err(), "{bad}");
        }
        // Every asset code names valid system accounts.
        for asset in ["AAPL", "ACME_SH", "B-2025-03-XX", "ZZZZZZZZZZZZ"] {
            let code: AssetCode = asset.parse().expect(asset);
            assert!(crate::routing::AccountId::new(format!("_external_{}", code.as_str())).is_ok(), "{asset}");
        }
        assert_eq!(format_major(-123_456_789, 8), "-1.23456789");
        assert_eq!(format_major(7, 0), "7");
    }

    #[test]
    fn rates_convert_exactly_and_round_down() {
        let currency = |code: &str| code.parse::<Currency>().expect(code);
        let (eur, usd, jpy, kwd) = (currency("EUR"), currency("USD"), currency("JPY"), currency("KWD"));
        let rate: Rate = "1.0832".parse().expect("rate");
        assert_eq!(rate.to_string(), "1.0832");
        // 100.00 EUR → 108.32 USD; 0.01 EUR → 0.0108 USD, rounded down to 0.01.
        assert_eq!(rate.convert(MinorUnits(10_000), eur, usd), Some(MinorUnits(10_832)));
        assert_eq!(rate.convert(MinorUnits(1), eur, usd), Some(MinorUnits(1)));
        // Exponents differ: 1.00 EUR at 162.35 is 162 JPY; 1,000 JPY at 0.0061 is 6.10 EUR.
        let to_yen: Rate = "162.35".parse().expect("rate");
        assert_eq!(to_yen.convert(MinorUnits(100), eur, jpy), Some(MinorUnits(162)));
        let from_yen: Rate = "0.0061".parse().expect("rate");
        assert_eq!(from_yen.convert(MinorUnits(1_000), jpy, eur), Some(MinorUnits(610)));
        assert_eq!(
            "0.3071".parse::<Rate>().expect("rate").convert(MinorUnits(1_000), eur, kwd),
            Some(MinorUnits(3_071))
        );
        // Nothing, or more than one payment may move, is no conversion.
        assert_eq!(from_yen.convert(MinorUnits(1), jpy, eur), None);
        assert_eq!(to_yen.convert(MinorUnits(MAX_PAYMENT_MINOR_UNITS.cast_signed()), eur, jpy), None);
        assert_eq!(rate.convert(MinorUnits(-5), eur, usd), None);
        // A markup in basis points, exact: 1.0832 less 0.5 % is 1.077784.
        assert_eq!(rate.with_markup(50).map(|rate| rate.to_string()), Ok("1.077784".to_owned()));
        assert_eq!(rate.with_markup(0), Ok(rate));
        assert!(rate.with_markup(10_000).is_err());
        // Every rate a markup makes is written and read back as itself, however many decimals
        // it took (an inverse quoted to 12 decimals, less 50 bp, has 14).
        let inverse: Rate = "0.923190546528".parse().expect("rate");
        let marked = inverse.with_markup(50).expect("marked up");
        assert_eq!(marked.to_string(), "0.91857459379536");
        for digits in [1_u64, 7, 923_190_546_528, 999_999_999_999, 10_832, 123_456_789_012] {
            for scale in [0_u8, 4, 9, 12] {
                let Ok(quoted) = Rate::new(digits, scale) else { continue };
                for bps in [1_u32, 33, 50, 999, 9_999] {
                    let marked = quoted.with_markup(bps).expect("a markup below 100 %");
                    assert_eq!(marked.to_string().parse::<Rate>(), Ok(marked), "{quoted} less {bps} bp");
                }
            }
        }
        // One spelling per rate; floats, signs, exponents and zero are refused.
        assert_eq!("1.50".parse::<Rate>(), "1.5".parse::<Rate>());
        assert_eq!("001.5".parse::<Rate>().map(|rate| rate.to_string()), Ok("1.5".to_owned()));
        for bad in ["0", "0.000", "-1.2", "1e3", "1.", ".5", "", "1.00000000000000001", "1234567890123456789", "NaN"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        assert_eq!(serde_json::to_string(&rate).expect("json"), "\"1.0832\"");
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(MinorUnits(1).checked_add(MinorUnits(2)), Ok(MinorUnits(3)));
        assert_eq!(MinorUnits(i64::MAX).checked_add(MinorUnits(1)), Err(Overflow));
        assert_eq!(MinorUnits(i64::MIN).checked_sub(MinorUnits(1)), Err(Overflow));
        assert_eq!(MinorUnits(i64::MIN).checked_neg(), Err(Overflow));
        assert_eq!(MinorUnits::from_unsigned(MAX_PAYMENT_MINOR_UNITS), Ok(MinorUnits((1 << 53) - 1)));
        assert_eq!(MinorUnits::from_unsigned(u64::MAX), Err(Overflow));
        assert_eq!(MinorUnits::payment_amount(MAX_PAYMENT_MINOR_UNITS), Some(MinorUnits((1 << 53) - 1)));
        assert_eq!(MinorUnits::payment_amount(0), None);
        assert_eq!(MinorUnits::payment_amount(MAX_PAYMENT_MINOR_UNITS + 1), None);
    }
}
