//! Planning at pool scale: ten million candidates. Ignored by default (it takes seconds and
//! gigabytes); run `cargo test -p tiering --release --test scale -- --ignored --nocapture` to
//! print the time, which the crate docs quote. Nothing here asserts a duration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use fs_core::types::Tier;
use tiering::{plan, Candidate, Pin, Policy, TierSpace};

const BLOCK_BYTES: u64 = 128 * 1024;

/// xorshift64*: reproducible pseudo-random numbers without a dependency.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[test]
#[ignore = "scale measurement: run with --release -- --ignored --nocapture"]
fn plans_ten_million_candidates() {
    let count: u64 = 10_000_000;
    // The fast tier holds a third of the data and sits above its high watermark (90 %);
    // heats follow a Zipf law over a random ranking, a tenth of the blocks never read.
    let fast_blocks = count * 3 / 10;
    let mut state = 0x9E37_79B9_7F4A_7C15;
    let candidates: Vec<Candidate> = (0..count)
        .map(|block| {
            let rank = next_random(&mut state) % count;
            let heat = if rank.is_multiple_of(10) {
                0.0
            } else {
                1e6 / (rank + 1) as f64
            };
            Candidate {
                block,
                inode: Some(block / 64),
                tier: if block < fast_blocks {
                    Tier::Fast
                } else {
                    Tier::Slow
                },
                bytes: BLOCK_BYTES,
                heat,
                pin: if block.is_multiple_of(1000) {
                    Pin::Fast
                } else {
                    Pin::Auto
                },
            }
        })
        .collect();
    let fast = TierSpace {
        capacity: fast_blocks * BLOCK_BYTES * 10 / 9,
        used: fast_blocks * BLOCK_BYTES,
    };

    let started = Instant::now();
    let plan = plan(fast, &candidates, &Policy::default(), None).unwrap();
    let planning = started.elapsed();
    let started = Instant::now();
    let summary = plan.summary(10);
    let summarising = started.elapsed();

    println!(
        "{count} candidates: planned in {planning:?} ({} promotions, {} demotions), summary in {summarising:?}",
        plan.promote_blocks, plan.demote_blocks
    );
    assert!(summary.fast_used_after <= summary.watermarks.high);
    assert!(plan.promote_blocks > 0 && plan.demote_blocks > 0);
}
