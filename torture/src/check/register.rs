//! Registers (the replicated kv, the cache): linearizable per key, after Wing & Gong with the
//! memoization of Lowe's "Testing for linearizability". The search looks for an order of the
//! operations that respects real time (an operation that returned before another was invoked
//! comes first) and the register's semantics (a read returns the latest write). Keys are
//! independent, so each is checked alone.
//!
//! A write whose outcome is unknown (the client gave up) may take effect at any point after its
//! invocation, or never. Reads that failed are left out: they returned nothing. The search is
//! exponential in the worst case (many concurrent unknown writes), so it runs under a time limit
//! and says so when it could not decide, instead of hanging.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

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

/// Why a history did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterError {
    /// The key's history has no valid order: a read saw what no order of the writes explains.
    NotLinearizable {
        /// The key.
        key: Vec<u8>,
        /// Operations on that key.
        operations: usize,
    },
    /// The search did not finish within the time limit: shorten the run, use more keys, or
    /// raise the limit.
    Undecided {
        /// The key.
        key: Vec<u8>,
        /// Operations on that key.
        operations: usize,
    },
}

impl RegisterError {
    /// The key the error is about.
    pub fn key(&self) -> &[u8] {
        match self {
            RegisterError::NotLinearizable { key, .. } | RegisterError::Undecided { key, .. } => key,
        }
    }
}

/// How long [`check`] searches in all before it gives up.
pub const CHECK_TIME_LIMIT: Duration = Duration::from_secs(60);

/// Checks every key's history within [`CHECK_TIME_LIMIT`]; the register starts absent.
///
/// ```
/// use distsync_torture::check::register::{check, Action, Operation};
/// use std::time::{Duration, Instant};
///
/// let t = Instant::now();
/// let ms = |n| t + Duration::from_millis(n);
/// let op = |action, from, to| Operation { key: b"k".to_vec(), action, invoked: ms(from), returned: Some(ms(to)) };
/// // "b" was acknowledged before the read began, yet the read saw "a".
/// let stale = [op(Action::Write(b"a".to_vec()), 0, 1), op(Action::Write(b"b".to_vec()), 2, 3), op(Action::Read(Some(b"a".to_vec())), 4, 5)];
/// assert!(check(&stale).is_err());
/// ```
///
/// # Errors
///
/// The first key with no linearization, or one the search could not decide in time.
pub fn check(history: &[Operation]) -> Result<(), RegisterError> {
    check_within(history, CHECK_TIME_LIMIT)
}

/// [`check`] with a time limit of its own.
///
/// # Errors
///
/// As [`check`].
pub fn check_within(history: &[Operation], limit: Duration) -> Result<(), RegisterError> {
    let deadline = Instant::now() + limit;
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for operation in history {
        by_key.entry(&operation.key).or_default().push(operation);
    }
    for (key, mut operations) in by_key {
        operations.sort_by_key(|op| op.invoked);
        let verdict = run_with_deep_stack(|| Search::new(&operations, deadline).linearizable());
        let operations = operations.len();
        match verdict {
            Some(true) => {}
            Some(false) => return Err(RegisterError::NotLinearizable { key: key.to_vec(), operations }),
            None => return Err(RegisterError::Undecided { key: key.to_vec(), operations }),
        }
    }
    Ok(())
}

/// The search recurses once per placed operation: thousands deep for a long run. It runs on a
/// thread whose stack is reserved (not committed) large enough for that.
fn run_with_deep_stack<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    const STACK_BYTES: usize = 1 << 30;
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("linearizability".into())
            .stack_size(STACK_BYTES)
            .spawn_scoped(scope, work)
            .expect("cannot start the checker's thread")
            .join()
            .expect("the checker's thread panicked")
    })
}

/// The operations on `key` in invocation order, one line each: invoked and returned times in ms
/// since `started` (`?` for an unknown outcome) and what happened. For a failed check's report.
pub fn timeline(history: &[Operation], key: &[u8], started: Instant) -> String {
    let mut on_key: Vec<&Operation> = history.iter().filter(|op| op.key == key).collect();
    on_key.sort_by_key(|op| op.invoked);
    let since = |at: Instant| format!("{:.3}", (at.saturating_duration_since(started)).as_secs_f64() * 1000.0);
    on_key
        .iter()
        .map(|op| {
            let action = match &op.action {
                Action::Write(value) => format!("write {}", String::from_utf8_lossy(value)),
                Action::Read(Some(value)) => format!("read {}", String::from_utf8_lossy(value)),
                Action::Read(None) => "read (absent)".to_string(),
            };
            format!("{:>10} .. {:>10} {action}", since(op.invoked), op.returned.map(since).unwrap_or("?".into()))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One key's search: which operations are placed (a bit set), and the memo of explored
/// (placed set, register value) states that led nowhere.
struct Search<'a> {
    operations: &'a [&'a Operation],
    done: Vec<u64>,
    dead: HashSet<(Vec<u64>, Option<Vec<u8>>)>,
    deadline: Instant,
    steps: u64,
    timed_out: bool,
}

impl<'a> Search<'a> {
    fn new(operations: &'a [&'a Operation], deadline: Instant) -> Self {
        let done = vec![0u64; operations.len().div_ceil(64)];
        Search { operations, done, dead: HashSet::new(), deadline, steps: 0, timed_out: false }
    }

    /// `Some(verdict)`, or `None` when the deadline passed first.
    fn linearizable(mut self) -> Option<bool> {
        let verdict = self.search(None);
        (!self.timed_out).then_some(verdict)
    }

    fn is_done(&self, index: usize) -> bool {
        self.done[index / 64] & (1 << (index % 64)) != 0
    }

    fn flip(&mut self, index: usize) {
        self.done[index / 64] ^= 1 << (index % 64);
    }

    fn search(&mut self, value: Option<Vec<u8>>) -> bool {
        self.steps += 1;
        if self.steps % 4096 == 0 && Instant::now() >= self.deadline {
            self.timed_out = true;
        }
        if self.timed_out {
            return false;
        }
        // The earliest return among operations not yet placed: anything invoked after it cannot
        // go before it. None left: the rest are unknown writes, which may never have happened.
        let Some(horizon) =
            (0..self.operations.len()).filter(|&i| !self.is_done(i)).filter_map(|i| self.operations[i].returned).min()
        else {
            return true;
        };
        if self.dead.contains(&(self.done.clone(), value.clone())) {
            return false;
        }
        for index in 0..self.operations.len() {
            let operation = self.operations[index];
            if operation.invoked > horizon {
                // Sorted by invocation: every later one is past the horizon too.
                break;
            }
            if self.is_done(index) {
                continue;
            }
            let next_value = match &operation.action {
                Action::Write(written) => Some(written.clone()),
                Action::Read(read) if *read == value => value.clone(),
                Action::Read(_) => continue,
            };
            self.flip(index);
            if self.search(next_value) {
                return true;
            }
            self.flip(index);
            if self.timed_out {
                return false;
            }
        }
        self.dead.insert((self.done.clone(), value));
        false
    }
}

#[cfg(test)]
mod tests {
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

    fn not_linearizable(operations: usize) -> Result<(), RegisterError> {
        Err(RegisterError::NotLinearizable { key: b"k".to_vec(), operations })
    }

    #[test]
    fn sequential_and_overlapping_histories_pass() {
        let sequential = history(&[(write("a"), 0, Some(1)), (read(Some("a")), 2, Some(3)), (write("b"), 4, Some(5))]);
        assert_eq!(check(&sequential), Ok(()));
        // A read overlapping a write may see either value.
        let overlapping = history(&[(write("a"), 0, Some(1)), (write("b"), 2, Some(6)), (read(Some("a")), 3, Some(4))]);
        assert_eq!(check(&overlapping), Ok(()));
        let overlapping = history(&[(write("a"), 0, Some(1)), (write("b"), 2, Some(6)), (read(Some("b")), 3, Some(4))]);
        assert_eq!(check(&overlapping), Ok(()));
        // Nothing written yet: absent.
        assert_eq!(check(&history(&[(read(None), 0, Some(1)), (write("a"), 2, Some(3))])), Ok(()));
    }

    #[test]
    fn a_stale_read_is_caught() {
        // "b" was acknowledged before the read began, yet the read saw "a".
        let stale = history(&[(write("a"), 0, Some(1)), (write("b"), 2, Some(3)), (read(Some("a")), 4, Some(5))]);
        assert_eq!(check(&stale), not_linearizable(3));
        // A read of a value never written.
        let invented = history(&[(write("a"), 0, Some(1)), (read(Some("z")), 2, Some(3))]);
        assert_eq!(check(&invented), not_linearizable(2));
        // Absent after a write was acknowledged.
        let lost = history(&[(write("a"), 0, Some(1)), (read(None), 2, Some(3))]);
        assert_eq!(check(&lost), not_linearizable(2));
        // Two reads that disagree on the order of two writes.
        let flip_flop = history(&[
            (write("a"), 0, Some(10)),
            (write("b"), 0, Some(10)),
            (read(Some("a")), 11, Some(12)),
            (read(Some("b")), 13, Some(14)),
            (read(Some("a")), 15, Some(16)),
        ]);
        assert_eq!(check(&flip_flop), not_linearizable(5));
    }

    #[test]
    fn unknown_writes_may_or_may_not_take_effect() {
        let took_effect = history(&[(write("a"), 0, Some(1)), (write("b"), 2, None), (read(Some("b")), 10, Some(11))]);
        assert_eq!(check(&took_effect), Ok(()));
        let never = history(&[(write("a"), 0, Some(1)), (write("b"), 2, None), (read(Some("a")), 10, Some(11))]);
        assert_eq!(check(&never), Ok(()));
        // But not before it was invoked.
        let too_early = history(&[(write("a"), 0, Some(1)), (read(Some("b")), 2, Some(3)), (write("b"), 4, None)]);
        assert_eq!(check(&too_early), not_linearizable(3));
    }

    #[test]
    fn an_unknown_write_seen_once_cannot_be_unseen() {
        // Once a read saw "b", the unknown write took effect: a later read of "a" is stale.
        let unseen = history(&[
            (write("a"), 0, Some(1)),
            (write("b"), 2, None),
            (read(Some("b")), 3, Some(4)),
            (read(Some("a")), 5, Some(6)),
        ]);
        assert_eq!(check(&unseen), not_linearizable(4));
    }

    /// Many concurrent unknown writes and a read no order explains: without the memo of dead
    /// ends the search tries every order of the writes (12!, about 479 million) and runs into the limit;
    /// with it, it visits each (set of writes, value) once and rejects the history.
    #[test]
    fn the_memo_of_dead_ends_keeps_a_hopeless_search_short() {
        let mut steps: Vec<(Action, u64, Option<u64>)> =
            (0..12).map(|n| (write(&format!("w{n}")), 0, None)).collect::<Vec<_>>();
        steps.push((write("a"), 0, Some(1)));
        steps.push((read(Some("never written")), 2, Some(3)));
        let hopeless = history(&steps);
        assert_eq!(check_within(&hopeless, Duration::from_secs(20)), not_linearizable(14));
    }

    #[test]
    fn a_search_past_its_time_limit_is_undecided_not_passed() {
        let mut steps: Vec<(Action, u64, Option<u64>)> =
            (0..40).map(|n| (write(&format!("w{n}")), 0, None)).collect::<Vec<_>>();
        steps.push((read(Some("never written")), 2, Some(3)));
        let hopeless = history(&steps);
        assert_eq!(
            check_within(&hopeless, Duration::from_millis(200)),
            Err(RegisterError::Undecided { key: b"k".to_vec(), operations: 41 })
        );
    }

    #[test]
    fn keys_are_checked_apart() {
        let mut both = history(&[(write("a"), 0, Some(1)), (read(Some("a")), 2, Some(3))]);
        let mut other = history(&[(write("x"), 0, Some(1)), (read(None), 2, Some(3))]);
        for op in &mut other {
            op.key = b"other".to_vec();
        }
        both.extend(other);
        assert_eq!(check(&both), Err(RegisterError::NotLinearizable { key: b"other".to_vec(), operations: 2 }));
    }
}
