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
//! - `POST /logout`.
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

async fn show(
    State(d): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let s = match signed_in(&d, &headers, &format!("/dashboard/databases/{id}")) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (db, role) = match visible(&d, &s, &id) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let changed = query.as_deref() == Some("changed=plan");
    page(
        &d,
        &s,
        &db.name,
        &database_page(&d, &s, &db, &role, None, changed),
    )
}

/// The database's page; `token` shown when revealed.
fn database_page(
    d: &Dashboard,
    s: &Session,
    db: &Database,
    role: &str,
    token: Option<&str>,
    changed: bool,
) -> String {
    let base = d.sso.public_url();
    let id = esc(&db.fly_id);
    let mut b = format!(
        "<p><a href=\"{base}/dashboard\">All databases</a></p><h1>{name}</h1>",
        name = esc(&db.name)
    );
    if changed {
        b.push_str("<p id=\"notice\">Plan changed.</p>");
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
    let shown = connection(d, db, token.unwrap_or("********"));
    b.push_str(&format!(
        "<h2>Connect</h2><p><code id=\"redis-url\">{}</code></p>",
        esc(&shown)
    ));
    let csrf = esc(&s.csrf);
    if role != "admin" {
        b.push_str("<p id=\"read-only\">Your role in this organization is <b>member</b>: you can see this database but not its token, and you cannot change it. An admin of the organization can.</p>");
        return b;
    }
    if token.is_none() {
        b.push_str(&format!(
            "<form method=\"post\" action=\"{base}/dashboard/databases/{id}/reveal\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button id=\"reveal\" type=\"submit\">Reveal the token</button></form>"
        ));
    }
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
fn admin_post(
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
    let (db, role) = visible(d, &s, id)?;
    if role != "admin" {
        return Err(forbidden("Only an admin of the organization can do this."));
    }
    Ok((s, db))
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
    let f = form(&body);
    let (s, db) = match admin_post(&d, &headers, &id, &f) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let token = match d.api.sealer.open(&db.token_sealed, &db.fly_id) {
        Ok(t) => t,
        Err(e) => return page_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    tracing::info!(user = %s.user_id, id = %db.fly_id, "token revealed on the dashboard");
    let body = database_page(&d, &s, &db, "admin", Some(&token), false);
    page(&d, &s, &db.name, &body)
}

async fn plan(
    State(d): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let (s, _) = match admin_post(&d, &headers, &id, &f) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some(p) = field(&f, "plan").and_then(crate::plans::find) else {
        return page_error(
            StatusCode::BAD_REQUEST,
            &format!("Choose one of the plans: {}.", crate::plans::names()),
        );
    };
    let _writing = d.api.writes.lock().await;
    // Read again under the lock: a change from Fly may have come first.
    let (db, _) = match visible(&d, &s, &id) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if db.plan != p.name {
        let change = crate::api::Change {
            plan: Some(p),
            read_regions: None,
        };
        if let Err(r) = crate::api::apply_change(&d.api, db, change).await {
            let status = r.status();
            let detail = String::from_utf8_lossy(
                &axum::body::to_bytes((*r).into_body(), 4096)
                    .await
                    .unwrap_or_default(),
            )
            .into_owned();
            return page_error(status, &format!("The plan did not change: {detail}"));
        }
        tracing::info!(user = %s.user_id, id = %id, plan = p.name, "plan changed on the dashboard");
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
    let doc = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · anykv</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    );
    let mut r = (status, doc).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
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
}
