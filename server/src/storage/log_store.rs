//! The Raft log and vote, durable in redb, with group commit.
//!
//! Entries are kept in memory (from the last purge on, which snapshots bound) and written by one
//! writer thread. The thread takes every write waiting in its queue, commits them in one redb
//! transaction (one fsync) and only then reports the appends as flushed to openraft. A log append
//! is never signalled as flushed before the fsync really happened (sebadob/hiqlite#361). Votes are
//! acknowledged only after their commit too.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::raft::{Entry, LogId, StorageError, TypeConfig};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "purged";

/// Writes waiting for the writer thread. Bounds memory if the disk stalls; openraft waits on
/// the flush callbacks, so the queue rarely holds more than a few batches.
const WRITE_QUEUE_MAX: usize = 4096;

/// A handle to the log store; clones share it.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    writes: mpsc::SyncSender<Write>,
}

struct Shared {
    cache: RwLock<Cache>,
    /// Highest committed index reported by openraft, for status.
    committed_index: AtomicU64,
    /// The committed log id not yet written; the writer thread stores it with its next batch.
    committed_pending: Mutex<Option<Option<LogId>>>,
}

#[derive(Default)]
struct Cache {
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId>,
}

enum Write {
    Append { entries: Vec<(u64, Vec<u8>)>, flushed: LogFlushed<TypeConfig> },
    Truncate { from_index: u64 },
    Purge { log_id: LogId },
    Meta { key: &'static str, value: Vec<u8>, done: Option<tokio::sync::oneshot::Sender<Result<(), String>>> },
}

impl LogStore {
    /// Opens (or creates) the log in `path`, loading the entries, vote and purge point.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened or holds undecodable data.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let database =
            Database::create(path).map_err(|e| anyhow::anyhow!("cannot open the Raft log {}: {e}", path.display()))?;
        let mut cache = Cache::default();
        {
            let txn = database.begin_write()?;
            txn.open_table(ENTRIES)?;
            txn.open_table(META)?;
            txn.commit()?;
        }
        {
            let txn = database.begin_read()?;
            let entries = txn.open_table(ENTRIES)?;
            for row in entries.iter()? {
                let (index, bytes) = row?;
                let entry: Entry = postcard::from_bytes(bytes.value())
                    .map_err(|e| anyhow::anyhow!("log entry {} is corrupt: {e}", index.value()))?;
                cache.entries.insert(index.value(), entry);
            }
            let meta = txn.open_table(META)?;
            let load = |key: &str| -> anyhow::Result<Option<Vec<u8>>> {
                Ok(meta.get(key)?.map(|value| value.value().to_vec()))
            };
            if let Some(bytes) = load(KEY_VOTE)? {
                cache.vote = Some(postcard::from_bytes(&bytes)?);
            }
            if let Some(bytes) = load(KEY_COMMITTED)? {
                cache.committed = postcard::from_bytes(&bytes)?;
            }
            if let Some(bytes) = load(KEY_PURGED)? {
                cache.last_purged = postcard::from_bytes(&bytes)?;
            }
        }
        check_contiguous(&cache)?;
        let committed_index = cache.committed.map(|c| c.index).unwrap_or(0);
        let (writes, queue) = mpsc::sync_channel(WRITE_QUEUE_MAX);
        let shared = Arc::new(Shared {
            cache: RwLock::new(cache),
            committed_index: AtomicU64::new(committed_index),
            committed_pending: Mutex::new(None),
        });
        let writer_shared = shared.clone();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || write_loop(database, queue, writer_shared))
            .map_err(|e| anyhow::anyhow!("cannot start the log writer thread: {e}"))?;
        Ok(Self { shared, writes })
    }

    /// Highest index known committed.
    pub fn committed_index(&self) -> u64 {
        self.shared.committed_index.load(Ordering::Relaxed)
    }

    /// Index of the last entry, or of the purge point when the log is empty.
    pub fn last_index(&self) -> u64 {
        let cache = self.shared.cache.read().expect("log cache lock");
        cache.entries.last_key_value().map(|(index, _)| *index).or(cache.last_purged.map(|p| p.index)).unwrap_or(0)
    }

    // openraft's error type is large, and this mirrors the trait methods that must return it.
    #[allow(clippy::result_large_err)]
    fn send(&self, write: Write) -> Result<(), StorageError> {
        self.writes.send(write).map_err(|_| StorageIOError::write_logs(&Stopped).into())
    }

    async fn save_meta(&self, key: &'static str, value: Vec<u8>) -> Result<(), String> {
        let (done, finished) = tokio::sync::oneshot::channel();
        self.writes.send(Write::Meta { key, value, done: Some(done) }).map_err(|_| Stopped.to_string())?;
        finished.await.map_err(|_| Stopped.to_string())?
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the log writer thread stopped")]
struct Stopped;

fn check_contiguous(cache: &Cache) -> anyhow::Result<()> {
    let mut expected = cache.last_purged.map(|p| p.index + 1);
    for index in cache.entries.keys() {
        if let Some(expected) = expected {
            anyhow::ensure!(*index == expected, "the Raft log has a hole: expected index {expected}, found {index}");
        }
        expected = Some(index + 1);
    }
    Ok(())
}

/// The writer thread: drain everything queued, commit once, then acknowledge.
fn write_loop(database: Database, queue: mpsc::Receiver<Write>, shared: Arc<Shared>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while let Ok(next) = queue.try_recv() {
            batch.push(next);
        }
        // The committed index rides along with whatever is committed next; it costs no fsync
        // of its own.
        if let Some(committed) = shared.committed_pending.lock().expect("committed lock").take() {
            match postcard::to_stdvec(&committed) {
                Ok(value) => batch.push(Write::Meta { key: KEY_COMMITTED, value, done: None }),
                Err(error) => tracing::error!(%error, "cannot encode the committed log id"),
            }
        }
        let result = commit_batch(&database, &batch).map_err(|e| e.to_string());
        if let Err(error) = &result {
            tracing::error!(%error, "writing the Raft log failed; the node cannot continue safely");
        }
        for write in batch {
            match write {
                Write::Append { flushed, .. } => {
                    flushed.log_io_completed(result.clone().map_err(std::io::Error::other));
                }
                Write::Meta { done: Some(done), .. } => {
                    let _ = done.send(result.clone());
                }
                Write::Meta { done: None, .. } | Write::Truncate { .. } | Write::Purge { .. } => {}
            }
        }
    }
}

fn commit_batch(database: &Database, batch: &[Write]) -> anyhow::Result<()> {
    let txn = database.begin_write()?;
    {
        let mut entries = txn.open_table(ENTRIES)?;
        let mut meta = txn.open_table(META)?;
        for write in batch {
            match write {
                Write::Append { entries: rows, .. } => {
                    for (index, bytes) in rows {
                        entries.insert(*index, bytes.as_slice())?;
                    }
                }
                Write::Truncate { from_index } => {
                    entries.retain_in(*from_index.., |_, _| false)?;
                }
                Write::Purge { log_id } => {
                    entries.retain_in(..=log_id.index, |_, _| false)?;
                    meta.insert(KEY_PURGED, postcard::to_stdvec(&Some(*log_id))?.as_slice())?;
                }
                Write::Meta { key, value, .. } => {
                    meta.insert(*key, value.as_slice())?;
                }
            }
        }
    }
    // Durability::Immediate is redb's default: commit returns after fsync.
    txn.commit()?;
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let cache = self.shared.cache.read().expect("log cache lock");
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        Ok(cache.entries.range((start, end)).map(|(_, entry)| entry.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let cache = self.shared.cache.read().expect("log cache lock");
        let last_log_id = cache.entries.last_key_value().map(|(_, entry)| entry.log_id).or(cache.last_purged);
        Ok(LogState { last_purged_log_id: cache.last_purged, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let bytes = postcard::to_stdvec(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.save_meta(KEY_VOTE, bytes).await.map_err(|e| StorageIOError::write_vote(&AnyMessage(e)))?;
        self.shared.cache.write().expect("log cache lock").vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        Ok(self.shared.cache.read().expect("log cache lock").vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Committed is a hint that speeds up re-applying after a restart; it need not be durable
        // on its own, so it rides along with the next batch of log writes.
        *self.shared.committed_pending.lock().expect("committed lock") = Some(committed);
        if let Some(log_id) = committed {
            self.shared.committed_index.fetch_max(log_id.index, Ordering::Relaxed);
        }
        self.shared.cache.write().expect("log cache lock").committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.shared.cache.read().expect("log cache lock").committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        {
            let mut cache = self.shared.cache.write().expect("log cache lock");
            for entry in entries {
                let bytes = postcard::to_stdvec(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
                let index = entry.log_id.index;
                if let Some((last, _)) = cache.entries.last_key_value() {
                    assert_eq!(index, last + 1, "appends are contiguous");
                }
                rows.push((index, bytes));
                cache.entries.insert(index, entry);
            }
        }
        self.send(Write::Append { entries: rows, flushed: callback })
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.shared.cache.write().expect("log cache lock").entries.split_off(&log_id.index);
        self.send(Write::Truncate { from_index: log_id.index })
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut cache = self.shared.cache.write().expect("log cache lock");
            let kept = cache.entries.split_off(&(log_id.index + 1));
            cache.entries = kept;
            cache.last_purged = Some(log_id);
        }
        self.send(Write::Purge { log_id })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct AnyMessage(String);
