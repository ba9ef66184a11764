//! Which version of the protocol a run's nodes follow: the real one, or an older one kept to
//! show the simulation finds the defects it had.

/// The protocol a run's nodes follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// The real protocol (commit `24d3bd9` on): `Owner::read_binding`/`settle_binding` around
    /// the real `wasmpay_cluster::decide`, with the ledger's `deployment_binding` record as
    /// the truth, the fixes of issue 16 below, and F3's and F4's: a node starts serving only
    /// once NATS acknowledged its announcement that its ledger serves the deployment before
    /// the round read the binding (`Owner::announced_serving_before(read_at)`); and one
    /// hand-over per round, the fenced partitions with the plan's (`Owner::fenced`, c367496).
    Current,
    /// The protocol from commit `cca8b70` to `24d3bd9`: `Current` but for F4's fix, and with
    /// the fenced partitions handed over before the plan, on their own. A node that `decide`
    /// lets serve while it serves nothing yet announces at once and serves once its member
    /// table shows the announcement (`Owner::announced_serving`), which the watch may bring
    /// back before the put's answer, in the same round, on the binding read before the put
    /// (finding F4).
    Cca8b70,
    /// The protocol from commit `c501df9` to `cca8b70`: `Current` but for F3's fix. A node
    /// that `decide` lets serve serves at once, and announces `serves` only at its next
    /// heartbeat (finding F3). Fenced partitions handed over as in `Cca8b70`.
    C501df9,
    /// The protocol before issue 16's fixes (commit `9861f13`): the binding rule of `C501df9`
    /// (serving before announcing), but
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
    pub const ALL: [Protocol; 5] =
        [Protocol::Current, Protocol::Cca8b70, Protocol::C501df9, Protocol::Before16, Protocol::Cbf9137];

    /// The version named `name` (`current`, `cca8b70`, `c501df9`, `before16`, `cbf9137`).
    pub fn named(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|protocol| protocol.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Current => "current",
            Protocol::Cca8b70 => "cca8b70",
            Protocol::C501df9 => "c501df9",
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
        self.has_issue16_fixes()
    }

    /// `Owner::check_fences` (`Owner::fenced` from c367496): a partition whose ledger fence
    /// passed the held token is given up.
    pub fn checks_fences(self) -> bool {
        self.has_issue16_fixes()
    }

    /// `settle_binding` and `Owner::hears_members`: the grace counts only while the node hears
    /// its own announcements, and starts again after `Owner::repair` re-creates the buckets.
    pub fn grace_while_heard(self) -> bool {
        self.has_issue16_fixes()
    }

    /// `table::record`: a put with a revision seen before but other bytes is a new value.
    pub fn new_bytes_are_fresh(self) -> bool {
        self.has_issue16_fixes()
    }

    /// `Owner::read_binding` (from cca8b70): a node that `decide` lets serve while it serves
    /// nothing yet first makes sure it announced that its ledger serves the deployment, and
    /// else announces it at once and waits. Before, it served at once: "serve before
    /// announcing" (finding F3).
    pub fn announces_before_serving(self) -> bool {
        matches!(self, Protocol::Current | Protocol::Cca8b70)
    }

    /// `Owner::announced_serving` (cca8b70 to 24d3bd9): the announcement counts once the
    /// member table shows it, even in the round that made it, after the binding was read
    /// (finding F4). From 24d3bd9 (`Owner::announced_serving_before`), it counts only if NATS
    /// acknowledged it before the round read the binding.
    pub fn serves_once_the_watch_shows_it(self) -> bool {
        self == Protocol::Cca8b70
    }

    /// `Owner::round` (from c367496): one hand-over per round, the partitions `Owner::fenced`
    /// found with the plan's, and the plan made while the fenced ones are still held. Before,
    /// `Owner::check_fences` handed them over on their own, before the plan.
    pub fn one_hand_over(self) -> bool {
        self == Protocol::Current
    }

    /// Whether the version has issue 16's fixes (c501df9 and later).
    fn has_issue16_fixes(self) -> bool {
        matches!(self, Protocol::Current | Protocol::Cca8b70 | Protocol::C501df9)
    }
}
