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

    /// The end of a bounded read from `start`: the entries of `start..end` whose encoded sizes
    /// add up to at most `limit` bytes, and at least one. Purged entries (before `sizes_from`)
    /// are not counted: a read skips them.
    pub(super) fn bounded_end(&self, start: u64, end: u64, limit: u64) -> u64 {
        let first = start.max(self.sizes_from);
        let mut bytes = 0;
        let mut bounded = first;
        for size in self.sizes.iter().skip((first - self.sizes_from) as usize) {
            if bounded >= end || (bounded > first && bytes + size > limit) {
                break;
            }
            bytes += size;
            bounded += 1;
        }
        bounded.clamp(start.min(end), end)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_sizes(sizes_from: u64, sizes: &[u64]) -> Cache {
        Cache { sizes: sizes.iter().copied().collect(), sizes_from, ..Cache::default() }
    }

    #[test]
    fn a_bounded_read_stops_at_the_byte_limit_but_takes_one_entry() {
        // Entries 10..15 of 400, 400, 5000, 100, 100 bytes.
        let cache = with_sizes(10, &[400, 400, 5000, 100, 100]);
        assert_eq!(cache.bounded_end(10, 15, 1000), 12, "two entries fit, the third not");
        assert_eq!(cache.bounded_end(12, 15, 1000), 13, "one entry over the limit goes alone");
        assert_eq!(cache.bounded_end(13, 15, 1000), 15, "the rest fits");
        assert_eq!(cache.bounded_end(10, 11, 1000), 11, "never past the range asked for");
        assert_eq!(cache.bounded_end(10, 15, u64::MAX), 15);
        assert_eq!(cache.bounded_end(13, 13, 1000), 13, "an empty range stays empty");
    }

    #[test]
    fn a_bounded_read_skips_purged_entries_and_stops_after_the_last() {
        let cache = with_sizes(10, &[400, 400]);
        assert_eq!(cache.bounded_end(5, 20, 1000), 12, "from the first entry kept");
        assert_eq!(cache.bounded_end(5, 8, 1000), 8, "a purged range reads nothing");
        assert_eq!(cache.bounded_end(12, 20, 1000), 12, "nothing after the last entry");
    }
}
