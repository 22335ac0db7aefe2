//! Streams against the reference redis-server 7.0: XADD (ids of every
//! form, NOMKSTREAM, MAXLEN/MINID with `=`/`~` and LIMIT), XLEN, XRANGE,
//! XREVRANGE (exclusive bounds, COUNT), XDEL, XTRIM, XSETID and XREAD
//! (BLOCK too) give the same replies and errors; a seeded random workload
//! leaves the same streams (approximate trimming included, which depends
//! on where nodes start); DUMP payloads restore both ways; and the
//! streams come back whole from the append-only log and a snapshot.

mod common;

use std::time::Duration;

use common::{same, start_anykv, start_reference, Conn, RespConn, Value};

fn call(c: &mut RespConn, args: &[&[u8]]) -> Value {
    let args: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
    c.call(&args).expect("reply")
}

#[test]
fn stream_commands_answer_as_redis_does() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    let cases: &[&[&str]] = &[
        // XADD: ids of every form.
        &["XADD", "s", "1-1", "a", "1", "b", "2"],
        &["XADD", "s", "1-*", "a", "3", "b", "4"],
        &["XADD", "s", "2", "c", "5"],
        &["XADD", "s", "2-*", "c", "6"],
        &["XADD", "s", "2-1", "c", "7"],
        &["XADD", "s", "1-9", "c", "7"],
        &["XADD", "s", "0-0", "a", "b"],
        &["XADD", "new", "0-0", "a", "b"],
        &["EXISTS", "new"],
        &["XADD", "s", "0-*", "a", "b"],
        &["XADD", "s", "3-0", "a"],
        &["XADD", "s", "3-0"],
        &["XADD", "s", "x-1", "a", "b"],
        &["XADD", "s", "1-x", "a", "b"],
        &["XADD", "s", "-1", "a", "b"],
        &["XADD", "s", "+", "a", "b"],
        &["XADD", "s", "007-0", "a", "b"],
        &["XADD", "s", " 8-+1", "a", "b"],
        &[
            "XADD",
            "s",
            "18446744073709551615-18446744073709551614",
            "a",
            "b",
        ],
        &["XADD", "s", "18446744073709551615-*", "a", "b"],
        &["XADD", "s", "*", "a", "b"],
        // `ms-*` after that millisecond's last possible sequence.
        &["XADD", "seqmax", "5-18446744073709551615", "a", "b"],
        &["XADD", "seqmax", "5-*", "a", "b"],
        &["XLEN", "seqmax"],
        &["XADD", "s", "18446744073709551616-0", "a", "b"],
        &["XRANGE", "s", "-", "+"],
        &["XLEN", "s"],
        &[
            "XADD",
            "s",
            "NOMKSTREAM",
            "MAXLEN",
            "=",
            "3",
            "18446744073709551615-18446744073709551615",
            "x",
            "y",
        ],
        &["XRANGE", "s", "-", "+"],
        // NOMKSTREAM on a missing key.
        &["XADD", "nokey", "NOMKSTREAM", "*", "a", "b"],
        &["EXISTS", "nokey"],
        // Trimming options and their errors.
        &["XADD", "t", "MAXLEN", "-1", "1-0", "a", "b"],
        &["XADD", "t", "MAXLEN", "x", "1-0", "a", "b"],
        &["XADD", "t", "MAXLEN", "1", "MINID", "1", "1-0", "a", "b"],
        &["XADD", "t", "LIMIT", "10", "1-0", "a", "b"],
        &["XADD", "t", "MAXLEN", "1", "LIMIT", "10", "1-0", "a", "b"],
        &[
            "XADD", "t", "MAXLEN", "~", "1", "LIMIT", "-1", "1-0", "a", "b",
        ],
        &[
            "XADD", "t", "MAXLEN", "~", "1", "LIMIT", "10", "1-0", "a", "b",
        ],
        &["XADD", "t", "MINID", "~", "x", "2-0", "a", "b"],
        &["XADD", "t", "MINID", "=", "2", "3-0", "a", "b"],
        &["XADD", "t", "maxlen", "~", "0", "4-0", "a", "b"],
        &["XADD", "t", "LIMIT", "0", "5-0", "a", "b"],
        &["XRANGE", "t", "-", "+"],
        // XRANGE / XREVRANGE.
        &["DEL", "r"],
        &["XADD", "r", "1-0", "f", "1"],
        &["XADD", "r", "1-1", "f", "2", "g", "x"],
        &["XADD", "r", "2-0", "f", "3"],
        &["XADD", "r", "3-5", "f", "4"],
        &["XRANGE", "r", "1", "2"],
        &["XRANGE", "r", "(1-0", "+"],
        &["XRANGE", "r", "-", "(3-5"],
        &["XRANGE", "r", "(1", "+"],
        &["XRANGE", "r", "(-", "+"],
        &["XRANGE", "r", "-", "(+"],
        &[
            "XRANGE",
            "r",
            "(18446744073709551615-18446744073709551615",
            "+",
        ],
        &["XRANGE", "r", "-", "(0-0"],
        &["XRANGE", "r", "3", "1"],
        &["XRANGE", "r", "-", "+", "COUNT", "2"],
        &["XRANGE", "r", "-", "+", "COUNT", "0"],
        &["XRANGE", "r", "-", "+", "COUNT", "-5"],
        &["XRANGE", "r", "-", "+", "COUNT", "x"],
        &["XRANGE", "r", "-", "+", "COUNT"],
        &["XRANGE", "r", "-", "+", "LIMIT", "1"],
        &["XRANGE", "r", "x", "+"],
        &["XRANGE", "nokey", "-", "+"],
        &["XRANGE", "nokey", "-", "+", "COUNT", "0"],
        &["XREVRANGE", "r", "+", "-"],
        &["XREVRANGE", "r", "+", "-", "COUNT", "1"],
        &["XREVRANGE", "r", "(3-5", "(1-0"],
        &["XREVRANGE", "r", "-", "+"],
        // XDEL.
        &["XDEL", "r", "1-1", "9-9", "1-1"],
        &["XDEL", "r", "x"],
        &["XDEL", "r", "1-0", "x"],
        &["XDEL", "nokey", "1-0"],
        &["XDEL", "nokey", "bad"],
        &["XRANGE", "r", "-", "+"],
        &["XLEN", "r"],
        // XTRIM.
        &["XTRIM", "r", "MAXLEN", "1"],
        &["XTRIM", "r", "MAXLEN", "~", "0"],
        &["XTRIM", "r"],
        &["XTRIM", "r", "LIMIT", "1"],
        &["XTRIM", "r", "NOMKSTREAM", "MAXLEN", "1"],
        &["XTRIM", "r", "MINID", "9"],
        &["XTRIM", "nokey", "MAXLEN", "1"],
        &["XLEN", "r"],
        &["XADD", "r", "2-0", "f", "x"],
        // XSETID.
        &["DEL", "u"],
        &["XADD", "u", "5-0", "a", "b"],
        &["XSETID", "u", "4-0"],
        &["XSETID", "u", "9-0"],
        &["XADD", "u", "8-0", "a", "b"],
        &["XSETID", "u", "10-0", "ENTRIESADDED", "0"],
        &["XSETID", "u", "10-0", "ENTRIESADDED", "-1"],
        &["XSETID", "u", "10-0", "MAXDELETEDID", "11-0"],
        &[
            "XSETID",
            "u",
            "10-0",
            "ENTRIESADDED",
            "5",
            "MAXDELETEDID",
            "3-0",
        ],
        &["XSETID", "u", "10-0", "BAD", "1"],
        &["XSETID", "nokey", "1-0"],
        &["XADD", "u", "10-*", "a", "b"],
        &["XDEL", "u", "5-0", "10-1"],
        &["XSETID", "u", "1-0"],
        &["XLEN", "u"],
        // XREAD without blocking.
        &["XREAD", "STREAMS", "r", "u", "0", "0"],
        &["XREAD", "COUNT", "1", "STREAMS", "r", "u", "0-0", "$"],
        &["XREAD", "STREAMS", "r", "$"],
        &["XREAD", "STREAMS", "nokey", "0"],
        &["XREAD", "STREAMS", "r"],
        &["XREAD", "STREAMS", "r", "u", "0"],
        &["XREAD", "STREAMS", "r", ">"],
        &["XREAD", "STREAMS", "r", "x"],
        &["XREAD", "COUNT", "x", "STREAMS", "r", "0"],
        &["XREAD", "BLOCK", "x", "STREAMS", "r", "0"],
        &["XREAD", "BLOCK", "-1", "STREAMS", "r", "0"],
        &["XREAD", "COUNT", "1"],
        &["XREAD", "FOO", "STREAMS", "r", "0"],
        // Inside MULTI, BLOCK does not block.
        &["MULTI"],
        &["XREAD", "BLOCK", "0", "STREAMS", "r", "$"],
        &["EXEC"],
        // Wrong types both ways.
        &["SET", "str", "x"],
        &["XADD", "str", "*", "a", "b"],
        &["XLEN", "str"],
        &["XRANGE", "str", "-", "+"],
        &["XREAD", "STREAMS", "str", "0"],
        &["XDEL", "str", "1-0"],
        &["XDEL", "str", "bad"],
        &["XTRIM", "str", "MAXLEN", "1"],
        &["XSETID", "str", "1-0"],
        &["LPUSH", "r", "x"],
        &["TYPE", "r"],
        &["OBJECT", "ENCODING", "r"],
        &[
            "COMMAND", "GETKEYS", "XREAD", "COUNT", "2", "STREAMS", "a", "b", "1", "2",
        ],
        &["COMMAND", "GETKEYS", "XADD", "k", "*", "f", "v"],
    ];
    for case in cases {
        same(&mut r, &mut a, case);
    }
}

/// A seeded random workload over a few streams, step by step against
/// redis-server: the node layout shows through `MAXLEN ~` and `MINID ~`,
/// which remove whole nodes only.
#[test]
fn random_stream_workload_matches_redis() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    // Small nodes, so that trimming crosses many of them.
    for c in [&mut r, &mut a] {
        for (k, v) in [
            ("stream-node-max-entries", "7"),
            ("stream-node-max-bytes", "300"),
        ] {
            assert_eq!(
                c.cmd(&["CONFIG", "SET", k, v]).ok(),
                Some(Value::Simple(b"OK".to_vec()))
            );
        }
    }
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = |n: u64| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n
    };
    let keys = ["x0", "x1", "x2"];
    let mut ms = [1u64; 3];
    for _ in 0..2500 {
        let k = next(3) as usize;
        let key = keys[k];
        let cmd: Vec<String> = match next(10) {
            0..=3 => {
                let mut c = vec!["XADD".to_string(), key.into()];
                match next(6) {
                    0 => c.extend(["MAXLEN".into(), "~".into(), next(30).to_string()]),
                    1 => c.extend(["MAXLEN".into(), next(30).to_string()]),
                    2 => c.extend([
                        "MINID".into(),
                        "~".into(),
                        format!("{}", ms[k].saturating_sub(next(20))),
                    ]),
                    3 => c.extend([
                        "MAXLEN".into(),
                        "~".into(),
                        next(20).to_string(),
                        "LIMIT".into(),
                        next(10).to_string(),
                    ]),
                    _ => {}
                }
                ms[k] += next(3);
                c.push(match next(3) {
                    0 => format!("{}-*", ms[k]),
                    1 => format!("{}", ms[k]),
                    _ => format!("{}-{}", ms[k], next(4)),
                });
                // Same fields mostly (SAMEFIELDS entries), other sets now
                // and then, integer and string values, a long one at times.
                let n = 1 + next(3);
                for f in 0..n {
                    let field = if next(5) == 0 {
                        format!("g{f}")
                    } else {
                        format!("f{f}")
                    };
                    let value = match next(4) {
                        0 => (next(100_000) as i64 - 50_000).to_string(),
                        1 => "v".repeat(1 + next(120) as usize),
                        _ => format!("val{}", next(1000)),
                    };
                    c.push(field);
                    c.push(value);
                }
                c
            }
            4 => {
                let mut c = vec!["XDEL".to_string(), key.into()];
                for _ in 0..1 + next(3) {
                    c.push(format!("{}-{}", next(ms[k] + 1), next(4)));
                }
                c
            }
            5 => match next(3) {
                0 => vec![
                    "XTRIM".into(),
                    key.into(),
                    "MAXLEN".into(),
                    "~".into(),
                    next(40).to_string(),
                ],
                1 => vec![
                    "XTRIM".into(),
                    key.into(),
                    "MINID".into(),
                    format!("{}", next(ms[k] + 1)),
                ],
                _ => vec![
                    "XTRIM".into(),
                    key.into(),
                    "MAXLEN".into(),
                    next(40).to_string(),
                ],
            },
            6 => {
                let lo = next(ms[k] + 1);
                let mut c = vec![
                    if next(2) == 0 { "XRANGE" } else { "XREVRANGE" }.to_string(),
                    key.into(),
                ];
                let (s, e) = (format!("{lo}"), format!("({}", lo + next(10)));
                if c[0] == "XRANGE" {
                    c.extend([s, e]);
                } else {
                    c.extend([e, s]);
                }
                if next(2) == 0 {
                    c.extend(["COUNT".into(), next(5).to_string()]);
                }
                c
            }
            7 => vec![
                "XREAD".into(),
                "COUNT".into(),
                next(4).to_string(),
                "STREAMS".into(),
                key.into(),
                keys[(k + 1) % 3].into(),
                format!("{}", next(ms[k] + 1)),
                "0".into(),
            ],
            8 => vec!["XLEN".into(), key.into()],
            _ => vec!["XRANGE".into(), key.into(), "-".into(), "+".into()],
        };
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        same(&mut r, &mut a, &args);
        // (What a write left, at once: a trim that removed other entries
        // shows here, not steps later.)
        same(&mut r, &mut a, &["XLEN", key]);
    }
    // Every stream whole, and each one's DUMP restores on the other side.
    for (k, key) in keys.iter().enumerate() {
        let key = *key;
        same(&mut r, &mut a, &["XRANGE", key, "-", "+"]);
        let Value::Bulk(payload) = call(&mut r, &[b"DUMP", key.as_bytes()]) else {
            panic!("DUMP {key} on redis-server");
        };
        let copy = format!("{key}:copy");
        assert_eq!(
            call(&mut a, &[b"RESTORE", copy.as_bytes(), b"0", &payload]),
            Value::Simple(b"OK".to_vec()),
            "anykv restores redis-server's dump of {key}"
        );
        let Value::Bulk(back) = call(&mut a, &[b"DUMP", key.as_bytes()]) else {
            panic!("DUMP {key} on anykv");
        };
        assert_eq!(
            call(&mut r, &[b"RESTORE", copy.as_bytes(), b"0", &back]),
            Value::Simple(b"OK".to_vec()),
            "redis-server restores anykv's dump of {key}"
        );
        // Both copies read as the original, and take the same next entry
        // (the last id and the node layout came along).
        for c in [&mut r, &mut a] {
            assert_eq!(
                c.cmd(&["XRANGE", &copy, "-", "+"]).ok(),
                c.cmd(&["XRANGE", key, "-", "+"]).ok()
            );
        }
        let id = format!("{}-*", ms[k]);
        same(&mut r, &mut a, &["XADD", &copy, &id, "after", "restore"]);
        same(&mut r, &mut a, &["XLEN", &copy]);
        let id = format!("{}-*", ms[k] + 1);
        same(
            &mut r,
            &mut a,
            &["XADD", &copy, "MAXLEN", "~", "3", &id, "f", "v"],
        );
        same(&mut r, &mut a, &["XLEN", &copy]);
    }
}

/// XREAD BLOCK: readers waiting with `$` and with an id are woken by an
/// XADD with what arrived after their ids, as Redis replies; a reader
/// waiting past a later id keeps waiting, then times out with a nil.
#[test]
fn blocked_readers_wake_as_in_redis() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let run = |server: &common::ServerProcess| -> Vec<Value> {
        let mut w = server.connect();
        w.cmd(&["XADD", "q", "5-0", "old", "1"]).expect("xadd");
        // A list pop waiting on the key first does not hold the readers
        // up (it times out: the key is no list).
        let mut pop = server.connect();
        pop.send_all(&[vec!["BLPOP", "q", "1"]]).expect("send");
        std::thread::sleep(Duration::from_millis(50));
        let mut dollar = server.connect();
        let mut from = server.connect();
        let mut later = server.connect();
        dollar
            .send_all(&[vec![
                "XREAD", "BLOCK", "0", "STREAMS", "other", "q", "0", "$",
            ]])
            .expect("send");
        // (The same key twice: served once.)
        from.send_all(&[vec![
            "XREAD", "COUNT", "1", "BLOCK", "0", "STREAMS", "q", "q", "4-0", "4-0",
        ]])
        .expect("send");
        later
            .send_all(&[vec!["XREAD", "BLOCK", "600", "STREAMS", "q", "100-0"]])
            .expect("send");
        std::thread::sleep(Duration::from_millis(200));
        w.cmd(&["XADD", "q", "6-0", "new", "2"]).expect("xadd");
        vec![
            dollar.read_reply().expect("dollar"),
            from.read_reply().expect("from"),
            later.read_reply().expect("later"),
            pop.read_reply().expect("pop"),
        ]
    };
    assert_eq!(run(&target), run(&reference));
}

/// Streams come back whole after a restart: from the append-only log (an
/// approximate trim and generated ids are logged as what they did) and
/// from the snapshot an AOF rewrite starts the log with.
#[test]
fn streams_survive_restarts() {
    let dir = common::Scratch::new("stream-restart");
    let d = dir.dir();
    let target = common::start_anykv_aof(&d);
    let mut a = target.connect();
    a.cmd(&["CONFIG", "SET", "stream-node-max-entries", "4"])
        .expect("config");
    for i in 0..40 {
        let v = i.to_string();
        a.cmd(&["XADD", "log", "*", "n", &v, "kind", "event"])
            .expect("xadd");
    }
    a.cmd(&["XADD", "log", "MAXLEN", "~", "10", "*", "n", "last"])
        .expect("xadd trim");
    a.cmd(&["XDEL", "log", "0-1"]).expect("xdel");
    let before = a.cmd(&["XRANGE", "log", "-", "+"]).expect("xrange");
    let Value::Array(items) = &before else {
        panic!("XRANGE");
    };
    assert!(items.len() > 10 && items.len() < 41, "{}", items.len());
    // An approximate trim that empties a stream is logged as one that
    // empties it.
    for i in 1..=9 {
        let id = format!("{i}-0");
        a.cmd(&["XADD", "drained", &id, "f", "v"]).expect("xadd");
    }
    assert_eq!(
        a.cmd(&["XTRIM", "drained", "MINID", "~", "99999999"]).ok(),
        Some(Value::Int(9))
    );
    a.cmd(&["XADD", "empty", "1-1", "a", "b"]).expect("xadd");
    a.cmd(&["XDEL", "empty", "1-1"]).expect("xdel");
    a.cmd(&["XSETID", "empty", "7-7"]).expect("xsetid");
    drop(a);
    drop(target);
    let again = common::start_anykv_aof(&d);
    let mut a = again.connect();
    assert_eq!(
        a.cmd(&["XRANGE", "log", "-", "+"]).ok(),
        Some(before.clone())
    );
    assert_eq!(a.cmd(&["XLEN", "drained"]).ok(), Some(Value::Int(0)));
    // An empty stream is kept with its last id.
    assert_eq!(a.cmd(&["XLEN", "empty"]).ok(), Some(Value::Int(0)));
    assert_eq!(
        a.cmd(&["XADD", "empty", "7-*", "a", "b"]).ok(),
        Some(Value::Bulk(b"7-8".to_vec()))
    );
    // Through a rewrite (the snapshot at the log's start) too.
    assert_eq!(
        a.cmd(&["BGREWRITEAOF"]).ok().map(|v| v.is_error()),
        Some(false)
    );
    common::wait_for(
        "the rewrite's end",
        Duration::from_secs(20),
        || matches!(a.cmd(&["INFO", "persistence"]), Ok(Value::Bulk(b)) if String::from_utf8_lossy(&b).contains("aof_rewrite_in_progress:0")),
    );
    drop(a);
    drop(again);
    let third = common::start_anykv_aof(&d);
    let mut a = third.connect();
    assert_eq!(a.cmd(&["XRANGE", "log", "-", "+"]).ok(), Some(before));
    assert_eq!(
        a.cmd(&["XADD", "empty", "7-*", "a", "b"]).ok(),
        Some(Value::Bulk(b"7-9".to_vec()))
    );
}

/// XREAD and XREADGROUP count keyspace hits and misses as Redis 7.0 does:
/// every stream key is looked up twice (its id, then serving it).
#[test]
fn stream_reads_count_keyspace_hits_as_redis() {
    let reference = common::start_reference();
    let target = common::start_anykv(&common::anykv_bin());
    let stats = |c: &mut common::RespConn| -> (String, String) {
        let Ok(common::Value::Bulk(text)) = c.cmd(&["INFO", "stats"]) else {
            panic!("INFO stats");
        };
        let text = String::from_utf8_lossy(&text).into_owned();
        let field = |f: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{f}:")))
                .unwrap_or("?")
                .trim()
                .to_string()
        };
        (field("keyspace_hits"), field("keyspace_misses"))
    };
    let mut got = Vec::new();
    for srv in [&reference, &target] {
        let mut c = srv.connect();
        for cmd in [
            &["XADD", "s", "1-0", "f", "v"][..],
            &["CONFIG", "RESETSTAT"],
            &["XREAD", "STREAMS", "s", "nokey", "0", "0"],
            &["XREAD", "COUNT", "1", "STREAMS", "s", "$"],
            &["XGROUP", "CREATE", "s", "g", "0"],
            &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"],
            &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", "0"],
        ] {
            c.cmd(cmd).expect("reply");
        }
        got.push(stats(&mut c));
    }
    assert_eq!(got[1], got[0], "(hits, misses): anykv vs redis-server");
}
