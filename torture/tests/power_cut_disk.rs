//! The power-cut filesystem, mounted for real (FUSE, as root) and used through the kernel as a
//! node uses its data directory: what was fsync'd survives a cut, what was not is gone; names
//! (create, rename, unlink) are durable at once; a full disk refuses growth with ENOSPC.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::PathBuf;

use distsync_torture::power::PowerDisk;

/// A fresh directory to mount on, removed afterwards.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("distsync-power-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn read(path: &std::path::Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    File::open(path).expect("open").read_to_end(&mut bytes).expect("read");
    bytes
}

#[test]
fn a_cut_keeps_what_was_fsynced_and_drops_the_rest() {
    assert!(distsync_harness::is_root(), "this test mounts a FUSE filesystem and must run as root (CI does)");
    let scratch = Scratch::new("cut");
    let disk = PowerDisk::mount(&scratch.0).expect("mount");
    let path = scratch.0.join("log");

    let mut file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).expect("create");
    file.write_all(b"synced-").expect("write");
    file.sync_data().expect("fdatasync");
    file.write_all(b"cached").expect("write");
    drop(file);
    assert_eq!(read(&path), b"synced-cached", "before the cut, reads see every write");
    assert!(disk.unsynced() > 0);

    // A file whose data was never synced keeps its name (names are durable at once) but no data.
    fs::write(scratch.0.join("fresh"), b"never synced").expect("write");
    fs::create_dir(scratch.0.join("snapshots")).expect("mkdir");
    fs::write(scratch.0.join("snapshots/tmp"), b"renamed").expect("write");
    File::open(scratch.0.join("snapshots/tmp")).expect("open").sync_all().expect("fsync");
    fs::rename(scratch.0.join("snapshots/tmp"), scratch.0.join("snapshots/current")).expect("rename");

    let lost = disk.cut();
    assert!(lost > 0, "the cut dropped something");
    assert_eq!(read(&path), b"synced-", "only the fsync'd prefix survives");
    assert_eq!(read(&scratch.0.join("fresh")), b"", "unsynced data is gone");
    assert_eq!(read(&scratch.0.join("snapshots/current")), b"renamed", "a synced file renamed into place stays");
    let mut names: Vec<String> = fs::read_dir(&scratch.0)
        .expect("readdir")
        .map(|entry| entry.expect("entry").file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["fresh", "log", "snapshots"]);

    // Writing on after the cut, at an offset, and truncating.
    let mut file = OpenOptions::new().read(true).write(true).open(&path).expect("open");
    file.seek(SeekFrom::Start(3)).expect("seek");
    file.write_all(b"XY").expect("write");
    file.set_len(6).expect("truncate");
    file.sync_all().expect("fsync");
    drop(file);
    assert_eq!(disk.cut(), 0, "everything was synced");
    assert_eq!(read(&path), b"synXYd");
    fs::remove_file(&path).expect("unlink");
    assert!(!path.exists());
    drop(disk);
}

#[test]
fn a_full_disk_refuses_growth_with_enospc_and_recovers() {
    assert!(distsync_harness::is_root(), "this test mounts a FUSE filesystem and must run as root (CI does)");
    let scratch = Scratch::new("full");
    let disk = PowerDisk::mount(&scratch.0).expect("mount");
    let path = scratch.0.join("data");
    fs::write(&path, vec![1; 10_000]).expect("write");
    disk.fill(100);
    let mut file = OpenOptions::new().append(true).open(&path).expect("open");
    let error = file.write_all(&[2; 4096]).expect_err("no room for 4 KiB");
    assert_eq!(error.raw_os_error(), Some(libc_enospc()), "{error}");
    disk.grow();
    file.write_all(&[2; 4096]).expect("room again");
    drop(file);
    assert_eq!(fs::metadata(&path).expect("stat").len(), 14_096);
}

/// ENOSPC on Linux.
fn libc_enospc() -> i32 {
    28
}
