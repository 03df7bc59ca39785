//! AegisFS filesystem core.
//!
//! Layers, bottom up:
//! - [`device`]: the `BlockDevice` trait and its backends (io_uring, pread/pwrite, memory, faults).
//! - [`format`]: the on-disk superblock and pool layout (pure encoding, no I/O).
//! - [`codec`]: checksums over block bytes (pure functions).
//! - [`meta`]: the redb metadata store on the pool's own devices, its tables and record codecs.
//! - [`alloc`]: the sector allocator of the data areas.
//! - [`pool`]: format and open a pool: members, superblocks, metadata, allocator.
//! - [`fs`]: namespace and data operations (the POSIX semantics), transaction groups.
//! - [`fuse`]: the thin adapter from `fuser` requests to [`fs`] calls.
//! - [`fsck`]: the read-only consistency check of a pool.
//!
//! `fuzzing` (hidden) holds the checks the fuzz targets and their regression test share.
//!
//! fs-core knows nothing of daemons, schedules or terminals.

pub mod alloc;
pub mod codec;
pub mod device;
pub mod error;
pub mod format;
pub mod fs;
pub mod fsck;
pub mod fuse;
#[doc(hidden)]
pub mod fuzzing;
pub mod heat;
pub mod meta;
pub mod pool;
pub mod types;

pub use error::{FsError, FsResult};
