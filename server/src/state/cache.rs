//! The cache directory: one entry per live key with its version and expiry, plus the writes not
//! yet written back to Redis.
//!
//! Redis holds the values; the directory says which version of each key is current. A write
//! (set or delete) takes a fresh revision as its version and keeps its value here, *pending*,
//! until the leader's write-back worker has stored it in Redis and proposed
//! [`CacheDirectory::written_back`] for that version. So a read can always be answered: from the
//! pending value, or from a copy (a node's or Redis's) whose version equals the directory's.
//!
//! A delete leaves a pending tombstone until Redis has dropped the key, so that a read never
//! fetches the old value from Redis. A key whose TTL passed becomes such a tombstone in the first
//! entry stamped after its expiry, on every replica at the same log position.
//!
//! Pure: time is the leader's stamp, versions are revisions handed in by the caller.

use std::collections::{BTreeMap, BTreeSet};

use distsync::wire::{CacheReport, CommandResponse};
use distsync::ServerError;
use serde::{Deserialize, Serialize};

use super::limits::{reached, Limits};
use super::StateMachine;

/// Live keys and tombstones in the directory by default (`--max-cache-keys`). Each costs its key and about 64 bytes.
pub const CACHE_KEYS_MAX: usize = 1_000_000;

/// Bytes of values waiting for write-back by default (`--max-cache-pending-bytes`). Reached only when Redis has been unreachable for long:
/// writes are then refused rather than growing every node's memory without bound.
pub const PENDING_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// A write not yet stored in Redis.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum PendingWrite {
    /// Store this value.
    Value(bytes::Bytes),
    /// Remove the key.
    Delete,
}

/// One key's directory entry.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// The revision of the write that made the current state (value or deletion).
    pub version: u64,
    /// Leader time after which the key reads as absent.
    pub expires_at_ms: Option<u64>,
    /// The write not yet stored in Redis, if any.
    pub pending: Option<PendingWrite>,
    /// Nodes that reported a copy of this version (MESI's sharers); every write empties it.
    #[serde(default)]
    pub holders: BTreeSet<u64>,
}

/// What the directory says about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryRead<'a> {
    /// No such key (never written, deleted, or expired).
    Absent,
    /// The value is still pending write-back: here it is.
    Pending {
        /// The version.
        version: u64,
        /// The value.
        value: &'a [u8],
    },
    /// The value is in Redis at this version.
    Stored {
        /// The version a copy must carry to be current.
        version: u64,
    },
}

/// One write the leader should store in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteBack<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The version being written.
    pub version: u64,
    /// The value, or `None` to delete the key.
    pub value: Option<&'a [u8]>,
    /// The key's expiry, to store with the value.
    pub expires_at_ms: Option<u64>,
}

/// The directory.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheDirectory {
    entries: BTreeMap<Vec<u8>, DirectoryEntry>,
    /// (expires_at_ms, key) of live keys with a TTL.
    by_expiry: BTreeSet<(u64, Vec<u8>)>,
    /// version → key of every pending write, oldest first: the write-back order.
    pending: BTreeMap<u64, Vec<u8>>,
    /// Bytes of pending values.
    pending_bytes: u64,
    /// (key, version) of every write, deletion and expiry since the last
    /// [`CacheDirectory::take_changes`]: nodes invalidate their older copies. Not replicated.
    #[serde(skip)]
    changes: Vec<(Vec<u8>, u64)>,
}

impl CacheDirectory {
    /// Live keys (tombstones excluded).
    pub fn live_keys(&self) -> usize {
        self.entries.values().filter(|e| e.pending != Some(PendingWrite::Delete)).count()
    }

    /// Writes waiting for write-back.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// The earliest expiry of a live key.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.by_expiry.first().map(|(at, _)| *at)
    }

    /// The live entry of `key` (tombstones read as `None`).
    pub fn entry(&self, key: &[u8]) -> Option<&DirectoryEntry> {
        self.entries.get(key).filter(|e| e.pending != Some(PendingWrite::Delete))
    }

    /// Keys written, deleted or expired since the last call, with their new versions; drains.
    pub fn take_changes(&mut self) -> Vec<(Vec<u8>, u64)> {
        std::mem::take(&mut self.changes)
    }

    /// Applies a node's report: forget all its copies (`reset`), add it as holder of the
    /// current versions it `loaded`, remove it where it `dropped` its copy, and drop keys whose
    /// current version Redis `lost` (they read as absent from here on; nothing is pending for
    /// them, so Redis has nothing to learn).
    pub fn apply_report(&mut self, report: &CacheReport) {
        if report.reset {
            for entry in self.entries.values_mut() {
                entry.holders.remove(&report.node);
            }
        }
        for (key, version) in &report.loaded {
            if let Some(entry) = self.entries.get_mut(key.as_slice()) {
                if entry.version == *version && entry.pending != Some(PendingWrite::Delete) {
                    entry.holders.insert(report.node);
                }
            }
        }
        for key in &report.dropped {
            if let Some(entry) = self.entries.get_mut(key.as_slice()) {
                entry.holders.remove(&report.node);
            }
        }
        for (key, version) in &report.lost {
            let stored = self.entries.get(key.as_slice()).is_some_and(|e| e.version == *version && e.pending.is_none());
            if stored {
                self.remove(key);
                self.changes.push((key.clone(), *version));
            }
        }
    }

    /// What the directory says about `key`.
    pub fn read(&self, key: &[u8]) -> DirectoryRead<'_> {
        match self.entries.get(key) {
            None | Some(DirectoryEntry { pending: Some(PendingWrite::Delete), .. }) => DirectoryRead::Absent,
            Some(DirectoryEntry { version, pending: Some(PendingWrite::Value(value)), .. }) => {
                DirectoryRead::Pending { version: *version, value }
            }
            Some(DirectoryEntry { version, pending: None, .. }) => DirectoryRead::Stored { version: *version },
        }
    }

    /// Sets `key` to `value` at `version`, expiring at `expires_at_ms` if given.
    ///
    /// # Errors
    ///
    /// `Full` beyond [`CACHE_KEYS_MAX`] keys or [`PENDING_BYTES_MAX`] pending bytes.
    pub fn set(
        &mut self,
        key: &[u8],
        value: &[u8],
        version: u64,
        expires_at_ms: Option<u64>,
        limits: &Limits,
    ) -> Result<(), ServerError> {
        let replaced = self.entries.get(key).map_or(0, pending_bytes);
        let keys = limits.cache_keys;
        if !self.entries.contains_key(key) && self.entries.len() as u64 >= keys {
            return Err(reached(
                "CACHE_KEYS_MAX",
                keys,
                format!("the cache directory holds {keys} keys; delete some first"),
            ));
        }
        if self.pending_bytes - replaced + value.len() as u64 > limits.cache_pending_bytes {
            return Err(reached(
                "PENDING_BYTES_MAX",
                limits.cache_pending_bytes,
                format!(
                    "{} bytes of writes are waiting to be written back to Redis; is Redis reachable?",
                    self.pending_bytes
                ),
            ));
        }
        self.replace(
            key,
            DirectoryEntry {
                version,
                expires_at_ms,
                pending: Some(PendingWrite::Value(super::shared(value))),
                holders: BTreeSet::new(),
            },
        );
        Ok(())
    }

    /// Deletes `key` at `version`; returns whether it was live.
    pub fn delete(&mut self, key: &[u8], version: u64) -> bool {
        let live = matches!(self.read(key), DirectoryRead::Pending { .. } | DirectoryRead::Stored { .. });
        if live {
            self.replace(key, tombstone(version));
        }
        live
    }

    /// Records that Redis holds `key` as of `version`: its pending write is done. A tombstone
    /// goes away; a newer write of the key stays pending.
    pub fn written_back(&mut self, key: &[u8], version: u64) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        if entry.version != version || entry.pending.is_none() {
            return;
        }
        self.pending_bytes -= pending_bytes(entry);
        self.pending.remove(&version);
        if entry.pending == Some(PendingWrite::Delete) {
            self.entries.remove(key);
        } else {
            entry.pending = None;
        }
    }

    /// Turns keys whose expiry passed before `now_ms` into tombstones (with fresh versions from
    /// `next_revision`, so that Redis drops them too); returns them.
    pub fn expire(&mut self, now_ms: u64, next_revision: &mut dyn FnMut() -> u64) -> Vec<Vec<u8>> {
        let mut expired = Vec::new();
        while let Some((at, key)) = self.by_expiry.first().cloned() {
            if at >= now_ms {
                break;
            }
            let version = next_revision();
            self.replace(&key, tombstone(version));
            expired.push(key);
        }
        expired
    }

    /// The oldest `limit` pending writes, for the write-back worker.
    pub fn pending_write_backs(&self, limit: usize) -> Vec<WriteBack<'_>> {
        self.pending
            .iter()
            .take(limit)
            .map(|(version, key)| {
                let entry = &self.entries[key];
                WriteBack {
                    key,
                    version: *version,
                    value: match &entry.pending {
                        Some(PendingWrite::Value(value)) => Some(value),
                        _ => None,
                    },
                    expires_at_ms: entry.expires_at_ms,
                }
            })
            .collect()
    }

    /// Removes `key`'s entry, keeping the indexes right.
    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.entries.remove(key) {
            self.pending_bytes -= pending_bytes(&old);
            if old.pending.is_some() {
                self.pending.remove(&old.version);
            }
            if let Some(at) = old.expires_at_ms {
                self.by_expiry.remove(&(at, key.to_vec()));
            }
        }
    }

    /// Puts `entry` in place of `key`'s, keeping the indexes right; a new version, so copies of
    /// older ones become invalid.
    fn replace(&mut self, key: &[u8], entry: DirectoryEntry) {
        self.remove(key);
        self.changes.push((key.to_vec(), entry.version));
        self.pending_bytes += pending_bytes(&entry);
        if entry.pending.is_some() {
            self.pending.insert(entry.version, key.to_vec());
        }
        if let Some(at) = entry.expires_at_ms {
            self.by_expiry.insert((at, key.to_vec()));
        }
        self.entries.insert(key.to_vec(), entry);
    }

    /// Panics if the indexes disagree with the entries, which would mean a bug.
    pub fn check_invariants(&self, revision: u64) {
        let mut bytes = 0;
        let mut pending = 0;
        let mut expiring = 0;
        for (key, entry) in &self.entries {
            assert!(entry.version <= revision, "cache key {key:?} has version {} beyond {revision}", entry.version);
            bytes += pending_bytes(entry);
            if entry.pending.is_some() {
                pending += 1;
                assert_eq!(self.pending.get(&entry.version), Some(key), "cache key {key:?}: pending index");
            }
            if let Some(at) = entry.expires_at_ms {
                expiring += 1;
                assert!(self.by_expiry.contains(&(at, key.clone())), "cache key {key:?}: expiry index");
                assert!(entry.pending != Some(PendingWrite::Delete), "cache key {key:?}: a tombstone expires");
            }
        }
        assert_eq!(bytes, self.pending_bytes, "pending bytes drifted");
        assert_eq!(pending, self.pending.len(), "pending index has strays");
        assert_eq!(expiring, self.by_expiry.len(), "expiry index has strays");
    }
}

fn tombstone(version: u64) -> DirectoryEntry {
    DirectoryEntry { version, expires_at_ms: None, pending: Some(PendingWrite::Delete), holders: BTreeSet::new() }
}

fn pending_bytes(entry: &DirectoryEntry) -> u64 {
    match &entry.pending {
        Some(PendingWrite::Value(value)) => value.len() as u64,
        _ => 0,
    }
}

/// The cache's commands.
impl StateMachine {
    /// `CacheSet` at `revision`, which becomes the key's version; the value waits in the
    /// directory for write-back.
    pub(super) fn cache_set(
        &mut self,
        revision: u64,
        key: &[u8],
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<CommandResponse, ServerError> {
        let expires_at_ms = ttl_ms.map(|ttl| self.now_ms.saturating_add(ttl));
        self.cache.set(key, value, revision, expires_at_ms, &self.limits)?;
        Ok(CommandResponse::CacheSet { version: revision })
    }

    /// `CacheDelete` at `revision`: a pending tombstone until Redis dropped the key.
    pub(super) fn cache_delete(&mut self, revision: u64, key: &[u8]) -> CommandResponse {
        CommandResponse::CacheDeleted { existed: self.cache.delete(key, revision) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_pending_until_written_back_and_a_newer_write_stays_pending() {
        let mut directory = CacheDirectory::default();
        directory.set(b"k", b"v1", 10, None, &Limits::default()).unwrap();
        assert_eq!(directory.read(b"k"), DirectoryRead::Pending { version: 10, value: b"v1" });
        directory.set(b"k", b"v2", 11, None, &Limits::default()).unwrap();
        let backlog = directory.pending_write_backs(10);
        assert_eq!(backlog.len(), 1, "only the newest write of a key is written back");
        assert_eq!((backlog[0].version, backlog[0].value), (11, Some(&b"v2"[..])));
        directory.written_back(b"k", 10);
        assert_eq!(directory.read(b"k"), DirectoryRead::Pending { version: 11, value: b"v2" }, "a stale ack");
        directory.written_back(b"k", 11);
        assert_eq!(directory.read(b"k"), DirectoryRead::Stored { version: 11 });
        assert_eq!(directory.pending_count(), 0);
        directory.check_invariants(11);
    }

    #[test]
    fn a_delete_is_a_tombstone_until_redis_drops_the_key() {
        let mut directory = CacheDirectory::default();
        directory.set(b"k", b"v", 1, None, &Limits::default()).unwrap();
        directory.written_back(b"k", 1);
        assert!(directory.delete(b"k", 2));
        assert_eq!(directory.read(b"k"), DirectoryRead::Absent, "the stored copy must not be read");
        assert!(!directory.delete(b"k", 3), "a tombstone is not live");
        let backlog = directory.pending_write_backs(10);
        assert_eq!((backlog[0].version, backlog[0].value), (2, None));
        directory.written_back(b"k", 2);
        assert_eq!(directory.pending_count(), 0);
        assert_eq!(directory.live_keys(), 0);
        directory.check_invariants(3);
    }

    #[test]
    fn keys_expire_by_leader_time_into_tombstones_with_fresh_versions() {
        let mut directory = CacheDirectory::default();
        directory.set(b"short", b"v", 5, Some(1_000), &Limits::default()).unwrap();
        directory.set(b"long", b"v", 6, Some(9_000), &Limits::default()).unwrap();
        let mut revision = 6;
        let mut next = || {
            revision += 1;
            revision
        };
        assert!(directory.expire(1_000, &mut next).is_empty(), "the expiry instant itself is not past");
        assert_eq!(directory.expire(1_001, &mut next), vec![b"short".to_vec()]);
        assert_eq!(directory.read(b"short"), DirectoryRead::Absent);
        assert_eq!(directory.next_expiry_ms(), Some(9_000));
        let tombstone = directory.pending_write_backs(10).into_iter().find(|w| w.key == b"short").unwrap();
        assert_eq!((tombstone.version, tombstone.value), (7, None));
        directory.check_invariants(7);
    }

    #[test]
    fn pending_bytes_are_bounded() {
        let mut directory = CacheDirectory::default();
        let big = vec![0u8; (PENDING_BYTES_MAX / 2) as usize];
        directory.set(b"a", &big, 1, None, &Limits::default()).unwrap();
        directory.set(b"b", &big, 2, None, &Limits::default()).unwrap();
        assert!(
            directory.set(b"c", b"x", 3, None, &Limits::default()).is_err(),
            "Redis is behind: refuse rather than grow"
        );
        directory.set(b"b", b"small", 4, None, &Limits::default()).unwrap();
        directory.set(b"c", b"x", 5, None, &Limits::default()).unwrap();
        directory.check_invariants(5);
    }

    #[test]
    fn holders_follow_reports_and_every_write_empties_them() {
        let mut directory = CacheDirectory::default();
        directory.set(b"k", b"v", 1, None, &Limits::default()).unwrap();
        directory.written_back(b"k", 1);
        let loaded = |node, version| CacheReport { node, loaded: vec![(b"k".to_vec(), version)], ..Default::default() };
        directory.apply_report(&loaded(1, 1));
        directory.apply_report(&loaded(2, 1));
        directory.apply_report(&loaded(3, 0));
        assert_eq!(directory.entry(b"k").unwrap().holders, BTreeSet::from([1, 2]), "a stale version is ignored");
        directory.apply_report(&CacheReport { node: 2, dropped: vec![b"k".to_vec()], ..Default::default() });
        assert_eq!(directory.entry(b"k").unwrap().holders, BTreeSet::from([1]));
        directory.apply_report(&CacheReport { node: 1, reset: true, ..Default::default() });
        assert!(directory.entry(b"k").unwrap().holders.is_empty());
        directory.apply_report(&loaded(1, 1));
        directory.take_changes();
        directory.set(b"k", b"w", 2, None, &Limits::default()).unwrap();
        assert!(directory.entry(b"k").unwrap().holders.is_empty(), "a write invalidates every copy");
        assert_eq!(directory.take_changes(), vec![(b"k".to_vec(), 2)]);
        directory.check_invariants(2);
    }

    #[test]
    fn a_value_redis_lost_reads_absent_only_if_it_is_still_current_and_stored() {
        let mut directory = CacheDirectory::default();
        directory.set(b"k", b"v", 1, None, &Limits::default()).unwrap();
        let lost = |version| CacheReport { node: 1, lost: vec![(b"k".to_vec(), version)], ..Default::default() };
        directory.apply_report(&lost(1));
        assert!(matches!(directory.read(b"k"), DirectoryRead::Pending { .. }), "a pending value is not in Redis yet");
        directory.written_back(b"k", 1);
        directory.set(b"k", b"w", 2, None, &Limits::default()).unwrap();
        directory.written_back(b"k", 2);
        directory.apply_report(&lost(1));
        assert_eq!(directory.read(b"k"), DirectoryRead::Stored { version: 2 }, "an old version's loss is moot");
        directory.apply_report(&lost(2));
        assert_eq!(directory.read(b"k"), DirectoryRead::Absent);
        directory.check_invariants(2);
    }
}
