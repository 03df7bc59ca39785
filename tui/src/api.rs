//! The API worker: three threads that talk to aegisd for the console and report back as
//! [`Msg`]s over a channel, so the interface never waits on the daemon.
//!
//! - the poller asks the daemon and the selected pool for everything shown, once a second
//!   (at once when asked), and reports an unreachable daemon as `Disconnected`, trying again
//!   every second;
//! - the stream reader follows `GET /v1/stats/stream` on a raw `UnixStream` and reconnects
//!   when it ends;
//! - the executor runs the actions the user confirmed, one at a time.
//!
//! A socket that answers 404 to `GET /v1/daemon` is a standalone serving process (`aegis
//! mount`): its one pool is shown from `GET /v1/status`, without the daemon's endpoints.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::Duration;

use appliance::api::{
    ApiError, BackupInfo, BackupRequest, DaemonInfo, Event, MigrateRequest, PinRequest, PoolEntry,
    RollbackRequest, ScrubStart, SnapshotCreate, Status,
};
use appliance::client::Endpoint;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::update::{Command, DataUpdate, Done, Msg};
use crate::wire::{latency_totals, SseReader};

/// How often the poller asks, and how soon it tries again after a failure.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// The stream sends a sample a second and gives up after 30 s without one.
const STREAM_TIMEOUT: Duration = Duration::from_secs(35);

/// Why a request failed.
enum Failure {
    /// No answer: the daemon is down, restarting, or the socket is wrong.
    Unreachable(String),
    /// The daemon answered with an error.
    Api(String),
}

/// What the poller is told between polls.
enum PollerControl {
    Pool(Option<String>),
    Now,
}

/// The running worker: where to send commands.
pub struct Worker {
    poller: Sender<PollerControl>,
    executor: Sender<Command>,
}

impl Worker {
    /// Starts the threads; they report to `messages` and stop once it is closed.
    pub fn start(socket: PathBuf, pool: Option<String>, messages: &Sender<Msg>) -> Self {
        let (poller, poller_control) = mpsc::channel();
        let (executor, commands) = mpsc::channel();
        {
            let socket = socket.clone();
            let messages = messages.clone();
            thread::spawn(move || poll(&socket, pool, &poller_control, &messages));
        }
        {
            let socket = socket.clone();
            let messages = messages.clone();
            thread::spawn(move || follow_stream(&socket, &messages));
        }
        {
            let messages = messages.clone();
            let poller = poller.clone();
            thread::spawn(move || execute_all(&socket, &commands, &messages, &poller));
        }
        Self { poller, executor }
    }

    /// Hands a command to the thread that carries it out.
    pub fn send(&self, command: Command) {
        // A thread that is gone has nothing to report to either: the console is closing.
        let _ = match command {
            Command::SelectPool(pool) => self.poller.send(PollerControl::Pool(pool)).is_ok(),
            other => self.executor.send(other).is_ok(),
        };
    }
}

/// One request, decoded; transport failures and API errors kept apart.
fn fetch<T: DeserializeOwned>(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&impl Serialize>,
) -> Result<T, Failure> {
    let body = body
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| Failure::Api(e.to_string()))?;
    let (code, answer) = endpoint
        .request(method, path, body.as_deref())
        .map_err(|e| Failure::Unreachable(format!("{e:#}")))?;
    if !(200..300).contains(&code) {
        let message = serde_json::from_str::<ApiError>(&answer).map_or(answer, |e| e.message);
        return Err(Failure::Api(message));
    }
    serde_json::from_str(&answer).map_err(|e| Failure::Api(format!("{path}: {e}")))
}

fn get<T: DeserializeOwned>(endpoint: &Endpoint, path: &str) -> Result<T, Failure> {
    fetch(endpoint, "GET", path, None::<&()>)
}

/// Where the poller stands between polls.
struct PollState {
    pool: Option<String>,
    /// The id of the newest event received.
    last_event: Option<i64>,
    /// The pool whose stored I/O history was loaded since connecting.
    history_loaded_for: Option<Option<String>>,
}

fn poll(socket: &Path, pool: Option<String>, control: &Receiver<PollerControl>, tx: &Sender<Msg>) {
    let mut state = PollState {
        pool,
        last_event: None,
        history_loaded_for: None,
    };
    let mut connected = false;
    loop {
        let answered = match poll_once(socket, &mut state, tx) {
            Ok(()) => {
                if !connected {
                    connected = true;
                    tx.send(Msg::Connected).is_ok()
                } else {
                    true
                }
            }
            Err(reason) => {
                connected = false;
                state.history_loaded_for = None;
                tx.send(Msg::Disconnected {
                    reason,
                    retry_in_secs: POLL_EVERY.as_secs(),
                })
                .is_ok()
            }
        };
        if !answered {
            return;
        }
        // Until the next poll is due, or sooner when asked.
        match control.recv_timeout(POLL_EVERY) {
            Ok(PollerControl::Pool(pool)) => state.pool = pool,
            Ok(PollerControl::Now) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Sends `what`'s answer as data, or its API error; `Err` when the daemon is unreachable.
fn report<T>(
    tx: &Sender<Msg>,
    what: &str,
    answer: Result<T, Failure>,
    data: impl FnOnce(T) -> DataUpdate,
) -> Result<(), String> {
    let msg = match answer {
        Ok(value) => Msg::Data(data(value)),
        Err(Failure::Api(message)) => Msg::ApiFailed {
            what: what.to_owned(),
            message,
        },
        Err(Failure::Unreachable(reason)) => return Err(reason),
    };
    // The console has closed: the next poll's send fails too and ends the thread.
    let _ = tx.send(msg);
    Ok(())
}

fn poll_once(socket: &Path, state: &mut PollState, tx: &Sender<Msg>) -> Result<(), String> {
    let daemon = Endpoint {
        socket: socket.to_owned(),
        pool: None,
    };
    let standalone = match get::<DaemonInfo>(&daemon, "/v1/daemon") {
        Ok(info) => {
            let _ = tx.send(Msg::Data(DataUpdate::Daemon(info)));
            false
        }
        Err(Failure::Unreachable(reason)) => return Err(reason),
        Err(Failure::Api(_)) => true,
    };
    if standalone {
        let status = get::<Status>(&daemon, "/v1/status");
        return report(tx, "pools", status, |status| {
            DataUpdate::Pools(vec![PoolEntry {
                name: status.name.clone(),
                mounted: true,
                error: None,
                status: Some(status),
            }])
        })
        .and_then(|()| poll_pool(&daemon, state, tx));
    }
    report(tx, "pools", get(&daemon, "/v1/pools"), DataUpdate::Pools)?;
    report(tx, "jobs", get(&daemon, "/v1/jobs"), DataUpdate::Jobs)?;
    report(
        tx,
        "backups",
        get::<Vec<BackupInfo>>(&daemon, "/v1/backups"),
        DataUpdate::Backups,
    )?;
    report(tx, "alerts", get(&daemon, "/v1/alerts"), DataUpdate::Alerts)?;
    let events_path = match state.last_event {
        None => "/v1/events?limit=500".to_owned(),
        Some(id) => format!("/v1/events?after={id}&limit=1000"),
    };
    let events = get::<Vec<Event>>(&daemon, &events_path);
    if let Ok(Some(last)) = events.as_ref().map(|e| e.last()) {
        state.last_event = Some(last.id);
    }
    report(tx, "events", events, DataUpdate::Events)?;
    let metrics = daemon
        .request("GET", "/metrics", None)
        .map_err(|e| format!("{e:#}"))?;
    let _ = tx.send(Msg::Data(DataUpdate::Latency(latency_totals(&metrics.1))));
    if state.pool.is_none() {
        return Ok(());
    }
    let endpoint = Endpoint {
        socket: socket.to_owned(),
        pool: state.pool.clone(),
    };
    if state.history_loaded_for.as_ref() != Some(&state.pool) {
        let since = chrono::Utc::now().timestamp() - crate::state::HISTORY_SECONDS;
        let history = get(&endpoint, &format!("/v1/stats/history?since={since}"));
        if history.is_ok() {
            state.history_loaded_for = Some(state.pool.clone());
        }
        report(tx, "stats history", history, DataUpdate::IoHistory)?;
    }
    poll_pool(&endpoint, state, tx)
}

/// The selected pool's tiers, snapshots and scrub.
fn poll_pool(endpoint: &Endpoint, state: &PollState, tx: &Sender<Msg>) -> Result<(), String> {
    let pool = || state.pool.clone();
    report(tx, "tier", get(endpoint, "/v1/tier"), |status| {
        DataUpdate::Tier {
            pool: pool(),
            status,
        }
    })?;
    report(
        tx,
        "snapshots",
        get(endpoint, "/v1/snapshots"),
        |snapshots| DataUpdate::Snapshots {
            pool: pool(),
            snapshots,
        },
    )?;
    report(tx, "scrub", get(endpoint, "/v1/scrub"), |status| {
        DataUpdate::Scrub {
            pool: pool(),
            status,
        }
    })
}

/// Follows the live statistics stream for as long as the console runs.
fn follow_stream(socket: &Path, tx: &Sender<Msg>) {
    loop {
        match read_stream(socket, tx) {
            StreamEnd::ConsoleClosed => return,
            StreamEnd::Refused => thread::sleep(Duration::from_secs(10)),
            StreamEnd::Ended => thread::sleep(POLL_EVERY),
        }
    }
}

enum StreamEnd {
    /// The channel is closed.
    ConsoleClosed,
    /// The socket answered, but not with a stream (a standalone serving process).
    Refused,
    /// The connection failed or closed.
    Ended,
}

fn read_stream(socket: &Path, tx: &Sender<Msg>) -> StreamEnd {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return StreamEnd::Ended;
    };
    let request =
        "GET /v1/stats/stream HTTP/1.1\r\nHost: aegisd\r\nAccept: text/event-stream\r\n\r\n";
    if stream.set_read_timeout(Some(STREAM_TIMEOUT)).is_err()
        || stream.write_all(request.as_bytes()).is_err()
    {
        return StreamEnd::Ended;
    }
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return StreamEnd::Ended;
    }
    if line.split_whitespace().nth(1) != Some("200") {
        return StreamEnd::Refused;
    }
    // The headers, up to the blank line.
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return StreamEnd::Ended,
            Ok(_) if line.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let mut events = SseReader::default();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return StreamEnd::Ended,
            Ok(_) => {
                if let Some(Ok(second)) = events.line(&line) {
                    if tx.send(Msg::Io(second)).is_err() {
                        return StreamEnd::ConsoleClosed;
                    }
                }
            }
        }
    }
}

/// Runs confirmed actions in order, then asks the poller to show their effect.
fn execute_all(
    socket: &Path,
    commands: &Receiver<Command>,
    tx: &Sender<Msg>,
    poller: &Sender<PollerControl>,
) {
    for command in commands {
        let action = command.describe();
        let msg = match execute(socket, command) {
            Ok(done) => Msg::Done(done),
            Err(Failure::Api(message) | Failure::Unreachable(message)) => {
                Msg::ActionFailed { action, message }
            }
        };
        if tx.send(msg).is_err() {
            return;
        }
        let _ = poller.send(PollerControl::Now);
    }
}

/// A name as one path segment.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn execute(socket: &Path, command: Command) -> Result<Done, Failure> {
    let at = |pool: Option<String>| Endpoint {
        socket: socket.to_owned(),
        pool,
    };
    let none = None::<&()>;
    Ok(match command {
        Command::SelectPool(_) => return Err(Failure::Api("not an action".into())),
        Command::CreateSnapshot { pool, name } => Done::SnapshotCreated(fetch(
            &at(pool),
            "POST",
            "/v1/snapshots",
            Some(&SnapshotCreate { name }),
        )?),
        Command::DeleteSnapshot { pool, name } => Done::SnapshotDeleted(fetch(
            &at(pool),
            "DELETE",
            &format!("/v1/snapshots/{}", encode(&name)),
            none,
        )?),
        Command::Rollback { pool, name, force } => Done::RolledBack(fetch(
            &at(pool),
            "POST",
            &format!("/v1/snapshots/{}/rollback", encode(&name)),
            Some(&RollbackRequest { force }),
        )?),
        Command::SnapshotDiff { pool, name } => {
            let changes = get(&at(pool), &format!("/v1/snapshots/{}/diff", encode(&name)))?;
            Done::Diff { name, changes }
        }
        Command::MigrateDryRun { pool } => Done::Plan(fetch(
            &at(pool),
            "POST",
            "/v1/tier/migrate",
            Some(&MigrateRequest {
                dry_run: true,
                ..MigrateRequest::default()
            }),
        )?),
        Command::Migrate { pool } => Done::MigrationStarted(fetch(
            &at(pool),
            "POST",
            "/v1/tier/migrate",
            Some(&MigrateRequest::default()),
        )?),
        Command::CancelMigration { pool } => {
            let _: serde_json::Value = fetch(&at(pool), "POST", "/v1/tier/migrate/cancel", none)?;
            Done::MigrationCancelling
        }
        Command::Pin { pool, path, tier } => Done::Pinned(fetch(
            &at(pool),
            "POST",
            "/v1/tier/pin",
            Some(&PinRequest { path, tier }),
        )?),
        Command::RunBackup { name, dry_run } => {
            let body = BackupRequest {
                name: name.clone(),
                dry_run,
            };
            if dry_run {
                let report = fetch(&at(None), "POST", "/v1/backups/run", Some(&body))?;
                Done::BackupDryRun { name, report }
            } else {
                Done::BackupStarted(fetch(&at(None), "POST", "/v1/backups/run", Some(&body))?)
            }
        }
        Command::CancelBackup { name } => {
            let body = BackupRequest {
                name: name.clone(),
                dry_run: false,
            };
            let _: Vec<BackupInfo> = fetch(&at(None), "POST", "/v1/backups/cancel", Some(&body))?;
            Done::BackupCancelling { name }
        }
        Command::BackupLog { name } => {
            let path = format!("/v1/backups/history?name={}&limit=10", encode(&name));
            let runs = get(&at(None), &path)?;
            Done::BackupLog { name, runs }
        }
        Command::StartScrub { pool } => Done::ScrubStarted(fetch(
            &at(pool),
            "POST",
            "/v1/scrub/start",
            Some(&ScrubStart::default()),
        )?),
        Command::CancelScrub { pool } => {
            Done::ScrubCancelled(fetch(&at(pool), "POST", "/v1/scrub/cancel", none)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn names_are_percent_encoded_as_one_segment() {
        assert_eq!(encode("before upgrade/2"), "before%20upgrade%2F2");
        assert_eq!(encode("auto-2026.11_x~"), "auto-2026.11_x~");
    }
}
