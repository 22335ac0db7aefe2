//! The cluster's tenant catalog and role records, as state-table rows, and
//! where each tenant lives (rendezvous placement).
//!
//! - [`TenantEntry`] is one database as the sidecar describes it (the JSON
//!   of `PUT /admin/tenants/{id}`), stored in [`Table::Tenants`] under the
//!   origin [`CATALOG_ORIGIN`] with the version the sidecar assigned (the
//!   catalog's own counter; never a node's clock). A deletion is a
//!   tombstone row with a newer version, so it spreads like any change.
//! - [`RoleRecord`] says which node is a tenant's primary and which its
//!   standby and read-region replicas, in [`Table::Roles`]. It is written
//!   when the tenant is created and rewritten by the tenant's primary when
//!   a replica's node leaves; a membership change alone never moves the
//!   primary (electing a new one is the controller's job, with epochs).
//! - [`place`] proposes those nodes by rendezvous (highest random weight)
//!   hashing over a region's live nodes: every node computes the same
//!   answer from the same view, and a node leaving moves only the tenants
//!   it held. [`repair`] keeps a record's nodes while they are alive and
//!   replaces only those that are gone.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::state::{Row, Table, Version};

/// Origin of every catalog row (whichever node the sidecar called).
pub const CATALOG_ORIGIN: &str = "catalog";
/// Origin of every role record.
pub const ROLES_ORIGIN: &str = "roles";

/// Durability: when a write is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// After the primary's own write (and its fsync where configured).
    #[default]
    Async,
    /// Once the in-region standby has it too.
    Region,
}

/// One database as the catalog's writer (the sidecar) describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantEntry {
    pub id: u64,
    /// What `AUTH <name> <token>` takes (1-63 of a-z 0-9 - _).
    pub name: String,
    /// SHA-256 of each valid token, hex (two during a rotation).
    pub token_sha256: Vec<String>,
    #[serde(default)]
    pub org: String,
    pub primary_region: String,
    #[serde(default)]
    pub read_regions: Vec<String>,
    /// Bytes (0: the node's `maxmemory`).
    #[serde(default)]
    pub maxmemory: u64,
    #[serde(default)]
    pub maxmemory_policy: Option<String>,
    #[serde(default)]
    pub maxclients: u64,
    #[serde(default)]
    pub ops_per_sec: u64,
    #[serde(default)]
    pub durability: Durability,
    /// `ryw` (read-your-writes, the default when empty), `strong` or
    /// `nearest`: what the router promises (its business, see
    /// docs/ROUTING.md).
    #[serde(default)]
    pub consistency: String,
    /// The catalog's counter for this change; a change with a version not
    /// above the one held is ignored.
    pub version: u64,
}

/// Why an entry is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("id must be 1 or more (0 is the operator's database)")]
    Id,
    #[error("invalid name '{0}' (1-63 of a-z 0-9 - _, not 'default')")]
    Name(String),
    #[error("token_sha256 must hold 1 or 2 SHA-256 digests as 64 hex characters")]
    Token,
    #[error("invalid region code '{0}'")]
    Region(String),
    #[error("version must be 1 or more")]
    Version,
    #[error("unknown consistency '{0}' (one of ryw, strong, nearest)")]
    Consistency(String),
}

/// What the router promises a connection (docs/ROUTING.md); empty means
/// the default, `ryw`.
pub const CONSISTENCIES: &[&str] = &["ryw", "strong", "nearest"];

fn valid_region(r: &str) -> bool {
    (2..=8).contains(&r.len())
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl TenantEntry {
    /// Checks everything placement relies on (the store checks
    /// `maxmemory_policy` against its own list).
    pub fn validate(&self) -> Result<(), EntryError> {
        if self.id == 0 {
            return Err(EntryError::Id);
        }
        let n = &self.name;
        if n.is_empty()
            || n.len() > 63
            || n == "default"
            || !n
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(EntryError::Name(n.clone()));
        }
        if self.token_sha256.is_empty()
            || self.token_sha256.len() > 2
            || self.digests().len() != self.token_sha256.len()
        {
            return Err(EntryError::Token);
        }
        for r in std::iter::once(&self.primary_region).chain(&self.read_regions) {
            if !valid_region(r) {
                return Err(EntryError::Region(r.clone()));
            }
        }
        if self.version == 0 {
            return Err(EntryError::Version);
        }
        if !self.consistency.is_empty() && !CONSISTENCIES.contains(&self.consistency.as_str()) {
            return Err(EntryError::Consistency(self.consistency.clone()));
        }
        Ok(())
    }

    /// The token digests as bytes (malformed ones skipped).
    pub fn digests(&self) -> Vec<[u8; 32]> {
        self.token_sha256
            .iter()
            .filter_map(|h| {
                if h.len() != 64 {
                    return None;
                }
                let mut out = [0u8; 32];
                for (i, o) in out.iter_mut().enumerate() {
                    *o = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
                }
                Some(out)
            })
            .collect()
    }

    /// The catalog row for this entry.
    pub fn row(&self) -> Row {
        Row {
            table: Table::Tenants,
            key: self.id.to_string(),
            origin: CATALOG_ORIGIN.into(),
            version: Version {
                life: 0,
                seq: self.version,
            },
            value: serde_json::to_vec(self).ok(),
        }
    }
}

/// The tombstone that deletes tenant `id` at catalog version `version`.
pub fn tombstone(id: u64, version: u64) -> Row {
    Row {
        table: Table::Tenants,
        key: id.to_string(),
        origin: CATALOG_ORIGIN.into(),
        version: Version {
            life: 0,
            seq: version,
        },
        value: None,
    }
}

/// Which nodes hold a tenant, by machine id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRecord {
    pub tenant: u64,
    /// Bumped only when the primary changes (failover, next issue).
    pub epoch: u64,
    pub primary: String,
    /// The in-region replica `durability: region` waits for.
    pub standby: Option<String>,
    /// One replica per read region: region → machine.
    pub replicas: BTreeMap<String, String>,
    /// Bumped by every other change of the record (a replica moved).
    pub seq: u64,
    /// The standby, once its primary reported it has completed its sync
    /// (streaming, acknowledging) since it became the standby: only such a
    /// standby is promoted (docs/FAILOVER.md). Cleared whenever the
    /// standby changes.
    #[serde(default)]
    pub in_sync: Option<String>,
    /// Set by a move of the primary to another region (the old primary
    /// publishes it the moment it stops writing): the new primary takes
    /// writes only once it has applied the old primary's stream up to
    /// `offset`. Holds only at `epoch` (a later record ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<Handoff>,
    /// A node of the primary region named, ahead of a planned handoff, to
    /// be the standby after it (`Controller::prepare_handoff`): it holds a
    /// replica from then on, so it is in sync when the handoff makes it
    /// the new primary's standby, and `region` writes wait only for its
    /// link to move rather than for a sync. The next promotion takes it
    /// as the standby and clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_standby: Option<String>,
}

/// Where the old primary of a moved database stopped (see
/// [`RoleRecord::handoff`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// The record's epoch when the move published it.
    pub epoch: u64,
    /// The old primary's replication offset, which stands still from then.
    pub offset: u64,
}

impl RoleRecord {
    pub fn row(&self) -> Row {
        Row {
            table: Table::Roles,
            key: self.tenant.to_string(),
            origin: ROLES_ORIGIN.into(),
            version: Version {
                life: self.epoch,
                seq: self.seq,
            },
            value: serde_json::to_vec(self).ok(),
        }
    }

    pub fn from_row(r: &Row) -> Option<RoleRecord> {
        serde_json::from_slice(r.value.as_deref()?).ok()
    }

    /// Every node that holds the tenant: primary, standby, replicas.
    pub fn holders(&self) -> Vec<&str> {
        let mut v = vec![self.primary.as_str()];
        v.extend(self.standby.as_deref());
        v.extend(self.replicas.values().map(String::as_str));
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The offset the primary must have applied before it takes writes:
    /// the handoff of a move, at this record's epoch only.
    pub fn handoff_offset(&self) -> Option<u64> {
        self.handoff
            .filter(|h| h.epoch == self.epoch)
            .map(|h| h.offset)
    }

    /// What `machine` is for this tenant.
    pub fn role_of(&self, machine: &str) -> Option<Held> {
        if self.primary == machine {
            Some(Held::Primary)
        } else if self.standby.as_deref() == Some(machine)
            || self.next_standby.as_deref() == Some(machine)
            || self.replicas.values().any(|m| m == machine)
        {
            Some(Held::Replica)
        } else {
            None
        }
    }
}

/// A tenant as the cluster view shows it (`/cluster`'s `tenants`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantView {
    /// The catalog name (what `AUTH <name> <token>` takes).
    pub name: String,
    pub id: u64,
    pub epoch: u64,
    /// Machine ids, as in `members[].machine`.
    pub primary: String,
    pub standby: Option<String>,
    /// The standby once it is in sync (it may be promoted).
    #[serde(default)]
    pub in_sync: Option<String>,
    /// The primary's offset.
    pub offset: Option<u64>,
    /// The standby first, then one per read region.
    pub replicas: Vec<ReplicaView>,
    /// The catalog's regions for it (what `anykv regions` plans by).
    #[serde(default)]
    pub primary_region: String,
    #[serde(default)]
    pub read_regions: Vec<String>,
    /// The catalog entry's version (an operator's change of its regions
    /// moves it up: the sidecar adopts newer ones).
    #[serde(default)]
    pub version: u64,
}

/// One replica of a tenant in the cluster view.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaView {
    pub node: String,
    pub region: String,
    pub offset: Option<u64>,
    pub lag_ms: Option<i64>,
}

/// The tenants as a table for people (`anykv cluster status`).
pub fn tenants_table(tenants: &[TenantView]) -> String {
    let mut out = format!(
        "{:<20} {:>5} {:<16} {:<16} {:>12}  {}\n",
        "TENANT", "EPOCH", "PRIMARY", "STANDBY", "OFFSET", "REPLICAS (node region offset lag)"
    );
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for t in tenants {
        let replicas: Vec<String> = t
            .replicas
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {}",
                    r.node,
                    r.region,
                    opt(r.offset.map(|o| o.to_string())),
                    opt(r.lag_ms.map(|l| format!("{l}ms")))
                )
            })
            .collect();
        out.push_str(&format!(
            "{:<20} {:>5} {:<16} {:<16} {:>12}  {}\n",
            t.name,
            t.epoch,
            t.primary,
            opt(t.standby.clone()),
            opt(t.offset.map(|o| o.to_string())),
            replicas.join(", ")
        ));
    }
    out
}

/// How a node holds a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    Primary,
    /// The standby or a read-region replica: it follows the primary.
    Replica,
}

/// Rendezvous weight of `machine` for `tenant` (FNV-1a over both, then a
/// 64-bit finaliser: stable across builds and platforms, since every node
/// must compute the same placement).
fn weight(tenant: u64, machine: &str) -> u64 {
    use crate::identity::{fnv1a, FNV_OFFSET};
    let mut h = fnv1a(fnv1a(FNV_OFFSET, &tenant.to_le_bytes()), machine.as_bytes());
    // splitmix64's finaliser spreads nearby inputs.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// `candidates` ordered by rendezvous weight for `tenant`, best first.
pub fn ranked<'a>(tenant: u64, candidates: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = candidates.to_vec();
    v.sort_by(|a, b| weight(tenant, b).cmp(&weight(tenant, a)).then(a.cmp(b)));
    v.dedup();
    v
}

/// The live store nodes of the cluster by region: region → machine ids.
pub type LiveNodes = BTreeMap<String, Vec<String>>;

/// A new tenant's record: primary and standby are the two best nodes of
/// its primary region, each read region gets its best node. `None` when
/// the primary region has no live node.
pub fn place(entry: &TenantEntry, live: &LiveNodes) -> Option<RoleRecord> {
    let in_region = |r: &str| -> Vec<&str> {
        live.get(r)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    };
    let home = ranked(entry.id, &in_region(&entry.primary_region));
    let primary = home.first()?.to_string();
    let standby = home.get(1).map(|s| s.to_string());
    let mut replicas = BTreeMap::new();
    for r in &entry.read_regions {
        if r == &entry.primary_region {
            continue;
        }
        if let Some(m) = ranked(entry.id, &in_region(r)).first() {
            replicas.insert(r.clone(), m.to_string());
        }
    }
    Some(RoleRecord {
        tenant: entry.id,
        epoch: 1,
        primary,
        standby,
        replicas,
        seq: 0,
        in_sync: None,
        handoff: None,
        next_standby: None,
    })
}

/// The record with the standby and read-region replicas whose nodes are
/// `gone` replaced (and missing ones filled, e.g. a read region added),
/// each by the best live node not already holding the tenant; other nodes
/// keep their place. `gone` is the caller's judgement, not merely "not in
/// `live`": a node that just started has heard of few members yet, and a
/// holder it does not know of is not gone. The primary is never changed
/// here. `None` when nothing changes.
pub fn repair(
    rec: &RoleRecord,
    entry: &TenantEntry,
    live: &LiveNodes,
    gone: impl Fn(&str) -> bool,
) -> Option<RoleRecord> {
    let alive = |m: &str| !gone(m);
    let mut next = rec.clone();
    let taken = |r: &RoleRecord, m: &str| r.holders().contains(&m);
    let best = |r: &RoleRecord, region: &str| -> Option<String> {
        let c: Vec<&str> = live
            .get(region)
            .map(|v| {
                v.iter()
                    .map(String::as_str)
                    .filter(|m| !taken(r, m))
                    .collect()
            })
            .unwrap_or_default();
        ranked(entry.id, &c).first().map(|s| s.to_string())
    };
    // A holder that is gone is replaced only when another node can take
    // its place: with none, the record keeps it (it resumes by partial
    // resync when it comes back, instead of the tenant leaving the region
    // and returning with a full sync).
    if next.standby.as_deref().is_none_or(|m| !alive(m)) {
        if let Some(m) = best(&next, &entry.primary_region) {
            next.standby = Some(m);
        }
    }
    next.replicas
        .retain(|r, _| entry.read_regions.contains(r) && r != &entry.primary_region);
    for r in &entry.read_regions {
        if r == &entry.primary_region || next.replicas.get(r).is_some_and(|m| alive(m)) {
            continue;
        }
        if let Some(m) = best(&next, r) {
            next.replicas.insert(r.clone(), m);
        }
    }
    if next.standby != rec.standby {
        next.in_sync = None;
    }
    // The node named for after a planned handoff: dropped once it is gone,
    // or holds another place in the record now (this repair may have made
    // it the standby: it had a warm copy).
    if let Some(n) = next.next_standby.clone() {
        if !alive(&n)
            || n == next.primary
            || next.standby.as_deref() == Some(n.as_str())
            || next.replicas.values().any(|m| *m == n)
        {
            next.next_standby = None;
        }
    }
    if next == *rec {
        return None;
    }
    next.seq += 1;
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64) -> TenantEntry {
        TenantEntry {
            id,
            name: format!("t{id}"),
            token_sha256: vec!["ab".repeat(32)],
            org: "o".into(),
            primary_region: "iad".into(),
            read_regions: vec!["cdg".into(), "syd".into()],
            maxmemory: 0,
            maxmemory_policy: None,
            maxclients: 0,
            ops_per_sec: 0,
            durability: Durability::Region,
            consistency: String::new(),
            version: 1,
        }
    }

    fn live(spec: &[(&str, &[&str])]) -> LiveNodes {
        spec.iter()
            .map(|(r, ms)| (r.to_string(), ms.iter().map(|m| m.to_string()).collect()))
            .collect()
    }

    #[test]
    fn entries_are_validated() {
        assert_eq!(entry(1).validate(), Ok(()));
        let mut e = entry(0);
        assert_eq!(e.validate(), Err(EntryError::Id));
        e = entry(1);
        e.name = "Bad Name".into();
        assert!(matches!(e.validate(), Err(EntryError::Name(_))));
        e = entry(1);
        e.token_sha256 = vec!["zz".into()];
        assert_eq!(e.validate(), Err(EntryError::Token));
        e = entry(1);
        e.read_regions.push("NOPE!".into());
        assert!(matches!(e.validate(), Err(EntryError::Region(_))));
        e = entry(1);
        e.version = 0;
        assert_eq!(e.validate(), Err(EntryError::Version));
        e = entry(1);
        e.consistency = "eventual".into();
        assert!(matches!(e.validate(), Err(EntryError::Consistency(_))));
        for c in CONSISTENCIES {
            e.consistency = (*c).into();
            assert_eq!(e.validate(), Ok(()));
        }
        // The JSON the sidecar sends round-trips through the row.
        let row = entry(7).row();
        let back: TenantEntry = serde_json::from_slice(&row.value.unwrap()).unwrap();
        assert_eq!(back, entry(7));
    }

    #[test]
    fn placement_uses_the_primary_region_twice_and_each_read_region_once() {
        let l = live(&[
            ("iad", &["a", "b", "c"]),
            ("cdg", &["d"]),
            ("syd", &["e", "f"]),
        ]);
        let r = place(&entry(42), &l).unwrap();
        assert!(["a", "b", "c"].contains(&r.primary.as_str()));
        let sb = r.standby.clone().unwrap();
        assert!(["a", "b", "c"].contains(&sb.as_str()) && sb != r.primary);
        assert_eq!(r.replicas["cdg"], "d");
        assert!(["e", "f"].contains(&r.replicas["syd"].as_str()));
        // Every node computes the same answer, whatever order it lists.
        let l2 = live(&[
            ("syd", &["f", "e"]),
            ("iad", &["c", "a", "b"]),
            ("cdg", &["d"]),
        ]);
        assert_eq!(place(&entry(42), &l2).unwrap(), r);
        // No live node in the primary region: no placement.
        assert!(place(&entry(42), &live(&[("cdg", &["d"])])).is_none());
    }

    #[test]
    fn tenants_spread_over_a_region() {
        let l = live(&[("iad", &["a", "b", "c", "d"])]);
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for id in 1..=400 {
            *count
                .entry(place(&entry(id), &l).unwrap().primary)
                .or_default() += 1;
        }
        assert_eq!(count.len(), 4, "{count:?}");
        assert!(
            count.values().all(|&n| (60..=140).contains(&n)),
            "{count:?}"
        );
    }

    /// Gone: not in `l` (a view that has settled).
    fn absent(l: &LiveNodes) -> impl Fn(&str) -> bool + '_ {
        |m| !l.values().any(|v| v.iter().any(|x| x == m))
    }

    #[test]
    fn a_holder_not_known_yet_is_not_replaced() {
        let all = live(&[("iad", &["a", "b", "c"]), ("cdg", &["d", "e"])]);
        let mut e = entry(3);
        e.read_regions = vec!["cdg".into()];
        let rec = place(&e, &all).unwrap();
        // Just started: this node knows only itself and the primary.
        let early = live(&[("iad", &[rec.primary.as_str()]), ("cdg", &[])]);
        assert_eq!(repair(&rec, &e, &early, |_| false), None);
        // The standby is known to be down: replaced by the third iad node.
        let sb = rec.standby.clone().unwrap();
        let rest: Vec<&str> = ["a", "b", "c"].into_iter().filter(|m| *m != sb).collect();
        let l = live(&[("iad", &rest), ("cdg", &["d", "e"])]);
        let next = repair(&rec, &e, &l, |m| m == sb).expect("repaired");
        assert_ne!(next.standby.as_deref(), Some(sb.as_str()));
        assert_eq!(next.in_sync, None);
        assert_eq!(next.replicas, rec.replicas);
    }

    #[test]
    fn a_next_standby_is_dropped_once_gone_or_made_the_standby() {
        let all = live(&[("iad", &["a", "b", "c", "g"]), ("cdg", &["d", "e"])]);
        let mut e = entry(5);
        e.read_regions = vec!["cdg".into()];
        let rec = place(&e, &all).unwrap();
        let spare: Vec<&str> = ["a", "b", "c", "g"]
            .into_iter()
            .filter(|m| *m != rec.primary && Some(*m) != rec.standby.as_deref())
            .collect();
        let named = RoleRecord {
            next_standby: Some(spare[0].to_string()),
            ..rec.clone()
        };
        // Alive and nothing else in the record: kept.
        assert_eq!(repair(&named, &e, &all, |_| false), None);
        // Gone: dropped.
        let next = repair(&named, &e, &all, |m| m == spare[0]).expect("repaired");
        assert_eq!(next.next_standby, None);
        assert_eq!(next.seq, named.seq + 1);
        // The standby gone and the named node (the only other one left)
        // taking its place: no longer named for later.
        let sb = rec.standby.clone().unwrap();
        let left: Vec<&str> = [rec.primary.as_str(), spare[0]].to_vec();
        let l = live(&[("iad", &left), ("cdg", &["d", "e"])]);
        let next = repair(&named, &e, &l, |m| m == sb || m == spare[1]).expect("repaired");
        assert_eq!(next.standby.as_deref(), Some(spare[0]));
        assert_eq!(next.next_standby, None);
    }

    #[test]
    fn a_leaving_node_moves_only_what_it_held_and_never_the_primary() {
        let before = live(&[("iad", &["a", "b", "c"]), ("cdg", &["d", "e", "f"])]);
        let mut moved = 0;
        for id in 1..=200 {
            let mut e = entry(id);
            e.read_regions = vec!["cdg".into()];
            let rec = place(&e, &before).unwrap();
            // A node joins: nothing moves.
            let joined = live(&[
                ("iad", &["a", "b", "c", "x"]),
                ("cdg", &["d", "e", "f", "y"]),
            ]);
            assert_eq!(repair(&rec, &e, &joined, absent(&joined)), None);
            // "d" leaves: only the tenants whose cdg replica it was move.
            let left = live(&[("iad", &["a", "b", "c"]), ("cdg", &["e", "f"])]);
            match repair(&rec, &e, &left, absent(&left)) {
                None => assert_ne!(rec.replicas["cdg"], "d"),
                Some(next) => {
                    assert_eq!(rec.replicas["cdg"], "d");
                    assert_ne!(next.replicas["cdg"], "d");
                    assert_eq!(next.primary, rec.primary);
                    assert_eq!(next.standby, rec.standby);
                    assert_eq!((next.epoch, next.seq), (rec.epoch, rec.seq + 1));
                    moved += 1;
                }
            }
            // The only cdg node leaves: nothing can take its place, so the
            // record keeps it (it resumes when it is back).
            let alone = live(&[("iad", &["a", "b", "c"]), ("cdg", &[])]);
            let mut single = rec.clone();
            single.replicas.insert("cdg".into(), "d".into());
            assert_eq!(repair(&single, &e, &alone, absent(&alone)), None);
            // The primary's node leaves: the record keeps it (failover is
            // the controller's decision), the standby stays.
            let primary_gone: Vec<String> = ["a", "b", "c"]
                .iter()
                .filter(|m| **m != rec.primary)
                .map(|m| m.to_string())
                .collect();
            let mut l = before.clone();
            l.insert("iad".into(), primary_gone);
            if let Some(next) = repair(&rec, &e, &l, absent(&l)) {
                assert_eq!(next.primary, rec.primary);
            }
        }
        assert!((30..=110).contains(&moved), "{moved}");
    }
}
