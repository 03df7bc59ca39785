//! Properties of the planner over random pools: the safety rules for every input (any sizes,
//! invalid heats, pins, limits), and stability (a plan applied then planned again is empty)
//! and the watermark band for pools whose blocks are at most half the band, the precondition
//! the crate docs state for them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};

use fs_core::types::Tier;
use proptest::prelude::*;
use tiering::{plan, Candidate, Direction, Pin, Plan, Policy, Reason, TierSpace};

#[derive(Debug, Clone)]
struct Pool {
    fast: TierSpace,
    candidates: Vec<Candidate>,
    policy: Policy,
}

fn policy() -> impl Strategy<Value = Policy> {
    (0.3..0.8f64, 0.05..0.2f64, 1.0..4.0f64, 0.1..2.0f64).prop_map(
        |(low, band, hysteresis, min_promote_heat)| Policy {
            low,
            high: (low + band).min(1.0),
            hysteresis,
            min_promote_heat,
        },
    )
}

/// Heats with many exact ties and zeros, so tie-breaking and the zero-heat rules are
/// exercised, and optionally invalid ones.
fn heat(with_invalid: bool) -> BoxedStrategy<f64> {
    let valid = prop_oneof![
        2 => Just(0.0),
        2 => prop::sample::select(vec![0.5, 1.0, 2.0, 4.0, 8.0, 100.0]),
        3 => 0.0..5.0f64,
        2 => 0.0..1000.0f64,
    ];
    if with_invalid {
        prop_oneof![
            9 => valid,
            1 => prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, -0.0]),
        ]
        .boxed()
    } else {
        valid.boxed()
    }
}

fn pin() -> impl Strategy<Value = Pin> {
    prop_oneof![8 => Just(Pin::Auto), 1 => Just(Pin::Fast), 1 => Just(Pin::Slow)]
}

/// Up to 150 candidates in random order, ids unique, sizes from `bytes`.
fn candidates(
    bytes: impl Strategy<Value = u64>,
    with_invalid: bool,
) -> impl Strategy<Value = Vec<Candidate>> {
    prop::collection::vec(
        (
            any::<bool>(),
            bytes,
            heat(with_invalid),
            pin(),
            prop::option::weighted(0.9, 0..8u64),
        ),
        0..150,
    )
    .prop_map(|blocks| {
        blocks
            .into_iter()
            .enumerate()
            .map(|(id, (on_fast, bytes, heat, pin, inode))| Candidate {
                block: id as u64,
                inode,
                tier: if on_fast { Tier::Fast } else { Tier::Slow },
                bytes,
                heat,
                pin,
            })
            .collect::<Vec<_>>()
    })
    .prop_shuffle()
}

fn fast_candidate_bytes(candidates: &[Candidate]) -> u64 {
    candidates
        .iter()
        .filter(|one| one.tier == Tier::Fast)
        .map(|one| one.bytes)
        .sum()
}

fn pool_of(policy: Policy, capacity: u64, not_candidates: u64, candidates: Vec<Candidate>) -> Pool {
    Pool {
        fast: TierSpace {
            capacity,
            used: not_candidates + fast_candidate_bytes(&candidates),
        },
        candidates,
        policy,
    }
}

/// Any pool: capacities down to 0, blocks from a thousandth of the capacity up to all of it
/// (about 75 blocks on each tier, so the fast tier starts anywhere from nearly empty to well
/// over its capacity), invalid heats.
fn any_pool() -> impl Strategy<Value = Pool> {
    (policy(), 0..5000u64, 20..=200u64)
        .prop_flat_map(|(policy, capacity, blocks_per_capacity)| {
            let typical = (capacity / blocks_per_capacity).max(1);
            let bytes = prop_oneof![
                60 => 1..=typical,
                1 => 1..=capacity.max(1),
            ];
            (
                Just(policy),
                Just(capacity),
                0..=capacity / 4,
                candidates(bytes, true),
            )
        })
        .prop_map(|(policy, capacity, not_candidates, candidates)| {
            pool_of(policy, capacity, not_candidates, candidates)
        })
}

const BANDED_MAX_BYTES: u64 = 50;

/// A pool whose blocks are at most half the gap between the watermarks.
fn banded_pool() -> impl Strategy<Value = Pool> {
    (policy(), 0..3000u64, 0..200u64)
        .prop_flat_map(|(policy, extra_capacity, not_candidates)| {
            let band = policy.high - policy.low;
            // (high - low) x capacity loses at most one byte to rounding each watermark down.
            let capacity =
                ((2 * BANDED_MAX_BYTES + 2) as f64 / band).ceil() as u64 + extra_capacity;
            (
                Just(policy),
                Just(capacity),
                Just(not_candidates),
                candidates(1..=BANDED_MAX_BYTES, false),
            )
        })
        .prop_map(|(policy, capacity, not_candidates, candidates)| {
            pool_of(policy, capacity, not_candidates, candidates)
        })
}

fn plan_pool(pool: &Pool, limit: Option<u64>) -> Plan {
    plan(pool.fast, &pool.candidates, &pool.policy, limit).unwrap()
}

fn valid_heat(heat: f64) -> f64 {
    if heat.is_finite() && heat > 0.0 {
        heat
    } else {
        0.0
    }
}

/// The pool after executing `plan`.
fn apply(pool: &Pool, plan: &Plan) -> Pool {
    let moved: HashSet<u64> = plan.moves.iter().map(|one| one.block).collect();
    let candidates = pool
        .candidates
        .iter()
        .map(|one| {
            let mut after = *one;
            if moved.contains(&one.block) {
                after.tier = match one.tier {
                    Tier::Fast => Tier::Slow,
                    Tier::Slow => Tier::Fast,
                };
            }
            after
        })
        .collect();
    Pool {
        fast: TierSpace {
            capacity: pool.fast.capacity,
            used: plan.fast_used_after,
        },
        candidates,
        policy: pool.policy,
    }
}

/// The fast tier's bytes that are not unpinned candidates once `full` has been executed:
/// what is not a candidate, and the blocks pinned fast.
fn pinned_level_after(pool: &Pool, full: &Plan) -> u64 {
    let full_moved: HashSet<u64> = full.moves.iter().map(|one| one.block).collect();
    let not_candidates = pool.fast.used - fast_candidate_bytes(&pool.candidates);
    let pinned_fast: u64 = pool
        .candidates
        .iter()
        .filter(|one| {
            one.pin == Pin::Fast && (one.tier == Tier::Fast) != full_moved.contains(&one.block)
        })
        .map(|one| one.bytes)
        .sum();
    not_candidates + pinned_fast
}

/// The rules every plan keeps, whatever its input. `full` is the same pool planned without a
/// limit (equal to `plan` when `limit` is `None`).
fn check_safety(pool: &Pool, plan: &Plan, full: &Plan, limit: Option<u64>) {
    let by_block: HashMap<u64, &Candidate> =
        pool.candidates.iter().map(|one| (one.block, one)).collect();
    let high = plan.watermarks.high;

    // Each block at most once, the right way, never against its pin, and heat-driven
    // promotions only of blocks hot enough.
    let mut seen = HashSet::new();
    for one in &plan.moves {
        assert!(seen.insert(one.block), "block {} moves twice", one.block);
        let candidate = by_block[&one.block];
        assert_eq!(one.bytes, candidate.bytes);
        assert_eq!(one.inode, candidate.inode);
        match one.direction {
            Direction::Promote => {
                assert_eq!(candidate.tier, Tier::Slow);
                assert_ne!(candidate.pin, Pin::Slow);
            }
            Direction::Demote => {
                assert_eq!(candidate.tier, Tier::Fast);
                assert_ne!(candidate.pin, Pin::Fast);
            }
        }
        assert_eq!(one.reason == Reason::Pin, candidate.pin != Pin::Auto);
        if one.direction == Direction::Promote && candidate.pin == Pin::Auto {
            assert!(valid_heat(candidate.heat) >= pool.policy.min_promote_heat);
        }
    }

    // Swaps only past the hysteresis: every block promoted by a swap is more than
    // `hysteresis` times hotter than every block demoted by one.
    let swapped = |direction| {
        plan.moves
            .iter()
            .filter(move |one| one.reason == Reason::Swap && one.direction == direction)
            .map(|one| valid_heat(by_block[&one.block].heat))
    };
    if let (Some(weakest_in), Some(hottest_out)) = (
        swapped(Direction::Promote).reduce(f64::min),
        swapped(Direction::Demote).reduce(f64::max),
    ) {
        assert!(weakest_in > pool.policy.hysteresis * hottest_out);
    }

    // Executing in order: no promotion takes the level above the high watermark, or above
    // what the pinned data alone holds when that is more (and that never exceeds the
    // capacity by a promotion).
    let pinned_level = pinned_level_after(pool, full);
    if full
        .moves
        .iter()
        .any(|one| one.reason == Reason::Pin && one.direction == Direction::Promote)
    {
        assert!(pinned_level <= pool.fast.capacity);
    }
    let ceiling = high.max(pinned_level);
    assert!(full.fast_used_after <= ceiling);
    let mut level = pool.fast.used;
    for one in &plan.moves {
        match one.direction {
            Direction::Promote => {
                level += one.bytes;
                assert!(
                    level <= ceiling,
                    "promotion of {} to {level} > {ceiling}",
                    one.block
                );
            }
            Direction::Demote => level -= one.bytes,
        }
    }
    assert_eq!(level, plan.fast_used_after);
    let promoted: u64 = plan.promotions().map(|one| one.bytes).sum();
    let demoted: u64 = plan.demotions().map(|one| one.bytes).sum();
    assert_eq!((plan.promote_bytes, plan.demote_bytes), (promoted, demoted));
    assert_eq!(
        (plan.promote_blocks, plan.demote_blocks),
        (
            plan.promotions().count() as u64,
            plan.demotions().count() as u64
        )
    );

    // The limit: within it, and a prefix of the unlimited plan.
    if let Some(limit) = limit {
        assert!(promoted + demoted <= limit);
    }
    assert_eq!(plan.moves[..], full.moves[..plan.moves.len()]);
    let deferred: u64 = full.moves[plan.moves.len()..]
        .iter()
        .map(|one| one.bytes)
        .sum();
    assert_eq!(plan.deferred_bytes, deferred);

    // The unlimited plan honours every pin it can and ends at or below the high watermark
    // unless pins alone hold the tier above it.
    // A block pinned fast stays outside only if it does not fit beside the data that must
    // stay on the fast tier: what is not a candidate, and what is pinned fast.
    let full_moved: HashSet<u64> = full.moves.iter().map(|one| one.block).collect();
    let ends_on_fast =
        |one: &Candidate| (one.tier == Tier::Fast) != full_moved.contains(&one.block);
    let mut pinned_fast_outside = 0;
    for candidate in &pool.candidates {
        match (candidate.pin, candidate.tier) {
            (Pin::Slow, Tier::Fast) => assert!(full_moved.contains(&candidate.block)),
            (Pin::Fast, Tier::Slow) if !full_moved.contains(&candidate.block) => {
                assert!(pinned_level + candidate.bytes > pool.fast.capacity);
                pinned_fast_outside += candidate.bytes;
            }
            _ => {}
        }
    }
    assert_eq!(full.pinned_unplaced_bytes, pinned_fast_outside);
    assert_eq!(
        full.pinned_unplaced_blocks,
        pool.candidates
            .iter()
            .filter(|one| one.pin == Pin::Fast && !ends_on_fast(one))
            .count() as u64
    );
    let unpinned_left_on_fast = pool.candidates.iter().any(|one| {
        one.pin == Pin::Auto && one.tier == Tier::Fast && !full_moved.contains(&one.block)
    });
    assert!(full.fast_used_after <= high || !unpinned_left_on_fast);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_plan_keeps_the_safety_rules(pool in any_pool(), limit in prop::option::of(0..3000u64)) {
        let full = plan_pool(&pool, None);
        check_safety(&pool, &full, &full, None);
        let limited = plan_pool(&pool, limit);
        check_safety(&pool, &limited, &full, limit);
    }

    #[test]
    fn plans_do_not_depend_on_candidate_order(pool in any_pool()) {
        let forward = plan_pool(&pool, None);
        let mut reversed = pool.clone();
        reversed.candidates.reverse();
        prop_assert_eq!(forward, plan_pool(&reversed, None));
    }

    #[test]
    fn a_banded_plan_keeps_the_safety_rules(pool in banded_pool(), limit in prop::option::of(0..3000u64)) {
        let full = plan_pool(&pool, None);
        check_safety(&pool, &full, &full, None);
        check_safety(&pool, &plan_pool(&pool, limit), &full, limit);
    }

    /// No ping-pong: once a plan has been executed, the next plan (same heats) is empty.
    #[test]
    fn an_applied_plan_plans_nothing_more(pool in banded_pool()) {
        let first = plan_pool(&pool, None);
        let after = apply(&pool, &first);
        let second = plan_pool(&after, None);
        prop_assert!(second.is_empty(), "second plan {:?}\nafter first {:?}", second.moves, first.moves);
    }

    /// The tier ends between the watermarks unless there is not enough data to get there:
    /// below low only when no unpinned slow block is hot enough to promote, above high only
    /// when no unpinned block is left on the fast tier.
    #[test]
    fn a_banded_plan_ends_between_the_watermarks_when_it_can(pool in banded_pool()) {
        let plan = plan_pool(&pool, None);
        let after = apply(&pool, &plan);
        let level = plan.fast_used_after;
        let marks = plan.watermarks;
        let unpinned = || after.candidates.iter().filter(|one| one.pin == Pin::Auto);
        if level < marks.low {
            let promotable = unpinned().any(|one| {
                one.tier == Tier::Slow && valid_heat(one.heat) >= pool.policy.min_promote_heat
            });
            prop_assert!(!promotable, "{level} < {} with promotable data", marks.low);
        }
        if level > marks.high {
            prop_assert!(!unpinned().any(|one| one.tier == Tier::Fast));
        }
    }
}

/// The generators reach every phase of the planner often enough for the properties above to
/// mean something: over 1000 pools of each kind, each situation occurs at least 1.5 % of the time.
#[test]
fn the_pool_generators_exercise_every_phase() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    for (kind, pools) in [
        ("any", any_pool().boxed()),
        ("banded", banded_pool().boxed()),
    ] {
        let mut seen: HashMap<&str, u32> = HashMap::new();
        for _ in 0..1000 {
            let pool = pools.new_tree(&mut runner).unwrap().current();
            let plan = plan_pool(&pool, None);
            let has = |reason, direction| {
                plan.moves
                    .iter()
                    .any(|one| one.reason == reason && one.direction == direction)
            };
            let marks = plan.watermarks;
            for (situation, happened) in [
                (
                    "starts between the watermarks",
                    (marks.low..=marks.high).contains(&pool.fast.used),
                ),
                (
                    "lowers to the target",
                    has(Reason::Watermark, Direction::Demote),
                ),
                (
                    "fills to the target",
                    has(Reason::Watermark, Direction::Promote),
                ),
                ("swaps", has(Reason::Swap, Direction::Promote)),
                (
                    "promotes a pinned block",
                    has(Reason::Pin, Direction::Promote),
                ),
                (
                    "demotes a pinned block",
                    has(Reason::Pin, Direction::Demote),
                ),
                ("plans nothing", plan.is_empty()),
            ] {
                *seen.entry(situation).or_default() += u32::from(happened);
            }
            if kind == "any" {
                *seen.entry("leaves pinned blocks unplaced").or_default() +=
                    u32::from(plan.pinned_unplaced_blocks > 0);
                *seen.entry("has invalid heats").or_default() += u32::from(plan.invalid_heats > 0);
            }
        }
        for (situation, count) in seen {
            assert!(
                count >= 15,
                "{kind} pools: {situation} only {count} times in 1000"
            );
        }
    }
}
