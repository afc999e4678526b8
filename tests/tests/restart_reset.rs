//! A node that restarts resets the connections its previous process held (QUIC stateless
//! resets, whose key the node keeps in its data directory), so that its clients and peers learn
//! at once that a connection is dead and dial again, instead of waiting out a timeout on it. Also
//! after the node's certificate and key were replaced, as every node's are in a CA rotation: a
//! key derived from the certificate's (as before) changed with it, and a client holding a
//! connection through the rotation waited out one attempt timeout per restarted node.

use std::time::Duration;

use anyhow::Context as _;
use distsync::wire::Request;
use distsync_cluster_tests::{Cluster, ClusterOptions, RawConnection};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Longer than the client connection's 5 s idle timeout, after which a connection whose resets
/// were ignored ends `TimedOut`.
const END_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_resets_the_connections_it_held_also_with_a_new_certificate() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let target = cluster.ids()[0];

    // A plain restart.
    let connection = open(cluster, target).await?;
    cluster.kill(target)?;
    cluster.restart(target).await?;
    expect_reset(&connection).await.context("after a plain restart")?;

    // A restart with a certificate and key of another CA, which every party trusts too (the
    // first step of a CA rotation made the CA file a bundle of both).
    let connection = open(cluster, target).await?;
    let tls = cluster.tls_directory();
    let other = cluster.directory().join("other-ca");
    let made =
        cluster.run_binary(&["certs", "init", "--dir", other.to_str().expect("UTF-8 path"), "--nodes", "3"]).await?;
    anyhow::ensure!(made.status.success(), "certs init: {}", String::from_utf8_lossy(&made.stderr));
    let bundle = [std::fs::read(tls.join("ca.pem"))?, std::fs::read(other.join("ca.pem"))?].concat();
    std::fs::write(tls.join("ca.pem"), bundle)?;
    for file in [format!("node-{target}.pem"), format!("node-{target}-key.pem")] {
        std::fs::copy(other.join(&file), tls.join(&file))?;
    }
    cluster.kill(target)?;
    cluster.restart(target).await?;
    expect_reset(&connection).await.context("after a restart with a new certificate and key")
}

/// A client connection to `id`, known to work.
async fn open(cluster: &Cluster, id: u64) -> anyhow::Result<RawConnection> {
    let connection = cluster.raw_connection(id).await?;
    connection.request(&Request::Status, Duration::from_secs(10)).await.context("status before the restart")?;
    Ok(connection)
}

/// Sends on `connection`, whose node restarted since: the new process must end it with a
/// stateless reset the connection accepts, not leave it to time out.
async fn expect_reset(connection: &RawConnection) -> anyhow::Result<()> {
    let sent = connection.request(&Request::Status, END_TIMEOUT).await;
    anyhow::ensure!(sent.is_err(), "a restarted node answered on its previous process's connection");
    let ended = tokio::time::timeout(END_TIMEOUT, connection.connection().closed())
        .await
        .context("the connection to the restarted node never ended")?;
    anyhow::ensure!(
        matches!(ended, quinn::ConnectionError::Reset),
        "the connection to the restarted node ended by {ended:?}, not by a stateless reset"
    );
    Ok(())
}
