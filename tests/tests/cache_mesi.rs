//! MESI transitions, observed through `distsync cache show --json` on every node, and the values
//! Redis holds after write-back, checked with redis-cli. Also the CLI contract of `cache get`,
//! `set`, `delete` and `stats`.

use std::time::{Duration, Instant};

use distsync_cluster_tests::{describe_output, Cluster, ClusterOptions, Redis};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Bounds each wait for a state to settle (holder reports travel through the log).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_move_through_mesi_states_and_redis_gets_the_committed_values() -> anyhow::Result<()> {
    let redis = Redis::start().await?;
    let cluster = Cluster::start(3, ClusterOptions { redis: Some(redis.url()), ..ClusterOptions::default() }).await?;
    let outcome = scenario(&cluster, &redis).await;
    cluster.finish(outcome)
}

/// Each node's (state letter or "-", copy version) for `key`, by node id, and the directory's
/// version as node 1 sees it.
async fn show(cluster: &Cluster, key: &str) -> anyhow::Result<(Vec<(String, Option<u64>)>, Option<u64>)> {
    let output = cluster.run_cli(&["cache", "show", key, "--json"]).await?;
    anyhow::ensure!(output.status.success(), "cache show failed: {}", describe_output(&output));
    let nodes: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let nodes = nodes.as_array().cloned().unwrap_or_default();
    let states = nodes
        .iter()
        .map(|node| (node["state"].as_str().unwrap_or("-").to_string(), node["version"].as_u64()))
        .collect();
    let directory = nodes.first().and_then(|node| node["directory"]["version"].as_u64());
    Ok((states, directory))
}

/// Polls `cache show` until the nodes' states are `expected` (e.g. "M--"), returning the view.
async fn wait_states(cluster: &Cluster, key: &str, expected: &str) -> anyhow::Result<Vec<(String, Option<u64>)>> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let (states, _) = show(cluster, key).await?;
        let letters: String = states.iter().map(|(state, _)| state.as_str()).collect();
        if letters == expected {
            return Ok(states);
        }
        anyhow::ensure!(Instant::now() < deadline, "states of {key:?} stayed {letters}, expected {expected}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn cli_ok(cluster: &Cluster, args: &[&str]) -> anyhow::Result<String> {
    let output = cluster.run_cli(args).await?;
    anyhow::ensure!(output.status.success(), "{args:?} failed: {}", describe_output(&output));
    Ok(String::from_utf8_lossy(&output.stdout).trim_end().to_string())
}

async fn scenario(cluster: &Cluster, redis: &Redis) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let cluster_id = cluster.cluster_id(leader, ELECTION_TIMEOUT).await?;
    let node = |id: u64| cluster.endpoint(id);

    // Redis down: a write commits anyway, and the writer's copy is M (write-back pending).
    redis.kill()?;
    let v1: u64 = cli_ok(cluster, &["cache", "set", "user:1", "ada", "--node", &node(1)]).await?.parse()?;
    let states = wait_states(cluster, "user:1", "M--").await?;
    assert_eq!(states[0].1, Some(v1), "the writer's copy carries the write's version");
    assert_eq!(
        cli_ok(cluster, &["cache", "get", "user:1", "--node", &node(2)]).await?,
        "ada",
        "served while Redis is down"
    );
    // Node 2 read the modified value: both share it now, the write-back still pending.
    wait_states(cluster, "user:1", "SS-").await?;

    // The leader's write-back fails and says so (a failed attempt may take up to Redis's 2 s
    // timeout to report), and the write stays pending.
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let stats: serde_json::Value = serde_json::from_str(&cli_ok(cluster, &["cache", "stats", "--json"]).await?)?;
        let nodes = stats.as_array().cloned().unwrap_or_default();
        let failures: u64 = nodes.iter().map(|n| n["write_back_failures"].as_u64().unwrap_or(0)).sum();
        if failures >= 1 {
            assert!(nodes.iter().all(|n| n["pending_write_backs"] == 1), "the write waits for Redis: {stats}");
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "no failed write-back was reported: {stats}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Redis back: the pending write is written back, copies stay shared and clean.
    redis.restart().await?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while redis.cache_entry(&cluster_id, "user:1").await? != Some((v1, "ada".to_string())) {
        anyhow::ensure!(Instant::now() < deadline, "user:1 never reached Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A write through node 3: its copy is the only valid one; the others are invalid.
    let v2: u64 = cli_ok(cluster, &["cache", "set", "user:1", "grace", "--node", &node(3)]).await?.parse()?;
    assert!(v2 > v1);
    let states = wait_states(cluster, "user:1", "IIE").await?;
    assert_eq!(states[0].1, Some(v1), "an invalid copy keeps the version it had");
    assert_eq!(states[2].1, Some(v2));
    assert_eq!(
        redis.cache_entry(&cluster_id, "user:1").await?,
        Some((v2, "grace".to_string())),
        "written back once clean"
    );

    // A read miss on node 1 loads the value from Redis: shared with node 3 from then on.
    assert_eq!(cli_ok(cluster, &["cache", "get", "user:1", "--node", &node(1)]).await?, "grace");
    wait_states(cluster, "user:1", "SIS").await?;

    // A key read by one node only is exclusive there.
    cli_ok(cluster, &["cache", "set", "solo", "x", "--node", &node(2)]).await?;
    wait_states(cluster, "solo", "-E-").await?;

    // A deletion invalidates every copy; the key reads as absent (exit status 1) everywhere.
    cli_ok(cluster, &["cache", "delete", "user:1", "--node", &node(2)]).await?;
    wait_states(cluster, "user:1", "III").await?;
    for id in cluster.ids() {
        let output = cluster.run_cli(&["cache", "get", "user:1", "--node", &node(id)]).await?;
        assert_eq!(output.status.code(), Some(1), "absent key on node {id}: {}", describe_output(&output));
        assert!(output.stdout.is_empty());
    }
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while redis.cache_entry(&cluster_id, "user:1").await?.is_some() {
        anyhow::ensure!(Instant::now() < deadline, "the deletion never reached Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Values from stdin, TTLs, and stats with per-node counters.
    let output = cluster.run_cli_with_stdin(&["cache", "set", "blob", "--node", &node(1)], b"from stdin").await?;
    anyhow::ensure!(output.status.success(), "set from stdin: {}", describe_output(&output));
    assert_eq!(cli_ok(cluster, &["cache", "get", "blob"]).await?, "from stdin");
    let stats = cli_ok(cluster, &["cache", "stats", "--json"]).await?;
    let stats: serde_json::Value = serde_json::from_str(&stats)?;
    let nodes = stats.as_array().cloned().unwrap_or_default();
    assert_eq!(nodes.len(), 3);
    let total = |field: &str| nodes.iter().map(|n| n[field].as_u64().unwrap_or(0)).sum::<u64>();
    assert!(total("write_backs") >= 4, "write-backs are counted: {stats}");
    assert!(total("write_back_failures") >= 1, "the failures while Redis was down are counted: {stats}");
    assert!(total("invalidations") >= 2, "invalidations are counted: {stats}");
    assert!(total("misses") >= 1 && total("pending_reads") >= 1, "{stats}");
    assert!(nodes.iter().all(|n| n["backing"] == redis.url()), "{stats}");
    let table = cli_ok(cluster, &["cache", "stats"]).await?;
    assert!(table.contains("HITS") && table.lines().count() == 4, "{table}");
    let bad = cluster.run_cli(&["cache", "set", "k", "v", "--ttl", "-1"]).await?;
    assert!(!bad.status.success(), "a negative TTL is refused");
    Ok(())
}
