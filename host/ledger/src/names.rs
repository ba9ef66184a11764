//! Names operators give things (an asset, a client key): shown to people, never parsed.

use crate::error::LedgerError;

/// The longest name, in characters.
const MAX_NAME: usize = 64;

/// `name` if it is 1 ..= [`MAX_NAME`] characters and holds no control character. Checked here,
/// not left to the database: PostgreSQL refuses a NUL in text, and a refused write reads as a
/// ledger failure (503, logged as an error) rather than the caller's bad input.
pub(crate) fn checked_name<'a>(name: &'a str, what: &str) -> Result<&'a str, LedgerError> {
    let length = name.chars().count();
    if (1..=MAX_NAME).contains(&length) && !name.chars().any(char::is_control) {
        Ok(name)
    } else {
        Err(LedgerError::Invalid(format!("{what} has a name of 1 ..= {MAX_NAME} characters, none a control character")))
    }
}
