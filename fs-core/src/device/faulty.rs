//! `FaultyDevice`: a decorator for crash and fault tests.
//!
//! It owns the fault model the filesystem's crash tests rely on:
//!
//! - **Injected EIO** ([`FaultPlan`]): reads or writes overlapping chosen byte ranges, the Nth
//!   read/write/flush counted from when the plan was set, or every flush.
//! - **Bit flips**: a chosen bit flipped in the data returned by every read covering a chosen
//!   byte (silent corruption on the read path), or flipped in the durable image itself
//!   ([`FaultyDevice::corrupt`]).
//! - **Power cuts**: the wrapped device is the durable image. Writes are held in memory, in
//!   issue order, until a successful [`BlockDevice::flush`] applies them to the inner device (in
//!   order) and flushes it; reads see the pending writes laid over the image. A
//!   [`FaultyDevice::power_cut`] decides which pending writes reach the image ([`CutMode`]),
//!   after which every I/O fails with EIO until [`FaultyDevice::revive`].
//! - **Stalls**: writes to a chosen byte range wait until released
//!   ([`FaultyDevice::stall_writes`]), as on a device that stops answering for a while; other
//!   requests go on.
//!
//! Every injected failure is a [`DeviceError::Io`] whose source has `raw_os_error() ==
//! Some(libc::EIO)`. A failed (injected) write changes nothing; a failed (injected) flush
//! applies nothing and leaves the pending writes pending.

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{check_range, BlockDevice, DeviceError};

/// Sector size at which [`CutMode::Tear`] may split a write.
const TEAR_SECTOR: u64 = 512;

/// Flip bit `bit` (0 = least significant, taken modulo 8) of the byte at device offset `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitFlip {
    pub offset: u64,
    pub bit: u8,
}

impl BitFlip {
    fn mask(self) -> u8 {
        1 << (self.bit & 7)
    }
}

/// Which faults to inject. `Default` injects none.
///
/// Counting for the `fail_nth_*` fields is 1-based and restarts whenever a plan is set with
/// [`FaultyDevice::set_plan`] (or the device is created). Every request that reaches the device
/// counts, including ones failed by injection; requests rejected as out of range or made while
/// the power is cut do not. Each op of a batch counts as one request. Each `fail_nth_*` fires
/// once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// Reads overlapping any of these byte ranges fail with EIO (empty reads overlap nothing).
    pub read_error_ranges: Vec<Range<u64>>,
    /// Writes overlapping any of these byte ranges fail with EIO and change nothing.
    pub write_error_ranges: Vec<Range<u64>>,
    /// The Nth read fails with EIO.
    pub fail_nth_read: Option<u64>,
    /// The Nth write fails with EIO and changes nothing.
    pub fail_nth_write: Option<u64>,
    /// The Nth flush fails with EIO and applies nothing.
    pub fail_nth_flush: Option<u64>,
    /// Every flush fails with EIO and applies nothing.
    pub fail_every_flush: bool,
    /// Bits flipped in the data returned by every read covering them (after pending writes are
    /// laid over, so they corrupt whatever the read would have returned). The image is untouched.
    pub read_bit_flips: Vec<BitFlip>,
}

/// What survives a [`FaultyDevice::power_cut`] of the writes pending since the last flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// No pending write survives.
    DropAll,
    /// The first `n` pending writes (in issue order) survive; all of them if fewer are pending.
    KeepPrefix(usize),
    /// A subset chosen by a PRNG seeded with `seed` survives (each write independently with
    /// probability 1/2); then, with probability 1/2, one surviving write that spans a
    /// 512-byte device boundary is torn there, keeping only its part before or after it.
    /// The same seed and pending writes always give the same outcome.
    Tear { seed: u64 },
}

/// A write that only partly reached the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornWrite {
    /// Index of the write among the pending writes (0 = oldest).
    pub index: usize,
    /// The device byte range of the write that reached the image.
    pub kept: Range<u64>,
}

/// What a power cut did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CutReport {
    /// Number of writes pending when the power was cut.
    pub pending: usize,
    /// Indices (0 = oldest pending write), ascending, of the writes that reached the image,
    /// applied in this order. Includes the torn write, if any.
    pub survivors: Vec<usize>,
    /// The surviving write that was torn, if any.
    pub torn: Option<TornWrite>,
}

/// Counters since the device was created (not reset by [`FaultyDevice::set_plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultStats {
    /// Read requests that reached the device (including injected failures).
    pub reads: u64,
    /// Write requests that reached the device (including injected failures).
    pub writes: u64,
    /// Flush requests that reached the device (including injected failures).
    pub flushes: u64,
    /// Writes issued since the last successful flush, not yet on the inner device.
    pub pending_writes: usize,
    /// Failures injected by the plan (not counting EIO while the power is cut).
    pub injected_errors: u64,
    /// Power cuts so far.
    pub power_cuts: u64,
}

/// A device that injects faults into, and models power loss on, the device it wraps.
///
/// Batches use the trait's default op-by-op loop, so each op is one request and a batch stops
/// at its first failing op (earlier ops have taken effect, later ones were not attempted).
///
/// All requests are serialised by one lock, which keeps the fault model exact under
/// concurrency at the cost of parallelism (acceptable for a test device).
#[derive(Debug)]
pub struct FaultyDevice {
    inner: Arc<dyn BlockDevice>,
    name: String,
    size: AtomicU64,
    state: Mutex<State>,
    /// A stall of writes (a device that stops answering for a while).
    stall: Stall,
}

/// Writes overlapping `range` wait while it is set; `waiting` counts the writes waiting.
#[derive(Debug, Default)]
struct Stall {
    state: Mutex<StallState>,
    changed: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct StallState {
    range: Option<Range<u64>>,
    waiting: u64,
}

#[derive(Debug, Default)]
struct State {
    plan: FaultPlan,
    /// Requests counted since the plan was set: (reads, writes, flushes).
    since_plan: (u64, u64, u64),
    stats: FaultStats,
    pending: Vec<PendingWrite>,
    power_cut: bool,
}

#[derive(Debug)]
struct PendingWrite {
    offset: u64,
    data: Vec<u8>,
}

impl PendingWrite {
    fn range(&self) -> Range<u64> {
        self.offset..self.offset + self.data.len() as u64
    }
}

impl FaultyDevice {
    /// Wraps `inner` (the durable image) with no faults planned.
    pub fn new(inner: Arc<dyn BlockDevice>) -> Self {
        Self::with_plan(inner, FaultPlan::default())
    }

    /// Wraps `inner` (the durable image) with `plan` in force.
    pub fn with_plan(inner: Arc<dyn BlockDevice>, plan: FaultPlan) -> Self {
        Self {
            name: format!("faulty:{}", inner.name()),
            size: AtomicU64::new(inner.size()),
            inner,
            state: Mutex::new(State {
                plan,
                ..State::default()
            }),
            stall: Stall::default(),
        }
    }

    /// Makes writes overlapping `range` wait (outside the request lock: other requests go
    /// on) until [`Self::resume_writes`].
    pub fn stall_writes(&self, range: Range<u64>) {
        self.stall_state().range = Some(range);
    }

    /// Lets stalled and later writes through.
    pub fn resume_writes(&self) {
        self.stall_state().range = None;
        self.stall.changed.notify_all();
    }

    /// How many writes are waiting in a stall now.
    pub fn stalled_writes(&self) -> u64 {
        self.stall_state().waiting
    }

    fn stall_state(&self) -> MutexGuard<'_, StallState> {
        self.stall
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_out_stall(&self, offset: u64, len: usize) {
        let mut stall = self.stall_state();
        let stalled = |stall: &StallState| {
            stall
                .range
                .as_ref()
                .is_some_and(|range| overlaps(std::slice::from_ref(range), offset, len))
        };
        if !stalled(&stall) {
            return;
        }
        stall.waiting += 1;
        while stalled(&stall) {
            stall = self
                .stall
                .changed
                .wait(stall)
                .unwrap_or_else(PoisonError::into_inner);
        }
        stall.waiting -= 1;
    }

    /// The wrapped device (the durable image).
    pub fn inner(&self) -> &Arc<dyn BlockDevice> {
        &self.inner
    }

    /// Replaces the fault plan and restarts the counts for its `fail_nth_*` fields.
    pub fn set_plan(&self, plan: FaultPlan) {
        let mut state = self.lock();
        state.plan = plan;
        state.since_plan = (0, 0, 0);
    }

    /// The plan in force.
    pub fn plan(&self) -> FaultPlan {
        self.lock().plan.clone()
    }

    /// Current counters.
    pub fn stats(&self) -> FaultStats {
        let state = self.lock();
        FaultStats {
            pending_writes: state.pending.len(),
            ..state.stats
        }
    }

    /// Whether the power is cut (every I/O fails until [`FaultyDevice::revive`]).
    pub fn is_power_cut(&self) -> bool {
        self.lock().power_cut
    }

    /// Flips bit `bit` (modulo 8) of the byte at `offset` in the durable image (the inner
    /// device), then flushes the inner device. Pending writes are untouched and, while they
    /// cover `offset`, hide the flip from reads. Works whether or not the power is cut.
    pub fn corrupt(&self, offset: u64, bit: u8) -> Result<(), DeviceError> {
        let _state = self.lock();
        check_range("corrupt", &self.name, offset, 1, self.size())?;
        let mut byte = [0u8];
        self.inner.read_at(offset, &mut byte)?;
        byte[0] ^= BitFlip { offset, bit }.mask();
        self.inner.write_at(offset, &byte)?;
        self.inner.flush()
    }

    /// Cuts the power: applies the pending writes that survive under `mode` to the inner device
    /// (in issue order), flushes it, discards the rest, and fails every I/O from now on until
    /// [`FaultyDevice::revive`]. The device counts as cut even if applying the survivors fails.
    pub fn power_cut(&self, mode: CutMode) -> Result<CutReport, DeviceError> {
        let mut state = self.lock();
        state.power_cut = true;
        state.stats.power_cuts += 1;
        let pending = std::mem::take(&mut state.pending);
        // The lock stays held while the survivors are applied, so nothing (not even `revive`)
        // can observe a half-applied cut.
        let report = choose_survivors(&pending, mode);
        for &index in &report.survivors {
            let write = &pending[index];
            match &report.torn {
                Some(torn) if torn.index == index => {
                    #[allow(clippy::cast_possible_truncation)] // inside an in-memory write
                    let start = (torn.kept.start - write.offset) as usize;
                    #[allow(clippy::cast_possible_truncation)] // inside an in-memory write
                    let end = (torn.kept.end - write.offset) as usize;
                    self.inner
                        .write_at(torn.kept.start, &write.data[start..end])?;
                }
                _ => self.inner.write_at(write.offset, &write.data)?,
            }
        }
        self.inner.flush()?;
        Ok(report)
    }

    /// Brings the machine back up: I/O works again and sees only the durable image, i.e. what
    /// was flushed plus what survived the cut. The fault plan stays in force.
    pub fn revive(&self) {
        self.lock().power_cut = false;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn eio(&self, op: &'static str, offset: u64, len: usize) -> DeviceError {
        DeviceError::Io {
            op,
            device: self.name.clone(),
            offset,
            len,
            source: io::Error::from_raw_os_error(libc::EIO),
        }
    }
}

fn overlaps(ranges: &[Range<u64>], offset: u64, len: usize) -> bool {
    let end = offset + len as u64;
    len > 0
        && ranges
            .iter()
            .any(|range| range.start < end && offset < range.end)
}

/// Picks the surviving pending writes for `mode`.
fn choose_survivors(pending: &[PendingWrite], mode: CutMode) -> CutReport {
    let mut report = CutReport {
        pending: pending.len(),
        ..CutReport::default()
    };
    match mode {
        CutMode::DropAll => {}
        CutMode::KeepPrefix(n) => report.survivors = (0..n.min(pending.len())).collect(),
        CutMode::Tear { seed } => {
            let mut rng = SplitMix64(seed);
            report.survivors = (0..pending.len())
                .filter(|_| rng.next_u64() & 1 == 1)
                .collect();
            let tearable: Vec<usize> = report
                .survivors
                .iter()
                .copied()
                .filter(|&index| interior_boundaries(&pending[index].range()).is_some())
                .collect();
            if !tearable.is_empty() && rng.next_u64() & 1 == 1 {
                let index = tearable[rng.below(tearable.len() as u64) as usize];
                let range = pending[index].range();
                if let Some((first, count)) = interior_boundaries(&range) {
                    let boundary = first + rng.below(count) * TEAR_SECTOR;
                    let kept = if rng.next_u64() & 1 == 0 {
                        range.start..boundary
                    } else {
                        boundary..range.end
                    };
                    report.torn = Some(TornWrite { index, kept });
                }
            }
        }
    }
    report
}

/// The first 512-byte device boundary strictly inside `range` and how many there are.
fn interior_boundaries(range: &Range<u64>) -> Option<(u64, u64)> {
    let first = (range.start / TEAR_SECTOR + 1) * TEAR_SECTOR;
    if first >= range.end {
        return None;
    }
    let last = (range.end - 1) / TEAR_SECTOR * TEAR_SECTOR;
    Some((first, (last - first) / TEAR_SECTOR + 1))
}

/// splitmix64: a tiny deterministic PRNG, plenty for choosing crash outcomes and for the
/// seeded workloads of crash tests.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (0 when `n` is 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

impl BlockDevice for FaultyDevice {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    fn refresh_size(&self) -> Result<u64, DeviceError> {
        let size = self.inner.refresh_size()?;
        self.size.store(size, Ordering::Relaxed);
        Ok(size)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        let mut state = self.lock();
        if state.power_cut {
            return Err(self.eio("read", offset, buf.len()));
        }
        check_range("read", &self.name, offset, buf.len(), self.size())?;
        state.stats.reads += 1;
        state.since_plan.0 += 1;
        if state.plan.fail_nth_read == Some(state.since_plan.0)
            || overlaps(&state.plan.read_error_ranges, offset, buf.len())
        {
            state.stats.injected_errors += 1;
            return Err(self.eio("read", offset, buf.len()));
        }
        self.inner.read_at(offset, buf)?;
        let end = offset + buf.len() as u64;
        for write in &state.pending {
            let range = write.range();
            let (start, stop) = (range.start.max(offset), range.end.min(end));
            if start < stop {
                #[allow(clippy::cast_possible_truncation)] // offsets inside in-memory buffers
                let (dst, src, len) = (
                    (start - offset) as usize,
                    (start - range.start) as usize,
                    (stop - start) as usize,
                );
                buf[dst..dst + len].copy_from_slice(&write.data[src..src + len]);
            }
        }
        for flip in &state.plan.read_bit_flips {
            if (offset..end).contains(&flip.offset) {
                #[allow(clippy::cast_possible_truncation)] // inside the buffer
                let at = (flip.offset - offset) as usize;
                buf[at] ^= flip.mask();
            }
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        self.wait_out_stall(offset, data.len());
        let mut state = self.lock();
        if state.power_cut {
            return Err(self.eio("write", offset, data.len()));
        }
        check_range("write", &self.name, offset, data.len(), self.size())?;
        state.stats.writes += 1;
        state.since_plan.1 += 1;
        if state.plan.fail_nth_write == Some(state.since_plan.1)
            || overlaps(&state.plan.write_error_ranges, offset, data.len())
        {
            state.stats.injected_errors += 1;
            return Err(self.eio("write", offset, data.len()));
        }
        state.pending.push(PendingWrite {
            offset,
            data: data.to_vec(),
        });
        Ok(())
    }

    fn flush(&self) -> Result<(), DeviceError> {
        let mut state = self.lock();
        if state.power_cut {
            return Err(self.eio("flush", 0, 0));
        }
        state.stats.flushes += 1;
        state.since_plan.2 += 1;
        if state.plan.fail_every_flush || state.plan.fail_nth_flush == Some(state.since_plan.2) {
            state.stats.injected_errors += 1;
            return Err(self.eio("flush", 0, 0));
        }
        let pending = std::mem::take(&mut state.pending);
        let mut writes = pending.into_iter();
        while let Some(write) = writes.next() {
            if let Err(err) = self.inner.write_at(write.offset, &write.data) {
                // Keep this write and the later ones pending, in order.
                state.pending = std::iter::once(write).chain(writes).collect();
                return Err(err);
            }
        }
        self.inner.flush()
    }
}
