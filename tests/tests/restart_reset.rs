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
/// The test's connections end after this long without a word from the node (a client's end
/// after 5 s; this is the node's own idle timeout, which bounds what a client may ask): long
/// enough for a node to restart on a loaded machine, so that a connection ending `TimedOut`
/// means its resets were not sent or not accepted, not that the node was slow to start.
const IDLE_TIMEOUT: Duration = distsync::quic::IDLE_TIMEOUT;
/// Longer than [`IDLE_TIMEOUT`]: the connection has ended one way or the other by then.
const END_TIMEOUT: Duration = Duration::from_secs(90);

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

    // A restart with a certificate and key of another CA, with a CA file that trusts both (as
    // in a CA rotation). The other nodes were not restarted to trust it, so the target is cut
    // off from them afterwards: this test needs only its answer to the old connection.
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
    let connection = cluster.patient_raw_connection(id, IDLE_TIMEOUT).await?;
    connection.request(&Request::Status, Duration::from_secs(10)).await.context("status before the restart")?;
    Ok(connection)
}

/// `connection`, whose node restarted since, must have been ended by the new process with a
/// stateless reset it accepted (its keep-alives reach the new process), not left to time out.
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
