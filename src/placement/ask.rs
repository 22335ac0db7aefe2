//! Asking a database's region controller who its primary is.
//!
//! A node learns role records from the state sync, which reaches every
//! node but over gossip rounds: a digest item announcing the news rides a
//! later SWIM probe, then a sync session pulls the row. A router (a node
//! that holds no copy of a database and forwards to its primary) whose
//! primary just died has clients waiting all that time, although the
//! controller committed the new primary seconds earlier. So when a
//! forwarded request finds the primary's node down, gets no answer in
//! time, or the node answers that it is no longer the primary
//! (`-READONLY`) or holds no lease (`-TRYAGAIN`), the store calls [`anykv_server::shared::Shared::primary_missed`]
//! and this module asks the controller of the database's primary region
//! for its record: its leader first (the newest record), then the other
//! voters. A newer record is taken into the table as the state sync would
//! take it, and a reconcile pass points the forwarding at the new primary.
//!
//! Nodes of the primary region skip the question: their own controller
//! applies the group's records as they commit, and every pass merges them
//! (`Placement::merge_group_records`).

use super::Placement;
use anykv_gossip::catalog::RoleRecord;
use anykv_gossip::MemberState;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// At most one question per database this often, and one at a time: a
/// burst of failed requests asks once, and a primary still gone is asked
/// about again while the controller promotes.
pub const ASK_EVERY: Duration = Duration::from_millis(100);

/// How long one answer may take (a question crosses the WAN once).
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// Wires `p`'s store to ask when a primary did not take a request: the
/// store's executors call the returned hook (rate-limited per database
/// there), and the questions run on the node's runtime.
pub fn start(p: &Arc<Placement>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
    // Per database: when the last question started, and whether one is
    // still out (a controller that does not answer costs one question at
    // a time, not one per 100 ms).
    let asks: Arc<Mutex<HashMap<u64, (Instant, bool)>>> = Arc::default();
    let hook = {
        let asks = asks.clone();
        move |tenant: anykv_server::tenant::TenantId| {
            let now = Instant::now();
            {
                let mut asks = asks.lock();
                if asks
                    .get(&tenant.0)
                    .is_some_and(|(at, out)| *out || now.duration_since(*at) < ASK_EVERY)
                {
                    return;
                }
                if asks.len() >= 4096 {
                    asks.retain(|_, (at, out)| *out || now.duration_since(*at) < ASK_EVERY);
                }
                asks.insert(tenant.0, (now, true));
            }
            let _ = tx.send(tenant.0);
        }
    };
    if p.shared.primary_lookup.set(Box::new(hook)).is_err() {
        return;
    }
    let weak: Weak<Placement> = Arc::downgrade(p);
    tokio::spawn(async move {
        while let Some(tenant) = rx.recv().await {
            let Some(p) = weak.upgrade() else { return };
            let asks = asks.clone();
            tokio::spawn(async move {
                p.ask_primary(tenant).await;
                if let Some(a) = asks.lock().get_mut(&tenant) {
                    a.1 = false;
                }
            });
        }
    });
}

impl Placement {
    /// Asks `tenant`'s primary region's controller for its record and
    /// takes it when newer than the table's.
    async fn ask_primary(self: Arc<Self>, tenant: u64) {
        let Some(region) = self.entry(tenant).map(|e| e.primary_region) else {
            return;
        };
        if region == self.region && self.controller.is_some() {
            self.kick();
            return;
        }
        let targets = self.controller_targets(&region);
        if targets.is_empty() {
            count("unreachable");
            return;
        }
        for addr in targets {
            let answer = anykv_gossip::controller::net::ask_record(
                &self.wan.syncer,
                &region,
                addr,
                tenant,
                ASK_TIMEOUT,
            )
            .await;
            match answer {
                Ok(Some(rec)) => {
                    let newer = self.adopt(rec, "asked");
                    count(if newer { "newer" } else { "current" });
                    return;
                }
                Ok(None) => {
                    count("none");
                    return;
                }
                Err(e) => {
                    tracing::debug!(tenant, %addr, "asking the controller for a role record: {e}");
                }
            }
        }
        count("unreachable");
    }

    /// Database `tenant`'s catalog entry (one row read, not the tables).
    fn entry(&self, tenant: u64) -> Option<anykv_gossip::catalog::TenantEntry> {
        let row = self
            .store
            .lock()
            .get(anykv_gossip::state::Table::Tenants, &tenant.to_string())
            .and_then(|r| r.value.clone())?;
        serde_json::from_slice(&row).ok()
    }

    /// Where to ask `region`'s controller, best first: the leader its
    /// members name at the highest term, then its other alive voters (a
    /// leader that died with the primary is replaced by one of them).
    fn controller_targets(&self, region: &str) -> Vec<SocketAddr> {
        let view = self.view.borrow().clone();
        let alive = |m: &&anykv_gossip::MemberView| {
            !m.me && m.region == region && m.state == MemberState::Alive
        };
        let metas: Vec<(&str, &anykv_gossip::controller::ControllerMeta)> = view
            .members
            .iter()
            .filter(alive)
            .filter_map(|m| Some((m.machine.as_str(), m.meta.as_ref()?.controller.as_ref()?)))
            .collect();
        let leader = metas
            .iter()
            .filter(|(_, c)| c.leader.is_some())
            .max_by_key(|(_, c)| c.term)
            .and_then(|(_, c)| c.leader.clone());
        let mut order: Vec<(bool, &str)> = metas
            .iter()
            .filter(|(m, c)| c.voters.iter().any(|v| v == m) || leader.as_deref() == Some(*m))
            .map(|(m, _)| (leader.as_deref() != Some(*m), *m))
            .collect();
        order.sort();
        order
            .into_iter()
            .take(3)
            .filter_map(|(_, m)| self.link_addr(&view, m))
            .collect()
    }

    /// Takes `rec`, which the database's primary region's controller
    /// announced or answered, into the table when it is newer than the
    /// table's (by epoch, then sequence; the table keeps the newest
    /// either way) and asks for a reconcile pass. Whether it was newer.
    pub(super) fn adopt(&self, rec: RoleRecord, how: &'static str) -> bool {
        let row = rec.row();
        let newer = self
            .store
            .lock()
            .get(anykv_gossip::state::Table::Roles, &row.key)
            .is_none_or(|cur| {
                (cur.version.life, cur.version.seq) < (row.version.life, row.version.seq)
            });
        if newer {
            tracing::debug!(
                tenant = rec.tenant,
                epoch = rec.epoch,
                how,
                "a role record newer than the table's: taken"
            );
            let _ = self.wan.publisher.publish(vec![row]);
            self.kick();
        }
        newer
    }
}

fn count(outcome: &'static str) {
    metrics::counter!("anykv_role_record_asks_total", "outcome" => outcome).increment(1);
}
