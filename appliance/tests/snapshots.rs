//! Snapshots end to end: `aegis snapshot` against a real mount, old versions read through
//! `<mount>/.snapshots/<name>/`, read-only enforcement by errno, rollback checked by a
//! whole-tree hash (with the kernel's caches warm), and space released by delete.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{pattern, MountGuard, Sandbox};

/// Every path under `root` with its type, mode and content (or link target).
fn tree(root: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            let content = if meta.is_dir() {
                pending.push(path.clone());
                Vec::new()
            } else if meta.file_type().is_symlink() {
                fs::read_link(&path)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                fs::read(&path).unwrap()
            };
            out.insert(relative, (meta.mode(), content));
        }
    }
    out
}

/// One hash over the whole tree.
fn tree_hash(root: &Path) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    tree(root).hash(&mut hasher);
    hasher.finish()
}

fn populate(mnt: &MountGuard<'_>) {
    fs::create_dir_all(mnt.path("docs/deep")).unwrap();
    fs::write(mnt.path("docs/report.txt"), b"version 1\n").unwrap();
    fs::write(mnt.path("docs/deep/data.bin"), pattern(1, 3 << 20)).unwrap();
    fs::write(mnt.path("photo.raw"), pattern(2, 1 << 20)).unwrap();
    std::os::unix::fs::symlink("docs/report.txt", mnt.path("latest")).unwrap();
    fs::set_permissions(mnt.path("photo.raw"), fs::Permissions::from_mode(0o600)).unwrap();
}

fn churn(mnt: &MountGuard<'_>) {
    fs::write(mnt.path("docs/report.txt"), b"version 2, longer\n").unwrap();
    fs::rename(mnt.path("docs/deep/data.bin"), mnt.path("moved.bin")).unwrap();
    fs::remove_file(mnt.path("photo.raw")).unwrap();
    fs::remove_file(mnt.path("latest")).unwrap();
    fs::write(mnt.path("new.txt"), b"brand new").unwrap();
    fs::create_dir(mnt.path("newdir")).unwrap();
}

fn errno(result: std::io::Result<impl Sized>) -> i32 {
    result.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

fn free_bytes(sb: &Sandbox, mnt: &MountGuard<'_>) -> u64 {
    let status: serde_json::Value =
        serde_json::from_str(&sb.ok(&["status", mnt.mountpoint.to_str().unwrap(), "--json"]))
            .unwrap();
    status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["free_bytes"].as_u64().unwrap())
        .sum()
}

#[test]
fn snapshots_keep_old_versions_and_refuse_writes() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("1G", "2G");
    let mnt = sb.mount(&fast, &slow);
    let target = mnt.mountpoint.to_str().unwrap().to_owned();
    populate(&mnt);
    let before = tree(&mnt.mountpoint);
    let out = sb.ok(&["snapshot", "create", &target, "before-upgrade"]);
    assert!(out.contains(".snapshots/before-upgrade"), "{out}");
    churn(&mnt);
    let snap = mnt.path(".snapshots/before-upgrade");
    assert_eq!(tree(&snap), before);
    assert_eq!(
        fs::read(snap.join("docs/report.txt")).unwrap(),
        b"version 1\n"
    );
    assert_eq!(
        fs::read(mnt.path("docs/report.txt")).unwrap(),
        b"version 2, longer\n"
    );

    // Every write into a snapshot fails with EROFS.
    assert_eq!(
        errno(fs::write(snap.join("docs/report.txt"), b"x")),
        libc::EROFS
    );
    assert_eq!(errno(fs::write(snap.join("created"), b"x")), libc::EROFS);
    assert_eq!(errno(fs::remove_file(snap.join("photo.raw"))), libc::EROFS);
    assert_eq!(errno(fs::create_dir(snap.join("d"))), libc::EROFS);
    assert_eq!(
        errno(fs::rename(snap.join("photo.raw"), snap.join("p"))),
        libc::EROFS
    );
    assert_eq!(
        errno(fs::set_permissions(
            snap.join("photo.raw"),
            fs::Permissions::from_mode(0o644)
        )),
        libc::EROFS
    );
    assert_eq!(
        errno(
            fs::OpenOptions::new()
                .append(true)
                .open(snap.join("photo.raw"))
        ),
        libc::EROFS
    );
    // `.snapshots` itself belongs to the pool, and is hidden unless snapdir=visible.
    assert_eq!(errno(fs::create_dir(mnt.path(".snapshots"))), libc::EEXIST);
    assert_eq!(errno(fs::remove_dir(mnt.path(".snapshots"))), libc::EBUSY);
    assert_eq!(
        errno(fs::rename(mnt.path(".snapshots"), mnt.path("x"))),
        libc::EBUSY
    );
    let listed = || {
        fs::read_dir(&mnt.mountpoint)
            .unwrap()
            .any(|e| e.unwrap().file_name() == ".snapshots")
    };
    assert!(!listed());
    sb.ok(&["set", &target, "snapdir=visible"]);
    assert!(listed());
    let names: Vec<_> = fs::read_dir(mnt.path(".snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["before-upgrade"]);

    // list and diff.
    let list: serde_json::Value =
        serde_json::from_str(&sb.ok(&["snapshot", "list", &target, "--json"])).unwrap();
    assert_eq!(list[0]["name"], "before-upgrade");
    let referenced = list[0]["referenced_bytes"].as_u64().unwrap();
    assert_eq!(referenced, 4 << 20, "3 MiB + 1 MiB of blocks");
    // photo.raw is gone from the live tree: its 1 MiB is the snapshot's alone.
    assert_eq!(list[0]["unique_bytes"].as_u64().unwrap(), 1 << 20);
    let diff = sb.ok(&["snapshot", "diff", &target, "before-upgrade"]);
    for line in [
        "M\t/docs/report.txt",
        "R\t/docs/deep/data.bin\t/moved.bin",
        "-\t/photo.raw",
        "-\t/latest",
        "+\t/new.txt",
        "+\t/newdir",
    ] {
        assert!(diff.lines().any(|l| l == line), "{line:?} missing:\n{diff}");
    }
    // Bad requests get clear errors.
    let err = sb.fails(&["snapshot", "create", &target, "a/b"]);
    assert!(err.contains("'/'"), "{err}");
    let err = sb.fails(&["snapshot", "create", &target, "before-upgrade"]);
    assert!(err.contains("exists"), "{err}");
    let err = sb.fails(&["snapshot", "delete", &target, "nope"]);
    assert!(err.contains("no snapshot named 'nope'"), "{err}");
    mnt.unmount();
}

#[test]
fn rollback_restores_the_tree_hash_and_delete_releases_space() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("1G", "2G");
    let mnt = sb.mount(&fast, &slow);
    let target = mnt.mountpoint.to_str().unwrap().to_owned();
    populate(&mnt);
    let snapped = tree_hash(&mnt.mountpoint);
    sb.ok(&["snapshot", "create", &target, "good"]);
    churn(&mnt);
    sb.ok(&["snapshot", "create", &target, "bad"]);
    fs::write(mnt.path("docs/report.txt"), b"version 3\n").unwrap();
    assert_ne!(tree_hash(&mnt.mountpoint), snapped);
    assert!(mnt.path(".snapshots/bad/new.txt").exists());
    // The kernel now caches the new contents and names; rollback must make it forget them.
    let err = sb.fails(&["snapshot", "rollback", &target, "good"]);
    assert!(err.contains("bad") && err.contains("--force"), "{err}");
    let out = sb.ok(&["snapshot", "rollback", &target, "good", "--force"]);
    assert!(out.contains("destroyed newer snapshot bad"), "{out}");
    assert_eq!(tree_hash(&mnt.mountpoint), snapped);
    assert_eq!(
        fs::read(mnt.path("docs/report.txt")).unwrap(),
        b"version 1\n"
    );
    assert!(!mnt.path("new.txt").exists());
    assert!(
        !mnt.path(".snapshots/bad").exists(),
        "a destroyed snapshot stays visible"
    );
    let list = sb.ok(&["snapshot", "list", &target]);
    assert!(list.contains("good") && !list.contains("bad"), "{list}");
    // Open files block a rollback.
    let open = fs::File::open(mnt.path("photo.raw")).unwrap();
    let err = sb.fails(&["snapshot", "rollback", &target, "good"]);
    assert!(err.contains("open"), "{err}");
    drop(open);
    mnt.unmount();
    let mnt = sb.mount(&fast, &slow);
    assert_eq!(tree_hash(&mnt.mountpoint), snapped);

    // Delete releases what only the snapshot held.
    fs::write(mnt.path("big"), pattern(5, 32 << 20)).unwrap();
    sb.ok(&["sync", &target]);
    sb.ok(&["snapshot", "create", &target, "with-big"]);
    fs::remove_file(mnt.path("big")).unwrap();
    sb.ok(&["sync", &target]);
    let held = free_bytes(&sb, &mnt);
    assert_eq!(
        fs::read(mnt.path(".snapshots/with-big/big")).unwrap(),
        pattern(5, 32 << 20)
    );
    let out = sb.ok(&["snapshot", "delete", &target, "with-big"]);
    assert!(out.contains("32.0 MiB released"), "{out}");
    assert_eq!(free_bytes(&sb, &mnt), held + (32 << 20));
    let statfs_free = {
        let out = std::process::Command::new("stat")
            .args(["-f", "-c", "%a %S", &target])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().unwrap());
        fields.next().unwrap() * fields.next().unwrap()
    };
    assert_eq!(statfs_free, held + (32 << 20));
    assert!(!mnt.path(".snapshots/with-big").exists());
    mnt.unmount();
}

#[test]
fn a_hundred_snapshots_of_a_changing_tree_each_read_back_exactly() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("1G", "2G");
    let mnt = sb.mount(&fast, &slow);
    let target = mnt.mountpoint.to_str().unwrap().to_owned();
    fs::create_dir(mnt.path("dir")).unwrap();
    let mut hashes = Vec::new();
    for round in 0..100u64 {
        // Each round rewrites one file, appends to another, adds one and removes one.
        fs::write(
            mnt.path(&format!("dir/file-{}", round % 7)),
            pattern(round, 20_000 + round as usize * 100),
        )
        .unwrap();
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(mnt.path("log"))
            .unwrap();
        std::io::Write::write_all(&mut log, format!("round {round}\n").as_bytes()).unwrap();
        drop(log);
        fs::write(mnt.path(&format!("new-{round}")), round.to_string()).unwrap();
        if round >= 3 {
            fs::remove_file(mnt.path(&format!("new-{}", round - 3))).unwrap();
        }
        sb.ok(&["snapshot", "create", &target, &format!("r{round:03}")]);
        hashes.push(tree_hash(&mnt.mountpoint));
    }
    mnt.unmount();
    let mnt = sb.mount(&fast, &slow);
    for (round, hash) in hashes.iter().enumerate() {
        let snap = mnt.path(&format!(".snapshots/r{round:03}"));
        assert_eq!(tree_hash(&snap), *hash, "snapshot r{round:03}");
    }
    let list: serde_json::Value =
        serde_json::from_str(&sb.ok(&["snapshot", "list", &target, "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 100);
    mnt.unmount();
}
