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
//! `nearest` none does. A transaction, WATCH and a blocking pop on the syd
//! node run on the primary, on the connection's own stream, as on one
//! Redis; a SCAN iteration stays on the copy that gave its cursor. A
//! message published on the syd node reaches subscribers on the
//! primary's node and on the cdg node.

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
    let cdg = w.node("n3").expect("n3").clone();
    assert_eq!(cdg.region, "cdg");
    let placed = common::placed_tenant(&w, TENANT);
    let primary = w
        .node(placed["primary"].as_str().expect("primary"))
        .expect("primary node")
        .clone();
    assert_eq!(primary.region, "iad");
    let mut p = common::shop_login(primary.resp, TOKEN, "the primary takes writes", |c| {
        matches!(c.cmd(&["SET", "big", ""]), Ok(Value::Simple(_)))
    });
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

    scan_stays_on_its_copy(&syd.resp, &mut p);
    pipelined_writes_go_at_once(&syd.resp);
    scripts_from_a_read_region(&syd.resp, &mut p);
    pinned_to_the_primary(&syd.resp, &mut p);
    published_everywhere(&syd.resp, &[primary.resp, cdg.resp]);

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

fn ok() -> Value {
    Value::Simple(b"OK".to_vec())
}

/// MULTI/EXEC, WATCH and BLPOP through the syd node: they run on the
/// primary (`p` is a connection there), as one client.
fn pinned_to_the_primary(syd: &std::net::SocketAddr, p: &mut RespConn) {
    let mut a = common::login_ready(*syd, "shop", TOKEN, |_| true).expect("A on syd");
    let pinned0 = count(&routing(&mut a), "routed_pinned");

    // A transaction: queued on the primary, run there at EXEC.
    assert_eq!(a.cmd(&["MULTI"]).ok(), Some(ok()));
    assert_eq!(
        a.cmd(&["SET", "tx", "1"]).ok(),
        Some(Value::Simple(b"QUEUED".to_vec()))
    );
    assert_eq!(
        a.cmd(&["INCR", "tx"]).ok(),
        Some(Value::Simple(b"QUEUED".to_vec()))
    );
    // The connection's own commands stay on the node; SELECT would change
    // the database under the queued commands, so it is refused.
    let sel = a.cmd(&["SELECT", "1"]).expect("SELECT");
    assert!(
        matches!(&sel, Value::Error(e) if e.starts_with(b"ERR SELECT inside MULTI")),
        "{sel:?}"
    );
    assert_eq!(
        a.cmd(&["EXEC"]).ok(),
        Some(Value::Array(vec![ok(), Value::Int(2)]))
    );
    assert_eq!(p.cmd(&["GET", "tx"]).ok(), Some(Value::Bulk(b"2".to_vec())));
    assert_eq!(
        count(&routing(&mut a), "routed_pinned") - pinned0,
        4,
        "MULTI, SET, INCR, EXEC on the pin"
    );

    // WATCH sees the primary's key: another client's write there aborts
    // the transaction; untouched, it commits.
    assert_eq!(a.cmd(&["WATCH", "tx"]).ok(), Some(ok()));
    assert_eq!(a.cmd(&["GET", "tx"]).ok(), Some(Value::Bulk(b"2".to_vec())));
    assert_eq!(p.cmd(&["SET", "tx", "other"]).ok(), Some(ok()));
    assert_eq!(a.cmd(&["MULTI"]).ok(), Some(ok()));
    a.cmd(&["SET", "tx", "mine"]).expect("queued");
    assert_eq!(a.cmd(&["EXEC"]).ok(), Some(Value::NilArray), "aborted");
    assert_eq!(
        p.cmd(&["GET", "tx"]).ok(),
        Some(Value::Bulk(b"other".to_vec()))
    );
    assert_eq!(a.cmd(&["WATCH", "tx"]).ok(), Some(ok()));
    assert_eq!(a.cmd(&["MULTI"]).ok(), Some(ok()));
    a.cmd(&["SET", "tx", "mine"]).expect("queued");
    assert_eq!(a.cmd(&["EXEC"]).ok(), Some(Value::Array(vec![ok()])));
    assert_eq!(
        p.cmd(&["GET", "tx"]).ok(),
        Some(Value::Bulk(b"mine".to_vec()))
    );
    // RESET ends a transaction: EXEC then has none.
    common::reset_ends_multi(&mut a, TOKEN, "tx", |_| {});
    assert_eq!(
        p.cmd(&["GET", "tx"]).ok(),
        Some(Value::Bulk(b"mine".to_vec()))
    );

    // A blocking pop waits on the primary and is served by a push there.
    let blocked0: u64 = common::info_field(p, "clients", "blocked_clients")
        .parse()
        .expect("n");
    let popper = std::thread::spawn(move || {
        let r = a.cmd(&["BLPOP", "jobs", "0"]).expect("BLPOP");
        (a, r)
    });
    common::wait_for(
        "the pop blocked on the primary",
        Duration::from_secs(10),
        || {
            common::info_field(p, "clients", "blocked_clients")
                .parse::<u64>()
                .ok()
                == Some(blocked0 + 1)
        },
    );
    assert_eq!(p.cmd(&["RPUSH", "jobs", "j1"]).ok(), Some(Value::Int(1)));
    let (mut a, popped) = popper.join().expect("the popper");
    assert_eq!(
        popped,
        Value::Array(vec![
            Value::Bulk(b"jobs".to_vec()),
            Value::Bulk(b"j1".to_vec())
        ])
    );
    // The pin is let go after the pop: a read is routed by consistency
    // again.
    let pinned1 = count(&routing(&mut a), "routed_pinned");
    a.cmd(&["GET", "tx"]).expect("GET");
    assert_eq!(count(&routing(&mut a), "routed_pinned"), pinned1);

    // A client that goes away while its pop waits ends the wait there.
    let mut gone = common::login_ready(*syd, "shop", TOKEN, |_| true).expect("on syd");
    gone.send_all(&[vec!["BLPOP", "never", "0"]]).expect("send");
    common::wait_for("the second pop blocked", Duration::from_secs(10), || {
        common::info_field(p, "clients", "blocked_clients")
            .parse::<u64>()
            .ok()
            == Some(blocked0 + 1)
    });
    drop(gone);
    common::wait_for("the pop's wait ended", Duration::from_secs(10), || {
        common::info_field(p, "clients", "blocked_clients")
            .parse::<u64>()
            .ok()
            == Some(blocked0)
    });
}

/// PUBLISH on the syd node reaches subscribers on the primary's node and on
/// the cdg replica's node: the primary's stream carries it everywhere. A
/// MONITOR on the syd node shows the PUBLISH it forwarded.
fn published_everywhere(syd: &std::net::SocketAddr, others: &[std::net::SocketAddr]) {
    let mut subs: Vec<RespConn> = others
        .iter()
        .map(|addr| {
            let mut c = common::login_ready(*addr, "shop", TOKEN, |_| true).expect("subscriber");
            assert_eq!(
                c.cmd(&["SUBSCRIBE", "news"]).ok(),
                Some(Value::Array(vec![
                    Value::Bulk(b"subscribe".to_vec()),
                    Value::Bulk(b"news".to_vec()),
                    Value::Int(1)
                ]))
            );
            c
        })
        .collect();
    let mut a = common::login_ready(*syd, "shop", TOKEN, |_| true).expect("on syd");
    // A MONITOR on the syd node shows the request it forwards.
    let mut mon = common::login_ready(*syd, "shop", TOKEN, |_| true).expect("monitor");
    assert_eq!(mon.cmd(&["MONITOR"]).ok(), Some(ok()));
    // The primary's node counts its own subscriber (one of `others`).
    assert_eq!(
        a.cmd(&["PUBLISH", "news", "hello"]).ok(),
        Some(Value::Int(1))
    );
    for (addr, c) in others.iter().zip(subs.iter_mut()) {
        assert_eq!(
            c.read_reply().ok(),
            Some(Value::Array(vec![
                Value::Bulk(b"message".to_vec()),
                Value::Bulk(b"news".to_vec()),
                Value::Bulk(b"hello".to_vec())
            ])),
            "the subscriber on {addr}"
        );
    }
    match mon.read_reply() {
        Ok(Value::Simple(line)) => assert!(
            line.ends_with(br#""PUBLISH" "news" "hello""#),
            "MONITOR showed {}",
            String::from_utf8_lossy(&line)
        ),
        other => panic!("MONITOR: {other:?}"),
    }
}

/// A SCAN cursor is valid on the copy that gave it: an iteration that
/// started on the syd copy continues there even when the connection's own
/// write has not arrived yet (it neither waits nor goes to the primary).
fn scan_stays_on_its_copy(syd: &std::net::SocketAddr, p: &mut RespConn) {
    let keys: Vec<String> = (0..30).map(|i| format!("scan{i}")).collect();
    let mut mset = vec!["MSET"];
    for k in &keys {
        mset.push(k);
        mset.push("v");
    }
    assert_eq!(p.cmd(&mset).ok(), Some(ok()));
    let mut a = common::login_ready(*syd, "shop", TOKEN, |_| true).expect("A on syd");
    wait("syd has the keys", Duration::from_secs(30), || {
        a.cmd(&["EXISTS", "scan29"]).ok() == Some(Value::Int(1))
    });
    let scan = |a: &mut RespConn, cursor: &str| -> String {
        match a.cmd(&["SCAN", cursor, "COUNT", "2"]) {
            Ok(Value::Array(v)) => match &v[0] {
                Value::Bulk(c) => String::from_utf8_lossy(c).into_owned(),
                other => panic!("cursor {other:?}"),
            },
            other => panic!("SCAN: {other:?}"),
        }
    };
    let cursor = scan(&mut a, "0");
    assert_ne!(cursor, "0", "the iteration has more to go");
    // The write makes the copy lack the connection's position (a value
    // megabytes long takes a while to cross the WAN).
    let before = routing(&mut a);
    assert_eq!(
        a.cmd(&["SET", "scanbig", &"y".repeat(3_000_000)]).ok(),
        Some(ok())
    );
    scan(&mut a, &cursor);
    let after = routing(&mut a);
    let d = |k: &str| count(&after, k) - count(&before, k);
    assert_eq!(d("routed_local_reads"), 1, "{after:?}");
    assert_eq!(
        d("routed_waited_reads") + d("routed_primary_reads"),
        0,
        "{after:?}"
    );
    // A new iteration follows the connection's position as any read.
    let before = routing(&mut a);
    scan(&mut a, "0");
    let after = routing(&mut a);
    let d = |k: &str| count(&after, k) - count(&before, k);
    assert_eq!(d("routed_local_reads"), 0, "{after:?}");
    assert_eq!(
        d("routed_waited_reads") + d("routed_primary_reads"),
        1,
        "{after:?}"
    );
}

/// Scripts from the syd node: SCRIPT LOAD, EXISTS and EVALSHA reach the
/// primary's cache, so loading then calling by sha works from a read
/// region; a script's writes are the primary's; read-only scripts run
/// too, the one this copy has not cached on the primary. Functions:
/// loaded and called on the primary, replicated, read on the copy.
fn scripts_from_a_read_region(syd: &std::net::SocketAddr, p: &mut RespConn) {
    let mut a = common::login_ready(*syd, "shop", TOKEN, |_| true).expect("A on syd");
    let incr = "return redis.call('INCR', KEYS[1])";
    let sha = match a.cmd(&["SCRIPT", "LOAD", incr]) {
        Ok(Value::Bulk(s)) => String::from_utf8(s).expect("a sha"),
        other => panic!("SCRIPT LOAD on syd: {other:?}"),
    };
    for c in [&mut a, &mut *p] {
        assert_eq!(
            c.cmd(&["SCRIPT", "EXISTS", &sha]).ok(),
            Some(Value::Array(vec![Value::Int(1)])),
            "the primary has the script"
        );
    }
    assert_eq!(
        a.cmd(&["EVALSHA", &sha, "1", "scripted"]).ok(),
        Some(Value::Int(1))
    );
    assert_eq!(
        a.cmd(&["EVAL", incr, "1", "scripted"]).ok(),
        Some(Value::Int(2))
    );
    assert_eq!(
        p.cmd(&["GET", "scripted"]).ok(),
        Some(Value::Bulk(b"2".to_vec()))
    );
    let get = "#!lua flags=no-writes\nreturn redis.call('GET', KEYS[1])";
    let ro = match a.cmd(&["SCRIPT", "LOAD", get]) {
        Ok(Value::Bulk(s)) => String::from_utf8(s).expect("a sha"),
        other => panic!("SCRIPT LOAD on syd: {other:?}"),
    };
    // (Read your writes: the copy answers once it has the write.)
    assert_eq!(
        a.cmd(&["EVALSHA_RO", &ro, "1", "scripted"]).ok(),
        Some(Value::Bulk(b"2".to_vec()))
    );
    assert_eq!(
        a.cmd(&["EVAL_RO", get, "1", "scripted"]).ok(),
        Some(Value::Bulk(b"2".to_vec()))
    );
    assert!(matches!(
        a.cmd(&["EVAL_RO", incr, "1", "scripted"]),
        Ok(Value::Error(e)) if e.starts_with(b"ERR Write commands are not allowed from read-only scripts.")
    ));
    // Functions are data: FUNCTION LOAD from syd reaches the primary and
    // replicates back; FCALL writes there, FCALL_RO reads on the copy.
    let lib = "#!lua name=cons\nredis.register_function('bump', function(k) return redis.call('INCR', k[1]) end)\n\
        redis.register_function{function_name='peek', callback=function(k) return redis.call('GET', k[1]) end, flags={'no-writes'}}";
    assert_eq!(
        a.cmd(&["FUNCTION", "LOAD", lib]).ok(),
        Some(Value::Bulk(b"cons".to_vec()))
    );
    assert_eq!(
        a.cmd(&["FCALL", "bump", "1", "scripted"]).ok(),
        Some(Value::Int(3))
    );
    assert_eq!(
        p.cmd(&["GET", "scripted"]).ok(),
        Some(Value::Bulk(b"3".to_vec()))
    );
    common::wait_for(
        "the copy on syd to have the library",
        std::time::Duration::from_secs(10),
        || a.cmd(&["FCALL_RO", "peek", "1", "scripted"]).ok() == Some(Value::Bulk(b"3".to_vec())),
    );
}

/// A pipeline of writes on the syd node goes to the primary at once, in
/// order: a hundred INCRs cost a few round trips to iad (257 ms each), not
/// a hundred; a read among them sees the writes before it.
fn pipelined_writes_go_at_once(syd: &std::net::SocketAddr) {
    let mut a = common::login_ready(*syd, "shop", TOKEN, |_| true).expect("A on syd");
    let mut cmds: Vec<Vec<&str>> = (0..100).map(|_| vec!["INCR", "piped"]).collect();
    cmds.insert(50, vec!["GET", "piped"]);
    let start = std::time::Instant::now();
    a.send_all(&cmds).expect("pipeline");
    let replies: Vec<Value> = (0..cmds.len())
        .map(|i| {
            a.read_reply()
                .unwrap_or_else(|e| panic!("reply {i} after {:?}: {e}", start.elapsed()))
        })
        .collect();
    let took = start.elapsed();
    let mut want: Vec<Value> = (1..=100).map(Value::Int).collect();
    want.insert(50, Value::Bulk(b"50".to_vec()));
    assert_eq!(replies, want);
    assert!(
        took < Duration::from_secs(5),
        "101 pipelined requests took {took:?}: the writes went one round trip each"
    );
}
