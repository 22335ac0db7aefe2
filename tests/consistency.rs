//! A database's consistency as its customers see it on a read region's
//! node (docs/ROUTING.md): an emulated world with the primary in iad (and
//! its standby), replicas in cdg and syd, the WAN's round trips on every
//! inter-node byte (iad–syd about 257 ms).
//!
//! Checked, on the syd node: with `ryw` a write then an immediate read on
//! the same connection returns the new value every time (the read waited
//! for replication or went to the primary, never served stale), while a
//! second connection in syd reads the local copy as it is and sees the old
//! value until replication arrives; INFO `routing` and `/metrics` count
//! each route. With `strong` every read goes to the primary; with
//! `nearest` none does.

mod common;

use std::time::Duration;

use anykv_bench::world::{http, World};
use common::{wait_for as wait, RespConn, Value};

const ADMIN: &str = "consistency-admin-token";
const TOKEN: &str = "consistency-tenant-token-0123456789";
const TENANT: u64 = 11;

fn put(w: &World, consistency: &str, version: u64) {
    let entry = common::shop_entry(
        TENANT,
        TOKEN,
        &["cdg", "syd"],
        "region",
        consistency,
        version,
    );
    common::put_tenant(w, &entry);
}

/// The INFO `routing` counters of the connection's database.
fn routing(c: &mut RespConn) -> std::collections::BTreeMap<String, String> {
    let Ok(Value::Bulk(text)) = c.cmd(&["INFO", "routing"]) else {
        panic!("INFO routing");
    };
    String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn count(r: &std::collections::BTreeMap<String, String>, k: &str) -> u64 {
    r.get(k)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("INFO routing has no {k}: {r:?}"))
}

fn strlen(c: &mut RespConn) -> i64 {
    match c.cmd(&["STRLEN", "big"]) {
        Ok(Value::Int(n)) => n,
        other => panic!("STRLEN: {other:?}"),
    }
}

#[test]
fn a_read_region_connection_reads_its_own_writes_and_routes_by_consistency() {
    // `ryw-wait-ms` long enough for a multi-megabyte write to cross the
    // WAN: a read that must see it waits instead of going to the primary.
    let spec = common::world_spec(
        "consistency",
        51,
        22500,
        &[("iad", 2), ("cdg", 1), ("syd", 1)],
        ADMIN,
        &["--ryw-wait-ms", "5000"],
    );
    let w = World::start(&spec).expect("the world starts");
    w.wait_members(4, Duration::from_secs(60))
        .expect("four members alive");
    put(&w, "ryw", 1);
    let syd = w.node("n4").expect("n4").clone();
    assert_eq!(syd.region, "syd");
    let placed = common::placed_tenant(&w, TENANT);
    let primary = w
        .node(placed["primary"].as_str().expect("primary"))
        .expect("primary node")
        .clone();
    assert_eq!(primary.region, "iad");
    let mut p = common::poll_every(
        Duration::from_millis(50),
        Duration::from_secs(30),
        "the primary takes writes",
        || {
            common::login_ready(primary.resp, "shop", TOKEN, |c| {
                matches!(c.cmd(&["SET", "big", ""]), Ok(Value::Simple(_)))
            })
        },
    );
    wait("the syd replica serves", Duration::from_secs(30), || {
        common::login_ready(syd.resp, "shop", TOKEN, |c| {
            c.cmd(&["EXISTS", "big"]).ok() == Some(Value::Int(1))
        })
        .is_some()
    });

    // ryw: A writes a value megabytes long through the syd node (it goes
    // to the primary in iad), then reads its length at once; B, another
    // syd connection, reads right after A's write is acknowledged.
    let mut a = common::login_ready(syd.resp, "shop", TOKEN, |_| true).expect("A logs in on syd");
    let mut b = common::login_ready(syd.resp, "shop", TOKEN, |_| true).expect("B logs in on syd");
    let before = routing(&mut a);
    assert_eq!(before["consistency"], "ryw");
    let mut stale_for_b = 0;
    let rounds = 4;
    for i in 0..rounds {
        let len = 2_000_000 + i;
        let value = "x".repeat(len);
        assert_eq!(
            a.cmd(&["SET", "big", &value]).ok(),
            Some(Value::Simple(b"OK".to_vec())),
            "round {i}: the write through syd"
        );
        let seen_by_b = strlen(&mut b);
        if seen_by_b != len as i64 {
            stale_for_b += 1;
        }
        assert_eq!(
            strlen(&mut a),
            len as i64,
            "round {i}: A reads its own write"
        );
        // And the primary agrees: the write happened once.
        assert_eq!(p.cmd(&["STRLEN", "big"]).ok(), Some(Value::Int(len as i64)));
    }
    assert!(
        stale_for_b > 0,
        "B never saw the old value: replication always beat the reply, so the test shows nothing"
    );
    let after = routing(&mut a);
    let d = |k: &str| count(&after, k) - count(&before, k);
    assert_eq!(d("routed_primary_writes"), rounds as u64, "{after:?}");
    // A's reads found the local copy behind (B's read proves it) and
    // waited for the write to arrive; none went to the primary (the wait
    // is long enough here).
    assert!(d("routed_waited_reads") >= 1, "{after:?}");
    assert_eq!(d("routed_fell_back_reads"), 0, "{after:?}");
    assert_eq!(d("routed_primary_reads"), 0, "{after:?}");
    // B's reads (and A's that found the write already there) were local.
    assert_eq!(
        d("routed_local_reads") + d("routed_waited_reads"),
        2 * rounds as u64,
        "{after:?}"
    );
    assert!(count(&after, "ryw_wait_usec") > count(&before, "ryw_wait_usec"));
    // The same counters in /metrics (published once a second).
    wait("the route metrics", Duration::from_secs(10), || {
        http(syd.http, "GET", "/metrics", "", "").is_some_and(|(_, body)| {
            body.lines().any(|l| {
                l.starts_with("anykv_routed_total{")
                    && l.contains("route=\"waited_read\"")
                    && l.contains("tenant=\"shop\"")
                    && l.rsplit(' ').next() == Some(&d("routed_waited_reads").to_string())
            })
        })
    });

    // strong: every read on the syd node goes to the primary.
    put(&w, "strong", 2);
    wait("syd to apply strong", Duration::from_secs(20), || {
        routing(&mut a)["consistency"] == "strong"
    });
    let before = routing(&mut a);
    for _ in 0..5 {
        assert_eq!(strlen(&mut a), 2_000_000 + rounds as i64 - 1);
    }
    let after = routing(&mut a);
    let d = |k: &str| count(&after, k) - count(&before, k);
    assert_eq!(d("routed_primary_reads"), 5, "{after:?}");
    assert_eq!(d("routed_local_reads"), 0, "{after:?}");

    // nearest: reads stay on the syd copy, even right after the
    // connection's own write.
    put(&w, "nearest", 3);
    wait("syd to apply nearest", Duration::from_secs(20), || {
        routing(&mut a)["consistency"] == "nearest"
    });
    let before = routing(&mut a);
    assert_eq!(
        a.cmd(&["SET", "big", "small"]).ok(),
        Some(Value::Simple(b"OK".to_vec()))
    );
    let _ = strlen(&mut a);
    let after = routing(&mut a);
    let d = |k: &str| count(&after, k) - count(&before, k);
    assert_eq!(d("routed_primary_writes"), 1, "{after:?}");
    assert_eq!(d("routed_local_reads"), 1, "{after:?}");
    assert_eq!(
        d("routed_primary_reads") + d("routed_waited_reads"),
        0,
        "{after:?}"
    );
    let _ = std::fs::remove_dir_all(&spec.dir);
}
