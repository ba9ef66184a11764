//! What `wasmpay.cluster.info` answers: everything a client needs to compute a payment's
//! subject itself.

use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;
use crate::routing::{HASH_NAME, Partitioner, subjects};

/// The reply to a request on [`subjects::CLUSTER_INFO`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterInfo {
    /// Protocol version.
    pub version: u32,
    /// Partition count P.
    pub partitions: u32,
    /// Hash of account ids, `fnv1a32`.
    pub hash: String,
    /// Subject template of payments.
    pub pay_subject: String,
    /// Subject template for clients that do not hash.
    pub submit_subject: String,
    /// The answering node.
    pub node: String,
}

impl ClusterInfo {
    /// What a node called `node` partitioning with `partitioner` answers.
    pub fn new(partitioner: Partitioner, node: &str) -> ClusterInfo {
        ClusterInfo {
            version: PROTOCOL_VERSION,
            partitions: partitioner.partitions(),
            hash: HASH_NAME.to_owned(),
            pay_subject: format!("{}.{{partition}}.{{payer}}", subjects::PAY_PREFIX),
            submit_subject: format!("{}.{{payer}}", subjects::SUBMIT_PREFIX),
            node: node.to_owned(),
        }
    }
}
