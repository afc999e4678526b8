//! `distsync-torture`: one seeded run of faults against a real cluster, checked; exit 0 only when
//! every checker passes. See `docs/reliability.md`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use distsync_harness::Network;
use distsync_torture::run::{run, RunConfig};
use distsync_torture::schedule::FaultKind;
use distsync_torture::workload::Primitive;

#[derive(Parser)]
#[command(
    name = "distsync-torture",
    version,
    about = "Random faults against a real distsync cluster, every history checked"
)]
struct Args {
    /// The seed of the fault schedule and of every client's choices: the same seed replays the
    /// same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds the workload runs under faults.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=5))]
    nodes: u64,
    /// Fault kinds, comma-separated: kill, pause, partition, loss (needs --network netns),
    /// delay, clock, redis, kill-all, disk and power (both need root); or all.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Primitives, comma-separated: kv, lock, queue, cache; or all.
    #[arg(long, default_value = "all")]
    workload: String,
    /// Clients per primitive.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Seconds within which every client must succeed again after the heal.
    #[arg(long, default_value_t = 5)]
    recovery_bound: u64,
    /// The `distsync` binary (default: `DISTSYNC_BIN`, else the one beside this executable).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Where the cluster's certificates, data and logs go (default: a temporary directory,
    /// kept when the run fails).
    #[arg(long)]
    directory: Option<PathBuf>,
    /// Start every node with `--inject-bug NAME` (stale-reads, early-ack, grant-queued): a
    /// guarantee broken on purpose, to see the matching checker fail.
    #[arg(long)]
    inject_bug: Option<String>,
    /// Where the nodes run: `netns` (each in its own network namespace on a bridge; partitions
    /// and loss are packet filters; needs root, `ip` and `iptables`), `loopback` (partitions
    /// through the nodes' fault switch), or `auto` (netns when it can be made).
    #[arg(long, default_value = "auto", value_parser = ["auto", "netns", "loopback"])]
    network: String,
    /// Print the report as one JSON document on stdout.
    #[arg(long)]
    json: bool,
}

fn parse_list<T: std::str::FromStr<Err = String> + Copy>(list: &str, all: &[T]) -> Result<Vec<T>, String> {
    if list == "all" {
        return Ok(all.to_vec());
    }
    list.split(',').filter(|name| !name.is_empty()).map(str::parse).collect()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let lists = parse_list(&args.faults, &FaultKind::ALL)
        .and_then(|faults| parse_list(&args.workload, &Primitive::ALL).map(|workloads| (faults, workloads)));
    let (faults, workloads) = match lists {
        Ok(lists) => lists,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let faults = if args.faults == "all" && !distsync_harness::is_root() {
        eprintln!(
            "note: not root, so the disk and power faults (which mount filesystems) are left out of --faults all"
        );
        faults.into_iter().filter(|&kind| kind != FaultKind::Disk && kind != FaultKind::Power).collect()
    } else {
        faults
    };
    let namespaces = match (args.network.as_str(), Network::unavailable()) {
        ("loopback", _) => false,
        ("netns", Some(reason)) => {
            eprintln!("error: --network netns: {reason}");
            return ExitCode::from(2);
        }
        ("auto", Some(reason)) => {
            eprintln!("note: nodes on loopback, partitions through their fault switch ({reason})");
            false
        }
        _ => true,
    };
    let faults: Vec<FaultKind> = if args.faults == "all" && !namespaces {
        eprintln!("note: on loopback, so the loss fault (packet filters) is left out of --faults all");
        faults.into_iter().filter(|&kind| kind != FaultKind::Loss).collect()
    } else {
        faults
    };
    if workloads.is_empty() {
        eprintln!("error: --workload names no primitive");
        return ExitCode::from(2);
    }
    let config = RunConfig {
        seed: args.seed,
        duration: Duration::from_secs(args.duration),
        nodes: args.nodes as usize,
        faults,
        workloads,
        clients: args.clients.max(1),
        recovery_bound: Duration::from_secs(args.recovery_bound),
        binary: args.binary,
        directory: args.directory,
        node_args: args.inject_bug.iter().flat_map(|bug| ["--inject-bug".to_string(), bug.clone()]).collect(),
        namespaces,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        eprintln!(
            "distsync-torture: seed {}, {} s, {} nodes ({}), faults {}, workload {}",
            config.seed,
            config.duration.as_secs(),
            config.nodes,
            if config.namespaces { "a network namespace each" } else { "loopback" },
            args.faults,
            args.workload
        );
        // An interrupted run drops what it made: the workers stop, and the nodes, namespaces and
        // mounts go (once the runtime has shut down, below).
        let outcome = tokio::select! {
            outcome = run(&config) => outcome,
            signal = interrupted() => {
                eprintln!("distsync-torture: {signal}: stopping the run, removing its nodes, namespaces and mounts");
                // The shell's convention: 128 + the signal's number.
                return ExitCode::from(if signal == "SIGINT" { 130 } else { 143 });
            }
        };
        let finished = match outcome {
            Ok(finished) => finished,
            Err(error) => {
                eprintln!("error: the run could not complete (a harness failure, not a verdict): {error:#}");
                return ExitCode::FAILURE;
            }
        };
        let report = &finished.report;
        if args.json {
            println!("{}", report.json());
        } else {
            println!("{}", report.table());
        }
        if report.passed() {
            finished.stop();
            return ExitCode::SUCCESS;
        }
        let cluster = &finished.cluster;
        let logs: Vec<(u64, String)> = cluster
            .ids()
            .into_iter()
            .map(|id| (id, std::fs::read_to_string(cluster.log_path(id)).unwrap_or_default()))
            .collect();
        eprintln!("{}", report.violations_with_logs(&logs));
        eprintln!("the cluster's files are kept in {}", cluster.directory().display());
        eprintln!("replay: {}", report.replay_command());
        finished.stop();
        ExitCode::FAILURE
    });
    // Waits for the workers (lock workers run on threads of their own) to let go of the cluster,
    // whose drop kills the nodes and removes the network.
    runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
    code
}

/// How long an ended run waits for its workers to stop before the process exits.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Completes at SIGINT or SIGTERM, naming it (never, if the handlers cannot be installed).
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}
