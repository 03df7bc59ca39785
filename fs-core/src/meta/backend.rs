//! `MirroredRegionBackend`: redb's `StorageBackend` over a reserved region of pool members,
//! mirrored and checksummed page by page.
//!
//! Each copy of the region is laid out as a 4 KiB header (magic and the logical length of the
//! database, which redb needs to survive remounts), a checksum table (an XXH3-64 for every
//! 4 KiB page of the database), then the database bytes. Every write goes to every copy (the
//! fast member's region and the slow member's mirror); the checksums of the pages it touched are
//! written to every copy's table at the next `sync_data`, before the flush, so they are durable
//! together with the commit that needs them.
//!
//! Page writes are passed to the devices in batches: they are kept by page (a later write of a
//! page replaces the waiting one) until `sync_data`, a read, a scrub, or until
//! [`MAX_UNWRITTEN`] pages are waiting, then each copy gets them as one batch. Nothing redb
//! wrote is durable before `sync_data` anyway, and anything that reads a page from a device
//! passes the waiting writes on first, so the devices and the checksum table agree whenever a
//! page is read.
//!
//! Reads come from the first copy that answers and every page is verified against its checksum.
//! A page that cannot be read or does not match is served from another copy whose page does,
//! and the bad copy is rewritten with it (self-heal); both are logged and recorded for `fsck`.
//! A page that no copy holds intact is an I/O error: never wrong metadata. One exception keeps
//! a crash from making a pool unopenable: when every copy holds the same bytes but the table
//! disagrees, the table entry is the stale one (the crash fell between a page write and its
//! table write) and is corrected; page 0, redb's header, which redb writes in place and
//! verifies itself, is taken from the first readable copy in that case.
//!
//! After a crash the copies' tables may disagree for pages written since the last flush; at
//! open, such pages are copied from the first copy to the others, so the copies agree again
//! and every page below the database length has a known checksum.
//!
//! On an encrypted pool every page is encrypted (AES-256-XTS, the page index as tweak) between
//! redb and everything above: copies, checksums, healing and scrubbing all work on ciphertext,
//! so they need no key, and redb only ever sees plaintext.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

use crate::codec::checksum64;
use crate::codec::crypt::PoolKeys;
use crate::device::{BlockDevice, DeviceError, WriteOp};

/// Magic of the current region layout (header, checksum table, database).
const HEADER_MAGIC: [u8; 8] = *b"AEGISMD2";
/// Magic of the development layout without a checksum table; refused with a clear message.
const OLD_HEADER_MAGIC: [u8; 8] = *b"AEGISMDB";
const HEADER_LEN: u64 = 4096;
/// Granularity of checksums: redb's page size.
pub const PAGE: u64 = 4096;
const PAGE_BYTES: usize = PAGE as usize;
/// Checksums per table block (each block is one page of 8-byte entries).
const SUMS_PER_BLOCK: u64 = PAGE / 8;
const COPY_CHUNK: usize = 1 << 20;
/// A table entry that says nothing (a page never written, or one whose copies' tables disagree).
const UNKNOWN: u64 = 0;
/// Page writes waiting for their batch are passed on once this many pages wait.
const MAX_UNWRITTEN: usize = 2048;
/// The damage log keeps at most this many events (counts keep growing).
const MAX_DAMAGE_EVENTS: usize = 10_000;

/// One copy of the metadata region: `len` bytes at `offset` on `device`.
#[derive(Debug, Clone)]
pub struct RegionCopy {
    pub device: Arc<dyn BlockDevice>,
    pub offset: u64,
    pub len: u64,
}

/// Where the checksum table and the database lie inside a region of a given length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    table_len: u64,
    capacity: u64,
}

impl Layout {
    fn of(region_len: u64) -> Self {
        let usable = region_len.saturating_sub(HEADER_LEN);
        let mut pages = usable / (PAGE + 8);
        loop {
            let table_len = (pages * 8).div_ceil(PAGE) * PAGE;
            if table_len + pages * PAGE <= usable || pages == 0 {
                return Self {
                    table_len,
                    capacity: pages * PAGE,
                };
            }
            pages -= 1;
        }
    }

    fn data_offset(self) -> u64 {
        HEADER_LEN + self.table_len
    }
}

/// Where the database bytes start inside a region of `region_len` bytes (for tools and tests
/// that address metadata pages on a device).
pub fn database_offset(region_len: u64) -> u64 {
    Layout::of(region_len).data_offset()
}

impl RegionCopy {
    fn layout(&self) -> Layout {
        Layout::of(self.len)
    }

    fn name(&self) -> &str {
        self.device.name()
    }

    fn read_data(&self, offset: u64, out: &mut [u8]) -> Result<(), DeviceError> {
        self.device
            .read_at(self.offset + self.layout().data_offset() + offset, out)
    }

    fn write_data(&self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        self.device
            .write_at(self.offset + self.layout().data_offset() + offset, data)
    }

    fn read_table(&self, pages: u64) -> Result<Vec<u64>, DeviceError> {
        let mut raw =
            vec![0u8; usize::try_from(pages.div_ceil(SUMS_PER_BLOCK) * PAGE).unwrap_or(0)];
        self.device.read_at(self.offset + HEADER_LEN, &mut raw)?;
        Ok(raw
            .chunks_exact(8)
            .take(usize::try_from(pages).unwrap_or(0))
            .map(|entry| {
                let mut field = [0u8; 8];
                field.copy_from_slice(entry);
                u64::from_le_bytes(field)
            })
            .collect())
    }
}

/// How reads treat the copies. The default serves the first good copy and heals bad ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPolicy {
    /// Read and compare every copy of every page read, not only when the first one is bad
    /// (`fsck` uses this to check both copies of every live page).
    pub verify_every_copy: bool,
    /// Rewrite a bad copy of a page from a good one.
    pub heal: bool,
}

impl Default for ReadPolicy {
    fn default() -> Self {
        Self {
            verify_every_copy: false,
            heal: true,
        }
    }
}

/// A metadata page found bad on one copy (or on all of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageDamage {
    /// Page index inside the database.
    pub page: u64,
    /// The device whose copy was bad; `None` when no copy was intact.
    pub device: Option<String>,
    pub cause: String,
    /// The bad copy was rewritten from a good one.
    pub healed: bool,
}

/// What resolving one page found.
#[derive(Debug, Clone, Copy, Default)]
struct PageOutcome {
    bad_copies: u64,
    healed: u64,
}

/// What scrubbing a range of metadata pages found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageScrub {
    pub checked: u64,
    /// Copies that failed to read or to match their checksum.
    pub bad_copies: u64,
    /// Bad copies rewritten from a good one.
    pub healed: u64,
    /// Pages intact on no copy.
    pub unrecoverable: u64,
}

/// The region's length, policy and damage log.
#[derive(Debug)]
struct Shared {
    len: Mutex<u64>,
    capacity: u64,
    policy: Mutex<ReadPolicy>,
    damage: Mutex<Vec<PageDamage>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn len(&self) -> u64 {
        *lock(&self.len)
    }

    fn record(&self, damage: PageDamage) {
        match &damage.device {
            Some(device) => tracing::warn!(
                page = damage.page,
                device,
                cause = damage.cause,
                healed = damage.healed,
                "metadata page is bad on one copy; served from the other"
            ),
            None => tracing::error!(
                page = damage.page,
                cause = damage.cause,
                "metadata page is bad on every copy"
            ),
        }
        let mut log = lock(&self.damage);
        if log.len() < MAX_DAMAGE_EVENTS {
            log.push(damage);
        }
    }
}

/// A handle on the metadata region that stays usable after redb owns the backend: its use
/// (the database's high-water mark; redb reuses free pages inside it), the read policy, and the
/// damage found so far.
#[derive(Debug, Clone)]
pub struct RegionHandle {
    region: Arc<Region>,
}

impl RegionHandle {
    pub fn used(&self) -> u64 {
        self.region.shared.len()
    }

    pub fn capacity(&self) -> u64 {
        self.region.shared.capacity
    }

    pub fn set_policy(&self, policy: ReadPolicy) {
        *lock(&self.region.shared.policy) = policy;
    }

    /// Damaged pages found since the pool was opened (at most 10,000 are kept).
    pub fn damage(&self) -> Vec<PageDamage> {
        lock(&self.region.shared.damage).clone()
    }

    /// Pages of the database (rounded up).
    pub fn pages(&self) -> u64 {
        self.used().div_ceil(PAGE)
    }

    /// Verifies every copy of metadata pages `range` and heals bad copies (for scrub).
    pub fn scrub_pages(&self, range: std::ops::Range<u64>) -> PageScrub {
        self.region.scrub_pages(range)
    }

    /// How many copies every write goes to.
    pub fn copy_count(&self) -> usize {
        self.region.copies().len()
    }

    /// Whether a copy lies on `device`.
    pub fn has_copy_on(&self, device: &Arc<dyn BlockDevice>) -> bool {
        self.region
            .copies()
            .iter()
            .any(|c| Arc::ptr_eq(&c.device, device))
    }

    /// Adds a copy, made current from the others before it is used (see `Region::add_copy`).
    pub fn add_copy(&self, copy: RegionCopy) -> io::Result<()> {
        self.region.add_copy(copy)
    }

    /// Stops using the copy on `device`; the last copy stays.
    pub fn remove_copy(&self, device: &Arc<dyn BlockDevice>) -> io::Result<()> {
        self.region.remove_copy(device)
    }
}

/// Checksums of the database pages, the table blocks changed since the last sync, and the page
/// writes not yet passed to the devices (whose checksums are already in `sums`).
#[derive(Debug, Default)]
struct PageSums {
    sums: Vec<u64>,
    dirty_blocks: BTreeSet<u64>,
    /// By page index, each with the page's checksum from before it was queued: a page written
    /// again before its batch replaces the waiting version.
    unwritten: BTreeMap<u64, (u64, Vec<u8>)>,
    /// Why a batch of page writes failed; from then on nothing more is queued or synced.
    failed: Option<String>,
}

impl PageSums {
    fn get(&self, page: u64) -> u64 {
        usize::try_from(page)
            .ok()
            .and_then(|i| self.sums.get(i).copied())
            .unwrap_or(UNKNOWN)
    }

    fn set(&mut self, page: u64, sum: u64) {
        let Ok(index) = usize::try_from(page) else {
            return;
        };
        if self.sums.len() <= index {
            self.sums.resize(index + 1, UNKNOWN);
        }
        self.sums[index] = sum;
        self.dirty_blocks.insert(page / SUMS_PER_BLOCK);
    }

    fn check_not_failed(&self) -> io::Result<()> {
        match &self.failed {
            Some(cause) => Err(io::Error::other(format!(
                "an earlier metadata write failed ({cause}); nothing more is written"
            ))),
            None => Ok(()),
        }
    }

    /// The table block `block` as stored on disk.
    fn encode_block(&self, block: u64) -> Vec<u8> {
        let mut raw = vec![0u8; PAGE_BYTES];
        for (i, entry) in raw.chunks_exact_mut(8).enumerate() {
            entry.copy_from_slice(&self.get(block * SUMS_PER_BLOCK + i as u64).to_le_bytes());
        }
        raw
    }
}

/// The whole pages covering `len` bytes at `offset`: the first page, the span's length in bytes,
/// and where `offset` lies inside it; `None` when the range is already whole pages.
fn page_span(offset: u64, len: usize) -> io::Result<Option<(u64, usize, usize)>> {
    if offset.is_multiple_of(PAGE) && (len as u64).is_multiple_of(PAGE) {
        return Ok(None);
    }
    let first = offset / PAGE;
    let end = (offset + len as u64).div_ceil(PAGE);
    let span = usize::try_from((end - first) * PAGE).map_err(io::Error::other)?;
    let at = usize::try_from(offset - first * PAGE).map_err(io::Error::other)?;
    Ok(Some((first, span, at)))
}

/// The checksum of one page; never [`UNKNOWN`].
fn page_sum(page: &[u8]) -> u64 {
    checksum64(page).max(1)
}

/// The header of a copy: the database length, and whether the region is open (a region
/// still open at the next open was not closed cleanly).
fn encode_header(len: u64, open: bool) -> Vec<u8> {
    let mut header = vec![0u8; HEADER_LEN as usize];
    header[0..8].copy_from_slice(&HEADER_MAGIC);
    header[8..16].copy_from_slice(&len.to_le_bytes());
    header[16..24].copy_from_slice(&u64::from(open).to_le_bytes());
    let checksum = checksum64(&header[0..24]);
    header[24..32].copy_from_slice(&checksum.to_le_bytes());
    header
}

/// Why a copy's header is unusable.
#[derive(Debug, PartialEq, Eq)]
enum HeaderProblem {
    Damaged,
    OldLayout,
}

/// A decoded header: the database length and the open flag.
fn decode_header(header: &[u8]) -> Result<(u64, bool), HeaderProblem> {
    if header[0..8] == OLD_HEADER_MAGIC {
        return Err(HeaderProblem::OldLayout);
    }
    if header[0..8] != HEADER_MAGIC {
        return Err(HeaderProblem::Damaged);
    }
    let field = |range: std::ops::Range<usize>| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&header[range]);
        u64::from_le_bytes(bytes)
    };
    if checksum64(&header[0..24]) != field(24..32) {
        return Err(HeaderProblem::Damaged);
    }
    Ok((field(8..16), field(16..24) & 1 == 1))
}

/// Copies the header, the checksum table and `len` database bytes of `from` over `to`, then
/// flushes `to`.
fn restore_copy(from: &RegionCopy, to: &RegionCopy, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; COPY_CHUNK];
    let total = from.layout().data_offset() + len;
    let mut at = 0;
    while at < total {
        let chunk = usize::try_from(total - at).map_or(COPY_CHUNK, |n| n.min(COPY_CHUNK));
        from.device
            .read_at(from.offset + at, &mut buf[..chunk])
            .map_err(to_io)?;
        to.device
            .write_at(to.offset + at, &buf[..chunk])
            .map_err(to_io)?;
        at += chunk as u64;
    }
    to.device.flush().map_err(to_io)
}

fn to_io(err: DeviceError) -> io::Error {
    io::Error::other(err)
}

/// One or more identical copies of the metadata region, with their page checksums.
#[derive(Debug)]
struct Region {
    /// Changed only while `pages` is held, by device management (a copy added or removed).
    copies: RwLock<Vec<RegionCopy>>,
    /// Held across every device access, so a page and its checksum always change together.
    pages: Mutex<PageSums>,
    shared: Shared,
    /// The page cipher of an encrypted pool.
    cipher: Option<Arc<PoolKeys>>,
}

impl Region {
    fn new(
        copies: Vec<RegionCopy>,
        len: u64,
        pages: PageSums,
        cipher: Option<Arc<PoolKeys>>,
    ) -> io::Result<Self> {
        if copies.is_empty() {
            return Err(io::Error::other("no metadata copies"));
        }
        if copies.iter().any(|c| c.layout() != copies[0].layout()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the metadata copies have different sizes",
            ));
        }
        let capacity = copies[0].layout().capacity;
        Ok(Self {
            copies: RwLock::new(copies),
            pages: Mutex::new(pages),
            shared: Shared {
                len: Mutex::new(len),
                capacity,
                policy: Mutex::new(ReadPolicy::default()),
                damage: Mutex::new(Vec::new()),
            },
            cipher,
        })
    }

    /// Initialises empty regions (length 0) on every copy; used by `format`.
    pub fn create(copies: Vec<RegionCopy>, cipher: Option<Arc<PoolKeys>>) -> io::Result<Self> {
        let header = encode_header(0, true);
        for copy in &copies {
            copy.device.write_at(copy.offset, &header).map_err(to_io)?;
            copy.device.flush().map_err(to_io)?;
        }
        Self::new(copies, 0, PageSums::default(), cipher)
    }

    /// Opens existing regions. The length comes from the first copy with a valid header; a
    /// copy whose header is unreadable or damaged is rewritten from that copy before use, and
    /// pages whose checksums the copies disagree on are copied from the first copy, so the
    /// copies agree again.
    pub fn open(copies: Vec<RegionCopy>, cipher: Option<Arc<PoolKeys>>) -> io::Result<Self> {
        let mut header = vec![0u8; HEADER_LEN as usize];
        let headers: Vec<Result<(u64, bool), HeaderProblem>> = copies
            .iter()
            .map(|copy| {
                copy.device
                    .read_at(copy.offset, &mut header)
                    .map_err(|_| HeaderProblem::Damaged)?;
                decode_header(&header)
            })
            .collect();
        if headers.contains(&Err(HeaderProblem::OldLayout)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the metadata region uses an earlier development layout without page checksums; \
                 this version cannot read it (reformat the pool)",
            ));
        }
        let Some(good) = headers.iter().position(Result::is_ok) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no metadata region header is readable on any copy",
            ));
        };
        let (len, _) = headers[good].as_ref().copied().unwrap_or((0, false));
        let unclean = headers.iter().any(|h| !matches!(h, Ok((_, false))));
        if copies.iter().any(|copy| len > copy.layout().capacity) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "metadata length exceeds its region",
            ));
        }
        for (copy, found) in copies.iter().zip(&headers) {
            if found.is_err() {
                tracing::warn!(
                    device = copy.name(),
                    source = copies[good].name(),
                    "metadata copy is damaged; restoring it from the other copy"
                );
                restore_copy(&copies[good], copy, len)?;
            }
        }
        let sums = Self::merge_tables(&copies, len.div_ceil(PAGE))?;
        let backend = Self::new(
            copies,
            len,
            PageSums {
                sums,
                ..PageSums::default()
            },
            cipher,
        )?;
        backend.reconcile(unclean)?;
        Ok(backend)
    }

    /// The checksum of each page as the copies' tables agree on it ([`UNKNOWN`] where they
    /// do not). A copy whose table cannot be read has no say.
    fn merge_tables(copies: &[RegionCopy], pages: u64) -> io::Result<Vec<u64>> {
        let tables: Vec<Vec<u64>> = copies
            .iter()
            .filter_map(|copy| match copy.read_table(pages) {
                Ok(table) => Some(table),
                Err(err) => {
                    tracing::warn!(device = copy.name(), error = %err, "metadata checksum table unreadable");
                    None
                }
            })
            .collect();
        let Some(first) = tables.first() else {
            return Err(io::Error::other(
                "the metadata checksum table is unreadable on every copy",
            ));
        };
        Ok(first
            .iter()
            .enumerate()
            .map(|(i, &sum)| {
                if tables.iter().all(|t| t[i] == sum) {
                    sum
                } else {
                    UNKNOWN
                }
            })
            .collect())
    }

    /// Makes the copies agree and every page's checksum known, then marks the region open.
    /// After an unclean close (or when the tables disagree) every page is compared across the
    /// copies: pages written since the last flush may differ (none of them live), and each
    /// such page is settled on the copy that matches its checksum, else on the first copy.
    fn reconcile(&self, unclean: bool) -> io::Result<()> {
        let mut pages = self.lock_pages();
        let count = self.shared.len().div_ceil(PAGE);
        if unclean || (0..count).any(|p| pages.get(p) == UNKNOWN) {
            let mut settled = 0;
            for page in 0..count {
                settled += usize::from(self.settle_page(&mut pages, page)?);
            }
            if settled > 0 {
                tracing::info!(
                    pages = settled,
                    "metadata pages written just before an unclean shutdown differed between the copies; settled"
                );
            }
        }
        self.sync_locked(&mut pages)?;
        self.write_headers(self.shared.len(), true)
    }

    /// Makes every copy of `page` hold the same bytes, with a known checksum; whether any
    /// copy had to change.
    fn settle_page(&self, pages: &mut PageSums, page: u64) -> io::Result<bool> {
        let expected = pages.get(page);
        let versions = self.read_versions(page);
        let winner = versions
            .iter()
            .flatten()
            .find(|d| expected != UNKNOWN && page_sum(d) == expected)
            .or_else(|| versions.iter().flatten().next())
            .cloned();
        let Some(winner) = winner else {
            return Ok(false);
        };
        let mut changed = false;
        for (copy, version) in self.copies().iter().zip(&versions) {
            if version.as_ref().ok() != Some(&winner) {
                copy.write_data(page * PAGE, &winner).map_err(to_io)?;
                changed = true;
            }
        }
        if page_sum(&winner) != expected {
            pages.set(page, page_sum(&winner));
        }
        Ok(changed)
    }

    /// Page `page` as each copy holds it.
    fn read_versions(&self, page: u64) -> Vec<Result<Vec<u8>, DeviceError>> {
        self.copies()
            .iter()
            .map(|copy| {
                let mut buf = vec![0u8; PAGE_BYTES];
                copy.read_data(page * PAGE, &mut buf).map(|()| buf)
            })
            .collect()
    }

    /// Writes every copy's header and flushes.
    fn write_headers(&self, len: u64, open: bool) -> io::Result<()> {
        let header = encode_header(len, open);
        for copy in self.copies().iter() {
            copy.device.write_at(copy.offset, &header).map_err(to_io)?;
            copy.device.flush().map_err(to_io)?;
        }
        Ok(())
    }

    /// Verifies every copy of pages `range` (clipped to the database) and rewrites bad copies
    /// from a good one, as a read that verifies every copy would.
    fn scrub_pages(&self, range: std::ops::Range<u64>) -> PageScrub {
        let mut pages = self.lock_pages();
        let mut result = PageScrub::default();
        if let Err(err) = self.write_unwritten(&mut pages) {
            // Their commit fails with them (the region takes no more syncs).
            tracing::warn!(error = %err, "metadata scrub stopped: page writes failed");
            return result;
        }
        let end = range.end.min(self.shared.len().div_ceil(PAGE));
        let policy = ReadPolicy {
            verify_every_copy: true,
            heal: true,
        };
        let mut buf = vec![0u8; PAGE_BYTES];
        for page in range.start..end {
            result.checked += 1;
            match self.resolve_page(&mut pages, page, &mut buf, policy) {
                Ok(outcome) => {
                    result.bad_copies += outcome.bad_copies;
                    result.healed += outcome.healed;
                }
                Err(_) => result.unrecoverable += 1,
            }
        }
        result
    }

    /// Clean close: the table is written, every copy flushed and marked closed.
    fn close(&self) -> io::Result<()> {
        let mut pages = self.lock_pages();
        self.sync_locked(&mut pages)?;
        self.write_headers(self.shared.len(), false)
    }

    fn lock_pages(&self) -> MutexGuard<'_, PageSums> {
        lock(&self.pages)
    }

    fn copies(&self) -> RwLockReadGuard<'_, Vec<RegionCopy>> {
        self.copies.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a copy: everything up to the database length is copied to it from the first
    /// copy (the checksum table synced first), it is flushed, and from then on every write
    /// goes to it too. It must have the same length as the others.
    fn add_copy(&self, copy: RegionCopy) -> io::Result<()> {
        let mut pages = self.lock_pages();
        self.sync_locked(&mut pages)?;
        let source = self.copies()[0].clone();
        if copy.layout() != source.layout() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a new metadata copy must have the length of the others",
            ));
        }
        restore_copy(&source, &copy, self.shared.len())?;
        self.copies
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(copy);
        Ok(())
    }

    /// Stops writing to the copy on `device` (the last copy is never removed).
    fn remove_copy(&self, device: &Arc<dyn BlockDevice>) -> io::Result<()> {
        let mut pages = self.lock_pages();
        self.sync_locked(&mut pages)?;
        let mut copies = self.copies.write().unwrap_or_else(PoisonError::into_inner);
        let remaining = copies
            .iter()
            .filter(|c| !Arc::ptr_eq(&c.device, device))
            .count();
        if remaining == 0 {
            return Err(io::Error::other("the last metadata copy cannot be removed"));
        }
        copies.retain(|c| !Arc::ptr_eq(&c.device, device));
        Ok(())
    }

    /// Keeps the whole pages `data`, from page `first` on, for the next batch of writes, with
    /// their checksums; passes the batch on when it is large enough.
    fn queue_pages(&self, pages: &mut PageSums, first: u64, data: &[u8]) -> io::Result<()> {
        pages.check_not_failed()?;
        for (i, page_buf) in data.chunks_exact(PAGE_BYTES).enumerate() {
            let page = first + i as u64;
            let before = pages.get(page);
            pages.set(page, page_sum(page_buf));
            let before = pages.unwritten.get(&page).map_or(before, |(sum, _)| *sum);
            pages.unwritten.insert(page, (before, page_buf.to_vec()));
        }
        if pages.unwritten.len() >= MAX_UNWRITTEN {
            self.write_unwritten(pages)?;
        }
        Ok(())
    }

    /// Passes the waiting page writes to every copy, one batch per copy.
    ///
    /// When a batch fails, some copies may hold some of its pages: their checksums go back to
    /// what they were before, so reads keep serving what the copies held, and the region takes
    /// no more writes and no sync. The commit the pages belong to fails whoever meets the error
    /// (redb, or a scrub between redb's writes and its `sync_data`), and the region is left
    /// open, so the next open settles the copies.
    fn write_unwritten(&self, pages: &mut PageSums) -> io::Result<()> {
        if pages.unwritten.is_empty() {
            return Ok(());
        }
        let result = self.copies().iter().try_for_each(|copy| {
            let data_offset = copy.offset + copy.layout().data_offset();
            let ops: Vec<WriteOp<'_>> = pages
                .unwritten
                .iter()
                .map(|(page, (_, data))| WriteOp {
                    offset: data_offset + page * PAGE,
                    data,
                })
                .collect();
            copy.device.write_batch(&ops).map_err(to_io)
        });
        let unwritten = std::mem::take(&mut pages.unwritten);
        if let Err(err) = &result {
            for (page, (before, _)) in unwritten {
                pages.set(page, before);
            }
            pages.failed = Some(err.to_string());
        }
        result
    }

    /// Reads whole pages starting at page `first` into `out` (a multiple of the page size),
    /// verifying each one and resolving bad ones from the other copies.
    fn read_pages(&self, pages: &mut PageSums, first: u64, out: &mut [u8]) -> io::Result<()> {
        self.write_unwritten(pages)?;
        let policy = *lock(&self.shared.policy);
        let primary_ok = self.copies()[0].read_data(first * PAGE, out).is_ok();
        for (i, page_buf) in out.chunks_exact_mut(PAGE_BYTES).enumerate() {
            let page = first + i as u64;
            let expected = pages.get(page);
            let verified = primary_ok && (expected == UNKNOWN || page_sum(page_buf) == expected);
            if !verified || (policy.verify_every_copy && self.copies().len() > 1) {
                self.resolve_page(pages, page, page_buf, policy)?;
            }
        }
        Ok(())
    }

    /// Reads page `page` from every copy, fills `out` with an intact version, and records (and,
    /// by policy, rewrites) every copy that is not intact.
    fn resolve_page(
        &self,
        pages: &mut PageSums,
        page: u64,
        out: &mut [u8],
        policy: ReadPolicy,
    ) -> io::Result<PageOutcome> {
        let expected = pages.get(page);
        let versions = self.read_versions(page);
        let intact = |data: &[u8]| expected == UNKNOWN || page_sum(data) == expected;
        let good = versions
            .iter()
            .find_map(|v| v.as_ref().ok().filter(|d| intact(d)))
            .cloned();
        let Some(good) = good else {
            self.resolve_unverifiable(pages, page, out, &versions)?;
            return Ok(PageOutcome::default());
        };
        let mut outcome = PageOutcome::default();
        for (copy, version) in self.copies().iter().zip(&versions) {
            let cause = match version {
                Err(err) => format!("read failed: {err}"),
                Ok(data) if !intact(data) => "checksum mismatch".to_owned(),
                Ok(data) if *data != good => "differs from the other copy".to_owned(),
                Ok(_) => continue,
            };
            let healed = policy.heal
                && copy
                    .write_data(page * PAGE, &good)
                    .and_then(|()| copy.device.flush())
                    .is_ok();
            outcome.bad_copies += 1;
            outcome.healed += u64::from(healed);
            self.shared.record(PageDamage {
                page,
                device: Some(copy.name().to_owned()),
                cause,
                healed,
            });
        }
        out.copy_from_slice(&good);
        Ok(outcome)
    }

    /// No copy of `page` matches its checksum. When every copy holds the same bytes the table
    /// entry is stale (a crash between the page write and the table write) and is corrected;
    /// so is the database header page, which redb writes in place and verifies itself.
    /// Anything else is an I/O error.
    fn resolve_unverifiable(
        &self,
        pages: &mut PageSums,
        page: u64,
        out: &mut [u8],
        versions: &[Result<Vec<u8>, DeviceError>],
    ) -> io::Result<()> {
        let readable: Vec<&Vec<u8>> = versions.iter().filter_map(|v| v.as_ref().ok()).collect();
        let all_agree =
            readable.len() == versions.len() && readable.iter().all(|d| *d == readable[0]);
        match readable.first() {
            Some(first) if all_agree || page == 0 => {
                tracing::info!(page, "metadata page checksum entry was stale; corrected");
                out.copy_from_slice(first);
                pages.set(page, page_sum(first));
                Ok(())
            }
            _ => {
                let cause = if readable.is_empty() {
                    "unreadable on every copy"
                } else {
                    "fails its checksum on every copy"
                };
                self.shared.record(PageDamage {
                    page,
                    device: None,
                    cause: cause.to_owned(),
                    healed: false,
                });
                Err(io::Error::other(format!("metadata page {page} {cause}")))
            }
        }
    }

    /// Writes `data` at `offset` to every copy (in the next batch) and records the checksums
    /// of the pages it covers; pages it covers only in part are read (verified), patched and
    /// written whole.
    fn write_locked(&self, pages: &mut PageSums, offset: u64, data: &[u8]) -> io::Result<()> {
        let Some((first, span, at)) = page_span(offset, data.len())? else {
            return self.queue_pages(pages, offset / PAGE, data);
        };
        let mut buf = vec![0u8; span];
        self.read_pages(pages, first, &mut buf)?;
        buf[at..at + data.len()].copy_from_slice(data);
        self.write_locked(pages, first * PAGE, &buf)
    }

    /// Writes the waiting page writes and the changed checksum table blocks to every copy,
    /// then flushes every copy.
    fn sync_locked(&self, pages: &mut PageSums) -> io::Result<()> {
        pages.check_not_failed()?;
        self.write_unwritten(pages)?;
        for &block in &pages.dirty_blocks {
            let raw = pages.encode_block(block);
            for copy in self.copies().iter() {
                copy.device
                    .write_at(copy.offset + HEADER_LEN + block * PAGE, &raw)
                    .map_err(to_io)?;
            }
        }
        pages.dirty_blocks.clear();
        for copy in self.copies().iter() {
            copy.device.flush().map_err(to_io)?;
        }
        Ok(())
    }
}

impl Region {
    fn db_len(&self) -> Result<u64, io::Error> {
        Ok(self.shared.len())
    }

    fn db_read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        if offset + out.len() as u64 > self.shared.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the metadata",
            ));
        }
        let mut pages = self.lock_pages();
        let Some((first, span, at)) = page_span(offset, out.len())? else {
            self.read_pages(&mut pages, offset / PAGE, out)?;
            self.decrypt(offset / PAGE, out);
            return Ok(());
        };
        let mut buf = vec![0u8; span];
        self.read_pages(&mut pages, first, &mut buf)?;
        self.decrypt(first, &mut buf);
        out.copy_from_slice(&buf[at..at + out.len()]);
        Ok(())
    }

    /// Decrypts whole pages read from the devices (a no-op on an unencrypted pool).
    fn decrypt(&self, first_page: u64, buf: &mut [u8]) {
        if let Some(keys) = &self.cipher {
            keys.decrypt_pages(first_page, buf);
        }
    }

    /// Writes redb's bytes `data` at `offset`: on an encrypted pool the pages they cover are
    /// assembled in plaintext (partial ones read and decrypted first) and encrypted whole.
    fn store(&self, pages: &mut PageSums, offset: u64, data: &[u8]) -> io::Result<()> {
        let Some(keys) = &self.cipher else {
            return self.write_locked(pages, offset, data);
        };
        let (first, mut buf) = match page_span(offset, data.len())? {
            None => (offset / PAGE, data.to_vec()),
            Some((first, span, at)) => {
                let mut buf = vec![0u8; span];
                self.read_pages(pages, first, &mut buf)?;
                keys.decrypt_pages(first, &mut buf);
                buf[at..at + data.len()].copy_from_slice(data);
                (first, buf)
            }
        };
        keys.encrypt_pages(first, &mut buf);
        self.write_locked(pages, first * PAGE, &buf)
    }

    fn db_set_len(&self, new_len: u64) -> Result<(), io::Error> {
        let mut pages = self.lock_pages();
        let mut len = lock(&self.shared.len);
        if new_len > self.shared.capacity {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "the metadata region is full",
            ));
        }
        if new_len > *len {
            let zeros = vec![0u8; COPY_CHUNK];
            let mut at = *len;
            while at < new_len {
                let chunk = usize::try_from(new_len - at).map_or(COPY_CHUNK, |n| n.min(COPY_CHUNK));
                self.store(&mut pages, at, &zeros[..chunk])?;
                at += chunk as u64;
            }
        }
        let header = encode_header(new_len, true);
        for copy in self.copies().iter() {
            copy.device.write_at(copy.offset, &header).map_err(to_io)?;
        }
        *len = new_len;
        Ok(())
    }

    fn db_sync(&self) -> Result<(), io::Error> {
        let mut pages = self.lock_pages();
        self.sync_locked(&mut pages)
    }

    fn db_write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        if offset + data.len() as u64 > self.shared.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write past the end of the metadata",
            ));
        }
        let mut pages = self.lock_pages();
        self.store(&mut pages, offset, data)
    }
}

/// redb storage on the metadata region: mirrored, checksummed pages (see the module docs).
#[derive(Debug)]
pub struct MirroredRegionBackend(Arc<Region>);

impl MirroredRegionBackend {
    /// Initialises empty regions (length 0) on every copy; used by `format`. Pages are
    /// encrypted with `cipher` when given.
    pub fn create(copies: Vec<RegionCopy>, cipher: Option<Arc<PoolKeys>>) -> io::Result<Self> {
        Region::create(copies, cipher).map(|region| Self(Arc::new(region)))
    }

    /// Opens existing regions (see [`Region::open`]).
    pub fn open(copies: Vec<RegionCopy>, cipher: Option<Arc<PoolKeys>>) -> io::Result<Self> {
        Region::open(copies, cipher).map(|region| Self(Arc::new(region)))
    }

    /// A handle on the region that stays usable after redb owns the backend.
    pub fn handle(&self) -> RegionHandle {
        RegionHandle {
            region: Arc::clone(&self.0),
        }
    }
}

impl redb::StorageBackend for MirroredRegionBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.0.db_len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.0.db_read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.0.db_set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.0.db_sync()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.0.db_write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.0.close()
    }
}

#[cfg(test)]
mod tests {
    use redb::StorageBackend;

    use super::*;
    use crate::device::{CutMode, FaultPlan, FaultyDevice, MemDevice};

    const REGION: u64 = 4 << 20;

    struct Fixture {
        fast: Arc<FaultyDevice>,
        slow: Arc<FaultyDevice>,
    }

    impl Fixture {
        fn new() -> Self {
            let fast = Arc::new(FaultyDevice::new(Arc::new(MemDevice::new(
                "fast",
                REGION * 2,
            ))));
            let slow = Arc::new(FaultyDevice::new(Arc::new(MemDevice::new(
                "slow",
                REGION * 2,
            ))));
            Self { fast, slow }
        }

        fn copies(&self) -> Vec<RegionCopy> {
            [&self.fast, &self.slow]
                .into_iter()
                .map(|d| RegionCopy {
                    device: Arc::clone(d) as Arc<dyn BlockDevice>,
                    offset: REGION,
                    len: REGION,
                })
                .collect()
        }

        /// Device offset of database byte `offset`.
        fn data_at(&self, offset: u64) -> u64 {
            REGION + Layout::of(REGION).data_offset() + offset
        }

        /// A backend holding three pages of distinct bytes, synced.
        fn written(&self) -> (MirroredRegionBackend, Vec<u8>) {
            let backend = MirroredRegionBackend::create(self.copies(), None).unwrap();
            let data: Vec<u8> = (0..3 * PAGE_BYTES).map(|i| (i % 251) as u8).collect();
            backend.set_len(data.len() as u64).unwrap();
            backend.write(0, &data).unwrap();
            backend.sync_data().unwrap();
            (backend, data)
        }

        fn page_on(&self, device: &FaultyDevice, page: u64) -> Vec<u8> {
            let mut buf = vec![0u8; PAGE_BYTES];
            device.read_at(self.data_at(page * PAGE), &mut buf).unwrap();
            buf
        }
    }

    fn read(backend: &MirroredRegionBackend, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut out = vec![0u8; len];
        backend.read(offset, &mut out).map(|()| out)
    }

    #[test]
    fn layout_fits_header_table_and_pages_in_the_region() {
        for region in [HEADER_LEN, 8192, 16 << 20, (16 << 20) + 12_345, 64 << 30] {
            let layout = Layout::of(region);
            assert!(
                HEADER_LEN + layout.table_len + layout.capacity <= region,
                "{region}"
            );
            assert!(layout.table_len / 8 >= layout.capacity / PAGE, "{region}");
            assert_eq!(layout.capacity % PAGE, 0);
        }
        assert!(Layout::of(16 << 20).capacity > (16 << 20) * 99 / 100);
    }

    #[test]
    fn pages_survive_reopen_with_their_checksums() {
        let fx = Fixture::new();
        let (backend, data) = fx.written();
        backend.write(100, b"unaligned").unwrap();
        backend.sync_data().unwrap();
        drop(backend);
        let backend = MirroredRegionBackend::open(fx.copies(), None).unwrap();
        let mut expected = data;
        expected[100..109].copy_from_slice(b"unaligned");
        assert_eq!(read(&backend, 0, expected.len()).unwrap(), expected);
        assert_eq!(read(&backend, 99, 11).unwrap(), expected[99..110]);
        assert!(backend.handle().damage().is_empty());
    }

    #[test]
    fn encrypted_pages_hold_no_plaintext_and_read_back_after_reopen() {
        use crate::codec::crypt::MasterKey;
        let fx = Fixture::new();
        let keys = Arc::new(PoolKeys::derive(&MasterKey::generate().unwrap()));
        let secret = b"a file name nobody may read: payroll-2026.xlsx";
        let backend = MirroredRegionBackend::create(fx.copies(), Some(Arc::clone(&keys))).unwrap();
        backend.set_len(3 * PAGE).unwrap();
        backend.write(5000, secret).unwrap();
        backend.sync_data().unwrap();
        drop(backend);
        for device in [&fx.fast, &fx.slow] {
            let mut raw = vec![0u8; REGION as usize * 2];
            device.read_at(0, &mut raw).unwrap();
            assert!(!raw.windows(secret.len()).any(|w| w == secret));
            // Pages redb never wrote are encrypted zeros, not zeros.
            assert_ne!(fx.page_on(device, 2), vec![0u8; PAGE_BYTES]);
        }
        let backend = MirroredRegionBackend::open(fx.copies(), Some(Arc::clone(&keys))).unwrap();
        assert_eq!(read(&backend, 5000, secret.len()).unwrap(), secret);
        assert_eq!(read(&backend, 2 * PAGE, 16).unwrap(), vec![0u8; 16]);
        drop(backend);
        // The wrong key reads garbage (redb then refuses the database); never the secret.
        let other = Arc::new(PoolKeys::derive(&MasterKey::generate().unwrap()));
        let backend = MirroredRegionBackend::open(fx.copies(), Some(other)).unwrap();
        assert_ne!(read(&backend, 5000, secret.len()).unwrap(), secret);
    }

    #[test]
    fn a_flipped_bit_on_the_first_copy_is_served_from_the_mirror_and_healed() {
        let fx = Fixture::new();
        let (backend, data) = fx.written();
        fx.fast.corrupt(fx.data_at(PAGE + 17), 3).unwrap();
        assert_eq!(read(&backend, 0, data.len()).unwrap(), data);
        let damage = backend.handle().damage();
        assert_eq!(damage.len(), 1, "{damage:?}");
        assert_eq!(damage[0].page, 1);
        assert_eq!(damage[0].device.as_deref(), Some("faulty:fast"));
        assert!(damage[0].healed);
        assert_eq!(fx.page_on(&fx.fast, 1), data[PAGE_BYTES..2 * PAGE_BYTES]);
    }

    #[test]
    fn a_read_error_on_the_first_copy_is_served_from_the_mirror() {
        let fx = Fixture::new();
        let (backend, data) = fx.written();
        let at = fx.data_at(2 * PAGE);
        fx.fast.set_plan(FaultPlan {
            read_error_ranges: std::iter::once(at..at + 1).collect(),
            ..FaultPlan::default()
        });
        assert_eq!(read(&backend, 0, data.len()).unwrap(), data);
        let damage = backend.handle().damage();
        assert_eq!(damage.len(), 1, "{damage:?}");
        assert_eq!(damage[0].page, 2);
        assert!(damage[0].cause.starts_with("read failed"), "{damage:?}");
    }

    #[test]
    fn a_page_damaged_on_every_copy_is_an_error_not_wrong_data() {
        let fx = Fixture::new();
        let (backend, _) = fx.written();
        fx.fast.corrupt(fx.data_at(PAGE + 1), 0).unwrap();
        fx.slow.corrupt(fx.data_at(PAGE + 2), 0).unwrap();
        let err = read(&backend, PAGE, PAGE_BYTES).unwrap_err();
        assert!(err.to_string().contains("page 1"), "{err}");
        assert_eq!(backend.handle().damage()[0].device, None);
        // The other pages still read.
        read(&backend, 0, PAGE_BYTES).unwrap();
    }

    #[test]
    fn verifying_every_copy_finds_damage_on_the_mirror_without_healing_it() {
        let fx = Fixture::new();
        let (backend, data) = fx.written();
        fx.slow.corrupt(fx.data_at(5), 1).unwrap();
        backend.handle().set_policy(ReadPolicy {
            verify_every_copy: true,
            heal: false,
        });
        assert_eq!(read(&backend, 0, data.len()).unwrap(), data);
        let damage = backend.handle().damage();
        assert_eq!(damage.len(), 1, "{damage:?}");
        assert_eq!(damage[0].device.as_deref(), Some("faulty:slow"));
        assert!(!damage[0].healed);
        assert_ne!(fx.page_on(&fx.slow, 0), data[..PAGE_BYTES]);
    }

    #[test]
    fn a_stale_checksum_entry_with_identical_copies_is_corrected() {
        let fx = Fixture::new();
        let (backend, _) = fx.written();
        drop(backend);
        // Both copies get new bytes for page 2, the tables do not (a crash between the two).
        let new_page = vec![7u8; PAGE_BYTES];
        for device in [&fx.fast, &fx.slow] {
            device.write_at(fx.data_at(2 * PAGE), &new_page).unwrap();
        }
        let backend = MirroredRegionBackend::open(fx.copies(), None).unwrap();
        assert_eq!(read(&backend, 2 * PAGE, PAGE_BYTES).unwrap(), new_page);
        assert!(backend.handle().damage().is_empty());
    }

    #[test]
    fn tables_that_disagree_after_a_crash_are_reconciled_at_open() {
        let fx = Fixture::new();
        let (backend, data) = fx.written();
        // Page 1 is rewritten, but only the fast copy's data and table reach the disk.
        let new_page = vec![9u8; PAGE_BYTES];
        backend.write(PAGE, &new_page).unwrap();
        fx.slow.set_plan(FaultPlan {
            fail_every_flush: true,
            ..FaultPlan::default()
        });
        drop(backend.sync_data());
        drop(backend);
        fx.slow.power_cut(CutMode::DropAll).unwrap();
        fx.slow.revive();
        fx.slow.set_plan(FaultPlan::default());
        let backend = MirroredRegionBackend::open(fx.copies(), None).unwrap();
        assert_eq!(read(&backend, PAGE, PAGE_BYTES).unwrap(), new_page);
        assert_eq!(fx.page_on(&fx.slow, 1), new_page);
        assert_eq!(read(&backend, 0, PAGE_BYTES).unwrap(), data[..PAGE_BYTES]);
        backend.handle().set_policy(ReadPolicy {
            verify_every_copy: true,
            heal: false,
        });
        read(&backend, 0, 3 * PAGE_BYTES).unwrap();
        assert!(backend.handle().damage().is_empty());
    }

    #[test]
    fn an_unclean_close_settles_pages_that_differ_between_the_copies() {
        let fx = Fixture::new();
        let (backend, data) = fx.written();
        // A write the slow copy never got, its table entry not written anywhere (a crash
        // before the sync): the fast copy's page no longer matches the recorded checksum.
        let stray = vec![3u8; PAGE_BYTES];
        fx.fast.write_at(fx.data_at(2 * PAGE), &stray).unwrap();
        drop(backend);
        let backend = MirroredRegionBackend::open(fx.copies(), None).unwrap();
        // Settled on the copy that matches the checksum, so the last synced state wins.
        assert_eq!(fx.page_on(&fx.fast, 2), data[2 * PAGE_BYTES..]);
        assert!(backend.handle().damage().is_empty());
        let scrub = backend.handle().scrub_pages(0..u64::MAX);
        assert_eq!(scrub.checked, 3);
        assert_eq!(scrub.bad_copies, 0);
    }

    #[test]
    fn scrubbing_pages_heals_every_bad_copy_and_counts_what_it_cannot() {
        let fx = Fixture::new();
        let (backend, data) = fx.written();
        fx.slow.corrupt(fx.data_at(10), 0).unwrap();
        fx.fast.corrupt(fx.data_at(PAGE + 10), 0).unwrap();
        fx.fast.corrupt(fx.data_at(2 * PAGE + 10), 0).unwrap();
        fx.slow.corrupt(fx.data_at(2 * PAGE + 20), 0).unwrap();
        let scrub = backend.handle().scrub_pages(0..u64::MAX);
        assert_eq!(
            scrub,
            PageScrub {
                checked: 3,
                bad_copies: 2,
                healed: 2,
                unrecoverable: 1
            }
        );
        assert_eq!(fx.page_on(&fx.slow, 0), data[..PAGE_BYTES]);
        assert_eq!(fx.page_on(&fx.fast, 1), data[PAGE_BYTES..2 * PAGE_BYTES]);
    }

    #[test]
    fn the_old_layout_is_refused_by_name() {
        let fx = Fixture::new();
        let mut header = encode_header(0, false);
        header[0..8].copy_from_slice(&OLD_HEADER_MAGIC);
        for device in [&fx.fast, &fx.slow] {
            device.write_at(REGION, &header).unwrap();
        }
        let err = MirroredRegionBackend::open(fx.copies(), None).unwrap_err();
        assert!(
            err.to_string().contains("earlier development layout"),
            "{err}"
        );
    }

    #[test]
    fn page_writes_wait_for_the_sync_and_the_last_write_of_a_page_wins() {
        let fx = Fixture::new();
        let (backend, data) = fx.written();
        backend.write(PAGE, &vec![1u8; PAGE_BYTES]).unwrap();
        backend.write(PAGE, &vec![2u8; PAGE_BYTES]).unwrap();
        // Not on the devices yet.
        assert_eq!(fx.page_on(&fx.fast, 1), data[PAGE_BYTES..2 * PAGE_BYTES]);
        backend.sync_data().unwrap();
        for device in [&fx.fast, &fx.slow] {
            assert_eq!(fx.page_on(device, 1), vec![2u8; PAGE_BYTES]);
        }
        // A read passes waiting writes on first, so it sees them, verified.
        backend.write(2 * PAGE, &vec![3u8; PAGE_BYTES]).unwrap();
        assert_eq!(read(&backend, 2 * PAGE, 8).unwrap(), vec![3u8; 8]);
        assert_eq!(fx.page_on(&fx.slow, 2), vec![3u8; PAGE_BYTES]);
        assert!(backend.handle().damage().is_empty());
        backend.sync_data().unwrap();
        drop(backend);
        let backend = MirroredRegionBackend::open(fx.copies(), None).unwrap();
        assert_eq!(read(&backend, PAGE, 8).unwrap(), vec![2u8; 8]);
        assert_eq!(read(&backend, 2 * PAGE, 8).unwrap(), vec![3u8; 8]);
    }

    #[test]
    fn a_failed_batch_fails_every_later_sync_and_reads_keep_the_last_sync() {
        let fx = Fixture::new();
        let (backend, data) = fx.written();
        let at = fx.data_at(PAGE);
        fx.slow.set_plan(FaultPlan {
            write_error_ranges: std::iter::once(at..at + 1).collect(),
            ..FaultPlan::default()
        });
        backend.write(0, &vec![7u8; 2 * PAGE_BYTES]).unwrap();
        // A scrub meets the failure first (redb's writes are done, its sync not yet).
        backend.handle().scrub_pages(0..3);
        fx.slow.set_plan(FaultPlan::default());
        let err = backend.sync_data().unwrap_err();
        assert!(
            err.to_string().contains("earlier metadata write failed"),
            "{err}"
        );
        assert!(backend.write(0, &vec![8u8; PAGE_BYTES]).is_err());
        assert!(backend.sync_data().is_err());
        // Page 0 reached both copies, page 1 only the fast one: reads serve what the copies
        // held before the batch wherever a copy still holds it.
        assert_eq!(
            read(&backend, PAGE, PAGE_BYTES).unwrap(),
            data[PAGE_BYTES..2 * PAGE_BYTES]
        );
        assert!(
            backend.close().is_err(),
            "a failed region is not closed cleanly"
        );
        drop(backend);
        let backend = MirroredRegionBackend::open(fx.copies(), None).unwrap();
        assert_eq!(
            read(&backend, PAGE, PAGE_BYTES).unwrap(),
            data[PAGE_BYTES..2 * PAGE_BYTES]
        );
        assert_eq!(
            read(&backend, 2 * PAGE, PAGE_BYTES).unwrap(),
            data[2 * PAGE_BYTES..]
        );
        for device in [&fx.fast, &fx.slow] {
            assert_eq!(fx.page_on(device, 1), data[PAGE_BYTES..2 * PAGE_BYTES]);
        }
    }
}
