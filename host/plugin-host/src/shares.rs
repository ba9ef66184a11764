//! The node's plugin CPU, shared among payment methods.
//!
//! A payment's plugins that outgrow the small budget of the partition's own thread (`inline`)
//! run on a blocking thread of their own, and a node decides one payment per partition at a
//! time. Without a bound, a method whose plugin is slow but legal (tens of
//! milliseconds of CPU per call, within its fuel) holds one thread per busy partition: with 8
//! partitions busy on 2 cores, the operating system shares the CPU among 8 of its threads,
//! every other method's plugin thread and the node's own async workers, and a card payment on
//! another partition waited 52.6 ms at p95 instead of 2.1 ms. So each method may run at most
//! `[sandbox] method_threads` plugin pipelines at once (by default one less than the cores, and
//! at least one); its further payments wait their turn, in order, while other methods' calls,
//! the ledger and the bus keep a core. A method alone still gets that many cores, and the
//! bound follows from the call's own bounds: a waiting payment waits at most
//! `ceil(ahead / threads)` calls, each ended by its fuel or its deadline.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;

/// One semaphore of `threads` permits per payment method.
#[derive(Debug)]
pub(crate) struct MethodShares {
    threads: usize,
    by_method: Mutex<BTreeMap<String, Arc<Semaphore>>>,
}

impl MethodShares {
    /// Shares of `threads` pipelines at once per method; `None` is one less than the cores
    /// the process may use, at least one.
    pub(crate) fn new(threads: Option<usize>) -> MethodShares {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        // Above the semaphore's limit `Semaphore::new` panics: a setting that large means
        // "no bound" and gets the largest one.
        let threads = threads.unwrap_or(cores.saturating_sub(1)).clamp(1, Semaphore::MAX_PERMITS);
        MethodShares { threads, by_method: Mutex::new(BTreeMap::new()) }
    }

    /// The share of `method`, the same semaphore for every method table built (so a new version
    /// of a method's plugin shares its old version's bound); looked up when a table is built,
    /// not per payment. Methods are named by configuration and by loaded plugins' `describe`,
    /// so the map stays small.
    pub(crate) fn of(&self, method: &str) -> Arc<Semaphore> {
        let mut by_method = self.by_method.lock().unwrap_or_else(PoisonError::into_inner);
        match by_method.get(method) {
            Some(share) => share.clone(),
            None => {
                let share = Arc::new(Semaphore::new(self.threads));
                by_method.insert(method.to_owned(), share.clone());
                share
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_busy_method_waits_for_its_own_calls_and_not_for_others() {
        let shares = MethodShares::new(Some(2));
        let slow = shares.of("slow");
        let _first = slow.clone().try_acquire_owned().expect("first of two");
        let second = slow.clone().try_acquire_owned().expect("second of two");
        assert!(shares.of("slow").try_acquire_owned().is_err(), "a third call of one method must wait");
        assert!(shares.of("card").try_acquire_owned().is_ok(), "another method is not held up");
        drop(second);
        assert!(shares.of("slow").try_acquire_owned().is_ok(), "a finished call frees its place");
    }

    #[test]
    fn the_default_leaves_a_core_and_never_goes_below_one() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(MethodShares::new(None).of("card").available_permits(), cores.saturating_sub(1).max(1));
        assert_eq!(MethodShares::new(Some(0)).of("card").available_permits(), 1);
        assert_eq!(MethodShares::new(Some(usize::MAX)).of("card").available_permits(), Semaphore::MAX_PERMITS);
    }
}
