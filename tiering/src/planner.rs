//! The planning algorithm behind [`plan`]: pins first, then the watermark corrections and the
//! hysteresis swaps over the unpinned blocks, then the ordering of the moves and the byte
//! limit. The crate docs state the policy; this module is how it is computed.
//!
//! Unpinned blocks are sorted once, hottest first (of equal heats, the lower block id first),
//! and every later phase is a linear sweep over that order with cursors that only move one
//! way, so planning costs one sort plus O(n). The phases edit a tentative placement (one flag
//! per block) rather than a list of moves: a block's move is the difference between where it
//! starts and where it ends, so no block can be moved twice or both ways.

use std::cmp::Reverse;

use fs_core::types::Tier;

use crate::candidate::{Candidate, Pin, TierSpace};
use crate::error::PlanError;
use crate::output::{Direction, Move, Plan, Reason};
use crate::policy::{Policy, Watermarks};

/// Plans a migration of the fast tier described by `fast`, over `candidates`, under `policy`,
/// moving at most `limit` bytes (promoted plus demoted) when a limit is given.
///
/// Pure: the same inputs, in any order, give the same plan. See the crate docs for the policy.
pub fn plan(
    fast: TierSpace,
    candidates: &[Candidate],
    policy: &Policy,
    limit: Option<u64>,
) -> Result<Plan, PlanError> {
    policy.validate()?;
    reject_duplicate_blocks(candidates)?;
    let watermarks = policy.watermarks(fast.capacity);
    let groups = Groups::new(candidates);
    let not_candidates = fast.used.checked_sub(groups.fast_candidate_bytes).ok_or(
        PlanError::UsedBelowCandidates {
            used: fast.used,
            candidate_bytes: groups.fast_candidate_bytes,
        },
    )?;

    // Pins. Blocks pinned slow leave the fast tier; blocks pinned fast join it, hottest first,
    // for as long as the fast tier's capacity (not its high watermark) holds them, all
    // unpinned data on it being demoted if need be.
    let mut pinned_level = not_candidates.saturating_add(groups.pinned_fast_resident_bytes);
    let mut pinned_promotions = Vec::new();
    let mut pinned_unplaced_blocks = 0;
    let mut pinned_unplaced_bytes = 0u64;
    for ranked in &groups.pinned_to_promote {
        let fits = pinned_level
            .checked_add(ranked.bytes)
            .is_some_and(|level| level <= fast.capacity);
        if fits {
            pinned_level += ranked.bytes;
            pinned_promotions.push(ranked.to_move(Direction::Promote, Reason::Pin));
        } else {
            pinned_unplaced_blocks += 1;
            pinned_unplaced_bytes = pinned_unplaced_bytes.saturating_add(ranked.bytes);
        }
    }
    let pinned_demotions = groups
        .pinned_to_demote
        .iter()
        .map(|ranked| ranked.to_move(Direction::Demote, Reason::Pin));

    // Unpinned blocks: watermark corrections, then hysteresis swaps.
    let mut placement = Placement::new(groups.unpinned, pinned_level, watermarks, policy);
    placement.lower_to_target();
    placement.fill_to_target();
    placement.swap_hot_for_cold();
    let (unpinned_promotions, unpinned_demotions) = placement.into_moves();

    // Order, then the limit.
    let ceiling = watermarks.high.max(pinned_level);
    let ordered = order_moves(
        fast.used,
        ceiling,
        pinned_demotions,
        pinned_promotions.into_iter().chain(unpinned_promotions),
        unpinned_demotions,
    );
    let (moves, deferred) = ordered.truncate_to(limit);

    let mut plan = Plan {
        moves: Vec::new(),
        promote_blocks: 0,
        promote_bytes: 0,
        demote_blocks: 0,
        demote_bytes: 0,
        fast_capacity: fast.capacity,
        fast_used_before: fast.used,
        fast_used_after: fast.used,
        watermarks,
        pinned_unplaced_blocks,
        pinned_unplaced_bytes,
        deferred_blocks: deferred.len() as u64,
        deferred_bytes: deferred
            .iter()
            .map(|one| one.bytes)
            .fold(0, u64::saturating_add),
        invalid_heats: groups.invalid_heats,
    };
    for one in &moves {
        match one.direction {
            Direction::Promote => {
                plan.promote_blocks += 1;
                plan.promote_bytes = plan.promote_bytes.saturating_add(one.bytes);
                plan.fast_used_after = plan.fast_used_after.saturating_add(one.bytes);
            }
            Direction::Demote => {
                plan.demote_blocks += 1;
                plan.demote_bytes = plan.demote_bytes.saturating_add(one.bytes);
                plan.fast_used_after = plan.fast_used_after.saturating_sub(one.bytes);
            }
        }
    }
    plan.moves = moves;
    Ok(plan)
}

fn reject_duplicate_blocks(candidates: &[Candidate]) -> Result<(), PlanError> {
    let mut blocks: Vec<u64> = candidates.iter().map(|candidate| candidate.block).collect();
    blocks.sort_unstable();
    match blocks.windows(2).find(|pair| pair[0] == pair[1]) {
        Some(pair) => Err(PlanError::DuplicateBlock(pair[0])),
        None => Ok(()),
    }
}

/// A candidate as the sorts and sweeps see it: its valid heat, and a copy of the fields the
/// planner reads, so the sweeps over the sorted order never jump around the input (at ten
/// million candidates, those cache misses cost more than the sort).
#[derive(Debug, Clone, Copy)]
struct Ranked {
    heat: f64,
    block: u64,
    inode: Option<u64>,
    bytes: u64,
    started_fast: bool,
}

impl Ranked {
    fn new(candidate: &Candidate) -> Self {
        Self {
            heat: valid_heat(candidate.heat),
            block: candidate.block,
            inode: candidate.inode,
            bytes: candidate.bytes,
            started_fast: candidate.tier == Tier::Fast,
        }
    }

    /// Sort key, hottest first; of equal heats, the lower block id counts as hotter. For
    /// non-negative finite floats the bit pattern orders like the value, so the key is two
    /// integers.
    fn hottest_first(&self) -> (Reverse<u64>, u64) {
        (Reverse(self.heat.to_bits()), self.block)
    }

    /// The exact reverse of [`Ranked::hottest_first`].
    fn coldest_first(&self) -> (u64, Reverse<u64>) {
        (self.heat.to_bits(), Reverse(self.block))
    }

    fn to_move(self, direction: Direction, reason: Reason) -> Move {
        Move {
            block: self.block,
            inode: self.inode,
            bytes: self.bytes,
            heat: self.heat,
            direction,
            reason,
        }
    }
}

/// The heat to plan with: the input if it is a finite number above 0, else 0 (which also
/// turns -0.0 into +0.0, as the bit-pattern sort keys need).
fn valid_heat(heat: f64) -> f64 {
    if heat.is_finite() && heat > 0.0 {
        heat
    } else {
        0.0
    }
}

fn is_valid_heat(heat: f64) -> bool {
    heat.is_finite() && heat >= 0.0
}

/// The candidates split by what the planner may do with them, each group in the order it is
/// considered.
struct Groups {
    /// Unpinned blocks, hottest first.
    unpinned: Vec<Ranked>,
    /// Blocks pinned fast that are on the slow tier, hottest first.
    pinned_to_promote: Vec<Ranked>,
    /// Blocks pinned slow that are on the fast tier, coldest first.
    pinned_to_demote: Vec<Ranked>,
    /// Bytes of every candidate on the fast tier.
    fast_candidate_bytes: u64,
    /// Bytes of the blocks pinned fast that are on the fast tier already.
    pinned_fast_resident_bytes: u64,
    invalid_heats: u64,
}

impl Groups {
    fn new(candidates: &[Candidate]) -> Self {
        let mut groups = Self {
            unpinned: Vec::with_capacity(candidates.len()),
            pinned_to_promote: Vec::new(),
            pinned_to_demote: Vec::new(),
            fast_candidate_bytes: 0,
            pinned_fast_resident_bytes: 0,
            invalid_heats: 0,
        };
        for candidate in candidates {
            let ranked = Ranked::new(candidate);
            if !is_valid_heat(candidate.heat) {
                groups.invalid_heats += 1;
            }
            if candidate.tier == Tier::Fast {
                groups.fast_candidate_bytes =
                    groups.fast_candidate_bytes.saturating_add(candidate.bytes);
            }
            match (candidate.pin, candidate.tier) {
                (Pin::Auto, _) => groups.unpinned.push(ranked),
                (Pin::Fast, Tier::Slow) => groups.pinned_to_promote.push(ranked),
                (Pin::Fast, Tier::Fast) => {
                    groups.pinned_fast_resident_bytes = groups
                        .pinned_fast_resident_bytes
                        .saturating_add(candidate.bytes);
                }
                (Pin::Slow, Tier::Fast) => groups.pinned_to_demote.push(ranked),
                (Pin::Slow, Tier::Slow) => {}
            }
        }
        groups.unpinned.sort_unstable_by_key(Ranked::hottest_first);
        groups
            .pinned_to_promote
            .sort_unstable_by_key(Ranked::hottest_first);
        groups
            .pinned_to_demote
            .sort_unstable_by_key(Ranked::coldest_first);
        groups
    }
}

/// The tentative tier of every unpinned block, by rank (0 = hottest), and the fast tier's
/// level it implies.
struct Placement {
    ranked: Vec<Ranked>,
    on_fast: Vec<bool>,
    /// Why each block was last flipped; meaningful only for blocks that end on the tier they
    /// did not start on.
    last_reason: Vec<Reason>,
    /// Fast tier bytes in use under this placement.
    used: u64,
    watermarks: Watermarks,
    hysteresis: f64,
    min_promote_heat: f64,
}

impl Placement {
    fn new(
        ranked: Vec<Ranked>,
        pinned_level: u64,
        watermarks: Watermarks,
        policy: &Policy,
    ) -> Self {
        let on_fast: Vec<bool> = ranked.iter().map(|one| one.started_fast).collect();
        let used = ranked
            .iter()
            .filter(|one| one.started_fast)
            .map(|one| one.bytes)
            .fold(pinned_level, u64::saturating_add);
        Self {
            last_reason: vec![Reason::Watermark; ranked.len()],
            on_fast,
            ranked,
            used,
            watermarks,
            hysteresis: policy.hysteresis,
            min_promote_heat: policy.min_promote_heat,
        }
    }

    fn bytes(&self, rank: usize) -> u64 {
        self.ranked[rank].bytes
    }

    fn heat(&self, rank: usize) -> f64 {
        self.ranked[rank].heat
    }

    fn hot_enough_to_promote(&self, rank: usize) -> bool {
        self.heat(rank) >= self.min_promote_heat
    }

    fn put(&mut self, rank: usize, on_fast: bool, reason: Reason) {
        let bytes = self.bytes(rank);
        self.used = if on_fast {
            self.used.saturating_add(bytes)
        } else {
            self.used.saturating_sub(bytes)
        };
        self.on_fast[rank] = on_fast;
        self.last_reason[rank] = reason;
    }

    /// Above the high watermark: demote the coldest blocks until the level is at or below the
    /// target (or no unpinned block is left on the fast tier).
    fn lower_to_target(&mut self) {
        if self.used <= self.watermarks.high {
            return;
        }
        for rank in (0..self.ranked.len()).rev() {
            if self.used <= self.watermarks.target {
                break;
            }
            if self.on_fast[rank] {
                self.put(rank, false, Reason::Watermark);
            }
        }
    }

    /// Below the low watermark: promote the hottest blocks hot enough to promote until the
    /// level reaches the target, skipping any that would take it above the high watermark.
    fn fill_to_target(&mut self) {
        if self.used >= self.watermarks.low {
            return;
        }
        for rank in 0..self.ranked.len() {
            if self.used >= self.watermarks.target || !self.hot_enough_to_promote(rank) {
                break;
            }
            let fits = self
                .used
                .checked_add(self.bytes(rank))
                .is_some_and(|level| level <= self.watermarks.high);
            if !self.on_fast[rank] && fits {
                self.put(rank, true, Reason::Watermark);
            }
        }
    }

    /// The hottest block at rank `from` or later that is off the fast tier and hot enough to
    /// promote.
    fn next_promotable(&self, from: usize) -> Option<usize> {
        (from..self.ranked.len())
            .take_while(|&rank| self.hot_enough_to_promote(rank))
            .find(|&rank| !self.on_fast[rank])
    }

    /// The coldest block ranked before `before` that is on the fast tier.
    fn prev_demotable(&self, before: usize) -> Option<usize> {
        (0..before).rev().find(|&rank| self.on_fast[rank])
    }

    /// Whether the block ranked `hot` is more than `hysteresis` times hotter than the block
    /// ranked `cold` (which implies `hot` ranks first).
    fn worth_swapping(&self, hot: usize, cold: usize) -> bool {
        hot < cold && self.heat(hot) > self.hysteresis * self.heat(cold)
    }

    /// Trade the hottest blocks off the fast tier for the coldest on it while the hot one is
    /// worth it. Each trade is balanced: one block each way, then more cold blocks while the
    /// level is above high, or more hot blocks while it is below low (or below where it was,
    /// if that was already below low), every promoted block worth swapping for every demoted
    /// one. The first trade that cannot be made ends the phase, so the phase stops at the
    /// same trade when run again on its own result.
    fn swap_hot_for_cold(&mut self) {
        let mut hot_cursor = 0;
        let mut cold_cursor = self.ranked.len();
        let mut promote: Vec<usize> = Vec::new();
        let mut demote: Vec<usize> = Vec::new();
        loop {
            let (Some(hot), Some(cold)) = (
                self.next_promotable(hot_cursor),
                self.prev_demotable(cold_cursor),
            ) else {
                return;
            };
            if !self.worth_swapping(hot, cold) {
                return;
            }
            promote.clear();
            demote.clear();
            promote.push(hot);
            demote.push(cold);
            let floor = i128::from(self.watermarks.low.min(self.used));
            let high = i128::from(self.watermarks.high);
            let mut level =
                i128::from(self.used) + i128::from(self.bytes(hot)) - i128::from(self.bytes(cold));
            let (mut weakest_promoted, mut hottest_demoted) = (hot, cold);
            let balanced = loop {
                if level > high {
                    match self.prev_demotable(hottest_demoted) {
                        Some(rank) if self.worth_swapping(weakest_promoted, rank) => {
                            demote.push(rank);
                            hottest_demoted = rank;
                            level -= i128::from(self.bytes(rank));
                        }
                        _ => break false,
                    }
                } else if level < floor {
                    match self.next_promotable(weakest_promoted + 1) {
                        Some(rank) if self.worth_swapping(rank, hottest_demoted) => {
                            promote.push(rank);
                            weakest_promoted = rank;
                            level += i128::from(self.bytes(rank));
                        }
                        _ => break false,
                    }
                } else {
                    break true;
                }
            };
            if !balanced {
                return;
            }
            for &rank in &promote {
                self.put(rank, true, Reason::Swap);
            }
            for &rank in &demote {
                self.put(rank, false, Reason::Swap);
            }
            hot_cursor = weakest_promoted + 1;
            cold_cursor = hottest_demoted;
        }
    }

    /// The blocks that end on another tier than they started: promotions hottest first,
    /// demotions coldest first.
    fn into_moves(self) -> (Vec<Move>, Vec<Move>) {
        let moved = |rank: &usize| self.ranked[*rank].started_fast != self.on_fast[*rank];
        let to_move = |rank: usize| {
            let direction = if self.on_fast[rank] {
                Direction::Promote
            } else {
                Direction::Demote
            };
            self.ranked[rank].to_move(direction, self.last_reason[rank])
        };
        let all = 0..self.ranked.len();
        let promotions = all
            .clone()
            .filter(|rank| moved(rank) && self.on_fast[*rank])
            .map(to_move)
            .collect();
        let demotions = all
            .rev()
            .filter(|rank| moved(rank) && !self.on_fast[*rank])
            .map(to_move)
            .collect();
        (promotions, demotions)
    }
}

/// Moves in execution order, cut into steps: a step is one demotion on its own, or one
/// promotion with the demotions that make room for it just before it. The byte limit keeps
/// whole steps, so a limited plan never demotes for a promotion it then leaves out.
struct OrderedMoves {
    moves: Vec<Move>,
    /// Exclusive end of each step in `moves`.
    step_ends: Vec<usize>,
}

/// Orders the moves: demotions to honour slow pins first (they only free room), then each
/// promotion (fast pins first, then by heat) preceded by as many unpinned demotions, coldest
/// first, as keep the level at or below `ceiling` once it lands, then the remaining
/// demotions.
fn order_moves(
    fast_used: u64,
    ceiling: u64,
    pinned_demotions: impl Iterator<Item = Move>,
    promotions: impl Iterator<Item = Move>,
    unpinned_demotions: Vec<Move>,
) -> OrderedMoves {
    let mut ordered = OrderedMoves {
        moves: Vec::new(),
        step_ends: Vec::new(),
    };
    let mut level = fast_used;
    for demotion in pinned_demotions {
        level = level.saturating_sub(demotion.bytes);
        ordered.push_step_end(demotion);
    }
    let mut pending_demotions = unpinned_demotions.into_iter();
    for promotion in promotions {
        while level.saturating_add(promotion.bytes) > ceiling {
            // The full plan ends at or below the ceiling, so the demotions never run out
            // before the promotion fits; if they did, promoting anyway is still the plan.
            let Some(demotion) = pending_demotions.next() else {
                break;
            };
            level = level.saturating_sub(demotion.bytes);
            ordered.moves.push(demotion);
        }
        level = level.saturating_add(promotion.bytes);
        ordered.push_step_end(promotion);
    }
    for demotion in pending_demotions {
        ordered.push_step_end(demotion);
    }
    ordered
}

impl OrderedMoves {
    fn push_step_end(&mut self, last: Move) {
        self.moves.push(last);
        self.step_ends.push(self.moves.len());
    }

    /// The longest run of whole steps from the start whose bytes fit in `limit`, and the
    /// moves left out.
    fn truncate_to(mut self, limit: Option<u64>) -> (Vec<Move>, Vec<Move>) {
        let Some(limit) = limit else {
            return (self.moves, Vec::new());
        };
        let mut spent = 0u64;
        let mut kept = 0;
        for &end in &self.step_ends {
            let step_bytes = self.moves[kept..end]
                .iter()
                .map(|one| one.bytes)
                .fold(0, u64::saturating_add);
            match spent.checked_add(step_bytes) {
                Some(total) if total <= limit => {
                    spent = total;
                    kept = end;
                }
                _ => break,
            }
        }
        let deferred = self.moves.split_off(kept);
        (self.moves, deferred)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_heats_become_zero() {
        for heat in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, -0.0, 0.0] {
            assert_eq!(valid_heat(heat).to_bits(), 0.0f64.to_bits(), "{heat}");
        }
        assert_eq!(valid_heat(2.5), 2.5);
        assert!(is_valid_heat(-0.0) && is_valid_heat(0.0) && is_valid_heat(3.0));
        assert!(!is_valid_heat(f64::NAN) && !is_valid_heat(-1.0) && !is_valid_heat(f64::INFINITY));
    }

    #[test]
    fn heat_bits_order_like_heats() {
        let heats = [0.0, 1e-300, 0.5, 1.0, 1.5, 1e10, f64::MAX];
        for pair in heats.windows(2) {
            assert!(pair[0].to_bits() < pair[1].to_bits());
        }
    }
}
