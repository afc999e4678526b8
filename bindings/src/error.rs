//! [`DistsyncError`]: every failure of a call, mapped from the client's errors by their
//! [`ErrorKind`], the classification every binding shares.

use distsync::{ClientError, ErrorKind, LockError, QueueError};

/// Every failure of a call. Each variant's `reason` says what happened and what to do.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum DistsyncError {
    /// The lock was not granted within the timeout; nothing is held.
    #[error("{reason}")]
    LockTimeout { reason: String, lock: String },
    /// Waiting would have closed a cycle of owners waiting for each other; nothing changed.
    /// Release a lock of the cycle and retry, or take locks in one order.
    #[error("{reason}")]
    Deadlock { reason: String, lock: String, cycle: Vec<CycleLink> },
    /// This owner already holds or awaits the lock.
    #[error("{reason}")]
    AlreadyHeld { reason: String, lock: String },
    /// The lock is not held by this owner (released, or lost with the session): whatever it
    /// protected may have been changed since.
    #[error("{reason}")]
    NotHeld { reason: String, lock: String },
    /// The session expired, so the cluster released its locks and returned its deliveries.
    #[error("{reason}")]
    SessionExpired { reason: String, session: u64 },
    /// No node could serve the request in time (no leader, a partition, nodes down). Safe to
    /// retry; a queue put is made safe to retry by a dedup id.
    #[error("{reason}")]
    Unavailable { reason: String },
    /// The request is invalid (a bad name, key, value, option or configuration); fix it.
    #[error("{reason}")]
    InvalidArgument { reason: String },
    /// The queue does not exist (ack, nack and delete do not create one).
    #[error("{reason}")]
    NoSuchQueue { reason: String, queue: String },
    /// The delivery is no longer current: the message was or will be delivered again. Do not
    /// publish its effects.
    #[error("{reason}")]
    StaleDelivery { reason: String, queue: String, tag: u64 },
    /// The cluster is at one of its limits (`queue`, when a queue is full); nothing was changed.
    /// `what` is the limit's name as docs/limits.md lists it (`QUEUED_BYTES_MAX`), `limit` its
    /// value (bytes or a count).
    #[error("{reason}")]
    LimitReached { reason: String, queue: Option<String>, what: String, limit: u64 },
    /// This client's identity may not do this: it lacks a grant, it was disabled, or the request
    /// named a session that is not its own; nothing was changed. Ask an admin for the grant the
    /// reason names (`distsync acl grant`), or use another identity. `identity` is empty when
    /// the node did not say; `resource` is what it asked about (`lock:team-b/x`, `admin`,
    /// `session:7`, `identity:alice`); `needed` the permission it would need (`read`, `write`,
    /// `admin`, `owner` or `enabled`).
    #[error("{reason}")]
    PermissionDenied { reason: String, identity: String, resource: String, needed: String },
    /// The TLS handshake was refused over certificates: the cluster refused this client's (none
    /// given, not signed by its CA, expired, not a client certificate), or the client the
    /// nodes' (not signed by the CA at `ca_path`). Retrying will not help: pass a certificate
    /// and key issued by `distsync certs client`, or the right CA.
    #[error("{reason}")]
    Unauthenticated { reason: String },
    /// The request exceeds a size limit of the cluster (`what`: `write` for one write, at most
    /// 4 MiB, or `frame`); nothing was changed. Split it into smaller requests.
    #[error("{reason}")]
    TooLarge { reason: String, what: String, bytes: u64, limit: u64 },
    /// Any other failure (a protocol mismatch, a server fault).
    #[error("{reason}")]
    Internal { reason: String },
}

/// One link of a deadlock cycle: the owner `(session, actor)` waits for the next link's owner
/// through `lock`; the last waits for the first.
#[derive(Debug, uniffi::Record)]
pub struct CycleLink {
    pub session: u64,
    pub actor: u64,
    pub lock: String,
}

impl DistsyncError {
    /// The variant for a client error, from the classification the bindings share.
    fn of(reason: String, kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::LockTimeout { lock } => DistsyncError::LockTimeout { reason, lock },
            ErrorKind::Deadlock { lock, cycle } => DistsyncError::Deadlock {
                reason,
                lock,
                cycle: cycle
                    .into_iter()
                    .map(|(owner, lock)| CycleLink { session: owner.session, actor: owner.actor, lock })
                    .collect(),
            },
            ErrorKind::AlreadyHeld { lock } => DistsyncError::AlreadyHeld { reason, lock },
            ErrorKind::NotHeld { lock } => DistsyncError::NotHeld { reason, lock },
            ErrorKind::SessionExpired { session } => DistsyncError::SessionExpired { reason, session },
            ErrorKind::Unavailable => DistsyncError::Unavailable { reason },
            ErrorKind::InvalidArgument => DistsyncError::InvalidArgument { reason },
            ErrorKind::NoSuchQueue { queue } => DistsyncError::NoSuchQueue { reason, queue },
            ErrorKind::StaleDelivery { queue, tag } => DistsyncError::StaleDelivery { reason, queue, tag },
            ErrorKind::LimitReached { queue, what, limit } => {
                DistsyncError::LimitReached { reason, queue, what, limit }
            }
            ErrorKind::PermissionDenied { identity, resource, needed } => {
                DistsyncError::PermissionDenied { reason, identity, resource, needed }
            }
            ErrorKind::Unauthenticated => DistsyncError::Unauthenticated { reason },
            ErrorKind::TooLarge { what, bytes, limit } => DistsyncError::TooLarge { reason, what, bytes, limit },
            _ => DistsyncError::Internal { reason },
        }
    }
}

impl From<ClientError> for DistsyncError {
    fn from(error: ClientError) -> Self {
        Self::of(error.to_string(), error.kind())
    }
}

impl From<LockError> for DistsyncError {
    fn from(error: LockError) -> Self {
        Self::of(error.to_string(), error.kind())
    }
}

impl From<QueueError> for DistsyncError {
    fn from(error: QueueError) -> Self {
        Self::of(error.to_string(), error.kind())
    }
}

pub(crate) type Outcome<T> = Result<T, DistsyncError>;
