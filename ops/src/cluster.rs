//! The cluster's admin API, as the sidecar calls it: the sidecar is the
//! tenant catalog's only writer (`PUT`/`DELETE /admin/tenants/{id}` with
//! the admin token, docs/REPLICATION.md). Any node's admin endpoint takes
//! a change and answers once the cluster has applied it; the sidecar tries
//! the endpoints it was given in order. Plain HTTP/1.1 on the private
//! network: one small request at a time needs no client library.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one admin request may take (the admin API answers once the
/// change is applied, well within this).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
/// Largest admin answer read.
const MAX_ANSWER: usize = 1 << 20;

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no admin endpoint answered ({0})")]
    Unreachable(String),
    #[error("the cluster refused the change: HTTP {status}: {body}")]
    Refused { status: u16, body: String },
}

/// The cluster's admin endpoints (`host:port`) and token.
#[derive(Debug, Clone)]
pub struct Cluster {
    endpoints: Vec<String>,
    token: String,
}

impl Cluster {
    pub fn new(endpoints: Vec<String>, token: String) -> Cluster {
        Cluster { endpoints, token }
    }

    /// Creates or changes tenant `id` (`entry` is its catalog row, with a
    /// version above the catalog's). A 409 for version 1 means the tenant
    /// exists already (a provisioning retried after the cluster took it):
    /// success.
    pub async fn put_tenant(&self, id: u64, entry: &serde_json::Value) -> Result<(), ClusterError> {
        let (status, body) = self
            .request("PUT", &format!("/admin/tenants/{id}"), &entry.to_string())
            .await?;
        let first = entry.get("version").and_then(|v| v.as_u64()) == Some(1);
        match status {
            200 => Ok(()),
            409 if first => Ok(()),
            _ => Err(ClusterError::Refused { status, body }),
        }
    }

    /// Deletes tenant `id` (`version` above the catalog's): its token stops
    /// working on every node.
    pub async fn delete_tenant(&self, id: u64, version: u64) -> Result<(), ClusterError> {
        let body = serde_json::json!({ "version": version }).to_string();
        let (status, body) = self
            .request("DELETE", &format!("/admin/tenants/{id}"), &body)
            .await?;
        match status {
            200 | 404 => Ok(()),
            _ => Err(ClusterError::Refused { status, body }),
        }
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<(u16, String), ClusterError> {
        let mut why = Vec::new();
        for ep in &self.endpoints {
            match tokio::time::timeout(REQUEST_TIMEOUT, self.once(ep, method, path, body)).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(e)) => why.push(format!("{ep}: {e}")),
                Err(_) => why.push(format!("{ep}: timed out")),
            }
        }
        Err(ClusterError::Unreachable(why.join("; ")))
    }

    async fn once(
        &self,
        ep: &str,
        method: &str,
        path: &str,
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(ep).await?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {ep}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.token,
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        (&mut s)
            .take(MAX_ANSWER as u64)
            .read_to_end(&mut buf)
            .await?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other("not an HTTP answer"))?;
        Ok((status, body.to_string()))
    }
}
