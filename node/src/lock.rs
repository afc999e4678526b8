//! `Lock`: a held lock, and `LockInfo`, what `lock show` sees.

use std::sync::{Arc, Mutex};

use distsync::wire::LockMode;
use distsync::{LockGuard, OwnerHandle};
use napi::bindgen_prelude::{BigInt, PromiseRaw};
use napi::Env;
use napi_derive::napi;

use crate::client::Owner;
use crate::error::Failure;
use crate::run::{number, promise, Shared};

/// The hold behind a `Lock`: the guard while held, and what the getters show.
struct Hold {
    guard: Option<LockGuard>,
    token: u64,
    mode: LockMode,
    /// `release()` was called.
    released: bool,
}

/// A held lock, from `client.lock()` or handed to a `withLock` callback.
///
/// Pass `token` with every write to the protected resource, and have the resource refuse a
/// token lower than the highest it has seen: a holder that lost the lock without knowing it (a
/// long pause, a partition) is then stopped at the resource.
///
/// ```js
/// const lock = await client.lock('x')
/// try { await store.write(data, { fencingToken: lock.token }) } finally { await lock.release() }
/// ```
///
/// A `Lock` garbage-collected while held is released in the background.
#[napi]
pub struct Lock {
    shared: Shared,
    name: String,
    owner: OwnerHandle,
    hold: Arc<Mutex<Hold>>,
}

impl Lock {
    /// `guard`, held by `owner`.
    pub fn new(shared: Shared, guard: LockGuard, owner: OwnerHandle) -> Self {
        debug_assert_eq!(guard.owner().actor, owner.actor(), "the guard is held by another owner");
        let name = guard.name().to_string();
        let hold = Hold { token: guard.token(), mode: guard.mode(), guard: Some(guard), released: false };
        Lock { shared, name, owner, hold: Arc::new(Mutex::new(hold)) }
    }

    fn hold(&self) -> std::sync::MutexGuard<'_, Hold> {
        self.hold.lock().expect("lock hold")
    }

    /// Takes the guard out for a release or an upgrade.
    fn take(&self) -> Result<LockGuard, Failure> {
        let mut hold = self.hold();
        match hold.guard.take() {
            Some(guard) => Ok(guard),
            None if hold.released => Err(Failure::Released { name: self.name.clone() }),
            None => Err(Failure::Argument(format!("lock {:?} is being upgraded; wait for that first", self.name))),
        }
    }
}

#[napi]
impl Lock {
    /// The lock's name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// The fencing token of this hold: strictly increasing per lock across holders and leader
    /// changes (an `upgrade()` gets a new one).
    #[napi(getter)]
    pub fn token(&self) -> f64 {
        number(self.hold().token)
    }

    /// `'exclusive'` or `'shared'`.
    #[napi(getter, ts_return_type = "'exclusive' | 'shared'")]
    pub fn mode(&self) -> &'static str {
        match self.hold().mode {
            LockMode::Exclusive => "exclusive",
            LockMode::Shared => "shared",
        }
    }

    /// Whether the lock may still be treated as held: not released, and the session's lease
    /// is current on this client's clock. Once false, stop touching the protected resource.
    #[napi(getter)]
    pub fn held(&self) -> bool {
        self.hold().guard.as_ref().is_some_and(LockGuard::is_held)
    }

    /// Whether `release()` was called.
    #[napi(getter)]
    pub fn released(&self) -> bool {
        self.hold().released
    }

    /// The owner holding it; pass it as `{ owner }` to tie nested locks to this one.
    #[napi(getter)]
    pub fn owner(&self) -> Owner {
        Owner { handle: self.owner }
    }

    /// Releases the lock.
    ///
    /// Rejects with `NOT_HELD` or `SESSION_EXPIRED` when the hold was already lost (whatever it
    /// protected may have been changed since) or released, and `UNAVAILABLE`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn release<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let guard = self.take();
        if guard.is_ok() {
            self.hold().released = true;
        }
        promise(env, &self.shared, async move { Ok(guard?.release().await?) })
    }

    /// Upgrades a shared hold to exclusive, waiting (up to the lock's `timeoutMs`, if one was
    /// given) for the other shared holders to leave; it goes ahead of other waiters. `token`
    /// is then the new, higher fencing token.
    ///
    /// Rejects with `DEADLOCK` when another shared holder is upgrading too, `LOCK_TIMEOUT` (the
    /// shared hold is kept), `INVALID_ARGUMENT` (not shared), `SESSION_EXPIRED`, `UNAVAILABLE`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn upgrade<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let (guard, hold) = (self.take(), self.hold.clone());
        promise(env, &self.shared, async move {
            let mut guard = guard?;
            let outcome = guard.upgrade().await;
            let mut hold = hold.lock().expect("lock hold");
            hold.token = guard.token();
            hold.mode = guard.mode();
            hold.guard = Some(guard);
            Ok(outcome?)
        })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let guard = self.hold().guard.take();
        if let Some(guard) = guard {
            self.shared.drop_inside(guard);
        }
    }
}

/// A holder of a lock, as `lockInfo` reports it.
#[napi(object)]
pub struct LockHolder {
    pub session: f64,
    pub actor: BigInt,
    #[napi(ts_type = "'exclusive' | 'shared'")]
    pub mode: String,
    pub token: f64,
    /// Leader time of the grant, ms since the Unix epoch.
    pub since_ms: f64,
}

/// A waiter for a lock, in the order waiters are served.
#[napi(object)]
pub struct LockWaiter {
    pub session: f64,
    pub actor: BigInt,
    #[napi(ts_type = "'exclusive' | 'shared'")]
    pub mode: String,
    /// Whether this is an upgrade of a shared hold the owner keeps while waiting.
    pub upgrade: bool,
    /// When the wait ends without a grant (leader time, ms since the Unix epoch), if ever.
    pub deadline_ms: Option<f64>,
    /// Leader time the wait began.
    pub since_ms: f64,
}

/// A lock's holders and waiters.
#[napi(object)]
pub struct LockInfo {
    pub name: String,
    pub holders: Vec<LockHolder>,
    pub waiters: Vec<LockWaiter>,
}

fn mode_name(mode: LockMode) -> String {
    match mode {
        LockMode::Exclusive => "exclusive".into(),
        LockMode::Shared => "shared".into(),
    }
}

impl From<distsync::wire::LockInfo> for LockInfo {
    fn from(info: distsync::wire::LockInfo) -> Self {
        LockInfo {
            name: info.name,
            holders: info
                .holders
                .into_iter()
                .map(|holder| LockHolder {
                    session: number(holder.owner.session),
                    actor: BigInt::from(holder.owner.actor),
                    mode: mode_name(holder.mode),
                    token: number(holder.token),
                    since_ms: number(holder.since_ms),
                })
                .collect(),
            waiters: info
                .waiters
                .into_iter()
                .map(|waiter| LockWaiter {
                    session: number(waiter.owner.session),
                    actor: BigInt::from(waiter.owner.actor),
                    mode: mode_name(waiter.mode),
                    upgrade: waiter.upgrade,
                    deadline_ms: waiter.deadline_ms.map(number),
                    since_ms: number(waiter.since_ms),
                })
                .collect(),
        }
    }
}
