//! The clients of one measurement: in every region, read-heavy and
//! write-heavy clients on that region's node, a clock writer in the
//! primary region, and what they saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::client::{Conn, Reply};

/// Where a region's clients connect: the region's nodes, client `i`
/// starting at node `i` (Flycast spreads connections over a region's
/// machines) and going to the next when one is gone.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub region: String,
    pub nodes: Vec<SocketAddr>,
    /// (name, token) for `AUTH`.
    pub login: (String, String),
}

impl Endpoint {
    pub fn connect(&self) -> Option<Conn> {
        self.connect_from(0)
    }

    /// Connects to the region's nodes from the `i`th on.
    pub fn connect_from(&self, i: usize) -> Option<Conn> {
        let n = self.nodes.len().max(1);
        (0..self.nodes.len())
            .map(|k| self.nodes[(i + k) % n])
            .find_map(|a| {
                let mut c = Conn::open(a, Some((&self.login.0, &self.login.1)))?;
                c.set_timeout(Duration::from_secs(3));
                Some(c)
            })
    }
}

fn hist() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 600_000_000, 3) {
        Ok(h) => h,
        Err(e) => unreachable!("fixed histogram bounds: {e}"),
    }
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What one region's clients saw (µs).
pub struct Seen {
    pub reads: Histogram<u64>,
    pub writes: Histogram<u64>,
    /// PING on the same connections: the local round trip.
    pub local: Histogram<u64>,
    /// How old the clock key's value was when read.
    pub staleness: Histogram<u64>,
    pub ryw_checks: u64,
    pub ryw_violations: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Seen {
    fn new() -> Seen {
        Seen {
            reads: hist(),
            writes: hist(),
            local: hist(),
            staleness: hist(),
            ryw_checks: 0,
            ryw_violations: 0,
            errors: 0,
            first_error: None,
        }
    }

    fn add(&mut self, o: &Seen) {
        let _ = self.reads.add(&o.reads);
        let _ = self.writes.add(&o.writes);
        let _ = self.local.add(&o.local);
        let _ = self.staleness.add(&o.staleness);
        self.ryw_checks += o.ryw_checks;
        self.ryw_violations += o.ryw_violations;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

/// A client's mix.
#[derive(Clone, Copy)]
enum Mix {
    /// 95% reads.
    ReadHeavy,
    /// 50% writes.
    WriteHeavy,
}

/// Runs the clients for `duration` and returns what each region saw, in
/// the order of `endpoints` (the first is the primary region: the clock
/// writer's).
pub fn run(
    endpoints: &[Endpoint],
    clients: usize,
    pace: Duration,
    duration: Duration,
    tag: &str,
) -> Vec<Seen> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    // The clock: the primary region sets it every 10 ms.
    if let Some(first) = endpoints.first().cloned() {
        let stop = stop.clone();
        let key = format!("{tag}:clock");
        handles.push((
            usize::MAX,
            std::thread::spawn(move || {
                let mut seen = Seen::new();
                let mut conn = first.connect();
                while !stop.load(Ordering::Relaxed) {
                    let ok = conn
                        .as_mut()
                        .and_then(|c| c.call(&["SET", &key, &unix_us().to_string()]));
                    if !matches!(ok, Some(Reply::Simple(_))) {
                        seen.error(format!("the clock's SET: {ok:?}"));
                        conn = first.connect();
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                seen
            }),
        ));
    }
    for (ri, ep) in endpoints.iter().enumerate() {
        for ci in 0..clients {
            for mix in [Mix::ReadHeavy, Mix::WriteHeavy] {
                let ep = ep.clone();
                let stop = stop.clone();
                let tag = tag.to_string();
                let seed = (ri * 1000 + ci * 2 + matches!(mix, Mix::WriteHeavy) as usize) as u64;
                handles.push((
                    ri,
                    std::thread::spawn(move || {
                        client(
                            &ep,
                            ci * 2 + matches!(mix, Mix::WriteHeavy) as usize,
                            mix,
                            seed,
                            pace,
                            &tag,
                            &stop,
                        )
                    }),
                ));
            }
        }
    }
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut written = vec![format!("{tag}:clock")];
    for (ri, ep) in endpoints.iter().enumerate() {
        for ci in 0..clients {
            for mix in 0..2 {
                written.push(format!(
                    "{tag}:ryw:{}:{}",
                    ep.region,
                    ri * 1000 + ci * 2 + mix
                ));
            }
        }
    }
    let mut out: Vec<Seen> = endpoints.iter().map(|_| Seen::new()).collect();
    for (ri, h) in handles {
        let Ok(s) = h.join() else { continue };
        if let Some(o) = out.get_mut(ri) {
            o.add(&s);
        } else if let Some(o) = out.first_mut() {
            // The clock writer's errors count in the primary region.
            o.errors += s.errors;
            if o.first_error.is_none() {
                o.first_error = s.first_error;
            }
        }
    }
    // Leave the database as it was (a real deployment's, with --target).
    if let Some(mut c) = endpoints.first().and_then(Endpoint::connect) {
        for k in written.chunks(100) {
            let mut args = vec!["DEL"];
            args.extend(k.iter().map(String::as_str));
            let _ = c.call(&args);
        }
    }
    out
}

fn client(
    ep: &Endpoint,
    index: usize,
    mix: Mix,
    seed: u64,
    pace: Duration,
    tag: &str,
    stop: &AtomicBool,
) -> Seen {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut seen = Seen::new();
    let mut conn = ep.connect_from(index);
    let me = format!("{tag}:ryw:{}:{seed}", ep.region);
    let clock = format!("{tag}:clock");
    let mut n: u64 = 0;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        next += pace;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
        let Some(c) = conn.as_mut() else {
            seen.error(format!("no node of {} answers", ep.region));
            std::thread::sleep(Duration::from_millis(100));
            conn = ep.connect_from(index);
            continue;
        };
        n += 1;
        let op = rng.random_range(0..100u32);
        let write_share = match mix {
            Mix::ReadHeavy => 5,
            Mix::WriteHeavy => 50,
        };
        let result = if n.is_multiple_of(10) {
            // Staleness: how old the clock's value is here.
            let t = Instant::now();
            match c.call(&["GET", &clock]) {
                Some(Reply::Bulk(Some(v))) => {
                    seen.reads
                        .saturating_record(t.elapsed().as_micros().max(1) as u64);
                    let set_at: u64 = std::str::from_utf8(&v)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    if set_at > 0 {
                        seen.staleness
                            .saturating_record(unix_us().saturating_sub(set_at).max(1));
                    }
                    Ok(())
                }
                Some(Reply::Bulk(None)) => Ok(()),
                other => Err(format!("GET clock: {other:?}")),
            }
        } else if n % 10 == 5 {
            let t = Instant::now();
            match c.call(&["PING"]) {
                Some(Reply::Simple(_)) => {
                    seen.local
                        .saturating_record(t.elapsed().as_micros().max(1) as u64);
                    Ok(())
                }
                other => Err(format!("PING: {other:?}")),
            }
        } else if op < write_share {
            // A write, then its read-your-writes check.
            let v = n.to_string();
            let t = Instant::now();
            match c.call(&["SET", &me, &v]) {
                Some(Reply::Simple(_)) => {
                    seen.writes
                        .saturating_record(t.elapsed().as_micros().max(1) as u64);
                    let t = Instant::now();
                    match c.call(&["GET", &me]) {
                        Some(Reply::Bulk(got)) => {
                            seen.reads
                                .saturating_record(t.elapsed().as_micros().max(1) as u64);
                            seen.ryw_checks += 1;
                            if got.as_deref() != Some(v.as_bytes()) {
                                seen.ryw_violations += 1;
                            }
                            Ok(())
                        }
                        other => Err(format!("GET after SET: {other:?}")),
                    }
                }
                other => Err(format!("SET: {other:?}")),
            }
        } else {
            let key = format!("{tag}:k:{}", rng.random_range(0..1000u32));
            let t = Instant::now();
            match c.call(&["GET", &key]) {
                Some(Reply::Bulk(_)) => {
                    seen.reads
                        .saturating_record(t.elapsed().as_micros().max(1) as u64);
                    Ok(())
                }
                other => Err(format!("GET: {other:?}")),
            }
        };
        if let Err(e) = result {
            seen.error(e);
            conn = ep.connect_from(index);
        }
    }
    seen
}

/// One write of the failover run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WriteEvent {
    pub region: String,
    /// Seconds since the run started.
    pub at: f64,
    pub ms: f64,
    pub ok: bool,
}

/// Writes unique keys from every region every 20 ms until `stop`; each
/// write's outcome, and the keys acknowledged.
pub fn failover_writers(
    endpoints: &[Endpoint],
    start: Instant,
    stop: Arc<AtomicBool>,
    tag: &str,
) -> Vec<std::thread::JoinHandle<(Vec<WriteEvent>, Vec<String>)>> {
    endpoints
        .iter()
        .map(|ep| {
            let ep = ep.clone();
            let stop = stop.clone();
            let tag = tag.to_string();
            std::thread::spawn(move || {
                let mut events = Vec::new();
                let mut acked = Vec::new();
                let mut conn = ep.connect();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let key = format!("{tag}:fo:{}:{i}", ep.region);
                    let t = Instant::now();
                    let ok = conn
                        .as_mut()
                        .and_then(|c| c.call(&["SET", &key, "1"]))
                        .is_some_and(|r| matches!(r, Reply::Simple(_)));
                    events.push(WriteEvent {
                        region: ep.region.clone(),
                        at: t.duration_since(start).as_secs_f64(),
                        ms: t.elapsed().as_secs_f64() * 1000.0,
                        ok,
                    });
                    if ok {
                        acked.push(key);
                    } else {
                        conn = ep.connect();
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                (events, acked)
            })
        })
        .collect()
}

/// Which of `keys` a connection to `ep` does not find.
pub fn missing(ep: &Endpoint, keys: &[String]) -> Result<Vec<String>, String> {
    let mut c = ep
        .connect()
        .ok_or_else(|| format!("no node of {} answers", ep.region))?;
    let mut lost = Vec::new();
    for k in keys {
        match c.call(&["EXISTS", k]) {
            Some(Reply::Int(1)) => {}
            Some(Reply::Int(0)) => lost.push(k.clone()),
            other => return Err(format!("EXISTS {k}: {other:?}")),
        }
    }
    Ok(lost)
}

/// A shared list of lag samples: (seconds since start, region, lag ms).
pub type LagSamples = Arc<Mutex<Vec<(f64, String, f64)>>>;
