//! The cluster's admin API, as the sidecar calls it: the sidecar is the
//! tenant catalog's only writer (`PUT`/`DELETE /admin/tenants/{id}` with
//! the admin token, docs/REPLICATION.md). Any node's admin endpoint takes
//! a change and answers once the cluster has applied it; the sidecar tries
//! the endpoints it was given in order. Plain HTTP/1.1 on the private
//! network: one small request at a time needs no client library.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long an admin call may take, every endpoint tried included (Fly
/// wants a provisioning answer well under 5 s; the admin API answers
/// within about a second: applied, or 202 while nodes catch up).
const CALL_BUDGET: Duration = Duration::from_secs(3);
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

/// How far a catalog change got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Every live node that holds the database applied it (200), or, for
    /// a retried creation, the catalog had it already (409 at version 1).
    Everywhere,
    /// In the catalog; not every node applied it yet (202: a region with
    /// no node, nodes catching up).
    Pending,
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
    /// exists already: a provisioning retried after the cluster took it
    /// (the sidecar is the catalog's only writer, so it is ours).
    pub async fn put_tenant(
        &self,
        id: u64,
        entry: &serde_json::Value,
    ) -> Result<Applied, ClusterError> {
        let (status, body) = self
            .request("PUT", &format!("/admin/tenants/{id}"), &entry.to_string())
            .await?;
        let first = entry.get("version").and_then(|v| v.as_u64()) == Some(1);
        match status {
            200 => Ok(Applied::Everywhere),
            202 => Ok(Applied::Pending),
            409 if first => Ok(Applied::Everywhere),
            _ => Err(ClusterError::Refused { status, body }),
        }
    }

    /// Deletes tenant `id` (`version` above the catalog's): its token stops
    /// working on every node. Gone already (404), or deleted at this
    /// version by an earlier try whose answer was lost (409), is success;
    /// 202: in the catalog, nodes still applying it.
    pub async fn delete_tenant(&self, id: u64, version: u64) -> Result<Applied, ClusterError> {
        let body = serde_json::json!({ "version": version }).to_string();
        let (status, body) = self
            .request("DELETE", &format!("/admin/tenants/{id}"), &body)
            .await?;
        match status {
            200 | 404 | 409 => Ok(Applied::Everywhere),
            202 => Ok(Applied::Pending),
            _ => Err(ClusterError::Refused { status, body }),
        }
    }

    /// How far tenant `id`'s current catalog version got: applied by every
    /// node that holds it, with a copy in every region it asks for (200),
    /// or not yet (202).
    pub async fn tenant_state(&self, id: u64) -> Result<Applied, ClusterError> {
        let (status, body) = self
            .request("GET", &format!("/admin/tenants/{id}"), "")
            .await?;
        match status {
            200 => Ok(Applied::Everywhere),
            202 => Ok(Applied::Pending),
            _ => Err(ClusterError::Refused { status, body }),
        }
    }

    /// `GET path` from the first admin endpoint that answers.
    pub async fn get(&self, path: &str) -> Result<(u16, String), ClusterError> {
        self.request("GET", path, "").await
    }

    /// `GET path` from node `addr`'s HTTP port (not necessarily one of the
    /// admin endpoints: a member `/cluster` named).
    pub async fn get_at(&self, addr: &str, path: &str) -> Result<(u16, String), ClusterError> {
        self.at(addr, "GET", path).await
    }

    /// `DELETE path` on node `addr`'s HTTP port.
    pub async fn delete_at(&self, addr: &str, path: &str) -> Result<(u16, String), ClusterError> {
        self.at(addr, "DELETE", path).await
    }

    /// `POST path` (no body) to node `addr`'s HTTP port.
    pub async fn post_at(&self, addr: &str, path: &str) -> Result<(u16, String), ClusterError> {
        self.at(addr, "POST", path).await
    }

    /// One call to node `addr`, within the call budget.
    async fn at(
        &self,
        addr: &str,
        method: &str,
        path: &str,
    ) -> Result<(u16, String), ClusterError> {
        match tokio::time::timeout(CALL_BUDGET, self.once(addr, method, path, "")).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(ClusterError::Unreachable(format!("{addr}: {e}"))),
            Err(_) => Err(ClusterError::Unreachable(format!("{addr}: timed out"))),
        }
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<(u16, String), ClusterError> {
        let mut why = Vec::new();
        let deadline = tokio::time::Instant::now() + CALL_BUDGET;
        for ep in &self.endpoints {
            if tokio::time::Instant::now() >= deadline {
                why.push(format!("{ep}: not tried, out of time"));
                continue;
            }
            match tokio::time::timeout_at(deadline, self.once(ep, method, path, body)).await {
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
