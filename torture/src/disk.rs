//! The full-disk fault: one node's data directory is a tmpfs of its own (a real filesystem that
//! runs out of space; mounting needs root), shrunk to what it holds to fill it, and grown back to
//! heal; or, when every data directory is a power-cut disk, that disk, limited the same way. A
//! node that cannot write its log stops for good and exits non-zero; healed, it is restarted and
//! catches up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::Context as _;

use crate::power::PowerDisk;

/// The disk the full-disk fault fills.
pub enum FullDisk {
    /// A tmpfs of the node's own.
    Tmpfs(SmallDisk),
    /// The node's power-cut disk.
    Power(Arc<PowerDisk>),
}

impl FullDisk {
    /// Leaves almost no room; returns the disk's size then.
    ///
    /// # Errors
    ///
    /// When `df` or `mount` fails.
    pub fn fill(&self) -> anyhow::Result<u64> {
        match self {
            FullDisk::Tmpfs(disk) => disk.fill(),
            FullDisk::Power(disk) => Ok(disk.fill(LEFT_FREE_BYTES)),
        }
    }

    /// Gives the space back.
    ///
    /// # Errors
    ///
    /// When `mount` fails.
    pub fn grow(&self) -> anyhow::Result<()> {
        match self {
            FullDisk::Tmpfs(disk) => disk.grow(),
            FullDisk::Power(disk) => {
                disk.grow();
                Ok(())
            }
        }
    }
}

/// The tmpfs's size while there is space.
const ROOMY: &str = "512m";

/// Bytes left free when the disk is "full": less than any log entry with a value.
const LEFT_FREE_BYTES: u64 = 16 * 1024;

/// A tmpfs mounted on a node's data directory, unmounted when dropped.
pub struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts a roomy tmpfs on `path` (created if missing).
    ///
    /// # Errors
    ///
    /// When not running as root, or `mount` fails.
    pub fn mount(path: &Path) -> anyhow::Result<SmallDisk> {
        anyhow::ensure!(
            distsync_harness::is_root(),
            "the disk fault mounts a tmpfs and needs root; leave `disk` out of --faults"
        );
        std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
        run(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={ROOMY}"), "tmpfs"]).arg(path))?;
        Ok(SmallDisk { path: path.to_path_buf() })
    }

    /// Shrinks the filesystem to what it holds, so the next writes fail with "no space".
    ///
    /// # Errors
    ///
    /// When `df` or `mount` fails.
    pub fn fill(&self) -> anyhow::Result<u64> {
        let used = used_bytes(&self.path)?;
        let size = used + LEFT_FREE_BYTES;
        run(Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.path))?;
        Ok(size)
    }

    /// Gives the space back.
    ///
    /// # Errors
    ///
    /// When `mount` fails.
    pub fn grow(&self) -> anyhow::Result<()> {
        run(Command::new("mount").args(["-o", &format!("remount,size={ROOMY}")]).arg(&self.path))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn used_bytes(path: &Path) -> anyhow::Result<u64> {
    let output = Command::new("df").args(["-B1", "--output=used"]).arg(path).output().context("cannot run df")?;
    anyhow::ensure!(output.status.success(), "df {}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().nth(1).and_then(|line| line.trim().parse().ok()).with_context(|| format!("df printed {text:?}"))
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("cannot run {command:?}"))?;
    anyhow::ensure!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}
