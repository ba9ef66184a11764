//! A node's part in the cluster, as the node holds it: join, then leave.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::bounds;
use crate::error::ClusterError;
use crate::ownership::Owner;
use crate::ports::{Fences, Partitions, Ports};
use crate::settings::{ClusterSettings, Identity};
use crate::view::Views;

/// This node's part in the cluster: it keeps the node's membership and leases current and
/// opens and closes the node's partitions to match, until stopped.
#[derive(Debug)]
pub struct Cluster {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    /// [`Cluster::stop_timeout`] for the node's partitions.
    stop_timeout: Duration,
}

impl Cluster {
    /// Joins the cluster on `client` and takes the partitions the assignment gives this node
    /// and nobody holds; returns after that first round (after the binding's grace period,
    /// if the deployment is not bound yet), so a lone node serves every partition when this
    /// returns. Partitions still held by others follow as they hand over
    /// or their leases expire.
    pub async fn join<P: Partitions, F: Fences>(
        client: async_nats::Client,
        identity: Identity,
        settings: ClusterSettings,
        ports: Ports<P, F>,
        views: Views,
    ) -> Result<Cluster, ClusterError> {
        identity.check()?;
        let mut owner = Owner::start(client, identity, settings, ports, views).await?;
        owner.round().await;
        // A deployment that is not bound yet (a new one, or one whose binding NATS lost) is
        // bound after a grace period: wait it out, so a node that will serve does when this
        // returns.
        let settling = std::time::Instant::now();
        while owner.waiting() && settling.elapsed() < owner.grace() + owner.heartbeat() * 2 {
            tokio::time::sleep(owner.heartbeat()).await;
            owner.round().await;
        }
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(owner.run(stopped));
        Ok(Cluster { stop, task, stop_timeout: Cluster::stop_timeout::<P>() })
    }

    /// The longest [`Cluster::leave`] takes with partitions `P`: a round in progress, then
    /// the leave itself ([`bounds::stop`]).
    pub const fn stop_timeout<P: Partitions>() -> Duration {
        bounds::stop(P::CLOSE_TIMEOUT, P::OPEN_TIMEOUT)
    }

    /// Leaves the cluster: hands every partition over (stops taking it, answers what it took,
    /// releases its lease, so its next owner starts at once) and withdraws the membership.
    pub async fn leave(mut self) {
        let _ = self.stop.send(());
        let bound = self.stop_timeout;
        if tokio::time::timeout(bound, &mut self.task).await.is_err() {
            tracing::warn!("leaving the cluster took more than {bound:?}; its leases will expire instead");
            self.task.abort();
        }
    }
}
