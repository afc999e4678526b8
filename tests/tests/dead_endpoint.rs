//! A node that is down costs a fresh command nothing while another node answers: the client dials
//! every endpoint at once, uses the first to complete a handshake, then follows leader hints.
//!
//! Each command runs with `--attempt-timeout 60`, longer than the client's whole request
//! deadline (10 s): a client that sent its first attempt to the dead node, listed first in
//! `--endpoints`, would spend the deadline waiting and fail. So success is the check, not a
//! stopwatch; the time each command took is printed for the record.
//!
//! - A follower SIGKILLed, listed first: `kv put` and `kv get` succeed.
//! - The leader SIGKILLed, listed first, once a new leader is elected: the same.

use std::time::{Duration, Instant};

use distsync_cluster_tests::{describe_output, Cluster, ClusterOptions};

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_command_does_not_wait_for_a_dead_node_listed_first() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

/// Runs `distsync kv ARGS` with `dead` first in `--endpoints`; returns stdout.
async fn command_with_dead_first(cluster: &Cluster, dead: u64, args: &[&str]) -> anyhow::Result<String> {
    let mut endpoints = vec![cluster.endpoint(dead)];
    endpoints.extend(cluster.ids().into_iter().filter(|&id| id != dead).map(|id| cluster.endpoint(id)));
    let endpoints = endpoints.join(",");
    let ca = cluster.ca_path();
    let ca = ca.to_str().expect("temporary paths are UTF-8");
    let mut full = vec!["--endpoints", &endpoints, "--ca", ca, "--attempt-timeout", "60"];
    full.extend_from_slice(args);
    let started = Instant::now();
    let output = cluster.run_binary(&full).await?;
    eprintln!("distsync {} with node {dead} dead and listed first: {:?}", args.join(" "), started.elapsed());
    anyhow::ensure!(output.status.success(), "with node {dead} dead: {}", describe_output(&output));
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let follower = cluster.ids().into_iter().find(|&id| id != leader).expect("three nodes");

    cluster.kill(follower)?;
    command_with_dead_first(cluster, follower, &["kv", "put", "a", "1"]).await?;
    assert_eq!(command_with_dead_first(cluster, follower, &["kv", "get", "a"]).await?, "1");
    cluster.restart(follower).await?;

    let term = cluster.status(leader).await?.term;
    cluster.kill(leader)?;
    cluster.wait_for_new_leader(term, ELECTION_TIMEOUT).await?;
    command_with_dead_first(cluster, leader, &["kv", "put", "b", "2"]).await?;
    assert_eq!(command_with_dead_first(cluster, leader, &["kv", "get", "a"]).await?, "1");
    assert_eq!(command_with_dead_first(cluster, leader, &["kv", "get", "b"]).await?, "2");
    Ok(())
}
