//! `anykv router`: the router with static upstreams and no cluster (one
//! primary and its replicas, e.g. redis-servers), measured against
//! twemproxy the same way.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

use crate::local::Settings;
use crate::pool::{PoolConfig, Upstreams};
use crate::session::{self, Consistency, Router, SessionConfig};

/// `anykv router`'s flags (Redis's names where Redis has one).
#[derive(clap::Args, Debug, Clone)]
pub struct RouterArgs {
    /// Client port.
    #[arg(long, default_value_t = 6379)]
    pub port: u16,
    /// An upstream `host:port`; repeat for the primary and each replica
    /// (told apart by asking each `ROLE`).
    #[arg(long = "upstream", required = true)]
    pub upstreams: Vec<String>,
    /// Addresses to listen on (default: `0.0.0.0` and `::`, for Flycast
    /// and 6PN).
    #[arg(long)]
    pub bind: Vec<IpAddr>,
    /// TLS client port (needs --tls-cert-file and --tls-key-file).
    #[arg(long)]
    pub tls_port: Option<u16>,
    /// PEM certificate chain for --tls-port.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for --tls-port.
    #[arg(long)]
    pub tls_key_file: Option<PathBuf>,
    /// Clients must AUTH with this password.
    #[arg(long, env = "ANYKV_ROUTER_PASSWORD", hide_env_values = true)]
    pub requirepass: Option<String>,
    /// Password the router's upstream connections AUTH with (default:
    /// --requirepass).
    #[arg(long, env = "ANYKV_UPSTREAM_PASSWORD", hide_env_values = true)]
    pub upstream_password: Option<String>,
    /// What reads see: `ryw` (your own writes, monotonic; replicas that
    /// caught up), `strong` (the primary), `nearest` (any replica).
    #[arg(long, value_enum, default_value = "ryw")]
    pub consistency: Consistency,
    /// Worker threads (0: one per core), each with its own upstream
    /// connections.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Shared connections per upstream (and RESP version) per worker.
    #[arg(long, default_value_t = 1)]
    pub upstream_connections: usize,
    /// How often each upstream is asked `ROLE` (role, health, RTT, offset).
    #[arg(long, default_value_t = 100)]
    pub role_interval_ms: u64,
    /// Requests a worker may have in flight to one replica before reads
    /// go to the next nearest (then the primary).
    #[arg(long, default_value_t = 256)]
    pub replica_max_inflight: usize,
    /// An upstream that does not answer for this long is skipped.
    #[arg(long, default_value_t = 1000)]
    pub upstream_timeout_ms: u64,
    /// How long a write waits for a primary to appear (failover) before
    /// `-TRYAGAIN`.
    #[arg(long, default_value_t = 2000)]
    pub primary_wait_ms: u64,
    /// With `--consistency ryw`, how long a read waits for its replica to
    /// catch up with the client before it goes to the primary (0: at
    /// once; worth it when the primary is farther than the replica).
    #[arg(long, default_value_t = 0)]
    pub ryw_wait_ms: u64,
    /// Unanswered batches a client may have before the router stops
    /// reading it (bounds memory per client).
    #[arg(long, default_value_t = 1024)]
    pub max_pending: usize,
    /// Reply bytes a client may leave unread before the router stops
    /// reading its requests (memory per slow client).
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub client_buffer_limit: usize,
    /// Batches queued per upstream connection before clients wait.
    #[arg(long, default_value_t = 4096)]
    pub upstream_queue: usize,
    /// Request bytes queued per upstream connection (not yet written to
    /// it) before clients wait: what a slow upstream can make the router
    /// hold.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub upstream_queue_bytes: usize,
    /// Most client connections (more are refused with Redis's error).
    #[arg(long, default_value_t = 10000)]
    pub maxclients: usize,
}

/// Resolves `host:port` (names through the system resolver).
async fn resolve(s: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(s)
        .await
        .map_err(|e| anyhow::anyhow!("cannot resolve upstream {s}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("upstream {s} resolves to no address"))
}

/// Binds `ip:port`; `::` only for IPv6 so both families can listen.
fn bind(ip: IpAddr, port: u16) -> std::io::Result<std::net::TcpListener> {
    let addr = SocketAddr::new(ip, port);
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if ip.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    Ok(sock.into())
}

/// Binds `port` on every address of `ips`. Port 0 (tests): every address
/// shares the port the first one got. With the default pair
/// (`default_bind`), a host without IPv6 still serves IPv4.
fn bind_all(
    ips: &[IpAddr],
    mut port: u16,
    default_bind: bool,
    what: &str,
) -> anyhow::Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::new();
    for ip in ips {
        let l = match bind(*ip, port) {
            Ok(l) => l,
            Err(e) if default_bind && ip.is_ipv6() => {
                tracing::warn!("not listening on [{ip}]:{port}{what}: {e}");
                continue;
            }
            Err(e) => anyhow::bail!("cannot listen on {}{what}: {e}", SocketAddr::new(*ip, port)),
        };
        port = l.local_addr()?.port();
        out.push(l);
    }
    Ok(out)
}

/// A router ready to accept clients: its listeners are bound.
pub struct Running {
    /// Plain addresses listened on.
    pub addrs: Vec<SocketAddr>,
    /// The TLS address, if any.
    pub tls_addr: Option<SocketAddr>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Serves until the process ends (or every worker stopped).
    pub async fn wait(self) {
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await;
    }
}

/// Raises the soft open-files limit to fit `want` descriptors (up to the
/// hard limit), as redis-server's `adjustOpenFilesLimit` does: every
/// client is a socket.
fn raise_fd_limit(want: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 || r.rlim_cur >= want {
        return;
    }
    let new = libc::rlimit {
        rlim_cur: want.min(r.rlim_max),
        rlim_max: r.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct, which lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 || new.rlim_cur < want {
        tracing::warn!(
            "open files limit is {}: fewer than --maxclients clients may connect",
            new.rlim_cur.min(r.rlim_cur.max(new.rlim_cur))
        );
    }
}

/// Starts the router: resolves and polls the upstreams, binds the ports.
pub async fn start(a: RouterArgs) -> anyhow::Result<Running> {
    // Each client, plus each upstream connection and a margin.
    raise_fd_limit(a.maxclients as u64 * 2 + 64);
    let mut addrs = Vec::new();
    for u in &a.upstreams {
        addrs.push(resolve(u).await?);
    }
    let timeout = Duration::from_millis(a.upstream_timeout_ms.max(1));
    let password = a.upstream_password.clone().or(a.requirepass.clone());
    let ups = Upstreams::new(
        &addrs,
        PoolConfig {
            connections: a.upstream_connections.max(1),
            queue: a.upstream_queue.max(1),
            queue_bytes: a.upstream_queue_bytes.max(1),
            connect_timeout: timeout,
            role_interval: Duration::from_millis(a.role_interval_ms.max(1)),
            password,
        },
    );
    ups.start_polling(timeout).await;
    let (databases, version) = server_facts(&ups).await;
    let set = Settings {
        requirepass: a.requirepass.clone(),
        databases,
        version,
    };
    let reg = Arc::new(crate::clients::Registry::default());
    let make_router = || {
        Router::new(
            ups.clone(),
            reg.clone(),
            set.clone(),
            SessionConfig {
                consistency: a.consistency,
                max_pending: a.max_pending,
                primary_wait: Duration::from_millis(a.primary_wait_ms),
                ryw_wait: Duration::from_millis(a.ryw_wait_ms),
                client_buffer: a.client_buffer_limit,
                replica_busy: a.replica_max_inflight,
            },
        )
    };
    let ips = if a.bind.is_empty() {
        vec![
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ]
    } else {
        a.bind.clone()
    };
    let mut bound = Vec::new();
    let mut tls_addr = None;
    // (listener, serves TLS)
    let mut listeners: Vec<(std::net::TcpListener, bool)> = Vec::new();
    let default_bind = a.bind.is_empty();
    for l in bind_all(&ips, a.port, default_bind, "")? {
        bound.push(l.local_addr()?);
        listeners.push((l, false));
    }
    if bound.is_empty() {
        anyhow::bail!("the router listens on no address");
    }
    let mut acceptor = None;
    if let Some(tp) = a.tls_port {
        let (Some(cert), Some(key)) = (&a.tls_cert_file, &a.tls_key_file) else {
            anyhow::bail!("--tls-port needs --tls-cert-file and --tls-key-file");
        };
        acceptor = Some(crate::tls::acceptor(cert, key)?);
        // On the same addresses as the plain port (both families).
        for l in bind_all(&ips, tp, default_bind, " (TLS)")? {
            tls_addr.get_or_insert(l.local_addr()?);
            listeners.push((l, true));
        }
    }
    // One worker per core, each a single-threaded runtime with its own
    // upstream connections: a client's session, its upstream connection
    // and their wakeups stay on one thread. Every worker accepts on every
    // listener (duplicated sockets), so connections spread over them.
    let threads = if a.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        a.threads
    };
    let conns = Arc::new(tokio::sync::Semaphore::new(a.maxclients.max(1)));
    let mut workers = Vec::new();
    for w in 0..threads {
        let router = make_router();
        let mut mine = Vec::new();
        for (l, tls) in &listeners {
            mine.push((l.try_clone()?, *tls));
        }
        let (acceptor, conns) = (acceptor.clone(), conns.clone());
        let h = std::thread::Builder::new()
            .name(format!("router-{w}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("router worker {w}: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    let mut tasks = Vec::new();
                    for (l, tls) in mine {
                        match TcpListener::from_std(l) {
                            Ok(l) => tasks.push(tokio::spawn(accept_loop(
                                router.clone(),
                                l,
                                if tls { acceptor.clone() } else { None },
                                conns.clone(),
                            ))),
                            Err(e) => tracing::error!("router worker {w}: {e}"),
                        }
                    }
                    for t in tasks {
                        let _ = t.await;
                    }
                });
            })?;
        workers.push(h);
    }
    tracing::info!(listen = ?bound, tls = ?tls_addr, upstreams = ?addrs, "router ready");
    Ok(Running {
        addrs: bound,
        tls_addr,
        workers,
    })
}

/// `databases` and `redis_version` of the primary (16 and 7.0.0 when it
/// does not say).
async fn server_facts(ups: &Upstreams) -> (u32, String) {
    let Some(p) = ups.primary() else {
        return (16, "7.0.0".into());
    };
    let fetch = async {
        let client = ups.control_client(p).ok()?;
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        let dbs: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("databases")
            .query_async(&mut c)
            .await
            .ok()?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut c)
            .await
            .ok()?;
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_string());
        Some((dbs.get(1).and_then(|d| d.parse().ok()), version))
    };
    match tokio::time::timeout(ups.cfg.connect_timeout, fetch).await {
        Ok(Some((d, v))) => (d.unwrap_or(16), v.unwrap_or_else(|| "7.0.0".into())),
        _ => (16, "7.0.0".into()),
    }
}

async fn accept_loop(
    router: Arc<Router>,
    l: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    conns: Arc<tokio::sync::Semaphore>,
) {
    loop {
        let (s, addr) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = s.set_nodelay(true);
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            tokio::spawn(refuse(s));
            continue;
        };
        let laddr = s.local_addr().unwrap_or(addr);
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let me = router.reg.add(addr, laddr);
            match tls {
                None => session::serve(router, s, me).await,
                // A client that opens the TCP connection and never
                // finishes its handshake must not hold a connection slot.
                Some(acc) => match tokio::time::timeout(TLS_HANDSHAKE, acc.accept(s)).await {
                    Ok(Ok(t)) => session::serve(router, t, me).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, "TLS handshake: {e}");
                        router.reg.remove(me.id);
                    }
                    Err(_) => {
                        tracing::debug!(%addr, "TLS handshake: timed out");
                        router.reg.remove(me.id);
                    }
                },
            }
            drop(permit);
        });
    }
}

/// How long a TLS client may take to finish its handshake.
const TLS_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(10);

/// Redis's answer past `maxclients`.
async fn refuse(mut s: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let _ = s.write_all(b"-ERR max number of clients reached\r\n").await;
}
