//! What a small-file create costs the serving process, call by call: the filesystem calls the
//! kernel's seven FUSE requests of `open(O_CREAT|O_EXCL)`, `write(1 KiB)`, `close` turn into,
//! made in-process on fs-core (no FUSE), so each is timed without the transport around it.
//!
//! ```sh
//! cargo bench -p fs-core --bench create
//! ```
//!
//! The requests, in the order the kernel sends them (counted with the `fuse:fuse_request_send`
//! tracepoint, see docs/benchmarks.md): GETATTR of the directory (`default_permissions` after
//! the previous create changed it), LOOKUP of the new name (not there), CREATE (create and
//! open), GETXATTR `security.capability` (once per new inode, before its first write), WRITE,
//! SETATTR of the times (the writeback cache's, at close), RELEASE.
//!
//! A pool of two sparse 4 GiB image files in a temporary directory under `$AEGIS_BENCH_DIR`
//! (default `/var/tmp`), opened with the appliance's device backend, default configuration,
//! no background committer: a commit runs after every `AEGIS_BENCH_COMMIT_EVERY` files
//! (default 5,000, about what 5 s of creates come to through FUSE) and is reported on its
//! own line. `AEGIS_BENCH_FILES` (default 20,000) files in one directory per run,
//! `AEGIS_BENCH_RUNS` runs (default 3) on fresh pools; the figures are medians of the runs'
//! means. The baseline in the same run is the cheapest call, GETATTR, which every request
//! pays for in some form: each line also gives its ratio to it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{close_pool, env_u64, open_pool, temp_dir};
use fs_core::error::FsError;
use fs_core::fs::{Caller, NewNode, SetAttr};
use fs_core::meta::records::{FileKind, Timestamp};
use fs_core::types::InodeId;

/// Each image of a run's pool, in GiB.
const POOL_GIB: u64 = 4;
const CALLS: [&str; 7] = [
    "getattr (dir)",
    "lookup (absent)",
    "create + open",
    "getxattr",
    "write 1 KiB",
    "setattr (times)",
    "release",
];

fn main() -> Result<()> {
    let files = usize::try_from(env_u64("AEGIS_BENCH_FILES", 20_000)?)?;
    let commit_every = usize::try_from(env_u64("AEGIS_BENCH_COMMIT_EVERY", 5_000)?)?;
    let runs = usize::try_from(env_u64("AEGIS_BENCH_RUNS", 3)?)?;
    if files == 0 || commit_every == 0 || runs == 0 {
        bail!("AEGIS_BENCH_FILES, AEGIS_BENCH_COMMIT_EVERY and AEGIS_BENCH_RUNS must be positive");
    }
    let dir = temp_dir("aegis-createbench.")?;
    println!(
        "# {files} creates per run, a commit every {commit_every}, {runs} runs, {} CPUs",
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    // Per call (and the commit last), each run's mean in µs.
    let mut means: Vec<Vec<f64>> = vec![Vec::new(); CALLS.len() + 1];
    for run in 0..runs {
        let (calls, commits) = one_run(dir.path(), run, files, commit_every)?;
        for (index, total) in calls.iter().enumerate() {
            means[index].push(micros(*total) / files as f64);
        }
        means[CALLS.len()].push(micros(commits) / files as f64);
    }
    let medians: Vec<f64> = means.iter_mut().map(|m| median(m)).collect();
    let baseline = medians[0];
    println!("{:<18} {:>12} {:>10}", "call", "µs per file", "/ getattr");
    for (name, value) in CALLS.iter().zip(&medians) {
        println!("{name:<18} {value:>12.2} {:>10.2}", value / baseline);
    }
    let calls: f64 = medians[..CALLS.len()].iter().sum();
    println!(
        "{:<18} {calls:>12.2} {:>10.2}",
        "all seven",
        calls / baseline
    );
    println!(
        "{:<18} {:>12.2} {:>10.2}",
        "commits",
        medians[CALLS.len()],
        medians[CALLS.len()] / baseline
    );
    dir.close().context("removing the pool images")?;
    Ok(())
}

/// One fresh pool: `files` create sequences. Time spent in each call, and in commits.
fn one_run(
    dir: &Path,
    run: usize,
    files: usize,
    commit_every: usize,
) -> Result<([Duration; CALLS.len()], Duration)> {
    let name = format!("create{run}");
    let fs = open_pool(dir, &name, POOL_GIB)?;
    let parent = fs
        .create_node(
            InodeId::ROOT,
            b"files",
            &NewNode::new(FileKind::Directory, 0o755),
            Caller::ROOT,
        )?
        .ino;
    fs.commit()?;
    let payload = vec![b'x'; 1024];
    let mut spent = [Duration::ZERO; CALLS.len()];
    let mut commits = Duration::ZERO;
    let mut timed = |call: usize, started: Instant| spent[call] += started.elapsed();
    for i in 0..files {
        let file = format!("f{i:07}");
        let started = Instant::now();
        fs.getattr(parent)?;
        timed(0, started);
        let started = Instant::now();
        match fs.lookup(parent, file.as_bytes()) {
            Err(FsError::NotFound) => {}
            other => bail!("lookup of a new name: {other:?}"),
        }
        timed(1, started);
        let started = Instant::now();
        let node = NewNode::new(FileKind::Regular, 0o644);
        let ino = fs
            .create_node(parent, file.as_bytes(), &node, Caller::ROOT)?
            .ino;
        fs.open(ino, true, false, Caller::ROOT)?;
        timed(2, started);
        let started = Instant::now();
        match fs.getxattr(ino, b"security.capability") {
            Err(FsError::NoAttr) => {}
            other => bail!("getxattr of a new file: {other:?}"),
        }
        timed(3, started);
        let started = Instant::now();
        fs.write(ino, 0, &payload)?;
        timed(4, started);
        let started = Instant::now();
        let now = Timestamp::now();
        let times = SetAttr {
            mtime: Some(now),
            ctime: Some(now),
            ..SetAttr::default()
        };
        fs.setattr(ino, &times)?;
        timed(5, started);
        let started = Instant::now();
        fs.release(ino)?;
        timed(6, started);
        if (i + 1) % commit_every == 0 {
            let started = Instant::now();
            fs.commit()?;
            commits += started.elapsed();
        }
    }
    close_pool(fs, dir, &name)?;
    Ok((spent, commits))
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
