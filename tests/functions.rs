//! Functions (FUNCTION, FCALL) against the reference redis-server 7.0: the
//! same requests to both give the same replies; dumps move between the
//! two both ways; libraries are data, so they replicate (to a real
//! redis-server, from one, and between anykv servers) and survive
//! restarts from the log and from a snapshot.

mod common;

use common::{start_anykv, start_reference, Conn, RespConn, Value};

/// Sorts what Redis lists in hash order (FUNCTION LIST's libraries, and
/// each library's functions and flags), so both servers' lists compare.
fn canonical(v: Value) -> Value {
    match v {
        Value::Array(items) => {
            let mut items: Vec<Value> = items.into_iter().map(canonical).collect();
            // A map flattened in RESP2 (`name`, value, ...) keeps its
            // order; lists of maps (libraries, functions) are sorted.
            if items.iter().all(|i| matches!(i, Value::Array(_))) {
                items.sort_by_key(|i| format!("{i:?}"));
            }
            Value::Array(items)
        }
        other => other,
    }
}

/// Sends `args` to both servers and requires the same reply (lists
/// compared in a canonical order).
fn same(r: &mut RespConn, a: &mut RespConn, args: &[&str]) -> Value {
    let want = canonical(r.cmd(args).expect("redis-server"));
    let got = canonical(a.cmd(args).expect("anykv"));
    assert_eq!(got, want, "{args:?}");
    got
}

fn bytes_cmd(c: &mut RespConn, args: &[&[u8]]) -> Value {
    let args: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
    c.call(&args).expect("reply")
}

const LIB: &str = "#!lua name=mylib
local function setget(keys, args)
  redis.call('SET', keys[1], args[1])
  return redis.call('GET', keys[1])
end
redis.register_function('setget', setget)
redis.register_function{function_name='double', callback=function(keys, args) return string.rep(args[1], 2) end, flags={'no-writes'}, description='twice'}
redis.register_function{function_name='Flagged', callback=function() return {1, 'a', {ok='fine'}} end, flags={'allow-oom', 'NO-WRITES', 'allow-stale'}}
redis.register_function('fails', function(keys, args) return redis.call('INCR', keys[1]) end)
redis.register_function('missing', function() return nosuch end)
redis.register_function('errtable', function() return redis.error_reply('MY custom') end)
";

#[test]
fn functions_answer_as_redis_does() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    // Libraries that do not load, each for its own reason.
    for code in [
        "return 1",
        "#!lua\nreturn 1",
        "#!lua name=a-b\nreturn 1",
        "#!lua name=x foo=1\nreturn 1",
        "#!lua name=x name=y\nreturn 1",
        "#!js name=x\nreturn 1",
        "#!lua name=x",
        "#!lua name=x\nreturn 1",
        "#!lua name=x\nx = 1",
        "#!lua name=x\nlocal s = string.len('a')",
        "#!lua name=x\nredis.register_function('f-1', function() return 1 end)",
        "#!lua name=x\nredis.register_function('f', function() end) redis.register_function('f', function() end)",
        "#!lua name=x\nredis.register_function{function_name='f', callback=function() end, flags={'bad'}}",
        "#!lua name=x\nredis.register_function{function_name='f', callback=function() end, flags='no-writes'}",
        "#!lua name=x\nredis.register_function{function_name='f', callback=function() end, other=1}",
        "#!lua name=x\nredis.register_function{callback=function() end}",
        "#!lua name=x\nredis.register_function{function_name='f'}",
        "#!lua name=x\nredis.register_function('f')",
        "#!lua name=x\nredis.register_function('f', 'g')",
        "#!lua name=x\nredis.register_function({}, function() end)",
        "#!lua name=x\nredis.register_function('a', function() end, 3)",
        "#!lua name=x\nredis.call('ping')",
        "#!lua name=x\nreturn +",
    ] {
        let reply = same(&mut r, &mut a, &["FUNCTION", "LOAD", code]);
        assert!(reply.is_error(), "{code:?}: {reply:?}");
    }
    same(
        &mut r,
        &mut a,
        &["FUNCTION", "LOAD", "bad", "#!lua name=x\n"],
    );
    same(&mut r, &mut a, &["FUNCTION", "LOAD", "REPLACE"]);
    // A library, then the same name again, then a function name taken.
    let name = same(&mut r, &mut a, &["FUNCTION", "LOAD", LIB]);
    assert_eq!(name, Value::Bulk(b"mylib".to_vec()));
    same(&mut r, &mut a, &["FUNCTION", "LOAD", LIB]);
    same(
        &mut r,
        &mut a,
        &[
            "FUNCTION",
            "LOAD",
            "#!lua name=other\nredis.register_function('SETGET', function() return 1 end)",
        ],
    );
    same(
        &mut r,
        &mut a,
        &["FUNCTION", "LOAD", "#!lua name=other\nredis.register_function('other_f', function(k, a) return #k + #a end)"],
    );
    // Calls: replies, errors, read-only rules, keys and arguments.
    for call in [
        vec!["FCALL", "setget", "1", "k", "v1"],
        vec!["FCALL", "SetGet", "1", "k", "v2"],
        vec!["FCALL_RO", "double", "0", "ab"],
        vec!["FCALL_RO", "setget", "1", "k", "v"],
        vec!["FCALL", "flagged", "0"],
        vec!["FCALL_RO", "flagged", "0"],
        vec!["FCALL", "fails", "1", "k"],
        vec!["FCALL", "missing", "0"],
        vec!["FCALL", "errtable", "0"],
        vec!["FCALL", "other_f", "2", "a", "b", "c"],
        vec!["FCALL", "nosuch", "0"],
        vec!["FCALL", "setget", "x"],
        vec!["FCALL", "setget", "-1"],
        vec!["FCALL", "setget", "5", "a"],
        vec!["FCALL", "nosuch", "x"],
        vec!["GET", "k"],
    ] {
        same(&mut r, &mut a, &call);
    }
    let other_g = "#!lua name=other\nredis.register_function('other_g', function() return 7 end)";
    for step in [
        // The list, with and without code, filtered by name.
        vec!["FUNCTION", "LIST"],
        vec!["FUNCTION", "LIST", "WITHCODE"],
        vec!["FUNCTION", "LIST", "LIBRARYNAME", "my*"],
        vec!["FUNCTION", "LIST", "libraryname", "OTH*", "withcode"],
        vec!["FUNCTION", "LIST", "LIBRARYNAME"],
        vec!["FUNCTION", "LIST", "bogus"],
        vec!["FUNCTION", "STATS"],
        vec!["FUNCTION", "KILL"],
        vec!["FUNCTION", "HELP"],
        // REPLACE swaps a library's functions for the new ones.
        vec!["FUNCTION", "LOAD", "REPLACE", other_g],
        vec!["FCALL", "other_f", "0"],
        vec!["FCALL", "other_g", "0"],
        // RESTORE and FLUSH errors; DELETE.
        vec!["FUNCTION", "RESTORE", "garbage"],
        vec!["FUNCTION", "RESTORE", "garbage", "bad"],
        vec!["FUNCTION", "RESTORE", "garbage", "FLUSH", "x"],
        vec!["FUNCTION", "FLUSH", "bad"],
        vec!["FUNCTION", "FLUSH", "a", "b"],
        vec!["FUNCTION", "DELETE", "nosuch"],
        vec!["FUNCTION", "DELETE", "other"],
        vec!["FCALL", "other_g", "0"],
        vec!["FUNCTION", "STATS"],
        vec!["FUNCTION", "FLUSH", "ASYNC"],
        vec!["FUNCTION", "LIST"],
        vec!["FCALL", "setget", "1", "k", "v"],
        // In a transaction, FCALL runs at EXEC like any command.
        vec!["FUNCTION", "LOAD", LIB],
        vec!["MULTI"],
        vec!["FCALL", "setget", "1", "t", "in-multi"],
        vec!["EXEC"],
    ] {
        same(&mut r, &mut a, &step);
    }
}

/// FUNCTION DUMP's payload is Redis's: one from redis-server restores
/// into anykv and the reverse, with the restore policies.
#[test]
fn function_dumps_move_between_redis_and_anykv() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    r.cmd(&["FUNCTION", "LOAD", LIB]).expect("load");
    let two = "#!lua name=two\nredis.register_function('two', function() return 2 end)";
    r.cmd(&["FUNCTION", "LOAD", two]).expect("load");
    let Value::Bulk(from_redis) = bytes_cmd(&mut r, &[b"FUNCTION", b"DUMP"]) else {
        panic!("FUNCTION DUMP gives a bulk string");
    };
    assert_eq!(
        bytes_cmd(&mut a, &[b"FUNCTION", b"RESTORE", &from_redis]),
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(
        a.cmd(&["FCALL", "setget", "1", "k", "moved"])
            .expect("fcall"),
        Value::Bulk(b"moved".to_vec())
    );
    // APPEND (the default) refuses a library already there; REPLACE and
    // FLUSH take it.
    // (Which of the two it names depends on Redis's hash order.)
    let collision = |v: &Value| {
        [
            &b"ERR Library mylib already exists"[..],
            b"ERR Library two already exists",
        ]
        .iter()
        .any(|m| *v == Value::Error(m.to_vec()))
    };
    let again = bytes_cmd(&mut a, &[b"FUNCTION", b"RESTORE", &from_redis]);
    let want = bytes_cmd(&mut r, &[b"FUNCTION", b"RESTORE", &from_redis]);
    assert!(
        collision(&again) && collision(&want),
        "{again:?} / {want:?}"
    );
    for policy in [&b"REPLACE"[..], b"FLUSH"] {
        assert_eq!(
            bytes_cmd(&mut a, &[b"FUNCTION", b"RESTORE", &from_redis, policy]),
            Value::Simple(b"OK".to_vec())
        );
    }
    // A damaged payload is refused as Redis refuses it.
    let mut bad = from_redis.clone();
    bad[5] ^= 0x20;
    assert_eq!(
        bytes_cmd(&mut a, &[b"FUNCTION", b"RESTORE", &bad, b"FLUSH"]),
        bytes_cmd(&mut r, &[b"FUNCTION", b"RESTORE", &bad, b"FLUSH"])
    );
    // And back: anykv's dump into a redis-server with no libraries.
    let Value::Bulk(from_anykv) = bytes_cmd(&mut a, &[b"FUNCTION", b"DUMP"]) else {
        panic!("FUNCTION DUMP gives a bulk string");
    };
    let fresh = common::start_redis(&[]);
    let mut f = fresh.connect();
    assert_eq!(
        bytes_cmd(&mut f, &[b"FUNCTION", b"RESTORE", &from_anykv]),
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(
        canonical(f.cmd(&["FUNCTION", "LIST", "WITHCODE"]).expect("list")),
        canonical(r.cmd(&["FUNCTION", "LIST", "WITHCODE"]).expect("list"))
    );
    assert_eq!(f.cmd(&["FCALL", "two", "0"]).expect("fcall"), Value::Int(2));
}

/// Libraries are data: a redis-server replicating from anykv gets them
/// and a function's effects; a restart finds them in the log, and after a
/// rewrite in the snapshot the log starts from; an anykv replica of
/// anykv, and of a redis-server, gets them in its full sync.
#[test]
fn functions_replicate_and_survive_restarts() {
    let dir = common::Scratch::new("functions");
    let d = dir.dir();
    let target = common::start_anykv_aof(&d);
    let mut a = target.connect();
    a.cmd(&["FUNCTION", "LOAD", LIB]).expect("load");
    let replica = common::start_redis(&[
        "--replicaof".into(),
        "127.0.0.1".into(),
        target.port.to_string(),
    ]);
    // Loaded after the replica's full sync: it arrives in the stream.
    let two = "#!lua name=two\nredis.register_function('two', function(k) return redis.call('INCR', k[1]) end)";
    a.cmd(&["FUNCTION", "LOAD", two]).expect("load");
    for _ in 0..3 {
        a.cmd(&["FCALL", "two", "1", "n"]).expect("fcall");
    }
    let list = canonical(a.cmd(&["FUNCTION", "LIST", "WITHCODE"]).expect("list"));
    let mut rr = replica.connect();
    common::wait_for(
        "the redis-server replica to have the libraries and the writes",
        std::time::Duration::from_secs(15),
        || {
            rr.cmd(&["GET", "n"]).ok() == Some(Value::Bulk(b"3".to_vec()))
                && rr
                    .cmd(&["FUNCTION", "LIST", "WITHCODE"])
                    .ok()
                    .map(canonical)
                    == Some(list.clone())
        },
    );
    // Another anykv, replica of this one: the libraries come in its full
    // sync.
    let (second, mut s) = anykv_replica_with(target.port, &list);
    assert_eq!(
        s.cmd(&["FCALL_RO", "double", "0", "xy"]).ok(),
        Some(Value::Bulk(b"xyxy".to_vec()))
    );
    drop(s);
    drop(second);
    // Restart from the log.
    drop(a);
    drop(target);
    let target = common::start_anykv_aof(&d);
    let mut a = target.connect();
    assert_eq!(
        a.cmd(&["FUNCTION", "LIST", "WITHCODE"]).ok().map(canonical),
        Some(list.clone()),
        "the libraries come back from the log"
    );
    assert_eq!(a.cmd(&["FCALL", "two", "1", "n"]).ok(), Some(Value::Int(4)));
    // After a rewrite the log starts from a snapshot: they are in it.
    a.cmd(&["FUNCTION", "DELETE", "two"]).expect("delete");
    let rewrites = |a: &mut RespConn| match a.cmd(&["INFO", "persistence"]) {
        Ok(Value::Bulk(b)) => String::from_utf8_lossy(&b).lines().find_map(|l| {
            l.strip_prefix("aof_rewrites:")
                .and_then(|n| n.parse::<u64>().ok())
        }),
        _ => None,
    };
    let before = rewrites(&mut a).expect("aof_rewrites");
    a.cmd(&["BGREWRITEAOF"]).expect("rewrite");
    common::wait_for(
        "the rewrite to end",
        std::time::Duration::from_secs(15),
        || rewrites(&mut a).is_some_and(|n| n > before),
    );
    let after = canonical(a.cmd(&["FUNCTION", "LIST", "WITHCODE"]).expect("list"));
    drop(a);
    drop(target);
    let target = common::start_anykv_aof(&d);
    let mut a = target.connect();
    assert_eq!(
        a.cmd(&["FUNCTION", "LIST", "WITHCODE"]).ok().map(canonical),
        Some(after),
        "the libraries come back from the rewritten log"
    );
    assert!(a
        .cmd(&["FCALL", "two", "1", "n"])
        .expect("fcall")
        .is_error());
    assert_eq!(
        a.cmd(&["FCALL", "setget", "1", "k", "kept"]).ok(),
        Some(Value::Bulk(b"kept".to_vec()))
    );
    // anykv as the replica of a redis-server with libraries.
    let mut r = replica.connect();
    r.cmd(&["REPLICAOF", "NO", "ONE"]).expect("promote");
    r.cmd(&["FUNCTION", "FLUSH"]).expect("flush");
    r.cmd(&["FUNCTION", "LOAD", two]).expect("load");
    let from_redis = canonical(r.cmd(&["FUNCTION", "LIST", "WITHCODE"]).expect("list"));
    anykv_replica_with(replica.port, &from_redis);
}

/// Starts an anykv replica of the server on `port` and waits until its
/// libraries are `list` (FUNCTION LIST WITHCODE, canonical).
fn anykv_replica_with(port: u16, list: &Value) -> (common::ServerProcess, RespConn) {
    let replica = common::start_anykv(&common::anykv_bin());
    let mut c = replica.connect();
    c.cmd(&["REPLICAOF", "127.0.0.1", &port.to_string()])
        .expect("replicaof");
    common::wait_for(
        "the anykv replica to have the libraries",
        std::time::Duration::from_secs(15),
        || {
            c.cmd(&["FUNCTION", "LIST", "WITHCODE"])
                .ok()
                .map(canonical)
                .as_ref()
                == Some(list)
        },
    );
    (replica, c)
}
