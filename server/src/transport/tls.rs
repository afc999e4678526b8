//! TLS for a node: one endpoint serves clients and peers and dials peers.
//!
//! Every connection presents a certificate signed by the cluster CA (any CA in the CA file: a
//! bundle carries a rotation), or its handshake fails. Clients connect with ALPN [`ALPN_CLIENT`]
//! and a client certificate naming their identity (`NAME.client.distsync`, see
//! [`client_identity`]); a node's certificate is refused there. Peers connect with [`ALPN_PEER`]
//! and a certificate that names them as a cluster member ([`PEER_NAME`]) and as a specific node
//! (`node-N.distsync`); a client certificate is refused the peer protocol.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use distsync::quic::transport_config;
use distsync::tls::{load_certificates, load_private_key};
use distsync::wire::{
    validate_identity, ADMIN_IDENTITY, ALPN_CLIENT, ALPN_PEER, CLIENT_NAME_SUFFIX, LEGACY_CLIENT_NAME,
};
use distsync::NodeId;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::certs::{node_name, TlsPaths, PEER_NAME};

/// Everything TLS a node needs.
pub struct NodeTls {
    /// For the listening endpoint.
    pub server: quinn::ServerConfig,
    /// For dialing peers (presents this node's certificate).
    pub peer_client: quinn::ClientConfig,
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
        let mut roots = rustls::RootCertStore::empty();
        for certificate in ca {
            roots.add(certificate)?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        // Every connection must present a certificate chaining to the CA; what it may do is
        // decided per connection from its names (see `peer_identity` and `client_identity`).
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![ALPN_CLIENT.to_vec(), ALPN_PEER.to_vec()];
        server.max_early_data_size = 0;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(server))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        // Every connection starts with the client's stream limit; a connection that proves to be
        // a peer's is raised to the full limit once its certificate is checked.
        let mut server_transport = transport_config();
        server_transport.max_concurrent_bidi_streams(CLIENT_STREAMS_PER_CONNECTION.into());
        server_transport.receive_window(CLIENT_RECEIVE_WINDOW_BYTES.into());
        server.transport_config(Arc::new(server_transport));

        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        client.alpn_protocols = vec![ALPN_PEER.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(client))?;
        let mut peer_client = quinn::ClientConfig::new(Arc::new(crypto));
        peer_client.transport_config(Arc::new(peer_transport_config()));
        Ok(Self { server, peer_client })
    }
}

/// Streams (requests) one client connection may have open at once; further requests wait for
/// a stream (QUIC flow control). Peer connections get [`distsync::quic::CONCURRENT_STREAMS_MAX`].
pub const CLIENT_STREAMS_PER_CONNECTION: u32 = 256;

/// Bytes a client may have sent on one connection that the node has not read yet (QUIC's
/// connection flow-control window; quinn's default is unbounded, beside 1.25 MB per stream). Two
/// maximal writes: a client's throughput on one connection is the window per round trip, far
/// more than a node applies on a LAN. Peer connections are raised to the unbounded default.
pub const CLIENT_RECEIVE_WINDOW_BYTES: u32 = 2 * distsync::wire::WRITE_BYTES_MAX as u32;

/// Peer connections notice a dead peer within seconds. A restarted peer resets the old connection
/// at once (see [`super::reset_key`]), but a peer that is down, stopped or cut off answers
/// nothing, and without this a leader would keep sending into a dead connection until the 30 s
/// idle timeout.
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

/// The identity a client connection's certificate (verified against the CA by rustls) names:
/// its one `NAME.client.distsync` name, or `admin` for the `client.distsync` certificate made
/// before identities existed.
///
/// # Errors
///
/// Why the certificate cannot be a client's: a node's certificate, no identity name, several.
pub fn client_identity(connection: &quinn::Connection) -> Result<String, &'static str> {
    let identity = connection.peer_identity().ok_or("no client certificate")?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().map_err(|_| "no client certificate")?;
    let leaf = webpki::EndEntityCert::try_from(chain.first().ok_or("no client certificate")?)
        .map_err(|_| "the client certificate cannot be parsed")?;
    let names: Vec<&str> = leaf.valid_dns_names().collect();
    if names.contains(&PEER_NAME) {
        return Err("a node's certificate cannot be used as a client identity; use one from `distsync certs client`");
    }
    let mut identities = names.iter().filter_map(|name| {
        if *name == LEGACY_CLIENT_NAME {
            return Some(ADMIN_IDENTITY);
        }
        name.strip_suffix(CLIENT_NAME_SUFFIX).filter(|identity| validate_identity(identity).is_ok())
    });
    let identity = identities.next().ok_or("the certificate names no client identity (NAME.client.distsync)")?;
    if identities.any(|other| other != identity) {
        return Err("the certificate names several client identities");
    }
    Ok(identity.to_string())
}

/// The negotiated ALPN protocol of an incoming connection.
pub fn negotiated_protocol(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection.handshake_data()?.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?.protocol
}
