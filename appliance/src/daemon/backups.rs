//! Backup jobs under aegisd: every run takes a snapshot of the pool and copies the job's
//! source from `<mountpoint>/.snapshots/<snapshot>/`, so files changing during the copy do not
//! tear it. The snapshot of the last successful run (recorded with the run) is kept, so
//! `verify` compares the destination with exactly what was copied; the others are released
//! (all are kept with `keep_snapshot = true`). The copying itself is the `backup` crate's.

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
pub struct Running(Mutex<Backups>);

#[derive(Default)]
struct Backups {
    live: HashMap<String, Live>,
    /// Set by [`Running::cancel_all`]: a backup that begins later is cancelled at once.
    closed: bool,
}

impl Running {
    fn lock(&self) -> MutexGuard<'_, Backups> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Progress of the running backup `name`.
    pub fn progress(&self, name: &str) -> Option<BackupProgress> {
        self.lock().live.get(name).map(|live| live.progress.clone())
    }

    /// Asks the running backup `name` to stop; whether one was running.
    pub fn cancel(&self, name: &str) -> bool {
        self.lock()
            .live
            .get(name)
            .map(|live| live.cancel.store(true, Ordering::Relaxed))
            .is_some()
    }

    /// Asks every running backup to stop, and every later one as it begins (the daemon is
    /// stopping).
    pub fn cancel_all(&self) {
        let mut backups = self.lock();
        backups.closed = true;
        for live in backups.live.values() {
            live.cancel.store(true, Ordering::Relaxed);
        }
    }

    fn begin(&self, name: &str, started: i64) -> Arc<AtomicBool> {
        let mut backups = self.lock();
        let cancel = Arc::new(AtomicBool::new(backups.closed));
        backups.live.insert(
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
        if let Some(live) = self.lock().live.get_mut(name) {
            change(&mut live.progress);
        }
    }

    fn end(&self, name: &str) {
        self.lock().live.remove(name);
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
/// daemon stops), then release the snapshots no longer needed. Returns the report and the
/// snapshot it copied from.
pub fn run(
    daemon: &Daemon,
    service: &PoolService,
    task: &BackupTask,
) -> Result<(RunReport, String), String> {
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
) -> Result<(RunReport, String), String> {
    let name = &task.job.name;
    if cancel.load(Ordering::Relaxed) {
        return Err("cancelled before it began: aegisd is stopping".into());
    }
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
    let succeeded = matches!(&result, Ok(report) if report.outcome == Outcome::Succeeded);
    // A successful run's snapshot replaces the previous one; any other run's is dropped, so
    // the last successful copy stays verifiable.
    let keep = if succeeded {
        Some(snapshot.clone())
    } else {
        verified_snapshot(daemon, task)
    };
    release_snapshots(service, task, keep.as_deref());
    let report = result.map_err(|err| err.to_string())?;
    Ok((report, snapshot))
}

/// The snapshot the job's last successful run copied, as recorded with the run.
fn verified_snapshot(daemon: &Daemon, task: &BackupTask) -> Option<String> {
    daemon
        .state
        .runs(Some(&task.job_name()), 1_000)
        .ok()?
        .into_iter()
        .find(|run| {
            run.outcome == Some(super::state::RunOutcome::Succeeded) && run.snapshot.is_some()
        })
        .and_then(|run| run.snapshot)
}

/// Releases the job's snapshots but `keep` (none with `keep_snapshot = true`).
fn release_snapshots(service: &PoolService, task: &BackupTask, keep: Option<&str>) {
    if task.job.keep_snapshot {
        return;
    }
    let own = match own_snapshots(service, task) {
        Ok(own) => own,
        Err(message) => {
            tracing::warn!(backup = %task.job.name, "{message}");
            return;
        }
    };
    for old in own.iter().filter(|s| Some(s.as_str()) != keep) {
        if let Err((_, message)) = service.delete_snapshot(old) {
            tracing::warn!(backup = %task.job.name, snapshot = %old, "cannot release a backup snapshot: {message}");
        }
    }
}

/// At start: releases the snapshots of runs a crash interrupted, keeping the last successful
/// run's.
pub fn release_orphans(daemon: &Daemon, service: &PoolService, task: &BackupTask) {
    release_snapshots(service, task, verified_snapshot(daemon, task).as_deref());
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

/// Compares the destination with the snapshot the last successful run copied.
pub fn verify(
    daemon: &Daemon,
    service: &PoolService,
    task: &BackupTask,
) -> Result<VerifyReport, Failure> {
    if daemon.is_running(&task.job_name()) {
        return Err(Failure::new(
            409,
            format!(
                "backup {} is running: verify it when the run has ended",
                task.job.name
            ),
        ));
    }
    let Some(snapshot) = verified_snapshot(daemon, task) else {
        return Err(Failure::new(
            409,
            format!(
                "backup {} has no successful run to verify against: run it first",
                task.job.name
            ),
        ));
    };
    let present = own_snapshots(service, task)
        .map_err(|m| Failure::new(500, m))?
        .contains(&snapshot);
    if !present {
        return Err(Failure::new(
            409,
            format!(
                "snapshot {snapshot} of the last successful run of backup {} is gone: run the backup again",
                task.job.name
            ),
        ));
    }
    let request = request(daemon, service, task, &snapshot, daemon.clock.now(), false);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_that_begins_after_cancel_all_is_cancelled_at_once() {
        let running = Running::default();
        let early = running.begin("early", 0);
        running.cancel_all();
        assert!(early.load(Ordering::Relaxed));
        let late = running.begin("late", 0);
        assert!(late.load(Ordering::Relaxed), "begun after cancel_all");
    }
}
