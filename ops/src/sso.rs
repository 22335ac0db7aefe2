//! Single sign-on into the dashboard through Fly's OAuth.
//!
//! `flyctl ext anykv dashboard` opens `GET /extensions/{id}/sso` (a
//! database) or `GET /sso` (the organization's list). The sidecar sends
//! the browser to Fly's `/oauth/authorize` (`client_id`,
//! `response_type=code`, `redirect_uri` = `/oauth/callback` here,
//! `scope=read`, a random `state`); Fly sends it back with a code, which
//! the sidecar exchanges at `/oauth/token` (authorization-code grant,
//! with its client secret) for an access token, and asks `/oauth/token/info`
//! who that is: `user_id`, `email`, `organizations: [{id, role}]`.
//!
//! The user then holds a session: a random id in a cookie signed with a
//! key derived from `ANYKV_TOKEN_KEY` (`HttpOnly`, `Secure`,
//! `SameSite=Lax`), kept in the store only as its SHA-256, with the
//! organizations and roles Fly named and a CSRF token every form carries.
//! The `state` travels in a second signed cookie, so a callback the
//! browser did not start here (login CSRF) is refused.

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::store::Session;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "anykv_session";
/// The cookie that carries an OAuth round trip's `state`.
const STATE_COOKIE: &str = "anykv_oauth";
/// How long a sign-in round trip through Fly may take.
const STATE_SECS: i64 = 600;
/// How long an OAuth call to Fly may take.
const FLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    #[error(
        "the sign-in link expired or was not started here: open the dashboard from flyctl again"
    )]
    BadState,
    #[error("Fly's OAuth: {0}")]
    Fly(#[from] crate::fetch::FetchError),
    #[error("Fly's OAuth answered something unexpected: {0}")]
    Unexpected(String),
    #[error("the sidecar's store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("no randomness, or a sealed token that does not open: {0}")]
    Random(#[from] crate::tokens::TokenError),
    #[error("your Fly sign-in is no longer valid: open the dashboard from flyctl again")]
    Revoked,
}

/// Who signed in, as Fly's token info says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub email: String,
    /// (organization id, `admin` | `member`).
    pub organizations: Vec<(String, String)>,
}

/// The OAuth client and the session cookies.
pub struct Sso {
    /// Fly's API (the OAuth endpoints are `{base}/oauth/...`).
    fly_api_base: String,
    client_id: String,
    client_secret: String,
    /// Where this sidecar is reached, base path included (the callback is
    /// `{public_url}/oauth/callback`).
    public_url: String,
    /// The cookies' `Path` (the base path, or `/`).
    cookie_path: String,
    /// Signs the cookies.
    key: Vec<u8>,
    http: crate::fetch::Client,
    /// How long a session lasts (seconds).
    pub session_secs: i64,
}

impl Sso {
    /// `key_material` is hashed into the cookies' signing key (the sidecar
    /// passes `ANYKV_TOKEN_KEY`, so no further secret is needed).
    pub fn new(
        fly_api_base: &str,
        client_id: &str,
        client_secret: &str,
        public_url: &str,
        key_material: &[u8],
    ) -> Sso {
        Sso::with_client(
            fly_api_base,
            client_id,
            client_secret,
            public_url,
            key_material,
            crate::fetch::Client::new(FLY_TIMEOUT),
        )
    }

    /// [`Sso::new`] with its own HTTP client (tests: other roots).
    pub fn with_client(
        fly_api_base: &str,
        client_id: &str,
        client_secret: &str,
        public_url: &str,
        key_material: &[u8],
        http: crate::fetch::Client,
    ) -> Sso {
        let public_url = public_url.trim_end_matches('/').to_string();
        let path = public_url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
            .unwrap_or_default();
        let key = crate::hex::decode(&crate::sign::sign(
            key_material,
            b"anykv dashboard session cookies",
        ))
        .unwrap_or_default();
        Sso {
            fly_api_base: fly_api_base.trim_end_matches('/').to_string(),
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            cookie_path: if path.is_empty() { "/".into() } else { path },
            public_url,
            key,
            http,
            session_secs: 2 * 3600,
        }
    }

    /// The public URL (base path included).
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// `scheme://host[:port]` of the public URL: what a browser's `Origin`
    /// header says for our own pages.
    pub fn origin(&self) -> &str {
        let after = self.public_url.find("://").map_or(0, |i| i + 3);
        match self.public_url[after..].find('/') {
            Some(i) => &self.public_url[..after + i],
            None => &self.public_url,
        }
    }

    fn redirect_uri(&self) -> String {
        format!("{}/oauth/callback", self.public_url)
    }

    fn mac(&self, parts: &[&str]) -> String {
        crate::sign::sign(&self.key, parts.join("\n").as_bytes())
    }

    fn cookie(&self, name: &str, value: &str, max_age: i64) -> HeaderValue {
        let c = format!(
            "{name}={value}; Path={}; Max-Age={max_age}; HttpOnly; Secure; SameSite=Lax",
            self.cookie_path
        );
        HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The answer to `GET /extensions/{id}/sso` or `GET /sso`: off to
    /// Fly's authorize page, with a fresh `state` bound to this browser
    /// and where to land after (`target`, a path under the public URL).
    pub fn begin(&self, target: &str, now: i64) -> Result<Response, SsoError> {
        let state = crate::tokens::new_token()?;
        let expires = (now + STATE_SECS).to_string();
        let target_hex = crate::hex::encode(target.as_bytes());
        let mac = self.mac(&["state", &state, &target_hex, &expires]);
        let value = format!("{state}.{target_hex}.{expires}.{mac}");
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &self.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", &self.redirect_uri())
            .append_pair("scope", "read")
            .append_pair("state", &state)
            .finish();
        let location = format!("{}/oauth/authorize?{q}", self.fly_api_base);
        let mut r = redirect(&location);
        r.headers_mut().append(
            header::SET_COOKIE,
            self.cookie(STATE_COOKIE, &value, STATE_SECS),
        );
        Ok(r)
    }

    /// Where a callback with `state` should land, when this browser
    /// started that sign-in (its state cookie is ours, unexpired and for
    /// that `state`).
    fn landing(&self, headers: &HeaderMap, state: &str, now: i64) -> Option<String> {
        let v = cookie_value(headers, STATE_COOKIE)?;
        let mut parts = v.split('.');
        let (s, target_hex, expires, mac) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let good = crate::sign::equal(
            self.mac(&["state", s, target_hex, expires]).as_bytes(),
            mac.as_bytes(),
        );
        let fresh = expires.parse::<i64>().ok()? > now;
        let same = crate::sign::equal(s.as_bytes(), state.as_bytes());
        if !(good && fresh && same) {
            return None;
        }
        let target = String::from_utf8(crate::hex::decode(target_hex)?).ok()?;
        // Only a path of ours: never an open redirect.
        (target.starts_with('/') && !target.starts_with("//")).then_some(target)
    }

    /// Trades an authorization `code` for the user it stands for, and
    /// Fly's access token.
    pub async fn identify(&self, code: &str) -> Result<(Identity, String), SsoError> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", &self.redirect_uri())
            .append_pair("client_id", &self.client_id)
            .append_pair("client_secret", &self.client_secret)
            .finish();
        let url = format!("{}/oauth/token", self.fly_api_base);
        let answer = self
            .http
            .send(
                "POST",
                &url,
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("accept", "application/json"),
                ],
                form.into_bytes(),
            )
            .await?
            .success(&url)?;
        let v: serde_json::Value = serde_json::from_slice(&answer.body)
            .map_err(|e| SsoError::Unexpected(format!("/oauth/token: {e}")))?;
        let access = v["access_token"]
            .as_str()
            .ok_or_else(|| SsoError::Unexpected("/oauth/token: no access_token".into()))?;
        let who = self.token_info(access).await?;
        Ok((who, access.to_string()))
    }

    /// Who Fly's access token `access` stands for, now.
    async fn token_info(&self, access: &str) -> Result<Identity, SsoError> {
        let url = format!("{}/oauth/token/info", self.fly_api_base);
        let bearer = format!("Bearer {access}");
        let answer = self
            .http
            .send(
                "GET",
                &url,
                &[
                    ("authorization", bearer.as_str()),
                    ("accept", "application/json"),
                ],
                Vec::new(),
            )
            .await?;
        if answer.status == 401 || answer.status == 403 {
            return Err(SsoError::Revoked);
        }
        identity(&answer.success(&url)?.body)
    }

    /// The request's session with the user's organizations and roles as
    /// Fly says them now (kept for its next pages); a token Fly no longer
    /// takes ends the session.
    pub async fn recheck(
        &self,
        store: &parking_lot::Mutex<crate::store::Store>,
        sealer: &crate::tokens::Sealer,
        headers: &HeaderMap,
        now: i64,
    ) -> Result<Session, SsoError> {
        let sid = self.session_id(headers).ok_or(SsoError::Revoked)?;
        let id_hash = crate::tokens::digest_hex(&sid);
        let mut s = store
            .lock()
            .session(&id_hash, now)?
            .ok_or(SsoError::Revoked)?;
        let access = sealer.open(&s.access_sealed, &id_hash)?;
        match self.token_info(&access).await {
            Ok(who) => {
                store
                    .lock()
                    .set_session_organizations(&id_hash, &who.organizations)?;
                s.organizations = who.organizations;
                Ok(s)
            }
            Err(SsoError::Revoked) => {
                store.lock().end_session(&id_hash)?;
                Err(SsoError::Revoked)
            }
            Err(e) => Err(e),
        }
    }

    /// The answer to `GET /oauth/callback?code=..&state=..`: a session and
    /// off to where the sign-in began.
    pub async fn finish(
        &self,
        store: &parking_lot::Mutex<crate::store::Store>,
        sealer: &crate::tokens::Sealer,
        headers: &HeaderMap,
        query: &str,
        now: i64,
    ) -> Result<Response, SsoError> {
        let mut code = None;
        let mut state = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "code" => code = Some(v.into_owned()),
                "state" => state = Some(v.into_owned()),
                _ => {}
            }
        }
        let (Some(code), Some(state)) = (code, state) else {
            return Err(SsoError::BadState);
        };
        let target = self
            .landing(headers, &state, now)
            .ok_or(SsoError::BadState)?;
        let (who, access) = self.identify(&code).await?;
        let sid = crate::tokens::new_token()?;
        let id_hash = crate::tokens::digest_hex(&sid);
        let session = Session {
            user_id: who.user_id,
            email: who.email,
            organizations: who.organizations,
            csrf: crate::tokens::new_token()?,
            expires_at: now + self.session_secs,
            access_sealed: sealer.seal(&access, &id_hash)?,
        };
        store.lock().create_session(&id_hash, &session, now)?;
        tracing::info!(user = %session.user_id, "signed in to the dashboard");
        let mac = self.mac(&["session", &sid]);
        let mut r = redirect(&format!("{}{target}", self.public_url));
        let h = r.headers_mut();
        h.append(
            header::SET_COOKIE,
            self.cookie(SESSION_COOKIE, &format!("{sid}.{mac}"), self.session_secs),
        );
        h.append(header::SET_COOKIE, self.cookie(STATE_COOKIE, "", 0));
        Ok(r)
    }

    /// The session id in the request's cookie, when its signature holds.
    fn session_id(&self, headers: &HeaderMap) -> Option<String> {
        let v = cookie_value(headers, SESSION_COOKIE)?;
        let (sid, mac) = v.split_once('.')?;
        crate::sign::equal(self.mac(&["session", sid]).as_bytes(), mac.as_bytes())
            .then(|| sid.to_string())
    }

    /// The request's session, when it has a live one.
    pub fn session(
        &self,
        store: &parking_lot::Mutex<crate::store::Store>,
        headers: &HeaderMap,
        now: i64,
    ) -> Option<Session> {
        let sid = self.session_id(headers)?;
        match store.lock().session(&crate::tokens::digest_hex(&sid), now) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("reading a dashboard session: {e}");
                None
            }
        }
    }

    /// Signs out: the session ends in the store and the cookie is cleared.
    pub fn end(
        &self,
        store: &parking_lot::Mutex<crate::store::Store>,
        headers: &HeaderMap,
    ) -> Response {
        if let Some(sid) = self.session_id(headers) {
            if let Err(e) = store.lock().end_session(&crate::tokens::digest_hex(&sid)) {
                tracing::warn!("ending a dashboard session: {e}");
            }
        }
        let mut r = redirect(&format!("{}/signed-out", self.public_url));
        r.headers_mut()
            .append(header::SET_COOKIE, self.cookie(SESSION_COOKIE, "", 0));
        r
    }
}

/// Fly's `/oauth/token/info` answer, read.
pub fn identity(body: &[u8]) -> Result<Identity, SsoError> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| SsoError::Unexpected(format!("/oauth/token/info: {e}")))?;
    let text = |k: &str| {
        v[k].as_str()
            .map(str::to_string)
            .ok_or_else(|| SsoError::Unexpected(format!("/oauth/token/info: no {k}")))
    };
    let orgs = v["organizations"]
        .as_array()
        .ok_or_else(|| SsoError::Unexpected("/oauth/token/info: no organizations".into()))?;
    let organizations = orgs
        .iter()
        .filter_map(|o| {
            let id = o["id"].as_str()?;
            // Any role but admin is read-only.
            let role = if o["role"] == "admin" {
                "admin"
            } else {
                "member"
            };
            Some((id.to_string(), role.to_string()))
        })
        .collect();
    Ok(Identity {
        user_id: text("user_id")?,
        email: text("email")?,
        organizations,
    })
}

/// The value of cookie `name` in the request.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name && !v.is_empty()).then_some(v)
        })
}

/// A 303 to `location`.
pub fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(l) => (StatusCode::SEE_OTHER, [(header::LOCATION, l)]).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "bad redirect").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sso() -> Sso {
        Sso::new(
            "http://fly.test",
            "cid",
            "csecret",
            "https://anykv.example/fly",
            b"key",
        )
    }

    fn with_cookie(set: &HeaderValue) -> HeaderMap {
        let c = set.to_str().unwrap().split(';').next().unwrap().to_string();
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(&c).unwrap());
        h
    }

    #[test]
    fn the_state_cookie_binds_the_callback_to_this_browser() {
        let s = sso();
        assert_eq!(s.origin(), "https://anykv.example");
        assert_eq!(s.cookie_path, "/fly");
        let r = s.begin("/dashboard/databases/e1", 1000).unwrap();
        let loc = r.headers()[header::LOCATION].to_str().unwrap().to_string();
        assert!(loc.starts_with("http://fly.test/oauth/authorize?client_id=cid&response_type=code&redirect_uri=https%3A%2F%2Fanykv.example%2Ffly%2Foauth%2Fcallback&scope=read&state="), "{loc}");
        let state = loc.rsplit_once("state=").unwrap().1.to_string();
        let set = &r.headers()[header::SET_COOKIE];
        let set_text = set.to_str().unwrap();
        for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/fly"] {
            assert!(set_text.contains(attr), "{set_text}");
        }
        let h = with_cookie(set);
        assert_eq!(
            s.landing(&h, &state, 1001).as_deref(),
            Some("/dashboard/databases/e1")
        );
        // Another state, an expired round trip, no cookie, a forged one.
        assert_eq!(s.landing(&h, "other", 1001), None);
        assert_eq!(s.landing(&h, &state, 1000 + STATE_SECS), None);
        assert_eq!(s.landing(&HeaderMap::new(), &state, 1001), None);
        let forged = set_text.replace("2f64617368626f617264", "2f2f6576696c");
        let forged = forged.split(';').next().unwrap();
        let mut h2 = HeaderMap::new();
        h2.insert(header::COOKIE, HeaderValue::from_str(forged).unwrap());
        assert_eq!(s.landing(&h2, &state, 1001), None);
        // Another key does not vouch for this cookie.
        let other = Sso::new(
            "http://fly.test",
            "cid",
            "cs",
            "https://anykv.example/fly",
            b"k2",
        );
        assert_eq!(other.landing(&h, &state, 1001), None);
    }

    #[test]
    fn token_info_is_read_and_unknown_roles_are_read_only() {
        let who = identity(
            br#"{"user_id":"u1","email":"a@b","organizations":[{"id":"o1","role":"admin"},{"id":"o2","role":"member"},{"id":"o3","role":"billing"},{"role":"admin"}]}"#,
        )
        .unwrap();
        assert_eq!(who.user_id, "u1");
        assert_eq!(
            who.organizations,
            vec![
                ("o1".to_string(), "admin".to_string()),
                ("o2".into(), "member".into()),
                ("o3".into(), "member".into())
            ]
        );
        assert!(identity(br#"{"email":"a@b","organizations":[]}"#).is_err());
        assert!(identity(b"not json").is_err());
    }
}
