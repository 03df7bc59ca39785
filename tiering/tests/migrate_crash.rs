//! Power cuts during a tier migration (issue 6, part 5): a crash at any point of a migration
//! leaves a consistent pool, with no block lost or duplicated.
//!
//! Each workload builds a pool of a fast and a slow in-memory member, each behind a
//! `FaultyDevice`, and fills it with files of every kind migration meets: unpinned files on
//! the fast tier and (written pinned slow, then unpinned) on the slow tier, `copies=2` files
//! (whose moves swap which copy comes first), files pinned slow while on the fast tier and
//! pinned fast while on the slow one, two snapshots with overwrites, a truncation and a
//! deletion after each (so some blocks are held only by snapshots), and heat from reads. The
//! policy's watermarks are set below the fast tier's level, so the plan demotes as well as
//! promotes. The durable images are kept, and a reference run executes the plan batch by
//! batch (as `execute` does), recording where every block is after each committed batch.
//!
//! Every crash point then starts from those images and cuts the power (dropping, keeping a
//! prefix of, or tearing the unflushed writes) at a random point of the same plan:
//!
//! - **between batches**: after `k` committed batches, with batch `k + 1` not started, or
//!   relocated but not committed (its copies written, the pointers swapped in the open
//!   transaction group);
//! - **inside a relocate**: after `k` committed batches, batch `k + 1` is relocated while the
//!   Nth of its copy writes fails, so the pool turns read-only, then the power goes;
//! - **anywhere in `execute`**, most often inside the commit after a batch: `execute` runs
//!   while the Nth write or the Nth flush of one member fails (N within what the whole
//!   migration issues), so the pool turns read-only, then the power goes.
//!
//! A pool turned read-only must go on serving every file intact until the cut.
//!
//! After each cut: `fsck` with data checksums is clean (it checks that no two blocks share a
//! sector, that no block leaked and that every refcount is right); the pool remounts; the same
//! blocks exist, each where the reference run had it after the batches known to be committed
//! (or, for a failure inside a commit, after the one more batch that commit may have made
//! durable), which for a cut between batches means the moves of every committed batch stayed;
//! each tier's used space is exactly what the blocks' copies on it take; every file of the
//! live tree and of every snapshot (through `/.snapshots/<name>`) reads back byte for byte;
//! and a fresh migration runs to completion, its pins hold, a plan after it is empty, the
//! space still matches the blocks, the data is unchanged and `fsck` is clean again.
//!
//! `AEGIS_MIGRATE_CRASH_POINTS` sets how many crash points to run (default 200);
//! `AEGIS_MIGRATE_CRASH_SEED` replays one workload. Every failure names its seed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use fs_core::device::{
    BlockDevice, CutMode, DeviceError, FaultPlan, FaultyDevice, MemDevice, SplitMix64 as Rng,
};
use fs_core::fs::props::Property;
use fs_core::fs::{Caller, Filesystem, FsConfig, NewNode, SetAttr};
use fs_core::meta::records::{FileKind, MigrationOutcome};
use fs_core::pool::{format_devices, open_devices, FormatOptions};
use fs_core::types::{InodeId, Tier};
use fs_core::FsError;
use tiering::migrate::{execute, plan_for, Progress, BATCH_BLOCKS};
use tiering::{Direction, MigrateError, Plan, Policy};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// The smallest member fs-core formats.
const MEMBER_BYTES: u64 = 64 * MIB;
/// Small blocks, so a few MiB of data make many batches.
const BLOCK_SIZE: u32 = 8 * 1024;
/// The crash points one workload (one pool) runs.
const POINTS_PER_WORKLOAD: u64 = 10;
const ROOT: InodeId = InodeId::ROOT;

/// Where each block's first copy is.
type Placement = BTreeMap<u64, Tier>;
/// File contents by path.
type Files = BTreeMap<String, Vec<u8>>;

/// What the pool holds: the live tree and each snapshot's, oldest first.
#[derive(Debug, Clone, Default)]
struct Contents {
    live: Files,
    snapshots: Vec<(String, Files)>,
}

/// A member's durable image, as its non-zero 64 KiB chunks.
#[derive(Clone)]
struct Image(Vec<(u64, Vec<u8>)>);

const CHUNK: usize = 64 * 1024;

impl Image {
    fn of(device: &MemDevice) -> Self {
        let bytes = device.snapshot();
        Self(
            bytes
                .chunks(CHUNK)
                .enumerate()
                .filter(|(_, chunk)| chunk.iter().any(|&b| b != 0))
                .map(|(i, chunk)| ((i * CHUNK) as u64, chunk.to_vec()))
                .collect(),
        )
    }

    fn device(&self, name: &str) -> Arc<MemDevice> {
        let device = Arc::new(MemDevice::new(name, MEMBER_BYTES));
        for (offset, chunk) in &self.0 {
            device.write_at(*offset, chunk).unwrap();
        }
        device
    }
}

/// A pool of one fast and one slow in-memory member, each behind a `FaultyDevice`.
struct TestPool {
    fast_image: Arc<MemDevice>,
    slow_image: Arc<MemDevice>,
    fast: Arc<FaultyDevice>,
    slow: Arc<FaultyDevice>,
}

impl TestPool {
    fn format() -> Self {
        let pool = Self::on(
            Arc::new(MemDevice::new("fast", MEMBER_BYTES)),
            Arc::new(MemDevice::new("slow", MEMBER_BYTES)),
        );
        let devices: Vec<(Arc<dyn BlockDevice>, Tier)> = vec![
            (pool.fast.clone(), Tier::Fast),
            (pool.slow.clone(), Tier::Slow),
        ];
        let options = FormatOptions {
            label: "migrate-crash".into(),
            block_size: BLOCK_SIZE,
            ..FormatOptions::default()
        };
        format_devices(&devices, &options).unwrap();
        pool
    }

    fn on(fast_image: Arc<MemDevice>, slow_image: Arc<MemDevice>) -> Self {
        Self {
            fast: Arc::new(FaultyDevice::new(fast_image.clone())),
            slow: Arc::new(FaultyDevice::new(slow_image.clone())),
            fast_image,
            slow_image,
        }
    }

    /// A pool on copies of `images` (fast, slow).
    fn restore(images: &(Image, Image)) -> Self {
        Self::on(images.0.device("fast"), images.1.device("slow"))
    }

    /// The durable images (call with the filesystem closed, everything flushed).
    fn images(&self) -> (Image, Image) {
        assert_eq!(self.fast.stats().pending_writes, 0);
        assert_eq!(self.slow.stats().pending_writes, 0);
        (Image::of(&self.fast_image), Image::of(&self.slow_image))
    }

    fn pool(&self) -> fs_core::pool::Pool {
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
        .unwrap()
    }

    /// Opens the filesystem (commits only when asked). The cache is small, so reads mostly
    /// come from the devices.
    fn open(&self) -> Arc<Filesystem> {
        Filesystem::new(
            self.pool(),
            FsConfig {
                commit_interval: std::time::Duration::from_secs(3600),
                dirty_limit: u64::MAX,
                cache_bytes: 256 * KIB,
                ..FsConfig::default()
            },
        )
        .unwrap()
    }

    /// Byte range of the data area of a member.
    fn data_area(&self, tier: Tier) -> std::ops::Range<u64> {
        let sb = fs_core::pool::read_superblock(self.member(tier)).unwrap();
        sb.data_start..sb.data_end
    }

    fn member(&self, tier: Tier) -> &FaultyDevice {
        match tier {
            Tier::Fast => &self.fast,
            Tier::Slow => &self.slow,
        }
    }

    /// Write and flush requests so far on the fast and the slow member.
    fn io(&self) -> [(u64, u64); 2] {
        [self.fast.stats(), self.slow.stats()].map(|s| (s.writes, s.flushes))
    }

    fn assert_fsck_clean(&self, context: &str) {
        let report = fs_core::fsck::check(&mut self.pool(), true).unwrap();
        assert!(report.is_clean(), "{context}: fsck: {:?}", report.findings);
        assert!(
            report.blocks_verified > 0,
            "{context}: fsck verified no block"
        );
    }

    /// Loses power under a live filesystem: unflushed writes are dropped, kept in part or torn
    /// on both members, the filesystem dies, the machine comes back with no faults planned.
    fn crash(&self, fs: Arc<Filesystem>, mode: CutMode) {
        self.fast.power_cut(mode).unwrap();
        self.slow.power_cut(mode).unwrap();
        drop(fs);
        self.fast.revive();
        self.slow.revive();
        self.fast.set_plan(FaultPlan::default());
        self.slow.set_plan(FaultPlan::default());
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

fn create(fs: &Filesystem, parent: InodeId, name: &str, kind: FileKind) -> InodeId {
    fs.create_node(
        parent,
        name.as_bytes(),
        &NewNode::new(kind, 0o755),
        Caller::ROOT,
    )
    .unwrap()
    .ino
}

fn resolve(fs: &Filesystem, root: InodeId, path: &str) -> InodeId {
    path.split('/').fold(root, |dir, name| {
        fs.lookup(dir, name.as_bytes())
            .unwrap_or_else(|e| panic!("lookup {path}: {e}"))
            .ino
    })
}

fn read_all(fs: &Filesystem, ino: InodeId) -> Vec<u8> {
    let size = fs.getattr(ino).unwrap().size;
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let chunk = fs.read(ino, out.len() as u64, MIB as u32).unwrap();
        assert!(!chunk.is_empty(), "short read at {}", out.len());
        out.extend_from_slice(&chunk);
    }
    out
}

/// Every file under directory `root`, by path, read through the filesystem.
fn files_under(fs: &Filesystem, root: InodeId) -> Files {
    let mut out = Files::new();
    let mut dirs = vec![(String::new(), root)];
    while let Some((path, dir)) = dirs.pop() {
        for entry in fs.readdir(dir, 0, usize::MAX).unwrap() {
            if entry.name == b"." || entry.name == b".." {
                continue;
            }
            let name = String::from_utf8(entry.name).unwrap();
            let child = if path.is_empty() {
                name
            } else {
                format!("{path}/{name}")
            };
            match entry.kind {
                FileKind::Directory => dirs.push((child, entry.ino)),
                _ => {
                    out.insert(child, read_all(fs, entry.ino));
                }
            }
        }
    }
    out
}

/// The paths whose contents differ (not the contents, which are large).
fn differing(seen: &Files, expected: &Files) -> Vec<String> {
    seen.keys()
        .chain(expected.keys())
        .filter(|path| seen.get(*path) != expected.get(*path))
        .map(|path| match (seen.get(path), expected.get(path)) {
            (Some(s), Some(e)) => format!("{path} ({} bytes, expected {})", s.len(), e.len()),
            (Some(_), None) => format!("{path} (unexpected)"),
            _ => format!("{path} (missing)"),
        })
        .collect()
}

/// Checks every file of the live tree and of every snapshot, read through `/.snapshots`.
fn assert_contents(fs: &Filesystem, expected: &Contents, context: &str) {
    let live = files_under(fs, ROOT);
    let diff = differing(&live, &expected.live);
    assert!(diff.is_empty(), "{context}: live tree differs: {diff:?}");
    let names: Vec<String> = fs
        .snapshots()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    let wanted: Vec<&String> = expected.snapshots.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names.iter().collect::<Vec<_>>(),
        wanted,
        "{context}: snapshots"
    );
    let snapshot_dir = fs.lookup(ROOT, b".snapshots").unwrap().ino;
    for (name, files) in &expected.snapshots {
        let root = fs.lookup(snapshot_dir, name.as_bytes()).unwrap().ino;
        let seen = files_under(fs, root);
        let diff = differing(&seen, files);
        assert!(
            diff.is_empty(),
            "{context}: snapshot {name} differs: {diff:?}"
        );
    }
}

/// Where every block is, as of the last commit.
fn placement(fs: &Filesystem) -> Placement {
    fs.block_placements()
        .unwrap()
        .into_iter()
        .map(|p| (p.block, p.tier))
        .collect()
}

/// Checks that each tier's used space is exactly what its blocks' copies take: every copy is
/// in one place, and no sector is held by nothing (or by two blocks, which fsck also checks).
fn assert_space_matches_blocks(fs: &Filesystem, context: &str) {
    let mut held = [0u64; 2];
    for block in fs.block_placements().unwrap() {
        held[usize::from(block.tier == Tier::Slow)] += block.bytes;
        if let Some(mirror) = block.mirror {
            held[usize::from(mirror == Tier::Slow)] += block.bytes;
        }
    }
    let status = fs.status();
    let used = [Tier::Fast, Tier::Slow].map(|tier| {
        status
            .members
            .iter()
            .filter(|m| m.tier == tier)
            .map(|m| m.data_bytes - m.free_bytes)
            .sum::<u64>()
    });
    assert_eq!(
        used, held,
        "{context}: bytes used on (fast, slow) vs held by blocks"
    );
}

/// What a file is set up as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// Written where placement puts it (the fast tier), unpinned.
    Fast,
    /// Written pinned slow, then unpinned: migration may promote it.
    SlowThenAuto,
    /// Written on the fast tier, then pinned slow: migration must demote it.
    PinnedSlow,
    /// Written pinned slow, then pinned fast: migration must promote it.
    PinnedFast,
}

/// Builds the workload's pool: files of every setup (in a plain, a `copies=2` and a
/// slow-pinned directory), two snapshots each followed by overwrites, a truncation and a
/// deletion, and reads heating some files. Returns what it holds.
fn populate(fs: &Filesystem, rng: &mut Rng) -> Contents {
    let mut contents = Contents::default();
    let plain = create(fs, ROOT, "plain", FileKind::Directory);
    let mirrored = create(fs, ROOT, "mirrored", FileKind::Directory);
    fs.set_property(mirrored, Property::Copies(2)).unwrap();
    let archive = create(fs, ROOT, "archive", FileKind::Directory);
    fs.set_property(archive, Property::Tier(Some(Tier::Slow)))
        .unwrap();
    let setups = [
        Setup::Fast,
        Setup::SlowThenAuto,
        Setup::PinnedSlow,
        Setup::PinnedFast,
    ];
    let files = 12 + rng.below(5);
    for i in 0..files {
        // The first files have every setup in the plain and the copies=2 directory (and the
        // churn leaves them), the others are random.
        let (dir, dir_name) = match (i, rng.below(8)) {
            (0..SURE_FILES, _) if i < 4 => (plain, "plain"),
            (0..SURE_FILES, _) => (mirrored, "mirrored"),
            (_, 0..=4) => (plain, "plain"),
            (_, 5 | 6) => (mirrored, "mirrored"),
            _ => (archive, "archive"),
        };
        let setup = if i < SURE_FILES {
            setups[i as usize % setups.len()]
        } else if dir == archive {
            Setup::Fast
        } else {
            setups[rng.below(setups.len() as u64) as usize]
        };
        let name = format!("f{i}");
        let path = format!("{dir_name}/{name}");
        let ino = create(fs, dir, &name, FileKind::Regular);
        // Whole blocks and a tail; some of the random files are smaller than a block (or
        // inline), the first ones have a few blocks at least.
        let block = u64::from(BLOCK_SIZE);
        let len = if i >= SURE_FILES && rng.below(6) == 0 {
            1 + rng.below(block)
        } else {
            (2 + rng.below(34)) * block + rng.below(block)
        };
        let data = pattern(rng.next_u64(), len as usize);
        if matches!(setup, Setup::SlowThenAuto | Setup::PinnedFast) {
            fs.set_property(ino, Property::Tier(Some(Tier::Slow)))
                .unwrap();
        }
        fs.write(ino, 0, &data).unwrap();
        let pin = match setup {
            Setup::Fast => None,
            Setup::SlowThenAuto => Some(None),
            Setup::PinnedSlow => Some(Some(Tier::Slow)),
            Setup::PinnedFast => Some(Some(Tier::Fast)),
        };
        if let Some(pin) = pin {
            // Blocks are placed when they are written out, at the latest by a commit.
            fs.commit().unwrap();
            fs.set_property(ino, Property::Tier(pin)).unwrap();
        }
        contents.live.insert(path, data);
    }
    fs.commit().unwrap();
    for snapshot in ["before", "after"] {
        fs.snapshot_create(snapshot).unwrap();
        contents
            .snapshots
            .push((snapshot.to_owned(), contents.live.clone()));
        churn(fs, &mut contents.live, rng);
        fs.commit().unwrap();
    }
    // Heat: some files read several times (live and through the snapshots).
    let paths: Vec<String> = contents.live.keys().cloned().collect();
    for path in &paths {
        if rng.below(3) == 0 {
            let ino = resolve(fs, ROOT, path);
            for _ in 0..2 + rng.below(6) {
                read_all(fs, ino);
            }
        }
    }
    let snapshot_dir = fs.lookup(ROOT, b".snapshots").unwrap().ino;
    let old = resolve(fs, snapshot_dir, "before");
    for path in contents.snapshots[0].1.keys() {
        if rng.below(4) == 0 {
            let ino = resolve(fs, old, path);
            for _ in 0..4 {
                read_all(fs, ino);
            }
        }
    }
    fs.commit().unwrap();
    contents
}

/// Files `populate` makes first, one of each setup in each of two directories; `churn` does
/// not truncate or delete them.
const SURE_FILES: u64 = 8;

/// Overwrites parts of some files (always the first), truncates one and deletes one (neither
/// of them one of the first [`SURE_FILES`]): the blocks they held stay for the snapshot just taken.
fn churn(fs: &Filesystem, live: &mut Files, rng: &mut Rng) {
    let paths: Vec<String> = live.keys().cloned().collect();
    for path in &paths {
        // The first file (unpinned, on the fast tier) always: blocks only the snapshot holds
        // are on the fast tier, cold, for migration to demote.
        if rng.below(3) != 0 && path != "plain/f0" {
            continue;
        }
        let content = live.get_mut(path).unwrap();
        let ino = resolve(fs, ROOT, path);
        let at = rng.below(content.len() as u64 + 1);
        let len = 1 + rng.below(6 * u64::from(BLOCK_SIZE));
        let data = pattern(rng.next_u64(), len as usize);
        fs.write(ino, at, &data).unwrap();
        let end = (at + len) as usize;
        if content.len() < end {
            content.resize(end, 0);
        }
        content[at as usize..end].copy_from_slice(&data);
    }
    let sure: Vec<String> = (0..SURE_FILES)
        .map(|i| format!("{}/f{i}", if i < 4 { "plain" } else { "mirrored" }))
        .collect();
    let others: Vec<&String> = paths.iter().filter(|p| !sure.contains(p)).collect();
    let truncated = others[rng.below(others.len() as u64) as usize];
    let content = live.get_mut(truncated).unwrap();
    let size = rng.below(content.len() as u64 + 1);
    fs.setattr(
        resolve(fs, ROOT, truncated),
        &SetAttr {
            size: Some(size),
            ..SetAttr::default()
        },
    )
    .unwrap();
    content.truncate(size as usize);
    let deleted = others[rng.below(others.len() as u64) as usize].clone();
    let (dir, name) = deleted.split_once('/').unwrap();
    fs.unlink(resolve(fs, ROOT, dir), name.as_bytes()).unwrap();
    live.remove(&deleted);
}

/// A workload's pool before the migration, and the reference run of its plan.
struct Fixture {
    images: (Image, Image),
    contents: Contents,
    policy: Policy,
    plan: Plan,
    /// The plan's batches, as block ids and target tier, in `execute`'s order.
    batches: Vec<(Vec<u64>, Tier)>,
    /// Where every block is after 0, 1, … all batches.
    after: Vec<Placement>,
    /// Write and flush requests per member the whole migration issued.
    io: [(u64, u64); 2],
}

/// The plan's moves cut into batches of one direction, as `execute` cuts them.
fn batches(plan: &Plan) -> Vec<(Vec<u64>, Tier)> {
    plan.moves
        .chunk_by(|a, b| a.direction == b.direction)
        .flat_map(|run| run.chunks(BATCH_BLOCKS))
        .map(|batch| {
            let tier = match batch[0].direction {
                Direction::Promote => Tier::Fast,
                Direction::Demote => Tier::Slow,
            };
            (batch.iter().map(|m| m.block).collect(), tier)
        })
        .collect()
}

impl Fixture {
    fn build(seed: u64) -> Self {
        let context = format!("seed {seed}");
        let mut rng = Rng(seed);
        let pool = TestPool::format();
        let fs = pool.open();
        let contents = populate(&fs, &mut rng);
        // Watermarks below the fast tier's level, so the plan demotes as well as promotes.
        let status = fs.status();
        let fast = &status.members[0];
        let level = (fast.data_bytes - fast.free_bytes) as f64 / fast.data_bytes as f64;
        let policy = Policy {
            low: level * 0.4,
            high: level * 0.7,
            ..Policy::default()
        };
        fs.shutdown().unwrap();
        drop(fs);
        let images = pool.images();

        // The reference run, on a copy of the images.
        let pool = TestPool::restore(&images);
        let fs = pool.open();
        let plan = plan_for(&fs, &policy, None).unwrap();
        assert!(
            plan.promote_blocks > 0 && plan.demote_blocks > 0,
            "{context}: the plan moves both ways: {:?}",
            plan.summary(0)
        );
        assert!(
            plan.moves.iter().any(|m| m.inode.is_none()),
            "{context}: the plan moves blocks only snapshots hold"
        );
        let batches = batches(&plan);
        let before = pool.io();
        let mut after = vec![placement(&fs)];
        let mut swapped = 0;
        for (blocks, tier) in &batches {
            let done = fs.relocate(blocks, *tier).unwrap();
            fs.commit().unwrap();
            assert_eq!(
                done.skipped, 0,
                "{context}: the reference run skipped blocks"
            );
            assert_eq!(done.moved, blocks.len() as u64);
            swapped += u64::from(done.bytes_copied < done.bytes);
            let now = placement(&fs);
            for block in blocks {
                assert_eq!(now[block], *tier, "{context}: block {block} did not move");
            }
            after.push(now);
        }
        assert!(swapped > 0, "{context}: no batch swapped a copies=2 block");
        let now = pool.io();
        let io = [0, 1].map(|m| (now[m].0 - before[m].0, now[m].1 - before[m].1));
        assert_contents(&fs, &contents, &format!("{context}: reference run"));
        drop(fs);
        pool.assert_fsck_clean(&format!("{context}: reference run"));
        Self {
            images,
            contents,
            policy,
            plan,
            batches,
            after,
            io,
        }
    }
}

/// Where the power goes.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// After `committed` batches, and then `next` for the batch after them.
    Between { committed: usize, next: Next },
    /// While `execute` runs with the Nth write of a member failing.
    FailingWrite { member: Tier, n: u64 },
    /// While `execute` runs with the Nth flush of a member failing.
    FailingFlush { member: Tier, n: u64 },
}

/// What happens to the batch after the committed ones before a cut between batches.
#[derive(Debug, Clone, Copy)]
enum Next {
    /// Nothing.
    Nothing,
    /// Relocated, not committed: its copies written (unflushed), its pointers swapped in the
    /// open transaction group.
    Relocated,
    /// Relocated while the Nth write of its target tier's member fails (a relocate writes
    /// only its copies; the metadata waits for the commit).
    FailingCopy { n: u64 },
}

/// What the crash points of a run did.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    points: u64,
    /// Cuts between batches, and those with the next batch relocated, uncommitted.
    between_batches: u64,
    uncommitted_relocate: u64,
    /// Injected faults that fired in a relocate's copy writes.
    failed_in_copy: u64,
    /// In a commit after a batch: its data flush, or its metadata writes and flushes.
    failed_in_commit: u64,
    /// In storing the migration's record, after the last batch.
    failed_in_record: u64,
    /// Faults planned past the end of the migration (it finished).
    not_reached: u64,
    /// Failed commits whose batch turned out durable after the cut, or not.
    cut_commit_kept: u64,
    cut_commit_lost: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Self) {
        self.points += o.points;
        self.between_batches += o.between_batches;
        self.uncommitted_relocate += o.uncommitted_relocate;
        self.failed_in_copy += o.failed_in_copy;
        self.failed_in_commit += o.failed_in_commit;
        self.failed_in_record += o.failed_in_record;
        self.not_reached += o.not_reached;
        self.cut_commit_kept += o.cut_commit_kept;
        self.cut_commit_lost += o.cut_commit_lost;
    }
}

fn random_cut(fixture: &Fixture, rng: &mut Rng) -> Cut {
    let member = if rng.below(2) == 0 {
        Tier::Fast
    } else {
        Tier::Slow
    };
    let (writes, flushes) = fixture.io[usize::from(member == Tier::Slow)];
    let committed = rng.below(fixture.batches.len() as u64 + 1) as usize;
    let next_len = fixture
        .batches
        .get(committed)
        .map_or(1, |b| b.0.len() as u64);
    match rng.below(10) {
        0 | 1 => Cut::Between {
            committed,
            next: Next::Nothing,
        },
        2 | 3 => Cut::Between {
            committed,
            next: Next::Relocated,
        },
        4 | 5 => Cut::Between {
            committed,
            next: Next::FailingCopy {
                n: 1 + rng.below(next_len),
            },
        },
        6..=8 => Cut::FailingWrite {
            member,
            // Mostly inside the migration, sometimes just past it (recording it, or nothing).
            n: 1 + rng.below(writes + writes / 16 + 2),
        },
        _ => Cut::FailingFlush {
            member,
            n: 1 + rng.below(flushes + 2),
        },
    }
}

fn random_mode(rng: &mut Rng) -> CutMode {
    match rng.below(3) {
        0 => CutMode::DropAll,
        1 => CutMode::KeepPrefix(rng.below(200) as usize),
        _ => CutMode::Tear {
            seed: rng.next_u64(),
        },
    }
}

/// One crash point: from the fixture's images, the migration cut at `cut`, then every check.
fn crash_point(fixture: &Fixture, cut: Cut, mode: CutMode, tally: &mut Tally, context: &str) {
    let pool = TestPool::restore(&fixture.images);
    let fs = pool.open();
    let batch_count = fixture.batches.len();
    // The numbers of batches the remounted pool may hold.
    let durable: Vec<usize> = match cut {
        Cut::Between { committed, next } => {
            tally.between_batches += 1;
            for (blocks, tier) in &fixture.batches[..committed] {
                fs.relocate(blocks, *tier).unwrap();
                fs.commit().unwrap();
            }
            if let Some((blocks, tier)) = fixture.batches.get(committed) {
                match next {
                    Next::Nothing => {}
                    Next::Relocated => {
                        tally.uncommitted_relocate += 1;
                        fs.relocate(blocks, *tier).unwrap();
                    }
                    Next::FailingCopy { n } => {
                        let member = pool.member(*tier);
                        member.set_plan(FaultPlan {
                            fail_nth_write: Some(n),
                            ..FaultPlan::default()
                        });
                        match fs.relocate(blocks, *tier) {
                            Ok(_) => {
                                // Fewer copies than n (a batch of swaps writes none).
                                assert_eq!(member.stats().injected_errors, 0, "{context}");
                                tally.uncommitted_relocate += 1;
                            }
                            Err(err) => {
                                assert!(matches!(err, FsError::DeviceWrite(_)), "{context}: {err}");
                                assert!(fs.is_read_only(), "{context}: writable after {err}");
                                tally.failed_in_copy += 1;
                                assert_contents(
                                    &fs,
                                    &fixture.contents,
                                    &format!("{context}: read-only after {err}"),
                                );
                            }
                        }
                    }
                }
            }
            vec![committed]
        }
        Cut::FailingWrite { member, n } | Cut::FailingFlush { member, n } => {
            let plan = if matches!(cut, Cut::FailingWrite { .. }) {
                FaultPlan {
                    fail_nth_write: Some(n),
                    ..FaultPlan::default()
                }
            } else {
                FaultPlan {
                    fail_nth_flush: Some(n),
                    ..FaultPlan::default()
                }
            };
            pool.member(member).set_plan(plan);
            let progress = Mutex::new(Progress::default());
            let result = execute(&fs, &fixture.plan, None, &AtomicBool::new(false), &progress);
            let progress = progress.lock().unwrap().clone();
            let fired = pool.member(member).stats().injected_errors > 0;
            // The batches whose commit returned: the moves they made, in plan order.
            let reported = progress.promoted_blocks + progress.demoted_blocks;
            assert_eq!(progress.skipped_blocks, 0, "{context}: skipped blocks");
            let mut committed = 0;
            let mut counted = 0;
            while committed < batch_count && counted < reported {
                counted += fixture.batches[committed].0.len() as u64;
                committed += 1;
            }
            assert_eq!(counted, reported, "{context}: progress inside a batch");
            match result {
                Ok(record) => {
                    assert!(!fired, "{context}: a write failed but execute succeeded");
                    assert_eq!(record.outcome, MigrationOutcome::Finished);
                    assert_eq!(committed, batch_count);
                    tally.not_reached += 1;
                    vec![batch_count]
                }
                Err(err) => {
                    assert!(fired, "{context}: execute failed on its own: {err}");
                    assert!(
                        fs.is_read_only(),
                        "{context}: execute failed ({err}) but the pool is writable"
                    );
                    if committed == batch_count {
                        tally.failed_in_record += 1;
                    } else if let Some(offset) = failed_data_write(&err) {
                        let data_area = pool.data_area(member);
                        assert!(data_area.contains(&offset), "{context}: {err}");
                        tally.failed_in_copy += 1;
                    } else {
                        tally.failed_in_commit += 1;
                    }
                    // Until the power goes, the pool serves its last commit, read-only.
                    assert_contents(
                        &fs,
                        &fixture.contents,
                        &format!("{context}: read-only after {err}"),
                    );
                    // A commit that failed may have made its batch durable all the same.
                    if committed < batch_count {
                        vec![committed, committed + 1]
                    } else {
                        vec![committed]
                    }
                }
            }
        }
    };
    pool.crash(fs, mode);
    let context = format!("{context} ({mode:?})");
    pool.assert_fsck_clean(&format!("{context}: after the cut"));
    let fs = pool.open();
    let found = placement(&fs);
    let matching: Vec<usize> = durable
        .iter()
        .copied()
        .filter(|&k| fixture.after[k] == found)
        .collect();
    assert!(
        !matching.is_empty(),
        "{context}: blocks are not where {durable:?} committed batches put them: {}",
        describe_placement(fixture, &found, &durable)
    );
    if durable.len() == 2 {
        if matching == [durable[1]] {
            tally.cut_commit_kept += 1;
        } else {
            tally.cut_commit_lost += 1;
        }
    }
    // The moves of the committed batches stayed: each moved block is on its target tier.
    let kept = matching[0];
    for (blocks, tier) in &fixture.batches[..kept] {
        for block in blocks {
            assert_eq!(found[block], *tier, "{context}: block {block} moved back");
        }
    }
    assert_space_matches_blocks(&fs, &context);
    let history = fs.migrations().unwrap();
    assert!(history.len() <= 1, "{context}: {history:?}");
    if let Some(record) = history.first() {
        assert_eq!(kept, batch_count, "{context}: a migration recorded early");
        assert_eq!(record.outcome, MigrationOutcome::Finished);
    }
    assert_contents(&fs, &fixture.contents, &format!("{context}: after the cut"));

    // A fresh migration finishes the job.
    let plan = plan_for(&fs, &fixture.policy, None).unwrap();
    let progress = Mutex::new(Progress::default());
    let record = execute(&fs, &plan, None, &AtomicBool::new(false), &progress)
        .unwrap_or_else(|e| panic!("{context}: the fresh migration failed: {e}"));
    assert_eq!(record.outcome, MigrationOutcome::Finished, "{context}");
    assert_eq!(progress.lock().unwrap().skipped_blocks, 0, "{context}");
    let again = plan_for(&fs, &fixture.policy, None).unwrap();
    assert!(
        again.is_empty(),
        "{context}: a plan after the fresh migration: {:?}",
        again.summary(4)
    );
    let found = placement(&fs);
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        fixture.after[0].keys().collect::<Vec<_>>(),
        "{context}: the blocks changed"
    );
    for placed in fs.block_placements().unwrap() {
        if let Some(pin) = placed.pin {
            assert_eq!(
                placed.tier, pin,
                "{context}: block {} against its pin",
                placed.block
            );
        }
    }
    assert_space_matches_blocks(&fs, &format!("{context}: after the fresh migration"));
    assert_contents(
        &fs,
        &fixture.contents,
        &format!("{context}: after the fresh migration"),
    );
    fs.shutdown().unwrap();
    drop(fs);
    pool.assert_fsck_clean(&format!("{context}: after the fresh migration"));
    tally.points += 1;
}

/// Where the failed write was, if `err` is a failed data write (a relocate's copies; writes of
/// the metadata region fail as metadata errors).
fn failed_data_write(err: &MigrateError) -> Option<u64> {
    match err {
        MigrateError::Fs(FsError::DeviceWrite(DeviceError::Io {
            op: "write",
            offset,
            ..
        })) => Some(*offset),
        _ => None,
    }
}

/// Which blocks differ from each candidate placement, briefly.
fn describe_placement(fixture: &Fixture, found: &Placement, durable: &[usize]) -> String {
    durable
        .iter()
        .map(|&k| {
            let wanted = &fixture.after[k];
            let wrong: Vec<String> = wanted
                .iter()
                .filter(|(block, tier)| found.get(block) != Some(tier))
                .take(8)
                .map(|(block, tier)| format!("{block}: {:?} not {tier:?}", found.get(block)))
                .collect();
            let extra = found.keys().filter(|b| !wanted.contains_key(b)).count();
            format!("after {k} batches: {wrong:?} ({extra} unknown blocks)")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One workload: a fixture, then `points` crash points on it.
fn workload(seed: u64, points: u64) -> Tally {
    let fixture = Fixture::build(seed);
    let mut rng = Rng(seed ^ 0x5EED);
    println!(
        "workload seed {seed}: {} promotions, {} demotions in {} batches",
        fixture.plan.promote_blocks,
        fixture.plan.demote_blocks,
        fixture.batches.len()
    );
    let mut tally = Tally::default();
    for point in 1..=points {
        let cut = random_cut(&fixture, &mut rng);
        let mode = random_mode(&mut rng);
        let context = format!(
            "seed {seed}, point {point} of {} batches: {cut:?}",
            fixture.batches.len()
        );
        crash_point(&fixture, cut, mode, &mut tally, &context);
    }
    tally
}

#[test]
fn power_cuts_during_a_migration_lose_and_duplicate_nothing() {
    let total: u64 = std::env::var("AEGIS_MIGRATE_CRASH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    if let Some(seed) = std::env::var("AEGIS_MIGRATE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        println!("replaying seed {seed}");
        println!("{:?}", workload(seed, POINTS_PER_WORKLOAD));
        return;
    }
    let clock = std::time::Instant::now();
    let workloads = total.div_ceil(POINTS_PER_WORKLOAD);
    // Two workers: the machine this runs on has two cores.
    let tally = Mutex::new(Tally::default());
    std::thread::scope(|scope| {
        for worker in 0..2 {
            let tally = &tally;
            scope.spawn(move || {
                for seed in (1..=workloads).filter(|s| s % 2 == worker) {
                    let points = POINTS_PER_WORKLOAD.min(total - (seed - 1) * POINTS_PER_WORKLOAD);
                    let done = workload(seed, points);
                    *tally.lock().unwrap() += done;
                }
            });
        }
    });
    let tally = *tally.lock().unwrap();
    println!(
        "{workloads} workloads in {:.1} s: {tally:?}",
        clock.elapsed().as_secs_f64()
    );
    assert_eq!(tally.points, total);
}
