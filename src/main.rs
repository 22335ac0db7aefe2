//! The one anykv binary.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::sync::Arc;
use std::time::Duration;

use anykv_server::config::Config;
use anykv_server::shared::Shared;
use anykv_server::Server;

mod cluster;
mod http;
mod meter;
mod node;
mod placement;
mod regions;
mod sidecar;

#[global_allocator]
static ALLOC: anykv_server::alloc::CountingAlloc = anykv_server::alloc::CountingAlloc;

#[derive(Parser)]
#[command(
    name = "anykv",
    version,
    about = "Redis-compatible multi-region data service for Fly.io"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once at start: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run a standalone store. Takes redis-server's arguments:
    /// `[config-file] [--name value ...]`, e.g. `--port 6379 --bind 0.0.0.0`.
    /// anykv's own settings: `--executors N` (threads, 0 = cores),
    /// `--metrics-addr 127.0.0.1:9091` (Prometheus endpoint).
    Server {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a cluster node: a store plus gossip (Fly DNS discovery, SWIM
    /// membership, state sync over QUIC). Store arguments go after `--`,
    /// as for `anykv server`.
    Node {
        #[command(flatten)]
        gossip: node::GossipArgs,
        #[arg(last = true, allow_hyphen_values = true)]
        server_args: Vec<String>,
    },
    /// Run a router in front of a primary and its replicas (e.g.
    /// redis-servers): one address; reads from the nearest replica that
    /// has the client's writes, writes to the primary; many clients share
    /// a few upstream connections.
    Router {
        #[command(flatten)]
        args: anykv_router::standalone::RouterArgs,
        /// Prometheus endpoint (`GET /metrics`).
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
        /// debug, verbose, notice or warning (as redis-server).
        #[arg(long, default_value = "notice")]
        loglevel: String,
    },
    /// Inspect or set up the cluster.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Add or remove a region of data nodes on Fly (Machines API): list,
    /// add REGION [--count N], remove REGION; --dry-run prints the plan.
    /// Interrupted runs resume when run again.
    Regions {
        #[command(subcommand)]
        cmd: regions::RegionsCmd,
    },
    /// Run the emulated multi-region world locally: a Fly-like DNS zone and
    /// store nodes in several regions with emulated WAN latency.
    Demo(anykv_bench::demo::DemoArgs),
    /// Run the Fly extension sidecar: Fly's signed provisioning requests
    /// become databases in the cluster (docs/SIDECAR.md). Secrets from the
    /// environment: ANYKV_EXT_SECRET, ANYKV_WEBHOOK_SECRET, ANYKV_TOKEN_KEY,
    /// ANYKV_ADMIN_TOKEN.
    Sidecar(sidecar::SidecarArgs),
    /// Measure: load against any Redis-compatible endpoint.
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// A load generator for any Redis-compatible endpoint (anykv,
    /// redis-server, a proxy): many connections, pipelining or a fixed
    /// rate (open loop, latency from when each request was due), uniform
    /// or zipfian keys, a read/write mix; throughput and HDR latencies.
    Load(anykv_bench::load::LoadArgs),
    /// What multi-region buys, per region: clients in every region of an
    /// emulated world (or of a real deployment with --target) against
    /// anykv and two baselines (one primary region; local reads without
    /// read-your-writes), then the primary killed mid-run. Writes a
    /// Markdown report and SVG plots.
    Global(anykv_bench::global::GlobalArgs),
    /// What scaling regions costs on an emulated world: adding a region
    /// that holds a database (against a bulk copy of its bytes over the
    /// same link) and removing its primary region under writes (their
    /// latency). Prints a Markdown table.
    Regions(anykv_bench::scale::RegionsArgs),
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// The cluster as a node sees it: node, region, state, RTT, roles.
    Status {
        /// The node's metrics/HTTP address.
        #[arg(long, default_value = "127.0.0.1:9091")]
        addr: std::net::SocketAddr,
        /// Print the JSON view instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write a new cluster CA and gossip key into a directory (for secrets).
    Keygen {
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
    },
    /// Hand a database to its in-sync standby with nothing lost (a planned
    /// failover through the region's controller; writes pause for
    /// milliseconds). Any node takes it.
    Failover {
        /// The database's id (the catalog's `id`).
        db: u64,
        /// A node's metrics/HTTP address.
        #[arg(long, default_value = "127.0.0.1:9091")]
        addr: std::net::SocketAddr,
        /// The admin API's token.
        #[arg(long, env = "ANYKV_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
    },
    /// Force a node holding a copy of a database to be its primary, when
    /// every in-sync copy is gone (the primary and its in-sync standby are
    /// down). Acknowledged writes may be lost: the answer says how many,
    /// as far as the cluster knows.
    Promote {
        /// The database's id.
        db: u64,
        /// The node to promote (its machine name).
        #[arg(long)]
        to: String,
        /// Required: accept that acknowledged writes may be lost.
        #[arg(long)]
        force: bool,
        /// A node's metrics/HTTP address.
        #[arg(long, default_value = "127.0.0.1:9091")]
        addr: std::net::SocketAddr,
        /// The admin API's token.
        #[arg(long, env = "ANYKV_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
    },
}

pub(crate) fn init_tracing(level: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| {
        let base = match level {
            "debug" => "debug",
            "verbose" => "info",
            "warning" => "warn",
            _ => "info",
        };
        // hickory logs every DNS query at info; only its problems matter.
        // openraft logs every vote at info and every retry to a peer that
        // is down at warn; the controller logs what matters itself.
        format!(
            "{base},hickory_server=warn,hickory_proto=warn,hickory_resolver=warn,hickory_net=warn,openraft=error"
        )
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(false)
        .try_init();
}

/// Runs a store (`anykv server`), with gossip when `gossip` is given
/// (`anykv node`).
fn run_store(mut args: Vec<String>, gossip: Option<node::GossipArgs>) -> anyhow::Result<()> {
    if gossip.is_some() {
        // A node serves databases only: nobody gets in without a token (or
        // an operator password), even before its catalog arrives.
        args.extend(["--tenants-only".to_string(), "yes".to_string()]);
    }
    let config = Config::load(&args).map_err(|e| anyhow::anyhow!("{e}"))?;
    init_tracing(&config.loglevel());
    // Accepted for redis.conf compatibility, but not silently ignored.
    if config.daemonize() {
        anyhow::bail!(
            "daemonize yes is not supported: run anykv in the foreground under a supervisor (systemd, Fly, docker)"
        );
    }
    if let Some(sock) = config.unixsocket() {
        anyhow::bail!(
            "unixsocket {sock}: Unix sockets are not supported yet; remove the setting and use TCP"
        );
    }
    let pidfile = config.pidfile();
    if let Some(p) = &pidfile {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing pidfile {p}"))?;
    }
    let metrics_addr = config.metrics_addr();
    let data_dir = std::path::PathBuf::from(config.dir());
    let machine = gossip.as_ref().map(node::GossipArgs::machine_name);
    // A node's directory is its machine's: never another node's data.
    if let Some(m) = &machine {
        node::claim_dir(&data_dir, m)?;
    }
    let metering = gossip.as_ref().zip(machine).map(|(g, machine)| {
        (
            machine,
            Duration::from_millis(g.meter_interval_ms.max(100)),
            meter::Keep {
                max_bytes: g.usage_log_max_mb.saturating_mul(1 << 20),
                taken_ms: i64::try_from(g.usage_keep_hours.saturating_mul(3_600_000))
                    .unwrap_or(i64::MAX),
                last: None,
            },
        )
    });
    // A router holds no records and has no vote: no controller.
    let controller_timing = gossip
        .as_ref()
        .filter(|g| !g.router)
        .map(|g| node::ControllerTiming {
            heartbeat: std::time::Duration::from_millis(g.controller_heartbeat_ms),
            lease: std::time::Duration::from_millis(g.lease_ms),
            remove_after: std::time::Duration::from_millis(g.controller_remove_after_ms),
            handoff: std::time::Duration::from_millis(g.handoff_timeout_ms),
        });
    let gossip = gossip
        .map(|g| node::gossip_config(&g, Some(node::redis_addr(&config))))
        .transpose()?;
    let server = Server::start(config).context("starting the server")?;
    let shared = server.shared.clone();
    // A node writes what its customers used (docs/METERING.md).
    let meter = match &metering {
        Some((machine, every, keep)) => Some(
            meter::Writer::start(&data_dir, machine, shared.clone(), *every, keep.clone())
                .context("opening the usage log")?,
        ),
        None => None,
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the control runtime")?;
    rt.block_on(async {
        let sync_port = gossip.as_ref().map(|c| c.wan.sync_port);
        let shaper = gossip.as_ref().map(|c| c.wan.shaper.clone());
        let cluster_addr = gossip.as_ref().map(|c| c.wan.bind);
        let node = match gossip {
            Some(c) => Some(
                anykv_gossip::Cluster::start(c)
                    .await
                    .context("starting gossip")?,
            ),
            None => None,
        };
        // The region's controller (role records through Raft).
        let controller = match (&node, sync_port, controller_timing) {
            (Some(n), Some(port), Some(timing)) => Some(
                node::start_controller(n, &data_dir, port, timing)
                    .await
                    .context("starting the region's controller")?,
            ),
            _ => None,
        };
        if let Some(c) = &controller {
            node::spawn_lease_keeper(c.clone(), shared.clone());
        }
        let leaving = controller.clone();
        // A node's databases come from the cluster's catalog.
        let admin = match (&node, sync_port) {
            (Some(n), Some(port)) => Some(http::Admin {
                placement: placement::Placement::start(
                    n,
                    shared.clone(),
                    data_dir.clone(),
                    port,
                    controller,
                )?,
                token: std::env::var("ANYKV_ADMIN_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty()),
                usage_dir: data_dir.clone(),
                machine: metering
                    .as_ref()
                    .map(|(m, _, _)| m.clone())
                    .unwrap_or_default(),
            }),
            _ => None,
        };
        if let Some(addr) = metrics_addr {
            let sock: std::net::SocketAddr = addr
                .parse()
                .with_context(|| format!("metrics-addr '{addr}'"))?;
            let bound = http::serve(sock, node.as_ref().map(|n| n.view()), admin, shaper).await?;
            if let (Some(n), Some(cluster)) = (&node, cluster_addr) {
                // Reachable by the other nodes: a wildcard bind is
                // announced with this node's cluster (6PN) address. (It
                // was taken from the view, which may not hold this node
                // yet when the port opens: `[::]` was announced then.)
                let published = node::announced(bound, cluster);
                n.updater().update(move |m| m.http_addr = Some(published));
            }
            tracing::info!(
                "Prometheus metrics on http://{bound}/metrics, cluster view on /cluster"
            );
        }
        if let Some(n) = &node {
            node::spawn_load_reporter(n.updater(), shared.clone());
        }
        wait_for_signal(&shared).await;
        // Hand this node's databases to their standbys before going.
        if let Some(c) = &leaving {
            let signalled = std::time::Instant::now();
            node::hand_off_all(c, &shared, c.handoff_timeout()).await;
            // The held writes meet the new roles: this node's copies follow
            // the new primaries, so those writes are forwarded there, where
            // a new primary holds them until its first lease (up to a
            // second). Let them be answered before the connections close,
            // within a second past the handoff's own budget (Fly's default
            // kill_timeout of 5 s leaves room). And answer the requests
            // routers sent before they learnt the new primaries: they come
            // up to a round trip later (`node::drain_forwards`).
            let budget = (c.handoff_timeout() + Duration::from_secs(1))
                .saturating_sub(signalled.elapsed())
                .min(Duration::from_millis(1500));
            let quiet = node.as_ref().map_or(Duration::from_millis(100), |n| {
                node::quiet_before_leaving(&n.view().borrow())
            });
            node::drain_forwards(&shared, Duration::from_millis(100), quiet, budget).await;
            // Then the customers' connections close, each once the reply
            // it waits for is out, before the cluster links do: a write
            // forwarded just before the links closed would be answered
            // "may or may not have run"; a connection that ends between
            // replies is one the client opens again, elsewhere.
            shared.close_customers();
            node::drain_forwards(&shared, Duration::ZERO, Duration::ZERO, CLOSING_CUSTOMERS).await;
        }
        if let Some(n) = node {
            // Tell the cluster before going, so peers do not wait out a
            // suspicion timeout.
            n.leave().await;
        }
        anyhow::Ok(())
    })?;
    // Executors observe the shutdown flag and finish in-flight batches.
    shared.begin_shutdown();
    server.join();
    // What the executors handed over last goes into a final record.
    if let Some(m) = meter {
        m.stop();
    }
    if let Some(p) = &pidfile {
        let _ = std::fs::remove_file(p);
    }
    tracing::info!("anykv is now ready to exit, bye bye...");
    Ok(())
}

/// How long a node leaving after a handoff waits for the replies its
/// customers' connections still wait for, once it closed them.
const CLOSING_CUSTOMERS: Duration = Duration::from_millis(500);

/// SIGHUP: re-reads `tenants-file` and applies it while serving (new
/// databases open, changed plans apply, removed ones close). Without a
/// tenants file SIGHUP is ignored, as redis-server does; a file that does
/// not parse leaves the current catalog in place.
fn reload_tenants(shared: &Arc<Shared>) {
    let path = shared.config.read().tenants_file();
    if path.is_empty() {
        tracing::info!("Received SIGHUP, ignoring it (no tenants-file)");
        return;
    }
    match anykv_server::catalog::Catalog::load(&path) {
        Ok(c) => {
            let (added, changed, removed) = shared.set_catalog(c);
            tracing::info!(
                "Received SIGHUP: reloaded {path}: {added} databases added, {changed} changed, {removed} removed"
            );
        }
        Err(e) => tracing::error!("Received SIGHUP: {e}; keeping the current databases"),
    }
}

/// Returns on SIGTERM/SIGINT or when the server shuts itself down (SHUTDOWN).
pub(crate) async fn wait_for_signal(shared: &Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    // Like redis-server, ignore SIGHUP (a closed terminal must not stop us).
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut rx = shared.shutdown_rx();
    loop {
        tokio::select! {
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => {
                reload_tenants(shared);
                continue;
            }
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {
                tracing::warn!("Received SIGTERM scheduling shutdown...");
            }
            _ = tokio::signal::ctrl_c() => tracing::warn!("Received SIGINT scheduling shutdown..."),
            _ = rx.changed() => {}
        }
        break;
    }
}

fn main() -> anyhow::Result<()> {
    // A panic on an executor thread would leave its tenants unserved while
    // the process looks alive: log it and exit so the supervisor restarts us.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::exit(70);
    }));
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Server { args } => run_store(args, None),
        Cmd::Node {
            gossip,
            server_args,
        } => run_store(server_args, Some(gossip)),
        Cmd::Cluster {
            cmd: ClusterCmd::Status { addr, json },
        } => cluster::status(addr, json),
        Cmd::Cluster {
            cmd: ClusterCmd::Keygen { dir },
        } => cluster::keygen(&dir),
        Cmd::Cluster {
            cmd:
                ClusterCmd::Failover {
                    db,
                    addr,
                    admin_token,
                },
        } => cluster::failover(addr, db, &admin_token),
        Cmd::Cluster {
            cmd:
                ClusterCmd::Promote {
                    db,
                    to,
                    force,
                    addr,
                    admin_token,
                },
        } => cluster::promote(addr, db, &to, force, &admin_token),
        Cmd::Regions { cmd } => {
            init_tracing("warning");
            regions::run(cmd)
        }
        Cmd::Demo(args) => {
            init_tracing("warning");
            anykv_bench::demo::run(args).map_err(anyhow::Error::from)
        }
        Cmd::Sidecar(args) => sidecar::run(args),
        Cmd::Bench {
            cmd: BenchCmd::Load(args),
        } => {
            let json = args.json;
            let report = anykv_bench::load::run(args)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
        Cmd::Bench {
            cmd: BenchCmd::Regions(args),
        } => {
            init_tracing("warning");
            let report = anykv_bench::scale::run(args).map_err(anyhow::Error::msg)?;
            print!("{report}");
            Ok(())
        }
        Cmd::Bench {
            cmd: BenchCmd::Global(args),
        } => {
            init_tracing("warning");
            let json = args.json;
            let (report, dir) = anykv_bench::global::run(args)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.markdown());
            }
            eprintln!("bench global: report and plots in {}", dir.display());
            Ok(())
        }
        Cmd::Router {
            args,
            metrics_addr,
            loglevel,
        } => run_router(args, metrics_addr, &loglevel),
    }
}

/// `anykv router`: serves until SIGTERM/SIGINT.
fn run_router(
    args: anykv_router::standalone::RouterArgs,
    metrics_addr: Option<std::net::SocketAddr>,
    loglevel: &str,
) -> anyhow::Result<()> {
    init_tracing(loglevel);
    // The control runtime: ROLE polls, metrics, signals. Clients are
    // served by the router's own worker threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    rt.block_on(async {
        if let Some(addr) = metrics_addr {
            let bound = http::serve(addr, None, None, None).await?;
            tracing::info!("Prometheus metrics on http://{bound}/metrics");
        }
        let running = anykv_router::standalone::start(args).await?;
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        tokio::select! {
            _ = running.wait() => {}
            _ = term.recv() => tracing::warn!("Received SIGTERM, exiting"),
            _ = tokio::signal::ctrl_c() => tracing::warn!("Received SIGINT, exiting"),
        }
        anyhow::Ok(())
    })?;
    // Sessions still running end with the runtime.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    Ok(())
}
