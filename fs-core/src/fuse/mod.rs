//! The thin adapter from `fuser` requests to [`crate::fs::Filesystem`] calls: it converts
//! types, maps [`FsError`](crate::FsError) to errnos and owns nothing else.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Config, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, SessionACL, TimeOrNow, WriteFlags,
};

use crate::error::FsError;
use crate::format::SECTOR_SIZE;
use crate::fs::{Attr, Caller, Filesystem, NewNode, SetAttr, Whence, MAX_NAME_LEN};
use crate::meta::records::{FileKind, Timestamp};
use crate::types::InodeId;

/// How long the kernel may cache attributes and entries. Only this process changes the
/// namespace, so the kernel's copy can only go stale through our own replies.
const TTL: Duration = Duration::from_secs(1);
/// Largest write request the kernel sends.
pub const MAX_WRITE: u32 = 1024 * 1024;
const READDIR_BATCH: usize = 256;
/// File contents change only through this mount, so the kernel's page cache stays valid
/// across opens.
const OPEN_FLAGS: FopenFlags = FopenFlags::FOPEN_KEEP_CACHE;

/// Options of a mount.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Name shown as the mount source (`/proc/mounts`).
    pub fsname: String,
    /// Threads serving `/dev/fuse`: two per core (at least four), so one decrypts, decompresses
    /// or verifies a block while another waits for the device (one per core left the cores
    /// idle during reads: cold sequential reads ran 18 % faster, encrypted ones 24 %).
    pub threads: usize,
    /// Let the kernel cache writes (`writeback_cache`).
    pub writeback_cache: bool,
    pub allow_other: bool,
    /// Serve over FUSE's io_uring transport where the kernel offers it (Linux 6.14+ with the
    /// `fuse` module's `enable_uring` set): each CPU's requests are answered by threads pinned
    /// to that CPU (on a 2-vCPU VM: 2.2 times the small-file creates, 2.3 times the stats).
    /// Elsewhere the session serves through `/dev/fuse`.
    pub io_uring: bool,
}

impl Default for MountConfig {
    fn default() -> Self {
        Self {
            fsname: "aegisfs".into(),
            threads: 2 * std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            writeback_cache: true,
            allow_other: true,
            io_uring: true,
        }
    }
}

/// The `fuser::Filesystem` implementation.
#[derive(Debug)]
pub struct AegisFuse {
    fs: Arc<Filesystem>,
    /// What `init` negotiates.
    mount: MountConfig,
}

impl AegisFuse {
    pub fn new(fs: Arc<Filesystem>, mount: MountConfig) -> Self {
        Self { fs, mount }
    }
}

/// Mounts `fs` at `mountpoint`; the returned session serves requests when run.
pub fn session(
    fs: Arc<Filesystem>,
    mountpoint: &Path,
    config: &MountConfig,
) -> std::io::Result<fuser::Session<AegisFuse>> {
    fuser::Session::new(
        AegisFuse::new(fs, config.clone()),
        mountpoint,
        &session_config(config),
    )
}

/// Threads serving each of the kernel's per-CPU queues over io_uring: two, as two per core
/// serve `/dev/fuse`, so one request waiting for the device does not hold up its CPU's queue.
const RING_THREADS_PER_QUEUE: usize = 2;

/// Nice value of the threads serving over io_uring. At the default priority the scheduler
/// wakes a sender answered by its CPU's ring thread on the other CPU about once per create,
/// each time waking an idle CPU; with the ring threads at -10 it keeps the sender where it
/// was (2-vCPU VM: 28,500 moves in 30,000 creates, against about 40; creates 1.6 times as
/// fast; docs/benchmarks.md). Work the filesystem does for itself (timed commits, scrub,
/// migration, backups) runs on other threads at the default priority.
const RING_THREAD_NICE: i32 = -10;

/// The mount options and threads of a session: permissions checked by the kernel
/// (`default_permissions`), device nodes and setuid honoured, one cloned `/dev/fuse`
/// descriptor per thread, or [`RING_THREADS_PER_QUEUE`] per CPU over io_uring, at
/// [`RING_THREAD_NICE`].
pub fn session_config(config: &MountConfig) -> Config {
    let mut options = Config::default();
    options.mount_options = vec![
        MountOption::FSName(config.fsname.clone()),
        MountOption::Subtype("aegisfs".into()),
        MountOption::DefaultPermissions,
        MountOption::Dev,
        MountOption::Suid,
        MountOption::RW,
    ];
    options.acl = if config.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    options.n_threads = Some(config.threads.max(1));
    options.clone_fd = true;
    options.io_uring_threads_per_queue = Some(RING_THREADS_PER_QUEUE);
    options.io_uring_thread_nice = Some(RING_THREAD_NICE);
    options
}

/// Asks the kernel for the protocol features AegisFS serves with; the ones it does not offer
/// are left out with a warning, but for the io_uring transport, which is optional.
pub fn negotiate(config: &mut KernelConfig, mount: &MountConfig) {
    let _ = config.set_max_write(MAX_WRITE);
    let _ = config.set_max_readahead(MAX_WRITE);
    let mut wanted = InitFlags::FUSE_DO_READDIRPLUS
        | InitFlags::FUSE_READDIRPLUS_AUTO
        | InitFlags::FUSE_PARALLEL_DIROPS
        | InitFlags::FUSE_ATOMIC_O_TRUNC
        // Setuid, setgid and capabilities are dropped here on write, truncate and chown,
        // which spares a GETXATTR round trip before every write(2).
        | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
    if mount.writeback_cache {
        wanted |= InitFlags::FUSE_WRITEBACK_CACHE;
    }
    let offered = config.capabilities() & wanted;
    if let Err(missing) = config.add_capabilities(offered) {
        tracing::warn!(?missing, "kernel refused FUSE capabilities");
    }
    if mount.io_uring
        && config
            .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
            .is_err()
    {
        tracing::info!(
            "the kernel does not offer FUSE over io_uring (Linux 6.14+, fuse.enable_uring): serving through /dev/fuse"
        );
    }
}

/// Serves `session` until the filesystem is unmounted.
///
/// When the connection goes away (unmount, or an abort through fusectl) the kernel wakes the
/// session's readers with ENODEV, which fuser takes for the end of the session. A reader that
/// had already taken a request off the queue gets ECONNABORTED instead, and the request is
/// failed for its sender. That happens when the last close of a lazily detached mount races
/// the teardown of its superblock (the close's RELEASE is that request); it is the same end,
/// not a failure of this process. The request never reached the filesystem: an unlinked
/// inode it would have freed stays an orphan, which the next mount reclaims.
pub fn serve(session: fuser::Session<AegisFuse>) -> std::io::Result<()> {
    match session.run() {
        Err(err) if err.raw_os_error() == Some(libc::ECONNABORTED) => {
            tracing::info!("the kernel ended the FUSE connection while handing over a request");
            Ok(())
        }
        result => result,
    }
}

/// Kernel readahead for the mount. FUSE mounts start at 128 KiB, which caps sequential reads
/// at one 128 KiB request at a time; 4 MiB keeps several 1 MiB requests in flight.
pub const READAHEAD_KIB: u32 = 4096;

/// Sets the kernel's readahead window of the filesystem mounted at `mountpoint`.
///
/// The device number comes from `/proc/self/mountinfo`, not from `stat`: a `stat` of the
/// mountpoint would be a FUSE request, which nobody answers until the session runs.
pub fn set_readahead(mountpoint: &Path, kib: u32) -> std::io::Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let wanted = mountpoint.to_string_lossy().replace(' ', "\\040");
    let device = mountinfo
        .lines()
        .rev()
        .find_map(|line| {
            let mut fields = line.split(' ');
            let device = fields.nth(2)?;
            let target = fields.nth(1)?;
            (target == wanted).then_some(device)
        })
        .ok_or_else(|| std::io::Error::other(format!("{} is not mounted", mountpoint.display())))?;
    std::fs::write(
        format!("/sys/class/bdi/{device}/read_ahead_kb"),
        kib.to_string(),
    )
}

/// Writes the kernel's dirty pages of the mount back to this filesystem (`syncfs(2)`): FUSE
/// never forwards syncfs itself, but the kernel flushes its writeback cache first, so a
/// snapshot taken afterwards holds everything applications wrote. Must not run on a thread
/// that serves FUSE requests (the write-back is answered by them).
pub fn write_back(mountpoint: &Path) -> std::io::Result<()> {
    let dir = std::fs::File::open(mountpoint)?;
    // SAFETY: `dir` is an open descriptor for the duration of the call; syncfs only reads it.
    let result = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Tells the kernel to forget what it cached of entries and inodes that changed behind its
/// back (a rollback, a deleted snapshot), so it asks again instead of serving old data.
pub struct Invalidator(fuser::Notifier);

impl std::fmt::Debug for Invalidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Invalidator")
    }
}

impl Invalidator {
    pub fn new(session: &fuser::Session<AegisFuse>) -> Self {
        Self(session.notifier())
    }

    /// Forgets everything a rollback changed. The kernel answers ENOENT for what it never
    /// cached; that is ignored.
    pub fn rolled_back(&self, report: &crate::fs::snapshot::Rollback) {
        for (dir, name) in &report.entries {
            let _ = self.0.inval_entry(INodeNo(dir.0), OsStr::from_bytes(name));
        }
        for ino in &report.inodes {
            // Offset 0, length 0: attributes and every cached page.
            let _ = self.0.inval_inode(INodeNo(ino.0), 0, 0);
        }
        for name in &report.destroyed {
            self.snapshot_deleted(name);
        }
    }

    /// Forgets `/.snapshots/<name>` after the snapshot was deleted.
    pub fn snapshot_deleted(&self, name: &str) {
        let _ = self
            .0
            .inval_entry(INodeNo(InodeId::SNAPSHOT_DIR.0), OsStr::new(name));
        let _ = self.0.inval_inode(INodeNo(InodeId::SNAPSHOT_DIR.0), 0, 0);
    }
}

fn errno(err: &FsError) -> Errno {
    match err {
        FsError::Device(_)
        | FsError::DeviceWrite(_)
        | FsError::Meta(_)
        | FsError::Checksum { .. }
        | FsError::Corrupt(_) => {
            tracing::error!(error = %err, cause = ?std::error::Error::source(err), "I/O error");
        }
        _ => {}
    }
    Errno::from_i32(err.errno())
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

fn file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino.0),
        size: attr.size,
        blocks: attr.blocks,
        atime: attr.atime.to_system(),
        mtime: attr.mtime.to_system(),
        ctime: attr.ctime.to_system(),
        crtime: attr.crtime.to_system(),
        kind: file_type(attr.kind),
        perm: u16::try_from(attr.perm & 0o7777).unwrap_or(0),
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev,
        blksize: attr.blksize,
        flags: 0,
    }
}

fn ino(ino: INodeNo) -> InodeId {
    InodeId(ino.0)
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn timestamp(time: TimeOrNow) -> Timestamp {
    match time {
        TimeOrNow::SpecificTime(t) => Timestamp::from_system(t),
        TimeOrNow::Now => Timestamp::now(),
    }
}

fn reply_entry(reply: ReplyEntry, result: Result<Attr, FsError>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &file_attr(&attr), Generation(attr.generation)),
        Err(err) => reply.error(errno(&err)),
    }
}

fn reply_data(reply: ReplyData, result: Result<Vec<u8>, FsError>) {
    match result {
        Ok(data) => reply.data(&data),
        Err(err) => reply.error(errno(&err)),
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), FsError>) {
    match result {
        Ok(()) => reply.ok(),
        Err(err) => reply.error(errno(&err)),
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, result: Result<Vec<u8>, FsError>) {
    match result {
        Ok(data) if size == 0 => reply.size(u32::try_from(data.len()).unwrap_or(u32::MAX)),
        Ok(data) if data.len() <= size as usize => reply.data(&data),
        Ok(_) => reply.error(Errno::from_i32(libc::ERANGE)),
        Err(err) => reply.error(errno(&err)),
    }
}

impl AegisFuse {
    /// Runs one filesystem call. A panic is a bug: the request fails with EIO and the pool
    /// goes read-only (its open transaction group may be half-updated), logged as any failure
    /// is, but the mount keeps serving reads of the last commit instead of vanishing under its
    /// users.
    fn call<T>(&self, op: impl FnOnce(&Filesystem) -> Result<T, FsError>) -> Result<T, FsError> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op(&self.fs))) {
            Ok(result) => result,
            Err(_) => {
                self.fs
                    .set_read_only("internal error (a panic) while serving a request");
                Err(FsError::Failed)
            }
        }
    }
}

impl fuser::Filesystem for AegisFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        negotiate(config, &self.mount);
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(err) = self.call(|fs| fs.shutdown()) {
            tracing::error!(error = %err, "final commit at unmount failed");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(
            reply,
            self.call(|fs| fs.lookup(ino(parent), name.as_bytes())),
        );
    }

    fn getattr(&self, _req: &Request, inode: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.call(|fs| fs.getattr(ino(inode))) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(err) => reply.error(errno(&err)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        inode: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let changes = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(timestamp),
            mtime: mtime.map(timestamp),
            ctime: ctime.map(Timestamp::from_system),
            caller: Some(caller(req)),
        };
        match self.call(|fs| fs.setattr(ino(inode), &changes)) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(err) => reply.error(errno(&err)),
        }
    }

    fn readlink(&self, _req: &Request, inode: INodeNo, reply: ReplyData) {
        reply_data(reply, self.call(|fs| fs.readlink(ino(inode))));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let Some(kind) = FileKind::from_mode(mode) else {
            return reply.error(Errno::from_i32(libc::EINVAL));
        };
        if kind == FileKind::Directory || kind == FileKind::Symlink {
            return reply.error(Errno::from_i32(libc::EINVAL));
        }
        let node = NewNode {
            rdev,
            ..NewNode::new(kind, mode & !umask)
        };
        let result =
            self.call(|fs| fs.create_node(ino(parent), name.as_bytes(), &node, caller(req)));
        reply_entry(reply, result);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let node = NewNode::new(FileKind::Directory, mode & !umask);
        let result =
            self.call(|fs| fs.create_node(ino(parent), name.as_bytes(), &node, caller(req)));
        reply_entry(reply, result);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            self.call(|fs| fs.unlink(ino(parent), name.as_bytes())),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            self.call(|fs| fs.rmdir(ino(parent), name.as_bytes())),
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let target = target.as_os_str().as_bytes();
        if target.len() > 4095 {
            return reply.error(Errno::from_i32(libc::ENAMETOOLONG));
        }
        let node = NewNode {
            target: Some(target),
            ..NewNode::new(FileKind::Symlink, 0o777)
        };
        let result =
            self.call(|fs| fs.create_node(ino(parent), link_name.as_bytes(), &node, caller(req)));
        reply_entry(reply, result);
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
        let result = self.call(|fs| {
            fs.rename(
                ino(parent),
                name.as_bytes(),
                ino(newparent),
                newname.as_bytes(),
                flags.bits(),
            )
        });
        reply_empty(reply, result);
    }

    fn link(
        &self,
        _req: &Request,
        inode: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply_entry(
            reply,
            self.call(|fs| fs.link(ino(inode), ino(newparent), newname.as_bytes())),
        );
    }

    fn open(&self, req: &Request, inode: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let truncate = flags.0 & libc::O_TRUNC != 0;
        let write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        match self.call(|fs| fs.open(ino(inode), write, truncate, caller(req))) {
            Ok(_) => reply.opened(FileHandle(inode.0), OPEN_FLAGS),
            Err(err) => reply.error(errno(&err)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        inode: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        reply_data(reply, self.call(|fs| fs.read(ino(inode), offset, size)));
    }

    fn write(
        &self,
        _req: &Request,
        inode: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.call(|fs| fs.write(ino(inode), offset, data)) {
            Ok(written) => reply.written(u32::try_from(written).unwrap_or(u32::MAX)),
            Err(err) => reply.error(errno(&err)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Writes reach the open transaction group as they arrive and durability is fsync's
        // job, so there is nothing to do on close: ENOSYS tells the kernel to stop sending
        // FLUSH, which saves a round trip on every close.
        reply.error(Errno::from_i32(libc::ENOSYS));
    }

    fn release(
        &self,
        _req: &Request,
        inode: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.call(|fs| fs.release(ino(inode))));
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.call(|fs| fs.fsync()));
    }

    fn readdir(
        &self,
        _req: &Request,
        inode: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.call(|fs| fs.readdir(ino(inode), offset, READDIR_BATCH)) {
            Ok(entries) => {
                for entry in entries {
                    let name = OsStr::from_bytes(&entry.name);
                    if reply.add(
                        INodeNo(entry.ino.0),
                        entry.cookie,
                        file_type(entry.kind),
                        name,
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(err) => reply.error(errno(&err)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        inode: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let entries = match self.call(|fs| fs.readdir(ino(inode), offset, READDIR_BATCH)) {
            Ok(entries) => entries,
            Err(err) => return reply.error(errno(&err)),
        };
        for entry in entries {
            let attr = match self.call(|fs| fs.getattr(entry.ino)) {
                Ok(attr) => attr,
                // Removed since the listing was taken.
                Err(FsError::NotFound) => continue,
                Err(err) => return reply.error(errno(&err)),
            };
            let name = OsStr::from_bytes(&entry.name);
            if reply.add(
                INodeNo(entry.ino.0),
                entry.cookie,
                name,
                &TTL,
                &file_attr(&attr),
                Generation(attr.generation),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.call(|fs| fs.fsync()));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let space = self.fs.space();
        let sector = u32::try_from(SECTOR_SIZE).unwrap_or(4096);
        reply.statfs(
            space.total_sectors,
            space.free_sectors,
            space.free_sectors,
            u64::MAX >> 1,
            u64::MAX >> 2,
            sector,
            u32::try_from(MAX_NAME_LEN).unwrap_or(255),
            sector,
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        inode: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.call(|fs| fs.setxattr(ino(inode), name.as_bytes(), value, flags)),
        );
    }

    fn getxattr(&self, _req: &Request, inode: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(
            reply,
            size,
            self.call(|fs| fs.getxattr(ino(inode), name.as_bytes())),
        );
    }

    fn listxattr(&self, _req: &Request, inode: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, size, self.call(|fs| fs.listxattr(ino(inode))));
    }

    fn removexattr(&self, _req: &Request, inode: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            self.call(|fs| fs.removexattr(ino(inode), name.as_bytes())),
        );
    }

    fn access(&self, req: &Request, inode: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let result = self.call(|fs| {
            let attr = fs.getattr(ino(inode))?;
            crate::fs::check_access(&attr, caller(req), mask.bits())
        });
        reply_empty(reply, result);
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
        let node = NewNode::new(FileKind::Regular, mode & !umask);
        let result = self.call(|fs| {
            let attr = fs.create_node(ino(parent), name.as_bytes(), &node, caller(req))?;
            fs.open(attr.ino, true, false, caller(req))
        });
        match result {
            Ok(attr) => reply.created(
                &TTL,
                &file_attr(&attr),
                Generation(attr.generation),
                FileHandle(attr.ino.0),
                OPEN_FLAGS,
            ),
            Err(err) => reply.error(errno(&err)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        inode: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.call(|fs| fs.fallocate(ino(inode), offset, length, mode, caller(req))),
        );
    }

    fn lseek(
        &self,
        _req: &Request,
        inode: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let whence = match whence {
            libc::SEEK_DATA => Whence::Data,
            libc::SEEK_HOLE => Whence::Hole,
            _ => return reply.error(Errno::from_i32(libc::EINVAL)),
        };
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(Errno::from_i32(libc::ENXIO));
        };
        match self.call(|fs| fs.seek(ino(inode), offset, whence)) {
            Ok(found) => reply.offset(i64::try_from(found).unwrap_or(i64::MAX)),
            Err(err) => reply.error(errno(&err)),
        }
    }
}
