//! The exception tree: every failure of the Rust client becomes a subclass of `distsync.Error`,
//! carrying the Rust error's message (which says what to do) and its fields as attributes.

use distsync::{ClientError, ErrorKind, LockError, QueueError};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

pyo3::create_exception!(
    distsync,
    Error,
    PyException,
    "Base class of every distsync failure. `str(error)` says what happened and what to do."
);
pyo3::create_exception!(
    distsync,
    LockTimeout,
    Error,
    "The lock was not granted within the timeout; nothing is held. Attribute: `name`."
);
pyo3::create_exception!(
    distsync,
    DeadlockError,
    Error,
    "Waiting for the lock would have closed a cycle of owners waiting for each other; nothing \
changed. Release a lock of the cycle and retry, or take locks in one order. Attributes: `name`, \
and `cycle`, a list of `(session, actor, lock)`: each owner waits for the next through `lock`, \
the last for the first."
);
pyo3::create_exception!(
    distsync,
    AlreadyHeld,
    Error,
    "This owner (thread, asyncio task or explicit Owner) already holds or awaits the lock. \
Attribute: `name`."
);
pyo3::create_exception!(
    distsync,
    NotHeld,
    Error,
    "The lock is not held by this owner: never acquired, already released, or lost with the \
session. Whatever it protected may have been changed since. Attribute: `name`."
);
pyo3::create_exception!(
    distsync,
    SessionExpired,
    Error,
    "The client's session expired (it was silent past its TTL), so the cluster released its \
locks and returned its deliveries. The client opens a new session for later calls; redo the work \
that depended on the old one. Attribute: `session`."
);
pyo3::create_exception!(
    distsync,
    Unavailable,
    Error,
    "No node could serve the request before the deadline (no leader, a partition, nodes down). \
Safe to retry; a queue put is made safe to retry by a `dedup_id`."
);
pyo3::create_exception!(
    distsync,
    InvalidArgument,
    Error,
    "The request is invalid (empty or oversized name, key or value, out-of-range option, unusable \
configuration); fix it, retrying will not help."
);
pyo3::create_exception!(
    distsync,
    NoSuchQueue,
    Error,
    "The queue does not exist (ack, nack, stats and delete do not create one). Attribute: `queue`."
);
pyo3::create_exception!(
    distsync,
    StaleDelivery,
    Error,
    "The delivery is no longer current (acked, nacked, timed out, or its session ended): the \
message was or will be delivered again. Do not publish its effects. Attributes: `queue`, `tag`."
);
pyo3::create_exception!(
    distsync,
    LimitReached,
    Error,
    "The cluster is at one of its limits (queued bytes, queues, pending cache write-backs); \
nothing was changed. Consume, delete or wait, then retry. Attributes: `what` (the limit's name \
in docs/limits.md, `QUEUED_BYTES_MAX`), `limit` (its value, bytes or a count), `queue` (the full \
queue, or None)."
);
pyo3::create_exception!(
    distsync,
    TooLarge,
    InvalidArgument,
    "The request exceeds a size limit of the cluster (one write is at most 4 MiB; see \
docs/limits.md); nothing was changed. Split it into smaller requests. Attributes: `what` \
(`write`, `frame`), `bytes` and `limit`."
);
pyo3::create_exception!(
    distsync,
    ForkError,
    Error,
    "The client was created in another process that then forked; its connections stayed in the \
parent. Create a new client in the child process."
);

pyo3::create_exception!(
    distsync,
    PermissionDenied,
    Error,
    "This client's identity may not do this: it lacks a grant, it was disabled, or the request \
named a session that is not its own; nothing was changed. Ask an admin for the grant the message \
names (`distsync acl grant`), or use another identity. Attributes: `identity` (empty when the node \
did not say), `resource` (`lock:team-b/x`, `admin`, `session:7`, `identity:alice`) and `needed` \
(`read`, `write`, `admin`, `owner` or `enabled`)."
);
pyo3::create_exception!(
    distsync,
    Unauthenticated,
    Error,
    "The TLS handshake was refused over certificates: the cluster refused this client's (none \
given, not signed by its CA, expired, not a client certificate), or the client the nodes' (not \
signed by the CA in `ca`). Retrying will not help: pass `cert=` and `key=` issued by \
`distsync certs client`, or the right `ca=`."
);

/// A failure of the Rust client, converted to an exception only once attached to Python.
#[derive(Debug)]
pub enum Failure {
    Client(ClientError),
    Lock(LockError),
    Queue(QueueError),
    /// `release`, `upgrade` or `token` of a lock this owner does not hold through the object.
    NotAcquired {
        name: String,
    },
    /// A Python-side argument problem found before calling the client.
    Argument(String),
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        Failure::Client(error)
    }
}

impl From<LockError> for Failure {
    fn from(error: LockError) -> Self {
        Failure::Lock(error)
    }
}

impl From<QueueError> for Failure {
    fn from(error: QueueError) -> Self {
        Failure::Queue(error)
    }
}

impl From<Failure> for PyErr {
    fn from(failure: Failure) -> PyErr {
        Python::attach(|py| failure.into_exception(py))
    }
}

impl Failure {
    fn into_exception(self, py: Python<'_>) -> PyErr {
        let message = self.to_string();
        let (error, attributes): (PyErr, Vec<(&str, Py<PyAny>)>) = match self {
            Failure::Client(error) => return exception(py, message, error.kind()),
            Failure::Lock(error) => return exception(py, message, error.kind()),
            Failure::Queue(error) => return exception(py, message, error.kind()),
            Failure::NotAcquired { name } => (NotHeld::new_err(message), vec![("name", text(py, &name))]),
            Failure::Argument(_) => (InvalidArgument::new_err(message), Vec::new()),
        };
        with_attributes(py, error, attributes)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Client(error) => error.fmt(f),
            Failure::Lock(error) => error.fmt(f),
            Failure::Queue(error) => error.fmt(f),
            Failure::NotAcquired { name } => {
                write!(f, "lock {name:?} is not held by this owner through this object; acquire it first")
            }
            Failure::Argument(reason) => write!(f, "invalid argument: {reason}"),
        }
    }
}

fn text(py: Python<'_>, value: &str) -> Py<PyAny> {
    value.into_pyobject(py).expect("a str converts").into_any().unbind()
}

fn number(py: Python<'_>, value: u64) -> Py<PyAny> {
    value.into_pyobject(py).expect("an int converts").into_any().unbind()
}

fn with_attributes(py: Python<'_>, error: PyErr, attributes: Vec<(&str, Py<PyAny>)>) -> PyErr {
    let value = error.value(py);
    for (name, attribute) in attributes {
        if let Err(failed) = value.setattr(name, attribute) {
            return failed;
        }
    }
    error
}

/// The exception for a client error, from the classification the bindings share.
fn exception(py: Python<'_>, message: String, kind: ErrorKind) -> PyErr {
    let (error, attributes) = match kind {
        ErrorKind::LockTimeout { lock } => (LockTimeout::new_err(message), vec![("name", text(py, &lock))]),
        ErrorKind::Deadlock { lock, cycle } => {
            let cycle: Vec<(u64, u64, String)> =
                cycle.into_iter().map(|(owner, lock)| (owner.session, owner.actor, lock)).collect();
            let cycle = cycle.into_pyobject(py).expect("a list converts").into_any().unbind();
            (DeadlockError::new_err(message), vec![("name", text(py, &lock)), ("cycle", cycle)])
        }
        ErrorKind::AlreadyHeld { lock } => (AlreadyHeld::new_err(message), vec![("name", text(py, &lock))]),
        ErrorKind::NotHeld { lock } => (NotHeld::new_err(message), vec![("name", text(py, &lock))]),
        ErrorKind::SessionExpired { session } => {
            (SessionExpired::new_err(message), vec![("session", number(py, session))])
        }
        ErrorKind::Unavailable => (Unavailable::new_err(message), Vec::new()),
        ErrorKind::InvalidArgument => (InvalidArgument::new_err(message), Vec::new()),
        ErrorKind::NoSuchQueue { queue } => (NoSuchQueue::new_err(message), vec![("queue", text(py, &queue))]),
        ErrorKind::StaleDelivery { queue, tag } => {
            (StaleDelivery::new_err(message), vec![("queue", text(py, &queue)), ("tag", number(py, tag))])
        }
        ErrorKind::LimitReached { queue, what, limit } => {
            let queue = match queue {
                Some(queue) => text(py, &queue),
                None => py.None(),
            };
            (
                LimitReached::new_err(message),
                vec![("queue", queue), ("what", text(py, &what)), ("limit", number(py, limit))],
            )
        }
        ErrorKind::Forked => (ForkError::new_err(message), Vec::new()),
        ErrorKind::PermissionDenied { identity, resource, needed } => (
            PermissionDenied::new_err(message),
            vec![("identity", text(py, &identity)), ("resource", text(py, &resource)), ("needed", text(py, &needed))],
        ),
        ErrorKind::Unauthenticated => (Unauthenticated::new_err(message), Vec::new()),
        ErrorKind::TooLarge { what, bytes, limit } => (
            TooLarge::new_err(message),
            vec![("what", text(py, &what)), ("bytes", number(py, bytes)), ("limit", number(py, limit))],
        ),
        _ => (Error::new_err(message), Vec::new()),
    };
    with_attributes(py, error, attributes)
}

/// Registers the exception classes on the module.
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("Error", py.get_type::<Error>())?;
    module.add("LockTimeout", py.get_type::<LockTimeout>())?;
    module.add("DeadlockError", py.get_type::<DeadlockError>())?;
    module.add("AlreadyHeld", py.get_type::<AlreadyHeld>())?;
    module.add("NotHeld", py.get_type::<NotHeld>())?;
    module.add("SessionExpired", py.get_type::<SessionExpired>())?;
    module.add("Unavailable", py.get_type::<Unavailable>())?;
    module.add("InvalidArgument", py.get_type::<InvalidArgument>())?;
    module.add("NoSuchQueue", py.get_type::<NoSuchQueue>())?;
    module.add("StaleDelivery", py.get_type::<StaleDelivery>())?;
    module.add("LimitReached", py.get_type::<LimitReached>())?;
    module.add("ForkError", py.get_type::<ForkError>())?;
    module.add("PermissionDenied", py.get_type::<PermissionDenied>())?;
    module.add("Unauthenticated", py.get_type::<Unauthenticated>())?;
    module.add("TooLarge", py.get_type::<TooLarge>())?;
    Ok(())
}
