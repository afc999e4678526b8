//! TLS for clients: trust the cluster CA (`ca.pem` from `distsync certs init`, or a bundle of
//! several CAs during a rotation) and present the client's certificate, which names its
//! identity (`NAME.client.distsync`). The QUIC settings the connections use are in [`crate::quic`].
//!
//! Every node certificate carries the DNS name [`SERVER_NAME`], which clients verify regardless of
//! the address they dial, so nodes can move between addresses without new certificates.
//!
//! Nodes refuse connections without a CA-signed client certificate. Where a client finds its
//! certificate: the one given explicitly; else the files named by the environment variables
//! [`CERT_ENV`] and [`KEY_ENV`]; else `client.pem` and `client-key.pem` beside the CA file (what
//! `distsync certs init` writes: the `admin` identity, for development). Production clients get
//! an identity of their own from `distsync certs client --name NAME`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ClientError;
use crate::wire::ALPN_CLIENT;

/// The DNS name every node certificate carries and every client verifies.
pub const SERVER_NAME: &str = "distsync";

/// Environment variable naming the client certificate when none is given explicitly.
pub const CERT_ENV: &str = "DISTSYNC_CERT";

/// Environment variable naming the client certificate's private key.
pub const KEY_ENV: &str = "DISTSYNC_KEY";

/// QUIC application close code a node uses for a connection whose certificate is CA-signed but
/// names no client identity (a node's certificate, say); the close reason says which.
pub const CLOSE_NOT_A_CLIENT: u32 = 2;

/// What a client that the cluster refused should do.
const UNAUTHENTICATED_HINT: &str = "the cluster requires a client certificate signed by its CA: pass --cert and --key \
     (or DISTSYNC_CERT and DISTSYNC_KEY), see `distsync certs client`";

// Moved to `crate::quic`; re-exported so that programs written against these paths still build.
#[doc(hidden)]
pub use crate::quic::{
    client_endpoint_config, transport_config, CLIENT_IDLE_TIMEOUT, CONCURRENT_STREAMS_MAX, IDLE_TIMEOUT,
};

/// Trust settings for connecting to a cluster.
///
/// Settings loaded from files ([`ClientTls::load`], [`ClientTls::from_ca_file`]) are read again
/// for every new connection, so a long-running client follows a CA rotation or a re-issued
/// certificate as soon as the files on disk change: it keeps its connections, and the next one
/// it dials (after a node restarts, say) uses the new files.
#[derive(Clone)]
pub struct ClientTls {
    roots: Arc<rustls::RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    /// Where `roots` and `identity` came from, when they came from files.
    files: Option<Arc<TlsFiles>>,
}

/// The files a [`ClientTls`] was loaded from.
#[derive(Debug)]
struct TlsFiles {
    ca: PathBuf,
    identity: Option<(PathBuf, PathBuf)>,
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
    /// Trusts the CA certificates in a PEM file (normally `DIR/ca.pem`; every certificate in it
    /// is trusted, so a bundle of the old and the new CA carries a rotation) and presents the
    /// client certificate found as the [module documentation](self) says: `DISTSYNC_CERT` and
    /// `DISTSYNC_KEY`, else `client.pem` and `client-key.pem` beside the CA file.
    ///
    /// ```no_run
    /// let tls = distsync::ClientTls::from_ca_file("tls/ca.pem")?;
    /// # Ok::<(), distsync::ClientError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] when a file is unreadable or invalid.
    pub fn from_ca_file(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        Self::load(path, None, None)
    }

    /// Trusts the CA file `ca` and presents the certificate `cert` with its key `key`; a pair
    /// left out is looked up as [`ClientTls::from_ca_file`] does.
    ///
    /// ```no_run
    /// let tls = distsync::ClientTls::load("tls/ca.pem", Some("tls/alice.pem".as_ref()), Some("tls/alice-key.pem".as_ref()))?;
    /// # Ok::<(), distsync::ClientError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] when a file is unreadable or invalid, or only one of `cert` and
    /// `key` is given.
    pub fn load(ca: impl AsRef<Path>, cert: Option<&Path>, key: Option<&Path>) -> Result<Self, ClientError> {
        let mut tls = Self::trust_ca_file(ca.as_ref())?;
        tls.files = Some(Arc::new(TlsFiles { ca: ca.as_ref().to_path_buf(), identity: None }));
        match find_identity(ca.as_ref(), cert, key)? {
            Some((cert, key)) => tls.with_client_certificate(cert, key),
            None => Ok(tls),
        }
    }

    /// The settings as the files say now (for settings loaded from files), else these.
    fn current(&self) -> Result<ClientTls, ClientError> {
        let Some(files) = &self.files else { return Ok(self.clone()) };
        let tls = Self::trust_ca_file(&files.ca)?;
        match &files.identity {
            Some((cert, key)) => tls.with_client_certificate(cert, key),
            None => Ok(tls),
        }
    }

    fn trust_ca_file(path: &Path) -> Result<Self, ClientError> {
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
        Ok(Self { roots: Arc::new(roots), identity: None, files: None })
    }

    /// Presents this client certificate (PEM certificate chain and private key), whose name
    /// `NAME.client.distsync` is the client's identity.
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
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let chain = load_certificates(&read(cert)?).map_err(|reason| ClientError::Config { reason })?;
        let private_key = load_private_key(&read(key)?).map_err(|reason| ClientError::Config { reason })?;
        self.identity = Some((chain, Arc::new(private_key)));
        if let Some(files) = &self.files {
            let identity = Some((cert.to_path_buf(), key.to_path_buf()));
            self.files = Some(Arc::new(TlsFiles { ca: files.ca.clone(), identity }));
        }
        Ok(self)
    }

    /// The quinn client configuration for a new connection: from the files as they are now
    /// (see [`ClientTls`]); if they cannot be read (being rewritten, say), from what was loaded
    /// last.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] when rustls refuses the key.
    pub fn quinn_config(&self) -> Result<quinn::ClientConfig, ClientError> {
        match self.current() {
            Ok(current) => current.config_of_memory(),
            Err(error) => {
                tracing::warn!(%error, "cannot read the TLS files again; using the ones loaded before");
                self.config_of_memory()
            }
        }
    }

    fn config_of_memory(&self) -> Result<quinn::ClientConfig, ClientError> {
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

/// The client certificate and key to present: `cert` and `key` when given, else the environment,
/// else the files `distsync certs init` writes beside the CA file, else none.
fn find_identity(
    ca: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<(PathBuf, PathBuf)>, ClientError> {
    let pair = |cert: Option<PathBuf>, key: Option<PathBuf>, source: &str| {
        match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        _ => {
            Err(ClientError::Config {
                reason: format!(
                    "a client certificate without its key, or a key without its certificate ({source}); give both, or neither"
                ),
            })
        }
    }
    };
    if let Some(found) = pair(cert.map(Path::to_path_buf), key.map(Path::to_path_buf), "cert and key")? {
        return Ok(Some(found));
    }
    let from_env = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty()).map(PathBuf::from);
    if let Some(found) = pair(from_env(CERT_ENV), from_env(KEY_ENV), "DISTSYNC_CERT and DISTSYNC_KEY")? {
        return Ok(Some(found));
    }
    let directory = ca.parent().unwrap_or(Path::new("."));
    let (cert, key) = (directory.join("client.pem"), directory.join("client-key.pem"));
    Ok((cert.exists() && key.exists()).then_some((cert, key)))
}

/// The error a client reports when the cluster (or the client itself) refused the TLS
/// handshake over certificates, if `error` is that: retrying cannot help, so the caller stops at
/// once with [`ClientError::Unauthenticated`] instead of timing out.
pub(crate) fn refusal(error: &quinn::ConnectionError) -> Option<ClientError> {
    let alert = |code: quinn::TransportErrorCode| {
        let code = u64::from(code);
        (0x100..0x200).contains(&code).then(|| (code - 0x100) as u8)
    };
    let reason = match error {
        // The node refused this client's certificate with a TLS alert.
        quinn::ConnectionError::ConnectionClosed(close) => match alert(close.error_code)? {
            116 => "the node asked for a client certificate and got none".to_string(),
            // Bad, unsupported, revoked, expired or unknown certificate; unknown CA; access
            // denied; decrypt error (a certificate whose signature does not verify).
            42 | 43 | 44 | 45 | 46 | 48 | 49 | 51 => {
                format!("the node refused the client certificate ({})", close.error_code)
            }
            _ => return None,
        },
        // This client refused the node's certificate (not signed by a CA in the CA file).
        quinn::ConnectionError::TransportError(error) => {
            alert(error.code)?;
            return Some(ClientError::Unauthenticated {
                reason: format!(
                    "the node's certificate is not trusted: {}; check that the --ca file holds the CA that signed the nodes' certificates",
                    error.reason
                ),
            });
        }
        quinn::ConnectionError::ApplicationClosed(close) if close.error_code == CLOSE_NOT_A_CLIENT.into() => {
            format!("the node refused the certificate: {}", String::from_utf8_lossy(&close.reason))
        }
        _ => return None,
    };
    Some(ClientError::Unauthenticated { reason: format!("{reason}; {UNAUTHENTICATED_HINT}") })
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
