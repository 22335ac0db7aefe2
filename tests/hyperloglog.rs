//! HyperLogLog against redis-server 7.0: PFADD, PFCOUNT, PFMERGE and
//! PFDEBUG give the same replies, and the values themselves are the same
//! bytes (GET) through the sparse form, its promotion to dense and
//! merges; DUMP payloads restore on the other server; errors in Redis's
//! words.

mod common;

use common::{same, start_anykv, start_reference, Conn, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::Bulk(b) => b.clone(),
        other => panic!("not a bulk string: {other:?}"),
    }
}

#[test]
fn hyperloglogs_are_redis_s_byte_for_byte() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    let mut rng = StdRng::seed_from_u64(7);
    // Keys of growing sizes: some stay sparse, some turn dense.
    for (key, n) in [("h:small", 20), ("h:mid", 600), ("h:big", 4000)] {
        let mut added = 0;
        while added < n {
            let batch = rng.random_range(1..20).min(n - added);
            let mut cmd = vec!["PFADD".to_string(), key.to_string()];
            for _ in 0..batch {
                cmd.push(format!("e{}", rng.random_range(0..1_000_000)));
            }
            added += batch;
            let args: Vec<&str> = cmd.iter().map(|s| s.as_str()).collect();
            same(&mut r, &mut a, &args);
            if rng.random_range(0..5) == 0 {
                same(&mut r, &mut a, &["PFCOUNT", key]);
            }
            same(&mut r, &mut a, &["GET", key]);
        }
        same(&mut r, &mut a, &["PFCOUNT", key]);
        same(&mut r, &mut a, &["PFDEBUG", "ENCODING", key]);
        // The cached estimate is part of the value.
        same(&mut r, &mut a, &["GET", key]);
    }
    assert_eq!(
        a.cmd(&["PFDEBUG", "ENCODING", "h:big"]).ok(),
        Some(Value::Simple(b"dense".to_vec()))
    );
    assert_eq!(
        a.cmd(&["PFDEBUG", "ENCODING", "h:small"]).ok(),
        Some(Value::Simple(b"sparse".to_vec()))
    );
    same(&mut r, &mut a, &["PFDEBUG", "DECODE", "h:small"]);
    same(&mut r, &mut a, &["PFDEBUG", "DECODE", "h:big"]);
    // Unions: counted, and merged into a key (new or existing).
    same(&mut r, &mut a, &["PFCOUNT", "h:small", "h:mid", "nosuch"]);
    same(&mut r, &mut a, &["PFCOUNT", "h:small", "h:mid", "h:big"]);
    same(&mut r, &mut a, &["PFMERGE", "m:sparse", "h:small", "h:mid"]);
    same(&mut r, &mut a, &["GET", "m:sparse"]);
    same(&mut r, &mut a, &["PFMERGE", "h:small", "h:mid"]);
    same(&mut r, &mut a, &["GET", "h:small"]);
    same(&mut r, &mut a, &["PFMERGE", "m:dense", "h:mid", "h:big"]);
    same(&mut r, &mut a, &["GET", "m:dense"]);
    same(&mut r, &mut a, &["PFCOUNT", "m:dense"]);
    same(&mut r, &mut a, &["PFMERGE", "m:empty"]);
    same(&mut r, &mut a, &["GET", "m:empty"]);
    // A key made with no element, and PFADD that changes nothing.
    same(&mut r, &mut a, &["PFADD", "h:none"]);
    same(&mut r, &mut a, &["GET", "h:none"]);
    same(&mut r, &mut a, &["PFADD", "h:none"]);
    same(&mut r, &mut a, &["PFADD", "h:mid", "e1"]);
    same(&mut r, &mut a, &["PFADD", "h:mid", "e1"]);
    // PFDEBUG: the registers, conversions.
    same(&mut r, &mut a, &["PFDEBUG", "GETREG", "h:mid"]);
    same(&mut r, &mut a, &["GET", "h:mid"]);
    same(&mut r, &mut a, &["PFDEBUG", "TODENSE", "h:mid"]);
    same(&mut r, &mut a, &["PFDEBUG", "TODENSE", "h:mid"]);
    same(&mut r, &mut a, &["PFDEBUG", "NOPE", "h:mid"]);
    same(&mut r, &mut a, &["PFDEBUG", "GETREG", "nosuch"]);
    // A smaller sparse limit promotes sooner.
    for c in [&mut r, &mut a] {
        assert!(c
            .cmd(&["CONFIG", "SET", "hll-sparse-max-bytes", "60"])
            .is_ok_and(|v| !v.is_error()));
    }
    for i in 0..40 {
        same(&mut r, &mut a, &["PFADD", "h:tight", &format!("x{i}")]);
        same(&mut r, &mut a, &["GET", "h:tight"]);
    }
    same(&mut r, &mut a, &["PFDEBUG", "ENCODING", "h:tight"]);
}

#[test]
fn hyperloglog_errors_and_dumps_as_redis() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    same(&mut r, &mut a, &["RPUSH", "list", "a"]);
    same(&mut r, &mut a, &["SET", "plain", "not an hll at all"]);
    same(&mut r, &mut a, &["SET", "num", "12345"]);
    for cmd in [
        vec!["PFADD", "list", "a"],
        vec!["PFADD", "plain", "a"],
        vec!["PFADD", "num", "a"],
        vec!["PFCOUNT", "plain"],
        vec!["PFCOUNT", "list", "plain"],
        vec!["PFMERGE", "dst", "plain"],
        vec!["PFMERGE", "list", "nosuch"],
        vec!["PFDEBUG", "ENCODING", "plain"],
        vec!["PFADD"],
        vec!["PFCOUNT"],
        vec!["PFDEBUG", "GETREG"],
    ] {
        same(&mut r, &mut a, &cmd);
    }
    // Corrupt values: a sparse body that does not cover the registers, a
    // dense one of the wrong length.
    let mut corrupt = b"HYLL\x01\x00\x00\x00".to_vec();
    corrupt.extend_from_slice(&[0x80; 8]);
    corrupt.extend_from_slice(&[0x00, 0x01]);
    let mut short_dense = b"HYLL\x00\x00\x00\x00".to_vec();
    short_dense.extend_from_slice(&[0; 8]);
    short_dense.extend_from_slice(&[0; 100]);
    for c in [&mut r, &mut a] {
        for (k, v) in [("bad", &corrupt), ("shortdense", &short_dense)] {
            let args = vec![b"SET".to_vec(), k.as_bytes().to_vec(), v.clone()];
            assert!(c.call(&args).is_ok_and(|v| !v.is_error()));
        }
    }
    for cmd in [
        vec!["PFCOUNT", "bad"],
        vec!["PFADD", "bad", "x"],
        vec!["PFCOUNT", "bad", "bad"],
        vec!["PFCOUNT", "shortdense"],
        vec!["PFMERGE", "dst2", "bad"],
    ] {
        same(&mut r, &mut a, &cmd);
    }
    // DUMP payloads move both ways, and the values count the same.
    same(&mut r, &mut a, &["PFADD", "hd", "a", "b", "c", "d"]);
    let from_redis = bytes(&r.cmd(&["DUMP", "hd"]).expect("DUMP"));
    let from_anykv = bytes(&a.cmd(&["DUMP", "hd"]).expect("DUMP"));
    let restore = |c: &mut common::RespConn, key: &str, payload: &[u8]| {
        let args = vec![
            b"RESTORE".to_vec(),
            key.as_bytes().to_vec(),
            b"0".to_vec(),
            payload.to_vec(),
        ];
        c.call(&args).expect("RESTORE")
    };
    assert_eq!(
        restore(&mut a, "hd:from-redis", &from_redis),
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(
        restore(&mut r, "hd:from-anykv", &from_anykv),
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(
        a.cmd(&["PFCOUNT", "hd:from-redis"]).ok(),
        r.cmd(&["PFCOUNT", "hd:from-anykv"]).ok()
    );
    same(&mut r, &mut a, &["PFCOUNT", "hd"]);
}

/// PFSELFTEST runs the HyperLogLog code's own checks (ten million
/// elements, as Redis) and answers as redis-server does; a database may
/// not run it (it holds its executor for a while).
#[test]
fn pfselftest_passes_as_on_redis() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    assert_eq!(
        same(&mut r, &mut a, &["PFSELFTEST"]),
        Value::Simple(b"OK".to_vec())
    );
    same(&mut r, &mut a, &["PFSELFTEST", "extra"]);
    same(&mut r, &mut a, &["COMMAND", "INFO", "PFSELFTEST"]);
}
