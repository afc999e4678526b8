//! Sessions on the wire: the session id and the exactly-once envelope of every write.

use serde::{Deserialize, Serialize};

use super::Command;

/// A client session id: the revision of the operation that opened it (unique, increasing).
///
/// A **revision** is the cluster's operation counter: every applied operation takes the next one,
/// in log order, like etcd's revision. Key versions are revisions too.
pub type SessionId = u64;

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
