//! `du`: what a subtree holds (apparent size, content bytes, stored bytes, allocated bytes),
//! read from the last commit beside the open transaction group, so walking a large tree holds
//! up no I/O.

use std::collections::HashSet;

use redb::ReadableDatabase;

use super::Filesystem;
use crate::error::{FsError, FsResult};
use crate::meta::records::{BlockRecord, FileKind, Inode};
use crate::meta::{BLOCKS, DIRENTS, FILE_BLOCKS, INODES};
use crate::types::InodeId;

/// What a subtree holds. Blocks shared between files (dedup) count in each file, as `du`
/// counts hard-linked files once but shared extents in each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub files: u64,
    pub directories: u64,
    /// Sum of file sizes (`ls -l`).
    pub apparent: u64,
    /// Content bytes in blocks and inline data (holes and all-zero blocks excluded).
    pub logical: u64,
    /// Bytes stored for that content: compressed and encrypted, one copy.
    pub stored: u64,
    /// Data-area bytes taken, all copies and whole sectors counted.
    pub allocated: u64,
}

impl Usage {
    /// Content bytes per stored byte (1.0 when nothing is stored).
    pub fn compression_ratio(&self) -> f64 {
        if self.stored == 0 {
            1.0
        } else {
            self.logical as f64 / self.stored as f64
        }
    }
}

impl Filesystem {
    /// What the live subtree at `ino` holds, as of the last commit (hard links counted once).
    pub fn usage(&self, ino: InodeId) -> FsResult<Usage> {
        if ino.snapshot_epoch().is_some() || ino == InodeId::SNAPSHOT_DIR {
            return Err(FsError::BadSnapshot(
                "usage is counted for the live tree only".into(),
            ));
        }
        let txn = self.pool.db.begin_read()?;
        let inodes = txn.open_table(INODES)?;
        let dirents = txn.open_table(DIRENTS)?;
        let file_blocks = txn.open_table(FILE_BLOCKS)?;
        let blocks = txn.open_table(BLOCKS)?;
        let inode = |number: u64| -> FsResult<Inode> {
            let raw = inodes.get(number)?.ok_or(FsError::NotFound)?;
            Inode::decode(raw.value().0)
                .map_err(|e| FsError::Corrupt(format!("inode {number}: {e}")))
        };
        let mut usage = Usage::default();
        let mut seen: HashSet<u64> = HashSet::new();
        let mut pending = vec![ino.0];
        while let Some(number) = pending.pop() {
            if !seen.insert(number) {
                continue;
            }
            let node = inode(number)?;
            match node.kind {
                FileKind::Directory => {
                    usage.directories += 1;
                    for entry in dirents.range((number, &[][..])..(number + 1, &[][..]))? {
                        pending.push(entry?.1.value().0);
                    }
                }
                FileKind::Regular => {
                    usage.files += 1;
                    usage.apparent += node.size;
                    if let Some(inline) = &node.inline {
                        usage.logical += inline.len() as u64;
                        usage.stored += inline.len() as u64;
                    }
                    for entry in file_blocks.range((number, 0)..=(number, u64::MAX))? {
                        let id = entry?.1.value().0;
                        let raw = blocks.get(id)?.ok_or_else(|| {
                            FsError::Corrupt(format!(
                                "block {id} is mapped but not in the block table"
                            ))
                        })?;
                        let record = BlockRecord::decode(raw.value())
                            .map_err(|e| FsError::Corrupt(format!("block {id}: {e}")))?;
                        usage.logical += u64::from(record.logical_len);
                        usage.stored += u64::from(record.stored_len);
                        usage.allocated += record.allocated_bytes();
                    }
                }
                _ => usage.files += 1,
            }
        }
        Ok(usage)
    }
}
