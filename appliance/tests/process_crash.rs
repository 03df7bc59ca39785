//! Process crash through real FUSE: worker threads run heavy writes, renames, creates,
//! unlinks, mkdirs and fsyncs in a mount of the `aegis` binary; the serving process gets
//! SIGKILL at a random moment; `aegis mount` over the same mountpoint must replace the dead
//! mount by itself; every fsync'd file must read back exactly; `aegis fsck` (with and without
//! `--verify-data`) must find the pool clean. Several kill rounds run on the same pool.
//!
//! Bookkeeping follows the POSIX contract. Each worker owns a few names in `durable/` that no
//! other thread touches, and changes them only in ways whose outcome is fixed once the calls
//! return: create, write, fsync (or fdatasync) and fsync of the directory; replace through a
//! fsync'd temporary renamed over the name, then fsync of the directory; write or truncate in
//! place, then fsync or fdatasync; unlink, then fsync of the directory. After the crash a
//! name must hold exactly its last confirmed state, except the one change per worker that was
//! in flight: then the old or the new state for a rename or unlink (atomic), any content for
//! a write in place, absent or any content for a create. Names in `churn/` are shared by all
//! threads: writes of many sizes, overwrites, truncations, renames over each other, links,
//! unlinks, mkdirs, rmdirs and fsyncs. After the crash they must read back without error and
//! fsck checks the rest.
//!
//! Every run prints its seed; `AEGIS_KILL_SEED` replays the kill moments and each worker's
//! choices (not the thread interleaving).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{mount_count, pattern, signal_serving_process, Sandbox};
use fs_core::device::SplitMix64 as Rng;

const ROUNDS: u64 = 5;
const WORKERS: usize = 4;
const NAMES_PER_WORKER: usize = 6;
/// Shared churn: `churn/` and its subdirectories `s0`… hold files `c0`….
const CHURN_FILES: u64 = 12;
const CHURN_DIRS: u64 = 3;

/// What one worker knows about its durable names.
#[derive(Debug)]
struct Durable {
    /// The last confirmed state of each name (`None`: absent).
    confirmed: Vec<Option<Vec<u8>>>,
    /// The change in flight, if any, and to which name.
    in_flight: Option<(usize, InFlight)>,
    /// The worker's changes, for failure messages.
    history: Vec<String>,
}

#[derive(Debug)]
enum InFlight {
    /// An atomic change (rename over, unlink): the old state or this one.
    Becomes(Option<Vec<u8>>),
    /// A write or truncation in place of an existing file: it exists, with any content.
    Written,
    /// A create, write and fsync: absent, or present with any content.
    Created,
}

impl Durable {
    fn new() -> Self {
        Self {
            confirmed: vec![None; NAMES_PER_WORKER],
            in_flight: None,
            history: Vec::new(),
        }
    }
}

/// What the workers of one round share.
struct Round {
    durable_dir: PathBuf,
    churn_dir: PathBuf,
    /// Set just before the SIGKILL: errors from then on are the crash.
    killing: AtomicBool,
    /// Set once the kill is over (or the test failed): workers stop.
    stop: AtomicBool,
    /// Durable changes confirmed so far in the round.
    confirmed: AtomicU64,
    ops: AtomicU64,
    errors: Mutex<Vec<String>>,
    /// Errors the workers saw after the kill, by kind (for the log).
    crash_errors: Mutex<Vec<String>>,
}

/// Sets its flag when dropped, also while unwinding.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn durable_name(worker: usize, index: usize) -> String {
    format!("w{worker}-{index}")
}

/// Random data: sizes from inline (under 512 B) over one block to several FUSE writes.
fn data(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(4) {
        0 => rng.below(600),
        1 => 1 + rng.below(16 << 10),
        2 => (100 << 10) + rng.below(200 << 10),
        _ => (900 << 10) + rng.below(1500 << 10),
    };
    pattern(rng.next_u64(), len as usize)
}

/// fsync or fdatasync, at random; returns which.
fn sync(file: &File, rng: &mut Rng) -> io::Result<&'static str> {
    if rng.below(2) == 0 {
        file.sync_all().map(|()| "fsync")
    } else {
        file.sync_data().map(|()| "fdatasync")
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One change of one of the worker's durable names, recorded as in flight until every call
/// that makes it durable has returned.
fn durable_op(round: &Round, worker: usize, state: &mut Durable, rng: &mut Rng) -> io::Result<()> {
    let dir = &round.durable_dir;
    let index = rng.below(NAMES_PER_WORKER as u64) as usize;
    let name = durable_name(worker, index);
    let path = dir.join(&name);
    let log = &mut state.history;
    let new = match state.confirmed[index].clone() {
        None if rng.below(2) == 0 => {
            let content = data(rng);
            log.push(format!("{name}: create {} B", content.len()));
            state.in_flight = Some((index, InFlight::Created));
            let file = File::create_new(&path)?;
            file.write_all_at(&content, 0)?;
            log.push(format!("{name}: {}", sync(&file, rng)?));
            fsync_dir(dir)?;
            Some(content)
        }
        Some(_) if rng.below(4) == 0 => {
            log.push(format!("{name}: unlink"));
            state.in_flight = Some((index, InFlight::Becomes(None)));
            fs::remove_file(&path)?;
            fsync_dir(dir)?;
            None
        }
        Some(mut content) if rng.below(3) == 0 => {
            state.in_flight = Some((index, InFlight::Written));
            let file = OpenOptions::new().write(true).open(&path)?;
            if rng.below(4) == 0 {
                let size = rng.below(content.len() as u64 + (64 << 10));
                log.push(format!("{name}: truncate to {size} B"));
                file.set_len(size)?;
                content.resize(size as usize, 0);
            } else {
                let offset = rng.below(content.len() as u64 + (64 << 10));
                let bytes = data(rng);
                log.push(format!("{name}: write {} B at {offset}", bytes.len()));
                file.write_all_at(&bytes, offset)?;
                let end = offset as usize + bytes.len();
                if content.len() < end {
                    content.resize(end, 0);
                }
                content[offset as usize..end].copy_from_slice(&bytes);
            }
            log.push(format!("{name}: {}", sync(&file, rng)?));
            Some(content)
        }
        _ => {
            // Create or replace atomically: a fsync'd temporary renamed over the name.
            let content = data(rng);
            let temporary = dir.join(format!("w{worker}-tmp"));
            let file = File::create(&temporary)?;
            file.write_all_at(&content, 0)?;
            let synced = sync(&file, rng)?;
            let ino = file.metadata()?.ino();
            drop(file);
            log.push(format!(
                "{name}: rename a {} B temporary (inode {ino}, {synced}) over",
                content.len()
            ));
            state.in_flight = Some((index, InFlight::Becomes(Some(content.clone()))));
            fs::rename(&temporary, &path)?;
            fsync_dir(dir)?;
            Some(content)
        }
    };
    log.push(format!("{name}: confirmed {}", describe(new.as_ref())));
    state.confirmed[index] = new;
    state.in_flight = None;
    round.confirmed.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// A random path in the shared churn: a file name in `churn/` or one of its subdirectories.
fn churn_file(round: &Round, rng: &mut Rng) -> PathBuf {
    let name = format!("c{}", rng.below(CHURN_FILES));
    match rng.below(CHURN_DIRS + 1) {
        0 => round.churn_dir.join(name),
        dir => round.churn_dir.join(format!("s{}", dir - 1)).join(name),
    }
}

fn churn_subdir(round: &Round, rng: &mut Rng) -> PathBuf {
    round.churn_dir.join(format!("s{}", rng.below(CHURN_DIRS)))
}

/// One change in the shared churn. Failures that concurrent threads legitimately cause (a
/// name taken or gone, a directory not empty) are part of the churn.
fn churn_op(round: &Round, rng: &mut Rng) -> io::Result<()> {
    let result = match rng.below(10) {
        0..=2 => OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(churn_file(round, rng))
            .and_then(|file| file.write_all_at(&data(rng), rng.below(2 << 20))),
        3 => fs::write(churn_file(round, rng), data(rng)),
        4 => OpenOptions::new()
            .write(true)
            .open(churn_file(round, rng))
            .and_then(|file| file.set_len(rng.below(3 << 20))),
        5 => fs::rename(churn_file(round, rng), churn_file(round, rng)),
        6 => match rng.below(3) {
            0 => fs::remove_file(churn_file(round, rng)),
            1 => fs::hard_link(churn_file(round, rng), churn_file(round, rng)),
            _ => fs::rename(churn_subdir(round, rng), churn_subdir(round, rng)),
        },
        7 => match rng.below(2) {
            0 => fs::create_dir(churn_subdir(round, rng)),
            _ => fs::remove_dir(churn_subdir(round, rng)),
        },
        8 => File::open(churn_file(round, rng)).and_then(|file| sync(&file, rng).map(drop)),
        _ => fsync_dir(&round.churn_dir),
    };
    match result {
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(libc::ENOENT | libc::EEXIST | libc::ENOTEMPTY)
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn worker(round: &Round, worker: usize, state: &mut Durable, mut rng: Rng) {
    while !round.stop.load(Ordering::SeqCst) {
        let result = if rng.below(5) < 2 {
            durable_op(round, worker, state, &mut rng)
        } else {
            churn_op(round, &mut rng)
        };
        match result {
            Ok(()) => {
                round.ops.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) if round.killing.load(Ordering::SeqCst) => {
                round
                    .crash_errors
                    .lock()
                    .unwrap()
                    .push(err.kind().to_string());
                return;
            }
            Err(err) => {
                round
                    .errors
                    .lock()
                    .unwrap()
                    .push(format!("worker {worker}: {err} before the kill"));
                return;
            }
        }
    }
}

/// Reads a durable name back: its content, or `None` when absent.
fn read_back(path: &Path) -> Option<Vec<u8>> {
    match fs::read(path) {
        Ok(content) => Some(content),
        Err(err) if err.kind() == ErrorKind::NotFound => None,
        Err(err) => panic!("reading {} after the crash: {err}", path.display()),
    }
}

fn describe(content: Option<&Vec<u8>>) -> String {
    content.map_or("absent".into(), |c| format!("{} bytes", c.len()))
}

/// Checks every worker's durable names against what was confirmed; the observed state
/// becomes the confirmed state of the next round. Returns how many names were checked
/// exactly (no change in flight).
fn verify_durable(dir: &Path, states: &mut [Durable], context: &str) -> usize {
    let mut exact = 0;
    for (worker, state) in states.iter_mut().enumerate() {
        let in_flight = state.in_flight.take();
        for (index, confirmed) in state.confirmed.iter_mut().enumerate() {
            let name = durable_name(worker, index);
            let found = read_back(&dir.join(&name));
            let ok = match &in_flight {
                Some((at, change)) if *at == index => match change {
                    InFlight::Becomes(new) => found == *confirmed || found == *new,
                    InFlight::Written => found.is_some(),
                    InFlight::Created => true,
                },
                _ => {
                    exact += 1;
                    found == *confirmed
                }
            };
            if !ok {
                let inode = fs::metadata(dir.join(&name)).map(|m| m.ino());
                panic!(
                    "{context}: durable/{name} holds {} (inode {inode:?}), confirmed {}; the \
                     last changes of worker {worker}: {:#?}",
                    describe(found.as_ref()),
                    describe(confirmed.as_ref()),
                    &state.history[state.history.len().saturating_sub(40)..],
                );
            }
            *confirmed = found;
        }
        state.history.push(format!("{context}: verified"));
    }
    // No name the workers did not make (their temporaries aside).
    for entry in fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let known = (0..states.len()).any(|worker| {
            name == format!("w{worker}-tmp")
                || (0..NAMES_PER_WORKER).any(|index| name == durable_name(worker, index))
        });
        assert!(known, "{context}: unexpected durable/{name}");
    }
    exact
}

/// Reads every file under `dir` in full: no I/O or checksum error after the crash.
fn read_tree(dir: &Path) -> u64 {
    let mut bytes = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            bytes += read_tree(&entry.path());
        } else {
            bytes += fs::read(entry.path())
                .unwrap_or_else(|e| panic!("reading {}: {e}", entry.path().display()))
                .len() as u64;
        }
    }
    bytes
}

fn fsck_clean(sb: &Sandbox, fast: &str, slow: &str, context: &str) {
    for extra in [None, Some("--verify-data")] {
        let mut args = vec!["fsck", fast, slow];
        args.extend(extra);
        let out = sb.aegis(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{context}: aegis {args:?}:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("clean"), "{context}: {stdout}");
    }
}

#[test]
fn sigkill_during_heavy_work_keeps_fsynced_files_and_a_clean_pool() {
    let seed = std::env::var("AEGIS_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            now.as_nanos() as u64 ^ u64::from(std::process::id())
        });
    println!("seed {seed} (replay with AEGIS_KILL_SEED={seed})");
    let mut rng = Rng(seed);
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("512M", "1G");
    let mut states: Vec<Durable> = (0..WORKERS).map(|_| Durable::new()).collect();
    for number in 1..=ROUNDS {
        let context = format!("seed {seed}, round {number}");
        let started = Instant::now();
        let mnt = sb.mount(&fast, &slow);
        let round = Round {
            durable_dir: mnt.path("durable"),
            churn_dir: mnt.path("churn"),
            killing: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            confirmed: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
            crash_errors: Mutex::new(Vec::new()),
        };
        if number == 1 {
            fs::create_dir(&round.durable_dir).unwrap();
            fs::create_dir(&round.churn_dir).unwrap();
            fsync_dir(&mnt.mountpoint).unwrap();
        }
        let delay = Duration::from_millis(100 + rng.below(1500));
        let killed_at = std::thread::scope(|scope| {
            let stop = SetOnDrop(&round.stop);
            for (index, state) in states.iter_mut().enumerate() {
                let worker_rng = Rng(rng.next_u64());
                let round = &round;
                scope.spawn(move || worker(round, index, state, worker_rng));
            }
            // Kill once the work is well under way: every worker confirmed some change.
            let deadline = Instant::now() + Duration::from_secs(20);
            while round.confirmed.load(Ordering::Relaxed) < 2 * WORKERS as u64
                && round.errors.lock().unwrap().is_empty()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(delay);
            round.killing.store(true, Ordering::SeqCst);
            let killed_at = started.elapsed();
            signal_serving_process(&sb, "tank", "-KILL");
            drop(stop);
            killed_at
        });
        let errors = round.errors.into_inner().unwrap();
        assert!(errors.is_empty(), "{context}: {errors:?}");
        let confirmed = round.confirmed.into_inner();
        assert!(
            confirmed >= 2 * WORKERS as u64,
            "{context}: only {confirmed} durable changes before the kill"
        );
        let crash_errors = round.crash_errors.into_inner().unwrap();

        // The dead mount is still there; `aegis mount` replaces it, without stacking.
        assert_eq!(mount_count(&mnt.mountpoint), 1, "{context}");
        mnt.mount_over_dead(&fast, &slow);
        assert_eq!(
            mount_count(&mnt.mountpoint),
            1,
            "{context}: the dead mount is still under the new one"
        );
        let exact = verify_durable(&round.durable_dir, &mut states, &context);
        let churn_bytes = read_tree(&round.churn_dir);
        mnt.unmount();
        fsck_clean(&sb, &fast, &slow, &context);
        println!(
            "round {number}: killed at {} ms ({} ms after the warm-up), {} operations, {confirmed} durable \
             changes confirmed, {exact} of {} durable names checked exactly, {} MiB of churn \
             read back, errors after the kill: {crash_errors:?}; {:.1} s",
            killed_at.as_millis(),
            delay.as_millis(),
            round.ops.into_inner(),
            WORKERS * NAMES_PER_WORKER,
            churn_bytes >> 20,
            started.elapsed().as_secs_f64(),
        );
    }
}
