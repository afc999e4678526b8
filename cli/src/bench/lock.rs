//! `bench lock`: closed-loop lock+unlock cycles.

use std::time::{Duration, Instant};

use distsync::{Client, ClientOptions, ClientTls};
use serde::Serialize;

use super::{micros_since, Latencies};

/// Result of `bench lock`.
#[derive(Serialize, Debug)]
pub struct LockReport {
    /// Always "lock".
    pub bench: &'static str,
    /// Concurrent clients, each with its own session.
    pub clients: usize,
    /// Whether all clients contend for one lock.
    pub contended: bool,
    /// Measured seconds.
    pub duration_s: f64,
    /// Completed acquisitions (each followed by a release).
    pub acquires: u64,
    /// Lock+unlock cycles per second.
    pub acquires_per_sec: f64,
    /// Acquire latency percentiles (waiting included), milliseconds.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest acquire.
    pub max_ms: f64,
    /// Failed acquires or releases.
    pub errors: u64,
}

/// Runs the lock benchmark against a running cluster.
///
/// # Errors
///
/// When clients cannot connect.
pub(crate) async fn run(
    endpoints: &[String],
    tls: ClientTls,
    clients: usize,
    contended: bool,
    duration: Duration,
) -> anyhow::Result<LockReport> {
    anyhow::ensure!(clients >= 1, "--clients must be at least 1");
    let mut connected = Vec::with_capacity(clients);
    for number in 0..clients {
        let client = Client::connect_with(ClientOptions::new(endpoints, tls.clone())).await?;
        // Opens the session and finds the leader before the clock starts.
        client.lock(format!("bench/warmup/{number}")).acquire().await?.release().await?;
        connected.push(client);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (number, client) in connected.iter().cloned().enumerate() {
        let name = if contended { "bench/contended".to_string() } else { format!("bench/lock/{number}") };
        tasks.spawn(async move {
            let mut latencies_us: Vec<u32> = Vec::with_capacity(1 << 14);
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let asked = Instant::now();
                match client.lock(&name).timeout(Duration::from_secs(30)).acquire().await {
                    Ok(guard) => {
                        latencies_us.push(micros_since(asked));
                        if guard.release().await.is_err() {
                            errors += 1;
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (latencies_us, errors)
        });
    }
    let latencies = Latencies::gather(tasks).await?;
    let elapsed = start.elapsed().as_secs_f64();
    for client in &connected {
        client.close().await;
    }
    Ok(LockReport {
        bench: "lock",
        clients,
        contended,
        duration_s: elapsed,
        acquires: latencies.count(),
        acquires_per_sec: latencies.count() as f64 / elapsed,
        p50_ms: latencies.percentile_ms(50.0),
        p95_ms: latencies.percentile_ms(95.0),
        p99_ms: latencies.percentile_ms(99.0),
        max_ms: latencies.percentile_ms(100.0),
        errors: latencies.errors,
    })
}
