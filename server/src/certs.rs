//! `distsync certs init`: a cluster CA, node certificates and the admin's client certificate;
//! `distsync certs client`: a client certificate for one identity.
//!
//! Names carried by the certificates, which the transport checks:
//! - every node: `distsync` (what clients verify), `node-N.distsync` (which node it is) and
//!   `peer.distsync` (allowed to speak the peer protocol); plus `localhost` and 127.0.0.1;
//! - a client certificate: `NAME.client.distsync` only, naming its identity, so it cannot join
//!   the cluster. `certs init` makes one for `admin` as `client.pem`.

use std::path::{Path, PathBuf};

use distsync::wire::{ADMIN_IDENTITY, CLIENT_NAME_SUFFIX};
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
    let issuer = if paths.ca().exists() && paths.ca_key().exists() {
        load_issuer(&paths)?
    } else {
        let key = KeyPair::generate()?;
        let certificate = ca_params()?.self_signed(&key)?;
        write_private(&paths.ca_key(), &key.serialize_pem())?;
        std::fs::write(paths.ca(), certificate.pem())?;
        Issuer::new(ca_params()?, key)
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
        let (certificate, key) = client_certificate(&issuer, ADMIN_IDENTITY, None)?;
        write_private(&paths.client_key(), &key)?;
        std::fs::write(paths.client(), certificate)?;
    }
    Ok(())
}

/// Issues a client certificate for identity `name` from the CA in `directory`, valid for `days`
/// (default: rcgen's, far in the future), as `DIR/NAME.pem` and `DIR/NAME-key.pem`; returns
/// the two paths. An existing pair is replaced (re-issuing, e.g. after a CA rotation).
///
/// # Errors
///
/// A bad name, a missing CA key, or files that cannot be written.
pub fn issue_client(directory: &Path, name: &str, days: Option<u32>) -> anyhow::Result<(PathBuf, PathBuf)> {
    distsync::wire::validate_identity(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let paths = TlsPaths::new(directory);
    anyhow::ensure!(
        paths.ca_key().exists(),
        "{} is missing: client certificates are issued where the CA key is (run `distsync certs init` first)",
        paths.ca_key().display()
    );
    let issuer = load_issuer(&paths)?;
    let (certificate, key) = client_certificate(&issuer, name, days)?;
    let (cert_path, key_path) = (directory.join(format!("{name}.pem")), directory.join(format!("{name}-key.pem")));
    write_private(&key_path, &key)?;
    std::fs::write(&cert_path, certificate)?;
    Ok((cert_path, key_path))
}

/// The CA's parameters. They are fixed, so an existing CA is rebuilt from its key alone:
/// certificates signed later name the same issuer with the same key and chain to the same ca.pem.
fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "distsync cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

fn load_issuer(paths: &TlsPaths) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let key = KeyPair::from_pem(&std::fs::read_to_string(paths.ca_key())?)?;
    Ok(Issuer::new(ca_params()?, key))
}

/// A client certificate naming `identity` (PEM), with its private key (PEM).
fn client_certificate(
    issuer: &Issuer<'static, KeyPair>,
    identity: &str,
    days: Option<u32>,
) -> anyhow::Result<(String, String)> {
    let mut params = CertificateParams::new(vec![format!("{identity}{CLIENT_NAME_SUFFIX}")])?;
    params.distinguished_name.push(DnType::CommonName, format!("distsync client {identity}"));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if let Some(days) = days {
        anyhow::ensure!(days >= 1, "--days must be at least 1");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(i64::from(days));
    }
    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, issuer)?;
    Ok((certificate.pem(), key.serialize_pem()))
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(pem.as_bytes())?;
    Ok(())
}
