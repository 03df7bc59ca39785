//! Hand-built planning scenarios: one per rule of the policy, with the expected moves spelled
//! out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fs_core::types::Tier;
use tiering::{plan, Candidate, Direction, Pin, Plan, PlanError, Policy, Reason, TierSpace};

/// Every block in these scenarios is 10 bytes on a 1000-byte fast tier, so the default
/// watermarks are 700 (low), 775 (target) and 850 (high) bytes, 70, 77.5 and 85 blocks.
const BYTES: u64 = 10;
const CAPACITY: u64 = 1000;

fn block(block: u64, tier: Tier, heat: f64) -> Candidate {
    Candidate {
        block,
        inode: Some(block / 100),
        tier,
        bytes: BYTES,
        heat,
        pin: Pin::Auto,
    }
}

fn pinned(mut candidate: Candidate, pin: Pin) -> Candidate {
    candidate.pin = pin;
    candidate
}

/// `count` blocks on `tier` with ids from `first`, heat `heat(id)`.
fn blocks(first: u64, count: u64, tier: Tier, heat: impl Fn(u64) -> f64) -> Vec<Candidate> {
    (first..first + count)
        .map(|id| block(id, tier, heat(id)))
        .collect()
}

fn fast_space(candidates: &[Candidate]) -> TierSpace {
    let used = candidates
        .iter()
        .filter(|one| one.tier == Tier::Fast)
        .map(|one| one.bytes)
        .sum();
    TierSpace {
        capacity: CAPACITY,
        used,
    }
}

fn plan_default(candidates: &[Candidate]) -> Plan {
    plan(fast_space(candidates), candidates, &Policy::default(), None).unwrap()
}

fn ids<'a>(moves: impl Iterator<Item = &'a tiering::Move>) -> Vec<u64> {
    moves.map(|one| one.block).collect()
}

#[test]
fn nothing_to_plan_gives_an_empty_plan() {
    let plan = plan_default(&[]);
    assert!(plan.is_empty());
    assert_eq!(plan.fast_used_after, 0);
}

#[test]
fn above_high_demotes_the_coldest_down_to_the_target() {
    // 90 fast blocks (900 bytes), block i has heat i: the 13 coldest go, leaving 770 <= 775.
    let candidates = blocks(0, 90, Tier::Fast, |id| id as f64);
    let plan = plan_default(&candidates);
    assert_eq!(ids(plan.demotions()), (0..13).collect::<Vec<_>>());
    assert_eq!(plan.promote_blocks, 0);
    assert_eq!(plan.fast_used_after, 770);
    assert!(plan.moves.iter().all(|one| one.reason == Reason::Watermark));
}

#[test]
fn below_low_promotes_the_hottest_up_to_the_target() {
    // 50 fast blocks (500 bytes); 100 slow blocks, hotter ones with higher ids.
    // The fast blocks are warm enough (40) that no remaining slow block (at most 71) is worth
    // a swap.
    let mut candidates = blocks(0, 50, Tier::Fast, |_| 40.0);
    candidates.extend(blocks(1000, 100, Tier::Slow, |id| (id - 1000) as f64));
    let plan = plan_default(&candidates);
    // 28 promotions reach 780 >= 775; hottest first.
    assert_eq!(
        ids(plan.promotions()),
        (1072..1100).rev().collect::<Vec<_>>()
    );
    assert_eq!(plan.demote_blocks, 0);
    assert_eq!(plan.fast_used_after, 780);
}

#[test]
fn below_low_leaves_cold_slow_data_alone() {
    let mut candidates = blocks(0, 10, Tier::Fast, |_| 0.0);
    candidates.extend(blocks(1000, 100, Tier::Slow, |_| 0.5));
    let plan = plan_default(&candidates);
    assert!(plan.is_empty(), "{plan:?}");
}

#[test]
fn between_watermarks_swaps_only_past_the_hysteresis() {
    // 80 fast blocks: one at heat 1, the rest at 100. Slow: one at 2.5 (> 2 x 1), one at 150
    // (< 2 x 100) and one at 1.9 (< 2 x 1).
    let mut candidates = blocks(0, 80, Tier::Fast, |id| if id == 0 { 1.0 } else { 100.0 });
    candidates.push(block(1000, Tier::Slow, 2.5));
    candidates.push(block(1001, Tier::Slow, 150.0));
    candidates.push(block(1002, Tier::Slow, 1.9));
    let plan = plan_default(&candidates);
    // 150 displaces the block of heat 1 (150 > 2 x 1); then 2.5 is not worth displacing a
    // block of heat 100.
    assert_eq!(ids(plan.promotions()), vec![1001]);
    assert_eq!(ids(plan.demotions()), vec![0]);
    assert!(plan.moves.iter().all(|one| one.reason == Reason::Swap));
    assert_eq!(plan.fast_used_after, 800);
}

#[test]
fn between_watermarks_nothing_moves_within_the_hysteresis() {
    let mut candidates = blocks(0, 80, Tier::Fast, |_| 10.0);
    candidates.extend(blocks(1000, 50, Tier::Slow, |_| 19.9));
    assert!(plan_default(&candidates).is_empty());
}

#[test]
fn zero_heat_fast_data_is_displaced_only_by_data_hot_enough_to_promote() {
    let mut candidates = blocks(0, 80, Tier::Fast, |_| 0.0);
    candidates.extend(blocks(1000, 5, Tier::Slow, |_| 0.9));
    candidates.extend(blocks(2000, 3, Tier::Slow, |_| 1.0));
    let plan = plan_default(&candidates);
    assert_eq!(ids(plan.promotions()), vec![2000, 2001, 2002]);
    assert_eq!(plan.demote_blocks, 3);
}

#[test]
fn pins_move_pinned_blocks_first_and_never_against_the_pin() {
    let candidates = vec![
        // Pinned fast, cold, on slow: promoted even though cold.
        pinned(block(1, Tier::Slow, 0.0), Pin::Fast),
        // Pinned slow, hot, on fast: demoted even though hot.
        pinned(block(2, Tier::Fast, 1e6), Pin::Slow),
        // Pinned slow, hot, on slow: stays, though hotter than anything on fast.
        pinned(block(3, Tier::Slow, 1e6), Pin::Slow),
        // Pinned fast, cold, on fast: stays.
        pinned(block(4, Tier::Fast, 0.0), Pin::Fast),
        // Unpinned, cold, on fast: may be displaced.
        block(5, Tier::Fast, 0.0),
        // Unpinned, hot, on slow: fills the fast tier.
        block(6, Tier::Slow, 50.0),
    ];
    let plan = plan_default(&candidates);
    let moved: Vec<(u64, Direction, Reason)> = plan
        .moves
        .iter()
        .map(|one| (one.block, one.direction, one.reason))
        .collect();
    assert_eq!(
        moved,
        vec![
            (2, Direction::Demote, Reason::Pin),
            (1, Direction::Promote, Reason::Pin),
            (6, Direction::Promote, Reason::Watermark),
        ]
    );
}

#[test]
fn pinned_fast_data_beyond_capacity_is_placed_hottest_first_and_the_rest_reported() {
    // 120 pinned-fast blocks on slow (1200 bytes) for a 1000-byte tier holding 30 unpinned
    // blocks: all unpinned data leaves, the 100 hottest pinned blocks come in.
    let mut candidates: Vec<Candidate> = blocks(1000, 120, Tier::Slow, |id| id as f64)
        .into_iter()
        .map(|one| pinned(one, Pin::Fast))
        .collect();
    candidates.extend(blocks(0, 30, Tier::Fast, |_| 1e9));
    let plan = plan_default(&candidates);
    assert_eq!(
        ids(plan.promotions()),
        (1020..1120).rev().collect::<Vec<_>>()
    );
    assert_eq!(plan.demote_blocks, 30);
    assert_eq!(plan.pinned_unplaced_blocks, 20);
    assert_eq!(plan.pinned_unplaced_bytes, 200);
    assert_eq!(plan.fast_used_after, CAPACITY);
    // Room first: the level never passes the capacity while executing.
    let mut level = plan.fast_used_before;
    for one in &plan.moves {
        match one.direction {
            Direction::Promote => level += one.bytes,
            Direction::Demote => level -= one.bytes,
        }
        assert!(level <= CAPACITY);
    }
}

#[test]
fn pinned_fast_data_above_high_pushes_unpinned_data_out() {
    // 90 blocks pinned fast, already there, and 5 unpinned ones: the pins hold the tier above
    // high, so the unpinned blocks go and nothing is promoted.
    let mut candidates: Vec<Candidate> = blocks(0, 90, Tier::Fast, |_| 0.0)
        .into_iter()
        .map(|one| pinned(one, Pin::Fast))
        .collect();
    candidates.extend(blocks(100, 5, Tier::Fast, |_| 1e9));
    candidates.extend(blocks(1000, 5, Tier::Slow, |_| 1e9));
    let plan = plan_default(&candidates);
    assert_eq!(ids(plan.demotions()), (100..105).rev().collect::<Vec<_>>());
    assert_eq!(plan.promote_blocks, 0);
    assert_eq!(plan.fast_used_after, 900);
    assert!(plan.moves.iter().all(|one| one.reason == Reason::Watermark));
}

#[test]
fn a_limit_keeps_room_making_demotions_with_their_promotions() {
    // Full at 850 with 85 cold blocks; 10 much hotter slow blocks: ten swaps.
    let mut candidates = blocks(0, 85, Tier::Fast, |_| 1.0);
    candidates.extend(blocks(1000, 10, Tier::Slow, |_| 100.0));
    let unlimited = plan_default(&candidates);
    assert_eq!(unlimited.moves.len(), 20);
    for one in unlimited.moves.chunks(2) {
        assert_eq!(one[0].direction, Direction::Demote);
        assert_eq!(one[1].direction, Direction::Promote);
    }
    for limit in [0, 5, 10, 19, 20, 35, 45, 1000] {
        let limited = plan(
            fast_space(&candidates),
            &candidates,
            &Policy::default(),
            Some(limit),
        )
        .unwrap();
        let moved = limited.promote_bytes + limited.demote_bytes;
        assert!(moved <= limit);
        // Whole pairs only: an odd limit does not leave a lone room-making demotion.
        assert_eq!(limited.promote_blocks, limited.demote_blocks);
        assert_eq!(limited.moves[..], unlimited.moves[..limited.moves.len()]);
        assert_eq!(
            limited.deferred_bytes,
            unlimited.promote_bytes + unlimited.demote_bytes - moved
        );
    }
}

#[test]
fn ties_are_broken_by_block_id_whatever_the_input_order() {
    let mut candidates = blocks(0, 100, Tier::Fast, |_| 0.0);
    let forward = plan_default(&candidates);
    candidates.reverse();
    candidates.swap(3, 70);
    let shuffled = plan_default(&candidates);
    assert_eq!(forward, shuffled);
    // Of equal heats the lower id counts as hotter, so the highest ids leave first.
    assert_eq!(
        ids(forward.demotions()),
        (77..100).rev().collect::<Vec<_>>()
    );
}

#[test]
fn invalid_heats_plan_as_cold_and_are_counted() {
    let mut candidates = blocks(0, 75, Tier::Fast, |_| 5.0);
    candidates.push(block(1000, Tier::Slow, f64::NAN));
    candidates.push(block(1001, Tier::Slow, f64::INFINITY));
    candidates.push(block(1002, Tier::Slow, -3.0));
    candidates.push(block(90, Tier::Fast, f64::NAN));
    candidates.push(block(91, Tier::Fast, f64::NEG_INFINITY));
    let plan = plan_default(&candidates);
    assert!(plan.is_empty());
    assert_eq!(plan.invalid_heats, 5);

    // Above high, invalid heats go first, as zero heats would.
    let mut crowded = blocks(0, 90, Tier::Fast, |_| 5.0);
    crowded.push(block(500, Tier::Fast, f64::NAN));
    crowded.push(block(501, Tier::Fast, -1.0));
    let plan = plan_default(&crowded);
    assert_eq!(&ids(plan.demotions())[..2], &[501, 500]);
}

#[test]
fn malformed_inputs_are_refused() {
    let candidates = blocks(0, 10, Tier::Fast, |_| 1.0);
    let short = TierSpace {
        capacity: CAPACITY,
        used: 50,
    };
    assert_eq!(
        plan(short, &candidates, &Policy::default(), None),
        Err(PlanError::UsedBelowCandidates {
            used: 50,
            candidate_bytes: 100
        })
    );
    let mut doubled = candidates.clone();
    doubled.push(block(3, Tier::Slow, 1.0));
    assert_eq!(
        plan(fast_space(&doubled), &doubled, &Policy::default(), None),
        Err(PlanError::DuplicateBlock(3))
    );
    let inverted = Policy {
        low: 0.9,
        high: 0.8,
        ..Policy::default()
    };
    assert!(matches!(
        plan(fast_space(&candidates), &candidates, &inverted, None),
        Err(PlanError::InvalidWatermarks { .. })
    ));
}

#[test]
fn data_that_is_not_a_candidate_counts_towards_the_level() {
    // 800 bytes used by data the planner may not move, 10 unpinned fast blocks: 900 > 850,
    // so 13 would be needed to reach 775 but only 10 exist.
    let candidates = blocks(0, 10, Tier::Fast, |_| 1.0);
    let fast = TierSpace {
        capacity: CAPACITY,
        used: 900,
    };
    let plan = plan(fast, &candidates, &Policy::default(), None).unwrap();
    assert_eq!(plan.demote_blocks, 10);
    assert_eq!(plan.fast_used_after, 800);
}

#[test]
fn top_files_rank_by_bytes_moved() {
    // Inode = id / 100: 90 fast blocks in inode 0 at heat 0 (13 demoted: 130 bytes); slow
    // inodes 10 (ids 1000..1010) and 11 (1100..1102), very hot, swapped in.
    let mut candidates = blocks(0, 90, Tier::Fast, |_| 0.0);
    candidates.extend(blocks(1000, 10, Tier::Slow, |_| 50.0));
    candidates.extend(blocks(1100, 2, Tier::Slow, |_| 60.0));
    let plan = plan_default(&candidates);
    let top: Vec<(Option<u64>, u64, u64)> = plan
        .top_files(2)
        .iter()
        .map(|file| (file.inode, file.promote_bytes, file.demote_bytes))
        .collect();
    assert_eq!(top, vec![(Some(0), 0, 250), (Some(10), 100, 0)]);
    assert_eq!(plan.top_files(10).len(), 3);
}

#[test]
fn blocks_only_snapshots_hold_report_as_one_entry_without_an_inode() {
    let mut candidates = blocks(0, 90, Tier::Fast, |_| 0.0);
    for one in &mut candidates[70..] {
        one.inode = None;
    }
    let plan = plan_default(&candidates);
    let top = plan.top_files(5);
    assert_eq!(top[0].inode, None);
    assert_eq!(top[0].demote_bytes, 130);
    let json = serde_json::to_value(plan.summary(1)).unwrap();
    assert!(json["top_files"][0]["inode"].is_null());
}

#[test]
fn the_summary_serializes_to_json() {
    let mut candidates = blocks(0, 90, Tier::Fast, |_| 0.0);
    candidates.extend(blocks(1000, 3, Tier::Slow, |_| 50.0));
    let plan = plan_default(&candidates);
    let json = serde_json::to_value(plan.summary(5)).unwrap();
    assert_eq!(json["demote_blocks"], 16);
    assert_eq!(json["promote_blocks"], 3);
    assert_eq!(json["watermarks"]["target"], 775);
    assert_eq!(json["top_files"][0]["inode"], 0);
    let moves = serde_json::to_value(plan.moves[0]).unwrap();
    assert_eq!(moves["direction"], "demote");
}

#[test]
fn a_pin_converts_from_fs_core_s_optional_tier() {
    assert_eq!(Pin::from(None), Pin::Auto);
    assert_eq!(Pin::from(Some(Tier::Fast)), Pin::Fast);
    assert_eq!(Pin::from(Some(Tier::Slow)), Pin::Slow);
}

/// Issue 6's acceptance shape at the planner level: a Zipf-like heat over a data set three
/// times the fast tier puts at least 90 % of the hot set on the fast tier after one plan.
#[test]
fn a_skewed_workload_lands_its_hot_set_on_the_fast_tier() {
    let capacity_blocks = 1000;
    let total = 3 * capacity_blocks;
    // Data was written in order, so the first 850 blocks sit on the fast tier; heat follows a
    // Zipf law over a shuffled ranking, so the hot set is spread over both tiers.
    let rank_of = |id: u64| (id * 7919) % total;
    let candidates: Vec<Candidate> = (0..total)
        .map(|id| {
            let tier = if id < 850 { Tier::Fast } else { Tier::Slow };
            let heat = 10_000.0 / (rank_of(id) + 1) as f64;
            block(id, tier, heat)
        })
        .collect();
    let fast = TierSpace {
        capacity: capacity_blocks * BYTES,
        used: 850 * BYTES,
    };
    let plan = plan(fast, &candidates, &Policy::default(), None).unwrap();
    let promoted: std::collections::HashSet<u64> = plan.promotions().map(|one| one.block).collect();
    let demoted: std::collections::HashSet<u64> = plan.demotions().map(|one| one.block).collect();
    // The hot set: the 700 hottest blocks (the low watermark's worth).
    let hot_set: Vec<u64> = (0..total).filter(|&id| rank_of(id) < 700).collect();
    let on_fast = hot_set
        .iter()
        .filter(|&&id| (id < 850 && !demoted.contains(&id)) || promoted.contains(&id))
        .count();
    assert!(
        on_fast * 10 >= hot_set.len() * 9,
        "{on_fast} of {}",
        hot_set.len()
    );
}
