//! [`PurgeFloor`]: how far the log may delete its entries: no further than the state machine's
//! durable snapshot covers.
//!
//! openraft 0.9 asks the log to purge up to a snapshot's index as soon as it has *queued* that
//! snapshot's installation, not once the snapshot is on disk. A snapshot whose write then fails
//! (a full disk) would leave a node with neither the entries nor the snapshot that replaced them:
//! it could never start again from its own data. The log store therefore keeps a requested purge
//! in memory and writes it to disk only once the floor has reached it (the fault suite found
//! this; see `docs/reliability.md`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The highest log index a durable snapshot covers, shared by the state machine (which raises
/// it) and the log store (which purges no further). Clones share it.
///
/// ```
/// use distsync_server::storage::purge_floor::PurgeFloor;
///
/// let floor = PurgeFloor::default();
/// assert!(!floor.allows(10));
/// floor.raise(10);
/// assert!(floor.allows(10) && !floor.allows(11));
/// assert!(PurgeFloor::unlimited().allows(u64::MAX));
/// ```
#[derive(Clone, Debug, Default)]
pub struct PurgeFloor {
    /// One past the covered index; 0 when no snapshot is durable; `u64::MAX`: every index.
    above: Arc<AtomicU64>,
}

impl PurgeFloor {
    /// A floor that allows every purge: a log store without a state machine (tests, tools).
    pub fn unlimited() -> PurgeFloor {
        PurgeFloor { above: Arc::new(AtomicU64::new(u64::MAX)) }
    }

    /// A snapshot covering entries up to `index` is durable now.
    pub fn raise(&self, index: u64) {
        self.above.fetch_max(index.saturating_add(1), Ordering::AcqRel);
    }

    /// Whether entries up to `index` may be deleted.
    pub fn allows(&self, index: u64) -> bool {
        let above = self.above.load(Ordering::Acquire);
        above == u64::MAX || index < above
    }
}
