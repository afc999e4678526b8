//! A node survives hostile input and keeps serving: a frame of garbage is answered with
//! `InvalidArgument` ("malformed"), an oversized length prefix with `TooLarge` (what: `frame`)
//! before any body is read, a truncated prefix merely ends the stream; and the peer protocol is
//! refused to a self-signed certificate and to the cluster's own client certificate (CA-signed,
//! but not a node's), while a real node certificate is let in. Afterwards the node still answers
//! status and serves a put and a get.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use distsync::quic::transport_config;
use distsync::tls::{load_certificates, load_private_key, SERVER_NAME};
use distsync::wire::{decode_body, encode_frame, read_frame, Reply, Request, ALPN_PEER, FRAME_BYTES_MAX};
use distsync::ServerError;
use distsync_cluster_tests::{Cluster, ClusterOptions};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The node that receives all the bad input.
const TARGET: u64 = 1;

/// How long the node may take to answer or close a stream; far more than loopback needs.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a legitimate peer connection must stay open to count as accepted.
const ACCEPTED_FOR: Duration = Duration::from_secs(1);

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_refuses_bad_input_and_keeps_serving() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let address: SocketAddr = cluster.endpoint(TARGET).parse()?;
    let connection = cluster.raw_connection(TARGET).await?;

    // A correct length prefix around bytes that decode to no request: the tag is far beyond
    // the variants `Request` has, and what follows is noise.
    let mut body = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
    body.extend(noise(59));
    assert!(decode_body::<Request>(&body).is_err(), "the garbage must not be a valid request");
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(&body);
    let reply = connection.exchange(&frame, REPLY_TIMEOUT).await?.context("no reply frame to a garbage frame")?;
    match decode_body::<Reply>(&reply)?.body {
        Err(ServerError::InvalidArgument { reason }) => {
            assert!(reason.contains("malformed"), "the reason should say the frame is malformed: {reason}")
        }
        other => panic!("a garbage frame was answered with {other:?}, expected InvalidArgument"),
    }

    // A length prefix one byte over the limit, and no body: refused on the prefix alone.
    let oversized = ((FRAME_BYTES_MAX + 1) as u32).to_be_bytes();
    let reply =
        connection.exchange(&oversized, REPLY_TIMEOUT).await?.context("no reply frame to an oversized prefix")?;
    match decode_body::<Reply>(&reply)?.body {
        Err(error @ ServerError::TooLarge { .. }) => {
            let ServerError::TooLarge { what, bytes, limit } = &error else { unreachable!() };
            assert_eq!((what.as_str(), *bytes, *limit), ("frame", FRAME_BYTES_MAX as u64 + 1, FRAME_BYTES_MAX as u64));
            assert!(error.to_string().contains("exceeds the limit"), "the message says so: {error}");
        }
        other => panic!("an oversized frame was answered with {other:?}, expected TooLarge"),
    }

    // Half a length prefix, then the end of the stream: an answer is optional, a hang is not.
    if let Ok(reply) = connection.exchange(&[0x00, 0x01], REPLY_TIMEOUT).await? {
        let body = decode_body::<Reply>(&reply)?.body;
        assert!(body.is_err(), "a truncated prefix was answered with {body:?}");
    }

    // The same connection still carries ordinary requests.
    let status = connection.request(&Request::Status, REPLY_TIMEOUT).await.context("status after bad frames")?;
    assert!(status.body.is_ok(), "status after bad frames failed: {status:?}");
    drop(connection);

    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;

    // The peer protocol: a stranger's self-signed certificate, even one naming a node.
    let stranger = rcgen::generate_simple_self_signed(vec!["node-1.distsync".into(), "peer.distsync".into()])?;
    let stranger_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(stranger.signing_key.serialize_der()));
    let chain = vec![stranger.cert.der().clone()];
    let refusal = try_as_peer(&endpoint, address, &cluster.ca_path(), chain, stranger_key).await?;
    let Some(reason) = refusal else { panic!("a self-signed certificate got an answer on the peer protocol") };
    eprintln!("self-signed certificate refused as a peer: {reason}");

    // The cluster's client certificate: signed by the CA but naming no node.
    let tls = cluster.tls_directory();
    let (chain, key) = identity(&tls.join("client.pem"), &tls.join("client-key.pem"))?;
    let refusal = try_as_peer(&endpoint, address, &cluster.ca_path(), chain, key).await?;
    let Some(reason) = refusal else { panic!("the client certificate got an answer on the peer protocol") };
    eprintln!("client certificate refused as a peer: {reason}");

    // Control: a real node certificate passes the same path, so the refusals above are about
    // the certificates and not about how this test connects.
    let (chain, key) = identity(&tls.join("node-2.pem"), &tls.join("node-2-key.pem"))?;
    let config = peer_config(&cluster.ca_path(), chain, key)?;
    let member = endpoint.connect_with(config, address, SERVER_NAME)?.await.context("node 2's certificate refused")?;
    let closed = tokio::time::timeout(ACCEPTED_FOR, member.closed()).await;
    assert!(closed.is_err(), "the node closed a connection with node 2's certificate: {closed:?}");
    member.close(0u32.into(), b"done");

    // The node is still up and serving.
    assert!(cluster.is_running(TARGET), "node {TARGET} exited");
    let status = cluster.status(TARGET).await?;
    assert_eq!(status.id, TARGET);
    let client = cluster.client_for(&[TARGET]).await?;
    client.kv().put("after-bad-input", "still-here").await?;
    assert_eq!(client.kv().get("after-bad-input").await?, Some(b"still-here".to_vec()));
    endpoint.close(0u32.into(), b"done");
    Ok(())
}

/// Connects on the peer protocol with this identity and sends a frame. Returns why the node
/// refused (the handshake failed, or the node closed the connection after it), or `None` when
/// the node answered the frame, taking us for a peer.
async fn try_as_peer(
    endpoint: &quinn::Endpoint,
    address: SocketAddr,
    ca: &Path,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<Option<String>> {
    let config = peer_config(ca, chain, key)?;
    let connecting = endpoint.connect_with(config, address, SERVER_NAME)?;
    let connection = match tokio::time::timeout(REPLY_TIMEOUT, connecting).await {
        Err(_) => anyhow::bail!("the handshake neither completed nor failed within {REPLY_TIMEOUT:?}"),
        Ok(Err(error)) => return Ok(Some(format!("handshake failed: {error}"))),
        Ok(Ok(connection)) => connection,
    };
    // With TLS 1.3 the client finishes its handshake before the server has judged the client's
    // certificate, so a refusal may arrive as the connection closing right after. Any frame
    // will do to find out: a node that took us for a peer would answer it.
    let frame = encode_frame(&Request::Status)?;
    let attempt = async {
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(&frame).await.map_err(|e| e.to_string())?;
        let _ = send.finish();
        read_frame(&mut recv, FRAME_BYTES_MAX).await.map_err(|e| e.to_string())
    };
    let outcome = match tokio::time::timeout(REPLY_TIMEOUT, attempt).await {
        Err(_) => anyhow::bail!("the node neither answered nor closed a refused peer within {REPLY_TIMEOUT:?}"),
        Ok(Ok(_)) => None,
        Ok(Err(reason)) => Some(format!("closed after the handshake: {reason}")),
    };
    connection.close(0u32.into(), b"done");
    Ok(outcome)
}

/// A client configuration speaking the peer protocol with this identity, trusting the cluster CA.
fn peer_config(
    ca: &Path,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<quinn::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in load_certificates(&std::fs::read(ca)?).map_err(anyhow::Error::msg)? {
        roots.add(certificate)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN_PEER.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// A certificate chain and key from PEM files.
fn identity(cert: &Path, key: &Path) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let read = |path: &Path| std::fs::read(path).with_context(|| format!("cannot read {}", path.display()));
    let chain = load_certificates(&read(cert)?).map_err(anyhow::Error::msg)?;
    let key = load_private_key(&read(key)?).map_err(anyhow::Error::msg)?;
    Ok((chain, key))
}

/// Deterministic noise (xorshift64), so a failure replays with the same bytes.
fn noise(count: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
