//! The tunable policy of the planner ([`Policy`]) and its translation into byte levels of a
//! given fast tier ([`Watermarks`]).

use serde::{Deserialize, Serialize};

use crate::error::PlanError;

/// The knobs of the migration policy. The crate docs explain how each one is used.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Fraction of the fast tier below which hot slow blocks are promoted to fill it.
    pub low: f64,
    /// Fraction of the fast tier above which the coldest fast blocks are demoted.
    pub high: f64,
    /// Between the watermarks, a slow block displaces a fast block only when its heat is
    /// *more than* this many times the fast block's heat. At least 1.
    pub hysteresis: f64,
    /// Slow blocks colder than this are never promoted by heat (only by a pin), so data that
    /// is not being used never churns. Above 0.
    pub min_promote_heat: f64,
}

impl Default for Policy {
    /// Watermarks 70 % and 85 % (issue 6), a hysteresis factor of 2 and a minimum promotion
    /// heat of 1.0, that is about one access within the last heat half-life.
    fn default() -> Self {
        Self {
            low: 0.70,
            high: 0.85,
            hysteresis: 2.0,
            min_promote_heat: 1.0,
        }
    }
}

impl Policy {
    /// Checks the knobs: `0 <= low <= high <= 1`, `hysteresis >= 1` and
    /// `min_promote_heat > 0`, all finite.
    pub fn validate(&self) -> Result<(), PlanError> {
        let is_fraction = |value: f64| (0.0..=1.0).contains(&value);
        if !(is_fraction(self.low) && is_fraction(self.high) && self.low <= self.high) {
            return Err(PlanError::InvalidWatermarks {
                low: self.low,
                high: self.high,
            });
        }
        if !(self.hysteresis.is_finite() && self.hysteresis >= 1.0) {
            return Err(PlanError::InvalidHysteresis(self.hysteresis));
        }
        if !(self.min_promote_heat.is_finite() && self.min_promote_heat > 0.0) {
            return Err(PlanError::InvalidMinPromoteHeat(self.min_promote_heat));
        }
        Ok(())
    }

    /// The watermarks in bytes for a fast tier of `capacity` bytes: each fraction times the
    /// capacity, rounded down, and the target midway between them (rounded down).
    pub fn watermarks(&self, capacity: u64) -> Watermarks {
        let high = fraction_of(capacity, self.high);
        let low = fraction_of(capacity, self.low).min(high);
        Watermarks {
            low,
            target: low + (high - low) / 2,
            high,
        }
    }
}

/// `fraction × capacity` rounded down, clamped to `0..=capacity` (a float cast saturates and
/// maps NaN to 0, so this never panics even for an unvalidated fraction).
fn fraction_of(capacity: u64, fraction: f64) -> u64 {
    // Precision: capacities above 2^53 bytes (8 PiB) round to a multiple of a few bytes.
    ((capacity as f64 * fraction).floor() as u64).min(capacity)
}

/// The policy's levels in bytes of one fast tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Watermarks {
    /// Below this, hot slow blocks are promoted.
    pub low: u64,
    /// Where a correction (demoting above `high`, promoting below `low`) aims: midway.
    pub target: u64,
    /// Above this, the coldest fast blocks are demoted; no promotion goes past it.
    pub high: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_watermarks_of_a_round_capacity() {
        let marks = Policy::default().watermarks(1000);
        assert_eq!(
            marks,
            Watermarks {
                low: 700,
                target: 775,
                high: 850
            }
        );
    }

    #[test]
    fn equal_fractions_never_put_low_above_high() {
        let policy = Policy {
            low: 0.85,
            high: 0.85,
            ..Policy::default()
        };
        for capacity in [0, 1, 7, 100, 12_345, u64::MAX] {
            let marks = policy.watermarks(capacity);
            assert!(marks.low <= marks.target && marks.target <= marks.high);
            assert!(marks.high <= capacity);
        }
    }

    #[test]
    fn validation_rejects_each_bad_knob() {
        let good = Policy::default();
        assert_eq!(good.validate(), Ok(()));
        for (low, high) in [(0.9, 0.8), (-0.1, 0.5), (0.5, 1.5), (f64::NAN, 0.5)] {
            let policy = Policy { low, high, ..good };
            assert!(matches!(
                policy.validate(),
                Err(PlanError::InvalidWatermarks { .. })
            ));
        }
        for hysteresis in [0.5, f64::INFINITY, f64::NAN] {
            let policy = Policy { hysteresis, ..good };
            assert!(matches!(
                policy.validate(),
                Err(PlanError::InvalidHysteresis(_))
            ));
        }
        for min_promote_heat in [0.0, -1.0, f64::NAN] {
            let policy = Policy {
                min_promote_heat,
                ..good
            };
            assert!(matches!(
                policy.validate(),
                Err(PlanError::InvalidMinPromoteHeat(_))
            ));
        }
    }
}
