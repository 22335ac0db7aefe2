//! Scripts drawn from a seeded generator, and the scripts real
//! applications run (a Redlock release, a token-bucket rate limiter, a
//! BullMQ-style move-to-active), on redis-server 7.0 and on anykv: the
//! same replies, script by script, and the same keyspace at the end.
//!
//! The generator mixes `redis.call` of every command family,
//! `redis.pcall` errors (wrong type, arity, unknown commands), values
//! converted both ways (integers, floats, booleans, nil holes, status and
//! error tables), `redis.setresp(3)` replies (maps, sets, doubles), and
//! round trips through cjson, cmsgpack, bit and struct. A failure prints
//! the seed and the script; `SCRIPT_GEN_SEED=<n>` replays one seed.

mod common;
mod keyspace;

use common::{start_anykv, start_reference, RespConn, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A Lua string literal of `s` (no quotes or backslashes are generated).
fn lit(s: &str) -> String {
    format!("'{s}'")
}

/// One statement: appends something to the result table `r`.
fn statement(rng: &mut StdRng) -> String {
    let key = |rng: &mut StdRng, p: &str| lit(&format!("{p}{}", rng.random_range(0..6)));
    let n = |rng: &mut StdRng| rng.random_range(-50..500).to_string();
    match rng.random_range(0..26) {
        // Strings and numbers.
        0 => format!("r[#r+1] = redis.call('SET', {}, {})", key(rng, "s"), lit(&n(rng))),
        1 => format!("r[#r+1] = redis.call('GET', {})", key(rng, "s")),
        2 => format!("r[#r+1] = redis.pcall('INCRBY', {}, {})", key(rng, "s"), n(rng)),
        3 => format!("r[#r+1] = redis.pcall('INCRBYFLOAT', {}, '1.5')", key(rng, "s")),
        4 => format!("r[#r+1] = redis.call('APPEND', {}, 'xy')", key(rng, "s")),
        // Lists.
        5 => format!("r[#r+1] = redis.pcall('RPUSH', {}, {}, {})", key(rng, "l"), n(rng), n(rng)),
        6 => format!("r[#r+1] = redis.pcall('LRANGE', {}, 0, -1)", key(rng, "l")),
        7 => format!("r[#r+1] = redis.pcall('LPOP', {})", key(rng, "l")),
        // Sets (SMEMBERS sorted: its order is the server's own).
        8 => format!("r[#r+1] = redis.pcall('SADD', {}, {}, {})", key(rng, "t"), n(rng), n(rng)),
        9 => format!(
            "local m = redis.pcall('SMEMBERS', {}) if m.err == nil then table.sort(m) end r[#r+1] = m",
            key(rng, "t")
        ),
        10 => format!("r[#r+1] = redis.pcall('SISMEMBER', {}, {})", key(rng, "t"), n(rng)),
        // Hashes.
        11 => format!("r[#r+1] = redis.pcall('HSET', {}, 'f' .. {}, {})", key(rng, "h"), n(rng), n(rng)),
        12 => format!("r[#r+1] = redis.pcall('HINCRBY', {}, 'c', {})", key(rng, "h"), n(rng)),
        13 => format!("r[#r+1] = redis.pcall('HGET', {}, 'c')", key(rng, "h")),
        // Sorted sets, also through RESP3 (doubles, pairs).
        14 => format!("r[#r+1] = redis.pcall('ZADD', {}, {}, 'm' .. {})", key(rng, "z"), n(rng), n(rng)),
        15 => format!("r[#r+1] = redis.pcall('ZRANGE', {}, 0, -1, 'WITHSCORES')", key(rng, "z")),
        16 => format!(
            "redis.setresp(3) r[#r+1] = redis.pcall('ZSCORE', {}, 'm1') redis.setresp(2)",
            key(rng, "z")
        ),
        17 => format!(
            "redis.setresp(3) local h = redis.pcall('HGETALL', {}) redis.setresp(2) \
             if h.map then local ks = {{}} for k, v in pairs(h.map) do ks[#ks+1] = k .. '=' .. v end \
             table.sort(ks) r[#r+1] = ks else r[#r+1] = h end",
            key(rng, "h")
        ),
        // Keys and TTLs.
        18 => format!("r[#r+1] = redis.call('EXISTS', {}, {})", key(rng, "s"), key(rng, "l")),
        19 => format!("r[#r+1] = redis.call('EXPIRE', {}, 1000)", key(rng, "s")),
        20 => format!("r[#r+1] = redis.call('TYPE', {})", key(rng, "h")),
        // Errors: unknown command, arity.
        21 => "local e = redis.pcall('NOSUCH') r[#r+1] = e.err".to_string(),
        22 => "local e = redis.pcall('GET') r[#r+1] = e.err".to_string(),
        // Conversions of Lua values to replies.
        23 => {
            let pick = [
                "3.99",
                "-7",
                "true",
                "false",
                "{1, 2, nil, 4}",
                "{ok = 'fine'}",
                "{err = 'MYERR custom'}",
                "'text'",
            ];
            format!("r[#r+1] = {}", pick[rng.random_range(0..pick.len())])
        }
        // The libraries: round trips.
        24 => {
            let v = n(rng);
            let pick = [
                format!("cjson.encode({{a = {v}, b = {{1, 2, 3}}, c = 'x'}})"),
                format!("cjson.decode('[{v}, \"y\", {{\"k\": true}}]')[1]"),
                format!("cmsgpack.unpack(cmsgpack.pack({{{v}, 'z', 2.5}}))"),
                format!("bit.tohex(bit.bxor({v}, 0xff))"),
                format!("bit.band(bit.lshift({v}, 3), 0xfff)"),
                format!("struct.unpack('>i4', struct.pack('>i4', {v}))"),
                format!("#cmsgpack.pack({{{v}, 'z'}})"),
            ];
            format!("r[#r+1] = {}", pick[rng.random_range(0..pick.len())])
        }
        // Script errors raised on purpose (the whole reply is the error).
        _ => match rng.random_range(0..4) {
            0 => "if #r > 2 then return redis.error_reply('STOP at ' .. #r) end".to_string(),
            // WRONGTYPE raised by redis.call once a string key exists.
            1 => format!("r[#r+1] = redis.call('LPUSH', {}, 'x')", key(rng, "s")),
            2 => "if #r > 1 then error('boom ' .. #r) end".to_string(),
            _ => format!("r[#r+1] = redis.call('SCARD', {})", key(rng, "t")),
        },
    }
}

fn script(rng: &mut StdRng) -> String {
    let mut s = String::from("local r = {}\n");
    for _ in 0..rng.random_range(1..6) {
        s.push_str(&statement(rng));
        s.push('\n');
    }
    s.push_str("return r");
    s
}

fn run_on(c: &mut RespConn, body: &str) -> Value {
    c.cmd(&["EVAL", body, "0"]).expect("a reply")
}

#[test]
fn generated_scripts_match_redis() {
    let seed: u64 = std::env::var("SCRIPT_GEN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261205);
    let reference = start_reference();
    // With the append-only log on: the scripts' effects are replayed from
    // it after a restart (below).
    let dir = common::Scratch::new("script-gen");
    let target = common::start_anykv_aof(&dir.dir());
    let (mut r, mut a) = (reference.connect(), target.connect());
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut arrays, mut errors) = (0, 0);
    for i in 0..400 {
        let body = script(&mut rng);
        let (want, got) = (run_on(&mut r, &body), run_on(&mut a, &body));
        match &want {
            Value::Array(_) => arrays += 1,
            Value::Error(_) => errors += 1,
            _ => {}
        }
        // Error replies name the script by its SHA-1: the same body, the
        // same name, so they compare as they are.
        assert_eq!(
            want, got,
            "seed {seed}, script {i}:\n{body}\nredis-server: {want:?}\nanykv: {got:?}"
        );
    }
    // The mix the generator means: mostly results, some scripts failing.
    assert!(
        arrays > 250 && errors > 5,
        "{arrays} arrays, {errors} errors of 400"
    );
    eprintln!("seed {seed}: {arrays} arrays, {errors} errors of 400 scripts");
    let (ks_r, ks_a) = (keyspace::keyspace_of(&mut r), keyspace::keyspace_of(&mut a));
    assert!(
        ks_r.len() > 10,
        "the scripts wrote too little: {}",
        ks_r.len()
    );
    keyspace::compare(&ks_r, &ks_a);
    // Restarted, anykv has the same keyspace from its log (the scripts'
    // effects, never the scripts).
    drop(a);
    drop(target);
    let target = common::start_anykv_aof(&dir.dir());
    let mut a = target.connect();
    keyspace::compare(&ks_r, &keyspace::keyspace_of(&mut a));
}

/// What applications run: the same replies and keyspace.
#[test]
fn real_world_scripts_match_redis() {
    // Redlock's release: delete the lock only if it is still ours.
    let redlock = "if redis.call('get', KEYS[1]) == ARGV[1] then \
        return redis.call('del', KEYS[1]) else return 0 end";
    // A token bucket (the common rate-limiter script): the time comes as
    // an argument (ms), as clients pass it for determinism.
    let bucket = "local rate = tonumber(ARGV[1]) local cap = tonumber(ARGV[2]) \
        local now = tonumber(ARGV[3]) local want = tonumber(ARGV[4]) \
        local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts') \
        local tokens = tonumber(b[1]) or cap local ts = tonumber(b[2]) or now \
        tokens = math.min(cap, tokens + (now - ts) * rate / 1000) \
        local ok = tokens >= want if ok then tokens = tokens - want end \
        redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now) \
        redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate * 1000) * 2) \
        return { ok and 1 or 0, tostring(tokens) }";
    // BullMQ-style move-to-active: take the next job id from the wait
    // list into the active list, stamp it, return its data.
    let move_to_active = "local id = redis.call('RPOPLPUSH', KEYS[1], KEYS[2]) \
        if not id then return false end \
        local job = KEYS[3] .. id \
        redis.call('HSET', job, 'processedOn', ARGV[1], 'attemptsMade', \
            redis.call('HINCRBY', job, 'attempts', 1)) \
        redis.call('ZADD', KEYS[4], ARGV[1], id) \
        return { id, redis.call('HGET', job, 'data'), redis.call('HGET', job, 'attemptsMade') }";
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    let mut calls: Vec<Vec<String>> = Vec::new();
    let s = |x: &str| x.to_string();
    calls.push(vec![
        s("SET"),
        s("lock:a"),
        s("tok-1"),
        s("PX"),
        s("100000"),
    ]);
    calls.push(vec![s("SET"), s("lock:b"), s("tok-2")]);
    for (k, tok) in [
        ("lock:a", "tok-1"),
        ("lock:b", "nope"),
        ("lock:c", "x"),
        ("lock:a", "tok-1"),
    ] {
        calls.push(vec![s("EVAL"), s(redlock), s("1"), s(k), s(tok)]);
    }
    for (t, want) in [(1000, 3), (1100, 3), (1200, 5), (5000, 1), (5001, 9)] {
        calls.push(vec![
            s("EVAL"),
            s(bucket),
            s("1"),
            s("bucket:user1"),
            s("2"),
            s("10"),
            t.to_string(),
            want.to_string(),
        ]);
    }
    for j in 1..=3 {
        calls.push(vec![
            s("HSET"),
            format!("bull:q:{j}"),
            s("data"),
            format!("{{\"n\":{j}}}"),
        ]);
        calls.push(vec![s("LPUSH"), s("bull:q:wait"), j.to_string()]);
    }
    for t in 0..4 {
        calls.push(vec![
            s("EVAL"),
            s(move_to_active),
            s("4"),
            s("bull:q:wait"),
            s("bull:q:active"),
            s("bull:q:"),
            s("bull:q:started"),
            (1_700_000_000_000u64 + t).to_string(),
        ]);
    }
    for c in &calls {
        let args: Vec<&str> = c.iter().map(|x| x.as_str()).collect();
        let (want, got) = (r.cmd(&args).expect("reply"), a.cmd(&args).expect("reply"));
        assert_eq!(want, got, "{args:?}");
    }
    let (ks_r, ks_a) = (keyspace::keyspace_of(&mut r), keyspace::keyspace_of(&mut a));
    keyspace::compare(&ks_r, &ks_a);
}
