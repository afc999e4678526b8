//! Node assembly: storage, Raft, the QUIC endpoint, and the handlers for client and peer
//! requests. [`run`] takes its configuration and a shutdown signal, so tests and the CLI drive
//! it the same way.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use distsync::wire::{
    decode_body, encode_frame, read_frame, write_frame, LeaderInfo, NodeStatus, PeerStatus, Query, Reply, Request,
    Response, Role, ALPN_PEER, FRAME_BYTES_MAX,
};
use distsync::wire::{Command, CommandResponse, LockAwaitOutcome, QueueAwaitOutcome, AWAIT_MS_MAX};
use distsync::{FrameError, NodeId, ServerError, SessionId};
use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, RaftMetrics, ServerState};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::backing::RedisStore;
use crate::cache_service::{CacheHost, CacheService};
use crate::config::ServerConfig;
use crate::near_cache::{NearCache, NearCacheLimits};
use crate::peer::{forward_timeout, NetworkFactory, PeerRequest, PeerResponse};
use crate::raft_types::Raft;
use crate::state::{ApplyResult, LogCommand, Op, StateMachine};
use crate::storage::log_store::LogStore;
use crate::storage::state_machine_store::StateMachineStore;
use crate::transport::{negotiated_protocol, peer_identity, NodeTls, PeerTransport};

/// Concurrent connections (clients and peers) a node accepts; more are refused. Each costs a
/// task and QUIC state; 4096 is far above a coordination service's client count.
pub const CONNECTIONS_MAX: usize = 4096;

/// Operations batched into one log entry at most. Concurrent writes share an entry, so the
/// per-entry costs (an fsync, a replication round trip) are paid once per batch.
pub const BATCH_OPS_MAX: usize = 512;

/// Bytes batched into one log entry, roughly; one maximal value always fits.
pub const BATCH_BYTES_MAX: usize = 1024 * 1024;

/// Batches proposed and not yet committed. While they are in flight, new writes wait and form
/// the next batch; a lone client never waits for one.
pub const BATCHES_IN_FLIGHT_MAX: usize = 2;

/// Writes waiting to be batched. Beyond this the node answers `Unavailable` at once instead of
/// queueing without bound.
pub const PROPOSAL_QUEUE_MAX: usize = 16 * 1024;

/// How late after its deadline an idle leader notices a lock wait or session lease has ended.
const DEADLINE_RESOLUTION: Duration = Duration::from_millis(25);

/// QUIC application close code for a peer connection without a member certificate.
const CLOSE_NOT_A_MEMBER: u32 = 1;

/// Where a request came from, which bounds how far it may travel: a forwarded request is not
/// forwarded again (no loops), and a rerouted one is not rerouted again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Straight from a client.
    Client,
    /// From a client, being re-sent after the leader changed while it was forwarded.
    Rerouted,
    /// Forwarded by a follower.
    Forwarded,
}

/// One write waiting to be proposed, and where its result goes.
struct Proposal {
    op: Op,
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

/// A running node's shared state.
pub struct Node {
    config: ServerConfig,
    raft: Raft,
    proposals: mpsc::Sender<Proposal>,
    metrics: watch::Receiver<RaftMetrics<u64, BasicNode>>,
    log: LogStore,
    state: StateMachineStore,
    transport: Arc<PeerTransport>,
    started: Instant,
    /// Milliseconds since `started` of the latest proposal, for the idle tick.
    last_proposal_ms: AtomicU64,
    /// The cache: reads, the writer's copies, write-back, reports.
    cache: CacheService,
}

/// Runs a node until `shutdown` completes, then stops it cleanly.
///
/// # Errors
///
/// When the configuration is invalid, the data directory belongs to another node, certificates
/// are missing, or the address cannot be bound.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    config.validate()?;
    claim_data_dir(&config)?;
    let tls = NodeTls::load(&config.tls_dir, config.id)?;
    let log = LogStore::open(&config.data_dir.join("raft.redb"))?;
    let near_cache = Arc::new(NearCache::new(
        config.id,
        NearCacheLimits { bytes: config.cache_bytes, entries: config.cache_entries },
    ));
    let redis = match &config.redis {
        Some(url) => {
            tracing::info!(%url, "cache values are written back to Redis");
            Some(RedisStore::new(url)?)
        }
        None => {
            tracing::warn!(
                "no --redis given: cache values stay in the replicated log and snapshots (the embedded store, \
                 for development only; writes are refused once 256 MiB of values are held)"
            );
            None
        }
    };
    let state = StateMachineStore::open(&config.data_dir.join("snapshots"), near_cache.clone())?;
    let socket = std::net::UdpSocket::bind(config.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let runtime = quinn::default_runtime().ok_or_else(|| anyhow::anyhow!("no async runtime for QUIC"))?;
    let mut endpoint = quinn::Endpoint::new(tls.endpoint, Some(tls.server), socket, runtime)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    endpoint.set_default_client_config(tls.peer_client);
    let members = config.peers.0.clone();
    let transport = Arc::new(PeerTransport::new(config.id, endpoint.clone(), members.clone()));
    let raft = Raft::new(
        config.id,
        Arc::new(config.raft_config()?),
        NetworkFactory::new(transport.clone()),
        log.clone(),
        state.clone(),
    )
    .await?;
    if !raft.is_initialized().await? {
        let nodes: BTreeMap<u64, BasicNode> =
            members.iter().map(|(id, address)| (*id, BasicNode { addr: address.clone() })).collect();
        // Every initial member does this with the same list, which openraft allows; whichever
        // wins the first election forms the cluster. Later starts find the log and skip it.
        match raft.initialize(nodes).await {
            Ok(()) => tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "cluster initialized"),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(error) => return Err(error.into()),
        }
    }
    let (proposals, proposal_queue) = mpsc::channel(PROPOSAL_QUEUE_MAX);
    let id = config.id;
    let node = Arc::new(Node {
        proposals,
        metrics: raft.metrics(),
        config,
        raft,
        log,
        state,
        transport,
        started: Instant::now(),
        last_proposal_ms: AtomicU64::new(0),
        cache: CacheService::new(id, near_cache, redis),
    });
    tracing::info!(id = node.config.id, listen = %node.config.listen, "node serving");

    let (stop, stopped) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(accept_loop(node.clone(), endpoint.clone(), stopped.clone()));
    tasks.spawn(tick_loop(node.clone(), stopped.clone()));
    tasks.spawn(propose_loop(node.clone(), proposal_queue, stopped.clone()));
    tasks.spawn({
        let (node, stopped) = (node.clone(), stopped.clone());
        async move { node.cache.write_back_loop(&*node, node.state.applied_changes(), stopped).await }
    });
    tasks.spawn({
        let (node, stopped) = (node.clone(), stopped.clone());
        async move { node.cache.report_loop(&*node, stopped).await }
    });
    if let Some(address) = node.config.admin {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for admin HTTP on {address}: {e}"))?;
        tasks.spawn(crate::admin::serve(node.clone(), listener, stopped.clone()));
    }

    shutdown.await;
    tracing::info!(id = node.config.id, "shutting down");
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    if let Err(error) = node.raft.shutdown().await {
        tracing::warn!(%error, "raft did not stop cleanly");
    }
    endpoint.close(0u32.into(), b"node shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    Ok(())
}

/// Refuses a data directory that belongs to another node id: a reused id with another disk can
/// split the quorum, because the disk's vote would count twice.
fn claim_data_dir(config: &ServerConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", config.data_dir.display()))?;
    let marker = config.data_dir.join("node-id");
    match std::fs::read_to_string(&marker) {
        Ok(text) => {
            let owner: u64 = text.trim().parse().map_err(|_| {
                anyhow::anyhow!("{} is corrupt; it should hold this directory's node id", marker.display())
            })?;
            anyhow::ensure!(
                owner == config.id,
                "data dir {} belongs to node {owner}, not node {}; start node {owner} on it or use another directory",
                config.data_dir.display(),
                config.id
            );
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            anyhow::ensure!(
                !config.data_dir.join("raft.redb").exists(),
                "data dir {} has a Raft log but no node-id file; refusing to guess whose it is",
                config.data_dir.display()
            );
            std::fs::write(&marker, format!("{}\n", config.id))?;
            std::fs::File::open(&config.data_dir)?.sync_all()?;
        }
        Err(error) => return Err(error.into()),
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Node {
    /// The leader this node knows of, with its address.
    fn leader(&self) -> Option<LeaderInfo> {
        self.member(self.metrics.borrow().current_leader?)
    }

    /// Node `id` with its client address.
    fn member(&self, id: NodeId) -> Option<LeaderInfo> {
        Some(LeaderInfo { id, address: self.config.peers.0.get(&id)?.clone() })
    }

    fn reply(&self, body: Result<Response, ServerError>) -> Reply {
        Reply { leader: self.leader(), body }
    }

    /// Handles one client request (or one forwarded by a follower).
    async fn handle(&self, request: Request, origin: Origin) -> Reply {
        let body = self.dispatch(request, origin).await;
        self.reply(body)
    }

    async fn dispatch(&self, request: Request, origin: Origin) -> Result<Response, ServerError> {
        match request {
            Request::Status => Ok(Response::Status(Box::new(self.status()))),
            Request::SetDroppedPeers { peers } => {
                if self.config.enable_fault_injection {
                    self.transport.set_dropped(&peers);
                    Ok(Response::Done)
                } else {
                    Err(ServerError::FaultInjectionDisabled)
                }
            }
            Request::OpenSession { ttl_ms } => self.write(Op::OpenSession { ttl_ms }, origin).await,
            Request::KeepAlive { session } => self.write(Op::KeepAlive { session }, origin).await,
            Request::Write(write) => {
                write.command.validate()?;
                // The node a client writes a cache value through keeps a copy (M); a leader
                // serving a follower's forward does not: the follower keeps it.
                let written = match &write.command {
                    Command::CacheSet { key, value, .. } if origin != Origin::Forwarded => {
                        Some((key.clone(), value.clone()))
                    }
                    _ => None,
                };
                let result = self.write(Op::Write(write), origin).await;
                if let (Some((key, value)), Ok(Response::Written(CommandResponse::CacheSet { version }))) =
                    (written, &result)
                {
                    self.cache.keep_written(self, &key, value, *version);
                }
                result
            }
            Request::CacheGet { keys, consistency } => {
                self.cache.get(self, &keys, consistency).await.map(Response::CacheValues)
            }
            Request::CacheShow { key } => {
                distsync::wire::validate_key(&key)?;
                Ok(Response::CacheShow(Box::new(self.cache.show(self, &key))))
            }
            Request::CacheStats => Ok(Response::CacheStats(Box::new(self.cache.stats(self)))),
            Request::CacheReport(report) => {
                if origin == Origin::Client {
                    return Err(ServerError::InvalidArgument {
                        reason: "cache reports are sent between nodes only".into(),
                    });
                }
                self.write(Op::CacheReport(report), origin).await
            }
            Request::Read(query) => self.read(query, origin).await,
            Request::AwaitLock { name, owner, queued_revision, max_wait_ms } => {
                distsync::wire::validate_lock_name(&name)?;
                let outcome = self
                    .wait_for_session(owner.session, max_wait_ms, |machine| {
                        match machine.lock_await(&name, owner, queued_revision) {
                            LockAwaitOutcome::Pending => None,
                            decided => Some(decided),
                        }
                    })
                    .await;
                Ok(Response::LockAwait(outcome.unwrap_or(LockAwaitOutcome::Pending)))
            }
            Request::AwaitDelivery { queue, session, request, queued_revision, max_wait_ms } => {
                distsync::wire::validate_queue_name(&queue)?;
                let outcome = self
                    .wait_for_session(session, max_wait_ms, |machine| {
                        match machine.queue_await(&queue, session, request, queued_revision) {
                            QueueAwaitOutcome::Pending => None,
                            decided => Some(decided),
                        }
                    })
                    .await;
                Ok(Response::QueueAwait(outcome.unwrap_or(QueueAwaitOutcome::Pending)))
            }
            Request::WatchSession { session, max_wait_ms } => {
                let ended = self
                    .wait_for_session(session, max_wait_ms, |machine| (!machine.session_alive(session)).then_some(()))
                    .await;
                Ok(Response::SessionWatch { alive: ended.is_none() })
            }
        }
    }

    /// Waits until `check` finds an answer in this node's applied state, looking again whenever
    /// an applied entry touches `session`; gives up with `None` after `max_wait_ms` (capped at
    /// [`AWAIT_MS_MAX`]). Answers from the local state: a grant seen here is committed, so a
    /// follower pushes it as soon as it applies it, and a cut-off node never invents one.
    async fn wait_for_session<T>(
        &self,
        session: SessionId,
        max_wait_ms: u64,
        check: impl Fn(&StateMachine) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(max_wait_ms.min(AWAIT_MS_MAX));
        let signal = self.state.signals().subscribe(session);
        loop {
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(answer) = check(&self.state.applied().machine) {
                return Some(answer);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Proposes `op` if this node leads, else forwards it to the leader.
    async fn write(&self, op: Op, origin: Origin) -> Result<Response, ServerError> {
        let leader = self.metrics.borrow().current_leader;
        if leader.is_some_and(|leader| leader != self.config.id) {
            return match forwardable(op) {
                Some(request) => self.forward(request, leader, origin).await,
                None => Err(ServerError::NotLeader { leader: self.leader() }),
            };
        }
        self.last_proposal_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        if self.proposals.try_send(Proposal { op, reply }).is_err() {
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

    /// Serves a linearizable read: confirm leadership with a quorum (read index), wait until
    /// applied up to it, then read the local state.
    async fn read(&self, query: Query, origin: Origin) -> Result<Response, ServerError> {
        let leader = self.metrics.borrow().current_leader;
        if leader.is_some_and(|leader| leader != self.config.id) {
            return self.forward(Request::Read(query), leader, origin).await;
        }
        let write_timeout = self.config.write_timeout();
        match tokio::time::timeout(write_timeout, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(Response::Read(self.state.applied().machine.query(&query))),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to)))) => {
                self.forward(Request::Read(query), to.leader_id, origin).await
            }
            Ok(Err(error)) => Err(self.unconfirmed(Some(error))),
            Err(_) => Err(self.unconfirmed(None)),
        }
    }

    /// Why this node could not confirm its leadership; `None`: not within the write timeout.
    fn unconfirmed(&self, error: Option<RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>>) -> ServerError {
        let id = self.config.id;
        let reason = match error {
            Some(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {
                format!("node {id} lost its leadership during a read; retry")
            }
            Some(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(error))) => {
                format!("node {id} cannot reach a quorum: {error}")
            }
            Some(RaftError::Fatal(error)) => format!("node {id} is stopping: {error}"),
            None => format!("node {id} could not confirm its leadership within {:?}", self.config.write_timeout()),
        };
        ServerError::Unavailable { reason }
    }

    fn is_leader(&self) -> bool {
        self.metrics.borrow().current_leader == Some(self.config.id)
    }

    /// The read index without a round trip, while this leader's lease holds: a quorum accepted
    /// its AppendEntries sent less than half the shortest election timeout ago. openraft followers
    /// refuse to vote for anyone for a whole election timeout after accepting one, this node
    /// refuses votes while its lease holds, and a restarted node refuses them for an election
    /// timeout (see `handle_peer`); so no other leader can exist yet. It must also have applied an
    /// entry of its own term, which makes every write acknowledged by earlier leaders applied
    /// here; its own acknowledged writes are applied before they are acknowledged.
    fn lease_read_index(&self) -> Option<u64> {
        let term = {
            let metrics = self.metrics.borrow();
            if metrics.state != ServerState::Leader || metrics.current_leader != Some(self.config.id) {
                return None;
            }
            metrics.current_term
        };
        // Half the shortest election timeout: a follower whose ack counts here cannot start an
        // election before the shortest timeout after receiving it, nor can it get votes from
        // followers still under their lease; the other half is margin for clocks and scheduling.
        let lease = Duration::from_millis(self.config.election_timeout_min_ms / 2);
        let mut acks = self.transport.lease_acks(term);
        // The other members whose acks, with this node's own vote, make a majority.
        let needed = self.config.peers.0.len() / 2;
        if acks.len() < needed {
            return None;
        }
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let oldest_needed = if needed == 0 { Instant::now() } else { acks[needed - 1] };
        if oldest_needed.elapsed() >= lease {
            return None;
        }
        let applied = self.state.applied().last_applied?;
        (applied.leader_id.term == term).then_some(applied.index)
    }

    /// As leader, confirms that this node still leads (by its lease, or else with a quorum
    /// round); returns the read index: every write acknowledged before the call is at or below it.
    async fn confirm_leadership(&self) -> Result<u64, ServerError> {
        if let Some(index) = self.lease_read_index() {
            return Ok(index);
        }
        match tokio::time::timeout(self.config.write_timeout(), self.raft.get_read_log_id()).await {
            Ok(Ok((read_log_id, _))) => Ok(read_log_id.map_or(0, |log_id| log_id.index)),
            Ok(Err(error)) => Err(self.unconfirmed(Some(error))),
            Err(_) => Err(self.unconfirmed(None)),
        }
    }

    /// As follower, asks the leader for a read index.
    async fn ask_read_index(&self, leader: NodeId) -> Result<u64, ServerError> {
        let timeout = forward_timeout(self.config.write_timeout());
        match self.transport.call(leader, &PeerRequest::ReadIndex, timeout).await {
            Ok(PeerResponse::ReadIndex(Ok(index))) => Ok(index),
            Ok(PeerResponse::ReadIndex(Err(ServerError::NotLeader { .. }))) => {
                Err(ServerError::Unavailable { reason: format!("node {leader} is no longer the leader; retry") })
            }
            Ok(PeerResponse::ReadIndex(Err(error))) => Err(error),
            Ok(other) => {
                Err(ServerError::Internal { reason: format!("unexpected answer to a read index request: {other:?}") })
            }
            Err(error) => Err(ServerError::Unavailable {
                reason: format!("node {} cannot reach the leader {leader}: {error}", self.config.id),
            }),
        }
    }

    /// Relays a request to the leader and returns its answer.
    async fn forward(&self, request: Request, leader: Option<NodeId>, origin: Origin) -> Result<Response, ServerError> {
        let Some(leader) = leader.filter(|leader| *leader != self.config.id) else {
            return Err(ServerError::Unavailable { reason: "no leader is elected right now".into() });
        };
        if origin == Origin::Forwarded {
            return Err(ServerError::NotLeader { leader: self.leader() });
        }
        let timeout = forward_timeout(self.config.write_timeout());
        let request = PeerRequest::Forward(request);
        let mut metrics = self.metrics.clone();
        let leader_moved = async {
            while metrics.changed().await.is_ok() {
                if metrics.borrow().current_leader != Some(leader) {
                    return;
                }
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            result = self.transport.call(leader, &request, timeout) => match result {
                Ok(PeerResponse::Forward(reply)) => reply.body,
                Ok(other) => Err(ServerError::Internal { reason: format!("unexpected answer to a forward: {other:?}") }),
                Err(error) => Err(ServerError::Unavailable {
                    reason: format!("node {} cannot reach the leader: {error}", self.config.id),
                }),
            },
            // The leader changed while we waited (it may have died): send the request where it
            // belongs now instead of waiting for a dead node. Re-sending is safe because writes
            // are deduplicated by session and sequence number, and reads have no effect.
            () = leader_moved, if origin == Origin::Client => {
                let PeerRequest::Forward(request) = request else { unreachable!("built above") };
                Box::pin(self.dispatch(request, Origin::Rerouted)).await
            }
        }
    }

    /// Handles one request from an authenticated peer; `None` means "stay silent".
    async fn handle_peer(&self, from: NodeId, request: PeerRequest) -> Option<PeerResponse> {
        if self.transport.is_dropped(from) {
            return None;
        }
        self.transport.heard_from(from);
        Some(match request {
            PeerRequest::AppendEntries(request) => PeerResponse::AppendEntries(self.raft.append_entries(request).await),
            PeerRequest::Vote(request) => {
                // Keep the lease promise (see `lease_read_index`): no vote while this node leads
                // under a lease, nor in a fresh process, which has forgotten when it last heard
                // from a leader. A candidate sees a lost packet and tries again later.
                let fresh = self.started.elapsed() < Duration::from_millis(self.config.election_timeout_max_ms);
                if fresh || self.lease_read_index().is_some() {
                    return None;
                }
                PeerResponse::Vote(self.raft.vote(request).await)
            }
            PeerRequest::InstallSnapshot(request) => {
                PeerResponse::InstallSnapshot(self.raft.install_snapshot(request).await)
            }
            PeerRequest::Forward(request) => PeerResponse::Forward(self.handle(request, Origin::Forwarded).await),
            PeerRequest::ReadIndex => PeerResponse::ReadIndex(if self.is_leader() {
                self.cache.leader_rounds.join(|| self.confirm_leadership()).await
            } else {
                Err(ServerError::NotLeader { leader: self.leader() })
            }),
        })
    }

    /// This node's cache counters and contents, for the admin port's `/metrics`.
    pub fn cache_stats(&self) -> distsync::wire::CacheNodeStats {
        self.cache.stats(self)
    }

    /// This node's own view, for `distsync status` and the admin port's `/status`.
    pub fn status(&self) -> NodeStatus {
        self.status_with(true)
    }

    /// The same without the state digest (left 0): serializing the whole state under the state
    /// machine's read lock would hold up applying entries on every metrics scrape.
    pub fn status_without_digest(&self) -> NodeStatus {
        self.status_with(false)
    }

    fn status_with(&self, digest: bool) -> NodeStatus {
        let metrics = self.metrics.borrow().clone();
        let role = match metrics.state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        };
        let (applied, digest, sessions, keys, locks, queues) = {
            let applied = self.state.applied();
            (
                applied.last_applied.map(|l| l.index).unwrap_or(0),
                if digest { applied.machine.digest() } else { 0 },
                applied.machine.session_count() as u64,
                applied.machine.key_count() as u64,
                applied.machine.lock_count() as u64,
                applied.machine.queue_count() as u64,
            )
        };
        let heard = self.transport.last_heard();
        let peers = self
            .config
            .peers
            .0
            .iter()
            .filter(|(id, _)| **id != self.config.id)
            .map(|(id, address)| PeerStatus {
                id: *id,
                address: address.clone(),
                last_heard_ms: heard.get(id).map(|d| d.as_millis() as u64),
            })
            .collect();
        NodeStatus {
            id: self.config.id,
            address: self.config.advertised_address().to_string(),
            role,
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_log_index: metrics.last_log_index.unwrap_or(0).max(self.log.last_index()),
            committed: self.log.committed_index().max(applied),
            applied,
            snapshot: metrics.snapshot.map(|s| s.index).unwrap_or(0),
            state_digest: digest,
            sessions,
            keys,
            locks,
            queues,
            peers,
        }
    }
}

impl CacheHost for Node {
    async fn read_index(&self) -> Result<u64, ServerError> {
        let leader = self.metrics.borrow().current_leader;
        match leader {
            Some(leader) if leader == self.config.id => {
                self.cache.leader_rounds.join(|| self.confirm_leadership()).await
            }
            Some(leader) => self.cache.follower_rounds.join(|| self.ask_read_index(leader)).await,
            None => Err(ServerError::Unavailable { reason: "no leader is elected right now".into() }),
        }
    }

    async fn wait_applied(&self, index: u64) -> Result<(), ServerError> {
        let timeout = self.config.write_timeout();
        if self.state.wait_applied(index, timeout).await {
            Ok(())
        } else {
            Err(ServerError::Unavailable {
                reason: format!(
                    "node {} did not apply up to the read index {index} within {timeout:?}",
                    self.config.id
                ),
            })
        }
    }

    fn propose(&self, op: Op) -> std::pin::Pin<Box<dyn Future<Output = Result<(), ServerError>> + Send + '_>> {
        Box::pin(async move { self.write(op, Origin::Client).await.map(|_| ()) })
    }

    fn applied(&self) -> std::sync::RwLockReadGuard<'_, crate::storage::state_machine_store::Applied> {
        self.state.applied()
    }

    fn is_leader(&self) -> bool {
        Node::is_leader(self)
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

/// The client request that proposes `op`, for forwarding; ticks are a leader's own business and
/// are never forwarded.
fn forwardable(op: Op) -> Option<Request> {
    match op {
        Op::OpenSession { ttl_ms } => Some(Request::OpenSession { ttl_ms }),
        Op::KeepAlive { session } => Some(Request::KeepAlive { session }),
        Op::Write(write) => Some(Request::Write(write)),
        Op::CacheReport(report) => Some(Request::CacheReport(report)),
        Op::Tick | Op::CacheWrittenBack { .. } => None,
    }
}

/// Turns queued writes into log entries: takes every write waiting (up to the batch limits) as one
/// entry, with at most [`BATCHES_IN_FLIGHT_MAX`] entries awaiting commit. A batch that does not
/// commit within the write timeout (a leader cut off from the majority) stops counting as in
/// flight: its entry stays in the log, uncommitted, and later writes are still appended.
async fn propose_loop(node: Arc<Node>, mut queue: mpsc::Receiver<Proposal>, mut stopped: watch::Receiver<bool>) {
    let grace_ms = node.config.lease_grace_ms();
    let id = node.config.id;
    let write_timeout = node.config.write_timeout();
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT_MAX));
    loop {
        let permit = in_flight.clone().acquire_owned().await.expect("the semaphore is never closed");
        let first = tokio::select! {
            proposal = queue.recv() => match proposal {
                Some(proposal) => proposal,
                None => return,
            },
            _ = stopped.changed() => return,
        };
        let mut bytes = first.op.approximate_bytes();
        let mut batch = vec![first];
        while batch.len() < BATCH_OPS_MAX && bytes < BATCH_BYTES_MAX {
            match queue.try_recv() {
                Ok(proposal) => {
                    bytes += proposal.op.approximate_bytes();
                    batch.push(proposal);
                }
                Err(_) => break,
            }
        }
        let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|p| (p.op, p.reply)).unzip();
        let command = LogCommand { time_ms: now_ms(), grace_ms, ops };
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
                    assert_eq!(response.data.len(), replies.len(), "one result per batched operation");
                    for (reply, result) in replies.into_iter().zip(response.data) {
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
async fn tick_loop(node: Arc<Node>, mut stopped: watch::Receiver<bool>) {
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
        let deadline_passed =
            || node.state.applied().machine.next_deadline_ms().is_some_and(|deadline_ms| now_ms() > deadline_ms);
        if is_leader && (idle_ms >= node.config.tick_ms || deadline_passed()) {
            if let Err(error) = node.write(Op::Tick, Origin::Forwarded).await {
                tracing::debug!(%error, "tick not committed");
            }
        }
    }
}

async fn accept_loop(node: Arc<Node>, endpoint: quinn::Endpoint, mut stopped: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = stopped.changed() => return,
        };
        let Some(incoming) = incoming else { return };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(remote = %incoming.remote_address(), "refusing a connection: {CONNECTIONS_MAX} are open");
            incoming.refuse();
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(connection) => serve_connection(node, connection).await,
                // A stranger's certificate ends here: rustls refused it during the handshake.
                Err(error) => tracing::info!(%remote, %error, "handshake failed"),
            }
            drop(permit);
        });
    }
}

async fn serve_connection(node: Arc<Node>, connection: quinn::Connection) {
    let remote = connection.remote_address();
    let peer = if negotiated_protocol(&connection).as_deref() == Some(ALPN_PEER) {
        match peer_identity(&connection, &node.config.peers.0) {
            Some(id) => Some(id),
            None => {
                tracing::warn!(%remote, "refusing a peer connection whose certificate does not name a cluster member");
                connection.close(CLOSE_NOT_A_MEMBER.into(), b"not a cluster member certificate");
                return;
            }
        }
    } else {
        None
    };
    loop {
        let (send, recv) = match connection.accept_bi().await {
            Ok(streams) => streams,
            Err(error) => {
                tracing::debug!(%remote, %error, "connection ended");
                return;
            }
        };
        let node = node.clone();
        tokio::spawn(async move {
            match peer {
                Some(from) => serve_peer_stream(node, from, send, recv).await,
                None => serve_client_stream(node, send, recv).await,
            }
        });
    }
}

async fn serve_client_stream(node: Arc<Node>, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let reply = match read_frame(&mut recv, FRAME_BYTES_MAX).await {
        Ok(body) => match decode_body::<Request>(&body) {
            Ok(request) => {
                // A client that gives up on an attempt drops its stream, which stops ours: stop
                // working on a request nobody waits for (a forward, a reroute). A write already
                // proposed still commits; the client's retry under the same seq finds its answer.
                let abandoned = send.stopped();
                tokio::select! {
                    reply = node.handle(request, Origin::Client) => reply,
                    _ = abandoned => {
                        tracing::debug!("client abandoned a request");
                        return;
                    }
                }
            }
            Err(error) => node.reply(Err(error.into())),
        },
        Err(error @ FrameError::TooLarge { .. }) => {
            // Refuse the rest of the body unread.
            let _ = recv.stop(0u32.into());
            node.reply(Err(error.into()))
        }
        Err(error) => {
            tracing::debug!(%error, "client stream ended before a whole frame");
            return;
        }
    };
    match encode_frame(&reply) {
        Ok(frame) => {
            let _ = write_frame(&mut send, &frame).await;
        }
        Err(error) => tracing::error!(%error, "cannot encode a reply"),
    }
}

async fn serve_peer_stream(node: Arc<Node>, from: NodeId, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let request = match read_frame(&mut recv, FRAME_BYTES_MAX).await.and_then(|body| decode_body(&body)) {
        Ok(request) => request,
        Err(error) => {
            tracing::warn!(peer = from, %error, "bad frame from a peer");
            return;
        }
    };
    let Some(response) = node.handle_peer(from, request).await else {
        // Simulated partition: stay silent as a dropped packet would, until the sender gives up.
        tokio::time::sleep(Duration::from_secs(10)).await;
        return;
    };
    match encode_frame(&response) {
        Ok(frame) => {
            let _ = write_frame(&mut send, &frame).await;
        }
        Err(error) => tracing::error!(peer = from, %error, "cannot encode a peer response"),
    }
}
