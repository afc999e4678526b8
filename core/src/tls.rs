//! TLS for clients: trust the cluster CA (`ca.pem` from `distsync certs init`), optionally
//! present a client certificate. The QUIC settings the connections use are in [`crate::quic`].
//!
//! Every node certificate carries the DNS name [`SERVER_NAME`], which clients verify regardless of
//! the address they dial, so nodes can move between addresses without new certificates.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ClientError;
use crate::wire::ALPN_CLIENT;

/// The DNS name every node certificate carries and every client verifies.
pub const SERVER_NAME: &str = "distsync";

// Moved to `crate::quic`; re-exported so that programs written against these paths still build.
#[doc(hidden)]
pub use crate::quic::{
    client_endpoint_config, transport_config, CLIENT_IDLE_TIMEOUT, CONCURRENT_STREAMS_MAX, IDLE_TIMEOUT,
};

/// Trust settings for connecting to a cluster.
#[derive(Clone)]
pub struct ClientTls {
    roots: Arc<rustls::RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("roots", &self.roots.len())
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

impl ClientTls {
    /// Trusts the CA certificates in a PEM file (normally `DIR/ca.pem`).
    ///
    /// ```no_run
    /// let tls = distsync::ClientTls::from_ca_file("tls/ca.pem")?;
    /// # Ok::<(), distsync::ClientError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] when the file is unreadable or holds no certificate.
    pub fn from_ca_file(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let pem = std::fs::read(path)
            .map_err(|e| ClientError::Config { reason: format!("cannot read CA file {}: {e}", path.display()) })?;
        Self::from_ca_pem(&pem).map_err(|e| match e {
            ClientError::Config { reason } => ClientError::Config { reason: format!("{}: {reason}", path.display()) },
            other => other,
        })
    }

    /// Trusts the CA certificates in PEM text.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] when the text holds no valid certificate.
    pub fn from_ca_pem(pem: &[u8]) -> Result<Self, ClientError> {
        let certificates = load_certificates(pem).map_err(|reason| ClientError::Config { reason })?;
        let mut roots = rustls::RootCertStore::empty();
        for certificate in certificates {
            roots.add(certificate).map_err(|e| ClientError::Config { reason: format!("bad CA certificate: {e}") })?;
        }
        Ok(Self { roots: Arc::new(roots), identity: None })
    }

    /// Also presents a client certificate (PEM certificate chain and private key), for clusters
    /// that want to know their clients.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] when either file is unreadable or invalid.
    pub fn with_client_certificate(
        mut self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, ClientError> {
        let read = |path: &Path| {
            std::fs::read(path)
                .map_err(|e| ClientError::Config { reason: format!("cannot read {}: {e}", path.display()) })
        };
        let chain = load_certificates(&read(cert.as_ref())?).map_err(|reason| ClientError::Config { reason })?;
        let key = load_private_key(&read(key.as_ref())?).map_err(|reason| ClientError::Config { reason })?;
        self.identity = Some((chain, Arc::new(key)));
        Ok(self)
    }

    /// The quinn client configuration for these settings.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] when rustls refuses the key.
    pub fn quinn_config(&self) -> Result<quinn::ClientConfig, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ClientError::Config { reason: e.to_string() })?
            .with_root_certificates(self.roots.clone());
        let mut config = match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| ClientError::Config { reason: format!("client certificate refused: {e}") })?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_CLIENT.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(config))
            .map_err(|e| ClientError::Config { reason: e.to_string() })?;
        Ok(crate::quic::client_config(crypto))
    }
}

/// Parses every certificate in PEM text.
///
/// # Errors
///
/// A message when the text is not PEM or holds no certificate.
pub fn load_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM certificate: {e}"))?;
    if certificates.is_empty() {
        return Err("no certificate found in PEM".into());
    }
    Ok(certificates)
}

/// Parses the first private key in PEM text.
///
/// # Errors
///
/// A message when the text holds no private key.
pub fn load_private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| format!("invalid PEM private key: {e}"))?
        .ok_or_else(|| "no private key found in PEM".to_string())
}
