//! The replication ids on disk, beside the data (`repl-ids`).
//!
//! Snapshots carry the ids they were taken under, but ids change between
//! snapshots (a promotion, a replica's full sync), and a restart after a
//! crash may have lost the log's tail that replicas already received. So
//! the ids are also written here, durably, whenever they change, and at a
//! graceful shutdown together with the offset the data on disk ends at
//! (`clean-offset`). At start:
//!
//! - the file's ids win over the snapshot's (they are at least as new);
//! - if the data loaded ends exactly at the clean offset, the history
//!   continues under the same id (replicas resume with a partial resync);
//! - otherwise (a crash: replicas may hold bytes this node lost) the
//!   history continues under a new id, with the old one valid only up to
//!   the offset loaded: a replica at or below it resumes, one beyond it
//!   gets a full sync, and no replica is ever told to continue a history
//!   this node does not have;
//! - unless the ids were written by a replica's full sync whose data was
//!   not yet in the kind of file the start loads (`snapshot-behind 1` or
//!   `log-behind 1`: no snapshot, or no log base, of it written since):
//!   the data found is older than the ids and may be of another history,
//!   so the node starts a history of its own and claims none. Each kind is
//!   tracked apart because `appendonly` (which one a start loads) can
//!   change at runtime.

use std::io::Write;
use std::path::Path;

use crate::repl::ReplIds;

pub const FILE: &str = "repl-ids";

/// Which kinds of file predate the ids (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Behind {
    pub snapshot: bool,
    pub log: bool,
}

impl Behind {
    /// Whether the log (`log`) or the snapshot predates the ids.
    pub fn of(self, log: bool) -> bool {
        if log {
            self.log
        } else {
            self.snapshot
        }
    }

    /// A file of that kind of the current data is written: returns whether
    /// it was behind.
    pub fn caught_up(&mut self, log: bool) -> bool {
        std::mem::take(if log {
            &mut self.log
        } else {
            &mut self.snapshot
        })
    }
}

/// Writes the ids (and, at a graceful shutdown, the offset the data on disk
/// ends at; `behind`: the data on disk predates these ids) durably: a
/// temporary file, fsync, rename, directory fsync.
pub fn save(
    dir: &Path,
    ids: &ReplIds,
    clean_offset: Option<u64>,
    behind: Behind,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(FILE);
    let tmp = super::files::temp_name(&path);
    let mut f = std::fs::File::create(&tmp)?;
    write!(
        f,
        "replid {}\nreplid2 {}\nsecond-offset {}\nclean-offset {}\nsnapshot-behind {}\nlog-behind {}\n",
        ids.replid,
        ids.replid2,
        ids.second_offset,
        clean_offset.map_or(-1, |o| o as i64),
        behind.snapshot as u8,
        behind.log as u8
    )?;
    f.sync_all()?;
    drop(f);
    super::files::rename_durably(&tmp, &path)
}

/// Reads the file: the ids, the clean offset if any, and which kinds of
/// file predate the ids (a file from before those lines: none). A missing
/// or malformed file is None (the snapshot's ids stand).
pub fn load(dir: &Path) -> Option<(ReplIds, Option<u64>, Behind)> {
    let text = std::fs::read_to_string(dir.join(FILE)).ok()?;
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix(' ')))
            .map(str::trim)
    };
    let aux = [
        ("repl-id".to_string(), get("replid")?.to_string()),
        ("repl-id2".to_string(), get("replid2")?.to_string()),
        (
            "repl-second-offset".to_string(),
            get("second-offset")?.to_string(),
        ),
    ];
    let ids = ReplIds::from_aux(&aux)?;
    let clean = get("clean-offset")?.parse::<i64>().ok()?;
    let behind = Behind {
        snapshot: get("snapshot-behind") == Some("1"),
        log: get("log-behind") == Some("1"),
    };
    Some((ids, u64::try_from(clean).ok(), behind))
}

/// At start, after loading (from the log when `from_log`, else from the
/// snapshot): decides the ids as the module docs say and records that the
/// node is running (clean offset unset).
pub fn restore(
    dir: &Path,
    ids: &mut ReplIds,
    loaded_offset: u64,
    from_log: bool,
) -> std::io::Result<()> {
    if let Some((file_ids, clean, behind)) = load(dir) {
        if behind.of(from_log) {
            *ids = ReplIds::random();
            tracing::info!(
                "the data on disk (offset {loaded_offset}) predates the replication ids (a full sync not saved yet): a new history, claiming no other"
            );
        } else {
            *ids = file_ids;
            if clean != Some(loaded_offset) {
                ids.shift(loaded_offset);
                tracing::info!(
                    "not a clean restart (data ends at offset {loaded_offset}): replication continues under a new id"
                );
            }
        }
    }
    save(dir, ids, None, Behind::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_restarts_keep_the_id_and_crashes_shift_it() {
        let dir = std::env::temp_dir().join(format!("anykv-replids-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ids = ReplIds::random();
        // First start: no file, the snapshot's ids stand.
        let mut now = ids.clone();
        restore(&dir, &mut now, 100, false).unwrap();
        assert_eq!(now, ids);
        // Clean shutdown at 250, restart with data at 250: same id.
        save(&dir, &now, Some(250), Behind::default()).unwrap();
        let mut after = ReplIds::random();
        restore(&dir, &mut after, 250, false).unwrap();
        assert_eq!(after, ids);
        // Crash (no clean offset): new id, old one valid up to 300 + 1.
        let mut crashed = after.clone();
        restore(&dir, &mut crashed, 300, false).unwrap();
        assert_ne!(crashed.replid, ids.replid);
        assert!(crashed.knows(&ids.replid, 301));
        assert!(!crashed.knows(&ids.replid, 302));
        // A full sync took another history's ids, its data not saved yet:
        // whatever is found on disk claims neither.
        let synced = ReplIds::random();
        let both = Behind {
            snapshot: true,
            log: true,
        };
        save(&dir, &synced, None, both).unwrap();
        let mut found = synced.clone();
        restore(&dir, &mut found, 100, false).unwrap();
        assert!(!found.knows(&synced.replid, 1));
        assert!(!found.knows(&crashed.replid, 1));
        assert_eq!(found.second_offset, -1);
        // Its log base written, not a snapshot: a start from the log
        // shifts as before, one from the snapshot still claims nothing.
        let log_saved = Behind {
            snapshot: true,
            log: false,
        };
        save(&dir, &synced, None, log_saved).unwrap();
        let mut from_log = synced.clone();
        restore(&dir, &mut from_log, 400, true).unwrap();
        assert!(from_log.knows(&synced.replid, 401));
        save(&dir, &synced, None, log_saved).unwrap();
        let mut from_snapshot = synced.clone();
        restore(&dir, &mut from_snapshot, 400, false).unwrap();
        assert!(!from_snapshot.knows(&synced.replid, 1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
