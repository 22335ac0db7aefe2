//! `FAILOVER` (Redis 7's coordinated failover) on standalone servers, with
//! a real redis-server on the other side in both directions: an anykv
//! primary hands its role to its redis-server replica, and a redis-server
//! primary hands its role to its anykv replica — writes held meanwhile,
//! none acknowledged lost, the old primary following the new one with a
//! partial resync (asserted on the new primary's `sync_partial_ok`). Also:
//! Redis's errors, the timeout that gives up and lifts the pause, ABORT.

mod common;
mod keyspace;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{anykv_bin, start_anykv_with, start_redis, RespConn, ServerProcess, Value};
use keyspace::{call, compare, info, keyspace_of, random_write, run, wait_for};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn start_anykv() -> ServerProcess {
    start_anykv_with(&anykv_bin(), &["--hz", "50"])
}

fn start_redis_replica_of(port: u16) -> ServerProcess {
    start_redis(&["--replicaof".into(), "127.0.0.1".into(), port.to_string()])
}

fn role(c: &mut RespConn) -> String {
    info(c, "replication", "role").expect("role")
}

fn stat(c: &mut RespConn, field: &str) -> u64 {
    info(c, "stats", field)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("INFO stats {field}"))
}

fn err(v: Value) -> String {
    match v {
        Value::Error(e) => String::from_utf8_lossy(&e).into_owned(),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn linked(c: &mut RespConn) -> bool {
    info(c, "replication", "master_link_status").as_deref() == Some("up")
}

fn caught_up(p: &mut RespConn, r: &mut RespConn) {
    wait_for("the replica to catch up", Duration::from_secs(20), || {
        let master = info(p, "replication", "master_repl_offset");
        master.is_some() && master == info(r, "replication", "slave_repl_offset")
    });
}

/// An anykv primary and its redis-server replica, linked and caught up.
fn primary_and_caught_up_replica() -> (ServerProcess, RespConn, ServerProcess, RespConn) {
    let p_srv = start_anykv();
    let mut p = p_srv.connect();
    let r_srv = start_redis_replica_of(p_srv.port);
    let mut r = r_srv.connect();
    wait_for("the replica's link", Duration::from_secs(20), || {
        linked(&mut r)
    });
    caught_up(&mut p, &mut r);
    (p_srv, p, r_srv, r)
}

/// Sends `sig` (`-STOP`, `-CONT`) to the server's process.
fn signal(srv: &ServerProcess, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &srv.pid().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig}");
}

/// A client incrementing a counter until told to stop: the last value the
/// primary acknowledged, and how many increments were refused (`READONLY`
/// once the old primary follows the new one).
fn counting(port: u16) -> (Arc<AtomicBool>, std::thread::JoinHandle<(i64, u64)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let h = std::thread::spawn(move || {
        let mut c = RespConn::connect(port).expect("counter client");
        let (mut last, mut refused) = (0i64, 0u64);
        while !flag.load(Ordering::Relaxed) {
            match call(&mut c, &["INCR", "counter"]) {
                Value::Int(n) => last = n,
                Value::Error(e) if e.starts_with(b"READONLY") => refused += 1,
                other => panic!("INCR: {other:?}"),
            }
        }
        (last, refused)
    });
    (stop, h)
}

/// An anykv primary with a redis-server replica: FAILOVER's errors are
/// Redis's, then FAILOVER hands over. Every increment anykv acknowledged
/// is on redis-server afterwards, later ones are refused with READONLY,
/// anykv follows redis-server with a partial resync, and writes to the new
/// primary reach it.
#[test]
fn an_anykv_primary_hands_over_to_its_redis_server_replica() {
    let p_srv = start_anykv();
    let mut p = p_srv.connect();
    assert_eq!(
        err(call(&mut p, &["FAILOVER"])),
        "ERR FAILOVER requires connected replicas."
    );
    let r_srv = start_redis_replica_of(p_srv.port);
    let mut r = r_srv.connect();
    wait_for("the replica's link", Duration::from_secs(20), || {
        linked(&mut r)
    });
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..300 {
        let cmd = random_write(&mut rng);
        run(&mut p, &cmd);
    }
    caught_up(&mut p, &mut r);
    for (args, want) in [
        (
            vec!["FAILOVER", "TO", "127.0.0.1", "1"],
            "ERR FAILOVER target HOST and PORT is not a replica.",
        ),
        (
            vec!["FAILOVER", "FORCE"],
            "ERR FAILOVER with force option requires both a timeout and target HOST and IP.",
        ),
        (
            vec!["FAILOVER", "TIMEOUT", "0"],
            "ERR FAILOVER timeout must be greater than 0",
        ),
        (vec!["FAILOVER", "ABORT"], "ERR No failover in progress."),
        (vec!["FAILOVER", "NOW"], "ERR syntax error"),
    ] {
        assert_eq!(err(call(&mut p, &args)), want, "{args:?}");
    }

    let (stop, counter) = counting(p_srv.port);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(call(&mut p, &["FAILOVER"]), Value::Simple(b"OK".to_vec()));
    assert_eq!(
        err(call(&mut p, &["FAILOVER"])),
        "ERR FAILOVER already in progress."
    );
    wait_for(
        "anykv to follow redis-server",
        Duration::from_secs(20),
        || role(&mut p) == "slave" && role(&mut r) == "master" && linked(&mut p),
    );
    assert_eq!(
        info(&mut p, "replication", "master_failover_state").as_deref(),
        Some("no-failover")
    );
    wait_for("a refused increment", Duration::from_secs(10), || {
        counter.is_finished() || !matches!(call(&mut p, &["INCR", "x"]), Value::Int(_))
    });
    stop.store(true, Ordering::Relaxed);
    let (last, _) = counter.join().expect("counter");
    assert!(last > 0, "no increment acknowledged before the failover");
    let on_new = match call(&mut r, &["GET", "counter"]) {
        Value::Bulk(b) => String::from_utf8_lossy(&b).parse::<i64>().expect("counter"),
        other => panic!("GET counter: {other:?}"),
    };
    assert_eq!(
        on_new, last,
        "the new primary has every acknowledged increment and no other"
    );
    assert_eq!(
        stat(&mut r, "sync_partial_ok"),
        1,
        "anykv resynced partially"
    );
    assert_eq!(stat(&mut r, "sync_full"), 0);
    // The new primary's writes reach the old one.
    call(&mut r, &["SET", "after", "failover"]);
    caught_up(&mut r, &mut p);
    compare(&keyspace_of(&mut r), &keyspace_of(&mut p));
}

/// A redis-server primary hands its role to its anykv replica (`FAILOVER
/// TO`): anykv takes the PSYNC ... FAILOVER, promotes itself and serves
/// redis-server a partial resync.
#[test]
fn a_redis_server_primary_hands_over_to_its_anykv_replica() {
    let p_srv = start_redis(&[]);
    let mut p = p_srv.connect();
    let a_srv = start_anykv();
    let mut a = a_srv.connect();
    call(&mut a, &["REPLICAOF", "127.0.0.1", &p_srv.port.to_string()]);
    wait_for("anykv's link", Duration::from_secs(20), || linked(&mut a));
    let mut rng = StdRng::seed_from_u64(12);
    for _ in 0..300 {
        let cmd = random_write(&mut rng);
        run(&mut p, &cmd);
    }
    caught_up(&mut p, &mut a);
    let port = a_srv.port.to_string();
    assert_eq!(
        call(&mut p, &["FAILOVER", "TO", "127.0.0.1", &port]),
        Value::Simple(b"OK".to_vec())
    );
    wait_for(
        "redis-server to follow anykv",
        Duration::from_secs(20),
        || role(&mut a) == "master" && role(&mut p) == "slave" && linked(&mut p),
    );
    assert_eq!(
        stat(&mut a, "sync_partial_ok"),
        1,
        "redis-server resynced partially"
    );
    assert_eq!(stat(&mut a, "sync_full"), 0);
    assert_eq!(
        call(&mut a, &["SET", "after", "failover"]),
        Value::Simple(b"OK".to_vec())
    );
    caught_up(&mut a, &mut p);
    compare(&keyspace_of(&mut a), &keyspace_of(&mut p));
}

/// A replica that cannot catch up (stopped): writes are held while the
/// failover waits, `TIMEOUT` gives up and lets them through, and `ABORT`
/// does the same at once; anykv stays the primary throughout.
#[test]
fn a_failover_that_cannot_finish_gives_up_and_lets_writes_through() {
    let (p_srv, mut p, r_srv, mut r) = primary_and_caught_up_replica();
    let signal = |sig: &str| signal(&r_srv, sig);
    signal("-STOP");

    // TIMEOUT: a write sent meanwhile waits, then runs.
    assert_eq!(
        call(&mut p, &["FAILOVER", "TIMEOUT", "500"]),
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(
        info(&mut p, "replication", "master_failover_state").as_deref(),
        Some("waiting-for-sync")
    );
    let port = p_srv.port;
    let held = std::thread::spawn(move || {
        let mut c = RespConn::connect(port).expect("client");
        let t = std::time::Instant::now();
        let v = call(&mut c, &["SET", "held", "1"]);
        (v, t.elapsed())
    });
    let (v, took) = held.join().expect("held write");
    assert_eq!(v, Value::Simple(b"OK".to_vec()));
    assert!(
        took >= Duration::from_millis(300),
        "the write was not held ({took:?})"
    );
    assert_eq!(role(&mut p), "master");
    assert_eq!(
        info(&mut p, "replication", "master_failover_state").as_deref(),
        Some("no-failover")
    );

    // ABORT: at once.
    assert_eq!(call(&mut p, &["FAILOVER"]), Value::Simple(b"OK".to_vec()));
    let held = std::thread::spawn(move || {
        let mut c = RespConn::connect(port).expect("client");
        call(&mut c, &["SET", "held2", "1"])
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!held.is_finished(), "a write ran during the failover");
    assert_eq!(
        call(&mut p, &["FAILOVER", "ABORT"]),
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(
        held.join().expect("held write"),
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(role(&mut p), "master");
    signal("-CONT");
    caught_up(&mut p, &mut r);
    compare(&keyspace_of(&mut p), &keyspace_of(&mut r));
}

/// `FAILOVER TO host port TIMEOUT ms FORCE`: the target has not
/// acknowledged the primary's last write when the time is up (it is
/// stopped), and the failover goes on anyway, as Redis's does: the primary
/// follows the target, which takes over once it runs again, with the write
/// it had not acknowledged (it was in its socket).
#[test]
fn a_forced_failover_goes_on_past_its_timeout() {
    let (_p_srv, mut p, r_srv, mut r) = primary_and_caught_up_replica();
    let signal = |sig: &str| signal(&r_srv, sig);
    signal("-STOP");
    assert_eq!(
        call(&mut p, &["SET", "unacked", "1"]),
        Value::Simple(b"OK".to_vec())
    );
    let port = r_srv.port.to_string();
    assert_eq!(
        call(
            &mut p,
            &[
                "FAILOVER",
                "TO",
                "127.0.0.1",
                &port,
                "TIMEOUT",
                "300",
                "FORCE"
            ]
        ),
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(
        info(&mut p, "replication", "master_failover_state").as_deref(),
        Some("waiting-for-sync")
    );
    // Past the timeout it does not give up: it hands over, and waits for
    // the stopped target's answer.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        info(&mut p, "replication", "master_failover_state").as_deref(),
        Some("failover-in-progress")
    );
    signal("-CONT");
    wait_for("the roles swapped", Duration::from_secs(20), || {
        role(&mut p) == "slave" && role(&mut r) == "master"
    });
    assert_eq!(
        call(&mut r, &["GET", "unacked"]),
        Value::Bulk(b"1".to_vec())
    );
    assert_eq!(
        call(&mut r, &["SET", "after", "1"]),
        Value::Simple(b"OK".to_vec())
    );
    wait_for("the old primary following", Duration::from_secs(20), || {
        call(&mut p, &["GET", "after"]) == Value::Bulk(b"1".to_vec())
    });
}
