//! Requests a node holds open until its applied state answers them: a lock request's grant, a
//! waiting get's deliveries, a session's end. Answered from the local state, so a follower
//! pushes the answer as soon as it applies the deciding entry, and a cut-off node never invents
//! one.

use std::time::Duration;

use distsync::wire::{
    validate_lock_name, validate_queue_name, LockAwaitOutcome, Owner, QueueAwaitOutcome, Response, SessionSecret,
    AWAIT_MS_MAX,
};
use distsync::{ServerError, SessionId};

use super::Node;
use crate::state::StateMachine;

/// Who waits: the connection's identity and the secret of the session it names.
pub(super) type Caller<'a> = (&'a str, &'a SessionSecret);

impl Node {
    /// `AwaitLock`: until the lock request of `owner` queued at `queued_revision` is decided.
    pub(super) async fn await_lock(
        &self,
        name: &str,
        owner: Owner,
        queued_revision: u64,
        max_wait_ms: u64,
        caller: Caller<'_>,
    ) -> Result<Response, ServerError> {
        validate_lock_name(name)?;
        let outcome = self
            .wait_for_session(owner.session, caller, max_wait_ms, |machine| {
                match machine.lock_await(name, owner, queued_revision) {
                    LockAwaitOutcome::Pending => None,
                    decided => Some(decided),
                }
            })
            .await?;
        Ok(Response::LockAwait(outcome.unwrap_or(LockAwaitOutcome::Pending)))
    }

    /// `AwaitDelivery`: until the waiting get `request` of `session` is decided.
    pub(super) async fn await_delivery(
        &self,
        queue: &str,
        session: SessionId,
        request: u64,
        queued_revision: u64,
        max_wait_ms: u64,
        caller: Caller<'_>,
    ) -> Result<Response, ServerError> {
        validate_queue_name(queue)?;
        let outcome = self
            .wait_for_session(session, caller, max_wait_ms, |machine| {
                match machine.queue_await(queue, session, request, queued_revision) {
                    QueueAwaitOutcome::Pending => None,
                    decided => Some(decided),
                }
            })
            .await?;
        Ok(Response::QueueAwait(outcome.unwrap_or(QueueAwaitOutcome::Pending)))
    }

    /// `WatchSession`: until `session` ends.
    pub(super) async fn watch_session(
        &self,
        session: SessionId,
        max_wait_ms: u64,
        caller: Caller<'_>,
    ) -> Result<Response, ServerError> {
        let ended = self
            .wait_for_session(session, caller, max_wait_ms, |machine| (!machine.session_alive(session)).then_some(()))
            .await?;
        Ok(Response::SessionWatch { alive: ended.is_none() })
    }

    /// Waits until `check` finds an answer in this node's applied state, looking again whenever
    /// an applied entry touches `session`; gives up with `None` after `max_wait_ms` (capped at
    /// [`AWAIT_MS_MAX`]). Answers from the local state: a grant seen here is committed, so a
    /// follower pushes it as soon as it applies it, and a cut-off node never invents one. Only
    /// the session's opener may wait on it; that is checked at every look.
    async fn wait_for_session<T>(
        &self,
        session: SessionId,
        (identity, secret): Caller<'_>,
        max_wait_ms: u64,
        check: impl Fn(&StateMachine) -> Option<T>,
    ) -> Result<Option<T>, ServerError> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(max_wait_ms.min(AWAIT_MS_MAX));
        let signal = self.state.signals().subscribe(session);
        loop {
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let applied = self.state.applied();
                applied.machine.check_session_owner(session, identity, secret)?;
                if let Some(answer) = check(&applied.machine) {
                    return Ok(Some(answer));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }
}
