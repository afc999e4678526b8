//! TLS for a node: one endpoint serves clients and peers and dials peers.
//!
//! Clients connect with ALPN [`ALPN_CLIENT`] and need only trust the CA. Peers connect with
//! [`ALPN_PEER`] and must present a certificate signed by the cluster CA that names them as a
//! cluster member ([`PEER_NAME`]) and as a specific node (`node-N.distsync`); a stranger's
//! handshake fails, and a CA-signed client certificate is refused the peer protocol.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use distsync::quic::transport_config;
use distsync::tls::{load_certificates, load_private_key};
use distsync::wire::{ALPN_CLIENT, ALPN_PEER};
use distsync::NodeId;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::certs::{node_name, TlsPaths, PEER_NAME};

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
