//! Cache reads are linearizable, across nodes and across a leader SIGKILL: writers and readers
//! homed on different nodes set and get a few keys (each node's cache too small for all of them,
//! so reads take both the copy path and the Redis path); the recorded history must have a
//! linearization per key.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distsync::Client;
use distsync_cluster_tests::linearizability::{check, timeline, Action, Operation};
use distsync_cluster_tests::{Cluster, ClusterOptions, Redis};
use tokio::sync::Notify;

const WORKERS: usize = 6;
const KEYS: u64 = 4;
const OPERATIONS_BEFORE_KILL: usize = 300;
const OPERATIONS_TOTAL: usize = 900;
const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_reads_stay_linearizable_across_nodes_and_a_leader_kill() -> anyhow::Result<()> {
    let redis = Redis::start().await?;
    let options = ClusterOptions { redis: Some(redis.url()), cache_entries: Some(3), ..ClusterOptions::default() };
    let cluster = Cluster::start(3, options).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let history: Arc<Mutex<Vec<Operation>>> = Arc::default();
    let completed = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        // Two workers per node: each reads through its own node's cache.
        let home = cluster.ids()[worker % 3];
        let client = Client::connect_with(cluster.options_for(&cluster.ids()).home(cluster.endpoint(home))).await?;
        workers.spawn(run_worker(worker, client, history.clone(), completed.clone(), progress.clone(), started));
    }
    let deadline = started + RUN_TIMEOUT;
    loop {
        let notified = progress.notified();
        if completed.load(Ordering::Relaxed) >= OPERATIONS_BEFORE_KILL {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        anyhow::ensure!(
            tokio::time::timeout(left, notified).await.is_ok(),
            "only {} operations completed before the kill",
            completed.load(Ordering::Relaxed)
        );
    }
    let before_kill = stats_totals(cluster, &cluster.ids()).await?;
    cluster.kill(leader)?;
    let survivors: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
    cluster.wait_for_leader(&survivors, ELECTION_TIMEOUT).await?;
    while let Some(joined) = workers.join_next().await {
        joined?;
    }

    let history = std::mem::take(&mut *history.lock().expect("history lock"));
    let reads_of_values = history.iter().filter(|op| matches!(op.action, Action::Read(Some(_)))).count();
    let acknowledged_writes =
        history.iter().filter(|op| matches!(op.action, Action::Write(_)) && op.returned.is_some()).count();
    assert!(reads_of_values >= 100, "too few reads saw a value ({reads_of_values}) to test anything");
    assert!(acknowledged_writes >= 100, "too few writes were acknowledged ({acknowledged_writes})");
    // Both read paths were exercised: copies served locally, and values fetched from Redis.
    let (hits, misses) = before_kill;
    assert!(hits > 0, "no read was served from a node's copy");
    assert!(misses > 0, "no read went to Redis");
    if let Err(violation) = check(&history) {
        eprintln!("{}", timeline(&history, &violation.key, started));
        anyhow::bail!("the history of cache key {:?} is not linearizable", String::from_utf8_lossy(&violation.key));
    }
    Ok(())
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

/// Random sets and gets (two reads per write) until the total reaches [`OPERATIONS_TOTAL`].
async fn run_worker(
    worker: usize,
    client: Client,
    history: Arc<Mutex<Vec<Operation>>>,
    completed: Arc<AtomicUsize>,
    progress: Arc<Notify>,
    started: Instant,
) {
    let cache = client.cache();
    let mut random = 0x9e37_79b9_7f4a_7c15u64 ^ (worker as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut sequence = 0u64;
    while completed.load(Ordering::Relaxed) < OPERATIONS_TOTAL && started.elapsed() < RUN_TIMEOUT {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        let key = format!("lin-{}", random % KEYS).into_bytes();
        let invoked = Instant::now();
        let operation = if random.is_multiple_of(3) {
            sequence += 1;
            let value = format!("w{worker}-{sequence}").into_bytes();
            let result = cache.set(&key, &value).await;
            Operation { key, action: Action::Write(value), invoked, returned: result.ok().map(|_| Instant::now()) }
        } else {
            match cache.get(&key).await {
                Ok(value) => Operation { key, action: Action::Read(value), invoked, returned: Some(Instant::now()) },
                Err(_) => continue,
            }
        };
        history.lock().expect("history lock").push(operation);
        completed.fetch_add(1, Ordering::Relaxed);
        progress.notify_waiters();
    }
    client.close().await;
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
