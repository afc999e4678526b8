//! openraft's own storage test suite, run against distsync's redb log store and its state
//! machine store: ordering, truncation, purging, votes, membership and snapshots behave as
//! openraft requires. It runs twice: with the default in-memory tail, and with a tail of one
//! entry, so that every read of an older entry goes to disk.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use distsync_server::raft::{StorageError, TypeConfig};
use distsync_server::storage::log_store::{LogStore, LogStoreLimits};
use distsync_server::storage::state_machine_store::StateMachineStore;
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageIOError;

/// A directory removed when the test's stores are dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Stores whose log keeps `tail_bytes` of entries in memory.
struct Builder {
    tail_bytes: u64,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let directory = std::env::temp_dir().join(format!(
            "distsync-conformance-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&directory).map_err(|e| StorageIOError::write(&e))?;
        let limits = LogStoreLimits { tail_bytes: self.tail_bytes, ..LogStoreLimits::default() };
        let state = StateMachineStore::open(
            &directory.join("snapshots"),
            std::sync::Arc::new(distsync_server::cache::near_cache::NearCache::new(
                1,
                distsync_server::cache::near_cache::NearCacheLimits { bytes: 1 << 20, entries: 1000 },
            )),
        )
        .map_err(|e| StorageIOError::write(AnyError(e)))?;
        // Gated as a node's is: purges beyond the durable snapshot stay on disk.
        let log = LogStore::open_with_floor(&directory.join("raft.redb"), limits, state.purge_floor())
            .map_err(|e| StorageIOError::write(AnyError(e)))?;
        Ok((TempDir(directory), log, state))
    }
}

#[derive(Debug)]
struct AnyError(anyhow::Error);

impl std::fmt::Display for AnyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for AnyError {}

impl From<AnyError> for openraft::AnyError {
    fn from(error: AnyError) -> Self {
        openraft::AnyError::new(&error)
    }
}

#[test]
fn openraft_storage_suite_passes() {
    if let Err(error) = Suite::test_all(Builder { tail_bytes: LogStoreLimits::default().tail_bytes }) {
        panic!("openraft's storage suite failed: {error}");
    }
}

#[test]
fn openraft_storage_suite_passes_with_entries_read_from_disk() {
    if let Err(error) = Suite::test_all(Builder { tail_bytes: 0 }) {
        panic!("openraft's storage suite failed with a tail of one entry: {error}");
    }
}
