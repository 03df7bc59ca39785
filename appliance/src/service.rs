//! One mounted pool and the control API over it: [`MountedPool`] opens a pool, mounts it with
//! FUSE on a thread of its own and unmounts it cleanly; [`PoolService`] answers the pool's
//! `/v1/...` requests (status, properties, scrub, tiers, snapshots). The standalone serving
//! process (`aegis mount`) and `aegisd` both serve pools through it.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use anyhow::{bail, Context};
use fs_core::device::Backend;
use fs_core::fs::props::{Property, Source};
use fs_core::fs::scrub::Scrubber;
use fs_core::fs::snapshot::{Change, SnapshotInfo};
use fs_core::fs::{Filesystem, FsConfig, FsStatus};
use fs_core::fuse::{Invalidator, MountConfig};
use fs_core::meta::records::{FileKind, MigrationRecord};
use fs_core::types::InodeId;
use fs_core::types::Tier;
use fs_core::FsError;
use tiering::migrate::Progress;

use crate::api::{
    DedupTable, DeviceAdd, DeviceRemove, DeviceReplace, DeviceResize, DiskUsage, FsckReport,
    MemberStatus, MigrateRequest, MigrationEntry, MigrationPlan, MigrationProgress, Pin, PinDone,
    PinRequest, PlannedFile, PropertyValue, RollbackDone, RollbackRequest, ScrubStart, ScrubStatus,
    SetProperties, Snapshot, SnapshotChange, SnapshotCreate, SnapshotDeleted, SpaceSavings, Status,
    TierHeat, TierStatus, TierUsage,
};
use crate::devices::Evacuator;
use crate::http::{json_response, parse_json, query_param, Failure, Reply};

/// Removes the mount a serving process (or aegisd) left behind when it died: the kernel
/// answers every access to it with ENOTCONN until it is unmounted. Whether there was one.
pub fn remove_stale_mount(path: &Path) -> anyhow::Result<bool> {
    let path = std::path::absolute(path)?;
    let stale =
        std::fs::metadata(&path).is_err_and(|err| err.raw_os_error() == Some(libc::ENOTCONN));
    if !stale || !is_mountpoint(&path) {
        return Ok(false);
    }
    let result = std::process::Command::new("umount")
        .arg("-l")
        .arg(&path)
        .status()
        .context("cannot run umount")?;
    if !result.success() {
        bail!("cannot remove the stale mount at {}", path.display());
    }
    Ok(true)
}

/// How to open and mount one pool.
pub struct MountRequest<'a> {
    /// The name the API knows the pool by: the config's name under aegisd, else its label.
    pub name: Option<String>,
    pub devices: &'a [PathBuf],
    pub mountpoint: &'a Path,
    pub backend: Backend,
    pub secret: Option<&'a fs_core::pool::Secret>,
    pub config: FsConfig,
    pub policy: tiering::Policy,
}

/// A pool mounted with FUSE, its session running on a thread of its own.
pub struct MountedPool {
    pub service: Arc<PoolService>,
    unmounter: Mutex<fuser::SessionUnmounter>,
    /// The session's thread, until [`MountedPool::wait`] has joined it.
    session: Mutex<Option<std::thread::JoinHandle<std::io::Result<()>>>>,
}

impl MountedPool {
    /// Opens the pool, mounts it, and resumes a scrub an unmount or crash interrupted.
    pub fn mount(request: MountRequest<'_>) -> anyhow::Result<Self> {
        let mountpoint = std::fs::canonicalize(request.mountpoint).with_context(|| {
            format!("mountpoint {} does not exist", request.mountpoint.display())
        })?;
        if !mountpoint.is_dir() {
            bail!("mountpoint {} is not a directory", mountpoint.display());
        }
        if is_mountpoint(&mountpoint) {
            bail!("{} is already a mountpoint", mountpoint.display());
        }
        let started = Instant::now();
        let pool = fs_core::pool::open_paths_with(request.devices, request.backend, request.secret)
            .context("cannot open the pool")?;
        let label = pool.label().to_owned();
        let fs = Filesystem::new(pool, request.config).context("cannot load the filesystem")?;
        fs.start_committer();
        let config = MountConfig {
            fsname: if label.is_empty() {
                "aegisfs".into()
            } else {
                label.clone()
            },
            ..MountConfig::default()
        };
        let mut session = fs_core::fuse::session(Arc::clone(&fs), &mountpoint, &config)
            .with_context(|| format!("cannot mount at {}", mountpoint.display()))?;
        let unmounter = session.unmount_callable();
        let fuse_transport = if session.uses_io_uring() {
            "io_uring"
        } else {
            "/dev/fuse"
        };
        tracing::info!(fuse_transport, "serving {}", mountpoint.display());
        if let Err(err) = fs_core::fuse::set_readahead(&mountpoint, fs_core::fuse::READAHEAD_KIB) {
            tracing::warn!(error = %err, "cannot raise the readahead window; sequential reads will be slower");
        }
        let service = Arc::new(PoolService {
            name: request.name.unwrap_or(label),
            fs,
            mountpoint: mountpoint.display().to_string(),
            fuse_transport,
            started,
            scrub: Mutex::new(None),
            invalidator: Invalidator::new(&session),
            migration: Mutex::new(None),
            policy: request.policy,
            next_migration: Mutex::new(None),
            devices: Evacuator::new(request.backend),
        });
        let session = std::thread::Builder::new()
            .name("aegis-fuse".into())
            .spawn(move || fs_core::fuse::serve(session))
            .context("cannot start the FUSE session thread")?;
        service.resume_scrub();
        service.devices.resume(&service.fs, 0);
        service.devices.watch(&service.fs);
        Ok(Self {
            service,
            unmounter: Mutex::new(unmounter),
            session: Mutex::new(Some(session)),
        })
    }

    /// Asks the kernel to unmount; [`MountedPool::wait`] then finishes. A mount still in use
    /// (a file open on it, a shell inside it) is detached instead, as `umount -l` and
    /// libfuse's own unmount do: it leaves the namespace at once, and the session ends, with
    /// its final commit, when the last file on it is closed.
    pub fn request_unmount(&self) -> anyhow::Result<()> {
        let unmounted = self
            .unmounter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unmount();
        let mountpoint = Path::new(&self.service.mountpoint);
        match unmounted {
            Err(err) if is_mountpoint(mountpoint) => {
                tracing::warn!(
                    error = %err,
                    "{} is in use: detached, it is unmounted when the last file on it is closed",
                    mountpoint.display()
                );
                nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH)
                    .with_context(|| format!("cannot detach {}", mountpoint.display()))
            }
            unmounted => {
                unmounted.with_context(|| format!("cannot unmount {}", mountpoint.display()))
            }
        }
    }

    /// Whether the FUSE session has ended (unmounted by us or from outside).
    pub fn is_unmounted(&self) -> bool {
        self.session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_none_or(std::thread::JoinHandle::is_finished)
    }

    /// Waits for the session to end (after an unmount), stops a running scrub (its stored
    /// progress lets the next mount resume it) and makes everything durable. Only the first
    /// call waits.
    pub fn wait(&self) -> anyhow::Result<()> {
        let session = self
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(session) = session else {
            return Ok(());
        };
        let result = session
            .join()
            .map_err(|_| anyhow::anyhow!("the FUSE session thread panicked"))?;
        drop(self.service.scrubber().take());
        self.service.devices.stop();
        self.service.fs.shutdown().context("final commit failed")?;
        result.context("FUSE session failed")?;
        tracing::info!(mountpoint = %self.service.mountpoint, "unmounted");
        Ok(())
    }
}

/// Whether `path` is currently a mountpoint (per /proc/self/mounts).
pub fn is_mountpoint(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .any(|target| Path::new(&target.replace("\\040", " ")) == path)
}

/// Builds the API status from the filesystem's own report.
pub fn api_status(fs: &FsStatus, name: &str, mountpoint: &str, started: Instant) -> Status {
    let members: Vec<MemberStatus> = fs
        .members
        .iter()
        .map(|m| MemberStatus {
            index: m.index.0,
            tier: m.tier.to_string(),
            path: m.path.clone(),
            state: m.state.as_str().into(),
            metadata_copy: m.metadata_copy,
            size_bytes: m.size,
            data_bytes: m.data_bytes,
            free_bytes: m.free_bytes,
            used_bytes: m.data_bytes - m.free_bytes,
            bytes_read: m.bytes_read,
            bytes_written: m.bytes_written,
            read_ops: m.read_ops,
            write_ops: m.write_ops,
            read_errors: m.errors.read,
            write_errors: m.errors.write,
            checksum_errors: m.errors.checksum,
            repaired: m.errors.repaired,
            health: None,
        })
        .collect();
    let tiers = [Tier::Fast, Tier::Slow]
        .into_iter()
        .filter(|tier| fs.members.iter().any(|m| m.tier == *tier))
        .map(|tier| {
            let of_tier = || members.iter().filter(move |m| m.tier == tier.as_str());
            TierUsage {
                tier: tier.to_string(),
                data_bytes: of_tier().map(|m| m.data_bytes).sum(),
                used_bytes: of_tier().map(|m| m.used_bytes).sum(),
                free_bytes: of_tier().map(|m| m.free_bytes).sum(),
            }
        })
        .collect();
    Status {
        name: name.to_owned(),
        label: fs.label.clone(),
        pool_uuid: fs.pool_uuid.clone(),
        mountpoint: mountpoint.to_owned(),
        // Known to the serving process only: `PoolService::status` fills it in.
        fuse_transport: String::new(),
        pid: std::process::id(),
        uptime_secs: started.elapsed().as_secs(),
        block_size: fs.block_size,
        members,
        tiers,
        inodes: fs.inodes,
        commits: fs.commits,
        last_commit_ms_ago: fs.last_commit_ms_ago,
        checksum_errors: fs.checksum_errors,
        read_only_cause: fs.read_only_cause.clone(),
        metadata_used_bytes: fs.metadata_used,
        metadata_capacity_bytes: fs.metadata_capacity,
        snapshots: fs.snapshots,
        snapshot_bytes: fs.snapshot_bytes,
        encrypted: fs.encrypted,
        space: SpaceSavings {
            logical_bytes: fs.totals.logical,
            stored_bytes: fs.totals.stored,
            referenced_bytes: fs.totals.logical_refs,
            compression_ratio: fs.totals.compression_ratio(),
            dedup_ratio: fs.totals.dedup_ratio(),
        },
        dedup: fs.dedup.map(|d| DedupTable {
            entries: d.entries,
            limit: d.limit,
            table_bytes: d.table_bytes,
        }),
    }
}

/// What a pool's control API serves from: the filesystem, and the scrub and migration
/// running on it.
pub struct PoolService {
    /// The name the API knows this pool by.
    pub name: String,
    pub fs: Arc<Filesystem>,
    pub mountpoint: String,
    /// See [`Status::fuse_transport`].
    fuse_transport: &'static str,
    started: Instant,
    scrub: Mutex<Option<Scrubber>>,
    /// Makes the kernel forget what a rollback or a snapshot deletion changed.
    invalidator: Invalidator,
    /// The tier migration running (or last run) in this process.
    migration: Mutex<Option<Migration>>,
    /// The migration policy (the fast tier's watermarks) this pool was mounted with.
    policy: tiering::Policy,
    /// When the next scheduled migration runs (seconds since the epoch), if one is scheduled:
    /// aegisd keeps it current.
    next_migration: Mutex<Option<i64>>,
    /// Device management, and the emptying of a member being removed or replaced.
    pub devices: Evacuator,
}

/// A tier migration on its own thread.
struct Migration {
    cancel: Arc<AtomicBool>,
    progress: Arc<Mutex<Progress>>,
    rate: u64,
    /// How it ended, once it has.
    outcome: Arc<Mutex<Option<String>>>,
}

impl PoolService {
    pub fn status(&self) -> Status {
        Status {
            fuse_transport: self.fuse_transport.into(),
            ..api_status(
                &self.fs.status(),
                &self.name,
                &self.mountpoint,
                self.started,
            )
        }
    }

    fn scrubber(&self) -> MutexGuard<'_, Option<Scrubber>> {
        self.scrub.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resumes a scrub an unmount or crash interrupted.
    fn resume_scrub(&self) {
        match self.fs.scrub_state() {
            Ok(Some(state)) if state.phase.is_running() => {
                tracing::info!("resuming the interrupted scrub");
                match Scrubber::start(Arc::clone(&self.fs), state) {
                    Ok(scrubber) => *self.scrubber() = Some(scrubber),
                    Err(err) => tracing::error!(error = %err, "cannot resume the scrub"),
                }
            }
            Ok(_) => {}
            Err(err) => tracing::error!(error = %err, "cannot read the scrub state"),
        }
    }

    /// The running scrub's state, else the stored one.
    pub fn scrub_status(&self) -> Result<ScrubStatus, (u16, String)> {
        let live = self.scrubber().as_ref().map(Scrubber::state);
        let state = match live {
            Some(state) => Some(state),
            None => self.fs.scrub_state().map_err(|e| fs_error(&e))?,
        };
        let Some(state) = state else {
            return Ok(ScrubStatus {
                state: "none".into(),
                ..ScrubStatus::default()
            });
        };
        let elapsed_secs = state.elapsed_ms as f64 / 1000.0;
        let rate = if state.elapsed_ms > 0 {
            (state.bytes_checked as f64 / elapsed_secs) as u64
        } else {
            0
        };
        let fraction = state.fraction_done();
        let eta = (state.phase.is_running() && fraction > 0.0)
            .then(|| (elapsed_secs * (1.0 - fraction) / fraction).round() as u64);
        let mut damaged_paths: Vec<String> = self
            .fs
            .paths_of(&state.damaged_inodes)
            .map_err(|e| fs_error(&e))?
            .into_iter()
            .map(|(ino, path)| path.unwrap_or_else(|| format!("<inode {ino}, no longer named>")))
            .collect();
        // Files damaged only in snapshots, as `/.snapshots/<name>/<path>`.
        damaged_paths.extend(
            self.fs
                .snapshot_paths_of(&state.damaged_in_snapshots)
                .map_err(|e| fs_error(&e))?,
        );
        Ok(ScrubStatus {
            state: state.phase.as_str().into(),
            running: state.phase.is_running(),
            percent: (fraction * 1000.0).round() / 10.0,
            started: Some(state.started),
            finished: state.finished,
            blocks_total: state.blocks_total,
            blocks_checked: state.blocks_checked,
            bytes_checked: state.bytes_checked,
            metadata_pages_total: state.pages_total,
            metadata_pages_checked: state.pages_checked,
            rate_bytes_per_sec: rate,
            elapsed_ms: state.elapsed_ms,
            eta_secs: eta,
            rate_limit_bytes_per_sec: state.rate,
            errors_found: state.errors_found,
            repaired: state.repaired,
            unrecoverable: state.unrecoverable,
            damaged_paths,
        })
    }

    /// `/v1/snapshots/{name}[/rollback|/diff]`.
    fn snapshot_route(
        &self,
        method: &tiny_http::Method,
        body: &str,
        rest: &str,
        query: &str,
    ) -> Reply {
        use tiny_http::Method::{Delete, Get, Post};
        let (name, action) = rest.split_once('/').unwrap_or((rest, ""));
        let name = percent_encoding::percent_decode_str(name)
            .decode_utf8()
            .map_err(|_| (400, "the snapshot name is not UTF-8".to_owned()))?
            .into_owned();
        let fs = &self.fs;
        match (method, action) {
            (Delete, "") => {
                let released = self.delete_snapshot(&name)?;
                Ok(json_response(
                    200,
                    &SnapshotDeleted {
                        name,
                        released_bytes: released,
                    },
                ))
            }
            (Post, "rollback") => {
                let wanted: RollbackRequest = parse_json(body)?;
                let report = fs
                    .snapshot_rollback(&name, wanted.force)
                    .map_err(|e| fs_error(&e))?;
                self.invalidator.rolled_back(&report);
                Ok(json_response(
                    200,
                    &RollbackDone {
                        name,
                        destroyed: report.destroyed,
                    },
                ))
            }
            (Get, "diff") => {
                let to = query_param(query, "to");
                let changes = fs
                    .snapshot_diff(&name, to.as_deref())
                    .map_err(|e| fs_error(&e))?;
                let changes: Vec<SnapshotChange> = changes.iter().map(api_change).collect();
                Ok(json_response(200, &changes))
            }
            (_, "" | "rollback" | "diff") => Err(Failure::new(405, "method not allowed")),
            _ => Err(Failure::new(
                404,
                format!("no such endpoint: snapshots/{rest}"),
            )),
        }
    }

    /// Takes a snapshot after writing the kernel's cached writes back, so it holds everything
    /// applications wrote before the request.
    pub fn create_snapshot(&self, name: &str) -> Result<Snapshot, (u16, String)> {
        // syncfs also reports errors of inodes that are gone (the kernel writes back their
        // times after an unlink): what it could write is written; the rest is logged.
        if let Err(err) = fs_core::fuse::write_back(Path::new(&self.mountpoint)) {
            tracing::warn!(error = %err, "writing cached data back before the snapshot reported an error");
        }
        let info = self.fs.snapshot_create(name).map_err(|e| fs_error(&e))?;
        Ok(api_snapshot(&info))
    }

    /// Records when the next scheduled migration runs.
    pub fn set_next_migration(&self, at: Option<i64>) {
        *self
            .next_migration
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = at;
    }

    /// Deletes a snapshot; returns the bytes it released.
    pub fn delete_snapshot(&self, name: &str) -> Result<u64, (u16, String)> {
        let released = self.fs.snapshot_delete(name).map_err(|e| fs_error(&e))?;
        self.invalidator.snapshot_deleted(name);
        Ok(released)
    }

    /// Every snapshot, oldest first.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>, (u16, String)> {
        let snapshots = self.fs.snapshots().map_err(|e| fs_error(&e))?;
        Ok(snapshots.iter().map(api_snapshot).collect())
    }

    fn migration(&self) -> MutexGuard<'_, Option<Migration>> {
        self.migration
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn migration_progress(&self) -> Option<MigrationProgress> {
        let slot = self.migration();
        let migration = slot.as_ref()?;
        let progress = migration
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let outcome = migration
            .outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Some(MigrationProgress {
            counts: Progress {
                // Still running until its thread has said how it ended.
                running: progress.running || outcome.is_none(),
                ..progress
            },
            rate_limit_bytes_per_sec: migration.rate,
            outcome,
        })
    }

    pub fn tier_status(&self) -> Result<TierStatus, (u16, String)> {
        let placements = self.fs.block_placements().map_err(|e| fs_error(&e))?;
        let fs_status = self.fs.status();
        let tiers = [Tier::Fast, Tier::Slow]
            .into_iter()
            .filter(|tier| fs_status.members.iter().any(|m| m.tier == *tier))
            .map(|tier| {
                let members = fs_status.members.iter().filter(|m| m.tier == tier);
                let mut heat = TierHeat {
                    tier: tier.to_string(),
                    capacity_bytes: members.clone().map(|m| m.data_bytes).sum(),
                    used_bytes: members.map(|m| m.data_bytes - m.free_bytes).sum(),
                    ..TierHeat::default()
                };
                for block in placements.iter().filter(|p| p.tier == tier) {
                    heat.blocks += 1;
                    match block.heat {
                        h if h >= HOT_HEAT => heat.hot_blocks += 1,
                        h if h >= WARM_HEAT => heat.warm_blocks += 1,
                        _ => heat.cold_blocks += 1,
                    }
                }
                heat
            })
            .collect();
        let last_migration = self
            .fs
            .migrations()
            .map_err(|e| fs_error(&e))?
            .last()
            .map(api_migration);
        Ok(TierStatus {
            tiers,
            low_watermark: self.policy.low,
            high_watermark: self.policy.high,
            migration: self.migration_progress(),
            last_migration,
            next_migration: *self
                .next_migration
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            pins: self.pins()?,
        })
    }

    /// The roots of pinned trees: paths with a `tier` of their own whose nearest pinned
    /// ancestor (if any) has another value. `aegis tier pin` sets the value on every entry
    /// below the path, so listing each would repeat the tree.
    fn pins(&self) -> Result<Vec<Pin>, (u16, String)> {
        let values: HashMap<u64, String> = self
            .fs
            .local_values("tier")
            .map_err(|e| fs_error(&e))?
            .into_iter()
            .map(|(ino, value)| (ino.0, value.value()))
            .collect();
        let inodes: BTreeSet<u64> = values.keys().copied().collect();
        let mut pinned: Vec<(String, String)> = self
            .fs
            .paths_of(&inodes)
            .map_err(|e| fs_error(&e))?
            .into_iter()
            .filter_map(|(ino, path)| Some((path?, values.get(&ino)?.clone())))
            .collect();
        pinned.sort();
        let mut pins: Vec<Pin> = Vec::new();
        for (path, tier) in pinned {
            let below = |pin: &&Pin| pin.path == "/" || path.starts_with(&format!("{}/", pin.path));
            let nearest = pins.iter().rev().find(below);
            if nearest.is_none_or(|pin| pin.tier != tier) {
                pins.push(Pin { path, tier });
            }
        }
        Ok(pins)
    }

    /// The plan (dry run), or a migration started on its own thread.
    pub fn migrate(&self, request: &MigrateRequest) -> Reply {
        if self
            .migration_progress()
            .is_some_and(|progress| progress.counts.running)
        {
            return Err(Failure::new(409, "a migration is already running"));
        }
        let plan = tiering::migrate::plan_for(&self.fs, &self.policy, request.limit_bytes)
            .map_err(|e| (500, e.to_string()))?;
        if request.dry_run {
            return Ok(json_response(200, &self.plan_summary(&plan)?));
        }
        let migration = Migration {
            cancel: Arc::new(AtomicBool::new(false)),
            progress: Arc::new(Mutex::new(Progress {
                planned_blocks: plan.moves.len() as u64,
                planned_bytes: plan.promote_bytes + plan.demote_bytes,
                running: true,
                ..Progress::default()
            })),
            rate: request.rate_bytes_per_sec.unwrap_or(0),
            outcome: Arc::new(Mutex::new(None)),
        };
        let fs = Arc::clone(&self.fs);
        let (cancel, progress, outcome) = (
            Arc::clone(&migration.cancel),
            Arc::clone(&migration.progress),
            Arc::clone(&migration.outcome),
        );
        let rate = request.rate_bytes_per_sec;
        std::thread::Builder::new()
            .name("aegis-migrate".into())
            .spawn(move || {
                let result = tiering::migrate::execute(&fs, &plan, rate, &cancel, &progress);
                let text = match result {
                    Ok(record) => record.outcome.as_str().to_owned(),
                    Err(err) => {
                        tracing::error!(error = %err, "tier migration failed");
                        format!("failed: {err}")
                    }
                };
                tracing::info!(outcome = %text, "tier migration ended");
                *outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(text);
            })
            .map_err(|e| (500, format!("cannot start the migration: {e}")))?;
        *self.migration() = Some(migration);
        Ok(json_response(200, &self.migration_progress()))
    }

    /// Asks the running migration to stop.
    pub fn cancel_migration(&self) -> Result<(), Failure> {
        if !self.migration_progress().is_some_and(|p| p.counts.running) {
            return Err(Failure::new(409, "no migration is running"));
        }
        if let Some(migration) = self.migration().as_ref() {
            migration.cancel.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn plan_summary(&self, plan: &tiering::Plan) -> Result<MigrationPlan, (u16, String)> {
        let top = plan.top_files(10);
        let inodes: BTreeSet<u64> = top.iter().filter_map(|f| f.inode).collect();
        let paths: HashMap<u64, Option<String>> = self
            .fs
            .paths_of(&inodes)
            .map_err(|e| fs_error(&e))?
            .into_iter()
            .collect();
        let top_files = top
            .iter()
            .map(|file| PlannedFile {
                path: match file.inode {
                    Some(ino) => paths
                        .get(&ino)
                        .cloned()
                        .flatten()
                        .unwrap_or_else(|| format!("<inode {ino}>")),
                    None => "<blocks only snapshots hold>".into(),
                },
                promote_bytes: file.promote_bytes,
                demote_bytes: file.demote_bytes,
            })
            .collect();
        Ok(MigrationPlan {
            promote_blocks: plan.promote_blocks,
            promote_bytes: plan.promote_bytes,
            demote_blocks: plan.demote_blocks,
            demote_bytes: plan.demote_bytes,
            fast_capacity_bytes: plan.fast_capacity,
            fast_used_before: plan.fast_used_before,
            fast_used_after: plan.fast_used_after,
            pinned_unplaced_bytes: plan.pinned_unplaced_bytes,
            deferred_bytes: plan.deferred_bytes,
            top_files,
        })
    }

    /// Sets the `tier` property on `path` and on everything below it.
    fn pin(&self, request: &PinRequest) -> Result<PinDone, (u16, String)> {
        let property =
            Property::parse(&format!("tier={}", request.tier)).map_err(|e| fs_error(&e))?;
        let root = resolve(&self.fs, &request.path)?;
        let mut pending = vec![root];
        let mut entries = 0;
        while let Some(ino) = pending.pop() {
            self.fs
                .set_property(ino, property)
                .map_err(|e| fs_error(&e))?;
            entries += 1;
            let mut cookie = 0;
            loop {
                let listed = match self.fs.readdir(ino, cookie, 1024) {
                    Ok(listed) => listed,
                    Err(FsError::NotDir) => break,
                    Err(err) => return Err(fs_error(&err)),
                };
                let Some(last) = listed.last() else { break };
                cookie = last.cookie;
                for entry in listed {
                    if entry.name == b"." || entry.name == b".." {
                        continue;
                    }
                    if entry.kind == FileKind::Directory {
                        pending.push(entry.ino);
                    } else if entry.kind == FileKind::Regular {
                        self.fs
                            .set_property(entry.ino, property)
                            .map_err(|e| fs_error(&e))?;
                        entries += 1;
                    }
                }
            }
        }
        Ok(PinDone {
            path: request.path.clone(),
            tier: property.value(),
            entries,
        })
    }

    pub fn start_scrub(&self, rate: u64) -> Result<ScrubStatus, (u16, String)> {
        {
            let mut slot = self.scrubber();
            if slot.as_ref().is_some_and(|s| s.state().phase.is_running()) {
                return Err((409, "a scrub is already running".into()));
            }
            // Commit first, so the scrub covers everything written so far.
            self.fs.fsync().map_err(|e| fs_error(&e))?;
            let state = self.fs.scrub_begin(rate).map_err(|e| fs_error(&e))?;
            let scrubber =
                Scrubber::start(Arc::clone(&self.fs), state).map_err(|e| fs_error(&e))?;
            *slot = Some(scrubber);
        }
        self.scrub_status()
    }

    pub fn cancel_scrub(&self) -> Result<ScrubStatus, (u16, String)> {
        let scrubber = self.scrubber().take();
        let mut state = match scrubber {
            Some(scrubber) => {
                scrubber.cancel();
                scrubber.state()
            }
            None => self
                .fs
                .scrub_state()
                .map_err(|e| fs_error(&e))?
                .ok_or((409, "no scrub is running".to_owned()))?,
        };
        if !state.phase.is_running() {
            return Err((409, "no scrub is running".into()));
        }
        self.fs.scrub_cancel(&mut state).map_err(|e| fs_error(&e))?;
        self.scrub_status()
    }
}

/// The HTTP status for a filesystem error, and its message.
fn fs_error(err: &FsError) -> (u16, String) {
    let code = match err {
        FsError::NotFound | FsError::NoSnapshot(_) => 404,
        FsError::BadProperty(_)
        | FsError::BadSnapshot(_)
        | FsError::Invalid(_)
        | FsError::NotDir => 400,
        FsError::Access | FsError::NotPermitted => 403,
        FsError::ReadOnly
        | FsError::SnapshotReadOnly
        | FsError::Busy(_)
        | FsError::Conflict(_)
        | FsError::Exists => 409,
        _ => 500,
    };
    (code, err.to_string())
}

/// Heat from which a block counts as hot in `aegis tier status` (recent accesses).
const HOT_HEAT: f64 = 8.0;
/// ... and as warm: about one access within the last half-life (one access a half-life ago
/// has decayed to 0.5).
const WARM_HEAT: f64 = 0.5;

fn api_migration(record: &MigrationRecord) -> MigrationEntry {
    MigrationEntry {
        started: record.started.secs,
        finished: record.finished.secs,
        promoted_blocks: record.promoted_blocks,
        promoted_bytes: record.promoted_bytes,
        demoted_blocks: record.demoted_blocks,
        demoted_bytes: record.demoted_bytes,
        outcome: record.outcome.as_str().into(),
    }
}

fn api_snapshot(info: &SnapshotInfo) -> Snapshot {
    Snapshot {
        name: info.name.clone(),
        created: info.created.secs,
        referenced_bytes: info.referenced,
        unique_bytes: info.unique,
    }
}

fn api_change(change: &Change) -> SnapshotChange {
    SnapshotChange {
        change: change.kind.as_str().into(),
        kind: match change.file_kind {
            FileKind::Regular => "file",
            FileKind::Directory => "directory",
            FileKind::Symlink => "symlink",
            _ => "special",
        }
        .into(),
        path: change.path.clone(),
        renamed_to: change.renamed_to.clone(),
    }
}

/// Answers one request for this pool's `/v1/...` endpoints: its method, its URL (path and
/// query string) and its body, already read.
pub fn route(method: &tiny_http::Method, url: &str, body: &str, api: &PoolService) -> Reply {
    use tiny_http::Method::{Get, Post, Put};
    let fs = &api.fs;
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    match (method, path) {
        (Get, "/v1/status") => Ok(json_response(200, &api.status())),
        (Get, "/v1/fsck") => {
            // Commit first, so the check covers everything written so far.
            let report = fs
                .fsync()
                .and_then(|()| fs_core::fsck::check_mounted(fs.pool()))
                .map_err(|err| (500, format!("the check could not run: {err}")))?;
            Ok(json_response(200, &FsckReport::new(&report, true)))
        }
        (Get, "/v1/properties") => {
            let target = query_param(query, "path")
                .ok_or_else(|| Failure::bad_request("the path query parameter is missing"))?;
            let ino = resolve(fs, &target)?;
            Ok(json_response(200, &property_values(fs, ino)?))
        }
        (Put, "/v1/properties") => {
            let wanted: SetProperties = parse_json(body)?;
            let properties = wanted
                .properties
                .iter()
                .map(|text| Property::parse(text))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fs_error(&e))?;
            let ino = resolve(fs, &wanted.path)?;
            for property in properties {
                fs.set_property(ino, property).map_err(|e| fs_error(&e))?;
            }
            Ok(json_response(200, &property_values(fs, ino)?))
        }
        (Get, "/v1/du") => {
            let target = query_param(query, "path")
                .ok_or_else(|| Failure::bad_request("the path query parameter is missing"))?;
            let ino = resolve(fs, &target)?;
            // Commit first: usage is read from the last commit.
            let usage = fs
                .fsync()
                .and_then(|()| fs.usage(ino))
                .map_err(|e| fs_error(&e))?;
            Ok(json_response(
                200,
                &DiskUsage {
                    path: target,
                    files: usage.files,
                    directories: usage.directories,
                    apparent_bytes: usage.apparent,
                    logical_bytes: usage.logical,
                    stored_bytes: usage.stored,
                    allocated_bytes: usage.allocated,
                    compression_ratio: usage.compression_ratio(),
                },
            ))
        }
        (Post, "/v1/errors/clear") => {
            fs.clear_errors().map_err(|e| fs_error(&e))?;
            Ok(json_response(200, &api.status()))
        }
        (Post, "/v1/sync") => {
            fs.fsync().map_err(|e| fs_error(&e))?;
            Ok(json_response(200, &api.status()))
        }
        (Get, "/v1/scrub") => Ok(json_response(200, &api.scrub_status()?)),
        (Post, "/v1/scrub/start") => {
            let start: ScrubStart = parse_json(body)?;
            Ok(json_response(
                200,
                &api.start_scrub(start.rate_bytes_per_sec)?,
            ))
        }
        (Post, "/v1/scrub/cancel") => Ok(json_response(200, &api.cancel_scrub()?)),
        (Get, "/v1/devices") => Ok(json_response(200, &api.devices.devices(fs)?)),
        (Post, "/v1/devices/add") => {
            let wanted: DeviceAdd = parse_json(body)?;
            Ok(json_response(200, &api.devices.add(fs, &wanted)?))
        }
        (Post, "/v1/devices/remove") => {
            let wanted: DeviceRemove = parse_json(body)?;
            Ok(json_response(202, &api.devices.remove(fs, &wanted)?))
        }
        (Post, "/v1/devices/replace") => {
            let wanted: DeviceReplace = parse_json(body)?;
            Ok(json_response(202, &api.devices.replace(fs, &wanted)?))
        }
        (Post, "/v1/devices/cancel") => Ok(json_response(200, &api.devices.cancel(fs)?)),
        (Post, "/v1/devices/resize") => {
            let wanted: DeviceResize = parse_json(body)?;
            let resized = api.devices.resize(fs, &wanted)?;
            let status = if resized.evacuation.is_some() {
                202
            } else {
                200
            };
            Ok(json_response(status, &resized))
        }
        (Get, "/v1/tier") => Ok(json_response(200, &api.tier_status()?)),
        (Post, "/v1/tier/migrate") => {
            let wanted: MigrateRequest = parse_json(body)?;
            api.migrate(&wanted)
        }
        (Get, "/v1/tier/migrate") => Ok(json_response(200, &api.migration_progress())),
        (Post, "/v1/tier/migrate/cancel") => {
            api.cancel_migration()?;
            Ok(json_response(200, &api.migration_progress()))
        }
        (Get, "/v1/tier/history") => {
            let history: Vec<MigrationEntry> = fs
                .migrations()
                .map_err(|e| fs_error(&e))?
                .iter()
                .map(api_migration)
                .collect();
            Ok(json_response(200, &history))
        }
        (Post, "/v1/tier/pin") => {
            let wanted: PinRequest = parse_json(body)?;
            Ok(json_response(200, &api.pin(&wanted)?))
        }
        (Get, "/v1/snapshots") => Ok(json_response(200, &api.snapshots()?)),
        (Post, "/v1/snapshots") => {
            let wanted: SnapshotCreate = parse_json(body)?;
            Ok(json_response(201, &api.create_snapshot(&wanted.name)?))
        }
        (_, path) if path.starts_with("/v1/snapshots/") => {
            let rest = path.trim_start_matches("/v1/snapshots/").to_owned();
            api.snapshot_route(method, body, &rest, query)
        }
        (
            _,
            "/v1/status"
            | "/v1/du"
            | "/v1/fsck"
            | "/v1/properties"
            | "/v1/errors/clear"
            | "/v1/sync"
            | "/v1/scrub"
            | "/v1/scrub/start"
            | "/v1/scrub/cancel"
            | "/v1/snapshots"
            | "/v1/tier"
            | "/v1/tier/migrate"
            | "/v1/tier/migrate/cancel"
            | "/v1/tier/history"
            | "/v1/tier/pin",
        ) => Err(Failure::new(405, "method not allowed")),
        _ => Err(Failure::new(404, format!("no such endpoint: {path}"))),
    }
}

/// The inode at `path`, from the pool's root.
fn resolve(fs: &Filesystem, path: &str) -> Result<InodeId, (u16, String)> {
    let mut ino = InodeId::ROOT;
    for component in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if component == ".." {
            return Err((400, format!("{path}: '..' is not allowed")));
        }
        ino = fs
            .lookup(ino, component.as_bytes())
            .map_err(|e| match e {
                FsError::NotFound => (404, format!("{path}: no such file or directory")),
                other => fs_error(&other),
            })?
            .ino;
    }
    Ok(ino)
}

fn property_values(fs: &Filesystem, ino: InodeId) -> Result<Vec<PropertyValue>, (u16, String)> {
    Ok(fs
        .properties(ino)
        .map_err(|e| fs_error(&e))?
        .into_iter()
        .map(|(property, source)| PropertyValue {
            name: property.name().to_owned(),
            value: property.value(),
            source: match source {
                Source::Local => "local",
                Source::Inherited => "inherited",
                Source::Pool => "pool",
                Source::Builtin => "default",
            }
            .to_owned(),
        })
        .collect())
}
