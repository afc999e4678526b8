//! [`Redis`]: a real `redis-server` (Debian's package) on a loopback port (or a network's bridge), for the cache's values.

use std::fs::{self, OpenOptions};
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::process::{describe_output, die_with_parent, run_bounded, unique_directory};

/// How long a started server may take to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between two PINGs of a starting server.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How a server keeps what it acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Append-only file fsync'd on every write: a SIGKILL loses nothing acknowledged (tests).
    Always,
    /// Fsync'd every second, Redis's default trade-off (`distsync dev`).
    EverySecond,
}

/// A real `redis-server` on a loopback port, its append-only file in its own directory.
/// Dropping it kills the server and removes a temporary directory.
pub struct Redis {
    /// The address it listens on: 127.0.0.1, or a [`crate::Network`]'s bridge.
    host: IpAddr,
    port: u16,
    directory: PathBuf,
    /// Whether the directory was made for this server, and goes with it.
    temporary: bool,
    fsync: Fsync,
    child: Mutex<Option<Child>>,
}

impl Redis {
    /// Whether `redis-server` is on PATH.
    pub fn installed() -> bool {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("redis-server").is_file()))
    }

    /// Starts a server on a free port, fsync'ing every write, with its data in a fresh temporary
    /// directory, and waits until it answers.
    ///
    /// # Errors
    ///
    /// When redis-server is not installed (`.ci/run` installs it) or does not start.
    pub async fn start() -> anyhow::Result<Redis> {
        Redis::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST)).await
    }

    /// As [`Redis::start`], listening on `host` (a [`crate::Network`]'s
    /// [`crate::Network::host_ip`], for nodes in namespaces).
    ///
    /// # Errors
    ///
    /// As [`Redis::start`].
    pub async fn start_on(host: IpAddr) -> anyhow::Result<Redis> {
        let port = std::net::TcpListener::bind((host, 0))?.local_addr()?.port();
        let redis = Redis {
            host,
            port,
            directory: unique_directory()?,
            temporary: true,
            fsync: Fsync::Always,
            child: Mutex::new(None),
        };
        redis.restart().await?;
        Ok(redis)
    }

    /// Starts a server on `port` with its data in `directory` (kept afterwards, so a later start
    /// finds the data again), and waits until it answers.
    ///
    /// # Errors
    ///
    /// As [`Redis::start`]; also when the directory cannot be made.
    pub async fn start_at(directory: &Path, port: u16, fsync: Fsync) -> anyhow::Result<Redis> {
        fs::create_dir_all(directory).with_context(|| format!("cannot create {}", directory.display()))?;
        let redis = Redis {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
            directory: directory.to_path_buf(),
            temporary: false,
            fsync,
            child: Mutex::new(None),
        };
        redis.restart().await?;
        Ok(redis)
    }

    /// `redis://HOST:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}:{}", self.host, self.port)
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
    /// When it is running already, exits, or does not answer within 10 s.
    pub async fn restart(&self) -> anyhow::Result<()> {
        {
            let mut slot = self.lock();
            anyhow::ensure!(slot.is_none(), "redis-server is running already");
            let log = OpenOptions::new().create(true).append(true).open(self.directory.join("redis.log"))?;
            let fsync = match self.fsync {
                Fsync::Always => "always",
                Fsync::EverySecond => "everysec",
            };
            let mut command = Command::new("redis-server");
            command
                .args(["--bind", &self.host.to_string(), "--port", &self.port.to_string(), "--save", ""])
                .args(["--appendonly", "yes", "--appendfsync", fsync, "--protected-mode", "no"])
                .arg("--dir")
                .arg(&self.directory)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            die_with_parent(&mut command);
            *slot =
                Some(command.spawn().context("cannot start redis-server; install it (apt-get install redis-server)")?);
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.ping() {
                return Ok(());
            }
            if let Some(child) = self.lock().as_mut() {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!(
                        "redis-server exited with {status}; see {}",
                        self.directory.join("redis.log").display()
                    );
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "redis-server did not answer PING within {READY_TIMEOUT:?}");
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Whether the server answers PING with PONG right now.
    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect((self.host, self.port)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut answer = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
    }

    /// Runs `redis-cli ARGS` against this server; returns its stdout.
    ///
    /// # Errors
    ///
    /// When redis-cli fails.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new("redis-cli");
        command.args(["-h", &self.host.to_string(), "-p", &self.port.to_string()]).args(args);
        let output = run_bounded(command, Duration::from_secs(10)).await?;
        anyhow::ensure!(output.status.success(), "redis-cli {args:?} failed: {}", describe_output(&output));
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The value Redis holds for cache key `key` of the cluster named `cluster_id` (see
    /// [`crate::Cluster::cluster_id`]) and its version, or `None`.
    ///
    /// # Errors
    ///
    /// When redis-cli fails.
    pub async fn cache_entry(&self, cluster_id: &str, key: &str) -> anyhow::Result<Option<(u64, String)>> {
        let redis_key = format!("distsync:{cluster_id}:cache:{key}");
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
        if self.temporary {
            let _ = fs::remove_dir_all(&self.directory);
        }
    }
}
