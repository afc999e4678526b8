//! [`LockBuilder`]: a lock request being built, then acquired.

use std::time::Duration;

use super::request::LockCall;
use super::{LockError, LockGuard, OwnerHandle};
use crate::client::Client;
use crate::error::ClientError;
use crate::wire::{Command, LockMode, LockWait, Owner, LOCK_WAIT_MS_MAX};

/// A lock request being built: `client.lock("name")`, then options, then
/// [`acquire`](LockBuilder::acquire) or [`try_acquire`](LockBuilder::try_acquire).
///
/// ```no_run
/// # async fn example(client: distsync::Client) -> Result<(), distsync::LockError> {
/// use std::time::Duration;
///
/// let reader = client.lock("config").shared().timeout(Duration::from_secs(2)).acquire().await?;
/// match client.lock("leader-election").try_acquire().await {
///     Ok(guard) => println!("leading with token {}", guard.token()),
///     Err(distsync::LockError::WouldBlock { .. }) => println!("someone else leads"),
///     Err(other) => return Err(other),
/// }
/// # Ok(()) }
/// ```
#[must_use = "a lock request does nothing until acquired"]
pub struct LockBuilder {
    client: Client,
    name: String,
    mode: LockMode,
    timeout: Option<Duration>,
    owner: Option<OwnerHandle>,
}

impl LockBuilder {
    pub(crate) fn new(client: Client, name: String) -> Self {
        LockBuilder { client, name, mode: LockMode::Exclusive, timeout: None, owner: None }
    }

    /// Ask for a shared hold: any number of shared holders, no exclusive one.
    pub fn shared(mut self) -> Self {
        self.mode = LockMode::Shared;
        self
    }

    /// Ask for an exclusive hold (the default).
    pub fn exclusive(mut self) -> Self {
        self.mode = LockMode::Exclusive;
        self
    }

    /// Wait at most this long for the grant, then fail with [`LockError::Timeout`]. Without a
    /// timeout, [`acquire`](LockBuilder::acquire) waits until granted or the session ends. The
    /// timeout is counted by the cluster from when the request is queued.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Hold the lock as this owner instead of the current task or thread.
    pub fn owner(mut self, owner: &OwnerHandle) -> Self {
        self.owner = Some(*owner);
        self
    }

    /// Takes the lock if it is free right now (and nobody waits for it), else fails at once with
    /// [`LockError::WouldBlock`].
    ///
    /// # Errors
    ///
    /// [`LockError::WouldBlock`], [`LockError::AlreadyHeld`], [`LockError::Unavailable`],
    /// [`LockError::SessionExpired`], [`LockError::InvalidArgument`].
    pub async fn try_acquire(self) -> Result<LockGuard, LockError> {
        self.acquire_with(LockWait::Try).await
    }

    /// Takes the lock, waiting in line (first come, first served) up to the timeout if one was
    /// set. The grant is pushed by the node this client talks to as soon as it is applied there.
    ///
    /// Dropping the returned future before it completes withdraws the request in the background,
    /// and releases the lock if it was granted meanwhile.
    ///
    /// # Errors
    ///
    /// [`LockError::Timeout`], [`LockError::Deadlock`] (at once, with the cycle),
    /// [`LockError::AlreadyHeld`], [`LockError::SessionExpired`], [`LockError::Unavailable`],
    /// [`LockError::InvalidArgument`].
    pub async fn acquire(self) -> Result<LockGuard, LockError> {
        let wait = wait_for(self.timeout)?;
        self.acquire_with(wait).await
    }

    async fn acquire_with(self, wait: LockWait) -> Result<LockGuard, LockError> {
        let actor = self.owner.unwrap_or_else(OwnerHandle::current).actor();
        let client = self.client;
        crate::wire::validate_lock_name(&self.name).map_err(ClientError::from)?;
        client.lock_state().settled(actor, &self.name).await;
        // Refused here as well as in the cluster: a withdrawn request releases the owner's hold
        // on the lock, which must then be this request's own.
        if !client.lock_state().claim(actor, &self.name) {
            return Err(LockError::AlreadyHeld { name: self.name });
        }
        let command = Command::LockAcquire { name: self.name.clone(), actor, mode: self.mode, wait };
        let request = LockCall { client: &client, name: &self.name, actor, upgrade: false };
        let (session, token) = match request.run(command, wait).await {
            Ok(granted) => granted,
            Err(failure) => {
                client.lock_state().unclaim(actor, &self.name);
                return Err(failure.error);
            }
        };
        let owner = Owner { session, actor };
        Ok(LockGuard::new(client, self.name, owner, self.mode, token, self.timeout))
    }
}

/// The wait of a request with `timeout`: forever without one.
pub(super) fn wait_for(timeout: Option<Duration>) -> Result<LockWait, LockError> {
    match timeout {
        None => Ok(LockWait::Forever),
        Some(timeout) => {
            let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            if ms > LOCK_WAIT_MS_MAX {
                return Err(LockError::InvalidArgument {
                    reason: format!("lock timeout {timeout:?} exceeds a day; wait without a timeout instead"),
                });
            }
            Ok(LockWait::TimeoutMs(ms))
        }
    }
}
