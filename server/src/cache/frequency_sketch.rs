//! TinyLFU's frequency estimate (Einziger et al., 2017): how often a key was asked for lately,
//! from a count-min sketch, so that the cache admits a newcomer only when it is more popular
//! than the entry it would evict.

use std::hash::{BuildHasher, Hasher};

/// A count-min sketch of counters saturating at 15 in four rows, halved every `10 × entries` increments so
/// that old popularity fades (TinyLFU's reset).
pub(super) struct FrequencySketch {
    rows: [Vec<u8>; 4],
    mask: usize,
    additions: usize,
    sample: usize,
    hasher: std::hash::RandomState,
}

impl FrequencySketch {
    pub(super) fn new(expected_entries: usize) -> Self {
        // Eight counters per entry and row keep collisions rare enough for the comparison to mean
        // something; one byte per counter trades a little memory for simplicity.
        let expected_entries = expected_entries.max(64);
        let width = (expected_entries * 8).clamp(1024, 1 << 24).next_power_of_two();
        Self {
            rows: std::array::from_fn(|_| vec![0; width]),
            mask: width - 1,
            additions: 0,
            sample: 10 * expected_entries,
            hasher: std::hash::RandomState::new(),
        }
    }

    fn indexes(&self, key: &[u8]) -> [usize; 4] {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(key);
        let hash = hasher.finish();
        let (low, high) = (hash as u32 as usize, (hash >> 32) as usize);
        // Double hashing: four probes from two halves of one hash.
        std::array::from_fn(|row| low.wrapping_add(row.wrapping_mul(high | 1)) & self.mask)
    }

    pub(super) fn increment(&mut self, key: &[u8]) {
        let indexes = self.indexes(key);
        let minimum = self.frequency_at(&indexes);
        if minimum >= 15 {
            return;
        }
        // Conservative update: raise only the counters at the minimum.
        for (row, index) in indexes.iter().enumerate() {
            if self.rows[row][*index] == minimum {
                self.rows[row][*index] += 1;
            }
        }
        self.additions += 1;
        if self.additions >= self.sample {
            for row in &mut self.rows {
                for counter in row.iter_mut() {
                    *counter /= 2;
                }
            }
            self.additions /= 2;
        }
    }

    fn frequency_at(&self, indexes: &[usize; 4]) -> u8 {
        indexes.iter().enumerate().map(|(row, index)| self.rows[row][*index]).min().unwrap_or(0)
    }

    pub(super) fn frequency(&self, key: &[u8]) -> u8 {
        self.frequency_at(&self.indexes(key))
    }
}
