//! The rsync engine: command lines, parsing of rsync's progress, statistics and itemized
//! changes, the exit-code table, and the versioned layout (`<destination>/<version>/` complete
//! copies hard-linked to the previous one with `--link-dest`, a `latest` symlink, pruning).
//! Versions are listed, pruned and linked with rsync itself, so `host:path` destinations
//! get the same treatment as local ones, over the same transport.

use std::process::Command;
use std::sync::atomic::AtomicBool;

use crate::job::Mode;
use crate::process::{execute, Finished};
use crate::run::{
    is_version_name, join, summary, BackupError, Outcome, Progress, RunReport, RunRequest, TempDir,
};
use crate::verify::VerifyReport;
use crate::Engine;

/// The name of the symlink to the newest version.
pub const LATEST: &str = "latest";

pub(crate) fn run(
    req: &RunRequest,
    progress: &mut dyn FnMut(&Progress),
    cancel: &AtomicBool,
) -> Result<RunReport, BackupError> {
    let job = &req.job;
    let dest = job.destination.as_str();
    let mut cmd = base_command(req);
    cmd.args(["--info=progress2", "--stats", "--mkpath"]);
    if req.dry_run {
        cmd.args(["--dry-run", "--itemize-changes"]);
    }
    if let Some(rate) = &job.bandwidth {
        cmd.arg(format!("--bwlimit={rate}"));
    }
    // A version is a complete copy (`--delete` only matters when a run reuses its name).
    if job.keep_versions > 0 || job.mode == Mode::Sync {
        cmd.arg("--delete");
    }
    let (versions, version) = if job.keep_versions > 0 {
        let versions = list_versions(req, cancel)?;
        let name = req.version_name();
        if let Some(prev) = versions.iter().filter(|v| **v < name).max() {
            cmd.arg(format!("--link-dest=../{prev}"));
        }
        (versions, Some(name))
    } else {
        (Vec::new(), None)
    };
    let target = version
        .as_deref()
        .map_or(dest.to_string(), |v| join(dest, v));
    cmd.arg(req.source_arg()).arg(dir_arg(&target));

    let mut stats = Stats::default();
    let mut current = Progress::default();
    let mut changes = Vec::new();
    let finished = execute(cmd, Engine::Rsync, cancel, &mut |line| {
        if parse_progress(line, &mut current) {
            progress(&current);
            return None;
        }
        if let Some((change, path)) = parse_itemize(line) {
            changes.push(format!("{} {path}", change.verb()));
            return None;
        }
        stats.absorb(line);
        Some(line.to_string())
    })?;
    let (outcome, mut message) = classify(&finished);
    if outcome == Outcome::Succeeded {
        message = summary(req, stats.files, stats.bytes, version.as_deref());
    }
    if let Some(name) = &version {
        let mut all = versions.clone();
        if !all.contains(name) {
            all.push(name.clone());
        }
        let old = prunable(all, job.keep_versions);
        let cleanup = AtomicBool::new(false);
        if req.dry_run {
            changes.extend(old.iter().map(|v| format!("delete version {v}")));
        } else if matches!(outcome, Outcome::Succeeded | Outcome::Partial) {
            let done = set_latest(req, name).and_then(|()| delete_versions(req, &old, &cleanup));
            if let Err(e) = done {
                tracing::warn!("rsync version upkeep failed: {e}");
                message.push_str(&format!("; but updating `latest` or pruning failed: {e}"));
            }
        } else if outcome != Outcome::RemoteUnreachable && !versions.contains(name) {
            // An incomplete copy is no version: remove it (best effort).
            let _ = delete_versions(req, std::slice::from_ref(name), &cleanup);
        }
    }
    Ok(RunReport {
        bytes: stats.bytes,
        files: stats.files,
        log_tail: finished.log_tail,
        version,
        dry_run_changes: if req.dry_run { changes } else { Vec::new() },
        ..RunReport::new(outcome, finished.code, message)
    })
}

/// Compares the source with the destination (its newest version for versioned jobs) by
/// checksum, without changing anything.
pub(crate) fn verify(req: &RunRequest) -> Result<VerifyReport, BackupError> {
    let job = &req.job;
    let never = AtomicBool::new(false);
    let target = if job.keep_versions > 0 {
        let newest = list_versions(req, &never)?.into_iter().max();
        let newest = newest.ok_or_else(|| BackupError::NoVersion {
            destination: job.destination.clone(),
        })?;
        join(&job.destination, &newest)
    } else {
        job.destination.clone()
    };
    let mut cmd = base_command(req);
    cmd.args(["--dry-run", "--checksum", "--itemize-changes", "--stats"]);
    if job.keep_versions > 0 || job.mode == Mode::Sync {
        cmd.arg("--delete");
    }
    cmd.arg(req.source_arg()).arg(dir_arg(&target));
    let mut differences = Vec::new();
    let mut stats = Stats::default();
    let finished = execute(cmd, Engine::Rsync, &never, &mut |line| {
        if let Some((change, path)) = parse_itemize(line) {
            differences.push(format!("{}: {path}", change.difference()));
        }
        stats.absorb(line);
        Some(line.to_string())
    })?;
    checked(finished)?;
    Ok(VerifyReport {
        identical: differences.is_empty(),
        differences,
        checked_files: stats.checked,
    })
}

/// `rsync -a --no-inc-recursive` with the job's excludes.
fn base_command(req: &RunRequest) -> Command {
    let mut cmd = req.command();
    cmd.args(["-a", "--no-inc-recursive"]);
    for pattern in &req.job.exclude {
        cmd.arg(format!("--exclude={pattern}"));
    }
    cmd
}

/// A directory argument: with a trailing slash, unless it is a `host:` home directory.
fn dir_arg(dir: &str) -> String {
    if dir.ends_with(['/', ':']) {
        dir.to_string()
    } else {
        format!("{dir}/")
    }
}

/// The version directories at the destination, oldest first (none if it doesn't exist).
fn list_versions(req: &RunRequest, cancel: &AtomicBool) -> Result<Vec<String>, BackupError> {
    let mut cmd = req.command();
    cmd.arg("--list-only").arg(dir_arg(&req.job.destination));
    let mut versions = Vec::new();
    let finished = execute(cmd, Engine::Rsync, cancel, &mut |line| {
        // drwxr-xr-x          4,096 2026/11/25 18:18:31 2026-01-01T00-00-00
        let name = line.rsplit(' ').next().unwrap_or_default();
        if line.starts_with('d') && is_version_name(name) {
            versions.push(name.to_string());
        }
        Some(line.to_string())
    })?;
    let missing = finished.code == Some(23)
        && (finished.log_tail.iter()).any(|l| l.contains("No such file or directory"));
    if !missing {
        checked(finished)?;
    }
    versions.sort();
    Ok(versions)
}

/// The versions beyond the newest `keep`.
fn prunable(mut versions: Vec<String>, keep: u32) -> Vec<String> {
    versions.sort();
    let excess = versions.len().saturating_sub(keep as usize);
    versions.truncate(excess);
    versions
}

/// Deletes version directories by syncing an empty directory over the destination with a
/// filter that only lets the named versions be touched.
fn delete_versions(
    req: &RunRequest,
    names: &[String],
    cancel: &AtomicBool,
) -> Result<(), BackupError> {
    if names.is_empty() {
        return Ok(());
    }
    let tmp = TempDir::new()?;
    let mut cmd = req.command();
    cmd.args(["-r", "--delete"]);
    for name in names {
        cmd.arg(format!("--include=/{name}/***"));
    }
    cmd.arg("--exclude=*")
        .arg(format!("{}/", tmp.path().display()))
        .arg(dir_arg(&req.job.destination));
    checked(execute(cmd, Engine::Rsync, cancel, &mut |l| {
        Some(l.into())
    })?)?;
    tracing::info!(versions = ?names, "pruned old versions");
    Ok(())
}

/// Points `<destination>/latest` at `version` (a relative symlink, copied with rsync).
fn set_latest(req: &RunRequest, version: &str) -> Result<(), BackupError> {
    let tmp = TempDir::new()?;
    let link = tmp.path().join(LATEST);
    std::os::unix::fs::symlink(version, &link).map_err(BackupError::TempDir)?;
    let mut cmd = req.command();
    cmd.arg("-l").arg(&link).arg(dir_arg(&req.job.destination));
    let never = AtomicBool::new(false);
    checked(execute(cmd, Engine::Rsync, &never, &mut |l| {
        Some(l.into())
    })?)?;
    Ok(())
}

/// `Ok` for a successful helper command, its classified failure otherwise.
fn checked(finished: Finished) -> Result<Finished, BackupError> {
    match classify(&finished) {
        (Outcome::Succeeded, _) => Ok(finished),
        (outcome, message) => Err(BackupError::Command {
            outcome,
            exit_code: finished.code,
            message,
            log_tail: finished.log_tail,
        }),
    }
}

/// The outcome and the user's message for an rsync exit.
fn classify(finished: &Finished) -> (Outcome, String) {
    if finished.cancelled {
        return (Outcome::Cancelled, "rsync: cancelled".into());
    }
    let Some(code) = finished.code else {
        return (Outcome::Failed, "rsync: killed by a signal".into());
    };
    let (outcome, meaning) = exit_meaning(code);
    let mut message = format!("rsync: {meaning} (exit {code})");
    let detail = finished.log_tail.iter().find(|l| {
        (l.starts_with("rsync: ") || l.starts_with("ssh: ") || l.starts_with("file has vanished"))
            && !l.starts_with("rsync: connection unexpectedly closed")
    });
    if let (Some(detail), false) = (detail, outcome == Outcome::Succeeded) {
        message.push_str(": ");
        message.push_str(detail.strip_prefix("rsync: ").unwrap_or(detail));
    }
    (outcome, message)
}

/// Every exit value in rsync's manual (3.5.0 and older ones), plus the remote-shell codes.
pub(crate) fn exit_meaning(code: i32) -> (Outcome, &'static str) {
    use Outcome::*;
    match code {
        0 => (Succeeded, "finished"),
        1 => (Failed, "syntax or usage error"),
        2 => (Failed, "protocol incompatibility with the remote rsync"),
        3 => (Failed, "errors selecting input/output files or directories"),
        4 => (Failed, "requested action not supported (by this platform or the remote rsync)"),
        5 => (RemoteUnreachable, "error starting the client-server protocol"),
        6 => (Failed, "the rsync daemon could not append to its log file"),
        10 => (RemoteUnreachable, "error in socket I/O"),
        11 => (Failed, "error in file I/O"),
        12 => (RemoteUnreachable, "error in the rsync protocol data stream (the connection broke or the remote side failed)"),
        13 => (Failed, "errors with program diagnostics"),
        14 => (Failed, "error in IPC code"),
        15 => (Failed, "a sibling rsync process crashed"),
        16 => (Failed, "a sibling rsync process was killed by a signal"),
        19 => (Failed, "received SIGUSR1"),
        20 => (Failed, "interrupted by SIGINT, SIGTERM or SIGHUP"),
        21 => (Failed, "waitpid() failed"),
        22 => (Failed, "could not allocate memory buffers"),
        23 => (Partial, "partial transfer: some files or attributes could not be transferred"),
        24 => (Partial, "partial transfer: some files vanished before they could be transferred"),
        25 => (Partial, "the --max-delete limit stopped deletions"),
        30 => (RemoteUnreachable, "timeout in data send/receive"),
        35 => (RemoteUnreachable, "timeout waiting for the daemon connection"),
        124 => (RemoteUnreachable, "the remote shell failed"),
        125 => (RemoteUnreachable, "the remote shell was killed"),
        126 => (Failed, "the remote shell command could not be run"),
        127 => (Failed, "the remote shell or the remote rsync was not found"),
        255 => (RemoteUnreachable, "the remote shell (ssh) failed: the host could not be reached or refused the login"),
        _ => (Failed, "failed with an undocumented exit code"),
    }
}

/// Updates `p` from an `--info=progress2` line:
/// `     10,911,747  36%   10.03MB/s    0:00:01 (xfr#2, to-chk=2/5)`.
pub(crate) fn parse_progress(line: &str, p: &mut Progress) -> bool {
    let mut words = line.split_whitespace();
    let (Some(bytes), Some(percent), Some(rate), Some(eta)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return false;
    };
    let Some(rate_number) = rate.strip_suffix("B/s") else {
        return false;
    };
    if !percent.ends_with('%') || !bytes.starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    let (number, scale) = match rate_number.char_indices().last() {
        Some((i, 'k')) => (&rate_number[..i], 1u64 << 10),
        Some((i, 'M')) => (&rate_number[..i], 1 << 20),
        Some((i, 'G')) => (&rate_number[..i], 1 << 30),
        Some((i, 'T')) => (&rate_number[..i], 1 << 40),
        _ => (rate_number, 1),
    };
    let Ok(rate) = number.replace(',', ".").parse::<f64>() else {
        return false;
    };
    p.bytes_done = digits(bytes).unwrap_or(p.bytes_done);
    p.rate_bytes_per_sec = (rate * scale as f64) as u64;
    p.eta_secs = eta
        .split(':')
        .try_fold(0u64, |acc, part| Some(acc * 60 + part.parse::<u64>().ok()?));
    // (xfr#2, to-chk=2/5) or ir-chk= while the file list is still growing.
    let rest: String = words.collect();
    if let Some((_, counts)) = rest.split_once("-chk=") {
        let counts = counts.trim_end_matches(')');
        if let Some((left, total)) = counts.split_once('/') {
            if let (Some(left), Some(total)) = (digits(left), digits(total)) {
                p.files_done = total.saturating_sub(left);
                p.files_total = Some(total);
            }
        }
    }
    true
}

/// `30,000,008` → 30000008 (any thousands separator).
fn digits(s: &str) -> Option<u64> {
    let d: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    d.parse().ok()
}

/// The totals of `--stats`.
#[derive(Debug, Default)]
struct Stats {
    bytes: u64,
    files: u64,
    checked: Option<u64>,
}

impl Stats {
    fn absorb(&mut self, line: &str) {
        if let Some(n) = line.strip_prefix("Total transferred file size: ") {
            self.bytes = digits(n).unwrap_or(0);
        } else if let Some(n) = line.strip_prefix("Number of regular files transferred: ") {
            self.files = digits(n).unwrap_or(0);
        } else if let Some(n) = line.strip_prefix("Number of files: ") {
            // 5 (reg: 3, dir: 2)
            let regular = n
                .split_once("reg: ")
                .map(|(_, r)| r.split([',', ')']).next());
            self.checked = match regular {
                Some(r) => r.and_then(digits),
                None => Some(0),
            };
        }
    }
}

/// A line of `--itemize-changes`.
#[derive(Debug, PartialEq)]
pub(crate) enum Change {
    New,
    Changed,
    Attributes,
    Deleted,
}

impl Change {
    fn verb(&self) -> &'static str {
        match self {
            Change::New | Change::Changed => "copy",
            Change::Attributes => "update",
            Change::Deleted => "delete",
        }
    }

    fn difference(&self) -> &'static str {
        match self {
            Change::New => "missing at destination",
            Change::Deleted => "only at destination",
            Change::Changed | Change::Attributes => "differs",
        }
    }
}

/// `>f+++++++++ a.txt`, `>f.st...... b`, `cd+++++++++ sub/`, `*deleting   old`; directory
/// attribute updates (`.d..t......`) and the root directory are left out.
pub(crate) fn parse_itemize(line: &str) -> Option<(Change, &str)> {
    if let Some(path) = line.strip_prefix("*deleting ") {
        return Some((Change::Deleted, path.trim_start()));
    }
    let (code, path) = line.split_at_checked(11)?;
    let path = path.strip_prefix(' ')?;
    let b = code.as_bytes();
    let kind_ok = matches!(b[0], b'<' | b'>' | b'c' | b'h' | b'.');
    if !kind_ok || !matches!(b[1], b'f' | b'd' | b'L' | b'D' | b'S') || path == "./" {
        return None;
    }
    let change = if code[2..].bytes().all(|c| c == b'+') {
        Change::New
    } else if b[0] == b'.' {
        if b[1] == b'd' {
            return None;
        }
        Change::Attributes
    } else {
        Change::Changed
    };
    Some((change, path))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    /// Captured from rsync 3.5.0 `-a --info=progress2 --no-inc-recursive --stats
    /// --bwlimit=10M` (the `\r`-separated stream, split as the reader splits it).
    const PROGRESS: &[&str] = &[
        "              3   0%    0.00kB/s    0:00:00",
        "              3   0%    0.00kB/s    0:00:00 (xfr#1, to-chk=3/5)",
        "     10,911,747  36%   10.03MB/s    0:00:01",
        "     30,000,003  99%   10.24MB/s    0:00:02 (xfr#2, to-chk=2/5)",
        "     30,000,008 100%    1.03GB/s    0:00:00 (xfr#3, to-chk=0/5)",
    ];

    const STATS: &str = "Number of files: 5 (reg: 3, dir: 2)
Number of created files: 5 (reg: 3, dir: 2)
Number of deleted files: 0
Number of regular files transferred: 3
Total file size: 30,000,008 bytes
Total transferred file size: 30,000,008 bytes
Literal data: 30,000,008 bytes
sent 30,007,587 bytes  received 79 bytes  60,015,332.00 bytes/sec
total size is 30,000,008  speedup is 1.00";

    #[test]
    fn progress_lines() {
        let mut p = Progress::default();
        let mut seen = Vec::new();
        for line in PROGRESS {
            assert!(parse_progress(line, &mut p), "{line}");
            seen.push(p.clone());
        }
        assert_eq!(seen[0].files_total, None);
        assert_eq!((seen[1].files_done, seen[1].files_total), (2, Some(5)));
        assert_eq!(seen[2].bytes_done, 10_911_747);
        assert_eq!(seen[2].rate_bytes_per_sec, (10.03 * 1048576.0) as u64);
        assert_eq!(seen[2].eta_secs, Some(1));
        assert_eq!(seen[2].files_done, 2, "kept from the previous line");
        assert_eq!((seen[4].bytes_done, seen[4].files_done), (30_000_008, 5));
        assert_eq!(seen[4].bytes_total, None);
        for line in STATS.lines().chain(["", "sending incremental file list"]) {
            assert!(!parse_progress(line, &mut p), "{line}");
        }
    }

    #[test]
    fn stats_lines() {
        let mut stats = Stats::default();
        STATS.lines().for_each(|l| stats.absorb(l));
        assert_eq!(
            (stats.bytes, stats.files, stats.checked),
            (30_000_008, 3, Some(3))
        );
    }

    #[test]
    fn itemized_lines() {
        // Captured from `rsync -a --dry-run --itemize-changes --delete`.
        let cases = [
            (
                "*deleting   sub/b.txt",
                Some((Change::Deleted, "sub/b.txt")),
            ),
            (">f.st...... a.txt", Some((Change::Changed, "a.txt"))),
            (">f..t...... a b.txt", Some((Change::Changed, "a b.txt"))),
            (".d..t...... sub/", None),
            (">f+++++++++ sub/c.txt", Some((Change::New, "sub/c.txt"))),
            ("cd+++++++++ ./", None),
            ("cd+++++++++ sub/", Some((Change::New, "sub/"))),
            (".f...p..... mode", Some((Change::Attributes, "mode"))),
            (
                "cL+++++++++ link -> target",
                Some((Change::New, "link -> target")),
            ),
            ("created directory /tmp/exp/nonex/deep", None),
            ("Number of files: 5 (reg: 3, dir: 2)", None),
        ];
        for (line, expected) in cases {
            assert_eq!(parse_itemize(line), expected, "{line}");
        }
    }

    #[test]
    fn exit_codes() {
        let finished = |code, tail: &[&str]| Finished {
            code: Some(code),
            cancelled: false,
            log_tail: tail.iter().map(|s| s.to_string()).collect(),
        };
        let (outcome, message) = classify(&finished(24, &[]));
        assert_eq!(outcome, Outcome::Partial);
        assert_eq!(
            message,
            "rsync: partial transfer: some files vanished before they could be transferred (exit 24)"
        );
        // Captured: an unresolvable host over ssh.
        let (outcome, message) = classify(&finished(
            255,
            &[
                "ssh: Could not resolve hostname nohost.invalid: Name or service not known",
                "rsync: connection unexpectedly closed (0 bytes received so far) [sender]",
                "rsync error: unexplained error (code 255) at io.c(285) [sender=3.5.0]",
            ],
        ));
        assert_eq!(outcome, Outcome::RemoteUnreachable);
        assert!(message.ends_with("(exit 255): ssh: Could not resolve hostname nohost.invalid: Name or service not known"), "{message}");
        let (outcome, message) = classify(&finished(
            11,
            &[r#"rsync: [Receiver] mkdir "/nonexist/a/b" failed: No such file or directory (2)"#],
        ));
        assert_eq!(outcome, Outcome::Failed);
        assert_eq!(
            message,
            r#"rsync: error in file I/O (exit 11): [Receiver] mkdir "/nonexist/a/b" failed: No such file or directory (2)"#
        );
        for code in [
            0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 16, 19, 20, 21, 22, 23, 25, 30, 35,
        ] {
            assert_ne!(exit_meaning(code).1, exit_meaning(99).1, "{code}");
        }
        assert_eq!(prunable(vec!["b".into(), "a".into(), "c".into()], 2), ["a"]);
        assert!(prunable(vec!["a".into()], 2).is_empty());
    }
}
