//! Shared helpers: in-memory pools behind fault-injecting devices.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use fs_core::device::{BlockDevice, FaultyDevice, MemDevice};
use fs_core::fs::{Caller, Filesystem, FsConfig, NewNode};
use fs_core::meta::records::FileKind;
use fs_core::pool::{format_devices, open_devices_with, FormatOptions, Secret};
use fs_core::types::{InodeId, Tier};

pub const MIB: u64 = 1024 * 1024;

/// A pool of one fast and one slow in-memory member, each behind a `FaultyDevice`.
pub struct TestPool {
    pub fast: Arc<FaultyDevice>,
    pub slow: Arc<FaultyDevice>,
    /// The passphrase of an encrypted pool.
    pub secret: Option<Secret>,
}

impl TestPool {
    pub fn new(fast_mib: u64, slow_mib: u64) -> Self {
        Self::with_block_size(fast_mib, slow_mib, 128 * 1024)
    }

    pub fn with_block_size(fast_mib: u64, slow_mib: u64, block_size: u32) -> Self {
        Self::with_options(
            fast_mib,
            slow_mib,
            &FormatOptions {
                label: "test".into(),
                block_size,
                ..FormatOptions::default()
            },
        )
    }

    pub fn with_options(fast_mib: u64, slow_mib: u64, options: &FormatOptions) -> Self {
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
        format_devices(&devices, options).expect("format");
        Self {
            fast,
            slow,
            secret: options.encryption.clone(),
        }
    }

    /// Opens the filesystem (commits only when asked: no background committer).
    pub fn open(&self) -> Arc<Filesystem> {
        self.try_open().expect("open filesystem")
    }

    /// Opens the pool alone (for fsck), without loading the filesystem.
    pub fn pool(&self) -> fs_core::FsResult<fs_core::pool::Pool> {
        self.pool_with(self.secret.as_ref())
    }

    /// Opens the pool alone with the given secret.
    pub fn pool_with(&self, secret: Option<&Secret>) -> fs_core::FsResult<fs_core::pool::Pool> {
        open_devices_with(
            vec![
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
            ],
            secret,
        )
    }

    pub fn try_open(&self) -> fs_core::FsResult<Arc<Filesystem>> {
        Filesystem::new(self.pool()?, Self::config())
    }

    /// Opens the filesystem with a block cache of `cache_bytes` (1: no block stays cached).
    pub fn open_with_cache(&self, cache_bytes: u64) -> Arc<Filesystem> {
        self.open_with(FsConfig {
            cache_bytes,
            ..Self::config()
        })
    }

    pub fn open_with(&self, config: FsConfig) -> Arc<Filesystem> {
        Filesystem::new(self.pool().expect("open pool"), config).expect("open filesystem")
    }

    /// The tests' filesystem settings: commits only when asked, an 8 MiB block cache.
    pub fn config() -> FsConfig {
        FsConfig {
            commit_interval: std::time::Duration::from_secs(3600),
            dirty_limit: u64::MAX,
            cache_bytes: 8 * MIB,
            ..FsConfig::default()
        }
    }

    /// The block records of a file, in block order, as last committed (the filesystem must
    /// be closed: this opens the pool beside it).
    pub fn file_records(&self, ino: InodeId) -> Vec<fs_core::meta::records::BlockRecord> {
        use redb::ReadableDatabase;
        let pool = self.pool().unwrap();
        let txn = pool.db.begin_read().unwrap();
        let map = txn.open_table(fs_core::meta::FILE_BLOCKS).unwrap();
        let blocks = txn.open_table(fs_core::meta::BLOCKS).unwrap();
        map.range((ino.0, 0)..(ino.0 + 1, 0))
            .unwrap()
            .map(|entry| {
                let id = entry.unwrap().1.value().0;
                fs_core::meta::records::BlockRecord::decode(
                    blocks.get(id).unwrap().unwrap().value(),
                )
                .unwrap()
            })
            .collect()
    }

    /// The fast member (`true`) or the slow one.
    pub fn member(&self, fast: bool) -> &Arc<FaultyDevice> {
        if fast {
            &self.fast
        } else {
            &self.slow
        }
    }

    /// Byte range of the data area of a member.
    pub fn data_area(&self, fast: bool) -> Range<u64> {
        let sb = fs_core::pool::read_superblock(self.member(fast).as_ref()).unwrap();
        sb.data_start..sb.data_end
    }

    /// Byte range of the metadata region of a member.
    pub fn metadata_region(&self, fast: bool) -> Range<u64> {
        let sb = fs_core::pool::read_superblock(self.member(fast).as_ref()).unwrap();
        sb.meta_offset..sb.meta_offset + sb.meta_len
    }

    /// Clears every fault plan.
    pub fn clear_faults(&self) {
        self.fast.set_plan(fs_core::device::FaultPlan::default());
        self.slow.set_plan(fs_core::device::FaultPlan::default());
    }

    /// Runs `fsck` with data checksums and fails on any finding.
    pub fn assert_fsck_clean(&self, context: &str) {
        let report = fs_core::fsck::check(&mut self.pool().unwrap(), true).unwrap();
        assert!(report.is_clean(), "{context}: fsck: {:?}", report.findings);
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

/// Everything `stat`, `read`, `readlink` and the xattr calls show of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: FileKind,
    pub perm: u32,
    pub nlink: u32,
    pub size: u64,
    /// A file's bytes or a symlink's target.
    pub content: Vec<u8>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// The whole tree by path ("" is the root), read through the filesystem's verbs.
pub fn tree(fs: &Filesystem) -> BTreeMap<String, Node> {
    tree_at(fs, InodeId::ROOT)
}

/// The tree under directory `root` (the live root, or a snapshot's), by path.
pub fn tree_at(fs: &Filesystem, root: InodeId) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![(String::new(), root)];
    while let Some((path, dir)) = dirs.pop() {
        out.insert(path.clone(), node(fs, dir));
        let mut cookie = 0;
        loop {
            let entries = fs.readdir(dir, cookie, 64).unwrap();
            let Some(last) = entries.last() else { break };
            cookie = last.cookie;
            for entry in entries {
                if entry.name == b"." || entry.name == b".." {
                    continue;
                }
                let child = format!("{path}/{}", String::from_utf8_lossy(&entry.name));
                assert_eq!(
                    fs.lookup(dir, &entry.name).unwrap().ino,
                    entry.ino,
                    "{child}"
                );
                if entry.kind == FileKind::Directory {
                    dirs.push((child, entry.ino));
                } else {
                    out.insert(child, node(fs, entry.ino));
                }
            }
        }
    }
    out
}

fn node(fs: &Filesystem, ino: InodeId) -> Node {
    let attr = fs.getattr(ino).unwrap();
    let content = match attr.kind {
        FileKind::Regular => read_all(fs, ino),
        FileKind::Symlink => fs.readlink(ino).unwrap(),
        _ => Vec::new(),
    };
    let names = fs.listxattr(ino).unwrap();
    let xattrs = names
        .split(|&b| b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| (name.to_vec(), fs.getxattr(ino, name).unwrap()))
        .collect();
    Node {
        kind: attr.kind,
        perm: attr.perm,
        nlink: attr.nlink,
        size: attr.size,
        content,
        xattrs,
    }
}

/// Fails with the paths that differ (not the whole trees, which hold file contents).
pub fn assert_same_tree(
    actual: &BTreeMap<String, Node>,
    expected: &BTreeMap<String, Node>,
    context: &str,
) {
    let differing: Vec<&String> = actual
        .keys()
        .chain(expected.keys())
        .filter(|path| actual.get(*path) != expected.get(*path))
        .collect();
    assert!(
        differing.is_empty(),
        "{context}: these paths differ: {differing:?}"
    );
}

/// Runs `f` with every tracing event of this thread written, without colours, to a buffer;
/// returns `f`'s result and the log.
pub fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    (result, log)
}
