//! RDB interoperability with the real redis-server 7.0, both ways:
//!
//! - a `dump.rdb` that redis-server saved (every type in every encoding it
//!   picks: integer and LZF strings, listpack and quicklist lists, intsets,
//!   listpack and hash-table hashes, listpack and skiplist sorted sets,
//!   TTLs, several databases) is read by anykv's RDB reader, and every key
//!   matches what redis-server answers for it;
//! - an RDB that anykv's writer produced from an in-process keyspace is
//!   loaded by redis-server at start, and every key matches anykv's.
//!
//! This is what full syncs with a real Redis (REPLICAOF either way) and
//! migrations with `.rdb` files rely on.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anykv_server::db::{Value as Val, NO_EXPIRE};
use anykv_server::persist::codec::Thresholds;
use anykv_server::rdb;
use common::{start_redis, RespConn, Value};

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("anykv-rdb-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A value in a form both sides can produce: strings as bytes, lists in
/// order, sets and hashes sorted, sorted sets as (member, score) in order.
#[derive(Debug, PartialEq)]
enum Canon {
    Str(Vec<u8>),
    List(Vec<Vec<u8>>),
    Set(Vec<Vec<u8>>),
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    ZSet(Vec<(Vec<u8>, f64)>),
}

fn canon_of(v: &Val) -> Canon {
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
    }
}

fn bulks(v: Value) -> Vec<Vec<u8>> {
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

fn call(c: &mut RespConn, args: &[&str]) -> Value {
    c.cmd(args).expect("reply")
}

/// What redis-server holds under `key` (in the connection's database).
fn canon_from_redis(c: &mut RespConn, key: &str) -> Canon {
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
        other => panic!("{key}: type {}", String::from_utf8_lossy(other)),
    }
}

/// Commands that build every type in every encoding redis-server 7.0
/// picks with its default thresholds, over databases 0, 3 and 15.
fn workload() -> Vec<Vec<String>> {
    let mut c: Vec<Vec<String>> = Vec::new();
    let mut add = |v: &[&str]| c.push(v.iter().map(|s| s.to_string()).collect());
    add(&["SET", "int8", "42"]);
    add(&["SET", "int16", "-3000"]);
    add(&["SET", "int32", "123456789"]);
    add(&["SET", "int64", "-9223372036854775808"]);
    add(&["SET", "notint", "007"]);
    add(&["SET", "float", "3.25"]);
    add(&["SET", "short", "hello"]);
    add(&["SET", "compressible", &"abcabcab".repeat(200)]);
    add(&["SET", "empty", ""]);
    add(&["SET", "ttl", "v", "PX", "86400000"]);
    add(&["RPUSH", "smalllist", "a", "1", "-2", "x y"]);
    add(&["SADD", "intset", "1", "-7", "100000", "4294967296"]);
    add(&["SADD", "strset", "a", "b", "c"]);
    add(&["HSET", "smallhash", "f", "v", "n", "-5"]);
    add(&[
        "ZADD", "smallz", "1.5", "a", "-inf", "b", "inf", "c", "0", "d",
    ]);
    add(&["EXPIRE", "smallhash", "100000"]);
    add(&["SELECT", "3"]);
    add(&["SET", "db3", "three"]);
    add(&["HSET", "bighash", "long", &"v".repeat(100)]);
    add(&["SELECT", "15"]);
    add(&["SET", "db15", "fifteen"]);
    add(&["SELECT", "0"]);
    for i in 0..600 {
        let (i_s, f, m, e) = (
            i.to_string(),
            format!("f{i}"),
            format!("m{i}"),
            format!("e{i}"),
        );
        add(&["RPUSH", "biglist", &e]);
        add(&["SADD", "bigintset", &i_s]);
        add(&["SADD", "bigstrset", &m]);
        add(&["HSET", "tablehash", &f, &i_s]);
        add(&["ZADD", "skipz", &format!("{}.5", i % 97), &m]);
    }
    c
}

fn run_on_redis(c: &mut RespConn, cmds: &[Vec<String>]) {
    for cmd in cmds {
        let args: Vec<&str> = cmd.iter().map(|s| s.as_str()).collect();
        assert!(!call(c, &args).is_error(), "redis-server: {args:?}");
    }
}

/// Every key of every database of redis-server, with its value and
/// whether it has a TTL.
fn redis_keyspace(c: &mut RespConn) -> BTreeMap<(u32, Vec<u8>), (Canon, bool)> {
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

fn compare(
    redis: &BTreeMap<(u32, Vec<u8>), (Canon, bool)>,
    anykv: &BTreeMap<(u32, Vec<u8>), (Canon, bool)>,
) {
    let rk: Vec<_> = redis.keys().collect();
    let ak: Vec<_> = anykv.keys().collect();
    assert_eq!(rk, ak, "different keys");
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

#[test]
fn an_rdb_saved_by_redis_loads_into_anykv() {
    let dir = Scratch::new("from-redis");
    let d = dir.0.to_string_lossy().into_owned();
    let srv = start_redis(&["--dir".into(), d, "--dbfilename".into(), "dump.rdb".into()]);
    let mut c = srv.connect();
    run_on_redis(&mut c, &workload());
    // The encodings the workload is meant to produce, so the reader really
    // meets each of them.
    for (key, enc) in [
        ("int8", "int"),
        ("compressible", "raw"),
        ("smalllist", "quicklist"),
        ("intset", "intset"),
        ("strset", "hashtable"),
        ("smallhash", "listpack"),
        ("smallz", "listpack"),
        ("biglist", "quicklist"),
        ("bigintset", "hashtable"),
        ("tablehash", "hashtable"),
        ("skipz", "skiplist"),
    ] {
        assert_eq!(
            call(&mut c, &["OBJECT", "ENCODING", key]),
            Value::Bulk(enc.as_bytes().to_vec()),
            "{key}"
        );
    }
    assert_eq!(call(&mut c, &["SAVE"]), Value::Simple(b"OK".to_vec()));
    let expected = redis_keyspace(&mut c);

    assert!(
        expected.len() >= 20,
        "the workload made {} keys",
        expected.len()
    );
    // redis-server compressed the long repetitive string (LZF): it does not
    // appear verbatim in the file, so the reader's LZF path ran.
    let raw = std::fs::read(dir.0.join("dump.rdb")).expect("dump.rdb");
    let plain = "abcabcab".repeat(200);
    assert!(
        !raw.windows(plain.len()).any(|w| w == plain.as_bytes()),
        "not compressed"
    );
    let file = std::fs::File::open(dir.0.join("dump.rdb")).expect("dump.rdb");
    let mut got = BTreeMap::new();
    let info = rdb::read(file, &Thresholds::default(), 16, |r| {
        got.insert(
            (r.db, r.key.as_bytes().to_vec()),
            (canon_of(&r.value), r.expire_at != NO_EXPIRE),
        );
        Ok(())
    })
    .expect("anykv reads redis-server's RDB");
    assert_eq!(info.version, 10);
    assert!(
        info.aux("redis-ver").is_some_and(|v| v.starts_with("7.")),
        "{:?}",
        info.aux
    );
    compare(&expected, &got);
}

/// Builds the workload's keyspace in-process and writes it with anykv's
/// RDB writer to `path`.
fn write_anykv_rdb(path: &Path) -> BTreeMap<(u32, Vec<u8>), (Canon, bool)> {
    use anykv_server::client::{ClientInfo, Session};
    use anykv_server::config::Config;
    use anykv_server::shared::Shared;
    use anykv_server::tenant::{Tenant, TenantId};
    let shared = Shared::new(Config::default(), 1);
    let set = shared.settings();
    let mut t = Tenant::new(TenantId::DEFAULT, "t", 16);
    let a = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
    let mut s = Session::new(std::rc::Rc::new(ClientInfo::new(1, a, a, -1, 0)), true);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    for cmd in workload() {
        let args: Vec<&[u8]> = cmd.iter().map(|x| x.as_bytes()).collect();
        let mut out = anykv_server::resp::Reply::new(2);
        anykv_server::dispatch::dispatch(&mut t, &mut s, &shared, &set, &args, &mut out, now);
        assert_ne!(out.buf.first(), Some(&b'-'), "anykv: {cmd:?}");
    }
    let f = std::fs::File::create(path).expect("create rdb");
    let mut w = rdb::RdbWriter::new(std::io::BufWriter::new(f), &[("redis-ver", "7.0.15")])
        .expect("rdb header");
    let mut mine = BTreeMap::new();
    for (i, db) in t.ks.dbs.iter().enumerate() {
        if db.len() == 0 {
            continue;
        }
        w.select_db(i as u32, db.len() as u64, db.volatile_len() as u64)
            .expect("select");
        for e in db.iter() {
            w.entry(e.key.as_bytes(), &e.value, e.expire_at)
                .expect("entry");
            mine.insert(
                (i as u32, e.key.as_bytes().to_vec()),
                (canon_of(&e.value), e.expire_at != NO_EXPIRE),
            );
        }
    }
    w.finish().expect("finish");
    mine
}

#[test]
fn an_rdb_written_by_anykv_loads_into_redis() {
    let dir = Scratch::new("to-redis");
    let mine = write_anykv_rdb(&dir.0.join("dump.rdb"));
    let d = dir.0.to_string_lossy().into_owned();
    let srv = start_redis(&["--dir".into(), d, "--dbfilename".into(), "dump.rdb".into()]);
    let mut c = srv.connect();
    let theirs = redis_keyspace(&mut c);
    compare(&mine, &theirs);
    // Redis rebuilt compact encodings from the generic types.
    for (key, enc) in [
        ("smallhash", "listpack"),
        ("smallz", "listpack"),
        ("intset", "intset"),
        ("skipz", "skiplist"),
        ("int8", "int"),
    ] {
        assert_eq!(
            call(&mut c, &["OBJECT", "ENCODING", key]),
            Value::Bulk(enc.as_bytes().to_vec()),
            "{key}"
        );
    }
    drop(srv);
}
