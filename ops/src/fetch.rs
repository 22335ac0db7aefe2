//! The sidecar's outbound HTTP: webhooks to Fly ([`crate::webhook`]) and
//! the OAuth calls of single sign-on ([`crate::sso`]). One request per
//! connection (HTTP/1.1, hyper's client half), HTTPS checked against the
//! given roots (the Mozilla roots in production): a few calls a minute
//! need no pool.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Largest answer body read.
const MAX_ANSWER: usize = 1 << 20;

/// Why a request got no answer (an answer with any status is not an
/// error here: the caller decides).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("URL {0:?}: expected http:// or https://host[:port]/path")]
    BadUrl(String),
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS with {0}: {1}")]
    Tls(String, String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("{0} answered HTTP {1}: {2}")]
    Refused(String, u16, String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    /// The answer when it is a 2xx, else [`FetchError::Refused`] naming
    /// `url` (the body's start as the reason).
    pub fn success(self, url: &str) -> Result<Answer, FetchError> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(512)]).into_owned();
        Err(FetchError::Refused(url.to_string(), self.status, text))
    }
}

/// An HTTP(S) client.
pub struct Client {
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
}

impl Client {
    /// HTTPS servers must be vouched for by the Mozilla roots.
    pub fn new(timeout: Duration) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Client::with_roots(roots, timeout)
    }

    /// HTTPS servers must be vouched for by `roots`.
    pub fn with_roots(roots: rustls::RootCertStore, timeout: Duration) -> Client {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        let cfg = match cfg {
            Ok(c) => c,
            // The ring provider supports the default protocol versions.
            Err(e) => unreachable!("rustls defaults with ring: {e}"),
        };
        Client {
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            timeout,
        }
    }

    /// `method url` with `headers` and `body`, within the client's timeout.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, FetchError> {
        match tokio::time::timeout(self.timeout, self.send_once(method, url, headers, body)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout(self.timeout)),
        }
    }

    async fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, FetchError> {
        let bad = || FetchError::BadUrl(url.to_string());
        let uri: hyper::Uri = url.parse().map_err(|_| bad())?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let authority = uri.authority().ok_or_else(bad)?.as_str().to_string();
        let host = uri.host().ok_or_else(bad)?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let addr = format!("{authority} ({host}:{port})");
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| FetchError::Connect(addr.clone(), e))?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", authority);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| FetchError::Http(e.to_string()))?;
        if tls {
            let name = rustls::pki_types::ServerName::try_from(host).map_err(|_| bad())?;
            let stream = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| FetchError::Tls(addr.clone(), e.to_string()))?;
            exchange(TokioIo::new(stream), req).await
        } else {
            exchange(TokioIo::new(tcp), req).await
        }
    }
}

/// One HTTP/1.1 request on `io`, its answer (the body's first
/// [`MAX_ANSWER`] bytes).
async fn exchange<I>(io: I, req: hyper::Request<Full<Bytes>>) -> Result<Answer, FetchError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let http = |e: hyper::Error| FetchError::Http(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(http)?;
    let driver = tokio::spawn(conn);
    let out = async {
        let resp = sender.send_request(req).await.map_err(http)?;
        let status = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?
            .to_bytes();
        Ok(Answer { status, body })
    }
    .await;
    driver.abort();
    out
}
