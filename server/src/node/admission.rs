//! What a node lets in before it reads a request, so that no number of clients can make it hold
//! unbounded memory or starve its peers: connection budgets apart for clients and peers, a
//! stream limit per client connection and in total, a deadline for each request to arrive, and
//! a byte budget for the requests being read and handled. Beyond a budget a client is answered
//! [`ServerError::Busy`] with a retry-after hint, which the client honours with jitter.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use distsync::ServerError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Client connections a node holds at once, handshakes included; more are refused. (Streams per
/// client connection: [`crate::transport::tls::CLIENT_STREAMS_PER_CONNECTION`].)
pub const CONNECTIONS_MAX: usize = 4096;

/// Connections from cluster members' addresses a node holds at once: apart from the clients', so
/// that clients can never lock peers out (a follower that cannot be reached elects).
pub const PEER_CONNECTIONS_MAX: usize = 64;

/// Client handshakes a node runs at once. A handshake is the costliest thing a stranger can ask
/// for (signatures and certificate checks), so a reconnect storm takes its turn instead of
/// taking every core from Raft; handshakes from members' addresses do not wait.
pub const HANDSHAKES_MAX: usize = 32;

/// How long a client's connection attempt may wait for a handshake turn before it is refused
/// (the client then tries again, or another node).
pub const HANDSHAKE_WAIT: Duration = Duration::from_secs(5);

/// Longest a handshake may take once it has its turn: a stranger who starts handshakes and
/// stalls them holds turns for this long at most, not for QUIC's 30 s idle timeout.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// Client streams a node serves at once across its connections; beyond, a request is answered
/// `Busy` unread.
pub const CLIENT_STREAMS_MAX: usize = 16 * 1024;

/// How long a client has to deliver a whole request once it opened its stream; a stream that
/// trickles slower is reset, so a slow sender cannot hold a stream and its budget for ever.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause a `Busy` answer asks for.
pub const BUSY_RETRY_AFTER_MS: u64 = 200;

/// A node's budgets for what clients and peers hold.
pub struct Admission {
    client_connections: Arc<Semaphore>,
    peer_connections: Arc<Semaphore>,
    peer_addresses: Vec<SocketAddr>,
    handshakes: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    request_bytes: Arc<Semaphore>,
    request_bytes_max: u64,
    /// Requests answered `Busy` since start.
    busy: std::sync::atomic::AtomicU64,
}

/// Which budget a connection counts against, by the address it comes from. A connection from a
/// member's address still proves with its certificate that it is that member; one that does
/// not is treated as any client would be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionBudget {
    /// From a cluster member's address.
    Peer,
    /// From anywhere else.
    Client,
}

impl Admission {
    /// Budgets with `request_bytes` for requests in flight, peers at `peer_addresses`.
    pub fn new(request_bytes: u64, peer_addresses: Vec<SocketAddr>) -> Self {
        let request_bytes = request_bytes.min(Semaphore::MAX_PERMITS as u64);
        Self {
            client_connections: Arc::new(Semaphore::new(CONNECTIONS_MAX)),
            peer_connections: Arc::new(Semaphore::new(PEER_CONNECTIONS_MAX)),
            peer_addresses,
            handshakes: Arc::new(Semaphore::new(HANDSHAKES_MAX)),
            streams: Arc::new(Semaphore::new(CLIENT_STREAMS_MAX)),
            request_bytes: Arc::new(Semaphore::new(request_bytes as usize)),
            request_bytes_max: request_bytes,
            busy: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The budget a connection from `remote` counts against.
    pub fn budget_of(&self, remote: SocketAddr) -> ConnectionBudget {
        if self.peer_addresses.contains(&remote) {
            ConnectionBudget::Peer
        } else {
            ConnectionBudget::Client
        }
    }

    /// A place for one connection in `budget`, if one is free.
    pub fn connection(&self, budget: ConnectionBudget) -> Option<OwnedSemaphorePermit> {
        let semaphore = match budget {
            ConnectionBudget::Peer => &self.peer_connections,
            ConnectionBudget::Client => &self.client_connections,
        };
        semaphore.clone().try_acquire_owned().ok()
    }

    /// A turn to run one handshake of a connection in `budget`, within [`HANDSHAKE_WAIT`]; a
    /// peer's needs none (`Some(None)`). `None` when no turn came in time.
    pub async fn handshake(&self, budget: ConnectionBudget) -> Option<Option<OwnedSemaphorePermit>> {
        match budget {
            ConnectionBudget::Peer => Some(None),
            ConnectionBudget::Client => {
                let turn = tokio::time::timeout(HANDSHAKE_WAIT, self.handshakes.clone().acquire_owned()).await;
                Some(Some(turn.ok()?.expect("the handshake semaphore is never closed")))
            }
        }
    }

    /// A place for one client stream.
    ///
    /// # Errors
    ///
    /// `Busy` when [`CLIENT_STREAMS_MAX`] are open.
    pub fn stream(&self) -> Result<OwnedSemaphorePermit, ServerError> {
        self.streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.busy(format!("{CLIENT_STREAMS_MAX} client requests are open")))
    }

    /// Room for a request of `bytes` (as its frame announces) until it is answered.
    ///
    /// # Errors
    ///
    /// `Busy` when the requests being read and handled would pass `--inflight-request-bytes`.
    pub fn request_bytes(&self, bytes: usize) -> Result<OwnedSemaphorePermit, ServerError> {
        // Every frame is at most FRAME_BYTES_MAX (16 MiB), below u32::MAX.
        let permits = u32::try_from(bytes.max(1)).unwrap_or(u32::MAX);
        self.request_bytes.clone().try_acquire_many_owned(permits).map_err(|_| {
            self.busy(format!(
                "a request of {bytes} bytes does not fit in the {} bytes of requests this node handles at once \
                 (--inflight-request-bytes)",
                self.request_bytes_max
            ))
        })
    }

    /// Bytes of requests being read and handled now.
    pub fn request_bytes_in_use(&self) -> u64 {
        self.request_bytes_max - self.request_bytes.available_permits() as u64
    }

    /// Requests answered `Busy` since start.
    pub fn busy_answers(&self) -> u64 {
        self.busy.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn busy(&self, reason: String) -> ServerError {
        self.busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ServerError::Busy { reason, retry_after_ms: BUSY_RETRY_AFTER_MS }
    }
}

/// The runtime that serves clients, apart from the one that runs Raft, the peer connections and
/// the QUIC endpoint's socket: client connections are accepted here, so their drivers (packets,
/// crypto, handshakes) and their requests run here too. A flood of clients then queues behind
/// itself, while the threads that carry heartbeats stay idle enough for the operating system to
/// run them as soon as a packet arrives. Shut down in the background when dropped (dropping a runtime may happen inside
/// another's task).
pub struct ClientRuntime(Option<tokio::runtime::Runtime>);

impl ClientRuntime {
    /// A runtime with a thread per core (at most 4), named `distsync-client`.
    ///
    /// # Errors
    ///
    /// When the operating system refuses the threads.
    pub fn start() -> std::io::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("distsync-client")
            .enable_all()
            .build()?;
        Ok(Self(Some(runtime)))
    }

    /// Where client requests are spawned.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("only taken when dropped").handle()
    }
}

impl Drop for ClientRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_refuse_beyond_their_limit_and_free_with_their_permits() {
        let peer: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let admission = Admission::new(100, vec![peer]);
        assert_eq!(admission.budget_of(peer), ConnectionBudget::Peer);
        assert_eq!(admission.budget_of("127.0.0.1:7002".parse().unwrap()), ConnectionBudget::Client);
        let held = admission.request_bytes(60).unwrap();
        assert!(matches!(
            admission.request_bytes(41),
            Err(ServerError::Busy { retry_after_ms: BUSY_RETRY_AFTER_MS, .. })
        ));
        assert_eq!(admission.request_bytes_in_use(), 60);
        drop(held);
        assert!(admission.request_bytes(100).is_ok());
        // Clients filling theirs leave the peers' connection budget whole.
        let clients: Vec<_> = (0..CONNECTIONS_MAX).map(|_| admission.connection(ConnectionBudget::Client)).collect();
        assert!(clients.iter().all(Option::is_some));
        assert!(admission.connection(ConnectionBudget::Client).is_none());
        assert!(admission.connection(ConnectionBudget::Peer).is_some());
    }
}
