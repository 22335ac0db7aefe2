//! Replication: the parts of a tenant's replication state that the store
//! core needs today, shaped on Redis's model so the replication protocol
//! (PSYNC, backlog, REPLCONF) can build on them.
//!
//! - [`Role`]: a primary decides expiry and eviction itself; a replica
//!   only applies its primary's effects, hides keys whose TTL passed and
//!   waits for the primary's `DEL`.
//! - [`ReplIds`]: the replication id and the previous one (`replid2`, valid
//!   up to `second_offset`), so a promoted replica can still serve partial
//!   resyncs to replicas of its old primary. The offset itself is the
//!   propagation log's ([`crate::proplog::PropLog::offset`]). Both are saved
//!   with every snapshot and restored at start.
//! - [`apply`]: the apply mode, which runs effects decided elsewhere (the
//!   log at start, a primary's stream) and appends their bytes to the log
//!   as they are, so offsets match byte for byte.

pub mod apply;
pub mod failover;
pub mod fullsync;
pub mod lag;
pub mod primary;
pub mod replica;

/// What a tenant is in its replication group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

/// Length of a replication id (hex characters), as Redis's
/// `CONFIG_RUN_ID_SIZE`.
pub const REPLID_LEN: usize = 40;

/// The id Redis shows for "no previous replication id".
pub const NO_REPLID: &str = "0000000000000000000000000000000000000000";

/// A tenant's replication ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplIds {
    /// The history this tenant's log belongs to.
    pub replid: String,
    /// The history it continued from (after a promotion), or [`NO_REPLID`].
    pub replid2: String,
    /// Offsets of `replid2` up to (excluding) this one are the same bytes
    /// as `replid`'s (Redis's `second_replid_offset`); -1 when unset.
    pub second_offset: i64,
}

impl ReplIds {
    /// A new history: a random id, no previous one.
    pub fn random() -> Self {
        ReplIds {
            replid: random_replid(),
            replid2: NO_REPLID.to_string(),
            second_offset: -1,
        }
    }

    /// Starts a new history at `offset` (a replica promoted to primary):
    /// the current id becomes `replid2`, valid up to `offset + 1`, as Redis's
    /// `shiftReplicationId`, so replicas of the old history can continue.
    pub fn shift(&mut self, offset: u64) {
        self.replid2 = std::mem::replace(&mut self.replid, random_replid());
        self.second_offset = offset as i64 + 1;
    }

    /// Whether `id` at `offset` names a point of this tenant's history
    /// (Redis's PSYNC check: the current id, or the previous one up to
    /// where the histories split).
    pub fn knows(&self, id: &str, offset: u64) -> bool {
        id == self.replid
            || (id == self.replid2
                && self.second_offset >= 0
                && offset as i64 <= self.second_offset)
    }

    /// The ids as snapshot metadata (restored by [`ReplIds::from_aux`]).
    pub fn to_aux(&self) -> [(String, String); 3] {
        [
            ("repl-id".into(), self.replid.clone()),
            ("repl-id2".into(), self.replid2.clone()),
            ("repl-second-offset".into(), self.second_offset.to_string()),
        ]
    }

    /// Reads the ids back from snapshot metadata; None when the snapshot
    /// has none (written before they were saved) or they are malformed.
    pub fn from_aux(aux: &[(String, String)]) -> Option<Self> {
        let get = |k: &str| aux.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let valid = |s: &str| s.len() == REPLID_LEN && s.bytes().all(|b| b.is_ascii_hexdigit());
        let replid = get("repl-id").filter(|s| valid(s))?;
        let replid2 = get("repl-id2").filter(|s| valid(s))?;
        let second_offset = get("repl-second-offset")?.parse().ok()?;
        Some(ReplIds {
            replid: replid.to_string(),
            replid2: replid2.to_string(),
            second_offset,
        })
    }
}

/// 40 random hex characters (160 bits), as Redis's `getRandomHexChars`.
pub fn random_replid() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..REPLID_LEN)
        .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_snapshot_metadata() {
        let mut ids = ReplIds::random();
        ids.shift(1234);
        let aux: Vec<(String, String)> = ids.to_aux().into();
        assert_eq!(ReplIds::from_aux(&aux), Some(ids.clone()));
        assert_eq!(ReplIds::from_aux(&[]), None);
        let mut bad = aux.clone();
        bad[0].1 = "xyz".into();
        assert_eq!(ReplIds::from_aux(&bad), None);
    }

    #[test]
    fn a_shift_keeps_the_old_history_up_to_the_split() {
        let mut ids = ReplIds::random();
        let old = ids.replid.clone();
        ids.shift(100);
        assert_ne!(ids.replid, old);
        assert_eq!(ids.replid2, old);
        assert!(ids.knows(&old, 101));
        assert!(!ids.knows(&old, 102));
        assert!(ids.knows(&ids.replid.clone(), 5000));
        assert!(!ids.knows(NO_REPLID, 0));
    }
}
