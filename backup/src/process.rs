//! Running one rsync or rclone child: spawning it in its own process group, reading its
//! stdout and stderr line by line (lines end at `\n` or `\r`, as rsync's progress does) on
//! reader threads, handing each line to the caller on the calling thread, stopping the whole
//! group when the run is cancelled, and keeping the last lines as a log tail.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::job::Engine;
use crate::run::BackupError;

/// How many lines of output a report keeps.
pub const LOG_TAIL_LINES: usize = 50;
/// How long a cancelled child gets to clean up (rsync removes its temp files) before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// How long to wait for the output pipes after the child exited (a grandchild such as an ssh
/// control master may hold them open).
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Longer lines are cut (rclone's JSON stats lines list every file in flight).
const MAX_LINE: usize = 1 << 20;

/// How a child ended.
#[derive(Debug)]
pub(crate) struct Finished {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub cancelled: bool,
    pub log_tail: Vec<String>,
}

/// Runs `cmd` to completion. `on_line` sees every output line and returns what to keep of it
/// in the log tail (`None`: nothing, e.g. for progress lines).
pub(crate) fn execute(
    mut cmd: Command,
    engine: Engine,
    cancel: &AtomicBool,
    on_line: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<Finished, BackupError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    tracing::debug!(command = ?cmd, "starting {}", engine.binary());
    let mut child = cmd.spawn().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            BackupError::MissingBinary {
                binary: engine.binary().into(),
                package: engine.binary(),
            }
        } else {
            BackupError::Spawn {
                binary: engine.binary().into(),
                source,
            }
        }
    })?;
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        spawn_reader(out, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        spawn_reader(err, tx.clone());
    }
    drop(tx);

    let pid = child.id();
    let mut tail = VecDeque::with_capacity(LOG_TAIL_LINES);
    let mut terminated: Option<Instant> = None;
    let mut killed = false;
    let mut exited = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some(kept) = on_line(&line) {
                    if tail.len() == LOG_TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(kept);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if terminated.is_none() && cancel.load(Ordering::Relaxed) {
            tracing::info!(pid, "cancelling {}", engine.binary());
            signal_group(pid, "TERM");
            terminated = Some(Instant::now());
        }
        if let Some(at) = terminated {
            if !killed && at.elapsed() > TERM_GRACE {
                signal_group(pid, "KILL");
                let _ = child.kill();
                killed = true;
            }
        }
        if exited.is_none() {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some((status, Instant::now()));
            }
        }
        if matches!(exited, Some((_, at)) if at.elapsed() > DRAIN_GRACE) {
            break;
        }
    }
    let status = match exited {
        Some((status, _)) => status,
        None => child.wait().map_err(|source| BackupError::Spawn {
            binary: engine.binary().into(),
            source,
        })?,
    };
    tracing::debug!(pid, %status, "{} exited", engine.binary());
    Ok(Finished {
        code: status.code(),
        cancelled: terminated.is_some(),
        log_tail: tail.into(),
    })
}

/// Sends a signal to the child's process group (rsync forks helpers; ssh runs under it)
/// through the shell's `kill`, as std has no kill(2) other than SIGKILL to one process.
fn signal_group(pid: u32, signal: &str) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -s {signal} -- -{pid}"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        tracing::warn!(pid, signal, "could not signal the process group");
    }
}

fn spawn_reader(stream: impl Read + Send + 'static, tx: mpsc::Sender<String>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            let (consumed, done) = match reader.fill_buf() {
                Ok([]) | Err(_) => break,
                Ok(buf) => match buf.iter().position(|&b| b == b'\n' || b == b'\r') {
                    Some(end) => {
                        line.extend_from_slice(&buf[..end]);
                        (end + 1, true)
                    }
                    None => {
                        line.extend_from_slice(buf);
                        (buf.len(), false)
                    }
                },
            };
            reader.consume(consumed);
            if (done || line.len() > MAX_LINE) && !send(&tx, &mut line) {
                return;
            }
        }
        send(&tx, &mut line);
    });
}

/// Sends a non-empty line; false when nobody listens any more.
fn send(tx: &mpsc::Sender<String>, line: &mut Vec<u8>) -> bool {
    let text = String::from_utf8_lossy(line).trim_end().to_string();
    line.clear();
    text.is_empty() || tx.send(text).is_ok()
}
