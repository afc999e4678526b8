//! Client identities for tests: certificates issued by the cluster's own CA through
//! `distsync certs client`, the way an operator issues them, and clients and bare connections
//! that present them.

use std::path::PathBuf;

use anyhow::Context as _;
use distsync::{Client, ClientTls, NodeId};

use crate::{Cluster, RawConnection};

impl Cluster {
    /// Issues a client certificate for identity `name` with `distsync certs client` into the
    /// cluster's TLS directory; returns the certificate and key paths.
    ///
    /// # Errors
    ///
    /// When the command fails (a bad name, say).
    pub async fn issue_identity(&self, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let directory = self.tls_directory();
        let dir = directory.to_str().context("temporary directory path is not UTF-8")?;
        let output = self.run_binary(&["certs", "client", "--dir", dir, "--name", name]).await?;
        anyhow::ensure!(
            output.status.success(),
            "`distsync certs client --name {name}` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(self.identity_files(name))
    }

    /// Where `distsync certs client --name NAME` writes identity `name`'s certificate and key.
    fn identity_files(&self, name: &str) -> (PathBuf, PathBuf) {
        let directory = self.tls_directory();
        (directory.join(format!("{name}.pem")), directory.join(format!("{name}-key.pem")))
    }

    /// TLS settings that trust the cluster CA and present identity `name`'s certificate
    /// (issued first if it does not exist yet).
    ///
    /// # Errors
    ///
    /// As [`Cluster::issue_identity`].
    pub async fn identity_tls(&self, name: &str) -> anyhow::Result<ClientTls> {
        let (cert, key) = self.identity_files(name);
        if !cert.exists() {
            self.issue_identity(name).await?;
        }
        Ok(ClientTls::load(self.ca_path(), Some(&cert), Some(&key))?)
    }

    /// A client of the whole cluster with identity `name`.
    ///
    /// # Errors
    ///
    /// As [`Cluster::identity_tls`], or when no node answers.
    pub async fn client_as(&self, name: &str) -> anyhow::Result<Client> {
        let tls = self.identity_tls(name).await?;
        let endpoints: Vec<String> = self.endpoints();
        Client::connect_with(distsync::ClientOptions::new(endpoints, tls))
            .await
            .with_context(|| format!("cannot connect a client as {name}"))
    }

    /// The command line as identity `name`: `distsync --endpoints … --ca … --cert … --key … ARGS…`.
    ///
    /// # Errors
    ///
    /// When the binary cannot be run or does not finish in time.
    pub async fn run_cli_as(&self, name: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
        self.identity_tls(name).await?;
        let (cert, key) = self.identity_files(name);
        let utf8 = |path: &PathBuf| path.to_str().map(str::to_string).context("temporary directory path is not UTF-8");
        let (cert, key) = (utf8(&cert)?, utf8(&key)?);
        let mut full: Vec<&str> = vec!["--cert", &cert, "--key", &key];
        full.extend_from_slice(args);
        self.run_cli(&full).await
    }

    /// A bare connection to node `id` presenting `tls`'s certificate; see
    /// [`Cluster::raw_connection`].
    ///
    /// # Errors
    ///
    /// When the handshake fails on this side.
    pub async fn raw_connection_with(&self, id: NodeId, tls: &ClientTls) -> anyhow::Result<RawConnection> {
        RawConnection::open(&self.endpoint(id), tls).await.with_context(|| format!("cannot connect to node {id}"))
    }
}
