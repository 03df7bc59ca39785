//! Data verbs: read, write, truncate, fallocate, lseek (`SEEK_DATA`/`SEEK_HOLE`) and fsync.
//!
//! A file is either inline (its bytes in the inode, while it is at most [`INLINE_MAX`] bytes
//! and has no blocks) or a map of logical blocks of `block_size` bytes. A block's stored
//! content may be shorter than the block: the rest reads as zeros, as does every unmapped
//! block (a hole).

use std::sync::PoisonError;

use super::tx::Tx;
use super::{Caller, Filesystem, INLINE_MAX, MAX_FILE_SIZE};
use crate::error::{FsError, FsResult};
use crate::meta::records::{BlockRecord, FileKind, Inode, Timestamp};
use crate::types::InodeId;

/// `lseek` modes the filesystem answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whence {
    Data,
    Hole,
}

/// fallocate mode bits (linux/falloc.h).
const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
const FALLOC_FL_ZERO_RANGE: i32 = 0x10;

fn regular(inode: &Inode) -> FsResult<()> {
    match inode.kind {
        FileKind::Regular => Ok(()),
        FileKind::Directory => Err(FsError::IsDir),
        _ => Err(FsError::Invalid("not a regular file")),
    }
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

impl Tx<'_, '_> {
    /// Moves an inline file's bytes into block 0 so block-level changes can follow.
    fn leave_inline(&mut self, inode: &mut Inode) -> FsResult<()> {
        let Some(content) = inode.inline.take() else {
            return Ok(());
        };
        if !content.is_empty() {
            if let Err(err) = self.stage_blocks(inode, vec![(0, content.clone())]) {
                inode.inline = Some(content);
                return Err(err);
            }
        }
        Ok(())
    }

    /// Overwrites `[offset, offset + data.len())` of a regular file, growing it as needed.
    pub fn write(&mut self, inode: &mut Inode, offset: u64, data: &[u8]) -> FsResult<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= MAX_FILE_SIZE)
            .ok_or(FsError::TooBig)?;
        if data.is_empty() {
            return Ok(());
        }
        if let Some(inline) = inode.inline.as_mut() {
            if end <= INLINE_MAX {
                let (start, stop) = (to_usize(offset), to_usize(end));
                if inline.len() < stop {
                    inline.resize(stop, 0);
                }
                inline[start..stop].copy_from_slice(data);
                inode.size = inode.size.max(end);
                self.mark_dirty();
                return Ok(());
            }
        }
        let bs = self.fs.block_size;
        let first = offset / bs;
        let last = (end - 1) / bs;
        let inline = inode.inline.take();
        let mut blocks = Vec::with_capacity(to_usize(last - first + 1));
        if let Some(content) = &inline {
            if first > 0 && !content.is_empty() {
                blocks.push((0, content.clone()));
            }
        }
        // Blocks already staged are patched in place once nothing can fail any more.
        let mut patches = Vec::new();
        for index in first..=last {
            let block_start = index * bs;
            let lo = to_usize(offset.max(block_start) - block_start);
            let hi = to_usize(end.min(block_start + bs) - block_start);
            let src = &data[to_usize(block_start + lo as u64 - offset)..][..hi - lo];
            if self.book.staged.contains_key(&(inode.id.0, index)) {
                patches.push((index, lo, src));
                continue;
            }
            if lo == 0 && hi == to_usize(bs) {
                blocks.push((index, src.to_vec()));
                continue;
            }
            let mut content = if index == 0 && inline.is_some() {
                inline.clone().unwrap_or_default()
            } else {
                self.read_file_block(inode.id, index)?
            };
            if content.len() < hi {
                content.resize(hi, 0);
            }
            content[lo..hi].copy_from_slice(src);
            blocks.push((index, content));
        }
        if let Err(err) = self.stage_blocks(inode, blocks) {
            inode.inline = inline;
            return Err(err);
        }
        for (index, lo, src) in patches {
            self.patch_staged(inode.id, index, lo, src);
        }
        inode.size = inode.size.max(end);
        Ok(())
    }

    /// Sets a regular file's size; shrinking drops data past the end so it reads as zeros if
    /// the file grows again.
    pub fn truncate(&mut self, inode: &mut Inode, size: u64) -> FsResult<()> {
        if size > MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        self.mark_dirty();
        if let Some(inline) = inode.inline.as_mut() {
            if size <= INLINE_MAX {
                inline.truncate(to_usize(size));
                inode.size = size;
                return Ok(());
            }
            self.leave_inline(inode)?;
            inode.size = size;
            return Ok(());
        }
        if size < inode.size {
            let bs = self.fs.block_size;
            let tail = size % bs;
            if tail != 0 {
                let index = size / bs;
                let mut content = self.read_file_block(inode.id, index)?;
                if content.len() > to_usize(tail) {
                    content.truncate(to_usize(tail));
                    self.stage_blocks(inode, vec![(index, content)])?;
                }
            }
            let released = self.unmap_from(inode.id, size.div_ceil(bs))?;
            inode.allocated = inode.allocated.saturating_sub(released);
            if size == 0 {
                inode.inline = Some(Vec::new());
            }
        }
        inode.size = size;
        Ok(())
    }

    /// Makes `[offset, end)` read as zeros without changing the size.
    fn zero_range(&mut self, inode: &mut Inode, offset: u64, end: u64) -> FsResult<()> {
        let end = end.min(inode.size);
        if offset >= end {
            return Ok(());
        }
        self.mark_dirty();
        if let Some(inline) = inode.inline.as_mut() {
            let stop = to_usize(end).min(inline.len());
            let start = to_usize(offset).min(stop);
            inline[start..stop].fill(0);
            return Ok(());
        }
        let bs = self.fs.block_size;
        let first_whole = offset.div_ceil(bs);
        let end_whole = end / bs;
        let mut partial = Vec::new();
        for index in [offset / bs, end_whole] {
            let block_start = index * bs;
            if (first_whole..end_whole).contains(&index)
                || block_start >= end
                || partial.iter().any(|(i, _)| *i == index)
            {
                continue;
            }
            let mut content = self.read_file_block(inode.id, index)?;
            let lo = to_usize(offset.max(block_start) - block_start).min(content.len());
            let hi = to_usize(end.min(block_start + bs) - block_start).min(content.len());
            if lo < hi {
                content[lo..hi].fill(0);
                partial.push((index, content));
            }
        }
        if !partial.is_empty() {
            self.stage_blocks(inode, partial)?;
        }
        if first_whole < end_whole {
            let released = self.unmap_range(inode.id, first_whole..end_whole)?;
            inode.allocated = inode.allocated.saturating_sub(released);
        }
        Ok(())
    }
}

/// Blocks a read must fetch: (where in the output, offset in the block, length, block id, record).
type ReadPlan = Vec<(usize, usize, usize, u64, BlockRecord)>;

impl Filesystem {
    /// Reads up to `size` bytes at `offset` (fewer at end of file).
    pub fn read(&self, ino: InodeId, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let bs = self.block_size;
        let (mut out, plan, gate) = self.view(|tx| {
            let inode = tx.inode(ino)?;
            regular(&inode)?;
            if offset >= inode.size {
                return Ok((Vec::new(), Vec::new(), None));
            }
            let end = inode.size.min(offset + u64::from(size));
            let mut out = vec![0u8; to_usize(end - offset)];
            if let Some(inline) = &inode.inline {
                let start = to_usize(offset).min(inline.len());
                let stop = to_usize(end).min(inline.len());
                out[..stop - start].copy_from_slice(&inline[start..stop]);
                return Ok((out, Vec::new(), None));
            }
            let blocks = offset / bs..(end - 1) / bs + 1;
            let staged = tx.staged_indices(ino, blocks.clone());
            for &index in &staged {
                let block_start = index * bs;
                let lo = offset.max(block_start);
                let hi = end.min(block_start + bs);
                let content = tx
                    .book
                    .staged
                    .get(&(ino.0, index))
                    .map_or(&[][..], |block| block.content.as_slice());
                let in_block = to_usize(lo - block_start);
                let available = content
                    .len()
                    .saturating_sub(in_block)
                    .min(to_usize(hi - lo));
                if available > 0 {
                    let at = to_usize(lo - offset);
                    out[at..at + available]
                        .copy_from_slice(&content[in_block..in_block + available]);
                }
            }
            let mut plan: ReadPlan = Vec::new();
            for (index, id) in tx.mapped_blocks(ino, blocks)? {
                if staged.contains(&index) {
                    continue;
                }
                let record = tx.block_record(id)?;
                let block_start = index * bs;
                let lo = offset.max(block_start);
                let hi = end.min(block_start + bs);
                plan.push((
                    to_usize(lo - offset),
                    to_usize(lo - block_start),
                    to_usize(hi - lo),
                    id,
                    record,
                ));
            }
            tx.count_accesses(plan.iter().map(|p| p.3));
            // Keep the sectors from being reused until the read is done.
            let gate = self
                .free_gate
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            Ok((out, plan, Some(gate)))
        })?;
        let wanted: Vec<(u64, BlockRecord)> = plan.iter().map(|p| (p.3, p.4)).collect();
        let contents = self.read_blocks(&wanted);
        drop(gate);
        let contents = contents.inspect_err(|err| self.log_unreadable(ino, err))?;
        for ((at, in_block, len, _, _), content) in plan.into_iter().zip(contents) {
            // Bytes past the stored content read as zeros (already in `out`).
            let available = content.len().saturating_sub(in_block).min(len);
            if available > 0 {
                out[at..at + available].copy_from_slice(&content[in_block..in_block + available]);
            }
        }
        Ok(out)
    }

    /// Writes `data` at `offset`; returns the bytes written.
    pub fn write(&self, ino: InodeId, offset: u64, data: &[u8]) -> FsResult<usize> {
        super::tx::writable(ino)?;
        self.with_tx(|tx| {
            let mut inode = tx.inode(ino)?;
            regular(&inode)?;
            tx.write(&mut inode, offset, data)?;
            let now = Timestamp::now();
            inode.mtime = now;
            inode.ctime = now;
            // A write by anyone drops setuid and setgid (the kernel asks only for writers
            // without CAP_FSETID, but a FUSE write does not say who wrote it).
            tx.drop_privileges(&mut inode, true)?;
            tx.put_inode(&inode)?;
            Ok(data.len())
        })
    }

    /// `fallocate`: mode 0 and `KEEP_SIZE` reserve nothing on a copy-on-write pool but check
    /// the space exists and extend the size; `PUNCH_HOLE` and `ZERO_RANGE` zero a range.
    pub fn fallocate(
        &self,
        ino: InodeId,
        offset: u64,
        len: u64,
        mode: i32,
        caller: Caller,
    ) -> FsResult<()> {
        super::tx::writable(ino)?;
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= MAX_FILE_SIZE)
            .ok_or(FsError::TooBig)?;
        if len == 0 {
            return Err(FsError::Invalid("zero length"));
        }
        let known = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE;
        if mode & !known != 0 {
            return Err(FsError::NotSupported);
        }
        if mode & FALLOC_FL_PUNCH_HOLE != 0 && mode & FALLOC_FL_KEEP_SIZE == 0 {
            return Err(FsError::NotSupported);
        }
        self.with_tx(|tx| {
            let mut inode = tx.inode(ino)?;
            regular(&inode)?;
            if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) != 0 {
                tx.zero_range(&mut inode, offset, end)?;
            } else {
                let needed = end.saturating_sub(inode.size);
                let free = tx.book.free_sectors() * crate::format::SECTOR_SIZE;
                if needed > free {
                    return Err(FsError::NoSpace);
                }
            }
            if mode & FALLOC_FL_KEEP_SIZE == 0 && end > inode.size {
                tx.truncate(&mut inode, end)?;
            }
            let now = Timestamp::now();
            inode.mtime = now;
            inode.ctime = now;
            tx.drop_privileges(&mut inode, !caller.keeps_set_ids())?;
            tx.put_inode(&inode)
        })
    }

    /// `lseek` with `SEEK_DATA` or `SEEK_HOLE`.
    pub fn seek(&self, ino: InodeId, offset: u64, whence: Whence) -> FsResult<u64> {
        self.view(|tx| {
            let inode = tx.inode(ino)?;
            regular(&inode)?;
            if offset >= inode.size {
                return Err(FsError::NoSuchOffset);
            }
            if inode.inline.is_some() {
                return Ok(match whence {
                    Whence::Data => offset,
                    Whence::Hole => inode.size,
                });
            }
            let bs = tx.fs.block_size;
            let last = (inode.size - 1) / bs + 1;
            let mut mapped: Vec<u64> = tx
                .mapped_blocks(ino, offset / bs..last)?
                .into_iter()
                .map(|(index, _)| index)
                .chain(tx.staged_indices(ino, offset / bs..last))
                .collect();
            mapped.sort_unstable();
            mapped.dedup();
            match whence {
                Whence::Data => mapped
                    .first()
                    .map(|index| (index * bs).max(offset))
                    .ok_or(FsError::NoSuchOffset),
                Whence::Hole => {
                    let mut expected = offset / bs;
                    for index in &mapped {
                        if *index != expected {
                            break;
                        }
                        expected += 1;
                    }
                    Ok((expected * bs).max(offset).min(inode.size))
                }
            }
        })
    }

    /// The heat of each mapped block of `ino` now, by block index (blocks still staged have
    /// none yet).
    pub fn file_heat(&self, ino: InodeId) -> FsResult<Vec<(u64, f64)>> {
        self.view(|tx| {
            let now = crate::heat::now();
            let half_life = tx.fs.config.heat_half_life;
            tx.mapped_blocks(ino, 0..u64::MAX)?
                .into_iter()
                .map(|(index, id)| Ok((index, tx.heat(id)?.at_time(now, half_life))))
                .collect()
        })
    }

    /// Makes everything written so far durable (fsync, fdatasync and fsyncdir all commit the
    /// transaction group, which covers every file).
    pub fn fsync(&self) -> FsResult<()> {
        self.commit()
    }
}
