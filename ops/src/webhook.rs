//! Webhooks to Fly: `resource.updated` and `resource.deleted`.
//!
//! Fly learns of a change it did not ask for synchronously — a database
//! deleted, read regions changed, a provisioning that finished later —
//! from a `POST {fly-api-base}/api/hooks/extensions/<provider>`, signed
//! like Fly's own requests but with the webhook secret (`X-Signature`:
//! HMAC-SHA256 of the body, [`crate::sign::sign`]). The body is
//! `{timestamp, nonce, url, action, resource}`, `resource` shaped like
//! `GET /extensions/{id}`.
//!
//! Never lost: the change and its webhook are written in one SQLite
//! transaction (the outbox, [`crate::store::Store::change_and_notify`]);
//! [`run`] sends what is due, marks what Fly took (2xx), and retries the
//! rest with exponential backoff (1 s doubling up to [`MAX_BACKOFF_SECS`])
//! for as long as it takes, across restarts. Each attempt is signed
//! afresh (a new timestamp and nonce), so a retry is never stale; Fly may
//! see an event twice when its 2xx is lost, never not at all.

use std::sync::Arc;
use std::time::Duration;

use crate::store::{Store, Webhook};

/// The provider name in Fly's webhook path.
pub const PROVIDER: &str = "anykv";

/// Longest wait between two attempts at one webhook.
pub const MAX_BACKOFF_SECS: i64 = 600;

/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a webhook was not delivered.
pub use crate::fetch::FetchError as HookError;

/// Where and how webhooks go.
pub struct Hooks {
    /// `{fly-api-base}/api/hooks/extensions/anykv`.
    pub url: String,
    secret: Vec<u8>,
    client: crate::fetch::Client,
    /// Wakes the sender when a webhook was queued.
    pub wake: tokio::sync::Notify,
}

impl Hooks {
    /// Webhooks to Fly's API at `fly_api_base` (e.g. `https://api.fly.io`),
    /// signed with `secret`; HTTPS checks the server against the Mozilla
    /// roots (`webpki-roots`).
    pub fn new(fly_api_base: &str, secret: &[u8]) -> Hooks {
        Hooks::with_client(
            fly_api_base,
            secret,
            crate::fetch::Client::new(ATTEMPT_TIMEOUT),
        )
    }

    /// [`Hooks::new`], trusting `roots` for HTTPS.
    pub fn with_roots(fly_api_base: &str, secret: &[u8], roots: rustls::RootCertStore) -> Hooks {
        Hooks::with_client(
            fly_api_base,
            secret,
            crate::fetch::Client::with_roots(roots, ATTEMPT_TIMEOUT),
        )
    }

    fn with_client(fly_api_base: &str, secret: &[u8], client: crate::fetch::Client) -> Hooks {
        Hooks {
            url: format!(
                "{}/api/hooks/extensions/{PROVIDER}",
                fly_api_base.trim_end_matches('/')
            ),
            secret: secret.to_vec(),
            client,
            wake: tokio::sync::Notify::new(),
        }
    }

    /// The signed body of one attempt at `hook`.
    pub fn body(&self, hook: &Webhook, now: i64, nonce: &str) -> Vec<u8> {
        let resource: serde_json::Value =
            serde_json::from_str(&hook.resource).unwrap_or(serde_json::Value::Null);
        serde_json::json!({
            "timestamp": now,
            "nonce": nonce,
            "url": self.url,
            "action": hook.action,
            "resource": resource,
        })
        .to_string()
        .into_bytes()
    }

    /// Sends one attempt; Ok when Fly answered 2xx.
    pub async fn post(&self, body: Vec<u8>) -> Result<(), HookError> {
        let signature = crate::sign::sign(&self.secret, &body);
        let headers = [
            ("content-type", "application/json"),
            ("x-signature", signature.as_str()),
        ];
        self.client
            .send("POST", &self.url, &headers, body)
            .await?
            .success(&self.url)
            .map(|_| ())
    }
}

/// How long the outbox keeps a webhook Fly took: 30 days.
pub const KEEP_SENT_SECS: i64 = 30 * 86_400;

/// The wait before attempt `attempts + 1` of a webhook that failed
/// `attempts` times (1, 2, 4, ... seconds, at most [`MAX_BACKOFF_SECS`]).
pub fn backoff_secs(attempts: u32) -> i64 {
    1i64.checked_shl(attempts.min(30))
        .unwrap_or(MAX_BACKOFF_SECS)
        .min(MAX_BACKOFF_SECS)
}

use crate::unix_now as now;

/// Sends the outbox's due webhooks, oldest first, for ever: woken when one
/// is queued, and every second for retries.
pub async fn run(api: Arc<crate::api::Api>) {
    let (store, hooks) = (&api.store, &api.hooks);
    let mut pruned_at = 0;
    loop {
        if now() - pruned_at >= 3600 {
            pruned_at = now();
            match store.lock().prune_sent_webhooks(pruned_at - KEEP_SENT_SECS) {
                Ok(n) if n > 0 => tracing::debug!("forgot {n} webhooks sent long ago"),
                Ok(_) => {}
                Err(e) => tracing::warn!("pruning the webhook outbox: {e}"),
            }
        }
        let due = store.lock().due_webhooks(now(), 32);
        match due {
            Ok(due) => {
                for hook in due {
                    deliver(store, hooks, &hook).await;
                }
            }
            Err(e) => tracing::warn!("reading the webhook outbox: {e}"),
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), hooks.wake.notified()).await;
    }
}

async fn deliver(store: &parking_lot::Mutex<Store>, hooks: &Hooks, hook: &Webhook) {
    let nonce = match crate::tokens::new_token() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("webhook {}: no nonce: {e}", hook.id);
            return;
        }
    };
    let t = now();
    let result = hooks.post(hooks.body(hook, t, &nonce)).await;
    let t = now();
    let stored = match &result {
        Ok(()) => {
            tracing::info!(id = hook.id, action = %hook.action, "webhook delivered");
            store.lock().webhook_sent(hook.id, t)
        }
        Err(e) => {
            let wait = backoff_secs(hook.attempts);
            tracing::warn!(
                id = hook.id,
                action = %hook.action,
                attempt = hook.attempts + 1,
                "webhook to {} failed: {e}; again in {wait} s",
                hooks.url
            );
            store
                .lock()
                .webhook_failed(hook.id, t + wait, &e.to_string())
        }
    };
    if let Err(e) = stored {
        tracing::warn!("recording webhook {}: {e}", hook.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-request HTTPS server with a certificate for `localhost`:
    /// answers `status`, hands over the request it got.
    async fn https_once(
        status: u16,
    ) -> (u16, rustls::RootCertStore, tokio::task::JoinHandle<Vec<u8>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().clone();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der.clone()).unwrap();
        let pkey = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der], pkey)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // The head, then as many body bytes as it announces.
            loop {
                let n = tls.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
                assert!(n > 0, "the request ended early");
            }
            let answer =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno");
            tls.write_all(answer.as_bytes()).await.unwrap();
            tls.shutdown().await.ok();
            got
        });
        (port, roots, server)
    }

    #[tokio::test]
    async fn webhooks_go_over_https_signed() {
        let (port, roots, server) = https_once(200).await;
        let hooks = Hooks::with_roots(&format!("https://localhost:{port}"), b"k", roots);
        hooks.post(b"{\"action\":\"x\"}".to_vec()).await.unwrap();
        let got = String::from_utf8(server.await.unwrap()).unwrap();
        assert!(
            got.starts_with("POST /api/hooks/extensions/anykv HTTP/1.1\r\n"),
            "{got}"
        );
        let sig = crate::sign::sign(b"k", b"{\"action\":\"x\"}");
        assert!(got.contains(&format!("x-signature: {sig}\r\n")), "{got}");

        // A refusal is an error with Fly's status; a server that the
        // roots do not vouch for is never sent the webhook.
        let (port, roots, _server) = https_once(500).await;
        let hooks = Hooks::with_roots(&format!("https://localhost:{port}"), b"k", roots);
        let e = hooks.post(b"{}".to_vec()).await.unwrap_err();
        assert!(matches!(e, HookError::Refused(_, 500, _)), "{e}");
        let (port, _, _server) = https_once(200).await;
        let hooks = Hooks::new(&format!("https://localhost:{port}"), b"k");
        let e = hooks.post(b"{}".to_vec()).await.unwrap_err();
        assert!(matches!(e, HookError::Tls(..)), "{e}");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let waits: Vec<i64> = (0..12).map(backoff_secs).collect();
        assert_eq!(&waits[..5], &[1, 2, 4, 8, 16]);
        assert_eq!(waits[10], MAX_BACKOFF_SECS);
        assert_eq!(backoff_secs(u32::MAX), MAX_BACKOFF_SECS);
    }

    #[test]
    fn the_body_is_signed_for_flys_hook_url() {
        let hooks = Hooks::new("https://api.fly.io/", b"hook-secret");
        assert_eq!(hooks.url, "https://api.fly.io/api/hooks/extensions/anykv");
        let hook = Webhook {
            id: 1,
            action: "resource.deleted".into(),
            resource: r#"{"id":"e1","status":"deleted"}"#.into(),
            attempts: 0,
        };
        let body = hooks.body(&hook, 1_700_000_000, "n1");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["action"], "resource.deleted");
        assert_eq!(v["resource"]["status"], "deleted");
        assert_eq!(v["url"], hooks.url);
        assert_eq!(v["timestamp"], 1_700_000_000);
        // What Fly checks: the signature over the raw body, the url, the
        // timestamp window and the nonce, as the sidecar checks Fly's.
        let verifier = crate::sign::Verifier::new(b"hook-secret", "https://api.fly.io", 300);
        let req = crate::sign::Request {
            method: "POST",
            path: "/api/hooks/extensions/anykv",
            query: "",
            body: &body,
            signature: Some(&crate::sign::sign(b"hook-secret", &body)),
        };
        let mut nonces = crate::sign::MemoryNonces::new(300);
        assert!(verifier.verify(&req, 1_700_000_000, &mut nonces).is_ok());
    }
}
