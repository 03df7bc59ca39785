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
//! With `--uring` it also serves over FUSE's io_uring transport (Linux 6.14+, the `fuse`
//! module's `enable_uring` set while mounting): one queue per possible CPU, each served by a
//! thread pinned to that CPU, so a request is answered on the CPU that sent it. fuser 0.18 has
//! no such transport; the [`ring`] module speaks the kernel's protocol for just these
//! operations, to measure what the transport would give. FORGET and INTERRUPT still come
//! through `/dev/fuse`, which fuser keeps serving.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fs_core::fuse::{negotiate, session_config, MountConfig};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyCreate, ReplyEmpty, ReplyEntry, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
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

/// What both transports serve from.
struct Shared {
    tree: Mutex<Tree>,
    /// Whether to ask the kernel for the io_uring transport at INIT.
    want_uring: bool,
    /// Whether the kernel granted it.
    uring: AtomicBool,
    /// Requests answered over io_uring.
    ring_requests: AtomicU64,
}

impl Shared {
    fn tree(&self) -> MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Floor(Arc<Shared>);

impl Floor {
    fn tree(&self) -> MutexGuard<'_, Tree> {
        self.0.tree()
    }
}

impl fuser::Filesystem for Floor {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        negotiate(config, MountConfig::default().writeback_cache);
        if self.0.want_uring
            && config
                .capabilities()
                .contains(InitFlags::FUSE_OVER_IO_URING)
            && config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_ok()
        {
            self.0.uring.store(true, Ordering::Relaxed);
        }
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
    let shared = Arc::new(Shared {
        tree: Mutex::new(tree),
        want_uring,
        uring: AtomicBool::new(false),
        ring_requests: AtomicU64::new(0),
    });
    let config = MountConfig {
        fsname: "fuse-floor".into(),
        ..MountConfig::default()
    };
    // Mounts and answers INIT, which the ring's registration needs.
    let mut session = fuser::Session::new(
        Floor(Arc::clone(&shared)),
        &mountpoint,
        &session_config(&config),
    )?;
    let mut queues = Vec::new();
    if shared.uring.load(Ordering::Relaxed) {
        let device = Arc::new(session.as_fd().try_clone_to_owned()?);
        // The kernel holds every request until all queues are registered: a queue that fails
        // unmounts, so the run ends with its error instead of hanging.
        let unmounter = Arc::new(Mutex::new(session.unmount_callable()));
        for qid in 0..ring::possible_cpus()? {
            let (shared, device) = (Arc::clone(&shared), Arc::clone(&device));
            let unmounter = Arc::clone(&unmounter);
            queues.push(
                std::thread::Builder::new()
                    .name(format!("fuse-ring-{qid}"))
                    .spawn(move || {
                        let served = ring::serve_queue(&shared, &device, qid);
                        if served.is_err() {
                            let mut unmounter =
                                unmounter.lock().unwrap_or_else(PoisonError::into_inner);
                            if let Err(err) = unmounter.unmount() {
                                eprintln!("fuse_floor: cannot unmount: {err}");
                            }
                        }
                        served
                    })?,
            );
        }
    } else if want_uring {
        anyhow::bail!(
            "the kernel did not offer FUSE over io_uring (is the fuse module's enable_uring set?)"
        );
    }
    let served = session.run();
    for queue in queues {
        match queue.join() {
            Ok(result) => result?,
            Err(_) => anyhow::bail!("a ring thread panicked"),
        }
    }
    served?;
    if want_uring {
        eprintln!(
            "fuse_floor: {} requests answered over io_uring",
            shared.ring_requests.load(Ordering::Relaxed)
        );
    }
    Ok(())
}

/// FUSE over io_uring for the floor's operations (include/uapi/linux/fuse.h 7.42,
/// fs/fuse/dev_uring.c).
///
/// Each queue thread registers [`DEPTH`] entries. An entry is two buffers the kernel fills
/// with a request: a header (`struct fuse_uring_req_header`: the `fuse_in_header` in `in_out`,
/// the operation's fixed struct in `op_in`, then `struct fuse_uring_ent_in_out` with the
/// commit id and payload size) and a payload (names, write data). The reply goes back the same
/// way: `fuse_out_header` in `in_out`, the body in the payload, and COMMIT_AND_FETCH hands the
/// entry back for the next request. Unmounting completes the waiting entries with ENOTCONN.
mod ring {
    use std::ffi::OsStr;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::sync::atomic::Ordering;
    use std::time::UNIX_EPOCH;

    use fuser::{FileAttr, FileType};
    use io_uring::{cqueue, opcode, squeue, types, IoUring};

    use super::{Shared, TTL};

    const DEPTH: usize = 4;
    const CMD_REGISTER: u32 = 1;
    const CMD_COMMIT_AND_FETCH: u32 = 2;
    /// `struct fuse_uring_req_header`: `in_out[128]`, `op_in[128]`, `ring_ent_in_out`.
    const HEADER_SIZE: usize = 288;
    const OP_IN: usize = 128;
    const COMMIT_ID: usize = 256 + 8;
    const PAYLOAD_SIZE_FIELD: usize = 256 + 16;
    /// At least the kernel's largest payload: max_write (1 MiB) here.
    const PAYLOAD_SIZE: usize = fs_core::fuse::MAX_WRITE as usize + 4096;
    const FOPEN_KEEP_CACHE: u32 = 1 << 1;
    const SETATTR_SIZE: u32 = 1 << 3;

    const LOOKUP: u32 = 1;
    const GETATTR: u32 = 3;
    const SETATTR: u32 = 4;
    const MKDIR: u32 = 9;
    const UNLINK: u32 = 10;
    const RMDIR: u32 = 11;
    const WRITE: u32 = 16;
    const STATFS: u32 = 17;
    const RELEASE: u32 = 18;
    const GETXATTR: u32 = 22;
    const CREATE: u32 = 35;

    const _: () = assert!(std::mem::size_of::<squeue::Entry128>() == 128);

    /// The kernel has one queue per possible CPU (`/sys/devices/system/cpu/possible`, "0-N").
    pub fn possible_cpus() -> anyhow::Result<usize> {
        let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
        let last = possible.trim().rsplit(['-', ',']).next().unwrap_or("0");
        Ok(last.parse::<usize>()? + 1)
    }

    struct Entry {
        header: Box<[u8]>,
        payload: Box<[u8]>,
        iovecs: Box<[libc::iovec; 2]>,
    }

    impl Entry {
        fn new() -> Self {
            let mut header = vec![0u8; HEADER_SIZE].into_boxed_slice();
            let mut payload = vec![0u8; PAYLOAD_SIZE].into_boxed_slice();
            let iovecs = Box::new([
                libc::iovec {
                    iov_base: header.as_mut_ptr().cast(),
                    iov_len: header.len(),
                },
                libc::iovec {
                    iov_base: payload.as_mut_ptr().cast(),
                    iov_len: payload.len(),
                },
            ]);
            Self {
                header,
                payload,
                iovecs,
            }
        }
    }

    fn command(qid: u16, commit_id: u64) -> [u8; 80] {
        // struct fuse_uring_cmd_req { u64 flags; u64 commit_id; u16 qid; u8 padding[6]; }
        let mut cmd = [0u8; 80];
        cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
        cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
        cmd
    }

    fn register(device: i32, qid: u16, index: usize, entry: &Entry) -> squeue::Entry128 {
        let sqe = opcode::UringCmd80::new(types::Fd(device), CMD_REGISTER)
            .cmd(command(qid, 0))
            .addr(Some(entry.iovecs.as_ptr() as u64))
            .build()
            .user_data(index as u64);
        // REGISTER wants the iovec count in `sqe->len`, which `UringCmd80` does not set.
        // SAFETY: `Entry128` is `#[repr(C)]` over the 128 bytes of an SQE128 (asserted above),
        // any byte pattern is a valid value of it, and `len` is the u32 at offset 24 of
        // `struct io_uring_sqe`.
        let mut raw: [u8; 128] = unsafe { std::mem::transmute(sqe) };
        raw[24..28].copy_from_slice(&2u32.to_ne_bytes());
        // SAFETY: as above.
        unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
    }

    fn commit(device: i32, qid: u16, index: usize, commit_id: u64) -> squeue::Entry128 {
        opcode::UringCmd80::new(types::Fd(device), CMD_COMMIT_AND_FETCH)
            .cmd(command(qid, commit_id))
            .build()
            .user_data(index as u64)
    }

    fn read_u32(bytes: &[u8], at: usize) -> u32 {
        let mut field = [0u8; 4];
        field.copy_from_slice(&bytes[at..at + 4]);
        u32::from_ne_bytes(field)
    }

    fn read_u64(bytes: &[u8], at: usize) -> u64 {
        let mut field = [0u8; 8];
        field.copy_from_slice(&bytes[at..at + 8]);
        u64::from_ne_bytes(field)
    }

    /// Appends native-endian fields to a reply body.
    struct Body<'a> {
        bytes: &'a mut [u8],
        len: usize,
    }

    impl Body<'_> {
        fn put(&mut self, field: &[u8]) -> &mut Self {
            self.bytes[self.len..self.len + field.len()].copy_from_slice(field);
            self.len += field.len();
            self
        }
        fn u32(&mut self, value: u32) -> &mut Self {
            self.put(&value.to_ne_bytes())
        }
        fn u64(&mut self, value: u64) -> &mut Self {
            self.put(&value.to_ne_bytes())
        }

        /// `struct fuse_attr` (88 bytes).
        fn attr(&mut self, attr: &FileAttr) -> &mut Self {
            let time = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default();
            let (atime, mtime, ctime) = (time(attr.atime), time(attr.mtime), time(attr.ctime));
            let kind = if attr.kind == FileType::Directory {
                libc::S_IFDIR
            } else {
                libc::S_IFREG
            };
            self.u64(attr.ino.0).u64(attr.size).u64(attr.blocks);
            self.u64(atime.as_secs())
                .u64(mtime.as_secs())
                .u64(ctime.as_secs());
            self.u32(atime.subsec_nanos())
                .u32(mtime.subsec_nanos())
                .u32(ctime.subsec_nanos());
            self.u32(kind | u32::from(attr.perm)).u32(attr.nlink);
            self.u32(attr.uid)
                .u32(attr.gid)
                .u32(attr.rdev)
                .u32(attr.blksize)
                .u32(attr.flags)
        }

        /// `struct fuse_entry_out`.
        fn entry(&mut self, attr: &FileAttr) -> &mut Self {
            self.u64(attr.ino.0)
                .u64(0)
                .u64(TTL.as_secs())
                .u64(TTL.as_secs());
            self.u32(TTL.subsec_nanos())
                .u32(TTL.subsec_nanos())
                .attr(attr)
        }

        /// `struct fuse_attr_out`.
        fn attr_out(&mut self, attr: &FileAttr) -> &mut Self {
            self.u64(TTL.as_secs())
                .u32(TTL.subsec_nanos())
                .u32(0)
                .attr(attr)
        }
    }

    /// The name a request carries in its payload, NUL-terminated.
    fn name(payload: &[u8]) -> &OsStr {
        let end = payload
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(payload.len());
        OsStr::from_bytes(&payload[..end])
    }

    /// Answers the request in `entry`: the body is left in its payload. The error (a positive
    /// errno) or the body's length.
    fn answer(shared: &Shared, entry: &mut Entry) -> Result<usize, i32> {
        let header = &entry.header;
        let (opcode, node) = (read_u32(header, 4), read_u64(header, 16));
        let op_in = &header[OP_IN..OP_IN + 128];
        let sent = read_u32(header, PAYLOAD_SIZE_FIELD) as usize;
        let name = if matches!(opcode, LOOKUP | MKDIR | CREATE | UNLINK | RMDIR) {
            name(&entry.payload[..sent.min(PAYLOAD_SIZE)]).to_owned()
        } else {
            std::ffi::OsString::new()
        };
        let mut body = Body {
            bytes: &mut entry.payload,
            len: 0,
        };
        let mut tree = shared.tree();
        match opcode {
            LOOKUP => body.entry(&tree.lookup(node, &name).ok_or(libc::ENOENT)?),
            GETATTR => body.attr_out(tree.attrs.get(&node).ok_or(libc::ENOENT)?),
            SETATTR => {
                // struct fuse_setattr_in { u32 valid; u32 padding; u64 fh; u64 size; ... }
                let size = (read_u32(op_in, 0) & SETATTR_SIZE != 0).then(|| read_u64(op_in, 16));
                body.attr_out(&tree.resize(node, size).ok_or(libc::ENOENT)?)
            }
            MKDIR => {
                // struct fuse_mkdir_in { u32 mode; u32 umask; }
                let mode = read_u32(op_in, 0) & !read_u32(op_in, 4);
                body.entry(&tree.add(node, &name, FileType::Directory, mode))
            }
            CREATE => {
                // struct fuse_create_in { u32 flags; u32 mode; u32 umask; u32 open_flags; }
                let mode = read_u32(op_in, 4) & !read_u32(op_in, 8);
                let attr = tree.add(node, &name, FileType::RegularFile, mode);
                // struct fuse_open_out { u64 fh; u32 open_flags; i32 backing_id; }
                body.entry(&attr)
                    .u64(attr.ino.0)
                    .u32(FOPEN_KEEP_CACHE)
                    .u32(0)
            }
            UNLINK | RMDIR => {
                tree.remove(node, &name).map_err(|_| libc::ENOENT)?;
                &mut body
            }
            WRITE => {
                // struct fuse_write_in { u64 fh; u64 offset; u32 size; ... }
                let size = read_u32(op_in, 16);
                tree.write(node, read_u64(op_in, 8), size)
                    .ok_or(libc::ENOENT)?;
                // struct fuse_write_out { u32 size; u32 padding; }
                body.u32(size).u32(0)
            }
            RELEASE => &mut body,
            // struct fuse_kstatfs: five u64 counts, bsize, namelen, frsize, padding, spare[6].
            STATFS => body.put(&[0; 40]).u32(512).u32(255).put(&[0; 32]),
            GETXATTR => return Err(libc::ENODATA),
            // FLUSH included, as AegisFS answers it.
            _ => return Err(libc::ENOSYS),
        };
        Ok(body.len)
    }

    /// Serves queue `qid` on its CPU until the mount goes away.
    pub fn serve_queue(shared: &Shared, device: &OwnedFd, qid: usize) -> anyhow::Result<()> {
        pin_to(qid)?;
        let queue = u16::try_from(qid)?;
        let device = device.as_raw_fd();
        let mut ring: IoUring<squeue::Entry128, cqueue::Entry> =
            IoUring::builder().build(2 * DEPTH as u32)?;
        // The kernel keeps the addresses of the entries' buffers until the mount goes away,
        // which may be after this thread ends on an error: they are never freed.
        let entries: &'static mut [Entry] =
            (0..DEPTH).map(|_| Entry::new()).collect::<Vec<_>>().leak();
        for (index, entry) in entries.iter().enumerate() {
            // SAFETY: the entry's buffers and iovecs are never freed (above).
            unsafe {
                ring.submission()
                    .push(&register(device, queue, index, entry))?
            };
        }
        let mut waiting = DEPTH;
        while waiting > 0 {
            match ring.submit_and_wait(1) {
                Err(err) if err.raw_os_error() == Some(libc::EINTR) => continue,
                result => result?,
            };
            let done: Vec<(usize, i32)> = ring
                .completion()
                .map(|cqe| (cqe.user_data() as usize, cqe.result()))
                .collect();
            for (index, result) in done {
                if result == -libc::ENOTCONN {
                    // The mount went away.
                    waiting -= 1;
                    continue;
                }
                if result < 0 {
                    anyhow::bail!(
                        "queue {qid}: {}",
                        std::io::Error::from_raw_os_error(-result)
                    );
                }
                let entry = &mut entries[index];
                let (commit_id, unique) = (
                    read_u64(&entry.header, COMMIT_ID),
                    read_u64(&entry.header, 8),
                );
                let (error, len) = match answer(shared, entry) {
                    Ok(len) => (0, len),
                    Err(errno) => (-errno, 0),
                };
                // struct fuse_out_header { u32 len; i32 error; u64 unique; }
                let header = &mut entry.header;
                header[0..4].copy_from_slice(&u32::try_from(16 + len)?.to_ne_bytes());
                header[4..8].copy_from_slice(&error.to_ne_bytes());
                header[8..16].copy_from_slice(&unique.to_ne_bytes());
                header[PAYLOAD_SIZE_FIELD..PAYLOAD_SIZE_FIELD + 4]
                    .copy_from_slice(&u32::try_from(len)?.to_ne_bytes());
                shared.ring_requests.fetch_add(1, Ordering::Relaxed);
                // SAFETY: the buffers are never freed; the entry is the kernel's again until
                // its next completion, and nothing here touches it before that.
                unsafe {
                    ring.submission()
                        .push(&commit(device, queue, index, commit_id))?
                };
            }
        }
        Ok(())
    }

    fn pin_to(cpu: usize) -> std::io::Result<()> {
        // SAFETY: `cpu_set_t` is plain data for which all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: `cpu` is below CPU_SETSIZE (checked), so the bit is inside `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: pid 0 is the calling thread; `set` is a valid set of the size passed.
        let result =
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if result == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}
