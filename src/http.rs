//! The node's HTTP port: Prometheus metrics and the cluster view.
//!
//! `GET /metrics` is the Prometheus text format (Fly's `[metrics]` scrapes
//! it); `GET /cluster` is the cluster as this node sees it, as JSON
//! (`?format=table` for people). `anykv cluster status` reads the latter.
//!
//! `PUT` / `DELETE /admin/tenants/{id}` change the tenant catalog (the
//! sidecar is their one caller), with `Authorization: Bearer
//! $ANYKV_ADMIN_TOKEN`; see [`admin_put`]; `GET /admin/tenants/{id}` says
//! how far the current version got ([`admin_get`]). `POST
//! /admin/tenants/{id}/failover` hands a database to its standby (see
//! [`admin_failover`]); `POST /admin/tenants/{id}/promote` is the
//! operator's forced promotion ([`admin_promote`]). Without that variable the admin API answers 503.

use anyhow::Context;
use anykv_gossip::ClusterView;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// A gauge not set for this long is dropped from `/metrics`.
const IDLE_GAUGE: std::time::Duration = std::time::Duration::from_secs(30);

/// The process's Prometheus recorder (installed once, shared by every
/// endpoint; the demo runs several nodes in one process).
pub fn prometheus() -> anyhow::Result<PrometheusHandle> {
    if let Some(h) = PROMETHEUS.get() {
        return Ok(h.clone());
    }
    // Gauges are set every second by their owners (a tenant's cron, the
    // gossip view); one nobody set for IDLE_GAUGE is of something gone (a
    // replica detached, a member or tenant removed) and leaves the output.
    // Counters stay: several count rare events.
    let h = PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::GAUGE, Some(IDLE_GAUGE))
        .install_recorder()
        .context("installing the metrics recorder")?;
    Ok(PROMETHEUS.get_or_init(|| h).clone())
}

#[derive(Clone)]
struct AppState {
    prom: PrometheusHandle,
    view: Option<watch::Receiver<Arc<ClusterView>>>,
    admin: Option<Admin>,
    /// The emulated WAN of a node started with `--emulate-wan` (None
    /// otherwise: `/shaper` answers 404).
    shaper: Option<anykv_gossip::link::Shaper>,
}

/// `POST /shaper`: changes this node's emulated WAN while it runs, for
/// fault tests (each node shapes what it sends, so a harness tells every
/// node). Fields are applied in this order, each optional.
#[derive(serde::Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct ShaperChange {
    /// Removes every partition and isolation.
    #[serde(default)]
    heal: bool,
    /// Loss between regions, 0 to 1.
    loss: Option<f64>,
    /// Cuts these hosts (IPs) off from every other.
    #[serde(default)]
    isolate: Vec<std::net::IpAddr>,
    /// Ends those hosts' isolation.
    #[serde(default)]
    restore: Vec<std::net::IpAddr>,
    /// Two groups of hosts that cannot reach each other.
    partition: Option<(Vec<std::net::IpAddr>, Vec<std::net::IpAddr>)>,
    /// Hosts (IP to region) to shape like the ones given at start: a node
    /// added while the world runs (`anykv regions add --backend local`).
    #[serde(default)]
    place: std::collections::BTreeMap<std::net::IpAddr, String>,
}

async fn shaper_post(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(shaper) = &s.shaper else {
        return json_error(
            StatusCode::NOT_FOUND,
            "this node's links are not shaped (start it with --emulate-wan)",
        );
    };
    if let Some(want) = s.admin.as_ref().and_then(|a| a.token.as_ref()) {
        if !bearer_is(&headers, want) {
            return json_error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (Authorization: Bearer $ANYKV_ADMIN_TOKEN)",
            );
        }
    }
    let c: ShaperChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("bad shaper change: {e}")),
    };
    if c.loss.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
        return json_error(StatusCode::BAD_REQUEST, "loss must be between 0 and 1");
    }
    if let Some(bad) = c.place.values().find(|r| {
        shaper
            .table()
            .is_some_and(|t| !t.regions().any(|x| x == r.as_str()))
    }) {
        return json_error(
            StatusCode::BAD_REQUEST,
            format!("region {bad} is not in this node's RTT table"),
        );
    }
    for (ip, region) in &c.place {
        shaper.set_region(*ip, region);
    }
    if c.heal {
        shaper.heal();
    }
    if let Some(p) = c.loss {
        shaper.set_loss(p);
    }
    for ip in &c.isolate {
        shaper.isolate_host(*ip);
    }
    for ip in &c.restore {
        shaper.restore_host(*ip);
    }
    if let Some((a, b)) = &c.partition {
        shaper.partition_hosts(a, b);
    }
    tracing::info!(change = ?c, "emulated WAN changed");
    Json(serde_json::json!({ "ok": true })).into_response()
}

/// The admin API's state: the node's placement and the expected token.
#[derive(Clone)]
pub struct Admin {
    pub placement: Arc<crate::placement::Placement>,
    /// `ANYKV_ADMIN_TOKEN` (None: the admin API is disabled).
    pub token: Option<String>,
    /// The node's data directory: its usage log (`GET /admin/usage`) and
    /// its databases' files (`tenants/<id>`, purged by
    /// `DELETE /admin/tenants/{id}/data`).
    pub usage_dir: std::path::PathBuf,
    /// This node's machine id.
    pub machine: String,
}

/// `DELETE /admin/tenants/{id}/data`: removes a deleted database's files
/// from this node (`<dir>/tenants/<id>`): the sidecar's purge once the
/// deletion's grace period is over (docs/SIDECAR.md). Refused (409) while
/// this node still serves the database; `{"removed": false}` when it had
/// no files.
async fn admin_purge(
    State(s): State<AppState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Response {
    let p = match authorize(&s, &headers) {
        Ok(p) => p,
        Err((code, msg)) => return json_error(code, msg),
    };
    let Some(admin) = &s.admin else {
        return json_error(StatusCode::NOT_FOUND, "no cluster node");
    };
    if id == 0 {
        return json_error(StatusCode::BAD_REQUEST, "tenant 0 is the node's own");
    }
    // Neither served here nor in the catalog at all (a database put back
    // during its grace period may not have reached this node's store yet).
    if p.serves(id) || p.tables().0.contains_key(&id) {
        return json_error(
            StatusCode::CONFLICT,
            format!(
                "tenant {id} is in the catalog or served here: delete it from the catalog first"
            ),
        );
    }
    let dir = admin.usage_dir.join("tenants").join(id.to_string());
    let removing = dir.clone();
    let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&removing))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    match removed {
        Ok(()) => {
            tracing::info!(tenant = id, "purged {}", dir.display());
            Json(serde_json::json!({ "removed": true })).into_response()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Json(serde_json::json!({ "removed": false })).into_response()
        }
        Err(e) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("removing {}: {e}", dir.display()),
        ),
    }
}

/// `GET /admin/tenants/{id}/live`: the database as this node's copy has it
/// now: `{"role", "offset", "ops_per_sec", "used_memory", "keys"}` (the
/// dashboard's live figures, read without a customer connection, so they
/// are not the database's usage). 404 when this node holds no copy.
async fn admin_live(
    State(s): State<AppState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Response {
    let p = match authorize(&s, &headers) {
        Ok(p) => p,
        Err((code, msg)) => return json_error(code, msg),
    };
    match p.probe(id).await {
        Some(r) => Json(serde_json::json!({
            "role": if r.link_up.is_some() { "replica" } else { "primary" },
            "offset": r.offset,
            "ops_per_sec": r.ops_per_sec,
            "used_memory": r.used_memory,
            "keys": r.keys,
        }))
        .into_response(),
        None => json_error(
            StatusCode::NOT_FOUND,
            format!("this node holds no copy of tenant {id}"),
        ),
    }
}

/// `GET /admin/tenants/{id}/tokens`: the database's tokens this node has
/// seen in use since it started (a login, or a connection still open), as
/// `{"node", "tokens": [{"sha256", "idle_ms"}]}`: how long ago each was
/// last in use. The sidecar retires a rotation's old token once no node
/// has seen it for a while and the new one is in use (docs/SIDECAR.md).
async fn admin_tokens(
    State(s): State<AppState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Response {
    let p = match authorize(&s, &headers) {
        Ok(p) => p,
        Err((code, msg)) => return json_error(code, msg),
    };
    let machine = s.admin.as_ref().map(|a| a.machine.clone());
    let tokens: Vec<_> = p
        .shared()
        .meter
        .tokens_idle(id)
        .into_iter()
        .map(|(d, idle)| {
            serde_json::json!({
                "sha256": d.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                "idle_ms": idle.as_millis() as u64,
            })
        })
        .collect();
    Json(serde_json::json!({ "node": machine, "tokens": tokens })).into_response()
}

/// Most usage records one `GET /admin/usage` answers.
const USAGE_PAGE: usize = 1000;

/// `GET /admin/usage?after=N[&limit=M]`: this node's usage records after
/// sequence `N` (docs/METERING.md), oldest first, at most `M` (1000):
/// `{"node", "log", "records": [...]}`. The sidecar pulls every node's
/// and keeps each (log, seq) once.
async fn admin_usage(
    State(s): State<AppState>,
    headers: HeaderMap,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Response {
    if let Err((code, msg)) = authorize(&s, &headers) {
        return json_error(code, msg);
    }
    let Some(admin) = &s.admin else {
        return json_error(StatusCode::NOT_FOUND, "no cluster node");
    };
    let mut after = 0u64;
    let mut limit = USAGE_PAGE;
    for (k, v) in form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes()) {
        let n: Option<u64> = v.parse().ok();
        match (&*k, n) {
            ("after", Some(n)) => after = n,
            ("limit", Some(n)) => limit = (n as usize).clamp(1, USAGE_PAGE),
            ("after" | "limit", None) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    format!("{k}: expected a non-negative integer, got {v:?}"),
                )
            }
            _ => {}
        }
    }
    let dir = admin.usage_dir.clone();
    let read =
        tokio::task::spawn_blocking(move || anykv_server::meter::read_after(&dir, after, limit))
            .await;
    match read {
        Ok(Ok((log, records))) => Json(serde_json::json!({
            "node": admin.machine,
            "log": log,
            "records": records,
        }))
        .into_response(),
        Ok(Err(e)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `POST /admin/usage/taken?log=ID&seq=N`: the sidecar holds this node's
/// usage records of log `ID` up to sequence `N` (its cursor, committed):
/// the usage log's writer drops them from the file at its next
/// compaction (docs/METERING.md). A log that is not this node's current
/// one is remembered and never used.
async fn admin_usage_taken(
    State(s): State<AppState>,
    headers: HeaderMap,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Response {
    let p = match authorize(&s, &headers) {
        Ok(p) => p,
        Err((code, msg)) => return json_error(code, msg),
    };
    let (mut log, mut seq) = (None, None);
    for (k, v) in form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes()) {
        match &*k {
            "log" => log = Some(v.into_owned()),
            "seq" => match v.parse::<u64>() {
                Ok(n) => seq = Some(n),
                Err(_) => {
                    return json_error(
                        StatusCode::BAD_REQUEST,
                        format!("seq: expected a non-negative integer, got {v:?}"),
                    )
                }
            },
            _ => {}
        }
    }
    let (Some(log), Some(seq)) = (log, seq) else {
        return json_error(StatusCode::BAD_REQUEST, "log and seq are required");
    };
    p.shared().meter.usage_taken(&log, seq);
    Json(serde_json::json!({ "log": log, "seq": seq })).into_response()
}

/// How long an admin call waits for the tenant's nodes to apply a change.
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

fn json_error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

/// Whether the request carries `Authorization: Bearer <want>` (compared in
/// constant time: it is a secret).
fn bearer_is(headers: &HeaderMap, want: &str) -> bool {
    let got = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    got.len() == want.len()
        && got
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Checks the bearer token.
fn authorize(
    s: &AppState,
    headers: &HeaderMap,
) -> Result<Arc<crate::placement::Placement>, (StatusCode, &'static str)> {
    let Some(admin) = &s.admin else {
        return Err((
            StatusCode::NOT_FOUND,
            "this process runs no cluster node (anykv server); use anykv node",
        ));
    };
    let Some(want) = &admin.token else {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "the admin API is disabled: start the node with ANYKV_ADMIN_TOKEN set",
        ));
    };
    if !bearer_is(headers, want) {
        return Err((
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer $ANYKV_ADMIN_TOKEN)",
        ));
    }
    Ok(admin.placement.clone())
}

/// Waits (up to `wait`) until the nodes that hold tenant `id` have
/// applied catalog `version`, and (unless it is a deletion) every region
/// it asks for has a node holding it, then answers 200 with who applied
/// it, or 202 with who has not yet and the regions still without a copy
/// (the change is in the catalog and keeps spreading; a region's first
/// node will take it).
async fn wait_applied(
    p: &crate::placement::Placement,
    id: u64,
    version: u64,
    deleted: bool,
    known: Option<Vec<String>>,
    wait: std::time::Duration,
) -> Response {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let holders = known.clone().or_else(|| p.holders(id));
        let (state, missing) = progress(p, id, version, deleted, holders.as_deref());
        let done = holders.is_some() && settled(&state, &missing);
        if done || tokio::time::Instant::now() >= deadline {
            let applied: Vec<&str> = state.iter().filter(|x| x.1).map(|x| x.0.as_str()).collect();
            let pending: Vec<&str> = state
                .iter()
                .filter(|x| !x.1 && x.2)
                .map(|x| x.0.as_str())
                .collect();
            let down: Vec<&str> = state
                .iter()
                .filter(|x| !x.1 && !x.2)
                .map(|x| x.0.as_str())
                .collect();
            let code = if done {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            return (
                code,
                Json(serde_json::json!({
                    "id": id,
                    "version": version,
                    "applied": applied,
                    "pending": pending,
                    "down": down,
                    "missing_regions": missing,
                    "placed": holders.is_some(),
                })),
            )
                .into_response();
        }
        // Push the change to the holders and pull what they applied,
        // looking again every 10 ms meanwhile: a sync with a far region
        // takes a few of its round trips, and the holders also push their
        // applied versions as soon as they have them.
        let tick = std::time::Duration::from_millis(10);
        match &holders {
            Some(h) => {
                let sync = tokio::time::timeout_at(deadline, p.sync_with(h));
                tokio::pin!(sync);
                loop {
                    tokio::select! {
                        _ = &mut sync => break,
                        _ = tokio::time::sleep(tick) => {}
                    }
                    let (state, missing) = progress(p, id, version, deleted, Some(h));
                    if settled(&state, &missing) {
                        break;
                    }
                }
            }
            None => tokio::time::sleep(tick).await,
        }
    }
}

/// How far tenant `id`'s change (catalog `version`, or its deletion) got:
/// each of `holders` (none before it is placed) as (machine, applied it,
/// is alive), and the regions it asks for that have no copy yet (none for
/// a deletion).
fn progress(
    p: &crate::placement::Placement,
    id: u64,
    version: u64,
    deleted: bool,
    holders: Option<&[String]>,
) -> (Vec<(String, bool, bool)>, Vec<String>) {
    let want = (!deleted).then_some(version);
    let state = holders.map_or_else(Vec::new, |h| p.applied(h, id, want));
    let missing = if deleted {
        Vec::new()
    } else {
        p.missing_regions(id)
    };
    (state, missing)
}

/// Whether a change has settled: every live holder applied it and no
/// region lacks a copy.
fn settled(state: &[(String, bool, bool)], missing: &[String]) -> bool {
    missing.is_empty() && state.iter().all(|(_, applied, alive)| *applied || !*alive)
}

/// `GET /admin/tenants/{id}`: how far the tenant's current catalog version
/// got, at once: 200 when every node that holds it applied it and every
/// region it asks for has a copy, 202 otherwise (the same JSON as `PUT`'s
/// answer), 404 for a tenant the catalog does not have.
async fn admin_get(State(s): State<AppState>, Path(id): Path<u64>, headers: HeaderMap) -> Response {
    let p = match authorize(&s, &headers) {
        Ok(p) => p,
        Err((code, msg)) => return json_error(code, msg),
    };
    let (entries, _, _) = p.tables();
    if !entries.contains_key(&id) {
        return json_error(StatusCode::NOT_FOUND, format!("no tenant {id}"));
    }
    let version = p.version_of(id);
    wait_applied(&p, id, version, false, None, std::time::Duration::ZERO).await
}

/// `GET /admin/tenants/{id}/entry`: the tenant's catalog entry as the
/// catalog holds it (the JSON `PUT` takes), so a tool that changes one
/// field (`anykv regions remove` taking a read region out) sends the rest
/// back as it was, with the version one up. 404 for a tenant the catalog
/// does not have.
async fn admin_entry(
    State(s): State<AppState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Response {
    let p = match authorize(&s, &headers) {
        Ok(p) => p,
        Err((code, msg)) => return json_error(code, msg),
    };
    let (entries, _, _) = p.tables();
    match entries.get(&id) {
        Some(e) => Json(e).into_response(),
        None => json_error(StatusCode::NOT_FOUND, format!("no tenant {id}")),
    }
}

/// `PUT /admin/tenants/{id}`: creates or changes a tenant. The body is the
/// catalog entry as JSON (`{id, name, token_sha256, org, primary_region,
/// read_regions, maxmemory, maxmemory_policy, maxclients, ops_per_sec,
/// durability, consistency, version}`); `version` must be above the one
/// the catalog holds for this id (409 otherwise: the sidecar retried an
/// old change). 400 for an invalid entry or an id that differs from the
/// path's.
async fn admin_put(
    State(s): State<AppState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let p = match authorize(&s, &headers) {
        Ok(p) => p,
        Err((code, msg)) => return json_error(code, msg),
    };
    let entry: anykv_gossip::catalog::TenantEntry = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("invalid tenant JSON: {e}")),
    };
    if entry.id != id {
        return json_error(
            StatusCode::BAD_REQUEST,
            format!("the body's id {} is not the path's {id}", entry.id),
        );
    }
    if let Err(e) = entry.validate() {
        return json_error(StatusCode::BAD_REQUEST, e.to_string());
    }
    if let Some(msg) = anykv_server::catalog::policy_error(entry.maxmemory_policy.as_deref()) {
        return json_error(StatusCode::BAD_REQUEST, msg);
    }
    if let Some(r) = stale(&p, id, entry.version) {
        return r;
    }
    p.write_entry(&entry);
    wait_applied(&p, id, entry.version, false, None, APPLY_WAIT).await
}

/// 409 when `version` is not above the catalog's for tenant `id` (the
/// sidecar retried an old change).
fn stale(p: &crate::placement::Placement, id: u64, version: u64) -> Option<Response> {
    let held = p.version_of(id);
    (version <= held).then(|| {
        json_error(
            StatusCode::CONFLICT,
            format!("version {version} is not above the catalog's {held} for tenant {id}"),
        )
    })
}

#[derive(serde::Deserialize)]
struct DeleteBody {
    version: u64,
}

/// `DELETE /admin/tenants/{id}` with `{"version": N}`: removes the tenant
/// (its token is refused by every node that held it once this returns
/// 200); the nodes keep its files.
async fn admin_delete(
    State(s): State<AppState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let p = match authorize(&s, &headers) {
        Ok(p) => p,
        Err((code, msg)) => return json_error(code, msg),
    };
    let Ok(DeleteBody { version }) = serde_json::from_slice(&body) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "expected a JSON body {\"version\": N} (the catalog's version for this deletion)",
        );
    };
    if p.version_of(id) == 0 {
        return json_error(
            StatusCode::NOT_FOUND,
            format!("no tenant {id} in the catalog"),
        );
    }
    if let Some(r) = stale(&p, id, version) {
        return r;
    }
    let holders = p.holders(id).unwrap_or_default();
    p.write(anykv_gossip::catalog::tombstone(id, version));
    wait_applied(&p, id, version, true, Some(holders), APPLY_WAIT).await
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
    let tenants = s.admin.as_ref().map(|a| a.placement.tenant_views());
    let controllers = anykv_gossip::controller::regions(&v, anykv_gossip::controller::MIN_VOTERS);
    if q.get("format").map(String::as_str) == Some("table") {
        let mut text = v.table();
        text.push('\n');
        text.push_str(&anykv_gossip::controller::regions_table(&controllers));
        if let Some(t) = &tenants {
            text.push('\n');
            text.push_str(&anykv_gossip::catalog::tenants_table(t));
        }
        text.into_response()
    } else {
        let mut json = serde_json::to_value(&*v).unwrap_or_default();
        if let Some(obj) = json.as_object_mut() {
            obj.insert(
                "controllers".into(),
                serde_json::to_value(controllers).unwrap_or_default(),
            );
            if let Some(t) = tenants {
                obj.insert(
                    "tenants".into(),
                    serde_json::to_value(t).unwrap_or_default(),
                );
            }
        }
        Json(json).into_response()
    }
}

/// `POST /admin/tenants/{id}/failover`: the cluster's `FAILOVER`, a
/// planned handoff of one database to its in-sync standby through its
/// region's controller, with nothing lost (`crate::node::fail_over`). Any
/// node takes it: one that is not the database's primary passes it on to
/// the primary's node (its HTTP address is in the gossip metadata). 200
/// with `{"tenant", "from", "primary", "epoch", "ms"}`; 409 when the
/// database cannot fail over now (no controller group, no in-sync
/// standby), with what to do in `error`.
async fn admin_failover(
    State(s): State<AppState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Response {
    let p = match authorize(&s, &headers) {
        Ok(p) => p,
        Err((code, msg)) => return json_error(code, msg),
    };
    let path = format!("/admin/tenants/{id}/failover");
    if let Some(elsewhere) = unless_primary(&s, &p, id, &path, &headers, "").await {
        return elsewhere;
    }
    let Some(c) = p.controller().filter(|c| c.formed()) else {
        return json_error(
            StatusCode::CONFLICT,
            "this region has no controller group (it needs 3 nodes): a planned failover goes through the controller",
        );
    };
    let started = std::time::Instant::now();
    match crate::node::fail_over(c, p.shared(), id, c.handoff_timeout()).await {
        Ok(next) => Json(serde_json::json!({
            "tenant": id,
            "from": p.me,
            "primary": next.primary,
            "epoch": next.epoch,
            "ms": started.elapsed().as_millis() as u64,
        }))
        .into_response(),
        Err(e) => json_error(StatusCode::CONFLICT, e),
    }
}

/// An admin call's placement (the token checked) and its JSON body
/// (`expected` names its shape in the 400 answer); `Err`: the error
/// answer's status and message.
fn authorized_body<T: serde::de::DeserializeOwned>(
    s: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    expected: &str,
) -> Result<(Arc<crate::placement::Placement>, T), (StatusCode, String)> {
    let p = authorize(s, headers).map_err(|(code, msg)| (code, msg.to_string()))?;
    let b = serde_json::from_slice(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("expected {expected}: {e}")))?;
    Ok((p, b))
}

#[derive(serde::Deserialize)]
struct MoveBody {
    /// The region to make the database's primary region.
    to: String,
    /// How long the replica there may take to acknowledge everything
    /// while writes are held (default 10 s).
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// `POST /admin/tenants/{id}/move` with `{"to": "<region>"}`: a planned
/// move of the database's primary to its replica in another region, with
/// nothing acknowledged lost (`crate::placement::Placement::move_primary`:
/// writes wait meanwhile). Any node takes it and passes it on to the
/// primary's node. 200 with `{tenant, from, primary, region, epoch,
/// offset, held_ms}`; 409 with the reason when refused (no replica in
/// that region, it did not catch up in time: then nothing changed).
async fn admin_move(
    State(s): State<AppState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (p, b): (_, MoveBody) = match authorized_body(&s, &headers, &body, r#"{"to": "<region>"}"#)
    {
        Ok(x) => x,
        Err((code, msg)) => return json_error(code, msg),
    };
    let path = format!("/admin/tenants/{id}/move");
    let text = String::from_utf8_lossy(&body).into_owned();
    if let Some(elsewhere) = unless_primary(&s, &p, id, &path, &headers, &text).await {
        return elsewhere;
    }
    let timeout = std::time::Duration::from_millis(b.timeout_ms.unwrap_or(10_000));
    match p.move_primary(id, &b.to, timeout).await {
        Ok(m) => Json(m).into_response(),
        Err(crate::placement::ForceError::NotFound(m)) => json_error(StatusCode::NOT_FOUND, m),
        Err(crate::placement::ForceError::Refused(m)) => json_error(StatusCode::CONFLICT, m),
    }
}

/// For an admin call the database's primary's node must answer: `None`
/// on that node; elsewhere the answer (404 when the database is placed
/// nowhere, else the primary's node's answer to `path` with `body`).
async fn unless_primary(
    s: &AppState,
    p: &crate::placement::Placement,
    id: u64,
    path: &str,
    headers: &HeaderMap,
    body: &str,
) -> Option<Response> {
    let Some(t) = p.tenant_views().into_iter().find(|t| t.id == id) else {
        return Some(json_error(
            StatusCode::NOT_FOUND,
            format!("no database {id} is placed in the cluster"),
        ));
    };
    if t.primary == p.me {
        return None;
    }
    Some(pass_on(s, &t.primary, path, headers, body).await)
}

/// Passes an admin call on to node `machine` (whose HTTP address its
/// gossip metadata gives), with the caller's token, and relays its answer.
async fn pass_on(
    s: &AppState,
    machine: &str,
    path: &str,
    headers: &HeaderMap,
    body: &str,
) -> Response {
    let target = s.view.as_ref().and_then(|v| {
        v.borrow()
            .member(machine)
            .and_then(|m| m.meta.as_ref()?.http_addr)
    });
    let Some(addr) = target else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{machine} publishes no HTTP address; retry, or send this to its node"),
        );
    };
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    match request(addr, "POST", path, Some(&token), body).await {
        Ok((code, body)) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => json_error(
            StatusCode::BAD_GATEWAY,
            format!("passing {path} on to {machine} ({addr}): {e}"),
        ),
    }
}

#[derive(serde::Deserialize)]
struct PromoteBody {
    /// The node to promote (a machine name holding a copy).
    to: String,
    /// Must be true: the caller accepts that acknowledged writes may be
    /// lost.
    #[serde(default)]
    force: bool,
}

/// `POST /admin/tenants/{id}/promote` with `{"to": "<node>", "force":
/// true}`: the operator's forced promotion, for when every in-sync copy of
/// a database is gone (`crate::placement::Placement::force_promote`). Any
/// node takes it and passes it on to `to`. 200 with what was done and may
/// have been lost; 409 with the reason when refused (the primary or an
/// in-sync standby is alive, `to` holds no copy); 400 without `force`.
async fn admin_promote(
    State(s): State<AppState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (p, b): (_, PromoteBody) =
        match authorized_body(&s, &headers, &body, r#"{"to": "<node>", "force": true}"#) {
            Ok(x) => x,
            Err((code, msg)) => return json_error(code, msg),
        };
    if !b.force {
        return json_error(
            StatusCode::BAD_REQUEST,
            "a forced promotion may lose acknowledged writes: say \"force\": true",
        );
    }
    let refused = |e: crate::placement::ForceError| match e {
        e @ crate::placement::ForceError::NotFound(_) => {
            json_error(StatusCode::NOT_FOUND, e.to_string())
        }
        e => json_error(StatusCode::CONFLICT, e.to_string()),
    };
    if b.to != p.me {
        // This node's view counts too: the target may be the one cut off.
        if let Err(e) = p.refuse_forcing(id, &b.to) {
            return refused(e);
        }
        let path = format!("/admin/tenants/{id}/promote");
        let body = String::from_utf8_lossy(&body).into_owned();
        return pass_on(&s, &b.to, &path, &headers, &body).await;
    }
    match p.force_promote(id).await {
        Ok(f) => Json(f).into_response(),
        Err(e) => refused(e),
    }
}

/// `GET /ready`: 200 once every copy this node holds is in sync (see
/// `Placement::not_ready`), else 503 naming what it waits for. Fly's
/// top-level health check (fly.toml's `[checks]`) asks it, so a rolling deploy
/// stops the next machine only once this one caught up: its primaries can
/// then be handed to an in-sync standby. A process without a cluster (or
/// a router node, which holds nothing) is ready once it answers.
async fn ready(State(s): State<AppState>) -> Response {
    let waiting = s
        .admin
        .as_ref()
        .map(|a| a.placement.not_ready())
        .unwrap_or_default();
    let code = if waiting.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "ready": waiting.is_empty(), "waiting": waiting });
    (code, Json(body)).into_response()
}

/// Binds `addr` and serves until the process ends.
pub async fn serve(
    addr: SocketAddr,
    view: Option<watch::Receiver<Arc<ClusterView>>>,
    admin: Option<Admin>,
    shaper: Option<anykv_gossip::link::Shaper>,
) -> anyhow::Result<SocketAddr> {
    let state = AppState {
        prom: prometheus()?,
        view,
        admin,
        shaper: shaper.filter(|s| s.is_on()),
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/cluster", get(cluster))
        .route("/ready", get(ready))
        .route(
            "/admin/tenants/{id}",
            get(admin_get).put(admin_put).delete(admin_delete),
        )
        .route(
            "/admin/tenants/{id}/failover",
            axum::routing::post(admin_failover),
        )
        .route(
            "/admin/tenants/{id}/promote",
            axum::routing::post(admin_promote),
        )
        .route("/admin/tenants/{id}/move", axum::routing::post(admin_move))
        .route("/admin/usage", get(admin_usage))
        .route("/admin/usage/taken", post(admin_usage_taken))
        .route(
            "/admin/tenants/{id}/data",
            axum::routing::delete(admin_purge),
        )
        .route("/admin/tenants/{id}/entry", get(admin_entry))
        .route("/admin/tenants/{id}/live", get(admin_live))
        .route("/admin/tenants/{id}/tokens", get(admin_tokens))
        .route("/shaper", axum::routing::post(shaper_post))
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

/// A minimal HTTP/1.1 request (`Connection: close`, optional bearer
/// token and JSON body); the status code and the body. The CLI's and the
/// admin API's only client needs: no client crate.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .with_context(|| format!("connecting to {addr}: timed out"))?
    .with_context(|| format!("connecting to {addr}"))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    // A failover waits for the standby and the controller: up to a few
    // seconds.
    tokio::time::timeout(std::time::Duration::from_secs(15), s.read_to_end(&mut buf))
        .await
        .context("reading the response: timed out")??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let code = head
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .context("malformed HTTP status line")?;
    Ok((code, body.to_string()))
}

/// A GET whose answer must be 200: its body.
pub async fn get_body(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let (code, body) = request(addr, "GET", path, None, "").await?;
    if code != 200 {
        anyhow::bail!("{addr}{path}: HTTP {code}: {}", body.trim());
    }
    Ok(body)
}
