//! Migration on a real fs-core filesystem (in-memory devices): a skewed workload over a data
//! set three times the fast tier, then a migration; the hot set ends on the fast tier, every
//! byte reads back, fsck is clean; a dry run changes nothing; pins are honoured; a cancelled
//! migration stops and a second one finishes the job.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use fs_core::device::{BlockDevice, MemDevice};
use fs_core::fs::props::Property;
use fs_core::fs::{Caller, Filesystem, FsConfig, NewNode};
use fs_core::meta::records::{FileKind, MigrationOutcome};
use fs_core::pool::{format_devices, open_devices, FormatOptions};
use fs_core::types::{InodeId, Tier};
use tiering::migrate::{execute, plan_for, Progress};
use tiering::Policy;

const MIB: u64 = 1024 * 1024;
const BLOCK: u64 = 128 * 1024;

struct Pool {
    fast: Arc<MemDevice>,
    slow: Arc<MemDevice>,
}

impl Pool {
    fn new(fast_mib: u64, slow_mib: u64) -> Self {
        let fast = Arc::new(MemDevice::new("fast", fast_mib * MIB));
        let slow = Arc::new(MemDevice::new("slow", slow_mib * MIB));
        let devices: Vec<(Arc<dyn BlockDevice>, Tier)> =
            vec![(fast.clone(), Tier::Fast), (slow.clone(), Tier::Slow)];
        format_devices(&devices, &FormatOptions::default()).unwrap();
        Self { fast, slow }
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

    fn open(&self) -> Arc<Filesystem> {
        Filesystem::new(
            self.pool(),
            FsConfig {
                commit_interval: std::time::Duration::from_secs(3600),
                cache_bytes: MIB,
                ..FsConfig::default()
            },
        )
        .unwrap()
    }

    fn assert_fsck_clean(&self) {
        let report = fs_core::fsck::check(&mut self.pool(), true).unwrap();
        assert!(report.is_clean(), "fsck: {:?}", report.findings);
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
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

/// The tier of each block of `ino`, by block index.
fn tiers(fs: &Filesystem, ino: InodeId) -> HashMap<u64, Tier> {
    fs.commit().unwrap();
    fs.block_placements()
        .unwrap()
        .into_iter()
        .filter(|p| p.inode == Some(ino.0))
        .map(|p| (p.block, p.tier))
        .collect()
}

fn read_file(fs: &Filesystem, ino: InodeId, len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while (out.len() as u64) < len {
        out.extend(fs.read(ino, out.len() as u64, MIB as u32).unwrap());
    }
    out
}

fn run(
    fs: &Filesystem,
    limit: Option<u64>,
) -> (tiering::Plan, fs_core::meta::records::MigrationRecord) {
    let plan = plan_for(fs, &Policy::default(), limit).unwrap();
    let progress = Mutex::new(Progress::default());
    let record = execute(fs, &plan, None, &AtomicBool::new(false), &progress).unwrap();
    (plan, record)
}

/// A deterministic Zipf-like choice of block: block `k` with weight 1/(k+1).
struct Zipf {
    cumulative: Vec<f64>,
    state: u64,
}

impl Zipf {
    fn new(n: usize) -> Self {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|k| {
                total += 1.0 / (k as f64 + 1.0);
                total
            })
            .collect();
        Self {
            cumulative,
            state: 0x2545_F491_4F6C_DD1D,
        }
    }

    fn next(&mut self) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let total = *self.cumulative.last().unwrap();
        let x = (self.state >> 11) as f64 / (1u64 << 53) as f64 * total;
        self.cumulative.partition_point(|c| *c < x)
    }
}

#[test]
fn a_skewed_workload_ends_with_its_hot_set_on_the_fast_tier() {
    // Fast data area ≈ 56 MiB; the data set is three times that, written slow-first so the
    // hot blocks start on the slow tier.
    let pool = Pool::new(64, 256);
    let fs = pool.open();
    let fast_capacity = fs.status().members[0].data_bytes;
    let size = 3 * fast_capacity / BLOCK * BLOCK;
    let file = create(&fs, InodeId::ROOT, "dataset", FileKind::Regular);
    fs.set_property(file, Property::Tier(Some(Tier::Slow)))
        .unwrap();
    let content = pattern(1, size as usize);
    for (i, chunk) in content.chunks(8 * MIB as usize).enumerate() {
        fs.write(file, i as u64 * 8 * MIB, chunk).unwrap();
    }
    fs.set_property(file, Property::Tier(None)).unwrap();
    fs.commit().unwrap();
    // A Zipf workload over the blocks, in a shuffled order so the hot set is spread out.
    let blocks = (size / BLOCK) as usize;
    let order: Vec<usize> = {
        let mut order: Vec<usize> = (0..blocks).collect();
        let mut state = 7u64;
        for i in (1..order.len()).rev() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            order.swap(i, (state >> 33) as usize % (i + 1));
        }
        order
    };
    let mut zipf = Zipf::new(blocks);
    for _ in 0..40_000 {
        let index = order[zipf.next()];
        fs.read(file, index as u64 * BLOCK, 4096).unwrap();
    }
    // The hot set: as many of the hottest blocks as fill 70 % of the fast tier.
    let hot_count = (fast_capacity * 7 / 10 / BLOCK) as usize;

    // A dry run (the plan alone) changes nothing.
    let before = tiers(&fs, file);
    let plan = plan_for(&fs, &Policy::default(), None).unwrap();
    assert!(plan.promote_blocks > 0);
    assert_eq!(tiers(&fs, file), before);

    let (plan, record) = run(&fs, None);
    assert_eq!(record.outcome, MigrationOutcome::Finished);
    assert_eq!(record.promoted_blocks, plan.promote_blocks);
    // The hottest blocks by their recorded heat (the same ranking as the reads' counts).
    fs.commit().unwrap();
    let mut by_heat: Vec<(f64, Tier)> = fs
        .block_placements()
        .unwrap()
        .iter()
        .filter(|p| p.inode == Some(file.0))
        .map(|p| (p.heat, p.tier))
        .collect();
    by_heat.sort_by(|a, b| b.0.total_cmp(&a.0));
    let on_fast = by_heat[..hot_count]
        .iter()
        .filter(|(_, tier)| *tier == Tier::Fast)
        .count();
    assert!(
        on_fast * 10 >= hot_count * 9,
        "{on_fast} of the {hot_count} hottest blocks on the fast tier"
    );
    let fill = fs.status().members[0].data_bytes - fs.status().members[0].free_bytes;
    let fill = fill as f64 / fast_capacity as f64;
    assert!((0.69..=0.86).contains(&fill), "fast tier {fill:.3} full");
    // Every byte reads back; a second plan has nothing to do; the pool checks clean.
    assert_eq!(read_file(&fs, file, size), content);
    assert!(plan_for(&fs, &Policy::default(), None).unwrap().is_empty());
    assert_eq!(fs.migrations().unwrap().len(), 1);
    drop(fs);
    pool.assert_fsck_clean();
}

#[test]
fn pins_are_honoured_and_a_limit_stops_early() {
    let pool = Pool::new(64, 256);
    let fs = pool.open();
    let cold = create(&fs, InodeId::ROOT, "cold", FileKind::Directory);
    let hot = create(&fs, InodeId::ROOT, "hot", FileKind::Directory);
    // Written unpinned (so on the fast tier), then pinned slow: migration must demote it even
    // though it is hot.
    let archive = create(&fs, cold, "archive", FileKind::Regular);
    fs.write(archive, 0, &pattern(2, 4 * MIB as usize)).unwrap();
    fs.commit().unwrap();
    for _ in 0..20 {
        fs.read(archive, 0, 4096).unwrap();
    }
    fs.set_property(archive, Property::Tier(Some(Tier::Slow)))
        .unwrap();
    // Written pinned slow, then pinned fast: migration must promote it, cold or not.
    let vm = create(&fs, hot, "vm.img", FileKind::Regular);
    fs.set_property(vm, Property::Tier(Some(Tier::Slow)))
        .unwrap();
    fs.write(vm, 0, &pattern(3, 4 * MIB as usize)).unwrap();
    fs.commit().unwrap();
    assert!(tiers(&fs, vm).values().all(|t| *t == Tier::Slow));
    fs.set_property(vm, Property::Tier(Some(Tier::Fast)))
        .unwrap();

    // A limit of 1 MiB moves at most that much, and says it stopped there.
    let (_, record) = run(&fs, Some(MIB));
    assert!(record.promoted_bytes + record.demoted_bytes <= MIB);
    assert_eq!(record.outcome, MigrationOutcome::Limited);
    let (_, record) = run(&fs, None);
    assert_eq!(record.outcome, MigrationOutcome::Finished);
    assert!(tiers(&fs, archive).values().all(|t| *t == Tier::Slow));
    assert!(tiers(&fs, vm).values().all(|t| *t == Tier::Fast));
    assert_eq!(
        read_file(&fs, archive, 4 * MIB),
        pattern(2, 4 * MIB as usize)
    );
    assert_eq!(read_file(&fs, vm, 4 * MIB), pattern(3, 4 * MIB as usize));
    drop(fs);
    pool.assert_fsck_clean();
}

#[test]
fn a_cancelled_migration_stops_and_the_next_one_finishes() {
    let pool = Pool::new(64, 256);
    let fs = pool.open();
    let file = create(&fs, InodeId::ROOT, "f", FileKind::Regular);
    fs.set_property(file, Property::Tier(Some(Tier::Slow)))
        .unwrap();
    fs.write(file, 0, &pattern(4, 16 * MIB as usize)).unwrap();
    fs.commit().unwrap();
    fs.set_property(file, Property::Tier(Some(Tier::Fast)))
        .unwrap();
    let plan = plan_for(&fs, &Policy::default(), None).unwrap();
    assert_eq!(plan.promote_bytes, 16 * MIB);
    let cancelled = AtomicBool::new(true);
    let progress = Mutex::new(Progress::default());
    let record = execute(&fs, &plan, None, &cancelled, &progress).unwrap();
    assert_eq!(record.outcome, MigrationOutcome::Cancelled);
    assert_eq!(record.promoted_blocks, 0);
    let (_, record) = run(&fs, None);
    assert_eq!(record.promoted_bytes, 16 * MIB);
    assert_eq!(fs.migrations().unwrap().len(), 2);
    assert_eq!(
        read_file(&fs, file, 16 * MIB),
        pattern(4, 16 * MIB as usize)
    );
    drop(fs);
    pool.assert_fsck_clean();
}

#[test]
fn moving_copies_2_blocks_frees_no_room_and_a_second_plan_is_empty() {
    // Every block of a copies=2 file has a copy on each tier, so moving it only swaps which
    // copy comes first: demoting it frees nothing on the fast tier. Watermarks well below the
    // level make the plan demote; it must count on freeing only what the moves free, land
    // between the watermarks, and leave nothing for a second plan.
    let pool = Pool::new(64, 256);
    let fs = pool.open();
    let mirrored = create(&fs, InodeId::ROOT, "mirrored", FileKind::Directory);
    fs.set_property(mirrored, Property::Copies(2)).unwrap();
    let twice = create(&fs, mirrored, "twice", FileKind::Regular);
    fs.write(twice, 0, &pattern(5, 4 * MIB as usize)).unwrap();
    let once = create(&fs, InodeId::ROOT, "once", FileKind::Regular);
    fs.write(once, 0, &pattern(6, 4 * MIB as usize)).unwrap();
    fs.commit().unwrap();
    // The single-copy file is the hotter one: the mirrored blocks are demoted first.
    for _ in 0..3 {
        read_file(&fs, once, 4 * MIB);
    }
    let fast_used = |fs: &Filesystem| {
        let member = &fs.status().members[0];
        member.data_bytes - member.free_bytes
    };
    let capacity = fs.status().members[0].data_bytes;
    let level = fast_used(&fs) as f64 / capacity as f64;
    // 8 MiB on the fast tier (the mirrored file's first copies and the other file); the
    // watermarks ask for a third of it to go, which only demoting the other file frees.
    let policy = Policy {
        low: level * 0.5,
        high: level * 0.75,
        ..Policy::default()
    };
    let plan = plan_for(&fs, &policy, None).unwrap();
    let record = execute(
        &fs,
        &plan,
        None,
        &AtomicBool::new(false),
        &Mutex::new(Progress::default()),
    )
    .unwrap();
    assert_eq!(record.outcome, MigrationOutcome::Finished);
    // The mirrored blocks moved by swapping copies: blocks moved, no bytes, in the plan as in
    // the record.
    assert!(
        plan.demote_blocks * BLOCK > plan.demote_bytes,
        "{:?}",
        plan.summary(0)
    );
    assert_eq!(
        (record.demoted_blocks, record.demoted_bytes),
        (plan.demote_blocks, plan.demote_bytes)
    );
    let marks = policy.watermarks(capacity);
    let after = fast_used(&fs);
    assert!(
        (marks.low..=marks.high).contains(&after),
        "fast tier at {after} bytes after the migration, watermarks {marks:?}"
    );
    let again = plan_for(&fs, &policy, None).unwrap();
    assert!(again.is_empty(), "a second plan: {:?}", again.summary(4));
    assert_eq!(read_file(&fs, twice, 4 * MIB), pattern(5, 4 * MIB as usize));
    assert_eq!(read_file(&fs, once, 4 * MIB), pattern(6, 4 * MIB as usize));
    drop(fs);
    pool.assert_fsck_clean();
}
