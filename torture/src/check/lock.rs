//! Locks: what the holders saw, checked against what a lock promises.
//!
//! - **Tokens are unique**: every grant takes a fresh revision, so no two holds (of any mode,
//!   of any lock) share a token.
//! - **Tokens follow real time**: a hold granted (its acquire returned) before another's acquire
//!   was invoked has the smaller token. This is what makes fencing work: a resource that
//!   refuses tokens lower than the highest it saw refuses every holder that lost its lease to a
//!   newer one, however long it was paused.
//! - **Mutual exclusion**: two holds whose release was acknowledged (so the lock was still
//!   theirs when they let go) never overlap in real time when either is exclusive. A hold whose
//!   release failed may have been lost to its lease while its holder was paused: fencing, not
//!   exclusion, protects the resource then.

use std::time::Instant;

/// Exclusive or shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One holder.
    Exclusive,
    /// Many shared holders, no exclusive one.
    Shared,
}

/// One granted hold, as its client saw it.
#[derive(Debug, Clone)]
pub struct Hold {
    /// The lock's name.
    pub lock: String,
    /// The client that held it.
    pub client: usize,
    /// The mode of the grant.
    pub mode: Mode,
    /// The fencing token of the grant.
    pub token: u64,
    /// When the acquire was invoked.
    pub requested: Instant,
    /// When the acquire returned the grant.
    pub granted: Instant,
    /// When the release was invoked; `None`: never released by the client (it crashed, or the
    /// run ended).
    pub released: Option<Instant>,
    /// Whether the release was acknowledged: the lock was still held at the release.
    pub release_acknowledged: bool,
}

/// A broken promise, naming the holds that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockViolation {
    /// Two grants with one token.
    DuplicateToken {
        /// The token.
        token: u64,
        /// Indexes of the two holds.
        holds: (usize, usize),
    },
    /// A grant that came later in real time has a token no higher.
    TokenOrder {
        /// The hold granted first.
        earlier: usize,
        /// The hold requested after it was granted, with a token no higher.
        later: usize,
    },
    /// Two acknowledged holds of one lock overlapped in real time, at least one exclusive.
    Overlap {
        /// Indexes of the two holds.
        holds: (usize, usize),
    },
}

impl LockViolation {
    /// The holds the violation is about.
    pub fn holds(&self) -> (usize, usize) {
        match *self {
            LockViolation::DuplicateToken { holds, .. } | LockViolation::Overlap { holds } => holds,
            LockViolation::TokenOrder { earlier, later } => (earlier, later),
        }
    }
}

/// Checks the holds (indexes in violations refer to `holds`).
///
/// ```
/// use distsync_torture::check::lock::{check, Hold, Mode};
/// use std::time::{Duration, Instant};
///
/// let t = Instant::now();
/// let ms = |n| t + Duration::from_millis(n);
/// let hold = |client, token, from, to| Hold {
///     lock: "l".into(), client, mode: Mode::Exclusive, token,
///     requested: ms(from), granted: ms(from + 1), released: Some(ms(to)), release_acknowledged: true,
/// };
/// assert!(check(&[hold(1, 10, 0, 5), hold(2, 20, 6, 9)]).is_empty());
/// assert!(!check(&[hold(1, 10, 0, 5), hold(2, 20, 3, 9)]).is_empty(), "overlap");
/// ```
pub fn check(holds: &[Hold]) -> Vec<LockViolation> {
    let mut violations = Vec::new();
    let mut by_token: Vec<usize> = (0..holds.len()).collect();
    by_token.sort_by_key(|&i| holds[i].token);
    for pair in by_token.windows(2) {
        if holds[pair[0]].token == holds[pair[1]].token {
            violations.push(LockViolation::DuplicateToken { token: holds[pair[0]].token, holds: (pair[0], pair[1]) });
        }
    }
    for (a, first) in holds.iter().enumerate() {
        for (b, second) in holds.iter().enumerate() {
            if a == b || first.lock != second.lock {
                continue;
            }
            if first.granted < second.requested && first.token >= second.token {
                violations.push(LockViolation::TokenOrder { earlier: a, later: b });
            }
            if a < b && overlap(first, second) {
                violations.push(LockViolation::Overlap { holds: (a, b) });
            }
        }
    }
    violations
}

/// Whether two acknowledged holds, one of them exclusive, overlapped in real time.
fn overlap(first: &Hold, second: &Hold) -> bool {
    if first.mode == Mode::Shared && second.mode == Mode::Shared {
        return false;
    }
    if !(first.release_acknowledged && second.release_acknowledged) {
        return false;
    }
    let (Some(first_end), Some(second_end)) = (first.released, second.released) else { return false };
    first.granted < second_end && second.granted < first_end
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn holds(specs: &[(Mode, u64, u64, u64, u64, bool)]) -> Vec<Hold> {
        let origin = Instant::now();
        let ms = |n: u64| origin + Duration::from_millis(n);
        specs
            .iter()
            .enumerate()
            .map(|(client, &(mode, token, requested, granted, released, acknowledged))| Hold {
                lock: "l".into(),
                client,
                mode,
                token,
                requested: ms(requested),
                granted: ms(granted),
                released: Some(ms(released)),
                release_acknowledged: acknowledged,
            })
            .collect()
    }

    use Mode::{Exclusive, Shared};

    #[test]
    fn holds_in_turn_pass() {
        // Exclusive, then two shared together, then exclusive again; a waiter requested while
        // another held.
        let turns = holds(&[
            (Exclusive, 10, 0, 1, 5, true),
            (Shared, 20, 2, 6, 9, true),
            (Shared, 21, 3, 7, 10, true),
            (Exclusive, 30, 4, 11, 12, true),
        ]);
        assert_eq!(check(&turns), vec![]);
    }

    #[test]
    fn overlapping_exclusive_holds_are_caught() {
        let both = holds(&[(Exclusive, 10, 0, 1, 5, true), (Exclusive, 20, 2, 3, 8, true)]);
        assert_eq!(check(&both), vec![LockViolation::Overlap { holds: (0, 1) }]);
        let shared_in_exclusive = holds(&[(Exclusive, 10, 0, 1, 5, true), (Shared, 20, 2, 3, 4, true)]);
        assert_eq!(check(&shared_in_exclusive), vec![LockViolation::Overlap { holds: (0, 1) }]);
    }

    #[test]
    fn a_hold_lost_to_its_lease_may_overlap_but_not_reuse_or_reorder_tokens() {
        // Client 0 was paused past its lease; its release failed. Client 1 got the lock with a
        // higher token meanwhile: fine.
        let lost = holds(&[(Exclusive, 10, 0, 1, 50, false), (Exclusive, 20, 10, 20, 30, true)]);
        assert_eq!(check(&lost), vec![]);
        // The same with a lower token: a fenced resource would have let the paused holder
        // overwrite the newer one's work.
        let reordered = holds(&[(Exclusive, 30, 0, 1, 50, false), (Exclusive, 20, 10, 20, 30, true)]);
        assert_eq!(check(&reordered), vec![LockViolation::TokenOrder { earlier: 0, later: 1 }]);
        let reused = holds(&[(Exclusive, 10, 0, 1, 50, false), (Exclusive, 10, 10, 20, 30, true)]);
        assert_eq!(
            check(&reused),
            vec![
                LockViolation::DuplicateToken { token: 10, holds: (0, 1) },
                LockViolation::TokenOrder { earlier: 0, later: 1 }
            ]
        );
    }

    #[test]
    fn different_locks_are_independent_but_share_the_token_space() {
        let mut two = holds(&[(Exclusive, 10, 0, 1, 5, true), (Exclusive, 20, 2, 3, 8, true)]);
        two[1].lock = "other".into();
        assert_eq!(check(&two), vec![]);
        two[1].token = 10;
        assert_eq!(check(&two), vec![LockViolation::DuplicateToken { token: 10, holds: (0, 1) }]);
    }
}
