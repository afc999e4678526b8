//! [`UnsyncedBackend`]: the Raft log's file without fsync, for `--inject-bug skip-fsync` only.
//! Every write reaches the kernel's page cache, so a killed process loses nothing; only a power
//! cut (the fault suite's power-cut filesystem) shows that nothing was durable.

use std::fs::{File, OpenOptions};
use std::ops::Bound;
use std::path::Path;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

// redb 4 without `experimental-api-5`: backend I/O errors are `std::io::Error`.
type IoResult<T> = Result<T, std::io::Error>;

/// redb's file backend with `sync_data` a no-op: broken on purpose.
#[derive(Debug)]
pub struct UnsyncedBackend(FileBackend);

impl UnsyncedBackend {
    /// Opens (or creates) the file at `path` as redb's `Builder::create` does.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened.
    pub fn open(path: &Path) -> anyhow::Result<UnsyncedBackend> {
        let file: File = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        Ok(UnsyncedBackend(FileBackend::new(file)?))
    }
}

impl StorageBackend for UnsyncedBackend {
    fn len(&self) -> IoResult<u64> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> IoResult<()> {
        self.0.read(offset, out)
    }

    fn set_len(&self, len: u64) -> IoResult<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> IoResult<()> {
        // The injected bug: report durability that was never asked of the disk.
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> IoResult<()> {
        self.0.write(offset, data)
    }

    fn close(&self) -> IoResult<()> {
        self.0.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.try_lock_range(start, end)
    }

    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.query_lock_range(start, end)
    }
}
