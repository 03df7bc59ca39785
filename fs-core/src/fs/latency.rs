//! Per-device I/O latency histograms: how long each read or write submission to a member
//! device took, in fixed buckets from 50 µs to 2.5 s, counted without locks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds; slower I/O lands in the last, open bucket.
pub const BUCKET_BOUNDS_US: [u64; 15] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// A histogram being filled.
#[derive(Debug, Default)]
pub(crate) struct LatencyRecorder {
    /// One count per bound, then the open bucket.
    buckets: [AtomicU64; BUCKET_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl LatencyRecorder {
    /// Counts `ops` operations that each took `elapsed` (the operations of one batch are
    /// submitted together and complete together).
    pub(crate) fn observe(&self, elapsed: Duration, ops: u64) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKET_BOUNDS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(BUCKET_BOUNDS_US.len());
        self.buckets[bucket].fetch_add(ops, Ordering::Relaxed);
        self.sum_us
            .fetch_add(us.saturating_mul(ops), Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Latency {
        let mut buckets = [0; BUCKET_BOUNDS_US.len() + 1];
        for (count, bucket) in buckets.iter_mut().zip(&self.buckets) {
            *count = bucket.load(Ordering::Relaxed);
        }
        Latency {
            buckets,
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    /// Operations per bucket (not cumulative): one per bound of [`BUCKET_BOUNDS_US`], then
    /// those slower than the last bound.
    pub buckets: [u64; BUCKET_BOUNDS_US.len() + 1],
    /// Total time of all operations, in microseconds.
    pub sum_us: u64,
}

impl Latency {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds another histogram's counts (several devices of a tier).
    pub fn add(&mut self, other: &Latency) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.sum_us += other.sum_us;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_buckets() {
        let recorder = LatencyRecorder::default();
        recorder.observe(Duration::from_micros(50), 1);
        recorder.observe(Duration::from_micros(51), 4);
        recorder.observe(Duration::from_secs(10), 1);
        let latency = recorder.snapshot();
        assert_eq!(latency.buckets[0], 1);
        assert_eq!(latency.buckets[1], 4);
        assert_eq!(latency.buckets[BUCKET_BOUNDS_US.len()], 1);
        assert_eq!(latency.count(), 6);
        assert_eq!(latency.sum_us, 50 + 4 * 51 + 10_000_000);
        let mut total = latency;
        total.add(&latency);
        assert_eq!(total.count(), 12);
    }
}
