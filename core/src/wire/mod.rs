//! The client protocol: messages, their encoding and the frame codec.
//!
//! Every RPC is one bidirectional QUIC stream carrying one request frame and one reply frame
//! ([`frame`]): a 4-byte big-endian length followed by that many bytes of [postcard] encoding.
//! Frames larger than [`FRAME_BYTES_MAX`] are refused before any of their body is read, so a peer
//! cannot make a node allocate unbounded memory.
//!
//! The peer protocol between nodes (Raft RPCs, forwarded writes) uses the same frame codec with
//! message types of its own, defined in `distsync-server`.
//!
//! ## Layout
//!
//! - this module: the envelope of every RPC, [`Request`] → [`Reply`] with a [`Response`];
//! - [`command`]: what goes through the Raft log, [`Command`] and [`Query`], with their answers;
//! - [`session`]: [`SessionId`], [`SessionSecret`] and [`WriteRequest`], the exactly-once
//!   envelope of a write;
//! - [`access`]: identities, grants and the admin commands that change them;
//! - [`kv`], [`lock`], [`queue`], [`cache`]: each primitive's messages and checks;
//! - [`status`]: a node's own view, [`NodeStatus`];
//! - [`limits`]: every size, count and time limit of the protocol;
//! - [`frame`]: the frame codec.
//!
//! Every item is re-exported here, so `distsync::wire::Command` names it wherever it lives.

pub mod access;
pub mod cache;
pub mod command;
pub mod frame;
pub mod kv;
pub mod limits;
pub mod lock;
pub mod queue;
pub mod session;
pub mod status;

#[cfg(test)]
mod decode_tests;
#[cfg(test)]
mod golden;

use serde::{Deserialize, Serialize};

pub use self::access::*;
pub use self::cache::*;
pub use self::command::*;
pub use self::frame::*;
pub use self::kv::*;
pub use self::limits::*;
pub use self::lock::*;
pub use self::queue::*;
pub use self::session::*;
pub use self::status::*;
use crate::error::ServerError;

/// ALPN protocol name of client connections. Version 2 carries identities and session secrets;
/// a client of version 1 fails the handshake instead of sending frames a node cannot read.
pub const ALPN_CLIENT: &[u8] = b"distsync-client/2";

/// ALPN protocol name of node-to-node connections; the node presenting it must show a node
/// certificate signed by the cluster CA.
pub const ALPN_PEER: &[u8] = b"distsync-peer/2";

/// A node id; ids are 1-based and never reused for a different disk.
pub type NodeId = u64;

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
    /// Open a session with the given time to live, in milliseconds. Opening again with the same
    /// secret (a retry after a lost answer) answers the session opened first, so retries leave
    /// no orphan sessions behind.
    OpenSession {
        /// How long the session lives without a keepalive.
        ttl_ms: u64,
        /// The secret every later request naming the session must carry; random, kept by the
        /// client alone.
        secret: SessionSecret,
    },
    /// Keep a session alive for another TTL.
    KeepAlive {
        /// The session to extend.
        session: SessionId,
        /// The session's secret.
        secret: SessionSecret,
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
        /// The secret of the owner's session.
        secret: SessionSecret,
    },
    /// Waits, on the node that receives it, until `session` ends (expired or closed), so that a
    /// client holding locks learns at once that it lost them. Answers
    /// [`Response::SessionWatch`] when the session ends or after `max_wait_ms`. Never forwarded.
    WatchSession {
        /// The session.
        session: SessionId,
        /// How long the node may hold the request open, at most [`AWAIT_MS_MAX`].
        max_wait_ms: u64,
        /// The session's secret.
        secret: SessionSecret,
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
        /// The session's secret.
        secret: SessionSecret,
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
    /// Change grants or identities, through the Raft log. Refused unless the connection's
    /// identity is an admin.
    Admin(AdminCommand),
    /// [`Request::Status`] with a digest of the replicated state
    /// ([`NodeStatus::state_digest`]), to compare replicas. Answered locally, never forwarded.
    /// A digest reads the whole state, so a node computes one at a time and answers a recent
    /// one (see [`StateDigest::applied`]) to anyone asking within [`STATUS_DIGEST_INTERVAL`].
    StatusDigest,
    /// Test-only fault injection: from now on this node reads its wall clock `offset_ms` off
    /// (forward when positive), as if its clock had jumped. Refused unless the node was started
    /// with `--enable-fault-injection`. Zero restores the real clock.
    SetClockOffset {
        /// How far to move the clock, in ms.
        offset_ms: i64,
    },
    /// Test-only fault injection: from now on this node holds every request it sends to a peer
    /// `delay_ms` (up to half again as long, at random, so that messages also reorder) before
    /// sending it, as a slow network would. Refused unless the node was started with
    /// `--enable-fault-injection`. Zero removes the delay.
    SetPeerDelay {
        /// How long to hold each request to a peer, in ms.
        delay_ms: u32,
    },
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
    /// The answer to [`Request::Admin`].
    AdminApplied {
        /// False when the command changed nothing (the grant existed, the identity was already
        /// disabled, …).
        changed: bool,
    },
}

/// A 64-bit FNV-1a hash: stable across processes, machines and versions, so that every client
/// routes a cache key to the same node and every node digests equal states equally.
///
/// ```
/// assert_eq!(distsync::wire::fnv1a(b""), 0xcbf2_9ce4_8422_2325);
/// assert_ne!(distsync::wire::fnv1a(b"a"), distsync::wire::fnv1a(b"b"));
/// ```
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = Fnv1a::default();
    hash.write(bytes);
    hash.finish()
}

/// [`fnv1a`] fed piece by piece, for hashing what is serialized without buffering it:
/// `Fnv1a` over the pieces of some bytes finishes with `fnv1a` of them.
///
/// ```
/// let mut hash = distsync::wire::Fnv1a::default();
/// hash.write(b"ab");
/// hash.write(b"c");
/// assert_eq!(hash.finish(), distsync::wire::fnv1a(b"abc"));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    /// Adds `bytes`.
    pub fn write(&mut self, bytes: &[u8]) {
        self.0 = bytes.iter().fold(self.0, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3));
    }

    /// The hash of everything written.
    pub fn finish(self) -> u64 {
        self.0
    }
}
