//! Multi-node membership tests on loopback: several nodes in one process,
//! each on its own 127.0.x.y address with the same ports (as on Fly),
//! joining through the in-process Fly DNS zone.

use anykv_gossip::discovery::{Discovery, DiscoveryConfig};
use anykv_gossip::link::{RttTable, Shaper};
use anykv_gossip::testzone::TestZone;
use anykv_gossip::timing::{self, Profile};
use anykv_gossip::tls::ClusterCa;
use anykv_gossip::wire::ClusterKeys;
use anykv_gossip::{Cluster, ClusterConfig, Event, Gossip, GossipConfig, MemberState, Seeds};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "test-cluster-key-0123456789";

/// A small world: one DNS zone, one CA, one key, one shaper, and a port
/// pair shared by every node (each node has its own IP).
struct World {
    zone: TestZone,
    ca: ClusterCa,
    net: u8,
    port: u16,
    shaper: Shaper,
    app: String,
    /// Expected cluster size given to nodes (scales suspicion).
    size: u32,
}

/// A port pair below Linux's ephemeral range (32768+): the resolver's
/// sockets bind random ephemeral ports on 0.0.0.0, which would block a
/// later bind of the same port on 127.0.x.y. Each test has its own `net`,
/// so its own pair.
fn port_pair(net: u8) -> u16 {
    21000 + u16::from(net) * 8
}

impl World {
    /// `net` picks the 127.0.<net>.x range, so tests running in parallel
    /// never share addresses.
    async fn new(net: u8, shaped: bool) -> World {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let app = format!("gossip-test-{net}");
        let zone = TestZone::start(&app).await.unwrap();
        let shaper = if shaped {
            // Short RTTs keep the tests fast; the shaper matters for loss
            // and partitions here, not for distance.
            let table = RttTable::parse("from,to,rtt_ms\nr1,r2,4\n").unwrap();
            Shaper::new(table, u64::from(net))
        } else {
            Shaper::off()
        };
        World {
            zone,
            ca: ClusterCa::generate().unwrap(),
            net,
            port: port_pair(net),
            shaper,
            app,
            size: 8,
        }
    }

    fn ip(&self, n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, self.net, n))
    }

    fn config(&self, n: u8, region: &str, key: &str) -> GossipConfig {
        let machine = format!("m{:02}", n);
        let ip = self.ip(n);
        self.shaper.set_region(ip, region);
        let mut c = GossipConfig::new(
            machine.clone(),
            region,
            SocketAddr::new(ip, self.port),
            ClusterKeys::parse(key).unwrap(),
            self.ca.issue(&machine).unwrap(),
        );
        c.sync_port = self.port + 1;
        c.profile = Profile::Test;
        c.cluster_size = self.size;
        c.shaper = self.shaper.clone();
        c.anti_entropy = Duration::from_millis(500);
        c.announce_every = Duration::from_millis(500);
        let mut dc = DiscoveryConfig::for_app(self.app.clone());
        dc.resolver = Some(self.zone.addr());
        dc.timeout = Duration::from_millis(500);
        dc.interval = Duration::from_millis(500);
        c.seeds = Seeds::Dns(Arc::new(Discovery::new(dc).unwrap()));
        c.meta.roles = vec!["store".into()];
        c
    }

    /// Starts node `n` in `region` and publishes it in DNS.
    async fn node(&self, n: u8, region: &str) -> Gossip {
        self.node_with_key(n, region, KEY).await
    }

    async fn node_with_key(&self, n: u8, region: &str, key: &str) -> Gossip {
        // A node restarted in the same process may find its QUIC socket
        // still held by the previous endpoint's driver while its closed
        // connections drain (3 PTOs, seconds at quinn's initial RTT).
        let mut tries = 0;
        let g = loop {
            match Gossip::start(self.config(n, region, key)).await {
                Ok(g) => break g,
                Err(e) if tries < 200 => {
                    tries += 1;
                    eprintln!("retrying start of m{n:02}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        self.zone.add_machine(
            &format!("m{:02}", n),
            region,
            Ipv4Addr::new(127, 0, self.net, n).to_ipv6_mapped(),
        );
        g
    }
}

/// Waits until `cond` holds for `g`'s view, or fails after `limit`.
async fn wait_view(
    g: &Gossip,
    limit: Duration,
    what: &str,
    cond: impl Fn(&anykv_gossip::ClusterView) -> bool,
) -> Duration {
    let start = Instant::now();
    let mut rx = g.view();
    loop {
        if cond(&rx.borrow()) {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            panic!(
                "{} waited {limit:?} for: {what}\n{}",
                g.identity().machine,
                rx.borrow().table()
            );
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
    }
}

fn alive(v: &anykv_gossip::ClusterView) -> usize {
    v.in_state(MemberState::Alive).len()
}

async fn all_see_alive(nodes: &[&Gossip], n: usize, limit: Duration) {
    for g in nodes {
        wait_view(g, limit, &format!("{n} alive peers"), |v| alive(v) == n).await;
    }
}

fn bound() -> Duration {
    timing::detection_bound(&timing::config(Profile::Test, 8))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_through_dns_and_share_metadata() {
    let w = World::new(11, false).await;
    let a = w.node(1, "iad").await;
    let b = w.node(2, "iad").await;
    let c = w.node(3, "cdg").await;
    let d = w.node(4, "syd").await;
    let nodes = [&a, &b, &c, &d];
    all_see_alive(&nodes, 3, Duration::from_secs(10)).await;
    // Every node has every other's metadata (via QUIC sync) and an RTT.
    for g in nodes {
        wait_view(g, Duration::from_secs(5), "metadata and RTT of all", |v| {
            v.members.iter().all(|m| {
                m.meta.as_ref().is_some_and(|x| x.roles == ["store"])
                    && (m.me || m.rtt_min_ms.is_some())
            })
        })
        .await;
    }
    let v = a.view().borrow().clone();
    let cm = v.member("m03").unwrap();
    assert_eq!(cm.region, "cdg");
    assert_eq!(cm.meta.as_ref().unwrap().region, "cdg");
    assert!(
        cm.rtt_min_ms.unwrap() < 50.0,
        "loopback RTT {:?}",
        cm.rtt_min_ms
    );
    assert!(v.table().contains("m04"));
    // A metadata change reaches everyone.
    let mut events = d.events();
    b.update_meta(|m| m.roles = vec!["store".into(), "router".into()]);
    for g in nodes {
        wait_view(g, Duration::from_secs(5), "b's new roles", |v| {
            v.member("m02")
                .and_then(|m| m.meta.as_ref())
                .is_some_and(|m| m.roles.len() == 2)
        })
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut saw = false;
    while Instant::now() < deadline && !saw {
        if let Ok(Ok(Event::StateChanged { key, .. })) =
            tokio::time::timeout(Duration::from_millis(200), events.recv()).await
        {
            saw = key == "m02";
        }
    }
    assert!(saw, "subscription saw the metadata change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_node_is_declared_down_within_the_bound() {
    let w = World::new(12, false).await;
    let a = w.node(1, "iad").await;
    let b = w.node(2, "iad").await;
    let c = w.node(3, "iad").await;
    let d = w.node(4, "iad").await;
    all_see_alive(&[&a, &b, &c, &d], 3, Duration::from_secs(10)).await;
    drop(d); // no leave: a crash
    let limit = bound();
    for g in [&a, &b, &c] {
        let took = wait_view(g, limit + Duration::from_secs(1), "m04 down", |v| {
            v.member("m04")
                .is_some_and(|m| m.state == MemberState::Down)
        })
        .await;
        assert!(
            took <= limit + Duration::from_secs(1),
            "took {took:?}, bound {limit:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_leave_is_seen_at_once_and_restart_rejoins() {
    let w = World::new(13, false).await;
    let a = w.node(1, "iad").await;
    let b = w.node(2, "iad").await;
    let c = w.node(3, "iad").await;
    all_see_alive(&[&a, &b, &c], 2, Duration::from_secs(10)).await;
    let old_inc = c.identity().incarnation;
    c.leave().await;
    for g in [&a, &b] {
        let took = wait_view(g, Duration::from_secs(2), "m03 down after leave", |v| {
            v.member("m03")
                .is_some_and(|m| m.state == MemberState::Down)
        })
        .await;
        // Faster than failure detection could be.
        assert!(took < bound(), "leave took {took:?}");
    }
    // Restart: same machine, new life.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let c2 = w.node(3, "iad").await;
    assert!(c2.identity().incarnation > old_inc);
    for g in [&a, &b] {
        wait_view(g, Duration::from_secs(10), "m03 back alive", |v| {
            v.member("m03")
                .is_some_and(|m| m.state == MemberState::Alive && m.incarnation > old_inc)
        })
        .await;
    }
    wait_view(
        &c2,
        Duration::from_secs(10),
        "restarted node sees both",
        |v| alive(v) == 2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_node_is_suspected_then_refutes() {
    let mut w = World::new(14, false).await;
    // Sized for 1000 nodes, suspicion lasts 2.4 s: a 1.2 s pause is surely
    // noticed (and seen in views published every 100 ms) and surely
    // refuted in time, even on a loaded 2-core machine.
    w.size = 1000;
    let nodes = [
        w.node(1, "iad").await,
        w.node(2, "iad").await,
        w.node(3, "iad").await,
        w.node(4, "iad").await,
        w.node(5, "iad").await,
    ];
    let refs: Vec<&Gossip> = nodes.iter().collect();
    all_see_alive(&refs, 4, Duration::from_secs(10)).await;
    let mut events = nodes[0].events();
    // Half the suspicion timeout: long enough to fail several probes,
    // short enough to refute.
    let cfg = timing::config(Profile::Test, 1000);
    nodes[4].pause(cfg.suspect_to_down_after / 2);
    let mut suspected = false;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) && !suspected {
        for g in &refs[..4] {
            let v = g.view().borrow().clone();
            if v.member("m05")
                .is_some_and(|m| m.state == MemberState::Suspect)
            {
                suspected = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(suspected, "nobody suspected the paused node");
    for g in &refs[..4] {
        wait_view(g, Duration::from_secs(5), "m05 alive again", |v| {
            v.member("m05")
                .is_some_and(|m| m.state == MemberState::Alive)
        })
        .await;
    }
    // Refuted, never declared down.
    while let Ok(ev) = events.try_recv() {
        assert!(
            !matches!(ev, Event::Down(ref id) if id.machine == "m05"),
            "{ev:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_and_heal() {
    let w = World::new(15, true).await;
    let a = w.node(1, "r1").await;
    let b = w.node(2, "r1").await;
    let c = w.node(3, "r2").await;
    let d = w.node(4, "r2").await;
    let all = [&a, &b, &c, &d];
    all_see_alive(&all, 3, Duration::from_secs(10)).await;
    w.shaper.partition_regions(&["r1"], &["r2"]);
    for g in all {
        wait_view(g, Duration::from_secs(10), "other side down", |v| {
            alive(v) == 1 && v.in_state(MemberState::Down).len() == 2
        })
        .await;
    }
    w.shaper.heal();
    all_see_alive(&all, 3, Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_percent_loss_declares_nobody_dead() {
    let w = World::new(16, true).await;
    let mut nodes = Vec::new();
    for n in 1..=5 {
        nodes.push(w.node(n, if n % 2 == 0 { "r1" } else { "r2" }).await);
    }
    let refs: Vec<&Gossip> = nodes.iter().collect();
    all_see_alive(&refs, 4, Duration::from_secs(10)).await;
    let mut events: Vec<_> = nodes.iter().map(|g| g.events()).collect();
    w.shaper.set_loss(0.10);
    // 8 s at 200 ms probes: ~40 probe rounds per node under loss.
    tokio::time::sleep(Duration::from_secs(8)).await;
    w.shaper.set_loss(0.0);
    for (i, rx) in events.iter_mut().enumerate() {
        while let Ok(ev) = rx.try_recv() {
            assert!(
                !matches!(ev, Event::Down(_)),
                "node {i} saw {ev:?} under 10% loss"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_key_and_garbage_are_dropped_and_counted() {
    let w = World::new(17, false).await;
    let a = w.node(1, "iad").await;
    let b = w.node(2, "iad").await;
    all_see_alive(&[&a, &b], 1, Duration::from_secs(10)).await;
    // A node with another key announces itself (DNS lists it) but can
    // never join, and nobody admits it.
    let intruder = w.node_with_key(3, "iad", "some-other-key-0123456789").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(a.dropped().auth.load(std::sync::atomic::Ordering::Relaxed) > 0);
    for g in [&a, &b] {
        assert!(g.view().borrow().member("m03").is_none());
    }
    assert_eq!(alive(&intruder.view().borrow()), 0);

    // Raw garbage at a's gossip port.
    let s = std::net::UdpSocket::bind((w.ip(9), 0)).unwrap();
    let to = a.gossip_addr();
    let before = a.dropped().total();
    s.send_to(b"", to).unwrap();
    s.send_to(b"AK", to).unwrap();
    s.send_to(&[0x41; 30], to).unwrap();
    s.send_to(&vec![0u8; 1500], to).unwrap();
    let mut rng_bytes = Vec::new();
    for i in 0..200u32 {
        rng_bytes.clear();
        rng_bytes.extend((0..(i % 97 + 1)).map(|j| (i.wrapping_mul(31) ^ (j * 7)) as u8));
        s.send_to(&rng_bytes, to).unwrap();
    }
    // Authenticated but garbage inside: a truncated/invalid foca payload.
    let keys = ClusterKeys::parse(KEY).unwrap();
    let mut out = Vec::new();
    for payload in [&b"\x00"[..], b"\xff\xff\xff\xff\xff\xff", &[7u8; 300]] {
        anykv_gossip::wire::seal(
            &keys,
            anykv_gossip::wire::Kind::Foca,
            Default::default(),
            payload,
            &mut out,
        );
        s.send_to(&out, to).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = a.dropped();
    assert!(
        d.total() >= before + 200,
        "dropped {} (before {before})",
        d.total()
    );
    assert!(d.oversized.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert!(d.malformed.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    // Still healthy.
    wait_view(&a, Duration::from_secs(2), "b still alive", |v| {
        alive(v) == 1
    })
    .await;
}

/// Two pools: in-region failures are seen on LAN timings, the rest of the
/// cluster learns on WAN timings. The wan pool here is the Test profile
/// sized for 1000 nodes (suspicion 2.4 s), the lan pool for 8 (0.8 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn region_pool_detects_failures_faster_than_the_wan_pool() {
    let w = World::new(18, false).await;
    let lan_port = w.port + 2;
    let mut nodes = Vec::new();
    for (n, region) in [(1, "iad"), (2, "iad"), (3, "cdg"), (4, "cdg")] {
        let mut c = w.config(n, region, KEY);
        c.cluster_size = 1000;
        let cl = Cluster::start(ClusterConfig {
            wan: c,
            lan_port,
            lan_profile: Profile::Test,
            lan_cluster_size: 8,
        })
        .await
        .unwrap();
        w.zone.add_machine(
            &format!("m{n:02}"),
            region,
            Ipv4Addr::new(127, 0, w.net, n).to_ipv6_mapped(),
        );
        nodes.push(cl);
    }
    // Everyone alive in the merged view; each lan pool holds only its region.
    for c in &nodes {
        wait_view(c.wan(), Duration::from_secs(10), "wan: 3 alive", |v| {
            alive(v) == 3
        })
        .await;
        wait_view(c.lan(), Duration::from_secs(10), "lan: 1 alive", |v| {
            alive(v) == 1
        })
        .await;
        // The merged view follows the pools' views a moment later (a task
        // merges them): wait for it rather than read it at once, which
        // raced on a loaded machine.
        let mut merged = c.view();
        let t0 = Instant::now();
        while alive(&merged.borrow()) != 3 {
            let v = merged.borrow().clone();
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "merged view: {}",
                v.table()
            );
            let _ = tokio::time::timeout(Duration::from_millis(200), merged.changed()).await;
        }
    }
    assert!(nodes[0].lan().view().borrow().member("m03").is_none());
    let dead = nodes.remove(1); // m02, iad
    drop(dead);
    let start = Instant::now();
    let lan_bound = timing::detection_bound(&timing::config(Profile::Test, 8));
    let wan_bound = timing::detection_bound(&timing::config(Profile::Test, 1000));
    let mut merged = nodes[0].view();
    while !merged
        .borrow()
        .member("m02")
        .is_some_and(|m| m.state == MemberState::Down)
    {
        assert!(
            start.elapsed() < lan_bound + Duration::from_secs(1),
            "iad peer too slow"
        );
        let _ = tokio::time::timeout(Duration::from_millis(50), merged.changed()).await;
    }
    let in_region = start.elapsed();
    // The other region's nodes learn it through the wan pool (or the iad
    // node's gossip), never later than the wan bound.
    for c in &nodes[1..] {
        wait_view(
            c.wan(),
            wan_bound + Duration::from_secs(1),
            "cdg sees m02 down",
            |v| {
                v.member("m02")
                    .is_some_and(|m| m.state == MemberState::Down)
            },
        )
        .await;
    }
    assert!(
        in_region < wan_bound,
        "in-region {in_region:?} vs wan bound {wan_bound:?}"
    );
    eprintln!(
        "in-region detection {in_region:?} (lan bound {lan_bound:?}, wan bound {wan_bound:?})"
    );
}
