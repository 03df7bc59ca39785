//! The filesystem: POSIX namespace and data operations over an opened [`Pool`], grouped into
//! transaction groups.
//!
//! One redb write transaction is the open transaction group. Every operation runs inside it
//! under the state lock, so operations see each other's changes at once; [`Filesystem::commit`]
//! makes the group durable (data devices flushed first, then the metadata commit) and opens the
//! next. Commits happen every `commit_interval` (a background thread), on fsync, on unmount and
//! when more than `dirty_limit` bytes of data or 64 Ki record changes accumulated (the
//! background thread, woken early, unless twice that has; see `committer.rs`). Written data is
//! staged in memory per block (see `tx::stage_blocks`) and written at the next flush; a commit
//! writes most of it before it takes the state lock for good.
//!
//! Invariants:
//! - data blocks are written to freshly allocated sectors (never over a live block) and are
//!   durable before the commit that points at them;
//! - sectors freed in a transaction group return to the allocator only after that group is
//!   durable, and only while no reader is still reading them (the free gate);
//! - an operation checks everything that can fail for a logical reason before it changes
//!   anything, so a failed call leaves the namespace as it was.
//!
//! Failures: a device read error fails only the call that met it (EIO). A failed write or
//! flush of a device, or any metadata-store error, makes the pool read-only until it is
//! remounted. The call that met it fails with EIO (ENOSPC for a full metadata region) and the
//! cause is logged once, at error level. The open transaction group is dropped with everything
//! staged in it, as a crash would drop it: nothing from it is ever committed, so no block whose
//! write failed (or whose device lost it in a failed flush) is referenced, and nothing it freed
//! is reused. Writes are not retried: a device that failed a flush may have dropped earlier
//! writes it had acknowledged, and a retried flush could then succeed without them. From then
//! on every modification, fsync and unmount fails with EROFS ([`FsError::ReadOnly`]) while
//! lookups, reads, readdir and xattr reads are served from the last commit as the devices hold
//! it (see `view.rs`).
//!
//! The verbs live in submodules: [`namespace`] (create, link, unlink, rename, readdir, …),
//! [`data`] (read, write, truncate, fallocate, lseek) and [`xattr`].

mod cache;
mod committer;
mod data;
pub mod devices;
mod group;
mod inflight;
pub mod latency;
mod namespace;
pub mod props;
pub mod scrub;
pub mod snapshot;
pub mod tier;
mod tx;
pub mod usage;
pub(crate) mod versions;
mod view;
mod xattr;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redb::{ReadableTable, WriteTransaction};

use crate::alloc::{Allocator, DeviceSpace};
use crate::codec::crypt::NonceSequence;
use crate::device::{BlockDevice, ReadOp};
use crate::error::{FsError, FsResult};
use crate::format::{MemberState, MAX_MEMBERS, SECTOR_SIZE};
use crate::meta::records::{BlockRecord, FileKind, Inode, Location, SnapshotRecord, Timestamp};
use crate::meta::{self, BLOCKS, COUNTERS, DEVICE_ERRORS, ORPHANS, SNAPSHOTS};
use crate::pool::Pool;
use crate::types::{DeviceIndex, InodeId, Tier};

pub use data::Whence;
use group::Group;
pub use namespace::{DirEntry, NewNode, RENAME_EXCHANGE, RENAME_NOREPLACE};
use tx::Tx;

/// Largest file size (1 EiB): far past any device, and far from overflowing offset arithmetic.
pub const MAX_FILE_SIZE: u64 = 1 << 60;
/// Files up to this size keep their bytes in metadata until they grow past it. Kept small:
/// the metadata region is sized at format, and larger files cost only one 4 KiB sector.
pub const INLINE_MAX: u64 = 512;
pub const MAX_NAME_LEN: usize = 255;
pub const MAX_LINKS: u32 = 65_000;

/// Block accesses wait at most this long in memory before a commit stores them (a workload
/// that only reads commits this rarely).
const HEAT_FOLD_INTERVAL: Duration = Duration::from_secs(60);
/// ... or until this many blocks have counts waiting.
const MAX_PENDING_ACCESSES: usize = 1 << 16;

/// Staged block contents are written out once they pass this many bytes.
const STAGED_LIMIT: u64 = 16 * 1024 * 1024;

/// A transaction group commits early after this many metadata changes (twice as many at most,
/// while the commit thread is behind), which bounds its memory and the metadata space it can
/// hold unreclaimed (redb reuses pages freed in a transaction only after it commits).
const MAX_DIRTY_RECORDS: u64 = 65_536;

fn is_storage_full(err: &FsError) -> bool {
    matches!(err, FsError::Meta(redb::Error::Io(io)) if io.kind() == std::io::ErrorKind::StorageFull)
}

/// Tunables of the transaction-group machinery.
#[derive(Debug, Clone, Copy)]
pub struct FsConfig {
    pub commit_interval: Duration,
    pub dirty_limit: u64,
    /// Bytes of verified block contents kept in memory.
    pub cache_bytes: u64,
    /// Unpinned new data goes to the fast tier while its used fraction is below this.
    pub fast_high_watermark: f64,
    /// Block heat halves every this long (see [`crate::heat`]).
    pub heat_half_life: Duration,
    /// Most entries the dedup table takes (`None`: a quarter of the metadata region's worth).
    pub dedup_table_limit: Option<u64>,
}

impl Default for FsConfig {
    fn default() -> Self {
        Self {
            commit_interval: Duration::from_secs(5),
            dirty_limit: 256 * 1024 * 1024,
            cache_bytes: default_cache_bytes(),
            fast_high_watermark: 0.85,
            heat_half_life: Duration::from_secs(7 * 86_400),
            dedup_table_limit: None,
        }
    }
}

/// The block cache's default size: an eighth of the machine's memory, 64 MiB to 4 GiB (ZFS's
/// ARC takes up to half; this leaves the kernel's page cache most of it).
fn default_cache_bytes() -> u64 {
    const MIB: u64 = 1024 * 1024;
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(2048 * MIB);
    (total / 8).clamp(64 * MIB, 4096 * MIB)
}

/// The identity a request runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

impl Caller {
    pub const ROOT: Caller = Caller { uid: 0, gid: 0 };

    /// Whether a change by this caller keeps a file's setuid and setgid bits (the kernel asks
    /// for `CAP_FSETID`; root stands for it here).
    pub fn keeps_set_ids(self) -> bool {
        self.uid == 0
    }
}

/// Attributes as `stat` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: InodeId,
    pub kind: FileKind,
    pub perm: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub size: u64,
    /// 512-byte units allocated.
    pub blocks: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Timestamp,
    pub generation: u64,
    pub blksize: u32,
}

/// Changes requested by `setattr`; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
    pub ctime: Option<Timestamp>,
    /// Who asks: a truncate by a caller without [`Caller::keeps_set_ids`] drops them.
    pub caller: Option<Caller>,
}

/// Space figures for `statfs`, in sectors of [`SECTOR_SIZE`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceUsage {
    pub total_sectors: u64,
    pub free_sectors: u64,
}

/// Per-member usage and I/O counters.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    pub index: DeviceIndex,
    pub tier: Tier,
    /// Where it was opened from (empty while it is missing).
    pub path: String,
    /// Active, being emptied, missing or faulted (see [`MemberState`]).
    pub state: MemberState,
    /// It holds a copy of the metadata region.
    pub metadata_copy: bool,
    pub size: u64,
    pub data_bytes: u64,
    pub free_bytes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub read_ops: u64,
    pub write_ops: u64,
    /// Error counters, kept across mounts until cleared.
    pub errors: ErrorCounts,
}

/// One member's I/O and error counters since mount (errors: kept across mounts), read without
/// taking any lock: cheap enough to sample every second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberCounters {
    pub index: DeviceIndex,
    pub tier: Tier,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub read_ops: u64,
    pub write_ops: u64,
    pub errors: ErrorCounts,
    /// How long reads and writes took.
    pub read_latency: latency::Latency,
    pub write_latency: latency::Latency,
}

/// A snapshot of the filesystem's state for status reports.
#[derive(Debug, Clone)]
pub struct FsStatus {
    pub label: String,
    pub pool_uuid: String,
    pub block_size: u32,
    pub members: Vec<MemberStatus>,
    pub inodes: u64,
    pub commits: u64,
    pub last_commit_ms_ago: Option<u64>,
    pub checksum_errors: u64,
    /// Bytes of the metadata region the database spans, and the region's capacity.
    pub metadata_used: u64,
    pub metadata_capacity: u64,
    /// Why the pool went read-only after a failure (`None` while it is writable).
    pub read_only_cause: Option<String>,
    /// How many snapshots exist, and the data-area bytes only they hold.
    pub snapshots: u64,
    pub snapshot_bytes: u64,
    /// Data and metadata are encrypted.
    pub encrypted: bool,
    /// Content, stored and referenced content bytes of every block.
    pub totals: BlockTotals,
    /// The dedup table of a dedup pool.
    pub dedup: Option<DedupStatus>,
}

/// The size of a dedup pool's dedup table, as of the last commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupStatus {
    pub entries: u64,
    /// Most entries it takes (blocks written when full are not deduplicated).
    pub limit: u64,
    /// Bytes of metadata pages the table takes (what it can occupy of the metadata cache).
    pub table_bytes: u64,
}

#[derive(Debug, Default)]
struct DeviceCounters {
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    read_ops: AtomicU64,
    write_ops: AtomicU64,
    read_latency: latency::LatencyRecorder,
    write_latency: latency::LatencyRecorder,
    /// Error counts, persisted at each commit (see [`ErrorCounts`]).
    errors: [AtomicU64; 4],
}

/// The kinds of device error counted per member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Read = 0,
    Write = 1,
    Checksum = 2,
    /// Damaged copies rewritten from a good one.
    Repaired = 3,
}

/// A member's error counters, kept across mounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    pub read: u64,
    pub write: u64,
    pub checksum: u64,
    pub repaired: u64,
}

impl DeviceCounters {
    fn error_counts(&self) -> ErrorCounts {
        let get = |kind: ErrorKind| self.errors[kind as usize].load(Ordering::Relaxed);
        ErrorCounts {
            read: get(ErrorKind::Read),
            write: get(ErrorKind::Write),
            checksum: get(ErrorKind::Checksum),
            repaired: get(ErrorKind::Repaired),
        }
    }

    fn set_error_counts(&self, counts: ErrorCounts) {
        for (kind, value) in [
            (ErrorKind::Read, counts.read),
            (ErrorKind::Write, counts.write),
            (ErrorKind::Checksum, counts.checksum),
            (ErrorKind::Repaired, counts.repaired),
        ] {
            self.errors[kind as usize].store(value, Ordering::Relaxed);
        }
    }
}

/// Totals over the block table, kept as blocks come and go and stored with each commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockTotals {
    /// Content bytes of every block, each block once.
    pub logical: u64,
    /// Stored bytes of one copy of every block (compressed, encrypted), each block once.
    pub stored: u64,
    /// Content bytes times references: what the blocks would take without dedup.
    pub logical_refs: u64,
}

impl BlockTotals {
    /// The totals as `txn` holds them.
    fn load(txn: &WriteTransaction) -> FsResult<Self> {
        Ok(Self {
            logical: counter(txn, meta::BLOCK_LOGICAL)?,
            stored: counter(txn, meta::BLOCK_STORED)?,
            logical_refs: counter(txn, meta::BLOCK_LOGICAL_REFS)?,
        })
    }

    fn store(&self, counters: &mut redb::Table<'_, &str, u64>) -> FsResult<()> {
        counters.insert(meta::BLOCK_LOGICAL, self.logical)?;
        counters.insert(meta::BLOCK_STORED, self.stored)?;
        counters.insert(meta::BLOCK_LOGICAL_REFS, self.logical_refs)?;
        Ok(())
    }

    /// Content bytes per stored byte (1.0 for an empty pool).
    pub fn compression_ratio(&self) -> f64 {
        ratio(self.logical, self.stored)
    }

    /// Referenced content bytes per block content byte (1.0 without sharing).
    pub fn dedup_ratio(&self) -> f64 {
        ratio(self.logical_refs, self.logical)
    }
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        1.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// Mutable bookkeeping beside the open transaction.
#[derive(Debug)]
struct Book {
    alloc: Allocator,
    /// Sectors freed in the open transaction group: (device, first sector, count).
    pending_free: Vec<(DeviceIndex, u64, u64)>,
    /// Sectors freed by durable commits, returned to the allocator once no read holds the
    /// free gate (a commit does not wait for a scrub's or migration's batch to finish).
    durable_free: Vec<(DeviceIndex, u64, u64)>,
    next_inode: u64,
    next_block: u64,
    next_generation: u64,
    /// The live epoch (see `versions`).
    epoch: u64,
    /// Data-area bytes of the blocks the live tree maps.
    referenced: u64,
    /// Totals over the block table.
    totals: BlockTotals,
    /// Every snapshot, by epoch.
    snapshots: BTreeMap<u64, SnapshotRecord>,
    /// Block accesses counted since the last commit, by block id (folded into `heat` then).
    accesses: HashMap<u64, u64>,
    /// When the oldest of them happened.
    accesses_since: Option<Instant>,
    /// The warning that the dedup table is full was logged (once per mount).
    dedup_full_warned: bool,
    /// Whether the open transaction holds changes.
    dirty: bool,
    dirty_bytes: u64,
    /// Metadata changes in the open transaction group.
    dirty_records: u64,
    dirty_since: Option<Instant>,
    open_counts: HashMap<u64, u32>,
    /// Staged block contents by (inode, block index): written to the devices in one batch at
    /// the next flush, so many small writes to a block cost one block write.
    staged: BTreeMap<(u64, u64), tx::StagedBlock>,
    staged_bytes: u64,
    /// Device writes of blocks the current holder of the state lock mapped (already counted
    /// in flight) that no thread has started: that verb writes them after releasing the lock.
    unwritten: inflight::BlockWrites,
    /// Sectors reserved for staged blocks, so a staged write never meets ENOSPC at flush.
    reserved_sectors: u64,
    commits: u64,
    last_commit: Option<Instant>,
    /// The error counters as the last commit stored them.
    persisted_errors: Vec<ErrorCounts>,
}

impl Book {
    /// Free sectors not promised to staged blocks.
    fn free_sectors(&self) -> u64 {
        self.alloc
            .free_sectors()
            .saturating_sub(self.reserved_sectors)
    }
}

struct State {
    /// The open transaction group; `None` once the pool is read-only.
    group: Option<Group>,
    /// While read-only: the last commit, which reads are served from (`None` if it could not
    /// be read back).
    view: Option<view::View>,
    /// Why the pool went read-only.
    read_only_cause: Option<String>,
    book: Book,
}

impl State {
    /// Runs a verb that changes nothing: on the open group, or on the last commit once the
    /// pool is read-only.
    fn read<T>(
        &mut self,
        fs: &Filesystem,
        op: impl FnOnce(&mut Tx<'_, '_>) -> FsResult<T>,
    ) -> FsResult<T> {
        let State {
            group, view, book, ..
        } = self;
        let group = match (group.as_ref(), view.as_ref()) {
            (Some(group), _) => group,
            (None, Some(view)) => view.group(),
            (None, None) => return Err(FsError::Failed),
        };
        Tx::run(group, fs, book, op)
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("read_only", &self.group.is_none())
            .field("view", &self.view)
            .field("book", &self.book)
            .finish()
    }
}

/// A counter of the `counters` table.
fn counter(txn: &WriteTransaction, name: &str) -> FsResult<u64> {
    txn.open_table(COUNTERS)?
        .get(name)?
        .map(|v| v.value())
        .ok_or_else(|| FsError::Corrupt(format!("counter {name} is missing")))
}

/// What the book keeps of snapshots, as `txn` holds it: the live epoch, the bytes the live
/// tree references, and every snapshot by epoch.
fn load_snapshots(txn: &WriteTransaction) -> FsResult<(u64, u64, BTreeMap<u64, SnapshotRecord>)> {
    let mut snapshots = BTreeMap::new();
    for entry in txn.open_table(SNAPSHOTS)?.iter()? {
        let (epoch, raw) = entry?;
        let record = SnapshotRecord::decode(raw.value())
            .map_err(|e| FsError::Corrupt(format!("snapshot of epoch {}: {e}", epoch.value())))?;
        snapshots.insert(epoch.value(), record);
    }
    Ok((
        counter(txn, meta::EPOCH)?,
        counter(txn, meta::REFERENCED)?,
        snapshots,
    ))
}

/// Holds a filesystem while it is being loaded. A panic in redb unwinds past it; dropping the
/// filesystem then would run redb's destructor on its broken state, and a second panic there
/// aborts the process, so it is leaked instead and the caught panic becomes an error.
struct LeakOnPanic(Option<Arc<Filesystem>>);

impl Drop for LeakOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            std::mem::forget(self.0.take());
        }
    }
}

/// A mounted-or-mountable AegisFS filesystem.
#[derive(Debug)]
pub struct Filesystem {
    pool: Pool,
    block_size: u64,
    config: FsConfig,
    state: Mutex<State>,
    /// Readers hold it shared while reading block sectors outside the state lock; freed sectors
    /// return to the allocator only under it exclusively.
    free_gate: RwLock<()>,
    counters: Vec<DeviceCounters>,
    cache: cache::BlockCache,
    /// Nonces of this mount's encrypted blocks (an encrypted pool only).
    nonces: Option<NonceSequence>,
    /// The dedup hash key and table limit (a dedup pool only).
    dedup: Option<Dedup>,
    /// Held by a change of the member list (`devices`), so changes happen one at a time.
    device_changes: Mutex<()>,
    /// Writes of new blocks running outside the state lock.
    in_flight: inflight::InFlight,
    /// Wakes the commit thread when a verb passes a dirty limit.
    commit_signal: Arc<committer::CommitSignal>,
}

/// How a dedup pool deduplicates.
#[derive(Debug, Clone, Copy)]
struct Dedup {
    key: [u8; 32],
    /// The dedup table takes at most this many entries; blocks written while it is full are
    /// stored without one (and never shared).
    table_limit: u64,
}

/// Dedup table entries allowed per byte of metadata region: a full table takes about a quarter
/// of it (an entry costs about 64 bytes in redb's pages).
const DEDUP_ENTRY_BYTES: u64 = 64;

/// Files named in the log when a degraded pool is opened.
const MISSING_PATHS_LOGGED: usize = 20;

impl Filesystem {
    /// Opens the filesystem on a pool: rebuilds the allocator from the block table and
    /// reclaims inodes that were unlinked while open when the pool was last used.
    pub fn new(pool: Pool, config: FsConfig) -> FsResult<Arc<Self>> {
        pool.mark_missing()?;
        let fs = crate::error::contain_panics("loading the metadata", || Self::load(pool, config))?;
        let missing = fs.pool.missing_members();
        if !missing.is_empty() {
            let names: Vec<String> = missing
                .iter()
                .map(|m| format!("{} ({} tier)", m.index.0, m.tier))
                .collect();
            match fs.files_on_missing_members(MISSING_PATHS_LOGGED) {
                Ok(paths) => tracing::warn!(
                    members = %names.join(", "),
                    files = %paths.join(", "),
                    "the pool is degraded: these files have data only the missing members hold (at most {MISSING_PATHS_LOGGED} named); reads of it fail until they are back"
                ),
                Err(err) => {
                    tracing::warn!(members = %names.join(", "), error = %err, "the pool is degraded")
                }
            }
        }
        Ok(fs)
    }

    fn load(pool: Pool, config: FsConfig) -> FsResult<Arc<Self>> {
        let mut alloc = pool.empty_allocator();
        let txn = pool.db.begin_write()?;
        let (next_inode, next_block, next_generation) = (
            counter(&txn, meta::NEXT_INODE)?,
            counter(&txn, meta::NEXT_BLOCK)?,
            counter(&txn, meta::NEXT_GENERATION)?,
        );
        let (epoch, referenced, snapshots) = load_snapshots(&txn)?;
        let totals = BlockTotals::load(&txn)?;
        let nonces = if pool.keys().is_some() {
            // Durable before the first block of this mount is encrypted: `load` commits.
            let generation = counter(&txn, meta::NONCE_GENERATION)? + 1;
            let prefix = u32::try_from(generation).map_err(|_| {
                FsError::Pool("the pool's nonce generations are used up (2^32 mounts)".into())
            })?;
            txn.open_table(COUNTERS)?
                .insert(meta::NONCE_GENERATION, generation)?;
            Some(NonceSequence::new(prefix))
        } else {
            None
        };
        let dedup = pool.dedup_key().map(|key| Dedup {
            key,
            table_limit: config
                .dedup_table_limit
                .unwrap_or(pool.metadata.capacity() / 4 / DEDUP_ENTRY_BYTES),
        });
        {
            let blocks = txn.open_table(BLOCKS)?;
            for entry in blocks.iter()? {
                let (id, raw) = entry?;
                let record = BlockRecord::decode(raw.value())
                    .map_err(|e| FsError::Corrupt(format!("block {}: {e}", id.value())))?;
                for location in record.locations() {
                    alloc
                        .mark_used(location.device, location.sector, record.sectors())
                        .map_err(|e| FsError::Corrupt(format!("block {}: {e}", id.value())))?;
                }
            }
        }
        // By member index: members come and go while mounted, within the superblock's table.
        let counters: Vec<DeviceCounters> = (0..MAX_MEMBERS)
            .map(|_| DeviceCounters::default())
            .collect();
        let mut persisted_errors = vec![ErrorCounts::default(); MAX_MEMBERS];
        for entry in txn.open_table(DEVICE_ERRORS)?.iter()? {
            let (device, counts) = entry?;
            let device = usize::from(device.value());
            let (read, write, checksum, repaired) = counts.value();
            if let (Some(c), Some(p)) = (counters.get(device), persisted_errors.get_mut(device)) {
                *p = ErrorCounts {
                    read,
                    write,
                    checksum,
                    repaired,
                };
                c.set_error_counts(*p);
            }
        }
        let block_size = u64::from(pool.block_size());
        let fs = Arc::new(Filesystem {
            pool,
            block_size,
            config,
            state: Mutex::new(State {
                group: Some(Group::begin(txn)?),
                view: None,
                read_only_cause: None,
                book: Book {
                    alloc,
                    pending_free: Vec::new(),
                    durable_free: Vec::new(),
                    next_inode,
                    next_block,
                    next_generation,
                    epoch,
                    referenced,
                    totals,
                    snapshots,
                    accesses: HashMap::new(),
                    accesses_since: None,
                    dedup_full_warned: false,
                    dirty: nonces.is_some(),
                    dirty_bytes: 0,
                    dirty_records: 0,
                    dirty_since: None,
                    open_counts: HashMap::new(),
                    staged: BTreeMap::new(),
                    staged_bytes: 0,
                    unwritten: inflight::BlockWrites::default(),
                    reserved_sectors: 0,
                    commits: 0,
                    last_commit: None,
                    persisted_errors,
                },
            }),
            free_gate: RwLock::new(()),
            counters,
            cache: cache::BlockCache::new(config.cache_bytes, block_size),
            nonces,
            dedup,
            device_changes: Mutex::new(()),
            in_flight: inflight::InFlight::default(),
            commit_signal: Arc::default(),
        });
        let mut guard = LeakOnPanic(Some(fs));
        if let Some(fs) = &guard.0 {
            fs.reclaim_orphans()?;
            fs.commit()?;
        }
        guard.0.take().ok_or(FsError::Failed)
    }

    /// Whether the open group is due a commit: changed `commit_interval` ago, block accesses
    /// to fold, or freed sectors to release.
    fn commit_due(&self) -> bool {
        let state = self.lock_state();
        if state.group.is_none() {
            return false;
        }
        let book = &state.book;
        book.dirty_since
            .is_some_and(|since| since.elapsed() >= self.config.commit_interval)
            || book
                .accesses_since
                .is_some_and(|since| since.elapsed() >= HEAT_FOLD_INTERVAL)
            || book.accesses.len() >= MAX_PENDING_ACCESSES
            || !book.durable_free.is_empty()
    }

    /// The free gate, shared: sectors read while it is held are not freed and reused.
    fn read_gate(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.free_gate
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a verb that may change something in the open transaction group; once the pool is
    /// read-only it fails with [`FsError::ReadOnly`] without running.
    fn with_tx<T>(&self, op: impl FnOnce(&mut Tx<'_, '_>) -> FsResult<T>) -> FsResult<T> {
        let mut guard = self.lock_state();
        let result = self.modify_locked(&mut guard, op);
        let written = self.unlock_and_write(guard);
        result.and_then(|value| written.map(|()| value))
    }

    /// Runs a verb that changes nothing: in the open transaction group, or on the last commit
    /// once the pool is read-only.
    fn view<T>(&self, op: impl FnOnce(&mut Tx<'_, '_>) -> FsResult<T>) -> FsResult<T> {
        let mut guard = self.lock_state();
        let state = &mut *guard;
        if state.group.is_some() {
            return self.run_locked(state, op);
        }
        state.read(self, op)
    }

    /// `with_tx` on a `state` the caller has locked: runs `op`, then maps staged blocks to new
    /// sectors or commits when their limits are passed. The caller writes the mapped blocks
    /// out after releasing the lock ([`Self::unlock_and_write`]), so the device works while
    /// the next writes are staged.
    fn modify_locked<T>(
        &self,
        state: &mut State,
        op: impl FnOnce(&mut Tx<'_, '_>) -> FsResult<T>,
    ) -> FsResult<T> {
        let result = self.run_locked(state, op);
        if state.group.is_none() {
            return result;
        }
        if state.book.staged_bytes >= STAGED_LIMIT {
            self.map_staged_locked(state)?;
        }
        // Past a dirty limit the commit thread commits, off this verb's path. The verb commits
        // itself when there is no such thread, or when the changes reach twice the limits (the
        // thread is not keeping up).
        if self.dirty_over(&state.book, 1)
            && (self.dirty_over(&state.book, 2) || !self.commit_signal.request())
        {
            self.commit_locked(state)?;
        }
        result
    }

    /// Whether the open group holds more than `times` the dirty data or record limits.
    fn dirty_over(&self, book: &Book, times: u64) -> bool {
        book.dirty_bytes >= self.config.dirty_limit.saturating_mul(times)
            || book.dirty_records >= MAX_DIRTY_RECORDS * times
    }

    /// Whether the open group has passed a dirty limit.
    fn over_dirty_limit(&self) -> bool {
        self.dirty_over(&self.lock_state().book, 1)
    }

    /// Places the staged blocks and begins their writes (for [`Self::unlock_and_write`]). A
    /// failure that leaves the pool writable (ENOSPC on a fragmented pool) keeps them staged
    /// for a later try; one that made it read-only is returned.
    fn map_staged_locked(&self, state: &mut State) -> FsResult<()> {
        if let Err(err) = self.run_locked(state, |tx| tx.map_staged()) {
            if state.group.is_none() {
                return Err(err);
            }
            tracing::warn!(error = %err, "writing staged blocks failed; will retry");
        }
        Ok(())
    }

    /// Runs `op` on the open transaction group of `state` (locked by the caller); a
    /// metadata-store error or a failed device write makes the pool read-only.
    fn run_locked<T>(
        &self,
        state: &mut State,
        op: impl FnOnce(&mut Tx<'_, '_>) -> FsResult<T>,
    ) -> FsResult<T> {
        let Some(group) = state.group.as_ref() else {
            return Err(FsError::ReadOnly);
        };
        let result = Tx::run(group, self, &mut state.book, op);
        match result {
            Err(err @ (FsError::Meta(_) | FsError::DeviceWrite(_))) => Err(self.fail(state, err)),
            other => other,
        }
    }

    /// Makes the pool read-only after `err`, which is logged here, once: the open transaction
    /// group is dropped with everything staged in it, and reads are served from the last commit
    /// as the devices hold it. Returns the error for the operation that met it (a full metadata
    /// region becomes [`FsError::MetadataFull`]).
    fn fail(&self, state: &mut State, err: FsError) -> FsError {
        let err = if is_storage_full(&err) {
            FsError::MetadataFull
        } else {
            err
        };
        tracing::error!(
            error = %err,
            cause = ?std::error::Error::source(&err),
            "the pool is now read-only until remounted; uncommitted changes are dropped"
        );
        self.enter_read_only(state, err.to_string());
        err
    }

    fn enter_read_only(&self, state: &mut State, cause: String) {
        state.group = None;
        state.read_only_cause = Some(cause);
        let book = &mut state.book;
        book.staged.clear();
        book.staged_bytes = 0;
        // Nothing the lost group mapped needs writing any more.
        self.in_flight
            .end(&std::mem::take(&mut book.unwritten), Ok(()));
        book.reserved_sectors = 0;
        // Sectors freed in the lost group stay in use: the last commit still points at them.
        book.pending_free.clear();
        book.dirty = false;
        book.dirty_bytes = 0;
        book.dirty_records = 0;
        book.dirty_since = None;
        book.accesses.clear();
        book.accesses_since = None;
        // The snapshots as the last commit holds them: the lost group may have taken, deleted
        // or rolled back to one (its commit is what failed), and reads go by this list.
        let view = view::View::open(&self.pool).and_then(|view| {
            let (epoch, referenced, snapshots) = load_snapshots(view.group().borrow_owner())?;
            book.epoch = epoch;
            book.referenced = referenced;
            book.totals = BlockTotals::load(view.group().borrow_owner())?;
            book.snapshots = snapshots;
            Ok(view)
        });
        state.view = match view {
            Ok(view) => Some(view),
            Err(err) => {
                tracing::error!(
                    error = %err,
                    cause = ?std::error::Error::source(&err),
                    "the last commit cannot be read back; reads fail until the pool is remounted"
                );
                None
            }
        };
    }

    /// Makes everything done so far durable. The staged blocks are written before the commit
    /// takes the state lock for good, so verbs go on while they go to the devices; the commit
    /// then writes what was staged meanwhile.
    pub fn commit(&self) -> FsResult<()> {
        let mut guard = self.lock_state();
        if guard.book.staged_bytes > 0 {
            self.map_staged_locked(&mut guard)?;
            self.unlock_and_write(guard)?;
            guard = self.lock_state();
        }
        self.commit_locked(&mut guard)
    }

    fn commit_locked(&self, state: &mut State) -> FsResult<()> {
        // Staged data goes to the devices first; ENOSPC here keeps it staged and fails this
        // commit without losing anything.
        self.run_locked(state, |tx| tx.flush_staged())?;
        if let Err(err) = self.in_flight.wait_idle() {
            return Err(self.fail(state, err));
        }
        let errors: Vec<ErrorCounts> = self
            .counters
            .iter()
            .map(DeviceCounters::error_counts)
            .collect();
        self.release_durable_free(&mut state.book, false);
        let errors_changed = errors != state.book.persisted_errors;
        if !state.book.dirty && !errors_changed && state.book.accesses.is_empty() {
            return Ok(());
        }
        self.run_locked(state, |tx| tx.fold_accesses())?;
        let Some(group) = state.group.take() else {
            return Err(FsError::ReadOnly);
        };
        let txn = group.close();
        let book = &mut state.book;
        let result = (|| -> FsResult<()> {
            {
                let mut counters = txn.open_table(COUNTERS)?;
                counters.insert(meta::NEXT_INODE, book.next_inode)?;
                counters.insert(meta::NEXT_BLOCK, book.next_block)?;
                counters.insert(meta::NEXT_GENERATION, book.next_generation)?;
                counters.insert(meta::EPOCH, book.epoch)?;
                counters.insert(meta::REFERENCED, book.referenced)?;
                book.totals.store(&mut counters)?;
            }
            if errors_changed {
                let mut table = txn.open_table(DEVICE_ERRORS)?;
                for index in self.present_indexes() {
                    let c = errors[usize::from(index.0)];
                    table.insert(index.0, (c.read, c.write, c.checksum, c.repaired))?;
                }
            }
            // Data first: the metadata about to be committed points at these blocks.
            for device in self.present_devices() {
                device.flush().map_err(FsError::DeviceWrite)?;
            }
            txn.commit()?;
            Ok(())
        })();
        if let Err(err) = result {
            return Err(self.fail(state, err));
        }
        let book = &mut state.book;
        book.durable_free.append(&mut book.pending_free);
        self.release_durable_free(book, false);
        book.alloc.rewind();
        book.dirty = false;
        book.dirty_bytes = 0;
        book.dirty_records = 0;
        book.dirty_since = None;
        book.persisted_errors = errors;
        book.commits += 1;
        book.last_commit = Some(Instant::now());
        match self
            .pool
            .db
            .begin_write()
            .map_err(FsError::from)
            .and_then(Group::begin)
        {
            Ok(group) => state.group = Some(group),
            // The commit is durable; only what comes after it is refused.
            Err(err) => {
                self.fail(state, err);
            }
        }
        Ok(())
    }

    /// Returns the sectors durable commits freed to the allocator, if no read is in flight on
    /// any sector (the free gate); with `wait`, waits for the reads in flight to finish (the
    /// pool is short of space). Without it, they stay for a later try.
    fn release_durable_free(&self, book: &mut Book, wait: bool) {
        if book.durable_free.is_empty() {
            return;
        }
        let exclusive = match self.free_gate.try_write() {
            Ok(exclusive) => exclusive,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) if wait => self
                .free_gate
                .write()
                .unwrap_or_else(PoisonError::into_inner),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        for (device, sector, count) in book.durable_free.drain(..) {
            if let Err(err) = book.alloc.release(device, sector, count) {
                tracing::error!(error = %err, "freeing sectors failed");
            }
        }
        drop(exclusive);
    }

    fn reclaim_orphans(&self) -> FsResult<()> {
        self.with_tx(|tx| {
            let orphans: Vec<u64> = {
                let table = tx.txn.open_table(ORPHANS)?;
                let ids: Vec<u64> = table
                    .iter()?
                    .map(|entry| entry.map(|(key, _)| key.value()))
                    .collect::<Result<_, _>>()?;
                ids
            };
            for ino in orphans {
                tracing::info!(ino, "reclaiming an inode unlinked while open");
                tx.free_inode(InodeId(ino))?;
            }
            Ok(())
        })
    }

    /// Total and free space across all members.
    pub fn space(&self) -> SpaceUsage {
        let state = self.lock_state();
        SpaceUsage {
            total_sectors: state.book.alloc.total_sectors(),
            free_sectors: state.book.free_sectors(),
        }
    }

    /// The dedup table as of the last commit, read beside the open transaction group: measuring
    /// its pages walks the whole table, which must not hold up I/O.
    fn dedup_status(&self, dedup: Dedup) -> FsResult<DedupStatus> {
        use redb::{ReadableDatabase, ReadableTableMetadata};
        let txn = self.pool.db.begin_read()?;
        let table = txn.open_table(meta::DEDUP)?;
        let stats = table.stats()?;
        Ok(DedupStatus {
            entries: table.len()?,
            limit: dedup.table_limit,
            table_bytes: (stats.leaf_pages() + stats.branch_pages()) * crate::meta::backend::PAGE,
        })
    }

    /// The devices of the members present.
    fn present_devices(&self) -> Vec<Arc<dyn BlockDevice>> {
        self.pool
            .members()
            .iter()
            .map(|m| Arc::clone(&m.device))
            .collect()
    }

    /// The indexes of the members present.
    fn present_indexes(&self) -> Vec<DeviceIndex> {
        self.pool
            .members()
            .iter()
            .map(|m| m.superblock.device_index)
            .collect()
    }

    fn counters_of(&self, index: DeviceIndex) -> Option<&DeviceCounters> {
        self.counters.get(usize::from(index.0))
    }

    /// Every present member's counters, without the state lock or metadata reads (see
    /// [`Self::status`]).
    pub fn member_counters(&self) -> Vec<MemberCounters> {
        self.pool
            .members()
            .iter()
            .filter_map(|member| {
                let index = member.superblock.device_index;
                Some((member, self.counters_of(index)?))
            })
            .map(|(member, counters)| MemberCounters {
                index: member.superblock.device_index,
                tier: member.superblock.tier,
                bytes_read: counters.bytes_read.load(Ordering::Relaxed),
                bytes_written: counters.bytes_written.load(Ordering::Relaxed),
                read_ops: counters.read_ops.load(Ordering::Relaxed),
                write_ops: counters.write_ops.load(Ordering::Relaxed),
                errors: counters.error_counts(),
                read_latency: counters.read_latency.snapshot(),
                write_latency: counters.write_latency.snapshot(),
            })
            .collect()
    }

    pub fn status(&self) -> FsStatus {
        let dedup = self.dedup.and_then(|dedup| self.dedup_status(dedup).ok());
        let mut guard = self.lock_state();
        let snapshot_bytes = guard.read(self, |tx| tx.held_by_snapshots()).unwrap_or(0);
        let state = &*guard;
        let (list, _) = self.pool.member_list();
        let missing = self.pool.missing_members();
        let mut members: Vec<MemberStatus> = self
            .pool
            .members()
            .iter()
            .filter_map(|member| {
                let index = member.superblock.device_index;
                Some((member, self.counters_of(index)?))
            })
            .map(|(member, counters)| {
                let sb = &member.superblock;
                let space = state
                    .book
                    .alloc
                    .devices()
                    .iter()
                    .find(|d| d.index == sb.device_index);
                let total = space.map_or(0, DeviceSpace::total_sectors) * SECTOR_SIZE;
                let free = space.map_or(0, DeviceSpace::free_sectors) * SECTOR_SIZE;
                MemberStatus {
                    index: sb.device_index,
                    tier: sb.tier,
                    path: member.path.display().to_string(),
                    state: list
                        .iter()
                        .find(|m| m.index == sb.device_index)
                        .map_or(MemberState::Active, |m| m.state),
                    metadata_copy: sb.meta_len > 0,
                    size: sb.device_size,
                    data_bytes: total,
                    free_bytes: free,
                    bytes_read: counters.bytes_read.load(Ordering::Relaxed),
                    bytes_written: counters.bytes_written.load(Ordering::Relaxed),
                    read_ops: counters.read_ops.load(Ordering::Relaxed),
                    write_ops: counters.write_ops.load(Ordering::Relaxed),
                    errors: counters.error_counts(),
                }
            })
            .chain(missing.iter().map(|info| {
                MemberStatus {
                    index: info.index,
                    tier: info.tier,
                    path: String::new(),
                    state: MemberState::Missing,
                    metadata_copy: false,
                    size: info.size,
                    data_bytes: 0,
                    free_bytes: 0,
                    bytes_read: 0,
                    bytes_written: 0,
                    read_ops: 0,
                    write_ops: 0,
                    errors: self
                        .counters_of(info.index)
                        .map(DeviceCounters::error_counts)
                        .unwrap_or_default(),
                }
            }))
            .collect();
        members.sort_by_key(|m| m.index);
        FsStatus {
            label: self.pool.label().to_owned(),
            pool_uuid: uuid::Uuid::from_bytes(self.pool.uuid()).to_string(),
            block_size: self.pool.block_size(),
            members,
            inodes: state.book.next_inode.saturating_sub(1),
            commits: state.book.commits,
            last_commit_ms_ago: state
                .book
                .last_commit
                .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
            checksum_errors: self
                .counters
                .iter()
                .map(|c| c.error_counts().checksum)
                .sum(),
            metadata_used: self.pool.metadata.used(),
            metadata_capacity: self.pool.metadata.capacity(),
            read_only_cause: state.read_only_cause.clone(),
            snapshots: state.book.snapshots.len() as u64,
            snapshot_bytes,
            encrypted: self.pool.keys().is_some(),
            totals: state.book.totals,
            dedup,
        }
    }

    /// Resets every member's error counters (and makes that durable); faulted members are
    /// active again.
    pub fn clear_errors(&self) -> FsResult<()> {
        for counters in &self.counters {
            counters.set_error_counts(ErrorCounts::default());
        }
        self.reinstate_faulted()?;
        self.commit()
    }

    /// Makes the pool read-only until it is remounted (after an internal error, `cause`),
    /// logging why; does nothing if it already is.
    pub fn set_read_only(&self, cause: &str) {
        let mut state = self.lock_state();
        if state.group.is_some() {
            tracing::error!(
                cause,
                "the pool is now read-only until remounted; uncommitted changes are dropped"
            );
            self.enter_read_only(&mut state, cause.to_owned());
        }
    }

    /// Whether the pool went read-only after a failure.
    pub fn is_read_only(&self) -> bool {
        self.lock_state().group.is_none()
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Commits and releases the pool; call once, at unmount.
    pub fn shutdown(&self) -> FsResult<()> {
        self.commit()
    }

    /// The device of member `index`; an I/O error if it is not present.
    fn device(&self, index: DeviceIndex) -> FsResult<Arc<dyn BlockDevice>> {
        self.pool.device(index).ok_or(FsError::MissingDevice(index))
    }

    /// Counts the reads of one device submission that took `elapsed`, `sizes` bytes each.
    fn count_reads(
        &self,
        index: DeviceIndex,
        sizes: impl ExactSizeIterator<Item = usize>,
        elapsed: Duration,
    ) {
        if let Some(c) = self.counters_of(index) {
            let ops = sizes.len() as u64;
            c.read_ops.fetch_add(ops, Ordering::Relaxed);
            c.bytes_read
                .fetch_add(sizes.map(|s| s as u64).sum(), Ordering::Relaxed);
            c.read_latency.observe(elapsed, ops);
        }
    }

    fn count_error(&self, index: DeviceIndex, kind: ErrorKind) {
        if let Some(c) = self.counters_of(index) {
            c.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts the writes of one device submission that took `elapsed`, `sizes` bytes each.
    fn count_writes(
        &self,
        index: DeviceIndex,
        sizes: impl ExactSizeIterator<Item = usize>,
        elapsed: Duration,
    ) {
        if let Some(c) = self.counters_of(index) {
            let ops = sizes.len() as u64;
            c.write_ops.fetch_add(ops, Ordering::Relaxed);
            c.bytes_written
                .fetch_add(sizes.map(|s| s as u64).sum(), Ordering::Relaxed);
            c.write_latency.observe(elapsed, ops);
        }
    }

    /// A block's content, from the cache or read, verified and decoded.
    fn read_block(&self, id: u64, record: &BlockRecord) -> FsResult<Arc<Vec<u8>>> {
        let mut blocks = self.read_blocks(&[(id, *record)])?;
        blocks
            .pop()
            .ok_or_else(|| FsError::Corrupt(format!("block {id} could not be read")))
    }

    /// The contents of several blocks, in the order asked: from the cache, or read (see
    /// [`Self::read_stored`]), decoded and cached.
    fn read_blocks(&self, blocks: &[(u64, BlockRecord)]) -> FsResult<Vec<Arc<Vec<u8>>>> {
        let mut found: Vec<Option<Arc<Vec<u8>>>> =
            blocks.iter().map(|(id, _)| self.cache.get(*id)).collect();
        let missing: Vec<(u64, BlockRecord)> = blocks
            .iter()
            .zip(&found)
            .filter(|(_, cached)| cached.is_none())
            .map(|(block, _)| *block)
            .collect();
        let mut stored = self.read_stored(&missing)?.into_iter();
        for (slot, (id, record)) in found.iter_mut().zip(blocks) {
            if slot.is_some() {
                continue;
            }
            let bytes = stored
                .next()
                .ok_or_else(|| FsError::Corrupt(format!("block {id} could not be read")))?;
            let content = Arc::new(self.decode_block(*id, record, bytes)?);
            self.cache.insert(*id, Arc::clone(&content));
            *slot = Some(content);
        }
        Ok(found.into_iter().flatten().collect())
    }

    /// Decrypts and decompresses the verified stored bytes of block `id`. A failure here
    /// (the ciphertext or its record was changed, or the pool's key is missing) is an I/O
    /// error for the read, never wrong data.
    fn decode_block(&self, id: u64, record: &BlockRecord, stored: Vec<u8>) -> FsResult<Vec<u8>> {
        let keys = self.pool.keys().map(AsRef::as_ref);
        crate::codec::decode_block(
            stored,
            record.encoding,
            record.logical_len as usize,
            id,
            keys,
        )
        .map_err(|err| {
            self.count_error(record.device, ErrorKind::Checksum);
            tracing::error!(block = id, error = %err, "block cannot be decoded");
            FsError::Corrupt(format!("block {id}: {err}"))
        })
    }

    /// The stored bytes of several blocks, in the order asked, read with one batch per device
    /// and verified against their checksums; a block whose first copy fails (I/O error or
    /// checksum) is read from its second copy, which is then written over the bad one
    /// (self-heal). Without an intact copy the read fails: never wrong data.
    fn read_stored(&self, blocks: &[(u64, BlockRecord)]) -> FsResult<Vec<Vec<u8>>> {
        self.in_flight.wait_for(blocks.iter().map(|(id, _)| *id));
        let mut buffers: Vec<Vec<u8>> = blocks
            .iter()
            .map(|(_, record)| vec![0u8; record.padded_len()])
            .collect();
        let mut batch_failed: Vec<DeviceIndex> = Vec::new();
        let mut devices: Vec<DeviceIndex> = blocks.iter().map(|(_, r)| r.device).collect();
        devices.sort_unstable();
        devices.dedup();
        for index in devices {
            // A missing member's blocks are read from their second copies below.
            let Ok(device) = self.device(index) else {
                batch_failed.push(index);
                continue;
            };
            let mut ops: Vec<ReadOp<'_>> = blocks
                .iter()
                .zip(buffers.iter_mut())
                .filter(|((_, record), _)| record.device == index)
                .map(|((_, record), buf)| ReadOp {
                    offset: record.sector * SECTOR_SIZE,
                    buf: buf.as_mut_slice(),
                })
                .collect();
            let started = Instant::now();
            match device.read_batch(&mut ops) {
                Ok(()) => {
                    self.count_reads(index, ops.iter().map(|op| op.buf.len()), started.elapsed());
                }
                // Each block of the batch is retried alone below, so one bad sector costs
                // only the blocks it holds.
                Err(err) => {
                    tracing::warn!(device = index.0, error = %err, "batched block read failed; reading the blocks one by one");
                    batch_failed.push(index);
                }
            }
        }
        let mut stored = Vec::with_capacity(blocks.len());
        for (&(id, record), mut buf) in blocks.iter().zip(buffers) {
            let primary = if batch_failed.contains(&record.device) {
                self.read_copy(id, &record, record.primary())
            } else {
                self.check_copy(id, &record, record.primary(), &buf)
                    .map(|()| {
                        buf.truncate(record.stored_len as usize);
                        buf
                    })
            };
            stored.push(match primary {
                Ok(bytes) => bytes,
                Err(err) => self.recover_block(id, &record, err)?,
            });
        }
        Ok(stored)
    }

    /// Reads one copy of a block and verifies it; returns its stored bytes.
    fn read_copy(&self, id: u64, record: &BlockRecord, at: Location) -> FsResult<Vec<u8>> {
        self.in_flight.wait_for(std::iter::once(id));
        let mut buf = vec![0u8; record.padded_len()];
        let started = Instant::now();
        let read = self
            .device(at.device)?
            .read_at(at.sector * SECTOR_SIZE, &mut buf);
        if let Err(err) = read {
            self.count_error(at.device, ErrorKind::Read);
            return Err(FsError::Device(err));
        }
        self.count_reads(at.device, std::iter::once(buf.len()), started.elapsed());
        self.check_copy(id, record, at, &buf)?;
        buf.truncate(record.stored_len as usize);
        Ok(buf)
    }

    /// Checks the stored bytes of a copy of block `id` read from `at` (`bytes` may run past
    /// them); a mismatch is counted against the device and logged.
    fn check_copy(
        &self,
        id: u64,
        record: &BlockRecord,
        at: Location,
        bytes: &[u8],
    ) -> FsResult<()> {
        let stored = bytes.get(..record.stored_len as usize).unwrap_or(bytes);
        if stored.len() == record.stored_len as usize
            && crate::codec::checksum64(stored) == record.checksum
        {
            return Ok(());
        }
        self.count_error(at.device, ErrorKind::Checksum);
        tracing::error!(
            block = id,
            device = at.device.0,
            sector = at.sector,
            "checksum mismatch: this copy of the block is damaged"
        );
        Err(FsError::Checksum {
            block: id,
            device: at.device.0,
            sector: at.sector,
        })
    }

    /// Logs, with the file's path, a read of `ino` that found no intact copy of a block.
    fn log_unreadable(&self, ino: InodeId, err: &FsError) {
        let path = self
            .paths_of(&std::collections::BTreeSet::from([ino.0]))
            .ok()
            .and_then(|paths| paths.into_iter().next())
            .and_then(|(_, path)| path);
        tracing::error!(
            inode = ino.0,
            path = path.as_deref().unwrap_or("<unnamed>"),
            error = %err,
            "read failed: no intact copy of a block of this file"
        );
    }

    /// The first copy of block `id` failed with `err`: serves the second copy, if it is intact,
    /// and rewrites the first one with it.
    fn recover_block(&self, id: u64, record: &BlockRecord, err: FsError) -> FsResult<Vec<u8>> {
        let Some(mirror) = record.mirror else {
            return Err(err);
        };
        let content = self.read_copy(id, record, mirror).map_err(|_| err)?;
        self.heal_copy(id, record, &content, record.primary());
        Ok(content)
    }

    /// Writes the intact stored bytes `content` of block `id` over its damaged copy at `at`;
    /// whether that worked (either way it is counted and logged).
    fn heal_copy(&self, id: u64, record: &BlockRecord, content: &[u8], at: Location) -> bool {
        let mut padded = content.to_vec();
        padded.resize(record.padded_len(), 0);
        let started = Instant::now();
        let written = self.device(at.device).and_then(|d| {
            d.write_at(at.sector * SECTOR_SIZE, &padded)
                .map_err(FsError::Device)
        });
        match written {
            Ok(()) => {
                self.count_writes(at.device, std::iter::once(padded.len()), started.elapsed());
                self.count_error(at.device, ErrorKind::Repaired);
                tracing::warn!(
                    block = id,
                    device = at.device.0,
                    sector = at.sector,
                    "damaged copy of a block rewritten from its intact copy"
                );
                true
            }
            Err(err) => {
                self.count_error(at.device, ErrorKind::Write);
                tracing::error!(
                    block = id,
                    device = at.device.0,
                    error = %err,
                    "rewriting a damaged copy of a block failed"
                );
                false
            }
        }
    }
}

impl Inode {
    /// The attributes `stat` reports for this inode.
    pub fn attr(&self) -> Attr {
        Attr {
            ino: self.id,
            kind: self.kind,
            perm: self.perm,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: self.rdev,
            size: self.size,
            blocks: self.allocated / 512,
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            crtime: self.crtime,
            generation: self.generation,
            blksize: 4096,
        }
    }
}

/// `access(2)` semantics for `caller` on a file with `attr` (`mask` of R_OK/W_OK/X_OK bits).
pub fn check_access(attr: &Attr, caller: Caller, mask: i32) -> FsResult<()> {
    let mask = u32::try_from(mask & 0o7).unwrap_or(0);
    if mask == 0 {
        return Ok(());
    }
    if mask & 2 != 0 {
        tx::writable(attr.ino)?;
    }
    if caller.uid == 0 {
        // Root may do anything, except execute a file nobody may execute.
        let any_exec = attr.perm & 0o111 != 0 || attr.kind == FileKind::Directory;
        return if mask & 1 != 0 && !any_exec {
            Err(FsError::Access)
        } else {
            Ok(())
        };
    }
    let granted = if caller.uid == attr.uid {
        (attr.perm >> 6) & 0o7
    } else if caller.gid == attr.gid {
        (attr.perm >> 3) & 0o7
    } else {
        attr.perm & 0o7
    };
    if granted & mask == mask {
        Ok(())
    } else {
        Err(FsError::Access)
    }
}
