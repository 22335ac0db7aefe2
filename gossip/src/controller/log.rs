//! The controller's Raft log and vote, in SQLite on the node's volume.
//!
//! One file (`controller.db` in the node's directory) holds the log
//! (`log`: index → entry as JSON), the vote, the committed and purged log
//! ids and the latest snapshot (`meta`). SQLite runs in WAL mode with
//! `synchronous=FULL`, so a transaction is on disk when its commit returns:
//! Raft may count a vote or an appended entry as persisted once the call
//! returns (openraft's contract). The calls are small and rare (role
//! changes, heartbeats do not write), so they run on the caller's thread.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogId, RaftLogReader, StorageError, StorageIOError,
    Vote,
};
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};

use super::types::TypeConfig;

type NodeId = u64;

/// The controller's database, shared by the log and the state machine.
#[derive(Clone)]
pub struct Db(Arc<Mutex<Connection>>);

impl Db {
    /// Opens (creating it if needed) the database at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<Db> {
        let c = Connection::open(path)?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.pragma_update(None, "synchronous", "FULL")?;
        c.execute_batch(
            "CREATE TABLE IF NOT EXISTS log (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);",
        )?;
        Ok(Db(Arc::new(Mutex::new(c))))
    }

    /// A value of `meta`, decoded from JSON.
    pub fn get<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>, String> {
        let raw: Option<Vec<u8>> = self
            .0
            .lock()
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| e.to_string())?;
        raw.map(|b| serde_json::from_slice(&b).map_err(|e| format!("{name}: {e}")))
            .transpose()
    }

    /// Replaces a value of `meta` with what `f` makes of the current one
    /// (None: leave it), atomically with respect to every other use of
    /// the database.
    pub fn update<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        name: &str,
        f: impl FnOnce(Option<T>) -> Option<T>,
    ) -> Result<(), String> {
        let c = self.0.lock();
        let raw: Option<Vec<u8>> = c
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| e.to_string())?;
        let cur = raw
            .map(|b| serde_json::from_slice(&b).map_err(|e| format!("{name}: {e}")))
            .transpose()?;
        if let Some(v) = f(cur) {
            let b = serde_json::to_vec(&v).map_err(|e| e.to_string())?;
            c.execute(
                "INSERT INTO meta (name, value) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                params![name, b],
            )
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Sets a value of `meta` (as JSON), durably.
    pub fn put<T: serde::Serialize>(&self, name: &str, value: &T) -> Result<(), String> {
        let b = serde_json::to_vec(value).map_err(|e| e.to_string())?;
        self.0
            .lock()
            .execute(
                "INSERT INTO meta (name, value) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                params![name, b],
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// SQLite stores integers as i64: indexes past it (never reached) clamp.
fn sql_index(i: u64) -> i64 {
    i64::try_from(i).unwrap_or(i64::MAX)
}

/// The Raft log (openraft's `RaftLogStorage`), and its reader.
#[derive(Clone)]
pub struct LogStore {
    db: Db,
}

impl LogStore {
    pub fn new(db: Db) -> LogStore {
        LogStore { db }
    }

    fn entries(&self, from: u64, to_excl: u64) -> Result<Vec<Entry<TypeConfig>>, String> {
        let c = self.db.0.lock();
        let mut st = c
            .prepare_cached("SELECT entry FROM log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")
            .map_err(|e| e.to_string())?;
        let rows = st
            .query_map(params![sql_index(from), sql_index(to_excl)], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for raw in rows {
            let raw = raw.map_err(|e| e.to_string())?;
            out.push(serde_json::from_slice(&raw).map_err(|e| format!("log entry: {e}"))?);
        }
        Ok(out)
    }

    fn last_entry(&self) -> Result<Option<Entry<TypeConfig>>, String> {
        let raw: Option<Vec<u8>> = self
            .db
            .0
            .lock()
            .query_row("SELECT entry FROM log ORDER BY idx DESC LIMIT 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| e.to_string())?;
        raw.map(|b| serde_json::from_slice(&b).map_err(|e| format!("log entry: {e}")))
            .transpose()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let from = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        self.entries(from, to)
            .map_err(|e| StorageIOError::read_logs(anyerr(e)).into())
    }
}

/// A message as openraft's error source.
fn anyerr(msg: String) -> openraft::AnyError {
    openraft::AnyError::error(msg)
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let purged: Option<LogId<NodeId>> = self
            .db
            .get("purged")
            .map_err(|e| StorageIOError::read_logs(anyerr(e)))?;
        let last = self
            .last_entry()
            .map_err(|e| StorageIOError::read_logs(anyerr(e)))?
            .map(|e| *e.get_log_id())
            .max(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.db
            .put("vote", vote)
            .map_err(|e| StorageIOError::write_vote(anyerr(e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.db
            .get("vote")
            .map_err(|e| StorageIOError::read_vote(anyerr(e)).into())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.db
            .put("committed", &committed)
            .map_err(|e| StorageIOError::write(anyerr(e)).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        self.db
            .get::<Option<LogId<NodeId>>>("committed")
            .map(Option::flatten)
            .map_err(|e| StorageIOError::read(anyerr(e)).into())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let r = (|| -> Result<(), String> {
            let mut c = self.db.0.lock();
            let tx = c.transaction().map_err(|e| e.to_string())?;
            {
                let mut st = tx
                    .prepare_cached("INSERT OR REPLACE INTO log (idx, entry) VALUES (?1, ?2)")
                    .map_err(|e| e.to_string())?;
                for e in entries {
                    let raw = serde_json::to_vec(&e).map_err(|e| e.to_string())?;
                    st.execute(params![sql_index(e.get_log_id().index), raw])
                        .map_err(|e| e.to_string())?;
                }
            }
            tx.commit().map_err(|e| e.to_string())
        })();
        match r {
            Ok(()) => {
                // Committed to the WAL with synchronous=FULL: on disk.
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.clone())));
                Err(StorageIOError::write_logs(anyerr(e)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.db
            .0
            .lock()
            .execute("DELETE FROM log WHERE idx >= ?1", [sql_index(log_id.index)])
            .map(|_| ())
            .map_err(|e| StorageIOError::write_logs(anyerr(e.to_string())).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // The purge point and the deletion in one transaction.
        let r = (|| -> Result<(), String> {
            let raw = serde_json::to_vec(&log_id).map_err(|e| e.to_string())?;
            let mut c = self.db.0.lock();
            let tx = c.transaction().map_err(|e| e.to_string())?;
            tx.execute(
                "INSERT INTO meta (name, value) VALUES ('purged', ?1)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                [raw],
            )
            .map_err(|e| e.to_string())?;
            tx.execute("DELETE FROM log WHERE idx <= ?1", [sql_index(log_id.index)])
                .map_err(|e| e.to_string())?;
            tx.commit().map_err(|e| e.to_string())
        })();
        r.map_err(|e| StorageIOError::write_logs(anyerr(e)).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::machine::Machine;
    use openraft::testing::{StoreBuilder, Suite};

    /// A directory removed when the test's store is dropped.
    pub(crate) struct TempDir(pub std::path::PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicU64, Ordering};
            static N: AtomicU64 = AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!(
                "anykv-ctrl-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).expect("temp dir");
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, Machine, TempDir> for Builder {
        async fn build(&self) -> Result<(TempDir, LogStore, Machine), StorageError<NodeId>> {
            let dir = TempDir::new("suite");
            let db = Db::open(&dir.0.join("controller.db"))
                .map_err(|e| StorageIOError::write(anyerr(e.to_string())))?;
            let sm = Machine::open(db.clone()).map_err(|e| StorageIOError::read(anyerr(e)))?;
            Ok((dir, LogStore::new(db), sm))
        }
    }

    /// openraft's own conformance suite for log stores and state machines
    /// (log state, membership from log and snapshot, truncate, purge,
    /// vote, apply): what openraft relies on of our SQLite storage.
    #[test]
    fn passes_openraft_storage_suite() {
        Suite::test_all(Builder).expect("openraft's storage suite");
    }

    /// What was written is there after the database is closed and opened
    /// again: the vote, the entries, the purge point.
    #[test]
    fn the_vote_and_log_survive_a_reopen() {
        let dir = TempDir::new("reopen");
        let path = dir.0.join("controller.db");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut s = LogStore::new(Db::open(&path).expect("db"));
            let vote = Vote::new(3, 7);
            s.save_vote(&vote).await.expect("vote");
            let entries: Vec<Entry<TypeConfig>> = (1..=5)
                .map(|i| openraft::testing::blank_ent::<TypeConfig>(2, 7, i))
                .collect();
            // (Appended by hand: openraft's flush callback is not
            // constructible outside it; the suite covers `append`.)
            {
                let mut rows = s.db.0.lock();
                let tx = rows.transaction().expect("tx");
                for e in &entries {
                    tx.execute(
                        "INSERT INTO log (idx, entry) VALUES (?1, ?2)",
                        params![e.log_id.index as i64, serde_json::to_vec(e).expect("json")],
                    )
                    .expect("insert");
                }
                tx.commit().expect("commit");
            }
            s.purge(entries[1].log_id).await.expect("purge");
            drop(s);

            let mut s = LogStore::new(Db::open(&path).expect("db again"));
            assert_eq!(s.read_vote().await.expect("vote"), Some(vote));
            let st = s.get_log_state().await.expect("state");
            assert_eq!(st.last_purged_log_id, Some(entries[1].log_id));
            assert_eq!(st.last_log_id, Some(entries[4].log_id));
            let got = s.try_get_log_entries(3..=5).await.expect("entries");
            assert_eq!(
                got.iter().map(|e| e.log_id).collect::<Vec<_>>(),
                entries[2..].iter().map(|e| e.log_id).collect::<Vec<_>>()
            );
        });
    }
}
