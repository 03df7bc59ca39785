//! The daemon's schedules against a clock the test moves: a new job waits for its first
//! occurrence, a due job runs once, a job never overlaps itself, snapshot retention deletes
//! only what it no longer keeps (never a snapshot taken by hand), and runs missed while the
//! daemon was down run once at the next start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use appliance::daemon::config::Config;
use appliance::daemon::state::RunOutcome;
use appliance::daemon::{Daemon, ManualClock};
use chrono::{DateTime, Local, TimeZone, Utc};
use common::{pattern, Sandbox};

/// Shuts the daemon down (unmounting its pool) even when the test fails.
struct Running {
    daemon: Option<Arc<Daemon>>,
    mountpoint: std::path::PathBuf,
}

impl Running {
    fn daemon(&self) -> &Arc<Daemon> {
        self.daemon.as_ref().expect("running")
    }

    fn stop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.shutdown().expect("clean shutdown");
        }
    }

    /// Runs what is due at the clock's time and waits for those runs to end.
    fn tick(&self) {
        let daemon = self.daemon();
        daemon.run_due_jobs();
        self.wait_for("snapshot:tank:auto");
    }

    fn wait_for(&self, job: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.daemon().is_running(job) {
            assert!(Instant::now() < deadline, "{job} ran for over 60 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn runs(&self, job: &str) -> Vec<appliance::api::JobRun> {
        self.daemon().state.runs(Some(job), 100).unwrap()
    }

    fn snapshots(&self) -> Vec<String> {
        let service = self.daemon().service("tank").unwrap();
        service
            .snapshots()
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            let _ = daemon.shutdown();
        }
        common::unmount_whatever_is_left(&self.mountpoint);
    }
}

fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Local
        .with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

fn snapshot_name(at: DateTime<Utc>) -> String {
    format!("auto-{}", at.with_timezone(&Local).format("%Y%m%d-%H%M%S"))
}

fn start(config: &Config, clock: &Arc<ManualClock>, mountpoint: &std::path::Path) -> Running {
    let clock: Arc<dyn appliance::daemon::Clock> = Arc::clone(clock) as _;
    Running {
        daemon: Some(Daemon::start(config.clone(), clock).unwrap()),
        mountpoint: mountpoint.to_owned(),
    }
}

#[test]
fn schedules_run_once_never_overlap_keep_retention_and_catch_up_after_downtime() {
    let sandbox = Sandbox::new();
    let (fast, slow) = sandbox.format("256M", "512M");
    let mountpoint = sandbox.path("mnt");
    let text = format!(
        r#"[daemon]
socket = "{socket}"
state_db = "{state}"

[[pool]]
name = "tank"
devices = ["{fast}", "{slow}"]
mountpoint = "{mnt}"
migration = "off"
scrub = "hourly :30"
scrub_rate = "1M"

[[snapshots]]
schedule = "hourly"
keep = {{ hourly = 2 }}
"#,
        socket = sandbox.path("aegisd.sock").display(),
        state = sandbox.path("state.db").display(),
        mnt = mountpoint.display(),
    );
    let config = Config::parse(&text, &sandbox.path("aegis.toml")).unwrap();
    let clock = Arc::new(ManualClock::new(local(2026, 3, 2, 10, 59)));
    let mut running = start(&config, &clock, &mountpoint);

    // A new job waits for its first occurrence.
    running.tick();
    assert!(running.runs("snapshot:tank:auto").is_empty());
    std::fs::write(mountpoint.join("data"), pattern(3, 16 << 20)).unwrap();
    let service = running.daemon().service("tank").unwrap();
    service.create_snapshot("keepme").unwrap();

    // Due at its occurrence: runs once, for that occurrence.
    let eleven = local(2026, 3, 2, 11, 0);
    clock.set(eleven);
    running.tick();
    running.tick();
    let runs = running.runs("snapshot:tank:auto");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].outcome, Some(RunOutcome::Succeeded));
    assert_eq!(runs[0].scheduled_for, Some(eleven.timestamp()));
    assert!(running.snapshots().contains(&snapshot_name(eleven)));

    // A slow scrub (1 MiB/s over 16 MiB) is still going at its next occurrence: skipped.
    clock.set(local(2026, 3, 2, 11, 30));
    running.daemon().run_due_jobs();
    assert!(running.daemon().is_running("scrub:tank"));
    let twelve = local(2026, 3, 2, 12, 0);
    clock.set(twelve);
    running.tick();
    clock.set(local(2026, 3, 2, 12, 30));
    running.daemon().run_due_jobs();
    let scrubs = running.runs("scrub:tank");
    assert_eq!(scrubs.len(), 2, "{scrubs:?}");
    assert_eq!(scrubs[0].outcome, Some(RunOutcome::Skipped), "{scrubs:?}");
    assert_eq!(scrubs[1].outcome, None, "the first scrub is still running");

    // Retention keeps the newest snapshot of the last two hours, and never "keepme".
    let thirteen = local(2026, 3, 2, 13, 0);
    clock.set(thirteen);
    running.tick();
    let mut snapshots = running.snapshots();
    snapshots.sort();
    let mut expected = vec![
        snapshot_name(twelve),
        snapshot_name(thirteen),
        "keepme".to_owned(),
    ];
    expected.sort();
    assert_eq!(snapshots, expected);
    let last = &running.runs("snapshot:tank:auto")[0];
    assert!(
        last.detail
            .as_deref()
            .unwrap()
            .contains(&snapshot_name(eleven)),
        "{last:?}"
    );

    // Down for three days: each job runs once at the next start, with an event.
    running.stop();
    let state = appliance::daemon::state::StateDb::open(&config.daemon.state_db).unwrap();
    let scrub = &state.runs(Some("scrub:tank"), 10).unwrap()[1];
    assert_eq!(scrub.outcome, Some(RunOutcome::Interrupted), "{scrub:?}");
    drop(state);
    let back = local(2026, 3, 5, 13, 10);
    clock.set(back);
    let running = start(&config, &clock, &mountpoint);
    running.tick();
    running.tick();
    let runs = running.runs("snapshot:tank:auto");
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert_eq!(
        runs[0].scheduled_for,
        Some(local(2026, 3, 5, 13, 0).timestamp())
    );
    let events = running
        .daemon()
        .state
        .events(&appliance::daemon::state::EventFilter {
            kind: Some("schedule".into()),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    let missed: Vec<&str> = events
        .iter()
        .map(|e| e.message.as_str())
        .filter(|m| m.starts_with("snapshot:tank:auto missed"))
        .collect();
    assert_eq!(missed.len(), 1, "{events:?}");
    assert!(
        missed[0].contains("missed 72 scheduled run(s)"),
        "{missed:?}"
    );
    assert!(running
        .daemon()
        .alerts
        .firing()
        .iter()
        .any(|a| a.alert == "missed:snapshot:tank:auto"));
}

/// Once the daemon stops, neither the schedule nor a request starts a job: a job started
/// then would hold the mount busy past the unmount.
#[test]
fn a_stopping_daemon_starts_no_job() {
    let sandbox = Sandbox::new();
    let (fast, slow) = sandbox.format("256M", "512M");
    let mountpoint = sandbox.path("mnt");
    let text = format!(
        r#"[daemon]
socket = "{socket}"
state_db = "{state}"

[[pool]]
name = "tank"
devices = ["{fast}", "{slow}"]
mountpoint = "{mnt}"
migration = "off"
scrub = "hourly :30"

[[snapshots]]
schedule = "hourly"
"#,
        socket = sandbox.path("aegisd.sock").display(),
        state = sandbox.path("state.db").display(),
        mnt = mountpoint.display(),
    );
    let config = Config::parse(&text, &sandbox.path("aegis.toml")).unwrap();
    let clock = Arc::new(ManualClock::new(local(2026, 3, 2, 10, 59)));
    let mut running = start(&config, &clock, &mountpoint);
    running.tick();
    let daemon = Arc::clone(running.daemon());
    running.stop();
    assert!(daemon.is_stopping());

    // Due now, but the daemon stopped: nothing runs, and nothing is marked handled.
    clock.set(local(2026, 3, 2, 11, 30));
    daemon.run_due_jobs();
    assert!(!daemon.is_running("snapshot:tank:auto"));
    assert!(!daemon.is_running("scrub:tank"));
    assert!(running_or_recorded(&daemon).is_empty());
    let job = daemon.job("scrub:tank").unwrap();
    let refused = appliance::daemon::jobs::start(&daemon, job, None).unwrap_err();
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.code, Some("stopping"), "{refused:?}");
    assert!(running_or_recorded(&daemon).is_empty());
    let marks = daemon
        .state
        .job_marks("snapshot:tank:auto")
        .unwrap()
        .unwrap();
    assert_eq!(marks.handled, None, "left for the next start to catch up");
}

fn running_or_recorded(daemon: &Daemon) -> Vec<appliance::api::JobRun> {
    daemon.state.runs(None, 100).unwrap()
}
