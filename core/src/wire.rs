//! The client protocol: messages, their encoding and the frame codec.
//!
//! Every RPC is one bidirectional QUIC stream carrying one request frame and one reply frame. A
//! frame is a 4-byte big-endian length followed by that many bytes of [postcard] encoding. Frames
//! larger than [`FRAME_BYTES_MAX`] are refused before any of their body is read, so a peer cannot
//! make a node allocate unbounded memory.
//!
//! The peer protocol between nodes (Raft RPCs, forwarded writes) uses the same frame codec with
//! message types of its own, defined in `distsync-server`.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{FrameError, ServerError};

/// ALPN protocol name of client connections.
pub const ALPN_CLIENT: &[u8] = b"distsync-client/1";

/// ALPN protocol name of node-to-node connections; the node presenting it must show a node
/// certificate signed by the cluster CA.
pub const ALPN_PEER: &[u8] = b"distsync-peer/1";

/// Largest frame accepted on any stream: 16 MiB. It bounds the memory one request can pin on a
/// node. Raft batches and snapshot chunks are sized below it (snapshot chunks are 4 MiB).
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Largest key of the replicated register: 4 KiB, like etcd's practical limit for keys; longer
/// keys are almost always a bug in the caller.
pub const KEY_BYTES_MAX: usize = 4 * 1024;

/// Largest value of the replicated register: 1 MiB. Values travel through the Raft log, so every
/// byte is written to a majority of disks; large blobs belong in a blob store.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;

/// Shortest session TTL a client may ask for: below a few election timeouts a session would
/// expire during an ordinary leader change.
pub const SESSION_TTL_MIN: Duration = Duration::from_secs(1);

/// Longest session TTL: a crashed client's locks must come free within a bounded time.
pub const SESSION_TTL_MAX: Duration = Duration::from_secs(3600);

/// A node id; ids are 1-based and never reused for a different disk.
pub type NodeId = u64;

/// A client session id: the revision of the operation that opened it (unique, increasing).
///
/// A **revision** is the cluster's operation counter: every applied operation takes the next one,
/// in log order, like etcd's revision. Key versions are revisions too.
pub type SessionId = u64;

/// A node's id and the address clients use to reach it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader's node id.
    pub id: NodeId,
    /// The leader's client address, `host:port`.
    pub address: String,
}

/// A request from a client to a node.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum Request {
    /// Open a session with the given time to live, in milliseconds.
    OpenSession {
        /// How long the session lives without a keepalive.
        ttl_ms: u64,
    },
    /// Keep a session alive for another TTL.
    KeepAlive {
        /// The session to extend.
        session: SessionId,
    },
    /// A state-changing command under a session, exactly once.
    Write(WriteRequest),
    /// A linearizable read.
    Read(Query),
    /// This node's own view of the cluster; answered locally, never forwarded.
    Status,
    /// Waits, on the node that receives it, until a queued lock request of `owner` is decided:
    /// granted, timed out, or ended with its session. Answered from the node's applied state as
    /// soon as the deciding entry is applied there (a push within one round trip), or with
    /// [`LockAwaitOutcome::Pending`] after `max_wait_ms`. Never forwarded.
    AwaitLock {
        /// The lock.
        name: String,
        /// The waiting owner.
        owner: Owner,
        /// The revision at which the request was queued, from [`CommandResponse::LockQueued`].
        queued_revision: u64,
        /// How long the node may hold the request open, at most [`AWAIT_MS_MAX`].
        max_wait_ms: u64,
    },
    /// Waits, on the node that receives it, until `session` ends (expired or closed), so that a
    /// client holding locks learns at once that it lost them. Answers
    /// [`Response::SessionWatch`] when the session ends or after `max_wait_ms`. Never forwarded.
    WatchSession {
        /// The session.
        session: SessionId,
        /// How long the node may hold the request open, at most [`AWAIT_MS_MAX`].
        max_wait_ms: u64,
    },
    /// Waits, on the node that receives it, until a waiting queue get of `session` is decided:
    /// messages were delivered to it, its wait ended empty, or its session ended. Answered from
    /// the node's applied state as soon as the deciding entry is applied there, or with
    /// [`QueueAwaitOutcome::Pending`] after `max_wait_ms`. Never forwarded.
    AwaitDelivery {
        /// The queue.
        queue: String,
        /// The consumer's session.
        session: SessionId,
        /// The client's id of the get, from [`Command::QueueGet`].
        request: u64,
        /// The revision at which the get started waiting, from [`CommandResponse::QueueWaiting`].
        queued_revision: u64,
        /// How long the node may hold the request open, at most [`AWAIT_MS_MAX`].
        max_wait_ms: u64,
    },
    /// Read cache keys on the node that receives it (never forwarded: each node has its own
    /// cache). Answered by [`Response::CacheValues`], one slot per key in order; an answer may
    /// cover only a prefix of the keys when their values exceed [`CACHE_GET_BYTES_MAX`], and
    /// the client asks again for the rest.
    CacheGet {
        /// The keys, 1..=[`CACHE_GET_KEYS_MAX`].
        keys: Vec<Vec<u8>>,
        /// How fresh the answer must be.
        consistency: Consistency,
    },
    /// This node's view of one cache key: its directory entry and the node's own copy with its
    /// MESI state. Answered locally, never forwarded.
    CacheShow {
        /// The key.
        key: Vec<u8>,
    },
    /// This node's cache counters. Answered locally, never forwarded.
    CacheStats,
    /// Internal, between nodes: which cache copies a node loaded or dropped, and which values
    /// Redis no longer holds. Refused from clients.
    CacheReport(CacheReport),
    /// Test-only fault injection: silently drop all Raft traffic to and from these peers. Refused
    /// unless the node was started with `--enable-fault-injection`. An empty list heals.
    SetDroppedPeers {
        /// Peers to cut off.
        peers: Vec<NodeId>,
    },
}

/// A command applied through the Raft log, carrying the session and sequence number that make a
/// retry return the first answer instead of applying twice (Raft dissertation §6.3).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WriteRequest {
    /// The session the command belongs to.
    pub session: SessionId,
    /// The client's sequence number for this command, starting at 1 and never reused.
    pub seq: u64,
    /// Every sequence number below this one has been answered to the client, so the cluster may
    /// forget their stored responses.
    pub acked_below: u64,
    /// What to do.
    pub command: Command,
}

/// A state-changing command.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Set a key of the replicated register.
    KvPut {
        /// The key, at most [`KEY_BYTES_MAX`] bytes.
        key: Vec<u8>,
        /// The value, at most [`VALUE_BYTES_MAX`] bytes.
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

/// One message to enqueue.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PutMessage {
    /// The payload, at most the queue's `max_message_bytes`.
    pub body: Vec<u8>,
    /// A producer-chosen id: a put repeating an id seen within the queue's dedup window
    /// enqueues nothing and answers the first message's id.
    pub dedup_id: Option<String>,
}

impl PutMessage {
    /// Checks the body against [`QUEUE_MESSAGE_BYTES_MAX`] and the dedup id's length.
    ///
    /// # Errors
    ///
    /// [`ServerError::InvalidArgument`] saying which limit.
    pub fn validate(&self) -> Result<(), ServerError> {
        if self.body.len() > QUEUE_MESSAGE_BYTES_MAX {
            return Err(ServerError::InvalidArgument {
                reason: format!("message is {} bytes, the maximum is {QUEUE_MESSAGE_BYTES_MAX}", self.body.len()),
            });
        }
        match &self.dedup_id {
            Some(id) if id.is_empty() || id.len() > QUEUE_DEDUP_ID_BYTES_MAX => Err(ServerError::InvalidArgument {
                reason: format!("dedup id is {} bytes; it must be 1..={QUEUE_DEDUP_ID_BYTES_MAX}", id.len()),
            }),
            _ => Ok(()),
        }
    }
}

/// The outcome of one message of a put.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    /// The message id: a revision, unique in the cluster and increasing in enqueue order.
    pub id: u64,
    /// Whether the dedup id was seen before, so nothing was enqueued and `id` is the first
    /// message's.
    pub duplicate: bool,
}

/// A queue's options. [`QueueOptions::default`] is what a queue created on first use gets.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueOptions {
    /// Deliveries per message before it moves to the dead-letter queue `NAME.dlq`; 0 means
    /// never (dead-letter queues themselves use 0). Default 5.
    pub max_attempts: u32,
    /// Default visibility timeout of a delivery, in ms. Default 30 s.
    pub visibility_ms: u64,
    /// Largest message body, in bytes, at most [`QUEUE_MESSAGE_BYTES_MAX`]. Default 256 KiB.
    pub max_message_bytes: u32,
    /// How long a dedup id is remembered, in ms. Default 2 minutes.
    pub dedup_window_ms: u64,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions { max_attempts: 5, visibility_ms: 30_000, max_message_bytes: 256 * 1024, dedup_window_ms: 120_000 }
    }
}

impl QueueOptions {
    /// Checks the options' ranges.
    ///
    /// # Errors
    ///
    /// [`ServerError::InvalidArgument`] naming the option and its range.
    pub fn validate(&self) -> Result<(), ServerError> {
        let invalid = |reason: String| Err(ServerError::InvalidArgument { reason });
        if self.max_attempts > QUEUE_ATTEMPTS_MAX {
            return invalid(format!(
                "max attempts {} exceeds {QUEUE_ATTEMPTS_MAX}; use 0 for never dead-lettering",
                self.max_attempts
            ));
        }
        validate_visibility(self.visibility_ms)?;
        if self.max_message_bytes == 0 || self.max_message_bytes as usize > QUEUE_MESSAGE_BYTES_MAX {
            return invalid(format!(
                "max message bytes {} is outside 1..={QUEUE_MESSAGE_BYTES_MAX}",
                self.max_message_bytes
            ));
        }
        if self.dedup_window_ms > QUEUE_DEDUP_WINDOW_MS_MAX {
            return invalid(format!(
                "dedup window of {} ms exceeds {QUEUE_DEDUP_WINDOW_MS_MAX} ms",
                self.dedup_window_ms
            ));
        }
        Ok(())
    }
}

/// Largest queue name, in bytes.
pub const QUEUE_NAME_BYTES_MAX: usize = 256;

/// Largest message body any queue accepts: 1 MiB, like a register value; every byte is written
/// to a majority of disks and held in memory until acked.
pub const QUEUE_MESSAGE_BYTES_MAX: usize = 1024 * 1024;

/// Messages per put batch and per get, at most.
pub const QUEUE_BATCH_MAX: usize = 1000;

/// Bytes of message bodies one get returns, at most (at least one message is always returned).
pub const QUEUE_GET_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Largest max-attempts setting.
pub const QUEUE_ATTEMPTS_MAX: u32 = 1000;

/// Visibility timeouts range from 100 ms to 12 hours.
pub const QUEUE_VISIBILITY_MS_MIN: u64 = 100;

/// See [`QUEUE_VISIBILITY_MS_MIN`].
pub const QUEUE_VISIBILITY_MS_MAX: u64 = 12 * 3600 * 1000;

/// Longest dedup window: a day.
pub const QUEUE_DEDUP_WINDOW_MS_MAX: u64 = 24 * 3600 * 1000;

/// Longest dedup id, in bytes.
pub const QUEUE_DEDUP_ID_BYTES_MAX: usize = 256;

/// Longest wait of one get; a consumer that waits longer asks again.
pub const QUEUE_WAIT_MS_MAX: u64 = 3600 * 1000;

/// Queues listed per page by [`Query::QueueList`].
pub const QUEUE_LIST_PAGE_MAX: usize = 1000;

/// The suffix of a queue's dead-letter queue: messages of `jobs` that used up their attempts
/// move to `jobs.dlq`.
pub const DEAD_LETTER_SUFFIX: &str = ".dlq";

/// How one delivery attempt of a message ended without an ack.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The consumer nacked it.
    Nacked,
    /// Its visibility timeout passed.
    TimedOut,
    /// The consumer's session ended (the consumer crashed, was cut off, or closed).
    SessionEnded,
}

impl AttemptOutcome {
    /// Lowercase name, as printed by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Nacked => "nacked",
            AttemptOutcome::TimedOut => "timed_out",
            AttemptOutcome::SessionEnded => "session_ended",
        }
    }
}

/// One earlier delivery attempt of a message.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    /// The queue it was delivered from (the original queue, for a dead-lettered message).
    pub queue: String,
    /// Its attempt number in that queue, from 1.
    pub attempt: u32,
    /// The consumer's session.
    pub session: SessionId,
    /// Leader time of the delivery, ms since the Unix epoch.
    pub delivered_ms: u64,
    /// Leader time the attempt ended.
    pub ended_ms: u64,
    /// How it ended.
    pub outcome: AttemptOutcome,
}

/// A delivered message, as a get returns it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct QueueDelivery {
    /// The message id.
    pub id: u64,
    /// The delivery tag: names this delivery attempt only, so an ack with the tag of an earlier
    /// attempt is refused.
    pub tag: u64,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// The payload.
    pub body: Vec<u8>,
    /// Leader time of the enqueue, ms since the Unix epoch.
    pub enqueued_ms: u64,
    /// Leader time at which the delivery becomes visible again unless acked or extended.
    pub visible_at_ms: u64,
    /// Earlier attempts that ended without an ack, oldest first (at most the latest 32).
    pub history: Vec<DeliveryAttempt>,
}

/// A queue's counters, as `queue stats` shows them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// The queue.
    pub name: String,
    /// Its options.
    pub options: QueueOptions,
    /// Messages ready for delivery.
    pub depth: u64,
    /// Messages delivered and neither acked nor returned yet.
    pub in_flight: u64,
    /// Gets waiting for a message.
    pub waiting_consumers: u64,
    /// Messages moved to the dead-letter queue since the queue was created.
    pub dead_lettered: u64,
    /// Messages enqueued since the queue was created (duplicates excluded).
    pub put_total: u64,
    /// Messages acked since the queue was created.
    pub acked_total: u64,
    /// Bytes of message bodies held.
    pub bytes: u64,
    /// Age of the oldest message not yet acked, by the latest leader time, in ms.
    pub oldest_age_ms: Option<u64>,
}

/// How a [`Request::AwaitDelivery`] ended.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum QueueAwaitOutcome {
    /// Messages were delivered to the get.
    Delivered(Vec<QueueDelivery>),
    /// Still waiting; ask again.
    Pending,
    /// The wait ended with nothing delivered (its limit passed, it was cancelled, or the queue
    /// was deleted).
    Empty,
    /// The consumer's session ended, and with it the wait.
    SessionEnded,
}

/// Checks a visibility timeout's range.
///
/// # Errors
///
/// [`ServerError::InvalidArgument`] outside [`QUEUE_VISIBILITY_MS_MIN`]..=[`QUEUE_VISIBILITY_MS_MAX`].
pub fn validate_visibility(visibility_ms: u64) -> Result<(), ServerError> {
    if !(QUEUE_VISIBILITY_MS_MIN..=QUEUE_VISIBILITY_MS_MAX).contains(&visibility_ms) {
        return Err(ServerError::InvalidArgument {
            reason: format!(
                "visibility timeout of {visibility_ms} ms is outside {QUEUE_VISIBILITY_MS_MIN}..={QUEUE_VISIBILITY_MS_MAX} ms"
            ),
        });
    }
    Ok(())
}

/// Checks a queue name: 1 to [`QUEUE_NAME_BYTES_MAX`] bytes (plus [`DEAD_LETTER_SUFFIX`], so that
/// every queue's dead-letter queue can be named), no control characters or spaces.
///
/// # Errors
///
/// [`ServerError::InvalidArgument`] saying what is wrong.
pub fn validate_queue_name(name: &str) -> Result<(), ServerError> {
    if name.is_empty() {
        return Err(ServerError::InvalidArgument { reason: "queue name is empty".into() });
    }
    if name.len() > QUEUE_NAME_BYTES_MAX + DEAD_LETTER_SUFFIX.len() {
        return Err(ServerError::InvalidArgument {
            reason: format!(
                "queue name is {} bytes, the maximum is {QUEUE_NAME_BYTES_MAX} (plus the `{DEAD_LETTER_SUFFIX}` suffix of a \
                 dead-letter queue)",
                name.len()
            ),
        });
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ServerError::InvalidArgument {
            reason: format!("queue name {name:?} contains whitespace or control characters"),
        });
    }
    Ok(())
}

/// Longest cache TTL: a year.
pub const CACHE_TTL_MS_MAX: u64 = 365 * 24 * 3600 * 1000;

/// Keys per [`Request::CacheGet`].
pub const CACHE_GET_KEYS_MAX: usize = 1000;

/// Value bytes one [`Response::CacheValues`] carries before it stops short of the remaining keys.
pub const CACHE_GET_BYTES_MAX: usize = 8 * 1024 * 1024;

/// How fresh a cache read must be.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// The read reflects every write acknowledged before it began (the node confirms it is
    /// current with the leader first: a read index).
    #[default]
    Linearizable,
    /// The node answers from what it has applied, without asking the leader: faster, and may
    /// miss writes acknowledged moments ago (or longer, if the node is cut off).
    Local,
}

/// A cache value with the version (revision) of the write that set it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CacheValue {
    /// The version.
    pub version: u64,
    /// The value.
    pub value: Vec<u8>,
}

/// A node's report to the leader about its cache copies; see [`Request::CacheReport`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheReport {
    /// The reporting node.
    pub node: NodeId,
    /// The node dropped every copy (it restarted or installed a snapshot): forget all it held.
    pub reset: bool,
    /// Copies it now holds: (key, version).
    pub loaded: Vec<(Vec<u8>, u64)>,
    /// Copies it no longer holds.
    pub dropped: Vec<Vec<u8>>,
    /// (key, version) that Redis no longer holds (evicted, or Redis lost data): the key is gone.
    pub lost: Vec<(Vec<u8>, u64)>,
}

/// The MESI state of a node's copy of a cache key.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MesiState {
    /// Written through this node and committed; the write-back to Redis is pending.
    Modified,
    /// A clean copy that no other node holds.
    Exclusive,
    /// A clean copy that other nodes may hold too.
    Shared,
    /// Invalidated by a later write (or expiry, or deletion): never served.
    Invalid,
}

impl MesiState {
    /// The one-letter name: M, E, S or I.
    pub fn letter(self) -> char {
        match self {
            Self::Modified => 'M',
            Self::Exclusive => 'E',
            Self::Shared => 'S',
            Self::Invalid => 'I',
        }
    }
}

/// A directory entry as one node sees it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CacheDirectoryView {
    /// The current version.
    pub version: u64,
    /// Whether the value is still waiting for write-back to Redis.
    pub pending: bool,
    /// Leader time at which the key expires.
    pub expires_at_ms: Option<u64>,
    /// Nodes that reported a copy of this version.
    pub holders: Vec<NodeId>,
}

/// A node's own copy of a cache key.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CacheCopyView {
    /// Its MESI state.
    pub state: MesiState,
    /// The version it holds (or held, when invalid).
    pub version: u64,
    /// Bytes of the value (0 when invalid).
    pub bytes: u64,
}

/// One node's view of one cache key, answered to [`Request::CacheShow`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CacheKeyView {
    /// The node.
    pub node: NodeId,
    /// Its applied log index.
    pub applied: u64,
    /// The live directory entry, if the key exists.
    pub directory: Option<CacheDirectoryView>,
    /// The node's copy, if it has one.
    pub copy: Option<CacheCopyView>,
}

/// One node's cache counters (since it started) and contents, answered to [`Request::CacheStats`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheNodeStats {
    /// The node.
    pub node: NodeId,
    /// Where values live: `redis://…`, or `embedded` (values stay in the replicated log).
    pub backing: String,
    /// Reads served from the node's copy.
    pub hits: u64,
    /// Reads that fetched the value from Redis.
    pub misses: u64,
    /// Reads served from the directory, the value waiting for write-back.
    pub pending_reads: u64,
    /// Reads of absent keys.
    pub absent_reads: u64,
    /// Copies invalidated by writes, deletions and expiries.
    pub invalidations: u64,
    /// Copies evicted to make room.
    pub evictions: u64,
    /// Fetched values the admission policy kept out of the cache.
    pub rejected: u64,
    /// Writes this node wrote back to Redis as leader.
    pub write_backs: u64,
    /// Failed write-back attempts (Redis unreachable); they are retried.
    pub write_back_failures: u64,
    /// Writes in the directory still waiting for write-back.
    pub pending_write_backs: u64,
    /// Values Redis no longer held when read (evicted or lost); those keys read as absent.
    pub lost: u64,
    /// Copies in state M.
    pub modified: u64,
    /// Copies in state E.
    pub exclusive: u64,
    /// Copies in state S.
    pub shared: u64,
    /// Copies in state I.
    pub invalid: u64,
    /// Bytes the copies take.
    pub bytes: u64,
    /// The cache's byte budget.
    pub capacity_bytes: u64,
    /// The cache's entry budget.
    pub capacity_entries: u64,
}

impl CacheNodeStats {
    /// Reads served locally (hits) over reads of present keys, or 0 without reads.
    pub fn hit_rate(&self) -> f64 {
        let reads = self.hits + self.misses + self.pending_reads;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }
}

/// Largest lock name, in bytes: names are identifiers, not data.
pub const LOCK_NAME_BYTES_MAX: usize = 1024;

/// Longest a node holds an [`Request::AwaitLock`] or [`Request::WatchSession`] open before
/// answering "still pending"; the client asks again. Bounds how long a dead client's request
/// pins a task on a node.
pub const AWAIT_MS_MAX: u64 = 30_000;

/// Longest lock wait a client may ask for (a day); longer waits use [`LockWait::Forever`].
pub const LOCK_WAIT_MS_MAX: u64 = 24 * 3600 * 1000;

/// Locks listed per page by [`Query::LockList`]: keeps one answer far below the frame limit.
pub const LOCK_LIST_PAGE_MAX: usize = 1000;

/// Who holds or waits for a lock: an actor (thread, task, handle) inside a client session. Two
/// actors of one session exclude each other exactly as two sessions do.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    /// The session the actor belongs to.
    pub session: SessionId,
    /// The actor, chosen by the client.
    pub actor: u64,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "session {} actor {:#x}", self.session, self.actor)
    }
}

/// Lock mode.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// One holder.
    Exclusive,
    /// Any number of holders, and no exclusive one.
    Shared,
}

impl LockMode {
    /// Lowercase name, as printed by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Exclusive => "exclusive",
            LockMode::Shared => "shared",
        }
    }
}

/// Whether and how long a lock request waits.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWait {
    /// Fail at once with `WouldBlock` if the lock cannot be granted now.
    Try,
    /// Wait at most this long, counted from the leader's clock when the request is applied.
    TimeoutMs(u64),
    /// Wait until granted or until the session ends.
    Forever,
}

/// One holder of a lock.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// Who holds it.
    pub owner: Owner,
    /// In which mode.
    pub mode: LockMode,
    /// The fencing token of this grant.
    pub token: u64,
    /// Leader-stamped time of the grant, ms since the Unix epoch.
    pub since_ms: u64,
}

/// One queued lock request.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LockWaiter {
    /// Who waits.
    pub owner: Owner,
    /// For which mode.
    pub mode: LockMode,
    /// Whether this is an upgrade of a shared hold the owner keeps while waiting.
    pub upgrade: bool,
    /// When the wait ends without a grant (leader time, ms since the Unix epoch), if ever.
    pub deadline_ms: Option<u64>,
    /// Leader-stamped time the wait began.
    pub since_ms: u64,
}

/// A lock as seen by `lock show`: its holders and its waiters in the order they are served.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// The lock.
    pub name: String,
    /// Current holders: one exclusive, or any number shared.
    pub holders: Vec<LockHolder>,
    /// Waiters in the order they are served.
    pub waiters: Vec<LockWaiter>,
}

/// How an [`Request::AwaitLock`] ended.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockAwaitOutcome {
    /// The request was granted with this fencing token.
    Granted {
        /// The fencing token.
        token: u64,
    },
    /// Still waiting; ask again.
    Pending,
    /// The wait ended without a grant: its deadline passed, or the request was cancelled.
    TimedOut,
    /// The owner's session ended, and with it the wait.
    SessionEnded,
}

impl Command {
    /// The lock a lock command names.
    pub fn lock_name(&self) -> Option<&str> {
        match self {
            Command::LockAcquire { name, .. }
            | Command::LockUpgrade { name, .. }
            | Command::LockRelease { name, .. }
            | Command::LockCancel { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The queue a queue command names.
    pub fn queue_name(&self) -> Option<&str> {
        match self {
            Command::QueueCreate { queue, .. }
            | Command::QueueDelete { queue }
            | Command::QueuePut { queue, .. }
            | Command::QueueGet { queue, .. }
            | Command::QueueAck { queue, .. }
            | Command::QueueNack { queue, .. }
            | Command::QueueExtend { queue, .. }
            | Command::QueueCancel { queue, .. } => Some(queue),
            _ => None,
        }
    }

    /// Checks sizes before the command is sent or proposed.
    ///
    /// # Errors
    ///
    /// [`ServerError::InvalidArgument`] naming the offending field and its limit.
    pub fn validate(&self) -> Result<(), ServerError> {
        match self {
            Command::KvPut { key, value } => {
                validate_key(key)?;
                if value.len() > VALUE_BYTES_MAX {
                    return Err(ServerError::InvalidArgument {
                        reason: format!("value is {} bytes, the maximum is {VALUE_BYTES_MAX}", value.len()),
                    });
                }
                Ok(())
            }
            Command::KvDelete { key } => validate_key(key),
            Command::CloseSession => Ok(()),
            Command::LockAcquire { name, wait, .. } | Command::LockUpgrade { name, wait, .. } => {
                validate_lock_name(name)?;
                match wait {
                    LockWait::TimeoutMs(ms) if *ms > LOCK_WAIT_MS_MAX => Err(ServerError::InvalidArgument {
                        reason: format!("lock wait of {ms} ms exceeds {LOCK_WAIT_MS_MAX} ms; wait forever instead"),
                    }),
                    _ => Ok(()),
                }
            }
            Command::LockRelease { name, .. } | Command::LockCancel { name, .. } => validate_lock_name(name),
            Command::QueueCreate { queue, options } => {
                validate_queue_name(queue)?;
                options.validate()
            }
            Command::QueuePut { queue, messages } => {
                validate_queue_name(queue)?;
                validate_batch("put", messages.len())?;
                messages.iter().try_for_each(PutMessage::validate)
            }
            Command::QueueGet { queue, max, visibility_ms, wait_ms, .. } => {
                validate_queue_name(queue)?;
                validate_batch("get", *max as usize)?;
                if let Some(visibility_ms) = visibility_ms {
                    validate_visibility(*visibility_ms)?;
                }
                if *wait_ms > QUEUE_WAIT_MS_MAX {
                    return Err(ServerError::InvalidArgument {
                        reason: format!("get wait of {wait_ms} ms exceeds {QUEUE_WAIT_MS_MAX} ms; ask again instead"),
                    });
                }
                Ok(())
            }
            Command::QueueAck { queue, tags } | Command::QueueNack { queue, tags } => {
                validate_queue_name(queue)?;
                validate_batch("ack", tags.len())
            }
            Command::QueueExtend { queue, visibility_ms, .. } => {
                validate_queue_name(queue)?;
                validate_visibility(*visibility_ms)
            }
            Command::QueueDelete { queue } | Command::QueueCancel { queue, .. } => validate_queue_name(queue),
            Command::CacheSet { key, value, ttl_ms } => {
                validate_key(key)?;
                if value.len() > VALUE_BYTES_MAX {
                    return Err(ServerError::InvalidArgument {
                        reason: format!("value is {} bytes, the maximum is {VALUE_BYTES_MAX}", value.len()),
                    });
                }
                match ttl_ms {
                    Some(0) => Err(ServerError::InvalidArgument { reason: "a TTL of 0 expires at once".into() }),
                    Some(ms) if *ms > CACHE_TTL_MS_MAX => Err(ServerError::InvalidArgument {
                        reason: format!("TTL of {ms} ms exceeds {CACHE_TTL_MS_MAX} ms; set no TTL instead"),
                    }),
                    _ => Ok(()),
                }
            }
            Command::CacheDelete { key } => validate_key(key),
        }
    }
}

/// Checks that a batch has 1..=[`QUEUE_BATCH_MAX`] items.
fn validate_batch(what: &str, items: usize) -> Result<(), ServerError> {
    if items == 0 || items > QUEUE_BATCH_MAX {
        return Err(ServerError::InvalidArgument {
            reason: format!("a {what} takes 1..={QUEUE_BATCH_MAX} items, not {items}"),
        });
    }
    Ok(())
}

/// Checks a register key against [`KEY_BYTES_MAX`].
///
/// # Errors
///
/// [`ServerError::InvalidArgument`] for an empty or oversized key.
pub fn validate_key(key: &[u8]) -> Result<(), ServerError> {
    if key.is_empty() {
        return Err(ServerError::InvalidArgument { reason: "key is empty".into() });
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(ServerError::InvalidArgument {
            reason: format!("key is {} bytes, the maximum is {KEY_BYTES_MAX}", key.len()),
        });
    }
    Ok(())
}

/// Checks a lock name against [`LOCK_NAME_BYTES_MAX`].
///
/// # Errors
///
/// [`ServerError::InvalidArgument`] for an empty or oversized name.
pub fn validate_lock_name(name: &str) -> Result<(), ServerError> {
    if name.is_empty() {
        return Err(ServerError::InvalidArgument { reason: "lock name is empty".into() });
    }
    if name.len() > LOCK_NAME_BYTES_MAX {
        return Err(ServerError::InvalidArgument {
            reason: format!("lock name is {} bytes, the maximum is {LOCK_NAME_BYTES_MAX}", name.len()),
        });
    }
    Ok(())
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
}

/// Raft role of a node.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves writes and linearizable reads.
    Leader,
    /// Replicates the leader's log.
    Follower,
    /// Asking for votes.
    Candidate,
    /// Receives the log without voting.
    Learner,
    /// Stopping.
    Shutdown,
}

impl Role {
    /// Lowercase name, as printed by `distsync status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

/// When a node last heard from one of its peers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's id.
    pub id: NodeId,
    /// The peer's address.
    pub address: String,
    /// Milliseconds since the last message from or answer by this peer; `None` if never.
    pub last_heard_ms: Option<u64>,
}

/// One node's own view, as answered to [`Request::Status`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node's id.
    pub id: NodeId,
    /// This node's client address.
    pub address: String,
    /// Raft role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Index of the last entry in this node's log.
    pub last_log_index: u64,
    /// Highest index this node knows to be committed.
    pub committed: u64,
    /// Highest index applied to this node's state machine.
    pub applied: u64,
    /// Index covered by the latest snapshot.
    pub snapshot: u64,
    /// A digest of the replicated state at `applied`; equal on nodes with equal `applied`.
    pub state_digest: u64,
    /// Number of open sessions in the state machine.
    pub sessions: u64,
    /// Number of keys in the replicated register.
    pub keys: u64,
    /// Locks held or awaited.
    pub locks: u64,
    /// Queues, dead-letter queues included.
    pub queues: u64,
    /// Peers, with how long ago this node heard from each.
    pub peers: Vec<PeerStatus>,
}

/// Every reply: the body, plus the leader this node knows of, so that a client talking to a
/// follower learns where to go next time.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Reply {
    /// The leader known to the answering node.
    pub leader: Option<LeaderInfo>,
    /// The answer.
    pub body: Result<Response, ServerError>,
}

/// The successful answers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// A session was opened.
    SessionOpened {
        /// Its id.
        session: SessionId,
        /// Its TTL as granted.
        ttl_ms: u64,
    },
    /// The session was extended.
    KeptAlive,
    /// A command was applied (or had been, for a retry).
    Written(CommandResponse),
    /// A query's answer.
    Read(QueryResponse),
    /// A node's status.
    Status(Box<NodeStatus>),
    /// Done, nothing to report.
    Done,
    /// The answer to [`Request::AwaitLock`].
    LockAwait(LockAwaitOutcome),
    /// The answer to [`Request::AwaitDelivery`].
    QueueAwait(QueueAwaitOutcome),
    /// The answer to [`Request::WatchSession`]: whether the session is still open.
    SessionWatch {
        /// False once the session has ended.
        alive: bool,
    },
    /// The answer to [`Request::CacheGet`]: one slot per key (`None`: absent), possibly for
    /// only a prefix of the keys.
    CacheValues(Vec<Option<CacheValue>>),
    /// The answer to [`Request::CacheShow`].
    CacheShow(Box<CacheKeyView>),
    /// The answer to [`Request::CacheStats`].
    CacheStats(Box<CacheNodeStats>),
}

/// Encodes a message as one frame: 4-byte big-endian length, then postcard bytes.
///
/// # Errors
///
/// [`FrameError::TooLarge`] when the encoding exceeds [`FRAME_BYTES_MAX`];
/// [`FrameError::Malformed`] if the value cannot be encoded.
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut buffer =
        postcard::to_extend(message, vec![0u8; 4]).map_err(|e| FrameError::Malformed { reason: e.to_string() })?;
    let body_bytes = buffer.len() - 4;
    if body_bytes > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge { bytes: body_bytes, max: FRAME_BYTES_MAX });
    }
    buffer[..4].copy_from_slice(&(body_bytes as u32).to_be_bytes());
    Ok(buffer)
}

/// Decodes a frame body (without its length prefix).
///
/// # Errors
///
/// [`FrameError::Malformed`] when the bytes are not a valid encoding of `T`.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    postcard::from_bytes(body).map_err(|e| FrameError::Malformed { reason: e.to_string() })
}

/// Writes one frame and finishes the sending side of the stream.
///
/// # Errors
///
/// [`FrameError::Io`] when the stream fails.
pub async fn write_frame(send: &mut quinn::SendStream, frame: &[u8]) -> Result<(), FrameError> {
    send.write_all(frame).await.map_err(|e| FrameError::Io { reason: e.to_string() })?;
    // Finishing can only fail if the stream was already finished or reset, which would have
    // failed the write above.
    let _ = send.finish();
    Ok(())
}

/// Reads one frame body, refusing lengths above `max_bytes` before reading the body.
///
/// # Errors
///
/// [`FrameError::TooLarge`] for an oversized length prefix, [`FrameError::Io`] when the stream
/// ends early or fails.
pub async fn read_frame(recv: &mut quinn::RecvStream, max_bytes: usize) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix).await.map_err(|e| FrameError::Io { reason: e.to_string() })?;
    let body_bytes = u32::from_be_bytes(prefix) as usize;
    if body_bytes > max_bytes {
        return Err(FrameError::TooLarge { bytes: body_bytes, max: max_bytes });
    }
    let mut body = vec![0u8; body_bytes];
    recv.read_exact(&mut body).await.map_err(|e| FrameError::Io { reason: e.to_string() })?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_keeps_the_message() {
        let request = Request::Write(WriteRequest {
            session: 7,
            seq: 3,
            acked_below: 2,
            command: Command::KvPut { key: b"k".to_vec(), value: vec![1, 2, 3] },
        });
        let frame = encode_frame(&request).unwrap();
        let length = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(length, frame.len() - 4);
        let decoded: Request = decode_body(&frame[4..]).unwrap();
        match decoded {
            Request::Write(write) => {
                assert_eq!((write.session, write.seq, write.acked_below), (7, 3, 2));
                assert_eq!(write.command, Command::KvPut { key: b"k".to_vec(), value: vec![1, 2, 3] });
            }
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn garbage_is_a_typed_error() {
        let error = decode_body::<Request>(&[0xff, 0xff, 0xff, 0xff, 0x01]).unwrap_err();
        assert!(matches!(error, FrameError::Malformed { .. }), "{error:?}");
    }

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
}

/// The encodings of commands and their answers are part of the Raft log and of snapshots on
/// every node's disk (stored answers for exactly-once retries), so they must not change by
/// accident: a reordered variant or field would make an upgraded node misread its own log.
/// These pin one message of every variant byte for byte.
#[cfg(test)]
mod encoding_tests {
    use super::*;
    use crate::error::{LockRefusal, QueueRefusal};

    fn hex(value: &impl Serialize) -> String {
        postcard::to_stdvec(value).unwrap().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn commands() -> Vec<Command> {
        let name = || "n".to_string();
        vec![
            Command::KvPut { key: b"k".to_vec(), value: b"v".to_vec() },
            Command::KvDelete { key: b"k".to_vec() },
            Command::CloseSession,
            Command::LockAcquire { name: name(), actor: 7, mode: LockMode::Shared, wait: LockWait::TimeoutMs(5) },
            Command::LockUpgrade { name: name(), actor: 7, wait: LockWait::Forever },
            Command::LockRelease { name: name(), actor: 7, token: 9 },
            Command::LockCancel { name: name(), actor: 7, queued_revision: 3, upgrade: true },
            Command::QueueCreate { queue: name(), options: QueueOptions::default() },
            Command::QueueDelete { queue: name() },
            Command::QueuePut {
                queue: name(),
                messages: vec![PutMessage { body: b"b".to_vec(), dedup_id: Some("d".into()) }],
            },
            Command::QueueGet { queue: name(), request: 2, max: 3, visibility_ms: Some(4), wait_ms: 5, detach: true },
            Command::QueueAck { queue: name(), tags: vec![1, 2] },
            Command::QueueNack { queue: name(), tags: vec![3] },
            Command::QueueExtend { queue: name(), tag: 4, visibility_ms: 500 },
            Command::CacheSet { key: b"k".to_vec(), value: b"v".to_vec(), ttl_ms: Some(6) },
            Command::CacheDelete { key: b"k".to_vec() },
            Command::QueueCancel { queue: name(), request: 8 },
        ]
    }

    fn command_responses() -> Vec<CommandResponse> {
        let delivery = QueueDelivery {
            id: 1,
            tag: 2,
            attempt: 3,
            body: b"b".to_vec(),
            enqueued_ms: 4,
            visible_at_ms: 5,
            history: vec![DeliveryAttempt {
                queue: "q".into(),
                attempt: 1,
                session: 6,
                delivered_ms: 7,
                ended_ms: 8,
                outcome: AttemptOutcome::TimedOut,
            }],
        };
        vec![
            CommandResponse::KvPut { version: 1 },
            CommandResponse::KvDelete { existed: true },
            CommandResponse::SessionClosed,
            CommandResponse::LockGranted { token: 2 },
            CommandResponse::LockQueued { revision: 3, ahead: 4 },
            CommandResponse::LockReleased,
            CommandResponse::LockCancelled { released: true },
            CommandResponse::QueueCreated { created: true },
            CommandResponse::QueueDeleted { messages: 5 },
            CommandResponse::QueuePut { outcomes: vec![PutOutcome { id: 6, duplicate: true }] },
            CommandResponse::QueueDelivered { deliveries: vec![delivery] },
            CommandResponse::QueueWaiting { revision: 7 },
            CommandResponse::QueueAcked { stale: vec![8] },
            CommandResponse::QueueNacked { stale: vec![9] },
            CommandResponse::QueueExtended { visible_at_ms: 10 },
            CommandResponse::CacheSet { version: 11 },
            CommandResponse::CacheDeleted { existed: false },
            CommandResponse::QueueCancelled { returned: 12 },
        ]
    }

    /// The answers the state machine stores: `Result<Response, ServerError>`.
    fn answers() -> Vec<Result<Response, ServerError>> {
        let owner = Owner { session: 1, actor: 2 };
        vec![
            Ok(Response::SessionOpened { session: 1, ttl_ms: 2 }),
            Ok(Response::KeptAlive),
            Ok(Response::Written(CommandResponse::LockReleased)),
            Ok(Response::Done),
            Err(ServerError::NotLeader { leader: Some(LeaderInfo { id: 1, address: "a".into() }) }),
            Err(ServerError::Unavailable { reason: "r".into() }),
            Err(ServerError::SessionExpired { session: 3 }),
            Err(ServerError::StaleSequence { session: 4, seq: 5, oldest_kept: 6 }),
            Err(ServerError::InvalidArgument { reason: "r".into() }),
            Err(ServerError::Lock(LockRefusal::WouldBlock { name: "n".into() })),
            Err(ServerError::Lock(LockRefusal::AlreadyHeld { name: "n".into() })),
            Err(ServerError::Lock(LockRefusal::Deadlock { name: "n".into(), cycle: vec![(owner, "m".into())] })),
            Err(ServerError::Lock(LockRefusal::NotHeld { name: "n".into(), token: 7 })),
            Err(ServerError::Lock(LockRefusal::NotShared { name: "n".into() })),
            Err(ServerError::Queue(QueueRefusal::NoSuchQueue { queue: "q".into() })),
            Err(ServerError::Queue(QueueRefusal::StaleTag { queue: "q".into(), tag: 8 })),
            Err(ServerError::Queue(QueueRefusal::MessageTooLarge { queue: "q".into(), bytes: 9, max: 10 })),
            Err(ServerError::Queue(QueueRefusal::Full { queue: "q".into(), reason: "r".into() })),
            Err(ServerError::LimitReached { reason: "r".into() }),
            Err(ServerError::FaultInjectionDisabled),
            Err(ServerError::Internal { reason: "r".into() }),
        ]
    }

    #[test]
    fn commands_keep_their_encoding() {
        let expected = [
            "00016b0176",
            "01016b",
            "02",
            "03016e07010105",
            "04016e0702",
            "05016e0709",
            "06016e070301",
            "07016e05b0ea01808010c0a907",
            "08016e",
            "09016e010162010164",
            "0a016e020301040501",
            "0b016e020102",
            "0c016e0103",
            "0d016e04f403",
            "0e016b01760106",
            "0f016b",
            "10016e08",
        ];
        let actual: Vec<String> = commands().iter().map(hex).collect();
        assert_eq!(actual, expected);
    }

    #[test]
    fn command_responses_keep_their_encoding() {
        let expected = [
            "0001",
            "0101",
            "02",
            "0302",
            "040304",
            "05",
            "0601",
            "0701",
            "0805",
            "09010601",
            "0a01010203016204050101710106070801",
            "0b07",
            "0c0108",
            "0d0109",
            "0e0a",
            "0f0b",
            "1000",
            "110c",
        ];
        let actual: Vec<String> = command_responses().iter().map(hex).collect();
        assert_eq!(actual, expected);
    }

    #[test]
    fn stored_answers_keep_their_encoding() {
        let expected = [
            "00000102",
            "0001",
            "000205",
            "0005",
            "010001010161",
            "01010172",
            "010203",
            "0103040506",
            "01040172",
            "010500016e",
            "010501016e",
            "010502016e010102016d",
            "010503016e07",
            "010504016e",
            "0106000171",
            "010601017108",
            "0106020171090a",
            "01060301710172",
            "01070172",
            "0108",
            "01090172",
        ];
        let actual: Vec<String> = answers().iter().map(hex).collect();
        assert_eq!(actual, expected);
    }
}
