//! `maxmemory` and eviction policies, checked by behaviour class the same
//! way against anykv and (with `ANYKV_SERVER_TEST_REFERENCE=1`) against
//! redis-server: which keys go first, which never go, and the OOM error.

mod common;

use common::{start_under_test, RespConn, Value};

fn call(c: &mut RespConn, args: &[&str]) -> Value {
    c.cmd(args).expect("reply")
}

fn int(c: &mut RespConn, args: &[&str]) -> i64 {
    match call(c, args) {
        Value::Int(n) => n,
        other => panic!("{args:?}: expected an integer, got {other:?}"),
    }
}

fn info_field(c: &mut RespConn, section: &str, field: &str) -> i64 {
    let Value::Bulk(b) = call(c, &["INFO", section]) else {
        panic!("INFO {section}")
    };
    let text = String::from_utf8_lossy(&b).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
}

const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

fn value_10k() -> String {
    "x".repeat(10 * 1024)
}

/// Writes `n` 10 KB values named `prefix:i`; returns the error replies seen.
fn fill(c: &mut RespConn, prefix: &str, n: usize, ttl: bool) -> Vec<Value> {
    let v = value_10k();
    let mut errors = Vec::new();
    for i in 0..n {
        let key = format!("{prefix}:{i}");
        let r = if ttl {
            call(c, &["SET", &key, &v, "EX", "100000"])
        } else {
            call(c, &["SET", &key, &v])
        };
        if r.is_error() {
            errors.push(r);
        }
    }
    errors
}

#[test]
fn noeviction_refuses_writes_but_serves_reads() {
    let srv = start_under_test(&["--maxmemory", "8mb", "--maxmemory-policy", "noeviction"]);
    let mut c = srv.connect();
    let errors = fill(&mut c, "k", 2000, false);
    assert!(
        !errors.is_empty(),
        "20 MB of writes under an 8 MB limit never failed"
    );
    assert!(
        errors
            .iter()
            .all(|e| *e == Value::Error(OOM.as_bytes().to_vec())),
        "{:?}",
        errors[0]
    );
    // Reads and deletes still work (not "denyoom").
    assert_eq!(
        call(&mut c, &["GET", "k:0"]),
        Value::Bulk(value_10k().into_bytes())
    );
    assert_eq!(int(&mut c, &["DEL", "k:0"]), 1);
    assert_eq!(info_field(&mut c, "stats", "evicted_keys"), 0);
}

/// allkeys-lru: keys idle for seconds go before keys written since (the LRU
/// clock has one-second resolution, as Redis's).
#[test]
fn allkeys_lru_evicts_idle_keys_first() {
    let srv = start_under_test(&["--maxmemory", "8mb", "--maxmemory-policy", "allkeys-lru"]);
    let mut c = srv.connect();
    assert!(fill(&mut c, "cold", 300, false).is_empty());
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let v = value_10k();
    let mut i = 0;
    while info_field(&mut c, "stats", "evicted_keys") < 100 {
        for _ in 0..10 {
            let r = call(&mut c, &["SET", &format!("new:{i}"), &v]);
            assert!(
                !r.is_error(),
                "allkeys-lru must evict instead of failing: {r:?}"
            );
            i += 1;
        }
        assert!(i < 3000, "no eviction after {i} writes");
    }
    let evicted = info_field(&mut c, "stats", "evicted_keys");
    let cold_left = (0..300)
        .filter(|k| int(&mut c, &["EXISTS", &format!("cold:{k}")]) == 1)
        .count() as i64;
    // Sampling 5 keys per eviction finds a cold key ~90% of the time.
    assert!(
        300 - cold_left >= evicted * 7 / 10,
        "{evicted} evictions but only {} cold keys among them",
        300 - cold_left
    );
}

/// allkeys-lfu: a frequently read key outlives keys written once.
#[test]
fn allkeys_lfu_keeps_hot_keys() {
    let srv = start_under_test(&["--maxmemory", "8mb", "--maxmemory-policy", "allkeys-lfu"]);
    let mut c = srv.connect();
    let v = value_10k();
    assert_eq!(
        call(&mut c, &["SET", "hot", &v]),
        Value::Simple(b"OK".to_vec())
    );
    for _ in 0..300 {
        call(&mut c, &["GET", "hot"]);
    }
    for i in 0..2000 {
        let r = call(&mut c, &["SET", &format!("k:{i}"), &v]);
        assert!(
            !r.is_error(),
            "allkeys-lfu must evict instead of failing: {r:?}"
        );
    }
    assert!(info_field(&mut c, "stats", "evicted_keys") > 0);
    assert_eq!(
        int(&mut c, &["EXISTS", "hot"]),
        1,
        "the hot key was evicted"
    );
}

#[test]
fn volatile_policies_never_evict_persistent_keys() {
    for policy in [
        "volatile-lru",
        "volatile-random",
        "volatile-ttl",
        "volatile-lfu",
    ] {
        let srv = start_under_test(&["--maxmemory", "8mb", "--maxmemory-policy", policy]);
        let mut c = srv.connect();
        assert!(
            fill(&mut c, "p", 200, false).is_empty(),
            "{policy}: persistent writes failed"
        );
        let errors = fill(&mut c, "v", 1500, true);
        assert!(
            errors.is_empty(),
            "{policy}: volatile writes failed: {:?}",
            errors.first()
        );
        for i in 0..200 {
            assert_eq!(
                int(&mut c, &["EXISTS", &format!("p:{i}")]),
                1,
                "{policy} evicted p:{i}"
            );
        }
        assert!(
            info_field(&mut c, "stats", "evicted_keys") > 0,
            "{policy}: no eviction"
        );
        // Only persistent keys left to evict: writes fail with OOM.
        let errors = fill(&mut c, "q", 1500, false);
        assert!(
            errors
                .iter()
                .any(|e| *e == Value::Error(OOM.as_bytes().to_vec())),
            "{policy}: no OOM once only persistent keys remain"
        );
    }
}

#[test]
fn lfu_policy_tracks_frequency() {
    let srv = start_under_test(&["--maxmemory-policy", "allkeys-lfu"]);
    let mut c = srv.connect();
    call(&mut c, &["SET", "k", "v"]);
    let before = int(&mut c, &["OBJECT", "FREQ", "k"]);
    for _ in 0..200 {
        call(&mut c, &["GET", "k"]);
    }
    let after = int(&mut c, &["OBJECT", "FREQ", "k"]);
    assert!(
        after > before,
        "OBJECT FREQ did not grow: {before} -> {after}"
    );
    assert!(call(&mut c, &["OBJECT", "IDLETIME", "k"]).is_error());
}
