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
//!
//! `deadlock.rs` walks the wait-for graph, `commands.rs` applies the lock commands of the state
//! machine, `tests.rs` holds the table-driven scenarios.

mod commands;
mod deadlock;
#[cfg(test)]
mod tests;

use distsync::error::LockRefusal;
use distsync::wire::validate_lock_name;
pub use distsync::wire::{LockHolder as Holder, LockMode as Mode, LockWaiter as Waiter, Owner, LOCK_NAME_BYTES_MAX};
use distsync::{ServerError, SessionId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use self::deadlock::blockers_at;
use super::limits::{reached, Limits};

/// Waiters queued on one lock by default (`--max-waiters-per-lock`). Bounds memory and the cost of deadlock detection.
pub const WAITERS_PER_LOCK_MAX: usize = 10_000;

/// Locks held or waited for at once, across the cluster, by default (`--max-locks`).
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
    #[allow(clippy::too_many_arguments)]
    pub fn acquire(
        &mut self,
        owner: Owner,
        name: &str,
        mode: Mode,
        wait: Wait,
        now_ms: u64,
        next_token: &mut impl FnMut() -> u64,
        limits: &Limits,
    ) -> Result<AcquireOutcome, ServerError> {
        validate_lock_name(name)?;
        if let Some(lock) = self.locks.get(name) {
            if lock.holders.iter().any(|h| h.owner == owner) || lock.waiters.iter().any(|w| w.owner == owner) {
                return Err(ServerError::Lock(LockRefusal::AlreadyHeld { name: name.to_string() }));
            }
        } else if self.locks.len() as u64 >= limits.locks {
            return Err(reached(
                "LOCKS_MAX",
                limits.locks,
                format!("{} locks are held or awaited; release locks or wait for sessions to end", limits.locks),
            ));
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
        self.enqueue(owner, name, mode, false, wait, now_ms, limits)
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
        limits: &Limits,
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
        self.enqueue(owner, name, Mode::Exclusive, true, wait, now_ms, limits)
    }

    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        &mut self,
        owner: Owner,
        name: &str,
        mode: Mode,
        upgrade: bool,
        wait: Wait,
        now_ms: u64,
        limits: &Limits,
    ) -> Result<AcquireOutcome, ServerError> {
        let lock = self.locks.get(name).expect("the caller created or found the lock");
        let waiters = limits.waiters_per_lock;
        if lock.waiters.len() as u64 >= waiters {
            return Err(reached(
                "WAITERS_PER_LOCK_MAX",
                waiters,
                format!("{waiters} owners already wait for lock {name:?}; retry later"),
            ));
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
