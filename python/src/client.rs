//! `Client` (blocking) and `AsyncClient` (asyncio): connection settings, and the way in to
//! locks, queues and the cache.

use std::path::PathBuf;

use distsync::{ClientOptions, ClientTls, OwnerHandle};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::cache::{AsyncCache, Cache};
use crate::error::Failure;
use crate::lock::{AsyncLock, Lock, LockInfo, LockState};
use crate::queue::{AsyncQueue, Queue, QueueStats};
use crate::run::{here, inside_runtime, local, optional_seconds, seconds, spawn, wait, Local};

/// Reads the connection settings, falling back to `DISTSYNC_ENDPOINTS`, `DISTSYNC_CA`,
/// `DISTSYNC_CERT` and `DISTSYNC_KEY` as the command line does.
fn options(
    endpoints: Option<&Bound<'_, PyAny>>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    session_ttl: f64,
    request_timeout: f64,
    home: Option<String>,
) -> PyResult<ClientOptions> {
    let endpoints: Vec<String> = match endpoints {
        Some(given) if given.is_instance_of::<PyString>() => split(&given.extract::<String>()?),
        Some(given) => given.extract()?,
        None => split(&std::env::var("DISTSYNC_ENDPOINTS").map_err(|_| {
            Failure::Argument(
                "no endpoints: pass the nodes' addresses, e.g. [\"127.0.0.1:7101\"], or set DISTSYNC_ENDPOINTS".into(),
            )
        })?),
    };
    let ca = match ca.or_else(|| std::env::var_os("DISTSYNC_CA").map(PathBuf::from)) {
        Some(ca) => ca,
        None => {
            return Err(Failure::Argument(
                "no CA certificate: pass ca=\"path/to/ca.pem\" (tls/ca.pem of `distsync dev`) or set DISTSYNC_CA"
                    .into(),
            )
            .into())
        }
    };
    let tls = ClientTls::load(&ca, cert.as_deref(), key.as_deref()).map_err(Failure::from)?;
    let mut options = ClientOptions::new(endpoints, tls)
        .session_ttl(seconds(session_ttl, "session_ttl")?)
        .request_timeout(seconds(request_timeout, "request_timeout")?);
    if let Some(home) = home {
        options = options.home(home);
    }
    Ok(options)
}

fn split(endpoints: &str) -> Vec<String> {
    endpoints.split(',').map(str::trim).filter(|e| !e.is_empty()).map(String::from).collect()
}

/// A lock owner: locks taken with the same `Owner` belong to one actor, whichever thread or
/// task takes them. Made by `Client.owner()`; pass it as `owner=` to `Client.lock`.
///
/// By default a lock's owner is the calling thread (`Client`) or asyncio task (`AsyncClient`):
/// two threads exclude each other, and a thread's nested locks are its own. Use an explicit
/// owner when one logical actor spreads its work over several threads or tasks.
#[pyclass(module = "distsync", frozen, eq, hash, from_py_object)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub handle: OwnerHandle,
}

#[pymethods]
impl Owner {
    /// The actor id the cluster records (shown by `distsync lock show`).
    #[getter]
    fn actor(&self) -> u64 {
        self.handle.actor()
    }

    fn __repr__(&self) -> String {
        format!("Owner(actor={:#x})", self.handle.actor())
    }
}

/// A connection to a distsync cluster, for blocking code. Thread-safe: share one client between
/// all threads of a process.
///
/// Args:
///     endpoints: node addresses, a list of ``"host:port"`` or one comma-separated string
///         (default: ``$DISTSYNC_ENDPOINTS``). Any subset of the nodes will do; the client
///         finds the leader and follows it across failovers.
///     ca: path of the cluster CA certificate (default: ``$DISTSYNC_CA``).
///     cert: path of this client's certificate, which names its identity (from ``distsync
///         certs client``); give ``key`` with it. Default: ``$DISTSYNC_CERT``, else
///         ``client.pem`` beside the CA file (the admin identity of ``distsync certs init``).
///     key: path of the private key of ``cert`` (default: ``$DISTSYNC_KEY``, else
///         ``client-key.pem`` beside the CA file).
///     session_ttl: seconds the cluster keeps this client's session, and so its locks, after it
///         falls silent (crashed, cut off); 1 to 3600.
///     request_timeout: seconds one call may take across all its retries.
///     home: one of the endpoints to send all cache traffic to (default: each key's own node).
///
/// Raises:
///     InvalidArgument: unusable endpoints, CA, certificate or key file.
///     Unauthenticated: the cluster refused the certificate (or the client the nodes').
///     Unavailable: no node answered within ``request_timeout``.
///
/// Example::
///
///     client = distsync.Client(["127.0.0.1:7101", "127.0.0.1:7102"], ca="tls/ca.pem")
///     with client.lock("reports") as lock:
///         print("holding reports with fencing token", lock.token)
///
/// Blocking calls release the GIL, and Ctrl-C interrupts them with ``KeyboardInterrupt`` (a
/// lock request being waited on is withdrawn). A client belongs to the process that made it:
/// after ``fork()``, make a new one in the child (the old one raises ``ForkError`` there).
#[pyclass(module = "distsync", frozen)]
pub struct Client {
    client: Local<distsync::Client>,
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (endpoints=None, *, ca=None, cert=None, key=None, session_ttl=10.0, request_timeout=10.0, home=None))]
    // One parameter per keyword argument of the Python signature.
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        endpoints: Option<Bound<'_, PyAny>>,
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        session_ttl: f64,
        request_timeout: f64,
        home: Option<String>,
    ) -> PyResult<Self> {
        let options = options(endpoints.as_ref(), ca, cert, key, session_ttl, request_timeout, home)?;
        let client = wait(py, async move { Ok(distsync::Client::connect_with(options).await?) })?;
        Ok(Client { client: local(client) })
    }

    /// A lock on `name`; nothing is sent until it is acquired. Use it as a context manager
    /// (``with client.lock("x") as lock:``) or call ``acquire`` and ``release``.
    ///
    /// Args:
    ///     name: the lock's name (1 to 1024 bytes).
    ///     shared: take a shared hold (any number of shared holders, no exclusive one).
    ///     timeout: seconds to wait for the grant before raising ``LockTimeout``; ``None``
    ///         waits until granted.
    ///     owner: hold the lock as this ``Owner`` instead of the calling thread.
    #[pyo3(signature = (name, *, shared=false, timeout=None, owner=None))]
    fn lock(&self, name: String, shared: bool, timeout: Option<f64>, owner: Option<Owner>) -> PyResult<Lock> {
        let state = LockState::new(here(&self.client)?, name, shared, optional_seconds(timeout, "timeout")?, owner);
        Ok(Lock::new(state))
    }

    /// A new lock owner, distinct from every thread and other owner; see ``Owner``.
    fn owner(&self) -> PyResult<Owner> {
        Ok(Owner { handle: here(&self.client)?.owner() })
    }

    /// A durable FIFO queue; nothing is sent until it is used. A put or get creates it.
    ///
    /// Args:
    ///     name: the queue's name.
    ///     visibility: seconds a message got through this handle stays invisible to other
    ///         consumers unless acked (default: the queue's, 30 s unless created otherwise).
    #[pyo3(signature = (name, *, visibility=None))]
    fn queue(&self, name: String, visibility: Option<f64>) -> PyResult<Queue> {
        Ok(Queue::new(queue_handle(here(&self.client)?, name, visibility)?))
    }

    /// The coherent cache: values in Redis, copies on every node, linearizable reads.
    #[getter]
    fn cache(&self) -> PyResult<Cache> {
        Ok(Cache::new(here(&self.client)?.cache()))
    }

    /// The id of the client's current session, or ``None`` before the first call that needs
    /// one (a lock, a queue get).
    #[getter]
    fn session_id(&self) -> PyResult<Option<u64>> {
        Ok(here(&self.client)?.session_id())
    }

    /// Holders and waiters of lock `name` (read linearizably), or ``None`` when nobody holds
    /// or awaits it.
    fn lock_info(&self, py: Python<'_>, name: String) -> PyResult<Option<LockInfo>> {
        let client = here(&self.client)?.clone();
        wait(py, async move { Ok(client.lock_show(&name).await?.map(LockInfo::from)) })
    }

    /// Every queue (dead-letter queues included) with its counters.
    fn queues(&self, py: Python<'_>) -> PyResult<Vec<QueueStats>> {
        let client = here(&self.client)?.clone();
        wait(py, async move { Ok(client.queue_list().await?.into_iter().map(QueueStats::from).collect()) })
    }

    /// Ends the session now, releasing its locks and returning its deliveries at once instead
    /// of at the session TTL. Later calls open a new session.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let client = here(&self.client)?.clone();
        wait(py, async move {
            client.close().await;
            Ok(())
        })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exception))]
    fn __exit__(&self, py: Python<'_>, _exception: Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        match self.client.get() {
            Ok(client) => format!("distsync.Client(session={:?})", client.session_id()),
            Err(_) => "distsync.Client(<from the parent process>)".into(),
        }
    }
}

pub fn queue_handle(client: &distsync::Client, name: String, visibility: Option<f64>) -> PyResult<distsync::Queue> {
    let mut queue = client.queue(name);
    if let Some(visibility) = optional_seconds(visibility, "visibility")? {
        queue = queue.visibility(visibility);
    }
    Ok(queue)
}

/// A connection to a distsync cluster for asyncio code; the same as ``Client`` with coroutines.
/// Connect with ``async with AsyncClient(...) as client:`` (or ``await client.connect()``).
///
/// Takes the arguments of ``Client``. Locks are owned by the calling asyncio task: two tasks
/// exclude each other, a task's nested locks are its own. Cancelling a waiting call (a
/// ``wait_for`` timeout, task cancellation) withdraws what it waited for.
///
/// Example::
///
///     async with distsync.AsyncClient(["127.0.0.1:7101"], ca="tls/ca.pem") as client:
///         async with client.lock("reports") as lock:
///             print("holding reports with fencing token", lock.token)
#[pyclass(module = "distsync", frozen)]
pub struct AsyncClient {
    client: Local<distsync::Client>,
    /// `weakref.WeakKeyDictionary`: asyncio task → its `Owner`.
    owners: Py<PyAny>,
}

#[pymethods]
impl AsyncClient {
    #[new]
    #[pyo3(signature = (endpoints=None, *, ca=None, cert=None, key=None, session_ttl=10.0, request_timeout=10.0, home=None))]
    // One parameter per keyword argument of the Python signature.
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        endpoints: Option<Bound<'_, PyAny>>,
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        session_ttl: f64,
        request_timeout: f64,
        home: Option<String>,
    ) -> PyResult<Self> {
        let options = options(endpoints.as_ref(), ca, cert, key, session_ttl, request_timeout, home)?;
        let client = inside_runtime(|| Ok(distsync::Client::new_unconnected(options)?))?;
        let owners = py.import("weakref")?.getattr("WeakKeyDictionary")?.call0()?.unbind();
        Ok(AsyncClient { client: local(client), owners })
    }

    /// Waits until a node answers (proving addresses and certificates); returns the client.
    ///
    /// Raises:
    ///     Unauthenticated: the cluster refused the certificate (or the client the nodes').
    ///     Unavailable: no node answered within ``request_timeout``.
    fn connect<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let client = here(&slf.get().client)?.clone();
        let this = slf.clone().unbind();
        spawn(slf.py(), async move {
            client.ping().await?;
            Ok(this)
        })
    }

    fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::connect(slf)
    }

    #[pyo3(signature = (*_exception))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exception: Bound<'py, pyo3::types::PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let client = here(&self.client)?.clone();
        spawn(py, async move {
            client.close().await;
            Ok(false)
        })
    }

    /// A lock on `name`; ``async with client.lock("x") as lock:``, or ``await lock.acquire()``
    /// and ``await lock.release()``. Arguments as ``Client.lock``; the default owner is the
    /// asyncio task that acquires.
    #[pyo3(signature = (name, *, shared=false, timeout=None, owner=None))]
    fn lock(
        slf: &Bound<'_, Self>,
        name: String,
        shared: bool,
        timeout: Option<f64>,
        owner: Option<Owner>,
    ) -> PyResult<AsyncLock> {
        let this = slf.get();
        let state = LockState::new(here(&this.client)?, name, shared, optional_seconds(timeout, "timeout")?, owner);
        Ok(AsyncLock::new(state, slf.clone().unbind()))
    }

    /// A new lock owner, distinct from every task and other owner; see ``Owner``.
    fn owner(&self) -> PyResult<Owner> {
        Ok(Owner { handle: here(&self.client)?.owner() })
    }

    /// A durable FIFO queue; arguments as ``Client.queue``.
    #[pyo3(signature = (name, *, visibility=None))]
    fn queue(&self, name: String, visibility: Option<f64>) -> PyResult<AsyncQueue> {
        Ok(AsyncQueue::new(queue_handle(here(&self.client)?, name, visibility)?))
    }

    /// The coherent cache, with coroutines.
    #[getter]
    fn cache(&self) -> PyResult<AsyncCache> {
        Ok(AsyncCache::new(here(&self.client)?.cache()))
    }

    /// The id of the client's current session, or ``None`` before one was needed.
    #[getter]
    fn session_id(&self) -> PyResult<Option<u64>> {
        Ok(here(&self.client)?.session_id())
    }

    /// Holders and waiters of lock `name`, or ``None``; see ``Client.lock_info``.
    fn lock_info<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let client = here(&self.client)?.clone();
        spawn(py, async move { Ok(client.lock_show(&name).await?.map(LockInfo::from)) })
    }

    /// Every queue with its counters; see ``Client.queues``.
    fn queues<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = here(&self.client)?.clone();
        spawn(py, async move { Ok(client.queue_list().await?.into_iter().map(QueueStats::from).collect::<Vec<_>>()) })
    }

    /// Ends the session now; see ``Client.close``.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = here(&self.client)?.clone();
        spawn(py, async move {
            client.close().await;
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        match self.client.get() {
            Ok(client) => format!("distsync.AsyncClient(session={:?})", client.session_id()),
            Err(_) => "distsync.AsyncClient(<from the parent process>)".into(),
        }
    }
}

impl AsyncClient {
    /// The owner of a lock taken now without an explicit one: the running asyncio task (the
    /// same `Owner` for all its locks), or the thread outside any task.
    pub fn task_owner(&self, py: Python<'_>) -> PyResult<OwnerHandle> {
        let task = py.import("asyncio")?.call_method0("current_task")?;
        if task.is_none() {
            return Ok(OwnerHandle::current_thread());
        }
        let owners = self.owners.bind(py);
        let known = owners.call_method1("get", (&task,))?;
        if !known.is_none() {
            return Ok(known.extract::<Owner>()?.handle);
        }
        let owner = Owner { handle: here(&self.client)?.owner() };
        owners.set_item(&task, owner.clone())?;
        Ok(owner.handle)
    }
}
