//! MEMORY against the reference redis-server 7.0: the same help, errors
//! and field names; sizes are anykv's own (another allocator and other
//! encodings), so they are checked for sense, not compared.

mod common;

use common::{same, start_anykv, start_reference, Value};

/// The names of a MEMORY STATS reply (RESP2: name, value, ...), with the
/// nested `db.N` maps' names.
fn names(v: &Value) -> Vec<String> {
    let Value::Array(items) = v else {
        panic!("MEMORY STATS: {v:?}");
    };
    let mut out = Vec::new();
    for pair in items.chunks(2) {
        let Value::Bulk(n) = &pair[0] else {
            panic!("a field name: {:?}", pair[0]);
        };
        out.push(String::from_utf8_lossy(n).into_owned());
        if let Value::Array(_) = &pair[1] {
            out.extend(names(&pair[1]));
        }
    }
    out
}

#[test]
fn memory_answers_as_redis_does() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let (mut r, mut a) = (reference.connect(), target.connect());
    for step in [
        vec!["MEMORY", "HELP"],
        vec!["MEMORY", "USAGE", "nokey"],
        vec!["SET", "k", "v"],
        vec!["MEMORY", "USAGE", "k", "SAMPLES", "x"],
        vec!["MEMORY", "USAGE", "k", "SAMPLES", "-1"],
        vec!["MEMORY", "USAGE", "k", "FOO"],
        vec!["MEMORY", "USAGE", "k", "SAMPLES"],
        vec!["MEMORY", "USAGE"],
        vec!["MEMORY", "PURGE"],
        vec!["MEMORY", "NOPE"],
        vec!["MEMORY", "STATS", "x"],
    ] {
        same(&mut r, &mut a, &step);
    }
    // Sizes: a key's grows with its value.
    let usage =
        |c: &mut common::RespConn, k: &str| match c.cmd(&["MEMORY", "USAGE", k, "SAMPLES", "0"]) {
            Ok(Value::Int(n)) => n,
            other => panic!("MEMORY USAGE {k}: {other:?}"),
        };
    a.cmd(&["SET", "big", &"x".repeat(10_000)]).expect("set");
    let (small, big) = (usage(&mut a, "k"), usage(&mut a, "big"));
    assert!(small > 0 && big > 10_000 && big < 20_000, "{small} {big}");
    // STATS: Redis's field names in Redis's order.
    let want = names(&r.cmd(&["MEMORY", "STATS"]).expect("stats"));
    let got = names(&a.cmd(&["MEMORY", "STATS"]).expect("stats"));
    assert_eq!(got, want);
    // The allocator's statistics: glibc's, with the heap in use at least
    // what anykv counts as requested now (the 10 KB value among it).
    let Ok(Value::Bulk(stats)) = a.cmd(&["MEMORY", "MALLOC-STATS"]) else {
        panic!("MEMORY MALLOC-STATS");
    };
    let stats = String::from_utf8_lossy(&stats).into_owned();
    let figure = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {name} in {stats}"))
    };
    assert!(
        stats.starts_with("___ Begin glibc malloc statistics"),
        "{stats}"
    );
    let (in_use, mapped, requested) =
        (figure("uordblks "), figure("hblkhd "), figure("requested "));
    assert!(requested > 10_000, "{stats}");
    assert!(in_use + mapped >= requested, "{stats}");
    let Ok(Value::Bulk(report)) = a.cmd(&["MEMORY", "DOCTOR"]) else {
        panic!("MEMORY DOCTOR");
    };
    // (A report for people, in anykv's own words.)
    assert!(
        report.starts_with(b"Memory report: "),
        "{}",
        String::from_utf8_lossy(&report)
    );
    // Every one of Redis's reports ends its last line.
    assert!(
        report.ends_with(b"\n"),
        "{}",
        String::from_utf8_lossy(&report)
    );
    // After a peak: data kept in db 0, three times as much made and
    // flushed in db 1. The report names the past peak.
    for step in [
        vec!["DEBUG", "POPULATE", "100000", "kept", "64"],
        vec!["SELECT", "1"],
        vec!["DEBUG", "POPULATE", "250000", "gone", "64"],
        vec!["FLUSHDB"],
        vec!["SELECT", "0"],
    ] {
        assert!(matches!(a.cmd(&step), Ok(Value::Simple(_))), "{step:?}");
    }
    let Ok(Value::Bulk(report)) = a.cmd(&["MEMORY", "DOCTOR"]) else {
        panic!("MEMORY DOCTOR");
    };
    let report = String::from_utf8_lossy(&report).into_owned();
    assert!(
        report.starts_with("Memory report: ") && report.contains("\n * Past peak: "),
        "{report}"
    );
    assert!(report.ends_with('\n'), "{report}");
}
