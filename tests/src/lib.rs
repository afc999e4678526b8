//! Cluster tests over real `distsync` processes on loopback.
//!
//! [`Cluster`] starts N nodes of the `distsync` binary, each with its own data directory and log
//! file inside a fresh temporary directory, on UDP ports the kernel picked. Tests kill nodes with
//! SIGKILL, restart them on the same disk, cut Raft traffic between groups of nodes through the
//! nodes' fault-injection switch (`--enable-fault-injection`), and watch the nodes' own status to
//! know when the cluster has settled.
//!
//! ## Layout
//!
//! - `src/lib.rs`: this harness.
//! - `src/linearizability.rs`: a linearizability checker for register histories.
//! - `tests/*.rs`: one behaviour per file, each opening with the behaviour it pins down.
//!
//! The binary is not built by `cargo test -p distsync-cluster-tests` (a test crate cannot depend
//! on another package's binary): run `cargo build -p distsync-server` first, with the same
//! profile, or point `DISTSYNC_BIN` at a binary.
//!
//! Everything is per cluster (directory, ports, processes), so tests run in parallel. Waiting
//! polls each node's status with a short pause under a deadline: there is no event to await
//! across processes. A failing test keeps its directory and prints the tail of every node's log;
//! `DISTSYNC_TEST_KEEP=1` keeps the directories of passing tests too.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use distsync_cluster_tests::{Cluster, ClusterOptions};
//! use std::time::Duration;
//!
//! let cluster = Cluster::start(3, ClusterOptions::default()).await?;
//! let leader = cluster.wait_for_leader(&[1, 2, 3], Duration::from_secs(20)).await?;
//! cluster.client().await?.kv().put("k", "v").await?;
//! cluster.kill(leader)?;
//! # Ok(()) }
//! ```

pub mod linearizability;

use std::fs::{self, OpenOptions};
use std::io::{Read, Write as _};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use distsync::wire::{decode_body, encode_frame, read_frame, Reply, Request, FRAME_BYTES_MAX};
use distsync::{Client, ClientOptions, ClientTls, FrameError, LockInfo, NodeId, NodeStatus, Role};

/// How long one status request may take; short, because a dead node must not stall a wait loop.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// Pause between two polls of the nodes' status.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long a started or restarted node may take to answer its first status request: a debug
/// build opening its store and replaying its log on a busy two-core machine.
const SERVE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one run of the command line (`certs init`, `kv get`, `status`) may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// Lines of each node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// Set this environment variable to keep every cluster's directory, passed or failed.
const KEEP_VARIABLE: &str = "DISTSYNC_TEST_KEEP";

/// Settings of a test cluster; `Default` gives the server's defaults.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// `--snapshot-threshold`: take a snapshot (and compact the log) after this many entries.
    pub snapshot_threshold: Option<u64>,
    /// `--redis`: where cache values are written back (see [`Redis`]).
    pub redis: Option<String>,
    /// `--cache-entries`: copies each node's cache holds.
    pub cache_entries: Option<usize>,
}

/// A cluster of `distsync` processes on loopback. Dropping it kills every node.
pub struct Cluster {
    directory: PathBuf,
    binary: PathBuf,
    options: ClusterOptions,
    tls: ClientTls,
    nodes: Vec<Node>,
    /// Set by [`Cluster::finish`] on failure: keep the directory for inspection.
    keep_directory: bool,
}

struct Node {
    id: NodeId,
    address: String,
    /// The running process, `None` after [`Cluster::kill`]. Behind a mutex so that killing and
    /// restarting take `&self` and a cluster can be shared with helper tasks.
    child: Mutex<Option<Child>>,
}

impl Cluster {
    /// Makes certificates and starts `nodes` nodes (ids `1..=nodes`), then waits until every node
    /// answers a status request. Does not wait for a leader: see [`Cluster::wait_for_leader`].
    ///
    /// Node processes die with the thread that spawned them (`PR_SET_PDEATHSIG` on Linux), so
    /// that a test process killed mid-run leaves no nodes behind: start and restart nodes from the
    /// test's own task, not from `spawn_blocking`.
    ///
    /// # Errors
    ///
    /// When `certs init` fails, a node cannot be spawned, or a node does not answer within 30 s
    /// (the error carries the tail of its log).
    ///
    /// # Panics
    ///
    /// When the `distsync` binary is missing (build it first: `cargo build -p distsync-server`).
    pub async fn start(nodes: usize, options: ClusterOptions) -> anyhow::Result<Cluster> {
        anyhow::ensure!(nodes >= 1, "a cluster needs at least one node");
        let binary = binary_path();
        let directory = unique_directory()?;
        let ports = free_udp_ports(nodes).context("cannot find free UDP ports on 127.0.0.1")?;
        let tls = match init_certificates(&binary, &directory.join("tls"), nodes).await {
            Ok(tls) => tls,
            Err(error) => {
                let _ = fs::remove_dir_all(&directory);
                return Err(error);
            }
        };
        let nodes = ports
            .iter()
            .zip(1..)
            .map(|(port, id)| Node { id, address: format!("127.0.0.1:{port}"), child: Mutex::new(None) })
            .collect();
        let cluster = Cluster { directory, binary, options, tls, nodes, keep_directory: false };
        for id in cluster.ids() {
            let child = cluster.spawn(id)?;
            *cluster.node(id).lock() = Some(child);
        }
        for id in cluster.ids() {
            cluster.wait_serving(id, SERVE_TIMEOUT).await?;
        }
        Ok(cluster)
    }

    /// Ends a test: on success the cluster is dropped and its directory removed; on failure the
    /// directory is kept and its path and every node's log tail are printed, as after a panic.
    /// Returns `outcome`, so a test ends with `cluster.finish(scenario(&cluster).await)`.
    ///
    /// # Errors
    ///
    /// `outcome`'s error.
    pub fn finish<T>(mut self, outcome: anyhow::Result<T>) -> anyhow::Result<T> {
        if outcome.is_err() {
            self.keep_directory = true;
        }
        drop(self);
        outcome
    }

    /// Node ids, `1..=N`.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|node| node.id).collect()
    }

    /// The temporary directory holding certificates, data directories and logs.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// Every node's client address, in id order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.address.clone()).collect()
    }

    /// Node `id`'s client address, `127.0.0.1:PORT`.
    ///
    /// # Panics
    ///
    /// When there is no node `id`.
    pub fn endpoint(&self, id: NodeId) -> String {
        self.node(id).address.clone()
    }

    /// The `distsync` binary the nodes run, for tests that spawn the command line themselves
    /// (a long-running `lock run`, say) instead of through [`Cluster::run_cli`].
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The cluster CA certificate clients trust.
    pub fn ca_path(&self) -> PathBuf {
        self.tls_directory().join("ca.pem")
    }

    /// The directory written by `distsync certs init`.
    pub fn tls_directory(&self) -> PathBuf {
        self.directory.join("tls")
    }

    /// Node `id`'s log file (stdout and stderr of every run of the node).
    pub fn log_path(&self, id: NodeId) -> PathBuf {
        self.directory.join(format!("node-{id}.log"))
    }

    /// Client options for the given nodes only, trusting the cluster CA; adjust timeouts on the
    /// result and pass it to [`Client::connect_with`].
    pub fn options_for(&self, ids: &[NodeId]) -> ClientOptions {
        let endpoints: Vec<String> = ids.iter().map(|&id| self.endpoint(id)).collect();
        ClientOptions::new(endpoints, self.tls.clone())
    }

    /// A client of the whole cluster, with default options.
    ///
    /// # Errors
    ///
    /// When no node answers within the client's request timeout.
    pub async fn client(&self) -> anyhow::Result<Client> {
        self.client_for(&self.ids()).await
    }

    /// A client that knows only the given nodes (it still follows leader hints elsewhere).
    ///
    /// # Errors
    ///
    /// When none of them answers within the client's request timeout.
    pub async fn client_for(&self, ids: &[NodeId]) -> anyhow::Result<Client> {
        Client::connect_with(self.options_for(ids))
            .await
            .with_context(|| format!("cannot connect a client to nodes {ids:?}"))
    }

    /// A bare QUIC connection to node `id` on the client protocol: one request, one reply, no
    /// retries, no redirects, for tests that must know exactly what a node was sent and answered.
    ///
    /// # Errors
    ///
    /// When the handshake fails.
    pub async fn raw_connection(&self, id: NodeId) -> anyhow::Result<RawConnection> {
        let address = self.endpoint(id).parse()?;
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let connecting = endpoint.connect_with(self.tls.quinn_config()?, address, distsync::tls::SERVER_NAME)?;
        let connection = connecting.await.with_context(|| format!("cannot connect to node {id}"))?;
        Ok(RawConnection { endpoint, connection })
    }

    /// Whether node `id`'s process is running.
    pub fn is_running(&self, id: NodeId) -> bool {
        match self.node(id).lock().as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills node `id` with SIGKILL and reaps it: no shutdown, no flush, like a power cut of
    /// the process.
    ///
    /// # Errors
    ///
    /// When the node is not running (killed before) or cannot be signalled.
    pub fn kill(&self, id: NodeId) -> anyhow::Result<()> {
        let mut child = self.node(id).lock().take().with_context(|| format!("node {id} is not running"))?;
        child.kill().with_context(|| format!("cannot kill node {id}"))?;
        child.wait().with_context(|| format!("cannot reap node {id}"))?;
        Ok(())
    }

    /// Starts node `id` again with the same arguments, data directory and log file, and waits
    /// until it answers a status request.
    ///
    /// # Errors
    ///
    /// When the node is still running, cannot be spawned, or does not answer within 30 s.
    pub async fn restart(&self, id: NodeId) -> anyhow::Result<()> {
        {
            let mut slot = self.node(id).lock();
            if let Some(child) = slot.as_mut() {
                if matches!(child.try_wait(), Ok(None)) {
                    bail!("node {id} is still running; kill it before restarting it");
                }
            }
            *slot = Some(self.spawn(id)?);
        }
        self.wait_serving(id, SERVE_TIMEOUT).await
    }

    /// Node `id`'s own view of the cluster, asked of that node alone (fresh connection, 1 s).
    ///
    /// A fresh client per call on purpose: a cached QUIC connection to a node that was killed
    /// and restarted on the same port stays half-open until its idle timeout.
    ///
    /// # Errors
    ///
    /// When the node does not answer within 1 s.
    pub async fn status(&self, id: NodeId) -> anyhow::Result<NodeStatus> {
        let options = self.options_for(&[id]).attempt_timeout(STATUS_TIMEOUT).request_timeout(STATUS_TIMEOUT);
        let client = Client::new_unconnected(options)?;
        let status = client.node_status(&self.endpoint(id)).await.with_context(|| format!("status of node {id}"))?;
        Ok(status)
    }

    /// Waits until the given nodes all answer and agree on one leader among them, which reports
    /// itself as leader. Returns the leader's id.
    ///
    /// # Errors
    ///
    /// At the deadline, with what each node last reported.
    pub async fn wait_for_leader(&self, among: &[NodeId], timeout: Duration) -> anyhow::Result<NodeId> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses = self.statuses(among).await;
            if let Some(leader) = agreed_leader(among, &statuses) {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                bail!(
                    "nodes {among:?} agreed on no leader among themselves within {timeout:?}; last seen:\n{}",
                    describe_statuses(among, &statuses)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until node `id` has applied index `index`; returns its status. Cheaper than
    /// [`Cluster::wait_applied_equal`] on a large state: one node's digest per poll, not all.
    ///
    /// # Errors
    ///
    /// At the deadline, with how far the node got.
    pub async fn wait_applied(&self, id: NodeId, index: u64, timeout: Duration) -> anyhow::Result<NodeStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(id).await;
            match status {
                Ok(status) if status.applied >= index => return Ok(status),
                _ if Instant::now() >= deadline => {
                    bail!("node {id} did not apply index {index} within {timeout:?}; last seen: {status:?}")
                }
                _ => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }

    /// Waits until the given nodes all report the same applied index and the same state digest;
    /// returns their statuses in the order of `ids`.
    ///
    /// # Errors
    ///
    /// At the deadline, with what each node last reported.
    pub async fn wait_applied_equal(&self, ids: &[NodeId], timeout: Duration) -> anyhow::Result<Vec<NodeStatus>> {
        anyhow::ensure!(!ids.is_empty(), "no nodes to compare");
        let deadline = Instant::now() + timeout;
        loop {
            let statuses = self.statuses(ids).await;
            if let Ok(statuses) = statuses.iter().map(|s| s.as_ref().map_err(|_| ())).collect::<Result<Vec<_>, ()>>() {
                let first = statuses[0];
                if statuses.iter().all(|s| s.applied == first.applied && s.state_digest == first.state_digest) {
                    return Ok(statuses.into_iter().cloned().collect());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "nodes {ids:?} did not converge on one applied index and state digest within {timeout:?}; \
                     last seen:\n{}",
                    describe_statuses(ids, &statuses)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Cuts Raft traffic between the groups `a` and `b` in both directions (client traffic still
    /// flows). Traffic within each group is untouched.
    ///
    /// # Errors
    ///
    /// When a node does not accept the switch (not running, or fault injection disabled).
    pub async fn partition(&self, a: &[NodeId], b: &[NodeId]) -> anyhow::Result<()> {
        for &id in a {
            self.set_dropped_peers(id, b).await?;
        }
        for &id in b {
            self.set_dropped_peers(id, a).await?;
        }
        Ok(())
    }

    /// Restores Raft traffic on every running node.
    ///
    /// # Errors
    ///
    /// When a running node does not accept the switch.
    pub async fn heal(&self) -> anyhow::Result<()> {
        for id in self.ids() {
            if self.is_running(id) {
                self.set_dropped_peers(id, &[]).await?;
            }
        }
        Ok(())
    }

    /// Makes node `id` drop Raft traffic to and from `peers` (an empty list heals it).
    ///
    /// # Errors
    ///
    /// When the node does not accept the switch.
    pub async fn set_dropped_peers(&self, id: NodeId, peers: &[NodeId]) -> anyhow::Result<()> {
        let client = Client::new_unconnected(self.options_for(&[id]))?;
        client
            .set_dropped_peers(&self.endpoint(id), peers)
            .await
            .with_context(|| format!("cannot make node {id} drop peers {peers:?}"))
    }

    /// Like [`Cluster::run_cli`], with `input` on the command's stdin.
    ///
    /// # Errors
    ///
    /// When the binary cannot be run or does not finish in time.
    pub async fn run_cli_with_stdin(&self, args: &[&str], input: &[u8]) -> anyhow::Result<Output> {
        use tokio::io::AsyncWriteExt as _;
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg("--endpoints")
            .arg(self.endpoints().join(","))
            .arg("--ca")
            .arg(self.ca_path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(input).await?;
        drop(stdin);
        Ok(tokio::time::timeout(CLI_TIMEOUT, child.wait_with_output()).await.context("the CLI did not finish")??)
    }

    /// Runs the command line against the whole cluster: `distsync --endpoints <all> --ca <ca>
    /// ARGS…`, with a 60 s deadline. Returns the output whatever the exit status.
    ///
    /// # Errors
    ///
    /// When the binary cannot be run or does not finish in time.
    pub async fn run_cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        let endpoints = self.endpoints().join(",");
        let ca = self.ca_path();
        let mut full: Vec<&str> = vec!["--endpoints", &endpoints, "--ca"];
        let ca_text = ca.to_str().context("temporary directory path is not UTF-8")?;
        full.push(ca_text);
        full.extend_from_slice(args);
        self.run_binary(&full).await
    }

    /// Runs the `distsync` binary with exactly these arguments, with a 60 s deadline.
    ///
    /// # Errors
    ///
    /// When the binary cannot be run or does not finish in time.
    pub async fn run_binary(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut command = Command::new(&self.binary);
        command.args(args);
        run_bounded(command, CLI_TIMEOUT).await
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: NodeId, lines: usize) -> String {
        match fs::read(self.log_path(id)) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(error) => format!("(cannot read {}: {error})", self.log_path(id).display()),
        }
    }

    fn node(&self, id: NodeId) -> &Node {
        let index = usize::try_from(id).ok().and_then(|id| id.checked_sub(1));
        match index.and_then(|index| self.nodes.get(index)) {
            Some(node) => node,
            None => panic!("no node {id} in a cluster of {}", self.nodes.len()),
        }
    }

    fn spawn(&self, id: NodeId) -> anyhow::Result<Child> {
        let log_path = self.log_path(id);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        writeln!(log, "==== distsync-cluster-tests: starting node {id} ====")?;
        let peers = self.nodes.iter().map(|node| format!("{}={}", node.id, node.address)).collect::<Vec<_>>().join(",");
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .arg("--id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(self.endpoint(id))
            .arg("--peers")
            .arg(peers)
            .arg("--data-dir")
            .arg(self.directory.join(format!("node-{id}")))
            .arg("--tls-dir")
            .arg(self.tls_directory())
            .arg("--enable-fault-injection");
        if let Some(threshold) = self.options.snapshot_threshold {
            command.arg("--snapshot-threshold").arg(threshold.to_string());
        }
        if let Some(url) = &self.options.redis {
            command.arg("--redis").arg(url);
        }
        if let Some(entries) = self.options.cache_entries {
            command.arg("--cache-entries").arg(entries.to_string());
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        // Log files are read by people, not terminals.
        command.env("NO_COLOR", "1");
        command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        die_with_parent(&mut command);
        command.spawn().with_context(|| format!("cannot spawn node {id} from {}", self.binary.display()))
    }

    /// Waits until node `id` answers a status request; fails at once if its process exits.
    async fn wait_serving(&self, id: NodeId, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last_error = match self.status(id).await {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            if let Some(child) = self.node(id).lock().as_mut() {
                if let Ok(Some(exit)) = child.try_wait() {
                    bail!("node {id} exited with {exit} while starting; its log ends:\n{}", self.log_tail(id, 30));
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {id} did not answer within {timeout:?} of starting ({last_error:#}); its log ends:\n{}",
                    self.log_tail(id, 30)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn statuses(&self, ids: &[NodeId]) -> Vec<anyhow::Result<NodeStatus>> {
        let mut statuses = Vec::with_capacity(ids.len());
        for &id in ids {
            statuses.push(self.status(id).await);
        }
        statuses
    }

    fn print_logs(&self) {
        let mut report = format!("\ncluster directory kept at {}\n", self.directory.display());
        for node in &self.nodes {
            report.push_str(&format!(
                "---- node {} at {} ({}), last {LOG_TAIL_LINES} lines ----\n{}\n",
                node.id,
                node.address,
                self.log_path(node.id).display(),
                self.log_tail(node.id, LOG_TAIL_LINES)
            ));
        }
        eprintln!("{report}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            let slot = node.lock().take();
            if let Some(mut child) = slot {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() || self.keep_directory {
            self.print_logs();
        } else if std::env::var_os(KEEP_VARIABLE).is_some() {
            eprintln!("cluster directory kept at {} ({KEEP_VARIABLE} is set)", self.directory.display());
        } else {
            let _ = fs::remove_dir_all(&self.directory);
        }
    }
}

impl Node {
    /// The process slot, tolerating a lock poisoned by a panicking test.
    fn lock(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A bare client-protocol connection to one node; see [`Cluster::raw_connection`].
pub struct RawConnection {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
}

impl RawConnection {
    /// Sends one request on a fresh stream and returns the node's own reply, waiting as long as
    /// the node takes (up to `timeout`): when it returns, the node is done with the request.
    ///
    /// # Errors
    ///
    /// When the stream fails, no whole reply arrives within `timeout`, or the reply is garbled.
    pub async fn request(&self, request: &Request, timeout: Duration) -> anyhow::Result<Reply> {
        let body = self
            .exchange(&encode_frame(request)?, timeout)
            .await?
            .with_context(|| format!("no reply to {request:?}"))?;
        Ok(decode_body::<Reply>(&body)?)
    }

    /// Sends raw bytes on a fresh stream, finishes it, and reads one reply frame. The inner
    /// error is the node ending the stream without a whole frame.
    ///
    /// # Errors
    ///
    /// When the stream cannot be opened or written, or the node neither answers nor ends the
    /// stream within `timeout`.
    pub async fn exchange(&self, bytes: &[u8], timeout: Duration) -> anyhow::Result<Result<Vec<u8>, FrameError>> {
        let (mut send, mut recv) = self.connection.open_bi().await?;
        send.write_all(bytes).await?;
        send.finish()?;
        let reply = tokio::time::timeout(timeout, read_frame(&mut recv, FRAME_BYTES_MAX))
            .await
            .with_context(|| format!("the node neither answered nor ended the stream within {timeout:?}"))?;
        Ok(reply)
    }

    /// The underlying connection.
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }
}

impl Drop for RawConnection {
    fn drop(&mut self) {
        self.connection.close(0u32.into(), b"done");
        self.endpoint.close(0u32.into(), b"done");
    }
}

/// `count` distinct UDP ports on 127.0.0.1 that were free a moment ago: all are bound at once
/// (so they differ), then released for the nodes to bind.
///
/// # Errors
///
/// When a socket cannot be bound.
pub fn free_udp_ports(count: usize) -> std::io::Result<Vec<u16>> {
    let sockets = (0..count).map(|_| UdpSocket::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    sockets.iter().map(|socket| socket.local_addr().map(|address| address.port())).collect()
}

/// Polls `client.lock_show(name)` until `condition` accepts what it shows (`None`: nobody holds
/// or awaits the lock), and returns that. A read that fails counts as "not yet": the cluster may
/// be electing a leader. `what` names the awaited state in the error.
///
/// # Errors
///
/// At the deadline, with the last state shown or the last error.
pub async fn wait_for_lock(
    client: &Client,
    name: &str,
    timeout: Duration,
    what: &str,
    condition: impl Fn(Option<&LockInfo>) -> bool,
) -> anyhow::Result<Option<LockInfo>> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.lock_show(name).await {
            Ok(shown) if condition(shown.as_ref()) => return Ok(shown),
            Ok(shown) => format!("{shown:?}"),
            Err(error) => format!("error {error}"),
        };
        if Instant::now() >= deadline {
            bail!("lock {name:?} did not reach the state \"{what}\" within {timeout:?}; last seen: {last}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Exit status, stdout and stderr of a finished command, for assertion messages.
pub fn describe_output(output: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// One line per node: role, term, leader, indexes, or the error.
pub fn describe_statuses(ids: &[NodeId], statuses: &[anyhow::Result<NodeStatus>]) -> String {
    ids.iter()
        .zip(statuses)
        .map(|(id, status)| match status {
            Ok(s) => format!(
                "  node {id}: {} term {} leader {:?} last_log {} committed {} applied {} snapshot {} digest {:#x} keys {}",
                s.role.as_str(),
                s.term,
                s.leader,
                s.last_log_index,
                s.committed,
                s.applied,
                s.snapshot,
                s.state_digest,
                s.keys
            ),
            Err(error) => format!("  node {id}: {error:#}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The leader all of `among` name, if they all answered, it is one of them, and it says so itself.
fn agreed_leader(among: &[NodeId], statuses: &[anyhow::Result<NodeStatus>]) -> Option<NodeId> {
    let mut leader = None;
    for status in statuses {
        let named = status.as_ref().ok()?.leader?;
        if *leader.get_or_insert(named) != named {
            return None;
        }
    }
    let leader = leader?;
    let position = among.iter().position(|&id| id == leader)?;
    let own = statuses[position].as_ref().ok()?;
    (own.role == Role::Leader && own.id == leader).then_some(leader)
}

/// The binary under test: `DISTSYNC_BIN`, else `distsync` in the profile directory of this test
/// executable (`target/<profile>/deps/<test>` → `target/<profile>/distsync`).
fn binary_path() -> PathBuf {
    let path = match std::env::var_os("DISTSYNC_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            let test = std::env::current_exe().expect("the test executable has a path");
            let profile = test.parent().and_then(Path::parent).expect("test executables live in target/<profile>/deps");
            profile.join(format!("distsync{}", std::env::consts::EXE_SUFFIX))
        }
    };
    assert!(
        path.is_file(),
        "no distsync binary at {} (or set DISTSYNC_BIN); build it first: cargo build -p distsync-server",
        path.display()
    );
    path
}

/// Runs `distsync certs init` into `directory` and trusts the CA it made.
async fn init_certificates(binary: &Path, directory: &Path, nodes: usize) -> anyhow::Result<ClientTls> {
    let mut command = Command::new(binary);
    command.arg("certs").arg("init").arg("--dir").arg(directory).arg("--nodes").arg(nodes.to_string());
    let output = run_bounded(command, CLI_TIMEOUT).await.context("`distsync certs init` did not run")?;
    anyhow::ensure!(output.status.success(), "`distsync certs init` failed: {}", describe_output(&output));
    ClientTls::from_ca_file(directory.join("ca.pem")).context("`distsync certs init` wrote no usable ca.pem")
}

/// A fresh directory under the system temp directory, unique across processes and tests.
/// A real `redis-server` on a free loopback port, with an append-only file fsync'd on every write
/// (so a SIGKILL loses nothing it acknowledged) in its own temporary directory. Dropping it kills
/// the server and removes the directory.
pub struct Redis {
    port: u16,
    directory: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Redis {
    /// Starts a server and waits until it answers.
    ///
    /// # Errors
    ///
    /// When redis-server is not installed (`.ci/run` installs it) or does not start.
    pub async fn start() -> anyhow::Result<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let redis = Redis { port, directory: unique_directory()?, child: Mutex::new(None) };
        redis.restart().await?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the server.
    ///
    /// # Errors
    ///
    /// When it is not running.
    pub fn kill(&self) -> anyhow::Result<()> {
        let mut child = self.lock().take().context("redis-server is not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts the server (again) on the same port and data, and waits until it answers PING.
    ///
    /// # Errors
    ///
    /// When it is running already, or does not answer within 10 s.
    pub async fn restart(&self) -> anyhow::Result<()> {
        {
            let mut slot = self.lock();
            anyhow::ensure!(slot.is_none(), "redis-server is running already");
            let log = OpenOptions::new().create(true).append(true).open(self.directory.join("redis.log"))?;
            let mut command = Command::new("redis-server");
            command
                .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
                .args(["--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"])
                .arg("--dir")
                .arg(&self.directory)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            die_with_parent(&mut command);
            *slot =
                Some(command.spawn().context("cannot start redis-server; install it (apt-get install redis-server)")?);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(output) = self.cli(&["PING"]).await {
                if output.trim() == "PONG" {
                    return Ok(());
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "redis-server did not answer PING within 10 s");
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Runs `redis-cli ARGS` against this server; returns its stdout.
    ///
    /// # Errors
    ///
    /// When redis-cli fails.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new("redis-cli");
        command.args(["-p", &self.port.to_string()]).args(args);
        let output = run_bounded(command, Duration::from_secs(10)).await?;
        anyhow::ensure!(output.status.success(), "redis-cli {args:?} failed: {}", describe_output(&output));
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The value Redis holds for cache key `key` and its version, or `None`.
    ///
    /// # Errors
    ///
    /// When redis-cli fails.
    pub async fn cache_entry(&self, key: &str) -> anyhow::Result<Option<(u64, String)>> {
        let redis_key = format!("distsync:cache:{key}");
        let version = self.cli(&["HGET", &redis_key, "v"]).await?;
        let value = self.cli(&["HGET", &redis_key, "d"]).await?;
        let (version, value) = (version.trim_end_matches('\n'), value.trim_end_matches('\n'));
        if version.is_empty() || value.is_empty() {
            return Ok(None);
        }
        Ok(Some((version.parse().context("version field")?, value.to_string())))
    }

    fn lock(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.lock().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.directory);
    }
}

fn unique_directory() -> anyhow::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let name = format!("distsync-test-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let directory = std::env::temp_dir().join(name);
    fs::create_dir(&directory).with_context(|| format!("cannot create {}", directory.display()))?;
    Ok(directory)
}

/// Runs a command to completion with piped output, killing it at the deadline. Blocking work
/// runs on tokio's blocking pool, so callers may await it from a test.
async fn run_bounded(command: Command, timeout: Duration) -> anyhow::Result<Output> {
    tokio::task::spawn_blocking(move || run_bounded_blocking(command, timeout))
        .await
        .context("the thread running a command panicked")?
}

fn run_bounded_blocking(mut command: Command, timeout: Duration) -> anyhow::Result<Output> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let description = format!("{command:?}");
    let mut child = command.spawn().with_context(|| format!("cannot run {description}"))?;
    // Both pipes close when the process exits; readers on their own threads turn that into an
    // event with a deadline, where waiting on the process itself has none.
    let (sender, receiver) = mpsc::channel();
    let stdout = child.stdout.take().context("stdout was piped")?;
    let stderr = child.stderr.take().context("stderr was piped")?;
    for (index, mut pipe) in [(0usize, Box::new(stdout) as Box<dyn Read + Send>), (1, Box::new(stderr))] {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = sender.send((index, bytes));
        });
    }
    let deadline = Instant::now() + timeout;
    let mut outputs = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((index, bytes)) => outputs[index] = bytes,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{description} did not finish within {timeout:?}");
            }
        }
    }
    let status = child.wait().with_context(|| format!("cannot reap {description}"))?;
    let [stdout, stderr] = outputs;
    Ok(Output { status, stdout, stderr })
}

/// Makes a node process receive SIGKILL when the thread that spawned it exits, so a test process
/// killed mid-run (Ctrl-C, a CI timeout) leaves no nodes running.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe and touches no memory shared with the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}
