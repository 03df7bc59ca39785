//! The control API: HTTP/JSON over a Unix socket. Types shared by the server (the serving
//! process) and its clients (`aegis`, later `aegis-tui`), and a minimal client.
//!
//! Endpoints:
//! - `GET /v1/status` → [`Status`]
//! - `GET /v1/fsck` → [`FsckReport`]: a read-only check of the mounted pool's metadata
//! - `GET /v1/properties?path=P` → [`PropertyValue`]s of `P` (a path inside the pool, from its
//!   root, percent-encoded)
//! - `PUT /v1/properties` with [`SetProperties`] → the [`PropertyValue`]s after the change
//! - `POST /v1/errors/clear` → [`Status`] with every member's error counters reset
//! - `POST /v1/sync` → [`Status`] once everything written so far is durable (a commit)
//! - `POST /v1/scrub/start` with [`ScrubStart`] → [`ScrubStatus`] (409 if one is running)
//! - `GET /v1/scrub` → [`ScrubStatus`] of the running or last scrub
//! - `POST /v1/scrub/cancel` → [`ScrubStatus`]
//!
//! Errors are [`ApiError`] bodies: 400 for a bad request, 404 for a missing path, 409 when
//! the pool is read-only, 500 otherwise.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// Where control sockets live: `$AEGIS_RUN_DIR` or `/run/aegis`.
pub fn run_dir() -> PathBuf {
    std::env::var_os("AEGIS_RUN_DIR").map_or_else(|| PathBuf::from("/run/aegis"), PathBuf::from)
}

/// One member of a pool as the API reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberStatus {
    pub index: u16,
    pub tier: String,
    pub path: String,
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
    /// When the next migration runs (`None`: none is scheduled; the aegisd scheduler runs
    /// them weekly once it exists).
    pub next_migration: Option<i64>,
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

/// Sends one request and returns the status code and body.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    // Rollback and diff walk metadata proportional to the pool: allow them minutes.
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: aegisd\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw).context("response is not UTF-8")?;
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("malformed HTTP response from {}", socket.display());
    };
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("malformed status line from {}", socket.display()))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        bail!("unexpected chunked response from {}", socket.display());
    }
    Ok((code, body.to_owned()))
}

/// `GET` a JSON resource.
pub fn get<T: for<'de> Deserialize<'de>>(socket: &Path, path: &str) -> anyhow::Result<T> {
    call(socket, "GET", path, None::<&()>)
}

/// Sends `body` (as JSON, if any) with `method` and decodes the JSON answer; an error status
/// becomes an error carrying the server's message.
pub fn call<T: for<'de> Deserialize<'de>, B: Serialize>(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&B>,
) -> anyhow::Result<T> {
    let body = body.map(serde_json::to_string).transpose()?;
    let (code, answer) = request(socket, method, path, body.as_deref())?;
    if !(200..300).contains(&code) {
        let message = serde_json::from_str::<ApiError>(&answer).map_or(answer, |e| e.message);
        bail!("{message}");
    }
    serde_json::from_str(&answer).with_context(|| format!("{path}: malformed JSON"))
}

/// Finds the live pool whose mount holds `path`; returns its socket, its status and `path`
/// from the pool's root (`/` for the mountpoint itself).
pub fn pool_for_path(path: &Path) -> anyhow::Result<(PathBuf, Status, String)> {
    let full = std::fs::canonicalize(path)
        .with_context(|| format!("cannot resolve {}", path.display()))?;
    let (socket, status) = live_pools()
        .into_iter()
        .filter(|(_, status)| full.starts_with(&status.mountpoint))
        .max_by_key(|(_, status)| status.mountpoint.len())
        .with_context(|| {
            format!(
                "{} is not inside a mounted AegisFS pool (looked for control sockets in {})",
                full.display(),
                run_dir().display()
            )
        })?;
    let inside = full
        .strip_prefix(&status.mountpoint)
        .context("path outside its mount")?;
    let inside = format!("/{}", inside.display());
    Ok((socket, status, inside))
}

/// Every live pool's status, by asking each control socket in the run directory.
pub fn live_pools() -> Vec<(PathBuf, Status)> {
    let Ok(entries) = std::fs::read_dir(run_dir()) else {
        return Vec::new();
    };
    let mut pools = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "sock") {
            if let Ok(status) = get::<Status>(&path, "/v1/status") {
                pools.push((path, status));
            }
        }
    }
    pools
}

/// Finds the live pool mounted at `target` (a path) or labelled `target`.
pub fn find_pool(target: &str) -> anyhow::Result<(PathBuf, Status)> {
    let wanted = std::fs::canonicalize(target).ok();
    let mut found: Vec<(PathBuf, Status)> = live_pools()
        .into_iter()
        .filter(|(_, status)| {
            status.label == target
                || status.pool_uuid == target
                || wanted
                    .as_deref()
                    .is_some_and(|w| Path::new(&status.mountpoint) == w)
        })
        .collect();
    if found.len() > 1 {
        let mountpoints: Vec<&str> = found.iter().map(|(_, s)| s.mountpoint.as_str()).collect();
        bail!(
            "'{target}' names {} mounted pools ({}): give a mountpoint or pool UUID",
            found.len(),
            mountpoints.join(", ")
        );
    }
    found.pop().with_context(|| {
        format!(
            "no mounted AegisFS pool at or labelled '{target}' (looked for control sockets in {})",
            run_dir().display()
        )
    })
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
