//! One acquire or upgrade in flight: the command, the wait for a queued request's grant, and
//! its withdrawal when the caller stops waiting.

use std::time::{Duration, Instant};

use super::state::settle_in_background;
use super::LockError;
use crate::client::{unexpected, CallOptions, Client};
use crate::error::ClientError;
use crate::pending::{self, CancelOnDrop, Cancellable, Ended, Verdict};
use crate::wire::{Command, CommandResponse, LockAwaitOutcome, LockWait, Owner, Request, Response, SessionId};

/// One acquire or upgrade in flight: sends the command, follows a queued request to its end,
/// and withdraws it if the caller stops waiting.
pub(super) struct LockCall<'a> {
    pub(super) client: &'a Client,
    pub(super) name: &'a str,
    pub(super) actor: u64,
    pub(super) upgrade: bool,
}

/// A failed acquire or upgrade, and whether the request was withdrawn (which, for an upgrade,
/// released the hold).
pub(super) struct Failure {
    pub(super) error: LockError,
    pub(super) withdrawn: bool,
}

impl LockCall<'_> {
    /// Sends `command` (an acquire or upgrade waiting as `wait` says) and waits for the grant;
    /// returns the session it was granted in and the fencing token.
    pub(super) async fn run(&self, command: Command, wait: LockWait) -> Result<(SessionId, u64), Failure> {
        let started = Instant::now();
        let options = CallOptions::default().deadline(started + self.client.request_timeout());
        // Until the command's outcome is known it may be queued or granted in the cluster: if the
        // caller stops waiting (drops this future) or the outcome is lost, withdraw it.
        let withdrawal = LockWithdrawal {
            name: self.name.to_string(),
            actor: self.actor,
            queued_revision: 0,
            upgrade: self.upgrade,
        };
        let mut withdraw = CancelOnDrop::new(self.client, withdrawal);
        let (session, response) = match self.client.write(command, options).await {
            Ok(answer) => answer,
            Err(error @ ClientError::Unavailable { .. }) => {
                // The request may still commit: withdraw it before reporting, so that this owner's
                // next request cannot be overtaken by the withdrawal.
                withdraw.now().await;
                return Err(Failure { error: error.into(), withdrawn: true });
            }
            Err(error) => {
                withdraw.disarm();
                return Err(Failure { error: error.into(), withdrawn: false });
            }
        };
        self.client.watch_session(session);
        match response {
            CommandResponse::LockGranted { token } => {
                withdraw.disarm();
                Ok((session, token))
            }
            CommandResponse::LockQueued { revision, .. } => {
                withdraw.request_mut().queued_revision = revision;
                let owner = Owner { session, actor: self.actor };
                let limit = match wait {
                    // The cluster ends the wait at its deadline; allow it a request timeout more to
                    // say so before giving up on it here.
                    LockWait::TimeoutMs(ms) => {
                        Some(started + Duration::from_millis(ms) + self.client.request_timeout())
                    }
                    LockWait::Try | LockWait::Forever => None,
                };
                match self.await_grant(owner, revision, limit).await {
                    Ok(token) => {
                        withdraw.disarm();
                        Ok((session, token))
                    }
                    Err(Ended::Decided(error)) => {
                        // The cluster ended the request (timed out, session gone): nothing to undo.
                        withdraw.disarm();
                        Err(Failure { error, withdrawn: false })
                    }
                    Err(Ended::Undecided(error)) => {
                        withdraw.now().await;
                        Err(Failure { error, withdrawn: true })
                    }
                }
            }
            other => {
                let error = ClientError::Protocol { reason: format!("unexpected answer to a lock request: {other:?}") };
                withdraw.now().await;
                Err(Failure { error: error.into(), withdrawn: true })
            }
        }
    }

    /// Asks the node this client talks to until the queued request is decided. Through an
    /// outage it keeps waiting as long as the session may live: the cluster decides the
    /// request, and the next answer reports it.
    async fn await_grant(
        &self,
        owner: Owner,
        queued_revision: u64,
        limit: Option<Instant>,
    ) -> Result<u64, Ended<LockError>> {
        let name = self.name;
        let secret = self.client.session_secret(owner.session);
        pending::await_outcome(
            self.client,
            limit,
            |max_wait_ms| Request::AwaitLock { name: name.to_string(), owner, queued_revision, max_wait_ms, secret },
            |response| match response {
                Response::LockAwait(LockAwaitOutcome::Granted { token }) => Verdict::Done(token),
                Response::LockAwait(LockAwaitOutcome::Pending) => Verdict::Pending,
                Response::LockAwait(LockAwaitOutcome::TimedOut) => {
                    Verdict::Ended(Ended::Decided(LockError::Timeout { name: name.to_string() }))
                }
                Response::LockAwait(LockAwaitOutcome::SessionEnded) => {
                    self.client.session_lost(owner.session);
                    Verdict::Ended(Ended::Decided(LockError::SessionExpired { session: owner.session }))
                }
                other => Verdict::Ended(Ended::Undecided(unexpected(&other).into())),
            },
            || self.client.session_valid(owner.session),
            |_| LockError::Timeout { name: name.to_string() },
        )
        .await
    }
}

/// Withdraws a lock request: removes the wait, or releases the hold if it was granted after
/// `queued_revision` without the caller learning of it.
struct LockWithdrawal {
    name: String,
    actor: u64,
    queued_revision: u64,
    upgrade: bool,
}

impl Cancellable for LockWithdrawal {
    fn command(&self) -> Command {
        Command::LockCancel {
            name: self.name.clone(),
            actor: self.actor,
            queued_revision: self.queued_revision,
            upgrade: self.upgrade,
        }
    }

    fn failure_note(&self) -> String {
        format!("could not withdraw a request for lock {:?}; the session's end frees it", self.name)
    }

    /// Gated like a background release, so that the owner's next request for the lock cannot
    /// be overtaken by the withdrawal.
    fn in_background(&self, client: &Client, withdrawal: impl std::future::Future<Output = ()> + Send + 'static) {
        settle_in_background(client, self.actor, &self.name, withdrawal);
    }
}
