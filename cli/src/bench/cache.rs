//! `bench cache`: reads and writes of Zipf-popular keys through the coherent cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use distsync::{Client, ClientOptions, ClientTls};
use serde::Serialize;

use super::{micros_since, Latencies};

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
pub struct CacheBenchReport {
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
pub(crate) async fn run(
    endpoints: &[String],
    tls: ClientTls,
    settings: &CacheSettings,
) -> anyhow::Result<CacheBenchReport> {
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
    Ok(CacheBenchReport {
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
