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
            Command::KvPut { .. } | Command::KvDelete { .. } | Command::CloseSession => None,
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
        }
    }
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
    /// The answer to [`Request::WatchSession`]: whether the session is still open.
    SessionWatch {
        /// False once the session has ended.
        alive: bool,
    },
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
