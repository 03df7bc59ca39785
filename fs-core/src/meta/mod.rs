//! The metadata store: a redb database kept on the pool's own devices (see [`backend`]), the
//! tables the filesystem keeps in it, and the record encodings ([`records`]).
//!
//! Tables (keys → values):
//! - `inodes`: inode number → (encoded [`records::Inode`], birth epoch)
//! - `dirents`: (directory, name) → (child inode, readdir cookie, kind byte, birth epoch)
//! - `dir_cookies`: (directory, cookie) → (name, birth epoch), the stable readdir order
//! - `file_blocks`: (inode, logical block index) → (block id, birth epoch)
//! - `blocks`: block id → encoded [`records::BlockRecord`]
//! - `xattrs`: (inode, name) → (value, birth epoch)
//! - `orphans`: inode number → () for unlinked inodes still open at the last commit
//! - `counters`: name → u64 (next inode, next block id, next generation, live epoch,
//!   referenced bytes, block totals, nonce generation)
//!
//! The five namespace tables hold the live tree; every record carries the epoch it was
//! written in. A record a snapshot still sees is moved to `history` when it is replaced or
//! removed (see `fs::versions`).

// Table definitions spell out redb's tuple key and value types; naming each tuple would only
// hide the layout `docs/format.md` documents.
#![allow(clippy::type_complexity)]

pub mod backend;
pub mod records;

use redb::TableDefinition;

pub const INODES: TableDefinition<u64, (&[u8], u64)> = TableDefinition::new("inodes");
pub const DIRENTS: TableDefinition<(u64, &[u8]), (u64, u64, u8, u64)> =
    TableDefinition::new("dirents");
pub const DIR_COOKIES: TableDefinition<(u64, u64), (&[u8], u64)> =
    TableDefinition::new("dir_cookies");
pub const FILE_BLOCKS: TableDefinition<(u64, u64), (u64, u64)> =
    TableDefinition::new("file_blocks");
pub const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
pub const XATTRS: TableDefinition<(u64, &[u8]), (&[u8], u64)> = TableDefinition::new("xattrs");
/// Snapshots by epoch → encoded [`records::SnapshotRecord`].
pub const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");
/// Replaced namespace records some snapshot still sees: (record kind, key, death epoch) →
/// (birth epoch, encoded value). Keys and values are encoded by `fs::versions`.
pub const HISTORY: TableDefinition<(u8, &[u8], u64), (u64, &[u8])> =
    TableDefinition::new("history");
/// The same records by (death epoch, birth epoch, kind, key), the order snapshot deletion and
/// rollback walk them in.
pub const DEADLIST: TableDefinition<(u64, u64, u8, &[u8]), ()> = TableDefinition::new("deadlist");
/// Per (birth epoch, death epoch): how many history records, and the data-area bytes of the
/// blocks their file-map records hold. Snapshot space accounting sums these.
pub const SPANS: TableDefinition<(u64, u64), (u64, u64)> = TableDefinition::new("spans");
pub const ORPHANS: TableDefinition<u64, ()> = TableDefinition::new("orphans");
pub const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// Per-member error counters (read, write, checksum, repaired), kept across mounts.
pub const DEVICE_ERRORS: TableDefinition<u16, (u64, u64, u64, u64)> =
    TableDefinition::new("device_errors");
/// The scrub's progress (key `scrub`), kept so a scrub resumes after a remount or crash.
pub const SCRUB: TableDefinition<&str, &[u8]> = TableDefinition::new("scrub");
/// Tier migrations run on the pool: (start seconds, start nanoseconds) → encoded
/// [`records::MigrationRecord`]; the newest 1,000 are kept.
pub const MIGRATIONS: TableDefinition<(i64, u32), &[u8]> = TableDefinition::new("migrations");
/// Block heat (see [`crate::heat`]): block id → (decayed access score, its time in seconds).
pub const HEAT: TableDefinition<u64, (f64, i64)> = TableDefinition::new("heat");
/// The dedup table of a dedup pool: keyed content hash ([`crate::codec::dedup_hash`]) → the
/// block holding that content.
pub const DEDUP: TableDefinition<&[u8; 32], u64> = TableDefinition::new("dedup");
/// Properties (`copies`, …) by (inode, name); inode 0 holds the pool's defaults.
pub const PROPERTIES: TableDefinition<(u64, &str), &str> = TableDefinition::new("properties");

pub const NEXT_INODE: &str = "next_inode";
pub const NEXT_BLOCK: &str = "next_block";
pub const NEXT_GENERATION: &str = "next_generation";
/// The live epoch: records written now carry it; taking a snapshot freezes it and moves on.
pub const EPOCH: &str = "epoch";
/// Data-area bytes of the blocks the live tree maps (a snapshot records it when taken).
pub const REFERENCED: &str = "referenced";
/// Content bytes of every block in the block table, each block counted once.
pub const BLOCK_LOGICAL: &str = "block_logical";
/// Stored bytes (one copy, after compression and encryption) of every block, each once.
pub const BLOCK_STORED: &str = "block_stored";
/// Content bytes of every block times its references: what the blocks would take without dedup.
pub const BLOCK_LOGICAL_REFS: &str = "block_logical_refs";
/// Mounts that may have encrypted blocks: each mount takes the next one as the prefix of its
/// block nonces, committed before its first block is written.
pub const NONCE_GENERATION: &str = "nonce_generation";
