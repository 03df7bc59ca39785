//! FUSE over io_uring: serving the kernel's per-CPU request queues (Linux 6.14+, protocol
//! 7.42, `Documentation/filesystems/fuse/fuse-io-uring.rst`). Added by AegisFS, see
//! `PATCHES.md`.
//!
//! When the filesystem asks for `FUSE_OVER_IO_URING` in `init` and the kernel grants it, the
//! session serves every request but FORGET and INTERRUPT through ring entries instead of reads
//! and writes on `/dev/fuse`. The kernel keeps one queue per possible CPU and puts a request
//! on the queue of the CPU its sender runs on, so a request is answered by a thread on that
//! CPU, without waking one elsewhere.
//!
//! Each serving thread owns one io_uring instance and one ring entry registered on one queue,
//! and is pinned to that queue's CPU. A request arrives as the completion of the entry's last
//! command; the next command, COMMIT_AND_FETCH, hands the reply over and waits for the next
//! request in one submission. Several threads serve each queue, so a request that blocks (on
//! the device, on a lock) holds one entry, not the CPU's whole queue.
//!
//! An entry is two buffers the kernel is given at registration:
//! - the header area (`struct fuse_uring_req_header`): the request's `fuse_in_header`, its
//!   operation's fixed-size argument (`op_in`), and `fuse_uring_ent_in_out` with the commit
//!   id and the payload's length; the reply's `fuse_out_header` goes back at its start;
//! - the payload area: the request's other arguments (names, written data) on the way in, the
//!   reply's body on the way out.
//!
//! fuser parses requests as `/dev/fuse` delivers them, one contiguous message. The payload area
//! is preceded by room for the two headers, so a request becomes one message by copying its
//! headers (at most 168 bytes) in front of its payload; written data is never moved.

use std::fmt;
use std::io;
use std::io::IoSlice;
use std::mem::size_of;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::ptr;
use std::sync::Arc;
use std::thread;
use std::thread::JoinHandle;

use io_uring::IoUring;
use io_uring::cqueue;
use io_uring::opcode;
use io_uring::squeue;
use io_uring::types;
use log::error;
use log::warn;
use nix::unistd::Uid;
use parking_lot::Condvar;
use parking_lot::Mutex;

use crate::Filesystem;
use crate::ReplyEmpty;
use crate::channel::Channel;
use crate::channel::ChannelSender;
use crate::ll::Operation;
use crate::ll::fuse_abi as abi;
use crate::mnt::Mount;
use crate::reply::ReplySender;
use crate::request::RequestWithSender;
use crate::session::FilesystemHolder;
use crate::session::SessionACL;
use crate::session::SessionEventLoop;

/// `enum fuse_uring_cmd`.
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;

/// `struct fuse_uring_req_header`: `in_out[128]`, `op_in[128]`, `fuse_uring_ent_in_out`.
const HEADER_AREA: usize = 288;
const OP_IN: usize = 128;
const OP_IN_SIZE: usize = 128;
/// `fuse_uring_ent_in_out.commit_id` and `.payload_sz`.
const COMMIT_ID: usize = 256 + 8;
const PAYLOAD_SIZE: usize = 256 + 16;

const IN_HEADER: usize = size_of::<abi::fuse_in_header>();
const OUT_HEADER: usize = size_of::<abi::fuse_out_header>();
/// Room in front of the payload area for a request's two headers.
const PREFIX: usize = IN_HEADER + OP_IN_SIZE;

const _: () = assert!(size_of::<squeue::Entry128>() == 128);
const _: () = assert!(PREFIX % 8 == 0);

/// Whether this process can set up the io_uring instances the transport needs (128-byte
/// submissions); the `io_uring_disabled` sysctl, a seccomp filter or an old kernel say no.
pub(crate) fn available() -> io::Result<()> {
    IoUring::<squeue::Entry128, cqueue::Entry>::builder()
        .build(2)
        .map(drop)
}

/// The kernel's queues: one per possible CPU (`/sys/devices/system/cpu/possible`, "0-N").
pub(crate) fn queue_count() -> io::Result<usize> {
    let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let last = possible
        .trim()
        .rsplit(['-', ','])
        .next()
        .unwrap_or_default();
    last.parse::<usize>().map(|cpu| cpu + 1).map_err(|err| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/sys/devices/system/cpu/possible holds {possible:?}: {err}"),
        )
    })
}

/// What the serving threads share with the session.
pub(crate) struct RingServing<FS: Filesystem> {
    pub(crate) channel: Channel,
    pub(crate) filesystem: Arc<FilesystemHolder<FS>>,
    pub(crate) allowed: SessionACL,
    pub(crate) session_owner: Uid,
    /// Bytes of each entry's payload area: at least the largest request or reply.
    pub(crate) payload_size: usize,
    pub(crate) threads_per_queue: usize,
    /// Nice value of each serving thread, if not the inherited one.
    pub(crate) thread_nice: Option<i32>,
    /// Unmounted when a thread fails, so the session ends: the kernel holds every request
    /// until each queue has an entry.
    pub(crate) mount: Arc<Mutex<Option<Mount>>>,
}

impl<FS: Filesystem> RingServing<FS> {
    /// Starts `threads_per_queue` serving threads on each queue.
    pub(crate) fn spawn(self) -> io::Result<Vec<JoinHandle<io::Result<()>>>> {
        let queues = queue_count()?;
        let this = Arc::new(self);
        let mut threads = Vec::with_capacity(queues * this.threads_per_queue);
        for queue in 0..queues {
            let qid = u16::try_from(queue)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "more than 65536 CPUs"))?;
            for index in 0..this.threads_per_queue {
                let serving = Arc::clone(&this);
                let name = format!("fuser-ring-{queue}.{index}");
                let event_loop = SessionEventLoop {
                    thread_name: name.clone(),
                    ch: serving.channel.clone(),
                    filesystem: Arc::clone(&serving.filesystem),
                    allowed: serving.allowed,
                    session_owner: serving.session_owner,
                };
                let spawned = thread::Builder::new()
                    .name(name)
                    .spawn(move || serving.serve_entry(qid, &event_loop));
                match spawned {
                    Ok(thread) => threads.push(thread),
                    Err(err) => {
                        // The queues served so far end with the mount.
                        unmount(&this.mount);
                        return Err(err);
                    }
                }
            }
        }
        Ok(threads)
    }

    /// Registers one entry on queue `qid` and serves the requests it brings until the
    /// connection ends.
    fn serve_entry(&self, qid: u16, event_loop: &SessionEventLoop<FS>) -> io::Result<()> {
        // A CPU that is possible but offline has a queue nobody sends on; it still needs an
        // entry, on any CPU.
        let _ = pin_to_cpu(usize::from(qid));
        if let Some(nice) = self.thread_nice {
            if let Err(err) = set_thread_nice(nice) {
                warn!("FUSE ring queue {qid}: cannot set the serving thread's nice to {nice}: {err}");
            }
        }
        let entry = Arc::new(Entry::new(self.payload_size));
        let result = self.serve(qid, event_loop, &entry);
        if let Err(err) = &result {
            error!("FUSE ring queue {qid}: {err}; unmounting");
            // The kernel may still hold the entry's buffers.
            std::mem::forget(entry);
            unmount(&self.mount);
        }
        result
    }

    fn serve(
        &self,
        qid: u16,
        event_loop: &SessionEventLoop<FS>,
        entry: &Arc<Entry>,
    ) -> io::Result<()> {
        let device = types::Fd(self.channel.as_fd().as_raw_fd());
        let mut ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder().build(2)?;
        let iovecs = [
            libc::iovec {
                iov_base: entry.header.ptr.cast(),
                iov_len: HEADER_AREA,
            },
            libc::iovec {
                iov_base: entry.payload_ptr().cast(),
                iov_len: entry.payload_capacity,
            },
        ];
        let mut next = register(device, qid, &iovecs);
        // Whether `next` is a commit (the entry was registered) rather than the registration.
        let mut committed = false;
        loop {
            // SAFETY: the buffers and the iovecs outlive the submission: the iovecs are read
            // while it is issued, below in this frame; the buffers stay until the connection
            // ends them (a completion with ENOTCONN), or are leaked when this thread fails.
            unsafe { ring.submission().push(&next) }
                .map_err(|_| io::Error::other("submission queue full"))?;
            let result = loop {
                match ring.submit_and_wait(1) {
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => return Err(err),
                    Ok(_) => {}
                }
                if let Some(completion) = ring.completion().next() {
                    break completion.result();
                }
            };
            match -result {
                0 => {}
                // The connection ended (unmount, abort), or the ring is going away with it.
                libc::ENOTCONN | libc::ECANCELED | libc::ENODEV | libc::ECONNABORTED => {
                    return Ok(());
                }
                // A commit the kernel no longer has the entry for: its queue was torn down
                // while the reply was being made.
                libc::ENOENT if committed => {
                    warn!("FUSE ring queue {qid}: the kernel released the entry; its thread ends");
                    return Ok(());
                }
                errno => return Err(io::Error::from_raw_os_error(errno)),
            }
            let commit_id = entry.answer(event_loop, &self.channel.sender());
            next = commit(device, qid, commit_id);
            committed = true;
        }
    }
}

/// Ends the session after a failure of the ring: without an entry on every queue, the kernel
/// would hold every request.
fn unmount(mount: &Mutex<Option<Mount>>) {
    if let Some(mount) = mount.lock().take() {
        if let Err(err) = mount.umount() {
            error!("unmount after the FUSE ring failed: {err}");
        }
    }
}

/// One entry's buffers, and the hand-over of the reply to the request it holds.
struct Entry {
    header: Buffer,
    /// [`PREFIX`] bytes, then the payload area.
    buffer: Buffer,
    payload_capacity: usize,
    handover: Mutex<Handover>,
    replied: Condvar,
}

#[derive(Default)]
struct Handover {
    /// Whether a reply may go straight into the payload area: not while the request being
    /// served borrows it.
    payload_free: bool,
    reply: Option<Reply>,
}

struct Reply {
    out_header: [u8; OUT_HEADER],
    body_len: usize,
    /// The body, when it could not go straight into the payload area.
    staged: Option<Vec<u8>>,
}

impl Entry {
    fn new(payload_capacity: usize) -> Self {
        Self {
            header: Buffer::new(HEADER_AREA),
            buffer: Buffer::new(PREFIX + payload_capacity),
            payload_capacity,
            handover: Mutex::new(Handover::default()),
            replied: Condvar::new(),
        }
    }

    fn payload_ptr(&self) -> *mut u8 {
        // SAFETY: the buffer is PREFIX + payload_capacity bytes long.
        unsafe { self.buffer.ptr.add(PREFIX) }
    }

    fn header_u32(&self, at: usize) -> u32 {
        let mut field = [0; 4];
        // SAFETY: `at + 4` is inside the header area, which the kernel does not write while
        // the entry is this thread's (between a completion and the next commit).
        unsafe { ptr::copy_nonoverlapping(self.header.ptr.add(at), field.as_mut_ptr(), 4) };
        u32::from_ne_bytes(field)
    }

    fn header_u64(&self, at: usize) -> u64 {
        let mut field = [0; 8];
        // SAFETY: as in `header_u32`.
        unsafe { ptr::copy_nonoverlapping(self.header.ptr.add(at), field.as_mut_ptr(), 8) };
        u64::from_ne_bytes(field)
    }

    /// Serves the request the kernel just put in the entry and readies its reply for commit.
    /// Returns the commit id.
    fn answer<FS: Filesystem>(
        self: &Arc<Self>,
        event_loop: &SessionEventLoop<FS>,
        device: &ChannelSender,
    ) -> u64 {
        let commit_id = self.header_u64(COMMIT_ID);
        let unique = self.header_u64(8);
        match self.message() {
            Ok((start, end)) => {
                {
                    let mut handover = self.handover.lock();
                    handover.payload_free = end == PREFIX;
                    handover.reply = None;
                }
                // SAFETY: [start, end) was written by the kernel or by `message`, and nothing
                // writes it while this borrow lives: replies go to the payload area only when
                // it lies outside (`payload_free`), and the kernel does not touch the entry
                // before the commit.
                let message =
                    unsafe { std::slice::from_raw_parts(self.buffer.ptr.add(start), end - start) };
                let sender = ReplySender::Ring(RingSender {
                    entry: Arc::clone(self),
                    device: device.clone(),
                });
                match RequestWithSender::new(sender, message) {
                    Some(request) => match request.request.operation() {
                        // The connection ends; what remains is the session's.
                        Ok(Operation::Destroy(_)) => request.reply::<ReplyEmpty>().ok(),
                        _ => request.dispatch(event_loop),
                    },
                    None => self.fail(unique, libc::EIO),
                }
            }
            Err(problem) => {
                error!("FUSE ring request {unique}: {problem}");
                {
                    let mut handover = self.handover.lock();
                    handover.payload_free = true;
                    handover.reply = None;
                }
                self.fail(unique, libc::EIO);
            }
        }
        self.stage_reply();
        commit_id
    }

    /// Makes the request one `/dev/fuse` message: copies its headers in front of its payload.
    /// The message's bounds in the buffer.
    fn message(&self) -> Result<(usize, usize), String> {
        let len = self.header_u32(0) as usize;
        let payload_len = self.header_u32(PAYLOAD_SIZE) as usize;
        if payload_len > self.payload_capacity {
            return Err(format!(
                "payload of {payload_len} bytes exceeds the entry's {}",
                self.payload_capacity
            ));
        }
        let op_len = len
            .checked_sub(IN_HEADER + payload_len)
            .filter(|&op_len| op_len <= OP_IN_SIZE && op_len % 8 == 0)
            .ok_or_else(|| {
                format!("a request of {len} bytes cannot carry a payload of {payload_len}")
            })?;
        let start = PREFIX - IN_HEADER - op_len;
        // SAFETY: both ranges lie inside their buffers (start + IN_HEADER + op_len = PREFIX),
        // the buffers are distinct allocations, and neither is borrowed or written by anyone
        // else while the entry is this thread's.
        unsafe {
            ptr::copy_nonoverlapping(self.header.ptr, self.buffer.ptr.add(start), IN_HEADER);
            ptr::copy_nonoverlapping(
                self.header.ptr.add(OP_IN),
                self.buffer.ptr.add(start + IN_HEADER),
                op_len,
            );
        }
        Ok((start, PREFIX + payload_len))
    }

    /// Takes a reply from fuser, whichever thread sends it.
    fn hand_over(&self, data: &[IoSlice<'_>]) -> io::Result<()> {
        let total: usize = data.iter().map(|slice| slice.len()).sum();
        let mut handover = self.handover.lock();
        if handover.reply.is_some() {
            return Err(io::Error::other("a second reply to one request"));
        }
        let mut out_header = [0; OUT_HEADER];
        let Some(body_len) = total.checked_sub(OUT_HEADER) else {
            return Err(io::Error::other("a reply shorter than its header"));
        };
        if body_len > self.payload_capacity {
            let unique = u64::from_ne_bytes(out_header_unique(data));
            drop(handover);
            self.fail(unique, libc::EIO);
            return Err(io::Error::other(format!(
                "a reply of {body_len} bytes exceeds the ring entry's {}",
                self.payload_capacity
            )));
        }
        let mut staged = (!handover.payload_free).then(|| Vec::with_capacity(body_len));
        let mut at = 0;
        for slice in data {
            let mut bytes: &[u8] = slice;
            if at < OUT_HEADER {
                let taken = (OUT_HEADER - at).min(bytes.len());
                out_header[at..at + taken].copy_from_slice(&bytes[..taken]);
                at += taken;
                bytes = &bytes[taken..];
            }
            match &mut staged {
                Some(staged) => staged.extend_from_slice(bytes),
                // SAFETY: the body ends within the payload area (checked above); the request
                // does not borrow it (`payload_free`), the kernel does not touch it before the
                // commit, and the lock keeps other senders out.
                None => unsafe {
                    ptr::copy_nonoverlapping(
                        bytes.as_ptr(),
                        self.payload_ptr().add(at - OUT_HEADER),
                        bytes.len(),
                    );
                },
            }
            at += bytes.len();
        }
        handover.reply = Some(Reply {
            out_header,
            body_len,
            staged,
        });
        self.replied.notify_one();
        Ok(())
    }

    /// Answers request `unique` with `errno`.
    fn fail(&self, unique: u64, errno: i32) {
        let mut out_header = [0; OUT_HEADER];
        out_header[..4].copy_from_slice(&(OUT_HEADER as u32).to_ne_bytes());
        out_header[4..8].copy_from_slice(&(-errno).to_ne_bytes());
        out_header[8..].copy_from_slice(&unique.to_ne_bytes());
        let mut handover = self.handover.lock();
        handover.reply = Some(Reply {
            out_header,
            body_len: 0,
            staged: None,
        });
        self.replied.notify_one();
    }

    /// Waits for the reply (fuser sends one for every request, from its `Drop` if the
    /// filesystem does not) and puts it where the kernel reads it.
    fn stage_reply(&self) {
        let reply = {
            let mut handover = self.handover.lock();
            loop {
                if let Some(reply) = handover.reply.take() {
                    break reply;
                }
                self.replied.wait(&mut handover);
            }
        };
        // SAFETY: the request's borrow of the buffer has ended (it was dispatched and
        // dropped), the staged body fits the payload area (checked in `hand_over`), and the
        // header area is the entry's until the commit.
        unsafe {
            if let Some(staged) = &reply.staged {
                ptr::copy_nonoverlapping(staged.as_ptr(), self.payload_ptr(), staged.len());
            }
            ptr::copy_nonoverlapping(reply.out_header.as_ptr(), self.header.ptr, OUT_HEADER);
            let body_len = (reply.body_len as u32).to_ne_bytes();
            ptr::copy_nonoverlapping(body_len.as_ptr(), self.header.ptr.add(PAYLOAD_SIZE), 4);
        }
    }
}

/// The `unique` field of a reply's `fuse_out_header`, gathered from its slices.
fn out_header_unique(data: &[IoSlice<'_>]) -> [u8; 8] {
    let mut unique = [0; 8];
    let bytes = data.iter().flat_map(|slice| slice.iter()).skip(8).take(8);
    for (to, from) in unique.iter_mut().zip(bytes) {
        *to = *from;
    }
    unique
}

/// Sends replies into the ring entry that carried their request.
#[derive(Clone)]
pub(crate) struct RingSender {
    entry: Arc<Entry>,
    /// For what replies do besides sending: backing files are registered on the device.
    device: ChannelSender,
}

impl fmt::Debug for RingSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingSender").finish_non_exhaustive()
    }
}

impl RingSender {
    pub(crate) fn send(&self, data: &[IoSlice<'_>]) -> io::Result<()> {
        self.entry.hand_over(data)
    }

    pub(crate) fn device(&self) -> &ChannelSender {
        &self.device
    }
}

/// An 8-byte aligned, zeroed allocation that the kernel and the entry's threads write through
/// raw pointers, under the ring protocol's rules.
struct Buffer {
    ptr: *mut u8,
    words: usize,
}

// SAFETY: plain memory; which side reads or writes which bytes when is ruled by the ring
// protocol and the entry's hand-over (see `Entry`).
unsafe impl Send for Buffer {}
// SAFETY: as above.
unsafe impl Sync for Buffer {}

impl Buffer {
    fn new(bytes: usize) -> Self {
        let words = bytes.div_ceil(8);
        let memory: Box<[u64]> = vec![0; words].into_boxed_slice();
        Self {
            ptr: Box::into_raw(memory).cast(),
            words,
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `Box::into_raw` of a `[u64]` of `words` elements.
        drop(unsafe {
            Box::from_raw(ptr::slice_from_raw_parts_mut(
                self.ptr.cast::<u64>(),
                self.words,
            ))
        });
    }
}

/// `struct fuse_uring_cmd_req { u64 flags; u64 commit_id; u16 qid; u8 padding[6]; }`.
fn command(qid: u16, commit_id: u64) -> [u8; 80] {
    let mut command = [0; 80];
    command[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    command[16..18].copy_from_slice(&qid.to_ne_bytes());
    command
}

fn register(device: types::Fd, qid: u16, iovecs: &[libc::iovec; 2]) -> squeue::Entry128 {
    let submission = opcode::UringCmd80::new(device, CMD_REGISTER)
        .cmd(command(qid, 0))
        .addr(Some(iovecs.as_ptr() as u64))
        .build();
    // REGISTER takes the iovec count in `sqe->len`, which `UringCmd80` does not set.
    // SAFETY: `Entry128` is `#[repr(C)]` over the 128 bytes of an SQE128 (asserted above),
    // any byte pattern is a valid value of it, and `len` is the u32 at offset 24 of
    // `struct io_uring_sqe`.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(submission) };
    raw[24..28].copy_from_slice(&(iovecs.len() as u32).to_ne_bytes());
    // SAFETY: as above.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
}

fn commit(device: types::Fd, qid: u16, commit_id: u64) -> squeue::Entry128 {
    opcode::UringCmd80::new(device, CMD_COMMIT_AND_FETCH)
        .cmd(command(qid, commit_id))
        .build()
}

/// Sets the calling thread's nice value: on Linux a nice value belongs to a thread, and
/// `PRIO_PROCESS` with `who` 0 names the calling one.
fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority only reads its integer arguments.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `cpu_set_t` is plain data for which all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked), so the bit is inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid set of the size passed.
    let result = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
