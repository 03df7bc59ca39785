//! AegisFS backups: copies a directory (the daemon passes a snapshot's path) to a destination
//! with rsync or rclone, keeps dated versions, reports progress while the engine runs, maps
//! the engine's exit to an [`Outcome`] with a message for the user, and verifies a
//! destination against its source. The daemon owns everything around a run: parsing
//! `aegis.toml`, schedules, snapshots, and recording reports.
//!
//! - [`job`]: the `[[backup]]` and `[remotes.NAME]` config types and their validation.
//! - [`run`](mod@run): [`run()`] and its request, progress and report types.
//! - [`verify`](mod@verify): [`verify()`].
//!
//! Destination layouts with `keep_versions = N` (versions are named after
//! [`RunRequest::now`] in [`VERSION_FORMAT`], e.g. `2026-01-31T02-30-00`):
//! - rsync: `<destination>/<version>/` is a complete copy per run, unchanged files hard-linked
//!   to the previous version (`--link-dest`); `<destination>/latest` is a symlink to the
//!   newest; the oldest versions beyond N are deleted. This works for `host:path` too (rsync
//!   itself lists, prunes and links over the same remote shell; the remote rsync needs
//!   `--mkpath`, 3.2.3 or later). A failed or cancelled run's incomplete version is removed.
//! - rclone: `<destination>` holds the current files; files a run replaces or deletes move to
//!   `<destination>/.aegis-versions/<version>/` (`--backup-dir`); the oldest such directories
//!   beyond N are purged. `.aegis-versions` is excluded from copying, deleting and checking.
//!
//! Secrets: inline remotes reach rclone only as `RCLONE_CONFIG_<NAME>_<OPTION>` environment
//! variables of the rclone child; command lines never hold them, and no file is written.

pub mod job;
mod process;
mod rclone;
mod rsync;
pub mod run;
pub mod verify;

pub use job::{BackupJob, Engine, JobError, Mode, Remotes, RCLONE_VERSIONS_DIR};
pub use process::LOG_TAIL_LINES;
pub use rsync::LATEST;
pub use run::{run, BackupError, Outcome, Progress, RunReport, RunRequest, VERSION_FORMAT};
pub use verify::{verify, VerifyReport};
