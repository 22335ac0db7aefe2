//! A tenant: one customer database with its own keyspace (16 DBs), write
//! log, clients and statistics. A tenant is owned by exactly one executor
//! thread, which runs all of its commands in order; that is what makes
//! MULTI/EXEC and scripts atomic without locks and gives each tenant one
//! ordered write log. Standalone `anykv server` has one default tenant.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, VecDeque};

use std::rc::Rc;

use crate::client::ClientInfo;
use crate::db::Keyspace;
use crate::proplog::PropLog;
use crate::pubsub::{PubSub, PushLimit};

/// Identifies a tenant across the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(pub u64);

impl TenantId {
    /// The tenant of standalone `anykv server`.
    pub const DEFAULT: TenantId = TenantId(0);
}

/// Per-command counters (INFO commandstats).
#[derive(Default)]
pub struct CmdStat {
    pub calls: u64,
    pub usec: u64,
    pub rejected_calls: u64,
    pub failed_calls: u64,
    /// Run times in ns, once the command ran with `latency-tracking` on
    /// (LATENCY HISTOGRAM, INFO latencystats). The server's bookkeeping,
    /// not the database's data: outside its memory account (a plan's
    /// `maxmemory` is for its keys).
    pub latency: Option<crate::alloc::Unaccounted<hdrhistogram::Histogram<u64>>>,
}

#[derive(Default)]
pub struct TenantStats {
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    pub expired_keys: u64,
    pub expired_stale_perc: f64,
    pub expired_time_cap_reached_count: u64,
    pub expire_cycle_cpu_milliseconds: u64,
    pub evicted_keys: u64,
    /// Full syncs served (INFO stats `sync_full`).
    pub sync_full: u64,
    /// Partial resyncs accepted / refused (`sync_partial_ok` / `_err`).
    pub sync_partial_ok: u64,
    pub sync_partial_err: u64,
    pub total_commands: u64,
    pub total_error_replies: u64,
    pub unexpected_error_replies: u64,
    /// Commands that waited for the plan's `ops_per_sec` (see [`RateLimit`]).
    pub throttled_commands: u64,
    /// Where this node's customer requests went (INFO `routing`).
    pub routes: RouteStats,
    /// `instantaneous_ops_per_sec`, sampled by the cron.
    pub ops_meter: OpsMeter,
    pub commands: Vec<CmdStat>,
    pub errors: BTreeMap<String, u64>,
}

/// Where a replica's node sent its customers' requests (INFO `routing`,
/// `anykv_routed_total{route=...}`), per database. A primary's node serves
/// everything in-process (`local_reads` counts only a replica's reads).
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteStats {
    /// Reads the local replica answered at once.
    pub local_reads: u64,
    /// Reads that found the local copy without the connection's last write,
    /// waited for it to arrive and were then answered locally (for a
    /// database held elsewhere: answered by a copy asked again after it
    /// was behind; these count in `remote_reads` too).
    pub waited_reads: u64,
    /// Reads a copy on another node answered (a database this node holds
    /// no copy of).
    pub remote_reads: u64,
    /// Reads that went to the primary: the wait ran out (`ryw`) or the
    /// database is `strong`.
    pub primary_reads: u64,
    /// Of `primary_reads`, those that first waited in vain (`ryw`), or, for
    /// a database held elsewhere, found no copy that answered.
    pub fell_back_reads: u64,
    /// Writes sent to the primary's node.
    pub primary_writes: u64,
    /// Writes another node sent here as to the primary, after this copy
    /// handed the primary over, sent on to the new one
    /// (`dispatch::relay`).
    pub relayed_writes: u64,
    /// Requests sent on a connection's own stream to the primary while a
    /// transaction, WATCH or blocking command tied it there.
    pub pinned: u64,
    /// Requests sent to another node while one before them on the same
    /// connection was still awaiting its reply (a window of pipelined
    /// writes to the primary, or reads to a copy, `conn`); these count in
    /// their routes too.
    pub pipelined: u64,
    /// Microseconds reads spent waiting for their connection's write.
    pub wait_us: u64,
}

/// One SLOWLOG entry.
pub struct SlowEntry {
    pub id: u64,
    pub time: i64,
    pub duration_us: u64,
    pub args: Vec<Vec<u8>>,
    pub peer: String,
    pub name: Vec<u8>,
}

/// CLIENT PAUSE state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PauseMode {
    None,
    Write,
    All,
}

pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub ks: Keyspace,
    pub log: PropLog,
    /// Snapshots and the append-only log.
    pub persist: crate::persist::Persist,
    pub clients: BTreeMap<u64, Rc<ClientInfo>>,
    pub monitors: Vec<Rc<ClientInfo>>,
    pub stats: TenantStats,
    /// What its customers used on this node since the cron last handed
    /// it to the node's meter (`crate::meter`).
    pub usage: crate::meter::Usage,
    /// When the cron last handed `usage` over (ms).
    pub usage_handed_ms: i64,
    pub slowlog: VecDeque<SlowEntry>,
    pub slowlog_next_id: u64,
    /// The database's Lua scripts (SCRIPT LOAD).
    pub scripts: crate::script::Scripts,
    /// Its function libraries (FUNCTION LOAD): data, persisted and
    /// replicated.
    pub functions: crate::script::function::Functions,
    /// A customer database's ACL users as an aclfile (None: only its
    /// default user, as made): data too, persisted and replicated with
    /// the keys (the users themselves are in `Shared::acl`, where logins
    /// on every executor find them; docs/ACL.md).
    pub users_file: Option<Vec<u8>>,
    pub latency: HashMap<&'static str, LatencyEvent>,
    /// `latency-tracking` as of the running command (per-command
    /// histograms are kept).
    pub latency_tracking: bool,
    pub pause_mode: PauseMode,
    pub pause_until_ms: i64,
    /// Changes ever made (Redis's `dirty`; changes since the last save are
    /// this minus `persist.dirty_at_save`).
    pub dirty: u64,
    pub rng: SmallRng,
    /// Active expiry is on (DEBUG SET-ACTIVE-EXPIRE).
    pub active_expire: bool,
    /// Where the active-expiry cycle resumes (database index).
    pub expire_cursor_db: usize,
    pub pubsub: PubSub,
    /// `notify-keyspace-events` flags (copied from the settings per command).
    pub notify_flags: u32,
    /// The pubsub output-buffer limit for subscribers' queues.
    pub push_limit: PushLimit,
    /// WATCHed keys → watching clients.
    pub watched: hashbrown::HashMap<(usize, Vec<u8>), Vec<Rc<ClientInfo>>>,
    /// Clients blocked in BLPOP and friends.
    pub blocked: hashbrown::HashMap<u64, crate::blocking::Blocked>,
    /// Keys with clients blocked on them (BLPOP...) → FIFO of client ids.
    pub blocked_keys: hashbrown::HashMap<(usize, Vec<u8>), VecDeque<u64>>,
    /// LFU counters are kept (log factor, decay minutes) when an LFU
    /// maxmemory policy is set; else `lru` holds the LRU clock.
    pub lfu: Option<(u32, u32)>,
    /// Keys written since blocked clients were last served.
    pub ready_keys: Vec<(usize, Vec<u8>)>,
    /// Client-side caching: who read which keys (`tracking.rs`).
    pub tracking: crate::tracking::Tracking,
    /// Memory charged to this tenant (see `alloc`).
    pub mem: std::sync::Arc<crate::alloc::Account>,
    /// A customer's plan limits (None for the default tenant, which the
    /// server's `maxmemory` limits against the whole process, as Redis).
    pub limit: Option<MemLimit>,
    /// Primary (decides expiry and eviction itself) or replica (applies a
    /// primary's effects and never deletes a key on its own).
    pub role: crate::repl::Role,
    /// Replication ids (Redis's `replid`/`replid2` model); the offset is
    /// the propagation log's.
    pub repl: crate::repl::ReplIds,
    /// Dropped from the catalog: its periodic work stops.
    pub removed: bool,
    /// Replicas attached to this tenant (the primary's side).
    pub replicas: Vec<std::rc::Rc<crate::repl::primary::ReplicaLink>>,
    /// Woken when the log grows, so replica links send the new bytes.
    pub repl_wake: std::rc::Rc<tokio::sync::Notify>,
    /// Clients in WAIT, woken when a replica acknowledges.
    pub ack_waiters: Vec<Rc<ClientInfo>>,
    /// Unix ms of the last PING sent into the replication stream.
    pub repl_last_ping_ms: i64,
    /// The primary this tenant follows (REPLICAOF), and its link's state.
    pub upstream: Option<crate::repl::replica::Upstream>,
    /// As a cluster replica: the stream customers' writes are forwarded to
    /// the primary on (this executor's; started on first use).
    pub forwarder: Option<crate::forward::Forwarder>,
    /// This node holds no copy: every customer request is forwarded to the
    /// nodes that do (`Shared::remote_route`); the keyspace stays empty.
    pub remote: bool,
    /// A remote tenant's streams to its copies' nodes (reads).
    pub reads: crate::forward::Reads,
    /// A remote tenant's pub/sub relay (see `relay`).
    pub relay: std::rc::Rc<crate::relay::Relay>,
    /// Generations of REPLICAOF (a link task stops when it is not current;
    /// bump it with [`Tenant::next_upstream`]).
    pub upstream_gen: u64,
    /// Woken when `upstream_gen` moves: the link task of the old
    /// generation ends at once, closing its stream, so its primary stops
    /// counting it (a copy dropped here must not stay "synced" there).
    pub upstream_moved: std::rc::Rc<tokio::sync::Notify>,
    /// As a replica on a cluster link: how far behind its primary it is, in
    /// ms, from the primary's last time stamp (None: no stamp yet).
    pub master_lag_ms: Option<i64>,
    /// Durability `region`: the cluster address of the in-region standby
    /// that must have a write before it is acknowledged (None: `async`,
    /// acknowledged after the local write).
    pub standby: Option<std::net::SocketAddr>,
    /// The failover epoch of the tenant's role record (0 standalone): the
    /// first part of every token this node gives (docs/ROUTING.md).
    pub epoch: u64,
    /// Writes need this node's lease (see `TenantSpec::leased`).
    pub leased: bool,
    /// The catalog's `consistency` (see `TenantSpec::consistency`).
    pub consistency: crate::catalog::Consistency,
    /// Woken whenever a replica applies a chunk of its primary's stream
    /// (or loads a full sync): reads waiting for a connection's own write
    /// to arrive (`consistency: ryw`) look again.
    pub applied: std::rc::Rc<tokio::sync::Notify>,
    /// Durability `region` on its primary (see `TenantSpec::durable`).
    pub durable: bool,
    /// The copy is kept only a while (see `TenantSpec::leaving`).
    pub leaving: bool,
    /// The log offset right after the latest client write (the target its
    /// reply waited for): a `strong` read waits until the standby has it.
    pub pending_write_offset: u64,
    /// The highest offset the current standby acknowledged (kept when its
    /// link drops; reset when the standby changes).
    pub standby_acked: u64,
    /// As a replica: a sync with its primary completed since this process
    /// started (see `ReplStatus::synced_since_start`).
    pub synced_since_start: bool,
    /// The log offset up to which writes were already counted as discarded
    /// (a planned handoff that went ahead without them): the rejoin's full
    /// sync does not count them twice.
    pub discard_counted: u64,
    /// This copy was the primary (in this process, or when it stopped) and
    /// follows another now, without a completed sync yet: its data may
    /// hold writes the new primary never had (the sync counts and drops
    /// them). Its customers' reads go to the primary meanwhile, so what
    /// the database never had is never shown.
    pub diverged: bool,
    /// Its role record named this node the primary since it last followed
    /// another (see `diverged`).
    pub served_as_primary: bool,
    /// A lease has covered this tenant at its epoch since that epoch (or
    /// the lease) reached this node. Until then a leased primary's reads
    /// need the lease too, whatever the consistency: one that restarted
    /// from its saved record may have been replaced meanwhile, and its own
    /// data may hold writes its successor never had.
    pub lease_proven: bool,
    /// When the role record last moved this tenant to a newer epoch
    /// (None: never): a primary's lease covers the new epoch only from its
    /// next renewal (asked for at once), and its writes wait for that a
    /// little while. On the monotonic clock, as the lease is: a step of
    /// the wall clock neither ends nor stretches the wait.
    pub epoch_changed_at: Option<std::time::Instant>,
    /// Since when a `region` write found no standby attached (None: one
    /// is): writes wait `standby-wait-ms` from then for one (monotonic).
    pub standby_missing_since: Option<std::time::Instant>,
    /// A customer's plan command rate (None: unlimited).
    pub rate: Option<RateLimit>,
    /// A `FAILOVER` in progress: writes are held as by `CLIENT PAUSE
    /// WRITE`, which `CLIENT UNPAUSE` does not lift.
    pub failover: Option<crate::repl::failover::Failover>,
    /// Named the primary by a move of the primary (`TenantSpec::
    /// promote_at`) while still applying the old primary's stream: the
    /// offset to reach, and the Unix ms after which it takes over with
    /// what it has (`repl::replica::take_over`). Writes wait meanwhile.
    pub taking_over: Option<(u64, i64)>,
    /// A move of this primary to another region froze its log until this
    /// Unix ms: no expiry, eviction or replication PING appends to it, so
    /// the offset the move published stands still.
    pub frozen_until_ms: i64,
}

/// A customer's memory plan: what is not set falls back to the server's
/// `maxmemory` / `maxmemory-policy`, applied to the customer's own memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemLimit {
    /// 0: the server's `maxmemory`.
    pub maxmemory: u64,
    pub policy: Option<crate::evict::Policy>,
}

/// `INFO stats instantaneous_ops_per_sec`, as Redis computes it: every
/// 100 ms the cron records the command rate since the previous sample; the
/// figure is the mean of the last 16 samples (Redis's
/// `STATS_METRIC_SAMPLES`), so it follows a change within about 1.6 s.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpsMeter {
    samples: [u64; OpsMeter::SAMPLES],
    next: usize,
    last_ms: i64,
    last_ops: u64,
}

impl OpsMeter {
    pub const SAMPLES: usize = 16;
    pub const PERIOD_MS: i64 = 100;

    /// Records a sample if a period has passed since the last one
    /// (`total_ops`: commands processed so far).
    pub fn sample(&mut self, now_ms: i64, total_ops: u64) {
        if self.last_ms == 0 {
            self.last_ms = now_ms;
            self.last_ops = total_ops;
            return;
        }
        let dt = now_ms - self.last_ms;
        if dt < Self::PERIOD_MS {
            return;
        }
        let ops = total_ops.saturating_sub(self.last_ops);
        self.samples[self.next] = ops * 1000 / dt as u64;
        self.next = (self.next + 1) % Self::SAMPLES;
        self.last_ms = now_ms;
        self.last_ops = total_ops;
    }

    pub fn per_sec(&self) -> u64 {
        self.samples.iter().sum::<u64>() / Self::SAMPLES as u64
    }
}

/// A customer's plan command rate, as a token bucket: `per_sec` tokens a
/// second, at most one second's worth saved up (so a burst of `per_sec`
/// commands after a quiet second runs at once). A command takes a token;
/// with none left its connection waits until the bucket refills instead
/// of getting an error, so a client over its plan slows down and loses
/// nothing (Upstash fails such commands; a throttled client keeps working
/// and its latency tells the story). All of a tenant's connections run on
/// its executor, so the bucket needs no lock.
#[derive(Clone, Debug)]
pub struct RateLimit {
    per_sec: f64,
    tokens: f64,
    last: std::time::Instant,
}

impl RateLimit {
    /// A full bucket for `per_sec` commands a second (`per_sec` > 0).
    pub fn new(per_sec: u64, now: std::time::Instant) -> RateLimit {
        let per_sec = per_sec.max(1) as f64;
        RateLimit {
            per_sec,
            tokens: per_sec,
            last: now,
        }
    }

    /// The same rate as `per_sec`, keeping what is saved up.
    pub fn set_rate(&mut self, per_sec: u64) {
        self.per_sec = per_sec.max(1) as f64;
        self.tokens = self.tokens.min(self.per_sec);
    }

    pub fn per_sec(&self) -> u64 {
        self.per_sec as u64
    }

    fn refill(&mut self, now: std::time::Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.per_sec).min(self.per_sec);
    }

    /// Takes a token for one command, or says how long until one is there.
    pub fn take(&mut self, now: std::time::Instant) -> Result<(), std::time::Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let missing = 1.0 - self.tokens;
        Err(std::time::Duration::from_secs_f64(missing / self.per_sec))
    }

    /// Takes a token even if none is left (the command that waited runs
    /// now; the debt delays the next ones).
    pub fn take_anyway(&mut self, now: std::time::Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }
}

/// LATENCY samples of one event.
#[derive(Default, Clone)]
pub struct LatencyEvent {
    pub samples: VecDeque<(i64, u64)>,
    pub max: u64,
}

impl Tenant {
    /// A new generation of this tenant's upstream (REPLICAOF, a
    /// promotion, the copy's removal): the current link task, if any,
    /// stops now.
    pub fn next_upstream(&mut self) -> u64 {
        self.upstream_gen += 1;
        self.upstream_moved.notify_waiters();
        self.upstream_gen
    }

    pub fn new(id: TenantId, name: &str, databases: usize) -> Self {
        Tenant {
            id,
            name: name.to_string(),
            ks: Keyspace::new(databases),
            persist: crate::persist::Persist::default(),
            log: PropLog::default(),
            clients: BTreeMap::new(),
            monitors: Vec::new(),
            stats: TenantStats::default(),
            usage: Default::default(),
            usage_handed_ms: 0,
            slowlog: VecDeque::new(),
            slowlog_next_id: 0,
            scripts: Default::default(),
            functions: Default::default(),
            users_file: None,
            latency: HashMap::new(),
            latency_tracking: false,
            pause_mode: PauseMode::None,
            pause_until_ms: 0,
            dirty: 0,
            rng: SmallRng::from_os_rng(),
            active_expire: true,
            expire_cursor_db: 0,
            pubsub: PubSub::default(),
            notify_flags: 0,
            push_limit: PushLimit::default(),
            watched: Default::default(),
            blocked: Default::default(),
            blocked_keys: Default::default(),
            ready_keys: Vec::new(),
            tracking: Default::default(),
            lfu: None,
            mem: Default::default(),
            limit: None,
            role: crate::repl::Role::Primary,
            repl: crate::repl::ReplIds::random(),
            removed: false,
            replicas: Vec::new(),
            repl_wake: Default::default(),
            ack_waiters: Vec::new(),
            repl_last_ping_ms: 0,
            upstream: None,
            forwarder: None,
            remote: false,
            reads: Default::default(),
            relay: Default::default(),
            upstream_gen: 0,
            upstream_moved: Default::default(),
            master_lag_ms: None,
            standby: None,
            epoch: 0,
            leased: false,
            consistency: crate::catalog::Consistency::Ryw,
            applied: Default::default(),
            durable: false,
            leaving: false,
            pending_write_offset: 0,
            standby_acked: 0,
            synced_since_start: false,
            discard_counted: 0,
            diverged: false,
            served_as_primary: false,
            lease_proven: false,
            epoch_changed_at: None,
            standby_missing_since: None,
            rate: None,
            failover: None,
            taking_over: None,
            frozen_until_ms: 0,
        }
    }

    /// Lets attached replicas send what the log gained (cheap when there
    /// are none).
    pub fn wake_replicas(&self) {
        if !self.replicas.is_empty() {
            self.repl_wake.notify_waiters();
        }
    }

    /// A replica whose link to its primary is up (applying the stream).
    pub fn upstream_connected(&self) -> bool {
        self.upstream
            .as_ref()
            .is_some_and(|u| u.status == crate::repl::replica::LinkStatus::Connected)
    }

    /// A replica cut off from its primary that must not serve its stale
    /// data (`replica-serve-stale-data no`): only commands flagged `stale`
    /// run (`replaying`: the request is its primary's stream).
    pub fn running_stale(&self, serve_stale: bool, replaying: bool) -> bool {
        !serve_stale
            && self.role == crate::repl::Role::Replica
            && !replaying
            && !self.upstream_connected()
    }

    /// A CLIENT PAUSE (WRITE or ALL) or a FAILOVER holds writes at
    /// `now_ms`, or a move of the primary froze the log.
    pub fn paused(&self, now_ms: i64) -> bool {
        self.failover.is_some()
            || (self.pause_mode != PauseMode::None && now_ms < self.pause_until_ms)
            || now_ms < self.frozen_until_ms
    }

    /// What is held at `now_ms`: CLIENT PAUSE's mode (cleared once past its
    /// deadline), at least WRITE while a FAILOVER runs.
    pub fn pause_now(&mut self, now_ms: i64) -> PauseMode {
        if self.pause_mode != PauseMode::None && now_ms >= self.pause_until_ms {
            self.pause_mode = PauseMode::None;
        }
        match (self.pause_mode, self.failover.is_some()) {
            (PauseMode::None, true) => PauseMode::Write,
            (m, _) => m,
        }
    }

    /// Whether this tenant may delete keys on its own now (expiry,
    /// eviction). A replica never does: it hides logically expired keys
    /// and waits for its primary's `DEL`, so its data never runs ahead of
    /// the primary's. A paused primary does not either, so its offset
    /// stands still while clients are paused (a planned handoff relies on
    /// it), as Redis 7.0 stops expiry and eviction during a pause.
    pub fn deletes_on_its_own(&self, now_ms: i64) -> bool {
        self.role == crate::repl::Role::Primary && !self.paused(now_ms)
    }

    /// Whether this is a customer's database (not the server's own default
    /// tenant): commands scoped `Denied` are refused to it.
    pub fn is_customer(&self) -> bool {
        self.id != TenantId::DEFAULT
    }

    /// Where this tenant's files live under the server's `dir`: the
    /// default tenant directly in it (as redis-server), others in
    /// `tenants/<id>/` (ids never change, names may).
    pub fn data_dir(&self, base: &str) -> std::path::PathBuf {
        let base = std::path::Path::new(base);
        if self.is_customer() {
            base.join("tenants").join(self.id.0.to_string())
        } else {
            base.to_path_buf()
        }
    }

    /// Spawns one of this tenant's tasks on the current executor, its work
    /// charged to the tenant's memory account (the task cell is not).
    pub fn spawn<F: std::future::Future + 'static>(&self, fut: F) {
        // Not polled while a script of this tenant is suspended.
        crate::script::busy::spawn_gated(&self.mem, crate::script::busy::key_of(self), fut, false);
    }

    /// The memory limit that applies to this tenant, and whether it is
    /// measured by the tenant's own account (`mem`). A customer is (one
    /// database never makes another evict), against its plan or, where the
    /// plan says nothing, the server's settings; the default tenant is
    /// measured by the whole process, as in redis-server.
    pub fn memory_limits(&self, global: &crate::evict::Limits) -> (crate::evict::Limits, bool) {
        match self.limit {
            Some(l) => (
                crate::evict::Limits {
                    maxmemory: if l.maxmemory > 0 {
                        l.maxmemory
                    } else {
                        global.maxmemory
                    },
                    policy: l.policy.unwrap_or(global.policy),
                    ..*global
                },
                true,
            ),
            None => (*global, false),
        }
    }

    /// Records that `key` was deleted by expiry or eviction (decided
    /// here, not by a command): the effect is logged as `DEL`, as Redis
    /// propagates it, and WATCHes and blocked clients on the key notice.
    /// Commands record their effects through `Ctx::propagate`.
    pub fn record_del(&mut self, db: usize, key: &[u8]) {
        self.log.append(db, &[b"DEL", key]);
        self.touch_key(db, key);
    }

    /// Clients blocked on `key` look at it again (without it counting as
    /// changed: Redis's `signalKeyAsReady` alone).
    pub fn signal_ready(&mut self, db: usize, key: &[u8]) {
        if !self.blocked_keys.is_empty() && self.blocked_keys.contains_key(&(db, key.to_vec())) {
            // (Once per key until served: a command changing it ten times
            // makes its waiters look once.)
            if !self.ready_keys.iter().any(|(d, k)| *d == db && k == key) {
                self.ready_keys.push((db, key.to_vec()));
            }
        }
    }

    /// A key changed: fail WATCHes on it, wake clients blocked on it,
    /// invalidate it for the clients that cached it.
    pub fn touch_key(&mut self, db: usize, key: &[u8]) {
        if self.tracking.active() {
            crate::tracking::key_changed(self, key);
        }
        if !self.watched.is_empty() {
            if let Some(cs) = self.watched.get(&(db, key.to_vec())) {
                for c in cs {
                    c.dirty_cas.set(true);
                }
            }
        }
        self.signal_ready(db, key);
    }

    /// Before FLUSHDB/FLUSHALL/SWAPDB (Redis's `touchAllWatchedKeysInDb`):
    /// fails the WATCHes on keys of `dbs` that exist now, or, for SWAPDB,
    /// exist in the database about to take their place (`other`).
    pub fn touch_watched_in_dbs(&mut self, dbs: &[usize], other: Option<&dyn Fn(usize) -> usize>) {
        for ((d, key), cs) in self.watched.iter() {
            if !dbs.contains(d) {
                continue;
            }
            let exists = |db: usize| self.ks.dbs.get(db).is_some_and(|t| t.find(key).is_some());
            if exists(*d) || other.is_some_and(|o| exists(o(*d))) {
                for c in cs {
                    c.dirty_cas.set(true);
                }
            }
        }
    }

    /// Keyspace notification (no-op unless enabled for `class`).
    pub fn notify(&mut self, class: u32, event: &str, db: usize, key: &[u8], now_ms: i64) {
        if self.notify_flags & class != 0 {
            let (flags, limit) = (self.notify_flags, self.push_limit);
            self.pubsub
                .notify(flags, class, event, db, key, limit, now_ms);
        }
    }

    pub fn random(&mut self) -> u64 {
        self.rng.random()
    }

    /// Counts an error reply under its code (INFO errorstats).
    pub fn count_error(&mut self, msg: &str) {
        let code = msg.split(' ').next().unwrap_or("ERR");
        self.stats.total_error_replies += 1;
        *self.stats.errors.entry(code.to_string()).or_insert(0) += 1;
    }

    /// Records a latency sample (LATENCY LATEST/HISTORY) when `ms`
    /// reaches `latency-monitor-threshold` (`threshold_ms`; 0: off).
    pub fn latency_sample(&mut self, event: &'static str, ms: u64, threshold_ms: u64, now_s: i64) {
        if threshold_ms == 0 || ms < threshold_ms {
            return;
        }
        let ev = self.latency.entry(event).or_default();
        if let Some(last) = ev.samples.back_mut() {
            if last.0 == now_s {
                last.1 = last.1.max(ms);
                ev.max = ev.max.max(ms);
                return;
            }
        }
        ev.samples.push_back((now_s, ms));
        if ev.samples.len() > 160 {
            ev.samples.pop_front();
        }
        ev.max = ev.max.max(ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instantaneous_ops_is_the_mean_of_the_last_sixteen_periods() {
        let mut m = OpsMeter::default();
        m.sample(1_000, 0);
        assert_eq!(m.per_sec(), 0);
        // 500 commands per 100 ms: 5,000/s once the 16 samples are full.
        let mut ops = 0;
        for i in 1..=8 {
            ops += 500;
            m.sample(1_000 + i * 100, ops);
        }
        assert_eq!(m.per_sec(), 2_500, "half the window at 5,000/s");
        for i in 9..=16 {
            ops += 500;
            m.sample(1_000 + i * 100, ops);
        }
        assert_eq!(m.per_sec(), 5_000);
        // Calls closer than a period apart are not samples.
        m.sample(1_000 + 16 * 100 + 50, ops + 10_000);
        assert_eq!(m.per_sec(), 5_000);
        // The 10,000 land in the next sample (100,000/s for one period);
        // then idle: 0 once 16 quiet periods have replaced it.
        let t = 1_000 + 17 * 100;
        m.sample(t, ops + 10_000);
        assert_eq!(m.per_sec(), (15 * 5_000 + 100_000) / 16);
        for i in 1..=16 {
            m.sample(t + i * 100, ops + 10_000);
        }
        assert_eq!(m.per_sec(), 0);
    }
}
