//! The console's whole state, and nothing else: which screen is shown, what the API last
//! answered, the last five minutes of I/O, the open dialog, the status line and where the
//! last frame put its clickable areas. `update` is the only code that changes it; the `ui`
//! modules only read it.

use std::collections::BTreeMap;

use appliance::api::{
    Alert, BackupInfo, DaemonInfo, Event, IoSample, IoSecond, JobInfo, MigrationPlan, PoolEntry,
    ScrubStatus, Snapshot, TierIo, TierStatus,
};
use ratatui::layout::Rect;

use crate::update::Command;

/// Seconds of I/O the charts keep and show.
pub const HISTORY_SECONDS: i64 = 300;
/// Events kept in memory for the event log (the newest).
pub const EVENTS_KEPT: usize = 2000;
/// Seconds a status message stays on the footer.
pub const STATUS_SECONDS: i64 = 6;

/// The screens, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Dashboard,
    Tiers,
    Snapshots,
    Backups,
    Events,
}

impl Tab {
    pub const ALL: [Tab; 5] = [
        Tab::Dashboard,
        Tab::Tiers,
        Tab::Snapshots,
        Tab::Backups,
        Tab::Events,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Dashboard => "Dashboard",
            Tab::Tiers => "Tiers",
            Tab::Snapshots => "Snapshots",
            Tab::Backups => "Backups",
            Tab::Events => "Scrub & Events",
        }
    }

    pub fn index(self) -> usize {
        Tab::ALL.iter().position(|tab| *tab == self).unwrap_or(0)
    }

    pub fn next(self) -> Tab {
        Tab::ALL[(self.index() + 1) % Tab::ALL.len()]
    }

    pub fn previous(self) -> Tab {
        Tab::ALL[(self.index() + Tab::ALL.len() - 1) % Tab::ALL.len()]
    }

    /// The list a screen's arrows, filter and Enter act on.
    pub fn list(self) -> Option<ListId> {
        match self {
            Tab::Dashboard | Tab::Tiers => None,
            Tab::Snapshots => Some(ListId::Snapshots),
            Tab::Backups => Some(ListId::Backups),
            Tab::Events => Some(ListId::Events),
        }
    }
}

/// The selectable, filterable lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListId {
    Snapshots,
    Backups,
    Events,
}

/// A list's selection (an index into its filtered rows) and filter text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListView {
    pub selected: usize,
    pub filter: String,
}

impl ListView {
    /// Moves the selection by `delta` rows, staying within `len` rows.
    pub fn move_by(&mut self, delta: isize, len: usize) {
        let last = len.saturating_sub(1);
        self.selected = self.selected.saturating_add_signed(delta).min(last);
    }

    /// Keeps the selection on a row after the list shrank.
    pub fn clamp(&mut self, len: usize) {
        self.selected = self.selected.min(len.saturating_sub(1));
    }

    /// Whether `text` passes the filter (case-insensitive substring).
    pub fn matches(&self, text: &str) -> bool {
        self.filter.is_empty() || text.to_lowercase().contains(&self.filter.to_lowercase())
    }
}

/// Whether aegisd answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// Nothing heard yet.
    Connecting,
    Connected,
    /// The last attempt failed: why, since when (Unix seconds), and when the next one is.
    Disconnected {
        reason: String,
        since: i64,
        retry_in_secs: u64,
    },
}

/// What a text prompt's answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputPurpose {
    SnapshotName,
    /// `PATH TIER` to pin.
    Pin,
    Filter(ListId),
}

/// A dialog over the screen; keys go to it first.
#[derive(Debug, Clone, PartialEq)]
pub enum Modal {
    Help,
    /// An action that changes state, waiting for `y`.
    Confirm {
        title: String,
        message: String,
        command: Command,
    },
    /// Text to read (a diff, a plan, a log), scrolled by `scroll` lines.
    Details {
        title: String,
        lines: Vec<String>,
        scroll: usize,
    },
    Input {
        prompt: String,
        buffer: String,
        purpose: InputPurpose,
    },
}

/// A message on the footer until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    pub text: String,
    pub is_error: bool,
    pub expires_at: i64,
}

/// The API's latest answers.
#[derive(Debug, Clone, Default)]
pub struct ApiData {
    pub daemon: Option<DaemonInfo>,
    pub pools: Vec<PoolEntry>,
    pub jobs: Vec<JobInfo>,
    pub backups: Vec<BackupInfo>,
    pub alerts: Vec<Alert>,
    /// Oldest first, at most [`EVENTS_KEPT`].
    pub events: Vec<Event>,
    /// The selected pool's tiers, snapshots and scrub.
    pub tier: Option<TierStatus>,
    pub snapshots: Vec<Snapshot>,
    pub scrub: Option<ScrubStatus>,
    /// The last dry run's plan, for the selected pool.
    pub plan: Option<MigrationPlan>,
    /// Requests that failed at the last poll, by what was asked, with the error.
    pub poll_errors: BTreeMap<String, String>,
}

/// One tier's I/O during one second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IoPoint {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ops: u64,
    pub write_ops: u64,
}

impl From<&TierIo> for IoPoint {
    fn from(io: &TierIo) -> Self {
        Self {
            read_bytes: io.read_bytes,
            write_bytes: io.write_bytes,
            read_ops: io.read_ops,
            write_ops: io.write_ops,
        }
    }
}

/// The last [`HISTORY_SECONDS`] of I/O per pool and tier, keyed by the second's end.
#[derive(Debug, Clone, Default)]
pub struct IoHistory {
    series: BTreeMap<(String, String), BTreeMap<i64, IoPoint>>,
    latest: i64,
}

impl IoHistory {
    /// Adds a second of the live stream.
    pub fn push_second(&mut self, second: &IoSecond) {
        self.latest = self.latest.max(second.time);
        for pool in &second.pools {
            for tier in &pool.tiers {
                self.insert(&pool.pool, &tier.tier, second.time, IoPoint::from(tier));
            }
        }
        self.trim();
    }

    /// Adds stored one-second rows (`GET /v1/stats/history`), to fill the charts at start.
    pub fn push_samples(&mut self, samples: &[IoSample]) {
        for sample in samples.iter().filter(|s| s.seconds == 1) {
            let point = IoPoint {
                read_bytes: sample.read_bytes,
                write_bytes: sample.write_bytes,
                read_ops: sample.read_ops,
                write_ops: sample.write_ops,
            };
            // A stored row starts a second before the stream's sample of the same second.
            self.insert(&sample.pool, &sample.tier, sample.time + 1, point);
        }
        self.trim();
    }

    fn insert(&mut self, pool: &str, tier: &str, time: i64, point: IoPoint) {
        self.latest = self.latest.max(time);
        self.series
            .entry((pool.to_owned(), tier.to_owned()))
            .or_default()
            .insert(time, point);
    }

    fn trim(&mut self) {
        let oldest = self.latest - HISTORY_SECONDS;
        for points in self.series.values_mut() {
            *points = points.split_off(&oldest);
        }
    }

    /// The newest second seen, 0 before any.
    pub fn latest(&self) -> i64 {
        self.latest
    }

    /// One tier's seconds, oldest first.
    pub fn series(&self, pool: &str, tier: &str) -> impl Iterator<Item = (i64, IoPoint)> + '_ {
        self.series
            .get(&(pool.to_owned(), tier.to_owned()))
            .into_iter()
            .flat_map(|points| points.iter().map(|(time, point)| (*time, *point)))
    }

    /// The tiers with history for `pool`.
    pub fn tiers(&self, pool: &str) -> Vec<String> {
        self.series
            .keys()
            .filter(|(p, _)| p == pool)
            .map(|(_, tier)| tier.clone())
            .collect()
    }

    /// One tier's newest second, if it is the newest second seen.
    pub fn current(&self, pool: &str, tier: &str) -> Option<IoPoint> {
        self.series
            .get(&(pool.to_owned(), tier.to_owned()))
            .and_then(|points| points.get(&self.latest).copied())
    }
}

/// A tier's latency histogram totals, as `/metrics` reports them since the mount.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyTotals {
    pub pool: String,
    pub tier: String,
    pub read_seconds: f64,
    pub reads: u64,
    pub write_seconds: f64,
    pub writes: u64,
}

/// Mean latencies of one tier: over the last poll interval, and since the mount.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TierLatency {
    pub totals: LatencyTotals,
    /// Milliseconds per operation during the last interval; `None` without operations.
    pub recent_read_ms: Option<f64>,
    pub recent_write_ms: Option<f64>,
}

impl TierLatency {
    /// Folds in new totals, computing the interval's means from the difference.
    pub fn advance(&mut self, totals: LatencyTotals) {
        let mean = |seconds: f64, ops: u64| {
            #[allow(clippy::cast_precision_loss)]
            let ops = ops as f64;
            (ops > 0.0).then(|| seconds / ops * 1000.0)
        };
        // Counters restart at each mount: a decrease starts over from the new totals.
        let restarted = totals.reads < self.totals.reads || totals.writes < self.totals.writes;
        let base = if restarted {
            LatencyTotals::default()
        } else {
            self.totals.clone()
        };
        self.recent_read_ms = mean(
            totals.read_seconds - base.read_seconds,
            totals.reads - base.reads,
        );
        self.recent_write_ms = mean(
            totals.write_seconds - base.write_seconds,
            totals.writes - base.writes,
        );
        self.totals = totals;
    }
}

/// Where the last frame put what a mouse click can hit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HitAreas {
    pub tabs: Vec<(Rect, Tab)>,
    /// The visible rows of the current screen's list: the area, and the index of its
    /// first row in the filtered list.
    pub rows: Option<(Rect, usize, ListId)>,
}

/// The console.
#[derive(Debug, Clone)]
pub struct App {
    pub tab: Tab,
    /// The pool shown (its `?pool=` name); `None` until the pools are known.
    pub pool: Option<String>,
    pub snapshots: ListView,
    pub backups: ListView,
    pub events: ListView,
    pub connection: Connection,
    pub data: ApiData,
    pub io: IoHistory,
    /// Latency per (pool, tier).
    pub latency: BTreeMap<(String, String), TierLatency>,
    pub modal: Option<Modal>,
    pub status: Option<StatusLine>,
    /// Unix seconds, from the last tick.
    pub now: i64,
    /// Seconds east of UTC, for showing local times.
    pub utc_offset: i32,
    /// Colors on (off with `--no-color` or `NO_COLOR`): modifiers carry the emphasis then.
    pub color: bool,
    /// The daemon's socket, for messages.
    pub socket: String,
    pub hit_areas: HitAreas,
    pub quit: bool,
}

impl App {
    pub fn new(
        socket: String,
        pool: Option<String>,
        color: bool,
        now: i64,
        utc_offset: i32,
    ) -> Self {
        Self {
            tab: Tab::Dashboard,
            pool,
            snapshots: ListView::default(),
            backups: ListView::default(),
            events: ListView::default(),
            connection: Connection::Connecting,
            data: ApiData::default(),
            io: IoHistory::default(),
            latency: BTreeMap::new(),
            modal: None,
            status: None,
            now,
            utc_offset,
            color,
            socket,
            hit_areas: HitAreas::default(),
            quit: false,
        }
    }

    pub fn list(&self, id: ListId) -> &ListView {
        match id {
            ListId::Snapshots => &self.snapshots,
            ListId::Backups => &self.backups,
            ListId::Events => &self.events,
        }
    }

    pub fn list_mut(&mut self, id: ListId) -> &mut ListView {
        match id {
            ListId::Snapshots => &mut self.snapshots,
            ListId::Backups => &mut self.backups,
            ListId::Events => &mut self.events,
        }
    }

    /// Rows of a list after its filter.
    pub fn list_len(&self, id: ListId) -> usize {
        match id {
            ListId::Snapshots => self.visible_snapshots().len(),
            ListId::Backups => self.visible_backups().len(),
            ListId::Events => self.visible_events().len(),
        }
    }

    /// Snapshots passing the filter, oldest first (as the API lists them).
    pub fn visible_snapshots(&self) -> Vec<&Snapshot> {
        self.data
            .snapshots
            .iter()
            .filter(|s| self.snapshots.matches(&s.name))
            .collect()
    }

    /// Backups passing the filter (name, engine, destination).
    pub fn visible_backups(&self) -> Vec<&BackupInfo> {
        self.data
            .backups
            .iter()
            .filter(|b| {
                self.backups
                    .matches(&format!("{} {} {}", b.name, b.engine, b.destination))
            })
            .collect()
    }

    /// Events passing the filter (level, kind, pool, message), newest first.
    pub fn visible_events(&self) -> Vec<&Event> {
        self.data
            .events
            .iter()
            .rev()
            .filter(|e| {
                self.events.matches(&format!(
                    "{} {} {} {}",
                    e.level.as_str(),
                    e.kind,
                    e.pool.as_deref().unwrap_or("-"),
                    e.message
                ))
            })
            .collect()
    }

    pub fn selected_snapshot(&self) -> Option<&Snapshot> {
        self.visible_snapshots()
            .get(self.snapshots.selected)
            .copied()
    }

    pub fn selected_backup(&self) -> Option<&BackupInfo> {
        self.visible_backups().get(self.backups.selected).copied()
    }

    pub fn selected_event(&self) -> Option<&Event> {
        self.visible_events().get(self.events.selected).copied()
    }

    /// The selected pool's entry in `GET /v1/pools`.
    pub fn pool_entry(&self) -> Option<&PoolEntry> {
        let pool = self.pool.as_deref()?;
        self.data.pools.iter().find(|p| p.name == pool)
    }

    /// Shows `text` on the footer for a few seconds.
    pub fn set_status(&mut self, text: impl Into<String>, is_error: bool) {
        self.status = Some(StatusLine {
            text: text.into(),
            is_error,
            expires_at: self.now + STATUS_SECONDS,
        });
    }

    /// The newest events, newest last, for the dashboard.
    pub fn latest_events(&self, count: usize) -> &[Event] {
        let start = self.data.events.len().saturating_sub(count);
        &self.data.events[start..]
    }
}

/// Appends events newer than those held, keeping the newest [`EVENTS_KEPT`].
pub fn append_events(events: &mut Vec<Event>, newer: Vec<Event>) {
    let last = events.last().map_or(i64::MIN, |e| e.id);
    events.extend(newer.into_iter().filter(|e| e.id > last));
    let excess = events.len().saturating_sub(EVENTS_KEPT);
    events.drain(..excess);
}
