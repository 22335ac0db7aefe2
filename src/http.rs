//! The node's HTTP port: Prometheus metrics and the cluster view.
//!
//! `GET /metrics` is the Prometheus text format (Fly's `[metrics]` scrapes
//! it); `GET /cluster` is the cluster as this node sees it, as JSON
//! (`?format=table` for people). `anykv cluster status` reads the latter.

use anyhow::Context;
use anykv_gossip::ClusterView;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder (installed once, shared by every
/// endpoint; the demo runs several nodes in one process).
pub fn prometheus() -> anyhow::Result<PrometheusHandle> {
    if let Some(h) = PROMETHEUS.get() {
        return Ok(h.clone());
    }
    let h = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    Ok(PROMETHEUS.get_or_init(|| h).clone())
}

#[derive(Clone)]
struct AppState {
    prom: PrometheusHandle,
    view: Option<watch::Receiver<Arc<ClusterView>>>,
}

async fn metrics(State(s): State<AppState>) -> String {
    s.prom.render()
}

async fn cluster(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(view) = s.view else {
        return (
            axum::http::StatusCode::NOT_FOUND,
            "this process runs no gossip (anykv server); use anykv node\n",
        )
            .into_response();
    };
    let v = view.borrow().clone();
    if q.get("format").map(String::as_str) == Some("table") {
        v.table().into_response()
    } else {
        Json((*v).clone()).into_response()
    }
}

/// Binds `addr` and serves until the process ends.
pub async fn serve(
    addr: SocketAddr,
    view: Option<watch::Receiver<Arc<ClusterView>>>,
) -> anyhow::Result<SocketAddr> {
    let state = AppState {
        prom: prometheus()?,
        view,
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/cluster", get(cluster))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint {addr}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics endpoint: {e}");
        }
    });
    Ok(bound)
}

/// A minimal HTTP/1.1 GET (the CLI's only HTTP need; no client crate).
pub async fn get_body(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .with_context(|| format!("connecting to {addr}: timed out"))?
    .with_context(|| format!("connecting to {addr}"))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .context("reading the response: timed out")??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        anyhow::bail!("{addr}{path}: {status}: {}", body.trim());
    }
    Ok(body.to_string())
}
