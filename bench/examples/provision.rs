//! Provisioning latency end to end (docs/BENCHMARKS.md, Sidecar): from a
//! signed `POST /extensions` to the new database answering on its
//! REDIS_URL in every region it asks for.
//!
//! The emulated world (two iad nodes, one in cdg, one in syd, the builtin
//! RTT table on every inter-node byte) and `anykv sidecar` in front of the
//! iad nodes' admin API. Each round provisions a new database (primary
//! iad, read regions cdg and syd, as Fly would: signed, durability
//! `region`), then polls, every millisecond, a login (`AUTH default
//! <token>`) and a `GET` on a node of each region until each answers
//! without an error. Reported, in HdrHistograms: the API's answer, and
//! the time until every region answered (the goal: p99 < 500 ms).
//!
//! Run it with:
//!
//!     cargo build --release && cargo build --release --examples -p anykv-bench
//!     target/release/examples/provision --anykv target/release/anykv [--count 50]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anykv_bench::client::{Conn, Reply};
use anykv_bench::fail;
use anykv_bench::world::{World, WorldSpec};
use hdrhistogram::Histogram;

const ADMIN: &str = "provision-bench-admin";
const SECRET: &str = "provision-bench-fly-secret";
const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// Provisioning latency end to end (see the source's header).
#[derive(clap::Parser)]
struct Args {
    /// The `anykv` binary.
    #[arg(long, default_value = "target/release/anykv")]
    anykv: String,
    /// Databases provisioned, one after the other.
    #[arg(long, default_value_t = 50)]
    count: u32,
    /// Nodes get 127.0.<net>.1, .2, ...; the sidecar .100.
    #[arg(long, default_value_t = 62)]
    net: u8,
    /// The first node port (each node uses six from here); the sidecar
    /// listens on the port before it.
    #[arg(long, default_value_t = 23300)]
    port: u16,
    /// Keep the world's directory (the nodes' logs, `n1.log`..., and the
    /// sidecar's, `sidecar.log`) to look into a slow round; set RUST_LOG
    /// for more than the default level.
    #[arg(long)]
    keep: bool,
}

/// The sidecar's process, stopped when dropped.
struct Sidecar(Child);

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A signed `POST /extensions` to the sidecar at `addr`: (status, body).
fn provision(addr: SocketAddr, body: &str) -> Option<(u16, serde_json::Value)> {
    let sig = anykv_ops::sign::sign(SECRET.as_bytes(), body.as_bytes());
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "POST /extensions HTTP/1.1\r\nHost: {addr}\r\nX-Signature: {sig}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map_or("", |x| x.1);
    Some((code, serde_json::from_str(body).ok()?))
}

/// Whether the database answers on `node` with `token`: logged in, and a
/// `GET` is answered without an error.
fn answers(node: SocketAddr, token: &str) -> bool {
    Conn::open(node, Some(("default", token)))
        .and_then(|mut c| c.call(&["GET", "probe"]))
        .is_some_and(|r| !matches!(r, Reply::Err(_)))
}

/// Where the sidecar's log goes: `sidecar.log` in the world's directory
/// with `--keep`, nowhere otherwise.
fn sidecar_log(dir: &std::path::Path, keep: bool) -> Stdio {
    if !keep {
        return Stdio::null();
    }
    std::fs::File::create(dir.join("sidecar.log"))
        .map(Stdio::from)
        .unwrap_or_else(|e| fail(&format!("creating sidecar.log: {e}")))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn main() {
    let a = <Args as clap::Parser>::parse();
    anykv_bench::quiet_panics("provision");
    let spec = WorldSpec::for_bench(
        "provision",
        &a.anykv,
        a.net,
        a.port,
        &[("iad", 2), ("cdg", 1), ("syd", 1)],
        ADMIN,
        &["--save", "", "--appendonly", "no"],
    );
    let dir = spec.dir.clone();
    eprintln!("starting the world (iad x2, cdg, syd)");
    let w = World::start(&spec).unwrap_or_else(|e| fail(&e.to_string()));
    w.wait_members(4, Duration::from_secs(90))
        .unwrap_or_else(|e| fail(&e.to_string()));
    let node = |n: &str| w.node(n).unwrap_or_else(|e| fail(&e.to_string())).clone();
    let (n1, n2, cdg, syd) = (node("n1"), node("n2"), node("n3"), node("n4"));
    let listen: SocketAddr = format!("127.0.{}.100:{}", a.net, a.port - 1)
        .parse()
        .unwrap_or_else(|e| fail(&format!("{e}")));
    let sidecar = Sidecar(
        Command::new(&a.anykv)
            .args(["sidecar", "--listen", &listen.to_string()])
            .arg("--data")
            .arg(dir.join("sidecar"))
            .args(["--cluster-admin", &n1.http.to_string()])
            .args(["--cluster-admin", &n2.http.to_string()])
            .args(["--redis-url-host", &n1.resp.ip().to_string()])
            .args(["--redis-port", &n1.resp.port().to_string()])
            // Webhooks go nowhere here (nothing listens): retried, unread.
            .args(["--fly-api-base", &format!("http://127.0.{}.101:9", a.net)])
            .env("ANYKV_EXT_SECRET", SECRET)
            .env("ANYKV_WEBHOOK_SECRET", "provision-bench-webhooks")
            .env("ANYKV_TOKEN_KEY", KEY)
            .env("ANYKV_ADMIN_TOKEN", ADMIN)
            .stdout(sidecar_log(&dir, a.keep))
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("starting anykv sidecar: {e}"))),
    );
    let t = Instant::now();
    while TcpStream::connect(listen).is_err() {
        if t.elapsed() > Duration::from_secs(20) {
            fail("the sidecar did not listen within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut answer = Histogram::<u64>::new(3).unwrap_or_else(|e| fail(&e.to_string()));
    let mut everywhere = Histogram::<u64>::new(3).unwrap_or_else(|e| fail(&e.to_string()));
    let regions = [("iad", n1.resp), ("cdg", cdg.resp), ("syd", syd.resp)];
    for i in 0..a.count {
        let id = format!("bench_{i}");
        let body = serde_json::json!({
            "id": id, "name": format!("db{i}"), "organization_id": "org_bench",
            "organization_name": "Bench", "user_id": "u_bench",
            "user_email": "bench@customer.fly.io", "user_role": "admin",
            "primary_region": "iad", "read_regions": ["cdg", "syd"],
            "ip_address": "fdaa:0:1::3",
            "url": format!("http://{listen}/extensions"),
            "nonce": format!("bench-{}-{i}", std::process::id()), "timestamp": now_secs(),
        })
        .to_string();
        let started = std::time::SystemTime::now();
        let t0 = Instant::now();
        let (code, reply) =
            provision(listen, &body).unwrap_or_else(|| fail("the sidecar did not answer"));
        let answered = t0.elapsed();
        if code != 200 {
            fail(&format!("POST {id}: HTTP {code}: {reply}"));
        }
        let url = reply["config"]["REDIS_URL"].as_str().unwrap_or_default();
        let token = url
            .strip_prefix("redis://default:")
            .and_then(|r| r.split_once('@'))
            .map(|(t, _)| t.to_string())
            .unwrap_or_else(|| fail(&format!("REDIS_URL {url:?}")));
        let mut left: Vec<(&str, SocketAddr)> = regions.to_vec();
        while !left.is_empty() {
            left.retain(|(_, n)| !answers(*n, &token));
            if t0.elapsed() > Duration::from_secs(30) {
                fail(&format!("{id}: no answer within 30 s from {left:?}"));
            }
            if !left.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let all = t0.elapsed();
        let _ = answer.record(answered.as_micros() as u64);
        let _ = everywhere.record(all.as_micros() as u64);
        eprintln!(
            "{}/{} {id} (sent at {:.3}): answered in {:.1} ms, every region in {:.1} ms",
            i + 1,
            a.count,
            started
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            answered.as_secs_f64() * 1e3,
            all.as_secs_f64() * 1e3
        );
    }
    drop(sidecar);
    println!("| measured | n | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    for (what, h) in [
        ("POST /extensions answered", &answer),
        ("answers in iad, cdg and syd", &everywhere),
    ] {
        println!(
            "| {what} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            h.len(),
            ms(h, 0.5),
            ms(h, 0.9),
            ms(h, 0.99),
            h.max() as f64 / 1000.0
        );
    }
    let p99 = ms(&everywhere, 0.99);
    println!(
        "\ngoal p99 < 500 ms end to end: {} ({p99:.1} ms)",
        if p99 < 500.0 { "met" } else { "not met" }
    );
    drop(w);
    if a.keep {
        eprintln!("logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
