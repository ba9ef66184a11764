//! The record of a run: a hash of every event (two runs of one seed must agree on it), the
//! last events for a failure's report, and, when replaying one seed, every event printed.
//! Generic over the event, so it knows nothing of the world that makes them.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};

use crate::time::Millis;

/// How many of the last events a failure shows.
pub const TAIL: usize = 40;

/// 64-bit FNV-1a: a hasher with no random keys, so a trace hashes alike in every process.
#[derive(Clone, Copy, Debug)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[derive(Debug)]
pub struct Trace<E> {
    hash: Fnv,
    tail: VecDeque<(u64, Millis, E)>,
    /// Print every event as it happens.
    pub verbose: bool,
}

impl<E: Hash + Debug + Clone> Trace<E> {
    pub fn new(verbose: bool) -> Trace<E> {
        Trace { hash: Fnv::default(), tail: VecDeque::with_capacity(TAIL), verbose }
    }

    pub fn record(&mut self, step: u64, at: Millis, event: &E) {
        (at, event).hash(&mut self.hash);
        if self.verbose {
            println!("{step:>7} t={at:>6} {event:?}");
        }
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back((step, at, event.clone()));
    }

    /// A remark that is not an event (a node's binding verdict changed), printed when verbose.
    pub fn note(&self, at: Millis, note: impl FnOnce() -> String) {
        if self.verbose {
            println!("        t={at:>6}   note: {}", note());
        }
    }

    pub fn hash(&self) -> u64 {
        self.hash.finish()
    }

    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().map(|(step, at, event)| format!("{step:>7} t={at:>6} {event:?}")).collect()
    }
}
