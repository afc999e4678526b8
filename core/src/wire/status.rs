//! What `distsync status` shows of one node: its role, log indexes and peers.

use serde::{Deserialize, Serialize};

use super::NodeId;

#[allow(unused_imports)] // for intra-doc links
use super::Request;

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

/// A digest of a node's replicated state at one applied index: nodes that applied the same
/// index have equal digests, unless their states diverged (a bug).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateDigest {
    /// The applied index the digest was computed at (a node reuses a recent digest, so this
    /// may be behind [`NodeStatus::applied`]).
    pub applied: u64,
    /// The digest.
    pub digest: u64,
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
    /// A digest of the replicated state, only when asked for ([`Request::StatusDigest`],
    /// `distsync status --digest`): computing it reads the whole state.
    pub state_digest: Option<StateDigest>,
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
    /// The cluster's random name (32 hex digits), fixed by its first leader; `None` until this
    /// node applied it. It namespaces the cluster's keys in Redis (`distsync:ID:cache:KEY`).
    pub cluster_id: Option<String>,
    /// The limits in force as this node applied them, by the names docs/limits.md gives them
    /// (`QUEUED_BYTES_MAX` → bytes); set by the leader's `--max-…` flags.
    pub limits: std::collections::BTreeMap<String, u64>,
}
