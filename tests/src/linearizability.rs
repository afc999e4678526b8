//! A linearizability checker for registers (one per key), after Wing & Gong with the memoization
//! of Lowe's "Testing for linearizability": search for an order of the operations that respects
//! real time (an operation that returned before another was invoked comes first) and the register's
//! semantics (a read returns the latest write). Keys are independent, so each is checked alone.
//!
//! A write whose outcome is unknown (the client gave up) may take effect at any point after its
//! invocation, or never. Reads that failed are left out: they returned nothing.
//!
//! [`Recorder`] runs concurrent workers of random writes and reads against a [`Register`] (the
//! replicated key-value register, or the cache) and records the history to check.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// What a client did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Wrote a value.
    Write(Vec<u8>),
    /// Read a value (`None`: absent).
    Read(Option<Vec<u8>>),
}

/// One operation with its real-time interval.
#[derive(Debug, Clone)]
pub struct Operation {
    /// The key.
    pub key: Vec<u8>,
    /// What happened.
    pub action: Action,
    /// When the client invoked it.
    pub invoked: Instant,
    /// When the client learned the result; `None` for a write whose outcome is unknown.
    pub returned: Option<Instant>,
}

/// Why a history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The key whose history has no valid order.
    pub key: Vec<u8>,
    /// Operations on that key.
    pub operations: usize,
}

/// Checks every key's history; the register starts absent.
///
/// # Errors
///
/// The first key with no linearization.
pub fn check(history: &[Operation]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for operation in history {
        by_key.entry(&operation.key).or_default().push(operation);
    }
    for (key, operations) in by_key {
        if !linearizable(&operations) {
            return Err(Violation { key: key.to_vec(), operations: operations.len() });
        }
    }
    Ok(())
}

/// The operations on `key` in invocation order, one line each: invoked and returned times in ms
/// since `started` (`?` for an unknown outcome) and what happened. For a failed check's report.
pub fn timeline(history: &[Operation], key: &[u8], started: Instant) -> String {
    let mut on_key: Vec<&Operation> = history.iter().filter(|op| op.key == key).collect();
    on_key.sort_by_key(|op| op.invoked);
    let since = |at: Instant| format!("{:.3}", (at - started).as_secs_f64() * 1000.0);
    on_key
        .iter()
        .map(|op| {
            format!("{:>8} .. {:>8} {:?}", since(op.invoked), op.returned.map(since).unwrap_or("?".into()), op.action)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether one register's operations can be linearized.
fn linearizable(operations: &[&Operation]) -> bool {
    let count = operations.len();
    // Memo of explored (done set, register value) states that led nowhere.
    let mut dead: HashSet<(Vec<u64>, Option<Vec<u8>>)> = HashSet::new();
    let mut done = vec![0u64; count.div_ceil(64)];
    search(operations, &mut done, None, 0, &mut dead)
}

fn is_done(done: &[u64], index: usize) -> bool {
    done[index / 64] & (1 << (index % 64)) != 0
}

fn flip(done: &mut [u64], index: usize) {
    done[index / 64] ^= 1 << (index % 64);
}

fn search(
    operations: &[&Operation],
    done: &mut Vec<u64>,
    value: Option<Vec<u8>>,
    finished: usize,
    dead: &mut HashSet<(Vec<u64>, Option<Vec<u8>>)>,
) -> bool {
    // Every operation that completed is placed: the rest are unknown writes, which may never
    // have happened.
    let pending_known = operations.iter().enumerate().any(|(i, op)| !is_done(done, i) && op.returned.is_some());
    if !pending_known {
        return true;
    }
    if finished == operations.len() || dead.contains(&(done.clone(), value.clone())) {
        return false;
    }
    // The earliest return among operations not yet placed: anything invoked after it cannot go
    // before it.
    let horizon = operations
        .iter()
        .enumerate()
        .filter(|(i, _)| !is_done(done, *i))
        .filter_map(|(_, op)| op.returned)
        .min()
        .expect("a known operation is pending");
    for index in 0..operations.len() {
        if is_done(done, index) {
            continue;
        }
        let operation = operations[index];
        if operation.invoked > horizon {
            continue;
        }
        let next_value = match &operation.action {
            Action::Write(written) => Some(written.clone()),
            Action::Read(read) => {
                if *read != value {
                    continue;
                }
                value.clone()
            }
        };
        flip(done, index);
        if search(operations, done, next_value, finished + 1, dead) {
            return true;
        }
        flip(done, index);
    }
    dead.insert((done.clone(), value));
    false
}

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
            eprintln!("{}", timeline(&history, &violation.key, self.started));
            anyhow::bail!("the history of key {:?} is not linearizable", String::from_utf8_lossy(&violation.key));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Builds operations on one key from (action, start ms, end ms or None).
    fn history(steps: &[(Action, u64, Option<u64>)]) -> Vec<Operation> {
        let origin = Instant::now();
        steps
            .iter()
            .map(|(action, start, end)| Operation {
                key: b"k".to_vec(),
                action: action.clone(),
                invoked: origin + Duration::from_millis(*start),
                returned: end.map(|end| origin + Duration::from_millis(end)),
            })
            .collect()
    }

    fn write(value: &str) -> Action {
        Action::Write(value.as_bytes().to_vec())
    }

    fn read(value: Option<&str>) -> Action {
        Action::Read(value.map(|v| v.as_bytes().to_vec()))
    }

    #[test]
    fn sequential_and_overlapping_histories_pass() {
        let sequential = history(&[(write("a"), 0, Some(1)), (read(Some("a")), 2, Some(3)), (write("b"), 4, Some(5))]);
        assert!(check(&sequential).is_ok());
        // A read overlapping a write may see either value.
        let overlapping = history(&[(write("a"), 0, Some(1)), (write("b"), 2, Some(6)), (read(Some("a")), 3, Some(4))]);
        assert!(check(&overlapping).is_ok());
        let overlapping = history(&[(write("a"), 0, Some(1)), (write("b"), 2, Some(6)), (read(Some("b")), 3, Some(4))]);
        assert!(check(&overlapping).is_ok());
    }

    #[test]
    fn a_stale_read_is_caught() {
        // "b" was acknowledged before the read began, yet the read saw "a".
        let stale = history(&[(write("a"), 0, Some(1)), (write("b"), 2, Some(3)), (read(Some("a")), 4, Some(5))]);
        assert_eq!(check(&stale), Err(Violation { key: b"k".to_vec(), operations: 3 }));
        // A read of a value never written.
        let invented = history(&[(write("a"), 0, Some(1)), (read(Some("z")), 2, Some(3))]);
        assert!(check(&invented).is_err());
        // Two reads that disagree on the order of two writes.
        let flip_flop = history(&[
            (write("a"), 0, Some(10)),
            (write("b"), 0, Some(10)),
            (read(Some("a")), 11, Some(12)),
            (read(Some("b")), 13, Some(14)),
            (read(Some("a")), 15, Some(16)),
        ]);
        assert!(check(&flip_flop).is_err());
    }

    #[test]
    fn unknown_writes_may_or_may_not_take_effect() {
        let took_effect = history(&[(write("a"), 0, Some(1)), (write("b"), 2, None), (read(Some("b")), 10, Some(11))]);
        assert!(check(&took_effect).is_ok());
        let never = history(&[(write("a"), 0, Some(1)), (write("b"), 2, None), (read(Some("a")), 10, Some(11))]);
        assert!(check(&never).is_ok());
        // But not before it was invoked.
        let too_early = history(&[(write("a"), 0, Some(1)), (read(Some("b")), 2, Some(3)), (write("b"), 4, None)]);
        assert!(check(&too_early).is_err());
    }
}
