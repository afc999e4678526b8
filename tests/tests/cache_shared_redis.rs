//! Two clusters created one after the other on the same Redis never see each other's values.
//!
//! Cache versions are revisions of one cluster's log. Before keys were namespaced by the
//! cluster's random id, a cluster re-created from empty data directories wrote version 1 of a
//! key that the first cluster had left in Redis at a higher version: the write-back script
//! skipped it, and once the node's copy was gone the old cluster's value was served.
//!
//! - Cluster A writes `user` many times (a high version), waits for write-back, stops.
//! - Cluster B, fresh directories, same Redis, writes `user` once (a lower version), waits for
//!   write-back, restarts its node so the next read must come from Redis: it reads B's value.
//!   Its cluster id differs from A's, A's value is still in Redis under A's id, and B counts no
//!   skipped write-back.
//! - A foreign writer puts a newer version of `alien` into B's namespace: B's write-back of
//!   `alien` is skipped, counted in `write_back_skipped` and logged.

use std::time::{Duration, Instant};

use distsync::Client;
use distsync_cluster_tests::{Cluster, ClusterOptions, Redis};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_sharing_a_redis_never_read_each_others_values() -> anyhow::Result<()> {
    let redis = Redis::start().await?;
    let options = || ClusterOptions { redis: Some(redis.url()), ..ClusterOptions::default() };

    let first = Cluster::start(1, options()).await?;
    let outcome = write_and_settle(&first, &redis, "from-a", 20).await;
    let (first_id, first_version) = first.finish(outcome)?;

    let second = Cluster::start(1, options()).await?;
    let outcome = second_cluster(&second, &redis, &first_id, first_version).await;
    second.finish(outcome)
}

/// Sets `user` `times` times, the last to `value`; waits until Redis holds it. Returns the
/// cluster id and the last version.
async fn write_and_settle(
    cluster: &Cluster,
    redis: &Redis,
    value: &str,
    times: usize,
) -> anyhow::Result<(String, u64)> {
    let leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let cluster_id = cluster.cluster_id(leader, ELECTION_TIMEOUT).await?;
    let client = cluster.client().await?;
    let mut version = 0;
    for round in 0..times {
        let written = if round + 1 == times { value.to_string() } else { format!("{value}-{round}") };
        version = client.cache().set("user", written).await?;
    }
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while redis.cache_entry(&cluster_id, "user").await? != Some((version, value.to_string())) {
        anyhow::ensure!(Instant::now() < deadline, "version {version} of user was not written back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((cluster_id, version))
}

async fn write_back_skipped(cluster: &Cluster, id: u64) -> anyhow::Result<u64> {
    let client = Client::new_unconnected(cluster.options_for(&[id]))?;
    Ok(client.cache_stats_on(&cluster.endpoint(id)).await?.write_back_skipped)
}

async fn second_cluster(cluster: &Cluster, redis: &Redis, first_id: &str, first_version: u64) -> anyhow::Result<()> {
    let (second_id, second_version) = write_and_settle(cluster, redis, "from-b", 1).await?;
    anyhow::ensure!(second_id != first_id, "two clusters got the same id {first_id}");
    anyhow::ensure!(
        second_version < first_version,
        "the test needs B's version ({second_version}) below A's ({first_version})"
    );
    let node = cluster.ids()[0];
    cluster.kill(node)?;
    cluster.restart(node).await?;
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let client = cluster.client().await?;
    let read = client.cache().get_versioned("user").await?.map(|v| (v.version, String::from_utf8(v.value)));
    anyhow::ensure!(
        read == Some((second_version, Ok("from-b".to_string()))),
        "after a restart the second cluster read {read:?}, not its own version {second_version}"
    );
    anyhow::ensure!(
        redis.cache_entry(first_id, "user").await? == Some((first_version, "from-a".to_string())),
        "the first cluster's value is untouched in its own namespace"
    );
    anyhow::ensure!(write_back_skipped(cluster, node).await? == 0, "nothing skipped without a foreign writer");

    // A foreign writer in the second cluster's namespace, ahead of its versions.
    let foreign = format!("distsync:{second_id}:cache:alien");
    redis.cli(&["HSET", &foreign, "v", "1000000", "d", "theirs"]).await?;
    client.cache().set("alien", "ours").await?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while write_back_skipped(cluster, node).await? == 0 {
        anyhow::ensure!(Instant::now() < deadline, "the skipped write-back of alien was not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(cluster.log_path(node))?;
    anyhow::ensure!(
        log.contains("Redis holds a newer version of a cache key") && log.contains("alien"),
        "the skip is logged: {}",
        cluster.log_tail(node, 20)
    );
    Ok(())
}
