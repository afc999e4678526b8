//! Power cuts: a node's data directory on a filesystem that keeps what was written since each
//! file's last fsync apart and drops it when the power is cut, the way Jepsen's LazyFS does.
//! SIGKILL leaves the kernel's page cache intact, so only this tells a write that was fsync'd
//! from one that merely reached the cache.
//!
//! [`PowerDisk`] mounts a [`fs::MemoryFs`] (FUSE, through the `fuser` crate; needs root and
//! `/dev/fuse`) on a directory and serves it from a thread of the harness. The power-cut fault
//! SIGKILLs the nodes it hits, then calls [`PowerDisk::cut`] on each of their disks, then starts
//! them again. The same disk also runs out of space on demand ([`PowerDisk::fill`]), for the
//! full-disk fault when every data directory is a power-cut disk.

pub mod contents;
pub mod fs;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;

use self::fs::{MemoryFs, Tree};

/// A power-cut filesystem mounted on a directory; unmounted when dropped.
pub struct PowerDisk {
    path: PathBuf,
    tree: Arc<Mutex<Tree>>,
    session: Mutex<Option<fuser::BackgroundSession>>,
}

impl PowerDisk {
    /// Mounts an empty power-cut filesystem on `path` (made if missing).
    ///
    /// # Errors
    ///
    /// When not running as root, or the FUSE mount fails.
    pub fn mount(path: &Path) -> anyhow::Result<PowerDisk> {
        anyhow::ensure!(
            distsync_harness::is_root(),
            "the power-cut fault mounts a FUSE filesystem and needs root; leave `power` out of --faults"
        );
        std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
        let tree = Arc::new(Mutex::new(Tree::default()));
        let mut config = fuser::Config::default();
        config.mount_options = vec![fuser::MountOption::FSName("distsync-power-cut".into())];
        let session = fuser::spawn_mount(MemoryFs::new(Arc::clone(&tree)), path, &config).with_context(|| {
            format!("cannot mount the power-cut filesystem on {} (is /dev/fuse there?)", path.display())
        })?;
        Ok(PowerDisk { path: path.to_path_buf(), tree, session: Mutex::new(Some(session)) })
    }

    /// Cuts the power: every file goes back to what it held at its last fsync. Stop every
    /// process using the disk first. Returns the bytes lost.
    pub fn cut(&self) -> u64 {
        self.tree().cut()
    }

    /// Bytes written since their file's last fsync: what a cut would lose now.
    pub fn unsynced(&self) -> u64 {
        self.tree().unsynced()
    }

    /// Leaves `left_free` bytes of room, so the next writes past a file's end fail with ENOSPC;
    /// returns the disk's size then.
    pub fn fill(&self, left_free: u64) -> u64 {
        let mut tree = self.tree();
        let size = tree.used() + left_free;
        tree.set_capacity(Some(size));
        size
    }

    /// Gives the space back.
    pub fn grow(&self) {
        self.tree().set_capacity(None);
    }

    fn tree(&self) -> std::sync::MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for PowerDisk {
    fn drop(&mut self) {
        let session = self.session.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(session) = session {
            if let Err(error) = session.umount_and_join() {
                // Still in use (a process that outlived a failed run): detach it, so it goes
                // once the last user does.
                let detached = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
                if !detached.is_ok_and(|status| status.success()) {
                    eprintln!("cannot unmount the power-cut filesystem on {}: {error}", self.path.display());
                }
            }
        }
    }
}
