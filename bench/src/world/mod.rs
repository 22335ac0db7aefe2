//! The emulated world's launcher: `anykv node` processes on loopback
//! addresses (one `127.0.<net>.<n>` per node, so the link shaper tells
//! them apart), their regions' round trips emulated on every inter-node
//! byte, and `world.json` describing each node — name, region, pid,
//! addresses, directory and the exact argv — so a harness (or a person)
//! can `kill -9` a node and start it again as it was.
//!
//! The failover harness and `anykv demo` build on it; the shaper of each
//! node is changed at runtime through its `POST /shaper` (partitions,
//! isolation, loss), which [`World::shape`] sends to every node.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub mod local;

/// Why the world could not be started or changed.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> WorldError {
    let what = what.into();
    move |source| WorldError::Io { what, source }
}

/// What to start.
#[derive(Clone, Debug)]
pub struct WorldSpec {
    /// The `anykv` binary.
    pub bin: PathBuf,
    /// Where the world keeps its keys, `world.json` and a directory per node.
    pub dir: PathBuf,
    /// Nodes get `127.0.<net>.1`, `.2`, ...
    pub net: u8,
    /// Every node's gossip port; sync, LAN gossip, RESP and HTTP are the
    /// next ones (+1, +2, +4, +5).
    pub port: u16,
    /// Regions in order, with how many nodes each.
    pub regions: Vec<(String, usize)>,
    /// The RTT table (`from,to,rtt_ms` CSV, or `builtin`); None: no shaping.
    pub rtt_table: Option<String>,
    /// Loss between regions (0 to 1).
    pub loss: f64,
    /// SWIM timings of the cluster-wide pool: `test` for tests (fast),
    /// `test-wan` for fast tests across slow emulated links, `wan` as on Fly.
    pub gossip_profile: String,
    /// SWIM timings of each region's pool (`test`, `lan`).
    pub lan_profile: String,
    /// `ANYKV_ADMIN_TOKEN` for every node.
    pub admin_token: String,
    /// Server flags after `--` for every node (besides bind, port, dir,
    /// metrics-addr).
    pub server_args: Vec<String>,
    /// How the demo (and anything Fly-like) starts nodes differently from
    /// a test's defaults.
    pub launch: Launch,
}

/// Launch options a test's world leaves at their defaults.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// Every node's RESP port (default: the gossip port + 4). Each node
    /// has its own address, so all can take the same one, as on Fly.
    pub resp_port: Option<u16>,
    /// Every node's HTTP port (metrics, `/cluster`, admin; default: the
    /// gossip port + 5).
    pub http_port: Option<u16>,
    /// Discovery through DNS, as on Fly: `--app` and `--dns-server` (a
    /// zone that lists the nodes, e.g. `anykv_gossip::testzone`) instead
    /// of the first node as a fixed seed.
    pub dns: Option<(String, SocketAddr)>,
    /// `world.json` is written only by [`World::publish`] (its appearance
    /// then means ready), not at every start of a node.
    pub hold_file: bool,
    /// Linux: a node gets SIGKILL when the thread that started it exits
    /// (`PR_SET_PDEATHSIG`), so a launcher killed with SIGKILL leaves no
    /// node behind. Start nodes from a thread that lives as long as the
    /// world (the main thread) when this is set.
    pub die_with_parent: bool,
}

impl WorldSpec {
    /// A benchmark's world: [`WorldSpec::shaped`] in a fresh directory
    /// `anykv-<tool>-<pid>` under the system's temp dir.
    pub fn for_bench(
        tool: &str,
        bin: &str,
        net: u8,
        port: u16,
        regions: &[(&str, usize)],
        admin_token: &str,
        server_args: &[&str],
    ) -> WorldSpec {
        let dir = std::env::temp_dir().join(format!("anykv-{tool}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        WorldSpec::shaped(
            Path::new(bin),
            dir,
            net,
            port,
            regions,
            admin_token,
            server_args,
        )
    }

    /// A world of `regions` (in order, with how many nodes each) on
    /// `127.0.<net>.x`, the builtin RTT table between them, no loss, fast
    /// SWIM timings (`test-wan` across the cluster, `test` in a region),
    /// and `server_args` for every node.
    pub fn shaped(
        bin: &Path,
        dir: PathBuf,
        net: u8,
        port: u16,
        regions: &[(&str, usize)],
        admin_token: &str,
        server_args: &[&str],
    ) -> WorldSpec {
        WorldSpec {
            bin: bin.to_path_buf(),
            dir,
            net,
            port,
            regions: regions.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
            rtt_table: Some("builtin".into()),
            loss: 0.0,
            gossip_profile: "test-wan".into(),
            lan_profile: "test".into(),
            admin_token: admin_token.into(),
            server_args: server_args.iter().map(|s| s.to_string()).collect(),
            launch: Launch::default(),
        }
    }
}

/// One node as `world.json` records it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub region: String,
    pub pid: u32,
    pub ip: IpAddr,
    pub gossip: SocketAddr,
    pub resp: SocketAddr,
    pub http: SocketAddr,
    pub dir: PathBuf,
    pub log: PathBuf,
    /// The binary and its arguments, as started.
    pub argv: Vec<String>,
    /// Environment the node needs besides the launcher's own.
    pub env: BTreeMap<String, String>,
}

/// `world.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WorldFile {
    pub dir: PathBuf,
    pub nodes: Vec<NodeInfo>,
    /// The demo's sidecar (absent in a test's world).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarInfo>,
    /// Where a person signs in to the dashboard (the demo's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<String>,
    /// Databases provisioned in the world (the demo's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<DatabaseInfo>,
    /// Names of nodes `anykv regions` destroyed: never given to a new
    /// node (Fly never reuses a machine id; the cluster may still know
    /// the old one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<String>,
}

/// The sidecar as `world.json` records it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SidecarInfo {
    /// The base URL `/extensions` hangs off.
    pub url: String,
    /// The `ANYKV_EXT_SECRET` Fly's calls are signed with.
    pub secret: String,
}

/// A database as `world.json` records it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DatabaseInfo {
    /// The catalog name.
    pub name: String,
    /// The catalog id (the admin API's and `/cluster`'s).
    pub id: u64,
    pub primary_region: String,
    /// A `redis://` URL per region, reaching that region's node.
    pub urls: BTreeMap<String, String>,
}

impl WorldFile {
    /// Writes `<dir>/world.json`: to a temporary file renamed over it, so
    /// a reader never sees half.
    pub fn save(&self) -> Result<(), WorldError> {
        let path = self.dir.join("world.json");
        let tmp = self
            .dir
            .join(format!("world.json.{}.tmp", std::process::id()));
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| WorldError::Failed(format!("world.json: {e}")))?;
        std::fs::write(&tmp, text).map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("renaming to {}", path.display())))
    }

    /// Changes `<dir>/world.json` as it is on disk, under an exclusive
    /// lock on `world.json.lock`: the demo (relaunching a node) and
    /// `anykv regions` (adding or destroying one) are different processes
    /// writing the same file, and neither may write back a stale copy
    /// over the other's change. The file after the change, and what
    /// `change` returned.
    pub fn update<T>(
        dir: &Path,
        change: impl FnOnce(&mut WorldFile) -> Result<T, WorldError>,
    ) -> Result<(WorldFile, T), WorldError> {
        let path = dir.join("world.json.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        // Released when `lock` is dropped (closed), on every return.
        lock.lock()
            .map_err(io(format!("locking {}", path.display())))?;
        let mut file = WorldFile::load(&dir.join("world.json"))?;
        let out = change(&mut file)?;
        file.save()?;
        Ok((file, out))
    }

    pub fn load(path: &Path) -> Result<WorldFile, WorldError> {
        let text =
            std::fs::read_to_string(path).map_err(io(format!("reading {}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| WorldError::Failed(format!("{}: {e}", path.display())))
    }
}

/// A running world; dropping it stops every node.
pub struct World {
    pub file: WorldFile,
    children: BTreeMap<String, Child>,
    admin_token: String,
    /// Whether `world.json` is written (see [`Launch::hold_file`]).
    published: bool,
    die_with_parent: bool,
}

impl World {
    /// Creates the cluster's keys, starts every node and writes
    /// `world.json`. Does not wait for the nodes to find each other (see
    /// [`World::wait_members`]).
    pub fn start(spec: &WorldSpec) -> Result<World, WorldError> {
        World::start_with(spec, &BTreeMap::new())
    }

    /// [`World::start`], giving some nodes (by name) extra `anykv node`
    /// flags, placed before `--` (e.g. the fault harness's
    /// `--clock-offset-ms`); they are in `world.json`'s argv, so a
    /// restarted node keeps them.
    pub fn start_with(
        spec: &WorldSpec,
        node_args: &BTreeMap<String, Vec<String>>,
    ) -> Result<World, WorldError> {
        if spec.port > u16::MAX - 5 {
            return Err(WorldError::Failed(format!(
                "port {}: every node uses the five after it too; pick one below {}",
                spec.port,
                u16::MAX - 5
            )));
        }
        std::fs::create_dir_all(&spec.dir)
            .map_err(io(format!("creating {}", spec.dir.display())))?;
        let out = Command::new(&spec.bin)
            .args(["cluster", "keygen", "--dir"])
            .arg(&spec.dir)
            .output()
            .map_err(io(format!("running {} cluster keygen", spec.bin.display())))?;
        if !out.status.success() {
            return Err(WorldError::Failed(format!(
                "cluster keygen: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let key = std::fs::read_to_string(spec.dir.join("gossip.key"))
            .map_err(io("reading gossip.key"))?;
        let mut placed = Vec::new();
        for (region, count) in &spec.regions {
            for _ in 0..*count {
                placed.push(region.clone());
            }
        }
        let ip = |n: usize| IpAddr::V4(Ipv4Addr::new(127, 0, spec.net, n as u8));
        let hosts: Vec<String> = placed
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{}={r}", ip(i + 1)))
            .collect();
        let seed = SocketAddr::new(ip(1), spec.port);
        let mut nodes = Vec::new();
        for (i, region) in placed.iter().enumerate() {
            let n = i + 1;
            let name = format!("n{n}");
            let addr = ip(n);
            let dir = spec.dir.join(&name);
            std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
            let p = spec.port;
            let mut argv: Vec<String> = vec![spec.bin.display().to_string(), "node".into()];
            let mut push = |a: &[&str]| argv.extend(a.iter().map(|s| s.to_string()));
            push(&["--machine", &name, "--region", region]);
            push(&["--gossip-addr", &SocketAddr::new(addr, p).to_string()]);
            push(&["--sync-port", &(p + 1).to_string()]);
            match &spec.launch.dns {
                Some((app, server)) => {
                    push(&["--app", app, "--dns-server", &server.to_string()]);
                }
                None => push(&["--seeds", &seed.to_string()]),
            }
            push(&["--gossip-keys", key.trim()]);
            push(&["--gossip-profile", &spec.gossip_profile]);
            push(&["--cluster-size", &placed.len().to_string()]);
            push(&["--lan-port", &(p + 2).to_string()]);
            push(&["--lan-profile", &spec.lan_profile]);
            let ca = spec.dir.join("cluster-ca.pem").display().to_string();
            let ca_key = spec.dir.join("cluster-ca.key").display().to_string();
            push(&["--cluster-ca", &ca, "--cluster-ca-key", &ca_key]);
            if let Some(table) = &spec.rtt_table {
                push(&["--emulate-wan", table, "--emulate-host", &hosts.join(",")]);
                push(&["--emulate-loss", &spec.loss.to_string()]);
            }
            if let Some(extra) = node_args.get(&name) {
                push(&extra.iter().map(String::as_str).collect::<Vec<_>>());
            }
            let resp = SocketAddr::new(addr, spec.launch.resp_port.unwrap_or(p + 4));
            let http = SocketAddr::new(addr, spec.launch.http_port.unwrap_or(p + 5));
            push(&[
                "--",
                "--bind",
                &addr.to_string(),
                "--port",
                &resp.port().to_string(),
            ]);
            push(&["--dir", &dir.display().to_string()]);
            push(&["--metrics-addr", &http.to_string()]);
            argv.extend(spec.server_args.iter().cloned());
            let env = BTreeMap::from([("ANYKV_ADMIN_TOKEN".to_string(), spec.admin_token.clone())]);
            nodes.push(NodeInfo {
                name,
                region: region.clone(),
                pid: 0,
                ip: addr,
                gossip: SocketAddr::new(addr, p),
                resp,
                http,
                log: spec.dir.join(format!("n{n}.log")),
                dir,
                argv,
                env,
            });
        }
        let mut world = World {
            file: WorldFile {
                dir: spec.dir.clone(),
                nodes,
                sidecar: None,
                dashboard: None,
                databases: Vec::new(),
                retired: Vec::new(),
            },
            children: BTreeMap::new(),
            admin_token: spec.admin_token.clone(),
            published: false,
            die_with_parent: spec.launch.die_with_parent,
        };
        let names: Vec<String> = world.file.nodes.iter().map(|n| n.name.clone()).collect();
        for name in names {
            world.launch(&name)?;
        }
        if !spec.launch.hold_file {
            world.publish()?;
        }
        Ok(world)
    }

    /// Starts node `name` from its recorded argv (again, after a kill), and
    /// records its new pid in `world.json`.
    pub fn launch(&mut self, name: &str) -> Result<(), WorldError> {
        // A node `anykv regions` destroyed is not started again (this
        // world's copy of the file may predate that).
        if self.published {
            let file = WorldFile::load(&self.file.dir.join("world.json"))?;
            if file.retired.iter().any(|r| r == name) {
                return Err(WorldError::Failed(format!(
                    "{name} was destroyed by anykv regions: it is not started again"
                )));
            }
        }
        let node = self.node(name)?.clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(io(format!("opening {}", node.log.display())))?;
        let err_log = log.try_clone().map_err(io("log file"))?;
        let Some((bin, args)) = node.argv.split_first() else {
            return Err(WorldError::Failed(format!(
                "{name} has no argv in world.json"
            )));
        };
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .envs(&node.env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log);
        if self.die_with_parent {
            die_with_parent(&mut cmd);
        }
        let child = cmd.spawn().map_err(io(format!("starting {name}")))?;
        let pid = child.id();
        self.children.insert(name.to_string(), child);
        let mut started = node;
        started.pid = pid;
        self.record(started)
    }

    /// Records `node` (its argv and pid as this world last started it) in
    /// `world.json`, and reads back what others changed meanwhile (nodes
    /// `anykv regions` added or destroyed): only this node's entry is
    /// this world's to write.
    fn record(&mut self, node: NodeInfo) -> Result<(), WorldError> {
        let put = |nodes: &mut Vec<NodeInfo>, node: NodeInfo| match nodes
            .iter_mut()
            .find(|n| n.name == node.name)
        {
            Some(n) => *n = node,
            None => nodes.push(node),
        };
        if !self.published {
            put(&mut self.file.nodes, node);
            return Ok(());
        }
        let (file, ()) = WorldFile::update(&self.file.dir, |f| {
            // A node `anykv regions` destroyed stays destroyed.
            if !f.retired.contains(&node.name) {
                put(&mut f.nodes, node);
            }
            Ok(())
        })?;
        self.file = file;
        Ok(())
    }

    /// Writes `world.json` from now on (a held one: the world is ready),
    /// whole: nothing else writes it before.
    pub fn publish(&mut self) -> Result<(), WorldError> {
        self.published = true;
        self.file.save()
    }

    /// Nodes of `world.json` that run but are not this world's children:
    /// ones `anykv regions add` started (detached, as a machine outlives
    /// `fly`). A world that stops stops them too.
    fn adopted(&self) -> Vec<u32> {
        if !self.published {
            return Vec::new();
        }
        let Ok(file) = WorldFile::load(&self.file.dir.join("world.json")) else {
            return Vec::new();
        };
        file.nodes
            .iter()
            .filter(|n| !self.children.contains_key(&n.name))
            .filter_map(local::node_pid)
            .collect()
    }

    /// Stops every node with SIGTERM (each hands its primaries over and
    /// leaves the cluster), waiting up to `grace` for all of them before
    /// killing those left.
    pub fn stop(&mut self, grace: Duration) {
        let adopted = self.adopted();
        for pid in &adopted {
            // SAFETY: kill(2) has no memory effects; `node_pid` just found
            // this pid running the node's argv, so it is that node.
            unsafe {
                libc::kill(*pid as libc::pid_t, libc::SIGTERM);
            }
        }
        for c in self.children.values_mut() {
            // A child already reaped (it exited; `running` or a kill
            // waited for it) may have had its pid reused: not signalled.
            if !matches!(c.try_wait(), Ok(None)) {
                continue;
            }
            // SAFETY: kill(2) has no memory effects; the pid is a child of
            // this process that has not been reaped (checked just above,
            // on this thread), so it is still that child's.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        let end = Instant::now() + grace;
        while Instant::now() < end {
            let running = self
                .children
                .values_mut()
                .filter_map(|c| c.try_wait().ok())
                .filter(Option::is_none)
                .count()
                + adopted.iter().filter(|p| local::alive(**p)).count();
            if running == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in adopted.iter().filter(|p| local::alive(**p)) {
            // SAFETY: as above; a pid is not reused while its process is
            // alive, and `alive` just said it is (not yet reaped: its
            // parent, `anykv regions`, is gone, so init reaps it).
            unsafe {
                libc::kill(*pid as libc::pid_t, libc::SIGKILL);
            }
        }
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }

    /// The admin API's token (`ANYKV_ADMIN_TOKEN`) every node was given.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Whether node `name`'s process is still there (a stopped one
    /// counts): started, not killed through the world, and not exited.
    pub fn running(&mut self, name: &str) -> bool {
        self.children
            .get_mut(name)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Whether node `name` was started and not killed since (a stopped
    /// node counts as running).
    pub fn is_running(&self, name: &str) -> bool {
        self.children.contains_key(name)
    }

    pub fn node(&self, name: &str) -> Result<&NodeInfo, WorldError> {
        self.file
            .nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| WorldError::Failed(format!("no node {name} in this world")))
    }

    /// Sends `signal` (e.g. `-9`, `-STOP`, `-CONT`) to node `name`; after
    /// a kill the node's process is reaped.
    pub fn signal(&mut self, name: &str, signal: &str) -> Result<(), WorldError> {
        let pid = self.node(name)?.pid;
        let ok = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .map_err(io("running kill"))?
            .success();
        if !ok {
            return Err(WorldError::Failed(format!("kill {signal} {name} failed")));
        }
        if matches!(signal, "-9" | "-KILL" | "-TERM") {
            if let Some(mut c) = self.children.remove(name) {
                let _ = c.wait();
            }
        }
        Ok(())
    }

    /// A node's `/cluster` view (None while it does not answer).
    pub fn cluster_view(&self, name: &str) -> Option<serde_json::Value> {
        let node = self.node(name).ok()?;
        let (code, body) = http(node.http, "GET", "/cluster", "", "")?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// Waits until every running node sees `alive` members alive.
    pub fn wait_members(&self, alive: usize, limit: Duration) -> Result<(), WorldError> {
        let end = Instant::now() + limit;
        loop {
            let ok = self.children.keys().all(|name| {
                self.cluster_view(name).is_some_and(|v| {
                    v["members"].as_array().is_some_and(|m| {
                        m.iter().filter(|x| x["state"] == "alive").count() == alive
                    })
                })
            });
            if ok {
                return Ok(());
            }
            if Instant::now() >= end {
                return Err(WorldError::Failed(format!(
                    "the nodes did not all see {alive} members alive within {limit:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a shaper change (`POST /shaper`, e.g. `{"isolate": ["127.0.9.1"]}`)
    /// to every running node: each shapes what it sends.
    pub fn shape(&self, change: &serde_json::Value) -> Result<(), WorldError> {
        for name in self.children.keys() {
            let node = self.node(name)?;
            let body = change.to_string();
            match http(node.http, "POST", "/shaper", &self.admin_token, &body) {
                Some((200, _)) => {}
                other => {
                    return Err(WorldError::Failed(format!(
                        "{name}: POST /shaper answered {other:?}"
                    )))
                }
            }
        }
        Ok(())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for pid in self.adopted() {
            // SAFETY: as in `stop`: `node_pid` just found it running the
            // node's argv.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Makes `cmd`'s child get SIGKILL when the thread that spawns it exits
/// (Linux's `PR_SET_PDEATHSIG`; nothing elsewhere).
pub fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the child between fork and exec and
        // calls only prctl(2) and getppid(2), both async-signal-safe; it
        // allocates nothing and touches no lock.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before the prctl: then the
                // child is adopted, and must not outlive it either.
                if libc::getppid() == 1 {
                    return Err(std::io::Error::other("the launcher is gone"));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// A minimal HTTP/1.1 request: (status, body), None when nobody answers.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let auth = if token.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {token}\r\n")
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split(' ').nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    Some((code, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Two writers changing world.json at once (the demo and `anykv
    /// regions` are two processes; here two threads, each with its own
    /// lock descriptor, as flock tells them apart) lose nothing: every
    /// change is there, and the writers did contend for the file.
    #[test]
    fn concurrent_changes_of_world_json_are_all_kept() {
        let dir = std::env::temp_dir().join(format!("anykv-world-update-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        WorldFile {
            dir: dir.clone(),
            nodes: Vec::new(),
            sidecar: None,
            dashboard: None,
            databases: Vec::new(),
            retired: Vec::new(),
        }
        .save()
        .expect("world.json");
        let inside = Arc::new(AtomicBool::new(false));
        let contended = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let writers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|who| {
                let (dir, inside, contended, barrier) = (
                    dir.clone(),
                    inside.clone(),
                    contended.clone(),
                    barrier.clone(),
                );
                std::thread::spawn(move || {
                    barrier.wait();
                    for i in 0..20 {
                        if inside.load(Ordering::SeqCst) {
                            contended.fetch_add(1, Ordering::SeqCst);
                        }
                        WorldFile::update(&dir, |f| {
                            assert!(!inside.swap(true, Ordering::SeqCst), "two writers at once");
                            f.retired.push(format!("{who}{i}"));
                            std::thread::sleep(Duration::from_millis(3));
                            inside.store(false, Ordering::SeqCst);
                            Ok(())
                        })
                        .expect("update");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        let f = WorldFile::load(&dir.join("world.json")).expect("world.json");
        assert_eq!(f.retired.len(), 40, "{:?}", f.retired);
        assert!(
            contended.load(Ordering::SeqCst) > 0,
            "the writers never met at the file"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
