//! Backup jobs under aegisd: every run takes a snapshot of the pool and copies the job's
//! source from `<mountpoint>/.snapshots/<snapshot>/`, so files changing during the copy do not
//! tear it. The snapshot of the last completed run is kept, so `verify` compares the
//! destination with exactly what was copied; older ones are released (all are kept with
//! `keep_snapshot = true`). The copying itself is the `backup` crate's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use backup::run::{Outcome, RunReport, RunRequest};
use backup::verify::VerifyReport;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::config::BackupTask;
use super::Daemon;
use crate::http::Failure;
use crate::service::PoolService;

/// What a running backup is doing, for the API and the console.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupProgress {
    /// `snapshotting`, `copying` or `releasing snapshots`.
    pub phase: String,
    /// Seconds since the epoch.
    pub started: i64,
    /// What the engine reported last (bytes, files, rate, ETA).
    #[serde(flatten)]
    pub copied: backup::run::Progress,
}

struct Live {
    progress: BackupProgress,
    cancel: Arc<AtomicBool>,
}

/// The backups running now, by job name.
#[derive(Default)]
pub struct Running(Mutex<HashMap<String, Live>>);

impl Running {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Progress of the running backup `name`.
    pub fn progress(&self, name: &str) -> Option<BackupProgress> {
        self.lock().get(name).map(|live| live.progress.clone())
    }

    /// Asks the running backup `name` to stop; whether one was running.
    pub fn cancel(&self, name: &str) -> bool {
        self.lock()
            .get(name)
            .map(|live| live.cancel.store(true, Ordering::Relaxed))
            .is_some()
    }

    /// Asks every running backup to stop (the daemon is stopping).
    pub fn cancel_all(&self) {
        for live in self.lock().values() {
            live.cancel.store(true, Ordering::Relaxed);
        }
    }

    fn begin(&self, name: &str, started: i64) -> Arc<AtomicBool> {
        let cancel = Arc::new(AtomicBool::new(false));
        self.lock().insert(
            name.to_owned(),
            Live {
                progress: BackupProgress {
                    phase: "snapshotting".into(),
                    started,
                    ..BackupProgress::default()
                },
                cancel: Arc::clone(&cancel),
            },
        );
        cancel
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut BackupProgress)) {
        if let Some(live) = self.lock().get_mut(name) {
            change(&mut live.progress);
        }
    }

    fn end(&self, name: &str) {
        self.lock().remove(name);
    }
}

/// The snapshot prefix of a job's runs: `backup-<job>-`.
fn snapshot_prefix(task: &BackupTask) -> String {
    format!("backup-{}-", task.job.name)
}

/// The job's own snapshots (`backup-<job>-YYYYMMDD-HHMMSS[-N]`), oldest first.
fn own_snapshots(service: &PoolService, task: &BackupTask) -> Result<Vec<String>, String> {
    let prefix = snapshot_prefix(task);
    let mut names: Vec<String> = service
        .snapshots()
        .map_err(|(_, message)| format!("cannot list snapshots: {message}"))?
        .into_iter()
        .map(|s| s.name)
        .filter(|name| {
            name.strip_prefix(&prefix).is_some_and(|rest| {
                let (stamp, n) = rest.split_at(rest.len().min(15));
                chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d-%H%M%S").is_ok()
                    && (n.is_empty()
                        || n.strip_prefix('-')
                            .is_some_and(|n| n.parse::<u32>().is_ok()))
            })
        })
        .collect();
    // The stamp sorts by time, and a second run within one second after the first.
    names.sort_by_key(|name| {
        let rest = &name[prefix.len()..];
        let (stamp, n) = rest.split_at(15);
        (
            stamp.to_owned(),
            n.trim_start_matches('-').parse::<u32>().unwrap_or(1),
        )
    });
    Ok(names)
}

/// What the backup copies from inside snapshot `snapshot`.
fn request(
    daemon: &Daemon,
    service: &PoolService,
    task: &BackupTask,
    snapshot: &str,
    at: DateTime<Utc>,
    dry_run: bool,
) -> RunRequest {
    let root = std::path::Path::new(&service.mountpoint)
        .join(".snapshots")
        .join(snapshot);
    RunRequest {
        job: task.job.clone(),
        source: task.job.source_dir(&root),
        remotes: daemon.config.remotes.clone(),
        rclone_config: daemon.config.daemon.rclone_config.clone(),
        dry_run,
        now: at.with_timezone(&chrono::Local).naive_local(),
        binary: None,
    }
}

/// Takes a snapshot named `<prefix>YYYYMMDD-HHMMSS`, with `-2`, `-3`, ... appended when a
/// snapshot of that second exists already.
fn take_snapshot(service: &PoolService, prefix: &str, at: DateTime<Utc>) -> Result<String, String> {
    let stamp = at.with_timezone(&chrono::Local).format("%Y%m%d-%H%M%S");
    let base = format!("{prefix}{stamp}");
    let mut n = 1;
    loop {
        let name = match n {
            1 => base.clone(),
            n => format!("{base}-{n}"),
        };
        match service.create_snapshot(&name) {
            Ok(_) => return Ok(name),
            Err((409, _)) if n < 100 => n += 1,
            Err((_, message)) => return Err(format!("cannot take snapshot {name}: {message}")),
        }
    }
}

/// A real run: snapshot, copy with live progress (cancelled when `cancel` is set or the
/// daemon stops), then release the snapshots no longer needed.
pub fn run(daemon: &Daemon, service: &PoolService, task: &BackupTask) -> Result<RunReport, String> {
    let name = task.job.name.clone();
    let at = daemon.clock.now();
    let cancel = daemon.backups.begin(&name, at.timestamp());
    let result = run_tracked(daemon, service, task, at, &cancel);
    daemon.backups.end(&name);
    result
}

fn run_tracked(
    daemon: &Daemon,
    service: &PoolService,
    task: &BackupTask,
    at: DateTime<Utc>,
    cancel: &AtomicBool,
) -> Result<RunReport, String> {
    let name = &task.job.name;
    let snapshot = take_snapshot(service, &snapshot_prefix(task), at)?;
    daemon.backups.update(name, |p| p.phase = "copying".into());
    let request = request(daemon, service, task, &snapshot, at, false);
    let mut on_progress = |progress: &backup::run::Progress| {
        daemon.backups.update(name, |p| p.copied = progress.clone());
    };
    let result = backup::run::run(&request, &mut on_progress, cancel);
    daemon
        .backups
        .update(name, |p| p.phase = "releasing snapshots".into());
    let completed = matches!(
        &result,
        Ok(report) if matches!(report.outcome, Outcome::Succeeded | Outcome::Partial)
    );
    // A completed run's snapshot replaces the previous one; a failed run's is dropped, so the
    // last completed copy stays verifiable.
    let release: Vec<String> = if task.job.keep_snapshot {
        Vec::new()
    } else if completed {
        own_snapshots(service, task)?
            .into_iter()
            .filter(|s| *s != snapshot)
            .collect()
    } else {
        vec![snapshot]
    };
    for old in release {
        if let Err((_, message)) = service.delete_snapshot(&old) {
            tracing::warn!(backup = %name, snapshot = %old, "cannot release a backup snapshot: {message}");
        }
    }
    result.map_err(|err| err.to_string())
}

/// What a run would transfer now, from a snapshot taken for the purpose and released after.
pub fn dry_run(
    daemon: &Daemon,
    service: &PoolService,
    task: &BackupTask,
) -> Result<RunReport, Failure> {
    let at = daemon.clock.now();
    // Named apart from the runs' snapshots, which verify compares with.
    let prefix = format!("dry-run-{}", snapshot_prefix(task));
    let snapshot = take_snapshot(service, &prefix, at).map_err(|m| Failure::new(500, m))?;
    let request = request(daemon, service, task, &snapshot, at, true);
    let never = AtomicBool::new(false);
    let result = backup::run::run(&request, &mut |_| {}, &never);
    if let Err((_, message)) = service.delete_snapshot(&snapshot) {
        tracing::warn!(snapshot = %snapshot, "cannot release the dry run's snapshot: {message}");
    }
    result.map_err(|err| Failure::new(500, err.to_string()))
}

/// Compares the destination with the snapshot the last completed run copied.
pub fn verify(
    daemon: &Daemon,
    service: &PoolService,
    task: &BackupTask,
) -> Result<VerifyReport, Failure> {
    let snapshots = own_snapshots(service, task).map_err(|m| Failure::new(500, m))?;
    let Some(snapshot) = snapshots.last() else {
        return Err(Failure::new(
            409,
            format!(
                "backup {} has no completed run to verify against: run it first",
                task.job.name
            ),
        ));
    };
    let request = request(daemon, service, task, snapshot, daemon.clock.now(), false);
    backup::verify::verify(&request).map_err(|err| Failure::new(500, err.to_string()))
}

/// How a backup outcome counts as a job run, and the error it reports.
pub fn run_outcome(report: &RunReport) -> (super::state::RunOutcome, Option<String>) {
    use super::state::RunOutcome;
    match report.outcome {
        Outcome::Succeeded => (RunOutcome::Succeeded, None),
        Outcome::Cancelled => (RunOutcome::Cancelled, None),
        Outcome::Partial | Outcome::RemoteUnreachable | Outcome::Failed => {
            (RunOutcome::Failed, Some(report.message.clone()))
        }
    }
}
