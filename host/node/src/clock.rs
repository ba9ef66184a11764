//! The node's one reading of wall-clock time. Plugins never read a clock: they get the time a
//! payment was received as `received-at-ms`, taken here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// [`unix_ms`] as the ledger stores timestamps.
pub fn ledger_ms() -> i64 {
    i64::try_from(unix_ms()).unwrap_or(i64::MAX)
}
