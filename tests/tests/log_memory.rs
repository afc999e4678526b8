//! Memory is bounded by bytes, not by the length of the log. 600 MiB of 1 MiB queue puts, each
//! consumed and acked as it comes (so the queue, the state, stays small), pass through the log of
//! every node with default flags: each node's peak resident memory stays under 256 MiB (only a
//! tail of the log is kept in memory, and snapshots are taken by log bytes), and a node restarted
//! afterwards does not load the log back into memory.

use std::time::Duration;

use anyhow::Context as _;
use distsync::QueueOptions;
use distsync_cluster_tests::{Cluster, ClusterOptions};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);
const MESSAGES: usize = 600;
const MESSAGE_BYTES: usize = 1024 * 1024;
const PEAK_BYTES_MAX: u64 = 256 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_mib_through_the_log_leave_every_node_under_256_mib() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

fn peaks(cluster: &Cluster) -> anyhow::Result<Vec<(u64, u64)>> {
    cluster
        .ids()
        .into_iter()
        .map(|id| Ok((id, cluster.peak_memory_bytes(id).with_context(|| format!("node {id} is not running"))?)))
        .collect()
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let client = cluster.client().await?;
    let options = QueueOptions { max_message_bytes: MESSAGE_BYTES as u32, ..QueueOptions::default() };
    client.queue("bulk").create(options).await?;

    let consumer = {
        let queue = cluster.client().await?.queue("bulk");
        tokio::spawn(async move {
            for consumed in 0..MESSAGES {
                let delivery = queue
                    .get(Duration::from_secs(60))
                    .await?
                    .with_context(|| format!("no message for a minute after {consumed}"))?;
                anyhow::ensure!(delivery.body.len() == MESSAGE_BYTES, "a whole body");
                delivery.ack().await?;
            }
            Ok(())
        })
    };
    let queue = client.queue("bulk");
    for number in 0..MESSAGES {
        queue.put(vec![number as u8; MESSAGE_BYTES]).await.with_context(|| format!("put {number}"))?;
    }
    consumer.await??;
    let stats = queue.stats().await?;
    assert_eq!((stats.depth, stats.in_flight), (0, 0), "everything was consumed: {stats:?}");
    cluster.wait_applied_equal(&cluster.ids(), CONVERGE_TIMEOUT).await?;

    let after_load = peaks(cluster)?;
    eprintln!("peak resident memory after {MESSAGES} MiB: {after_load:?}");
    for (id, peak) in &after_load {
        assert!(*peak < PEAK_BYTES_MAX, "node {id} peaked at {} MiB", peak >> 20);
    }

    // A restarted node reads its log back without holding it.
    let restarted = cluster.ids()[0];
    cluster.kill(restarted)?;
    cluster.restart(restarted).await?;
    client.kv().put("after", "restart").await?;
    cluster.wait_applied_equal(&cluster.ids(), CONVERGE_TIMEOUT).await?;
    let peak = cluster.peak_memory_bytes(restarted).context("restarted node runs")?;
    eprintln!("peak resident memory of node {restarted} after its restart: {} MiB", peak >> 20);
    assert!(peak < PEAK_BYTES_MAX, "node {restarted} peaked at {} MiB after its restart", peak >> 20);
    Ok(())
}
