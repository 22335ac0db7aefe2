//! Active expiry: Redis 7's `activeExpireCycle` (slow cycle), run from each
//! tenant's cron. It samples keys that have a TTL and deletes the expired
//! ones, repeating on a database while more than the acceptable fraction of
//! the sample was stale (10% at the default effort), under a CPU time cap
//! (25% of the cron period) so it never causes a long pause. Lazy expiry on
//! access covers everything in between.

use rand::Rng;
use std::time::{Duration, Instant};

use crate::tenant::Tenant;

/// Outcome of one cycle, for stats and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct CycleStats {
    pub sampled: u64,
    pub expired: u64,
    pub time_capped: bool,
}

/// Runs one slow expiry cycle over the tenant's databases.
/// `effort` is `active-expire-effort` (1..=10), `hz` the cron frequency.
pub fn active_expire_cycle(t: &mut Tenant, now_ms: i64, effort: u32, hz: u32) -> CycleStats {
    let mut st = CycleStats::default();
    // Replicas wait for their primary's DEL; a paused primary keeps its
    // keyspace (and offset) still.
    if !t.active_expire || !t.deletes_on_its_own(now_ms) {
        return st;
    }
    let effort = effort.clamp(1, 10) - 1;
    let keys_per_loop = 20 + 20 / 4 * effort as usize;
    let acceptable_stale = 10 - effort as u64;
    let slow_time_perc = 25 + 2 * effort as u64;
    let limit = Duration::from_micros(1_000_000 * slow_time_perc / hz.max(1) as u64 / 100);
    let start = Instant::now();
    let dbs = t.ks.dbs.len();
    'dbs: for n in 0..dbs {
        let db = (t.expire_cursor_db + n) % dbs;
        loop {
            let vol = t.ks.dbs[db].volatile_len();
            if vol == 0 {
                break;
            }
            let num = vol.min(keys_per_loop);
            let (mut sampled, mut expired) = (0u64, 0u64);
            for _ in 0..num {
                let r: u64 = t.rng.random();
                let Some(idx) = t.ks.dbs[db].random_volatile(r) else {
                    break;
                };
                sampled += 1;
                if t.ks.dbs[db].entry(idx).expire_at <= now_ms {
                    let e = t.ks.dbs[db].remove_at(idx);
                    t.record_del(db, e.key.as_bytes());
                    t.notify(
                        crate::config::NOTIFY_EXPIRED,
                        "expired",
                        db,
                        e.key.as_bytes(),
                        now_ms,
                    );
                    t.stats.expired_keys += 1;
                    expired += 1;
                }
            }
            st.sampled += sampled;
            st.expired += expired;
            if start.elapsed() > limit {
                st.time_capped = true;
                t.stats.expired_time_cap_reached_count += 1;
                t.expire_cursor_db = db;
                break 'dbs;
            }
            if sampled == 0 || expired * 100 / sampled <= acceptable_stale {
                break;
            }
        }
    }
    if !st.time_capped {
        t.expire_cursor_db = 0;
    }
    let perc = if st.sampled > 0 {
        st.expired as f64 / st.sampled as f64
    } else {
        0.0
    };
    t.stats.expired_stale_perc = perc * 0.05 + t.stats.expired_stale_perc * 0.95;
    t.stats.expire_cycle_cpu_milliseconds += start.elapsed().as_millis() as u64;
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Value;
    use crate::tenant::TenantId;

    /// After enough cycles, about 10% at most of the keys with a TTL are
    /// logically expired (Redis's target; the cycle stops once a random
    /// sample of 20 shows ≤10% stale, so the true share hovers just around
    /// 10%: the bound allows for that sampling noise), and keys without a
    /// TTL are untouched.
    #[test]
    fn keeps_stale_keys_under_ten_percent() {
        let mut t = Tenant::new(TenantId::DEFAULT, "t", 16);
        // The cycle samples randomly; a fixed seed keeps the test exact.
        t.rng = rand::SeedableRng::seed_from_u64(7);
        let now = 1_000_000;
        for i in 0..20_000 {
            let idx = t.ks.dbs[0].upsert(format!("k{i}").as_bytes(), Value::from_bytes(b"v"), 0);
            // Half already expired, half far in the future.
            t.ks.dbs[0].set_expire(idx, if i % 2 == 0 { now - 1 } else { now + 1_000_000 });
        }
        for i in 0..1000 {
            t.ks.dbs[0].upsert(format!("p{i}").as_bytes(), Value::from_bytes(b"v"), 0);
        }
        for _ in 0..200 {
            active_expire_cycle(&mut t, now, 1, 10);
        }
        let db = &t.ks.dbs[0];
        let stale = db
            .iter()
            .filter(|e| e.has_expire() && e.expire_at <= now)
            .count();
        let volatile = db.volatile_len();
        assert!(stale * 100 <= volatile * 12, "stale {stale} of {volatile}");
        assert_eq!(db.iter().filter(|e| !e.has_expire()).count(), 1000);
        assert!(t.stats.expired_keys > 0);
    }
}
