//! `bench queue`: producers and consumers of one queue, acked end to end.

use std::time::{Duration, Instant};

use distsync::{Client, ClientOptions, ClientTls};
use serde::Serialize;

use super::{micros_since, Latencies};

/// Ack requests a benchmark consumer keeps outstanding while it gets the next batch.
const ACKS_OUTSTANDING_MAX: usize = 4;

/// Settings of `bench queue`.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Producer clients.
    pub producers: usize,
    /// Consumer clients.
    pub consumers: usize,
    /// Bytes per message.
    pub size: usize,
    /// Puts each producer keeps outstanding.
    pub in_flight: usize,
    /// Messages per consumer get (acked in one request).
    pub prefetch: usize,
    /// How long to run.
    pub duration: Duration,
}

/// Result of `bench queue`.
#[derive(Serialize, Debug)]
pub struct QueueReport {
    /// Always "queue".
    pub bench: &'static str,
    /// Producer clients.
    pub producers: usize,
    /// Consumer clients.
    pub consumers: usize,
    /// Bytes per message.
    pub size: usize,
    /// Puts each producer keeps outstanding.
    pub in_flight: usize,
    /// Messages per consumer get.
    pub prefetch: usize,
    /// Measured seconds.
    pub duration_s: f64,
    /// Acknowledged puts.
    pub puts: u64,
    /// Acknowledged puts per second.
    pub puts_per_sec: f64,
    /// Messages acked by consumers.
    pub acked: u64,
    /// Messages acked per second: the end-to-end throughput.
    pub acked_per_sec: f64,
    /// Put latency percentiles, milliseconds.
    pub put_p50_ms: f64,
    /// 99th percentile.
    pub put_p99_ms: f64,
    /// Slowest put.
    pub put_max_ms: f64,
    /// Failed puts, gets and acks.
    pub errors: u64,
}

/// Runs the queue benchmark against a running cluster, on a queue of its own that it deletes
/// afterwards.
///
/// # Errors
///
/// When clients cannot connect or the queue cannot be set up.
pub(crate) async fn run(endpoints: &[String], tls: ClientTls, settings: &QueueSettings) -> anyhow::Result<QueueReport> {
    anyhow::ensure!(settings.producers >= 1 && settings.consumers >= 1, "--producers and --consumers must be >= 1");
    anyhow::ensure!(settings.in_flight >= 1, "--in-flight must be at least 1");
    anyhow::ensure!(
        (1..=distsync::wire::QUEUE_BATCH_MAX).contains(&settings.prefetch),
        "--prefetch must be between 1 and {}",
        distsync::wire::QUEUE_BATCH_MAX
    );
    let name = format!("bench-{}-{}", std::process::id(), settings.in_flight);
    let mut producers = Vec::new();
    let mut consumers = Vec::new();
    for number in 0..settings.producers + settings.consumers {
        let client = Client::connect_with(ClientOptions::new(endpoints, tls.clone())).await?;
        // Opens the session and finds the leader before the clock starts.
        client.kv().put(format!("bench/warmup/{number}"), b"x").await?;
        if number < settings.producers {
            producers.push(client);
        } else {
            consumers.push(client);
        }
    }
    producers[0].queue(&name).create(distsync::QueueOptions::default()).await?;
    let body = vec![b'm'; settings.size];
    let start = Instant::now();
    let deadline = start + settings.duration;
    let mut puts = tokio::task::JoinSet::new();
    for client in &producers {
        for _ in 0..settings.in_flight {
            let queue = client.queue(&name);
            let body = body.clone();
            puts.spawn(async move {
                let mut latencies_us: Vec<u32> = Vec::with_capacity(1 << 14);
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match queue.put(body.clone()).await {
                        Ok(_) => latencies_us.push(micros_since(sent)),
                        Err(_) => errors += 1,
                    }
                }
                (latencies_us, errors)
            });
        }
    }
    let mut gets = tokio::task::JoinSet::new();
    for client in &consumers {
        let queue = client.queue(&name);
        let prefetch = settings.prefetch;
        gets.spawn(async move {
            let (mut acked, mut errors) = (0u64, 0u64);
            let mut get_errors = 0u64;
            // Acks go out asynchronously (a few batches outstanding) while the next get is in
            // flight, as a consumer that acks after processing each batch would.
            let mut acks = tokio::task::JoinSet::new();
            let mut settle =
                |finished: Result<Result<usize, distsync::QueueError>, tokio::task::JoinError>| match finished {
                    Ok(Ok(count)) => acked += count as u64,
                    _ => errors += 1,
                };
            while Instant::now() < deadline {
                let wait = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(200));
                match queue.get_batch(prefetch, wait).await {
                    Ok(batch) if batch.is_empty() => {}
                    Ok(batch) => {
                        let queue = queue.clone();
                        acks.spawn(async move { queue.ack_all(&batch).await.map(|()| batch.len()) });
                        while acks.len() > ACKS_OUTSTANDING_MAX {
                            if let Some(finished) = acks.join_next().await {
                                settle(finished);
                            }
                        }
                    }
                    Err(_) => get_errors += 1,
                }
            }
            while let Some(finished) = acks.join_next().await {
                settle(finished);
            }
            (acked, errors + get_errors)
        });
    }
    let latencies = Latencies::gather(puts).await?;
    let (mut acked, mut errors) = (0u64, latencies.errors);
    while let Some(joined) = gets.join_next().await {
        let (consumer_acked, consumer_errors) = joined?;
        acked += consumer_acked;
        errors += consumer_errors;
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Err(error) = producers[0].queue(&name).delete().await {
        tracing::warn!(%error, queue = %name, "could not delete the benchmark queue");
    }
    for client in producers.iter().chain(&consumers) {
        client.close().await;
    }
    Ok(QueueReport {
        bench: "queue",
        producers: settings.producers,
        consumers: settings.consumers,
        size: settings.size,
        in_flight: settings.in_flight,
        prefetch: settings.prefetch,
        duration_s: elapsed,
        puts: latencies.count(),
        puts_per_sec: latencies.count() as f64 / elapsed,
        acked,
        acked_per_sec: acked as f64 / elapsed,
        put_p50_ms: latencies.percentile_ms(50.0),
        put_p99_ms: latencies.percentile_ms(99.0),
        put_max_ms: latencies.percentile_ms(100.0),
        errors,
    })
}
