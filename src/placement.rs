//! A node's share of the cluster's databases: which tenants it holds, as
//! what, and the replication links between nodes.
//!
//! The catalog ([`TenantEntry`] rows, written through the admin API by the
//! sidecar) and the role records ([`RoleRecord`] rows) live in gossip's
//! state tables, so every node has them. Whenever either changes, or a node
//! joins or leaves, [`Placement::reconcile`] runs:
//!
//! 1. A tenant without a role record gets one from the node that
//!    rendezvous placement names its primary; a record whose standby or
//!    read-region replica sits on a node that left is repaired by the
//!    tenant's primary. The primary itself never moves here.
//! 2. The store's catalog becomes the tenants this node holds: the ones it
//!    is primary of, and the ones it replicates, each following its
//!    primary's node over the cluster's QUIC link (one stream per tenant,
//!    Redis's replication protocol inside: PSYNC, the RDB, the stream).
//! 3. The node publishes the tenants its store serves, each at the catalog
//!    version it applied (the admin call waits for the holders' to reach
//!    its change) and saves the rows
//!    in its directory, so a restart serves its tenants before it has
//!    heard from any peer.

use anyhow::Context;

mod ask;
use anykv_gossip::catalog::{self, Held, LiveNodes, RoleRecord, TenantEntry};
use anykv_gossip::controller::{Command, Controller};
use anykv_gossip::state::{Row, StateStore, Table};
use anykv_gossip::sync::{QuicDuplex, Syncer};
use anykv_gossip::{ClusterView, Gossip, MemberState};
use anykv_server::catalog::{Catalog, TenantSpec};
use anykv_server::shared::Shared;
use anykv_server::stream::{LinkDialer, LinkStream};
use anykv_server::tenant::TenantId;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// File (in the node's `dir`) holding the catalog and role rows.
const STATE_FILE: &str = "cluster-tenants.json";

/// Dials a primary's store over the cluster's QUIC connection.
struct QuicDialer {
    syncer: Syncer,
    local: SocketAddr,
}

impl LinkDialer for QuicDialer {
    fn dial(
        &self,
        node: SocketAddr,
        tenant: TenantId,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<LinkStream>> + Send>> {
        let syncer = self.syncer.clone();
        let local = self.local;
        Box::pin(async move {
            let (send, recv, conn) = syncer
                .open_store_stream(node, tenant.0)
                .await
                .map_err(std::io::Error::other)?;
            Ok(LinkStream {
                io: Box::new(QuicDuplex { send, recv }),
                peer: node,
                local,
                rtt: Some(Arc::new(move || conn.rtt())),
            })
        })
    }
}

/// The node's placement state, shared with the admin API.
pub struct Placement {
    pub me: String,
    shared: Arc<Shared>,
    store: Arc<Mutex<StateStore>>,
    wan: WanHandle,
    view: watch::Receiver<Arc<ClusterView>>,
    sync_port: u16,
    /// Tenants from `tenants-file`, served besides the cluster's.
    local: Vec<TenantSpec>,
    path: PathBuf,
    kick: Notify,
    last_saved: Mutex<u64>,
    /// The tenants the last reconcile pass gave the store, each at its
    /// catalog version.
    applied: Mutex<Vec<(u64, u64)>>,
    /// This node's region and its controller: once the region's group has
    /// formed, the records of the tenants whose primary region this is are
    /// the group's (committed by its leader), not placement's.
    region: String,
    controller: Option<Arc<Controller>>,
    /// A batch of proposals to the controller is in flight.
    proposing: Arc<AtomicBool>,
    /// When this placement started (see [`Placement::gone`]).
    started: std::time::Instant,
    /// Copies this node holds that the role record stopped naming, since
    /// when (see [`COPY_LINGER`]).
    unnamed: Mutex<std::collections::HashMap<u64, std::time::Instant>>,
}

/// How long a copy the role record stopped naming (its node handed the
/// primary over, or was the standby) stays, as a replica of the new
/// primary, before it is dropped. Routers far away send writes to the old
/// primary until they learn the new one (a round trip or two after the
/// handoff); this copy sends those on (`dispatch::relay`). Dropped at once,
/// it would close their streams with writes in flight, which their
/// clients could only be told "may or may not have run".
const COPY_LINGER: Duration = Duration::from_secs(2);

/// How long a node that just started gives its cluster view to fill before
/// it takes a member it has not heard of for gone. Joining brings the
/// members within a gossip round or two (about 0.2 s on loopback); a few
/// seconds cover Fly's slower wide-area profile too.
const VIEW_SETTLE: Duration = Duration::from_secs(5);

/// What placement needs of the cluster-wide gossip pool.
#[derive(Clone)]
pub struct WanHandle {
    publisher: anykv_gossip::node::Publisher,
    pub syncer: Syncer,
    updater: anykv_gossip::node::MetaUpdater,
}

impl WanHandle {
    pub fn new(g: &Gossip) -> anyhow::Result<WanHandle> {
        let syncer = g
            .syncer()
            .cloned()
            .context("the cluster pool runs no state sync")?;
        Ok(WanHandle {
            publisher: g.publisher(),
            syncer,
            updater: g.updater(),
        })
    }
}

impl Placement {
    /// This node's region controller (None: it runs none).
    pub fn controller(&self) -> Option<&Arc<Controller>> {
        self.controller.as_ref()
    }

    /// The store this placement feeds.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
    /// Wires the store to the cluster (links in both directions), loads the
    /// saved rows and starts reconciling.
    pub fn start(
        cluster: &anykv_gossip::Cluster,
        shared: Arc<Shared>,
        dir: PathBuf,
        sync_port: u16,
        controller: Option<Arc<Controller>>,
    ) -> anyhow::Result<Arc<Placement>> {
        let wan = WanHandle::new(cluster.wan())?;
        let local_addr = wan.syncer.local_addr().context("sync endpoint")?;
        {
            let shared = shared.clone();
            wan.syncer
                .set_store_handler(Arc::new(move |tenant, peer, send, recv| {
                    shared.accept_link(
                        LinkStream {
                            io: Box::new(QuicDuplex { send, recv }),
                            peer,
                            local: local_addr,
                            rtt: None,
                        },
                        TenantId(tenant),
                    );
                }));
        }
        let _ = shared.link_dialer.set(Arc::new(QuicDialer {
            syncer: wan.syncer.clone(),
            local: local_addr,
        }));
        let local = shared.catalog().tenants().to_vec();
        let p = Arc::new(Placement {
            me: cluster.wan().identity().machine.clone(),
            shared,
            store: cluster.wan().store(),
            wan,
            view: cluster.view(),
            sync_port,
            local,
            path: dir.join(STATE_FILE),
            kick: Notify::new(),
            last_saved: Mutex::new(0),
            applied: Mutex::new(Vec::new()),
            region: cluster.wan().identity().region.clone(),
            controller,
            proposing: Arc::new(AtomicBool::new(false)),
            started: std::time::Instant::now(),
            unnamed: Mutex::new(std::collections::HashMap::new()),
        });
        match p.load_saved() {
            Ok(rows) if !rows.is_empty() => {
                tracing::info!(
                    "{} catalog and role rows from {}",
                    rows.len(),
                    p.path.display()
                );
                // Applied here first so the tenants open before any peer
                // answers; published so peers that missed them catch up.
                {
                    let mut st = p.store.lock();
                    for r in &rows {
                        st.apply(r.clone());
                    }
                }
                p.wan.publisher.publish(rows);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("{e}; starting from the cluster's catalog"),
        }
        p.reconcile();
        ask::start(&p);
        tokio::spawn(p.clone().run(cluster.wan().events()));
        Ok(p)
    }

    fn load_saved(&self) -> anyhow::Result<Vec<Row>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        serde_json::from_str(&text).with_context(|| format!("parsing {}", self.path.display()))
    }

    async fn run(
        self: Arc<Self>,
        mut events: tokio::sync::broadcast::Receiver<anykv_gossip::Event>,
    ) {
        let mut view = self.view.clone();
        // A safety net: membership seen through the merged view, and rows
        // of any origin, are re-checked every second anyway.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut committed = self.controller.as_ref().map(|c| c.watch());
        let mut announced = self.controller.as_ref().map(|c| c.announcements());
        loop {
            let announcement = async {
                match announced.as_mut() {
                    Some(rx) => rx
                        .recv()
                        .await
                        .map_err(|e| matches!(e, tokio::sync::broadcast::error::RecvError::Closed)),
                    None => std::future::pending().await,
                }
            };
            let records_changed = async {
                match committed.as_mut() {
                    Some(w) => w.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ok = records_changed => if !ok { committed = None },
                a = announcement => match a {
                    Ok(rec) => {
                        self.adopt(rec, "announced");
                    }
                    Err(true) => announced = None,
                    Err(false) => {}
                },
                e = events.recv() => match e {
                    Ok(anykv_gossip::Event::StateChanged { table: Table::Nodes, .. }) => continue,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                },
                r = view.changed() => if r.is_err() { return },
                _ = self.kick.notified() => {}
                _ = tick.tick() => {}
            }
            // Let a burst of changes settle into one pass.
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.reconcile();
        }
    }

    /// Asks for a reconcile pass soon (after a local write).
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// Live store nodes by region, this one included. A member whose
    /// metadata has not arrived yet is not one: it may be a router.
    fn live(&self, view: &ClusterView) -> LiveNodes {
        let mut live: LiveNodes = BTreeMap::new();
        for m in &view.members {
            if (m.me || m.state == MemberState::Alive) && anykv_gossip::holds_data(m) {
                live.entry(m.region.clone())
                    .or_default()
                    .push(m.machine.clone());
            }
        }
        live
    }

    /// Whether `machine`, a holder of some tenant, is gone (its place goes
    /// to another node): the view has it suspect or down, or does not have
    /// it at all once the view had [`VIEW_SETTLE`] to fill. A node that just
    /// restarted (a leader that openraft resumes at once, on a migrated
    /// machine) has heard of few members yet: replacing a holder only not
    /// known yet would cost a healthy, in-sync copy its place and make a
    /// full sync elsewhere. Alive without metadata yet is not gone either.
    fn gone<'a>(&self, view: &'a ClusterView) -> impl Fn(&str) -> bool + 'a {
        let settled = self.started.elapsed() >= VIEW_SETTLE;
        move |machine| match view.member(machine) {
            Some(m) => !(m.me || m.state == MemberState::Alive),
            None => settled,
        }
    }

    /// The catalog's entries and the role records, as held now.
    pub fn tables(&self) -> (BTreeMap<u64, TenantEntry>, BTreeMap<u64, RoleRecord>, u64) {
        let st = self.store.lock();
        let mut entries = BTreeMap::new();
        let mut version = 0;
        for r in st.rows(Table::Tenants) {
            version = version.max(r.version.seq);
            if let Some(e) = r
                .value
                .as_deref()
                .and_then(|v| serde_json::from_slice::<TenantEntry>(v).ok())
            {
                entries.insert(e.id, e);
            }
        }
        let roles = st
            .rows(Table::Roles)
            .filter_map(RoleRecord::from_row)
            .map(|r| (r.tenant, r))
            .collect();
        (entries, roles, version)
    }

    /// Where `machine`'s store takes cluster links (its sync endpoint).
    fn link_addr(&self, view: &ClusterView, machine: &str) -> Option<SocketAddr> {
        let ip = match view.member(machine) {
            Some(m) => m.addr.ip(),
            None => self
                .store
                .lock()
                .nodes()
                .into_iter()
                .find(|n| n.machine == machine)?
                .gossip_addr?
                .ip(),
        };
        Some(SocketAddr::new(ip, self.sync_port))
    }

    /// The store's spec of tenant `e` with role record `rec`, following
    /// `follow` (None: its primary, or not held) with `standby`.
    fn spec_of(
        &self,
        e: &TenantEntry,
        rec: &RoleRecord,
        follow: Option<SocketAddr>,
        standby: Option<SocketAddr>,
    ) -> TenantSpec {
        TenantSpec {
            id: TenantId(e.id),
            name: e.name.clone(),
            token_sha256: e.digests(),
            maxmemory: e.maxmemory,
            policy: e
                .maxmemory_policy
                .as_deref()
                .map(anykv_server::evict::Policy::parse),
            maxclients: e.maxclients,
            ops_per_sec: e.ops_per_sec,
            leased: false,
            consistency: anykv_server::catalog::Consistency::parse(&e.consistency)
                .unwrap_or_default(),
            durable: false,
            leaving: false,
            follow,
            standby,
            promote_at: (follow.is_none() && rec.primary == self.me)
                .then(|| rec.handoff_offset())
                .flatten(),
            epoch: rec.epoch,
            remote: None,
        }
    }

    /// Where a tenant this node holds no copy of is served: its primary's
    /// node, and the nodes with a copy nearest first by the gossip's
    /// smallest round trip of the last minute (whole milliseconds, the
    /// primary first among equals, so close nodes do not swap places at
    /// every probe). A replica counts as a copy once its metadata shows it
    /// streaming (a measured lag): one still taking its full sync would
    /// answer from an empty keyspace. None while the primary's address is
    /// unknown.
    fn remote_route(
        &self,
        view: &ClusterView,
        rec: &RoleRecord,
    ) -> Option<anykv_server::catalog::RemoteRoute> {
        let primary = self.link_addr(view, &rec.primary)?;
        let mut copies: Vec<(u64, bool, SocketAddr)> = Vec::new();
        for m in rec.holders() {
            let Some(member) = view.member(m).filter(|v| v.state == MemberState::Alive) else {
                continue;
            };
            let is_primary = m == rec.primary;
            let streaming = member.meta.as_ref().is_some_and(|meta| {
                meta.tenants
                    .iter()
                    .any(|t| t.id == rec.tenant && t.lag_ms.is_some())
            });
            if !is_primary && !streaming {
                continue;
            }
            let Some(addr) = self.link_addr(view, m) else {
                continue;
            };
            let rtt = member.rtt_min_ms.map_or(u64::MAX, |ms| ms.round() as u64);
            copies.push((rtt, !is_primary, addr));
        }
        copies.sort();
        Some(anykv_server::catalog::RemoteRoute {
            primary,
            copies: copies
                .into_iter()
                .map(|(rtt_ms, _, addr)| anykv_server::catalog::CopyAt { addr, rtt_ms })
                .collect(),
        })
    }

    /// One pass: records created or repaired, the store's catalog set to
    /// what this node holds, the applied version published, rows saved.
    pub fn reconcile(&self) {
        let view = self.view.borrow().clone();
        if self.shared.own_link.read().is_none() {
            *self.shared.own_link.write() = self.link_addr(&view, &self.me);
        }
        // Down members' addresses, unless a live member has the same one
        // (a machine that took over a retired one's address: the down
        // row stays in the gossip for a day).
        let link = |m: &anykv_gossip::MemberView| SocketAddr::new(m.addr.ip(), self.sync_port);
        let live: std::collections::HashSet<SocketAddr> = view
            .members
            .iter()
            .filter(|m| m.state != MemberState::Down)
            .map(link)
            .collect();
        self.shared.set_down_links(
            view.members
                .iter()
                .filter(|m| !m.me && m.state == MemberState::Down)
                .map(link)
                .filter(|a| !live.contains(a))
                .collect(),
        );
        let live = self.live(&view);
        let gone = self.gone(&view);
        let (entries, mut roles, version) = self.tables();
        let mut writes = Vec::new();
        // The region's group's records of the region's tenants, and every
        // node of the region publishes them (the same rows: they merge).
        // Records merge by (epoch, seq), whoever wrote them: a newer one in
        // the table (an operator's forced promotion) wins, and the group's
        // leader adopts it (`propose`). A tenant whose primary region is no
        // longer this one (moved by a forced promotion) is not the group's.
        let ctrl = self.controller.as_ref().filter(|c| c.region_formed());
        writes.extend(
            self.merge_group_records(&entries, &mut roles)
                .iter()
                .map(RoleRecord::row),
        );
        let controlled = |e: &TenantEntry| ctrl.is_some() && e.primary_region == self.region;
        for e in entries.values() {
            if controlled(e) {
                continue;
            }
            match roles.get(&e.id) {
                None => {
                    if let Some(rec) = catalog::place(e, &live) {
                        if rec.primary == self.me {
                            tracing::info!(tenant = e.id, name = %e.name, ?rec, "placing a new tenant");
                            writes.push(rec.row());
                            roles.insert(e.id, rec);
                        }
                    }
                }
                Some(rec) if rec.primary == self.me => {
                    if let Some(next) = catalog::repair(rec, e, &live, &gone) {
                        tracing::info!(tenant = e.id, ?next, "replicas moved");
                        writes.push(next.row());
                        roles.insert(e.id, next);
                    }
                }
                Some(_) => {}
            }
        }
        // Records of deleted tenants: their primary removes them.
        for rec in roles.values() {
            if !entries.contains_key(&rec.tenant) && rec.primary == self.me {
                let mut row = rec.row();
                if self
                    .store
                    .lock()
                    .get(Table::Roles, &row.key)
                    .is_some_and(|r| r.value.is_some())
                {
                    row.version.seq += 1;
                    row.value = None;
                    writes.push(row);
                }
            }
        }
        if !writes.is_empty() {
            let _ = self.wan.publisher.publish(writes);
        }
        if let Some(c) = ctrl.filter(|c| c.is_leader()) {
            let tombstones = self.tombstones();
            self.propose(c, &entries, &roles, (&live, &gone), &tombstones);
        }

        let mut specs: Vec<TenantSpec> = Vec::new();
        let mut remote: Vec<TenantSpec> = Vec::new();
        let local = self.shared.repl_status.lock().clone();
        // How the store holds a tenant now: a tenant this pass cannot place
        // yet stays so.
        let serving = self.shared.catalog();
        let held_now = |id: u64| serving.tenants().iter().find(|s| s.id.0 == id);
        self.unnamed.lock().retain(|id, _| {
            held_now(*id).is_some()
                && roles
                    .get(id)
                    .is_some_and(|rec| rec.role_of(&self.me).is_none())
        });
        for e in entries.values() {
            let Some(rec) = roles.get(&e.id) else {
                continue;
            };
            // Where this node's requests for the database would go after
            // a handoff (its standby, or the one named for the next): a
            // connection is kept up there, for a database this node holds
            // a replica of or has clients of (`Syncer::warm`).
            let held = rec.role_of(&self.me);
            if held != Some(Held::Primary)
                && (held.is_some() || self.shared.has_clients(TenantId(e.id)))
            {
                for m in [rec.standby.as_deref(), rec.next_standby.as_deref()]
                    .into_iter()
                    .flatten()
                    .filter(|m| *m != self.me)
                {
                    if let Some(a) = self.link_addr(&view, m) {
                        self.wan.syncer.warm(a);
                    }
                }
            }
            // Durability `region`: the primary waits for its standby's
            // acknowledgement of every write.
            let standby = match (rec.role_of(&self.me), e.durability, rec.standby.as_deref()) {
                (Some(Held::Primary), catalog::Durability::Region, Some(sb)) => {
                    self.link_addr(&view, sb)
                }
                _ => None,
            };
            let follow = match rec.role_of(&self.me) {
                // A node the record no longer names that still holds the
                // tenant as a primary (it was one before a failover) rejoins
                // as a replica of the current primary, until its sync is
                // done: the sync replaces its data, and the writes only it
                // had are counted and logged (`anykv_writes_discarded_total`),
                // never merged. Then it leaves.
                None => {
                    let rejoining = rec.primary != self.me
                        && match local.get(&TenantId(e.id)) {
                            Some(s) => s.link_up != Some(true),
                            // Just started, its status not reported yet: a
                            // copy it serves as the primary (it was one
                            // when it stopped, a crash included) may hold
                            // writes only it had.
                            None => held_now(e.id).is_some_and(|s| s.follow.is_none()),
                        };
                    // Synced, it lingers a while (`COPY_LINGER`).
                    let lingering = !rejoining
                        && held_now(e.id).is_some()
                        && self
                            .unnamed
                            .lock()
                            .entry(e.id)
                            .or_insert_with(std::time::Instant::now)
                            .elapsed()
                            < COPY_LINGER;
                    match self.link_addr(&view, &rec.primary) {
                        Some(a) if rejoining || lingering => Some(a),
                        // Its primary not in the view yet (this node just
                        // started): kept as it is until it is, rather than
                        // dropped with the writes only it had uncounted.
                        None if rejoining => {
                            // Its reads too wait for a lease it will not
                            // get (it is no longer the primary): what only
                            // it had is never shown meanwhile.
                            specs.extend(held_now(e.id).map(|sp| TenantSpec {
                                leaving: true,
                                leased: true,
                                consistency: anykv_server::catalog::Consistency::Strong,
                                ..sp.clone()
                            }));
                            continue;
                        }
                        _ => {
                            // Held elsewhere: this node's customers reach
                            // it through the nodes that hold it.
                            if let Some(route) = self.remote_route(&view, rec) {
                                remote.push(TenantSpec {
                                    remote: Some(Box::new(route)),
                                    ..self.spec_of(e, rec, None, None)
                                });
                            }
                            continue;
                        }
                    }
                }
                Some(Held::Primary) => None,
                Some(Held::Replica) => match self.link_addr(&view, &rec.primary) {
                    Some(a) => Some(a),
                    None => {
                        // Kept as it is meanwhile: dropping the copy would
                        // cost a full sync once the address is known.
                        tracing::warn!(tenant = e.id, primary = %rec.primary, "primary's address unknown yet");
                        specs.extend(held_now(e.id).map(|sp| TenantSpec {
                            leaving: false,
                            ..sp.clone()
                        }));
                        continue;
                    }
                },
            };
            specs.push(TenantSpec {
                leaving: rec.role_of(&self.me).is_none(),
                leased: controlled(e) && follow.is_none(),
                durable: follow.is_none() && e.durability == catalog::Durability::Region,
                ..self.spec_of(e, rec, follow, standby)
            });
        }
        let (remote, skipped) = Catalog::from_specs(remote);
        for s in skipped {
            tracing::error!("remote catalog: {s}");
        }
        let before = self.shared.remote_catalog();
        if before.tenants() != remote.tenants() {
            // (Routes change with every round-trip measurement: only a
            // change in how many databases is worth the log's INFO.)
            if before.tenants().len() != remote.tenants().len() {
                tracing::info!(
                    "databases served through other nodes: {}",
                    remote.tenants().len()
                );
            } else {
                tracing::debug!("routes to databases served through other nodes changed");
            }
            self.shared.set_remote(remote);
        }
        // The cluster's tenants this pass gives the store, at their versions.
        let held: Vec<(u64, u64)> = specs
            .iter()
            .filter_map(|sp| entries.get(&sp.id.0).map(|e| (e.id, e.version)))
            .collect();
        for l in &self.local {
            if !specs.iter().any(|s| s.id == l.id) {
                specs.push(l.clone());
            }
        }
        let (cat, skipped) = Catalog::from_specs(specs);
        for s in skipped {
            tracing::error!("catalog: {s}");
        }
        let cur = self.shared.catalog();
        if cur.tenants() != cat.tenants() {
            let (a, c, r) = self.shared.set_catalog(cat);
            tracing::info!("databases on this node: {a} added, {c} changed, {r} removed");
        }
        *self.applied.lock() = held.clone();
        self.wan.updater.update(move |m| {
            m.catalog_version = version;
            m.tenant_versions = held;
        });
        self.save();
    }

    /// As the region's controller leader: commits a record for every
    /// tenant of this region that the group has none for (the one it has
    /// in the table, placed before the group formed, or a new placement),
    /// repairs records whose standby or replicas left, and forgets the
    /// records of deleted tenants. One batch at a time, in the background;
    /// each is a compare-and-set, so a stale batch changes nothing.
    fn propose(
        &self,
        c: &Arc<Controller>,
        entries: &BTreeMap<u64, TenantEntry>,
        table: &BTreeMap<u64, RoleRecord>,
        (live, gone): (&LiveNodes, &dyn Fn(&str) -> bool),
        deleted: &std::collections::BTreeSet<u64>,
    ) {
        let applied = c.roles().records;
        let mut cmds = Vec::new();
        for e in entries.values().filter(|e| e.primary_region == self.region) {
            match applied.get(&e.id) {
                None => {
                    let rec = table
                        .get(&e.id)
                        .cloned()
                        .or_else(|| catalog::place(e, live));
                    // Committed one past the table's version, so the
                    // group's record wins everywhere the rows merge.
                    if let Some(mut record) = rec {
                        record.seq += 1;
                        cmds.push(Command::PutRole {
                            expect: None,
                            record,
                        });
                    }
                }
                // A newer record in the table (a forced promotion): adopted
                // as it is, so every copy of the row is the same.
                Some(rec)
                    if table
                        .get(&e.id)
                        .is_some_and(|t| (t.epoch, t.seq) > (rec.epoch, rec.seq)) =>
                {
                    if let Some(t) = table.get(&e.id) {
                        cmds.push(Command::PutRole {
                            expect: Some((rec.epoch, rec.seq)),
                            record: t.clone(),
                        });
                    }
                }
                Some(rec) => {
                    if let Some(next) = catalog::repair(rec, e, live, gone) {
                        cmds.push(Command::PutRole {
                            expect: Some((rec.epoch, rec.seq)),
                            record: next,
                        });
                    }
                }
            }
        }
        // Only tenants the catalog deleted (a tombstone), never ones this
        // node has not heard of yet, and tenants whose primary region moved
        // elsewhere (a forced promotion).
        let moved = |t: &u64| {
            entries
                .get(t)
                .is_some_and(|e| e.primary_region != self.region)
        };
        for t in applied.keys().filter(|t| deleted.contains(t) || moved(t)) {
            cmds.push(Command::DropRole { tenant: *t });
        }
        if cmds.is_empty() || self.proposing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (c, busy) = (c.clone(), self.proposing.clone());
        tokio::spawn(async move {
            for cmd in cmds {
                match c.propose(cmd.clone()).await {
                    Ok(o) if o.applied => tracing::info!(?cmd, "controller committed"),
                    Ok(o) => {
                        tracing::debug!(?cmd, current = ?o.current, "controller: stale proposal")
                    }
                    Err(e) => {
                        tracing::warn!(?cmd, "controller: {e}");
                        break;
                    }
                }
            }
            busy.store(false, Ordering::Release);
        });
    }

    /// Tenants the catalog deleted (their rows are tombstones).
    fn tombstones(&self) -> std::collections::BTreeSet<u64> {
        self.store
            .lock()
            .rows(Table::Tenants)
            .filter(|r| r.value.is_none())
            .filter_map(|r| r.key.parse().ok())
            .collect()
    }

    /// Saves the shared rows when they changed since the last save.
    fn save(&self) {
        let (rows, sum) = {
            let st = self.store.lock();
            let rows: Vec<Row> = st
                .rows(Table::Tenants)
                .chain(st.rows(Table::Roles))
                .cloned()
                .collect();
            (rows, st.shared_sum())
        };
        let mut last = self.last_saved.lock();
        if *last == sum {
            return;
        }
        let tmp = self.path.with_extension("json.tmp");
        let r = serde_json::to_vec(&rows)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|_| std::fs::rename(&tmp, &self.path));
        match r {
            Ok(()) => *last = sum,
            Err(e) => tracing::error!("saving {}: {e}", self.path.display()),
        }
    }

    /// Writes a catalog change (the admin API).
    pub fn write(&self, row: Row) {
        let _ = self.wan.publisher.publish(vec![row]);
        self.kick();
    }

    /// Writes a new or changed tenant (the admin API). A tenant without a
    /// role record gets one here, as the node placement names its primary
    /// would write it (every node computes the same; equal versions resolve
    /// the same way everywhere), so its holders can open it as soon as the
    /// two rows reach them, one network trip sooner.
    pub fn write_entry(&self, e: &TenantEntry) {
        let mut rows = vec![e.row()];
        let (_, roles, _) = self.tables();
        if !roles.contains_key(&e.id) {
            let view = self.view.borrow().clone();
            if let Some(rec) = catalog::place(e, &self.live(&view)) {
                rows.push(rec.row());
            }
        }
        let _ = self.wan.publisher.publish(rows);
        self.kick();
    }

    /// This node's copy of tenant `id` as its executor sees it now (None:
    /// no copy here).
    pub async fn probe(&self, id: u64) -> Option<anykv_server::metrics::ReplStatus> {
        let t = anykv_server::tenant::TenantId(id);
        self.shared.catalog().get(t)?;
        self.shared.probe(t).await
    }

    /// Whether this node's store serves tenant `id` (holds a copy, or
    /// stands in for it).
    pub fn serves(&self, id: u64) -> bool {
        let t = anykv_server::tenant::TenantId(id);
        self.shared.catalog().get(t).is_some() || self.shared.remote_catalog().get(t).is_some()
    }

    /// The catalog version held for tenant `id` (0: never seen).
    pub fn version_of(&self, id: u64) -> u64 {
        self.store
            .lock()
            .get(Table::Tenants, &id.to_string())
            .map_or(0, |r| r.version.seq)
    }

    /// The nodes that hold tenant `id` by its role record (None: no record
    /// yet, e.g. a new tenant its primary has not placed).
    pub fn holders(&self, id: u64) -> Option<Vec<String>> {
        let (_, roles, _) = self.tables();
        roles
            .get(&id)
            .map(|r| r.holders().into_iter().map(String::from).collect())
    }

    /// The regions tenant `id` asks for (its primary region and read
    /// regions) where no live node holds it yet: no node placed there so
    /// far, or the one placed there is down. Empty for a tenant not in the
    /// catalog.
    pub fn missing_regions(&self, id: u64) -> Vec<String> {
        let (entries, roles, _) = self.tables();
        let Some(e) = entries.get(&id) else {
            return Vec::new();
        };
        let view = self.view.borrow().clone();
        let alive = |m: &str| {
            view.member(m)
                .is_some_and(|v| v.me || v.state == MemberState::Alive)
        };
        let record = roles.get(&id);
        std::iter::once(&e.primary_region)
            .chain(e.read_regions.iter())
            .filter(|r| match record {
                None => true,
                Some(rec) if *r == &e.primary_region => !alive(&rec.primary),
                Some(rec) => !rec.replicas.get(*r).is_some_and(|m| alive(m)),
            })
            .cloned()
            .collect()
    }

    /// For each of `machines`: (machine, has applied the change, is
    /// alive). The change is tenant `id` at catalog `version`, or (None)
    /// its deletion: applied once the node no longer serves it.
    pub fn applied(
        &self,
        machines: &[String],
        id: u64,
        version: Option<u64>,
    ) -> Vec<(String, bool, bool)> {
        let view = self.view.borrow().clone();
        let nodes = self.store.lock().nodes();
        let done = |versions: &[(u64, u64)]| {
            let held = versions.iter().find(|(t, _)| *t == id).map(|(_, v)| *v);
            match version {
                Some(v) => held.is_some_and(|h| h >= v),
                None => held.is_none(),
            }
        };
        machines
            .iter()
            .map(|m| {
                let applied = if *m == self.me {
                    done(&self.applied.lock())
                } else {
                    nodes
                        .iter()
                        .find(|n| &n.machine == m)
                        .is_some_and(|n| done(&n.tenant_versions))
                };
                let alive = view
                    .member(m)
                    .is_some_and(|v| v.me || v.state == MemberState::Alive);
                (m.clone(), applied, alive)
            })
            .collect()
    }

    /// What keeps this node from being ready for the next machine of a
    /// rolling deploy to stop (`GET /ready`): a catalog older than one an
    /// alive member has applied (just started, it has not synced the
    /// cluster's state yet, so it does not know what it holds); each
    /// database whose record
    /// names this node and whose copy here is not loaded, not streaming
    /// from its primary with a sync done since the node started, or, as
    /// the standby under its region's controller group, not yet one the
    /// group's leader would hand the primary to (a planned handoff on
    /// SIGTERM gives a primary only to an in-sync standby that holds its
    /// data; without a group nothing marks it); and, in a grouped region,
    /// any database whose primary is here without an in-sync standby
    /// (the region could not lose another machine). Empty: ready.
    pub fn not_ready(&self) -> Vec<String> {
        let (entries, mut roles, version) = self.tables();
        self.merge_group_records(&entries, &mut roles);
        let mut waiting = Vec::new();
        let view = self.view.borrow().clone();
        let alive = |m: &&anykv_gossip::node::MemberView| m.me || m.state == MemberState::Alive;
        let newest = view
            .members
            .iter()
            .filter(|m| !m.me && m.state == MemberState::Alive)
            .filter_map(|m| m.meta.as_ref().map(|x| x.catalog_version))
            .max()
            .unwrap_or(0);
        // A node that knows of others (their metadata, or records naming
        // them, from its volume) but sees none alive has not joined again.
        let knows_others = self
            .store
            .lock()
            .nodes()
            .iter()
            .any(|n| n.machine != self.me)
            || roles
                .values()
                .any(|r| r.holders().iter().any(|h| *h != self.me.as_str()));
        if knows_others
            && !view
                .members
                .iter()
                .any(|m| !m.me && m.state == MemberState::Alive)
        {
            waiting.push("no other member of the cluster is alive here yet: still joining".into());
        }
        // A region whose controller group formed (as its members' metadata,
        // this node's own included, shows it; a restarted member's group
        // state is on its volume).
        let grouped = |region: &str| {
            view.members
                .iter()
                .filter(alive)
                .filter(|m| m.region == region)
                .filter_map(|m| m.meta.as_ref()?.controller.as_ref())
                .any(|c| c.initialized && c.voters.len() >= anykv_gossip::controller::MIN_VOTERS)
        };
        if version < newest {
            waiting.push(format!(
                "the catalog here is at version {version}, the cluster's at {newest}: still syncing the cluster's state"
            ));
        }
        let local = self.shared.repl_status.lock().clone();
        for rec in roles.values() {
            let (Some(entry), Some(role)) = (entries.get(&rec.tenant), rec.role_of(&self.me))
            else {
                continue;
            };
            let db = format!("database {} ({})", rec.tenant, entry.name);
            let Some(st) = local.get(&TenantId(rec.tenant)) else {
                waiting.push(format!("{db}: not loaded here yet"));
                continue;
            };
            if role == Held::Primary {
                continue;
            }
            if st.link_up != Some(true) || !st.synced_since_start {
                waiting.push(format!(
                    "{db}: the copy here has not synced from its primary since this node started"
                ));
            } else if grouped(&entry.primary_region)
                && rec.standby.as_deref() == Some(self.me.as_str())
                && !self
                    .controller
                    .as_ref()
                    .and_then(|c| c.standby_ready(rec.tenant))
                    .unwrap_or(rec.in_sync.as_deref() == Some(self.me.as_str()))
            {
                // As the group's leader counts it at this node's last
                // renewal (its record here may be behind the leader's).
                waiting.push(format!(
                    "{db}: the standby here is not yet one the controller would hand the primary to (in sync, holding its data, reported synced by the primary)"
                ));
            }
        }
        // The region can lose another machine: every database whose
        // primary is in this (grouped) region has an in-sync standby, so a
        // SIGTERM of its primary's node hands it over (after a handoff the
        // new standby is a third node, which syncs from nothing).
        if grouped(&self.region) {
            for rec in roles.values() {
                let Some(entry) = entries.get(&rec.tenant) else {
                    continue;
                };
                if entry.primary_region == self.region
                    && rec.standby.is_some()
                    && rec.in_sync != rec.standby
                {
                    waiting.push(format!(
                        "database {} ({}): its standby {} is not in sync yet, so its primary could not be handed over",
                        rec.tenant,
                        entry.name,
                        rec.standby.as_deref().unwrap_or_default()
                    ));
                }
            }
        }
        waiting
    }

    /// Every tenant of the catalog with its roles and each replica's
    /// position: this node's own from its store, the others' as their
    /// metadata last reported it (a few seconds old at most).
    pub fn tenant_views(&self) -> Vec<catalog::TenantView> {
        let (entries, roles, _) = self.tables();
        let view = self.view.borrow().clone();
        let nodes = self.store.lock().nodes();
        let local = self.shared.repl_status.lock().clone();
        let position = |machine: &str, id: u64| -> (Option<u64>, Option<i64>) {
            if machine == self.me {
                return local
                    .get(&TenantId(id))
                    .map_or((None, None), |s| (Some(s.offset), s.master_lag_ms));
            }
            nodes
                .iter()
                .find(|n| n.machine == machine)
                .and_then(|n| n.tenants.iter().find(|t| t.id == id))
                .map_or((None, None), |t| (Some(t.offset), t.lag_ms))
        };
        let region_of = |m: &str| view.member(m).map(|v| v.region.clone()).unwrap_or_default();
        let mut out = Vec::new();
        for e in entries.values() {
            let Some(rec) = roles.get(&e.id) else {
                continue;
            };
            let replica = |m: &str| {
                let (offset, lag_ms) = position(m, e.id);
                catalog::ReplicaView {
                    node: m.to_string(),
                    region: region_of(m),
                    offset,
                    lag_ms,
                }
            };
            let mut replicas: Vec<catalog::ReplicaView> =
                rec.standby.as_deref().map(replica).into_iter().collect();
            replicas.extend(rec.replicas.values().map(|m| replica(m)));
            out.push(catalog::TenantView {
                name: e.name.clone(),
                id: e.id,
                epoch: rec.epoch,
                primary: rec.primary.clone(),
                standby: rec.standby.clone(),
                in_sync: rec.in_sync.clone(),
                offset: position(&rec.primary, e.id).0,
                replicas,
                primary_region: e.primary_region.clone(),
                read_regions: e.read_regions.clone(),
                version: e.version,
            });
        }
        out
    }

    /// Merges this region's group's committed records into `roles`: for
    /// the region's own tenants, each wins where it is newer by `(epoch,
    /// seq)` (a newer table record, a forced promotion, stays). Returns
    /// the records that won, for publishing.
    fn merge_group_records(
        &self,
        entries: &BTreeMap<u64, TenantEntry>,
        roles: &mut BTreeMap<u64, RoleRecord>,
    ) -> Vec<RoleRecord> {
        let mut won = Vec::new();
        let group = self
            .controller
            .as_ref()
            .filter(|c| c.region_formed() && c.formed());
        for rec in group
            .map(|c| c.roles().records)
            .unwrap_or_default()
            .into_values()
        {
            let ours = entries
                .get(&rec.tenant)
                .is_some_and(|e| e.primary_region == self.region);
            let newer = roles
                .get(&rec.tenant)
                .is_none_or(|g| (g.epoch, g.seq) < (rec.epoch, rec.seq));
            if ours && newer {
                roles.insert(rec.tenant, rec.clone());
                won.push(rec);
            }
        }
        won
    }

    /// Syncs with `machines` now (the admin call's wait: pushes the change,
    /// pulls their applied versions).
    pub async fn sync_with(&self, machines: &[String]) {
        let view = self.view.borrow().clone();
        let peers: Vec<SocketAddr> = machines
            .iter()
            .filter(|m| **m != self.me)
            .filter_map(|m| self.link_addr(&view, m))
            .collect();
        // All at once: the caller bounds the wait, one slow or lossy link
        // must not hold up the others.
        let mut set = tokio::task::JoinSet::new();
        for p in peers {
            let syncer = self.wan.syncer.clone();
            set.spawn(async move { syncer.sync_with(p).await });
        }
        while set.join_next().await.is_some() {}
    }
}

/// What a forced promotion did, and what it may have lost (the answer of
/// `POST /admin/tenants/{id}/promote`; docs/FAILOVER.md).
#[derive(Debug, serde::Serialize)]
pub struct Forced {
    pub tenant: u64,
    pub primary: String,
    pub region: String,
    pub epoch: u64,
    pub old_primary: String,
    /// The promoted node's offset when it was promoted.
    pub offset: u64,
    /// The old primary's and standby's offsets as they last reported them
    /// (every few seconds; None: never reported).
    pub old_primary_offset: Option<u64>,
    pub standby_offset: Option<u64>,
    /// Bytes of the stream those reports had beyond the promoted node:
    /// writes that may be lost (more if the dead ones wrote after their
    /// last report). With durability `region` the acknowledged ones are
    /// the standby's; with `async`, the primary's.
    pub lost_bytes_at_least: u64,
    /// `lost_bytes_at_least` in writes, at this database's average write
    /// size in the promoted node's backlog.
    pub lost_writes_estimate: Option<u64>,
    /// What happens next.
    pub note: String,
}

/// Why a forced promotion was refused.
#[derive(Debug, thiserror::Error)]
pub enum ForceError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
}

/// `rec` with `primary` the primary, two epochs up (a controller that
/// promoted from the same record meanwhile, unseen here across a
/// partition, committed epoch + 1 at seq 0 too; an operator's record must
/// win everywhere, never tie with it), not in sync with anyone yet and no
/// longer a replica.
fn taken_over(rec: &RoleRecord, primary: &str) -> RoleRecord {
    let mut next = rec.clone();
    next.epoch = rec.epoch + 2;
    next.seq = 0;
    next.primary = primary.to_string();
    next.in_sync = None;
    next.handoff = None;
    // (A node of the old region named for a planned handoff there.)
    next.next_standby = None;
    next.replicas.retain(|_, m| m != primary);
    next
}

/// `entry` with `to` as its primary region, the old one a read region,
/// one version up.
fn moved_entry(entry: &TenantEntry, to: &str) -> TenantEntry {
    let mut e = entry.clone();
    e.read_regions.retain(|r| r != to);
    if !e.read_regions.contains(&entry.primary_region) {
        e.read_regions.push(entry.primary_region.clone());
    }
    e.primary_region = to.to_string();
    e.version += 1;
    e
}

/// A planned move of a database's primary to another region
/// ([`Placement::move_primary`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Moved {
    pub tenant: u64,
    pub from: String,
    pub primary: String,
    pub region: String,
    pub epoch: u64,
    /// Where the old primary stopped: the new primary takes writes once it
    /// has applied the stream up to there.
    pub offset: u64,
    /// How long writes were held before the move was published, ms (they
    /// then go to the new primary: about one round trip more).
    pub held_ms: u64,
}

impl Placement {
    /// Tenant `id`'s catalog entry and its newest role record (this
    /// region's controller's included).
    fn entry_and_record(&self, id: u64) -> Result<(TenantEntry, RoleRecord), ForceError> {
        let (entries, mut roles, _) = self.tables();
        self.merge_group_records(&entries, &mut roles);
        let entry = entries
            .get(&id)
            .ok_or_else(|| ForceError::NotFound(format!("no database {id} in the catalog")))?;
        let rec = roles.get(&id).ok_or_else(|| {
            ForceError::NotFound(format!("database {id} is not placed on any node yet"))
        })?;
        Ok((entry.clone(), rec.clone()))
    }

    /// Moves tenant `id`'s primary from this node (its primary) to its
    /// replica in region `to`, with nothing acknowledged lost, holding
    /// writes about one round trip to `to`:
    ///
    /// 1. writes flowing, it waits until that replica has acknowledged the
    ///    offset the move began at (it is attached, streaming and close);
    /// 2. it stops taking writes (they wait, as in a planned failover) and
    ///    freezes its log (no expiry, eviction or PING appends), whose
    ///    offset now stands still;
    /// 3. at once it publishes the database's catalog entry with `to` as
    ///    its primary region (the old one becomes a read region, version
    ///    one up) and a role record two epochs up (so it wins over anything
    ///    the old region's controller committed meanwhile) with the replica
    ///    as primary, this node as the old region's replica, and the
    ///    handoff: the offset where this node stopped. The replica takes
    ///    writes only once it has applied this node's stream up to there
    ///    (`repl::replica::promote_at`; the bytes are already on their way,
    ///    ahead of the record), and holds the writes sent to it meanwhile.
    ///
    /// This node follows the new primary as soon as the record is applied
    /// here, and its held writes go there at once: a write held by the move
    /// costs about one round trip to `to`, not two (the replica's
    /// acknowledgement, then the forward). The new region's controller
    /// adopts the record (and gives the primary a standby there), the old
    /// one drops it. Refused (nothing changed, writes resumed) when there
    /// is no replica in `to` or it does not catch up within `timeout`.
    pub async fn move_primary(
        &self,
        id: u64,
        to: &str,
        timeout: Duration,
    ) -> Result<Moved, ForceError> {
        let (entry, rec) = self.entry_and_record(id)?;
        let (entry, rec) = (&entry, &rec);
        if rec.primary != self.me {
            return Err(ForceError::Refused(format!(
                "{} is database {id}'s primary, not {}",
                rec.primary, self.me
            )));
        }
        if entry.primary_region == to {
            return Err(ForceError::Refused(format!(
                "{to} already is database {id}'s primary region"
            )));
        }
        let Some(target) = rec.replicas.get(to).cloned() else {
            return Err(ForceError::Refused(format!(
                "database {id} has no replica in {to}: add {to} to its read regions first and let the replica catch up"
            )));
        };
        let ip = {
            let view = self.view.borrow();
            match view.member(&target) {
                Some(m) if m.state == MemberState::Alive => m.addr.ip(),
                _ => {
                    return Err(ForceError::Refused(format!(
                        "database {id}'s replica in {to}, {target}, is not alive"
                    )))
                }
            }
        };
        let tenant = TenantId(id);
        let deadline = tokio::time::Instant::now() + timeout;
        let not_caught_up = || {
            ForceError::Refused(format!(
                "database {id}'s replica {target} in {to} did not acknowledge everything within {} ms; nothing moved, writes resumed",
                timeout.as_millis()
            ))
        };
        // 1. The replica catches up with writes flowing.
        let mut began: Option<u64> = None;
        loop {
            let st = tokio::time::timeout_at(deadline, self.shared.probe(tenant))
                .await
                .ok()
                .flatten();
            if let Some(st) = st {
                let since = *began.get_or_insert(st.offset);
                if st.acked_by(ip).is_some_and(|a| a >= since) {
                    break;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(not_caught_up());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // 2. Writes held, the log frozen where it stands.
        let started = std::time::Instant::now();
        let hold = timeout + anykv_server::shared::HOLD_GRACE;
        self.shared.release_lease(id, rec.epoch, hold);
        let frozen_until = anykv_server::util::mstime()
            .saturating_add(i64::try_from(hold.as_millis()).unwrap_or(i64::MAX));
        let resume = || async {
            self.shared.retake_lease(id);
            self.shared.freeze(tenant, 0).await;
        };
        let Some(st) = self.shared.freeze(tenant, frozen_until).await else {
            resume().await;
            return Err(not_caught_up());
        };
        let offset = st.offset;
        tracing::warn!(tenant = id, to, %target, offset, "moving the primary: writes held");
        // 3. The move published, with where this node stopped.
        let e = moved_entry(entry, to);
        let mut next = taken_over(rec, &target);
        next.handoff = Some(catalog::Handoff {
            epoch: next.epoch,
            offset,
        });
        next.standby = None;
        next.replicas
            .insert(entry.primary_region.clone(), self.me.clone());
        tracing::warn!(
            tenant = id,
            to,
            primary = %target,
            epoch = next.epoch,
            offset,
            held_ms = started.elapsed().as_millis() as u64,
            "primary moved to another region"
        );
        if !self.wan.publisher.publish(vec![e.row(), next.row()]) {
            // Nothing left this node: the move did not happen.
            resume().await;
            return Err(ForceError::Refused(format!(
                "database {id}'s move could not be published (this node's gossip has stopped); nothing moved, writes resumed"
            )));
        }
        self.kick();
        Ok(Moved {
            tenant: id,
            from: self.me.clone(),
            primary: target,
            region: to.to_string(),
            epoch: next.epoch,
            offset,
            held_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Why promoting `to` by force must not happen, as this node sees it:
    /// `to` already is the primary, or the primary or an in-sync standby
    /// other than `to` is alive here (a failover loses nothing then). The
    /// node an operator asks checks this before passing the request on,
    /// and `to` checks again: a target cut off from a live primary (which
    /// its SWIM soon calls dead) is not enough to force anything.
    pub fn refuse_forcing(&self, id: u64, to: &str) -> Result<(), ForceError> {
        let (_, rec) = self.entry_and_record(id)?;
        let view = self.view.borrow().clone();
        let alive = |m: &str| {
            view.member(m)
                .is_some_and(|v| v.me || v.state == MemberState::Alive)
        };
        if rec.primary == to {
            return Err(ForceError::Refused(format!(
                "{to} already is database {id}'s primary"
            )));
        }
        if alive(&rec.primary) {
            return Err(ForceError::Refused(format!(
                "database {id}'s primary {} is alive (as {} sees it): use `anykv cluster failover {id}`, which loses nothing",
                rec.primary, self.me
            )));
        }
        if let Some(s) = rec.in_sync.as_deref().filter(|s| *s != to && alive(s)) {
            return Err(ForceError::Refused(format!(
                "database {id}'s in-sync standby {s} is alive (as {} sees it): its region's controller promotes it with nothing lost (or force {s} itself)",
                self.me
            )));
        }
        Ok(())
    }

    /// The operator's forced promotion of this node to primary of tenant
    /// `id`, for when every in-sync copy is gone: refused while the primary
    /// or an in-sync standby other than this node is alive (a failover
    /// loses nothing then) or when this node holds no copy. The role record
    /// goes to the next epoch with this node as primary, written to the
    /// state tables (a region controller without a majority could not
    /// commit it; one with a majority adopts it: records merge by epoch).
    /// When this node is in another region, the database's primary region
    /// moves here (the catalog's entry, one version up; the old primary
    /// region becomes a read region and keeps the old standby as its
    /// replica). Logged, counted (`anykv_forced_promotions_total`), and
    /// answered with what may have been lost.
    pub async fn force_promote(&self, id: u64) -> Result<Forced, ForceError> {
        self.refuse_forcing(id, &self.me)?;
        let (entry, rec) = self.entry_and_record(id)?;
        let (entry, rec) = (&entry, &rec);
        if !rec.holders().contains(&self.me.as_str()) {
            return Err(ForceError::Refused(format!(
                "{} holds no copy of database {id} (its holders: {}); force one of them",
                self.me,
                rec.holders().join(", ")
            )));
        }
        let status = self
            .shared
            .probe_with(TenantId(id), true)
            .await
            .ok_or_else(|| {
                ForceError::Refused(format!(
                    "{} does not serve database {id} yet; retry in a moment",
                    self.me
                ))
            })?;
        let reported = {
            let nodes = self.store.lock().nodes();
            move |m: &str| {
                nodes
                    .iter()
                    .find(|n| n.machine == m)
                    .and_then(|n| n.tenants.iter().find(|t| t.id == id))
                    .map(|t| t.offset)
            }
        };
        let old_primary_offset = reported(&rec.primary);
        let standby_offset = rec.standby.as_deref().and_then(&reported);
        let ahead = [old_primary_offset, standby_offset]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0);
        let lost_bytes_at_least = ahead.saturating_sub(status.offset);
        let my_region = self
            .view
            .borrow()
            .member(&self.me)
            .map(|m| m.region.clone())
            .unwrap_or_default();
        let mut next = taken_over(rec, &self.me);
        let mut rows = Vec::new();
        let moved = my_region != entry.primary_region;
        if moved {
            let e = moved_entry(entry, &my_region);
            if let Some(s) = rec.standby.clone().filter(|s| *s != self.me) {
                next.replicas.insert(entry.primary_region.clone(), s);
            }
            next.standby = None;
            rows.push(e.row());
        } else if next.standby.as_deref() == Some(self.me.as_str()) {
            next.standby = None;
        }
        rows.push(next.row());
        let note = if moved {
            format!(
                "database {id}'s primary region is now {my_region}; {} is a read region",
                entry.primary_region
            )
        } else if self.controller.as_ref().is_some_and(|c| c.region_formed()) {
            format!(
                "{} takes writes once {my_region}'s controller has a majority to adopt the record and grant its lease",
                self.me
            )
        } else {
            format!("{} takes writes now", self.me)
        };
        tracing::warn!(
            tenant = id,
            old = %rec.primary,
            new = %self.me,
            epoch = next.epoch,
            lost_bytes_at_least,
            "FORCED PROMOTION by the operator: {note}"
        );
        metrics::counter!("anykv_forced_promotions_total").increment(1);
        let _ = self.wan.publisher.publish(rows);
        self.kick();
        Ok(Forced {
            tenant: id,
            primary: self.me.clone(),
            region: my_region,
            epoch: next.epoch,
            old_primary: rec.primary.clone(),
            offset: status.offset,
            old_primary_offset,
            standby_offset,
            lost_bytes_at_least,
            lost_writes_estimate: status
                .avg_write_bytes
                .filter(|b| *b > 0)
                .map(|b| lost_bytes_at_least.div_ceil(b)),
            note,
        })
    }
}
