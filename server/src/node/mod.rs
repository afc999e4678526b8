//! A node: assembly of storage, Raft, the QUIC endpoint and the cache, and the handling of
//! client and peer requests. [`run`] takes its configuration and a shutdown signal, so tests and
//! the CLI drive it the same way.
//!
//! One client request's path: `listener.rs` reads the frame, `dispatch.rs` routes it by kind;
//! a write goes to `proposer.rs`, which batches it into a log entry (or `forward.rs` relays it
//! to the leader); openraft replicates and commits the entry, the state machine applies it
//! (`crate::state`), and the result travels back the same way. Reads take a read index in
//! `reads.rs`; requests held open until the applied state answers them are in `waits.rs`;
//! `peers.rs` serves the other members; `status.rs` is the node's own view.

mod admission;
mod batch;
mod clock;
mod compaction;
mod dispatch;
mod forward;
mod listener;
mod peers;
mod proposer;
mod reads;
mod status;
mod waits;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use distsync::wire::{LeaderInfo, Reply, Response};
use distsync::{NodeId, ServerError};
use openraft::error::{Fatal, InitializeError, RaftError};
use openraft::{BasicNode, RaftMetrics, StorageError};
use tokio::sync::{mpsc, watch};

pub use self::admission::{CONNECTIONS_MAX, PEER_CONNECTIONS_MAX};
pub use self::batch::{BATCH_BYTES_MAX, BATCH_OPS_MAX, ENTRY_BYTES_MAX, OP_BYTES_MAX};
use self::proposer::Proposal;
pub use self::proposer::{BATCHES_IN_FLIGHT_MAX, PROPOSAL_QUEUE_MAX};
use crate::cache::backing::RedisStore;
use crate::cache::near_cache::{NearCache, NearCacheLimits};
use crate::cache::CacheService;
use crate::config::ServerConfig;
use crate::raft::{LeaderLease, NetworkFactory, Raft, ReadIndexRounds};
use crate::storage::log_store::{LogStore, LogStoreLimits};
use crate::storage::replay;
use crate::storage::state_machine_store::StateMachineStore;
use crate::transport::{reset_key, NodeTls, PeerTransport};

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
    /// The time this node stamps on entries while it leads.
    clock: std::sync::Mutex<clock::LeaderClock>,
    /// Fault injection: how far this node's wall clock is moved, in ms.
    clock_offset_ms: std::sync::atomic::AtomicI64,
    /// The cache: reads, the writer's copies, write-back, reports.
    cache: CacheService,
    /// When this node, as leader, may answer a read index without a quorum round.
    lease: LeaderLease,
    /// Read-index confirmations this node runs as leader, shared by concurrent reads.
    confirmations: ReadIndexRounds,
    /// Read indexes this node asks of the leader as follower, shared by concurrent reads.
    leader_reads: ReadIndexRounds,
    /// The state digest computed last, for `status --digest`.
    last_digest: status::LastDigest,
    /// What clients and peers may hold of this node.
    admission: admission::Admission,
    /// Where client requests run, apart from Raft and QUIC.
    client_runtime: admission::ClientRuntime,
}

/// The socket addresses of the other members (their configured addresses, resolved), from which
/// their connections come: peers dial from the endpoint they listen on.
fn peer_addresses(config: &ServerConfig) -> Vec<std::net::SocketAddr> {
    use std::net::ToSocketAddrs as _;
    config
        .peers
        .0
        .iter()
        .filter(|(id, _)| **id != config.id)
        .flat_map(|(_, address)| address.to_socket_addrs().map(Iterator::collect::<Vec<_>>).unwrap_or_default())
        .collect()
}

/// Why a node refuses its own data at start, and what the operator can do about it.
fn unusable_data(config: &ServerConfig, what: &str, error: anyhow::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "node {} cannot use its {what} in {}: {error:#}. The node refuses to serve from damaged data. If the other \
         nodes are healthy (`distsync status`), move this node's data directory aside (keep it for analysis) and \
         start the node again with an empty one: it copies the state from the leader. See \
         docs/deployment_guide.md, \"Corrupt files\".",
        config.id,
        config.data_dir.display()
    )
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
    let limits = LogStoreLimits { tail_bytes: config.log_cache_bytes, ..LogStoreLimits::default() };
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
                 for development only; writes are refused once --max-cache-pending-bytes of values are held)"
            );
            None
        }
    };
    let mut state = StateMachineStore::open(&config.data_dir.join("snapshots"), near_cache.clone())
        .map_err(|error| unusable_data(&config, "snapshot", error))?;
    // The log deletes no entry that the durable snapshot does not cover yet.
    let log_path = config.data_dir.join("raft.redb");
    let skip_fsync = config.enable_fault_injection && config.inject_bug == Some(crate::config::InjectedBug::SkipFsync);
    let log = if skip_fsync {
        LogStore::open_without_fsync(&log_path, limits, state.purge_floor())
    } else {
        LogStore::open_with_floor(&log_path, limits, state.purge_floor())
    }
    .map_err(|error| unusable_data(&config, "Raft log", error))?;
    let replayed = replay::apply_committed(&mut log.clone(), &mut state)
        .await
        .map_err(|error| unusable_data(&config, "Raft log", error))?;
    if replayed.entries > 0 {
        tracing::info!(entries = replayed.entries, applied = replayed.applied, "re-applied the committed log");
    }
    let socket = std::net::UdpSocket::bind(config.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let runtime = quinn::default_runtime().ok_or_else(|| anyhow::anyhow!("no async runtime for QUIC"))?;
    let mut endpoint =
        quinn::Endpoint::new(reset_key::endpoint_config(&config.data_dir)?, Some(tls.server), socket, runtime)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    endpoint.set_default_client_config(tls.peer_client);
    let members = config.peers.0.clone();
    let transport = Arc::new(PeerTransport::new(config.id, endpoint.clone(), members.clone()));
    let raft = Raft::new(
        config.id,
        Arc::new(config.raft_config()?),
        NetworkFactory::new(transport.clone(), Duration::from_millis(config.heartbeat_ms)),
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
    let lease = LeaderLease::new(Duration::from_millis(config.election_timeout_min_ms), config.peers.0.len());
    let id = config.id;
    let admission = admission::Admission::new(config.inflight_request_bytes, peer_addresses(&config));
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
        clock: std::sync::Mutex::default(),
        clock_offset_ms: std::sync::atomic::AtomicI64::new(0),
        cache: CacheService::new(id, near_cache, redis),
        lease,
        confirmations: ReadIndexRounds::default(),
        leader_reads: ReadIndexRounds::default(),
        last_digest: status::LastDigest::default(),
        admission,
        client_runtime: admission::ClientRuntime::start()?,
    });
    tracing::info!(id = node.config.id, listen = %node.config.listen, "node serving");

    let (stop, stopped) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(listener::accept_loop(node.clone(), endpoint.clone(), stopped.clone()));
    tasks.spawn(proposer::tick_loop(node.clone(), stopped.clone()));
    tasks.spawn(proposer::propose_loop(node.clone(), proposal_queue, stopped.clone()));
    tasks.spawn(compaction::snapshot_by_bytes_loop(node.clone(), stopped.clone()));
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

    // The node runs until it is asked to stop, or until Raft stops by itself: a failed log write
    // (a full or broken disk) makes openraft stop for good, and a process that lingered on would
    // serve nothing useful while its supervisor thought it alive. It exits instead, non-zero, so
    // that the supervisor restarts it once the disk is fixed.
    let mut metrics = node.metrics.clone();
    let raft_stopped = async move {
        loop {
            if let Err(fatal) = &metrics.borrow_and_update().running_state {
                return Some(fatal.clone());
            }
            if metrics.changed().await.is_err() {
                return None;
            }
        }
    };
    let outcome = tokio::select! {
        () = shutdown => Ok(()),
        fatal = raft_stopped => Err(anyhow::anyhow!(
            "node {} stopped: {}",
            node.config.id,
            why_raft_stopped(fatal.as_ref(), &node.config.data_dir)
        )),
    };
    match &outcome {
        Ok(()) => tracing::info!(id = node.config.id, "shutting down"),
        Err(error) => tracing::error!(id = node.config.id, "{error:#}"),
    }
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    if let Err(error) = node.raft.shutdown().await {
        tracing::warn!(%error, "raft did not stop cleanly");
    }
    endpoint.close(0u32.into(), b"node shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    outcome
}

/// What a Raft core that stopped by itself means to the operator. Only a failed read or write of
/// the log, vote or snapshots is the disk's fault; anything else is a bug.
fn why_raft_stopped(fatal: Option<&Fatal<NodeId>>, data_dir: &std::path::Path) -> String {
    match fatal {
        Some(fatal @ Fatal::StorageError(StorageError::IO { .. })) => format!(
            "{fatal}; a failed read or write of its log (a full or failing disk under {}) stops it for \
             good: fix the disk, then start the node again (it recovers from its log and peers)",
            data_dir.display()
        ),
        Some(fatal) => format!(
            "Raft stopped: {fatal}; this is a bug, not the disk: start the node again (it recovers from its \
             log and peers) and report this log"
        ),
        None => "the Raft core ended without saying why; start the node again (it recovers from its log \
                 and peers) and report this log"
            .to_string(),
    }
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
            crate::storage::durable::write_atomically(&marker, format!("{}\n", config.id).as_bytes())
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", marker.display()))?;
        }
        Err(error) => return Err(error.into()),
    }
    Ok(())
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
}
