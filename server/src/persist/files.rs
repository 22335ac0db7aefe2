//! Durable file operations and the append-only log's manifest.
//!
//! Every file that replaces another is written to a temporary name,
//! fsynced, renamed over the target and the directory fsynced, so a crash
//! leaves either the old file or the new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// fsync a directory so a rename or create in it is durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory holding `path` ("." for a bare name).
pub fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Renames `tmp` over `dst` durably (the data must already be fsynced).
pub fn rename_durably(tmp: &Path, dst: &Path) -> io::Result<()> {
    fs::rename(tmp, dst)?;
    fsync_dir(&parent_of(dst))
}

/// Writes `data` to `path` atomically: temp file, fsync, rename, fsync dir.
pub fn atomic_write(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = temp_name(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    rename_durably(&tmp, path)
}

/// `dir/temp-<pid>-<name>`, the scratch name for writing `path`.
/// The highest sequence number of any `<appendfilename>.<n>.…` file in
/// `dir` (0 if none). A log turned back on (CONFIG SET appendonly yes, a
/// replica's full sync) numbers its files above it, so it never appends to
/// a segment an older manifest still lists.
pub fn max_seq_on_disk(dir: &Path, appendfilename: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let prefix = format!("{appendfilename}.");
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix(&prefix)?;
            rest.split('.').next()?.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0)
}

/// Removes `temp-*` files a crashed run left in `dir` (a snapshot or a
/// rewrite's base interrupted mid-write: never valid data, possibly as
/// large as the dataset). Called at start, before anything writes one.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("temp-") else {
            continue;
        };
        // `temp-<pid>-…`: only a dead process's (another live server in
        // the same directory may be writing its own right now).
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if pid.is_some() && !alive && e.file_type().is_ok_and(|t| t.is_file()) {
            match std::fs::remove_file(e.path()) {
                Ok(()) => {
                    tracing::warn!("removed {} left by an interrupted save", e.path().display())
                }
                Err(err) => tracing::warn!("cannot remove {}: {err}", e.path().display()),
            }
        }
    }
}

pub fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_of(path).join(format!("temp-{}-{name}", std::process::id()))
}

/// What a manifest line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// A snapshot the log continues from.
    Base,
    /// A log segment.
    Incr,
}

/// The append-only log's manifest, in Redis 7's format
/// (`file <name> seq <n> type b|i`, one per line, base first): the base
/// snapshot plus the log segments written since, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub base: Option<(String, u64)>,
    pub incrs: Vec<(String, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path} line {line}: {reason}")]
    Invalid {
        path: String,
        line: usize,
        reason: String,
    },
}

impl Manifest {
    pub fn encode(&self) -> String {
        let mut s = String::new();
        if let Some((name, seq)) = &self.base {
            s.push_str(&format!("file {name} seq {seq} type b\n"));
        }
        for (name, seq) in &self.incrs {
            s.push_str(&format!("file {name} seq {seq} type i\n"));
        }
        s
    }

    pub fn parse(text: &str, path: &str) -> Result<Manifest, ManifestError> {
        let mut m = Manifest::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: &str| ManifestError::Invalid {
                path: path.to_string(),
                line: i + 1,
                reason: reason.to_string(),
            };
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 6 || f[0] != "file" || f[2] != "seq" || f[4] != "type" {
                return Err(bad("expected 'file <name> seq <n> type b|i'"));
            }
            if f[1].contains('/') || f[1].starts_with('.') {
                return Err(bad("file names must be plain names in the directory"));
            }
            let seq: u64 = f[3].parse().map_err(|_| bad("bad seq"))?;
            match f[5] {
                "b" if m.base.is_none() => m.base = Some((f[1].to_string(), seq)),
                "b" => return Err(bad("more than one base file")),
                "i" => m.incrs.push((f[1].to_string(), seq)),
                _ => return Err(bad("type must be b or i")),
            }
        }
        Ok(m)
    }

    /// Reads `path`; `Ok(None)` when it does not exist.
    pub fn load(path: &Path) -> Result<Option<Manifest>, ManifestError> {
        let p = path.display().to_string();
        match fs::read_to_string(path) {
            Ok(t) => Manifest::parse(&t, &p).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ManifestError::Io { path: p, source: e }),
        }
    }

    pub fn save(&self, path: &Path) -> io::Result<()> {
        atomic_write(path, self.encode().as_bytes())
    }

    /// Highest sequence number used.
    pub fn max_seq(&self) -> u64 {
        self.base
            .iter()
            .chain(self.incrs.iter())
            .map(|(_, s)| *s)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trip_and_errors() {
        let m = Manifest {
            base: Some(("appendonly.aof.2.base.akv".into(), 2)),
            incrs: vec![
                ("appendonly.aof.2.incr.aof".into(), 2),
                ("appendonly.aof.3.incr.aof".into(), 3),
            ],
        };
        let back = Manifest::parse(&m.encode(), "m").unwrap();
        assert_eq!(back, m);
        assert_eq!(m.max_seq(), 3);
        assert!(Manifest::parse("file x seq 1 type z\n", "m").is_err());
        assert!(Manifest::parse("file ../x seq 1 type i\n", "m").is_err());
        assert!(Manifest::parse("garbage\n", "m").is_err());
        let err = Manifest::parse("file a seq 1 type b\nfile b seq 2 type b\n", "m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = std::env::temp_dir().join(format!("anykv-files-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(!temp_name(&p).exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
