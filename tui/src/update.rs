//! How the console reacts: `update` folds one message (a key, a click, a tick, an API answer)
//! into the [`App`] and returns the [`Command`]s to send to the API worker. It does no I/O,
//! so every reaction is unit-tested without a terminal or a daemon. Anything that changes the
//! appliance goes through a confirmation dialog that says what it will do; only `y` there
//! releases the command.

use appliance::api::{Alert, BackupInfo};
use appliance::api::{
    BackupReport, DaemonInfo, Event, IoSample, IoSecond, JobInfo, JobRun, MigrationPlan,
    MigrationProgress, PinDone, PoolEntry, RollbackDone, RunStarted, ScrubStatus, Snapshot,
    SnapshotChange, SnapshotDeleted, TierStatus,
};
use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::Position;

use crate::format::{age, bytes, local_time};
use crate::state::{
    append_events, App, Connection, InputPurpose, LatencyTotals, ListId, Modal, Tab,
};

/// Everything the console reacts to.
#[derive(Debug, Clone)]
pub enum Msg {
    Key(KeyEvent),
    Mouse(MouseEvent),
    /// A second passed (or the loop woke up): the time now, Unix seconds.
    Tick {
        now: i64,
    },
    Resize,
    Data(DataUpdate),
    /// A second of the live statistics stream.
    Io(IoSecond),
    /// A poll failed with an API error (the daemon answered): what was asked, and why.
    ApiFailed {
        what: String,
        message: String,
    },
    /// An action the user confirmed failed.
    ActionFailed {
        action: String,
        message: String,
    },
    /// An action the user confirmed succeeded.
    Done(Done),
    Connected,
    /// aegisd cannot be reached; the worker tries again in `retry_in_secs`.
    Disconnected {
        reason: String,
        retry_in_secs: u64,
    },
}

/// A poll's answer.
#[derive(Debug, Clone)]
pub enum DataUpdate {
    Daemon(DaemonInfo),
    Pools(Vec<PoolEntry>),
    Jobs(Vec<JobInfo>),
    Backups(Vec<BackupInfo>),
    Alerts(Vec<Alert>),
    /// Events newer than the last ones sent.
    Events(Vec<Event>),
    Tier {
        pool: Option<String>,
        status: TierStatus,
    },
    Snapshots {
        pool: Option<String>,
        snapshots: Vec<Snapshot>,
    },
    Scrub {
        pool: Option<String>,
        status: ScrubStatus,
    },
    /// Stored I/O seconds, to fill the charts.
    IoHistory(Vec<IoSample>),
    Latency(Vec<LatencyTotals>),
}

impl DataUpdate {
    /// What was polled, as named in poll errors.
    pub fn what(&self) -> &'static str {
        match self {
            DataUpdate::Daemon(_) => "daemon",
            DataUpdate::Pools(_) => "pools",
            DataUpdate::Jobs(_) => "jobs",
            DataUpdate::Backups(_) => "backups",
            DataUpdate::Alerts(_) => "alerts",
            DataUpdate::Events(_) => "events",
            DataUpdate::Tier { .. } => "tier",
            DataUpdate::Snapshots { .. } => "snapshots",
            DataUpdate::Scrub { .. } => "scrub",
            DataUpdate::IoHistory(_) => "stats history",
            DataUpdate::Latency(_) => "metrics",
        }
    }
}

/// What a confirmed action answered.
#[derive(Debug, Clone)]
pub enum Done {
    SnapshotCreated(Snapshot),
    SnapshotDeleted(SnapshotDeleted),
    RolledBack(RollbackDone),
    Diff {
        name: String,
        changes: Vec<SnapshotChange>,
    },
    Plan(MigrationPlan),
    MigrationStarted(MigrationProgress),
    MigrationCancelling,
    Pinned(PinDone),
    BackupStarted(RunStarted),
    BackupDryRun {
        name: String,
        report: BackupReport,
    },
    BackupCancelling {
        name: String,
    },
    BackupLog {
        name: String,
        runs: Vec<JobRun>,
    },
    ScrubStarted(ScrubStatus),
    ScrubCancelled(ScrubStatus),
}

/// What the API worker is asked to do. `pool` is the `?pool=` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Poll this pool's tiers, snapshots and scrub from now on.
    SelectPool(Option<String>),
    CreateSnapshot {
        pool: Option<String>,
        name: String,
    },
    DeleteSnapshot {
        pool: Option<String>,
        name: String,
    },
    Rollback {
        pool: Option<String>,
        name: String,
        force: bool,
    },
    SnapshotDiff {
        pool: Option<String>,
        name: String,
    },
    MigrateDryRun {
        pool: Option<String>,
    },
    Migrate {
        pool: Option<String>,
    },
    CancelMigration {
        pool: Option<String>,
    },
    Pin {
        pool: Option<String>,
        path: String,
        tier: String,
    },
    RunBackup {
        name: String,
        dry_run: bool,
    },
    CancelBackup {
        name: String,
    },
    BackupLog {
        name: String,
    },
    StartScrub {
        pool: Option<String>,
    },
    CancelScrub {
        pool: Option<String>,
    },
}

impl Command {
    /// What is being done, for the status line while it runs and in failures.
    pub fn describe(&self) -> String {
        let pool = |pool: &Option<String>| pool.clone().unwrap_or_else(|| "the pool".into());
        match self {
            Command::SelectPool(p) => format!("showing {}", pool(p)),
            Command::CreateSnapshot { pool: p, name } => {
                format!("creating snapshot '{name}' of {}", pool(p))
            }
            Command::DeleteSnapshot { pool: p, name } => {
                format!("deleting snapshot '{name}' of {}", pool(p))
            }
            Command::Rollback { pool: p, name, .. } => {
                format!("rolling {} back to '{name}'", pool(p))
            }
            Command::SnapshotDiff { name, .. } => format!("comparing '{name}' with the live pool"),
            Command::MigrateDryRun { pool: p } => format!("planning a migration of {}", pool(p)),
            Command::Migrate { pool: p } => format!("starting a migration of {}", pool(p)),
            Command::CancelMigration { pool: p } => {
                format!("cancelling the migration of {}", pool(p))
            }
            Command::Pin { path, tier, .. } => format!("pinning {path} to {tier}"),
            Command::RunBackup {
                name,
                dry_run: false,
            } => format!("starting backup '{name}'"),
            Command::RunBackup {
                name,
                dry_run: true,
            } => format!("dry run of backup '{name}'"),
            Command::CancelBackup { name } => format!("cancelling backup '{name}'"),
            Command::BackupLog { name } => format!("reading the runs of backup '{name}'"),
            Command::StartScrub { pool: p } => format!("starting a scrub of {}", pool(p)),
            Command::CancelScrub { pool: p } => format!("cancelling the scrub of {}", pool(p)),
        }
    }
}

/// Keys that work on every screen, for the help overlay.
pub const GLOBAL_KEYS: &[(&str, &str)] = &[
    ("?", "this help"),
    ("q, Ctrl-C", "quit"),
    ("Tab, Shift-Tab", "next, previous screen"),
    ("1-5", "go to a screen"),
    ("p", "show the next pool"),
    ("↑↓ / j k", "move in a list, scroll text"),
    ("PgUp PgDn, g G", "page, first, last"),
    ("/", "filter the list"),
    ("Enter", "open details"),
    ("Esc", "close a dialog, clear filter"),
    ("mouse", "click tabs and rows, scroll"),
];

/// Each screen's own keys, for the help overlay and the footer.
pub fn screen_keys(tab: Tab) -> &'static [(&'static str, &'static str)] {
    match tab {
        Tab::Dashboard => &[],
        Tab::Tiers => &[
            ("d", "dry run (plan)"),
            ("m", "migrate"),
            ("c", "cancel migration"),
            ("t", "pin a path"),
        ],
        Tab::Snapshots => &[
            ("n", "new snapshot"),
            ("x", "delete"),
            ("r", "roll back"),
            ("Enter", "diff with live"),
        ],
        Tab::Backups => &[
            ("r", "run now"),
            ("d", "dry run"),
            ("c", "cancel"),
            ("Enter, l", "runs and log"),
        ],
        Tab::Events => &[
            ("s", "start scrub"),
            ("c", "cancel scrub"),
            ("Enter", "event details"),
        ],
    }
}

/// Folds `msg` into `app`; returns what to ask the API.
pub fn update(app: &mut App, msg: Msg) -> Vec<Command> {
    match msg {
        Msg::Key(key) if key.kind != KeyEventKind::Release => on_key(app, key),
        Msg::Key(_) | Msg::Resize => Vec::new(),
        Msg::Mouse(mouse) => on_mouse(app, mouse),
        Msg::Tick { now } => {
            app.now = now;
            if app.status.as_ref().is_some_and(|s| s.expires_at <= now) {
                app.status = None;
            }
            Vec::new()
        }
        Msg::Data(data) => on_data(app, data),
        Msg::Io(second) => {
            app.io.push_second(&second);
            Vec::new()
        }
        Msg::ApiFailed { what, message } => {
            app.data.poll_errors.insert(what, message);
            Vec::new()
        }
        Msg::ActionFailed { action, message } => {
            app.set_status(format!("{action} failed: {message}"), true);
            Vec::new()
        }
        Msg::Done(done) => {
            on_done(app, done);
            Vec::new()
        }
        Msg::Connected => {
            if matches!(app.connection, Connection::Disconnected { .. }) {
                app.set_status("reconnected to aegisd", false);
            }
            app.connection = Connection::Connected;
            Vec::new()
        }
        Msg::Disconnected {
            reason,
            retry_in_secs,
        } => {
            let since = match app.connection {
                Connection::Disconnected { since, .. } => since,
                _ => app.now,
            };
            app.connection = Connection::Disconnected {
                reason,
                since,
                retry_in_secs,
            };
            Vec::new()
        }
    }
}

fn on_data(app: &mut App, data: DataUpdate) -> Vec<Command> {
    app.data.poll_errors.remove(data.what());
    match data {
        DataUpdate::Daemon(info) => {
            if let Some(old) = &app.data.daemon {
                if old.pid != info.pid {
                    app.set_status(
                        format!("aegisd restarted (pid {} → {})", old.pid, info.pid),
                        false,
                    );
                }
            }
            app.data.daemon = Some(info);
        }
        DataUpdate::Pools(pools) => {
            app.data.pools = pools;
            if app.pool.is_none() {
                let first = app
                    .data
                    .pools
                    .iter()
                    .find(|p| p.mounted)
                    .or(app.data.pools.first());
                if let Some(first) = first {
                    app.pool = Some(first.name.clone());
                    return vec![Command::SelectPool(app.pool.clone())];
                }
            }
        }
        DataUpdate::Jobs(jobs) => app.data.jobs = jobs,
        DataUpdate::Backups(backups) => {
            app.data.backups = backups;
            let len = app.list_len(ListId::Backups);
            app.backups.clamp(len);
        }
        DataUpdate::Alerts(alerts) => app.data.alerts = alerts,
        DataUpdate::Events(events) => {
            let newest_selected = app.events.selected == 0;
            let before = app.list_len(ListId::Events);
            append_events(&mut app.data.events, events);
            // Newest first: keep the selection on the same event unless at the top.
            if !newest_selected {
                let added = app.list_len(ListId::Events).saturating_sub(before);
                app.events.selected += added;
            }
            let len = app.list_len(ListId::Events);
            app.events.clamp(len);
        }
        DataUpdate::Tier { pool, status } if pool == app.pool => app.data.tier = Some(status),
        DataUpdate::Snapshots { pool, snapshots } if pool == app.pool => {
            app.data.snapshots = snapshots;
            let len = app.list_len(ListId::Snapshots);
            app.snapshots.clamp(len);
        }
        DataUpdate::Scrub { pool, status } if pool == app.pool => app.data.scrub = Some(status),
        DataUpdate::Tier { .. } | DataUpdate::Snapshots { .. } | DataUpdate::Scrub { .. } => {}
        DataUpdate::IoHistory(samples) => app.io.push_samples(&samples),
        DataUpdate::Latency(totals) => {
            for tier in totals {
                app.latency
                    .entry((tier.pool.clone(), tier.tier.clone()))
                    .or_default()
                    .advance(tier);
            }
        }
    }
    Vec::new()
}

fn on_done(app: &mut App, done: Done) {
    match done {
        Done::SnapshotCreated(snapshot) => {
            app.set_status(format!("created snapshot '{}'", snapshot.name), false);
        }
        Done::SnapshotDeleted(deleted) => app.set_status(
            format!(
                "deleted snapshot '{}', released {}",
                deleted.name,
                bytes(deleted.released_bytes)
            ),
            false,
        ),
        Done::RolledBack(done) => {
            let destroyed = if done.destroyed.is_empty() {
                String::new()
            } else {
                format!("; destroyed {}", done.destroyed.join(", "))
            };
            app.set_status(format!("rolled back to '{}'{destroyed}", done.name), false);
        }
        Done::Diff { name, changes } => {
            let mut lines: Vec<String> = changes.iter().map(change_line).collect();
            if lines.is_empty() {
                lines.push("nothing changed".into());
            }
            app.set_status(format!("{} change(s) since '{name}'", changes.len()), false);
            app.modal = Some(Modal::Details {
                title: format!("Changes since snapshot '{name}'"),
                lines,
                scroll: 0,
            });
        }
        Done::Plan(plan) => {
            app.set_status(
                format!(
                    "dry run: would promote {} and demote {}",
                    bytes(plan.promote_bytes),
                    bytes(plan.demote_bytes)
                ),
                false,
            );
            app.modal = Some(Modal::Details {
                title: "Migration plan (dry run: nothing moved)".into(),
                lines: plan_lines(&plan),
                scroll: 0,
            });
            app.data.plan = Some(plan);
        }
        Done::MigrationStarted(progress) => app.set_status(
            format!(
                "migration started: {} planned",
                bytes(progress.counts.planned_bytes)
            ),
            false,
        ),
        Done::MigrationCancelling => {
            app.set_status("asked the migration to stop", false);
        }
        Done::Pinned(pin) => app.set_status(
            format!(
                "pinned {} to {} ({} entries); blocks move at the next migration",
                pin.path, pin.tier, pin.entries
            ),
            false,
        ),
        Done::BackupStarted(started) => app.set_status(
            format!("started {} (run {})", started.job, started.run),
            false,
        ),
        Done::BackupDryRun { name, report } => {
            app.set_status(report.message.clone(), false);
            let mut lines = vec![
                report.message.clone(),
                format!(
                    "{} file(s), {} would transfer; nothing was changed",
                    report.files,
                    bytes(report.bytes)
                ),
                String::new(),
            ];
            lines.extend(report.dry_run_changes.iter().cloned());
            if !report.log_tail.is_empty() {
                lines.push(String::new());
                lines.push("engine output:".into());
                lines.extend(report.log_tail.iter().map(|l| format!("  | {l}")));
            }
            app.modal = Some(Modal::Details {
                title: format!("Dry run of backup '{name}'"),
                lines,
                scroll: 0,
            });
        }
        Done::BackupCancelling { name } => {
            app.set_status(format!("asked backup '{name}' to stop"), false);
        }
        Done::BackupLog { name, runs } => {
            app.modal = Some(Modal::Details {
                title: format!("Runs of backup '{name}'"),
                lines: backup_log_lines(app, &runs),
                scroll: 0,
            });
        }
        Done::ScrubStarted(status) => {
            app.set_status("scrub started", false);
            app.data.scrub = Some(status);
        }
        Done::ScrubCancelled(status) => {
            app.set_status(format!("scrub cancelled at {:.1}%", status.percent), false);
            app.data.scrub = Some(status);
        }
    }
}

fn change_line(change: &SnapshotChange) -> String {
    let sign = match change.change.as_str() {
        "added" => "+",
        "deleted" => "-",
        "modified" => "~",
        "renamed" => "→",
        _ => "?",
    };
    match &change.renamed_to {
        Some(to) => format!("{sign} {:<9} {} → {to}", change.kind, change.path),
        None => format!("{sign} {:<9} {}", change.kind, change.path),
    }
}

fn plan_lines(plan: &MigrationPlan) -> Vec<String> {
    let mut lines = vec![
        format!(
            "promote {} blocks ({}) to the fast tier",
            plan.promote_blocks,
            bytes(plan.promote_bytes)
        ),
        format!(
            "demote  {} blocks ({}) to the slow tier",
            plan.demote_blocks,
            bytes(plan.demote_bytes)
        ),
        format!(
            "fast tier: {} used now, {} after, of {}",
            bytes(plan.fast_used_before),
            bytes(plan.fast_used_after),
            bytes(plan.fast_capacity_bytes)
        ),
    ];
    if plan.pinned_unplaced_bytes > 0 {
        lines.push(format!(
            "pinned to fast but does not fit: {}",
            bytes(plan.pinned_unplaced_bytes)
        ));
    }
    if plan.deferred_bytes > 0 {
        lines.push(format!(
            "left for a later run: {}",
            bytes(plan.deferred_bytes)
        ));
    }
    if !plan.top_files.is_empty() {
        lines.push(String::new());
        lines.push("files with the most bytes moving:".into());
        for file in &plan.top_files {
            lines.push(format!(
                "  ↑{:>10} ↓{:>10}  {}",
                bytes(file.promote_bytes),
                bytes(file.demote_bytes),
                file.path
            ));
        }
    }
    lines
}

fn backup_log_lines(app: &App, runs: &[JobRun]) -> Vec<String> {
    let mut lines = Vec::new();
    for run in runs {
        let outcome = run
            .outcome
            .map_or("running", appliance::api::RunOutcome::as_str);
        lines.push(format!(
            "run {:<4} {}  {:<10} {:>10} {:>6} files  {}",
            run.id,
            local_time(run.started, app.utc_offset),
            outcome,
            bytes(run.bytes),
            run.files,
            run.error.as_deref().or(run.detail.as_deref()).unwrap_or("")
        ));
    }
    match runs.first() {
        None => lines.push("no runs yet".into()),
        Some(newest) => {
            lines.push(String::new());
            lines.push(format!("log tail of run {}:", newest.id));
            match newest.log_tail.as_deref() {
                Some(tail) => lines.extend(tail.lines().map(|l| format!("  | {l}"))),
                None => lines.push("  (no engine output recorded)".into()),
            }
        }
    }
    lines
}

fn on_key(app: &mut App, key: KeyEvent) -> Vec<Command> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && key.code == KeyCode::Char('c') {
        app.quit = true;
        return Vec::new();
    }
    if app.modal.is_some() {
        return on_modal_key(app, key);
    }
    match key.code {
        KeyCode::Char('q') => app.quit = true,
        KeyCode::Char('?') => app.modal = Some(Modal::Help),
        KeyCode::Tab => app.tab = app.tab.next(),
        KeyCode::BackTab => app.tab = app.tab.previous(),
        KeyCode::Char(digit @ '1'..='5') => {
            let index = usize::from(digit as u8 - b'1');
            app.tab = Tab::ALL[index];
        }
        KeyCode::Char('p') => return next_pool(app),
        KeyCode::Esc => {
            if let Some(list) = app.tab.list() {
                if !app.list(list).filter.is_empty() {
                    app.list_mut(list).filter.clear();
                    app.list_mut(list).selected = 0;
                }
            }
        }
        _ => {
            if let Some(list) = app.tab.list() {
                if let Some(commands) = on_list_key(app, list, key.code) {
                    return commands;
                }
            }
            return on_screen_key(app, key.code);
        }
    }
    Vec::new()
}

/// Moves, filters and opens in the current list; `None` if the key is not one of those.
fn on_list_key(app: &mut App, list: ListId, code: KeyCode) -> Option<Vec<Command>> {
    let len = app.list_len(list);
    let view = app.list_mut(list);
    match code {
        KeyCode::Up | KeyCode::Char('k') => view.move_by(-1, len),
        KeyCode::Down | KeyCode::Char('j') => view.move_by(1, len),
        KeyCode::PageUp => view.move_by(-10, len),
        KeyCode::PageDown => view.move_by(10, len),
        KeyCode::Home | KeyCode::Char('g') => view.selected = 0,
        KeyCode::End | KeyCode::Char('G') => view.selected = len.saturating_sub(1),
        KeyCode::Char('/') => {
            let buffer = view.filter.clone();
            app.modal = Some(Modal::Input {
                prompt: "Filter (Enter keeps it, Esc clears it)".into(),
                buffer,
                purpose: InputPurpose::Filter(list),
            });
        }
        KeyCode::Enter => return Some(open_selected(app, list)),
        _ => return None,
    }
    Some(Vec::new())
}

/// Enter on a list row.
fn open_selected(app: &mut App, list: ListId) -> Vec<Command> {
    match list {
        ListId::Snapshots => {
            let Some(name) = app.selected_snapshot().map(|s| s.name.clone()) else {
                return Vec::new();
            };
            let command = Command::SnapshotDiff {
                pool: app.pool.clone(),
                name,
            };
            app.set_status(format!("{}…", command.describe()), false);
            vec![command]
        }
        ListId::Backups => backup_log(app),
        ListId::Events => {
            if let Some(event) = app.selected_event() {
                let lines = vec![
                    format!("time   {}", local_time(event.time, app.utc_offset)),
                    format!("level  {}", event.level.as_str()),
                    format!("kind   {}", event.kind),
                    format!("pool   {}", event.pool.as_deref().unwrap_or("-")),
                    format!("id     {}", event.id),
                    String::new(),
                    event.message.clone(),
                ];
                app.modal = Some(Modal::Details {
                    title: "Event".into(),
                    lines,
                    scroll: 0,
                });
            }
            Vec::new()
        }
    }
}

fn backup_log(app: &mut App) -> Vec<Command> {
    let Some(backup) = app.selected_backup() else {
        return Vec::new();
    };
    let command = Command::BackupLog {
        name: backup.name.clone(),
    };
    app.set_status(format!("{}…", command.describe()), false);
    vec![command]
}

fn next_pool(app: &mut App) -> Vec<Command> {
    let pools = &app.data.pools;
    if pools.len() < 2 {
        app.set_status("aegisd serves only this pool", false);
        return Vec::new();
    }
    let current = pools
        .iter()
        .position(|p| Some(&p.name) == app.pool.as_ref());
    let next = current.map_or(0, |i| (i + 1) % pools.len());
    app.pool = Some(pools[next].name.clone());
    app.data.tier = None;
    app.data.snapshots.clear();
    app.data.scrub = None;
    app.data.plan = None;
    app.snapshots.selected = 0;
    app.set_status(format!("showing pool {}", pools[next].name), false);
    vec![Command::SelectPool(app.pool.clone())]
}

fn confirm(app: &mut App, title: &str, message: String, command: Command) {
    app.modal = Some(Modal::Confirm {
        title: title.into(),
        message,
        command,
    });
}

fn pool_name(app: &App) -> String {
    app.pool.clone().unwrap_or_else(|| "the pool".into())
}

/// The screen's action keys.
fn on_screen_key(app: &mut App, code: KeyCode) -> Vec<Command> {
    let pool = app.pool.clone();
    let name = pool_name(app);
    match (app.tab, code) {
        (Tab::Tiers, KeyCode::Char('d')) => {
            let command = Command::MigrateDryRun { pool };
            app.set_status(format!("{} (dry run)…", command.describe()), false);
            return vec![command];
        }
        (Tab::Tiers, KeyCode::Char('m')) => {
            let plan = app.data.plan.as_ref().map_or_else(
                || " (d plans one first, to see what would move)".to_owned(),
                |plan| {
                    format!(
                        " The last dry run would promote {} and demote {}.",
                        bytes(plan.promote_bytes),
                        bytes(plan.demote_bytes)
                    )
                },
            );
            confirm(
                app,
                "Start a migration",
                format!(
                    "Start a migration of pool {name} now: hot blocks move to the fast tier, \
                     cold ones to the slow tier, in the background.{plan}"
                ),
                Command::Migrate { pool },
            );
        }
        (Tab::Tiers, KeyCode::Char('c')) => {
            let running = app
                .data
                .tier
                .as_ref()
                .and_then(|t| t.migration.as_ref())
                .is_some_and(|m| m.counts.running);
            if running {
                confirm(
                    app,
                    "Cancel the migration",
                    format!(
                        "Stop the running migration of pool {name}? What it moved so far stays \
                         moved."
                    ),
                    Command::CancelMigration { pool },
                );
            } else {
                app.set_status("no migration is running", false);
            }
        }
        (Tab::Tiers, KeyCode::Char('t')) => {
            app.modal = Some(Modal::Input {
                prompt: "Pin: PATH TIER (tier fast, slow or auto), e.g. /projects/video slow"
                    .into(),
                buffer: String::new(),
                purpose: InputPurpose::Pin,
            });
        }
        (Tab::Snapshots, KeyCode::Char('n')) => {
            let stamp = local_time(app.now, app.utc_offset)
                .replace(['-', ':'], "")
                .replace(' ', "-");
            app.modal = Some(Modal::Input {
                prompt: format!("Name of the new snapshot of pool {name}"),
                buffer: format!("manual-{stamp}"),
                purpose: InputPurpose::SnapshotName,
            });
        }
        (Tab::Snapshots, KeyCode::Char('x') | KeyCode::Delete) => {
            if let Some(snapshot) = app.selected_snapshot() {
                let message = format!(
                    "Delete snapshot '{}' of pool {name} (taken {})? This frees {} (the data \
                     only it holds) and cannot be undone.",
                    snapshot.name,
                    local_time(snapshot.created, app.utc_offset),
                    bytes(snapshot.unique_bytes)
                );
                let command = Command::DeleteSnapshot {
                    pool,
                    name: snapshot.name.clone(),
                };
                confirm(app, "Delete a snapshot", message, command);
            }
        }
        (Tab::Snapshots, KeyCode::Char('r')) => rollback(app),
        (Tab::Backups, KeyCode::Char('r')) => {
            if let Some(backup) = app.selected_backup() {
                let source = if backup.source.is_empty() {
                    "/".to_owned()
                } else {
                    backup.source.clone()
                };
                let deletes = if backup.mode == "sync" {
                    " (sync mode: files gone from the source are deleted at the destination)"
                } else {
                    ""
                };
                let message = format!(
                    "Run backup '{}' now: snapshot pool {}, then copy {source} to {} with {}{deletes}.",
                    backup.name, backup.pool, backup.destination, backup.engine
                );
                let command = Command::RunBackup {
                    name: backup.name.clone(),
                    dry_run: false,
                };
                confirm(app, "Run a backup", message, command);
            }
        }
        (Tab::Backups, KeyCode::Char('d')) => {
            if let Some(backup) = app.selected_backup() {
                let message = format!(
                    "Dry run of backup '{}': report what would be copied to {}. Nothing changes \
                     at the destination; a temporary snapshot is taken and deleted.",
                    backup.name, backup.destination
                );
                let command = Command::RunBackup {
                    name: backup.name.clone(),
                    dry_run: true,
                };
                confirm(app, "Dry run a backup", message, command);
            }
        }
        (Tab::Backups, KeyCode::Char('c')) => {
            if let Some(backup) = app.selected_backup() {
                if backup.running {
                    let message = format!(
                        "Stop the running backup '{}'? Its incomplete version is removed; the \
                         last completed one stays.",
                        backup.name
                    );
                    let command = Command::CancelBackup {
                        name: backup.name.clone(),
                    };
                    confirm(app, "Cancel a backup", message, command);
                } else {
                    let text = format!("backup '{}' is not running", backup.name);
                    app.set_status(text, false);
                }
            }
        }
        (Tab::Backups, KeyCode::Char('l')) => return backup_log(app),
        (Tab::Events, KeyCode::Char('s')) => confirm(
            app,
            "Start a scrub",
            format!(
                "Start a scrub of pool {name}: read and check every copy of every block, \
                 rewriting damaged copies from intact ones. It runs in the background at full \
                 speed."
            ),
            Command::StartScrub { pool },
        ),
        (Tab::Events, KeyCode::Char('c')) => {
            if app.data.scrub.as_ref().is_some_and(|s| s.running) {
                confirm(
                    app,
                    "Cancel the scrub",
                    format!(
                        "Stop the scrub of pool {name}? It is recorded as cancelled and does \
                         not resume."
                    ),
                    Command::CancelScrub { pool },
                );
            } else {
                app.set_status("no scrub is running", false);
            }
        }
        _ => {}
    }
    Vec::new()
}

fn rollback(app: &mut App) {
    let Some(snapshot) = app.selected_snapshot() else {
        return;
    };
    let newer: Vec<&str> = app
        .data
        .snapshots
        .iter()
        .skip_while(|s| s.name != snapshot.name)
        .skip(1)
        .map(|s| s.name.as_str())
        .collect();
    let mut message = format!(
        "Roll pool {} back to snapshot '{}', taken {} ({} ago). Everything written to the pool \
         since then is lost.",
        pool_name(app),
        snapshot.name,
        local_time(snapshot.created, app.utc_offset),
        age(app.now - snapshot.created)
    );
    if !newer.is_empty() {
        message.push_str(&format!(
            " The newer snapshots are destroyed too: {}.",
            newer.join(", ")
        ));
    }
    let command = Command::Rollback {
        pool: app.pool.clone(),
        name: snapshot.name.clone(),
        force: !newer.is_empty(),
    };
    confirm(app, "Roll back", message, command);
}

fn on_modal_key(app: &mut App, key: KeyEvent) -> Vec<Command> {
    let Some(modal) = app.modal.take() else {
        return Vec::new();
    };
    match modal {
        Modal::Help => {
            if !matches!(
                key.code,
                KeyCode::Esc | KeyCode::Char('?' | 'q') | KeyCode::Enter
            ) {
                app.modal = Some(Modal::Help);
            }
        }
        Modal::Confirm {
            title,
            message,
            command,
        } => match key.code {
            KeyCode::Char('y' | 'Y') => {
                app.set_status(format!("{}…", command.describe()), false);
                return vec![command];
            }
            KeyCode::Char('n' | 'N' | 'q') | KeyCode::Esc => {
                app.set_status(format!("cancelled: {}", title.to_lowercase()), false);
            }
            _ => {
                app.modal = Some(Modal::Confirm {
                    title,
                    message,
                    command,
                });
            }
        },
        Modal::Details {
            title,
            lines,
            mut scroll,
        } => {
            let last = lines.len().saturating_sub(1);
            match key.code {
                KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q') => return Vec::new(),
                KeyCode::Up | KeyCode::Char('k') => scroll = scroll.saturating_sub(1),
                KeyCode::Down | KeyCode::Char('j') => scroll = (scroll + 1).min(last),
                KeyCode::PageUp => scroll = scroll.saturating_sub(10),
                KeyCode::PageDown => scroll = (scroll + 10).min(last),
                KeyCode::Home | KeyCode::Char('g') => scroll = 0,
                KeyCode::End | KeyCode::Char('G') => scroll = last,
                _ => {}
            }
            app.modal = Some(Modal::Details {
                title,
                lines,
                scroll,
            });
        }
        Modal::Input {
            prompt,
            mut buffer,
            purpose,
        } => match key.code {
            KeyCode::Esc => {
                if let InputPurpose::Filter(list) = purpose {
                    app.list_mut(list).filter.clear();
                    app.list_mut(list).selected = 0;
                }
            }
            KeyCode::Enter => submit_input(app, purpose, buffer.trim()),
            KeyCode::Backspace | KeyCode::Char(_) => {
                match key.code {
                    KeyCode::Char(c) => buffer.push(c),
                    _ => {
                        buffer.pop();
                    }
                }
                if let InputPurpose::Filter(list) = purpose {
                    let view = app.list_mut(list);
                    view.filter.clone_from(&buffer);
                    view.selected = 0;
                }
                app.modal = Some(Modal::Input {
                    prompt,
                    buffer,
                    purpose,
                });
            }
            _ => {
                app.modal = Some(Modal::Input {
                    prompt,
                    buffer,
                    purpose,
                });
            }
        },
    }
    Vec::new()
}

fn submit_input(app: &mut App, purpose: InputPurpose, text: &str) {
    let pool = app.pool.clone();
    let name = pool_name(app);
    match purpose {
        InputPurpose::Filter(_) => {}
        InputPurpose::SnapshotName if text.is_empty() => {
            app.set_status("a snapshot needs a name", true);
        }
        InputPurpose::SnapshotName => confirm(
            app,
            "Create a snapshot",
            format!(
                "Take snapshot '{text}' of pool {name} now. It holds everything written so far \
                 and is kept until deleted."
            ),
            Command::CreateSnapshot {
                pool,
                name: text.to_owned(),
            },
        ),
        InputPurpose::Pin => {
            let Some((path, tier)) = text
                .rsplit_once(' ')
                .filter(|(_, tier)| ["fast", "slow", "auto"].contains(tier))
            else {
                app.set_status("give PATH TIER, the tier being fast, slow or auto", true);
                return;
            };
            let path = path.trim();
            let what = if tier == "auto" {
                "back to placement by heat".to_owned()
            } else {
                format!("to the {tier} tier")
            };
            confirm(
                app,
                "Pin a path",
                format!(
                    "Pin {path} of pool {name} (and everything below it) {what}. New blocks go \
                     there at once; existing blocks move at the next migration."
                ),
                Command::Pin {
                    pool,
                    path: path.to_owned(),
                    tier: tier.to_owned(),
                },
            );
        }
    }
}

fn on_mouse(app: &mut App, mouse: MouseEvent) -> Vec<Command> {
    let position = Position::new(mouse.column, mouse.row);
    match mouse.kind {
        MouseEventKind::ScrollDown | MouseEventKind::ScrollUp => {
            let down = mouse.kind == MouseEventKind::ScrollDown;
            if let Some(Modal::Details { lines, scroll, .. }) = &mut app.modal {
                let last = lines.len().saturating_sub(1);
                *scroll = if down {
                    (*scroll + 3).min(last)
                } else {
                    scroll.saturating_sub(3)
                };
            } else if let (None, Some(list)) = (&app.modal, app.tab.list()) {
                let len = app.list_len(list);
                app.list_mut(list).move_by(if down { 1 } else { -1 }, len);
            }
            Vec::new()
        }
        MouseEventKind::Down(MouseButton::Left) => {
            match &app.modal {
                Some(Modal::Help | Modal::Details { .. }) => {
                    app.modal = None;
                    return Vec::new();
                }
                Some(_) => return Vec::new(),
                None => {}
            }
            let clicked_tab = app
                .hit_areas
                .tabs
                .iter()
                .find(|(area, _)| area.contains(position))
                .map(|(_, tab)| *tab);
            if let Some(tab) = clicked_tab {
                app.tab = tab;
                return Vec::new();
            }
            if let Some((area, first, list)) = app.hit_areas.rows {
                if area.contains(position) && app.tab.list() == Some(list) {
                    let index = first + usize::from(position.y - area.y);
                    if index < app.list_len(list) {
                        if app.list(list).selected == index {
                            return open_selected(app, list);
                        }
                        app.list_mut(list).selected = index;
                    }
                }
            }
            Vec::new()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
