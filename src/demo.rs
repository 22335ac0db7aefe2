//! `anykv demo`: the emulated multi-region world on one machine.
//!
//! In one process: an in-process DNS zone that answers like Fly's internal
//! DNS, one store node per region (more with `--nodes-per-region`), each on
//! its own loopback address (`127.0.0.10`, `.11`, …, published in DNS as
//! `::ffff:127.0.0.N` the way Fly publishes 6PN addresses) with the same
//! ports, gossiping through the link shaper so that inter-region traffic
//! sees the RTTs of `bench/data/region-rtt.csv`. No Fly account needed.

use anyhow::Context;
use anykv_gossip::discovery::{Discovery, DiscoveryConfig};
use anykv_gossip::link::{RttTable, Shaper};
use anykv_gossip::testzone::TestZone;
use anykv_gossip::timing::Profile;
use anykv_gossip::tls::ClusterCa;
use anykv_gossip::wire::ClusterKeys;
use anykv_gossip::{Cluster, ClusterConfig, GossipConfig, Seeds};
use anykv_server::config::Config;
use anykv_server::Server;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The region RTT table shipped with the project (WonderProxy city pings).
pub const REGION_RTT: &str = include_str!("../bench/data/region-rtt.csv");

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Regions to run nodes in (codes from the RTT table).
    #[arg(long, value_delimiter = ',', default_value = "iad,dfw,sjc,cdg,syd")]
    pub regions: Vec<String>,
    /// Store nodes per region.
    #[arg(long, default_value_t = 1)]
    pub nodes_per_region: u8,
    /// Region RTT table (CSV `from,to,rtt_ms`); default: the built-in one.
    #[arg(long)]
    pub rtt_table: Option<PathBuf>,
    /// First node's loopback address; the others follow it.
    #[arg(long, default_value = "127.0.0.10")]
    pub first_ip: Ipv4Addr,
    /// RESP port of every node (as on Fly, the same everywhere).
    #[arg(long, default_value_t = 6379)]
    pub port: u16,
    /// Gossip UDP port of the cluster-wide pool; QUIC sync uses the next
    /// one, the region pool the one after; HTTP is 9091.
    #[arg(long, default_value_t = 7946)]
    pub gossip_port: u16,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
}

struct DemoNode {
    gossip: Cluster,
    server: Server,
    http: SocketAddr,
    redis: SocketAddr,
}

pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    crate::init_tracing("notice");
    let table = match &a.rtt_table {
        Some(p) => RttTable::load(p).with_context(|| format!("loading {}", p.display()))?,
        None => RttTable::parse(REGION_RTT).context("built-in RTT table")?,
    };
    for r in &a.regions {
        if !table.regions().any(|t| t == r) {
            anyhow::bail!("region '{r}' is not in the RTT table");
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let app = "anykv-demo";
        let zone = TestZone::start(app)
            .await
            .context("starting the DNS zone")?;
        let shaper = Shaper::new(table, 1);
        let ca = ClusterCa::generate()?;
        let key: String = {
            use rand::Rng;
            let mut b = [0u8; 24];
            rand::rng().fill(&mut b);
            b.iter().map(|x| format!("{x:02x}")).collect()
        };
        let keys = ClusterKeys::parse(&key)?;
        let total = a.regions.len() * usize::from(a.nodes_per_region);
        let mut nodes = Vec::new();
        let mut k: u32 = 0;
        for region in &a.regions {
            for _ in 0..a.nodes_per_region {
                let ip = Ipv4Addr::from(u32::from(a.first_ip) + k);
                k += 1;
                let machine = format!("{region}-{:02}", k);
                let ipa = IpAddr::V4(ip);
                shaper.set_region(ipa, region);
                let server = Server::start(
                    Config::load(&[
                        "--bind".into(),
                        ip.to_string(),
                        "--port".into(),
                        a.port.to_string(),
                        "--executors".into(),
                        "1".into(),
                        "--save".into(),
                        "".into(),
                    ])
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                )
                .with_context(|| format!("starting the store on {ip}:{}", a.port))?;
                let mut c = GossipConfig::new(
                    machine.clone(),
                    region.clone(),
                    SocketAddr::new(ipa, a.gossip_port),
                    keys.clone(),
                    ca.issue(&machine)?,
                );
                c.sync_port = a.gossip_port + 1;
                c.profile = Profile::Wan;
                c.cluster_size = total as u32;
                c.shaper = shaper.clone();
                c.meta.roles = vec!["store".into()];
                c.meta.redis_addr = Some(SocketAddr::new(ipa, a.port));
                c.meta.build = anykv_server::shared::ANYKV_VERSION.into();
                c.announce_every = Duration::from_secs(2);
                let mut dc = DiscoveryConfig::for_app(app);
                dc.resolver = Some(zone.addr());
                c.seeds = Seeds::Dns(Arc::new(Discovery::new(dc)?));
                let gossip = Cluster::start(ClusterConfig {
                    wan: c,
                    lan_port: a.gossip_port + 2,
                    lan_profile: Profile::Lan,
                    lan_cluster_size: u32::from(a.nodes_per_region),
                })
                .await?;
                zone.add_machine(&machine, region, ip.to_ipv6_mapped());
                let http =
                    crate::http::serve(SocketAddr::new(ipa, 9091), Some(gossip.view()), None, None)
                        .await?;
                crate::node::spawn_load_reporter(gossip.updater(), server.shared.clone());
                nodes.push(DemoNode {
                    gossip,
                    server,
                    http,
                    redis: SocketAddr::new(ipa, a.port),
                });
            }
        }
        println!(
            "anykv demo: {total} nodes in {} regions, DNS zone on {}",
            a.regions.len(),
            zone.addr()
        );
        for n in &nodes {
            let id = n.gossip.wan().identity();
            println!(
                "  {:<8} {:<4} redis://{}  cluster view: anykv cluster status --addr {}",
                id.machine, id.region, n.redis, n.http
            );
        }
        println!("inter-region latency emulated from the RTT table; Ctrl-C stops\n");
        let first = nodes[0].gossip.view();
        let stop = async {
            match a.duration {
                Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        let mut last = String::new();
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {
                    let v = first.borrow().clone();
                    let alive = v.in_state(anykv_gossip::MemberState::Alive).len() + 1;
                    let t = v.table();
                    if t != last {
                        println!("{} sees {alive}/{total} alive:\n{t}", v.me);
                        last = t;
                    }
                }
            }
        }
        println!("stopping: nodes leave the cluster");
        for n in nodes {
            n.gossip.leave().await;
            n.server.shared.begin_shutdown();
            tokio::task::spawn_blocking(move || n.server.join())
                .await
                .ok();
        }
        zone.shutdown().await;
        anyhow::Ok(())
    })
}
