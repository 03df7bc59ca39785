//! The command line of `aegis`: its clap definitions, and nothing that runs them. They live in
//! the library so that the packaging assets (man pages, shell completions) are generated from
//! the same definitions the binary parses; `src/main.rs`, `src/cli_daemon.rs` and
//! `src/cli_devices.rs` run them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser, Subcommand};
use fs_core::codec::crypt::KdfParams;
use fs_core::codec::Compression;

use crate::keys;
use crate::units::{parse_size, parse_watermarks};

#[derive(Parser)]
#[command(
    name = "aegis",
    version,
    about = "AegisFS: a tiered, checksummed storage pool"
)]
pub struct Cli {
    /// aegisd's control socket; only aegisd's pools are then reachable (default:
    /// /run/aegis/aegisd.sock, and the sockets of pools mounted with `aegis mount`).
    #[arg(long, global = true, env = "AEGIS_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Create a pool on a fast and a slow device (block devices or image files).
    Format {
        /// Fast-tier member (NVMe partition or image file).
        #[arg(long, required = true)]
        fast: Vec<PathBuf>,
        /// Create the fast image file with this size (e.g. 2G), sparse.
        #[arg(long, value_parser = parse_size)]
        fast_size: Option<u64>,
        /// Slow-tier member (HDD partition or image file).
        #[arg(long)]
        slow: Vec<PathBuf>,
        /// Create the slow image file with this size (e.g. 8G), sparse.
        #[arg(long, value_parser = parse_size)]
        slow_size: Option<u64>,
        /// Pool label (up to 64 bytes).
        #[arg(long, default_value = "")]
        label: String,
        /// Logical block size (power of two, 4K to 1M).
        #[arg(long, value_parser = parse_size, default_value = "128K")]
        block_size: u64,
        /// Copies of every data block by default: 1, or 2 (the second on the other device).
        /// Directories can override it with `aegis set DIR copies=N`.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
        copies: u8,
        /// Compression of new blocks by default: off, zstd (level 3) or zstd:1 to zstd:19.
        /// Directories can override it with `aegis set DIR compression=...`.
        #[arg(long, default_value = "off", value_parser = parse_compression)]
        compression: Compression,
        /// Encrypt data and metadata (AES-256); asks for a passphrase twice (or reads one line
        /// from stdin when it is not a terminal).
        #[arg(long)]
        encrypt: bool,
        /// Encrypt, with the key read from this file instead of a passphrase.
        #[arg(long, value_name = "PATH")]
        keyfile: Option<PathBuf>,
        /// Store identical blocks once (the dedup table lives in the metadata region).
        #[arg(long)]
        dedup: bool,
        #[command(flatten)]
        kdf: KdfArgs,
        /// Overwrite an existing filesystem or pool.
        #[arg(long)]
        force: bool,
        /// Use pread/pwrite instead of io_uring.
        #[arg(long)]
        no_uring: bool,
    },
    /// Mount a pool: give every member device, then the mountpoint.
    Mount {
        /// Member devices followed by the mountpoint.
        #[arg(required = true, num_args = 2..)]
        paths: Vec<PathBuf>,
        /// Stay attached and serve in this process (for systemd and debugging).
        #[arg(long)]
        foreground: bool,
        /// Use pread/pwrite instead of io_uring.
        #[arg(long)]
        no_uring: bool,
        /// Memory for verified block contents, e.g. 256M (default: an eighth of RAM, 64 MiB
        /// to 4 GiB).
        #[arg(long, value_parser = parse_size)]
        cache_size: Option<u64>,
        /// The fast tier's low and high watermarks in percent: new data goes to the fast tier
        /// below HIGH; a migration leaves it between the two.
        #[arg(long, value_name = "LOW:HIGH", default_value = "70:85", value_parser = parse_watermarks)]
        fast_watermarks: (f64, f64),
        /// How fast block heat fades: accesses count half after this long (e.g. 7d, 12h).
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        heat_half_life: Duration,
        #[command(flatten)]
        key: keys::KeyArgs,
        /// Internal: read the pool's key from stdin (the detached mount pipes it).
        #[arg(long, hide = true)]
        key_stdin: bool,
        /// Internal: print a READY line on stdout once mounted.
        #[arg(long, hide = true)]
        announce_ready: bool,
    },
    /// Flush and unmount a pool; the serving process exits.
    Umount {
        /// Mountpoint or pool label.
        target: String,
    },
    /// Show a member's superblock, the pool's members and, when known, usage.
    Info {
        /// A member device (give all members to see usage of an unmounted pool).
        #[arg(required = true)]
        devices: Vec<PathBuf>,
        #[command(flatten)]
        key: keys::KeyArgs,
        #[arg(long)]
        json: bool,
    },
    /// Check a pool's consistency, and with --repair fix what is safe to fix. A mounted pool
    /// is checked read-only by its serving process; --repair needs it unmounted. Exit status
    /// as e2fsck: 0 clean, 1 errors found and all fixed, 4 errors left uncorrected, 8 the
    /// check could not run.
    Fsck {
        /// Every member device of the pool.
        #[arg(required = true)]
        devices: Vec<PathBuf>,
        /// Fix what is safe to fix: leaked blocks, counts, stale entries, damaged metadata
        /// copies and superblock copies; unnamed inodes go to /lost+found.
        #[arg(long)]
        repair: bool,
        /// Also read every data block and verify its checksum (unmounted pools only).
        #[arg(long)]
        verify_data: bool,
        #[command(flatten)]
        key: keys::KeyArgs,
        #[arg(long)]
        json: bool,
    },
    /// Show what a directory tree holds: file sizes, content, stored bytes (after compression)
    /// and space taken.
    Du {
        /// A file or directory inside a mounted pool.
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Manage the key of an encrypted pool.
    Key {
        #[command(subcommand)]
        action: KeyCmd,
    },
    /// Show a mounted pool's members, tiers, usage, I/O and error counters (every live pool
    /// when no pool is named).
    Status {
        /// Mountpoint, pool name or label.
        target: Option<String>,
        /// Reset every member's read, write, checksum and repair counters first.
        #[arg(long)]
        clear_errors: bool,
        #[arg(long)]
        json: bool,
    },
    /// Make everything written to a mounted pool so far durable, now (`sync` and `syncfs`
    /// do not reach a FUSE filesystem; without this, data is durable within 5 seconds).
    Sync {
        /// Mountpoint or pool label.
        target: String,
    },
    /// Set properties on a file or directory of a mounted pool; what is created in a
    /// directory afterwards inherits them. Properties: copies=1|2, tier=fast|slow|auto,
    /// compression=off|zstd|zstd:N, snapdir=hidden|visible (the pool's root only).
    Set {
        /// A file or directory inside the mount.
        path: PathBuf,
        /// name=value, e.g. copies=2.
        #[arg(required = true)]
        properties: Vec<String>,
    },
    /// Show the properties of a file or directory of a mounted pool, and where each value
    /// comes from (local, pool default, built-in default).
    Get {
        /// A file or directory inside the mount.
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Verify every copy of every data block and metadata page of a mounted pool, online,
    /// rewriting damaged copies from intact ones. A scrub interrupted by an unmount or a
    /// crash resumes at the next mount.
    Scrub {
        #[command(subcommand)]
        action: ScrubCmd,
    },
    /// The devices of a mounted pool: add, remove, replace, resize; state, usage, errors and
    /// health of each.
    Device {
        #[command(subcommand)]
        action: DeviceCmd,
    },
    /// Tiers: what is hot, moving blocks between tiers, pinning paths to a tier.
    Tier {
        #[command(subcommand)]
        action: TierCmd,
    },
    /// Read-only, point-in-time copies of a mounted pool, browsable under
    /// <mountpoint>/.snapshots/<name>/, taken in constant time.
    Snapshot {
        #[command(subcommand)]
        action: SnapshotCmd,
    },
    /// aegisd's scheduled jobs: snapshots, tier migration, scrub.
    Jobs {
        #[command(subcommand)]
        action: JobsCmd,
    },
    /// What happened: jobs, mounts, errors, admin actions (aegisd).
    Events(EventsArgs),
    /// aegisd's hash-chained log of admin actions.
    Audit {
        #[command(subcommand)]
        action: AuditCmd,
    },
    /// Backups with rsync or rclone, each from a fresh snapshot (aegisd's `[[backup]]` jobs).
    Backup {
        #[command(subcommand)]
        action: BackupCmd,
    },
}

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Change the passphrase (or keyfile) of an unmounted encrypted pool: the master key is
    /// wrapped again, no data is rewritten. Asks for the current passphrase, then the new one
    /// twice (or reads them as two lines of stdin).
    Change {
        /// Every member device of the pool.
        #[arg(required = true)]
        devices: Vec<PathBuf>,
        /// The current key is in this file.
        #[arg(long, value_name = "PATH")]
        keyfile: Option<PathBuf>,
        /// The new key is in this file.
        #[arg(long, value_name = "PATH")]
        new_keyfile: Option<PathBuf>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
}

/// Argon2id costs of a new passphrase's key derivation.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct KdfArgs {
    /// Memory of the passphrase's key derivation in MiB (Argon2id).
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    kdf_memory: u32,
    /// Passes of the key derivation.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    kdf_passes: u32,
}

impl KdfArgs {
    /// The key derivation parameters these options ask for.
    pub fn params(self) -> KdfParams {
        KdfParams {
            memory_kib: self.kdf_memory * 1024,
            iterations: self.kdf_passes,
            parallelism: 1,
        }
    }
}

fn parse_compression(text: &str) -> Result<Compression, String> {
    text.parse()
}

#[derive(Subcommand)]
pub enum TierCmd {
    /// Per tier: capacity, used, blocks and how hot they are; the running and the last
    /// migration.
    Status {
        /// Mountpoint or pool label.
        target: String,
        #[arg(long)]
        json: bool,
    },
    /// Move hot blocks to the fast tier and cold ones to the slow tier now, so the fast tier
    /// ends between its watermarks (70-85 %); waits, printing progress (Ctrl-C leaves it
    /// running; `aegis tier cancel` stops it).
    Migrate {
        /// Mountpoint or pool label.
        target: String,
        /// Only show the plan: blocks and bytes each way, and the files moving most.
        #[arg(long)]
        dry_run: bool,
        /// Move at most this much (both ways together), e.g. 50G.
        #[arg(long, value_parser = parse_size)]
        limit: Option<u64>,
        /// Copy at most this many bytes a second, e.g. 200M.
        #[arg(long, value_parser = parse_size)]
        rate: Option<u64>,
        /// Start it and return at once.
        #[arg(long)]
        background: bool,
        #[arg(long)]
        json: bool,
    },
    /// Stop the running migration (what it moved stays moved).
    Cancel {
        /// Mountpoint or pool label.
        target: String,
    },
    /// Pin a file or directory (recursively, and what is created there later) to a tier:
    /// fast, slow, or auto (placed by heat again).
    Pin {
        /// A file or directory inside the mount.
        path: PathBuf,
        /// fast, slow or auto.
        tier: String,
    },
    /// The migrations run on the pool: when, what moved, how long, how they ended.
    History {
        /// Mountpoint or pool label.
        target: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum SnapshotCmd {
    /// Take a snapshot of the whole pool now.
    Create {
        /// Mountpoint or pool label.
        target: String,
        /// 1-255 bytes; not '.' or '..'; no '/' or control characters.
        name: String,
    },
    /// Every snapshot: name, when taken, bytes referenced, bytes only it holds (freed by
    /// deleting it).
    List {
        /// Mountpoint or pool label.
        target: String,
        #[arg(long)]
        json: bool,
    },
    /// What changed since a snapshot (or between two): added (+), deleted (-), modified (M)
    /// and renamed (R) paths.
    Diff {
        /// Mountpoint or pool label.
        target: String,
        /// The older snapshot.
        from: String,
        /// The newer snapshot (default: the live pool).
        to: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Make the live pool exactly what it was in a snapshot. Everything written since is
    /// lost. Refused while files of the pool are open, or newer snapshots exist.
    Rollback {
        /// Mountpoint or pool label.
        target: String,
        name: String,
        /// Also destroy the snapshots newer than this one.
        #[arg(long)]
        force: bool,
    },
    /// Delete a snapshot, releasing the space only it holds.
    Delete {
        /// Mountpoint or pool label.
        target: String,
        name: String,
    },
}

#[derive(Subcommand)]
pub enum ScrubCmd {
    /// Start a scrub in the background.
    Start {
        /// Mountpoint or pool label.
        target: String,
        /// Read at most this many bytes per second (e.g. 200M), so foreground I/O keeps
        /// priority.
        #[arg(long, value_parser = parse_size)]
        rate: Option<u64>,
        /// Wait for it to finish, printing progress.
        #[arg(long)]
        wait: bool,
    },
    /// Progress, rate, ETA, what was found and repaired, and the files that could not be.
    Status {
        /// Mountpoint or pool label.
        target: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop the running scrub.
    Cancel {
        /// Mountpoint or pool label.
        target: String,
    },
}

// The commands that talk to aegisd itself rather than to one pool (`src/cli_daemon.rs`).

#[derive(Subcommand)]
pub enum JobsCmd {
    /// Every job: its schedule, next run and last result.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Past runs, newest first: start, end, result, bytes, error.
    History {
        /// Only this job's runs.
        job: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Run a job now (it is recorded like a scheduled run).
    Run {
        job: String,
        /// Wait for the run to end and print its result.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Check that no entry of the admin audit log was changed, removed or reordered.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// The latest admin actions: who, when, what, result.
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

/// What `aegis events` shows.
#[derive(clap::Args)]
pub struct EventsArgs {
    /// Keep printing events as they happen.
    #[arg(long, short)]
    pub follow: bool,
    /// Only events at least this serious: info, warning, error.
    #[arg(long)]
    pub level: Option<String>,
    /// Only events of this kind (daemon, pool, admin, snapshot, migration, scrub, schedule).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only events of this pool.
    #[arg(long)]
    pub pool: Option<String>,
    /// How many of the latest events to show first.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum BackupCmd {
    /// Every backup job: engine, source, destination, schedule, last result.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One backup (or all): running now with its progress, next run, last result.
    Status {
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Past runs, newest first: start, duration, bytes, files, result.
    History {
        name: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Run a backup now (from a fresh snapshot) and follow its progress.
    Run {
        name: String,
        /// Only show what would transfer; change nothing at the destination.
        #[arg(long)]
        dry_run: bool,
        /// Start it and return at once.
        #[arg(long, conflicts_with = "dry_run")]
        detach: bool,
        /// Show the engine's last output lines when the run ends.
        #[arg(long)]
        log: bool,
    },
    /// Compare the destination with the snapshot the last completed run copied.
    Verify {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop a running backup (its version is discarded).
    Cancel { name: String },
}

// The members of a mounted pool (`src/cli_devices.rs`).

#[derive(Subcommand)]
pub enum DeviceCmd {
    /// Each member: state, size, used, errors; the removal under way; the files a degraded
    /// pool cannot read.
    Status {
        /// Mountpoint or pool label.
        target: String,
        #[arg(long)]
        json: bool,
    },
    /// Add a device to a tier of a mounted pool; new blocks may go to it at once.
    #[command(group(ArgGroup::new("tier").required(true).args(["fast", "slow"])))]
    Add {
        /// Mountpoint or pool label.
        target: String,
        /// The device (or image file) joins the fast tier.
        #[arg(long)]
        fast: Option<PathBuf>,
        /// The device (or image file) joins the slow tier.
        #[arg(long)]
        slow: Option<PathBuf>,
        /// Create the image file with this size (e.g. 8G), sparse.
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
        /// Overwrite a filesystem or pool found on the device.
        #[arg(long)]
        force: bool,
    },
    /// Remove a member: its blocks move to the other members first (online), then it leaves
    /// the pool and its superblocks are wiped.
    Remove {
        /// Mountpoint or pool label.
        target: String,
        /// The member: its path or its index.
        device: String,
        /// Move at most this many bytes per second (e.g. 100M), so foreground I/O keeps
        /// priority.
        #[arg(long, value_parser = parse_size)]
        rate: Option<u64>,
        /// Return at once; `aegis device status` shows the progress.
        #[arg(long)]
        background: bool,
    },
    /// Replace a member with a new device: the new one joins its tier (with its metadata copy,
    /// if it held one), the old one's blocks are copied over (from their second copy where
    /// the old device fails), then the old one leaves.
    Replace {
        /// Mountpoint or pool label.
        target: String,
        /// The member to replace: its path or its index.
        old: String,
        /// The new device (or image file).
        new: PathBuf,
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
        #[arg(long)]
        force: bool,
        #[arg(long, value_parser = parse_size)]
        rate: Option<u64>,
        #[arg(long)]
        background: bool,
    },
    /// Stop the removal or replacement under way; the member takes new blocks again.
    Cancel {
        /// Mountpoint or pool label.
        target: String,
    },
    /// Grow a member into its grown device (or an image file to SIZE), or shrink it: what
    /// lies past the new end moves first (online), then the member takes the new size (an
    /// image file is truncated; shrink a partition yourself afterwards).
    Resize {
        /// Mountpoint or pool label.
        target: String,
        /// The member: its path or its index.
        device: String,
        /// The new size (e.g. 500G), or `max`: the whole device.
        #[arg(default_value = "max")]
        size: String,
        /// While shrinking, move at most this many bytes per second.
        #[arg(long, value_parser = parse_size)]
        rate: Option<u64>,
        #[arg(long)]
        background: bool,
    },
}
