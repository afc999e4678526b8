//! Recorded register histories for the cluster tests: [`Recorder`] runs concurrent workers of
//! random writes and reads against a [`Register`] (the replicated key-value register, or the
//! cache) and checks what they saw with the fault suite's register checker
//! ([`distsync_torture::check::register`]: linearizable per key, unknown writes may or may not
//! have happened, under a time limit).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distsync_torture::check::register::{check, timeline, Action, Operation};
use tokio::sync::Notify;

/// A register under test.
pub trait Register: Send + Sync + 'static {
    /// Writes `value`; whether the write was acknowledged (after an error its outcome is unknown).
    fn write(&self, key: &[u8], value: &[u8]) -> impl Future<Output = bool> + Send;
    /// Reads `key`: `None` when the read failed, else the value or its absence.
    fn read(&self, key: &[u8]) -> impl Future<Output = Option<Option<Vec<u8>>>> + Send;
}

impl Register for distsync::Kv {
    async fn write(&self, key: &[u8], value: &[u8]) -> bool {
        self.put(key, value).await.is_ok()
    }

    async fn read(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.get(key).await.ok()
    }
}

impl Register for distsync::Cache {
    async fn write(&self, key: &[u8], value: &[u8]) -> bool {
        self.set(key, value).await.is_ok()
    }

    async fn read(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.get(key).await.ok()
    }
}

/// What the workers of a [`Recorder`] do.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Keys, named `lin-0` to `lin-{keys - 1}`.
    pub keys: u64,
    /// One operation in this many is a write (of a value unique to the worker); the rest read.
    pub writes_one_in: u64,
    /// Operations of all workers together, after which they stop.
    pub operations: usize,
    /// Bounds the run if the cluster stops making progress.
    pub timeout: Duration,
}

/// The history of concurrent workers, and how far they got.
#[derive(Clone)]
pub struct Recorder {
    workload: Workload,
    history: Arc<Mutex<Vec<Operation>>>,
    completed: Arc<AtomicUsize>,
    progress: Arc<Notify>,
    started: Instant,
}

impl Recorder {
    /// An empty history; the clock starts now.
    pub fn new(workload: Workload) -> Self {
        Recorder {
            workload,
            history: Arc::default(),
            completed: Arc::new(AtomicUsize::new(0)),
            progress: Arc::new(Notify::new()),
            started: Instant::now(),
        }
    }

    /// Worker `worker`: random writes and reads on `register` until the workload's operations
    /// are done or its timeout passed; then closes `client`.
    pub async fn run_worker(self, worker: usize, client: distsync::Client, register: impl Register) {
        // xorshift: deterministic per worker, no dependency needed.
        let mut random = 0x9e37_79b9_7f4a_7c15u64 ^ (worker as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let mut sequence = 0u64;
        while self.completed.load(Ordering::Relaxed) < self.workload.operations
            && self.started.elapsed() < self.workload.timeout
        {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            let key = format!("lin-{}", random % self.workload.keys).into_bytes();
            let invoked = Instant::now();
            let action = if random.is_multiple_of(self.workload.writes_one_in) {
                sequence += 1;
                let value = format!("w{worker}-{sequence}").into_bytes();
                let acknowledged = register.write(&key, &value).await;
                (Action::Write(value), acknowledged)
            } else {
                match register.read(&key).await {
                    Some(value) => (Action::Read(value), true),
                    // A failed read returned nothing: it constrains nothing.
                    None => continue,
                }
            };
            let (action, known) = action;
            let returned = known.then(Instant::now);
            self.history.lock().expect("history lock").push(Operation { key, action, invoked, returned });
            self.completed.fetch_add(1, Ordering::Relaxed);
            self.progress.notify_waiters();
        }
        client.close().await;
    }

    /// Operations completed so far.
    pub fn completed(&self) -> usize {
        self.completed.load(Ordering::Relaxed)
    }

    /// Waits until `operations` have completed.
    ///
    /// # Errors
    ///
    /// When the workload's timeout passes first.
    pub async fn wait_for(&self, operations: usize) -> anyhow::Result<()> {
        let deadline = self.started + self.workload.timeout;
        loop {
            // Registered before the check, so a notification in between is not lost.
            let notified = self.progress.notified();
            if self.completed() >= operations {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            anyhow::ensure!(
                tokio::time::timeout(left, notified).await.is_ok(),
                "only {} of {operations} operations completed in time",
                self.completed()
            );
        }
    }

    /// [`Recorder::verify`], and at least `min_after` acknowledged reads and as many
    /// acknowledged writes invoked after `fault` (a kill, a partition): a history whose every
    /// operation after the fault failed would pass the linearizability check, and show nothing.
    ///
    /// # Errors
    ///
    /// Too few operations in all or after the fault, or a key without a linearization.
    pub fn verify_across(
        &self,
        fault: Instant,
        min_reads: usize,
        min_writes: usize,
        min_after: usize,
    ) -> anyhow::Result<()> {
        {
            let history = self.history.lock().expect("history lock");
            let after = |write: bool| {
                history
                    .iter()
                    .filter(|op| op.invoked > fault && op.returned.is_some())
                    .filter(|op| matches!(op.action, Action::Write(_)) == write)
                    .count()
            };
            let (reads, writes) = (after(false), after(true));
            anyhow::ensure!(
                reads >= min_after && writes >= min_after,
                "only {reads} reads and {writes} writes were acknowledged after the fault (at least {min_after} each needed)"
            );
        }
        self.verify(min_reads, min_writes)
    }

    /// Checks the history: at least `min_reads` reads that saw a value and `min_writes`
    /// acknowledged writes (else it tested too little), and a linearization of every key (else
    /// the key's timeline is printed).
    ///
    /// # Errors
    ///
    /// Too few operations, or a key without a linearization.
    pub fn verify(&self, min_reads: usize, min_writes: usize) -> anyhow::Result<()> {
        let history = std::mem::take(&mut *self.history.lock().expect("history lock"));
        let reads_of_values = history.iter().filter(|op| matches!(op.action, Action::Read(Some(_)))).count();
        let acknowledged_writes =
            history.iter().filter(|op| matches!(op.action, Action::Write(_)) && op.returned.is_some()).count();
        anyhow::ensure!(reads_of_values >= min_reads, "too few reads saw a value ({reads_of_values}) to test anything");
        anyhow::ensure!(acknowledged_writes >= min_writes, "too few writes were acknowledged ({acknowledged_writes})");
        if let Err(violation) = check(&history) {
            eprintln!("{}", timeline(&history, violation.key(), self.started));
            anyhow::bail!(
                "the history of key {:?} did not pass: {violation:?}",
                String::from_utf8_lossy(violation.key())
            );
        }
        Ok(())
    }
}
