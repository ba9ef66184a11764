//! Saying a complaint once while its cause lasts. An outage makes every payment fail the same
//! way (NATS gone: each reply's publish; the database gone: each batch), and a line per
//! payment buries everything else: a kind of complaint is said at most once per
//! [`INTERVAL`], with how many were kept quiet since (`quieted`).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often one kind of complaint is said while it keeps coming.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// What one kind of complaint is about (a plugin, say) is remembered for this many subjects
/// at most; beyond, the rest share one entry, so no caller can grow the table.
const SUBJECTS: usize = 64;

/// Per kind (the message) and subject, when it was last said and how many times it was not
/// since.
type Said = HashMap<&'static str, HashMap<Box<str>, (Instant, u64)>>;

static SAID: LazyLock<Mutex<Said>> = LazyLock::new(Mutex::default);

/// Whether to say complaint `kind` about `subject` (`""` for none) now; if so, how many were
/// kept quiet since it was last said. One plugin's failures never quiet another's.
pub fn admit(kind: &'static str, subject: &str) -> Option<u64> {
    admit_at(&mut SAID.lock().unwrap_or_else(PoisonError::into_inner), kind, subject, Instant::now())
}

fn admit_at(said: &mut Said, kind: &'static str, subject: &str, now: Instant) -> Option<u64> {
    let subjects = said.entry(kind).or_default();
    let subject = if subjects.contains_key(subject) || subjects.len() < SUBJECTS { subject } else { "" };
    match subjects.get_mut(subject) {
        Some((at, quieted)) if now.saturating_duration_since(*at) < INTERVAL => {
            *quieted += 1;
            None
        }
        Some((at, quieted)) => {
            *at = now;
            Some(std::mem::take(quieted))
        }
        None => {
            subjects.insert(subject.into(), (now, 0));
            Some(0)
        }
    }
}

/// Logs `message` at `level` with its fields, at most once per [`INTERVAL`] (see the module);
/// `for subject` keeps one subject's complaints (a plugin's) apart from another's.
macro_rules! complain {
    ($level:ident, $message:literal for $subject:expr $(, $($field:tt)+)?) => {
        if let Some(quieted) = $crate::complaints::admit($message, $subject) {
            tracing::$level!($($($field)+ ,)? quieted, $message);
        }
    };
    ($level:ident, $message:literal $(, $($field:tt)+)?) => {
        if let Some(quieted) = $crate::complaints::admit($message, "") {
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
        let mut said = Said::new();
        let start = Instant::now();
        assert_eq!(admit_at(&mut said, "reply", "", start), Some(0));
        assert_eq!(admit_at(&mut said, "event", "", start), Some(0), "another kind is said at once");
        for _ in 0..36 {
            assert_eq!(admit_at(&mut said, "reply", "", start + Duration::from_secs(1)), None);
        }
        assert_eq!(admit_at(&mut said, "reply", "", start + INTERVAL), Some(36));
        assert_eq!(admit_at(&mut said, "reply", "", start + INTERVAL), None);
        assert_eq!(admit_at(&mut said, "event", "", start + INTERVAL * 3), Some(0));
    }

    #[test]
    fn one_subject_never_quiets_another_and_the_subjects_are_bounded() {
        let mut said = Said::new();
        let start = Instant::now();
        assert_eq!(admit_at(&mut said, "plugin failed", "card@1.0.0", start), Some(0));
        assert_eq!(admit_at(&mut said, "plugin failed", "wallet@1.0.0", start), Some(0));
        assert_eq!(admit_at(&mut said, "plugin failed", "card@1.0.0", start), None);
        for n in 0..1000 {
            let _ = admit_at(&mut said, "plugin failed", &format!("invented-{n}"), start);
        }
        assert_eq!(said["plugin failed"].len(), SUBJECTS + 1, "the rest share one entry");
    }
}
