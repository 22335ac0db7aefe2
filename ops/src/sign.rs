//! Fly's request signatures (the Extensions API).
//!
//! Fly signs every request it sends a provider: `X-Signature` is the
//! lowercase hex HMAC-SHA256, keyed with the secret the two share, of the
//! raw body (POST, PATCH) or of the raw query string (GET, DELETE). The
//! signed payload carries `timestamp` (Unix seconds), `nonce` and `url`
//! (the endpoint it was sent to). A request is accepted only when all of
//! these hold, checked in this order so nothing about the payload is
//! looked at before it is known to come from Fly:
//!
//! 1. the signature is there, is 64 hex digits, and matches (compared in
//!    constant time: `hmac`'s `verify_slice`);
//! 2. the payload has the three fields;
//! 3. `url` is this sidecar's public URL plus the request's path (a
//!    request signed for another provider, or another endpoint of ours,
//!    is refused);
//! 4. `timestamp` is within the window of now (default 5 minutes, either
//!    way: clocks drift);
//! 5. the nonce was never accepted before ([`Nonces`]: a replayed request
//!    is refused even inside the window).
//!
//! The same code signs: the sidecar's webhooks to Fly (with the webhook
//! secret) and the fake Fly of the tests and the demo.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far a request's `timestamp` may be from now, by default (seconds).
pub const DEFAULT_WINDOW_SECS: i64 = 300;

/// Why a request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    #[error("missing X-Signature header")]
    Missing,
    #[error("X-Signature does not match the request")]
    BadSignature,
    #[error("signed payload: {0}")]
    Malformed(String),
    #[error("signed url {got:?} is not this endpoint ({want:?})")]
    WrongUrl { got: String, want: String },
    #[error("timestamp {timestamp} is more than {window} s from now ({now})")]
    Stale {
        timestamp: i64,
        now: i64,
        window: i64,
    },
    #[error("nonce {0:?} was already used")]
    Replayed(String),
}

impl SignError {
    /// The HTTP status to answer with: 400 for a payload that is signed
    /// but malformed, 401 for everything that says it may not be Fly's.
    pub fn status(&self) -> u16 {
        match self {
            SignError::Malformed(_) => 400,
            _ => 401,
        }
    }

    /// The signed field a malformed payload got wrong (`timestamp`,
    /// `nonce`, `url`), when one did.
    pub fn field(&self) -> Option<&str> {
        let SignError::Malformed(m) = self else {
            return None;
        };
        let (name, _) = m.split_once(':')?;
        (!name.is_empty() && !name.contains(' ')).then_some(name)
    }
}

/// The signed fields of an accepted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub timestamp: i64,
    pub nonce: String,
    pub url: String,
}

/// One request as the HTTP layer received it, bytes untouched.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path, without the query string (`/extensions/abc`).
    pub path: &'a str,
    /// The raw query string, without `?` (empty when there is none).
    pub query: &'a str,
    pub body: &'a [u8],
    /// The `X-Signature` header's value.
    pub signature: Option<&'a str>,
}

/// Remembers accepted nonces for at least the timestamp window (after it a
/// replay is refused as stale anyway). The sidecar keeps them in its
/// database; [`MemoryNonces`] is for tests and the fake Fly.
pub trait Nonces {
    /// Records `nonce` (of a request stamped `timestamp`); false when it
    /// was recorded before.
    fn claim(&mut self, nonce: &str, timestamp: i64, now: i64) -> bool;
}

/// [`Nonces`] in memory, forgetting those older than twice the window.
#[derive(Debug, Default)]
pub struct MemoryNonces {
    seen: HashMap<String, i64>,
    window: i64,
}

impl MemoryNonces {
    pub fn new(window_secs: i64) -> MemoryNonces {
        MemoryNonces {
            seen: HashMap::new(),
            window: window_secs,
        }
    }
}

impl Nonces for MemoryNonces {
    fn claim(&mut self, nonce: &str, timestamp: i64, now: i64) -> bool {
        let keep = 2 * self.window.max(1);
        self.seen.retain(|_, t| now - *t <= keep);
        if self.seen.contains_key(nonce) {
            return false;
        }
        self.seen.insert(nonce.to_string(), timestamp);
        true
    }
}

/// Checks requests against one secret and this sidecar's public URL.
#[derive(Clone)]
pub struct Verifier {
    secret: Vec<u8>,
    public_url: String,
    window: i64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("public_url", &self.public_url)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// `public_url` is what Fly calls us at (`https://anykv.example`), with
    /// or without a trailing slash; `window_secs` the timestamp window.
    pub fn new(secret: &[u8], public_url: &str, window_secs: i64) -> Verifier {
        Verifier {
            secret: secret.to_vec(),
            public_url: public_url.trim_end_matches('/').to_string(),
            window: window_secs,
        }
    }

    /// Accepts `req` (see the module's list) at Unix time `now`, claiming
    /// its nonce in `nonces`.
    pub fn verify(
        &self,
        req: &Request<'_>,
        now: i64,
        nonces: &mut dyn Nonces,
    ) -> Result<Signed, SignError> {
        let payload = signed_payload(req);
        let sig = req.signature.ok_or(SignError::Missing)?;
        // 64 hex digits (either case): 32 bytes.
        let sig = crate::hex::decode(sig.trim())
            .filter(|b| b.len() == 32)
            .ok_or(SignError::BadSignature)?;
        let mut mac = mac(&self.secret);
        mac.update(payload);
        mac.verify_slice(&sig)
            .map_err(|_| SignError::BadSignature)?;
        let signed = if body_signed(req.method) {
            fields_from_json(req.body)?
        } else {
            fields_from_query(req.query)?
        };
        let want = format!("{}{}", self.public_url, req.path);
        if signed.url != want {
            return Err(SignError::WrongUrl {
                got: signed.url,
                want,
            });
        }
        if now.abs_diff(signed.timestamp) > self.window.unsigned_abs() {
            return Err(SignError::Stale {
                timestamp: signed.timestamp,
                now,
                window: self.window,
            });
        }
        if !nonces.claim(&signed.nonce, signed.timestamp, now) {
            return Err(SignError::Replayed(signed.nonce));
        }
        Ok(signed)
    }
}

/// Whether `method` signs its body (POST, PATCH) or its query string.
fn body_signed(method: &str) -> bool {
    method.eq_ignore_ascii_case("POST") || method.eq_ignore_ascii_case("PATCH")
}

/// The bytes the signature covers.
fn signed_payload<'a>(req: &Request<'a>) -> &'a [u8] {
    if body_signed(req.method) {
        req.body
    } else {
        req.query.as_bytes()
    }
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length: new_from_slice cannot fail for it.
    match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

/// The `X-Signature` for `payload` (the body, or the query string).
pub fn sign(secret: &[u8], payload: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(payload);
    crate::hex::encode(&mac.finalize().into_bytes())
}

/// `a == b` in time that depends on their lengths only (secrets compared
/// this way leak nothing through timing): `subtle`'s comparison, which
/// `hmac` uses for its own checks.
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// `timestamp`, `nonce` and `url` from a signed JSON body.
fn fields_from_json(body: &[u8]) -> Result<Signed, SignError> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| SignError::Malformed(format!("body is not JSON: {e}")))?;
    let timestamp = match v.get("timestamp") {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| SignError::Malformed("timestamp: expected Unix seconds".into()))?;
    let text = |name: &str| {
        v.get(name)
            .and_then(|x| x.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| SignError::Malformed(format!("{name}: expected a non-empty string")))
    };
    Ok(Signed {
        timestamp,
        nonce: text("nonce")?,
        url: text("url")?,
    })
}

/// `timestamp`, `nonce` and `url` from a signed query string.
fn fields_from_query(query: &str) -> Result<Signed, SignError> {
    let mut fields: HashMap<String, String> = HashMap::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if fields.insert(k.to_string(), v.to_string()).is_some() {
            return Err(SignError::Malformed(format!("{k}: given twice")));
        }
    }
    let text = |name: &str| {
        fields
            .get(name)
            .filter(|s| !s.is_empty())
            .cloned()
            .ok_or_else(|| SignError::Malformed(format!("{name}: missing from the query")))
    };
    let timestamp = text("timestamp")?
        .parse()
        .map_err(|_| SignError::Malformed("timestamp: expected Unix seconds".into()))?;
    Ok(Signed {
        timestamp,
        nonce: text("nonce")?,
        url: text("url")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"shared-with-fly";
    const BASE: &str = "https://anykv.example";
    const NOW: i64 = 1_800_000_000;

    fn verifier() -> Verifier {
        Verifier::new(SECRET, BASE, DEFAULT_WINDOW_SECS)
    }

    fn body(url: &str, nonce: &str, ts: i64) -> String {
        serde_json::json!({
            "id": "ext_1", "name": "shop", "primary_region": "iad",
            "url": url, "nonce": nonce, "timestamp": ts,
        })
        .to_string()
    }

    fn post<'a>(body: &'a str, sig: Option<&'a str>) -> Request<'a> {
        Request {
            method: "POST",
            path: "/extensions",
            query: "",
            body: body.as_bytes(),
            signature: sig,
        }
    }

    #[test]
    fn a_request_signed_by_fly_is_accepted_once() {
        let b = body("https://anykv.example/extensions", "n1", NOW - 10);
        let sig = sign(SECRET, b.as_bytes());
        let mut nonces = MemoryNonces::new(DEFAULT_WINDOW_SECS);
        let got = verifier().verify(&post(&b, Some(&sig)), NOW, &mut nonces);
        assert_eq!(
            got,
            Ok(Signed {
                timestamp: NOW - 10,
                nonce: "n1".into(),
                url: "https://anykv.example/extensions".into()
            })
        );
        // The same request again: a replay.
        let again = verifier().verify(&post(&b, Some(&sig)), NOW + 1, &mut nonces);
        assert_eq!(again, Err(SignError::Replayed("n1".into())));
        assert_eq!(again.unwrap_err().status(), 401);
        // Upper-case hex is the same signature.
        let b2 = body("https://anykv.example/extensions", "n2", NOW);
        let upper = sign(SECRET, b2.as_bytes()).to_uppercase();
        assert!(verifier()
            .verify(&post(&b2, Some(&upper)), NOW, &mut nonces)
            .is_ok());
    }

    #[test]
    fn wrong_secret_tampered_body_and_missing_or_garbled_signatures_are_refused() {
        let b = body("https://anykv.example/extensions", "n1", NOW);
        let mut nonces = MemoryNonces::new(DEFAULT_WINDOW_SECS);
        let v = verifier();
        let other = sign(b"another-secret", b.as_bytes());
        assert_eq!(
            v.verify(&post(&b, Some(&other)), NOW, &mut nonces),
            Err(SignError::BadSignature)
        );
        let sig = sign(SECRET, b.as_bytes());
        let tampered = b.replace("\"shop\"", "\"shoq\"");
        assert_eq!(
            v.verify(&post(&tampered, Some(&sig)), NOW, &mut nonces),
            Err(SignError::BadSignature)
        );
        assert_eq!(
            v.verify(&post(&b, None), NOW, &mut nonces),
            Err(SignError::Missing)
        );
        for garbled in [
            "",
            "zz",
            &sig[..62],
            &format!("{sig}00"),
            &sig.replace('a', "g"),
        ] {
            assert_eq!(
                v.verify(&post(&b, Some(garbled)), NOW, &mut nonces),
                Err(SignError::BadSignature),
                "{garbled:?}"
            );
        }
        // None of those claimed the nonce: the genuine request still goes.
        assert!(v.verify(&post(&b, Some(&sig)), NOW, &mut nonces).is_ok());
    }

    #[test]
    fn the_url_must_be_this_endpoint_and_the_timestamp_recent() {
        let mut nonces = MemoryNonces::new(DEFAULT_WINDOW_SECS);
        let v = verifier();
        for url in [
            "https://other-provider.example/extensions",
            "https://anykv.example/extensions/ext_1",
            "http://anykv.example/extensions",
        ] {
            let b = body(url, "n-url", NOW);
            let sig = sign(SECRET, b.as_bytes());
            assert!(
                matches!(
                    v.verify(&post(&b, Some(&sig)), NOW, &mut nonces),
                    Err(SignError::WrongUrl { .. })
                ),
                "{url}"
            );
        }
        for ts in [NOW - DEFAULT_WINDOW_SECS - 1, NOW + DEFAULT_WINDOW_SECS + 1] {
            let b = body("https://anykv.example/extensions", "n-ts", ts);
            let sig = sign(SECRET, b.as_bytes());
            assert!(matches!(
                v.verify(&post(&b, Some(&sig)), NOW, &mut nonces),
                Err(SignError::Stale { .. })
            ));
        }
        // At the window's edge it is still fine; a trailing slash on the
        // configured URL changes nothing.
        let b = body(
            "https://anykv.example/extensions",
            "n-edge",
            NOW - DEFAULT_WINDOW_SECS,
        );
        let sig = sign(SECRET, b.as_bytes());
        let slash = Verifier::new(SECRET, "https://anykv.example/", DEFAULT_WINDOW_SECS);
        assert!(slash
            .verify(&post(&b, Some(&sig)), NOW, &mut nonces)
            .is_ok());
    }

    #[test]
    fn signed_but_malformed_bodies_name_the_field() {
        let mut nonces = MemoryNonces::new(DEFAULT_WINDOW_SECS);
        let v = verifier();
        for (b, field) in [
            ("not json".to_string(), "body is not JSON"),
            (
                r#"{"url":"https://anykv.example/extensions","nonce":"n"}"#.to_string(),
                "timestamp",
            ),
            (
                format!(r#"{{"url":"https://anykv.example/extensions","timestamp":{NOW}}}"#),
                "nonce",
            ),
            (format!(r#"{{"nonce":"n","timestamp":{NOW}}}"#), "url"),
        ] {
            let sig = sign(SECRET, b.as_bytes());
            let err = v
                .verify(&post(&b, Some(&sig)), NOW, &mut nonces)
                .unwrap_err();
            assert_eq!(err.status(), 400, "{err}");
            assert!(err.to_string().contains(field), "{err} should name {field}");
            // The answer's "field": the signed field at fault, if one is.
            let want = (field != "body is not JSON").then_some(field);
            assert_eq!(err.field(), want, "{err}");
        }
    }

    fn get<'a>(query: &'a str, sig: &'a str) -> Request<'a> {
        Request {
            method: "GET",
            path: "/extensions/ext_1",
            query,
            body: b"ignored: a GET signs its query",
            signature: Some(sig),
        }
    }

    #[test]
    fn get_and_delete_sign_the_query_string() {
        let mut nonces = MemoryNonces::new(DEFAULT_WINDOW_SECS);
        let v = verifier();
        let url = "https://anykv.example/extensions/ext_1";
        let query = format!(
            "url={}&nonce=q1&timestamp={NOW}",
            form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>()
        );
        let sig = sign(SECRET, query.as_bytes());
        assert!(v.verify(&get(&query, &sig), NOW, &mut nonces).is_ok());
        // A tampered query (another nonce to slip past the replay check).
        let tampered = query.replace("nonce=q1", "nonce=q2");
        assert_eq!(
            v.verify(&get(&tampered, &sig), NOW, &mut nonces),
            Err(SignError::BadSignature)
        );
        // DELETE is verified the same way; the nonce is spent already.
        let mut del = get(&query, &sig);
        del.method = "DELETE";
        assert_eq!(
            v.verify(&del, NOW, &mut nonces),
            Err(SignError::Replayed("q1".into()))
        );
        // A parameter given twice is refused rather than guessed at.
        let twice = format!("{query}&nonce=q3");
        let twice_sig = sign(SECRET, twice.as_bytes());
        let err = v
            .verify(&get(&twice, &twice_sig), NOW, &mut nonces)
            .unwrap_err();
        assert_eq!(err.status(), 400, "{err}");
    }

    #[test]
    fn nonces_are_forgotten_only_after_the_window_could_not_accept_them() {
        let mut n = MemoryNonces::new(10);
        assert!(n.claim("a", 100, 100));
        assert!(!n.claim("a", 100, 115));
        assert!(!n.claim("a", 100, 120));
        // Past twice the window "a" is forgotten (a verifier refuses it as
        // stale before asking).
        assert!(n.claim("a", 100, 121));
    }
}
