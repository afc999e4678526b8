//! A follower killed while the other two keep committing, and whose missing entries the leader
//! has meanwhile compacted into a snapshot (`--snapshot-threshold 50`), catches up when it comes
//! back: it installs the leader's snapshot, reaches the same applied index and state digest as
//! the others, holds the same number of keys, and serves clients that know only it.
//!
//! A follower that comes back to 10 MB of missing log in 200 KiB entries catches up too, although
//! each AppendEntries frame takes longer than the 50 ms openraft waits for one (the frames go on
//! beyond openraft's wait, see `PeerNetwork::append_entries`). Then it forms the majority with the
//! leader, the other follower killed, and every message comes back intact.

use std::time::Duration;

use anyhow::Context as _;
use distsync::{QueueOptions, Role};
use distsync_cluster_tests::{Cluster, ClusterOptions};

const SNAPSHOT_THRESHOLD: u64 = 50;
const WRITES: u64 = 300;

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_follower_catches_up_through_a_snapshot() -> anyhow::Result<()> {
    let cluster =
        Cluster::start(3, ClusterOptions { snapshot_threshold: Some(SNAPSHOT_THRESHOLD), ..ClusterOptions::default() })
            .await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_follower_catches_up_on_large_entries() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = large_entries(&cluster).await;
    cluster.finish(outcome)
}

const LARGE_MESSAGES: usize = 50;
const LARGE_BYTES: usize = 200 * 1024;

async fn large_entries(cluster: &Cluster) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let mut followers = cluster.ids().into_iter().filter(|&id| id != leader);
    let (follower, other) = (followers.next().context("a follower")?, followers.next().context("two followers")?);
    cluster.kill(follower)?;

    let client = cluster.client_for(&[leader, other]).await?;
    let queue = client.queue("large");
    queue.create(QueueOptions::default()).await.context("creating the queue")?;
    let body = |index: usize| vec![index as u8; LARGE_BYTES];
    for index in 0..LARGE_MESSAGES {
        queue.put(body(index)).await.with_context(|| format!("put {index} with node {follower} down"))?;
    }

    let written = cluster.status(leader).await?.committed;
    cluster.restart(follower).await?;
    // Not `wait_applied_equal`: the digest of 10 MB of state, asked of every node every 100 ms,
    // slows a debug build enough that idle ticks keep the applied indexes apart.
    cluster.wait_applied(follower, written, CATCH_UP_TIMEOUT).await?;
    // Only the restarted follower can now make a majority with the leader.
    cluster.kill(other)?;
    let client = cluster.client_for(&[leader, follower]).await?;
    let queue = client.queue("large");
    for index in 0..LARGE_MESSAGES {
        let delivery = queue
            .get(CATCH_UP_TIMEOUT)
            .await
            .with_context(|| format!("get {index} with node {other} down"))?
            .with_context(|| format!("message {index} is missing"))?;
        assert!(delivery.body == body(index), "message {index} came back altered");
        delivery.ack().await.with_context(|| format!("ack {index}"))?;
    }
    Ok(())
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let follower = cluster.ids().into_iter().find(|&id| id != leader).context("three nodes have a follower")?;
    let live: Vec<u64> = cluster.ids().into_iter().filter(|&id| id != follower).collect();
    let before_kill = cluster.status(follower).await?;
    cluster.kill(follower)?;

    let client = cluster.client_for(&live).await?;
    for index in 0..WRITES {
        client
            .kv()
            .put(key(index), value(index))
            .await
            .with_context(|| format!("put {} with node {follower} down", key(index)))?;
    }
    let leader_status = cluster.status(cluster.wait_for_leader(&live, ELECTION_TIMEOUT).await?).await?;
    assert!(
        leader_status.snapshot > before_kill.applied,
        "the leader compacted nothing the follower misses (snapshot {}, follower applied {}), \
         so this test would not exercise snapshot transfer",
        leader_status.snapshot,
        before_kill.applied
    );

    cluster.restart(follower).await?;
    let statuses = cluster.wait_applied_equal(&cluster.ids(), CATCH_UP_TIMEOUT).await?;
    let restarted = statuses.iter().find(|s| s.id == follower).context("the follower's status")?;
    let reference =
        statuses.iter().find(|s| s.role == Role::Leader).or_else(|| statuses.iter().find(|s| s.id != follower));
    let reference = reference.context("another node's status")?;
    assert_eq!(restarted.keys, reference.keys, "the restarted follower holds a different number of keys");
    assert_eq!(restarted.keys, WRITES, "every key written while the follower was down");
    assert!(restarted.snapshot > 0, "the restarted follower has no snapshot: {restarted:?}");
    // Received from the leader, not taken by the follower itself after replaying entries: the
    // log of its second run says so (the line `install_snapshot` writes).
    let log = std::fs::read_to_string(cluster.log_path(follower))?;
    let second_run = log.rsplit(&format!("starting node {follower} ")).next().unwrap_or_default();
    assert!(
        second_run.contains("snapshot installed from the leader"),
        "the restarted follower caught up without installing the leader's snapshot"
    );

    let through_follower = cluster.client_for(&[follower]).await?;
    for index in [0, WRITES / 2, WRITES - 1] {
        let read = through_follower.kv().get(key(index)).await.with_context(|| format!("reading {}", key(index)))?;
        assert_eq!(read, Some(value(index).into_bytes()), "{} through node {follower}", key(index));
    }
    Ok(())
}

fn key(index: u64) -> String {
    format!("key-{index}")
}

fn value(index: u64) -> String {
    format!("value-{index}")
}
