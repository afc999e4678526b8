//! Memory is bounded by bytes, not by the length of the log. 600 MiB of 1 MiB queue puts, each
//! consumed and acked as it comes (so the queue, the state, stays small), pass through the log of
//! every node with default flags: each node's peak resident memory stays under 256 MiB (only a
//! tail of the log is kept in memory, and snapshots are taken by log bytes), and a node restarted
//! afterwards does not load the log back into memory. A leader restarted with 300 MiB of
//! committed log after its snapshot replays it, and sends its followers what they lack, within
//! the same bound (openraft reads up to 1,024 entries at once to send, and re-applies 64 at once).

use std::time::Duration;

use anyhow::Context as _;
use distsync::QueueOptions;
use distsync_cluster_tests::{Cluster, ClusterOptions};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);
const MESSAGE_BYTES: usize = 1024 * 1024;
const PEAK_BYTES_MAX: u64 = 256 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_mib_through_the_log_leave_every_node_under_256_mib() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = through_the_log(&cluster, 600, Restart::Follower).await;
    cluster.finish(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_replays_300_mib_of_log_under_256_mib() -> anyhow::Result<()> {
    // No snapshot is taken (300 entries, 300 MiB, are below both triggers), so the restarted
    // leader re-applies every entry from its log.
    let options = ClusterOptions {
        node_args: vec!["--snapshot-log-bytes".into(), (1u64 << 30).to_string()],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(3, options).await?;
    let outcome = through_the_log(&cluster, 300, Restart::Leader).await;
    cluster.finish(outcome)
}

/// Which node is restarted after the load.
#[derive(Clone, Copy, Debug)]
enum Restart {
    Leader,
    Follower,
}

fn peaks(cluster: &Cluster) -> anyhow::Result<Vec<(u64, u64)>> {
    cluster
        .ids()
        .into_iter()
        .map(|id| Ok((id, cluster.peak_memory_bytes(id).with_context(|| format!("node {id} is not running"))?)))
        .collect()
}

/// Puts `messages` MiB through a queue whose consumer acks each as it comes, checks every node's
/// peak memory, then restarts one node and checks its peak again.
async fn through_the_log(cluster: &Cluster, messages: usize, restart: Restart) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let client = cluster.client().await?;
    let options = QueueOptions { max_message_bytes: MESSAGE_BYTES as u32, ..QueueOptions::default() };
    client.queue("bulk").create(options).await?;

    let consumer = {
        let queue = cluster.client().await?.queue("bulk");
        tokio::spawn(async move {
            for consumed in 0..messages {
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
    for number in 0..messages {
        queue.put(vec![number as u8; MESSAGE_BYTES]).await.with_context(|| format!("put {number}"))?;
    }
    consumer.await??;
    let stats = queue.stats().await?;
    assert_eq!((stats.depth, stats.in_flight), (0, 0), "everything was consumed: {stats:?}");
    cluster.wait_applied_equal(&cluster.ids(), CONVERGE_TIMEOUT).await?;

    let after_load = peaks(cluster)?;
    eprintln!("peak resident memory after {messages} MiB: {after_load:?}");
    for (id, peak) in &after_load {
        assert!(*peak < PEAK_BYTES_MAX, "node {id} peaked at {} MiB", peak >> 20);
    }

    // A restarted node reads its log back without holding it.
    let leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let restarted = match restart {
        Restart::Leader => leader,
        Restart::Follower => cluster.ids().into_iter().find(|&id| id != leader).expect("three nodes"),
    };
    cluster.kill(restarted)?;
    cluster.restart(restarted).await?;
    client.kv().put("after", "restart").await?;
    cluster.wait_applied_equal(&cluster.ids(), CONVERGE_TIMEOUT).await?;
    if let Restart::Leader = restart {
        // The restart re-applied its committed log (no snapshot was taken): what is measured.
        let log = std::fs::read_to_string(cluster.log_path(restarted))?;
        let replayed = log.lines().rev().find(|line| line.contains("re-applied the committed log"));
        let entries = replayed.and_then(|line| line.split("entries=").nth(1)?.split_whitespace().next()?.parse().ok());
        assert!(entries.is_some_and(|entries: u64| entries >= messages as u64), "replayed: {replayed:?}");
    }
    // A new leader (the restarted one, or another after an election) probes what each follower
    // lacks, and sends it: every node is checked again.
    let after_restart = peaks(cluster)?;
    eprintln!("peak resident memory after node {restarted} ({restart:?}) restarted: {after_restart:?}");
    for (id, peak) in &after_restart {
        assert!(*peak < PEAK_BYTES_MAX, "node {id} peaked at {} MiB after node {restarted} restarted", peak >> 20);
    }
    Ok(())
}
