//! The log store writes a purge to disk only once its [`PurgeFloor`] allows it.

use openraft::storage::RaftLogStorage;
use openraft::RaftLogReader;
use openraft::{CommittedLeaderId, EntryPayload, Vote};
use redb::{Database, ReadableDatabase};

use super::{decode, encode, LogStore, LogStoreLimits, ENTRIES, KEY_PURGED, META};
use crate::raft::{Entry, LogId};
use crate::storage::purge_floor::PurgeFloor;

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

/// A log file holding entries 1..=10 (or those of `indexes`), in a directory removed on drop.
struct SeededLog(std::path::PathBuf);

impl SeededLog {
    fn new(name: &str) -> SeededLog {
        SeededLog::with(name, 1..=10)
    }

    fn with(name: &str, indexes: impl IntoIterator<Item = u64>) -> SeededLog {
        let directory = std::env::temp_dir().join(format!("distsync-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).expect("temp dir");
        let database = Database::create(directory.join("raft.redb")).expect("create the log");
        let txn = database.begin_write().expect("write");
        {
            let mut entries = txn.open_table(ENTRIES).expect("entries");
            for index in indexes {
                let entry = Entry { log_id: log_id(index), payload: EntryPayload::Blank };
                entries.insert(index, encode(&entry).expect("encode").as_slice()).expect("insert");
            }
            txn.open_table(META).expect("meta");
        }
        txn.commit().expect("commit");
        SeededLog(directory)
    }

    fn path(&self) -> std::path::PathBuf {
        self.0.join("raft.redb")
    }
}

impl Drop for SeededLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The purge point stored on disk, and how many entries are there.
fn on_disk(store: &LogStore) -> (Option<LogId>, u64) {
    let txn = store.shared.database.begin_read().expect("read");
    let meta = txn.open_table(META).expect("meta");
    let purged = meta.get(KEY_PURGED).expect("get").map(|bytes| decode("purge point", bytes.value()).expect("decodes"));
    let entries = txn.open_table(ENTRIES).expect("entries").range(0..).expect("range").count() as u64;
    (purged.flatten(), entries)
}

#[tokio::test]
async fn a_purge_beyond_the_durable_snapshot_stays_off_the_disk_until_the_snapshot_is_there() {
    let seeded = SeededLog::new("floor");
    let floor = PurgeFloor::default();
    let mut store = LogStore::open_with_floor(&seeded.path(), LogStoreLimits::default(), floor.clone()).expect("open");

    store.purge(log_id(6)).await.expect("purge");
    // A vote is written after the purge, in order: once it is saved, the purge was handled.
    store.save_vote(&Vote::new(1, 1)).await.expect("vote");
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(6)), "openraft sees the purge at once");
    assert_eq!(on_disk(&store), (None, 10), "no snapshot covers the entries yet: they stay on disk");

    floor.raise(log_id(5));
    store.save_vote(&Vote::new(2, 1)).await.expect("vote");
    assert_eq!(on_disk(&store), (None, 10), "a snapshot at 5 does not cover entry 6");

    floor.raise(log_id(6));
    store.save_vote(&Vote::new(3, 1)).await.expect("vote");
    assert_eq!(on_disk(&store).0, Some(log_id(6)), "the snapshot is durable: the purge is written");
}

#[tokio::test]
async fn without_a_floor_a_purge_is_written_at_once() {
    let seeded = SeededLog::new("unlimited");
    let mut store = LogStore::open_with(&seeded.path(), LogStoreLimits::default()).expect("open");
    store.purge(log_id(4)).await.expect("purge");
    store.save_vote(&Vote::new(1, 1)).await.expect("vote");
    assert_eq!(on_disk(&store).0, Some(log_id(4)));
}

#[tokio::test]
async fn at_start_the_entries_a_durable_snapshot_covers_count_as_purged() {
    // Entries 1..=4, then 8..=10: the purge up to the snapshot at 7 never reached the disk, the
    // appends after it did.
    let seeded = SeededLog::with("hole", (1..=4).chain(8..=10));
    let refused = LogStore::open_with_floor(&seeded.path(), LogStoreLimits::default(), PurgeFloor::default());
    let error = refused.err().expect("a hole no snapshot covers is refused");
    assert!(format!("{error:#}").contains("hole"), "{error:#}");

    let floor = PurgeFloor::default();
    floor.raise(log_id(7));
    let mut store = LogStore::open_with_floor(&seeded.path(), LogStoreLimits::default(), floor).expect("open");
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(7)));
    assert_eq!(state.last_log_id, Some(log_id(10)));
    let entries = store.try_get_log_entries(8..=10).await.expect("read");
    assert_eq!(entries.iter().map(|entry| entry.log_id.index).collect::<Vec<_>>(), [8, 9, 10]);
}
