//! The manifest beside every plugin component (`wasmpay-plugin.toml`): what the component must
//! say it is, its configuration, limits tighter than the node's, and the self-test fixtures a
//! node runs before the version may decide a payment (docs/operators.md).
//!
//! The manifest is the operator's statement of intent and the component is checked against
//! it: a hash that differs means the bytes are not the ones that were reviewed, a `describe`
//! that disagrees means the build is not the version it claims, a fixture that fails means
//! the version does not do what its author promised. Any of these keeps the version out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use wasmpay_protocol::money::FeeBearer;

pub use crate::contract::{valid_plugin_name, valid_plugin_version};

/// Largest manifest accepted: fixtures are examples, not a test suite.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// Most fixtures a manifest may bundle: each runs in the sandbox at every activation.
pub const MAX_FIXTURES: usize = 32;
/// When a fixture payment is received unless it says otherwise: 2026-01-01T00:00:00Z, so a
/// fixture's verdict does not change with the day it runs.
pub const FIXTURE_RECEIVED_AT_MS: u64 = 1_767_225_600_000;

/// A plugin version's manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The name `describe` must give.
    pub name: String,
    /// The version `describe` must give.
    pub version: String,
    /// Lowercase hex SHA-256 of the component. Required to install; `wasmpay plugin push`
    /// fills it in from the file when a manifest in the source tree has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256>,
    /// The methods `describe` must list (in any order).
    pub methods: Vec<String>,
    /// The plugin's configuration (its `config` import); the node's `[plugins.<name>] config`
    /// is laid over it when serving, but the fixtures run on this one.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Limits tighter than the node's `[sandbox]` (a looser one is ignored).
    #[serde(default)]
    pub limits: ManifestLimits,
    /// Payments with expected verdicts, run at every activation.
    #[serde(default, rename = "fixture", skip_serializing_if = "Vec::is_empty")]
    pub fixtures: Vec<Fixture>,
}

/// Per-plugin limits; unset ones are the node's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestLimits {
    /// Fuel one call may burn.
    pub fuel_per_call: Option<u64>,
    /// Wall-clock backstop of one call.
    pub call_timeout_ms: Option<u64>,
    /// Linear memory of one instance.
    pub memory_limit_mib: Option<u64>,
}

/// One self-test payment and what the plugin must answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// What it shows, named in a failure.
    pub name: String,
    /// The payment.
    pub payment: FixturePayment,
    /// The verdict.
    pub expect: Expected,
}

/// A fixture's payment; what is left out gets a neutral value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixturePayment {
    /// Minor units.
    pub amount: u64,
    /// ISO 4217 code.
    pub currency: String,
    /// The method; by default the manifest's first.
    #[serde(default)]
    pub method: Option<String>,
    /// Method-specific details.
    #[serde(default)]
    pub details: BTreeMap<String, String>,
    /// Client metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// When the host received it; by default [`FIXTURE_RECEIVED_AT_MS`].
    #[serde(default = "fixture_received_at")]
    pub received_at_ms: u64,
    /// For an FX plugin: the currency `amount` is converted into. The fixture then asks the
    /// plugin's rate, and nothing else.
    #[serde(default)]
    pub counter_currency: Option<String>,
}

fn fixture_received_at() -> u64 {
    FIXTURE_RECEIVED_AT_MS
}

/// What a fixture expects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case", deny_unknown_fields)]
pub enum Expected {
    /// Every validator passed and the fee policy quoted; `fee` and `bearer` are checked when
    /// given.
    Approved {
        /// Fee in minor units.
        #[serde(default)]
        fee: Option<u64>,
        /// Who bears it.
        #[serde(default)]
        bearer: Option<FeeBearer>,
        /// An FX plugin's rate, markup applied, as the host writes it (`1.077784`).
        #[serde(default)]
        rate: Option<String>,
    },
    /// The plugin declined with this code.
    Declined {
        /// The plugin's code.
        code: String,
    },
}

/// A manifest that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not TOML of the manifest's shape.
    #[error("the manifest does not parse: {0}")]
    Parse(String),
    /// Too large, or too many fixtures.
    #[error("the manifest is too large: {0}")]
    TooLarge(String),
    /// No `sha256`.
    #[error("the manifest of {0} has no `sha256`")]
    MissingHash(String),
    /// A `sha256` that is not 64 lowercase hex digits.
    #[error("`sha256` must be 64 lowercase hex digits")]
    MalformedHash,
    /// A name or version a plugin could not have.
    #[error("{0}")]
    Invalid(String),
}

impl Manifest {
    /// `text`, a manifest without a `sha256`, with `sha256` added as its first line (a
    /// top-level key must come before any table: first is always right), comments kept.
    pub fn stamped(text: &str, sha256: &Sha256) -> String {
        format!("sha256 = \"{}\"\n{text}", sha256.as_str())
    }

    /// This manifest, stating `bytes`'s hash when it states none: for a development node,
    /// where the file is whatever was built last.
    pub fn hashed_if_unstated(self, bytes: &[u8]) -> Manifest {
        Manifest { sha256: self.sha256.or_else(|| Some(Sha256::of(bytes))), ..self }
    }

    /// Parses a manifest's TOML text.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(format!("{} bytes, at most {MAX_MANIFEST_BYTES}", text.len())));
        }
        // A malformed `sha256` is refused by its own type; serde carries its error as text.
        let manifest: Manifest = toml::from_str(text).map_err(|error| match error.message() {
            message if message == ManifestError::MalformedHash.to_string() => ManifestError::MalformedHash,
            message => ManifestError::Parse(message.into()),
        })?;
        if manifest.fixtures.len() > MAX_FIXTURES {
            let count = manifest.fixtures.len();
            return Err(ManifestError::TooLarge(format!("{count} fixtures, at most {MAX_FIXTURES}")));
        }
        if !valid_plugin_name(&manifest.name) {
            return Err(ManifestError::Invalid("`name` must be 1-32 characters of a-z 0-9 -".into()));
        }
        if !valid_plugin_version(&manifest.version) {
            return Err(ManifestError::Invalid("`version` must be MAJOR.MINOR.PATCH (64 bytes at most)".into()));
        }
        Ok(manifest)
    }

    /// `name@version`.
    pub fn key(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// The expected hash, which an installed version must have.
    pub fn expected_hash(&self) -> Result<&Sha256, ManifestError> {
        self.sha256.as_ref().ok_or_else(|| ManifestError::MissingHash(self.key()))
    }
}

/// A component's lowercase hex SHA-256: the one name its bytes have in a manifest, the
/// cluster's store, the compiled-code cache and the status, so a check on one side and a
/// lookup on the other cannot disagree on what a hash looks like. Written everywhere as the
/// plain string.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256(String);

impl Sha256 {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Sha256 {
        Sha256(sha2::Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect())
    }

    /// The 64 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sha256 {
    type Error = ManifestError;

    fn try_from(text: String) -> Result<Sha256, ManifestError> {
        let hex = text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        hex.then_some(Sha256(text)).ok_or(ManifestError::MalformedHash)
    }
}

impl From<Sha256> for String {
    fn from(sha256: Sha256) -> String {
        sha256.0
    }
}

impl std::fmt::Display for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repositorys_manifests_parse() {
        for text in [
            wasmpay_plugin_artifacts::CARD_MANIFEST,
            wasmpay_plugin_artifacts::WALLET_MANIFEST,
            wasmpay_plugin_artifacts::MOBILE_MANIFEST,
            wasmpay_plugin_artifacts::CARD_V2_MANIFEST,
        ] {
            let manifest = Manifest::parse(text).expect("parses");
            assert!(!manifest.fixtures.is_empty(), "{}", manifest.key());
            let json = serde_json::to_string(&manifest).expect("serialises");
            assert_eq!(serde_json::from_str::<Manifest>(&json).ok(), Some(manifest));
        }
    }

    #[test]
    fn malformed_manifests_are_refused() {
        let base = "name = \"card\"\nversion = \"1.0.0\"\nmethods = [\"card\"]\n";
        assert!(matches!(Manifest::parse(&format!("{base}colour = \"red\"\n")), Err(ManifestError::Parse(_))));
        assert_eq!(Manifest::parse(&format!("{base}sha256 = \"ABC\"\n")), Err(ManifestError::MalformedHash));
        for bad in [base.replace("\"card\"\nversion", "\"a*b\"\nversion"), base.replace("1.0.0", "1.0")] {
            assert!(matches!(Manifest::parse(&bad), Err(ManifestError::Invalid(_))), "{bad}");
        }
        let many = "[[fixture]]\nname = \"x\"\npayment = { amount = 1, currency = \"EUR\" }\nexpect = { verdict = \"approved\" }\n";
        assert!(matches!(Manifest::parse(&format!("{base}{}", many.repeat(33))), Err(ManifestError::TooLarge(_))));
        assert!(matches!(Manifest::parse(&"#".repeat(MAX_MANIFEST_BYTES + 1)), Err(ManifestError::TooLarge(_))));
        let manifest = Manifest::parse(base).expect("parses");
        assert_eq!(manifest.expected_hash(), Err(ManifestError::MissingHash("card@1.0.0".into())));
        assert_eq!(Sha256::of(b"abc").as_str(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn a_hash_is_checked_wherever_it_is_read_and_written_as_its_digits() {
        let abc = Sha256::of(b"abc");
        assert_eq!(Sha256::try_from(abc.to_string()), Ok(abc.clone()));
        assert_eq!(serde_json::to_string(&abc).ok(), Some(format!("\"{abc}\"")));
        for bad in ["ABC".to_owned(), abc.as_str().to_uppercase(), abc.as_str()[1..].to_owned(), format!("{abc}0")] {
            assert_eq!(Sha256::try_from(bad.clone()), Err(ManifestError::MalformedHash), "{bad}");
            assert!(serde_json::from_str::<Sha256>(&format!("\"{bad}\"")).is_err(), "{bad}");
        }
    }
}
