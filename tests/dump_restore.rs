//! DUMP and RESTORE between redis-server 7.0 and anykv: a value of every
//! type, in every encoding Redis picks for it, dumped by one restores into
//! the other with the same contents; RESTORE's options and errors are
//! Redis's.

mod common;

use common::{same, start_anykv, start_reference, Conn, RespConn, Value};

fn call(c: &mut RespConn, args: &[&[u8]]) -> Value {
    let args: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
    c.call(&args).expect("reply")
}

/// A value's contents, whatever its encoding, in a form that compares
/// (sets and hashes sorted).
fn contents(c: &mut RespConn, key: &str) -> Value {
    let Value::Simple(t) = c.cmd(&["TYPE", key]).expect("TYPE") else {
        panic!("TYPE {key}");
    };
    let sorted = |v: Value| match v {
        Value::Array(mut items) => {
            items.sort_by_key(|i| format!("{i:?}"));
            Value::Array(items)
        }
        other => other,
    };
    let body = match t.as_slice() {
        b"string" => c.cmd(&["GET", key]),
        b"list" => c.cmd(&["LRANGE", key, "0", "-1"]),
        b"set" => c.cmd(&["SMEMBERS", key]).map(sorted),
        b"zset" => c.cmd(&["ZRANGE", key, "0", "-1", "WITHSCORES"]),
        b"hash" => c.cmd(&["HGETALL", key]).map(|v| match v {
            // (Pairs sorted as pairs.)
            Value::Array(items) => {
                let mut pairs: Vec<Vec<Value>> = items.chunks(2).map(|p| p.to_vec()).collect();
                pairs.sort_by_key(|p| format!("{p:?}"));
                Value::Array(pairs.into_iter().flatten().collect())
            }
            other => other,
        }),
        b"stream" => c.cmd(&["XRANGE", key, "-", "+"]),
        other => panic!("type {}", String::from_utf8_lossy(other)),
    }
    .expect("contents");
    Value::Array(vec![Value::Simple(t), body])
}

/// Keys of every type in the encodings Redis 7.0 gives them.
fn populate(c: &mut RespConn) -> Vec<String> {
    let big = "x".repeat(100);
    let mut keys = Vec::new();
    let mut run = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = c.cmd(&a).expect("populate");
        assert!(!r.is_error(), "{a:?}: {r:?}");
    };
    run(vec!["SET".into(), "s:int".into(), "12345".into()]);
    run(vec!["SET".into(), "s:neg".into(), "-70000".into()]);
    run(vec!["SET".into(), "s:short".into(), "hello".into()]);
    run(vec!["SET".into(), "s:long".into(), big.repeat(50)]);
    run(vec!["SET".into(), "s:bin".into(), "\u{0}\u{1}\r\n".into()]);
    run(vec![
        "RPUSH".into(),
        "l:small".into(),
        "a".into(),
        "1".into(),
        big.clone(),
    ]);
    let mut l = vec!["RPUSH".to_string(), "l:big".into()];
    l.extend((0..300).map(|i| format!("item-{i}-{big}")));
    run(l);
    run(vec![
        "SADD".into(),
        "set:int".into(),
        "1".into(),
        "2".into(),
        "-3".into(),
    ]);
    run(vec![
        "SADD".into(),
        "set:str".into(),
        "a".into(),
        "b".into(),
    ]);
    let mut s = vec!["SADD".to_string(), "set:big".into()];
    s.extend((0..600).map(|i| i.to_string()));
    run(s);
    run(vec![
        "ZADD".into(),
        "z:small".into(),
        "1.5".into(),
        "a".into(),
        "-2".into(),
        "b".into(),
    ]);
    let mut z = vec!["ZADD".to_string(), "z:big".into()];
    for i in 0..200 {
        z.push(format!("{}.25", i));
        z.push(format!("m{i}"));
    }
    run(z);
    run(vec![
        "ZADD".into(),
        "z:inf".into(),
        "inf".into(),
        "top".into(),
        "-inf".into(),
        "bottom".into(),
    ]);
    run(vec![
        "HSET".into(),
        "h:small".into(),
        "f".into(),
        "v".into(),
        "n".into(),
        "7".into(),
    ]);
    let mut h = vec!["HSET".to_string(), "h:big".into()];
    for i in 0..200 {
        h.push(format!("f{i}"));
        h.push(format!("{i}-{big}"));
    }
    run(h);
    // A stream over several nodes (big values start new ones), with
    // entries of other fields and a deleted one.
    for i in 1..=150 {
        let mut x = vec!["XADD".to_string(), "x:big".into(), format!("{i}-0")];
        if i % 9 == 0 {
            x.extend(["other".into(), big.clone()]);
        } else {
            x.extend(["n".into(), i.to_string(), "tag".into(), "t".into()]);
        }
        run(x);
    }
    run(vec!["XDEL".into(), "x:big".into(), "20-0".into()]);
    keys.extend(
        [
            "s:int", "s:neg", "s:short", "s:long", "s:bin", "l:small", "l:big", "set:int",
            "set:str", "set:big", "z:small", "z:big", "z:inf", "h:small", "h:big", "x:big",
        ]
        .map(String::from),
    );
    keys
}

#[test]
fn dumps_restore_across_redis_and_anykv_for_every_type() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    let keys = populate(&mut r);
    for key in &keys {
        let Value::Bulk(payload) = call(&mut r, &[b"DUMP", key.as_bytes()]) else {
            panic!("DUMP {key} on redis-server");
        };
        assert_eq!(
            call(&mut a, &[b"RESTORE", key.as_bytes(), b"0", &payload]),
            Value::Simple(b"OK".to_vec()),
            "RESTORE {key} from redis-server's dump"
        );
        assert_eq!(contents(&mut a, key), contents(&mut r, key), "{key}");
        // And back: anykv's dump into redis-server under another name.
        let Value::Bulk(back) = call(&mut a, &[b"DUMP", key.as_bytes()]) else {
            panic!("DUMP {key} on anykv");
        };
        let copy = format!("{key}:back");
        assert_eq!(
            call(&mut r, &[b"RESTORE", copy.as_bytes(), b"0", &back]),
            Value::Simple(b"OK".to_vec()),
            "redis-server restores anykv's dump of {key}"
        );
        let (Value::Array(x), Value::Array(y)) = (contents(&mut r, &copy), contents(&mut r, key))
        else {
            panic!("contents");
        };
        assert_eq!(x, y, "{key} after the round trip");
    }
    assert_eq!(call(&mut a, &[b"DUMP", b"nokey"]), Value::Nil);
}

#[test]
fn restore_options_and_errors_as_redis() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    same(&mut r, &mut a, &["SET", "src", "value"]);
    let Value::Bulk(payload) = call(&mut r, &[b"DUMP", b"src"]) else {
        panic!("DUMP");
    };
    let p = payload.as_slice();
    let both = |r: &mut RespConn, a: &mut RespConn, args: &[&[u8]]| {
        let want = call(r, args);
        let got = call(a, args);
        assert_eq!(
            got,
            want,
            "{:?}",
            args.iter()
                .map(|x| String::from_utf8_lossy(x))
                .collect::<Vec<_>>()
        );
        got
    };
    both(&mut r, &mut a, &[b"RESTORE", b"k", b"0", p]);
    both(&mut r, &mut a, &[b"RESTORE", b"k", b"0", p]);
    both(&mut r, &mut a, &[b"RESTORE", b"k", b"0", p, b"REPLACE"]);
    both(&mut r, &mut a, &[b"GET", b"k"]);
    both(&mut r, &mut a, &[b"RESTORE", b"t", b"100000", p]);
    assert!(matches!(call(&mut a, &[b"PTTL", b"t"]), Value::Int(n) if n > 90_000 && n <= 100_000));
    both(
        &mut r,
        &mut a,
        &[b"RESTORE", b"abs", b"4102444800000", p, b"ABSTTL"],
    );
    both(&mut r, &mut a, &[b"PEXPIRETIME", b"abs"]);
    // Already expired: not created, and what it replaced is gone.
    both(
        &mut r,
        &mut a,
        &[b"RESTORE", b"k", b"1", p, b"REPLACE", b"ABSTTL"],
    );
    both(&mut r, &mut a, &[b"EXISTS", b"k"]);
    both(
        &mut r,
        &mut a,
        &[b"RESTORE", b"i", b"0", p, b"IDLETIME", b"1000"],
    );
    assert!(
        matches!(call(&mut a, &[b"OBJECT", b"IDLETIME", b"i"]), Value::Int(n) if (1000..1010).contains(&n))
    );
    assert!(
        matches!(call(&mut r, &[b"OBJECT", b"IDLETIME", b"i"]), Value::Int(n) if (1000..1010).contains(&n)),
        "redis-server's idle time too"
    );
    // FREQ sets the LFU counter (under an LFU policy; OBJECT FREQ refuses
    // otherwise, as Redis does), and a FREQ under LRU is taken and
    // ignored; IDLETIME under LFU likewise.
    let restored_freq = |r: &mut RespConn, a: &mut RespConn, key: &[u8], opt: &[u8], n: &[u8]| {
        both(r, a, &[b"RESTORE", key, b"0", p, opt, n]);
        both(r, a, &[b"OBJECT", b"FREQ", key])
    };
    restored_freq(&mut r, &mut a, b"f0", b"FREQ", b"100");
    for c in [&mut r, &mut a] {
        call(c, &[b"CONFIG", b"SET", b"maxmemory-policy", b"allkeys-lfu"]);
    }
    assert_eq!(
        restored_freq(&mut r, &mut a, b"f", b"FREQ", b"100"),
        Value::Int(100)
    );
    restored_freq(&mut r, &mut a, b"f2", b"FREQ", b"0");
    restored_freq(&mut r, &mut a, b"i2", b"IDLETIME", b"50");
    for c in [&mut r, &mut a] {
        call(c, &[b"CONFIG", b"SET", b"maxmemory-policy", b"noeviction"]);
    }
    for bad in [
        &[&b"RESTORE"[..], b"e", b"-1", p][..],
        &[b"RESTORE", b"e", b"x", p],
        &[b"RESTORE", b"e", b"0", b"garbage"],
        &[b"RESTORE", b"e", b"0", p, b"BOGUS"],
        &[b"RESTORE", b"e", b"0", p, b"IDLETIME", b"-1"],
        &[b"RESTORE", b"e", b"0", p, b"IDLETIME", b"x"],
        &[b"RESTORE", b"e", b"0", p, b"FREQ", b"256"],
        &[b"RESTORE", b"e", b"0", p, b"FREQ", b"1", b"IDLETIME", b"1"],
        &[b"RESTORE", b"e", b"0", p, b"IDLETIME"],
        &[b"RESTORE", b"src", b"-1", b"garbage"],
    ] {
        assert!(both(&mut r, &mut a, bad).is_error());
    }
    // A damaged payload, and a body that is not one value.
    let mut damaged = payload.clone();
    damaged[1] ^= 1;
    both(&mut r, &mut a, &[b"RESTORE", b"e", b"0", &damaged]);
    let Value::Bulk(two) = call(&mut r, &[b"FUNCTION", b"DUMP"]) else {
        panic!("FUNCTION DUMP");
    };
    both(&mut r, &mut a, &[b"RESTORE", b"e", b"0", &two]);
}

/// RESTORE is logged with its TTL made absolute: a restart from the log
/// has the value and the same expiry time.
#[test]
fn a_restore_survives_a_restart() {
    let dir = common::Scratch::new("dump-restore");
    let d = dir.dir();
    let target = common::start_anykv_aof(&d);
    let mut a = target.connect();
    a.cmd(&["RPUSH", "src", "a", "b", "c"]).expect("rpush");
    let Value::Bulk(payload) = call(&mut a, &[b"DUMP", b"src"]) else {
        panic!("DUMP");
    };
    assert_eq!(
        call(&mut a, &[b"RESTORE", b"copy", b"100000", &payload]),
        Value::Simple(b"OK".to_vec())
    );
    let Value::Int(at) = a.cmd(&["PEXPIRETIME", "copy"]).expect("pexpiretime") else {
        panic!("PEXPIRETIME");
    };
    drop(a);
    drop(target);
    let again = common::start_anykv_aof(&d);
    let mut a = again.connect();
    assert_eq!(
        a.cmd(&["LRANGE", "copy", "0", "-1"]).expect("lrange"),
        Value::Array(vec![
            Value::Bulk(b"a".to_vec()),
            Value::Bulk(b"b".to_vec()),
            Value::Bulk(b"c".to_vec())
        ])
    );
    assert_eq!(a.cmd(&["PEXPIRETIME", "copy"]).ok(), Some(Value::Int(at)));
}

/// MIGRATE from anykv and from redis-server, to redis-server targets, give
/// the same replies and leave the same keys on both sides (every type,
/// TTLs kept, KEYS/COPY/REPLACE/AUTH/AUTH2, NOKEY, the target's BUSYKEY,
/// a target that is not there, bad arguments); keys moved from anykv reach
/// its replica as DELs; anykv takes MIGRATE from redis-server as a target.
#[test]
fn migrate_as_redis_both_ways() {
    let src_r = start_reference();
    let src_a = start_anykv(&common::anykv_bin());
    let dst_r = common::start_redis(&["--requirepass".to_string(), "dst-pw".to_string()]);
    let dst_a = common::start_redis(&["--requirepass".to_string(), "dst-pw".to_string()]);
    let replica = start_anykv(&common::anykv_bin());
    let (mut sr, mut sa) = (src_r.connect(), src_a.connect());
    let (mut dr, mut da) = (dst_r.connect(), dst_a.connect());
    for d in [&mut dr, &mut da] {
        assert_eq!(
            d.cmd(&["AUTH", "dst-pw"]).expect("auth"),
            Value::Simple(b"OK".to_vec())
        );
        d.cmd(&["ACL", "SETUSER", "mover", "on", ">mover-pw", "+@all", "~*"])
            .expect("setuser");
    }
    let mut rep = replica.connect();
    let src_port = src_a.port.to_string();
    rep.cmd(&["REPLICAOF", "127.0.0.1", &src_port])
        .expect("replicaof");
    let keys = populate(&mut sr);
    populate(&mut sa);
    for c in [&mut sr, &mut sa] {
        c.cmd(&["SET", "ttl", "v", "PX", "100000"]).expect("set");
        c.cmd(&["SET", "busy", "here"]).expect("set");
    }
    for d in [&mut dr, &mut da] {
        d.cmd(&["SET", "busy", "there"]).expect("set");
    }
    let closed = common::free_port().to_string();
    let (pr, pa) = (dst_r.port.to_string(), dst_a.port.to_string());
    // One step: the same MIGRATE from each source to its own target ($P;
    // $C: a port nothing listens on; '' an empty argument).
    let mut lines: Vec<String> = [
        "$P s:int 0 5000 AUTH dst-pw",
        "$P nokey 0 5000 AUTH dst-pw",
        "$P ttl 3 5000 COPY AUTH2 mover mover-pw",
        "$P busy 0 5000 AUTH dst-pw",
        "$P busy 0 5000 REPLACE COPY AUTH dst-pw",
        "$P s:short 0 5000 AUTH wrong",
        "$P s:short 0 5000",
        "$P x 0 5000 KEYS a",
        "$P x 0 5000 BOGUS",
        "$P x 0 5000 AUTH",
        "$P x zero 5000",
        "$P x 0 soon",
        "$C s:short 0 500",
        "$C nokey 0 500",
    ]
    .map(String::from)
    .to_vec();
    let moved: Vec<&str> = keys
        .iter()
        .map(String::as_str)
        .filter(|k| *k != "s:int")
        .collect();
    lines.push(format!(
        "$P '' 0 5000 AUTH dst-pw KEYS {} nokey",
        moved.join(" ")
    ));
    let steps: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            let mut v = vec!["MIGRATE".to_string(), "127.0.0.1".to_string()];
            v.extend(l.split(' ').map(|a| {
                if a == "''" {
                    String::new()
                } else {
                    a.to_string()
                }
            }));
            v
        })
        .collect();
    for step in &steps {
        let with = |port: &str| -> Vec<String> {
            step.iter()
                .map(|a| a.replace("$P", port).replace("$C", &closed))
                .collect()
        };
        let (ar, aa) = (with(&pr), with(&pa));
        let rr = sr
            .cmd(&ar.iter().map(String::as_str).collect::<Vec<_>>())
            .expect("redis");
        let ra = sa
            .cmd(&aa.iter().map(String::as_str).collect::<Vec<_>>())
            .expect("anykv");
        assert_eq!(ra, rr, "{step:?}");
    }
    // The same keys left and arrived, with their contents and TTLs.
    let listing = |c: &mut RespConn, db: &str| -> Vec<(String, Value, bool)> {
        c.cmd(&["SELECT", db]).expect("select");
        let Value::Array(ks) = c.cmd(&["KEYS", "*"]).expect("keys") else {
            panic!("KEYS");
        };
        let mut out: Vec<(String, Value, bool)> = ks
            .into_iter()
            .map(|k| {
                let Value::Bulk(k) = k else { panic!("key") };
                let k = String::from_utf8_lossy(&k).into_owned();
                let ttl = c.cmd(&["PTTL", &k]).expect("pttl").as_int().unwrap_or(-2);
                (k.clone(), contents(c, &k), ttl > 0)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    };
    // (Compared whole; on a difference, the key names say where.)
    for db in ["0", "3"] {
        for (what, x, y) in [("sources", &mut sa, &mut sr), ("targets", &mut da, &mut dr)] {
            let (lx, ly) = (listing(x, db), listing(y, db));
            if lx != ly {
                let names = |l: &[(String, Value, bool)]| -> Vec<String> {
                    l.iter()
                        .map(|(k, _, t)| format!("{k}{}", if *t { "(ttl)" } else { "" }))
                        .collect()
                };
                panic!(
                    "{what}, db {db}: anykv's side {:?}, redis's {:?}",
                    names(&lx),
                    names(&ly)
                );
            }
        }
    }
    sa.cmd(&["SELECT", "0"]).expect("select");
    assert!(!listing(&mut da, "0").is_empty() && listing(&mut da, "3").len() == 1);
    // Moved keys left the source's replica too (logged as DEL).
    assert_eq!(
        sa.cmd(&["WAIT", "1", "5000"]).expect("wait"),
        Value::Int(1),
        "the replica caught up"
    );
    assert_eq!(
        rep.cmd(&["EXISTS", "s:int", "s:neg", "x:big"])
            .expect("exists"),
        Value::Int(0)
    );
    let names = |c: &mut RespConn| {
        let Value::Array(mut v) = c.cmd(&["KEYS", "*"]).expect("keys") else {
            panic!("KEYS")
        };
        v.sort();
        v
    };
    assert_eq!(
        names(&mut rep),
        names(&mut sa),
        "the replica has the source's keys"
    );
    // anykv as the target of redis-server's MIGRATE.
    sr.cmd(&["SET", "to-anykv", "v"]).expect("set");
    let ap = src_a.port.to_string();
    assert_eq!(
        sr.cmd(&["MIGRATE", "127.0.0.1", &ap, "to-anykv", "5", "5000"])
            .expect("migrate"),
        Value::Simple(b"OK".to_vec())
    );
    sa.cmd(&["SELECT", "5"]).expect("select");
    assert_eq!(
        sa.cmd(&["GET", "to-anykv"]).expect("get"),
        Value::Bulk(b"v".to_vec())
    );
    // Each source keeps its connection to its target between MIGRATEs,
    // and closes it once unused for 10 s, as Redis's cron does.
    let clients = |c: &mut common::RespConn| -> String {
        common::info_field(c, "clients", "connected_clients")
    };
    assert_eq!(
        (clients(&mut dr).as_str(), clients(&mut da).as_str()),
        ("2", "2"),
        "the test's and the source's connection on each target"
    );
    common::wait_for(
        "the sources' idle connections to their targets closed",
        std::time::Duration::from_secs(25),
        || clients(&mut dr) == "1" && clients(&mut da) == "1",
    );
}
