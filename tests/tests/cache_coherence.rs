//! Cache reads are linearizable, across nodes and across a leader SIGKILL: writers and readers
//! homed on different nodes set and get a few keys (each node's cache too small for all of them,
//! so reads take both the copy path and the Redis path); the recorded history must have a
//! linearization per key.

use std::time::{Duration, Instant};

use distsync::Client;
use distsync_cluster_tests::linearizability::{Recorder, Workload};
use distsync_cluster_tests::{Cluster, ClusterOptions, Redis};

const WORKERS: usize = 6;
const OPERATIONS_BEFORE_KILL: usize = 300;
/// Random sets and gets (two reads per write) on 4 keys.
const WORKLOAD: Workload = Workload { keys: 4, writes_one_in: 3, operations: 900, timeout: Duration::from_secs(120) };
const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_reads_stay_linearizable_across_nodes_and_a_leader_kill() -> anyhow::Result<()> {
    let redis = Redis::start().await?;
    let options = ClusterOptions { redis: Some(redis.url()), cache_entries: Some(3), ..ClusterOptions::default() };
    let cluster = Cluster::start(3, options).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let recorder = Recorder::new(WORKLOAD);
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        // Two workers per node: each reads through its own node's cache.
        let home = cluster.ids()[worker % 3];
        let client = Client::connect_with(cluster.options_for(&cluster.ids()).home(cluster.endpoint(home))).await?;
        workers.spawn(recorder.clone().run_worker(worker, client.clone(), client.cache()));
    }
    recorder.wait_for(OPERATIONS_BEFORE_KILL).await?;
    let (hits, misses) = stats_totals(cluster, &cluster.ids()).await?;
    let (_, term) = cluster.kill_leader(ELECTION_TIMEOUT).await?;
    let killed_at = Instant::now();
    cluster.wait_for_new_leader(term, ELECTION_TIMEOUT).await?;
    while let Some(joined) = workers.join_next().await {
        joined?;
    }
    // Both read paths were exercised: copies served locally, and values fetched from Redis.
    assert!(hits > 0, "no read was served from a node's copy");
    assert!(misses > 0, "no read went to Redis");
    recorder.verify_across(killed_at, 100, 100, 50)
}

/// Hits and misses summed over `ids`.
async fn stats_totals(cluster: &Cluster, ids: &[u64]) -> anyhow::Result<(u64, u64)> {
    let client = Client::new_unconnected(cluster.options_for(ids))?;
    let mut totals = (0, 0);
    for id in ids {
        let stats = client.cache_stats_on(&cluster.endpoint(*id)).await?;
        totals.0 += stats.hits;
        totals.1 += stats.misses;
    }
    Ok(totals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_never_serves_a_stale_linearizable_read() -> anyhow::Result<()> {
    let redis = Redis::start().await?;
    let options = ClusterOptions { redis: Some(redis.url()), ..ClusterOptions::default() };
    let cluster = Cluster::start(3, options).await?;
    let outcome = cut_off_leader(&cluster).await;
    cluster.finish(outcome)
}

async fn cut_off_leader(cluster: &Cluster) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let others: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
    let homed = |id: u64| cluster.options_for(&cluster.ids()).home(cluster.endpoint(id));
    let on_leader = Client::connect_with(homed(leader)).await?;
    on_leader.cache().set("config", "v1").await?;
    // The old leader holds a copy of v1 and reads it linearizably while it leads.
    assert_eq!(on_leader.cache().get("config").await?.as_deref(), Some(&b"v1"[..]));

    cluster.partition(&[leader], &others).await?;
    let new_leader = cluster.wait_for_leader(&others, ELECTION_TIMEOUT).await?;
    let on_majority = Client::connect_with(homed(new_leader)).await?;
    on_majority.cache().set("config", "v2").await?;

    // Pinned to the old leader alone: it cannot confirm it is current, so it must not answer v1.
    let options = cluster.options_for(&[leader]).request_timeout(Duration::from_secs(4));
    let stranded = Client::new_unconnected(options)?;
    match stranded.cache().get("config").await {
        Err(error) => assert!(error.is_retryable(), "a cut-off node says it is unavailable: {error}"),
        Ok(value) => panic!("a cut-off former leader answered a linearizable read with {value:?}"),
    }
    // A local read there may be stale, as documented; through the majority the read is current.
    let local = stranded.cache().consistency(distsync::Consistency::Local).get("config").await?;
    assert_eq!(local.as_deref(), Some(&b"v1"[..]), "the old leader still has v1 applied");
    assert_eq!(on_majority.cache().get("config").await?.as_deref(), Some(&b"v2"[..]));
    cluster.heal().await?;
    // Healed, the old leader catches up and reads v2 linearizably.
    let rejoined = Client::new_unconnected(cluster.options_for(&[leader]))?;
    assert_eq!(rejoined.cache().get("config").await?.as_deref(), Some(&b"v2"[..]));
    Ok(())
}
