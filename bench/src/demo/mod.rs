//! `anykv demo`: the whole service on one machine, no Fly account needed.
//!
//! What it starts, in order:
//!
//! 1. A DNS zone in this process that answers like Fly's internal DNS
//!    (`anykv_gossip::testzone`): the nodes find each other through it,
//!    as on Fly, rather than through a seed list.
//! 2. The nodes, as separate `anykv node` processes ([`crate::world`]):
//!    `--regions iad=3,cdg=1,syd=1` by default, each on its own loopback
//!    address (`127.0.<net>.1`, `.2`, …) with the same ports everywhere,
//!    the RTTs of the project's table emulated on every inter-node byte
//!    (gossip, replication, routed requests), each in its own directory
//!    under `--dir`. A user can `kill -9` one and watch the failover.
//! 3. A fake Fly in this process (OAuth sign-in for the dashboard,
//!    webhooks: `anykv_ops::fakefly`) and `anykv sidecar` as a process in
//!    front of the nodes' admin API.
//! 4. A demo database provisioned through the sidecar's real API, signed
//!    as Fly signs: primary in the first region, read replicas in the
//!    others, durability `region`.
//!
//! Once the database answers in every region with its replicas in sync,
//! `world.json` appears in `--dir` (written once, atomically: its
//! appearance means ready), the connection lines are printed, and a
//! status table follows the nodes until Ctrl-C or SIGTERM, which stop
//! everything (nodes, sidecar, zone) and remove `--dir` unless `--keep`.

mod status;

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_gossip::link::RttTable;
use anykv_gossip::testzone::TestZone;
use anykv_ops::fakefly::{FakeFly, User};

use crate::client::Conn;
use crate::world::{DatabaseInfo, Launch, SidecarInfo, World, WorldError, WorldSpec};

/// The Fly app name the zone serves (`<app>.internal`).
const APP: &str = "anykv-demo";
/// The demo's Fly organization, user and database.
const ORG: &str = "org_demo";
const USER: &str = "u_demo";
const FLY_ID: &str = "ext_demo";
const DB_NAME: &str = "demo";

/// Why the demo stopped before it was ready.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    World(#[from] WorldError),
    #[error("{0}")]
    Failed(String),
}

fn failed(msg: impl Into<String>) -> DemoError {
    DemoError::Failed(msg.into())
}

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Regions and how many nodes each, primary region first:
    /// `iad=3,cdg=1,syd=1` (codes of the RTT table). The demo database's
    /// primary is in the first region, its read replicas in the others;
    /// automatic failover needs 3 nodes in the first.
    #[arg(long, value_delimiter = ',', default_value = "iad=3,cdg=1,syd=1", value_parser = parse_region)]
    pub regions: Vec<(String, usize)>,
    /// Where the world lives: a directory per node, the sidecar's, the
    /// logs and `world.json`. Must be new or empty. Default: a new
    /// directory under the system's temp dir.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the directory on exit (it is removed otherwise).
    #[arg(long)]
    pub keep: bool,
    /// Nodes get 127.0.<net>.1, .2, …; the sidecar .100, the fake Fly .101.
    #[arg(long, default_value_t = 10)]
    pub net: u8,
    /// Every node's RESP port (each node has its own address, as on Fly).
    #[arg(long, default_value_t = 6379)]
    pub port: u16,
    /// Every node's HTTP port (metrics, `/cluster`, admin API).
    #[arg(long, default_value_t = 9091)]
    pub http_port: u16,
    /// Every node's gossip UDP port; QUIC sync uses the next one, the
    /// region pool the one after.
    #[arg(long, default_value_t = 7946)]
    pub gossip_port: u16,
    /// The sidecar's port (and the fake Fly's, on its own address).
    #[arg(long, default_value_t = 8080)]
    pub sidecar_port: u16,
    /// Region RTT table (CSV `from,to,rtt_ms`); default: the built-in one.
    #[arg(long)]
    pub rtt_table: Option<PathBuf>,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
}

/// `REGION=COUNT` (a bare region is one node).
pub fn parse_region(s: &str) -> Result<(String, usize), String> {
    let (code, n) = s.split_once('=').unwrap_or((s, "1"));
    let n: usize = n
        .parse()
        .map_err(|_| format!("{s:?}: expected REGION=COUNT, e.g. iad=3"))?;
    if code.is_empty() || !(1..=50).contains(&n) {
        return Err(format!("{s:?}: expected REGION=COUNT with 1 to 50 nodes"));
    }
    Ok((code.to_ascii_lowercase(), n))
}

/// Every region of `regions` is in `table`, or an error naming the ones
/// to pick from (the demo's and `bench global`'s `--regions`).
pub fn known_regions(table: &RttTable, regions: &[(String, usize)]) -> Result<(), String> {
    for (r, _) in regions {
        if !table.regions().any(|t| t == r) {
            let known: Vec<&str> = table.regions().collect();
            return Err(format!(
                "region {r:?} is not in the RTT table; pick from: {}",
                known.join(",")
            ));
        }
    }
    Ok(())
}

/// A child process killed (SIGTERM, then SIGKILL) when dropped.
struct Proc(Child);

impl Proc {
    /// SIGTERM, SIGKILL after `grace`, then reaped.
    fn stop(&mut self, grace: Duration) {
        terminate(&[self.0.id()], grace);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The directory the world lives in, removed when dropped unless kept.
struct WorldDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorldDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn random_hex(bytes: usize) -> String {
    anykv_ops::tokens::new_token()
        .map(|t| {
            t.chars()
                .filter(char::is_ascii_alphanumeric)
                .take(bytes * 2)
                .collect()
        })
        .unwrap_or_else(|_| format!("{:x}{:x}", std::process::id(), anykv_ops::unix_now()))
}

/// Progress on a terminal (a spinner), plain lines otherwise.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new() -> Progress {
        if std::io::stderr().is_terminal() {
            let pb = indicatif::ProgressBar::new_spinner();
            pb.enable_steady_tick(Duration::from_millis(100));
            Progress(Some(pb))
        } else {
            Progress(None)
        }
    }

    fn step(&self, what: &str) {
        match &self.0 {
            Some(pb) => pb.set_message(what.to_string()),
            None => eprintln!("anykv demo: {what}"),
        }
    }

    fn done(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}

/// Fails early, with what to do, when an address the world needs is taken.
fn check_free(tcp: &[SocketAddr], udp: &[SocketAddr]) -> Result<(), DemoError> {
    let taken = |a: &SocketAddr, proto: &str, e: std::io::Error| {
        failed(format!(
            "{a}/{proto} is not free ({e}): another anykv demo may be running; stop it, or pick other addresses with --net N or ports with --port/--http-port/--gossip-port/--sidecar-port"
        ))
    };
    for a in tcp {
        std::net::TcpListener::bind(a).map_err(|e| taken(a, "tcp", e))?;
    }
    for a in udp {
        std::net::UdpSocket::bind(a).map_err(|e| taken(a, "udp", e))?;
    }
    Ok(())
}

pub fn run(a: DemoArgs) -> Result<(), DemoError> {
    let table = match &a.rtt_table {
        Some(p) => RttTable::load(p).map_err(|e| failed(format!("{}: {e}", p.display())))?,
        None => RttTable::parse(crate::REGION_RTT).map_err(|e| failed(e.to_string()))?,
    };
    known_regions(&table, &a.regions).map_err(failed)?;
    let total: usize = a.regions.iter().map(|(_, n)| n).sum();
    if total > 99 {
        return Err(failed("at most 99 nodes"));
    }
    if a.gossip_port > u16::MAX - 2 {
        return Err(failed(format!(
            "--gossip-port {}: the next two ports are used too; pick one below {}",
            a.gossip_port,
            u16::MAX - 2
        )));
    }
    let bin = std::env::current_exe().map_err(|e| failed(format!("finding anykv: {e}")))?;
    let path = match &a.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "anykv-demo-{}-{}",
            std::process::id(),
            random_hex(3)
        )),
    };
    if std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_some()) {
        return Err(failed(format!(
            "{} is not empty: name a new directory with --dir (the demo removes it on exit)",
            path.display()
        )));
    }
    let ip = |n: u8| IpAddr::V4(Ipv4Addr::new(127, 0, a.net, n));
    let sidecar_addr = SocketAddr::new(ip(100), a.sidecar_port);
    let fly_addr = SocketAddr::new(ip(101), a.sidecar_port);
    let mut tcp = vec![sidecar_addr, fly_addr];
    let mut udp = Vec::new();
    for n in 1..=total as u8 {
        tcp.push(SocketAddr::new(ip(n), a.port));
        tcp.push(SocketAddr::new(ip(n), a.http_port));
        for p in 0..3 {
            udp.push(SocketAddr::new(ip(n), a.gossip_port.saturating_add(p)));
        }
    }
    check_free(&tcp, &udp)?;
    std::fs::create_dir_all(&path)
        .map_err(|e| failed(format!("creating {}: {e}", path.display())))?;
    // world.json holds the demo's secrets (the admin token among them).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| failed(format!("{}: {e}", path.display())))?;
    }
    let dir = WorldDir {
        path: path.clone(),
        keep: a.keep,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| failed(format!("starting the runtime: {e}")))?;
    let result = rt.block_on(run_world(&a, &bin, &dir.path, table, total));
    rt.shutdown_timeout(Duration::from_secs(2));
    if let Err(e) = &result {
        // What went wrong is in the logs: keep them.
        if !a.keep {
            eprintln!(
                "anykv demo: {e}\n  the nodes' and the sidecar's logs are kept in {} (n1.log, …, sidecar.log)",
                dir.path.display()
            );
        }
        let mut dir = dir;
        dir.keep = true;
        return result;
    }
    drop(dir);
    result
}

/// Ctrl-C and SIGTERM, from the first moment: before the demo is ready
/// a signal stops what was started (every child process of the demo:
/// SIGTERM, then SIGKILL), removes the directory unless `--keep`, and
/// exits with 130; once ready it wakes [`follow`], which stops everything
/// in order, and a second signal meanwhile stops the children at once.
struct Signals {
    ready: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<tokio::sync::Notify>,
}

impl Signals {
    fn install(dir: &Path, keep: bool) -> Result<Signals, DemoError> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())
            .map_err(|e| failed(format!("installing the Ctrl-C handler: {e}")))?;
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| failed(format!("installing the SIGTERM handler: {e}")))?;
        let s = Signals {
            ready: Arc::default(),
            stop: Arc::new(tokio::sync::Notify::new()),
        };
        let (ready, stop) = (s.ready.clone(), s.stop.clone());
        let dir = dir.to_path_buf();
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            let grace = if ready.load(std::sync::atomic::Ordering::Acquire) {
                // (A stored permit: `follow` sees it even if it is busy.)
                stop.notify_one();
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                eprintln!("\nanykv demo: stopping at once");
                Duration::ZERO
            } else {
                eprintln!("\nanykv demo: interrupted while starting; stopping what was started");
                Duration::from_secs(5)
            };
            tokio::task::spawn_blocking(move || {
                terminate(&children(), grace);
                if !keep {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                std::process::exit(130);
            });
        });
        Ok(s)
    }
}

/// This process's children (nodes, sidecar), found by their parent pid:
/// also those started a moment ago, before anything recorded them.
fn children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    // `pid (comm) state ppid ...`; comm may hold spaces.
                    let rest = s.rsplit_once(") ")?.1;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(me)
        })
        .collect()
}

/// SIGTERM to `pids`, then SIGKILL to those still there after `grace`.
/// Only for the demo's own children while the demo still runs (so none
/// has been reaped and a pid is still its child's).
fn terminate(pids: &[u32], grace: Duration) {
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists() && !zombie(pid);
    for &pid in pids {
        // SAFETY: kill(2) has no memory effects; the pid is a child of
        // this process that nothing has waited for (see above).
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    let end = Instant::now() + grace;
    while Instant::now() < end && pids.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pid in pids {
        if alive(pid) {
            // SAFETY: as above.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

/// Whether `pid` has exited and waits to be reaped.
fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(false)
}

/// What the demo started, stopped in reverse order.
struct Running {
    world: World,
    sidecar: Proc,
    zone: TestZone,
}

async fn run_world(
    a: &DemoArgs,
    bin: &Path,
    dir: &Path,
    table: RttTable,
    total: usize,
) -> Result<(), DemoError> {
    let started = Instant::now();
    let signals = Signals::install(dir, a.keep)?;
    let progress = Progress::new();
    progress.step("starting the DNS zone and the fake Fly");
    let ip = |n: u8| IpAddr::V4(Ipv4Addr::new(127, 0, a.net, n));
    let zone = TestZone::start(APP)
        .await
        .map_err(|e| failed(format!("starting the DNS zone: {e}")))?;
    let mut rtts = HashMap::new();
    for x in table.regions() {
        for y in table.regions() {
            if let Some(d) = table.rtt(x, y) {
                rtts.insert((x.to_string(), y.to_string()), d.as_secs_f64() * 1000.0);
            }
        }
    }
    zone.set_rtt_table(rtts);
    // The zone lists the machines before they start, as Fly's does.
    let mut k = 0u8;
    for (region, count) in &a.regions {
        for _ in 0..*count {
            k += 1;
            let v4 = Ipv4Addr::new(127, 0, a.net, k);
            zone.add_machine(&format!("n{k}"), region, v4.to_ipv6_mapped());
        }
    }

    let secrets = Secrets::new();
    let fly = Arc::new(FakeFly::new(
        &secrets.oauth_id,
        &secrets.oauth_secret,
        secrets.webhook.as_bytes(),
        vec![User {
            id: USER.into(),
            email: "you@demo.example".into(),
            organizations: vec![(ORG.into(), "admin".into())],
        }],
    ));
    let fly_addr = SocketAddr::new(ip(101), a.sidecar_port);
    let listener = tokio::net::TcpListener::bind(fly_addr)
        .await
        .map_err(|e| failed(format!("the fake Fly on {fly_addr}: {e}")))?;
    tokio::spawn(fly.clone().serve(listener));

    progress.step(&format!("starting {total} nodes"));
    let mut spec = WorldSpec::shaped(
        bin,
        dir.to_path_buf(),
        a.net,
        a.gossip_port,
        &[],
        &secrets.admin,
        &[],
    );
    spec.regions = a.regions.clone();
    spec.rtt_table = Some(match &a.rtt_table {
        Some(p) => p.display().to_string(),
        None => "builtin".into(),
    });
    spec.launch = Launch {
        resp_port: Some(a.port),
        http_port: Some(a.http_port),
        dns: Some((APP.into(), zone.addr())),
        hold_file: true,
        die_with_parent: true,
    };
    let world = World::start(&spec)?;
    progress.step("waiting for the nodes to find each other");
    world.wait_members(total, Duration::from_secs(60))?;

    let first_region = a.regions[0].0.clone();
    let sidecar_addr = SocketAddr::new(ip(100), a.sidecar_port);
    let sidecar_url = format!("http://{sidecar_addr}");
    let sidecar = start_sidecar(
        bin,
        dir,
        &world,
        &secrets,
        sidecar_addr,
        &format!("http://{fly_addr}"),
        &first_region,
    )?;
    let mut run = Running {
        world,
        sidecar,
        zone,
    };
    if a.regions[0].1 >= 3 {
        progress.step(&format!("waiting for {first_region}'s controller"));
        crate::client::wait_controller(&run.world, "n1", &first_region, Duration::from_secs(60))
            .map_err(failed)?;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(sidecar_addr).is_err() {
        if Instant::now() > deadline {
            return Err(failed(format!(
                "the sidecar did not listen on {sidecar_addr} within 20 s (see sidecar.log)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    progress.step("provisioning the demo database through the sidecar");
    let read_regions: Vec<&str> = a.regions[1..].iter().map(|(r, _)| r.as_str()).collect();
    let http = anykv_ops::fetch::Client::new(Duration::from_secs(30));
    let (code, reply) = anykv_ops::fakefly::call_signed(
        &http,
        secrets.ext.as_bytes(),
        "POST",
        &sidecar_url,
        "/extensions",
        Some(serde_json::json!({
            "id": FLY_ID, "name": DB_NAME,
            "organization_id": ORG, "organization_name": "Demo",
            "user_id": USER, "user_email": "you@demo.example", "user_role": "admin",
            "primary_region": first_region, "read_regions": read_regions,
            "ip_address": "fdaa:0:1::3",
        })),
    )
    .await
    .map_err(|e| failed(format!("provisioning: {e}")))?;
    if code != 200 {
        return Err(failed(format!("provisioning: HTTP {code}: {reply}")));
    }
    let url = reply["config"]["REDIS_URL"].as_str().unwrap_or_default();
    let token = url
        .strip_prefix("redis://default:")
        .and_then(|r| r.split_once('@'))
        .map(|(t, _)| t.to_string())
        .ok_or_else(|| failed(format!("the sidecar's REDIS_URL {url:?} has no token")))?;

    // A URL per region, reaching that region's first node: a client "in"
    // the region connects there, as Flycast would route it.
    let mut urls = BTreeMap::new();
    let mut region_nodes = Vec::new();
    for (region, _) in &a.regions {
        let node = run
            .world
            .file
            .nodes
            .iter()
            .find(|n| &n.region == region)
            .ok_or_else(|| failed(format!("no node in {region}")))?;
        urls.insert(
            region.clone(),
            format!("redis://default:{token}@{}", node.resp),
        );
        region_nodes.push((region.clone(), node.resp));
    }

    progress.step("waiting for the database in every region");
    let id = tenant_id(&run.world, Duration::from_secs(30))?;
    if a.regions[0].1 >= 2 {
        crate::client::settled(&run.world, "n1", id, 0, Duration::from_secs(60)).map_err(failed)?;
    }
    wait_replicated(&region_nodes, &token, Duration::from_secs(60))?;

    run.world.file.sidecar = Some(SidecarInfo {
        url: sidecar_url.clone(),
        secret: secrets.ext.clone(),
    });
    let dashboard = format!("{sidecar_url}/extensions/{FLY_ID}/sso");
    run.world.file.dashboard = Some(dashboard.clone());
    run.world.file.databases = vec![DatabaseInfo {
        name: tenant_name(&run.world, id).unwrap_or_else(|| DB_NAME.into()),
        id,
        primary_region: first_region.clone(),
        urls: urls.clone(),
    }];
    // Ready before world.json appears: a signal from now on stops the
    // demo in order (and so removes a world.json it may have seen).
    signals
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    run.world.publish()?;
    progress.done();

    println!(
        "anykv demo: {total} nodes in {} regions, ready in {:.1} s\n",
        a.regions.len(),
        started.elapsed().as_secs_f64()
    );
    println!("Connect from a region (a client there reaches that region's node):");
    for (region, _) in &a.regions {
        if let Some(url) = urls.get(region) {
            println!("  {region:<5} redis-cli -u {url}");
        }
    }
    println!("\nDashboard:  {dashboard}  (sign in as you@demo.example on the fake Fly)");
    println!("Sidecar:    {sidecar_url}  (Fly's Extensions API; ANYKV_EXT_SECRET in world.json)");
    println!(
        "DNS zone:   {} (dig @{} -p {} AAAA {APP}.internal)",
        run.zone.addr(),
        run.zone.addr().ip(),
        run.zone.addr().port()
    );
    println!(
        "Files:      {}  (world.json, a directory and a log per node){}",
        dir.display(),
        if a.keep {
            ""
        } else {
            "; removed on exit, --keep keeps it"
        }
    );
    println!(
        "Try `kill -9 <pid>` on the primary below and watch its standby take over. Ctrl-C stops.\n"
    );

    let outcome = follow(&mut run, a, id, &signals.stop).await;
    println!("\nanykv demo: stopping");
    let Running {
        mut world,
        mut sidecar,
        zone,
    } = run;
    sidecar.stop(Duration::from_secs(5));
    world.stop(Duration::from_secs(8));
    zone.shutdown().await;
    drop(fly);
    outcome
}

/// The demo's secrets, made up at every start.
struct Secrets {
    ext: String,
    webhook: String,
    token_key: String,
    admin: String,
    oauth_id: String,
    oauth_secret: String,
}

impl Secrets {
    fn new() -> Secrets {
        Secrets {
            ext: random_hex(24),
            webhook: random_hex(24),
            token_key: random_hex(32),
            admin: random_hex(24),
            oauth_id: format!("demo-client-{}", random_hex(4)),
            oauth_secret: random_hex(24),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn start_sidecar(
    bin: &Path,
    dir: &Path,
    world: &World,
    secrets: &Secrets,
    listen: SocketAddr,
    fly_base: &str,
    first_region: &str,
) -> Result<Proc, DemoError> {
    let log = std::fs::File::create(dir.join("sidecar.log"))
        .map_err(|e| failed(format!("creating sidecar.log: {e}")))?;
    let err_log = log
        .try_clone()
        .map_err(|e| failed(format!("sidecar.log: {e}")))?;
    // The REDIS_URL it returns names a node of the primary region.
    let host = world
        .file
        .nodes
        .iter()
        .find(|n| n.region == first_region)
        .ok_or_else(|| failed(format!("no node in {first_region}")))?;
    let mut cmd = Command::new(bin);
    cmd.args(["sidecar", "--listen", &listen.to_string()])
        .arg("--data")
        .arg(dir.join("sidecar"))
        .args(["--redis-url-host", &host.resp.ip().to_string()])
        .args(["--redis-port", &host.resp.port().to_string()])
        .args(["--fly-api-base", fly_base])
        .args(["--public-url", &format!("http://{listen}")]);
    for n in &world.file.nodes {
        cmd.args(["--cluster-admin", &n.http.to_string()]);
    }
    cmd.env("ANYKV_EXT_SECRET", &secrets.ext)
        .env("ANYKV_WEBHOOK_SECRET", &secrets.webhook)
        .env("ANYKV_TOKEN_KEY", &secrets.token_key)
        .env("ANYKV_ADMIN_TOKEN", &secrets.admin)
        .env("ANYKV_OAUTH_CLIENT_ID", &secrets.oauth_id)
        .env("ANYKV_OAUTH_CLIENT_SECRET", &secrets.oauth_secret)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log);
    crate::world::die_with_parent(&mut cmd);
    cmd.spawn()
        .map(Proc)
        .map_err(|e| failed(format!("starting anykv sidecar: {e}")))
}

/// The demo database's catalog id, once the nodes list it.
fn tenant_id(w: &World, limit: Duration) -> Result<u64, DemoError> {
    let end = Instant::now() + limit;
    loop {
        let found = w.cluster_view("n1").and_then(|v| {
            v["tenants"].as_array()?.iter().find_map(|t| {
                t["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(DB_NAME))
                    .then(|| t["id"].as_u64())
                    .flatten()
            })
        });
        if let Some(id) = found {
            return Ok(id);
        }
        if Instant::now() > end {
            return Err(failed(format!(
                "the provisioned database did not appear in n1's /cluster within {limit:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tenant_name(w: &World, id: u64) -> Option<String> {
    w.cluster_view("n1")?["tenants"]
        .as_array()?
        .iter()
        .find(|t| t["id"] == id)?["name"]
        .as_str()
        .map(str::to_string)
}

/// Writes a marker through the primary region's node and waits until a
/// fresh connection in every region reads it (a fresh connection reads
/// its region's copy: the replicas are in sync), then removes it.
fn wait_replicated(
    regions: &[(String, SocketAddr)],
    token: &str,
    limit: Duration,
) -> Result<(), DemoError> {
    let end = Instant::now() + limit;
    let marker = random_hex(8);
    let (first, at) = &regions[0];
    loop {
        let wrote = Conn::open(*at, Some(("default", token)))
            .and_then(|mut c| c.call(&["SET", "anykv:demo:ready", &marker]))
            .is_some_and(|r| matches!(r, crate::client::Reply::Simple(ref s) if s == "OK"));
        if wrote {
            break;
        }
        if Instant::now() > end {
            return Err(failed(format!(
                "the demo database took no write in {first} within {limit:?} (see the nodes' logs)"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (region, addr) in regions {
        loop {
            let seen = Conn::open(*addr, Some(("default", token)))
                .and_then(|mut c| c.call(&["GET", "anykv:demo:ready"]))
                .is_some_and(|r| matches!(r, crate::client::Reply::Bulk(Some(ref v)) if v == marker.as_bytes()));
            if seen {
                break;
            }
            if Instant::now() > end {
                return Err(failed(format!(
                    "{region}'s replica did not catch up within {limit:?} (see the nodes' logs)"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = Conn::open(*at, Some(("default", token)))
        .and_then(|mut c| c.call(&["DEL", "anykv:demo:ready"]));
    Ok(())
}

/// Shows the status until Ctrl-C, SIGTERM (`signalled`) or `--duration`.
async fn follow(
    run: &mut Running,
    a: &DemoArgs,
    id: u64,
    signalled: &tokio::sync::Notify,
) -> Result<(), DemoError> {
    let stop = async {
        match a.duration {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop);
    let mut screen = status::Screen::new(std::io::stdout().is_terminal());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = signalled.notified() => return Ok(()),
            _ = tick.tick() => {
                let s = status::Status::read(&mut run.world, id);
                screen.show(&s);
            }
        }
    }
}
