//! Every limit of the protocol in one place: what one request, key, value, name, batch or wait
//! may be at most. Each says why it is what it is. Nodes enforce them; the client checks them
//! before sending, so that a request the cluster would refuse fails at once with a clear error.

use std::time::Duration;

#[allow(unused_imports)] // for intra-doc links
use super::{LockWait, Query, Request, Response};

// Frames.

/// Largest frame accepted on any stream: 16 MiB. It bounds the memory one request can pin on a
/// node. Raft batches and snapshot chunks are sized below it (snapshot chunks are 4 MiB).
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Largest client write, encoded (one command with its session fields): 4 MiB, a quarter of a
/// frame. Every write becomes part of one log entry, and a log entry must always fit one
/// replication frame beside the other writes batched with it; a write over this limit is refused
/// with [`ServerError::TooLarge`](crate::ServerError::TooLarge) before it reaches the log. Split a
/// larger queue batch into several puts.
pub const WRITE_BYTES_MAX: usize = 4 * 1024 * 1024;

// Status.

/// How long a node answers [`Request::StatusDigest`] with the digest it computed last, unless
/// nothing was applied since (then it is current anyway): a state digest reads the whole state
/// while entries wait to be applied, so a burst of askers must not make it compute one each.
pub const STATUS_DIGEST_INTERVAL: Duration = Duration::from_millis(250);

// The replicated register (and cache values).

/// Largest key of the replicated register: 4 KiB, like etcd's practical limit for keys; longer
/// keys are almost always a bug in the caller.
pub const KEY_BYTES_MAX: usize = 4 * 1024;

/// Largest value of the replicated register: 1 MiB. Values travel through the Raft log, so every
/// byte is written to a majority of disks; large blobs belong in a blob store.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;

// Sessions.

/// Shortest session TTL a client may ask for: below a few election timeouts a session would
/// expire during an ordinary leader change.
pub const SESSION_TTL_MIN: Duration = Duration::from_secs(1);

/// Longest session TTL: a crashed client's locks must come free within a bounded time.
pub const SESSION_TTL_MAX: Duration = Duration::from_secs(3600);

// Locks.

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

/// Encoded bytes of one list page (locks, whose waiters may be thousands, and queues): a page
/// ends early, with `more`, rather than pass it (it holds one item at least).
pub const LIST_PAGE_BYTES_MAX: usize = 4 * 1024 * 1024;

// Queues.

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

// The cache.

/// Longest cache TTL: a year.
pub const CACHE_TTL_MS_MAX: u64 = 365 * 24 * 3600 * 1000;

/// Keys per [`Request::CacheGet`].
pub const CACHE_GET_KEYS_MAX: usize = 1000;

/// Value bytes one [`Response::CacheValues`] carries before it stops short of the remaining keys.
pub const CACHE_GET_BYTES_MAX: usize = 8 * 1024 * 1024;
