//! Per-region latency in the emulated world (docs/BENCHMARKS.md, Router):
//! three iad nodes, one in cdg, one in syd, the builtin RTT table on every
//! inter-node byte; one database with its primary and standby in iad and
//! replicas in cdg and syd (durability `region`, consistency `ryw`).
//!
//! From a client on each region's node (and on the iad node that holds no
//! copy), open loop at a fixed rate, latency measured from each request's
//! scheduled send time (so a slow reply delays no measurement), in
//! HdrHistograms:
//!
//! - `PING`: the floor of a request to that node (no database);
//! - `GET` of an existing key: a read (goal: p50 within 1 ms of PING's);
//! - `SET`: a write, applied at the primary in iad (goal: p50 within
//!   max(2 ms, 2%) of the node's RTT to iad; 0 for iad's own nodes);
//! - read-your-writes: `SET` then `GET` of the same key on one connection,
//!   one pair at a time at the same rate; the GET's own latency is
//!   reported separately, with the reads that waited for replication
//!   (INFO routing).
//!
//! Run it with:
//!
//!     cargo build --release && cargo build --release --examples -p anykv-bench
//!     target/release/examples/regions --anykv target/release/anykv [--rate 50] [--seconds 10]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anykv_bench::client::{self, command, parse_reply, Conn, Database, Reply};
use anykv_bench::fail;
use anykv_bench::world::{World, WorldSpec};
use hdrhistogram::Histogram;

const ADMIN: &str = "regions-bench-admin";
const TOKEN: &str = "regions-bench-token-0123456789ab";
const TENANT: u64 = 3;

/// Per-region latency in the emulated world (see the source's header).
#[derive(clap::Parser)]
struct Args {
    /// The `anykv` binary.
    #[arg(long, default_value = "target/release/anykv")]
    anykv: String,
    /// Requests per second of each kind, per node measured.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// How long each node is measured.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Nodes get 127.0.<net>.1, .2, ...
    #[arg(long, default_value_t = 61)]
    net: u8,
    /// The first node port (each node uses six from here).
    #[arg(long, default_value_t = 23100)]
    port: u16,
    /// Keep the world's directory (the nodes' logs) at the end.
    #[arg(long)]
    keep: bool,
}

/// Ends the run: a panic, so that the world (owned by `main`) is dropped
/// on the way out and its nodes stopped; the hook set in `main` prints
/// just the message.
fn log(msg: &str) {
    eprintln!("{msg}");
}

/// The builtin RTT table (the one `--emulate-wan builtin` uses), ms.
fn rtt_ms(a: &str, b: &str) -> f64 {
    if a == b {
        return 0.0;
    }
    let table = include_str!("../data/region-rtt.csv");
    table
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() == 3).then(|| (f[0], f[1], f[2]))
        })
        .find(|(x, y, _)| (*x == a && *y == b) || (*x == b && *y == a))
        .and_then(|(_, _, ms)| ms.parse().ok())
        .unwrap_or_else(|| fail(&format!("no RTT for {a}-{b} in the table")))
}

fn login(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| fail(&format!("{addr}: {e}")));
    s.set_nodelay(true).ok();
    s.write_all(&command(&["AUTH", "shop", TOKEN]))
        .unwrap_or_else(|e| fail(&format!("{addr}: {e}")));
    let mut buf = Vec::new();
    match next(&mut s, &mut buf) {
        Reply::Simple(_) => s,
        other => fail(&format!("AUTH on {addr}: {other:?}")),
    }
}

fn next(s: &mut TcpStream, buf: &mut Vec<u8>) -> Reply {
    loop {
        match parse_reply(buf) {
            Ok(Some((r, used))) => {
                buf.drain(..used);
                return r;
            }
            Ok(None) => {}
            Err(e) => fail(&format!("a reply: {e}")),
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => fail("the connection closed"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|e| fail(&e.to_string()))
}

/// Open loop: `args` sent at `rate`/s for `seconds` on one pipelined
/// connection; each latency from its scheduled time to its reply (µs).
fn open_loop(addr: SocketAddr, args: Vec<String>, rate: u32, seconds: u32) -> Histogram<u64> {
    let mut s = login(addr);
    let mut r = s.try_clone().unwrap_or_else(|e| fail(&e.to_string()));
    let n = rate * seconds;
    let (tx, rx) = mpsc::channel::<Instant>();
    let reader = std::thread::spawn(move || {
        let mut h = hist();
        let mut buf = Vec::new();
        for at in rx {
            match next(&mut r, &mut buf) {
                Reply::Err(e) => fail(&format!("an error reply: {e}")),
                _ => {
                    let us = at.elapsed().as_micros() as u64;
                    h.record(us.max(1)).ok();
                }
            }
        }
        h
    });
    let interval = Duration::from_secs(1) / rate;
    let req = command(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let t0 = Instant::now() + Duration::from_millis(50);
    for i in 0..n {
        let at = t0 + interval * i;
        if let Some(d) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        if tx.send(at).is_err() || s.write_all(&req).is_err() {
            fail("sending");
        }
    }
    drop(tx);
    reader.join().unwrap_or_else(|_| fail("the reader"))
}

/// SET then GET of one key on one connection, a pair every 1/`rate` s
/// (closed per pair): the GET's latency (µs).
fn ryw(addr: SocketAddr, key: &str, rate: u32, seconds: u32) -> Histogram<u64> {
    let mut s = login(addr);
    let mut buf = Vec::new();
    let mut h = hist();
    let interval = Duration::from_secs(1) / rate;
    let t0 = Instant::now();
    for i in 0..rate * seconds {
        let at = t0 + interval * i;
        if let Some(d) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let v = i.to_string();
        s.write_all(&command(&["SET", key, &v])).ok();
        match next(&mut s, &mut buf) {
            Reply::Simple(_) => {}
            other => fail(&format!("SET {key} {v}: {other:?}")),
        }
        let start = Instant::now();
        s.write_all(&command(&["GET", key])).ok();
        match next(&mut s, &mut buf) {
            Reply::Bulk(Some(b)) if b == v.as_bytes() => {}
            other => fail(&format!("read-your-writes broke: {other:?} after SET {v}")),
        }
        h.record((start.elapsed().as_micros() as u64).max(1)).ok();
    }
    h
}

fn routing(addr: SocketAddr) -> BTreeMap<String, u64> {
    let mut c = Conn::open(addr, Some(("shop", TOKEN))).unwrap_or_else(|| fail("INFO login"));
    match c.call(&["INFO", "routing"]) {
        Some(Reply::Bulk(Some(b))) => String::from_utf8_lossy(&b)
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
            .collect(),
        other => fail(&format!("INFO routing: {other:?}")),
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn main() {
    let a = <Args as clap::Parser>::parse();
    anykv_bench::quiet_panics("regions");
    let spec = WorldSpec::for_bench(
        "regions",
        &a.anykv,
        a.net,
        a.port,
        &[("iad", 3), ("cdg", 1), ("syd", 1)],
        ADMIN,
        &["--save", "", "--appendonly", "no"],
    );
    let dir = spec.dir.clone();
    log("starting the world (iad x3, cdg, syd)");
    let w = World::start(&spec).unwrap_or_else(|e| fail(&e.to_string()));
    w.wait_members(5, Duration::from_secs(90))
        .unwrap_or_else(|e| fail(&e.to_string()));
    let db = Database {
        id: TENANT,
        name: "shop".into(),
        token: TOKEN.into(),
        primary_region: "iad".into(),
        read_regions: vec!["cdg".into(), "syd".into()],
        durability: "region".into(),
        consistency: "ryw".into(),
    };
    client::wait_controller(&w, "n1", "iad", Duration::from_secs(60))
        .and_then(|()| client::create(&w, "n1", &db))
        .unwrap_or_else(|e| fail(&e));
    let end = Instant::now() + Duration::from_secs(60);
    let rec = loop {
        if let Some(r) = client::record(&w, "n1", TENANT) {
            if r["in_sync"].is_string() && r["in_sync"] == r["standby"] {
                break r;
            }
        }
        if Instant::now() > end {
            fail("the database never had an in-sync standby");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let primary = rec["primary"].as_str().unwrap_or_default().to_string();
    let standby = rec["standby"].as_str().unwrap_or_default().to_string();
    let nocopy = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != primary && *n != standby)
        .unwrap_or_else(|| fail("no iad node without a copy"));
    let targets: Vec<(String, &str, SocketAddr)> = [
        ("iad (primary's node)".to_string(), "iad", primary.as_str()),
        ("iad (no copy)".to_string(), "iad", nocopy),
        ("cdg (replica)".to_string(), "cdg", "n4"),
        ("syd (replica)".to_string(), "syd", "n5"),
    ]
    .into_iter()
    .map(|(label, region, node)| {
        let addr = w.node(node).unwrap_or_else(|e| fail(&e.to_string())).resp;
        (label, region, addr)
    })
    .collect();
    // Every node serves the database (the copies have the key).
    let mut p = Conn::open(targets[0].2, Some(("shop", TOKEN))).unwrap_or_else(|| fail("login"));
    p.call(&["SET", "k", "v"]);
    for (label, _, addr) in &targets {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Conn::open(*addr, Some(("shop", TOKEN)))
                .and_then(|mut c| c.call(&["GET", "k"]))
                .is_some_and(|r| r == Reply::Bulk(Some(b"v".to_vec())));
            if ok {
                break;
            }
            if Instant::now() > end {
                fail(&format!("{label} never served the database"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    println!(
        "| client on | RTT to iad ms | PING p50 / p99 ms | GET p50 / p99 ms | GET - PING p50 | goal ≤ 1 ms | SET p50 / p99 ms | SET p50 - RTT | goal ≤ max(2 ms, 2% RTT) | ryw GET p50 / p99 ms | ryw reads that waited |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (label, region, addr) in &targets {
        log(&format!(
            "{label}: {} s of PING, GET, SET and SET+GET at {}/s each",
            a.seconds, a.rate
        ));
        let before = routing(*addr);
        let (rate, secs, addr) = (a.rate, a.seconds, *addr);
        let run = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            std::thread::spawn(move || open_loop(addr, args, rate, secs))
        };
        let (ping, get, set) = (run(&["PING"]), run(&["GET", "k"]), run(&["SET", "w", "x"]));
        let key = format!("ryw:{region}:{}", addr.ip());
        let rw = std::thread::spawn(move || ryw(addr, &key, rate, secs));
        let join = |h: std::thread::JoinHandle<Histogram<u64>>| {
            h.join().unwrap_or_else(|_| fail("a client"))
        };
        let (ping, get, set, rw) = (join(ping), join(get), join(set), join(rw));
        let after = routing(addr);
        let d = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
        let rtt = rtt_ms(region, "iad");
        let read_gap = ms(get.value_at_quantile(0.5)) - ms(ping.value_at_quantile(0.5));
        let write_gap = ms(set.value_at_quantile(0.5)) - rtt;
        let write_bound = (rtt * 0.02).max(2.0);
        let verdict = |ok: bool| if ok { "met" } else { "not met" };
        println!(
            "| {label} | {rtt:.1} | {:.3} / {:.3} | {:.3} / {:.3} | {read_gap:+.3} | {} | {:.2} / {:.2} | {write_gap:+.2} | {} (≤ {write_bound:.2}) | {:.3} / {:.3} | {} of {} |",
            ms(ping.value_at_quantile(0.5)),
            ms(ping.value_at_quantile(0.99)),
            ms(get.value_at_quantile(0.5)),
            ms(get.value_at_quantile(0.99)),
            verdict(read_gap <= 1.0),
            ms(set.value_at_quantile(0.5)),
            ms(set.value_at_quantile(0.99)),
            verdict(write_gap.abs() <= write_bound),
            ms(rw.value_at_quantile(0.5)),
            ms(rw.value_at_quantile(0.99)),
            d("routed_waited_reads") + d("routed_fell_back_reads"),
            rw.len(),
        );
    }
    drop(w);
    if !a.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
