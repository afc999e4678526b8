//! Distributed locks: exclusive and shared, fair, leased to the client's session, fenced.
//!
//! ```no_run
//! # async fn example(client: distsync::Client) -> Result<(), distsync::LockError> {
//! use std::time::Duration;
//!
//! let guard = client.lock("reports").timeout(Duration::from_secs(5)).acquire().await?;
//! // Pass the fencing token to every resource the lock protects; see `LockGuard::token`.
//! println!("holding reports with token {}", guard.token());
//! guard.release().await?;
//! # Ok(()) }
//! ```
//!
//! ## Who owns a lock
//!
//! A lock is held by an **owner**: an actor inside the client's session. By default the actor is
//! the current tokio task (or, outside any task, the current thread), so two tasks sharing one
//! [`Client`] exclude each other exactly as two processes do, and an owner asking again for a lock
//! it holds gets [`LockError::AlreadyHeld`]. To tie locks taken from several tasks to one logical
//! actor, make a handle with [`Client::owner`] and pass it to [`LockBuilder::owner`].
//!
//! ## Leases
//!
//! A hold lasts as long as the session. If the client is cut off or stalls past the session TTL,
//! the cluster releases its locks. The client stops trusting a lock before the cluster can free
//! it: [`LockGuard::is_held`] turns false at the client's own lease deadline (the send time of the
//! last acknowledged keepalive plus the TTL, less a margin), and [`LockGuard::lost`] completes then
//! or when the cluster reports that the session ended, whichever comes first.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::client::{unexpected, Client};
use crate::error::{describe_cycle, ClientError, ErrorKind, LockRefusal, ServerError};
use crate::wire::{
    Command, CommandResponse, LockAwaitOutcome, LockInfo, LockMode, LockWait, Owner, Query, QueryResponse, Request,
    Response, SessionId, LOCK_WAIT_MS_MAX,
};

/// How long one [`Request::AwaitLock`] may stay open on a node before the client asks again.
const AWAIT_SLICE: Duration = Duration::from_secs(10);

/// What a lock call can fail with. Each variant says what to do.
#[derive(Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockError {
    /// The wait ended without a grant: the timeout passed. Nothing is held; retry later or with
    /// a longer timeout.
    #[error("lock {name:?} was not granted within the timeout")]
    Timeout {
        /// The lock.
        name: String,
    },
    /// [`LockBuilder::try_acquire`] found the lock taken. Nothing is held.
    #[error("lock {name:?} is held by another owner")]
    WouldBlock {
        /// The lock.
        name: String,
    },
    /// Waiting would have closed a cycle of owners waiting for each other; nothing changed.
    /// Release what you hold (usually a lock of the cycle) and retry, or take locks in one order.
    #[error("waiting for lock {name:?} would deadlock: {}", describe_cycle(cycle))]
    Deadlock {
        /// The lock requested.
        name: String,
        /// The cycle: each owner waits for the next through the named lock; the last one waits
        /// for the first.
        cycle: Vec<(Owner, String)>,
    },
    /// This owner already holds or awaits the lock (a guard for it is alive in this client). Use
    /// the hold you have, drop a lost guard first, or pass a distinct owner ([`Client::owner`]) if
    /// another actor should take it.
    #[error("lock {name:?} is already held or awaited by this owner")]
    AlreadyHeld {
        /// The lock.
        name: String,
    },
    /// The hold is gone (released, or lost with the session): whatever it protected may have been
    /// changed by a newer holder since.
    #[error("this owner no longer holds lock {name:?} with token {token}")]
    NotHeld {
        /// The lock.
        name: String,
        /// The token of the hold.
        token: u64,
    },
    /// An upgrade needs a shared hold.
    #[error("lock {name:?} is not held shared, so it cannot be upgraded")]
    NotShared {
        /// The lock.
        name: String,
    },
    /// The session expired, so every lock it held was released and every wait ended. The client
    /// opens a new session for later calls; redo the work that needed the lock.
    #[error("session {session} expired: its locks were released; acquire them again")]
    SessionExpired {
        /// The expired session.
        session: SessionId,
    },
    /// The cluster could not be reached or could not commit before the deadline. Nothing is held
    /// (a request that may have been queued is withdrawn); retry later.
    #[error("cluster unavailable: {reason}")]
    Unavailable {
        /// The last failure seen.
        reason: String,
    },
    /// The request is invalid (empty or oversized name, timeout beyond a day); fix it.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong.
        reason: String,
    },
    /// Any other client failure.
    #[error(transparent)]
    Client(ClientError),
}

impl LockError {
    /// What kind of failure this is: the classification the language bindings share.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LockError::Timeout { name } | LockError::WouldBlock { name } => {
                ErrorKind::LockTimeout { lock: name.clone() }
            }
            LockError::Deadlock { name, cycle } => ErrorKind::Deadlock { lock: name.clone(), cycle: cycle.clone() },
            LockError::AlreadyHeld { name } => ErrorKind::AlreadyHeld { lock: name.clone() },
            LockError::NotHeld { name, .. } => ErrorKind::NotHeld { lock: name.clone() },
            LockError::NotShared { .. } | LockError::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            LockError::SessionExpired { session } => ErrorKind::SessionExpired { session: *session },
            LockError::Unavailable { .. } => ErrorKind::Unavailable,
            LockError::Client(error) => error.kind(),
        }
    }
}

impl From<ClientError> for LockError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Unavailable { reason } => LockError::Unavailable { reason },
            ClientError::SessionExpired { session } => LockError::SessionExpired { session },
            ClientError::InvalidArgument { reason } => LockError::InvalidArgument { reason },
            ClientError::Server(ServerError::Lock(refusal)) => match refusal {
                LockRefusal::WouldBlock { name } => LockError::WouldBlock { name },
                LockRefusal::AlreadyHeld { name } => LockError::AlreadyHeld { name },
                LockRefusal::Deadlock { name, cycle } => LockError::Deadlock { name, cycle },
                LockRefusal::NotHeld { name, token } => LockError::NotHeld { name, token },
                LockRefusal::NotShared { name } => LockError::NotShared { name },
            },
            other => LockError::Client(other),
        }
    }
}

/// Actor ids carry their kind in the top two bits, so tasks, threads and handles never collide.
const ACTOR_TASK: u64 = 1 << 62;
const ACTOR_THREAD: u64 = 2 << 62;
const ACTOR_HANDLE: u64 = 3 << 62;
const ACTOR_MASK: u64 = (1 << 62) - 1;

static NEXT_HANDLE: AtomicU64 = AtomicU64::new(1);

fn hashed(value: impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish() & ACTOR_MASK
}

/// An explicit lock owner: locks taken with the same handle belong to one actor, whichever task
/// or thread takes them. Made by [`Client::owner`]; cheap to copy.
///
/// ```no_run
/// # async fn example(client: distsync::Client) -> Result<(), distsync::LockError> {
/// let me = client.owner();
/// let outer = client.lock("accounts").owner(&me).acquire().await?;
/// // Another task acting for the same actor: its locks join the same owner's wait-for edges.
/// let inner = client.lock("ledger").owner(&me).acquire().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerHandle {
    actor: u64,
}

impl OwnerHandle {
    pub(crate) fn new() -> Self {
        OwnerHandle { actor: ACTOR_HANDLE | (NEXT_HANDLE.fetch_add(1, Ordering::Relaxed) & ACTOR_MASK) }
    }

    /// The owner identity of the calling OS thread: what a lock taken on this thread without an
    /// explicit owner would use outside a tokio task. Bindings use it to make the calling thread
    /// the owner before they hand the call to the runtime.
    pub fn current_thread() -> Self {
        OwnerHandle { actor: ACTOR_THREAD | hashed(std::thread::current().id()) }
    }

    /// The owner of a lock taken here without an explicit owner: the current tokio task, or the
    /// current thread outside any task.
    pub fn current() -> Self {
        match tokio::task::try_id() {
            Some(task) => OwnerHandle { actor: ACTOR_TASK | hashed(task) },
            None => Self::current_thread(),
        }
    }

    /// The actor id sent to the cluster (shown by `distsync lock show`).
    pub fn actor(&self) -> u64 {
        self.actor
    }
}

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
        let owner = self.owner.unwrap_or_else(OwnerHandle::current);
        let client = self.client;
        crate::wire::validate_lock_name(&self.name).map_err(ClientError::from)?;
        settled(&client, owner.actor, &self.name).await;
        // Refused here as well as in the cluster: a withdrawn request releases the owner's hold
        // on the lock, which must then be this request's own.
        let key = (owner.actor, self.name.clone());
        if !client.inner_holds().lock().expect("holds lock").insert(key.clone()) {
            return Err(LockError::AlreadyHeld { name: self.name });
        }
        let command = Command::LockAcquire { name: self.name.clone(), actor: owner.actor, mode: self.mode, wait };
        let request = LockCall { client: &client, name: &self.name, actor: owner.actor, upgrade: false };
        let (session, token) = match request.run(command, wait).await {
            Ok(granted) => granted,
            Err(failure) => {
                client.inner_holds().lock().expect("holds lock").remove(&key);
                return Err(failure.error);
            }
        };
        Ok(LockGuard {
            client,
            name: self.name,
            owner: Owner { session, actor: owner.actor },
            mode: self.mode,
            token,
            timeout: self.timeout,
            released: false,
        })
    }
}

fn wait_for(timeout: Option<Duration>) -> Result<LockWait, LockError> {
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

/// Waits until background releases or cancellations of `actor` on `name` have finished.
async fn settled(client: &Client, actor: u64, name: &str) {
    let gate = client.inner_settling().lock().expect("settling lock").get(&(actor, name.to_string())).cloned();
    if let Some(gate) = gate {
        let _ = gate.lock().await;
    }
}

/// Runs `work` in the background, registered so that a later request of the same owner for the
/// same lock waits for it.
fn settle_in_background<F>(client: &Client, actor: u64, name: &str, work: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(lock = name, "no async runtime to release the lock in; it is freed when the session ends");
        return;
    };
    let key = (actor, name.to_string());
    let gate = Arc::new(tokio::sync::Mutex::new(()));
    let held = gate.clone().try_lock_owned().expect("a new mutex is free");
    let previous = client.inner_settling().lock().expect("settling lock").insert(key.clone(), gate.clone());
    let client = client.clone();
    runtime.spawn(async move {
        if let Some(previous) = previous {
            let _ = previous.lock().await;
        }
        work.await;
        drop(held);
        let mut settling = client.inner_settling().lock().expect("settling lock");
        if settling.get(&key).is_some_and(|current| Arc::ptr_eq(current, &gate)) {
            settling.remove(&key);
        }
    });
}

/// One acquire or upgrade in flight: sends the command, follows a queued request to its end,
/// and withdraws it if the caller stops waiting.
struct LockCall<'a> {
    client: &'a Client,
    name: &'a str,
    actor: u64,
    upgrade: bool,
}

impl LockCall<'_> {
    async fn run(&self, command: Command, wait: LockWait) -> Result<(SessionId, u64), Failure> {
        let started = Instant::now();
        let deadline = started + self.client.request_timeout();
        // Until the command's outcome is known it may be queued or granted in the cluster: if the
        // caller stops waiting (drops this future) or the outcome is lost, withdraw it.
        let mut withdraw = Withdraw::new(self.client, self.name, self.actor, 0, self.upgrade);
        let (session, response) = match self.client.write_in_session(command, deadline).await {
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
                withdraw.queued_revision = revision;
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

    /// Asks the node this client talks to until the queued request is decided.
    async fn await_grant(&self, owner: Owner, queued_revision: u64, limit: Option<Instant>) -> Result<u64, Ended> {
        loop {
            let now = Instant::now();
            let slice = match limit {
                Some(limit) if now >= limit => {
                    return Err(Ended::Undecided(LockError::Timeout { name: self.name.to_string() }))
                }
                Some(limit) => (limit - now).min(AWAIT_SLICE),
                None => AWAIT_SLICE,
            };
            let request = Request::AwaitLock {
                name: self.name.to_string(),
                owner,
                queued_revision,
                max_wait_ms: slice.as_millis() as u64,
            };
            let attempt = slice + self.client.attempt_timeout();
            let answer = self.client.call_with(&request, now + slice + self.client.request_timeout(), attempt).await;
            match answer {
                Ok(Response::LockAwait(LockAwaitOutcome::Granted { token })) => return Ok(token),
                Ok(Response::LockAwait(LockAwaitOutcome::Pending)) => {}
                Ok(Response::LockAwait(LockAwaitOutcome::TimedOut)) => {
                    return Err(Ended::Decided(LockError::Timeout { name: self.name.to_string() }))
                }
                Ok(Response::LockAwait(LockAwaitOutcome::SessionEnded)) => {
                    self.client.session_lost(owner.session);
                    return Err(Ended::Decided(LockError::SessionExpired { session: owner.session }));
                }
                Ok(other) => return Err(Ended::Undecided(unexpected(&other).into())),
                // Keep waiting through an outage as long as the session may live; the cluster
                // decides the request, and the next answer reports it.
                Err(ClientError::Unavailable { reason }) => {
                    if !self.client.session_valid(owner.session) {
                        return Err(Ended::Undecided(LockError::Unavailable { reason }));
                    }
                }
                Err(error) => return Err(Ended::Undecided(error.into())),
            }
        }
    }
}

/// A failed acquire or upgrade, and whether the request was withdrawn (which, for an upgrade,
/// released the hold).
struct Failure {
    error: LockError,
    withdrawn: bool,
}

/// How a queued request ended without a grant: decided by the cluster, or given up by the client.
enum Ended {
    Decided(LockError),
    Undecided(LockError),
}

/// Withdraws a lock request on drop unless disarmed: in the background when dropped, or awaited
/// with [`Withdraw::now`].
struct Withdraw {
    client: Option<Client>,
    name: String,
    actor: u64,
    queued_revision: u64,
    upgrade: bool,
}

impl Withdraw {
    fn new(client: &Client, name: &str, actor: u64, queued_revision: u64, upgrade: bool) -> Self {
        Withdraw { client: Some(client.clone()), name: name.to_string(), actor, queued_revision, upgrade }
    }

    fn disarm(&mut self) {
        self.client = None;
    }

    fn command(&self) -> Command {
        Command::LockCancel {
            name: self.name.clone(),
            actor: self.actor,
            queued_revision: self.queued_revision,
            upgrade: self.upgrade,
        }
    }

    async fn now(&mut self) {
        if let Some(client) = self.client.take() {
            let deadline = Instant::now() + client.request_timeout();
            if let Err(error) = client.write_in_session(self.command(), deadline).await {
                tracing::warn!(lock = %self.name, %error, "could not withdraw a lock request; the session's end frees it");
            }
        }
    }
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        let command = self.command();
        let name = self.name.clone();
        let background = client.clone();
        settle_in_background(&client, self.actor, &self.name, async move {
            let deadline = Instant::now() + background.request_timeout();
            if let Err(error) = background.write_in_session(command, deadline).await {
                tracing::warn!(lock = %name, %error, "could not withdraw a lock request; the session's end frees it");
            }
        });
    }
}

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
    /// (whatever it protected may have been changed since); [`LockError::Unavailable`].
    pub async fn release(mut self) -> Result<(), LockError> {
        self.forget();
        let command = Command::LockRelease { name: self.name.clone(), actor: self.owner.actor, token: self.token };
        let deadline = Instant::now() + self.client.request_timeout();
        match self.client.write_in_session(command, deadline).await {
            Ok((session, CommandResponse::LockReleased)) if session == self.owner.session => Ok(()),
            Ok((_, CommandResponse::LockReleased)) => Err(LockError::SessionExpired { session: self.owner.session }),
            Ok((_, other)) => {
                Err(ClientError::Protocol { reason: format!("unexpected answer to a release: {other:?}") }.into())
            }
            Err(ClientError::Server(ServerError::Lock(LockRefusal::NotHeld { .. })))
                if self.owner.session != self.client.session_id().unwrap_or(self.owner.session) =>
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
            self.client.inner_holds().lock().expect("holds lock").remove(&(self.owner.actor, self.name.clone()));
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.forget();
        if self.client.session_id() != Some(self.owner.session) {
            // The session was closed or replaced, and the hold ended with it: a release now
            // would only open a new session to be told so.
            return;
        }
        let command = Command::LockRelease { name: self.name.clone(), actor: self.owner.actor, token: self.token };
        let client = self.client.clone();
        let name = self.name.clone();
        settle_in_background(&self.client, self.owner.actor, &self.name, async move {
            let deadline = Instant::now() + client.request_timeout();
            match client.write_in_session(command, deadline).await {
                Ok(_) | Err(ClientError::SessionExpired { .. }) => {}
                Err(error) => tracing::warn!(lock = %name, %error, "background release failed"),
            }
        });
    }
}

impl Client {
    /// Every lock held or awaited, with holders and waiters, read linearizably.
    ///
    /// # Errors
    ///
    /// [`ClientError::Unavailable`] when the cluster cannot answer in time.
    pub async fn lock_list(&self) -> Result<Vec<LockInfo>, ClientError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            match self.read(Query::LockList { after }).await? {
                QueryResponse::LockList { locks, more } => {
                    after = locks.last().map(|lock| lock.name.clone());
                    all.extend(locks);
                    if !more || after.is_none() {
                        return Ok(all);
                    }
                }
                other => return Err(ClientError::Protocol { reason: format!("unexpected answer: {other:?}") }),
            }
        }
    }

    /// One lock's holders and waiters (in the order they are served), or `None` when nobody
    /// holds or awaits it.
    ///
    /// # Errors
    ///
    /// [`ClientError::Unavailable`], [`ClientError::InvalidArgument`] for a bad name.
    pub async fn lock_show(&self, name: &str) -> Result<Option<LockInfo>, ClientError> {
        crate::wire::validate_lock_name(name)?;
        match self.read(Query::LockShow { name: name.to_string() }).await? {
            QueryResponse::LockShow { lock } => Ok(lock),
            other => Err(ClientError::Protocol { reason: format!("unexpected answer: {other:?}") }),
        }
    }
}
