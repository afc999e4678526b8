//! A bare QUIC connection on the client protocol, for tests that must know exactly what a node
//! was sent and answered: one request, one reply, no retries, no redirects.

use std::time::Duration;

use anyhow::Context as _;
use distsync::wire::{decode_body, encode_frame, read_frame, Reply, Request, FRAME_BYTES_MAX};
use distsync::{ClientTls, FrameError, NodeId};

use crate::Cluster;

impl Cluster {
    /// A bare QUIC connection to node `id` on the client protocol: one request, one reply, no
    /// retries, no redirects, for tests that must know exactly what a node was sent and answered.
    ///
    /// # Errors
    ///
    /// When the handshake fails.
    pub async fn raw_connection(&self, id: NodeId) -> anyhow::Result<RawConnection> {
        RawConnection::open(&self.endpoint(id), &self.tls).await.with_context(|| format!("cannot connect to node {id}"))
    }

    /// [`Cluster::raw_connection`] that ends only after `idle` without a word from the node (see
    /// [`RawConnection::open_patient`]).
    ///
    /// # Errors
    ///
    /// When the handshake fails.
    pub async fn patient_raw_connection(&self, id: NodeId, idle: Duration) -> anyhow::Result<RawConnection> {
        RawConnection::open_patient(&self.endpoint(id), &self.tls, idle)
            .await
            .with_context(|| format!("cannot connect to node {id}"))
    }
}

/// A bare client-protocol connection to one node; see [`Cluster::raw_connection`].
pub struct RawConnection {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
}

impl RawConnection {
    /// Connects to `address` with `tls`. The handshake completing here does not mean the node
    /// accepted the certificate: a refusal arrives as the connection's close.
    ///
    /// # Errors
    ///
    /// When the handshake fails on this side.
    pub async fn open(address: &str, tls: &ClientTls) -> anyhow::Result<RawConnection> {
        Self::open_with(address, tls.quinn_config()?).await
    }

    /// Connects to `address` with `tls`, ending the connection only after `idle` without a word
    /// from the node (instead of the client's 5 s), for tests that watch a connection across a
    /// node's restart.
    ///
    /// # Errors
    ///
    /// When the handshake fails on this side.
    pub async fn open_patient(address: &str, tls: &ClientTls, idle: Duration) -> anyhow::Result<RawConnection> {
        let mut config = tls.quinn_config()?;
        let mut transport = distsync::quic::transport_config();
        transport.max_idle_timeout(Some(idle.try_into()?));
        transport.keep_alive_interval(Some(Duration::from_secs(1)));
        config.transport_config(std::sync::Arc::new(transport));
        Self::open_with(address, config).await
    }

    async fn open_with(address: &str, config: quinn::ClientConfig) -> anyhow::Result<RawConnection> {
        let endpoint = quinn::Endpoint::client("0.0.0.0:0".parse()?)?;
        let connecting = endpoint.connect_with(config, address.parse()?, distsync::tls::SERVER_NAME)?;
        let connection = connecting.await?;
        Ok(RawConnection { endpoint, connection })
    }

    /// Sends one request on a fresh stream and returns the node's own reply, waiting as long as
    /// the node takes (up to `timeout`): when it returns, the node is done with the request.
    ///
    /// # Errors
    ///
    /// When the stream fails, no whole reply arrives within `timeout`, or the reply is garbled.
    pub async fn request(&self, request: &Request, timeout: Duration) -> anyhow::Result<Reply> {
        let body = self
            .exchange(&encode_frame(request)?, timeout)
            .await?
            .with_context(|| format!("no reply to {request:?}"))?;
        Ok(decode_body::<Reply>(&body)?)
    }

    /// Sends raw bytes on a fresh stream, finishes it, and reads one reply frame. The inner
    /// error is the node ending the stream without a whole frame.
    ///
    /// # Errors
    ///
    /// When the stream cannot be opened or written, or the node neither answers nor ends the
    /// stream within `timeout`.
    pub async fn exchange(&self, bytes: &[u8], timeout: Duration) -> anyhow::Result<Result<Vec<u8>, FrameError>> {
        let (mut send, mut recv) = self.connection.open_bi().await?;
        send.write_all(bytes).await?;
        send.finish()?;
        let reply = tokio::time::timeout(timeout, read_frame(&mut recv, FRAME_BYTES_MAX))
            .await
            .with_context(|| format!("the node neither answered nor ended the stream within {timeout:?}"))?;
        Ok(reply)
    }

    /// The underlying connection.
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }
}

impl Drop for RawConnection {
    fn drop(&mut self) {
        self.connection.close(0u32.into(), b"done");
        self.endpoint.close(0u32.into(), b"done");
    }
}
