//! The daemon's once-a-second background work: samples every pool's I/O counters into
//! per-tier deltas (kept in the state database, sent to live-stream subscribers), starts due
//! jobs, folds old I/O history, keeps systemd's status line current, and watches the conditions
//! that raise alerts (device errors, a fast tier past its high watermark for long, a pool
//! unmounted behind the daemon's back).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fs_core::fs::MemberCounters;

use super::state::{IoSample, Level};
use super::Daemon;
use crate::api::{IoSecond, PoolIo, TierIo};

/// Seconds between checks of the fast tier's fill level (a full status report).
const CAPACITY_CHECK_EVERY: u64 = 10;
/// Seconds between folds of old I/O history.
const DOWNSAMPLE_EVERY: u64 = 60;
/// Seconds of stream events a slow subscriber may fall behind before it is dropped.
const SUBSCRIBER_BACKLOG: usize = 30;
/// Clients that may follow the live stream at once (each holds a connection and a thread).
pub const MAX_FOLLOWERS: usize = 16;

/// Live I/O statistics and what the sampler remembers between seconds.
#[derive(Default)]
pub struct Stats {
    inner: Mutex<Inner>,
    followers: Arc<AtomicUsize>,
}

/// A place among the [`MAX_FOLLOWERS`] clients of the live stream, freed when dropped.
pub struct Follower {
    count: Arc<AtomicUsize>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Inner {
    previous: HashMap<String, Vec<MemberCounters>>,
    latest: Option<IoSecond>,
    subscribers: Vec<SyncSender<Arc<IoSecond>>>,
    last_tick: Option<Instant>,
    /// When each pool's fast tier was first seen above its high watermark (daemon clock).
    fast_full_since: HashMap<String, DateTime<Utc>>,
    unmounted_reported: HashMap<String, bool>,
}

impl Stats {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The last second's I/O.
    pub fn latest(&self) -> Option<IoSecond> {
        self.inner().latest.clone()
    }

    /// A place among the live stream's clients, unless [`MAX_FOLLOWERS`] follow it already.
    pub fn follow(&self) -> Option<Follower> {
        self.followers
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_FOLLOWERS).then_some(n + 1)
            })
            .ok()
            .map(|_| Follower {
                count: Arc::clone(&self.followers),
            })
    }

    /// A receiver of every following second's I/O. It closes when the daemon stops or when
    /// the subscriber falls too far behind.
    pub fn subscribe(&self) -> Receiver<Arc<IoSecond>> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(SUBSCRIBER_BACKLOG);
        self.inner().subscribers.push(sender);
        receiver
    }

    /// How long ago the background thread last ran (the watchdog's health check).
    pub fn since_last_tick(&self) -> Option<Duration> {
        self.inner().last_tick.map(|t| t.elapsed())
    }

    fn publish(&self, second: IoSecond) {
        let second = Arc::new(second);
        let mut inner = self.inner();
        inner.latest = Some((*second).clone());
        inner
            .subscribers
            .retain(|s| match s.try_send(Arc::clone(&second)) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            });
    }

    fn close_subscribers(&self) {
        self.inner().subscribers.clear();
    }
}

/// The background thread; stops on [`Background::stop`].
pub struct Background {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Background {
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Starts the once-a-second work; it ends on [`Background::stop`] or once the daemon stops.
pub fn spawn_background(daemon: &Arc<Daemon>) -> anyhow::Result<Background> {
    let stop = Arc::new(AtomicBool::new(false));
    let (daemon, stop_flag) = (Arc::clone(daemon), Arc::clone(&stop));
    let thread = std::thread::Builder::new()
        .name("aegis-sampler".into())
        .spawn(move || {
            let mut tick: u64 = 0;
            let mut next = Instant::now();
            let running = || !stop_flag.load(Ordering::Relaxed) && !daemon.is_stopping();
            while running() {
                next += Duration::from_secs(1);
                sample(&daemon);
                daemon.run_due_jobs();
                for (name, pool) in daemon.mounted() {
                    let next = daemon.next_run(&super::jobs::migration_job(name));
                    pool.service.set_next_migration(next.map(|t| t.timestamp()));
                }
                if tick.is_multiple_of(CAPACITY_CHECK_EVERY) {
                    check_capacity(&daemon);
                    super::notify::status(&summary(&daemon));
                }
                if tick.is_multiple_of(DOWNSAMPLE_EVERY) {
                    if let Err(err) = daemon.state.downsample_io(daemon.clock.now().timestamp()) {
                        tracing::error!(error = %err, "cannot fold the I/O history");
                    }
                }
                daemon.stats.inner().last_tick = Some(Instant::now());
                tick += 1;
                while Instant::now() < next && running() {
                    std::thread::sleep(Duration::from_millis(50).min(next - Instant::now()));
                }
                next = next.max(Instant::now());
            }
            daemon.stats.close_subscribers();
        })?;
    Ok(Background { stop, thread })
}

/// One second of I/O: counters now minus counters a second ago, summed per tier.
fn sample(daemon: &Daemon) {
    let now = daemon.clock.now().timestamp();
    let mut second = IoSecond {
        time: now,
        pools: Vec::new(),
    };
    let mut rows = Vec::new();
    for (name, pool) in &daemon.pools {
        let super::PoolSlot::Mounted(mounted) = pool else {
            continue;
        };
        if mounted.is_unmounted() {
            report_unmounted(daemon, name, &mounted.service.mountpoint);
            continue;
        }
        let fs = &mounted.service.fs;
        let counters = fs.member_counters();
        check_device_errors(daemon, name, &counters);
        let previous = daemon
            .stats
            .inner()
            .previous
            .insert(name.clone(), counters.clone())
            .unwrap_or_else(|| counters.clone());
        let mut tiers: Vec<TierIo> = Vec::new();
        for (now_c, before) in counters.iter().zip(&previous) {
            let tier = now_c.tier.to_string();
            let entry = match tiers.iter_mut().position(|t| t.tier == tier) {
                Some(i) => &mut tiers[i],
                None => {
                    tiers.push(TierIo {
                        tier,
                        ..TierIo::default()
                    });
                    tiers.last_mut().expect("just pushed")
                }
            };
            entry.read_bytes += now_c.bytes_read.saturating_sub(before.bytes_read);
            entry.write_bytes += now_c.bytes_written.saturating_sub(before.bytes_written);
            entry.read_ops += now_c.read_ops.saturating_sub(before.read_ops);
            entry.write_ops += now_c.write_ops.saturating_sub(before.write_ops);
        }
        rows.extend(tiers.iter().map(|t| IoSample {
            // The second that ended now.
            time: now - 1,
            seconds: 1,
            pool: name.clone(),
            tier: t.tier.clone(),
            read_bytes: t.read_bytes,
            write_bytes: t.write_bytes,
            read_ops: t.read_ops,
            write_ops: t.write_ops,
        }));
        second.pools.push(PoolIo {
            pool: name.clone(),
            tiers,
        });
    }
    if let Err(err) = daemon.state.record_io(&rows) {
        tracing::error!(error = %err, "cannot record I/O statistics");
    }
    daemon.stats.publish(second);
}

fn report_unmounted(daemon: &Daemon, pool: &str, mountpoint: &str) {
    if daemon.is_stopping() {
        return;
    }
    let first = daemon
        .stats
        .inner()
        .unmounted_reported
        .insert(pool.to_owned(), true)
        .is_none();
    if first {
        let message = format!(
            "pool {pool} was unmounted from {mountpoint} outside aegisd; restart aegisd to mount it again"
        );
        daemon.event(Level::Error, "pool", Some(pool), &message);
        daemon
            .alerts
            .raise(&format!("pool-unavailable:{pool}"), Some(pool), &message);
    }
}

/// Checks every alert condition of the mounted pools now: device errors (the sampler checks
/// them every second) and the fast tier's fill (every ten seconds).
pub fn check_alerts(daemon: &Daemon) {
    for (name, mounted) in daemon.mounted() {
        check_device_errors(daemon, name, &mounted.service.fs.member_counters());
    }
    check_capacity(daemon);
}

/// Alerts while any member has counted read, write or checksum errors (until the counters
/// are cleared with `aegis status --clear-errors`).
fn check_device_errors(daemon: &Daemon, pool: &str, counters: &[MemberCounters]) {
    let failing: Vec<String> = counters
        .iter()
        .filter(|c| c.errors.read + c.errors.write + c.errors.checksum > 0)
        .map(|c| {
            format!(
                "device {} ({}): {} read, {} write, {} checksum error(s)",
                c.index.0, c.tier, c.errors.read, c.errors.write, c.errors.checksum
            )
        })
        .collect();
    let key = format!("device-errors:{pool}");
    if failing.is_empty() {
        daemon.alerts.clear(
            &key,
            Some(pool),
            &format!("the error counters of pool {pool} were cleared"),
        );
    } else {
        daemon.alerts.raise(
            &key,
            Some(pool),
            &format!(
                "pool {pool} has device errors: {}; see `aegis status`, run a scrub and check the disk",
                failing.join("; ")
            ),
        );
    }
}

/// The status line systemd shows: pools served, jobs running, alerts firing.
fn summary(daemon: &Daemon) -> String {
    let running: Vec<&str> = daemon
        .jobs
        .iter()
        .filter(|job| daemon.is_running(&job.name))
        .map(|job| job.name.as_str())
        .collect();
    let mut line = format!(
        "serving {} of {} pool(s)",
        daemon.mounted().count(),
        daemon.pools.len()
    );
    if !running.is_empty() {
        line.push_str(&format!("; running {}", running.join(", ")));
    }
    let alerts = daemon.alerts.firing().len();
    if alerts > 0 {
        line.push_str(&format!("; {alerts} alert(s) firing"));
    }
    line
}

/// Alerts when a pool's fast tier stays above its high watermark longer than configured
/// (measured on the daemon's clock).
fn check_capacity(daemon: &Daemon) {
    let limit = daemon.config.alerts.fast_tier_full_after;
    let now = daemon.clock.now();
    for (name, mounted) in daemon.mounted() {
        let status = mounted.service.fs.status();
        let (size, free) = status
            .members
            .iter()
            .filter(|m| m.tier == fs_core::types::Tier::Fast)
            .fold((0u64, 0u64), |(s, f), m| {
                (s + m.data_bytes, f + m.free_bytes)
            });
        if size == 0 {
            continue;
        }
        let used = (size - free) as f64 / size as f64;
        let high = daemon
            .config
            .pools
            .iter()
            .find(|p| &p.name == name)
            .map_or(0.85, |p| p.watermarks.1);
        let key = format!("fast-tier-full:{name}");
        let since = {
            let mut inner = daemon.stats.inner();
            if used > high {
                Some(*inner.fast_full_since.entry(name.clone()).or_insert(now))
            } else {
                inner.fast_full_since.remove(name);
                None
            }
        };
        let full_for = since.map(|since| (now - since).to_std().unwrap_or_default());
        match full_for {
            Some(full_for) if full_for >= limit => daemon.alerts.raise(
                &key,
                Some(name),
                &format!(
                    "the fast tier of pool {name} has been {:.0}% full (above its {:.0}% high watermark) for {}; run `aegis tier migrate` or add space",
                    used * 100.0,
                    high * 100.0,
                    humantime::format_duration(Duration::from_secs(full_for.as_secs()))
                ),
            ),
            Some(_) => {}
            None => daemon.alerts.clear(
                &key,
                Some(name),
                &format!("the fast tier of pool {name} is below its high watermark again"),
            ),
        }
    }
}
