//! The `distsync` command line: run nodes, a local dev cluster, inspect and use a cluster, and
//! benchmark it. See the README for the contract each command keeps.
//!
//! One file per command group: `certs.rs`, `serve.rs`, `dev.rs`, `status.rs`, `kv.rs`,
//! `lock.rs`, `queue.rs`, `cache.rs`, `debug.rs`, `access.rs` (acl and identity), and `bench/` with one file per benchmark.
//! `connect.rs` turns the global options into a client; `flags.rs` parses durations;
//! `signals.rs` waits for Ctrl-C and SIGTERM.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use distsync_server::ServerConfig;

mod access;
mod bench;
mod cache;
mod certs;
mod connect;
mod debug;
mod dev;
mod flags;
mod kv;
mod lock;
mod queue;
mod serve;
mod signals;
mod status;

use self::connect::Target;

#[derive(Parser)]
#[command(name = "distsync", version, about = "distsync: locks, queues and a coherent cache on Raft")]
struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Certificates for a cluster.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Run one node.
    Serve(Box<ServerConfig>),
    /// Make certificates and run a local cluster on loopback until Ctrl-C.
    Dev(dev::DevArgs),
    /// Each node's role, term, log indexes and peer heartbeats.
    Status {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
        /// Also ask each node for a digest of its replicated state, to compare replicas (nodes at
        /// the same applied index have equal digests). It reads the whole state, so a node
        /// answers a digest up to 250 ms old, at the index it names.
        #[arg(long)]
        digest: bool,
    },
    /// The replicated key-value register.
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// Distributed locks.
    #[command(subcommand)]
    Lock(lock::LockCommand),
    /// Durable FIFO queues.
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// The coherent cache (values in Redis, MESI copies on every node).
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Benchmarks, printing JSON lines.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Test-only fault injection (nodes must run with --enable-fault-injection).
    #[command(subcommand)]
    Debug(debug::DebugCommand),
    /// Grants: which identity may read or write which names (admin only).
    #[command(subcommand)]
    Acl(access::AclCommand),
    /// Client identities: disable a leaked one at once, enable it again, list them (admin only).
    #[command(subcommand)]
    Identity(access::IdentityCommand),
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
    let target = &cli.target;
    match cli.command {
        Command::Certs(command) => certs::run(command),
        Command::Serve(config) => serve::run(*config).await,
        Command::Dev(args) => dev::run(args).await,
        Command::Status { json, digest } => status::run(target, json, digest).await,
        Command::Kv(command) => kv::run(target, command).await,
        Command::Lock(command) => lock::run(target, command).await,
        Command::Queue(command) => queue::run(target, command).await,
        Command::Cache(command) => cache::run(target, command).await,
        Command::Bench(command) => bench::run(target, command).await,
        Command::Debug(command) => debug::run(target, command).await,
        Command::Acl(command) => access::run_acl(target, command).await,
        Command::Identity(command) => access::run_identity(target, command).await,
    }
}
