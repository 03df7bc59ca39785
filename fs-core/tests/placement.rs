//! Placement of new blocks: the fast tier up to its high watermark, then the slow tier; the
//! `tier` property pins a directory's new files to a tier.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{create_file, mkdir, pattern, read_all, TestPool, MIB};
use fs_core::fs::props::{Property, Source};
use fs_core::fs::Filesystem;
use fs_core::types::{InodeId, Tier};
use fs_core::FsError;

const ROOT: InodeId = InodeId::ROOT;

/// Bytes used on the fast and the slow tier.
fn used(fs: &Filesystem) -> (u64, u64) {
    let status = fs.status();
    let of = |tier: Tier| -> u64 {
        status
            .members
            .iter()
            .filter(|m| m.tier == tier)
            .map(|m| m.data_bytes - m.free_bytes)
            .sum()
    };
    (of(Tier::Fast), of(Tier::Slow))
}

#[test]
fn unpinned_data_fills_the_fast_tier_to_its_high_watermark_then_goes_slow() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let fast_capacity = fs.status().members[0].data_bytes;
    let file = create_file(&fs, ROOT, "big");
    let content = pattern(1, 80 * MIB as usize);
    fs.write(file, 0, &content).unwrap();
    fs.commit().unwrap();
    let (fast, slow) = used(&fs);
    let fill = fast as f64 / fast_capacity as f64;
    assert!((0.84..0.87).contains(&fill), "fast tier {fill:.3} full");
    assert!(slow > 20 * MIB, "{slow} bytes on the slow tier");
    assert_eq!(read_all(&fs, file), content);
}

#[test]
fn a_pinned_directory_places_its_new_files_on_its_tier() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let cold = mkdir(&fs, ROOT, "archive");
    fs.set_property(cold, Property::parse("tier=slow").unwrap())
        .unwrap();
    let nested = mkdir(&fs, cold, "2024");
    let file = create_file(&fs, nested, "old.tar");
    fs.write(file, 0, &pattern(2, 8 * MIB as usize)).unwrap();
    fs.commit().unwrap();
    let (fast, slow) = used(&fs);
    assert!(
        fast < MIB,
        "{fast} bytes of a slow-pinned file on the fast tier"
    );
    assert!(slow >= 8 * MIB);
    let tier = |ino| {
        fs.properties(ino)
            .unwrap()
            .into_iter()
            .find(|(p, _)| p.name() == "tier")
            .unwrap()
    };
    assert_eq!(
        tier(nested),
        (Property::Tier(Some(Tier::Slow)), Source::Inherited)
    );
    assert_eq!(
        tier(file),
        (Property::Tier(Some(Tier::Slow)), Source::Local)
    );
    assert_eq!(tier(ROOT), (Property::Tier(None), Source::Builtin));
    assert!(matches!(
        Property::parse("tier=warm"),
        Err(FsError::BadProperty(m)) if m.contains("fast, slow or auto")
    ));
    assert_eq!(read_all(&fs, file), pattern(2, 8 * MIB as usize));
    drop(fs);
    pool.assert_fsck_clean("after pinned writes");
}

/// Every property's value on `ino`, by name, with where it comes from.
fn values(fs: &Filesystem, ino: InodeId) -> Vec<(String, String, Source)> {
    fs.properties(ino)
        .unwrap()
        .into_iter()
        .map(|(p, source)| (p.name().to_owned(), p.value(), source))
        .collect()
}

fn value(name: &str, value: &str, source: Source) -> (String, String, Source) {
    (name.to_owned(), value.to_owned(), source)
}

#[test]
fn each_property_comes_from_the_nearest_directory_that_sets_it() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    fs.set_property(ROOT, Property::parse("compression=zstd:5").unwrap())
        .unwrap();
    let outer = mkdir(&fs, ROOT, "outer");
    fs.set_property(outer, Property::Copies(2)).unwrap();
    let middle = mkdir(&fs, outer, "middle");
    fs.set_property(middle, Property::Tier(Some(Tier::Slow)))
        .unwrap();
    let inner = mkdir(&fs, middle, "inner");
    assert_eq!(
        values(&fs, inner),
        [
            value("copies", "2", Source::Inherited),
            value("tier", "slow", Source::Inherited),
            value("compression", "zstd:5", Source::Inherited),
        ]
    );
    // A new file keeps what its directory had, wherever each value came from.
    let file = create_file(&fs, inner, "file");
    assert_eq!(
        values(&fs, file),
        [
            value("copies", "2", Source::Local),
            value("tier", "slow", Source::Local),
            value("compression", "zstd:5", Source::Local),
        ]
    );
    // A directory moved elsewhere inherits from its new ancestors; the file keeps its own.
    fs.rename(middle, b"inner", ROOT, b"moved", 0).unwrap();
    assert_eq!(
        values(&fs, inner),
        [
            value("copies", "1", Source::Builtin),
            value("tier", "auto", Source::Builtin),
            value("compression", "zstd:5", Source::Inherited),
        ]
    );
    assert_eq!(values(&fs, file)[0], value("copies", "2", Source::Local));
    let root = values(&fs, ROOT);
    assert_eq!(root[2], value("compression", "zstd:5", Source::Local));
    assert_eq!(root[3], value("snapdir", "hidden", Source::Builtin));
}

#[test]
fn reads_and_writes_heat_blocks_and_the_heat_survives_a_remount() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let file = create_file(&fs, ROOT, "data");
    let block = 128 * 1024;
    fs.write(file, 0, &pattern(3, 4 * block)).unwrap();
    fs.commit().unwrap();
    for _ in 0..10 {
        fs.read(file, 0, 4096).unwrap();
    }
    fs.read(file, 2 * block as u64, 4096).unwrap();
    let heat = fs.file_heat(file).unwrap();
    let score = |index: u64| heat.iter().find(|(i, _)| *i == index).unwrap().1;
    // One write each, then the reads.
    assert!((score(0) - 11.0).abs() < 0.01, "{heat:?}");
    assert!((score(1) - 1.0).abs() < 0.01, "{heat:?}");
    assert!((score(2) - 2.0).abs() < 0.01, "{heat:?}");
    // Rewriting a block (a new block, copy-on-write) keeps its heat and adds the write.
    fs.write(file, 0, b"rewritten").unwrap();
    fs.commit().unwrap();
    drop(fs);
    let fs = pool.open();
    let heat = fs.file_heat(file).unwrap();
    assert!((heat[0].1 - 12.0).abs() < 0.01, "{heat:?}");
    assert!((heat[2].1 - 2.0).abs() < 0.01, "{heat:?}");
    // Freed blocks take their heat with them.
    fs.unlink(ROOT, b"data").unwrap();
    fs.commit().unwrap();
    drop(fs);
    pool.assert_fsck_clean("after deleting a heated file");
}

/// The blocks of `ino` as `block_placements` lists them (after a commit).
fn placements_of(fs: &Filesystem, ino: InodeId) -> Vec<fs_core::fs::tier::BlockPlacement> {
    fs.commit().unwrap();
    fs.block_placements()
        .unwrap()
        .into_iter()
        .filter(|p| p.inode == Some(ino.0))
        .collect()
}

#[test]
fn relocation_moves_blocks_between_tiers_and_the_data_stays() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let file = create_file(&fs, ROOT, "data");
    let content = pattern(4, 3 * MIB as usize + 777);
    fs.write(file, 0, &content).unwrap();
    fs.commit().unwrap();
    fs.read(file, 0, 10).unwrap();
    let blocks = placements_of(&fs, file);
    assert_eq!(blocks.len(), 25);
    assert!(blocks
        .iter()
        .all(|b| b.tier == Tier::Fast && b.pin.is_none()));
    assert!(
        blocks.iter().any(|b| b.heat > 1.5),
        "the read heats block 0"
    );
    let ids: Vec<u64> = blocks.iter().map(|b| b.block).collect();
    let (fast_before, slow_before) = used(&fs);

    let moved = fs.relocate(&ids, Tier::Slow).unwrap();
    assert_eq!(moved.moved, 25);
    assert_eq!(moved.skipped, 0);
    assert_eq!(read_all(&fs, file), content);
    fs.commit().unwrap();
    let (fast_after, slow_after) = used(&fs);
    assert_eq!(fast_before - fast_after, moved.bytes_copied);
    assert_eq!(slow_after - slow_before, moved.bytes_copied);
    assert!(placements_of(&fs, file)
        .iter()
        .all(|b| b.tier == Tier::Slow));
    // Already there: nothing to do. A block that no longer exists is skipped.
    assert_eq!(fs.relocate(&ids, Tier::Slow).unwrap().skipped, 25);
    assert_eq!(fs.relocate(&[999_999], Tier::Fast).unwrap().skipped, 1);
    drop(fs);
    pool.assert_fsck_clean("after moving to the slow tier");
    let fs = pool.open();
    assert_eq!(read_all(&fs, file), content);
    assert_eq!(fs.relocate(&ids, Tier::Fast).unwrap().moved, 25);
    assert_eq!(read_all(&fs, file), content);
    drop(fs);
    pool.assert_fsck_clean("after moving back");
}

#[test]
fn a_block_with_a_copy_on_the_target_tier_swaps_copies_without_copying() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let dir = mkdir(&fs, ROOT, "safe");
    fs.set_property(dir, Property::Copies(2)).unwrap();
    let file = create_file(&fs, dir, "twice");
    fs.write(file, 0, &pattern(5, MIB as usize)).unwrap();
    let ids: Vec<u64> = placements_of(&fs, file).iter().map(|b| b.block).collect();
    let moved = fs.relocate(&ids, Tier::Slow).unwrap();
    assert_eq!((moved.moved, moved.bytes_copied), (8, 0));
    assert!(placements_of(&fs, file)
        .iter()
        .all(|b| b.tier == Tier::Slow));
    assert_eq!(read_all(&fs, file), pattern(5, MIB as usize));
    drop(fs);
    pool.assert_fsck_clean("after swapping copies");
}

#[test]
fn a_power_cut_before_the_commit_leaves_blocks_where_they_were() {
    use fs_core::device::CutMode;
    for keep_commit in [false, true] {
        let pool = TestPool::new(64, 128);
        let fs = pool.open();
        let file = create_file(&fs, ROOT, "data");
        let content = pattern(6, 2 * MIB as usize);
        fs.write(file, 0, &content).unwrap();
        let ids: Vec<u64> = placements_of(&fs, file).iter().map(|b| b.block).collect();
        fs.relocate(&ids, Tier::Slow).unwrap();
        if keep_commit {
            fs.commit().unwrap();
        }
        pool.crash(fs, CutMode::DropAll);
        pool.assert_fsck_clean("after a cut around a relocation");
        let fs = pool.open();
        assert_eq!(read_all(&fs, file), content);
        let expected = if keep_commit { Tier::Slow } else { Tier::Fast };
        assert!(
            placements_of(&fs, file).iter().all(|b| b.tier == expected),
            "committed: {keep_commit}"
        );
    }
}

#[test]
fn the_migration_history_keeps_the_newest_thousand() {
    use fs_core::meta::records::{MigrationOutcome, MigrationRecord, Timestamp};
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let record = |i: i64| MigrationRecord {
        started: Timestamp { secs: i, nanos: 0 },
        finished: Timestamp {
            secs: i + 1,
            nanos: 0,
        },
        promoted_blocks: 1,
        promoted_bytes: 4096,
        demoted_blocks: 0,
        demoted_bytes: 0,
        outcome: MigrationOutcome::Finished,
    };
    for i in 0..1_003 {
        fs.record_migration(&record(i)).unwrap();
    }
    drop(fs);
    let fs = pool.open();
    let kept = fs.migrations().unwrap();
    assert_eq!(kept.len(), 1_000);
    assert_eq!(kept[0], record(3));
    assert_eq!(kept[999], record(1_002));
}
