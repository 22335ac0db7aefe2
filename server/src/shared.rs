//! State shared by every executor thread: configuration, server-wide
//! counters, identity. Everything here is either atomic or behind a lock
//! that hot paths do not take (they cache what they need per batch).

use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

use crate::config::Config;

/// The Redis version whose behaviour anykv implements (reported as
/// `redis_version`, which client libraries use for feature detection).
pub const REDIS_VERSION: &str = "7.0.15";
/// anykv's own version.
pub const ANYKV_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Server-wide counters (INFO stats, Prometheus).
#[derive(Default)]
pub struct GlobalStats {
    pub connections_received: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub connected_clients: AtomicUsize,
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
    pub commands_processed: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub client_output_limit_disconnections: AtomicU64,
    pub client_query_limit_disconnections: AtomicU64,
}

impl GlobalStats {
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
}

/// Settings read on every command, copied out of the config so hot paths
/// take no lock; connections refresh their copy when `config_gen` moves.
#[derive(Clone, Debug)]
pub struct Settings {
    pub gen: u64,
    pub slowlog_slower_than: i64,
    pub slowlog_max_len: usize,
    pub latency_threshold_ms: u64,
    /// `latency-tracking`: per-command latency histograms.
    pub latency_tracking: bool,
    /// `enable-debug-command`: "no", "yes" or "local".
    pub debug_command: String,
    pub max_bulk_len: i64,
    pub max_multibulk_len: i64,
    pub query_buffer_limit: u64,
    /// Hard output-buffer limit for normal clients (0 = none).
    pub output_hard_limit: u64,
    pub idle_timeout_s: u64,
    pub notify_flags: u32,
    pub pubsub_limit: crate::pubsub::PushLimit,
    /// `client-output-buffer-limit replica`: how far (bytes) a replica may
    /// fall behind, for how long past the soft limit.
    pub replica_limit: crate::pubsub::PushLimit,
    pub evict: crate::evict::Limits,
    pub lfu_log_factor: u32,
    /// Encoding thresholds (`*-max-listpack-*`, `set-max-intset-entries`),
    /// read by every collection write.
    pub hash_max_listpack_entries: usize,
    pub hash_max_listpack_value: usize,
    pub set_max_intset_entries: usize,
    pub zset_max_listpack_entries: usize,
    pub zset_max_listpack_value: usize,
    /// Where a stream starts a new node (`stream-node-max-bytes`,
    /// `stream-node-max-entries`).
    pub stream_node: crate::db::stream::NodeLimits,
    /// `tracking-table-max-keys` (0: no limit).
    pub tracking_max_keys: u64,
    /// `replica-serve-stale-data`.
    pub replica_serve_stale: bool,
    /// `min-replicas-to-write` / `min-replicas-max-lag` (seconds).
    pub min_replicas: (usize, i64),
    /// `repl-timeout` (seconds).
    pub repl_timeout_s: u64,
    /// `repl-link-timeout-ms`.
    pub repl_link_timeout_ms: u64,
    /// `standby-wait-ms`.
    pub standby_wait_ms: i64,
    /// `ryw-wait-ms`.
    pub ryw_wait_ms: u64,
    /// `copy-max-inflight-reads`.
    pub copy_max_inflight_reads: usize,
    /// `busy-reply-threshold` (ms): a script's own clients get -BUSY past it.
    pub busy_reply_threshold_ms: u64,
    /// `script-time-slice-us`: how long a script runs before the others
    /// on its executor are served (`script::busy`).
    pub script_time_slice_us: u64,
    /// `hll-sparse-max-bytes`: a sparse HyperLogLog past it turns dense.
    pub hll_sparse_max_bytes: usize,
}

fn push_limit(l: crate::config::OutputLimit) -> crate::pubsub::PushLimit {
    crate::pubsub::PushLimit {
        hard: l.hard,
        soft: l.soft,
        soft_secs: l.soft_secs,
    }
}

impl Settings {
    pub fn from_config(c: &Config) -> Settings {
        Settings {
            gen: c.generation(),
            slowlog_slower_than: c.slowlog_log_slower_than(),
            slowlog_max_len: c.slowlog_max_len() as usize,
            latency_threshold_ms: c.latency_monitor_threshold(),
            latency_tracking: c.latency_tracking(),
            debug_command: c.enable_debug_command(),
            max_bulk_len: c.proto_max_bulk_len(),
            max_multibulk_len: c.max_multibulk_len(),
            query_buffer_limit: c.client_query_buffer_limit(),
            output_hard_limit: c.client_output_buffer_limit().normal.hard,
            idle_timeout_s: c.timeout(),
            notify_flags: c.notify_keyspace_flags(),
            evict: crate::evict::Limits {
                maxmemory: c.maxmemory(),
                policy: crate::evict::Policy::parse(&c.maxmemory_policy()),
                samples: c.maxmemory_samples() as usize,
                decay_time: c.lfu_decay_time(),
                time_limit: crate::evict::tenacity_limit(i64::from(
                    c.maxmemory_eviction_tenacity(),
                )),
                latency_ms: c.latency_monitor_threshold(),
            },
            lfu_log_factor: c.lfu_log_factor(),
            hash_max_listpack_entries: usize::try_from(c.hash_max_listpack_entries())
                .unwrap_or(usize::MAX),
            hash_max_listpack_value: usize::try_from(c.hash_max_listpack_value())
                .unwrap_or(usize::MAX),
            set_max_intset_entries: usize::try_from(c.set_max_intset_entries())
                .unwrap_or(usize::MAX),
            zset_max_listpack_entries: usize::try_from(c.zset_max_listpack_entries())
                .unwrap_or(usize::MAX),
            zset_max_listpack_value: usize::try_from(c.zset_max_listpack_value())
                .unwrap_or(usize::MAX),
            stream_node: crate::db::stream::NodeLimits {
                max_bytes: usize::try_from(c.stream_node_max_bytes()).unwrap_or(usize::MAX),
                max_entries: c.stream_node_max_entries(),
            },
            tracking_max_keys: c.tracking_table_max_keys(),
            replica_serve_stale: c.replica_serve_stale_data(),
            min_replicas: (
                usize::try_from(c.min_replicas_to_write()).unwrap_or(usize::MAX),
                i64::try_from(c.min_replicas_max_lag()).unwrap_or(i64::MAX),
            ),
            repl_timeout_s: c.repl_timeout(),
            repl_link_timeout_ms: c.repl_link_timeout_ms(),
            standby_wait_ms: i64::try_from(c.standby_wait_ms()).unwrap_or(i64::MAX),
            ryw_wait_ms: c.ryw_wait_ms(),
            copy_max_inflight_reads: c.copy_max_inflight_reads(),
            busy_reply_threshold_ms: c.busy_reply_threshold(),
            script_time_slice_us: c.script_time_slice_us(),
            hll_sparse_max_bytes: c.hll_sparse_max_bytes() as usize,
            replica_limit: push_limit(c.client_output_buffer_limit().replica),
            pubsub_limit: push_limit(c.client_output_buffer_limit().pubsub),
        }
    }
}

/// What `anykv node` does when a database's primary did not take a
/// request (see [`Shared::primary_missed`]).
pub type PrimaryLookup = Box<dyn Fn(crate::tenant::TenantId) + Send + Sync>;

pub struct Shared {
    pub config: RwLock<Config>,
    /// Every database's ACL users.
    pub acl: crate::acl::Store,
    /// Mirrors `config.generation()` so hot paths notice changes without
    /// taking the lock.
    pub config_gen: AtomicU64,
    pub stats: GlobalStats,
    /// What each database's customers used on this node, until the node
    /// writes it to its usage log (`crate::meter`).
    pub meter: crate::meter::Meter,
    pub next_client_id: AtomicU64,
    pub started: Instant,
    pub started_unix: i64,
    pub run_id: String,
    pub tcp_port: AtomicU64,
    pub executors: usize,
    /// Set when the server is shutting down (SIGTERM, SHUTDOWN).
    pub shutting_down: AtomicBool,
    /// Set by [`Shared::close_customers`]: customers' connections are
    /// closed, new ones too; cluster links go on.
    customers_closed: AtomicBool,
    shutdown_tx: watch::Sender<bool>,
    /// SHUTDOWN SAVE (1) / NOSAVE (2) / default (0).
    shutdown_save: std::sync::atomic::AtomicU8,
    /// The tenants this server holds (besides the default one); swapped
    /// whole by [`Shared::set_catalog`] while the server runs.
    catalog: RwLock<Arc<crate::catalog::Catalog>>,
    /// Tenants held elsewhere (see `remote_catalog`).
    remote: RwLock<Arc<crate::catalog::Catalog>>,
    /// This node's own cluster address (its store streams), once known.
    pub own_link: RwLock<Option<std::net::SocketAddr>>,
    /// Cluster addresses of nodes the gossip says are down (set by the
    /// node's placement on every view change).
    down_links: RwLock<Arc<std::collections::HashSet<std::net::SocketAddr>>>,
    /// `tenants-only`: the default tenant only for operator users with a
    /// password; never open to unauthenticated clients.
    pub tenants_only: AtomicBool,
    /// Where to send a connection that moves to another tenant, and tenant
    /// changes: one channel per executor (set once by `Server::start`), so a
    /// tenant's creation reaches its executor before any login to it.
    pub handoffs:
        std::sync::OnceLock<Vec<tokio::sync::mpsc::UnboundedSender<crate::executor::ExecMsg>>>,
    /// How a replica dials its primary on another node of the cluster
    /// (set once by `anykv node`; a standalone server has none).
    pub link_dialer: std::sync::OnceLock<Arc<dyn crate::stream::LinkDialer>>,
    /// Told when a database's primary did not take a request (set once by
    /// `anykv node`; see [`Shared::primary_missed`]).
    pub primary_lookup: std::sync::OnceLock<PrimaryLookup>,
    /// Forwarded requests without a reply yet ([`Shared::forwards_in_flight`]).
    pub forwarding: std::sync::atomic::AtomicUsize,
    /// Requests other nodes sent here in envelopes (routers' clients',
    /// replicas' forwards, login checks), ever: a node that leaves waits
    /// until they stop coming ([`Shared::peer_requests`]).
    peer_requests: AtomicU64,
    /// Each tenant's replication, refreshed once a second by its cron.
    pub repl_status: parking_lot::Mutex<
        std::collections::HashMap<crate::tenant::TenantId, crate::metrics::ReplStatus>,
    >,
    /// Client connections per tenant (replication links not counted), for
    /// the plans' `maxclients`: counted here rather than by the tenant's
    /// executor because AUTH decides on another executor's thread.
    tenant_clients: parking_lot::Mutex<std::collections::HashMap<crate::tenant::TenantId, u64>>,
    /// This node's lease from its region's controller: the tenants it is
    /// primary of, each at its epoch, and until when (see
    /// [`Shared::lease_holds`]).
    lease: parking_lot::RwLock<(std::collections::HashMap<u64, u64>, Option<Instant>)>,
    /// Set by a planned handoff: no lease is taken any more.
    lease_closed: AtomicBool,
    /// Tenants whose lease this node gave up at an epoch (the planned
    /// failover of one database), and until when their writes wait:
    /// renewals do not cover them again.
    released: parking_lot::Mutex<std::collections::HashMap<u64, (u64, Instant)>>,
    /// Whether `released` holds any tenant: every write of a primary
    /// without a lease asks [`Shared::writes_held`], which must not take
    /// a lock when nothing is held.
    any_released: AtomicBool,
}

/// How long past its own deadline a failover or move of a primary holds
/// the database's writes (see [`Shared::release_lease`]): the new role's
/// record reaches the old primary's node in milliseconds when all is
/// well; this covers a slow gossip round or two.
pub const HOLD_GRACE: Duration = Duration::from_secs(5);

/// What [`Shared::writes_held`] says of a primary's writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Not held: they run.
    No,
    /// Held by a failover or move in progress: they wait.
    Wait,
    /// Held longer than the failover or move may take: refused (retry).
    TooLong,
}

impl Shared {
    pub fn new(config: Config, executors: usize) -> Self {
        let run_id: String = (0..40)
            .map(|_| {
                let n: u8 = rand::random::<u8>() % 16;
                char::from_digit(n as u32, 16).unwrap_or('0')
            })
            .collect();
        let gen = config.generation();
        let acl = crate::acl::Store::new(config.requirepass().as_deref());
        let tenants_only = config.tenants_only();
        Shared {
            acl,
            config: RwLock::new(config),
            config_gen: AtomicU64::new(gen),
            stats: GlobalStats::default(),
            meter: Default::default(),
            next_client_id: AtomicU64::new(1),
            started: Instant::now(),
            started_unix: crate::util::mstime() / 1000,
            run_id,
            tcp_port: AtomicU64::new(0),
            executors,
            shutting_down: AtomicBool::new(false),
            customers_closed: AtomicBool::new(false),
            shutdown_tx: watch::channel(false).0,
            shutdown_save: std::sync::atomic::AtomicU8::new(0),
            catalog: RwLock::new(Arc::new(crate::catalog::Catalog::default())),
            remote: RwLock::new(Arc::new(crate::catalog::Catalog::default())),
            down_links: RwLock::new(Arc::default()),
            own_link: RwLock::new(None),
            tenants_only: AtomicBool::new(tenants_only),
            handoffs: std::sync::OnceLock::new(),
            link_dialer: std::sync::OnceLock::new(),
            primary_lookup: std::sync::OnceLock::new(),
            forwarding: Default::default(),
            peer_requests: Default::default(),
            repl_status: Default::default(),
            tenant_clients: Default::default(),
            lease: Default::default(),
            lease_closed: AtomicBool::new(false),
            released: Default::default(),
            any_released: AtomicBool::new(false),
        }
    }

    /// Records a lease the region's controller granted: `primaries` are
    /// `(tenant, epoch)`; it holds until `until` (the node's own monotonic
    /// clock, margin already taken). Replaces the previous one whole: a
    /// tenant left out is no longer this node's to write.
    pub fn set_lease(&self, primaries: Vec<(u64, u64)>, until: Instant) {
        // Checked under the lease's lock, which `close_lease` takes too: a
        // renewal answered while the handoff begins cannot put back the
        // lease it just gave up.
        let mut lease = self.lease.write();
        if self.lease_closed.load(Relaxed) {
            return;
        }
        let released = self.released.lock();
        let held = primaries
            .into_iter()
            .filter(|(t, e)| released.get(t).map(|r| r.0) != Some(*e))
            .collect();
        *lease = (held, Some(until));
    }

    /// Gives up the lease of one tenant at `epoch` (its planned failover,
    /// or a move of its primary to another region): this node takes no
    /// write for it from now on, even if a renewal still lists it (or it
    /// has no lease: see [`Shared::writes_held`]), until
    /// [`Shared::retake_lease`] or a newer epoch. Its writes wait for
    /// `hold` at most: should the new role never reach this node (the
    /// record lost, the gossip cut), clients are told to retry rather than
    /// left waiting, and this node still takes none of them.
    pub fn release_lease(&self, tenant: u64, epoch: u64, hold: Duration) {
        let mut lease = self.lease.write();
        self.released
            .lock()
            .insert(tenant, (epoch, Instant::now() + hold));
        self.any_released.store(true, Relaxed);
        lease.0.remove(&tenant);
    }

    /// Ends [`Shared::release_lease`] (the failover did not happen): the
    /// next renewal covers the tenant again.
    pub fn retake_lease(&self, tenant: u64) {
        let mut released = self.released.lock();
        released.remove(&tenant);
        self.any_released.store(!released.is_empty(), Relaxed);
    }

    /// Forgets a release of `tenant` older than `epoch`, the epoch its
    /// executor has just applied: the failover or move is over, and this
    /// node's writes no longer pay for a look at the released map. Called
    /// by the executor that owns the tenant, so no write of the old epoch
    /// runs after it.
    pub fn settle_released(&self, tenant: u64, epoch: u64) {
        if !self.any_released.load(Relaxed) {
            return;
        }
        let mut released = self.released.lock();
        if released.get(&tenant).is_some_and(|r| r.0 < epoch) {
            released.remove(&tenant);
            self.any_released.store(!released.is_empty(), Relaxed);
        }
    }

    /// Whether [`Shared::release_lease`] holds `tenant`'s writes at
    /// `epoch` (a move of its primary in progress).
    pub fn writes_held(&self, tenant: u64, epoch: u64) -> Held {
        if !self.any_released.load(Relaxed) {
            return Held::No;
        }
        match self.released.lock().get(&tenant) {
            Some(&(e, until)) if e == epoch => {
                if Instant::now() < until {
                    Held::Wait
                } else {
                    Held::TooLong
                }
            }
            _ => Held::No,
        }
    }

    /// Gives the lease up for good (a planned handoff: this node's leased
    /// primaries take no write from now on).
    pub fn close_lease(&self) {
        let mut lease = self.lease.write();
        self.lease_closed.store(true, Relaxed);
        *lease = Default::default();
    }

    /// Requests this node's replicas forwarded to a primary that have no
    /// reply yet (see `crate::forward`).
    pub fn forwards_in_flight(&self) -> usize {
        self.forwarding.load(Relaxed)
    }

    /// Counts a request another node sent here in an envelope.
    pub fn peer_request(&self) {
        self.peer_requests.fetch_add(1, Relaxed);
    }

    /// How many requests other nodes have sent here in envelopes: a node
    /// leaving after a planned handoff waits until this stops moving, so
    /// a request a far router sent before it learnt the new primary is
    /// answered (`-READONLY`, which it retries there) rather than lost
    /// with the link.
    pub fn peer_requests(&self) -> u64 {
        self.peer_requests.load(Relaxed)
    }

    /// Whether this node is handing `tenant` (at `epoch`) over to its
    /// standby right now (a planned failover of it, or of every database
    /// on SIGTERM): its writes wait rather than fail, and meet the new
    /// role once the handoff ends (docs/FAILOVER.md).
    pub fn handing_off(&self, tenant: u64, epoch: u64) -> bool {
        self.lease_closed.load(Relaxed) || self.writes_held(tenant, epoch) == Held::Wait
    }

    /// A tenant's replication as its executor sees it now (None: not held).
    pub async fn probe(
        &self,
        tenant: crate::tenant::TenantId,
    ) -> Option<crate::metrics::ReplStatus> {
        self.probe_with(tenant, false).await
    }

    /// [`Shared::probe`] with the backlog's average write size
    /// (`ReplStatus::avg_write_bytes`).
    pub async fn probe_with(
        &self,
        tenant: crate::tenant::TenantId,
        write_size: bool,
    ) -> Option<crate::metrics::ReplStatus> {
        self.ask(tenant, |tx| {
            crate::executor::ExecMsg::Probe(tenant, write_size, tx)
        })
        .await
    }

    /// Freezes `tenant`'s log until `until_ms` (a move of its primary to
    /// another region, after [`Shared::release_lease`] held its writes;
    /// 0 thaws it): nothing this node does on its own (expiry, eviction,
    /// PINGs) appends to it. Its replication then (None: not held).
    pub async fn freeze(
        &self,
        tenant: crate::tenant::TenantId,
        until_ms: i64,
    ) -> Option<crate::metrics::ReplStatus> {
        self.ask(tenant, |tx| {
            crate::executor::ExecMsg::Freeze(tenant, until_ms, tx)
        })
        .await
    }

    /// Sends `tenant`'s executor the message `msg` makes of a reply
    /// channel, and awaits the tenant's replication status it answers
    /// (None: the executor does not hold the tenant).
    async fn ask(
        &self,
        tenant: crate::tenant::TenantId,
        msg: impl FnOnce(
            tokio::sync::oneshot::Sender<crate::metrics::ReplStatus>,
        ) -> crate::executor::ExecMsg,
    ) -> Option<crate::metrics::ReplStatus> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let owner = crate::executor::owner_of(tenant, self.executors);
        self.send_to(owner, msg(tx));
        rx.await.ok()
    }

    /// Counts and logs the writes of `tenant` past offset `at` (its standby
    /// has the log up to there) as discarded: a planned handoff of an
    /// `async` database went ahead without them.
    pub fn abandon(&self, tenant: crate::tenant::TenantId, at: u64) {
        let owner = crate::executor::owner_of(tenant, self.executors);
        self.send_to(owner, crate::executor::ExecMsg::Abandon(tenant, at));
    }

    /// Whether this node's lease covers `tenant` at `epoch` now: a primary
    /// whose tenant is `leased` takes writes only then.
    pub fn lease_holds(&self, tenant: u64, epoch: u64, now: Instant) -> bool {
        let l = self.lease.read();
        l.1.is_some_and(|until| now < until) && l.0.get(&tenant) == Some(&epoch)
    }

    /// Counts a client connection into `tenant` unless it already has
    /// `max` (0: no limit); false when refused.
    pub fn tenant_client_enter(&self, tenant: crate::tenant::TenantId, max: u64) -> bool {
        let mut m = self.tenant_clients.lock();
        let n = m.entry(tenant).or_insert(0);
        if max > 0 && *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    /// Whether any customer is connected to `tenant` on this node.
    pub fn has_clients(&self, tenant: crate::tenant::TenantId) -> bool {
        self.tenant_clients
            .lock()
            .get(&tenant)
            .is_some_and(|n| *n > 0)
    }

    /// A client connection counted by [`Shared::tenant_client_enter`] left
    /// `tenant`.
    pub fn tenant_client_leave(&self, tenant: crate::tenant::TenantId) {
        let mut m = self.tenant_clients.lock();
        if let Some(n) = m.get_mut(&tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&tenant);
            }
        }
    }

    /// Sends a connection to the executor that owns its tenant.
    pub fn handoff(&self, h: crate::executor::Handoff) {
        let owner = crate::executor::owner_of(h.tenant, self.executors);
        self.send_to(owner, crate::executor::ExecMsg::Conn(h));
    }

    /// Serves a stream another node of the cluster opened for `tenant`
    /// (a replica's link): a connection logged in to that tenant's own
    /// `default` user, as a customer's AUTH with its token would be — the
    /// cluster's mutual TLS has proven the peer. A tenant this node does
    /// not hold closes the stream.
    pub fn accept_link(&self, stream: crate::stream::LinkStream, tenant: crate::tenant::TenantId) {
        if tenant != crate::tenant::TenantId::DEFAULT && self.catalog().get(tenant).is_none() {
            tracing::debug!(tenant = tenant.0, peer = %stream.peer, "link for a tenant not held here");
            return;
        }
        let carry = crate::conn::Carry {
            id: self.next_client_id(),
            resp: 2,
            user: "default".into(),
            created_ms: crate::util::mstime(),
            ..Default::default()
        };
        self.handoff(crate::executor::Handoff {
            stream: crate::stream::HandoffStream::Link(stream),
            tenant,
            carry: Some(carry),
        });
    }

    fn send_to(&self, owner: usize, m: crate::executor::ExecMsg) {
        match self.handoffs.get().and_then(|v| v.get(owner)) {
            Some(tx) => {
                if tx.send(m).is_err() {
                    tracing::warn!("executor {owner} is gone");
                }
            }
            None => tracing::warn!("no executor {owner} to send to"),
        }
    }

    /// The tenants this node holds no copy of, each with where it is
    /// served (`TenantSpec::remote`): a login to one of them is served by
    /// forwarding every request (docs/ROUTING.md, Remote databases).
    pub fn remote_catalog(&self) -> Arc<crate::catalog::Catalog> {
        self.remote.read().clone()
    }

    /// Tells the node that tenant `id`'s primary, as this node knows it,
    /// did not take a request: the gossip holds its node as down, it did
    /// not answer in time, or it answered that it is no longer the primary
    /// or holds no lease. A node then asks the database's region
    /// controller who is (one question at a time per database, at most
    /// every 100 ms), rather than waiting for the state sync's gossip
    /// rounds to bring the new role record while its clients wait.
    pub fn primary_missed(&self, id: crate::tenant::TenantId) {
        if let Some(f) = self.primary_lookup.get() {
            f(id);
        }
    }

    /// Whether the gossip says the node at cluster address `link` is down:
    /// a request for it is not sent (it could only be lost).
    pub fn link_down(&self, link: std::net::SocketAddr) -> bool {
        self.down_links.read().contains(&link)
    }

    /// Replaces the set of down nodes' cluster addresses.
    pub fn set_down_links(&self, down: std::collections::HashSet<std::net::SocketAddr>) {
        if **self.down_links.read() != down {
            *self.down_links.write() = Arc::new(down);
        }
    }

    /// Replaces the remote catalog (the node's placement, on every change).
    pub fn set_remote(&self, c: crate::catalog::Catalog) {
        *self.remote.write() = Arc::new(c);
    }

    /// Where remote tenant `id` is served now. A tenant this node has
    /// since been given a copy of keeps its remote connections going to
    /// the primary: the one its replica follows (the copy may still be
    /// syncing; new logins use it), or this node's own store when it has
    /// become the primary (a failover promoted it). None: the tenant is
    /// gone.
    pub fn remote_route(&self, id: crate::tenant::TenantId) -> Option<crate::catalog::RemoteRoute> {
        if let Some(r) = self.remote.read().get(id).and_then(|s| s.remote.as_deref()) {
            return Some(r.clone());
        }
        let spec = self.catalog().get(id)?.clone();
        let primary = spec.follow.or(*self.own_link.read())?;
        Some(crate::catalog::RemoteRoute {
            primary,
            copies: vec![crate::catalog::CopyAt {
                addr: primary,
                rtt_ms: 0,
            }],
        })
    }

    /// The tenant catalog as it is now.
    pub fn catalog(&self) -> Arc<crate::catalog::Catalog> {
        self.catalog.read().clone()
    }

    /// Sets the catalog before the executors start (they load its tenants
    /// themselves; no change messages).
    pub fn init_catalog(&self, c: crate::catalog::Catalog) {
        *self.catalog.write() = Arc::new(c);
    }

    /// Replaces the tenant catalog while the server runs: tenants that are
    /// new are created (their files loaded) on the executor that owns them,
    /// changed ones take their new name and plan, removed ones close their
    /// clients and stop (their files stay). The changes are queued to the
    /// executors before the new catalog becomes visible to AUTH, on the
    /// same channel as connections, so a login to a new tenant always
    /// finds it. Returns (added, changed, removed) counts.
    pub fn set_catalog(&self, new: crate::catalog::Catalog) -> (usize, usize, usize) {
        use crate::executor::{ExecMsg, TenantChange};
        let mut cur = self.catalog.write();
        let (mut added, mut changed, mut removed) = (0, 0, 0);
        for spec in new.tenants() {
            match cur.get(spec.id) {
                Some(old) if old == spec => continue,
                Some(_) => changed += 1,
                None => added += 1,
            }
            let owner = crate::executor::owner_of(spec.id, self.executors);
            self.send_to(owner, ExecMsg::Tenant(TenantChange::Upsert(spec.clone())));
        }
        for spec in cur.tenants() {
            if new.get(spec.id).is_none() {
                removed += 1;
                let owner = crate::executor::owner_of(spec.id, self.executors);
                self.send_to(owner, ExecMsg::Tenant(TenantChange::Remove(spec.id)));
            }
        }
        *cur = Arc::new(new);
        (added, changed, removed)
    }

    /// Whether a new connection starts authenticated (as the default user
    /// without a password). Never with a tenant catalog (every customer
    /// logs in to their database, and the default tenant is the
    /// operator's), nor with `tenants-only` (a cluster node, open to no one
    /// before its catalog arrives).
    pub fn default_open(&self) -> bool {
        self.catalog.read().is_empty()
            && !self.tenants_only.load(Relaxed)
            && self
                .acl
                .read(crate::tenant::TenantId::DEFAULT, |u| u.default_is_open())
    }

    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Relaxed)
    }

    /// Starts a graceful shutdown: listeners stop, connections finish the
    /// batch they are processing and close.
    pub fn begin_shutdown(&self) {
        if !self.shutting_down.swap(true, Relaxed) {
            self.shutdown_tx.send_replace(true);
        }
    }

    /// Records SHUTDOWN's SAVE (`Some(true)`) / NOSAVE (`Some(false)`).
    pub fn set_shutdown_save(&self, mode: Option<bool>) {
        let v = match mode {
            None => 0,
            Some(true) => 1,
            Some(false) => 2,
        };
        self.shutdown_save.store(v, Relaxed);
    }

    pub fn shutdown_save(&self) -> Option<bool> {
        match self.shutdown_save.load(Relaxed) {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        }
    }

    /// A receiver that changes once, when shutdown begins.
    pub fn shutdown_rx(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Relaxed)
    }

    /// A node leaving after a planned handoff closes its customers'
    /// connections before its cluster links: each once the reply it is
    /// waiting for is out (a write forwarded to the new primary), so a
    /// client sees its connection end between two replies (and connects
    /// again, to another node) rather than get an error for a write that
    /// was forwarded just as the links closed. Connections that arrive
    /// from then on are closed at once. Cluster links (other nodes'
    /// requests, replication) go on until the node leaves.
    pub fn close_customers(&self) {
        if self.customers_closed.swap(true, Relaxed) {
            return;
        }
        for owner in 0..self.executors {
            self.send_to(owner, crate::executor::ExecMsg::CloseCustomers);
        }
    }

    /// Whether [`Shared::close_customers`] was called.
    pub fn customers_closed(&self) -> bool {
        self.customers_closed.load(Relaxed)
    }

    /// CONFIG RESETSTAT for the server-wide counters.
    pub fn reset_stats(&self) {
        let s = &self.stats;
        for c in [
            &s.connections_received,
            &s.rejected_connections,
            &s.net_input_bytes,
            &s.net_output_bytes,
            &s.commands_processed,
            &s.protocol_errors,
            &s.client_output_limit_disconnections,
            &s.client_query_limit_disconnections,
        ] {
            c.store(0, Relaxed);
        }
    }

    /// Refreshes `s` if the configuration changed since it was taken.
    #[inline]
    pub fn refresh(&self, s: &mut Settings) {
        if s.gen != self.config_gen.load(Relaxed) {
            *s = Settings::from_config(&self.config.read());
        }
    }

    pub fn settings(&self) -> Settings {
        Settings::from_config(&self.config.read())
    }

    /// Applies a config change and publishes the new generation.
    pub fn update_config<R>(&self, f: impl FnOnce(&mut Config) -> R) -> R {
        let mut c = self.config.write();
        let r = f(&mut c);
        self.config_gen.store(c.generation(), Relaxed);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_holds_writes_for_a_while_then_refuses_them_until_it_settles() {
        let shared = Shared::new(Config::default(), 1);
        assert_eq!(shared.writes_held(7, 3), Held::No);
        shared.release_lease(7, 3, Duration::from_secs(60));
        assert_eq!(shared.writes_held(7, 3), Held::Wait);
        assert!(shared.handing_off(7, 3));
        // Another tenant, or the same one at another epoch, is not held.
        assert_eq!(shared.writes_held(8, 3), Held::No);
        assert_eq!(shared.writes_held(7, 5), Held::No);
        // The executor applied epoch 3 again (a renewal): still held.
        shared.settle_released(7, 3);
        assert_eq!(shared.writes_held(7, 3), Held::Wait);
        // It applied the next epoch: the release is forgotten, and writes
        // no longer look at the map.
        shared.settle_released(7, 5);
        assert_eq!(shared.writes_held(7, 3), Held::No);
        assert!(!shared.any_released.load(Relaxed));

        // A release whose hold ran out: writes are refused, not run.
        shared.release_lease(9, 1, Duration::ZERO);
        assert_eq!(shared.writes_held(9, 1), Held::TooLong);
        assert!(!shared.handing_off(9, 1));
        shared.retake_lease(9);
        assert_eq!(shared.writes_held(9, 1), Held::No);
    }
}
