//! [`Cluster`]: N `distsync serve` processes on loopback, each with its own data directory and
//! log file, started, killed, restarted and stopped by the harness.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use distsync::{Client, ClientOptions, ClientTls, NodeId};

use crate::network::{Network, NODE_PORT};
use crate::process::{
    describe_output, die_with_parent, free_udp_ports, run_bounded, signal, terminate, unique_directory,
};

/// How long a started or restarted node may take to answer its first status request: a debug
/// build opening its store and replaying its log on a busy two-core machine.
pub(crate) const SERVE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one run of the command line (`certs init`, `kv get`, `status`) may take.
pub(crate) const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a clean stop (SIGTERM) may take before the harness kills a node.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Lines of each node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// Set this environment variable to keep every temporary cluster's directory, passed or failed.
const KEEP_VARIABLE: &str = "DISTSYNC_TEST_KEEP";

/// How a cluster is laid out and what its nodes are told; `Default` is a test cluster: a fresh
/// temporary directory, ports the kernel picks, the server's defaults, and the fault-injection
/// switch on (tests partition clusters with it; `distsync dev` turns it off).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `--snapshot-threshold`: take a snapshot (and compact the log) after this many entries.
    pub snapshot_threshold: Option<u64>,
    /// `--redis`: where cache values are written back (see [`crate::Redis`]).
    pub redis: Option<String>,
    /// `--cache-entries`: copies each node's cache holds.
    pub cache_entries: Option<usize>,
    /// `--cache-bytes`: bytes each node's cache holds.
    pub cache_bytes: Option<u64>,
    /// `--enable-fault-injection`: whether nodes accept the switch that drops peer traffic.
    pub fault_injection: bool,
    /// Further arguments every node gets, as they are.
    pub node_args: Vec<String>,
    /// Where certificates, data and logs go; kept afterwards. `None`: a fresh temporary
    /// directory, removed when the cluster is dropped after success.
    pub directory: Option<PathBuf>,
    /// Node N listens on `base + N - 1` and serves admin HTTP on `base + 100 + N - 1`. `None`:
    /// ports the kernel picks, and no admin HTTP.
    pub base_port: Option<u16>,
    /// The `distsync` binary; `None`: `DISTSYNC_BIN`, else `distsync` beside the running test
    /// executable's profile directory.
    pub binary: Option<PathBuf>,
    /// Run each node in its own network namespace of this network (ids `1..=nodes`), listening
    /// on [`crate::network::NODE_PORT`] at its own address; partitions then cut packets (see
    /// [`Cluster::partition`]). `None`: every node on loopback.
    pub network: Option<Arc<Network>>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            snapshot_threshold: None,
            redis: None,
            cache_entries: None,
            cache_bytes: None,
            fault_injection: true,
            node_args: Vec::new(),
            directory: None,
            base_port: None,
            binary: None,
            network: None,
        }
    }
}

/// A cluster of `distsync` processes on loopback. Dropping it kills every node (see
/// [`Cluster::stop`] for a clean stop).
pub struct Cluster {
    directory: PathBuf,
    /// Whether the directory was made for this cluster, and goes with it.
    temporary: bool,
    binary: PathBuf,
    options: ClusterOptions,
    pub(crate) tls: ClientTls,
    nodes: Vec<Node>,
    /// Set by [`Cluster::finish`] on failure: keep the directory for inspection.
    keep_directory: std::sync::atomic::AtomicBool,
}

struct Node {
    id: NodeId,
    address: String,
    admin: Option<String>,
    /// The running process, `None` after [`Cluster::kill`]. Behind a mutex so that killing and
    /// restarting take `&self` and a cluster can be shared with helper tasks.
    child: Mutex<Option<Child>>,
}

impl Cluster {
    /// Makes certificates (keeping a CA already in the directory) and starts `nodes` nodes
    /// (ids `1..=nodes`), then waits until every node answers a status request. Does not wait
    /// for a leader: see [`Cluster::wait_for_leader`].
    ///
    /// Node processes die with the thread that spawned them (`PR_SET_PDEATHSIG` on Linux), so
    /// that a harness process killed mid-run leaves no nodes behind: start and restart nodes from
    /// the caller's own task, not from `spawn_blocking`.
    ///
    /// # Errors
    ///
    /// When a fixed port is taken, `certs init` fails, a node cannot be spawned, or a node does
    /// not answer within 30 s (the error carries the tail of its log).
    ///
    /// # Panics
    ///
    /// When the `distsync` binary is missing (build it first: `cargo build -p distsync-cli`).
    /// A binary found by default (not named in the options) that is older than a source it is
    /// built from is an error: tests would otherwise test yesterday's code.
    pub async fn start(nodes: usize, options: ClusterOptions) -> anyhow::Result<Cluster> {
        anyhow::ensure!(nodes >= 1, "a cluster needs at least one node");
        let binary = options.binary.clone().unwrap_or_else(binary_path);
        assert!(
            binary.is_file(),
            "no distsync binary at {} (or set DISTSYNC_BIN); build it first: cargo build -p distsync-cli",
            binary.display()
        );
        if options.binary.is_none() {
            crate::freshness::ensure_built_from_current_sources(&binary)?;
        }
        let addresses = match &options.network {
            Some(network) => {
                anyhow::ensure!(options.base_port.is_none(), "a cluster in a network has no fixed loopback ports");
                (1..=nodes as NodeId).map(|id| (format!("{}:{NODE_PORT}", network.node_ip(id)), None)).collect()
            }
            None => addresses(nodes, options.base_port)?,
        };
        let (directory, temporary) = match &options.directory {
            Some(directory) => {
                fs::create_dir_all(directory).with_context(|| format!("cannot create {}", directory.display()))?;
                (directory.clone(), false)
            }
            None => (unique_directory()?, true),
        };
        let tls = match init_certificates(&binary, &directory.join("tls"), nodes).await {
            Ok(tls) => tls,
            Err(error) => {
                if temporary {
                    let _ = fs::remove_dir_all(&directory);
                }
                return Err(error);
            }
        };
        let nodes = addresses
            .into_iter()
            .zip(1..)
            .map(|((address, admin), id)| Node { id, address, admin, child: Mutex::new(None) })
            .collect();
        let cluster = Cluster { directory, temporary, binary, options, tls, nodes, keep_directory: false.into() };
        for id in cluster.ids() {
            cluster.spawn_node(id)?;
        }
        for id in cluster.ids() {
            cluster.wait_serving(id, SERVE_TIMEOUT).await?;
        }
        Ok(cluster)
    }

    /// Ends a run: on success the cluster is dropped and a temporary directory removed; on
    /// failure the directory is kept and its path and every node's log tail are printed, as
    /// after a panic. Returns `outcome`, so a test ends with
    /// `cluster.finish(scenario(&cluster).await)`.
    ///
    /// # Errors
    ///
    /// `outcome`'s error.
    pub fn finish<T>(self, outcome: anyhow::Result<T>) -> anyhow::Result<T> {
        if outcome.is_err() {
            self.keep_files();
        }
        drop(self);
        outcome
    }

    /// Keeps the directory when the cluster is dropped, and prints every node's log tail then,
    /// as [`Cluster::finish`] does on failure; for a cluster shared with tasks that may drop it
    /// last.
    pub fn keep_files(&self) {
        self.keep_directory.store(true, std::sync::atomic::Ordering::Relaxed);
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

    /// Node `id`'s client address, `127.0.0.1:PORT` (in a network: its own address).
    ///
    /// # Panics
    ///
    /// When there is no node `id`.
    pub fn endpoint(&self, id: NodeId) -> String {
        self.node(id).address.clone()
    }

    /// The network the nodes run in, if they are not on loopback.
    pub fn network(&self) -> Option<&Arc<Network>> {
        self.options.network.as_ref()
    }

    /// Node `id`'s admin HTTP address, when the cluster has fixed ports.
    ///
    /// # Panics
    ///
    /// When there is no node `id`.
    pub fn admin(&self, id: NodeId) -> Option<String> {
        self.node(id).admin.clone()
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

    /// Whether node `id`'s process is running.
    pub fn is_running(&self, id: NodeId) -> bool {
        match self.node(id).lock().as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The peak resident memory of node `id`'s process so far (`VmHWM`), in bytes; `None`
    /// when it is not running.
    pub fn peak_memory_bytes(&self, id: NodeId) -> Option<u64> {
        let pid = self.node(id).lock().as_ref()?.id();
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
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

    /// Stops node `id` with SIGSTOP: the process keeps its sockets and memory but does nothing,
    /// as a node stalled by a long GC pause, a swapped-out process or a frozen VM would.
    ///
    /// # Errors
    ///
    /// When the node is not running or cannot be signalled.
    pub fn pause(&self, id: NodeId) -> anyhow::Result<()> {
        self.signal_node(id, libc::SIGSTOP).with_context(|| format!("cannot pause node {id}"))
    }

    /// Lets node `id` go on after [`Cluster::pause`] (SIGCONT).
    ///
    /// # Errors
    ///
    /// When the node is not running or cannot be signalled.
    pub fn resume(&self, id: NodeId) -> anyhow::Result<()> {
        self.signal_node(id, libc::SIGCONT).with_context(|| format!("cannot resume node {id}"))
    }

    fn signal_node(&self, id: NodeId, number: libc::c_int) -> anyhow::Result<()> {
        let pid = self.node(id).lock().as_ref().map(Child::id).with_context(|| format!("node {id} is not running"))?;
        Ok(signal(pid, number)?)
    }

    /// Starts node `id` again with the same arguments, data directory and log file, and waits
    /// until it answers a status request.
    ///
    /// # Errors
    ///
    /// When the node is still running, cannot be spawned, or does not answer within 30 s.
    pub async fn restart(&self, id: NodeId) -> anyhow::Result<()> {
        self.spawn_node(id)?;
        self.wait_serving(id, SERVE_TIMEOUT).await
    }

    /// How node `id`'s process ended, if it was started and has exited by itself (not killed by
    /// the harness, which forgets the process).
    pub fn exit_status(&self, id: NodeId) -> Option<std::process::ExitStatus> {
        self.node(id).lock().as_mut().and_then(|child| child.try_wait().ok().flatten())
    }

    /// The data directory of node `id`.
    pub fn data_directory(&self, id: NodeId) -> PathBuf {
        self.directory.join(format!("node-{id}"))
    }

    /// Starts node `id` again with the same arguments, data directory and log file, without
    /// waiting for it to answer (see [`Cluster::restart`] for that).
    ///
    /// # Errors
    ///
    /// When the node is still running or cannot be spawned.
    pub fn spawn_node(&self, id: NodeId) -> anyhow::Result<()> {
        let mut slot = self.node(id).lock();
        if let Some(child) = slot.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                bail!("node {id} is still running; kill it before restarting it");
            }
        }
        *slot = Some(self.spawn(id)?);
        Ok(())
    }

    /// Stops every node cleanly: SIGTERM, then SIGKILL for any still running after 5 s.
    pub fn stop(&self) {
        let children: Vec<Child> = self.nodes.iter().filter_map(|node| node.lock().take()).collect();
        for child in &children {
            terminate(child.id());
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for mut child in children {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                // A child's exit is no event this thread can wait on with a deadline.
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
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
        writeln!(log, "==== distsync-harness: starting node {id} ====")?;
        let peers = self.nodes.iter().map(|node| format!("{}={}", node.id, node.address)).collect::<Vec<_>>().join(",");
        let mut command = match &self.options.network {
            Some(network) => network.command(id, &self.binary),
            None => Command::new(&self.binary),
        };
        command
            .arg("serve")
            .arg("--id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(self.endpoint(id))
            .arg("--peers")
            .arg(peers)
            .arg("--data-dir")
            .arg(self.data_directory(id))
            .arg("--tls-dir")
            .arg(self.tls_directory());
        if self.options.fault_injection {
            command.arg("--enable-fault-injection");
        }
        if let Some(admin) = &self.node(id).admin {
            command.arg("--admin").arg(admin);
        }
        if let Some(threshold) = self.options.snapshot_threshold {
            command.arg("--snapshot-threshold").arg(threshold.to_string());
        }
        if let Some(url) = &self.options.redis {
            command.arg("--redis").arg(url);
        }
        if let Some(entries) = self.options.cache_entries {
            command.arg("--cache-entries").arg(entries.to_string());
        }
        if let Some(bytes) = self.options.cache_bytes {
            command.arg("--cache-bytes").arg(bytes.to_string());
        }
        command.args(&self.options.node_args);
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        // Log files are read by people, not terminals.
        command.env("NO_COLOR", "1");
        command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        die_with_parent(&mut command);
        command.spawn().with_context(|| format!("cannot spawn node {id} from {}", self.binary.display()))
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
        if std::thread::panicking() || self.keep_directory.load(std::sync::atomic::Ordering::Relaxed) {
            self.print_logs();
        } else if !self.temporary {
            // The caller's own directory (a `distsync dev` cluster) stays.
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

/// Each node's client address and admin address: fixed from `base`, else free ports.
fn addresses(nodes: usize, base: Option<u16>) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let Some(base) = base else {
        let ports = free_udp_ports(nodes).context("cannot find free UDP ports on 127.0.0.1")?;
        return Ok(ports.into_iter().map(|port| (format!("127.0.0.1:{port}"), None)).collect());
    };
    let count = u16::try_from(nodes).context("too many nodes")?;
    (0..count)
        .map(|i| {
            let port = base.checked_add(i).context("ports past 65535")?;
            let admin = base.checked_add(100 + i).context("ports past 65535")?;
            UdpSocket::bind(("127.0.0.1", port)).map_err(|e| {
                anyhow::anyhow!("port {port} is taken ({e}); stop what uses it or pick other ports with --base-port")
            })?;
            Ok((format!("127.0.0.1:{port}"), Some(format!("127.0.0.1:{admin}"))))
        })
        .collect()
}

/// The binary under test: `DISTSYNC_BIN`, else `distsync` in the profile directory of this test
/// executable (`target/<profile>/deps/<test>` → `target/<profile>/distsync`).
fn binary_path() -> PathBuf {
    let path = match std::env::var_os("DISTSYNC_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            // Test executables live in target/<profile>/deps, binaries (distsync-torture, the
            // CLI itself) in target/<profile>.
            let executable = std::env::current_exe().expect("the running executable has a path");
            let mut profile = executable.parent().expect("an executable lives in a directory");
            if profile.file_name().is_some_and(|name| name == "deps") {
                profile = profile.parent().expect("deps lives in target/<profile>");
            }
            profile.join(format!("distsync{}", std::env::consts::EXE_SUFFIX))
        }
    };
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
