//! `anykv bench load` against real servers: the reference redis-server and
//! anykv, with a password. What it reports is checked against what the
//! servers saw (their own command counts and keys), and the open loop's
//! latencies against a stall the test makes (SIGSTOP): a server that stops
//! for 600 ms must show in the percentiles of the requests due meanwhile,
//! not only in the few that were in flight.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{start_anykv_with, start_redis, ServerProcess};

fn load(target: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(common::anykv_bin())
        .args(["bench", "load", "--target", target, "--json"])
        .args(args)
        .output()
        .expect("running anykv bench load");
    assert!(
        out.status.success(),
        "bench load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench load --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn calls(s: &ServerProcess, password: Option<&str>, cmd: &str) -> u64 {
    let mut c = s.connect();
    if let Some(p) = password {
        c.cmd(&["AUTH", p]).expect("AUTH");
    }
    common::cmdstat_calls(&mut c, cmd)
}

fn dbsize(s: &ServerProcess, password: Option<&str>) -> i64 {
    let mut c = s.connect();
    if let Some(p) = password {
        c.cmd(&["AUTH", p]).expect("AUTH");
    }
    match c.cmd(&["DBSIZE"]) {
        Ok(common::Value::Int(n)) => n,
        other => panic!("DBSIZE: {other:?}"),
    }
}

/// A count-limited closed-loop run: every request answered and counted
/// once by the server; the mix and the key space as asked.
fn counted_run(s: &ServerProcess, target: &str, password: Option<&str>) {
    let r = load(
        target,
        &[
            "-c",
            "8",
            "-P",
            "4",
            "-n",
            "4000",
            "--keys",
            "50",
            "--read-ratio",
            "0.25",
            "--distribution",
            "zipfian",
            "--value-size",
            "10",
            "--seed",
            "3",
        ],
    );
    assert_eq!(r["requests"], 4000, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    let reads = r["reads"]["count"].as_u64().expect("reads");
    let writes = r["writes"]["count"].as_u64().expect("writes");
    assert_eq!(reads + writes, 4000);
    assert!((800..1200).contains(&reads), "a quarter reads: {reads}");
    assert_eq!(
        calls(s, password, "get"),
        reads,
        "the server saw each GET once"
    );
    assert_eq!(
        calls(s, password, "set"),
        writes,
        "the server saw each SET once"
    );
    let keys = dbsize(s, password);
    assert!(keys > 0 && keys <= 50, "{keys} keys in a key space of 50");
    assert!(r["ops_per_sec"].as_f64().is_some_and(|x| x > 0.0));
    for q in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
        assert!(r["all"][q].as_u64().is_some_and(|v| v >= 1), "{q}: {r}");
    }
    assert!(r["all"]["p50_us"].as_u64() <= r["all"]["p99_us"].as_u64());
}

#[test]
fn bench_load_counts_what_the_server_sees() {
    let redis = start_redis(&["--requirepass".into(), "pw".into()]);
    counted_run(
        &redis,
        &format!("redis://:pw@127.0.0.1:{}", redis.port),
        Some("pw"),
    );
    let anykv = start_anykv_with(&common::anykv_bin(), &["--requirepass", "pw"]);
    counted_run(
        &anykv,
        &format!("redis://default:pw@127.0.0.1:{}", anykv.port),
        Some("pw"),
    );
    // A wrong password is an error that says so, not a run of errors.
    let out = Command::new(common::anykv_bin())
        .args(["bench", "load", "-n", "10", "--target"])
        .arg(format!("redis://:wrong@127.0.0.1:{}", anykv.port))
        .output()
        .expect("bench load");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("AUTH"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Open loop at 2,000 requests a second for 3 s, with the server stopped
/// for 600 ms in the middle and one request in flight per connection
/// (`--max-inflight 1`: during the stall the generator cannot send, as a
/// closed-loop tool could not): about a fifth of the requests were due
/// during the stall, so p90 must be well above a normal request's time.
/// Timed from when they were sent, only the 4 in flight would show it.
/// The rate is kept (the count matches rate × duration).
#[test]
fn bench_load_open_loop_charges_a_stall_to_every_request_due_in_it() {
    let redis = start_redis(&[]);
    let target = format!("127.0.0.1:{}", redis.port);
    let pid = redis.pid();
    let stall = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1200));
        let stop = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status();
        std::thread::sleep(Duration::from_millis(600));
        let cont = Command::new("kill")
            .args(["-CONT", &pid.to_string()])
            .status();
        stop.is_ok_and(|s| s.success()) && cont.is_ok_and(|s| s.success())
    });
    let r = load(
        &target,
        &[
            "-c",
            "4",
            "--rate",
            "2000",
            "--duration",
            "3",
            "--read-ratio",
            "0.5",
            "--max-inflight",
            "1",
        ],
    );
    assert!(stall.join().expect("stall thread"), "the stall happened");
    let n = r["requests"].as_u64().expect("requests");
    assert!((5400..=6100).contains(&n), "2,000/s for 3 s sent {n}");
    let p90 = r["all"]["p90_us"].as_u64().expect("p90");
    let p50 = r["all"]["p50_us"].as_u64().expect("p50");
    let max = r["all"]["max_us"].as_u64().expect("max");
    assert!(max >= 550_000, "the stall's first request waited {max} µs");
    assert!(
        p90 >= 100_000,
        "requests due during a 600 ms stall are a fifth of the run: p90 {p90} µs"
    );
    assert!(
        p50 < 50_000,
        "most requests were not in the stall: p50 {p50} µs"
    );
}
