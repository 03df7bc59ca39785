//! Device management of a served pool (`/v1/devices...`): adding a member, growing one, and
//! removing, replacing or shrinking one, whose block moves run on a thread of their own
//! ([`Evacuator`]), throttled, resumed at mount when a crash or an unmount cut a removal
//! short, and stopped before unmount; and the health watcher that faults a failing member
//! and moves its blocks off. The work itself is `fs_core::fs::devices`. The member list
//! carries each disk's SMART health ([`crate::smart`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use fs_core::device::Backend;
use fs_core::fs::devices::{empty_faulted, empty_member, shrink_member, EmptyOptions, NewMember};
use fs_core::fs::Filesystem;
use fs_core::pool::{open_new_member, MemberSpec};
use fs_core::types::{DeviceIndex, Tier};
use fs_core::FsError;

use crate::api::{
    DeviceAdd, DeviceAdded, DeviceRemove, DeviceReplace, DeviceResize, Devices, Evacuation, Resized,
};
use crate::http::Failure;
use crate::smart::SmartCache;

/// Files a degraded pool's `GET /v1/devices` names at most.
const UNAVAILABLE_LISTED: usize = 100;

/// Moves blocks off members (removed, replaced, shrunk or faulted), one member at a time, on
/// a thread of its own; and watches the members' health.
pub struct Evacuator {
    backend: Backend,
    run: Arc<Mutex<Option<Run>>>,
    /// Faults failing members and empties faulted ones (see [`Evacuator::watch`]).
    watcher: Mutex<Option<Watcher>>,
    smart: SmartCache,
}

struct Run {
    cancel: Arc<AtomicBool>,
    status: Arc<Mutex<Evacuation>>,
    thread: Option<JoinHandle<()>>,
}

impl Run {
    fn is_running(&self) -> bool {
        self.thread
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The HTTP status of a device management error.
fn failure(err: &FsError) -> Failure {
    let status = match err {
        FsError::Refused { .. } | FsError::Invalid(_) => 400,
        FsError::Conflict(_) | FsError::ReadOnly => 409,
        _ => 500,
    };
    Failure::new(status, err.to_string())
}

fn parse_tier(text: &str) -> Result<Tier, Failure> {
    match text {
        "fast" => Ok(Tier::Fast),
        "slow" => Ok(Tier::Slow),
        other => Err(Failure::bad_request(format!(
            "tier must be fast or slow, not '{other}'"
        ))),
    }
}

/// The member `name` designates: its index, or the path it was opened from (any path to the
/// same file or device).
fn resolve(fs: &Filesystem, name: &str) -> Result<(DeviceIndex, String), Failure> {
    let members = fs.status().members;
    if let Ok(index) = name.parse::<u16>() {
        if let Some(member) = members.iter().find(|m| m.index.0 == index) {
            return Ok((member.index, member.path.clone()));
        }
    }
    let wanted = std::fs::canonicalize(name).unwrap_or_else(|_| PathBuf::from(name));
    members
        .iter()
        .find(|m| {
            !m.path.is_empty()
                && std::fs::canonicalize(&m.path).unwrap_or_else(|_| PathBuf::from(&m.path))
                    == wanted
        })
        .map(|m| (m.index, m.path.clone()))
        .ok_or_else(|| {
            Failure::new(
                404,
                format!("{name} is not a member of this pool (give its path or its index)"),
            )
        })
}

impl Evacuator {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            run: Arc::new(Mutex::new(None)),
            watcher: Mutex::new(None),
            smart: SmartCache::default(),
        }
    }

    /// The members with the SMART health of those that are disks (cached; no pool lock is
    /// held while `smartctl` runs), the emptying under way (or the last one), and what a
    /// degraded pool cannot read.
    pub fn devices(&self, fs: &Filesystem) -> Result<Devices, Failure> {
        let status = crate::service::api_status(&fs.status(), "", "", std::time::Instant::now());
        let mut members = status.members;
        let paths: Vec<&str> = members.iter().map(|m| m.path.as_str()).collect();
        let health = self.smart.health_of_all(&paths);
        for (member, health) in members.iter_mut().zip(health) {
            member.health = health;
        }
        Ok(Devices {
            members,
            evacuation: self.evacuation(),
            unavailable_files: fs
                .files_on_missing_members(UNAVAILABLE_LISTED)
                .map_err(|e| failure(&e))?,
        })
    }

    /// The emptying under way, or the last one of this mount.
    pub fn evacuation(&self) -> Option<Evacuation> {
        lock(&self.run)
            .as_ref()
            .map(|run| lock(&run.status).clone())
    }

    /// Opens and checks a new device (see `pool::open_new_member`).
    fn open_new(
        &self,
        fs: &Filesystem,
        path: &str,
        tier: Tier,
        size: Option<u64>,
        force: bool,
    ) -> Result<NewMember, Failure> {
        let members: Vec<PathBuf> = fs.pool().members().iter().map(|m| m.path.clone()).collect();
        let spec = MemberSpec {
            path: PathBuf::from(path),
            tier,
            create_size: size,
        };
        let (device, lock) =
            open_new_member(&spec, force, self.backend, &members).map_err(|e| failure(&e))?;
        Ok(NewMember {
            device,
            path: std::fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path)),
            lock: Some(lock),
            tier,
        })
    }

    /// `POST /v1/devices/add`.
    pub fn add(&self, fs: &Filesystem, request: &DeviceAdd) -> Result<DeviceAdded, Failure> {
        let tier = parse_tier(&request.tier)?;
        let new = self.open_new(fs, &request.path, tier, request.size, request.force)?;
        let path = new.path.display().to_string();
        let index = fs.add_member(new).map_err(|e| failure(&e))?;
        tracing::info!(member = index.0, %path, %tier, "device added");
        Ok(DeviceAdded {
            index: index.0,
            path,
            tier: tier.to_string(),
            evacuation: None,
        })
    }

    /// `POST /v1/devices/remove`: marks the member and starts emptying it.
    pub fn remove(
        &self,
        fs: &Arc<Filesystem>,
        request: &DeviceRemove,
    ) -> Result<Evacuation, Failure> {
        let (index, path) = resolve(fs, &request.device)?;
        let mut run = lock(&self.run);
        refuse_if_running(run.as_ref())?;
        // Run again after a failure: the member is still being removed; emptying resumes.
        if !fs.members_being_removed().contains(&index) {
            fs.begin_removal(index).map_err(|e| failure(&e))?;
        }
        tracing::info!(member = index.0, %path, "removing a device: emptying it first");
        Ok(start(
            &mut run,
            fs,
            index,
            path,
            Job::Empty { prefer: None },
            request.rate,
        ))
    }

    /// `POST /v1/devices/replace`: adds the new device, marks the old one and starts
    /// emptying it onto the new one.
    pub fn replace(
        &self,
        fs: &Arc<Filesystem>,
        request: &DeviceReplace,
    ) -> Result<DeviceAdded, Failure> {
        let (old, old_path) = resolve(fs, &request.old)?;
        let tier = fs
            .pool()
            .tier_of(old)
            .ok_or_else(|| Failure::new(404, format!("no member {}", old.0)))?;
        let mut run = lock(&self.run);
        refuse_if_running(run.as_ref())?;
        // Run again after a failure: the new device joined already and the old one is still
        // being removed; emptying it onto the new one resumes.
        let resumed = if fs.members_being_removed().contains(&old) {
            resolve(fs, &request.new).ok()
        } else {
            None
        };
        let (index, path) = match resumed {
            Some(joined) => joined,
            None => {
                let new = self.open_new(fs, &request.new, tier, request.size, request.force)?;
                let path = new.path.display().to_string();
                (fs.replace_member(old, new).map_err(|e| failure(&e))?, path)
            }
        };
        tracing::info!(old = old.0, new = index.0, %path, "replacing a device");
        let evacuation = start(
            &mut run,
            fs,
            old,
            old_path,
            Job::Empty {
                prefer: Some(index),
            },
            request.rate,
        );
        Ok(DeviceAdded {
            index: index.0,
            path,
            tier: tier.to_string(),
            evacuation: Some(evacuation),
        })
    }

    /// `POST /v1/devices/resize`: grows member `device` at once, or starts shrinking it.
    /// An image file is extended first when it is to grow past its length, and truncated
    /// once it has shrunk; a block device grows into its (grown) partition and, shrunk,
    /// leaves the partition for the operator to shrink next.
    pub fn resize(&self, fs: &Arc<Filesystem>, request: &DeviceResize) -> Result<Resized, Failure> {
        let (index, path) = resolve(fs, &request.device)?;
        let image = std::fs::metadata(&path)
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|_| PathBuf::from(&path));
        let current = fs
            .status()
            .members
            .iter()
            .find(|m| m.index == index)
            .map_or(0, |m| m.size);
        let wanted = match request.size.as_deref() {
            None | Some("max") => None,
            Some(text) => Some(crate::units::parse_size(text).map_err(Failure::bad_request)?),
        };
        let mut run = lock(&self.run);
        refuse_if_running(run.as_ref())?;
        match wanted {
            Some(size) if size < current => {
                let size = fs.begin_shrink(index, size).map_err(|e| failure(&e))?;
                tracing::info!(member = index.0, %path, size, "shrinking a device: moving what lies past its new end");
                let evacuation = start(
                    &mut run,
                    fs,
                    index,
                    path.clone(),
                    Job::Shrink { size, image },
                    request.rate,
                );
                Ok(Resized {
                    member: index.0,
                    path,
                    size_bytes: current,
                    evacuation: Some(evacuation),
                })
            }
            _ => {
                if let (Some(image), Some(size)) = (&image, wanted) {
                    let grown = std::fs::OpenOptions::new()
                        .write(true)
                        .open(image)
                        .and_then(|file| {
                            if file.metadata()?.len() < size {
                                file.set_len(size)?;
                            }
                            Ok(())
                        });
                    grown.map_err(|e| {
                        Failure::new(
                            500,
                            format!("cannot extend the image file {}: {e}", image.display()),
                        )
                    })?;
                }
                let size = fs.grow_member(index, wanted).map_err(|e| failure(&e))?;
                tracing::info!(member = index.0, %path, size, "device grown");
                Ok(Resized {
                    member: index.0,
                    path,
                    size_bytes: size,
                    evacuation: None,
                })
            }
        }
    }

    /// `POST /v1/devices/cancel`: stops the emptying under way; the member takes new blocks
    /// again (what moved stays moved; a replacement stays a member).
    pub fn cancel(&self, fs: &Filesystem) -> Result<Evacuation, Failure> {
        let run = lock(&self.run).take();
        let Some(mut run) = run.filter(Run::is_running) else {
            return Err(Failure::new(409, "no device is being removed or replaced"));
        };
        run.cancel.store(true, Ordering::Relaxed);
        if let Some(thread) = run.thread.take() {
            let _ = thread.join();
        }
        let status = lock(&run.status).clone();
        let member = DeviceIndex(status.member);
        if status.action == "shrink" {
            fs.cancel_shrink(member);
        } else if fs.members_being_removed().contains(&member) {
            fs.cancel_removal(member).map_err(|e| failure(&e))?;
        }
        tracing::info!(member = member.0, "removal cancelled");
        *lock(&self.run) = Some(run);
        Ok(status)
    }

    /// Resumes emptying the members a crash or an unmount left being removed.
    pub fn resume(&self, fs: &Arc<Filesystem>, rate: u64) {
        let Some(&index) = fs.members_being_removed().first() else {
            return;
        };
        let path = member_path(fs, index);
        tracing::info!(member = index.0, "resuming the removal of a device");
        start(
            &mut lock(&self.run),
            fs,
            index,
            path,
            Job::Empty { prefer: None },
            rate,
        );
    }

    /// Starts watching the members' health every [`WATCH_EVERY`]: a member whose errors pass
    /// the fault thresholds is faulted, and a faulted member's blocks are moved off (once a
    /// mount: a member whose emptying failed is left to the operator).
    pub fn watch(&self, fs: &Arc<Filesystem>) {
        let stop = Arc::new(AtomicBool::new(false));
        let (fs, slot, thread_stop) = (Arc::clone(fs), Arc::clone(&self.run), Arc::clone(&stop));
        let spawned = std::thread::Builder::new()
            .name("aegis-health".into())
            .spawn(move || {
                let mut emptied = Vec::new();
                while !thread_stop.load(Ordering::Relaxed) {
                    check_health(&fs, &slot, &mut emptied);
                    let until = std::time::Instant::now() + WATCH_EVERY;
                    while std::time::Instant::now() < until && !thread_stop.load(Ordering::Relaxed)
                    {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            });
        match spawned {
            Ok(thread) => *lock(&self.watcher) = Some(Watcher { stop, thread }),
            Err(err) => tracing::error!(error = %err, "cannot start the device health watcher"),
        }
    }

    /// Stops the health watcher and the emptying under way (before unmount): a removal
    /// resumes at the next mount.
    pub fn stop(&self) {
        if let Some(watcher) = lock(&self.watcher).take() {
            watcher.stop.store(true, Ordering::Relaxed);
            let _ = watcher.thread.join();
        }
        let run = lock(&self.run).take();
        if let Some(mut run) = run {
            run.cancel.store(true, Ordering::Relaxed);
            if let Some(thread) = run.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// How often the health watcher looks at the members' error counters.
const WATCH_EVERY: Duration = Duration::from_secs(2);

struct Watcher {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// Faults the members whose errors passed the thresholds, then starts emptying a faulted
/// member (not one already tried this mount, in `emptied`: one already empty finishes at
/// once) unless something runs.
fn check_health(fs: &Arc<Filesystem>, slot: &Mutex<Option<Run>>, emptied: &mut Vec<DeviceIndex>) {
    if fs.is_read_only() {
        return;
    }
    for (index, errors) in fs.members_failing() {
        let why = format!(
            "{} read, {} write and {} checksum errors",
            errors.read, errors.write, errors.checksum
        );
        if let Err(err) = fs.fault_member(index, &why) {
            tracing::error!(member = index.0, error = %err, "cannot mark a failing member faulted");
        }
    }
    let mut run = lock(slot);
    if run.as_ref().is_some_and(Run::is_running) {
        return;
    }
    let faulted = fs.faulted_members();
    if let Some(&index) = faulted.iter().find(|index| !emptied.contains(index)) {
        emptied.push(index);
        let path = member_path(fs, index);
        tracing::warn!(
            member = index.0,
            "moving the blocks of a faulted member to the others"
        );
        start(&mut run, fs, index, path, Job::EmptyFaulted, 0);
    }
}

/// The path member `index` was opened from (empty while it is missing).
fn member_path(fs: &Filesystem, index: DeviceIndex) -> String {
    fs.status()
        .members
        .iter()
        .find(|m| m.index == index)
        .map(|m| m.path.clone())
        .unwrap_or_default()
}

fn refuse_if_running(run: Option<&Run>) -> Result<(), Failure> {
    match run {
        Some(run) if run.is_running() => Err(Failure::new(
            409,
            format!(
                "member {} is still being emptied; wait for it or cancel it first",
                lock(&run.status).member
            ),
        )),
        _ => Ok(()),
    }
}

/// What the thread does to a member.
enum Job {
    /// Empties it so it leaves the pool (remove, replace); `prefer` takes its blocks first.
    Empty { prefer: Option<DeviceIndex> },
    /// Moves its blocks off, leaving it in the pool (a faulted member).
    EmptyFaulted,
    /// Moves what lies past `size` bytes, then shrinks it; an image file is truncated to
    /// the new size afterwards.
    Shrink { size: u64, image: Option<PathBuf> },
}

/// Starts `job` on member `index` on a thread, kept in `slot` (in place of the last one);
/// the progress it starts with.
fn start(
    slot: &mut Option<Run>,
    fs: &Arc<Filesystem>,
    index: DeviceIndex,
    path: String,
    job: Job,
    rate: u64,
) -> Evacuation {
    let cancel = Arc::new(AtomicBool::new(false));
    let (action, replacement, target_size) = match &job {
        Job::Empty { prefer: Some(new) } => ("replace", Some(new.0), None),
        Job::Empty { prefer: None } => ("remove", None, None),
        Job::EmptyFaulted => ("faulted", None, None),
        Job::Shrink { size, .. } => ("shrink", None, Some(*size)),
    };
    let status = Arc::new(Mutex::new(Evacuation {
        member: index.0,
        path,
        action: action.into(),
        replacement,
        target_size,
        rate,
        running: true,
        ..Evacuation::default()
    }));
    let (fs, thread_cancel, thread_status) =
        (Arc::clone(fs), Arc::clone(&cancel), Arc::clone(&status));
    let spawned = std::thread::Builder::new()
        .name("aegis-evacuate".into())
        .spawn(move || run(&fs, index, &job, rate, &thread_cancel, &thread_status));
    let thread = match spawned {
        Ok(thread) => Some(thread),
        Err(err) => {
            let mut status = lock(&status);
            status.running = false;
            status.error = Some(format!("cannot start a thread: {err}"));
            None
        }
    };
    let started = lock(&status).clone();
    *slot = Some(Run {
        cancel,
        status,
        thread,
    });
    started
}

fn run(
    fs: &Filesystem,
    index: DeviceIndex,
    job: &Job,
    rate: u64,
    cancel: &AtomicBool,
    status: &Mutex<Evacuation>,
) {
    let report = |progress: &fs_core::fs::devices::Evacuation| {
        let mut status = lock(status);
        status.blocks_total = progress.blocks_total;
        status.blocks_moved = progress.blocks_moved;
        status.bytes_total = progress.bytes_total;
        status.bytes_moved = progress.bytes_moved;
        status.elapsed_ms = progress.elapsed_ms;
    };
    let result = match job {
        Job::Empty { prefer } => {
            let options = EmptyOptions {
                rate_bytes_per_sec: rate,
                prefer: *prefer,
                cancel,
            };
            empty_member(fs, index, options, report)
        }
        Job::EmptyFaulted => {
            let options = EmptyOptions {
                rate_bytes_per_sec: rate,
                prefer: None,
                cancel,
            };
            empty_faulted(fs, index, options, report)
        }
        Job::Shrink { size, image } => {
            let options = EmptyOptions {
                rate_bytes_per_sec: rate,
                prefer: Some(index),
                cancel,
            };
            let result = shrink_member(fs, index, *size, options, report);
            if !result.as_ref().is_ok_and(|done| done.finished) {
                fs.cancel_shrink(index);
            }
            match (&result, image) {
                (Ok(done), Some(image)) if done.finished => truncate_image(fs, index, image, *size),
                _ => {}
            }
            result
        }
    };
    let mut status = lock(status);
    status.running = false;
    match result {
        Ok(done) => {
            status.finished = done.finished;
            if done.finished {
                tracing::info!(member = index.0, path = %status.path, action = %status.action, "done");
            }
        }
        Err(err) => {
            tracing::error!(member = index.0, action = %status.action, error = %err, "moving blocks off the device failed");
            status.error = Some(err.to_string());
        }
    }
}

/// Gives an image file the size its member shrank to (a block device is left to the
/// operator: shrink the partition next).
fn truncate_image(fs: &Filesystem, index: DeviceIndex, image: &std::path::Path, size: u64) {
    let truncated = std::fs::OpenOptions::new()
        .write(true)
        .open(image)
        .and_then(|file| file.set_len(size));
    match truncated {
        Ok(()) => {
            if let Some(device) = fs.pool().device(index) {
                if let Err(err) = device.refresh_size() {
                    tracing::warn!(error = %err, "cannot measure the shrunk image file again");
                }
            }
        }
        Err(err) => tracing::warn!(
            image = %image.display(),
            error = %err,
            "the member shrank, but its image file could not be truncated; it keeps its old length"
        ),
    }
}
