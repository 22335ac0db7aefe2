//! `anykv bench load`: a load generator for any Redis-compatible endpoint
//! (anykv, redis-server, a proxy), reporting throughput and HDR latencies.
//!
//! Many connections, each with a writer and a reader: the writer sends
//! `GET`/`SET` requests (the `--read-ratio` mix, keys uniform or zipfian,
//! values of `--value-size` bytes); the reader matches replies to them in
//! order. Two modes:
//!
//! - closed loop (default): each connection keeps `--pipeline` requests in
//!   flight; a request's latency runs from when it was sent;
//! - open loop (`--rate R`): requests are due at a fixed total rate,
//!   spread over the connections, whether or not the server keeps up;
//!   a request's latency runs from when it was *due*, not from when it
//!   could be sent, so a server that stalls is charged for every request
//!   that waited behind the stall (the coordinated-omission correction
//!   wrk2 makes). At most `--max-inflight` requests wait per connection.
//!
//! Latencies go into HdrHistograms (µs, 3 significant digits), merged
//! over the connections: p50, p90, p99, p99.9 and max, for all requests,
//! reads and writes.

pub mod keys;

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, Notify, Semaphore};
use tokio::time::Instant;

pub use keys::{Distribution, Keys};

#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// The endpoint: `redis://[user:password@]host:port`, or `host:port`.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub target: String,
    /// Connections.
    #[arg(long, short = 'c', default_value_t = 50)]
    pub connections: usize,
    /// Requests in flight per connection (closed loop).
    #[arg(long, short = 'P', default_value_t = 1)]
    pub pipeline: usize,
    /// Open loop: requests per second in total (default: closed loop).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop: requests waiting per connection before its writer waits.
    #[arg(long, default_value_t = 10_000)]
    pub max_inflight: usize,
    /// Run this long (seconds; default 10 unless --requests is given).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop after this many requests.
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// How keys are chosen.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,
    /// The zipfian's skew (YCSB's default 0.99).
    #[arg(long, default_value_t = 0.99)]
    pub zipf_theta: f64,
    /// Bytes per value written.
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// The share of reads (`GET`); the rest are writes (`SET`).
    #[arg(long, default_value_t = 0.8)]
    pub read_ratio: f64,
    /// Keys are `<prefix><number>`.
    #[arg(long, default_value = "key:")]
    pub key_prefix: String,
    /// Seed of the key and mix choices (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// A connection with requests in flight and no reply for this long
    /// (seconds) ends the run with an error.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Bad(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Latency percentiles, in microseconds.
#[derive(Clone, Debug, Default, serde::Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub target: String,
    pub mode: String,
    pub connections: usize,
    pub pipeline: usize,
    pub rate: Option<f64>,
    pub distribution: Distribution,
    pub read_ratio: f64,
    pub value_size: usize,
    pub seconds: f64,
    pub requests: u64,
    pub errors: u64,
    /// The first error reply seen, if any.
    pub first_error: Option<String>,
    pub ops_per_sec: f64,
    pub all: Latency,
    pub reads: Latency,
    pub writes: Latency,
}

impl Report {
    /// The report as a table for people.
    pub fn table(&self) -> String {
        let ms = |us: u64| format!("{:.3}", us as f64 / 1000.0);
        let mut out = format!(
            "{} ({}, {} connections, {} requests in {:.2} s: {:.0} ops/s, {} errors)\n",
            self.target,
            self.mode,
            self.connections,
            self.requests,
            self.seconds,
            self.ops_per_sec,
            self.errors
        );
        out.push_str(&format!(
            "{:<7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        ));
        for (name, l) in [
            ("all", &self.all),
            ("reads", &self.reads),
            ("writes", &self.writes),
        ] {
            out.push_str(&format!(
                "{:<7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                name,
                l.count,
                ms(l.p50_us),
                ms(l.p90_us),
                ms(l.p99_us),
                ms(l.p999_us),
                ms(l.max_us)
            ));
        }
        if let Some(e) = &self.first_error {
            out.push_str(&format!("first error: {e}\n"));
        }
        out
    }
}

/// `redis://[user:password@]host:port` or `host:port`: the address and
/// the login, if any.
pub fn parse_target(t: &str) -> Result<(String, Option<(String, String)>), LoadError> {
    if t.starts_with("rediss://") {
        return Err(LoadError::Bad(format!(
            "--target {t:?}: TLS (rediss://) is not supported by bench load; use the plain port"
        )));
    }
    let rest = t.strip_prefix("redis://").unwrap_or(t);
    // A database number (`/0`) selects nothing here: only 0 is used.
    let rest = match rest.split_once('/') {
        Some((r, db)) if db.is_empty() || db == "0" => r,
        Some((_, db)) => {
            return Err(LoadError::Bad(format!(
                "--target {t:?}: database {db:?}: bench load uses database 0"
            )))
        }
        None => rest,
    };
    let (login, addr) = match rest.rsplit_once('@') {
        Some((l, a)) => {
            let (user, pass) = l.split_once(':').unwrap_or(("default", l));
            let user = if user.is_empty() { "default" } else { user };
            (Some((user.to_string(), pass.to_string())), a)
        }
        None => (None, rest),
    };
    if addr.is_empty() {
        return Err(LoadError::Bad(format!(
            "--target {t:?}: expected redis://[user:password@]host:port"
        )));
    }
    let addr = if addr
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !addr.ends_with(']')
    {
        addr.to_string()
    } else {
        format!("{addr}:6379")
    };
    Ok((addr, login))
}

/// What every connection shares.
struct Shared {
    args: LoadArgs,
    keys: Keys,
    value: Vec<u8>,
    /// Requests claimed (a count-limited run stops at `--requests`).
    claimed: AtomicU64,
    done: AtomicU64,
    stop: AtomicBool,
    stopped: Notify,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Shared {
    /// Claims the next request, or None once the run is over.
    fn claim(&self) -> Option<u64> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let i = self.claimed.fetch_add(1, Ordering::Relaxed);
        match self.args.requests {
            Some(n) if i >= n => None,
            _ => Some(i),
        }
    }
}

/// One connection's histograms.
struct Hists {
    reads: Histogram<u64>,
    writes: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to an hour at 3 significant digits: both bounds are valid.
    match Histogram::new_with_bounds(1, 3_600_000_000, 3) {
        Ok(h) => h,
        Err(e) => unreachable!("fixed histogram bounds: {e}"),
    }
}

/// Runs the load described by `args` and reports it.
pub fn run(args: LoadArgs) -> Result<Report, LoadError> {
    if args.connections == 0 || args.pipeline == 0 {
        return Err(LoadError::Bad(
            "--connections and --pipeline must be at least 1".into(),
        ));
    }
    if !(0.0..=1.0).contains(&args.read_ratio) {
        return Err(LoadError::Bad("--read-ratio is a share, 0 to 1".into()));
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r >= 0.001)) {
        return Err(LoadError::Bad(
            "--rate is requests per second in total, at least 0.001".into(),
        ));
    }
    let seconds_ok = |v: f64| v.is_finite() && v > 0.0 && v <= 1e7;
    if args.duration.is_some_and(|d| !seconds_ok(d)) || !seconds_ok(args.timeout) {
        return Err(LoadError::Bad(
            "--duration and --timeout are seconds, above 0 and at most 10^7".into(),
        ));
    }
    if args.rate.is_some_and(|r| args.connections as f64 / r > 1e7) {
        return Err(LoadError::Bad(
            "--rate is too low for that many connections (each would wait months)".into(),
        ));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|source| LoadError::Io {
            what: "starting the runtime".into(),
            source,
        })?;
    rt.block_on(run_async(args))
}

async fn run_async(args: LoadArgs) -> Result<Report, LoadError> {
    let (addr, login) = parse_target(&args.target)?;
    let keys = Keys::new(args.keys, args.distribution, args.zipf_theta);
    let shared = Arc::new(Shared {
        value: vec![b'x'; args.value_size],
        keys,
        claimed: AtomicU64::new(0),
        done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        stopped: Notify::new(),
        errors: AtomicU64::new(0),
        first_error: std::sync::Mutex::new(None),
        args: args.clone(),
    });
    // Connect (and log in) every connection before the clock starts.
    let mut streams = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        streams.push(open(&addr, login.as_ref()).await?);
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let duration = match (args.duration, args.requests) {
        (Some(d), _) => Some(Duration::from_secs_f64(d.max(0.001))),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, s) in streams.into_iter().enumerate() {
        let rng = SmallRng::seed_from_u64(seed.wrapping_add(i as u64 * 0x9e37_79b9));
        tasks.push(tokio::spawn(connection(shared.clone(), s, rng, i, start)));
    }
    let progress = progress(&shared, duration);
    if let Some(d) = duration {
        let sh = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(start + d).await;
            sh.stop.store(true, Ordering::Relaxed);
            sh.stopped.notify_waiters();
        });
    }
    let mut reads = histogram();
    let mut writes = histogram();
    for t in tasks {
        match t.await {
            Ok(Ok(h)) => {
                let _ = reads.add(&h.reads);
                let _ = writes.add(&h.writes);
            }
            Ok(Err(e)) => {
                progress.finish();
                return Err(e);
            }
            Err(e) => {
                progress.finish();
                return Err(LoadError::Bad(format!("a connection's task failed: {e}")));
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    progress.finish();
    let mut all = reads.clone();
    let _ = all.add(&writes);
    let requests = all.len();
    let first_error = shared.first_error.lock().ok().and_then(|e| e.clone());
    Ok(Report {
        target: args.target.clone(),
        mode: match args.rate {
            Some(r) => format!("open loop at {r} req/s"),
            None => format!("closed loop, pipeline {}", args.pipeline),
        },
        connections: args.connections,
        pipeline: args.pipeline,
        rate: args.rate,
        distribution: args.distribution,
        read_ratio: args.read_ratio,
        value_size: args.value_size,
        seconds,
        requests,
        errors: shared.errors.load(Ordering::Relaxed),
        first_error,
        ops_per_sec: requests as f64 / seconds.max(1e-9),
        all: Latency::of(&all),
        reads: Latency::of(&reads),
        writes: Latency::of(&writes),
    })
}

/// A spinner with the count and rate so far on a terminal; plain lines
/// every 5 s otherwise.
struct ProgressTask {
    bar: Option<indicatif::ProgressBar>,
    task: tokio::task::JoinHandle<()>,
}

impl ProgressTask {
    fn finish(&self) {
        self.task.abort();
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn progress(shared: &Arc<Shared>, duration: Option<Duration>) -> ProgressTask {
    let terminal = std::io::stderr().is_terminal();
    let bar = terminal.then(|| {
        let b = match (duration, shared.args.requests) {
            (Some(d), _) => indicatif::ProgressBar::new(d.as_secs().max(1)),
            (None, Some(n)) => indicatif::ProgressBar::new(n),
            (None, None) => indicatif::ProgressBar::new_spinner(),
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
            b.set_style(style);
        }
        b
    });
    let sh = shared.clone();
    let b = bar.clone();
    let task = tokio::spawn(async move {
        let start = Instant::now();
        let mut last = 0u64;
        let every = if b.is_some() { 1 } else { 5 };
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        tick.tick().await;
        loop {
            tick.tick().await;
            let done = sh.done.load(Ordering::Relaxed);
            let rate = (done - last) / every;
            last = done;
            match &b {
                Some(b) => {
                    b.set_position(if duration.is_some() {
                        start.elapsed().as_secs()
                    } else {
                        done
                    });
                    b.set_message(format!("{done} requests, {rate} ops/s"));
                }
                None => eprintln!(
                    "bench load: {:.0} s, {done} requests, {rate} ops/s",
                    start.elapsed().as_secs_f64()
                ),
            }
        }
    });
    ProgressTask { bar, task }
}

async fn open(
    addr: &str,
    login: Option<&(String, String)>,
) -> Result<tokio::net::TcpStream, LoadError> {
    let io = |what: String| move |source| LoadError::Io { what, source };
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(io(format!("connecting to {addr}")))?;
    s.set_nodelay(true).map_err(io("TCP_NODELAY".to_string()))?;
    if let Some((user, pass)) = login {
        s.write_all(&crate::client::command(&["AUTH", user, pass]))
            .await
            .map_err(io(format!("AUTH on {addr}")))?;
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 512];
            let n = s
                .read(&mut chunk)
                .await
                .map_err(io(format!("AUTH on {addr}")))?;
            if n == 0 {
                return Err(LoadError::Bad(format!(
                    "{addr} closed the connection at AUTH"
                )));
            }
            buf.extend_from_slice(&chunk[..n]);
            match crate::client::parse_reply(&buf) {
                Ok(Some((crate::client::Reply::Simple(_), _))) => break,
                Ok(Some((r, _))) => return Err(LoadError::Bad(format!("AUTH on {addr}: {r:?}"))),
                Ok(None) => continue,
                Err(e) => return Err(LoadError::Bad(format!("AUTH on {addr}: {e}"))),
            }
        }
    }
    Ok(s)
}

/// A request in flight: when its latency started, and whether a read.
struct Sent {
    at: Instant,
    read: bool,
}

async fn connection(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    mut rng: SmallRng,
    index: usize,
    start: Instant,
) -> Result<Hists, LoadError> {
    let (mut rd, mut wr) = stream.into_split();
    let inflight: Arc<Mutex<VecDeque<Sent>>> = Arc::default();
    let arrived = Arc::new(Notify::new());
    let writer_done = Arc::new(AtomicBool::new(false));
    let open_loop = shared.args.rate;
    let window = match open_loop {
        Some(_) => shared.args.max_inflight.max(1),
        None => shared.args.pipeline,
    };
    let permits = Arc::new(Semaphore::new(window));
    // The writer.
    let w = {
        let shared = shared.clone();
        let inflight = inflight.clone();
        let permits = permits.clone();
        let writer_done = writer_done.clone();
        let arrived = arrived.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            // Open loop: this connection's share of the rate, its first
            // request offset so the connections do not send in step.
            let interval =
                open_loop.map(|r| Duration::from_secs_f64(shared.args.connections as f64 / r));
            let mut due = start
                + interval.map_or(Duration::ZERO, |i| {
                    i.mul_f64(index as f64 / shared.args.connections as f64)
                });
            let result = async {
                loop {
                    if interval.is_some() {
                        tokio::select! {
                            _ = tokio::time::sleep_until(due) => {}
                            _ = shared.stopped.notified() => {}
                        }
                        if Instant::now() < due {
                            break;
                        }
                    }
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        break;
                    };
                    permit.forget();
                    let mut batch = 1;
                    // Closed loop: every free slot of the window at once.
                    if open_loop.is_none() {
                        while let Ok(p) = permits.try_acquire() {
                            p.forget();
                            batch += 1;
                        }
                    }
                    buf.clear();
                    let mut sent = Vec::with_capacity(batch);
                    let mut last = false;
                    for _ in 0..batch {
                        if shared.claim().is_none() {
                            last = true;
                            break;
                        }
                        let key =
                            format!("{}{}", shared.args.key_prefix, shared.keys.next(&mut rng));
                        let read = rng.random_bool(shared.args.read_ratio);
                        if read {
                            buf.extend_from_slice(&crate::client::command(&["GET", &key]));
                        } else {
                            encode_set(&mut buf, &key, &shared.value);
                        }
                        sent.push(read);
                    }
                    let at = match interval {
                        Some(_) => due,
                        None => Instant::now(),
                    };
                    if !sent.is_empty() {
                        inflight
                            .lock()
                            .await
                            .extend(sent.iter().map(|&read| Sent { at, read }));
                        wr.write_all(&buf).await?;
                    }
                    if let Some(i) = interval {
                        due += i;
                    }
                    if last {
                        break;
                    }
                }
                Ok::<(), std::io::Error>(())
            }
            .await;
            writer_done.store(true, Ordering::Release);
            arrived.notify_one();
            result
        })
    };
    // The reader.
    let mut hists = Hists {
        reads: histogram(),
        writes: histogram(),
    };
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Parse what is there.
        let mut used = 0;
        loop {
            match crate::client::parse_reply(&buf[used..]) {
                Ok(Some((reply, n))) => {
                    used += n;
                    let Some(s) = inflight.lock().await.pop_front() else {
                        return Err(LoadError::Bad(
                            "a reply to no request: the server is not speaking RESP to us".into(),
                        ));
                    };
                    let us = s.at.elapsed().as_micros().clamp(1, 3_600_000_000) as u64;
                    let h = if s.read {
                        &mut hists.reads
                    } else {
                        &mut hists.writes
                    };
                    h.saturating_record(us);
                    shared.done.fetch_add(1, Ordering::Relaxed);
                    if let crate::client::Reply::Err(e) = reply {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut first) = shared.first_error.lock() {
                            first.get_or_insert(e);
                        }
                    }
                    permits.add_permits(1);
                }
                Ok(None) => break,
                Err(e) => return Err(LoadError::Bad(format!("a reply that is not RESP: {e}"))),
            }
        }
        buf.drain(..used);
        if writer_done.load(Ordering::Acquire) && inflight.lock().await.is_empty() {
            break;
        }
        let limit = Duration::from_secs_f64(shared.args.timeout);
        tokio::select! {
            n = tokio::time::timeout(limit, rd.read(&mut chunk)) => {
                let Ok(n) = n else {
                    if inflight.lock().await.is_empty() {
                        continue;
                    }
                    return Err(LoadError::Bad(format!(
                        "no reply within {limit:?} (the server is stuck or gone; --timeout)"
                    )));
                };
                let n = n.map_err(|source| LoadError::Io { what: "reading replies".into(), source })?;
                if n == 0 {
                    return Err(LoadError::Bad("the server closed a connection".into()));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            _ = arrived.notified() => {}
        }
    }
    match w.await {
        Ok(Ok(())) => Ok(hists),
        Ok(Err(source)) => Err(LoadError::Io {
            what: "sending requests".into(),
            source,
        }),
        Err(e) => Err(LoadError::Bad(format!("the writer failed: {e}"))),
    }
}

fn encode_set(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    buf.extend_from_slice(
        format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
            key.len(),
            value.len()
        )
        .as_bytes(),
    );
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_as_redis_urls_or_addresses() {
        assert_eq!(
            parse_target("redis://default:tok@127.0.0.1:6380").unwrap(),
            (
                "127.0.0.1:6380".into(),
                Some(("default".into(), "tok".into()))
            )
        );
        assert_eq!(
            parse_target("redis://:pw@h").unwrap(),
            ("h:6379".into(), Some(("default".into(), "pw".into())))
        );
        assert_eq!(
            parse_target("127.0.0.1:7000").unwrap(),
            ("127.0.0.1:7000".into(), None)
        );
        assert_eq!(
            parse_target("redis://[::1]:7000").unwrap(),
            ("[::1]:7000".into(), None)
        );
        assert!(parse_target("redis://").is_err());
    }
}
