//! Executors: one thread per core, each a single-threaded tokio runtime
//! that owns some tenants outright (shared-nothing, as Dragonfly shards by
//! key; we shard by tenant).
//!
//! Every executor accepts connections (each polls a duplicate of the
//! listening socket, so accepts spread over cores). A
//! connection is handed to the executor that owns its tenant *once*, as a
//! raw socket; from then on its commands run on that thread with no
//! cross-thread hop and no locks around the keyspace. Standalone
//! `anykv server` has one default tenant, owned by executor 0.

use socket2::{Domain, Protocol, Socket, Type};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::script::busy;
use crate::shared::{GlobalStats, Shared};
use crate::stream::{ClientStream, HandoffStream};
use crate::tenant::{Tenant, TenantId};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid bind address '{0}'")]
    BadBind(String),
    #[error("could not bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no address to listen on (all optional binds failed)")]
    NoListener,
    #[error("could not start executor thread: {0}")]
    Thread(std::io::Error),
    #[error("could not load the data: {0}")]
    Load(String),
}

/// A running server.
pub struct Server {
    pub shared: Arc<Shared>,
    /// Addresses actually bound (with the resolved port).
    pub local_addrs: Vec<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
}

/// A connection on its way to the executor that owns its tenant: from the
/// accepting executor, or after AUTH logged it in to another tenant.
pub struct Handoff {
    pub stream: crate::stream::HandoffStream,
    pub tenant: TenantId,
    pub carry: Option<crate::conn::Carry>,
}

/// What an executor receives from other threads, in order on one channel.
pub enum ExecMsg {
    Conn(Handoff),
    Tenant(TenantChange),
    /// Report a tenant's replication now (a planned handoff waits on it),
    /// with the backlog's average write size when asked (it reads the
    /// whole backlog: a forced promotion's estimate).
    Probe(
        TenantId,
        bool,
        tokio::sync::oneshot::Sender<crate::metrics::ReplStatus>,
    ),
    /// A move of the tenant's primary (this node) to another region stops
    /// writing: freeze the log until this Unix ms (0: thaw it, the move
    /// failed) and report its replication, whose offset then stands still.
    Freeze(
        TenantId,
        i64,
        tokio::sync::oneshot::Sender<crate::metrics::ReplStatus>,
    ),
    /// A planned handoff went ahead without the standby having the log
    /// past this offset (durability `async`, out of time): count and log
    /// the writes the new primary will not have (`repl::replica::abandon`).
    Abandon(TenantId, u64),
    /// Close every customer's connection (`Shared::close_customers`).
    CloseCustomers,
}

/// A change of the tenant catalog for the executor that owns the tenant
/// (sent by [`Shared::set_catalog`]).
pub enum TenantChange {
    /// Create the tenant (loading its files) or update its name and plan.
    Upsert(crate::catalog::TenantSpec),
    /// Stop serving it: close its clients, make its log durable, drop it.
    Remove(TenantId),
}

/// Which executor owns a tenant.
pub fn owner_of(t: TenantId, executors: usize) -> usize {
    (t.0 % executors.max(1) as u64) as usize
}

/// Parses Redis `bind` entries: `*` (all IPv4), `::*` (all IPv6),
/// addresses, and a leading `-` for "optional: skip if unavailable".
fn parse_binds(binds: &[String], port: u16) -> Result<Vec<(SocketAddr, bool)>, StartError> {
    let mut out = Vec::new();
    for b in binds.iter().flat_map(|b| b.split_whitespace()) {
        let (optional, name) = match b.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, b),
        };
        let ip: IpAddr = match name {
            "*" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            "::*" => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            other => other
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| StartError::BadBind(b.to_string()))?,
        };
        out.push((SocketAddr::new(ip, port), optional));
    }
    Ok(out)
}

fn listen(addr: SocketAddr, backlog: i32) -> std::io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // `[::]` beside `0.0.0.0` needs IPV6_V6ONLY (Fly: 6PN and Flycast).
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(backlog)?;
    Ok(sock.into())
}

impl Server {
    pub fn start(config: Config) -> Result<Server, StartError> {
        let n = match config.executors() {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        };
        let binds = parse_binds(&config.bind(), config.port())?;
        let catalog =
            crate::catalog::Catalog::load(&config.tenants_file()).map_err(StartError::Load)?;
        let shared = Shared::new(config, n);
        // Executors load the catalog's tenants themselves at start.
        shared.init_catalog(catalog);
        let shared = Arc::new(shared);

        // Executor 0 binds first so an ephemeral port (0) is resolved once.
        let mut per_exec: Vec<Vec<std::net::TcpListener>> = (0..n).map(|_| Vec::new()).collect();
        let mut local_addrs = Vec::new();
        for (addr, optional) in binds {
            let first = match listen(addr, 511) {
                Ok(l) => l,
                Err(e) if optional => {
                    tracing::warn!("Could not bind optional address {addr}: {e}");
                    continue;
                }
                Err(e) => return Err(StartError::Bind { addr, source: e }),
            };
            let actual = first
                .local_addr()
                .map_err(|e| StartError::Bind { addr, source: e })?;
            // Every executor polls a duplicate of the one listening socket;
            // whichever wakes first accepts (no SO_REUSEPORT, so a second
            // server on the same port fails to start, as redis-server does).
            for l in per_exec.iter_mut().skip(1) {
                l.push(first.try_clone().map_err(|e| StartError::Bind {
                    addr: actual,
                    source: e,
                })?);
            }
            per_exec[0].push(first);
            local_addrs.push(actual);
        }
        if local_addrs.is_empty() {
            return Err(StartError::NoListener);
        }
        shared.tcp_port.store(local_addrs[0].port() as u64, Relaxed);

        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..n {
            let (tx, rx) = mpsc::unbounded_channel::<ExecMsg>();
            senders.push(tx);
            receivers.push(rx);
        }
        let _ = shared.handoffs.set(senders.clone());
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for (idx, (listeners, rx)) in per_exec.into_iter().zip(receivers).enumerate() {
            let shared = shared.clone();
            let ready = ready_tx.clone();
            let h = std::thread::Builder::new()
                .name(format!("anykv-exec-{idx}"))
                .spawn(move || executor_main(idx, shared, listeners, rx, ready))
                .map_err(StartError::Thread)?;
            threads.push(h);
        }
        drop(ready_tx);
        // Every executor loads its tenants' data before anyone is served.
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    shared.begin_shutdown();
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(StartError::Load(e));
                }
                Err(_) => {
                    return Err(StartError::Load(
                        "the executor stopped while loading".into(),
                    ))
                }
            }
        }
        for a in &local_addrs {
            tracing::info!("Ready to accept connections tcp {a}");
        }
        Ok(Server {
            shared,
            local_addrs,
            threads,
        })
    }

    /// Waits for every executor to finish (after shutdown).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

type Tenants = Rc<RefCell<HashMap<TenantId, Rc<RefCell<Tenant>>>>>;

fn executor_main(
    idx: usize,
    shared: Arc<Shared>,
    listeners: Vec<std::net::TcpListener>,
    mut handoffs: mpsc::UnboundedReceiver<ExecMsg>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("executor {idx}: cannot build runtime: {e}");
            shared.begin_shutdown();
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let tenants: Tenants = Rc::new(RefCell::new(HashMap::new()));
        // Tenants this node holds no copy of, made when a client logs in
        // (see `remote_tenant`).
        let remotes: Tenants = Rc::new(RefCell::new(HashMap::new()));
        // Load every tenant this executor owns before serving anyone; a
        // load error stops the server (never start with partial data).
        let loaded = load_tenants(idx, &tenants, &shared);
        let failed = loaded.is_err();
        let _ = ready.send(loaded);
        // Let go at once: Server::start counts replies until every sender
        // is gone, so an executor that dies must not hold one.
        drop(ready);
        if failed {
            return;
        }
        for t in tenants.borrow().values() {
            t.borrow().spawn(cron(t.clone(), shared.clone()));
            crate::repl::replica::kick(t, &shared);
        }
        tokio::task::spawn_local(crate::busypoll::run(shared.clone()));
        for l in listeners {
            match TcpListener::from_std(l) {
                Ok(l) => {
                    tokio::task::spawn_local(accept_loop(
                        idx,
                        l,
                        tenants.clone(),
                        remotes.clone(),
                        shared.clone(),
                    ));
                }
                Err(e) => tracing::error!("executor {idx}: listener: {e}"),
            }
        }
        {
            let tenants = tenants.clone();
            let remotes = remotes.clone();
            let shared = shared.clone();
            tokio::task::spawn_local(async move {
                while let Some(m) = handoffs.recv().await {
                    // A tenant's own work waits while a script of it is
                    // suspended (script::busy::when_free), in order; the
                    // other tenants' goes on.
                    let held = |id: &TenantId| tenants.borrow().get(id).cloned();
                    match m {
                        ExecMsg::Conn(h) => match ClientStream::from_handoff(h.stream) {
                            Ok(s) => start_conn(s, h.tenant, h.carry, &tenants, &remotes, &shared),
                            Err(e) => tracing::warn!("handoff: {e}"),
                        },
                        ExecMsg::Tenant(TenantChange::Upsert(spec)) => match held(&spec.id) {
                            Some(t) => {
                                let (tenants, shared) = (tenants.clone(), shared.clone());
                                busy::when_free(&t, move |_| upsert_tenant(&tenants, &shared, spec))
                            }
                            None => upsert_tenant(&tenants, &shared, spec),
                        },
                        ExecMsg::Tenant(TenantChange::Remove(id)) => {
                            if let Some(t) = held(&id) {
                                let (tenants, shared) = (tenants.clone(), shared.clone());
                                busy::when_free(&t, move |_| remove_tenant(&tenants, &shared, id))
                            }
                        }
                        ExecMsg::Probe(id, write_size, reply) => {
                            // While a script holds the database, what it
                            // was when the script began (see Busy::repl).
                            let busy = held(&id).and_then(|t| busy::running(&t));
                            if let Some(b) = busy {
                                let _ = reply.send(b.repl.clone());
                            } else if let Some(t) = held(&id) {
                                busy::when_free(&t, move |t| {
                                    let t = t.borrow();
                                    let _ = reply.send(if write_size {
                                        crate::metrics::ReplStatus::with_write_size(&t)
                                    } else {
                                        crate::metrics::ReplStatus::of(&t)
                                    });
                                });
                            }
                        }
                        ExecMsg::Freeze(id, until_ms, reply) => {
                            // After a running script: its writes are in
                            // the offset reported.
                            if let Some(t) = held(&id) {
                                busy::when_free(&t, move |t| {
                                    let mut t = t.borrow_mut();
                                    t.frozen_until_ms = until_ms;
                                    let _ = reply.send(crate::metrics::ReplStatus::of(&t));
                                });
                            }
                        }
                        ExecMsg::CloseCustomers => {
                            for t in tenants.borrow().values().chain(remotes.borrow().values()) {
                                // (A tenant a script holds: its clients
                                // close when they next wake.)
                                let Ok(t) = t.try_borrow() else { continue };
                                for c in t.clients.values().filter(|c| !c.link.get()) {
                                    c.kill();
                                }
                            }
                        }
                        ExecMsg::Abandon(id, at) => {
                            if let Some(t) = held(&id) {
                                busy::when_free(&t, move |t| {
                                    crate::repl::replica::abandon(&mut t.borrow_mut(), at);
                                });
                            }
                        }
                    }
                }
            });
        }
        let mut rx = shared.shutdown_rx();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                break;
            }
        }
        // Give connections a moment to finish the batch in flight.
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Persistence on the way out: fsync the log, save if asked (or if
        // save points are set, unless SHUTDOWN NOSAVE).
        let save = shared.shutdown_save();
        let has_points = !shared.config.read().save_params().is_empty();
        // A database a script holds: unless SHUTDOWN NOSAVE, a script
        // that has not written is killed and one that has gets up to
        // SHUTDOWN_SCRIPT_WAIT to end, so the database can be saved.
        let all: Vec<(TenantId, Rc<RefCell<Tenant>>)> = tenants
            .borrow()
            .iter()
            .map(|(id, t)| (*id, t.clone()))
            .collect();
        if save != Some(false) {
            let until = std::time::Instant::now() + SHUTDOWN_SCRIPT_WAIT;
            for (_, t) in &all {
                if let Some(b) = busy::running(t) {
                    if !b.wrote.get() {
                        b.kill.set(true);
                    }
                }
            }
            for (_, t) in &all {
                busy::idle_or(t, until).await;
            }
        }
        for (id, t) in &all {
            if !busy::is_free(t) {
                // SHUTDOWN NOSAVE past a script that holds its database,
                // or one that wrote and did not end in time: its log is
                // on disk up to the script, whose effects are lost, as
                // with Redis's SHUTDOWN NOSAVE.
                tracing::warn!(
                    tenant = id.0,
                    "a script still runs: its database is not saved"
                );
                continue;
            }
            if let Err(e) = crate::persist::shutdown(&mut t.borrow_mut(), save, has_points) {
                tracing::error!("{e}");
            }
            // The last batch's usage, for the node's last usage record.
            hand_over_usage(&mut t.borrow_mut(), &shared);
        }
        for t in remotes.borrow().values() {
            let u = std::mem::take(&mut t.borrow_mut().usage);
            shared.meter.add_usage(t.borrow().id.0, u);
        }
    });
}

/// How long a shutdown that saves waits for a script that has written
/// (and so cannot be killed) to end.
const SHUTDOWN_SCRIPT_WAIT: Duration = Duration::from_secs(10);

/// A customer's tenant as the catalog describes it (not loaded yet).
fn customer_tenant(spec: &crate::catalog::TenantSpec, dbs: usize) -> Tenant {
    let mut t = Tenant::new(spec.id, &spec.name, dbs);
    t.limit = Some(crate::tenant::MemLimit {
        maxmemory: spec.maxmemory,
        policy: spec.policy,
    });
    set_rate(&mut t, spec.ops_per_sec);
    t
}

/// The executor's stand-in for a tenant this node holds no copy of (in
/// the remote catalog): an empty keyspace that never loads or saves a
/// file and takes part in no replication; its clients' requests are all
/// forwarded (`dispatch::route_remote`). Made at its first login; its
/// route is read from the remote catalog at every request, so placement
/// changes apply at once, and its catalog entry (consistency, plan) every
/// second ([`remote_cron`]), which lets it go once the tenant has left the
/// remote catalog and its last client is gone.
fn remote_tenant(
    remotes: &Tenants,
    id: TenantId,
    shared: &Arc<Shared>,
) -> Option<Rc<RefCell<Tenant>>> {
    let spec = shared.remote_catalog().get(id).cloned()?;
    if let Some(t) = remotes.borrow().get(&id) {
        follow_spec(&mut t.borrow_mut(), &spec);
        return Some(t.clone());
    }
    let dbs = shared.config.read().databases();
    let mut t = customer_tenant(&spec, dbs);
    t.remote = true;
    t.consistency = spec.consistency;
    let t = Rc::new(RefCell::new(t));
    t.borrow()
        .spawn(remote_cron(t.clone(), remotes.clone(), shared.clone()));
    t.borrow()
        .spawn(crate::relay::run(t.clone(), shared.clone()));
    remotes.borrow_mut().insert(id, t.clone());
    tracing::info!(tenant = id.0, name = %spec.name, "serving a database held on other nodes");
    Some(t)
}

/// A stand-in takes what its catalog entry says now.
fn follow_spec(t: &mut Tenant, spec: &crate::catalog::TenantSpec) {
    t.name = spec.name.clone();
    t.consistency = spec.consistency;
    set_rate(t, spec.ops_per_sec);
    close_retired_tokens(t, spec);
}

/// Closes the connections that logged in with a token the catalog entry
/// no longer has (a rotation's old token retired): a retired token stops
/// working for connections already open too.
fn close_retired_tokens(t: &Tenant, spec: &crate::catalog::TenantSpec) {
    for c in t.clients.values() {
        if let Some(d) = c.token.get() {
            if !spec.token_sha256.contains(&d) {
                tracing::info!(
                    id = c.id,
                    tenant = spec.id.0,
                    "closing a connection whose token was retired"
                );
                c.kill();
            }
        }
    }
}

/// The tokens this tenant's open connections logged in with are in use
/// (marked every second): an idle connection still counts, so a
/// rotation's old token is not retired under an app that keeps one open.
fn mark_tokens(t: &Tenant, shared: &Shared) {
    let mut seen: Vec<[u8; 32]> = Vec::new();
    for c in t.clients.values() {
        if let Some(d) = c.token.get() {
            if !seen.contains(&d) {
                seen.push(d);
            }
        }
    }
    shared.meter.tokens_used(t.id.0, &seen);
}

/// A remote tenant's stand-in, every second: its route counters published,
/// its catalog entry followed (a consistency or plan changed through the
/// admin API applies to the connections it has, not only to new logins);
/// once the tenant has left the remote catalog (deleted, or now held
/// here) and no client is left, it is let go (its relay stops too).
async fn remote_cron(t: Rc<RefCell<Tenant>>, remotes: Tenants, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown_rx();
    let id = t.borrow().id;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
        crate::metrics::publish_routes(&t.borrow());
        mark_tokens(&t.borrow(), &shared);
        // Its customers' usage (it stores nothing here).
        let u = std::mem::take(&mut t.borrow_mut().usage);
        shared.meter.add_usage(id.0, u);
        match shared.remote_catalog().get(id) {
            Some(spec) => follow_spec(&mut t.borrow_mut(), spec),
            None if t.borrow().clients.is_empty() => {
                let mut map = remotes.borrow_mut();
                if map.get(&id).is_some_and(|x| Rc::ptr_eq(x, &t)) {
                    map.remove(&id);
                }
                t.borrow().relay.retired.set(true);
                t.borrow().relay.wake.notify_one();
                tracing::info!(
                    tenant = id.0,
                    "no longer serving a database held on other nodes"
                );
                return;
            }
            // Its clients stay until they leave; their tokens are still
            // checked: against the entry of a copy now held here, or, for
            // a database deleted, none is valid any more.
            None => match shared.catalog().get(id) {
                Some(spec) => close_retired_tokens(&t.borrow(), spec),
                None => {
                    for c in t.borrow().clients.values() {
                        if c.token.get().is_some() {
                            c.kill();
                        }
                    }
                }
            },
        }
    }
}

/// Applies a plan's `ops_per_sec` (0: unlimited), keeping the tokens saved
/// up when only the rate changes.
fn set_rate(t: &mut Tenant, ops_per_sec: u64) {
    t.rate = match (t.rate.take(), ops_per_sec) {
        (_, 0) => None,
        (Some(mut r), n) => {
            r.set_rate(n);
            Some(r)
        }
        (None, n) => Some(crate::tenant::RateLimit::new(n, std::time::Instant::now())),
    };
}

/// Loads a tenant's files (what loading allocates is the tenant's).
fn load_tenant(t: &mut Tenant, shared: &Arc<Shared>) -> Result<(), String> {
    let acct = t.mem.clone();
    crate::alloc::with_account(&acct, || crate::persist::startup(t, shared)).map_err(|e| {
        if t.is_customer() {
            format!("tenant {} (id {}): {e}", t.name, t.id.0)
        } else {
            e
        }
    })?;
    // Its users: the operator's `aclfile`; a database's come with its data
    // (snapshot and log), else from the `users.acl` ACL SAVE wrote.
    let users = if t.is_customer() {
        Some(t.data_dir(&shared.config.read().dir()).join("users.acl"))
            .filter(|p| t.users_file.is_none() && p.exists())
    } else {
        let f = shared.config.read().aclfile();
        (!f.is_empty()).then(|| std::path::PathBuf::from(f))
    };
    if let Some(path) = users {
        crate::cmd::acl::load_file(shared, t.id, &path)
            .map_err(|e| format!("Aborting Redis startup because of ACL errors: {e}"))?;
        if t.is_customer() {
            t.users_file = Some(shared.acl.read(t.id, crate::acl::file::serialize));
        }
    }
    Ok(())
}

/// Creates and loads the tenants executor `idx` owns: the default one and
/// those of the catalog.
fn load_tenants(idx: usize, tenants: &Tenants, shared: &Arc<Shared>) -> Result<(), String> {
    let n = shared.executors;
    let dbs = shared.config.read().databases();
    let mut mine: Vec<Tenant> = Vec::new();
    if owner_of(TenantId::DEFAULT, n) == idx {
        mine.push(Tenant::new(TenantId::DEFAULT, "default", dbs));
    }
    for spec in shared.catalog().tenants() {
        if owner_of(spec.id, n) == idx {
            let mut t = customer_tenant(spec, dbs);
            set_roles(&mut t, spec, shared);
            mine.push(t);
        }
    }
    for mut t in mine {
        if let Err(e) = load_tenant(&mut t, shared) {
            // The server's own database stops the start; a customer's is
            // not served (its logins are closed) and the others are, so
            // one database's files never take a node down.
            if !t.is_customer() {
                return Err(e);
            }
            tracing::error!("cannot serve {e}");
            metrics::counter!("anykv_tenant_load_errors_total").increment(1);
            continue;
        }
        tenants.borrow_mut().insert(t.id, Rc::new(RefCell::new(t)));
    }
    Ok(())
}

/// A tenant added or changed while the server runs. A new tenant whose
/// files cannot be loaded is not served (logins to it are closed) and the
/// error is logged; the server keeps serving the others.
fn upsert_tenant(tenants: &Tenants, shared: &Arc<Shared>, spec: crate::catalog::TenantSpec) {
    if let Some(rc) = tenants.borrow().get(&spec.id) {
        {
            let mut t = rc.borrow_mut();
            t.name = spec.name.clone();
            t.limit = Some(crate::tenant::MemLimit {
                maxmemory: spec.maxmemory,
                policy: spec.policy,
            });
            set_rate(&mut t, spec.ops_per_sec);
            set_roles(&mut t, &spec, shared);
            shared.settle_released(t.id.0, t.epoch);
            close_retired_tokens(&t, &spec);
            // Writes waiting for a standby that changed look again.
            for c in t.ack_waiters.iter() {
                c.wake.notify_one();
            }
        }
        crate::repl::replica::kick(rc, shared);
        tracing::info!(tenant = spec.id.0, name = %spec.name, "tenant updated");
        return;
    }
    let dbs = shared.config.read().databases();
    let mut t = customer_tenant(&spec, dbs);
    if let Err(e) = load_tenant(&mut t, shared) {
        tracing::error!("cannot add {e}");
        metrics::counter!("anykv_tenant_load_errors_total").increment(1);
        return;
    }
    set_roles(&mut t, &spec, shared);
    let t = Rc::new(RefCell::new(t));
    t.borrow().spawn(cron(t.clone(), shared.clone()));
    crate::repl::replica::kick(&t, shared);
    tenants.borrow_mut().insert(spec.id, t);
    tracing::info!(tenant = spec.id.0, name = %spec.name, "tenant added");
}

/// Applies the placement's role: follow the primary at `follow` over the
/// cluster link, or (None) be the primary. Nothing changes when the tenant
/// already follows that node or already is the primary.
/// The tenant's place in its role record: whom it follows, the standby
/// its writes wait for, the epoch its tokens carry.
fn set_roles(t: &mut Tenant, spec: &crate::catalog::TenantSpec, shared: &Shared) {
    set_follow(t, spec.follow, spec.promote_at, shared);
    if t.standby != spec.standby {
        t.standby_acked = 0;
    }
    t.standby = spec.standby;
    // Never back: a replica may have seen a newer epoch from its primary
    // (fenced links) before the record reached this node.
    // Newly under a controller's lease (its region's group formed and
    // took the tenant's record over) counts as a new epoch too: writes
    // wait for the first lease (asked for as the records changed) rather
    // than meet "no lease" in between.
    if spec.epoch > t.epoch || (spec.leased && !t.leased) {
        t.epoch_changed_at = Some(std::time::Instant::now());
        t.lease_proven = false;
    }
    t.epoch = t.epoch.max(spec.epoch);
    t.leased = spec.leased;
    t.consistency = spec.consistency;
    t.durable = spec.durable;
    t.leaving = spec.leaving;
}

/// Makes the tenant follow `follow`, or be the primary: at once, or, named
/// by a move with `promote_at`, once it has the old primary's stream up to
/// there (`repl::replica::promote_at`).
fn set_follow(
    t: &mut Tenant,
    follow: Option<SocketAddr>,
    promote_at: Option<u64>,
    shared: &Shared,
) {
    match follow {
        Some(addr) => {
            // No longer named the primary (a newer record).
            t.taking_over = None;
            if t.upstream.as_ref().and_then(|u| u.node) != Some(addr) {
                // A copy just made starts as a primary that never served:
                // only one its record named the primary counts, or one
                // that opened with data of its own (a restart: it may
                // have been a primary when it stopped, whatever its saved
                // record says now; its first sync clears it, at once for
                // a partial resync).
                let reopened =
                    t.upstream.is_none() && (t.log.offset() > 0 || t.ks.total_keys() > 0);
                if std::mem::take(&mut t.served_as_primary) || reopened {
                    t.diverged = true;
                }
                let host = addr.ip().to_string();
                crate::repl::replica::become_replica(
                    t,
                    host,
                    addr.port(),
                    Some(addr),
                    crate::util::mstime(),
                );
                tracing::info!(tenant = t.id.0, primary = %addr, "replica of the primary node");
            }
        }
        None => {
            t.served_as_primary = true;
            if t.upstream.as_ref().is_some_and(|u| u.node.is_some()) {
                let now = crate::util::mstime();
                let promoted = match promote_at {
                    Some(at) => {
                        let wait = shared.config.read().handoff_apply_wait_ms();
                        let wait = i64::try_from(wait).unwrap_or(i64::MAX);
                        crate::repl::replica::promote_at(t, at, now, wait)
                    }
                    None => {
                        crate::repl::replica::become_primary(t);
                        true
                    }
                };
                if promoted {
                    tracing::info!(tenant = t.id.0, "primary");
                }
            }
        }
    }
}

/// A tenant removed while the server runs: its clients are closed, its
/// running snapshot aborted, its log made durable and a snapshot saved when
/// save points are set; its files stay (the control plane deletes data once
/// no node serves the tenant).
fn remove_tenant(tenants: &Tenants, shared: &Arc<Shared>, id: TenantId) {
    let Some(t) = tenants.borrow_mut().remove(&id) else {
        return;
    };
    shared.repl_status.lock().remove(&id);
    // A copy dropped from a node that still serves the database through
    // the nodes that hold it (the placement sets the remote catalog
    // first): its customers move there, with the users they logged in
    // with, as a login through this node would have them.
    let served_elsewhere = shared.remote_catalog().get(id).is_some();
    if !served_elsewhere {
        shared.acl.forget(id);
    }
    shared.settle_released(id.0, u64::MAX);
    let mut t = t.borrow_mut();
    t.removed = true;
    // A replica link of this tenant stops now, closing its stream.
    t.upstream = None;
    t.next_upstream();
    for c in t.clients.values() {
        if served_elsewhere && !c.link.get() && !c.blocked.get() {
            c.rehome();
        } else {
            c.kill();
        }
    }
    // A copy the cluster no longer places here: its data lives on the
    // nodes that hold it. Its files go: kept, they would be replayed the
    // next time this node is given a copy (a whole history of writes, on
    // the executor, before a full sync replaces them all: a copy given
    // back later continues no history this one had).
    let dropped = served_elsewhere && t.persist.dir.ends_with(id.0.to_string());
    if dropped {
        crate::persist::abort_job(&mut t);
    } else {
        // As at a shutdown: a snapshot when save points are set, so a
        // tenant added back (or moved) finds its data.
        let has_points = !shared.config.read().save_params().is_empty();
        if let Err(e) = crate::persist::shutdown(&mut t, None, has_points) {
            tracing::error!("removing tenant {}: {e}", id.0);
        }
    }
    t.persist.aof = None;
    t.log.disable_sink();
    if dropped {
        drop_files(&t.persist.dir);
        tracing::info!(tenant = id.0, name = %t.name, "copy dropped: the database is held on other nodes");
    } else {
        tracing::info!(tenant = id.0, name = %t.name, "tenant removed");
    }
}

/// Removes a dropped copy's directory: renamed aside at once (a copy given
/// to this node again starts afresh), deleted on a thread of its own (a
/// large log takes a while to unlink).
fn drop_files(dir: &std::path::Path) {
    let aside = dir.with_extension(format!("dropped-{}", crate::util::mstime()));
    match std::fs::rename(dir, &aside) {
        Ok(()) => {
            std::thread::spawn(move || {
                if let Err(e) = std::fs::remove_dir_all(&aside) {
                    tracing::warn!("removing {}: {e}", aside.display());
                }
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("moving {} aside: {e}", dir.display()),
    }
}

fn start_conn(
    s: ClientStream,
    tenant: TenantId,
    carry: Option<crate::conn::Carry>,
    tenants: &Tenants,
    remotes: &Tenants,
    shared: &Arc<Shared>,
) {
    if shared.customers_closed() && matches!(s, ClientStream::Tcp(_)) {
        // The node is leaving: a customer's connection (a new one, or one
        // its AUTH moved here) closes at once.
        if carry.is_some() {
            shared.tenant_client_leave(tenant);
        }
        return;
    }
    let t = tenants.borrow().get(&tenant).cloned();
    let t = t.or_else(|| remote_tenant(remotes, tenant, shared));
    match t {
        Some(t) => {
            let serve = crate::conn::serve(s, t.clone(), tenant, shared.clone(), carry);
            busy::spawn_conn(&t, serve);
        }
        None => {
            tracing::error!("no tenant {:?} on this executor", tenant);
            if carry.is_some() {
                // Counted by the AUTH that moved it here.
                shared.tenant_client_leave(tenant);
            }
        }
    }
}

async fn accept_loop(
    idx: usize,
    listener: TcpListener,
    tenants: Tenants,
    remotes: Tenants,
    shared: Arc<Shared>,
) {
    let mut shutdown = shared.shutdown_rx();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let (mut stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        GlobalStats::add(&shared.stats.connections_received, 1);
        let max = shared.config.read().maxclients();
        if shared.stats.connected_clients.load(Relaxed) as u64 >= max {
            GlobalStats::add(&shared.stats.rejected_connections, 1);
            tracing::warn!(%peer, "max number of clients reached");
            let _ = stream
                .write_all(b"-ERR max number of clients reached\r\n")
                .await;
            continue;
        }
        // Tenants are known at accept time for standalone servers; with
        // tenancy the handoff happens after AUTH selects the tenant.
        let tenant = TenantId::DEFAULT;
        let owner = owner_of(tenant, shared.executors);
        if owner == idx {
            start_conn(
                ClientStream::Tcp(stream),
                tenant,
                None,
                &tenants,
                &remotes,
                &shared,
            );
        } else {
            match stream.into_std() {
                Ok(s) => shared.handoff(Handoff {
                    stream: HandoffStream::Tcp(s),
                    tenant,
                    carry: None,
                }),
                Err(e) => tracing::warn!("handoff: {e}"),
            }
        }
    }
}

/// Per-tenant periodic work at `hz`: active expiry, idle timeouts, pause
/// deadlines, memory peak, metrics.
/// Hands what the tenant's customers used here to the node's meter
/// (`crate::meter`), with its stored bytes while this node holds its
/// primary.
fn hand_over_usage(t: &mut Tenant, shared: &Shared) {
    if !t.is_customer() {
        return;
    }
    let u = std::mem::take(&mut t.usage);
    let stored = (t.role == crate::repl::Role::Primary && !t.remote).then(|| t.mem.used());
    shared.meter.hand_over(t.id.0, u, stored);
}

async fn cron(tenant: Rc<RefCell<Tenant>>, shared: Arc<Shared>) {
    let mut set = shared.settings();
    let mut shutdown = shared.shutdown_rx();
    let mut last_metrics = 0i64;
    loop {
        let (hz, effort) = {
            let c = shared.config.read();
            (c.hz().clamp(1, 500), c.active_expire_effort())
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(1000 / hz as u64)) => {}
            // (The executor hands the last usage over on its way out.)
            _ = shutdown.changed() => return,
        }
        shared.refresh(&mut set);
        let now = crate::util::mstime();
        let mut t = tenant.borrow_mut();
        if t.removed {
            hand_over_usage(&mut t, &shared);
            shared.meter.forget(t.id.0);
            return;
        }
        if now - t.usage_handed_ms >= 1000 {
            t.usage_handed_ms = now;
            hand_over_usage(&mut t, &shared);
            mark_tokens(&t, &shared);
            crate::cmd::migrate::close_idle_sockets();
        }
        // A copy taking over from a moved primary whose stream stopped
        // coming takes over with what it has once its wait is over.
        crate::repl::replica::take_over(&mut t, now);
        let cycle = std::time::Instant::now();
        crate::expire::active_expire_cycle(&mut t, now, effort, hz);
        let cycle_ms = cycle.elapsed().as_millis() as u64;
        t.latency_sample(
            "expire-cycle",
            cycle_ms,
            set.latency_threshold_ms,
            now / 1000,
        );
        crate::tracking::housekeeping(&mut t, set.tracking_max_keys);
        // Replicas learn the primary is alive from the stream itself: a
        // PING every repl-ping-replica-period (10 s), as Redis sends it.
        if !t.replicas.is_empty()
            && t.role == crate::repl::Role::Primary
            && !t.paused(now)
            && now - t.repl_last_ping_ms >= 10_000
        {
            t.repl_last_ping_ms = now;
            t.log.append_no_db(&[b"PING"]);
        }
        t.wake_replicas();
        if set.idle_timeout_s > 0 {
            let limit = set.idle_timeout_s as i64 * 1000;
            for c in t.clients.values() {
                if !c.monitor.get() && !c.blocked.get() && now - c.last_interaction_ms.get() > limit
                {
                    tracing::debug!(id = c.id, "Closing idle client");
                    c.kill();
                }
            }
        }
        t.pause_now(now);
        crate::repl::failover::progress(&mut t, now);
        let ops = t.stats.total_commands;
        t.stats.ops_meter.sample(now, ops);
        let (rules, pct, min, aof_on, fsync) = {
            let c = shared.config.read();
            if t.persist.enabled {
                // CONFIG SET dir / dbfilename: later snapshots go there (the
                // log's directory is fixed at start, as in Redis).
                t.persist.dir = t.data_dir(&c.dir());
                t.persist.dbfilename = c.dbfilename();
            }
            // `repl-backlog-size` from the command line or CONFIG SET (which
            // sets the caller's tenant at once) reaches every tenant here.
            let b = c.repl_backlog_size();
            if b != t.log.backlog_cap() {
                t.log.set_backlog_cap(b);
            }
            (
                c.save_params(),
                c.auto_aof_rewrite_percentage(),
                c.auto_aof_rewrite_min_size(),
                c.appendonly(),
                crate::persist::aof::FsyncPolicy::parse(&c.appendfsync()),
            )
        };
        crate::persist::apply_config(&mut t, aof_on, fsync);
        crate::persist::check_rules(&mut t, &rules, now, pct, min);
        {
            // Writes from outside connections (active expiry) and retries
            // after a failed write.
            let t = &mut *t;
            let _ = t.persist.write_log(&mut t.log, false);
        }
        crate::alloc::sample_peak();
        // Starts a save a rule or a command asked for (a no-op otherwise).
        drop(t);
        crate::persist::kick(&tenant);
        // A failover that just handed over starts its link to the target.
        crate::repl::replica::kick(&tenant, &shared);
        t = tenant.borrow_mut();
        if now - last_metrics >= 1000 {
            last_metrics = now;
            crate::metrics::publish(&t, &shared);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_bind_syntax() {
        let b = parse_binds(&["* -::*".to_string()], 6379).unwrap();
        assert_eq!(
            b,
            vec![
                ("0.0.0.0:6379".parse().unwrap(), false),
                ("[::]:6379".parse().unwrap(), true)
            ]
        );
        let b = parse_binds(&["127.0.0.1".into(), "::1".into()], 1).unwrap();
        assert_eq!(b[1].0, "[::1]:1".parse::<SocketAddr>().unwrap());
        assert!(parse_binds(&["nonsense".into()], 1).is_err());
    }

    /// `[::]` with IPV6_V6ONLY can sit beside `0.0.0.0` on the same port,
    /// which Flycast (IPv4) plus 6PN (IPv6) need.
    #[test]
    fn ipv6_only_beside_ipv4_on_one_port() {
        let v4 = listen("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let port = v4.local_addr().unwrap().port();
        match listen(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port), 16) {
            Ok(v6) => assert_eq!(v6.local_addr().unwrap().port(), port),
            // Machines without IPv6 cannot test this.
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::AddrNotAvailable, "{e}"),
        }
    }
}
