//! Injecting the schedule's faults into the running cluster and healing them: kills and
//! restarts, pauses, partitions (packet filters in the network of namespaces, else the nodes'
//! fault switch), packet loss, delay, clock jumps, Redis kills, killing every node at once, a
//! full disk, and power cuts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use distsync::{ClientError, NodeId, Role, ServerError};
use distsync_harness::{Cluster, Filter, Redis};

use crate::disk::FullDisk;
use crate::power::PowerDisk;
use crate::schedule::{FaultKind, PlannedFault, PowerScope, Split, Target};

/// How long the injector waits for a node's status while it looks for the leader.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a node that did not answer its fault switch may take to exit before it is
/// recorded as a crash (a node stopping on a storage error closes its endpoint first).
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// Applies faults and remembers what to undo.
pub struct Injector {
    cluster: Arc<Cluster>,
    redis: Option<Arc<Redis>>,
    /// The node whose disk the full-disk fault fills, and that disk.
    disk: Option<(NodeId, Arc<FullDisk>)>,
    /// Each node's power-cut disk, when the run cuts power.
    power: BTreeMap<NodeId, Arc<PowerDisk>>,
    /// Bytes of unsynced writes the power cuts dropped.
    pub power_cut_bytes: u64,
    /// Faults injected, by kind.
    pub injected: BTreeMap<FaultKind, u64>,
    /// Nodes whose disk was filled since they last started: they may stop by themselves.
    may_stop: Vec<NodeId>,
    /// Crashes, each with what showed it: a node that stopped by itself without a full disk
    /// (with its log's last lines), or one that kept running without answering.
    pub crashes: Vec<String>,
    /// Nodes that stopped by themselves after their disk filled, restarted as a supervisor would.
    pub restarted_after_full_disk: u64,
    /// Nodes that exited while starting again, recorded as a crash once until they start.
    failed_to_start: Vec<NodeId>,
    /// Nodes recorded as running without answering (once each, until they start again).
    silent: Vec<NodeId>,
}

/// What an injected fault changed, to heal it.
pub enum Injected {
    /// Nodes killed: restart them.
    Killed(Vec<NodeId>),
    /// A node stopped: continue it.
    Paused(NodeId),
    /// Traffic between nodes cut or lossy: restore it.
    Partitioned,
    /// Requests between nodes delayed: stop delaying them.
    Delayed,
    /// A clock moved: put it back.
    ClockMoved(NodeId),
    /// Redis killed: restart it.
    RedisKilled,
    /// A node's disk filled: give the space back (the node, if it stopped, is restarted by
    /// [`Injector::supervise`]).
    DiskFull,
    /// Nothing to heal (the fault did not apply, e.g. Redis faults without Redis).
    Nothing,
}

impl Injector {
    /// An injector for `cluster` (and `redis`, the disk to fill, and the nodes' power-cut
    /// disks, if the run has them).
    pub fn new(
        cluster: Arc<Cluster>,
        redis: Option<Arc<Redis>>,
        disk: Option<(NodeId, Arc<FullDisk>)>,
        power: BTreeMap<NodeId, Arc<PowerDisk>>,
    ) -> Self {
        Injector {
            cluster,
            redis,
            disk,
            power,
            power_cut_bytes: 0,
            failed_to_start: Vec::new(),
            silent: Vec::new(),
            injected: BTreeMap::new(),
            may_stop: Vec::new(),
            crashes: Vec::new(),
            restarted_after_full_disk: 0,
        }
    }

    /// Restarts every node that stopped by itself, as its service manager would (a node that
    /// cannot write its log stops for good and exits non-zero, by design). A node that stopped
    /// without a full disk crashed: that is recorded as a violation. Returns a progress line per
    /// restart.
    ///
    /// # Errors
    ///
    /// When a node cannot be restarted.
    pub async fn supervise(&mut self) -> anyhow::Result<Vec<String>> {
        let mut lines = Vec::new();
        for id in self.cluster.ids() {
            let Some(status) = self.cluster.exit_status(id) else { continue };
            if self.failed_to_start.contains(&id) {
                lines.push(format!("node {id}, which could not start, tried again"));
            } else if self.may_stop.contains(&id) {
                self.restarted_after_full_disk += 1;
                lines.push(format!("node {id} stopped after its disk filled ({status}); restarted"));
            } else {
                let tail = self.cluster.log_tail(id, 20);
                self.crashes.push(format!("node {id} stopped by itself ({status}); its log ends:\n{tail}"));
                lines.push(format!("node {id} CRASHED ({status}); restarted"));
            }
            self.may_stop.retain(|&node| node != id);
            self.start_again(id).await?;
        }
        Ok(lines)
    }

    /// The node that leads now: the one that says so with the highest term among those that
    /// answer. `None` during an election.
    pub async fn current_leader(&self) -> Option<NodeId> {
        let mut leader: Option<(u64, NodeId)> = None;
        for id in self.cluster.ids().into_iter().filter(|&id| self.cluster.is_running(id)) {
            if let Ok(Ok(status)) = tokio::time::timeout(STATUS_TIMEOUT, self.cluster.status(id)).await {
                if status.role == Role::Leader && leader.is_none_or(|(term, _)| status.term > term) {
                    leader = Some((status.term, id));
                }
            }
        }
        leader.map(|(_, id)| id)
    }

    /// Resolves a target: the leader now (if there is none, the first node), or the n-th node
    /// that does not lead.
    async fn resolve(&self, target: Target) -> (NodeId, Option<NodeId>) {
        let leader = self.current_leader().await;
        let ids = self.cluster.ids();
        let node = match target {
            Target::Leader => leader.unwrap_or(ids[0]),
            Target::Follower(n) => {
                let others: Vec<NodeId> = ids.iter().copied().filter(|&id| Some(id) != leader).collect();
                others[n % others.len()]
            }
        };
        (node, leader)
    }

    /// Injects `fault`; returns what to heal and the progress line that says what was done.
    ///
    /// # Errors
    ///
    /// When a node or Redis cannot be signalled, or a node refuses its fault switch (one that
    /// does not answer is recorded as a crash).
    pub async fn inject(&mut self, fault: &PlannedFault) -> anyhow::Result<(Injected, String)> {
        *self.injected.entry(fault.kind).or_default() += 1;
        let hold = format!("for {} ms", fault.hold.as_millis());
        match fault.kind {
            FaultKind::Kill => {
                let (node, leader) = self.resolve(fault.target).await;
                self.cluster.kill(node)?;
                Ok((Injected::Killed(vec![node]), format!("SIGKILL node {node}{} {hold}", role(node, leader))))
            }
            FaultKind::Pause => {
                let (node, leader) = self.resolve(fault.target).await;
                self.cluster.pause(node)?;
                Ok((Injected::Paused(node), format!("SIGSTOP node {node}{} {hold}", role(node, leader))))
            }
            FaultKind::Clock => {
                let (node, leader) = self.resolve(fault.target).await;
                let told = self.cluster.set_clock_offset(node, fault.clock_offset_ms).await;
                self.answered(node, told).await?;
                let line =
                    format!("clock of node {node}{} moved {:+} ms {hold}", role(node, leader), fault.clock_offset_ms);
                Ok((Injected::ClockMoved(node), line))
            }
            FaultKind::Partition => {
                let line = self.partition(fault.split, fault.target).await?;
                Ok((Injected::Partitioned, format!("{line} {hold}")))
            }
            FaultKind::Loss => match self.cluster.network() {
                Some(network) => {
                    network.lose_everywhere(f64::from(fault.loss_percent) / 100.0).await?;
                    Ok((
                        Injected::Partitioned,
                        format!("{} % of packets between nodes lost {hold}", fault.loss_percent),
                    ))
                }
                None => Ok((Injected::Nothing, "loss: nodes on loopback (not --network netns), skipped".to_string())),
            },
            FaultKind::Delay => {
                for id in self.running() {
                    let told = self.cluster.set_peer_delay(id, fault.delay_ms).await;
                    self.answered(id, told).await?;
                }
                let line =
                    format!("requests between nodes delayed {}–{} ms {hold}", fault.delay_ms, fault.delay_ms * 3 / 2);
                Ok((Injected::Delayed, line))
            }
            FaultKind::Redis => match &self.redis {
                Some(redis) => {
                    redis.kill()?;
                    Ok((Injected::RedisKilled, format!("SIGKILL redis-server {hold}")))
                }
                None => Ok((Injected::Nothing, "redis: no Redis in this run, skipped".to_string())),
            },
            FaultKind::Disk => match &self.disk {
                Some((node, disk)) => {
                    let leader = self.current_leader().await;
                    let size = disk.fill()?;
                    self.may_stop.push(*node);
                    let line = format!("disk of node {node}{} full at {size} bytes {hold}", role(*node, leader));
                    Ok((Injected::DiskFull, line))
                }
                None => Ok((Injected::Nothing, "disk: no small disk in this run, skipped".to_string())),
            },
            FaultKind::Power => {
                if self.power.is_empty() {
                    return Ok((Injected::Nothing, "power: no power-cut disks in this run, skipped".to_string()));
                }
                let (first, leader) = self.resolve(fault.target).await;
                let mut order = self.cluster.ids();
                let start = order.iter().position(|&id| id == first).unwrap_or(0);
                order.rotate_left(start);
                let count = match fault.power {
                    PowerScope::Minority => (order.len() - 1) / 2,
                    PowerScope::Majority => order.len() / 2 + 1,
                    PowerScope::All => order.len(),
                };
                let hit: Vec<NodeId> = order.into_iter().take(count).collect();
                for &id in &hit {
                    if self.cluster.is_running(id) {
                        self.cluster.kill(id)?;
                    }
                }
                let lost: u64 = hit.iter().filter_map(|id| self.power.get(id)).map(|disk| disk.cut()).sum();
                self.power_cut_bytes += lost;
                let line = format!(
                    "power cut to nodes {hit:?} (leader {leader:?}): {} KiB not fsync'd lost {hold}",
                    lost / 1024
                );
                Ok((Injected::Killed(hit), line))
            }
            FaultKind::KillAll => {
                let ids = self.cluster.ids();
                for &id in &ids {
                    self.cluster.kill(id)?;
                }
                Ok((Injected::Killed(ids), format!("SIGKILL every node {hold}")))
            }
        }
    }

    /// Starts node `id` again. A node that exits while starting (it cannot use its own data
    /// after a power cut, say) is a finding, not a harness failure: it is recorded as a crash
    /// and left down until the next fault, when [`Injector::supervise`] tries again.
    ///
    /// # Errors
    ///
    /// When the node cannot be spawned (one that runs without serving is recorded as a crash).
    async fn start_again(&mut self, id: NodeId) -> anyhow::Result<()> {
        match self.cluster.restart(id).await {
            Ok(()) => {
                self.failed_to_start.retain(|&node| node != id);
                self.silent.retain(|&node| node != id);
                Ok(())
            }
            Err(error) if self.cluster.exit_status(id).is_some() => {
                if !self.failed_to_start.contains(&id) {
                    self.crashes.push(format!("node {id} could not start again: {error:#}"));
                    self.failed_to_start.push(id);
                }
                Ok(())
            }
            Err(error) if self.cluster.is_running(id) && !self.silent.contains(&id) => {
                self.crashes.push(format!("node {id} runs but did not serve after starting again: {error:#}"));
                self.silent.push(id);
                Ok(())
            }
            Err(_) if self.cluster.is_running(id) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The nodes running now.
    fn running(&self) -> Vec<NodeId> {
        self.cluster.ids().into_iter().filter(|&id| self.cluster.is_running(id)).collect()
    }

    /// Makes everything `node` sends to the other nodes lost, while what they send reaches it.
    /// The loopback switch cannot cut one way: there the node is cut off both ways.
    async fn one_way(&mut self, node: NodeId) -> anyhow::Result<()> {
        let others: Vec<NodeId> = self.cluster.ids().into_iter().filter(|&id| id != node).collect();
        match self.cluster.network() {
            Some(network) => network.apply(&[(node, others.iter().map(|&peer| Filter::to(peer)).collect())]).await,
            None => {
                let told = self.cluster.set_dropped_peers(node, &others).await;
                self.answered(node, told).await?;
                Ok(())
            }
        }
    }

    /// Cuts traffic between groups `a` and `b`: packet filters in a network, else each running
    /// node's fault switch.
    async fn cut(&mut self, a: &[NodeId], b: &[NodeId]) -> anyhow::Result<()> {
        if self.cluster.network().is_some() {
            return self.cluster.partition(a, b).await;
        }
        let plan: Vec<(NodeId, &[NodeId])> = a.iter().map(|&id| (id, b)).chain(b.iter().map(|&id| (id, a))).collect();
        for (id, peers) in plan {
            if self.cluster.is_running(id) {
                let told = self.cluster.set_dropped_peers(id, peers).await;
                self.answered(id, told).await?;
            }
        }
        Ok(())
    }

    /// Restores traffic between every node: clears the network's filters, else each running
    /// node's fault switch.
    ///
    /// # Errors
    ///
    /// When the network's filters cannot be cleared.
    pub async fn heal_partitions(&mut self) -> anyhow::Result<()> {
        if self.cluster.network().is_some() {
            return self.cluster.heal().await;
        }
        for id in self.running() {
            let told = self.cluster.set_dropped_peers(id, &[]).await;
            self.answered(id, told).await?;
        }
        Ok(())
    }

    /// Weighs what node `id` answered to its fault switch. A node that does not answer (or
    /// answers that it is unavailable, stopping) is a finding about the node, not a failure of
    /// the harness: one that exits (it met something in its own data it cannot live with, say after
    /// a power cut) is [`Injector::supervise`]'s to record and restart; one that keeps running
    /// without answering is recorded as a crash, once. A refusal that says the harness is wrong
    /// (fault injection disabled, a bad argument or certificate) is the error.
    async fn answered(&mut self, id: NodeId, told: anyhow::Result<()>) -> anyhow::Result<()> {
        let Err(error) = told else { return Ok(()) };
        let misconfigured = error.chain().find_map(|cause| cause.downcast_ref::<ClientError>()).is_some_and(|cause| {
            matches!(
                cause,
                ClientError::Server(
                    ServerError::FaultInjectionDisabled
                        | ServerError::PermissionDenied { .. }
                        | ServerError::InvalidArgument { .. }
                ) | ClientError::Config { .. }
                    | ClientError::Unauthenticated { .. }
                    | ClientError::InvalidArgument { .. }
            )
        });
        if misconfigured {
            return Err(error);
        }
        if self.silent.contains(&id) {
            return Ok(());
        }
        // The harness learns of a child's exit only by asking (`try_wait`): poll briefly.
        let deadline = tokio::time::Instant::now() + EXIT_WAIT;
        while self.cluster.is_running(id) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.cluster.is_running(id) {
            self.crashes.push(format!("node {id} runs but did not answer its fault switch: {error:#}"));
            self.silent.push(id);
        }
        Ok(())
    }

    /// Cuts traffic between nodes as `split` says (a one-way cut hits `target`); returns the
    /// progress line.
    async fn partition(&mut self, split: Split, target: Target) -> anyhow::Result<String> {
        let (node, leader) = self.resolve(target).await;
        let ids = self.cluster.ids();
        let rotated = |rotation: usize| {
            let mut rotated = ids.clone();
            rotated.rotate_left(rotation % ids.len());
            rotated
        };
        match split {
            Split::IsolateLeader => {
                let isolated = leader.unwrap_or(ids[0]);
                let rest: Vec<NodeId> = ids.iter().copied().filter(|&id| id != isolated).collect();
                self.cut(&[isolated], &rest).await?;
                Ok(format!("node {isolated}{} alone against {rest:?}", role(isolated, leader)))
            }
            Split::MinorityMajority { rotation } => {
                let order = rotated(rotation);
                let (minority, majority) = order.split_at(ids.len().div_ceil(2) - 1);
                self.cut(minority, majority).await?;
                Ok(format!("minority {minority:?} against majority {majority:?} (leader {leader:?})"))
            }
            Split::Bridge { rotation } => {
                // The bridge reaches both halves; the halves do not reach each other.
                let order = rotated(rotation);
                let (bridge, rest) = order.split_first().context("a cluster has nodes")?;
                let (left, right) = rest.split_at(rest.len() / 2);
                self.cut(left, right).await?;
                Ok(format!("{left:?} and {right:?} apart, node {bridge} reaching both (leader {leader:?})"))
            }
            Split::OneWay => {
                self.one_way(node).await?;
                if self.cluster.network().is_some() {
                    Ok(format!("packets from node {node}{} to the others lost, theirs reach it", role(node, leader)))
                } else {
                    // The switch drops a peer's requests both ways.
                    Ok(format!("node {node}{} cut off from the others (loopback: both ways)", role(node, leader)))
                }
            }
        }
    }

    /// Undoes what `injected` changed.
    ///
    /// # Errors
    ///
    /// When a node cannot be spawned, Redis restarted, or a node refuses its fault switch (one
    /// that does not answer is recorded as a crash).
    pub async fn heal(&mut self, injected: Injected) -> anyhow::Result<()> {
        match injected {
            Injected::Killed(ids) => {
                for id in ids {
                    self.start_again(id).await?;
                }
                Ok(())
            }
            Injected::Paused(id) => self.cluster.resume(id),
            Injected::Partitioned => self.heal_partitions().await,
            Injected::Delayed => {
                for id in self.running() {
                    let told = self.cluster.set_peer_delay(id, 0).await;
                    self.answered(id, told).await?;
                }
                Ok(())
            }
            Injected::ClockMoved(id) => {
                let told = self.cluster.set_clock_offset(id, 0).await;
                self.answered(id, told).await?;
                Ok(())
            }
            Injected::RedisKilled => match &self.redis {
                Some(redis) => redis.restart().await,
                None => Ok(()),
            },
            Injected::DiskFull => match &self.disk {
                Some((_, disk)) => disk.grow(),
                None => Ok(()),
            },
            Injected::Nothing => Ok(()),
        }
    }
}

/// " (leader)" when `node` led as the fault hit it.
fn role(node: NodeId, leader: Option<NodeId>) -> &'static str {
    if Some(node) == leader {
        " (leader)"
    } else {
        " (follower)"
    }
}
