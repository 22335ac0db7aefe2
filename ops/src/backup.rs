//! Online backups of the sidecar's database, and restoring one.
//!
//! The sidecar's SQLite file is the only record of which Fly resource is
//! which database, of the sealed tokens and (later) of usage: losing its
//! volume must not lose them. SQLite's backup API copies a live database
//! page by page into another file, consistent as of one moment, while the
//! sidecar keeps serving (WAL mode: readers and the backup do not block
//! writers for longer than a step). A backup is written under a temporary
//! name and renamed when complete, so a file named `sidecar-*.db` in the
//! backup directory is always a whole database; the newest `keep` are
//! kept.
//!
//! Restoring checks the backup (`PRAGMA integrity_check`, and that its
//! schema is one this build knows) and copies it, again with the backup
//! API, into the data directory, which must not hold a database yet: the
//! operator moves a damaged one aside first, so a restore never
//! overwrites anything by accident.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::store::{StoreError, DB_FILE};

/// Pages copied per step of a backup (the source is locked only during a
/// step).
const PAGES_PER_STEP: std::os::raw::c_int = 256;

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("sqlite: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{0} is not a sound sidecar database: {1}")]
    Damaged(PathBuf, String),
    #[error("{0} exists already: move it aside to restore over it")]
    Exists(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |err| BackupError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// Copies the live database `src` into `dir` as `sidecar-<unix time>.db`
/// and removes all but the newest `keep` backups there; returns the new
/// file.
pub fn backup(src: &Connection, dir: &Path, now: i64, keep: usize) -> Result<PathBuf, BackupError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let name = format!("sidecar-{now:012}.db");
    let part = dir.join(format!("{name}.part"));
    let done = dir.join(&name);
    let _ = std::fs::remove_file(&part);
    {
        let mut dst = Connection::open(&part)?;
        let b = rusqlite::backup::Backup::new(src, &mut dst)?;
        b.run_to_completion(PAGES_PER_STEP, Duration::ZERO, None)?;
    }
    std::fs::rename(&part, &done).map_err(io(&done))?;
    prune(dir, keep)?;
    Ok(done)
}

/// [`backup`] of the sidecar's database in data directory `data`, read
/// through a connection of its own: the sidecar's handlers go on using
/// theirs (WAL: a reader blocks no writer) while the copy runs.
pub fn backup_file(data: &Path, dir: &Path, now: i64, keep: usize) -> Result<PathBuf, BackupError> {
    let src = Connection::open_with_flags(data.join(DB_FILE), OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    backup(&src, dir, now, keep)
}

/// The backups in `dir`, oldest first.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("sidecar-") && n.ends_with(".db"))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn prune(dir: &Path, keep: usize) -> Result<(), BackupError> {
    let all = list(dir)?;
    for old in &all[..all.len().saturating_sub(keep.max(1))] {
        std::fs::remove_file(old).map_err(io(old))?;
    }
    Ok(())
}

/// Restores backup `from` into the data directory `data` (which must not
/// hold a database yet), after checking it.
pub fn restore(from: &Path, data: &Path) -> Result<(), BackupError> {
    let target = data.join(DB_FILE);
    if target.exists() {
        return Err(BackupError::Exists(target));
    }
    let src = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let check: String = src
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| BackupError::Damaged(from.to_path_buf(), e.to_string()))?;
    if check != "ok" {
        return Err(BackupError::Damaged(from.to_path_buf(), check));
    }
    let version: i64 = src.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version < 1 {
        return Err(BackupError::Damaged(
            from.to_path_buf(),
            "no sidecar schema in it".into(),
        ));
    }
    crate::store::check_version(version)?;
    std::fs::create_dir_all(data).map_err(io(data))?;
    let part = data.join(format!("{DB_FILE}.restoring"));
    let _ = std::fs::remove_file(&part);
    {
        let mut dst = Connection::open(&part)?;
        let b = rusqlite::backup::Backup::new(&src, &mut dst)?;
        b.run_to_completion(PAGES_PER_STEP, Duration::ZERO, None)?;
    }
    std::fs::rename(&part, &target).map_err(io(&target))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Database, Store};

    fn db(n: u32) -> Database {
        Database {
            fly_id: format!("ext_{n}"),
            tenant_id: 1000 + u64::from(n),
            name: format!("db{n}"),
            organization_id: "org_1".into(),
            primary_region: "iad".into(),
            read_regions: vec!["cdg".into()],
            status: "ready".into(),
            created_at: 1,
            token_sealed: format!("sealed{n}"),
            catalog_version: 1,
            plan: crate::plans::DEFAULT.name.into(),
            ip_address: String::new(),
            next_token_sealed: String::new(),
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("anykv-backup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_backup_taken_while_serving_restores_everything() {
        let (data, backups, restored) = (tmp("data"), tmp("backups"), tmp("restored"));
        let mut s = Store::open(&data, 300).unwrap();
        for n in 0..50 {
            s.insert_database(("org_1", "Acme", "ops@acme.test"), None, &db(n))
                .unwrap();
        }
        let mut files = Vec::new();
        for t in 0..2 {
            files.push(s.backup_to(&backups, 100 + t, 3).unwrap());
        }
        // Through a connection of its own, the store open and writing
        // (a row is added between the two).
        files.push(backup_file(&data, &backups, 102, 3).unwrap());
        s.insert_database(("org_1", "Acme", "ops@acme.test"), None, &db(50))
            .unwrap();
        files.push(backup_file(&data, &backups, 103, 3).unwrap());
        s.conn()
            .execute("DELETE FROM databases WHERE fly_id = 'ext_50'", [])
            .unwrap();
        // The newest three are kept.
        assert_eq!(list(&backups).unwrap(), files[1..].to_vec());
        // A later change is not in the earlier backup.
        s.insert_database(("org_1", "Acme", "ops@acme.test"), None, &db(99))
            .unwrap();
        drop(s);

        restore(&files[3], &restored).unwrap();
        let r = Store::open(&restored, 300).unwrap();
        for n in 0..51 {
            assert_eq!(r.database(&format!("ext_{n}")).unwrap(), Some(db(n)));
        }
        assert_eq!(r.database("ext_99").unwrap(), None);
        drop(r);
        // Never over an existing database.
        assert!(matches!(
            restore(&files[3], &restored),
            Err(BackupError::Exists(_))
        ));
        // A damaged file is refused.
        let bad = backups.join("sidecar-999999999999.db");
        std::fs::write(&bad, b"SQLite format 3\0 but not really").unwrap();
        let fresh = tmp("fresh");
        assert!(restore(&bad, &fresh).is_err());
        assert!(!fresh.join(DB_FILE).exists());
        for d in [data, backups, restored, fresh] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
