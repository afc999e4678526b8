//! The Raft log and vote, durable in redb, with group commit.
//!
//! Entries are written by one writer thread. The thread takes every write waiting in its queue,
//! commits them in one redb transaction (one fsync) and only then reports the appends as flushed
//! to openraft. A log append is never signalled as flushed before the fsync really happened
//! (sebadob/hiqlite#361). Votes are acknowledged only after their commit too.
//!
//! Memory is bounded by bytes, not by the length of the log: only a tail of recent entries
//! ([`LogStoreLimits::tail_bytes`]) stays in memory, which serves replication in the ordinary
//! case; older entries (a follower catching up) are read from disk on demand. An entry leaves the
//! tail only once the writer has committed it, so a read that misses the tail always finds it on
//! disk; a restart loads no more than the tail either. The encoded size of every entry is kept
//! (eight bytes each) so that the node can snapshot by log bytes as well as by entry count.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::checksum::{seal, unseal};
use super::log_cache::{Cache, Cached};
use super::purge_floor::PurgeFloor;
use super::unsynced_backend::UnsyncedBackend;
use crate::raft::{Entry, LogId, StorageError, TypeConfig};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "purged";

/// A value as stored: its encoding, sealed with a checksum (see [`super::checksum`]).
fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    Ok(seal(&postcard::to_stdvec(value)?))
}

/// A stored value (`what`, for the error), if its checksum matches and it decodes.
fn decode<T: serde::de::DeserializeOwned>(what: &str, stored: &[u8]) -> anyhow::Result<T> {
    let payload = unseal(stored).map_err(|e| anyhow::anyhow!("{what} is corrupt: {e}"))?;
    postcard::from_bytes(payload).map_err(|e| anyhow::anyhow!("{what} is corrupt: it does not decode: {e}"))
}

/// Writes waiting for the writer thread. Bounds memory if the disk stalls; openraft waits on
/// the flush callbacks, so the queue rarely holds more than a few batches.
const WRITE_QUEUE_MAX: usize = 4096;

/// How much memory the log store may use; see [`LogStore::open_with`].
#[derive(Clone, Copy, Debug)]
pub struct LogStoreLimits {
    /// Encoded bytes of recent entries kept in memory (`--log-cache-bytes`). The newest entry is
    /// always kept, whatever its size, and entries not yet on disk are never dropped.
    pub tail_bytes: u64,
    /// Bytes of redb's page cache.
    pub disk_cache_bytes: u64,
    /// Encoded bytes of entries one bounded read returns at most (at least one entry, whatever
    /// its size): what replication and the replay at start hold of the log at once. openraft
    /// asks for up to `max_payload_entries` at a time, which 5 MiB entries make gigabytes.
    pub read_bytes: u64,
}

impl Default for LogStoreLimits {
    fn default() -> Self {
        LogStoreLimits { tail_bytes: 32 * 1024 * 1024, disk_cache_bytes: 16 * 1024 * 1024, read_bytes: 1024 * 1024 }
    }
}

/// A handle to the log store; clones share it.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    writes: mpsc::SyncSender<Write>,
}

struct Shared {
    database: Database,
    limits: LogStoreLimits,
    cache: RwLock<Cache>,
    /// Highest committed index reported by openraft, for status.
    committed_index: AtomicU64,
    /// The committed log id not yet written; the writer thread stores it with its next batch.
    committed_pending: Mutex<Option<Option<LogId>>>,
    /// Sequence number of the latest write the writer thread has committed.
    written: AtomicU64,
    /// Sequence number of the latest write sent to the writer thread. Held while a write is
    /// numbered and queued, so that numbers follow the queue's order (the writer counts the
    /// writes it commits); never taken by the writer, so a full queue cannot deadlock it.
    sent: Mutex<u64>,
    /// How far a purge may go on disk (see [`PurgeFloor`]).
    floor: PurgeFloor,
}

enum Write {
    Append { entries: Vec<(u64, Vec<u8>)>, flushed: LogFlushed<TypeConfig> },
    Truncate { from_index: u64 },
    Purge { log_id: LogId },
    Meta { key: &'static str, value: Vec<u8>, done: Option<tokio::sync::oneshot::Sender<Result<(), String>>> },
}

impl LogStore {
    /// Opens (or creates) the log in `path` with default [`LogStoreLimits`].
    ///
    /// # Errors
    ///
    /// As [`LogStore::open_with`].
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Self::open_with(path, LogStoreLimits::default())
    }

    /// Opens (or creates) the log in `path`: reads the vote and purge point, checks every entry
    /// decodes and the indexes have no hole, and keeps the newest entries within `limits`.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened or holds undecodable data.
    pub fn open_with(path: &Path, limits: LogStoreLimits) -> anyhow::Result<Self> {
        Self::open_with_floor(path, limits, PurgeFloor::unlimited())
    }

    /// As [`LogStore::open_with`], writing a purge to disk only once `floor` allows it: until
    /// the state machine's snapshot that replaces the entries is durable, they stay on disk (a
    /// purge is always applied in memory at once, as openraft expects).
    ///
    /// # Errors
    ///
    /// As [`LogStore::open_with`].
    pub fn open_with_floor(path: &Path, limits: LogStoreLimits, floor: PurgeFloor) -> anyhow::Result<Self> {
        Self::open_inner(path, limits, floor, true)
    }

    /// As [`LogStore::open_with_floor`], but never fsync'd: `--inject-bug skip-fsync`, to show
    /// that the fault suite's power cuts catch it. Never in a real node.
    ///
    /// # Errors
    ///
    /// As [`LogStore::open_with`].
    pub fn open_without_fsync(path: &Path, limits: LogStoreLimits, floor: PurgeFloor) -> anyhow::Result<Self> {
        tracing::warn!("--inject-bug skip-fsync: the Raft log is never fsync'd");
        Self::open_inner(path, limits, floor, false)
    }

    fn open_inner(path: &Path, limits: LogStoreLimits, floor: PurgeFloor, fsync: bool) -> anyhow::Result<Self> {
        let builder = {
            let mut builder = redb::Builder::new();
            builder.set_cache_size(limits.disk_cache_bytes as usize);
            builder
        };
        let opened = if fsync {
            builder.create(path).map_err(anyhow::Error::from)
        } else {
            UnsyncedBackend::open(path).and_then(|backend| Ok(builder.create_with_backend(backend)?))
        };
        let database = opened.map_err(|e| {
            anyhow::anyhow!(
                "cannot open the Raft log {} (damaged, truncated, or a failing disk): {e:#}",
                path.display()
            )
        })?;
        let mut cache = Cache::default();
        let mut purge_leftover = None;
        {
            let txn = database.begin_write()?;
            txn.open_table(ENTRIES)?;
            txn.open_table(META)?;
            txn.commit()?;
        }
        {
            let txn = database.begin_read()?;
            let meta = txn.open_table(META)?;
            let load = |key: &str| -> anyhow::Result<Option<Vec<u8>>> {
                Ok(meta.get(key)?.map(|value| value.value().to_vec()))
            };
            if let Some(bytes) = load(KEY_VOTE)? {
                cache.vote = Some(decode("the vote", &bytes)?);
            }
            if let Some(bytes) = load(KEY_COMMITTED)? {
                cache.committed = decode("the committed log id", &bytes)?;
            }
            if let Some(bytes) = load(KEY_PURGED)? {
                cache.last_purged = decode("the purge point", &bytes)?;
            }
            // Entries the durable snapshot covers are purged, whatever the stored purge point
            // says: a purge deferred until the snapshot was durable may not have reached the
            // disk before a stop, while later entries did (a hole up to the snapshot).
            if let Some(covered) = floor.covered() {
                if cache.last_purged.is_none_or(|purged| purged.index < covered.index) {
                    cache.last_purged = Some(covered);
                }
            }
            cache.last_log_id = cache.last_purged;
            cache.sizes_from = cache.last_purged.map(|p| p.index + 1).unwrap_or(0);
            // Every entry is decoded once (a corrupt one is found now, not when a follower needs
            // it) and dropped; only the sizes stay, then the tail is read back.
            let entries = txn.open_table(ENTRIES)?;
            let mut expected = cache.last_purged.map(|p| p.index + 1);
            let first_kept = cache.last_purged.map_or(0, |p| p.index + 1);
            // Purged entries a crash left on disk are deleted by the writer, a few at a time.
            if let (Some(purged), Some((first, _))) = (cache.last_purged, entries.first()?) {
                if first.value() <= purged.index {
                    purge_leftover = Some(purged.index);
                }
            }
            for row in entries.range(first_kept..)? {
                let (index, bytes) = row?;
                let index = index.value();
                let entry: Entry = decode(&format!("log entry {index}"), bytes.value())?;
                match expected {
                    Some(expected) => anyhow::ensure!(
                        index == expected,
                        "the Raft log has a hole: expected index {expected}, found {index}"
                    ),
                    None => cache.sizes_from = index,
                }
                expected = Some(index + 1);
                cache.sizes.push_back(bytes.value().len() as u64);
                cache.last_log_id = Some(entry.log_id);
            }
            let mut tail = Vec::new();
            let mut tail_bytes = 0;
            for row in entries.range(first_kept..)?.rev() {
                let (_, bytes) = row?;
                if !tail.is_empty() && tail_bytes + bytes.value().len() as u64 > limits.tail_bytes {
                    break;
                }
                tail_bytes += bytes.value().len() as u64;
                let entry: Entry = decode("a log entry", bytes.value())?;
                tail.push(Cached { entry, bytes: bytes.value().len() as u64, write: 0 });
            }
            cache.tail = tail.into_iter().rev().collect();
            cache.tail_bytes = tail_bytes;
            // A committed index beyond the last entry (written by an older build, which stored
            // it ahead of its entry's append) says no more than the entries the log holds: the
            // rest is committed elsewhere and comes back from the leader.
            let last = cache.last_log_id.map(|l| l.index);
            if cache.committed.is_some_and(|c| Some(c.index) > last) {
                tracing::warn!(committed = ?cache.committed, last = ?cache.last_log_id, "the stored committed index is beyond the log; using the log's last entry");
                cache.committed = cache.last_log_id;
            }
        }
        let committed_index = cache.committed.map(|c| c.index).unwrap_or(0);
        let (writes, queue) = mpsc::sync_channel(WRITE_QUEUE_MAX);
        let shared = Arc::new(Shared {
            database,
            limits,
            cache: RwLock::new(cache),
            committed_index: AtomicU64::new(committed_index),
            committed_pending: Mutex::new(None),
            written: AtomicU64::new(0),
            sent: Mutex::new(0),
            floor,
        });
        let writer_shared = shared.clone();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer::write_loop(queue, writer_shared, purge_leftover))
            .map_err(|e| anyhow::anyhow!("cannot start the log writer thread: {e}"))?;
        Ok(Self { shared, writes })
    }

    /// Encoded bytes of the entries after `index` still in the log: what a snapshot at the
    /// applied index would let the node purge.
    pub fn bytes_after(&self, index: u64) -> u64 {
        let cache = self.shared.cache.read().expect("log cache lock");
        let skip = (index + 1).saturating_sub(cache.sizes_from) as usize;
        cache.sizes.iter().skip(skip).sum()
    }

    /// The index up to which the log can be purged so that at most `keep_bytes` of the entries
    /// up to `through` (a snapshot's index) remain, for followers slightly behind; `None` when
    /// they fit already.
    pub fn purge_point(&self, through: u64, keep_bytes: u64) -> Option<u64> {
        let cache = self.shared.cache.read().expect("log cache lock");
        let last = through.checked_sub(cache.sizes_from)? as usize;
        let mut kept = 0;
        for offset in (0..=last.min(cache.sizes.len().checked_sub(1)?)).rev() {
            kept += cache.sizes[offset];
            if kept > keep_bytes {
                return Some(cache.sizes_from + offset as u64);
            }
        }
        None
    }

    /// Highest index known committed.
    pub fn committed_index(&self) -> u64 {
        self.shared.committed_index.load(Ordering::Relaxed)
    }

    /// Index of the last entry, or of the purge point when the log is empty.
    pub fn last_index(&self) -> u64 {
        self.shared.cache.read().expect("log cache lock").last_log_id.map(|l| l.index).unwrap_or(0)
    }

    // openraft's error type is large, and this mirrors the trait methods that must return it.
    #[allow(clippy::result_large_err)]
    /// Numbers the next write, lets `prepare` update the cache with that number, and queues the
    /// write it returns.
    fn send(&self, prepare: impl FnOnce(u64, &mut Cache) -> Write) -> Result<(), StorageError> {
        let mut sent = self.shared.sent.lock().expect("send order lock");
        let number = *sent + 1;
        let write = prepare(number, &mut self.shared.cache.write().expect("log cache lock"));
        self.writes.send(write).map_err(|_| StorageError::from(StorageIOError::write_logs(&Stopped)))?;
        *sent = number;
        Ok(())
    }

    /// The entries of `from..to` on disk, decoded.
    #[allow(clippy::result_large_err)]
    fn read_from_disk(&self, from: u64, to: u64) -> Result<Vec<Entry>, StorageError> {
        let read = || -> anyhow::Result<Vec<Entry>> {
            let txn = self.shared.database.begin_read()?;
            let table = txn.open_table(ENTRIES)?;
            let mut entries = Vec::with_capacity(to.saturating_sub(from) as usize);
            for row in table.range(from..to)? {
                let (index, bytes) = row?;
                let entry: Entry = decode(&format!("log entry {}", index.value()), bytes.value())?;
                entries.push(entry);
            }
            let contiguous = entries.windows(2).all(|pair| pair[1].log_id.index == pair[0].log_id.index + 1);
            anyhow::ensure!(contiguous, "log entries {from}..{to} on disk have a hole");
            Ok(entries)
        };
        read().map_err(|e| StorageIOError::read_logs(&AnyMessage(format!("{e:#}"))).into())
    }

    async fn save_meta(&self, key: &'static str, value: Vec<u8>) -> Result<(), String> {
        let (done, finished) = tokio::sync::oneshot::channel();
        self.send(|_, _| Write::Meta { key, value, done: Some(done) }).map_err(|_| Stopped.to_string())?;
        finished.await.map_err(|_| Stopped.to_string())?
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the log writer thread stopped")]
struct Stopped;

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end, tail_start, mut from_tail) = {
            let cache = self.shared.cache.read().expect("log cache lock");
            // Entries that exist in the range: none before the first or after the last.
            let start = match range.start_bound() {
                Bound::Included(i) => *i,
                Bound::Excluded(i) => i + 1,
                Bound::Unbounded => 0,
            }
            .max(cache.sizes_from);
            let end = match range.end_bound() {
                Bound::Included(i) => i + 1,
                Bound::Excluded(i) => *i,
                Bound::Unbounded => u64::MAX,
            }
            .min(cache.next_index());
            let tail_start = cache.tail_start();
            // The tail is contiguous, so the range is a slice of it.
            let first = start.saturating_sub(tail_start) as usize;
            let last = (end.saturating_sub(tail_start) as usize).min(cache.tail.len());
            let from_tail: Vec<Entry> =
                cache.tail.range(first.min(last)..last).map(|cached| cached.entry.clone()).collect();
            debug_assert!(from_tail.windows(2).all(|p| p[1].log_id.index == p[0].log_id.index + 1));
            (start, end, tail_start, from_tail)
        };
        if start >= tail_start || start >= end {
            return Ok(from_tail);
        }
        // Entries before the tail were committed by the writer before they left it, so the disk
        // has them (a read never sees a truncated entry: reads stop at the last index).
        let mut entries = self.read_from_disk(start, end.min(tail_start))?;
        entries.append(&mut from_tail);
        Ok(entries)
    }

    /// The first entries of `start..end`, within [`LogStoreLimits::read_bytes`]: what
    /// replication sends a follower that is behind.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        let end =
            self.shared.cache.read().expect("log cache lock").bounded_end(start, end, self.shared.limits.read_bytes);
        self.try_get_log_entries(start..end).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let cache = self.shared.cache.read().expect("log cache lock");
        Ok(LogState { last_purged_log_id: cache.last_purged, last_log_id: cache.last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let bytes = encode(vote).map_err(|e| StorageIOError::write_vote(&e))?;
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
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = encode(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            encoded.push((entry, bytes));
        }
        let tail_limit = self.shared.limits.tail_bytes;
        let written = self.shared.written.load(Ordering::Acquire);
        self.send(move |number, cache| {
            let mut rows = Vec::with_capacity(encoded.len());
            for (entry, bytes) in encoded {
                let index = entry.log_id.index;
                if cache.sizes.is_empty() {
                    // The first entry after the purge point (openraft's own tests also append
                    // below it, into an empty log).
                    cache.sizes_from = index;
                } else {
                    assert_eq!(index, cache.next_index(), "appends are contiguous");
                }
                debug_assert_eq!(cache.sizes_from + cache.sizes.len() as u64, index, "one size per entry");
                let size = bytes.len() as u64;
                cache.sizes.push_back(size);
                cache.tail_bytes += size;
                cache.last_log_id = Some(entry.log_id);
                cache.tail.push_back(Cached { entry, bytes: size, write: number });
                rows.push((index, bytes));
            }
            cache.evict(tail_limit, written);
            Write::Append { entries: rows, flushed: callback }
        })
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let from = log_id.index;
        // The entry before the cut becomes the last; it is in the tail, the purge point, or on
        // disk (an entry leaves the tail only once written).
        let before = from.checked_sub(1);
        let last_on_disk = {
            let cache = self.shared.cache.read().expect("log cache lock");
            match before {
                Some(before) if before >= cache.tail_start() => None,
                Some(before) if cache.last_purged.is_some_and(|p| p.index >= before) => None,
                Some(before) => Some(before),
                None => None,
            }
        };
        let last_on_disk = match last_on_disk {
            Some(index) => self.read_from_disk(index, index + 1)?.pop().map(|entry| entry.log_id),
            None => None,
        };
        self.send(move |_, cache| {
            while cache.tail.back().is_some_and(|c| c.entry.log_id.index >= from) {
                let dropped = cache.tail.pop_back().expect("checked");
                cache.tail_bytes -= dropped.bytes;
            }
            cache.forget_sizes_from(from);
            cache.last_log_id = match cache.tail.back() {
                Some(cached) => Some(cached.entry.log_id),
                None => last_on_disk.or(cache.last_purged.filter(|p| Some(p.index) == before)),
            };
            Write::Truncate { from_index: from }
        })
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.send(move |_, cache| {
            while cache.tail.front().is_some_and(|c| c.entry.log_id.index <= log_id.index) {
                let dropped = cache.tail.pop_front().expect("checked");
                cache.tail_bytes -= dropped.bytes;
            }
            cache.forget_sizes_through(log_id.index);
            cache.last_purged = Some(log_id);
            if cache.last_log_id.is_none_or(|last| last.index <= log_id.index) {
                cache.last_log_id = Some(log_id);
            }
            Write::Purge { log_id }
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct AnyMessage(String);

/// The writer thread.
#[path = "log_writer.rs"]
mod writer;

#[cfg(test)]
#[path = "log_store_tests.rs"]
mod tests;
