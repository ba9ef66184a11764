//! How many plugin versions and instances are alive on this node: the numbers that show
//! whether retired versions really let go of what they held (a test swaps versions many times
//! and checks that neither grows).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Live counts, shared by the runtime and everything it loads.
#[derive(Clone, Debug, Default)]
pub struct Census {
    versions: Arc<AtomicUsize>,
    instances: Arc<AtomicUsize>,
}

/// Counted while it lives.
#[derive(Debug)]
pub struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn count(counter: &Arc<AtomicUsize>) -> Alive {
    counter.fetch_add(1, Ordering::Relaxed);
    Alive(counter.clone())
}

impl Census {
    /// A loaded plugin version, counted until it is dropped.
    pub fn version(&self) -> Alive {
        count(&self.versions)
    }

    /// A plugin instance (its store), counted until it is dropped.
    pub fn instance(&self) -> Alive {
        count(&self.instances)
    }

    /// Versions loaded now: serving, retained for rollback, or still held by a payment or a
    /// worker's spare instance.
    pub fn versions(&self) -> usize {
        self.versions.load(Ordering::Relaxed)
    }

    /// Instances alive now.
    pub fn instances(&self) -> usize {
        self.instances.load(Ordering::Relaxed)
    }
}
