//! The cluster as `anykv regions` sees it: one node's HTTP admin API
//! (the metrics port, `GET /cluster` and `/admin/tenants/...`), which
//! every node serves for the whole cluster.
//!
//! Only the fields scaling needs are read, each with a default, so a node
//! of a newer or older version still answers usefully.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::fetch::{Client, FetchError};

/// A member of the cluster (a data node).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Member {
    pub machine: String,
    #[serde(default)]
    pub region: String,
    /// `alive`, `suspect`, `down`, `left`.
    #[serde(default)]
    pub state: String,
}

/// One copy of a database on a node other than its primary's.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Copy {
    pub node: String,
    #[serde(default)]
    pub region: String,
    /// Its replication offset, once the node reported one.
    #[serde(default)]
    pub offset: Option<u64>,
}

/// A database and where its copies are.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Database {
    pub id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub primary_region: String,
    #[serde(default)]
    pub read_regions: Vec<String>,
    /// The primary's node.
    #[serde(default)]
    pub primary: String,
    /// The primary's offset.
    #[serde(default)]
    pub offset: Option<u64>,
    /// The standby first, then one per read region.
    #[serde(default)]
    pub replicas: Vec<Copy>,
}

impl Database {
    /// Nodes holding a copy of it (the primary's first).
    pub fn nodes(&self) -> Vec<String> {
        std::iter::once(self.primary.clone())
            .filter(|p| !p.is_empty())
            .chain(self.replicas.iter().map(|r| r.node.clone()))
            .collect()
    }
}

/// `GET /cluster`, the parts scaling reads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct State {
    #[serde(default)]
    pub members: Vec<Member>,
    #[serde(default)]
    pub tenants: Vec<Database>,
}

impl State {
    /// Live members of `region`.
    pub fn alive_in(&self, region: &str) -> Vec<&Member> {
        self.members
            .iter()
            .filter(|m| m.region == region && m.state == "alive")
            .collect()
    }

    /// Databases with a copy on a node of `region`, by name.
    pub fn with_copies_in(&self, region: &str) -> Vec<String> {
        let in_region = |node: &str| {
            self.members
                .iter()
                .any(|m| m.machine == node && m.region == region)
        };
        self.tenants
            .iter()
            .filter(|t| t.nodes().iter().any(|n| in_region(n)))
            .map(|t| t.name.clone())
            .collect()
    }
}

/// Why the cluster's admin API could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("the node's admin API at {addr}: {source}")]
    Http { addr: String, source: FetchError },
    #[error("the node's admin API answered HTTP {status} to {what}: {message}")]
    Refused {
        what: String,
        status: u16,
        message: String,
    },
    #[error("the node's admin API sent an unexpected answer to {what}: {message}")]
    Decode { what: String, message: String },
}

/// A node's admin API; with several nodes' addresses, the next one is
/// asked when one does not answer (a node the run itself stopped).
pub struct ClusterApi {
    http: Client,
    /// `host:port` of nodes' metrics/HTTP endpoints, in preference order.
    addrs: Vec<String>,
    /// The one that answered last.
    current: AtomicUsize,
    token: String,
}

impl ClusterApi {
    pub fn new(addr: &str, token: &str) -> ClusterApi {
        ClusterApi::with_nodes(vec![addr.to_string()], token)
    }

    /// Any of `addrs` (at least one) will do.
    pub fn with_nodes(addrs: Vec<String>, token: &str) -> ClusterApi {
        ClusterApi {
            http: Client::new(Duration::from_secs(30)),
            addrs,
            current: AtomicUsize::new(0),
            token: token.to_string(),
        }
    }

    /// [`ClusterApi::call_one`] on the node that answered last, then on
    /// the others while a node cannot be reached.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClusterError> {
        let n = self.addrs.len().max(1);
        let first = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for k in 0..n {
            let i = (first + k) % n;
            let Some(addr) = self.addrs.get(i) else { break };
            match self.call_one(addr, method, path, body).await {
                Err(e @ ClusterError::Http { .. }) => last = Some(e),
                other => {
                    self.current.store(i, Ordering::Relaxed);
                    return other;
                }
            }
        }
        Err(last.unwrap_or_else(|| ClusterError::Decode {
            what: format!("{method} {path}"),
            message: "no node address to ask".into(),
        }))
    }

    async fn call_one(
        &self,
        addr: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClusterError> {
        let url = format!("http://{addr}{path}");
        let auth = format!("Bearer {}", self.token);
        let mut headers = vec![("authorization", auth.as_str())];
        let bytes = match body {
            Some(b) => {
                headers.push(("content-type", "application/json"));
                b.to_string().into_bytes()
            }
            None => Vec::new(),
        };
        let a = self
            .http
            .send(method, &url, &headers, bytes)
            .await
            .map_err(|source| ClusterError::Http {
                addr: addr.to_string(),
                source,
            })?;
        let what = format!("{method} {path}");
        let text = String::from_utf8_lossy(&a.body).into_owned();
        if !(200..300).contains(&a.status) {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| text.trim().to_string());
            return Err(ClusterError::Refused {
                what,
                status: a.status,
                message,
            });
        }
        serde_json::from_str(&text).map_err(|e| ClusterError::Decode {
            what,
            message: e.to_string(),
        })
    }

    /// The members and databases, as the node sees them now.
    pub async fn state(&self) -> Result<State, ClusterError> {
        let v = self.call("GET", "/cluster", None).await?;
        serde_json::from_value(v).map_err(|e| ClusterError::Decode {
            what: "GET /cluster".into(),
            message: e.to_string(),
        })
    }

    /// Database `id`'s catalog entry, whole (a change sends it back whole).
    pub async fn entry(&self, id: u64) -> Result<Value, ClusterError> {
        self.call("GET", &format!("/admin/tenants/{id}/entry"), None)
            .await
    }

    /// Writes database `id`'s entry (its `version` one above the
    /// catalog's); the answer says how far it got (200: applied everywhere,
    /// 202: still going).
    pub async fn put_entry(&self, id: u64, entry: &Value) -> Result<Value, ClusterError> {
        self.call("PUT", &format!("/admin/tenants/{id}"), Some(entry))
            .await
    }

    /// Adds `region` to database `id`'s read regions (nothing to do when
    /// it is one, or its primary region).
    pub async fn add_read_region(&self, id: u64, region: &str) -> Result<(), ClusterError> {
        let mut e = self.entry(id).await?;
        if e["primary_region"].as_str() == Some(region) {
            return Ok(());
        }
        let Some(regions) = e["read_regions"].as_array_mut() else {
            return Err(ClusterError::Decode {
                what: format!("GET /admin/tenants/{id}/entry"),
                message: "no read_regions array".into(),
            });
        };
        if regions.iter().any(|r| r.as_str() == Some(region)) {
            return Ok(());
        }
        regions.push(region.into());
        e["version"] = (e["version"].as_u64().unwrap_or(0) + 1).into();
        self.put_entry(id, &e).await.map(drop)
    }

    /// Moves database `id`'s primary to its replica in region `to`, with
    /// nothing acknowledged lost (the node holds writes meanwhile).
    pub async fn move_primary(&self, id: u64, to: &str) -> Result<Value, ClusterError> {
        let body = serde_json::json!({ "to": to });
        self.call("POST", &format!("/admin/tenants/{id}/move"), Some(&body))
            .await
    }

    /// Takes `region` out of database `id`'s read regions (nothing to do
    /// when it is not one).
    pub async fn drop_read_region(&self, id: u64, region: &str) -> Result<(), ClusterError> {
        let mut e = self.entry(id).await?;
        let Some(regions) = e["read_regions"].as_array() else {
            return Err(ClusterError::Decode {
                what: format!("GET /admin/tenants/{id}/entry"),
                message: "no read_regions array".into(),
            });
        };
        let kept: Vec<Value> = regions
            .iter()
            .filter(|r| r.as_str() != Some(region))
            .cloned()
            .collect();
        if kept.len() == regions.len() {
            return Ok(());
        }
        e["read_regions"] = Value::Array(kept);
        e["version"] = (e["version"].as_u64().unwrap_or(0) + 1).into();
        self.put_entry(id, &e).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_view_reads_with_defaults_and_finds_copies_by_region() {
        let v = serde_json::json!({
            "me": "m1",
            "members": [
                {"machine": "m1", "region": "iad", "state": "alive", "addr": "[::1]:1"},
                {"machine": "m2", "region": "cdg", "state": "alive"},
                {"machine": "m3", "region": "cdg", "state": "down"}
            ],
            "tenants": [
                {"id": 1, "name": "a", "primary": "m1", "primary_region": "iad",
                 "read_regions": ["cdg"], "replicas": [{"node": "m2", "region": "cdg", "offset": 5}]},
                {"id": 2, "name": "b", "primary": "m1", "replicas": []}
            ],
            "controllers": []
        });
        let s: State = serde_json::from_value(v).expect("decodes");
        assert_eq!(s.alive_in("cdg").len(), 1);
        assert_eq!(s.with_copies_in("cdg"), vec!["a".to_string()]);
        assert_eq!(s.with_copies_in("iad").len(), 2);
        assert!(s.tenants[1].read_regions.is_empty());
    }
}
