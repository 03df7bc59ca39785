//! The control API's types, shared by its servers (a standalone serving process, `aegisd`)
//! and its clients (`aegis`, `aegis-tui`). Every endpoint, request and response is described
//! in docs/api.md. Errors are [`ApiError`] bodies.

use serde::{Deserialize, Serialize};

pub use crate::daemon::alerts::Alert;
pub use crate::daemon::state::{
    AuditEntry, AuditVerdict, Event, IoSample, JobRun, Level, RunOutcome,
};
pub use crate::smart::SmartHealth;

/// One member of a pool as the API reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberStatus {
    pub index: u16,
    pub tier: String,
    /// Where it was opened from (empty while it is missing).
    pub path: String,
    /// `active`, `removing` (being emptied to leave the pool), `missing` (the pool runs
    /// degraded without it) or `faulted` (it kept failing; its blocks are moved off).
    pub state: String,
    /// It holds a copy of the metadata region.
    pub metadata_copy: bool,
    pub size_bytes: u64,
    pub data_bytes: u64,
    pub free_bytes: u64,
    pub used_bytes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub read_ops: u64,
    pub write_ops: u64,
    /// Error counters, kept across mounts until `aegis status --clear-errors`.
    pub read_errors: u64,
    pub write_errors: u64,
    pub checksum_errors: u64,
    /// Damaged copies rewritten from a good copy.
    pub repaired: u64,
    /// SMART health from `smartctl`, for a block device, in `GET /v1/devices` only (`None`
    /// for image files, missing members, and in `GET /v1/status`).
    pub health: Option<SmartHealth>,
}

/// `GET /v1/devices`: the members, the emptying of a member being removed or replaced, and
/// the files a degraded pool cannot read in full.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Devices {
    pub members: Vec<MemberStatus>,
    pub evacuation: Option<Evacuation>,
    /// Files with data only missing members hold (at most 100).
    pub unavailable_files: Vec<String>,
}

/// The emptying of a member so it can leave the pool (`aegis device remove` or `replace`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Evacuation {
    pub member: u16,
    pub path: String,
    /// `remove`, `replace`, `shrink`, or `faulted` (the blocks of a faulted member moved off).
    pub action: String,
    /// The member its blocks go to first (the new device of a `replace`).
    pub replacement: Option<u16>,
    /// The size a `shrink` takes the member to, in bytes.
    pub target_size: Option<u64>,
    pub blocks_total: u64,
    pub blocks_moved: u64,
    pub bytes_total: u64,
    pub bytes_moved: u64,
    pub elapsed_ms: u64,
    /// Bytes per second at most (0: as fast as the devices go).
    pub rate: u64,
    pub running: bool,
    /// The member left the pool.
    pub finished: bool,
    /// Why it stopped, if it failed.
    pub error: Option<String>,
}

/// `POST /v1/devices/add`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceAdd {
    /// A block device or image file.
    pub path: String,
    /// `fast` or `slow`.
    pub tier: String,
    /// Create (sparse) or size an image file to this many bytes.
    #[serde(default)]
    pub size: Option<u64>,
    /// Overwrite a filesystem or pool found on it.
    #[serde(default)]
    pub force: bool,
}

/// `POST /v1/devices/remove`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRemove {
    /// The member: its path or its index.
    pub device: String,
    /// Bytes moved per second at most (0 or absent: no limit).
    #[serde(default)]
    pub rate: u64,
}

/// `POST /v1/devices/replace`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceReplace {
    /// The member to replace: its path or its index.
    pub old: String,
    /// The new device (block device or image file).
    pub new: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub rate: u64,
}

/// `POST /v1/devices/resize`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceResize {
    /// The member: its path or its index.
    pub device: String,
    /// The new size (`500G`, bytes, ...) or `max` (absent: `max`).
    #[serde(default)]
    pub size: Option<String>,
    /// Bytes moved per second at most while shrinking (0 or absent: no limit).
    #[serde(default)]
    pub rate: u64,
}

/// The answer to `POST /v1/devices/resize`: the new size of a grown member, or the
/// shrinking under way (the size stays the old one until it finishes).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Resized {
    pub member: u16,
    pub path: String,
    pub size_bytes: u64,
    pub evacuation: Option<Evacuation>,
}

/// The answer to `POST /v1/devices/add` and `replace`: the member that joined.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceAdded {
    pub index: u16,
    pub path: String,
    pub tier: String,
    /// The emptying of the replaced member, for a replace.
    pub evacuation: Option<Evacuation>,
}

/// Capacity of one tier.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TierUsage {
    pub tier: String,
    pub data_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
}

/// `GET /v1/status`. Fields missing from an older or newer serving process read as defaults,
/// so a CLI upgraded while a pool stays mounted still finds it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    /// The name the API knows the pool by: its name in aegisd's config, else its label.
    pub name: String,
    pub label: String,
    pub pool_uuid: String,
    pub mountpoint: String,
    /// How the kernel's requests reach the serving process: "io_uring" (per-CPU queues) or
    /// "/dev/fuse".
    pub fuse_transport: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub block_size: u32,
    pub members: Vec<MemberStatus>,
    pub tiers: Vec<TierUsage>,
    pub inodes: u64,
    pub commits: u64,
    pub last_commit_ms_ago: Option<u64>,
    pub checksum_errors: u64,
    /// Why the pool went read-only after a device or metadata failure; `None` while writable.
    pub read_only_cause: Option<String>,
    pub metadata_used_bytes: u64,
    pub metadata_capacity_bytes: u64,
    /// How many snapshots the pool has, and the data-area bytes only they hold.
    pub snapshots: u64,
    pub snapshot_bytes: u64,
    /// Data and metadata are encrypted (AES-256).
    pub encrypted: bool,
    pub space: SpaceSavings,
    /// The dedup table (dedup pools only).
    pub dedup: Option<DedupTable>,
}

/// What compression and dedup save across the pool's blocks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SpaceSavings {
    /// Content bytes of every block, each block once.
    pub logical_bytes: u64,
    /// Their stored bytes (compressed and encrypted, one copy).
    pub stored_bytes: u64,
    /// Content bytes times references: what the blocks hold for files.
    pub referenced_bytes: u64,
    /// `logical_bytes / stored_bytes`.
    pub compression_ratio: f64,
    /// `referenced_bytes / logical_bytes`.
    pub dedup_ratio: f64,
}

/// A dedup pool's dedup table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DedupTable {
    pub entries: u64,
    /// Most entries it takes; blocks written when it is full are stored without dedup.
    pub limit: u64,
    /// Metadata bytes its pages take.
    pub table_bytes: u64,
}

/// `GET /v1/du?path=P`: what a subtree holds (as of the last commit, which the call makes).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DiskUsage {
    pub path: String,
    pub files: u64,
    pub directories: u64,
    /// Sum of file sizes.
    pub apparent_bytes: u64,
    /// Content bytes in blocks (holes and all-zero blocks excluded).
    pub logical_bytes: u64,
    /// Bytes stored for them (compressed, encrypted; one copy).
    pub stored_bytes: u64,
    /// Data-area bytes taken (whole sectors, all copies).
    pub allocated_bytes: u64,
    pub compression_ratio: f64,
}

/// One inconsistency `fsck` found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FsckFinding {
    pub check: String,
    pub message: String,
    pub path: Option<String>,
    pub fixed: bool,
}

/// An `fsck` report, from the CLI (unmounted pool) or the serving process (mounted pool).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FsckReport {
    pub clean: bool,
    /// Checked from the serving process of a mounted pool.
    pub online: bool,
    pub inodes: u64,
    pub directories: u64,
    pub blocks: u64,
    pub blocks_verified: u64,
    pub findings: Vec<FsckFinding>,
}

impl FsckReport {
    pub fn new(report: &fs_core::fsck::Report, online: bool) -> Self {
        Self {
            clean: report.is_clean(),
            online,
            inodes: report.inodes,
            directories: report.directories,
            blocks: report.blocks,
            blocks_verified: report.blocks_verified,
            findings: report
                .findings
                .iter()
                .map(|f| FsckFinding {
                    check: f.check.to_owned(),
                    message: f.message.clone(),
                    path: f.path.clone(),
                    fixed: f.fixed,
                })
                .collect(),
        }
    }

    pub fn uncorrected(&self) -> usize {
        self.findings.iter().filter(|f| !f.fixed).count()
    }
}

/// A property's value on a path, and where it comes from (`local`: set on the path, or for a
/// file taken from its directory when it was created; `inherited`: set on an ancestor
/// directory; `pool`: the pool default; `default`: built in).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PropertyValue {
    pub name: String,
    pub value: String,
    pub source: String,
}

/// `PUT /v1/properties`: set `properties` (`name=value`) on `path` (from the pool's root).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SetProperties {
    pub path: String,
    pub properties: Vec<String>,
}

/// `POST /v1/scrub/start`: the read rate limit in bytes per second (0 or absent: none).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ScrubStart {
    pub rate_bytes_per_sec: u64,
}

/// A snapshot (`GET /v1/snapshots`, `POST /v1/snapshots`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Snapshot {
    pub name: String,
    /// When it was taken, seconds since the Unix epoch.
    pub created: i64,
    /// Data-area bytes of the blocks the tree mapped when it was taken.
    pub referenced_bytes: u64,
    /// Data-area bytes only this snapshot holds: what deleting it frees.
    pub unique_bytes: u64,
}

/// `POST /v1/snapshots`: the new snapshot's name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotCreate {
    pub name: String,
}

/// `DELETE /v1/snapshots/{name}`: what the deletion released.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotDeleted {
    pub name: String,
    pub released_bytes: u64,
}

/// `POST /v1/snapshots/{name}/rollback`: `force` also destroys newer snapshots.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RollbackRequest {
    pub force: bool,
}

/// What a rollback did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RollbackDone {
    pub name: String,
    /// Newer snapshots it destroyed.
    pub destroyed: Vec<String>,
}

/// One line of `GET /v1/snapshots/{name}/diff[?to=other]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotChange {
    /// `added`, `deleted`, `modified` or `renamed`.
    pub change: String,
    /// `file`, `directory`, `symlink` or `special`.
    pub kind: String,
    /// The path in the older tree (deleted, renamed) or the newer one.
    pub path: String,
    /// The new path of a renamed file.
    pub renamed_to: Option<String>,
}

/// Blocks and space of one tier, with how hot its blocks are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TierHeat {
    pub tier: String,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    /// Blocks whose first copy is on this tier.
    pub blocks: u64,
    /// Blocks by heat: hot (8 or more recent accesses), warm (0.5 to 8: about one access
    /// within the last half-life), cold (under 0.5).
    pub hot_blocks: u64,
    pub warm_blocks: u64,
    pub cold_blocks: u64,
}

/// One migration as the history keeps it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MigrationEntry {
    /// Seconds since the Unix epoch.
    pub started: i64,
    pub finished: i64,
    pub promoted_blocks: u64,
    pub promoted_bytes: u64,
    pub demoted_blocks: u64,
    pub demoted_bytes: u64,
    /// `finished`, `stopped at its limit`, `cancelled` or `failed`.
    pub outcome: String,
}

/// A migration's progress (the running one, or the last one this process ran).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MigrationProgress {
    /// Blocks and bytes planned and moved so far, and whether it is still running.
    #[serde(flatten)]
    pub counts: tiering::migrate::Progress,
    pub rate_limit_bytes_per_sec: u64,
    /// Why it stopped, once it has: `finished`, `stopped at its limit`, `cancelled`,
    /// `failed: …`.
    pub outcome: Option<String>,
}

/// `GET /v1/tier`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TierStatus {
    pub tiers: Vec<TierHeat>,
    /// The fast tier's watermarks, as fractions.
    pub low_watermark: f64,
    pub high_watermark: f64,
    pub migration: Option<MigrationProgress>,
    pub last_migration: Option<MigrationEntry>,
    /// When the next scheduled migration runs (seconds since the epoch): set under aegisd;
    /// `None` for a pool mounted with `aegis mount` or with `migration = "off"`.
    pub next_migration: Option<i64>,
    /// The pinned trees: each path whose `tier` is set and differs from its parent's.
    pub pins: Vec<Pin>,
}

/// A path pinned to a tier (and everything below it that has the same pin).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pin {
    pub path: String,
    /// `fast`, `slow`, or `auto` (set back to placement by heat below a pinned directory).
    pub tier: String,
}

/// `POST /v1/tier/migrate`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MigrateRequest {
    /// Only plan: report what would move.
    pub dry_run: bool,
    /// Move at most this many bytes (both ways together).
    pub limit_bytes: Option<u64>,
    /// Copy at most this many bytes a second.
    pub rate_bytes_per_sec: Option<u64>,
}

/// What a migration would do (`POST /v1/tier/migrate` with `dry_run`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MigrationPlan {
    pub promote_blocks: u64,
    pub promote_bytes: u64,
    pub demote_blocks: u64,
    pub demote_bytes: u64,
    pub fast_capacity_bytes: u64,
    pub fast_used_before: u64,
    pub fast_used_after: u64,
    /// Data pinned to the fast tier that does not fit there.
    pub pinned_unplaced_bytes: u64,
    /// Moves left for a later run by the byte limit.
    pub deferred_bytes: u64,
    /// The files with the most bytes moving.
    pub top_files: Vec<PlannedFile>,
}

/// A file in a [`MigrationPlan`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PlannedFile {
    /// Its path from the pool's root (or a note for blocks only snapshots hold).
    pub path: String,
    pub promote_bytes: u64,
    pub demote_bytes: u64,
}

/// `POST /v1/tier/pin`: pin `path` (and everything below it) to `tier` (`fast`, `slow`,
/// `auto`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PinRequest {
    pub path: String,
    pub tier: String,
}

/// What a pin changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PinDone {
    pub path: String,
    pub tier: String,
    /// Files and directories the pin was set on.
    pub entries: u64,
}

/// A scrub's progress and findings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ScrubStatus {
    /// `none` (never scrubbed), `scrubbing data`, `scrubbing snapshot data`, `scrubbing
    /// metadata`, `finished`, `cancelled`.
    pub state: String,
    pub running: bool,
    pub percent: f64,
    /// Seconds since the epoch.
    pub started: Option<i64>,
    pub finished: Option<i64>,
    pub blocks_total: u64,
    pub blocks_checked: u64,
    pub bytes_checked: u64,
    pub metadata_pages_total: u64,
    pub metadata_pages_checked: u64,
    /// Bytes per second while scrubbing, the milliseconds spent scrubbing (not counting time
    /// the pool was unmounted), and the estimated seconds left.
    pub rate_bytes_per_sec: u64,
    pub elapsed_ms: u64,
    pub eta_secs: Option<u64>,
    pub rate_limit_bytes_per_sec: u64,
    /// Copies found damaged or unreadable, of those rewritten, and blocks or pages with no
    /// intact copy.
    pub errors_found: u64,
    pub repaired: u64,
    pub unrecoverable: u64,
    /// Files with unrecoverable blocks: live paths, then `/.snapshots/<name>/<path>` for
    /// blocks only snapshots hold.
    pub damaged_paths: Vec<String>,
}

/// An error body: a machine-readable code (`bad_request`, `not_found`, `conflict`, ...) and a
/// message for the user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

/// One tier's I/O during one second (`GET /v1/stats/stream` events, `GET /v1/stats/history`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TierIo {
    pub tier: String,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ops: u64,
    pub write_ops: u64,
}

/// One pool's I/O during one second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolIo {
    pub pool: String,
    pub tiers: Vec<TierIo>,
}

/// A second of I/O across the daemon's pools: one event of the live stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IoSecond {
    /// Seconds since the epoch at the end of the second.
    pub time: i64,
    pub pools: Vec<PoolIo>,
}

/// A pool as `GET /v1/pools` lists it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolEntry {
    pub name: String,
    pub mounted: bool,
    /// Why the pool is not mounted.
    pub error: Option<String>,
    pub status: Option<Status>,
}

/// `GET /v1/daemon`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DaemonInfo {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub config: String,
    pub socket: String,
    pub pools: Vec<String>,
    pub alerts_firing: usize,
}

/// A job as `GET /v1/jobs` lists it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JobInfo {
    pub name: String,
    /// `snapshot`, `migration` or `scrub`.
    pub kind: String,
    pub pool: String,
    /// The schedule as written, or none for a job that runs only on request.
    pub schedule: Option<String>,
    /// The schedule as a cron expression.
    pub cron: Option<String>,
    /// Seconds since the epoch.
    pub next_run: Option<i64>,
    pub running: bool,
    pub last_run: Option<JobRun>,
}

/// `POST /v1/jobs/run`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunRequest {
    pub job: String,
}

/// The answer to `POST /v1/jobs/run`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunStarted {
    pub job: String,
    pub run: i64,
}

pub use crate::daemon::backups::BackupProgress;
pub use backup::run::Progress as BackupEngineProgress;
pub use backup::run::RunReport as BackupReport;
pub use backup::verify::VerifyReport;

/// A backup job as `GET /v1/backups` lists it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupInfo {
    pub name: String,
    pub pool: String,
    /// `rsync` or `rclone`.
    pub engine: String,
    /// The path inside the pool it copies.
    pub source: String,
    pub destination: String,
    /// `sync` or `copy`.
    pub mode: String,
    /// The schedule as written, or none for a backup that runs only on request.
    pub schedule: Option<String>,
    pub keep_versions: u32,
    /// Seconds since the epoch.
    pub next_run: Option<i64>,
    pub running: bool,
    /// What the running backup is doing.
    pub progress: Option<BackupProgress>,
    pub last_run: Option<JobRun>,
}

/// `POST /v1/backups/run`, `/v1/backups/verify` and `/v1/backups/cancel`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupRequest {
    pub name: String,
    /// `run` only: report what would transfer, change nothing.
    pub dry_run: bool,
}
