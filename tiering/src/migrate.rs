//! Running a migration on a live filesystem: the plan from fs-core's view of every block
//! ([`plan_for`]), its execution in order through `Filesystem::relocate` in small batches,
//! each committed before the next so room freed by demotions is there for the promotions after
//! them ([`execute`]), throttled to a byte rate, cancellable at any batch, and the record of
//! what it did kept in the pool's history.
//!
//! A migration holds no lock of its own between batches and the filesystem holds its state
//! lock only to list a batch and to swap its pointers, so foreground I/O waits at most for one
//! batch's metadata (at most [`BATCH_BLOCKS`] blocks). An interrupted migration (cancel, crash,
//! unmount) leaves every block on one tier or the other, never both or neither; planning again
//! continues where it stopped, since the blocks it moved are where the plan wants them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fs_core::fs::tier::BlockPlacement;
use fs_core::fs::Filesystem;
use fs_core::meta::records::{MigrationOutcome, MigrationRecord, Timestamp};
use fs_core::types::Tier;
use serde::{Deserialize, Serialize};

use crate::candidate::{Candidate, Pin, TierSpace};
use crate::error::MigrateError;
use crate::output::{Direction, Plan};
use crate::policy::Policy;

/// Blocks relocated (and committed) together.
pub const BATCH_BLOCKS: usize = 64;

/// Where a running migration stands.
///
/// Bytes are bytes copied from one tier to the other, as in the plan: a `copies=2` block with
/// a copy on each tier moves by swapping which copy comes first, and counts as a block only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    pub planned_blocks: u64,
    pub planned_bytes: u64,
    pub promoted_blocks: u64,
    pub promoted_bytes: u64,
    pub demoted_blocks: u64,
    pub demoted_bytes: u64,
    /// Blocks the plan named that stayed where they were (freed or changed meanwhile, no
    /// room, unreadable).
    pub skipped_blocks: u64,
    pub elapsed_ms: u64,
    pub running: bool,
}

impl Progress {
    /// Bytes moved so far, both ways.
    pub fn moved_bytes(&self) -> u64 {
        self.promoted_bytes + self.demoted_bytes
    }
}

/// The candidates and the fast tier's space as fs-core sees them now (after a commit, so the
/// last commit is what is live).
///
/// A candidate's bytes are what moving it changes on the fast tier. That is its first copy's
/// size, except for a block with a copy on each tier (`copies=2`): moving it only swaps which
/// copy comes first, so it counts for nothing, and its fast copy stays in the tier's level
/// whichever copy comes first. Counting it at its size made plans demote such blocks to make
/// room that never came free (and a second plan demote more).
pub fn candidates(fs: &Filesystem) -> Result<(TierSpace, Vec<Candidate>), MigrateError> {
    fs.commit()?;
    let placements = fs.block_placements()?;
    let status = fs.status();
    let (capacity, used) = status
        .members
        .iter()
        .filter(|m| m.tier == Tier::Fast)
        .fold((0, 0), |(c, u), m| {
            (c + m.data_bytes, u + (m.data_bytes - m.free_bytes))
        });
    let candidates: Vec<Candidate> = placements.iter().map(candidate).collect();
    let on_fast: u64 = candidates
        .iter()
        .filter(|c| c.tier == Tier::Fast)
        .map(|c| c.bytes)
        .sum();
    Ok((
        TierSpace {
            capacity,
            used: used.max(on_fast),
        },
        candidates,
    ))
}

fn candidate(placement: &BlockPlacement) -> Candidate {
    Candidate {
        block: placement.block,
        inode: placement.inode,
        tier: placement.tier,
        bytes: if placement
            .mirror
            .is_some_and(|mirror| mirror != placement.tier)
        {
            0
        } else {
            placement.bytes
        },
        heat: placement.heat,
        pin: Pin::from(placement.pin),
    }
}

/// The plan for the filesystem as it is now.
pub fn plan_for(
    fs: &Filesystem,
    policy: &Policy,
    limit: Option<u64>,
) -> Result<Plan, MigrateError> {
    let (fast, candidates) = candidates(fs)?;
    Ok(crate::plan(fast, &candidates, policy, limit)?)
}

/// Executes `plan` in order, at most `rate` bytes a second (`None`: as fast as the devices
/// go), until done or `cancel` is set; updates `progress` after every batch and stores the
/// outcome in the pool's migration history.
pub fn execute(
    fs: &Filesystem,
    plan: &Plan,
    rate: Option<u64>,
    cancel: &AtomicBool,
    progress: &Mutex<Progress>,
) -> Result<MigrationRecord, MigrateError> {
    let started = Timestamp::now();
    let clock = Instant::now();
    update(progress, |p| {
        *p = Progress {
            planned_blocks: plan.moves.len() as u64,
            planned_bytes: plan.promote_bytes + plan.demote_bytes,
            running: true,
            ..Progress::default()
        };
    });
    let mut outcome = if plan.deferred_blocks > 0 {
        MigrationOutcome::Limited
    } else {
        MigrationOutcome::Finished
    };
    let mut failure = None;
    let mut moved_bytes = 0u64;
    for batch in batches(plan) {
        if cancel.load(Ordering::Relaxed) {
            outcome = MigrationOutcome::Cancelled;
            break;
        }
        let direction = batch[0].direction;
        let tier = match direction {
            Direction::Promote => Tier::Fast,
            Direction::Demote => Tier::Slow,
        };
        let ids: Vec<u64> = batch.iter().map(|m| m.block).collect();
        let done = fs.relocate(&ids, tier).and_then(|done| {
            // Commit, so the sectors the batch freed are free for the next.
            fs.commit()?;
            Ok(done)
        });
        let done = match done {
            Ok(done) => done,
            Err(err) => {
                outcome = MigrationOutcome::Failed;
                failure = Some(err);
                break;
            }
        };
        let bytes_moved = done.bytes_copied;
        moved_bytes += bytes_moved;
        update(progress, |p| {
            match direction {
                Direction::Promote => {
                    p.promoted_blocks += done.moved;
                    p.promoted_bytes += bytes_moved;
                }
                Direction::Demote => {
                    p.demoted_blocks += done.moved;
                    p.demoted_bytes += bytes_moved;
                }
            }
            p.skipped_blocks += done.skipped;
            p.elapsed_ms = elapsed_ms(clock);
        });
        if let Some(rate) = rate.filter(|r| *r > 0) {
            // Sleep until the bytes moved so far fit the rate.
            #[allow(clippy::cast_precision_loss)]
            let due = Duration::from_secs_f64(moved_bytes as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(clock.elapsed()) {
                sleep_unless_cancelled(wait, cancel);
            }
        }
    }
    let finished = lock(progress).clone();
    update(progress, |p| {
        p.running = false;
        p.elapsed_ms = elapsed_ms(clock);
    });
    let record = MigrationRecord {
        started,
        finished: Timestamp::now(),
        promoted_blocks: finished.promoted_blocks,
        promoted_bytes: finished.promoted_bytes,
        demoted_blocks: finished.demoted_blocks,
        demoted_bytes: finished.demoted_bytes,
        outcome,
    };
    // The history is kept even when the migration failed (unless the pool cannot take it).
    let stored = fs.record_migration(&record);
    if let Some(err) = failure {
        return Err(err.into());
    }
    stored?;
    Ok(record)
}

/// The plan's moves in order, cut into batches of one direction.
fn batches(plan: &Plan) -> impl Iterator<Item = &[crate::output::Move]> {
    plan.moves
        .chunk_by(|a, b| a.direction == b.direction)
        .flat_map(|run| run.chunks(BATCH_BLOCKS))
}

fn sleep_unless_cancelled(wait: Duration, cancel: &AtomicBool) {
    let until = Instant::now() + wait;
    while !cancel.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

fn elapsed_ms(clock: Instant) -> u64 {
    u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn lock(progress: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    progress
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn update(progress: &Mutex<Progress>, change: impl FnOnce(&mut Progress)) {
    change(&mut lock(progress));
}
