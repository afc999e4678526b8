//! `distsync certs init`: a cluster CA, node certificates and a client certificate.
//!
//! Names carried by the certificates, which the transport checks:
//! - every node: `distsync` (what clients verify), `node-N.distsync` (which node it is) and
//!   `peer.distsync` (allowed to speak the peer protocol); plus `localhost` and 127.0.0.1;
//! - the client certificate: `client.distsync` only, so it cannot join the cluster.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// DNS name every node certificate carries to mark it as a cluster member.
pub const PEER_NAME: &str = "peer.distsync";

/// The DNS name identifying node `id`.
pub fn node_name(id: u64) -> String {
    format!("node-{id}.distsync")
}

/// Paths of the files in a TLS directory.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    directory: PathBuf,
}

impl TlsPaths {
    /// The files in `directory`.
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        Self { directory: directory.into() }
    }
    /// The CA certificate clients and nodes trust.
    pub fn ca(&self) -> PathBuf {
        self.directory.join("ca.pem")
    }
    /// The CA's private key (keep it offline in production).
    pub fn ca_key(&self) -> PathBuf {
        self.directory.join("ca-key.pem")
    }
    /// Node `id`'s certificate.
    pub fn node(&self, id: u64) -> PathBuf {
        self.directory.join(format!("node-{id}.pem"))
    }
    /// Node `id`'s private key.
    pub fn node_key(&self, id: u64) -> PathBuf {
        self.directory.join(format!("node-{id}-key.pem"))
    }
    /// The client certificate.
    pub fn client(&self) -> PathBuf {
        self.directory.join("client.pem")
    }
    /// The client's private key.
    pub fn client_key(&self) -> PathBuf {
        self.directory.join("client-key.pem")
    }
}

/// Creates the CA (or reuses the one in `directory`) and certificates for nodes `1..=nodes` and
/// one client. Existing node certificates are kept, so adding nodes later is safe.
///
/// # Errors
///
/// When files cannot be written or an existing CA cannot be read.
pub fn init(directory: &Path, nodes: u64) -> anyhow::Result<()> {
    anyhow::ensure!(nodes >= 1, "--nodes must be at least 1");
    std::fs::create_dir_all(directory)?;
    let paths = TlsPaths::new(directory);
    // The CA's parameters are fixed, so an existing CA is rebuilt from its key alone: certificates
    // signed later name the same issuer with the same key and chain to the same ca.pem.
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "distsync cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = if paths.ca().exists() && paths.ca_key().exists() {
        let key = KeyPair::from_pem(&std::fs::read_to_string(paths.ca_key())?)?;
        Issuer::new(params, key)
    } else {
        let key = KeyPair::generate()?;
        let certificate = params.self_signed(&key)?;
        write_private(&paths.ca_key(), &key.serialize_pem())?;
        std::fs::write(paths.ca(), certificate.pem())?;
        Issuer::new(params, key)
    };
    for id in 1..=nodes {
        if paths.node(id).exists() && paths.node_key(id).exists() {
            continue;
        }
        let names = vec![
            distsync::tls::SERVER_NAME.to_string(),
            node_name(id),
            PEER_NAME.to_string(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ];
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, node_name(id));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &issuer)?;
        write_private(&paths.node_key(id), &key.serialize_pem())?;
        std::fs::write(paths.node(id), certificate.pem())?;
    }
    if !paths.client().exists() {
        let mut params = CertificateParams::new(vec!["client.distsync".to_string()])?;
        params.distinguished_name.push(DnType::CommonName, "distsync client");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &issuer)?;
        write_private(&paths.client_key(), &key.serialize_pem())?;
        std::fs::write(paths.client(), certificate.pem())?;
    }
    Ok(())
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(pem.as_bytes())?;
    Ok(())
}
