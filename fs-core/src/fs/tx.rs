//! `Tx`: one operation's view of the open transaction group, with the record-level helpers
//! every verb shares (inodes, directory entries, the block table, allocation and frees).

use std::sync::Arc;
use std::time::Instant;

use redb::{ReadableTable, WriteTransaction};

use super::{Book, Filesystem};
use crate::error::{FsError, FsResult};
use crate::format::SECTOR_SIZE;
use crate::meta::records::{BlockRecord, FileKind, Inode, Location};
use crate::meta::{BLOCKS, DIRENTS, DIR_COOKIES, FILE_BLOCKS, INODES, ORPHANS, XATTRS};
use crate::types::{DeviceIndex, InodeId};

/// A block written to fresh sectors, not yet mapped.
struct Placed {
    index: u64,
    primary: Location,
    mirror: Option<Location>,
    /// The content padded to whole sectors.
    buf: Vec<u8>,
    /// The content's length.
    len: usize,
}

pub(super) struct Tx<'a> {
    pub fs: &'a Filesystem,
    pub txn: &'a WriteTransaction,
    pub book: &'a mut Book,
}

/// A directory entry as stored: the child, its readdir cookie and its kind.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dirent {
    pub child: InodeId,
    pub cookie: u64,
    pub kind: FileKind,
}

impl Tx<'_> {
    pub fn mark_dirty(&mut self) {
        self.book.dirty = true;
        self.book.dirty_records += 1;
        self.book.dirty_since.get_or_insert_with(Instant::now);
    }

    pub fn inode(&self, ino: InodeId) -> FsResult<Inode> {
        let table = self.txn.open_table(INODES)?;
        let raw = table.get(ino.0)?.ok_or(FsError::NotFound)?;
        Inode::decode(raw.value()).map_err(|e| FsError::Corrupt(format!("{ino}: {e}")))
    }

    pub fn put_inode(&mut self, inode: &Inode) -> FsResult<()> {
        self.mark_dirty();
        let mut table = self.txn.open_table(INODES)?;
        table.insert(inode.id.0, inode.encode().as_slice())?;
        Ok(())
    }

    pub fn dirent(&self, parent: InodeId, name: &[u8]) -> FsResult<Option<Dirent>> {
        let table = self.txn.open_table(DIRENTS)?;
        let Some(value) = table.get((parent.0, name))? else {
            return Ok(None);
        };
        let (child, cookie, kind) = value.value();
        let kind = FileKind::from_byte(kind).ok_or_else(|| {
            FsError::Corrupt(format!("directory entry in {parent} has a bad kind"))
        })?;
        Ok(Some(Dirent {
            child: InodeId(child),
            cookie,
            kind,
        }))
    }

    /// Adds `name → child` to `parent` (the caller stores `parent`, whose cookie counter moves).
    pub fn add_dirent(
        &mut self,
        parent: &mut Inode,
        name: &[u8],
        child: InodeId,
        kind: FileKind,
    ) -> FsResult<()> {
        self.mark_dirty();
        let cookie = parent.next_cookie;
        parent.next_cookie += 1;
        self.txn
            .open_table(DIRENTS)?
            .insert((parent.id.0, name), (child.0, cookie, kind.to_byte()))?;
        self.txn
            .open_table(DIR_COOKIES)?
            .insert((parent.id.0, cookie), name)?;
        Ok(())
    }

    pub fn remove_dirent(&mut self, parent: InodeId, name: &[u8], cookie: u64) -> FsResult<()> {
        self.mark_dirty();
        self.txn.open_table(DIRENTS)?.remove((parent.0, name))?;
        self.txn
            .open_table(DIR_COOKIES)?
            .remove((parent.0, cookie))?;
        Ok(())
    }

    /// Points an existing entry at another child, keeping its cookie.
    pub fn retarget_dirent(&mut self, parent: InodeId, name: &[u8], entry: Dirent) -> FsResult<()> {
        self.mark_dirty();
        self.txn.open_table(DIRENTS)?.insert(
            (parent.0, name),
            (entry.child.0, entry.cookie, entry.kind.to_byte()),
        )?;
        Ok(())
    }

    pub fn dir_is_empty(&self, dir: InodeId) -> FsResult<bool> {
        let table = self.txn.open_table(DIR_COOKIES)?;
        let empty = table
            .range((dir.0, 0)..=(dir.0, u64::MAX))?
            .next()
            .is_none();
        Ok(empty)
    }

    pub fn block_of(&self, ino: InodeId, index: u64) -> FsResult<Option<u64>> {
        let table = self.txn.open_table(FILE_BLOCKS)?;
        let id = table.get((ino.0, index))?.map(|v| v.value());
        Ok(id)
    }

    pub fn block_record(&self, id: u64) -> FsResult<BlockRecord> {
        let table = self.txn.open_table(BLOCKS)?;
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
        let table = self.txn.open_table(FILE_BLOCKS)?;
        let mut out = Vec::new();
        for entry in table.range((ino.0, range.start)..(ino.0, range.end))? {
            let (key, value) = entry?;
            out.push((key.value().1, value.value()));
        }
        Ok(out)
    }

    /// Reads the content of logical block `index` of `ino` (empty for a hole).
    pub fn read_file_block(&self, ino: InodeId, index: u64) -> FsResult<Vec<u8>> {
        if let Some(content) = self.book.staged.get(&(ino.0, index)) {
            return Ok(content.clone());
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
    /// Returns the bytes of data-area space released.
    pub fn unref_block(&mut self, id: u64) -> FsResult<u64> {
        self.mark_dirty();
        let mut record = self.block_record(id)?;
        let mut table = self.txn.open_table(BLOCKS)?;
        if record.refcount > 1 {
            record.refcount -= 1;
            table.insert(id, record.encode().as_slice())?;
            return Ok(0);
        }
        table.remove(id)?;
        self.fs.cache.remove(id);
        for location in record.locations() {
            self.book
                .pending_free
                .push((location.device, location.sector, record.sectors()));
        }
        Ok(record.allocated_bytes())
    }

    /// Writes new contents for logical blocks of `inode` to fresh sectors (two copies on two
    /// devices when its `copies` property is 2) and maps them, releasing the blocks they
    /// replace. All space is claimed and all data written before the first metadata change, so
    /// ENOSPC or a device error leaves the file as it was.
    pub fn store_blocks(&mut self, inode: &mut Inode, blocks: Vec<(u64, Vec<u8>)>) -> FsResult<()> {
        let mirrored = self.copies(inode.id)? >= 2;
        let mut placed: Vec<Placed> = Vec::with_capacity(blocks.len());
        for (index, mut content) in blocks {
            let len = content.len();
            let sectors = (len as u64).div_ceil(SECTOR_SIZE).max(1);
            let Some(placement) = self.place(sectors, mirrored) else {
                self.release_placed(&placed);
                return Err(FsError::NoSpace);
            };
            content.resize(
                usize::try_from(sectors * SECTOR_SIZE).unwrap_or(usize::MAX),
                0,
            );
            placed.push(Placed {
                index,
                primary: placement.0,
                mirror: placement.1,
                buf: content,
                len,
            });
        }
        if let Err(err) = self.write_placed(&placed) {
            self.release_placed(&placed);
            return Err(err);
        }
        self.mark_dirty();
        for Placed {
            index,
            primary,
            mirror,
            buf,
            len,
        } in placed
        {
            let record = BlockRecord {
                device: primary.device,
                sector: primary.sector,
                stored_len: u32::try_from(len).unwrap_or(u32::MAX),
                checksum: crate::codec::checksum64(&buf[..len]),
                flags: 0,
                refcount: 1,
                mirror,
            };
            let id = self.book.next_block;
            self.book.next_block += 1;
            self.fs.cache.insert(id, Arc::new(buf[..len].to_vec()));
            self.txn
                .open_table(BLOCKS)?
                .insert(id, record.encode().as_slice())?;
            let old = self
                .txn
                .open_table(FILE_BLOCKS)?
                .insert((inode.id.0, index), id)?
                .map(|v| v.value());
            inode.allocated += record.allocated_bytes();
            if let Some(old) = old {
                let released = self.unref_block(old)?;
                inode.allocated = inode.allocated.saturating_sub(released);
            }
            self.book.dirty_bytes += len as u64;
        }
        Ok(())
    }

    /// Claims `sectors` for a block, and as many again on another device when `mirrored`;
    /// `None` (nothing claimed) when there is no room.
    fn place(&mut self, sectors: u64, mirrored: bool) -> Option<(Location, Option<Location>)> {
        let (device, _tier, sector) = self.book.alloc.allocate(sectors)?;
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
            let count = block.buf.len() as u64 / SECTOR_SIZE;
            for location in std::iter::once(block.primary).chain(block.mirror) {
                let _ = self
                    .book
                    .alloc
                    .release(location.device, location.sector, count);
            }
        }
    }

    fn write_placed(&self, placed: &[Placed]) -> FsResult<()> {
        let mut by_device: Vec<(DeviceIndex, Vec<crate::device::WriteOp<'_>>)> = Vec::new();
        for block in placed {
            for location in std::iter::once(block.primary).chain(block.mirror) {
                let op = crate::device::WriteOp {
                    offset: location.sector * SECTOR_SIZE,
                    data: &block.buf,
                };
                match by_device.iter_mut().find(|(d, _)| *d == location.device) {
                    Some((_, ops)) => ops.push(op),
                    None => by_device.push((location.device, vec![op])),
                }
            }
        }
        for (index, ops) in by_device {
            self.fs
                .device(index)?
                .write_batch(&ops)
                .map_err(FsError::DeviceWrite)?;
            for op in &ops {
                self.fs.count_write(index, op.data.len());
            }
        }
        Ok(())
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
                    .map_or(0, Vec::len);
                attr.blocks += (len as u64).div_ceil(SECTOR_SIZE) * (SECTOR_SIZE / 512);
            }
        }
        Ok(attr)
    }

    /// Sectors reserved for one staged block.
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
        let fresh = blocks
            .iter()
            .filter(|(index, _)| !self.book.staged.contains_key(&(inode.id.0, *index)))
            .count() as u64;
        let needed = fresh * self.sectors_per_block();
        if self.book.free_sectors() < needed && !self.book.staged.is_empty() {
            // Reservations count whole blocks; writing out what is staged turns them into
            // the sectors the contents really take (a 1 KiB file's block takes 4 KiB).
            self.flush_staged()?;
        }
        if self.book.free_sectors() < needed {
            return Err(FsError::NoSpace);
        }
        self.mark_dirty();
        self.book.reserved_sectors += needed;
        for (index, content) in blocks {
            self.book.staged_bytes += content.len() as u64;
            if let Some(old) = self.book.staged.insert((inode.id.0, index), content) {
                self.book.staged_bytes -= old.len() as u64;
            }
        }
        Ok(())
    }

    /// Overwrites part of a staged block in place, growing its content as needed.
    pub fn patch_staged(&mut self, ino: InodeId, index: u64, at: usize, data: &[u8]) {
        self.mark_dirty();
        if let Some(content) = self.book.staged.get_mut(&(ino.0, index)) {
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
            if let Some(content) = self.book.staged.remove(&(ino.0, index)) {
                self.book.staged_bytes -= content.len() as u64;
                self.book.reserved_sectors -= self.sectors_per_block();
            }
        }
    }

    /// Writes every staged block to fresh sectors and maps it, one device batch per file.
    /// A file whose blocks cannot be placed (ENOSPC on a fragmented pool) stays staged.
    pub fn flush_staged(&mut self) -> FsResult<()> {
        let inodes: Vec<u64> = {
            let mut inodes: Vec<u64> = self.book.staged.keys().map(|(ino, _)| *ino).collect();
            inodes.dedup();
            inodes
        };
        for ino in inodes {
            let keys: Vec<(u64, u64)> = self
                .book
                .staged
                .range((ino, 0)..=(ino, u64::MAX))
                .map(|(key, _)| *key)
                .collect();
            let mut inode = match self.inode(InodeId(ino)) {
                Ok(inode) => inode,
                Err(FsError::NotFound) => {
                    self.unstage_range(InodeId(ino), 0..u64::MAX);
                    continue;
                }
                Err(err) => return Err(err),
            };
            let blocks: Vec<(u64, Vec<u8>)> = keys
                .iter()
                .filter_map(|key| self.book.staged.get(key).map(|c| (key.1, c.clone())))
                .collect();
            self.store_blocks(&mut inode, blocks)?;
            self.unstage_range(InodeId(ino), 0..u64::MAX);
            self.put_inode(&inode)?;
        }
        Ok(())
    }

    /// Unmaps blocks `[from, ..)` of `ino`; returns bytes of space released.
    pub fn unmap_from(&mut self, ino: InodeId, from: u64) -> FsResult<u64> {
        self.unmap_range(ino, from..u64::MAX)
    }

    /// Unmaps the blocks of `ino` with index in `range`; returns bytes of space released.
    pub fn unmap_range(&mut self, ino: InodeId, range: std::ops::Range<u64>) -> FsResult<u64> {
        self.unstage_range(ino, range.clone());
        let victims = self.mapped_blocks(ino, range)?;
        if victims.is_empty() {
            return Ok(0);
        }
        self.mark_dirty();
        let mut released = 0;
        for (index, id) in victims {
            self.txn.open_table(FILE_BLOCKS)?.remove((ino.0, index))?;
            released += self.unref_block(id)?;
        }
        Ok(released)
    }

    /// Names of the extended attributes of `ino`, in order.
    pub fn xattr_names(&self, ino: InodeId) -> FsResult<Vec<Vec<u8>>> {
        let table = self.txn.open_table(XATTRS)?;
        let mut names = Vec::new();
        for entry in table.range((ino.0, &[][..])..)? {
            let (key, _) = entry?;
            let (owner, name) = key.value();
            if owner != ino.0 {
                break;
            }
            names.push(name.to_vec());
        }
        Ok(names)
    }

    /// Deletes an inode with everything it owns.
    pub fn free_inode(&mut self, ino: InodeId) -> FsResult<()> {
        self.mark_dirty();
        self.unmap_from(ino, 0)?;
        let names = self.xattr_names(ino)?;
        {
            let mut table = self.txn.open_table(XATTRS)?;
            for name in names {
                table.remove((ino.0, name.as_slice()))?;
            }
        }
        self.remove_properties(ino)?;
        self.txn.open_table(INODES)?.remove(ino.0)?;
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
