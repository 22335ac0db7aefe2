//! Failover times, measured on an emulated world (docs/BENCHMARKS.md):
//!
//! - unplanned: a `region` database's primary killed with SIGKILL while a
//!   client writes a counter; the time until the standby acknowledges a
//!   write (goal: p99 ≤ 5 s over ≥ 30 runs);
//! - planned: the primary gets SIGTERM (the controller hands it over); the
//!   longest gap between two acknowledgements the client saw (goal: p99 ≤
//!   500 ms, zero errors the client cannot retry);
//! - acknowledged writes lost in all runs (goal: 0): the client checks
//!   every `INCR` answer is one more than the last acknowledged one.
//!
//! Three iad nodes and one cdg node on 127.0.`--net`.x, with the builtin
//! RTT table; after each run the killed node is started again and the
//! next run waits until the database's standby is in sync.
//!
//!     cargo run --release -p anykv-bench --example failover -- \
//!         --anykv target/release/anykv --unplanned 30 --planned 10

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_bench::world::{http, World, WorldSpec};

const ADMIN: &str = "failover-bench-admin";
const TOKEN: &str = "failover-bench-token-0123456789";
const TENANT: u64 = 5;

/// A minimal RESP client: enough for AUTH, INCR and GET.
struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

#[derive(Debug, PartialEq)]
enum Reply {
    Ok,
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Err(String),
}

impl Conn {
    fn open(addr: SocketAddr) -> Option<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.set_nodelay(true).ok()?;
        let mut c = Conn {
            r: BufReader::new(s.try_clone().ok()?),
            w: s,
        };
        (c.call(&["AUTH", "shop", TOKEN])? == Reply::Ok).then_some(c)
    }

    fn call(&mut self, args: &[&str]) -> Option<Reply> {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.w.write_all(out.as_bytes()).ok()?;
        let mut line = String::new();
        self.r.read_line(&mut line).ok()?;
        let body = line.get(1..)?.trim_end().to_string();
        match line.as_bytes().first()? {
            b'+' => Some(Reply::Ok),
            b'-' => Some(Reply::Err(body)),
            b':' => body.parse().ok().map(Reply::Int),
            b'$' => {
                let n: i64 = body.parse().ok()?;
                if n < 0 {
                    return Some(Reply::Bulk(None));
                }
                let mut b = vec![0u8; n as usize + 2];
                std::io::Read::read_exact(&mut self.r, &mut b).ok()?;
                b.truncate(n as usize);
                Some(Reply::Bulk(Some(b)))
            }
            _ => None,
        }
    }
}

/// What a writer saw.
#[derive(Default)]
struct Seen {
    acked: i64,
    /// Answers at or below the last acknowledged value: acknowledged
    /// writes the database no longer has.
    lost: u64,
    /// Answers more than one above it: a write whose answer was cut (the
    /// node died) took effect; not a loss.
    unanswered_applied: u64,
    errors: u64,
    /// First acknowledgement after the first failed write at or after
    /// `mark` (a write in flight when the node died may still be
    /// acknowledged just after the mark: that is not the failover's end).
    first_after_mark: Option<Instant>,
    outage_seen: bool,
    longest_gap: Duration,
}

/// Writes `INCR counter` on whichever of `nodes` takes it until `stop`.
fn writer(nodes: Vec<SocketAddr>, start: i64, mark: Arc<Mark>, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen {
        acked: start,
        ..Default::default()
    };
    let mut on = 0usize;
    let mut conn: Option<Conn> = None;
    let mut last = Instant::now();
    while !stop.load(Ordering::Acquire) {
        if conn.is_none() {
            conn = Conn::open(nodes[on]);
        }
        match conn.as_mut().and_then(|c| c.call(&["INCR", "counter"])) {
            Some(Reply::Int(n)) => {
                if n <= seen.acked {
                    seen.lost += 1;
                } else if n > seen.acked + 1 {
                    seen.unanswered_applied += 1;
                }
                seen.acked = n;
                let now = Instant::now();
                seen.longest_gap = seen.longest_gap.max(now - last);
                last = now;
                if seen.first_after_mark.is_none() && seen.outage_seen {
                    seen.first_after_mark = Some(now);
                }
            }
            _ => {
                seen.errors += 1;
                if mark.passed(Instant::now()) {
                    seen.outage_seen = true;
                }
                conn = None;
                on = (on + 1) % nodes.len();
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    seen
}

/// A point in time, set once by the main thread and read by the writer.
struct Mark {
    base: Instant,
    /// Nanoseconds after `base`, plus one (0: not set yet).
    at: AtomicU64,
}

impl Mark {
    fn new() -> Mark {
        Mark {
            base: Instant::now(),
            at: AtomicU64::new(0),
        }
    }

    fn set(&self, t: Instant) {
        let ns = t.saturating_duration_since(self.base).as_nanos() as u64;
        self.at.store(ns + 1, Ordering::Release);
    }

    fn passed(&self, now: Instant) -> bool {
        match self.at.load(Ordering::Acquire) {
            0 => false,
            n => now.saturating_duration_since(self.base).as_nanos() as u64 + 1 >= n,
        }
    }
}

struct Args {
    anykv: String,
    unplanned: usize,
    planned: usize,
    net: u8,
    port: u16,
}

fn parse_args() -> Args {
    let mut a = Args {
        anykv: "target/release/anykv".into(),
        unplanned: 30,
        planned: 10,
        net: 60,
        port: 23000,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--anykv" => a.anykv = v,
            "--unplanned" => a.unplanned = v.parse().unwrap_or(a.unplanned),
            "--planned" => a.planned = v.parse().unwrap_or(a.planned),
            "--net" => a.net = v.parse().unwrap_or(a.net),
            "--port" => a.port = v.parse().unwrap_or(a.port),
            other => {
                eprintln!("unknown argument {other}; see the example's doc comment");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    a
}

/// The database's record as node `by` sees it.
fn record(w: &World, by: &str) -> Option<serde_json::Value> {
    w.cluster_view(by)?["tenants"]
        .as_array()?
        .iter()
        .find(|t| t["id"] == TENANT)
        .cloned()
}

/// Waits until the record is past epoch `after` and names an in-sync
/// standby; (epoch, primary, standby).
fn settled(w: &World, after: u64) -> Result<(u64, String, String), String> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(r) = record(w, "n4") {
            let epoch = r["epoch"].as_u64().unwrap_or(0);
            if let (Some(p), Some(s)) = (r["primary"].as_str(), r["in_sync"].as_str()) {
                if r["standby"] == s && epoch > after {
                    return Ok((epoch, p.to_string(), s.to_string()));
                }
            }
        }
        if Instant::now() > end {
            return Err(format!("the database never settled: {:?}", record(w, "n4")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn counter(w: &World, node: &str) -> i64 {
    let addr = match w.node(node) {
        Ok(n) => n.resp,
        Err(_) => return 0,
    };
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(Reply::Bulk(v)) = Conn::open(addr).and_then(|mut c| c.call(&["GET", "counter"]))
        {
            return v
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        }
        if Instant::now() > end {
            return 0;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Nearest-rank percentile of sorted `v`.
fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let a = parse_args();
    let dir = std::env::temp_dir().join(format!("anykv-failover-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spec = WorldSpec {
        bin: a.anykv.clone().into(),
        dir: dir.clone(),
        net: a.net,
        port: a.port,
        regions: vec![("iad".into(), 3), ("cdg".into(), 1)],
        rtt_table: Some("builtin".into()),
        loss: 0.0,
        gossip_profile: "test".into(),
        admin_token: ADMIN.into(),
        server_args: ["--save", "", "--appendonly", "yes"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let mut w = match World::start(&spec) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("starting the world: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = w.wait_members(4, Duration::from_secs(60)) {
        eprintln!("{e}");
        std::process::exit(1);
    }
    let digest: String = {
        use std::fmt::Write;
        let d = anykv_gossip_digest(TOKEN);
        d.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    };
    let entry = serde_json::json!({
        "id": TENANT, "name": "shop", "token_sha256": [digest], "org": "acme",
        "primary_region": "iad", "read_regions": ["cdg"], "maxmemory": 0,
        "maxmemory_policy": null, "maxclients": 0, "ops_per_sec": 0,
        "durability": "region", "consistency": "nearest", "version": 1
    });
    let n4 = w.node("n4").map(|n| n.http).expect("n4");
    // The controller group must exist before the database is placed.
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let formed = w.cluster_view("n4").is_some_and(|v| {
            v["controllers"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["region"] == "iad" && c["promotion"] == "automatic")
            })
        });
        if formed {
            break;
        }
        if Instant::now() > end {
            eprintln!("iad's controller never formed");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match http(
        n4,
        "PUT",
        &format!("/admin/tenants/{TENANT}"),
        ADMIN,
        &entry.to_string(),
    ) {
        Some((200, _)) => {}
        other => {
            eprintln!("creating the database: {other:?}");
            std::process::exit(1);
        }
    }
    let mut unplanned = Vec::new();
    let mut pauses = Vec::new();
    let (mut lost, mut errors, mut unanswered) = (0u64, 0u64, 0u64);
    let total = a.unplanned + a.planned;
    let mut epoch = 0;
    let mut failed = None;
    for run in 0..total {
        let planned = run >= a.unplanned;
        let (e, primary, standby) = match settled(&w, epoch) {
            Ok(x) => x,
            Err(e) => {
                failed = Some(e);
                break;
            }
        };
        epoch = e;
        let start = counter(&w, &primary);
        let nodes: Vec<SocketAddr> = [&primary, &standby]
            .iter()
            .filter_map(|n| w.node(n).ok().map(|n| n.resp))
            .collect();
        let mark = Arc::new(Mark::new());
        let stop = Arc::new(AtomicBool::new(false));
        let t = {
            let (mark, stop) = (mark.clone(), stop.clone());
            std::thread::spawn(move || writer(nodes, start, mark, stop))
        };
        std::thread::sleep(Duration::from_millis(400));
        let killed = Instant::now();
        mark.set(killed);
        let sig = if planned { "-TERM" } else { "-9" };
        if let Err(e) = w.signal(&primary, sig) {
            failed = Some(e.to_string());
            break;
        }
        // Until writes flow again on the standby (or 30 s).
        let end = Instant::now() + Duration::from_secs(30);
        let base = counter(&w, &standby);
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = counter(&w, &standby);
            if now > base + 20 || Instant::now() > end {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Release);
        let seen = t.join().unwrap_or_default();
        lost += seen.lost;
        errors += seen.errors;
        unanswered += seen.unanswered_applied;
        let took = seen.first_after_mark.map(|t| t - killed);
        if planned {
            pauses.push(seen.longest_gap);
        } else if let Some(d) = took {
            unplanned.push(d);
        }
        println!(
            "run {:>2}/{total} {:<9} primary {primary} -> {standby}: first write after {} ms, longest pause {} ms, {} refused/cut, {} lost",
            run + 1,
            if planned { "planned" } else { "unplanned" },
            took.map_or("-".into(), ms),
            ms(seen.longest_gap),
            seen.errors,
            seen.lost
        );
        if let Err(e) = w.launch(&primary) {
            failed = Some(e.to_string());
            break;
        }
        if let Err(e) = w.wait_members(4, Duration::from_secs(60)) {
            failed = Some(e.to_string());
            break;
        }
    }
    if let Some(e) = failed {
        eprintln!("stopped early: {e}");
        drop(w);
        std::process::exit(1);
    }
    unplanned.sort();
    pauses.sort();
    println!();
    println!("| measure | runs | p50 ms | p90 ms | p99 ms | max ms | goal |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| unplanned: SIGKILL → the standby acknowledges | {} | {} | {} | {} | {} | p99 ≤ 5000 |",
        unplanned.len(),
        ms(pct(&unplanned, 50.0)),
        ms(pct(&unplanned, 90.0)),
        ms(pct(&unplanned, 99.0)),
        ms(unplanned.last().copied().unwrap_or_default())
    );
    println!(
        "| planned: SIGTERM, longest gap between acknowledgements | {} | {} | {} | {} | {} | p99 ≤ 500 |",
        pauses.len(),
        ms(pct(&pauses, 50.0)),
        ms(pct(&pauses, 90.0)),
        ms(pct(&pauses, 99.0)),
        ms(pauses.last().copied().unwrap_or_default())
    );
    println!();
    println!(
        "acknowledged writes lost over all runs: {lost}; answers refused or cut (retried): {errors}; writes whose answer was cut that took effect: {unanswered}"
    );
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The SHA-256 of a token, as the catalog stores it.
fn anykv_gossip_digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}
