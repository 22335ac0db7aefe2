//! Leases: how a primary knows it may still act as one, and how the
//! controller knows, in seconds, that it no longer does.
//!
//! Every node of a region with a group asks the group's leader for its
//! lease about three times per lease period. The leader answers with the
//! lease's length and the tenants the node is primary of, at their epochs
//! (from the committed records). The node holds the lease until the time it
//! *sent* the request plus the length minus a drift margin (a monotonic
//! clock): the leader counts from when it *received* it, later, so the
//! node's lease always ends first. A primary takes writes for a tenant only
//! while its lease covers that tenant at the tenant's epoch.
//!
//! The leader keeps the renewals in memory (they are not Raft entries). A
//! primary whose lease lapsed is replaced: the leader commits its
//! tenant's record at epoch + 1 with the standby as primary. A new leader
//! first waits until every lease an earlier leader granted has ended: a
//! grant is made only after a majority confirmed the leader (it heard from
//! it then), and a new leader is elected only once its voters have not
//! heard from the old one for at least the election timeout (openraft's
//! voters refuse before that), so the wait is the lease period less the
//! minimum election timeout (the `credit`). A leader that openraft resumes
//! after a restart (it led when it stopped) was not elected, and waits the
//! whole period.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::catalog::{ranked, RoleRecord};

/// What a node reports of one of its tenants when it renews its lease: as
/// its primary, which replicas are synced; as a replica, whether it lost
/// its data (restarted) and has not completed a sync since.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Synced {
    pub tenant: u64,
    /// Its replicas that completed their sync and stream (machines).
    pub replicas: Vec<String>,
    /// Its writes wait for the standby (durability `region`): the standby
    /// has every acknowledged write even while its link is down, and stays
    /// in sync.
    #[serde(default)]
    pub durable: bool,
    /// The reporting node holds the tenant as a replica and has not
    /// completed a sync since it started: what it acknowledged before may
    /// be gone (a standby acknowledges from memory), so it must not be
    /// promoted until it has.
    #[serde(default)]
    pub restarted: bool,
}

/// A lease the leader granted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub term: u64,
    pub duration_ms: u64,
    /// `(tenant, epoch)` for every tenant the node is primary of.
    pub primaries: Vec<(u64, u64)>,
    /// The tenants the node is the standby of that a planned handoff may
    /// give it now: marked in sync, holding its data (no restart since its
    /// last sync), and reported synced by the primary's last renewal.
    /// None from a leader that predates the list (a rolling upgrade).
    #[serde(default)]
    pub standby_of: Option<Vec<u64>>,
}

/// Not granted: the node asked is not the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("not the controller's leader (leader: {leader:?})")]
pub struct Refused {
    pub leader: Option<String>,
}

/// The margin a node takes off its lease for clocks running at different
/// rates (a fifth: good for 20% of drift).
pub fn margin(lease: Duration) -> Duration {
    lease / 5
}

/// The leader's record of renewals.
#[derive(Debug, Default)]
pub struct Leases {
    /// Time a new leader knows has passed since any earlier grant.
    credit: Duration,
    renewed: HashMap<String, Instant>,
    /// The last log index each node said it applied, when it renewed.
    applied: HashMap<String, u64>,
    /// Tenants whose promotion is being committed, each with the epoch it
    /// replaces.
    promoting: HashMap<u64, u64>,
    /// Per node, as its last renewal said: the tenants it holds as a
    /// replica without having completed a sync since it started.
    unsynced: HashMap<String, Vec<u64>>,
    /// The term this node leads and since when.
    leader_since: Option<(u64, Instant)>,
    /// A leaving leader asked this node to take over (and voted for it):
    /// its next term may begin right after that leader's last grant, so
    /// that term earns no credit.
    taking_over: bool,
    /// The credit of the term this node leads.
    term_credit: Duration,
    /// A term this node led before it restarted: resumed without an
    /// election, it earns no credit.
    resumed: Option<u64>,
    /// When this node (as the leader) named each tenant's next standby for
    /// a planned handoff (see [`Leases::prepared_long_ago`]).
    prepared: HashMap<u64, Instant>,
}

impl Leases {
    /// `credit`: the group's minimum election timeout.
    pub fn new(credit: Duration) -> Leases {
        Leases {
            credit,
            ..Leases::default()
        }
    }

    pub fn renew(&mut self, machine: &str, now: Instant) {
        self.renewed.insert(machine.to_string(), now);
    }

    /// Starts a term as leader: renewals seen under an earlier term are
    /// another leader's business.
    pub fn lead(&mut self, term: u64, now: Instant) {
        if self.leader_since.map(|l| l.0) != Some(term) {
            self.leader_since = Some((term, now));
            self.renewed.clear();
            let resumed = self.resumed.take() == Some(term);
            self.term_credit = if std::mem::take(&mut self.taking_over) || resumed {
                Duration::ZERO
            } else {
                self.credit
            };
        }
    }

    /// Notes that `tenant`'s next standby was named now.
    pub fn note_prepared(&mut self, tenant: u64, now: Instant) {
        self.prepared.insert(tenant, now);
    }

    /// Whether `tenant`'s next standby was named longer than `after` ago
    /// (or before this node began leading, that long ago): a handoff that
    /// follows its prepare does so within the handoff's own timeout, so
    /// one named long ago was left by a handoff that never came (refused,
    /// or the primary stayed), and its copy only costs its node memory.
    pub fn prepared_long_ago(&self, tenant: u64, now: Instant, after: Duration) -> bool {
        let since = self.prepared.get(&tenant).copied().or(self.leading_since());
        since.is_some_and(|t| now.saturating_duration_since(t) > after)
    }

    /// Since when this node leads its current term (None: it does not, or
    /// not yet noted).
    pub fn leading_since(&self) -> Option<Instant> {
        self.leader_since.map(|l| l.1)
    }

    /// A leaving leader asked this node to take over: its election does
    /// not wait out the election timeout (the leader votes for it at
    /// once), so the wait before judging leases is a whole period.
    pub fn take_over(&mut self) {
        self.taking_over = true;
    }

    /// This node led `term` before it restarted, and openraft resumes it
    /// as that term's leader at once: the leases its last run granted may
    /// have been renewed just before it stopped, and no voter waited out
    /// an election timeout since, so that term earns no credit (the wait
    /// before judging leases is a whole period from the restart).
    pub fn resume(&mut self, term: u64) {
        self.resumed = Some(term);
    }

    /// Records what `machine` said it applied.
    pub fn note_applied(&mut self, machine: &str, index: Option<u64>) {
        if let Some(i) = index {
            self.applied.insert(machine.to_string(), i);
        }
    }

    /// Records what `machine` said of its replicas.
    pub fn note_unsynced(&mut self, machine: &str, tenants: Vec<u64>) {
        self.unsynced.insert(machine.to_string(), tenants);
    }

    /// Whether `machine` holds `tenant`'s data as of its last sync: its
    /// last renewal did not list it as unsynced since a restart.
    pub fn holds(&self, machine: &str, tenant: u64) -> bool {
        self.unsynced
            .get(machine)
            .is_none_or(|t| !t.contains(&tenant))
    }

    /// Whether `machine` has said it applied `index`.
    pub fn has_applied(&self, machine: &str, index: u64) -> bool {
        self.applied.get(machine).is_some_and(|i| *i >= index)
    }

    /// A promotion of `tenant` past `epoch` is being committed.
    pub fn begin_promotion(&mut self, tenant: u64, epoch: u64) {
        self.promoting.insert(tenant, epoch);
    }

    pub fn end_promotion(&mut self, tenant: u64) {
        self.promoting.remove(&tenant);
    }

    /// Whether a promotion of `tenant` past `epoch` is being committed:
    /// the primary of that epoch gets no lease for it meanwhile. The new
    /// primary's record (a later epoch) does: it may renew as soon as it
    /// applied the record, before the leader's proposal call returned.
    pub fn promoting(&self, tenant: u64, epoch: u64) -> bool {
        self.promoting.get(&tenant) == Some(&epoch)
    }

    pub fn follow(&mut self) {
        self.leader_since = None;
        self.renewed.clear();
    }

    /// Whether every lease an earlier leader may have granted has ended
    /// (time measured on the lease clock, [`super::clock`], as in
    /// [`Leases::lapsed`]).
    pub fn settled(&self, now: Instant, lease: Duration) -> bool {
        self.leader_since.is_some_and(|(_, t)| {
            super::clock::shown(now.saturating_duration_since(t))
                > lease.saturating_sub(self.term_credit)
        })
    }

    /// Whether `machine` holds no lease any more: not renewed for a whole
    /// period (or never, since this node began to lead).
    pub fn lapsed(&self, machine: &str, now: Instant, lease: Duration) -> bool {
        match self.renewed.get(machine) {
            Some(t) => super::clock::shown(now.saturating_duration_since(*t)) > lease,
            // Not renewed under this leader: its last grant was at least
            // `credit` before this leader began.
            None => self.settled(now, lease),
        }
    }
}

/// `rec` after its primary's lease lapsed: epoch + 1, the standby promoted
/// (only if it is in sync, holds a lease itself, and still `holds` the
/// tenant's data: not restarted since its last sync), and a new standby
/// among `region`'s nodes that hold a lease (`fresh`), by the tenant's
/// ranking. None when no standby can take over: then nothing changes (the
/// operator's forced promotion is a separate command).
pub fn promote(
    rec: &RoleRecord,
    region: &[&str],
    fresh: impl Fn(&str) -> bool,
    holds: impl Fn(&str) -> bool,
) -> Option<RoleRecord> {
    let standby = rec
        .standby
        .as_deref()
        .filter(|s| fresh(s) && holds(s) && rec.in_sync.as_deref() == Some(*s))?;
    // The node a planned handoff warmed up, when it still may be one.
    let next = next_standby(rec, region, &fresh);
    Some(RoleRecord {
        tenant: rec.tenant,
        epoch: rec.epoch + 1,
        primary: standby.to_string(),
        standby: next.map(str::to_string),
        replicas: rec.replicas.clone(),
        seq: 0,
        in_sync: None,
        handoff: None,
        next_standby: None,
    })
}

/// The nodes of `region` that may become `rec`'s next standby: alive with
/// a lease (`fresh`), neither its primary nor its standby, nor a read
/// region's replica.
fn standby_candidates<'a>(
    rec: &RoleRecord,
    region: &[&'a str],
    fresh: &impl Fn(&str) -> bool,
) -> Vec<&'a str> {
    region
        .iter()
        .copied()
        .filter(|m| Some(*m) != rec.standby.as_deref() && *m != rec.primary && fresh(m))
        .filter(|m| !rec.replicas.values().any(|r| r == m))
        .collect()
}

/// The node to be `rec`'s standby after a planned handoff of its primary
/// (`next_standby`): the one named already while it still may be one (its
/// copy is warm), else the one a promotion would pick now. None: nobody.
pub fn next_standby<'a>(
    rec: &RoleRecord,
    region: &[&'a str],
    fresh: impl Fn(&str) -> bool,
) -> Option<&'a str> {
    let candidates = standby_candidates(rec, region, &fresh);
    candidates
        .iter()
        .copied()
        .find(|c| rec.next_standby.as_deref() == Some(*c))
        .or_else(|| ranked(rec.tenant, &candidates).first().copied())
}

/// `rec` with `next` named its standby for after a planned handoff: it
/// takes a replica at once and is in sync by the time the handoff makes
/// it the new primary's standby. None when it is named already.
pub fn prepare_handoff(rec: &RoleRecord, next: &str) -> Option<RoleRecord> {
    if rec.next_standby.as_deref() == Some(next) {
        return None;
    }
    Some(RoleRecord {
        seq: rec.seq + 1,
        next_standby: Some(next.to_string()),
        ..rec.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> RoleRecord {
        RoleRecord {
            tenant: 7,
            epoch: 3,
            primary: "a".into(),
            standby: Some("b".into()),
            replicas: [("cdg".to_string(), "x".to_string())].into(),
            seq: 5,
            in_sync: Some("b".into()),
            handoff: None,
            next_standby: None,
        }
    }

    #[test]
    fn a_prepared_handoff_names_the_next_standby_and_the_promotion_takes_it() {
        let region = ["a", "b", "c", "d"];
        // Named: one of the nodes that hold nothing of it, at seq + 1.
        let first = next_standby(&rec(), &region, |_| true).expect("a candidate");
        assert!(first == "c" || first == "d", "{first}");
        let prepared = prepare_handoff(&rec(), first).expect("named");
        let next = prepared.next_standby.clone().expect("a next standby");
        assert_eq!(next, first);
        assert_eq!((prepared.epoch, prepared.seq), (3, 6));
        assert_eq!(prepared.role_of(&next), Some(crate::catalog::Held::Replica));
        // Asked again: the same node (its copy is warm), nothing to change.
        assert_eq!(next_standby(&prepared, &region, |_| true), Some(first));
        assert_eq!(prepare_handoff(&prepared, first), None);
        // Named already but not the ranking's first: kept while it may be
        // one.
        let other = if first == "c" { "d" } else { "c" };
        let named_other = RoleRecord {
            next_standby: Some(other.to_string()),
            ..rec()
        };
        assert_eq!(next_standby(&named_other, &region, |_| true), Some(other));
        // Gone (no lease): the ranking's choice instead.
        assert_eq!(
            next_standby(&named_other, &region, |m| m != other),
            Some(first)
        );
        // The promotion takes it, whatever the ranking says, and clears it.
        let promoted = promote(&prepared, &region, |m| m != "a", |_| true).expect("promoted");
        assert_eq!(promoted.primary, "b");
        assert_eq!(promoted.standby.as_deref(), Some(next.as_str()));
        assert_eq!(promoted.next_standby, None);
        // Unless it lost its lease meanwhile: then the ranking's.
        let promoted =
            promote(&prepared, &region, |m| m != "a" && m != next, |_| true).expect("promoted");
        assert!(promoted.standby.is_some() && promoted.standby.as_deref() != Some(next.as_str()));
        // A region of primary, standby and a read region's replica only:
        // nobody to name.
        assert_eq!(next_standby(&rec(), &["a", "b", "x"], |_| true), None);
    }

    #[test]
    fn a_prepare_no_handoff_followed_is_stale_after_a_while() {
        let mut l = Leases::new(Duration::from_millis(800));
        let t0 = Instant::now();
        let after = Duration::from_secs(7);
        // Not leading: nothing is stale.
        assert!(!l.prepared_long_ago(5, t0 + after * 2, after));
        // Leading since t0, named by an earlier leader: stale once this
        // one has led for `after`.
        l.lead(3, t0);
        assert!(!l.prepared_long_ago(5, t0 + after, after));
        assert!(l.prepared_long_ago(5, t0 + after + Duration::from_millis(1), after));
        // Named by this leader later: counted from then.
        l.note_prepared(5, t0 + after);
        assert!(!l.prepared_long_ago(5, t0 + after * 2, after));
        assert!(l.prepared_long_ago(5, t0 + after * 2 + Duration::from_millis(1), after));
    }

    #[test]
    fn the_standby_is_promoted_at_the_next_epoch_with_a_new_standby() {
        let next = promote(&rec(), &["a", "b", "c"], |m| m != "a", |_| true).expect("promoted");
        assert_eq!(next.epoch, 4);
        assert_eq!(next.seq, 0);
        assert_eq!(next.primary, "b");
        assert_eq!(next.standby.as_deref(), Some("c"));
        assert_eq!(next.replicas, rec().replicas);
        // No other fresh node: promoted without a standby.
        let next = promote(&rec(), &["a", "b", "c"], |m| m == "b", |_| true).expect("promoted");
        assert_eq!(next.standby, None);
        // A standby without a lease is never promoted, nor one that has
        // not completed its sync.
        assert_eq!(
            promote(&rec(), &["a", "b", "c"], |m| m == "c", |_| true),
            None
        );
        let syncing = RoleRecord {
            in_sync: None,
            ..rec()
        };
        assert_eq!(
            promote(&syncing, &["a", "b", "c"], |m| m != "a", |_| true),
            None
        );
        // Nor one that restarted and has not completed a sync since: it
        // may have lost writes it had acknowledged.
        assert_eq!(
            promote(&rec(), &["a", "b", "c"], |m| m != "a", |m| m != "b"),
            None
        );
    }

    #[test]
    fn the_election_timeout_counts_toward_the_wait() {
        let lease = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut l = Leases::new(Duration::from_secs(1));
        l.lead(1, t0);
        assert!(!l.settled(t0 + Duration::from_millis(900), lease));
        assert!(l.settled(t0 + Duration::from_millis(1100), lease));
        assert!(l.lapsed("a", t0 + Duration::from_millis(1100), lease));
        l.renew("b", t0 + Duration::from_millis(1000));
        assert!(!l.lapsed("b", t0 + Duration::from_millis(2900), lease));
        assert!(l.lapsed("b", t0 + Duration::from_millis(3100), lease));
    }

    #[test]
    fn a_leader_that_took_over_from_a_leaving_one_waits_a_whole_lease() {
        let lease = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut l = Leases::new(Duration::from_secs(1));
        l.take_over();
        l.lead(3, t0);
        assert!(!l.settled(t0 + Duration::from_millis(1500), lease));
        assert!(l.settled(t0 + Duration::from_millis(2100), lease));
        // Its next term, won by an election, earns the credit again.
        l.lead(4, t0);
        assert!(l.settled(t0 + Duration::from_millis(1100), lease));
    }

    #[test]
    fn a_leader_resumed_after_a_restart_waits_a_whole_lease() {
        let lease = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut l = Leases::new(Duration::from_secs(1));
        l.resume(4);
        l.lead(4, t0);
        assert!(!l.settled(t0 + Duration::from_millis(1500), lease));
        assert!(!l.lapsed("a", t0 + Duration::from_millis(1500), lease));
        assert!(l.settled(t0 + Duration::from_millis(2100), lease));
        // A later term, won by an election, earns the credit again.
        l.lead(5, t0);
        assert!(l.settled(t0 + Duration::from_millis(1100), lease));
        // Resumed at another term than the one led (a newer vote came
        // first): that term was won by an election.
        let mut l = Leases::new(Duration::from_secs(1));
        l.resume(4);
        l.lead(6, t0);
        assert!(l.settled(t0 + Duration::from_millis(1100), lease));
    }

    #[test]
    fn a_new_leader_waits_a_lease_before_judging_anyone() {
        let lease = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut l = Leases::default();
        l.lead(5, t0);
        assert!(!l.settled(t0 + Duration::from_secs(1), lease));
        assert!(!l.lapsed("a", t0 + Duration::from_secs(1), lease));
        l.renew("b", t0 + Duration::from_millis(1500));
        let later = t0 + Duration::from_millis(2500);
        assert!(l.settled(later, lease));
        assert!(
            l.lapsed("a", later, lease),
            "never renewed under this leader"
        );
        assert!(!l.lapsed("b", later, lease));
        // The same term again changes nothing; a new term starts over.
        l.lead(5, later);
        assert!(!l.lapsed("b", later, lease));
        l.lead(6, later);
        assert!(!l.settled(later, lease));
        assert!(!l.lapsed("b", later, lease));
    }

    #[test]
    fn a_restarted_replica_does_not_hold_its_tenants_until_synced() {
        let mut l = Leases::new(Duration::from_millis(600));
        assert!(
            l.holds("b", 7),
            "nothing reported: nothing known against it"
        );
        l.note_unsynced("b", vec![7, 9]);
        assert!(!l.holds("b", 7) && !l.holds("b", 9));
        assert!(l.holds("b", 8) && l.holds("c", 7));
        // Its next renewal, once synced, lists nothing.
        l.note_unsynced("b", vec![]);
        assert!(l.holds("b", 7));
    }
}
