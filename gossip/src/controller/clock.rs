//! The clock leases are measured on, and a fault hook that makes it run
//! at another rate.
//!
//! Leases are safe only while the holder's clock and the leader's run at
//! nearly the same rate: the holder counts its lease from when it asked,
//! the leader from when it answered, and the holder takes a margin off
//! ([`super::lease::margin`], a fifth) for the rest. A monotonic clock is
//! immune to the wall clock's steps (NTP, a host whose time is off: the
//! fault harness's `--clock-offset-ms`), but not to a rate error: a VM
//! whose timer runs slow or fast. [`set_rate`] makes this process's lease
//! clock run at `rate` × real time (`anykv node --clock-rate`, fault
//! testing only), so the fault harness can show that a drift within the
//! margin is harmless and a test can show that one past it is not (two
//! primaries acknowledge writes at once): the margin is what keeps them
//! apart, and the fault reaches it.
//!
//! Only lease time goes through here: when a node's lease ends
//! ([`real`], in the lease keeper) and when the leader judges one lapsed
//! or an earlier leader's grants ended ([`shown`], in
//! [`super::lease::Leases`]). Raft's own timers (elections, heartbeats)
//! stay on the real clock; that leaves out the drift's effect on the
//! election timeout the leader's credit counts on, which a slow voter
//! only lengthens.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The rate in parts per million of real time (1 000 000: exact).
static RATE_PPM: AtomicU64 = AtomicU64::new(1_000_000);

/// Makes this process's lease clock run at `rate` × real time (clamped
/// to 0.01–100).
pub fn set_rate(rate: f64) {
    let ppm = (rate.clamp(0.01, 100.0) * 1e6).round() as u64;
    RATE_PPM.store(ppm, Ordering::Relaxed);
}

/// What this clock shows as elapsed when `real` has passed.
pub fn shown(real: Duration) -> Duration {
    scale(real, RATE_PPM.load(Ordering::Relaxed), 1_000_000)
}

/// The real time that passes while this clock shows `shown` elapsed.
pub fn real(shown: Duration) -> Duration {
    scale(shown, 1_000_000, RATE_PPM.load(Ordering::Relaxed))
}

fn scale(d: Duration, num: u64, den: u64) -> Duration {
    if num == den {
        return d;
    }
    let nanos = d.as_nanos().saturating_mul(num as u128) / den.max(1) as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_is_exact_at_rate_one_and_inverts() {
        let d = Duration::from_millis(1600);
        assert_eq!(scale(d, 1_000_000, 1_000_000), d);
        // A clock at half speed shows half; it takes twice the real time
        // to show a period.
        assert_eq!(scale(d, 500_000, 1_000_000), Duration::from_millis(800));
        assert_eq!(scale(d, 1_000_000, 500_000), Duration::from_millis(3200));
        assert_eq!(
            scale(Duration::MAX, 2, 1),
            Duration::from_nanos(u64::MAX),
            "saturates, never panics"
        );
    }
}
