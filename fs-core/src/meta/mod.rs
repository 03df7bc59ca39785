//! The metadata store: a redb database kept on the pool's own devices (see [`backend`]), the
//! tables the filesystem keeps in it, and the record encodings ([`records`]).
//!
//! Tables (keys → values):
//! - `inodes`: inode number → encoded [`records::Inode`]
//! - `dirents`: (directory, name) → (child inode, readdir cookie, kind byte)
//! - `dir_cookies`: (directory, cookie) → name, the stable readdir order
//! - `file_blocks`: (inode, logical block index) → block id
//! - `blocks`: block id → encoded [`records::BlockRecord`]
//! - `xattrs`: (inode, name) → value
//! - `orphans`: inode number → () for unlinked inodes still open at the last commit
//! - `counters`: name → u64 (next inode, next block id, next generation)

pub mod backend;
pub mod records;

use redb::TableDefinition;

pub const INODES: TableDefinition<u64, &[u8]> = TableDefinition::new("inodes");
pub const DIRENTS: TableDefinition<(u64, &[u8]), (u64, u64, u8)> = TableDefinition::new("dirents");
pub const DIR_COOKIES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("dir_cookies");
pub const FILE_BLOCKS: TableDefinition<(u64, u64), u64> = TableDefinition::new("file_blocks");
pub const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
pub const XATTRS: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("xattrs");
pub const ORPHANS: TableDefinition<u64, ()> = TableDefinition::new("orphans");
pub const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// Per-member error counters (read, write, checksum, repaired), kept across mounts.
pub const DEVICE_ERRORS: TableDefinition<u16, (u64, u64, u64, u64)> =
    TableDefinition::new("device_errors");
/// The scrub's progress (key `scrub`), kept so a scrub resumes after a remount or crash.
pub const SCRUB: TableDefinition<&str, &[u8]> = TableDefinition::new("scrub");
/// Properties (`copies`, …) by (inode, name); inode 0 holds the pool's defaults.
pub const PROPERTIES: TableDefinition<(u64, &str), &str> = TableDefinition::new("properties");

pub const NEXT_INODE: &str = "next_inode";
pub const NEXT_BLOCK: &str = "next_block";
pub const NEXT_GENERATION: &str = "next_generation";
