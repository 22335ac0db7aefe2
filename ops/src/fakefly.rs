//! A fake Fly, written from Fly's Extensions docs, for tests and the
//! demo: the OAuth endpoints single sign-on uses, the webhook endpoint the
//! sidecar reports to, and signed Extensions API calls to the sidecar.
//!
//! - `GET /oauth/authorize` (`client_id`, `response_type=code`,
//!   `redirect_uri`, `scope`, `state`): a sign-in page with a button per
//!   known user (`#as-<user id>`); choosing one redirects to
//!   `redirect_uri?code=..&state=..` as Fly does once a user consents.
//! - `POST /oauth/token` (form: `grant_type=authorization_code`, `code`,
//!   `redirect_uri`, `client_id`, `client_secret`): an access token; a
//!   code works once, for the client and redirect URI it was issued to.
//! - `GET /oauth/token/info` (`Authorization: Bearer`): `user_id`,
//!   `email`, `organizations: [{id, role}]`.
//! - `POST /api/hooks/extensions/{provider}`: webhooks, kept when their
//!   signature (the webhook secret over the body), url, timestamp and
//!   nonce hold, as Fly checks them.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::dashboard::esc;

/// A Fly user the fake knows.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    /// (organization id, `admin` | `member`).
    pub organizations: Vec<(String, String)>,
}

/// The fake's state: its OAuth client, users, codes and tokens, and the
/// webhooks it received.
pub struct FakeFly {
    pub client_id: String,
    pub client_secret: String,
    pub webhook_secret: Vec<u8>,
    pub users: Vec<User>,
    /// code → (user index, client id, redirect URI).
    codes: Mutex<HashMap<String, (usize, String, String)>>,
    /// access token → user index.
    tokens: Mutex<HashMap<String, usize>>,
    /// The webhooks received, signature checked, in order.
    pub webhooks: Mutex<Vec<Value>>,
    /// The webhooks' nonces seen (a replay is refused, as Fly would).
    nonces: Mutex<crate::sign::MemoryNonces>,
}

impl FakeFly {
    pub fn new(
        client_id: &str,
        client_secret: &str,
        webhook_secret: &[u8],
        users: Vec<User>,
    ) -> FakeFly {
        FakeFly {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            webhook_secret: webhook_secret.to_vec(),
            users,
            codes: Mutex::default(),
            tokens: Mutex::default(),
            webhooks: Mutex::default(),
            nonces: Mutex::new(crate::sign::MemoryNonces::new(
                crate::sign::DEFAULT_WINDOW_SECS,
            )),
        }
    }

    /// Fly forgets every access token of user `id` (signed out of Fly,
    /// removed from the organization): `/oauth/token/info` answers 401.
    pub fn revoke(&self, id: &str) {
        let Some(i) = self.users.iter().position(|u| u.id == id) else {
            return;
        };
        self.tokens.lock().retain(|_, u| *u != i);
    }

    /// Serves the fake on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, router(self)).await
    }
}

/// The fake's routes.
pub fn router(fly: Arc<FakeFly>) -> Router {
    Router::new()
        .route("/oauth/authorize", get(authorize))
        .route("/oauth/approve", get(approve))
        .route("/oauth/token", post(token))
        .route("/oauth/token/info", get(token_info))
        .route("/api/hooks/extensions/{provider}", post(webhook))
        .with_state(fly)
}

fn query_map(q: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
}

async fn authorize(State(fly): State<Arc<FakeFly>>, RawQuery(q): RawQuery) -> Response {
    let q = query_map(q.as_deref());
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    if get("client_id") != fly.client_id {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_client");
    }
    if get("response_type") != "code" || get("redirect_uri").is_empty() {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let mut forms = String::new();
    for u in &fly.users {
        forms.push_str(&format!(
            "<form method=\"get\" action=\"/oauth/approve\"><input type=\"hidden\" name=\"user\" value=\"{id}\"><input type=\"hidden\" name=\"client_id\" value=\"{cid}\"><input type=\"hidden\" name=\"redirect_uri\" value=\"{uri}\"><input type=\"hidden\" name=\"state\" value=\"{state}\"><button id=\"as-{id}\" type=\"submit\">Sign in as {email}</button></form>",
            id = esc(&u.id),
            cid = esc(get("client_id")),
            uri = esc(get("redirect_uri")),
            state = esc(get("state")),
            email = esc(&u.email),
        ));
    }
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Fly.io (fake): authorize anykv</title></head><body><h1>Authorize anykv to read your Fly account</h1>{forms}</body></html>"
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

async fn approve(State(fly): State<Arc<FakeFly>>, RawQuery(q): RawQuery) -> Response {
    let q = query_map(q.as_deref());
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let Some(user) = fly.users.iter().position(|u| u.id == get("user")) else {
        return oauth_error(StatusCode::BAD_REQUEST, "access_denied");
    };
    let Ok(code) = crate::tokens::new_token() else {
        return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    };
    let uri = get("redirect_uri");
    fly.codes
        .lock()
        .insert(code.clone(), (user, get("client_id"), uri.clone()));
    let back: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("code", &code)
        .append_pair("state", &get("state"))
        .finish();
    let sep = if uri.contains('?') { '&' } else { '?' };
    crate::sso::redirect(&format!("{uri}{sep}{back}"))
}

async fn token(State(fly): State<Arc<FakeFly>>, body: Bytes) -> Response {
    let f: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    if get("grant_type") != "authorization_code" {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    if get("client_id") != fly.client_id || get("client_secret") != fly.client_secret {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    // A code is used once, by the client and redirect URI it was for.
    let Some((user, cid, uri)) = fly.codes.lock().remove(get("code")) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    if cid != get("client_id") || uri != get("redirect_uri") {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let Ok(access) = crate::tokens::new_token() else {
        return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    };
    fly.tokens.lock().insert(access.clone(), user);
    Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": 7200,
        "scope": "read",
    }))
    .into_response()
}

async fn token_info(State(fly): State<Arc<FakeFly>>, headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    let user = bearer.and_then(|t| fly.tokens.lock().get(t).copied());
    let Some(u) = user.and_then(|i| fly.users.get(i)) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_token");
    };
    let orgs: Vec<Value> = u
        .organizations
        .iter()
        .map(|(id, role)| json!({ "id": id, "role": role }))
        .collect();
    Json(json!({
        "user_id": u.id,
        "email": u.email,
        "organizations": orgs,
    }))
    .into_response()
}

async fn webhook(
    State(fly): State<Arc<FakeFly>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Checked as Fly checks what it is sent: the signature over the body,
    // the url (this endpoint, at the address it was called at), the
    // timestamp's window and the nonce's first use.
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let verifier = crate::sign::Verifier::new(
        &fly.webhook_secret,
        &format!("http://{host}"),
        crate::sign::DEFAULT_WINDOW_SECS,
    );
    let path = format!("/api/hooks/extensions/{provider}");
    let req = crate::sign::Request {
        method: "POST",
        path: &path,
        query: "",
        body: &body,
        signature: headers.get("x-signature").and_then(|h| h.to_str().ok()),
    };
    let checked = verifier.verify(&req, crate::unix_now(), &mut *fly.nonces.lock());
    if let Err(e) = checked {
        tracing::warn!("fake Fly: webhook refused: {e}");
        return StatusCode::from_u16(e.status())
            .unwrap_or(StatusCode::UNAUTHORIZED)
            .into_response();
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) => {
            fly.webhooks.lock().push(v);
            StatusCode::OK.into_response()
        }
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// Sends a signed Extensions API call to the sidecar at `base` (its public
/// URL) as Fly does: a JSON body gets `url`, `timestamp` and `nonce`
/// added and is signed; a GET or DELETE signs its query string instead
/// (a query in `path`, e.g. `/billing?date=...`, is part of it).
/// The answer's status and JSON body.
pub async fn call_signed(
    http: &crate::fetch::Client,
    secret: &[u8],
    method: &str,
    base: &str,
    path: &str,
    fields: Option<Value>,
) -> Result<(u16, Value), crate::fetch::FetchError> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let nonce = crate::tokens::new_token().unwrap_or_else(|_| crate::unix_now().to_string());
    let ts = crate::unix_now();
    let answer = match fields {
        Some(mut v) => {
            v["url"] = json!(url);
            v["timestamp"] = json!(ts);
            v["nonce"] = json!(nonce);
            let body = v.to_string().into_bytes();
            let sig = crate::sign::sign(secret, &body);
            http.send(
                method,
                &url,
                &[
                    ("content-type", "application/json"),
                    ("x-signature", sig.as_str()),
                ],
                body,
            )
            .await?
        }
        None => {
            let mut q = String::from(query);
            if !q.is_empty() {
                q.push('&');
            }
            let q: String = form_urlencoded::Serializer::for_suffix(q.clone(), q.len())
                .append_pair("url", &url)
                .append_pair("timestamp", &ts.to_string())
                .append_pair("nonce", &nonce)
                .finish();
            let sig = crate::sign::sign(secret, q.as_bytes());
            http.send(
                method,
                &format!("{url}?{q}"),
                &[("x-signature", sig.as_str())],
                Vec::new(),
            )
            .await?
        }
    };
    let v = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    Ok((answer.status, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fake takes a webhook the sidecar signs, and refuses what Fly
    /// would: a replay, another secret's, one signed for another url.
    #[tokio::test]
    async fn webhooks_are_checked_as_fly_checks_them() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let fly = Arc::new(FakeFly::new("c", "s", b"hook-secret", vec![]));
        tokio::spawn(fly.clone().serve(listener));
        let hook = crate::store::Webhook {
            id: 1,
            action: "resource.updated".into(),
            resource: r#"{"id":"ext_1"}"#.into(),
            attempts: 0,
        };
        let now = crate::unix_now();
        let hooks = crate::webhook::Hooks::new(&base, b"hook-secret");
        let body = hooks.body(&hook, now, "nonce-1");
        assert!(hooks.post(body.clone()).await.is_ok());
        assert_eq!(fly.webhooks.lock().len(), 1);
        assert!(hooks.post(body).await.is_err(), "a replay");
        let wrong = crate::webhook::Hooks::new(&base, b"another-secret");
        assert!(wrong.post(wrong.body(&hook, now, "nonce-2")).await.is_err());
        let elsewhere = crate::webhook::Hooks::new("http://fly.example", b"hook-secret");
        let misdirected = elsewhere.body(&hook, now, "nonce-3");
        assert!(
            hooks.post(misdirected).await.is_err(),
            "signed for another url"
        );
        assert!(
            hooks
                .post(hooks.body(&hook, now - 3600, "nonce-4"))
                .await
                .is_err(),
            "stale"
        );
        assert_eq!(fly.webhooks.lock().len(), 1);
    }
}
