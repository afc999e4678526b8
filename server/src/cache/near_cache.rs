//! A node's own cache of values it read from Redis or wrote itself: bounded by bytes and entries,
//! with TinyLFU admission, and a MESI state per copy.
//!
//! Correctness never rests on this cache: a copy is served only when its version equals the
//! directory's current version for the key, which the reader takes from the applied state. The
//! MESI state is derived, not stored: a copy of the current version is M while its write (made
//! through this node) waits for write-back and no other node holds it, S when the directory
//! lists other holders (a read of a modified value elsewhere shares it, as in MESI), else E; a
//! copy of an older version is I. Applying a write, deletion or expiry invalidates older
//! copies at once ([`NearCache::invalidate`]), which frees their values.
//!
//! Eviction is least-recently-used; admission is TinyLFU (Einziger et al., 2017): when the cache
//! is full, a newcomer gets in only if a count-min sketch says it was asked for more often than
//! the entry it would evict. So a burst of one-off reads cannot flush the hot set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use distsync::wire::{CacheCopyView, MesiState};
use distsync::NodeId;

use super::frequency_sketch::FrequencySketch;
use crate::state::cache::{DirectoryEntry, PendingWrite};

/// Bytes a copy costs beyond its key and value: slot, map entry, allocation headers.
const ENTRY_OVERHEAD_BYTES: u64 = 96;

const NIL: usize = usize::MAX;

/// How big a node's cache may grow.
#[derive(Debug, Clone, Copy)]
pub struct NearCacheLimits {
    /// Bytes of keys, values and overhead.
    pub bytes: u64,
    /// Copies, valid or invalid.
    pub entries: usize,
}

/// What a read found in the cache.
pub enum Lookup {
    /// A copy of the wanted version.
    Hit(Arc<Vec<u8>>),
    /// No usable copy.
    Miss,
}

/// Counters since the node started.
#[derive(Debug, Default, Clone, Copy)]
pub struct NearCacheCounters {
    /// Reads served from a copy.
    pub hits: u64,
    /// Copies invalidated by newer versions.
    pub invalidations: u64,
    /// Copies evicted to make room.
    pub evictions: u64,
    /// Newcomers the admission policy refused.
    pub rejected: u64,
}

/// Copies by MESI state, and their bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StateCounts {
    /// M.
    pub modified: u64,
    /// E.
    pub exclusive: u64,
    /// S.
    pub shared: u64,
    /// I.
    pub invalid: u64,
    /// Bytes of all copies.
    pub bytes: u64,
}

/// A change to report to the directory's holder sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HolderChange {
    /// The node now holds this version.
    Loaded(Vec<u8>, u64),
    /// The node dropped its copy.
    Dropped(Vec<u8>),
}

struct Slot {
    key: Vec<u8>,
    version: u64,
    /// `None` once invalidated.
    value: Option<Arc<Vec<u8>>>,
    /// Written through this node (M until written back).
    written_here: bool,
    prev: usize,
    next: usize,
}

impl Slot {
    fn bytes(&self) -> u64 {
        ENTRY_OVERHEAD_BYTES + self.key.len() as u64 + self.value.as_ref().map_or(0, |v| v.len() as u64)
    }
}

struct Inner {
    map: HashMap<Vec<u8>, usize>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used: the next victim.
    tail: usize,
    bytes: u64,
    limits: NearCacheLimits,
    sketch: FrequencySketch,
    counters: NearCacheCounters,
    /// Holder changes not yet reported.
    changes: Vec<HolderChange>,
    /// Every copy was dropped since the last report.
    reset: bool,
}

/// A node's cache; shared by the read path, the apply path and the reporters.
pub struct NearCache {
    inner: Mutex<Inner>,
    node: NodeId,
}

impl NearCache {
    /// An empty cache of node `node` within `limits`.
    pub fn new(node: NodeId, limits: NearCacheLimits) -> Self {
        Self {
            node,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                slots: Vec::new(),
                free: Vec::new(),
                head: NIL,
                tail: NIL,
                bytes: 0,
                limits,
                sketch: FrequencySketch::new(limits.entries.min((limits.bytes / 64) as usize)),
                counters: NearCacheCounters::default(),
                changes: Vec::new(),
                // A fresh node may be listed as a holder from before it restarted.
                reset: true,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("near cache lock")
    }

    /// The copy of `key` if it has exactly `version`; counts the access either way.
    pub fn get(&self, key: &[u8], version: u64) -> Lookup {
        let mut inner = self.lock();
        inner.sketch.increment(key);
        let Some(&slot) = inner.map.get(key) else { return Lookup::Miss };
        let found = &inner.slots[slot];
        match &found.value {
            Some(value) if found.version == version => {
                let value = value.clone();
                inner.counters.hits += 1;
                inner.touch(slot);
                Lookup::Hit(value)
            }
            _ => Lookup::Miss,
        }
    }

    /// Offers a copy of `key` at `version`: a value fetched from Redis (`written_here` false,
    /// subject to admission) or written through this node (kept as M). Replaces an older copy.
    /// Returns whether the cache now holds it.
    pub fn insert(&self, key: &[u8], version: u64, value: Arc<Vec<u8>>, written_here: bool) -> bool {
        let mut inner = self.lock();
        let size = ENTRY_OVERHEAD_BYTES + key.len() as u64 + value.len() as u64;
        if size > inner.limits.bytes || inner.limits.entries == 0 {
            return false;
        }
        if let Some(&slot) = inner.map.get(key) {
            let existing = &inner.slots[slot];
            if existing.version > version {
                return false;
            }
            let old = existing.bytes();
            let entry = &mut inner.slots[slot];
            entry.version = version;
            entry.value = Some(value);
            entry.written_here = written_here;
            let new = entry.bytes();
            inner.bytes = inner.bytes - old + new;
            inner.touch(slot);
            inner.changes.push(HolderChange::Loaded(key.to_vec(), version));
            inner.make_room(0, None);
            return inner.map.contains_key(key);
        }
        if !inner.make_room(size, Some(key)) {
            inner.counters.rejected += 1;
            return false;
        }
        let slot = Slot { key: key.to_vec(), version, value: Some(value), written_here, prev: NIL, next: NIL };
        let index = match inner.free.pop() {
            Some(index) => {
                inner.slots[index] = slot;
                index
            }
            None => {
                inner.slots.push(slot);
                inner.slots.len() - 1
            }
        };
        inner.bytes += size;
        inner.map.insert(key.to_vec(), index);
        inner.push_front(index);
        inner.changes.push(HolderChange::Loaded(key.to_vec(), version));
        true
    }

    /// A write, deletion or expiry made `version` current: an older copy becomes I (its value
    /// is freed and it moves to the eviction end).
    pub fn invalidate(&self, key: &[u8], version: u64) {
        let mut inner = self.lock();
        let Some(&slot) = inner.map.get(key) else { return };
        let entry = &inner.slots[slot];
        if entry.version >= version || entry.value.is_none() {
            return;
        }
        let old = entry.bytes();
        let entry = &mut inner.slots[slot];
        entry.value = None;
        entry.written_here = false;
        let new = entry.bytes();
        inner.bytes = inner.bytes - old + new;
        inner.counters.invalidations += 1;
        inner.unlink(slot);
        inner.push_back(slot);
    }

    /// Drops every copy: after a snapshot install nothing here can be proven current.
    pub fn clear(&self) {
        let mut inner = self.lock();
        let dropped = inner.map.len() as u64;
        inner.map.clear();
        inner.slots.clear();
        inner.free.clear();
        inner.head = NIL;
        inner.tail = NIL;
        inner.bytes = 0;
        inner.changes.clear();
        inner.reset = true;
        inner.counters.invalidations += dropped;
    }

    /// Holder changes since the last call, and whether every copy was dropped before them.
    pub fn take_changes(&self) -> (bool, Vec<HolderChange>) {
        let mut inner = self.lock();
        let reset = std::mem::take(&mut inner.reset);
        (reset, std::mem::take(&mut inner.changes))
    }

    /// The copy of `key` as `cache show` reports it, given the key's directory entry.
    pub fn view(&self, key: &[u8], directory: Option<&DirectoryEntry>) -> Option<CacheCopyView> {
        let inner = self.lock();
        let slot = &inner.slots[*inner.map.get(key)?];
        Some(CacheCopyView {
            state: mesi(slot, directory, self.node),
            version: slot.version,
            bytes: slot.value.as_ref().map_or(0, |v| v.len() as u64),
        })
    }

    /// Copies per state; `directory` looks up a key's entry.
    pub fn state_counts<'a>(&self, directory: impl Fn(&[u8]) -> Option<&'a DirectoryEntry>) -> StateCounts {
        let inner = self.lock();
        let mut counts = StateCounts { bytes: inner.bytes, ..StateCounts::default() };
        for &slot in inner.map.values() {
            let slot = &inner.slots[slot];
            match mesi(slot, directory(&slot.key), self.node) {
                MesiState::Modified => counts.modified += 1,
                MesiState::Exclusive => counts.exclusive += 1,
                MesiState::Shared => counts.shared += 1,
                MesiState::Invalid => counts.invalid += 1,
            }
        }
        counts
    }

    /// Counters since start.
    pub fn counters(&self) -> NearCacheCounters {
        self.lock().counters
    }

    /// The limits.
    pub fn limits(&self) -> NearCacheLimits {
        self.lock().limits
    }

    /// Panics if the list, the map and the byte count disagree, which would mean a bug.
    pub fn check_invariants(&self) {
        let inner = self.lock();
        let mut seen = 0;
        let mut bytes = 0;
        let mut cursor = inner.head;
        let mut previous = NIL;
        while cursor != NIL {
            let slot = &inner.slots[cursor];
            assert_eq!(slot.prev, previous, "near cache list is broken");
            assert_eq!(inner.map.get(&slot.key), Some(&cursor), "near cache map disagrees with the list");
            bytes += slot.bytes();
            seen += 1;
            previous = cursor;
            cursor = slot.next;
        }
        assert_eq!(inner.tail, previous, "near cache tail is wrong");
        assert_eq!(seen, inner.map.len(), "near cache list and map differ in length");
        assert_eq!(bytes, inner.bytes, "near cache bytes drifted");
        assert!(inner.bytes <= inner.limits.bytes && seen <= inner.limits.entries, "near cache over its limits");
    }
}

/// The MESI state of a copy given the key's live directory entry (`None`: absent).
fn mesi(slot: &Slot, directory: Option<&DirectoryEntry>, node: NodeId) -> MesiState {
    let Some(entry) = directory else { return MesiState::Invalid };
    if slot.value.is_none() || entry.version != slot.version {
        return MesiState::Invalid;
    }
    let shared = entry.holders.iter().any(|holder| *holder != node);
    if slot.written_here && !shared && matches!(entry.pending, Some(PendingWrite::Value(_))) {
        return MesiState::Modified;
    }
    if shared {
        MesiState::Shared
    } else {
        MesiState::Exclusive
    }
}

impl Inner {
    fn unlink(&mut self, index: usize) {
        let (prev, next) = (self.slots[index].prev, self.slots[index].next);
        match prev {
            NIL => self.head = next,
            prev => self.slots[prev].next = next,
        }
        match next {
            NIL => self.tail = prev,
            next => self.slots[next].prev = prev,
        }
        self.slots[index].prev = NIL;
        self.slots[index].next = NIL;
    }

    fn push_front(&mut self, index: usize) {
        self.slots[index].next = self.head;
        self.slots[index].prev = NIL;
        if self.head != NIL {
            self.slots[self.head].prev = index;
        }
        self.head = index;
        if self.tail == NIL {
            self.tail = index;
        }
    }

    fn push_back(&mut self, index: usize) {
        self.slots[index].prev = self.tail;
        self.slots[index].next = NIL;
        if self.tail != NIL {
            self.slots[self.tail].next = index;
        }
        self.tail = index;
        if self.head == NIL {
            self.head = index;
        }
    }

    fn touch(&mut self, index: usize) {
        if self.head != index {
            self.unlink(index);
            self.push_front(index);
        }
    }

    fn evict(&mut self, index: usize) {
        self.unlink(index);
        let slot = &mut self.slots[index];
        let bytes = slot.bytes();
        let key = std::mem::take(&mut slot.key);
        let had_value = slot.value.take().is_some();
        self.bytes -= bytes;
        self.map.remove(&key);
        self.free.push(index);
        if had_value {
            self.counters.evictions += 1;
            self.changes.push(HolderChange::Dropped(key));
        }
    }

    /// Evicts from the tail until `size` more bytes and one more entry fit. For a newcomer
    /// (`candidate`), each valid victim must be less popular than it, or nothing is evicted and
    /// the newcomer is refused. Invalid copies go first and need no comparison.
    fn make_room(&mut self, size: u64, candidate: Option<&[u8]>) -> bool {
        let extra_entry = usize::from(candidate.is_some());
        let fits = |inner: &Inner| {
            inner.bytes + size <= inner.limits.bytes && inner.map.len() + extra_entry <= inner.limits.entries
        };
        if fits(self) {
            return true;
        }
        let candidate_frequency = candidate.map(|key| self.sketch.frequency(key));
        // Decide before evicting, so a refused newcomer costs nobody their place.
        let mut victims = Vec::new();
        let mut freed_bytes = 0;
        let mut freed_entries = 0;
        let mut cursor = self.tail;
        while cursor != NIL
            && !(self.bytes - freed_bytes + size <= self.limits.bytes
                && self.map.len() - freed_entries + extra_entry <= self.limits.entries)
        {
            let slot = &self.slots[cursor];
            if let (Some(frequency), Some(_)) = (candidate_frequency, &slot.value) {
                if self.sketch.frequency(&slot.key) >= frequency {
                    return false;
                }
            }
            freed_bytes += slot.bytes();
            freed_entries += 1;
            victims.push(cursor);
            cursor = slot.prev;
        }
        for victim in victims {
            self.evict(victim);
        }
        fits(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn value(text: &str) -> Arc<Vec<u8>> {
        Arc::new(text.as_bytes().to_vec())
    }

    fn entry(version: u64, pending: bool, holders: &[u64]) -> DirectoryEntry {
        DirectoryEntry {
            version,
            expires_at_ms: None,
            pending: pending.then(|| PendingWrite::Value(bytes::Bytes::from_static(b"v"))),
            holders: holders.iter().copied().collect::<BTreeSet<_>>(),
        }
    }

    fn limits(entries: usize) -> NearCacheLimits {
        NearCacheLimits { bytes: 1 << 20, entries }
    }

    #[test]
    fn a_copy_is_served_only_at_its_version_and_invalidation_frees_it() {
        let cache = NearCache::new(1, limits(10));
        assert!(cache.insert(b"k", 5, value("v5"), false));
        assert!(matches!(cache.get(b"k", 5), Lookup::Hit(v) if *v == b"v5"));
        assert!(matches!(cache.get(b"k", 6), Lookup::Miss), "a newer directory version is a miss");
        cache.invalidate(b"k", 5);
        assert!(matches!(cache.get(b"k", 5), Lookup::Hit(_)), "its own version does not invalidate it");
        cache.invalidate(b"k", 6);
        assert!(matches!(cache.get(b"k", 5), Lookup::Miss));
        assert_eq!(cache.view(b"k", Some(&entry(6, false, &[]))).unwrap().state, MesiState::Invalid);
        assert!(!cache.insert(b"k", 4, value("old"), false), "an older version never replaces a newer copy");
        cache.check_invariants();
        assert_eq!(cache.counters().invalidations, 1);
    }

    #[test]
    fn states_follow_mesi() {
        let cache = NearCache::new(1, limits(10));
        cache.insert(b"w", 3, value("w"), true);
        cache.insert(b"r", 4, value("r"), false);
        let state = |key: &[u8], entry: &DirectoryEntry| cache.view(key, Some(entry)).unwrap().state;
        assert_eq!(state(b"w", &entry(3, true, &[1])), MesiState::Modified, "written here, not yet in Redis");
        assert_eq!(state(b"w", &entry(3, true, &[1, 3])), MesiState::Shared, "another node read the modified value");
        assert_eq!(state(b"w", &entry(3, false, &[1])), MesiState::Exclusive, "written back, no other holder");
        assert_eq!(state(b"r", &entry(4, false, &[])), MesiState::Exclusive, "loaded, report not yet applied");
        assert_eq!(state(b"r", &entry(4, false, &[1, 2])), MesiState::Shared, "another node loaded it");
        assert_eq!(state(b"r", &entry(9, false, &[2])), MesiState::Invalid, "a newer version exists");
        assert_eq!(cache.view(b"r", None).unwrap().state, MesiState::Invalid, "deleted");
        let directory = [(b"w".to_vec(), entry(3, true, &[1])), (b"r".to_vec(), entry(4, false, &[1, 2]))];
        let counts = cache.state_counts(|key| directory.iter().find(|(k, _)| k == key).map(|(_, e)| e));
        assert_eq!((counts.modified, counts.exclusive, counts.shared, counts.invalid), (1, 0, 1, 0));
    }

    #[test]
    fn holder_changes_are_reported_with_a_reset_first() {
        let cache = NearCache::new(1, limits(1));
        assert_eq!(cache.take_changes(), (true, vec![]), "a new cache starts with a reset");
        cache.insert(b"a", 1, value("a"), true);
        // b is asked for more often than a, so it displaces a.
        for _ in 0..2 {
            let _ = cache.get(b"b", 2);
        }
        cache.insert(b"b", 2, value("b"), true);
        let (reset, changes) = cache.take_changes();
        assert!(!reset);
        assert_eq!(
            changes,
            vec![
                HolderChange::Loaded(b"a".to_vec(), 1),
                HolderChange::Dropped(b"a".to_vec()),
                HolderChange::Loaded(b"b".to_vec(), 2)
            ]
        );
        cache.clear();
        assert_eq!(cache.take_changes(), (true, vec![]));
    }

    #[test]
    fn admission_keeps_popular_entries_against_one_off_reads() {
        let cache = NearCache::new(1, limits(100));
        for round in 0..20 {
            for hot in 0..100u32 {
                let key = format!("hot{hot}");
                if matches!(cache.get(key.as_bytes(), 1), Lookup::Miss) {
                    cache.insert(key.as_bytes(), 1, value("x"), false);
                }
            }
            // A scan of keys read once each.
            for cold in 0..100u32 {
                let key = format!("cold{round}-{cold}");
                if matches!(cache.get(key.as_bytes(), 1), Lookup::Miss) {
                    cache.insert(key.as_bytes(), 1, value("x"), false);
                }
            }
        }
        let hot_kept = (0..100u32).filter(|hot| matches!(cache.get(format!("hot{hot}").as_bytes(), 1), Lookup::Hit(_)));
        assert!(hot_kept.count() >= 90, "a scan flushed the hot set");
        assert!(cache.counters().rejected > 1000);
        cache.check_invariants();
    }

    #[test]
    fn byte_budget_is_kept_and_invalid_copies_go_first() {
        let cache = NearCache::new(1, NearCacheLimits { bytes: 3 * (ENTRY_OVERHEAD_BYTES + 1 + 100), entries: 100 });
        let big = Arc::new(vec![0u8; 100]);
        for key in [b"a", b"b", b"c"] {
            assert!(cache.insert(key, 1, big.clone(), false));
        }
        cache.invalidate(b"a", 2);
        // Raise d's popularity so it may displace a valid entry too.
        for _ in 0..3 {
            let _ = cache.get(b"d", 1);
        }
        assert!(cache.insert(b"d", 1, big.clone(), false));
        assert!(matches!(cache.get(b"b", 1), Lookup::Hit(_)), "the invalid copy made room, not b");
        assert!(!cache.insert(b"huge", 1, Arc::new(vec![0u8; 4096]), false), "larger than the whole cache");
        cache.check_invariants();
    }
}
