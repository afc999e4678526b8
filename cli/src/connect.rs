//! The global options every command that talks to a cluster shares, and the clients made from
//! them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use distsync::{Client, ClientOptions, ClientTls};

/// Which cluster to talk to, and how.
#[derive(Args)]
pub(crate) struct Target {
    /// Cluster nodes to talk to, `HOST:PORT,HOST:PORT,...` (any subset will do).
    #[arg(long, global = true, env = "DISTSYNC_ENDPOINTS", value_delimiter = ',')]
    pub(crate) endpoints: Vec<String>,
    /// The cluster CA certificate (`ca.pem` from `distsync certs init`; a file of several CAs
    /// trusts each, as during a CA rotation).
    #[arg(long, global = true, env = "DISTSYNC_CA")]
    pub(crate) ca: Option<PathBuf>,
    /// This client's certificate, naming its identity (from `distsync certs client`). Default:
    /// `client.pem` beside the --ca file (the admin identity of `distsync certs init`).
    #[arg(
        long = "cert",
        id = "client_cert",
        value_name = "FILE",
        global = true,
        env = "DISTSYNC_CERT",
        requires = "client_key"
    )]
    pub(crate) cert: Option<PathBuf>,
    /// The private key of --cert. Default: `client-key.pem` beside the --ca file.
    // Its own id: commands have a KEY argument of their own.
    #[arg(
        long = "key",
        id = "client_key",
        value_name = "FILE",
        global = true,
        env = "DISTSYNC_KEY",
        requires = "client_cert"
    )]
    pub(crate) key: Option<PathBuf>,
    /// Session TTL in seconds: how long the cluster keeps this command's locks after it falls
    /// silent (crashed, cut off). Between 1 and 3600.
    #[arg(long, global = true, env = "DISTSYNC_SESSION_TTL", default_value_t = 10.0)]
    pub(crate) session_ttl: f64,
    /// How long one attempt on one node may take, in seconds, before the command tries again
    /// (another node, or the same after a pause). A node that is down costs nothing while
    /// another answers: a command dials every endpoint at once and uses the first to answer.
    #[arg(long, global = true, env = "DISTSYNC_ATTEMPT_TIMEOUT", default_value_t = 3.0)]
    pub(crate) attempt_timeout: f64,
}

impl Target {
    /// The TLS settings: trust the `--ca`, present `--cert` (or the certificate beside the CA).
    pub(crate) fn tls(&self) -> anyhow::Result<ClientTls> {
        let ca =
            self.ca.as_deref().context("give the cluster CA with --ca FILE (the ca.pem from `distsync certs init`)")?;
        Ok(ClientTls::load(ca, self.cert.as_deref(), self.key.as_deref())?)
    }

    /// The endpoints, refused when none were given.
    pub(crate) fn endpoints(&self) -> anyhow::Result<&[String]> {
        anyhow::ensure!(!self.endpoints.is_empty(), "give the cluster with --endpoints A,B,C");
        Ok(&self.endpoints)
    }

    /// What a benchmark against a running cluster needs: the TLS settings and the endpoints.
    pub(crate) fn running_cluster(&self) -> anyhow::Result<(ClientTls, &[String])> {
        Ok((self.tls()?, self.endpoints()?))
    }

    /// A client that asks each node on its own (status and inspection, which must work when
    /// most of the cluster is down).
    pub(crate) fn unconnected(&self) -> anyhow::Result<Client> {
        self.unconnected_to(self.endpoints()?)
    }

    /// Like [`Target::unconnected`], for these endpoints.
    pub(crate) fn unconnected_to(&self, endpoints: &[String]) -> anyhow::Result<Client> {
        anyhow::ensure!(!endpoints.is_empty(), "give the cluster with --endpoints A,B,C");
        let options = ClientOptions::new(endpoints, self.tls()?).attempt_timeout(Duration::from_secs(2));
        Ok(Client::new_unconnected(options)?)
    }

    /// A client of the cluster, with this command's session TTL.
    pub(crate) async fn connect(&self) -> anyhow::Result<Client> {
        self.connect_via(None).await
    }

    /// Connects with `home` (one of the endpoints) as the node cache requests go through.
    pub(crate) async fn connect_via(&self, home: Option<&str>) -> anyhow::Result<Client> {
        let endpoints = self.endpoints()?;
        let session_ttl = self.session_ttl;
        anyhow::ensure!(
            session_ttl.is_finite() && (1.0..=3600.0).contains(&session_ttl),
            "--session-ttl must be between 1 and 3600 seconds"
        );
        let attempt_timeout = self.attempt_timeout;
        anyhow::ensure!(
            attempt_timeout.is_finite() && (0.01..=600.0).contains(&attempt_timeout),
            "--attempt-timeout must be between 0.01 and 600 seconds"
        );
        let mut options = ClientOptions::new(endpoints, self.tls()?)
            .session_ttl(Duration::from_secs_f64(session_ttl))
            .attempt_timeout(Duration::from_secs_f64(attempt_timeout));
        if let Some(home) = home {
            options = options.home(home);
        }
        Client::connect_with(options)
            .await
            .with_context(|| format!("cannot reach the cluster at {}", endpoints.join(",")))
    }
}
