//! The Extensions API Fly calls (axum): provisioning, status, deletion.
//!
//! Every request is verified first ([`crate::sign`]); the sidecar's
//! SQLite store ([`crate::store`]) says what was provisioned, keyed by
//! Fly's id; the cluster's admin API ([`crate::cluster`]) makes it real.
//!
//! - `POST /extensions` provisions a database synchronously: a new
//!   tenant with its own token (the store keeps it sealed, the cluster its
//!   SHA-256), durability `region`, consistency `ryw`, in the primary
//!   region and read regions asked for, and answers its `REDIS_URL`
//!   (`redis://default:<token>@<host>:6379`, the host the request's
//!   Flycast `ip_address` unless `--redis-url-host` says otherwise, IPv6
//!   bracketed). A retry with the same id answers the same database; a
//!   failure leaves the row `error` and a retry finishes the job.
//! - `GET /extensions/{id}`: the database as Fly sees it (`status`
//!   `ready` | `provisioning` | `error` | `deleted`, regions).
//! - `DELETE /extensions/{id}`: the database is deleted from the cluster
//!   at once (its token stops working everywhere); the row stays,
//!   `deleted`, so the id is never provisioned again by mistake.
//! - PATCH and DELETE also tell Fly (`resource.updated`,
//!   `resource.deleted`) through the webhook outbox ([`crate::webhook`]).
//! - `POST /extensions/events`: Fly's machine events, logged.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::cluster::Applied;
use crate::cluster::Cluster;
use crate::sign::{Request, Signed, Verifier};
use crate::store::{Database, Store};
use crate::tokens::{self, Sealer};

/// Fly's region codes (a region anykv may run in). A request naming
/// another is refused with 422.
pub const FLY_REGIONS: &[&str] = &[
    "ams", "arn", "atl", "bog", "bom", "bos", "cdg", "den", "dfw", "ewr", "eze", "fra", "gdl",
    "gig", "gru", "hkg", "iad", "jnb", "lax", "lhr", "mad", "mia", "nrt", "ord", "otp", "phx",
    "qro", "scl", "sea", "sin", "sjc", "syd", "waw", "yul", "yyz",
];

/// What the handlers share.
pub struct Api {
    pub verifier: Verifier,
    pub store: Mutex<Store>,
    pub cluster: Cluster,
    pub sealer: Sealer,
    /// `--redis-url-host`: the host of every REDIS_URL (None: the
    /// request's `ip_address`).
    pub redis_host: Option<String>,
    /// The port customers connect to.
    pub redis_port: u16,
    /// Webhooks to Fly (the outbox's sender, [`crate::webhook::run`]).
    pub hooks: Arc<crate::webhook::Hooks>,
    /// How long a deleted database's files stay on the nodes before they
    /// are purged (`--purge-after-secs`; [`crate::purge`]).
    pub purge_after_secs: i64,
    /// How long a rotation's old token must go unused, the new one in use,
    /// before it is retired (`--retire-idle-secs`; 0: only by an admin;
    /// [`crate::rotation`]).
    pub retire_idle_secs: u64,
    /// Held by every change (provisioning, PATCH, DELETE) from its first
    /// look at the store to its last write, the cluster call included: a
    /// DELETE never overtakes a provisioning of the same id that is still
    /// talking to the cluster, and concurrent retries see each other's
    /// outcome. Fly's provisioning traffic is a few requests a minute.
    pub writes: tokio::sync::Mutex<()>,
}

/// The longest a change may take to answer, its wait for the change
/// before it included: Fly wants provisioning answered well under 5 s.
pub const CHANGE_BUDGET: std::time::Duration = std::time::Duration::from_secs(4);

/// Runs a verified change (`signed` is the verification's outcome; a
/// refusal is the answer) under [`Api::writes`]. Its nonce stays spent
/// whatever the answer: a change answered with a server error may have
/// reached the cluster (a timeout, a lost answer), so only a new request
/// (Fly signs every attempt anew) is taken.
async fn as_change(
    api: &Api,
    signed: Result<Signed, Box<Response>>,
    change: impl std::future::Future<Output = Response>,
) -> Response {
    if let Err(r) = signed {
        return *r;
    }
    let run = async {
        let _writing = api.writes.lock().await;
        change.await
    };
    match tokio::time::timeout(CHANGE_BUDGET, run).await {
        Ok(r) => r,
        // The change stops where it is: a catalog write it made is found
        // again by the retry (a 409 there is read as what it is).
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the cluster did not take the change within {} s; retry the request",
                CHANGE_BUDGET.as_secs()
            ),
            None,
        ),
    }
}

/// The router (mount it at `--base-path`).
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/extensions", post(provision))
        .route("/extensions/events", post(event))
        .route("/extensions/{id}", get(show).delete(delete).patch(change))
        .route("/billing", get(crate::metering::billing))
        .route("/healthz", get(healthz))
        .with_state(api)
}

/// `GET /healthz`: 200 while the store answers a query (Fly's health
/// check: fly.sidecar.toml), 503 with the store's error otherwise.
async fn healthz(State(api): State<Arc<Api>>) -> Response {
    match api.store.lock().database("") {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store does not answer: {e}"),
            None,
        ),
    }
}

pub(crate) fn error(status: StatusCode, msg: impl Into<String>, field: Option<&str>) -> Response {
    let mut body = json!({ "error": msg.into() });
    if let Some(f) = field {
        body["field"] = json!(f);
    }
    (status, Json(body)).into_response()
}

/// [`error`], boxed for `Result`s (a `Response` is large).
fn bad(status: StatusCode, msg: impl Into<String>, field: Option<&str>) -> Box<Response> {
    Box::new(error(status, msg, field))
}

use crate::unix_now as now;

/// Verifies the request (claiming its nonce); the error is the answer.
pub(crate) fn verified(
    api: &Api,
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Signed, Box<Response>> {
    let signature = headers.get("x-signature").and_then(|v| v.to_str().ok());
    let req = Request {
        method,
        path,
        query,
        body,
        signature,
    };
    let mut store = api.store.lock();
    api.verifier.verify(&req, now(), &mut *store).map_err(|e| {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        Box::new(error(status, e.to_string(), e.field()))
    })
}

/// A provisioning request's fields.
struct Provision {
    id: String,
    name: String,
    organization_id: String,
    organization_name: String,
    organization_email: String,
    primary_region: String,
    read_regions: Vec<String>,
    ip_address: String,
    /// The user who asked: (id, email, role), when Fly named one.
    user: Option<(String, String, String)>,
    plan: &'static crate::plans::Plan,
}

/// `needs_ip`: no `--redis-url-host`, so the REDIS_URL's host is the
/// request's `ip_address`, which must then be an IP address.
fn parse_provision(body: &[u8], needs_ip: bool) -> Result<Provision, Box<Response>> {
    let v = json_body(body)?;
    let text = |f: &str, required: bool| -> Result<String, Box<Response>> {
        match v.get(f) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            None | Some(Value::Null) if !required => Ok(String::new()),
            _ => Err(bad(
                StatusCode::BAD_REQUEST,
                format!("{f}: expected a non-empty string"),
                Some(f),
            )),
        }
    };
    let read_regions = read_regions(&v, false)?;
    let user_id = text("user_id", false)?;
    let user = if user_id.is_empty() {
        None
    } else {
        let role = text("user_role", false)?;
        let role = match role.as_str() {
            "" | "member" => "member",
            "admin" => "admin",
            _ => {
                return Err(bad(
                    StatusCode::BAD_REQUEST,
                    format!("user_role: '{role}' is neither admin nor member"),
                    Some("user_role"),
                ))
            }
        };
        Some((user_id, text("user_email", false)?, role.to_string()))
    };
    let plan = match v.get("plan") {
        None | Some(Value::Null) => crate::plans::DEFAULT,
        Some(p) => plan_of(p)?,
    };
    let p = Provision {
        id: text("id", true)?,
        name: text("name", true)?,
        organization_id: text("organization_id", true)?,
        organization_name: text("organization_name", false)?,
        organization_email: text("organization_email", false)?,
        primary_region: text("primary_region", true)?,
        read_regions,
        ip_address: text("ip_address", needs_ip)?,
        user,
        plan,
    };
    if needs_ip && p.ip_address.parse::<std::net::IpAddr>().is_err() {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            format!("ip_address: '{}' is not an IP address", p.ip_address),
            Some("ip_address"),
        ));
    }
    check_regions(&p.primary_region, true, &p.read_regions)?;
    Ok(p)
}

/// The catalog's name for a database: Fly's name made valid (lowercase
/// letters, digits, `-`, `_`) and unique with the tenant id.
fn tenant_name(name: &str, tenant_id: u64) -> String {
    let mut s: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    if s.is_empty() {
        s.push_str("db");
    }
    format!("{s}-{tenant_id}")
}

/// A body's `plan`: one of [`crate::plans::PLANS`] (422 naming the field
/// otherwise).
fn plan_of(v: &Value) -> Result<&'static crate::plans::Plan, Box<Response>> {
    let name = v.as_str().unwrap_or_default();
    crate::plans::find(name).ok_or_else(|| {
        bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "plan: {v} is not a plan; the plans are {}",
                crate::plans::names()
            ),
            Some("plan"),
        )
    })
}

/// The cluster catalog's row for `db` at `version`, with its plan's
/// limits (an unknown plan name, which the API never stores, has none).
fn catalog_entry(db: &Database, tokens: &[String], version: u64) -> Value {
    let (maxmemory, maxclients, ops) = crate::plans::find(&db.plan)
        .map_or((0, 0, 0), |p| (p.maxmemory, p.maxclients, p.ops_per_sec));
    json!({
        "id": db.tenant_id,
        "name": tenant_name(&db.name, db.tenant_id),
        "token_sha256": tokens.iter().map(|t| tokens::digest_hex(t)).collect::<Vec<_>>(),
        "org": db.organization_id,
        "primary_region": db.primary_region,
        "read_regions": db.read_regions,
        "maxmemory": maxmemory, "maxmemory_policy": null,
        "maxclients": maxclients, "ops_per_sec": ops,
        "durability": "region",
        "consistency": "ryw",
        "version": version,
    })
}

pub(crate) fn redis_url(api: &Api, token: &str, ip: &str) -> String {
    let host = api.redis_host.clone().unwrap_or_else(|| ip.to_string());
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    format!("redis://default:{token}@{host}:{}", api.redis_port)
}

/// The answer to a provisioning request for `db`.
fn provisioned(api: &Api, db: &Database, ip: &str) -> Response {
    let token = match api.sealer.open(&db.token_sealed, &db.fly_id) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    };
    Json(json!({
        "id": db.fly_id,
        "name": db.name,
        "fly_app_name": db.name,
        "status": db.status,
        "config": { "REDIS_URL": redis_url(api, &token, ip) },
    }))
    .into_response()
}

async fn provision(
    State(api): State<Arc<Api>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let signed = verified(
        &api,
        "POST",
        "/extensions",
        query.as_deref().unwrap_or(""),
        &headers,
        &body,
    );
    as_change(&api, signed, provision_signed(&api, &body)).await
}

/// `POST /extensions/events`: Fly's machine events, verified like every
/// request, logged and acknowledged (nothing acts on them yet).
async fn event(
    State(api): State<Arc<Api>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = "/extensions/events";
    if let Err(r) = verified(
        &api,
        "POST",
        path,
        query.as_deref().unwrap_or(""),
        &headers,
        &body,
    ) {
        return *r;
    }
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}"), None),
    };
    let kind = ["action", "type", "event"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .unwrap_or("(no action)");
    tracing::info!(event = kind, "Fly event: {v}");
    Json(json!({ "ok": true })).into_response()
}

async fn provision_signed(api: &Api, body: &[u8]) -> Response {
    let p = match parse_provision(body, api.redis_host.is_none()) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    // One critical section: the id's row, or a new one with the next
    // tenant id (two requests for one id get one database).
    let db = {
        let mut store = api.store.lock();
        let known = match store.database(&p.id) {
            Ok(d) => d,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
        };
        match known {
            Some(d) if d.status == "deleted" => {
                return error(
                    StatusCode::CONFLICT,
                    format!(
                        "extension {} was deleted; provision it under a new id",
                        p.id
                    ),
                    Some("id"),
                )
            }
            Some(d) => d,
            None => {
                let made = (|| -> Result<Database, String> {
                    let tenant_id = store.next_tenant_id().map_err(|e| e.to_string())?;
                    let token = tokens::new_token().map_err(|e| e.to_string())?;
                    let token_sealed = api.sealer.seal(&token, &p.id).map_err(|e| e.to_string())?;
                    let org = (
                        p.organization_id.as_str(),
                        p.organization_name.as_str(),
                        p.organization_email.as_str(),
                    );
                    let user = p
                        .user
                        .as_ref()
                        .map(|(id, email, role)| (id.as_str(), email.as_str(), role.as_str()));
                    store
                        .insert_database(
                            org,
                            user,
                            &Database {
                                fly_id: p.id.clone(),
                                tenant_id,
                                name: p.name.clone(),
                                organization_id: p.organization_id.clone(),
                                primary_region: p.primary_region.clone(),
                                read_regions: p.read_regions.clone(),
                                status: "provisioning".into(),
                                created_at: now(),
                                token_sealed,
                                catalog_version: 1,
                                plan: p.plan.name.to_string(),
                                ip_address: p.ip_address.clone(),
                                next_token_sealed: String::new(),
                            },
                        )
                        .map_err(|e| e.to_string())
                })();
                match made {
                    Ok(d) => d,
                    Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e, None),
                }
            }
        }
    };
    if db.status != "ready" {
        // New, or a retry of one that failed half-way: (re)create it in
        // the cluster. The catalog takes version 1 once; a retry's 409 is
        // the tenant already there.
        let entry = match first_entry(api, &db) {
            Ok(e) => e,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e, None),
        };
        let status = match api.cluster.put_tenant(db.tenant_id, &entry).await {
            Ok((Applied::Everywhere, _)) => "ready",
            // In the catalog; its nodes (or its region's first node) are
            // still to come: Fly polls GET.
            Ok((Applied::Pending, _)) => "provisioning",
            Err(e) => {
                tracing::warn!(id = %db.fly_id, "provisioning failed: {e}");
                let _ = crate::store::set_failed(api.store.lock().conn(), &db.fly_id, now());
                return cluster_error(&e, "take the database");
            }
        };
        if let Err(e) = api.store.lock().set_status(&db.fly_id, status, 1) {
            return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None);
        }
        tracing::info!(id = %db.fly_id, tenant = db.tenant_id, "provisioned");
        let mut db = db;
        db.status = status.into();
        return provisioned(api, &db, &p.ip_address);
    }
    provisioned(api, &db, &p.ip_address)
}

/// A failed admin call as the answer: 503 when no node answered (retry),
/// 502 when the cluster refused the change.
fn cluster_error(e: &crate::cluster::ClusterError, what: &str) -> Response {
    let status = match e {
        crate::cluster::ClusterError::Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
        crate::cluster::ClusterError::Refused { .. } => StatusCode::BAD_GATEWAY,
    };
    error(
        status,
        format!("the cluster did not {what} ({e}); retry"),
        None,
    )
}

/// [`verified`] for a request on `/extensions/{id}` that signs its query.
fn verified_query(
    api: &Api,
    method: &str,
    id: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Signed, Box<Response>> {
    let path = format!("/extensions/{id}");
    verified(api, method, &path, query.unwrap_or(""), headers, b"")
}

/// `read_regions` of a PATCH body, checked against `primary`.
/// A PATCH's changes: a new plan, new read regions, or both (at least
/// one).
pub(crate) struct Change {
    pub plan: Option<&'static crate::plans::Plan>,
    pub read_regions: Option<Vec<String>>,
    /// New tokens, sealed: (current, next; empty when no rotation).
    pub tokens: Option<(String, String)>,
}

/// A database's valid tokens, opened: its token, and a rotation's new one.
pub(crate) fn open_tokens(api: &Api, db: &Database) -> Result<Vec<String>, Box<Response>> {
    let mut out = Vec::new();
    for sealed in [&db.token_sealed, &db.next_token_sealed] {
        if sealed.is_empty() {
            continue;
        }
        let t = api
            .sealer
            .open(sealed, &db.fly_id)
            .map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?;
        out.push(t);
    }
    Ok(out)
}

fn parse_change(body: &[u8], primary: &str) -> Result<Change, Box<Response>> {
    let v = json_body(body)?;
    let plan = match v.get("plan") {
        None | Some(Value::Null) => None,
        Some(p) => Some(plan_of(p)?),
    };
    let read_regions = match v.get("read_regions") {
        None | Some(Value::Null) if plan.is_some() => None,
        _ => {
            let regions = read_regions(&v, true)?;
            check_regions(primary, false, &regions)?;
            Some(regions)
        }
    };
    Ok(Change {
        plan,
        read_regions,
        tokens: None,
    })
}

/// A request body as JSON (400 when it is not).
fn json_body(body: &[u8]) -> Result<Value, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        bad(
            StatusCode::BAD_REQUEST,
            format!("body is not JSON: {e}"),
            None,
        )
    })
}

/// The body's `read_regions`: an array of strings; absent (or null) is
/// none unless `required` (a PATCH, where it is the only change offered).
fn read_regions(v: &Value, required: bool) -> Result<Vec<String>, Box<Response>> {
    let shape = || {
        let msg = if required {
            "read_regions: expected an array of region codes (the only change offered)"
        } else {
            "read_regions: expected an array of region codes"
        };
        bad(StatusCode::BAD_REQUEST, msg, Some("read_regions"))
    };
    match v.get("read_regions") {
        None | Some(Value::Null) if !required => Ok(Vec::new()),
        None | Some(Value::Null) => Err(bad(
            StatusCode::BAD_REQUEST,
            "read_regions or plan: a PATCH changes at least one",
            Some("read_regions"),
        )),
        Some(Value::Array(a)) => a
            .iter()
            .map(|r| r.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                bad(
                    StatusCode::BAD_REQUEST,
                    "read_regions: expected an array of region codes",
                    Some("read_regions"),
                )
            }),
        _ => Err(shape()),
    }
}

/// 422 naming the field for a region that is not Fly's (the primary
/// region too when it is `given` in this request), or a read region that
/// is the primary region.
fn check_regions(primary: &str, given: bool, reads: &[String]) -> Result<(), Box<Response>> {
    let named = given
        .then_some((primary, "primary_region"))
        .into_iter()
        .chain(reads.iter().map(|r| (r.as_str(), "read_regions")));
    for (r, field) in named {
        if !FLY_REGIONS.contains(&r) {
            return Err(bad(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("unknown region '{r}'"),
                Some(field),
            ));
        }
    }
    if reads.iter().any(|r| r == primary) {
        return Err(bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            "read_regions: the primary region is not also a read region",
            Some("read_regions"),
        ));
    }
    // (A region named twice would be billed twice for one replica.)
    if let Some((i, r)) = reads
        .iter()
        .enumerate()
        .find(|(i, r)| reads[..*i].contains(r))
    {
        return Err(bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("read_regions: '{r}' is named twice (at {i})"),
            Some("read_regions"),
        ));
    }
    Ok(())
}

/// `PATCH /extensions/{id}`: new read regions; the cluster adds or drops
/// their replicas live.
async fn change(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/extensions/{id}");
    let signed = verified(
        &api,
        "PATCH",
        &path,
        query.as_deref().unwrap_or(""),
        &headers,
        &body,
    );
    as_change(&api, signed, change_signed(&api, &id, &body)).await
}

async fn change_signed(api: &Api, id: &str, body: &[u8]) -> Response {
    let db = match api.store.lock().database(id) {
        Ok(Some(d)) if d.status == "deleted" => {
            return error(
                StatusCode::CONFLICT,
                format!("extension {id} was deleted"),
                None,
            )
        }
        Ok(Some(d)) => d,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no extension {id}"), None),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    };
    let change = match parse_change(body, &db.primary_region) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match apply_change(api, db, change).await {
        Ok(changed) => described(&changed),
        Err(r) => *r,
    }
}

/// Makes `change` to `db` in the cluster's catalog, then in the store,
/// telling Fly (`resource.updated`); the database as it is now. The
/// caller holds [`Api::writes`].
pub(crate) async fn apply_change(
    api: &Api,
    db: Database,
    change: Change,
) -> Result<Database, Box<Response>> {
    let id = db.fly_id.as_str();
    if db.status == "error" {
        // Its provisioning failed: nothing to change until a retry of it
        // (`POST` with the same id) makes it.
        return Err(bad(
            StatusCode::CONFLICT,
            format!("extension {id} failed to provision; retry the provisioning first"),
            None,
        ));
    }
    let version = db.catalog_version + 1;
    let mut changed = db.clone();
    // The cluster's operators may have moved the database since (`anykv
    // regions remove` takes a region out of its read regions, or hands its
    // primary to another region, each a catalog version up): their
    // regions are the database's now, so this change does not put it back
    // where it no longer is.
    if let Ok(Some(held)) = api.cluster.entry(db.tenant_id).await {
        if held["version"]
            .as_u64()
            .is_some_and(|v| v > db.catalog_version)
        {
            adopt_regions(&mut changed, &held);
        }
    }
    if let Some(r) = &change.read_regions {
        changed.read_regions = r
            .iter()
            .filter(|x| **x != changed.primary_region)
            .cloned()
            .collect();
    }
    if let Some(p) = change.plan {
        changed.plan = p.name.to_string();
    }
    if let Some((current, next)) = &change.tokens {
        changed.token_sealed = current.clone();
        changed.next_token_sealed = next.clone();
    }
    let tokens = open_tokens(api, &changed)?;
    let entry = catalog_entry(&changed, &tokens, version);
    // (A read region added where no node runs yet: the database stays
    // usable where it is; that region's hours count once a node there
    // has its replica, `metering::count_read_regions`.)
    let version = match api.cluster.put_tenant(db.tenant_id, &entry).await {
        Ok((_, v)) => v,
        Err(e) => return Err(Box::new(cluster_error(&e, "take the change"))),
    };
    // Fly is told (`resource.updated`) as well as answered: the change
    // may have been another client's PATCH, the answer lost.
    let stored = notify(api, id, "resource.updated", |c| {
        crate::store::set_primary_region(c, id, &changed.primary_region)?;
        crate::store::set_read_regions(c, id, &changed.read_regions, version)?;
        crate::store::set_tokens(
            c,
            id,
            &changed.token_sealed,
            &changed.next_token_sealed,
            version,
        )?;
        crate::store::set_plan(c, id, &changed.plan, version)
    });
    let changed =
        stored.map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?;
    tracing::info!(
        id = %id,
        tenant = db.tenant_id,
        regions = ?changed.read_regions,
        plan = %changed.plan,
        "changed"
    );
    Ok(changed)
}

/// Takes the primary and read regions of the catalog's entry `held` (a
/// newer one than the sidecar wrote) into `db`.
fn adopt_regions(db: &mut Database, held: &serde_json::Value) {
    if let Some(p) = held["primary_region"].as_str() {
        if p != db.primary_region {
            tracing::info!(tenant = db.tenant_id, from = %db.primary_region, to = p, "the cluster moved this database's primary region");
            db.primary_region = p.to_string();
        }
    }
    if let Some(r) = held["read_regions"].as_array() {
        db.read_regions = r
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect();
    }
}

/// Takes into the store the regions the cluster's operators gave ready
/// databases since the sidecar last wrote them (`anykv regions remove`
/// moved a primary or took out a read region, each a catalog version up),
/// as `/cluster`'s `tenants` (`cluster_json`) show them, and tells Fly
/// (`resource.updated`): without it, `GET` and Fly would show the old
/// regions until the database's next change. Under [`Api::writes`], so a
/// change in flight is never undone by an older view. Returns how many
/// databases it updated.
pub async fn adopt_moves(api: &Api, cluster_json: &str) -> usize {
    let Ok(view) = serde_json::from_str::<serde_json::Value>(cluster_json) else {
        return 0;
    };
    let Some(tenants) = view["tenants"].as_array() else {
        return 0;
    };
    let _writing = api.writes.lock().await;
    let ready = match api.store.lock().ready() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("reading the ready databases: {e}");
            return 0;
        }
    };
    let mut adopted = 0;
    for db in ready {
        let Some(t) = tenants
            .iter()
            .find(|t| t["id"].as_u64() == Some(db.tenant_id))
        else {
            continue;
        };
        let version = t["version"].as_u64().unwrap_or(0);
        if version <= db.catalog_version {
            continue;
        }
        let mut moved = db.clone();
        adopt_regions(&mut moved, t);
        if moved.primary_region == db.primary_region && moved.read_regions == db.read_regions {
            continue;
        }
        let r = notify(api, &db.fly_id, "resource.updated", |c| {
            crate::store::set_primary_region(c, &db.fly_id, &moved.primary_region)?;
            crate::store::set_read_regions(c, &db.fly_id, &moved.read_regions, version)
        });
        match r {
            Ok(_) => {
                tracing::info!(id = %db.fly_id, tenant = db.tenant_id, primary = %moved.primary_region, reads = ?moved.read_regions, version, "took the regions the cluster's operators gave this database");
                adopted += 1;
            }
            Err(e) => tracing::warn!(id = %db.fly_id, "taking the cluster's regions: {e}"),
        }
    }
    adopted
}

/// Moves databases from `provisioning` to `ready` once the cluster says
/// every region they ask for has a node that applied them (a region's
/// first node came up), telling Fly with `resource.updated` (status
/// `ready`): checked every `every`, under [`Api::writes`] like any change.
pub async fn finish_provisioning(api: Arc<Api>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        finish_provisioning_once(&api).await;
    }
}

/// One pass of [`finish_provisioning`].
async fn finish_provisioning_once(api: &Api) {
    let pending = api.store.lock().provisioning();
    let pending = match pending {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("reading the databases being provisioned: {e}");
            return;
        }
    };
    for (fly_id, tenant) in pending {
        let _writing = api.writes.lock().await;
        match api.cluster.tenant_state(tenant).await {
            Ok(Applied::Everywhere) => {}
            Ok(Applied::Pending) => continue,
            // Not in the catalog (as this endpoint sees it): a
            // provisioning cut short before the cluster took it (the
            // change budget ran out, the sidecar stopped). It is finished
            // here: its first catalog row sent again (a 409 from a node
            // that has it is read as its state).
            Err(crate::cluster::ClusterError::Refused { status: 404, .. }) => {
                match resend_first(api, &fly_id).await {
                    Ok(Applied::Everywhere) => {}
                    Ok(Applied::Pending) | Err(None) => continue,
                    // Refused (a tombstone in its way, a row the cluster
                    // will not take): failed, as if its POST had been; a
                    // retry or the undo after the grace period follows.
                    Err(Some(e)) => {
                        tracing::warn!(id = %fly_id, "the cluster refuses this provisioning: {e}; error");
                        let failed =
                            crate::store::set_failed(api.store.lock().conn(), &fly_id, now());
                        if let Err(e) = failed {
                            tracing::warn!(id = %fly_id, "marking a provisioning failed: {e}");
                        }
                        continue;
                    }
                }
            }
            Err(e) => {
                tracing::debug!(id = %fly_id, "provisioning state: {e}");
                continue;
            }
        }
        // Still provisioning (a DELETE may have come meanwhile: it
        // took `writes` too, and a deleted row stays deleted).
        let stored = notify(api, &fly_id, "resource.updated", |c| {
            crate::store::set_ready(c, &fly_id)
        });
        match stored {
            Ok(d) if d.status == "ready" => {
                tracing::info!(id = %fly_id, tenant, "provisioned in every region: ready");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(id = %fly_id, "marking ready: {e}"),
        }
    }
}

/// Sends database `fly_id`'s first catalog row (version 1) to the cluster
/// again: a provisioning the catalog does not have yet. One a change has
/// moved past version 1 is not sent (the catalog had it then).
/// Database `db`'s first catalog row (version 1), with its token opened:
/// what a provisioning, or its resending, puts.
fn first_entry(api: &Api, db: &Database) -> Result<Value, String> {
    let token = api
        .sealer
        .open(&db.token_sealed, &db.fly_id)
        .map_err(|e| e.to_string())?;
    Ok(catalog_entry(db, &[token], 1))
}

/// The cluster refused it (`Err(Some(..))`), or it could not be sent now
/// (`Err(None)`, logged).
async fn resend_first(api: &Api, fly_id: &str) -> Result<Applied, Option<String>> {
    let db = match api.store.lock().database(fly_id) {
        Ok(Some(d)) if d.catalog_version == 1 && d.status == "provisioning" => d,
        Ok(_) => return Err(None),
        Err(e) => {
            tracing::warn!(id = %fly_id, "reading a provisioning: {e}");
            return Err(None);
        }
    };
    let entry = first_entry(api, &db).map_err(Some)?;
    match api.cluster.put_tenant(db.tenant_id, &entry).await {
        Ok((applied, _)) => {
            tracing::info!(id = %fly_id, tenant = db.tenant_id, "a cut-short provisioning sent to the cluster again");
            Ok(applied)
        }
        Err(e @ crate::cluster::ClusterError::Refused { .. }) => Err(Some(e.to_string())),
        Err(e) => {
            tracing::debug!(id = %fly_id, "provisioning not sent again: {e}");
            Err(None)
        }
    }
}

/// How long a provisioning that failed (`error`: Fly was answered with a
/// server error) waits for Fly's retry before what it made is undone.
pub const FAILED_GRACE_SECS: i64 = 3600;

/// Undoes what failed provisionings made, an hour after they last failed
/// (`failed_at`) with no retry since: whatever the cluster took of them (a
/// catalog write whose answer was lost) is deleted, and the row gets a
/// fresh tenant id and token, so that a later retry of the same id
/// provisions it afresh. It stays `error` (what Fly was told); nothing is
/// sent to Fly. How many were undone.
pub async fn undo_failed(api: &Api, now: i64) -> Result<usize, String> {
    let failed: Vec<String> = {
        let store = api.store.lock();
        let mut q = store
            .conn()
            .prepare(
                "SELECT fly_id FROM databases
                 WHERE status = 'error' AND failed_at > 0 AND failed_at + ?1 <= ?2",
            )
            .map_err(|e| e.to_string())?;
        let rows = q
            .query_map(rusqlite::params![FAILED_GRACE_SECS, now], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| e.to_string())?
    };
    let mut undone = 0;
    for id in failed {
        let _writing = api.writes.lock().await;
        // Read again under the lock: a retry may have finished it.
        let db = match api.store.lock().database(&id) {
            Ok(Some(d)) if d.status == "error" => d,
            Ok(_) => continue,
            Err(e) => return Err(e.to_string()),
        };
        if let Err(e) = api
            .cluster
            .delete_tenant(db.tenant_id, db.catalog_version + 1)
            .await
        {
            tracing::warn!(id = %id, "undoing a failed provisioning: {e}");
            continue;
        }
        let token = crate::tokens::new_token().map_err(|e| e.to_string())?;
        let sealed = api.sealer.seal(&token, &id).map_err(|e| e.to_string())?;
        let done = api.store.lock().transaction(|tx| {
            let fresh: i64 = tx.query_row(
                "SELECT COALESCE(MAX(tenant_id), 0) + 1 FROM databases",
                [],
                |r| r.get(0),
            )?;
            tx.execute(
                "UPDATE databases SET tenant_id = ?2, token_sealed = ?3, next_token_sealed = '',
                     catalog_version = 1, failed_at = 0
                 WHERE fly_id = ?1 AND status = 'error'",
                rusqlite::params![id, fresh, sealed],
            )
        });
        match done {
            Ok(_) => {
                tracing::info!(id = %id, tenant = db.tenant_id, "failed provisioning undone");
                undone += 1;
            }
            Err(e) => tracing::warn!(id = %id, "recording an undone provisioning: {e}"),
        }
    }
    Ok(undone)
}

/// [`undo_failed`] every minute, for ever.
pub async fn undo_failed_forever(api: Arc<Api>) {
    loop {
        if let Err(e) = undo_failed(&api, now()).await {
            tracing::warn!("undoing failed provisionings: {e}");
        }
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    }
}

/// Runs `change` on database `id`'s row and queues webhook `action` about
/// the row it leaves, in one transaction (see
/// [`Store::change_and_notify`]), and wakes the webhook sender.
fn notify(
    api: &Api,
    id: &str,
    action: &str,
    change: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<usize>,
) -> Result<Database, crate::store::StoreError> {
    let d = api
        .store
        .lock()
        .change_and_notify(id, now(), action, change, |d| resource(d).to_string())?;
    api.hooks.wake.notify_one();
    Ok(d)
}

/// The database as `GET` shows it, and as webhooks carry it.
fn resource(d: &Database) -> Value {
    json!({
        "id": d.fly_id,
        "name": d.name,
        "status": d.status,
        "primary_region": d.primary_region,
        "read_regions": d.read_regions,
        "plan": d.plan,
    })
}

fn described(d: &Database) -> Response {
    Json(resource(d)).into_response()
}

async fn show(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = verified_query(&api, "GET", &id, query.as_deref(), &headers) {
        return *r;
    }
    let store = api.store.lock();
    match store.database(&id) {
        Ok(Some(d)) => {
            // Usage so far this month (UTC), at pay-as-you-go prices.
            let today = crate::metering::day_of(now());
            let month = format!("{}-01", today.get(..7).unwrap_or("1970-01"));
            let mut v = resource(&d);
            match crate::metering::totals(&store, d.tenant_id, &month, &today) {
                Ok(t) => {
                    let mut u = t.json();
                    u["since"] = json!(month);
                    v["usage"] = u;
                }
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
            }
            Json(v).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no extension {id}"), None),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    }
}

async fn delete(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let signed = verified_query(&api, "DELETE", &id, query.as_deref(), &headers);
    as_change(&api, signed, delete_signed(&api, &id)).await
}

async fn delete_signed(api: &Api, id: &str) -> Response {
    let db = match api.store.lock().database(id) {
        Ok(Some(d)) => d,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no extension {id}"), None),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    };
    if db.status != "deleted" {
        // The version this deletion is at is the next one (or the one
        // after the catalog's, should the catalog be ahead of the record):
        // a retry after a lost answer asks for the same and gets 409, and
        // the tenant is gone, which means done.
        let version = match api
            .cluster
            .delete_tenant(db.tenant_id, db.catalog_version + 1)
            .await
        {
            Ok((_, v)) => v,
            Err(e) => return cluster_error(&e, "delete the database"),
        };
        let stored = notify(api, id, "resource.deleted", |c| {
            crate::store::set_deleted_at(c, id, now())?;
            crate::store::set_status(c, id, "deleted", version)
        });
        if let Err(e) = stored {
            return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None);
        }
        tracing::info!(id = %id, tenant = db.tenant_id, "deleted");
    }
    Json(json!({ "id": id, "status": "deleted" })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_host_override_the_url_is_the_requests_ip() {
        let body = |ip: &str| {
            format!(
                r#"{{"id":"e1","name":"shop","organization_id":"o1","primary_region":"iad","ip_address":"{ip}"}}"#
            )
        };
        assert_eq!(
            parse_provision(body("fdaa:0:1::3").as_bytes(), true)
                .ok()
                .map(|p| p.ip_address),
            Some("fdaa:0:1::3".to_string())
        );
        for ip in ["", "not-an-ip"] {
            let r = *parse_provision(body(ip).as_bytes(), true).err().unwrap();
            assert_eq!(r.status().as_u16(), 400);
            let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["field"], "ip_address", "{v}");
        }
    }

    /// Every validation error of a provisioning body: its status and the
    /// field it names.
    #[tokio::test]
    async fn every_invalid_provisioning_names_its_field() {
        let good = json!({
            "id": "e1", "name": "shop", "organization_id": "o1", "primary_region": "iad",
            "read_regions": ["cdg"], "user_id": "u1", "user_role": "admin",
        });
        assert!(parse_provision(good.to_string().as_bytes(), false).is_ok());
        let with = |k: &str, v: Value| {
            let mut b = good.clone();
            b[k] = v;
            b
        };
        let without = |k: &str| {
            let mut b = good.clone();
            b.as_object_mut().unwrap().remove(k);
            b
        };
        let cases = [
            (without("id"), 400, "id"),
            (without("name"), 400, "name"),
            (without("organization_id"), 400, "organization_id"),
            (without("primary_region"), 400, "primary_region"),
            (with("id", json!(7)), 400, "id"),
            (with("read_regions", json!("cdg")), 400, "read_regions"),
            (with("user_role", json!("owner")), 400, "user_role"),
            (with("primary_region", json!("xyz")), 422, "primary_region"),
            (with("read_regions", json!(["xyz"])), 422, "read_regions"),
            (with("read_regions", json!(["iad"])), 422, "read_regions"),
            (
                with("read_regions", json!(["cdg", "syd", "cdg"])),
                422,
                "read_regions",
            ),
        ];
        for (body, status, field) in cases {
            let r = *parse_provision(body.to_string().as_bytes(), false)
                .err()
                .unwrap_or_else(|| panic!("{body} was taken"));
            assert_eq!(r.status().as_u16(), status, "{body}");
            let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["field"], field, "{body}: {v}");
        }
    }

    fn test_api(name: &str, host: Option<&str>) -> Api {
        Api {
            verifier: Verifier::new(b"s", "http://x", 300),
            store: Mutex::new({
                let dir =
                    std::env::temp_dir().join(format!("anykv-ops-{name}-{}", std::process::id()));
                std::fs::create_dir_all(&dir).expect("a temp dir");
                Store::open(&dir, 300).expect("a store")
            }),
            cluster: Cluster::new(vec![], String::new()),
            sealer: Sealer::from_hex(&"0".repeat(64)).unwrap(),
            redis_host: host.map(str::to_string),
            redis_port: 6379,
            hooks: Arc::new(crate::webhook::Hooks::new("http://fly", b"w")),
            writes: Default::default(),
            purge_after_secs: 1,
            retire_idle_secs: 0,
        }
    }

    /// A provisioning cut short before the cluster took it (its tenant is
    /// not in the catalog) is finished: its first row sent again; one the
    /// cluster has everywhere becomes `ready`; one still waiting stays.
    #[tokio::test]
    async fn provisionings_the_cluster_never_took_are_finished() {
        let (addr, seen) = crate::cluster::scripted::admin(vec![
            ("GET /admin/tenants/1", 404, r#"{"error":"no tenant 1"}"#),
            ("PUT /admin/tenants/1", 200, r#"{"version":1}"#),
            ("GET /admin/tenants/2", 200, r#"{"version":1}"#),
            ("GET /admin/tenants/3", 202, r#"{"version":1}"#),
            // A tombstone in its way: 409 for version 1, then no tenant.
            ("GET /admin/tenants/4", 404, r#"{"error":"no tenant 4"}"#),
            ("PUT /admin/tenants/4", 409, r#"{"error":"stale"}"#),
            ("GET /admin/tenants/4", 404, r#"{"error":"no tenant 4"}"#),
        ])
        .await;
        let mut api = test_api("cut", None);
        api.cluster = Cluster::new(vec![addr], "t".into());
        {
            let mut st = api.store.lock();
            let org = ("org_1", "Acme", "a@acme.test");
            for (id, tenant) in [("cut", 1), ("took", 2), ("waits", 3), ("refused", 4)] {
                let mut d = test_row(id, tenant, "provisioning");
                d.token_sealed = api.sealer.seal("tok", id).unwrap();
                st.insert_database(org, None, &d).unwrap();
            }
        }
        finish_provisioning_once(&api).await;
        {
            let st = api.store.lock();
            let status = |id: &str| st.database(id).unwrap().unwrap().status;
            assert_eq!(
                (status("cut"), status("took"), status("waits")),
                ("ready".into(), "ready".into(), "provisioning".into())
            );
            assert_eq!(status("refused"), "error");
        }
        // The first row again, at version 1, with the database's token.
        let sent: Value = serde_json::from_str(&seen.lock().unwrap()[1]).unwrap();
        assert_eq!(sent["version"], 1, "{sent}");
        assert_eq!(
            sent["token_sha256"][0].as_str(),
            Some(tokens::digest_hex("tok").as_str())
        );
    }

    /// A read region added where no node runs yet: the database stays
    /// usable (`ready`) where it is; that region is billed once a node
    /// there has its replica (`metering::count_read_regions`).
    #[tokio::test]
    async fn a_read_region_added_with_no_node_keeps_the_database_ready() {
        let (addr, _) = crate::cluster::scripted::admin(vec![
            (
                "GET /admin/tenants/1/entry",
                200,
                r#"{"id":1,"primary_region":"iad","read_regions":[],"version":1}"#,
            ),
            (
                "PUT /admin/tenants/1",
                202,
                r#"{"missing_regions":["syd"]}"#,
            ),
        ])
        .await;
        let (api, d) = api_with_one_database("waits", addr, &[]);
        let change = Change {
            plan: None,
            read_regions: Some(vec!["syd".into()]),
            tokens: None,
        };
        let changed = apply_change(&api, d, change).await.ok().unwrap();
        assert_eq!(changed.status, "ready");
        assert_eq!(changed.read_regions, vec!["syd".to_string()]);
        assert_eq!(changed.catalog_version, 2);
    }

    /// The cluster's operators moved the database (`anykv regions remove
    /// iad --move-primaries-to cdg`: primary region cdg, no read region,
    /// catalog version 3): a plan change keeps those regions, goes in at
    /// the version after the catalog's, and the sidecar's record takes
    /// them; a later read-region change leaves out the primary region.
    #[tokio::test]
    async fn a_change_keeps_the_regions_the_clusters_operators_moved() {
        let (addr, seen) = crate::cluster::scripted::admin(vec![
            (
                "GET /admin/tenants/1/entry",
                200,
                r#"{"id":1,"primary_region":"cdg","read_regions":[],"version":3}"#,
            ),
            ("PUT /admin/tenants/1", 409, r#"{"error":"stale"}"#),
            ("GET /admin/tenants/1", 200, r#"{"version":3}"#),
            ("PUT /admin/tenants/1", 200, r#"{"version":4}"#),
            (
                "GET /admin/tenants/1/entry",
                200,
                r#"{"id":1,"primary_region":"cdg","read_regions":[],"version":4}"#,
            ),
            ("PUT /admin/tenants/1", 200, r#"{"version":5}"#),
        ])
        .await;
        let (api, d) = api_with_one_database("moved", addr, &["cdg"]);
        let change = Change {
            plan: crate::plans::find("pro"),
            read_regions: None,
            tokens: None,
        };
        let changed = apply_change(&api, d, change).await.ok().unwrap();
        assert_eq!(changed.primary_region, "cdg");
        assert!(
            changed.read_regions.is_empty(),
            "{:?}",
            changed.read_regions
        );
        assert_eq!(changed.catalog_version, 4);
        let sent: Value = serde_json::from_str(&seen.lock().unwrap()[3]).unwrap();
        assert_eq!(sent["primary_region"], "cdg", "{sent}");
        assert_eq!(sent["read_regions"], json!([]), "{sent}");
        assert_eq!(sent["version"], 4, "{sent}");
        let stored = api.store.lock().database("ext_1").unwrap().unwrap();
        assert_eq!(stored.primary_region, "cdg");
        // Asked to read in iad and cdg: cdg is the primary region now.
        let change = Change {
            plan: None,
            read_regions: Some(vec!["iad".into(), "cdg".into()]),
            tokens: None,
        };
        let changed = apply_change(&api, stored, change).await.ok().unwrap();
        assert_eq!(changed.read_regions, vec!["iad".to_string()]);
        let sent: Value = serde_json::from_str(&seen.lock().unwrap()[5]).unwrap();
        assert_eq!(sent["read_regions"], json!(["iad"]), "{sent}");
    }

    /// The cluster's operators moved a ready database (primary region
    /// cdg, no read region, catalog version 3): the next pull's view
    /// brings it into the store, at that version, and Fly hears of it; a
    /// view no newer than the store's changes nothing.
    #[tokio::test]
    async fn a_move_by_the_clusters_operators_reaches_the_store_and_fly() {
        let (api, d) = api_with_one_database("adopt", "127.0.0.1:9".into(), &["cdg"]);
        assert_eq!((d.primary_region.as_str(), d.catalog_version), ("iad", 1));
        let view = |version: u64, primary: &str, reads: &[&str]| {
            json!({"members": [], "tenants": [
                {"id": 1, "name": "moved", "epoch": 4, "primary": "n3", "replicas": [],
                 "primary_region": primary, "read_regions": reads, "version": version},
                {"id": 99, "name": "other", "epoch": 1, "primary": "n1", "replicas": [],
                 "primary_region": "syd", "read_regions": [], "version": 7}
            ]})
            .to_string()
        };
        // Not newer: nothing.
        assert_eq!(adopt_moves(&api, &view(1, "cdg", &[])).await, 0);
        assert_eq!(adopt_moves(&api, &view(3, "cdg", &[])).await, 1);
        let stored = api.store.lock().database("ext_1").unwrap().unwrap();
        assert_eq!(stored.primary_region, "cdg");
        assert!(stored.read_regions.is_empty(), "{:?}", stored.read_regions);
        assert_eq!(stored.catalog_version, 3);
        let hooks = api.store.lock().due_webhooks(i64::MAX, 10).unwrap();
        let last = hooks.last().expect("a webhook");
        assert_eq!(last.action, "resource.updated");
        let sent: Value = serde_json::from_str(&last.resource).unwrap();
        assert_eq!(sent["primary_region"], "cdg", "{sent}");
        assert_eq!(sent["read_regions"], json!([]), "{sent}");
        // Taken once: the same view again changes nothing.
        assert_eq!(adopt_moves(&api, &view(3, "cdg", &[])).await, 0);
        // Garbage is no view.
        assert_eq!(adopt_moves(&api, "not json").await, 0);
    }

    /// An API whose cluster is the admin endpoint `addr`, holding one
    /// `ready` database `ext_1` (tenant 1, primary iad, reading in
    /// `reads`, token "tok").
    fn api_with_one_database(name: &str, addr: String, reads: &[&str]) -> (Api, Database) {
        let mut api = test_api(name, None);
        api.cluster = Cluster::new(vec![addr], "t".into());
        let mut d = test_row("ext_1", 1, "ready");
        d.read_regions = reads.iter().map(|r| r.to_string()).collect();
        d.token_sealed = api.sealer.seal("tok", "ext_1").unwrap();
        api.store
            .lock()
            .insert_database(("org_1", "Acme", "a@acme.test"), None, &d)
            .unwrap();
        (api, d)
    }

    /// A row of `org_1` for the tests.
    fn test_row(id: &str, tenant: u64, status: &str) -> Database {
        Database {
            name: id.into(),
            read_regions: vec![],
            status: status.into(),
            created_at: 1_000,
            token_sealed: String::new(),
            ip_address: String::new(),
            ..Database::sample(id, tenant)
        }
    }

    /// A request answered with a server error keeps its nonce spent: the
    /// very same signed request again is a replay (401); Fly's retry,
    /// signed anew, is taken.
    #[tokio::test]
    async fn a_nonce_is_never_accepted_twice_even_after_a_server_error() {
        // No admin endpoint answers: every provisioning is a 503.
        let api = Arc::new(test_api("spent", Some("10.0.0.1")));
        let body = |nonce: &str| {
            json!({
                "id": "ext_1", "name": "shop", "organization_id": "org_1",
                "primary_region": "iad", "url": "http://x/extensions",
                "nonce": nonce, "timestamp": now(),
            })
            .to_string()
        };
        let send = |body: String| {
            let api = api.clone();
            async move {
                let mut headers = HeaderMap::new();
                let sig = crate::sign::sign(b"s", body.as_bytes());
                headers.insert("x-signature", sig.parse().unwrap());
                provision(State(api), RawQuery(None), headers, Bytes::from(body))
                    .await
                    .status()
            }
        };
        assert_eq!(send(body("n1")).await, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(send(body("n1")).await, StatusCode::UNAUTHORIZED, "replayed");
        assert_eq!(
            send(body("n2")).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "a retry"
        );
    }

    /// A provisioning the cluster may have taken, answered with an error
    /// and not retried, is undone an hour after it failed; one retried
    /// into `ready`, or failed more recently, is left alone.
    #[tokio::test]
    async fn failed_provisionings_are_undone_after_the_grace_period() {
        let (addr, seen) = crate::cluster::scripted::admin(vec![(
            "DELETE /admin/tenants/1",
            200,
            r#"{"version":2}"#,
        )])
        .await;
        let mut api = test_api("undo", None);
        api.cluster = Cluster::new(vec![addr], "t".into());
        {
            let mut st = api.store.lock();
            let org = ("org_1", "Acme", "a@acme.test");
            st.insert_database(org, None, &test_row("old_failed", 1, "error"))
                .unwrap();
            st.insert_database(org, None, &test_row("new_failed", 2, "error"))
                .unwrap();
            st.insert_database(org, None, &test_row("old_ready", 3, "ready"))
                .unwrap();
        }
        {
            let st = api.store.lock();
            for (id, at) in [("old_failed", 1_000), ("new_failed", 5_000)] {
                crate::store::set_failed(st.conn(), id, at).unwrap();
            }
        }
        let now = 1_000 + FAILED_GRACE_SECS;
        assert_eq!(undo_failed(&api, now).await, Ok(1));
        {
            let st = api.store.lock();
            let undone = st.database("old_failed").unwrap().unwrap();
            // Still an error, as Fly was told; a fresh tenant for a retry.
            assert_eq!(
                (
                    undone.status.as_str(),
                    undone.tenant_id,
                    undone.catalog_version
                ),
                ("error", 4, 1)
            );
            assert_eq!(st.database("new_failed").unwrap().unwrap().status, "error");
            assert_eq!(st.database("old_ready").unwrap().unwrap().status, "ready");
            // The deletion went to the cluster at the version after the row's.
            assert_eq!(seen.lock().unwrap().as_slice(), [r#"{"version":2}"#]);
        }
        // Undone once: not again.
        assert_eq!(undo_failed(&api, now + 10).await, Ok(0));
    }

    /// Fly gives up on an answer at 5 s: a change waiting behind a slow
    /// one, or slow itself, answers 503 (retry) within the budget.
    #[tokio::test(start_paused = true)]
    async fn a_change_answers_within_the_budget_however_slow_the_cluster() {
        let api = test_api("budget", None);
        let signed = || {
            Ok(Signed {
                timestamp: 0,
                nonce: "n".into(),
                url: String::new(),
            })
        };
        let t0 = tokio::time::Instant::now();
        let busy = api.writes.lock().await;
        let r = as_change(&api, signed(), async { StatusCode::OK.into_response() }).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(t0.elapsed(), CHANGE_BUDGET);
        drop(busy);
        let r = as_change(&api, signed(), std::future::pending()).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(t0.elapsed(), 2 * CHANGE_BUDGET);
        // Not slow: answered as the change answers.
        let r = as_change(&api, signed(), async { StatusCode::OK.into_response() }).await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[test]
    fn names_and_urls() {
        assert_eq!(tenant_name("My Shop!", 7), "my-shop--7");
        assert_eq!(tenant_name("", 3), "db-3");
        assert_eq!(tenant_name(&"x".repeat(80), 1).len(), 42);
        let api = |host: Option<&str>| test_api("urls", host);
        assert_eq!(
            redis_url(&api(None), "tok", "fdaa:0:1::3"),
            "redis://default:tok@[fdaa:0:1::3]:6379"
        );
        assert_eq!(
            redis_url(&api(None), "tok", "172.16.0.3"),
            "redis://default:tok@172.16.0.3:6379"
        );
        assert_eq!(
            redis_url(&api(Some("anykv.flycast")), "tok", "fdaa::3"),
            "redis://default:tok@anykv.flycast:6379"
        );
    }

    #[tokio::test]
    async fn provisioning_fields_are_checked_and_named() {
        let ok = br#"{"id":"e1","name":"shop","organization_id":"o1","primary_region":"iad","read_regions":["cdg"]}"#;
        let p = parse_provision(ok, false).ok().unwrap();
        assert_eq!(p.read_regions, ["cdg"]);
        for (body, status, field) in [
            (&br#"{"name":"shop","organization_id":"o1","primary_region":"iad"}"#[..], 400, "id"),
            (br#"{"id":"e1","name":"shop","organization_id":"o1","primary_region":"xxx"}"#, 422, "primary_region"),
            (br#"{"id":"e1","name":"shop","organization_id":"o1","primary_region":"iad","read_regions":["zzz"]}"#, 422, "read_regions"),
            (br#"{"id":"e1","name":"shop","organization_id":"o1","primary_region":"iad","read_regions":"cdg"}"#, 400, "read_regions"),
            (br#"{"id":"e1","name":"shop","organization_id":"o1","primary_region":"iad","read_regions":["iad"]}"#, 422, "read_regions"),
            (br#"{"id":"e1","name":7,"organization_id":"o1","primary_region":"iad"}"#, 400, "name"),
            (br#"{"id":"e1","name":"shop","organization_id":"o1","primary_region":"iad","user_id":"u1","user_role":"owner"}"#, 400, "user_role"),
            (br#"{"id":"e1","name":"shop","organization_id":"o1","primary_region":"iad","plan":"gold"}"#, 422, "plan"),
        ] {
            let r = *parse_provision(body, false).err().unwrap();
            assert_eq!(r.status().as_u16(), status, "{}", String::from_utf8_lossy(body));
            let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["field"], field, "{v}");
        }
        // The user who asked, and the default plan.
        let with_user = br#"{"id":"e1","name":"shop","organization_id":"o1","primary_region":"iad","user_id":"u1","user_email":"u1@x.fly.io","user_role":"admin"}"#;
        let p = parse_provision(with_user, false).ok().unwrap();
        assert_eq!(
            p.user,
            Some(("u1".into(), "u1@x.fly.io".into(), "admin".into()))
        );
        assert_eq!(p.plan, crate::plans::DEFAULT);
    }

    #[tokio::test]
    async fn a_patch_changes_the_plan_the_read_regions_or_both() {
        let c = parse_change(br#"{"plan":"pro"}"#, "iad").ok().unwrap();
        assert_eq!(
            (c.plan.map(|p| p.name), c.read_regions),
            (Some("pro"), None)
        );
        let c = parse_change(br#"{"read_regions":["cdg"]}"#, "iad")
            .ok()
            .unwrap();
        assert_eq!((c.plan, c.read_regions), (None, Some(vec!["cdg".into()])));
        let c = parse_change(br#"{"plan":"free","read_regions":[]}"#, "iad")
            .ok()
            .unwrap();
        assert_eq!(
            (c.plan.map(|p| p.name), c.read_regions),
            (Some("free"), Some(vec![]))
        );
        for (body, status, field) in [
            (&br#"{}"#[..], 400, "read_regions"),
            (br#"{"plan":"gold"}"#, 422, "plan"),
            (br#"{"plan":7}"#, 422, "plan"),
            (
                br#"{"plan":"pro","read_regions":["iad"]}"#,
                422,
                "read_regions",
            ),
        ] {
            let r = *parse_change(body, "iad").err().unwrap();
            assert_eq!(
                r.status().as_u16(),
                status,
                "{}",
                String::from_utf8_lossy(body)
            );
            let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["field"], field, "{v}");
        }
    }
}
