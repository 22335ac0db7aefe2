//! The one anykv binary.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::sync::Arc;

use anykv_server::config::Config;
use anykv_server::shared::Shared;
use anykv_server::Server;

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
}

fn init_tracing(level: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| {
        match level {
            "debug" => "debug",
            "verbose" => "info",
            "warning" => "warn",
            _ => "info",
        }
        .to_string()
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(false)
        .try_init();
}

fn run_server(args: Vec<String>) -> anyhow::Result<()> {
    let config = Config::load(&args).map_err(|e| anyhow::anyhow!("{e}"))?;
    init_tracing(&config.loglevel());
    let metrics_addr = config.metrics_addr();
    let server = Server::start(config).context("starting the server")?;
    let shared = server.shared.clone();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the control runtime")?;
    rt.block_on(async {
        if let Some(addr) = metrics_addr {
            let sock: std::net::SocketAddr = addr
                .parse()
                .with_context(|| format!("metrics-addr '{addr}'"))?;
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .with_http_listener(sock)
                .install()
                .context("starting the metrics endpoint")?;
            tracing::info!("Prometheus metrics on http://{sock}/metrics");
        }
        wait_for_signal(&shared).await;
        anyhow::Ok(())
    })?;
    // Executors observe the shutdown flag and finish in-flight batches.
    shared.begin_shutdown();
    server.join();
    tracing::info!("anykv is now ready to exit, bye bye...");
    Ok(())
}

/// Returns on SIGTERM/SIGINT or when the server shuts itself down (SHUTDOWN).
async fn wait_for_signal(shared: &Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    // Like redis-server, ignore SIGHUP (a closed terminal must not stop us).
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut rx = shared.shutdown_rx();
    loop {
        tokio::select! {
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => {
                tracing::info!("Received SIGHUP, ignoring it");
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
        Cmd::Server { args } => run_server(args),
    }
}
