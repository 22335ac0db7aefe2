//! Lua scripts against the reference redis-server 7.0: the same requests
//! to both, the same replies. What is built so far is the script cache
//! (SCRIPT LOAD, EXISTS, FLUSH, KILL, HELP); running scripts is not yet.

mod common;

use common::{start_anykv, start_reference, RespConn, Value};

/// Sends `args` to both servers and requires the same reply.
fn same(redis: &mut RespConn, anykv: &mut RespConn, args: &[&str]) -> Value {
    let want = redis.cmd(args).expect("redis-server");
    let got = anykv.cmd(args).expect("anykv");
    assert_eq!(got, want, "{args:?}");
    got
}

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
    ];
    for step in steps {
        same(&mut r, &mut a, step);
    }
    assert_eq!(
        a.cmd(&["SCRIPT", "EXISTS", ONE]).ok(),
        Some(Value::Array(vec![Value::Int(0)])),
        "flushed"
    );
}
