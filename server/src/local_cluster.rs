//! A cluster of `distsync serve` child processes on loopback, for `distsync dev` and
//! `distsync bench failover`.

use std::fs::OpenOptions;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use distsync::{Client, ClientOptions, ClientTls, NodeId, NodeStatus, Role};

use crate::certs::TlsPaths;

/// Child processes forming one cluster.
pub struct LocalCluster {
    directory: PathBuf,
    binary: PathBuf,
    ports: Vec<u16>,
    admin_ports: Vec<Option<u16>>,
    extra_args: Vec<String>,
    children: Vec<Option<Child>>,
}

/// Where the cluster listens.
#[derive(Debug, Clone, Copy)]
pub enum Ports {
    /// Node i listens on `base + i - 1` and serves admin HTTP on `base + 100 + i - 1`.
    Fixed(u16),
    /// Free ports chosen by the OS, no admin HTTP.
    Any,
}

impl LocalCluster {
    /// Makes certificates in `directory/tls` (kept if present) and starts `nodes` nodes with data
    /// in `directory/node-N` and logs in `directory/node-N.log`.
    ///
    /// # Errors
    ///
    /// When certificates cannot be made, ports are taken, or a process cannot start.
    pub fn start(directory: &Path, nodes: u64, ports: Ports, extra_args: &[&str]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(directory)?;
        crate::certs::init(&directory.join("tls"), nodes)?;
        let (ports, admin_ports): (Vec<u16>, Vec<Option<u16>>) = match ports {
            Ports::Fixed(base) => (0..nodes as u16).map(|i| (base + i, Some(base + 100 + i))).unzip(),
            Ports::Any => (0..nodes)
                .map(|_| free_udp_port().map(|p| (p, None)))
                .collect::<anyhow::Result<Vec<_>>>()?
                .into_iter()
                .unzip(),
        };
        for port in &ports {
            UdpSocket::bind(("127.0.0.1", *port)).map_err(|e| {
                anyhow::anyhow!("port {port} is taken ({e}); stop what uses it or pick other ports with --base-port")
            })?;
        }
        let mut cluster = Self {
            directory: directory.to_path_buf(),
            binary: std::env::current_exe()?,
            ports,
            admin_ports,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            children: (0..nodes).map(|_| None).collect(),
        };
        for id in 1..=nodes {
            cluster.restart(id)?;
        }
        Ok(cluster)
    }

    /// Client endpoints, `127.0.0.1:PORT`, in id order.
    pub fn endpoints(&self) -> Vec<String> {
        self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect()
    }

    /// Admin HTTP address of node `id`, if it has one.
    pub fn admin(&self, id: NodeId) -> Option<String> {
        self.admin_ports[id as usize - 1].map(|p| format!("127.0.0.1:{p}"))
    }

    /// The CA certificate clients trust.
    pub fn ca(&self) -> PathBuf {
        TlsPaths::new(self.directory.join("tls")).ca()
    }

    /// The log file of node `id`.
    pub fn log_path(&self, id: NodeId) -> PathBuf {
        self.directory.join(format!("node-{id}.log"))
    }

    /// Starts node `id` (again), on its data directory.
    ///
    /// # Errors
    ///
    /// When the process cannot start.
    pub fn restart(&mut self, id: NodeId) -> anyhow::Result<()> {
        let peers = self.endpoints().iter().enumerate().map(|(i, e)| format!("{}={e}", i + 1)).collect::<Vec<_>>();
        let log = OpenOptions::new().create(true).append(true).open(self.log_path(id))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .args(["--id", &id.to_string()])
            .args(["--listen", &self.endpoints()[id as usize - 1]])
            .args(["--peers", &peers.join(",")])
            .arg("--data-dir")
            .arg(self.directory.join(format!("node-{id}")))
            .arg("--tls-dir")
            .arg(self.directory.join("tls"))
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(admin) = self.admin(id) {
            command.args(["--admin", &admin]);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        self.children[id as usize - 1] = Some(command.spawn()?);
        Ok(())
    }

    /// SIGKILLs node `id`.
    pub fn kill(&mut self, id: NodeId) {
        if let Some(mut child) = self.children[id as usize - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops every node with SIGTERM (a clean shutdown), escalating to SIGKILL after 5 s.
    pub fn stop(&mut self) {
        for child in self.children.iter().flatten() {
            let pid = child.id() as libc::pid_t;
            terminate(pid);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for slot in &mut self.children {
            if let Some(mut child) = slot.take() {
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// A client for the whole cluster.
    ///
    /// # Errors
    ///
    /// When the CA cannot be read or no node answers.
    pub async fn client(&self, options: impl FnOnce(ClientOptions) -> ClientOptions) -> anyhow::Result<Client> {
        let tls = ClientTls::from_ca_file(self.ca())?;
        Ok(Client::connect_with(options(ClientOptions::new(self.endpoints(), tls))).await?)
    }

    /// Polls until one of the live nodes reports itself leader of a term above `after_term`.
    ///
    /// # Errors
    ///
    /// When no leader appears before `timeout`.
    pub async fn wait_for_leader(&self, after_term: u64, timeout: Duration) -> anyhow::Result<NodeStatus> {
        let probe = Client::new_unconnected(
            ClientOptions::new(self.endpoints(), ClientTls::from_ca_file(self.ca())?)
                .attempt_timeout(Duration::from_millis(200)),
        )?;
        let deadline = Instant::now() + timeout;
        loop {
            for (index, endpoint) in self.endpoints().iter().enumerate() {
                if self.children[index].is_none() {
                    continue;
                }
                if let Ok(status) = probe.node_status(endpoint).await {
                    if status.role == Role::Leader && status.term > after_term {
                        return Ok(status);
                    }
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "no leader elected within {timeout:?}");
            // There is no event to await across processes; poll at a fine grain.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

#[allow(unsafe_code)]
fn terminate(pid: libc::pid_t) {
    // SAFETY: sending a signal has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
///
/// # Errors
///
/// When no socket can be bound.
pub fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts a redis-server for a local cluster on `port`, its data (an append-only file, fsync'd
/// every second) in `directory`; `None` when redis-server is not on PATH. The caller kills it.
///
/// # Errors
///
/// When redis-server is found but does not start or answer.
pub fn start_redis(directory: &Path, port: u16) -> anyhow::Result<Option<(std::process::Child, String)>> {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("redis-server").is_file()));
    if !found {
        return Ok(None);
    }
    std::fs::create_dir_all(directory)?;
    let log = std::fs::File::create(directory.join("redis.log"))?;
    let mut child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "yes"])
        .args(["--appendfsync", "everysec", "--protected-mode", "no"])
        .arg("--dir")
        .arg(directory)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start redis-server: {e}"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("redis-server exited with {status}; see {}", directory.join("redis.log").display());
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("redis-server did not listen on port {port} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Some((child, format!("redis://127.0.0.1:{port}"))))
}
