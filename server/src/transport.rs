//! QUIC and TLS for a node: one endpoint serves clients and peers and dials peers.
//!
//! Clients connect with ALPN [`ALPN_CLIENT`] and need only trust the CA. Peers connect with
//! [`ALPN_PEER`] and must present a certificate signed by the cluster CA that names them as a
//! cluster member ([`PEER_NAME`]) and as a specific node (`node-N.distsync`); a stranger's
//! handshake fails, and a CA-signed client certificate is refused the peer protocol.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use distsync::pool::{exchange, ConnectionPool};
use distsync::quic::transport_config;
use distsync::tls::{load_certificates, load_private_key};
use distsync::wire::{encode_frame, ALPN_CLIENT, ALPN_PEER};
use distsync::NodeId;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::certs::{node_name, TlsPaths, PEER_NAME};
use crate::peer::{PeerRequest, PeerResponse};

/// Everything TLS a node needs.
pub struct NodeTls {
    /// For the listening endpoint.
    pub server: quinn::ServerConfig,
    /// For dialing peers (presents this node's certificate).
    pub peer_client: quinn::ClientConfig,
    /// The QUIC endpoint settings, with a stateless-reset key that survives restarts.
    pub endpoint: quinn::EndpointConfig,
}

impl NodeTls {
    /// Loads the CA and node `id`'s certificate and key from a `distsync certs init` directory.
    ///
    /// # Errors
    ///
    /// A message naming the missing or invalid file.
    pub fn load(directory: &Path, id: NodeId) -> anyhow::Result<Self> {
        let paths = TlsPaths::new(directory);
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| {
                anyhow::anyhow!("cannot read {}: {e}; create certificates with `distsync certs init`", path.display())
            })
        };
        let ca = load_certificates(&read(&paths.ca())?).map_err(anyhow::Error::msg)?;
        let chain = load_certificates(&read(&paths.node(id))?).map_err(anyhow::Error::msg)?;
        let key = load_private_key(&read(&paths.node_key(id))?).map_err(anyhow::Error::msg)?;
        // QUIC stateless-reset tokens are derived from this key. Deriving it from the node's own
        // private key keeps it across restarts: a restarted node can then reset the connections
        // its previous process held, so peers and clients learn at once that they are dead and
        // reconnect, instead of waiting for a timeout. It stays secret like the node key itself.
        let mut material = b"distsync stateless reset key v1".to_vec();
        material.extend_from_slice(key.secret_der());
        let digest = ring::digest::digest(&ring::digest::SHA256, &material);
        let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, digest.as_ref());
        let endpoint = quinn::EndpointConfig::new(Arc::new(reset_key));
        let mut roots = rustls::RootCertStore::empty();
        for certificate in ca {
            roots.add(certificate)?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        // Clients may connect without a certificate; a certificate that is presented must chain
        // to the CA, and peers are checked further per connection (see `peer_identity`).
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .allow_unauthenticated()
            .build()?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![ALPN_CLIENT.to_vec(), ALPN_PEER.to_vec()];
        server.max_early_data_size = 0;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(server))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::new(transport_config()));

        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        client.alpn_protocols = vec![ALPN_PEER.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(client))?;
        let mut peer_client = quinn::ClientConfig::new(Arc::new(crypto));
        peer_client.transport_config(Arc::new(peer_transport_config()));
        Ok(Self { server, peer_client, endpoint })
    }
}

/// Peer connections notice a dead peer within seconds: a restarted process cannot reset the old
/// connection (its reset key is new), so without this a leader would keep sending into a dead
/// connection until the 30 s client idle timeout.
pub const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

fn peer_transport_config() -> quinn::TransportConfig {
    let mut transport = transport_config();
    transport.max_idle_timeout(Some(PEER_IDLE_TIMEOUT.try_into().expect("5 s fits a QUIC varint")));
    transport.keep_alive_interval(Some(PEER_IDLE_TIMEOUT / 5));
    transport
}

/// The node id a peer connection's certificate proves, if any: the certificate (already verified
/// against the CA by rustls) must name [`PEER_NAME`] and exactly one member's `node-N.distsync`.
pub fn peer_identity(connection: &quinn::Connection, members: &BTreeMap<NodeId, String>) -> Option<NodeId> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let leaf = webpki::EndEntityCert::try_from(chain.first()?).ok()?;
    let names = |name: &str| {
        ServerName::try_from(name.to_string()).ok().is_some_and(|n| leaf.verify_is_valid_for_subject_name(&n).is_ok())
    };
    if !names(PEER_NAME) {
        return None;
    }
    let mut matching = members.keys().copied().filter(|id| names(&node_name(*id)));
    let id = matching.next()?;
    matching.next().is_none().then_some(id)
}

/// The negotiated ALPN protocol of an incoming connection.
pub fn negotiated_protocol(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection.handshake_data()?.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?.protocol
}

/// Outgoing peer RPCs: one cached connection per peer, the fault-injection switch, and when this
/// node last heard from each peer.
pub struct PeerTransport {
    id: NodeId,
    endpoint: quinn::Endpoint,
    members: BTreeMap<NodeId, String>,
    connections: ConnectionPool<NodeId>,
    dropped: RwLock<HashSet<NodeId>>,
    last_heard: Mutex<HashMap<NodeId, Instant>>,
    /// Per peer, the term and send time of the latest AppendEntries it accepted from this node
    /// as leader: the leader's lease (see `Node::lease_read_index`).
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
