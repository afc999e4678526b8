//! Error types: what travels on the wire ([`ServerError`]), what the frame codec reports
//! ([`FrameError`]) and what a client caller sees ([`ClientError`]).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::wire::{LeaderInfo, Owner, Permission, SessionId};

/// An error answered by a node. Travels on the wire inside a [`crate::wire::Reply`].
#[derive(Serialize, Deserialize, Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerError {
    /// This node cannot serve the request because it is not the leader and could not forward it.
    /// Retry against `leader` when known, otherwise against another node.
    #[error("node is not the leader{}", leader.as_ref().map(|l| format!("; the leader is node {} at {}", l.id, l.address)).unwrap_or_default())]
    NotLeader {
        /// The leader, when this node knows it.
        leader: Option<LeaderInfo>,
    },
    /// The cluster could not commit or confirm in time: no leader, or this node is cut off from
    /// a majority. Retry later or against another node; the client does so itself.
    #[error("cluster unavailable: {reason}")]
    Unavailable {
        /// What went wrong.
        reason: String,
    },
    /// The session expired (the client was silent past its TTL) or never existed. Open a new
    /// session; anything the old one held has been released.
    #[error("session {session} expired or does not exist; open a new session")]
    SessionExpired {
        /// The session named in the request.
        session: SessionId,
    },
    /// The request's sequence number is older than the oldest response the cluster still keeps
    /// for this session, so its outcome can no longer be reported. A client bug.
    #[error("sequence number {seq} of session {session} is older than the responses kept ({oldest_kept}); the request was answered before")]
    StaleSequence {
        /// The session.
        session: SessionId,
        /// The stale sequence number.
        seq: u64,
        /// The oldest sequence number still remembered.
        oldest_kept: u64,
    },
    /// The request is malformed or exceeds a limit; fix the request, retrying will not help.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong.
        reason: String,
    },
    /// A lock request was refused; see [`LockRefusal`].
    #[error(transparent)]
    Lock(LockRefusal),
    /// A queue request was refused; see [`QueueRefusal`].
    #[error(transparent)]
    Queue(QueueRefusal),
    /// The cluster is at one of its limits (keys, pending write-backs); nothing was changed.
    /// Free something (delete keys, ack messages) or wait for the backlog to drain, then retry.
    #[error("limit reached: {reason} ({what}, see docs/limits.md); nothing was changed")]
    LimitReached {
        /// The limit's name as `docs/limits.md` lists it (`KV_BYTES_MAX`,
        /// `SESSIONS_PER_IDENTITY_MAX`), beside the flag that sets it (`--max-kv-bytes`).
        what: String,
        /// The limit's value, in its unit (bytes or a count).
        limit: u64,
        /// What was reached, and what to do about it.
        reason: String,
    },
    /// Fault injection was asked of a node not started with `--enable-fault-injection`.
    #[error("fault injection is disabled on this node; start it with --enable-fault-injection (tests only)")]
    FaultInjectionDisabled,
    /// A bug or an I/O failure on the node; see the node's log.
    #[error("internal error on the node: {reason}")]
    Internal {
        /// What failed.
        reason: String,
    },
    /// The connection's identity lacks the permission the request needs; nothing was changed.
    /// Ask an admin for the grant the message names, or use another identity.
    #[error("permission denied: identity {identity} needs {needed} on {resource} (distsync acl grant {identity} {} {})", grant_target(resource, *needed), grant_permission(*needed))]
    PermissionDenied {
        /// Who asked.
        identity: String,
        /// What it asked about: `lock:team-b/x`, `kv:config`, or `admin` for admin commands.
        resource: String,
        /// The permission it would need.
        needed: Permission,
    },
    /// The connection's identity was disabled by an admin (`distsync identity disable`); its
    /// sessions have ended and every request is refused until `distsync identity enable`.
    #[error("identity {identity} is disabled; an admin can enable it with `distsync identity enable {identity}`")]
    IdentityDisabled {
        /// The identity.
        identity: String,
    },
    /// The request names a session that this connection did not open (another identity's, or
    /// the secret is wrong); nothing was changed. A client only ever uses its own sessions.
    #[error("session {session} was not opened by this identity with this secret; the request was refused")]
    SessionNotOwned {
        /// The session named in the request.
        session: SessionId,
    },
    /// A sequence number of the session was already used for a different command; the stored
    /// answer belongs to that command, so this one was refused, not applied. A client bug: every
    /// command takes a fresh sequence number.
    #[error("sequence number {seq} of session {session} was used for a different command; this one was refused")]
    SequenceReused {
        /// The session.
        session: SessionId,
        /// The reused sequence number.
        seq: u64,
    },
    /// The request is larger than one of the cluster's size limits (see `docs/limits.md`);
    /// nothing was changed. Split it (several smaller puts), retrying as it is will not help.
    #[error("{what} of {bytes} bytes exceeds the limit of {limit} bytes; nothing was changed, split it into smaller requests")]
    TooLarge {
        /// What was too large: `write` for one client write (limit
        /// [`WRITE_BYTES_MAX`](crate::wire::WRITE_BYTES_MAX)), `frame` for a whole request.
        what: String,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The node is overloaded (its in-flight request bytes or streams are at their limit) and
    /// did not read the request; nothing was changed. Retry after `retry_after_ms`, here or
    /// elsewhere; the client does so itself, with jitter.
    #[error("node busy: {reason}; retry after {retry_after_ms} ms")]
    Busy {
        /// Which budget is exhausted.
        reason: String,
        /// How long to wait before retrying.
        retry_after_ms: u64,
    },
}

/// The target part of the `acl grant` suggested by a denial.
fn grant_target(resource: &str, needed: Permission) -> &str {
    if needed == Permission::Admin {
        "admin"
    } else {
        resource
    }
}

/// The permission part of the `acl grant` suggested by a denial (none for admin).
fn grant_permission(needed: Permission) -> &'static str {
    match needed {
        Permission::Admin => "",
        other => other.as_str(),
    }
}

impl ServerError {
    /// Whether the client should retry the same request (possibly elsewhere).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ServerError::NotLeader { .. } | ServerError::Unavailable { .. } | ServerError::Busy { .. })
    }

    /// The pause a busy node asked for before the next attempt, if it asked.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ServerError::Busy { retry_after_ms, .. } => Some(std::time::Duration::from_millis(*retry_after_ms)),
            _ => None,
        }
    }
}

/// Why the cluster refused a lock request. Never retried by the client: each is an answer.
#[derive(Serialize, Deserialize, Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockRefusal {
    /// A try-lock found the lock taken. Try again later, or wait with a timeout.
    #[error("lock {name:?} is held by another owner")]
    WouldBlock {
        /// The lock.
        name: String,
    },
    /// The owner already holds or awaits this lock. Use the hold you have; upgrade it if you
    /// need exclusive access.
    #[error("lock {name:?} is already held or awaited by this owner")]
    AlreadyHeld {
        /// The lock.
        name: String,
    },
    /// Waiting would close a cycle in the wait-for graph: nothing was changed. Release a lock
    /// of the cycle (usually your own) and retry, or take locks in one global order.
    #[error("waiting for lock {name:?} would deadlock: {}", describe_cycle(cycle))]
    Deadlock {
        /// The lock requested.
        name: String,
        /// The cycle: each owner waits for the next through the named lock; the last one waits
        /// for the first.
        cycle: Vec<(Owner, String)>,
    },
    /// The owner does not hold the lock with this token: it was released, or lost with the
    /// session. Whatever the hold protected may have been changed by a newer holder.
    #[error("this owner does not hold lock {name:?} with token {token}")]
    NotHeld {
        /// The lock.
        name: String,
        /// The token given.
        token: u64,
    },
    /// An upgrade needs a shared hold by the same owner.
    #[error("lock {name:?} is not held shared by this owner, so it cannot be upgraded")]
    NotShared {
        /// The lock.
        name: String,
    },
}

/// Why the cluster refused a queue request. Never retried by the client: each is an answer.
#[derive(Serialize, Deserialize, Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueRefusal {
    /// The queue does not exist. Queues are created by their first put or get, or by
    /// `queue create`; check the name.
    #[error("queue {queue:?} does not exist; a put or get creates it, or create it with options")]
    NoSuchQueue {
        /// The queue.
        queue: String,
    },
    /// The tag does not name the message's current delivery: that delivery was acked, nacked,
    /// timed out or ended with its session, and the message was (or will be) delivered again,
    /// possibly to another consumer. Do not treat the message as yours.
    #[error("delivery tag {tag} of queue {queue:?} is not current: that delivery was acked, nacked, timed out or ended with its session")]
    StaleTag {
        /// The queue.
        queue: String,
        /// The tag.
        tag: u64,
    },
    /// A message is larger than the queue's `max_message_bytes`; nothing of the put was enqueued.
    #[error("a message of {bytes} bytes exceeds queue {queue:?}'s maximum of {max} bytes; nothing was enqueued")]
    MessageTooLarge {
        /// The queue.
        queue: String,
        /// The message size.
        bytes: usize,
        /// The queue's limit.
        max: usize,
    },
    /// The cluster holds as many queued bytes, queues or dedup ids as it may; nothing was
    /// enqueued. Consume (ack) messages or delete queues, then retry.
    #[error("queue {queue:?} is full: {reason} ({what}, see docs/limits.md); nothing was enqueued")]
    Full {
        /// The queue.
        queue: String,
        /// The limit's name as `docs/limits.md` lists it (`QUEUED_BYTES_MAX`, `QUEUES_MAX`).
        what: String,
        /// The limit's value, in its unit (bytes or a count).
        limit: u64,
        /// What was reached, and what to do about it.
        reason: String,
    },
}

/// Renders a deadlock cycle as `owner waits on "lock" -> …`.
pub fn describe_cycle(cycle: &[(Owner, String)]) -> String {
    cycle.iter().map(|(owner, lock)| format!("{owner} waits on {lock:?}")).collect::<Vec<_>>().join(" -> ")
}

impl From<FrameError> for ServerError {
    fn from(error: FrameError) -> Self {
        match error {
            FrameError::TooLarge { bytes, max } => {
                ServerError::TooLarge { what: "frame".into(), bytes: bytes as u64, limit: max as u64 }
            }
            other => ServerError::InvalidArgument { reason: other.to_string() },
        }
    }
}

/// A frame could not be read, written or decoded.
#[derive(Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announces more than the maximum; the frame is refused unread.
    #[error("frame of {bytes} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Announced or encoded size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a valid message.
    #[error("malformed frame: {reason}")]
    Malformed {
        /// The decoder's complaint.
        reason: String,
    },
    /// The stream failed or ended before a whole frame arrived.
    #[error("stream error: {reason}")]
    Io {
        /// The transport's complaint.
        reason: String,
    },
}

/// What a call through [`crate::Client`] can fail with.
#[derive(Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// No node could serve the request before the deadline (no leader, a partition, every node
    /// down). Safe to retry: a write under the same client is never applied twice.
    #[error("cluster unavailable: {reason}")]
    Unavailable {
        /// The last failure seen.
        reason: String,
    },
    /// The client's session expired, so the cluster released everything it held. The client has
    /// already started a new session for later calls; redo the work that needed the old one.
    #[error("session {session} expired; the client opened a new session, redo what depended on the old one")]
    SessionExpired {
        /// The expired session.
        session: SessionId,
    },
    /// The request is invalid (too large, empty key, …); fix it, retrying will not help.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong.
        reason: String,
    },
    /// The client configuration is unusable (no endpoints, unreadable CA file, bad address).
    #[error("client configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// A node answered something this client does not understand: versions differ, or a bug.
    #[error("protocol error: {reason}")]
    Protocol {
        /// What was unexpected.
        reason: String,
    },
    /// The node reported an error that is neither retryable nor the caller's fault.
    #[error(transparent)]
    Server(ServerError),
    /// The cluster refused this client's certificate during the TLS handshake: none was given,
    /// it is not signed by the cluster's CA, it expired, or it is not a client certificate.
    /// Retrying will not help; pass a certificate issued by `distsync certs client`.
    #[error("{reason}")]
    Unauthenticated {
        /// What the handshake reported, and what to do.
        reason: String,
    },
    /// The client was created in another process, which then forked: its connections and
    /// background tasks stayed in the parent. Create a new client in this process (after the
    /// fork); see [`crate::runtime::ProcessBound`].
    #[error("this client was created in process {created_in} and cannot be used in process {used_in} after fork(); create a new client in the child process")]
    Forked {
        /// The process that created the client.
        created_in: u32,
        /// The process that tried to use it.
        used_in: u32,
    },
}

impl ClientError {
    /// Whether the caller may retry the same call.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ClientError::Unavailable { .. })
    }
}

/// What kind of failure an error is, with the fields a caller acts on: one classification of
/// [`ClientError`], [`LockError`](crate::LockError) and [`QueueError`](crate::QueueError) for
/// every language binding, which turns it into its stable error codes or exception classes.
///
/// ```
/// use distsync::{ErrorKind, LockError};
///
/// let error = LockError::Timeout { name: "reports".into() };
/// assert_eq!(error.kind(), ErrorKind::LockTimeout { lock: "reports".into() });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The lock was not granted within the caller's timeout (for a try-lock: at once).
    LockTimeout {
        /// The lock's name.
        lock: String,
    },
    /// Waiting for `lock` would close a wait-for cycle: each owner in `cycle` waits for the lock
    /// named beside it, held by the next owner; the last waits for the first.
    Deadlock {
        /// The lock whose wait was refused.
        lock: String,
        /// The cycle.
        cycle: Vec<(Owner, String)>,
    },
    /// The owner already holds or awaits the lock.
    AlreadyHeld {
        /// The lock's name.
        lock: String,
    },
    /// The owner does not hold the lock (any more) with that token.
    NotHeld {
        /// The lock's name.
        lock: String,
    },
    /// The session expired; what it held was released.
    SessionExpired {
        /// The expired session.
        session: SessionId,
    },
    /// No leader could be reached in time; the call may or may not have taken effect.
    Unavailable,
    /// The call was refused as invalid (bad name or value, option out of range, unusable
    /// configuration); retrying it will not help.
    InvalidArgument,
    /// The queue does not exist.
    NoSuchQueue {
        /// The queue's name.
        queue: String,
    },
    /// The delivery tag is not current: the message was or will be delivered again.
    StaleDelivery {
        /// The queue's name.
        queue: String,
        /// The stale tag.
        tag: u64,
    },
    /// The cluster is at one of its limits; nothing was changed.
    LimitReached {
        /// The full queue, when a queue's limit was reached.
        queue: Option<String>,
        /// The limit's name as `docs/limits.md` lists it (`KV_BYTES_MAX`, `QUEUED_BYTES_MAX`).
        what: String,
        /// The limit's value, in its unit (bytes or a count).
        limit: u64,
    },
    /// A client used in a process forked from the one that created it.
    Forked,
    /// The identity may not do this: it lacks a grant, it is disabled, or the request named a
    /// session that is not its own. Nothing was changed.
    PermissionDenied {
        /// The identity that asked (empty when the node did not say).
        identity: String,
        /// What it asked about: `lock:team-b/x`, `admin`, `session:7`, `identity:alice`.
        resource: String,
        /// The permission it would need: `read`, `write`, `admin`, `owner` or `enabled`.
        needed: String,
    },
    /// The cluster refused the client's certificate; see [`ClientError::Unauthenticated`].
    Unauthenticated,
    /// The request exceeds a size limit; nothing was changed. Split it.
    TooLarge {
        /// What was too large (`write`, `frame`).
        what: String,
        /// Its size in bytes.
        bytes: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// Anything else: a protocol mismatch or a fault on a node.
    Internal,
}

impl ServerError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ServerError::NotLeader { .. } | ServerError::Unavailable { .. } | ServerError::Busy { .. } => {
                ErrorKind::Unavailable
            }
            ServerError::SessionExpired { session } => ErrorKind::SessionExpired { session: *session },
            ServerError::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            ServerError::Lock(refusal) => refusal.kind(),
            ServerError::Queue(refusal) => refusal.kind(),
            ServerError::LimitReached { what, limit, .. } => {
                ErrorKind::LimitReached { queue: None, what: what.clone(), limit: *limit }
            }
            ServerError::PermissionDenied { identity, resource, needed } => ErrorKind::PermissionDenied {
                identity: identity.clone(),
                resource: resource.clone(),
                needed: needed.as_str().to_string(),
            },
            ServerError::IdentityDisabled { identity } => ErrorKind::PermissionDenied {
                identity: identity.clone(),
                resource: format!("identity:{identity}"),
                needed: "enabled".into(),
            },
            ServerError::SessionNotOwned { session } => ErrorKind::PermissionDenied {
                identity: String::new(),
                resource: format!("session:{session}"),
                needed: "owner".into(),
            },
            ServerError::TooLarge { what, bytes, limit } => {
                ErrorKind::TooLarge { what: what.clone(), bytes: *bytes, limit: *limit }
            }
            ServerError::StaleSequence { .. }
            | ServerError::SequenceReused { .. }
            | ServerError::FaultInjectionDisabled
            | ServerError::Internal { .. } => ErrorKind::Internal,
        }
    }
}

impl LockRefusal {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LockRefusal::WouldBlock { name } => ErrorKind::LockTimeout { lock: name.clone() },
            LockRefusal::AlreadyHeld { name } => ErrorKind::AlreadyHeld { lock: name.clone() },
            LockRefusal::Deadlock { name, cycle } => ErrorKind::Deadlock { lock: name.clone(), cycle: cycle.clone() },
            LockRefusal::NotHeld { name, .. } => ErrorKind::NotHeld { lock: name.clone() },
            LockRefusal::NotShared { .. } => ErrorKind::InvalidArgument,
        }
    }
}

impl QueueRefusal {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            QueueRefusal::NoSuchQueue { queue } => ErrorKind::NoSuchQueue { queue: queue.clone() },
            QueueRefusal::StaleTag { queue, tag } => ErrorKind::StaleDelivery { queue: queue.clone(), tag: *tag },
            QueueRefusal::MessageTooLarge { .. } => ErrorKind::InvalidArgument,
            QueueRefusal::Full { queue, what, limit, .. } => {
                ErrorKind::LimitReached { queue: Some(queue.clone()), what: what.clone(), limit: *limit }
            }
        }
    }
}

impl ClientError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Unavailable { .. } => ErrorKind::Unavailable,
            ClientError::SessionExpired { session } => ErrorKind::SessionExpired { session: *session },
            ClientError::InvalidArgument { .. } | ClientError::Config { .. } => ErrorKind::InvalidArgument,
            ClientError::Protocol { .. } => ErrorKind::Internal,
            ClientError::Server(error) => error.kind(),
            ClientError::Forked { .. } => ErrorKind::Forked,
            ClientError::Unauthenticated { .. } => ErrorKind::Unauthenticated,
        }
    }
}

impl From<ServerError> for ClientError {
    fn from(error: ServerError) -> Self {
        match error {
            ServerError::NotLeader { .. } | ServerError::Unavailable { .. } => {
                ClientError::Unavailable { reason: error.to_string() }
            }
            ServerError::SessionExpired { session } => ClientError::SessionExpired { session },
            ServerError::InvalidArgument { reason } => ClientError::InvalidArgument { reason },
            other => ClientError::Server(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LockError, QueueError};

    /// A refusal has one kind however it reaches the caller: nested in a `ClientError` (as a
    /// cache or kv call returns it) or unwrapped into the typed lock or queue error.
    #[test]
    fn a_refusal_has_one_kind_whichever_error_carries_it() {
        let owner = Owner { session: 7, actor: 9 };
        let locks = [
            LockRefusal::WouldBlock { name: "a".into() },
            LockRefusal::AlreadyHeld { name: "a".into() },
            LockRefusal::Deadlock { name: "a".into(), cycle: vec![(owner, "b".into())] },
            LockRefusal::NotHeld { name: "a".into(), token: 3 },
            LockRefusal::NotShared { name: "a".into() },
        ];
        for refusal in locks {
            let nested = ClientError::Server(ServerError::Lock(refusal.clone()));
            assert_eq!(nested.kind(), refusal.kind());
            assert_eq!(LockError::from(nested.clone()).kind(), refusal.kind(), "{refusal:?}");
            assert_eq!(QueueError::from(nested).kind(), refusal.kind(), "{refusal:?}");
        }
        let queues = [
            QueueRefusal::NoSuchQueue { queue: "q".into() },
            QueueRefusal::StaleTag { queue: "q".into(), tag: 4 },
            QueueRefusal::MessageTooLarge { queue: "q".into(), bytes: 9, max: 8 },
            QueueRefusal::Full { queue: "q".into(), what: "W".into(), limit: 1, reason: "too many bytes".into() },
        ];
        for refusal in queues {
            let nested = ClientError::Server(ServerError::Queue(refusal.clone()));
            assert_eq!(nested.kind(), refusal.kind());
            assert_eq!(QueueError::from(nested.clone()).kind(), refusal.kind(), "{refusal:?}");
            assert_eq!(LockError::from(nested).kind(), refusal.kind(), "{refusal:?}");
        }
    }

    #[test]
    fn kinds_carry_the_fields_callers_act_on() {
        let cycle = vec![(Owner { session: 1, actor: 2 }, "b".to_string())];
        let deadlock = LockRefusal::Deadlock { name: "a".into(), cycle: cycle.clone() };
        assert_eq!(deadlock.kind(), ErrorKind::Deadlock { lock: "a".into(), cycle });
        let full = QueueRefusal::Full { queue: "q".into(), what: "QUEUES_MAX".into(), limit: 2, reason: "r".into() };
        let kind = ErrorKind::LimitReached { queue: Some("q".into()), what: "QUEUES_MAX".into(), limit: 2 };
        assert_eq!(full.kind(), kind);
        let limit = ServerError::LimitReached { what: "KEYS_MAX".into(), limit: 3, reason: "r".into() };
        assert_eq!(limit.kind(), ErrorKind::LimitReached { queue: None, what: "KEYS_MAX".into(), limit: 3 });
        // A server-side refusal as invalid reaches the caller as `InvalidArgument`, not `Internal`.
        let invalid = ClientError::from(ServerError::InvalidArgument { reason: "r".into() });
        assert_eq!(invalid.kind(), ErrorKind::InvalidArgument);
        assert_eq!(ClientError::Config { reason: "r".into() }.kind(), ErrorKind::InvalidArgument);
        assert_eq!(ClientError::Forked { created_in: 1, used_in: 2 }.kind(), ErrorKind::Forked);
        assert_eq!(ClientError::from(ServerError::NotLeader { leader: None }).kind(), ErrorKind::Unavailable);
        let expired = LockError::SessionExpired { session: 5 };
        assert_eq!(expired.kind(), ErrorKind::SessionExpired { session: 5 });
        assert_eq!(LockError::Timeout { name: "a".into() }.kind(), ErrorKind::LockTimeout { lock: "a".into() });
    }
}
