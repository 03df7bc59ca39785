//! The planner's output: a [`Plan`], its ordered [`Move`]s, and the reports drawn from it
//! for `aegis tier migrate --dry-run` ([`PlanSummary`], [`FileMoves`]).

use std::cmp::Reverse;
use std::collections::HashMap;

use serde::Serialize;

use crate::policy::Watermarks;

/// Which way a block moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Slow tier to fast tier.
    Promote,
    /// Fast tier to slow tier.
    Demote,
}

/// Why the planner moves a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// The block is pinned to the tier it moves to.
    Pin,
    /// The fast tier was above its high or below its low watermark.
    Watermark,
    /// A hot slow block and a cold fast block trade places (hysteresis exceeded).
    Swap,
}

/// One block changing tier.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Move {
    pub block: u64,
    /// A live file the block belongs to; `None` for a block only snapshots hold.
    pub inode: Option<u64>,
    pub bytes: u64,
    /// The heat the decision used (an invalid input heat shows as 0).
    pub heat: f64,
    pub direction: Direction,
    pub reason: Reason,
}

/// What to move, in the order to move it, and the fast tier's level before and after.
///
/// Executing `moves` front to back keeps the fast tier at or below
/// `max(watermarks.high, pinned level)` after every promotion (the crate docs, "Order of
/// moves"), and any prefix of `moves` is safe to execute on its own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Every move, in execution order; a block appears at most once.
    pub moves: Vec<Move>,
    pub promote_blocks: u64,
    pub promote_bytes: u64,
    pub demote_blocks: u64,
    pub demote_bytes: u64,
    pub fast_capacity: u64,
    pub fast_used_before: u64,
    /// The fast tier's used bytes once `moves` have all been executed.
    pub fast_used_after: u64,
    pub watermarks: Watermarks,
    /// Blocks pinned fast that stay on the slow tier because the fast tier cannot hold them.
    pub pinned_unplaced_blocks: u64,
    pub pinned_unplaced_bytes: u64,
    /// Moves the byte limit left out (they would be next).
    pub deferred_blocks: u64,
    pub deferred_bytes: u64,
    /// Candidates whose heat was not a finite non-negative number, planned as heat 0.
    pub invalid_heats: u64,
}

impl Plan {
    /// Whether the plan moves nothing.
    pub fn is_empty(&self) -> bool {
        self.moves.is_empty()
    }

    /// The promotions, in execution order.
    pub fn promotions(&self) -> impl Iterator<Item = &Move> {
        self.moves_towards(Direction::Promote)
    }

    /// The demotions, in execution order.
    pub fn demotions(&self) -> impl Iterator<Item = &Move> {
        self.moves_towards(Direction::Demote)
    }

    fn moves_towards(&self, direction: Direction) -> impl Iterator<Item = &Move> {
        self.moves
            .iter()
            .filter(move |one| one.direction == direction)
    }

    /// The `count` files with the most bytes moving (promoted plus demoted), most first, ties
    /// by inode number. Blocks only snapshots hold count together as one entry, inode `None`.
    pub fn top_files(&self, count: usize) -> Vec<FileMoves> {
        let mut by_inode: HashMap<Option<u64>, FileMoves> = HashMap::new();
        for one in &self.moves {
            let file = by_inode.entry(one.inode).or_insert(FileMoves {
                inode: one.inode,
                promote_blocks: 0,
                promote_bytes: 0,
                demote_blocks: 0,
                demote_bytes: 0,
            });
            match one.direction {
                Direction::Promote => {
                    file.promote_blocks += 1;
                    file.promote_bytes = file.promote_bytes.saturating_add(one.bytes);
                }
                Direction::Demote => {
                    file.demote_blocks += 1;
                    file.demote_bytes = file.demote_bytes.saturating_add(one.bytes);
                }
            }
        }
        let mut files: Vec<FileMoves> = by_inode.into_values().collect();
        let most_moved_first = |file: &FileMoves| (Reverse(file.moved_bytes()), file.inode);
        if count < files.len() {
            files.select_nth_unstable_by_key(count, most_moved_first);
            files.truncate(count);
        }
        files.sort_unstable_by_key(most_moved_first);
        files
    }

    /// The totals and the `top_files` files moving most, without the per-block moves: small
    /// enough to print or send as JSON whatever the plan's size.
    pub fn summary(&self, top_files: usize) -> PlanSummary {
        PlanSummary {
            promote_blocks: self.promote_blocks,
            promote_bytes: self.promote_bytes,
            demote_blocks: self.demote_blocks,
            demote_bytes: self.demote_bytes,
            fast_capacity: self.fast_capacity,
            fast_used_before: self.fast_used_before,
            fast_used_after: self.fast_used_after,
            watermarks: self.watermarks,
            pinned_unplaced_blocks: self.pinned_unplaced_blocks,
            pinned_unplaced_bytes: self.pinned_unplaced_bytes,
            deferred_blocks: self.deferred_blocks,
            deferred_bytes: self.deferred_bytes,
            invalid_heats: self.invalid_heats,
            top_files: self.top_files(top_files),
        }
    }
}

/// The bytes and blocks one file has moving in a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FileMoves {
    /// The file; `None` gathers the blocks only snapshots hold.
    pub inode: Option<u64>,
    pub promote_blocks: u64,
    pub promote_bytes: u64,
    pub demote_blocks: u64,
    pub demote_bytes: u64,
}

impl FileMoves {
    /// Promoted plus demoted bytes.
    pub fn moved_bytes(&self) -> u64 {
        self.promote_bytes.saturating_add(self.demote_bytes)
    }
}

/// A [`Plan`] without its moves: the fields of the same names, and the files moving most.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanSummary {
    pub promote_blocks: u64,
    pub promote_bytes: u64,
    pub demote_blocks: u64,
    pub demote_bytes: u64,
    pub fast_capacity: u64,
    pub fast_used_before: u64,
    pub fast_used_after: u64,
    pub watermarks: Watermarks,
    pub pinned_unplaced_blocks: u64,
    pub pinned_unplaced_bytes: u64,
    pub deferred_blocks: u64,
    pub deferred_bytes: u64,
    pub invalid_heats: u64,
    pub top_files: Vec<FileMoves>,
}
