//! Device write errors: the call that meets one fails with EIO and the pool goes read-only
//! (EROFS for every change and fsync, reads served from the last commit, the cause logged
//! once); remounted without the fault, the pool is fsck-clean and holds exactly the last
//! commit, with nothing of the failed transaction group in it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{
    assert_same_tree, capture_logs, create_file, mkdir, pattern, tree, Node, TestPool, MIB,
};
use fs_core::device::{CutMode, FaultPlan};
use fs_core::fs::{Caller, Filesystem, NewNode, SetAttr};
use fs_core::meta::records::FileKind;
use fs_core::types::InodeId;
use fs_core::{FsError, FsResult};

const ROOT: InodeId = InodeId::ROOT;

/// Builds and commits a tree: files on blocks and inline, a directory, a hard link, a
/// symlink and an xattr.
fn commit_a_tree(fs: &Filesystem) -> BTreeMap<String, Node> {
    let dir = mkdir(fs, ROOT, "dir");
    let big = create_file(fs, dir, "big");
    fs.write(big, 0, &pattern(1, 700_000)).unwrap();
    let small = create_file(fs, ROOT, "small");
    fs.write(small, 0, b"inline bytes").unwrap();
    let doomed = create_file(fs, ROOT, "doomed");
    fs.write(doomed, 0, &pattern(2, 300_000)).unwrap();
    let overwritten = create_file(fs, ROOT, "overwritten");
    fs.write(overwritten, 0, &pattern(3, 400_000)).unwrap();
    fs.link(big, ROOT, b"big-link").unwrap();
    let link = NewNode {
        target: Some(b"dir/big"),
        ..NewNode::new(FileKind::Symlink, 0o777)
    };
    fs.create_node(ROOT, b"sym", &link, Caller::ROOT).unwrap();
    fs.setxattr(big, b"user.tag", b"committed", 0).unwrap();
    fs.fsync().unwrap();
    tree(fs)
}

/// Changes for the transaction group that is going to fail: new files, data and a directory,
/// an overwrite, and frees of committed blocks (an unlink and a truncation), whose sectors
/// must not be reused while the last commit points at them. Returns the tree they make.
fn change_the_tree(fs: &Filesystem) -> BTreeMap<String, Node> {
    let new = create_file(fs, ROOT, "new");
    fs.write(new, 0, &pattern(4, 500_000)).unwrap();
    let overwritten = fs.lookup(ROOT, b"overwritten").unwrap().ino;
    fs.write(overwritten, 100_000, &pattern(5, 200_000))
        .unwrap();
    fs.unlink(ROOT, b"doomed").unwrap();
    let dir = fs.lookup(ROOT, b"dir").unwrap().ino;
    let big = fs.lookup(dir, b"big").unwrap().ino;
    let truncate = SetAttr {
        size: Some(10_000),
        ..SetAttr::default()
    };
    fs.setattr(big, &truncate).unwrap();
    fs.setxattr(big, b"user.tag", b"changed", 0).unwrap();
    mkdir(fs, ROOT, "new-dir");
    tree(fs)
}

/// Checks a pool that went read-only: reads serve `committed`, and every change, fsync and
/// unmount fails with EROFS and changes nothing.
fn assert_read_only(fs: &Filesystem, committed: &BTreeMap<String, Node>) {
    assert!(fs.is_read_only());
    let cause = fs.status().read_only_cause.expect("status names the cause");
    assert!(!cause.is_empty());
    assert_same_tree(&tree(fs), committed, "reads while read-only");
    let small = fs.lookup(ROOT, b"small").unwrap().ino;
    let dir = fs.lookup(ROOT, b"dir").unwrap().ino;
    // Opening and closing files still works.
    fs.open(small, true, false, Caller::ROOT).unwrap();
    fs.release(small).unwrap();
    let file = NewNode::new(FileKind::Regular, 0o644);
    let chmod = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    let refused: Vec<(&str, FsResult<()>)> = vec![
        ("write", fs.write(small, 0, b"x").map(drop)),
        (
            "create",
            fs.create_node(ROOT, b"c", &file, Caller::ROOT).map(drop),
        ),
        ("unlink", fs.unlink(ROOT, b"small")),
        ("rmdir", fs.rmdir(ROOT, b"dir")),
        ("rename", fs.rename(ROOT, b"small", dir, b"moved", 0)),
        ("link", fs.link(small, dir, b"small-link").map(drop)),
        ("setattr", fs.setattr(small, &chmod).map(drop)),
        (
            "open with O_TRUNC",
            fs.open(small, true, true, Caller::ROOT).map(drop),
        ),
        ("setxattr", fs.setxattr(small, b"user.x", b"y", 0)),
        ("removexattr", fs.removexattr(dir, b"user.none")),
        ("fallocate", fs.fallocate(small, 0, 8192, 0, Caller::ROOT)),
        ("fsync", fs.fsync()),
        ("shutdown", fs.shutdown()),
    ];
    for (what, result) in refused {
        let err = result.expect_err(what);
        assert!(matches!(err, FsError::ReadOnly), "{what}: {err}");
        assert_eq!(err.errno(), libc::EROFS, "{what}");
    }
    assert_same_tree(&tree(fs), committed, "reads after refused changes");
}

/// The log holds exactly one error that says the pool went read-only, naming `device`.
fn assert_logged_once(log: &str, device: &str) {
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("ERROR") && line.contains("read-only"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains(device), "the cause is not logged: {log}");
}

/// Drops the filesystem, clears the faults (and, with `cut`, loses every unflushed write),
/// checks the pool with data checksums and remounts it; it must hold `committed` and take
/// changes again.
fn remount_and_check(
    pool: &TestPool,
    fs: std::sync::Arc<Filesystem>,
    cut: bool,
    committed: &BTreeMap<String, Node>,
) {
    pool.clear_faults();
    if cut {
        pool.crash(fs, CutMode::DropAll);
    } else {
        drop(fs);
    }
    pool.assert_fsck_clean("after the failure");
    let fs = pool.open();
    assert_same_tree(&tree(&fs), committed, "after remount");
    // Writable again, and new data does not land on committed blocks.
    let after = create_file(&fs, ROOT, "after");
    fs.write(after, 0, &pattern(6, 3 * MIB as usize)).unwrap();
    fs.fsync().unwrap();
    let mut now = tree(&fs);
    assert_eq!(
        now.remove("/after").unwrap().content,
        pattern(6, 3 * MIB as usize)
    );
    assert_same_tree(&now, committed, "after new writes");
    drop(fs);
    pool.assert_fsck_clean("after new writes");
}

fn write_errors(range: std::ops::Range<u64>) -> FaultPlan {
    FaultPlan {
        write_error_ranges: vec![range],
        ..FaultPlan::default()
    }
}

#[test]
fn data_write_eio_on_the_fast_tier_fails_fsync_and_makes_the_pool_read_only() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let committed = commit_a_tree(&fs);
    change_the_tree(&fs);
    pool.fast.set_plan(write_errors(pool.data_area(true)));
    let (err, log) = capture_logs(|| {
        let err = fs.fsync().unwrap_err();
        assert_read_only(&fs, &committed);
        // No retry once the device works again: nothing of the failed group may be committed.
        pool.clear_faults();
        assert_read_only(&fs, &committed);
        err
    });
    assert!(matches!(err, FsError::DeviceWrite(_)), "{err}");
    assert_eq!(err.errno(), libc::EIO);
    assert_logged_once(&log, "faulty:fast");
    remount_and_check(&pool, fs, false, &committed);
}

#[test]
fn data_write_eio_on_the_slow_tier_fails_the_write_that_meets_it() {
    // The fast tier's data area is about 48 MiB, so a large file overflows to the slow tier;
    // the first write that fills the staging buffer (16 MiB) after that writes it out and
    // meets the fault.
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let committed = commit_a_tree(&fs);
    change_the_tree(&fs);
    pool.slow.set_plan(write_errors(pool.data_area(false)));
    let huge = create_file(&fs, ROOT, "huge");
    let chunk = pattern(7, MIB as usize);
    let (err, log) = capture_logs(|| {
        let mut at = 0;
        let err = loop {
            match fs.write(huge, at, &chunk) {
                Ok(_) => at += MIB,
                Err(err) => break err,
            }
            assert!(at <= 80 * MIB, "no write met the fault");
        };
        assert!(at >= 40 * MIB, "failed before the fast tier filled: {err}");
        assert_read_only(&fs, &committed);
        err
    });
    assert!(matches!(err, FsError::DeviceWrite(_)), "{err}");
    assert_eq!(err.errno(), libc::EIO);
    assert_logged_once(&log, "faulty:slow");
    remount_and_check(&pool, fs, true, &committed);
}

#[test]
fn data_write_eio_in_a_flush_a_write_forces_fails_that_write() {
    // Small staged files reserve whole 128 KiB blocks; once the reservations run out, the next
    // write writes the staged blocks out first to free them, and meets the fault.
    let pool = TestPool::new(64, 96);
    let fs = pool.open();
    let committed = commit_a_tree(&fs);
    pool.fast.set_plan(write_errors(pool.data_area(true)));
    let file = NewNode::new(FileKind::Regular, 0o644);
    let (err, log) = capture_logs(|| {
        let mut created = 0;
        let err = loop {
            let name = format!("small-{created}");
            let attr = fs
                .create_node(ROOT, name.as_bytes(), &file, Caller::ROOT)
                .unwrap();
            if let Err(err) = fs.write(attr.ino, 0, &pattern(created, 1024)) {
                break err;
            }
            created += 1;
            assert!(created < 2000, "no write met the fault");
        };
        assert!(
            created > 500,
            "failed before the reservations ran out: {err}"
        );
        assert_read_only(&fs, &committed);
        err
    });
    assert!(matches!(err, FsError::DeviceWrite(_)), "{err}");
    assert_eq!(err.errno(), libc::EIO);
    assert_logged_once(&log, "faulty:fast");
    remount_and_check(&pool, fs, false, &committed);
}

/// A commit whose metadata writes fail on one member of the mirror.
fn metadata_write_error(fast: bool) {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let committed = commit_a_tree(&fs);
    change_the_tree(&fs);
    pool.member(fast)
        .set_plan(write_errors(pool.metadata_region(fast)));
    let (err, log) = capture_logs(|| {
        let err = fs.fsync().unwrap_err();
        assert_read_only(&fs, &committed);
        err
    });
    assert!(matches!(err, FsError::Meta(_)), "{err}");
    assert_eq!(err.errno(), libc::EIO);
    assert_logged_once(&log, if fast { "faulty:fast" } else { "faulty:slow" });
    remount_and_check(&pool, fs, fast, &committed);
}

#[test]
fn metadata_write_eio_on_the_fast_copy_fails_the_commit_and_keeps_the_last_one() {
    metadata_write_error(true);
}

#[test]
fn metadata_write_eio_on_the_slow_copy_fails_the_commit_and_keeps_the_last_one() {
    metadata_write_error(false);
}

/// A commit whose device flushes fail on one member.
fn flush_error(fast: bool) {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let committed = commit_a_tree(&fs);
    change_the_tree(&fs);
    pool.member(fast).set_plan(FaultPlan {
        fail_every_flush: true,
        ..FaultPlan::default()
    });
    let (err, log) = capture_logs(|| {
        let err = fs.fsync().unwrap_err();
        assert_read_only(&fs, &committed);
        err
    });
    assert!(matches!(err, FsError::DeviceWrite(_)), "{err}");
    assert_eq!(err.errno(), libc::EIO);
    assert_logged_once(&log, if fast { "faulty:fast" } else { "faulty:slow" });
    remount_and_check(&pool, fs, !fast, &committed);
}

#[test]
fn flush_eio_on_the_fast_member_fails_the_commit_and_keeps_the_last_one() {
    flush_error(true);
}

#[test]
fn flush_eio_on_the_slow_member_fails_the_commit_and_keeps_the_last_one() {
    flush_error(false);
}

/// Fails the `n`th write or flush of one member during a commit, for every `n` the commit
/// reaches. Whatever the failure hits (a data block, a metadata page, a checksum table, a
/// header, a flush), the read-only view and the remounted pool hold one whole commit (the last
/// one, or the failed one if it became durable after all), every block they reference holds
/// what was written to it (fsck verifies the checksums), and nothing is committed after the
/// failure.
#[test]
fn a_write_or_flush_failing_anywhere_in_a_commit_leaves_one_whole_commit() {
    for fast in [true, false] {
        for flush in [false, true] {
            let mut failures = 0;
            for n in 1.. {
                let context = format!(
                    "{} {} {n}",
                    if fast { "fast" } else { "slow" },
                    if flush { "flush" } else { "write" }
                );
                let pool = TestPool::new(64, 128);
                let fs = pool.open();
                let committed = commit_a_tree(&fs);
                let changed = change_the_tree(&fs);
                pool.member(fast).set_plan(FaultPlan {
                    fail_nth_write: (!flush).then_some(n),
                    fail_nth_flush: flush.then_some(n),
                    ..FaultPlan::default()
                });
                let err = match fs.fsync() {
                    Ok(()) => break,
                    Err(err) => err,
                };
                failures += 1;
                assert_eq!(err.errno(), libc::EIO, "{context}: {err}");
                assert!(fs.is_read_only(), "{context}");
                let seen = tree(&fs);
                assert!(
                    seen == committed || seen == changed,
                    "{context}: the read-only view mixes two commits"
                );
                pool.clear_faults();
                assert!(matches!(fs.fsync(), Err(FsError::ReadOnly)), "{context}");
                // Every other run also loses the writes that were never flushed.
                let cut = n.is_multiple_of(2);
                if cut {
                    pool.crash(fs, CutMode::DropAll);
                } else {
                    drop(fs);
                }
                pool.assert_fsck_clean(&context);
                let fs = pool.open();
                let after = tree(&fs);
                assert!(
                    after == committed || after == changed,
                    "{context}: the remounted pool mixes two commits"
                );
                if !cut {
                    assert!(
                        after == seen,
                        "{context}: the remount differs from the read-only view"
                    );
                }
            }
            let least = if flush { 2 } else { 10 };
            assert!(failures >= least, "only {failures} failure points");
        }
    }
}

#[test]
fn an_internal_error_makes_the_pool_read_only_the_same_way() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let committed = commit_a_tree(&fs);
    change_the_tree(&fs);
    let ((), log) = capture_logs(|| {
        fs.set_read_only("a test says so");
        fs.set_read_only("a second time");
        assert_read_only(&fs, &committed);
    });
    assert_logged_once(&log, "a test says so");
    remount_and_check(&pool, fs, false, &committed);
}
