//! The workload: clients of every primitive, each its own task with its own seeded choices, each
//! bound to one node (its home, tried first) or roaming, recording every operation.
//!
//! Workers run until told to stop. After the heal they go on until each has completed one
//! operation invoked after it (or the probe deadline passes): the liveness check's figures.

mod lock;
mod queue;
mod register;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use distsync::{Client, ClientError, ClientOptions, LockError, QueueError};
use distsync_harness::Cluster;
use tokio::sync::Notify;

use crate::check::liveness::Recovery;
use crate::check::Outcome;
use crate::history::{FencedResource, History};
use crate::random::Random;

pub use self::queue::{drain, queue_options, QUEUE_NAMES};

/// A primitive the workload exercises (`--workload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Primitive {
    /// kv puts and linearizable gets.
    Kv,
    /// Exclusive and shared locks guarding a fenced resource.
    Lock,
    /// Queue puts, gets, acks, nacks, and consumers that crash.
    Queue,
    /// Cache sets and linearizable gets (values in Redis).
    Cache,
}

impl Primitive {
    /// Every primitive, in the order of `--workload all`.
    pub const ALL: [Primitive; 4] = [Primitive::Kv, Primitive::Lock, Primitive::Queue, Primitive::Cache];

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Primitive::Kv => "kv",
            Primitive::Lock => "lock",
            Primitive::Queue => "queue",
            Primitive::Cache => "cache",
        }
    }
}

impl FromStr for Primitive {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Primitive::ALL.into_iter().find(|primitive| primitive.name() == name).ok_or_else(|| {
            let known: Vec<&str> = Primitive::ALL.iter().map(|primitive| primitive.name()).collect();
            format!("unknown workload {name:?}; known workloads: {}", known.join(", "))
        })
    }
}

/// How long one call may take before the client gives up (its outcome is then unknown).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one attempt at one node may take before the client tries another.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// What every worker shares.
pub struct Shared {
    /// The cluster under test.
    pub cluster: Arc<Cluster>,
    /// The record.
    pub history: History,
    /// The resource the locks guard.
    pub fenced: FencedResource,
    /// Set when the workers should stop.
    stop: AtomicBool,
    /// When the faults end: no client stalls past it (a stall would delay its recovery).
    faults_end: Instant,
    /// When every fault was healed.
    healed_at: Mutex<Option<Instant>>,
    /// Per worker: how long after the heal its first operation invoked after it succeeded.
    recovered: Mutex<BTreeMap<usize, Duration>>,
    /// Notified when a worker recovers.
    recovery: Notify,
}

impl Shared {
    /// Shared state for workers against `cluster`, whose faults end at `faults_end`.
    pub fn new(cluster: Arc<Cluster>, faults_end: Instant) -> Arc<Self> {
        Arc::new(Shared {
            cluster,
            history: History::default(),
            fenced: FencedResource::default(),
            stop: AtomicBool::new(false),
            faults_end,
            healed_at: Mutex::new(None),
            recovered: Mutex::new(BTreeMap::new()),
            recovery: Notify::new(),
        })
    }

    /// Marks the moment every fault was healed.
    pub fn healed(&self) {
        *self.healed_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Tells the workers to stop after their current operation.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Records a success of worker `worker` for an operation invoked at `invoked`.
    fn succeeded(&self, worker: usize, invoked: Instant) {
        let healed = *self.healed_at.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(healed) = healed.filter(|healed| invoked >= *healed) {
            self.recovered.lock().unwrap_or_else(PoisonError::into_inner).entry(worker).or_insert(healed.elapsed());
            self.recovery.notify_waiters();
        }
    }

    /// Completes at the next recovery of a worker.
    pub async fn recovery(&self) {
        self.recovery.notified().await;
    }

    /// Whether worker `worker` has succeeded since the heal.
    pub fn has_recovered(&self, worker: usize) -> bool {
        self.recovered.lock().unwrap_or_else(PoisonError::into_inner).contains_key(&worker)
    }

    /// The recovery of each worker, for the liveness check.
    pub fn recoveries(&self, workers: &[(usize, Primitive)]) -> Vec<Recovery> {
        let recovered = self.recovered.lock().unwrap_or_else(PoisonError::into_inner);
        workers
            .iter()
            .map(|&(worker, primitive)| Recovery {
                client: worker,
                workload: primitive.name().to_string(),
                after_heal: recovered.get(&worker).copied(),
            })
            .collect()
    }
}

/// One worker: its number, its choices, and how it reaches the cluster.
pub struct Worker {
    /// Its number (also its stream of the seed).
    pub id: usize,
    /// Its choices.
    pub random: Random,
    /// The node tried first (`None`: roaming, any node).
    pub home: Option<u64>,
    /// What it shares with the others.
    pub shared: Arc<Shared>,
}

impl Worker {
    /// Client options of this worker; `session_ttl` for the lock workers, whose holds live as
    /// long as their session does.
    fn options(&self, session_ttl: Option<Duration>) -> ClientOptions {
        let cluster = &self.shared.cluster;
        let mut options =
            cluster.options_for(&cluster.ids()).request_timeout(REQUEST_TIMEOUT).attempt_timeout(ATTEMPT_TIMEOUT);
        if let Some(home) = self.home {
            options = options.home(cluster.endpoint(home));
        }
        if let Some(ttl) = session_ttl {
            options = options.session_ttl(ttl);
        }
        options
    }

    /// A client for this worker. Connecting needs one node to answer: while none does (every
    /// node killed at once), it retries until the run stops.
    async fn connect(&self, session_ttl: Option<Duration>) -> Option<Client> {
        loop {
            if self.shared.stopping() {
                return None;
            }
            match Client::connect_with(self.options(session_ttl)).await {
                Ok(client) => return Some(client),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Runs this worker's loop for `primitive` until the run stops.
    pub async fn run(self, primitive: Primitive) {
        match primitive {
            Primitive::Kv => register::run(self, false).await,
            Primitive::Cache => register::run(self, true).await,
            Primitive::Lock => lock::run_alone(self).await,
            Primitive::Queue => queue::run(self).await,
        }
    }
}

/// What a client error says about a write: refused for certain, or unknown.
fn client_outcome(error: &ClientError) -> Outcome {
    match error {
        // Refused before anything was sent. (Not `Unauthenticated`: a retry's attempt could
        // meet it after an earlier attempt was applied.)
        ClientError::InvalidArgument { .. } | ClientError::Config { .. } => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

/// What a lock error says about an acquire or release.
fn lock_outcome(error: &LockError) -> Outcome {
    match error {
        LockError::Timeout { .. }
        | LockError::WouldBlock { .. }
        | LockError::Deadlock { .. }
        | LockError::AlreadyHeld { .. }
        | LockError::NotHeld { .. }
        | LockError::NotShared { .. }
        | LockError::SessionExpired { .. }
        | LockError::InvalidArgument { .. } => Outcome::Failed,
        LockError::Client(error) => client_outcome(error),
        _ => Outcome::Unknown,
    }
}

/// What a queue error says about a put or an ack.
fn queue_outcome(error: &QueueError) -> Outcome {
    match error {
        QueueError::NoSuchQueue { .. }
        | QueueError::StaleTag { .. }
        | QueueError::MessageTooLarge { .. }
        | QueueError::Full { .. }
        | QueueError::InvalidArgument { .. } => Outcome::Failed,
        QueueError::Client(error) => client_outcome(error),
        _ => Outcome::Unknown,
    }
}
