//! Comparing whole keyspaces: every key of every database, its value in a
//! canonical form both anykv's in-memory values and a server's replies can
//! produce, and whether it has a TTL. Shared by the RDB and replication
//! interoperability tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use crate::common::{RespConn, Value};
use anykv_server::db::Value as Val;
use rand::rngs::StdRng;
use rand::Rng;
use std::time::{Duration, Instant};

/// A whole keyspace: (db, key) → (value, has a TTL).
pub type Keyspace = BTreeMap<(u32, Vec<u8>), (Canon, bool)>;

/// A value in a form both sides can produce: strings as bytes, lists in
/// order, sets and hashes sorted, sorted sets as (member, score) in order.
#[derive(Debug, PartialEq)]
pub enum Canon {
    Str(Vec<u8>),
    List(Vec<Vec<u8>>),
    Set(Vec<Vec<u8>>),
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    ZSet(Vec<(Vec<u8>, f64)>),
    /// Entries in order: id, then fields and values.
    Stream(Vec<(String, Vec<Vec<u8>>)>),
}

pub fn canon_of(v: &Val) -> Canon {
    match v {
        Val::Str(s) => Canon::Str(s.as_bytes().to_vec()),
        Val::List(l) => Canon::List(l.items.iter().map(|x| x.to_vec()).collect()),
        Val::Set(s) => {
            let mut m: Vec<Vec<u8>> = s.iter().map(|e| e.with_bytes(|b| b.to_vec())).collect();
            m.sort();
            Canon::Set(m)
        }
        Val::Hash(h) => {
            let mut m: Vec<(Vec<u8>, Vec<u8>)> = h
                .iter()
                .map(|(f, v)| (f.with_bytes(|b| b.to_vec()), v.with_bytes(|b| b.to_vec())))
                .collect();
            m.sort();
            Canon::Hash(m)
        }
        Val::ZSet(z) => Canon::ZSet(z.iter().map(|(m, s)| (m.to_vec(), s)).collect()),
        Val::Stream(x) => {
            use anykv_server::db::stream::StreamId;
            let mut out = Vec::new();
            x.range(StreamId::MIN, StreamId::MAX, false, |id, fields| {
                let f = fields
                    .iter()
                    .map(|e| {
                        let mut b = [0u8; 20];
                        e.bytes(&mut b).to_vec()
                    })
                    .collect();
                out.push((id.to_string(), f));
                true
            });
            Canon::Stream(out)
        }
    }
}

pub fn bulks(v: Value) -> Vec<Vec<u8>> {
    match v {
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::Bulk(b) => b,
                other => panic!("expected bulk, got {other:?}"),
            })
            .collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

pub fn call(c: &mut RespConn, args: &[&str]) -> Value {
    c.cmd(args).expect("reply")
}

/// What redis-server holds under `key` (in the connection's database).
pub fn canon_from_redis(c: &mut RespConn, key: &str) -> Canon {
    let Value::Simple(ty) = call(c, &["TYPE", key]) else {
        panic!("TYPE {key}");
    };
    match &ty[..] {
        b"string" => match call(c, &["GET", key]) {
            Value::Bulk(b) => Canon::Str(b),
            other => panic!("GET {key}: {other:?}"),
        },
        b"list" => Canon::List(bulks(call(c, &["LRANGE", key, "0", "-1"]))),
        b"set" => {
            let mut m = bulks(call(c, &["SMEMBERS", key]));
            m.sort();
            Canon::Set(m)
        }
        b"hash" => {
            let flat = bulks(call(c, &["HGETALL", key]));
            let mut m: Vec<(Vec<u8>, Vec<u8>)> = flat
                .chunks(2)
                .map(|p| (p[0].clone(), p[1].clone()))
                .collect();
            m.sort();
            Canon::Hash(m)
        }
        b"zset" => {
            let flat = bulks(call(c, &["ZRANGE", key, "0", "-1", "WITHSCORES"]));
            Canon::ZSet(
                flat.chunks(2)
                    .map(|p| {
                        let s = String::from_utf8_lossy(&p[1]).to_string();
                        let f = match s.as_str() {
                            "inf" => f64::INFINITY,
                            "-inf" => f64::NEG_INFINITY,
                            x => x.parse().expect("score"),
                        };
                        (p[0].clone(), f)
                    })
                    .collect(),
            )
        }
        b"stream" => {
            let Value::Array(entries) = call(c, &["XRANGE", key, "-", "+"]) else {
                panic!("XRANGE {key}");
            };
            Canon::Stream(
                entries
                    .into_iter()
                    .map(|e| match e {
                        Value::Array(mut pair) if pair.len() == 2 => {
                            let fields = bulks(pair.pop().expect("fields"));
                            let Some(Value::Bulk(id)) = pair.pop() else {
                                panic!("XRANGE {key}: id");
                            };
                            (String::from_utf8_lossy(&id).into_owned(), fields)
                        }
                        other => panic!("XRANGE {key}: {other:?}"),
                    })
                    .collect(),
            )
        }
        other => panic!("{key}: type {}", String::from_utf8_lossy(other)),
    }
}

/// Every key of every database of a server (redis-server or anykv), with
/// its value and whether it has a TTL.
pub fn keyspace_of(c: &mut RespConn) -> Keyspace {
    let mut all = BTreeMap::new();
    for db in 0..16u32 {
        call(c, &["SELECT", &db.to_string()]);
        for k in bulks(call(c, &["KEYS", "*"])) {
            let key = String::from_utf8(k.clone()).expect("utf-8 key");
            let v = canon_from_redis(c, &key);
            let ttl = matches!(call(c, &["PTTL", &key]), Value::Int(n) if n > 0);
            all.insert((db, k), (v, ttl));
        }
    }
    call(c, &["SELECT", "0"]);
    all
}

pub fn compare(redis: &Keyspace, anykv: &Keyspace) {
    let show = |k: &(u32, Vec<u8>)| format!("{}:{}", k.0, String::from_utf8_lossy(&k.1));
    let only_first: Vec<String> = redis
        .keys()
        .filter(|k| !anykv.contains_key(*k))
        .map(show)
        .collect();
    let only_second: Vec<String> = anykv
        .keys()
        .filter(|k| !redis.contains_key(*k))
        .map(show)
        .collect();
    assert!(
        only_first.is_empty() && only_second.is_empty(),
        "different keys: only in the first {only_first:?}, only in the second {only_second:?}"
    );
    for (k, v) in redis {
        assert_eq!(
            Some(v),
            anykv.get(k),
            "db {} key {}",
            k.0,
            String::from_utf8_lossy(&k.1)
        );
    }
}

// Shared by the replication tests: INFO fields, waiting, a random write
// load over every type.

pub fn info(c: &mut RespConn, section: &str, field: &str) -> Option<String> {
    let Value::Bulk(text) = call(c, &["INFO", section]) else {
        panic!("INFO {section}");
    };
    String::from_utf8_lossy(&text).lines().find_map(|l| {
        l.strip_prefix(&format!("{field}:"))
            .map(|v| v.trim().to_string())
    })
}

pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A random write over every type (streams too), with TTLs, in one of
/// four databases.
pub fn random_write(rng: &mut StdRng) -> Vec<String> {
    let k = format!("k{}", rng.random_range(0..60));
    let v = rng.random_range(0..1000).to_string();
    let s = |x: &str| x.to_string();
    match rng.random_range(0..18) {
        0 => vec![s("SET"), k, v],
        1 => vec![
            s("SET"),
            k,
            v,
            s("PX"),
            rng.random_range(1..400).to_string(),
        ],
        2 => vec![s("INCRBY"), format!("n{}", rng.random_range(0..5)), v],
        3 => vec![s("APPEND"), format!("s{}", rng.random_range(0..5)), v],
        4 => vec![
            s("RPUSH"),
            format!("l{}", rng.random_range(0..5)),
            v.clone(),
            v,
        ],
        5 => vec![s("LPOP"), format!("l{}", rng.random_range(0..5))],
        6 => vec![s("SADD"), format!("set{}", rng.random_range(0..5)), v],
        7 => vec![s("SREM"), format!("set{}", rng.random_range(0..5)), v],
        8 => vec![
            s("HSET"),
            format!("h{}", rng.random_range(0..5)),
            format!("f{v}"),
            v,
        ],
        9 => vec![
            s("HDEL"),
            format!("h{}", rng.random_range(0..5)),
            format!("f{v}"),
        ],
        10 => vec![
            s("ZADD"),
            format!("z{}", rng.random_range(0..5)),
            v.clone(),
            format!("m{v}"),
        ],
        11 => vec![
            s("ZINCRBY"),
            format!("z{}", rng.random_range(0..5)),
            s("1.5"),
            format!("m{v}"),
        ],
        12 => vec![s("PEXPIRE"), k, rng.random_range(1..300).to_string()],
        13 => vec![s("DEL"), k],
        14 => vec![s("SPOP"), format!("set{}", rng.random_range(0..5))],
        // Streams: generated ids and approximate trims, which a primary
        // sends on as the exact ids and trims they were.
        15 => vec![
            s("XADD"),
            format!("x{}", rng.random_range(0..5)),
            s("MAXLEN"),
            s("~"),
            rng.random_range(0..30).to_string(),
            s("*"),
            s("f"),
            v,
        ],
        16 => vec![
            s("XTRIM"),
            format!("x{}", rng.random_range(0..5)),
            s("MAXLEN"),
            rng.random_range(0..10).to_string(),
        ],
        _ => vec![s("SELECT"), rng.random_range(0..4).to_string()],
    }
}

pub fn run(c: &mut RespConn, cmd: &[String]) {
    let args: Vec<&str> = cmd.iter().map(|x| x.as_str()).collect();
    let r = call(c, &args);
    // WRONGTYPE is fine (random keys of random types); nothing else is.
    if let Value::Error(e) = &r {
        assert!(
            e.starts_with(b"WRONGTYPE"),
            "{args:?}: {}",
            String::from_utf8_lossy(e)
        );
    }
}
