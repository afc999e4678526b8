//! A node serves clients only with a client certificate signed by the cluster CA: a client
//! with no certificate, with one from another CA, with an expired one, or with a node's
//! certificate is refused during (or right after) the handshake, and the Rust client and the
//! command line report it at once as a typed `Unauthenticated` error that says what to do, not as
//! a timeout. The node keeps serving the admin client afterwards.

use std::path::{Path, PathBuf};
use std::time::Duration;

use distsync::{Client, ClientError, ClientOptions, ClientTls};
use distsync_cluster_tests::{Cluster, ClusterOptions};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_valid_certificate_are_refused_with_a_clear_error() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let tls = cluster.tls_directory();
    let ca_pem = std::fs::read(cluster.ca_path())?;
    let work = cluster.directory().join("certificates");
    std::fs::create_dir_all(&work)?;

    // No certificate at all: the CA alone, nothing beside it.
    let bare = ClientTls::from_ca_pem(&ca_pem)?;
    expect_refused(cluster, bare, "no client certificate", "asked for a client certificate").await?;

    // A certificate from another CA, naming the admin identity.
    let stranger = Issuer::new(ca_params(), KeyPair::generate()?);
    let (cert, key) = client_certificate(&work, "stranger", &stranger, false)?;
    let foreign = ClientTls::from_ca_pem(&ca_pem)?.with_client_certificate(&cert, &key)?;
    expect_refused(cluster, foreign, "another CA's certificate", "refused the client certificate").await?;

    // An expired certificate from the cluster's own CA.
    let own = Issuer::new(ca_params(), KeyPair::from_pem(&std::fs::read_to_string(tls.join("ca-key.pem"))?)?);
    let (cert, key) = client_certificate(&work, "expired", &own, true)?;
    let expired = ClientTls::from_ca_pem(&ca_pem)?.with_client_certificate(&cert, &key)?;
    expect_refused(cluster, expired, "an expired certificate", "refused the client certificate").await?;

    // A node's certificate (CA-signed, but a member's, not a client's).
    let node =
        ClientTls::from_ca_pem(&ca_pem)?.with_client_certificate(tls.join("node-2.pem"), tls.join("node-2-key.pem"))?;
    expect_refused(cluster, node, "a node's certificate", "node's certificate cannot be used as a client").await?;

    // The same certificate of the cluster's CA, made here, is accepted: the refusals above are
    // about the certificates, not about certificates made by this test.
    let (cert, key) = client_certificate(&work, "fresh", &own, false)?;
    let fresh = ClientTls::from_ca_pem(&ca_pem)?.with_client_certificate(&cert, &key)?;
    let client = Client::connect_with(ClientOptions::new(cluster.endpoints(), fresh)).await?;
    client.kv().put("made-here", "1").await?;
    client.close().await;

    // The command line says the same and what to do, on stderr, with a failure status.
    let lonely = work.join("lonely");
    std::fs::create_dir_all(&lonely)?;
    std::fs::copy(cluster.ca_path(), lonely.join("ca.pem"))?;
    let endpoints = cluster.endpoints().join(",");
    let ca = lonely.join("ca.pem");
    let args = ["--endpoints", &endpoints, "--ca", ca.to_str().unwrap(), "kv", "get", "made-here"];
    let output = cluster.run_binary(&args).await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the CLI without a certificate succeeded");
    assert!(stderr.contains("pass --cert and --key"), "the CLI's message says what to do: {stderr}");

    // The node kept serving.
    let admin = cluster.client().await?;
    assert_eq!(admin.kv().get("made-here").await?, Some(b"1".to_vec()));
    admin.close().await;
    Ok(())
}

/// Connecting with `tls` must fail with `Unauthenticated` naming `expected`, and say what to do.
async fn expect_refused(cluster: &Cluster, tls: ClientTls, case: &str, expected: &str) -> anyhow::Result<()> {
    // A long request timeout: if the refusal were retried as an outage, the call would end in
    // `Unavailable` after it, which the match below refuses.
    let options = ClientOptions::new(cluster.endpoints(), tls).request_timeout(Duration::from_secs(30));
    match Client::connect_with(options).await {
        Err(ClientError::Unauthenticated { reason }) => {
            assert!(reason.contains(expected), "{case}: the reason names the refusal: {reason}");
            assert!(reason.contains("distsync certs client"), "{case}: the reason says what to do: {reason}");
            Ok(())
        }
        Err(other) => anyhow::bail!("{case}: expected Unauthenticated, got {other:?}"),
        Ok(_) => anyhow::bail!("{case}: the cluster accepted the client"),
    }
}

/// The parameters `distsync certs init` gives its CA.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.distinguished_name.push(DnType::CommonName, "distsync cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A client certificate for the admin identity signed by `issuer`; an `expired` one was valid
/// in 2020 only.
fn client_certificate(
    directory: &Path,
    file: &str,
    issuer: &Issuer<'static, KeyPair>,
    expired: bool,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut params = CertificateParams::new(vec!["admin.client.distsync".to_string()])?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, issuer)?;
    let (cert_path, key_path) = (directory.join(format!("{file}.pem")), directory.join(format!("{file}-key.pem")));
    std::fs::write(&cert_path, certificate.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    Ok((cert_path, key_path))
}
