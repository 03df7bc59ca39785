//! Snapshots on in-memory pools: old versions through `/.snapshots`, read-only enforcement,
//! rollback, delete and space accounting, diff, and many snapshots of a changing tree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{create_file, mkdir, pattern, read_all, tree, tree_at, Node, TestPool, MIB};
use fs_core::fs::props::Property;
use fs_core::fs::snapshot::ChangeKind;
use fs_core::fs::{Caller, Filesystem, NewNode, SetAttr};
use fs_core::meta::records::FileKind;
use fs_core::types::InodeId;
use fs_core::FsError;

const ROOT: InodeId = InodeId::ROOT;

/// The root directory of snapshot `name`, found the way a user finds it.
fn snapshot_root(fs: &Filesystem, name: &str) -> InodeId {
    let dir = fs.lookup(ROOT, b".snapshots").unwrap().ino;
    fs.lookup(dir, name.as_bytes()).unwrap().ino
}

fn write_file(fs: &Filesystem, parent: InodeId, name: &str, content: &[u8]) -> InodeId {
    let ino = match fs.lookup(parent, name.as_bytes()) {
        Ok(attr) => attr.ino,
        Err(_) => create_file(fs, parent, name),
    };
    fs.setattr(
        ino,
        &SetAttr {
            size: Some(0),
            ..SetAttr::default()
        },
    )
    .unwrap();
    fs.write(ino, 0, content).unwrap();
    ino
}

/// A tree with every kind of thing a snapshot must keep.
fn populate(fs: &Filesystem) {
    let docs = mkdir(fs, ROOT, "docs");
    write_file(fs, docs, "big", &pattern(1, 3 * MIB as usize + 1234));
    write_file(fs, docs, "tiny", b"inline bytes");
    let nested = mkdir(fs, docs, "nested");
    let keep = write_file(fs, nested, "keep", &pattern(2, 300_000));
    fs.link(keep, ROOT, b"hardlink").unwrap();
    fs.create_node(
        ROOT,
        b"link",
        &NewNode {
            target: Some(b"docs/big"),
            ..NewNode::new(FileKind::Symlink, 0o777)
        },
        Caller::ROOT,
    )
    .unwrap();
    fs.setxattr(keep, b"user.colour", b"blue", 0).unwrap();
    mkdir(fs, ROOT, "empty");
}

/// Changes every kind of thing `populate` made.
fn churn(fs: &Filesystem) {
    let docs = fs.lookup(ROOT, b"docs").unwrap().ino;
    let big = fs.lookup(docs, b"big").unwrap().ino;
    fs.write(big, 1000, &pattern(9, 200_000)).unwrap();
    fs.write(big, 5 * MIB, b"grown").unwrap();
    write_file(fs, docs, "tiny", b"changed");
    let nested = fs.lookup(docs, b"nested").unwrap().ino;
    let keep = fs.lookup(nested, b"keep").unwrap().ino;
    fs.setxattr(keep, b"user.colour", b"red", 0).unwrap();
    fs.setxattr(keep, b"user.new", b"x", 0).unwrap();
    fs.setattr(
        keep,
        &SetAttr {
            mode: Some(0o600),
            ..SetAttr::default()
        },
    )
    .unwrap();
    fs.rename(nested, b"keep", ROOT, b"moved", 0).unwrap();
    fs.unlink(ROOT, b"hardlink").unwrap();
    fs.unlink(ROOT, b"link").unwrap();
    fs.rmdir(ROOT, b"empty").unwrap();
    write_file(fs, ROOT, "new", &pattern(3, 100_000));
    mkdir(fs, nested, "newdir");
}

#[test]
fn a_snapshot_keeps_every_file_as_it_was() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    populate(&fs);
    let before = tree(&fs);
    let info = fs.snapshot_create("before").unwrap();
    assert_eq!(info.name, "before");
    churn(&fs);
    let after = tree(&fs);
    assert_ne!(before, after);
    assert_eq!(tree_at(&fs, snapshot_root(&fs, "before")), before);
    assert_eq!(tree(&fs), after);
    // Across a remount, and after the changes are committed.
    fs.commit().unwrap();
    drop(fs);
    let fs = pool.open();
    assert_eq!(tree_at(&fs, snapshot_root(&fs, "before")), before);
    assert_eq!(tree(&fs), after);
    // A snapshot's files have inode numbers of their own, and `..` leads back out.
    let snap = snapshot_root(&fs, "before");
    let docs = fs.lookup(snap, b"docs").unwrap().ino;
    assert_ne!(docs, fs.lookup(ROOT, b"docs").unwrap().ino);
    assert_eq!(fs.lookup(docs, b"..").unwrap().ino, snap);
    let snapdir = fs.lookup(snap, b"..").unwrap().ino;
    assert_eq!(snapdir, InodeId::SNAPSHOT_DIR);
    assert_eq!(fs.lookup(snapdir, b"..").unwrap().ino, ROOT);
    drop(fs);
    pool.assert_fsck_clean("after churn under a snapshot");
}

#[test]
fn snapshots_are_read_only_and_the_directory_is_protected() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    populate(&fs);
    fs.snapshot_create("s").unwrap();
    let snap = snapshot_root(&fs, "s");
    let docs = fs.lookup(snap, b"docs").unwrap().ino;
    let big = fs.lookup(docs, b"big").unwrap().ino;
    let rofs = |result: Result<(), FsError>, what: &str| {
        assert!(
            matches!(result, Err(FsError::SnapshotReadOnly)),
            "{what}: {result:?}"
        );
    };
    let new = NewNode::new(FileKind::Regular, 0o644);
    rofs(fs.write(big, 0, b"x").map(drop), "write");
    rofs(
        fs.setattr(
            big,
            &SetAttr {
                size: Some(0),
                ..SetAttr::default()
            },
        )
        .map(drop),
        "truncate",
    );
    rofs(
        fs.open(big, true, false, Caller::ROOT).map(drop),
        "open for writing",
    );
    rofs(
        fs.open(big, false, true, Caller::ROOT).map(drop),
        "open with O_TRUNC",
    );
    rofs(
        fs.create_node(docs, b"f", &new, Caller::ROOT).map(drop),
        "create",
    );
    rofs(fs.unlink(docs, b"big"), "unlink");
    rofs(fs.rmdir(snap, b"empty"), "rmdir");
    rofs(fs.rename(docs, b"big", docs, b"other", 0), "rename");
    rofs(fs.rename(ROOT, b"docs", docs, b"x", 0), "rename into");
    rofs(fs.link(big, ROOT, b"l").map(drop), "link out");
    rofs(fs.setxattr(big, b"user.a", b"b", 0), "setxattr");
    rofs(fs.removexattr(big, b"user.a"), "removexattr");
    rofs(fs.fallocate(big, 0, 10, 0, Caller::ROOT), "fallocate");
    rofs(
        fs.create_node(InodeId::SNAPSHOT_DIR, b"x", &new, Caller::ROOT)
            .map(drop),
        "create in /.snapshots",
    );
    rofs(fs.set_property(docs, Property::Copies(2)), "set a property");
    assert!(
        fs.open(big, false, false, Caller::ROOT).is_ok(),
        "reading is allowed"
    );
    fs.release(big).unwrap();

    // `/.snapshots` cannot be made, removed or renamed, and is hidden unless asked for.
    let dot = |result: Result<(), FsError>, what: &str| {
        assert!(
            matches!(result, Err(FsError::Exists | FsError::Busy(_))),
            "{what}: {result:?}"
        );
    };
    dot(
        fs.create_node(ROOT, b".snapshots", &new, Caller::ROOT)
            .map(drop),
        "create",
    );
    dot(fs.rmdir(ROOT, b".snapshots"), "rmdir");
    dot(fs.unlink(ROOT, b".snapshots"), "unlink");
    dot(fs.rename(ROOT, b".snapshots", ROOT, b"x", 0), "rename from");
    dot(
        fs.rename(ROOT, b"docs", ROOT, b".snapshots", 0),
        "rename onto",
    );
    let listed = |fs: &Filesystem| {
        fs.readdir(ROOT, 0, usize::MAX)
            .unwrap()
            .iter()
            .any(|e| e.name == b".snapshots")
    };
    assert!(!listed(&fs));
    assert!(matches!(
        fs.set_property(
            fs.lookup(ROOT, b"docs").unwrap().ino,
            Property::Snapdir(true)
        ),
        Err(FsError::BadProperty(_))
    ));
    fs.set_property(ROOT, Property::Snapdir(true)).unwrap();
    assert!(listed(&fs));
    // A listing resumed from any cookie neither loses nor repeats `.snapshots`.
    let entries = fs.readdir(ROOT, 0, usize::MAX).unwrap();
    for split in 1..entries.len() {
        let first = fs.readdir(ROOT, 0, split).unwrap();
        let rest = fs
            .readdir(ROOT, first.last().unwrap().cookie, usize::MAX)
            .unwrap();
        let names: Vec<_> = first.iter().chain(&rest).map(|e| e.name.clone()).collect();
        let expected: Vec<_> = entries.iter().map(|e| e.name.clone()).collect();
        assert_eq!(names, expected, "split at {split}");
    }
    let listing: Vec<_> = fs
        .readdir(InodeId::SNAPSHOT_DIR, 0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(listing, [&b"."[..], b"..", b"s"]);
}

#[test]
fn snapshot_names_are_checked() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let long = "n".repeat(256);
    for bad in ["", ".", "..", "a/b", "tab\there", long.as_str()] {
        assert!(
            matches!(fs.snapshot_create(bad), Err(FsError::BadSnapshot(_))),
            "{bad:?}"
        );
    }
    fs.snapshot_create("ok-1.2_x y").unwrap();
    assert!(matches!(
        fs.snapshot_create("ok-1.2_x y"),
        Err(FsError::Conflict(message)) if message.contains("exists")
    ));
    assert!(matches!(
        fs.snapshot_delete("missing"),
        Err(FsError::NoSnapshot(name)) if name == "missing"
    ));
    assert_eq!(fs.snapshots().unwrap().len(), 1);
}

#[test]
fn rollback_restores_the_tree_exactly() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    populate(&fs);
    let snapped = tree(&fs);
    fs.commit().unwrap();
    let free_before = fs.space().free_sectors;
    fs.snapshot_create("base").unwrap();
    churn(&fs);
    fs.snapshot_create("later").unwrap();
    write_file(&fs, ROOT, "newest", b"after later");
    let refused = fs.snapshot_rollback("base", false);
    assert!(
        matches!(&refused, Err(FsError::Conflict(m)) if m.contains("later")),
        "{refused:?}"
    );
    let newest = fs.lookup(ROOT, b"newest").unwrap().ino;
    fs.open(newest, false, false, Caller::ROOT).unwrap();
    assert!(matches!(
        fs.snapshot_rollback("base", true),
        Err(FsError::Conflict(m)) if m.contains("open")
    ));
    fs.release(newest).unwrap();
    let report = fs.snapshot_rollback("base", true).unwrap();
    assert_eq!(report.destroyed, ["later"]);
    assert_eq!(tree(&fs), snapped);
    let names: Vec<_> = fs
        .snapshots()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["base"]);
    // Everything written since was released (the snapshot still holds the original).
    fs.commit().unwrap();
    assert_eq!(fs.space().free_sectors, free_before);
    // The pool keeps working: change, snapshot and roll back again.
    churn(&fs);
    fs.snapshot_rollback("base", false).unwrap();
    assert_eq!(tree(&fs), snapped);
    drop(fs);
    let fs = pool.open();
    assert_eq!(tree(&fs), snapped);
    assert_eq!(tree_at(&fs, snapshot_root(&fs, "base")), snapped);
    drop(fs);
    pool.assert_fsck_clean("after rollbacks");
}

#[test]
fn delete_releases_only_what_the_snapshot_alone_held() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let a = write_file(&fs, ROOT, "a", &pattern(1, 8 * MIB as usize));
    let b = write_file(&fs, ROOT, "b", &pattern(2, 4 * MIB as usize));
    fs.commit().unwrap();
    let empty = fs.space().free_sectors + 12 * MIB / 4096;
    let first = fs.snapshot_create("first").unwrap();
    assert_eq!(first.referenced, 12 * MIB);
    // `a` is replaced: its old blocks are now held by "first" alone.
    write_file(&fs, ROOT, "a", &pattern(3, 8 * MIB as usize));
    fs.commit().unwrap();
    fs.snapshot_create("second").unwrap();
    // `b` is deleted: its blocks are held by both snapshots.
    fs.unlink(ROOT, b"b").unwrap();
    fs.commit().unwrap();
    let _ = (a, b);
    let by_name = |fs: &Filesystem| -> BTreeMap<String, (u64, u64)> {
        fs.snapshots()
            .unwrap()
            .into_iter()
            .map(|s| (s.name, (s.referenced, s.unique)))
            .collect()
    };
    let listed = by_name(&fs);
    assert_eq!(listed["first"], (12 * MIB, 8 * MIB));
    assert_eq!(listed["second"], (12 * MIB, 0));
    assert_eq!(fs.snapshot_bytes().unwrap(), 12 * MIB);
    // Held space: live `a` (8 MiB) + old `a` + `b`.
    assert_eq!(fs.space().free_sectors, empty - 20 * MIB / 4096);

    assert_eq!(fs.snapshot_delete("first").unwrap(), 8 * MIB);
    assert_eq!(fs.space().free_sectors, empty - 12 * MIB / 4096);
    // `b` is now held by "second" alone.
    assert_eq!(by_name(&fs)["second"], (12 * MIB, 4 * MIB));
    assert_eq!(
        read_all(
            &fs,
            fs.lookup(snapshot_root(&fs, "second"), b"b").unwrap().ino
        ),
        pattern(2, 4 * MIB as usize)
    );
    assert_eq!(fs.snapshot_delete("second").unwrap(), 4 * MIB);
    assert_eq!(fs.space().free_sectors, empty - 8 * MIB / 4096);
    assert_eq!(fs.snapshot_bytes().unwrap(), 0);
    drop(fs);
    pool.assert_fsck_clean("after deleting every snapshot");
}

#[test]
fn diff_names_added_deleted_modified_and_renamed_paths() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    populate(&fs);
    fs.snapshot_create("old").unwrap();
    churn(&fs);
    let changes: Vec<(char, String, Option<String>)> = fs
        .snapshot_diff("old", None)
        .unwrap()
        .into_iter()
        .map(|c| (c.kind.symbol(), c.path, c.renamed_to))
        .collect();
    let has = |kind: ChangeKind, path: &str| {
        changes
            .iter()
            .any(|(k, p, _)| *k == kind.symbol() && p == path)
    };
    assert!(has(ChangeKind::Modified, "/docs/big"), "{changes:?}");
    assert!(has(ChangeKind::Modified, "/docs/tiny"), "{changes:?}");
    assert!(has(ChangeKind::Deleted, "/link"), "{changes:?}");
    assert!(has(ChangeKind::Deleted, "/empty"), "{changes:?}");
    assert!(has(ChangeKind::Added, "/new"), "{changes:?}");
    assert!(has(ChangeKind::Added, "/docs/nested/newdir"), "{changes:?}");
    // `keep` had two names and now has one: one of them was renamed, the other removed.
    let renamed: Vec<_> = changes.iter().filter(|(k, _, _)| *k == 'R').collect();
    assert_eq!(renamed.len(), 1, "{changes:?}");
    assert_eq!(renamed[0].2.as_deref(), Some("/moved"));
    assert!(
        ["/docs/nested/keep", "/hardlink"].contains(&renamed[0].1.as_str()),
        "{changes:?}"
    );
    assert!(
        has(ChangeKind::Deleted, "/docs/nested/keep") != has(ChangeKind::Deleted, "/hardlink"),
        "{changes:?}"
    );
    // Unchanged paths are not listed; a snapshot compared with itself has no changes.
    assert!(!changes.iter().any(|(_, p, _)| p == "/docs"), "{changes:?}");
    fs.snapshot_create("new").unwrap();
    assert!(fs.snapshot_diff("new", None).unwrap().is_empty());
    assert_eq!(
        fs.snapshot_diff("old", Some("new")).unwrap(),
        fs.snapshot_diff("old", None).unwrap()
    );
}

/// A small deterministic generator for the many-snapshots test.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[test]
fn many_snapshots_of_a_changing_tree_each_stay_exact() {
    let pool = TestPool::new(128, 256);
    let fs = pool.open();
    let dirs = [ROOT, mkdir(&fs, ROOT, "a"), mkdir(&fs, ROOT, "b")];
    let mut rng = Rng(0x5eed);
    let mut expected: Vec<(String, BTreeMap<String, Node>)> = Vec::new();
    for round in 0..120 {
        for _ in 0..6 {
            let dir = dirs[rng.next(3) as usize];
            let name = format!("f{}", rng.next(12));
            match rng.next(5) {
                0 | 1 => {
                    let len = rng.next(300_000) as usize;
                    write_file(&fs, dir, &name, &pattern(rng.next(1000), len));
                }
                2 => {
                    if let Ok(attr) = fs.lookup(dir, name.as_bytes()) {
                        let at = rng.next(200_000);
                        fs.write(attr.ino, at, &pattern(round, 5000)).unwrap();
                    }
                }
                3 => {
                    let _ = fs.unlink(dir, name.as_bytes());
                }
                _ => {
                    let to = dirs[rng.next(3) as usize];
                    let _ = fs.rename(dir, name.as_bytes(), to, format!("r{round}").as_bytes(), 0);
                }
            }
        }
        let name = format!("snap-{round}");
        fs.snapshot_create(&name).unwrap();
        expected.push((name, tree(&fs)));
    }
    let check = |fs: &Filesystem, expected: &[(String, BTreeMap<String, Node>)], when: &str| {
        for (name, snapped) in expected {
            assert!(
                tree_at(fs, snapshot_root(fs, name)) == *snapped,
                "{when}: snapshot {name} differs"
            );
        }
    };
    check(&fs, &expected, "after taking them");
    // Delete every other one; the rest stay exact, across a remount.
    let mut kept = Vec::new();
    for (i, (name, snapped)) in expected.into_iter().enumerate() {
        if i % 2 == 0 {
            fs.snapshot_delete(&name).unwrap();
        } else {
            kept.push((name, snapped));
        }
    }
    drop(fs);
    let fs = pool.open();
    check(&fs, &kept, "after deleting half and remounting");
    let (name, snapped) = &kept[kept.len() / 2];
    fs.snapshot_rollback(name, true).unwrap();
    assert_eq!(tree(&fs), *snapped);
    let survivors = kept.len() / 2 + 1;
    check(&fs, &kept[..survivors], "after rolling back");
    drop(fs);
    pool.assert_fsck_clean("after many snapshots");
}
