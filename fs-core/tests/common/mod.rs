//! Shared helpers: in-memory pools behind fault-injecting devices.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use fs_core::device::{BlockDevice, FaultyDevice, MemDevice};
use fs_core::fs::{Caller, Filesystem, FsConfig, NewNode};
use fs_core::meta::records::FileKind;
use fs_core::pool::{format_devices, open_devices, FormatOptions};
use fs_core::types::{InodeId, Tier};

pub const MIB: u64 = 1024 * 1024;

/// A pool of one fast and one slow in-memory member, each behind a `FaultyDevice`.
pub struct TestPool {
    pub fast: Arc<FaultyDevice>,
    pub slow: Arc<FaultyDevice>,
}

impl TestPool {
    pub fn new(fast_mib: u64, slow_mib: u64) -> Self {
        Self::with_block_size(fast_mib, slow_mib, 128 * 1024)
    }

    pub fn with_block_size(fast_mib: u64, slow_mib: u64, block_size: u32) -> Self {
        let fast = Arc::new(FaultyDevice::new(Arc::new(MemDevice::new(
            "fast",
            fast_mib * MIB,
        ))));
        let slow = Arc::new(FaultyDevice::new(Arc::new(MemDevice::new(
            "slow",
            slow_mib * MIB,
        ))));
        let devices: Vec<(Arc<dyn BlockDevice>, Tier)> =
            vec![(fast.clone(), Tier::Fast), (slow.clone(), Tier::Slow)];
        format_devices(
            &devices,
            &FormatOptions {
                label: "test".into(),
                block_size,
                force: false,
            },
        )
        .expect("format");
        Self { fast, slow }
    }

    /// Opens the filesystem (commits only when asked: no background committer).
    pub fn open(&self) -> Arc<Filesystem> {
        self.try_open().expect("open filesystem")
    }

    /// Opens the pool alone (for fsck), without loading the filesystem.
    pub fn pool(&self) -> fs_core::FsResult<fs_core::pool::Pool> {
        open_devices(vec![
            (
                self.fast.clone() as Arc<dyn BlockDevice>,
                PathBuf::from("fast"),
                None,
            ),
            (
                self.slow.clone() as Arc<dyn BlockDevice>,
                PathBuf::from("slow"),
                None,
            ),
        ])
    }

    pub fn try_open(&self) -> fs_core::FsResult<Arc<Filesystem>> {
        let pool = self.pool()?;
        Filesystem::new(
            pool,
            FsConfig {
                commit_interval: std::time::Duration::from_secs(3600),
                dirty_limit: u64::MAX,
                cache_bytes: 8 * MIB,
            },
        )
    }

    /// Simulates losing power under a live filesystem: unflushed writes are dropped (or torn)
    /// on both members, the filesystem dies (its I/O fails from the cut on), the machine comes
    /// back.
    pub fn crash(&self, fs: Arc<Filesystem>, mode: fs_core::device::CutMode) {
        self.fast.power_cut(mode).unwrap();
        self.slow.power_cut(mode).unwrap();
        drop(fs);
        self.fast.revive();
        self.slow.revive();
    }
}

pub fn create_file(fs: &Filesystem, parent: InodeId, name: &str) -> InodeId {
    fs.create_node(
        parent,
        name.as_bytes(),
        &NewNode::new(FileKind::Regular, 0o644),
        Caller::ROOT,
    )
    .unwrap()
    .ino
}

pub fn mkdir(fs: &Filesystem, parent: InodeId, name: &str) -> InodeId {
    fs.create_node(
        parent,
        name.as_bytes(),
        &NewNode::new(FileKind::Directory, 0o755),
        Caller::ROOT,
    )
    .unwrap()
    .ino
}

/// Reads a whole file.
pub fn read_all(fs: &Filesystem, ino: InodeId) -> Vec<u8> {
    let size = fs.getattr(ino).unwrap().size;
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let chunk = fs.read(ino, out.len() as u64, 1 << 20).unwrap();
        assert!(!chunk.is_empty(), "short read at {}", out.len());
        out.extend_from_slice(&chunk);
    }
    out
}

/// Deterministic pseudo-random bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
