//! The async client: leader discovery, redirects, retries with backoff under a deadline, and the
//! session that makes retried writes exactly-once.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::error::{ClientError, ServerError};
use crate::pool::{exchange, ConnectionPool};
use crate::tls::{ClientTls, SERVER_NAME};
use crate::wire::{
    encode_frame, CacheKeyView, CacheNodeStats, Command, CommandResponse, LeaderInfo, NodeId, NodeStatus, Query,
    QueryResponse, Reply, Request, Response, SessionId, WriteRequest, SESSION_TTL_MAX, SESSION_TTL_MIN,
};

/// How a [`Client`] behaves; every field has a sensible default.
///
/// ```no_run
/// # async fn example() -> Result<(), distsync::ClientError> {
/// use std::time::Duration;
/// use distsync::{Client, ClientOptions, ClientTls};
///
/// let options = ClientOptions::new(["127.0.0.1:7101", "127.0.0.1:7102"], ClientTls::from_ca_file("tls/ca.pem")?)
///     .session_ttl(Duration::from_secs(5))
///     .request_timeout(Duration::from_secs(3));
/// let client = Client::connect_with(options).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientOptions {
    endpoints: Vec<String>,
    tls: ClientTls,
    session_ttl: Duration,
    request_timeout: Duration,
    attempt_timeout: Duration,
    home: Option<String>,
}

impl ClientOptions {
    /// Options for these endpoints (`host:port` of any nodes of the cluster) and TLS settings.
    pub fn new<I, S>(endpoints: I, tls: ClientTls) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            endpoints: endpoints.into_iter().map(|e| e.as_ref().to_string()).collect(),
            tls,
            session_ttl: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(3),
            home: None,
        }
    }

    /// The node this client sends all cache requests to, one of the endpoints. Each node keeps
    /// its own cache, so a client that stays with one node finds its copies there (including
    /// those of values it wrote). Default: none; each key's requests go to the endpoint its hash
    /// picks, so every node caches its share of the keys and the nodes' caches add up instead of
    /// holding the same hot keys three times. Either way, when the chosen node fails, the
    /// client moves on to the next endpoint.
    pub fn home(mut self, endpoint: impl AsRef<str>) -> Self {
        self.home = Some(endpoint.as_ref().to_string());
        self
    }

    /// How long the cluster keeps this client's session (and later its locks) after the client
    /// falls silent. Default 10 s; between 1 s and 1 h.
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// The deadline of one call, across all its retries and redirects. Default 10 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long one attempt against one node may take before the client tries elsewhere.
    /// Default 3 s, longer than a node's own commit timeout (2 s) so that a node's answer wins.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }
}

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
    connections: ConnectionPool<SocketAddr>,
    rotation: AtomicUsize,
    jitter: AtomicU64,
    session: Mutex<SessionState>,
    /// Serializes opening a session, so concurrent first writes share one.
    session_opening: tokio::sync::Mutex<()>,
    keepalive: Mutex<Option<JoinHandle<()>>>,
    /// Long-polls the cluster for the end of the session while this client uses locks.
    watcher: Mutex<Option<(SessionId, JoinHandle<()>)>>,
    /// Bumped whenever the session ends or its lease is renewed, to wake lock guards.
    session_changes: tokio::sync::watch::Sender<u64>,
    /// Background releases and cancellations per (actor, lock); a later request of the same owner
    /// for the same lock waits for them, so that it cannot be overtaken by them.
    settling: Mutex<Settling>,
    /// (actor, lock) of every live guard, to refuse a second acquire by the same owner locally.
    holds: Mutex<std::collections::HashSet<(u64, String)>>,
    /// Single puts waiting to be sent together, per queue; see [`crate::queue`].
    put_batchers: Mutex<std::collections::HashMap<String, Arc<crate::queue::PutBatcher>>>,
    /// Cache gets waiting to be sent together, per consistency and target node (the last of
    /// each consistency's slots: the home node); see [`crate::cache`].
    get_batchers: Vec<Arc<crate::cache::GetBatcher>>,
}

/// Gates of background lock releases and withdrawals, by (actor, lock name): held while the
/// work runs.
pub(crate) type Settling = std::collections::HashMap<(u64, String), Arc<tokio::sync::Mutex<()>>>;

#[derive(Default)]
struct SessionState {
    id: Option<SessionId>,
    next_seq: u64,
    /// Sequence numbers sent but not yet answered; the smallest bounds what the cluster keeps.
    outstanding: BTreeSet<u64>,
    /// Until when this client may rely on the session (and so on its locks): the send time of
    /// the latest acknowledged keepalive plus the TTL, less a safety margin. The cluster cannot
    /// expire the session before that, since it counts the TTL from a later moment.
    lease_deadline: Option<Instant>,
}

/// The part of the TTL a client does not rely on: clocks run at slightly different rates, and a
/// client that stops trusting its locks early is safe, while one that trusts them late is not.
fn lease_margin(ttl: Duration) -> Duration {
    (ttl / 5).max(Duration::from_millis(100))
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.keepalive.lock().expect("keepalive lock").take() {
            task.abort();
        }
        if let Some((_, task)) = self.watcher.lock().expect("watcher lock").take() {
            task.abort();
        }
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
        let deadline = Instant::now() + self.inner.options.request_timeout;
        self.call(&Request::Status, deadline).await?;
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
        let addresses_len = addresses.len();
        Ok(Client {
            inner: Arc::new(Inner {
                endpoint,
                addresses,
                options,
                leader: Mutex::new(None),
                home: AtomicUsize::new(home),
                connections: ConnectionPool::default(),
                rotation: AtomicUsize::new(0),
                jitter: AtomicU64::new(seed),
                session: Mutex::new(SessionState { next_seq: 1, ..SessionState::default() }),
                session_opening: tokio::sync::Mutex::new(()),
                keepalive: Mutex::new(None),
                watcher: Mutex::new(None),
                session_changes: tokio::sync::watch::channel(0).0,
                settling: Mutex::new(std::collections::HashMap::new()),
                holds: Mutex::new(std::collections::HashSet::new()),
                put_batchers: Mutex::new(std::collections::HashMap::new()),
                get_batchers: (0..2 * (addresses_len + 1)).map(|_| Arc::default()).collect(),
            }),
        })
    }

    /// The replicated key-value register.
    pub fn kv(&self) -> Kv {
        Kv { client: self.clone() }
    }

    /// Distributed locks: `client.lock("name").acquire().await`. See [`crate::lock`].
    pub fn lock(&self, name: impl Into<String>) -> crate::lock::LockBuilder {
        crate::lock::LockBuilder::new(self.clone(), name.into())
    }

    /// A new owner identity for locks, distinct from every task, thread and other handle of this
    /// client. Pass it to [`crate::lock::LockBuilder::owner`] so that locks taken from different
    /// tasks belong to one logical actor (they are then nested, not mutually exclusive).
    pub fn owner(&self) -> crate::lock::OwnerHandle {
        crate::lock::OwnerHandle::new()
    }

    /// The current session, if one is open.
    pub fn session_id(&self) -> Option<SessionId> {
        self.inner.session.lock().expect("session lock").id
    }

    /// Closes the session (releasing anything it holds at once rather than at its TTL) and the
    /// connections. Calls made afterwards open a new session.
    pub async fn close(&self) {
        if let Some(task) = self.inner.keepalive.lock().expect("keepalive lock").take() {
            task.abort();
        }
        if let Some((_, task)) = self.inner.watcher.lock().expect("watcher lock").take() {
            task.abort();
        }
        if self.session_id().is_some() {
            let deadline = Instant::now() + self.inner.options.attempt_timeout;
            if let Err(error) = self.write_until(Command::CloseSession, deadline).await {
                tracing::debug!(%error, "closing the session failed; it will expire at its TTL");
            }
            self.inner.session.lock().expect("session lock").id = None;
            self.inner.session_changes.send_modify(|epoch| *epoch += 1);
        }
    }

    /// Asks one node (not the leader) for its own view of the cluster.
    ///
    /// # Errors
    ///
    /// [`ClientError::Unavailable`] when the node does not answer in time.
    pub async fn node_status(&self, endpoint: &str) -> Result<NodeStatus, ClientError> {
        let address = parse_address(endpoint)?;
        match self.ask_node(address, &Request::Status).await? {
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

    /// One request to one given node, no redirects.
    async fn ask_node(&self, address: SocketAddr, request: &Request) -> Result<Response, ClientError> {
        let frame = encode_frame(request).map_err(|e| ClientError::InvalidArgument { reason: e.to_string() })?;
        let attempt = tokio::time::timeout(self.inner.options.attempt_timeout, self.round_trip(address, &frame));
        match attempt.await {
            Ok(Ok(reply)) => reply.body.map_err(ClientError::from),
            Ok(Err(reason)) => {
                self.forget_connection(address);
                Err(ClientError::Unavailable { reason: format!("{address}: {reason}") })
            }
            Err(_) => {
                self.forget_connection(address);
                Err(ClientError::Unavailable {
                    reason: format!("{address} did not answer within {:?}", self.inner.options.attempt_timeout),
                })
            }
        }
    }

    /// Sends a write under the session, exactly once, retrying until the request timeout.
    pub(crate) async fn write(&self, command: Command) -> Result<CommandResponse, ClientError> {
        let deadline = Instant::now() + self.inner.options.request_timeout;
        self.write_until(command, deadline).await
    }

    async fn write_until(&self, command: Command, deadline: Instant) -> Result<CommandResponse, ClientError> {
        self.write_in_session(command, deadline).await.map(|(_, response)| response)
    }

    /// Sends a write under the session until `deadline`; returns the session it was written in.
    pub(crate) async fn write_in_session(
        &self,
        command: Command,
        deadline: Instant,
    ) -> Result<(SessionId, CommandResponse), ClientError> {
        self.write_in_session_via(command, deadline, Route::Leader).await
    }

    /// Like `write_in_session`, sent along `route`.
    pub(crate) async fn write_in_session_via(
        &self,
        command: Command,
        deadline: Instant,
        route: Route,
    ) -> Result<(SessionId, CommandResponse), ClientError> {
        command.validate()?;
        let session = self.ensure_session(deadline).await?;
        let (seq, acked_below) = {
            let mut state = self.inner.session.lock().expect("session lock");
            let seq = state.next_seq;
            state.next_seq += 1;
            state.outstanding.insert(seq);
            let acked_below = *state.outstanding.first().expect("just inserted");
            (seq, acked_below)
        };
        let request = Request::Write(WriteRequest { session, seq, acked_below, command });
        let result = self.call_via(&request, deadline, self.inner.options.attempt_timeout, route).await;
        self.inner.session.lock().expect("session lock").outstanding.remove(&seq);
        match result {
            Ok(Response::Written(response)) => Ok((session, response)),
            Ok(other) => Err(unexpected(&other)),
            Err(ClientError::SessionExpired { session }) => {
                self.session_lost(session);
                Err(ClientError::SessionExpired { session })
            }
            Err(error) => Err(error),
        }
    }

    /// Reads linearizably through the leader.
    pub(crate) async fn read(&self, query: Query) -> Result<QueryResponse, ClientError> {
        let deadline = Instant::now() + self.inner.options.request_timeout;
        match self.call(&Request::Read(query), deadline).await? {
            Response::Read(response) => Ok(response),
            other => Err(unexpected(&other)),
        }
    }

    /// Background lock releases per (actor, lock); see [`crate::lock`].
    pub(crate) fn inner_settling(&self) -> &Mutex<Settling> {
        &self.inner.settling
    }

    /// The batcher of single puts into `queue`.
    pub(crate) fn put_batcher(&self, queue: &str) -> Arc<crate::queue::PutBatcher> {
        let mut batchers = self.inner.put_batchers.lock().expect("batchers lock");
        batchers.entry(queue.to_string()).or_default().clone()
    }

    /// The batcher of single gets of `consistency` sent along `route`.
    pub(crate) fn get_batcher(
        &self,
        consistency: crate::wire::Consistency,
        route: Route,
    ) -> Arc<crate::cache::GetBatcher> {
        let slots = self.inner.addresses.len() + 1;
        let target = match route {
            Route::Owner(index) => index,
            Route::Home | Route::Leader => slots - 1,
        };
        self.inner.get_batchers[usize::from(consistency == crate::wire::Consistency::Local) * slots + target].clone()
    }

    /// Where cache requests for `key` go: its owner by hash, or the home node when one is set.
    pub(crate) fn cache_route(&self, key: &[u8]) -> Route {
        if self.inner.options.home.is_some() {
            return Route::Home;
        }
        // FNV-1a: stable across processes, so every client picks the same owner.
        let hash = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
        Route::Owner((hash % self.inner.addresses.len() as u64) as usize)
    }

    /// Forgets the batcher of `queue` if it is `batcher` and idle, so that a client putting into
    /// many queues keeps only the batchers in use.
    pub(crate) fn forget_put_batcher(&self, queue: &str, batcher: &Arc<crate::queue::PutBatcher>) {
        let mut batchers = self.inner.put_batchers.lock().expect("batchers lock");
        if batchers.get(queue).is_some_and(|current| Arc::ptr_eq(current, batcher) && current.is_idle()) {
            batchers.remove(queue);
        }
    }

    /// (actor, lock) of every live lock guard of this client.
    pub(crate) fn inner_holds(&self) -> &Mutex<std::collections::HashSet<(u64, String)>> {
        &self.inner.holds
    }

    /// The attempt timeout of this client's options.
    pub(crate) fn attempt_timeout(&self) -> Duration {
        self.inner.options.attempt_timeout
    }

    /// The request timeout of this client's options.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.options.request_timeout
    }

    /// Whether this client may still rely on `session`: it is the current one and its lease has
    /// not run out on the client's clock.
    pub(crate) fn session_valid(&self, session: SessionId) -> bool {
        self.lease_deadline(session).is_some_and(|deadline| Instant::now() < deadline)
    }

    /// When the lease of `session` runs out on the client's clock; `None` if it is not current.
    pub(crate) fn lease_deadline(&self, session: SessionId) -> Option<Instant> {
        let state = self.inner.session.lock().expect("session lock");
        if state.id == Some(session) {
            state.lease_deadline
        } else {
            None
        }
    }

    /// A receiver that changes whenever the session ends or its lease is renewed.
    pub(crate) fn session_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.session_changes.subscribe()
    }

    fn renew_lease(&self, session: SessionId, sent: Instant) {
        let deadline = sent + self.inner.options.session_ttl - lease_margin(self.inner.options.session_ttl);
        let mut state = self.inner.session.lock().expect("session lock");
        if state.id == Some(session) && state.lease_deadline.is_none_or(|current| current < deadline) {
            state.lease_deadline = Some(deadline);
            drop(state);
            self.inner.session_changes.send_modify(|epoch| *epoch += 1);
        }
    }

    /// Starts watching `session` for its end (pushed by the cluster), unless already watching.
    pub(crate) fn watch_session(&self, session: SessionId) {
        let mut watcher = self.inner.watcher.lock().expect("watcher lock");
        if watcher.as_ref().is_some_and(|(watched, task)| *watched == session && !task.is_finished()) {
            return;
        }
        let task = tokio::spawn(watch_session(Arc::downgrade(&self.inner), session));
        if let Some((_, previous)) = watcher.replace((session, task)) {
            previous.abort();
        }
    }

    async fn ensure_session(&self, deadline: Instant) -> Result<SessionId, ClientError> {
        if let Some(id) = self.session_id() {
            return Ok(id);
        }
        let _opening = self.inner.session_opening.lock().await;
        if let Some(id) = self.session_id() {
            return Ok(id);
        }
        let ttl_ms = self.inner.options.session_ttl.as_millis() as u64;
        let sent = Instant::now();
        let session = match self.call(&Request::OpenSession { ttl_ms }, deadline).await? {
            Response::SessionOpened { session, .. } => session,
            other => return Err(unexpected(&other)),
        };
        {
            let mut state = self.inner.session.lock().expect("session lock");
            // Sequence numbers are per session; a new session starts over.
            *state =
                SessionState { id: Some(session), next_seq: 1, outstanding: BTreeSet::new(), lease_deadline: None };
        }
        self.renew_lease(session, sent);
        let task = tokio::spawn(keep_alive(Arc::downgrade(&self.inner), session));
        if let Some(previous) = self.inner.keepalive.lock().expect("keepalive lock").replace(task) {
            previous.abort();
        }
        tracing::debug!(session, "session opened");
        Ok(session)
    }

    pub(crate) fn session_lost(&self, session: SessionId) {
        let mut state = self.inner.session.lock().expect("session lock");
        if state.id == Some(session) {
            tracing::warn!(session, "session expired; the next write opens a new one");
            state.id = None;
            state.lease_deadline = None;
            drop(state);
            self.inner.session_changes.send_modify(|epoch| *epoch += 1);
        }
    }

    /// Sends a request to the leader (as far as known), following redirects and retrying
    /// retryable failures with backoff until `deadline`.
    async fn call(&self, request: &Request, deadline: Instant) -> Result<Response, ClientError> {
        self.call_with(request, deadline, self.inner.options.attempt_timeout).await
    }

    /// Like `call`, with a per-attempt budget of its own (for requests a node holds open).
    pub(crate) async fn call_with(
        &self,
        request: &Request,
        deadline: Instant,
        attempt_timeout: Duration,
    ) -> Result<Response, ClientError> {
        self.call_via(request, deadline, attempt_timeout, Route::Leader).await
    }

    /// Sends a request along `route`, retrying as [`Client::call_with`] does; a home node that
    /// fails is replaced by the next endpoint.
    pub(crate) async fn call_via(
        &self,
        request: &Request,
        deadline: Instant,
        attempt_timeout: Duration,
        route: Route,
    ) -> Result<Response, ClientError> {
        let frame = encode_frame(request).map_err(|e| ClientError::InvalidArgument { reason: e.to_string() })?;
        let mut failures: u32 = 0;
        let mut last_failure = String::from("no attempt finished before the deadline");
        // How many nodes past a key's owner this call has moved after failures.
        let mut detour = 0;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Unavailable { reason: last_failure });
            }
            let target = match route {
                Route::Leader => self.pick_target(),
                Route::Home => self.home_target(),
                Route::Owner(owner) => self.inner.addresses[(owner + detour) % self.inner.addresses.len()],
            };
            let budget = (deadline - now).min(attempt_timeout);
            match tokio::time::timeout(budget, self.round_trip(target, &frame)).await {
                Ok(Ok(reply)) => {
                    if let Some(leader) = &reply.leader {
                        self.note_leader(leader).await;
                    }
                    match reply.body {
                        Ok(response) => return Ok(response),
                        Err(ServerError::NotLeader { leader: Some(leader) }) if failures < 3 => {
                            // A fresh hint: follow it at once (a few times, to avoid ping-pong
                            // between two nodes with stale views).
                            last_failure = format!("{target} is not the leader; it pointed to node {}", leader.id);
                            self.note_leader(&leader).await;
                            failures += 1;
                            continue;
                        }
                        Err(error) if error.is_retryable() => {
                            last_failure = format!("{target}: {error}");
                            self.forget_leader(target);
                            // A home node that keeps failing may be cut off: try another.
                            if route != Route::Leader && failures >= 1 {
                                self.leave_home(target);
                                detour += 1;
                            }
                        }
                        Err(error) => return Err(error.into()),
                    }
                }
                Ok(Err(reason)) => {
                    last_failure = format!("{target}: {reason}");
                    self.forget_connection(target);
                    self.forget_leader(target);
                    self.leave_home(target);
                    detour += 1;
                }
                Err(_) => {
                    last_failure = format!("{target} did not answer within {budget:?}");
                    // The node may have died: QUIC would notice only at the idle timeout, and a
                    // restarted node cannot reset the old connection, so dial afresh next time.
                    self.forget_connection(target);
                    self.forget_leader(target);
                    self.leave_home(target);
                    detour += 1;
                }
            }
            failures += 1;
            let pause = self.backoff(failures).min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
        }
    }

    async fn round_trip(&self, address: SocketAddr, frame: &[u8]) -> Result<Reply, String> {
        let connection = self
            .inner
            .connections
            .get_or_connect(address, || {
                let connecting = self.inner.endpoint.connect(address, SERVER_NAME);
                async move { connecting.map_err(|e| e.to_string())?.await.map_err(|e| format!("cannot connect: {e}")) }
            })
            .await?;
        exchange(&connection, frame).await
    }

    fn forget_connection(&self, address: SocketAddr) {
        self.inner.connections.forget(address);
    }

    fn pick_target(&self) -> SocketAddr {
        if let Some(leader) = *self.inner.leader.lock().expect("leader lock") {
            return leader;
        }
        let turn = self.inner.rotation.fetch_add(1, Ordering::Relaxed);
        self.inner.addresses[turn % self.inner.addresses.len()]
    }

    fn home_target(&self) -> SocketAddr {
        self.inner.addresses[self.inner.home.load(Ordering::Relaxed) % self.inner.addresses.len()]
    }

    /// Moves cache requests to the next endpoint if `address` is the home node.
    fn leave_home(&self, address: SocketAddr) {
        let home = self.inner.home.load(Ordering::Relaxed);
        if self.inner.addresses[home % self.inner.addresses.len()] == address {
            let _ = self.inner.home.compare_exchange(home, home + 1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    async fn note_leader(&self, leader: &LeaderInfo) {
        let address = match leader.address.parse::<SocketAddr>() {
            Ok(address) => Some(address),
            Err(_) => tokio::net::lookup_host(&leader.address).await.ok().and_then(|mut a| a.next()),
        };
        if let Some(address) = address {
            *self.inner.leader.lock().expect("leader lock") = Some(address);
        }
    }

    fn forget_leader(&self, address: SocketAddr) {
        let mut leader = self.inner.leader.lock().expect("leader lock");
        if *leader == Some(address) {
            *leader = None;
        }
    }

    /// Exponential backoff from 10 ms to 500 ms with ±50 % jitter, so that clients retrying after
    /// a failover do not arrive in lockstep.
    fn backoff(&self, failures: u32) -> Duration {
        let base_ms = (10u64 << failures.min(6)).min(500);
        // xorshift64: cheap, good enough to spread retries.
        let mut x = self.inner.jitter.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.inner.jitter.store(x, Ordering::Relaxed);
        let jitter_ms = x % (base_ms + 1);
        Duration::from_millis(base_ms / 2 + jitter_ms)
    }
}

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// To the leader, as far as known.
    Leader,
    /// To the client's home node, which forwards writes; see [`ClientOptions::home`].
    Home,
    /// To the endpoint at this index (a cache key's owner), or the next ones after failures.
    Owner(usize),
}

/// Keeps the session alive every third of its TTL until the client is dropped or the session
/// is found expired.
async fn keep_alive(inner: Weak<Inner>, session: SessionId) {
    let mut failed = false;
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let period = strong.options.session_ttl / 3;
        drop(strong);
        // After a failure, try again at once (each call backs off between its own attempts): a
        // keepalive that waited a whole period after a failed one could let the session expire
        // across a single failover.
        if !failed {
            tokio::time::sleep(period).await;
        }
        let Some(strong) = inner.upgrade() else { return };
        let client = Client { inner: strong };
        let sent = Instant::now();
        let deadline = sent + period;
        match client.call(&Request::KeepAlive { session }, deadline).await {
            Ok(_) => {
                client.renew_lease(session, sent);
                failed = false;
            }
            Err(ClientError::SessionExpired { .. }) => {
                client.session_lost(session);
                return;
            }
            Err(error) => {
                tracing::warn!(session, %error, "session keepalive failed; retrying");
                failed = true;
            }
        }
    }
}

/// How long one session watch may stay open on a node.
const SESSION_WATCH_MS: u64 = 20_000;

/// Long-polls the cluster until `session` ends, then marks it lost at once, so that lock guards
/// learn of it without waiting for the next keepalive.
async fn watch_session(inner: Weak<Inner>, session: SessionId) {
    let mut failures = 0u32;
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let client = Client { inner: strong };
        if client.inner.session.lock().expect("session lock").id != Some(session) {
            return;
        }
        let wait = Duration::from_millis(SESSION_WATCH_MS);
        let attempt = wait + client.inner.options.attempt_timeout;
        let request = Request::WatchSession { session, max_wait_ms: SESSION_WATCH_MS };
        match client.call_with(&request, Instant::now() + attempt, attempt).await {
            Ok(Response::SessionWatch { alive: false }) => {
                client.session_lost(session);
                return;
            }
            Ok(_) => failures = 0,
            Err(error) => {
                failures += 1;
                tracing::debug!(session, %error, "session watch failed; retrying");
                let pause = client.backoff(failures);
                drop(client);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

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

/// The replicated key-value register, a linearizable map from bytes to bytes.
///
/// ```no_run
/// # async fn example(client: distsync::Client) -> Result<(), distsync::ClientError> {
/// let kv = client.kv();
/// let version = kv.put("config/mode", "active").await?;
/// assert_eq!(kv.get_versioned("config/mode").await?, Some((b"active".to_vec(), version)));
/// assert!(kv.delete("config/mode").await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Kv {
    client: Client,
}

impl Kv {
    /// Sets `key` to `value` once a majority has it on disk; returns the write's version (its
    /// revision, unique and increasing in commit order).
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidArgument`] for keys or values beyond the limits in [`crate::wire`];
    /// [`ClientError::Unavailable`] when the cluster cannot commit before the deadline (the write
    /// may or may not have been applied); [`ClientError::SessionExpired`].
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<u64, ClientError> {
        let command = Command::KvPut { key: key.as_ref().to_vec(), value: value.as_ref().to_vec() };
        match self.client.write(command).await? {
            CommandResponse::KvPut { version } => Ok(version),
            other => Err(ClientError::Protocol { reason: format!("unexpected answer to a put: {other:?}") }),
        }
    }

    /// Reads `key` linearizably: the result reflects every write acknowledged before the call.
    ///
    /// # Errors
    ///
    /// As [`Kv::put`].
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self.get_versioned(key).await?.map(|(value, _)| value))
    }

    /// Like [`Kv::get`], with the version (the revision) of the write that set the value.
    ///
    /// # Errors
    ///
    /// As [`Kv::put`].
    pub async fn get_versioned(&self, key: impl AsRef<[u8]>) -> Result<Option<(Vec<u8>, u64)>, ClientError> {
        let key = key.as_ref().to_vec();
        crate::wire::validate_key(&key)?;
        match self.client.read(Query::KvGet { key }).await? {
            QueryResponse::KvGet { value } => Ok(value),
            other => Err(ClientError::Protocol { reason: format!("unexpected answer to a get: {other:?}") }),
        }
    }

    /// Removes `key`; returns whether it existed.
    ///
    /// # Errors
    ///
    /// As [`Kv::put`].
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool, ClientError> {
        match self.client.write(Command::KvDelete { key: key.as_ref().to_vec() }).await? {
            CommandResponse::KvDelete { existed } => Ok(existed),
            other => Err(ClientError::Protocol { reason: format!("unexpected answer to a delete: {other:?}") }),
        }
    }
}
