//! `UringDevice`: positioned I/O through io_uring, the fast backend.
//!
//! This module owns everything io_uring-specific: the small pool of rings, the choice between
//! the `O_DIRECT` descriptor and the buffered one for each request, aligned bounce buffers, and
//! the completion loop (short transfers are resubmitted for the remainder, `EINTR`/`EAGAIN` are
//! retried). A batch is pushed onto one ring and submitted with a single `io_uring_enter`; the
//! call returns only after every submitted entry has completed, so no buffer the kernel may
//! touch is ever freed or handed back to the caller early.
//!
//! Ops inside one batch run concurrently: overlapping writes in the same `write_batch` land in
//! an unspecified order, exactly as with concurrent `pwrite`s.

use std::alloc::{self, Layout};
use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring, Probe};

use super::file::{device_size, remeasure};
use super::{check_range, BlockDevice, DeviceError, ReadOp, WriteOp};

/// Alignment of offset, length and buffer address required for `O_DIRECT` requests.
const DIRECT_ALIGN: usize = 4096;
/// Submission queue entries per ring (the completion queue gets twice as many).
const RING_ENTRIES: u32 = 128;
/// Upper bound on the ring pool size.
const MAX_RINGS: usize = 4;
/// Largest transfer put in one entry; longer requests are carried out as a chain of chunks.
/// A multiple of `DIRECT_ALIGN` so chunking never breaks `O_DIRECT` alignment.
const MAX_CHUNK: usize = 1 << 30;
/// Largest run of adjacent writes gathered into one request.
const MAX_GATHER: usize = 4 << 20;
/// How often one entry is retried after `EINTR`/`EAGAIN` before the error is reported.
const MAX_RETRIES: u32 = 10_000;
/// How often a failing `io_uring_enter` is retried while the kernel owns our buffers.
const MAX_ENTER_FAILURES: u32 = 1_000;

/// A block device or image file driven through io_uring.
///
/// Two descriptors are opened on the same file: one with `O_DIRECT` (when the file system or
/// device accepts it) for requests whose offset and length are multiples of 4096, and a
/// buffered one for everything else. Both refer to the same inode, so the page cache stays
/// coherent (the kernel writes back and invalidates cached pages around direct I/O) and one
/// `fdatasync` covers writes made through either.
pub struct UringDevice {
    name: String,
    size: AtomicU64,
    buffered: File,
    direct: Option<File>,
    /// Cleared if the direct descriptor rejects a correctly aligned request with `EINVAL`.
    direct_enabled: AtomicBool,
    rings: Box<[Mutex<IoUring>]>,
    next_ring: AtomicUsize,
}

impl fmt::Debug for UringDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringDevice")
            .field("name", &self.name)
            .field("size", &self.size())
            .field("direct", &self.uses_direct_io())
            .field("rings", &self.rings.len())
            .finish_non_exhaustive()
    }
}

impl UringDevice {
    /// Opens `path` read-write, sets up the rings and measures the size.
    ///
    /// Fails with [`DeviceError::Open`] if io_uring is unavailable (old kernel, seccomp,
    /// `kernel.io_uring_disabled`) or lacks the read/write/fsync opcodes, so the caller can fall
    /// back to [`FileDevice`](super::FileDevice).
    pub fn open(path: &Path) -> Result<Self, DeviceError> {
        Self::open_with(path, true)
    }

    /// Like [`UringDevice::open`] but never uses `O_DIRECT`: every request goes through the
    /// page cache.
    pub fn open_buffered(path: &Path) -> Result<Self, DeviceError> {
        Self::open_with(path, false)
    }

    fn open_with(path: &Path, try_direct: bool) -> Result<Self, DeviceError> {
        let open_err = |source| DeviceError::Open {
            path: path.to_owned(),
            source,
        };
        let ring_count = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, MAX_RINGS);
        let rings = (0..ring_count)
            .map(|_| new_ring().map(Mutex::new))
            .collect::<io::Result<Vec<_>>>()
            .map_err(open_err)?
            .into_boxed_slice();

        let buffered = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(open_err)?;
        let size = device_size(&buffered).map_err(open_err)?;
        if !try_direct {
            return Ok(Self::new(path, size, buffered, None, rings));
        }
        let direct = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(file) => Some(file),
            // The file system does not support O_DIRECT (tmpfs, some FUSE mounts).
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!(path = %path.display(), "O_DIRECT rejected, using buffered I/O only");
                None
            }
            Err(err) => return Err(open_err(err)),
        };
        Ok(Self::new(path, size, buffered, direct, rings))
    }

    fn new(
        path: &Path,
        size: u64,
        buffered: File,
        direct: Option<File>,
        rings: Box<[Mutex<IoUring>]>,
    ) -> Self {
        Self {
            name: path.display().to_string(),
            size: AtomicU64::new(size),
            buffered,
            direct_enabled: AtomicBool::new(direct.is_some()),
            direct,
            rings,
            next_ring: AtomicUsize::new(0),
        }
    }

    /// Whether aligned requests currently bypass the page cache.
    pub fn uses_direct_io(&self) -> bool {
        self.direct.is_some() && self.direct_enabled.load(Ordering::Relaxed)
    }

    /// An idle ring if there is one, else waits for one (round-robin start).
    fn ring(&self) -> MutexGuard<'_, IoUring> {
        let count = self.rings.len();
        let start = self.next_ring.fetch_add(1, Ordering::Relaxed) % count;
        for i in 0..count {
            match self.rings[(start + i) % count].try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(poisoned)) => return poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.rings[start]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn fds(&self) -> Fds {
        Fds {
            buffered: self.buffered.as_raw_fd(),
            direct: self.direct.as_ref().map_or(-1, AsRawFd::as_raw_fd),
        }
    }

    /// Runs `segs` (and owns `bounces` until every entry has completed).
    fn run(&self, segs: Vec<Seg>, bounces: Vec<AlignedBuf>) -> Result<Vec<AlignedBuf>, SegError> {
        let mut ring = self.ring();
        let mut runner = Runner {
            ring: &mut ring,
            fds: self.fds(),
            segs,
            bounces,
            outstanding: 0,
            direct_rejected: false,
        };
        let result = runner.run();
        if runner.direct_rejected && self.direct_enabled.swap(false, Ordering::Relaxed) {
            tracing::warn!(device = %self.name, "O_DIRECT request rejected with EINVAL, using buffered I/O from now on");
        }
        result.map(|()| std::mem::take(&mut runner.bounces))
    }

    fn io_error(
        &self,
        op: &'static str,
        offset: u64,
        len: usize,
        source: io::Error,
    ) -> DeviceError {
        DeviceError::Io {
            op,
            device: self.name.clone(),
            offset,
            len,
            source,
        }
    }
}

/// Creates one ring and checks that it supports the opcodes we use.
fn new_ring() -> io::Result<IoUring> {
    let ring = IoUring::new(RING_ENTRIES)?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    let needed = [opcode::Read::CODE, opcode::Write::CODE, opcode::Fsync::CODE];
    if needed.iter().all(|&code| probe.is_supported(code)) {
        Ok(ring)
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring lacks the READ, WRITE or FSYNC opcode",
        ))
    }
}

fn is_direct_aligned(offset: u64, len: usize) -> bool {
    offset.is_multiple_of(DIRECT_ALIGN as u64) && len.is_multiple_of(DIRECT_ALIGN)
}

fn is_addr_aligned(ptr: *const u8) -> bool {
    ptr.addr().is_multiple_of(DIRECT_ALIGN)
}

impl BlockDevice for UringDevice {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    fn refresh_size(&self) -> Result<u64, DeviceError> {
        remeasure(&self.buffered, &self.name, &self.size)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        self.read_batch(&mut [ReadOp { offset, buf }])
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        self.write_batch(&[WriteOp { offset, data }])
    }

    fn flush(&self) -> Result<(), DeviceError> {
        // Both descriptors share one inode, so one fdatasync covers writes made through either
        // (and on a block device it also issues the cache flush to the hardware).
        let sync = Seg {
            op: 0,
            kind: Kind::Sync,
            via: Via::Buffered,
            ptr: std::ptr::null_mut(),
            remaining: 0,
            offset: 0,
            retries: 0,
        };
        self.run(vec![sync], Vec::new())
            .map(drop)
            .map_err(|err| self.io_error("flush", 0, 0, err.source))
    }

    fn read_batch(&self, ops: &mut [ReadOp<'_>]) -> Result<(), DeviceError> {
        for op in ops.iter() {
            check_range("read", &self.name, op.offset, op.buf.len(), self.size())?;
        }
        let direct = self.uses_direct_io();
        let mut segs = Vec::with_capacity(ops.len());
        let mut bounces = Vec::new();
        // (op index, bounce index) pairs to copy out once the reads have completed.
        let mut copy_back = Vec::new();
        for (i, op) in ops.iter_mut().enumerate() {
            let len = op.buf.len();
            if len == 0 {
                continue;
            }
            let (ptr, via) = if direct && is_direct_aligned(op.offset, len) {
                if is_addr_aligned(op.buf.as_ptr()) {
                    (op.buf.as_mut_ptr(), Via::Direct)
                } else {
                    let bounce = AlignedBuf::zeroed(len)
                        .map_err(|err| self.io_error("read", op.offset, len, err))?;
                    let ptr = bounce.as_ptr();
                    copy_back.push((i, bounces.len()));
                    bounces.push(bounce);
                    (ptr, Via::Direct)
                }
            } else {
                (op.buf.as_mut_ptr(), Via::Buffered)
            };
            segs.push(Seg::new(i, Kind::Read, via, ptr, len, op.offset));
        }
        if segs.is_empty() {
            return Ok(());
        }
        let bounces = self.run(segs, bounces).map_err(|err| {
            let op = &ops[err.op];
            self.io_error("read", op.offset, op.buf.len(), err.source)
        })?;
        for (op, bounce) in copy_back {
            ops[op].buf.copy_from_slice(bounces[bounce].as_slice());
        }
        Ok(())
    }

    /// Adjacent `O_DIRECT` writes are gathered into one request of up to [`MAX_GATHER`] bytes:
    /// a commit's new blocks mostly lie side by side, and one large write costs the device far
    /// less than many small ones (the writes of a batch are unordered either way).
    fn write_batch(&self, ops: &[WriteOp<'_>]) -> Result<(), DeviceError> {
        for op in ops {
            check_range("write", &self.name, op.offset, op.data.len(), self.size())?;
        }
        let direct = self.uses_direct_io();
        let mut order: Vec<usize> = (0..ops.len())
            .filter(|&i| !ops[i].data.is_empty())
            .collect();
        order.sort_by_key(|&i| ops[i].offset);
        // The offset and length of each request, for error reports.
        let mut requests: Vec<(u64, usize)> = Vec::with_capacity(order.len());
        let mut segs = Vec::with_capacity(order.len());
        let mut bounces = Vec::new();
        let mut rest = order.as_slice();
        while let Some(&first) = rest.first() {
            let op = ops[first];
            let run = if direct && is_direct_aligned(op.offset, op.data.len()) {
                gather_run(ops, rest)
            } else {
                1
            };
            let (run, after) = rest.split_at(run);
            rest = after;
            let len: usize = run.iter().map(|&i| ops[i].data.len()).sum();
            let io_error = |err| self.io_error("write", op.offset, len, err);
            // The kernel only reads through the pointer of a write, so casting away const is
            // sound.
            let (ptr, via) = if run.len() > 1 {
                let parts: Vec<&[u8]> = run.iter().map(|&i| ops[i].data).collect();
                let bounce = AlignedBuf::copy_of(&parts).map_err(io_error)?;
                let ptr = bounce.as_ptr();
                bounces.push(bounce);
                (ptr, Via::Direct)
            } else if direct && is_direct_aligned(op.offset, len) {
                if is_addr_aligned(op.data.as_ptr()) {
                    (op.data.as_ptr().cast_mut(), Via::Direct)
                } else {
                    let bounce = AlignedBuf::copy_of(&[op.data]).map_err(io_error)?;
                    let ptr = bounce.as_ptr();
                    bounces.push(bounce);
                    (ptr, Via::Direct)
                }
            } else {
                (op.data.as_ptr().cast_mut(), Via::Buffered)
            };
            segs.push(Seg::new(
                requests.len(),
                Kind::Write,
                via,
                ptr,
                len,
                op.offset,
            ));
            requests.push((op.offset, len));
        }
        if segs.is_empty() {
            return Ok(());
        }
        self.run(segs, bounces).map(drop).map_err(|err| {
            let (offset, len) = requests[err.op];
            self.io_error("write", offset, len, err.source)
        })
    }
}

/// How many of the writes `order` (indexes into `ops`, sorted by offset; the first one
/// `O_DIRECT`-aligned) lie end to end, each aligned, within [`MAX_GATHER`] bytes.
fn gather_run(ops: &[WriteOp<'_>], order: &[usize]) -> usize {
    let mut end = ops[order[0]].offset;
    let mut total = 0;
    order
        .iter()
        .take_while(|&&i| {
            let op = ops[i];
            let fits = op.offset == end
                && is_direct_aligned(op.offset, op.data.len())
                && total + op.data.len() <= MAX_GATHER;
            if fits {
                end += op.data.len() as u64;
                total += op.data.len();
            }
            fits
        })
        .count()
        .max(1)
}

/// Raw descriptors of the two opened files (`direct` is -1 when there is none).
#[derive(Debug, Clone, Copy)]
struct Fds {
    buffered: RawFd,
    direct: RawFd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Sync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Direct,
    Buffered,
}

/// The part of one caller op that is still to be transferred.
#[derive(Debug)]
struct Seg {
    /// Index of the caller's op, for error reports.
    op: usize,
    kind: Kind,
    via: Via,
    /// Next byte to transfer (into for reads, from for writes).
    ptr: *mut u8,
    remaining: usize,
    offset: u64,
    retries: u32,
}

impl Seg {
    fn new(op: usize, kind: Kind, via: Via, ptr: *mut u8, len: usize, offset: u64) -> Self {
        Self {
            op,
            kind,
            via,
            ptr,
            remaining: len,
            offset,
            retries: 0,
        }
    }

    /// Length of the entry submitted for this segment's current state.
    fn chunk(&self) -> usize {
        self.remaining.min(MAX_CHUNK)
    }

    fn entry(&self, fds: Fds, user_data: u64) -> squeue::Entry {
        let fd = types::Fd(match self.via {
            Via::Direct => fds.direct,
            Via::Buffered => fds.buffered,
        });
        #[allow(clippy::cast_possible_truncation)] // chunk() <= MAX_CHUNK < u32::MAX
        let len = self.chunk() as u32;
        let entry = match self.kind {
            Kind::Read => opcode::Read::new(fd, self.ptr, len)
                .offset(self.offset)
                .build(),
            Kind::Write => opcode::Write::new(fd, self.ptr.cast_const(), len)
                .offset(self.offset)
                .build(),
            Kind::Sync => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        };
        entry.user_data(user_data)
    }
}

/// The first failure of a batch.
#[derive(Debug)]
struct SegError {
    op: usize,
    source: io::Error,
}

/// Drives one batch on one locked ring.
///
/// Invariant: `outstanding` counts entries pushed onto the submission queue whose completion has
/// not been reaped yet. While it is non-zero the kernel may access the memory behind those
/// entries' pointers: the caller's buffers (borrowed by the caller's frame, which outlives the
/// runner) and `bounces` (owned here). `Drop` waits for every outstanding completion before the
/// fields, and with them the bounce buffers, are dropped.
struct Runner<'r> {
    ring: &'r mut IoUring,
    fds: Fds,
    segs: Vec<Seg>,
    bounces: Vec<AlignedBuf>,
    outstanding: usize,
    direct_rejected: bool,
}

impl Runner<'_> {
    fn run(&mut self) -> Result<(), SegError> {
        let capacity = self.ring.params().sq_entries() as usize;
        let mut ready: VecDeque<usize> = (0..self.segs.len()).collect();
        let mut failure: Option<SegError> = None;
        let mut completed = Vec::new();
        loop {
            if failure.is_none() {
                self.push_ready(&mut ready, capacity);
            }
            if self.outstanding == 0 {
                break;
            }
            self.submit_and_wait_all();
            self.reap(&mut completed);
            for (index, result) in completed.drain(..) {
                self.complete(index, result, &mut ready, &mut failure);
            }
        }
        match failure {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Pushes ready segments while the rings have room (`outstanding` never exceeds the
    /// submission queue size, and the completion queue is twice that, so it cannot overflow).
    fn push_ready(&mut self, ready: &mut VecDeque<usize>, capacity: usize) {
        let mut sq = self.ring.submission();
        while self.outstanding < capacity {
            let Some(index) = ready.pop_front() else {
                break;
            };
            let entry = self.segs[index].entry(self.fds, index as u64);
            // SAFETY: the entry points into either a caller buffer borrowed for the whole
            // batch call or a bounce buffer owned by `self.bounces`, and the fd belongs to a
            // `File` owned by the device, which the caller borrows for the whole call. The
            // runner does not let go of either before the entry's completion has been reaped
            // (`run` loops until `outstanding` is zero and `Drop` drains the rest), so the
            // memory and fd stay valid for the whole operation.
            if unsafe { sq.push(&entry) }.is_err() {
                ready.push_front(index);
                break;
            }
            self.outstanding += 1;
        }
        // Dropping `sq` publishes the new tail to the kernel.
    }

    /// Submits everything queued and waits until every outstanding entry has completed (or the
    /// wait was interrupted; the caller loops).
    fn submit_and_wait_all(&mut self) {
        let mut failures = 0;
        loop {
            // The kernel counts completions already sitting in the queue towards `want`.
            match self.ring.submit_and_wait(self.outstanding) {
                Ok(_) => return,
                Err(err)
                    if matches!(
                        err.raw_os_error(),
                        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                    ) =>
                {
                    // Interrupted, or the kernel is short of resources / has completions to
                    // hand over: what has completed is reaped by the caller, then it retries.
                    if err.raw_os_error() != Some(libc::EINTR) {
                        std::thread::yield_now();
                    }
                    return;
                }
                Err(err) => {
                    // The kernel may own our buffers, so we must not return to the caller
                    // before their completions arrive. This cannot happen on a ring we set up
                    // ourselves; if it does anyway, giving up is the only sound option.
                    failures += 1;
                    tracing::error!(error = %err, failures, "io_uring_enter failed with I/O in flight");
                    if failures >= MAX_ENTER_FAILURES {
                        tracing::error!(
                            "io_uring_enter keeps failing with I/O in flight; aborting"
                        );
                        std::process::abort();
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Moves every available completion into `out` as (segment index, result).
    fn reap(&mut self, out: &mut Vec<(usize, i32)>) {
        for cqe in self.ring.completion() {
            self.outstanding -= 1;
            #[allow(clippy::cast_possible_truncation)] // user_data is a segment index we set
            out.push((cqe.user_data() as usize, cqe.result()));
        }
    }

    fn complete(
        &mut self,
        index: usize,
        result: i32,
        ready: &mut VecDeque<usize>,
        failure: &mut Option<SegError>,
    ) {
        let Some(seg) = self.segs.get_mut(index) else {
            return;
        };
        let op = seg.op;
        let fail = |failure: &mut Option<SegError>, source| {
            failure.get_or_insert(SegError { op, source });
        };
        if result < 0 {
            let errno = -result;
            if matches!(errno, libc::EINTR | libc::EAGAIN) && seg.retries < MAX_RETRIES {
                seg.retries += 1;
                ready.push_back(index);
            } else if errno == libc::EINVAL && seg.via == Via::Direct {
                // The device refuses this direct request (e.g. a larger logical block size):
                // redo it buffered; the device stops using O_DIRECT.
                self.direct_rejected = true;
                seg.via = Via::Buffered;
                ready.push_back(index);
            } else {
                fail(failure, io::Error::from_raw_os_error(errno));
            }
            return;
        }
        if seg.kind == Kind::Sync {
            return;
        }
        let done = (result as usize).min(seg.chunk());
        if done == 0 {
            let source = match seg.kind {
                Kind::Read => io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read hit the end of the file before the request was filled",
                ),
                _ => io::Error::new(io::ErrorKind::WriteZero, "write transferred no bytes"),
            };
            fail(failure, source);
            return;
        }
        seg.remaining -= done;
        seg.offset += done as u64;
        seg.ptr = seg.ptr.wrapping_add(done);
        if seg.remaining > 0 {
            if seg.via == Via::Direct
                && !(is_direct_aligned(seg.offset, seg.remaining) && is_addr_aligned(seg.ptr))
            {
                // A short direct transfer left an unaligned remainder.
                seg.via = Via::Buffered;
            }
            ready.push_back(index);
        }
    }
}

impl Drop for Runner<'_> {
    fn drop(&mut self) {
        // Normally zero already; non-zero only if `run` was left by a panic.
        let mut completed = Vec::new();
        while self.outstanding > 0 {
            self.submit_and_wait_all();
            self.reap(&mut completed);
            completed.clear();
        }
    }
}

/// A zero-initialised heap buffer aligned for `O_DIRECT`.
struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: `AlignedBuf` uniquely owns its allocation, like a `Box<[u8]>`.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` (> 0) zeroed bytes aligned to `DIRECT_ALIGN`.
    fn zeroed(len: usize) -> io::Result<Self> {
        let layout = Self::layout(len)?;
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        Ok(Self { ptr, layout })
    }

    /// Allocates a copy of `parts`, one after another, aligned to `DIRECT_ALIGN`, without
    /// zeroing it first (the copy is most of a write's own work).
    fn copy_of(parts: &[&[u8]]) -> io::Result<Self> {
        let len: usize = parts.iter().map(|part| part.len()).sum();
        if len == 0 {
            return Self::zeroed(0);
        }
        let layout = Self::layout(len)?;
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        let mut at = 0;
        for part in parts {
            // SAFETY: `ptr` is a fresh allocation of `layout.size()` == `len` bytes, the sum of
            // the parts' lengths, so each part's copy lands inside it after the previous ones
            // and overlaps no part; after the last every byte of the allocation is initialised.
            unsafe {
                std::ptr::copy_nonoverlapping(part.as_ptr(), ptr.as_ptr().add(at), part.len())
            };
            at += part.len();
        }
        Ok(Self { ptr, layout })
    }

    fn layout(len: usize) -> io::Result<Layout> {
        Layout::from_size_align(len.max(1), DIRECT_ALIGN)
            .map_err(|err| io::Error::new(io::ErrorKind::OutOfMemory, err))
    }

    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is a live, initialised (zeroed or copied at allocation) allocation of
        // `layout.size()` bytes owned by `self`, and the shared borrow of `self` prevents
        // mutation through safe code for the slice's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was returned by `alloc_zeroed` or `alloc` with `self.layout` and is freed
        // only here.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}
