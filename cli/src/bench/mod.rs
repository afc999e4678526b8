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
//!
//! One file per benchmark; this one holds the command, what they share ([`Latencies`]), and
//! turns the command's flags into each benchmark's settings.

mod cache;
mod failover;
mod lock;
mod queue;
mod write;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;

use crate::connect::Target;

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// Closed-loop writes from C clients for a fixed time against a running cluster.
    Write {
        /// Concurrent clients (each keeps one write in flight).
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Connections the clients share, each with its own session; default one per client.
        #[arg(long)]
        connections: Option<usize>,
        /// Seconds to run.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Bytes per value.
        #[arg(long, default_value_t = 100)]
        value_size: usize,
    },
    /// Closed-loop lock+unlock cycles from C clients (one session each) against a running cluster.
    Lock {
        /// Concurrent clients.
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// All clients take the same lock (otherwise each its own).
        #[arg(long)]
        contended: bool,
        /// Seconds to run.
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
    /// Producers put and consumers get+ack messages of one queue for a fixed time, against a
    /// running cluster; one JSON line per --in-flight value.
    Queue {
        /// Producer clients.
        #[arg(long, default_value_t = 4)]
        producers: usize,
        /// Consumer clients.
        #[arg(long, default_value_t = 4)]
        consumers: usize,
        /// Bytes per message.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Puts each producer keeps in flight: 1 is a synchronous producer. A comma-separated
        /// list runs one measurement per value.
        #[arg(long, value_delimiter = ',', default_value = "1,32")]
        in_flight: Vec<usize>,
        /// Messages each consumer fetches per get (and acks in one request).
        #[arg(long, default_value_t = 32)]
        prefetch: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
    /// Clients read and write Zipf-popular cache keys; prints ops/s, latency and hit rate, one
    /// JSON line per consistency. Needs nodes with --redis (`distsync dev` starts one).
    Cache {
        /// Concurrent clients (closed loops).
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Connections the clients share round robin (default: one each), homed round robin
        /// on the endpoints; concurrent gets on one connection are merged into one request.
        #[arg(long)]
        connections: Option<usize>,
        /// Home each connection on one node, round robin, instead of routing each key to the
        /// node its hash picks (the client's default).
        #[arg(long)]
        homed: bool,
        /// Distinct keys (all written before measuring).
        #[arg(long, default_value_t = 100_000)]
        keys: usize,
        /// Zipf exponent of key popularity.
        #[arg(long, default_value_t = 0.99)]
        zipf: f64,
        /// Fraction of operations that are reads.
        #[arg(long, default_value_t = 0.9)]
        read_ratio: f64,
        /// Bytes per value.
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        /// Refuse to run unless the nodes cache this many entries each (`--cache-entries`).
        #[arg(long)]
        cache_entries: Option<u64>,
        /// Read consistencies to measure, comma-separated: linearizable, local.
        #[arg(long, value_delimiter = ',', default_value = "linearizable,local")]
        consistency: Vec<String>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Seconds of unmeasured load first, to fill the caches.
        #[arg(long, default_value_t = 3)]
        warmup: u64,
    },
    /// Start a local 3-node cluster, SIGKILL the leader under load, measure the outage.
    Failover {
        /// Leader kills.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Concurrent writers during the test.
        #[arg(long, default_value_t = 4)]
        writers: usize,
        /// Client attempt timeout in ms: how soon a client gives up on a silent node.
        #[arg(long, default_value_t = 150)]
        attempt_timeout_ms: u64,
        /// Passed to the nodes: leader heartbeat interval.
        #[arg(long, default_value_t = 50)]
        heartbeat_ms: u64,
        /// Passed to the nodes: lower bound of the election timeout.
        #[arg(long, default_value_t = 150)]
        election_timeout_min_ms: u64,
        /// Passed to the nodes: upper bound of the election timeout.
        #[arg(long, default_value_t = 300)]
        election_timeout_max_ms: u64,
    },
}

/// Runs one benchmark; prints its JSON lines on stdout.
pub(crate) async fn run(target: &Target, command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Queue { producers, consumers, size, in_flight, prefetch, duration } => {
            let (tls, endpoints) = target.running_cluster()?;
            for in_flight in in_flight {
                let settings = queue::QueueSettings {
                    producers,
                    consumers,
                    size,
                    in_flight,
                    prefetch,
                    duration: Duration::from_secs(duration),
                };
                let report = queue::run(endpoints, tls.clone(), &settings).await?;
                println!("{}", serde_json::to_string(&report)?);
            }
        }
        BenchCommand::Cache {
            clients,
            connections,
            homed,
            keys,
            zipf,
            read_ratio,
            value_size,
            cache_entries,
            consistency,
            duration,
            warmup,
        } => {
            let (tls, endpoints) = target.running_cluster()?;
            for consistency in consistency {
                let consistency = match consistency.as_str() {
                    "linearizable" => distsync::Consistency::Linearizable,
                    "local" => distsync::Consistency::Local,
                    other => anyhow::bail!("--consistency {other:?}: expected linearizable or local"),
                };
                let settings = cache::CacheSettings {
                    clients,
                    connections: connections.unwrap_or(clients),
                    homed,
                    keys,
                    zipf,
                    read_ratio,
                    value_size,
                    cache_entries,
                    consistency,
                    duration: Duration::from_secs(duration),
                    warmup: Duration::from_secs(warmup),
                };
                let report = cache::run(endpoints, tls.clone(), &settings).await?;
                println!("{}", serde_json::to_string(&report)?);
            }
        }
        BenchCommand::Write { clients, connections, duration, value_size } => {
            let (tls, endpoints) = target.running_cluster()?;
            let connections = connections.unwrap_or(clients);
            let report =
                write::run(endpoints, tls, clients, connections, Duration::from_secs(duration), value_size).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        BenchCommand::Lock { clients, contended, duration } => {
            let (tls, endpoints) = target.running_cluster()?;
            let report = lock::run(endpoints, tls, clients, contended, Duration::from_secs(duration)).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        BenchCommand::Failover {
            rounds,
            writers,
            attempt_timeout_ms,
            heartbeat_ms,
            election_timeout_min_ms,
            election_timeout_max_ms,
        } => {
            let node_args = vec![
                format!("--heartbeat-ms={heartbeat_ms}"),
                format!("--election-timeout-min-ms={election_timeout_min_ms}"),
                format!("--election-timeout-max-ms={election_timeout_max_ms}"),
            ];
            let settings = failover::FailoverSettings {
                rounds,
                writers,
                attempt_timeout: Duration::from_millis(attempt_timeout_ms),
                node_args,
            };
            let summary = failover::run(&settings, |round| {
                println!("{}", serde_json::to_string(round).expect("serializable"));
            })
            .await?;
            println!("{}", serde_json::to_string(&summary)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Latencies of successful operations and the count of failed ones, from every load task.
pub(crate) struct Latencies {
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
pub(crate) fn micros_since(since: Instant) -> u32 {
    since.elapsed().as_micros().min(u32::MAX as u128) as u32
}
