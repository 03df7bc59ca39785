//! Snapshot benchmark (issue 5): what taking a snapshot costs as the tree grows, and what
//! versioning adds to lookups and overwrites while snapshots exist.
//!
//! ```sh
//! cargo bench -p fs-core --bench snapshots      # or bench/snapshots.sh
//! ```
//!
//! Everything runs in-process on fs-core (no FUSE), on real pools: two sparse image files
//! (fast and slow member, the metadata region mirrored on both) in a temporary directory under
//! `$AEGIS_BENCH_DIR` (default `/var/tmp`), opened with the device backend the appliance uses
//! (io_uring, `O_DIRECT` where the file system takes it), default block size and filesystem
//! configuration, no background committer. The images are removed at the end, also when the
//! run fails or panics.
//!
//! 1. **Creation.** One 32 + 32 GiB pool (a 4 GiB metadata region) is filled with empty files,
//!    1,000 per directory, to 10,000, 100,000 and 1,000,000 files in turn. At each size, once
//!    everything is committed (and the host has written it back: `sync`, one second of rest),
//!    `snapshot_create`, which commits, is timed `AEGIS_BENCH_REPEAT` times (default 7) each
//!    after a second of idleness, as snapshots are usually taken, and as many times back to
//!    back (on the VMs this was written on, the first device flushes after an idle spell are
//!    several times slower). Then a commit of one tiny change is timed (the floor under a
//!    creation), and the snapshots are deleted (timed too) before the tree grows.
//! 2. **Versioning overhead.** For 0, 10 and 100 snapshots, a fresh 8 + 8 GiB pool holds
//!    20,000 files of 4 KiB (20 directories of 1,000). 100 rounds each overwrite 100 random
//!    files and commit; `k` of the rounds, evenly spaced and the last one included, then take
//!    a snapshot, so history exists and the newest snapshot sees every live record. Timed:
//!    - `lookup`: 20,000 random lookups by name in the live tree, 3 passes;
//!    - `lookup in oldest snapshot`: the same names under `/.snapshots/<oldest>`;
//!    - `overwrite`: 10,000 writes of 4 KiB at offset 0 of distinct random files, in groups of
//!      1,000, each group followed by a commit. The write call stages the block and rewrites
//!      the inode record (moving the old one to history when a snapshot sees it); the commit
//!      writes the staged blocks, remaps them (the old mapping likewise), and makes it all
//!      durable (device flushes, metadata commit). Each is reported per overwrite.
//!
//!    The whole of part 2 runs `AEGIS_BENCH_RUNS` times (default 3, the order of `k`
//!    alternating); figures are medians over every pass and every group of every run, ratios
//!    against 0 snapshots in the same run. The bytes the process wrote to the images during the
//!    overwrites (`/proc/self/io`) show where commit time goes.
//!
//! Environment:
//! - `AEGIS_BENCH_MAX_FILES`: largest tree of part 1 (default 1,000,000; larger sizes are
//!   skipped, and a cap under 10,000 is the only size);
//! - `AEGIS_BENCH_REPEAT`: snapshot creations per size (default 7);
//! - `AEGIS_BENCH_RUNS`: runs of part 2 (default 3);
//! - `AEGIS_BENCH_DIR`: where the temporary pool directory goes (default `/var/tmp`);
//! - `AEGIS_BENCH_PART`: `1` or `2` runs that part only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{close_pool, env_u64, open_pool, temp_dir};
use fs_core::fs::{Caller, Filesystem, NewNode};
use fs_core::meta::records::FileKind;
use fs_core::types::InodeId;
const FILES_PER_DIR: u64 = 1_000;
/// Tree sizes of part 1.
const SIZES: [u64; 3] = [10_000, 100_000, 1_000_000];
/// Snapshot counts of part 2.
const SNAPSHOT_COUNTS: [usize; 3] = [0, 10, 100];
/// Part 2: files, their size, change rounds, files overwritten per round.
const VERSIONED_FILES: u64 = 20_000;
const FILE_BYTES: usize = 4096;
const ROUNDS: usize = 100;
const CHANGES_PER_ROUND: usize = 100;
/// Part 2: timed lookups per pass, passes, timed overwrites, overwrites per commit.
const LOOKUPS: usize = 20_000;
const LOOKUP_PASSES: usize = 3;
const OVERWRITES: usize = 10_000;
const COMMIT_EVERY: usize = 1_000;

fn main() -> Result<()> {
    let max_files = env_u64("AEGIS_BENCH_MAX_FILES", 1_000_000)?;
    let repeat = usize::try_from(env_u64("AEGIS_BENCH_REPEAT", 7)?)?;
    let runs = usize::try_from(env_u64("AEGIS_BENCH_RUNS", 3)?)?;
    let part = std::env::var("AEGIS_BENCH_PART").unwrap_or_default();
    if !["", "1", "2"].contains(&part.as_str()) {
        bail!("AEGIS_BENCH_PART must be 1 or 2 (or unset for both), not '{part}'");
    }
    if max_files == 0 || repeat == 0 || runs == 0 {
        bail!("AEGIS_BENCH_MAX_FILES, AEGIS_BENCH_REPEAT and AEGIS_BENCH_RUNS must be positive");
    }
    let dir = temp_dir("aegis-snapbench.")?;
    println!(
        "# aegis snapshot benchmark: pools on image files in {} ({}), {} CPUs, load average {}",
        dir.path().display(),
        fs_type(dir.path()),
        std::thread::available_parallelism().map_or(1, usize::from),
        load(),
    );
    let started = Instant::now();
    if part.is_empty() || part == "1" {
        let mut sizes: Vec<u64> = SIZES.into_iter().filter(|&n| n <= max_files).collect();
        if sizes.is_empty() {
            sizes.push(max_files);
        }
        creation(dir.path(), &sizes, repeat)?;
    }
    if part.is_empty() || part == "2" {
        versioning(dir.path(), runs)?;
    }
    println!(
        "# total {:.1} s; load average at the end: {}",
        started.elapsed().as_secs_f64(),
        load()
    );
    dir.close().context("removing the pool images")?;
    Ok(())
}

fn fs_type(path: &Path) -> String {
    std::process::Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE", "--target"])
        .arg(path)
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown file system".into())
}

fn create(fs: &Filesystem, parent: InodeId, name: &str, kind: FileKind) -> Result<InodeId> {
    let perm = if kind == FileKind::Directory {
        0o755
    } else {
        0o644
    };
    Ok(fs
        .create_node(
            parent,
            name.as_bytes(),
            &NewNode::new(kind, perm),
            Caller::ROOT,
        )
        .with_context(|| format!("creating {name}"))?
        .ino)
}

fn dir_name(index: u64) -> String {
    format!("d{index:05}")
}

fn file_name(index: u64) -> String {
    format!("f{index:04}")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

fn samples_ms(samples: &[Duration]) -> String {
    samples
        .iter()
        .map(|d| format!("{:.1}", ms(*d)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Part 1: snapshot creation time against the number of files.
fn creation(dir: &Path, sizes: &[u64], repeat: usize) -> Result<()> {
    let largest = sizes.iter().copied().max().unwrap_or(0);
    // 32 + 32 GiB: a 4 GiB metadata region, many times what a million empty files take.
    let gib = if largest > 100_000 { 32 } else { 8 };
    println!();
    println!(
        "## 1. snapshot creation on a quiescent pool ({gib} + {gib} GiB images, empty files, \
         {FILES_PER_DIR} per directory, {repeat} creations of each kind per size)"
    );
    let fs = open_pool(dir, "create", gib)?;
    let marker = create(&fs, InodeId::ROOT, "marker", FileKind::Regular)?;
    fs.commit()?;
    let mut files = 0u64;
    let mut dir_ino = InodeId::ROOT;
    let mut rows: Vec<CreationRow> = Vec::new();
    for &size in sizes {
        let fill = Instant::now();
        while files < size {
            if files.is_multiple_of(FILES_PER_DIR) {
                dir_ino = create(
                    &fs,
                    InodeId::ROOT,
                    &dir_name(files / FILES_PER_DIR),
                    FileKind::Directory,
                )?;
            }
            create(
                &fs,
                dir_ino,
                &file_name(files % FILES_PER_DIR),
                FileKind::Regular,
            )?;
            files += 1;
        }
        fs.commit()?;
        let fill = fill.elapsed();
        let meta_mib = fs.pool().metadata.used() as f64 / (1024.0 * 1024.0);
        settle();

        // One snapshot at a time, each after a second of idleness (as a snapshot is usually
        // taken), then the same back to back.
        let mut names = Vec::new();
        let mut bytes = Vec::new();
        let mut cpu = Vec::new();
        let mut take = |idle: bool| -> Result<Duration> {
            if idle {
                std::thread::sleep(Duration::from_secs(1));
            }
            let name = format!("n{size}-{}", names.len());
            let io = write_bytes();
            let cpu_before = thread_cpu();
            let start = Instant::now();
            fs.snapshot_create(&name)?;
            let took = start.elapsed();
            if let Some((before, after)) = io.zip(write_bytes()) {
                bytes.push(after.saturating_sub(before));
            }
            if let Some((before, after)) = cpu_before.zip(thread_cpu()) {
                cpu.push(after.saturating_sub(before));
            }
            names.push(name);
            Ok(took)
        };
        let idle = (0..repeat)
            .map(|_| take(true))
            .collect::<Result<Vec<_>>>()?;
        let busy = (0..repeat)
            .map(|_| take(false))
            .collect::<Result<Vec<_>>>()?;
        if fs.snapshots()?.len() != names.len() {
            bail!("expected {} snapshots", names.len());
        }
        // The floor under a creation: a commit of one tiny change (an inline write).
        let mut commits = Vec::with_capacity(repeat);
        for i in 0..repeat {
            fs.write(marker, 0, format!("{size}-{i}").as_bytes())?;
            let start = Instant::now();
            fs.commit()?;
            commits.push(start.elapsed());
        }
        let mut deletes = Vec::with_capacity(names.len());
        for name in &names {
            let start = Instant::now();
            fs.snapshot_delete(name)?;
            deletes.push(start.elapsed());
        }
        let row = CreationRow {
            files: size,
            fill,
            added: size - rows.last().map_or(0, |r| r.files),
            meta_mib,
            idle,
            busy,
            create_kib: (!bytes.is_empty())
                .then(|| bytes.iter().sum::<u64>() as f64 / bytes.len() as f64 / 1024.0),
            create_cpu: (!cpu.is_empty()).then(|| median(&cpu)),
            commit: commits,
            delete: deletes,
        };
        println!(
            "{size:>9} files: populated in {:.1} s ({:.0} files/s), metadata {meta_mib:.0} MiB; \
             create after idle ms [{}], back to back ms [{}], commit ms [{}], delete ms [{}]",
            fill.as_secs_f64(),
            row.added as f64 / fill.as_secs_f64(),
            samples_ms(&row.idle),
            samples_ms(&row.busy),
            samples_ms(&row.commit),
            samples_ms(&row.delete),
        );
        rows.push(row);
    }
    close_pool(fs, dir, "create")?;

    println!();
    println!(
        "| files | populate (files added) | metadata | create after 1 s idle: median (max) | \
         create back to back: median (max) | written per create | CPU per create | \
         commit of one change | delete |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let max = |samples: &[Duration]| samples.iter().copied().max().unwrap_or_default();
    for row in &rows {
        println!(
            "| {} | {:.1} s ({}) | {:.0} MiB | {:.1} ms ({:.1}) | {:.1} ms ({:.1}) | {} | {} | \
             {:.1} ms | {:.1} ms |",
            thousands(row.files),
            row.fill.as_secs_f64(),
            thousands(row.added),
            row.meta_mib,
            ms(median(&row.idle)),
            ms(max(&row.idle)),
            ms(median(&row.busy)),
            ms(max(&row.busy)),
            row.create_kib
                .map_or("?".to_owned(), |kib| format!("{kib:.0} KiB")),
            row.create_cpu
                .map_or("?".to_owned(), |cpu| format!("{:.2} ms", ms(cpu))),
            ms(median(&row.commit)),
            ms(median(&row.delete)),
        );
    }
    println!(
        "(commit and delete: medians; 'written' is what the process wrote to the images, \
         'CPU' the median CPU time of the thread that took the snapshot; the rest of a \
         creation's time is waiting for the device writes and flushes of its commit)"
    );
    Ok(())
}

struct CreationRow {
    files: u64,
    fill: Duration,
    /// Files created by this step.
    added: u64,
    meta_mib: f64,
    /// Creations each after a second of idleness, and back to back.
    idle: Vec<Duration>,
    busy: Vec<Duration>,
    /// Mean KiB written to the images per creation.
    create_kib: Option<f64>,
    /// Median CPU time of the calling thread per creation.
    create_cpu: Option<Duration>,
    commit: Vec<Duration>,
    delete: Vec<Duration>,
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A small deterministic generator (xorshift), so every configuration sees the same choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `count` distinct indices below `n`, in random order.
    fn distinct(&mut self, n: u64, count: usize) -> Vec<u64> {
        let mut all: Vec<u64> = (0..n).collect();
        for i in (1..all.len()).rev() {
            let j = usize::try_from(self.below(i as u64 + 1)).unwrap_or(0);
            all.swap(i, j);
        }
        all.truncate(count);
        all
    }
}

/// 4 KiB of content that differs for every `stamp`.
fn content(stamp: u64) -> Vec<u8> {
    let mut rng = Rng(stamp.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (0..FILE_BYTES / 8)
        .flat_map(|_| rng.next().to_le_bytes())
        .collect()
}

/// What one run of part 2 measured for one snapshot count.
#[derive(Default)]
struct VersionedRun {
    setup: Duration,
    /// One per pass of `LOOKUPS` lookups.
    lookup: Vec<Duration>,
    snapshot_lookup: Vec<Duration>,
    /// One per group of `COMMIT_EVERY` overwrites: the write calls, then the commit.
    write: Vec<Duration>,
    commit: Vec<Duration>,
    /// Bytes the process wrote to the images during the timed overwrites.
    written: Option<u64>,
    history_bytes: u64,
    /// The snapshot creations of the setup (history present, tree of 20,000 files).
    creates: Vec<Duration>,
}

/// Every run of part 2 for one snapshot count, pooled.
#[derive(Default)]
struct VersionedRow {
    snapshots: usize,
    runs: Vec<VersionedRun>,
}

impl VersionedRow {
    fn all(&self, pick: impl Fn(&VersionedRun) -> &Vec<Duration>) -> Vec<Duration> {
        self.runs
            .iter()
            .flat_map(|r| pick(r).iter().copied())
            .collect()
    }

    /// Median µs per lookup (over every pass of every run).
    fn lookup_us(&self) -> f64 {
        per_op_us(median(&self.all(|r| &r.lookup)), LOOKUPS)
    }

    fn snapshot_lookup_us(&self) -> Option<f64> {
        let all = self.all(|r| &r.snapshot_lookup);
        (!all.is_empty()).then(|| per_op_us(median(&all), LOOKUPS))
    }

    /// Median µs per overwrite spent in write calls and in commits (over every group of every
    /// run).
    fn write_us(&self) -> f64 {
        per_op_us(median(&self.all(|r| &r.write)), COMMIT_EVERY)
    }

    fn commit_us(&self) -> f64 {
        per_op_us(median(&self.all(|r| &r.commit)), COMMIT_EVERY)
    }

    /// KiB written to the images per overwrite (mean over the runs that could tell).
    fn written_kib(&self) -> Option<f64> {
        let known: Vec<u64> = self.runs.iter().filter_map(|r| r.written).collect();
        (!known.is_empty()).then(|| {
            known.iter().sum::<u64>() as f64 / known.len() as f64 / OVERWRITES as f64 / 1024.0
        })
    }
}

/// Part 2: lookups and overwrites with 0, 10 and 100 snapshots.
fn versioning(dir: &Path, runs: usize) -> Result<()> {
    println!();
    println!(
        "## 2. versioning overhead: {} files of {FILE_BYTES} B, {ROUNDS} rounds of \
         {CHANGES_PER_ROUND} overwrites with k snapshots among them, {runs} run(s) of every k",
        thousands(VERSIONED_FILES)
    );
    let mut rows: Vec<VersionedRow> = SNAPSHOT_COUNTS
        .iter()
        .map(|&snapshots| VersionedRow {
            snapshots,
            runs: Vec::new(),
        })
        .collect();
    for run in 0..runs {
        // Alternate the order so drift and warm-up hit every k alike.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        if run % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let k = rows[i].snapshots;
            let result = versioned(dir, k)?;
            println!(
                "run {}, k = {k:>3}: setup {:.1} s, lookup {:.2} µs, snapshot lookup {}, \
                 write {:.1} µs, commit {:.1} µs per overwrite (medians of this run), \
                 {} written per overwrite, snapshots hold {:.1} MiB of data, \
                 snapshot creation during setup {}",
                run + 1,
                result.setup.as_secs_f64(),
                per_op_us(median(&result.lookup), LOOKUPS),
                if result.snapshot_lookup.is_empty() {
                    "-".to_owned()
                } else {
                    format!(
                        "{:.2} µs",
                        per_op_us(median(&result.snapshot_lookup), LOOKUPS)
                    )
                },
                per_op_us(median(&result.write), COMMIT_EVERY),
                per_op_us(median(&result.commit), COMMIT_EVERY),
                result.written.map_or("?".to_owned(), |b| format!(
                    "{:.1} KiB",
                    b as f64 / OVERWRITES as f64 / 1024.0
                )),
                result.history_bytes as f64 / (1024.0 * 1024.0),
                if result.creates.is_empty() {
                    "-".to_owned()
                } else {
                    format!(
                        "{:.1} ms median, {:.1} ms max",
                        ms(median(&result.creates)),
                        ms(result.creates.iter().copied().max().unwrap_or_default())
                    )
                },
            );
            rows[i].runs.push(result);
        }
    }
    let base = &rows[0];
    let base_total = base.write_us() + base.commit_us();
    println!();
    println!(
        "| snapshots | lookup | ratio | lookup in oldest snapshot | ratio | write call | \
         commit (per overwrite) | overwrite total | ratio | written per overwrite |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in &rows {
        let total = row.write_us() + row.commit_us();
        let (snap, snap_ratio) =
            row.snapshot_lookup_us()
                .map_or(("—".into(), "—".into()), |us| {
                    (
                        format!("{us:.2} µs"),
                        format!("{:.2}", us / base.lookup_us()),
                    )
                });
        println!(
            "| {} | {:.2} µs | {:.2} | {snap} | {snap_ratio} | {:.1} µs | {:.1} µs | {:.1} µs | \
             {:.2} | {} |",
            row.snapshots,
            row.lookup_us(),
            row.lookup_us() / base.lookup_us(),
            row.write_us(),
            row.commit_us(),
            total,
            total / base_total,
            row.written_kib()
                .map_or("?".to_owned(), |kib| format!("{kib:.1} KiB")),
        );
    }
    println!(
        "(medians over every pass and every commit group of every run; the snapshot-lookup \
         ratio is against the live lookup with 0 snapshots; 'written' is what the process wrote \
         to the images, data and both metadata copies, from /proc/self/io)"
    );
    Ok(())
}

fn per_op_us(total: Duration, ops: usize) -> f64 {
    total.as_secs_f64() * 1e6 / ops as f64
}

fn versioned(dir: &Path, k: usize) -> Result<VersionedRun> {
    let name = format!("versions{k}");
    let fs = open_pool(dir, &name, 8)?;
    let setup = Instant::now();
    let dirs = VERSIONED_FILES / FILES_PER_DIR;
    let mut inodes = Vec::with_capacity(usize::try_from(VERSIONED_FILES)?);
    let mut dir_inodes = Vec::new();
    let mut stamp = 0u64;
    for d in 0..dirs {
        let dir_ino = create(&fs, InodeId::ROOT, &dir_name(d), FileKind::Directory)?;
        dir_inodes.push(dir_ino);
        for f in 0..FILES_PER_DIR {
            let ino = create(&fs, dir_ino, &file_name(f), FileKind::Regular)?;
            stamp += 1;
            fs.write(ino, 0, &content(stamp))?;
            inodes.push(ino);
        }
    }
    fs.commit()?;
    // The same choices for every k: only where the snapshots fall differs.
    let mut rng = Rng(0x5EED_F00D_5AA5);
    let mut taken = 0;
    let mut creates = Vec::new();
    for round in 1..=ROUNDS {
        for index in rng.distinct(VERSIONED_FILES, CHANGES_PER_ROUND) {
            stamp += 1;
            fs.write(inodes[usize::try_from(index)?], 0, &content(stamp))?;
        }
        fs.commit()?;
        // Snapshots after rounds ROUNDS/k, 2·ROUNDS/k, …, ROUNDS.
        if k > 0 && round * k / ROUNDS > taken {
            let start = Instant::now();
            fs.snapshot_create(&format!("s{round:03}"))?;
            creates.push(start.elapsed());
            taken += 1;
        }
    }
    let snapshots = fs.snapshots()?;
    if snapshots.len() != k {
        bail!("expected {k} snapshots, found {}", snapshots.len());
    }
    let history_bytes = fs.snapshot_bytes()?;
    let setup = setup.elapsed();
    settle();

    // Lookups: random names in the live tree, and the same in the oldest snapshot.
    let names: Vec<(usize, Vec<u8>)> = (0..LOOKUPS)
        .map(|_| {
            let index = rng.below(VERSIONED_FILES);
            Ok((
                usize::try_from(index / FILES_PER_DIR)?,
                file_name(index % FILES_PER_DIR).into_bytes(),
            ))
        })
        .collect::<Result<_>>()?;
    let lookups = |dirs: &[InodeId]| -> Result<Vec<Duration>> {
        let mut passes = Vec::with_capacity(LOOKUP_PASSES);
        for _ in 0..LOOKUP_PASSES {
            let start = Instant::now();
            for (d, name) in &names {
                std::hint::black_box(fs.lookup(dirs[*d], name)?);
            }
            passes.push(start.elapsed());
        }
        Ok(passes)
    };
    let lookup = lookups(&dir_inodes)?;
    let snapshot_lookup = match snapshots.first() {
        Some(oldest) => {
            let list = fs.lookup(InodeId::ROOT, b".snapshots")?.ino;
            let root = fs.lookup(list, oldest.name.as_bytes())?.ino;
            let snapshot_dirs: Vec<InodeId> = (0..dirs)
                .map(|d| Ok(fs.lookup(root, dir_name(d).as_bytes())?.ino))
                .collect::<Result<_>>()?;
            lookups(&snapshot_dirs)?
        }
        None => Vec::new(),
    };

    // Overwrites of distinct files (so with a snapshot, each replaces records it sees),
    // committed every COMMIT_EVERY.
    let targets = rng.distinct(VERSIONED_FILES, OVERWRITES);
    let payloads: Vec<Vec<u8>> = (0..OVERWRITES)
        .map(|i| content(stamp + 1 + i as u64))
        .collect();
    let mut write = Vec::new();
    let mut commit = Vec::new();
    let io_before = write_bytes();
    for (group, data) in targets
        .chunks(COMMIT_EVERY)
        .zip(payloads.chunks(COMMIT_EVERY))
    {
        let start = Instant::now();
        for (index, data) in group.iter().zip(data) {
            fs.write(inodes[usize::try_from(*index)?], 0, data)?;
        }
        let written = Instant::now();
        fs.commit()?;
        write.push(written - start);
        commit.push(written.elapsed());
    }
    let written = io_before
        .zip(write_bytes())
        .map(|(a, b)| b.saturating_sub(a));
    close_pool(fs, dir, &name)?;
    Ok(VersionedRun {
        setup,
        lookup,
        snapshot_lookup,
        write,
        commit,
        written,
        history_bytes,
        creates,
    })
}

/// Bytes this process has had written to storage (`write_bytes` of `/proc/self/io`; io_uring
/// workers count as part of the process).
fn write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))?
        .trim()
        .parse()
        .ok()
}

/// CPU time the calling thread has used (`/proc/thread-self/schedstat`).
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(
        stat.split_whitespace().next()?.parse().ok()?,
    ))
}

/// Lets the host's writeback of earlier work finish before a timed phase: `sync`, then a
/// second of rest.
fn settle() {
    let _ = std::process::Command::new("sync").status();
    std::thread::sleep(Duration::from_secs(1));
}

/// The load average, to print next to the figures (other work on the machine skews them).
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
