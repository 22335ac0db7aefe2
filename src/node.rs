//! `anykv node`: a store plus cluster membership, as run on a Fly machine.
//!
//! Identity and addresses come from Fly's environment (`FLY_MACHINE_ID`,
//! `FLY_REGION`, `FLY_APP_NAME`, `FLY_PRIVATE_IP`), peers from Fly's
//! internal DNS, secrets (gossip keys, the cluster CA) from the
//! environment or files.

use anyhow::Context;
use anykv_gossip::discovery::{Discovery, DiscoveryConfig};
use anykv_gossip::node::MetaUpdater;
use anykv_gossip::timing::Profile;
use anykv_gossip::tls::ClusterCa;
use anykv_gossip::wire::ClusterKeys;
use anykv_gossip::{ClusterConfig, GossipConfig, Seeds};
use anykv_server::config::Config;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// Gossip's share of `anykv node`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct GossipArgs {
    /// Machine id (Fly: FLY_MACHINE_ID; default: the host name).
    #[arg(long, env = "FLY_MACHINE_ID")]
    pub machine: Option<String>,
    /// Region code (Fly: FLY_REGION).
    #[arg(long, env = "FLY_REGION", default_value = "local")]
    pub region: String,
    /// Fly app whose `<app>.internal` names list the peers.
    #[arg(long, env = "FLY_APP_NAME")]
    pub app: Option<String>,
    /// The app whose `<app>.internal` names list the peers, when it is not
    /// this machine's own (a router app joins the data nodes' app).
    /// Takes precedence over `--app`.
    #[arg(long, env = "ANYKV_DISCOVER_APP")]
    pub discover_app: Option<String>,
    /// A router node: it holds no data (never a primary, replica or
    /// standby, no vote in its region's controller) and serves every
    /// database through the nodes that hold it, as any node without a
    /// copy does. For regions without data, and machines that may stop
    /// when idle (fly.router.toml).
    #[arg(long, env = "ANYKV_ROUTER")]
    pub router: bool,
    /// Gossip (UDP) address. Default: FLY_PRIVATE_IP (the 6PN address)
    /// port 7946; on Fly without it, `fly-local-6pn`; else 127.0.0.1:7946.
    #[arg(long)]
    pub gossip_addr: Option<SocketAddr>,
    /// QUIC state-sync port, the same on every node.
    #[arg(long, default_value_t = 7947)]
    pub sync_port: u16,
    /// DNS server for discovery (default: the system's; Fly's is fdaa::3).
    #[arg(long)]
    pub dns_server: Option<SocketAddr>,
    /// Extra fixed gossip addresses to join through (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<SocketAddr>,
    /// Gossip keys, comma-separated; the first signs, all verify (rotation).
    #[arg(long, env = "ANYKV_GOSSIP_KEYS", hide_env_values = true)]
    pub gossip_keys: String,
    /// Cluster CA certificate: a PEM file, or the PEM text itself (as a
    /// Fly secret in ANYKV_CLUSTER_CA).
    #[arg(long, env = "ANYKV_CLUSTER_CA", hide_env_values = true)]
    pub cluster_ca: PathBuf,
    /// Cluster CA key (a PEM file, or the PEM text itself); node
    /// certificates are issued from it.
    #[arg(long, env = "ANYKV_CLUSTER_CA_KEY", hide_env_values = true)]
    pub cluster_ca_key: PathBuf,
    /// SWIM timings of the cluster-wide pool: wan, lan (memberlist's
    /// defaults) or test.
    #[arg(long, default_value = "wan")]
    pub gossip_profile: Profile,
    /// UDP port of the region pool (same-region nodes probe each other on
    /// LAN timings there).
    #[arg(long, default_value_t = 7948)]
    pub lan_port: u16,
    /// SWIM timings of the region pool.
    #[arg(long, default_value = "lan")]
    pub lan_profile: Profile,
    /// Expected nodes per region.
    #[arg(long, default_value_t = 3)]
    pub region_size: u32,
    /// The region controller's Raft heartbeat (ms); a leader is replaced
    /// after 4–8 heartbeats without one. Short enough that a new leader is
    /// usually elected within a lease period after the old one leaves, so
    /// a planned handoff by the leader rarely outlives the new primary's
    /// lease (docs/BENCHMARKS.md has the pauses measured).
    #[arg(long, default_value_t = 150)]
    pub controller_heartbeat_ms: u64,
    /// A primary's lease from its region's controller (ms): a primary
    /// that cannot renew it stops taking writes, and is replaced by its
    /// standby once a whole period passed without a renewal.
    #[arg(long, default_value_t = 2000)]
    pub lease_ms: u64,
    /// A member of the region's controller group that has not been alive
    /// for this long (ms) leaves the group (a voter only while at least 3
    /// others remain): a machine destroyed for good stops counting against
    /// the majority once a replacement has joined.
    #[arg(long, default_value_t = 600_000)]
    pub controller_remove_after_ms: u64,
    /// A planned handoff's whole time (ms): on SIGTERM every database
    /// this node is primary of goes to its standby within it (their
    /// writes wait meanwhile), and so does one database's `cluster
    /// failover`. With what follows it (the drain of forwarded requests,
    /// up to 1.5 s; closing customers' connections, 0.5 s; a second to
    /// stop) it must fit Fly's `kill_timeout` (fly.toml sets 10 s; Fly's
    /// own default is 5 s).
    #[arg(long, default_value_t = 3500)]
    pub handoff_timeout_ms: u64,
    /// Expected cluster size (scales suspicion timeouts).
    #[arg(long, default_value_t = 16)]
    pub cluster_size: u32,
    /// Emulated WAN, for tests and local clusters (never on Fly): every
    /// inter-node byte (gossip, state sync, replication) is delayed by the
    /// RTT between the two nodes' regions from this table (a
    /// `from,to,rtt_ms` CSV file, or `builtin` for the project's table of
    /// Fly regions). Needs `--emulate-host` for every node.
    #[arg(long)]
    pub emulate_wan: Option<String>,
    /// With --emulate-wan: the region of each node's IP, `IP=REGION`,
    /// comma-separated (this node's included).
    #[arg(long, value_delimiter = ',')]
    pub emulate_host: Vec<String>,
    /// With --emulate-wan: the share of packets lost on links between
    /// regions (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub emulate_loss: f64,
    /// Fault testing only: shifts this process's wall clock by this many
    /// ms (expiry, time stamps, snapshots' times), as a host whose clock
    /// is off would. Leases run on the monotonic clock and must not care.
    #[arg(long, default_value_t = 0, hide = true, allow_hyphen_values = true)]
    pub clock_offset_ms: i64,
    /// Fault testing only: this process's lease clock runs at this rate
    /// of real time (0.9: 10% slow), as a VM whose timer drifts would.
    /// The lease margin covers a relative drift of 20%; past it two
    /// primaries can acknowledge writes at once (docs/FAILOVER.md).
    #[arg(long, default_value_t = 1.0, hide = true, value_parser = clock_rate)]
    pub clock_rate: f64,
    /// How often the node writes its usage record (what each database's
    /// customers used here: docs/METERING.md), in ms. A crash loses at
    /// most this much metering, plus a second.
    #[arg(long, default_value_t = 10_000)]
    pub meter_interval_ms: u64,
    /// The usage log's size limit, in MB (0: none). Records the sidecar
    /// has taken are dropped from it as it goes; past this size the
    /// oldest records it has not taken are dropped too (their usage is
    /// lost to billing, with a warning): a node whose sidecar stopped
    /// pulling does not fill its disk.
    #[arg(long, default_value_t = 1024)]
    pub usage_log_max_mb: u64,
    /// How long usage records the sidecar has taken stay in the usage log
    /// (hours): a sidecar restored from a backup up to this old takes
    /// them again and loses nothing.
    #[arg(long, default_value_t = 48)]
    pub usage_keep_hours: u64,
}

/// The link shaper `--emulate-wan` asks for (off without it).
fn shaper(a: &GossipArgs) -> anyhow::Result<anykv_gossip::link::Shaper> {
    use anykv_gossip::link::Shaper;
    let Some(src) = &a.emulate_wan else {
        if !a.emulate_host.is_empty() || a.emulate_loss != 0.0 {
            anyhow::bail!("--emulate-host and --emulate-loss need --emulate-wan");
        }
        return Ok(Shaper::off());
    };
    let table = anykv_bench::rtt_table(src).map_err(anyhow::Error::msg)?;
    if !(0.0..=1.0).contains(&a.emulate_loss) {
        anyhow::bail!("--emulate-loss must be between 0 and 1");
    }
    let s = Shaper::new(table, std::process::id().into());
    for h in &a.emulate_host {
        let (ip, region) = h
            .split_once('=')
            .with_context(|| format!("--emulate-host '{h}': expected IP=REGION"))?;
        let ip: IpAddr = ip
            .parse()
            .with_context(|| format!("--emulate-host '{h}': bad IP"))?;
        if !s.table().is_some_and(|t| t.regions().any(|r| r == region)) {
            anyhow::bail!("--emulate-host '{h}': region '{region}' is not in the RTT table");
        }
        s.set_region(ip, region);
    }
    s.set_loss(a.emulate_loss);
    Ok(s)
}

/// `--clock-rate`: a positive rate of real time, 0.01 to 100.
fn clock_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.01..=100.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "{s:?}: a rate of real time from 0.01 to 100 (1: exact)"
        )),
    }
}

fn default_gossip_addr() -> SocketAddr {
    let on_fly = std::env::var_os("FLY_APP_NAME").is_some();
    let private = std::env::var("FLY_PRIVATE_IP").ok();
    let ip = cluster_ip(private.as_deref(), on_fly, || {
        use std::net::ToSocketAddrs;
        ("fly-local-6pn", 0)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .map(|a| a.ip())
    });
    SocketAddr::new(ip, 7946)
}

/// The address the cluster ports bind by default: on Fly, the machine's
/// 6PN address (`FLY_PRIVATE_IP`, else the `fly-local-6pn` name Fly puts
/// in /etc/hosts), so gossip and replication reach peers over the private
/// network only; elsewhere loopback. (The name is looked up only on Fly:
/// elsewhere a DNS look-up of it could hang on an unreachable resolver.)
fn cluster_ip(
    private_ip: Option<&str>,
    on_fly: bool,
    six_pn: impl FnOnce() -> Option<IpAddr>,
) -> IpAddr {
    if let Some(ip) = private_ip.and_then(|s| s.parse::<IpAddr>().ok()) {
        return ip;
    }
    if on_fly {
        if let Some(ip) = six_pn() {
            return ip;
        }
        tracing::warn!(
            "on Fly without FLY_PRIVATE_IP or fly-local-6pn: the cluster ports bind 127.0.0.1 \
             and no peer can reach them; pass --gossip-addr"
        );
    }
    IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
}

impl GossipArgs {
    /// The node's machine name: `--machine` (Fly: FLY_MACHINE_ID), else
    /// the host name.
    pub fn machine_name(&self) -> String {
        self.machine.clone().unwrap_or_else(host_name)
    }
}

/// The file in a node's data directory naming the machine it belongs to.
const OWNER_FILE: &str = "anykv-machine";

/// Claims data directory `dir` (on Fly, the machine's volume) for machine
/// `machine`, or refuses it. A directory no machine claimed yet (new, or
/// written by a version before this file) becomes this machine's; one it
/// claimed before is its own again after a restart or a migration to
/// another host (Fly keeps the machine's id and volume). One another
/// machine claimed holds that node's data: its databases as they were
/// when it stopped, its controller's Raft log under its identity, its
/// usage log. Served by a new node those would be stale copies and a
/// confused controller group, so the node does not start: the directory
/// is a volume an interrupted `anykv regions remove` left behind (running
/// the removal again destroys it) or one attached by hand.
pub fn claim_dir(dir: &std::path::Path, machine: &str) -> anyhow::Result<()> {
    let path = dir.join(OWNER_FILE);
    match std::fs::read_to_string(&path) {
        Ok(owner) if owner.trim() == machine => Ok(()),
        // Empty: a claim a crash cut short (it names no machine).
        Ok(owner) if !owner.trim().is_empty() => anyhow::bail!(
            "the data directory {} belongs to machine {}, not to this one ({machine}): it holds that node's data. \
             If it is a volume an interrupted `anykv regions remove` left behind, run the removal again (it destroys the volume); \
             to reuse it empty, delete its files first; to run that node again, start it with --machine {}",
            dir.display(),
            owner.trim(),
            owner.trim()
        ),
        Ok(_) => write_claim(dir, &path, machine),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_claim(dir, &path, machine),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `machine`'s claim to `path` in `dir`: whole and on disk (synced,
/// then renamed over, the directory synced) before the node writes
/// anything else there.
fn write_claim(dir: &std::path::Path, path: &std::path::Path, machine: &str) -> anyhow::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    let tmp = dir.join(format!("{OWNER_FILE}.tmp"));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(format!("{machine}\n").as_bytes())?;
        f.sync_all()
    });
    written
        .and_then(|_| std::fs::rename(&tmp, path))
        .and_then(|_| std::fs::File::open(dir)?.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "anykv".into())
}

/// A certificate or key given as PEM text (a Fly secret in the variable:
/// `fly secrets set ANYKV_CLUSTER_CA="$(cat ca.pem)"`) or as the path of
/// a file holding it (e.g. one fly.toml's `[[files]]` mounts).
fn pem_or_file(p: &std::path::Path) -> anyhow::Result<String> {
    let text = p.to_string_lossy();
    if text.trim_start().starts_with("-----BEGIN ") {
        return Ok(text.into_owned());
    }
    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
}

/// Builds the gossip configuration from arguments (shared with the demo).
pub fn gossip_config(
    a: &GossipArgs,
    redis_addr: Option<SocketAddr>,
) -> anyhow::Result<ClusterConfig> {
    let machine = a.machine_name();
    let keys = ClusterKeys::parse(&a.gossip_keys).context("gossip keys")?;
    let read = |p: &PathBuf| pem_or_file(p);
    let ca = ClusterCa {
        cert_pem: read(&a.cluster_ca)?,
        key_pem: read(&a.cluster_ca_key)?,
    };
    let tls = ca.issue(&machine).context("issuing the node certificate")?;
    let bind = a.gossip_addr.unwrap_or_else(default_gossip_addr);
    let mut c = GossipConfig::new(machine, a.region.clone(), bind, keys, tls);
    c.shaper = shaper(a)?;
    // The emulated world's other fault: this process's clock is off.
    if a.clock_offset_ms != 0 {
        tracing::warn!(
            "this node's wall clock is shifted by {} ms (--clock-offset-ms, fault testing)",
            a.clock_offset_ms
        );
        anykv_server::util::set_clock_offset_ms(a.clock_offset_ms);
    }
    if a.clock_rate != 1.0 {
        tracing::warn!(
            "this node's lease clock runs at {} × real time (--clock-rate, fault testing)",
            a.clock_rate
        );
        anykv_gossip::controller::clock::set_rate(a.clock_rate);
    }
    c.sync_port = a.sync_port;
    c.profile = a.gossip_profile;
    c.cluster_size = a.cluster_size;
    c.meta.redis_addr = redis_addr.map(|r| announced(r, bind));
    use anykv_gossip::state::{ROLE_ROUTER, ROLE_STORE};
    c.meta.roles = vec![if a.router { ROLE_ROUTER } else { ROLE_STORE }.into()];
    c.meta.build = anykv_server::shared::ANYKV_VERSION.to_string();
    c.seeds = match a.discover_app.as_ref().or(a.app.as_ref()) {
        Some(app) => {
            let mut dc = DiscoveryConfig::for_app(app.clone());
            dc.resolver = a.dns_server;
            Seeds::Dns(Arc::new(Discovery::new(dc).context("DNS discovery")?))
        }
        None if !a.seeds.is_empty() => Seeds::Static(a.seeds.clone()),
        None => Seeds::None,
    };
    Ok(ClusterConfig {
        wan: c,
        lan_port: a.lan_port,
        lan_profile: a.lan_profile,
        lan_cluster_size: a.region_size,
    })
}

/// The region controller's timings (from `anykv node`'s flags).
#[derive(Clone, Copy, Debug)]
pub struct ControllerTiming {
    pub heartbeat: Duration,
    pub lease: Duration,
    pub remove_after: Duration,
    /// A planned handoff's whole time (`--handoff-timeout-ms`).
    pub handoff: Duration,
}

/// Starts the node's region controller (its database in `dir`).
pub async fn start_controller(
    n: &anykv_gossip::Cluster,
    dir: &std::path::Path,
    sync_port: u16,
    timing: ControllerTiming,
) -> anyhow::Result<Arc<anykv_gossip::controller::Controller>> {
    use anykv_gossip::controller::{Controller, ControllerConfig, MIN_VOTERS};
    let id = n.wan().identity();
    let syncer = n
        .wan()
        .syncer()
        .context("the cluster pool runs no state sync")?;
    let cfg = ControllerConfig {
        dir: dir.to_path_buf(),
        machine: id.machine.clone(),
        region: id.region.clone(),
        sync_port,
        min_voters: MIN_VOTERS,
        heartbeat: timing.heartbeat,
        lease: timing.lease,
        remove_after: timing.remove_after,
        handoff: timing.handoff,
    };
    Ok(Controller::start(cfg, syncer, n.view(), n.updater()).await?)
}

/// Keeps this node's lease from its region's controller: renews it about
/// three times per period (and at once when records change, so a new
/// primary can write without waiting a turn), and hands each grant to the
/// store (which refuses writes once it ends).
pub fn spawn_lease_keeper(
    c: Arc<anykv_gossip::controller::Controller>,
    shared: Arc<anykv_server::shared::Shared>,
) {
    use anykv_gossip::controller::{clock, lease::margin};
    tokio::spawn(async move {
        let mut changed = c.watch();
        // A third of a period after a renewal; a tenth after a failure (a
        // renewal that times out takes a quarter), so one slow answer never
        // lets a healthy primary's lease lapse.
        let mut wait = c.lease() / 3;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = changed.changed() => if r.is_err() { return },
            }
            wait = c.lease() / 10;
            if !c.formed() {
                continue;
            }
            // For every tenant this node is primary of, the replicas that
            // completed their sync and stream (the controller promotes only
            // a standby reported so, and forgets one of an `async` tenant
            // not reported for a period), and whether its writes wait for
            // the standby.
            let synced: Vec<(u64, Vec<std::net::IpAddr>, bool)> = shared
                .repl_status
                .lock()
                .iter()
                .filter(|(_, st)| st.link_up.is_none())
                .map(|(t, st)| {
                    let ips = st
                        .replicas
                        .iter()
                        .filter(|r| r.synced)
                        .map(|r| r.addr.ip())
                        .collect();
                    (t.0, ips, st.waits_for_standby)
                })
                .collect();
            // The tenants this node holds as a replica without a sync
            // completed since it started (the controller does not promote
            // it for them).
            let restarted: Vec<u64> = shared
                .repl_status
                .lock()
                .iter()
                .filter(|(_, st)| st.link_up.is_some() && !st.synced_since_start)
                .map(|(t, _)| t.0)
                .collect();
            match c.renew_lease(synced, restarted).await {
                Ok((sent, g)) => {
                    // Counted from when it was asked for, less the margin
                    // for clock drift, by the period the leader granted,
                    // on the lease clock (a fault test may make it drift).
                    let granted = std::time::Duration::from_millis(g.duration_ms);
                    if let Some(until) = granted
                        .checked_sub(margin(granted))
                        .and_then(|d| sent.checked_add(clock::real(d)))
                    {
                        shared.set_lease(g.primaries, until);
                        wait = c.lease() / 3;
                    }
                }
                Err(e) => tracing::debug!("lease: {e}"),
            }
        }
    });
}

/// A planned handoff (SIGTERM: a deploy, `fly machine stop`, a host
/// migration): every database this node is primary of under its region's
/// controller goes to its in-sync standby with nothing lost, all at once,
/// within `timeout` (`--handoff-timeout-ms`, which must fit Fly's
/// `kill_timeout`). The node gives its lease up (its primaries' writes
/// wait from here, and meet `-READONLY` once the standby is primary),
/// waits until each standby has acknowledged everything, and asks the
/// controller's leader to commit it as primary at the next epoch. A
/// leaving leader then hands its leadership to another voter
/// (`Controller::transfer_leadership`). Returns when all that ended or
/// the time is up.
pub async fn hand_off_all(
    c: &Arc<anykv_gossip::controller::Controller>,
    shared: &Arc<anykv_server::shared::Shared>,
    timeout: Duration,
) {
    if !c.formed() {
        return;
    }
    // The whole handoff, these looks included, fits `timeout`.
    let started = std::time::Instant::now();
    let deadline = started + timeout;
    // The databases this node is primary of whose standby is in sync: as
    // this node's copy of the group's records says, or (that copy may lag
    // the leader's commits) as its own replication shows the standby now
    // (attached, synced). The leader decides with its own records. The
    // looks together take at most a fifth of the time.
    let looks_end = started + timeout / 5;
    let mut mine = Vec::new();
    for r in c.roles().records.into_values() {
        let Some(standby) = r.standby.as_deref().filter(|_| r.primary == c.me()) else {
            continue;
        };
        if r.in_sync == r.standby || synced_here(c, shared, r.tenant, standby, looks_end).await {
            mine.push(r);
        }
    }
    if !mine.is_empty() {
        // Writes go on while the node that will be the new primary's
        // standby syncs (up to a quarter of the time); then they wait
        // only for the handoff and that node's link to move.
        let warm_until = started + timeout / 4;
        let mut all = tokio::task::JoinSet::new();
        for r in &mine {
            let (c, shared, tenant) = (c.clone(), shared.clone(), r.tenant);
            all.spawn(async move { warm_next_standby(&c, &shared, tenant, warm_until).await });
        }
        while all.join_next().await.is_some() {}
        hand_over(c, shared, mine, started, deadline).await;
    }
    // A leaving leader passes the leadership on: the primaries' leases
    // (the new ones' included) need a leader to renew them before they
    // run out, sooner than the group would elect one by itself.
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    match c.transfer_leadership(left).await {
        Ok(Some(l)) => tracing::warn!(
            to = %l,
            ms = started.elapsed().as_millis() as u64,
            "controller leadership handed over"
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(
            "controller leadership not handed over ({e}); the group elects a leader after its election timeout"
        ),
    }
}

/// Before a planned handoff of `tenant`, whose primary this node is: has
/// the controller name the node that will be the standby after it
/// (`RoleRecord::next_standby`), and waits, until `until` at most, for
/// that node's replica to have completed its sync with this primary. Its
/// link then only moves to the new primary (a partial resync), where
/// `region` writes would otherwise wait for a whole sync, a load of its
/// old data first, after the handoff. Writes go on meanwhile. Logs how it
/// went; a node not in sync by then takes the rest of its sync after the
/// handoff, as without this.
async fn warm_next_standby(
    c: &Arc<anykv_gossip::controller::Controller>,
    shared: &Arc<anykv_server::shared::Shared>,
    tenant: u64,
    until: std::time::Instant,
) {
    let started = std::time::Instant::now();
    let left = until.saturating_duration_since(started);
    let next = match tokio::time::timeout(left, c.request_prepare(tenant)).await {
        Ok(Ok(Some(next))) => next,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::warn!(tenant, "planned handoff: no next standby named ({e})");
            return;
        }
        Err(_) => {
            tracing::warn!(tenant, "planned handoff: no next standby named in time");
            return;
        }
    };
    loop {
        if synced_here(c, shared, tenant, &next, until).await {
            tracing::info!(
                tenant,
                next = %next,
                ms = started.elapsed().as_millis() as u64,
                "planned handoff: the next standby is in sync"
            );
            return;
        }
        if std::time::Instant::now() >= until {
            tracing::warn!(
                tenant,
                next = %next,
                "planned handoff: the next standby is not in sync yet; it finishes its sync after the handoff, and region writes wait for it"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `machine`'s replica of `tenant`, whose primary this node is,
/// has completed its sync and streams, as the tenant's executor says now
/// (false when it has not answered by `until`).
async fn synced_here(
    c: &anykv_gossip::controller::Controller,
    shared: &anykv_server::shared::Shared,
    tenant: u64,
    machine: &str,
    until: std::time::Instant,
) -> bool {
    let Some(ip) = c.ip_of(machine) else {
        return false;
    };
    let probe = shared.probe(anykv_server::tenant::TenantId(tenant));
    match tokio::time::timeout_at(tokio::time::Instant::from_std(until), probe).await {
        Ok(Some(st)) => st.replicas.iter().any(|x| x.synced && x.addr.ip() == ip),
        _ => false,
    }
}

/// After a planned handoff on SIGTERM: waits at least `min` (the held
/// writes re-run against the new roles and are forwarded to the new
/// primaries), then until no forwarded request is waiting for its reply
/// and no other node has sent a request here for `quiet`, at most `max`
/// in all, so clients of this node get their replies before it closes
/// their connections, and requests routers sent before they learnt the
/// new primaries (up to a round trip earlier) are answered: `-READONLY`,
/// which they retry there, rather than lost with the link, which they
/// could only report as "may or may not have run". The node is still a
/// live member meanwhile: a router gives up a request in flight to a
/// node that left.
pub async fn drain_forwards(
    shared: &Arc<anykv_server::shared::Shared>,
    min: Duration,
    quiet: Duration,
    max: Duration,
) {
    let started = std::time::Instant::now();
    tokio::time::sleep(min).await;
    let mut seen = shared.peer_requests();
    let mut since = std::time::Instant::now();
    while started.elapsed() < max {
        let now = shared.peer_requests();
        if now != seen {
            (seen, since) = (now, std::time::Instant::now());
        }
        if shared.forwards_in_flight() == 0 && since.elapsed() >= quiet {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if shared.forwards_in_flight() > 0 || since.elapsed() < quiet {
        tracing::warn!(
            waiting = shared.forwards_in_flight(),
            last_request_ms_ago = since.elapsed().as_millis() as u64,
            "leaving with forwarded requests unanswered, or other nodes still sending requests here"
        );
    }
}

/// How long a leaving node waits without a request from another node
/// before it closes its links (see [`drain_forwards`]): a request a far
/// router sent just before it learnt the new primary takes half a round
/// trip to arrive, and the router's view of the new record another half;
/// one and a half of the longest smoothed round trip to a member, from
/// 100 ms to 600 ms.
pub fn quiet_before_leaving(view: &anykv_gossip::ClusterView) -> Duration {
    let longest = view
        .members
        .iter()
        .filter(|m| !m.me && m.state != anykv_gossip::MemberState::Down)
        .filter_map(|m| m.rtt_ms)
        .fold(0.0f64, f64::max)
        .min(1000.0);
    Duration::from_secs_f64(longest * 1.5 / 1000.0)
        .clamp(Duration::from_millis(100), Duration::from_millis(600))
}

/// [`hand_off_all`]'s handoffs of `mine`.
async fn hand_over(
    c: &Arc<anykv_gossip::controller::Controller>,
    shared: &Arc<anykv_server::shared::Shared>,
    mine: Vec<anykv_gossip::catalog::RoleRecord>,
    started: std::time::Instant,
    deadline: std::time::Instant,
) {
    shared.close_lease();
    tracing::warn!(databases = mine.len(), "planned handoff: writes held");
    // Concurrently: the leader batches the commits, and no database waits
    // behind another's standby.
    let mut all = tokio::task::JoinSet::new();
    for rec in mine {
        let (c, shared) = (c.clone(), shared.clone());
        all.spawn(async move {
            hand_off_one(&c, &shared, rec, started, deadline, "planned handoff").await
        });
    }
    let (mut done, mut failed) = (0usize, 0usize);
    while let Some(r) = all.join_next().await {
        match r {
            Ok(Ok(_)) => done += 1,
            _ => failed += 1,
        }
    }
    tracing::warn!(
        done,
        failed,
        ms = started.elapsed().as_millis() as u64,
        "planned handoff ended"
    );
}

/// The planned failover of one database this node is primary of (`POST
/// /admin/tenants/{id}/failover`, the cluster's `FAILOVER`): as a
/// SIGTERM's handoff, for that database alone, within `timeout`. Its
/// lease is given up (its writes wait from here), the in-sync standby
/// catches up, and the controller's leader commits it as primary at the
/// next epoch; the held writes then meet `-READONLY`. If the controller
/// refuses, the database takes writes again at its next renewal. Returns
/// the new record.
pub async fn fail_over(
    c: &Arc<anykv_gossip::controller::Controller>,
    shared: &Arc<anykv_server::shared::Shared>,
    tenant: u64,
    timeout: Duration,
) -> Result<anykv_gossip::catalog::RoleRecord, String> {
    let rec = c.roles().records.get(&tenant).cloned().ok_or_else(|| {
        format!("database {tenant} has no role record in this region's controller")
    })?;
    if rec.primary != c.me() {
        return Err(format!(
            "{} is database {tenant}'s primary, not {}",
            rec.primary,
            c.me()
        ));
    }
    match rec.standby.as_deref() {
        Some(s) if rec.in_sync.as_deref() == Some(s) => {}
        Some(s) => {
            return Err(format!(
                "database {tenant}'s standby {s} has not completed its sync yet; retry once the cluster view shows it in sync"
            ))
        }
        None => return Err(format!("database {tenant} has no standby to hand over to")),
    }
    // The standby after it syncs first, while writes go on (within a
    // quarter of the time, as on SIGTERM).
    let begun = std::time::Instant::now();
    warm_next_standby(c, shared, tenant, begun + timeout / 4).await;
    let timeout = timeout.saturating_sub(begun.elapsed());
    let started = std::time::Instant::now();
    shared.release_lease(
        tenant,
        rec.epoch,
        timeout + anykv_server::shared::HOLD_GRACE,
    );
    tracing::warn!(tenant, "planned failover: writes held");
    let r = hand_off_one(
        c,
        shared,
        rec,
        started,
        started + timeout,
        "planned failover",
    )
    .await;
    if r.is_err() {
        // Writes resume at the next renewal.
        shared.retake_lease(tenant);
    }
    r
}

/// Waits until the standby of `rec` has acknowledged everything this node
/// wrote, then asks the controller's leader to commit it as primary at the
/// next epoch, all before `deadline`, and logs how it went (`what`, timed
/// from `started`). The caller has stopped the database's writes.
///
/// The standby may wait until 3/4 of the time left; the rest is for the
/// leader's answer. A standby not caught up by then is in sync all the
/// same (with durability `region` it has every acknowledged write: what it
/// lacks was never acknowledged), so the handoff goes ahead; with `async`
/// the acknowledged writes it lacks are counted and logged as discarded
/// (`anykv_writes_discarded_total`).
async fn hand_off_one(
    c: &Arc<anykv_gossip::controller::Controller>,
    shared: &Arc<anykv_server::shared::Shared>,
    rec: anykv_gossip::catalog::RoleRecord,
    started: std::time::Instant,
    deadline: std::time::Instant,
    what: &str,
) -> Result<anykv_gossip::catalog::RoleRecord, String> {
    use anykv_server::tenant::TenantId;
    let standby = rec.standby.clone().unwrap_or_default();
    let ip = c.ip_of(&standby);
    let now = std::time::Instant::now();
    let wait_until = now + deadline.saturating_duration_since(now) * 3 / 4;
    // Where the standby's copy ends when it did not catch up in time.
    let mut short_at = None;
    loop {
        // The executor answers at once unless it is stuck (a script of the
        // database answers from what it was when the script began): the
        // wait is bounded all the same.
        let probed = tokio::time::timeout_at(
            tokio::time::Instant::from_std(wait_until),
            shared.probe(TenantId(rec.tenant)),
        )
        .await;
        let st = match probed {
            Ok(Some(st)) => st,
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(tenant = rec.tenant, %standby, "{what}: the database's executor did not answer; handing over without knowing what the standby has");
                break;
            }
        };
        let acked = ip.and_then(|ip| st.acked_by(ip));
        if acked.is_some_and(|a| a >= st.offset) {
            break;
        }
        if std::time::Instant::now() >= wait_until {
            let (from, bytes) = acked.map_or((0, 0), |a| (a, st.offset.saturating_sub(a)));
            tracing::warn!(tenant = rec.tenant, %standby, bytes, "{what}: the standby has not acknowledged the last {bytes} bytes; handing over anyway (with durability region none of them was acknowledged to a client; with async, the writes among them are counted as discarded)");
            short_at = Some(from);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let r = match tokio::time::timeout(left, c.request_handoff(rec.tenant)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer from the controller's leader within the handoff's {} ms",
            deadline.saturating_duration_since(started).as_millis()
        )),
    };
    match &r {
        Ok(next) => {
            tracing::warn!(
                tenant = rec.tenant,
                to = %next.primary,
                epoch = next.epoch,
                ms = started.elapsed().as_millis() as u64,
                "{what} done"
            );
            // (A handoff that failed discards nothing here; one committed
            // after all is counted when this node rejoins, if it does.)
            if let Some(at) = short_at {
                shared.abandon(TenantId(rec.tenant), at);
            }
        }
        Err(e) => tracing::error!(tenant = rec.tenant, "{what} failed: {e}"),
    }
    r
}

/// Publishes the store's load into the node's metadata every few seconds.
pub fn spawn_load_reporter(cmd: MetaUpdater, shared: Arc<anykv_server::shared::Shared>) {
    tokio::spawn(async move {
        let mut last = shared.stats.commands_processed.load(Relaxed);
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = shared.stats.commands_processed.load(Relaxed);
            let load = anykv_gossip::state::Load {
                connected_clients: shared.stats.connected_clients.load(Relaxed) as u64,
                ops_per_sec: (now - last) / 5,
                used_memory: anykv_server::alloc::allocated() as u64,
            };
            last = now;
            let mut tenants: Vec<anykv_gossip::state::HeldTenant> = shared
                .repl_status
                .lock()
                .iter()
                .filter(|(id, _)| **id != anykv_server::tenant::TenantId::DEFAULT)
                .map(|(id, s)| anykv_gossip::state::HeldTenant {
                    id: id.0,
                    offset: s.offset,
                    lag_ms: s.master_lag_ms,
                })
                .collect();
            tenants.sort_by_key(|t| t.id);
            if !cmd.update(move |m| {
                if m.load != load {
                    m.load = load;
                }
                if m.tenants != tenants {
                    m.tenants = tenants;
                }
            }) {
                return;
            }
        }
    });
}

/// The RESP address other machines can reach: a wildcard bind (the
/// image binds `0.0.0.0` and `::` for Flycast) is announced with the
/// node's cluster address, its 6PN address on Fly. (The dashboard's key
/// browser connects to what a node announces; `0.0.0.0` would be the
/// sidecar's own host.)
pub fn announced(redis: SocketAddr, cluster: SocketAddr) -> SocketAddr {
    if redis.ip().is_unspecified() && !cluster.ip().is_unspecified() {
        SocketAddr::new(cluster.ip(), redis.port())
    } else {
        redis
    }
}

/// Where the store answers RESP, for the node's metadata.
pub fn redis_addr(config: &Config) -> SocketAddr {
    let ip = config
        .bind()
        .first()
        .and_then(|b| b.trim_start_matches('-').parse::<IpAddr>().ok())
        .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    SocketAddr::new(ip, config.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cluster ports: FLY_PRIVATE_IP, else (on Fly only) fly-local-6pn,
    /// else loopback.
    #[test]
    fn cluster_ports_bind_the_6pn_address_on_fly() {
        let six: IpAddr = "fdaa:0:1:a7b:1::2".parse().unwrap();
        let never = || -> Option<IpAddr> { panic!("looked up off Fly") };
        assert_eq!(
            cluster_ip(Some("fdaa::3"), true, || Some(six)),
            "fdaa::3".parse::<IpAddr>().unwrap()
        );
        assert_eq!(cluster_ip(None, true, || Some(six)), six);
        assert_eq!(cluster_ip(Some("junk"), true, || Some(six)), six);
        assert_eq!(
            cluster_ip(None, false, never),
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            cluster_ip(None, true, || None),
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        );
    }

    /// A wildcard RESP bind is announced at the cluster address; a
    /// specific one as it is.
    #[test]
    fn a_wildcard_resp_bind_is_announced_at_the_cluster_address() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let six = sa("[fdaa:0:1:a7b:1::2]:7946");
        assert_eq!(
            announced(sa("0.0.0.0:6379"), six),
            sa("[fdaa:0:1:a7b:1::2]:6379")
        );
        assert_eq!(
            announced(sa("[::]:6379"), six),
            sa("[fdaa:0:1:a7b:1::2]:6379")
        );
        assert_eq!(announced(sa("10.0.0.5:6379"), six), sa("10.0.0.5:6379"));
        // Nothing better to say when the cluster port is a wildcard too.
        assert_eq!(
            announced(sa("0.0.0.0:6379"), sa("[::]:7946")),
            sa("0.0.0.0:6379")
        );
    }

    /// The CA is PEM text (a Fly secret in the variable) or a file's path.
    #[test]
    fn a_certificate_is_pem_text_or_a_file() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_or_file(std::path::Path::new(pem)).unwrap(), pem);
        let dir = std::env::temp_dir().join(format!("anykv-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ca.pem");
        std::fs::write(&file, pem).unwrap();
        assert_eq!(pem_or_file(&file).unwrap(), pem);
        let missing = dir.join("missing.pem");
        let err = pem_or_file(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A data directory is claimed by the first machine that starts on
    /// it, is its own again after a restart or a migration, and is
    /// refused to another machine.
    #[test]
    fn a_data_directory_belongs_to_the_machine_that_claimed_it() {
        let dir = std::env::temp_dir().join(format!("anykv-claim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let vol = dir.join("volume");
        claim_dir(&vol, "m1").expect("a new directory is claimed");
        assert_eq!(
            std::fs::read_to_string(vol.join(OWNER_FILE)).unwrap(),
            "m1\n"
        );
        claim_dir(&vol, "m1").expect("the same machine again");
        let err = claim_dir(&vol, "m2").unwrap_err().to_string();
        assert!(
            err.contains("belongs to machine m1") && err.contains("regions remove"),
            "{err}"
        );
        // Refused, it stays the first machine's.
        assert_eq!(
            std::fs::read_to_string(vol.join(OWNER_FILE)).unwrap(),
            "m1\n"
        );
        // A directory of an earlier version (data, no claim) is adopted.
        let old = dir.join("old");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("dump.akv"), b"x").unwrap();
        claim_dir(&old, "m3").expect("adopted");
        claim_dir(&old, "m3").expect("and its own");
        // A claim a crash left empty names no machine: taken.
        std::fs::write(old.join(OWNER_FILE), b"").unwrap();
        claim_dir(&old, "m4").expect("an empty claim is no claim");
        assert_eq!(
            std::fs::read_to_string(old.join(OWNER_FILE)).unwrap(),
            "m4\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
