//! Saying a complaint once while its cause lasts. An outage makes every payment fail the same
//! way (NATS gone: each reply's publish; the database gone: each batch), and a line per
//! payment buries everything else: a kind of complaint is said at most once per
//! [`INTERVAL`], with how many were kept quiet since (`quieted`).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often one kind of complaint is said while it keeps coming.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Per kind (the message), when it was last said and how many times it was not since.
static SAID: LazyLock<Mutex<HashMap<&'static str, (Instant, u64)>>> = LazyLock::new(Mutex::default);

/// Whether to say complaint `kind` now; if so, how many were kept quiet since it was last said.
pub fn admit(kind: &'static str) -> Option<u64> {
    admit_at(&mut SAID.lock().unwrap_or_else(PoisonError::into_inner), kind, Instant::now())
}

fn admit_at(said: &mut HashMap<&'static str, (Instant, u64)>, kind: &'static str, now: Instant) -> Option<u64> {
    match said.get_mut(kind) {
        Some((at, quieted)) if now.saturating_duration_since(*at) < INTERVAL => {
            *quieted += 1;
            None
        }
        Some((at, quieted)) => {
            *at = now;
            Some(std::mem::take(quieted))
        }
        None => {
            said.insert(kind, (now, 0));
            Some(0)
        }
    }
}

/// Logs `message` at `level` with its fields, at most once per [`INTERVAL`] (see the module).
macro_rules! complain {
    ($level:ident, $message:literal $(, $($field:tt)+)?) => {
        if let Some(quieted) = $crate::complaints::admit($message) {
            tracing::$level!($($($field)+ ,)? quieted, $message);
        }
    };
}
pub(crate) use complain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_said_once_per_interval_with_what_was_kept_quiet() {
        let mut said = HashMap::new();
        let start = Instant::now();
        assert_eq!(admit_at(&mut said, "reply", start), Some(0));
        assert_eq!(admit_at(&mut said, "event", start), Some(0), "another kind is said at once");
        for _ in 0..36 {
            assert_eq!(admit_at(&mut said, "reply", start + Duration::from_secs(1)), None);
        }
        assert_eq!(admit_at(&mut said, "reply", start + INTERVAL), Some(36));
        assert_eq!(admit_at(&mut said, "reply", start + INTERVAL), None);
        assert_eq!(admit_at(&mut said, "event", start + INTERVAL * 3), Some(0));
    }
}
