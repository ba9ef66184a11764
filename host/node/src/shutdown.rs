//! The shutdown signal every long-running loop of a node watches.

use tokio::sync::watch;

/// Receives `true` once the node is stopping.
pub type Signal = watch::Receiver<bool>;

/// Resolves once shutdown is requested (or the sender is gone, which means the same).
pub async fn requested(signal: &mut Signal) {
    let _ = signal.wait_for(|stop| *stop).await;
}
