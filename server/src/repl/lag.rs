//! A replica's lag behind its primary, in milliseconds, from the time
//! stamps the primary writes into a cluster link (`REPLCONF STAMP <ms>`),
//! without trusting the two machines' clocks to agree.
//!
//! The receiver sees `raw = now − stamp`: the stamp's one-way trip, plus
//! whatever queued before it (the lag we want), plus the difference of the
//! two clocks (unknown: NTP keeps Fly's machines within milliseconds, but a
//! replica's lag must not read 200 ms because one clock is 200 ms off, nor
//! 0 because it is behind). As NTP's clock filter does, the smallest `raw`
//! of recent stamps is taken as a stamp that found the link empty: its
//! one-way trip plus the clock difference. Subtracting it leaves the
//! queueing, and half the link's measured round trip (QUIC's smoothed
//! RTT) puts the one-way trip back:
//!
//! `lag = raw − min(raw over the window) + RTT / 2`
//!
//! With agreeing clocks and a link that empties now and then this equals
//! `raw`. A link that never empties within the window reads low by the
//! queue it always had; a path whose two directions differ reads off by
//! half the difference (NTP's limits too). The window is
//! [`LagClock::WINDOW_MS`] long (two halves, so the minimum forgets old
//! samples without a gap): long enough to hold a quiet moment, short
//! enough to follow a clock that NTP steps.

use std::time::Duration;

/// Lag estimation for one link.
#[derive(Clone, Debug, Default)]
pub struct LagClock {
    /// The smallest `raw` of the current half-window and of the one before.
    cur_min: Option<i64>,
    prev_min: Option<i64>,
    /// Receiver's ms clock when the current half-window began.
    cur_start: i64,
}

impl LagClock {
    /// How far back the smallest delay is looked for, in ms.
    pub const WINDOW_MS: i64 = 60_000;

    pub fn new() -> LagClock {
        LagClock::default()
    }

    /// A stamp `stamp_ms` (the primary's clock) applied at `now_ms` (this
    /// node's clock) on a link whose round trip is `rtt` (None: unknown,
    /// the raw difference is taken as it is). Returns the lag in ms.
    pub fn sample(&mut self, stamp_ms: i64, now_ms: i64, rtt: Option<Duration>) -> i64 {
        let raw = now_ms.saturating_sub(stamp_ms);
        if self.cur_min.is_none() || now_ms.saturating_sub(self.cur_start) >= Self::WINDOW_MS / 2 {
            self.prev_min = self.cur_min;
            self.cur_min = None;
            self.cur_start = now_ms;
        }
        self.cur_min = Some(self.cur_min.map_or(raw, |m| m.min(raw)));
        let Some(rtt) = rtt else {
            return raw.max(0);
        };
        let floor = match (self.prev_min, self.cur_min) {
            (Some(p), Some(c)) => p.min(c),
            (p, c) => p.or(c).unwrap_or(raw),
        };
        let half_rtt = i64::try_from(rtt.as_millis() / 2).unwrap_or(i64::MAX);
        raw.saturating_sub(floor).saturating_add(half_rtt).max(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Option<Duration> = Some(Duration::from_millis(100));

    #[test]
    fn agreeing_clocks_read_the_one_way_trip_plus_the_queue() {
        let mut c = LagClock::new();
        // Empty link: one way is 50 ms.
        assert_eq!(c.sample(1_000, 1_050, RTT), 50);
        // A stamp that queued 30 ms behind a burst.
        assert_eq!(c.sample(2_000, 2_080, RTT), 80);
        assert_eq!(c.sample(3_000, 3_050, RTT), 50);
    }

    #[test]
    fn a_clock_ahead_or_behind_changes_nothing() {
        for skew in [-400i64, -50, 0, 250, 10_000] {
            let mut c = LagClock::new();
            let mut seen = Vec::new();
            for (i, queued) in [0i64, 30, 0, 120, 5].into_iter().enumerate() {
                let stamp = 1_000 * (i as i64 + 1);
                seen.push(c.sample(stamp, stamp + 50 + queued + skew, RTT));
            }
            assert_eq!(seen, [50, 80, 50, 170, 55], "skew {skew}");
        }
    }

    #[test]
    fn the_floor_forgets_samples_older_than_the_window() {
        let mut c = LagClock::new();
        // A clock stepped 100 ms back at 10 s: raw falls by 100 ms; the old,
        // higher floor is replaced at once (a lower raw is a new minimum).
        assert_eq!(c.sample(0, 50, RTT), 50);
        assert_eq!(c.sample(10_000, 9_950, RTT), 50);
        // Stepped 100 ms forward again: the floor stays low until the window
        // has passed (reads 100 ms high meanwhile), then follows.
        assert_eq!(c.sample(20_000, 20_050, RTT), 150);
        let mut last = 0;
        let mut t = 20_000;
        while t < 20_000 + LagClock::WINDOW_MS + 10_000 {
            t += 5_000;
            last = c.sample(t, t + 50, RTT);
        }
        assert_eq!(last, 50, "the old floor is forgotten after a window");
    }

    #[test]
    fn without_a_round_trip_the_raw_difference_is_the_lag() {
        let mut c = LagClock::new();
        assert_eq!(c.sample(1_000, 1_070, None), 70);
        assert_eq!(c.sample(2_000, 1_990, None), 0, "never negative");
    }
}
