//! Versioned state tables: what nodes tell each other beyond "alive".
//!
//! Every row has one *origin* (the node that writes it — a node writes its
//! own metadata; later the sidecar's tenant catalog and the role records
//! have theirs) and a [`Version`] that only grows at that origin. A node's
//! *digest* is, per origin, the highest version it holds. Digests are tiny,
//! so they ride SWIM's piggyback (as foca custom broadcasts); rows are not,
//! so they move over QUIC when digests differ, the way Corrosion does:
//! a sync session sends the peer every row of an origin newer than the
//! peer's digest entry for that origin. Single writer per origin means no
//! conflicts to resolve: newer version wins, rows of one origin arrive as
//! a prefix-complete set.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;

/// Version of a row at its origin: `(life, seq)`, compared in that order.
/// `life` is the origin's identity incarnation (its start time), so a
/// restarted origin's rows supersede its previous life's without it having
/// to remember a counter.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Version {
    pub life: u64,
    pub seq: u64,
}

/// Which table a row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Table {
    /// [`NodeMeta`], keyed by machine id; origin = that machine.
    Nodes,
    /// The tenant catalog (filled by the tenancy work).
    Tenants,
    /// Per-tenant role records (filled by the failover work).
    Roles,
}

/// One replicated row. `value` is `None` for a deletion (a tombstone, so
/// the deletion itself replicates).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub table: Table,
    pub key: String,
    pub origin: String,
    pub version: Version,
    pub value: Option<Vec<u8>>,
}

/// Load figures a node publishes about itself (slow-changing; refreshed
/// every few seconds, not per command).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    pub connected_clients: u64,
    pub ops_per_sec: u64,
    pub used_memory: u64,
}

/// The role of a node that holds data (`anykv node`).
pub const ROLE_STORE: &str = "store";
/// The role of a router (`anykv node --router`): it holds no data.
pub const ROLE_ROUTER: &str = "router";

/// What a node says about itself, replicated to every node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeMeta {
    pub machine: String,
    pub region: String,
    pub gossip_addr: Option<SocketAddr>,
    /// Where the store answers RESP (6PN address, port 6379 on Fly).
    pub redis_addr: Option<SocketAddr>,
    /// Roles the node plays: `store`, `router`, `witness`, …
    pub roles: Vec<String>,
    pub load: Load,
    /// anykv version string.
    pub build: String,
    /// The tenant catalog version this node's store has applied.
    pub catalog_version: u64,
    /// The tenants this node's store serves, each at the catalog version
    /// it applied: `(id, version)`, by id (the admin call waits on these).
    pub tenant_versions: Vec<(u64, u64)>,
    /// The tenants this node holds, with their replication position
    /// (refreshed with `load`, every few seconds).
    pub tenants: Vec<HeldTenant>,
    /// What the node sees of its region's controller (None: it runs none).
    pub controller: Option<crate::controller::ControllerMeta>,
    /// Where its HTTP port answers (metrics, `/cluster`, the admin API):
    /// an admin call that must run on another node is passed on there.
    pub http_addr: Option<SocketAddr>,
}

impl NodeMeta {
    /// Whether the node plays [`ROLE_STORE`] (holds data).
    pub fn holds_data(&self) -> bool {
        self.roles.iter().any(|r| r == ROLE_STORE)
    }
}

/// One tenant a node holds, as its metadata reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldTenant {
    pub id: u64,
    /// Its log's offset on this node.
    pub offset: u64,
    /// As a replica: how far behind its primary, in ms (None: primary, or
    /// not measured yet).
    pub lag_ms: Option<i64>,
}

/// Per-origin highest version.
pub type Digest = BTreeMap<String, Version>;

/// The rows this node holds.
#[derive(Debug, Default)]
pub struct StateStore {
    rows: HashMap<(Table, String), Row>,
    digest: Digest,
    /// XOR of [`row_hash`] over the rows of the shared tables.
    shared_sum: u64,
}

impl Table {
    /// Tables whose origin is written at more than one node (the tenant
    /// catalog: the sidecar calls any node; role records: each tenant's
    /// primary). Their rows of one origin need not arrive as a prefix, so
    /// a per-origin version alone cannot tell what a peer lacks: sync also
    /// compares [`StateStore::shared_sum`] and, when it differs, sends
    /// these tables whole (they are small: a row per tenant).
    pub fn is_shared(self) -> bool {
        matches!(self, Table::Tenants | Table::Roles)
    }
}

/// A row's identity, version and value, hashed (FNV-1a; stable across
/// builds, since peers compare sums).
fn row_hash(r: &Row) -> u64 {
    let mut h = crate::identity::FNV_OFFSET;
    let mut eat = |b: &[u8]| h = crate::identity::fnv1a(h, b);
    eat(&[r.table as u8]);
    eat(r.key.as_bytes());
    eat(&[0xff]);
    eat(&r.version.life.to_le_bytes());
    eat(&r.version.seq.to_le_bytes());
    match &r.value {
        Some(v) => {
            eat(&[1]);
            eat(v);
        }
        None => eat(&[0]),
    }
    h
}

impl StateStore {
    /// Applies a row if it is newer than what is held; returns whether it
    /// changed anything.
    pub fn apply(&mut self, row: Row) -> bool {
        let slot = (row.table, row.key.clone());
        if let Some(old) = self.rows.get(&slot) {
            // A different origin taking over a key (e.g. a machine id
            // reused by a new life) is ordered by version too.
            // Two writers of a shared table may write the same version
            // with different values (two nodes creating one role record
            // from different views): every node keeps the same one.
            let wins = row.version > old.version
                || (row.version == old.version
                    && row.table.is_shared()
                    && row_hash(&row) > row_hash(old));
            if !wins {
                return false;
            }
        }
        let d = self.digest.entry(row.origin.clone()).or_default();
        if row.version > *d {
            *d = row.version;
        }
        if row.table.is_shared() {
            self.shared_sum ^= row_hash(&row);
        }
        if let Some(old) = self.rows.insert(slot, row) {
            if old.table.is_shared() {
                self.shared_sum ^= row_hash(&old);
            }
        }
        true
    }

    /// Sum over the shared tables' rows: equal sums, same rows (as far as
    /// a 64-bit hash tells).
    pub fn shared_sum(&self) -> u64 {
        self.shared_sum
    }

    /// What a peer lacks: [`StateStore::newer_than`] its digest, plus every
    /// row of the shared tables when its sum differs from ours.
    pub fn missing_at(&self, peer: &Digest, peer_sum: u64) -> Vec<Row> {
        let mut out = self.newer_than(peer);
        if peer_sum != self.shared_sum {
            let have: std::collections::HashSet<(Table, String)> =
                out.iter().map(|r| (r.table, r.key.clone())).collect();
            let mut extra: Vec<Row> = self
                .rows
                .values()
                .filter(|r| r.table.is_shared() && !have.contains(&(r.table, r.key.clone())))
                .cloned()
                .collect();
            extra.sort_by(|a, b| (a.table, &a.key).cmp(&(b.table, &b.key)));
            out.extend(extra);
        }
        out
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Highest version held from `origin`.
    pub fn version_of(&self, origin: &str) -> Version {
        self.digest.get(origin).copied().unwrap_or_default()
    }

    /// Rows the holder of `peer` lacks: those of each origin newer than the
    /// peer's entry for it.
    pub fn newer_than(&self, peer: &Digest) -> Vec<Row> {
        let mut out: Vec<Row> = self
            .rows
            .values()
            .filter(|r| peer.get(&r.origin).is_none_or(|v| r.version > *v))
            .cloned()
            .collect();
        out.sort_by(|a, b| (&a.origin, a.version).cmp(&(&b.origin, b.version)));
        out
    }

    pub fn get(&self, table: Table, key: &str) -> Option<&Row> {
        self.rows.get(&(table, key.to_string()))
    }

    pub fn rows(&self, table: Table) -> impl Iterator<Item = &Row> {
        self.rows.values().filter(move |r| r.table == table)
    }

    /// Decoded node metadata, skipping tombstones and undecodable rows.
    pub fn nodes(&self) -> Vec<NodeMeta> {
        let mut v: Vec<NodeMeta> = self
            .rows(Table::Nodes)
            .filter_map(|r| r.value.as_deref())
            .filter_map(|b| postcard::from_bytes(b).ok())
            .collect();
        v.sort_by(|a, b| a.machine.cmp(&b.machine));
        v
    }
}

/// The digest entry gossiped through SWIM: "origin has reached version".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestItem {
    pub origin: String,
    pub version: Version,
}

impl foca::Invalidates for DigestItem {
    /// A newer version of the same origin makes the older one pointless to
    /// keep spreading.
    fn invalidates(&self, other: &Self) -> bool {
        self.origin == other.origin && self.version >= other.version
    }
}

/// Errors decoding a custom broadcast (counted and dropped by the node).
#[derive(Debug, thiserror::Error)]
#[error("undecodable state digest broadcast: {0}")]
pub struct BroadcastError(#[from] postcard::Error);

/// foca's side of digest dissemination. It keeps spreading an item while it
/// is news (newer than anything seen from that origin) and queues a fetch
/// for whoever drives the node. foca owns the handler, so the state is
/// shared: clones see the same queue (keep one clone to drain it).
#[derive(Debug, Default, Clone)]
pub struct DigestHandler {
    inner: Arc<Mutex<DigestInner>>,
}

#[derive(Debug, Default)]
struct DigestInner {
    /// Highest version seen announced per origin (may be ahead of the
    /// store until the fetch lands).
    seen: HashMap<String, Version>,
    /// Origins announced newer than what was seen before, oldest first.
    wanted: Vec<DigestItem>,
}

impl DigestHandler {
    /// Marks a version as seen (our own writes, rows that arrived by sync),
    /// so its broadcast is not news any more.
    pub fn observe(&self, origin: &str, version: Version) {
        let mut inner = self.inner.lock();
        let v = inner.seen.entry(origin.to_string()).or_default();
        if version > *v {
            *v = version;
        }
    }

    /// Takes the queue of announced versions that are news.
    pub fn take_wanted(&self) -> Vec<DigestItem> {
        std::mem::take(&mut self.inner.lock().wanted)
    }
}

impl foca::BroadcastHandler<crate::NodeId> for DigestHandler {
    type Key = DigestItem;
    type Error = BroadcastError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&crate::NodeId>,
    ) -> Result<Option<DigestItem>, BroadcastError> {
        let item: DigestItem = postcard::from_bytes(data)?;
        let mut inner = self.inner.lock();
        let seen = inner.seen.entry(item.origin.clone()).or_default();
        if item.version <= *seen {
            return Ok(None);
        }
        *seen = item.version;
        inner.wanted.push(item.clone());
        Ok(Some(item))
    }
}

/// Encodes a digest item for `Foca::add_broadcast`.
pub fn encode_item(item: &DigestItem) -> Vec<u8> {
    postcard::to_allocvec(item).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::{BroadcastHandler, Invalidates};

    fn row(origin: &str, key: &str, seq: u64) -> Row {
        Row {
            table: Table::Nodes,
            key: key.into(),
            origin: origin.into(),
            version: Version { life: 1, seq },
            value: Some(vec![seq as u8]),
        }
    }

    #[test]
    fn newer_wins_and_digest_tracks_origins() {
        let mut s = StateStore::default();
        assert!(s.apply(row("a", "a", 2)));
        assert!(!s.apply(row("a", "a", 1)));
        assert!(!s.apply(row("a", "a", 2)));
        assert!(s.apply(row("b", "b", 5)));
        assert_eq!(s.version_of("a"), Version { life: 1, seq: 2 });
        let mut peer = Digest::new();
        peer.insert("a".into(), Version { life: 1, seq: 2 });
        let missing = s.newer_than(&peer);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].origin, "b");
        // A new life beats any seq of the old one.
        let mut r = row("a", "a", 0);
        r.version.life = 2;
        assert!(s.apply(r));
    }

    #[test]
    fn two_stores_converge_by_exchanging_newer_rows() {
        let mut x = StateStore::default();
        let mut y = StateStore::default();
        x.apply(row("a", "a", 3));
        y.apply(row("b", "b", 1));
        y.apply(row("a", "a", 1));
        for r in x.newer_than(y.digest()) {
            y.apply(r);
        }
        for r in y.newer_than(x.digest()) {
            x.apply(r);
        }
        assert_eq!(x.digest(), y.digest());
        assert_eq!(x.get(Table::Nodes, "a"), y.get(Table::Nodes, "a"));
    }

    #[test]
    fn handler_spreads_news_only() {
        let mut h = DigestHandler::default();
        let drain = h.clone();
        let item = DigestItem {
            origin: "a".into(),
            version: Version { life: 1, seq: 1 },
        };
        let data = encode_item(&item);
        assert!(h.receive_item(&data, None).unwrap().is_some());
        assert!(h.receive_item(&data, None).unwrap().is_none());
        assert_eq!(drain.take_wanted().len(), 1);
        assert!(drain.take_wanted().is_empty());
        assert!(h.receive_item(b"\xff\xff\xff", None).is_err());
        let newer = DigestItem {
            origin: "a".into(),
            version: Version { life: 1, seq: 2 },
        };
        assert!(newer.invalidates(&item));
        assert!(!item.invalidates(&newer));
    }
}
