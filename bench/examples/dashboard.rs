//! Dashboard page loads for an organization with 100 databases
//! (docs/BENCHMARKS.md, Sidecar; the goal: under 200 ms).
//!
//! A sidecar state made for the run (100 databases of one organization,
//! each with 30 days of usage), `anykv sidecar` serving it with Fly's
//! OAuth pointed at the fake Fly (`anykv_ops::fakefly`, in this process),
//! a user signed in through it as a browser would be (the authorize page,
//! the callback, the session cookie). Then, one request at a time, the
//! list (`GET /dashboard`, 100 rows) and a database's page (its usage
//! table and 30-day chart), each timed from the request to the last byte
//! of the answer, in HdrHistograms.
//!
//! Then the same pages in headless chromium (Debian's `chromium` and
//! `chromium-driver`; WebDriver), signed in through the fake Fly's
//! consent page: each page loaded `--loads` times, the browser's own
//! navigation timing read after each (`responseEnd`: the document
//! received; `loadEventEnd`: parsed, laid out, its frames loaded too).
//!
//! Run it with:
//!
//!     cargo build --release && cargo build --release --examples -p anykv-bench
//!     target/release/examples/dashboard --anykv target/release/anykv [--requests 500] [--loads 50]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_bench::fail;
use anykv_ops::fakefly::{FakeFly, User};
use anykv_ops::store::{Database, Store};
use hdrhistogram::Histogram;

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const DATABASES: u32 = 100;

/// Dashboard page loads (see the source's header).
#[derive(clap::Parser)]
struct Args {
    /// The `anykv` binary.
    #[arg(long, default_value = "target/release/anykv")]
    anykv: String,
    /// Requests of each page.
    #[arg(long, default_value_t = 500)]
    requests: u32,
    /// The sidecar listens on 127.0.<net>.100, the fake Fly on .101.
    #[arg(long, default_value_t = 66)]
    net: u8,
    #[arg(long, default_value_t = 23700)]
    port: u16,
    /// Page loads of each page in the browser.
    #[arg(long, default_value_t = 50)]
    loads: u32,
}

/// `chromedriver`, stopped when dropped.
struct Driver(std::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pages in headless chromium: per page, the navigation timing's
/// `responseEnd` and `loadEventEnd` (ms from the navigation's start) of
/// `loads` loads, as histograms (µs).
async fn browser_loads(
    sidecar: &str,
    port: u16,
    loads: u32,
    pages: &[(&str, String, &str)],
) -> Vec<(Histogram<u64>, Histogram<u64>)> {
    use fantoccini::{ClientBuilder, Locator};
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            fail(&format!(
                "starting chromedriver: {e} (apt-get install chromium chromium-driver)"
            ))
        });
    let _driver = Driver(driver);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            fail("chromedriver did not listen within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]}),
    );
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| fail(&format!("a browser session: {e}")));
    // Signed in as a person is: the sign-in entry, Fly's consent page.
    let step = |r: Result<(), fantoccini::error::CmdError>, what: &str| {
        if let Err(e) = r {
            fail(&format!("{what}: {e}"));
        }
    };
    step(c.goto(&format!("http://{sidecar}/sso")).await, "goto /sso");
    let consent = c.find(Locator::Css("#as-bench")).await;
    match consent {
        Ok(b) => step(b.click().await, "consenting"),
        Err(e) => fail(&format!("the fake Fly's consent page: {e}")),
    }
    let mut out = Vec::new();
    for (_, path, marker) in pages {
        let mut response = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
            .unwrap_or_else(|e| fail(&format!("histogram: {e}")));
        let mut load = response.clone();
        for _ in 0..loads {
            step(c.goto(&format!("http://{sidecar}{path}")).await, "goto");
            let src = c.source().await.unwrap_or_default();
            if !src.contains(marker) {
                fail(&format!("{path} in the browser has no {marker}"));
            }
            let t = c
                .execute(
                    "const n = performance.getEntriesByType('navigation')[0]; return [n.responseEnd - n.startTime, n.loadEventEnd - n.startTime];",
                    vec![],
                )
                .await
                .unwrap_or_else(|e| fail(&format!("navigation timing: {e}")));
            let ms = |i: usize| t[i].as_f64().unwrap_or(0.0);
            let _ = response.record(((ms(0) * 1000.0) as u64).max(1));
            let _ = load.record(((ms(1) * 1000.0) as u64).max(1));
        }
        out.push((response, load));
    }
    let _ = c.close().await;
    out
}

/// The sidecar's process, stopped when dropped.
struct Sidecar(std::process::Child);

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// 100 databases of `org_bench`, with 30 days of usage each.
fn make_state(dir: &std::path::Path) -> Result<(), String> {
    let mut store = Store::open(dir, 300).map_err(|e| e.to_string())?;
    let sealer = anykv_ops::tokens::Sealer::from_hex(KEY).map_err(|e| e.to_string())?;
    let now = anykv_ops::unix_now();
    for i in 1..=DATABASES {
        let fly_id = format!("ext_{i:03}");
        let token = anykv_ops::tokens::new_token().map_err(|e| e.to_string())?;
        let db = Database {
            fly_id: fly_id.clone(),
            tenant_id: u64::from(i),
            name: format!("Database {i}"),
            organization_id: "org_bench".into(),
            primary_region: "iad".into(),
            read_regions: vec!["cdg".into(), "syd".into()],
            status: "ready".into(),
            created_at: now - 40 * 86_400,
            token_sealed: sealer.seal(&token, &fly_id).map_err(|e| e.to_string())?,
            catalog_version: 1,
            plan: "payg".into(),
            ip_address: "fdaa:0:1::3".into(),
            next_token_sealed: String::new(),
        };
        store
            .insert_database(("org_bench", "Bench", "admins@bench.example"), None, &db)
            .map_err(|e| e.to_string())?;
        let records: Vec<serde_json::Value> = (0..30)
            .map(|d| {
                serde_json::json!({
                    "seq": d + 1, "log": format!("log-{i}"), "node": "n1",
                    "from_ms": (now - d * 86_400) * 1000 - 10_000,
                    "to_ms": (now - d * 86_400) * 1000,
                    "tenants": {i.to_string(): {"reads": 1000 * d, "writes": 300 + d,
                        "other": 7, "bytes_in": 50_000, "bytes_out": 90_000,
                        "connections": 3, "stored_bytes": 10_000_000}}
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        anykv_ops::metering::take_records(&mut store, "n1", &format!("log-{i}"), &records, now)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A raw GET (the redirects' headers matter here): (status, headers,
/// body).
async fn raw_get(addr: &str, path: &str, cookie: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => fail(&format!("connecting to {addr}: {e}")),
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = s.write_all(req.as_bytes()).await {
        fail(&format!("writing to {addr}: {e}"));
    }
    let mut buf = Vec::new();
    if let Err(e) = s.read_to_end(&mut buf).await {
        fail(&format!("reading from {addr}: {e}"));
    }
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(buf.len());
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (
        status,
        headers,
        buf.get(end + 4..).unwrap_or_default().to_vec(),
    )
}

fn get<'h>(h: &'h [(String, String)], name: &str) -> Option<&'h str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Signs in as `bench` the way a browser does; the session cookie.
async fn sign_in(sidecar: &str, fly: &str) -> String {
    let (status, h, _) = raw_get(sidecar, "/sso", "").await;
    let location = get(&h, "location").unwrap_or_default().to_string();
    let state_cookie = get(&h, "set-cookie")
        .and_then(|c| c.split(';').next())
        .unwrap_or_default()
        .to_string();
    if status != 303 || !location.contains("/oauth/authorize?") {
        fail(&format!("/sso answered {status}, to {location:?}"));
    }
    let query = location.split_once('?').map_or("", |x| x.1);
    let approve = format!("/oauth/approve?user=bench&{query}");
    let (status, h, _) = raw_get(fly, &approve, "").await;
    let back = get(&h, "location").unwrap_or_default().to_string();
    let path = back
        .split_once(sidecar)
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    if status != 303 || path.is_empty() {
        fail(&format!("the fake Fly answered {status}, to {back:?}"));
    }
    let (status, h, _) = raw_get(sidecar, &path, &state_cookie).await;
    let session = h
        .iter()
        .filter(|(k, _)| k == "set-cookie")
        .filter_map(|(_, v)| v.split(';').next())
        .find(|c| c.starts_with("anykv_session=") && c.len() > "anykv_session=".len())
        .map(str::to_string);
    match (status, session) {
        (303, Some(s)) => s,
        (s, _) => fail(&format!("the callback answered {s} without a session")),
    }
}

fn main() {
    anykv_bench::quiet_panics("dashboard");
    let a: Args = clap::Parser::parse();
    let dir = std::env::temp_dir().join(format!("anykv-dashboard-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("sidecar");
    if let Err(e) = std::fs::create_dir_all(&data)
        .map_err(|e| e.to_string())
        .and_then(|_| make_state(&data))
    {
        fail(&format!("making the sidecar's state: {e}"));
    }
    let sidecar = format!("127.0.{}.100:{}", a.net, a.port);
    let fly = format!("127.0.{}.101:{}", a.net, a.port + 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("runtime: {e}")));
    let fake = Arc::new(FakeFly::new(
        "bench-client",
        "bench-secret",
        b"webhooks",
        vec![User {
            id: "bench".into(),
            email: "bench@customer.fly.io".into(),
            organizations: vec![("org_bench".into(), "admin".into())],
        }],
    ));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&fly))
        .unwrap_or_else(|e| fail(&format!("the fake Fly's port {fly}: {e}")));
    rt.spawn(fake.serve(listener));
    let child = Command::new(&a.anykv)
        .args(["sidecar", "--listen", &sidecar])
        .arg("--data")
        .arg(&data)
        // No cluster: the pages read the sidecar's own state.
        .args(["--cluster-admin", &format!("127.0.{}.102:9", a.net)])
        .args(["--fly-api-base", &format!("http://{fly}")])
        .env("ANYKV_WEBHOOK_SECRET", "webhooks")
        .env("ANYKV_EXT_SECRET", "ext")
        .env("ANYKV_TOKEN_KEY", KEY)
        .env("ANYKV_ADMIN_TOKEN", "admin")
        .env("ANYKV_OAUTH_CLIENT_ID", "bench-client")
        .env("ANYKV_OAUTH_CLIENT_SECRET", "bench-secret")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("starting {}: {e}", a.anykv)));
    let _sidecar = Sidecar(child);
    let started = Instant::now();
    while std::net::TcpStream::connect(&sidecar).is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            fail("the sidecar did not listen within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pages = [
        ("list of 100 databases", "/dashboard".to_string(), "ext_100"),
        (
            "one database, a month of usage",
            "/dashboard/databases/ext_050".to_string(),
            "usage-chart",
        ),
    ];
    rt.block_on(async {
        let cookie = sign_in(&sidecar, &fly).await;
        println!("Server: from the request to the answer's last byte.\n");
        println!("| page | requests | p50 ms | p99 ms | max ms | bytes | goal < 200 ms (p99) |");
        println!("|---|---|---|---|---|---|---|");
        for (label, path, marker) in pages.iter().cloned() {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .unwrap_or_else(|e| fail(&format!("histogram: {e}")));
            let mut bytes = 0;
            for _ in 0..a.requests {
                let t0 = Instant::now();
                let (status, _, body) = raw_get(&sidecar, &path, &cookie).await;
                let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                if status != 200 || !String::from_utf8_lossy(&body).contains(marker) {
                    fail(&format!("{path} answered {status} without {marker}"));
                }
                bytes = body.len();
                let _ = h.record(us.max(1));
            }
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            let p99 = ms(0.99);
            println!(
                "| {label} | {} | {:.2} | {:.2} | {:.2} | {bytes} | {} |",
                a.requests,
                ms(0.5),
                p99,
                h.max() as f64 / 1000.0,
                if p99 < 200.0 { "met" } else { "not met" }
            );
        }
        let loads = browser_loads(&sidecar, a.port + 2, a.loads, &pages).await;
        println!("\nHeadless chromium: the navigation timing of each load (ms from its start).\n");
        println!("| page | loads | document received p50 / p99 ms | loaded p50 / p99 ms | max ms | goal < 200 ms (p99 loaded) |");
        println!("|---|---|---|---|---|---|");
        for ((label, _, _), (response, load)) in pages.iter().zip(&loads) {
            let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            let p99 = ms(load, 0.99);
            println!(
                "| {label} | {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} | {} |",
                a.loads,
                ms(response, 0.5),
                ms(response, 0.99),
                ms(load, 0.5),
                p99,
                load.max() as f64 / 1000.0,
                if p99 < 200.0 { "met" } else { "not met" }
            );
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
