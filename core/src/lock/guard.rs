//! [`LockGuard`]: a held lock, its fencing token, its lease, upgrade and release.

use std::time::{Duration, Instant};

use super::builder::wait_for;
use super::request::{Failure, LockCall};
use super::state::settle_in_background;
use super::LockError;
use crate::client::{CallOptions, Client};
use crate::error::{ClientError, LockRefusal, ServerError};
use crate::wire::{Command, CommandResponse, LockMode, Owner};

/// A held lock. Dropping it releases the lock in the background; [`LockGuard::release`] releases
/// it and reports the outcome.
///
/// ```no_run
/// # async fn example(client: distsync::Client) -> Result<(), distsync::LockError> {
/// let mut guard = client.lock("inventory").shared().acquire().await?;
/// // … read …
/// guard.upgrade().await?;            // now exclusive, with a new fencing token
/// let token = guard.token();         // pass it to the storage you write to
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[must_use = "dropping the guard releases the lock at once"]
pub struct LockGuard {
    client: Client,
    name: String,
    owner: Owner,
    mode: LockMode,
    token: u64,
    timeout: Option<Duration>,
    released: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("owner", &self.owner)
            .field("mode", &self.mode)
            .field("token", &self.token)
            .finish()
    }
}

impl LockGuard {
    pub(super) fn new(
        client: Client,
        name: String,
        owner: Owner,
        mode: LockMode,
        token: u64,
        timeout: Option<Duration>,
    ) -> Self {
        LockGuard { client, name, owner, mode, token, timeout, released: false }
    }

    /// The fencing token of this hold: strictly increasing per lock across holders and leader
    /// changes. Send it with every write to the protected resource, and have the resource refuse
    /// a token lower than the highest it has seen: a holder that lost the lock without knowing it
    /// (a long pause, a partition) is then stopped at the resource.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Exclusive or shared.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// The owner holding the lock.
    pub fn owner(&self) -> Owner {
        self.owner
    }

    /// Whether the client may still treat the lock as held: its session is current and its lease
    /// has not run out on the client's clock. Once false, stop touching the protected resource.
    pub fn is_held(&self) -> bool {
        !self.released && self.client.session_valid(self.owner.session)
    }

    /// Completes when the lock is lost: the cluster reported that the session ended, or the
    /// client's lease deadline passed without a renewal. Race it against the work the lock
    /// protects.
    pub async fn lost(&self) {
        let mut changes = self.client.session_changes();
        loop {
            changes.borrow_and_update();
            let Some(deadline) = self.client.lease_deadline(self.owner.session) else { return };
            if self.released || Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    /// Upgrades a shared hold to exclusive, waiting (up to the lock's timeout, if one was set) for
    /// the other shared holders to leave; the upgrade goes ahead of other waiters. On success
    /// [`token`](LockGuard::token) is the new, higher fencing token.
    ///
    /// If this future is dropped before it completes, the lock is released: the client cannot
    /// know whether the upgrade happened.
    ///
    /// # Errors
    ///
    /// [`LockError::Deadlock`] when another shared holder is upgrading too (the classic case),
    /// [`LockError::Timeout`] (the shared hold is kept), [`LockError::NotShared`],
    /// [`LockError::SessionExpired`], [`LockError::Unavailable`].
    pub async fn upgrade(&mut self) -> Result<(), LockError> {
        let wait = wait_for(self.timeout)?;
        let command = Command::LockUpgrade { name: self.name.clone(), actor: self.owner.actor, wait };
        let request = LockCall { client: &self.client, name: &self.name, actor: self.owner.actor, upgrade: true };
        match request.run(command, wait).await {
            Ok((session, token)) if session == self.owner.session => {
                self.token = token;
                self.mode = LockMode::Exclusive;
                Ok(())
            }
            Ok((_, _)) => {
                // Written under a newer session: the old one, and the hold, are gone.
                self.forget();
                Err(LockError::SessionExpired { session: self.owner.session })
            }
            Err(Failure { error, withdrawn }) => {
                if withdrawn || matches!(error, LockError::SessionExpired { .. }) {
                    // A withdrawn upgrade releases the hold.
                    self.forget();
                }
                Err(error)
            }
        }
    }

    /// Releases the lock now.
    ///
    /// # Errors
    ///
    /// [`LockError::NotHeld`] or [`LockError::SessionExpired`] when the hold was already lost
    /// (whatever it protected may have been changed since); [`LockError::Unavailable`] when the
    /// cluster did not answer in time: the client then goes on releasing in the background until
    /// the cluster answers (or the session ends), so that a live session does not keep the lock.
    pub async fn release(mut self) -> Result<(), LockError> {
        self.forget();
        let command = Command::LockRelease { name: self.name.clone(), actor: self.owner.actor, token: self.token };
        let outcome = self.client.write(command, CallOptions::default()).await;
        if let Err(error) = &outcome {
            if error.is_retryable() {
                let (client, name, owner, token) = (self.client.clone(), self.name.clone(), self.owner, self.token);
                settle_in_background(&self.client, owner.actor, &name.clone(), async move {
                    release_until_answered(client, name, owner, token).await;
                });
            }
        }
        match outcome {
            Ok((session, CommandResponse::LockReleased)) if session == self.owner.session => Ok(()),
            Ok((_, CommandResponse::LockReleased)) => Err(LockError::SessionExpired { session: self.owner.session }),
            Ok((_, other)) => {
                Err(ClientError::Protocol { reason: format!("unexpected answer to a release: {other:?}") }.into())
            }
            Err(ClientError::Server(ServerError::Lock(LockRefusal::NotHeld { .. })))
                if self.owner.session != self.client.current_session().unwrap_or(self.owner.session) =>
            {
                Err(LockError::SessionExpired { session: self.owner.session })
            }
            Err(error) => Err(error.into()),
        }
    }
}

impl LockGuard {
    /// Marks the hold as gone and lets the owner ask for the lock again.
    fn forget(&mut self) {
        if !self.released {
            self.released = true;
            self.client.lock_state().unclaim(self.owner.actor, &self.name);
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.forget();
        if self.client.current_session() != Some(self.owner.session) {
            // The session was closed or replaced, and the hold ended with it: a release now
            // would only open a new session to be told so.
            return;
        }
        let (client, name, owner, token) = (self.client.clone(), self.name.clone(), self.owner, self.token);
        settle_in_background(&self.client, self.owner.actor, &self.name, async move {
            release_until_answered(client, name, owner, token).await;
        });
    }
}

/// Pause between two attempts of a background release while the cluster does not answer.
const RELEASE_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Releases `owner`'s hold `token` of `name` until the cluster answers: released, not held any
/// more, or the session gone. A release the cluster never answered would leave the lock held
/// for as long as the session lives, and the client keeps its session alive: every other owner
/// would wait for ever. Retrying is safe: a release names its token, so a late one can never free
/// a newer hold.
async fn release_until_answered(client: Client, name: String, owner: Owner, token: u64) {
    loop {
        if client.current_session() != Some(owner.session) {
            // Closed or replaced: the hold ended with the session.
            return;
        }
        let command = Command::LockRelease { name: name.clone(), actor: owner.actor, token };
        match client.write(command, CallOptions::default()).await {
            // Not held: an earlier attempt, whose answer was lost, released it.
            Ok(_)
            | Err(ClientError::SessionExpired { .. })
            | Err(ClientError::Server(ServerError::Lock(LockRefusal::NotHeld { .. }))) => return,
            Err(error) if error.is_retryable() => {
                tracing::debug!(lock = %name, %error, "release not answered; trying again");
                tokio::time::sleep(RELEASE_RETRY_PAUSE).await;
            }
            Err(error) => {
                tracing::warn!(lock = %name, %error, "background release failed");
                return;
            }
        }
    }
}
