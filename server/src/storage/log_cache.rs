//! What the log store holds in memory: a tail of the newest entries, bounded by bytes, and the
//! encoded size of every entry in the log (for snapshots by log bytes), with the log's ids.

use std::collections::VecDeque;

use openraft::Vote;

use crate::raft::{Entry, LogId};

#[derive(Default)]
pub(super) struct Cache {
    /// The newest entries, in index order.
    pub(super) tail: VecDeque<Cached>,
    /// Encoded bytes of `tail`.
    pub(super) tail_bytes: u64,
    /// Encoded size of every entry in the log, from index `sizes_from` on.
    pub(super) sizes: VecDeque<u64>,
    pub(super) sizes_from: u64,
    /// The last entry's id, or the purge point when the log is empty.
    pub(super) last_log_id: Option<LogId>,
    pub(super) last_purged: Option<LogId>,
    pub(super) vote: Option<Vote<u64>>,
    pub(super) committed: Option<LogId>,
}

/// An entry of the tail, with its size and the write that carries it to disk.
pub(super) struct Cached {
    pub(super) entry: Entry,
    pub(super) bytes: u64,
    pub(super) write: u64,
}

impl Cache {
    /// Index of the first entry in the tail, or the one after the last entry when it is empty.
    pub(super) fn tail_start(&self) -> u64 {
        self.tail.front().map(|c| c.entry.log_id.index).unwrap_or_else(|| self.next_index())
    }

    pub(super) fn next_index(&self) -> u64 {
        self.last_log_id.map(|l| l.index + 1).unwrap_or(0)
    }

    /// Drops the oldest entries of the tail while it is over `limit` bytes, keeping the newest
    /// and every entry the writer has not committed yet (write number above `written`).
    pub(super) fn evict(&mut self, limit: u64, written: u64) {
        while self.tail_bytes > limit && self.tail.len() > 1 {
            let front = self.tail.front().expect("the tail has entries");
            if front.write > written {
                break;
            }
            self.tail_bytes -= front.bytes;
            self.tail.pop_front();
        }
    }

    /// Forgets the sizes of entries from `index` on.
    pub(super) fn forget_sizes_from(&mut self, index: u64) {
        self.sizes.truncate(index.saturating_sub(self.sizes_from) as usize);
    }

    /// Forgets the sizes of entries up to `index`.
    pub(super) fn forget_sizes_through(&mut self, index: u64) {
        let forgotten = ((index + 1).saturating_sub(self.sizes_from) as usize).min(self.sizes.len());
        self.sizes.drain(..forgotten);
        self.sizes_from = self.sizes_from.max(index + 1);
    }
}
