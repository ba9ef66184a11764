//! What a plugin may write into the host's logs: a bounded number of lines per call and per
//! second, each one line, escaped and capped, and tagged with the plugin and the payment.

use std::sync::Mutex;
use std::time::Instant;

use crate::contract::truncate;

/// Lines one call may write; the rest are dropped.
pub const LINES_PER_CALL: u32 = 32;
/// Lines one plugin version may write per second on a node, all instances together.
const LINES_PER_SECOND: u64 = 100;
/// Lines a quiet plugin may write in one burst.
const BURST_LINES: u64 = 200;
/// Longest line kept, in bytes, before escaping.
const LINE_BYTES: usize = 1_024;

/// A token bucket shared by every instance of one plugin version: it refills at
/// [`LINES_PER_SECOND`] up to [`BURST_LINES`], so a chatty plugin on many partitions cannot
/// flood the logs.
#[derive(Debug)]
pub struct LogBudget {
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    lines: u64,
    refilled_at: Instant,
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget { bucket: Mutex::new(Bucket { lines: BURST_LINES, refilled_at: Instant::now() }) }
    }
}

impl LogBudget {
    /// Takes one line from the budget; `false` means drop the line.
    pub fn take(&self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&self, now: Instant) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let elapsed_ms =
            u64::try_from(now.saturating_duration_since(bucket.refilled_at).as_millis()).unwrap_or(u64::MAX);
        let earned = elapsed_ms.saturating_mul(LINES_PER_SECOND) / 1_000;
        if earned > 0 {
            bucket.lines = bucket.lines.saturating_add(earned).min(BURST_LINES);
            bucket.refilled_at = now;
        }
        if bucket.lines == 0 {
            return false;
        }
        bucket.lines -= 1;
        true
    }
}

/// One log line from a plugin as the host writes it: capped, and with every control
/// character escaped, so a plugin can neither forge a line of its own (`\n`) nor move the
/// terminal's cursor.
pub fn sanitize(message: &str) -> String {
    let capped = truncate(message, LINE_BYTES);
    let mut line = String::with_capacity(capped.len());
    for character in capped.chars() {
        if character.is_control() {
            line.extend(character.escape_default());
        } else {
            line.push(character);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_line_cannot_break_into_two_or_grow_without_bound() {
        assert_eq!(sanitize("a\nFAKE host line\r\u{1b}[2J"), "a\\nFAKE host line\\r\\u{1b}[2J");
        assert!(sanitize(&"é".repeat(5_000)).len() < LINE_BYTES + 32);
    }

    #[test]
    fn the_budget_allows_a_burst_then_refills_at_the_rate() {
        let budget = LogBudget::default();
        let start = Instant::now();
        let burst = (0..1_000).filter(|_| budget.take_at(start)).count();
        assert_eq!(burst, usize::try_from(BURST_LINES).unwrap_or_default());
        let later = start + Duration::from_millis(500);
        let refilled = (0..1_000).filter(|_| budget.take_at(later)).count();
        assert_eq!(refilled, usize::try_from(LINES_PER_SECOND / 2).unwrap_or_default());
    }
}
