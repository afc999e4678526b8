//! The log's writer thread: drains every queued write, commits them in one redb transaction
//! (one fsync), then acknowledges them; deletes purged entries a few at a time beside other
//! writes; and writes a purge to disk only once the [`PurgeFloor`] allows it.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use redb::{Database, ReadableTable};

use super::{encode, Shared, Write, ENTRIES, KEY_COMMITTED, KEY_PURGED, META};
use crate::raft::LogId;
use crate::storage::purge_floor::PurgeFloor;

/// The writer thread: drain everything queued, commit once, then acknowledge.
pub(super) fn write_loop(queue: mpsc::Receiver<Write>, shared: Arc<Shared>, purge_leftover: Option<u64>) {
    let mut written = 0;
    // A purge the floor did not allow yet is written with the first batch after it does. The
    // entries of a purge on disk are deleted a few at a time, beside other writes, so that a
    // purge of gigabytes never holds up an append or a vote.
    let mut purges = Purges { deferred: None, pending: purge_leftover };
    loop {
        let first = if purges.pending.is_some() {
            match queue.try_recv() {
                Ok(write) => Some(write),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        } else {
            match queue.recv() {
                Ok(write) => Some(write),
                Err(_) => return,
            }
        };
        // The committed index rides along with whatever is committed next; it costs no fsync
        // of its own. It is taken before the queue is drained: openraft reports an index
        // committed only after the append of its entry was queued, so the drain below takes that
        // append too, and the disk never holds a committed index beyond its last entry.
        let committed = shared.committed_pending.lock().expect("committed lock").take();
        let mut batch: Vec<Write> = first.into_iter().collect();
        while let Ok(next) = queue.try_recv() {
            batch.push(next);
        }
        if let Some(committed) = committed {
            match encode(&committed) {
                Ok(value) => batch.push(Write::Meta { key: KEY_COMMITTED, value, done: None }),
                Err(error) => tracing::error!(%error, "cannot encode the committed log id"),
            }
        }
        // Writes carry consecutive numbers from 1 in the order they were sent (the queue keeps
        // it); the committed-index row is not one of them.
        let numbered = batch.iter().filter(|write| !matches!(write, Write::Meta { done: None, .. })).count() as u64;
        let result = match commit_batch(&shared.database, &batch, &shared.floor, purges) {
            Ok(after) => {
                purges = after;
                Ok(())
            }
            Err(error) => {
                // Nothing of the batch is on disk; its purges wait for the next commit.
                purges.deferred = latest_purge(purges.deferred, &batch);
                Err(error.to_string())
            }
        };
        match &result {
            Ok(()) => {
                written += numbered;
                shared.written.store(written, Ordering::Release);
                let mut cache = shared.cache.write().expect("log cache lock");
                cache.evict(shared.limits.tail_bytes, written);
            }
            Err(error) => tracing::error!(%error, "writing the Raft log failed; the node cannot continue safely"),
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

/// Purged entries deleted from disk per commit, at most: a few MiB of large entries.
const PURGE_CHUNK_ENTRIES: u64 = 8;

/// The writer thread's purge state between commits; a commit's changes to it count only once
/// the commit succeeded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Purges {
    /// The latest purge requested beyond the floor, not on disk yet.
    pub deferred: Option<LogId>,
    /// Entries up to this index are purged on disk but may still be there: deleted a few per
    /// commit.
    pub pending: Option<u64>,
}

/// The furthest of `deferred` and the purges `batch` asks for: purges only move forward, so the
/// latest covers those before it.
fn latest_purge(deferred: Option<LogId>, batch: &[Write]) -> Option<LogId> {
    let requested = batch.iter().filter_map(|write| match write {
        Write::Purge { log_id } => Some(*log_id),
        _ => None,
    });
    deferred.into_iter().chain(requested).max_by_key(|log_id| log_id.index)
}

/// Commits `batch` in one transaction, with a purge the floor now allows and the next few
/// entries of a pending one; returns the purge state after the commit.
fn commit_batch(database: &Database, batch: &[Write], floor: &PurgeFloor, before: Purges) -> anyhow::Result<Purges> {
    let mut after = before;
    let txn = database.begin_write()?;
    {
        let mut entries = txn.open_table(ENTRIES)?;
        let mut meta = txn.open_table(META)?;
        if let Some(latest) = latest_purge(after.deferred.take(), batch) {
            if floor.allows(latest.index) {
                // The purge point is durable at once; the entries go a few at a time (a restart
                // skips those left).
                meta.insert(KEY_PURGED, encode(&Some(latest))?.as_slice())?;
                after.pending = Some(after.pending.map_or(latest.index, |pending| pending.max(latest.index)));
            } else {
                after.deferred = Some(latest);
            }
        }
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
                // Handled above, before the batch's other writes.
                Write::Purge { .. } => {}
                Write::Meta { key, value, .. } => {
                    meta.insert(*key, value.as_slice())?;
                }
            }
        }
    }
    if let Some(upto) = after.pending {
        let mut entries = txn.open_table(ENTRIES)?;
        let first = entries.first()?.map(|(index, _)| index.value());
        match first {
            Some(first) if first <= upto => {
                let end = upto.min(first + PURGE_CHUNK_ENTRIES - 1);
                entries.retain_in(first..=end, |_, _| false)?;
                if end == upto {
                    after.pending = None;
                }
            }
            _ => after.pending = None,
        }
    }
    // Durability::Immediate is redb's default: commit returns after fsync.
    txn.commit()?;
    Ok(after)
}
