//! `Tx`: one operation's view of the open transaction group, with the record-level helpers
//! every verb shares (inodes, directory entries, the block table, allocation and frees).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::group::{Group, HotTables};
use super::inflight::BlockWrites;
use super::versions::{
    decode_block_id, decode_dirent, encode_dirent, named_key, number_key, pair_key, split_named,
    split_pair, AsOf, RecordKind,
};
use super::{Book, Filesystem};
use crate::alloc::Placement;
use crate::codec::crypt::{BlockNonce, NonceSequence, PoolKeys};
use crate::codec::{Compression, Encoding};
use crate::error::{FsError, FsResult};
use crate::format::SECTOR_SIZE;
use crate::heat::Heat;
use crate::meta::records::{BlockRecord, FileKind, Inode, Location};
use crate::meta::{DEDUP, ORPHANS};
use crate::types::InodeId;

/// A new block placed in fresh sectors, not yet mapped.
struct Placed {
    index: u64,
    id: u64,
    primary: Location,
    mirror: Option<Location>,
    /// The stored bytes padded to whole sectors (the content itself when it is stored as is
    /// and fills whole sectors).
    stored: Arc<Vec<u8>>,
    stored_len: usize,
    encoding: Encoding,
    /// The content, for the block cache.
    content: Arc<Vec<u8>>,
    /// The content's dedup table key (dedup pools only).
    dedup_hash: Option<[u8; 32]>,
}

/// A block's new content, staged in memory until the next flush, and the sectors reserved
/// for it (all of its copies).
#[derive(Debug)]
pub(super) struct StagedBlock {
    /// Shared with the batch that writes it out, until then changed in place.
    pub content: Arc<Vec<u8>>,
    reserved: u64,
}

/// A new block of a [`Tx::store_blocks`] batch, before it is encoded.
struct Fresh {
    index: u64,
    id: u64,
    nonce: Option<BlockNonce>,
    content: Arc<Vec<u8>>,
    dedup_hash: Option<[u8; 32]>,
}

/// A block's stored bytes and how they are encoded; `None` when the content is stored as is.
type Encoded = Result<(Option<Vec<u8>>, Encoding), crate::codec::CodecError>;

/// Compresses and encrypts `blocks`, in order, on one thread per core: zstd and AES-GCM take
/// most of a flush's time, and the state lock is held meanwhile.
fn encode_all(blocks: &[Fresh], compression: Compression, keys: Option<&PoolKeys>) -> Vec<Encoded> {
    if compression == Compression::Off && keys.is_none() {
        let plain = Encoding {
            compressed: false,
            nonce: None,
        };
        return blocks.iter().map(|_| Ok((None, plain))).collect();
    }
    let encode = |block: &Fresh| {
        crate::codec::encode_block(&block.content, compression, keys.zip(block.nonce), block.id)
            .map(|(stored, encoding)| (Some(stored), encoding))
    };
    // Asked once: the standard library reads the cgroup's CPU limit from files at every call.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let threads = cores.min(blocks.len());
    if threads <= 1 {
        return blocks.iter().map(encode).collect();
    }
    std::thread::scope(|scope| {
        let parts: Vec<_> = blocks
            .chunks(blocks.len().div_ceil(threads))
            .map(|part| scope.spawn(move || part.iter().map(encode).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|part| {
                part.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// What becomes of one block of a [`Tx::store_blocks`] batch.
enum Stored {
    /// Written to new sectors (`Placed` at this position of the batch's list).
    New(usize),
    /// The pool already holds this content in block `id`.
    Shared { index: u64, id: u64 },
    /// All zeros in a compressed file: unmapped, so it reads back as a hole.
    Hole { index: u64 },
}

/// One verb's access to the open group (or, once the pool is read-only, to the last commit):
/// the transaction for every table, and the [`HotTables`] it holds open.
pub(super) struct Tx<'a, 't> {
    pub fs: &'a Filesystem,
    pub txn: &'t WriteTransaction,
    pub tables: &'a HotTables<'t>,
    pub book: &'a mut Book,
}

/// Refuses changes to files in a snapshot (and to `/.snapshots`).
pub(super) fn writable(ino: InodeId) -> FsResult<()> {
    match ino.snapshot_epoch() {
        None => Ok(()),
        Some(_) => Err(FsError::SnapshotReadOnly),
    }
}

/// A directory entry as stored: the child, its readdir cookie and its kind.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dirent {
    pub child: InodeId,
    pub cookie: u64,
    pub kind: FileKind,
}

/// The extended attribute holding a file's capabilities.
const CAPABILITY_XATTR: &[u8] = b"security.capability";

impl Tx<'_, '_> {
    /// Runs `op` on `group`: a `Tx` lives only as long as the group lends its tables.
    pub fn run<T>(
        group: &Group,
        fs: &Filesystem,
        book: &mut Book,
        op: impl FnOnce(&mut Tx<'_, '_>) -> FsResult<T>,
    ) -> FsResult<T> {
        group.with_dependent(|txn, tables| {
            op(&mut Tx {
                fs,
                txn,
                tables,
                book,
            })
        })
    }

    pub fn mark_dirty(&mut self) {
        self.book.dirty = true;
        self.book.dirty_records += 1;
        self.book.dirty_since.get_or_insert_with(Instant::now);
    }

    pub fn inode(&self, ino: InodeId) -> FsResult<Inode> {
        Ok(self.inode_version(ino)?.0)
    }

    /// An inode and the epoch its record was written in (0 for `/.snapshots`). A file of a
    /// snapshot comes back with its ids (its own and its directory's) in that snapshot.
    pub fn inode_version(&self, ino: InodeId) -> FsResult<(Inode, u64)> {
        if ino == InodeId::SNAPSHOT_DIR {
            return Ok((self.snapshot_dir_inode()?, 0));
        }
        let number = ino.number();
        let decode = |raw: &[u8]| {
            Inode::decode(raw).map_err(|e| FsError::Corrupt(format!("inode {number}: {e}")))
        };
        let epoch = self.snapshot_of(ino)?;
        let historic = match epoch {
            Some(epoch) => self.historic(RecordKind::Inode, &number_key(number), epoch)?,
            None => AsOf::Live,
        };
        let (mut inode, birth) = match historic {
            AsOf::Retired(raw, birth) => (decode(&raw)?, birth),
            AsOf::Absent => return Err(FsError::NotFound),
            AsOf::Live => {
                let table = self.tables.inodes()?;
                let raw = table.get(number)?.ok_or(FsError::NotFound)?;
                let (raw, birth) = raw.value();
                if epoch.is_some_and(|epoch| birth > epoch) {
                    return Err(FsError::NotFound);
                }
                (decode(raw)?, birth)
            }
        };
        if epoch.is_some() {
            inode.id = ino;
            inode.parent = if number == InodeId::ROOT.0 {
                InodeId::SNAPSHOT_DIR
            } else {
                ino.sibling(inode.parent.0)
            };
        }
        Ok((inode, birth))
    }

    /// The epoch of the snapshot `ino` belongs to (`None` for the live tree); NotFound when
    /// that snapshot no longer exists.
    pub fn snapshot_of(&self, ino: InodeId) -> FsResult<Option<u64>> {
        match ino.snapshot_epoch() {
            None => Ok(None),
            Some(epoch) if self.book.snapshots.contains_key(&epoch) => Ok(Some(epoch)),
            Some(_) => Err(FsError::NotFound),
        }
    }

    pub fn put_inode(&mut self, inode: &Inode) -> FsResult<()> {
        writable(inode.id)?;
        self.mark_dirty();
        let number = inode.id.0;
        let old = {
            let mut table = self.tables.inodes()?;
            let old = table.insert(number, (inode.encode().as_slice(), self.book.epoch))?;
            old.and_then(|old| {
                let (raw, birth) = old.value();
                self.snapshot_sees(birth).then(|| (raw.to_vec(), birth))
            })
        };
        if let Some((raw, birth)) = old {
            self.retire(RecordKind::Inode, &number_key(number), &raw, birth, 0)?;
        }
        Ok(())
    }

    /// Removes the live record of an inode (kept for the snapshots that see it).
    fn remove_inode_record(&mut self, ino: InodeId) -> FsResult<()> {
        let old = self.tables.inodes()?.remove(ino.0)?.and_then(|old| {
            let (raw, birth) = old.value();
            self.snapshot_sees(birth).then(|| (raw.to_vec(), birth))
        });
        if let Some((raw, birth)) = old {
            self.retire(RecordKind::Inode, &number_key(ino.0), &raw, birth, 0)?;
        }
        Ok(())
    }

    pub fn dirent(&self, parent: InodeId, name: &[u8]) -> FsResult<Option<Dirent>> {
        let bad_kind = || FsError::Corrupt(format!("directory entry in {parent} has a bad kind"));
        let Some(epoch) = self.snapshot_of(parent)? else {
            let table = self.tables.dirents()?;
            let Some(value) = table.get((parent.0, name))? else {
                return Ok(None);
            };
            let (child, cookie, kind, _) = value.value();
            return Ok(Some(Dirent {
                child: InodeId(child),
                cookie,
                kind: FileKind::from_byte(kind).ok_or_else(bad_kind)?,
            }));
        };
        let number = parent.number();
        let (child, cookie, kind) =
            match self.historic(RecordKind::Dirent, &named_key(number, name), epoch)? {
                AsOf::Absent => return Ok(None),
                AsOf::Retired(value, _) => decode_dirent(&value).ok_or_else(bad_kind)?,
                AsOf::Live => {
                    let table = self.tables.dirents()?;
                    let Some(value) = table.get((number, name))? else {
                        return Ok(None);
                    };
                    let (child, cookie, kind, birth) = value.value();
                    if birth > epoch {
                        return Ok(None);
                    }
                    (child, cookie, kind)
                }
            };
        Ok(Some(Dirent {
            child: parent.sibling(child),
            cookie,
            kind: FileKind::from_byte(kind).ok_or_else(bad_kind)?,
        }))
    }

    /// Names in directory `dir` by readdir cookie, from cookie `start`, at most `limit`.
    pub fn dir_names(
        &self,
        dir: InodeId,
        start: u64,
        limit: usize,
    ) -> FsResult<Vec<(u64, Vec<u8>)>> {
        let epoch = self.snapshot_of(dir)?;
        let number = dir.number();
        let mut names = BTreeMap::new();
        {
            let table = self.tables.dir_cookies()?;
            for entry in table.range((number, start)..=(number, u64::MAX))? {
                if names.len() >= limit {
                    break;
                }
                let (key, value) = entry?;
                let (name, birth) = value.value();
                if epoch.is_none_or(|epoch| birth <= epoch) {
                    names.insert(key.value().1, name.to_vec());
                }
            }
        }
        if let Some(epoch) = epoch {
            let from = pair_key(number, start);
            let to = pair_key(number + 1, 0);
            for (key, name) in
                self.historic_range(RecordKind::DirCookie, &from, &to, epoch, limit)?
            {
                let (_, cookie) = split_pair(&key).ok_or_else(|| {
                    FsError::Corrupt(format!("history holds a bad readdir key of {dir}"))
                })?;
                names.insert(cookie, name);
            }
        }
        Ok(names.into_iter().take(limit).collect())
    }

    /// Adds `name → child` to `parent` (the caller stores `parent`, whose cookie counter moves).
    pub fn add_dirent(
        &mut self,
        parent: &mut Inode,
        name: &[u8],
        child: InodeId,
        kind: FileKind,
    ) -> FsResult<()> {
        writable(parent.id)?;
        self.mark_dirty();
        let cookie = parent.next_cookie;
        parent.next_cookie += 1;
        let epoch = self.book.epoch;
        self.tables.dirents()?.insert(
            (parent.id.0, name),
            (child.0, cookie, kind.to_byte(), epoch),
        )?;
        self.tables
            .dir_cookies()?
            .insert((parent.id.0, cookie), (name, epoch))?;
        Ok(())
    }

    pub fn remove_dirent(&mut self, parent: InodeId, name: &[u8], cookie: u64) -> FsResult<()> {
        writable(parent)?;
        self.mark_dirty();
        let entry = self
            .tables
            .dirents()?
            .remove((parent.0, name))?
            .map(|v| v.value());
        self.retire_dirent(parent, name, entry)?;
        let indexed = self
            .tables
            .dir_cookies()?
            .remove((parent.0, cookie))?
            .and_then(|v| {
                let (name, birth) = v.value();
                self.snapshot_sees(birth).then(|| (name.to_vec(), birth))
            });
        if let Some((name, birth)) = indexed {
            self.retire(
                RecordKind::DirCookie,
                &pair_key(parent.0, cookie),
                &name,
                birth,
                0,
            )?;
        }
        Ok(())
    }

    /// Points an existing entry at another child, keeping its cookie.
    pub fn retarget_dirent(&mut self, parent: InodeId, name: &[u8], entry: Dirent) -> FsResult<()> {
        writable(parent)?;
        self.mark_dirty();
        let old = self
            .tables
            .dirents()?
            .insert(
                (parent.0, name),
                (
                    entry.child.0,
                    entry.cookie,
                    entry.kind.to_byte(),
                    self.book.epoch,
                ),
            )?
            .map(|v| v.value());
        self.retire_dirent(parent, name, old)
    }

    /// Keeps a replaced or removed entry `(child, cookie, kind, birth)` of `parent` for the
    /// snapshots that see it.
    fn retire_dirent(
        &self,
        parent: InodeId,
        name: &[u8],
        old: Option<(u64, u64, u8, u64)>,
    ) -> FsResult<()> {
        if let Some((child, cookie, kind, birth)) = old {
            let value = encode_dirent(child, cookie, kind);
            self.retire(
                RecordKind::Dirent,
                &named_key(parent.0, name),
                &value,
                birth,
                0,
            )?;
        }
        Ok(())
    }

    pub fn dir_is_empty(&self, dir: InodeId) -> FsResult<bool> {
        Ok(self.dir_names(dir, 0, 1)?.is_empty())
    }

    pub fn block_of(&self, ino: InodeId, index: u64) -> FsResult<Option<u64>> {
        Ok(self
            .mapped_blocks(ino, index..index + 1)?
            .first()
            .map(|(_, id)| *id))
    }

    pub fn block_record(&self, id: u64) -> FsResult<BlockRecord> {
        let table = self.tables.blocks()?;
        let raw = table.get(id)?.ok_or_else(|| {
            FsError::Corrupt(format!("block {id} is mapped but not in the block table"))
        })?;
        BlockRecord::decode(raw.value()).map_err(|e| FsError::Corrupt(format!("block {id}: {e}")))
    }

    /// The mapped blocks of `ino` with index in `range`, in order.
    pub fn mapped_blocks(
        &self,
        ino: InodeId,
        range: std::ops::Range<u64>,
    ) -> FsResult<Vec<(u64, u64)>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let epoch = self.snapshot_of(ino)?;
        let number = ino.number();
        let mut out = Vec::new();
        {
            let table = self.tables.file_blocks()?;
            for entry in table.range((number, range.start)..(number, range.end))? {
                let (key, value) = entry?;
                let (id, birth) = value.value();
                if epoch.is_none_or(|epoch| birth <= epoch) {
                    out.push((key.value().1, id));
                }
            }
        }
        let Some(epoch) = epoch else {
            return Ok(out);
        };
        let from = pair_key(number, range.start);
        let to = pair_key(number, range.end);
        let bad = || FsError::Corrupt(format!("history holds a bad file-map record of {ino}"));
        let mut merged: BTreeMap<u64, u64> = out.into_iter().collect();
        for (key, value) in
            self.historic_range(RecordKind::FileBlock, &from, &to, epoch, usize::MAX)?
        {
            let (_, index) = split_pair(&key).ok_or_else(bad)?;
            merged.insert(index, decode_block_id(&value).ok_or_else(bad)?);
        }
        Ok(merged.into_iter().collect())
    }

    /// Reads the content of logical block `index` of `ino` (empty for a hole).
    pub fn read_file_block(&self, ino: InodeId, index: u64) -> FsResult<Vec<u8>> {
        if let Some(block) = self.book.staged.get(&(ino.0, index)) {
            return Ok(block.content.to_vec());
        }
        match self.block_of(ino, index)? {
            None => Ok(Vec::new()),
            Some(id) => {
                let record = self.block_record(id)?;
                Ok(self.fs.read_block(id, &record)?.as_ref().clone())
            }
        }
    }

    /// Drops one reference to block `id`, freeing its sectors (after the commit) at the last.
    pub fn unref_block(&mut self, id: u64) -> FsResult<()> {
        self.mark_dirty();
        let mut record = self.block_record(id)?;
        let logical = u64::from(record.logical_len);
        let totals = &mut self.book.totals;
        totals.logical_refs = totals.logical_refs.saturating_sub(logical);
        let mut table = self.tables.blocks()?;
        if record.refcount > 1 {
            record.refcount -= 1;
            table.insert(id, record.encode().as_slice())?;
            return Ok(());
        }
        table.remove(id)?;
        totals.logical = totals.logical.saturating_sub(logical);
        totals.stored = totals.stored.saturating_sub(u64::from(record.stored_len));
        if let Some(hash) = &record.dedup_hash {
            let mut dedup = self.txn.open_table(DEDUP)?;
            // The entry may name a newer block with the same content (see `shareable_block`).
            if dedup.get(hash)?.is_some_and(|v| v.value() == id) {
                dedup.remove(hash)?;
            }
        }
        self.tables.heat()?.remove(id)?;
        self.book.accesses.remove(&id);
        self.fs.cache.remove(id);
        for location in record.locations() {
            self.book
                .pending_free
                .push((location.device, location.sector, record.sectors()));
        }
        Ok(())
    }

    /// The stored heat of block `id` with the accesses counted since the last commit.
    pub fn heat(&self, id: u64) -> FsResult<Heat> {
        let stored = self.tables.heat()?.get(id)?.map_or(Heat::COLD, |v| {
            let (score, at) = v.value();
            Heat { score, at }
        });
        let pending = self.book.accesses.get(&id).copied().unwrap_or(0);
        Ok(if pending > 0 {
            stored.plus(pending, crate::heat::now(), self.fs.config.heat_half_life)
        } else {
            stored
        })
    }

    /// Counts an access to each of `ids` (folded into their heat at the next commit).
    pub fn count_accesses(&mut self, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            *self.book.accesses.entry(id).or_insert(0) += 1;
            self.book.accesses_since.get_or_insert_with(Instant::now);
        }
    }

    /// Stores the accesses counted since the last commit into the blocks' heat.
    pub fn fold_accesses(&mut self) -> FsResult<()> {
        if self.book.accesses.is_empty() {
            return Ok(());
        }
        let now = crate::heat::now();
        let half_life = self.fs.config.heat_half_life;
        let accesses = std::mem::take(&mut self.book.accesses);
        self.book.accesses_since = None;
        self.book.dirty = true;
        let blocks = self.tables.blocks()?;
        let mut heat = self.tables.heat()?;
        for (id, hits) in accesses {
            if blocks.get(id)?.is_none() {
                continue;
            }
            let stored = heat.get(id)?.map_or(Heat::COLD, |v| {
                let (score, at) = v.value();
                Heat { score, at }
            });
            let updated = stored.plus(hits, now, half_life);
            heat.insert(id, (updated.score, updated.at))?;
        }
        Ok(())
    }

    /// Ends the live mapping of logical block `index` of inode `number` to block `id`,
    /// written at `birth` (the caller removed or replaced it): a snapshot that sees it keeps
    /// it, else the block loses a reference. Returns the data-area bytes the block takes,
    /// which the file no longer maps.
    fn end_mapping(&mut self, number: u64, index: u64, id: u64, birth: u64) -> FsResult<u64> {
        let bytes = self.block_record(id)?.allocated_bytes();
        let kept = self.retire(
            RecordKind::FileBlock,
            &pair_key(number, index),
            &id.to_le_bytes(),
            birth,
            bytes,
        )?;
        if !kept {
            self.unref_block(id)?;
        }
        self.book.referenced = self.book.referenced.saturating_sub(bytes);
        Ok(bytes)
    }

    /// Places new contents for logical blocks of `inode` in fresh sectors (two copies on two
    /// devices when its `copies` property is 2) and maps them, releasing the blocks they
    /// replace; the device writes still to do are added to `writes` (see [`super::inflight`]).
    /// Each block is compressed and encrypted as the file and pool ask; on a dedup pool,
    /// content the pool already holds is mapped to the existing block instead, and in a
    /// compressed file an all-zero block becomes a hole. All space is claimed before the first
    /// metadata change, so ENOSPC leaves the file as it was.
    pub fn store_blocks(
        &mut self,
        inode: &mut Inode,
        blocks: Vec<(u64, Arc<Vec<u8>>)>,
        writes: &mut BlockWrites,
    ) -> FsResult<()> {
        writable(inode.id)?;
        let policy = self.write_policy(inode)?;
        let mirrored = policy.copies >= 2;
        let compression = policy.compression;
        let placement = match policy.tier {
            Some(tier) => Placement::Pinned(tier),
            None => Placement::Auto {
                high_watermark: self.fs.config.fast_high_watermark,
            },
        };
        // Each block becomes a hole, a reference to a block holding the same content, or a
        // new block (ids and nonces are handed out in order).
        let mut plan: Vec<Stored> = Vec::with_capacity(blocks.len());
        let mut fresh: Vec<Fresh> = Vec::new();
        let mut batch_hashes: HashMap<[u8; 32], u64> = HashMap::new();
        for (index, content) in blocks {
            if compression != Compression::Off && crate::codec::compress::is_zero(&content) {
                plan.push(Stored::Hole { index });
                continue;
            }
            let dedup_hash = self
                .fs
                .dedup
                .map(|dedup| crate::codec::dedup_hash(&dedup.key, &content));
            if let Some(hash) = &dedup_hash {
                let shared = match batch_hashes.get(hash) {
                    Some(&id) => Some(id),
                    None => self.shareable_block(hash, mirrored)?,
                };
                if let Some(id) = shared {
                    plan.push(Stored::Shared { index, id });
                    continue;
                }
            }
            let id = self.book.next_block;
            self.book.next_block += 1;
            if let Some(hash) = dedup_hash {
                batch_hashes.insert(hash, id);
            }
            plan.push(Stored::New(fresh.len()));
            fresh.push(Fresh {
                index,
                id,
                nonce: self.fs.nonces.as_ref().map(NonceSequence::next),
                content,
                dedup_hash,
            });
        }
        let encoded = encode_all(&fresh, compression, self.fs.pool.keys().map(AsRef::as_ref));
        let mut placed: Vec<Placed> = Vec::with_capacity(fresh.len());
        for (block, encoded) in fresh.into_iter().zip(encoded) {
            let (stored, encoding) = match encoded {
                Ok(encoded) => encoded,
                Err(err) => {
                    self.release_placed(&placed);
                    return Err(FsError::Corrupt(format!(
                        "encoding block {}: {err}",
                        block.id
                    )));
                }
            };
            let stored_len = stored.as_ref().unwrap_or(&block.content).len();
            let sectors = (stored_len as u64).div_ceil(SECTOR_SIZE).max(1);
            let Some((primary, mirror)) = self.place(sectors, placement, mirrored) else {
                self.release_placed(&placed);
                return Err(FsError::NoSpace);
            };
            let padded_len = usize::try_from(sectors * SECTOR_SIZE).unwrap_or(usize::MAX);
            let stored = match stored {
                None if stored_len == padded_len => Arc::clone(&block.content),
                stored => {
                    let mut padded = stored.unwrap_or_else(|| block.content.to_vec());
                    padded.resize(padded_len, 0);
                    Arc::new(padded)
                }
            };
            placed.push(Placed {
                index: block.index,
                id: block.id,
                primary,
                mirror,
                stored,
                stored_len,
                encoding,
                content: block.content,
                dedup_hash: block.dedup_hash,
            });
        }
        self.mark_dirty();
        // Every new block is entered and every shared one referenced before any mapping is
        // replaced: replacing one may drop the last reference of a block a later entry of the
        // batch shares.
        let mut mappings: Vec<(u64, u64, BlockRecord, Option<u64>)> = Vec::new();
        let mut holes = Vec::new();
        let mut placed: Vec<Option<Placed>> = placed.into_iter().map(Some).collect();
        for stored in plan {
            match stored {
                Stored::Hole { index } => holes.push(index),
                Stored::Shared { index, id } => {
                    let record = self.ref_block(id)?;
                    mappings.push((index, id, record, None));
                }
                Stored::New(at) => {
                    let Some(block) = placed.get_mut(at).and_then(Option::take) else {
                        continue;
                    };
                    let record = self.add_block(block.id, &block)?;
                    let copies = std::iter::once(block.primary).chain(block.mirror);
                    writes.add(block.id, copies, &block.stored);
                    self.fs.cache.insert(block.id, block.content);
                    let written = u64::from(record.stored_len);
                    mappings.push((block.index, block.id, record, Some(written)));
                }
            }
        }
        for (index, id, record, written) in mappings {
            self.map_block(inode, index, id, &record, written)?;
        }
        for index in holes {
            let unmapped = self.unmap_range(inode.id, index..index + 1)?;
            inode.allocated = inode.allocated.saturating_sub(unmapped);
        }
        Ok(())
    }

    /// A block of the dedup table holding content with `hash` that a file can share: one with
    /// a second copy when `mirrored` asks for two, and room for more references.
    fn shareable_block(&self, hash: &[u8; 32], mirrored: bool) -> FsResult<Option<u64>> {
        let Some(id) = self.txn.open_table(DEDUP)?.get(hash)?.map(|v| v.value()) else {
            return Ok(None);
        };
        let record = self.block_record(id)?;
        // A block at the end of its reference count takes no more (a batch may add one per
        // block it holds, hence the margin).
        let room = record.refcount < u32::MAX / 2;
        Ok((room && (record.mirror.is_some() || !mirrored)).then_some(id))
    }

    /// Enters a newly written block in the block table (and the dedup table while it has
    /// room), counting it in the pool's totals.
    fn add_block(&mut self, id: u64, block: &Placed) -> FsResult<BlockRecord> {
        let mut dedup_hash = block.dedup_hash;
        if let (Some(hash), Some(dedup)) = (&block.dedup_hash, self.fs.dedup) {
            let mut table = self.txn.open_table(DEDUP)?;
            if table.len()? < dedup.table_limit || table.get(hash)?.is_some() {
                table.insert(hash, id)?;
            } else {
                if !self.book.dedup_full_warned {
                    tracing::warn!(
                        limit = dedup.table_limit,
                        "the dedup table is full: new blocks are stored without dedup"
                    );
                    self.book.dedup_full_warned = true;
                }
                dedup_hash = None;
            }
        }
        let record = BlockRecord {
            device: block.primary.device,
            sector: block.primary.sector,
            stored_len: u32::try_from(block.stored_len).unwrap_or(u32::MAX),
            logical_len: u32::try_from(block.content.len()).unwrap_or(u32::MAX),
            checksum: crate::codec::checksum64(&block.stored[..block.stored_len]),
            encoding: block.encoding,
            refcount: 1,
            mirror: block.mirror,
            dedup_hash,
        };
        self.tables
            .blocks()?
            .insert(id, record.encode().as_slice())?;
        let totals = &mut self.book.totals;
        totals.logical += u64::from(record.logical_len);
        totals.stored += u64::from(record.stored_len);
        totals.logical_refs += u64::from(record.logical_len);
        Ok(record)
    }

    /// Adds a reference to block `id` (content a file shares with it).
    fn ref_block(&mut self, id: u64) -> FsResult<BlockRecord> {
        let mut record = self.block_record(id)?;
        record.refcount = record
            .refcount
            .checked_add(1)
            .ok_or_else(|| FsError::Corrupt(format!("block {id} has too many references")))?;
        self.tables
            .blocks()?
            .insert(id, record.encode().as_slice())?;
        self.book.totals.logical_refs += u64::from(record.logical_len);
        Ok(record)
    }

    /// Maps logical block `index` of `inode` to block `id` (already counted as referenced by
    /// it), ending the mapping it replaces. `written` is set for a block this write created:
    /// it inherits the heat of the block it replaces; a shared block counts an access.
    fn map_block(
        &mut self,
        inode: &mut Inode,
        index: u64,
        id: u64,
        record: &BlockRecord,
        written: Option<u64>,
    ) -> FsResult<()> {
        let old = self
            .tables
            .file_blocks()?
            .insert((inode.id.0, index), (id, self.book.epoch))?
            .map(|v| v.value());
        inode.allocated += record.allocated_bytes();
        self.book.referenced += record.allocated_bytes();
        match written {
            Some(bytes) => {
                let inherited = match old {
                    Some((old, _)) => self.heat(old)?,
                    None => Heat::COLD,
                };
                let heat = inherited.plus(1, crate::heat::now(), self.fs.config.heat_half_life);
                self.tables.heat()?.insert(id, (heat.score, heat.at))?;
                self.book.dirty_bytes += bytes;
            }
            None => self.count_accesses([id]),
        }
        if let Some((old, birth)) = old {
            let unmapped = self.end_mapping(inode.id.0, index, old, birth)?;
            inode.allocated = inode.allocated.saturating_sub(unmapped);
        }
        Ok(())
    }

    /// Claims `sectors` for a block, and as many again on another device when `mirrored`;
    /// `None` (nothing claimed) when there is no room.
    fn place(
        &mut self,
        sectors: u64,
        placement: Placement,
        mirrored: bool,
    ) -> Option<(Location, Option<Location>)> {
        let (device, _tier, sector) = self.book.alloc.allocate(sectors, placement)?;
        let primary = Location { device, sector };
        if !mirrored {
            return Some((primary, None));
        }
        match self.book.alloc.allocate_mirror(sectors, device) {
            Some((device, sector)) => Some((primary, Some(Location { device, sector }))),
            None => {
                let _ = self.book.alloc.release(device, sector, sectors);
                None
            }
        }
    }

    /// Returns the sectors of blocks that were placed but will not be mapped.
    fn release_placed(&mut self, placed: &[Placed]) {
        for block in placed {
            let count = block.stored.len() as u64 / SECTOR_SIZE;
            for location in std::iter::once(block.primary).chain(block.mirror) {
                let _ = self
                    .book
                    .alloc
                    .release(location.device, location.sector, count);
            }
        }
    }

    /// The attributes `stat` reports: space of staged blocks not yet on a device counts as
    /// allocated already, so tools that judge sparseness by `st_blocks` see the data.
    pub fn attr(&self, inode: &Inode) -> FsResult<super::Attr> {
        let mut attr = inode.attr();
        for index in self.staged_indices(inode.id, 0..u64::MAX) {
            if self.block_of(inode.id, index)?.is_none() {
                let len = self
                    .book
                    .staged
                    .get(&(inode.id.0, index))
                    .map_or(0, |block| block.content.len());
                attr.blocks += (len as u64).div_ceil(SECTOR_SIZE) * (SECTOR_SIZE / 512);
            }
        }
        Ok(attr)
    }

    /// Sectors one copy of a staged block reserves.
    fn sectors_per_block(&self) -> u64 {
        self.fs.block_size.div_ceil(SECTOR_SIZE)
    }

    /// Indices of staged blocks of `ino` within `range`.
    pub fn staged_indices(&self, ino: InodeId, range: std::ops::Range<u64>) -> Vec<u64> {
        if range.is_empty() {
            return Vec::new();
        }
        self.book
            .staged
            .range((ino.0, range.start)..(ino.0, range.end))
            .map(|((_, index), _)| *index)
            .collect()
    }

    /// Stages new contents for logical blocks of `inode`. They stay in memory until the next
    /// flush (commit, fsync, or the staging buffer filling up), so many small writes to one
    /// block cost one block write. Space for every newly staged block is reserved now, so a
    /// staged write does not meet ENOSPC later.
    pub fn stage_blocks(&mut self, inode: &Inode, blocks: Vec<(u64, Vec<u8>)>) -> FsResult<()> {
        writable(inode.id)?;
        let fresh = blocks
            .iter()
            .filter(|(index, _)| !self.book.staged.contains_key(&(inode.id.0, *index)))
            .count() as u64;
        let per_block = self.sectors_per_block() * u64::from(self.write_policy(inode)?.copies);
        let needed = fresh * per_block;
        if self.book.free_sectors() < needed && !self.book.staged.is_empty() {
            // Reservations count whole blocks; writing out what is staged turns them into
            // the sectors the contents really take (a 1 KiB file's block takes 4 KiB).
            self.flush_staged()?;
        }
        if self.book.free_sectors() < needed {
            // Sectors freed by earlier commits may still wait for reads in flight.
            self.fs.release_durable_free(self.book, true);
        }
        if self.book.free_sectors() < needed {
            return Err(FsError::NoSpace);
        }
        self.mark_dirty();
        self.book.reserved_sectors += needed;
        for (index, content) in blocks {
            self.book.staged_bytes += content.len() as u64;
            match self.book.staged.get_mut(&(inode.id.0, index)) {
                Some(block) => {
                    self.book.staged_bytes -= block.content.len() as u64;
                    block.content = Arc::new(content);
                }
                None => {
                    self.book.staged.insert(
                        (inode.id.0, index),
                        StagedBlock {
                            content: Arc::new(content),
                            reserved: per_block,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Overwrites part of a staged block in place, growing its content as needed.
    pub fn patch_staged(&mut self, ino: InodeId, index: u64, at: usize, data: &[u8]) {
        self.mark_dirty();
        if let Some(block) = self.book.staged.get_mut(&(ino.0, index)) {
            let content = Arc::make_mut(&mut block.content);
            let end = at + data.len();
            if content.len() < end {
                self.book.staged_bytes += (end - content.len()) as u64;
                content.resize(end, 0);
            }
            content[at..end].copy_from_slice(data);
        }
    }

    /// Forgets staged blocks of `ino` within `range` (truncated, punched or deleted).
    fn unstage_range(&mut self, ino: InodeId, range: std::ops::Range<u64>) {
        for index in self.staged_indices(ino, range) {
            if let Some(block) = self.book.staged.remove(&(ino.0, index)) {
                self.book.staged_bytes -= block.content.len() as u64;
                self.book.reserved_sectors -= block.reserved;
            }
        }
    }

    /// Writes every staged block to fresh sectors and maps it (and writes out what this
    /// critical section mapped before).
    pub fn flush_staged(&mut self) -> FsResult<()> {
        self.write_unwritten();
        let mapped = self.map_staged();
        self.write_unwritten();
        match self.fs.in_flight.take_failure() {
            Some(err) => Err(err),
            None => mapped,
        }
    }

    /// Writes out the blocks this critical section mapped but has not written.
    fn write_unwritten(&mut self) {
        let writes = std::mem::take(&mut self.book.unwritten);
        self.fs.write_new_blocks(&writes);
    }

    /// Places every staged block in fresh sectors and maps it, one batch per file. The device
    /// writes still to do are begun (see [`super::inflight`]) and left in the book's
    /// `unwritten`, for [`Filesystem::unlock_and_write`] or the next flush. A file whose blocks
    /// cannot be placed (ENOSPC on a fragmented pool) stays staged.
    pub fn map_staged(&mut self) -> FsResult<()> {
        let mut writes = BlockWrites::default();
        let mapped = self.map_staged_into(&mut writes);
        self.fs.in_flight.begin(&writes);
        self.book.unwritten.append(writes);
        mapped
    }

    fn map_staged_into(&mut self, writes: &mut BlockWrites) -> FsResult<()> {
        let inodes: Vec<u64> = {
            let mut inodes: Vec<u64> = self.book.staged.keys().map(|(ino, _)| *ino).collect();
            inodes.dedup();
            inodes
        };
        for ino in inodes {
            let mut inode = match self.inode(InodeId(ino)) {
                Ok(inode) => inode,
                Err(FsError::NotFound) => {
                    self.unstage_range(InodeId(ino), 0..u64::MAX);
                    continue;
                }
                Err(err) => return Err(err),
            };
            let contents: Vec<(u64, Arc<Vec<u8>>)> = self
                .book
                .staged
                .range((ino, 0)..=(ino, u64::MAX))
                .map(|(key, block)| (key.1, Arc::clone(&block.content)))
                .collect();
            self.store_blocks(&mut inode, contents, writes)?;
            self.unstage_range(InodeId(ino), 0..u64::MAX);
            self.put_inode(&inode)?;
        }
        Ok(())
    }

    /// Unmaps blocks `[from, ..)` of `ino`; returns the bytes of the blocks it no longer maps.
    pub fn unmap_from(&mut self, ino: InodeId, from: u64) -> FsResult<u64> {
        self.unmap_range(ino, from..u64::MAX)
    }

    /// Unmaps the blocks of `ino` with index in `range`; returns the bytes of the blocks it no
    /// longer maps (released unless a snapshot keeps them).
    pub fn unmap_range(&mut self, ino: InodeId, range: std::ops::Range<u64>) -> FsResult<u64> {
        writable(ino)?;
        self.unstage_range(ino, range.clone());
        let victims: Vec<(u64, u64, u64)> = {
            let table = self.tables.file_blocks()?;
            let mut victims = Vec::new();
            for entry in table.range((ino.0, range.start)..(ino.0, range.end))? {
                let (key, value) = entry?;
                let (id, birth) = value.value();
                victims.push((key.value().1, id, birth));
            }
            victims
        };
        if victims.is_empty() {
            return Ok(0);
        }
        self.mark_dirty();
        let mut unmapped = 0;
        for (index, id, birth) in victims {
            self.tables.file_blocks()?.remove((ino.0, index))?;
            unmapped += self.end_mapping(ino.0, index, id, birth)?;
        }
        Ok(unmapped)
    }

    /// Names of the extended attributes of `ino`, in order.
    pub fn xattr_names(&self, ino: InodeId) -> FsResult<Vec<Vec<u8>>> {
        Ok(self.xattrs_of(ino)?.into_keys().collect())
    }

    /// The extended attributes of `ino` (as they were, for a file in a snapshot), by name.
    pub fn xattrs_of(&self, ino: InodeId) -> FsResult<BTreeMap<Vec<u8>, Vec<u8>>> {
        if ino == InodeId::SNAPSHOT_DIR {
            return Ok(BTreeMap::new());
        }
        let epoch = self.snapshot_of(ino)?;
        let number = ino.number();
        let mut out = BTreeMap::new();
        {
            let table = self.tables.xattrs()?;
            for entry in table.range((number, &[][..])..(number + 1, &[][..]))? {
                let (key, value) = entry?;
                let (value, birth) = value.value();
                if epoch.is_none_or(|epoch| birth <= epoch) {
                    out.insert(key.value().1.to_vec(), value.to_vec());
                }
            }
        }
        if let Some(epoch) = epoch {
            let from = number_key(number);
            let to = number_key(number + 1);
            for (key, value) in
                self.historic_range(RecordKind::Xattr, &from, &to, epoch, usize::MAX)?
            {
                let name = split_named(&key).map_or(&[][..], |(_, name)| name);
                out.insert(name.to_vec(), value);
            }
        }
        Ok(out)
    }

    /// Sets (`Some`) or removes (`None`) extended attribute `name` of `ino`; returns whether
    /// it existed.
    pub fn put_xattr(&mut self, ino: InodeId, name: &[u8], value: Option<&[u8]>) -> FsResult<bool> {
        writable(ino)?;
        self.mark_dirty();
        let old = {
            let mut table = self.tables.xattrs()?;
            let old = match value {
                Some(value) => table.insert((ino.0, name), (value, self.book.epoch))?,
                None => table.remove((ino.0, name))?,
            };
            old.map(|old| {
                let (raw, birth) = old.value();
                (self.snapshot_sees(birth).then(|| raw.to_vec()), birth)
            })
        };
        match old {
            None => Ok(false),
            Some((Some(raw), birth)) => {
                self.retire(RecordKind::Xattr, &named_key(ino.0, name), &raw, birth, 0)?;
                Ok(true)
            }
            Some((None, _)) => Ok(true),
        }
    }

    /// Takes from `inode` (not a directory) what a write, a truncate or a change of owner takes
    /// from a file: its capabilities always, and with `set_ids` its setuid bit, and its setgid
    /// bit when it is group-executable. The kernel leaves this to the filesystem
    /// (`FUSE_HANDLE_KILLPRIV_V2`) instead of asking for the capability attribute before every
    /// write. The caller stores the inode.
    pub fn drop_privileges(&mut self, inode: &mut Inode, set_ids: bool) -> FsResult<()> {
        if inode.kind == FileKind::Directory {
            return Ok(());
        }
        if set_ids {
            inode.perm &= !libc::S_ISUID;
            if inode.perm & 0o010 != 0 {
                inode.perm &= !libc::S_ISGID;
            }
        }
        let capable = self
            .tables
            .xattrs()?
            .get((inode.id.0, CAPABILITY_XATTR))?
            .is_some();
        if capable {
            self.put_xattr(inode.id, CAPABILITY_XATTR, None)?;
        }
        Ok(())
    }

    /// Deletes an inode with everything it owns.
    pub fn free_inode(&mut self, ino: InodeId) -> FsResult<()> {
        writable(ino)?;
        self.mark_dirty();
        self.unmap_from(ino, 0)?;
        for name in self.xattr_names(ino)? {
            self.put_xattr(ino, &name, None)?;
        }
        self.remove_properties(ino)?;
        self.remove_inode_record(ino)?;
        self.txn.open_table(ORPHANS)?.remove(ino.0)?;
        Ok(())
    }

    /// Drops one link of `inode` (already removed from its directory). Frees it at the last
    /// link, unless it is still open: then it waits in the orphan table for the last release.
    pub fn drop_link(
        &mut self,
        inode: &mut Inode,
        now: crate::meta::records::Timestamp,
    ) -> FsResult<()> {
        inode.nlink = if inode.kind == FileKind::Directory {
            0
        } else {
            inode.nlink.saturating_sub(1)
        };
        inode.ctime = now;
        if inode.nlink > 0 {
            return self.put_inode(inode);
        }
        if self.book.open_counts.get(&inode.id.0).copied().unwrap_or(0) > 0 {
            self.put_inode(inode)?;
            self.txn.open_table(ORPHANS)?.insert(inode.id.0, ())?;
            return Ok(());
        }
        self.free_inode(inode.id)
    }
}
