//! `anykv bench regions`: what scaling regions costs, on an emulated world
//! (issue 18's measurements, docs/BENCHMARKS.md).
//!
//! 1. **Adding a region holding a database.** A world of `--from` nodes
//!    (its links shaped by the RTT table) and one database with `--keys`
//!    keys; `anykv regions add --to` (the local backend, in process), the
//!    database made to read there, until the new node serves the last key
//!    written. Compared, in the same run, with a plain bulk copy of the same
//!    bytes (the database's keys as an RDB stream holds them) over a QUIC
//!    connection between a `--from` and a `--to` address through the same
//!    shaper and the same transport settings as the nodes' links. Goal:
//!    within 2x.
//! 2. **Removing the database's primary region under writes.** Two
//!    clients write at a fixed pace while `anykv regions remove --from
//!    --move-primaries-to --to` runs: one through the new region's node,
//!    one through the primary's node in `--from` (its writes are the ones
//!    the move holds; it stops as the runner begins to stop nodes, whose
//!    clients Fly's proxy would send elsewhere). Every write's latency and
//!    every error in that window; the longest write is the pause. Each
//!    client waits for a reply before its next write, so a hold shows in
//!    few of its samples: the p99 the verdict uses is corrected for that
//!    (what a client writing at that pace whatever happens would see:
//!    HdrHistogram's `record_correct`), and the longest write must be
//!    within the bound too. With
//!    three nodes in `--from` (the default) the region has a controller
//!    group and the primary writes under its lease, as on Fly. Goal: p99
//!    ≤ 500 ms, no error.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_gossip::link::{quic_endpoint, RttTable, Shaper};
use anykv_gossip::tls::{ClusterCa, NODE_NAME};
use anykv_ops::regions::cluster::ClusterApi;
use anykv_ops::regions::run::{Change, Event, Runner};
use anykv_ops::regions::Step;

use crate::client::{create, Conn, Database, Reply};
use crate::world::local::LocalInfra;
use crate::world::{http, World, WorldFile, WorldSpec};

#[derive(clap::Args, Debug, Clone)]
pub struct RegionsArgs {
    /// The database's primary region.
    #[arg(long, default_value = "iad")]
    pub from: String,
    /// Nodes in `--from` (3: a controller group, leases).
    #[arg(long, default_value_t = 3)]
    pub from_nodes: usize,
    /// The region added, then made the primary region.
    #[arg(long, default_value = "syd")]
    pub to: String,
    /// Keys the database holds when the region is added.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// Milliseconds between the writer's requests during the removal.
    #[arg(long, default_value_t = 5)]
    pub pace_ms: u64,
    /// Third octet of the world's loopback addresses.
    #[arg(long, default_value_t = 72)]
    pub net: u8,
    /// The nodes' gossip port (the next five are theirs too).
    #[arg(long, default_value_t = 24900)]
    pub port: u16,
    /// Also write the report here (Markdown).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

const ADMIN: &str = "bench-regions-admin";
const TOKEN: &str = "bench-regions-token";

fn say(msg: impl AsRef<str>) {
    eprintln!("{}", msg.as_ref());
}

/// Runs both measurements; the report as Markdown.
pub fn run(a: RegionsArgs) -> Result<String, String> {
    let bin = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = bin.to_string_lossy().into_owned();
    let spec = WorldSpec::for_bench(
        "regions",
        &bin,
        a.net,
        a.port,
        &[(a.from.as_str(), a.from_nodes)],
        ADMIN,
        &["--save", "", "--appendonly", "no"],
    );
    let dir = spec.dir.clone();
    let mut w = World::start(&spec).map_err(|e| e.to_string())?;
    let result = measure(&a, &mut w, &dir);
    // Nodes the runner started are not the world's children.
    if let Ok(f) = WorldFile::load(&dir.join("world.json")) {
        for pid in f.nodes.iter().filter_map(crate::world::local::node_pid) {
            // SAFETY: kill(2) has no memory effects; the pid runs a node of
            // this world (found by its argv just now).
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
    w.stop(Duration::from_secs(5));
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            return Err(format!(
                "{e}\n(the world's directory, with each node's log, is kept: {})",
                dir.display()
            ))
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(out) = &a.out {
        std::fs::write(out, &report).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(report)
}

fn measure(a: &RegionsArgs, w: &mut World, dir: &std::path::Path) -> Result<String, String> {
    w.wait_members(a.from_nodes, Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    let mut db = Database {
        id: 1,
        name: "bulk".into(),
        token: TOKEN.into(),
        primary_region: a.from.clone(),
        read_regions: Vec::new(),
        durability: "async".into(),
        consistency: "ryw".into(),
    };
    create(w, "n1", &db)?;
    let n1 = w.node("n1").map_err(|e| e.to_string())?.clone();
    let mut c = wait_login(n1.resp, Duration::from_secs(30))?;
    say(format!("loading {} keys of {} bytes", a.keys, a.value_size));
    let value = "v".repeat(a.value_size);
    load(&mut c, a.keys, &value)?;
    let rdb_bytes = rdb_size(&mut c, a.keys)?;
    say(format!("the database's RDB: {rdb_bytes} bytes"));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let runner = |leaving: Option<&str>| -> Result<Runner<LocalInfra, ClusterApi>, String> {
        let f = WorldFile::load(&dir.join("world.json")).map_err(|e| e.to_string())?;
        let addrs = crate::world::local::running_nodes(&f, leaving)
            .iter()
            .map(|n| n.http.to_string())
            .collect();
        let mut r = Runner::new(
            LocalInfra {
                dir: dir.to_path_buf(),
                stop_timeout: Duration::from_secs(20),
            },
            ClusterApi::with_nodes(addrs, ADMIN),
        );
        r.wait_limit = Duration::from_secs(900);
        Ok(r)
    };
    let mut show = |e: Event| {
        if let Event::Step { index, of, step } = e {
            say(format!("  [{}/{of}] {step}", index + 1));
        }
    };

    // 1. Add the region, then read there.
    say(format!("adding {}", a.to));
    let started = Instant::now();
    rt.block_on(runner(None)?.run(
        &Change::Add {
            region: a.to.clone(),
            count: 1,
        },
        &mut show,
    ))
    .map_err(|e| e.to_string())?;
    let joined = started.elapsed();
    db.read_regions = vec![a.to.clone()];
    let mut entry = db.entry();
    entry["version"] = 2.into();
    match http(
        n1.http,
        "PUT",
        "/admin/tenants/1",
        ADMIN,
        &entry.to_string(),
    ) {
        Some((200 | 202, _)) => {}
        other => return Err(format!("making {} a read region: {other:?}", a.to)),
    }
    let new = WorldFile::load(&dir.join("world.json"))
        .map_err(|e| e.to_string())?
        .nodes
        .into_iter()
        .find(|n| n.region == a.to)
        .ok_or("the new node is not in world.json")?;
    let last = format!("k:{}", a.keys - 1);
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        // Served from its own copy: the read answers, and the copy there
        // has the primary's whole log (nothing is written meanwhile), so
        // the read was not one forwarded to the primary.
        let served = Conn::open(new.resp, Some(("bulk", TOKEN)))
            .and_then(|mut c| c.call(&["GET", &last]))
            .is_some_and(|r| matches!(r, Reply::Bulk(Some(ref b)) if b == value.as_bytes()));
        // (Asked of the new node: its own copy's offset is its store's,
        // the primary's as gossip last reported it, settled since the
        // load.)
        if served && copy_caught_up(new.http, &new.name) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{} did not serve {last} within 15 min", new.name));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let serving = started.elapsed();
    say(format!("{} serves the database after {serving:?}", a.to));

    let copy = rt.block_on(bulk_copy(&a.from, &a.to, a.net, rdb_bytes))?;
    say(format!("a bulk copy of {rdb_bytes} bytes: {copy:?}"));

    // 2. Remove the primary region while clients write through `to` and
    // through the primary's node.
    let primary = primary_node(w, dir)?;
    let pace = Duration::from_millis(a.pace_ms);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_from = Arc::new(AtomicBool::new(false));
    let spawn_writer = |addr: SocketAddr, prefix: &'static str, stop: Arc<AtomicBool>| {
        std::thread::spawn(move || writes(addr, prefix, pace, &stop))
    };
    let to_writer = spawn_writer(new.resp, "w", stop.clone());
    let from_writer = spawn_writer(primary.resp, "p", stop_from.clone());
    std::thread::sleep(Duration::from_secs(1));
    say(format!(
        "removing {} (primaries to {}) under writes through {} and {}",
        a.from, a.to, new.name, primary.name
    ));
    let removing = Instant::now();
    let mut show_removal = |e: Event| {
        if let Event::Step { step, .. } = &e {
            // The primary's old node is about to go: its client is done.
            if matches!(step, Step::StopNode { .. } | Step::DestroyNode { .. }) {
                stop_from.store(true, Ordering::Relaxed);
            }
        }
        show(e);
    };
    let removed = rt.block_on(runner(Some(&a.from))?.run(
        &Change::Remove {
            region: a.from.clone(),
            move_primaries_to: Some(a.to.clone()),
        },
        &mut show_removal,
    ));
    let removal = removing.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    stop_from.store(true, Ordering::Relaxed);
    let to_written = to_writer.join().map_err(|_| "the writer panicked")?;
    let from_written = from_writer.join().map_err(|_| "the writer panicked")?;
    removed.map_err(|e| e.to_string())?;

    let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1000.0);
    let ratio = serving.as_secs_f64() / copy.as_secs_f64();
    // The verdict is on the paced p99 (what a client writing at that
    // pace sees, held writes included) and on the longest write.
    let row = |through: &str, w: &Written| {
        let q = |h: &hdrhistogram::Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
        let (p99, max) = (q(&w.paced, 0.99), w.sent.max() as f64 / 1000.0);
        format!(
            "| writes through {through} while {from} is removed ({removal} ms, {n} writes) | sent: p50 {p50:.1} ms, p99 {sp99:.1} ms; paced (a write every {pace} ms): p99 {p99:.1} ms; longest (the pause) {max:.1} ms; {errors} errors | p99 ≤ 500 ms, 0 errors | {v} |\n",
            from = a.from,
            removal = ms(removal),
            n = w.sent.len(),
            p50 = q(&w.sent, 0.5),
            sp99 = q(&w.sent, 0.99),
            pace = a.pace_ms,
            errors = w.errors,
            v = if p99 <= 500.0 && max <= 500.0 && w.errors == 0 {
                "met"
            } else {
                "not met"
            },
        )
    };
    Ok(format!(
        "| measurement | result | goal | verdict |\n| --- | --- | --- | --- |\n\
         | add {to} holding {keys} keys ({rdb} B RDB): until it serves reads | {serve} ms (joined after {join} ms) | | |\n\
         | a bulk copy of the same bytes {from} → {to}, same shaped QUIC link | {copy} ms | | |\n\
         | ratio | {ratio:.2}x | ≤ 2x | {v1} |\n{r_to}{r_from}",
        to = a.to,
        from = a.from,
        keys = a.keys,
        rdb = rdb_bytes,
        serve = ms(serving),
        join = ms(joined),
        copy = ms(copy),
        v1 = if ratio <= 2.0 { "met" } else { "not met" },
        r_to = row(&format!("{} ({})", new.name, a.to), &to_written),
        r_from = row(
            &format!("{} ({}, the primary's node until the move)", primary.name, a.from),
            &from_written,
        ),
    ))
}

/// Whether `node`'s copy of database 1 has reached its primary's offset,
/// as `/cluster` on the node at `admin` shows them.
fn copy_caught_up(admin: SocketAddr, node: &str) -> bool {
    let Some((200, body)) = http(admin, "GET", "/cluster", "", "") else {
        return false;
    };
    // (Read as `anykv regions` reads it.)
    let Ok(state) = serde_json::from_str::<anykv_ops::regions::cluster::State>(&body) else {
        return false;
    };
    state.tenants.iter().any(|t| {
        t.id == 1
            && t.replicas.iter().any(|c| {
                c.node == node && matches!((c.offset, t.offset), (Some(c), Some(p)) if c >= p)
            })
    })
}

fn wait_login(addr: SocketAddr, limit: Duration) -> Result<Conn, String> {
    let end = Instant::now() + limit;
    loop {
        if let Some(c) = Conn::open(addr, Some(("bulk", TOKEN))) {
            return Ok(c);
        }
        if Instant::now() > end {
            return Err(format!("no login on {addr} within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SETs `k:0` .. `k:<n-1>` to `value`, 1000 in flight at a time.
fn load(c: &mut Conn, n: u64, value: &str) -> Result<(), String> {
    c.set_timeout(Duration::from_secs(30));
    let mut i = 0;
    while i < n {
        let batch = (n - i).min(1000);
        for k in i..i + batch {
            c.send(&["SET", &format!("k:{k}"), value])
                .ok_or("the connection closed while loading")?;
        }
        for _ in 0..batch {
            match c.next_reply()? {
                Reply::Simple(_) => {}
                other => return Err(format!("SET answered {other:?}")),
            }
        }
        i += batch;
    }
    Ok(())
}

/// The bytes the database's keys take in an RDB stream (what a full
/// sync sends): per key its `DUMP` payload less the payload's version and
/// checksum (10 bytes), plus the key as a length-prefixed string; plus
/// the stream's header and end. (A tenant's login may not run `SYNC`, so
/// `redis-cli --rdb` is not an option here.)
fn rdb_size(c: &mut Conn, n: u64) -> Result<u64, String> {
    let mut total = 9 + 1 + 8 + 64; // magic+version, EOF, checksum, aux fields
    let mut i = 0;
    while i < n {
        let batch = (n - i).min(1000);
        for k in i..i + batch {
            c.send(&["DUMP", &format!("k:{k}")])
                .ok_or("the connection closed while dumping")?;
        }
        for k in i..i + batch {
            let key_len = format!("k:{k}").len() as u64;
            match c.next_reply()? {
                Reply::Bulk(Some(b)) => {
                    let prefix = if key_len < 64 { 1 } else { 2 };
                    total += (b.len() as u64).saturating_sub(10) + prefix + key_len;
                }
                other => return Err(format!("DUMP k:{k} answered {other:?}")),
            }
        }
        i += batch;
    }
    Ok(total)
}

/// Time to send `bytes` over one QUIC stream from an address in region
/// `from` to one in `to`, through a shaper with the built-in RTT table
/// and the nodes' own TLS and transport settings (handshake included).
async fn bulk_copy(from: &str, to: &str, net: u8, bytes: u64) -> Result<Duration, String> {
    let table = RttTable::parse(crate::REGION_RTT).map_err(|e| e.to_string())?;
    let shaper = Shaper::new(table, 7);
    let (a, b) = (
        IpAddr::V4(Ipv4Addr::new(127, 0, net, 250)),
        IpAddr::V4(Ipv4Addr::new(127, 0, net, 251)),
    );
    shaper.set_region(a, from);
    shaper.set_region(b, to);
    let ca = ClusterCa::generate().map_err(|e| e.to_string())?;
    let (ta, tb) = (
        ca.issue("copy-a").map_err(|e| e.to_string())?,
        ca.issue("copy-b").map_err(|e| e.to_string())?,
    );
    let sock = |ip| std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).map_err(|e| e.to_string());
    let server = quic_endpoint(
        sock(a)?,
        shaper.clone(),
        quinn::EndpointConfig::default(),
        Some(ta.server_config().map_err(|e| e.to_string())?),
    )
    .map_err(|e| e.to_string())?;
    let client = quic_endpoint(sock(b)?, shaper, quinn::EndpointConfig::default(), None)
        .map_err(|e| e.to_string())?;
    let server_addr = server.local_addr().map_err(|e| e.to_string())?;
    let sender = tokio::spawn(async move {
        let conn = server
            .accept()
            .await
            .ok_or("no connection")?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let mut hello = [0u8; 1];
        recv.read_exact(&mut hello)
            .await
            .map_err(|e| e.to_string())?;
        let chunk = vec![0x5a_u8; 64 << 10];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            send.write_all(&chunk[..n])
                .await
                .map_err(|e| e.to_string())?;
            left -= n as u64;
        }
        send.finish().map_err(|e| e.to_string())?;
        let _ = send.stopped().await;
        Ok::<_, String>(())
    });
    let started = Instant::now();
    let conn = client
        .connect_with(
            tb.client_config().map_err(|e| e.to_string())?,
            server_addr,
            NODE_NAME,
        )
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(b"!").await.map_err(|e| e.to_string())?;
    let mut got = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    while let Some(n) = recv.read(&mut buf).await.map_err(|e| e.to_string())? {
        got += n as u64;
    }
    let took = started.elapsed();
    sender.await.map_err(|e| e.to_string())??;
    if got != bytes {
        return Err(format!("the copy got {got} of {bytes} bytes"));
    }
    Ok(took)
}

/// The node holding the database's primary now, from the world's view.
fn primary_node(w: &World, dir: &std::path::Path) -> Result<crate::world::NodeInfo, String> {
    let view = w.cluster_view("n1").ok_or("n1 does not answer /cluster")?;
    let name = view["tenants"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["id"] == 1))
        .and_then(|t| t["primary"].as_str())
        .ok_or("the database has no primary in n1's view")?
        .to_string();
    WorldFile::load(&dir.join("world.json"))
        .map_err(|e| e.to_string())?
        .nodes
        .into_iter()
        .find(|n| n.name == name)
        .ok_or_else(|| format!("the primary's node {name} is not in world.json"))
}

/// What a writer saw: its writes' latencies (µs) as it sent them, the
/// same as a client sending one every `pace` whatever happens would have
/// seen them, and its errors.
struct Written {
    /// One sample per write sent (the client waits for each reply, so
    /// while a write is held no other is sent: few samples of a hold).
    sent: hdrhistogram::Histogram<u64>,
    /// Corrected for that (HdrHistogram's `record_correct`): a write that
    /// took `d` also stands for the writes due every `pace` meanwhile,
    /// which would have waited `d - pace`, `d - 2 pace`, ...: the
    /// latencies of a client whose writes keep coming at that pace.
    paced: hdrhistogram::Histogram<u64>,
    errors: u64,
}

/// SETs `<prefix>:<i>` through `addr` every `pace` until `stop`.
fn writes(addr: SocketAddr, prefix: &str, pace: Duration, stop: &AtomicBool) -> Written {
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("3 significant digits");
    let mut paced = hist.clone();
    let interval = pace.as_micros() as u64;
    let mut errors = 0;
    let mut conn: Option<Conn> = None;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = conn.as_mut() else {
            conn = Conn::open(addr, Some(("bulk", TOKEN)));
            if conn.is_none() {
                errors += 1;
                std::thread::sleep(pace);
            }
            continue;
        };
        let t = Instant::now();
        match c.call(&["SET", &format!("{prefix}:{i}"), "x"]) {
            Some(Reply::Simple(_)) => {
                let us = t.elapsed().as_micros() as u64;
                let _ = hist.record(us);
                let _ = paced.record_correct(us, interval);
            }
            _ => {
                errors += 1;
                conn = None;
            }
        }
        i += 1;
        std::thread::sleep(pace.saturating_sub(t.elapsed()));
    }
    Written {
        sent: hist,
        paced,
        errors,
    }
}
