//! The cluster as `anykv regions` sees it: one node's HTTP admin API
//! (the metrics port, `GET /cluster` and `/admin/tenants/...`), which
//! every node serves for the whole cluster.
//!
//! Only the fields scaling needs are read, each with a default, so a node
//! of a newer or older version still answers usefully.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// A member of the cluster (a data node, or a router).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Member {
    pub machine: String,
    #[serde(default)]
    pub region: String,
    /// `alive`, `suspect` or `down`.
    #[serde(default)]
    pub state: String,
    /// The node's start time (Unix ms; one more for each rejoin after it
    /// was declared down).
    #[serde(default)]
    pub incarnation: u64,
    #[serde(default)]
    pub meta: Option<MemberMeta>,
}

/// The part of a member's gossip metadata scaling reads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct MemberMeta {
    /// `store` for a data node, `router` for a router.
    #[serde(default)]
    pub roles: Vec<String>,
}

impl Member {
    /// A router (`anykv node --router`, another Fly app): it holds no
    /// data, and a region's routers are not its data nodes.
    pub fn is_router(&self) -> bool {
        self.meta
            .as_ref()
            .is_some_and(|m| !m.roles.iter().any(|r| r == "store"))
    }
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
    /// Whether a replica of it in `region` has reached `offset`.
    pub fn caught_up_in(&self, region: &str, offset: u64) -> bool {
        self.replicas
            .iter()
            .any(|c| c.region == region && c.offset.is_some_and(|o| o >= offset))
    }

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
    /// The region of member `machine`.
    pub fn region_of(&self, machine: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.machine == machine)
            .map(|m| m.region.as_str())
    }

    /// Live data nodes of `region` (routers are not counted).
    pub fn alive_in(&self, region: &str) -> Vec<&Member> {
        self.members
            .iter()
            .filter(|m| m.region == region && m.state == "alive" && !m.is_router())
            .collect()
    }

    /// Databases (by name) with a copy on one of `nodes`.
    pub fn with_copies_on(&self, nodes: &[String]) -> Vec<String> {
        self.tenants
            .iter()
            .filter(|t| t.nodes().iter().any(|n| nodes.contains(n)))
            .map(|t| t.name.clone())
            .collect()
    }
}

/// Why the cluster's admin API could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no node's admin API answered ({0})")]
    Unreachable(String),
    #[error("the node's admin API answered HTTP {status} to {what}: {message}")]
    Refused {
        what: String,
        status: u16,
        message: String,
    },
    #[error("the node's admin API sent an unexpected answer to {what}: {message}")]
    Decode { what: String, message: String },
}

/// The cluster's admin API as scaling uses it: the sidecar's client
/// ([`crate::cluster::Cluster`]: nodes asked in order, the next when one
/// does not answer, e.g. a node the run itself stopped), with a budget
/// long enough for a move and no cap that a large cluster view meets.
pub struct ClusterApi {
    api: crate::cluster::Cluster,
}

impl ClusterApi {
    pub fn new(addr: &str, token: &str) -> ClusterApi {
        ClusterApi::with_nodes(vec![addr.to_string()], token)
    }

    /// Any of `addrs` (at least one), asked in this order, will do.
    pub fn with_nodes(addrs: Vec<String>, token: &str) -> ClusterApi {
        ClusterApi {
            api: crate::cluster::Cluster::new(addrs, token.to_string())
                .with_limits(Duration::from_secs(30), 256 << 20),
        }
    }

    /// `method path` with `body`: the answer's JSON, or why there is none.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClusterError> {
        let what = format!("{method} {path}");
        let body = body.map(Value::to_string).unwrap_or_default();
        let (status, text) = self
            .api
            .request(method, path, &body)
            .await
            .map_err(|e| match e {
                crate::cluster::ClusterError::Unreachable(why) => ClusterError::Unreachable(why),
                crate::cluster::ClusterError::Refused { status, body } => ClusterError::Refused {
                    what: what.clone(),
                    status,
                    message: body,
                },
            })?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| text.trim().to_string());
            return Err(ClusterError::Refused {
                what,
                status,
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
        self.change_read_regions(id, |primary, regions| {
            if primary == Some(region) || regions.iter().any(|r| r.as_str() == Some(region)) {
                return false;
            }
            regions.push(region.into());
            true
        })
        .await
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
        self.change_read_regions(id, |_, regions| {
            let before = regions.len();
            regions.retain(|r| r.as_str() != Some(region));
            regions.len() != before
        })
        .await
    }

    /// Sends database `id`'s entry back with its read regions changed by
    /// `change` (given the primary region and the read regions; true when
    /// it changed them), one version up; nothing is sent when it did not.
    async fn change_read_regions(
        &self,
        id: u64,
        change: impl FnOnce(Option<&str>, &mut Vec<Value>) -> bool,
    ) -> Result<(), ClusterError> {
        let mut e = self.entry(id).await?;
        let primary = e["primary_region"].as_str().map(str::to_string);
        let Some(regions) = e["read_regions"].as_array_mut() else {
            return Err(ClusterError::Decode {
                what: format!("GET /admin/tenants/{id}/entry"),
                message: "no read_regions array".into(),
            });
        };
        if !change(primary.as_deref(), regions) {
            return Ok(());
        }
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
                {"machine": "m3", "region": "cdg", "state": "down"},
                {"machine": "r1", "region": "cdg", "state": "alive",
                 "meta": {"roles": ["router"], "build": "x"}},
                {"machine": "m4", "region": "syd", "state": "alive",
                 "meta": {"roles": ["store"]}}
            ],
            "tenants": [
                {"id": 1, "name": "a", "primary": "m1", "primary_region": "iad",
                 "read_regions": ["cdg"], "replicas": [{"node": "m2", "region": "cdg", "offset": 5}]},
                {"id": 2, "name": "b", "primary": "m1", "replicas": []}
            ],
            "controllers": []
        });
        let s: State = serde_json::from_value(v).expect("decodes");
        // A router is no data node of its region.
        assert_eq!(s.alive_in("cdg").len(), 1);
        assert_eq!(s.alive_in("syd").len(), 1);
        let cdg = ["m2".to_string(), "m3".to_string()];
        assert_eq!(s.with_copies_on(&cdg), vec!["a".to_string()]);
        assert_eq!(s.with_copies_on(&["m1".to_string()]).len(), 2);
        assert!(s.tenants[1].read_regions.is_empty());
    }
}
