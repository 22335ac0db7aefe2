//! Lua scripts against the reference redis-server 7.0: the same requests
//! to both, the same replies (the script cache, EVAL/EVALSHA and their
//! read-only forms, the redis API, read-only globals); and what anykv
//! adds: endless replies refused, effects replicated and persisted. Long
//! scripts (-BUSY, SCRIPT KILL) are in tests/script_busy.rs.

mod common;

use common::{same, start_anykv, start_reference, RespConn, Value};

#[test]
fn the_script_cache_answers_as_redis_does() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    let sha = same(&mut r, &mut a, &["SCRIPT", "LOAD", "return 1"]);
    assert_eq!(
        sha,
        Value::Bulk(b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db".to_vec())
    );
    // Loading again answers the same name; another body another one.
    same(&mut r, &mut a, &["SCRIPT", "LOAD", "return 1"]);
    same(
        &mut r,
        &mut a,
        &["SCRIPT", "LOAD", "return redis.call('GET', KEYS[1])"],
    );
    same(
        &mut r,
        &mut a,
        &[
            "SCRIPT",
            "LOAD",
            "#!lua flags=no-writes,allow-oom\nreturn 1",
        ],
    );
    same(
        &mut r,
        &mut a,
        &["SCRIPT", "LOAD", "#!lua  flags=  \nreturn 1"],
    );
    // Names in either case; unknown ones and garbage are 0.
    let exists = same(
        &mut r,
        &mut a,
        &[
            "SCRIPT",
            "EXISTS",
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db",
            "E0E1F9FABFC9D4800C877A703B823AC0578FF8DB",
            "ffffffffffffffffffffffffffffffffffffffff",
            "not-a-sha",
        ],
    );
    assert_eq!(
        exists,
        Value::Array(vec![
            Value::Int(1),
            Value::Int(1),
            Value::Int(0),
            Value::Int(0)
        ])
    );
    // What does not compile, and shebangs Redis refuses, in its words.
    for bad in [
        "return +",
        "#!lua\nreturn +",
        "local x = ",
        "#!lua flags=bad\nreturn 1",
        "#!lua name=x\nreturn 1",
        "#!luax\nreturn 1",
        "#! lua\nreturn 1",
        "#!lua",
    ] {
        let e = same(&mut r, &mut a, &["SCRIPT", "LOAD", bad]);
        assert!(matches!(e, Value::Error(_)), "{bad:?}: {e:?}");
    }
    // FLUSH forgets them all; its modes, and a bad one. Nothing runs, so
    // nothing can be killed; arity and help.
    const ONE: &str = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db";
    let steps: &[&[&str]] = &[
        &["SCRIPT", "FLUSH"],
        &["SCRIPT", "EXISTS", ONE],
        &["SCRIPT", "LOAD", "return 1"],
        &["SCRIPT", "FLUSH", "ASYNC"],
        &["SCRIPT", "EXISTS", ONE],
        &["SCRIPT", "LOAD", "return 1"],
        &["SCRIPT", "FLUSH", "sync"],
        &["SCRIPT", "FLUSH", "bad"],
        &["SCRIPT", "FLUSH", "SYNC", "extra"],
        &["SCRIPT", "EXISTS", ONE],
        &["SCRIPT", "KILL"],
        &["SCRIPT", "LOAD"],
        &["SCRIPT", "EXISTS"],
        &["SCRIPT", "KILL", "x"],
        &["SCRIPT", "HELP"],
        &["SCRIPT", "NOPE"],
        &["SCRIPT", "DEBUG", "NO"],
        &["SCRIPT", "DEBUG", "bad"],
        &["SCRIPT", "DEBUG"],
    ];
    for step in steps {
        same(&mut r, &mut a, step);
    }
    assert_eq!(
        a.cmd(&["SCRIPT", "EXISTS", ONE]).ok(),
        Some(Value::Array(vec![Value::Int(0)])),
        "flushed"
    );
    // No Lua debugger here: turning it on is refused, not ignored.
    assert!(matches!(
        a.cmd(&["SCRIPT", "DEBUG", "YES"]),
        Ok(Value::Error(e)) if e.starts_with(b"ERR SCRIPT DEBUG is not supported")
    ));
}

/// EVAL and EVALSHA: replies, errors (Redis's words, the script's sha and
/// line), conversions both ways, KEYS/ARGV, the `redis` API, globals.
#[test]
fn scripts_run_as_redis_runs_them() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    let cases: &[&[&str]] = &[
        &["SET", "s", "abc"],
        &["EVAL", "return 1", "0"],
        &[
            "EVAL",
            "return redis.call('SET', KEYS[1], ARGV[1])",
            "1",
            "k",
            "v",
        ],
        &["EVAL", "return redis.call('GET', KEYS[1])", "1", "k"],
        &["EVAL", "return redis.call('nope')", "0"],
        &["EVAL", "return redis.call('get')", "0"],
        &["EVAL", "return redis.call('incr', 's')", "0"],
        &["EVAL", "return redis.pcall('incr', 's')", "0"],
        &[
            "EVAL",
            "local a = 1\nlocal b = 2\nreturn redis.call('incr', 's')",
            "0",
        ],
        &[
            "EVAL",
            "local a = 1\nlocal c = redis.call('incr', 's')\nreturn c",
            "0",
        ],
        &["EVAL", "return redis.call()", "0"],
        &["EVAL", "return redis.call('get', {})", "0"],
        &["EVAL_RO", "return redis.call('set', 'a', 'b')", "0"],
        &["EVAL_RO", "return redis.call('get', 'k')", "0"],
        &[
            "EVAL",
            "#!lua flags=no-writes\nreturn redis.call('set', 'a', 'b')",
            "0",
        ],
        &["EVAL_RO", "#!lua\nreturn 1", "0"],
        &["EVAL_RO", "#!lua flags=no-writes\nreturn 1", "0"],
        &["EVAL", "error('boom')", "0"],
        &["EVAL", "local a = 1\nerror('two')", "0"],
        &["EVAL", "error({err='MY custom'})", "0"],
        &["EVAL", "return x", "0"],
        &["EVAL", "x = 1", "0"],
        &["EVAL", "return redis.call('subscribe', 'c')", "0"],
        &["EVAL", "return {1, 2, {3, 'a'}, nil, 5}", "0"],
        &["EVAL", "return {ok='fine'}", "0"],
        &["EVAL", "return redis.status_reply('FINE')", "0"],
        &["EVAL", "return redis.error_reply('My Error')", "0"],
        &["EVAL", "return {err='x'}", "0"],
        &["EVAL", "return 3.99", "0"],
        &["EVAL", "return -3.99", "0"],
        &["EVAL", "return true", "0"],
        &["EVAL", "return false", "0"],
        &["EVAL", "return nil", "0"],
        &["EVAL", "return redis.call('set', 'n', 0.1)", "0"],
        &["GET", "n"],
        &["EVAL", "return redis.call('set', 'n', 12)", "0"],
        &["GET", "n"],
        &["EVAL", "return KEYS", "-1"],
        &["EVAL", "return KEYS", "2", "a"],
        &["EVAL", "return KEYS", "x"],
        &[
            "EVAL",
            "return {KEYS[1], ARGV[1], ARGV[2], #ARGV}",
            "1",
            "a",
            "b",
            "c",
        ],
        &["EVALSHA", "ffffffffffffffffffffffffffffffffffffffff", "0"],
        &["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"],
        &["EVALSHA", "E0E1F9FABFC9D4800C877A703B823AC0578FF8DB", "0"],
        &["EVAL", "return redis.sha1hex('')", "0"],
        &["EVAL", "local t = redis.pcall('nope') return t['err']", "0"],
        &[
            "EVAL",
            "local ok, e = pcall(redis.call, 'nope') return {tostring(ok), e}",
            "0",
        ],
        &[
            "EVAL",
            "local ok, e = pcall(redis.call, 'nope') return type(e)",
            "0",
        ],
        &[
            "EVAL",
            "local ok, e = pcall(error, {err='x'}) return e",
            "0",
        ],
        &["EVAL", "local ok, e = pcall(error, 'msg') return e", "0"],
        &[
            "EVAL",
            "return {pcall(function() return 1, nil, 3 end)}",
            "0",
        ],
        &["EVAL", "return redis.call('lrange', 'nolist', 0, -1)", "0"],
        &[
            "EVAL",
            "redis.call('rpush', 'l', 'a', 'b') return redis.call('lrange', 'l', 0, -1)",
            "0",
        ],
        &["EVAL", "return redis.call('hgetall', 'nohash')", "0"],
        &["EVAL", "return redis.call('ping')", "0"],
        &["EVAL", "return type(redis.call('ping'))", "0"],
        &["EVAL", "return redis.call('get', 'missing') == false", "0"],
        &[
            "EVAL",
            "return string.format('%d-%s', 5, 'x') .. table.concat({1,2}, ',') .. math.floor(2.5)",
            "0",
        ],
        &["EVAL", "return tostring(loadfile) .. tostring(dofile)", "0"],
        &["EVAL", "return redis.REDIS_VERSION", "0"],
        &["EVAL", "return redis.call('select', '3')", "0"],
        &["GET", "k"],
        &["EVAL", "return 1 +", "0"],
        // Globals and libraries are read-only, whatever the way in.
        &["EVAL", "pcall = nil", "0"],
        &["EVAL", "_G.pcall = nil", "0"],
        &["EVAL", "rawset(_G, 'x', 1)", "0"],
        &["EVAL", "setmetatable(_G, nil)", "0"],
        &["EVAL", "string.rep = nil", "0"],
        &["EVAL", "redis.call = nil", "0"],
        &["EVAL", "return getmetatable(_G)", "0"],
        &["EVAL", "return rawget(_G, 'x')", "0"],
        // Reading one that does not exist is an error, by name or in _G.
        &["EVAL", "return nosuch", "0"],
        &["EVAL", "return _G.nosuch", "0"],
        &["EVAL", "return _G['tonumber'] ~= nil", "0"],
        &["EVAL", "return {pcall(function() return nosuch end)}", "0"],
        &["EVAL", "return {pcall(error, 'still')}", "0"],
        &["EVAL", "return string.rep('ab', 3)", "0"],
        // Replies that nest.
        &[
            "EVAL",
            "local t = {} for i = 1, 40 do t = {t} end return t",
            "0",
        ],
        // Numbers as arguments: %.17g.
        &["EVAL", "return redis.call('set', 'big', 1e17)", "0"],
        &["GET", "big"],
        &["EVAL", "return redis.call('set', 'neg', -2.5)", "0"],
        &["GET", "neg"],
        &[
            "EVAL",
            "return redis.call('set', 'whole', 99999999999999984)",
            "0",
        ],
        &["GET", "whole"],
        &["EVAL", "return redis.call('set', 'sum', 41 + 1)", "0"],
        &["GET", "sum"],
        // Numbers a conversion to integers would change.
        &["EVAL", "return redis.call('set', 'nz', -0.0)", "0"],
        &["GET", "nz"],
        &["EVAL", "return redis.call('set', 'tiny', 1e-17)", "0"],
        &["GET", "tiny"],
        &["EVAL", "return redis.call('set', 'near', 3 + 1e-16)", "0"],
        &["GET", "near"],
        &["EVAL", "return redis.acl_check_cmd('set', 'k', -0.0)", "0"],
        &["EVAL", "return redis.acl_check_cmd('set', 'k', {})", "0"],
        &["EVAL", "return redis.pcall('set', 'k', {})", "0"],
        &["EVAL", "return redis.call('set', 'k', true)", "0"],
        // redis.call's error as the script holds it.
        &[
            "EVAL",
            "local ok, e = pcall(redis.call, 'nosuch') return {tostring(ok), e}",
            "0",
        ],
        &[
            "EVAL",
            "local e = redis.pcall('incr', KEYS[1]) return {e.err, tostring(e.ignore_error_stats_update)}",
            "1",
            "neg",
        ],
        &[
            "EVAL",
            "local ok, e = xpcall(function() return redis.call('incr', 'neg') end, function(e) return e end) return {type(e), e.err}",
            "0",
        ],
        // A read-only script does not publish either.
        &["EVAL_RO", "return redis.call('publish', 'c', 'm')", "0"],
        // Inside a transaction.
        &["MULTI"],
        &["EVAL", "return redis.call('incr', 'm')", "0"],
        &["EVAL", "return redis.call('incr', 'm')", "0"],
        &["EXEC"],
        &["EVAL"],
        &["EVAL", "return 1"],
    ];
    for case in cases {
        same(&mut r, &mut a, case);
    }
}

/// RESP3 both ways, as Redis 7.0: `redis.setresp(3)` gives `redis.call`
/// replies as RESP3 values (maps, sets, nulls as nil, booleans, doubles),
/// a script may return RESP3 types (`{map=...}`, `{double=...}`...),
/// which reach a RESP2 client as RESP2 shapes and a RESP3 client as
/// themselves; `set_repl`'s and `setresp`'s arguments and errors; the
/// debugger's stand-ins; `acl_check_cmd`.
#[test]
fn resp3_conversions_match_redis() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    let scripts = [
        "redis.call('HSET', 'h', 'a', '1') redis.call('SADD', 's', 'x') redis.call('ZADD', 'z', 1.5, 'm') return 1",
        "redis.setresp(3) return redis.call('HGETALL', 'h')",
        "redis.setresp(3) local r = redis.call('HGETALL', 'h') return {type(r), type(r.map), r.map.a}",
        "redis.setresp(3) local r = redis.call('SMEMBERS', 's') return {type(r.set), tostring(r.set.x)}",
        "redis.setresp(3) return type(redis.call('GET', 'nokey'))",
        "return type(redis.call('GET', 'nokey'))",
        "redis.setresp(3) return redis.call('ZSCORE', 'nokey', 'a')",
        "redis.setresp(3) local r = redis.call('ZSCORE', 'z', 'm') return {type(r), tostring(r.double)}",
        "redis.setresp(3) return redis.call('ZSCORE', 'z', 'm')",
        "redis.setresp(3) return redis.call('EXISTS', 'h')",
        "redis.setresp(3) return {redis.call('ZSCORE', 'z', 'm'), redis.call('HGETALL', 'h')}",
        "redis.setresp(2) return type(redis.call('GET', 'nokey'))",
        "return {double=3.25}",
        "return {double=0.1}",
        "return {big_number='123456789012345678901234567890'}",
        "return {map={a=1}}",
        "return {set={a=true}}",
        "return {verbatim_string={format='txt', string='hello'}}",
        "return {1, {double=0.1}, {map={x={1,2}}}}",
        "return true",
        "return false",
        "redis.setresp(3) return true",
        "redis.setresp(3) return false",
        "redis.setresp(3) return nil",
        "redis.setresp(4)",
        "redis.setresp()",
        "redis.setresp('3') return 1",
        "return {pcall(redis.setresp, 4)}",
        "redis.set_repl(9)",
        "redis.set_repl()",
        "redis.set_repl(redis.REPL_ALL) return 1",
        "return {redis.REPL_NONE, redis.REPL_AOF, redis.REPL_SLAVE, redis.REPL_REPLICA, redis.REPL_ALL}",
        "return redis.breakpoint()",
        "return redis.debug('x')",
        "return redis.acl_check_cmd('set', 'a', 'b')",
        "return redis.acl_check_cmd('nosuch')",
    ];
    for script in scripts {
        same(&mut r, &mut a, &["EVAL", script, "0"]);
    }
    // The same return values to a RESP3 client: compared as raw bytes.
    let (mut raw_r, mut raw_a) = (raw_resp3(reference.port), raw_resp3(target.port));
    let resp3 = [
        "return {double=3.25}",
        "return {big_number='123'}",
        "return {map={a=1}}",
        "return {set={a=true}}",
        "return {verbatim_string={format='txt', string='hello'}}",
        "return true",
        "return false",
        "return nil",
        "redis.setresp(3) return true",
        "redis.setresp(3) return false",
        "redis.setresp(3) return redis.call('ZSCORE', 'z', 'm')",
        "redis.setresp(3) return redis.call('HGETALL', 'h')",
        "return redis.call('HGETALL', 'h')",
    ];
    for script in resp3 {
        let want = raw_r.eval(script);
        let got = raw_a.eval(script);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{script}"
        );
    }
}

/// The libraries Redis 7.0 loads (`bit`, `struct`, `cjson`, `cmsgpack`)
/// give the same results and errors; those it does not load are absent.
#[test]
fn libraries_match_redis() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    let scripts = [
        // bit
        "return {bit.tobit(2^32 + 5), bit.tobit(1.5), bit.tobit(2.5), bit.tobit(-1.5), bit.tobit(0xffffffff)}",
        "return {bit.bnot(0), bit.band(0xff, 0x0f, 0x3), bit.bor(1, 2, 4), bit.bxor(5, 1)}",
        "return {bit.lshift(1, 33), bit.rshift(-1, 28), bit.arshift(-256, 4), bit.rol(1, 33), bit.ror(1, 1)}",
        "return {bit.bswap(0x12345678), bit.tohex(255), bit.tohex(-1, -4), bit.tohex(0x1234, 2), bit.band('3', 1)}",
        "return bit.band('x')",
        "return bit.bor()",
        // struct
        "return struct.pack('>I2 <i4 b B h H l L', 1, -2, -3, 250, -300, 60000, -5, 7)",
        "return struct.pack('!4 b i4 d f', 1, 2, 1.5, 0.25)",
        "return struct.pack('s c3 x c0', 'ab', 'xyz', 'tail')",
        "return {struct.unpack('>i2 B c2', struct.pack('>i2 B c2', -3, 200, 'hi'))}",
        "return {struct.unpack('<d f', struct.pack('<d f', 1.5, 0.5))}",
        "return {struct.unpack('b c0', struct.pack('b', 3) .. 'abcdef')}",
        "return {struct.unpack('s s', 'ab\\0cd\\0')}",
        "return {struct.unpack('i2', 'abcd', 3)}",
        "return {struct.size('>!4 b i4 d'), struct.size('i8 h')}",
        "return struct.pack('z')",
        "return struct.unpack('i4', 'ab')",
        "return struct.size('s')",
        "return struct.pack('i40', 1)",
        "return struct.unpack('s', 'abc')",
        "return struct.pack('!3 i', 1)",
        // cjson
        "return cjson.encode({1, 2, {a = 1}})",
        "return cjson.encode({1.5, 0.1, 1e20, 123456789012345, -3, 1/3})",
        "return cjson.encode({})",
        "return cjson.encode({[1] = 1, [3] = 3})",
        r#"return cjson.encode('a/\"b\"\n\1')"#,
        "return cjson.encode({[2.5] = 'x'})",
        r#"return cjson.encode(cjson.decode('[1,2,null,"x",true,{"k":[false]}]'))"#,
        r#"return cjson.decode('{"a":[true,false]}').a[1]"#,
        r#"return cjson.decode('"\\u00e9\\ud83d\\ude00"')"#,
        "return tostring(cjson.decode('[1,2,null]')[3] == cjson.null)",
        "return cjson.decode('[1.5e3, -0.25, 10]')",
        "return cjson.encode({[1] = 1, [20] = 3})",
        "return cjson.encode(function() end)",
        "return cjson.encode({[true] = 1})",
        "return cjson.encode(0/0)",
        "return cjson.decode('{')",
        "return cjson.decode('[1,]')",
        "return cjson.decode('[1 2]')",
        r#"return cjson.decode('{"a" 1}')"#,
        "return cjson.decode('1 2')",
        "return cjson.decode('x')",
        // cmsgpack
        "return cmsgpack.pack(1, -1, 200, -200, 70000, -70000, 2^40, -2^40)",
        "return cmsgpack.pack(1.5, 0.1, 'ab', true, false, nil)",
        "return cmsgpack.pack({1, 2}, {}, {a = 1}, string.rep('x', 40), string.rep('y', 300))",
        "return {cmsgpack.unpack(cmsgpack.pack(1, 'z', 3.25, {1, {2}}))}",
        "local t = cmsgpack.unpack(cmsgpack.pack({a = {b = 'c'}})) return t.a.b",
        "return {cmsgpack.unpack_one(cmsgpack.pack(7, 8))}",
        "return {cmsgpack.unpack_one(cmsgpack.pack(7, 8), 1)}",
        "return {cmsgpack.unpack_limit(cmsgpack.pack(7, 8, 9), 2)}",
        "return {cmsgpack.unpack_one(cmsgpack.pack(7, 8), -1)}",
        "return {cmsgpack.unpack_limit(cmsgpack.pack(7, 8), -2)}",
        "return {cmsgpack.unpack_one(cmsgpack.pack(7, 8), 5)}",
        "return {cmsgpack.unpack_one(cmsgpack.pack(7, 8), 2)}",
        "return {cmsgpack.unpack_limit(cmsgpack.pack(7, 8, 9), 0)}",
        "return cmsgpack.unpack('\\146\\1')",
        "return cmsgpack.unpack('\\193')",
        "return cmsgpack.pack()",
        // What Redis does not load.
        "return {type(os), type(io), type(package), type(require), type(loadfile), type(dofile)}",
    ];
    for script in scripts {
        same(&mut r, &mut a, &["EVAL", script, "0"]);
    }
}

/// Over `maxmemory` (1 byte: always), as Redis 7.0: a script without a
/// shebang runs, but its first `denyoom` command is refused; one that
/// declares its flags is refused before it starts unless it says
/// `allow-oom` or `no-writes`; FCALL likewise by its function's flags.
#[test]
fn scripts_over_maxmemory_as_redis() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    let lib = "#!lua name=oom\nredis.register_function('w', function() return redis.call('set', 'f', 'v') end)\n\
        redis.register_function{function_name='ok', callback=function() return redis.call('set', 'f', 'v') end, flags={'allow-oom'}}";
    for step in [
        vec!["SET", "k", "v"],
        vec!["FUNCTION", "LOAD", lib],
        vec!["CONFIG", "SET", "maxmemory-policy", "noeviction"],
        vec!["CONFIG", "SET", "maxmemory", "1"],
        vec!["EVAL", "return redis.call('set', 'a', 'b')", "0"],
        vec!["EVAL", "return redis.call('get', 'k')", "0"],
        vec![
            "EVAL",
            "redis.call('del', 'k') return redis.call('set', 'a', 'b')",
            "0",
        ],
        vec!["EVAL", "return redis.pcall('set', 'a', 'b')", "0"],
        vec!["EVAL", "#!lua\nreturn redis.call('set', 'a', 'b')", "0"],
        vec![
            "EVAL",
            "#!lua flags=allow-oom\nreturn redis.call('set', 'a', 'b')",
            "0",
        ],
        vec![
            "EVAL",
            "#!lua flags=no-writes\nreturn redis.call('get', 'a')",
            "0",
        ],
        vec!["FCALL", "w", "0"],
        vec!["FCALL", "ok", "0"],
        vec!["CONFIG", "SET", "maxmemory", "0"],
        vec!["EVAL", "#!lua\nreturn redis.call('set', 'a', 'c')", "0"],
        vec!["GET", "a"],
    ] {
        same(&mut r, &mut a, &step);
    }
}

/// Scripts on a replica, as Redis 7.0 runs them: one that declares it may
/// write is refused as a write (`-READONLY`, `_RO` forms too); one
/// without a shebang runs and is refused at its first write. Cut off
/// from its primary with `replica-serve-stale-data no`, a script runs
/// only if it declares `allow-stale`, and then only the commands flagged
/// `stale`.
#[test]
fn scripts_on_a_replica_as_redis() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    let lib = "#!lua name=rep\nredis.register_function('w', function() return 1 end)\n\
        redis.register_function{function_name='r', callback=function() return redis.call('get', 'k') end, flags={'no-writes'}}\n\
        redis.register_function{function_name='s', callback=function() return redis.call('get', 'k') end, flags={'no-writes', 'allow-stale'}}";
    same(&mut r, &mut a, &["SET", "k", "v"]);
    same(&mut r, &mut a, &["FUNCTION", "LOAD", lib]);
    let stale_script = "#!lua flags=allow-stale,no-writes\nreturn 5";
    let Value::Bulk(sha) = same(&mut r, &mut a, &["SCRIPT", "LOAD", stale_script]) else {
        panic!("SCRIPT LOAD");
    };
    let sha = String::from_utf8(sha).expect("a hex name");
    // A primary nobody listens on: the link stays down.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = dead.local_addr().expect("addr").port().to_string();
    drop(dead);
    same(&mut r, &mut a, &["REPLICAOF", "127.0.0.1", &port]);
    let battery: Vec<Vec<&str>> = vec![
        vec!["EVAL", "return 1", "0"],
        vec!["EVAL", "return redis.call('get', 'k')", "0"],
        vec!["EVAL", "return redis.call('set', 'k', 'w')", "0"],
        vec!["EVAL", "return redis.pcall('set', 'k', 'w')", "0"],
        vec!["EVAL", "#!lua\nreturn 1", "0"],
        vec!["EVAL", "#!lua flags=allow-stale\nreturn 1", "0"],
        vec![
            "EVAL",
            "#!lua flags=no-writes\nreturn redis.call('get', 'k')",
            "0",
        ],
        vec![
            "EVAL",
            "#!lua flags=allow-stale,no-writes\nreturn redis.call('get', 'k')",
            "0",
        ],
        vec![
            "EVAL",
            "#!lua flags=allow-stale,no-writes\nreturn redis.pcall('get', 'k')",
            "0",
        ],
        vec![
            "EVAL",
            "#!lua flags=allow-stale,no-writes\nreturn type(redis.call('info', 'server'))",
            "0",
        ],
        vec!["EVAL_RO", "return 1", "0"],
        vec!["EVAL_RO", "#!lua\nreturn 1", "0"],
        vec!["EVALSHA", &sha, "0"],
        vec!["EVALSHA_RO", &sha, "0"],
        vec!["EVALSHA", "0000000000000000000000000000000000000000", "0"],
        vec!["FCALL", "w", "0"],
        vec!["FCALL", "r", "0"],
        vec!["FCALL", "s", "0"],
        vec!["FCALL_RO", "w", "0"],
        vec!["FCALL_RO", "r", "0"],
        vec!["FCALL", "nosuch", "0"],
    ];
    for serve_stale in ["yes", "no"] {
        same(
            &mut r,
            &mut a,
            &["CONFIG", "SET", "replica-serve-stale-data", serve_stale],
        );
        for step in &battery {
            same(&mut r, &mut a, step);
        }
        // Inside a transaction: refused as it is queued.
        same(&mut r, &mut a, &["MULTI"]);
        same(&mut r, &mut a, &["EVAL", "#!lua\nreturn 1", "0"]);
        same(
            &mut r,
            &mut a,
            &["EVAL", "#!lua flags=allow-stale,no-writes\nreturn 2", "0"],
        );
        same(&mut r, &mut a, &["EXEC"]);
    }
    same(&mut r, &mut a, &["REPLICAOF", "NO", "ONE"]);
    same(
        &mut r,
        &mut a,
        &["EVAL", "#!lua\nreturn redis.call('set', 'k', 'x')", "0"],
    );
}

/// Errors are counted once, as Redis 7.0 counts them: a command's error
/// where the command failed (also when refused inside the script), the
/// script's own error where the script failed; a `redis.pcall` error
/// table carries `ignore_error_stats_update`.
#[test]
fn script_errors_are_counted_as_redis_counts_them() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    for step in [
        vec!["SET", "s", "abc"],
        vec!["CONFIG", "RESETSTAT"],
        vec!["EVAL", "return redis.call('incr', 's')", "0"],
        vec!["EVAL", "return redis.pcall('incr', 's')", "0"],
        vec![
            "EVAL",
            "local t = redis.pcall('incr', 's') return tostring(t.ignore_error_stats_update)",
            "0",
        ],
        vec!["EVAL", "error('x')", "0"],
        vec!["EVAL", "return redis.error_reply('MY x')", "0"],
        vec!["EVAL", "return {err='MINE y'}", "0"],
        vec!["EVAL", "return {1, redis.error_reply('NESTED z')}", "0"],
        vec!["EVAL", "return redis.call('nosuch')", "0"],
        vec!["EVAL", "return redis.call('get')", "0"],
        vec!["EVAL_RO", "return redis.call('set', 'a', 'b')", "0"],
        vec!["EVAL", "redis.setresp(4)", "0"],
        vec!["EVAL", "return redis.pcall('subscribe', 'c')", "0"],
    ] {
        same(&mut r, &mut a, &step);
    }
    // The counters, without the timings.
    let stats = |c: &mut RespConn| -> Vec<String> {
        let mut lines = Vec::new();
        for section in ["errorstats", "commandstats", "stats"] {
            let Ok(Value::Bulk(b)) = c.cmd(&["INFO", section]) else {
                panic!("INFO {section}");
            };
            for l in String::from_utf8_lossy(&b).lines() {
                if l.starts_with("errorstat_") || l.starts_with("total_error_replies") {
                    lines.push(l.to_string());
                } else if let Some(rest) = l.strip_prefix("cmdstat_") {
                    if ["eval:", "eval_ro:", "incr:", "get:", "set:", "subscribe:"]
                        .iter()
                        .any(|c| rest.starts_with(c))
                    {
                        let kept: Vec<&str> = rest
                            .split([',', ':'])
                            .filter(|f| !f.starts_with("usec"))
                            .collect();
                        lines.push(kept.join(","));
                    }
                }
            }
        }
        lines.sort();
        lines
    };
    assert_eq!(stats(&mut a), stats(&mut r));
}

/// `math.random` is Redis 7.0's: one generator from drand48's default
/// state, not reseeded per script (both servers start fresh here), and
/// `math.randomseed` seeds it.
#[test]
fn math_random_is_redis_s() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    for script in [
        "return {math.random(1000000), math.random(1000000), math.random(5, 10)}",
        "return tostring(math.random())",
        "math.randomseed(7) return math.random(1000)",
        "return math.random(0)",
        "return math.random(3, 2)",
        "return math.random(1, 2, 3)",
        "return math.random('x')",
    ] {
        same(&mut r, &mut a, &["EVAL", script, "0"]);
    }
}

/// A connection that said `HELLO 3`, reading each reply as its raw bytes.
struct Resp3 {
    reader: std::io::BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
}

fn raw_resp3(port: u16) -> Resp3 {
    let writer = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    writer
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let reader = std::io::BufReader::new(writer.try_clone().expect("clone"));
    let mut c = Resp3 { reader, writer };
    c.send(&["HELLO", "3"]);
    c.reply();
    c
}

impl Resp3 {
    fn send(&mut self, args: &[&str]) {
        use std::io::Write;
        let mut b = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            b.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        self.writer.write_all(&b).expect("write");
    }

    fn eval(&mut self, script: &str) -> Vec<u8> {
        self.send(&["EVAL", script, "0"]);
        self.reply()
    }

    /// One whole reply (nested aggregates included) as it came.
    fn reply(&mut self) -> Vec<u8> {
        use std::io::{BufRead, Read};
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).expect("reply");
        let n = || -> i64 {
            std::str::from_utf8(&line[1..line.len() - 2])
                .ok()
                .and_then(|x| x.parse().ok())
                .unwrap_or(0)
        };
        let mut out = line.clone();
        match line.first() {
            Some(b'$' | b'=' | b'!') if n() >= 0 => {
                let mut body = vec![0; n() as usize + 2];
                self.reader.read_exact(&mut body).expect("body");
                out.extend_from_slice(&body);
            }
            Some(b'*' | b'~' | b'>') => {
                for _ in 0..n().max(0) {
                    out.extend(self.reply());
                }
            }
            Some(b'%' | b'|') => {
                for _ in 0..2 * n() {
                    out.extend(self.reply());
                }
            }
            _ => {}
        }
        out
    }
}

/// A return value that names the same tables over and over (2^40
/// elements from 40 tables) is refused quickly, and the server goes on.
#[test]
fn an_endless_reply_is_refused() {
    let target = start_anykv(&common::anykv_bin());
    let mut a = target.connect();
    let t = std::time::Instant::now();
    let got = a
        .cmd(&[
            "EVAL",
            "local t = {} for i = 1, 40 do t = {t, t} end return t",
            "0",
        ])
        .expect("a reply");
    assert!(
        matches!(&got, Value::Error(e) if e.starts_with(b"ERR the script's reply is too large")),
        "{got:?}"
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        t.elapsed()
    );
    // A table inside itself: Redis's words (it writes arrays until its
    // stack gives out; here nothing but the error is written).
    assert_eq!(
        a.cmd(&["EVAL", "local t = {} t[1] = t return t", "0"]).ok(),
        Some(Value::Error(b"ERR reached lua stack limit".to_vec()))
    );
    assert_eq!(a.cmd(&["PING"]).ok(), Some(Value::Simple(b"PONG".to_vec())));
}

/// A script's writes are its effects, in one MULTI/EXEC: a real
/// redis-server replicating from anykv and a restart from the AOF both
/// end with them.
#[test]
fn a_scripts_writes_replicate_and_survive_a_restart() {
    let dir = common::Scratch::new("scripting");
    let d = dir.dir();
    let target = common::start_anykv_aof(&d);
    let replica = common::start_redis(&[
        "--replicaof".into(),
        "127.0.0.1".into(),
        target.port.to_string(),
    ]);
    let mut a = target.connect();
    let script = "redis.call('SET', KEYS[1], ARGV[1]) redis.call('INCRBY', KEYS[2], ARGV[2]) return redis.call('GET', KEYS[2])";
    for _ in 0..3 {
        let n = a
            .cmd(&["EVAL", script, "2", "name", "n", "anykv", "5"])
            .ok();
        assert!(matches!(n, Some(Value::Bulk(_))), "{n:?}");
    }
    assert_eq!(a.cmd(&["GET", "n"]).ok(), Some(Value::Bulk(b"15".to_vec())));
    // A value the script computes from the clock: run again elsewhere it
    // would differ; its effect is the same everywhere.
    let when = "local t = redis.call('TIME') return redis.call('SET', 'when', t[1] .. '.' .. t[2])";
    assert_eq!(
        a.cmd(&["EVAL", when, "0"]).ok(),
        Some(Value::Simple(b"OK".to_vec()))
    );
    let when_value = a.cmd(&["GET", "when"]).ok();
    // redis.set_repl(redis.REPL_NONE): what follows stays on this server.
    let unlogged = "redis.set_repl(redis.REPL_NONE) redis.call('SET', 'here-only', 1) \
        redis.set_repl(redis.REPL_ALL) return redis.call('SET', 'everywhere', 1)";
    assert_eq!(
        a.cmd(&["EVAL", unlogged, "0"]).ok(),
        Some(Value::Simple(b"OK".to_vec()))
    );
    let mut rr = replica.connect();
    common::wait_for(
        "the replica to have the script's writes",
        std::time::Duration::from_secs(15),
        || {
            rr.cmd(&["GET", "n"]).ok() == Some(Value::Bulk(b"15".to_vec()))
                && rr.cmd(&["GET", "name"]).ok() == Some(Value::Bulk(b"anykv".to_vec()))
                && rr.cmd(&["GET", "when"]).ok() == when_value
                && rr.cmd(&["GET", "everywhere"]).ok() == Some(Value::Bulk(b"1".to_vec()))
        },
    );
    assert_eq!(
        rr.cmd(&["GET", "here-only"]).ok(),
        Some(Value::Nil),
        "REPL_NONE keeps a script's effect off the stream"
    );
    drop(a);
    drop(target);
    let again =
        common::start_anykv_with(&common::anykv_bin(), &["--appendonly", "yes", "--dir", &d]);
    let mut a = again.connect();
    assert_eq!(a.cmd(&["GET", "n"]).ok(), Some(Value::Bulk(b"15".to_vec())));
    assert_eq!(
        a.cmd(&["GET", "name"]).ok(),
        Some(Value::Bulk(b"anykv".to_vec()))
    );
    assert_eq!(
        a.cmd(&["GET", "when"]).ok(),
        when_value,
        "the effect, not a rerun"
    );
}

/// The caller's ACL holds inside its script, in Redis's words.
#[test]
fn a_script_runs_with_its_callers_rights() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let setup = [
        "ACL", "SETUSER", "limited", "on", ">pw", "~k*", "+eval", "+get", "+set",
    ];
    for server in [&reference, &target] {
        let mut c = server.connect();
        assert_eq!(c.cmd(&setup).ok(), Some(Value::Simple(b"OK".to_vec())));
    }
    let (mut r, mut a) = (reference.connect(), target.connect());
    same(&mut r, &mut a, &["AUTH", "limited", "pw"]);
    for case in [
        &["EVAL", "return redis.call('set', 'k1', 'v')", "0"][..],
        &["EVAL", "return redis.call('get', 'k1')", "0"],
        &["EVAL", "return redis.call('del', 'k1')", "0"],
        &["EVAL", "return redis.call('get', 'other')", "0"],
        &["EVAL", "return redis.pcall('get', 'other')", "0"],
    ] {
        same(&mut r, &mut a, case);
    }
}
