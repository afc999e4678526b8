//! Killing whoever leads, and partitions through the nodes' fault-injection switch (`--enable-fault-injection`): Raft
//! traffic between groups of nodes is dropped silently, as a cut network would, while client
//! traffic still flows.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use distsync::{Client, NodeId, Role};

use crate::Cluster;

impl Cluster {
    /// Kills (SIGKILL) whoever leads at this moment: the running node that the others agree
    /// on, confirmed by its own status just before the kill; prints which node and term. Returns
    /// them, so that a test can wait for a leader of a later term
    /// ([`Cluster::wait_for_new_leader`]), which only an election after the kill can produce.
    ///
    /// # Errors
    ///
    /// When no leader is agreed on within `timeout`, or the leader cannot be killed.
    pub async fn kill_leader(&self, timeout: Duration) -> anyhow::Result<(NodeId, u64)> {
        let running: Vec<NodeId> = self.ids().into_iter().filter(|&id| self.is_running(id)).collect();
        let deadline = Instant::now() + timeout;
        loop {
            let leader = self.wait_for_leader(&running, deadline.saturating_duration_since(Instant::now())).await?;
            let status = self.status(leader).await?;
            if status.role != Role::Leader {
                // It lost the leadership in between: look again.
                continue;
            }
            self.kill(leader)?;
            eprintln!("killed node {leader}, the leader of term {}", status.term);
            return Ok((leader, status.term));
        }
    }

    /// Cuts Raft traffic between the groups `a` and `b` in both directions (client traffic still
    /// flows). Traffic within each group is untouched.
    ///
    /// # Errors
    ///
    /// When a node does not accept the switch (not running, or fault injection disabled).
    pub async fn partition(&self, a: &[NodeId], b: &[NodeId]) -> anyhow::Result<()> {
        for &id in a {
            self.set_dropped_peers(id, b).await?;
        }
        for &id in b {
            self.set_dropped_peers(id, a).await?;
        }
        Ok(())
    }

    /// Restores Raft traffic on every running node.
    ///
    /// # Errors
    ///
    /// When a running node does not accept the switch.
    pub async fn heal(&self) -> anyhow::Result<()> {
        for id in self.ids() {
            if self.is_running(id) {
                self.set_dropped_peers(id, &[]).await?;
            }
        }
        Ok(())
    }

    /// Makes node `id` drop Raft traffic to and from `peers` (an empty list heals it).
    ///
    /// # Errors
    ///
    /// When the node does not accept the switch.
    pub async fn set_dropped_peers(&self, id: NodeId, peers: &[NodeId]) -> anyhow::Result<()> {
        let client = Client::new_unconnected(self.options_for(&[id]))?;
        client
            .set_dropped_peers(&self.endpoint(id), peers)
            .await
            .with_context(|| format!("cannot make node {id} drop peers {peers:?}"))
    }

    /// Makes node `id` read its wall clock `offset_ms` off from now on, as if it had jumped
    /// (0 restores it).
    ///
    /// # Errors
    ///
    /// When the node does not accept the switch.
    pub async fn set_clock_offset(&self, id: NodeId, offset_ms: i64) -> anyhow::Result<()> {
        let client = Client::new_unconnected(self.options_for(&[id]))?;
        client
            .set_clock_offset(&self.endpoint(id), offset_ms)
            .await
            .with_context(|| format!("cannot move node {id}'s clock by {offset_ms} ms"))
    }
}
