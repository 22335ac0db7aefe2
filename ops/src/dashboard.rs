//! The dashboard Fly users sign in to ([`crate::sso`]): server-rendered
//! HTML, no front-end build.
//!
//! - `GET /dashboard`: the databases of every organization the user's
//!   Fly token names, with the user's role in each.
//! - `GET /dashboard/databases/{id}`: one database: status, plan, regions
//!   and its connection string with the token hidden.
//! - `POST /dashboard/databases/{id}/reveal` (admins): the connection
//!   string with the token.
//! - `POST /dashboard/databases/{id}/plan` (admins): a new plan, applied
//!   as a `PATCH` from Fly would be (the cluster's limits change live, Fly
//!   hears `resource.updated`).
//! - `POST /dashboard/databases/{id}/rotate` (admins): a second token,
//!   valid alongside the first (the cluster's catalog holds both digests)
//!   and shown at once; `POST .../retire` ends the rotation once the app
//!   uses the new one: the old token stops working on every node.
//! - `GET /dashboard/databases/{id}/keys` (admins): the key browser
//!   (SCAN with a pattern, each key's type, TTL and a string's first
//!   bytes), read from the database's primary with its own token.
//! - `POST /logout`.
//!
//! A database's page also shows it live: operations per second, memory
//! and keys (its primary's node's admin API, not a customer connection), and its
//! copies with their region, the round trip from the primary's node and
//! their replication lag (the cluster view, `/cluster`).
//!
//! Fly's `member` role is read-only: it sees the databases and their
//! settings, never a token, and changes nothing. Every form carries the
//! session's CSRF token and a POST whose `Origin` is another site is
//! refused too. A database of an organization the user is not in answers
//! 404, as one that does not exist.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::api::Api;
use crate::sso::{redirect, Sso};
use crate::store::{Database, Session};
use crate::unix_now as now;

/// What the dashboard's handlers share.
pub struct Dashboard {
    pub api: Arc<Api>,
    pub sso: Sso,
}

/// The sign-in entries, the OAuth callback and the dashboard's pages
/// (mount at `--base-path`, next to [`crate::api::router`]).
pub fn router(d: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/sso", get(sso_organization))
        .route("/extensions/{id}/sso", get(sso_database))
        .route("/oauth/callback", get(callback))
        .route("/dashboard", get(list))
        .route("/dashboard/databases/{id}", get(show))
        .route("/dashboard/databases/{id}/reveal", post(reveal))
        .route("/dashboard/databases/{id}/plan", post(plan))
        .route("/dashboard/databases/{id}/rotate", post(rotate))
        .route("/dashboard/databases/{id}/keys", get(keys))
        .route("/dashboard/databases/{id}/live", get(live))
        .route("/dashboard/databases/{id}/retire", post(retire))
        .route("/logout", post(logout))
        .route("/signed-out", get(signed_out))
        .with_state(d)
}

/// The sign-in entries of a sidecar without Fly's OAuth client: each
/// says what to set.
pub fn unconfigured() -> Router {
    async fn off() -> Response {
        page_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Dashboard sign-in is not configured: set ANYKV_OAUTH_CLIENT_ID and ANYKV_OAUTH_CLIENT_SECRET (the OAuth client Fly gave for anykv) and restart the sidecar.",
        )
    }
    Router::new()
        .route("/sso", get(off))
        .route("/extensions/{id}/sso", get(off))
        .route("/dashboard", get(off))
}

/// A Fly extension id as it may appear in a path of ours.
fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn begin(d: &Dashboard, target: &str) -> Response {
    d.sso.begin(target, now()).unwrap_or_else(|e| {
        tracing::warn!("starting a sign-in: {e}");
        page_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
    })
}

async fn sso_organization(State(d): State<Arc<Dashboard>>) -> Response {
    begin(&d, "/dashboard")
}

async fn sso_database(State(d): State<Arc<Dashboard>>, Path(id): Path<String>) -> Response {
    if !plain_id(&id) {
        return page_error(StatusCode::NOT_FOUND, "No such database.");
    }
    begin(&d, &format!("/dashboard/databases/{id}"))
}

async fn callback(
    State(d): State<Arc<Dashboard>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match d
        .sso
        .finish(
            &d.api.store,
            &d.api.sealer,
            &headers,
            query.as_deref().unwrap_or(""),
            now(),
        )
        .await
    {
        Ok(r) => r,
        Err(e @ crate::sso::SsoError::BadState) => {
            page_error(StatusCode::BAD_REQUEST, &e.to_string())
        }
        Err(e) => {
            tracing::warn!("a sign-in failed: {e}");
            page_error(StatusCode::BAD_GATEWAY, &format!("Signing in failed: {e}"))
        }
    }
}

/// The user's role in `org`, if they are in it.
fn role<'s>(s: &'s Session, org: &str) -> Option<&'s str> {
    s.organizations
        .iter()
        .find(|(id, _)| id == org)
        .map(|(_, r)| r.as_str())
}

/// The request's session, or the answer that starts a sign-in and comes
/// back to `target`.
fn signed_in(d: &Dashboard, headers: &HeaderMap, target: &str) -> Result<Session, Box<Response>> {
    d.sso
        .session(&d.api.store, headers, now())
        .ok_or_else(|| Box::new(begin(d, target)))
}

/// Database `id` when the session's user may see it, with their role.
fn visible(d: &Dashboard, s: &Session, id: &str) -> Result<(Database, String), Box<Response>> {
    let nothing = || Box::new(page_error(StatusCode::NOT_FOUND, "No such database."));
    if !plain_id(id) {
        return Err(nothing());
    }
    let db = d.api.store.lock().database(id).map_err(|e| {
        Box::new(page_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
        ))
    })?;
    let db = db.filter(|db| db.status != "deleted").ok_or_else(nothing)?;
    let r = role(s, &db.organization_id)
        .ok_or_else(nothing)?
        .to_string();
    Ok((db, r))
}

async fn list(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    let s = match signed_in(&d, &headers, "/dashboard") {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let orgs: Vec<String> = s.organizations.iter().map(|(o, _)| o.clone()).collect();
    let dbs = match d.api.store.lock().databases_of(&orgs) {
        Ok(v) => v,
        Err(e) => return page_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let base = d.sso.public_url();
    let mut body = String::from("<h1>Databases</h1>");
    if dbs.is_empty() {
        body.push_str("<p id=\"none\">Your organizations have no anykv databases yet: <code>flyctl ext anykv create</code> makes one.</p>");
    } else {
        body.push_str("<table id=\"databases\"><thead><tr><th>name</th><th>organization</th><th>your role</th><th>status</th><th>plan</th><th>primary region</th><th>read regions</th></tr></thead><tbody>");
        for db in &dbs {
            body.push_str(&format!(
                "<tr data-id=\"{id}\"><td><a href=\"{base}/dashboard/databases/{id}\">{name}</a></td><td>{org}</td><td>{role}</td><td>{status}</td><td>{plan}</td><td>{primary}</td><td>{reads}</td></tr>",
                id = esc(&db.fly_id),
                name = esc(&db.name),
                org = esc(&db.organization_id),
                role = esc(role(&s, &db.organization_id).unwrap_or("")),
                status = esc(&db.status),
                plan = esc(&db.plan),
                primary = esc(&db.primary_region),
                reads = esc(&db.read_regions.join(", ")),
            ));
        }
        body.push_str("</tbody></table>");
    }
    page(&d, &s, "Databases", &body)
}

/// A database's connection string, its token replaced by `token`.
fn connection(d: &Dashboard, db: &Database, token: &str) -> String {
    crate::api::redis_url(&d.api, token, &db.ip_address)
}

/// The signed-in user's session, database `id` and their role in its
/// organization, for a page about it (404 for an id that is not one of
/// theirs; a sign-in that comes back to the database's page).
fn database_for(
    d: &Dashboard,
    headers: &HeaderMap,
    id: &str,
) -> Result<(Session, Database, String), Box<Response>> {
    if !plain_id(id) {
        return Err(Box::new(page_error(
            StatusCode::NOT_FOUND,
            "No such database.",
        )));
    }
    let s = signed_in(d, headers, &format!("/dashboard/databases/{id}"))?;
    let (db, role) = visible(d, &s, id)?;
    Ok((s, db, role))
}

async fn show(
    State(d): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let (s, db, role) = match database_for(&d, &headers, &id) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let notice = match query.as_deref() {
        Some("changed=plan") => Some("Plan changed."),
        Some("changed=retired") => Some("The old token is retired: only the new one works now."),
        _ => None,
    };
    let live = live_frame(&d, &db);
    page(
        &d,
        &s,
        &db.name,
        &database_page(&d, &s, &db, &role, None, notice, &live),
    )
}

/// Where the database's primary answers: (its machine, `host:port` of its
/// RESP and of its HTTP port), and the cluster view it came from.
async fn primary_of(
    d: &Dashboard,
    db: &Database,
) -> Result<(String, String, String, serde_json::Value), String> {
    let view: serde_json::Value =
        serde_json::from_str(&crate::metering::cluster_view(&d.api, None).await?)
            .map_err(|e| e.to_string())?;
    let tenant = view["tenants"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["id"].as_u64() == Some(db.tenant_id)))
        .cloned()
        .ok_or("the cluster has no copy of it yet")?;
    let primary = tenant["primary"].as_str().unwrap_or_default().to_string();
    let member = view["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["machine"] == primary.as_str()))
        .ok_or_else(|| format!("its primary {primary} is not a member"))?;
    let redis = member["meta"]["redis_addr"]
        .as_str()
        .ok_or("its primary's node publishes no RESP address")?
        .to_string();
    let http = member["meta"]["http_addr"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((primary, redis, http, tenant))
}

/// How often the live figures refresh themselves (seconds).
const LIVE_REFRESH_SECS: u32 = 5;

/// The database page's live part: a frame of `GET .../live`, which
/// refreshes itself (no script: the pages' policy allows none), so the
/// page around it stays as it is while the figures move.
fn live_frame(d: &Dashboard, db: &Database) -> String {
    format!(
        "<h2>Live</h2><iframe id=\"live-frame\" src=\"{}/dashboard/databases/{}/live\" title=\"Live figures, refreshed every {LIVE_REFRESH_SECS} s\" style=\"border:0;width:100%;height:32rem\"></iframe>",
        d.sso.public_url(),
        esc(&db.fly_id)
    )
}

/// `GET /dashboard/databases/{id}/live`: the live figures alone, for the
/// database page's frame (refreshing every few seconds); members see them
/// too.
async fn live(
    State(d): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (_, db, _) = match database_for(&d, &headers, &id) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let body = live_section(&d, &db).await;
    html_doc(
        StatusCode::OK,
        &db.name,
        &format!("<meta http-equiv=\"refresh\" content=\"{LIVE_REFRESH_SECS}\">"),
        &body,
        true,
    )
}

/// The database live: its primary's figures, its copies with their round
/// trip from the primary's node and their lag, the round trips between
/// its regions. What cannot be read says why.
async fn live_section(d: &Dashboard, db: &Database) -> String {
    let mut b = String::new();
    let (primary, _, http, tenant) = match primary_of(d, db).await {
        Ok(x) => x,
        Err(e) => {
            b.push_str(&format!(
                "<p id=\"live-error\">Not available: {}</p>",
                esc(&e)
            ));
            return b;
        }
    };
    // The primary's node's admin API (not a customer connection: reading
    // the figures is not the database's usage).
    let figures = d
        .api
        .cluster
        .get_at(&http, &format!("/admin/tenants/{}/live", db.tenant_id))
        .await
        .map_err(|e| e.to_string())
        .and_then(|(status, body)| match status {
            200 => serde_json::from_str::<serde_json::Value>(&body).map_err(|e| e.to_string()),
            s => Err(format!("HTTP {s}: {body}")),
        });
    match figures {
        Ok(v) => {
            b.push_str(&format!(
                "<table id=\"live\"><tr><th>operations per second</th><td id=\"live-ops\">{}</td></tr><tr><th>memory</th><td id=\"live-memory\">{}</td></tr><tr><th>keys</th><td id=\"live-keys\">{}</td></tr></table>",
                v["ops_per_sec"].as_u64().unwrap_or(0),
                esc(&human_bytes(v["used_memory"].as_u64().unwrap_or(0))),
                v["keys"].as_u64().unwrap_or(0),
            ));
        }
        Err(e) => b.push_str(&format!(
            "<p id=\"live-error\">Not available: {}</p>",
            esc(&e)
        )),
    }
    // Round trips as the primary's node measures them.
    let rtts: serde_json::Value = match crate::metering::cluster_view(&d.api, Some(&http)).await {
        Ok(v) => serde_json::from_str(&v).unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    };
    let rtt_to = |machine: &str| -> String {
        rtts["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["machine"] == machine))
            .and_then(|m| m["rtt_ms"].as_f64())
            .map_or("".into(), |ms| format!("{ms:.1}"))
    };
    b.push_str(&format!(
        "<table id=\"copies\"><thead><tr><th>node</th><th>region</th><th>role</th><th>round trip from the primary (ms)</th><th>replication lag (ms)</th></tr></thead><tbody><tr data-node=\"{p}\"><td>{p}</td><td>{region}</td><td>primary</td><td></td><td></td></tr>",
        p = esc(&primary),
        region = esc(&db.primary_region),
    ));
    let standby = tenant["standby"].as_str().unwrap_or_default();
    for r in tenant["replicas"].as_array().into_iter().flatten() {
        let node = r["node"].as_str().unwrap_or_default();
        let role = if node == standby {
            "standby"
        } else {
            "replica"
        };
        b.push_str(&format!(
            "<tr data-node=\"{n}\"><td>{n}</td><td>{region}</td><td>{role}</td><td>{rtt}</td><td>{lag}</td></tr>",
            n = esc(node),
            region = esc(r["region"].as_str().unwrap_or_default()),
            rtt = esc(&rtt_to(node)),
            lag = r["lag_ms"].as_i64().map_or(String::new(), |l| l.to_string()),
        ));
    }
    b.push_str("</tbody></table>");
    // Round trips between the database's regions: each row as a node of
    // that region holding a copy measures them (its own cluster view).
    let mut holders: Vec<(String, String)> = vec![(db.primary_region.clone(), primary.clone())];
    for r in tenant["replicas"].as_array().into_iter().flatten() {
        let (region, node) = (
            r["region"].as_str().unwrap_or_default(),
            r["node"].as_str().unwrap_or_default(),
        );
        if !holders.iter().any(|(g, _)| g == region) {
            holders.push((region.to_string(), node.to_string()));
        }
    }
    let mut views = Vec::new();
    for (_, node) in &holders {
        let addr = rtts["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["machine"] == node.as_str()))
            .and_then(|m| m["meta"]["http_addr"].as_str())
            .map(str::to_string);
        let view = match addr {
            _ if *node == primary => rtts.clone(),
            Some(a) => match crate::metering::cluster_view(&d.api, Some(&a)).await {
                Ok(v) => serde_json::from_str(&v).unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            },
            None => serde_json::Value::Null,
        };
        views.push(view);
    }
    b.push_str(&region_matrix(&holders, &views));
    b
}

/// The round trip from each of `holders` (region, node) to each of their
/// regions, as that node's cluster view (`views`, in the same order)
/// measures it: the nearest member of the region (its smoothed RTT), the
/// same region's other nodes on the diagonal. An unmeasured pair is empty.
fn region_matrix(holders: &[(String, String)], views: &[serde_json::Value]) -> String {
    let mut t = String::from(
        "<h3>Round trips between its regions (ms)</h3><table id=\"region-rtt\"><thead><tr><th>from \\ to</th>",
    );
    for (region, _) in holders {
        t.push_str(&format!("<th>{}</th>", esc(region)));
    }
    t.push_str("</tr></thead><tbody>");
    for ((from, node), view) in holders.iter().zip(views) {
        t.push_str(&format!(
            "<tr data-region=\"{r}\"><th>{r}</th>",
            r = esc(from)
        ));
        for (to, _) in holders {
            let best = view["members"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| {
                    m["region"].as_str() == Some(to.as_str())
                        && m["machine"].as_str() != Some(node.as_str())
                        && m["state"].as_str() != Some("down")
                })
                .filter_map(|m| m["rtt_ms"].as_f64())
                .min_by(f64::total_cmp);
            t.push_str(&format!(
                "<td data-to=\"{}\">{}</td>",
                esc(to),
                best.map_or(String::new(), |ms| format!("{ms:.1}"))
            ));
        }
        t.push_str("</tr>");
    }
    t.push_str("</tbody></table>");
    t
}

/// `n` bytes for people (B, KiB, MiB, GiB).
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// `GET /dashboard/databases/{id}/keys?match=..&cursor=..` (admins): a
/// page of keys (SCAN on the primary) with type, TTL and a string's
/// first 100 bytes.
async fn keys(
    State(d): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if !plain_id(&id) {
        return page_error(StatusCode::NOT_FOUND, "No such database.");
    }
    let q: Vec<(String, String)> =
        form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let pattern = field(&q, "match")
        .filter(|m| !m.is_empty())
        .unwrap_or("*")
        .to_string();
    let cursor = field(&q, "cursor")
        .and_then(|c| c.parse::<u64>().ok())
        .unwrap_or(0);
    if d.sso.session(&d.api.store, &headers, now()).is_none() {
        return begin(&d, &format!("/dashboard/databases/{id}"));
    }
    // Data is shown: Fly is asked again what the user may do.
    let s = match d
        .sso
        .recheck(&d.api.store, &d.api.sealer, &headers, now())
        .await
    {
        Ok(s) => s,
        Err(e) => return page_error(StatusCode::FORBIDDEN, &e.to_string()),
    };
    let (db, role) = match visible(&d, &s, &id) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if role != "admin" {
        return page_error(
            StatusCode::FORBIDDEN,
            "Only an admin of the organization can browse keys.",
        );
    }
    let base = d.sso.public_url();
    let mut b = format!(
        "<p><a href=\"{base}/dashboard/databases/{id}\">{name}</a></p><h1>Keys</h1><form method=\"get\" action=\"{base}/dashboard/databases/{id}/keys\"><input id=\"key-match\" name=\"match\" value=\"{m}\"> <button id=\"key-search\" type=\"submit\">Search</button></form>",
        id = esc(&db.fly_id),
        name = esc(&db.name),
        m = esc(&pattern),
    );
    let listed = async {
        let (_, redis, _, _) = primary_of(&d, &db)
            .await
            .map_err(|e| crate::redis::RedisError::Refused("the cluster".into(), e))?;
        let token = crate::api::open_tokens(&d.api, &db)
            .ok()
            .and_then(|t| t.into_iter().next())
            .unwrap_or_default();
        let mut c = crate::redis::Conn::login(&redis, &token).await?;
        let cur = cursor.to_string();
        let r = c
            .cmd(&["SCAN", &cur, "MATCH", &pattern, "COUNT", "100"])
            .await?;
        let (next, names): (String, Vec<Vec<u8>>) = match r {
            crate::redis::Reply::Array(mut parts) if parts.len() == 2 => {
                let names = match parts.pop() {
                    Some(crate::redis::Reply::Array(ks)) => {
                        ks.iter().map(crate::redis::bytes).collect()
                    }
                    _ => Vec::new(),
                };
                (crate::redis::text(&parts[0]), names)
            }
            _ => (String::from("0"), Vec::new()),
        };
        // Each key's type, TTL and (strings) first bytes, asked in one
        // round trip (key names as bytes: a binary name is asked as is).
        let mut asks: Vec<Vec<&[u8]>> = Vec::new();
        for k in &names {
            asks.push(vec![b"TYPE", k]);
            asks.push(vec![b"PTTL", k]);
            asks.push(vec![b"GETRANGE", k, b"0", b"99"]);
        }
        let answers = c.pipeline(&asks).await?;
        let mut rows = Vec::new();
        for (k, a) in names.iter().zip(answers.chunks(3)) {
            let t = crate::redis::text(&a[0]);
            let ttl = crate::redis::text(&a[1]);
            // GETRANGE of another type is an error reply: no value shown.
            let value = if t == "string" {
                crate::redis::text(&a[2])
            } else {
                String::new()
            };
            rows.push((String::from_utf8_lossy(k).into_owned(), t, ttl, value));
        }
        Ok::<_, crate::redis::RedisError>((next, rows))
    };
    match listed.await {
        Ok((next, mut rows)) => {
            rows.sort();
            b.push_str("<table id=\"keys\"><thead><tr><th>key</th><th>type</th><th>TTL (ms)</th><th>value (strings: first 100 bytes)</th></tr></thead><tbody>");
            for (k, t, ttl, v) in &rows {
                let ttl = if ttl == "-1" {
                    "none".to_string()
                } else {
                    ttl.clone()
                };
                b.push_str(&format!(
                    "<tr data-key=\"{k}\"><td>{k}</td><td>{t}</td><td>{ttl}</td><td>{v}</td></tr>",
                    k = esc(k),
                    t = esc(t),
                    ttl = esc(&ttl),
                    v = esc(v),
                ));
            }
            b.push_str("</tbody></table>");
            if next != "0" {
                let q: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("match", &pattern)
                    .append_pair("cursor", &next)
                    .finish();
                b.push_str(&format!(
                    "<p><a id=\"next-keys\" href=\"{base}/dashboard/databases/{id}/keys?{q}\">More keys</a></p>",
                    id = esc(&db.fly_id),
                    q = esc(&q),
                ));
            }
        }
        Err(e) => b.push_str(&format!(
            "<p id=\"keys-error\">Not available: {}</p>",
            esc(&e.to_string())
        )),
    }
    tracing::info!(user = %s.user_id, id = %db.fly_id, "keys browsed on the dashboard");
    page(&d, &s, &format!("{} keys", db.name), &b)
}

/// The database's page; its tokens (the current one, a rotation's new
/// one) shown when revealed.
fn database_page(
    d: &Dashboard,
    s: &Session,
    db: &Database,
    role: &str,
    revealed: Option<&[String]>,
    notice: Option<&str>,
    live: &str,
) -> String {
    let base = d.sso.public_url();
    let id = esc(&db.fly_id);
    let mut b = format!(
        "<p><a href=\"{base}/dashboard\">All databases</a></p><h1>{name}</h1>",
        name = esc(&db.name)
    );
    if let Some(n) = notice {
        b.push_str(&format!("<p id=\"notice\">{}</p>", esc(n)));
    }
    let plan = crate::plans::find(&db.plan);
    b.push_str(&format!(
        "<table id=\"facts\"><tr><th>id</th><td>{id}</td></tr><tr><th>organization</th><td>{org}</td></tr><tr><th>your role</th><td id=\"role\">{role}</td></tr><tr><th>status</th><td id=\"status\">{status}</td></tr><tr><th>plan</th><td id=\"plan\">{plan}</td></tr><tr><th>limits</th><td>{limits}</td></tr><tr><th>primary region</th><td>{primary}</td></tr><tr><th>read regions</th><td>{reads}</td></tr></table>",
        org = esc(&db.organization_id),
        role = esc(role),
        status = esc(&db.status),
        plan = esc(&db.plan),
        limits = esc(plan.map_or("", |p| p.summary)),
        primary = esc(&db.primary_region),
        reads = esc(&if db.read_regions.is_empty() {
            "none".to_string()
        } else {
            db.read_regions.join(", ")
        }),
    ));
    let hidden = "********".to_string();
    let shown = |i: usize| connection(d, db, revealed.and_then(|t| t.get(i)).unwrap_or(&hidden));
    b.push_str(&format!(
        "<h2>Connect</h2><p><code id=\"redis-url\">{}</code></p>",
        esc(&shown(0))
    ));
    let rotating = !db.next_token_sealed.is_empty();
    if rotating {
        let idle = d.api.retire_idle_secs;
        let by_itself = if idle > 0 {
            format!(" It is retired by itself once your app uses the new token and no connection has used the old one for {}.", duration(idle))
        } else {
            String::new()
        };
        b.push_str(&format!(
            "<p id=\"rotating\">A new token is valid alongside this one: <code id=\"next-redis-url\">{}</code>. Set your app's secret to it (<code>fly secrets set REDIS_URL=...</code>), then retire the old token.{by_itself}</p>",
            esc(&shown(1))
        ));
    }
    b.push_str(live);
    b.push_str(&usage_section(d, db));
    let csrf = esc(&s.csrf);
    if role != "admin" {
        b.push_str("<p id=\"read-only\">Your role in this organization is <b>member</b>: you can see this database but not its token, and you cannot change it. An admin of the organization can.</p>");
        return b;
    }
    b.push_str(&format!(
        "<p><a id=\"browse-keys\" href=\"{base}/dashboard/databases/{id}/keys\">Browse keys</a></p>"
    ));
    if revealed.is_none() {
        b.push_str(&format!(
            "<form method=\"post\" action=\"{base}/dashboard/databases/{id}/reveal\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button id=\"reveal\" type=\"submit\">Reveal the token</button></form>"
        ));
    }
    let (action, button, label) = if rotating {
        ("retire", "retire", "Retire the old token")
    } else {
        ("rotate", "rotate", "Issue a new token")
    };
    b.push_str(&format!(
        "<h2>Token</h2><form method=\"post\" action=\"{base}/dashboard/databases/{id}/{action}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button id=\"{button}\" type=\"submit\">{label}</button></form>"
    ));
    let mut options = String::new();
    for p in crate::plans::PLANS {
        options.push_str(&format!(
            "<option value=\"{n}\"{sel}>{n}: {summary}</option>",
            n = esc(p.name),
            sel = if p.name == db.plan { " selected" } else { "" },
            summary = esc(p.summary),
        ));
    }
    b.push_str(&format!(
        "<h2>Plan</h2><form method=\"post\" action=\"{base}/dashboard/databases/{id}/plan\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><select id=\"plan-choice\" name=\"plan\">{options}</select> <button id=\"change-plan\" type=\"submit\">Change plan</button></form>"
    ));
    b
}

/// `secs` as people say it: "90 seconds", "10 minutes", "2 hours".
fn duration(secs: u64) -> String {
    let (n, unit) = if secs.is_multiple_of(3600) {
        (secs / 3600, "hour")
    } else if secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Usage this month: its totals, and two inline SVG charts with a bar
/// per day of the month so far (UTC): commands, and cost.
fn usage_section(d: &Dashboard, db: &Database) -> String {
    let now = now();
    let today = crate::metering::day_of(now);
    let month = format!("{}-01", today.get(..7).unwrap_or("1970-01"));
    let since = month.clone();
    let (days, month_total) = {
        let store = d.api.store.lock();
        (
            crate::metering::days(&store, db.tenant_id, &since),
            crate::metering::totals(&store, db.tenant_id, &month, &today),
        )
    };
    let (Ok(days), Ok(month_total)) = (days, month_total) else {
        return "<h2>Usage</h2><p>Usage is not available right now.</p>".into();
    };
    let cents = month_total.cents();
    let t = month_total.totals;
    let mut b = format!(
        "<h2>Usage this month</h2><table id=\"usage\"><tr><th>commands</th><td id=\"usage-commands\">{}</td></tr><tr><th>reads / writes / other</th><td>{} / {} / {}</td></tr><tr><th>bandwidth in / out</th><td>{} / {} bytes</td></tr><tr><th>storage</th><td>{:.4} GiB-hours</td></tr><tr><th>read regions</th><td>{:.1} region-hours</td></tr><tr><th>cost so far</th><td id=\"usage-cost\">${}.{:02}</td></tr></table>",
        t.commands(),
        t.reads,
        t.writes,
        t.other,
        t.bytes_in,
        t.bytes_out,
        t.storage_byte_seconds as f64 / (1u64 << 30) as f64 / 3600.0,
        t.read_region_seconds as f64 / 3600.0,
        cents / 100,
        cents % 100,
    );
    // A bar per day of this month so far, for commands and for cost.
    let first = month_day_start(&month, now);
    let mut commands = Vec::new();
    let mut costs = Vec::new();
    let mut t = first;
    while t <= now {
        let day = crate::metering::day_of(t);
        let b = days
            .iter()
            .find(|(d, _)| *d == day)
            .map(|(_, b)| *b)
            .unwrap_or_default();
        let (c, micro) = (b.totals.commands(), b.micro);
        commands.push(Bar {
            title: format!("{day}: {c} commands, {}¢", b.cents()),
            data: format!("data-commands=\"{c}\""),
            value: u128::from(c),
            day: day.clone(),
        });
        costs.push(Bar {
            title: format!("{day}: {:.4}¢", micro as f64 / 1e6),
            data: format!("data-micro-cents=\"{micro}\""),
            value: micro,
            day,
        });
        t += 86_400;
    }
    let max_commands = commands.iter().map(|b| b.value).max().unwrap_or(0);
    let max_cost = costs.iter().map(|b| b.value).max().unwrap_or(0);
    b.push_str("<p>Commands per day this month (UTC):</p>");
    b.push_str(&bar_chart(
        "usage-chart",
        "commands per day this month",
        &commands,
        &format!("{max_commands} commands"),
        "#5b7fd6",
    ));
    b.push_str("<p>Cost per day this month (UTC):</p>");
    b.push_str(&bar_chart(
        "cost-chart",
        "cost per day this month",
        &costs,
        &format!("{:.4}¢", max_cost as f64 / 1e6),
        "#d68a5b",
    ));
    b
}

/// One bar of a chart: its day, value, tooltip and data attribute.
struct Bar {
    day: String,
    value: u128,
    title: String,
    data: String,
}

/// Unix time of 00:00 UTC on `month` (`YYYY-MM-01`), found from `now` in
/// that month.
fn month_day_start(month: &str, now: i64) -> i64 {
    let mut t = now - now.rem_euclid(86_400);
    while crate::metering::day_of(t) != month && t > now - 31 * 86_400 {
        t -= 86_400;
    }
    t
}

/// An SVG bar chart, a bar per day (scaled to the largest), with the
/// first and last days and the largest value as labels.
fn bar_chart(id: &str, label: &str, bars: &[Bar], top: &str, fill: &str) -> String {
    let (w, h) = (620u128, 120u128);
    let bar = w / 31;
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1);
    let mut svg = format!(
        "<svg id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" role=\"img\" aria-label=\"{}\"><line x1=\"0\" y1=\"{h}\" x2=\"{w}\" y2=\"{h}\" stroke=\"#999\"/>",
        h + 20,
        esc(label)
    );
    for (i, b) in bars.iter().enumerate() {
        let bh = b.value * h / max;
        let x = i as u128 * bar;
        svg.push_str(&format!(
            "<rect class=\"day\" data-day=\"{day}\" {data} x=\"{}\" y=\"{}\" width=\"{}\" height=\"{bh}\" fill=\"{fill}\"><title>{}</title></rect>",
            x + 2,
            h - bh,
            bar - 4,
            esc(&b.title),
            day = esc(&b.day),
            data = b.data,
        ));
    }
    let (first, last) = (
        bars.first().map_or("", |b| b.day.as_str()),
        bars.last().map_or("", |b| b.day.as_str()),
    );
    svg.push_str(&format!(
        "<text x=\"0\" y=\"{}\" font-size=\"11\">{}</text><text x=\"{w}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text><text x=\"0\" y=\"11\" font-size=\"11\">{}</text></svg>",
        h + 16,
        esc(first),
        h + 16,
        esc(last),
        esc(top),
    ));
    svg
}

/// A form's fields.
fn form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn field<'f>(f: &'f [(String, String)], name: &str) -> Option<&'f str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A POST of the dashboard's, checked: signed in, the database visible,
/// the user an admin of its organization, the form's CSRF token the
/// session's, and no other site's `Origin`.
async fn admin_post(
    d: &Dashboard,
    headers: &HeaderMap,
    id: &str,
    f: &[(String, String)],
) -> Result<(Session, Database), Box<Response>> {
    let forbidden = |m: &str| Box::new(page_error(StatusCode::FORBIDDEN, m));
    let s = d
        .sso
        .session(&d.api.store, headers, now())
        .ok_or_else(|| forbidden("You are not signed in (or your session expired): open the dashboard from flyctl again."))?;
    if !same_origin(d, headers)
        || !field(f, "csrf").is_some_and(|c| crate::sign::equal(c.as_bytes(), s.csrf.as_bytes()))
    {
        tracing::warn!(user = %s.user_id, "dashboard form refused: CSRF check failed");
        return Err(forbidden("This form did not come from this dashboard (CSRF check failed): reload the page and try again."));
    }
    // Fly says again what the user may do: an admin removed from the
    // organization since signing in does nothing with the old session.
    let s = match d
        .sso
        .recheck(&d.api.store, &d.api.sealer, headers, now())
        .await
    {
        Ok(s) => s,
        Err(e @ crate::sso::SsoError::Revoked) => return Err(forbidden(&e.to_string())),
        Err(e) => {
            return Err(Box::new(page_error(
                StatusCode::BAD_GATEWAY,
                &format!("Your rights could not be confirmed with Fly, so nothing changed: {e}"),
            )))
        }
    };
    let (db, role) = visible(d, &s, id)?;
    if role != "admin" {
        return Err(forbidden("Only an admin of the organization can do this."));
    }
    Ok((s, db))
}

/// [`admin_post`] of a form's raw `body`: the session, the database and
/// the form's fields.
async fn admin_form(
    d: &Dashboard,
    headers: &HeaderMap,
    id: &str,
    body: &[u8],
) -> Result<(Session, Database, Vec<(String, String)>), Box<Response>> {
    let f = form(body);
    let (s, db) = admin_post(d, headers, id, &f).await?;
    Ok((s, db, f))
}

/// No `Origin`, or ours.
fn same_origin(d: &Dashboard, headers: &HeaderMap) -> bool {
    headers
        .get(header::ORIGIN)
        .is_none_or(|o| o.as_bytes() == d.sso.origin().as_bytes())
}

async fn reveal(
    State(d): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (s, db, _) = match admin_form(&d, &headers, &id, &body).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let tokens = match crate::api::open_tokens(&d.api, &db) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    tracing::info!(user = %s.user_id, id = %db.fly_id, "token revealed on the dashboard");
    let live = live_frame(&d, &db);
    let body = database_page(&d, &s, &db, "admin", Some(&tokens), None, &live);
    page(&d, &s, &db.name, &body)
}

/// Applies `change` (under the change lock, the database read again),
/// or the error page saying why it did not happen.
async fn changed_by(
    d: &Dashboard,
    s: &Session,
    id: &str,
    what: &str,
    make: impl FnOnce(&Database) -> Result<Option<crate::api::Change>, String>,
) -> Result<Database, Box<Response>> {
    let _writing = d.api.writes.lock().await;
    // Read again under the lock: a change from Fly may have come first.
    let (db, _) = visible(d, s, id)?;
    let change =
        make(&db).map_err(|e| Box::new(page_error(StatusCode::INTERNAL_SERVER_ERROR, &e)))?;
    let Some(change) = change else {
        return Ok(db);
    };
    match crate::api::apply_change(&d.api, db, change).await {
        Ok(db) => {
            tracing::info!(user = %s.user_id, id = %id, "{what} on the dashboard");
            Ok(db)
        }
        Err(r) => {
            let status = r.status();
            let detail = String::from_utf8_lossy(
                &axum::body::to_bytes((*r).into_body(), 4096)
                    .await
                    .unwrap_or_default(),
            )
            .into_owned();
            Err(Box::new(page_error(
                status,
                &format!("Nothing changed ({what}): {detail}"),
            )))
        }
    }
}

async fn rotate(
    State(d): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (s, _, _) = match admin_form(&d, &headers, &id, &body).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let db = changed_by(&d, &s, &id, "new token issued", |db| {
        if !db.next_token_sealed.is_empty() {
            // A rotation is under way already: its new token stands.
            return Ok(None);
        }
        let token = crate::tokens::new_token().map_err(|e| e.to_string())?;
        let next = d
            .api
            .sealer
            .seal(&token, &db.fly_id)
            .map_err(|e| e.to_string())?;
        Ok(Some(crate::api::Change {
            plan: None,
            read_regions: None,
            tokens: Some((db.token_sealed.clone(), next)),
        }))
    })
    .await;
    let db = match db {
        Ok(db) => db,
        Err(r) => return *r,
    };
    // The new token is shown at once: the admin is about to copy it.
    let tokens = match crate::api::open_tokens(&d.api, &db) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let body = database_page(
        &d,
        &s,
        &db,
        "admin",
        Some(&tokens),
        Some("A new token was issued; the old one works until you retire it."),
        &live_frame(&d, &db),
    );
    page(&d, &s, &db.name, &body)
}

async fn retire(
    State(d): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (s, _, _) = match admin_form(&d, &headers, &id, &body).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let done = changed_by(&d, &s, &id, "old token retired", |db| {
        Ok(
            (!db.next_token_sealed.is_empty()).then(|| crate::api::Change {
                plan: None,
                read_regions: None,
                tokens: Some((db.next_token_sealed.clone(), String::new())),
            }),
        )
    })
    .await;
    match done {
        Ok(_) => redirect(&format!(
            "{}/dashboard/databases/{id}?changed=retired",
            d.sso.public_url()
        )),
        Err(r) => *r,
    }
}

async fn plan(
    State(d): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (s, _, f) = match admin_form(&d, &headers, &id, &body).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some(p) = field(&f, "plan").and_then(crate::plans::find) else {
        return page_error(
            StatusCode::BAD_REQUEST,
            &format!("Choose one of the plans: {}.", crate::plans::names()),
        );
    };
    let done = changed_by(&d, &s, &id, "plan changed", |db| {
        Ok((db.plan != p.name).then_some(crate::api::Change {
            plan: Some(p),
            read_regions: None,
            tokens: None,
        }))
    })
    .await;
    if let Err(r) = done {
        return *r;
    }
    redirect(&format!(
        "{}/dashboard/databases/{id}?changed=plan",
        d.sso.public_url()
    ))
}

async fn logout(State(d): State<Arc<Dashboard>>, headers: HeaderMap, body: Bytes) -> Response {
    let f = form(&body);
    if let Some(s) = d.sso.session(&d.api.store, &headers, now()) {
        let good = same_origin(&d, &headers)
            && field(&f, "csrf")
                .is_some_and(|c| crate::sign::equal(c.as_bytes(), s.csrf.as_bytes()));
        if !good {
            return page_error(
                StatusCode::FORBIDDEN,
                "CSRF check failed: reload the page and try again.",
            );
        }
    }
    d.sso.end(&d.api.store, &headers)
}

async fn signed_out() -> Response {
    html(
        StatusCode::OK,
        "Signed out",
        "<h1>Signed out</h1><p>Open the dashboard from <code>flyctl ext anykv dashboard</code> to sign in again.</p>",
    )
}

/// HTML-escapes `s` for text and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:.3rem .8rem;text-align:left}code{background:#f4f4f4;padding:.1rem .3rem}header{display:flex;justify-content:space-between;align-items:center;border-bottom:1px solid #ddd}";

/// A dashboard page for a signed-in user.
fn page(d: &Dashboard, s: &Session, title: &str, body: &str) -> Response {
    let base = d.sso.public_url();
    let head = format!(
        "<header><b>anykv</b><span><span id=\"who\">{who}</span> <form style=\"display:inline\" method=\"post\" action=\"{base}/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button id=\"logout\" type=\"submit\">Sign out</button></form></span></header>",
        who = esc(&s.email),
        csrf = esc(&s.csrf),
    );
    html(StatusCode::OK, title, &format!("{head}{body}"))
}

fn page_error(status: StatusCode, msg: &str) -> Response {
    html(
        status,
        "anykv",
        &format!(
            "<h1>{}</h1><p id=\"error\">{}</p>",
            status.as_u16(),
            esc(msg)
        ),
    )
}

/// An HTML answer no one caches or frames.
fn html(status: StatusCode, title: &str, body: &str) -> Response {
    html_doc(status, title, "", body, false)
}

/// An HTML answer no one caches, with `head` added to its head; framed
/// only by the dashboard's own pages when `framed` (the live figures).
fn html_doc(status: StatusCode, title: &str, head: &str, body: &str, framed: bool) -> Response {
    let doc = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{head}<title>{} · anykv</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    );
    let mut r = (status, doc).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let (frame_options, ancestors) = if framed {
        ("SAMEORIGIN", "'self'")
    } else {
        ("DENY", "'none'")
    };
    h.insert("x-frame-options", HeaderValue::from_static(frame_options));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'unsafe-inline'; frame-src 'self'; form-action 'self'; frame-ancestors {ancestors}"
    )) {
        h.insert("content-security-policy", v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_ids_are_plain() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert!(plain_id("ext_1-a"));
        assert!(!plain_id("../x"));
        assert!(!plain_id(""));
        assert!(!plain_id(&"a".repeat(129)));
    }

    #[test]
    fn region_round_trips_come_from_each_regions_own_node() {
        let holders = vec![
            ("iad".to_string(), "n1".to_string()),
            ("cdg".to_string(), "n3".to_string()),
        ];
        let views = vec![
            serde_json::json!({"members": [
                {"machine": "n1", "region": "iad", "rtt_ms": null},
                {"machine": "n2", "region": "iad", "rtt_ms": 0.6},
                {"machine": "n3", "region": "cdg", "rtt_ms": 81.5},
                {"machine": "n4", "region": "cdg", "rtt_ms": 79.25, "state": "down"},
            ]}),
            serde_json::json!({"members": [
                {"machine": "n1", "region": "iad", "rtt_ms": 82.0},
                {"machine": "n2", "region": "iad", "rtt_ms": 80.4},
            ]}),
        ];
        let html = region_matrix(&holders, &views);
        assert!(html.contains("<tr data-region=\"iad\"><th>iad</th><td data-to=\"iad\">0.6</td><td data-to=\"cdg\">81.5</td></tr>"), "{html}");
        // cdg's own view: the nearest iad node; no other cdg node.
        assert!(html.contains("<tr data-region=\"cdg\"><th>cdg</th><td data-to=\"iad\">80.4</td><td data-to=\"cdg\"></td></tr>"), "{html}");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(600), "10 minutes");
        assert_eq!(duration(3600), "1 hour");
        assert_eq!(duration(60), "1 minute");
        assert_eq!(duration(90), "90 seconds");
        assert_eq!(duration(1), "1 second");
    }
}
