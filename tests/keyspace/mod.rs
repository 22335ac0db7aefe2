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
    /// Entries in order: id, then fields and values; consumer groups.
    Stream(Vec<(String, Vec<Vec<u8>>)>, Vec<Group>),
}

/// A consumer group as both sides can show it: name, last delivered id,
/// entries read (None: unknown), pending entries (id, owner, delivery
/// time, delivery count) and consumers (name, ids owned). Consumers'
/// seen times are left out: a replica or a restart sees them at its own
/// time, in Redis too.
#[derive(Debug, PartialEq)]
pub struct Group {
    pub name: Vec<u8>,
    pub last_id: String,
    pub entries_read: Option<i64>,
    pub pel: Vec<(String, Vec<u8>, i64, i64)>,
    pub consumers: Vec<(Vec<u8>, Vec<String>)>,
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
            let groups = x
                .groups
                .iter()
                .map(|(name, g)| Group {
                    name: name.clone(),
                    last_id: g.last_id.to_string(),
                    entries_read: (g.entries_read != -1).then_some(g.entries_read),
                    pel: g
                        .pel
                        .iter()
                        .map(|(id, n)| {
                            (
                                id.to_string(),
                                n.consumer.to_vec(),
                                n.delivery_time,
                                n.delivery_count as i64,
                            )
                        })
                        .collect(),
                    consumers: g
                        .consumers
                        .iter()
                        .map(|(n, c)| (n.to_vec(), c.pel.iter().map(|i| i.to_string()).collect()))
                        .collect(),
                })
                .collect();
            Canon::Stream(out, groups)
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
            let groups = groups_from_redis(c, key);
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
                groups,
            )
        }
        other => panic!("{key}: type {}", String::from_utf8_lossy(other)),
    }
}

/// A flat RESP2 map's value under `name`.
fn field<'v>(map: &'v [Value], name: &str) -> &'v Value {
    map.chunks(2)
        .find(|kv| kv[0] == Value::Bulk(name.as_bytes().to_vec()))
        .map(|kv| &kv[1])
        .unwrap_or_else(|| panic!("no field {name} in {map:?}"))
}

fn text(v: &Value) -> String {
    match v {
        Value::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("expected bulk, got {other:?}"),
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        other => panic!("expected an integer, got {other:?}"),
    }
}

fn list(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        other => panic!("expected an array, got {other:?}"),
    }
}

/// A stream's groups as XINFO STREAM FULL shows them.
pub fn groups_from_redis(c: &mut RespConn, key: &str) -> Vec<Group> {
    let Value::Array(info) = call(c, &["XINFO", "STREAM", key, "FULL", "COUNT", "0"]) else {
        panic!("XINFO STREAM {key} FULL");
    };
    list(field(&info, "groups"))
        .iter()
        .map(|g| {
            let g = list(g);
            Group {
                name: text(field(g, "name")).into_bytes(),
                last_id: text(field(g, "last-delivered-id")),
                entries_read: match field(g, "entries-read") {
                    Value::Nil => None,
                    v => Some(int(v)),
                },
                pel: list(field(g, "pending"))
                    .iter()
                    .map(|p| {
                        let p = list(p);
                        (
                            text(&p[0]),
                            text(&p[1]).into_bytes(),
                            int(&p[2]),
                            int(&p[3]),
                        )
                    })
                    .collect(),
                consumers: list(field(g, "consumers"))
                    .iter()
                    .map(|cm| {
                        let cm = list(cm);
                        let owned = list(field(cm, "pending"))
                            .iter()
                            .map(|p| text(&list(p)[0]))
                            .collect();
                        (text(field(cm, "name")).into_bytes(), owned)
                    })
                    .collect(),
            }
        })
        .collect()
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

/// Clears every group's entries read. For comparing a replica of
/// redis-server with it: Redis 7.0 logs a group's read counter only for
/// NOACK reads (an acknowledged read sends the last id alone, in its
/// XCLAIM), so its replicas, redis-server's as anykv's, count on from
/// what they last heard and may differ from it.
pub fn forget_entries_read(ks: &mut Keyspace) {
    for (v, _) in ks.values_mut() {
        if let Canon::Stream(_, groups) = v {
            for g in groups {
                g.entries_read = None;
            }
        }
    }
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
    match rng.random_range(0..26) {
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
        // Consumer groups: reads and claims, which a primary sends on as
        // the XCLAIM and XGROUP SETID effects they had.
        17 => vec![
            s("XGROUP"),
            s("CREATE"),
            format!("x{}", rng.random_range(0..5)),
            format!("g{}", rng.random_range(0..2)),
            s(if rng.random_range(0..2) == 0 {
                "0"
            } else {
                "$"
            }),
            s("MKSTREAM"),
        ],
        18 => {
            let mut c = vec![
                s("XREADGROUP"),
                s("GROUP"),
                format!("g{}", rng.random_range(0..2)),
                format!("c{}", rng.random_range(0..3)),
                s("COUNT"),
                rng.random_range(1..4).to_string(),
            ];
            if rng.random_range(0..4) == 0 {
                c.push(s("NOACK"));
            }
            c.extend([s("STREAMS"), format!("x{}", rng.random_range(0..5)), s(">")]);
            c
        }
        19 => vec![
            s("XAUTOCLAIM"),
            format!("x{}", rng.random_range(0..5)),
            format!("g{}", rng.random_range(0..2)),
            format!("c{}", rng.random_range(0..3)),
            s("0"),
            s("0"),
            s("COUNT"),
            rng.random_range(1..3).to_string(),
        ],
        20 => vec![
            s("XGROUP"),
            s("DELCONSUMER"),
            format!("x{}", rng.random_range(0..5)),
            format!("g{}", rng.random_range(0..2)),
            format!("c{}", rng.random_range(0..3)),
        ],
        // Bitmaps, HyperLogLog (sparse, and dense once big) and geo.
        21 => vec![
            s("SETBIT"),
            format!("b{}", rng.random_range(0..5)),
            rng.random_range(0..300).to_string(),
            rng.random_range(0..2).to_string(),
        ],
        22 => vec![
            s("BITFIELD"),
            format!("b{}", rng.random_range(0..5)),
            s("OVERFLOW"),
            s("SAT"),
            s("INCRBY"),
            s("i8"),
            format!("#{}", rng.random_range(0..4)),
            (rng.random_range(0..200) - 100).to_string(),
        ],
        23 => {
            let base = rng.random_range(0..100_000);
            let n = if rng.random_range(0..20) == 0 { 400 } else { 3 };
            let mut c = vec![s("PFADD"), format!("hll{}", rng.random_range(0..5))];
            c.extend((base..base + n).map(|i| format!("e{i}")));
            c
        }
        24 => vec![
            s("GEOADD"),
            format!("geo{}", rng.random_range(0..3)),
            format!("{:.5}", rng.random_range(-179.0..179.0f64)),
            format!("{:.5}", rng.random_range(-84.0..84.0f64)),
            format!("m{v}"),
        ],
        _ => vec![s("SELECT"), rng.random_range(0..4).to_string()],
    }
}

pub fn run(c: &mut RespConn, cmd: &[String]) {
    let args: Vec<&str> = cmd.iter().map(|x| x.as_str()).collect();
    let r = call(c, &args);
    // WRONGTYPE is fine (random keys of random types), and so are a
    // group that exists or does not; nothing else is.
    if let Value::Error(e) = &r {
        assert!(
            e.starts_with(b"WRONGTYPE")
                || e.starts_with(b"BUSYGROUP")
                || e.starts_with(b"NOGROUP")
                || e.starts_with(b"ERR The XGROUP subcommand requires the key to exist"),
            "{args:?}: {}",
            String::from_utf8_lossy(e)
        );
    }
}
