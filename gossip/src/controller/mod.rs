//! The region's controller: a Raft group of the region's nodes (openraft)
//! whose replicated state is the role record of every tenant whose primary
//! region this is (`Roles`). Only the group's leader changes a record, by
//! committing it; that is what makes an epoch mean one primary (the design
//! is Kafka's KRaft: a controller quorum assigns leaders with epochs).
//!
//! - Storage: the Raft log, vote and snapshots in SQLite on the node's
//!   volume ([`log`]); the records in memory, rebuilt from the snapshot and
//!   the committed log at start ([`machine`]).
//! - Network: Raft's RPCs on the cluster's QUIC connections ([`net`]).
//! - Membership: the group forms once the region has [`ControllerConfig::
//!   min_voters`] alive nodes (3: with fewer there is no majority that
//!   survives a failure, and automatic promotion is refused rather than
//!   unsafe; the cluster view says so). The smallest machine name of the
//!   region initialises it, and only when every alive node of the region
//!   reports the same set of nodes, none of them in a group yet, for
//!   [`STABLE_FOR`] (two nodes initialising different groups would each
//!   believe its own). Nodes that come later are added by the leader, as
//!   learners first, then voters; members gone for
//!   [`ControllerConfig::remove_after`] are removed (voters only while
//!   more than `min_voters` remain).
//! - Every node publishes what it sees of its group in its gossip
//!   metadata ([`ControllerMeta`]), so `/cluster` shows every region's
//!   group from any node.

pub mod clock;
pub mod lease;
pub mod log;
pub mod machine;
pub mod net;
pub mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Raft, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::catalog::RoleRecord;
use crate::node::{ClusterView, MemberState, MetaUpdater};
use crate::sync::Syncer;
pub use machine::Roles;
pub use types::{node_id, Command, Outcome, Peer, TypeConfig};

/// Alive nodes a region needs for its group (and automatic promotion): a
/// majority of 3 survives one failure; 2 would need both.
pub const MIN_VOTERS: usize = 3;

/// How long the region's view must hold still before a group is formed.
pub const STABLE_FOR: Duration = Duration::from_secs(2);

/// How long a leaving leader's transfer of its leadership may take, once
/// its vote is free to go (see [`Controller::transfer_leadership`]).
const TRANSFER_TIME: Duration = Duration::from_secs(1);

/// How often the controller looks at membership and publishes its state.
const TICK: Duration = Duration::from_millis(300);

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("controller database: {0}")]
    Db(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("this node is not the controller's leader (leader: {0:?})")]
    NotLeader(Option<String>),
}

/// What a node needs to run its region's controller.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// The node's directory (the database is `controller.db` in it).
    pub dir: PathBuf,
    pub machine: String,
    pub region: String,
    /// Every node's sync (QUIC) port: Raft's RPCs go there.
    pub sync_port: u16,
    /// Alive nodes a region needs before its group forms.
    pub min_voters: usize,
    /// Leader heartbeat; elections start after 4–8 of them without one.
    pub heartbeat: Duration,
    /// A primary's lease ([`lease`]): renewed about three times per period;
    /// a primary that has not renewed for a whole period is replaced.
    pub lease: Duration,
    /// A member not alive for this long leaves the group (voters only
    /// while at least `min_voters` others remain).
    pub remove_after: Duration,
    /// A planned handoff's whole time (the node's `--handoff-timeout-ms`):
    /// the controller does not use it, the node's handoffs do.
    pub handoff: Duration,
}

/// What a node says of its region's controller in its gossip metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerMeta {
    /// The region's alive nodes as this node sees them (sorted).
    pub region_view: Vec<String>,
    /// This node is in a group (it has a vote or a log).
    pub initialized: bool,
    pub state: String,
    pub term: u64,
    pub leader: Option<String>,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    /// The last log index applied to its records.
    pub applied: Option<u64>,
    /// Role records the group holds, as applied here.
    pub records: usize,
}

/// One node's controller.
pub struct Controller {
    raft: Raft<TypeConfig>,
    machine: machine::Machine,
    cfg: ControllerConfig,
    view: watch::Receiver<Arc<ClusterView>>,
    syncer: Syncer,
    /// The leader's record of lease renewals.
    leases: parking_lot::Mutex<lease::Leases>,
    /// The database held a vote at start: this node was in a group before
    /// (known before Raft's first metrics arrive).
    was_formed: bool,
    /// As the leader: since when each member of the group has not been
    /// alive (see [`ControllerConfig::remove_after`]).
    absent: parking_lot::Mutex<BTreeMap<u64, Instant>>,
    /// As the leader: since when each tenant's in-sync standby has not been
    /// reported synced by its primary (see `note_synced`).
    unsynced: parking_lot::Mutex<BTreeMap<u64, Instant>>,
    /// The last lease this node was granted: when, and the tenants it may
    /// be handed as their standby (`lease::Grant::standby_of`; None from an
    /// older leader).
    granted: parking_lot::Mutex<Option<(Instant, Option<Vec<u64>>)>>,
    /// Records another region's leader announced to this node (see
    /// [`Controller::announcements`]).
    announced: tokio::sync::broadcast::Sender<RoleRecord>,
}

impl Controller {
    /// Opens the database, starts Raft, serves the group's RPCs and starts
    /// the membership loop (which also publishes [`ControllerMeta`]).
    pub async fn start(
        cfg: ControllerConfig,
        syncer: &Syncer,
        view: watch::Receiver<Arc<ClusterView>>,
        meta: MetaUpdater,
    ) -> Result<Arc<Controller>, ControllerError> {
        std::fs::create_dir_all(&cfg.dir).map_err(|e| ControllerError::Db(e.to_string()))?;
        let db = log::Db::open(&cfg.dir.join("controller.db"))
            .map_err(|e| ControllerError::Db(e.to_string()))?;
        let machine = machine::Machine::open(db.clone()).map_err(ControllerError::Db)?;
        let vote = db
            .get::<openraft::Vote<u64>>("vote")
            .map_err(ControllerError::Db)?;
        let was_formed = vote.is_some();
        let hb = cfg.heartbeat.as_millis().max(10) as u64;
        let config = openraft::Config {
            cluster_name: format!("anykv-{}", cfg.region),
            heartbeat_interval: hb,
            election_timeout_min: hb * 4,
            election_timeout_max: hb * 8,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ControllerError::Raft(e.to_string()))?;
        // The leases' election credit: the shortest election timeout.
        let credit = Duration::from_millis(config.election_timeout_min);
        let mut leases = lease::Leases::new(credit);
        // Led the group when it stopped: openraft restarts it as the
        // leader of the same term, with no election (`Engine::startup`),
        // so nothing made the voters wait out an election timeout since
        // the leases its last run granted.
        if let Some(v) = vote.filter(|v| {
            v.is_committed() && v.leader_id().voted_for() == Some(node_id(&cfg.machine))
        }) {
            leases.resume(v.leader_id().get_term());
        }
        let region: Arc<str> = cfg.region.as_str().into();
        let network = net::Network {
            syncer: syncer.clone(),
            region: region.clone(),
        };
        let raft = Raft::new(
            node_id(&cfg.machine),
            Arc::new(config),
            network,
            log::LogStore::new(db),
            machine.clone(),
        )
        .await
        .map_err(|e| ControllerError::Raft(e.to_string()))?;
        let c = Arc::new(Controller {
            raft,
            machine,
            cfg,
            view,
            syncer: syncer.clone(),
            leases: parking_lot::Mutex::new(leases),
            was_formed,
            absent: Default::default(),
            unsynced: Default::default(),
            granted: Default::default(),
            announced: tokio::sync::broadcast::channel(256).0,
        });
        {
            let weak = Arc::downgrade(&c);
            syncer.set_raft_handler(Arc::new(move |send, recv| {
                tokio::spawn(net::serve(weak.clone(), region.clone(), send, recv));
            }));
        }
        tokio::spawn(membership_loop(Arc::downgrade(&c), meta));
        tokio::spawn(announce_loop(Arc::downgrade(&c)));
        tracing::info!(
            region = %c.cfg.region,
            id = node_id(&c.cfg.machine),
            "controller started"
        );
        Ok(c)
    }

    /// The records as this node has applied them.
    pub fn roles(&self) -> Roles {
        self.machine.roles()
    }

    /// Tenant `tenant`'s record as this node has applied it.
    pub fn record(&self, tenant: u64) -> Option<RoleRecord> {
        self.machine.record(tenant)
    }

    /// Role records of other regions' databases that their leader
    /// announced to this node, a read-region replica of them, right after
    /// committing a new primary: the node applies each that is newer than
    /// its own copy at once, rather than when the state sync brings it.
    pub fn announcements(&self) -> tokio::sync::broadcast::Receiver<RoleRecord> {
        self.announced.subscribe()
    }

    /// A record another region's leader announced (see
    /// [`Controller::announcements`]).
    pub(crate) fn take_announcement(&self, rec: RoleRecord) {
        tracing::info!(
            tenant = rec.tenant,
            epoch = rec.epoch,
            primary = %rec.primary,
            "role record announced by its region's leader"
        );
        let _ = self.announced.send(rec);
    }

    /// Changes whenever the applied records change.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.machine.watch()
    }

    /// Whether this node is in its region's group (it formed, and this
    /// node has been in it).
    pub fn formed(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        self.was_formed || m.vote.leader_id().term > 0 || m.last_log_index.is_some()
    }

    /// Whether this node's region has a group, as this node or any alive
    /// node of the region reports: then its tenants' primaries need leases
    /// (a node that has not joined the group yet gets none, and writes
    /// nothing, rather than write without one).
    pub fn region_formed(&self) -> bool {
        if self.formed() {
            return true;
        }
        let view = self.view.borrow();
        view.members.iter().any(|m| {
            m.region == self.cfg.region
                && m.state == MemberState::Alive
                && m.meta
                    .as_ref()
                    .and_then(|meta| meta.controller.as_ref())
                    .is_some_and(|c| c.initialized)
        })
    }

    /// As the leader: grants `machine` its lease (the tenants it is
    /// primary of, at their epochs).
    pub async fn grant(
        &self,
        machine: &str,
        synced: &[lease::Synced],
        applied: Option<u64>,
    ) -> Result<lease::Grant, lease::Refused> {
        let refused = |c: &Controller| lease::Refused {
            leader: c
                .raft
                .metrics()
                .borrow()
                .current_leader
                .map(|id| c.machine_of(id)),
        };
        // Still the leader of a majority (openraft's leader does not step
        // down by itself when cut off), and every committed record applied
        // here (a new leader must not grant from an older state).
        let confirm = tokio::time::timeout(self.cfg.lease / 4, self.raft.ensure_linearizable());
        if !matches!(confirm.await, Ok(Ok(_))) {
            return Err(refused(self));
        }
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Err(refused(self));
        }
        let primaries = {
            let mut l = self.leases.lock();
            l.renew(machine, Instant::now());
            l.note_applied(machine, applied);
            l.note_unsynced(
                machine,
                synced
                    .iter()
                    .filter(|s| s.restarted)
                    .map(|s| s.tenant)
                    .collect(),
            );
            // A tenant whose promotion is under way is no longer the old
            // primary's to write, even if it renews meanwhile.
            self.machine
                .roles()
                .records
                .values()
                .filter(|r| r.primary == machine && !l.promoting(r.tenant, r.epoch))
                .map(|r| (r.tenant, r.epoch))
                .collect()
        };
        self.note_synced(machine, synced).await;
        let standby_of = {
            let l = self.leases.lock();
            let unsynced = self.unsynced.lock();
            self.machine
                .roles()
                .records
                .values()
                .filter(|r| r.standby.as_deref() == Some(machine) && r.in_sync == r.standby)
                .filter(|r| l.holds(machine, r.tenant) && !unsynced.contains_key(&r.tenant))
                .map(|r| r.tenant)
                .collect()
        };
        let standby_of = Some(standby_of);
        Ok(lease::Grant {
            term: m.current_term,
            duration_ms: self.cfg.lease.as_millis() as u64,
            primaries,
            standby_of,
        })
    }

    /// As the leader: commits, for each tenant `machine` is primary of,
    /// that its standby is in sync once the primary reports it synced (a
    /// replica that completed its sync, streaming and acknowledging). Only
    /// such a standby is ever promoted. With durability `async`, a standby
    /// the primary has not reported synced for a whole lease period (its
    /// link is down, or it is syncing again) leaves the in-sync set, as a
    /// lagging follower leaves Kafka's ISR: promoting it would lose the
    /// writes acknowledged since. (With `region` every acknowledged write
    /// waited for it, so it stays.)
    async fn note_synced(&self, machine: &str, synced: &[lease::Synced]) {
        let records = self.machine.roles().records;
        let now = Instant::now();
        for s in synced {
            let Some(rec) = records.get(&s.tenant) else {
                continue;
            };
            let Some(sb) = rec.standby.as_deref() else {
                continue;
            };
            if rec.primary != machine {
                continue;
            }
            let reported = s.replicas.iter().any(|r| r == sb);
            let in_sync = rec.in_sync.as_deref() == Some(sb);
            let next_in_sync = if reported {
                self.unsynced.lock().remove(&s.tenant);
                if in_sync {
                    continue;
                }
                Some(sb.to_string())
            } else {
                let since = *self.unsynced.lock().entry(s.tenant).or_insert(now);
                if !in_sync || s.durable || now.duration_since(since) < self.cfg.lease {
                    continue;
                }
                None
            };
            let mut next = rec.clone();
            next.in_sync = next_in_sync.clone();
            next.seq += 1;
            let cmd = Command::PutRole {
                expect: Some((rec.epoch, rec.seq)),
                record: next,
            };
            match self.propose(cmd).await {
                Ok(o) if o.applied && next_in_sync.is_some() => {
                    tracing::info!(tenant = s.tenant, standby = %sb, "controller: standby in sync")
                }
                Ok(o) if o.applied => {
                    self.unsynced.lock().remove(&s.tenant);
                    tracing::warn!(tenant = s.tenant, standby = %sb, "controller: standby out of sync (not streaming for a lease period); it will not be promoted until it is again")
                }
                Ok(_) => {}
                Err(e) => tracing::debug!("controller: noting a standby's sync: {e}"),
            }
        }
    }

    /// Renews this node's lease with the leader, reporting the replicas of
    /// its tenants that completed their sync (by address): when the
    /// request was sent (the lease counts from then) and the grant.
    pub async fn renew_lease(
        &self,
        synced: Vec<(u64, Vec<std::net::IpAddr>, bool)>,
        restarted: Vec<u64>,
    ) -> Result<(Instant, lease::Grant), String> {
        let synced: Vec<lease::Synced> = {
            let view = self.view.borrow();
            let restarted = restarted.into_iter().map(|tenant| lease::Synced {
                tenant,
                restarted: true,
                ..Default::default()
            });
            synced
                .into_iter()
                .map(|(tenant, ips, durable)| {
                    let replicas = ips
                        .iter()
                        .filter_map(|ip| {
                            view.members
                                .iter()
                                .find(|m| m.addr.ip() == *ip)
                                .map(|m| m.machine.clone())
                        })
                        .collect();
                    lease::Synced {
                        tenant,
                        replicas,
                        durable,
                        restarted: false,
                    }
                })
                .chain(restarted)
                .collect()
        };
        let sent = Instant::now();
        let m = self.raft.metrics().borrow().clone();
        let Some(leader) = m.current_leader else {
            return Err("the controller has no leader".into());
        };
        if leader == node_id(&self.cfg.machine) {
            // (The state machine's own index: Raft's metrics catch up
            // with an apply a moment later.)
            let applied = self.machine.roles().last_applied.map(|l| l.index);
            return self
                .grant(&self.cfg.machine, &synced, applied)
                .await
                .map(|g| self.granted(sent, g))
                .map_err(|e| e.to_string());
        }
        let addr = self.addr_of(&m, leader)?;
        match net::renew(
            &self.syncer,
            &self.cfg.region,
            addr,
            &self.cfg.machine,
            synced,
            self.machine.roles().last_applied.map(|l| l.index),
            self.cfg.lease / 4,
        )
        .await?
        {
            Ok(g) => Ok(self.granted(sent, g)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Notes a lease granted at `sent` (see [`Controller::standby_ready`]).
    fn granted(&self, sent: Instant, g: lease::Grant) -> (Instant, lease::Grant) {
        *self.granted.lock() = Some((sent, g.standby_of.clone()));
        (sent, g)
    }

    /// Whether the leader, at this node's last lease renewal (within two
    /// lease periods), counted it an in-sync standby of `tenant` that
    /// holds its data and that its primary reports synced: a planned
    /// handoff of `tenant` may give it this node now (`GET /ready`).
    /// None: the leader runs an older version that does not say (the
    /// caller falls back to the record).
    pub fn standby_ready(&self, tenant: u64) -> Option<bool> {
        let granted = self.granted.lock();
        let (at, of) = granted.as_ref()?;
        let of = of.as_ref()?;
        Some(at.elapsed() < self.cfg.lease * 2 && of.contains(&tenant))
    }

    /// As the leader: hands `tenant` from its primary `from` (which is
    /// leaving: it stopped writing and its standby has everything) to the
    /// in-sync standby, at the next epoch, with a new standby that is
    /// neither of them. Returns the committed record. Waits (a little) for
    /// the new primary to renew its lease, so a leaving leader does not
    /// take the only lease-granter away before the new primary has one.
    pub async fn hand_off(&self, tenant: u64, from: &str) -> Result<RoleRecord, String> {
        let rec = self.record_of_primary(tenant, from)?;
        let now = Instant::now();
        let alive = self.region_alive();
        let region: Vec<&str> = alive.keys().map(String::as_str).collect();
        let next = {
            let mut l = self.leases.lock();
            let fresh =
                |m: &str| m != from && alive.contains_key(m) && !l.lapsed(m, now, self.cfg.lease);
            let holds = |m: &str| l.holds(m, tenant);
            let next = lease::promote(&rec, &region, fresh, holds)
                .ok_or_else(|| format!("tenant {tenant} has no in-sync standby to hand over to"))?;
            l.begin_promotion(tenant, rec.epoch);
            next
        };
        let cmd = Command::PutRole {
            expect: Some((rec.epoch, rec.seq)),
            record: next.clone(),
        };
        let r = self.raft.client_write(cmd).await;
        self.leases.lock().end_promotion(tenant);
        let index = match r {
            Ok(w) if w.data.applied => w.log_id.index,
            Ok(_) => return Err("the record changed meanwhile".into()),
            Err(e) => return Err(e.to_string()),
        };
        metrics::counter!("anykv_controller_handoffs_total").increment(1);
        tracing::info!(tenant, from, to = %next.primary, epoch = next.epoch, "planned handoff committed");
        // Until the new primary has applied the record and renewed its
        // lease with it (its renewal says what it applied), or half a
        // period: a leaving leader must not go before then, or the new
        // primary would wait for the next leader to write.
        let end = Instant::now() + self.cfg.lease / 2;
        while Instant::now() < end {
            if self.leases.lock().has_applied(&next.primary, index) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(next)
    }

    /// `tenant`'s record, when `from` is its primary.
    fn record_of_primary(&self, tenant: u64, from: &str) -> Result<RoleRecord, String> {
        let rec = self
            .record(tenant)
            .ok_or_else(|| format!("no record for tenant {tenant}"))?;
        if rec.primary != from {
            return Err(format!("{from} is not tenant {tenant}'s primary"));
        }
        Ok(rec)
    }

    /// As the leader: names the node that will be `tenant`'s standby once
    /// its primary `from` hands it over (`RoleRecord::next_standby`),
    /// committing it at the next seq, so that node syncs a replica while
    /// writes go on rather than after the handoff, while they wait. Returns
    /// the node (None: the region has no node to name).
    pub async fn prepare_handoff(&self, tenant: u64, from: &str) -> Result<Option<String>, String> {
        // Once more if the record changed meanwhile (a standby reported in
        // sync, a repair): the warm-up is worth a second try.
        for _ in 0..2 {
            let rec = self.record_of_primary(tenant, from)?;
            let now = Instant::now();
            let alive = self.region_alive();
            let region: Vec<&str> = alive.keys().map(String::as_str).collect();
            let next = {
                let l = self.leases.lock();
                let fresh = |m: &str| {
                    m != from && alive.contains_key(m) && !l.lapsed(m, now, self.cfg.lease)
                };
                lease::next_standby(&rec, &region, fresh).map(str::to_string)
            };
            let Some(next) = next else {
                return Ok(None);
            };
            let Some(record) = lease::prepare_handoff(&rec, &next) else {
                // Named already.
                return Ok(Some(next));
            };
            let cmd = Command::PutRole {
                expect: Some((rec.epoch, rec.seq)),
                record,
            };
            match self.raft.client_write(cmd).await {
                Ok(w) if w.data.applied => {
                    self.leases.lock().note_prepared(tenant, Instant::now());
                    tracing::info!(tenant, from, next = %next, "planned handoff prepared: the next standby syncs now");
                    return Ok(Some(next));
                }
                Ok(_) => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("the record kept changing".into())
    }

    /// Asks the leader (this node or another) to name the node that will
    /// be `tenant`'s standby after this node hands it over (see
    /// [`Controller::prepare_handoff`]).
    pub async fn request_prepare(&self, tenant: u64) -> Result<Option<String>, String> {
        match self.remote_leader()? {
            None => self.prepare_handoff(tenant, &self.cfg.machine).await,
            Some(addr) => self.ask_step(addr, net::HandoffStep::Prepare, tenant).await,
        }
    }

    /// Asks the leader (this node or another) to hand `tenant` over from
    /// this node to its standby (see [`Controller::hand_off`]).
    pub async fn request_handoff(&self, tenant: u64) -> Result<RoleRecord, String> {
        match self.remote_leader()? {
            None => self.hand_off(tenant, &self.cfg.machine).await,
            Some(addr) => {
                self.ask_step(addr, net::HandoffStep::HandOver, tenant)
                    .await
            }
        }
    }

    /// The leader's address, None when this node leads.
    fn remote_leader(&self) -> Result<Option<SocketAddr>, String> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader.ok_or("the controller has no leader")?;
        if leader == node_id(&self.cfg.machine) {
            return Ok(None);
        }
        Ok(Some(self.addr_of(&m, leader)?))
    }

    /// Asks the leader at `addr` for `step` of this node's handoff of
    /// `tenant`.
    async fn ask_step<T: serde::de::DeserializeOwned>(
        &self,
        addr: SocketAddr,
        step: net::HandoffStep,
        tenant: u64,
    ) -> Result<T, String> {
        net::handoff_step(
            &self.syncer,
            &self.cfg.region,
            addr,
            step,
            tenant,
            &self.cfg.machine,
            self.cfg.lease,
        )
        .await?
    }

    /// As the leader, leaving (SIGTERM, after its handoffs): has a voter
    /// whose log is complete start an election now, and votes for it, so
    /// the group has a leader again within a round trip instead of after
    /// openraft's leader lease plus an election timeout (1.8–2.4 s at the
    /// default heartbeat: longer than what is left of the lease this
    /// leader just granted the databases' new primaries). openraft 0.9 has
    /// no leadership transfer (0.10 has); this one is made of its parts:
    /// the voter's `trigger().elect()`, and this node's vote (a follower
    /// refuses votes while it heard from its leader within the lease; the
    /// leader's own vote is not held back so). The new leader earns no
    /// election credit for that term (`Leases::take_over`). A leader
    /// elected just before first waits until its own vote may go to
    /// another (up to openraft's leader lease and a heartbeat); the
    /// transfer itself then has a second. Returns the new leader (None when
    /// this node does not lead), all within `limit`.
    pub async fn transfer_leadership(&self, limit: Duration) -> Result<Option<String>, String> {
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Ok(None);
        }
        let me = node_id(&self.cfg.machine);
        let budget_end = Instant::now() + limit;
        // This node refuses a vote itself while its own vote is younger
        // than openraft's leader lease (the maximum election timeout): a
        // leader elected just now waits that out first (a heartbeat more).
        let rc = self.raft.config();
        let young = Duration::from_millis(rc.election_timeout_max + rc.heartbeat_interval);
        let since = self.leases.lock().leading_since();
        let led = since.map_or(Duration::ZERO, |t| t.elapsed());
        if led < young {
            tokio::time::sleep((young - led).min(limit)).await;
        }
        let end = (Instant::now() + TRANSFER_TIME).min(budget_end);
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Ok(None);
        }
        let alive = self.region_alive();
        let voters: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
        let target = m
            .replication
            .as_ref()
            .and_then(|r| {
                r.iter()
                    .filter(|(id, matched)| {
                        **id != me
                            && voters.contains(id)
                            && matched.map(|l| l.index) == m.last_log_index
                            && alive.contains_key(&self.machine_of(**id))
                    })
                    .map(|(id, _)| *id)
                    .next()
            })
            .ok_or("no other voter has the whole log")?;
        let addr = self.addr_of(&m, target)?;
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no time left within {limit:?}"));
        }
        net::take_over(
            &self.syncer,
            &self.cfg.region,
            addr,
            &self.cfg.machine,
            left,
        )
        .await??;
        loop {
            let leader = self.raft.metrics().borrow().current_leader;
            if let Some(l) = leader.filter(|l| *l != me) {
                return Ok(Some(self.machine_of(l)));
            }
            if Instant::now() >= end {
                return Err(format!(
                    "{} did not take over within {limit:?}",
                    self.machine_of(target)
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The leaving leader `from` asks this voter to take over (see
    /// [`Controller::transfer_leadership`]): an election at once.
    pub async fn take_over(&self, from: &str) -> Result<(), String> {
        let leader = self.raft.metrics().borrow().current_leader;
        if leader.map(|l| self.machine_of(l)).as_deref() != Some(from) {
            return Err(format!("{from} is not this node's leader"));
        }
        self.leases.lock().take_over();
        self.raft.trigger().elect().await.map_err(|e| e.to_string())
    }

    /// A member's address (its IP is the one its links come from).
    pub fn ip_of(&self, machine: &str) -> Option<std::net::IpAddr> {
        self.view.borrow().member(machine).map(|m| m.addr.ip())
    }

    /// This node's machine name.
    pub fn me(&self) -> &str {
        &self.cfg.machine
    }

    /// The lease period.
    pub fn lease(&self) -> Duration {
        self.cfg.lease
    }

    /// A planned handoff's whole time.
    pub fn handoff_timeout(&self) -> Duration {
        self.cfg.handoff
    }

    /// As the leader, once every earlier leader's leases have ended:
    /// replaces each primary whose lease lapsed by its standby, at the
    /// next epoch (see [`lease::promote`]).
    async fn promote_lapsed(&self) {
        let now = Instant::now();
        let m = self.raft.metrics().borrow().clone();
        {
            let mut l = self.leases.lock();
            if m.state != ServerState::Leader {
                l.follow();
                return;
            }
            l.lead(m.current_term, now);
            if !l.settled(now, self.cfg.lease) {
                return;
            }
        }
        let alive = self.region_alive();
        let region: Vec<&str> = alive.keys().map(String::as_str).collect();
        let records = self.machine.roles().records;
        // Every lapsed primary's promotion is proposed at once: Raft
        // batches concurrent proposals into one append, so a node that
        // was primary of many databases costs one round, not one each.
        let mut proposals = tokio::task::JoinSet::new();
        let mut promoting = Vec::new();
        for rec in records.values() {
            let now = Instant::now();
            let (lapsed, next) = {
                let mut l = self.leases.lock();
                let lapsed = l.lapsed(&rec.primary, now, self.cfg.lease);
                if lapsed {
                    // From here on `grant` leaves the tenant out.
                    l.begin_promotion(rec.tenant, rec.epoch);
                }
                let l = &*l;
                let fresh = |m: &str| alive.contains_key(m) && !l.lapsed(m, now, self.cfg.lease);
                let holds = |m: &str| l.holds(m, rec.tenant);
                (
                    lapsed,
                    lapsed
                        .then(|| lease::promote(rec, &region, fresh, holds))
                        .flatten(),
                )
            };
            if !lapsed {
                // A next standby named for a handoff that never came (its
                // primary still renews): named no longer, so its node drops
                // the copy.
                let stale = rec.next_standby.is_some()
                    && self
                        .leases
                        .lock()
                        .prepared_long_ago(rec.tenant, now, self.cfg.handoff * 2);
                if stale {
                    let cmd = Command::PutRole {
                        expect: Some((rec.epoch, rec.seq)),
                        record: RoleRecord {
                            seq: rec.seq + 1,
                            next_standby: None,
                            ..rec.clone()
                        },
                    };
                    tracing::info!(tenant = rec.tenant, next = ?rec.next_standby, "no handoff followed its prepare: the next standby is named no longer");
                    let raft = self.raft.clone();
                    proposals.spawn(async move { (false, raft.client_write(cmd).await) });
                }
                continue;
            }
            let Some(next) = next else {
                self.leases.lock().end_promotion(rec.tenant);
                tracing::warn!(tenant = rec.tenant, primary = %rec.primary, "primary's lease lapsed and no standby holds one: not promoting");
                continue;
            };
            tracing::warn!(tenant = rec.tenant, old = %rec.primary, new = %next.primary, epoch = next.epoch, "primary's lease lapsed: promoting its standby");
            let cmd = Command::PutRole {
                expect: Some((rec.epoch, rec.seq)),
                record: next,
            };
            let raft = self.raft.clone();
            proposals.spawn(async move { (true, raft.client_write(cmd).await) });
            promoting.push(rec.tenant);
        }
        if promoting.len() > 1 {
            tracing::warn!(databases = promoting.len(), "promotions proposed together");
        }
        // (Each with whether it promotes, or only names no next standby.)
        while let Some(done) = proposals.join_next().await {
            match done {
                Ok((true, Ok(w))) if w.data.applied => {
                    metrics::counter!("anykv_controller_promotions_total").increment(1)
                }
                Ok((_, Ok(_))) => {}
                Ok((_, Err(e))) => tracing::warn!("controller: promoting: {e}"),
                Err(e) => tracing::warn!("controller: promoting: {e}"),
            }
        }
        let mut l = self.leases.lock();
        for tenant in promoting {
            l.end_promotion(tenant);
        }
    }

    /// Whether this node leads its region's group now.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Commits `cmd` (the leader only) and returns what applying it did.
    pub async fn propose(&self, cmd: Command) -> Result<Outcome, ControllerError> {
        match self.raft.client_write(cmd).await {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(
                ControllerError::NotLeader(f.leader_id.map(|id| self.machine_of(id))),
            ),
            Err(e) => Err(ControllerError::Raft(e.to_string())),
        }
    }

    /// This node's view of its group, as published in its metadata.
    pub fn meta(&self) -> ControllerMeta {
        let m = self.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership();
        let names = |ids: Vec<u64>| -> Vec<String> {
            let mut v: Vec<String> = ids.into_iter().map(|id| self.machine_of(id)).collect();
            v.sort();
            v
        };
        ControllerMeta {
            region_view: self.region_alive().keys().cloned().collect(),
            initialized: self.formed(),
            state: format!("{:?}", m.state).to_lowercase(),
            term: m.current_term,
            leader: m.current_leader.map(|id| self.machine_of(id)),
            voters: names(mem.voter_ids().collect()),
            learners: names(mem.learner_ids().collect()),
            applied: m.last_applied.map(|l| l.index),
            records: self.machine.roles().records.len(),
        }
    }

    /// A member's machine name (its id in hex when no one by that id is
    /// in the view).
    fn machine_of(&self, id: u64) -> String {
        if id == node_id(&self.cfg.machine) {
            return self.cfg.machine.clone();
        }
        self.view
            .borrow()
            .members
            .iter()
            .find(|m| node_id(&m.machine) == id)
            .map_or_else(|| format!("{id:016x}"), |m| m.machine.clone())
    }

    /// The sync endpoint of the group's member `id`: where the cluster
    /// view has it alive now, else the membership's. A member that moved
    /// (a Fly machine migrated to another host) is in the view at its new
    /// address a gossip round after it started there; the membership has
    /// it only once the leader committed the change, which takes longer,
    /// and longer still when the member that moved is the leader itself
    /// (openraft restarts a leader as the leader): its primaries' lease
    /// renewals must not go to the old address meanwhile.
    fn addr_of(
        &self,
        m: &openraft::RaftMetrics<u64, Peer>,
        id: u64,
    ) -> Result<SocketAddr, &'static str> {
        let viewed = self.region_alive().remove(&self.machine_of(id));
        viewed
            .or_else(|| {
                m.membership_config
                    .membership()
                    .get_node(&id)
                    .and_then(|n| n.addr.parse().ok())
            })
            .ok_or("the leader's address is unknown")
    }

    /// The region's alive nodes (this one included): machine → sync
    /// endpoint.
    fn region_alive(&self) -> BTreeMap<String, SocketAddr> {
        let view = self.view.borrow();
        view.members
            .iter()
            .filter(|m| m.region == self.cfg.region && (m.me || m.state == MemberState::Alive))
            // Routers hold no data and run no controller.
            .filter(|m| crate::node::holds_data(m))
            .map(|m| {
                (
                    m.machine.clone(),
                    SocketAddr::new(m.addr.ip(), self.cfg.sync_port),
                )
            })
            .collect()
    }

    /// Whether every alive node of the region reports the same region, none
    /// of them in a group: then the smallest may form one.
    fn all_agree_fresh(&self, alive: &BTreeMap<String, SocketAddr>) -> bool {
        let want: Vec<String> = alive.keys().cloned().collect();
        let view = self.view.borrow();
        // Every member of the region this node knows of, in any state:
        // one suspect or down blocks forming (a split region must not form
        // two groups); each alive one reports the same region, fresh.
        view.members
            .iter()
            .filter(|m| m.region == self.cfg.region && !m.me && !crate::node::known_router(m))
            .all(|m| {
                m.state == MemberState::Alive
                    && m.meta
                        .as_ref()
                        .and_then(|meta| meta.controller.as_ref())
                        .is_some_and(|c| !c.initialized && c.region_view == want)
            })
    }

    /// One look at membership: form the group, or (as its leader) add the
    /// region's new nodes.
    async fn step(&self, stable_since: &mut (Vec<String>, Instant)) {
        let alive = self.region_alive();
        let names: Vec<String> = alive.keys().cloned().collect();
        if stable_since.0 != names {
            *stable_since = (names.clone(), Instant::now());
        }
        let initialized = self.raft.is_initialized().await.unwrap_or(true);
        if !initialized {
            let smallest = names.first() == Some(&self.cfg.machine);
            if smallest
                && names.len() >= self.cfg.min_voters
                && stable_since.1.elapsed() >= STABLE_FOR
                && self.all_agree_fresh(&alive)
            {
                let members: BTreeMap<u64, Peer> = alive
                    .iter()
                    .map(|(m, a)| (node_id(m), Peer::new(a.to_string())))
                    .collect();
                match self.raft.initialize(members).await {
                    Ok(()) => {
                        tracing::info!(region = %self.cfg.region, voters = ?names, "controller group formed")
                    }
                    Err(e) => tracing::warn!("controller: forming the group: {e}"),
                }
            }
            return;
        }
        if !self.is_leader() {
            return;
        }
        let m = self.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership().clone();
        let voters: BTreeSet<u64> = mem.voter_ids().collect();
        let learners: BTreeSet<u64> = mem.learner_ids().collect();
        // A member at another address than the group knows (a Fly machine
        // that migrated to another host keeps its id and gets a new 6PN
        // address): the group reaches it there from now on. It is the same
        // node with the same log, so replacing its address is safe.
        for (machine, addr) in &alive {
            let id = node_id(machine);
            let addr = addr.to_string();
            match mem.get_node(&id) {
                Some(known) if known.addr != addr => {
                    tracing::info!(%machine, from = %known.addr, to = %addr, "controller: a member moved to another address");
                    let moved = BTreeMap::from([(id, Peer::new(addr))]);
                    if let Err(e) = self
                        .raft
                        .change_membership(ChangeMembers::SetNodes(moved), false)
                        .await
                    {
                        tracing::warn!(%machine, "controller: updating a member's address: {e}");
                    }
                    return;
                }
                _ => {}
            }
        }
        // One change at a time: a new node is a learner until it has the
        // log, then a voter.
        for (machine, addr) in &alive {
            let id = node_id(machine);
            if voters.contains(&id) {
                continue;
            }
            if !learners.contains(&id) {
                // Not waiting for it to catch up (it may never: a node
                // that died right after joining): a later step promotes it
                // once it has the log.
                tracing::info!(%machine, "controller: adding a learner");
                if let Err(e) = self
                    .raft
                    .add_learner(id, Peer::new(addr.to_string()), false)
                    .await
                {
                    tracing::warn!(%machine, "controller: adding a learner: {e}");
                }
                return;
            }
            let caught_up = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned().flatten())
                .zip(m.last_log_index)
                .is_some_and(|(matched, last)| matched.index + 10 >= last);
            if !caught_up {
                return;
            }
            tracing::info!(%machine, "controller: promoting a learner to voter");
            if let Err(e) = self
                .raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
            {
                tracing::warn!(%machine, "controller: promoting: {e}");
            }
            return;
        }
        self.remove_absent(&alive, &voters, &learners).await;
    }

    /// As the leader, with every alive node of the region a voter: removes
    /// one member that has not been alive for `remove_after` — a learner,
    /// or a voter when at least `min_voters` voters remain (removing one of
    /// 3 would make every remaining voter necessary). A machine destroyed
    /// for good then stops counting against the majority once its
    /// replacement has joined.
    async fn remove_absent(
        &self,
        alive: &BTreeMap<String, SocketAddr>,
        voters: &BTreeSet<u64>,
        learners: &BTreeSet<u64>,
    ) {
        let now = Instant::now();
        let alive_ids: BTreeSet<u64> = alive.keys().map(|m| node_id(m)).collect();
        let gone = {
            let mut absent = self.absent.lock();
            absent.retain(|id, _| !alive_ids.contains(id));
            for id in voters
                .iter()
                .chain(learners)
                .filter(|id| !alive_ids.contains(id))
            {
                absent.entry(*id).or_insert(now);
            }
            let long = |id: &u64| {
                absent
                    .get(id)
                    .is_some_and(|since| now.duration_since(*since) >= self.cfg.remove_after)
            };
            match learners.iter().find(|id| long(id)) {
                Some(id) => Some((*id, false)),
                None => voters
                    .iter()
                    .find(|id| long(id) && voters.len() > self.cfg.min_voters)
                    .map(|id| (*id, true)),
            }
        };
        let Some((id, voter)) = gone else { return };
        let machine = self.machine_of(id);
        let change = if voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        tracing::warn!(%machine, voter, "controller: removing a member gone for {:?}", self.cfg.remove_after);
        match self.raft.change_membership(change, false).await {
            Ok(_) => {
                self.absent.lock().remove(&id);
                metrics::counter!("anykv_controller_members_removed_total").increment(1);
            }
            Err(e) => tracing::warn!(%machine, "controller: removing: {e}"),
        }
    }
}

/// As the leader: announces every record whose epoch changed (a
/// promotion, a handoff, a forced promotion) to its read-region replicas'
/// nodes, so they follow the new primary within a one-way trip instead of
/// a state sync's gossip rounds. Best effort: the state sync still brings
/// the record to every node. Records seen when the loop starts, or while
/// this node follows, are not announced (their leader did).
async fn announce_loop(c: std::sync::Weak<Controller>) {
    let (mut changed, mut seen) = match c.upgrade() {
        Some(c) => {
            let seen: BTreeMap<u64, u64> = c
                .roles()
                .records
                .values()
                .map(|r| (r.tenant, r.epoch))
                .collect();
            (c.watch(), seen)
        }
        None => return,
    };
    while changed.changed().await.is_ok() {
        let Some(c) = c.upgrade() else { return };
        let leads = c.is_leader();
        for rec in c.roles().records.into_values() {
            let before = seen.insert(rec.tenant, rec.epoch);
            if !leads || before.is_none_or(|e| e >= rec.epoch) {
                continue;
            }
            let targets: Vec<(String, SocketAddr)> = {
                let view = c.view.borrow();
                rec.replicas
                    .iter()
                    .filter(|(region, _)| **region != c.cfg.region)
                    .filter_map(|(region, m)| {
                        let mv = view.member(m)?;
                        Some((
                            region.clone(),
                            SocketAddr::new(mv.addr.ip(), c.cfg.sync_port),
                        ))
                    })
                    .collect()
            };
            for (region, addr) in targets {
                let (syncer, rec, ttl) = (c.syncer.clone(), rec.clone(), c.cfg.lease);
                tokio::spawn(async move {
                    if let Err(e) = net::announce(&syncer, &region, addr, rec, ttl).await {
                        tracing::debug!(%addr, "announcing a role record: {e}");
                    }
                });
            }
        }
    }
}

/// Runs membership steps and publishes the controller's state until the
/// controller is dropped.
async fn membership_loop(c: std::sync::Weak<Controller>, meta: MetaUpdater) {
    let mut stable = (Vec::new(), Instant::now());
    let mut last: Option<ControllerMeta> = None;
    loop {
        tokio::time::sleep(TICK).await;
        let Some(c) = c.upgrade() else { return };
        // Promotion first: a membership step that waits on a slow peer must
        // never hold up replacing a dead primary.
        c.promote_lapsed().await;
        let _ = tokio::time::timeout(c.cfg.lease, c.step(&mut stable)).await;
        let now = c.meta();
        if last.as_ref() != Some(&now) {
            let published = now.clone();
            if !meta.update(move |m| m.controller = Some(published)) {
                return;
            }
            last = Some(now);
        }
    }
}

/// One region's controller as the cluster view shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionController {
    pub region: String,
    /// Alive nodes in the region.
    pub nodes: usize,
    pub leader: Option<String>,
    pub term: u64,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    /// Role records the group holds.
    pub records: usize,
    /// `automatic`, or why automatic promotion is refused.
    pub promotion: String,
}

/// Every region's controller, from what its nodes publish (the report of
/// the highest term wins: it is the newest).
pub fn regions(view: &ClusterView, min_voters: usize) -> Vec<RegionController> {
    let mut by_region: BTreeMap<&str, Vec<&crate::node::MemberView>> = BTreeMap::new();
    for m in &view.members {
        // Routers hold no data: a region of routers only has no controller.
        if (m.me || m.state == MemberState::Alive) && !crate::node::known_router(m) {
            by_region.entry(m.region.as_str()).or_default().push(m);
        }
    }
    by_region
        .into_iter()
        .map(|(region, members)| {
            let best = members
                .iter()
                .filter_map(|m| m.meta.as_ref()?.controller.as_ref())
                .filter(|c| c.initialized)
                .max_by_key(|c| (c.term, c.leader.is_some()));
            // A group that formed keeps promoting while a majority of its
            // voters elects a leader, even with fewer nodes alive than it
            // needed to form.
            let promotion = match best {
                Some(c) if c.voters.len() >= min_voters && c.leader.is_some() => {
                    "automatic".to_string()
                }
                Some(c) if c.voters.len() >= min_voters => {
                    "refused: the controller has no leader (no majority)".to_string()
                }
                _ if members.len() < min_voters => format!(
                    "refused: {} alive node(s) in {region}, automatic promotion needs {min_voters}",
                    members.len()
                ),
                _ => "refused: the controller group has not formed yet".to_string(),
            };
            RegionController {
                region: region.to_string(),
                nodes: members.len(),
                leader: best.and_then(|c| c.leader.clone()),
                term: best.map_or(0, |c| c.term),
                voters: best.map(|c| c.voters.clone()).unwrap_or_default(),
                learners: best.map(|c| c.learners.clone()).unwrap_or_default(),
                records: best.map_or(0, |c| c.records),
                promotion,
            }
        })
        .collect()
}

/// The controllers as a table for people (`anykv cluster status`).
pub fn regions_table(rs: &[RegionController]) -> String {
    let mut out = format!(
        "{:<8} {:>5} {:<16} {:>5}  {:<30} {}\n",
        "REGION", "NODES", "LEADER", "TERM", "VOTERS", "PROMOTION"
    );
    for r in rs {
        out.push_str(&format!(
            "{:<8} {:>5} {:<16} {:>5}  {:<30} {}\n",
            r.region,
            r.nodes,
            r.leader.as_deref().unwrap_or("-"),
            r.term,
            r.voters.join(","),
            r.promotion
        ));
    }
    out
}
