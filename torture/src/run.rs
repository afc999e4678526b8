//! One run: start the cluster (and Redis), run the workload while the schedule's faults hit it,
//! heal everything, measure recovery, drain the queues, and check the history.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use distsync_harness::{Cluster, ClusterOptions, Network, Redis};

use crate::check;
use crate::disk::{FullDisk, SmallDisk};
use crate::faults::Injector;
use crate::power::PowerDisk;
use crate::report::{Report, Violation};
use crate::schedule::{self, FaultKind};
use crate::workload::{self, Primitive, Shared, Worker, QUEUE_NAMES};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The seed of the schedule and of every worker's choices.
    pub seed: u64,
    /// How long the workload runs under faults.
    pub duration: Duration,
    /// Nodes in the cluster (3 or 5).
    pub nodes: usize,
    /// Fault kinds to draw from.
    pub faults: Vec<FaultKind>,
    /// Primitives the workload exercises.
    pub workloads: Vec<Primitive>,
    /// Workers per primitive.
    pub clients: usize,
    /// How soon after the heal every worker must succeed again.
    pub recovery_bound: Duration,
    /// The `distsync` binary (`None`: the harness's default, beside this executable).
    pub binary: Option<PathBuf>,
    /// Where the cluster's files go (`None`: a temporary directory, kept on failure).
    pub directory: Option<PathBuf>,
    /// Further arguments for every node (`--inject-bug NAME`, to show a checker catches it).
    pub node_args: Vec<String>,
    /// Each node in its own network namespace, partitions and loss by packet filters (else
    /// every node on loopback, partitions through the nodes' fault switch).
    pub namespaces: bool,
}

/// How long after the heal the run waits for every worker to succeed once, at most.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the drain may take to empty the queues.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the replicas may take to converge after the heal.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Snapshot every this many entries, so that snapshots are taken and installed during a run.
const SNAPSHOT_THRESHOLD: u64 = 500;

/// A finished run: its report, and the cluster (stopped or not) with its files.
pub struct Finished {
    /// What the run did and found.
    pub report: Report,
    /// The cluster, still running, so that its logs can be read.
    pub cluster: Cluster,
    /// The disks mounted on data directories, unmounted after the cluster stops.
    disks: Disks,
    /// A directory the run made for the cluster (a mounted disk needs a known place).
    scratch: Option<PathBuf>,
}

/// The filesystems a run mounts on the nodes' data directories.
struct Disks {
    /// The disk the full-disk fault fills, and its node.
    full: Option<(u64, Arc<FullDisk>)>,
    /// Every node's power-cut disk, when the run cuts power.
    power: BTreeMap<u64, Arc<PowerDisk>>,
}

impl Finished {
    /// Stops the cluster, unmounts its disks, and removes the cluster's files unless the run
    /// failed or the caller named the directory (a power-cut disk's files go with it: they
    /// live in memory).
    pub fn stop(self) {
        let Finished { report, cluster, disks, scratch } = self;
        cluster.stop();
        if report.passed() {
            drop(cluster);
        } else {
            // Keeps the directory and prints the tail of every node's log.
            let _ = cluster.finish(Err::<(), _>(anyhow::anyhow!("the run found violations")));
        }
        drop(disks);
        if let Some(scratch) = scratch.filter(|_| report.passed()) {
            let _ = std::fs::remove_dir_all(scratch);
        }
    }
}

/// Runs `config`, printing a line per fault to stderr as it goes; returns the report (its
/// violations say whether the run passed) and the cluster, so the caller can keep its files.
///
/// # Errors
///
/// When the cluster or Redis cannot be started, or a fault cannot be injected or healed: the
/// harness failed, which says nothing about the history.
pub async fn run(config: &RunConfig) -> anyhow::Result<Finished> {
    let network = if config.namespaces {
        let ids: Vec<u64> = (1..=config.nodes as u64).collect();
        Some(Arc::new(Network::create(&ids).context("cannot make the network of namespaces")?))
    } else {
        None
    };
    let uses_redis = config.workloads.contains(&Primitive::Cache) || config.faults.contains(&FaultKind::Redis);
    let redis = match (uses_redis, &network) {
        (false, _) => None,
        (true, None) => Some(Redis::start().await),
        (true, Some(network)) => Some(Redis::start_on(network.host_ip().into()).await),
    };
    let redis = redis.transpose().context("cannot start redis-server")?.map(Arc::new);
    // Power cuts: every node's data directory is a power-cut disk. The full-disk fault: the
    // last node's is a small disk (its power-cut disk, if it has one). Both are mounted before
    // the nodes first start, so the cluster's directory is chosen here.
    let uses_disk = config.faults.contains(&FaultKind::Disk);
    let uses_power = config.faults.contains(&FaultKind::Power);
    let scratch = ((uses_disk || uses_power) && config.directory.is_none()).then(scratch_directory).transpose()?;
    let directory = config.directory.clone().or_else(|| scratch.clone());
    let mut disks = Disks { full: None, power: BTreeMap::new() };
    if let Some(directory) = directory.as_ref() {
        for id in (1..=config.nodes as u64).filter(|_| uses_power) {
            let disk = PowerDisk::mount(&directory.join(format!("node-{id}")))?;
            disks.power.insert(id, Arc::new(disk));
        }
        let disk_node = config.nodes as u64;
        if uses_disk {
            let full = match disks.power.get(&disk_node) {
                Some(disk) => FullDisk::Power(Arc::clone(disk)),
                None => FullDisk::Tmpfs(SmallDisk::mount(&directory.join(format!("node-{disk_node}")))?),
            };
            disks.full = Some((disk_node, Arc::new(full)));
        }
    }
    let options = ClusterOptions {
        snapshot_threshold: Some(SNAPSHOT_THRESHOLD),
        redis: redis.as_ref().map(|redis| redis.url()),
        binary: config.binary.clone(),
        directory,
        node_args: config.node_args.clone(),
        network,
        ..ClusterOptions::default()
    };
    let cluster = Arc::new(Cluster::start(config.nodes, options).await?);
    // On an error the workers may still run (and hold the cluster): the error is what matters.
    let report = match run_on(config, &cluster, redis, &disks).await {
        Ok(report) => report,
        Err(error) => {
            // The workers may still hold the cluster and drop it last: keep its files then.
            cluster.keep_files();
            return Err(error.context(format!("the cluster's files are kept in {}", cluster.directory().display())));
        }
    };
    let cluster = Arc::try_unwrap(cluster).ok().context("a worker outlived the run")?;
    Ok(Finished { report, cluster, disks, scratch })
}

/// A fresh directory for a cluster whose files the run must place itself.
fn scratch_directory() -> anyhow::Result<PathBuf> {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let path = std::env::temp_dir().join(format!("distsync-torture-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(path)
}

/// Tells the workers to stop when the run ends, however it ends.
struct StopWorkers(Arc<Shared>);

impl Drop for StopWorkers {
    fn drop(&mut self) {
        self.0.stop();
    }
}

async fn run_on(
    config: &RunConfig,
    cluster: &Arc<Cluster>,
    redis: Option<Arc<Redis>>,
    disks: &Disks,
) -> anyhow::Result<Report> {
    cluster.wait_for_leader(&cluster.ids(), Duration::from_secs(60)).await?;
    let setup = cluster.client().await?;
    for name in QUEUE_NAMES {
        setup.queue(name).create(workload::queue_options()).await.with_context(|| format!("cannot create {name}"))?;
    }
    let schedule = schedule::draw(config.seed, config.duration, &config.faults);
    let shared = Shared::new(Arc::clone(cluster), Instant::now() + config.duration);
    let _stop_workers = StopWorkers(Arc::clone(&shared));
    let started = Instant::now();
    let wall_started = SystemTime::now();
    let mut workers = Vec::new();
    let mut handles = Vec::new();
    for (index, &primitive) in config.workloads.iter().enumerate() {
        for n in 0..config.clients {
            let id = 1 + index * config.clients + n;
            // Half the workers are bound to a node (tried first), half roam.
            let home = (id % 2 == 0).then(|| (id / 2 % config.nodes) as u64 + 1);
            let worker = Worker {
                id,
                random: crate::random::Random::new(config.seed, 1_000 + id as u64),
                home,
                shared: Arc::clone(&shared),
            };
            workers.push((id, primitive));
            handles.push(tokio::spawn(worker.run(primitive)));
        }
    }

    let full = disks.full.as_ref().map(|(node, disk)| (*node, Arc::clone(disk)));
    let mut injector = Injector::new(Arc::clone(cluster), redis, full, disks.power.clone());
    for fault in &schedule {
        tokio::time::sleep_until((started + fault.at).into()).await;
        supervise(&mut injector, started).await?;
        let (injected, line) = injector.inject(fault).await.with_context(|| format!("cannot inject {fault:?}"))?;
        eprintln!("{:>8.1} s  {}: {line}", started.elapsed().as_secs_f64(), fault.kind);
        tokio::time::sleep(fault.hold).await;
        injector.heal(injected).await.with_context(|| format!("cannot heal {fault:?}"))?;
        eprintln!("{:>8.1} s  healed {}", started.elapsed().as_secs_f64(), fault.kind);
    }
    tokio::time::sleep_until((started + config.duration).into()).await;
    supervise(&mut injector, started).await?;
    injector.heal_partitions().await?;
    shared.healed();
    let healed = Instant::now();
    eprintln!(
        "{:>8.1} s  every fault healed; waiting for every client to succeed once",
        started.elapsed().as_secs_f64()
    );
    let ids: Vec<usize> = workers.iter().map(|&(id, _)| id).collect();
    while healed.elapsed() < PROBE_TIMEOUT && !ids.iter().all(|&id| shared.has_recovered(id)) {
        tokio::time::timeout(Duration::from_millis(100), shared.recovery()).await.ok();
    }
    shared.stop();
    for handle in handles {
        tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .context("a worker did not stop within 30 s")?
            .context("a worker panicked")?;
    }
    let workload_ended = started.elapsed();

    let drained = if config.workloads.contains(&Primitive::Queue) {
        workload::drain(&setup, &shared.history, DRAIN_TIMEOUT).await
    } else {
        0
    };
    setup.close().await;
    supervise(&mut injector, started).await?;
    let converged = cluster.wait_applied_equal(&cluster.ids(), CONVERGE_TIMEOUT).await;

    let recorded = shared.history.lock().clone();
    let recoveries = shared.recoveries(&workers);
    let bound = config.recovery_bound;
    let violations = tokio::task::spawn_blocking(move || {
        let mut violations = Vec::new();
        if let Err(error) = check::register::check(&recorded.kv) {
            violations.push(Violation::register("kv", error, &recorded.kv));
        }
        if let Err(error) = check::register::check(&recorded.cache) {
            violations.push(Violation::register("cache", error, &recorded.cache));
        }
        violations.extend(check::lock::check(&recorded.holds).into_iter().map(|v| Violation::lock(v, &recorded.holds)));
        violations.extend(check::queue::check(&recorded.queue).into_iter().map(Violation::queue));
        violations.extend(check::sessions::check(&recorded.queue).into_iter().map(Violation::sessions));
        violations.extend(check::liveness::check(&recoveries, bound).into_iter().map(Violation::liveness));
        (violations, recorded, recoveries)
    })
    .await
    .context("a checker panicked")?;
    let (mut violations, recorded, recoveries) = violations;
    if let Err(error) = converged {
        violations.push(Violation::replicas(format!("{error:#}")));
    }
    violations.extend(injector.crashes.iter().cloned().map(Violation::crash));
    Ok(Report {
        seed: config.seed,
        duration: config.duration,
        nodes: config.nodes,
        namespaces: config.namespaces,
        node_args: config.node_args.clone(),
        faults: config.faults.clone(),
        workloads: config.workloads.clone(),
        counts: recorded.counts.clone(),
        injected: injector.injected.clone(),
        restarted_after_full_disk: injector.restarted_after_full_disk,
        power_cut_bytes: injector.power_cut_bytes,
        fenced: (recorded.fenced_accepted, recorded.fenced_refused),
        stalls: recorded.stalls,
        drained,
        recoveries,
        workload_ended,
        violations,
        started,
        wall_started,
        schedule_length: schedule.len(),
    })
}

/// Restarts nodes that stopped by themselves (see [`Injector::supervise`]), printing a line each.
async fn supervise(injector: &mut Injector, started: Instant) -> anyhow::Result<()> {
    for line in injector.supervise().await? {
        eprintln!("{:>8.1} s  {line}", started.elapsed().as_secs_f64());
    }
    Ok(())
}
