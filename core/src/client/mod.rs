//! The async client: leader discovery, redirects, retries with backoff under a deadline, and the
//! session that makes retried writes exactly-once.
//!
//! ## Layout
//!
//! - this file: [`Client`], what it holds, and the way in to every primitive;
//! - `options.rs`: [`ClientOptions`];
//! - `rpc.rs`: the one request path, `Client::call`, which every request takes;
//! - `retry.rs`: the retry policy as plain functions (what to do after a failed attempt, how
//!   long to pause), tested without sockets;
//! - `session.rs`: the session, its keepalive and watch, and exactly-once writes.
//!
//! Each primitive keeps its own client-side state ([`crate::lock`]'s holds, [`crate::queue`]'s
//! put batchers, [`crate::cache`]'s get batchers), which the client stores without looking
//! inside.

mod options;
mod retry;
mod rpc;
mod session;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use self::options::ClientOptions;
pub(crate) use self::retry::Route;
pub(crate) use self::rpc::CallOptions;
use self::session::Session;
use crate::cache::{Cache, CacheState};
use crate::error::ClientError;
pub use crate::kv::Kv;
use crate::lock::{LockBuilder, LockState, OwnerHandle};
use crate::pool::ConnectionPool;
use crate::queue::{Queue, QueueError, QueueState};
use crate::tls::ClientTls;
use crate::wire::{
    CacheKeyView, CacheNodeStats, LockInfo, NodeId, NodeStatus, QueueStats, Request, Response, SessionId,
    SESSION_TTL_MAX, SESSION_TTL_MIN,
};

#[allow(unused_imports)] // for intra-doc links
use crate::error::ServerError;

/// A connection to a distsync cluster. Cheap to clone; clones share connections and the session.
///
/// The client keeps one QUIC connection per node, finds the leader by following the hints every
/// reply carries, and retries failed attempts with backoff until the call's deadline. Writes carry
/// the session and a sequence number, so a write retried after a failover is applied once.
///
/// ```no_run
/// # async fn example() -> Result<(), distsync::ClientError> {
/// use distsync::{Client, ClientTls};
///
/// let client = Client::connect(["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"],
///                              ClientTls::from_ca_file("tls/ca.pem")?).await?;
/// client.kv().put("greeting", "hello").await?;
/// assert_eq!(client.kv().get("greeting").await?, Some(b"hello".to_vec()));
/// client.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: quinn::Endpoint,
    addresses: Vec<SocketAddr>,
    options: ClientOptions,
    leader: Mutex<Option<SocketAddr>>,
    /// Index in `addresses` of the node cache requests go to.
    home: AtomicUsize,
    connections: ConnectionPool<SocketAddr, rpc::Trouble>,
    jitter: AtomicU64,
    session: Session,
    locks: LockState,
    queues: QueueState,
    cache: CacheState,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"client dropped");
    }
}

impl Client {
    /// Connects to a cluster with default [`ClientOptions`]. Any subset of the nodes will do; the
    /// client finds the leader itself.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] for unusable endpoints or TLS settings, [`ClientError::Unavailable`]
    /// when no node answers within the request timeout.
    pub async fn connect<I, S>(endpoints: I, tls: ClientTls) -> Result<Client, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::connect_with(ClientOptions::new(endpoints, tls)).await
    }

    /// Connects with explicit options; see [`Client::connect`].
    ///
    /// # Errors
    ///
    /// As [`Client::connect`].
    pub async fn connect_with(options: ClientOptions) -> Result<Client, ClientError> {
        let client = Self::new_unconnected(options)?;
        client.ping().await?;
        Ok(client)
    }

    /// Waits until some node answers a status request: one node answering proves the addresses
    /// and certificates (the leader is found on first use). [`Client::connect`] does this; a
    /// client made by [`Client::new_unconnected`] can do it later.
    ///
    /// # Errors
    ///
    /// [`ClientError::Unavailable`] when no node answers within the request timeout (wrong
    /// addresses, a CA that did not sign the nodes' certificates, every node down).
    pub async fn ping(&self) -> Result<(), ClientError> {
        self.call(&Request::Status, CallOptions::default()).await?;
        Ok(())
    }

    /// Builds a client without contacting any node (used for per-node status, which must work
    /// when most of the cluster is down).
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] for unusable endpoints or TLS settings.
    pub fn new_unconnected(options: ClientOptions) -> Result<Client, ClientError> {
        if options.endpoints.is_empty() {
            return Err(ClientError::Config { reason: "no endpoints given; pass at least one node address".into() });
        }
        if options.session_ttl < SESSION_TTL_MIN || options.session_ttl > SESSION_TTL_MAX {
            return Err(ClientError::Config {
                reason: format!(
                    "session TTL {:?} is outside {:?}..={:?}",
                    options.session_ttl, SESSION_TTL_MIN, SESSION_TTL_MAX
                ),
            });
        }
        let addresses = options.endpoints.iter().map(|e| parse_address(e)).collect::<Result<Vec<_>, ClientError>>()?;
        let bind: SocketAddr = if addresses.iter().all(SocketAddr::is_ipv4) {
            "0.0.0.0:0".parse().expect("literal address")
        } else {
            "[::]:0".parse().expect("literal address")
        };
        let socket = std::net::UdpSocket::bind(bind)
            .map_err(|e| ClientError::Config { reason: format!("cannot open a UDP socket: {e}") })?;
        let runtime = Arc::new(quinn::TokioRuntime);
        let mut endpoint = quinn::Endpoint::new(crate::quic::client_endpoint_config()?, None, socket, runtime)
            .map_err(|e| ClientError::Config { reason: format!("cannot open a QUIC endpoint: {e}") })?;
        endpoint.set_default_client_config(options.tls.quinn_config()?);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            | 1;
        let home = match &options.home {
            Some(endpoint) => {
                let address = parse_address(endpoint)?;
                addresses.iter().position(|a| *a == address).ok_or_else(|| ClientError::Config {
                    reason: format!("home node {endpoint} is not among the endpoints; list it there too"),
                })?
            }
            None => (seed >> 7) as usize % addresses.len(),
        };
        let cache = CacheState::new(addresses.len());
        Ok(Client {
            inner: Arc::new(Inner {
                endpoint,
                addresses,
                options,
                leader: Mutex::new(None),
                home: AtomicUsize::new(home),
                connections: ConnectionPool::default(),
                jitter: AtomicU64::new(seed),
                session: Session::default(),
                locks: LockState::default(),
                queues: QueueState::default(),
                cache,
            }),
        })
    }

    /// Grants and identities (admin only). See [`crate::access`].
    pub fn access(&self) -> crate::access::Access {
        crate::access::Access::new(self.clone())
    }

    /// The replicated key-value register.
    pub fn kv(&self) -> Kv {
        Kv::new(self.clone())
    }

    /// Distributed locks: `client.lock("name").acquire().await`. See [`crate::lock`].
    pub fn lock(&self, name: impl Into<String>) -> LockBuilder {
        LockBuilder::new(self.clone(), name.into())
    }

    /// A new owner identity for locks, distinct from every task, thread and other handle of this
    /// client. Pass it to [`LockBuilder::owner`] so that locks taken from different tasks belong
    /// to one logical actor (they are then nested, not mutually exclusive).
    pub fn owner(&self) -> OwnerHandle {
        OwnerHandle::new()
    }

    /// Every lock held or awaited, with holders and waiters, read linearizably.
    ///
    /// # Errors
    ///
    /// [`ClientError::Unavailable`] when the cluster cannot answer in time.
    pub async fn lock_list(&self) -> Result<Vec<LockInfo>, ClientError> {
        crate::lock::list(self).await
    }

    /// One lock's holders and waiters (in the order they are served), or `None` when nobody
    /// holds or awaits it.
    ///
    /// # Errors
    ///
    /// [`ClientError::Unavailable`], [`ClientError::InvalidArgument`] for a bad name.
    pub async fn lock_show(&self, name: &str) -> Result<Option<LockInfo>, ClientError> {
        crate::lock::show(self, name).await
    }

    /// A durable FIFO queue; see [`crate::queue`]. Nothing is sent until it is used.
    pub fn queue(&self, name: impl Into<String>) -> Queue {
        Queue::new(self.clone(), name.into())
    }

    /// Every queue (dead-letter queues included) with its counters, read linearizably.
    ///
    /// # Errors
    ///
    /// [`QueueError::Unavailable`] when the cluster cannot answer in time.
    pub async fn queue_list(&self) -> Result<Vec<QueueStats>, QueueError> {
        crate::queue::list(self).await
    }

    /// The coherent cache, with linearizable reads.
    pub fn cache(&self) -> Cache {
        Cache::new(self.clone())
    }

    /// The current session, if one is open.
    pub fn session_id(&self) -> Option<SessionId> {
        self.current_session()
    }

    /// Closes the session (releasing anything it holds at once rather than at its TTL) and the
    /// connections. Calls made afterwards open a new session.
    pub async fn close(&self) {
        self.close_session().await;
    }

    /// Asks one node (not the leader) for its own view of the cluster.
    ///
    /// # Errors
    ///
    /// [`ClientError::Unavailable`] when the node does not answer in time.
    pub async fn node_status(&self, endpoint: &str) -> Result<NodeStatus, ClientError> {
        self.ask_status(endpoint, &Request::Status).await
    }

    /// [`Client::node_status`] with a digest of the node's replicated state
    /// ([`NodeStatus::state_digest`]), to compare replicas (`distsync status --digest`). The
    /// node may answer a digest computed up to
    /// [`STATUS_DIGEST_INTERVAL`](crate::wire::STATUS_DIGEST_INTERVAL) ago, at the applied index
    /// it names.
    ///
    /// # Errors
    ///
    /// [`ClientError::Unavailable`] when the node does not answer in time.
    pub async fn node_status_with_digest(&self, endpoint: &str) -> Result<NodeStatus, ClientError> {
        self.ask_status(endpoint, &Request::StatusDigest).await
    }

    async fn ask_status(&self, endpoint: &str, request: &Request) -> Result<NodeStatus, ClientError> {
        let address = parse_address(endpoint)?;
        match self.ask_node(address, request).await? {
            Response::Status(status) => Ok(*status),
            other => Err(unexpected(&other)),
        }
    }

    /// One node's view of a cache key: the directory entry and the node's own copy with its
    /// MESI state (`distsync cache show`).
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidArgument`] for a bad key; [`ClientError::Unavailable`] when the
    /// node does not answer in time.
    pub async fn cache_show_on(&self, endpoint: &str, key: impl AsRef<[u8]>) -> Result<CacheKeyView, ClientError> {
        let address = parse_address(endpoint)?;
        match self.ask_node(address, &Request::CacheShow { key: key.as_ref().to_vec() }).await? {
            Response::CacheShow(view) => Ok(*view),
            other => Err(unexpected(&other)),
        }
    }

    /// One node's cache counters and contents (`distsync cache stats`).
    ///
    /// # Errors
    ///
    /// [`ClientError::Unavailable`] when the node does not answer in time.
    pub async fn cache_stats_on(&self, endpoint: &str) -> Result<CacheNodeStats, ClientError> {
        let address = parse_address(endpoint)?;
        match self.ask_node(address, &Request::CacheStats).await? {
            Response::CacheStats(stats) => Ok(*stats),
            other => Err(unexpected(&other)),
        }
    }

    /// Test-only fault injection: makes one node silently drop Raft traffic to and from `peers`
    /// (an empty list heals). Refused by nodes not started with `--enable-fault-injection`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Server`] with [`ServerError::FaultInjectionDisabled`], or
    /// [`ClientError::Unavailable`] when the node does not answer.
    pub async fn set_dropped_peers(&self, endpoint: &str, peers: &[NodeId]) -> Result<(), ClientError> {
        let address = parse_address(endpoint)?;
        match self.ask_node(address, &Request::SetDroppedPeers { peers: peers.to_vec() }).await? {
            Response::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Test-only fault injection: makes one node read its wall clock `offset_ms` off (as if it
    /// had jumped; 0 restores it). Refused by nodes not started with `--enable-fault-injection`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Server`] with [`ServerError::FaultInjectionDisabled`], or
    /// [`ClientError::Unavailable`] when the node does not answer.
    pub async fn set_clock_offset(&self, endpoint: &str, offset_ms: i64) -> Result<(), ClientError> {
        let address = parse_address(endpoint)?;
        match self.ask_node(address, &Request::SetClockOffset { offset_ms }).await? {
            Response::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Test-only fault injection: makes one node hold every request to a peer `delay_ms` (up to
    /// half again as long, at random) before sending it; 0 removes the delay. Refused by nodes
    /// not started with `--enable-fault-injection`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Server`] with [`ServerError::FaultInjectionDisabled`], or
    /// [`ClientError::Unavailable`] when the node does not answer.
    pub async fn set_peer_delay(&self, endpoint: &str, delay_ms: u32) -> Result<(), ClientError> {
        let address = parse_address(endpoint)?;
        match self.ask_node(address, &Request::SetPeerDelay { delay_ms }).await? {
            Response::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// The attempt timeout of this client's options.
    pub(crate) fn attempt_timeout(&self) -> Duration {
        self.inner.options.attempt_timeout
    }

    /// The request timeout of this client's options.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.options.request_timeout
    }

    /// How many endpoints this client knows.
    pub(crate) fn endpoint_count(&self) -> usize {
        self.inner.addresses.len()
    }

    /// Whether cache requests go to one home node ([`ClientOptions::home`]).
    pub(crate) fn has_home(&self) -> bool {
        self.inner.options.home.is_some()
    }

    /// What this client remembers of its locks.
    pub(crate) fn lock_state(&self) -> &LockState {
        &self.inner.locks
    }

    /// This client's queue put batchers.
    pub(crate) fn queue_state(&self) -> &QueueState {
        &self.inner.queues
    }

    /// This client's cache get batchers.
    pub(crate) fn cache_state(&self) -> &CacheState {
        &self.inner.cache
    }
}

/// The error for an answer that does not fit the request: versions differ, or a bug.
pub(crate) fn unexpected(response: &Response) -> ClientError {
    ClientError::Protocol { reason: format!("unexpected response {response:?}") }
}

/// Parses `host:port`, resolving names synchronously (done once per client).
fn parse_address(endpoint: &str) -> Result<SocketAddr, ClientError> {
    use std::net::ToSocketAddrs;
    endpoint
        .to_socket_addrs()
        .map_err(|e| ClientError::Config { reason: format!("bad endpoint {endpoint:?}: {e}; expected host:port") })?
        .next()
        .ok_or_else(|| ClientError::Config { reason: format!("endpoint {endpoint:?} resolves to no address") })
}
