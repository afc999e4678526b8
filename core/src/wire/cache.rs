//! The cache on the wire: read consistency, values with versions, MESI states, what `cache show`
//! and `cache stats` answer, and the reports nodes send the leader about their copies.

use serde::{Deserialize, Serialize};

use super::{NodeId, CACHE_TTL_MS_MAX};
use crate::error::ServerError;

#[allow(unused_imports)] // for intra-doc links
use super::Request;

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
    #[serde(with = "serde_bytes")]
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
    /// Writes Redis skipped during this node's write-backs because it already held that version
    /// or a newer one (a retry, or a deposed leader writing late).
    pub write_back_skipped: u64,
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

/// Checks a cache TTL: at least 1 ms, at most [`CACHE_TTL_MS_MAX`].
pub(crate) fn validate_ttl(ttl_ms: Option<u64>) -> Result<(), ServerError> {
    match ttl_ms {
        Some(0) => Err(ServerError::InvalidArgument { reason: "a TTL of 0 expires at once".into() }),
        Some(ms) if ms > CACHE_TTL_MS_MAX => Err(ServerError::InvalidArgument {
            reason: format!("TTL of {ms} ms exceeds {CACHE_TTL_MS_MAX} ms; set no TTL instead"),
        }),
        _ => Ok(()),
    }
}
