//! Outgoing peer RPCs: one cached connection per peer, the fault-injection switch, when this
//! node last heard from each peer, and the acks that make up the leader's lease.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use distsync::pool::{exchange, ConnectionPool};
use distsync::wire::encode_frame;
use distsync::NodeId;

use super::{PeerRequest, PeerResponse};
use crate::certs::node_name;

/// Outgoing peer RPCs: one cached connection per peer, the fault-injection switch, and when this
/// node last heard from each peer.
pub struct PeerTransport {
    id: NodeId,
    endpoint: quinn::Endpoint,
    members: BTreeMap<NodeId, String>,
    connections: ConnectionPool<NodeId>,
    dropped: RwLock<HashSet<NodeId>>,
    /// Fault injection: how long each request to a peer is held before it is sent.
    delay_ms: AtomicU64,
    last_heard: Mutex<HashMap<NodeId, Instant>>,
    /// Per peer, the term and send time of the latest AppendEntries it accepted from this node
    /// as leader: the leader's lease (see [`crate::raft::lease`]).
    lease_acks: Mutex<HashMap<NodeId, (u64, Instant)>>,
}

/// Why a peer RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer could not be reached or the stream failed.
    #[error("node {peer} unreachable: {reason}")]
    Unreachable {
        /// The peer.
        peer: NodeId,
        /// What failed.
        reason: String,
    },
    /// No answer within the deadline (including traffic dropped by fault injection).
    #[error("node {peer} did not answer within {timeout:?}")]
    Timeout {
        /// The peer.
        peer: NodeId,
        /// The deadline.
        timeout: Duration,
    },
}

impl PeerTransport {
    /// A transport for node `id` over `endpoint`, knowing the members' addresses.
    pub fn new(id: NodeId, endpoint: quinn::Endpoint, members: BTreeMap<NodeId, String>) -> Self {
        Self {
            id,
            endpoint,
            members,
            connections: ConnectionPool::default(),
            dropped: RwLock::new(HashSet::new()),
            delay_ms: AtomicU64::new(0),
            last_heard: Mutex::new(HashMap::new()),
            lease_acks: Mutex::new(HashMap::new()),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The members and their addresses.
    pub fn members(&self) -> &BTreeMap<NodeId, String> {
        &self.members
    }

    /// Fault injection: from now on drop all traffic to and from `peers`.
    pub fn set_dropped(&self, peers: &[NodeId]) {
        *self.dropped.write().expect("dropped lock") = peers.iter().copied().collect();
        tracing::warn!(?peers, "fault injection: dropping traffic to and from these peers");
    }

    /// Fault injection: from now on hold each request to a peer `delay` (up to half again as
    /// long) before sending it.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
        tracing::warn!(?delay, "fault injection: delaying every request to a peer");
    }

    /// How long to hold the next request: the delay set, plus up to half of it again, drawn
    /// from the clock's nanoseconds (fault injection needs spread, not a good random source).
    fn next_delay(&self) -> Duration {
        let delay = Duration::from_millis(self.delay_ms.load(Ordering::Relaxed));
        if delay.is_zero() {
            return delay;
        }
        let spread = u64::try_from(delay.as_nanos() / 2).unwrap_or(u64::MAX).max(1);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        delay + Duration::from_nanos(u64::from(nanos) % spread)
    }

    /// Whether traffic with `peer` is being dropped.
    pub fn is_dropped(&self, peer: NodeId) -> bool {
        self.dropped.read().expect("dropped lock").contains(&peer)
    }

    /// Records that `peer` was heard from now.
    pub fn heard_from(&self, peer: NodeId) {
        self.last_heard.lock().expect("last heard lock").insert(peer, Instant::now());
    }

    /// Records that `peer` accepted an AppendEntries of `term` sent at `sent`: it will refuse to
    /// vote for anyone else until its leader lease (the election timeout) after receiving it.
    pub fn note_lease_ack(&self, peer: NodeId, term: u64, sent: Instant) {
        let mut acks = self.lease_acks.lock().expect("lease acks lock");
        let ack = acks.entry(peer).or_insert((term, sent));
        if (term, sent) > *ack {
            *ack = (term, sent);
        }
    }

    /// Send times of the latest AppendEntries each peer accepted in `term`.
    pub fn lease_acks(&self, term: u64) -> Vec<Instant> {
        let acks = self.lease_acks.lock().expect("lease acks lock");
        acks.values().filter(|(t, _)| *t == term).map(|(_, sent)| *sent).collect()
    }

    /// How long ago each peer was last heard from.
    pub fn last_heard(&self) -> HashMap<NodeId, Duration> {
        let now = Instant::now();
        self.last_heard.lock().expect("last heard lock").iter().map(|(id, at)| (*id, now - *at)).collect()
    }

    /// Sends one request to `peer` and waits for its answer, at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`PeerError`] when the peer is unreachable, silent, or cut off by fault injection (then
    /// after the whole timeout, as a real dropped packet would).
    pub async fn call(
        &self,
        peer: NodeId,
        request: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, PeerError> {
        if self.is_dropped(peer) {
            tokio::time::sleep(timeout).await;
            return Err(PeerError::Timeout { peer, timeout });
        }
        let frame = encode_frame(request).map_err(|e| PeerError::Unreachable { peer, reason: e.to_string() })?;
        let deadline = tokio::time::Instant::now() + timeout;
        let delay = self.next_delay();
        if !delay.is_zero() {
            if tokio::time::Instant::now() + delay >= deadline {
                tokio::time::sleep_until(deadline).await;
                return Err(PeerError::Timeout { peer, timeout });
            }
            tokio::time::sleep(delay).await;
        }
        let connection = match tokio::time::timeout_at(deadline, self.connection(peer)).await {
            Ok(Ok(connection)) => connection,
            // The failed dial is already forgotten; the next call dials again.
            Ok(Err(reason)) => return Err(PeerError::Unreachable { peer, reason }),
            // Still dialing: the dial goes on for the next call (the pool's own task).
            Err(_) => return Err(PeerError::Timeout { peer, timeout }),
        };
        let received = connection.stats().udp_rx.datagrams;
        match tokio::time::timeout_at(deadline, exchange::<PeerResponse>(&connection, &frame)).await {
            Ok(Ok(response)) => {
                if self.is_dropped(peer) {
                    // The switch flipped while the request was in flight: treat the answer as lost.
                    return Err(PeerError::Timeout { peer, timeout });
                }
                self.heard_from(peer);
                Ok(response)
            }
            Ok(Err(reason)) => {
                self.connections.forget_connection(peer, &connection);
                Err(PeerError::Unreachable { peer, reason })
            }
            Err(_) => {
                // A live peer acknowledges a request's packets within milliseconds, however long
                // its answer takes; a connection that received nothing meanwhile is dead (a
                // restarted peer cannot reset it), so the next call dials afresh. One that did
                // stays: closing it would cut off a long append sharing it.
                if connection.stats().udp_rx.datagrams == received {
                    self.connections.forget_connection(peer, &connection);
                }
                Err(PeerError::Timeout { peer, timeout })
            }
        }
    }

    /// The connection to `peer`: the pooled one, or one dialed once for every caller.
    async fn connection(&self, peer: NodeId) -> Result<quinn::Connection, String> {
        let address = self.members.get(&peer).ok_or_else(|| format!("node {peer} is not a member"))?;
        self.connections
            .get_or_connect(peer, || {
                let (address, endpoint) = (address.clone(), self.endpoint.clone());
                async move {
                    let socket: SocketAddr = match address.parse() {
                        Ok(socket) => socket,
                        Err(_) => tokio::net::lookup_host(address.as_str())
                            .await
                            .map_err(|e| format!("cannot resolve {address}: {e}"))?
                            .next()
                            .ok_or_else(|| format!("{address} resolves to nothing"))?,
                    };
                    // Verifying the peer's certificate against `node-N.distsync` proves we reached
                    // node N and not some other member listening at a stale address.
                    endpoint
                        .connect(socket, &node_name(peer))
                        .map_err(|e| e.to_string())?
                        .await
                        .map_err(|e| format!("cannot connect to {address}: {e}"))
                }
            })
            .await
    }
}
