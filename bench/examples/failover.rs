//! Failover times, measured on an emulated world (docs/BENCHMARKS.md):
//!
//! - unplanned: a `region` database's primary killed with SIGKILL while
//!   clients write counters; the time until the standby acknowledges a
//!   write to the client that was on the primary (goal: p99 ≤ 5 s over
//!   ≥ 30 runs), and each client's longest gap between acknowledgements;
//! - planned: the primary gets SIGTERM (the controller hands it over);
//!   each client's longest gap, and its write pause: that gap less the
//!   client's usual time per write (the median gap before the signal; a
//!   far router's client waits a WAN round trip for every write) (goal:
//!   p99 ≤ 500 ms, zero errors the client cannot retry);
//! - acknowledged writes lost in all runs (goal: 0): each client checks
//!   every `INCR` answer is one more than the last acknowledged one.
//!
//! Three clients, each with its own counter: one connected to the primary
//! (it reconnects to the standby when its connection is cut), one through
//! the region's third node (a node that stays, as a client behind Flycast
//! reaches one), one through a syd node holding no copy (a router in
//! another region). As a client library does, a client keeps its
//! connection after an error reply and reconnects only when it is cut.
//!
//! Three iad nodes, one cdg node (the read region) and one syd node on
//! 127.0.`--net`.x, with the builtin RTT table; after each run the killed
//! node is started again and the next run waits until the database's
//! standby is in sync.
//!
//!     cargo run --release -p anykv-bench --example failover -- \
//!         --anykv target/release/anykv --unplanned 30 --planned 30 [--keep] \
//!         [--gossip-profile wan --lan-profile lan]
//!
//! The gossip profiles default to the node's own (`wan`, `lan`: a dead
//! node is declared down after seconds, as on Fly); the thirty-first
//! session's and earlier figures were measured with `test-wan`/`test`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_bench::client::{self, Conn, Database, Reply};
use anykv_bench::world::{World, WorldSpec};

const ADMIN: &str = "failover-bench-admin";
const TOKEN: &str = "failover-bench-token-0123456789";
const TENANT: u64 = 5;
/// Nodes in the world: iad n1–n3, cdg n4, syd n5.
const NODES: usize = 5;
/// The syd node: it holds no copy of the database (a router in another
/// region, which learns a new primary from the state sync or by asking
/// iad's controller).
const FAR: &str = "n5";
/// The clients, each with its own counter: one on the primary (then the
/// standby), one through iad's third node, one through the syd router.
const CLIENTS: [(&str, &str); 3] = [
    ("counter", "client of the primary, then the standby"),
    ("counter2", "client of the node that stays"),
    ("counter3", "client of a router in syd"),
];

fn login(addr: SocketAddr) -> Option<Conn> {
    Conn::open(addr, Some(("shop", TOKEN)))
}

/// Connects and logs in, or says why not: `cut` (no connection) or
/// `login <first word of the error>`.
fn login_or_why(addr: SocketAddr) -> Result<Conn, String> {
    let mut c = Conn::open(addr, None).ok_or("cut")?;
    match c.call(&["AUTH", "shop", TOKEN]) {
        Some(Reply::Simple(_)) => Ok(c),
        Some(Reply::Err(e)) => Err(format!(
            "login {}",
            e.split_whitespace().next().unwrap_or("ERR")
        )),
        Some(_) => Err("login unexpected".into()),
        None => Err("cut".into()),
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
    /// Errors by their first word (`cut`: no answer, the connection
    /// failed or closed).
    kinds: std::collections::BTreeMap<String, u64>,
    /// Error replies by their text (the first 120 characters).
    messages: std::collections::BTreeMap<String, u64>,
    /// First acknowledgement after the first failed write at or after
    /// `mark` (a write in flight when the node died may still be
    /// acknowledged just after the mark: that is not the failover's end).
    first_after_mark: Option<Instant>,
    outage_seen: bool,
    longest_gap: Duration,
    /// Gaps between acknowledgements before `mark`: their median is the
    /// client's usual time per write (a far router's client waits a WAN
    /// round trip for every one).
    before_mark: Vec<Duration>,
}

impl Seen {
    /// The longest gap less the client's usual time per write: how much
    /// longer than usual its writes stopped (the write pause it saw).
    fn pause(&self) -> Duration {
        let mut usual = self.before_mark.clone();
        usual.sort();
        let median = usual.get(usual.len() / 2).copied().unwrap_or_default();
        self.longest_gap.saturating_sub(median)
    }
}

/// Writes `INCR <key>` on whichever of `nodes` takes it until `stop`,
/// counting its acknowledgements in `acks` as they come.
fn writer(
    nodes: Vec<SocketAddr>,
    key: &'static str,
    start: i64,
    acks: Arc<AtomicU64>,
    mark: Arc<Mark>,
    stop: Arc<AtomicBool>,
) -> Seen {
    let mut seen = Seen {
        acked: start,
        ..Default::default()
    };
    let mut on = 0usize;
    let mut conn: Option<Conn> = None;
    // Gaps are counted from the first acknowledgement: the login before it
    // (through a far router: a login check across the WAN, then the
    // write) is no pause. (Counted from the writer's start, as before
    // 2026-12-07, it made the syd router's client's longest gap two round
    // trips in every run, whatever the handoff did.)
    let mut last: Option<Instant> = None;
    while !stop.load(Ordering::Acquire) {
        if conn.is_none() {
            match login_or_why(nodes[on]) {
                Ok(c) => conn = Some(c),
                Err(kind) => {
                    *seen.kinds.entry(kind).or_default() += 1;
                    seen.errors += 1;
                    if mark.passed(Instant::now()) {
                        seen.outage_seen = true;
                    }
                    on = (on + 1) % nodes.len();
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
            }
        }
        match conn.as_mut().and_then(|c| c.call(&["INCR", key])) {
            Some(Reply::Int(n)) => {
                if n <= seen.acked {
                    seen.lost += 1;
                } else if n > seen.acked + 1 {
                    seen.unanswered_applied += 1;
                }
                seen.acked = n;
                acks.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                if let Some(last) = last {
                    if !mark.passed(now) {
                        seen.before_mark.push(now - last);
                    }
                    seen.longest_gap = seen.longest_gap.max(now - last);
                }
                last = Some(now);
                if seen.first_after_mark.is_none() && seen.outage_seen {
                    seen.first_after_mark = Some(now);
                }
            }
            other => {
                // As a client library does: an error reply keeps the
                // connection (the next request retries on it), a
                // connection cut (or a reply that never came) is opened
                // again, on the next node when there are several.
                if let Some(Reply::Err(e)) = &other {
                    let text: String = e.chars().take(120).collect();
                    *seen.messages.entry(text).or_default() += 1;
                }
                let kind = match other {
                    Some(Reply::Err(e)) => e.split_whitespace().next().unwrap_or("ERR").to_string(),
                    Some(_) => "unexpected".to_string(),
                    None => "cut".to_string(),
                };
                if kind == "cut" || kind == "unexpected" {
                    conn = None;
                    on = (on + 1) % nodes.len();
                }
                *seen.kinds.entry(kind).or_default() += 1;
                seen.errors += 1;
                if mark.passed(Instant::now()) {
                    seen.outage_seen = true;
                }
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
    /// Keep the world's directory (nodes' logs) at the end.
    keep: bool,
    /// The nodes' gossip profiles across the cluster and in a region
    /// (`--gossip-profile`, `--lan-profile` of `anykv node`): by default
    /// the node's own defaults (`wan`, `lan`), as on Fly; `test-wan` and
    /// `test` detect a dead node several times faster.
    gossip_profile: String,
    lan_profile: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        anykv: "target/release/anykv".into(),
        unplanned: 30,
        planned: 30,
        net: 60,
        port: 23000,
        keep: false,
        gossip_profile: "wan".into(),
        lan_profile: "lan".into(),
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
            "--gossip-profile" => a.gossip_profile = v,
            "--lan-profile" => a.lan_profile = v,
            "--keep" => {
                a.keep = true;
                i += 1;
                continue;
            }
            other => {
                eprintln!("unknown argument {other}; see the example's doc comment");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    a
}

/// Waits until the record is past epoch `after` and names an in-sync
/// standby; (epoch, primary, standby).
fn settled(w: &World, after: u64) -> Result<(u64, String, String), String> {
    let r = client::settled(w, "n4", TENANT, after, Duration::from_secs(60))?;
    Ok((r.epoch, r.primary, r.standby))
}

/// iad's controller leader as node `by` sees it.
fn leader(w: &World, by: &str) -> Option<String> {
    w.cluster_view(by)?["controllers"]
        .as_array()?
        .iter()
        .find(|c| c["region"] == "iad")?["leader"]
        .as_str()
        .map(str::to_string)
}

fn kinds(k: &std::collections::BTreeMap<String, u64>) -> String {
    if k.is_empty() {
        return "none".into();
    }
    k.iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `key`'s value (a counter) as `node` reads it.
fn counter(w: &World, node: &str, key: &str) -> i64 {
    let addr = match w.node(node) {
        Ok(n) => n.resp,
        Err(_) => return 0,
    };
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(Reply::Bulk(v)) = login(addr).and_then(|mut c| c.call(&["GET", key])) {
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
    let mut spec = WorldSpec::for_bench(
        "failover-bench",
        &a.anykv,
        a.net,
        a.port,
        &[("iad", 3), ("cdg", 1), ("syd", 1)],
        ADMIN,
        &["--save", "", "--appendonly", "yes"],
    );
    spec.gossip_profile = a.gossip_profile.clone();
    spec.lan_profile = a.lan_profile.clone();
    println!(
        "gossip profiles: {} across the cluster, {} in a region",
        spec.gossip_profile, spec.lan_profile
    );
    let dir = spec.dir.clone();
    let mut w = match World::start(&spec) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("starting the world: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = w.wait_members(NODES, Duration::from_secs(60)) {
        eprintln!("{e}");
        std::process::exit(1);
    }
    let db = Database {
        id: TENANT,
        name: "shop".into(),
        token: TOKEN.into(),
        primary_region: "iad".into(),
        read_regions: vec!["cdg".into()],
        durability: "region".into(),
        consistency: "nearest".into(),
    };
    // The controller group must exist before the database is placed.
    if let Err(e) = client::wait_controller(&w, "n4", "iad", Duration::from_secs(60))
        .and_then(|()| client::create(&w, "n4", &db))
    {
        eprintln!("{e}");
        std::process::exit(1);
    }
    // Per client, in the order of `CLIENTS`: planned runs' longest gaps
    // and errors, unplanned runs' longest gaps, error kinds.
    let mut gaps_planned: [Vec<Duration>; 3] = Default::default();
    let mut pauses_planned: [Vec<Duration>; 3] = Default::default();
    let mut gaps_unplanned: [Vec<Duration>; 3] = Default::default();
    let mut errs_planned: [Vec<u64>; 3] = Default::default();
    let mut kinds_planned: [std::collections::BTreeMap<String, u64>; 3] = Default::default();
    let mut kinds_unplanned: [std::collections::BTreeMap<String, u64>; 3] = Default::default();
    // Error replies by text, per client, planned runs then unplanned.
    let mut messages: [[std::collections::BTreeMap<String, u64>; 3]; 2] = Default::default();
    // The first client's failover time, and by whether the killed primary
    // led the controller.
    let mut unplanned = Vec::new();
    // Unplanned runs whose first client never had a write acknowledged
    // again before the run ended (30 s): counted in `unplanned` at the
    // time the run waited, a bound below the real outage, and named.
    let mut never_recovered = 0usize;
    let (mut of_leader, mut of_other) = (Vec::new(), Vec::new());
    let (mut lost, mut unanswered) = (0u64, 0u64);
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
        let third = ["n1", "n2", "n3"]
            .into_iter()
            .find(|n| *n != primary && *n != standby)
            .unwrap_or("n4");
        let resp = |n: &str| w.node(n).ok().map(|n| n.resp);
        let targets: [Vec<SocketAddr>; 3] = [
            [&primary, &standby]
                .iter()
                .filter_map(|n| resp(n))
                .collect(),
            resp(third).into_iter().collect(),
            resp(FAR).into_iter().collect(),
        ];
        let mark = Arc::new(Mark::new());
        let stop = Arc::new(AtomicBool::new(false));
        let acks: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let threads: Vec<_> = targets
            .into_iter()
            .enumerate()
            .map(|(i, nodes)| {
                let key = CLIENTS[i].0;
                let start = counter(&w, &primary, key);
                let (acks, mark, stop) = (acks[i].clone(), mark.clone(), stop.clone());
                std::thread::spawn(move || writer(nodes, key, start, acks, mark, stop))
            })
            .collect();
        // Every client writing (the third node may have started just
        // before, as the last run's killed node): at least 400 ms and 20
        // acknowledgements each, at most 10 s.
        let writing = Instant::now();
        while writing.elapsed() < Duration::from_millis(400)
            || (acks.iter().any(|a| a.load(Ordering::Relaxed) < 20)
                && writing.elapsed() < Duration::from_secs(10))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let was_leader = leader(&w, "n4").as_deref() == Some(primary.as_str());
        let killed = Instant::now();
        mark.set(killed);
        let sig = if planned { "-TERM" } else { "-9" };
        if let Err(e) = w.signal(&primary, sig) {
            failed = Some(e.to_string());
            break;
        }
        // Until every client's writes flow again (or 30 s).
        let end = Instant::now() + Duration::from_secs(30);
        let base: Vec<u64> = acks.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
            if acks
                .iter()
                .zip(&base)
                .all(|(a, b)| a.load(Ordering::Relaxed) > b + 20)
            {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Release);
        let stopped = Instant::now();
        let seen: Vec<Seen> = threads
            .into_iter()
            .map(|t| t.join().unwrap_or_default())
            .collect();
        let took = seen[0].first_after_mark.map(|t| t - killed);
        for (i, sn) in seen.iter().enumerate() {
            lost += sn.lost;
            unanswered += sn.unanswered_applied;
            let kinds = if planned {
                gaps_planned[i].push(sn.longest_gap);
                pauses_planned[i].push(sn.pause());
                errs_planned[i].push(sn.errors);
                &mut kinds_planned[i]
            } else {
                gaps_unplanned[i].push(sn.longest_gap);
                &mut kinds_unplanned[i]
            };
            for (m, n) in &sn.messages {
                *messages[usize::from(!planned)][i]
                    .entry(m.clone())
                    .or_default() += n;
            }
            for (k, n) in &sn.kinds {
                *kinds.entry(k.clone()).or_default() += n;
            }
        }
        if !planned {
            let d = took.unwrap_or_else(|| {
                never_recovered += 1;
                stopped - killed
            });
            unplanned.push(d);
            if was_leader {
                of_leader.push(d);
            } else {
                of_other.push(d);
            }
        }
        let clients: Vec<String> = seen
            .iter()
            .enumerate()
            .map(|(i, sn)| {
                format!(
                    "{}: gap {} ms (pause {} ms), errors: {}",
                    if i == 1 { third } else { CLIENTS[i].1 },
                    ms(sn.longest_gap),
                    ms(sn.pause()),
                    kinds(&sn.kinds)
                )
            })
            .collect();
        println!(
            "run {:>2}/{total} {:<9} primary {primary}{} -> {standby}: first write after {} ms; {}; {} lost",
            run + 1,
            if planned { "planned" } else { "unplanned" },
            if was_leader { " (leader)" } else { "" },
            took.map_or("-".into(), ms),
            clients.join("; "),
            seen.iter().map(|s| s.lost).sum::<u64>()
        );
        if let Err(e) = w.launch(&primary) {
            failed = Some(e.to_string());
            break;
        }
        if let Err(e) = w.wait_members(NODES, Duration::from_secs(60)) {
            failed = Some(e.to_string());
            break;
        }
    }
    if let Some(e) = failed {
        eprintln!("stopped early: {e}");
        drop(w);
        std::process::exit(1);
    }
    for v in gaps_planned
        .iter_mut()
        .chain(pauses_planned.iter_mut())
        .chain(gaps_unplanned.iter_mut())
        .chain([&mut unplanned, &mut of_leader, &mut of_other])
    {
        v.sort();
    }
    for v in errs_planned.iter_mut() {
        v.sort();
    }
    println!();
    println!("| measure | runs | p50 ms | p90 ms | p99 ms | max ms | goal |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let row = |what: &str, v: &[Duration], goal: &str| {
        println!(
            "| {what} | {} | {} | {} | {} | {} | {goal} |",
            v.len(),
            ms(pct(v, 50.0)),
            ms(pct(v, 90.0)),
            ms(pct(v, 99.0)),
            ms(v.last().copied().unwrap_or_default())
        )
    };
    row(
        "unplanned: SIGKILL → the standby acknowledges",
        &unplanned,
        "p99 ≤ 5000",
    );
    row("… the killed primary led the controller", &of_leader, "");
    row("… it did not", &of_other, "");
    for (i, (_, who)) in CLIENTS.iter().enumerate() {
        row(
            &format!("unplanned: longest gap, {who}"),
            &gaps_unplanned[i],
            "",
        );
    }
    for (i, (_, who)) in CLIENTS.iter().enumerate() {
        row(
            &format!("planned: SIGTERM, longest gap, {who}"),
            &gaps_planned[i],
            "",
        );
    }
    for (i, (_, who)) in CLIENTS.iter().enumerate() {
        row(
            &format!("planned: write pause (longest gap less the usual time per write), {who}"),
            &pauses_planned[i],
            "p99 ≤ 500",
        );
    }
    println!();
    for (i, (_, who)) in CLIENTS.iter().enumerate() {
        let e = &errs_planned[i];
        println!(
            "planned runs' errors, {who}: per run p50 {}, max {}, total {} ({}); unplanned runs' errors: {}",
            e.get(e.len().saturating_sub(1) / 2).copied().unwrap_or(0),
            e.last().copied().unwrap_or(0),
            e.iter().sum::<u64>(),
            kinds(&kinds_planned[i]),
            kinds(&kinds_unplanned[i])
        );
    }
    for (which, by_client) in ["planned", "unplanned"].iter().zip(&messages) {
        for (i, (_, who)) in CLIENTS.iter().enumerate() {
            for (m, n) in &by_client[i] {
                println!("{which} runs, {who}: {n} × {m}");
            }
        }
    }
    if never_recovered > 0 {
        println!(
            "unplanned runs in which the client of the primary never had a write acknowledged again (counted at the run's end, a lower bound): {never_recovered}"
        );
    }
    println!(
        "acknowledged writes lost over all runs: {lost}; writes whose answer was cut that took effect: {unanswered}"
    );
    drop(w);
    if a.keep {
        println!("the nodes' directories and logs: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
