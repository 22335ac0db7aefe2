//! The controller's state machine: the role record of every tenant whose
//! primary region this is, as committed through Raft.
//!
//! The state lives in memory (it is small: one record per tenant) and is
//! rebuilt at start from the last snapshot (kept in the controller's
//! database) plus the committed log after it, which openraft re-applies.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::log::Db;
use super::types::{Command, Outcome, Peer, TypeConfig};
use crate::catalog::RoleRecord;

type NodeId = u64;

/// What the log has built, up to `last_applied`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Roles {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, Peer>,
    /// Tenant id → its role record.
    pub records: BTreeMap<u64, RoleRecord>,
}

impl Roles {
    /// Applies one command (deterministic: every member gets the same).
    fn apply(&mut self, cmd: &Command) -> Outcome {
        match cmd {
            Command::PutRole { expect, record } => {
                let now = self.records.get(&record.tenant).map(|r| (r.epoch, r.seq));
                if now != *expect {
                    return Outcome {
                        applied: false,
                        current: self.records.get(&record.tenant).cloned(),
                    };
                }
                self.records.insert(record.tenant, record.clone());
                Outcome {
                    applied: true,
                    current: Some(record.clone()),
                }
            }
            Command::DropRole { tenant } => Outcome {
                applied: self.records.remove(tenant).is_some(),
                current: None,
            },
        }
    }
}

/// A snapshot as the database keeps it.
#[derive(Serialize, Deserialize)]
struct Stored {
    meta: SnapshotMeta<NodeId, Peer>,
    data: Vec<u8>,
}

/// The state machine (openraft's `RaftStateMachine`); clones share state.
#[derive(Clone)]
pub struct Machine {
    db: Db,
    roles: Arc<RwLock<Roles>>,
    /// Bumped whenever the records change (placement watches it).
    changed: Arc<watch::Sender<u64>>,
}

/// Wall-clock ms: only makes snapshot ids unique.
fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn anyerr(msg: String) -> openraft::AnyError {
    openraft::AnyError::error(msg)
}

impl Machine {
    /// The machine as of the database's last snapshot.
    pub fn open(db: Db) -> Result<Machine, String> {
        let roles = match db.get::<Stored>("snapshot")? {
            Some(s) => serde_json::from_slice(&s.data).map_err(|e| format!("snapshot: {e}"))?,
            None => Roles::default(),
        };
        Ok(Machine {
            db,
            roles: Arc::new(RwLock::new(roles)),
            changed: Arc::new(watch::channel(0).0),
        })
    }

    /// The records as applied so far.
    pub fn roles(&self) -> Roles {
        self.roles.read().clone()
    }

    /// Tenant `tenant`'s record as applied so far (without copying the
    /// others).
    pub fn record(&self, tenant: u64) -> Option<RoleRecord> {
        self.roles.read().records.get(&tenant).cloned()
    }

    /// Changes whenever the applied records change.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Stores `s` unless the database holds a newer snapshot already: a
    /// build runs beside an install, and the log may be purged up to the
    /// newer one, so going back would leave a gap no restart can fill.
    fn keep_newest(&self, s: Stored) -> Result<(), String> {
        self.db.update::<Stored>("snapshot", |cur| match cur {
            Some(c) if c.meta.last_log_id > s.meta.last_log_id => None,
            _ => Some(s),
        })
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

impl RaftSnapshotBuilder<TypeConfig> for Machine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let roles = self.roles();
        let data = serde_json::to_vec(&roles)
            .map_err(|e| StorageIOError::read_state_machine(anyerr(e.to_string())))?;
        let id = match &roles.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, unix_ms()),
            None => format!("empty-{}", unix_ms()),
        };
        let meta = SnapshotMeta {
            last_log_id: roles.last_applied,
            last_membership: roles.membership.clone(),
            snapshot_id: id,
        };
        let stored = Stored {
            meta: meta.clone(),
            data: data.clone(),
        };
        self.keep_newest(stored)
            .map_err(|e| StorageIOError::write_snapshot(None, anyerr(e)))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for Machine {
    type SnapshotBuilder = Machine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Peer>), StorageError<NodeId>> {
        let r = self.roles.read();
        Ok((r.last_applied, r.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut out = Vec::new();
        let mut changed = false;
        {
            let mut r = self.roles.write();
            for e in entries {
                r.last_applied = Some(e.log_id);
                out.push(match e.payload {
                    EntryPayload::Blank => Outcome::default(),
                    EntryPayload::Normal(cmd) => {
                        let o = r.apply(&cmd);
                        changed |= o.applied;
                        o
                    }
                    EntryPayload::Membership(m) => {
                        r.membership = StoredMembership::new(Some(e.log_id), m);
                        Outcome::default()
                    }
                });
            }
        }
        if changed {
            self.bump();
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Peer>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let mut roles: Roles = serde_json::from_slice(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), anyerr(e.to_string()))
        })?;
        roles.last_applied = meta.last_log_id;
        roles.membership = meta.last_membership.clone();
        let stored = Stored {
            meta: meta.clone(),
            data,
        };
        self.keep_newest(stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), anyerr(e)))?;
        *self.roles.write() = roles;
        self.bump();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let s: Option<Stored> = self
            .db
            .get("snapshot")
            .map_err(|e| StorageIOError::read_snapshot(None, anyerr(e)))?;
        Ok(s.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
