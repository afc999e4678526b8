//! A cluster moves from one CA to another without downtime, node by node, while a client holds
//! a lock and keeps writing: first every node trusts both CAs (a bundle in `ca.pem`), then nodes
//! and the client get certificates of the new CA, then the old CA is dropped. The client never
//! restarts (it reads its TLS files again for each new connection), never loses its lock, and
//! every write it makes succeeds; afterwards a certificate of the old CA is refused.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distsync::{Client, ClientError, ClientOptions, ClientTls};
use distsync_cluster_tests::{Cluster, ClusterOptions};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_moves_to_a_new_ca_node_by_node_while_a_client_holds_a_lock_and_writes() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let tls = cluster.tls_directory();
    let old = cluster.directory().join("old-ca");
    let new = cluster.directory().join("new-ca");
    std::fs::create_dir_all(&old)?;
    for file in ["ca.pem", "client.pem", "client-key.pem"] {
        std::fs::copy(tls.join(file), old.join(file))?;
    }
    let new_dir = new.to_str().expect("UTF-8 path");
    let made = cluster.run_binary(&["certs", "init", "--dir", new_dir, "--nodes", "3"]).await?;
    anyhow::ensure!(made.status.success(), "certs init: {}", String::from_utf8_lossy(&made.stderr));

    // The client trusts and presents what the files in the cluster's TLS directory say.
    let client = cluster.client().await?;
    let guard = client.lock("rotation").acquire().await?;
    let token = guard.token();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(client.clone(), stop.clone()));

    // 1. Every node and the client trust both CAs.
    let bundle = [std::fs::read(old.join("ca.pem"))?, std::fs::read(new.join("ca.pem"))?].concat();
    replace(&tls.join("ca.pem"), &bundle)?;
    rolling_restart(cluster).await?;
    // 2. Nodes and the client get certificates of the new CA.
    for id in cluster.ids() {
        for file in [format!("node-{id}.pem"), format!("node-{id}-key.pem")] {
            replace(&tls.join(&file), &std::fs::read(new.join(&file))?)?;
        }
    }
    for file in ["client.pem", "client-key.pem"] {
        replace(&tls.join(file), &std::fs::read(new.join(file))?)?;
    }
    rolling_restart(cluster).await?;
    // 3. The old CA goes.
    replace(&tls.join("ca.pem"), &std::fs::read(new.join("ca.pem"))?)?;
    rolling_restart(cluster).await?;

    stop.store(true, Ordering::Relaxed);
    let written = writer.await??;
    assert!(written > 0, "the client wrote during the rotation");
    assert!(guard.is_held(), "the lock was lost during the rotation");
    let show = client.lock_show("rotation").await?.expect("the lock is held");
    assert_eq!(show.holders[0].token, token, "the same grant throughout");
    guard.release().await?;
    client.kv().put("after", "rotation").await?;
    client.close().await;

    // The old CA's client certificate is refused now.
    let stale = ClientTls::load(tls.join("ca.pem"), Some(&old.join("client.pem")), Some(&old.join("client-key.pem")))?;
    match Client::connect_with(ClientOptions::new(cluster.endpoints(), stale)).await {
        Err(ClientError::Unauthenticated { .. }) => Ok(()),
        Err(other) => anyhow::bail!("the old CA's certificate: expected Unauthenticated, got {other:?}"),
        Ok(_) => anyhow::bail!("the old CA's certificate was accepted after the rotation"),
    }
}

/// Writes one key after another until `stop`; every write must succeed. Returns how many.
async fn write_until(client: Client, stop: Arc<AtomicBool>) -> anyhow::Result<u64> {
    let mut written = 0;
    while !stop.load(Ordering::Relaxed) {
        client.kv().put(format!("during/{written}"), "x").await?;
        written += 1;
    }
    Ok(written)
}

/// Restarts each node in turn, waiting for a leader among all nodes before the next.
async fn rolling_restart(cluster: &Cluster) -> anyhow::Result<()> {
    for id in cluster.ids() {
        cluster.kill(id)?;
        cluster.restart(id).await?;
        cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    }
    Ok(())
}

/// Replaces `path` with `contents` at once (write beside, then rename), as an operator's
/// deployment tool would: a reader sees the old file or the new one, never half of one.
fn replace(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, contents)?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}
