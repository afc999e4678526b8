//! Failures of the Rust client as `DistsyncError` objects: each carries a stable `code`, the
//! Rust error's message (which says what to do) and its fields (`lock`, `cycle`, `session`,
//! `queue`, `tag`, `identity`, `resource`, `needed`, `what`, `bytes`, `limit`).
//!
//! The classes are JavaScript (`distsync.js`), registered once per environment (main thread or
//! worker) through `registerErrorClasses`; errors are built on the JavaScript thread when a
//! Promise settles. Without registered classes (the native module used on its own) errors are
//! plain `Error`s with the same `code` and fields.

use std::collections::HashMap;

use distsync::{ClientError, ErrorKind, LockError, QueueError};
use napi::bindgen_prelude::{BigInt, Function, FunctionRef, JsObjectValue, JsValue, Object, Unknown};
use napi::{Env, JsError};
use napi_derive::napi;

/// The stable codes, one per error class of `distsync.js`.
pub const CODES: [&str; 15] = [
    "LOCK_TIMEOUT",
    "DEADLOCK",
    "ALREADY_HELD",
    "NOT_HELD",
    "SESSION_EXPIRED",
    "UNAVAILABLE",
    "INVALID_ARGUMENT",
    "NO_SUCH_QUEUE",
    "STALE_DELIVERY",
    "LIMIT_REACHED",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "TOO_LARGE",
    "CLIENT_CLOSED",
    "INTERNAL",
];

/// A failure of a call, converted to a JavaScript error once back on the JavaScript thread.
#[derive(Debug)]
pub enum Failure {
    Client(ClientError),
    Lock(LockError),
    Queue(QueueError),
    /// An argument refused before calling the client.
    Argument(String),
    /// `release` or `upgrade` of a `Lock` already released through that object.
    Released {
        name: String,
    },
    /// The `Client` was closed.
    Closed,
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

/// One link of a deadlock cycle: the owner `(session, actor)` waits for the next link's owner
/// through `lock`; the last waits for the first.
#[napi(object)]
pub struct CycleLink {
    /// The owner's session.
    pub session: f64,
    /// The owner (`Owner.actor` of the owner that took the lock).
    pub actor: BigInt,
    /// The lock this owner waits for.
    pub lock: String,
}

/// The fields an error object carries besides `code` and `message`.
#[derive(Default)]
struct Details {
    lock: Option<String>,
    cycle: Option<Vec<CycleLink>>,
    session: Option<u64>,
    queue: Option<String>,
    tag: Option<u64>,
    /// Of a permission denied: who asked, about what, and the permission it would need.
    access: Option<(String, String, String)>,
    /// Of a request over a size limit: what, its size and the limit, in bytes.
    size: Option<(String, u64, u64)>,
    /// Of a limit reached: its name and value.
    limit: Option<(String, u64)>,
}

impl Failure {
    /// The error's code and fields.
    fn describe(self) -> (&'static str, String, Details) {
        let message = self.to_string();
        let details = Details::default();
        let (code, details) = match self {
            Failure::Client(error) => describe_kind(error.kind()),
            Failure::Lock(error) => describe_kind(error.kind()),
            Failure::Queue(error) => describe_kind(error.kind()),
            Failure::Argument(_) => ("INVALID_ARGUMENT", details),
            Failure::Released { name } => ("NOT_HELD", Details { lock: Some(name), ..details }),
            Failure::Closed => ("CLIENT_CLOSED", details),
        };
        (code, message, details)
    }

    /// The JavaScript error for this failure, to reject a Promise or throw.
    pub fn into_js(self, env: &Env) -> napi::Error {
        match self.build(env) {
            Ok(error) => napi::Error::from(error),
            Err(failed) => failed,
        }
    }

    fn build(self, env: &Env) -> napi::Result<Unknown<'_>> {
        let (code, message, details) = self.describe();
        let class = env.get_instance_data::<ErrorClasses>()?.and_then(|classes| classes.by_code.get(code));
        let error: Unknown<'_> = match class {
            Some(class) => class.borrow_back(env)?.new_instance(message)?,
            None => JsError::from(napi::Error::from_reason(message)).into_unknown(*env),
        };
        let mut object = error.coerce_to_object()?;
        object.set_named_property("code", code)?;
        if let Some(lock) = details.lock {
            object.set_named_property("lock", lock)?;
        }
        if let Some(cycle) = details.cycle {
            object.set_named_property("cycle", cycle)?;
        }
        if let Some(session) = details.session {
            object.set_named_property("session", crate::run::number(session))?;
        }
        if let Some(queue) = details.queue {
            object.set_named_property("queue", queue)?;
        }
        if let Some(tag) = details.tag {
            object.set_named_property("tag", crate::run::number(tag))?;
        }
        if let Some((identity, resource, needed)) = details.access {
            object.set_named_property("identity", identity)?;
            object.set_named_property("resource", resource)?;
            object.set_named_property("needed", needed)?;
        }
        if let Some((what, limit)) = details.limit {
            object.set_named_property("what", what)?;
            object.set_named_property("limit", crate::run::number(limit))?;
        }
        if let Some((what, bytes, limit)) = details.size {
            object.set_named_property("what", what)?;
            object.set_named_property("bytes", crate::run::number(bytes))?;
            object.set_named_property("limit", crate::run::number(limit))?;
        }
        Ok(object.to_unknown())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Client(error) => error.fmt(f),
            Failure::Lock(error) => error.fmt(f),
            Failure::Queue(error) => error.fmt(f),
            Failure::Argument(reason) => write!(f, "invalid argument: {reason}"),
            Failure::Released { name } => {
                write!(f, "lock {name:?} was already released through this object; acquire it again")
            }
            Failure::Closed => write!(f, "the client is closed; connect a new one"),
        }
    }
}

/// The code and fields of a client error, from the classification the bindings share.
fn describe_kind(kind: ErrorKind) -> (&'static str, Details) {
    let details = Details::default();
    match kind {
        ErrorKind::LockTimeout { lock } => ("LOCK_TIMEOUT", Details { lock: Some(lock), ..details }),
        ErrorKind::Deadlock { lock, cycle } => {
            let cycle = cycle
                .into_iter()
                .map(|(owner, lock)| CycleLink {
                    session: crate::run::number(owner.session),
                    actor: BigInt::from(owner.actor),
                    lock,
                })
                .collect();
            ("DEADLOCK", Details { lock: Some(lock), cycle: Some(cycle), ..details })
        }
        ErrorKind::AlreadyHeld { lock } => ("ALREADY_HELD", Details { lock: Some(lock), ..details }),
        ErrorKind::NotHeld { lock } => ("NOT_HELD", Details { lock: Some(lock), ..details }),
        ErrorKind::SessionExpired { session } => ("SESSION_EXPIRED", Details { session: Some(session), ..details }),
        ErrorKind::Unavailable => ("UNAVAILABLE", details),
        ErrorKind::InvalidArgument => ("INVALID_ARGUMENT", details),
        ErrorKind::NoSuchQueue { queue } => ("NO_SUCH_QUEUE", Details { queue: Some(queue), ..details }),
        ErrorKind::StaleDelivery { queue, tag } => {
            ("STALE_DELIVERY", Details { queue: Some(queue), tag: Some(tag), ..details })
        }
        ErrorKind::LimitReached { queue, what, limit } => {
            ("LIMIT_REACHED", Details { queue, limit: Some((what, limit)), ..details })
        }
        ErrorKind::PermissionDenied { identity, resource, needed } => {
            ("PERMISSION_DENIED", Details { access: Some((identity, resource, needed)), ..details })
        }
        ErrorKind::Unauthenticated => ("UNAUTHENTICATED", details),
        ErrorKind::TooLarge { what, bytes, limit } => {
            ("TOO_LARGE", Details { size: Some((what, bytes, limit)), ..details })
        }
        _ => ("INTERNAL", details),
    }
}

/// The registered error classes of one JavaScript environment, by code.
struct ErrorClasses {
    by_code: HashMap<&'static str, FunctionRef<String, Unknown<'static>>>,
}

/// Registers the error classes errors are made of: `classes` maps each code (`LOCK_TIMEOUT`,
/// …) to a constructor taking the message. Called by `distsync.js` when it loads; not for
/// applications.
#[napi]
pub fn register_error_classes(env: Env, classes: Object) -> napi::Result<()> {
    let mut by_code = HashMap::new();
    for code in CODES {
        let class: Option<Function<String, Unknown<'static>>> = classes.get_named_property(code)?;
        if let Some(class) = class {
            by_code.insert(code, class.create_ref()?);
        }
    }
    env.set_instance_data(ErrorClasses { by_code }, (), |_| {})
}
