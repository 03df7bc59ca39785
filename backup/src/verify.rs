//! Verification: whether the destination (the newest version, for versioned jobs) holds
//! exactly what the source holds, checked without changing anything.

use serde::{Deserialize, Serialize};

use crate::job::Engine;
use crate::run::{BackupError, RunRequest};
use crate::{rclone, rsync};

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub identical: bool,
    /// One line per difference: `missing at destination: PATH`, `only at destination: PATH`,
    /// `differs: PATH`, `could not be compared: PATH`.
    pub differences: Vec<String>,
    /// Regular files compared, when the engine says.
    pub checked_files: Option<u64>,
}

/// Compares `request.source` with the job's destination: rsync by checksum in a dry run
/// (`--delete` for sync jobs and versions, so extra files count), rclone with `rclone check`
/// (one way for copy jobs). `request.dry_run` is ignored. An engine failure (e.g. an
/// unreachable remote) is a [`BackupError::Command`].
pub fn verify(request: &RunRequest) -> Result<VerifyReport, BackupError> {
    request.check()?;
    let report = match request.job.engine {
        Engine::Rsync => rsync::verify(request)?,
        Engine::Rclone => rclone::verify(request)?,
    };
    tracing::info!(
        job = %request.job.name,
        identical = report.identical,
        differences = report.differences.len(),
        "verified backup"
    );
    Ok(report)
}
