//! Which version of the protocol a run's nodes follow: the real one, or an older one kept to
//! show the simulation finds the defects it had.

/// The protocol a run's nodes follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// The real protocol (commit `c501df9` on): `Owner::read_binding`/`settle_binding` around
    /// the real `wasmpay_cluster::decide`, with the ledger's `deployment_binding` record as
    /// the truth, and the fixes of issue 16 below.
    Current,
    /// The protocol before issue 16's fixes (commit `9861f13`): the binding rule of `Current`,
    /// but
    /// - `leases::renew` drops a lease (and closes its partition) whose renewals got no answer
    ///   for nearly a TTL, and one whose revision moved, without trying to create it again;
    /// - no `Owner::check_fences`: a lease holder fenced by a later claim keeps its partition
    ///   (finding F1);
    /// - the binding's grace counts from the first round that saw no binding, heard or not,
    ///   and survives a repair of the buckets (finding F2);
    /// - `table::record` ignores a put whose revision was seen before, whatever its bytes.
    Before16,
    /// The protocol at commit `cbf9137` (`host/node/src/cluster/binding.rs`, `bind`): as
    /// `Before16`, and the binding lived only in NATS. Read once a TTL: create the key with
    /// this node's ledger; if it exists, serve only if it names this node's ledger. No ledger
    /// record, no grace: after NATS loses its state, whichever node reads first binds the
    /// deployment to its ledger.
    Cbf9137,
}

impl Protocol {
    /// Every version, newest first.
    pub const ALL: [Protocol; 3] = [Protocol::Current, Protocol::Before16, Protocol::Cbf9137];

    /// The version named `name` (`current`, `before16`, `cbf9137`).
    pub fn named(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|protocol| protocol.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Current => "current",
            Protocol::Before16 => "before16",
            Protocol::Cbf9137 => "cbf9137",
        }
    }

    /// Whether the ledger records the binding and `decide` settles it (not cbf9137's rule).
    pub fn records_binding(self) -> bool {
        self != Protocol::Cbf9137
    }

    /// `leases::renew`: an unanswered renewal keeps the lease; one answered "wrong last
    /// revision" creates the key again, and only "already exists" loses the lease.
    pub fn keeps_unanswered_leases(self) -> bool {
        self == Protocol::Current
    }

    /// `Owner::check_fences`: a partition whose ledger fence passed the held token is given up.
    pub fn checks_fences(self) -> bool {
        self == Protocol::Current
    }

    /// `settle_binding` and `Owner::hears_members`: the grace counts only while the node hears
    /// its own announcements, and starts again after `Owner::repair` re-creates the buckets.
    pub fn grace_while_heard(self) -> bool {
        self == Protocol::Current
    }

    /// `table::record`: a put with a revision seen before but other bytes is a new value.
    pub fn new_bytes_are_fresh(self) -> bool {
        self == Protocol::Current
    }
}
