//! `anykv router --upstream ...` in front of real redis-servers (a primary
//! and a replica): shared upstream connections, reads served by the
//! replica, read-your-writes against a lagging replica, pipelines in
//! order, transactions, blocking commands and pub/sub across the router,
//! a slow client's bounded memory, TLS, and a primary change.

mod common;

use common::{RespConn, ServerProcess, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn bulk(s: &str) -> Value {
    Value::Bulk(s.as_bytes().to_vec())
}

fn ok() -> Value {
    Value::Simple(b"OK".to_vec())
}

/// A redis-server replica of `primary_port`.
fn start_replica(primary_port: u16) -> ServerProcess {
    common::start_redis(&[
        "--replicaof".to_string(),
        "127.0.0.1".to_string(),
        primary_port.to_string(),
    ])
}

/// `anykv router` on loopback in front of `upstreams`.
fn start_router(upstreams: &[u16], extra: &[&str]) -> ServerProcess {
    let bin = common::anykv_bin();
    let ups: Vec<String> = upstreams.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    common::spawn_server("anykv router", &|port| {
        let mut c = Command::new(&bin);
        c.args(["router", "--port", &port.to_string(), "--bind", "127.0.0.1"]);
        for u in &ups {
            c.args(["--upstream", u]);
        }
        c.args(&extra);
        c
    })
}

#[test]
fn listens_on_ipv4_and_ipv6_by_default() {
    let primary = common::start_redis(&[]);
    let bin = common::anykv_bin();
    let up = format!("127.0.0.1:{}", primary.port);
    let router = common::spawn_server("anykv router", &|port| {
        let mut c = Command::new(&bin);
        c.args(["router", "--port", &port.to_string(), "--upstream", &up]);
        c
    });
    let mut v6 = RespConn::connect_addr(format!("[::1]:{}", router.port).parse().unwrap())
        .expect("the router listens on [::]");
    assert_eq!(v6.cmd(&["SET", "six", "6"]).unwrap(), ok());
    let mut v4 = router.connect();
    assert_eq!(v4.cmd(&["GET", "six"]).unwrap(), bulk("6"));
}

/// Waits until every replica connection in `cs` reads `key` as `value`.
fn replicas_have(cs: &mut [&mut RespConn], key: &str, value: &str) {
    for c in cs.iter_mut() {
        common::poll_every(
            Duration::from_millis(10),
            Duration::from_secs(10),
            "the replicas to have the write",
            || (c.cmd(&["GET", key]).ok()? == bulk(value)).then_some(()),
        );
    }
}

/// Sends `sig` (`-STOP`, `-CONT`, ...) to process `pid`.
fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// Waits until the replica's link to its primary is up.
fn wait_linked(replica: &ServerProcess) {
    let mut c = replica.connect();
    common::poll_every(
        Duration::from_millis(20),
        Duration::from_secs(20),
        "replica link up",
        || match c.cmd(&["INFO", "replication"]) {
            Ok(Value::Bulk(b)) if String::from_utf8_lossy(&b).contains("master_link_status:up") => {
                Some(())
            }
            _ => None,
        },
    );
}

use common::cmdstat_calls as calls;

/// Lines of CLIENT LIST.
fn client_count(c: &mut RespConn) -> usize {
    match c.cmd(&["CLIENT", "LIST"]) {
        Ok(Value::Bulk(b)) => String::from_utf8_lossy(&b).lines().count(),
        other => panic!("CLIENT LIST: {other:?}"),
    }
}

/// Lets the router's ROLE polls see the primary's latest offset on the
/// replica (several poll rounds at the default 100 ms).
fn settle() {
    std::thread::sleep(Duration::from_millis(400));
}

#[test]
fn thousand_clients_share_a_handful_of_upstream_connections() {
    let primary = common::start_redis(&[]);
    let replica = start_replica(primary.port);
    wait_linked(&replica);
    // Two workers whatever the machine's cores: each has its own shared
    // connection per upstream.
    let router = start_router(&[primary.port, replica.port], &["--threads", "2"]);
    let mut clients: Vec<RespConn> = (0..1000).map(|_| router.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let k = format!("k{i}");
        let v = format!("v{i}");
        let r = c.pipeline(&[vec!["SET", &k, &v], vec!["GET", &k]]).unwrap();
        assert_eq!(r, vec![ok(), bulk(&v)], "client {i}");
    }
    // All 1000 are connected at once: the router lists them ...
    let mut admin = router.connect();
    assert!(client_count(&mut admin) >= 1001);
    // ... while the upstreams see only the router's few connections (a
    // shared one per worker, the ROLE poller; the test's own; the
    // replica's link).
    let mut p = primary.connect();
    let n = client_count(&mut p);
    assert!(n <= 6, "primary has {n} clients for 1000 router clients");
    let mut r = replica.connect();
    let n = client_count(&mut r);
    assert!(n <= 6, "replica has {n} clients for 1000 router clients");
    // Every reply was right and every client can still talk.
    for (i, c) in clients.iter_mut().enumerate().step_by(97) {
        assert_eq!(
            c.cmd(&["GET", &format!("k{i}")]).unwrap(),
            bulk(&format!("v{i}"))
        );
    }
}

#[test]
fn reads_are_served_by_the_replica_once_it_has_the_write() {
    let primary = common::start_redis(&[]);
    let replica = start_replica(primary.port);
    wait_linked(&replica);
    let router = start_router(&[primary.port, replica.port], &[]);
    let mut c = router.connect();
    assert_eq!(c.cmd(&["SET", "k", "v1"]).unwrap(), ok());
    let mut rc = replica.connect();
    let mut pc = primary.connect();
    common::poll_every(
        Duration::from_millis(10),
        Duration::from_secs(10),
        "replica has the write",
        || (rc.cmd(&["GET", "k"]).ok()? == bulk("v1")).then_some(()),
    );
    settle();
    let (r0, p0) = (calls(&mut rc, "get"), calls(&mut pc, "get"));
    for _ in 0..20 {
        assert_eq!(c.cmd(&["GET", "k"]).unwrap(), bulk("v1"));
    }
    let (r1, p1) = (calls(&mut rc, "get"), calls(&mut pc, "get"));
    assert_eq!(r1 - r0, 20, "the replica served the reads");
    assert_eq!(p1, p0, "the primary served none of them");
    // With --consistency strong every read goes to the primary.
    let strong = start_router(&[primary.port, replica.port], &["--consistency", "strong"]);
    let mut s = strong.connect();
    let p0 = calls(&mut pc, "get");
    for _ in 0..5 {
        assert_eq!(s.cmd(&["GET", "k"]).unwrap(), bulk("v1"));
    }
    assert_eq!(calls(&mut pc, "get") - p0, 5);
}

#[test]
fn a_replica_that_stops_answering_is_skipped() {
    let primary = common::start_redis(&[]);
    let replica = start_replica(primary.port);
    wait_linked(&replica);
    let router = start_router(&[primary.port, replica.port], &[]);
    let mut c = router.connect();
    assert_eq!(c.cmd(&["SET", "k", "v"]).unwrap(), ok());
    settle();
    let mut rc = replica.connect();
    let before = calls(&mut rc, "get");
    assert_eq!(c.cmd(&["GET", "k"]).unwrap(), bulk("v"));
    assert_eq!(
        calls(&mut rc, "get"),
        before + 1,
        "the replica served the read"
    );
    // The replica freezes (its process stopped): reads already on its
    // connection and the ones after go to the primary within about the
    // upstream timeout, and no client sees an error.
    let stop = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &replica.pid().to_string()])
            .status()
            .unwrap()
            .success())
    };
    stop("-STOP");
    let t = Instant::now();
    for _ in 0..20 {
        assert_eq!(c.cmd(&["GET", "k"]).unwrap(), bulk("v"));
    }
    let took = t.elapsed();
    stop("-CONT");
    assert!(
        took < Duration::from_secs(3),
        "reads waited {took:?} for a frozen replica"
    );
}

/// A TCP relay that delays every byte by `delay` (the replica's link to
/// the primary goes through it, so the replica lags).
fn delay_proxy(to: u16, delay: Duration) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for inc in l.incoming() {
            let Ok(a) = inc else { return };
            let Ok(b) = TcpStream::connect(("127.0.0.1", to)) else {
                return;
            };
            for (mut from, mut into) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)] {
                let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                });
                std::thread::spawn(move || {
                    for (at, bytes) in rx {
                        let due = at + delay;
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        if into.write_all(&bytes).is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    port
}

#[test]
fn read_your_writes_holds_while_the_replica_lags() {
    let primary = common::start_redis(&[]);
    let via = delay_proxy(primary.port, Duration::from_millis(150));
    let replica = start_replica(via);
    wait_linked(&replica);
    let router = start_router(&[primary.port, replica.port], &[]);
    let mut writer = router.connect();
    let mut other = router.connect();
    let mut rc = replica.connect();
    let get0 = calls(&mut rc, "get");
    // Seed, and let the replica catch up so the other connection reads it.
    assert_eq!(writer.cmd(&["SET", "k", "0"]).unwrap(), ok());
    common::poll_every(
        Duration::from_millis(10),
        Duration::from_secs(10),
        "replica has k",
        || (rc.cmd(&["GET", "k"]).ok()? == bulk("0")).then_some(()),
    );
    settle();
    let mut stale = 0;
    for i in 1..=100 {
        let v = i.to_string();
        assert_eq!(writer.cmd(&["SET", "k", &v]).unwrap(), ok());
        // The writer sees its write, every time.
        assert_eq!(writer.cmd(&["GET", "k"]).unwrap(), bulk(&v), "round {i}");
        // A connection that never wrote reads the replica, 150 ms behind.
        let seen = other.cmd(&["GET", "k"]).unwrap();
        if seen != bulk(&v) {
            stale += 1;
        }
    }
    assert!(
        stale > 50,
        "the other connection saw the new value {} times of 100: its reads did not go to the lagging replica",
        100 - stale
    );
    // The replica served the other connection's reads (and the test's).
    assert!(calls(&mut rc, "get") - get0 >= 50);
}

/// With `--ryw-wait-ms`, a read after the client's write waits for the
/// replica to catch up (150 ms behind) instead of going to the primary:
/// the writer still sees its write every time, from the replica.
#[test]
fn with_ryw_wait_a_read_waits_for_its_replica() {
    let primary = common::start_redis(&[]);
    let via = delay_proxy(primary.port, Duration::from_millis(150));
    let replica = start_replica(via);
    wait_linked(&replica);
    let router = start_router(&[primary.port, replica.port], &["--ryw-wait-ms", "2000"]);
    let mut writer = router.connect();
    let mut rc = replica.connect();
    let mut pc = primary.connect();
    let (rget0, pget0) = (calls(&mut rc, "get"), calls(&mut pc, "get"));
    let t0 = Instant::now();
    for i in 1..=10 {
        let v = i.to_string();
        assert_eq!(writer.cmd(&["SET", "k", &v]).unwrap(), ok());
        assert_eq!(writer.cmd(&["GET", "k"]).unwrap(), bulk(&v), "round {i}");
    }
    // Each read waited for the write to cross the 150 ms link.
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(
        calls(&mut pc, "get") - pget0,
        0,
        "a read went to the primary"
    );
    assert_eq!(
        calls(&mut rc, "get") - rget0,
        10,
        "the replica served the reads"
    );
}

#[test]
fn pipelines_of_mixed_reads_and_writes_keep_their_order() {
    let primary = common::start_redis(&[]);
    let replica = start_replica(primary.port);
    wait_linked(&replica);
    let router = start_router(&[primary.port, replica.port], &[]);
    let mut c = router.connect();
    let mut cmds: Vec<Vec<String>> = Vec::new();
    let mut want = Vec::new();
    for i in 0..400 {
        let v = i.to_string();
        cmds.push(vec!["SET".into(), "k".into(), v.clone()]);
        want.push(ok());
        cmds.push(vec!["GET".into(), "k".into()]);
        want.push(bulk(&v));
        cmds.push(vec!["INCR".into(), "n".into()]);
        want.push(Value::Int(i + 1));
        cmds.push(vec!["PING".into()]);
        want.push(Value::Simple(b"PONG".to_vec()));
        cmds.push(vec!["SELECT".into(), ((i % 3) as u8).to_string()]);
        want.push(ok());
        cmds.push(vec!["EXISTS".into(), "n".into()]);
        // `n` lives in database 0 only.
        want.push(Value::Int(i64::from(i % 3 == 0)));
        cmds.push(vec!["SELECT".into(), "0".into()]);
        want.push(ok());
    }
    let refs: Vec<Vec<&str>> = cmds
        .iter()
        .map(|c| c.iter().map(|s| s.as_str()).collect())
        .collect();
    let got = c.pipeline(&refs).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "reply {i} to {:?}", cmds[i]);
    }
}

#[test]
fn transactions_blocking_and_pubsub_across_the_router() {
    let primary = common::start_redis(&[]);
    let replica = start_replica(primary.port);
    wait_linked(&replica);
    let router = start_router(&[primary.port, replica.port], &[]);
    // MULTI/EXEC, and WATCH seeing another client's write.
    let mut a = router.connect();
    let mut b = router.connect();
    let r = a
        .pipeline(&[
            vec!["MULTI"],
            vec!["SET", "t", "1"],
            vec!["INCR", "t"],
            vec!["EXEC"],
        ])
        .unwrap();
    assert_eq!(r[3], Value::Array(vec![ok(), Value::Int(2)]));
    assert_eq!(a.cmd(&["WATCH", "t"]).unwrap(), ok());
    assert_eq!(b.cmd(&["SET", "t", "9"]).unwrap(), ok());
    let r = a
        .pipeline(&[vec!["MULTI"], vec!["SET", "t", "x"], vec!["EXEC"]])
        .unwrap();
    assert_eq!(
        r[2],
        Value::NilArray,
        "WATCH did not see the other client's write"
    );
    assert_eq!(a.cmd(&["GET", "t"]).unwrap(), bulk("9"));
    // EXEC after a refused command aborts, as Redis.
    let r = a
        .pipeline(&[
            vec!["MULTI"],
            vec!["SELECT", "1"],
            vec!["SET", "t", "y"],
            vec!["EXEC"],
        ])
        .unwrap();
    assert!(r[1].is_error() && r[3].is_error(), "{r:?}");
    assert_eq!(a.cmd(&["GET", "t"]).unwrap(), bulk("9"));

    // BLPOP blocks its client only: others keep being served meanwhile.
    let port = router.port;
    let blocked = Arc::new(AtomicBool::new(true));
    let flag = blocked.clone();
    let waiter = std::thread::spawn(move || {
        let mut c = RespConn::connect(port).unwrap();
        let r = c.cmd(&["BLPOP", "q", "0"]).unwrap();
        flag.store(false, Ordering::SeqCst);
        r
    });
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    for i in 0..50 {
        assert_eq!(b.cmd(&["SET", "x", &i.to_string()]).unwrap(), ok());
        assert_eq!(b.cmd(&["GET", "x"]).unwrap(), bulk(&i.to_string()));
    }
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(
        blocked.load(Ordering::SeqCst),
        "BLPOP returned before any push"
    );
    assert_eq!(b.cmd(&["LPUSH", "q", "job"]).unwrap(), Value::Int(1));
    let r = waiter.join().unwrap();
    assert_eq!(r, Value::Array(vec![bulk("q"), bulk("job")]));

    // UNSUBSCRIBE of a client subscribed to nothing answers once per
    // channel, as Redis, and leaves the shared connection in step.
    let r = b
        .pipeline(&[vec!["UNSUBSCRIBE", "a", "b"], vec!["GET", "x"]])
        .unwrap();
    assert!(
        matches!(&r[0], Value::Array(v) if v[1] == bulk("a")),
        "{r:?}"
    );
    assert_eq!(b.read_reply().unwrap(), bulk("49"));
    assert_eq!(b.cmd(&["SET", "x", "after"]).unwrap(), ok());
    assert_eq!(b.cmd(&["GET", "x"]).unwrap(), bulk("after"));

    // A client that leaves while blocked takes nothing with it: its own
    // connection goes, so a later push stays in the list.
    {
        let mut gone = TcpStream::connect(("127.0.0.1", port)).unwrap();
        gone.write_all(b"*3\r\n$5\r\nBLPOP\r\n$2\r\nq2\r\n$1\r\n0\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(b.cmd(&["LPUSH", "q2", "v"]).unwrap(), Value::Int(1));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(b.cmd(&["LLEN", "q2"]).unwrap(), Value::Int(1));

    // Pub/sub through the router, both sides.
    let mut sub = router.connect();
    let r = sub.cmd(&["SUBSCRIBE", "news"]).unwrap();
    assert_eq!(
        r,
        Value::Array(vec![bulk("subscribe"), bulk("news"), Value::Int(1)])
    );
    let receivers = common::poll_every(
        Duration::from_millis(20),
        Duration::from_secs(5),
        "subscriber registered",
        || match b.cmd(&["PUBLISH", "news", "hello"]).ok()? {
            Value::Int(n) if n >= 1 => Some(n),
            _ => None,
        },
    );
    assert_eq!(receivers, 1);
    let msg = sub.read_reply().unwrap();
    assert_eq!(
        msg,
        Value::Array(vec![bulk("message"), bulk("news"), bulk("hello")])
    );
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_client_that_does_not_read_cannot_grow_the_router() {
    let primary = common::start_redis(&[]);
    let router = start_router(&[primary.port], &["--client-buffer-limit", "8388608"]);
    let mut c = router.connect();
    let big = "x".repeat(1 << 20);
    assert_eq!(c.cmd(&["SET", "big", &big]).unwrap(), ok());
    let before = rss_kib(router.pid());
    // 2,000 GETs of 1 MiB (2 GiB of replies), never read.
    let mut slow = TcpStream::connect(("127.0.0.1", router.port)).unwrap();
    slow.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let req = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n";
    let mut sent = 0;
    for _ in 0..2000 {
        if slow.write_all(req).is_err() {
            break;
        }
        sent += 1;
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(router.pid());
    assert!(sent > 100, "only {sent} requests went out");
    assert!(
        after < before + 200 * 1024,
        "router RSS grew from {before} KiB to {after} KiB for an unread client"
    );
    // Everyone else is still served.
    let t = Instant::now();
    assert_eq!(c.cmd(&["SET", "k", "v"]).unwrap(), ok());
    assert_eq!(c.cmd(&["GET", "k"]).unwrap(), bulk("v"));
    assert!(t.elapsed() < Duration::from_secs(1));
    drop(slow);
}

/// An upstream that stops reading (SIGSTOP) while a client pipelines
/// large writes: the router holds at most `--upstream-queue-bytes` of
/// them and stops reading the client, then delivers every one in order
/// once the upstream is back.
#[test]
fn a_slow_upstream_cannot_grow_the_router() {
    let primary = common::start_redis(&[]);
    let router = start_router(
        &[primary.port],
        // Slow, not gone: the router keeps waiting for it.
        &[
            "--threads",
            "1",
            "--upstream-queue-bytes",
            "4194304",
            "--upstream-timeout-ms",
            "60000",
        ],
    );
    let mut c = router.connect();
    assert_eq!(c.cmd(&["SET", "warm", "1"]).unwrap(), ok());
    let before = rss_kib(router.pid());
    let signal = |sig: &str| signal(primary.pid(), sig);
    signal("-STOP");
    // 8 clients, each 32 SETs of 256 KiB (within a client's own window
    // of requests in flight): 64 MiB the upstream does not take for now.
    const CLIENTS: usize = 8;
    const N: usize = 32;
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let sent = sent.clone();
            let mut s = TcpStream::connect(("127.0.0.1", router.port)).unwrap();
            std::thread::spawn(move || {
                let value = "v".repeat(256 * 1024);
                for i in 0..N {
                    let req = common::resp_str(&["SET", &format!("big{w}:{i}"), &value]);
                    s.write_all(&req).unwrap();
                    sent.fetch_add(req.len(), Ordering::SeqCst);
                }
                s
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let during = rss_kib(router.pid());
    let pushed = sent.load(Ordering::SeqCst);
    signal("-CONT");
    assert!(
        during < before + 24 * 1024,
        "router RSS grew from {before} KiB to {during} KiB behind a stopped upstream ({pushed} bytes pushed)"
    );
    let want = b"+OK\r\n".repeat(N);
    for w in writers {
        let mut r = w.join().unwrap();
        r.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut got = Vec::new();
        while got.len() < want.len() {
            let mut buf = [0u8; 4096];
            let n = r.read(&mut buf).unwrap();
            assert!(n > 0, "the router closed the connection");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got == want,
            "replies other than {N} +OK: {}",
            String::from_utf8_lossy(&got[..got.len().min(300)])
        );
    }
    assert_eq!(
        c.cmd(&["DBSIZE"]).unwrap(),
        Value::Int((CLIENTS * N) as i64 + 1)
    );
}

#[test]
fn redis_cli_over_tls() {
    let dir = std::env::temp_dir().join(format!("anykv-router-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let primary = common::start_redis(&[]);
    let tls_port = common::free_port();
    let router = start_router(
        &[primary.port],
        &[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
        ],
    );
    let cli = |args: &[&str]| {
        let o = Command::new("redis-cli")
            .args([
                "--tls",
                "--cacert",
                cert.to_str().unwrap(),
                "--sni",
                "localhost",
            ])
            .args(["-h", "127.0.0.1", "-p", &tls_port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(cli(&["SET", "tk", "tv"]), "OK");
    assert_eq!(cli(&["GET", "tk"]), "tv");
    let mut c = router.connect();
    assert_eq!(c.cmd(&["GET", "tk"]).unwrap(), bulk("tv"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_new_primary_is_found_and_no_write_is_applied_twice() {
    let mut primary = common::start_redis(&[]);
    let replica = start_replica(primary.port);
    wait_linked(&replica);
    let router = start_router(&[primary.port, replica.port], &["--primary-wait-ms", "300"]);
    let mut c = router.connect();
    for i in 0..50 {
        assert_eq!(
            c.cmd(&["RPUSH", "log", &i.to_string()]).unwrap(),
            Value::Int(i + 1)
        );
    }
    let mut rc = replica.connect();
    common::poll_every(
        Duration::from_millis(10),
        Duration::from_secs(10),
        "replica has the log",
        || (rc.cmd(&["LLEN", "log"]).ok()? == Value::Int(50)).then_some(()),
    );
    // The primary dies; an operator (or Sentinel) promotes the replica.
    let _ = Command::new("kill")
        .args(["-9", &primary.pid().to_string()])
        .status();
    let _ = primary.exited();
    let mut acked = 50;
    let mut errors = 0;
    let t = Instant::now();
    let mut promoted = false;
    while t.elapsed() < Duration::from_secs(15) {
        if !promoted && t.elapsed() > Duration::from_millis(500) {
            assert_eq!(rc.cmd(&["REPLICAOF", "NO", "ONE"]).unwrap(), ok());
            promoted = true;
        }
        match c.cmd(&["RPUSH", "log", &acked.to_string()]) {
            Ok(Value::Int(n)) => {
                assert_eq!(n, acked + 1, "a write was applied twice or lost");
                acked += 1;
                if acked >= 80 {
                    break;
                }
            }
            Ok(Value::Error(e)) => {
                errors += 1;
                let e = String::from_utf8_lossy(&e).into_owned();
                assert!(
                    e.starts_with("TRYAGAIN") || e.starts_with("ERR router"),
                    "{e}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(acked, 80, "writes did not resume on the new primary");
    assert!(errors > 0, "the primary's death went unnoticed");
    let want: Vec<Value> = (0..80).map(|i| bulk(&i.to_string())).collect();
    assert_eq!(
        rc.cmd(&["LRANGE", "log", "0", "-1"]).unwrap(),
        Value::Array(want)
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}

/// A coordinated `FAILOVER` while clients pipeline writes and reads: the
/// old primary refuses what reaches it after it stepped down
/// (`-READONLY`); the router sends exactly that again to the new primary,
/// so clients see no error, every write applied once, and each read after
/// its own write sees it.
#[test]
fn a_primary_that_steps_down_never_shows_clients_readonly() {
    let a = common::start_redis(&[]);
    let b = start_replica(a.port);
    wait_linked(&b);
    let maddr = format!("127.0.0.1:{}", common::free_port());
    // Slow polls: writes keep going to the old primary after it stepped
    // down unless the router notices from the refusals themselves.
    let router = start_router(
        &[a.port, b.port],
        &["--metrics-addr", &maddr, "--role-interval-ms", "1000"],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|t| {
            let mut c = router.connect();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let key = format!("log{t}");
                let mut n = 0i64;
                // Pipelines of 60 requests: two batches on the way to
                // the primary at once, the second starting with a read
                // (batches are 32 requests), which may reach the old
                // primary after a write in the first was refused.
                let mut incrs = 0;
                while !stop.load(Ordering::Relaxed) {
                    let vals: Vec<String> = (n..n + 20).map(|i| i.to_string()).collect();
                    let mut p = Vec::new();
                    for v in &vals {
                        p.push(vec!["RPUSH", key.as_str(), v.as_str()]);
                        p.push(vec!["INCR", "total"]);
                        p.push(vec!["LLEN", key.as_str()]);
                    }
                    let got = c.pipeline(&p).unwrap();
                    for (i, r) in got.chunks(3).enumerate() {
                        let want = Value::Int(n + i as i64 + 1);
                        assert_eq!(r[0], want, "client {t}: RPUSH {}: {r:?}", n + i as i64);
                        assert!(matches!(r[1], Value::Int(_)), "client {t}: {r:?}");
                        assert_eq!(r[2], want, "client {t}: LLEN after {}: {r:?}", n + i as i64);
                    }
                    n += 20;
                    incrs += 20;
                }
                assert_eq!(incrs, n);
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut ac = a.connect();
    assert_eq!(ac.cmd(&["FAILOVER"]).unwrap(), ok());
    let mut bc = b.connect();
    common::poll_every(
        Duration::from_millis(10),
        Duration::from_secs(10),
        "the replica to take over",
        || match bc.cmd(&["ROLE"]).ok()? {
            Value::Array(v) if v.first() == Some(&bulk("master")) => Some(()),
            _ => None,
        },
    );
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let counts: Vec<i64> = clients
        .into_iter()
        .map(|h| h.join().expect("a client saw an error or a wrong reply"))
        .collect();
    for (t, n) in counts.iter().enumerate() {
        let want: Vec<Value> = (0..*n).map(|i| bulk(&i.to_string())).collect();
        assert_eq!(
            bc.cmd(&["LRANGE", &format!("log{t}"), "0", "-1"]).unwrap(),
            Value::Array(want),
            "client {t}'s writes on the new primary"
        );
    }
    assert_eq!(
        bc.cmd(&["GET", "total"]).unwrap(),
        bulk(&counts.iter().sum::<i64>().to_string()),
        "an INCR applied twice or lost"
    );
    match ac.cmd(&["ROLE"]).unwrap() {
        Value::Array(v) => assert_eq!(v.first(), Some(&bulk("slave"))),
        other => panic!("ROLE: {other:?}"),
    }
    let page = common::http_get(&maddr, "/metrics").unwrap();
    let retried = common::metric(&page, "anykv_router_write_retries_total").unwrap_or(0.0);
    assert!(
        retried > 0.0,
        "no write reached the old primary after it stepped down, so nothing was tested: {page}"
    );
}

/// `WAIT` counts the replicas that have the client's own writes, though
/// they went over shared connections: not replicas that merely exist.
#[test]
fn wait_counts_replicas_that_have_the_clients_writes() {
    let a = common::start_redis(&[]);
    let b = start_replica(a.port);
    wait_linked(&b);
    // One worker: clients share its idle dedicated connections, and Redis
    // counts against a connection's own last command.
    let router = start_router(&[a.port, b.port], &["--threads", "1"]);
    let mut c = router.connect();
    assert_eq!(c.cmd(&["SET", "k", "1"]).unwrap(), ok());
    let t = Instant::now();
    assert_eq!(c.cmd(&["WAIT", "1", "5000"]).unwrap(), Value::Int(1));
    // The primary was asked to hurry its replica's acknowledgement
    // (replicas acknowledge on their own only once a second).
    assert!(
        t.elapsed() < Duration::from_millis(800),
        "took {:?}",
        t.elapsed()
    );

    // Another client's WAIT leaves an idle connection whose last command
    // the replica will have acknowledged (its own once-a-second ack).
    let mut other = router.connect();
    let w = other.cmd(&["WAIT", "0", "0"]).unwrap();
    assert!(matches!(w, Value::Int(0 | 1)), "{w:?}");
    assert_eq!(other.cmd(&["GET", "k"]).unwrap(), bulk("1"));
    std::thread::sleep(Duration::from_millis(1500));

    // A replica that cannot acknowledge: the next write is on the primary
    // only.
    let signal = |sig: &str| signal(b.pid(), sig);
    signal("-STOP");
    assert_eq!(c.cmd(&["SET", "k", "2"]).unwrap(), ok());
    let t = Instant::now();
    let got = c.cmd(&["WAIT", "1", "300"]);
    let took = t.elapsed();
    signal("-CONT");
    assert_eq!(
        got.unwrap(),
        Value::Int(0),
        "WAIT counted a replica without the write"
    );
    assert!(
        took >= Duration::from_millis(290),
        "WAIT 1 300 returned after {took:?}"
    );
    assert_eq!(c.cmd(&["WAIT", "1", "5000"]).unwrap(), Value::Int(1));
    // A client that leaves while its WAIT can never be satisfied takes
    // the WAIT's connection to the primary with it (the router's own
    // WAITs end with ROLE: a connection showing `cmd=wait` is in one).
    let mut pc = a.connect();
    let waiting = |pc: &mut RespConn| match pc.cmd(&["CLIENT", "LIST"]).unwrap() {
        Value::Bulk(t) => String::from_utf8_lossy(&t)
            .lines()
            .filter(|l| l.contains("cmd=wait"))
            .count(),
        other => panic!("{other:?}"),
    };
    let mut leaver = router.connect();
    leaver.send_all(&[vec!["WAIT", "5", "0"]]).unwrap();
    common::poll_every(
        Duration::from_millis(20),
        Duration::from_secs(5),
        "the WAIT on the primary",
        || (waiting(&mut pc) > 0).then_some(()),
    );
    drop(leaver);
    common::poll_every(
        Duration::from_millis(20),
        Duration::from_secs(5),
        "the WAIT's connection to go",
        // A WAIT in progress shows `cmd=wait` nearly all the time (it
        // blocks up to 100 ms between instant ROLEs): gone is ten
        // samples in a row without one.
        || {
            (0..10)
                .all(|_| {
                    std::thread::sleep(Duration::from_millis(50));
                    waiting(&mut pc) == 0
                })
                .then_some(())
        },
    );
    assert_eq!(c.cmd(&["GET", "k"]).unwrap(), bulk("2"));
    // Redis's own errors for what the router does not answer.
    match c.cmd(&["WAIT", "1", "-1"]).unwrap() {
        Value::Error(e) => assert_eq!(e, b"ERR timeout is negative"),
        other => panic!("{other:?}"),
    }
}

/// The `redis` crate, as an application would use it, through the router
/// in front of a primary and its replica: typed commands, pipelines,
/// atomic pipelines, `redis::transaction` (WATCH), SCAN iteration, RESP3,
/// pub/sub and a blocking pop.
#[test]
fn the_redis_crate_works_through_the_router() {
    let primary = common::start_redis(&[]);
    let replica = start_replica(primary.port);
    wait_linked(&replica);
    let router = start_router(&[primary.port, replica.port], &[]);
    let url = format!("redis://127.0.0.1:{}/", router.port);
    with_the_redis_crate(&url, &url);
}

/// The same through `anykv node`s' customer ports, with the database's
/// URL (`redis://shop:TOKEN@node:port/`): on a read region's node (its
/// replica reads, writes forwarded) and on a node holding no copy, the
/// subscriber and the blocked client on the other one.
#[test]
fn the_redis_crate_works_through_anykv_nodes() {
    const ADMIN: &str = "router-admin-token";
    const TOKEN: &str = "router-database-token-0123456789";
    let w = common::three_regions("router-crate", 58, 23200, ADMIN, TOKEN);
    let url = |name: &str| {
        let n = w.node(name).expect("node");
        format!("redis://shop:{TOKEN}@{}/", n.resp)
    };
    // Both nodes let the database's clients in (the replica has its
    // first sync, the other node knows where the copies are).
    for name in ["n2", "n3"] {
        let addr = w.node(name).expect("node").resp;
        common::shop_login(addr, TOKEN, "the database serves", |c| {
            matches!(c.cmd(&["SET", "probe", name]), Ok(Value::Simple(_)))
                && c.cmd(&["GET", "probe"]).ok() == Some(bulk(name))
        });
    }
    // On the primary's node, the database's CLIENT LIST shows its own
    // clients, not the other nodes' replication and forwarding streams,
    // and CLIENT KILL cannot cut them (the runs below go through them).
    let n1 = w.node("n1").expect("n1").resp;
    let mut p = common::shop_login(n1, TOKEN, "login on n1", |_| true);
    match p.cmd(&["CLIENT", "LIST"]) {
        Ok(Value::Bulk(list)) => {
            let list = String::from_utf8_lossy(&list).into_owned();
            assert_eq!(list.lines().count(), 1, "{list}");
            assert!(list.contains("cmd=client|list"), "{list}");
        }
        other => panic!("CLIENT LIST: {other:?}"),
    }
    assert_eq!(
        p.cmd(&["CLIENT", "KILL", "TYPE", "normal"]).ok(),
        Some(Value::Int(0))
    );
    for (at, other) in [("n2", "n3"), ("n3", "n2")] {
        let mut c = common::shop_login(w.node(at).expect("node").resp, TOKEN, "login", |_| true);
        assert_eq!(c.cmd(&["FLUSHALL"]).ok(), Some(ok()));
        eprintln!("the redis crate through {at} (the other client on {other})");
        with_the_redis_crate(&url(at), &url(other));
    }
}

/// An application's use of the `redis` crate at `url`; the subscriber and
/// the blocked client connect to `other_url` (the same database).
fn with_the_redis_crate(url: &str, other_url: &str) {
    use redis::{Commands, PubSubCommands};
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_connection().unwrap();

    let () = con.set("greeting", "hello").unwrap();
    let got: String = con.get("greeting").unwrap();
    assert_eq!(got, "hello");
    let n: i64 = con.incr("counter", 5).unwrap();
    assert_eq!(n, 5);

    // A pipeline of mixed writes and reads keeps its order.
    let (a, b, len): (i64, i64, usize) = redis::pipe()
        .rpush("l", 1)
        .rpush("l", 2)
        .llen("l")
        .query(&mut con)
        .unwrap();
    assert_eq!((a, b, len), (1, 2, 2));

    // MULTI/EXEC.
    let (x, y): (i64, i64) = redis::pipe()
        .atomic()
        .incr("counter", 1)
        .incr("counter", 1)
        .query(&mut con)
        .unwrap();
    assert_eq!((x, y), (6, 7));

    // WATCH, retried by the crate when another client interferes.
    let mut other = client.get_connection().unwrap();
    let mut tries = 0;
    let (v,): (i64,) = redis::transaction(&mut con, &["counter"], |c, pipe| {
        tries += 1;
        let cur: i64 = c.get("counter")?;
        if tries == 1 {
            let () = other.set("counter", 100)?;
        }
        pipe.set("counter", cur + 1)
            .ignore()
            .get("counter")
            .query(c)
    })
    .unwrap();
    assert_eq!(
        (v, tries),
        (101, 2),
        "WATCH did not see the other client's write"
    );

    // SCAN iteration (cursors stay on the upstream that issued them).
    for i in 0..300 {
        let () = con.set(format!("scan:{i}"), i).unwrap();
    }
    let keys: std::collections::HashSet<String> = con.scan_match("scan:*").unwrap().collect();
    assert_eq!(keys.len(), 300);

    // RESP3: the router speaks it to the client and upstream.
    let client3 = redis::Client::open(format!("{url}?protocol=resp3").as_str()).unwrap();
    let mut con3 = client3.get_connection().unwrap();
    let h: std::collections::HashMap<String, String> = {
        let () = con3.hset("h", "f", "v").unwrap();
        con3.hgetall("h").unwrap()
    };
    assert_eq!(h.get("f").map(String::as_str), Some("v"));
    let v: redis::Value = redis::cmd("HGETALL").arg("h").query(&mut con3).unwrap();
    assert!(
        matches!(v, redis::Value::Map(_)),
        "RESP3 map expected: {v:?}"
    );

    // A blocking pop waits for a push from another client (CLIENT LIST
    // where it is connected shows it blocked first).
    let pop_url = other_url.to_string();
    let popper = std::thread::spawn(move || {
        let client = redis::Client::open(pop_url.as_str()).unwrap();
        let mut c = client.get_connection().unwrap();
        let got: Option<(String, String)> = c.blpop("jobs", 10.0).unwrap();
        got
    });
    let mut there = redis::Client::open(other_url)
        .unwrap()
        .get_connection()
        .unwrap();
    common::wait_for("the pop to block", Duration::from_secs(10), || {
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut there)
            .unwrap_or_default();
        clients
            .lines()
            .any(|l| l.contains("cmd=blpop") && l.contains("flags=b"))
    });
    let _: i64 = con.rpush("jobs", "job-1").unwrap();
    assert_eq!(
        popper.join().unwrap(),
        Some(("jobs".to_string(), "job-1".to_string()))
    );

    // Pub/sub: a subscriber gets what is published.
    let other = other_url.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    let sub = std::thread::spawn(move || {
        let client = redis::Client::open(other.as_str()).unwrap();
        let mut s = client.get_connection().unwrap();
        s.subscribe(&["news"], |msg| {
            if msg.get_channel_name() == "news" {
                let _ = tx.send(msg.get_payload::<String>().unwrap_or_default());
                return redis::ControlFlow::Break(());
            }
            redis::ControlFlow::Continue
        })
        .unwrap();
    });
    let got = common::poll_every(
        Duration::from_millis(20),
        Duration::from_secs(5),
        "the subscriber to get the message",
        || {
            let _: i64 = con.publish("news", "extra").ok()?;
            rx.try_recv().ok()
        },
    );
    assert_eq!(got, "extra");
    sub.join().unwrap();
}

/// CLIENT ID/LIST/KILL/INFO through the router are about the router's own
/// clients: their addresses, names, databases and last commands; a killed
/// client is disconnected, whether it is idle, blocked or subscribed.
#[test]
fn client_list_and_kill_describe_the_routers_own_clients() {
    let primary = common::start_redis(&[]);
    let router = start_router(&[primary.port], &[]);
    let line_of = |c: &mut RespConn, id: i64| -> String {
        match c.cmd(&["CLIENT", "LIST", "ID", &id.to_string()]).unwrap() {
            Value::Bulk(b) => String::from_utf8(b).unwrap(),
            other => panic!("CLIENT LIST ID: {other:?}"),
        }
    };
    let field = |line: &str, name: &str| -> String {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {line}"))
            .to_string()
    };
    let mut a = router.connect();
    assert_eq!(a.cmd(&["CLIENT", "SETNAME", "alpha"]).unwrap(), ok());
    assert_eq!(a.cmd(&["SELECT", "2"]).unwrap(), ok());
    assert_eq!(a.cmd(&["GET", "x"]).unwrap(), Value::Nil);
    let ida = a.cmd(&["CLIENT", "ID"]).unwrap().as_int().unwrap();
    let mut b = router.connect();
    let idb = b.cmd(&["CLIENT", "ID"]).unwrap().as_int().unwrap();
    assert_ne!(ida, idb);

    let la = line_of(&mut b, ida);
    assert_eq!(field(&la, "id"), ida.to_string());
    assert_eq!(field(&la, "addr"), a.local_addr(), "{la}");
    assert_eq!(field(&la, "laddr"), format!("127.0.0.1:{}", router.port));
    assert_eq!(field(&la, "name"), "alpha");
    assert_eq!(field(&la, "db"), "2");
    assert_eq!(field(&la, "cmd"), "client|id", "{la}");
    assert_eq!(field(&la, "flags"), "N");
    match b.cmd(&["CLIENT", "LIST"]).unwrap() {
        Value::Bulk(t) => assert_eq!(String::from_utf8(t).unwrap().lines().count(), 2),
        other => panic!("{other:?}"),
    }
    match b.cmd(&["CLIENT", "INFO"]).unwrap() {
        Value::Bulk(t) => {
            let t = String::from_utf8(t).unwrap();
            assert_eq!(field(&t, "id"), idb.to_string());
        }
        other => panic!("{other:?}"),
    }

    // Redis's errors and counts.
    let err = |v: Value| match v {
        Value::Error(e) => String::from_utf8(e).unwrap(),
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(
        err(b.cmd(&["CLIENT", "KILL", "ID", "0"]).unwrap()),
        "ERR client-id should be greater than 0"
    );
    assert_eq!(
        err(b.cmd(&["CLIENT", "KILL", "10.0.0.1:1"]).unwrap()),
        "ERR No such client"
    );
    assert_eq!(
        b.cmd(&["CLIENT", "KILL", "ID", "99999"]).unwrap(),
        Value::Int(0)
    );

    // Idle, blocked and subscribed clients are all disconnected.
    let mut blocked = router.connect();
    let idx = blocked.cmd(&["CLIENT", "ID"]).unwrap().as_int().unwrap();
    blocked.send_all(&[vec!["BLPOP", "nothing", "0"]]).unwrap();
    let mut sub = router.connect();
    let ids = sub.cmd(&["CLIENT", "ID"]).unwrap().as_int().unwrap();
    assert!(matches!(
        sub.cmd(&["SUBSCRIBE", "c"]).unwrap(),
        Value::Array(_)
    ));
    std::thread::sleep(Duration::from_millis(200));
    assert!(line_of(&mut b, ids).contains("flags=P"));
    for (id, c) in [(ida, &mut a), (idx, &mut blocked), (ids, &mut sub)] {
        assert_eq!(
            b.cmd(&["CLIENT", "KILL", "ID", &id.to_string()]).unwrap(),
            Value::Int(1),
            "kill {id}"
        );
        let t = Instant::now();
        assert!(c.read_reply().is_err(), "client {id} still connected");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "client {id} kept for {:?}",
            t.elapsed()
        );
        assert_eq!(line_of(&mut b, id), "", "client {id} still listed");
    }
    // ADDR and SKIPME: a client may kill itself by address.
    let me = b.local_addr();
    assert_eq!(
        b.cmd(&["CLIENT", "KILL", "ADDR", &me, "SKIPME", "yes"])
            .unwrap(),
        Value::Int(0)
    );
    assert_eq!(
        b.cmd(&["CLIENT", "KILL", "ADDR", &me, "SKIPME", "no"])
            .unwrap(),
        Value::Int(1)
    );
    assert!(b.read_reply().is_err(), "killed itself but still connected");
}

/// Replicas equally near take turns, and a replica with
/// `--replica-max-inflight` requests in flight is skipped: reads go to the
/// next one instead of queueing behind it.
#[test]
fn equally_near_replicas_take_turns_and_a_busy_one_is_skipped() {
    let primary = common::start_redis(&[]);
    let (r1, r2) = (start_replica(primary.port), start_replica(primary.port));
    wait_linked(&r1);
    wait_linked(&r2);
    let maddr = format!("127.0.0.1:{}", common::free_port());
    let router = start_router(
        &[primary.port, r1.port, r2.port],
        &[
            "--threads",
            "1",
            "--replica-max-inflight",
            "2",
            "--upstream-timeout-ms",
            "10000",
            "--metrics-addr",
            &maddr,
        ],
    );
    let mut p = primary.connect();
    assert_eq!(p.cmd(&["SET", "k", "v"]).unwrap(), ok());
    let (mut c1, mut c2) = (r1.connect(), r2.connect());
    replicas_have(&mut [&mut c1, &mut c2], "k", "v");
    settle();

    // Ten new clients, one read each: both replicas answer some.
    let (g1, g2) = (calls(&mut c1, "get"), calls(&mut c2, "get"));
    for _ in 0..10 {
        let mut c = router.connect();
        assert_eq!(c.cmd(&["GET", "k"]).unwrap(), bulk("v"));
    }
    let (d1, d2) = (calls(&mut c1, "get") - g1, calls(&mut c2, "get") - g2);
    assert!(d1 >= 3 && d2 >= 3, "reads per replica: {d1} and {d2}");

    // r1 stops answering clients for 1.5 s: at most two reads wait there,
    // the rest go to r2.
    assert_eq!(c1.cmd(&["CLIENT", "PAUSE", "1500"]).unwrap(), ok());
    let t0 = Instant::now();
    let port = router.port;
    let readers: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = RespConn::connect(port).unwrap();
                let mut n = 0;
                while t0.elapsed() < Duration::from_millis(1000) {
                    assert_eq!(c.cmd(&["GET", "k"]).unwrap(), bulk("v"));
                    n += 1;
                }
                n
            })
        })
        .collect();
    let done: Vec<usize> = readers.into_iter().map(|h| h.join().unwrap()).collect();
    let served = done.iter().filter(|&&n| n >= 10).count();
    assert!(
        served >= 6,
        "reads per client while r1 was paused: {done:?}"
    );
    let page = common::http_get(&maddr, "/metrics").unwrap();
    let skips = common::metric(&page, "anykv_router_busy_replica_skips_total").unwrap_or(0.0);
    assert!(skips > 0.0, "no busy replica was skipped");
}

/// Reads go to the replica nearest by measured RTT (one behind a 20 ms
/// relay is passed over); a frozen primary makes writes fail within about
/// the upstream timeout, with a documented error, never hang; once it
/// thaws, writes run again.
#[test]
fn the_nearest_replica_reads_and_a_frozen_primary_fails_writes_in_time() {
    let primary = common::start_redis(&[]);
    let (far, near) = (start_replica(primary.port), start_replica(primary.port));
    wait_linked(&far);
    wait_linked(&near);
    let far_via = delay_proxy(far.port, Duration::from_millis(20));
    let router = start_router(&[primary.port, far_via, near.port], &[]);
    let mut w = router.connect();
    assert_eq!(w.cmd(&["SET", "k", "v"]).unwrap(), ok());
    let (mut fc, mut nc) = (far.connect(), near.connect());
    replicas_have(&mut [&mut fc, &mut nc], "k", "v");
    // Several polls, so both replicas' RTTs are measured.
    std::thread::sleep(Duration::from_millis(1000));
    let (f0, n0) = (calls(&mut fc, "get"), calls(&mut nc, "get"));
    for _ in 0..10 {
        let mut c = router.connect();
        assert_eq!(c.cmd(&["GET", "k"]).unwrap(), bulk("v"));
    }
    let (df, dn) = (calls(&mut fc, "get") - f0, calls(&mut nc, "get") - n0);
    assert_eq!((df, dn), (0, 10), "reads on the far and the near replica");

    signal(primary.pid(), "-STOP");
    let t = Instant::now();
    let r = w.cmd(&["SET", "k", "frozen"]);
    let took = t.elapsed();
    signal(primary.pid(), "-CONT");
    match r {
        Ok(Value::Error(e)) => {
            let e = String::from_utf8_lossy(&e).into_owned();
            assert!(
                e.starts_with("ERR router: connection to upstream") || e.starts_with("TRYAGAIN"),
                "{e}"
            );
        }
        other => panic!("a write to a frozen primary answered {other:?}"),
    }
    assert!(took < Duration::from_secs(5), "the write waited {took:?}");
    common::poll_every(
        Duration::from_millis(50),
        Duration::from_secs(10),
        "writes after the thaw",
        || (w.cmd(&["SET", "k", "thawed"]).ok()? == ok()).then_some(()),
    );
}

fn is_error_starting(v: &Value, prefix: &str) -> bool {
    matches!(v, Value::Error(e) if e.starts_with(prefix.as_bytes()))
}

fn text(v: Value) -> String {
    match v {
        Value::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// A user of the upstreams' own (their ACL, the same on the primary and
/// the replica: Redis does not replicate ACL) logs in through the router:
/// the primary checks the password, and the client's requests run on
/// upstream connections logged in as that user, so its rules apply to
/// writes, to reads on the replica and to subscriptions.
#[test]
fn an_upstream_user_logs_in_through_the_router() {
    let primary = common::start_redis(&[]);
    let replica = start_replica(primary.port);
    wait_linked(&replica);
    for s in [&primary, &replica] {
        let rules = [
            "ACL",
            "SETUSER",
            "alice",
            "on",
            ">alicepw",
            "~a:*",
            "resetchannels",
            "&news",
            "+@all",
        ];
        assert_eq!(s.connect().cmd(&rules).unwrap(), ok());
    }
    let router = start_router(&[primary.port, replica.port], &[]);
    let mut c = router.connect();

    // A wrong password: the primary's own refusal; the client stays default.
    assert_eq!(
        c.cmd(&["AUTH", "alice", "nope"]).unwrap(),
        Value::Error(b"WRONGPASS invalid username-password pair or user is disabled.".to_vec())
    );
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).unwrap(), bulk("default"));
    assert_eq!(c.cmd(&["SET", "b:1", "x"]).unwrap(), ok());

    assert_eq!(c.cmd(&["AUTH", "alice", "alicepw"]).unwrap(), ok());
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).unwrap(), bulk("alice"));
    assert!(text(c.cmd(&["CLIENT", "INFO"]).unwrap()).contains(" user=alice "));
    assert_eq!(c.cmd(&["SET", "a:1", "v"]).unwrap(), ok());
    // Her rules: a key outside `a:*` is refused by the primary.
    let refused = c.cmd(&["SET", "b:2", "x"]).unwrap();
    assert!(is_error_starting(&refused, "NOPERM"), "{refused:?}");

    // Reads go to the replica once it has her write, logged in as her.
    let mut rc = replica.connect();
    common::poll_every(
        Duration::from_millis(10),
        Duration::from_secs(10),
        "replica has the write",
        || (rc.cmd(&["GET", "a:1"]).ok()? == bulk("v")).then_some(()),
    );
    settle();
    let before = common::cmdstat_calls(&mut rc, "get");
    for _ in 0..5 {
        assert_eq!(c.cmd(&["GET", "a:1"]).unwrap(), bulk("v"));
    }
    assert!(
        common::cmdstat_calls(&mut rc, "get") - before >= 5,
        "the replica served the reads"
    );
    let denied = c.cmd(&["GET", "b:1"]).unwrap();
    assert!(is_error_starting(&denied, "NOPERM"), "{denied:?}");
    for (who, s) in [("primary", &primary), ("replica", &replica)] {
        let list = text(s.connect().cmd(&["CLIENT", "LIST"]).unwrap());
        assert!(
            list.lines()
                .any(|l| l.contains("name=anykv-router") && l.contains(" user=alice ")),
            "no router connection logged in as alice on the {who}:\n{list}"
        );
    }

    // Subscriptions run on a connection of her own, as her.
    let mut sub = router.connect();
    assert_eq!(sub.cmd(&["AUTH", "alice", "alicepw"]).unwrap(), ok());
    let nope = sub.cmd(&["SUBSCRIBE", "sports"]).unwrap();
    assert!(is_error_starting(&nope, "NOPERM"), "{nope:?}");

    // HELLO AUTH logs in too. Its options act in order, as in Redis 7.0:
    // a failed login stops before a later SETNAME, not an earlier one.
    let mut h = router.connect();
    let bad = h
        .cmd(&["HELLO", "2", "AUTH", "alice", "nope", "SETNAME", "app"])
        .unwrap();
    assert!(is_error_starting(&bad, "WRONGPASS"), "{bad:?}");
    assert_eq!(h.cmd(&["CLIENT", "GETNAME"]).unwrap(), Value::Nil);
    let bad = h
        .cmd(&["HELLO", "2", "SETNAME", "first", "AUTH", "alice", "nope"])
        .unwrap();
    assert!(is_error_starting(&bad, "WRONGPASS"), "{bad:?}");
    assert_eq!(h.cmd(&["CLIENT", "GETNAME"]).unwrap(), bulk("first"));
    let hello = h
        .cmd(&["HELLO", "2", "AUTH", "alice", "alicepw", "SETNAME", "app"])
        .unwrap();
    assert!(matches!(hello, Value::Array(_)), "{hello:?}");
    assert_eq!(h.cmd(&["CLIENT", "GETNAME"]).unwrap(), bulk("app"));
    assert_eq!(h.cmd(&["ACL", "WHOAMI"]).unwrap(), bulk("alice"));
    assert!(is_error_starting(
        &h.cmd(&["SET", "b:3", "x"]).unwrap(),
        "NOPERM"
    ));

    // Back to the router's own user: everything is allowed again.
    assert_eq!(c.cmd(&["AUTH", "default", "anything"]).unwrap(), ok());
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]).unwrap(), bulk("default"));
    assert_eq!(c.cmd(&["SET", "b:2", "x"]).unwrap(), ok());

    // A user the primary deleted can no longer log in.
    assert_eq!(
        primary.connect().cmd(&["ACL", "DELUSER", "alice"]).unwrap(),
        Value::Int(1)
    );
    let gone = router.connect().cmd(&["AUTH", "alice", "alicepw"]).unwrap();
    assert!(is_error_starting(&gone, "WRONGPASS"), "{gone:?}");
}

/// Client-side caching through the router (docs/CLIENT_CACHING.md): a
/// RESP3 client that turns tracking on gets its own upstream connection to
/// the primary, so a key it read is invalidated, as a push, when another
/// client of the router changes it; one it did not read is not.
#[test]
fn tracking_through_the_router_pushes_invalidations() {
    let primary = common::start_redis(&[]);
    let replica = start_replica(primary.port);
    wait_linked(&replica);
    let router = start_router(&[primary.port, replica.port], &[]);
    let mut a = common::RespConn::connect_resp3(router.port).expect("HELLO 3 through the router");
    let mut b = router.connect();
    assert_eq!(b.cmd(&["SET", "cached", "1"]).unwrap(), ok());
    assert_eq!(a.cmd(&["CLIENT", "TRACKING", "ON"]).unwrap(), ok());
    assert_eq!(a.cmd(&["GET", "cached"]).unwrap(), bulk("1"));
    // A key it did not read changes first: nothing for it.
    assert_eq!(b.cmd(&["SET", "other", "x"]).unwrap(), ok());
    assert_eq!(b.cmd(&["SET", "cached", "2"]).unwrap(), ok());
    let push = a.read_reply().expect("an invalidation push");
    let shape = common::Conn::shape(&a).unwrap_or_default().to_string();
    assert!(shape.starts_with('>'), "a push, not {shape}: {push:?}");
    assert_eq!(
        push,
        Value::Array(vec![bulk("invalidate"), Value::Array(vec![bulk("cached")])])
    );
    // The connection goes on answering in order.
    assert_eq!(a.cmd(&["GET", "cached"]).unwrap(), bulk("2"));
    assert_eq!(a.cmd(&["CLIENT", "TRACKING", "OFF"]).unwrap(), ok());
}
