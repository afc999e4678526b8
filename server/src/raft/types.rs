//! openraft's type configuration for distsync.

use std::io::Cursor;

use crate::state::{ApplyResult, LogCommand};

/// Results of one entry's operations, in order.
pub type ApplyResults = Vec<ApplyResult>;

openraft::declare_raft_types!(
    /// Types of distsync's Raft: entries carry a [`LogCommand`] (a batch of operations),
    /// applying one yields their results, snapshots are in-memory buffers.
    pub TypeConfig:
        D = LogCommand,
        R = ApplyResults,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<u64>;
/// Errors storage reports to openraft.
pub type StorageError = openraft::StorageError<u64>;
