//! [`ClientOptions`]: how a client behaves, every field with a default.

use std::time::Duration;

use crate::tls::ClientTls;

#[allow(unused_imports)] // for intra-doc links
use super::Client;

/// How a [`Client`] behaves; every field has a sensible default.
///
/// ```no_run
/// # async fn example() -> Result<(), distsync::ClientError> {
/// use std::time::Duration;
/// use distsync::{Client, ClientOptions, ClientTls};
///
/// let options = ClientOptions::new(["127.0.0.1:7101", "127.0.0.1:7102"], ClientTls::from_ca_file("tls/ca.pem")?)
///     .session_ttl(Duration::from_secs(5))
///     .request_timeout(Duration::from_secs(3));
/// let client = Client::connect_with(options).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub(crate) endpoints: Vec<String>,
    pub(crate) tls: ClientTls,
    pub(crate) session_ttl: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) attempt_timeout: Duration,
    pub(crate) home: Option<String>,
}

impl ClientOptions {
    /// Options for these endpoints (`host:port` of any nodes of the cluster) and TLS settings.
    pub fn new<I, S>(endpoints: I, tls: ClientTls) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            endpoints: endpoints.into_iter().map(|e| e.as_ref().to_string()).collect(),
            tls,
            session_ttl: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(3),
            home: None,
        }
    }

    /// The node this client sends all cache requests to, one of the endpoints. Each node keeps
    /// its own cache, so a client that stays with one node finds its copies there (including
    /// those of values it wrote). Default: none; each key's requests go to the endpoint its hash
    /// picks, so every node caches its share of the keys and the nodes' caches add up instead of
    /// holding the same hot keys three times. Either way, when the chosen node fails, the
    /// client moves on to the next endpoint.
    pub fn home(mut self, endpoint: impl AsRef<str>) -> Self {
        self.home = Some(endpoint.as_ref().to_string());
        self
    }

    /// How long the cluster keeps this client's session (and later its locks) after the client
    /// falls silent. Default 10 s; between 1 s and 1 h.
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// The deadline of one call, across all its retries and redirects. Default 10 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long one attempt against one node may take before the client tries elsewhere.
    /// Default 3 s, longer than a node's own commit timeout (2 s) so that a node's answer wins.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }
}
