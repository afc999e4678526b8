//! `bench failover`: its own 3-node cluster under a write load, the leader SIGKILLed each round;
//! how long no write succeeded, and how long until a new leader was elected.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distsync::Client;
use distsync_harness::{Cluster, ClusterOptions};
use serde::Serialize;

/// One round of `bench failover`.
#[derive(Serialize, Debug)]
pub struct FailoverRound {
    /// Always "failover".
    pub bench: &'static str,
    /// Round number, from 1.
    pub round: u32,
    /// The killed leader.
    pub killed: u64,
    /// The new leader.
    pub new_leader: u64,
    /// From the last write acknowledged before the kill to the first acknowledged after it.
    pub unavailable_ms: f64,
    /// From the kill to a new leader reporting itself.
    pub election_ms: f64,
}

/// Summary line of `bench failover`.
#[derive(Serialize, Debug)]
pub struct FailoverSummary {
    /// Always "failover-summary".
    pub bench: &'static str,
    /// Rounds run.
    pub rounds: usize,
    /// Median of `unavailable_ms`.
    pub median_unavailable_ms: f64,
    /// Median of `election_ms`.
    pub median_election_ms: f64,
    /// Largest `unavailable_ms`.
    pub max_unavailable_ms: f64,
}

/// Settings of `bench failover`.
#[derive(Debug, Clone)]
pub(crate) struct FailoverSettings {
    /// Leader kills.
    pub(crate) rounds: u32,
    /// Concurrent writers.
    pub(crate) writers: usize,
    /// How soon a client gives up on a silent node.
    pub(crate) attempt_timeout: Duration,
    /// Arguments the nodes get besides the usual ones.
    pub(crate) node_args: Vec<String>,
}

/// Runs `settings.rounds` leader kills against a fresh local cluster, printing one JSON line per
/// round through `report`. On failure the cluster's directory, with the node logs, is kept.
///
/// # Errors
///
/// When the cluster cannot start or no new leader appears.
pub(crate) async fn run(
    settings: &FailoverSettings,
    mut report: impl FnMut(&FailoverRound),
) -> anyhow::Result<FailoverSummary> {
    let options = ClusterOptions {
        fault_injection: false,
        node_args: settings.node_args.clone(),
        binary: Some(std::env::current_exe()?),
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(3, options).await?;
    let directory = cluster.directory().to_path_buf();
    let outcome = kill_leaders(&cluster, settings, &mut report).await;
    cluster.finish(outcome).map_err(|error| anyhow::anyhow!("{error:#}; node logs are kept in {}", directory.display()))
}

async fn kill_leaders(
    cluster: &Cluster,
    settings: &FailoverSettings,
    report: &mut impl FnMut(&FailoverRound),
) -> anyhow::Result<FailoverSummary> {
    let first = cluster.wait_for_new_leader(0, Duration::from_secs(10)).await?;
    let acknowledged: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut load = tokio::task::JoinSet::new();
    for writer in 0..settings.writers {
        let options = cluster
            .options_for(&cluster.ids())
            .attempt_timeout(settings.attempt_timeout)
            .request_timeout(Duration::from_secs(30));
        let client = Client::connect_with(options).await?;
        let acknowledged = acknowledged.clone();
        let running = running.clone();
        load.spawn(async move {
            let kv = client.kv();
            let mut sequence = 0u64;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                sequence += 1;
                if kv.put(format!("failover/{writer}/{}", sequence % 256), b"v").await.is_ok() {
                    acknowledged.lock().expect("acknowledged lock").push(Instant::now());
                }
            }
        });
    }
    let mut results = Vec::new();
    let mut term = first.term;
    let mut leader = first.id;
    for round in 1..=settings.rounds {
        // Steady state first: writes flowing for a while with everyone caught up.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let killed_at = Instant::now();
        cluster.kill(leader)?;
        let status = cluster.wait_for_new_leader(term, Duration::from_secs(10)).await?;
        let election_ms = killed_at.elapsed().as_secs_f64() * 1000.0;
        // Wait until writes flow again: an acknowledgement after the new leader was seen.
        let elected_at = Instant::now();
        let deadline = elected_at + Duration::from_secs(10);
        let unavailable = loop {
            {
                let times = acknowledged.lock().expect("acknowledged lock");
                if times.last().is_some_and(|last| *last > elected_at) {
                    // Replies already in flight at the kill may land just after it, so the outage
                    // is the longest silence between consecutive acknowledgements around the kill.
                    let window_start = killed_at - Duration::from_secs(1);
                    let window: Vec<Instant> = times.iter().copied().filter(|t| *t >= window_start).collect();
                    break window.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap_or_default();
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "no write succeeded within 10 s of the new election");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let line = FailoverRound {
            bench: "failover",
            round,
            killed: leader,
            new_leader: status.id,
            unavailable_ms: unavailable.as_secs_f64() * 1000.0,
            election_ms,
        };
        report(&line);
        results.push(line);
        cluster.spawn_node(leader)?;
        term = status.term;
        leader = status.id;
    }
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    cluster.stop();
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    };
    Ok(FailoverSummary {
        bench: "failover-summary",
        rounds: results.len(),
        median_unavailable_ms: median(results.iter().map(|r| r.unavailable_ms).collect()),
        median_election_ms: median(results.iter().map(|r| r.election_ms).collect()),
        max_unavailable_ms: results.iter().map(|r| r.unavailable_ms).fold(0.0, f64::max),
    })
}
