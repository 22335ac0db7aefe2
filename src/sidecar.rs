//! `anykv sidecar`: the Fly extension API in front of the cluster's admin
//! API (docs/SIDECAR.md). Secrets come from the environment only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

#[derive(clap::Args)]
pub struct SidecarArgs {
    /// Where Fly's requests arrive.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// The sidecar's state (SQLite) lives here.
    #[arg(long, default_value = "sidecar-data")]
    data: PathBuf,
    /// The URL Fly calls the sidecar at, base path included; a signed
    /// request's `url` must be it plus the API's path (`/extensions...`)
    /// (default: http://<listen> plus the base path).
    #[arg(long)]
    public_url: Option<String>,
    /// Where the API is mounted (`/` or e.g. `/fly`).
    #[arg(long, default_value = "/")]
    base_path: String,
    /// A node's admin endpoint (`host:port` of its HTTP port); repeat for
    /// several, tried in order.
    #[arg(long = "cluster-admin", required = true)]
    cluster_admin: Vec<String>,
    /// The host of every REDIS_URL handed out (default: the provisioning
    /// request's Flycast `ip_address`).
    #[arg(long)]
    redis_url_host: Option<String>,
    /// Fly's API (webhooks go to <base>/api/hooks/extensions/anykv; the
    /// OAuth endpoints are under it too).
    #[arg(long, default_value = "https://api.fly.io")]
    fly_api_base: String,
    /// The port of every REDIS_URL.
    #[arg(long, default_value_t = 6379)]
    redis_port: u16,
    /// How far a signed request's timestamp may be from now (seconds).
    #[arg(long, default_value_t = anykv_ops::sign::DEFAULT_WINDOW_SECS)]
    signature_window_secs: i64,
    /// Back the state up online into this directory (SQLite's backup
    /// API) every --backup-interval-secs; put it on another volume.
    #[arg(long)]
    backup_dir: Option<PathBuf>,
    /// Seconds between backups.
    #[arg(long, default_value_t = 3600)]
    backup_interval_secs: u64,
    /// Backups kept in --backup-dir (the oldest go).
    #[arg(long, default_value_t = 48)]
    backup_keep: usize,
    /// Before starting, restore this backup into --data (which must not
    /// hold a database yet: move a damaged one aside first).
    #[arg(long)]
    restore_from: Option<PathBuf>,
    /// Seconds between pulls of every node's usage records (billing:
    /// docs/METERING.md).
    #[arg(long, default_value_t = 60)]
    meter_pull_secs: u64,
    /// How long a deleted database's files stay on the nodes before they
    /// are purged (seconds; 7 days by default): until then an operator
    /// can bring it back.
    #[arg(long, default_value_t = anykv_ops::purge::DEFAULT_AFTER_SECS)]
    purge_after_secs: i64,
    /// After a token rotation, the old token is retired once it went
    /// unused this long on every node while the new one is in use
    /// (seconds; 0: only an admin retires it).
    #[arg(long, default_value_t = anykv_ops::rotation::DEFAULT_IDLE_SECS)]
    retire_idle_secs: u64,
    /// debug, verbose, notice or warning.
    #[arg(long, default_value = "notice")]
    loglevel: String,
}

/// The public URL: `--public-url`, or `http://<listen><base path>`.
fn public_url_for(a: &SidecarArgs) -> String {
    let base = a.base_path.trim_end_matches('/');
    a.public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}{base}", a.listen))
}

/// The host of a URL (`[v6]` kept bracketed).
fn public_url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |x| x.1);
    let authority = rest.split('/').next().unwrap_or("");
    if let Some(end) = authority.find(']') {
        return authority[..=end].to_string();
    }
    authority.split(':').next().unwrap_or("").to_string()
}

fn secret(name: &str, what: &str) -> anyhow::Result<String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .with_context(|| format!("{name} is not set: {what}"))
}

pub fn run(a: SidecarArgs) -> anyhow::Result<()> {
    crate::init_tracing(&a.loglevel);
    let ext_secret = secret(
        "ANYKV_EXT_SECRET",
        "set it to the secret Fly signs Extensions API requests with",
    )?;
    let token_key = secret(
        "ANYKV_TOKEN_KEY",
        "set it to 64 hex digits (openssl rand -hex 32); it encrypts database tokens at rest",
    )?;
    let admin_token = secret(
        "ANYKV_ADMIN_TOKEN",
        "set it to the cluster's admin API token",
    )?;
    let webhook_secret = secret(
        "ANYKV_WEBHOOK_SECRET",
        "set it to the secret Fly gave for signing webhooks to it",
    )?;
    // Single sign-on is optional: without Fly's OAuth client the API
    // works and the dashboard says how to turn it on.
    let oauth = match (
        std::env::var("ANYKV_OAUTH_CLIENT_ID").ok().filter(|v| !v.is_empty()),
        std::env::var("ANYKV_OAUTH_CLIENT_SECRET").ok().filter(|v| !v.is_empty()),
    ) {
        (Some(id), Some(secret)) => {
            // The session cookie is Secure: a browser keeps it over
            // HTTPS, or from a loopback address (local runs, the demo).
            let url = public_url_for(&a);
            let host = public_url_host(&url);
            let loopback = host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !url.starts_with("https://") && !loopback {
                anyhow::bail!(
                    "dashboard sign-in needs an https:// --public-url (browsers drop the Secure session cookie over plain HTTP): set --public-url https://..."
                );
            }
            Some((id, secret))
        }
        (None, None) => None,
        _ => anyhow::bail!(
            "set both ANYKV_OAUTH_CLIENT_ID and ANYKV_OAUTH_CLIENT_SECRET (Fly's OAuth client for the dashboard), or neither"
        ),
    };
    std::fs::create_dir_all(&a.data)
        .with_context(|| format!("creating the data directory {}", a.data.display()))?;
    if let Some(from) = &a.restore_from {
        anykv_ops::backup::restore(from, &a.data)
            .with_context(|| format!("restoring {}", from.display()))?;
        tracing::info!("restored {} into {}", from.display(), a.data.display());
    }
    let store = anykv_ops::store::Store::open(&a.data, a.signature_window_secs)
        .with_context(|| format!("opening {}", a.data.join("sidecar.db").display()))?;
    let sealer = anykv_ops::tokens::Sealer::from_hex(&token_key)?;
    let base = a.base_path.trim_end_matches('/').to_string();
    if !base.is_empty() && !base.starts_with('/') {
        anyhow::bail!("--base-path {}: it must start with /", a.base_path);
    }
    let public_url = public_url_for(&a);
    let api = Arc::new(anykv_ops::api::Api {
        verifier: anykv_ops::sign::Verifier::new(
            ext_secret.as_bytes(),
            &public_url,
            a.signature_window_secs,
        ),
        store: parking_lot::Mutex::new(store),
        cluster: anykv_ops::cluster::Cluster::new(a.cluster_admin.clone(), admin_token),
        sealer,
        redis_host: a.redis_url_host.clone(),
        redis_port: a.redis_port,
        hooks: Arc::new(anykv_ops::webhook::Hooks::new(
            &a.fly_api_base,
            webhook_secret.as_bytes(),
        )),
        writes: Default::default(),
        purge_after_secs: a.purge_after_secs.max(0),
        retire_idle_secs: a.retire_idle_secs,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("binding {}", a.listen))?;
        tracing::info!(
            "sidecar on http://{} (public URL {public_url}), cluster admin {}",
            listener.local_addr()?,
            a.cluster_admin.join(", ")
        );
        tokio::spawn(anykv_ops::webhook::run(api.clone()));
        tokio::spawn(anykv_ops::purge::run(
            api.clone(),
            std::time::Duration::from_secs(a.purge_after_secs.clamp(1, 60) as u64),
        ));
        tokio::spawn(anykv_ops::rotation::run(api.clone()));
        tokio::spawn(anykv_ops::metering::run(
            api.clone(),
            std::time::Duration::from_secs(a.meter_pull_secs.max(1)),
        ));
        tokio::spawn(anykv_ops::api::undo_failed_forever(api.clone()));
        tokio::spawn(anykv_ops::api::finish_provisioning(
            api.clone(),
            std::time::Duration::from_secs(1),
        ));
        if a.backup_dir.is_none() {
            tracing::warn!(
                "no --backup-dir: the sidecar's state (which Fly resource is which database, \
                 the sealed tokens, usage) is not backed up; give it a directory on another volume"
            );
        }
        if let Some(dir) = a.backup_dir.clone() {
            tokio::spawn(backups(
                a.data.clone(),
                dir,
                std::time::Duration::from_secs(a.backup_interval_secs.max(1)),
                a.backup_keep,
            ));
        }
        let mut app = anykv_ops::api::router(api.clone());
        match oauth {
            Some((id, secret)) => {
                let sso = anykv_ops::sso::Sso::new(
                    &a.fly_api_base,
                    &id,
                    &secret,
                    &public_url,
                    token_key.as_bytes(),
                );
                let d = Arc::new(anykv_ops::dashboard::Dashboard { api, sso });
                app = app.merge(anykv_ops::dashboard::router(d));
            }
            None => {
                tracing::warn!(
                    "ANYKV_OAUTH_CLIENT_ID and ANYKV_OAUTH_CLIENT_SECRET are not set: no dashboard sign-in"
                );
                app = app.merge(anykv_ops::dashboard::unconfigured());
            }
        }
        let app = match base.as_str() {
            "" => app,
            b => axum::Router::new().nest(b, app),
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                use tokio::signal::unix::{signal, SignalKind};
                if let Ok(mut term) = signal(SignalKind::terminate()) {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
            })
            .await
            .context("serving")?;
        anyhow::Ok(())
    })
}

/// Backs the sidecar's state (in data directory `data`) up into `dir`
/// every `every` (the first at once), keeping the newest `keep`, through
/// a connection of its own (the handlers do not wait for it); a failure
/// is logged and the next interval tries again.
async fn backups(data: PathBuf, dir: PathBuf, every: std::time::Duration, keep: usize) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (from, into) = (data.clone(), dir.clone());
        let done = tokio::task::spawn_blocking(move || {
            anykv_ops::backup::backup_file(&from, &into, anykv_ops::unix_now(), keep)
        })
        .await;
        match done {
            Ok(Ok(path)) => tracing::info!("sidecar state backed up to {}", path.display()),
            Ok(Err(e)) => {
                tracing::warn!("backing the sidecar state up into {}: {e}", dir.display())
            }
            Err(e) => tracing::warn!("backup task: {e}"),
        }
    }
}
