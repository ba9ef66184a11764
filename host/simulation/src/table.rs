//! A bucket's live keys as one node last saw them through its watch, mirroring
//! `host/cluster/src/table.rs`: a put with the revision and the value already seen keeps when
//! it was first seen (a watch started again replays what it saw, no fresher for it), a delete
//! removes the key, and expiry sends no event, so entries age out by the node's own clock.

use std::collections::BTreeMap;

use crate::kv::{Change, Key, Value};
use crate::time::Millis;

/// One key's newest value, and when (on the node's clock) it was seen.
#[derive(Clone, Copy, Debug)]
pub struct Seen {
    pub value: Value,
    revision: u64,
    pub at: Millis,
}

#[derive(Clone, Debug, Default)]
pub struct Table {
    entries: BTreeMap<Key, Seen>,
}

impl Table {
    /// `table::record`. A bucket re-created after a loss numbers its revisions again, so a new
    /// value may come with a revision seen before: from c501df9 (`new_bytes_are_fresh`) it
    /// counts as new; before, only the revision was compared and the stale value stayed.
    pub fn record(&mut self, change: Change, now: Millis, new_bytes_are_fresh: bool) {
        match change.value {
            Some(value) => match self.entries.get(&change.key) {
                Some(seen) if seen.revision == change.revision && (seen.value == value || !new_bytes_are_fresh) => {}
                _ => {
                    self.entries.insert(change.key, Seen { value, revision: change.revision, at: now });
                }
            },
            None => {
                self.entries.remove(&change.key);
            }
        }
    }

    /// `Table::seen_at`.
    pub fn seen_at(&self, key: Key) -> Option<Millis> {
        self.entries.get(&key).map(|seen| seen.at)
    }

    /// `Table::live`: the keys seen within `ttl` before `now`.
    pub fn live(&self, ttl: Millis, now: Millis) -> impl Iterator<Item = (Key, Seen)> + '_ {
        self.entries.iter().filter(move |(_, seen)| now.saturating_sub(seen.at) < ttl).map(|(key, seen)| (*key, *seen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LedgerId;

    #[test]
    fn a_seen_revision_with_new_bytes_is_new_only_under_the_fixed_rule() {
        let key = Key::Member(0);
        let change = |serves| Change { key, value: Some(Value::Member { ledger: LedgerId::A, serves }), revision: 5 };
        for fixed in [true, false] {
            let mut table = Table::default();
            table.record(change(false), 10, fixed);
            // A watch started again replays the same message: no fresher for it.
            table.record(change(false), 20, fixed);
            assert_eq!(table.seen_at(key), Some(10));
            // A re-created bucket's new value at a revision seen before.
            table.record(change(true), 30, fixed);
            let serves = table.live(100, 30).any(|(_, seen)| seen.value == change(true).value.unwrap());
            assert_eq!((table.seen_at(key), serves), if fixed { (Some(30), true) } else { (Some(10), false) });
        }
    }
}
