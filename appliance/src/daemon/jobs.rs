//! The jobs `aegisd` runs: snapshot tasks with retention, tier migrations, scrubs and backups. Each run
//! is recorded in the state database (start, end, outcome, bytes, error), raises an event and,
//! when it fails, an alert. A job never runs twice at once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::config::{BackupTask, Config, SnapshotTask};
use super::schedule::{self, Schedule, Zone};
use super::state::{Level, RunEnd, RunId, RunOutcome};
use super::Daemon;
use crate::api::MigrateRequest;
use crate::http::Failure;
use crate::service::PoolService;

/// How often a job thread looks at the progress of a migration or scrub it started.
const POLL: Duration = Duration::from_secs(1);

/// What a job does.
#[derive(Debug, Clone)]
pub enum Work {
    Snapshot(Box<SnapshotTask>),
    Migration { rate: Option<u64> },
    Scrub { rate: Option<u64> },
    Backup(Box<BackupTask>),
}

impl Work {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Snapshot(_) => "snapshot",
            Self::Migration { .. } => "migration",
            Self::Scrub { .. } => "scrub",
            Self::Backup(_) => "backup",
        }
    }
}

/// A job: its name, pool, schedule (none: run only on request) and work.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub pool: String,
    pub schedule: Option<Schedule>,
    pub work: Work,
}

/// Every job the config defines: per pool a migration and a scrub (scheduled unless `off`),
/// and each snapshot task.
pub fn from_config(config: &Config) -> Vec<Job> {
    let mut jobs = Vec::new();
    for pool in &config.pools {
        jobs.push(Job {
            name: migration_job(&pool.name),
            pool: pool.name.clone(),
            schedule: pool.migration.clone(),
            work: Work::Migration {
                rate: pool.migration_rate,
            },
        });
        jobs.push(Job {
            name: format!("scrub:{}", pool.name),
            pool: pool.name.clone(),
            schedule: pool.scrub.clone(),
            work: Work::Scrub {
                rate: pool.scrub_rate,
            },
        });
    }
    for task in &config.snapshots {
        jobs.push(Job {
            name: task.job_name(),
            pool: task.pool.clone(),
            schedule: Some(task.schedule.clone()),
            work: Work::Snapshot(Box::new(task.clone())),
        });
    }
    for task in &config.backups {
        jobs.push(Job {
            name: task.job_name(),
            pool: task.job.pool.clone(),
            schedule: task.schedule.clone(),
            work: Work::Backup(Box::new(task.clone())),
        });
    }
    jobs
}

/// The name of a pool's migration job.
pub fn migration_job(pool: &str) -> String {
    format!("migration:{pool}")
}

/// How a run ended.
struct Ended {
    outcome: RunOutcome,
    bytes: u64,
    files: u64,
    error: Option<String>,
    detail: Option<String>,
    log_tail: Option<String>,
    /// The snapshot a backup read from.
    snapshot: Option<String>,
}

impl Ended {
    fn failed(error: impl Into<String>) -> Self {
        Self {
            outcome: RunOutcome::Failed,
            bytes: 0,
            files: 0,
            error: Some(error.into()),
            detail: None,
            log_tail: None,
            snapshot: None,
        }
    }

    /// The record of this end at `finished`.
    fn at(&self, finished: i64) -> RunEnd<'_> {
        RunEnd {
            finished,
            outcome: self.outcome,
            bytes: self.bytes,
            files: self.files,
            error: self.error.as_deref(),
            detail: self.detail.as_deref(),
            log_tail: self.log_tail.as_deref(),
            snapshot: self.snapshot.as_deref(),
        }
    }
}

/// Starts `job` on a thread of its own; `scheduled_for` is the schedule occurrence it serves
/// (none for a run on request). Refused with 409 while the job runs, and with 503 (code
/// `stopping`) once the daemon stops.
pub fn start(
    daemon: &Arc<Daemon>,
    job: &Job,
    scheduled_for: Option<DateTime<Utc>>,
) -> Result<RunId, Failure> {
    let mut activity = daemon.activity();
    if activity.stopping {
        return Err(Daemon::stopping_failure());
    }
    if activity.jobs.contains(&job.name) {
        return Err(Failure::new(
            409,
            format!("{} is still running from an earlier start", job.name),
        ));
    }
    let now = daemon.clock.now();
    let id = daemon
        .state
        .run_started(
            &job.name,
            job.work.kind(),
            now.timestamp(),
            scheduled_for.map(|t| t.timestamp()),
        )
        .map_err(|e| Failure::new(500, format!("cannot record the run: {e}")))?;
    activity.jobs.insert(job.name.clone());
    drop(activity);
    daemon.event(
        Level::Info,
        job.work.kind(),
        Some(&job.pool),
        &format!("{} started (run {id})", job.name),
    );
    let (daemon_for_thread, job_for_thread) = (Arc::clone(daemon), job.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("aegis-job-{}", job.work.kind()))
        .spawn(move || run(&daemon_for_thread, &job_for_thread, id));
    if let Err(err) = spawned {
        daemon.job_ended(&job.name);
        let ended = Ended::failed(format!("cannot start a thread: {err}"));
        let _ = daemon.state.run_finished(id, &ended.at(now.timestamp()));
        return Err(Failure::new(
            500,
            format!("cannot start {}: {err}", job.name),
        ));
    }
    Ok(id)
}

/// Runs the job, records how it ended and tells the operator.
fn run(daemon: &Arc<Daemon>, job: &Job, id: RunId) {
    let ended = match daemon.service(&job.pool) {
        // Started just before the daemon began to stop.
        Ok(_) if daemon.is_stopping() => Ended {
            outcome: RunOutcome::Interrupted,
            error: None,
            detail: Some("aegisd stopped before the run began".into()),
            ..Ended::failed("")
        },
        Ok(service) => match &job.work {
            Work::Snapshot(task) => snapshot(daemon, &service, task),
            Work::Migration { rate } => migration(daemon, &service, *rate),
            Work::Scrub { rate } => scrub(daemon, &service, *rate),
            Work::Backup(task) => backup(daemon, &service, task),
        },
        Err(failure) => Ended::failed(failure.message),
    };
    let finished = daemon.clock.now().timestamp();
    if let Err(err) = daemon.state.run_finished(id, &ended.at(finished)) {
        tracing::error!(job = %job.name, error = %err, "cannot record the end of a run");
    }
    daemon.job_ended(&job.name);
    let summary = match (&ended.error, &ended.detail) {
        (Some(error), _) => format!("{} {}: {error}", job.name, ended.outcome.as_str()),
        (None, Some(detail)) => format!("{} {}: {detail}", job.name, ended.outcome.as_str()),
        (None, None) => format!("{} {}", job.name, ended.outcome.as_str()),
    };
    let failed = ended.outcome == RunOutcome::Failed;
    let level = if failed { Level::Error } else { Level::Info };
    daemon.event(level, job.work.kind(), Some(&job.pool), &summary);
    let alert = format!("job-failed:{}", job.name);
    if failed {
        daemon.alerts.raise(&alert, Some(&job.pool), &summary);
    } else if ended.outcome == RunOutcome::Succeeded {
        daemon.alerts.clear(
            &alert,
            Some(&job.pool),
            &format!("{} succeeded again", job.name),
        );
    }
}

/// Takes `<prefix>-YYYYMMDD-HHMMSS` and deletes the task's snapshots retention lets go.
fn snapshot(daemon: &Daemon, service: &PoolService, task: &SnapshotTask) -> Ended {
    let now = daemon.clock.now();
    let name = format!(
        "{}-{}",
        task.prefix,
        now.with_timezone(&chrono::Local).format("%Y%m%d-%H%M%S")
    );
    if let Err((_, message)) = service.create_snapshot(&name) {
        return Ended::failed(format!("cannot create snapshot {name}: {message}"));
    }
    let snapshots = match service.snapshots() {
        Ok(snapshots) => snapshots,
        Err((_, message)) => {
            return Ended::failed(format!("created {name}; cannot list snapshots: {message}"))
        }
    };
    let own: Vec<(String, DateTime<Utc>)> = snapshots
        .into_iter()
        .filter_map(|s| Some((task_snapshot_time(&s.name, &task.prefix)?, s.name)))
        .map(|(taken, name)| (name, taken))
        .collect();
    let mut released = 0;
    let mut deleted = Vec::new();
    for expired in schedule::expired(&own, task.keep, Zone::Local) {
        match service.delete_snapshot(&expired) {
            Ok(bytes) => {
                released += bytes;
                deleted.push(expired);
            }
            Err((_, message)) => {
                return Ended::failed(format!(
                    "created {name}; cannot delete expired snapshot {expired}: {message}"
                ))
            }
        }
    }
    let detail = if deleted.is_empty() {
        format!("created {name}")
    } else {
        format!("created {name}; deleted {}", deleted.join(", "))
    };
    Ended {
        files: 0,
        log_tail: None,
        snapshot: None,
        outcome: RunOutcome::Succeeded,
        bytes: released,
        error: None,
        detail: Some(detail),
    }
}

/// When the task took `name`, if it is one of the task's own snapshots
/// (`<prefix>-YYYYMMDD-HHMMSS`, local time). Snapshots taken by hand never match, so retention
/// never deletes them; it goes by the time in the name, the daemon's clock when it took them.
pub fn task_snapshot_time(name: &str, prefix: &str) -> Option<DateTime<Utc>> {
    let stamp = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let local = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d-%H%M%S").ok()?;
    // The earlier of two readings when clocks went back.
    let taken = local.and_local_timezone(chrono::Local).earliest()?;
    Some(taken.with_timezone(&Utc))
}

fn migration(daemon: &Daemon, service: &PoolService, rate: Option<u64>) -> Ended {
    let request = MigrateRequest {
        dry_run: false,
        limit_bytes: None,
        rate_bytes_per_sec: rate,
    };
    match service.migrate(&request) {
        Ok(_) => {}
        // Started by hand meanwhile: this run follows it to its end.
        Err(failure) if failure.status == 409 => {}
        Err(failure) => return Ended::failed(failure.message),
    }
    loop {
        let Some(progress) = service.migration_progress() else {
            return Ended::failed("the migration disappeared");
        };
        if !progress.counts.running {
            let outcome = progress.outcome.unwrap_or_default();
            let detail = format!(
                "{outcome}: promoted {} blocks ({} bytes), demoted {} blocks ({} bytes)",
                progress.counts.promoted_blocks,
                progress.counts.promoted_bytes,
                progress.counts.demoted_blocks,
                progress.counts.demoted_bytes
            );
            let (outcome, error) = match outcome.as_str() {
                "finished" | "stopped at its limit" => (RunOutcome::Succeeded, None),
                "cancelled" => (RunOutcome::Cancelled, None),
                _ => (RunOutcome::Failed, Some(outcome.clone())),
            };
            return Ended {
                files: 0,
                log_tail: None,
                snapshot: None,
                outcome,
                bytes: progress.counts.moved_bytes(),
                error,
                detail: Some(detail),
            };
        }
        if daemon.is_stopping() {
            let _ = service.cancel_migration();
        }
        std::thread::sleep(POLL);
    }
}

fn scrub(daemon: &Daemon, service: &PoolService, rate: Option<u64>) -> Ended {
    match service.start_scrub(rate.unwrap_or(0)) {
        Ok(_) => {}
        // Resumed after a restart, or started by hand: this run follows it to its end.
        Err((409, _)) if service.scrub_status().is_ok_and(|s| s.running) => {}
        Err((_, message)) => return Ended::failed(message),
    }
    loop {
        let status = match service.scrub_status() {
            Ok(status) => status,
            Err((_, message)) => return Ended::failed(message),
        };
        if !status.running {
            let detail = format!(
                "{}: {} blocks checked, {} damaged copies found, {} repaired, {} unrecoverable",
                status.state,
                status.blocks_checked,
                status.errors_found,
                status.repaired,
                status.unrecoverable
            );
            let (outcome, error) = if status.unrecoverable > 0 {
                let paths = status.damaged_paths.join(", ");
                (
                    RunOutcome::Failed,
                    Some(format!(
                        "{} blocks have no intact copy; damaged files: {paths}",
                        status.unrecoverable
                    )),
                )
            } else if status.state == "cancelled" {
                (RunOutcome::Cancelled, None)
            } else {
                (RunOutcome::Succeeded, None)
            };
            return Ended {
                files: 0,
                log_tail: None,
                snapshot: None,
                outcome,
                bytes: status.bytes_checked,
                error,
                detail: Some(detail),
            };
        }
        if daemon.is_stopping() {
            // The stored progress lets the scrub resume at the next mount.
            return Ended {
                files: 0,
                log_tail: None,
                snapshot: None,
                outcome: RunOutcome::Interrupted,
                bytes: status.bytes_checked,
                error: None,
                detail: Some("the daemon stopped; the scrub resumes at the next start".into()),
            };
        }
        std::thread::sleep(POLL);
    }
}

/// A backup from a fresh snapshot (see [`super::backups`]).
fn backup(daemon: &Daemon, service: &PoolService, task: &BackupTask) -> Ended {
    match super::backups::run(daemon, service, task) {
        Ok((report, snapshot)) => {
            let (mut outcome, error) = super::backups::run_outcome(&report);
            if outcome == RunOutcome::Cancelled && daemon.is_stopping() {
                outcome = RunOutcome::Interrupted;
            }
            Ended {
                outcome,
                bytes: report.bytes,
                files: report.files,
                detail: error.is_none().then(|| report.message.clone()),
                error,
                snapshot: Some(snapshot),
                log_tail: (!report.log_tail.is_empty()).then(|| report.log_tail.join("\n")),
            }
        }
        // Cancelled before it began: the daemon stops.
        Err(message) if daemon.is_stopping() => Ended {
            outcome: RunOutcome::Interrupted,
            error: None,
            detail: Some(message),
            ..Ended::failed("")
        },
        Err(message) => Ended::failed(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_tasks_own_snapshots_match() {
        let taken = task_snapshot_time("auto-20261125-140000", "auto").expect("matches");
        let local = taken.with_timezone(&chrono::Local);
        assert_eq!(local.format("%Y%m%d-%H%M%S").to_string(), "20261125-140000");
        for other in [
            "auto-20261125-1400",
            "auto-before-upgrade",
            "autox-20261125-140000",
            "daily-20261125-140000",
            "auto-20261325-140000",
        ] {
            assert!(task_snapshot_time(other, "auto").is_none(), "{other}");
        }
    }
}
