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
mod keyspace;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anykv_server::db::NO_EXPIRE;
use anykv_server::persist::codec::Thresholds;
use anykv_server::rdb;
use common::{start_redis, RespConn, Value};
use keyspace::{call, canon_of, compare, keyspace_of, Canon};

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
    // Streams: several nodes, entries with and without the master's
    // fields, deletions, an empty one with its last id.
    add(&["CONFIG", "SET", "stream-node-max-entries", "5"]);
    for i in 1..=23 {
        let (id, v) = (format!("{i}-1"), (i * 7).to_string());
        if i % 4 == 0 {
            add(&["XADD", "events", &id, "other", &v]);
        } else {
            add(&["XADD", "events", &id, "kind", "click", "n", &v]);
        }
    }
    add(&["XDEL", "events", "2-1", "12-1"]);
    add(&["XTRIM", "events", "MAXLEN", "20"]);
    add(&["XADD", "gone", "5-5", "a", "b"]);
    add(&["XDEL", "gone", "5-5"]);
    add(&["CONFIG", "SET", "stream-node-max-entries", "100"]);
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
    let expected = keyspace_of(&mut c);

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

    // Migrating in: `anykv server` started where that dump.rdb is serves
    // the same keyspace.
    let mig = Scratch::new("migrate");
    std::fs::copy(dir.0.join("dump.rdb"), mig.0.join("dump.rdb")).expect("copy");
    let m = mig.0.to_string_lossy().into_owned();
    let anykv = common::start_anykv_with(&common::anykv_bin(), &["--dir", &m]);
    let mut a = anykv.connect();
    compare(&expected, &keyspace_of(&mut a));
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
    w.keyspace(&t.ks).expect("keyspace");
    w.finish().expect("finish");
    let mut mine = BTreeMap::new();
    for (i, db) in t.ks.dbs.iter().enumerate() {
        for e in db.iter() {
            mine.insert(
                (i as u32, e.key.as_bytes().to_vec()),
                (canon_of(&e.value), e.expire_at != NO_EXPIRE),
            );
        }
    }
    mine
}

#[test]
fn an_rdb_written_by_anykv_loads_into_redis() {
    let dir = Scratch::new("to-redis");
    let mine = write_anykv_rdb(&dir.0.join("dump.rdb"));
    let d = dir.0.to_string_lossy().into_owned();
    let srv = start_redis(&["--dir".into(), d, "--dbfilename".into(), "dump.rdb".into()]);
    let mut c = srv.connect();
    let theirs = keyspace_of(&mut c);
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

/// Moving in and out through files, with the servers themselves: anykv
/// started where redis-server saved a `dump.rdb` loads it (its configured
/// snapshot file missing), consumer groups and functions included; with
/// `dbfilename` naming an `.rdb` file its SAVE writes an RDB file that
/// redis-server loads, and that anykv itself restarts from with the same
/// replication history; with the default name it writes its own format,
/// never under an RDB name; restarted with an RDB name over it, it loads
/// its own snapshot, not nothing.
#[test]
fn servers_move_data_both_ways_through_rdb_files() {
    let dir = Scratch::new("move");
    let d = dir.0.to_string_lossy().into_owned();
    let redis = start_redis(&[
        "--dir".into(),
        d.clone(),
        "--dbfilename".into(),
        "dump.rdb".into(),
    ]);
    let mut r = redis.connect();
    run_on_redis(&mut r, &workload());
    for cmd in [
        vec!["XGROUP", "CREATE", "events", "g", "0"],
        vec![
            "XREADGROUP",
            "GROUP",
            "g",
            "alice",
            "COUNT",
            "3",
            "STREAMS",
            "events",
            ">",
        ],
        vec!["XGROUP", "CREATECONSUMER", "events", "g", "bob"],
        vec![
            "FUNCTION",
            "LOAD",
            "#!lua name=lib\nredis.register_function('f', function() return 1 end)",
        ],
        vec!["SAVE"],
    ] {
        assert!(!call(&mut r, &cmd).is_error(), "redis-server: {cmd:?}");
    }
    let theirs = keyspace_of(&mut r);
    drop(r);
    drop(redis);

    // In: no out.rdb yet, so redis-server's dump.rdb.
    let bin = common::anykv_bin();
    let args = [
        "--dir",
        d.as_str(),
        "--dbfilename",
        "out.rdb",
        "--appendonly",
        "no",
    ];
    let anykv = common::start_anykv_with(&bin, &args);
    let mut a = anykv.connect();
    compare(&theirs, &keyspace_of(&mut a));
    assert_eq!(
        call(&mut a, &["FCALL", "f", "0"]),
        Value::Int(1),
        "the library came along"
    );
    // Out: its SAVE writes RDB under the .rdb name.
    assert!(!call(&mut a, &["SET", "added", "by-anykv"]).is_error());
    assert!(!call(
        &mut a,
        &["XREADGROUP", "GROUP", "g", "bob", "STREAMS", "events", ">"]
    )
    .is_error());
    assert_eq!(call(&mut a, &["SAVE"]), Value::Simple(b"OK".to_vec()));
    let out = std::fs::read(dir.0.join("out.rdb")).expect("out.rdb");
    assert!(out.starts_with(b"REDIS0010"), "out.rdb is not an RDB file");
    let mine = keyspace_of(&mut a);
    let id = keyspace::info(&mut a, "replication", "master_replid");
    let offset = keyspace::info(&mut a, "replication", "master_repl_offset");
    // (A clean stop: after a crash a restart continues under a new id.)
    let _ = a.cmd(&["SHUTDOWN", "NOSAVE"]);
    let mut anykv = anykv;
    keyspace::wait_for("anykv to stop", std::time::Duration::from_secs(10), || {
        anykv.exited().is_some()
    });
    drop(anykv);
    // anykv restarts from its own RDB file with the same history.
    let anykv = common::start_anykv_with(&bin, &args);
    let mut a = anykv.connect();
    compare(&mine, &keyspace_of(&mut a));
    assert_eq!(keyspace::info(&mut a, "replication", "master_replid"), id);
    assert_eq!(
        keyspace::info(&mut a, "replication", "master_repl_offset"),
        offset
    );
    drop(a);
    drop(anykv);
    // redis-server loads it.
    let redis = start_redis(&[
        "--dir".into(),
        d.clone(),
        "--dbfilename".into(),
        "out.rdb".into(),
    ]);
    let mut r = redis.connect();
    compare(&mine, &keyspace_of(&mut r));
    assert_eq!(call(&mut r, &["FCALL", "f", "0"]), Value::Int(1));
    drop(r);
    drop(redis);
    // The default name is anykv's own format.
    let plain = common::start_anykv_with(&bin, &["--dir", d.as_str(), "--appendonly", "no"]);
    let mut a = plain.connect();
    assert_eq!(
        call(&mut a, &["CONFIG", "GET", "dbfilename"]),
        Value::Array(vec![
            Value::Bulk(b"dbfilename".to_vec()),
            Value::Bulk(b"dump.akv".to_vec())
        ])
    );
    assert!(!call(&mut a, &["SET", "only-in-akv", "1"]).is_error());
    assert_eq!(call(&mut a, &["SAVE"]), Value::Simple(b"OK".to_vec()));
    let own = std::fs::read(dir.0.join("dump.akv")).expect("dump.akv");
    assert!(
        own.starts_with(b"ANYKVSNP"),
        "dump.akv is not anykv's format"
    );
    let mine = keyspace_of(&mut a);
    drop(a);
    drop(plain);
    // Switching to RDB by name: no export.rdb yet, so the newest of
    // dump.akv and (redis-server's, older) dump.rdb, not an empty start.
    let args = [
        "--dir",
        d.as_str(),
        "--dbfilename",
        "export.rdb",
        "--appendonly",
        "no",
    ];
    let switched = common::start_anykv_with(&bin, &args);
    let mut a = switched.connect();
    compare(&mine, &keyspace_of(&mut a));
    assert_eq!(call(&mut a, &["SAVE"]), Value::Simple(b"OK".to_vec()));
    let export = std::fs::read(dir.0.join("export.rdb")).expect("export.rdb");
    assert!(
        export.starts_with(b"REDIS0010"),
        "export.rdb is not an RDB file"
    );
}
