//! `maxmemory` and eviction, Redis's evict.c: approximated LRU/LFU by
//! sampling (`maxmemory-samples`), random and TTL policies, and the
//! `noeviction` OOM error. Memory is what the counting allocator reports,
//! so the limit tracks real usage. Evictions are logged as `DEL` effects
//! (replicas never evict on their own) and notified as "evicted".

use rand::Rng;
use std::time::{Duration, Instant};

use crate::config::NOTIFY_EVICTED;
use crate::db::Entry;
use crate::tenant::Tenant;

/// `maxmemory-policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    NoEviction,
    AllkeysLru,
    AllkeysLfu,
    AllkeysRandom,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
}

impl Policy {
    pub fn parse(s: &str) -> Policy {
        match s {
            "allkeys-lru" => Policy::AllkeysLru,
            "allkeys-lfu" => Policy::AllkeysLfu,
            "allkeys-random" => Policy::AllkeysRandom,
            "volatile-lru" => Policy::VolatileLru,
            "volatile-lfu" => Policy::VolatileLfu,
            "volatile-random" => Policy::VolatileRandom,
            "volatile-ttl" => Policy::VolatileTtl,
            _ => Policy::NoEviction,
        }
    }

    /// The name `maxmemory-policy` takes.
    pub fn name(self) -> &'static str {
        match self {
            Policy::NoEviction => "noeviction",
            Policy::AllkeysLru => "allkeys-lru",
            Policy::AllkeysLfu => "allkeys-lfu",
            Policy::AllkeysRandom => "allkeys-random",
            Policy::VolatileLru => "volatile-lru",
            Policy::VolatileLfu => "volatile-lfu",
            Policy::VolatileRandom => "volatile-random",
            Policy::VolatileTtl => "volatile-ttl",
        }
    }

    pub fn is_lfu(self) -> bool {
        matches!(self, Policy::AllkeysLfu | Policy::VolatileLfu)
    }

    fn volatile(self) -> bool {
        matches!(
            self,
            Policy::VolatileLru
                | Policy::VolatileLfu
                | Policy::VolatileRandom
                | Policy::VolatileTtl
        )
    }
}

/// Redis's initial LFU counter for new keys.
pub const LFU_INIT_VAL: u32 = 5;

/// Minutes clock (16 bits) used by the LFU decay, as Redis's `LFUGetTimeInMinutes`.
pub fn lfu_minutes(now_ms: i64) -> u32 {
    ((now_ms / 60_000) as u32) & 0xFFFF
}

/// The `lru` field of a new key under an LFU policy.
pub fn lfu_new(now_ms: i64) -> u32 {
    (lfu_minutes(now_ms) << 8) | LFU_INIT_VAL
}

/// Redis's `LFUDecrAndReturn`: the counter after decay for elapsed periods.
pub fn lfu_decayed(lru: u32, now_ms: i64, decay_time: u32) -> u32 {
    let ldt = lru >> 8;
    let counter = lru & 0xFF;
    let now = lfu_minutes(now_ms);
    let elapsed = if now >= ldt {
        now - ldt
    } else {
        65535 - ldt + now
    };
    let periods = elapsed.checked_div(decay_time).unwrap_or(0);
    counter.saturating_sub(periods)
}

/// Redis's `updateLFU`: decay, then a logarithmic increment.
pub fn lfu_touch(lru: u32, now_ms: i64, log_factor: u32, decay_time: u32, r: f64) -> u32 {
    let mut counter = lfu_decayed(lru, now_ms, decay_time);
    if counter < 255 {
        let base = counter.saturating_sub(LFU_INIT_VAL) as f64;
        let p = 1.0 / (base * log_factor as f64 + 1.0);
        if r < p {
            counter += 1;
        }
    }
    (lfu_minutes(now_ms) << 8) | counter
}

/// Eviction settings, copied from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub maxmemory: u64,
    pub policy: Policy,
    pub samples: usize,
    pub decay_time: u32,
    /// Longest time one call may spend evicting (`maxmemory-eviction-tenacity`).
    pub time_limit: Duration,
    /// `latency-monitor-threshold` (ms; 0: off): an eviction pass or one
    /// key's deletion that long is a LATENCY event (`eviction-cycle`,
    /// `eviction-del`), as in Redis.
    pub latency_ms: u64,
}

/// How long one eviction pass may take for `maxmemory-eviction-tenacity`
/// (0 to 100), as Redis computes it: 50 µs per step up to 10 (500 µs),
/// then 15% more per step, and no limit at 100.
pub fn tenacity_limit(tenacity: i64) -> Duration {
    match tenacity {
        ..=10 => Duration::from_micros(50 * tenacity.max(0) as u64),
        11..=99 => Duration::from_micros((500.0 * 1.15f64.powi(tenacity as i32 - 10)) as u64),
        _ => Duration::MAX,
    }
}

/// 24-bit LRU clock in seconds, as Redis's `LRU_CLOCK()`.
pub fn lru_clock(now_ms: i64) -> u32 {
    ((now_ms / 1000) as u32) & 0x00FF_FFFF
}

/// Eviction score of an entry: higher is a better victim.
fn score(e: &Entry, policy: Policy, now_ms: i64, decay_time: u32) -> u64 {
    match policy {
        Policy::AllkeysLru | Policy::VolatileLru => {
            let now = lru_clock(now_ms);
            (if now >= e.lru {
                now - e.lru
            } else {
                now + (0x00FF_FFFF - e.lru)
            }) as u64
        }
        Policy::AllkeysLfu | Policy::VolatileLfu => {
            255 - lfu_decayed(e.lru, now_ms, decay_time) as u64
        }
        // Sooner expiry first.
        Policy::VolatileTtl => u64::MAX - (e.expire_at.max(0) as u64),
        _ => 0,
    }
}

/// Picks one victim (db, key) by the policy, sampling like Redis.
pub fn pick_victim(t: &mut Tenant, lim: &Limits, now_ms: i64) -> Option<(usize, Vec<u8>)> {
    let ndbs = t.ks.dbs.len();
    match lim.policy {
        Policy::NoEviction => None,
        Policy::AllkeysRandom | Policy::VolatileRandom => {
            // Start at a random database and take the first with candidates.
            let start = t.rng.random_range(0..ndbs);
            for i in 0..ndbs {
                let db = (start + i) % ndbs;
                let r: u64 = t.rng.random();
                let idx = if lim.policy.volatile() {
                    t.ks.dbs[db].random_volatile(r)
                } else {
                    t.ks.dbs[db].random_index(r)
                };
                if let Some(idx) = idx {
                    return Some((db, t.ks.dbs[db].entry(idx).key.to_vec()));
                }
            }
            None
        }
        policy => {
            let mut best: Option<(u64, usize, u32)> = None;
            for db in 0..ndbs {
                let pool = if policy.volatile() {
                    t.ks.dbs[db].volatile_len()
                } else {
                    t.ks.dbs[db].len()
                };
                if pool == 0 {
                    continue;
                }
                for _ in 0..lim.samples.max(1) {
                    let r: u64 = t.rng.random();
                    let idx = if policy.volatile() {
                        t.ks.dbs[db].random_volatile(r)
                    } else {
                        t.ks.dbs[db].random_index(r)
                    };
                    let Some(idx) = idx else { break };
                    let s = score(t.ks.dbs[db].entry(idx), policy, now_ms, lim.decay_time);
                    if best.is_none_or(|(b, _, _)| s > b) {
                        best = Some((s, db, idx));
                    }
                }
            }
            best.map(|(_, db, idx)| (db, t.ks.dbs[db].entry(idx).key.to_vec()))
        }
    }
}

/// Evicts one key chosen by the policy; false when there is none to evict.
pub fn evict_one(t: &mut Tenant, lim: &Limits, now_ms: i64) -> bool {
    let Some((db, key)) = pick_victim(t, lim, now_ms) else {
        return false;
    };
    if t.ks.dbs[db].remove(&key).is_none() {
        return false;
    }
    t.record_del(db, &key);
    t.notify(NOTIFY_EVICTED, "evicted", db, &key, now_ms);
    t.stats.evicted_keys += 1;
    true
}

/// Redis's `performEvictions`: frees keys until `used()` is within
/// `maxmemory`. Returns false when memory is still over the limit (nothing
/// left to evict, `noeviction`, or the time budget ran out) — then commands
/// that may grow memory get the OOM error.
pub fn perform(t: &mut Tenant, lim: &Limits, now_ms: i64, used: impl Fn() -> u64) -> bool {
    if lim.maxmemory == 0 || used() <= lim.maxmemory {
        return true;
    }
    let start = Instant::now();
    let ok = loop {
        if used() <= lim.maxmemory {
            break true;
        }
        let one = Instant::now();
        let evicted = evict_one(t, lim, now_ms);
        let ms = one.elapsed().as_millis() as u64;
        t.latency_sample("eviction-del", ms, lim.latency_ms, now_ms / 1000);
        if !evicted {
            break false;
        }
        if start.elapsed() > lim.time_limit {
            break used() <= lim.maxmemory;
        }
    };
    let ms = start.elapsed().as_millis() as u64;
    t.latency_sample("eviction-cycle", ms, lim.latency_ms, now_ms / 1000);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Value;
    use crate::tenant::TenantId;

    fn tenant() -> Tenant {
        let mut t = Tenant::new(TenantId::DEFAULT, "t", 16);
        t.rng = rand::SeedableRng::seed_from_u64(3);
        t
    }

    fn lim(policy: Policy) -> Limits {
        Limits {
            maxmemory: 1,
            policy,
            samples: 5,
            decay_time: 1,
            time_limit: Duration::from_secs(1),
            latency_ms: 0,
        }
    }

    #[test]
    fn tenacity_gives_redis_time_limits() {
        assert_eq!(tenacity_limit(0), Duration::ZERO);
        assert_eq!(tenacity_limit(10), Duration::from_micros(500));
        assert_eq!(tenacity_limit(11), Duration::from_micros(575));
        assert_eq!(tenacity_limit(50), Duration::from_micros(133_931));
        assert_eq!(tenacity_limit(100), Duration::MAX);
    }

    #[test]
    fn volatile_policies_spare_keys_without_ttl() {
        for policy in [
            Policy::VolatileLru,
            Policy::VolatileLfu,
            Policy::VolatileRandom,
            Policy::VolatileTtl,
        ] {
            let mut t = tenant();
            for i in 0..100 {
                let idx =
                    t.ks.dbs[0].upsert(format!("k{i}").as_bytes(), Value::from_bytes(b"v"), 0);
                if i % 2 == 0 {
                    t.ks.dbs[0].set_expire(idx, 1_000_000 + i);
                }
            }
            while evict_one(&mut t, &lim(policy), 0) {}
            assert_eq!(t.ks.dbs[0].len(), 50, "{policy:?}");
            assert_eq!(t.ks.dbs[0].volatile_len(), 0);
            assert_eq!(t.stats.evicted_keys, 50);
        }
    }

    #[test]
    fn noeviction_evicts_nothing() {
        let mut t = tenant();
        t.ks.dbs[0].upsert(b"k", Value::from_bytes(b"v"), 0);
        assert!(!evict_one(&mut t, &lim(Policy::NoEviction), 0));
        assert!(!perform(&mut t, &lim(Policy::NoEviction), 0, || 10));
    }

    /// With sampling, the least recently used keys go first: after evicting
    /// half, most survivors are from the recently used half.
    #[test]
    fn lru_prefers_idle_keys() {
        let mut t = tenant();
        let now_ms = 10_000_000;
        let clock = lru_clock(now_ms);
        for i in 0..1000u32 {
            // Keys k0..k499 idle for 1000 s, k500.. touched just now.
            let lru = if i < 500 { clock - 1000 } else { clock };
            t.ks.dbs[0].upsert(format!("k{i}").as_bytes(), Value::from_bytes(b"v"), lru);
        }
        for _ in 0..500 {
            assert!(evict_one(&mut t, &lim(Policy::AllkeysLru), now_ms));
        }
        let recent = (500..1000)
            .filter(|i| t.ks.dbs[0].find(format!("k{i}").as_bytes()).is_some())
            .count();
        assert!(recent > 400, "only {recent} recently used keys survived");
    }

    #[test]
    fn volatile_ttl_evicts_soonest_expiry_first() {
        let mut t = tenant();
        for i in 0..200 {
            let idx = t.ks.dbs[0].upsert(format!("k{i}").as_bytes(), Value::from_bytes(b"v"), 0);
            t.ks.dbs[0].set_expire(idx, 1_000_000 + i * 1000);
        }
        for _ in 0..100 {
            assert!(evict_one(&mut t, &lim(Policy::VolatileTtl), 0));
        }
        let late = (100..200)
            .filter(|i| t.ks.dbs[0].find(format!("k{i}").as_bytes()).is_some())
            .count();
        assert!(late > 80, "only {late} late-expiring keys survived");
    }

    #[test]
    fn lfu_counter_grows_logarithmically_and_decays() {
        let now = 120 * 60_000;
        let mut lru = lfu_new(now);
        for _ in 0..100 {
            lru = lfu_touch(lru, now, 10, 1, 0.0);
        }
        assert_eq!(lru & 0xFF, 105);
        // Ten minutes later with decay 1: ten periods gone.
        assert_eq!(lfu_decayed(lru, now + 10 * 60_000, 1), 95);
        // r = 0.99: with base 100 and factor 10, p ~ 0.001: no increment.
        assert_eq!(lfu_touch(lru, now, 10, 1, 0.99) & 0xFF, 105);
    }
}
