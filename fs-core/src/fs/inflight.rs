//! Device writes of new blocks that run outside the state lock, and the bookkeeping that keeps
//! them safe: `InFlight` knows which blocks the open transaction group maps before their bytes
//! are on a device.
//!
//! When staged data passes its limit, the verb that noticed maps the staged blocks to fresh
//! sectors under the state lock ([`BlockWrites`] is what is left to write), then writes them
//! after releasing it, so the next writes are staged while the device works. Three rules keep
//! that correct:
//! - a commit waits until no write is in flight, and a failed one makes the pool read-only
//!   before anything else commits: data is durable before the metadata that points at it;
//! - a read of a block's stored bytes waits for that block's write (the block cache holds the
//!   content meanwhile, but may have dropped it);
//! - the sectors are fresh: nothing the last commit references is overwritten, and sectors
//!   freed in the open group return to the allocator only after a commit, so never while a
//!   write into them may still be running.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::{Filesystem, State};
use crate::device::WriteOp;
use crate::error::{FsError, FsResult};
use crate::format::SECTOR_SIZE;
use crate::meta::records::Location;
use crate::types::DeviceIndex;

/// Bytes of block writes in flight at most: a batch that would pass it waits for earlier ones.
const MAX_IN_FLIGHT_BYTES: u64 = 128 * 1024 * 1024;

/// One copy to write: its byte offset on the device and the block's padded stored bytes.
type CopyWrite = (u64, Arc<Vec<u8>>);

/// New blocks to write: every copy of each, grouped by device.
#[derive(Debug, Default)]
pub(super) struct BlockWrites {
    ids: Vec<u64>,
    bytes: u64,
    by_device: Vec<(DeviceIndex, Vec<CopyWrite>)>,
}

impl BlockWrites {
    /// Adds block `id`, whose padded stored bytes `stored` go to each of `copies`.
    pub fn add(
        &mut self,
        id: u64,
        copies: impl IntoIterator<Item = Location>,
        stored: &Arc<Vec<u8>>,
    ) {
        self.ids.push(id);
        for location in copies {
            self.bytes += stored.len() as u64;
            let write = (location.sector * SECTOR_SIZE, Arc::clone(stored));
            match self
                .by_device
                .iter_mut()
                .find(|(d, _)| *d == location.device)
            {
                Some((_, writes)) => writes.push(write),
                None => self.by_device.push((location.device, vec![write])),
            }
        }
    }

    pub fn append(&mut self, mut other: BlockWrites) {
        self.ids.append(&mut other.ids);
        self.bytes += other.bytes;
        for (device, mut writes) in other.by_device {
            match self.by_device.iter_mut().find(|(d, _)| *d == device) {
                Some((_, ours)) => ours.append(&mut writes),
                None => self.by_device.push((device, writes)),
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The writes, by device: (byte offset, bytes).
    pub fn by_device(&self) -> impl Iterator<Item = (DeviceIndex, &[CopyWrite])> {
        self.by_device
            .iter()
            .map(|(device, writes)| (*device, writes.as_slice()))
    }
}

#[derive(Debug, Default)]
struct Inner {
    blocks: HashSet<u64>,
    bytes: u64,
    /// The first write that failed, until a commit (or the writer) makes the pool read-only.
    failure: Option<FsError>,
}

/// The blocks whose writes have begun and not ended.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    inner: Mutex<Inner>,
    changed: Condvar,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Inner>) -> MutexGuard<'a, Inner> {
        self.changed
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `writes` before the blocks they write become visible; first waits while
    /// earlier writes hold the in-flight budget. Every `begin` is matched by an [`Self::end`].
    pub fn begin(&self, writes: &BlockWrites) {
        if writes.is_empty() {
            return;
        }
        let mut inner = self.lock();
        while inner.bytes > 0 && inner.bytes + writes.bytes > MAX_IN_FLIGHT_BYTES {
            inner = self.wait(inner);
        }
        inner.blocks.extend(writes.ids.iter().copied());
        inner.bytes += writes.bytes;
    }

    /// The writes of `writes` ended, with `result`; a failure is kept for [`Self::take_failure`].
    pub fn end(&self, writes: &BlockWrites, result: Result<(), FsError>) {
        if writes.is_empty() {
            return;
        }
        let mut inner = self.lock();
        for id in &writes.ids {
            inner.blocks.remove(id);
        }
        inner.bytes -= writes.bytes;
        if let Err(err) = result {
            inner.failure.get_or_insert(err);
        }
        drop(inner);
        self.changed.notify_all();
    }

    /// Waits until none of `ids` is being written.
    pub fn wait_for(&self, ids: impl Iterator<Item = u64> + Clone) {
        let mut inner = self.lock();
        while ids.clone().any(|id| inner.blocks.contains(&id)) {
            inner = self.wait(inner);
        }
    }

    /// Waits until no write is in flight; returns the first that failed since the last call.
    pub fn wait_idle(&self) -> Result<(), FsError> {
        let mut inner = self.lock();
        while !inner.blocks.is_empty() {
            inner = self.wait(inner);
        }
        inner.failure.take().map_or(Ok(()), Err)
    }

    /// The first write that failed since the last call, if any.
    pub fn take_failure(&self) -> Option<FsError> {
        self.lock().failure.take()
    }

    pub fn has_failure(&self) -> bool {
        self.lock().failure.is_some()
    }
}

impl Filesystem {
    /// Writes `writes` (begun by [`Tx::map_staged`](super::tx::Tx::map_staged)) to the
    /// devices and ends them. A failure is kept in [`InFlight`]; whoever takes it, under the
    /// state lock, makes the pool read-only.
    pub(super) fn write_new_blocks(&self, writes: &BlockWrites) {
        if writes.is_empty() {
            return;
        }
        let result = writes.by_device().try_for_each(|(index, blocks)| {
            let device = self.device(index)?;
            let ops: Vec<WriteOp<'_>> = blocks
                .iter()
                .map(|(offset, data)| WriteOp {
                    offset: *offset,
                    data: data.as_slice(),
                })
                .collect();
            let started = Instant::now();
            device.write_batch(&ops).map_err(FsError::DeviceWrite)?;
            self.count_writes(index, ops.iter().map(|op| op.data.len()), started.elapsed());
            Ok(())
        });
        self.in_flight.end(writes, result);
    }

    /// Releases the state lock, then writes what the verb that held it left begun. A failed
    /// write makes the pool read-only and is the verb's error.
    pub(super) fn unlock_and_write(&self, mut state: MutexGuard<'_, State>) -> FsResult<()> {
        let writes = std::mem::take(&mut state.book.unwritten);
        drop(state);
        if writes.is_empty() {
            return Ok(());
        }
        self.write_new_blocks(&writes);
        if !self.in_flight.has_failure() {
            return Ok(());
        }
        let mut state = self.lock_state();
        // Taken under the state lock, so no commit passes between the failure and this.
        match self.in_flight.take_failure() {
            Some(err) if state.group.is_some() => Err(self.fail(&mut state, err)),
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}
