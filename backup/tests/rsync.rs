//! The rsync engine against the real rsync binary and local destinations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};

use backup::{BackupError, Outcome, Progress, Remotes};
use common::*;

#[test]
fn sync_copy_and_exclude() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dest) = (tmp.path().join("src"), tmp.path().join("dest/sync"));
    sample_source(&src);
    let extra = "exclude = [\"*.tmp\", \".cache/\"]";
    let sync = job("rsync", dest.to_str().unwrap(), extra);
    let report = run_ok(&request(sync.clone(), &src, Remotes::default(), 0));
    assert_eq!(tree(&dest, &[]), tree(&src, &["junk.tmp", ".cache"]));
    assert_eq!((report.files, report.bytes), (3, 100_010));
    assert_eq!(report.message, "rsync: 3 files (100010 bytes) transferred");

    let copy_dest = tmp.path().join("dest/copy");
    let copy = job("rsync", copy_dest.to_str().unwrap(), "mode = \"copy\"");
    run_ok(&request(copy.clone(), &src, Remotes::default(), 0));
    assert_eq!(tree(&copy_dest, &[]), tree(&src, &[]));

    std::fs::remove_file(src.join("sub/b.txt")).unwrap();
    run_ok(&request(sync, &src, Remotes::default(), 1));
    assert!(!dest.join("sub/b.txt").exists(), "sync deletes");
    assert_eq!(tree(&dest, &[]), tree(&src, &["junk.tmp", ".cache"]));
    run_ok(&request(copy, &src, Remotes::default(), 1));
    assert_eq!(read(&copy_dest, "sub/b.txt"), b"bravo", "copy keeps");
}

#[test]
fn versions_are_hard_linked_and_pruned() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dest) = (tmp.path().join("src"), tmp.path().join("dest"));
    let job = job("rsync", dest.to_str().unwrap(), "keep_versions = 2");
    write(&src, "same.bin", noise(300_000));
    write(&src, "a.txt", "v1");
    write(&src, "gone.txt", "deleted in run 3");
    let first = run_ok(&request(job.clone(), &src, Remotes::default(), 1));
    assert_eq!(first.version.as_deref(), Some("2026-01-01T00-00-01"));
    write(&src, "a.txt", "version 2!");
    write(&src, "new.txt", "added in run 2");
    run_ok(&request(job.clone(), &src, Remotes::default(), 2));
    write(&src, "a.txt", "version three");
    std::fs::remove_file(src.join("gone.txt")).unwrap();
    let third = run_ok(&request(job.clone(), &src, Remotes::default(), 3));
    assert!(third.message.ends_with("into version 2026-01-01T00-00-03"));

    let (v2, v3) = (
        dest.join("2026-01-01T00-00-02"),
        dest.join("2026-01-01T00-00-03"),
    );
    let mut names: Vec<_> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["2026-01-01T00-00-02", "2026-01-01T00-00-03", "latest"]
    );
    assert_eq!(
        std::fs::read_link(dest.join("latest")).unwrap(),
        std::path::Path::new("2026-01-01T00-00-03")
    );
    let inode = |p: &std::path::Path| std::fs::metadata(p.join("same.bin")).unwrap().ino();
    assert_eq!(inode(&v2), inode(&v3), "unchanged files are hard links");
    assert_eq!(tree(&v3, &[]), tree(&src, &[]));
    assert_eq!(read(&v2, "a.txt"), b"version 2!");
    assert_eq!(read(&v2, "gone.txt"), b"deleted in run 3");
    assert!(!v3.join("gone.txt").exists());

    // Restore a.txt from the older version.
    let restore = tmp.path().join("restore");
    std::fs::create_dir(&restore).unwrap();
    std::fs::copy(v2.join("a.txt"), restore.join("a.txt")).unwrap();
    assert_eq!(read(&restore, "a.txt"), b"version 2!");

    // verify compares against the newest version.
    let verified = backup::verify(&request(job, &src, Remotes::default(), 4)).unwrap();
    assert!(verified.identical, "{verified:?}");
}

#[test]
fn dry_run_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dest) = (tmp.path().join("src"), tmp.path().join("dest"));
    sample_source(&src);
    let job = job("rsync", dest.to_str().unwrap(), "");
    let dry = backup::RunRequest {
        dry_run: true,
        ..request(job.clone(), &src, Remotes::default(), 0)
    };
    let report = run_ok(&dry);
    assert!(!dest.exists(), "a dry run creates nothing");
    for file in ["a.txt", "sub/b.txt", "sub/deep/c.bin", ".cache/x"] {
        let line = format!("copy {file}");
        assert!(report.dry_run_changes.contains(&line), "{report:#?}");
    }

    let req = request(job, &src, Remotes::default(), 0);
    run_ok(&req);
    write(&src, "sub/b.txt", "bravo, changed");
    let before = tree(&dest, &[]);
    let report = run_ok(&dry);
    assert_eq!(tree(&dest, &[]), before, "a dry run changes nothing");
    assert_eq!(report.dry_run_changes, ["copy sub/b.txt"]);
    run_ok(&req);

    let verified = backup::verify(&req).unwrap();
    assert!(verified.identical, "{verified:?}");
    assert_eq!(verified.checked_files, Some(5));
    write(&dest, "a.txt", "ALPHA");
    write(&dest, "extra.txt", "only here");
    let verified = backup::verify(&req).unwrap();
    assert!(!verified.identical);
    assert_eq!(
        verified.differences,
        ["only at destination: extra.txt", "differs: a.txt"]
    );
}

#[test]
fn progress_and_cancel() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src, "big.bin", noise(50 << 20));
    let dest = tmp.path().join("dest");
    let job = job("rsync", dest.to_str().unwrap(), "bandwidth = \"100M\"");
    let mut seen: Vec<Progress> = Vec::new();
    let req = request(job, &src, Remotes::default(), 0);
    let report = backup::run(&req, &mut |p| seen.push(p.clone()), &AtomicBool::new(false)).unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert!(!seen.is_empty());
    assert!(
        seen.windows(2).all(|w| w[0].bytes_done <= w[1].bytes_done),
        "{seen:?}"
    );
    let last = seen.last().unwrap();
    // rsync counts the root directory as an entry too.
    assert_eq!(
        (last.bytes_done, last.files_done, last.files_total),
        (50 << 20, 2, Some(2))
    );

    // Cancelled once the copy is under way (slowed down so that it is).
    let slow_dest = tmp.path().join("slow");
    let mut slow = req.clone();
    slow.job.destination = slow_dest.to_str().unwrap().into();
    slow.job.bandwidth = Some("2M".into());
    let cancel = AtomicBool::new(false);
    let report = backup::run(
        &slow,
        &mut |p| {
            if p.bytes_done > 0 {
                cancel.store(true, Ordering::Relaxed);
            }
        },
        &cancel,
    )
    .unwrap();
    assert_eq!(report.outcome, Outcome::Cancelled, "{report:#?}");
    assert_eq!(report.message, "rsync: cancelled");
    let partial = std::fs::read(slow_dest.join("big.bin")).map_or(0, |d| d.len());
    assert!(partial < 50 << 20, "the copy stopped");
}

#[test]
fn cancelled_version_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dest) = (tmp.path().join("src"), tmp.path().join("dest"));
    write(&src, "big.bin", noise(20 << 20));
    let job = job(
        "rsync",
        dest.to_str().unwrap(),
        "keep_versions = 3\nbandwidth = \"2M\"",
    );
    let cancel = AtomicBool::new(true);
    let req = request(job, &src, Remotes::default(), 5);
    let report = backup::run(&req, &mut |_| {}, &cancel).unwrap();
    assert_eq!(report.outcome, Outcome::Cancelled);
    assert!(!dest.join("2026-01-01T00-00-05").exists());
    assert!(!dest.join("latest").exists());
}

#[test]
fn errors() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_source(&src);
    let job = job("rsync", "/proc/no-such-dir/dest", "");
    let mut req = request(job, &src, Remotes::default(), 0);
    let report = backup::run(&req, &mut |_| {}, &AtomicBool::new(false)).unwrap();
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(report.message.starts_with("rsync: "), "{}", report.message);
    assert!(report.message.contains("(exit 11)"), "{}", report.message);

    req.binary = Some("/nonexistent/bin/rsync".into());
    let err = backup::run(&req, &mut |_| {}, &AtomicBool::new(false)).unwrap_err();
    assert!(matches!(err, BackupError::MissingBinary { .. }));
    assert_eq!(
        err.to_string(),
        "rsync is not installed: install the `rsync` package (apt install rsync / dnf install rsync)"
    );

    req.source = tmp.path().join("missing");
    let err = backup::run(&req, &mut |_| {}, &AtomicBool::new(false)).unwrap_err();
    assert!(matches!(err, BackupError::Source { .. }), "{err}");
}
