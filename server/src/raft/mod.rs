//! openraft glue: the type configuration, the network openraft replicates over, the leader
//! lease, and read-index coalescing.
//!
//! - `types.rs`: [`TypeConfig`] and the aliases the node uses ([`Raft`], [`Entry`], [`LogId`]);
//! - [`network`]: openraft's network over the peer transport; `append.rs` keeps a long
//!   AppendEntries going when openraft gives up waiting for it;
//! - [`lease`]: when a leader may answer a read index without a quorum round;
//! - [`read_index`]: one confirmation shared by every read that arrived before it started.

mod append;
pub mod lease;
pub mod network;
pub mod read_index;
mod types;

pub use self::lease::LeaderLease;
pub use self::network::NetworkFactory;
pub use self::read_index::ReadIndexRounds;
pub use self::types::{ApplyResults, Entry, LogId, Raft, StorageError, TypeConfig};
