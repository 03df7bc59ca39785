//! Scrub: an online walk over every copy of every data block, then every metadata page,
//! verifying checksums and rewriting damaged copies from intact ones, while the pool stays in
//! use.
//!
//! The walk goes through the file map in (inode, block index) order in small batches, then
//! through the file-map records only snapshots still see (`history` records of kind
//! `FileBlock`, in (inode, block index, death epoch) order), so the blocks snapshots hold are
//! verified and repaired like live ones; every block is in exactly one of the two. A batch is
//! listed under the state lock, which also takes the free gate, then read straight from the
//! devices (never from the block cache) under that gate, so none of its sectors can be freed
//! and reused while they are checked. Progress is a [`ScrubState`] stored in the metadata with
//! every batch, so a scrub interrupted by an unmount or a crash resumes where the last commit
//! left it. [`Scrubber`] runs the walk on a thread, throttled to a byte rate, and can be
//! cancelled.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{ReadableTable, ReadableTableMetadata};

use super::versions::{decode_block_id, pair_key, split_pair, RecordKind};
use super::Filesystem;
use crate::device::ReadOp;
use crate::error::{FsError, FsResult};
use crate::format::SECTOR_SIZE;
use crate::meta::records::{BlockRecord, Location, Reader, RecordError, Timestamp, Writer};
use crate::meta::{HISTORY, SCRUB};
use crate::types::DeviceIndex;
use crate::types::InodeId;

const STATE_KEY: &str = "scrub";
/// The encoding written: version 1 plus the snapshot phase, its cursor and the snapshot
/// damage list.
const STATE_VERSION: u8 = 2;
/// The encoding before snapshots were scrubbed, still read so an interrupted scrub resumes.
const STATE_VERSION_1: u8 = 1;
/// Blocks checked per batch.
const BATCH_BLOCKS: usize = 256;
/// Copies one device read covers, while the previous group is verified.
const READ_GROUP: usize = 32;
/// The largest request adjacent copies are merged into (several stay in flight at once).
const MAX_RUN: usize = 1 << 20;
/// Metadata pages checked per batch.
const BATCH_PAGES: u64 = 256;
/// Inodes with unrecoverable damage remembered for the report (and as many snapshot findings).
const MAX_DAMAGED_INODES: usize = 1000;

/// Where a scrub is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScrubPhase {
    #[default]
    Data,
    /// The blocks only snapshots hold (file-map records in `history`).
    Snapshots,
    Metadata,
    Finished,
    Cancelled,
}

impl ScrubPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Data => "scrubbing data",
            Self::Snapshots => "scrubbing snapshot data",
            Self::Metadata => "scrubbing metadata",
            Self::Finished => "finished",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn is_running(self) -> bool {
        matches!(self, Self::Data | Self::Snapshots | Self::Metadata)
    }

    fn to_byte(self) -> u8 {
        match self {
            Self::Data => 0,
            Self::Snapshots => 1,
            Self::Metadata => 2,
            Self::Finished => 3,
            Self::Cancelled => 4,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::Data,
            1 => Self::Snapshots,
            2 => Self::Metadata,
            3 => Self::Finished,
            4 => Self::Cancelled,
            _ => return None,
        })
    }

    /// A phase as version 1 of the state numbered it (it had no snapshot phase).
    fn from_byte_v1(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::Data,
            1 => Self::Metadata,
            2 => Self::Finished,
            3 => Self::Cancelled,
            _ => return None,
        })
    }
}

/// Unrecoverable damage in a block only snapshots hold: the file (its inode number in the
/// pool) and the epochs its file-map record lived in, from `birth` up to (not including)
/// `death`; the snapshots taken in that span see the damage (see
/// [`Filesystem::snapshot_paths_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotDamage {
    pub ino: u64,
    pub birth: u64,
    pub death: u64,
}

/// A scrub's progress and findings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubState {
    pub phase: ScrubPhase,
    /// Seconds since the epoch.
    pub started: i64,
    pub finished: Option<i64>,
    /// The next (inode, block index) of the file map to check.
    pub cursor: (u64, u64),
    /// The next (inode, block index, death epoch) of the file-map records in `history` to check.
    pub history_cursor: (u64, u64, u64),
    pub next_page: u64,
    /// Blocks of the pool when the scrub began, live and held only by snapshots.
    pub blocks_total: u64,
    pub blocks_checked: u64,
    pub bytes_checked: u64,
    pub pages_total: u64,
    pub pages_checked: u64,
    /// Copies that failed to read or to match their checksum.
    pub errors_found: u64,
    /// Of those, rewritten from an intact copy.
    pub repaired: u64,
    /// Blocks and pages with no intact copy.
    pub unrecoverable: u64,
    /// Files with unrecoverable blocks in the live tree (up to 1,000).
    pub damaged_inodes: BTreeSet<u64>,
    /// Files with unrecoverable blocks only snapshots hold (up to 1,000).
    pub damaged_in_snapshots: BTreeSet<SnapshotDamage>,
    /// Bytes per second the scrub may read (0: as fast as the devices go).
    pub rate: u64,
    /// Milliseconds spent scrubbing so far (not counting time unmounted).
    pub elapsed_ms: u64,
}

impl ScrubState {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(160));
        w.u8(STATE_VERSION)
            .u8(self.phase.to_byte())
            .u64(self.started.cast_unsigned())
            .u64(self.finished.map_or(u64::MAX, i64::cast_unsigned))
            .u64(self.cursor.0)
            .u64(self.cursor.1)
            .u64(self.history_cursor.0)
            .u64(self.history_cursor.1)
            .u64(self.history_cursor.2)
            .u64(self.next_page)
            .u64(self.blocks_total)
            .u64(self.blocks_checked)
            .u64(self.bytes_checked)
            .u64(self.pages_total)
            .u64(self.pages_checked)
            .u64(self.errors_found)
            .u64(self.repaired)
            .u64(self.unrecoverable)
            .u64(self.rate)
            .u64(self.elapsed_ms)
            .u64(self.damaged_inodes.len() as u64);
        for ino in &self.damaged_inodes {
            w.u64(*ino);
        }
        w.u64(self.damaged_in_snapshots.len() as u64);
        for damage in &self.damaged_in_snapshots {
            w.u64(damage.ino).u64(damage.birth).u64(damage.death);
        }
        w.0
    }

    /// Decodes version 2, or version 1 (which had no snapshot phase: a scrub begun by it walks
    /// the snapshots' blocks after the live ones, if it has not passed them).
    fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let bad = || RecordError("scrub state");
        let mut r = Reader {
            bytes,
            what: "scrub state",
        };
        let version = r.u8()?;
        let phase = match version {
            STATE_VERSION => ScrubPhase::from_byte(r.u8()?),
            STATE_VERSION_1 => ScrubPhase::from_byte_v1(r.u8()?),
            _ => None,
        }
        .ok_or_else(bad)?;
        let started = r.u64()?.cast_signed();
        let finished = match r.u64()? {
            u64::MAX => None,
            secs => Some(secs.cast_signed()),
        };
        let cursor = (r.u64()?, r.u64()?);
        let history_cursor = if version == STATE_VERSION {
            (r.u64()?, r.u64()?, r.u64()?)
        } else {
            (0, 0, 0)
        };
        let mut state = ScrubState {
            phase,
            started,
            finished,
            cursor,
            history_cursor,
            next_page: r.u64()?,
            blocks_total: r.u64()?,
            blocks_checked: r.u64()?,
            bytes_checked: r.u64()?,
            pages_total: r.u64()?,
            pages_checked: r.u64()?,
            errors_found: r.u64()?,
            repaired: r.u64()?,
            unrecoverable: r.u64()?,
            rate: r.u64()?,
            elapsed_ms: r.u64()?,
            damaged_inodes: BTreeSet::new(),
            damaged_in_snapshots: BTreeSet::new(),
        };
        let damaged = r.u64()?;
        if damaged > MAX_DAMAGED_INODES as u64 {
            return Err(bad());
        }
        for _ in 0..damaged {
            state.damaged_inodes.insert(r.u64()?);
        }
        if version == STATE_VERSION {
            let damaged = r.u64()?;
            if damaged > MAX_DAMAGED_INODES as u64 {
                return Err(bad());
            }
            for _ in 0..damaged {
                state.damaged_in_snapshots.insert(SnapshotDamage {
                    ino: r.u64()?,
                    birth: r.u64()?,
                    death: r.u64()?,
                });
            }
        }
        if !r.bytes.is_empty() {
            return Err(bad());
        }
        Ok(state)
    }

    /// Share of the work done, 0.0 to 1.0 (blocks and pages weigh the same).
    pub fn fraction_done(&self) -> f64 {
        if self.phase == ScrubPhase::Finished {
            return 1.0;
        }
        let total = self.blocks_total.max(self.blocks_checked) + self.pages_total;
        if total == 0 {
            return 0.0;
        }
        ((self.blocks_checked + self.pages_checked) as f64 / total as f64).min(1.0)
    }
}

/// Reads `copies` (of one device) into `buf`, laid out one after another: copies that follow
/// each other on the device are read by one request of up to [`MAX_RUN`] bytes.
fn read_runs(
    device: &dyn crate::device::BlockDevice,
    copies: &[(u64, &BlockRecord, Location)],
    buf: &mut [u8],
) -> Result<(), crate::device::DeviceError> {
    let mut runs: Vec<(u64, usize)> = Vec::new();
    for (_, record, at) in copies {
        let offset = at.sector * SECTOR_SIZE;
        let len = record.padded_len();
        match runs.last_mut() {
            Some((start, run_len))
                if *start + *run_len as u64 == offset && *run_len + len <= MAX_RUN =>
            {
                *run_len += len;
            }
            _ => runs.push((offset, len)),
        }
    }
    let mut ops = Vec::with_capacity(runs.len());
    let mut rest = buf;
    for (offset, len) in runs {
        let (run, tail) = rest.split_at_mut(len);
        ops.push(ReadOp { offset, buf: run });
        rest = tail;
    }
    device.read_batch(&mut ops)
}

thread_local! {
    /// The scrubbing thread's read buffer, kept between batches.
    static ARENA: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whose a listed block is, for the report of unrecoverable damage.
#[derive(Debug, Clone, Copy)]
enum Holder {
    /// The live file with this inode number.
    Live(u64),
    /// Only the snapshots that see this retired file-map record.
    Snapshots(SnapshotDamage),
}

/// One block of a batch: its id, its record, and who holds it.
struct Listed {
    id: u64,
    record: BlockRecord,
    holder: Holder,
}

/// Block `id`'s record, from the block table.
fn block_record(blocks: &impl ReadableTable<u64, &'static [u8]>, id: u64) -> FsResult<BlockRecord> {
    let raw = blocks.get(id)?.ok_or_else(|| {
        FsError::Corrupt(format!("block {id} is mapped but not in the block table"))
    })?;
    BlockRecord::decode(raw.value()).map_err(|e| FsError::Corrupt(format!("block {id}: {e}")))
}

/// The `history` key that follows (inode, block index, death) in key order.
fn history_key_after((ino, index, death): (u64, u64, u64)) -> (u64, u64, u64) {
    if let Some(death) = death.checked_add(1) {
        (ino, index, death)
    } else if let Some(index) = index.checked_add(1) {
        (ino, index, 0)
    } else {
        (ino.saturating_add(1), 0, 0)
    }
}

impl Filesystem {
    /// The last scrub's state as stored (`None` if the pool was never scrubbed).
    pub fn scrub_state(&self) -> FsResult<Option<ScrubState>> {
        self.view(|tx| {
            let table = tx.txn.open_table(SCRUB)?;
            let raw = table.get(STATE_KEY)?.map(|v| v.value().to_vec());
            raw.map(|raw| {
                ScrubState::decode(&raw).map_err(|e| FsError::Corrupt(format!("scrub: {e}")))
            })
            .transpose()
        })
    }

    fn store_scrub_state(&self, state: &ScrubState) -> FsResult<()> {
        self.with_tx(|tx| {
            tx.mark_dirty();
            tx.txn
                .open_table(SCRUB)?
                .insert(STATE_KEY, state.encode().as_slice())?;
            Ok(())
        })
    }

    /// A new scrub's state (reading at most `rate` bytes per second, 0 for no limit),
    /// stored; refused while one is running.
    pub fn scrub_begin(&self, rate: u64) -> FsResult<ScrubState> {
        if self.scrub_state()?.is_some_and(|s| s.phase.is_running()) {
            return Err(FsError::Busy("a scrub is already running"));
        }
        // Every block is mapped by one file-map record, live or (held by snapshots) retired,
        // so the block table counts both walks.
        let blocks_total = self.view(|tx| Ok(tx.tables.blocks()?.len()?))?;
        let state = ScrubState {
            phase: ScrubPhase::Data,
            started: Timestamp::now().secs,
            blocks_total,
            pages_total: self.pool.metadata.pages(),
            rate,
            ..ScrubState::default()
        };
        self.store_scrub_state(&state)?;
        Ok(state)
    }

    /// Marks the stored scrub cancelled (the runner stops at its next batch).
    pub fn scrub_cancel(&self, state: &mut ScrubState) -> FsResult<()> {
        state.phase = ScrubPhase::Cancelled;
        state.finished = Some(Timestamp::now().secs);
        self.store_scrub_state(state)
    }

    /// Checks the next batch and stores the progress; returns the bytes read.
    pub fn scrub_step(&self, state: &mut ScrubState) -> FsResult<u64> {
        let began = Instant::now();
        let bytes = match state.phase {
            ScrubPhase::Data => self.scrub_data_batch(state)?,
            ScrubPhase::Snapshots => self.scrub_snapshot_batch(state)?,
            ScrubPhase::Metadata => {
                let start = state.next_page;
                let found = self.pool.metadata.scrub_pages(start..start + BATCH_PAGES);
                state.pages_checked += found.checked;
                state.errors_found += found.bad_copies;
                state.repaired += found.healed;
                state.unrecoverable += found.unrecoverable;
                state.next_page = start + BATCH_PAGES;
                if found.checked < BATCH_PAGES {
                    state.phase = ScrubPhase::Finished;
                    state.finished = Some(Timestamp::now().secs);
                }
                found.checked * crate::meta::backend::PAGE * 2
            }
            ScrubPhase::Finished | ScrubPhase::Cancelled => return Ok(0),
        };
        state.elapsed_ms += u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
        // A read-only pool cannot store progress; the scrub still checks (and reports).
        match self.store_scrub_state(state) {
            Ok(()) | Err(FsError::ReadOnly) => Ok(bytes),
            Err(err) => Err(err),
        }
    }

    /// Checks the next batch of the live file map; past its end, moves to the snapshots.
    fn scrub_data_batch(&self, state: &mut ScrubState) -> FsResult<u64> {
        let cursor = state.cursor;
        let (batch, last, gate) = self.view(|tx| {
            let map = tx.tables.file_blocks()?;
            let blocks = tx.tables.blocks()?;
            let mut batch = Vec::with_capacity(BATCH_BLOCKS);
            let mut last = None;
            for entry in map.range(cursor..)?.take(BATCH_BLOCKS) {
                let (key, id) = entry?;
                let (ino, index) = key.value();
                let (id, _) = id.value();
                batch.push(Listed {
                    id,
                    record: block_record(&*blocks, id)?,
                    holder: Holder::Live(ino),
                });
                last = Some((ino, index));
            }
            // Taken under the state lock, before a commit can free what was listed: the
            // sectors stay allocated until the batch is checked.
            Ok((
                batch,
                last,
                self.free_gate
                    .read()
                    .unwrap_or_else(PoisonError::into_inner),
            ))
        })?;
        let Some((last_ino, last_index)) = last else {
            drop(gate);
            state.phase = ScrubPhase::Snapshots;
            return Ok(0);
        };
        let bytes = self.scrub_listed(state, &batch);
        drop(gate);
        state.cursor = (last_ino, last_index.saturating_add(1));
        Ok(bytes)
    }

    /// Checks the next batch of the file-map records only snapshots see (`history`, kind
    /// `FileBlock`, by (inode, block index, death)); past their end, moves to the metadata.
    /// The cursor holds the death too: one (inode, block index) can have several retired
    /// records, and a batch may end between them.
    fn scrub_snapshot_batch(&self, state: &mut ScrubState) -> FsResult<u64> {
        let (ino, index, death) = state.history_cursor;
        let kind = RecordKind::FileBlock as u8;
        let from = pair_key(ino, index);
        let (batch, last, gate) = self.view(|tx| {
            let history = tx.txn.open_table(HISTORY)?;
            let blocks = tx.tables.blocks()?;
            let mut batch = Vec::with_capacity(BATCH_BLOCKS);
            let mut last = None;
            let range = (kind, from.as_slice(), death)..(kind + 1, &[][..], 0);
            for entry in history.range(range)?.take(BATCH_BLOCKS) {
                let (key, value) = entry?;
                let (_, key, death) = key.value();
                let (birth, value) = value.value();
                let bad = || FsError::Corrupt("history holds a malformed FileBlock record".into());
                let (ino, index) = split_pair(key).ok_or_else(bad)?;
                let id = decode_block_id(value).ok_or_else(bad)?;
                batch.push(Listed {
                    id,
                    record: block_record(&*blocks, id)?,
                    holder: Holder::Snapshots(SnapshotDamage { ino, birth, death }),
                });
                last = Some((ino, index, death));
            }
            Ok((
                batch,
                last,
                self.free_gate
                    .read()
                    .unwrap_or_else(PoisonError::into_inner),
            ))
        })?;
        let Some(last) = last else {
            drop(gate);
            state.phase = ScrubPhase::Metadata;
            state.pages_total = self.pool.metadata.pages();
            return Ok(0);
        };
        let bytes = self.scrub_listed(state, &batch);
        drop(gate);
        state.history_cursor = history_key_after(last);
        Ok(bytes)
    }

    /// Verifies every copy of the blocks of `batch` (whose sectors the caller keeps from being
    /// freed), repairs what it can and counts it all in `state`; returns the bytes read.
    fn scrub_listed(&self, state: &mut ScrubState, batch: &[Listed]) -> u64 {
        let checked = ARENA.with(|arena| self.check_batch_copies(batch, &mut arena.borrow_mut()));
        let mut bytes = 0;
        for Listed { id, record, holder } in batch {
            bytes += (record.padded_len() * record.locations().count()) as u64;
            let copies: Vec<_> = record
                .locations()
                .map(|at| (at, checked.get(&(*id, at)).copied()))
                .collect();
            let (bad, healed, intact) = self.scrub_block(*id, record, copies);
            state.errors_found += bad;
            state.repaired += healed;
            if !intact {
                state.unrecoverable += 1;
                match holder {
                    Holder::Live(ino) if state.damaged_inodes.len() < MAX_DAMAGED_INODES => {
                        state.damaged_inodes.insert(*ino);
                    }
                    Holder::Snapshots(damage)
                        if state.damaged_in_snapshots.len() < MAX_DAMAGED_INODES =>
                    {
                        state.damaged_in_snapshots.insert(*damage);
                    }
                    _ => {}
                }
            }
        }
        state.blocks_checked += batch.len() as u64;
        state.bytes_checked += bytes;
        bytes
    }

    /// Reads and verifies every copy of every block of `batch`: one batched read per device
    /// into `arena` (reused between batches, aligned so direct I/O needs no bounce buffer),
    /// the devices in parallel. Whether each copy is intact; a copy is missing from the result
    /// when its device's batch failed (it is then read alone).
    fn check_batch_copies(
        &self,
        batch: &[Listed],
        arena: &mut Vec<u8>,
    ) -> HashMap<(u64, Location), bool> {
        self.in_flight
            .wait_for(batch.iter().map(|listed| listed.id));
        let mut by_device: HashMap<DeviceIndex, Vec<(u64, &BlockRecord, Location)>> =
            HashMap::new();
        for Listed { id, record, .. } in batch {
            for at in record.locations() {
                by_device
                    .entry(at.device)
                    .or_default()
                    .push((*id, record, at));
            }
        }
        let total: usize = batch
            .iter()
            .map(|b| b.record.padded_len() * b.record.locations().count())
            .sum();
        let align = usize::try_from(SECTOR_SIZE).unwrap_or(4096);
        if arena.len() < total + align {
            arena.resize(total + align, 0);
        }
        let skip = arena.as_ptr().align_offset(align).min(align);
        let mut free = &mut arena[skip..skip + total];
        let mut work = Vec::new();
        for (index, copies) in by_device {
            let len: usize = copies.iter().map(|(_, r, _)| r.padded_len()).sum();
            let (mine, rest) = free.split_at_mut(len);
            free = rest;
            work.push((index, copies, mine));
        }
        std::thread::scope(|scope| {
            let checkers: Vec<_> = work
                .into_iter()
                .map(|(index, copies, region)| {
                    scope.spawn(move || self.check_device_copies(index, &copies, region))
                })
                .collect();
            checkers
                .into_iter()
                .filter_map(|checker| checker.join().ok())
                .flatten()
                .collect()
        })
    }

    /// One device's part of [`Self::check_batch_copies`]: `region` holds the copies in order.
    /// A reader thread reads them in groups while this thread verifies the groups already
    /// read, so the device stays busy while checksums are computed.
    fn check_device_copies(
        &self,
        index: DeviceIndex,
        copies: &[(u64, &BlockRecord, Location)],
        region: &mut [u8],
    ) -> Vec<((u64, Location), bool)> {
        let Ok(device) = self.device(index) else {
            return Vec::new();
        };
        let mut groups = Vec::new();
        let mut rest = region;
        for group in copies.chunks(READ_GROUP) {
            let len = group.iter().map(|(_, r, _)| r.padded_len()).sum();
            let (mine, tail) = rest.split_at_mut(len);
            groups.push((group, mine));
            rest = tail;
        }
        let (ready, read) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for (group, buf) in groups {
                    let started = std::time::Instant::now();
                    let result = read_runs(device.as_ref(), group, buf);
                    if ready
                        .send((group, &*buf, result, started.elapsed()))
                        .is_err()
                    {
                        return;
                    }
                }
            });
            let mut checked = Vec::with_capacity(copies.len());
            for (group, buf, result, elapsed) in read {
                if let Err(err) = result {
                    tracing::warn!(device = index.0, error = %err, "scrub: batched read failed; reading those blocks one by one");
                    continue;
                }
                self.count_reads(index, group.iter().map(|(_, r, _)| r.padded_len()), elapsed);
                let mut at_byte = 0;
                for (id, record, at) in group {
                    let len = record.padded_len();
                    let copy = &buf[at_byte..at_byte + len];
                    checked.push(((*id, *at), self.check_copy(*id, record, *at, copy).is_ok()));
                    at_byte += len;
                }
            }
            checked
        })
    }

    /// Settles the copies of a block (`None`: not read yet), rewriting damaged ones from an
    /// intact one: (copies damaged, copies rewritten, whether an intact copy exists).
    fn scrub_block(
        &self,
        id: u64,
        record: &BlockRecord,
        checked: Vec<(Location, Option<bool>)>,
    ) -> (u64, u64, bool) {
        let copies: Vec<(Location, bool)> = checked
            .into_iter()
            .map(|(at, intact)| {
                (
                    at,
                    intact.unwrap_or_else(|| self.read_copy(id, record, at).is_ok()),
                )
            })
            .collect();
        let bad: Vec<Location> = copies
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(at, _)| *at)
            .collect();
        if bad.is_empty() {
            return (0, 0, true);
        }
        let intact = copies
            .iter()
            .filter(|(_, ok)| *ok)
            .find_map(|(at, _)| self.read_copy(id, record, *at).ok());
        let Some(content) = intact else {
            tracing::error!(block = id, "scrub: no intact copy of this block");
            return (bad.len() as u64, 0, false);
        };
        let healed = bad
            .iter()
            .filter(|at| self.heal_copy(id, record, &content, **at))
            .count() as u64;
        // The next read decodes the intact bytes, whatever the cache held.
        self.cache.remove(id);
        (bad.len() as u64, healed, true)
    }

    /// Paths of `inodes` (one name each; `None` for an inode no directory names).
    pub fn paths_of(&self, inodes: &BTreeSet<u64>) -> FsResult<Vec<(u64, Option<String>)>> {
        if inodes.is_empty() {
            return Ok(Vec::new());
        }
        self.view(|tx| {
            // One pass over the directory entries: each inode's parent and name.
            let mut named: HashMap<u64, (u64, Vec<u8>)> = HashMap::new();
            for entry in tx.tables.dirents()?.iter()? {
                let (key, value) = entry?;
                let (parent, name) = key.value();
                named
                    .entry(value.value().0)
                    .or_insert_with(|| (parent, name.to_vec()));
            }
            let inode_table = tx.tables.inodes()?;
            let mut out = Vec::new();
            for &ino in inodes {
                let mut parts = Vec::new();
                let mut at = ino;
                let mut found = inode_table.get(ino)?.is_some();
                while found && at != InodeId::ROOT.0 && parts.len() < 4096 {
                    match named.get(&at) {
                        Some((parent, name)) => {
                            parts.push(String::from_utf8_lossy(name).into_owned());
                            at = *parent;
                        }
                        None => found = false,
                    }
                }
                parts.reverse();
                out.push((ino, found.then(|| format!("/{}", parts.join("/")))));
            }
            Ok(out)
        })
    }

    /// Where the files of `damaged` (unrecoverable blocks only snapshots hold) show, one line
    /// each per snapshot that still sees the damaged block: `/.snapshots/<name>/<path>`, else
    /// `<inode N in snapshot 'name', no name there>`, or `<inode N, in deleted snapshots>` when
    /// every snapshot that saw it is gone (and the block with them). Sorted, without repeats.
    pub fn snapshot_paths_of(&self, damaged: &BTreeSet<SnapshotDamage>) -> FsResult<Vec<String>> {
        if damaged.is_empty() {
            return Ok(Vec::new());
        }
        self.view(|tx| {
            let mut out = BTreeSet::new();
            // The inodes to name in each snapshot, by epoch.
            let mut wanted: HashMap<u64, BTreeSet<u64>> = HashMap::new();
            for damage in damaged {
                let mut seen = false;
                let range = damage.birth..damage.death.max(damage.birth);
                for epoch in tx.book.snapshots.range(range).map(|(epoch, _)| *epoch) {
                    wanted.entry(epoch).or_default().insert(damage.ino);
                    seen = true;
                }
                if !seen {
                    out.insert(format!("<inode {}, in deleted snapshots>", damage.ino));
                }
            }
            for (epoch, numbers) in wanted {
                let name = tx
                    .book
                    .snapshots
                    .get(&epoch)
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                let paths = tx.snapshot_paths(epoch, &numbers)?;
                for number in numbers {
                    out.insert(match paths.get(&number) {
                        Some(path) => format!(
                            "/{}/{name}{path}",
                            String::from_utf8_lossy(super::snapshot::SNAPSHOT_DIR_NAME)
                        ),
                        None => format!("<inode {number} in snapshot '{name}', no name there>"),
                    });
                }
            }
            Ok(out.into_iter().collect())
        })
    }
}

/// A scrub running on its own thread, throttled, cancellable; its latest state is readable
/// at any time.
#[derive(Debug)]
pub struct Scrubber {
    state: Arc<RwLock<ScrubState>>,
    cancel: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Scrubber {
    /// Runs `state` (new or resumed) to its end, at most `state.rate` bytes per second.
    pub fn start(fs: Arc<Filesystem>, state: ScrubState) -> FsResult<Self> {
        let shared = Arc::new(RwLock::new(state));
        let cancel = Arc::new(AtomicBool::new(false));
        let thread = {
            let shared = Arc::clone(&shared);
            let cancel = Arc::clone(&cancel);
            std::thread::Builder::new()
                .name("aegis-scrub".into())
                .spawn(move || run(&fs, &shared, &cancel))
                .map_err(|_| FsError::Busy("cannot start the scrub thread"))?
        };
        Ok(Self {
            state: shared,
            cancel,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn state(&self) -> ScrubState {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Asks the scrub to stop after its current batch and waits for it.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Scrubber {
    fn drop(&mut self) {
        self.cancel();
    }
}

fn run(fs: &Filesystem, shared: &RwLock<ScrubState>, cancel: &AtomicBool) {
    let mut state = shared
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let rate = state.rate;
    let started = Instant::now();
    let mut bytes_this_run = 0u64;
    tracing::info!(phase = state.phase.as_str(), "scrub running");
    while state.phase.is_running() {
        if cancel.load(Ordering::Relaxed) {
            // Stopped by the user or by the unmount: an unmount leaves the stored state
            // running, so the scrub resumes at the next mount.
            return;
        }
        match fs.scrub_step(&mut state) {
            Ok(bytes) => bytes_this_run += bytes,
            Err(err) => {
                tracing::error!(error = %err, "scrub stopped");
                return;
            }
        }
        *shared.write().unwrap_or_else(PoisonError::into_inner) = state.clone();
        if rate > 0 {
            // Foreground I/O keeps priority: sleep until the rate allows the next batch,
            // waking often enough to notice a cancel.
            let due = Duration::from_secs_f64(bytes_this_run as f64 / rate as f64);
            while let Some(wait) = due.checked_sub(started.elapsed()) {
                if cancel.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(wait.min(Duration::from_millis(50)));
            }
        }
    }
    tracing::info!(
        checked = state.blocks_checked,
        pages = state.pages_checked,
        errors = state.errors_found,
        repaired = state.repaired,
        unrecoverable = state.unrecoverable,
        "scrub finished"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_round_trips_with_its_snapshot_cursor_and_findings() {
        let state = ScrubState {
            phase: ScrubPhase::Snapshots,
            started: 1_700_000_000,
            finished: None,
            cursor: (u64::MAX, 0),
            history_cursor: (7, 3, 12),
            next_page: 0,
            blocks_total: 900,
            blocks_checked: 400,
            bytes_checked: 1 << 30,
            errors_found: 3,
            repaired: 2,
            unrecoverable: 1,
            damaged_inodes: BTreeSet::from([9]),
            damaged_in_snapshots: BTreeSet::from([SnapshotDamage {
                ino: 7,
                birth: 2,
                death: 5,
            }]),
            rate: 4 << 20,
            elapsed_ms: 1234,
            ..ScrubState::default()
        };
        let bytes = state.encode();
        assert_eq!(bytes[0], 2);
        assert_eq!(ScrubState::decode(&bytes).unwrap(), state);
        // Truncated or with bytes left over: refused.
        assert!(ScrubState::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(ScrubState::decode(&longer).is_err());
        let mut unknown = bytes;
        unknown[0] = 3;
        assert!(ScrubState::decode(&unknown).is_err());
    }

    #[test]
    fn a_version_1_state_is_read_with_its_old_phase_numbers() {
        let mut w = Writer(Vec::new());
        // Version 1, phase 1 (then: metadata), started, not finished, cursor (5, 6).
        w.u8(1).u8(1).u64(100).u64(u64::MAX).u64(5).u64(6);
        // Next page, the totals and counts, rate, milliseconds; one damaged inode.
        for v in [40, 10, 10, 1 << 20, 80, 0, 1, 0, 1, 0, 77] {
            w.u64(v);
        }
        w.u64(1).u64(42);
        let state = ScrubState::decode(&w.0).unwrap();
        assert_eq!(state.phase, ScrubPhase::Metadata);
        assert_eq!(state.cursor, (5, 6));
        assert_eq!(state.history_cursor, (0, 0, 0));
        assert_eq!(state.next_page, 40);
        assert_eq!(state.elapsed_ms, 77);
        assert_eq!(state.damaged_inodes, BTreeSet::from([42]));
        assert!(state.damaged_in_snapshots.is_empty());
        for (byte, phase) in [
            (0, ScrubPhase::Data),
            (2, ScrubPhase::Finished),
            (3, ScrubPhase::Cancelled),
        ] {
            let mut old = w.0.clone();
            old[1] = byte;
            assert_eq!(ScrubState::decode(&old).unwrap().phase, phase);
        }
        let mut old = w.0.clone();
        old[1] = 4;
        assert!(ScrubState::decode(&old).is_err());
    }

    #[test]
    fn the_history_cursor_steps_past_the_last_key_without_overflowing() {
        assert_eq!(history_key_after((1, 2, 3)), (1, 2, 4));
        assert_eq!(history_key_after((1, 2, u64::MAX)), (1, 3, 0));
        assert_eq!(history_key_after((1, u64::MAX, u64::MAX)), (2, 0, 0));
    }
}
