//! Why a node could not join, or an operator's command was refused.

use crate::jetstream::JetStreamError;

/// The cluster could not be joined, or the binding not removed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A node name must be usable as a key: `[A-Za-z0-9_-]`, 1 to 64 characters.
    #[error("node id `{0}` is not 1-64 characters of A-Z a-z 0-9 _ -")]
    InvalidNodeId(String),
    /// The binding cannot be removed while the bound ledger has live members.
    #[error("ledger {ledger} still has live members ({members}): stop them before unbinding")]
    StillBound {
        /// The bound ledger.
        ledger: String,
        /// Its live members.
        members: String,
    },
    /// A bucket could not be created, opened or read.
    #[error("cluster {0}")]
    JetStream(#[from] JetStreamError),
}
