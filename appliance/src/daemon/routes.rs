//! The daemon's control API: the Unix socket (mode 0660, the configured group) and the
//! optional TCP listener (bearer token). Daemon endpoints (pools, jobs, events, audit, alerts,
//! statistics, metrics) are answered here; pool endpoints go to the pool named by `?pool=`
//! (optional while the daemon serves one pool). Every request that changes something is
//! written to the audit log with who asked and how it ended.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tiny_http::Method;

use super::config::BackupTask;
use super::state::{
    AuditEntry, AuditVerdict, Event, EventFilter, IoSample, JobRun, Level, NewAudit,
};
use super::stats::MAX_FOLLOWERS;
use super::{jobs, Daemon, PoolSlot};
use crate::api::{
    BackupInfo, BackupRequest, DaemonInfo, JobInfo, PoolEntry, RunRequest, RunStarted,
};
use crate::http::server::{Answer, Connection, Listener, Peer, Request, Server};
use crate::http::{json_response, parse_json, query_param, text_response, Failure, Reply};

/// The most events, runs or audit entries one request returns.
const MAX_LIST: usize = 10_000;

/// Where a request came from.
#[derive(Clone, Copy)]
enum Origin {
    Unix,
    Tcp,
}

/// The daemon's listeners.
pub struct Servers {
    unix: Server,
    tcp: Option<Server>,
}

impl Servers {
    pub fn stop(self) {
        self.unix.stop();
        if let Some(tcp) = self.tcp {
            tcp.stop();
        }
    }
}

/// Binds the Unix socket (and the TCP listener when configured) and starts answering.
pub fn listen(daemon: &Arc<Daemon>) -> anyhow::Result<Servers> {
    let settings = &daemon.config.daemon;
    let group = match settings.socket_group.as_str() {
        "" => None,
        group if crate::http::group_id(group).is_ok() => Some(group),
        group => {
            daemon.event(
                Level::Warning,
                "daemon",
                None,
                &format!(
                    "group {group} does not exist: only root can use {} (create it with: groupadd --system {group})",
                    settings.socket.display()
                ),
            );
            None
        }
    };
    let listener = crate::http::bind_unix(&settings.socket, group)?;
    let handler_daemon = Arc::clone(daemon);
    let unix = Server::start(
        Listener::Unix(listener),
        "aegis-api",
        Arc::new(move |request| handle(&handler_daemon, request, Origin::Unix, None)),
    )?;
    let tcp = match &daemon.config.api.tcp {
        None => None,
        Some(tcp) => {
            let token = read_token(&tcp.token_file)?;
            let listener = std::net::TcpListener::bind(tcp.listen)
                .with_context(|| format!("cannot listen on {}", tcp.listen))?;
            let handler_daemon = Arc::clone(daemon);
            let token = Arc::new(token);
            daemon.event(
                Level::Info,
                "daemon",
                None,
                &format!("control API listening on tcp {}", tcp.listen),
            );
            Some(Server::start(
                Listener::Tcp(listener),
                "aegis-tcp",
                Arc::new(move |request| {
                    handle(&handler_daemon, request, Origin::Tcp, Some(&token))
                }),
            )?)
        }
    };
    Ok(Servers { unix, tcp })
}

/// The API token: the file's first line, at least 16 characters, in a file only its owner
/// (and group) can read.
fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let metadata = std::fs::metadata(path)
        .with_context(|| format!("cannot read the API token file {}", path.display()))?;
    if metadata.permissions().mode() & 0o007 != 0 {
        bail!(
            "the API token file {} is readable by other users: chmod 600 it",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the API token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.len() < 16 {
        bail!(
            "the API token in {} is shorter than 16 characters",
            path.display()
        );
    }
    Ok(token)
}

/// Whether the request carries the token (compared through their hashes, so the comparison
/// takes the same time wherever they differ).
fn authorized(request: &Request, token: &str) -> bool {
    request
        .header("Authorization")
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|given| {
            blake3::hash(given.trim().as_bytes()) == blake3::hash(token.as_bytes())
        })
}

/// Who asked. On the socket (anyone who can open it is an admin): the user the kernel says
/// the client process runs as, with its pid; the user the client names in `X-Aegis-User` is
/// kept as a claim when it says otherwise. Over TCP: the token holder's address.
fn actor(request: &Request, origin: Origin) -> String {
    let peer = request.peer();
    match origin {
        Origin::Unix => {
            let mut who = match peer {
                Peer::Local { pid, .. } => format!("{} (unix socket, pid {pid}", peer.describe()),
                _ => format!("{} (unix socket", peer.describe()),
            };
            if let Some(claimed) = request.header("X-Aegis-User") {
                if claimed != peer.describe() {
                    let claimed: String = claimed.chars().take(CLAIM_SHOWN).collect();
                    who.push_str(&format!("; claims to be {claimed:?}"));
                }
            }
            who.push(')');
            who
        }
        Origin::Tcp => format!("token holder at {}", peer.describe()),
    }
}

/// The longest `X-Aegis-User` claim the audit log keeps.
const CLAIM_SHOWN: usize = 64;

/// The longest request body the audit log keeps of an action.
const AUDITED_BODY: usize = 256;

fn handle(daemon: &Arc<Daemon>, request: Request, origin: Origin, token: Option<&str>) -> Answer {
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let method = request.method().clone();
    // Reads change nothing: only requests that would are audited (a scraper with a wrong
    // token must not flood the audit log, which is never pruned).
    let changes = !matches!(method, Method::Get | Method::Head);
    let allowed = match token {
        Some(token) if !authorized(&request, token) => Err(Failure::new(
            401,
            "this listener needs \"Authorization: Bearer <token>\"",
        )),
        _ => Ok(()),
    };
    if allowed.is_ok() && method == Method::Get && path == "/v1/stats/stream" {
        return stream(daemon);
    }
    let body = match allowed.and_then(|()| request.body()) {
        Ok(body) => body,
        Err(failure) => {
            let response = failure.response();
            if changes {
                let action = format!("{method} {path}");
                audit(daemon, &request, origin, &action, query, &Err(failure));
            } else {
                tracing::warn!(status = failure.status, %path, "refused a request: {}", failure.message);
            }
            return Answer::Response(response);
        }
    };
    // Counted, so a shutdown waits for it; refused once the daemon stops.
    let change = if changes {
        match daemon.begin_change() {
            Ok(change) => Some(change),
            Err(failure) => {
                let response = failure.response();
                let action = format!("{method} {path}");
                audit(daemon, &request, origin, &action, query, &Err(failure));
                return Answer::Response(response);
            }
        }
    } else {
        None
    };
    let result = route(daemon, &request, body, path, query);
    drop(change);
    if changes {
        let mut action = format!("{method} {path}");
        if !body.trim().is_empty() {
            let shown: String = body.trim().chars().take(AUDITED_BODY).collect();
            action = format!("{action} {shown}");
        }
        audit(daemon, &request, origin, &action, query, &result);
    }
    Answer::Response(result.unwrap_or_else(|f| f.response()))
}

/// Appends a request that changes something (or was refused) to the audit log, and raises
/// an `admin` event for it.
fn audit(
    daemon: &Daemon,
    request: &Request,
    origin: Origin,
    action: &str,
    query: &str,
    result: &Result<crate::http::Response, Failure>,
) {
    let result_text = match result {
        Ok(response) => format!("ok ({})", response.status_code().0),
        Err(failure) => format!("failed ({}): {}", failure.status, failure.message),
    };
    let target = query_param(query, "pool")
        .or_else(|| single_pool(daemon))
        .unwrap_or_else(|| "-".into());
    let actor = actor(request, origin);
    let entry = NewAudit {
        time: daemon.clock.now().timestamp(),
        actor: &actor,
        action,
        target: &target,
        result: &result_text,
    };
    if let Err(err) = daemon.state.audit(&entry) {
        tracing::error!(error = %err, "cannot write the audit log");
    }
    let pool = (target != "-").then_some(target.as_str());
    let level = if result.is_ok() {
        Level::Info
    } else {
        Level::Warning
    };
    daemon.event(
        level,
        "admin",
        pool,
        &format!("{actor}: {action} → {result_text}"),
    );
}

/// The pool's name while the daemon has exactly one.
fn single_pool(daemon: &Daemon) -> Option<String> {
    match daemon.pools.keys().collect::<Vec<_>>().as_slice() {
        [only] => Some((*only).clone()),
        _ => None,
    }
}

fn number<T: std::str::FromStr>(query: &str, name: &str) -> Result<Option<T>, Failure> {
    query_param(query, name)
        .map(|text| {
            text.parse()
                .map_err(|_| Failure::bad_request(format!("{name}={text} is not a number")))
        })
        .transpose()
}

fn internal(err: impl std::fmt::Display) -> Failure {
    Failure::new(500, err.to_string())
}

fn route(daemon: &Arc<Daemon>, request: &Request, body: &str, path: &str, query: &str) -> Reply {
    use Method::{Get, Post};
    match (request.method(), path) {
        (Get, "/metrics") => Ok(text_response(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            super::metrics::render(daemon),
        )),
        (Get, "/v1/daemon") => Ok(json_response(
            200,
            &DaemonInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                pid: std::process::id(),
                uptime_secs: daemon.started.elapsed().as_secs(),
                config: daemon.config.path.display().to_string(),
                socket: daemon.config.daemon.socket.display().to_string(),
                pools: daemon.pools.keys().cloned().collect(),
                alerts_firing: daemon.alerts.firing().len(),
            },
        )),
        (Get, "/v1/pools") => Ok(json_response(200, &pools(daemon))),
        (Get, "/v1/jobs") => Ok(json_response(200, &job_list(daemon)?)),
        (Get, "/v1/jobs/history") => {
            let job = query_param(query, "job");
            if let Some(job) = &job {
                if daemon.job(job).is_none() {
                    return Err(Failure::new(404, format!("no job named '{job}'")));
                }
            }
            let limit = number(query, "limit")?.unwrap_or(50).clamp(1, MAX_LIST);
            let runs: Vec<JobRun> = daemon.state.runs(job.as_deref(), limit).map_err(internal)?;
            Ok(json_response(200, &runs))
        }
        (Post, "/v1/jobs/run") => {
            let wanted: RunRequest = parse_json(body)?;
            let job = daemon.job(&wanted.job).ok_or_else(|| {
                Failure::new(
                    404,
                    format!("no job named '{}' (see aegis jobs list)", wanted.job),
                )
            })?;
            let run = jobs::start(daemon, job, None)?;
            Ok(json_response(
                202,
                &RunStarted {
                    job: job.name.clone(),
                    run,
                },
            ))
        }
        (Get, "/v1/events") => {
            let min_level = query_param(query, "level")
                .map(|text| {
                    text.parse::<Level>().map_err(|_| {
                        Failure::bad_request(format!("level={text}: use info, warning or error"))
                    })
                })
                .transpose()?;
            let filter = EventFilter {
                after_id: number(query, "after")?,
                min_level,
                kind: query_param(query, "kind"),
                pool: query_param(query, "pool"),
                limit: number(query, "limit")?.unwrap_or(100).clamp(1, MAX_LIST),
            };
            let events: Vec<Event> = daemon.state.events(&filter).map_err(internal)?;
            Ok(json_response(200, &events))
        }
        (Get, "/v1/audit") => {
            let limit = number(query, "limit")?.unwrap_or(100).clamp(1, MAX_LIST);
            let entries: Vec<AuditEntry> = daemon.state.audit_entries(limit).map_err(internal)?;
            Ok(json_response(200, &entries))
        }
        (Get, "/v1/audit/verify") => {
            let verdict: AuditVerdict = daemon.state.audit_verify().map_err(internal)?;
            Ok(json_response(200, &verdict))
        }
        (Get, "/v1/alerts") => Ok(json_response(200, &daemon.alerts.firing())),
        (Get, "/v1/stats") => Ok(json_response(200, &daemon.stats.latest())),
        (Get, "/v1/stats/history") => {
            let pool = query_param(query, "pool")
                .or_else(|| single_pool(daemon))
                .ok_or_else(|| Failure::bad_request("give ?pool=NAME"))?;
            if !daemon.pools.contains_key(&pool) {
                return Err(Failure::new(
                    404,
                    format!("aegisd serves no pool named '{pool}'"),
                ));
            }
            let now = daemon.clock.now().timestamp();
            let since = number(query, "since")?.unwrap_or(now - 3600);
            let until = number(query, "until")?.unwrap_or(now);
            let samples: Vec<IoSample> = daemon
                .state
                .io_history(&pool, since, until)
                .map_err(internal)?;
            Ok(json_response(200, &samples))
        }
        (Get, "/v1/backups") => Ok(json_response(200, &backup_list(daemon)?)),
        (Get, "/v1/backups/history") => {
            let limit = number(query, "limit")?.unwrap_or(50).clamp(1, MAX_LIST);
            let runs: Vec<JobRun> = match query_param(query, "name") {
                Some(name) => {
                    let task = backup_task(daemon, &name)?;
                    daemon
                        .state
                        .runs(Some(&task.job_name()), limit)
                        .map_err(internal)?
                }
                None => {
                    let mut runs = Vec::new();
                    for task in &daemon.config.backups {
                        runs.extend(
                            daemon
                                .state
                                .runs(Some(&task.job_name()), limit)
                                .map_err(internal)?,
                        );
                    }
                    runs.sort_by_key(|run| std::cmp::Reverse(run.id));
                    runs.truncate(limit);
                    runs
                }
            };
            Ok(json_response(200, &runs))
        }
        (Post, "/v1/backups/run") => {
            let wanted: BackupRequest = parse_json(body)?;
            let task = backup_task(daemon, &wanted.name)?;
            if wanted.dry_run {
                let service = daemon.service(&task.job.pool)?;
                let report = super::backups::dry_run(daemon, &service, task)?;
                return Ok(json_response(200, &report));
            }
            let job = daemon
                .job(&task.job_name())
                .ok_or_else(|| Failure::new(500, "the backup has no job"))?;
            let run = jobs::start(daemon, job, None)?;
            Ok(json_response(
                202,
                &RunStarted {
                    job: job.name.clone(),
                    run,
                },
            ))
        }
        (Post, "/v1/backups/verify") => {
            let wanted: BackupRequest = parse_json(body)?;
            let task = backup_task(daemon, &wanted.name)?;
            let service = daemon.service(&task.job.pool)?;
            let report = super::backups::verify(daemon, &service, task)?;
            let (level, verdict) = if report.identical {
                (Level::Info, "matches".to_owned())
            } else {
                (
                    Level::Warning,
                    format!("differs in {} place(s) from", report.differences.len()),
                )
            };
            daemon.event(
                level,
                "backup",
                Some(&task.job.pool),
                &format!(
                    "verify of backup {}: the destination {verdict} the snapshot of its last run",
                    task.job.name
                ),
            );
            Ok(json_response(200, &report))
        }
        (Post, "/v1/backups/cancel") => {
            let wanted: BackupRequest = parse_json(body)?;
            let task = backup_task(daemon, &wanted.name)?;
            if !daemon.backups.cancel(&task.job.name) {
                return Err(Failure::new(
                    409,
                    format!("backup {} is not running", task.job.name),
                ));
            }
            Ok(json_response(200, &backup_list(daemon)?))
        }
        (
            _,
            "/metrics"
            | "/v1/daemon"
            | "/v1/pools"
            | "/v1/jobs"
            | "/v1/jobs/history"
            | "/v1/jobs/run"
            | "/v1/events"
            | "/v1/audit"
            | "/v1/audit/verify"
            | "/v1/alerts"
            | "/v1/stats"
            | "/v1/stats/history"
            | "/v1/stats/stream"
            | "/v1/backups"
            | "/v1/backups/history"
            | "/v1/backups/run"
            | "/v1/backups/verify"
            | "/v1/backups/cancel",
        ) => Err(Failure::new(405, "method not allowed")),
        (Method::Post, "/v1/devices/add") => {
            let (pool, service) = pool_of(daemon, query)?;
            let added = service.devices.add(&service.fs, &parse_json(body)?)?;
            list_device(daemon, &pool, &added.path);
            Ok(json_response(200, &added))
        }
        (Method::Post, "/v1/devices/replace") => {
            let (pool, service) = pool_of(daemon, query)?;
            let added = service.devices.replace(&service.fs, &parse_json(body)?)?;
            list_device(daemon, &pool, &added.path);
            Ok(json_response(202, &added))
        }
        (_, path) if path.starts_with("/v1/") => {
            let (_, service) = pool_of(daemon, query)?;
            crate::service::route(request.method(), request.url(), body, &service)
        }
        _ => Err(Failure::new(404, format!("no such endpoint: {path}"))),
    }
}

/// The pool a request is for (`?pool=NAME`, optional while aegisd serves one) and its service.
fn pool_of(
    daemon: &Daemon,
    query: &str,
) -> Result<(String, Arc<crate::service::PoolService>), Failure> {
    let pool = match query_param(query, "pool") {
        Some(pool) => pool,
        None => single_pool(daemon).ok_or_else(|| {
            let names: Vec<&str> = daemon.pools.keys().map(String::as_str).collect();
            Failure::bad_request(format!(
                "aegisd serves several pools ({}): add ?pool=NAME",
                names.join(", ")
            ))
        })?,
    };
    let service = daemon.service(&pool)?;
    Ok((pool, service))
}

/// Adds a device that joined `pool` to its `devices` in the config file, so the pool mounts
/// whole at the next start; an event says what happened (or that the operator must do it).
fn list_device(daemon: &Daemon, pool: &str, device: &str) {
    let config = &daemon.config.path;
    match super::config_edit::add_device(config, pool, device) {
        Ok(changed) => {
            if changed {
                daemon.event(
                    Level::Info,
                    "device",
                    Some(pool),
                    &format!("{device} joined the pool and was added to its devices in {}", config.display()),
                );
            }
        }
        Err(err) => daemon.event(
            Level::Error,
            "device",
            Some(pool),
            &format!("{device} joined the pool, but the config could not be updated ({err}): add it to the pool's devices by hand, or the pool mounts degraded at the next start"),
        ),
    }
}

fn pools(daemon: &Daemon) -> Vec<PoolEntry> {
    daemon
        .pools
        .iter()
        .map(|(name, slot)| match (slot, daemon.service(name)) {
            (_, Ok(service)) => PoolEntry {
                name: name.clone(),
                mounted: true,
                error: None,
                status: Some(service.status()),
            },
            (PoolSlot::Failed(error), _) => PoolEntry {
                name: name.clone(),
                mounted: false,
                error: Some(error.clone()),
                status: None,
            },
            (PoolSlot::Mounted(_), Err(failure)) => PoolEntry {
                name: name.clone(),
                mounted: false,
                error: Some(failure.message),
                status: None,
            },
        })
        .collect()
}

/// The backup named `name`.
fn backup_task<'a>(daemon: &'a Daemon, name: &str) -> Result<&'a BackupTask, Failure> {
    daemon
        .config
        .backups
        .iter()
        .find(|task| task.job.name == name)
        .ok_or_else(|| {
            Failure::new(
                404,
                format!("no backup named '{name}' (see aegis backup list)"),
            )
        })
}

fn backup_list(daemon: &Daemon) -> Result<Vec<BackupInfo>, Failure> {
    daemon
        .config
        .backups
        .iter()
        .map(|task| {
            let job = task.job_name();
            Ok(BackupInfo {
                name: task.job.name.clone(),
                pool: task.job.pool.clone(),
                engine: task.job.engine.binary().into(),
                source: task.job.source.clone(),
                destination: task.job.destination.clone(),
                mode: match task.job.mode {
                    backup::job::Mode::Sync => "sync",
                    backup::job::Mode::Copy => "copy",
                }
                .into(),
                schedule: task.schedule.as_ref().map(ToString::to_string),
                keep_versions: task.job.keep_versions,
                next_run: daemon.next_run(&job).map(|t| t.timestamp()),
                running: daemon.is_running(&job),
                progress: daemon.backups.progress(&task.job.name),
                last_run: daemon.state.last_run(&job).map_err(internal)?,
            })
        })
        .collect()
}

fn job_list(daemon: &Daemon) -> Result<Vec<JobInfo>, Failure> {
    daemon
        .jobs
        .iter()
        .map(|job| {
            Ok(JobInfo {
                name: job.name.clone(),
                kind: job.work.kind().into(),
                pool: job.pool.clone(),
                schedule: job.schedule.as_ref().map(ToString::to_string),
                cron: job.schedule.as_ref().map(|s| s.cron().to_owned()),
                next_run: daemon.next_run(&job.name).map(|t| t.timestamp()),
                running: daemon.is_running(&job.name),
                last_run: daemon.state.last_run(&job.name).map_err(internal)?,
            })
        })
        .collect()
}

/// `GET /v1/stats/stream`: server-sent events, one `data:` line of [`crate::api::IoSecond`]
/// JSON a second, until the client goes away, 30 s pass without a sample, or the daemon stops.
/// The connection's own thread carries it, so a watcher never holds up other requests; at
/// most [`MAX_FOLLOWERS`] at once, more are refused with 503 `too_many_streams`.
fn stream(daemon: &Daemon) -> Answer {
    if daemon.is_stopping() {
        return Answer::Response(Daemon::stopping_failure().response());
    }
    let Some(follower) = daemon.stats.follow() else {
        let failure = Failure::with_code(
            503,
            "too_many_streams",
            format!(
                "{MAX_FOLLOWERS} clients follow the live stream already; try again once one has left"
            ),
        );
        return Answer::Response(failure.response());
    };
    let receiver = daemon.stats.subscribe();
    Answer::Stream(Box::new(move |connection: &mut Connection| {
        let _follower = follower;
        let head =
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
                    Connection: close\r\n\r\nretry: 1000\n\n";
        if connection
            .write_all(head.as_bytes())
            .and_then(|()| connection.flush())
            .is_err()
        {
            return;
        }
        let mut silent = Duration::ZERO;
        while !connection.stopping() && silent < STREAM_SILENCE {
            match receiver.recv_timeout(STREAM_POLL) {
                Ok(second) => {
                    silent = Duration::ZERO;
                    let Ok(json) = serde_json::to_string(&*second) else {
                        continue;
                    };
                    let sent = connection
                        .write_all(format!("event: io\ndata: {json}\n\n").as_bytes())
                        .and_then(|()| connection.flush());
                    if sent.is_err() {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => silent += STREAM_POLL,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }))
}

/// How often a stream looks at whether the daemon stops.
const STREAM_POLL: Duration = Duration::from_secs(1);
/// A stream ends after this long without a sample.
const STREAM_SILENCE: Duration = Duration::from_secs(30);
