//! A linearizability checker for registers (one per key), after Wing & Gong with the memoization
//! of Lowe's "Testing for linearizability": search for an order of the operations that respects
//! real time (an operation that returned before another was invoked comes first) and the register's
//! semantics (a read returns the latest write). Keys are independent, so each is checked alone.
//!
//! A write whose outcome is unknown (the client gave up) may take effect at any point after its
//! invocation, or never. Reads that failed are left out: they returned nothing.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

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
