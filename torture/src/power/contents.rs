//! [`Contents`]: one file's bytes as the power-cut filesystem holds them: what the file reads as
//! now, and what it would read as after a power cut (its state at the last fsync).
//!
//! The bytes live in 4 KiB pages. The first write to a page after an fsync saves the page as it
//! was (an undo record); an fsync forgets the undo records, and a power cut puts them back. So a
//! sync or a cut costs what changed since the last sync, not the file's size.

use std::collections::HashMap;

/// Bytes per page.
pub const PAGE: usize = 4096;

type Page = Box<[u8; PAGE]>;

/// One file's bytes, with what was written since its last fsync kept apart.
#[derive(Debug, Default)]
pub struct Contents {
    /// Pages holding data; a page not here reads as zeros. Bytes at or past `size` are zero.
    pages: HashMap<u64, Page>,
    size: u64,
    /// For each page changed since the last sync, the page as it was then (`None`: absent).
    undo: HashMap<u64, Option<Page>>,
    /// The size at the last sync.
    durable_size: u64,
}

impl Contents {
    /// The size the file has now.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes written since the last sync (whole pages) that a power cut would lose.
    pub fn unsynced_bytes(&self) -> u64 {
        (self.undo.len() * PAGE) as u64
    }

    /// Up to `length` bytes from `offset`, fewer at the end of the file.
    pub fn read(&self, offset: u64, length: usize) -> Vec<u8> {
        let end = self.size.min(offset.saturating_add(length as u64));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        while at < end {
            let (page, within) = (at / PAGE as u64, (at % PAGE as u64) as usize);
            let take = (PAGE - within).min((end - at) as usize);
            match self.pages.get(&page) {
                Some(bytes) => out.extend_from_slice(&bytes[within..within + take]),
                None => out.resize(out.len() + take, 0),
            }
            at += take as u64;
        }
        out
    }

    /// Writes `data` at `offset`, growing the file if it ends past its size.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let (page, within) = (at / PAGE as u64, (at % PAGE as u64) as usize);
            let take = (PAGE - within).min(rest.len());
            self.save(page);
            let bytes = self.pages.entry(page).or_insert_with(|| Box::new([0; PAGE]));
            bytes[within..within + take].copy_from_slice(&rest[..take]);
            at += take as u64;
            rest = &rest[take..];
        }
        self.size = self.size.max(offset + data.len() as u64);
    }

    /// Sets the size: bytes past it are gone; a larger size reads as zeros up to it.
    pub fn truncate(&mut self, size: u64) {
        if size < self.size {
            let first_gone = size.div_ceil(PAGE as u64);
            let gone: Vec<u64> = self.pages.keys().copied().filter(|&page| page >= first_gone).collect();
            for page in gone {
                self.save(page);
                self.pages.remove(&page);
            }
            let within = (size % PAGE as u64) as usize;
            let last = size / PAGE as u64;
            if within != 0 && self.pages.contains_key(&last) {
                self.save(last);
                if let Some(bytes) = self.pages.get_mut(&last) {
                    bytes[within..].fill(0);
                }
            }
        }
        self.size = size;
    }

    /// fsync: what the file holds now survives a power cut.
    pub fn sync(&mut self) {
        self.undo.clear();
        self.durable_size = self.size;
    }

    /// A power cut: the file goes back to what it held at its last sync. Returns the bytes
    /// (whole pages) lost.
    pub fn cut(&mut self) -> u64 {
        let lost = self.unsynced_bytes();
        for (page, before) in self.undo.drain() {
            match before {
                Some(bytes) => {
                    self.pages.insert(page, bytes);
                }
                None => {
                    self.pages.remove(&page);
                }
            }
        }
        self.size = self.durable_size;
        lost
    }

    /// Saves `page` as it is now, if it is its first change since the last sync.
    fn save(&mut self, page: u64) {
        if !self.undo.contains_key(&page) {
            let before = self.pages.get(&page).cloned();
            self.undo.insert(page, before);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_was_written_with_zeros_in_the_gaps() {
        let mut file = Contents::default();
        file.write(10, b"hello");
        file.write(PAGE as u64 * 2 + 1, b"far");
        assert_eq!(file.size(), PAGE as u64 * 2 + 4);
        assert_eq!(file.read(8, 9), b"\0\0hello\0\0");
        assert_eq!(file.read(PAGE as u64 * 2, 10), b"\0far", "a read stops at the end");
        assert_eq!(file.read(PAGE as u64 - 2, 4), vec![0; 4], "a read across pages");
        assert!(file.read(file.size(), 10).is_empty());
    }

    #[test]
    fn a_cut_loses_exactly_what_was_not_synced() {
        let mut file = Contents::default();
        file.write(0, &[1; PAGE + 100]);
        file.sync();
        file.write(50, &[2; 10]);
        file.write(PAGE as u64 * 3, b"tail");
        assert!(file.unsynced_bytes() > 0);
        assert_eq!(file.cut(), 2 * PAGE as u64, "two pages changed since the sync");
        assert_eq!(file.size(), PAGE as u64 + 100);
        assert_eq!(file.read(0, PAGE + 100), vec![1; PAGE + 100], "the synced bytes, and only them");
        assert_eq!(file.cut(), 0, "nothing left to lose");
    }

    #[test]
    fn a_cut_undoes_a_truncate_and_a_synced_truncate_stays() {
        let mut file = Contents::default();
        file.write(0, &[7; 3 * PAGE]);
        file.sync();
        file.truncate(10);
        assert_eq!(file.read(0, 3 * PAGE), vec![7; 10]);
        file.truncate(PAGE as u64);
        assert_eq!(file.read(0, PAGE), [vec![7; 10], vec![0; PAGE - 10]].concat(), "grown back: zeros");
        file.cut();
        assert_eq!(file.read(0, 3 * PAGE), vec![7; 3 * PAGE]);
        file.truncate(5);
        file.sync();
        file.write(5, b"x");
        file.cut();
        assert_eq!(file.read(0, 100), vec![7; 5]);
    }

    #[test]
    fn a_file_never_synced_is_empty_after_a_cut() {
        let mut file = Contents::default();
        file.write(0, b"never synced");
        file.cut();
        assert_eq!(file.size(), 0);
        assert!(file.read(0, 100).is_empty());
    }
}
