//! Prometheus metrics (text exposition format 0.0.4) for `GET /metrics`: per-tier capacity,
//! I/O bytes and operations, latency histograms, device errors, the heat histogram, migration,
//! scrub and backup progress, the last result of every job, and firing alerts. Names follow
//! Prometheus conventions: an `aegis_` prefix, base units (bytes, seconds) in the name,
//! `_total` on counters.

use std::fmt::Write;

use super::Daemon;
use crate::service::PoolService;

/// Builds one exposition. Samples may be added in any order; each family's HELP, TYPE and
/// samples come out together, as the format requires.
struct Exposition {
    families: Vec<Family>,
}

struct Family {
    name: String,
    kind: &'static str,
    help: &'static str,
    samples: String,
}

impl Exposition {
    fn new() -> Self {
        Self {
            families: Vec::new(),
        }
    }

    fn family(&mut self, name: &str, kind: &'static str, help: &'static str) {
        self.families.push(Family {
            name: name.to_owned(),
            kind,
            help,
            samples: String::new(),
        });
    }

    /// A sample of the family `name` belongs to (a histogram's `_bucket`, `_sum` and
    /// `_count` belong to the histogram).
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let Some(family) = self.families.iter_mut().rev().find(|f| {
            name == f.name
                || (f.kind == "histogram"
                    && name
                        .strip_prefix(f.name.as_str())
                        .is_some_and(|suffix| matches!(suffix, "_bucket" | "_sum" | "_count")))
        }) else {
            debug_assert!(false, "metric {name} has no family");
            return;
        };
        let out = &mut family.samples;
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{key}=\"{}\"", escape(value));
            }
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for family in &self.families {
            let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
            let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
            out.push_str(&family.samples);
        }
        out
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn flag(value: bool) -> f64 {
    if value {
        1.0
    } else {
        0.0
    }
}

/// Every metric of the daemon, as of now.
pub fn render(daemon: &Daemon) -> String {
    let mut e = Exposition::new();
    e.family("aegis_up", "gauge", "1 while aegisd runs.");
    e.sample("aegis_up", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    e.family(
        "aegis_uptime_seconds",
        "gauge",
        "Seconds since aegisd started.",
    );
    e.sample(
        "aegis_uptime_seconds",
        &[],
        daemon.started.elapsed().as_secs_f64(),
    );

    e.family(
        "aegis_pool_mounted",
        "gauge",
        "1 when the pool is mounted and served.",
    );
    for name in daemon.pools.keys() {
        e.sample(
            "aegis_pool_mounted",
            &[("pool", name)],
            flag(daemon.service(name).is_ok()),
        );
    }
    let services: Vec<(String, std::sync::Arc<PoolService>)> = daemon
        .mounted()
        .map(|(name, pool)| (name.clone(), std::sync::Arc::clone(&pool.service)))
        .collect();
    pools(&mut e, &services);
    jobs(&mut e, daemon);
    backups(&mut e, daemon);
    e.family(
        "aegis_alerts_firing",
        "gauge",
        "Alerts whose condition holds now.",
    );
    e.sample(
        "aegis_alerts_firing",
        &[],
        daemon.alerts.firing().len() as f64,
    );
    e.render()
}

/// A metric drawn from one field: its name, help and the field.
type Field<T> = (&'static str, &'static str, fn(&T) -> u64);

fn pools(e: &mut Exposition, services: &[(String, std::sync::Arc<PoolService>)]) {
    let statuses: Vec<_> = services
        .iter()
        .map(|(name, service)| (name.as_str(), service.status(), service))
        .collect();
    let tier_gauges: [Field<crate::api::TierUsage>; 3] = [
        (
            "aegis_tier_capacity_bytes",
            "Bytes of a tier's data areas.",
            |t| t.data_bytes,
        ),
        ("aegis_tier_used_bytes", "Bytes allocated on a tier.", |t| {
            t.used_bytes
        }),
        ("aegis_tier_free_bytes", "Bytes free on a tier.", |t| {
            t.free_bytes
        }),
    ];
    for (metric, help, value) in tier_gauges {
        e.family(metric, "gauge", help);
        for (pool, status, _) in &statuses {
            for tier in &status.tiers {
                e.sample(
                    metric,
                    &[("pool", pool), ("tier", &tier.tier)],
                    value(tier) as f64,
                );
            }
        }
    }
    let member_counters: [Field<crate::api::MemberStatus>; 4] = [
        (
            "aegis_tier_read_bytes_total",
            "Bytes read from a tier's devices since mount.",
            |m| m.bytes_read,
        ),
        (
            "aegis_tier_written_bytes_total",
            "Bytes written to a tier's devices since mount.",
            |m| m.bytes_written,
        ),
        (
            "aegis_tier_reads_total",
            "Read operations on a tier's devices since mount.",
            |m| m.read_ops,
        ),
        (
            "aegis_tier_writes_total",
            "Write operations on a tier's devices since mount.",
            |m| m.write_ops,
        ),
    ];
    for (metric, help, value) in member_counters {
        e.family(metric, "counter", help);
        for (pool, status, _) in &statuses {
            for tier in &status.tiers {
                let sum: u64 = status
                    .members
                    .iter()
                    .filter(|m| m.tier == tier.tier)
                    .map(value)
                    .sum();
                e.sample(metric, &[("pool", pool), ("tier", &tier.tier)], sum as f64);
            }
        }
    }
    latency_histograms(e, services);
    e.family(
        "aegis_device_errors_total",
        "counter",
        "Device errors by kind (read, write, checksum) and repaired copies, kept across mounts until cleared.",
    );
    for (pool, status, _) in &statuses {
        for m in &status.members {
            let device = m.index.to_string();
            for (kind, value) in [
                ("read", m.read_errors),
                ("write", m.write_errors),
                ("checksum", m.checksum_errors),
                ("repaired", m.repaired),
            ] {
                e.sample(
                    "aegis_device_errors_total",
                    &[
                        ("pool", pool),
                        ("device", &device),
                        ("tier", &m.tier),
                        ("kind", kind),
                    ],
                    value as f64,
                );
            }
        }
    }
    e.family(
        "aegis_tier_blocks",
        "gauge",
        "Blocks on a tier by heat (hot, warm, cold): the heat histogram.",
    );
    e.family(
        "aegis_migration_running",
        "gauge",
        "1 while a tier migration runs.",
    );
    e.family(
        "aegis_migration_moved_bytes",
        "gauge",
        "Bytes the running or last migration of this process moved.",
    );
    e.family(
        "aegis_migration_planned_bytes",
        "gauge",
        "Bytes the running or last migration planned to move.",
    );
    e.family("aegis_scrub_running", "gauge", "1 while a scrub runs.");
    e.family(
        "aegis_scrub_progress_ratio",
        "gauge",
        "Fraction of the running or last scrub done.",
    );
    e.family(
        "aegis_scrub_unrecoverable_blocks",
        "gauge",
        "Blocks the last scrub found with no intact copy.",
    );
    for (pool, _, service) in &statuses {
        if let Ok(tiers) = service.tier_status() {
            for tier in &tiers.tiers {
                for (heat, blocks) in [
                    ("hot", tier.hot_blocks),
                    ("warm", tier.warm_blocks),
                    ("cold", tier.cold_blocks),
                ] {
                    e.sample(
                        "aegis_tier_blocks",
                        &[("pool", pool), ("tier", &tier.tier), ("heat", heat)],
                        blocks as f64,
                    );
                }
            }
        }
        let migration = service.migration_progress();
        let running = migration.as_ref().is_some_and(|m| m.counts.running);
        e.sample("aegis_migration_running", &[("pool", pool)], flag(running));
        if let Some(migration) = migration {
            e.sample(
                "aegis_migration_moved_bytes",
                &[("pool", pool)],
                migration.counts.moved_bytes() as f64,
            );
            e.sample(
                "aegis_migration_planned_bytes",
                &[("pool", pool)],
                migration.counts.planned_bytes as f64,
            );
        }
        if let Ok(scrub) = service.scrub_status() {
            e.sample(
                "aegis_scrub_running",
                &[("pool", pool)],
                flag(scrub.running),
            );
            e.sample(
                "aegis_scrub_progress_ratio",
                &[("pool", pool)],
                scrub.percent / 100.0,
            );
            e.sample(
                "aegis_scrub_unrecoverable_blocks",
                &[("pool", pool)],
                scrub.unrecoverable as f64,
            );
        }
    }
}

/// Read and write latency per tier: how long each device submission took.
fn latency_histograms(e: &mut Exposition, services: &[(String, std::sync::Arc<PoolService>)]) {
    use fs_core::fs::latency::{Latency, BUCKET_BOUNDS_US};
    type Pick = fn(&fs_core::fs::MemberCounters) -> &Latency;
    let kinds: [(&str, &str, Pick); 2] = [
        (
            "aegis_tier_read_latency_seconds",
            "How long reads from a tier's devices took.",
            |c| &c.read_latency,
        ),
        (
            "aegis_tier_write_latency_seconds",
            "How long writes to a tier's devices took.",
            |c| &c.write_latency,
        ),
    ];
    for (metric, help, pick) in kinds {
        e.family(metric, "histogram", help);
        for (pool, service) in services {
            let counters = service.fs.member_counters();
            for tier in [fs_core::types::Tier::Fast, fs_core::types::Tier::Slow] {
                let mut total = Latency::default();
                let mut present = false;
                for c in counters.iter().filter(|c| c.tier == tier) {
                    total.add(pick(c));
                    present = true;
                }
                if !present {
                    continue;
                }
                let tier = tier.to_string();
                let mut cumulative = 0;
                for (bound, count) in BUCKET_BOUNDS_US.iter().zip(total.buckets) {
                    cumulative += count;
                    let le = (*bound as f64 / 1e6).to_string();
                    e.sample(
                        &format!("{metric}_bucket"),
                        &[("pool", pool), ("tier", &tier), ("le", &le)],
                        cumulative as f64,
                    );
                }
                let count = total.count() as f64;
                e.sample(
                    &format!("{metric}_bucket"),
                    &[("pool", pool), ("tier", &tier), ("le", "+Inf")],
                    count,
                );
                let labels = [("pool", pool.as_str()), ("tier", tier.as_str())];
                e.sample(&format!("{metric}_sum"), &labels, total.sum_us as f64 / 1e6);
                e.sample(&format!("{metric}_count"), &labels, count);
            }
        }
    }
}

/// The progress of running backups (their results are the `aegis_job_last_*` of kind
/// `backup`).
fn backups(e: &mut Exposition, daemon: &Daemon) {
    e.family("aegis_backup_running", "gauge", "1 while the backup runs.");
    e.family(
        "aegis_backup_transferred_bytes",
        "gauge",
        "Bytes the running backup has transferred so far.",
    );
    e.family(
        "aegis_backup_transferred_files",
        "gauge",
        "Files the running backup has handled so far.",
    );
    e.family(
        "aegis_backup_rate_bytes_per_second",
        "gauge",
        "How fast the running backup transfers.",
    );
    for task in &daemon.config.backups {
        let labels = [
            ("backup", task.job.name.as_str()),
            ("pool", task.job.pool.as_str()),
        ];
        let progress = daemon.backups.progress(&task.job.name);
        e.sample("aegis_backup_running", &labels, flag(progress.is_some()));
        if let Some(progress) = progress {
            e.sample(
                "aegis_backup_transferred_bytes",
                &labels,
                progress.copied.bytes_done as f64,
            );
            e.sample(
                "aegis_backup_transferred_files",
                &labels,
                progress.copied.files_done as f64,
            );
            e.sample(
                "aegis_backup_rate_bytes_per_second",
                &labels,
                progress.copied.rate_bytes_per_sec as f64,
            );
        }
    }
}

fn jobs(e: &mut Exposition, daemon: &Daemon) {
    e.family("aegis_job_running", "gauge", "1 while the job runs.");
    for job in &daemon.jobs {
        e.sample(
            "aegis_job_running",
            &[
                ("job", &job.name),
                ("kind", job.work.kind()),
                ("pool", &job.pool),
            ],
            flag(daemon.is_running(&job.name)),
        );
    }
    let last_runs: Vec<_> = daemon
        .jobs
        .iter()
        .filter_map(|job| {
            // At most one run is open at a time, so one of the newest two has ended.
            let runs = daemon.state.runs(Some(&job.name), 2).ok()?;
            Some((job, runs.into_iter().find(|run| run.outcome.is_some())?))
        })
        .collect();
    e.family(
        "aegis_job_last_success",
        "gauge",
        "1 when the job's last finished run succeeded, 0 when it did not.",
    );
    for (job, run) in &last_runs {
        let ok = run.outcome == Some(super::state::RunOutcome::Succeeded);
        e.sample(
            "aegis_job_last_success",
            &[
                ("job", &job.name),
                ("kind", job.work.kind()),
                ("pool", &job.pool),
            ],
            flag(ok),
        );
    }
    e.family(
        "aegis_job_last_run_timestamp_seconds",
        "gauge",
        "When the job's last finished run ended (seconds since the epoch).",
    );
    for (job, run) in &last_runs {
        e.sample(
            "aegis_job_last_run_timestamp_seconds",
            &[
                ("job", &job.name),
                ("kind", job.work.kind()),
                ("pool", &job.pool),
            ],
            run.finished.unwrap_or(run.started) as f64,
        );
    }
    e.family(
        "aegis_job_last_duration_seconds",
        "gauge",
        "How long the job's last finished run took.",
    );
    e.family(
        "aegis_job_last_bytes",
        "gauge",
        "Bytes the job's last finished run handled (moved, checked or released).",
    );
    for (job, run) in &last_runs {
        let labels = [
            ("job", job.name.as_str()),
            ("kind", job.work.kind()),
            ("pool", job.pool.as_str()),
        ];
        let duration = run.finished.unwrap_or(run.started) - run.started;
        e.sample("aegis_job_last_duration_seconds", &labels, duration as f64);
        e.sample("aegis_job_last_bytes", &labels, run.bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::new();
        e.family("aegis_x", "gauge", "Help.");
        e.sample("aegis_x", &[("pool", "a\"b\\c\nd")], 1.5);
        assert_eq!(
            e.render(),
            "# HELP aegis_x Help.\n# TYPE aegis_x gauge\naegis_x{pool=\"a\\\"b\\\\c\\nd\"} 1.5\n"
        );
    }

    #[test]
    fn samples_are_grouped_under_their_family() {
        let mut e = Exposition::new();
        e.family("aegis_a", "gauge", "A.");
        e.family("aegis_h_seconds", "histogram", "H.");
        e.sample("aegis_a", &[("pool", "p")], 1.0);
        e.sample("aegis_h_seconds_bucket", &[("le", "+Inf")], 2.0);
        e.sample("aegis_a", &[("pool", "q")], 3.0);
        e.sample("aegis_h_seconds_count", &[], 2.0);
        assert_eq!(
            e.render(),
            "# HELP aegis_a A.\n# TYPE aegis_a gauge\naegis_a{pool=\"p\"} 1\naegis_a{pool=\"q\"} 3\n\
             # HELP aegis_h_seconds H.\n# TYPE aegis_h_seconds histogram\n\
             aegis_h_seconds_bucket{le=\"+Inf\"} 2\naegis_h_seconds_count 2\n"
        );
    }
}
