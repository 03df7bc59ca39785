//! The FUSE transport's floor: a filesystem that keeps names and attributes in a hash map and
//! stores no data, mounted with AegisFS's own mount options, threads and protocol features
//! (`fs_core::fuse::session_config`, `negotiate`). `bench/fuse-floor.sh` creates, stats and
//! unlinks small files on it beside AegisFS and ext4: what it reaches is the most any
//! filesystem served through `/dev/fuse` can reach on the machine, so AegisFS's distance to it
//! is its own cost and the rest is the transport's.
//!
//! ```sh
//! cargo run --release -p fs-core --example fuse_floor -- MOUNTPOINT [--uring]
//! ```
//!
//! It serves until unmounted, and only what that workload needs (directories and regular files
//! without contents); anything else is answered ENOSYS.
//!
//! With `--uring` it serves over FUSE's io_uring transport instead (Linux 6.14+, the `fuse`
//! module's `enable_uring` set while mounting), as AegisFS does where the kernel offers it:
//! each CPU's queue served by threads pinned to that CPU (vendor/fuser, `ring`).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fs_core::fuse::{negotiate, session_config, MountConfig};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, ReplyAttr, ReplyCreate, ReplyEmpty, ReplyEntry, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};

const TTL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Tree {
    entries: HashMap<(u64, OsString), u64>,
    attrs: HashMap<u64, FileAttr>,
    last_ino: u64,
}

impl Tree {
    fn add(&mut self, parent: u64, name: &OsStr, kind: FileType, mode: u32) -> FileAttr {
        self.last_ino += 1;
        let now = SystemTime::now();
        let attr = FileAttr {
            ino: INodeNo(self.last_ino),
            size: 0,
            blocks: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind,
            perm: u16::try_from(mode & 0o7777).unwrap_or(0o644),
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        self.entries
            .insert((parent, name.to_owned()), self.last_ino);
        self.attrs.insert(self.last_ino, attr);
        attr
    }

    fn remove(&mut self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let ino = self
            .entries
            .remove(&(parent, name.to_owned()))
            .ok_or(Errno::ENOENT)?;
        self.attrs.remove(&ino);
        Ok(())
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Option<FileAttr> {
        let ino = self.entries.get(&(parent, name.to_owned()))?;
        self.attrs.get(ino).copied()
    }

    /// Sets the size if one is given; the attributes after it.
    fn resize(&mut self, ino: u64, size: Option<u64>) -> Option<FileAttr> {
        let attr = self.attrs.get_mut(&ino)?;
        if let Some(size) = size {
            attr.size = size;
        }
        Some(*attr)
    }

    /// Records a write of `len` bytes at `offset`.
    fn write(&mut self, ino: u64, offset: u64, len: u32) -> Option<()> {
        let attr = self.attrs.get_mut(&ino)?;
        attr.size = attr.size.max(offset + u64::from(len));
        Some(())
    }
}

struct Floor {
    tree: Mutex<Tree>,
    /// What `init` negotiates.
    mount: MountConfig,
}

impl Floor {
    fn tree(&self) -> MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fuser::Filesystem for Floor {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        negotiate(config, &self.mount);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.tree().lookup(parent.0, name) {
            Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree().attrs.get(&ino.0) {
            Some(attr) => reply.attr(&TTL, attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
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
        match self.tree().resize(ino.0, size) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let attr = self
            .tree()
            .add(parent.0, name, FileType::Directory, mode & !umask);
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.tree().remove(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.tree().remove(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let attr = self
            .tree()
            .add(parent.0, name, FileType::RegularFile, mode & !umask);
        reply.created(
            &TTL,
            &attr,
            Generation(0),
            FileHandle(attr.ino.0),
            FopenFlags::FOPEN_KEEP_CACHE,
        );
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
        let written = u32::try_from(data.len()).unwrap_or(u32::MAX);
        match self.tree().write(ino.0, offset, written) {
            Some(()) => reply.written(written),
            None => reply.error(Errno::ENOENT),
        }
    }

    // AegisFS answers FLUSH with ENOSYS too, so the kernel stops sending it.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENODATA);
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(mountpoint), uring) = (args.next().map(PathBuf::from), args.next()) else {
        anyhow::bail!("usage: fuse_floor MOUNTPOINT [--uring]");
    };
    let want_uring = match uring {
        None => false,
        Some(flag) if flag == "--uring" => true,
        Some(other) => {
            anyhow::bail!("unknown argument {other:?}; usage: fuse_floor MOUNTPOINT [--uring]")
        }
    };
    let mut tree = Tree::default();
    tree.add(0, OsStr::new(""), FileType::Directory, 0o755);
    let mount = MountConfig {
        fsname: "fuse-floor".into(),
        io_uring: want_uring,
        ..MountConfig::default()
    };
    let floor = Floor {
        tree: Mutex::new(tree),
        mount: mount.clone(),
    };
    let session = fuser::Session::new(floor, &mountpoint, &session_config(&mount))?;
    if want_uring && !session.uses_io_uring() {
        anyhow::bail!(
            "the kernel did not offer FUSE over io_uring (is the fuse module's enable_uring set?)"
        );
    }
    session.run()?;
    Ok(())
}
