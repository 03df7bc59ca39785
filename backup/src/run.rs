//! One backup run: the request the daemon hands in, the progress it hears about while the
//! engine runs, the report it records afterwards, and the errors that stop a run before the
//! engine could report anything.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use crate::job::{BackupJob, Engine, JobError, Remotes};
use crate::{rclone, rsync};

/// How version directories are named: `2026-01-31T02-30-00`.
pub const VERSION_FORMAT: &str = "%Y-%m-%dT%H-%M-%S";

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub job: BackupJob,
    /// The absolute directory to back up: the snapshot's path joined with the job's source
    /// (see [`BackupJob::source_dir`]).
    pub source: PathBuf,
    /// The inline rclone remotes of the config.
    pub remotes: Remotes,
    /// The user's rclone.conf, passed as `--config`; `None` lets rclone find its own
    /// (`RCLONE_CONFIG`, else `~/.config/rclone/rclone.conf` of the daemon's user).
    pub rclone_config: Option<PathBuf>,
    /// Only report what would change; change nothing at the destination.
    pub dry_run: bool,
    /// The run's time (local wall clock, e.g. the snapshot's), which names the version.
    pub now: NaiveDateTime,
    /// The rsync or rclone executable; `None` looks the engine's name up in `PATH`.
    pub binary: Option<PathBuf>,
}

impl RunRequest {
    /// A real (not dry) run at the current local time, with rclone's own config lookup.
    pub fn new(job: BackupJob, source: PathBuf, remotes: Remotes) -> Self {
        RunRequest {
            job,
            source,
            remotes,
            rclone_config: None,
            dry_run: false,
            now: chrono::Local::now().naive_local(),
            binary: None,
        }
    }

    /// The name of the version directory this run writes (when the job keeps versions).
    pub fn version_name(&self) -> String {
        self.now.format(VERSION_FORMAT).to_string()
    }

    /// Checks the job and the source directory.
    pub(crate) fn check(&self) -> Result<(), BackupError> {
        self.job.validate(&self.remotes)?;
        if !self.source.is_absolute() || !self.source.is_dir() {
            return Err(BackupError::Source {
                path: self.source.clone(),
            });
        }
        Ok(())
    }

    /// A command for the job's engine with no arguments yet.
    pub(crate) fn command(&self) -> Command {
        let program = match &self.binary {
            Some(path) => path.as_os_str(),
            None => self.job.engine.binary().as_ref(),
        };
        Command::new(program)
    }

    /// The source as a directory argument (`/path/`: copy its content).
    pub(crate) fn source_arg(&self) -> PathBuf {
        self.source.join("")
    }
}

/// Whether `name` is a version directory's name.
pub(crate) fn is_version_name(name: &str) -> bool {
    NaiveDateTime::parse_from_str(name, VERSION_FORMAT).is_ok()
        && name.len() == "2026-01-31T02-30-00".len()
}

/// `dir` + `/` + `name`, for local paths and `host:`/`remote:` roots alike.
pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir.ends_with(['/', ':']) {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The message of a successful run: `rsync: 3 files (100010 bytes) transferred into version
/// 2026-01-31T02-30-00`, or `... would be transferred ...` for a dry run.
pub(crate) fn summary(req: &RunRequest, files: u64, bytes: u64, version: Option<&str>) -> String {
    let engine = req.job.engine.binary();
    let verb = if req.dry_run { "dry run: " } else { "" };
    let done = if req.dry_run {
        "would be transferred"
    } else {
        "transferred"
    };
    let into = version.map_or(String::new(), |v| format!(" into version {v}"));
    format!("{engine}: {verb}{files} files ({bytes} bytes) {done}{into}")
}

/// A progress report while the engine runs. Both engines count bytes of files being
/// transferred; files count every entry the engine examined so far (transferred or found
/// unchanged; rsync counts directories too) out of those it knows of.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub bytes_done: u64,
    /// rclone only: rsync reports a percentage of the whole tree, not of what it transfers.
    pub bytes_total: Option<u64>,
    pub files_done: u64,
    pub files_total: Option<u64>,
    pub rate_bytes_per_sec: u64,
    pub eta_secs: Option<u64>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    /// The run finished but some files were not transferred (see the message and log).
    Partial,
    /// The destination could not be reached (network, ssh, unknown remote, missing bucket).
    RemoteUnreachable,
    Failed,
    Cancelled,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub outcome: Outcome,
    /// Bytes of file data transferred.
    pub bytes: u64,
    /// Files transferred.
    pub files: u64,
    /// The engine's exit code (`None`: it was killed by a signal).
    pub exit_code: Option<i32>,
    /// One line for the user: what happened, and why for failures.
    pub message: String,
    /// The engine's last output lines (progress lines left out).
    pub log_tail: Vec<String>,
    /// The version this run wrote (jobs with `keep_versions`). rclone creates the directory
    /// only when the run replaced or deleted a file.
    pub version: Option<String>,
    /// Dry runs report in `bytes` and `files` what would be transferred, and here what
    /// would change (`copy PATH`, `update PATH` for attributes only,
    /// `delete PATH`, `version PATH` for an old copy kept, `delete version NAME`).
    pub dry_run_changes: Vec<String>,
}

impl RunReport {
    pub(crate) fn new(outcome: Outcome, exit_code: Option<i32>, message: String) -> Self {
        RunReport {
            outcome,
            bytes: 0,
            files: 0,
            exit_code,
            message,
            log_tail: Vec::new(),
            version: None,
            dry_run_changes: Vec::new(),
        }
    }
}

/// Why a run or a verification could not report a result.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(
        "{binary} is not installed: install the `{package}` package \
         (apt install {package} / dnf install {package})"
    )]
    MissingBinary {
        binary: String,
        package: &'static str,
    },
    #[error("cannot run {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("the backup source {} is not an existing absolute directory", path.display())]
    Source { path: PathBuf },
    #[error("{destination} holds no backup version to verify")]
    NoVersion { destination: String },
    #[error("cannot create a temporary directory: {0}")]
    TempDir(std::io::Error),
    /// The engine (or a helper command such as listing versions) ended badly.
    #[error("{message}")]
    Command {
        outcome: Outcome,
        exit_code: Option<i32>,
        message: String,
        log_tail: Vec<String>,
    },
}

/// Runs the backup described by `request`: copies `request.source` to the job's destination
/// with the job's engine, calling `progress` on this thread as the engine reports, and
/// stopping the engine once `cancel` becomes true. Errors are for runs that could not start
/// (invalid job or source, missing binary); everything the engine reports, failures
/// included, comes back as a [`RunReport`].
pub fn run(
    request: &RunRequest,
    progress: &mut dyn FnMut(&Progress),
    cancel: &AtomicBool,
) -> Result<RunReport, BackupError> {
    request.check()?;
    let span = tracing::info_span!("backup", job = %request.job.name, dry_run = request.dry_run);
    let _enter = span.enter();
    let result = match request.job.engine {
        Engine::Rsync => rsync::run(request, progress, cancel),
        Engine::Rclone => rclone::run(request, progress, cancel),
    };
    let report = match result {
        Err(BackupError::Command {
            outcome,
            exit_code,
            message,
            log_tail,
        }) => RunReport {
            log_tail,
            ..RunReport::new(outcome, exit_code, message)
        },
        other => other?,
    };
    tracing::info!(outcome = ?report.outcome, bytes = report.bytes, "{}", report.message);
    Ok(report)
}

/// A private (0700) temporary directory, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Result<Self, BackupError> {
        use std::os::unix::fs::DirBuilderExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::UNIX_EPOCH
            .elapsed()
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("aegis-backup-{}-{n}-{nanos}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(BackupError::TempDir)?;
        Ok(TempDir(path))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn version_names() {
        assert!(is_version_name("2026-01-31T02-30-00"));
        assert!(!is_version_name("latest"));
        assert!(!is_version_name("2026-01-31T02-30-00x"));
        assert!(!is_version_name("2026-1-31T02-30-00"));
        assert_eq!(join("host:", "v"), "host:v");
        assert_eq!(join("/a/b", "v"), "/a/b/v");
        assert_eq!(join("/a/b/", "v"), "/a/b/v");
    }
}
