//! The rclone engine against the real rclone binary: local paths, an inline `local` remote,
//! and a WebDAV server started by the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backup::{BackupError, Outcome, Remotes, RCLONE_VERSIONS_DIR};
use common::*;

const PASSWORD: &str = "s3cret-Pa55word";

/// `rclone serve webdav` on a free loopback port, killed on drop.
struct WebDav {
    child: Child,
    port: u16,
}

impl WebDav {
    fn start(dir: &Path) -> Self {
        let port = free_port();
        let child = Command::new("rclone")
            .args(["serve", "webdav"])
            .arg(dir)
            .args([
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--user",
                "u",
                "--pass",
                PASSWORD,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = WebDav { child, port };
        for _ in 0..300 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("rclone serve webdav did not listen on port {port}");
    }

    fn remotes(&self) -> Remotes {
        let obscured = Command::new("rclone")
            .args(["obscure", PASSWORD])
            .output()
            .unwrap();
        let obscured = String::from_utf8(obscured.stdout).unwrap();
        remotes(&format!(
            "[dav]\ntype = \"webdav\"\nurl = \"http://127.0.0.1:{}\"\nvendor = \"other\"\n\
             user = \"u\"\npass = \"{}\"",
            self.port,
            obscured.trim()
        ))
    }
}

impl Drop for WebDav {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An empty rclone.conf, so that the tests don't depend on the user's.
fn empty_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("rclone.conf");
    std::fs::write(&path, "").unwrap();
    path
}

/// The command line and environment of this process's rclone children whose command line
/// contains `needle`.
fn rclone_children(needle: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let dir = entry.path();
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        if after_comm.split(' ').nth(1) != Some(me.as_str()) {
            continue;
        }
        let split = |name| -> Vec<String> {
            let raw = std::fs::read(dir.join(name)).unwrap_or_default();
            raw.split(|&b| b == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        };
        let argv = split("cmdline");
        if argv.first().is_some_and(|a| a.ends_with("rclone"))
            && argv.iter().any(|a| a.contains(needle))
        {
            found.push((argv, split("environ")));
        }
    }
    found
}

#[test]
fn versions_to_local_path_and_inline_local_remote() {
    let tmp = tempfile::tempdir().unwrap();
    let config = empty_config(tmp.path());
    let dest_path = tmp.path().join("dest-path");
    let dest_remote = tmp.path().join("dest-remote");
    let targets = [
        (
            dest_path.to_str().unwrap().to_string(),
            &dest_path,
            Remotes::default(),
        ),
        (
            format!("local:{}", dest_remote.display()),
            &dest_remote,
            remotes("[local]\ntype = \"local\""),
        ),
    ];
    for (i, (destination, dest, remotes)) in targets.into_iter().enumerate() {
        let src = tmp.path().join(format!("src{i}"));
        write(&src, "a.txt", "first content");
        write(&src, "keep/b.txt", "unchanged");
        let job = job(
            "rclone",
            &destination,
            "keep_versions = 1\nexclude = [\"*.tmp\"]",
        );
        write(&src, "skip.tmp", "excluded");
        let req = |second| backup::RunRequest {
            rclone_config: Some(config.clone()),
            ..request(job.clone(), &src, remotes.clone(), second)
        };
        let report = run_ok(&req(1));
        assert_eq!((report.files, report.bytes), (2, 22), "{report:#?}");
        write(&src, "a.txt", "second, longer content");
        run_ok(&req(2));
        let versions = dest.join(RCLONE_VERSIONS_DIR);
        assert_eq!(
            read(&versions, "2026-01-01T00-00-02/a.txt"),
            b"first content"
        );
        assert_eq!(
            tree(dest, &[RCLONE_VERSIONS_DIR]),
            tree(&src, &["skip.tmp"])
        );

        write(&src, "a.txt", "third");
        let report = run_ok(&req(3));
        assert_eq!(report.version.as_deref(), Some("2026-01-01T00-00-03"));
        let kept: Vec<_> = std::fs::read_dir(&versions)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            kept,
            ["2026-01-01T00-00-03"],
            "keep_versions = 1 pruned the older one"
        );
        // A run that changes nothing writes no version and so prunes none.
        run_ok(&req(4));
        assert!(versions.join("2026-01-01T00-00-03/a.txt").exists());
        // Restore the previous a.txt.
        let restore = tmp.path().join(format!("restore{i}"));
        std::fs::create_dir(&restore).unwrap();
        std::fs::copy(
            versions.join("2026-01-01T00-00-03/a.txt"),
            restore.join("a.txt"),
        )
        .unwrap();
        assert_eq!(read(&restore, "a.txt"), b"second, longer content");

        let verified = backup::verify(&req(5)).unwrap();
        assert!(verified.identical, "{verified:?}");
        assert_eq!(verified.checked_files, Some(2));
    }
}

#[test]
fn webdav_with_inline_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::create_dir(&served).unwrap();
    let server = WebDav::start(&served);
    let src = tmp.path().join("src");
    sample_source(&src);
    write(&src, "big.bin", noise(20 << 20));
    // Slowed down so that the child can be inspected while it runs.
    let job = job("rclone", "dav:backup", "bandwidth = \"10M\"");
    let req = backup::RunRequest {
        rclone_config: Some(empty_config(tmp.path())),
        ..request(job, &src, server.remotes(), 0)
    };
    let obscured = req.remotes.0["dav"]["pass"].clone();
    let mut inspected = 0;
    let report = backup::run(
        &req,
        &mut |_| {
            for (argv, env) in rclone_children("dav:backup") {
                let argv = argv.join(" ");
                assert!(
                    !argv.contains(&obscured) && !argv.contains(PASSWORD),
                    "{argv}"
                );
                assert!(!argv.contains("pass"), "{argv}");
                assert!(env.contains(&format!("RCLONE_CONFIG_DAV_PASS={obscured}")));
                inspected += 1;
            }
        },
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    assert!(inspected > 0, "the rclone child was seen while it ran");
    assert_eq!(tree(&served.join("backup"), &[]), tree(&src, &[]));
    assert!(backup::verify(&req).unwrap().identical);
    drop(server);
}

#[test]
fn unreachable_remotes_and_missing_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_source(&src);
    let config = empty_config(tmp.path());
    let run = |destination: &str, remotes: Remotes| {
        let req = backup::RunRequest {
            rclone_config: Some(config.clone()),
            ..request(job("rclone", destination, ""), &src, remotes, 0)
        };
        backup::run(&req, &mut |_| {}, &AtomicBool::new(false))
    };
    let report = run("nosuch:backup", Remotes::default()).unwrap();
    assert_eq!(report.outcome, Outcome::RemoteUnreachable);
    assert_eq!(
        report.message,
        "rclone: the remote \"nosuch\" is not defined in rclone.conf or a [remotes.nosuch] section (exit 1)"
    );

    let closed = remotes(&format!(
        "[closed]\ntype = \"webdav\"\nurl = \"http://127.0.0.1:{}\"\nvendor = \"other\"",
        free_port()
    ));
    let report = run("closed:backup", closed).unwrap();
    assert_eq!(report.outcome, Outcome::RemoteUnreachable, "{report:#?}");
    assert!(
        report
            .message
            .starts_with("rclone: cannot reach the remote (exit 1): Failed to create file system"),
        "{}",
        report.message
    );
    assert!(
        report.message.contains("connection refused"),
        "{}",
        report.message
    );

    let req = backup::RunRequest {
        binary: Some("/nonexistent/bin/rclone".into()),
        ..request(job("rclone", "/tmp/x", ""), &src, Remotes::default(), 0)
    };
    let err = backup::run(&req, &mut |_| {}, &AtomicBool::new(false)).unwrap_err();
    assert!(matches!(err, BackupError::MissingBinary { .. }));
    assert_eq!(
        err.to_string(),
        "rclone is not installed: install the `rclone` package (apt install rclone / dnf install rclone)"
    );
}

#[test]
fn dry_run_verify_and_cancel() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dest) = (tmp.path().join("src"), tmp.path().join("dest"));
    sample_source(&src);
    let req = backup::RunRequest {
        rclone_config: Some(empty_config(tmp.path())),
        ..request(
            job("rclone", dest.to_str().unwrap(), ""),
            &src,
            Remotes::default(),
            0,
        )
    };
    let dry = backup::RunRequest {
        dry_run: true,
        ..req.clone()
    };
    let report = run_ok(&dry);
    assert!(!dest.exists(), "a dry run creates nothing");
    let mut changes = report.dry_run_changes.clone();
    changes.sort();
    assert_eq!(
        changes,
        [
            "copy .cache/x",
            "copy a.txt",
            "copy junk.tmp",
            "copy sub/b.txt",
            "copy sub/deep/c.bin"
        ]
    );

    run_ok(&req);
    std::fs::remove_file(src.join("junk.tmp")).unwrap();
    let before = tree(&dest, &[]);
    assert_eq!(run_ok(&dry).dry_run_changes, ["delete junk.tmp"]);
    assert_eq!(tree(&dest, &[]), before, "a dry run changes nothing");
    run_ok(&req);

    let verified = backup::verify(&req).unwrap();
    assert!(verified.identical, "{verified:?}");
    assert_eq!(verified.checked_files, Some(4));
    write(&dest, "a.txt", "ALPHA");
    write(&dest, "extra.txt", "only here");
    let mut differences = backup::verify(&req).unwrap().differences;
    differences.sort();
    assert_eq!(
        differences,
        ["differs: a.txt", "only at destination: extra.txt"]
    );

    // Cancel once the (slowed down) copy is under way.
    write(&src, "big.bin", noise(20 << 20));
    let mut slow = req.clone();
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
    assert!(
        rclone_children(dest.to_str().unwrap()).is_empty(),
        "the child is gone"
    );
}
