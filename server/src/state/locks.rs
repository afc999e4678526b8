//! Distributed locks: exclusive and shared, fair, leased to sessions, fenced, with deadlock
//! detection. Pure: every decision is made while applying a log entry, with the entry's
//! leader-stamped time, so every replica grants the same owner the same token at the same point.
//!
//! - **Owners.** A lock is held by an [`Owner`]: an actor (thread, task, handle) inside a session.
//!   Two actors of one session exclude each other exactly as two sessions do.
//! - **Fairness.** Waiters are served in arrival order. A shared request behind a waiting
//!   exclusive request waits too, so writers do not starve. An upgrade (shared → exclusive) goes
//!   ahead of the queue and is granted when its owner is the only holder.
//! - **Fencing tokens.** Every grant takes a fresh revision from the state machine; per lock the
//!   tokens of successive grants strictly increase, across leader changes.
//! - **Release** is conditional on the token, so a stale, retried release can never free a newer
//!   hold (etcd-io/etcd#22082). Session expiry releases every hold and cancels every wait of the
//!   session's owners, in the same entry that notices the expiry.
//! - **Deadlocks.** A wait-for graph links a waiter to the owners it waits behind: the holders it
//!   conflicts with and the conflicting waiters ahead of it. A request whose wait would close a
//!   cycle fails at once with the cycle; nothing changes.
//!
//! Grants that happen later (on a release, an expiry, a timeout) are reported as
//! [`LockEvent`]s, which the node pushes to the waiting client.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use distsync::error::LockRefusal;
use distsync::wire::validate_lock_name;
pub use distsync::wire::{LockHolder as Holder, LockMode as Mode, LockWaiter as Waiter, Owner, LOCK_NAME_BYTES_MAX};
use distsync::{ServerError, SessionId};
use serde::{Deserialize, Serialize};

/// Waiters queued on one lock. Bounds memory and the cost of deadlock detection.
pub const WAITERS_PER_LOCK_MAX: usize = 10_000;

/// Locks held or waited for at once, across the cluster.
pub const LOCKS_MAX: usize = 1_000_000;

/// How long a request may wait.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Fail at once if the lock cannot be granted.
    No,
    /// Wait until this leader-stamped time, then fail.
    Until {
        /// Deadline, ms since the Unix epoch.
        deadline_ms: u64,
    },
    /// Wait until granted, cancelled, or the session ends.
    Forever,
}

/// A lock: its holders and its queue.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Lock {
    /// Current holders: one exclusive, or any number shared.
    pub holders: Vec<Holder>,
    /// Waiters in the order they are served.
    pub waiters: VecDeque<Waiter>,
}

/// The answer to an acquire or upgrade.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum AcquireOutcome {
    /// Granted now.
    Granted {
        /// The fencing token.
        token: u64,
    },
    /// Queued; a [`LockEvent`] reports the grant or the end of the wait.
    Queued {
        /// Waiters ahead of this one.
        ahead: usize,
    },
}

/// Something a waiting owner must learn: pushed by the node to the owner's connection.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum LockEvent {
    /// A queued request was granted.
    Granted {
        /// The lock.
        name: String,
        /// The owner.
        owner: Owner,
        /// The fencing token.
        token: u64,
        /// Whether this grant completes an upgrade.
        upgrade: bool,
    },
    /// A queued request reached its deadline and was removed.
    TimedOut {
        /// The lock.
        name: String,
        /// The owner.
        owner: Owner,
    },
    /// A queued upgrade ended because its owner released the shared hold it wanted to upgrade.
    Cancelled {
        /// The lock.
        name: String,
        /// The owner.
        owner: Owner,
    },
    /// A hold ended because its session expired.
    Lost {
        /// The lock.
        name: String,
        /// The owner.
        owner: Owner,
        /// The token of the lost hold.
        token: u64,
    },
}

/// All locks.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Locks {
    locks: BTreeMap<String, Lock>,
    /// Deadlines of timed waits: (deadline_ms, lock, owner).
    deadlines: BTreeSet<(u64, String, Owner)>,
    /// Locks each session holds or waits for, to release them on expiry.
    by_session: BTreeMap<SessionId, BTreeSet<String>>,
}

impl Locks {
    /// A lock's holders and waiters, if anyone holds or waits for it.
    pub fn get(&self, name: &str) -> Option<&Lock> {
        self.locks.get(name)
    }

    /// The earliest deadline of a timed wait.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.deadlines.first().map(|(deadline_ms, _, _)| *deadline_ms)
    }

    /// Sessions that hold or await some lock.
    pub fn sessions(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.by_session.keys().copied()
    }

    /// Number of locks held or waited for.
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    /// Whether no lock is held or waited for.
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    /// Acquires `name` for `owner`. `next_token` hands out fresh revisions for grants.
    ///
    /// # Errors
    ///
    /// [`LockRefusal::WouldBlock`] for a try that cannot be granted, [`LockRefusal::AlreadyHeld`],
    /// [`LockRefusal::Deadlock`] with the cycle, [`ServerError::InvalidArgument`] beyond limits.
    pub fn acquire(
        &mut self,
        owner: Owner,
        name: &str,
        mode: Mode,
        wait: Wait,
        now_ms: u64,
        next_token: &mut impl FnMut() -> u64,
    ) -> Result<AcquireOutcome, ServerError> {
        validate_lock_name(name)?;
        if let Some(lock) = self.locks.get(name) {
            if lock.holders.iter().any(|h| h.owner == owner) || lock.waiters.iter().any(|w| w.owner == owner) {
                return Err(ServerError::Lock(LockRefusal::AlreadyHeld { name: name.to_string() }));
            }
        } else if self.locks.len() >= LOCKS_MAX {
            return Err(ServerError::InvalidArgument { reason: format!("{LOCKS_MAX} locks are in use") });
        }
        let lock = self.locks.entry(name.to_string()).or_default();
        let grantable = lock.waiters.is_empty() && compatible(&lock.holders, mode);
        if grantable {
            let token = next_token();
            lock.holders.push(Holder { owner, mode, token, since_ms: now_ms });
            self.by_session.entry(owner.session).or_default().insert(name.to_string());
            return Ok(AcquireOutcome::Granted { token });
        }
        if wait == Wait::No {
            self.forget_if_unused(name);
            return Err(ServerError::Lock(LockRefusal::WouldBlock { name: name.to_string() }));
        }
        self.enqueue(owner, name, mode, false, wait, now_ms)
    }

    /// Upgrades `owner`'s shared hold on `name` to exclusive; granted at once when the owner is
    /// the only holder, otherwise queued ahead of all other waiters.
    ///
    /// # Errors
    ///
    /// [`LockRefusal::NotShared`] without a shared hold, [`LockRefusal::WouldBlock`] for a try,
    /// [`LockRefusal::Deadlock`] when two shared holders both upgrade, and so on.
    pub fn upgrade(
        &mut self,
        owner: Owner,
        name: &str,
        wait: Wait,
        now_ms: u64,
        next_token: &mut impl FnMut() -> u64,
    ) -> Result<AcquireOutcome, ServerError> {
        let lock = self
            .locks
            .get_mut(name)
            .ok_or_else(|| ServerError::Lock(LockRefusal::NotShared { name: name.to_string() }))?;
        let Some(position) = lock.holders.iter().position(|h| h.owner == owner && h.mode == Mode::Shared) else {
            return Err(ServerError::Lock(LockRefusal::NotShared { name: name.to_string() }));
        };
        if lock.waiters.iter().any(|w| w.owner == owner) {
            return Err(ServerError::Lock(LockRefusal::AlreadyHeld { name: name.to_string() }));
        }
        if lock.holders.len() == 1 {
            let token = next_token();
            let holder = &mut lock.holders[position];
            holder.mode = Mode::Exclusive;
            holder.token = token;
            holder.since_ms = now_ms;
            return Ok(AcquireOutcome::Granted { token });
        }
        if wait == Wait::No {
            return Err(ServerError::Lock(LockRefusal::WouldBlock { name: name.to_string() }));
        }
        self.enqueue(owner, name, Mode::Exclusive, true, wait, now_ms)
    }

    fn enqueue(
        &mut self,
        owner: Owner,
        name: &str,
        mode: Mode,
        upgrade: bool,
        wait: Wait,
        now_ms: u64,
    ) -> Result<AcquireOutcome, ServerError> {
        let lock = self.locks.get(name).expect("the caller created or found the lock");
        if lock.waiters.len() >= WAITERS_PER_LOCK_MAX {
            return Err(ServerError::InvalidArgument {
                reason: format!("{WAITERS_PER_LOCK_MAX} owners already wait for lock {name:?}"),
            });
        }
        let position = if upgrade { 0 } else { lock.waiters.len() };
        let blockers = blockers_at(lock, owner, mode, upgrade, position);
        if let Some(cycle) = self.find_cycle(owner, name, &blockers) {
            self.forget_if_unused(name);
            return Err(ServerError::Lock(LockRefusal::Deadlock { name: name.to_string(), cycle }));
        }
        let deadline_ms = match wait {
            Wait::Until { deadline_ms } => Some(deadline_ms),
            Wait::Forever | Wait::No => None,
        };
        let lock = self.locks.get_mut(name).expect("checked above");
        lock.waiters.insert(position, Waiter { owner, mode, upgrade, deadline_ms, since_ms: now_ms });
        if let Some(deadline_ms) = deadline_ms {
            self.deadlines.insert((deadline_ms, name.to_string(), owner));
        }
        self.by_session.entry(owner.session).or_default().insert(name.to_string());
        Ok(AcquireOutcome::Queued { ahead: position })
    }

    /// Searches the wait-for graph for a path from `blockers` back to `owner`. Returns the cycle
    /// as (owner, lock it waits on) pairs, starting with `owner` waiting on `name`.
    fn find_cycle(&self, owner: Owner, name: &str, blockers: &[Owner]) -> Option<Vec<(Owner, String)>> {
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

    /// Releases `owner`'s hold on `name` if `token` matches, then grants what can be granted.
    ///
    /// # Errors
    ///
    /// [`LockRefusal::NotHeld`] when the owner does not hold the lock with that token.
    pub fn release(
        &mut self,
        owner: Owner,
        name: &str,
        token: u64,
        now_ms: u64,
        next_token: &mut impl FnMut() -> u64,
        events: &mut Vec<LockEvent>,
    ) -> Result<(), ServerError> {
        let not_held = || ServerError::Lock(LockRefusal::NotHeld { name: name.to_string(), token });
        let lock = self.locks.get_mut(name).ok_or_else(not_held)?;
        let position = lock.holders.iter().position(|h| h.owner == owner && h.token == token).ok_or_else(not_held)?;
        lock.holders.remove(position);
        // An owner that releases while its own upgrade waits gives up the upgrade too.
        if let Some(waiting) = lock.waiters.iter().position(|w| w.owner == owner) {
            let waiter = lock.waiters.remove(waiting).expect("found above");
            if let Some(deadline_ms) = waiter.deadline_ms {
                self.deadlines.remove(&(deadline_ms, name.to_string(), owner));
            }
            events.push(LockEvent::Cancelled { name: name.to_string(), owner });
        }
        self.untrack(owner, name);
        self.grant_waiters(name, now_ms, next_token, events);
        Ok(())
    }

    /// Gives up `owner`'s request for `name` queued at `queued_revision`, whose caller stopped
    /// waiting: removes the wait, and releases a hold granted after `queued_revision` that the
    /// caller never learned of. For an abandoned upgrade (`upgrade`), the owner's hold is released
    /// whatever its token: the caller cannot know which token it has. Returns whether a hold was
    /// released.
    #[allow(clippy::too_many_arguments)]
    pub fn cancel(
        &mut self,
        owner: Owner,
        name: &str,
        queued_revision: u64,
        upgrade: bool,
        now_ms: u64,
        next_token: &mut impl FnMut() -> u64,
        events: &mut Vec<LockEvent>,
    ) -> bool {
        let Some(lock) = self.locks.get_mut(name) else { return false };
        if let Some(position) = lock.waiters.iter().position(|w| w.owner == owner) {
            let waiter = lock.waiters.remove(position).expect("found above");
            if let Some(deadline_ms) = waiter.deadline_ms {
                self.deadlines.remove(&(deadline_ms, name.to_string(), owner));
            }
        }
        let released =
            match lock.holders.iter().position(|h| h.owner == owner && (upgrade || h.token > queued_revision)) {
                Some(position) => {
                    let holder = lock.holders.remove(position);
                    events.push(LockEvent::Lost { name: name.to_string(), owner, token: holder.token });
                    true
                }
                None => false,
            };
        self.untrack(owner, name);
        self.grant_waiters(name, now_ms, next_token, events);
        released
    }

    /// Locks in name order after `after`, at most `limit`, and whether more follow.
    pub fn list(&self, after: Option<&str>, limit: usize) -> (Vec<(&str, &Lock)>, bool) {
        use std::ops::Bound;
        let start = match after {
            Some(name) => Bound::Excluded(name),
            None => Bound::Unbounded,
        };
        let mut page: Vec<(&str, &Lock)> = self
            .locks
            .range::<str, _>((start, Bound::Unbounded))
            .take(limit + 1)
            .map(|(name, lock)| (name.as_str(), lock))
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        (page, more)
    }

    /// Releases every hold and cancels every wait of `session`'s owners (the session expired or
    /// closed), then grants what can be granted.
    pub fn release_session(
        &mut self,
        session: SessionId,
        now_ms: u64,
        next_token: &mut impl FnMut() -> u64,
        events: &mut Vec<LockEvent>,
    ) {
        let Some(names) = self.by_session.remove(&session) else { return };
        for name in names {
            let Some(lock) = self.locks.get_mut(&name) else { continue };
            lock.holders.retain(|holder| {
                let lost = holder.owner.session == session;
                if lost {
                    events.push(LockEvent::Lost { name: name.clone(), owner: holder.owner, token: holder.token });
                }
                !lost
            });
            let deadlines = &mut self.deadlines;
            lock.waiters.retain(|waiter| {
                let cancelled = waiter.owner.session == session;
                if cancelled {
                    if let Some(deadline_ms) = waiter.deadline_ms {
                        deadlines.remove(&(deadline_ms, name.clone(), waiter.owner));
                    }
                }
                !cancelled
            });
            self.grant_waiters(&name, now_ms, next_token, events);
        }
    }

    /// Ends every wait whose deadline is before `now_ms`, then grants what can be granted.
    pub fn expire_waits(&mut self, now_ms: u64, next_token: &mut impl FnMut() -> u64, events: &mut Vec<LockEvent>) {
        while let Some((deadline_ms, _, _)) = self.deadlines.first() {
            if *deadline_ms >= now_ms {
                break;
            }
            let (_, name, owner) = self.deadlines.pop_first().expect("checked above");
            if let Some(lock) = self.locks.get_mut(&name) {
                lock.waiters.retain(|w| w.owner != owner);
            }
            self.untrack(owner, &name);
            events.push(LockEvent::TimedOut { name: name.clone(), owner });
            self.grant_waiters(&name, now_ms, next_token, events);
        }
    }

    /// Grants waiters from the head of `name`'s queue while they are compatible with the holders.
    fn grant_waiters(
        &mut self,
        name: &str,
        now_ms: u64,
        next_token: &mut impl FnMut() -> u64,
        events: &mut Vec<LockEvent>,
    ) {
        let Some(lock) = self.locks.get_mut(name) else { return };
        while let Some(head) = lock.waiters.front() {
            let grantable = if head.upgrade {
                lock.holders.len() == 1 && lock.holders[0].owner == head.owner
            } else {
                compatible(&lock.holders, head.mode)
            };
            if !grantable {
                break;
            }
            let waiter = lock.waiters.pop_front().expect("head exists");
            if let Some(deadline_ms) = waiter.deadline_ms {
                self.deadlines.remove(&(deadline_ms, name.to_string(), waiter.owner));
            }
            let token = next_token();
            if waiter.upgrade {
                let holder = &mut lock.holders[0];
                holder.mode = Mode::Exclusive;
                holder.token = token;
                holder.since_ms = now_ms;
            } else {
                lock.holders.push(Holder { owner: waiter.owner, mode: waiter.mode, token, since_ms: now_ms });
            }
            events.push(LockEvent::Granted {
                name: name.to_string(),
                owner: waiter.owner,
                token,
                upgrade: waiter.upgrade,
            });
        }
        self.forget_if_unused(name);
    }

    /// Stops tracking `name` for `owner`'s session unless another owner of the session still
    /// holds or waits for it.
    fn untrack(&mut self, owner: Owner, name: &str) {
        let still_used = self.locks.get(name).is_some_and(|lock| {
            lock.holders.iter().any(|h| h.owner.session == owner.session)
                || lock.waiters.iter().any(|w| w.owner.session == owner.session)
        });
        if !still_used {
            if let Some(names) = self.by_session.get_mut(&owner.session) {
                names.remove(name);
                if names.is_empty() {
                    self.by_session.remove(&owner.session);
                }
            }
        }
        self.forget_if_unused(name);
    }

    fn forget_if_unused(&mut self, name: &str) {
        if self.locks.get(name).is_some_and(|lock| lock.holders.is_empty() && lock.waiters.is_empty()) {
            self.locks.remove(name);
        }
    }

    /// Panics if the locks are inconsistent, which would mean a bug.
    pub fn check_invariants(&self) {
        for (name, lock) in &self.locks {
            self.check_lock(name, lock);
        }
        for (session, names) in &self.by_session {
            for name in names {
                let lock = self.locks.get(name).expect("tracked locks exist");
                assert!(
                    lock.holders.iter().any(|h| h.owner.session == *session)
                        || lock.waiters.iter().any(|w| w.owner.session == *session),
                    "session {session} is tracked on {name:?} without holding or waiting"
                );
            }
        }
        for (deadline_ms, name, owner) in &self.deadlines {
            let lock = self.locks.get(name).expect("a deadline belongs to a lock");
            assert!(
                lock.waiters.iter().any(|w| w.owner == *owner && w.deadline_ms == Some(*deadline_ms)),
                "deadline of {owner:?} on {name:?} without its waiter"
            );
        }
    }

    /// The invariants of one lock: cheap enough for every apply in debug builds.
    pub fn check_lock(&self, name: &str, lock: &Lock) {
        assert!(!lock.holders.is_empty() || !lock.waiters.is_empty(), "unused lock {name:?} is kept");
        let exclusive = lock.holders.iter().filter(|h| h.mode == Mode::Exclusive).count();
        assert!(exclusive == 0 || lock.holders.len() == 1, "lock {name:?} has an exclusive holder and others");
        let owners: BTreeSet<Owner> = lock.holders.iter().map(|h| h.owner).collect();
        assert_eq!(owners.len(), lock.holders.len(), "lock {name:?} lists an owner twice");
        if let Some(head) = lock.waiters.front() {
            let could_grant = if head.upgrade {
                lock.holders.len() == 1 && lock.holders[0].owner == head.owner
            } else {
                compatible(&lock.holders, head.mode)
            };
            assert!(!could_grant, "lock {name:?} keeps a grantable waiter queued");
        }
    }
}

/// Whether a request in `mode` can join `holders`.
fn compatible(holders: &[Holder], mode: Mode) -> bool {
    match mode {
        Mode::Exclusive => holders.is_empty(),
        Mode::Shared => holders.iter().all(|h| h.mode == Mode::Shared),
    }
}

/// The owners a request at `position` in `lock`'s queue waits behind: conflicting holders, and
/// conflicting waiters ahead of it (fairness makes it wait for them too).
fn blockers_at(lock: &Lock, owner: Owner, mode: Mode, upgrade: bool, position: usize) -> Vec<Owner> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const A: Owner = Owner { session: 1, actor: 1 };
    const B: Owner = Owner { session: 2, actor: 1 };
    const C: Owner = Owner { session: 3, actor: 1 };
    /// Another actor of A's session.
    const A2: Owner = Owner { session: 1, actor: 2 };

    /// Locks with a token counter, checking invariants after every step.
    struct Bench {
        locks: Locks,
        revision: u64,
        events: Vec<LockEvent>,
    }

    impl Bench {
        fn new() -> Self {
            Self { locks: Locks::default(), revision: 100, events: Vec::new() }
        }

        fn acquire(&mut self, owner: Owner, name: &str, mode: Mode, wait: Wait) -> Result<AcquireOutcome, ServerError> {
            let revision = &mut self.revision;
            let result = self.locks.acquire(owner, name, mode, wait, 0, &mut || {
                *revision += 1;
                *revision
            });
            self.locks.check_invariants();
            result
        }

        fn granted(&mut self, owner: Owner, name: &str, mode: Mode) -> u64 {
            match self.acquire(owner, name, mode, Wait::No) {
                Ok(AcquireOutcome::Granted { token }) => token,
                other => panic!("{owner:?} acquiring {name:?}: {other:?}"),
            }
        }

        fn upgrade(&mut self, owner: Owner, name: &str, wait: Wait) -> Result<AcquireOutcome, ServerError> {
            let revision = &mut self.revision;
            let result = self.locks.upgrade(owner, name, wait, 0, &mut || {
                *revision += 1;
                *revision
            });
            self.locks.check_invariants();
            result
        }

        fn release(&mut self, owner: Owner, name: &str, token: u64) -> Result<(), ServerError> {
            let revision = &mut self.revision;
            let result = self.locks.release(
                owner,
                name,
                token,
                0,
                &mut || {
                    *revision += 1;
                    *revision
                },
                &mut self.events,
            );
            self.locks.check_invariants();
            result
        }

        fn expire_session(&mut self, session: SessionId) {
            let revision = &mut self.revision;
            self.locks.release_session(
                session,
                0,
                &mut || {
                    *revision += 1;
                    *revision
                },
                &mut self.events,
            );
            self.locks.check_invariants();
        }

        fn expire_waits(&mut self, now_ms: u64) {
            let revision = &mut self.revision;
            self.locks.expire_waits(
                now_ms,
                &mut || {
                    *revision += 1;
                    *revision
                },
                &mut self.events,
            );
            self.locks.check_invariants();
        }

        fn holders(&self, name: &str) -> Vec<(Owner, Mode)> {
            self.locks.get(name).map(|l| l.holders.iter().map(|h| (h.owner, h.mode)).collect()).unwrap_or_default()
        }

        fn take_events(&mut self) -> Vec<LockEvent> {
            std::mem::take(&mut self.events)
        }
    }

    #[test]
    fn exclusive_excludes_and_shared_share() {
        let mut bench = Bench::new();
        bench.granted(A, "x", Mode::Exclusive);
        assert_eq!(
            bench.acquire(B, "x", Mode::Exclusive, Wait::No),
            Err(ServerError::Lock(LockRefusal::WouldBlock { name: "x".into() }))
        );
        assert_eq!(
            bench.acquire(B, "x", Mode::Shared, Wait::No),
            Err(ServerError::Lock(LockRefusal::WouldBlock { name: "x".into() }))
        );
        bench.granted(A, "s", Mode::Shared);
        bench.granted(B, "s", Mode::Shared);
        bench.granted(A2, "s", Mode::Shared);
        assert_eq!(bench.holders("s").len(), 3);
        assert_eq!(
            bench.acquire(C, "s", Mode::Exclusive, Wait::No),
            Err(ServerError::Lock(LockRefusal::WouldBlock { name: "s".into() }))
        );
        assert_eq!(
            bench.acquire(A, "x", Mode::Exclusive, Wait::Forever),
            Err(ServerError::Lock(LockRefusal::AlreadyHeld { name: "x".into() }))
        );
    }

    #[test]
    fn actors_of_one_session_exclude_each_other() {
        let mut bench = Bench::new();
        bench.granted(A, "x", Mode::Exclusive);
        assert_eq!(
            bench.acquire(A2, "x", Mode::Exclusive, Wait::No),
            Err(ServerError::Lock(LockRefusal::WouldBlock { name: "x".into() }))
        );
    }

    #[test]
    fn waiters_are_served_in_order_and_writers_do_not_starve() {
        let mut bench = Bench::new();
        let first = bench.granted(A, "x", Mode::Shared);
        assert_eq!(bench.acquire(B, "x", Mode::Exclusive, Wait::Forever), Ok(AcquireOutcome::Queued { ahead: 0 }));
        // Shared is compatible with the holder, but waits behind the exclusive waiter.
        assert_eq!(bench.acquire(C, "x", Mode::Shared, Wait::Forever), Ok(AcquireOutcome::Queued { ahead: 1 }));
        bench.release(A, "x", first).unwrap();
        let events = bench.take_events();
        let [LockEvent::Granted { owner, token: second, .. }] = events.as_slice() else { panic!("{events:?}") };
        assert_eq!(*owner, B);
        assert!(*second > first, "tokens increase");
        assert_eq!(bench.holders("x"), vec![(B, Mode::Exclusive)]);
        bench.release(B, "x", *second).unwrap();
        let events = bench.take_events();
        let [LockEvent::Granted { owner, token: third, .. }] = events.as_slice() else { panic!("{events:?}") };
        assert_eq!((*owner, *third > *second), (C, true));
        assert!(bench.locks.get("x").is_some());
    }

    #[test]
    fn consecutive_shared_waiters_are_granted_together() {
        let mut bench = Bench::new();
        let token = bench.granted(A, "x", Mode::Exclusive);
        bench.acquire(B, "x", Mode::Shared, Wait::Forever).unwrap();
        bench.acquire(C, "x", Mode::Shared, Wait::Forever).unwrap();
        bench.acquire(A2, "x", Mode::Exclusive, Wait::Forever).unwrap();
        bench.release(A, "x", token).unwrap();
        assert_eq!(bench.holders("x"), vec![(B, Mode::Shared), (C, Mode::Shared)]);
        let tokens: Vec<u64> = bench
            .take_events()
            .into_iter()
            .map(|e| match e {
                LockEvent::Granted { token, .. } => token,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(tokens[0] < tokens[1], "even shared holders granted together get distinct, increasing tokens");
    }

    #[test]
    fn a_stale_release_never_frees_a_newer_hold() {
        let mut bench = Bench::new();
        let old = bench.granted(A, "x", Mode::Exclusive);
        bench.release(A, "x", old).unwrap();
        let new = bench.granted(A, "x", Mode::Exclusive);
        assert_eq!(
            bench.release(A, "x", old),
            Err(ServerError::Lock(LockRefusal::NotHeld { name: "x".into(), token: old }))
        );
        assert_eq!(bench.holders("x"), vec![(A, Mode::Exclusive)]);
        bench.release(A, "x", new).unwrap();
        assert!(bench.locks.is_empty(), "unused locks are forgotten");
    }

    #[test]
    fn an_expired_session_loses_its_holds_and_waits() {
        let mut bench = Bench::new();
        let token = bench.granted(A, "x", Mode::Exclusive);
        bench.granted(A2, "y", Mode::Exclusive);
        bench.acquire(A, "z", Mode::Exclusive, Wait::Forever).ok();
        bench.acquire(B, "x", Mode::Exclusive, Wait::Forever).unwrap();
        bench.expire_session(A.session);
        let events = bench.take_events();
        assert!(events.contains(&LockEvent::Lost { name: "x".into(), owner: A, token }));
        assert!(events.iter().any(|e| matches!(e, LockEvent::Lost { name, owner, .. } if name == "y" && *owner == A2)));
        assert!(events
            .iter()
            .any(|e| matches!(e, LockEvent::Granted { name, owner, .. } if name == "x" && *owner == B)));
        assert_eq!(bench.holders("x"), vec![(B, Mode::Exclusive)]);
        assert!(bench.locks.get("y").is_none() && bench.locks.get("z").is_none());
    }

    #[test]
    fn a_wait_ends_at_its_deadline_and_unblocks_those_behind() {
        let mut bench = Bench::new();
        bench.granted(A, "x", Mode::Shared);
        bench.acquire(B, "x", Mode::Exclusive, Wait::Until { deadline_ms: 1_000 }).unwrap();
        bench.acquire(C, "x", Mode::Shared, Wait::Forever).unwrap();
        bench.expire_waits(1_000);
        assert!(bench.take_events().is_empty(), "the deadline itself is not past yet");
        bench.expire_waits(1_001);
        let events = bench.take_events();
        assert_eq!(events[0], LockEvent::TimedOut { name: "x".into(), owner: B });
        assert!(matches!(&events[1], LockEvent::Granted { owner, .. } if *owner == C), "{events:?}");
        assert_eq!(bench.holders("x"), vec![(A, Mode::Shared), (C, Mode::Shared)]);
    }

    #[test]
    fn a_wait_that_closes_a_cycle_fails_with_the_cycle_and_changes_nothing() {
        let mut bench = Bench::new();
        bench.granted(A, "l1", Mode::Exclusive);
        bench.granted(B, "l2", Mode::Exclusive);
        bench.acquire(A, "l2", Mode::Exclusive, Wait::Forever).unwrap();
        let before = bench.locks.clone();
        let deadlock = bench.acquire(B, "l1", Mode::Exclusive, Wait::Forever);
        assert_eq!(
            deadlock,
            Err(ServerError::Lock(LockRefusal::Deadlock {
                name: "l1".into(),
                cycle: vec![(B, "l1".into()), (A, "l2".into())]
            }))
        );
        assert_eq!(bench.locks, before, "a refused wait leaves no trace");
        assert!(deadlock.unwrap_err().to_string().contains("session 2 actor 0x1 waits on \"l1\""));
    }

    #[test]
    fn deadlocks_between_actors_of_one_session_and_through_queues_are_found() {
        let mut bench = Bench::new();
        // A holds l1 shared; C waits for l1 exclusive. A2 holds l2 and asks for l1 shared: that is
        // compatible with A's hold, but fairness queues A2 behind C, so A2 waits on C only. If A
        // then waits for l2, the only cycle runs through the queue: A -> A2 -> C -> A, two of
        // its owners being actors of one session.
        bench.granted(A, "l1", Mode::Shared);
        bench.acquire(C, "l1", Mode::Exclusive, Wait::Forever).unwrap();
        bench.granted(A2, "l2", Mode::Exclusive);
        bench.acquire(A2, "l1", Mode::Shared, Wait::Forever).unwrap();
        let result = bench.acquire(A, "l2", Mode::Exclusive, Wait::Forever);
        let Err(ServerError::Lock(LockRefusal::Deadlock { cycle, .. })) = result else { panic!("{result:?}") };
        assert_eq!(cycle, vec![(A, "l2".to_string()), (A2, "l1".to_string()), (C, "l1".to_string())]);
    }

    #[test]
    fn upgrades_wait_for_other_readers_and_two_upgrades_deadlock() {
        let mut bench = Bench::new();
        let solo = bench.granted(A, "only", Mode::Shared);
        let Ok(AcquireOutcome::Granted { token }) = bench.upgrade(A, "only", Wait::No) else { panic!() };
        assert!(token > solo);
        assert_eq!(bench.holders("only"), vec![(A, Mode::Exclusive)]);

        bench.granted(A, "x", Mode::Shared);
        let b_token = bench.granted(B, "x", Mode::Shared);
        bench.acquire(C, "x", Mode::Exclusive, Wait::Forever).unwrap();
        assert_eq!(bench.upgrade(A, "x", Wait::Forever), Ok(AcquireOutcome::Queued { ahead: 0 }), "ahead of C");
        let result = bench.upgrade(B, "x", Wait::Forever);
        assert!(matches!(result, Err(ServerError::Lock(LockRefusal::Deadlock { .. }))), "{result:?}");
        bench.release(B, "x", b_token).unwrap();
        let events = bench.take_events();
        assert!(matches!(&events[..], [LockEvent::Granted { owner, upgrade: true, .. }] if *owner == A), "{events:?}");
        assert_eq!(bench.holders("x"), vec![(A, Mode::Exclusive)]);
        assert_eq!(
            bench.upgrade(C, "x", Wait::No),
            Err(ServerError::Lock(LockRefusal::NotShared { name: "x".into() }))
        );
    }

    #[test]
    fn a_three_owner_cycle_is_found_and_a_plain_queue_is_not_a_deadlock() {
        let mut bench = Bench::new();
        bench.granted(A, "l1", Mode::Exclusive);
        bench.granted(B, "l2", Mode::Exclusive);
        bench.granted(C, "l3", Mode::Exclusive);
        bench.acquire(A, "l2", Mode::Exclusive, Wait::Forever).unwrap();
        bench.acquire(B, "l3", Mode::Exclusive, Wait::Forever).unwrap();
        let result = bench.acquire(C, "l1", Mode::Exclusive, Wait::Forever);
        assert_eq!(
            result,
            Err(ServerError::Lock(LockRefusal::Deadlock {
                name: "l1".into(),
                cycle: vec![(C, "l1".into()), (A, "l2".into()), (B, "l3".into())]
            }))
        );

        // Many owners queued on one lock, in every mode, wait; none of them is a deadlock.
        let mut queue = Bench::new();
        queue.granted(A, "q", Mode::Exclusive);
        for session in 10..60 {
            let mode = if session % 3 == 0 { Mode::Exclusive } else { Mode::Shared };
            let owner = Owner { session, actor: 1 };
            let queued = queue.acquire(owner, "q", mode, Wait::Forever);
            assert!(matches!(queued, Ok(AcquireOutcome::Queued { .. })), "{owner:?}: {queued:?}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let mut bench = Bench::new();
        let long = "n".repeat(LOCK_NAME_BYTES_MAX + 1);
        assert!(matches!(bench.acquire(A, &long, Mode::Exclusive, Wait::No), Err(ServerError::InvalidArgument { .. })));
        assert!(matches!(bench.acquire(A, "", Mode::Exclusive, Wait::No), Err(ServerError::InvalidArgument { .. })));
    }
}
