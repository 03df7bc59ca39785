//! Data integrity: `copies=2` blocks are served from the intact copy and healed when one copy
//! is damaged or unreadable; without an intact copy a read fails (never wrong data); the
//! `copies` property is inherited; error counters survive remounts; fsck repairs a damaged copy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{capture_logs, create_file, mkdir, pattern, read_all, TestPool, MIB};
use std::collections::BTreeSet;
use std::sync::Arc;

use fs_core::device::{BlockDevice, FaultPlan, FaultyDevice};
use fs_core::fs::props::{Property, Source};
use fs_core::fs::scrub::{ScrubPhase, ScrubState, Scrubber};
use fs_core::fs::ErrorCounts;
use fs_core::meta::records::Location;
use fs_core::pool::FormatOptions;
use fs_core::types::{DeviceIndex, InodeId};
use fs_core::FsError;

const ROOT: InodeId = InodeId::ROOT;
const SECTOR: u64 = 4096;

fn pool_with_copies(copies: u8) -> TestPool {
    TestPool::with_options(
        64,
        64,
        &FormatOptions {
            label: "integrity".into(),
            properties: vec![Property::Copies(copies)],
            ..FormatOptions::default()
        },
    )
}

fn device(pool: &TestPool, index: DeviceIndex) -> &FaultyDevice {
    pool.member(index.0 == 0)
}

/// Flips a byte in the copy of a block at `at`.
fn damage(pool: &TestPool, at: Location) {
    device(pool, at.device)
        .corrupt(at.sector * SECTOR + 100, 3)
        .unwrap();
}

fn errors(fs: &fs_core::fs::Filesystem, index: usize) -> ErrorCounts {
    fs.status().members[index].errors
}

/// A committed 1 MiB file (8 blocks of 128 KiB) on a fresh pool.
fn written(copies: u8) -> (TestPool, InodeId, Vec<u8>) {
    let pool = pool_with_copies(copies);
    let fs = pool.open();
    let file = create_file(&fs, ROOT, "data");
    let content = pattern(5, MIB as usize);
    fs.write(file, 0, &content).unwrap();
    fs.shutdown().unwrap();
    (pool, file, content)
}

#[test]
fn copies_2_puts_a_second_copy_of_every_block_on_the_other_device() {
    let (pool, file, _) = written(2);
    let records = pool.file_records(file);
    assert_eq!(records.len(), 8);
    for record in &records {
        let mirror = record.mirror.expect("mirrored");
        assert_ne!(mirror.device, record.device);
    }
    let fs = pool.open();
    // Both copies count as allocated space, as with ZFS's copies.
    assert_eq!(fs.getattr(file).unwrap().blocks * 512, 2 * MIB);
    pool.assert_fsck_clean("copies=2 pool");
}

#[test]
fn a_damaged_first_copy_is_served_from_the_second_and_rewritten() {
    let (pool, file, content) = written(2);
    let records = pool.file_records(file);
    for record in &records {
        damage(&pool, record.primary());
    }
    let fs = pool.open();
    assert_eq!(read_all(&fs, file), content);
    let primary = usize::from(records[0].device.0);
    assert_eq!(errors(&fs, primary).checksum, 8);
    assert_eq!(errors(&fs, primary).repaired, 8);
    fs.shutdown().unwrap();
    drop(fs);
    // Healed on the device: a full check finds nothing, and the counters were kept.
    pool.assert_fsck_clean("after self-heal");
    let fs = pool.open();
    assert_eq!(errors(&fs, primary).repaired, 8);
    fs.clear_errors().unwrap();
    drop(fs);
    let fs = pool.open();
    assert_eq!(errors(&fs, primary), ErrorCounts::default());
}

#[test]
fn an_unreadable_first_copy_is_served_from_the_second() {
    let (pool, file, content) = written(2);
    let records = pool.file_records(file);
    let primary = records[3].primary();
    let at = primary.sector * SECTOR;
    device(&pool, primary.device).set_plan(FaultPlan {
        read_error_ranges: std::iter::once(at..at + 1).collect(),
        ..FaultPlan::default()
    });
    let fs = pool.open();
    assert_eq!(read_all(&fs, file), content);
    assert_eq!(errors(&fs, usize::from(primary.device.0)).read, 1);
}

#[test]
fn a_block_damaged_on_both_copies_is_an_error_and_the_rest_still_reads() {
    let (pool, file, content) = written(2);
    let records = pool.file_records(file);
    for at in records[2].locations() {
        damage(&pool, at);
    }
    let fs = pool.open();
    let block = 128 * 1024;
    let err = fs.read(file, 2 * block, 4096).unwrap_err();
    assert!(matches!(err, FsError::Checksum { .. }), "{err}");
    assert_eq!(err.errno(), libc::EIO);
    assert_eq!(
        fs.read(file, 3 * block, 4096).unwrap(),
        content[3 * block as usize..3 * block as usize + 4096]
    );
}

#[test]
fn with_one_copy_a_damaged_block_is_an_error() {
    let (pool, file, _) = written(1);
    let records = pool.file_records(file);
    assert!(records.iter().all(|r| r.mirror.is_none()));
    damage(&pool, records[0].primary());
    let fs = pool.open();
    let (err, log) = capture_logs(|| fs.read(file, 0, 4096).unwrap_err());
    assert_eq!(err.errno(), libc::EIO);
    assert!(log.contains("path=\"/data\""), "the path is logged: {log}");
    assert_eq!(errors(&fs, usize::from(records[0].device.0)).checksum, 1);
    assert_eq!(errors(&fs, usize::from(records[0].device.0)).repaired, 0);
}

/// The `copies` property of `ino` and where its value comes from.
fn copies_property(fs: &fs_core::fs::Filesystem, ino: InodeId) -> (Property, Source) {
    fs.properties(ino)
        .unwrap()
        .into_iter()
        .find(|(p, _)| p.name() == "copies")
        .unwrap()
}

#[test]
fn a_directory_property_is_inherited_by_what_is_created_in_it_afterwards() {
    let pool = pool_with_copies(1);
    let fs = pool.open();
    let dir = mkdir(&fs, ROOT, "photos");
    let before = create_file(&fs, dir, "before");
    // A subdirectory that exists before the property is set inherits it too.
    let old_sub = mkdir(&fs, dir, "2025");
    fs.set_property(dir, Property::Copies(2)).unwrap();
    let after = create_file(&fs, dir, "after");
    let sub = mkdir(&fs, dir, "sub");
    let nested = create_file(&fs, sub, "nested");
    let in_old_sub = create_file(&fs, old_sub, "in-old-sub");
    for ino in [before, after, nested, in_old_sub] {
        fs.write(ino, 0, &pattern(ino.0, 200_000)).unwrap();
    }
    assert_eq!(
        copies_property(&fs, dir),
        (Property::Copies(2), Source::Local)
    );
    assert_eq!(
        copies_property(&fs, old_sub),
        (Property::Copies(2), Source::Inherited)
    );
    assert_eq!(
        copies_property(&fs, before),
        (Property::Copies(1), Source::Pool)
    );
    assert_eq!(
        copies_property(&fs, nested),
        (Property::Copies(2), Source::Local)
    );
    fs.shutdown().unwrap();
    drop(fs);
    assert!(pool.file_records(before).iter().all(|r| r.mirror.is_none()));
    for ino in [after, nested, in_old_sub] {
        let records = pool.file_records(ino);
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| r.mirror.is_some()));
    }
    // Deleting a file drops its properties with it.
    let fs = pool.open();
    fs.unlink(sub, b"nested").unwrap();
    fs.shutdown().unwrap();
    drop(fs);
    pool.assert_fsck_clean("after unlinking a file with properties");
}

#[test]
fn bad_properties_are_refused_by_name() {
    for (text, expected) in [
        ("copies=3", "copies must be 1 or 2"),
        ("colour=red", "unknown property 'colour'"),
        ("copies", "not name=value"),
    ] {
        let err = Property::parse(text).unwrap_err();
        assert!(err.to_string().contains(expected), "{text}: {err}");
        assert_eq!(err.errno(), libc::EINVAL);
    }
}

#[test]
fn fsck_repair_rewrites_a_damaged_copy_from_the_intact_one() {
    let (pool, file, content) = written(2);
    let records = pool.file_records(file);
    damage(&pool, records[1].mirror.unwrap());
    let report = fs_core::fsck::check(&mut pool.pool().unwrap(), true).unwrap();
    let finding = &report.findings[0];
    assert_eq!(finding.check, "checksum");
    assert_eq!(finding.path.as_deref(), Some("/data"));
    assert!(finding.message.contains("the other copy is intact"));
    let repaired = fs_core::fsck::repair(&mut pool.pool().unwrap(), true).unwrap();
    assert_eq!(repaired.uncorrected(), 0, "{:?}", repaired.findings);
    pool.assert_fsck_clean("after repair");
    // The repaired copy alone holds the data: damage the other one and read.
    damage(&pool, records[1].primary());
    let fs = pool.open();
    assert_eq!(read_all(&fs, file), content);
}

#[test]
fn a_mirrored_write_needs_room_on_both_devices() {
    let pool = pool_with_copies(2);
    let fs = pool.open();
    let file = create_file(&fs, ROOT, "big");
    let chunk = pattern(9, MIB as usize);
    let mut written = 0;
    let err = loop {
        match fs.write(file, written, &chunk).and_then(|_| fs.fsync()) {
            Ok(()) => written += MIB,
            Err(err) => break err,
        }
        assert!(written < 200 * MIB, "never ran out of space");
    };
    assert!(matches!(err, FsError::NoSpace), "{err}");
    // Both members hold about as much: every block has one copy on each.
    let status = fs.status();
    let used: Vec<u64> = status
        .members
        .iter()
        .map(|m| m.data_bytes - m.free_bytes)
        .collect();
    assert!(written > 16 * MIB);
    assert!(used[0].abs_diff(used[1]) <= 2 * MIB, "{used:?}");
}

/// Runs a scrub to its end on `fs`, step by step.
fn scrub_to_end(fs: &fs_core::fs::Filesystem) -> ScrubState {
    let mut state = fs.scrub_begin(0).unwrap();
    while state.phase.is_running() {
        fs.scrub_step(&mut state).unwrap();
    }
    state
}

/// Every block copy (file, location) of the files `names` in the root.
fn copies_of(pool: &TestPool, files: &[(InodeId, &str)]) -> Vec<(String, Location, u64)> {
    let mut out = Vec::new();
    for (ino, name) in files {
        for record in pool.file_records(*ino) {
            for at in record.locations() {
                // Only the stored bytes count: the padding to a whole sector is not checked.
                out.push(((*name).to_owned(), at, u64::from(record.stored_len)));
            }
        }
    }
    out
}

/// Writes random bytes at `count` random offsets of the data area of `fast` (or slow); returns
/// the copies (of `copies`) that now differ.
fn damage_randomly(
    pool: &TestPool,
    fast: bool,
    count: usize,
    seed: u64,
    copies: &[(String, Location, u64)],
) -> BTreeSet<(String, Location)> {
    let area = pool.data_area(fast);
    let used_end = copies
        .iter()
        .filter(|(_, at, _)| (at.device.0 == 0) == fast)
        .map(|(_, at, len)| at.sector * SECTOR + len)
        .max()
        .unwrap();
    let mut rng = fs_core::device::SplitMix64(seed);
    let mut damaged = BTreeSet::new();
    for _ in 0..count {
        let offset = area.start + rng.below(used_end - area.start);
        let device = pool.member(fast);
        let mut byte = [0u8; 1];
        device.read_at(offset, &mut byte).unwrap();
        device.write_at(offset, &[byte[0] ^ 0xa5]).unwrap();
        for (name, at, len) in copies {
            let range = at.sector * SECTOR..at.sector * SECTOR + len;
            if (at.device.0 == 0) == fast && range.contains(&offset) {
                damaged.insert((name.clone(), *at));
            }
        }
    }
    device_flush(pool, fast);
    damaged
}

fn device_flush(pool: &TestPool, fast: bool) {
    pool.member(fast).flush().unwrap();
}

/// Ten files of different sizes, committed.
fn populated(copies: u8) -> (TestPool, Vec<(InodeId, String)>, Vec<Vec<u8>>) {
    let pool = pool_with_copies(copies);
    let fs = pool.open();
    let mut files = Vec::new();
    let mut contents = Vec::new();
    for i in 0..10u64 {
        let name = format!("file{i}");
        let ino = create_file(&fs, ROOT, &name);
        let content = pattern(i + 100, 150_000 * (i as usize + 1));
        fs.write(ino, 0, &content).unwrap();
        files.push((ino, name));
        contents.push(content);
    }
    fs.shutdown().unwrap();
    (pool, files, contents)
}

#[test]
fn scrub_with_two_copies_finds_and_repairs_random_damage_on_a_device_and_a_metadata_copy() {
    let (pool, files, contents) = populated(2);
    let named: Vec<(InodeId, &str)> = files.iter().map(|(i, n)| (*i, n.as_str())).collect();
    let copies = copies_of(&pool, &named);
    let damaged = damage_randomly(&pool, true, 40, 7, &copies);
    assert!(damaged.len() >= 20, "{}", damaged.len());
    // And one bit in each of the first pages of the slow metadata copy.
    let region = pool.metadata_region(false);
    let sb = fs_core::pool::read_superblock(pool.slow.as_ref()).unwrap();
    let database = region.start + fs_core::meta::backend::database_offset(sb.meta_len);
    for page in 0..8 {
        pool.slow.corrupt(database + page * 4096 + 64, 1).unwrap();
    }
    let fs = pool.open();
    let state = scrub_to_end(&fs);
    println!(
        "damaged data copies {}, scrub found {}, repaired {}, unrecoverable {}",
        damaged.len(),
        state.errors_found,
        state.repaired,
        state.unrecoverable
    );
    assert_eq!(state.phase, ScrubPhase::Finished);
    assert_eq!(state.blocks_checked, state.blocks_total);
    assert_eq!(state.unrecoverable, 0);
    assert_eq!(state.errors_found, state.repaired);
    // Every damaged data copy, and the damaged metadata pages redb had not rewritten since.
    let data = damaged.len() as u64;
    assert!(
        (data + 1..=data + 8).contains(&state.errors_found),
        "{} found, {data} data copies and 8 metadata pages damaged",
        state.errors_found,
    );
    for ((ino, _), content) in files.iter().zip(&contents) {
        assert_eq!(&read_all(&fs, *ino), content);
    }
    fs.shutdown().unwrap();
    drop(fs);
    pool.assert_fsck_clean("after scrub");
}

#[test]
fn scrub_with_one_copy_finds_every_damaged_block_and_names_exactly_the_damaged_files() {
    let (pool, files, _) = populated(1);
    let named: Vec<(InodeId, &str)> = files.iter().map(|(i, n)| (*i, n.as_str())).collect();
    let copies = copies_of(&pool, &named);
    let damaged = damage_randomly(&pool, true, 12, 11, &copies);
    let fs = pool.open();
    let state = scrub_to_end(&fs);
    println!(
        "damaged blocks {}, scrub found {}, unrecoverable {}",
        damaged.len(),
        state.errors_found,
        state.unrecoverable
    );
    assert_eq!(state.unrecoverable, damaged.len() as u64);
    assert_eq!(state.errors_found, damaged.len() as u64);
    assert_eq!(state.repaired, 0);
    let reported: BTreeSet<String> = fs
        .paths_of(&state.damaged_inodes)
        .unwrap()
        .into_iter()
        .map(|(_, path)| path.unwrap())
        .collect();
    let expected: BTreeSet<String> = damaged.iter().map(|(name, _)| format!("/{name}")).collect();
    assert_eq!(reported, expected);
    for (ino, name) in &files {
        let whole = fs.read(*ino, 0, 4 << 20);
        assert_eq!(
            whole.is_err(),
            expected.contains(&format!("/{name}")),
            "{name}"
        );
    }
}

/// A pool holding more blocks than one scrub batch.
fn big_pool() -> TestPool {
    let pool = TestPool::with_options(
        160,
        160,
        &FormatOptions {
            label: "scrub".into(),
            properties: vec![Property::Copies(2)],
            ..FormatOptions::default()
        },
    );
    let fs = pool.open();
    let file = create_file(&fs, ROOT, "big");
    fs.write(file, 0, &pattern(6, 40 * MIB as usize)).unwrap();
    fs.shutdown().unwrap();
    pool
}

#[test]
fn a_scrub_resumes_after_a_remount_where_it_stopped() {
    let pool = big_pool();
    let fs = pool.open();
    let mut state = fs.scrub_begin(0).unwrap();
    assert!(matches!(fs.scrub_begin(0), Err(FsError::Busy(_))));
    fs.scrub_step(&mut state).unwrap();
    let first = state.blocks_checked;
    assert!(first > 0 && first < state.blocks_total);
    fs.shutdown().unwrap();
    drop(fs);
    let fs = pool.open();
    let mut resumed = fs.scrub_state().unwrap().unwrap();
    assert!(resumed.phase.is_running());
    assert_eq!(resumed.blocks_checked, first);
    while resumed.phase.is_running() {
        fs.scrub_step(&mut resumed).unwrap();
    }
    assert_eq!(resumed.blocks_checked, resumed.blocks_total);
    assert_eq!(resumed.pages_checked, resumed.pages_total);
}

#[test]
fn a_scrub_thread_can_be_cancelled_and_throttles_to_its_rate() {
    let pool = big_pool();
    let fs = pool.open();
    // 1 MiB/s: the first batch (64 MiB of copies) alone takes a minute of throttling.
    let state = fs.scrub_begin(MIB).unwrap();
    let scrubber = Scrubber::start(Arc::clone(&fs), state).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    scrubber.cancel();
    let mut state = scrubber.state();
    assert!(state.phase.is_running());
    assert!(state.blocks_checked < state.blocks_total, "{state:?}");
    fs.scrub_cancel(&mut state).unwrap();
    assert_eq!(
        fs.scrub_state().unwrap().unwrap().phase,
        ScrubPhase::Cancelled
    );
    // Unthrottled, a new one runs to its end.
    let scrubber = Scrubber::start(Arc::clone(&fs), fs.scrub_begin(0).unwrap()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while scrubber.state().phase.is_running() {
        assert!(std::time::Instant::now() < deadline, "scrub never finished");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(scrubber.state().phase, ScrubPhase::Finished);
}

#[test]
fn scrub_repairs_damage_in_one_metadata_copy_alone() {
    let (pool, files, contents) = populated(1);
    let sb = fs_core::pool::read_superblock(pool.slow.as_ref()).unwrap();
    let database = sb.meta_offset + fs_core::meta::backend::database_offset(sb.meta_len);
    let pages = pool.pool().unwrap().metadata.pages();
    let mut rng = fs_core::device::SplitMix64(3);
    for _ in 0..10 {
        let at = database + rng.below(pages * 4096);
        pool.slow.corrupt(at, (rng.below(8)) as u8).unwrap();
    }
    let fs = pool.open();
    let state = scrub_to_end(&fs);
    println!(
        "metadata pages damaged 10, scrub found {}, repaired {}",
        state.errors_found, state.repaired
    );
    // Every damaged page, but for the few the open's own commit rewrote.
    assert!(state.errors_found >= 5, "{state:?}");
    assert_eq!(state.errors_found, state.repaired, "{state:?}");
    assert_eq!(state.unrecoverable, 0);
    assert_eq!(state.pages_checked, state.pages_total);
    for ((ino, _), content) in files.iter().zip(&contents) {
        assert_eq!(&read_all(&fs, *ino), content);
    }
    fs.shutdown().unwrap();
    drop(fs);
    pool.assert_fsck_clean("after scrubbing a damaged metadata copy");
}
