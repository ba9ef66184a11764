//! The read-only configuration an operator gives a plugin (`[plugins.<name>.config]`).

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::Rejection;

/// Key/value settings. Inside the sandbox they come from the host once per instance; in
/// native unit tests build them with [`Config::from_pairs`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    entries: BTreeMap<String, String>,
}

impl Config {
    /// A configuration holding these pairs.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Config { entries: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// `key` parsed as `T`, `None` when unset. A value that does not parse is an operator
    /// error: the payment is refused with the retryable code `plugin_misconfigured`.
    pub fn parse<T: FromStr>(&self, key: &str) -> Result<Option<T>, Rejection> {
        self.get(key)
            .map(|raw| {
                raw.trim().parse().map_err(|_| {
                    Rejection::retry_later("plugin_misconfigured", format!("config `{key}` = `{raw}` is not valid"))
                })
            })
            .transpose()
    }

    /// `key` parsed as `T`, `default` when unset; see [`Config::parse`].
    pub fn parse_or<T: FromStr>(&self, key: &str, default: T) -> Result<T, Rejection> {
        Ok(self.parse(key)?.unwrap_or(default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_or_uses_the_default_and_refuses_garbage() {
        let config = Config::from_pairs([("limit.EUR", "100"), ("bad", "x")]);
        assert_eq!(config.parse_or("limit.EUR", 5_u64), Ok(100));
        assert_eq!(config.parse_or("limit.USD", 5_u64), Ok(5));
        assert_eq!(config.parse_or("bad", 5_u64).map_err(|r| r.code), Err("plugin_misconfigured".to_owned()));
    }
}
