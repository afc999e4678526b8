//! The run's history: every operation of every client, with invocation and completion times and
//! outcomes, in the shapes the checkers take, and counts per primitive by outcome for the report.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::check::lock::Hold;
use crate::check::queue::{Acked, Delivered, Put, QueueHistory};
use crate::check::register::Operation;
use crate::check::Outcome;

/// What became of lock holders whose whole client stalled past its session lease.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stalls {
    /// Holds stalled.
    pub holds: u64,
    /// Their writes after the stall that the fenced resource refused (a newer holder wrote).
    pub writes_refused: u64,
    /// Their releases after the stall that the cluster refused (the lease had lapsed).
    pub releases_refused: u64,
}

/// Everything recorded, behind one lock (operations take milliseconds; the lock nanoseconds).
#[derive(Default)]
pub struct History {
    recorded: Mutex<Recorded>,
}

/// The recorded operations.
#[derive(Debug, Default, Clone)]
pub struct Recorded {
    /// Operations on the replicated kv register.
    pub kv: Vec<Operation>,
    /// Operations on the cache.
    pub cache: Vec<Operation>,
    /// Granted lock holds.
    pub holds: Vec<Hold>,
    /// Queue puts, deliveries, acks.
    pub queue: QueueHistory,
    /// Writes the fenced resource accepted, and stale ones it refused.
    pub fenced_accepted: u64,
    /// Writes the fenced resource refused (a token lower than one it had seen).
    pub fenced_refused: u64,
    /// Lock holds whose whole client stalled past its session lease.
    pub stalls: Stalls,
    /// Operations per (primitive, operation) by outcome.
    pub counts: BTreeMap<(&'static str, &'static str), BTreeMap<Outcome, u64>>,
}

impl History {
    /// The recorded operations, to add to or read.
    pub fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a kv or cache operation (see [`Operation`]).
    pub fn register(&self, cache: bool, operation: Operation, outcome: Outcome) {
        let mut recorded = self.lock();
        let name = match operation.action {
            crate::check::register::Action::Write(_) => "write",
            crate::check::register::Action::Read(_) => "read",
        };
        recorded.count(if cache { "cache" } else { "kv" }, name, outcome);
        if cache {
            recorded.cache.push(operation);
        } else {
            recorded.kv.push(operation);
        }
    }

    /// Records a hold whose client stalled past its lease: whether its write and its release
    /// afterwards were refused.
    pub fn stalled(&self, write_refused: bool, release_refused: bool) {
        let stalls = &mut self.lock().stalls;
        stalls.holds += 1;
        stalls.writes_refused += u64::from(write_refused);
        stalls.releases_refused += u64::from(release_refused);
    }

    /// Records a put.
    pub fn put(&self, put: Put) {
        let mut recorded = self.lock();
        recorded.count("queue", "put", put.outcome);
        recorded.queue.puts.push(put);
    }

    /// Records a delivery.
    pub fn delivered(&self, delivered: Delivered) {
        let mut recorded = self.lock();
        recorded.count("queue", "get", Outcome::Ok);
        recorded.queue.deliveries.push(delivered);
    }

    /// Records a get that failed (what it may have been handed is withdrawn, and says so).
    pub fn failed_get(&self) {
        self.lock().count("queue", "get", Outcome::Failed);
    }

    /// Records an ack.
    pub fn acked(&self, acked: Acked) {
        let mut recorded = self.lock();
        recorded.count("queue", "ack", acked.outcome);
        recorded.queue.acks.push(acked);
    }

    /// Records a granted hold.
    pub fn hold(&self, hold: Hold) {
        self.lock().holds.push(hold);
    }

    /// Counts an operation that leaves nothing else to check (a failed get, an acquire that
    /// timed out, a nack).
    pub fn count(&self, primitive: &'static str, operation: &'static str, outcome: Outcome) {
        self.lock().count(primitive, operation, outcome);
    }
}

impl Recorded {
    fn count(&mut self, primitive: &'static str, operation: &'static str, outcome: Outcome) {
        *self.counts.entry((primitive, operation)).or_default().entry(outcome).or_default() += 1;
    }
}

/// A resource guarded by a lock, owned by the harness, as a storage service with fencing would
/// be: it refuses a write whose token is lower than the highest it has seen for that lock, so a
/// holder that lost its lease (paused, partitioned) cannot overwrite its successor's work.
#[derive(Default)]
pub struct FencedResource {
    highest: Mutex<BTreeMap<String, u64>>,
}

impl FencedResource {
    /// Writes under `token` for `lock`; whether the write was accepted.
    pub fn write(&self, lock: &str, token: u64, history: &History) -> bool {
        let accepted = {
            let mut highest = self.highest.lock().unwrap_or_else(PoisonError::into_inner);
            let seen = highest.entry(lock.to_string()).or_insert(0);
            let accepted = token >= *seen;
            *seen = (*seen).max(token);
            accepted
        };
        let mut recorded = history.lock();
        if accepted {
            recorded.fenced_accepted += 1;
        } else {
            recorded.fenced_refused += 1;
        }
        accepted
    }
}
