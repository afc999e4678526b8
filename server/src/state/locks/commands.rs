//! The lock commands and queries of the state machine: what each does to [`Locks`](super::Locks), and which
//! sessions' waiters must look again afterwards.

use distsync::wire::{
    CommandResponse, LockAwaitOutcome, LockInfo, LockMode, LockWait, Owner, QueryResponse, LIST_PAGE_BYTES_MAX,
    LOCK_LIST_PAGE_MAX,
};
use distsync::{ServerError, SessionId};

use super::{AcquireOutcome, Lock, Wait};
use crate::state::sessions::Sessions;
use crate::state::{next, StateMachine};

impl StateMachine {
    /// `LockAcquire` at `revision`; a grant takes a fresh revision as its token.
    pub(in crate::state) fn lock_acquire(
        &mut self,
        revision: u64,
        owner: Owner,
        name: &str,
        mode: LockMode,
        wait: &LockWait,
    ) -> Result<CommandResponse, ServerError> {
        let (now_ms, wait) = (self.now_ms, deadline(self.now_ms, wait));
        let counter = &mut self.revision;
        let outcome = self.locks.acquire(owner, name, mode, wait, now_ms, &mut || next(counter), &self.limits)?;
        Ok(self.answer_acquire(revision, owner, outcome))
    }

    /// `LockUpgrade` at `revision`: the owner's shared hold becomes exclusive, at once or after
    /// the other shared holders leave.
    pub(in crate::state) fn lock_upgrade(
        &mut self,
        revision: u64,
        owner: Owner,
        name: &str,
        wait: &LockWait,
    ) -> Result<CommandResponse, ServerError> {
        let (now_ms, wait) = (self.now_ms, deadline(self.now_ms, wait));
        let counter = &mut self.revision;
        let outcome = self.locks.upgrade(owner, name, wait, now_ms, &mut || next(counter), &self.limits)?;
        Ok(self.answer_acquire(revision, owner, outcome))
    }

    /// `LockRelease`: frees the owner's hold if it still has the one with `token`.
    pub(in crate::state) fn lock_release(
        &mut self,
        owner: Owner,
        name: &str,
        token: u64,
    ) -> Result<CommandResponse, ServerError> {
        let mut events = Vec::new();
        let counter = &mut self.revision;
        self.locks.release(owner, name, token, self.now_ms, &mut || next(counter), &mut events)?;
        self.note_events(&events);
        Ok(CommandResponse::LockReleased)
    }

    /// `LockCancel`: gives up a request queued at `queued_revision` whose caller stopped waiting.
    pub(in crate::state) fn lock_cancel(
        &mut self,
        owner: Owner,
        name: &str,
        queued_revision: u64,
        upgrade: bool,
    ) -> CommandResponse {
        let mut events = Vec::new();
        let counter = &mut self.revision;
        let released =
            self.locks.cancel(owner, name, queued_revision, upgrade, self.now_ms, &mut || next(counter), &mut events);
        self.note_events(&events);
        // Whoever waits for this request on another node learns of it by this.
        self.touched.push(owner.session);
        CommandResponse::LockCancelled { released }
    }

    /// The answer to an acquire or upgrade at `revision`.
    fn answer_acquire(&mut self, revision: u64, owner: Owner, outcome: AcquireOutcome) -> CommandResponse {
        match outcome {
            AcquireOutcome::Granted { token } => CommandResponse::LockGranted { token },
            AcquireOutcome::Queued { ahead } => {
                // Whoever waits for this request on another node learns of it by this.
                self.touched.push(owner.session);
                CommandResponse::LockQueued { revision, ahead: ahead as u64 }
            }
        }
    }

    /// Where a lock request queued at `queued_revision` stands, as far as this replica has
    /// applied: granted (with its token), still pending (or not yet applied here), timed out or
    /// cancelled, or ended with its session.
    pub fn lock_await(&self, name: &str, owner: Owner, queued_revision: u64) -> LockAwaitOutcome {
        if self.revision < queued_revision {
            return LockAwaitOutcome::Pending;
        }
        if let Some(lock) = self.locks.get(name) {
            if let Some(holder) = lock.holders.iter().find(|h| h.owner == owner && h.token > queued_revision) {
                return LockAwaitOutcome::Granted { token: holder.token };
            }
            if lock.waiters.iter().any(|w| w.owner == owner) {
                return LockAwaitOutcome::Pending;
            }
        }
        if self.sessions.contains(owner.session) {
            LockAwaitOutcome::TimedOut
        } else {
            LockAwaitOutcome::SessionEnded
        }
    }

    /// `Query::LockList`: a page of locks after `after`, and whether more follow.
    /// The page ends early when its encoding would pass [`LIST_PAGE_BYTES_MAX`] (locks with
    /// thousands of waiters).
    pub(in crate::state) fn lock_list(&self, after: Option<&str>) -> (Vec<LockInfo>, bool) {
        let (page, more) = self.locks.list(after, LOCK_LIST_PAGE_MAX);
        let total = page.len();
        let mut bytes = 0;
        let mut infos = Vec::with_capacity(total);
        for (name, lock) in page {
            let info = lock_info(name, lock, &self.sessions);
            bytes += distsync::wire::encoded_bytes(&info);
            if !infos.is_empty() && bytes > LIST_PAGE_BYTES_MAX {
                return (infos, true);
            }
            infos.push(info);
        }
        (infos, more)
    }

    /// `Query::LockShow`: one lock, if anyone holds or awaits it.
    pub(in crate::state) fn lock_show(&self, name: &str) -> QueryResponse {
        QueryResponse::LockShow { lock: self.locks.get(name).map(|lock| lock_info(name, lock, &self.sessions)) }
    }
}

/// A relative wait as a deadline on the leader's clock.
fn deadline(now_ms: u64, wait: &LockWait) -> Wait {
    match wait {
        LockWait::Try => Wait::No,
        LockWait::TimeoutMs(ms) => Wait::Until { deadline_ms: now_ms.saturating_add(*ms) },
        LockWait::Forever => Wait::Forever,
    }
}

/// A lock as `lock show` prints it, with the identities of its sessions (never their secrets).
fn lock_info(name: &str, lock: &Lock, sessions: &Sessions) -> LockInfo {
    let mut ids: Vec<SessionId> = lock
        .holders
        .iter()
        .map(|holder| holder.owner.session)
        .chain(lock.waiters.iter().map(|waiter| waiter.owner.session))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let identities =
        ids.into_iter().filter_map(|id| sessions.identity_of(id).map(|identity| (id, identity.to_string()))).collect();
    LockInfo {
        name: name.to_string(),
        holders: lock.holders.clone(),
        waiters: lock.waiters.iter().cloned().collect(),
        identities,
    }
}
