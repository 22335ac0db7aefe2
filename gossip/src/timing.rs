//! SWIM timings. The reference defaults are HashiCorp memberlist's
//! (`DefaultLANConfig` / `DefaultWANConfig`), which foca's `new_lan` /
//! `new_wan` follow:
//!
//! | | LAN | WAN |
//! | --- | --- | --- |
//! | probe interval | 1 s | 5 s |
//! | probe timeout | 500 ms | 3 s |
//! | suspicion multiplier | 4 | 6 |
//! | gossip interval | 200 ms | 500 ms |
//! | gossip fan-out | 3 | 4 |
//!
//! Suspicion lasts `mult * max(1, log10(n)) * probe_interval` (memberlist's
//! `suspicionTimeout`), so the time to declare a failed node dead grows
//! slowly with the cluster. A node is declared down after at most about one
//! probe interval (the failed probe) plus that suspicion timeout, which is
//! the bound the tests and the simulation check against.

use std::num::{NonZeroU32, NonZeroU8, NonZeroUsize};
use std::time::Duration;

/// Which of memberlist's profiles to start from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Nodes of one region (sub-millisecond RTTs).
    Lan,
    /// Nodes across regions (RTTs up to ~250 ms).
    Wan,
    /// Fast timings for tests on loopback: 200 ms probes, 100 ms to ack.
    Test,
    /// Fast timings for the cluster-wide pool of an emulated world whose
    /// links are as slow as Fly's: 700 ms probes, 350 ms to ack (the
    /// builtin table's longest RTT, iad–syd, is 257 ms). With [`Test`]'s
    /// 100 ms a node across an ocean fails every direct and indirect
    /// probe, is suspected at every probe and lives only as long as its
    /// refutations win the race against the suspicion timeout.
    ///
    /// [`Test`]: Profile::Test
    TestWan,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "lan" => Ok(Profile::Lan),
            "wan" => Ok(Profile::Wan),
            "test" => Ok(Profile::Test),
            "test-wan" => Ok(Profile::TestWan),
            _ => Err(format!(
                "unknown gossip profile '{s}' (lan, wan, test, test-wan)"
            )),
        }
    }
}

/// memberlist's suspicion timeout for a cluster of `n` nodes.
pub fn suspicion_timeout(n: u32, probe_interval: Duration, mult: f64) -> Duration {
    let scale = f64::max(1.0, f64::from(n.max(1)).log10());
    Duration::from_secs_f64(scale * mult * probe_interval.as_secs_f64())
}

/// The time from a node failing to everyone declaring it down, as the
/// deterministic simulation (bench/src/gossip_sim.rs) measures it: until
/// someone probes the dead node (each node is probed about once per
/// period, so allow two), the failed probe, suspicion starting at the
/// prober's next tick, the suspicion timeout, and a few gossip rounds to
/// spread the verdict. Typical detection is about 1.5 periods shorter.
pub fn detection_bound(config: &foca::Config) -> Duration {
    let gossip = config
        .periodic_gossip
        .as_ref()
        .map(|p| p.frequency)
        .unwrap_or(config.probe_period);
    config.probe_period * 3 + config.probe_rtt + config.suspect_to_down_after + gossip * 5
}

/// memberlist's retransmit limit, `RetransmitMult * ceil(log10(n + 1))`
/// with the multiplier 4. foca's own formula gives fewer (8 at 100 nodes
/// against 12), and the simulation showed updates then miss a node now
/// and then, leaving long detection tails.
pub fn max_transmissions(n: u32) -> u8 {
    let scale = (f64::from(n) + 1.0).log10().ceil().max(1.0);
    (4.0 * scale).min(255.0) as u8
}

/// The foca configuration for `profile` and an expected cluster size.
///
/// `remove_down_after` is kept long (a day, foca's default) so a node that
/// was declared down cannot come back with the *same* identity; restarts
/// come back with a new incarnation instead.
pub fn config(profile: Profile, cluster_size: u32) -> foca::Config {
    let n = NonZeroU32::new(cluster_size.max(1)).unwrap_or(NonZeroU32::MIN);
    let mut c = match profile {
        Profile::Lan => foca::Config::new_lan(n),
        Profile::Wan => foca::Config::new_wan(n),
        Profile::Test | Profile::TestWan => {
            let mut c = foca::Config::new_lan(n);
            let (period, rtt, gossip) = match profile {
                Profile::Test => (200, 100, 50),
                _ => (700, 350, 100),
            };
            c.probe_period = Duration::from_millis(period);
            c.probe_rtt = Duration::from_millis(rtt);
            c.suspect_to_down_after = suspicion_timeout(cluster_size, c.probe_period, 4.0);
            if let Some(g) = c.periodic_gossip.as_mut() {
                g.frequency = Duration::from_millis(gossip);
            }
            if let Some(a) = c.periodic_announce.as_mut() {
                a.frequency = Duration::from_secs(2);
            }
            if let Some(a) = c.periodic_announce_to_down_members.as_mut() {
                a.frequency = Duration::from_secs(3);
            }
            c
        }
    };
    // Keep datagrams under the IPv6 minimum MTU path on 6PN (WireGuard
    // inside IPv6): our envelope adds ~40 bytes around foca's payload.
    c.max_packet_size = NonZeroUsize::new(1200).unwrap_or(NonZeroUsize::MIN);
    if profile == Profile::Wan {
        if let Some(g) = c.periodic_gossip.as_mut() {
            g.frequency = Duration::from_millis(500);
            g.num_members = NonZeroUsize::new(4).unwrap_or(NonZeroUsize::MIN);
        }
    }
    c.max_transmissions =
        NonZeroU8::new(max_transmissions(cluster_size).max(4)).unwrap_or(NonZeroU8::MIN);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspicion_matches_memberlist() {
        // memberlist: 4 * log10(100) * 1s = 8s for 100 nodes; small clusters use 1.
        assert_eq!(
            suspicion_timeout(100, Duration::from_secs(1), 4.0),
            Duration::from_secs(8)
        );
        assert_eq!(
            suspicion_timeout(3, Duration::from_secs(1), 4.0),
            Duration::from_secs(4)
        );
        let lan = config(Profile::Lan, 100);
        assert_eq!(lan.suspect_to_down_after, Duration::from_secs(8));
        assert!(detection_bound(&lan) < Duration::from_secs(13));
        assert_eq!(max_transmissions(100), 12);
        assert_eq!(max_transmissions(8), 4);
        assert_eq!(lan.max_transmissions.get(), 12);
    }
}
