//! Watching a cluster settle: each node's own status, polled under a deadline (there is no
//! event to await across processes).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use distsync::{Client, ClientOptions, NodeId, NodeStatus, Role};

use crate::Cluster;

/// How long one status request may take; short, because a dead node must not stall a wait loop.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// Pause between two polls of the nodes' status.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Pause between polls while timing a failover, where the poll's grain is the measurement's.
const FAST_POLL_INTERVAL: Duration = Duration::from_millis(5);

impl Cluster {
    /// Node `id`'s own view of the cluster, asked of that node alone (fresh connection, 1 s).
    ///
    /// A fresh client per call on purpose: a cached QUIC connection to a node that was killed
    /// and restarted on the same port stays half-open until its idle timeout.
    ///
    /// # Errors
    ///
    /// When the node does not answer within 1 s.
    pub async fn status(&self, id: NodeId) -> anyhow::Result<NodeStatus> {
        self.ask_status(id, false).await
    }

    /// The cluster's id as node `id` reports it, once that node applied it (within `timeout`).
    ///
    /// # Errors
    ///
    /// When the node does not report one by then.
    pub async fn cluster_id(&self, id: NodeId, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.status(id).await {
                Ok(NodeStatus { cluster_id: Some(cluster_id), .. }) => return Ok(cluster_id),
                Ok(status) => format!("{status:?}"),
                Err(error) => format!("{error:#}"),
            };
            anyhow::ensure!(Instant::now() < deadline, "node {id} reports no cluster id after {timeout:?}: {last}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the given nodes all answer and agree on one leader among them, which reports
    /// itself as leader. Returns the leader's id.
    ///
    /// # Errors
    ///
    /// At the deadline, with what each node last reported.
    pub async fn wait_for_leader(&self, among: &[NodeId], timeout: Duration) -> anyhow::Result<NodeId> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses = self.statuses(among).await;
            if let Some(leader) = agreed_leader(among, &statuses) {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                bail!(
                    "nodes {among:?} agreed on no leader among themselves within {timeout:?}; last seen:\n{}",
                    describe_statuses(among, &statuses)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until one of the running nodes reports itself leader of a term above `after_term`
    /// (a new leader after a kill), polling every 5 ms; returns its status.
    ///
    /// # Errors
    ///
    /// When no such leader appears before `timeout`.
    pub async fn wait_for_new_leader(&self, after_term: u64, timeout: Duration) -> anyhow::Result<NodeStatus> {
        let probe = Client::new_unconnected(
            ClientOptions::new(self.endpoints(), self.tls.clone()).attempt_timeout(Duration::from_millis(200)),
        )?;
        let deadline = Instant::now() + timeout;
        loop {
            for id in self.ids() {
                if !self.is_running(id) {
                    continue;
                }
                if let Ok(status) = probe.node_status(&self.endpoint(id)).await {
                    if status.role == Role::Leader && status.term > after_term {
                        return Ok(status);
                    }
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "no leader elected within {timeout:?}");
            tokio::time::sleep(FAST_POLL_INTERVAL).await;
        }
    }

    /// Waits until node `id` has applied index `index`; returns its status. Cheaper than
    /// [`Cluster::wait_applied_equal`] on a large state: one node's digest per poll, not all.
    ///
    /// # Errors
    ///
    /// At the deadline, with how far the node got.
    pub async fn wait_applied(&self, id: NodeId, index: u64, timeout: Duration) -> anyhow::Result<NodeStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(id).await;
            match status {
                Ok(status) if status.applied >= index => return Ok(status),
                _ if Instant::now() >= deadline => {
                    bail!("node {id} did not apply index {index} within {timeout:?}; last seen: {status:?}")
                }
                _ => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }

    /// [`Cluster::status`] with the node's state digest (`distsync status --digest`).
    ///
    /// # Errors
    ///
    /// When the node does not answer within 1 s.
    pub async fn status_with_digest(&self, id: NodeId) -> anyhow::Result<NodeStatus> {
        self.ask_status(id, true).await
    }

    /// Node `id`'s status (with its digest if `digest`) from a fresh client, as a future that
    /// owns what it needs, so that it can be spawned.
    fn ask_status(
        &self,
        id: NodeId,
        digest: bool,
    ) -> impl std::future::Future<Output = anyhow::Result<NodeStatus>> + Send + 'static {
        let options = self.options_for(&[id]).attempt_timeout(STATUS_TIMEOUT).request_timeout(STATUS_TIMEOUT);
        let endpoint = self.endpoint(id);
        async move {
            let client = Client::new_unconnected(options)?;
            let status = if digest {
                client.node_status_with_digest(&endpoint).await
            } else {
                client.node_status(&endpoint).await
            };
            status.with_context(|| format!("status of node {id}"))
        }
    }

    /// Waits until the given nodes all report a state digest taken at the same applied index,
    /// the same digest, and that index at least the highest commit index any of them reported
    /// when the wait began (so it covers everything committed before); returns their statuses in
    /// the order of `ids`. The statuses' own `applied` may be past the digest's index: an idle
    /// leader's ticks move it every tick interval.
    ///
    /// # Errors
    ///
    /// At the deadline, with what each node last reported.
    pub async fn wait_applied_equal(&self, ids: &[NodeId], timeout: Duration) -> anyhow::Result<Vec<NodeStatus>> {
        anyhow::ensure!(!ids.is_empty(), "no nodes to compare");
        let deadline = Instant::now() + timeout;
        let mut floor = None;
        loop {
            // Asked of all at once, so that their digests are of one moment.
            let asks: Vec<_> = ids.iter().map(|&id| tokio::spawn(self.ask_status(id, true))).collect();
            let mut statuses = Vec::with_capacity(asks.len());
            for ask in asks {
                statuses.push(ask.await.unwrap_or_else(|panic| Err(anyhow::anyhow!("status task failed: {panic}"))));
            }
            if floor.is_none() {
                floor = statuses.iter().flatten().map(|s| s.committed).max();
            }
            if let (Some(floor), Ok(statuses)) =
                (floor, statuses.iter().map(|s| s.as_ref().map_err(|_| ())).collect::<Result<Vec<_>, ()>>())
            {
                let first = statuses[0].state_digest;
                if first.is_some_and(|digest| digest.applied >= floor)
                    && statuses.iter().all(|s| s.state_digest == first)
                {
                    return Ok(statuses.into_iter().cloned().collect());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "nodes {ids:?} did not converge on one state digest at one applied index (at least {floor:?}, \
                     the highest commit index when the wait began) within {timeout:?}; last seen:\n{}",
                    describe_statuses(ids, &statuses)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until node `id` answers a status request; fails at once if its process exits.
    pub(crate) async fn wait_serving(&self, id: NodeId, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last_error = match self.status(id).await {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            if let Some(exit) = self.exit_status(id) {
                bail!("node {id} exited with {exit} while starting; its log ends:\n{}", self.log_tail(id, 30));
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {id} did not answer within {timeout:?} of starting ({last_error:#}); its log ends:\n{}",
                    self.log_tail(id, 30)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn statuses(&self, ids: &[NodeId]) -> Vec<anyhow::Result<NodeStatus>> {
        let mut statuses = Vec::with_capacity(ids.len());
        for &id in ids {
            statuses.push(self.status(id).await);
        }
        statuses
    }
}

/// One line per node: role, term, leader, indexes, or the error.
pub fn describe_statuses(ids: &[NodeId], statuses: &[anyhow::Result<NodeStatus>]) -> String {
    ids.iter()
        .zip(statuses)
        .map(|(id, status)| match status {
            Ok(s) => format!(
                "  node {id}: {} term {} leader {:?} last_log {} committed {} applied {} snapshot {} digest {} keys {}",
                s.role.as_str(),
                s.term,
                s.leader,
                s.last_log_index,
                s.committed,
                s.applied,
                s.snapshot,
                s.state_digest.map_or("-".to_string(), |d| format!("{:#x} at {}", d.digest, d.applied)),
                s.keys
            ),
            Err(error) => format!("  node {id}: {error:#}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The leader all of `among` name, if they all answered, it is one of them, and it says so itself.
fn agreed_leader(among: &[NodeId], statuses: &[anyhow::Result<NodeStatus>]) -> Option<NodeId> {
    let mut leader = None;
    for status in statuses {
        let named = status.as_ref().ok()?.leader?;
        if *leader.get_or_insert(named) != named {
            return None;
        }
    }
    let leader = leader?;
    let position = among.iter().position(|&id| id == leader)?;
    let own = statuses[position].as_ref().ok()?;
    (own.role == Role::Leader && own.id == leader).then_some(leader)
}
