//! [`MemoryFs`]: the power-cut filesystem served over FUSE. Files and directories live in the
//! harness's memory; each file's bytes are [`Contents`], which keep what was written since the
//! file's last fsync apart, so that a power cut ([`Tree::cut`]) loses exactly that.
//!
//! Names (create, rename, unlink, mkdir) are durable at once, as on a journaling filesystem
//! that commits its metadata before it answers; only file data waits for an fsync. Every open
//! is direct I/O and nothing is cached by the kernel (zero time-to-live), so what a process
//! reads after a cut is what the filesystem holds, not a page the kernel kept.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::contents::{Contents, PAGE};

/// Nothing is cached by the kernel: every lookup and attribute comes from here.
const TTL: Duration = Duration::ZERO;

/// What an inode is.
#[derive(Debug)]
enum Kind {
    Directory(BTreeMap<OsString, u64>),
    File(Contents),
}

#[derive(Debug)]
struct Inode {
    kind: Kind,
    perm: u16,
    uid: u32,
    gid: u32,
    /// Names pointing at it (files: 1 until unlinked).
    links: u32,
    /// Open handles: an unlinked file goes once the last one is released.
    open: u32,
    modified: SystemTime,
}

/// The whole filesystem: inodes by number, and the space limit of the full-disk fault.
#[derive(Debug)]
pub struct Tree {
    inodes: HashMap<u64, Inode>,
    next: u64,
    /// Bytes of file data allowed (`None`: no limit); growing past it fails with ENOSPC.
    capacity: Option<u64>,
}

impl Default for Tree {
    fn default() -> Self {
        let root = Inode {
            kind: Kind::Directory(BTreeMap::new()),
            perm: 0o755,
            uid: 0,
            gid: 0,
            links: 1,
            open: 0,
            modified: SystemTime::now(),
        };
        Tree { inodes: HashMap::from([(INodeNo::ROOT.0, root)]), next: INodeNo::ROOT.0 + 1, capacity: None }
    }
}

impl Tree {
    /// A power cut: every file goes back to its last fsync. Returns the bytes lost.
    pub fn cut(&mut self) -> u64 {
        self.inodes
            .values_mut()
            .map(|inode| match &mut inode.kind {
                Kind::File(contents) => contents.cut(),
                Kind::Directory(_) => 0,
            })
            .sum()
    }

    /// Bytes of file data held now.
    pub fn used(&self) -> u64 {
        self.inodes
            .values()
            .map(|inode| match &inode.kind {
                Kind::File(contents) => contents.size(),
                Kind::Directory(_) => 0,
            })
            .sum()
    }

    /// Bytes written since their file's last fsync, that a cut would lose now.
    pub fn unsynced(&self) -> u64 {
        self.inodes
            .values()
            .map(|inode| match &inode.kind {
                Kind::File(contents) => contents.unsynced_bytes(),
                Kind::Directory(_) => 0,
            })
            .sum()
    }

    /// Limits file data to `capacity` bytes (`None`: no limit).
    pub fn set_capacity(&mut self, capacity: Option<u64>) {
        self.capacity = capacity;
    }

    /// Whether a file may grow by `growth` bytes.
    fn has_room(&self, growth: u64) -> bool {
        growth == 0 || self.capacity.is_none_or(|capacity| self.used() + growth <= capacity)
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let inode = self.inodes.get(&ino)?;
        let (kind, size) = match &inode.kind {
            Kind::Directory(_) => (FileType::Directory, 0),
            Kind::File(contents) => (FileType::RegularFile, contents.size()),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: inode.modified,
            mtime: inode.modified,
            ctime: inode.modified,
            crtime: inode.modified,
            kind,
            perm: inode.perm,
            nlink: inode.links,
            uid: inode.uid,
            gid: inode.gid,
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        })
    }

    fn directory(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.inodes.get_mut(&ino).map(|inode| &mut inode.kind) {
            Some(Kind::Directory(entries)) => Ok(entries),
            Some(Kind::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn file(&mut self, ino: u64) -> Result<&mut Contents, Errno> {
        match self.inodes.get_mut(&ino).map(|inode| &mut inode.kind) {
            Some(Kind::File(contents)) => Ok(contents),
            Some(Kind::Directory(_)) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    /// Adds `inode` under `name` in `parent`; returns its number.
    fn add(&mut self, parent: u64, name: &OsStr, inode: Inode) -> Result<u64, Errno> {
        let ino = self.next;
        let entries = self.directory(parent)?;
        if entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        entries.insert(name.to_os_string(), ino);
        self.next += 1;
        self.inodes.insert(ino, inode);
        Ok(ino)
    }

    /// Drops a name's link to `ino`; the inode goes when nothing names or holds it.
    fn unlink_inode(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.links = inode.links.saturating_sub(1);
            if inode.links == 0 && inode.open == 0 {
                self.inodes.remove(&ino);
            }
        }
    }

    /// Removes `name` from `parent`: a file, or an empty directory when `directory`.
    fn remove(&mut self, parent: u64, name: &OsStr, directory: bool) -> Result<(), Errno> {
        let ino = *self.directory(parent)?.get(name).ok_or(Errno::ENOENT)?;
        match (&self.inodes.get(&ino).ok_or(Errno::ENOENT)?.kind, directory) {
            (Kind::Directory(entries), true) if !entries.is_empty() => return Err(Errno::ENOTEMPTY),
            (Kind::Directory(_), false) => return Err(Errno::EISDIR),
            (Kind::File(_), true) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        self.directory(parent)?.remove(name);
        self.unlink_inode(ino);
        Ok(())
    }

    fn rename(&mut self, from: (u64, &OsStr), to: (u64, &OsStr), flags: RenameFlags) -> Result<(), Errno> {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) || flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        let ino = *self.directory(from.0)?.get(from.1).ok_or(Errno::ENOENT)?;
        if let Some(&existing) = self.directory(to.0)?.get(to.1) {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            if existing == ino {
                return Ok(());
            }
            let directory = matches!(self.inodes.get(&existing).map(|inode| &inode.kind), Some(Kind::Directory(_)));
            self.remove(to.0, to.1, directory)?;
        }
        self.directory(from.0)?.remove(from.1);
        self.directory(to.0)?.insert(to.1.to_os_string(), ino);
        Ok(())
    }
}

/// The FUSE side: answers the kernel's requests from the shared [`Tree`].
pub struct MemoryFs {
    tree: Arc<Mutex<Tree>>,
}

impl MemoryFs {
    /// A filesystem serving `tree`.
    pub fn new(tree: Arc<Mutex<Tree>>) -> MemoryFs {
        MemoryFs { tree }
    }

    fn tree(&self) -> MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn new_inode(req: &Request, kind: Kind, mode: u32, umask: u32) -> Inode {
        Inode {
            kind,
            perm: (mode & !umask & 0o7777) as u16,
            uid: req.uid(),
            gid: req.gid(),
            links: 1,
            open: 0,
            modified: SystemTime::now(),
        }
    }
}

impl Filesystem for MemoryFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut tree = self.tree();
        let found = tree.directory(parent.0).and_then(|entries| entries.get(name).copied().ok_or(Errno::ENOENT));
        match found.and_then(|ino| tree.attr(ino).ok_or(Errno::ENOENT)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(errno) => reply.error(errno),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree().attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut tree = self.tree();
        if let Some(size) = size {
            let growth = match tree.file(ino.0) {
                Ok(contents) => size.saturating_sub(contents.size()),
                Err(errno) => return reply.error(errno),
            };
            if !tree.has_room(growth) {
                return reply.error(Errno::ENOSPC);
            }
            if let Ok(contents) = tree.file(ino.0) {
                contents.truncate(size);
            }
        }
        let Some(inode) = tree.inodes.get_mut(&ino.0) else { return reply.error(Errno::ENOENT) };
        if let Some(mode) = mode {
            inode.perm = (mode & 0o7777) as u16;
        }
        inode.uid = uid.unwrap_or(inode.uid);
        inode.gid = gid.unwrap_or(inode.gid);
        inode.modified = SystemTime::now();
        match tree.attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let mut tree = self.tree();
        let inode = Self::new_inode(req, Kind::Directory(BTreeMap::new()), mode, umask);
        match tree.add(parent.0, name, inode).and_then(|ino| tree.attr(ino).ok_or(Errno::ENOENT)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(errno) => reply.error(errno),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.tree().remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.tree().remove(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.tree().rename((parent.0, name), (newparent.0, newname), flags) {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut tree = self.tree();
        match tree.inodes.get_mut(&ino.0) {
            Some(inode) => {
                inode.open += 1;
                reply.opened(FileHandle(ino.0), FopenFlags::FOPEN_DIRECT_IO);
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut tree = self.tree();
        let mut inode = Self::new_inode(req, Kind::File(Contents::default()), mode, umask);
        inode.open = 1;
        match tree.add(parent.0, name, inode).and_then(|ino| tree.attr(ino).ok_or(Errno::ENOENT)) {
            Ok(attr) => reply.created(&TTL, &attr, Generation(0), FileHandle(attr.ino.0), FopenFlags::FOPEN_DIRECT_IO),
            Err(errno) => reply.error(errno),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.tree().file(ino.0) {
            Ok(contents) => reply.data(&contents.read(offset, size as usize)),
            Err(errno) => reply.error(errno),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut tree = self.tree();
        let growth = match tree.file(ino.0) {
            Ok(contents) => (offset + data.len() as u64).saturating_sub(contents.size()),
            Err(errno) => return reply.error(errno),
        };
        if !tree.has_room(growth) {
            return reply.error(Errno::ENOSPC);
        }
        if let Ok(contents) = tree.file(ino.0) {
            contents.write(offset, data);
        }
        if let Some(inode) = tree.inodes.get_mut(&ino.0) {
            inode.modified = SystemTime::now();
        }
        reply.written(data.len() as u32);
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut tree = self.tree();
        if let Some(inode) = tree.inodes.get_mut(&ino.0) {
            inode.open = inode.open.saturating_sub(1);
            if inode.open == 0 && inode.links == 0 {
                tree.inodes.remove(&ino.0);
            }
        }
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.tree().file(ino.0) {
            Ok(contents) => {
                contents.sync();
                reply.ok();
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let mut tree = self.tree();
        let children: Vec<(u64, OsString)> = match tree.directory(ino.0) {
            Ok(entries) => entries.iter().map(|(name, &child)| (child, name.clone())).collect(),
            Err(errno) => return reply.error(errno),
        };
        let listing = [(ino.0, OsString::from(".")), (ino.0, OsString::from(".."))].into_iter().chain(children);
        for (index, (child, name)) in listing.enumerate().skip(offset as usize) {
            let kind = match tree.inodes.get(&child).map(|inode| &inode.kind) {
                Some(Kind::Directory(_)) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            if reply.add(INodeNo(child), index as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // Names are durable at once.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let tree = self.tree();
        let block = PAGE as u64;
        let total = tree.capacity.unwrap_or(1 << 40) / block;
        let free = total.saturating_sub(tree.used().div_ceil(block));
        reply.statfs(total, free, free, 1 << 20, 1 << 20, PAGE as u32, 255, PAGE as u32);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let mut tree = self.tree();
        let (size, growth) = match tree.file(ino.0) {
            Ok(contents) => (contents.size(), (offset + length).saturating_sub(contents.size())),
            Err(errno) => return reply.error(errno),
        };
        if !tree.has_room(growth) {
            return reply.error(Errno::ENOSPC);
        }
        if let Ok(contents) = tree.file(ino.0) {
            contents.truncate(size.max(offset + length));
        }
        reply.ok();
    }
}
