//! QUIC settings shared by clients and nodes: idle timeouts and keepalives, stream limits, and
//! connection ids from the operating system's random source.

use std::sync::Arc;
use std::time::Duration;

use crate::error::ClientError;

/// Idle connections are closed after this long without traffic; keepalives keep live sessions
/// well inside it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle timeout of a client's connections, with keepalives every quarter of it: short, so that a
/// request held open by a node that died fails within seconds and is retried elsewhere.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Streams a peer may open at once on one connection. Far above what one client keeps in flight,
/// because at quinn's default of 100 throughput drops at high concurrency (TOOLCHAIN.md).
pub const CONCURRENT_STREAMS_MAX: u32 = 4096;

/// Transport settings shared by clients and nodes.
pub fn transport_config() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(CONCURRENT_STREAMS_MAX.into());
    transport.max_concurrent_uni_streams(0u32.into());
    transport.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("30 s fits a QUIC varint")));
    transport.keep_alive_interval(Some(IDLE_TIMEOUT / 3));
    transport
}

/// A client's connection settings around its TLS configuration: connection ids from the
/// operating system's random source, and an idle timeout short enough that a client notices a
/// dead node within seconds even while it only waits on it (a lock wait held open by the node),
/// then asks another node.
pub(crate) fn client_config(crypto: quinn::crypto::rustls::QuicClientConfig) -> quinn::ClientConfig {
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    // Not quinn's default (`rand`'s per-thread generator): see `client_endpoint_config`.
    client.initial_dst_cid_provider(Arc::new(|| {
        let mut id = [0u8; 20];
        os_random(&mut id).expect("the operating system's random source failed");
        quinn::ConnectionId::new(&id)
    }));
    let mut transport = transport_config();
    transport.max_idle_timeout(Some(CLIENT_IDLE_TIMEOUT.try_into().expect("5 s fits a QUIC varint")));
    transport.keep_alive_interval(Some(CLIENT_IDLE_TIMEOUT / 4));
    client.transport_config(Arc::new(transport));
    client
}

/// The endpoint settings of a client: connection ids and the stateless-reset key drawn from the
/// operating system's random source instead of `rand`'s per-thread generator (quinn's default).
/// A forked child inherits the parent's per-thread generator state, so sibling processes forked
/// from one parent would otherwise pick the same connection ids, and a node would mix up their
/// handshakes: seen as 1–3 s stalls when forked workers connect at once.
///
/// # Errors
///
/// [`ClientError::Config`] when the operating system's random source fails.
pub fn client_endpoint_config() -> Result<quinn::EndpointConfig, ClientError> {
    let mut reset_key = [0u8; 64];
    os_random(&mut reset_key)?;
    let mut config = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &reset_key)));
    config.cid_generator(|| Box::new(OsRandomConnectionIds));
    Ok(config)
}

pub(crate) fn os_random(buffer: &mut [u8]) -> Result<(), ClientError> {
    use ring::rand::SecureRandom as _;
    ring::rand::SystemRandom::new()
        .fill(buffer)
        .map_err(|_| ClientError::Config { reason: "the operating system's random source failed".into() })
}

/// Random 8-byte connection ids from the operating system's random source.
struct OsRandomConnectionIds;

impl quinn::ConnectionIdGenerator for OsRandomConnectionIds {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut id = [0u8; 8];
        // A failing getrandom leaves nothing sensible to do here; it does not fail on Linux.
        os_random(&mut id).expect("the operating system's random source failed");
        quinn::ConnectionId::new(&id)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}
