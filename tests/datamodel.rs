//! Integration tests of the data-model machinery clients see across
//! connections: blocking list (and sorted-set) commands, MULTI/EXEC/WATCH,
//! pub/sub and keyspace notifications.
//!
//! Every expected reply is Redis 7.0.15's, byte for byte. To check the
//! expectations themselves, run the file against the reference server:
//!
//! ```text
//! ANYKV_SERVER_TEST_REFERENCE=1 cargo test --test datamodel
//! ```
//!
//! which starts `/usr/bin/redis-server` instead of anykv (anykv-only options
//! such as `--executors` are dropped). The keyspace-notification tests always
//! start a reference redis-server as well and compare the message streams of
//! the two servers; against the reference they compare two redis-servers.
//!
//! `DUMP_NOTIFY=1` prints the reference's per-step notifications.
//!
//! Sorted-set blocking commands (BZPOPMIN, BZPOPMAX, BZMPOP) and the hash,
//! set and sorted-set parts of the notification script only run when the
//! server under test knows the commands (`COMMAND INFO` answers non-nil).

mod common;

use common::{
    escape, poll_every, resp_str, start_redis, start_under_test, Conn, Raw, RespConn,
    ServerProcess, Value,
};
use std::collections::BTreeSet;
use std::io::{self, Read};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Starts the server under test on a free port with extra arguments (and
/// `--enable-debug-command yes`).
fn start(extra: &[&str]) -> ServerProcess {
    let mut all = vec!["--enable-debug-command", "yes"];
    all.extend_from_slice(extra);
    start_under_test(&all)
}

// ---------------------------------------------------------------------------
// Clients and helpers
// ---------------------------------------------------------------------------

/// This file's raw clients shut the socket down both ways when dropped.
impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.s.shutdown(Shutdown::Both);
    }
}

/// The RESP2 encoding of an array of bulk strings (`*2 $1 k $1 v`).
fn bulks(items: &[&str]) -> Vec<u8> {
    resp_str(items)
}

/// Runs one command; an I/O error fails the test.
#[track_caller]
fn call(c: &mut RespConn, args: &[&str]) -> Value {
    c.cmd(args)
        .unwrap_or_else(|e| panic!("{args:?}: I/O error {e}"))
}

fn bulk(s: &str) -> Value {
    Value::Bulk(s.as_bytes().to_vec())
}

fn simple(s: &str) -> Value {
    Value::Simple(s.as_bytes().to_vec())
}

fn ok() -> Value {
    simple("OK")
}

fn err(s: &str) -> Value {
    Value::Error(s.as_bytes().to_vec())
}

fn arr(items: Vec<Value>) -> Value {
    Value::Array(items)
}

fn barr(items: &[&str]) -> Value {
    arr(items.iter().map(|s| bulk(s)).collect())
}

fn info_num(c: &mut RespConn, section: &str, field: &str) -> i64 {
    let v = common::info_field(c, section, field);
    v.parse()
        .unwrap_or_else(|_| panic!("INFO {field} is not a number: {v}"))
}

/// Polls `f` every 5 ms until it returns `Some`, or panics after `timeout`.
#[track_caller]
fn poll<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    poll_every(Duration::from_millis(5), timeout, what, f)
}

/// Waits until exactly `n` clients are blocked (INFO clients).
#[track_caller]
fn wait_blocked(c: &mut RespConn, n: i64) {
    let mut last = -1;
    poll(
        Duration::from_secs(5),
        &format!("blocked_clients to become {n}"),
        || {
            last = info_num(c, "clients", "blocked_clients");
            (last == n).then_some(())
        },
    );
}

/// Waits until client `id` is blocked (`flags=b` in CLIENT LIST ID).
#[track_caller]
fn wait_client_blocked(c: &mut RespConn, id: u64) {
    let id = id.to_string();
    poll(
        Duration::from_secs(5),
        &format!("client {id} to block"),
        || match call(c, &["CLIENT", "LIST", "ID", &id]) {
            Value::Bulk(b) => String::from_utf8_lossy(&b)
                .contains(" flags=b ")
                .then_some(()),
            other => panic!("CLIENT LIST ID {id} replied {other:?}"),
        },
    );
}

/// Whether the server knows `name` (`COMMAND INFO` answers non-nil).
fn has_command(c: &mut RespConn, name: &str) -> bool {
    match call(c, &["COMMAND", "INFO", name]) {
        Value::Array(items) => matches!(items.first(), Some(Value::Array(_))),
        other => panic!("COMMAND INFO {name} replied {other:?}"),
    }
}

/// Runs `f` and returns its result with the time it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t0 = Instant::now();
    let r = f();
    (r, t0.elapsed())
}

// ---------------------------------------------------------------------------
// 1. Blocking commands
// ---------------------------------------------------------------------------

/// 20 clients block on one key in a known order; 20 pushes of one element
/// each serve them in that order, one element each.
#[test]
fn blpop_fairness_one_push_at_a_time() {
    let srv = start(&[]);
    let mut ctl = srv.connect();
    let mut clients: Vec<Raw> = Vec::new();
    for i in 0..20 {
        let mut c = Raw::connect(srv.port);
        c.send_cmd(&["BLPOP", "fair", "0"]);
        wait_blocked(&mut ctl, i + 1);
        clients.push(c);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let e = format!("e{i:02}");
        // The push replies the length before any waiter is served.
        assert_eq!(call(&mut ctl, &["RPUSH", "fair", &e]), Value::Int(1));
        c.expect(&bulks(&["fair", &e]));
    }
    assert_eq!(call(&mut ctl, &["EXISTS", "fair"]), Value::Int(0));
    wait_blocked(&mut ctl, 0);
    for c in &mut clients {
        c.expect_silence(Duration::from_millis(20));
    }
}

/// One RPUSH of 20 elements serves 20 BRPOP waiters in blocking order; the
/// waiters pop from the right, so the first gets the last element.
#[test]
fn brpop_fairness_one_multi_element_push() {
    let srv = start(&[]);
    let mut ctl = srv.connect();
    let mut clients: Vec<Raw> = Vec::new();
    for i in 0..20 {
        let mut c = Raw::connect(srv.port);
        c.send_cmd(&["BRPOP", "nokey", "fair", "0"]);
        wait_blocked(&mut ctl, i + 1);
        clients.push(c);
    }
    let mut push = vec!["RPUSH".to_string(), "fair".to_string()];
    push.extend((0..20).map(|i| format!("e{i:02}")));
    let push: Vec<&str> = push.iter().map(|s| s.as_str()).collect();
    assert_eq!(call(&mut ctl, &push), Value::Int(20));
    for (i, c) in clients.iter_mut().enumerate() {
        c.expect(&bulks(&["fair", &format!("e{:02}", 19 - i)]));
    }
    assert_eq!(call(&mut ctl, &["EXISTS", "fair"]), Value::Int(0));
    wait_blocked(&mut ctl, 0);
}

/// Clients with a timeout and clients without, interleaved: the timed ones
/// reply nil after their timeout and leave the queue, so a later push serves
/// only the others, still in blocking order.
#[test]
fn many_clients_with_timeouts_leave_the_queue() {
    let srv = start(&[]);
    let mut ctl = srv.connect();
    let mut forever: Vec<Raw> = Vec::new();
    let mut timed_clients: Vec<(Raw, Instant)> = Vec::new();
    // Each client is known blocked (CLIENT LIST flags=b) before the next
    // one blocks, so the queue order is known even if a timeout fires early.
    for _ in 0..10 {
        let mut f = Raw::connect(srv.port);
        let id = f.client_id();
        f.send_cmd(&["BLPOP", "mixed", "0"]);
        wait_client_blocked(&mut ctl, id);
        forever.push(f);
        let mut t = Raw::connect(srv.port);
        let id = t.client_id();
        let sent = Instant::now();
        t.send_cmd(&["BLPOP", "mixed", "1.5"]);
        wait_client_blocked(&mut ctl, id);
        timed_clients.push((t, sent));
    }
    for (t, sent) in &mut timed_clients {
        t.expect(b"*-1\r\n");
        let waited = sent.elapsed();
        assert!(
            waited >= Duration::from_millis(1500),
            "BLPOP with timeout 1.5 answered after {waited:?}"
        );
    }
    wait_blocked(&mut ctl, 10);
    let mut push = vec!["RPUSH".to_string(), "mixed".to_string()];
    push.extend((0..10).map(|i| format!("e{i:02}")));
    let push: Vec<&str> = push.iter().map(|s| s.as_str()).collect();
    assert_eq!(call(&mut ctl, &push), Value::Int(10));
    for (i, f) in forever.iter_mut().enumerate() {
        f.expect(&bulks(&["mixed", &format!("e{i:02}")]));
    }
    wait_blocked(&mut ctl, 0);
    assert_eq!(call(&mut ctl, &["EXISTS", "mixed"]), Value::Int(0));
}

/// A timeout of 0.1 s times out after at least 100 ms with a nil array:
/// Redis 7.0 replies `*-1` on a timeout for every blocking list command,
/// BLMOVE and BRPOPLPUSH included (unlike their non-blocking `$-1`).
#[test]
fn fractional_timeouts_reply_nil_after_the_timeout() {
    let srv = start(&[]);
    let mut c = srv.connect();
    let cases: &[(&[&str], Value)] = &[
        (&["BLPOP", "k1", "k2", "0.1"], Value::NilArray),
        (&["BRPOP", "k1", "0.1"], Value::NilArray),
        (
            &["BLMOVE", "k1", "k2", "LEFT", "RIGHT", "0.1"],
            Value::NilArray,
        ),
        (&["BRPOPLPUSH", "k1", "k2", "0.1"], Value::NilArray),
        (&["BLMPOP", "0.1", "2", "k1", "k2", "LEFT"], Value::NilArray),
        (
            &["BLMPOP", ".1", "1", "k1", "RIGHT", "COUNT", "3"],
            Value::NilArray,
        ),
    ];
    for (args, want) in cases {
        let (got, took) = timed(|| call(&mut c, args));
        assert_eq!(&got, want, "{args:?}");
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_secs(3),
            "{args:?} answered after {took:?}, expected >= 100 ms"
        );
    }
    // Nothing was created by the timed-out moves.
    assert_eq!(call(&mut c, &["EXISTS", "k1", "k2"]), Value::Int(0));
    assert_eq!(info_num(&mut c, "clients", "blocked_clients"), 0);
}

/// Redis 7.0 rounds the timeout up to the next millisecond
/// (`ceill(timeout * 1000)`): a sub-millisecond timeout is 1 ms, not
/// "block forever".
#[test]
fn sub_millisecond_timeouts_round_up_to_one_ms() {
    let srv = start(&[]);
    let mut c = srv.connect();
    for t in ["0.0001", "0.0009", "1e-10"] {
        let (got, took) = timed(|| c.cmd(&["BLPOP", "k", t]));
        match got {
            Ok(Value::NilArray) => {}
            Ok(other) => panic!("BLPOP k {t}: expected (nil array), got {other:?}"),
            Err(e) => panic!("BLPOP k {t}: no reply ({e}): the client blocked forever"),
        }
        assert!(took < Duration::from_secs(3), "BLPOP k {t} took {took:?}");
    }
}

/// Timeout argument errors, with Redis's texts, for every blocking command.
#[test]
fn blocking_timeout_errors() {
    let srv = start(&[]);
    let mut c = srv.connect();
    let neg = err("ERR timeout is negative");
    let nan = err("ERR timeout is not a float or out of range");
    let cases: &[(&[&str], &Value)] = &[
        (&["BLPOP", "k", "-1"], &neg),
        (&["BLPOP", "k", "-0.5"], &neg),
        (&["BLPOP", "k", "abc"], &nan),
        (&["BLPOP", "k", ""], &nan),
        (&["BLPOP", "k", "1s"], &nan),
        (&["BLPOP", "k", "nan"], &nan),
        (&["BLPOP", "k", "inf"], &neg),
        (&["BLPOP", "k", "1e300"], &neg),
        (&["BRPOP", "k", "-5"], &neg),
        (&["BRPOP", "k", "x"], &nan),
        (&["BLMOVE", "a", "b", "LEFT", "LEFT", "-1"], &neg),
        (&["BLMOVE", "a", "b", "LEFT", "LEFT", "y"], &nan),
        (&["BRPOPLPUSH", "a", "b", "-1"], &neg),
        (&["BRPOPLPUSH", "a", "b", "z"], &nan),
        (&["BLMPOP", "-1", "1", "k", "LEFT"], &neg),
        (&["BLMPOP", "t", "1", "k", "LEFT"], &nan),
    ];
    for (args, want) in cases {
        assert_eq!(&call(&mut c, args), *want, "{args:?}");
    }
    assert_eq!(
        call(&mut c, &["BLMOVE", "a", "b", "UP", "LEFT", "0"]),
        err("ERR syntax error")
    );
    assert_eq!(
        call(&mut c, &["BLMPOP", "0", "0", "k", "LEFT"]),
        err("ERR numkeys should be greater than 0")
    );
    // A wrong-type key replies WRONGTYPE at once instead of blocking.
    assert_eq!(call(&mut c, &["SET", "str", "x"]), ok());
    assert_eq!(
        call(&mut c, &["BLPOP", "str", "0"]),
        err("WRONGTYPE Operation against a key holding the wrong kind of value")
    );
    assert_eq!(info_num(&mut c, "clients", "blocked_clients"), 0);
}

/// Redis parses the timeout as a long double: `1e400` is in range there and
/// overflows the millisecond conversion to a negative number; `1e-400` is a
/// positive timeout rounded up to 1 ms.
#[test]
fn timeouts_beyond_double_range_behave_like_redis() {
    let srv = start(&[]);
    let mut c = srv.connect();
    assert_eq!(
        call(&mut c, &["BLPOP", "k", "1e400"]),
        err("ERR timeout is negative")
    );
    let (got, took) = timed(|| c.cmd(&["BLPOP", "k", "1e-400"]));
    match got {
        Ok(v) => assert_eq!(v, Value::NilArray, "BLPOP k 1e-400"),
        Err(e) => panic!("BLPOP k 1e-400: no reply ({e})"),
    }
    assert!(took < Duration::from_secs(3));
}

/// A push inside MULTI/EXEC serves the blocked client only after EXEC, with
/// the list as the whole transaction left it.
#[test]
fn push_inside_multi_serves_waiters_after_exec() {
    let srv = start(&[]);
    let mut ctl = srv.connect();
    let mut w = Raw::connect(srv.port);
    w.send_cmd(&["BLPOP", "q", "0"]);
    wait_blocked(&mut ctl, 1);

    // Pushed then deleted inside one transaction: nothing for the waiter.
    assert_eq!(call(&mut ctl, &["MULTI"]), ok());
    assert_eq!(call(&mut ctl, &["RPUSH", "q", "gone"]), simple("QUEUED"));
    assert_eq!(call(&mut ctl, &["DEL", "q"]), simple("QUEUED"));
    assert_eq!(
        call(&mut ctl, &["EXEC"]),
        arr(vec![Value::Int(1), Value::Int(1)])
    );
    w.expect_silence(Duration::from_millis(100));
    assert_eq!(info_num(&mut ctl, "clients", "blocked_clients"), 1);

    // RPUSH a b then LPOP inside the transaction: the LPOP gets "a" (the
    // waiter was not served in between), the waiter gets "b" after EXEC.
    assert_eq!(call(&mut ctl, &["MULTI"]), ok());
    assert_eq!(call(&mut ctl, &["RPUSH", "q", "a", "b"]), simple("QUEUED"));
    w.expect_silence(Duration::from_millis(50));
    assert_eq!(call(&mut ctl, &["LPOP", "q"]), simple("QUEUED"));
    assert_eq!(
        call(&mut ctl, &["EXEC"]),
        arr(vec![Value::Int(2), bulk("a")])
    );
    w.expect(&bulks(&["q", "b"]));
    assert_eq!(call(&mut ctl, &["EXISTS", "q"]), Value::Int(0));
    wait_blocked(&mut ctl, 0);
}

/// A client blocked on several keys is served from the key that became
/// ready first (in a transaction: the first pushed).
#[test]
fn several_keys_served_by_first_ready_key() {
    let srv = start(&[]);
    let mut ctl = srv.connect();
    let mut w = Raw::connect(srv.port);
    w.send_cmd(&["BLPOP", "k1", "k2", "k3", "0"]);
    wait_blocked(&mut ctl, 1);
    assert_eq!(call(&mut ctl, &["RPUSH", "k3", "c"]), Value::Int(1));
    w.expect(&bulks(&["k3", "c"]));

    w.send_cmd(&["BLPOP", "k1", "k2", "k3", "0"]);
    wait_blocked(&mut ctl, 1);
    assert_eq!(call(&mut ctl, &["MULTI"]), ok());
    call(&mut ctl, &["RPUSH", "k2", "b"]);
    call(&mut ctl, &["RPUSH", "k1", "a"]);
    assert_eq!(
        call(&mut ctl, &["EXEC"]),
        arr(vec![Value::Int(1), Value::Int(1)])
    );
    w.expect(&bulks(&["k2", "b"]));
    assert_eq!(call(&mut ctl, &["LRANGE", "k1", "0", "-1"]), barr(&["a"]));
    assert_eq!(call(&mut ctl, &["EXISTS", "k2"]), Value::Int(0));
}

/// BLMOVE chains: A waits on `a` (moving to `b`), B waits on `b`
/// (moving to `c`), C waits on `c`. One push to `a` wakes all three.
#[test]
fn blmove_chain_wakes_the_next_waiter() {
    let srv = start(&[]);
    let mut ctl = srv.connect();
    let mut a = Raw::connect(srv.port);
    a.send_cmd(&["BLMOVE", "a", "b", "RIGHT", "LEFT", "0"]);
    wait_blocked(&mut ctl, 1);
    let mut b = Raw::connect(srv.port);
    b.send_cmd(&["BRPOPLPUSH", "b", "c", "0"]);
    wait_blocked(&mut ctl, 2);
    let mut c = Raw::connect(srv.port);
    c.send_cmd(&["BLPOP", "c", "0"]);
    wait_blocked(&mut ctl, 3);

    assert_eq!(call(&mut ctl, &["RPUSH", "a", "x"]), Value::Int(1));
    a.expect(b"$1\r\nx\r\n");
    b.expect(b"$1\r\nx\r\n");
    c.expect(&bulks(&["c", "x"]));
    wait_blocked(&mut ctl, 0);
    assert_eq!(call(&mut ctl, &["EXISTS", "a", "b", "c"]), Value::Int(0));

    // BLMOVE a -> b with a waiter on b, served by LMOVE from another list.
    a.send_cmd(&["BLMOVE", "b", "dst", "LEFT", "RIGHT", "0"]);
    wait_blocked(&mut ctl, 1);
    assert_eq!(call(&mut ctl, &["RPUSH", "src", "1", "2"]), Value::Int(2));
    assert_eq!(
        call(&mut ctl, &["LMOVE", "src", "b", "LEFT", "LEFT"]),
        bulk("1")
    );
    a.expect(b"$1\r\n1\r\n");
    assert_eq!(call(&mut ctl, &["LRANGE", "dst", "0", "-1"]), barr(&["1"]));
    assert_eq!(call(&mut ctl, &["LRANGE", "src", "0", "-1"]), barr(&["2"]));
    assert_eq!(call(&mut ctl, &["EXISTS", "b"]), Value::Int(0));
}

/// BLMPOP served with a COUNT larger than the list, and BLMOVE onto a
/// wrong-type destination: the waiter gets WRONGTYPE and the element stays.
#[test]
fn blmpop_and_blmove_serving_details() {
    let srv = start(&[]);
    let mut ctl = srv.connect();
    let mut w = Raw::connect(srv.port);
    w.send_cmd(&["BLMPOP", "0", "2", "m1", "m2", "RIGHT", "COUNT", "5"]);
    wait_blocked(&mut ctl, 1);
    assert_eq!(
        call(&mut ctl, &["RPUSH", "m2", "a", "b", "c"]),
        Value::Int(3)
    );
    w.expect(b"*2\r\n$2\r\nm2\r\n*3\r\n$1\r\nc\r\n$1\r\nb\r\n$1\r\na\r\n");
    assert_eq!(call(&mut ctl, &["EXISTS", "m2"]), Value::Int(0));

    assert_eq!(call(&mut ctl, &["SET", "str", "x"]), ok());
    w.send_cmd(&["BLMOVE", "src", "str", "LEFT", "LEFT", "0"]);
    wait_blocked(&mut ctl, 1);
    assert_eq!(call(&mut ctl, &["RPUSH", "src", "v"]), Value::Int(1));
    w.expect(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    assert_eq!(call(&mut ctl, &["LRANGE", "src", "0", "-1"]), barr(&["v"]));
    wait_blocked(&mut ctl, 0);
}

/// A blocked client that disconnects leaves the queue: blocked_clients
/// drops back to 0 and a later push stays in the list.
#[test]
fn disconnected_waiter_is_removed() {
    let srv = start(&[]);
    let mut ctl = srv.connect();
    let mut gone = Raw::connect(srv.port);
    gone.send_cmd(&["BLPOP", "dq", "0"]);
    let mut gone2 = Raw::connect(srv.port);
    gone2.send_cmd(&["BLMOVE", "dq", "dst", "LEFT", "LEFT", "0"]);
    wait_blocked(&mut ctl, 2);
    assert_eq!(info_num(&mut ctl, "clients", "connected_clients"), 3);
    drop(gone);
    drop(gone2);
    wait_blocked(&mut ctl, 0);
    poll(
        Duration::from_secs(5),
        "connected_clients to become 1",
        || (info_num(&mut ctl, "clients", "connected_clients") == 1).then_some(()),
    );
    assert_eq!(call(&mut ctl, &["RPUSH", "dq", "v"]), Value::Int(1));
    assert_eq!(call(&mut ctl, &["LRANGE", "dq", "0", "-1"]), barr(&["v"]));
    assert_eq!(call(&mut ctl, &["EXISTS", "dst"]), Value::Int(0));
}

/// Waiters are per database: a push to the same key in another db does not
/// serve them, but SWAPDB and MOVE bringing data into their db do.
#[test]
fn blocking_respects_databases_swapdb_and_move() {
    let srv = start(&[]);
    let mut ctl = srv.connect();
    let mut w0 = Raw::connect(srv.port);
    w0.send_cmd(&["BLPOP", "k", "0"]);
    wait_blocked(&mut ctl, 1);
    let mut w1 = Raw::connect(srv.port);
    w1.send(b"SELECT 1\r\n");
    w1.expect(b"+OK\r\n");
    w1.send_cmd(&["BLPOP", "k", "0"]);
    wait_blocked(&mut ctl, 2);

    assert_eq!(call(&mut ctl, &["SELECT", "2"]), ok());
    assert_eq!(call(&mut ctl, &["RPUSH", "k", "v2"]), Value::Int(1));
    w0.expect_silence(Duration::from_millis(50));
    w1.expect_silence(Duration::from_millis(10));
    // SWAPDB 0 2: db 0 now holds k.
    assert_eq!(call(&mut ctl, &["SWAPDB", "0", "2"]), ok());
    w0.expect(&bulks(&["k", "v2"]));
    w1.expect_silence(Duration::from_millis(50));

    // MOVE from db 3 into db 1.
    assert_eq!(call(&mut ctl, &["SELECT", "3"]), ok());
    assert_eq!(call(&mut ctl, &["RPUSH", "k", "v3"]), Value::Int(1));
    assert_eq!(call(&mut ctl, &["MOVE", "k", "1"]), Value::Int(1));
    w1.expect(&bulks(&["k", "v3"]));
    wait_blocked(&mut ctl, 0);
    assert_eq!(call(&mut ctl, &["SELECT", "1"]), ok());
    assert_eq!(call(&mut ctl, &["EXISTS", "k"]), Value::Int(0));

    // CLIENT KILL of a blocked client unblocks (and forgets) it.
    let id = w0.client_id().to_string();
    w0.send_cmd(&["BLPOP", "k", "0"]);
    wait_blocked(&mut ctl, 1);
    assert_eq!(
        call(&mut ctl, &["CLIENT", "KILL", "ID", &id]),
        Value::Int(1)
    );
    wait_blocked(&mut ctl, 0);
    assert_eq!(call(&mut ctl, &["SELECT", "0"]), ok());
    assert_eq!(call(&mut ctl, &["RPUSH", "k", "kept"]), Value::Int(1));
    assert_eq!(call(&mut ctl, &["LLEN", "k"]), Value::Int(1));
}

/// CLIENT UNBLOCK: TIMEOUT (default) replies the command's timeout value
/// (a nil array, BLMOVE included), ERROR replies -UNBLOCKED; a client that
/// is not blocked gives 0.
#[test]
fn client_unblock_timeout_and_error() {
    let srv = start(&[]);
    let mut ctl = srv.connect();
    let mut w = Raw::connect(srv.port);
    let id = w.client_id().to_string();

    assert_eq!(call(&mut ctl, &["CLIENT", "UNBLOCK", &id]), Value::Int(0));
    w.send_cmd(&["BLPOP", "u", "0"]);
    wait_blocked(&mut ctl, 1);
    assert_eq!(call(&mut ctl, &["CLIENT", "UNBLOCK", &id]), Value::Int(1));
    w.expect(b"*-1\r\n");
    wait_blocked(&mut ctl, 0);

    w.send_cmd(&["BLMOVE", "u", "v", "LEFT", "RIGHT", "0"]);
    wait_blocked(&mut ctl, 1);
    assert_eq!(
        call(&mut ctl, &["CLIENT", "UNBLOCK", &id, "timeout"]),
        Value::Int(1)
    );
    w.expect(b"*-1\r\n");

    w.send_cmd(&["BRPOP", "u", "100"]);
    wait_blocked(&mut ctl, 1);
    assert_eq!(
        call(&mut ctl, &["CLIENT", "UNBLOCK", &id, "ERROR"]),
        Value::Int(1)
    );
    w.expect(b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n");
    wait_blocked(&mut ctl, 0);

    // The unblocked client is usable, and no longer waits on the key.
    w.send(b"PING\r\n");
    w.expect(b"+PONG\r\n");
    assert_eq!(call(&mut ctl, &["RPUSH", "u", "x"]), Value::Int(1));
    w.expect_silence(Duration::from_millis(50));
    assert_eq!(call(&mut ctl, &["LLEN", "u"]), Value::Int(1));

    assert_eq!(
        call(&mut ctl, &["CLIENT", "UNBLOCK", &id, "TIMEOUT"]),
        Value::Int(0)
    );
    assert_eq!(
        call(&mut ctl, &["CLIENT", "UNBLOCK", "999999", "ERROR"]),
        Value::Int(0)
    );
    assert_eq!(
        call(&mut ctl, &["CLIENT", "UNBLOCK", &id, "later"]),
        err("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
    );
    assert_eq!(
        call(&mut ctl, &["CLIENT", "UNBLOCK", "x"]),
        err("ERR value is not an integer or out of range")
    );

    // RESP3: the timeout value is a RESP3 null.
    w.hello3();
    w.send_cmd(&["BLMPOP", "0", "1", "nothing", "LEFT"]);
    wait_blocked(&mut ctl, 1);
    assert_eq!(call(&mut ctl, &["CLIENT", "UNBLOCK", &id]), Value::Int(1));
    w.expect(b"_\r\n");
}

/// Commands pipelined behind a blocking command wait for it: they run,
/// in order, only once it is served.
#[test]
fn pipelined_commands_after_blpop_wait_for_it() {
    let srv = start(&[]);
    let mut ctl = srv.connect();
    let mut w = Raw::connect(srv.port);
    let mut batch = resp_str(&["BLPOP", "p", "0"]);
    batch.extend(resp_str(&["SET", "after", "1"]));
    batch.extend(resp_str(&["INCR", "after"]));
    batch.extend(resp_str(&["BLPOP", "p", "0"]));
    batch.extend(resp_str(&["PING"]));
    w.send(&batch);
    wait_blocked(&mut ctl, 1);
    w.expect_silence(Duration::from_millis(100));
    // Nothing behind the BLPOP ran.
    assert_eq!(call(&mut ctl, &["GET", "after"]), Value::Nil);
    assert_eq!(call(&mut ctl, &["RPUSH", "p", "a", "b"]), Value::Int(2));
    // Served with "a", then SET, INCR, the second BLPOP finds "b" at once.
    w.expect(&bulks(&["p", "a"]));
    w.expect(b"+OK\r\n:2\r\n");
    w.expect(&bulks(&["p", "b"]));
    w.expect(b"+PONG\r\n");
    assert_eq!(call(&mut ctl, &["GET", "after"]), bulk("2"));
    wait_blocked(&mut ctl, 0);
}

/// Inside MULTI, blocking commands never block: they reply their timeout
/// value at once (or pop, if there is data).
#[test]
fn blocking_commands_inside_multi_do_not_block() {
    let srv = start(&[]);
    let mut c = Raw::connect(srv.port);
    let mut batch = resp_str(&["MULTI"]);
    for args in [
        &["BLPOP", "e", "0"][..],
        &["BRPOP", "e", "e2", "0"],
        &["BLMOVE", "e", "f", "LEFT", "RIGHT", "0"],
        &["BRPOPLPUSH", "e", "f", "0"],
        &["BLMPOP", "0", "1", "e", "LEFT"],
        &["RPUSH", "e", "x", "y"],
        &["BLPOP", "e", "0"],
        &["BLMOVE", "e", "f", "LEFT", "RIGHT", "0"],
    ] {
        batch.extend(resp_str(args));
    }
    batch.extend(resp_str(&["EXEC"]));
    let (_, took) = timed(|| {
        c.send(&batch);
        c.expect(b"+OK\r\n");
        for _ in 0..8 {
            c.expect(b"+QUEUED\r\n");
        }
        c.expect(b"*8\r\n*-1\r\n*-1\r\n$-1\r\n$-1\r\n*-1\r\n:2\r\n");
        c.expect(&bulks(&["e", "x"]));
        c.expect(b"$1\r\ny\r\n");
    });
    assert!(took < Duration::from_secs(3), "EXEC took {took:?}");
    c.send(b"LRANGE f 0 -1\r\nEXISTS e\r\n");
    c.expect(b"*1\r\n$1\r\ny\r\n:0\r\n");
}

/// BZPOPMIN / BZPOPMAX / BZMPOP: blocking on several keys, served in
/// order of arrival by a ZADD, the reply shapes, timeouts and their errors,
/// and no blocking inside MULTI. A server without these commands fails
/// (it used to skip the test, which then proved nothing).
#[test]
fn sorted_set_blocking_pops() {
    let srv = start(&[]);
    let mut ctl = srv.connect();
    for name in ["bzpopmin", "bzpopmax", "bzmpop"] {
        assert!(
            has_command(&mut ctl, name),
            "COMMAND INFO {name} is nil: the server does not implement {name}"
        );
    }
    let mut w = Raw::connect(srv.port);
    w.send_cmd(&["BZPOPMIN", "z1", "z2", "0"]);
    wait_blocked(&mut ctl, 1);
    let mut w2 = Raw::connect(srv.port);
    w2.send_cmd(&["BZPOPMAX", "z2", "0"]);
    wait_blocked(&mut ctl, 2);
    assert_eq!(
        call(&mut ctl, &["ZADD", "z2", "1", "a", "2", "b", "3", "c"]),
        Value::Int(3)
    );
    w.expect(&bulks(&["z2", "a", "1"]));
    w2.expect(&bulks(&["z2", "c", "3"]));
    wait_blocked(&mut ctl, 0);
    assert_eq!(
        call(&mut ctl, &["ZRANGE", "z2", "0", "-1", "WITHSCORES"]),
        barr(&["b", "2"])
    );

    w.send_cmd(&["BZMPOP", "0", "2", "z3", "z2", "MAX", "COUNT", "5"]);
    w.expect(b"*2\r\n$2\r\nz2\r\n*1\r\n*2\r\n$1\r\nb\r\n$1\r\n2\r\n");
    w.send_cmd(&["BZMPOP", "0", "1", "z3", "MIN"]);
    wait_blocked(&mut ctl, 1);
    assert_eq!(call(&mut ctl, &["ZADD", "z3", "1.5", "x"]), Value::Int(1));
    w.expect(b"*2\r\n$2\r\nz3\r\n*1\r\n*2\r\n$1\r\nx\r\n$3\r\n1.5\r\n");

    for (args, want) in [
        (&["BZPOPMIN", "none", "0.1"][..], &b"*-1\r\n"[..]),
        (&["BZPOPMAX", "none", "0.1"], b"*-1\r\n"),
        (&["BZMPOP", "0.1", "1", "none", "MIN"], b"*-1\r\n"),
        (&["BZPOPMIN", "none", "-1"], b"-ERR timeout is negative\r\n"),
        (
            &["BZPOPMAX", "none", "x"],
            b"-ERR timeout is not a float or out of range\r\n",
        ),
    ] {
        let t0 = Instant::now();
        w.send_cmd(args);
        w.expect(want);
        if want == b"*-1\r\n" {
            assert!(t0.elapsed() >= Duration::from_millis(100), "{args:?}");
        }
    }
    // Inside MULTI they do not block either.
    w.send(b"MULTI\r\nBZPOPMIN none 0\r\nEXEC\r\n");
    w.expect(b"+OK\r\n+QUEUED\r\n*1\r\n*-1\r\n");
}

// ---------------------------------------------------------------------------
// 2. Transactions
// ---------------------------------------------------------------------------

#[test]
fn multi_exec_basics() {
    let srv = start(&[]);
    let mut c = srv.connect();
    assert_eq!(call(&mut c, &["MULTI"]), ok());
    assert_eq!(call(&mut c, &["SET", "a", "1"]), simple("QUEUED"));
    assert_eq!(call(&mut c, &["INCR", "a"]), simple("QUEUED"));
    assert_eq!(call(&mut c, &["GET", "a"]), simple("QUEUED"));
    assert_eq!(call(&mut c, &["RPUSH", "l", "x", "y"]), simple("QUEUED"));
    assert_eq!(call(&mut c, &["LRANGE", "l", "0", "-1"]), simple("QUEUED"));
    assert_eq!(
        call(&mut c, &["EXEC"]),
        arr(vec![
            ok(),
            Value::Int(2),
            bulk("2"),
            Value::Int(2),
            barr(&["x", "y"])
        ])
    );
    // Empty transaction.
    assert_eq!(call(&mut c, &["MULTI"]), ok());
    assert_eq!(call(&mut c, &["EXEC"]), arr(vec![]));
    // Errors outside a transaction.
    assert_eq!(call(&mut c, &["EXEC"]), err("ERR EXEC without MULTI"));
    assert_eq!(call(&mut c, &["DISCARD"]), err("ERR DISCARD without MULTI"));
    // MULTI nested and WATCH inside MULTI are refused but do not abort.
    assert_eq!(call(&mut c, &["MULTI"]), ok());
    assert_eq!(
        call(&mut c, &["MULTI"]),
        err("ERR MULTI calls can not be nested")
    );
    assert_eq!(
        call(&mut c, &["WATCH", "a"]),
        err("ERR WATCH inside MULTI is not allowed")
    );
    assert_eq!(call(&mut c, &["INCR", "a"]), simple("QUEUED"));
    assert_eq!(call(&mut c, &["EXEC"]), arr(vec![Value::Int(3)]));
    // DISCARD drops the queue.
    assert_eq!(call(&mut c, &["MULTI"]), ok());
    assert_eq!(call(&mut c, &["SET", "a", "100"]), simple("QUEUED"));
    assert_eq!(call(&mut c, &["DISCARD"]), ok());
    assert_eq!(call(&mut c, &["GET", "a"]), bulk("3"));
    // Redis 7.0 queues SUBSCRIBE inside MULTI like any other command.
    assert_eq!(call(&mut c, &["MULTI"]), ok());
    assert_eq!(call(&mut c, &["SUBSCRIBE", "ch"]), simple("QUEUED"));
    assert_eq!(call(&mut c, &["DISCARD"]), ok());
}

/// A queued command with a syntax/arity error or an unknown name makes EXEC
/// fail with EXECABORT, and nothing of the transaction is applied.
#[test]
fn queue_time_errors_abort_the_transaction() {
    let srv = start(&[]);
    let mut c = srv.connect();
    assert_eq!(call(&mut c, &["SET", "keep", "old"]), ok());
    let cases: &[(&[&str], &str)] = &[
        (
            &["INCR"],
            "ERR wrong number of arguments for 'incr' command",
        ),
        (
            &["NOSUCHCMD", "x", "y"],
            "ERR unknown command 'NOSUCHCMD', with args beginning with: 'x' 'y' ",
        ),
        (
            &["CONFIG", "NOPE"],
            "ERR unknown subcommand 'NOPE'. Try CONFIG HELP.",
        ),
        (
            &["GET", "a", "b"],
            "ERR wrong number of arguments for 'get' command",
        ),
    ];
    for (bad, msg) in cases {
        assert_eq!(call(&mut c, &["MULTI"]), ok());
        assert_eq!(call(&mut c, &["SET", "keep", "new"]), simple("QUEUED"));
        assert_eq!(call(&mut c, &["RPUSH", "list", "1"]), simple("QUEUED"));
        assert_eq!(call(&mut c, bad), err(msg), "{bad:?}");
        assert_eq!(call(&mut c, &["INCR", "counter"]), simple("QUEUED"));
        assert_eq!(
            call(&mut c, &["EXEC"]),
            err("EXECABORT Transaction discarded because of previous errors."),
            "after {bad:?}"
        );
        assert_eq!(call(&mut c, &["GET", "keep"]), bulk("old"));
        assert_eq!(call(&mut c, &["EXISTS", "list", "counter"]), Value::Int(0));
    }
    // The connection is out of MULTI afterwards.
    assert_eq!(call(&mut c, &["EXEC"]), err("ERR EXEC without MULTI"));
    // An error then DISCARD: fine, nothing applied.
    assert_eq!(call(&mut c, &["MULTI"]), ok());
    assert_eq!(
        call(&mut c, &["SET"]),
        err("ERR wrong number of arguments for 'set' command")
    );
    assert_eq!(call(&mut c, &["DISCARD"]), ok());
    assert_eq!(call(&mut c, &["PING"]), simple("PONG"));
}

/// A command failing at run time (INCR on a non-integer, WRONGTYPE) does
/// not abort the others.
#[test]
fn runtime_errors_do_not_abort_the_transaction() {
    let srv = start(&[]);
    let mut c = srv.connect();
    assert_eq!(call(&mut c, &["SET", "s", "foo"]), ok());
    assert_eq!(call(&mut c, &["MULTI"]), ok());
    for args in [
        &["SET", "before", "1"][..],
        &["INCR", "s"],
        &["LPUSH", "s", "x"],
        &["SET", "after", "2"],
        &["APPEND", "s", "bar"],
    ] {
        assert_eq!(call(&mut c, args), simple("QUEUED"));
    }
    assert_eq!(
        call(&mut c, &["EXEC"]),
        arr(vec![
            ok(),
            err("ERR value is not an integer or out of range"),
            err("WRONGTYPE Operation against a key holding the wrong kind of value"),
            ok(),
            Value::Int(6),
        ])
    );
    assert_eq!(
        call(&mut c, &["MGET", "before", "after", "s"]),
        barr(&["1", "2", "foobar"])
    );
}

/// One WATCH scenario: `setup` runs first (another connection), then A
/// WATCHes `watch`, then `then` runs (on B, or on A itself), `sleep`
/// passes, and A's `MULTI SET result done EXEC` either aborts (nil) or runs.
struct WatchCase {
    name: &'static str,
    setup: &'static [&'static [&'static str]],
    watch: &'static [&'static str],
    then: &'static [&'static [&'static str]],
    by_self: bool,
    sleep_ms: u64,
    aborts: bool,
}

const fn case(
    name: &'static str,
    setup: &'static [&'static [&'static str]],
    then: &'static [&'static [&'static str]],
    aborts: bool,
) -> WatchCase {
    WatchCase {
        name,
        setup,
        watch: &["k"],
        then,
        by_self: false,
        sleep_ms: 0,
        aborts,
    }
}

const K1: &[&[&str]] = &[&["SET", "k", "1"]];

const WATCH_CASES: &[WatchCase] = &[
    case("SET by another client", K1, &[&["SET", "k", "2"]], true),
    case("SET to the same value", K1, &[&["SET", "k", "1"]], true),
    case("INCR", K1, &[&["INCR", "k"]], true),
    case("EXPIRE", K1, &[&["EXPIRE", "k", "100"]], true),
    case("PEXPIRE", K1, &[&["PEXPIRE", "k", "100000"]], true),
    case("DEL", K1, &[&["DEL", "k"]], true),
    case("UNLINK", K1, &[&["UNLINK", "k"]], true),
    case("FLUSHDB", K1, &[&["FLUSHDB"]], true),
    case("FLUSHALL", K1, &[&["FLUSHALL"]], true),
    case("SWAPDB 0 1", K1, &[&["SWAPDB", "0", "1"]], true),
    case(
        "SWAPDB brings the key from the other db",
        &[&["SELECT", "1"], &["SET", "k", "x"]],
        &[&["SWAPDB", "0", "1"]],
        true,
    ),
    case("RENAME away", K1, &[&["RENAME", "k", "k2"]], true),
    case(
        "RENAME onto it",
        &[&["SET", "k", "1"], &["SET", "src", "2"]],
        &[&["RENAME", "src", "k"]],
        true,
    ),
    case("MOVE to db 1", K1, &[&["MOVE", "k", "1"]], true),
    case("created by SET", &[], &[&["SET", "k", "1"]], true),
    case(
        "LPUSH on a watched list",
        &[&["RPUSH", "k", "a"]],
        &[&["LPUSH", "k", "b"]],
        true,
    ),
    case(
        "INCR inside B's transaction",
        K1,
        &[&["MULTI"], &["INCR", "k"], &["EXEC"]],
        true,
    ),
    case(
        "read-only commands",
        K1,
        &[
            &["GET", "k"],
            &["EXISTS", "k"],
            &["TTL", "k"],
            &["TYPE", "k"],
        ],
        false,
    ),
    case("another key", K1, &[&["SET", "other", "1"]], false),
    case(
        "the same key in another db",
        K1,
        &[&["SELECT", "1"], &["SET", "k", "2"]],
        false,
    ),
    case("PERSIST without a TTL", K1, &[&["PERSIST", "k"]], false),
    case("DEL of a missing key", &[], &[&["DEL", "k"]], false),
    case(
        "EXPIRE of a missing key",
        &[],
        &[&["EXPIRE", "k", "10"]],
        false,
    ),
    case(
        "FLUSHDB while the watched key is missing",
        &[&["SET", "other", "1"]],
        &[&["FLUSHDB"]],
        false,
    ),
    case(
        "SWAPDB while the key is in neither db",
        &[&["SET", "other", "1"]],
        &[&["SWAPDB", "0", "1"]],
        false,
    ),
    WatchCase {
        name: "A modifies the key itself before MULTI",
        setup: K1,
        watch: &["k"],
        then: &[&["SET", "k", "3"]],
        by_self: true,
        sleep_ms: 0,
        aborts: true,
    },
    WatchCase {
        name: "one of several watched keys",
        setup: K1,
        watch: &["x", "k", "y"],
        then: &[&["SET", "y", "1"]],
        by_self: false,
        sleep_ms: 0,
        aborts: true,
    },
    WatchCase {
        name: "TTL expiry between WATCH and EXEC",
        setup: &[&["SET", "k", "v", "PX", "300"]],
        watch: &["k"],
        then: &[],
        by_self: false,
        sleep_ms: 450,
        aborts: true,
    },
    WatchCase {
        name: "TTL expiry with active expiry off (key logically expired)",
        setup: &[
            &["DEBUG", "SET-ACTIVE-EXPIRE", "0"],
            &["SET", "k", "v", "PX", "300"],
        ],
        watch: &["k"],
        then: &[],
        by_self: false,
        sleep_ms: 400,
        aborts: true,
    },
    WatchCase {
        name: "a TTL that does not expire before EXEC",
        setup: &[&["SET", "k", "v", "EX", "100"]],
        watch: &["k"],
        then: &[],
        by_self: false,
        sleep_ms: 50,
        aborts: false,
    },
];

/// WATCH across two connections: every way another client (or time) can
/// modify a watched key makes EXEC return nil; reads, other keys, other
/// databases and no-op writes do not.
#[test]
fn watch_detects_modifications() {
    let srv = start(&[]);
    let mut failures = Vec::new();
    for wc in WATCH_CASES {
        let mut setup = srv.connect();
        assert_eq!(call(&mut setup, &["FLUSHALL"]), ok());
        assert_eq!(call(&mut setup, &["DEBUG", "SET-ACTIVE-EXPIRE", "1"]), ok());
        for args in wc.setup {
            let r = call(&mut setup, args);
            assert!(!r.is_error(), "{}: setup {args:?} replied {r:?}", wc.name);
        }
        let mut a = srv.connect();
        let mut watch = vec!["WATCH"];
        watch.extend_from_slice(wc.watch);
        assert_eq!(call(&mut a, &watch), ok(), "{}", wc.name);
        let mut b = srv.connect();
        for args in wc.then {
            let conn = if wc.by_self { &mut a } else { &mut b };
            let r = call(conn, args);
            assert!(!r.is_error(), "{}: {args:?} replied {r:?}", wc.name);
        }
        thread::sleep(Duration::from_millis(wc.sleep_ms));
        assert_eq!(call(&mut a, &["MULTI"]), ok());
        assert_eq!(call(&mut a, &["SET", "result", "done"]), simple("QUEUED"));
        let got = call(&mut a, &["EXEC"]);
        let want = if wc.aborts {
            Value::NilArray
        } else {
            arr(vec![ok()])
        };
        if got != want {
            failures.push(format!(
                "{}: EXEC replied {got:?}, expected {want:?}",
                wc.name
            ));
        }
        // EXEC unwatches everything: the next transaction runs.
        assert_eq!(call(&mut b, &["SET", "k", "again"]), ok());
        assert_eq!(call(&mut a, &["MULTI"]), ok());
        assert_eq!(call(&mut a, &["EXEC"]), arr(vec![]), "{}", wc.name);
    }
    let mut c = srv.connect();
    call(&mut c, &["DEBUG", "SET-ACTIVE-EXPIRE", "1"]);
    assert!(
        failures.is_empty(),
        "WATCH cases failed:\n  {}",
        failures.join("\n  ")
    );
}

/// UNWATCH and DISCARD forget the watched keys (and the dirty flag).
#[test]
fn unwatch_and_discard_clear_watches() {
    let srv = start(&[]);
    let mut a = srv.connect();
    let mut b = srv.connect();
    // UNWATCH after the key changed: EXEC runs.
    assert_eq!(call(&mut a, &["WATCH", "k", "j"]), ok());
    assert_eq!(call(&mut b, &["SET", "k", "1"]), ok());
    assert_eq!(call(&mut a, &["UNWATCH"]), ok());
    assert_eq!(call(&mut a, &["MULTI"]), ok());
    call(&mut a, &["INCR", "k"]);
    assert_eq!(call(&mut a, &["EXEC"]), arr(vec![Value::Int(2)]));
    // ... and changes after UNWATCH do not matter either.
    assert_eq!(call(&mut a, &["WATCH", "k"]), ok());
    assert_eq!(call(&mut a, &["UNWATCH"]), ok());
    assert_eq!(call(&mut b, &["SET", "k", "5"]), ok());
    assert_eq!(call(&mut a, &["MULTI"]), ok());
    call(&mut a, &["INCR", "k"]);
    assert_eq!(call(&mut a, &["EXEC"]), arr(vec![Value::Int(6)]));
    // DISCARD after the key changed: the next transaction runs.
    assert_eq!(call(&mut a, &["WATCH", "k"]), ok());
    assert_eq!(call(&mut b, &["SET", "k", "10"]), ok());
    assert_eq!(call(&mut a, &["MULTI"]), ok());
    assert_eq!(call(&mut a, &["DISCARD"]), ok());
    assert_eq!(call(&mut a, &["MULTI"]), ok());
    call(&mut a, &["INCR", "k"]);
    assert_eq!(call(&mut a, &["EXEC"]), arr(vec![Value::Int(11)]));
    // DISCARD before the change: still unwatched.
    assert_eq!(call(&mut a, &["WATCH", "k"]), ok());
    assert_eq!(call(&mut a, &["MULTI"]), ok());
    assert_eq!(call(&mut a, &["DISCARD"]), ok());
    assert_eq!(call(&mut b, &["SET", "k", "20"]), ok());
    assert_eq!(call(&mut a, &["MULTI"]), ok());
    call(&mut a, &["INCR", "k"]);
    assert_eq!(call(&mut a, &["EXEC"]), arr(vec![Value::Int(21)]));
    // An aborted EXEC also unwatches.
    assert_eq!(call(&mut a, &["WATCH", "k"]), ok());
    assert_eq!(call(&mut b, &["SET", "k", "30"]), ok());
    assert_eq!(call(&mut a, &["MULTI"]), ok());
    assert_eq!(call(&mut a, &["EXEC"]), Value::NilArray);
    assert_eq!(call(&mut a, &["MULTI"]), ok());
    call(&mut a, &["INCR", "k"]);
    assert_eq!(call(&mut a, &["EXEC"]), arr(vec![Value::Int(31)]));
    // An EXECABORT unwatches too.
    assert_eq!(call(&mut a, &["WATCH", "k"]), ok());
    assert_eq!(call(&mut b, &["SET", "k", "40"]), ok());
    assert_eq!(call(&mut a, &["MULTI"]), ok());
    call(&mut a, &["GET"]);
    assert_eq!(
        call(&mut a, &["EXEC"]),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(call(&mut a, &["MULTI"]), ok());
    call(&mut a, &["INCR", "k"]);
    assert_eq!(call(&mut a, &["EXEC"]), arr(vec![Value::Int(41)]));
}

/// Several clients run `MULTI INCR a INCR b EXEC` in a loop while another
/// reads `MGET a b`: the reader always sees a == b, and each EXEC's two
/// INCRs return the same number.
#[test]
fn exec_is_atomic_across_keys_under_concurrency() {
    let srv = start(&["--executors", "2"]);
    let port = srv.port;
    const WRITERS: usize = 4;
    const ROUNDS: usize = 250;
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        thread::spawn(move || {
            let mut c = RespConn::connect(port).unwrap();
            let mut reads = 0u64;
            let mut last = 0i64;
            while !done.load(Ordering::Relaxed) || reads == 0 {
                let v = call(&mut c, &["MGET", "a", "b"]);
                let (a, b) = match &v {
                    Value::Array(items) if items.len() == 2 => {
                        let n = |x: &Value| match x {
                            Value::Nil => 0,
                            Value::Bulk(b) => String::from_utf8_lossy(b).parse::<i64>().unwrap(),
                            other => panic!("MGET item {other:?}"),
                        };
                        (n(&items[0]), n(&items[1]))
                    }
                    other => panic!("MGET replied {other:?}"),
                };
                assert_eq!(a, b, "MGET a b saw a half-applied transaction");
                assert!(a >= last, "counter went backwards: {last} -> {a}");
                last = a;
                reads += 1;
            }
            reads
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            thread::spawn(move || {
                let mut c = RespConn::connect(port).unwrap();
                for _ in 0..ROUNDS {
                    assert_eq!(call(&mut c, &["MULTI"]), ok());
                    assert_eq!(call(&mut c, &["INCR", "a"]), simple("QUEUED"));
                    assert_eq!(call(&mut c, &["INCR", "b"]), simple("QUEUED"));
                    match call(&mut c, &["EXEC"]) {
                        Value::Array(r) if r.len() == 2 && r[0] == r[1] => {}
                        other => panic!("writer {w}: EXEC replied {other:?}"),
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer failed");
    }
    done.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("reader failed");
    assert!(reads > 0);
    let mut c = srv.connect();
    let total = (WRITERS * ROUNDS).to_string();
    assert_eq!(call(&mut c, &["MGET", "a", "b"]), barr(&[&total, &total]));
}

/// Optimistic locking: clients increment a counter with WATCH/GET/MULTI/SET
/// and retry on nil; no increment is lost.
#[test]
fn watch_based_increments_lose_nothing() {
    let srv = start(&["--executors", "2"]);
    let port = srv.port;
    const CLIENTS: usize = 4;
    const INCREMENTS: usize = 60;
    let workers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            thread::spawn(move || {
                let mut c = RespConn::connect(port).unwrap();
                let mut retries = 0;
                for _ in 0..INCREMENTS {
                    loop {
                        assert_eq!(call(&mut c, &["WATCH", "counter"]), ok());
                        let cur = match call(&mut c, &["GET", "counter"]) {
                            Value::Nil => 0,
                            Value::Bulk(b) => String::from_utf8_lossy(&b).parse::<i64>().unwrap(),
                            other => panic!("GET replied {other:?}"),
                        };
                        assert_eq!(call(&mut c, &["MULTI"]), ok());
                        let next = (cur + 1).to_string();
                        assert_eq!(call(&mut c, &["SET", "counter", &next]), simple("QUEUED"));
                        match call(&mut c, &["EXEC"]) {
                            Value::NilArray => retries += 1,
                            v if v == arr(vec![ok()]) => break,
                            other => panic!("worker {w}: EXEC replied {other:?}"),
                        }
                    }
                }
                retries
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker failed");
    }
    let mut c = srv.connect();
    assert_eq!(
        call(&mut c, &["GET", "counter"]),
        bulk(&(CLIENTS * INCREMENTS).to_string())
    );
}

// ---------------------------------------------------------------------------
// 3. Pub/sub
// ---------------------------------------------------------------------------

/// RESP2: subscription replies, PUBLISH counts, message and pmessage frames
/// byte for byte, the subscribed-mode restriction, PING, unsubscribing.
#[test]
fn pubsub_resp2_frames() {
    let srv = start(&[]);
    let mut pc = srv.connect();
    let mut s = Raw::connect(srv.port);
    // UNSUBSCRIBE with nothing subscribed.
    s.send(b"UNSUBSCRIBE\r\nPUNSUBSCRIBE\r\n");
    s.expect(
        b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n",
    );
    s.send_cmd(&["SUBSCRIBE", "news", "sport", "news"]);
    s.expect(
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n\
          *3\r\n$9\r\nsubscribe\r\n$5\r\nsport\r\n:2\r\n\
          *3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:2\r\n",
    );
    s.send_cmd(&["PSUBSCRIBE", "n*", "?port"]);
    s.expect(
        b"*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:3\r\n\
          *3\r\n$10\r\npsubscribe\r\n$5\r\n?port\r\n:4\r\n",
    );
    // Channel subscribers first, then patterns in subscription order.
    assert_eq!(call(&mut pc, &["PUBLISH", "news", "hello"]), Value::Int(2));
    s.expect(
        b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n\
          *4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$5\r\nhello\r\n",
    );
    assert_eq!(call(&mut pc, &["PUBLISH", "sport", "goal"]), Value::Int(2));
    s.expect(
        b"*3\r\n$7\r\nmessage\r\n$5\r\nsport\r\n$4\r\ngoal\r\n\
          *4\r\n$8\r\npmessage\r\n$5\r\n?port\r\n$5\r\nsport\r\n$4\r\ngoal\r\n",
    );
    assert_eq!(call(&mut pc, &["PUBLISH", "nope", "x\r\ny"]), Value::Int(1));
    s.expect(b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnope\r\n$4\r\nx\r\ny\r\n");
    assert_eq!(call(&mut pc, &["PUBLISH", "other", ""]), Value::Int(0));
    // A binary payload.
    assert_eq!(
        pc.call(&[b"PUBLISH".to_vec(), b"nbin".to_vec(), vec![0u8, 255, b'\n']])
            .unwrap(),
        Value::Int(1)
    );
    s.expect(b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnbin\r\n$3\r\n\x00\xff\n\r\n");

    // Subscribed mode: only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET.
    s.send(b"GET x\r\nSET x 1\r\nPING\r\nPING hi\r\n");
    s.expect(b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n");
    s.expect(b"-ERR Can't execute 'set': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n");
    s.expect(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n*2\r\n$4\r\npong\r\n$2\r\nhi\r\n");
    s.send(b"CONFIG GET maxclients\r\n");
    s.expect(b"-ERR Can't execute 'config|get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n");
    s.expect_silence(Duration::from_millis(20));

    s.send_cmd(&["UNSUBSCRIBE", "news", "never"]);
    s.expect(
        b"*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:3\r\n\
          *3\r\n$11\r\nunsubscribe\r\n$5\r\nnever\r\n:3\r\n",
    );
    assert_eq!(call(&mut pc, &["PUBLISH", "news", "again"]), Value::Int(1));
    s.expect(b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$5\r\nagain\r\n");
    s.send_cmd(&["PUNSUBSCRIBE", "n*"]);
    s.expect(b"*3\r\n$12\r\npunsubscribe\r\n$2\r\nn*\r\n:2\r\n");
    s.send_cmd(&["PUNSUBSCRIBE"]);
    s.expect(b"*3\r\n$12\r\npunsubscribe\r\n$5\r\n?port\r\n:1\r\n");
    s.send_cmd(&["UNSUBSCRIBE"]);
    s.expect(b"*3\r\n$11\r\nunsubscribe\r\n$5\r\nsport\r\n:0\r\n");
    // Out of subscribed mode: normal commands again.
    s.send(b"PING\r\nGET x\r\n");
    s.expect(b"+PONG\r\n$-1\r\n");
    assert_eq!(call(&mut pc, &["PUBLISH", "sport", "x"]), Value::Int(0));
    // Arity.
    s.send(b"SUBSCRIBE\r\nPSUBSCRIBE\r\n");
    s.expect(b"-ERR wrong number of arguments for 'subscribe' command\r\n-ERR wrong number of arguments for 'psubscribe' command\r\n");
    assert_eq!(
        call(&mut pc, &["PUBLISH", "a"]),
        err("ERR wrong number of arguments for 'publish' command")
    );
    // RESET leaves subscribed mode.
    s.send_cmd(&["SUBSCRIBE", "z"]);
    s.expect(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nz\r\n:1\r\n");
    s.send(b"RESET\r\nGET x\r\n");
    s.expect(b"+RESET\r\n$-1\r\n");
    assert_eq!(call(&mut pc, &["PUBLISH", "z", "x"]), Value::Int(0));
}

/// RESP3 (HELLO 3): subscription replies and messages are push frames
/// (`>3`, `>4`); normal commands work while subscribed.
#[test]
fn pubsub_resp3_push_frames() {
    let srv = start(&[]);
    let mut pc = srv.connect();
    let mut s = Raw::connect(srv.port);
    s.hello3();
    s.send_cmd(&["SUBSCRIBE", "ch"]);
    s.expect(b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    s.send_cmd(&["PSUBSCRIBE", "c*"]);
    s.expect(b">3\r\n$10\r\npsubscribe\r\n$2\r\nc*\r\n:2\r\n");
    s.send_cmd(&["SSUBSCRIBE", "sh"]);
    s.expect(b">3\r\n$10\r\nssubscribe\r\n$2\r\nsh\r\n:1\r\n");
    assert_eq!(call(&mut pc, &["PUBLISH", "ch", "hi"]), Value::Int(2));
    s.expect(
        b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n\
          >4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$2\r\nch\r\n$2\r\nhi\r\n",
    );
    assert_eq!(call(&mut pc, &["SPUBLISH", "sh", "s"]), Value::Int(1));
    s.expect(b">3\r\n$8\r\nsmessage\r\n$2\r\nsh\r\n$1\r\ns\r\n");
    // Normal commands, in RESP3, while subscribed.
    s.send(b"PING\r\nGET nokey\r\nSET k v\r\nGET k\r\n");
    s.expect(b"+PONG\r\n_\r\n+OK\r\n$1\r\nv\r\n");
    s.send_cmd(&["UNSUBSCRIBE"]);
    s.expect(b">3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:1\r\n");
    s.send_cmd(&["PUNSUBSCRIBE"]);
    s.expect(b">3\r\n$12\r\npunsubscribe\r\n$2\r\nc*\r\n:0\r\n");
    s.send_cmd(&["SUNSUBSCRIBE"]);
    s.expect(b">3\r\n$12\r\nsunsubscribe\r\n$2\r\nsh\r\n:0\r\n");
    s.send_cmd(&["UNSUBSCRIBE"]);
    s.expect(b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n");
    assert_eq!(call(&mut pc, &["PUBLISH", "ch", "hi"]), Value::Int(0));

    // A RESP3 subscriber and a RESP2 subscriber of one channel each get
    // their own encoding.
    let mut s2 = Raw::connect(srv.port);
    s2.send_cmd(&["SUBSCRIBE", "both"]);
    s2.expect(b"*3\r\n$9\r\nsubscribe\r\n$4\r\nboth\r\n:1\r\n");
    s.send_cmd(&["SUBSCRIBE", "both"]);
    s.expect(b">3\r\n$9\r\nsubscribe\r\n$4\r\nboth\r\n:1\r\n");
    assert_eq!(call(&mut pc, &["PUBLISH", "both", "m"]), Value::Int(2));
    s2.expect(b"*3\r\n$7\r\nmessage\r\n$4\r\nboth\r\n$1\r\nm\r\n");
    s.expect(b">3\r\n$7\r\nmessage\r\n$4\r\nboth\r\n$1\r\nm\r\n");
}

/// PUBSUB CHANNELS / NUMSUB / NUMPAT and the shard variants, plus
/// SSUBSCRIBE/SPUBLISH (shard channels are separate from channels).
#[test]
fn pubsub_introspection_and_sharded_channels() {
    let srv = start(&[]);
    let mut pc = srv.connect();
    let mut s1 = Raw::connect(srv.port);
    let mut s2 = Raw::connect(srv.port);
    s1.send_cmd(&["SUBSCRIBE", "a", "b"]);
    s1.read_until(b":2\r\n");
    s1.send_cmd(&["PSUBSCRIBE", "p*", "q*"]);
    s1.read_until(b":4\r\n");
    s2.send_cmd(&["SUBSCRIBE", "a"]);
    s2.expect(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n");
    s2.send_cmd(&["PSUBSCRIBE", "p*"]);
    s2.expect(b"*3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:2\r\n");
    s2.send_cmd(&["SSUBSCRIBE", "s1", "s2"]);
    s2.expect(
        b"*3\r\n$10\r\nssubscribe\r\n$2\r\ns1\r\n:1\r\n\
          *3\r\n$10\r\nssubscribe\r\n$2\r\ns2\r\n:2\r\n",
    );
    let sorted = |v: Value| match v {
        Value::Array(mut items) => {
            items.sort();
            Value::Array(items)
        }
        other => other,
    };
    assert_eq!(
        sorted(call(&mut pc, &["PUBSUB", "CHANNELS"])),
        barr(&["a", "b"])
    );
    assert_eq!(call(&mut pc, &["PUBSUB", "CHANNELS", "b*"]), barr(&["b"]));
    assert_eq!(call(&mut pc, &["PUBSUB", "CHANNELS", "s*"]), barr(&[]));
    assert_eq!(
        call(&mut pc, &["PUBSUB", "NUMSUB", "a", "b", "c"]),
        arr(vec![
            bulk("a"),
            Value::Int(2),
            bulk("b"),
            Value::Int(1),
            bulk("c"),
            Value::Int(0)
        ])
    );
    assert_eq!(call(&mut pc, &["PUBSUB", "NUMSUB"]), arr(vec![]));
    // NUMPAT counts distinct patterns (p* twice is one).
    assert_eq!(call(&mut pc, &["PUBSUB", "NUMPAT"]), Value::Int(2));
    assert_eq!(
        sorted(call(&mut pc, &["PUBSUB", "SHARDCHANNELS"])),
        barr(&["s1", "s2"])
    );
    assert_eq!(
        call(&mut pc, &["PUBSUB", "SHARDNUMSUB", "s1", "a"]),
        arr(vec![bulk("s1"), Value::Int(1), bulk("a"), Value::Int(0)])
    );
    // SPUBLISH reaches shard subscribers only; PUBLISH never reaches them.
    assert_eq!(call(&mut pc, &["SPUBLISH", "s1", "hi"]), Value::Int(1));
    s2.expect(b"*3\r\n$8\r\nsmessage\r\n$2\r\ns1\r\n$2\r\nhi\r\n");
    assert_eq!(call(&mut pc, &["PUBLISH", "s1", "hi"]), Value::Int(0));
    assert_eq!(call(&mut pc, &["SPUBLISH", "a", "hi"]), Value::Int(0));
    assert_eq!(call(&mut pc, &["PUBLISH", "pq", "m"]), Value::Int(2));
    s1.expect(b"*4\r\n$8\r\npmessage\r\n$2\r\np*\r\n$2\r\npq\r\n$1\r\nm\r\n");
    s2.expect(b"*4\r\n$8\r\npmessage\r\n$2\r\np*\r\n$2\r\npq\r\n$1\r\nm\r\n");
    s2.send_cmd(&["SUNSUBSCRIBE", "s1"]);
    s2.expect(b"*3\r\n$12\r\nsunsubscribe\r\n$2\r\ns1\r\n:1\r\n");
    assert_eq!(call(&mut pc, &["SPUBLISH", "s1", "hi"]), Value::Int(0));
    // A disconnected subscriber is forgotten.
    drop(s1);
    poll(Duration::from_secs(5), "NUMPAT to drop to 1", || {
        (call(&mut pc, &["PUBSUB", "NUMPAT"]) == Value::Int(1)).then_some(())
    });
    assert_eq!(
        call(&mut pc, &["PUBSUB", "NUMSUB", "a", "b"]),
        arr(vec![bulk("a"), Value::Int(1), bulk("b"), Value::Int(0)])
    );
    assert_eq!(sorted(call(&mut pc, &["PUBSUB", "CHANNELS"])), barr(&["a"]));
    assert_eq!(call(&mut pc, &["PUBLISH", "a", "x"]), Value::Int(1));
}

/// Redis 7.0 replies PUBSUB NUMSUB / SHARDNUMSUB with a flat array, in
/// RESP3 too (a map only from Redis 7.2).
#[test]
fn pubsub_numsub_is_a_flat_array_in_resp3() {
    let srv = start(&[]);
    let mut s = Raw::connect(srv.port);
    s.send_cmd(&["SUBSCRIBE", "a"]);
    s.read_until(b":1\r\n");
    let mut c = Raw::connect(srv.port);
    c.hello3();
    c.send(b"PUBSUB NUMSUB a zz\r\n");
    c.expect(b"*4\r\n$1\r\na\r\n:1\r\n$2\r\nzz\r\n:0\r\n");
    c.send(b"PUBSUB SHARDNUMSUB x\r\n");
    c.expect(b"*2\r\n$1\r\nx\r\n:0\r\n");
}

/// A subscriber that never reads, under `client-output-buffer-limit pubsub
/// 1mb 512kb 1`, while 20 MB are published in 10 KB messages: every PUBLISH
/// answers promptly, the subscriber is disconnected, and the server's memory
/// stays within a few MB of its baseline.
#[test]
fn slow_subscriber_is_disconnected_without_stalling_publishers() {
    let srv = start(&["--client-output-buffer-limit", "pubsub 1mb 512kb 1"]);
    let mut pc = srv.connect();
    match call(&mut pc, &["CONFIG", "GET", "client-output-buffer-limit"]) {
        Value::Array(v) if v.len() == 2 => {
            let s = match &v[1] {
                Value::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                other => panic!("{other:?}"),
            };
            assert!(
                s.ends_with("pubsub 1048576 524288 1"),
                "client-output-buffer-limit is {s:?}"
            );
        }
        other => panic!("CONFIG GET replied {other:?}"),
    }
    let mut sub = Raw::connect(srv.port);
    sub.send_cmd(&["SUBSCRIBE", "flood"]);
    sub.expect(b"*3\r\n$9\r\nsubscribe\r\n$5\r\nflood\r\n:1\r\n");
    let baseline = info_num(&mut pc, "memory", "used_memory");
    let rss_baseline = rss_bytes(srv.pid());

    let payload = "x".repeat(10 * 1024);
    let mut peak = baseline;
    let mut rss_peak = rss_baseline;
    let mut slowest = Duration::ZERO;
    let mut receivers_at_end = -1;
    let t0 = Instant::now();
    for i in 0..2048 {
        let (r, took) = timed(|| pc.cmd(&["PUBLISH", "flood", &payload]));
        let n = match r {
            Ok(Value::Int(n)) => n,
            other => panic!("PUBLISH #{i} replied {other:?}"),
        };
        assert!(n == 0 || n == 1, "PUBLISH #{i} replied {n}");
        if i == 0 {
            assert_eq!(n, 1, "the subscriber should receive the first message");
        }
        receivers_at_end = n;
        slowest = slowest.max(took);
        if i % 64 == 0 {
            peak = peak.max(info_num(&mut pc, "memory", "used_memory"));
            rss_peak = rss_peak.max(rss_bytes(srv.pid()));
        }
    }
    let total = t0.elapsed();
    assert!(
        slowest < Duration::from_secs(2),
        "a PUBLISH took {slowest:?} (the publisher stalled)"
    );
    assert_eq!(
        receivers_at_end, 0,
        "the slow subscriber was still receiving at the end"
    );
    // The subscriber's connection is closed (after what was already sent).
    sub.s
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = 0usize;
    let closed = loop {
        let mut chunk = vec![0u8; 256 * 1024];
        match sub.s.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => received += n,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(closed, "the slow subscriber was not disconnected");
    assert!(
        received < 20 * 1024 * 1024,
        "the subscriber received all {received} bytes"
    );
    assert_eq!(call(&mut pc, &["PUBLISH", "flood", "x"]), Value::Int(0));
    assert_eq!(
        call(&mut pc, &["PUBSUB", "NUMSUB", "flood"]),
        arr(vec![bulk("flood"), Value::Int(0)])
    );
    let growth = peak - baseline;
    assert!(
        growth < 4 * 1024 * 1024,
        "used_memory grew by {growth} bytes (baseline {baseline}, peak {peak})"
    );
    let rss_growth = rss_peak.saturating_sub(rss_baseline);
    assert!(
        rss_growth < 16 * 1024 * 1024,
        "RSS grew by {rss_growth} bytes (baseline {rss_baseline}, peak {rss_peak})"
    );
    eprintln!(
        "slow subscriber: 20 MB published in {total:?}, slowest PUBLISH {slowest:?}, \
         subscriber read {received} bytes, used_memory +{growth}, RSS +{rss_growth}"
    );
    // Redis 7.0 has no such counter (7.2 does); where the server reports
    // it, this disconnection must be counted.
    let stats = match call(&mut pc, &["INFO", "stats"]) {
        Value::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO stats replied {other:?}"),
    };
    if stats.contains("client_output_buffer_limit_disconnections:") {
        assert_eq!(
            info_num(&mut pc, "stats", "client_output_buffer_limit_disconnections"),
            1,
            "INFO stats client_output_buffer_limit_disconnections after the pubsub limit closed a subscriber"
        );
    }
}

/// VmRSS of a process, in bytes (0 if /proc cannot tell).
fn rss_bytes(pid: u32) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

// ---------------------------------------------------------------------------
// 4. Keyspace notifications
// ---------------------------------------------------------------------------

/// One step of the notification script.
enum Step {
    /// Commands run on the main connection.
    Cmd(&'static [&'static str]),
    /// Sleep (no command).
    Sleep(u64),
    /// A helper connection runs `blocker` (which must block), then the main
    /// connection runs `push`; the helper's reply is recorded.
    Served {
        blocker: &'static [&'static str],
        push: &'static [&'static str],
    },
    /// Run the command, then wait (without touching the key) until an
    /// `expired` event arrives: active expiry.
    AwaitExpired(&'static [&'static str]),
}

use Step::{AwaitExpired, Cmd, Served, Sleep};

const CORE_SCRIPT: &[Step] = &[
    // Strings.
    Cmd(&["SET", "s1", "hello"]),
    Cmd(&["SETNX", "s1", "x"]),
    Cmd(&["SETNX", "s2", "x"]),
    Cmd(&["APPEND", "s1", "!"]),
    Cmd(&["APPEND", "s3", "new"]),
    Cmd(&["SETRANGE", "s1", "0", "J"]),
    Cmd(&["INCR", "n"]),
    Cmd(&["INCRBY", "n", "5"]),
    Cmd(&["DECR", "n"]),
    Cmd(&["DECRBY", "n", "2"]),
    Cmd(&["INCRBYFLOAT", "n", "1.5"]),
    Cmd(&["INCR", "s1"]),
    Cmd(&["GETSET", "s2", "y"]),
    Cmd(&["SET", "s4", "v", "EX", "100"]),
    Cmd(&["SET", "s4", "v2", "KEEPTTL"]),
    Cmd(&["SET", "s4", "v3", "XX", "GET"]),
    Cmd(&["SET", "s4", "v4", "NX"]),
    Cmd(&["SETEX", "s5", "100", "v"]),
    Cmd(&["PSETEX", "s6", "100000", "v"]),
    Cmd(&["GETEX", "s4", "PERSIST"]),
    Cmd(&["GETEX", "s4", "PX", "100000"]),
    Cmd(&["GETEX", "s4"]),
    Cmd(&["MSET", "m1", "1", "m2", "2"]),
    Cmd(&["MSETNX", "m1", "x", "m3", "3"]),
    Cmd(&["MSETNX", "m4", "4", "m5", "5"]),
    Cmd(&["GETDEL", "s2"]),
    Cmd(&["GETDEL", "s2"]),
    Cmd(&["GET", "missing"]),
    Cmd(&["MGET", "s1", "missing", "m1"]),
    Cmd(&["STRLEN", "missing"]),
    Cmd(&["GETRANGE", "missing", "0", "1"]),
    Cmd(&["EXISTS", "missing"]),
    // Keys.
    Cmd(&["EXPIRE", "s1", "100"]),
    Cmd(&["PEXPIRE", "s1", "200000"]),
    Cmd(&["EXPIREAT", "s1", "9999999999"]),
    Cmd(&["EXPIRE", "s1", "50", "GT"]),
    Cmd(&["PERSIST", "s1"]),
    Cmd(&["PERSIST", "s1"]),
    Cmd(&["EXPIRE", "m1", "0"]),
    Cmd(&["PEXPIREAT", "m5", "1"]),
    Cmd(&["EXPIRE", "nokey", "10"]),
    Cmd(&["RENAME", "s1", "r1"]),
    Cmd(&["RENAME", "m2", "r1"]),
    Cmd(&["RENAME", "nokey", "x"]),
    Cmd(&["RENAMENX", "r1", "m4"]),
    Cmd(&["RENAMENX", "r1", "r2"]),
    Cmd(&["RENAME", "r2", "r2"]),
    Cmd(&["COPY", "r2", "c1"]),
    Cmd(&["COPY", "r2", "c1"]),
    Cmd(&["COPY", "r2", "c1", "REPLACE"]),
    Cmd(&["COPY", "r2", "c2", "DB", "2"]),
    Cmd(&["MOVE", "c1", "1"]),
    Cmd(&["MOVE", "nokey", "1"]),
    Cmd(&["SELECT", "1"]),
    Cmd(&["SET", "in1", "v"]),
    Cmd(&["DEL", "c1", "in1"]),
    Cmd(&["SELECT", "0"]),
    Cmd(&["DEL", "m4", "n", "nokey"]),
    Cmd(&["UNLINK", "s3", "s5"]),
    Cmd(&["TOUCH", "r2", "nokey"]),
    Cmd(&["TYPE", "r2"]),
    Cmd(&["TTL", "nokey"]),
    // A transaction: the events come with EXEC, in order.
    Cmd(&["MULTI"]),
    Cmd(&["SET", "tx", "1"]),
    Cmd(&["INCR", "tx"]),
    Cmd(&["RPUSH", "txl", "a"]),
    Cmd(&["GET", "nokey"]),
    Cmd(&["DEL", "tx"]),
    Cmd(&["EXEC"]),
    Cmd(&["SWAPDB", "0", "1"]),
    Cmd(&["SWAPDB", "0", "1"]),
    Cmd(&["DEL", "txl"]),
    // Lists.
    Cmd(&["LPUSH", "l", "a", "b", "c"]),
    Cmd(&["RPUSH", "l", "d"]),
    Cmd(&["LPUSHX", "nol", "x"]),
    Cmd(&["RPUSHX", "l", "e"]),
    Cmd(&["LPOP", "l"]),
    Cmd(&["RPOP", "l", "2"]),
    Cmd(&["LRANGE", "l", "0", "-1"]),
    Cmd(&["LRANGE", "nol", "0", "-1"]),
    Cmd(&["LMOVE", "l", "l2", "LEFT", "RIGHT"]),
    Cmd(&["RPOPLPUSH", "l", "l2"]),
    Cmd(&["LMOVE", "l2", "l2", "LEFT", "RIGHT"]),
    Cmd(&["LPUSH", "l", "p", "q", "r", "s"]),
    Cmd(&["LTRIM", "l", "0", "2"]),
    Cmd(&["LSET", "l", "0", "z"]),
    Cmd(&["LSET", "l", "9", "z"]),
    Cmd(&["LINSERT", "l", "BEFORE", "z", "y"]),
    Cmd(&["LINSERT", "l", "AFTER", "nope", "w"]),
    Cmd(&["LREM", "l", "0", "y"]),
    Cmd(&["LREM", "l", "0", "nope"]),
    Cmd(&["LMPOP", "2", "nol", "l", "LEFT", "COUNT", "2"]),
    Cmd(&["LTRIM", "l2", "1", "0"]),
    Cmd(&["LPOP", "l", "10"]),
    Cmd(&["LPOP", "l"]),
    Cmd(&["LINDEX", "nol", "0"]),
    Cmd(&["LLEN", "nol"]),
    Served {
        blocker: &["BLPOP", "bl", "0"],
        push: &["RPUSH", "bl", "x", "y"],
    },
    Served {
        blocker: &["BRPOP", "bl2", "0"],
        push: &["LPUSH", "bl2", "z"],
    },
    Served {
        blocker: &["BLMOVE", "src", "dst", "LEFT", "RIGHT", "0"],
        push: &["LPUSH", "src", "v"],
    },
    Served {
        blocker: &["BRPOPLPUSH", "src", "dst", "0"],
        push: &["RPUSH", "src", "w"],
    },
    Served {
        blocker: &["BLMPOP", "0", "1", "bm", "RIGHT", "COUNT", "5"],
        push: &["RPUSH", "bm", "1", "2"],
    },
    Cmd(&["DEL", "bl", "dst"]),
    // Expiry observed on access (active expiry off).
    Cmd(&["DEBUG", "SET-ACTIVE-EXPIRE", "0"]),
    Cmd(&["SET", "e1", "v", "PX", "50"]),
    Cmd(&["SET", "e2", "v", "PX", "50"]),
    Sleep(120),
    Cmd(&["GET", "e1"]),
    Cmd(&["EXISTS", "e2"]),
    Cmd(&["DEBUG", "SET-ACTIVE-EXPIRE", "1"]),
    // Active expiry, without access.
    AwaitExpired(&["SET", "e3", "v", "PX", "50"]),
    Cmd(&["FLUSHDB"]),
];

const HASH_SCRIPT: &[Step] = &[
    Cmd(&["HSET", "h", "f1", "v1", "f2", "v2"]),
    Cmd(&["HSET", "h", "f1", "v1b"]),
    Cmd(&["HMSET", "h", "f4", "v4"]),
    Cmd(&["HSETNX", "h", "f3", "v3"]),
    Cmd(&["HSETNX", "h", "f3", "v4"]),
    Cmd(&["HINCRBY", "h", "cnt", "2"]),
    Cmd(&["HINCRBYFLOAT", "h", "fl", "1.5"]),
    Cmd(&["HDEL", "h", "f1", "nope"]),
    Cmd(&["HDEL", "h", "nope"]),
    Cmd(&["HGET", "h", "nope"]),
    Cmd(&["HGET", "noh", "f"]),
    Cmd(&["HGETALL", "noh"]),
    Cmd(&["HLEN", "noh"]),
    Cmd(&["HDEL", "h", "f2", "f3", "f4", "cnt", "fl"]),
    Cmd(&["HSET", "h2", "a", "1"]),
    Cmd(&["EXPIRE", "h2", "100"]),
    Cmd(&["RENAME", "h2", "h3"]),
    Cmd(&["DEL", "h3"]),
];

const SET_SCRIPT: &[Step] = &[
    Cmd(&["SADD", "st", "a", "b", "c"]),
    Cmd(&["SADD", "st", "a"]),
    Cmd(&["SREM", "st", "a"]),
    Cmd(&["SREM", "st", "nope"]),
    Cmd(&["SMOVE", "st", "st2", "b"]),
    Cmd(&["SMOVE", "st", "st2", "nope"]),
    Cmd(&["SPOP", "st"]),
    Cmd(&["SADD", "st", "x", "y"]),
    Cmd(&["SINTERSTORE", "sd", "st", "st"]),
    Cmd(&["SUNIONSTORE", "sd2", "st", "st2"]),
    Cmd(&["SDIFFSTORE", "sd3", "st", "st"]),
    Cmd(&["SDIFFSTORE", "sd2", "st", "st"]),
    Cmd(&["SISMEMBER", "nos", "a"]),
    Cmd(&["SMEMBERS", "nos"]),
    Cmd(&["SCARD", "nos"]),
    Cmd(&["SREM", "st", "x", "y"]),
    Cmd(&["DEL", "sd", "st2"]),
];

const ZSET_SCRIPT: &[Step] = &[
    Cmd(&["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d"]),
    Cmd(&["ZADD", "z", "1", "a"]),
    Cmd(&["ZADD", "z", "XX", "5", "a"]),
    Cmd(&["ZADD", "z", "INCR", "1", "b"]),
    Cmd(&["ZINCRBY", "z", "1", "b"]),
    Cmd(&["ZREM", "z", "a", "nope"]),
    Cmd(&["ZREM", "z", "nope"]),
    Cmd(&["ZADD", "z", "10", "e", "11", "f", "12", "g"]),
    Cmd(&["ZREMRANGEBYRANK", "z", "0", "0"]),
    Cmd(&["ZREMRANGEBYSCORE", "z", "11", "11"]),
    Cmd(&["ZPOPMIN", "z"]),
    Cmd(&["ZPOPMAX", "z"]),
    Cmd(&["ZUNIONSTORE", "zu", "1", "z"]),
    Cmd(&["ZINTERSTORE", "zi", "2", "z", "zu"]),
    Cmd(&["ZDIFFSTORE", "zd", "2", "z", "zu"]),
    Cmd(&["ZRANGESTORE", "zr", "z", "0", "-1"]),
    Cmd(&["ZSCORE", "noz", "a"]),
    Cmd(&["ZCARD", "noz"]),
    Cmd(&["ZMPOP", "1", "z", "MIN", "COUNT", "10"]),
    Served {
        blocker: &["BZPOPMIN", "bz", "0"],
        push: &["ZADD", "bz", "1", "a", "2", "b"],
    },
    Served {
        blocker: &["BZMPOP", "0", "1", "bz2", "MAX"],
        push: &["ZADD", "bz2", "3", "c"],
    },
    Cmd(&["DEL", "zu", "zi", "zr", "bz"]),
];

/// What one step produced: replies and the notifications received.
#[derive(PartialEq, Eq)]
struct StepRecord {
    step: String,
    replies: Vec<Value>,
    events: Vec<String>,
}

/// The command names a step needs on the server.
fn step_commands(step: &Step) -> Vec<&'static str> {
    match step {
        Cmd(a) | AwaitExpired(a) => vec![a[0]],
        Served { blocker, push } => vec![blocker[0], push[0]],
        Sleep(_) => vec![],
    }
}

fn step_label(step: &Step) -> String {
    let j = |a: &[&str]| a.join(" ");
    match step {
        Cmd(a) => j(a),
        Sleep(ms) => format!("(sleep {ms} ms)"),
        Served { blocker, push } => format!("{} <- {}", j(blocker), j(push)),
        AwaitExpired(a) => format!("{} (then wait for active expiry)", j(a)),
    }
}

/// Reads one pmessage for the `__key*__:*` subscription as "channel msg".
fn read_event(sub: &mut RespConn) -> (Vec<u8>, Vec<u8>) {
    match sub.read_reply() {
        Ok(Value::Array(items)) if items.len() == 4 => match &items[..] {
            [Value::Bulk(kind), Value::Bulk(pat), Value::Bulk(ch), Value::Bulk(msg)]
                if kind == b"pmessage" && pat == b"__key*__:*" =>
            {
                (ch.clone(), msg.clone())
            }
            _ => panic!("unexpected pub/sub frame {:?}", Value::Array(items)),
        },
        other => panic!("unexpected pub/sub frame {other:?}"),
    }
}

/// Runs `script` against the server on `port` with `notify-keyspace-events`
/// set to `flags`, recording each step's replies and notifications.
fn record_notifications(port: u16, flags: &str, script: &[&Step]) -> Vec<StepRecord> {
    let mut c = RespConn::connect(port).unwrap();
    assert_eq!(call(&mut c, &["FLUSHALL"]), ok());
    assert_eq!(
        call(&mut c, &["CONFIG", "SET", "notify-keyspace-events", flags]),
        ok()
    );
    // Markers go through their own connection: the main one may be in MULTI.
    let mut marker_conn = RespConn::connect(port).unwrap();
    let mut sub = RespConn::connect(port).unwrap();
    assert_eq!(
        call(&mut sub, &["PSUBSCRIBE", "__key*__:*"]),
        arr(vec![bulk("psubscribe"), bulk("__key*__:*"), Value::Int(1)])
    );
    let mut out = Vec::new();
    for (i, step) in script.iter().enumerate() {
        let mut replies = Vec::new();
        let mut events = Vec::new();
        match step {
            Cmd(args) => replies.push(call(&mut c, args)),
            Sleep(ms) => thread::sleep(Duration::from_millis(*ms)),
            Served { blocker, push } => {
                let blocker: Vec<String> = blocker.iter().map(|s| s.to_string()).collect();
                let helper = thread::spawn(move || {
                    let mut h = RespConn::connect(port).unwrap();
                    let args: Vec<&str> = blocker.iter().map(|s| s.as_str()).collect();
                    call(&mut h, &args)
                });
                let what = format!("step `{}`: the helper to block", step_label(step));
                poll(Duration::from_secs(5), &what, || {
                    (info_num(&mut c, "clients", "blocked_clients") == 1).then_some(())
                });
                replies.push(call(&mut c, push));
                replies.push(helper.join().expect("blocked helper failed"));
            }
            AwaitExpired(args) => {
                replies.push(call(&mut c, args));
                loop {
                    let (ch, msg) = read_event(&mut sub);
                    let done = ch.ends_with(b"__:expired");
                    events.push(format!("{} {}", escape(&ch), escape(&msg)));
                    if done {
                        break;
                    }
                }
            }
        }
        // A marker publish ends the step's events.
        let marker = format!("__keyend__:{i}");
        assert_eq!(
            call(&mut marker_conn, &["PUBLISH", &marker, "end"]),
            Value::Int(1)
        );
        loop {
            let (ch, msg) = read_event(&mut sub);
            if ch == marker.as_bytes() {
                break;
            }
            events.push(format!("{} {}", escape(&ch), escape(&msg)));
        }
        out.push(StepRecord {
            step: step_label(step),
            replies,
            events,
        });
    }
    out
}

/// Runs the notification script against the server under test and against
/// a fresh reference redis-server, and compares every step's replies and
/// notifications.
fn compare_notifications(flags: &str) {
    let target = start(&[]);
    let reference = start_redis(&["--enable-debug-command".into(), "yes".into()]);
    let mut probe = target.connect();
    // Every step runs: a command the server lacks fails the test here, by
    // name, instead of its steps being dropped from the comparison (which
    // used to let a missing command pass unnoticed).
    let script: Vec<&Step> = [CORE_SCRIPT, HASH_SCRIPT, SET_SCRIPT, ZSET_SCRIPT]
        .into_iter()
        .flatten()
        .collect();
    let names: BTreeSet<&str> = script.iter().flat_map(|s| step_commands(s)).collect();
    let missing: Vec<&str> = names
        .into_iter()
        .filter(|name| !has_command(&mut probe, name))
        .collect();
    assert!(
        missing.is_empty(),
        "notifications ({flags}): the server does not know {missing:?} (COMMAND INFO is nil), \
         which the notification script uses"
    );
    let got = record_notifications(target.port, flags, &script);
    let want = record_notifications(reference.port, flags, &script);
    assert_eq!(got.len(), want.len());
    if std::env::var_os("DUMP_NOTIFY").is_some() {
        for r in &want {
            eprintln!(
                "{} => {:?}\n      {}",
                r.step,
                r.replies,
                r.events.join(", ")
            );
        }
    }
    // The script is meaningful: the reference saw expiries both ways.
    let all_events: Vec<&String> = want.iter().flat_map(|r| &r.events).collect();
    for needle in [
        "\"__keyevent@0__:expired\" \"e1\"",
        "\"__keyevent@0__:expired\" \"e3\"",
        "\"__keyevent@0__:lpop\" \"bl\"",
        "\"__keyspace@1__:c1\" \"move_to\"",
    ] {
        assert!(
            all_events.iter().any(|e| e.as_str() == needle),
            "the reference never sent {needle}"
        );
    }
    let mut diffs = Vec::new();
    for (g, w) in got.iter().zip(&want) {
        if g != w {
            let mut d = format!("step `{}`:", w.step);
            if g.replies != w.replies {
                d += &format!(
                    "\n    replies: redis {:?}\n             target {:?}",
                    w.replies, g.replies
                );
            }
            if g.events != w.events {
                d += &format!(
                    "\n    events: redis  [{}]\n            target [{}]",
                    w.events.join(", "),
                    g.events.join(", ")
                );
            }
            diffs.push(d);
        }
    }
    assert!(
        diffs.is_empty(),
        "notify-keyspace-events {flags}: {} of {} steps differ from redis-server:\n{}",
        diffs.len(),
        want.len(),
        diffs.join("\n")
    );
}

/// Every step of the notification script (strings, lists, keys, expiry,
/// hashes, sets, sorted sets, blocking pops) gives the same replies and the
/// same keyspace/keyevent notifications, in the same order, as
/// redis-server with `notify-keyspace-events KEA`. A differing reply or
/// event, or a command the server lacks, fails it.
#[test]
fn keyspace_notifications_kea_match_redis() {
    compare_notifications("KEA");
}

/// As [`keyspace_notifications_kea_match_redis`], with `KEAnm` (adds the
/// `new` and key-miss events).
#[test]
fn keyspace_notifications_keanm_match_redis() {
    compare_notifications("KEAnm");
}

/// Notification classes filter: with only `El` (list keyevents), string
/// commands send nothing and keyspace channels are silent.
#[test]
fn keyspace_notification_classes_filter_events() {
    let srv = start(&[]);
    let mut c = srv.connect();
    assert_eq!(
        call(&mut c, &["CONFIG", "SET", "notify-keyspace-events", "El"]),
        ok()
    );
    assert_eq!(
        call(&mut c, &["CONFIG", "GET", "notify-keyspace-events"]),
        barr(&["notify-keyspace-events", "lE"])
    );
    let mut sub = Raw::connect(srv.port);
    sub.send_cmd(&["PSUBSCRIBE", "__key*__:*"]);
    sub.expect(b"*3\r\n$10\r\npsubscribe\r\n$10\r\n__key*__:*\r\n:1\r\n");
    assert_eq!(call(&mut c, &["SET", "s", "v"]), ok());
    assert_eq!(call(&mut c, &["DEL", "s"]), Value::Int(1));
    assert_eq!(call(&mut c, &["RPUSH", "l", "a"]), Value::Int(1));
    sub.expect(
        b"*4\r\n$8\r\npmessage\r\n$10\r\n__key*__:*\r\n$20\r\n__keyevent@0__:rpush\r\n$1\r\nl\r\n",
    );
    // A RESP3 subscriber gets the same event as a push frame.
    let mut sub3 = Raw::connect(srv.port);
    sub3.hello3();
    sub3.send_cmd(&["SUBSCRIBE", "__keyevent@0__:lpop"]);
    sub3.expect(b">3\r\n$9\r\nsubscribe\r\n$19\r\n__keyevent@0__:lpop\r\n:1\r\n");
    assert_eq!(call(&mut c, &["LPOP", "l"]), bulk("a"));
    sub.expect(
        b"*4\r\n$8\r\npmessage\r\n$10\r\n__key*__:*\r\n$19\r\n__keyevent@0__:lpop\r\n$1\r\nl\r\n",
    );
    sub3.expect(b">3\r\n$7\r\nmessage\r\n$19\r\n__keyevent@0__:lpop\r\n$1\r\nl\r\n");
    // Expired events are class x: not enabled here.
    assert_eq!(call(&mut c, &["SET", "e", "v", "PX", "1"]), ok());
    thread::sleep(Duration::from_millis(10));
    assert_eq!(call(&mut c, &["GET", "e"]), Value::Nil);
    assert_eq!(
        call(&mut c, &["CONFIG", "SET", "notify-keyspace-events", ""]),
        ok()
    );
    assert_eq!(call(&mut c, &["RPUSH", "l", "b"]), Value::Int(1));
    sub.expect_silence(Duration::from_millis(100));
    sub3.expect_silence(Duration::from_millis(10));
}
