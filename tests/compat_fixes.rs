//! Behaviours found wrong by trying anykv as a user would (issue 17's
//! list), each checked against redis-server 7.0: a WATCH on an SMOVE's
//! destination that already had the member, COMMAND GETKEYS for SORT with
//! several STORE options, subscription confirmations under CLIENT REPLY
//! OFF, and CLIENT LIST's query buffer.

mod common;

use common::{same, start_anykv, start_reference, Conn, ServerProcess};
use std::io::{Read, Write};

/// SMOVE of a member the destination already has changes only the
/// source: a WATCH on the destination holds.
#[test]
fn smove_to_a_set_that_has_the_member_keeps_its_watch() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    let (mut r2, mut a2) = (reference.connect(), target.connect());
    for step in [
        vec!["SADD", "src", "m", "n"],
        vec!["SADD", "dst", "m"],
        vec!["WATCH", "dst"],
    ] {
        same(&mut r, &mut a, &step);
    }
    same(&mut r2, &mut a2, &["SMOVE", "src", "dst", "m"]);
    for step in [
        vec!["MULTI"],
        vec!["SET", "x", "1"],
        vec!["EXEC"],
        vec!["WATCH", "src"],
    ] {
        same(&mut r, &mut a, &step);
    }
    // A WATCH on the source does fail.
    same(&mut r2, &mut a2, &["SMOVE", "src", "dst", "n"]);
    for step in [vec!["MULTI"], vec!["SET", "x", "2"], vec!["EXEC"]] {
        same(&mut r, &mut a, &step);
    }
}

/// SORT stores into its last STORE, skipping the arguments of LIMIT, GET
/// and BY: COMMAND GETKEYS (and so ACL key checks) names that one.
#[test]
fn sort_keys_name_the_last_store() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    for step in [
        vec![
            "COMMAND", "GETKEYS", "SORT", "a", "STORE", "b", "STORE", "c",
        ],
        vec![
            "COMMAND", "GETKEYS", "SORT", "a", "GET", "store", "STORE", "c",
        ],
        vec![
            "COMMAND", "GETKEYS", "SORT", "a", "LIMIT", "0", "1", "STORE", "c",
        ],
        vec!["COMMAND", "GETKEYS", "SORT", "a", "BY", "store", "DESC"],
        vec!["COMMAND", "GETKEYS", "SORT", "a", "STORE"],
        vec!["RPUSH", "a", "3", "1", "2"],
        vec!["SORT", "a", "STORE", "b", "STORE", "c"],
        vec!["EXISTS", "b"],
        vec!["LRANGE", "c", "0", "-1"],
    ] {
        same(&mut r, &mut a, &step);
    }
}

/// A raw connection's bytes after `cmds`, read until the server is quiet,
/// then (with `publish`) after another connection's `PUBLISH`.
fn exchange(
    srv: &ServerProcess,
    resp3: bool,
    cmds: &[&[&str]],
    publish: Option<(&str, &str)>,
) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.port)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .expect("timeout");
    let send = |s: &mut std::net::TcpStream, args: &[&str]| {
        let mut b = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            b.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        s.write_all(&b).expect("write");
    };
    let drain = |s: &mut std::net::TcpStream| {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    };
    if resp3 {
        send(&mut s, &["HELLO", "3"]);
        drain(&mut s);
    }
    for c in cmds {
        send(&mut s, c);
    }
    let mut got = drain(&mut s);
    if let Some((channel, message)) = publish {
        let mut p = std::net::TcpStream::connect(("127.0.0.1", srv.port)).expect("connect");
        send(&mut p, &["PUBLISH", channel, message]);
        got.extend_from_slice(&drain(&mut s));
    }
    got
}

/// CLIENT REPLY OFF silences replies, not what Redis pushes:
/// subscription confirmations and published messages arrive, in RESP2
/// and RESP3; a subscription command's error is its reply, silenced.
#[test]
fn subscriptions_are_confirmed_under_client_reply_off() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    for resp3 in [false, true] {
        let cmds: &[&[&str]] = &[
            &["CLIENT", "REPLY", "OFF"],
            &["PING"],
            &["SUBSCRIBE"],
            &["SUBSCRIBE", "ch", "other"],
            &["PSUBSCRIBE", "p*"],
            &["UNSUBSCRIBE", "other"],
        ];
        let publish = Some(("ch", "hello"));
        let want = exchange(&reference, resp3, cmds, publish);
        let got = exchange(&target, resp3, cmds, publish);
        assert!(
            String::from_utf8_lossy(&want).contains("hello"),
            "redis-server delivers the message"
        );
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "resp3: {resp3}"
        );
    }
}

/// CLIENT INFO / LIST show the query buffer in use: while the command
/// runs, its own bytes (Redis's qbuf).
#[test]
fn client_info_shows_the_query_buffer_in_use() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let qbuf = |srv: &ServerProcess, cmd: &[&str]| -> String {
        let mut c = srv.connect();
        let Ok(common::Value::Bulk(b)) = c.cmd(cmd) else {
            panic!("{cmd:?}");
        };
        String::from_utf8_lossy(&b)
            .split_whitespace()
            .find(|f| f.starts_with("qbuf="))
            .map(str::to_string)
            .expect("a qbuf field")
    };
    for cmd in [&["CLIENT", "INFO"][..], &["CLIENT", "LIST"]] {
        let want = qbuf(&reference, cmd);
        assert_ne!(want, "qbuf=0");
        assert_eq!(qbuf(&target, cmd), want, "{cmd:?}");
    }
}

/// COMMAND GETKEYSANDFLAGS names each key with the flags redis-server
/// 7.0 gives it: from the key specs, or from its getkeys procedures where
/// the specs cannot tell (SET with and without GET, BITFIELD reading or
/// writing, SORT's STORE, MIGRATE's KEYS, GEORADIUS's STORE); its errors
/// as GETKEYS's; in RESP2 and RESP3 (flags are a set there).
#[test]
fn getkeysandflags_names_each_keys_flags_as_redis() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let lines: &[&[&str]] = &[
        &["GET", "k"],
        &["SET", "k", "v"],
        &["SET", "k", "v", "GET"],
        &["MSET", "a", "1", "b", "2"],
        &["APPEND", "k", "x"],
        &["DEL", "a", "b"],
        &["RENAME", "a", "b"],
        &["LMOVE", "a", "b", "LEFT", "RIGHT"],
        &["BLPOP", "a", "b", "0"],
        &["ZUNIONSTORE", "d", "2", "a", "b"],
        &["ZUNION", "2", "a", "b"],
        &["LMPOP", "2", "a", "b", "LEFT"],
        &["BITFIELD", "k", "GET", "u8", "0"],
        &["BITFIELD", "k", "SET", "u8", "0", "1"],
        &["BITFIELD_RO", "k", "GET", "u8", "0"],
        &["BITOP", "AND", "d", "a", "b"],
        &["SORT", "k"],
        &["SORT", "k", "STORE", "d"],
        &["SORT_RO", "k"],
        &["EVAL", "return 1", "2", "a", "b"],
        &["FCALL", "f", "1", "a"],
        &["XREAD", "STREAMS", "a", "b", "0", "0"],
        &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "a", ">"],
        &["MIGRATE", "h", "1", "k", "0", "10"],
        &["MIGRATE", "h", "1", "", "0", "10", "KEYS", "a", "b"],
        &["GEORADIUS", "k", "0", "0", "1", "km", "STORE", "d"],
        &[
            "GEOSEARCHSTORE",
            "d",
            "k",
            "FROMLONLAT",
            "0",
            "0",
            "BYRADIUS",
            "1",
            "km",
        ],
        &["PFMERGE", "d", "a", "b"],
        &["OBJECT", "ENCODING", "k"],
        &["PING"],
        &["NOSUCH", "k"],
        &["GET"],
        &["ZUNIONSTORE", "d", "5", "a"],
    ];
    for resp3 in [false, true] {
        let conn = |s: &ServerProcess| {
            if resp3 {
                common::RespConn::connect_resp3(s.port).expect("HELLO 3")
            } else {
                s.connect()
            }
        };
        let (mut r, mut a) = (conn(&reference), conn(&target));
        for line in lines {
            let mut args = vec!["COMMAND", "GETKEYSANDFLAGS"];
            args.extend_from_slice(line);
            same(&mut r, &mut a, &args);
            if resp3 {
                assert_eq!(a.shape(), r.shape(), "{args:?}: RESP3 types");
            }
        }
    }
}
