//! Killing whoever leads, and partitions: on loopback through the nodes' fault-injection switch
//! (`--enable-fault-injection`), where Raft traffic between groups of nodes is dropped silently
//! as a cut network would while client traffic still flows; in a [`crate::Network`] by packet
//! filters, where every packet between the groups is dropped (Raft and forwarded requests
//! alike) and clients, on the bridge, still reach every node.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use distsync::{Client, NodeId, Role};

use crate::{Cluster, Filter};

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

    /// Cuts traffic between the groups `a` and `b` in both directions (client traffic still
    /// flows): Raft traffic through the switch, or every packet in a network. Traffic within
    /// each group is untouched; a node in neither group keeps what it had.
    ///
    /// # Errors
    ///
    /// When a node does not accept the switch (not running, or fault injection disabled), or
    /// the network's filters cannot be set.
    pub async fn partition(&self, a: &[NodeId], b: &[NodeId]) -> anyhow::Result<()> {
        if let Some(network) = self.network() {
            let cut = |group: &[NodeId]| group.iter().map(|&peer| Filter::from(peer)).collect::<Vec<_>>();
            let filters: Vec<(NodeId, Vec<Filter>)> =
                a.iter().map(|&id| (id, cut(b))).chain(b.iter().map(|&id| (id, cut(a)))).collect();
            return network.apply(&filters).await;
        }
        for &id in a {
            self.set_dropped_peers(id, b).await?;
        }
        for &id in b {
            self.set_dropped_peers(id, a).await?;
        }
        Ok(())
    }

    /// Restores Raft traffic on every running node (in a network: clears every filter).
    ///
    /// # Errors
    ///
    /// When a running node does not accept the switch, or the filters cannot be cleared.
    pub async fn heal(&self) -> anyhow::Result<()> {
        if let Some(network) = self.network() {
            return network.heal().await;
        }
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

    /// Makes node `id` hold every request to a peer `delay_ms` (up to half again as long) before
    /// sending it, as a slow network would (0 removes the delay).
    ///
    /// # Errors
    ///
    /// When the node does not accept the switch.
    pub async fn set_peer_delay(&self, id: NodeId, delay_ms: u32) -> anyhow::Result<()> {
        let client = Client::new_unconnected(self.options_for(&[id]))?;
        client
            .set_peer_delay(&self.endpoint(id), delay_ms)
            .await
            .with_context(|| format!("cannot make node {id} delay its peer requests by {delay_ms} ms"))
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
