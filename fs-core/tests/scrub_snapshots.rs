//! Scrub covers the blocks only snapshots hold: a damaged copy of an overwritten block a
//! snapshot keeps is repaired from its second copy (`copies=2`) or, with one copy, counted as
//! unrecoverable and named by its path in the snapshot; a scrub remounted in the middle of
//! the snapshot phase resumes without skipping or counting a block twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{create_file, pattern, read_all, TestPool};
use fs_core::fs::props::Property;
use fs_core::fs::scrub::{ScrubPhase, ScrubState, SnapshotDamage};
use fs_core::fs::Filesystem;
use fs_core::meta::records::{BlockRecord, Location};
use fs_core::meta::{BLOCKS, HISTORY};
use fs_core::pool::FormatOptions;
use fs_core::types::InodeId;
use fs_core::FsError;
use redb::ReadableDatabase;

const ROOT: InodeId = InodeId::ROOT;
const SECTOR: u64 = 4096;
/// The pool's block size (the default).
const BLOCK: usize = 128 * 1024;
/// The record kind of file-map records in `history` (docs/format.md).
const FILE_BLOCK: u8 = 4;

fn pool(copies: u8, mib: u64) -> TestPool {
    TestPool::with_options(
        mib,
        mib,
        &FormatOptions {
            label: "scrub-snapshots".into(),
            properties: vec![Property::Copies(copies)],
            ..FormatOptions::default()
        },
    )
}

/// A file-map record only snapshots see, as stored in `history`.
#[derive(Debug)]
struct Retired {
    ino: u64,
    index: u64,
    birth: u64,
    death: u64,
    record: BlockRecord,
}

/// Every retired file-map record, in `history` key order (inode, block index, death).
fn retired(pool: &TestPool) -> Vec<Retired> {
    let p = pool.pool().unwrap();
    let txn = p.db.begin_read().unwrap();
    let history = txn.open_table(HISTORY).unwrap();
    let blocks = txn.open_table(BLOCKS).unwrap();
    history
        .range((FILE_BLOCK, &[][..], 0)..(FILE_BLOCK + 1, &[][..], 0))
        .unwrap()
        .map(|entry| {
            let (key, value) = entry.unwrap();
            let (_, key, death) = key.value();
            let (birth, id) = value.value();
            let id = u64::from_le_bytes(id.try_into().unwrap());
            Retired {
                ino: u64::from_be_bytes(key[..8].try_into().unwrap()),
                index: u64::from_be_bytes(key[8..].try_into().unwrap()),
                birth,
                death,
                record: BlockRecord::decode(blocks.get(id).unwrap().unwrap().value()).unwrap(),
            }
        })
        .collect()
}

/// Flips a bit in the copy of a block at `at`.
fn damage(pool: &TestPool, at: Location) {
    pool.member(at.device.0 == 0)
        .corrupt(at.sector * SECTOR + 100, 3)
        .unwrap();
}

fn scrub_to_end(fs: &Filesystem) -> ScrubState {
    let mut state = fs.scrub_begin(0).unwrap();
    while state.phase.is_running() {
        fs.scrub_step(&mut state).unwrap();
    }
    state
}

/// `name` in the root of snapshot `snapshot`, found the way a user finds it.
fn in_snapshot(fs: &Filesystem, snapshot: &str, name: &str) -> InodeId {
    let dir = fs.lookup(ROOT, b".snapshots").unwrap().ino;
    let root = fs.lookup(dir, snapshot.as_bytes()).unwrap().ino;
    fs.lookup(root, name.as_bytes()).unwrap().ino
}

/// A committed file `data` of `blocks` blocks, then for each of `snapshots`: that snapshot,
/// and the whole file overwritten. Returns the pool, the file and each version's content
/// (the last is the live one).
fn overwritten_under_snapshots(
    copies: u8,
    mib: u64,
    blocks: usize,
    snapshots: &[&str],
) -> (TestPool, InodeId, Vec<Vec<u8>>) {
    let pool = pool(copies, mib);
    let fs = pool.open();
    let file = create_file(&fs, ROOT, "data");
    let mut versions = vec![pattern(1, blocks * BLOCK)];
    fs.write(file, 0, &versions[0]).unwrap();
    for (seed, name) in (2..).zip(snapshots) {
        fs.snapshot_create(name).unwrap();
        let content = pattern(seed, blocks * BLOCK);
        fs.write(file, 0, &content).unwrap();
        versions.push(content);
    }
    fs.shutdown().unwrap();
    (pool, file, versions)
}

#[test]
fn with_two_copies_a_damaged_block_only_a_snapshot_holds_is_repaired() {
    let (pool, file, versions) = overwritten_under_snapshots(2, 64, 8, &["before"]);
    let old = retired(&pool);
    assert_eq!(
        old.len(),
        8,
        "every old block is held by the snapshot alone"
    );
    assert!(old
        .iter()
        .all(|r| r.ino == file.0 && r.record.mirror.is_some()));
    damage(&pool, old[2].record.primary());
    damage(&pool, old[5].record.mirror.unwrap());

    let fs = pool.open();
    let state = scrub_to_end(&fs);
    assert_eq!(state.phase, ScrubPhase::Finished);
    // The 8 live blocks and the 8 only the snapshot holds, each once.
    assert_eq!(state.blocks_total, 16);
    assert_eq!(state.blocks_checked, 16);
    assert_eq!(state.bytes_checked, 16 * 2 * BLOCK as u64);
    assert_eq!(state.errors_found, 2, "{state:?}");
    assert_eq!(state.repaired, 2, "{state:?}");
    assert_eq!(state.unrecoverable, 0);
    assert!(state.damaged_inodes.is_empty() && state.damaged_in_snapshots.is_empty());
    fs.shutdown().unwrap();
    drop(fs);
    pool.assert_fsck_clean("after scrubbing the snapshot's blocks");

    // The rewritten copies alone hold the data now: damage the others and read the snapshot
    // from a fresh mount (nothing cached).
    damage(&pool, old[2].record.mirror.unwrap());
    damage(&pool, old[5].record.primary());
    let fs = pool.open();
    assert_eq!(
        read_all(&fs, in_snapshot(&fs, "before", "data")),
        versions[0]
    );
    assert_eq!(read_all(&fs, file), versions[1]);
}

#[test]
fn with_one_copy_damage_only_a_snapshot_holds_is_unrecoverable_and_named_in_the_snapshot() {
    let (pool, file, versions) = overwritten_under_snapshots(1, 64, 8, &["before"]);
    let old = retired(&pool);
    assert_eq!(old.len(), 8);
    damage(&pool, old[3].record.primary());
    let fs = pool.open();
    // The live file moves; the damage is still named where the snapshot has it.
    fs.rename(ROOT, b"data", ROOT, b"renamed", 0).unwrap();

    let state = scrub_to_end(&fs);
    assert_eq!(state.phase, ScrubPhase::Finished);
    assert_eq!(state.blocks_checked, 16);
    assert_eq!(state.blocks_total, 16);
    assert_eq!(state.errors_found, 1);
    assert_eq!(state.repaired, 0);
    assert_eq!(state.unrecoverable, 1);
    // The live file is intact: it is not named as damaged.
    assert!(state.damaged_inodes.is_empty(), "{state:?}");
    let expected = SnapshotDamage {
        ino: file.0,
        birth: old[3].birth,
        death: old[3].death,
    };
    assert_eq!(state.damaged_in_snapshots, BTreeSet::from([expected]));
    assert_eq!(
        fs.snapshot_paths_of(&state.damaged_in_snapshots).unwrap(),
        ["/.snapshots/before/data"]
    );

    // What the report names is what a reader meets: EIO in the snapshot's copy of block 3.
    assert_eq!(read_all(&fs, file), versions[1]);
    let snapshot_file = in_snapshot(&fs, "before", "data");
    let err = fs.read(snapshot_file, 3 * BLOCK as u64, 4096).unwrap_err();
    assert!(matches!(err, FsError::Checksum { .. }), "{err}");
    assert_eq!(
        fs.read(snapshot_file, 4 * BLOCK as u64, 4096).unwrap(),
        versions[0][4 * BLOCK..4 * BLOCK + 4096]
    );

    // The findings are kept across a remount; once the snapshot is gone, so is the block.
    fs.shutdown().unwrap();
    drop(fs);
    let fs = pool.open();
    let stored = fs.scrub_state().unwrap().unwrap();
    assert_eq!(stored, state);
    fs.snapshot_delete("before").unwrap();
    assert_eq!(
        fs.snapshot_paths_of(&stored.damaged_in_snapshots).unwrap(),
        [format!("<inode {}, in deleted snapshots>", file.0)]
    );
}

#[test]
fn a_scrub_remounted_in_the_snapshot_phase_resumes_without_skipping_or_repeating() {
    // 100 blocks under three snapshots: 300 retired records, three per (inode, block index),
    // so the first batch of 256 ends between two records of one key.
    let names = ["s1", "s2", "s3"];
    let (pool, file, versions) = overwritten_under_snapshots(2, 128, 100, &names);
    let old = retired(&pool);
    assert_eq!(old.len(), 300);
    assert_eq!(
        (old[255].ino, old[255].index),
        (old[256].ino, old[256].index)
    );
    assert!(old[255].death < old[256].death);
    // One damaged copy on each side of the batch boundary, and at both ends.
    let damaged = [
        old[0].record.primary(),
        old[255].record.mirror.unwrap(),
        old[256].record.primary(),
        old[299].record.mirror.unwrap(),
    ];
    for at in damaged {
        damage(&pool, at);
    }

    let fs = pool.open();
    let mut state = fs.scrub_begin(0).unwrap();
    assert_eq!(state.blocks_total, 400);
    while state.phase == ScrubPhase::Data {
        fs.scrub_step(&mut state).unwrap();
    }
    assert_eq!(state.phase, ScrubPhase::Snapshots);
    assert_eq!(state.blocks_checked, 100);
    assert_eq!(state.errors_found, 0);
    fs.scrub_step(&mut state).unwrap();
    assert_eq!(state.phase, ScrubPhase::Snapshots);
    assert_eq!(state.blocks_checked, 356);
    assert_eq!((state.errors_found, state.repaired), (2, 2), "{state:?}");
    assert_eq!(
        state.history_cursor,
        (old[256].ino, old[256].index, old[255].death + 1)
    );
    assert!(state.fraction_done() > 0.0 && state.fraction_done() < 1.0);
    fs.shutdown().unwrap();
    drop(fs);

    let fs = pool.open();
    let mut resumed = fs.scrub_state().unwrap().unwrap();
    assert_eq!(resumed, state);
    assert_eq!(resumed.phase.as_str(), "scrubbing snapshot data");
    while resumed.phase.is_running() {
        fs.scrub_step(&mut resumed).unwrap();
    }
    assert_eq!(resumed.phase, ScrubPhase::Finished);
    assert_eq!(resumed.blocks_checked, 400);
    assert_eq!(resumed.blocks_checked, resumed.blocks_total);
    assert_eq!(resumed.bytes_checked, 400 * 2 * BLOCK as u64);
    assert_eq!(
        (resumed.errors_found, resumed.repaired),
        (4, 4),
        "{resumed:?}"
    );
    assert_eq!(resumed.unrecoverable, 0);
    assert_eq!(resumed.pages_checked, resumed.pages_total);
    assert_eq!(read_all(&fs, file), versions[3]);
    fs.shutdown().unwrap();
    drop(fs);
    pool.assert_fsck_clean("after the resumed scrub");

    // Every damaged copy was rewritten: with the other copies damaged, each snapshot reads.
    let others = [
        old[0].record.mirror.unwrap(),
        old[255].record.primary(),
        old[256].record.mirror.unwrap(),
        old[299].record.primary(),
    ];
    for at in others {
        damage(&pool, at);
    }
    let fs = pool.open();
    for (name, content) in names.iter().zip(&versions) {
        assert_eq!(
            &read_all(&fs, in_snapshot(&fs, name, "data")),
            content,
            "{name}"
        );
    }
}
