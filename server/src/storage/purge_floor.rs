//! [`PurgeFloor`]: how far the log may delete its entries: no further than the state machine's
//! durable snapshot covers.
//!
//! openraft 0.9 asks the log to purge up to a snapshot's index as soon as it has *queued* that
//! snapshot's installation, not once the snapshot is on disk. A snapshot whose write then fails
//! (a full disk) would leave a node with neither the entries nor the snapshot that replaced them:
//! it could never start again from its own data. The log store therefore keeps a requested purge
//! in memory and writes it to disk only once the floor has reached it; and at start it treats
//! every entry the durable snapshot covers as purged, whatever the log's own purge point says
//! (the fault suite found this; see `docs/reliability.md`).

use std::sync::{Arc, Mutex, PoisonError};

use crate::raft::LogId;

/// The log id of the latest durable snapshot, shared by the state machine (which raises it) and
/// the log store (which purges no further). Clones share it.
///
/// ```
/// use distsync_server::storage::purge_floor::PurgeFloor;
/// use openraft::{CommittedLeaderId, LogId};
///
/// let floor = PurgeFloor::default();
/// assert!(!floor.allows(10));
/// floor.raise(LogId::new(CommittedLeaderId::new(2, 1), 10));
/// assert!(floor.allows(10) && !floor.allows(11));
/// assert_eq!(floor.covered().map(|log_id| log_id.index), Some(10));
/// assert!(PurgeFloor::unlimited().allows(u64::MAX));
/// ```
#[derive(Clone, Debug, Default)]
pub struct PurgeFloor {
    state: Arc<Mutex<Floor>>,
}

#[derive(Debug, Default)]
struct Floor {
    /// Every purge is allowed: a log store without a state machine.
    unlimited: bool,
    /// The latest durable snapshot's last log id.
    covered: Option<LogId>,
}

impl PurgeFloor {
    /// A floor that allows every purge: a log store without a state machine (tests, tools).
    pub fn unlimited() -> PurgeFloor {
        PurgeFloor { state: Arc::new(Mutex::new(Floor { unlimited: true, covered: None })) }
    }

    /// A snapshot covering entries up to `log_id` is durable now.
    pub fn raise(&self, log_id: LogId) {
        let mut floor = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if floor.covered.is_none_or(|covered| covered.index < log_id.index) {
            floor.covered = Some(log_id);
        }
    }

    /// Whether entries up to `index` may be deleted.
    pub fn allows(&self, index: u64) -> bool {
        let floor = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        floor.unlimited || floor.covered.is_some_and(|covered| index <= covered.index)
    }

    /// The last log id the durable snapshot covers (`None` for an unlimited floor, or before
    /// any snapshot is durable).
    pub fn covered(&self) -> Option<LogId> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).covered
    }
}
