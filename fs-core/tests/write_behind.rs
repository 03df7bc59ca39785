//! Staged blocks written out behind the state lock: while their device writes run, reads of
//! those blocks and commits wait for them, and other writes go on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{create_file, pattern, TestPool, MIB};
use fs_core::device::CutMode;
use fs_core::fs::Filesystem;
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
