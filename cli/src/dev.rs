//! `distsync dev`: certificates and a local cluster on loopback (with a Redis for the cache when
//! one is installed), in the foreground until Ctrl-C. The nodes are child processes started by
//! the same harness the cluster tests use.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use distsync_harness::{Cluster, ClusterOptions, Fsync, Redis};

use crate::signals::shutdown_signal;

#[derive(Args)]
pub(crate) struct DevArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Where certificates, data and logs go.
    #[arg(long, default_value = ".distsync-dev")]
    dir: PathBuf,
    /// Node N listens on BASE+N-1 (UDP) and serves metrics on BASE+100+N-1 (HTTP); a Redis
    /// started for the cluster listens on BASE+200.
    #[arg(long, default_value_t = 7101)]
    base_port: u16,
    /// Redis for the cache's values. Default: start a redis-server for the cluster when one is
    /// on PATH (data in DIR/redis, append-only file fsync'd every second), else use the
    /// embedded store.
    #[arg(long)]
    redis: Option<String>,
    /// Use the embedded store even if redis-server is on PATH.
    #[arg(long, conflicts_with = "redis")]
    no_redis: bool,
    /// Copies each node's cache may hold.
    #[arg(long)]
    cache_entries: Option<usize>,
    /// Bytes each node's cache may hold.
    #[arg(long)]
    cache_bytes: Option<u64>,
}

/// Runs a local cluster until Ctrl-C or SIGTERM, then stops it cleanly.
pub(crate) async fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!((1..=7).contains(&args.nodes), "--nodes must be between 1 and 7");
    let redis_port = args.base_port.checked_add(200).ok_or_else(|| anyhow::anyhow!("--base-port is too high"))?;
    let mut redis_server = None;
    let redis = match (&args.redis, args.no_redis) {
        (Some(url), _) => Some(url.clone()),
        (None, true) => None,
        (None, false) if Redis::installed() => {
            let server = Redis::start_at(&args.dir.join("redis"), redis_port, Fsync::EverySecond).await?;
            let url = server.url();
            redis_server = Some(server);
            Some(url)
        }
        (None, false) => {
            println!("redis-server is not on PATH: the cache keeps its values in the embedded store");
            None
        }
    };
    let options = ClusterOptions {
        redis: redis.clone(),
        cache_entries: args.cache_entries,
        cache_bytes: args.cache_bytes,
        fault_injection: false,
        directory: Some(args.dir.clone()),
        base_port: Some(args.base_port),
        binary: Some(std::env::current_exe()?),
        ..ClusterOptions::default()
    };
    let nodes = usize::try_from(args.nodes)?;
    let cluster = Cluster::start(nodes, options).await?;
    let leader = match cluster.wait_for_new_leader(0, Duration::from_secs(15)).await {
        Ok(leader) => leader,
        Err(error) => {
            cluster.stop();
            anyhow::bail!("{error}; see the logs in {}", args.dir.display());
        }
    };
    let endpoints = cluster.endpoints().join(",");
    let ca = cluster.ca_path();
    println!("distsync dev: {} nodes on loopback, node {} leads", args.nodes, leader.id);
    for id in cluster.ids() {
        println!(
            "  node {id}  {}  metrics http://{}/metrics  log {}",
            cluster.endpoint(id),
            cluster.admin(id).unwrap_or_default(),
            cluster.log_path(id).display()
        );
    }
    println!("endpoints: {endpoints}");
    println!("CA:        {}", ca.display());
    match &redis {
        Some(url) => println!("cache:     values in Redis at {url}"),
        None => println!("cache:     values in the embedded store (development only)"),
    }
    println!("try:       distsync --endpoints {endpoints} --ca {} status", ca.display());
    println!("Ctrl-C stops the cluster.");
    shutdown_signal().await;
    println!("stopping the nodes");
    cluster.stop();
    drop(redis_server);
    Ok(ExitCode::SUCCESS)
}
