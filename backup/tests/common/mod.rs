//! Helpers shared by the integration tests: building jobs and requests, writing and
//! comparing trees.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use backup::{BackupJob, Outcome, Progress, Remotes, RunReport, RunRequest};
use chrono::{NaiveDate, NaiveDateTime};

/// A job from TOML lines after `name`, `schedule` and the given engine and destination.
pub fn job(engine: &str, destination: &str, extra: &str) -> BackupJob {
    let text = format!(
        "name = \"test\"\nengine = \"{engine}\"\ndestination = \"{destination}\"\n\
         schedule = \"off\"\n{extra}"
    );
    toml::from_str(&text).unwrap()
}

pub fn remotes(text: &str) -> Remotes {
    toml::from_str(text).unwrap()
}

/// 2026-01-01 at 00:00:`second`.
pub fn at(second: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, second)
        .unwrap()
}

pub fn request(job: BackupJob, source: &Path, remotes: Remotes, second: u32) -> RunRequest {
    RunRequest {
        now: at(second),
        ..RunRequest::new(job, source.to_path_buf(), remotes)
    }
}

/// Runs without progress or cancel and expects success.
pub fn run_ok(req: &RunRequest) -> RunReport {
    let report = backup::run(req, &mut |_: &Progress| {}, &AtomicBool::new(false)).unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    report
}

pub fn write(root: &Path, rel: &str, content: impl AsRef<[u8]>) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

pub fn read(root: &Path, rel: &str) -> Vec<u8> {
    std::fs::read(root.join(rel)).unwrap()
}

/// Every file (path → content) and directory (path/ → empty) under `root`, skipping
/// top-level entries named in `skip`.
pub fn tree(root: &Path, skip: &[&str]) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, prefix: &str, skip: &[&str], out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if skip.contains(&name.as_str()) {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                out.insert(format!("{name}/"), Vec::new());
                walk(&entry.path(), &format!("{name}/"), skip, out);
            } else {
                out.insert(name, std::fs::read(entry.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", skip, &mut out);
    out
}

/// A small source tree: two files, a subdirectory and things the tests exclude.
pub fn sample_source(root: &Path) {
    write(root, "a.txt", "alpha");
    write(root, "sub/b.txt", "bravo");
    write(root, "sub/deep/c.bin", vec![7u8; 100_000]);
    write(root, "junk.tmp", "temporary");
    write(root, ".cache/x", "cached");
}

/// `size` bytes that don't compress or repeat.
pub fn noise(size: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
