//! Saying a repeated complaint once: a condition that lasts (a ledger that cannot be claimed, a
//! bucket that is gone) is met on every round, and logging it each time buries everything
//! else (one node logged the same line 248 times in 5 s).

use std::time::{Duration, Instant};

/// How often a complaint that keeps repeating is said again, with how often it was not.
const REPEAT_INTERVAL: Duration = Duration::from_secs(30);

/// The last complaint said, when, and how often it came again since.
#[derive(Debug, Default)]
pub(crate) struct Repeats {
    last: Option<(String, Instant)>,
    suppressed: u64,
}

impl Repeats {
    /// Whether to say `message` now: when it differs from the last one said, or the last was
    /// said [`REPEAT_INTERVAL`] ago. If so, how many times it was kept quiet since.
    pub(crate) fn admit(&mut self, message: &str) -> Option<u64> {
        self.admit_at(message, Instant::now())
    }

    fn admit_at(&mut self, message: &str, now: Instant) -> Option<u64> {
        match &self.last {
            Some((last, at)) if last == message && now.saturating_duration_since(*at) < REPEAT_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some((message.to_owned(), now));
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// The condition ended: the next complaint is said at once.
    pub(crate) fn clear(&mut self) {
        self.last = None;
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_complaint_is_said_once_per_interval_with_its_count() {
        let mut repeats = Repeats::default();
        let start = Instant::now();
        assert_eq!(repeats.admit_at("down", start), Some(0));
        for step in 1..=248 {
            assert_eq!(repeats.admit_at("down", start + Duration::from_millis(20 * step)), None);
        }
        assert_eq!(repeats.admit_at("down", start + REPEAT_INTERVAL), Some(248));
        assert_eq!(repeats.admit_at("other", start + REPEAT_INTERVAL), Some(0));
        repeats.clear();
        assert_eq!(repeats.admit_at("other", start + REPEAT_INTERVAL), Some(0));
    }
}
