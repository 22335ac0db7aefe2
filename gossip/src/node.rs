//! A running gossip node: the foca state machine driven by one tokio task.
//!
//! The task owns the `Foca` instance and a UDP socket; everything foca asks
//! for (send a datagram, run a timer later, "member X is down") is carried
//! out here, and everything the outside world wants (update my metadata,
//! leave) arrives as a command. Datagrams are wrapped by [`crate::wire`]
//! (cluster-key authentication, RTT timestamps); bigger state moves over
//! QUIC in [`crate::sync`]; all inter-node traffic goes through the
//! [`crate::link`] shaper, which is a no-op in production.
//!
//! What it publishes: a [`ClusterView`] on a `watch` channel (members,
//! states, RTTs, metadata) and [`Event`]s on a `broadcast` channel, for the
//! router, replication and the cluster status endpoint.

use crate::discovery::{Discovery, Snapshot};
use crate::identity::NodeId;
use crate::link::{ShapedUdp, Shaper};
use crate::rtt::RttEstimator;
use crate::state::{DigestHandler, DigestItem, NodeMeta, Row, StateStore, Table, Version};
use crate::sync::Syncer;
use crate::timing::{self, Profile};
use crate::tls::NodeTls;
use crate::wire::{self, ClusterKeys, Kind, Stamps};
use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec, State, Timer};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// Where a node looks for its first peers.
#[derive(Clone)]
pub enum Seeds {
    /// Nobody (the first node of a cluster, or tests that join by hand).
    None,
    /// Fixed gossip addresses.
    Static(Vec<SocketAddr>),
    /// Fly's internal DNS: every `<app>.internal` address, at the gossip
    /// port (every node uses the same ports, as on Fly).
    Dns(Arc<Discovery>),
}

/// Everything a node needs to run.
#[derive(Clone)]
pub struct GossipConfig {
    pub machine: String,
    pub region: String,
    /// Gossip UDP address. IPv4-mapped addresses are used in their IPv4
    /// form (the emulated world's `::ffff:127.0.0.N`).
    pub bind: SocketAddr,
    /// QUIC state-sync port, the same on every node; it listens on the
    /// gossip address's IP.
    pub sync_port: u16,
    /// Run the QUIC state sync. A region's LAN pool does not: its nodes'
    /// state already travels in the cluster-wide pool.
    pub sync: bool,
    pub profile: Profile,
    /// Expected cluster size (scales suspicion timeouts, as memberlist).
    pub cluster_size: u32,
    pub keys: ClusterKeys,
    pub tls: NodeTls,
    pub seeds: Seeds,
    pub shaper: Shaper,
    /// Initial metadata; `machine`, `region`, `gossip_addr` are filled in.
    pub meta: NodeMeta,
    /// How often to sync with a random peer regardless of digests.
    pub anti_entropy: Duration,
    /// How often to announce to seeds we are not connected to.
    pub announce_every: Duration,
    /// Pool name for metrics labels (`wan`, `lan`).
    pub pool: &'static str,
}

impl GossipConfig {
    /// Defaults for a node of `profile`; the caller fills keys, TLS, seeds.
    pub fn new(
        machine: impl Into<String>,
        region: impl Into<String>,
        bind: SocketAddr,
        keys: ClusterKeys,
        tls: NodeTls,
    ) -> Self {
        GossipConfig {
            machine: machine.into(),
            region: region.into(),
            bind,
            sync_port: bind.port().wrapping_add(1),
            sync: true,
            profile: Profile::Lan,
            cluster_size: 16,
            keys,
            tls,
            seeds: Seeds::None,
            shaper: Shaper::off(),
            meta: NodeMeta::default(),
            anti_entropy: Duration::from_secs(10),
            announce_every: Duration::from_secs(10),
            pool: "wan",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// A member's liveness as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Alive,
    Suspect,
    Down,
}

/// One row of the cluster view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    pub machine: String,
    pub region: String,
    pub addr: SocketAddr,
    pub incarnation: u64,
    pub state: MemberState,
    /// Smallest RTT in the last minute, ms.
    pub rtt_min_ms: Option<f64>,
    /// Smoothed RTT, ms.
    pub rtt_ms: Option<f64>,
    pub meta: Option<NodeMeta>,
    /// This row is the node itself.
    pub me: bool,
}

/// Whether a member holds data: its metadata says it plays `store`. The
/// nodes placement puts copies on and the region's controller counts as
/// voters; routers (`anykv node --router`) are not, nor is a member whose
/// metadata has not arrived yet (it may be a router).
pub fn holds_data(m: &MemberView) -> bool {
    m.meta.as_ref().is_some_and(NodeMeta::holds_data)
}

/// Whether a member's metadata says it holds no data (a router).
pub fn known_router(m: &MemberView) -> bool {
    m.meta.as_ref().is_some_and(|meta| !meta.holds_data())
}

/// The cluster as one node sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    pub me: String,
    pub members: Vec<MemberView>,
}

impl ClusterView {
    pub fn member(&self, machine: &str) -> Option<&MemberView> {
        self.members.iter().find(|m| m.machine == machine)
    }

    /// Machines in `state` (other than this node).
    pub fn in_state(&self, state: MemberState) -> Vec<&str> {
        self.members
            .iter()
            .filter(|m| !m.me && m.state == state)
            .map(|m| m.machine.as_str())
            .collect()
    }

    /// A table for people (`anykv cluster status`).
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<16} {:<6} {:<22} {:<8} {:>9} {:>9}  {}\n",
            "NODE", "REGION", "ADDRESS", "STATE", "RTT(ms)", "MIN(ms)", "ROLES"
        );
        for m in &self.members {
            let f = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
            let roles = m
                .meta
                .as_ref()
                .map(|x| x.roles.join(","))
                .unwrap_or_default();
            let state = if m.me {
                "self".to_string()
            } else {
                format!("{:?}", m.state).to_lowercase()
            };
            out.push_str(&format!(
                "{:<16} {:<6} {:<22} {:<8} {:>9} {:>9}  {}\n",
                m.machine,
                m.region,
                m.addr.to_string(),
                state,
                if m.me { "-".into() } else { f(m.rtt_ms) },
                if m.me { "-".into() } else { f(m.rtt_min_ms) },
                roles
            ));
        }
        out
    }
}

/// Membership and state changes, in the order this node learned them.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Up(NodeId),
    Down(NodeId),
    /// A machine came back as a newer life (restart or rejoin).
    Renamed {
        from: NodeId,
        to: NodeId,
    },
    /// A row arrived or changed (metadata of `origin`, …).
    StateChanged {
        table: Table,
        key: String,
    },
    /// This node was declared down and rejoined with a new incarnation.
    Rejoined(NodeId),
}

/// Drop counters by reason, also exported as metrics.
#[derive(Debug, Default)]
pub struct Dropped {
    pub truncated: AtomicU64,
    pub oversized: AtomicU64,
    pub magic: AtomicU64,
    pub version: AtomicU64,
    pub auth: AtomicU64,
    /// Authenticated but not a valid foca message.
    pub malformed: AtomicU64,
}

impl Dropped {
    fn count(&self, reason: &str) {
        let c = match reason {
            "truncated" => &self.truncated,
            "oversized" => &self.oversized,
            "magic" => &self.magic,
            "version" => &self.version,
            "auth" => &self.auth,
            _ => &self.malformed,
        };
        c.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("anykv_gossip_dropped_total", "reason" => reason.to_string())
            .increment(1);
    }

    pub fn total(&self) -> u64 {
        [
            &self.truncated,
            &self.oversized,
            &self.magic,
            &self.version,
            &self.auth,
            &self.malformed,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

enum Cmd {
    UpdateMeta(Box<dyn FnOnce(&mut NodeMeta) + Send>),
    Leave(oneshot::Sender<()>),
    Announce(SocketAddr),
    /// Test hook: stop processing for a while, as SIGSTOP would.
    Pause(Duration),
    /// Rows of the shared tables written here: apply, then push to every
    /// member at once (their origin is no machine, so digests alone would
    /// not make peers fetch them).
    Publish(Vec<Row>),
}

/// Updates a node's metadata from anywhere (see [`Gossip::updater`]).
#[derive(Clone)]
pub struct MetaUpdater(mpsc::UnboundedSender<Cmd>);

impl MetaUpdater {
    /// Returns false once the node has stopped.
    pub fn update(&self, f: impl FnOnce(&mut NodeMeta) + Send + 'static) -> bool {
        self.0.send(Cmd::UpdateMeta(Box::new(f))).is_ok()
    }
}

/// Offering sessions (rows in the first message) run at once per peer
/// at most (see `sync_offering`).
const MAX_OFFERING: usize = 4;

/// A peer's offering sessions running, and the rows waiting for one.
type Offering = (usize, Vec<Row>);
/// Publishes rows of the shared tables from anywhere (see
/// [`Gossip::publish`]).
#[derive(Clone)]
pub struct Publisher(mpsc::UnboundedSender<Cmd>);

impl Publisher {
    /// Returns false once the node has stopped.
    pub fn publish(&self, rows: Vec<Row>) -> bool {
        self.0.send(Cmd::Publish(rows)).is_ok()
    }
}

/// Asks a node to join through an address, from anywhere.
#[derive(Clone)]
pub struct Announcer(mpsc::UnboundedSender<Cmd>);

impl Announcer {
    pub fn announce(&self, addr: SocketAddr) {
        let _ = self.0.send(Cmd::Announce(addr));
    }
}

/// Handle to a running node. Dropping it stops the node without a leave
/// (as a crash would); call [`Gossip::leave`] for a graceful exit.
pub struct Gossip {
    identity: NodeId,
    cmd: mpsc::UnboundedSender<Cmd>,
    view: watch::Receiver<Arc<ClusterView>>,
    events: broadcast::Sender<Event>,
    store: Arc<Mutex<StateStore>>,
    dropped: Arc<Dropped>,
    sync_addr: Option<SocketAddr>,
    syncer: Option<Syncer>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gossip {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// foca 2.0.0 sends `TurnUndead` when a suspicion timer fires even if
/// the suspect refuted in the meantime (it ignores whether declaring it
/// down applied), which forces a healthy node to rejoin under a new
/// identity; the simulation counted 36 such rejoins in an hour of 100
/// nodes at 5% loss. Such a message is spurious exactly when foca still
/// holds its target active: callers drop it instead of sending.
pub fn spurious_turn_undead<'a>(
    mut members: impl Iterator<Item = &'a foca::Member<NodeId>>,
    to: &NodeId,
    data: &[u8],
) -> bool {
    use foca::Codec;
    let mut codec = PostcardCodec;
    let Ok(header) = Codec::<NodeId>::decode_header(&mut codec, data) else {
        return false;
    };
    header.message == foca::Message::TurnUndead
        && members.any(|m| m.id() == to && m.state() != State::Down)
}

/// Canonical form of an address: IPv4-mapped IPv6 becomes IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl Gossip {
    /// Binds the sockets and starts the node.
    pub async fn start(mut cfg: GossipConfig) -> Result<Gossip, GossipError> {
        cfg.bind = canonical(cfg.bind);
        let sock = UdpSocket::bind(cfg.bind)
            .await
            .map_err(|e| GossipError::Bind(cfg.bind, e))?;
        let bound = sock
            .local_addr()
            .map_err(|e| GossipError::Bind(cfg.bind, e))?;
        let identity = NodeId::new(cfg.machine.clone(), cfg.region.clone(), bound);
        let store = Arc::new(Mutex::new(StateStore::default()));
        let (changed_tx, changed_rx) = mpsc::unbounded_channel();
        let (syncer, sync_addr) = if cfg.sync {
            let sync_bind = SocketAddr::new(bound.ip(), cfg.sync_port);
            let std_sock = std::net::UdpSocket::bind(sync_bind)
                .map_err(|e| GossipError::Bind(sync_bind, e))?;
            let endpoint = crate::link::quic_endpoint(
                std_sock,
                cfg.shaper.clone(),
                quinn::EndpointConfig::default(),
                Some(cfg.tls.server_config()?),
            )
            .map_err(|e| GossipError::Bind(sync_bind, e))?;
            let sync_addr = endpoint
                .local_addr()
                .map_err(|e| GossipError::Bind(sync_bind, e))?;
            let syncer = Syncer::new(
                endpoint,
                cfg.tls.client_config()?,
                store.clone(),
                changed_tx,
            );
            tokio::spawn(syncer.clone().serve());
            (Some(syncer), Some(sync_addr))
        } else {
            (None, None)
        };

        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (view_tx, view_rx) = watch::channel(Arc::new(ClusterView::default()));
        let (events, _) = broadcast::channel(1024);
        let dropped = Arc::new(Dropped::default());
        let handler = DigestHandler::default();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ identity.incarnation.rotate_left(17)
            ^ u64::from(bound.port());
        let foca = Foca::with_custom_broadcast(
            identity.clone(),
            timing::config(cfg.profile, cfg.cluster_size),
            SmallRng::seed_from_u64(seed),
            PostcardCodec,
            handler.clone(),
        );
        let mut meta = cfg.meta.clone();
        meta.machine = cfg.machine.clone();
        meta.region = cfg.region.clone();
        meta.gossip_addr = Some(bound);

        let sock = Arc::new(sock);
        let udp = ShapedUdp::new(sock.clone(), cfg.shaper.clone())
            .map_err(|e| GossipError::Bind(bound, e))?;
        let node = NodeTask {
            udp,
            sock,
            foca,
            handler,
            rt: AccumulatingRuntime::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            keys: cfg.keys.clone(),
            epoch: Instant::now(),
            peers: HashMap::new(),
            identity: identity.clone(),
            meta,
            meta_version: Version {
                life: identity.incarnation,
                seq: 0,
            },
            store: store.clone(),
            syncer: syncer.clone(),
            syncing: Arc::new(Mutex::new(HashSet::new())),
            offering: Arc::new(Mutex::new(HashMap::new())),
            sync_port: sync_addr.map(|a| a.port()).unwrap_or(0),
            view_tx,
            events: events.clone(),
            dropped: dropped.clone(),
            seeds: cfg.seeds.clone(),
            seed_addrs: Vec::new(),
            announce_every: cfg.announce_every,
            anti_entropy: cfg.anti_entropy,
            rng: SmallRng::seed_from_u64(seed.rotate_left(7)),
            out: Vec::with_capacity(wire::MAX_DATAGRAM),
            hellos: Vec::new(),
            pool: cfg.pool,
            leaving: false,
        };
        // Every log line of this node's task names the node (the demo and
        // tests run many in one process).
        let span = tracing::info_span!("gossip", node = %identity.machine);
        let task = tokio::spawn(tracing::Instrument::instrument(
            node.run(cmd_rx, changed_rx),
            span,
        ));
        tracing::info!(
            "gossip: {} in {}, {} pool on udp {bound}, state sync {}",
            identity.machine,
            identity.region,
            cfg.pool,
            sync_addr.map_or("off".to_string(), |a| format!("on quic {a}"))
        );
        Ok(Gossip {
            identity,
            cmd: cmd_tx,
            view: view_rx,
            events,
            store,
            dropped,
            sync_addr,
            syncer,
            task,
        })
    }

    pub fn identity(&self) -> &NodeId {
        &self.identity
    }

    /// Writes rows of the shared tables (catalog, role records) and pushes
    /// them to every member.
    pub fn publisher(&self) -> Publisher {
        Publisher(self.cmd.clone())
    }

    /// The node's QUIC endpoint (state sync and the stores' streams), when
    /// this pool syncs state.
    pub fn syncer(&self) -> Option<&Syncer> {
        self.syncer.as_ref()
    }

    pub fn gossip_addr(&self) -> SocketAddr {
        self.identity.addr
    }

    pub fn sync_addr(&self) -> Option<SocketAddr> {
        self.sync_addr
    }

    /// The latest cluster view; `changed()` on the receiver wakes on news.
    pub fn view(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }

    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The replicated state this node holds.
    pub fn store(&self) -> Arc<Mutex<StateStore>> {
        self.store.clone()
    }

    pub fn dropped(&self) -> &Dropped {
        &self.dropped
    }

    /// Changes this node's metadata; the change reaches every node.
    pub fn update_meta(&self, f: impl FnOnce(&mut NodeMeta) + Send + 'static) {
        let _ = self.cmd.send(Cmd::UpdateMeta(Box::new(f)));
    }

    /// A cloneable handle for updating metadata from other tasks.
    pub fn updater(&self) -> MetaUpdater {
        MetaUpdater(self.cmd.clone())
    }

    pub fn announcer(&self) -> Announcer {
        Announcer(self.cmd.clone())
    }

    /// Asks to join through a known gossip address.
    pub fn announce(&self, addr: SocketAddr) {
        let _ = self.cmd.send(Cmd::Announce(addr));
    }

    /// Test hook: the node stops processing for `d` (packets queue up in
    /// the socket, timers fire late), as if the process were SIGSTOPped.
    #[doc(hidden)]
    pub fn pause(&self, d: Duration) {
        let _ = self.cmd.send(Cmd::Pause(d));
    }

    /// Leaves gracefully: tells peers this node is going (they mark it down
    /// at once instead of after suspicion), then stops.
    pub async fn leave(self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Leave(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }
}

/// Per-peer link state for the timestamp echo.
struct PeerLink {
    /// Last `send_us` received from the peer, and when.
    last_ts: u64,
    received: Instant,
    rtt: RttEstimator,
}

#[derive(PartialEq, Eq)]
struct Due {
    at: Instant,
    seq: u64,
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

type NodeFoca = Foca<NodeId, PostcardCodec, SmallRng, DigestHandler>;

struct NodeTask {
    sock: Arc<UdpSocket>,
    udp: ShapedUdp,
    foca: NodeFoca,
    handler: DigestHandler,
    rt: AccumulatingRuntime<NodeId>,
    timers: BinaryHeap<Reverse<(Due, TimerSlot)>>,
    timer_seq: u64,
    keys: ClusterKeys,
    epoch: Instant,
    peers: HashMap<SocketAddr, PeerLink>,
    identity: NodeId,
    meta: NodeMeta,
    meta_version: Version,
    store: Arc<Mutex<StateStore>>,
    syncer: Option<Syncer>,
    syncing: Arc<Mutex<HashSet<SocketAddr>>>,
    /// Per peer: offering sessions running, and rows offered while
    /// [`MAX_OFFERING`] ran (the next session's).
    offering: Arc<Mutex<HashMap<SocketAddr, Offering>>>,
    sync_port: u16,
    view_tx: watch::Sender<Arc<ClusterView>>,
    events: broadcast::Sender<Event>,
    dropped: Arc<Dropped>,
    seeds: Seeds,
    seed_addrs: Vec<SocketAddr>,
    announce_every: Duration,
    anti_entropy: Duration,
    rng: SmallRng,
    out: Vec<u8>,
    /// Addresses to send a join handshake to on the next drain.
    hellos: Vec<SocketAddr>,
    pool: &'static str,
    leaving: bool,
}

/// A foca timer in the heap (ordered by the `Due` beside it only).
struct TimerSlot(Timer<NodeId>);

impl PartialEq for TimerSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for TimerSlot {}
impl PartialOrd for TimerSlot {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerSlot {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl NodeTask {
    async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
        mut changed: mpsc::UnboundedReceiver<Vec<Row>>,
    ) {
        let mut buf = vec![0u8; 65536];
        self.publish_meta();
        let mut dns: Option<(watch::Receiver<Snapshot>, Arc<tokio::sync::Notify>)> =
            match &self.seeds {
                Seeds::Dns(d) => Some(d.clone().spawn_watch()),
                _ => None,
            };
        self.refresh_seeds(dns.as_ref().map(|d| d.0.borrow().clone()));
        self.announce_to_seeds();
        let mut announce = tokio::time::interval(self.announce_every);
        let mut entropy = tokio::time::interval(self.anti_entropy);
        let mut view_tick = tokio::time::interval(Duration::from_millis(100));
        announce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        entropy.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        view_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_timer = self
                .timers
                .peek()
                .map(|Reverse((d, _))| tokio::time::Instant::from_std(d.at));
            tokio::select! {
                r = self.sock.recv_from(&mut buf) => match r {
                    Ok((n, src)) => self.on_datagram(&buf[..n], canonical(src)).await,
                    Err(e) => {
                        tracing::debug!("gossip recv: {e}");
                    }
                },
                _ = async { match next_timer {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    } } => self.fire_timers().await,
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(Cmd::Leave(done)) => {
                        self.leaving = true;
                        let _ = self.foca.leave_cluster(&mut self.rt);
                        self.drain().await;
                        if let Some(s) = &self.syncer {
                            s.close();
                        }
                        tracing::info!("gossip: {} left the cluster", self.identity.machine);
                        // Release the sockets before saying we are gone, so
                        // a restart can bind them at once.
                        drop(self);
                        let _ = done.send(());
                        return;
                    }
                    Some(Cmd::UpdateMeta(f)) => {
                        // Only changes are news worth a version.
                        let before = self.meta.clone();
                        f(&mut self.meta);
                        if self.meta != before {
                            let row = self.publish_meta();
                            // The catalog versions this node applied are
                            // awaited (an admin call waits on them): offered
                            // to every member now, in the session's first
                            // message, rather than left to the digest's
                            // next round and a fetch.
                            if self.meta.tenant_versions != before.tenant_versions {
                                let members: Vec<SocketAddr> =
                                    self.foca.iter_members().map(|m| m.id().addr).collect();
                                for m in members {
                                    self.sync_offering(m, vec![row.clone()]);
                                }
                            }
                            self.drain().await;
                        }
                    }
                    Some(Cmd::Publish(rows)) => {
                        let news: Vec<Row> = {
                            let mut st = self.store.lock();
                            rows.into_iter().filter(|r| st.apply(r.clone())).collect()
                        };
                        if !news.is_empty() {
                            // Offered to every member in the session's
                            // first message (a catalog change reaches a far
                            // region half a round trip after it is made).
                            let members: Vec<SocketAddr> =
                                self.foca.iter_members().map(|m| m.id().addr).collect();
                            for m in members {
                                self.sync_offering(m, news.clone());
                            }
                            self.on_rows(news);
                        }
                    }
                    Some(Cmd::Announce(addr)) => {
                        self.announce_to(canonical(addr));
                        self.drain().await;
                    }
                    Some(Cmd::Pause(d)) => {
                        tracing::warn!("gossip: pausing for {d:?} (test hook)");
                        // Awaiting here stops the whole loop: no reads, no
                        // timers, as a stopped process.
                        tokio::time::sleep(d).await;
                    }
                },
                Some(rows) = changed.recv() => self.on_rows(rows),
                _ = announce.tick() => {
                    if let Some((_, notify)) = &dns {
                        notify.notify_one();
                    }
                    self.announce_to_seeds();
                    self.drain().await;
                }
                Some(()) = async { match dns.as_mut() {
                        Some((rx, _)) => rx.changed().await.ok(),
                        None => std::future::pending().await,
                    } } => {
                    let snap = dns.as_ref().map(|d| d.0.borrow().clone());
                    self.refresh_seeds(snap);
                    self.announce_to_seeds();
                    self.drain().await;
                }
                _ = entropy.tick() => self.anti_entropy_round(),
                _ = view_tick.tick() => self.publish_view(),
            }
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 + 1
    }

    async fn on_datagram(&mut self, data: &[u8], src: SocketAddr) {
        let (kind, stamps, payload) = match wire::open(&self.keys, data) {
            Ok(x) => x,
            Err(reject) => {
                tracing::debug!("gossip: dropped datagram from {src}: {reject}");
                self.dropped.count(reject.label());
                return;
            }
        };
        let now = Instant::now();
        let now_us = self.now_us();
        if self.peers.len() > 4096 {
            // Only authenticated peers get here; a cluster this size
            // never does, so forget everything rather than grow.
            self.peers.clear();
        }
        let link = self.peers.entry(src).or_insert_with(|| PeerLink {
            last_ts: 0,
            received: now,
            rtt: RttEstimator::default(),
        });
        link.last_ts = stamps.send_us;
        link.received = now;
        if stamps.echo_us != 0 && stamps.echo_us <= now_us {
            let rtt = now_us - stamps.echo_us;
            let rtt = rtt.saturating_sub(u64::from(stamps.hold_us));
            if rtt < 30_000_000 {
                link.rtt.add(now, Duration::from_micros(rtt));
            }
        }
        metrics::counter!("anykv_gossip_packets_received_total").increment(1);
        tracing::trace!("gossip: {kind:?}, {} bytes from {src}", payload.len());
        match kind {
            Kind::Foca => {
                if let Err(e) = self.foca.handle_data(payload, &mut self.rt) {
                    tracing::debug!("gossip: malformed payload from {src}: {e}");
                    self.dropped.count("malformed");
                }
            }
            Kind::Hello => {
                let me = postcard::to_allocvec(&self.identity).unwrap_or_default();
                self.send(Kind::HelloReply, src, &me).await;
            }
            Kind::HelloReply => match postcard::from_bytes::<NodeId>(payload) {
                // Only believe an identity about the address it came from.
                Ok(id) if canonical(id.addr) == src && id.machine != self.identity.machine => {
                    if let Err(e) = self.foca.announce(id, &mut self.rt) {
                        tracing::debug!("gossip: announce to {src}: {e}");
                    }
                }
                Ok(_) => self.dropped.count("malformed"),
                Err(e) => {
                    tracing::debug!("gossip: bad hello reply from {src}: {e}");
                    self.dropped.count("malformed");
                }
            },
        }
        self.drain().await;
        self.fetch_wanted();
    }

    async fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((due, _))) = self.timers.peek() {
            if due.at > now {
                break;
            }
            if let Some(Reverse((_, TimerSlot(t)))) = self.timers.pop() {
                if let Err(e) = self.foca.handle_timer(t, &mut self.rt) {
                    tracing::debug!("gossip timer: {e}");
                }
            }
        }
        self.drain().await;
    }

    /// Carries out what foca asked for.
    async fn drain(&mut self) {
        while let Some((after, timer)) = self.rt.to_schedule() {
            self.timer_seq += 1;
            let due = Due {
                at: Instant::now() + after,
                seq: self.timer_seq,
            };
            self.timers.push(Reverse((due, TimerSlot(timer))));
        }
        while let Some(n) = self.rt.to_notify() {
            self.on_notification(n);
        }
        while let Some((to, data)) = self.rt.to_send() {
            if self.spurious_turn_undead(&to, &data) {
                continue;
            }
            self.send(Kind::Foca, to.addr, &data).await;
        }
        for to in std::mem::take(&mut self.hellos) {
            self.send(Kind::Hello, to, &[]).await;
        }
    }

    fn spurious_turn_undead(&self, to: &NodeId, data: &[u8]) -> bool {
        spurious_turn_undead(self.foca.iter_membership_state(), to, data)
    }

    async fn send(&mut self, kind: Kind, to: SocketAddr, payload: &[u8]) {
        let to = canonical(to);
        let now_us = self.now_us();
        let stamps = match self.peers.get(&to) {
            Some(p) => Stamps {
                send_us: now_us,
                echo_us: p.last_ts,
                hold_us: p.received.elapsed().as_micros().min(u128::from(u32::MAX)) as u32,
            },
            None => Stamps {
                send_us: now_us,
                ..Stamps::default()
            },
        };
        tracing::trace!("gossip: {} bytes to {to}", payload.len());
        wire::seal(&self.keys, kind, stamps, payload, &mut self.out);
        metrics::counter!("anykv_gossip_packets_sent_total").increment(1);
        metrics::counter!("anykv_gossip_bytes_sent_total").increment(self.out.len() as u64);
        if let Err(e) = self.udp.send_to(&self.out, to).await {
            tracing::debug!("gossip send to {to}: {e}");
        }
    }

    fn on_notification(&mut self, n: OwnedNotification<NodeId>) {
        match n {
            OwnedNotification::MemberUp(id) => {
                tracing::info!("gossip: {id} is up");
                // A member that is up (again) may be a new process at the
                // old address: a cached QUIC connection to its previous
                // life would only time out.
                self.forget_connection(id.addr);
                self.sync_soon(id.addr);
                let _ = self.events.send(Event::Up(id));
            }
            OwnedNotification::MemberDown(id) => {
                tracing::warn!("gossip: {id} is down");
                self.forget_connection(id.addr);
                let _ = self.events.send(Event::Down(id));
            }
            OwnedNotification::Rename(from, to) => {
                tracing::info!("gossip: {from:?} is now {to:?}");
                self.forget_connection(to.addr);
                let _ = self.events.send(Event::Renamed { from, to });
            }
            OwnedNotification::Rejoin(id) => {
                tracing::warn!("gossip: this node was declared down; rejoined as {id:?}");
                self.identity = id.clone();
                let _ = self.events.send(Event::Rejoined(id));
            }
            OwnedNotification::Active => tracing::info!("gossip: joined the cluster"),
            OwnedNotification::Idle => tracing::info!("gossip: no live peers"),
            // Leaving makes us defunct on purpose.
            OwnedNotification::Defunct if self.leaving => {}
            OwnedNotification::Defunct => {
                tracing::warn!("gossip: declared down; reusing identity");
                let _ = self.foca.reuse_down_identity();
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    /// Writes this node's metadata row and announces its version.
    /// Publishes this node's metadata as a new row; the row.
    fn publish_meta(&mut self) -> Row {
        self.meta_version.seq += 1;
        let row = Row {
            table: Table::Nodes,
            key: self.meta.machine.clone(),
            origin: self.meta.machine.clone(),
            version: self.meta_version,
            value: postcard::to_allocvec(&self.meta).ok(),
        };
        self.store.lock().apply(row.clone());
        let item = DigestItem {
            origin: self.meta.machine.clone(),
            version: self.meta_version,
        };
        if let Err(e) = self.foca.add_broadcast(&crate::state::encode_item(&item)) {
            tracing::warn!("gossip: cannot broadcast digest: {e}");
        }
        // Our own item also lands in the handler's queue; fetch_wanted
        // skips it (draining the queue here would drop others' news).
        let _ = self.events.send(Event::StateChanged {
            table: Table::Nodes,
            key: self.meta.machine.clone(),
        });
        row
    }

    /// Starts fetches for origins whose announced version we lack.
    fn fetch_wanted(&mut self) {
        for item in self.handler.take_wanted() {
            if item.origin == self.meta.machine {
                continue;
            }
            if self.store.lock().version_of(&item.origin) >= item.version {
                continue;
            }
            let peer = self
                .foca
                .iter_members()
                .find(|m| m.id().machine == item.origin)
                .map(|m| m.id().addr);
            if let Some(addr) = peer {
                self.sync_soon(addr);
            }
        }
    }

    /// Drops the cached QUIC connection to the node gossiping at
    /// `gossip_addr` (the next session or stream dials afresh).
    fn forget_connection(&self, gossip_addr: SocketAddr) {
        if let Some(s) = &self.syncer {
            s.forget(SocketAddr::new(canonical(gossip_addr).ip(), self.sync_port));
        }
    }

    /// Runs a sync session with the node gossiping at `gossip_addr`
    /// unless one is already running.
    fn sync_soon(&self, gossip_addr: SocketAddr) {
        self.sync_offering(gossip_addr, Vec::new());
    }

    /// [`Self::sync_soon`], offering `rows` (just written here) in the
    /// session's first message. An offering session starts at once, beside
    /// a plain one already running with that node (an anti-entropy session
    /// with a far region takes a round trip and a half: rows must not wait
    /// for it); at most [`MAX_OFFERING`] offering sessions per node run at
    /// a time (a session lasts a round trip and a half, its rows arrive
    /// in half of one: a few in flight keep offers from queueing behind
    /// each other), and rows offered beyond that go together in the next
    /// one to finish. A peer that refuses the offer (an older build) gets
    /// a plain session.
    fn sync_offering(&self, gossip_addr: SocketAddr, rows: Vec<Row>) {
        let Some(syncer) = self.syncer.clone() else {
            return;
        };
        let peer = SocketAddr::new(canonical(gossip_addr).ip(), self.sync_port);
        if !rows.is_empty() {
            {
                let mut offering = self.offering.lock();
                let (running, waiting) = offering.entry(peer).or_default();
                if *running >= MAX_OFFERING {
                    waiting.extend(rows);
                    return;
                }
                *running += 1;
            }
            let offering = self.offering.clone();
            tokio::spawn(async move {
                let mut rows = rows;
                loop {
                    if syncer.sync_offering(peer, rows).await.is_err() {
                        let _ = syncer.sync_with(peer).await;
                    }
                    let mut o = offering.lock();
                    let Some((running, waiting)) = o.get_mut(&peer) else {
                        return;
                    };
                    if waiting.is_empty() {
                        *running -= 1;
                        if *running == 0 {
                            o.remove(&peer);
                        }
                        return;
                    }
                    rows = std::mem::take(waiting);
                }
            });
            return;
        }
        if !self.syncing.lock().insert(peer) {
            return;
        }
        let syncing = self.syncing.clone();
        tokio::spawn(async move {
            let _ = syncer.sync_with(peer).await;
            syncing.lock().remove(&peer);
        });
    }

    fn anti_entropy_round(&mut self) {
        let members: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        if members.is_empty() {
            return;
        }
        let pick = members[self.rng.random_range(0..members.len())];
        self.sync_soon(pick);
    }

    fn on_rows(&mut self, rows: Vec<Row>) {
        for r in rows {
            self.handler.observe(&r.origin, r.version);
            let _ = self.events.send(Event::StateChanged {
                table: r.table,
                key: r.key,
            });
        }
        self.publish_view();
    }

    fn refresh_seeds(&mut self, snap: Option<Snapshot>) {
        match (&self.seeds, snap) {
            (Seeds::Static(v), _) => self.seed_addrs = v.iter().copied().map(canonical).collect(),
            (Seeds::Dns(_), Some(s)) => {
                let port = self.identity.addr.port();
                self.seed_addrs = s
                    .addrs
                    .iter()
                    .map(|ip: &IpAddr| SocketAddr::new(ip.to_canonical(), port))
                    .collect();
            }
            _ => {}
        }
        let me = self.identity.addr;
        self.seed_addrs.retain(|a| *a != me);
    }

    /// Announces to seeds that are not live members (a fresh node joins;
    /// a partitioned-off node finds its way back).
    fn announce_to_seeds(&mut self) {
        let live: HashSet<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        let targets: Vec<SocketAddr> = self
            .seed_addrs
            .iter()
            .filter(|a| !live.contains(a))
            .copied()
            .collect();
        for a in targets {
            self.announce_to(a);
        }
    }

    /// foca accepts an announce only when addressed to the receiver's
    /// identity; seeds are addresses, so ask whoever is there first (the
    /// reply triggers the announce), unless we already know who it is.
    fn announce_to(&mut self, addr: SocketAddr) {
        let known = self
            .foca
            .iter_membership_state()
            .find(|m| m.id().addr == addr)
            .map(|m| m.id().clone());
        match known {
            Some(id) => {
                if let Err(e) = self.foca.announce(id, &mut self.rt) {
                    tracing::debug!("gossip: announce to {addr}: {e}");
                }
            }
            None => {
                tracing::trace!("gossip: hello to {addr}");
                self.hellos.push(addr);
            }
        }
    }

    fn publish_view(&mut self) {
        let store = self.store.lock();
        let meta_of = |machine: &str| {
            store
                .get(Table::Nodes, machine)
                .and_then(|r| r.value.as_deref())
                .and_then(|b| postcard::from_bytes::<NodeMeta>(b).ok())
        };
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        let mut members = vec![MemberView {
            machine: self.identity.machine.clone(),
            region: self.identity.region.clone(),
            addr: self.identity.addr,
            incarnation: self.identity.incarnation,
            state: MemberState::Alive,
            rtt_min_ms: None,
            rtt_ms: None,
            meta: Some(self.meta.clone()),
            me: true,
        }];
        let (mut alive, mut suspect, mut down) = (0u32, 0u32, 0u32);
        for m in self.foca.iter_membership_state() {
            let id = m.id();
            let state = match m.state() {
                State::Alive => {
                    alive += 1;
                    MemberState::Alive
                }
                State::Suspect => {
                    suspect += 1;
                    MemberState::Suspect
                }
                State::Down => {
                    down += 1;
                    MemberState::Down
                }
            };
            let link = self.peers.get(&id.addr);
            let rtt_min = link.and_then(|l| l.rtt.min());
            let rtt = link.and_then(|l| l.rtt.smoothed());
            if let Some(r) = rtt_min {
                metrics::gauge!("anykv_gossip_rtt_min_seconds", "peer" => id.machine.clone(), "region" => id.region.clone(), "pool" => self.pool)
                    .set(r.as_secs_f64());
            }
            if let Some(r) = rtt {
                metrics::gauge!("anykv_gossip_rtt_seconds", "peer" => id.machine.clone(), "region" => id.region.clone(), "pool" => self.pool)
                    .set(r.as_secs_f64());
            }
            members.push(MemberView {
                machine: id.machine.clone(),
                region: id.region.clone(),
                addr: id.addr,
                incarnation: id.incarnation,
                state,
                rtt_min_ms: ms(rtt_min),
                rtt_ms: ms(rtt),
                meta: meta_of(&id.machine),
                me: false,
            });
        }
        drop(store);
        metrics::gauge!("anykv_gossip_members", "state" => "alive", "pool" => self.pool)
            .set(f64::from(alive));
        metrics::gauge!("anykv_gossip_members", "state" => "suspect", "pool" => self.pool)
            .set(f64::from(suspect));
        metrics::gauge!("anykv_gossip_members", "state" => "down", "pool" => self.pool)
            .set(f64::from(down));
        members[1..].sort_by(|a, b| (&a.region, &a.machine).cmp(&(&b.region, &b.machine)));
        let view = ClusterView {
            me: self.identity.machine.clone(),
            members,
        };
        self.view_tx.send_if_modified(|cur| {
            if **cur == view {
                false
            } else {
                *cur = Arc::new(view);
                true
            }
        });
    }
}
