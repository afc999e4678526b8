//! Turning writes into log entries: every write waiting is taken into one entry (group commit:
//! one fsync and one replication round trip per batch), with a bounded number of entries in
//! flight; and the idle leader's tick, so that leases expire on time.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use distsync::wire::{Request, Response};
use distsync::{NodeId, ServerError};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use super::batch::{fill_batch, OP_BYTES_MAX};
use super::clock;
use super::dispatch::Origin;
use super::Node;
use crate::state::{ApplyResult, LogCommand, Op};

/// Batches proposed and not yet committed. While they are in flight, new writes wait and form
/// the next batch; a lone client never waits for one.
pub const BATCHES_IN_FLIGHT_MAX: usize = 2;

/// Writes waiting to be batched. Beyond this the node answers `Unavailable` at once instead of
/// queueing without bound.
pub const PROPOSAL_QUEUE_MAX: usize = 16 * 1024;

/// How late after its deadline an idle leader notices a lock wait or session lease has ended.
const DEADLINE_RESOLUTION: Duration = Duration::from_millis(25);

/// One write waiting to be proposed, and where its result goes.
pub(super) struct Proposal {
    op: Op,
    /// The operation's encoded size, at most [`OP_BYTES_MAX`].
    bytes: usize,
    reply: oneshot::Sender<Result<ApplyResult, Rejection>>,
}

/// Why a batch was not applied.
#[derive(Clone, Debug)]
enum Rejection {
    /// This node is no longer the leader; the leader, if known.
    NotLeader(Option<NodeId>),
    /// This node is stopping or failed.
    Unavailable(String),
    /// A bug.
    Internal(String),
}

impl Node {
    /// Proposes `op` if this node leads, else forwards it to the leader.
    pub(super) async fn write(&self, op: Op, origin: Origin) -> Result<Response, ServerError> {
        let leader = self.metrics.borrow().current_leader;
        if leader.is_some_and(|leader| leader != self.config.id) {
            return match forwardable(op) {
                Some((identity, request)) => self.forward(request, leader, origin, &identity).await,
                None => Err(ServerError::NotLeader { leader: self.leader() }),
            };
        }
        // Client writes were checked against WRITE_BYTES_MAX already; this also bounds what the
        // node proposes itself, so that no entry can outgrow a replication frame.
        let bytes = op.encoded_bytes();
        if bytes > OP_BYTES_MAX {
            return Err(ServerError::TooLarge {
                what: "operation".into(),
                bytes: bytes as u64,
                limit: OP_BYTES_MAX as u64,
            });
        }
        self.last_proposal_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        if self.proposals.try_send(Proposal { op, bytes, reply }).is_err() {
            return Err(ServerError::Unavailable {
                reason: format!("node {} has {PROPOSAL_QUEUE_MAX} writes queued; retry later", self.config.id),
            });
        }
        let write_timeout = self.config.write_timeout();
        match tokio::time::timeout(write_timeout, answer).await {
            Ok(Ok(Ok(result))) => result,
            // Leadership moved between the check above and the proposal, which is rare: the client
            // follows the hint and retries under the same sequence number.
            Ok(Ok(Err(Rejection::NotLeader(leader)))) => {
                Err(ServerError::NotLeader { leader: leader.and_then(|id| self.member(id)) })
            }
            Ok(Ok(Err(Rejection::Unavailable(reason)))) => Err(ServerError::Unavailable { reason }),
            Ok(Ok(Err(Rejection::Internal(reason)))) => Err(ServerError::Internal { reason }),
            Ok(Err(_)) => Err(ServerError::Unavailable { reason: format!("node {} is stopping", self.config.id) }),
            Err(_) => Err(ServerError::Unavailable { reason: uncommitted(self.config.id, write_timeout) }),
        }
    }
}

/// Why a write was not acknowledged in time; the same words whether the caller or the batch
/// gave up first.
fn uncommitted(id: NodeId, write_timeout: Duration) -> String {
    format!(
        "not committed within {write_timeout:?}: node {id} may be cut off from a majority; the write may still \
         commit, and retrying under the same session is safe"
    )
}

/// The client request that proposes `op`, with the identity it is sent as, for forwarding;
/// ticks are a leader's own business and are never forwarded.
fn forwardable(op: Op) -> Option<(String, Request)> {
    match op {
        Op::OpenSession { ttl_ms, identity, secret } => Some((identity, Request::OpenSession { ttl_ms, secret })),
        Op::KeepAlive { session, identity, secret } => Some((identity, Request::KeepAlive { session, secret })),
        Op::Write { identity, write } => Some((identity, Request::Write(write))),
        Op::Admin { identity, command } => Some((identity, Request::Admin(command))),
        // A node's own report: no client identity (peers accept it only from a member).
        Op::CacheReport(report) => Some((String::new(), Request::CacheReport(report))),
        Op::Tick | Op::CacheWrittenBack { .. } | Op::NameCluster { .. } | Op::SetLimits { .. } => None,
    }
}

/// Turns queued writes into log entries: takes every write waiting (up to the batch limits of
/// [`super::batch`]) as one entry, with at most [`BATCHES_IN_FLIGHT_MAX`] entries awaiting commit. A batch that does not
/// commit within the write timeout (a leader cut off from the majority) stops counting as in
/// flight: its entry stays in the log, uncommitted, and later writes are still appended.
pub(super) async fn propose_loop(
    node: Arc<Node>,
    mut queue: mpsc::Receiver<Proposal>,
    mut stopped: watch::Receiver<bool>,
) {
    let grace_ms = node.config.lease_grace_ms();
    let id = node.config.id;
    let write_timeout = node.config.write_timeout();
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT_MAX));
    // The term whose first batch carried this node's limits.
    let mut limits_term = None;
    loop {
        let permit = in_flight.clone().acquire_owned().await.expect("the semaphore is never closed");
        let first = tokio::select! {
            proposal = queue.recv() => match proposal {
                Some(proposal) => proposal,
                None => return,
            },
            _ = stopped.changed() => return,
        };
        let batch = fill_batch(first, |proposal| proposal.bytes, || queue.try_recv().ok());
        let (mut ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|p| (p.op, p.reply)).unzip();
        // A leader puts its --max-… limits first in its first batch of a term (Raft orders it
        // after everything of earlier terms, a previous leader's limits included), and in every
        // batch while the limits applied differ from its own; so every write it proposes is
        // checked against them, and no replica relies on its own build's defaults.
        let term = node.metrics.borrow().current_term;
        let differ = *node.state.applied().machine.limits() != node.config.limits;
        let set_limits = differ || limits_term != Some(term);
        limits_term = Some(term);
        if set_limits {
            if differ {
                tracing::info!(limits = ?node.config.limits, "proposing the limits of this node's flags");
            }
            ops.insert(0, Op::SetLimits { limits: node.config.limits });
        }
        let command = LogCommand { time_ms: node.cluster_time_ms(true), grace_ms, ops };
        let raft = node.raft.clone();
        tokio::spawn(async move {
            let Ok(outcome) = tokio::time::timeout(write_timeout, raft.client_write(command)).await else {
                drop(permit);
                let rejection = Rejection::Unavailable(uncommitted(id, write_timeout));
                for reply in replies {
                    let _ = reply.send(Err(rejection.clone()));
                }
                return;
            };
            drop(permit);
            match outcome {
                Ok(response) => {
                    let skipped = usize::from(set_limits);
                    assert_eq!(response.data.len(), skipped + replies.len(), "one result per batched operation");
                    for (reply, result) in replies.into_iter().zip(response.data.into_iter().skip(skipped)) {
                        let _ = reply.send(Ok(result));
                    }
                }
                Err(error) => {
                    let rejection = match error {
                        RaftError::APIError(ClientWriteError::ForwardToLeader(to)) => {
                            Rejection::NotLeader(to.leader_id)
                        }
                        RaftError::APIError(ClientWriteError::ChangeMembershipError(error)) => {
                            Rejection::Internal(error.to_string())
                        }
                        RaftError::Fatal(error) => Rejection::Unavailable(format!("the node is stopping: {error}")),
                    };
                    for reply in replies {
                        let _ = reply.send(Err(rejection.clone()));
                    }
                }
            }
        });
    }
}

/// Proposes a tick whenever the leader has been idle for a tick interval, so that leases expire
/// on time even without traffic.
pub(super) async fn tick_loop(node: Arc<Node>, mut stopped: watch::Receiver<bool>) {
    // Wake often enough to propose a tick soon after a lock wait or a session lease ends, so that
    // timeouts and expiries happen within tens of milliseconds, not a whole tick interval.
    let period = Duration::from_millis(node.config.tick_ms).min(DEADLINE_RESOLUTION);
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stopped.changed() => return,
        }
        let is_leader = node.metrics.borrow().current_leader == Some(node.config.id);
        let idle_ms =
            (node.started.elapsed().as_millis() as u64).saturating_sub(node.last_proposal_ms.load(Ordering::Relaxed));
        let deadline_passed = || {
            let deadline_ms = node.state.applied().machine.next_deadline_ms();
            deadline_ms.is_some_and(|deadline_ms| node.cluster_time_ms(false) > deadline_ms)
        };
        if is_leader && node.state.applied().machine.cluster_id().is_none() {
            // A new cluster's first leader names it, before anything is written back to Redis.
            if let Err(error) = node.write(Op::NameCluster { id: random_cluster_id() }, Origin::Forwarded).await {
                tracing::debug!(%error, "cluster name not committed");
            }
        }
        if is_leader && (idle_ms >= node.config.tick_ms || deadline_passed()) {
            if let Err(error) = node.write(Op::Tick, Origin::Forwarded).await {
                tracing::debug!(%error, "tick not committed");
            }
        }
    }
}

fn random_cluster_id() -> crate::state::ClusterId {
    use ring::rand::SecureRandom as _;
    let mut id = [0; 16];
    ring::rand::SystemRandom::new().fill(&mut id).expect("the OS random source works");
    id
}

impl Node {
    /// Cluster time now, for an entry of the current term (see [`clock`]); `stamp` when it goes
    /// into an entry, so later stamps continue from it.
    fn cluster_time_ms(&self, stamp: bool) -> u64 {
        let term = self.metrics.borrow().current_term;
        let state_ms = self.state.applied().machine.now_ms();
        let wall_ms = clock::wall_ms(self.clock_offset_ms.load(Ordering::Relaxed));
        let mut clock = self.clock.lock().expect("the clock's holder never panics");
        if stamp {
            clock.stamp(term, state_ms, Instant::now(), wall_ms)
        } else {
            clock.peek(term, state_ms, Instant::now(), wall_ms)
        }
    }
}
