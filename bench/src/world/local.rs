//! `anykv regions --backend local`: the plan's machines as `anykv node`
//! processes of an emulated world on this machine (`world.json`), so
//! region scaling runs and is tested here as it runs on Fly.
//!
//! A node's directory is its volume: the volume's id is the directory's
//! name under the world's directory (`n1` for the nodes the world started
//! with, `vol-<k>` for ones made by `add`). A new node copies the argv of
//! a node (of its region if there is one) with its own name, loopback
//! address, region and directory, starts detached from the command (it
//! outlives it, as a Fly machine outlives `fly`), is recorded in
//! `world.json`, and is placed in every running node's link shaper so
//! its links get the region's emulated round trips both ways. Stopping
//! is SIGTERM (the node hands its primaries over and leaves), waited
//! for; destroying a node takes it out of `world.json` and leaves its
//! directory, which a later step removes as its volume.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anykv_ops::regions::run::{Infra, RunError};
use anykv_ops::regions::{Node, Vol};

use super::{http, NodeInfo, WorldFile};

/// The file in a volume's directory naming its region (written when the
/// volume is made, or when its node is destroyed).
const REGION_FILE: &str = ".anykv-region";
/// A file a node's directory gets when the node is destroyed: the volume
/// holds an old node's data and is not given to a new node.
const OLD_DATA_MARK: &str = ".anykv-old-node";

/// A world on this machine as the plan's [`Infra`].
pub struct LocalInfra {
    /// The world's directory (`world.json` in it).
    pub dir: PathBuf,
    /// How long a stopping node gets before SIGKILL.
    pub stop_timeout: Duration,
}

impl LocalInfra {
    /// In a world whose links are shaped by an RTT table (`--emulate-wan`),
    /// `region` must be one of the table's: a node of another region
    /// would not start (its links have no round trip), and the run would
    /// wait for it until its limit.
    fn check_region(&self, region: &str) -> Result<(), RunError> {
        let w = self.world()?;
        let Some(src) = w.nodes.iter().find_map(|n| {
            let i = n.argv.iter().position(|a| a == "--emulate-wan")?;
            n.argv.get(i + 1).cloned()
        }) else {
            return Ok(());
        };
        let table = crate::rtt_table(&src).map_err(failed)?;
        crate::demo::known_regions(&table, &[(region.to_string(), 1)]).map_err(failed)
    }
}

fn failed(e: impl std::fmt::Display) -> RunError {
    RunError::Infra(e.to_string())
}

/// Whether process `pid` runs (a zombie does not).
pub fn alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the command's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The process running `node`, found by its argv (`--dir <its
/// directory>`, unique to it) rather than trusted from the recorded pid,
/// which may be stale (a pid reused by another process) or missing (a run
/// stopped between starting the node and recording it).
pub fn node_pid(node: &NodeInfo) -> Option<u32> {
    let dir = node.dir.display().to_string();
    let runs_it = |pid: u32| {
        alive(pid)
            && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.windows(2)
                    .any(|w| w[0] == b"--dir" && w[1] == dir.as_bytes())
                    && args.iter().any(|a| *a == b"node")
            })
    };
    if runs_it(node.pid) {
        return Some(node.pid);
    }
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| runs_it(*pid))
}

/// The running nodes of `world`, those of region `leaving` (one a
/// removal empties) last: the admin addresses a run asks in turn, going
/// on to the next when it stopped the one it asked.
pub fn running_nodes<'w>(world: &'w WorldFile, leaving: Option<&str>) -> Vec<&'w NodeInfo> {
    let mut nodes: Vec<&NodeInfo> = world
        .nodes
        .iter()
        .filter(|n| node_pid(n).is_some())
        .collect();
    nodes.sort_by_key(|n| Some(n.region.as_str()) == leaving);
    nodes
}

/// Starts `node` from its argv, detached from this process (its own
/// process group: a Ctrl-C of the command does not reach it, and it
/// outlives the command as a machine outlives `fly`): its pid.
fn spawn_node(node: &NodeInfo) -> Result<u32, RunError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)
        .map_err(failed)?;
    let err_log = log.try_clone().map_err(failed)?;
    let Some(bin) = node.argv.first() else {
        return Err(failed(format!("{} has no argv in world.json", node.name)));
    };
    let mut cmd = Command::new(bin);
    cmd.args(&node.argv[1..])
        .envs(&node.env)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    Ok(cmd.spawn().map_err(failed)?.id())
}

/// Replaces the value after the first `flag` in `argv`.
fn set_flag(argv: &mut [String], flag: &str, value: &str) -> Result<(), RunError> {
    let i = argv
        .iter()
        .position(|a| a == flag)
        .ok_or_else(|| failed(format!("the template node's argv has no {flag}")))?;
    match argv.get_mut(i + 1) {
        Some(v) => {
            *v = value.to_string();
            Ok(())
        }
        None => Err(failed(format!("the template node's {flag} has no value"))),
    }
}

/// Records `pid` as node `name`'s in the world.json of `dir`.
fn record_pid(dir: &Path, name: &str, pid: u32) -> Result<(), RunError> {
    WorldFile::update(dir, |w| {
        if let Some(n) = w.nodes.iter_mut().find(|n| n.name == name) {
            n.pid = pid;
        }
        Ok(())
    })
    .map(drop)
    .map_err(failed)
}

/// When `path` was last written (Unix ms).
fn made_ms(path: &Path) -> Option<u64> {
    let t = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64)
}

/// A run's error inside a change of world.json (same text).
fn world_error(e: RunError) -> super::WorldError {
    super::WorldError::Failed(e.to_string())
}

impl LocalInfra {
    /// A new node of `region` on volume `volume` (directory `vdir`), made
    /// from a template node of `w` (of its region if there is one): a
    /// name no node has or had, and a loopback address of its own.
    fn new_node(
        &self,
        w: &WorldFile,
        region: &str,
        volume: &str,
        vdir: &Path,
    ) -> Result<NodeInfo, RunError> {
        // A volume an interrupted removal left behind holds that node's
        // files: a new node must not start on them (it would serve the old
        // node's databases as they were).
        if vdir.join(OLD_DATA_MARK).exists() {
            return Err(failed(format!(
                "volume {volume} in {region} holds a removed node's data; finish removing it first (anykv regions remove {region}), or delete {} by hand",
                vdir.display()
            )));
        }
        let Some(template) = w
            .nodes
            .iter()
            .find(|n| n.region == region)
            .or_else(|| w.nodes.first())
            .cloned()
        else {
            return Err(failed("the world has no node to copy"));
        };
        let IpAddr::V4(tip) = template.ip else {
            return Err(failed("the world's nodes are not on IPv4 loopback"));
        };
        let used: Vec<u8> = w
            .nodes
            .iter()
            .filter_map(|n| match n.ip {
                IpAddr::V4(ip) => Some(ip.octets()[3]),
                IpAddr::V6(_) => None,
            })
            .collect();
        // A name no node has, nor had: a destroyed node's is retired.
        let taken =
            |name: String| w.nodes.iter().any(|n| n.name == name) || w.retired.contains(&name);
        let Some(k) = (1..=254u8).find(|k| !used.contains(k) && !taken(format!("n{k}"))) else {
            return Err(failed("the world has no loopback address left"));
        };
        let o = tip.octets();
        let ip = IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], k));
        let name = format!("n{k}");
        let at = |port: u16| SocketAddr::new(ip, port);
        let mut argv = template.argv.clone();
        set_flag(&mut argv, "--machine", &name)?;
        set_flag(&mut argv, "--region", region)?;
        set_flag(
            &mut argv,
            "--gossip-addr",
            &at(template.gossip.port()).to_string(),
        )?;
        set_flag(&mut argv, "--bind", &ip.to_string())?;
        set_flag(&mut argv, "--dir", &vdir.display().to_string())?;
        set_flag(
            &mut argv,
            "--metrics-addr",
            &at(template.http.port()).to_string(),
        )?;
        if argv.iter().any(|a| a == "--emulate-host") {
            let mut hosts: Vec<String> = w
                .nodes
                .iter()
                .map(|n| format!("{}={}", n.ip, n.region))
                .collect();
            hosts.push(format!("{ip}={region}"));
            set_flag(&mut argv, "--emulate-host", &hosts.join(","))?;
        }
        let node = NodeInfo {
            name: name.clone(),
            region: region.into(),
            pid: 0,
            ip,
            gossip: at(template.gossip.port()),
            resp: at(template.resp.port()),
            http: at(template.http.port()),
            dir: vdir.to_path_buf(),
            log: self.dir.join(format!("{name}.log")),
            argv,
            env: template.env.clone(),
        };
        Ok(node)
    }

    fn world(&self) -> Result<WorldFile, RunError> {
        WorldFile::load(&self.dir.join("world.json")).map_err(|e| {
            failed(format!(
                "{e}; start a world first (anykv demo) or pass its directory with --world"
            ))
        })
    }

    /// A volume id as a directory of the world (no path tricks).
    fn volume_dir(&self, id: &str) -> Result<PathBuf, RunError> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(failed(format!("{id:?} is not a volume of this world")));
        }
        Ok(self.dir.join(id))
    }

    fn volume_id(&self, dir: &Path) -> Option<String> {
        (dir.parent() == Some(self.dir.as_path()))
            .then(|| dir.file_name()?.to_str().map(str::to_string))
            .flatten()
    }
}

impl Infra for LocalInfra {
    async fn inventory(&self) -> Result<(Vec<Node>, Vec<Vol>), RunError> {
        let w = self.world()?;
        let nodes: Vec<Node> = w
            .nodes
            .iter()
            .map(|n| Node {
                id: n.name.clone(),
                region: n.region.clone(),
                volume: self.volume_id(&n.dir),
                state: if node_pid(n).is_some() {
                    "started"
                } else {
                    "stopped"
                }
                .into(),
            })
            .collect();
        let mut volumes: BTreeMap<String, Vol> = BTreeMap::new();
        for n in &w.nodes {
            if let Some(id) = self.volume_id(&n.dir) {
                volumes.insert(
                    id.clone(),
                    Vol {
                        id,
                        region: n.region.clone(),
                        attached: Some(n.name.clone()),
                        // (Only a spare volume's age is looked at.)
                        created_ms: None,
                    },
                );
            }
        }
        // Volumes no node mounts: directories that name their region.
        let entries = std::fs::read_dir(&self.dir).map_err(failed)?;
        for e in entries.flatten() {
            let Ok(region) = std::fs::read_to_string(e.path().join(REGION_FILE)) else {
                continue;
            };
            let Some(id) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            // A destroyed node's directory holds its data: as old as
            // can be. Another was made when its region file was written.
            let created_ms = if e.path().join(OLD_DATA_MARK).exists() {
                Some(0)
            } else {
                made_ms(&e.path().join(REGION_FILE))
            };
            volumes.entry(id.clone()).or_insert(Vol {
                id,
                region: region.trim().to_string(),
                attached: None,
                created_ms,
            });
        }
        Ok((nodes, volumes.into_values().collect()))
    }

    async fn create_volume(&self, region: &str) -> Result<String, RunError> {
        self.check_region(region)?;
        // The first free name, taken by creating it (create_dir fails on
        // one that exists): two runs at once never share a volume.
        for k in 1u32.. {
            let id = format!("vol-{k}");
            let dir = self.dir.join(&id);
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    std::fs::write(dir.join(REGION_FILE), region).map_err(failed)?;
                    return Ok(id);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(failed(format!("creating {}: {e}", dir.display()))),
            }
        }
        Err(failed("no volume name left"))
    }

    async fn create_node(&self, region: &str, volume: &str) -> Result<String, RunError> {
        self.world()?; // (a clear error when there is none)
        let vdir = self.volume_dir(volume)?;
        // Recorded before it starts: a run stopped in between leaves a
        // node the next run finds (and starts, or finds running by its
        // argv), never an untracked process. Named and addressed under
        // the file's lock, from the nodes recorded then.
        let (w, made) = WorldFile::update(&self.dir, |w| {
            if let Some(n) = w.nodes.iter().find(|n| n.dir == vdir) {
                return Ok(Err(n.name.clone())); // made by a run that was stopped
            }
            let node = self
                .new_node(w, region, volume, &vdir)
                .map_err(world_error)?;
            w.nodes.push(node.clone());
            Ok(Ok(node))
        })
        .map_err(failed)?;
        let node = match made {
            Ok(node) => node,
            Err(name) => return Ok(name),
        };
        let name = node.name.clone();
        let pid = spawn_node(&node)?;
        record_pid(&self.dir, &name, pid)?;
        // Every shaped node learns the new host's region, so both
        // directions of its links are shaped.
        let token = node
            .env
            .get("ANYKV_ADMIN_TOKEN")
            .cloned()
            .unwrap_or_default();
        let place = serde_json::json!({ "place": { node.ip.to_string(): region } }).to_string();
        for n in w
            .nodes
            .iter()
            .filter(|n| n.name != name && node_pid(n).is_some())
        {
            let _ = http(n.http, "POST", "/shaper", &token, &place);
        }
        Ok(name)
    }
    async fn start_node(&self, node: &str) -> Result<(), RunError> {
        let w = self.world()?;
        let Some(n) = w.nodes.iter().find(|n| n.name == node).cloned() else {
            return Err(failed(format!("no node {node} in world.json")));
        };
        if node_pid(&n).is_some() {
            return Ok(());
        }
        let pid = spawn_node(&n)?;
        record_pid(&self.dir, node, pid)
    }

    async fn stop_node(&self, node: &str) -> Result<(), RunError> {
        let w = self.world()?;
        let Some(n) = w.nodes.iter().find(|n| n.name == node) else {
            return Ok(());
        };
        let Some(pid) = node_pid(n) else {
            return Ok(());
        };
        // SAFETY: kill(2) has no memory effects; `pid` runs this node's
        // argv (checked just above), so it is the node's process.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        let end = Instant::now() + self.stop_timeout;
        while alive(pid) {
            if Instant::now() >= end {
                // SAFETY: as above (a pid is not reused while its process
                // is alive, and `alive` just said it is).
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    async fn destroy_node(&self, node: &str) -> Result<(), RunError> {
        let w = self.world()?;
        let Some(n) = w.nodes.iter().find(|n| n.name == node).cloned() else {
            return Ok(());
        };
        if let Some(pid) = node_pid(&n) {
            return Err(failed(format!(
                "{node} still runs (pid {pid}); stop it first (run the command again: its plan does)"
            )));
        }
        // Its directory stays, as a volume of its region holding old data
        // (removed by the plan's next step, never given to a new node).
        if n.dir.is_dir() {
            std::fs::write(n.dir.join(REGION_FILE), &n.region).map_err(failed)?;
            std::fs::write(n.dir.join(OLD_DATA_MARK), &n.name).map_err(failed)?;
        }
        WorldFile::update(&self.dir, |w| {
            w.nodes.retain(|x| x.name != node);
            if !w.retired.contains(&n.name) {
                w.retired.push(n.name.clone());
            }
            Ok(())
        })
        .map(drop)
        .map_err(failed)
    }

    async fn destroy_volume(&self, volume: &str) -> Result<(), RunError> {
        let dir = self.volume_dir(volume)?;
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(failed(format!("removing {}: {e}", dir.display())))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A world of one iad node (never started) in a fresh directory.
    fn world(name: &str) -> LocalInfra {
        let dir = std::env::temp_dir().join(format!("anykv-local-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("n1")).expect("dir");
        let ip: IpAddr = "127.0.99.1".parse().expect("ip");
        let at = |p| SocketAddr::new(ip, p);
        let argv = [
            "anykv",
            "node",
            "--machine",
            "n1",
            "--region",
            "iad",
            "--gossip-addr",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([at(7946).to_string()])
        .collect();
        let file = WorldFile {
            dir: dir.clone(),
            nodes: vec![NodeInfo {
                name: "n1".into(),
                region: "iad".into(),
                pid: 0,
                ip,
                gossip: at(7946),
                resp: at(6379),
                http: at(9091),
                dir: dir.join("n1"),
                log: dir.join("n1.log"),
                argv,
                env: BTreeMap::new(),
            }],
            sidecar: None,
            dashboard: None,
            databases: Vec::new(),
            retired: Vec::new(),
        };
        file.save().expect("world.json");
        LocalInfra {
            dir,
            stop_timeout: Duration::from_secs(1),
        }
    }

    /// A world shaped by the built-in RTT table takes only its regions: a
    /// typo is refused at once, naming the ones to pick from, not waited
    /// for; an unshaped world takes any.
    #[tokio::test(flavor = "current_thread")]
    async fn a_region_outside_the_worlds_rtt_table_is_refused() {
        let infra = world("rtt-regions");
        assert!(infra.create_volume("cgd").await.is_ok(), "unshaped");
        let mut w = infra.world().expect("world");
        w.nodes[0]
            .argv
            .extend(["--emulate-wan".to_string(), "builtin".to_string()]);
        w.save().expect("world.json");
        let err = infra
            .create_volume("cgd")
            .await
            .expect_err("not in the table")
            .to_string();
        assert!(
            err.contains("\"cgd\"") && err.contains("cdg") && err.contains("syd"),
            "{err}"
        );
        infra
            .create_volume("cdg")
            .await
            .expect("a region of the table");
        let _ = std::fs::remove_dir_all(&infra.dir);
    }

    /// A destroyed node's name is never given to a new node, as Fly never
    /// reuses a machine id: the cluster may still know the old node.
    #[tokio::test(flavor = "current_thread")]
    async fn a_destroyed_nodes_name_is_not_given_again() {
        let infra = world("retired");
        let mut w = infra.world().expect("world");
        let mut n2 = w.nodes[0].clone();
        n2.name = "n2".into();
        n2.ip = "127.0.99.2".parse().expect("ip");
        n2.dir = infra.dir.join("n2");
        // A binary that is not there: the new node is recorded, then its
        // start fails (nothing runs).
        n2.argv[0] = "/nonexistent/anykv".into();
        for f in ["--bind", "--dir", "--metrics-addr"] {
            n2.argv.extend([f.to_string(), String::new()]);
        }
        std::fs::create_dir_all(&n2.dir).expect("dir");
        w.nodes.push(n2);
        w.save().expect("world.json");
        infra.destroy_node("n1").await.expect("destroyed");
        assert_eq!(infra.world().expect("world").retired, ["n1"]);
        let vol = infra.create_volume("iad").await.expect("volume");
        let _ = infra.create_node("iad", &vol).await;
        let names: Vec<String> = infra
            .world()
            .expect("world")
            .nodes
            .iter()
            .map(|n| n.name.clone())
            .collect();
        assert_eq!(names, ["n2", "n3"], "n1 is retired");
        let _ = std::fs::remove_dir_all(&infra.dir);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_destroyed_nodes_directory_is_a_volume_no_new_node_starts_on() {
        let infra = world("old-data");
        // n1 was never started: stopped, so it may be destroyed; its
        // directory stays, listed as a volume of iad, attached to nothing.
        let (nodes, _) = infra.inventory().await.expect("inventory");
        assert_eq!(nodes[0].state, "stopped");
        infra.destroy_node("n1").await.expect("destroyed");
        let (nodes, volumes) = infra.inventory().await.expect("inventory");
        assert!(nodes.is_empty());
        assert_eq!(volumes.len(), 1);
        assert_eq!(
            (volumes[0].id.as_str(), volumes[0].region.as_str()),
            ("n1", "iad")
        );
        assert!(volumes[0].attached.is_none());
        // A new node is refused on it, with what to do.
        let err = infra.create_node("iad", "n1").await.expect_err("refused");
        assert!(
            err.to_string().contains("holds a removed node's data"),
            "{err}"
        );
        // A fresh volume is fine until the node must start (no template
        // left here, so that is where it stops).
        let fresh = infra.create_volume("iad").await.expect("volume");
        assert_eq!(fresh, "vol-1");
        let err = infra
            .create_node("iad", &fresh)
            .await
            .expect_err("no template");
        assert!(err.to_string().contains("no node to copy"), "{err}");
        infra.destroy_volume("n1").await.expect("gone");
        assert!(!infra.dir.join("n1").exists());
        assert!(
            infra.destroy_volume("../x").await.is_err(),
            "no path tricks"
        );
        let _ = std::fs::remove_dir_all(&infra.dir);
    }
}
