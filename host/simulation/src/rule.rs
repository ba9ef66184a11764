//! Which rule binds the deployment to a ledger: the real one, or the one before the ledger
//! recorded the binding, kept to show the simulation finds the defect it had.

/// The binding rule a run's nodes follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BindingRule {
    /// The real rule: `Owner::read_binding`/`settle_binding` around the real
    /// `wasmpay_cluster::decide`, with the ledger's `deployment_binding` record as the truth.
    Current,
    /// The rule at commit `cbf9137` (`host/node/src/cluster/binding.rs`, `bind`): the binding
    /// lived only in NATS. Read once a TTL: create the key with this node's ledger; if it
    /// exists, serve only if it names this node's ledger. No ledger record, no grace: after
    /// NATS loses its state, whichever node reads first binds the deployment to its ledger.
    Cbf9137,
}
