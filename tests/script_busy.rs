//! Long scripts as Redis 7.0 runs them, against the reference
//! redis-server: past busy-reply-threshold other clients get -BUSY to
//! everything but what Redis still serves then; SCRIPT KILL / FUNCTION
//! KILL stop a script that has not written; one that has written can only
//! be stopped by SHUTDOWN NOSAVE, which loses its effects. anykv suspends
//! such a script (script::busy) instead of blocking its thread: that side
//! is in tests/tenancy.rs (another database on the same executor).

mod common;

use std::time::{Duration, Instant};

use common::{start_redis, RespConn, Scratch, ServerProcess, Value};

/// busy-reply-threshold in these tests.
const THRESHOLD_MS: u64 = 200;

fn start_both(dir: &Scratch, extra: &[&str]) -> (ServerProcess, ServerProcess) {
    let mut args: Vec<String> = vec!["--save".into(), "".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let rdir = dir.path("redis");
    std::fs::create_dir_all(&rdir).expect("dir");
    let mut rargs = args.clone();
    rargs.extend(["--dir".to_string(), rdir]);
    let reference = start_redis(&rargs);
    let adir = dir.path("anykv");
    std::fs::create_dir_all(&adir).expect("dir");
    let mut aargs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    aargs.extend(["--dir", &adir]);
    let target = common::start_anykv_with(&common::anykv_bin(), &aargs);
    (reference, target)
}

fn set_threshold(c: &mut RespConn) {
    let ms = THRESHOLD_MS.to_string();
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "busy-reply-threshold", &ms]).ok(),
        Some(Value::Simple(b"OK".to_vec()))
    );
}

/// `FUNCTION STATS` with the running script's duration taken out (it
/// differs by the milliseconds the two runs differ), and HELLO's with the
/// client's id.
fn without_duration(v: Value) -> Value {
    match v {
        Value::Array(items) => {
            let mut out = Vec::new();
            let mut skip = false;
            for i in items {
                if skip {
                    skip = false;
                    out.push(Value::Int(0));
                    continue;
                }
                if i == Value::Bulk(b"duration_ms".to_vec()) || i == Value::Bulk(b"id".to_vec()) {
                    skip = true;
                }
                out.push(without_duration(i));
            }
            Value::Array(out)
        }
        other => other,
    }
}

fn compare(label: &str, r: Vec<(String, Value)>, a: Vec<(String, Value)>) {
    assert_eq!(r.len(), a.len(), "{label}");
    for ((what, rv), (_, av)) in r.iter().zip(a.iter()) {
        assert_eq!(rv, av, "{label}: {what}: redis-server {rv:?}, anykv {av:?}");
    }
}

/// A script that loops: past the threshold everyone else gets -BUSY
/// (inside MULTI too, whose EXEC then aborts), WATCH and MULTI are still
/// served, FUNCTION STATS and FUNCTION KILL are refused for a script, and
/// SCRIPT KILL stops it (also when it catches errors in a loop); then
/// the statistics count what was refused, as Redis counts it.
#[test]
fn a_looping_script_gets_busy_replies_and_script_kill_as_redis() {
    let dir = Scratch::new("busy-eval");
    let (reference, target) = start_both(&dir, &[]);
    let during: Vec<Vec<&str>> = vec![
        vec!["GET", "x"],
        vec!["PING"],
        vec!["FUNCTION", "STATS"],
        vec!["SHUTDOWN", "SAVE"],
        // Checked before BUSY: unknown commands, arity.
        vec!["NOSUCHCOMMAND", "a"],
        vec!["GET"],
        vec!["EXEC"],
        vec!["DISCARD"],
        vec!["UNWATCH"],
        vec!["WATCH", "x"],
        vec!["MULTI"],
        vec!["GET", "x"],
        // Served while busy, so queued; SHUTDOWN never in a transaction.
        vec!["FUNCTION", "STATS"],
        vec!["SHUTDOWN", "NOSAVE"],
        vec!["DISCARD"],
        vec!["MULTI"],
        vec!["GET", "x"],
        vec!["EXEC"],
        vec!["CLIENT", "LIST"],
        vec!["FUNCTION", "KILL"],
    ];
    let mut last = during.clone();
    // Served while busy too (Redis's allow-busy commands).
    last.extend([
        vec!["AUTH", "pw"],
        vec!["AUTH", "default", "wrong"],
        vec!["HELLO", "4"],
        vec!["HELLO", "2", "SETNAME", "late"],
        vec!["GET", "x"],
        vec!["WATCH", "x"],
        vec!["MULTI"],
        vec!["RESET"],
        vec!["CLIENT", "GETNAME"],
        vec!["GET", "x"],
    ]);
    last.push(vec!["SCRIPT", "KILL"]);
    let after: Vec<Vec<&str>> = vec![
        vec!["SCRIPT", "KILL"],
        vec!["INFO", "errorstats"],
        vec!["EXISTS", "x"],
    ];
    // (commandstats are compared for the commands whose counts both
    // servers keep while busy: refusals and failures.)
    for script in [
        "while true do end",
        "local n = 0 while true do pcall(function() while true do n = n + 1 end end) end",
        "while true do xpcall(function() while true do end end, function(e) return e end) end",
    ] {
        // The requests from a connection open before the script, then
        // from one opened after, which ends with SCRIPT KILL.
        let run = |s: &ServerProcess| transcript(s, &["EVAL", script, "0"], &during, &last, &after);
        compare(script, run(&reference), run(&target));
    }
}

/// What one server answers around a long script: `start` sent on its own
/// connection; past the threshold, `first` from a connection open before
/// it started, then `second` (ending with a KILL) from one opened after;
/// then the script's own reply, then `after`.
fn transcript(
    server: &ServerProcess,
    start: &[&str],
    first: &[Vec<&str>],
    second: &[Vec<&str>],
    after: &[Vec<&str>],
) -> Vec<(String, Value)> {
    let mut setup = server.connect();
    set_threshold(&mut setup);
    let lib = "#!lua name=busylib\n\
        redis.register_function('spin', function(k, a) while true do end end)";
    assert!(setup
        .cmd(&["FUNCTION", "LOAD", "REPLACE", lib])
        .is_ok_and(|v| !v.is_error()));
    assert_eq!(
        setup.cmd(&["CONFIG", "RESETSTAT"]).ok(),
        Some(Value::Simple(b"OK".to_vec()))
    );
    let mut before = server.connect();
    let mut runner = server.connect();
    runner.send_all(&[start.to_vec()]).expect("send the script");
    std::thread::sleep(Duration::from_millis(THRESHOLD_MS + 150));
    let mut late = server.connect();
    let mut out = Vec::new();
    for (who, c, cmds) in [("before", &mut before, first), ("late", &mut late, second)] {
        for cmd in cmds {
            let v = c.cmd(cmd).expect("a reply while busy");
            out.push((format!("{who}: {}", cmd.join(" ")), without_duration(v)));
        }
    }
    let v = runner.read_reply().expect("the script's reply");
    out.push(("script".to_string(), v));
    for cmd in after {
        let v = setup.cmd(cmd).expect("a reply after");
        out.push((format!("after: {}", cmd.join(" ")), v));
    }
    out
}

/// A library's function: FUNCTION STATS shows it running (name, command),
/// SCRIPT KILL is refused for it, FUNCTION KILL stops it.
#[test]
fn a_looping_function_is_shown_and_stopped_by_function_kill() {
    let dir = Scratch::new("busy-fcall");
    let (reference, target) = start_both(&dir, &[]);
    let first: Vec<Vec<&str>> = vec![
        vec!["GET", "x"],
        vec!["FUNCTION", "STATS"],
        vec!["SCRIPT", "KILL"],
        vec!["SHUTDOWN"],
    ];
    let second: Vec<Vec<&str>> = vec![vec!["FUNCTION", "STATS"], vec!["FUNCTION", "KILL"]];
    let after: Vec<Vec<&str>> = vec![
        vec!["FUNCTION", "KILL"],
        vec!["FUNCTION", "STATS"],
        vec!["INFO", "errorstats"],
    ];
    let run = |s: &ServerProcess| {
        transcript(
            s,
            &["FCALL", "spin", "1", "k", "a"],
            &first,
            &second,
            &after,
        )
    };
    compare("fcall", run(&reference), run(&target));
}

/// A script that wrote cannot be killed (UNKILLABLE to both KILLs);
/// SHUTDOWN NOSAVE stops the server, and the script's write, never
/// propagated, is not there after a restart from the append-only file
/// (the writes before the script are).
#[test]
fn a_script_that_wrote_is_unkillable_and_shutdown_nosave_loses_it() {
    let dir = Scratch::new("busy-write");
    let extra = ["--appendonly", "yes", "--appendfsync", "always"];
    let (mut reference, mut target) = start_both(&dir, &extra);
    let script = "redis.call('SET', 'partial', '1') while true do end";
    let mut transcripts = Vec::new();
    for s in [&mut reference, &mut target] {
        let mut setup = s.connect();
        set_threshold(&mut setup);
        assert_eq!(
            setup.cmd(&["SET", "before", "1"]).ok(),
            Some(Value::Simple(b"OK".to_vec()))
        );
        let mut runner = s.connect();
        runner
            .send_all(&[vec!["EVAL", script, "0"]])
            .expect("send the script");
        std::thread::sleep(Duration::from_millis(THRESHOLD_MS + 150));
        let mut other = s.connect();
        let mut t = Vec::new();
        for cmd in [
            vec!["SCRIPT", "KILL"],
            vec!["FUNCTION", "KILL"],
            vec!["GET", "before"],
        ] {
            t.push(other.cmd(&cmd).expect("a reply"));
        }
        // SHUTDOWN NOSAVE: no reply, the connection closes, the process
        // ends.
        let _ = other.cmd(&["SHUTDOWN", "NOSAVE"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.exited().is_none() {
            assert!(Instant::now() < deadline, "{} did not stop", s.name);
            std::thread::sleep(Duration::from_millis(20));
        }
        transcripts.push(t);
    }
    assert_eq!(transcripts[0], transcripts[1]);
    assert!(
        matches!(&transcripts[1][0], Value::Error(e) if e.starts_with(b"UNKILLABLE")),
        "{:?}",
        transcripts[1]
    );
    // Restarted from their files: the write before, not the script's.
    let (reference, target) = start_both(&dir, &extra);
    for s in [&reference, &target] {
        let mut c = s.connect();
        assert_eq!(
            c.cmd(&["MGET", "before", "partial"]).ok(),
            Some(Value::Array(vec![Value::Bulk(b"1".to_vec()), Value::Nil])),
            "{}",
            s.name
        );
    }
}

/// A WATCH answered while a script runs, on a key the script then
/// writes: the transaction after it fails, as in Redis.
#[test]
fn a_watch_answered_while_busy_sees_the_scripts_later_write() {
    let dir = Scratch::new("busy-watch");
    let (reference, target) = start_both(&dir, &[]);
    // Spins 1 s on the clock, then writes x.
    let script = "local t = redis.call('TIME') local start = t[1] * 1000000 + t[2] \
        repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 1000000 \
        redis.call('SET', 'x', 'by-script') return 1";
    let mut got = Vec::new();
    for s in [&reference, &target] {
        let mut setup = s.connect();
        set_threshold(&mut setup);
        let mut runner = s.connect();
        runner.send_all(&[vec!["EVAL", script, "0"]]).expect("send");
        std::thread::sleep(Duration::from_millis(THRESHOLD_MS + 100));
        let mut c = s.connect();
        let mut t = vec![c.cmd(&["WATCH", "x"]).expect("WATCH")];
        t.push(runner.read_reply().expect("the script's reply"));
        for cmd in [
            vec!["MULTI"],
            vec!["SET", "x", "by-client"],
            vec!["EXEC"],
            vec!["GET", "x"],
        ] {
            t.push(c.cmd(&cmd).expect("reply"));
        }
        got.push(t);
    }
    assert_eq!(got[0], got[1]);
    assert_eq!(got[1][4], Value::NilArray, "{:?}", got[1]);
}

/// Rights are checked before BUSY: a user without SHUTDOWN or SCRIPT may
/// not stop the server or the script while it runs.
#[test]
fn a_user_without_the_rights_cannot_kill_or_shutdown_while_busy() {
    let dir = Scratch::new("busy-acl");
    let (reference, target) = start_both(&dir, &[]);
    let during: Vec<Vec<&str>> = vec![
        vec!["SHUTDOWN", "NOSAVE"],
        vec!["SCRIPT", "KILL"],
        vec!["GET", "k"],
    ];
    let run = |s: &ServerProcess| {
        let mut setup = s.connect();
        set_threshold(&mut setup);
        assert_eq!(
            setup
                .cmd(&["ACL", "SETUSER", "reader", "on", ">pw", "~*", "+get"])
                .ok(),
            Some(Value::Simple(b"OK".to_vec()))
        );
        let mut limited = s.connect();
        assert_eq!(
            limited.cmd(&["AUTH", "reader", "pw"]).ok(),
            Some(Value::Simple(b"OK".to_vec()))
        );
        let mut runner = s.connect();
        runner
            .send_all(&[vec!["EVAL", "while true do end", "0"]])
            .expect("send");
        std::thread::sleep(Duration::from_millis(THRESHOLD_MS + 150));
        let mut t: Vec<Value> = during
            .iter()
            .map(|c| limited.cmd(c).expect("reply"))
            .collect();
        t.push(setup.cmd(&["SCRIPT", "KILL"]).expect("kill"));
        t.push(runner.read_reply().expect("the script's reply"));
        t.push(setup.cmd(&["PING"]).expect("ping"));
        t
    };
    let (r, a) = (run(&reference), run(&target));
    assert_eq!(r, a);
    assert!(
        matches!(&a[0], Value::Error(e) if e.starts_with(b"NOPERM")),
        "{a:?}"
    );
}
