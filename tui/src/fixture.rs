//! A console full of plausible answers, for the update and rendering tests: one daemon
//! serving two pools, five minutes of I/O, snapshots, backups (one running), events and a
//! finished scrub. Fixed times, so screens render the same on any machine.

use appliance::api::{
    Alert, BackupInfo, BackupProgress, DaemonInfo, Event, IoSecond, JobInfo, JobRun, Level,
    MemberStatus, MigrationEntry, Pin, PoolEntry, PoolIo, RunOutcome, ScrubStatus, Snapshot,
    Status, TierHeat, TierIo, TierStatus, TierUsage,
};

use crate::state::{App, Connection, LatencyTotals};
use crate::update::{update, DataUpdate, Msg};

/// 2026-11-25 17:50:20 UTC.
pub const NOW: i64 = 1_795_629_020;
const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

pub fn status(name: &str) -> Status {
    let member = |index: u16, tier: &str, size: u64, used: u64| MemberStatus {
        index,
        tier: tier.into(),
        path: format!("/var/tmp/aegis-demo/{tier}.img"),
        size_bytes: size,
        data_bytes: size - size / 16,
        free_bytes: size - size / 16 - used,
        used_bytes: used,
        ..MemberStatus::default()
    };
    let members = vec![
        member(0, "fast", 2 * GIB, 1_288 * MIB),
        member(1, "slow", 8 * GIB, 3 * GIB),
    ];
    let tiers = members
        .iter()
        .map(|m| TierUsage {
            tier: m.tier.clone(),
            data_bytes: m.data_bytes,
            used_bytes: m.used_bytes,
            free_bytes: m.free_bytes,
        })
        .collect();
    Status {
        name: name.into(),
        label: name.into(),
        mountpoint: format!("/srv/{name}"),
        pid: 4242,
        uptime_secs: 11_100,
        block_size: 131_072,
        members,
        tiers,
        snapshots: 3,
        snapshot_bytes: 84 * MIB,
        ..Status::default()
    }
}

fn io_second(time: i64) -> IoSecond {
    // A gentle wave, so the charts have shape; the slow tier reads a little.
    let phase = u64::try_from(time.rem_euclid(60)).unwrap_or(0);
    let wave = if phase < 30 { phase } else { 60 - phase };
    IoSecond {
        time,
        pools: vec![PoolIo {
            pool: "tank".into(),
            tiers: vec![
                TierIo {
                    tier: "fast".into(),
                    read_bytes: wave * 2 * MIB,
                    write_bytes: (30 - wave) * 3 * MIB,
                    read_ops: wave * 16,
                    write_ops: (30 - wave) * 24,
                },
                TierIo {
                    tier: "slow".into(),
                    read_bytes: wave * MIB / 4,
                    write_bytes: 0,
                    read_ops: wave * 2,
                    write_ops: 0,
                },
            ],
        }],
    }
}

fn event(id: i64, time: i64, level: Level, kind: &str, message: &str) -> Event {
    Event {
        id,
        time,
        level,
        kind: kind.into(),
        pool: Some("tank".into()),
        message: message.into(),
    }
}

fn run(id: i64, job: &str, started: i64, outcome: RunOutcome, bytes: u64) -> JobRun {
    JobRun {
        id,
        job: job.into(),
        kind: "backup".into(),
        started,
        scheduled_for: Some(started),
        finished: Some(started + 95),
        outcome: Some(outcome),
        bytes,
        error: (outcome == RunOutcome::Failed)
            .then(|| "remote unreachable: b2crypt: connection refused".into()),
        detail: None,
        files: 412,
        log_tail: Some("Transferred: 1.2 GiB / 1.2 GiB, 100%\nChecks: 412 / 412".into()),
        snapshot: Some(format!("backup-{job}-{started}")),
    }
}

/// Everything the poller and the stream deliver, folded in as the console would.
pub fn answers() -> Vec<Msg> {
    let mut msgs = vec![
        Msg::Connected,
        Msg::Data(DataUpdate::Daemon(DaemonInfo {
            version: "0.1.0".into(),
            pid: 4242,
            uptime_secs: 11_100,
            config: "/etc/aegis/aegis.toml".into(),
            socket: "/run/aegis/aegisd.sock".into(),
            pools: vec!["tank".into(), "vault".into()],
            alerts_firing: 1,
        })),
        Msg::Data(DataUpdate::Pools(vec![
            PoolEntry {
                name: "tank".into(),
                mounted: true,
                error: None,
                status: Some(status("tank")),
            },
            PoolEntry {
                name: "vault".into(),
                mounted: true,
                error: None,
                status: Some(status("vault")),
            },
        ])),
        Msg::Data(DataUpdate::Jobs(vec![
            JobInfo {
                name: "snapshot:tank:hourly".into(),
                kind: "snapshot".into(),
                pool: "tank".into(),
                schedule: Some("hourly".into()),
                next_run: Some(NOW + 580),
                ..JobInfo::default()
            },
            JobInfo {
                name: "migration:tank".into(),
                kind: "migration".into(),
                pool: "tank".into(),
                schedule: Some("weekly".into()),
                next_run: Some(NOW + 3 * 86_400),
                ..JobInfo::default()
            },
        ])),
        Msg::Data(DataUpdate::Backups(vec![
            BackupInfo {
                name: "photos-offsite".into(),
                pool: "tank".into(),
                engine: "rclone".into(),
                source: "photos".into(),
                destination: "b2crypt:tank/photos".into(),
                mode: "sync".into(),
                schedule: Some("daily 02:30".into()),
                keep_versions: 30,
                next_run: Some(NOW + 31_000),
                running: true,
                progress: Some(BackupProgress {
                    phase: "copying".into(),
                    started: NOW - 75,
                    copied: appliance::api::BackupEngineProgress {
                        bytes_done: 700 * MIB,
                        bytes_total: Some(1_200 * MIB),
                        files_done: 230,
                        files_total: Some(412),
                        rate_bytes_per_sec: 9 * MIB,
                        eta_secs: Some(55),
                    },
                }),
                last_run: Some(run(
                    7,
                    "photos-offsite",
                    NOW - 86_000,
                    RunOutcome::Failed,
                    0,
                )),
            },
            BackupInfo {
                name: "documents-usb".into(),
                pool: "tank".into(),
                engine: "rsync".into(),
                source: "documents".into(),
                destination: "/media/usb/aegis".into(),
                mode: "copy".into(),
                schedule: Some("hourly".into()),
                keep_versions: 7,
                next_run: Some(NOW + 1_200),
                running: false,
                progress: None,
                last_run: Some(run(
                    9,
                    "documents-usb",
                    NOW - 2_400,
                    RunOutcome::Succeeded,
                    48 * MIB,
                )),
            },
        ])),
        Msg::Data(DataUpdate::Alerts(vec![Alert {
            alert: "job-failed:backup:photos-offsite".into(),
            state: "firing".into(),
            pool: Some("tank".into()),
            message: "backup photos-offsite failed".into(),
            time: NOW - 86_000,
            host: "nas".into(),
        }])),
        Msg::Data(DataUpdate::Events(vec![
            event(
                1,
                NOW - 86_000,
                Level::Error,
                "backup",
                "backup photos-offsite failed: remote unreachable",
            ),
            event(
                2,
                NOW - 3_600,
                Level::Info,
                "snapshot",
                "took snapshot auto-2026-11-25_16-50",
            ),
            event(
                3,
                NOW - 2_400,
                Level::Info,
                "backup",
                "backup documents-usb succeeded: 48.0 MiB in 412 files",
            ),
            event(
                4,
                NOW - 900,
                Level::Warning,
                "scrub",
                "scrub repaired 2 damaged copies on fast.img",
            ),
            event(
                5,
                NOW - 75,
                Level::Info,
                "backup",
                "backup photos-offsite started",
            ),
        ])),
        Msg::Data(DataUpdate::Tier {
            pool: Some("tank".into()),
            status: TierStatus {
                tiers: vec![
                    TierHeat {
                        tier: "fast".into(),
                        capacity_bytes: 1_920 * MIB,
                        used_bytes: 1_288 * MIB,
                        blocks: 10_304,
                        hot_blocks: 2_210,
                        warm_blocks: 5_100,
                        cold_blocks: 2_994,
                    },
                    TierHeat {
                        tier: "slow".into(),
                        capacity_bytes: 7_680 * MIB,
                        used_bytes: 3_072 * MIB,
                        blocks: 24_576,
                        hot_blocks: 310,
                        warm_blocks: 1_900,
                        cold_blocks: 22_366,
                    },
                ],
                low_watermark: 0.70,
                high_watermark: 0.85,
                migration: None,
                last_migration: Some(MigrationEntry {
                    started: NOW - 4 * 86_400,
                    finished: NOW - 4 * 86_400 + 310,
                    promoted_blocks: 812,
                    promoted_bytes: 812 * 128 * 1024,
                    demoted_blocks: 2_040,
                    demoted_bytes: 2_040 * 128 * 1024,
                    outcome: "finished".into(),
                }),
                next_migration: Some(NOW + 3 * 86_400),
                pins: vec![
                    Pin {
                        path: "/projects/db".into(),
                        tier: "fast".into(),
                    },
                    Pin {
                        path: "/archive".into(),
                        tier: "slow".into(),
                    },
                ],
            },
        }),
        Msg::Data(DataUpdate::Snapshots {
            pool: Some("tank".into()),
            snapshots: vec![
                Snapshot {
                    name: "before-upgrade".into(),
                    created: NOW - 5 * 86_400,
                    referenced_bytes: 3_900 * MIB,
                    unique_bytes: 61 * MIB,
                },
                Snapshot {
                    name: "auto-2026-11-25_15-50".into(),
                    created: NOW - 7_200,
                    referenced_bytes: 4_300 * MIB,
                    unique_bytes: 12 * MIB,
                },
                Snapshot {
                    name: "auto-2026-11-25_16-50".into(),
                    created: NOW - 3_600,
                    referenced_bytes: 4_350 * MIB,
                    unique_bytes: 11 * MIB,
                },
            ],
        }),
        Msg::Data(DataUpdate::Scrub {
            pool: Some("tank".into()),
            status: ScrubStatus {
                state: "finished".into(),
                running: false,
                percent: 100.0,
                started: Some(NOW - 1_500),
                finished: Some(NOW - 900),
                blocks_total: 34_880,
                blocks_checked: 34_880,
                bytes_checked: 4_360 * MIB,
                errors_found: 2,
                repaired: 2,
                ..ScrubStatus::default()
            },
        }),
        Msg::Data(DataUpdate::Latency(vec![LatencyTotals {
            pool: "tank".into(),
            tier: "fast".into(),
            read_seconds: 0.5,
            reads: 2_000,
            write_seconds: 1.2,
            writes: 1_000,
        }])),
    ];
    for time in NOW - 299..=NOW {
        msgs.push(Msg::Io(io_second(time)));
    }
    msgs
}

/// The console after the fixture's answers, on the dashboard.
pub fn app(color: bool) -> App {
    let mut app = App::new("/run/aegis/aegisd.sock".into(), None, color, NOW, 0);
    for msg in answers() {
        update(&mut app, msg);
    }
    assert_eq!(app.connection, Connection::Connected);
    app
}
