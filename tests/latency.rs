//! LATENCY's subcommands and per-command latency histograms, against the
//! reference redis-server 7.0 where the reply is Redis's (HELP, errors,
//! the shape of LATENCY HISTOGRAM and INFO latencystats, LOLWUT), and on
//! anykv alone for the reports written for people (DOCTOR, GRAPH).

mod common;

use common::{start_anykv, start_reference, RespConn, Value};

fn call(c: &mut RespConn, args: &[&str]) -> Value {
    c.cmd(args).expect("reply")
}

fn text(v: Value) -> String {
    match v {
        Value::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// LATENCY HISTOGRAM's reply reduced to what two servers share: each
/// command's name and calls, that its buckets grow, and that the last
/// holds every call.
fn histogram_shape(v: Value) -> Vec<(String, i64)> {
    let Value::Array(items) = v else {
        panic!("LATENCY HISTOGRAM: {v:?}");
    };
    let mut out = Vec::new();
    for pair in items.chunks(2) {
        let name = match &pair[0] {
            Value::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("command name: {other:?}"),
        };
        let Value::Array(m) = &pair[1] else {
            panic!("{name}: {:?}", pair[1]);
        };
        assert_eq!(m[0], Value::Bulk(b"calls".to_vec()));
        let Value::Int(calls) = m[1] else {
            panic!("{name} calls");
        };
        assert_eq!(m[2], Value::Bulk(b"histogram_usec".to_vec()));
        let Value::Array(buckets) = &m[3] else {
            panic!("{name} buckets");
        };
        let ints: Vec<i64> = buckets
            .iter()
            .map(|b| match b {
                Value::Int(n) => *n,
                other => panic!("{name} bucket {other:?}"),
            })
            .collect();
        assert!(!ints.is_empty(), "{name}: no buckets");
        // Each bucket is labelled, as Redis labels it, with the highest
        // value it holds (2 significant digits), in µs: 2^m ns plus its
        // sub-bucket's width less one.
        let labels: Vec<i64> = (10..45)
            .map(|m: u32| ((1i64 << m) + (1i64 << (m - 7)) - 1) / 1000)
            .collect();
        for b in ints.chunks(2) {
            assert!(
                labels.contains(&b[0]),
                "{name}: bucket {} is none of Redis's {labels:?}",
                b[0]
            );
        }
        for w in ints.chunks(2).collect::<Vec<_>>().windows(2) {
            assert!(w[1][0] > w[0][0] && w[1][1] > w[0][1], "{name}: {ints:?}");
        }
        assert_eq!(ints[ints.len() - 1], calls, "{name}: {ints:?}");
        out.push((name, calls));
    }
    out.sort();
    out
}

#[test]
fn latency_histograms_and_help_answer_as_redis_does() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    for c in [&mut reference.connect(), &mut target.connect()] {
        call(c, &["CONFIG", "RESETSTAT"]);
    }
    let (mut r, mut a) = (reference.connect(), target.connect());
    for c in [&mut r, &mut a] {
        for i in 0..5 {
            call(c, &["SET", &format!("k{i}"), "v"]);
        }
        call(c, &["GET", "k1"]);
        call(c, &["GET", "k2"]);
        call(c, &["CLIENT", "GETNAME"]);
        // A slow call, in a bucket whose label is not its power of two.
        call(c, &["DEBUG", "SLEEP", "0.05"]);
    }
    for args in [
        &["LATENCY", "HELP"][..],
        &["OBJECT", "HELP"],
        &["COMMAND", "HELP"],
        &["CONFIG", "HELP"],
        &["PUBSUB", "HELP"],
        &["SLOWLOG", "HELP"],
        &["OBJECT", "HELP", "x"],
        &["OBJECT", "NOSUCH"],
        &["MEMORY", "HELP"],
        &["LATENCY", "GRAPH", "nosuch"],
        &["LATENCY", "HISTORY", "nosuch"],
        &["LATENCY", "HISTOGRAM", "nosuch"],
        &["LATENCY", "NOSUCH"],
        &["LOLWUT"],
        &["LOLWUT", "VERSION", "x"],
        &["LOLWUT", "VERSION", "5", "x"],
        &["LOLWUT", "VERSION", "6", "10", "y"],
        &["LOLWUT", "VERSION", "7", "5"],
        &["LOLWUT", "VERSION", "4"],
        &["LOLWUT", "foo"],
        &["LOLWUT", "VERSION"],
        &["LOLWUT", "VERSION", "7", "x"],
    ] {
        assert_eq!(call(&mut a, args), call(&mut r, args), "{args:?}");
    }
    // The drawings are random (Redis's too): compared on their size and
    // their last line's version.
    for args in [
        &["LOLWUT", "VERSION", "5"][..],
        &["LOLWUT", "VERSION", "5", "30", "4", "3"],
        &["LOLWUT", "VERSION", "5", "0", "0", "0"],
        &["LOLWUT", "VERSION", "5", "25", "3"],
        &["LOLWUT", "VERSION", "5", "1", "1", "1", "x"],
        &["LOLWUT", "VERSION", "6"],
        &["LOLWUT", "VERSION", "6", "25", "7"],
        &["LOLWUT", "VERSION", "6", "-3", "0"],
    ] {
        let (x, y) = (text(call(&mut a, args)), text(call(&mut r, args)));
        // (Characters for a Braille drawing, coloured cells for a skyline.)
        let width = |t: &str| {
            let first = t.lines().next().unwrap_or("");
            if first.contains('\x1b') {
                first.matches("\x1b[0m").count()
            } else {
                first.chars().count()
            }
        };
        assert_eq!(width(&x), width(&y), "{args:?} width");
        let last = |t: &str| {
            t.lines()
                .last()
                .map(|l| l.rsplit(". ").next().unwrap_or("").to_string())
        };
        assert_eq!(last(&x), last(&y), "{args:?} version line");
        if args[2] == "5" {
            assert_eq!(x.lines().count(), y.lines().count(), "{args:?} lines");
        }
        if args[2] == "6" {
            let rows = |t: &str| t.lines().filter(|l| l.contains('\x1b')).count();
            assert_eq!(rows(&x), rows(&y), "{args:?} height");
        }
        let drawn = x
            .chars()
            .filter(|c| ('\u{2801}'..='\u{28ff}').contains(c))
            .count()
            + x.matches("\x1b[0;30;40m").count();
        assert!(drawn > 0, "{args:?}: nothing drawn");
    }
    for args in [
        &["LATENCY", "HISTOGRAM", "set", "get", "nosuch"][..],
        &["LATENCY", "HISTOGRAM", "client"],
    ] {
        let want = histogram_shape(call(&mut r, args));
        let got = histogram_shape(call(&mut a, args));
        assert_eq!(got, want, "{args:?}");
    }
    let all = histogram_shape(call(&mut a, &["LATENCY", "HISTOGRAM"]));
    assert!(all.contains(&("set".to_string(), 5)), "{all:?}");
    // INFO latencystats: a line per command run, Redis's names; the
    // percentiles as configured.
    let lines = |c: &mut RespConn| -> Vec<String> {
        text(call(c, &["INFO", "latencystats"]))
            .lines()
            .filter(|l| l.starts_with("latency_percentiles_usec_set:"))
            .map(|l| {
                l.split([':', ','])
                    .map(|f| f.split('=').next().unwrap_or("").to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    assert_eq!(lines(&mut a), lines(&mut r));
    for c in [&mut r, &mut a] {
        call(
            c,
            &[
                "CONFIG",
                "SET",
                "latency-tracking-info-percentiles",
                "50 99.9 100",
            ],
        );
    }
    assert_eq!(lines(&mut a), lines(&mut r));
    assert_eq!(
        lines(&mut a),
        vec!["latency_percentiles_usec_set p50 p99.9 p100".to_string()]
    );
    // Tracking off: commands not yet run get no histogram.
    for c in [&mut r, &mut a] {
        call(c, &["CONFIG", "SET", "latency-tracking", "no"]);
        call(c, &["INCR", "n"]);
    }
    assert_eq!(
        histogram_shape(call(&mut a, &["LATENCY", "HISTOGRAM", "incr"])),
        histogram_shape(call(&mut r, &["LATENCY", "HISTOGRAM", "incr"]))
    );
}

/// DOCTOR and GRAPH on recorded events (anykv's own words and drawing).
#[test]
fn latency_doctor_and_graph_report_recorded_events() {
    let target = start_anykv(&common::anykv_bin());
    let mut a = target.connect();
    let off = text(call(&mut a, &["LATENCY", "DOCTOR"]));
    assert!(off.contains("latency-monitor-threshold"), "{off}");
    call(&mut a, &["CONFIG", "SET", "latency-monitor-threshold", "1"]);
    let none = text(call(&mut a, &["LATENCY", "DOCTOR"]));
    assert!(none.contains("No event of 1 ms"), "{none}");
    // A slow script is a slow command.
    let slow = "local t = redis.call('time'); local s = t[1] * 1000000 + t[2]; \
                repeat t = redis.call('time') until t[1] * 1000000 + t[2] - s > 20000";
    call(&mut a, &["EVAL", slow, "0"]);
    let latest = call(&mut a, &["LATENCY", "LATEST"]);
    assert!(
        matches!(&latest, Value::Array(v) if !v.is_empty()),
        "no event recorded: {latest:?}"
    );
    // HISTORY: one [unix time, ms] sample, the script's 20 ms or more.
    let Value::Array(history) = call(&mut a, &["LATENCY", "HISTORY", "command"]) else {
        panic!("LATENCY HISTORY");
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match history.as_slice() {
        [Value::Array(sample)] => match sample.as_slice() {
            [Value::Int(t), Value::Int(ms)] => {
                assert!((now - 5..=now + 1).contains(t), "time {t}, now {now}");
                assert!(*ms >= 20, "{ms} ms");
            }
            other => panic!("a sample: {other:?}"),
        },
        other => panic!("one sample: {other:?}"),
    }
    let report = text(call(&mut a, &["LATENCY", "DOCTOR"]));
    assert!(report.contains("1. command: 1 samples"), "{report}");
    assert!(report.contains("SLOWLOG"), "{report}");
    let graph = text(call(&mut a, &["LATENCY", "GRAPH", "command"]));
    let first = graph.lines().next().unwrap_or_default();
    assert!(first.starts_with("command - high "), "{graph}");
    assert!(graph.lines().any(|l| l == "#"), "{graph}");
    assert_eq!(call(&mut a, &["LATENCY", "RESET"]), Value::Int(1));
    assert!(matches!(
        call(&mut a, &["LATENCY", "GRAPH", "command"]),
        Value::Error(_)
    ));
}

/// The event names of a LATENCY LATEST reply (each entry: name, time,
/// latest ms, max ms).
fn latest_events(v: Value) -> Vec<String> {
    let Value::Array(entries) = v else {
        panic!("LATENCY LATEST: {v:?}");
    };
    let mut names: Vec<String> = entries
        .iter()
        .map(|e| match e {
            Value::Array(f) => match f.first() {
                Some(Value::Bulk(n)) => String::from_utf8_lossy(n).into_owned(),
                other => panic!("an event name: {other:?}"),
            },
            other => panic!("an event: {other:?}"),
        })
        .collect();
    names.sort();
    names
}

/// Events beside commands, recorded as Redis records them once they
/// take `latency-monitor-threshold`: the active expiry cycle deleting
/// 200,000 keys whose TTL ran out together (`expire-cycle`), and
/// eviction freeing memory for a write past `maxmemory`
/// (`eviction-cycle`, one key's deletion `eviction-del`). The same
/// events on redis-server and on anykv.
#[test]
fn expiry_and_eviction_are_latency_events_as_in_redis() {
    let reference = start_reference();
    let target = start_anykv(&common::anykv_bin());
    let mut events = Vec::new();
    for server in [&reference, &target] {
        let mut c = server.connect();
        call(&mut c, &["CONFIG", "SET", "latency-monitor-threshold", "1"]);
        // (The setup's own slow commands are not what is looked at.)
        call(&mut c, &["DEBUG", "POPULATE", "200000", "exp"]);
        let expire_all = "for i = 0, 199999 do redis.call('PEXPIRE', 'exp:' .. i, 50) end";
        call(&mut c, &["EVAL", expire_all, "0"]);
        call(&mut c, &["LATENCY", "RESET"]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while call(&mut c, &["DBSIZE"]) != Value::Int(0) {
            assert!(std::time::Instant::now() < deadline, "keys did not expire");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let expired = latest_events(call(&mut c, &["LATENCY", "LATEST"]));
        // Eviction: a big dataset, then a limit below it; the next write
        // evicts (a lot at once: a pass of milliseconds).
        call(&mut c, &["DEBUG", "POPULATE", "200000", "ev", "64"]);
        call(&mut c, &["LATENCY", "RESET"]);
        call(
            &mut c,
            &["CONFIG", "SET", "maxmemory-policy", "allkeys-random"],
        );
        // (No time limit: one pass frees it all, as long as that takes.)
        call(
            &mut c,
            &["CONFIG", "SET", "maxmemory-eviction-tenacity", "100"],
        );
        let Value::Bulk(info) = call(&mut c, &["INFO", "memory"]) else {
            panic!("INFO memory");
        };
        let used: u64 = String::from_utf8_lossy(&info)
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:")?.trim().parse().ok())
            .expect("used_memory");
        call(
            &mut c,
            &["CONFIG", "SET", "maxmemory", &(used / 2).to_string()],
        );
        call(&mut c, &["SET", "one-more", "write"]);
        let evicted = latest_events(call(&mut c, &["LATENCY", "LATEST"]));
        call(&mut c, &["CONFIG", "SET", "maxmemory", "0"]);
        events.push((expired, evicted));
    }
    let (redis, anykv) = (&events[0], &events[1]);
    assert!(redis.0.contains(&"expire-cycle".to_string()), "{redis:?}");
    assert!(anykv.0.contains(&"expire-cycle".to_string()), "{anykv:?}");
    assert!(redis.1.contains(&"eviction-cycle".to_string()), "{redis:?}");
    assert!(anykv.1.contains(&"eviction-cycle".to_string()), "{anykv:?}");
    // The eviction pass's events as redis-server has them (eviction-del
    // too when one deletion took a millisecond; the command itself).
    for e in &redis.1 {
        if e != "eviction-del" {
            assert!(anykv.1.contains(e), "redis {redis:?}, anykv {anykv:?}");
        }
    }
}
