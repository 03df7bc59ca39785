//! Staged blocks written out behind the state lock: while their device writes run, reads of
//! those blocks and commits wait for them, and other writes go on. A commit writes the blocks
//! staged so far the same way, and a write past the dirty limit leaves the commit to the
//! commit thread.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{create_file, pattern, TestPool, MIB};
use fs_core::device::CutMode;
use fs_core::fs::{Filesystem, FsConfig};
use fs_core::types::InodeId;
use fs_core::FsResult;

const ROOT: InodeId = InodeId::ROOT;
/// The staging limit: the write that passes it maps the staged blocks and writes them out.
const STAGED_LIMIT: u64 = 16 * MIB;

/// Stalls the fast member's data writes, then writes `data` to `ino` at `at` in 1 MiB writes
/// on a thread of its own (up to the first error); returns once the staged blocks wait at the
/// device.
fn write_into_a_stall(
    pool: &TestPool,
    fs: &Arc<Filesystem>,
    ino: InodeId,
    at: u64,
    data: Vec<u8>,
) -> JoinHandle<FsResult<()>> {
    pool.fast.stall_writes(pool.data_area(true));
    let fs = Arc::clone(fs);
    let writer = std::thread::spawn(move || {
        for (i, chunk) in data.chunks(MIB as usize).enumerate() {
            fs.write(ino, at + i as u64 * MIB, chunk)?;
        }
        Ok(())
    });
    let started = Instant::now();
    while pool.fast.stalled_writes() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the staged blocks never reached the device"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    writer
}

/// Runs `op` on a thread of its own and checks that it is still waiting 300 ms later.
fn spawn_waiting<T: Send + 'static>(
    what: &str,
    op: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let handle = std::thread::spawn(op);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !handle.is_finished(),
        "{what} did not wait for the writes in flight"
    );
    handle
}

#[test]
fn reads_and_commits_wait_for_blocks_written_behind_the_lock_and_writes_go_on() {
    let pool = TestPool::new(200, 200);
    let fs = pool.open_with_cache(1);
    let big = create_file(&fs, ROOT, "big");
    let other = create_file(&fs, ROOT, "other");
    fs.commit().unwrap();

    let first = pattern(3, STAGED_LIMIT as usize);
    let writer = write_into_a_stall(&pool, &fs, big, 0, first.clone());
    // The state lock is free while the device works: another file takes writes and reads.
    fs.write(other, 0, &pattern(4, 256 * 1024)).unwrap();
    assert_eq!(
        fs.read(other, 0, 256 * 1024).unwrap(),
        pattern(4, 256 * 1024)
    );
    // No block stays in the cache, so this read needs the device: it waits for the write
    // instead of reading sectors not written yet.
    let reader = {
        let fs = fs.clone();
        spawn_waiting("a read of a block being written", move || {
            fs.read(big, 0, 128 * 1024)
        })
    };
    pool.fast.resume_writes();
    writer.join().unwrap().unwrap();
    assert_eq!(reader.join().unwrap().unwrap(), &first[..128 * 1024]);
    fs.commit().unwrap();

    // A commit waits for the writes in flight before it makes their blocks' records durable.
    let second = pattern(5, STAGED_LIMIT as usize);
    let writer = write_into_a_stall(&pool, &fs, big, STAGED_LIMIT, second.clone());
    let committer = {
        let fs = fs.clone();
        spawn_waiting("a commit", move || fs.commit())
    };
    pool.fast.resume_writes();
    writer.join().unwrap().unwrap();
    committer.join().unwrap().unwrap();

    let whole = [first, second].concat();
    assert_eq!(fs.read(big, 0, 2 * STAGED_LIMIT as u32).unwrap(), whole);
    drop(fs);
    pool.assert_fsck_clean("after the writes behind the lock");
    let fs = pool.open();
    assert_eq!(fs.read(big, 0, 2 * STAGED_LIMIT as u32).unwrap(), whole);
    assert_eq!(
        fs.read(other, 0, 256 * 1024).unwrap(),
        pattern(4, 256 * 1024)
    );
}

#[test]
fn a_power_cut_while_blocks_are_written_behind_keeps_the_last_commit() {
    let pool = TestPool::new(160, 160);
    let fs = pool.open();
    let big = create_file(&fs, ROOT, "big");
    let first = pattern(5, STAGED_LIMIT as usize);
    for (i, chunk) in first.chunks(MIB as usize).enumerate() {
        fs.write(big, i as u64 * MIB, chunk).unwrap();
    }
    fs.commit().unwrap();

    // Overwrite it: the new blocks are mapped in the open group and half written when the
    // power goes (the writes fail from then on).
    let writer = write_into_a_stall(&pool, &fs, big, 0, pattern(6, STAGED_LIMIT as usize));
    pool.fast.power_cut(CutMode::DropAll).unwrap();
    pool.slow.power_cut(CutMode::DropAll).unwrap();
    pool.fast.resume_writes();
    assert!(writer.join().unwrap().is_err());
    drop(fs);
    pool.fast.revive();
    pool.slow.revive();

    pool.assert_fsck_clean("after the power cut");
    let fs = pool.open();
    assert_eq!(fs.read(big, 0, STAGED_LIMIT as u32).unwrap(), first);
}

#[test]
fn a_commit_writes_the_staged_blocks_behind_the_lock_and_verbs_go_on_meanwhile() {
    let pool = TestPool::new(64, 64);
    let fs = pool.open_with_cache(1);
    let staged = create_file(&fs, ROOT, "staged");
    let other = create_file(&fs, ROOT, "other");
    fs.commit().unwrap();
    let data = pattern(7, 4 * MIB as usize);
    fs.write(staged, 0, &data).unwrap();

    pool.fast.stall_writes(pool.data_area(true));
    let committer = {
        let fs = fs.clone();
        spawn_waiting("a commit", move || fs.commit())
    };
    // The commit's blocks wait at the device, and the state lock is free.
    let verbs = {
        let fs = fs.clone();
        std::thread::spawn(move || {
            fs.write(other, 0, &pattern(8, 64 * 1024)).unwrap();
            fs.read(other, 0, 64 * 1024).unwrap()
        })
    };
    let started = Instant::now();
    while !verbs.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a write waited for the commit's block writes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(verbs.join().unwrap(), pattern(8, 64 * 1024));
    pool.fast.resume_writes();
    committer.join().unwrap().unwrap();

    drop(fs);
    pool.assert_fsck_clean("after the commit");
    let fs = pool.open();
    assert_eq!(fs.read(staged, 0, 4 * MIB as u32).unwrap(), data);
    // Written while the commit wrote its blocks, so committed by it.
    assert_eq!(fs.read(other, 0, 64 * 1024).unwrap(), pattern(8, 64 * 1024));
}

/// Writes `data` to `ino` at `at` in 1 MiB writes.
fn write_chunks(fs: &Filesystem, ino: InodeId, at: u64, data: &[u8]) {
    for (i, chunk) in data.chunks(MIB as usize).enumerate() {
        fs.write(ino, at + i as u64 * MIB, chunk).unwrap();
    }
}

#[test]
fn a_write_past_the_dirty_limit_wakes_the_commit_thread() {
    let pool = TestPool::new(96, 96);
    // Data counts as dirty once its staged blocks are placed, which passing the staging
    // limit does: 16 MiB, between one and two times this limit.
    let config = FsConfig {
        dirty_limit: 12 * MIB,
        ..TestPool::config()
    };
    let first = pattern(9, STAGED_LIMIT as usize + MIB as usize);
    let second = pattern(10, STAGED_LIMIT as usize + MIB as usize);
    // Without a commit thread the write that passes the limit commits.
    let fs = pool.open_with(config);
    let file = create_file(&fs, ROOT, "file");
    let commits = fs.status().commits;
    write_chunks(&fs, file, 0, &first);
    assert_eq!(fs.status().commits, commits + 1);
    fs.shutdown().unwrap();
    drop(fs);

    // With one, the thread commits (its timer is an hour away).
    let fs = pool.open_with(config);
    let _thread = fs.start_committer();
    let commits = fs.status().commits;
    write_chunks(&fs, file, first.len() as u64, &second);
    let started = Instant::now();
    while fs.status().commits == commits {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the commit thread did not commit"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    fs.shutdown().unwrap();
    drop(fs);
    let fs = pool.open();
    let whole = [first, second].concat();
    assert!(fs.read(file, 0, whole.len() as u32).unwrap() == whole);
}
