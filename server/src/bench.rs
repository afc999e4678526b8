//! `distsync bench`: load generators that print JSON lines.
//!
//! - `write`: C clients spread over N connections (each with its own session) put 100-byte (by
//!   default) values in a closed loop for a fixed time; reports throughput and latency
//!   percentiles of acknowledged (committed, fsync'd on a majority) writes.
//! - `lock`: C clients (one session each) take and release a lock in a closed loop: each its own
//!   lock, or all the same one (`--contended`); reports lock+unlock cycles per second and the
//!   latency of acquires, waiting included.
//! - `queue`: producers put messages (each keeping `in_flight` puts outstanding) and consumers
//!   fetch them `prefetch` at a time and ack each batch in one request, for a fixed time;
//!   reports acked messages per second end to end and put latency percentiles.
//! - `failover`: starts its own 3-node cluster, keeps a write load on it, SIGKILLs the leader,
//!   and measures how long no write succeeded and how long until a new leader was elected.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distsync::{Client, ClientOptions, ClientTls};
use serde::Serialize;

use crate::local_cluster::{LocalCluster, Ports};

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
pub async fn write(
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
pub async fn lock(
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
pub async fn queue(endpoints: &[String], tls: ClientTls, settings: &QueueSettings) -> anyhow::Result<QueueReport> {
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

/// Latencies of successful operations and the count of failed ones, from every load task.
struct Latencies {
    sorted_us: Vec<u32>,
    errors: u64,
}

impl Latencies {
    /// Waits for every task; each returns its latencies (µs) and its error count.
    async fn gather(mut tasks: tokio::task::JoinSet<(Vec<u32>, u64)>) -> anyhow::Result<Latencies> {
        let mut all = Latencies { sorted_us: Vec::new(), errors: 0 };
        while let Some(joined) = tasks.join_next().await {
            let (mut part, errors) = joined?;
            all.sorted_us.append(&mut part);
            all.errors += errors;
        }
        all.sorted_us.sort_unstable();
        Ok(all)
    }

    /// Successful operations.
    fn count(&self) -> u64 {
        self.sorted_us.len() as u64
    }

    /// The `p`th percentile (nearest rank; 100 is the maximum), in milliseconds.
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.sorted_us.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.sorted_us.len() as f64).ceil() as usize;
        self.sorted_us[rank.clamp(1, self.sorted_us.len()) - 1] as f64 / 1000.0
    }
}

/// Microseconds since `since`, saturating.
fn micros_since(since: Instant) -> u32 {
    since.elapsed().as_micros().min(u32::MAX as u128) as u32
}

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

/// Runs `rounds` leader kills against a fresh local cluster in `directory` (nodes started with
/// `node_args` besides the usual ones), printing one JSON line per round through `report`.
///
/// # Errors
///
/// When the cluster cannot start or no new leader appears.
pub async fn failover(
    directory: &Path,
    rounds: u32,
    writers: usize,
    attempt_timeout: Duration,
    node_args: &[String],
    mut report: impl FnMut(&FailoverRound),
) -> anyhow::Result<FailoverSummary> {
    let node_args: Vec<&str> = node_args.iter().map(String::as_str).collect();
    let mut cluster = LocalCluster::start(directory, 3, Ports::Any, &node_args)?;
    let first = cluster.wait_for_leader(0, Duration::from_secs(10)).await?;
    let acknowledged: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut load = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let client =
            cluster.client(|o| o.attempt_timeout(attempt_timeout).request_timeout(Duration::from_secs(30))).await?;
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
    for round in 1..=rounds {
        // Steady state first: writes flowing for a while with everyone caught up.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let killed_at = Instant::now();
        cluster.kill(leader);
        let status = cluster.wait_for_leader(term, Duration::from_secs(10)).await?;
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
        cluster.restart(leader)?;
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

/// Settings of `bench cache`.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Concurrent clients (closed loops).
    pub clients: usize,
    /// Connections (`Client`s) they share round robin; one connection's concurrent gets are
    /// merged into shared requests.
    pub connections: usize,
    /// Home each connection on one node (round robin) instead of sending each key to the node
    /// its hash picks.
    pub homed: bool,
    /// Distinct keys.
    pub keys: usize,
    /// Zipf exponent of key popularity (0: uniform).
    pub zipf: f64,
    /// Fraction of operations that are reads.
    pub read_ratio: f64,
    /// Bytes per value.
    pub value_size: usize,
    /// The cache size the nodes must run with (`--cache-entries`), checked before measuring.
    pub cache_entries: Option<u64>,
    /// Read consistency.
    pub consistency: distsync::Consistency,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time first, so that caches fill.
    pub warmup: Duration,
}

/// Result of `bench cache`.
#[derive(Serialize, Debug)]
pub struct CacheReport {
    /// Always "cache".
    pub bench: &'static str,
    /// "linearizable" or "local".
    pub consistency: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// Connections they share.
    pub connections: usize,
    /// Whether each connection used one home node (else: keys routed by hash).
    pub homed: bool,
    /// Distinct keys.
    pub keys: usize,
    /// Zipf exponent.
    pub zipf: f64,
    /// Fraction of reads.
    pub read_ratio: f64,
    /// Copies each node's cache holds at most.
    pub cache_entries: u64,
    /// Measured seconds.
    pub duration_s: f64,
    /// Reads and writes completed.
    pub ops: u64,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Reads completed.
    pub reads: u64,
    /// Writes completed.
    pub writes: u64,
    /// Latency percentiles of all operations, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Read latency percentiles.
    pub read_p50_ms: f64,
    /// 99th percentile of reads.
    pub read_p99_ms: f64,
    /// Write latency percentiles.
    pub write_p50_ms: f64,
    /// 99th percentile of writes.
    pub write_p99_ms: f64,
    /// Reads served from a node's copy, over reads of present keys, on all nodes.
    pub hit_rate: f64,
    /// Reads that went to Redis.
    pub misses: u64,
    /// Reads served from values pending write-back.
    pub pending_reads: u64,
    /// Failed operations.
    pub errors: u64,
}

/// Keys by Zipf popularity: rank `r` (from 0) has weight `1 / (r + 1)^s`.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(keys: usize, exponent: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (0..keys)
            .map(|rank| {
                total += 1.0 / ((rank + 1) as f64).powf(exponent);
                total
            })
            .collect::<Vec<_>>();
        Self { cumulative: cumulative.into_iter().map(|c| c / total).collect() }
    }

    /// The rank for a uniform sample in [0, 1).
    fn sample(&self, uniform: f64) -> usize {
        self.cumulative.partition_point(|c| *c < uniform).min(self.cumulative.len() - 1)
    }
}

/// xorshift64*: a uniform sample in [0, 1).
fn next_uniform(state: &mut u64) -> f64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
}

/// The sum of the nodes' cache counters.
async fn cache_totals(client: &Client, endpoints: &[String]) -> anyhow::Result<(u64, u64, u64, u64)> {
    let mut totals = (0, 0, 0, 0);
    for endpoint in endpoints {
        let stats = client.cache_stats_on(endpoint).await?;
        totals.0 += stats.hits;
        totals.1 += stats.misses;
        totals.2 += stats.pending_reads;
        totals.3 += stats.pending_write_backs;
    }
    Ok(totals)
}

/// Runs the cache benchmark against a running cluster: fills every key once, then `clients`
/// closed loops read (or write) Zipf-popular keys.
///
/// # Errors
///
/// When clients cannot connect, or the nodes' cache size differs from `cache_entries`.
pub async fn cache(endpoints: &[String], tls: ClientTls, settings: &CacheSettings) -> anyhow::Result<CacheReport> {
    anyhow::ensure!(settings.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(settings.keys >= 1, "--keys must be at least 1");
    anyhow::ensure!((0.0..=1.0).contains(&settings.read_ratio), "--read-ratio must be between 0 and 1");
    let admin = Client::new_unconnected(ClientOptions::new(endpoints, tls.clone()))?;
    let mut capacity = None;
    for endpoint in endpoints {
        let stats = admin.cache_stats_on(endpoint).await?;
        if let Some(wanted) = settings.cache_entries {
            anyhow::ensure!(
                stats.capacity_entries == wanted,
                "node {} at {endpoint} caches up to {} entries, not {wanted}: start the nodes with \
                 --cache-entries {wanted} (distsync dev --cache-entries {wanted})",
                stats.node,
                stats.capacity_entries
            );
        }
        anyhow::ensure!(
            !stats.backing.starts_with("embedded"),
            "node {} keeps cache values in the embedded store; run the nodes with --redis for this benchmark",
            stats.node
        );
        capacity = Some(stats.capacity_entries);
    }
    anyhow::ensure!(
        (1..=settings.clients).contains(&settings.connections),
        "--connections must be between 1 and --clients"
    );
    let mut connections = Vec::with_capacity(settings.connections);
    for number in 0..settings.connections {
        let mut options = ClientOptions::new(endpoints, tls.clone());
        if settings.homed {
            options = options.home(&endpoints[number % endpoints.len()]);
        }
        connections.push(Client::connect_with(options).await?);
    }
    let clients: Vec<Client> =
        (0..settings.clients).map(|number| connections[number % settings.connections].clone()).collect();
    let value = vec![b'v'; settings.value_size];
    // Every key exists, written back to Redis, before the clock starts.
    let fill_start = Instant::now();
    let mut fill = tokio::task::JoinSet::new();
    for (number, client) in clients.iter().enumerate() {
        let (client, value, count, keys) = (client.clone(), value.clone(), settings.clients, settings.keys);
        fill.spawn(async move {
            let cache = client.cache();
            for key in (number..keys).step_by(count) {
                cache.set(format!("bench:{key}"), &value).await?;
            }
            Ok::<(), distsync::ClientError>(())
        });
    }
    while let Some(joined) = fill.join_next().await {
        joined??;
    }
    while cache_totals(&admin, endpoints).await?.3 > 0 {
        anyhow::ensure!(fill_start.elapsed() < Duration::from_secs(120), "the write-back to Redis did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let zipf = Arc::new(Zipf::new(settings.keys, settings.zipf));
    let cache_of = |client: &Client| client.cache().consistency(settings.consistency);
    let run = |window: Duration, seed_base: u64| {
        let mut tasks = tokio::task::JoinSet::new();
        let deadline = Instant::now() + window;
        for (number, client) in clients.iter().enumerate() {
            let (cache, zipf, value, read_ratio) = (cache_of(client), zipf.clone(), value.clone(), settings.read_ratio);
            tasks.spawn(async move {
                let mut state = (seed_base + number as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let (mut reads, mut writes) = (Vec::with_capacity(1 << 16), Vec::with_capacity(1 << 14));
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let key = format!("bench:{}", zipf.sample(next_uniform(&mut state)));
                    let read = next_uniform(&mut state) < read_ratio;
                    let sent = Instant::now();
                    let ok = if read { cache.get(&key).await.is_ok() } else { cache.set(&key, &value).await.is_ok() };
                    match (ok, read) {
                        (true, true) => reads.push(micros_since(sent)),
                        (true, false) => writes.push(micros_since(sent)),
                        (false, _) => errors += 1,
                    }
                }
                (reads, writes, errors)
            });
        }
        tasks
    };
    let mut warmup = run(settings.warmup, 1 << 32);
    while let Some(joined) = warmup.join_next().await {
        joined?;
    }
    let before = cache_totals(&admin, endpoints).await?;
    let start = Instant::now();
    let mut measured = run(settings.duration, 0);
    let (mut reads, mut writes, mut errors) = (Vec::new(), Vec::new(), 0);
    while let Some(joined) = measured.join_next().await {
        let (mut r, mut w, e) = joined?;
        reads.append(&mut r);
        writes.append(&mut w);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = cache_totals(&admin, endpoints).await?;
    for client in &connections {
        client.close().await;
    }
    let (hits, misses, pending) = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
    let mut all: Vec<u32> = reads.iter().chain(&writes).copied().collect();
    all.sort_unstable();
    reads.sort_unstable();
    writes.sort_unstable();
    let percentile = |sorted: &[u32], p: f64| Latencies { sorted_us: sorted.to_vec(), errors: 0 }.percentile_ms(p);
    let ops = all.len() as u64;
    Ok(CacheReport {
        bench: "cache",
        consistency: match settings.consistency {
            distsync::Consistency::Linearizable => "linearizable",
            distsync::Consistency::Local => "local",
        },
        clients: settings.clients,
        connections: settings.connections,
        homed: settings.homed,
        keys: settings.keys,
        zipf: settings.zipf,
        read_ratio: settings.read_ratio,
        cache_entries: capacity.unwrap_or(0),
        duration_s: elapsed,
        ops,
        ops_per_sec: ops as f64 / elapsed,
        reads: reads.len() as u64,
        writes: writes.len() as u64,
        p50_ms: percentile(&all, 50.0),
        p99_ms: percentile(&all, 99.0),
        read_p50_ms: percentile(&reads, 50.0),
        read_p99_ms: percentile(&reads, 99.0),
        write_p50_ms: percentile(&writes, 50.0),
        write_p99_ms: percentile(&writes, 99.0),
        hit_rate: if hits + misses + pending == 0 { 0.0 } else { hits as f64 / (hits + misses + pending) as f64 },
        misses,
        pending_reads: pending,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_low_ranks_and_covers_the_range() {
        let zipf = Zipf::new(1000, 0.99);
        let mut state = 7u64;
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[zipf.sample(next_uniform(&mut state))] += 1;
        }
        assert!(counts[0] > counts[9] * 5, "rank 0 should be about ten times rank 9");
        assert!(counts[500..].iter().sum::<u32>() > 0, "the tail is sampled too");
        assert_eq!(zipf.sample(0.999_999_999), 999);
    }
}
