//! Block heat: how often a block is read or written, as a score of accesses that decays with
//! a half-life (a week by default), so recent use counts more than old use. Tiering ranks
//! blocks by it.
//!
//! The score is kept per block id in the `heat` table as (score, time of the score). Reads and
//! writes count accesses in memory under the state lock they already hold (no lock of their
//! own), and each commit folds the counts into the table: the stored score decayed to now,
//! plus the new accesses. A block that is rewritten (copy-on-write, a new id) takes its old
//! heat with it; a freed block's heat goes with it.

use std::time::Duration;

/// A heat score as of a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heat {
    /// Accesses, decayed.
    pub score: f64,
    /// When `score` was last brought up to date, seconds since the Unix epoch.
    pub at: i64,
}

impl Heat {
    /// No accesses yet.
    pub const COLD: Heat = Heat { score: 0.0, at: 0 };

    /// The score decayed to `now`: halved every `half_life`.
    pub fn at_time(self, now: i64, half_life: Duration) -> f64 {
        let half_life = half_life.as_secs_f64().max(1.0);
        #[allow(clippy::cast_precision_loss)]
        let elapsed = now.saturating_sub(self.at).max(0) as f64;
        let score = self.score * 0.5f64.powf(elapsed / half_life);
        if score.is_finite() {
            score.max(0.0)
        } else {
            0.0
        }
    }

    /// The heat after `hits` more accesses at `now`.
    pub fn plus(self, hits: u64, now: i64, half_life: Duration) -> Heat {
        #[allow(clippy::cast_precision_loss)]
        let hits = hits as f64;
        Heat {
            score: self.at_time(now, half_life) + hits,
            at: now.max(self.at),
        }
    }
}

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    crate::meta::records::Timestamp::now().secs
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEEK: Duration = Duration::from_secs(7 * 86_400);

    #[test]
    fn halves_every_half_life_and_adds_accesses() {
        let heat = Heat::COLD.plus(8, 1_000, WEEK);
        assert_eq!(heat.score, 8.0);
        assert!((heat.at_time(1_000 + 7 * 86_400, WEEK) - 4.0).abs() < 1e-9);
        assert!((heat.at_time(1_000 + 14 * 86_400, WEEK) - 2.0).abs() < 1e-9);
        let later = heat.plus(1, 1_000 + 7 * 86_400, WEEK);
        assert!((later.score - 5.0).abs() < 1e-9);
        // A clock that went backwards neither grows nor breaks the score.
        assert_eq!(heat.at_time(0, WEEK), 8.0);
        let odd = Heat {
            score: f64::NAN,
            at: 0,
        };
        assert_eq!(odd.at_time(10, WEEK), 0.0);
    }
}
