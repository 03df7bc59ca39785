//! `BlockCache`: verified block contents in memory, keyed by block id.
//!
//! Blocks are immutable (copy-on-write) and block ids only grow while the filesystem is open,
//! so an entry can never go stale: it is dropped only to make room, or when its block is freed.
//! Random reads smaller than a block and read-modify-write of partial blocks hit it instead of
//! reading the whole block again.

use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::Weighter;

#[derive(Debug, Clone, Copy)]
struct ByteWeight;

impl Weighter<u64, Arc<Vec<u8>>> for ByteWeight {
    fn weight(&self, _id: &u64, content: &Arc<Vec<u8>>) -> u64 {
        content.len().max(1) as u64
    }
}

/// A size-bounded cache of block contents.
pub(super) struct BlockCache {
    entries: Cache<u64, Arc<Vec<u8>>, ByteWeight>,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("bytes", &self.entries.weight())
            .finish()
    }
}

impl BlockCache {
    /// A cache holding at most `bytes` of block contents (assuming blocks of `block_size`).
    pub fn new(bytes: u64, block_size: u64) -> Self {
        let items = usize::try_from(bytes / block_size.max(1))
            .unwrap_or(usize::MAX)
            .max(16);
        Self {
            entries: Cache::with_weighter(items, bytes.max(1), ByteWeight),
        }
    }

    pub fn get(&self, id: u64) -> Option<Arc<Vec<u8>>> {
        self.entries.get(&id)
    }

    pub fn insert(&self, id: u64, content: Arc<Vec<u8>>) {
        self.entries.insert(id, content);
    }

    pub fn remove(&self, id: u64) {
        self.entries.remove(&id);
    }
}
