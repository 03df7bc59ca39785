//! The crate's errors: the ways a planning request can be malformed ([`PlanError`]), and what
//! stops a migration on a live filesystem ([`MigrateError`]).
//!
//! Planning itself cannot fail; only its inputs can be inconsistent. Heats that are not finite
//! non-negative numbers are deliberately *not* an error (see the crate docs, "Heats").

/// Why [`plan`](crate::plan()) refused its inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The watermarks are not fractions with `0 <= low <= high <= 1`.
    #[error("watermarks must satisfy 0 <= low <= high <= 1, got low {low} and high {high}")]
    InvalidWatermarks { low: f64, high: f64 },
    /// The hysteresis factor is not a finite number of at least 1.
    #[error("hysteresis must be a finite factor of at least 1, got {0}")]
    InvalidHysteresis(f64),
    /// The minimum heat for promotion is not a finite number above 0.
    #[error("minimum promotion heat must be finite and above 0, got {0}")]
    InvalidMinPromoteHeat(f64),
    /// The fast tier's used bytes are fewer than its candidate blocks occupy, so the inputs
    /// were not taken from one consistent view of the pool.
    #[error(
        "fast tier reports {used} bytes used but its candidate blocks occupy {candidate_bytes}"
    )]
    UsedBelowCandidates { used: u64, candidate_bytes: u64 },
    /// A block id appears in more than one candidate.
    #[error("block {0} is listed more than once among the candidates")]
    DuplicateBlock(u64),
}

/// Why a migration could not be planned or did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    #[error("cannot plan the migration: {0}")]
    Plan(#[from] PlanError),
    #[error("the filesystem refused: {0}")]
    Fs(#[from] fs_core::FsError),
}
