//! The rclone engine: command lines (inline remotes reach rclone as
//! `RCLONE_CONFIG_<NAME>_<OPTION>` environment variables, never as arguments), parsing of
//! rclone's JSON log and stats, the exit-code table with the error patterns that mean an
//! unreachable remote, and versions (`--backup-dir <destination>/.aegis-versions/<version>`,
//! pruned with `rclone purge`).

use std::process::Command;
use std::sync::atomic::AtomicBool;

use serde::Deserialize;

use crate::job::{rclone_remote, Mode, RCLONE_VERSIONS_DIR};
use crate::process::{execute, Finished};
use crate::run::{
    is_version_name, join, summary, BackupError, Outcome, Progress, RunReport, RunRequest,
};
use crate::verify::VerifyReport;
use crate::Engine;

pub(crate) fn run(
    req: &RunRequest,
    progress: &mut dyn FnMut(&Progress),
    cancel: &AtomicBool,
) -> Result<RunReport, BackupError> {
    let job = &req.job;
    let versions_dir = join(&job.destination, RCLONE_VERSIONS_DIR);
    let mut cmd = command(req);
    cmd.arg(match job.mode {
        Mode::Sync => "sync",
        Mode::Copy => "copy",
    });
    cmd.arg(req.source_arg()).arg(&job.destination);
    cmd.args([
        "--use-json-log",
        "--stats",
        "1s",
        "--stats-log-level",
        "NOTICE",
    ]);
    let version = (job.keep_versions > 0).then(|| req.version_name());
    if let Some(v) = &version {
        cmd.arg("--backup-dir").arg(join(&versions_dir, v));
    }
    filters(req, &mut cmd);
    if req.dry_run {
        cmd.arg("--dry-run");
    }
    if let Some(rate) = &job.bandwidth {
        cmd.args(["--bwlimit", rate]);
    }

    let mut last = Stats::default();
    let mut changes = Vec::new();
    let finished = execute(cmd, Engine::Rclone, cancel, &mut |line| {
        let Ok(entry) = serde_json::from_str::<LogLine>(line) else {
            return Some(line.to_string());
        };
        if let Some(stats) = entry.stats {
            progress(&stats.progress());
            last = stats;
            return None;
        }
        if let (Some(verb), Some(object)) = (&entry.skipped, &entry.object) {
            let verb = if verb == "move" { "version" } else { verb };
            changes.push(format!("{verb} {object}"));
            return None;
        }
        Some(entry.render())
    })?;
    let (outcome, mut message) = classify(req, &finished);
    if outcome == Outcome::Succeeded {
        message = summary(req, last.transfers, last.bytes, version.as_deref());
    }
    if let (Some(v), Outcome::Succeeded | Outcome::Partial) = (&version, outcome) {
        let upcoming = req.dry_run && changes.iter().any(|c| c.starts_with("version "));
        match prune(req, &versions_dir, upcoming.then_some(v.as_str())) {
            Ok(old) if req.dry_run => {
                changes.extend(old.iter().map(|v| format!("delete version {v}")));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("pruning rclone versions failed: {e}");
                message.push_str(&format!("; but pruning old versions failed: {e}"));
            }
        }
    }
    Ok(RunReport {
        bytes: last.bytes,
        files: last.transfers,
        log_tail: finished.log_tail,
        version,
        dry_run_changes: changes,
        ..RunReport::new(outcome, finished.code, message)
    })
}

/// `rclone check` of the source against the destination (which holds the newest version),
/// both ways for sync jobs, one way for copy jobs. Compares sizes and a hash where both sides
/// have a common one (sizes only for crypt remotes and servers without hashes).
pub(crate) fn verify(req: &RunRequest) -> Result<VerifyReport, BackupError> {
    let mut cmd = command(req);
    cmd.arg("check")
        .arg(req.source_arg())
        .arg(&req.job.destination)
        .args(["--combined", "-"]);
    if req.job.mode == Mode::Copy {
        cmd.arg("--one-way");
    }
    filters(req, &mut cmd);
    let mut checked_files = 0;
    let mut differences = Vec::new();
    let never = AtomicBool::new(false);
    let finished = execute(cmd, Engine::Rclone, &never, &mut |line| {
        // `--combined -`: `= same`, `+ only in source`, `- only at destination`, `* differs`,
        // `! error`.
        let (mark, path) = line.split_at_checked(2).unwrap_or(("", ""));
        let what = match mark {
            "= " => None,
            "+ " => Some("missing at destination"),
            "- " => Some("only at destination"),
            "* " => Some("differs"),
            "! " => Some("could not be compared"),
            _ => return Some(line.to_string()),
        };
        checked_files += 1;
        differences.extend(what.map(|w| format!("{w}: {path}")));
        None
    })?;
    // rclone check exits 1 when it found differences.
    if !(finished.code == Some(0) || finished.code == Some(1) && !differences.is_empty()) {
        checked(req, finished)?;
    }
    Ok(VerifyReport {
        identical: differences.is_empty(),
        differences,
        checked_files: Some(checked_files),
    })
}

/// `rclone` with the user's config file and the inline remotes in its environment.
fn command(req: &RunRequest) -> Command {
    let mut cmd = req.command();
    if let Some(config) = &req.rclone_config {
        cmd.arg("--config").arg(config);
    }
    cmd.envs(req.remotes.env());
    cmd
}

/// The versions directory is never copied, deleted or compared; then the job's excludes.
fn filters(req: &RunRequest, cmd: &mut Command) {
    cmd.arg("--exclude")
        .arg(format!("/{RCLONE_VERSIONS_DIR}/**"));
    for pattern in &req.job.exclude {
        cmd.arg("--exclude").arg(pattern);
    }
}

/// Deletes the versions beyond the newest `keep_versions` with `rclone purge` and returns
/// their names; a dry run only returns them, counting `upcoming` (the version it would write).
fn prune(
    req: &RunRequest,
    versions_dir: &str,
    upcoming: Option<&str>,
) -> Result<Vec<String>, BackupError> {
    let never = AtomicBool::new(false);
    let mut old = list_versions(req, versions_dir, &never)?;
    old.extend(upcoming.map(String::from));
    old.sort();
    old.dedup();
    old.truncate(old.len().saturating_sub(req.job.keep_versions as usize));
    for name in old.iter().filter(|_| !req.dry_run) {
        let mut cmd = command(req);
        cmd.arg("purge").arg(join(versions_dir, name));
        checked(
            req,
            execute(cmd, Engine::Rclone, &never, &mut |l| Some(l.into()))?,
        )?;
        tracing::info!(version = %name, "pruned an old version");
    }
    Ok(old)
}

fn list_versions(
    req: &RunRequest,
    versions_dir: &str,
    cancel: &AtomicBool,
) -> Result<Vec<String>, BackupError> {
    let mut cmd = command(req);
    cmd.args(["lsf", "--dirs-only"]).arg(versions_dir);
    let mut names = Vec::new();
    let finished = execute(cmd, Engine::Rclone, cancel, &mut |line| {
        let name = line.trim_end_matches('/');
        if is_version_name(name) {
            names.push(name.to_string());
        }
        Some(line.to_string())
    })?;
    if finished.code != Some(3) {
        // 3: directory not found, i.e. no versions yet.
        checked(req, finished)?;
    }
    Ok(names)
}

fn checked(req: &RunRequest, finished: Finished) -> Result<Finished, BackupError> {
    match classify(req, &finished) {
        (Outcome::Succeeded, _) => Ok(finished),
        (outcome, message) => Err(BackupError::Command {
            outcome,
            exit_code: finished.code,
            message,
            log_tail: finished.log_tail,
        }),
    }
}

/// Error texts (lower case) that mean the remote could not be reached.
const UNREACHABLE: &[&str] = &[
    "couldn't connect",
    "connection refused",
    "no such host",
    "network is unreachable",
    "no route to host",
    "i/o timeout",
    "tls handshake timeout",
    "connection reset by peer",
];

/// The outcome and the user's message for an rclone exit.
fn classify(req: &RunRequest, finished: &Finished) -> (Outcome, String) {
    if finished.cancelled {
        return (Outcome::Cancelled, "rclone: cancelled".into());
    }
    let Some(code) = finished.code else {
        return (Outcome::Failed, "rclone: killed by a signal".into());
    };
    if code == 0 {
        return (Outcome::Succeeded, "rclone: finished".into());
    }
    let tail = &finished.log_tail;
    // The last "Failed to sync: ..." line sums up; else the first error.
    let detail = (tail
        .iter()
        .rev()
        .find_map(|l| l.find("Failed to").map(|i| &l[i..])))
    .or_else(|| {
        tail.iter()
            .find(|l| l.starts_with("ERROR"))
            .map(String::as_str)
    });
    let detail = detail.map_or(String::new(), |d| format!(": {d}"));
    let lower = tail.join("\n").to_lowercase();
    if lower.contains("didn't find section in config file") {
        let remote = rclone_remote(&req.job.destination).unwrap_or("?");
        let message = format!(
            "rclone: the remote {remote:?} is not defined in rclone.conf or a \
             [remotes.{remote}] section (exit {code})"
        );
        return (Outcome::RemoteUnreachable, message);
    }
    if UNREACHABLE.iter().any(|p| lower.contains(p)) {
        let message = format!("rclone: cannot reach the remote (exit {code}){detail}");
        return (Outcome::RemoteUnreachable, message);
    }
    let (outcome, meaning) = exit_meaning(code);
    (outcome, format!("rclone: {meaning} (exit {code}){detail}"))
}

/// rclone's documented exit codes (0-9, and 10 of later versions).
pub(crate) fn exit_meaning(code: i32) -> (Outcome, &'static str) {
    use Outcome::*;
    match code {
        0 => (Succeeded, "finished"),
        1 => (Failed, "syntax or usage error"),
        2 => (Failed, "error not otherwise categorised"),
        3 => (RemoteUnreachable, "directory not found (the destination's bucket or path does not exist)"),
        4 => (Failed, "file not found"),
        5 => (Partial, "temporary errors: some files were not transferred (a later run may fix it)"),
        6 => (Partial, "less serious errors: some files were not transferred"),
        7 => (RemoteUnreachable, "fatal error from the remote, retries won't fix it (account suspended, credentials refused?)"),
        8 => (Partial, "the transfer limit (--max-transfer) was reached"),
        9 => (Succeeded, "finished, no files were transferred"),
        10 => (Partial, "the duration limit (--max-duration) was reached"),
        _ => (Failed, "failed with an undocumented exit code"),
    }
}

/// One line of `--use-json-log`.
#[derive(Debug, Deserialize)]
struct LogLine {
    #[serde(default)]
    level: String,
    #[serde(default)]
    msg: String,
    object: Option<String>,
    /// Dry runs: `copy`, `delete`, `move` (into the versions directory).
    skipped: Option<String>,
    stats: Option<Stats>,
}

impl LogLine {
    fn render(&self) -> String {
        let level = self.level.to_uppercase();
        match &self.object {
            Some(object) => format!("{level}: {object}: {}", self.msg.trim()),
            None => format!("{level}: {}", self.msg.trim()),
        }
    }
}

/// The `stats` object of a JSON log line.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Stats {
    bytes: u64,
    total_bytes: u64,
    transfers: u64,
    total_transfers: u64,
    checks: u64,
    total_checks: u64,
    speed: f64,
    eta: Option<f64>,
}

impl Stats {
    fn progress(&self) -> Progress {
        Progress {
            bytes_done: self.bytes,
            bytes_total: Some(self.total_bytes),
            files_done: self.transfers + self.checks,
            files_total: Some(self.total_transfers + self.total_checks),
            rate_bytes_per_sec: self.speed as u64,
            eta_secs: self.eta.map(|e| e as u64),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::job::{BackupJob, Remotes};

    /// Captured from rclone v1.60.1 `sync --use-json-log --stats 1s --stats-log-level NOTICE
    /// --bwlimit 10M` to a WebDAV server.
    const STATS_LINE: &str = r#"{"level":"warning","msg":"\nTransferred:   \t   20.027 MiB / 28.610 MiB, 70%, 10.149 MiB/s, ETA 0s\nTransferred:            2 / 3, 67%\nElapsed time:         2.0s\nTransferring:\n *                                       big.bin: 70% /28.610Mi, 10.143Mi/s, 0s\n\n","source":"accounting/stats.go:482","stats":{"bytes":21000200,"checks":0,"deletedDirs":0,"deletes":0,"elapsedTime":2.041458392,"errors":0,"eta":0,"fatalError":false,"renames":0,"retryError":false,"speed":10642504.694236027,"totalBytes":30000008,"totalChecks":0,"totalTransfers":3,"transferTime":0,"transferring":[{"bytes":21000192,"eta":0,"group":"global_stats","name":"big.bin","percentage":70,"size":30000000,"speed":10856291.982137976,"speedAvg":10636169.856876153}],"transfers":2},"time":"2026-11-25T18:15:57.442943+00:00"}"#;
    const FIRST_STATS: &str = r#"{"level":"warning","msg":"\nTransferred:   \t   10.059 MiB / 28.610 MiB, 35%, 0 B/s, ETA -\n","source":"accounting/stats.go:482","stats":{"bytes":10547208,"checks":0,"deletedDirs":0,"deletes":0,"elapsedTime":1.042640972,"errors":0,"eta":null,"fatalError":false,"renames":0,"retryError":false,"speed":0,"totalBytes":30000008,"totalChecks":0,"totalTransfers":3,"transferTime":0,"transfers":2},"time":"2026-11-25T18:15:56.444159+00:00"}"#;
    const SKIPPED: &str = r#"{"level":"warning","msg":"Skipped delete as --dry-run is set (size 4)","object":"sub/c.txt","objectType":"*local.Object","size":4,"skipped":"delete","source":"operations/operations.go:2404","time":"2026-11-25T18:14:51.719632+00:00"}"#;
    const COPIED: &str = r#"{"level":"info","msg":"Copied (new)","object":"a.txt","objectType":"*local.Object","source":"operations/operations.go:566","time":"2026-11-25T18:14:48.060416+00:00"}"#;

    #[test]
    fn json_lines() {
        let line: LogLine = serde_json::from_str(STATS_LINE).unwrap();
        let p = line.stats.unwrap().progress();
        assert_eq!(
            p,
            Progress {
                bytes_done: 21_000_200,
                bytes_total: Some(30_000_008),
                files_done: 2,
                files_total: Some(3),
                rate_bytes_per_sec: 10_642_504,
                eta_secs: Some(0),
            }
        );
        let line: LogLine = serde_json::from_str(FIRST_STATS).unwrap();
        assert_eq!(line.stats.unwrap().progress().eta_secs, None);
        let line: LogLine = serde_json::from_str(SKIPPED).unwrap();
        assert_eq!(
            (line.skipped.as_deref(), line.object.as_deref()),
            (Some("delete"), Some("sub/c.txt"))
        );
        let line: LogLine = serde_json::from_str(COPIED).unwrap();
        assert_eq!(line.render(), "INFO: a.txt: Copied (new)");
    }

    fn classify_tail(dest: &str, code: i32, tail: &[&str]) -> (Outcome, String) {
        let job: BackupJob = toml::from_str(&format!(
            "name = \"j\"\nengine = \"rclone\"\ndestination = \"{dest}\"\nschedule = \"off\""
        ))
        .unwrap();
        let req = RunRequest::new(job, "/".into(), Remotes::default());
        let finished = Finished {
            code: Some(code),
            cancelled: false,
            log_tail: tail.iter().map(|s| s.to_string()).collect(),
        };
        classify(&req, &finished)
    }

    #[test]
    fn exit_codes_and_patterns() {
        // Captured from rclone v1.60.1.
        let (outcome, message) = classify_tail(
            "nosuch:dst",
            1,
            &[
                r#"2026/11/25 18:15:44 Failed to create file system for "nosuch:dst": didn't find section in config file"#,
            ],
        );
        assert_eq!(outcome, Outcome::RemoteUnreachable);
        assert_eq!(message, "rclone: the remote \"nosuch\" is not defined in rclone.conf or a [remotes.nosuch] section (exit 1)");
        let (outcome, message) = classify_tail(
            "w:dst",
            1,
            &[
                r#"2026/11/25 18:15:49 Failed to create file system for "w:dst": read metadata failed: Propfind "http://127.0.0.1:1/dst": dial tcp 127.0.0.1:1: connect: connection refused"#,
            ],
        );
        assert_eq!(outcome, Outcome::RemoteUnreachable);
        assert!(message.starts_with("rclone: cannot reach the remote (exit 1): Failed to create file system for \"w:dst\""), "{message}");
        let (outcome, message) = classify_tail("/x", 6, &["ERROR: a.txt: failed to open"]);
        assert_eq!(outcome, Outcome::Partial);
        assert_eq!(message, "rclone: less serious errors: some files were not transferred (exit 6): ERROR: a.txt: failed to open");
        for code in 0..=10 {
            assert_ne!(exit_meaning(code).1, exit_meaning(99).1, "{code}");
        }
    }
}
