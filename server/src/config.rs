//! Node configuration: one struct for flags (clap) and files (serde), checked by `validate`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

/// Largest cluster supported: Raft's cost grows with members, and 7 tolerates 3 failures.
pub const CLUSTER_NODES_MAX: usize = 7;

/// Everything a node needs to run.
#[derive(Args, Serialize, Deserialize, Debug, Clone)]
pub struct ServerConfig {
    /// This node's id, 1-based; never reuse an id for a different data directory.
    #[arg(long)]
    pub id: u64,
    /// UDP address to listen on for clients and peers, `HOST:PORT`.
    #[arg(long)]
    pub listen: SocketAddr,
    /// The initial members, `1=HOST:PORT,2=HOST:PORT,...`, including this node.
    #[arg(long, value_parser = parse_peers)]
    pub peers: Peers,
    /// Where the Raft log, vote and snapshots live.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Directory from `distsync certs init` (ca.pem, node-N.pem, node-N-key.pem).
    #[arg(long)]
    pub tls_dir: PathBuf,
    /// Optional HTTP address serving Prometheus metrics (/metrics) and status (/status).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Leader heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout in milliseconds.
    #[arg(long, default_value_t = 150)]
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub election_timeout_max_ms: u64,
    /// Take a snapshot (and compact the log) after this many entries since the last one.
    #[arg(long, default_value_t = 20_000)]
    pub snapshot_threshold: u64,
    /// Take a snapshot (and compact the log) once the entries since the last one hold this many
    /// bytes, whatever their count: large writes would otherwise fill the disk (and a restart
    /// would replay them) long before the entry count is reached.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub snapshot_log_bytes: u64,
    /// Bytes of recent log entries each node keeps in memory to replicate from; older entries
    /// are read from disk when a follower needs them.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub log_cache_bytes: u64,
    /// Bytes of client requests a node reads and handles at once, counted by the size each
    /// request announces before its body is read; a request beyond is answered `Busy` with a
    /// retry-after hint, unread. Bounds the memory a flood of large requests can take.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub inflight_request_bytes: u64,
    /// How long a write may wait to commit before the client is told the cluster is unavailable.
    #[arg(long, default_value_t = 2_000)]
    pub write_timeout_ms: u64,
    /// An idle leader proposes a tick this often so that leases expire on time.
    #[arg(long, default_value_t = 500)]
    pub tick_ms: u64,
    /// Test only: accept requests to drop traffic to chosen peers (simulated partitions).
    #[arg(long, default_value_t = false)]
    pub enable_fault_injection: bool,
    /// Test only, with `--enable-fault-injection`: break one guarantee on purpose, so that the
    /// fault suite (`distsync-torture`) shows its checker for that guarantee catches it. Never
    /// in production: the node then serves wrong answers.
    #[arg(long, value_enum)]
    #[serde(default)]
    pub inject_bug: Option<InjectedBug>,
    /// Redis holding the cache's values, `redis://HOST:PORT[/DB]`. Without it the values stay in
    /// the replicated log and snapshots: development only, and writes are refused once
    /// `--max-cache-pending-bytes` (256 MiB) of values are held.
    #[arg(long, env = "DISTSYNC_REDIS")]
    pub redis: Option<String>,
    /// Bytes of keys and values this node's own cache may hold.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub cache_bytes: u64,
    /// Copies this node's own cache may hold.
    #[arg(long, default_value_t = 1_000_000)]
    pub cache_entries: usize,
    /// How much clients may make the cluster hold (`--max-…`); give every node the same: the
    /// leader's are in force.
    #[command(flatten)]
    #[serde(default)]
    pub limits: crate::state::limits::Limits,
}

/// A guarantee broken on purpose (`--inject-bug`), for showing that a checker catches it.
#[derive(clap::ValueEnum, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum InjectedBug {
    /// Serve kv and cache reads from this node's applied state, without a read index (and kv
    /// reads without forwarding to the leader): a follower, or a deposed leader, answers stale
    /// values. The kv and cache register checkers must fail.
    StaleReads,
    /// Answer kv and queue puts before they commit (without waiting for a majority's fsync): a
    /// put the client saw acknowledged is not yet visible, and is lost when the leader dies
    /// first. The kv register checker, and with kills the queue checker, must fail.
    EarlyAck,
    /// Answer a queued lock request as granted (with the request's revision as its token), and
    /// a release of a hold the owner does not have as done: a lock granted without checking
    /// who holds it, so holds overlap in real time. The lock checker must fail.
    GrantQueued,
    /// Give every write that arrives from a client a fresh sequence number, so the session no
    /// longer recognises a retry: a put whose answer was lost (its leader killed after the
    /// commit) is applied twice. The sessions checker must fail.
    ForgetAnswers,
    /// Never fsync the Raft log: a killed node loses nothing (the kernel keeps its writes), but
    /// a power cut to every node loses acknowledged writes. The kv register checker must fail
    /// under the fault suite's power cuts.
    SkipFsync,
}

/// The initial members by id.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Peers(pub BTreeMap<u64, String>);

fn parse_peers(text: &str) -> Result<Peers, String> {
    let mut peers = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, address) = part.split_once('=').ok_or_else(|| format!("peer {part:?} is not ID=HOST:PORT"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("peer id {id:?} is not a positive integer"))?;
        if id == 0 {
            return Err("peer ids start at 1".into());
        }
        if peers.insert(id, address.trim().to_string()).is_some() {
            return Err(format!("peer id {id} appears twice"));
        }
    }
    Ok(Peers(peers))
}

impl ServerConfig {
    /// Checks relations between settings.
    ///
    /// # Errors
    ///
    /// A message naming the setting to fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        let peers = &self.peers.0;
        anyhow::ensure!(!peers.is_empty(), "--peers is empty; list every initial member including this node");
        anyhow::ensure!(
            peers.len() <= CLUSTER_NODES_MAX,
            "{} members given; at most {CLUSTER_NODES_MAX} are supported",
            peers.len()
        );
        anyhow::ensure!(peers.contains_key(&self.id), "--peers does not list this node's id {}", self.id);
        anyhow::ensure!(self.heartbeat_ms > 0, "--heartbeat-ms must be positive");
        anyhow::ensure!(
            self.inject_bug.is_none() || self.enable_fault_injection,
            "--inject-bug breaks a guarantee on purpose and is for tests only; it needs --enable-fault-injection"
        );
        self.limits.validate().map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            self.heartbeat_ms * 2 < self.election_timeout_min_ms,
            "--heartbeat-ms ({}) must be well below --election-timeout-min-ms ({}), at most half",
            self.heartbeat_ms,
            self.election_timeout_min_ms
        );
        anyhow::ensure!(
            self.election_timeout_min_ms < self.election_timeout_max_ms,
            "--election-timeout-min-ms must be below --election-timeout-max-ms"
        );
        anyhow::ensure!(self.snapshot_threshold >= 10, "--snapshot-threshold must be at least 10 entries");
        anyhow::ensure!(
            self.snapshot_log_bytes >= 1024 * 1024,
            "--snapshot-log-bytes must be at least 1 MiB (a single entry can hold 5 MiB)"
        );
        anyhow::ensure!(
            self.write_timeout_ms > self.election_timeout_max_ms,
            "--write-timeout-ms must exceed the election timeout, or writes fail during ordinary elections"
        );
        anyhow::ensure!(self.tick_ms > 0, "--tick-ms must be positive");
        anyhow::ensure!(
            self.inflight_request_bytes >= distsync::wire::FRAME_BYTES_MAX as u64
                && self.inflight_request_bytes <= u64::from(u32::MAX),
            "--inflight-request-bytes must be between one largest request ({} bytes) and 4 GiB",
            distsync::wire::FRAME_BYTES_MAX
        );
        if let Some(url) = &self.redis {
            anyhow::ensure!(
                url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://"),
                "--redis {url:?} is not a Redis URL; expected redis://HOST:PORT"
            );
        }
        Ok(())
    }

    /// This node's advertised address (as listed in `--peers`).
    pub fn advertised_address(&self) -> &str {
        &self.peers.0[&self.id]
    }

    /// The write commit timeout.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    /// Lease grace granted after a leader change: two maximal election timeouts.
    pub fn lease_grace_ms(&self) -> u64 {
        2 * self.election_timeout_max_ms
    }

    /// The openraft configuration.
    ///
    /// # Errors
    ///
    /// When openraft rejects the values.
    pub fn raft_config(&self) -> anyhow::Result<openraft::Config> {
        let config = openraft::Config {
            cluster_name: "distsync".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_threshold),
            // Keep some log after a snapshot so slightly lagging followers catch up from the log.
            max_in_snapshot_log_to_keep: (self.snapshot_threshold / 10).max(10),
            // Snapshot chunks stay well below the frame limit.
            snapshot_max_chunk_size: 4 * 1024 * 1024,
            max_payload_entries: 1024,
            ..Default::default()
        };
        Ok(config.validate()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_reject_bad_input() {
        let peers = parse_peers("1=127.0.0.1:7101, 2=127.0.0.1:7102").unwrap();
        assert_eq!(peers.0.len(), 2);
        assert_eq!(peers.0[&2], "127.0.0.1:7102");
        assert!(parse_peers("1=a:1,1=b:2").unwrap_err().contains("twice"));
        assert!(parse_peers("0=a:1").is_err());
        assert!(parse_peers("x").is_err());
    }
}
