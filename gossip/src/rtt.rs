//! Per-peer round-trip estimates from probe round trips.
//!
//! Two views of one sample stream, because routing needs both: the recent
//! minimum (the path's propagation delay; what "nearest" should mean,
//! immune to jitter and queueing) and a smoothed value (what a request
//! will typically see), an EWMA with TCP's gain of 1/8 whose samples are
//! clamped to 4x the recent minimum so one stalled packet cannot drag it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back the minimum looks.
pub const MIN_WINDOW: Duration = Duration::from_secs(60);
const MAX_SAMPLES: usize = 64;

#[derive(Debug, Clone, Default)]
pub struct RttEstimator {
    samples: VecDeque<(Instant, Duration)>,
    smoothed: Option<Duration>,
    count: u64,
}

impl RttEstimator {
    pub fn add(&mut self, at: Instant, rtt: Duration) {
        self.count += 1;
        while self.samples.len() >= MAX_SAMPLES
            || self
                .samples
                .front()
                .is_some_and(|(t, _)| at.saturating_duration_since(*t) > MIN_WINDOW)
        {
            self.samples.pop_front();
        }
        self.samples.push_back((at, rtt));
        let clamp = self
            .min()
            .map(|m| m * 4)
            .unwrap_or(rtt)
            .max(Duration::from_micros(200));
        let s = rtt.min(clamp);
        self.smoothed = Some(match self.smoothed {
            None => s,
            Some(prev) => (prev * 7 + s) / 8,
        });
    }

    /// Smallest sample in the last minute.
    pub fn min(&self) -> Option<Duration> {
        self.samples.iter().map(|(_, d)| *d).min()
    }

    pub fn smoothed(&self) -> Option<Duration> {
        self.smoothed
    }

    pub fn samples(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::SmallRng, RngExt, SeedableRng};

    #[test]
    fn stable_under_jitter_and_spikes() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut e = RttEstimator::default();
        let t0 = Instant::now();
        for i in 0..500u64 {
            // 80 ms base, +0..20 ms jitter, and a 2 s stall every 50 samples.
            let mut ms = 80.0 + rng.random_range(0.0..20.0);
            if i % 50 == 49 {
                ms = 2000.0;
            }
            e.add(
                t0 + Duration::from_millis(i * 100),
                Duration::from_secs_f64(ms / 1000.0),
            );
            if i > 20 {
                let min = e.min().unwrap().as_secs_f64() * 1000.0;
                let s = e.smoothed().unwrap().as_secs_f64() * 1000.0;
                assert!((80.0..82.0).contains(&min), "min {min}");
                assert!((80.0..200.0).contains(&s), "smoothed {s} at {i}");
            }
        }
        let s = e.smoothed().unwrap().as_secs_f64() * 1000.0;
        assert!((85.0..130.0).contains(&s), "smoothed {s}");
    }

    #[test]
    fn minimum_forgets_old_paths() {
        let mut e = RttEstimator::default();
        let t0 = Instant::now();
        e.add(t0, Duration::from_millis(10));
        e.add(t0 + Duration::from_secs(61), Duration::from_millis(50));
        assert_eq!(e.min(), Some(Duration::from_millis(50)));
    }
}
