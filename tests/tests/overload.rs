//! A flood of connections and streams against one node: it serves what fits its budgets,
//! answers the rest `Busy` (or resets streams that do not deliver in time), keeps its memory
//! bounded, and Raft never notices. Then a reconnect storm: 500 clients connecting at once while
//! another writes.
//!
//! Against one follower (its heartbeats from the leader must keep arriving):
//!
//! - 2,000 client connections, 100 of them opening 200 streams each (20,000 streams), every
//!   stream announcing a 4 MiB request and sending its first KiB only. The node has 64 MiB for
//!   requests in flight (`--inflight-request-bytes`) and 16,384 client streams: most streams
//!   are answered `Busy` with a retry-after hint at once; the rest are reset after the 10 s
//!   read deadline. Every stream ends. Meanwhile a client of the other nodes keeps writing.
//! - No election happens (every node keeps its term), the follower's peak RSS stays under
//!   256 MiB, and once the flood is gone a client that knows only the follower writes through it.
//! - 500 clients connect at once (each dials all three nodes) while a writer writes: all connect,
//!   every write succeeds, no election. The writer's slowest write is printed, not asserted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use distsync::wire::{decode_body, read_frame, Reply, FRAME_BYTES_MAX};
use distsync::{Client, NodeId, ServerError};
use distsync_cluster_tests::{Cluster, ClusterOptions};
use tokio::task::JoinSet;

const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECTIONS: usize = 2_000;
const STREAMING_CONNECTIONS: usize = 100;
const STREAMS_PER_CONNECTION: usize = 200;
/// What each flooding stream announces.
const ANNOUNCED_BYTES: u32 = 4 * 1024 * 1024;
/// What each flooding stream sends of it before stalling.
const SENT_BYTES: usize = 1024;
/// Streams the byte budget admits at most: 64 MiB of requests in flight hold 16 announcing
/// 4 MiB. Without the byte budget the node would read 16,384 of them (its stream limit).
const ADMITTED_MAX: u64 = 16;
/// Longer than the node's 10 s read deadline: every stream must have ended by then.
const STREAM_END_TIMEOUT: Duration = Duration::from_secs(30);
const RSS_BOUND: u64 = 256 * 1024 * 1024;
const STORM_CLIENTS: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_answered_busy_within_budget_and_raft_never_notices() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, ClusterOptions::default()).await?;
    let outcome = scenario(&cluster).await;
    cluster.finish(outcome)
}

/// How each flooding stream ended.
#[derive(Default)]
struct Endings {
    busy: AtomicU64,
    reset: AtomicU64,
    other: AtomicU64,
}

/// Every node's term, each asked until it answers (for up to 10 s: right after the flood this
/// process is still closing 2,000 connections).
async fn terms(cluster: &Cluster) -> anyhow::Result<Vec<u64>> {
    let mut terms = Vec::new();
    for id in cluster.ids() {
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            match cluster.status(id).await {
                Ok(status) => break status,
                Err(error) if Instant::now() >= deadline => return Err(error),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        terms.push(status.term);
    }
    Ok(terms)
}

async fn scenario(cluster: &Cluster) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(&cluster.ids(), ELECTION_TIMEOUT).await?;
    let target = cluster.ids().into_iter().find(|&id| id != leader).expect("three nodes");
    let others: Vec<NodeId> = cluster.ids().into_iter().filter(|&id| id != target).collect();
    let before = terms(cluster).await?;

    // A steady writer through the other nodes for the whole flood.
    let writer = cluster.client_for(&others).await?;
    let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let steady = tokio::spawn({
        let flooding = flooding.clone();
        async move {
            let mut written = 0u64;
            while flooding.load(Ordering::Relaxed) {
                writer.kv().put("steady", written.to_string()).await?;
                written += 1;
            }
            anyhow::Ok(written)
        }
    });

    let endings = flood(cluster, target).await?;
    flooding.store(false, Ordering::Relaxed);
    let written = steady.await.context("the steady writer panicked")??;
    let (busy, reset, other) = (
        endings.busy.load(Ordering::Relaxed),
        endings.reset.load(Ordering::Relaxed),
        endings.other.load(Ordering::Relaxed),
    );
    eprintln!("flood: {busy} streams answered Busy, {reset} reset, {other} otherwise; {written} steady writes");
    anyhow::ensure!(other == 0, "{other} streams ended neither Busy nor reset");
    let streams = (STREAMING_CONNECTIONS * STREAMS_PER_CONNECTION) as u64;
    anyhow::ensure!(
        busy >= streams - ADMITTED_MAX,
        "only {busy} of {streams} streams were answered Busy: the byte budget admits {ADMITTED_MAX} at most"
    );
    anyhow::ensure!(written > 0, "the steady writer wrote nothing during the flood");
    let peak = cluster.peak_memory_bytes(target).context("the follower's peak RSS")?;
    eprintln!("follower peak RSS: {} MiB", peak / (1024 * 1024));
    anyhow::ensure!(peak < RSS_BOUND, "the follower's peak RSS {peak} passed {RSS_BOUND}");
    anyhow::ensure!(terms(cluster).await? == before, "an election happened during the flood (terms {before:?})");
    let through_target = cluster.client_for(&[target]).await?;
    through_target.kv().put("after-flood", "1").await.context("a write through the flooded follower")?;

    storm(cluster).await?;
    anyhow::ensure!(terms(cluster).await? == before, "an election happened during the storm (terms {before:?})");
    Ok(())
}

/// Opens the connections and streams, waits for every stream to end; returns how they ended.
async fn flood(cluster: &Cluster, target: NodeId) -> anyhow::Result<Arc<Endings>> {
    let tls = cluster.identity_tls("flood").await?;
    let config = tls.quinn_config()?;
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let address = cluster.endpoint(target).parse()?;
    let mut connections = Vec::with_capacity(CONNECTIONS);
    for batch in 0..CONNECTIONS / 100 {
        let mut handshakes = JoinSet::new();
        for _ in 0..100 {
            let connecting = endpoint.connect_with(config.clone(), address, distsync::tls::SERVER_NAME)?;
            handshakes.spawn(connecting);
        }
        while let Some(connection) = handshakes.join_next().await {
            connections.push(connection?.with_context(|| format!("handshake in batch {batch}"))?);
        }
    }
    eprintln!("{} connections open to node {target}", connections.len());
    let endings = Arc::new(Endings::default());
    let mut streams = JoinSet::new();
    for connection in connections.iter().take(STREAMING_CONNECTIONS) {
        for _ in 0..STREAMS_PER_CONNECTION {
            let (connection, endings) = (connection.clone(), endings.clone());
            streams.spawn(async move {
                let ending = tokio::time::timeout(STREAM_END_TIMEOUT, announce_and_stall(&connection)).await;
                let counter = match ending {
                    Ok(Ending::Busy) => &endings.busy,
                    Ok(Ending::Reset) => &endings.reset,
                    Ok(Ending::Other) | Err(_) => &endings.other,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            });
        }
    }
    while let Some(done) = streams.join_next().await {
        done?;
    }
    drop(connections);
    endpoint.close(0u32.into(), b"done");
    Ok(endings)
}

enum Ending {
    Busy,
    Reset,
    Other,
}

/// Announces a 4 MiB request, sends its first KiB and nothing more; returns how the node
/// ended the stream.
async fn announce_and_stall(connection: &quinn::Connection) -> Ending {
    let Ok((mut send, mut recv)) = connection.open_bi().await else { return Ending::Other };
    let mut start = ANNOUNCED_BYTES.to_be_bytes().to_vec();
    start.resize(4 + SENT_BYTES, 0xab);
    // A node that refuses the request stops the stream: the write fails, the answer is there.
    let _ = send.write_all(&start).await;
    match read_frame(&mut recv, FRAME_BYTES_MAX).await {
        Ok(body) => match decode_body::<Reply>(&body) {
            Ok(Reply { body: Err(ServerError::Busy { retry_after_ms, .. }), .. }) if retry_after_ms > 0 => Ending::Busy,
            _ => Ending::Other,
        },
        Err(_) => Ending::Reset,
    }
}

/// 500 clients connect at once while a writer writes.
async fn storm(cluster: &Cluster) -> anyhow::Result<()> {
    let writer = cluster.client().await?;
    let storming = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let steady = tokio::spawn({
        let storming = storming.clone();
        async move {
            let mut slowest = Duration::ZERO;
            let mut written = 0u64;
            while storming.load(Ordering::Relaxed) {
                let started = Instant::now();
                writer.kv().put("storm", written.to_string()).await?;
                slowest = slowest.max(started.elapsed());
                written += 1;
            }
            anyhow::Ok((written, slowest))
        }
    });
    let started = Instant::now();
    let mut connects = JoinSet::new();
    for _ in 0..STORM_CLIENTS {
        let options = cluster.options_for(&cluster.ids());
        connects.spawn(async move { Client::connect_with(options).await });
    }
    let mut clients = Vec::with_capacity(STORM_CLIENTS);
    while let Some(client) = connects.join_next().await {
        clients.push(client?.context("a client of the storm could not connect")?);
    }
    let storm_took = started.elapsed();
    storming.store(false, Ordering::Relaxed);
    let (written, slowest) = steady.await.context("the storm writer panicked")??;
    eprintln!(
        "storm: {STORM_CLIENTS} clients connected in {storm_took:?}; {written} writes meanwhile, slowest {slowest:?}"
    );
    anyhow::ensure!(written > 0, "no write during the storm");
    drop(clients);
    Ok(())
}
