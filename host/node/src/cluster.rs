//! The node's side of the cluster (`wasmpay-cluster`): the cluster drives the node's bus,
//! ledger and metrics through the traits it defines; this module gives it the ledger's
//! fences, and re-exports what the node's users (the binary, the tools, the tests) name.

pub use wasmpay_cluster::{
    Cluster, ClusterError, ClusterSettings, ClusterView, DEFAULT_DEPLOYMENT, Identity, LeaseView, MemberView, Views,
    unbind,
};

use std::collections::BTreeMap;

use wasmpay_cluster::Fences;
use wasmpay_ledger::{Ledger, LedgerError};

/// The ledger as the cluster's fences: a new owner's claim hands out the partitions' fencing
/// tokens, and the ledger keeps the record of the deployment's binding (`fencing.rs` in the
/// ledger). A wrapper, because neither the trait nor the ledger
/// belongs to this crate.
#[derive(Clone, Debug)]
pub struct LedgerFences(pub Ledger);

impl Fences for LedgerFences {
    type Error = LedgerError;

    async fn claim(&self, partitions: &[u32]) -> Result<BTreeMap<u32, u64>, LedgerError> {
        self.0.claim(partitions).await
    }

    async fn tokens(&self) -> Result<BTreeMap<u32, u64>, LedgerError> {
        self.0.fence_tokens().await
    }

    async fn binding(&self, deployment: &str) -> Result<Option<String>, LedgerError> {
        self.0.deployment_binding(deployment).await
    }

    async fn record_binding(&self, deployment: &str, ledger: &str) -> Result<String, LedgerError> {
        self.0.record_deployment_binding(deployment, ledger).await
    }
}
