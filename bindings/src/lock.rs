//! Locks: [`Lock`], a held lock with its fencing token, and what `lockInfo` shows.

use std::future::Future;
use std::sync::{Arc, Mutex};

use distsync::wire::LockMode;
use distsync::{LockGuard, OwnerHandle};

use crate::client::Owner;
use crate::error::{DistsyncError, Outcome};
use crate::run::{block_on, drop_on_runtime, on_runtime};

/// Who holds and who awaits a lock, from `Client.lockInfo`.
#[derive(Debug, uniffi::Record)]
pub struct LockInfo {
    pub name: String,
    /// One exclusive holder, or any number of shared ones.
    pub holders: Vec<LockHolder>,
    /// In the order they will be served.
    pub waiters: Vec<LockWaiter>,
}

/// A holder of a lock: the owner `(session, actor)` and its fencing token.
#[derive(Debug, uniffi::Record)]
pub struct LockHolder {
    pub session: u64,
    pub actor: u64,
    pub shared: bool,
    pub token: u64,
}

/// A waiter for a lock: the owner `(session, actor)`; `upgrade` when a shared holder waits to
/// become exclusive.
#[derive(Debug, uniffi::Record)]
pub struct LockWaiter {
    pub session: u64,
    pub actor: u64,
    pub shared: bool,
    pub upgrade: bool,
}

/// A held lock. Pass `token()` with every write to the protected resource, and have the
/// resource refuse a token lower than the highest it has seen.
#[derive(uniffi::Object)]
pub struct Lock {
    name: String,
    owner: OwnerHandle,
    hold: Mutex<Hold>,
}

struct Hold {
    guard: Option<LockGuard>,
    token: u64,
    shared: bool,
}

impl Lock {
    pub(crate) fn new(guard: LockGuard, owner: OwnerHandle) -> Arc<Self> {
        let hold = Hold { token: guard.token(), shared: guard.mode() == LockMode::Shared, guard: None };
        let name = guard.name().to_string();
        Arc::new(Lock { name, owner, hold: Mutex::new(Hold { guard: Some(guard), ..hold }) })
    }

    fn take(&self) -> Outcome<LockGuard> {
        self.hold.lock().expect("lock hold").guard.take().ok_or_else(|| DistsyncError::NotHeld {
            reason: format!("lock {:?} was already released through this object; acquire it again", self.name),
            lock: self.name.clone(),
        })
    }

    fn release_future(&self) -> impl Future<Output = Outcome<()>> + Send + 'static {
        let guard = self.take();
        async move { Ok(guard?.release().await?) }
    }

    async fn upgrade_future(self: Arc<Self>) -> Outcome<()> {
        let mut guard = self.take()?;
        let outcome = guard.upgrade().await;
        let mut hold = self.hold.lock().expect("lock hold");
        hold.token = guard.token();
        hold.shared = guard.mode() == LockMode::Shared;
        hold.guard = Some(guard);
        Ok(outcome?)
    }
}

#[uniffi::export]
impl Lock {
    /// The lock's name.
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// The fencing token: strictly increasing per lock across holders and leader changes.
    pub fn token(&self) -> u64 {
        self.hold.lock().expect("lock hold").token
    }

    /// Whether this is a shared hold.
    pub fn is_shared(&self) -> bool {
        self.hold.lock().expect("lock hold").shared
    }

    /// Whether the lock may still be treated as held (not released, session lease current).
    pub fn is_held(&self) -> bool {
        self.hold.lock().expect("lock hold").guard.as_ref().is_some_and(LockGuard::is_held)
    }

    /// The owner holding it; pass it to nested `lock` calls of the same actor.
    pub fn owner(&self) -> Arc<Owner> {
        Arc::new(Owner { handle: self.owner })
    }

    /// Releases the lock. Throws `NotHeld` or `SessionExpired` when the hold was already lost
    /// or released (whatever it protected may have been changed since), `Unavailable`.
    pub async fn release(&self) -> Outcome<()> {
        on_runtime(self.release_future()).await
    }

    /// `release`, waiting on the calling thread.
    pub fn release_blocking(&self) -> Outcome<()> {
        block_on(self.release_future())
    }

    /// Upgrades a shared hold to exclusive; `token()` is then the new, higher token. Throws
    /// `Deadlock` when another shared holder upgrades too, `LockTimeout` (the shared hold is
    /// kept), `InvalidArgument` when not shared.
    pub async fn upgrade(self: Arc<Self>) -> Outcome<()> {
        on_runtime(self.upgrade_future()).await
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        drop_on_runtime(self.hold.get_mut().expect("lock hold").guard.take());
    }
}
