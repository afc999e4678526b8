//! Deadlock detection: the wait-for graph between owners, searched for a cycle before a request
//! is queued, so that the request that would close one fails at once with the cycle.

use std::collections::BTreeMap;

use super::{Lock, Locks, Mode, Owner};

impl Locks {
    /// Searches the wait-for graph for a path from `blockers` back to `owner`. Returns the cycle
    /// as (owner, lock it waits on) pairs, starting with `owner` waiting on `name`.
    pub(super) fn find_cycle(&self, owner: Owner, name: &str, blockers: &[Owner]) -> Option<Vec<(Owner, String)>> {
        // Depth-first search; `via` remembers how each owner was reached.
        let mut via: BTreeMap<Owner, (Owner, String)> = BTreeMap::new();
        let mut stack: Vec<Owner> = Vec::new();
        for blocker in blockers {
            if let std::collections::btree_map::Entry::Vacant(entry) = via.entry(*blocker) {
                entry.insert((owner, name.to_string()));
                stack.push(*blocker);
            }
        }
        while let Some(current) = stack.pop() {
            if current == owner {
                // Walk back from `owner` to rebuild the cycle.
                let mut cycle = Vec::new();
                let mut at = owner;
                loop {
                    let (previous, lock) = via.get(&at).expect("reached owners have a predecessor").clone();
                    cycle.push((previous, lock));
                    if previous == owner {
                        break;
                    }
                    at = previous;
                }
                cycle.reverse();
                return Some(cycle);
            }
            for (lock_name, next) in self.waits_of(current) {
                if let std::collections::btree_map::Entry::Vacant(entry) = via.entry(next) {
                    entry.insert((current, lock_name));
                    stack.push(next);
                }
            }
        }
        None
    }

    /// Edges out of `owner` in the wait-for graph: for every lock it waits on, the owners it
    /// waits behind.
    fn waits_of(&self, owner: Owner) -> Vec<(String, Owner)> {
        let Some(names) = self.by_session.get(&owner.session) else { return Vec::new() };
        let mut edges = Vec::new();
        for name in names {
            let Some(lock) = self.locks.get(name) else { continue };
            if let Some(position) = lock.waiters.iter().position(|w| w.owner == owner) {
                let waiter = &lock.waiters[position];
                for blocker in blockers_at(lock, owner, waiter.mode, waiter.upgrade, position) {
                    edges.push((name.clone(), blocker));
                }
            }
        }
        edges
    }
}

/// The owners a request at `position` in `lock`'s queue waits behind: conflicting holders, and
/// conflicting waiters ahead of it (fairness makes it wait for them too).
pub(super) fn blockers_at(lock: &Lock, owner: Owner, mode: Mode, upgrade: bool, position: usize) -> Vec<Owner> {
    let conflicts = |other: Mode| mode == Mode::Exclusive || other == Mode::Exclusive;
    let mut blockers: Vec<Owner> =
        lock.holders.iter().filter(|h| h.owner != owner && conflicts(h.mode)).map(|h| h.owner).collect();
    if !upgrade {
        blockers.extend(
            lock.waiters.iter().take(position).filter(|w| w.owner != owner && conflicts(w.mode)).map(|w| w.owner),
        );
    }
    blockers.sort();
    blockers.dedup();
    blockers
}
