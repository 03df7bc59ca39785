//! Snapshot operations whose commit fails, as when the power goes or a device stops taking
//! writes in the middle: the pool turns read-only and serves the last commit, and that view
//! holds the snapshots of the last commit too (not those of the failed operation), as the
//! remounted pool does. The crash harness finds the same through random workloads; these
//! name each case.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{create_file, mkdir, pattern, tree, tree_at, Node, TestPool};
use fs_core::device::FaultPlan;
use fs_core::fs::Filesystem;
use fs_core::types::InodeId;

const ROOT: InodeId = InodeId::ROOT;

fn snapshot_root(fs: &Filesystem, name: &str) -> InodeId {
    let dir = fs.lookup(ROOT, b".snapshots").unwrap().ino;
    fs.lookup(dir, name.as_bytes()).unwrap().ino
}

/// The snapshots by name, oldest first, with their trees.
fn snapshots(fs: &Filesystem) -> Vec<(String, BTreeMap<String, Node>)> {
    fs.snapshots()
        .unwrap()
        .into_iter()
        .map(|s| {
            let tree = tree_at(fs, snapshot_root(fs, &s.name));
            (s.name, tree)
        })
        .collect()
}

/// Checks the live tree, the names of the snapshots and their trees (without printing
/// whole trees).
fn assert_same(
    fs: &Filesystem,
    live: &BTreeMap<String, Node>,
    snapped: &[(String, BTreeMap<String, Node>)],
    context: &str,
) {
    let names = |s: &[(String, BTreeMap<String, Node>)]| -> Vec<String> {
        s.iter().map(|(n, _)| n.clone()).collect()
    };
    let seen = snapshots(fs);
    assert_eq!(names(&seen), names(snapped), "{context}: the snapshots");
    for ((name, tree), (_, expected)) in seen.iter().zip(snapped) {
        assert!(tree == expected, "{context}: snapshot {name} differs");
    }
    assert!(tree(fs) == *live, "{context}: the live tree differs");
}

/// Writes file `name` in the root (replacing its content) and a directory next to it.
fn change(fs: &Filesystem, name: &str, seed: u64) {
    let ino = fs
        .lookup(ROOT, name.as_bytes())
        .map_or_else(|_| create_file(fs, ROOT, name), |attr| attr.ino);
    fs.write(ino, 0, &pattern(seed, 100_000)).unwrap();
    mkdir(fs, ROOT, &format!("dir-{seed}"));
}

/// Runs `op` with every flush of the fast member failing, so the commit it makes fails
/// before any of it is written; then checks that the read-only view and the remounted pool
/// both hold the last commit: `live` and `snapped`.
fn fails_and_keeps_the_last_commit(
    pool: &TestPool,
    fs: std::sync::Arc<Filesystem>,
    op: impl FnOnce(&Filesystem) -> fs_core::FsResult<()>,
    what: &str,
) {
    let live = tree(&fs);
    let snapped = snapshots(&fs);
    // What the last commit holds: the changes since are lost with the failed commit.
    fs.commit().unwrap();
    change(&fs, "late", 99);
    pool.fast.set_plan(FaultPlan {
        fail_every_flush: true,
        ..FaultPlan::default()
    });
    assert!(op(&fs).is_err(), "{what} succeeded");
    assert!(fs.is_read_only(), "{what}");
    assert_same(&fs, &live, &snapped, &format!("{what}: the read-only view"));
    pool.clear_faults();
    drop(fs);
    pool.assert_fsck_clean(what);
    let fs = pool.open();
    assert_same(&fs, &live, &snapped, &format!("{what}: the remounted pool"));
}

#[test]
fn a_failed_create_leaves_no_snapshot_behind() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    change(&fs, "a", 1);
    fs.snapshot_create("old").unwrap();
    change(&fs, "a", 2);
    fails_and_keeps_the_last_commit(
        &pool,
        fs,
        |fs| fs.snapshot_create("new").map(drop),
        "create",
    );
}

#[test]
fn a_failed_delete_keeps_the_snapshot() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    change(&fs, "a", 1);
    fs.snapshot_create("doomed").unwrap();
    change(&fs, "a", 2);
    fails_and_keeps_the_last_commit(
        &pool,
        fs,
        |fs| fs.snapshot_delete("doomed").map(drop),
        "delete",
    );
}

#[test]
fn a_failed_rollback_keeps_the_tree_and_the_newer_snapshots() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    change(&fs, "a", 1);
    fs.snapshot_create("base").unwrap();
    change(&fs, "a", 2);
    fs.snapshot_create("newer").unwrap();
    change(&fs, "a", 3);
    fails_and_keeps_the_last_commit(
        &pool,
        fs,
        |fs| fs.snapshot_rollback("base", true).map(drop),
        "rollback",
    );
}

/// A file unlinked while open is an orphan, freed at its last close or, after a power cut, by
/// the next mount. A snapshot that saw it linked keeps it whole either way.
#[test]
fn an_orphan_reclaimed_after_a_cut_stays_in_the_snapshot_that_saw_it() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    change(&fs, "a", 1);
    let a = fs.lookup(ROOT, b"a").unwrap().ino;
    fs.setxattr(a, b"user.k", b"v", 0).unwrap();
    fs.snapshot_create("s").unwrap();
    let snapped = snapshots(&fs);
    fs.open(a, true, false, fs_core::fs::Caller::ROOT).unwrap();
    fs.unlink(ROOT, b"a").unwrap();
    fs.write(a, 50_000, &pattern(7, 200_000)).unwrap();
    fs.fsync().unwrap();
    let live = tree(&fs);
    pool.crash(fs, fs_core::device::CutMode::DropAll);
    pool.assert_fsck_clean("after the cut");
    let fs = pool.open();
    assert_same(&fs, &live, &snapped, "after the orphan was reclaimed");
    fs.commit().unwrap();
    drop(fs);
    pool.assert_fsck_clean("after the reclaim was committed");
    let fs = pool.open();
    assert_same(&fs, &live, &snapped, "remounted");
    fs.snapshot_delete("s").unwrap();
    drop(fs);
    pool.assert_fsck_clean("after deleting the snapshot");
}
