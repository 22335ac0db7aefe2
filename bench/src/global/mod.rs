//! `anykv bench global`: what multi-region buys, measured per region.
//!
//! In an emulated world (node processes in `--regions`, the RTT table on
//! every inter-node byte; [`crate::world`]) three databases are created
//! with the same primary region and read regions, differing in how reads
//! are routed (and baseline (b) in its replication), and measured one
//! after the other in the same world:
//!
//! - **anykv** (consistency `ryw`): reads from the nearest copy that has
//!   the connection's own writes, writes to the primary;
//! - **baseline (a)**, one primary region serving every region
//!   (consistency `strong`: every read goes to the primary);
//! - **baseline (b)**, reads local, writes forwarded, no read-your-writes
//!   (consistency `nearest`, durability `async`: Upstash's
//!   Redis-protocol model, whose replication is asynchronous).
//!
//! In every region, read-heavy (95% reads) and write-heavy (50%) clients
//! connect to their own region's node ([`workload`]); each write is
//! followed by a read of the same key (a read-your-writes check); every
//! tenth request reads a clock key the primary region sets every 10 ms
//! (staleness: how old the value read is); every tenth `PING`s (the local
//! round trip, the reference for "a direct local read"). The primary's
//! `/cluster` view is sampled for each replica's lag. Then, on the anykv
//! database, writers in every region keep writing while the primary's
//! process is killed (SIGKILL): time to the first acknowledged write,
//! errors, and whether every acknowledged write is still there.
//!
//! `--target region=redis://...` (repeated) measures a real deployment's
//! database instead: the same clients, no baselines, no kill.
//!
//! Writes `report.md`, `latency.svg`, `lag.svg` and `failover.svg` into
//! `--out` (printed); `--json` prints the report as JSON.

mod report;
pub mod workload;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anykv_gossip::link::RttTable;
use serde::Serialize;

use crate::client::Database;
use crate::world::{World, WorldSpec};
use workload::{Endpoint, LagSamples, Seen, WriteEvent};

pub use report::Report;

#[derive(clap::Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Regions of the emulated world and how many nodes each, primary
    /// region first (3 there for automatic failover).
    #[arg(long, value_delimiter = ',', default_value = "iad=3,cdg=1,syd=1", value_parser = crate::demo::parse_region)]
    pub regions: Vec<(String, usize)>,
    /// Seconds each strategy is measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Clients per region and mix (a read-heavy and a write-heavy one each).
    #[arg(long, default_value_t = 2)]
    pub clients: usize,
    /// Each client's pace: one request every this many ms at most.
    #[arg(long, default_value_t = 10)]
    pub pace_ms: u64,
    /// Skip the failover (no primary killed).
    #[arg(long)]
    pub no_failover: bool,
    /// How long the writers keep going after the kill (seconds).
    #[arg(long, default_value_t = 10.0)]
    pub failover_window: f64,
    /// Measure a real deployment: `REGION=redis://user:token@host:port`,
    /// once per region, the primary region first. No world is started.
    #[arg(long = "target", value_parser = parse_target)]
    pub targets: Vec<(String, String)>,
    /// Where the report and plots go (default: `global-<unix time>` in
    /// the current directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the report as JSON too.
    #[arg(long)]
    pub json: bool,
    /// The world's nodes get 127.0.<net>.1, .2, …
    #[arg(long, default_value_t = 73)]
    pub net: u8,
    /// The world's first port (each node uses six from it).
    #[arg(long, default_value_t = 24200)]
    pub port: u16,
    /// Keep the world's directory (the nodes' logs).
    #[arg(long)]
    pub keep: bool,
}

fn parse_target(s: &str) -> Result<(String, String), String> {
    let (r, url) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected REGION=redis://user:token@host:port"))?;
    Ok((r.to_ascii_lowercase(), url.to_string()))
}

/// Why the benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum GlobalError {
    #[error(transparent)]
    World(#[from] crate::world::WorldError),
    #[error("{0}")]
    Failed(String),
}

fn failed(m: impl Into<String>) -> GlobalError {
    GlobalError::Failed(m.into())
}

/// One region's figures for one strategy (ms).
#[derive(Clone, Debug, Serialize)]
pub struct RegionResult {
    pub region: String,
    /// The emulated RTT to the primary region (None for a real target).
    pub rtt_to_primary_ms: Option<f64>,
    pub local_p50_ms: f64,
    pub read_p50_ms: f64,
    pub read_p99_ms: f64,
    pub write_p50_ms: f64,
    pub write_p99_ms: f64,
    pub reads: u64,
    pub writes: u64,
    pub staleness_p50_ms: f64,
    pub staleness_p99_ms: f64,
    pub ryw_checks: u64,
    pub ryw_violations: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Replication lag of this region's replica (the primary's view).
    pub lag_p50_ms: Option<f64>,
    pub lag_max_ms: Option<f64>,
}

/// One strategy's run.
#[derive(Clone, Debug, Serialize)]
pub struct StrategyResult {
    pub strategy: String,
    pub consistency: String,
    pub durability: String,
    pub regions: Vec<RegionResult>,
    /// (seconds, region, lag ms) samples.
    pub lag: Vec<(f64, String, f64)>,
}

/// The kill of the primary's process and what writers saw.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverResult {
    pub killed: String,
    /// Seconds since the writers started.
    pub killed_at: f64,
    pub new_primary: Option<String>,
    /// Per region: seconds from the kill to the first acknowledged write
    /// that started after it (None: none within the window).
    pub first_ack_after_kill_s: BTreeMap<String, Option<f64>>,
    pub errors: u64,
    pub acknowledged: u64,
    pub lost: u64,
    pub events: Vec<WriteEvent>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn summarize(
    endpoints: &[Endpoint],
    seen: &[Seen],
    table: Option<&RttTable>,
    lag: &[(f64, String, f64)],
) -> Vec<RegionResult> {
    let primary = endpoints
        .first()
        .map(|e| e.region.clone())
        .unwrap_or_default();
    endpoints
        .iter()
        .zip(seen)
        .map(|(ep, s)| {
            let mut lags: Vec<f64> = lag
                .iter()
                .filter(|(_, r, _)| *r == ep.region)
                .map(|(_, _, l)| *l)
                .collect();
            lags.sort_by(|a, b| a.total_cmp(b));
            RegionResult {
                region: ep.region.clone(),
                rtt_to_primary_ms: table
                    .and_then(|t| t.rtt(&ep.region, &primary))
                    .map(|d| d.as_secs_f64() * 1000.0),
                local_p50_ms: ms(s.local.value_at_quantile(0.5)),
                read_p50_ms: ms(s.reads.value_at_quantile(0.5)),
                read_p99_ms: ms(s.reads.value_at_quantile(0.99)),
                write_p50_ms: ms(s.writes.value_at_quantile(0.5)),
                write_p99_ms: ms(s.writes.value_at_quantile(0.99)),
                reads: s.reads.len(),
                writes: s.writes.len(),
                staleness_p50_ms: ms(s.staleness.value_at_quantile(0.5)),
                staleness_p99_ms: ms(s.staleness.value_at_quantile(0.99)),
                ryw_checks: s.ryw_checks,
                ryw_violations: s.ryw_violations,
                errors: s.errors,
                first_error: s.first_error.clone(),
                lag_p50_ms: (!lags.is_empty()).then(|| lags[lags.len() / 2]),
                lag_max_ms: lags.last().copied(),
            }
        })
        .collect()
}

/// Samples the primary's view of database `id`'s replicas every 250 ms.
fn sample_lag(w: &World, id: u64, start: Instant, stop: &AtomicBool, out: &LagSamples) {
    let names: Vec<String> = w.file.nodes.iter().map(|n| n.name.clone()).collect();
    let region_of: BTreeMap<String, String> = w
        .file
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.region.clone()))
        .collect();
    while !stop.load(Ordering::Relaxed) {
        let primary = names.iter().find_map(|n| {
            crate::client::record(w, n, id).and_then(|r| r["primary"].as_str().map(str::to_string))
        });
        if let Some(t) = primary.and_then(|p| crate::client::record(w, &p, id)) {
            let at = start.elapsed().as_secs_f64();
            for r in t["replicas"].as_array().into_iter().flatten() {
                let (Some(node), Some(lag)) = (r["node"].as_str(), r["lag_ms"].as_f64()) else {
                    continue;
                };
                // The read regions' replicas (the standby is in the
                // primary's region).
                let region = region_of.get(node).cloned().unwrap_or_default();
                if let Ok(mut v) = out.lock() {
                    v.push((at, region, lag));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs the benchmark and writes its report.
pub fn run(a: GlobalArgs) -> Result<(Report, PathBuf), GlobalError> {
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("global-{}", anykv_ops::unix_now())));
    let ok = |v: f64| v.is_finite() && (0.5..=86_400.0).contains(&v);
    if !ok(a.duration) || !ok(a.failover_window) {
        return Err(failed(
            "--duration and --failover-window are seconds, from 0.5 to 86400",
        ));
    }
    std::fs::create_dir_all(&out)
        .map_err(|e| failed(format!("creating {}: {e}", out.display())))?;
    let duration = Duration::from_secs_f64(a.duration);
    let pace = Duration::from_millis(a.pace_ms.max(1));
    let report = if a.targets.is_empty() {
        run_world(&a, duration, pace)?
    } else {
        run_targets(&a, duration, pace)?
    };
    report::write(&report, &out).map_err(|e| failed(format!("writing the report: {e}")))?;
    Ok((report, out))
}

fn run_targets(a: &GlobalArgs, duration: Duration, pace: Duration) -> Result<Report, GlobalError> {
    let mut endpoints = Vec::new();
    for (region, url) in &a.targets {
        let (addr, login) = crate::load::parse_target(url).map_err(|e| failed(e.to_string()))?;
        let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&addr)
            .ok()
            .and_then(|mut i| i.next())
            .ok_or_else(|| failed(format!("{region}: cannot resolve {addr}")))?;
        endpoints.push(Endpoint {
            region: region.clone(),
            nodes: vec![addr],
            login: login.unwrap_or_else(|| ("default".into(), String::new())),
        });
    }
    eprintln!(
        "bench global: measuring {} regions for {duration:?}",
        endpoints.len()
    );
    // Its own keys: runs from several machines at once do not share them.
    let tag = format!(
        "global:target:{}-{}",
        std::process::id(),
        anykv_ops::unix_now_ms()
    );
    let seen = workload::run(&endpoints, a.clients, pace, duration, &tag);
    Ok(Report {
        world: None,
        strategies: vec![StrategyResult {
            strategy: "target".into(),
            consistency: "as deployed".into(),
            durability: "as deployed".into(),
            regions: summarize(&endpoints, &seen, None, &[]),
            lag: Vec::new(),
        }],
        failover: None,
    })
}

fn run_world(a: &GlobalArgs, duration: Duration, pace: Duration) -> Result<Report, GlobalError> {
    let table = RttTable::parse(crate::REGION_RTT).map_err(|e| failed(e.to_string()))?;
    crate::demo::known_regions(&table, &a.regions).map_err(failed)?;
    let bin = std::env::current_exe().map_err(|e| failed(format!("finding anykv: {e}")))?;
    let regions: Vec<(&str, usize)> = a.regions.iter().map(|(r, n)| (r.as_str(), *n)).collect();
    let mut spec = WorldSpec::for_bench(
        "global",
        &bin.display().to_string(),
        a.net,
        a.port,
        &regions,
        "bench-global-admin",
        &["--save", "", "--appendonly", "no"],
    );
    spec.launch.die_with_parent = true;
    let dir = spec.dir.clone();
    let total: usize = a.regions.iter().map(|(_, n)| n).sum();
    eprintln!("bench global: starting {total} nodes ({})", dir.display());
    let mut world = World::start(&spec)?;
    let result = measure_world(a, &mut world, &table, duration, pace);
    world.stop(Duration::from_secs(5));
    if a.keep || result.is_err() {
        eprintln!("bench global: the nodes' logs are in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn measure_world(
    a: &GlobalArgs,
    world: &mut World,
    table: &RttTable,
    duration: Duration,
    pace: Duration,
) -> Result<Report, GlobalError> {
    let total: usize = a.regions.iter().map(|(_, n)| n).sum();
    world.wait_members(total, Duration::from_secs(60))?;
    let primary = a.regions[0].0.clone();
    if a.regions[0].1 >= 3 {
        crate::client::wait_controller(world, "n1", &primary, Duration::from_secs(60))
            .map_err(failed)?;
    }
    let read_regions: Vec<String> = a.regions[1..].iter().map(|(r, _)| r.clone()).collect();
    // (name, consistency, durability): baseline (b) replicates
    // asynchronously, as Upstash's global databases do.
    let strategies = [
        ("anykv", "ryw", "region"),
        ("baseline (a): one primary region", "strong", "region"),
        (
            "baseline (b): local reads, no read-your-writes",
            "nearest",
            "async",
        ),
    ];
    let mut dbs = Vec::new();
    for (i, (_, consistency, durability)) in strategies.iter().enumerate() {
        let db = Database {
            id: 700 + i as u64,
            name: format!("global-{consistency}"),
            token: format!("bench-global-{consistency}-token-0123456789"),
            primary_region: primary.clone(),
            read_regions: read_regions.clone(),
            durability: (*durability).into(),
            consistency: (*consistency).into(),
        };
        crate::client::create(world, "n1", &db).map_err(failed)?;
        dbs.push(db);
    }
    let endpoints = |db: &Database| -> Vec<Endpoint> {
        a.regions
            .iter()
            .map(|(region, _)| Endpoint {
                region: region.clone(),
                nodes: world
                    .file
                    .nodes
                    .iter()
                    .filter(|n| &n.region == region)
                    .map(|n| n.resp)
                    .collect(),
                login: (db.name.clone(), db.token.clone()),
            })
            .collect()
    };
    for db in &dbs {
        if a.regions[0].1 >= 2 {
            crate::client::settled(world, "n1", db.id, 0, Duration::from_secs(60))
                .map_err(failed)?;
        }
        wait_served(&endpoints(db), Duration::from_secs(60))?;
    }
    let mut results = Vec::new();
    for ((name, consistency, durability), db) in strategies.iter().zip(&dbs) {
        eprintln!(
            "bench global: {name} (consistency {consistency}, durability {durability}) for {duration:?}"
        );
        let eps = endpoints(db);
        let lag: LagSamples = Arc::new(Mutex::new(Vec::new()));
        let stop = AtomicBool::new(false);
        let start = Instant::now();
        let seen = std::thread::scope(|s| {
            s.spawn(|| sample_lag(world, db.id, start, &stop, &lag));
            let seen = workload::run(
                &eps,
                a.clients,
                pace,
                duration,
                &format!("global:{consistency}"),
            );
            stop.store(true, Ordering::Relaxed);
            seen
        });
        let lag = lag.lock().map(|l| l.clone()).unwrap_or_default();
        results.push(StrategyResult {
            strategy: (*name).into(),
            consistency: (*consistency).into(),
            durability: (*durability).into(),
            regions: summarize(&eps, &seen, Some(table), &lag),
            lag,
        });
    }
    let failover = if a.no_failover || a.regions[0].1 < 3 {
        None
    } else {
        Some(fail_over(a, world, &dbs[0], &endpoints(&dbs[0]))?)
    };
    Ok(Report {
        world: Some(
            a.regions
                .iter()
                .map(|(r, n)| format!("{r}={n}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
        strategies: results,
        failover,
    })
}

/// Waits until a fresh connection in every region is answered.
fn wait_served(eps: &[Endpoint], limit: Duration) -> Result<(), GlobalError> {
    let end = Instant::now() + limit;
    for ep in eps {
        while ep
            .connect()
            .and_then(|mut c| c.call(&["GET", "global:probe"]))
            .is_none_or(|r| matches!(r, crate::client::Reply::Err(_)))
        {
            if Instant::now() > end {
                return Err(failed(format!(
                    "{} was not served within {limit:?}",
                    ep.region
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

fn fail_over(
    a: &GlobalArgs,
    world: &mut World,
    db: &Database,
    eps: &[Endpoint],
) -> Result<FailoverResult, GlobalError> {
    let role =
        crate::client::settled(world, "n1", db.id, 0, Duration::from_secs(30)).map_err(failed)?;
    eprintln!(
        "bench global: killing {} (the primary) while every region writes",
        role.primary
    );
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let writers = workload::failover_writers(eps, start, stop.clone(), "global:failover");
    std::thread::sleep(Duration::from_secs(1));
    world.signal(&role.primary, "-9")?;
    let killed_at = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs_f64(a.failover_window));
    stop.store(true, Ordering::Relaxed);
    let mut events = Vec::new();
    let mut acked: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (ep, h) in eps.iter().zip(writers) {
        let (ev, keys) = h.join().map_err(|_| failed("a writer failed"))?;
        events.extend(ev);
        acked.insert(ep.region.clone(), keys);
    }
    let survivor = world
        .file
        .nodes
        .iter()
        .find(|n| n.name != role.primary)
        .map(|n| n.name.clone())
        .unwrap_or_default();
    let new_primary = crate::client::record(world, &survivor, db.id)
        .and_then(|r| r["primary"].as_str().map(str::to_string))
        .filter(|p| *p != role.primary);
    // Every acknowledged write must still be there: read in the primary
    // region once the new primary has an in-sync standby again (a fresh
    // connection may read any copy of the region).
    if !survivor.is_empty() {
        crate::client::settled(world, &survivor, db.id, role.epoch, Duration::from_secs(30))
            .map_err(failed)?;
    }
    let mut lost = 0;
    let mut acknowledged = 0;
    for keys in acked.values() {
        acknowledged += keys.len() as u64;
        lost += workload::missing(&eps[0], keys).map_err(failed)?.len() as u64;
    }
    let mut first_ack = BTreeMap::new();
    for ep in eps {
        let t = events
            .iter()
            .filter(|e| e.region == ep.region && e.ok && e.at >= killed_at)
            .map(|e| e.at + e.ms / 1000.0 - killed_at)
            .reduce(f64::min);
        first_ack.insert(ep.region.clone(), t);
    }
    Ok(FailoverResult {
        killed: role.primary,
        killed_at,
        new_primary,
        first_ack_after_kill_s: first_ack,
        errors: events.iter().filter(|e| !e.ok).count() as u64,
        acknowledged,
        lost,
        events,
    })
}
