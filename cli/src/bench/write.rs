//! `bench write`: closed-loop writes.

use std::time::{Duration, Instant};

use distsync::{Client, ClientOptions, ClientTls};
use serde::Serialize;

use super::{micros_since, Latencies};

/// Result of `bench write`.
#[derive(Serialize, Debug)]
pub struct WriteReport {
    /// Always "write".
    pub bench: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// Connections (and sessions) the clients share.
    pub connections: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Measured seconds.
    pub duration_s: f64,
    /// Acknowledged writes.
    pub ops: u64,
    /// Acknowledged writes per second.
    pub ops_per_sec: f64,
    /// Latency percentiles of acknowledged writes, milliseconds.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest write.
    pub max_ms: f64,
    /// Failed writes.
    pub errors: u64,
}

/// Runs the write benchmark against a running cluster.
///
/// # Errors
///
/// When clients cannot connect.
pub(crate) async fn run(
    endpoints: &[String],
    tls: ClientTls,
    clients: usize,
    connections: usize,
    duration: Duration,
    value_size: usize,
) -> anyhow::Result<WriteReport> {
    anyhow::ensure!(clients >= 1, "--clients must be at least 1");
    anyhow::ensure!((1..=clients).contains(&connections), "--connections must be between 1 and --clients");
    // Like etcd's benchmark (--clients over --conns), clients share connections round robin; each
    // connection is one `Client` with its own session.
    let mut shared = Vec::with_capacity(connections);
    for _ in 0..connections {
        let client = Client::connect_with(ClientOptions::new(endpoints, tls.clone())).await?;
        // Opens the session and finds the leader before the clock starts.
        client.kv().put("bench/warmup", b"x").await?;
        shared.push(client);
    }
    let connected: Vec<Client> = (0..clients).map(|number| shared[number % connections].clone()).collect();
    let value = vec![b'x'; value_size];
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (number, client) in connected.into_iter().enumerate() {
        let value = value.clone();
        tasks.spawn(async move {
            let kv = client.kv();
            let mut latencies_us: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let mut sequence = 0u64;
            while Instant::now() < deadline {
                // A bounded key space per client keeps the register small during long runs.
                let key = format!("bench/{number}/{}", sequence % 1024);
                sequence += 1;
                let sent = Instant::now();
                match kv.put(key, &value).await {
                    Ok(_) => latencies_us.push(micros_since(sent)),
                    Err(_) => errors += 1,
                }
            }
            (latencies_us, errors)
        });
    }
    let latencies = Latencies::gather(tasks).await?;
    let elapsed = start.elapsed().as_secs_f64();
    for client in &shared {
        client.close().await;
    }
    Ok(WriteReport {
        bench: "write",
        clients,
        connections,
        value_size,
        duration_s: elapsed,
        ops: latencies.count(),
        ops_per_sec: latencies.count() as f64 / elapsed,
        p50_ms: latencies.percentile_ms(50.0),
        p95_ms: latencies.percentile_ms(95.0),
        p99_ms: latencies.percentile_ms(99.0),
        max_ms: latencies.percentile_ms(100.0),
        errors: latencies.errors,
    })
}
