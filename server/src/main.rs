//! The `distsync` command line: run nodes, a local dev cluster, inspect and use a cluster, and
//! benchmark it. See the README for the contract each command keeps.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use distsync::{Client, ClientOptions, ClientTls};
use distsync_server::bench;
use distsync_server::local_cluster::{LocalCluster, Ports};
use distsync_server::ServerConfig;

mod cache_cli;
mod queue_cli;

#[derive(Parser)]
#[command(name = "distsync", version, about = "distsync: locks, queues and a coherent cache on Raft")]
struct Cli {
    /// Cluster nodes to talk to, `HOST:PORT,HOST:PORT,...` (any subset will do).
    #[arg(long, global = true, env = "DISTSYNC_ENDPOINTS", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// The cluster CA certificate (`ca.pem` from `distsync certs init`).
    #[arg(long, global = true, env = "DISTSYNC_CA")]
    ca: Option<PathBuf>,
    /// Session TTL in seconds: how long the cluster keeps this command's locks after it falls
    /// silent (crashed, cut off). Between 1 and 3600.
    #[arg(long, global = true, env = "DISTSYNC_SESSION_TTL", default_value_t = 10.0)]
    session_ttl: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Certificates for a cluster.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Run one node.
    Serve(Box<ServerConfig>),
    /// Make certificates and run a local cluster on loopback until Ctrl-C.
    Dev(DevArgs),
    /// Each node's role, term, log indexes and peer heartbeats.
    Status {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The replicated key-value register.
    #[command(subcommand)]
    Kv(KvCommand),
    /// Distributed locks.
    #[command(subcommand)]
    Lock(LockCommand),
    /// Durable FIFO queues.
    #[command(subcommand)]
    Queue(queue_cli::QueueCommand),
    /// The coherent cache (values in Redis, MESI copies on every node).
    #[command(subcommand)]
    Cache(cache_cli::CacheCommand),
    /// Benchmarks, printing JSON lines.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Test-only fault injection (nodes must run with --enable-fault-injection).
    #[command(subcommand)]
    Debug(DebugCommand),
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create a CA, certificates for nodes 1..=N and a client certificate in DIR.
    Init {
        /// Output directory; `DIR/ca.pem` is what clients trust.
        #[arg(long)]
        dir: PathBuf,
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
    },
}

#[derive(Args)]
struct DevArgs {
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

#[derive(Subcommand)]
enum KvCommand {
    /// Set KEY to VALUE.
    Put { key: String, value: String },
    /// Print KEY's value alone on stdout; exit status 1 if absent.
    Get { key: String },
    /// Remove KEY.
    Delete { key: String },
}

#[derive(Subcommand)]
enum LockCommand {
    /// Run COMMAND while holding lock NAME, then release it; exits with COMMAND's status. The
    /// fencing token is in DISTSYNC_FENCING_TOKEN. If the lock is lost while COMMAND runs, COMMAND
    /// gets SIGTERM (SIGKILL 10 s later) and the status is the conflict exit code.
    Run {
        /// The lock.
        name: String,
        /// Take a shared hold instead of an exclusive one.
        #[arg(long)]
        shared: bool,
        /// Give up after this many seconds (fractions allowed); default: wait until granted.
        #[arg(long)]
        timeout: Option<f64>,
        /// Exit status when the lock is not granted in time or is lost (like flock's -E).
        #[arg(long, default_value_t = 1)]
        conflict_exit_code: u8,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// Every lock held or awaited: mode, holders and waiters.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One lock's holders (session, actor, mode, token, since) and waiters in order.
    Show {
        /// The lock.
        name: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
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

#[derive(Subcommand)]
enum DebugCommand {
    /// Make NODE silently drop Raft traffic with the given peers (empty list heals).
    DropPeers {
        /// The node's endpoint.
        #[arg(long)]
        node: String,
        /// Peer ids, comma separated; empty to heal.
        #[arg(long, value_delimiter = ',', num_args = 0..)]
        peers: Vec<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve(_) | Command::Dev(_));
    let default_filter = if serving { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Certs(CertsCommand::Init { dir, nodes }) => {
            distsync_server::certs::init(&dir, nodes)?;
            println!(
                "certificates for {nodes} nodes and one client in {}; clients trust {}",
                dir.display(),
                dir.join("ca.pem").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(config) => {
            distsync_server::run(*config, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev(args) => dev(args).await,
        Command::Status { json } => status(&cli.endpoints, cli.ca.as_deref(), json).await,
        Command::Kv(command) => {
            let client = connect(&cli.endpoints, cli.ca.as_deref(), cli.session_ttl).await?;
            let kv = client.kv();
            let code = match command {
                KvCommand::Put { key, value } => {
                    kv.put(key, value).await?;
                    ExitCode::SUCCESS
                }
                KvCommand::Get { key } => match kv.get(&key).await? {
                    Some(value) => {
                        let mut stdout = std::io::stdout().lock();
                        stdout.write_all(&value)?;
                        stdout.write_all(b"\n")?;
                        ExitCode::SUCCESS
                    }
                    None => {
                        eprintln!("key {key:?} not found");
                        ExitCode::from(1)
                    }
                },
                KvCommand::Delete { key } => {
                    if !kv.delete(&key).await? {
                        eprintln!("key {key:?} did not exist");
                    }
                    ExitCode::SUCCESS
                }
            };
            client.close().await;
            Ok(code)
        }
        Command::Lock(command) => {
            let client = connect(&cli.endpoints, cli.ca.as_deref(), cli.session_ttl).await?;
            let code = lock_command(&client, command).await;
            client.close().await;
            code
        }
        Command::Cache(command) => {
            let client = match (&command, command.node()) {
                (cache_cli::CacheCommand::Show { .. } | cache_cli::CacheCommand::Stats { .. }, _) => {
                    unconnected(&cli.endpoints, cli.ca.as_deref())?
                }
                (_, home) => connect_via(&cli.endpoints, cli.ca.as_deref(), cli.session_ttl, home).await?,
            };
            let code = cache_cli::run(&client, &cli.endpoints, command).await;
            client.close().await;
            code
        }
        Command::Queue(command) => {
            let client = connect(&cli.endpoints, cli.ca.as_deref(), cli.session_ttl).await?;
            let code = queue_cli::run(&client, command).await;
            client.close().await;
            code
        }
        Command::Bench(BenchCommand::Queue { producers, consumers, size, in_flight, prefetch, duration }) => {
            let tls = tls(cli.ca.as_deref())?;
            anyhow::ensure!(!cli.endpoints.is_empty(), "give the cluster with --endpoints A,B,C");
            for in_flight in in_flight {
                let settings = bench::QueueSettings {
                    producers,
                    consumers,
                    size,
                    in_flight,
                    prefetch,
                    duration: Duration::from_secs(duration),
                };
                let report = bench::queue(&cli.endpoints, tls.clone(), &settings).await?;
                println!("{}", serde_json::to_string(&report)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Cache {
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
        }) => {
            let tls = tls(cli.ca.as_deref())?;
            anyhow::ensure!(!cli.endpoints.is_empty(), "give the cluster with --endpoints A,B,C");
            for consistency in consistency {
                let consistency = match consistency.as_str() {
                    "linearizable" => distsync::Consistency::Linearizable,
                    "local" => distsync::Consistency::Local,
                    other => anyhow::bail!("--consistency {other:?}: expected linearizable or local"),
                };
                let settings = bench::CacheSettings {
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
                let report = bench::cache(&cli.endpoints, tls.clone(), &settings).await?;
                println!("{}", serde_json::to_string(&report)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Write { clients, connections, duration, value_size }) => {
            let tls = tls(cli.ca.as_deref())?;
            anyhow::ensure!(!cli.endpoints.is_empty(), "give the cluster with --endpoints A,B,C");
            let connections = connections.unwrap_or(clients);
            let report =
                bench::write(&cli.endpoints, tls, clients, connections, Duration::from_secs(duration), value_size)
                    .await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Lock { clients, contended, duration }) => {
            let tls = tls(cli.ca.as_deref())?;
            anyhow::ensure!(!cli.endpoints.is_empty(), "give the cluster with --endpoints A,B,C");
            let report = bench::lock(&cli.endpoints, tls, clients, contended, Duration::from_secs(duration)).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Failover {
            rounds,
            writers,
            attempt_timeout_ms,
            heartbeat_ms,
            election_timeout_min_ms,
            election_timeout_max_ms,
        }) => {
            let directory = std::env::temp_dir().join(format!("distsync-failover-{}", std::process::id()));
            let node_args = [
                format!("--heartbeat-ms={heartbeat_ms}"),
                format!("--election-timeout-min-ms={election_timeout_min_ms}"),
                format!("--election-timeout-max-ms={election_timeout_max_ms}"),
            ];
            let result = bench::failover(
                &directory,
                rounds,
                writers,
                Duration::from_millis(attempt_timeout_ms),
                &node_args,
                |round| println!("{}", serde_json::to_string(round).expect("serializable")),
            )
            .await;
            match result {
                Ok(summary) => {
                    let _ = std::fs::remove_dir_all(&directory);
                    println!("{}", serde_json::to_string(&summary)?);
                }
                Err(error) => anyhow::bail!("{error:#}; node logs are kept in {}", directory.display()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Debug(DebugCommand::DropPeers { node, peers }) => {
            let client = unconnected(std::slice::from_ref(&node), cli.ca.as_deref())?;
            client.set_dropped_peers(&node, &peers).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn lock_command(client: &Client, command: LockCommand) -> anyhow::Result<ExitCode> {
    match command {
        LockCommand::Run { name, shared, timeout, conflict_exit_code, command } => {
            let mut request = client.lock(&name);
            if shared {
                request = request.shared();
            }
            if let Some(timeout) = timeout {
                request = request.timeout(seconds(timeout, "--timeout")?);
            }
            // Ctrl-C while waiting: give up the wait (closing the session withdraws it).
            let acquired = tokio::select! {
                acquired = request.acquire() => acquired,
                () = shutdown_signal() => {
                    eprintln!("distsync: interrupted while waiting for lock {name:?}");
                    return Ok(ExitCode::from(130));
                }
            };
            let guard = match acquired {
                Ok(guard) => guard,
                Err(error @ (distsync::LockError::Timeout { .. } | distsync::LockError::Deadlock { .. })) => {
                    eprintln!("distsync: {error}");
                    return Ok(ExitCode::from(conflict_exit_code));
                }
                Err(error) => return Err(error.into()),
            };
            let status = run_holding(&guard, &command).await;
            let released = guard.release().await;
            match status? {
                Held::Exited(code) => {
                    if let Err(error) = released {
                        eprintln!("distsync: releasing lock {name:?}: {error}");
                    }
                    Ok(ExitCode::from(code))
                }
                Held::Lost => {
                    eprintln!("distsync: lock {name:?} was lost while the command ran; it was stopped");
                    Ok(ExitCode::from(conflict_exit_code))
                }
            }
        }
        LockCommand::List { json } => {
            let locks = client.lock_list().await?;
            if json {
                println!("{}", serde_json::to_string(&locks)?);
            } else {
                println!("{:<32} {:<10} {:>7} {:>7} {:>12}", "NAME", "MODE", "HOLDERS", "WAITERS", "TOKEN");
                for lock in &locks {
                    let mode = lock.holders.first().map(|h| h.mode.as_str()).unwrap_or("-");
                    let token = lock.holders.iter().map(|h| h.token).max().map(|t| t.to_string());
                    println!(
                        "{:<32} {:<10} {:>7} {:>7} {:>12}",
                        lock.name,
                        mode,
                        lock.holders.len(),
                        lock.waiters.len(),
                        token.unwrap_or_else(|| "-".into())
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        LockCommand::Show { name, json } => {
            let lock = client.lock_show(&name).await?;
            if json {
                println!("{}", serde_json::to_string(&lock)?);
                return Ok(ExitCode::SUCCESS);
            }
            let Some(lock) = lock else {
                println!("lock {name:?} is free: nobody holds or awaits it");
                return Ok(ExitCode::SUCCESS);
            };
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let age = |since_ms: u64| format!("{:.1}s", now_ms.saturating_sub(since_ms) as f64 / 1000.0);
            println!("lock {:?}", lock.name);
            println!("holders:");
            for holder in &lock.holders {
                println!(
                    "  session {} actor {:#x} {} token {} for {}",
                    holder.owner.session,
                    holder.owner.actor,
                    holder.mode.as_str(),
                    holder.token,
                    age(holder.since_ms)
                );
            }
            println!("waiters, in the order they are served:");
            for waiter in &lock.waiters {
                let deadline = match waiter.deadline_ms {
                    Some(deadline) => format!(", gives up in {:.1}s", deadline.saturating_sub(now_ms) as f64 / 1000.0),
                    None => String::new(),
                };
                println!(
                    "  session {} actor {:#x} {}{} waiting {}{deadline}",
                    waiter.owner.session,
                    waiter.owner.actor,
                    waiter.mode.as_str(),
                    if waiter.upgrade { " (upgrade)" } else { "" },
                    age(waiter.since_ms)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How a command run under a lock ended.
enum Held {
    /// It exited with this status (128 + N when killed by signal N, as shells report it).
    Exited(u8),
    /// The lock was lost first, and the command was stopped.
    Lost,
}

/// Runs `command` while `guard` holds its lock; stops it if the lock is lost, and passes SIGINT
/// and SIGTERM on to it.
async fn run_holding(guard: &distsync::LockGuard, command: &[String]) -> anyhow::Result<Held> {
    use std::os::unix::process::ExitStatusExt as _;
    use tokio::signal::unix::{signal, SignalKind};
    let (program, arguments) = command.split_first().context("no command given after --")?;
    let mut child = tokio::process::Command::new(program)
        .args(arguments)
        .env("DISTSYNC_FENCING_TOKEN", guard.token().to_string())
        .env("DISTSYNC_LOCK_NAME", guard.name())
        .spawn()
        .with_context(|| format!("cannot run {program:?}"))?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            _ = interrupt.recv() => forward_signal(&child, libc::SIGINT),
            _ = terminate.recv() => forward_signal(&child, libc::SIGTERM),
            () = guard.lost() => {
                forward_signal(&child, libc::SIGTERM);
                if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
                return Ok(Held::Lost);
            }
        }
    };
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.saturating_add(signal as u8),
        (None, None) => 1,
    };
    Ok(Held::Exited(code))
}

#[allow(unsafe_code)]
fn forward_signal(child: &tokio::process::Child, signal: libc::c_int) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped) is sound.
        unsafe {
            libc::kill(pid as libc::pid_t, signal);
        }
    }
}

/// A command-line number of seconds as a duration; negative, NaN or huge values are refused.
fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| anyhow::anyhow!("{flag} must be a non-negative number of seconds"))
}

fn tls(ca: Option<&std::path::Path>) -> anyhow::Result<ClientTls> {
    let ca = ca.context("give the cluster CA with --ca FILE (the ca.pem from `distsync certs init`)")?;
    Ok(ClientTls::from_ca_file(ca)?)
}

fn unconnected(endpoints: &[String], ca: Option<&std::path::Path>) -> anyhow::Result<Client> {
    anyhow::ensure!(!endpoints.is_empty(), "give the cluster with --endpoints A,B,C");
    let options = ClientOptions::new(endpoints, tls(ca)?).attempt_timeout(Duration::from_secs(2));
    Ok(Client::new_unconnected(options)?)
}

async fn connect(endpoints: &[String], ca: Option<&std::path::Path>, session_ttl: f64) -> anyhow::Result<Client> {
    connect_via(endpoints, ca, session_ttl, None).await
}

/// Connects with `home` (one of the endpoints) as the node cache requests go through.
async fn connect_via(
    endpoints: &[String],
    ca: Option<&std::path::Path>,
    session_ttl: f64,
    home: Option<&str>,
) -> anyhow::Result<Client> {
    anyhow::ensure!(!endpoints.is_empty(), "give the cluster with --endpoints A,B,C");
    anyhow::ensure!(
        session_ttl.is_finite() && (1.0..=3600.0).contains(&session_ttl),
        "--session-ttl must be between 1 and 3600 seconds"
    );
    let mut options = ClientOptions::new(endpoints, tls(ca)?).session_ttl(Duration::from_secs_f64(session_ttl));
    if let Some(home) = home {
        options = options.home(home);
    }
    Client::connect_with(options).await.with_context(|| format!("cannot reach the cluster at {}", endpoints.join(",")))
}

async fn status(endpoints: &[String], ca: Option<&std::path::Path>, json: bool) -> anyhow::Result<ExitCode> {
    let client = unconnected(endpoints, ca)?;
    let answers = futures_join(endpoints.iter().cloned().map(|endpoint| {
        let client = client.clone();
        async move {
            let answer = client.node_status(&endpoint).await;
            (endpoint, answer)
        }
    }))
    .await;
    let reachable = answers.iter().filter(|(_, answer)| answer.is_ok()).count();
    if json {
        let nodes: Vec<serde_json::Value> = answers
            .iter()
            .map(|(endpoint, answer)| match answer {
                Ok(status) => serde_json::to_value(status).expect("serializable"),
                Err(error) => {
                    serde_json::json!({ "address": endpoint, "role": "unreachable", "error": error.to_string() })
                }
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&nodes)?);
    } else {
        println!(
            "{:<4} {:<22} {:<10} {:>6} {:>7} {:>10} {:>10} {:>10}  peers (last heard)",
            "ID", "ADDRESS", "ROLE", "TERM", "LEADER", "LAST LOG", "COMMITTED", "APPLIED"
        );
        for (endpoint, answer) in &answers {
            match answer {
                Ok(s) => {
                    let peers: Vec<String> = s
                        .peers
                        .iter()
                        .map(|p| match p.last_heard_ms {
                            Some(ms) => format!("{}:{}ms", p.id, ms),
                            None => format!("{}:never", p.id),
                        })
                        .collect();
                    let leader = s.leader.map(|l| l.to_string()).unwrap_or_else(|| "-".into());
                    println!(
                        "{:<4} {:<22} {:<10} {:>6} {:>7} {:>10} {:>10} {:>10}  {}",
                        s.id,
                        s.address,
                        s.role.as_str(),
                        s.term,
                        leader,
                        s.last_log_index,
                        s.committed,
                        s.applied,
                        peers.join(" ")
                    );
                }
                Err(error) => println!("{:<4} {:<22} {:<10} {error}", "?", endpoint, "unreachable"),
            }
        }
    }
    if reachable == 0 {
        eprintln!("error: no node answered at {}; is the cluster running and is --ca its CA?", endpoints.join(","));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join<F: std::future::Future + Send + 'static>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("status task panicked"));
    }
    outputs
}

async fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!((1..=7).contains(&args.nodes), "--nodes must be between 1 and 7");
    let mut redis_server = None;
    let redis = match (&args.redis, args.no_redis) {
        (Some(url), _) => Some(url.clone()),
        (None, true) => None,
        (None, false) => {
            match distsync_server::local_cluster::start_redis(&args.dir.join("redis"), args.base_port + 200)? {
                Some((child, url)) => {
                    redis_server = Some(child);
                    Some(url)
                }
                None => {
                    println!("redis-server is not on PATH: the cache keeps its values in the embedded store");
                    None
                }
            }
        }
    };
    let mut extra: Vec<String> = Vec::new();
    if let Some(url) = &redis {
        extra.extend(["--redis".to_string(), url.clone()]);
    }
    if let Some(entries) = args.cache_entries {
        extra.extend(["--cache-entries".to_string(), entries.to_string()]);
    }
    if let Some(bytes) = args.cache_bytes {
        extra.extend(["--cache-bytes".to_string(), bytes.to_string()]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let stop_redis = |redis_server: &mut Option<std::process::Child>| {
        if let Some(mut child) = redis_server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    };
    let mut cluster = match LocalCluster::start(&args.dir, args.nodes, Ports::Fixed(args.base_port), &extra) {
        Ok(cluster) => cluster,
        Err(error) => {
            stop_redis(&mut redis_server);
            return Err(error);
        }
    };
    let leader = match cluster.wait_for_leader(0, Duration::from_secs(15)).await {
        Ok(leader) => leader,
        Err(error) => {
            cluster.stop();
            stop_redis(&mut redis_server);
            anyhow::bail!("{error}; see the logs in {}", args.dir.display());
        }
    };
    let endpoints = cluster.endpoints().join(",");
    let ca = cluster.ca();
    println!("distsync dev: {} nodes on loopback, node {} leads", args.nodes, leader.id);
    for id in 1..=args.nodes {
        println!(
            "  node {id}  {}  metrics http://{}/metrics  log {}",
            cluster.endpoints()[id as usize - 1],
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
    stop_redis(&mut redis_server);
    Ok(ExitCode::SUCCESS)
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
