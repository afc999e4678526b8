//! What goes through the Raft log: [`Command`]s (state changes under a session) and [`Query`]s
//! (linearizable reads), with their answers. Each primitive's checks live in its own module;
//! [`Command::validate`] only routes to them.
//!
//! These enums are part of the log and of snapshots on every node's disk: add variants at the
//! end and never reorder them or their fields (the golden tests in `golden.rs` pin the bytes).

use serde::{Deserialize, Serialize};

use super::cache::validate_ttl;
use super::kv::{validate_key, validate_value};
use super::lock::{validate_lock_name, validate_lock_request};
use super::queue::{validate_batch, validate_get, validate_queue_name, validate_visibility};
use super::{
    encoded_bytes, IdentityInfo, LockInfo, LockMode, LockWait, PutMessage, PutOutcome, QueueDelivery, QueueOptions,
    QueueStats, ResourceKind,
};
use crate::error::ServerError;

use super::WRITE_BYTES_MAX;
#[allow(unused_imports)] // for intra-doc links
use super::{
    Request, CACHE_TTL_MS_MAX, IDENTITY_LIST_PAGE_MAX, KEY_BYTES_MAX, LOCK_LIST_PAGE_MAX, LOCK_NAME_BYTES_MAX,
    QUEUE_BATCH_MAX, QUEUE_LIST_PAGE_MAX, QUEUE_NAME_BYTES_MAX, VALUE_BYTES_MAX,
};

/// A state-changing command.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Set a key of the replicated register.
    KvPut {
        /// The key, at most [`KEY_BYTES_MAX`] bytes.
        key: Vec<u8>,
        /// The value, at most [`VALUE_BYTES_MAX`] bytes.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Remove a key of the replicated register.
    KvDelete {
        /// The key.
        key: Vec<u8>,
    },
    /// End a session now instead of at its TTL.
    CloseSession,
    /// Take a lock for the owner `(session, actor)`.
    LockAcquire {
        /// The lock, at most [`LOCK_NAME_BYTES_MAX`] bytes.
        name: String,
        /// The actor inside the session (thread, task, handle) that will own the lock.
        actor: u64,
        /// Exclusive or shared.
        mode: LockMode,
        /// Whether and how long to wait.
        wait: LockWait,
    },
    /// Upgrade the owner's shared hold to exclusive; waits for the other shared holders.
    LockUpgrade {
        /// The lock.
        name: String,
        /// The actor holding it shared.
        actor: u64,
        /// Whether and how long to wait.
        wait: LockWait,
    },
    /// Release the owner's hold, if it still has the one with this fencing token.
    LockRelease {
        /// The lock.
        name: String,
        /// The actor holding it.
        actor: u64,
        /// The fencing token of the hold; a release naming an older token frees nothing.
        token: u64,
    },
    /// Give up a queued request whose caller stopped waiting: removes the wait, or releases the
    /// hold if the request was granted after `queued_revision` (the caller never learned of it).
    LockCancel {
        /// The lock.
        name: String,
        /// The actor that asked.
        actor: u64,
        /// The revision at which the request was queued.
        queued_revision: u64,
        /// Whether the request was an upgrade; then the owner's hold is released whatever its
        /// token, since the caller cannot know it.
        upgrade: bool,
    },
    /// Create a queue with these options, or change the options of an existing one.
    QueueCreate {
        /// The queue, at most [`QUEUE_NAME_BYTES_MAX`] bytes.
        queue: String,
        /// Its options.
        options: QueueOptions,
    },
    /// Delete a queue and every message in it, delivered or not.
    QueueDelete {
        /// The queue.
        queue: String,
    },
    /// Enqueue messages, in order, as one operation (created with default options if the queue
    /// does not exist).
    QueuePut {
        /// The queue.
        queue: String,
        /// The messages, at most [`QUEUE_BATCH_MAX`].
        messages: Vec<PutMessage>,
    },
    /// Take up to `max` of the oldest deliverable messages, waiting up to `wait_ms` for the first.
    QueueGet {
        /// The queue (created with default options if it does not exist).
        queue: String,
        /// The client's id for this get, unique within its session; names the get in
        /// [`Request::AwaitDelivery`] and [`Command::QueueCancel`].
        request: u64,
        /// At most this many messages, 1..=[`QUEUE_BATCH_MAX`].
        max: u32,
        /// How long the messages stay invisible to other consumers; the queue's default if absent.
        visibility_ms: Option<u64>,
        /// How long to wait for a message when none is deliverable; 0 answers at once.
        wait_ms: u64,
        /// Whether the deliveries outlive the session: then only their visibility timeout (not the
        /// session's end) makes them deliverable again. For consumers that hand tags to another
        /// process, such as `distsync queue get` followed by `distsync queue ack`.
        detach: bool,
    },
    /// Delete delivered messages for good: each tag must name a message's current delivery.
    QueueAck {
        /// The queue.
        queue: String,
        /// Delivery tags.
        tags: Vec<u64>,
    },
    /// Make delivered messages deliverable again at once (or dead-letter them after their last
    /// attempt).
    QueueNack {
        /// The queue.
        queue: String,
        /// Delivery tags.
        tags: Vec<u64>,
    },
    /// Keep a delivered message invisible for `visibility_ms` from now.
    QueueExtend {
        /// The queue.
        queue: String,
        /// The delivery tag.
        tag: u64,
        /// The new visibility timeout, counted from the leader's clock when applied.
        visibility_ms: u64,
    },
    /// Set a cache key (the value goes to Redis by write-back; the directory holds it meanwhile).
    CacheSet {
        /// The key, at most [`KEY_BYTES_MAX`] bytes.
        key: Vec<u8>,
        /// The value, at most [`VALUE_BYTES_MAX`] bytes.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Time to live from the leader's stamp, at most [`CACHE_TTL_MS_MAX`]; none: no expiry.
        ttl_ms: Option<u64>,
    },
    /// Delete a cache key.
    CacheDelete {
        /// The key.
        key: Vec<u8>,
    },
    /// Give up a get whose caller stopped waiting: ends its wait, and makes any messages delivered
    /// to it deliverable again without counting that attempt (the caller never saw them).
    QueueCancel {
        /// The queue.
        queue: String,
        /// The get's id.
        request: u64,
    },
}

impl Command {
    /// The lock a lock command names.
    pub fn lock_name(&self) -> Option<&str> {
        self.resource_name(ResourceKind::Lock)
    }

    /// The queue a queue command names.
    pub fn queue_name(&self) -> Option<&str> {
        self.resource_name(ResourceKind::Queue)
    }

    /// The name of `kind` the command acts on (lock and queue names are UTF-8).
    fn resource_name(&self, kind: ResourceKind) -> Option<&str> {
        match self.resource() {
            Some((named, name)) if named == kind => std::str::from_utf8(name).ok(),
            _ => None,
        }
    }

    /// The name the command acts on, which its caller needs `write` on; `None` for commands on
    /// the caller's own session.
    pub fn resource(&self) -> Option<(ResourceKind, &[u8])> {
        match self {
            Command::KvPut { key, .. } | Command::KvDelete { key } => Some((ResourceKind::Kv, key)),
            Command::CacheSet { key, .. } | Command::CacheDelete { key } => Some((ResourceKind::Cache, key)),
            Command::CloseSession => None,
            Command::LockAcquire { name, .. }
            | Command::LockUpgrade { name, .. }
            | Command::LockRelease { name, .. }
            | Command::LockCancel { name, .. } => Some((ResourceKind::Lock, name.as_bytes())),
            Command::QueueCreate { queue, .. }
            | Command::QueueDelete { queue }
            | Command::QueuePut { queue, .. }
            | Command::QueueGet { queue, .. }
            | Command::QueueAck { queue, .. }
            | Command::QueueNack { queue, .. }
            | Command::QueueExtend { queue, .. }
            | Command::QueueCancel { queue, .. } => Some((ResourceKind::Queue, queue.as_bytes())),
        }
    }

    /// Checks sizes before the command is sent or proposed: each field against its own limit,
    /// then the whole command against [`WRITE_BYTES_MAX`].
    ///
    /// # Errors
    ///
    /// [`ServerError::InvalidArgument`] naming the offending field and its limit;
    /// [`ServerError::TooLarge`] for a command whose encoding exceeds [`WRITE_BYTES_MAX`] (a put
    /// batch of many large messages).
    pub fn validate(&self) -> Result<(), ServerError> {
        self.validate_fields()?;
        let bytes = encoded_bytes(self);
        if bytes > WRITE_BYTES_MAX {
            return Err(ServerError::TooLarge {
                what: "write".into(),
                bytes: bytes as u64,
                limit: WRITE_BYTES_MAX as u64,
            });
        }
        Ok(())
    }

    fn validate_fields(&self) -> Result<(), ServerError> {
        match self {
            Command::KvPut { key, value } => validate_key(key).and_then(|()| validate_value(value)),
            Command::KvDelete { key } | Command::CacheDelete { key } => validate_key(key),
            Command::CloseSession => Ok(()),
            Command::LockAcquire { name, wait, .. } | Command::LockUpgrade { name, wait, .. } => {
                validate_lock_request(name, wait)
            }
            Command::LockRelease { name, .. } | Command::LockCancel { name, .. } => validate_lock_name(name),
            Command::QueueCreate { queue, options } => validate_queue_name(queue).and_then(|()| options.validate()),
            Command::QueuePut { queue, messages } => {
                validate_queue_name(queue)?;
                validate_batch("put", messages.len())?;
                messages.iter().try_for_each(PutMessage::validate)
            }
            Command::QueueGet { queue, max, visibility_ms, wait_ms, .. } => {
                validate_queue_name(queue).and_then(|()| validate_get(*max, *visibility_ms, *wait_ms))
            }
            Command::QueueAck { queue, tags } | Command::QueueNack { queue, tags } => {
                validate_queue_name(queue).and_then(|()| validate_batch("ack", tags.len()))
            }
            Command::QueueExtend { queue, visibility_ms, .. } => {
                validate_queue_name(queue).and_then(|()| validate_visibility(*visibility_ms))
            }
            Command::QueueDelete { queue } | Command::QueueCancel { queue, .. } => validate_queue_name(queue),
            Command::CacheSet { key, value, ttl_ms } => {
                validate_key(key)?;
                validate_value(value)?;
                validate_ttl(*ttl_ms)
            }
        }
    }
}

/// A read served after the leader confirmed its leadership (read index).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Read a key of the replicated register.
    KvGet {
        /// The key.
        key: Vec<u8>,
    },
    /// Locks held or awaited, in name order, at most [`LOCK_LIST_PAGE_MAX`] per page.
    LockList {
        /// Start after this name (the last of the previous page).
        after: Option<String>,
    },
    /// One lock's holders and waiters.
    LockShow {
        /// The lock.
        name: String,
    },
    /// One queue's counters.
    QueueStats {
        /// The queue.
        queue: String,
    },
    /// Queues in name order, at most [`QUEUE_LIST_PAGE_MAX`] per page.
    QueueList {
        /// Start after this name (the last of the previous page).
        after: Option<String>,
    },
    /// Identities with grants, a disabled mark or open sessions, in name order, at most
    /// [`IDENTITY_LIST_PAGE_MAX`] per page. Admin only.
    Identities {
        /// Start after this identity (the last of the previous page).
        after: Option<String>,
    },
}

/// The state machine's answer to a command.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum CommandResponse {
    /// The key now holds the value; `version` is this write's revision.
    KvPut {
        /// Revision of the write: unique and increasing in commit order.
        version: u64,
    },
    /// The key is gone.
    KvDelete {
        /// Whether the key existed.
        existed: bool,
    },
    /// The session is closed.
    SessionClosed,
    /// The lock (or upgrade) was granted at once.
    LockGranted {
        /// The fencing token: strictly increasing per lock, across leader changes.
        token: u64,
    },
    /// The request waits in the lock's queue; follow with [`Request::AwaitLock`].
    LockQueued {
        /// The revision at which it was queued.
        revision: u64,
        /// Requests ahead of it.
        ahead: u64,
    },
    /// The hold was released.
    LockReleased,
    /// A queued request was given up.
    LockCancelled {
        /// Whether it had been granted meanwhile, and that hold was released.
        released: bool,
    },
    /// The queue was created, or its options changed.
    QueueCreated {
        /// False when it existed already (its options are now the given ones).
        created: bool,
    },
    /// The queue is gone.
    QueueDeleted {
        /// Messages it held, delivered or not.
        messages: u64,
    },
    /// The messages are enqueued (or were, for duplicates).
    QueuePut {
        /// One outcome per message, in order.
        outcomes: Vec<PutOutcome>,
    },
    /// A get's messages; empty when none was deliverable and the get did not wait.
    QueueDelivered {
        /// The deliveries, oldest message first.
        deliveries: Vec<QueueDelivery>,
    },
    /// The get waits for a message; follow with [`Request::AwaitDelivery`].
    QueueWaiting {
        /// The revision at which it started waiting.
        revision: u64,
    },
    /// Acked; tags that did not name a current delivery are listed and changed nothing.
    QueueAcked {
        /// Tags refused.
        stale: Vec<u64>,
    },
    /// Nacked; tags that did not name a current delivery are listed and changed nothing.
    QueueNacked {
        /// Tags refused.
        stale: Vec<u64>,
    },
    /// The delivery's visibility was extended.
    QueueExtended {
        /// Leader time at which it becomes visible again.
        visible_at_ms: u64,
    },
    /// The cache key is set.
    CacheSet {
        /// The write's version (its revision).
        version: u64,
    },
    /// The cache key is gone.
    CacheDeleted {
        /// Whether it was live.
        existed: bool,
    },
    /// The get was given up.
    QueueCancelled {
        /// Messages delivered to it that are deliverable again.
        returned: u64,
    },
}

/// The answer to a [`Query`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum QueryResponse {
    /// The value and version of a key, or `None` when absent.
    KvGet {
        /// Value and the revision that wrote it.
        value: Option<(Vec<u8>, u64)>,
    },
    /// A page of locks; the list continues after the last one when `more` is set.
    LockList {
        /// Locks, in name order.
        locks: Vec<LockInfo>,
        /// Whether more locks follow.
        more: bool,
    },
    /// One lock, or `None` when nobody holds or waits for it.
    LockShow {
        /// The lock.
        lock: Option<LockInfo>,
    },
    /// One queue's counters, or `None` when it does not exist.
    QueueStats {
        /// The counters.
        stats: Option<QueueStats>,
    },
    /// A page of queues; the list continues after the last one when `more` is set.
    QueueList {
        /// Queues, in name order.
        queues: Vec<QueueStats>,
        /// Whether more queues follow.
        more: bool,
    },
    /// A page of identities; the list continues after the last one when `more` is set.
    Identities {
        /// Identities, in name order.
        identities: Vec<IdentityInfo>,
        /// Whether more follow.
        more: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_validated() {
        let too_long_key = Command::KvPut { key: vec![b'k'; KEY_BYTES_MAX + 1], value: vec![] };
        assert!(matches!(too_long_key.validate(), Err(ServerError::InvalidArgument { .. })));
        let empty_key = Command::KvDelete { key: vec![] };
        assert!(matches!(empty_key.validate(), Err(ServerError::InvalidArgument { .. })));
        let too_big_value = Command::KvPut { key: b"k".to_vec(), value: vec![0; VALUE_BYTES_MAX + 1] };
        assert!(matches!(too_big_value.validate(), Err(ServerError::InvalidArgument { .. })));
        let fine = Command::KvPut { key: b"k".to_vec(), value: vec![0; VALUE_BYTES_MAX] };
        assert!(fine.validate().is_ok());
    }

    #[test]
    fn a_write_over_the_write_limit_is_too_large_whatever_its_fields() {
        let put = |messages: usize| Command::QueuePut {
            queue: "q".into(),
            messages: (0..messages)
                .map(|_| PutMessage { body: vec![1; super::super::QUEUE_MESSAGE_BYTES_MAX], dedup_id: None })
                .collect(),
        };
        assert!(put(3).validate().is_ok(), "3 MiB fits");
        match put(5).validate() {
            Err(ServerError::TooLarge { what, bytes, limit }) => {
                assert_eq!(what, "write");
                assert_eq!(limit, WRITE_BYTES_MAX as u64);
                assert_eq!(bytes, encoded_bytes(&put(5)) as u64);
                assert!(bytes > limit);
            }
            other => panic!("a 5 MiB put must be too large, got {other:?}"),
        }
    }
}
