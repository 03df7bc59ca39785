//! AegisFS tiering policy: the migration planner (issue 6, part 3).
//!
//! This crate owns one decision: which blocks should change tier, and in what order. [`plan`]
//! is a pure function from the fast tier's space ([`TierSpace`]), one [`Candidate`] per
//! movable block (its tier, size, heat and [`Pin`]) and a [`Policy`] to a [`Plan`]: an ordered
//! list of [`Move`]s and the fast tier's level before and after. It does no I/O and keeps no
//! state. Heat tracking and write placement live in fs-core. Copying, verifying, swapping
//! pointers and throttling belong to the executor; the daemon and `aegis tier` decide when to
//! plan. Because planning is pure, a dry run (`aegis tier migrate --dry-run`) and the real run
//! call the same function, and the policy can be tested exhaustively (`tests/properties.rs`).
//!
//! ```
//! use fs_core::types::Tier;
//! use tiering::{plan, Candidate, Pin, Policy, TierSpace};
//!
//! const BLOCK: u64 = 128 * 1024;
//! let candidates = [
//!     Candidate { block: 1, inode: Some(10), tier: Tier::Slow, bytes: BLOCK, heat: 40.0, pin: Pin::Auto },
//!     Candidate { block: 2, inode: None, tier: Tier::Fast, bytes: BLOCK, heat: 0.0, pin: Pin::Auto },
//! ];
//! // Eight of ten blocks in use (80 %, between the watermarks): the hot slow block trades
//! // places with the cold fast one, demotion first.
//! let fast = TierSpace { capacity: 10 * BLOCK, used: 8 * BLOCK };
//! let plan = plan(fast, &candidates, &Policy::default(), Some(64 * BLOCK))?;
//! let order: Vec<u64> = plan.moves.iter().map(|one| one.block).collect();
//! assert_eq!(order, [2, 1]);
//! assert_eq!(plan.fast_used_after, 8 * BLOCK);
//! let json = serde_json::to_string(&plan.summary(10))?;
//! # assert!(json.contains("\"promote_blocks\":1"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The policy
//!
//! The fast tier should hold the data that is used, and it should sit between its *low* and
//! *high* watermarks (default 70 % and 85 % of its data area). Below high, new writes still
//! land on it; above low, it is being put to use. Blocks are ranked by heat, hottest first.
//! Of equal heats the lower block id counts as hotter, so every plan is reproducible. The
//! planner then works in three phases:
//!
//! 1. **Above high**: demote the coldest unpinned fast blocks until the level is at or below
//!    the *target*.
//! 2. **Below low**: promote the hottest unpinned slow blocks that are hot enough (heat at
//!    least [`Policy::min_promote_heat`]) until the level reaches the target, skipping any
//!    block that would take it above high. Cold data is never promoted just because there is
//!    room: it would only have to leave again.
//! 3. **Swaps** (at any level): while the hottest promotable slow block is more than
//!    [`Policy::hysteresis`] times hotter than the coldest unpinned fast block, they trade
//!    places. Each trade is balanced. It moves one block each way, then more cold blocks
//!    while the level is above high, or more hot blocks while it is below low. Every block a
//!    trade promotes must beat every block it demotes by the hysteresis factor. So a trade
//!    keeps the level between the watermarks and never drifts it upwards, and the headroom
//!    for new writes stays. The first trade that cannot be made ends the phase.
//!
//! **The target** is midway between the watermarks ([`Watermarks::target`]). It is the same
//! for both corrections, because after either one the tier is then as far as possible from
//! both edges. Between two migrations (weekly by default), new writes keep landing on the fast
//! tier until it passes high, so they get (high − low) / 2 of room, 7.5 % of the tier by
//! default. Deletions get the same room before the next pass has to promote again. Demoting
//! all the way to low would buy more room for writes at the price of evicting more warm data
//! each week. Demoting only to high would leave writes no room at all.
//!
//! **Hysteresis** is what stops ping-pong. A block does not displace another just because it
//! is a little hotter. The default factor 2 means twice the decayed accesses. When heats drift
//! between two runs, two blocks of similar heat therefore stay where they are rather than
//! trading places each week. The absolute floor
//! [`Policy::min_promote_heat`] (default 1.0: about one access within the last heat
//! half-life) means data nobody reads never moves up, even when the fast data is colder
//! still. Demotions need no floor: a block demoted above high is simply the coldest there is.
//!
//! # Pins
//!
//! Pins override heat and the watermarks. They are handled before everything else:
//!
//! - A block pinned **slow** that is on the fast tier is always demoted. A block pinned
//!   **fast** that is on the slow tier is promoted, hottest first, whatever its heat, as long
//!   as the fast tier's *capacity* holds it next to the data that must stay there: non-candidate
//!   data and blocks pinned fast. Unpinned data does not count, because it is demoted to make
//!   room. What does not fit stays on the slow tier and is reported in
//!   [`Plan::pinned_unplaced_blocks`] and [`Plan::pinned_unplaced_bytes`].
//! - The three phases then apply to unpinned blocks only, with the pinned data counted in the
//!   level. Pinned-fast data can therefore hold the tier above high, up to its capacity. All
//!   unpinned data is then demoted, nothing unpinned is promoted, and the level ends at what
//!   the pins hold. This is the one case where a plan ends above high. A user who pins more
//!   than 85 % of the tier has said so explicitly, and new writes spill to the slow tier, as
//!   they do whenever the tier is past high.
//! - No pinned block ever moves against its pin. Pinned blocks are never swap partners.
//!
//! # Order of moves and the byte limit
//!
//! [`Plan::moves`] is the execution order:
//!
//! 1. demotions of blocks pinned slow (they only free room);
//! 2. each promotion, blocks pinned fast first and then by heat, immediately preceded by the
//!    unpinned demotions (coldest first) needed for it to land at or below the *ceiling*;
//! 3. the remaining demotions, coldest first.
//!
//! The ceiling is the high watermark, or the level the pinned data alone holds when that is
//! more. Executed front to back, no promotion takes the fast tier above the ceiling, and the
//! demotions that make room come before the promotions that need it.
//!
//! The moves are grouped into steps. A step is one promotion together with the demotions just
//! before it, or one demotion on its own. With `limit` (`aegis tier migrate --limit`), the plan
//! keeps the longest run of whole steps from the front whose promoted plus demoted bytes fit
//! in the limit. The rest is reported as [`Plan::deferred_bytes`]. A limited plan is therefore
//! a prefix of the unlimited one, and it is safe to stop after any move. It never demotes for a
//! promotion it leaves out, and it puts pins and the worst overflows first.
//!
//! # Guarantees
//!
//! For every input, checked by the property tests:
//!
//! - No block moves twice or both ways. The phases edit a tentative placement, and a move is
//!   the difference between where a block starts and where it ends.
//! - No move goes against a pin. Every block pinned slow leaves the fast tier. A block pinned
//!   fast stays outside only if it does not fit.
//! - Heat-driven promotions have at least the minimum heat. Every swap beats the hysteresis.
//! - Executed in order, every prefix keeps the level at or below the ceiling after each
//!   promotion. The full plan ends at or below high, unless no unpinned block is left on the
//!   fast tier.
//! - With a limit: at most `limit` bytes, and a prefix of the unlimited plan.
//! - The plan does not depend on the order of the candidates.
//!
//! When no block is larger than half the band (high − low) / 2, two more things hold. For a
//! real tier the band is 15 % of an NVMe device and a block is at most a few MiB, so this is
//! always true.
//!
//! - **Stability**: executing a plan and planning again with the same heats gives an empty
//!   plan. The corrections land inside the band, because no single block can jump across half
//!   of it. A swap phase run again on its own result stops at the same trade.
//! - **Band**: the plan ends between the watermarks, unless no unpinned slow block is hot
//!   enough to promote (below low) or no unpinned block is left on the fast tier (above high).
//!
//! With larger blocks, whole blocks cannot always meet the watermarks. The safety rules still
//! hold, but on rare inputs a second plan may move a block more (about 1 in 20 000 random
//! pools with blocks of a quarter of the tier).
//!
//! # Heats
//!
//! A heat is a decayed access count. It should be finite and non-negative. Anything else
//! (NaN, infinities, negatives) comes from a bug upstream. It is planned as 0 (cold, so it
//! can never drive a promotion) and counted in [`Plan::invalid_heats`], rather than failing
//! the whole pass. A migration that refuses to run because of one bad counter helps nobody.
//! Malformed *requests* are errors ([`PlanError`]): a policy out of range, a block listed
//! twice, or fewer used bytes than the fast candidates occupy.
//!
//! # Not decided here
//!
//! The slow tier is assumed to have room for what is demoted (a pool's slow tier is the large
//! one). The executor checks allocation. A block's size is assumed the same on both tiers.
//!
//! # Cost
//!
//! The planner does one sort of the unpinned candidates, plus linear sweeps over the sorted
//! order. The sweeps use cursors that only move one way. It needs about 55 bytes per
//! candidate beyond the input. Measured with `tests/scale.rs` (`cargo test -p tiering
//! --release --test scale -- --ignored --nocapture`) on a 2-core VM: 10 million candidates
//! (128 KiB blocks, Zipf heats, fast tier at 90 %, 1.7 million moves) are planned in 1.3 s.
//! The sort takes 0.9 s, the duplicate check 0.09 s, the phases 0.12 s and the ordering
//! 0.19 s. Peak memory is 1.04 GB, of which 480 MB is the input. [`Plan::summary`] of that
//! plan takes 0.1 s.
#![forbid(unsafe_code)]

pub mod candidate;
pub mod error;
pub mod migrate;
pub mod output;
mod planner;
pub mod policy;

pub use candidate::{Candidate, Pin, TierSpace};
pub use error::{MigrateError, PlanError};
pub use output::{Direction, FileMoves, Move, Plan, PlanSummary, Reason};
pub use planner::plan;
pub use policy::{Policy, Watermarks};
