//! `aegisd`, the daemon: mounts the pools its config names, runs their schedules (snapshots
//! with retention, tier migration, scrub, backups), records job runs, events, the audit log and I/O
//! history in its state database, serves the control API on one Unix socket (and optionally
//! TCP), exports Prometheus metrics, sends alerts, and talks to systemd.

pub mod alerts;
pub mod backups;
pub mod cli;
pub mod config;
pub mod config_edit;
pub mod jobs;
pub mod metrics;
pub mod notify;
pub mod routes;
pub mod schedule;
pub mod state;
pub mod stats;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use fs_core::device::Backend;
use fs_core::fs::FsConfig;

use self::config::{Config, PoolConfig};
use self::jobs::Job;
use self::schedule::{JobState, Planner};
use self::state::{Level, NewEvent, StateDb};
use crate::http::Failure;
use crate::service::{MountRequest, MountedPool, PoolService};

/// Where time comes from: the system clock, or one a test moves by hand.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stays where it is set (for schedule tests).
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A pool of the config: mounted, or why not.
pub enum PoolSlot {
    Mounted(Arc<MountedPool>),
    Failed(String),
}

/// What the daemon is busy with: the jobs running, the requests that change something being
/// answered, and whether it stops. One lock covers all three, so nothing starts once
/// [`Daemon::shutdown`] has begun, and shutdown sees everything that started before.
#[derive(Default)]
struct Activity {
    jobs: HashSet<String>,
    changes: usize,
    stopping: bool,
}

/// A request that changes something, counted until dropped (see [`Daemon::begin_change`]).
pub struct Change<'a>(&'a Daemon);

impl Drop for Change<'_> {
    fn drop(&mut self) {
        let mut activity = self.0.activity();
        activity.changes = activity.changes.saturating_sub(1);
        self.0.settled.notify_all();
    }
}

/// How long shutdown waits for running jobs and changing requests before it unmounts anyway.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The running daemon, shared by the API threads, the scheduler, the sampler and job threads.
pub struct Daemon {
    pub config: Config,
    pub state: Arc<StateDb>,
    pub pools: BTreeMap<String, PoolSlot>,
    pub jobs: Vec<Job>,
    pub clock: Arc<dyn Clock>,
    pub alerts: alerts::Alerts,
    pub stats: stats::Stats,
    /// Live progress of the backups running now.
    pub backups: backups::Running,
    pub started: Instant,
    activity: Mutex<Activity>,
    /// Notified whenever a job or a changing request ends.
    settled: Condvar,
    planner: Mutex<Planner>,
    /// Mirrors `Activity::stopping`, for the job loops that look at it every second.
    stopping: AtomicBool,
    background: Mutex<Option<stats::Background>>,
}

impl Daemon {
    /// Opens the state database and mounts every pool of the config. A pool that cannot be
    /// mounted is reported (event, alert, `aegis status`), and the others are served.
    pub fn start(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Self>> {
        let state = Arc::new(StateDb::open(&config.daemon.state_db)?);
        let now = clock.now();
        let interrupted = state.close_interrupted_runs(now.timestamp())?;
        let alerts = alerts::Alerts::restore(
            config.alerts.clone(),
            Arc::clone(&state),
            Arc::clone(&clock),
        )?;
        let jobs = jobs::from_config(&config);
        let mut job_states = Vec::new();
        for job in &jobs {
            let marks = state.note_job_seen(&job.name, now.timestamp())?;
            if let Some(schedule) = &job.schedule {
                job_states.push(JobState {
                    name: job.name.clone(),
                    schedule: schedule.clone(),
                    handled: marks.handled.and_then(|t| DateTime::from_timestamp(t, 0)),
                    first_seen: DateTime::from_timestamp(marks.first_seen, 0).unwrap_or(now),
                });
            }
        }
        let mut pools = BTreeMap::new();
        for pool in &config.pools {
            let slot = match mount(pool) {
                Ok(mounted) => PoolSlot::Mounted(Arc::new(mounted)),
                Err(err) => PoolSlot::Failed(format!("{err:#}")),
            };
            pools.insert(pool.name.clone(), slot);
        }
        let daemon = Arc::new(Self {
            stats: stats::Stats::default(),
            backups: backups::Running::default(),
            config,
            state,
            pools,
            jobs,
            clock,
            alerts,
            started: Instant::now(),
            activity: Mutex::new(Activity::default()),
            settled: Condvar::new(),
            planner: Mutex::new(Planner::new(job_states)),
            stopping: AtomicBool::new(false),
            background: Mutex::new(None),
        });
        daemon.event(
            Level::Info,
            "daemon",
            None,
            &format!(
                "aegisd {} started with {}",
                env!("CARGO_PKG_VERSION"),
                daemon.config.path.display()
            ),
        );
        for task in &daemon.config.backups {
            if let Ok(service) = daemon.service(&task.job.pool) {
                backups::release_orphans(&daemon, &service, task);
            }
        }
        if interrupted > 0 {
            daemon.event(
                Level::Warning,
                "daemon",
                None,
                &format!("{interrupted} job run(s) were interrupted when aegisd last stopped"),
            );
        }
        for (name, slot) in &daemon.pools {
            match slot {
                PoolSlot::Mounted(pool) => daemon.event(
                    Level::Info,
                    "pool",
                    Some(name),
                    &format!("mounted at {}", pool.service.mountpoint),
                ),
                PoolSlot::Failed(error) => {
                    let message = format!("cannot mount pool {name}: {error}");
                    daemon.event(Level::Error, "pool", Some(name), &message);
                    daemon
                        .alerts
                        .raise(&format!("pool-unavailable:{name}"), Some(name), &message);
                }
            }
        }
        daemon.settle_restored_alerts();
        Ok(daemon)
    }

    /// Resolves the alerts restored from the state database that no check would ever clear:
    /// a pool that mounts again, and alerts about a job or pool no longer in the config. The
    /// others (device errors, a full fast tier, failed jobs, missed schedules) resolve at their
    /// next check.
    fn settle_restored_alerts(&self) {
        for (name, _) in self.mounted() {
            self.alerts.clear(
                &format!("pool-unavailable:{name}"),
                Some(name),
                &format!("pool {name} is mounted again"),
            );
        }
        for alert in self.alerts.firing() {
            let Some((kind, subject)) = alert.alert.split_once(':') else {
                continue;
            };
            let (what, gone) = match kind {
                "job-failed" | "missed" => ("job", self.job(subject).is_none()),
                "pool-unavailable" | "device-errors" | "fast-tier-full" => {
                    ("pool", !self.pools.contains_key(subject))
                }
                _ => continue,
            };
            if gone {
                self.alerts.clear(
                    &alert.alert,
                    alert.pool.as_deref(),
                    &format!("{what} {subject} is no longer in the config"),
                );
            }
        }
    }

    /// Records an event and logs it.
    pub fn event(&self, level: Level, kind: &str, pool: Option<&str>, message: &str) {
        match level {
            Level::Info => tracing::info!(kind, pool, "{message}"),
            Level::Warning => tracing::warn!(kind, pool, "{message}"),
            Level::Error => tracing::error!(kind, pool, "{message}"),
        }
        let event = NewEvent {
            time: self.clock.now().timestamp(),
            level,
            kind,
            pool,
            message,
        };
        if let Err(err) = self.state.record_event(&event) {
            tracing::error!(error = %err, "cannot record an event");
        }
    }

    /// The service of a mounted pool; 404 for an unknown pool, 503 for one not mounted.
    pub fn service(&self, pool: &str) -> Result<Arc<PoolService>, Failure> {
        match self.pools.get(pool) {
            Some(PoolSlot::Mounted(mounted)) if !mounted.is_unmounted() => {
                Ok(Arc::clone(&mounted.service))
            }
            Some(PoolSlot::Mounted(mounted)) => Err(Failure::new(
                503,
                format!(
                    "pool {pool} is no longer mounted at {} (unmounted outside aegisd; restart aegisd to mount it again)",
                    mounted.service.mountpoint
                ),
            )),
            Some(PoolSlot::Failed(error)) => Err(Failure::new(
                503,
                format!("pool {pool} is not mounted: {error}"),
            )),
            None => Err(Failure::new(404, format!("aegisd serves no pool named '{pool}'"))),
        }
    }

    /// The mounted pools.
    pub fn mounted(&self) -> impl Iterator<Item = (&String, &Arc<MountedPool>)> {
        self.pools.iter().filter_map(|(name, slot)| match slot {
            PoolSlot::Mounted(pool) if !pool.is_unmounted() => Some((name, pool)),
            _ => None,
        })
    }

    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|job| job.name == name)
    }

    fn activity(&self) -> MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn is_running(&self, job: &str) -> bool {
        self.activity().jobs.contains(job)
    }

    /// Whether [`Daemon::shutdown`] has begun: nothing new starts.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// The refusal of anything new while the daemon stops: 503, code `stopping`.
    pub fn stopping_failure() -> Failure {
        Failure::with_code(
            503,
            "stopping",
            "aegisd is stopping and starts nothing new; try again once it runs again",
        )
    }

    /// Counts a request that changes something until the guard is dropped; shutdown waits
    /// for it before unmounting. Refused once the daemon stops.
    pub fn begin_change(&self) -> Result<Change<'_>, Failure> {
        let mut activity = self.activity();
        if activity.stopping {
            return Err(Self::stopping_failure());
        }
        activity.changes += 1;
        Ok(Change(self))
    }

    /// Records that `job` ended.
    fn job_ended(&self, job: &str) {
        self.activity().jobs.remove(job);
        self.settled.notify_all();
    }

    /// Starts the once-a-second background work; [`Daemon::shutdown`] stops it.
    pub fn start_background(self: &Arc<Self>) -> anyhow::Result<()> {
        let background = stats::spawn_background(self)?;
        *self
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(background);
        Ok(())
    }

    /// A job's next scheduled run.
    pub fn next_run(&self, job: &str) -> Option<DateTime<Utc>> {
        self.planner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next_run(job, self.clock.now())
    }

    /// Starts every job whose time has come. A run missed while the daemon was down runs once,
    /// with an event and an alert saying how many runs were missed; a job still running from
    /// before is recorded as skipped.
    pub fn run_due_jobs(self: &Arc<Self>) {
        if self.is_stopping() {
            // Left unhandled, the occurrences run once at the next start.
            return;
        }
        let now = self.clock.now();
        let due = self
            .planner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .due(now);
        for due in due {
            if self.is_stopping() {
                return;
            }
            let Some(job) = self.job(&due.job) else {
                continue;
            };
            if let Err(err) =
                self.state
                    .set_job_handled(&job.name, due.occurrence.timestamp(), now.timestamp())
            {
                tracing::error!(job = %job.name, error = %err, "cannot record the schedule");
            }
            let late = now - due.occurrence > chrono::TimeDelta::minutes(1);
            if due.missed > 0 || late {
                let message = format!(
                    "{} missed {} scheduled run(s) while aegisd was not running (last due {}); running it once now",
                    job.name,
                    due.missed + 1,
                    due.occurrence.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M")
                );
                self.event(Level::Warning, "schedule", Some(&job.pool), &message);
                self.alerts
                    .raise(&format!("missed:{}", job.name), Some(&job.pool), &message);
            } else {
                self.alerts.clear(
                    &format!("missed:{}", job.name),
                    Some(&job.pool),
                    &format!("{} runs on schedule again", job.name),
                );
            }
            if self.is_running(&job.name) {
                let started = self.state.run_started(
                    &job.name,
                    job.work.kind(),
                    now.timestamp(),
                    Some(due.occurrence.timestamp()),
                );
                if let Ok(id) = started {
                    let end = state::RunEnd {
                        finished: now.timestamp(),
                        outcome: state::RunOutcome::Skipped,
                        bytes: 0,
                        files: 0,
                        error: None,
                        detail: Some("the previous run was still going"),
                        log_tail: None,
                        snapshot: None,
                    };
                    let _ = self.state.run_finished(id, &end);
                }
                self.event(
                    Level::Warning,
                    "schedule",
                    Some(&job.pool),
                    &format!("{} skipped: the previous run is still going", job.name),
                );
                continue;
            }
            if let Err(failure) = jobs::start(self, job, Some(due.occurrence)) {
                self.event(
                    Level::Error,
                    "schedule",
                    Some(&job.pool),
                    &format!("cannot start {}: {}", job.name, failure.message),
                );
            }
        }
    }

    /// Stops: from here on no job starts and the API refuses changes (503 `stopping`); the
    /// background thread stops; running jobs are asked to stop and, with the changing
    /// requests being answered, waited for (up to 30 s); then every pool is unmounted (each
    /// makes its data durable).
    pub fn shutdown(self: Arc<Self>) -> anyhow::Result<()> {
        let already = {
            let mut activity = self.activity();
            let already = activity.stopping;
            activity.stopping = true;
            self.stopping.store(true, Ordering::Relaxed);
            already
        };
        if !already {
            self.event(
                Level::Info,
                "daemon",
                None,
                "aegisd is stopping: running jobs are asked to stop, then the pools are unmounted",
            );
        }
        let background = self
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(background) = background {
            background.stop();
        }
        // A backup that begins from now on is cancelled as it begins.
        self.backups.cancel_all();
        // Jobs end first: a backup's copier holds files of the mount open.
        self.settle(Instant::now() + SETTLE_TIMEOUT);
        for (name, pool) in self.mounted() {
            // A mount still in use is detached: its session ends, and the pool commits, once
            // the last file on it is closed.
            if let Err(err) = pool.request_unmount() {
                tracing::error!(pool = %name, error = %err, "cannot unmount or detach the pool");
            }
        }
        let mut failures = Vec::new();
        for (name, slot) in &self.pools {
            if let PoolSlot::Mounted(pool) = slot {
                // Waits for the FUSE session; the pool's last commit follows.
                match pool.wait() {
                    Ok(()) => self.event(Level::Info, "pool", Some(name), "unmounted cleanly"),
                    Err(err) => failures.push(format!("{name}: {err:#}")),
                }
            }
        }
        self.event(Level::Info, "daemon", None, "aegisd stopped");
        if failures.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("{}", failures.join("; "))
        }
    }
}

impl Daemon {
    /// Waits until no job runs and no changing request is being answered, or `deadline`.
    fn settle(&self, deadline: Instant) {
        let mut activity = self.activity();
        while !activity.jobs.is_empty() || activity.changes > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let jobs: Vec<&str> = activity.jobs.iter().map(String::as_str).collect();
                tracing::warn!(
                    jobs = %jobs.join(", "),
                    requests = activity.changes,
                    "still running after {SETTLE_TIMEOUT:?}; unmounting anyway"
                );
                return;
            }
            activity = self
                .settled
                .wait_timeout(activity, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Opens and mounts one pool of the config.
fn mount(pool: &PoolConfig) -> anyhow::Result<MountedPool> {
    if crate::service::remove_stale_mount(&pool.mountpoint)? {
        tracing::warn!(
            mountpoint = %pool.mountpoint.display(),
            "removed the dead mount a crashed aegisd left; the pool holds everything up to its last commit"
        );
    }
    std::fs::create_dir_all(&pool.mountpoint)
        .with_context(|| format!("cannot create mountpoint {}", pool.mountpoint.display()))?;
    let key = crate::keys::KeyArgs {
        keyfile: pool.keyfile.clone(),
        ask_password: pool.ask_password,
    };
    let secret = if key.keyfile.is_some() || key.ask_password {
        Some(crate::keys::existing_secret(
            &key,
            &format!("Passphrase for AegisFS pool {}", pool.name),
        )?)
    } else {
        None
    };
    let (low, high) = pool.watermarks;
    let mut config = FsConfig {
        fast_high_watermark: high,
        heat_half_life: pool.heat_half_life,
        ..FsConfig::default()
    };
    if let Some(bytes) = pool.cache_size {
        config.cache_bytes = bytes;
    }
    MountedPool::mount(MountRequest {
        name: Some(pool.name.clone()),
        devices: &pool.devices,
        mountpoint: &pool.mountpoint,
        backend: if pool.io == "pread" {
            Backend::File
        } else {
            Backend::Auto
        },
        secret: secret.as_ref(),
        config,
        policy: tiering::Policy {
            low,
            high,
            ..tiering::Policy::default()
        },
    })
    .with_context(|| format!("pool {}", pool.name))
}

/// Runs the daemon until SIGTERM or SIGINT: mounts, serves, schedules, then unmounts.
pub fn run(config: Config) -> anyhow::Result<()> {
    let socket_path = config.daemon.socket.clone();
    let daemon = Daemon::start(config, Arc::new(SystemClock))?;
    let servers = match routes::listen(&daemon) {
        Ok(servers) => servers,
        Err(err) => {
            let _ = Arc::clone(&daemon).shutdown();
            return Err(err);
        }
    };
    if let Err(err) = daemon.start_background() {
        let _ = Arc::clone(&daemon).shutdown();
        servers.stop();
        return Err(err);
    }
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])?;
    let mounted = daemon.mounted().count();
    notify::ready(&format!(
        "serving {mounted} of {} pool(s) on {}",
        daemon.pools.len(),
        socket_path.display()
    ));
    wait_for_stop(&daemon, signals);
    notify::stopping();
    // The API answers during the shutdown (reads; changes are refused with 503 `stopping`)
    // and stops after it.
    let result = Arc::clone(&daemon).shutdown();
    servers.stop();
    let _ = std::fs::remove_file(&socket_path);
    result
}

/// Sends watchdog pings while the background work keeps ticking, and waits for a stop signal
/// (SIGHUP is logged: the config is read at start only).
fn wait_for_stop(daemon: &Daemon, mut signals: signal_hook::iterator::Signals) {
    let watchdog = notify::watchdog_interval();
    let mut last_ping = Instant::now();
    loop {
        for signal in signals.pending() {
            if signal == signal_hook::consts::SIGHUP {
                daemon.event(
                    Level::Warning,
                    "daemon",
                    None,
                    "SIGHUP ignored: aegisd reads its config at start; restart it to apply changes",
                );
            } else {
                tracing::info!(signal, "stopping on signal");
                return;
            }
        }
        if let Some(interval) = watchdog {
            let healthy = daemon
                .stats
                .since_last_tick()
                .is_none_or(|since| since < interval);
            if healthy && last_ping.elapsed() >= interval / 2 {
                notify::watchdog();
                last_ping = Instant::now();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Checks a config file the way a start would, without mounting anything; returns a summary.
pub fn check_config(path: &Path) -> anyhow::Result<String> {
    let config = Config::load(path)?;
    let jobs = jobs::from_config(&config);
    let mut lines = vec![format!("{}: valid", path.display())];
    for pool in &config.pools {
        lines.push(format!(
            "pool {}: {} device(s), mountpoint {}",
            pool.name,
            pool.devices.len(),
            pool.mountpoint.display()
        ));
    }
    for job in &jobs {
        lines.push(format!(
            "job {}: {}",
            job.name,
            job.schedule
                .as_ref()
                .map_or_else(|| "off (on request only)".to_owned(), |s| s.to_string())
        ));
    }
    Ok(lines.join("\n"))
}
