//! `Lock` and `AsyncLock`: a lock name and options, and the holds taken through it, one per
//! owner (thread, asyncio task or explicit `Owner`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use distsync::wire::LockMode;
use distsync::{LockError, LockGuard, OwnerHandle};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::client::{AsyncClient, Owner};
use crate::error::Failure;
use crate::run::{here, local, spawn, wait, Local};

/// What `Lock` and `AsyncLock` share: the request, and the guards of the owners holding it.
pub struct LockState {
    client: distsync::Client,
    name: String,
    shared: bool,
    timeout: Option<Duration>,
    owner: Option<OwnerHandle>,
    /// Guards by owner actor; dropped (so released in the background) with the object.
    holds: Mutex<HashMap<u64, LockGuard>>,
}

impl LockState {
    pub fn new(
        client: &distsync::Client,
        name: String,
        shared: bool,
        timeout: Option<Duration>,
        owner: Option<Owner>,
    ) -> Local<LockState> {
        local(LockState {
            client: client.clone(),
            name,
            shared,
            timeout,
            owner: owner.map(|owner| owner.handle),
            holds: Mutex::new(HashMap::new()),
        })
    }

    fn holds(&self) -> std::sync::MutexGuard<'_, HashMap<u64, LockGuard>> {
        self.holds.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self, owner: OwnerHandle) -> Result<LockGuard, Failure> {
        self.holds().remove(&owner.actor()).ok_or_else(|| Failure::NotAcquired { name: self.name.clone() })
    }

    fn token(&self, owner: OwnerHandle) -> Option<u64> {
        self.holds().get(&owner.actor()).map(LockGuard::token)
    }

    fn held(&self, owner: OwnerHandle) -> bool {
        self.holds().get(&owner.actor()).is_some_and(LockGuard::is_held)
    }
}

async fn acquire(state: Local<LockState>, owner: OwnerHandle, timeout: Option<Duration>) -> Result<u64, Failure> {
    let state = here(&state)?;
    let mut request = state.client.lock(state.name.clone()).owner(&owner);
    if state.shared {
        request = request.shared();
    }
    if let Some(timeout) = timeout.or(state.timeout) {
        request = request.timeout(timeout);
    }
    let guard = request.acquire().await?;
    let token = guard.token();
    state.holds().insert(owner.actor(), guard);
    Ok(token)
}

async fn try_acquire(state: Local<LockState>, owner: OwnerHandle) -> Result<bool, Failure> {
    let state = here(&state)?;
    let mut request = state.client.lock(state.name.clone()).owner(&owner);
    if state.shared {
        request = request.shared();
    }
    match request.try_acquire().await {
        Ok(guard) => {
            state.holds().insert(owner.actor(), guard);
            Ok(true)
        }
        Err(LockError::WouldBlock { .. }) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

async fn release(state: Local<LockState>, owner: OwnerHandle) -> Result<(), Failure> {
    let guard = here(&state)?.take(owner)?;
    Ok(guard.release().await?)
}

async fn upgrade(state: Local<LockState>, owner: OwnerHandle) -> Result<u64, Failure> {
    let state = here(&state)?;
    let mut guard = state.take(owner)?;
    let outcome = guard.upgrade().await;
    let token = guard.token();
    state.holds().insert(owner.actor(), guard);
    outcome?;
    Ok(token)
}

fn mode(shared: bool) -> &'static str {
    if shared {
        "shared"
    } else {
        "exclusive"
    }
}

/// A distributed lock, made by ``Client.lock``. Exclusive by default, fair (first come, first
/// served), leased to the client's session, fenced.
///
/// Use it as a context manager, or call ``acquire`` and ``release``. Each thread that acquires
/// it holds its own hold (so a ``Lock`` object may be shared between threads like a
/// ``threading.Lock``); ``token`` and ``held`` answer for the calling thread.
///
/// Example::
///
///     with client.lock("reports", timeout=5.0) as lock:
///         storage.write(report, fencing_token=lock.token)
///
/// Pass ``token`` to every resource the lock protects and have it refuse tokens lower than the
/// highest it has seen: a holder that lost the lock without knowing it is then stopped there.
/// Dropping the object releases what it holds in the background.
#[pyclass(module = "distsync", frozen)]
pub struct Lock {
    state: Local<LockState>,
}

impl Lock {
    pub fn new(state: Local<LockState>) -> Self {
        Lock { state }
    }

    fn owner(&self) -> PyResult<OwnerHandle> {
        Ok(here(&self.state)?.owner.unwrap_or_else(OwnerHandle::current_thread))
    }
}

#[pymethods]
impl Lock {
    /// Takes the lock, waiting in line for up to `timeout` seconds (default: the lock's
    /// timeout; ``None`` there waits until granted). Returns the lock.
    ///
    /// Raises:
    ///     LockTimeout: not granted in time; nothing is held.
    ///     DeadlockError: waiting would close a cycle of owners (raised at once).
    ///     AlreadyHeld: this owner already holds or awaits this lock.
    ///     SessionExpired, Unavailable, InvalidArgument.
    #[pyo3(signature = (timeout=None))]
    fn acquire<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, Self>> {
        let this = slf.get();
        let (state, owner) = (this.state.clone(), this.owner()?);
        let timeout = crate::run::optional_seconds(timeout, "timeout")?;
        wait(slf.py(), acquire(state, owner, timeout))?;
        Ok(slf.clone())
    }

    /// Takes the lock only if it is free now and nobody waits for it; returns whether it did.
    fn try_acquire(&self, py: Python<'_>) -> PyResult<bool> {
        wait(py, try_acquire(self.state.clone(), self.owner()?))
    }

    /// Releases this thread's hold.
    ///
    /// Raises:
    ///     NotHeld: not held through this object, or already lost (whatever the lock protected
    ///         may have been changed since).
    ///     SessionExpired: the hold was lost with the session.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, release(self.state.clone(), self.owner()?))
    }

    /// Upgrades this thread's shared hold to exclusive, ahead of other waiters; ``token`` is
    /// then the new, higher fencing token.
    ///
    /// Raises:
    ///     DeadlockError: another shared holder is upgrading too.
    ///     LockTimeout: not upgraded within the lock's timeout (the shared hold is kept).
    ///     NotHeld, InvalidArgument (the hold is not shared).
    fn upgrade(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, upgrade(self.state.clone(), self.owner()?))?;
        Ok(())
    }

    /// The lock's name.
    #[getter]
    fn name(&self) -> PyResult<String> {
        Ok(here(&self.state)?.name.clone())
    }

    /// ``"exclusive"`` or ``"shared"`` (after ``upgrade``, the hold is exclusive).
    #[getter]
    fn mode(&self) -> PyResult<&'static str> {
        let state = here(&self.state)?;
        let upgraded = state.holds().get(&self.owner()?.actor()).is_some_and(|g| g.mode() == LockMode::Exclusive);
        Ok(mode(state.shared && !upgraded))
    }

    /// The fencing token of this thread's hold, or ``None`` when it holds nothing here.
    #[getter]
    fn token(&self) -> PyResult<Option<u64>> {
        Ok(here(&self.state)?.token(self.owner()?))
    }

    /// Whether this thread may still treat the lock as held: acquired here, not released, and
    /// the session's lease not run out. Once false, stop touching the protected resource.
    #[getter]
    fn held(&self) -> PyResult<bool> {
        Ok(here(&self.state)?.held(self.owner()?))
    }

    fn __enter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, Self>> {
        Self::acquire(slf, None)
    }

    /// Releases the hold. A failed release (the lock was lost) raises, unless the block is
    /// already raising.
    #[pyo3(signature = (*exception))]
    fn __exit__(&self, py: Python<'_>, exception: Bound<'_, PyTuple>) -> PyResult<bool> {
        let released = self.release(py);
        if exception.get_item(0).map(|kind| kind.is_none()).unwrap_or(true) {
            released?;
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        match self.state.get() {
            Ok(state) => format!("distsync.Lock({:?}, {})", state.name, mode(state.shared)),
            Err(_) => "distsync.Lock(<from the parent process>)".into(),
        }
    }
}

/// A distributed lock for asyncio, made by ``AsyncClient.lock``; as ``Lock``, with coroutines.
/// The owner is the asyncio task that acquires (unless ``owner=`` was given).
///
/// Example::
///
///     async with client.lock("reports") as lock:
///         await storage.write(report, fencing_token=lock.token)
#[pyclass(module = "distsync", frozen)]
pub struct AsyncLock {
    state: Local<LockState>,
    client: Py<AsyncClient>,
}

impl AsyncLock {
    pub fn new(state: Local<LockState>, client: Py<AsyncClient>) -> Self {
        AsyncLock { state, client }
    }

    fn owner(&self, py: Python<'_>) -> PyResult<OwnerHandle> {
        match here(&self.state)?.owner {
            Some(owner) => Ok(owner),
            None => self.client.get().task_owner(py),
        }
    }
}

#[pymethods]
impl AsyncLock {
    /// Takes the lock (see ``Lock.acquire``); the coroutine returns the lock. Cancelling it
    /// withdraws the request.
    #[pyo3(signature = (timeout=None))]
    fn acquire<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let (state, owner) = (this.state.clone(), this.owner(py)?);
        let timeout = crate::run::optional_seconds(timeout, "timeout")?;
        let lock = slf.clone().unbind();
        spawn(py, async move {
            acquire(state, owner, timeout).await?;
            Ok(lock)
        })
    }

    /// Takes the lock only if free now; the coroutine returns whether it did.
    fn try_acquire<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, try_acquire(self.state.clone(), self.owner(py)?))
    }

    /// Releases this task's hold; see ``Lock.release``.
    fn release<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, release(self.state.clone(), self.owner(py)?))
    }

    /// Upgrades this task's shared hold to exclusive; see ``Lock.upgrade``.
    fn upgrade<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let future = upgrade(self.state.clone(), self.owner(py)?);
        spawn(py, async move {
            future.await?;
            Ok(())
        })
    }

    /// The lock's name.
    #[getter]
    fn name(&self) -> PyResult<String> {
        Ok(here(&self.state)?.name.clone())
    }

    /// The fencing token of this task's hold, or ``None``.
    #[getter]
    fn token(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        Ok(here(&self.state)?.token(self.owner(py)?))
    }

    /// Whether this task may still treat the lock as held; see ``Lock.held``.
    #[getter]
    fn held(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(here(&self.state)?.held(self.owner(py)?))
    }

    fn __aenter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::acquire(slf, None)
    }

    #[pyo3(signature = (*exception))]
    fn __aexit__<'py>(&self, py: Python<'py>, exception: Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        let raising = exception.get_item(0).map(|kind| !kind.is_none()).unwrap_or(false);
        let released = release(self.state.clone(), self.owner(py)?);
        spawn(py, async move {
            match released.await {
                Err(_) if raising => Ok(false),
                Err(failure) => Err(failure),
                Ok(()) => Ok(false),
            }
        })
    }

    fn __repr__(&self) -> String {
        match self.state.get() {
            Ok(state) => format!("distsync.AsyncLock({:?}, {})", state.name, mode(state.shared)),
            Err(_) => "distsync.AsyncLock(<from the parent process>)".into(),
        }
    }
}

/// One holder of a lock, as reported by ``Client.lock_info``.
#[pyclass(module = "distsync", frozen, get_all)]
#[derive(Clone)]
pub struct LockHolder {
    /// The holder's session.
    session: u64,
    /// The holder's actor within the session (see ``Owner.actor``).
    actor: u64,
    /// ``"exclusive"`` or ``"shared"``.
    mode: &'static str,
    /// The hold's fencing token.
    token: u64,
    /// Leader time of the grant, ms since the Unix epoch.
    since_ms: u64,
}

/// One waiter for a lock, in the order waiters are served.
#[pyclass(module = "distsync", frozen, get_all)]
#[derive(Clone)]
pub struct LockWaiter {
    /// The waiter's session.
    session: u64,
    /// The waiter's actor within the session.
    actor: u64,
    /// ``"exclusive"`` or ``"shared"``.
    mode: &'static str,
    /// Whether it waits to upgrade a shared hold.
    upgrade: bool,
    /// Leader time at which the wait times out, ms since the Unix epoch; ``None`` for never.
    deadline_ms: Option<u64>,
}

/// Holders and waiters of one lock, from ``Client.lock_info``.
#[pyclass(module = "distsync", frozen, get_all)]
pub struct LockInfo {
    /// The lock.
    name: String,
    /// One exclusive holder, or any number of shared ones.
    holders: Vec<LockHolder>,
    /// Waiters in the order they are served.
    waiters: Vec<LockWaiter>,
}

impl From<distsync::LockInfo> for LockInfo {
    fn from(info: distsync::LockInfo) -> Self {
        LockInfo {
            name: info.name,
            holders: info
                .holders
                .into_iter()
                .map(|h| LockHolder {
                    session: h.owner.session,
                    actor: h.owner.actor,
                    mode: mode(h.mode == LockMode::Shared),
                    token: h.token,
                    since_ms: h.since_ms,
                })
                .collect(),
            waiters: info
                .waiters
                .into_iter()
                .map(|w| LockWaiter {
                    session: w.owner.session,
                    actor: w.owner.actor,
                    mode: mode(w.mode == LockMode::Shared),
                    upgrade: w.upgrade,
                    deadline_ms: w.deadline_ms,
                })
                .collect(),
        }
    }
}

#[pymethods]
impl LockInfo {
    fn __repr__(&self) -> String {
        format!("LockInfo(name={:?}, holders={}, waiters={})", self.name, self.holders.len(), self.waiters.len())
    }
}
