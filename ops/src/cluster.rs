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
    /// How long one call may take, every endpoint tried included.
    budget: Duration,
    /// Largest answer read.
    max_answer: usize,
}

impl Cluster {
    pub fn new(endpoints: Vec<String>, token: String) -> Cluster {
        Cluster {
            endpoints,
            token,
            budget: CALL_BUDGET,
            max_answer: MAX_ANSWER,
        }
    }

    /// The same endpoints with another call budget and answer limit (an
    /// operator's tool waits longer and reads the whole cluster view).
    pub fn with_limits(mut self, budget: Duration, max_answer: usize) -> Cluster {
        self.budget = budget;
        self.max_answer = max_answer;
        self
    }

    /// Creates or changes tenant `id` (`entry` is its catalog row, with a
    /// version above the catalog's); answers the version it is at. A 409
    /// for version 1 means the tenant exists already: a provisioning
    /// retried after the cluster took it (the sidecar is the catalog's
    /// only writer, so it is ours), whose state is then asked (it may
    /// still wait for a region's first node). A 409 for a later version
    /// means the catalog is ahead of the sidecar's record (a change the
    /// cluster took whose record failed): the change goes in at the
    /// version after the catalog's.
    pub async fn put_tenant(
        &self,
        id: u64,
        entry: &serde_json::Value,
    ) -> Result<(Applied, u64), ClusterError> {
        let mut entry = entry.clone();
        let mut version = entry.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        for _ in 0..2 {
            entry["version"] = version.into();
            let (status, body) = self
                .request("PUT", &format!("/admin/tenants/{id}"), &entry.to_string())
                .await?;
            match status {
                200 => return Ok((Applied::Everywhere, version)),
                202 => return Ok((Applied::Pending, version)),
                409 if version == 1 => return Ok((self.tenant_state(id).await?, version)),
                409 => match self.catalog_version(id).await? {
                    Some(held) if held >= version => version = held + 1,
                    _ => return Err(ClusterError::Refused { status, body }),
                },
                _ => return Err(ClusterError::Refused { status, body }),
            }
        }
        Err(ClusterError::Refused {
            status: 409,
            body: format!("tenant {id}'s catalog version keeps moving; retry"),
        })
    }

    /// Tenant `id`'s catalog entry as the catalog holds it (None: no live
    /// tenant `id`).
    pub async fn entry(&self, id: u64) -> Result<Option<serde_json::Value>, ClusterError> {
        let (status, body) = self
            .request("GET", &format!("/admin/tenants/{id}/entry"), "")
            .await?;
        match status {
            200 => Ok(serde_json::from_str(&body).ok()),
            404 => Ok(None),
            _ => Err(ClusterError::Refused { status, body }),
        }
    }

    /// The version the catalog holds tenant `id` at (None: it has no live
    /// tenant `id`).
    async fn catalog_version(&self, id: u64) -> Result<Option<u64>, ClusterError> {
        let (status, body) = self
            .request("GET", &format!("/admin/tenants/{id}"), "")
            .await?;
        if status == 404 {
            return Ok(None);
        }
        Ok(serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["version"].as_u64()))
    }

    /// Deletes tenant `id` (`version` above the catalog's, as the sidecar
    /// knows it): its token stops working on every node. Gone already
    /// (404) is success. A 409 is success only when the tenant is gone (an
    /// earlier try whose answer was lost deleted it); a tenant the catalog
    /// holds at a newer version than the sidecar recorded (a change the
    /// cluster took whose record failed) is deleted at the version after
    /// that one. 202: in the catalog, nodes still applying it. Answers the
    /// version the deletion is at.
    pub async fn delete_tenant(
        &self,
        id: u64,
        version: u64,
    ) -> Result<(Applied, u64), ClusterError> {
        let mut version = version;
        // At most once more, at the catalog's own version plus one.
        for _ in 0..2 {
            let body = serde_json::json!({ "version": version }).to_string();
            let (status, body) = self
                .request("DELETE", &format!("/admin/tenants/{id}"), &body)
                .await?;
            match status {
                200 | 404 => return Ok((Applied::Everywhere, version)),
                202 => return Ok((Applied::Pending, version)),
                409 => {}
                _ => return Err(ClusterError::Refused { status, body }),
            }
            match self.catalog_version(id).await? {
                None => return Ok((Applied::Everywhere, version)),
                Some(held) if held >= version => version = held + 1,
                Some(_) => return Err(ClusterError::Refused { status, body }),
            }
        }
        Err(ClusterError::Refused {
            status: 409,
            body: format!("tenant {id}'s catalog version keeps moving; retry"),
        })
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
        match tokio::time::timeout(self.budget, self.once(addr, method, path, "")).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(ClusterError::Unreachable(format!("{addr}: {e}"))),
            Err(_) => Err(ClusterError::Unreachable(format!("{addr}: timed out"))),
        }
    }

    /// `method path` with `body` on the first endpoint that answers, in
    /// order, within the call budget: its status and body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<(u16, String), ClusterError> {
        let mut why = Vec::new();
        let deadline = tokio::time::Instant::now() + self.budget;
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
            .take(self.max_answer as u64)
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

/// A scripted admin endpoint for the sidecar's tests.
#[cfg(test)]
pub(crate) mod scripted {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

    /// An admin endpoint answering `script` in order, one answer per
    /// request: (method and path expected, status, body). It records each
    /// request's body.
    pub(crate) async fn admin(
        script: Vec<(&'static str, u16, &'static str)>,
    ) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            for (want, status, body) in script {
                let (s, _) = listener.accept().await.unwrap();
                let mut r = tokio::io::BufReader::new(s);
                let mut line = String::new();
                r.read_line(&mut line).await.unwrap();
                let got: Vec<&str> = line.split_whitespace().take(2).collect();
                assert_eq!(got.join(" "), want);
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).await.unwrap();
                    if h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut b = vec![0; len];
                r.read_exact(&mut b).await.unwrap();
                log.lock().unwrap().push(String::from_utf8(b).unwrap());
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                r.get_mut().write_all(answer.as_bytes()).await.unwrap();
            }
        });
        (addr, seen)
    }
}

#[cfg(test)]
mod tests {
    use super::scripted::admin;
    use super::*;

    fn version_of(body: &str) -> u64 {
        serde_json::from_str::<serde_json::Value>(body).unwrap()["version"]
            .as_u64()
            .unwrap()
    }

    #[tokio::test]
    async fn a_retried_creation_reports_the_tenants_real_state() {
        let (addr, _) = admin(vec![
            (
                "PUT /admin/tenants/7",
                409,
                r#"{"error":"version 1 is not above 2"}"#,
            ),
            (
                "GET /admin/tenants/7",
                202,
                r#"{"version":2,"missing_regions":["syd"]}"#,
            ),
        ])
        .await;
        let c = Cluster::new(vec![addr], "t".into());
        let entry = serde_json::json!({"id": 7, "version": 1});
        assert_eq!(
            c.put_tenant(7, &entry).await.unwrap(),
            (Applied::Pending, 1)
        );
    }

    #[tokio::test]
    async fn a_change_behind_the_catalog_goes_in_after_it() {
        let (addr, seen) = admin(vec![
            ("PUT /admin/tenants/7", 409, r#"{"error":"stale"}"#),
            ("GET /admin/tenants/7", 200, r#"{"version":5}"#),
            ("PUT /admin/tenants/7", 200, r#"{"version":6}"#),
        ])
        .await;
        let c = Cluster::new(vec![addr], "t".into());
        let entry = serde_json::json!({"id": 7, "version": 3});
        assert_eq!(
            c.put_tenant(7, &entry).await.unwrap(),
            (Applied::Everywhere, 6)
        );
        let bodies = seen.lock().unwrap().clone();
        assert_eq!(version_of(&bodies[2]), 6);
    }

    #[tokio::test]
    async fn a_deletion_is_done_only_once_the_tenant_is_gone() {
        // Deleted by an earlier try whose answer was lost.
        let (addr, _) = admin(vec![
            ("DELETE /admin/tenants/7", 409, r#"{"error":"stale"}"#),
            ("GET /admin/tenants/7", 404, r#"{"error":"no tenant 7"}"#),
        ])
        .await;
        let c = Cluster::new(vec![addr], "t".into());
        assert_eq!(
            c.delete_tenant(7, 2).await.unwrap(),
            (Applied::Everywhere, 2)
        );
        // Alive at a version the sidecar never recorded: deleted after it.
        let (addr, seen) = admin(vec![
            ("DELETE /admin/tenants/7", 409, r#"{"error":"stale"}"#),
            ("GET /admin/tenants/7", 200, r#"{"version":4}"#),
            ("DELETE /admin/tenants/7", 200, r#"{"version":5}"#),
        ])
        .await;
        let c = Cluster::new(vec![addr], "t".into());
        assert_eq!(
            c.delete_tenant(7, 2).await.unwrap(),
            (Applied::Everywhere, 5)
        );
        assert_eq!(version_of(&seen.lock().unwrap()[2]), 5);
    }
}
