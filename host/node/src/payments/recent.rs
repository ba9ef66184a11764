//! The last answers this node gave, newest first, for the operators' console: what just
//! happened, refusals included (which the ledger never records). Kept as the reply bytes the
//! client got, shared with the reply itself, so remembering one costs no copy.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;

/// Answers kept: a screen's worth.
pub const RECENT: usize = 50;

/// The last [`RECENT`] answers of this node's partitions.
#[derive(Debug, Default)]
pub struct RecentPayments(Mutex<VecDeque<Bytes>>);

impl RecentPayments {
    /// Remembers `reply`, forgetting the oldest beyond [`RECENT`].
    pub fn record(&self, reply: &Bytes) {
        // A first clone may allocate (a `Bytes` made from a `Vec` becomes shared): not under
        // the lock every partition worker takes.
        let reply = reply.clone();
        let forgotten = {
            let mut recent = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let forgotten = if recent.len() == RECENT { recent.pop_back() } else { None };
            recent.push_front(reply);
            forgotten
        };
        drop(forgotten);
    }

    /// The answers kept, newest first, each as its reply JSON.
    pub fn list(&self) -> Vec<serde_json::Value> {
        let recent = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        recent.iter().filter_map(|reply| serde_json::from_slice(reply).ok()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_answers_first_and_no_more() {
        let recent = RecentPayments::default();
        for n in 0..RECENT + 3 {
            recent.record(&Bytes::from(format!("{{\"id\":\"p-{n}\"}}")));
        }
        let list = recent.list();
        assert_eq!(list.len(), RECENT);
        assert_eq!(list[0]["id"], format!("p-{}", RECENT + 2));
        assert_eq!(list[RECENT - 1]["id"], "p-3");
    }
}
