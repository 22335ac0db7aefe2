//! Two pools, the way Consul runs memberlist: a region's nodes probe each
//! other with LAN timings (sub-millisecond RTTs, failures noticed in about
//! a second or two), while the cluster-wide pool uses WAN timings that
//! tolerate 350 ms RTTs and lossy long paths without false alarms.
//!
//! - The *wan* pool spans every node: DNS discovery seeds it, node state
//!   syncs over its QUIC channel, it supplies the cluster-wide view.
//! - The *lan* pool spans one region. It needs no DNS of its own: every
//!   same-region node the wan pool knows is announced to at the LAN port.
//!
//! The merged [`ClusterView`] takes a same-region member's state and RTT
//! from the lan pool (faster, more frequent probes) and everything else
//! from the wan pool.

use crate::node::{ClusterView, Gossip, GossipConfig, GossipError, MemberState, MetaUpdater};
use crate::timing::Profile;
use crate::{Event, Seeds};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

/// A two-pool node's configuration.
#[derive(Clone)]
pub struct ClusterConfig {
    /// The cluster-wide pool (its profile should be WAN-like).
    pub wan: GossipConfig,
    /// UDP port of the region pool, on the same IP.
    pub lan_port: u16,
    /// Timings of the region pool.
    pub lan_profile: Profile,
    /// Expected nodes per region (scales the region pool's suspicion).
    pub lan_cluster_size: u32,
}

/// A node in both pools, with a merged view.
pub struct Cluster {
    wan: Gossip,
    lan: Gossip,
    view: watch::Receiver<Arc<ClusterView>>,
    _merge: AbortOnDrop,
}

/// Stops the merge task with the cluster handle.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Cluster {
    pub async fn start(cfg: ClusterConfig) -> Result<Cluster, GossipError> {
        let mut lan_cfg = cfg.wan.clone();
        lan_cfg.bind.set_port(cfg.lan_port);
        lan_cfg.profile = cfg.lan_profile;
        lan_cfg.cluster_size = cfg.lan_cluster_size;
        lan_cfg.sync = false;
        lan_cfg.seeds = Seeds::None;
        lan_cfg.pool = "lan";
        let mut wan_cfg = cfg.wan;
        wan_cfg.pool = "wan";
        let wan = Gossip::start(wan_cfg).await?;
        let lan = Gossip::start(lan_cfg).await?;
        let (tx, view) = watch::channel(Arc::new(ClusterView::default()));
        let task = tokio::spawn(merge(
            wan.view(),
            lan.view(),
            lan.announcer(),
            cfg.lan_port,
            tx,
        ));
        Ok(Cluster {
            wan,
            lan,
            view,
            _merge: AbortOnDrop(task),
        })
    }

    /// The merged view.
    pub fn view(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }

    /// The cluster-wide pool (state, metadata, events about everyone).
    pub fn wan(&self) -> &Gossip {
        &self.wan
    }

    /// The region pool.
    pub fn lan(&self) -> &Gossip {
        &self.lan
    }

    /// Membership events of both pools (a same-region failure shows up in
    /// the lan pool first).
    pub fn events(&self) -> (broadcast::Receiver<Event>, broadcast::Receiver<Event>) {
        (self.wan.events(), self.lan.events())
    }

    pub fn updater(&self) -> MetaUpdater {
        self.wan.updater()
    }

    /// Leaves both pools.
    pub async fn leave(self) {
        let Cluster {
            wan, lan, _merge, ..
        } = self;
        drop(_merge);
        tokio::join!(lan.leave(), wan.leave());
    }
}

/// Merges the two views, and announces same-region nodes the wan pool
/// knows to the lan pool.
async fn merge(
    mut wan: watch::Receiver<Arc<ClusterView>>,
    mut lan: watch::Receiver<Arc<ClusterView>>,
    announce: crate::node::Announcer,
    lan_port: u16,
    tx: watch::Sender<Arc<ClusterView>>,
) {
    let mut announced: HashMap<SocketAddr, Instant> = HashMap::new();
    loop {
        let w = wan.borrow_and_update().clone();
        let l = lan.borrow_and_update().clone();
        let my_region = w
            .members
            .iter()
            .find(|m| m.me)
            .map(|m| m.region.clone())
            .unwrap_or_default();
        let mut merged = (*w).clone();
        for m in merged.members.iter_mut().filter(|m| !m.me) {
            if m.region != my_region {
                continue;
            }
            // Announced to the region pool (at most once a second each):
            // a node it does not know yet, or one it holds as down while
            // the cluster-wide pool hears from it, a partition inside the
            // region that healed. Neither side's region pool announces to
            // the other by itself then (foca announces to down members
            // only while it has a live peer, and each side may have none);
            // the peer, holding this node as down too, answers that it is
            // down, and both renew their identities and meet again.
            let wan_alive = m.state == MemberState::Alive;
            let introduce = match l.member(&m.machine) {
                Some(lm) if lm.incarnation >= m.incarnation => {
                    m.state = lm.state;
                    m.rtt_ms = lm.rtt_ms.or(m.rtt_ms);
                    m.rtt_min_ms = lm.rtt_min_ms.or(m.rtt_min_ms);
                    wan_alive && lm.state == MemberState::Down
                }
                _ => wan_alive,
            };
            if introduce {
                let addr = SocketAddr::new(m.addr.ip(), lan_port);
                let due = announced
                    .get(&addr)
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(1));
                if due {
                    announced.insert(addr, Instant::now());
                    announce.announce(addr);
                }
            }
        }
        tx.send_if_modified(|cur| {
            if **cur == merged {
                false
            } else {
                *cur = Arc::new(merged);
                true
            }
        });
        tokio::select! {
            r = wan.changed() => if r.is_err() { return },
            r = lan.changed() => if r.is_err() { return },
            // Retry announces that did not take.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
