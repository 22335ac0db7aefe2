//! Metering: what each database's customers used on this node, for
//! billing (docs/METERING.md).
//!
//! Counted once, where the customer's connection is: the node that
//! accepted a command from the client counts it (its class), the bytes it
//! read from and wrote to that client, and the connection when it logged
//! in to the database. A command a router forwarded to another node
//! arrives there on a cluster link, and links are never counted; neither
//! is a replica applying its primary's stream. A database's stored bytes
//! are sampled on its primary only.
//!
//! Each tenant counts into its own [`Usage`] on its executor (no atomics
//! on the command path); its cron hands that over to the node's [`Meter`]
//! every second. The node writes what the meter took as one record of its
//! [`UsageLog`] every `meter-interval` (a JSON line: a sequence number, the
//! log's and the boot's ids, the interval it covers and each database's
//! counts and stored bytes), fsynced unless `appendfsync no`. The sidecar
//! pulls records after the last sequence it has (`GET /admin/usage`) and
//! keeps each (log, sequence) once, so a retried pull never counts twice.
//!
//! Loss window: a crash loses what was counted since the last record (at
//! most one interval plus one second); a graceful stop writes a last
//! record first, marked `"last": true`. A log whose last record is not so
//! marked ended uncleanly: records the sidecar may already have taken can
//! be missing from its end (written, served, not yet on the disk), so its
//! sequence jumps by [`UNCLEAN_JUMP`] and no number is used twice.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The usage log's file name, in the node's data directory.
pub const FILE: &str = "usage.log";

/// How far the sequence jumps after an unclean end: more records than a
/// crash can take from the file's unsynced end.
pub const UNCLEAN_JUMP: u64 = 1_000_000;

/// What a class a command is billed as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Reads the keyspace and writes nothing (Redis's `readonly`).
    Read,
    /// Writes (Redis's `write`).
    Write,
    /// Everything else: connection, server and pub/sub commands, unknown
    /// commands.
    Other,
}

impl Class {
    /// A script that may write (EVAL, EVALSHA) is one write, whatever
    /// it runs; a read-only one is a read.
    pub fn of(r: &crate::cmd::table::Registered) -> Class {
        if r.write || r.runs_script() {
            Class::Write
        } else if r.read {
            Class::Read
        } else {
            Class::Other
        }
    }
}

/// One database's usage on one node over some time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub reads: u64,
    pub writes: u64,
    pub other: u64,
    /// Bytes read from its customers' connections.
    pub bytes_in: u64,
    /// Bytes written to them.
    pub bytes_out: u64,
    /// Connections that logged in to it.
    pub connections: u64,
}

impl Usage {
    pub fn count(&mut self, class: Class) {
        match class {
            Class::Read => self.reads += 1,
            Class::Write => self.writes += 1,
            Class::Other => self.other += 1,
        }
    }

    pub fn add(&mut self, o: &Usage) {
        self.reads += o.reads;
        self.writes += o.writes;
        self.other += o.other;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.connections += o.connections;
    }

    pub fn is_zero(&self) -> bool {
        *self == Usage::default()
    }
}

/// What the node's executors handed over since the last record.
#[derive(Debug, Default)]
pub struct Taken {
    pub usage: HashMap<u64, Usage>,
    /// Each database this node is the primary of: its stored bytes, as
    /// last sampled.
    pub stored: HashMap<u64, u64>,
}

/// The node's meter: filled by the executors, emptied into the log.
#[derive(Default)]
pub struct Meter {
    usage: parking_lot::Mutex<HashMap<u64, Usage>>,
    stored: parking_lot::Mutex<HashMap<u64, u64>>,
    /// When each database's tokens were last in use here: a login, or a
    /// connection still open (marked every second). The sidecar retires a
    /// rotation's old token once no node has seen it for a while
    /// (docs/SIDECAR.md, Token rotation).
    tokens: parking_lot::Mutex<HashMap<u64, HashMap<[u8; 32], std::time::Instant>>>,
    /// The sidecar has the records of log `.0` up to sequence `.1`
    /// (`POST /admin/usage/taken`): the writer may drop them.
    taken: parking_lot::Mutex<Option<(String, u64)>>,
}

impl Meter {
    /// Tenant `id`'s usage since its last hand-over, and its stored bytes
    /// when this node holds its primary (None: not, or no longer).
    pub fn hand_over(&self, id: u64, u: Usage, stored: Option<u64>) {
        if !u.is_zero() {
            self.usage.lock().entry(id).or_default().add(&u);
        }
        let mut s = self.stored.lock();
        match stored {
            Some(b) => {
                s.insert(id, b);
            }
            None => {
                s.remove(&id);
            }
        }
    }

    /// Usage of a database this node holds no copy of (its stored bytes
    /// are its primary's node's to report).
    pub fn add_usage(&self, id: u64, u: Usage) {
        if !u.is_zero() {
            self.usage.lock().entry(id).or_default().add(&u);
        }
    }

    /// Tenant `id` is gone from this node (deleted, moved): it stores
    /// nothing here any more.
    pub fn forget(&self, id: u64) {
        self.stored.lock().remove(&id);
    }

    /// Everything handed over so far (the usage is reset; the stored
    /// bytes stay the latest sample).
    pub fn take(&self) -> Taken {
        Taken {
            usage: std::mem::take(&mut *self.usage.lock()),
            stored: self.stored.lock().clone(),
        }
    }

    /// Tokens (SHA-256) of database `id` in use now.
    pub fn tokens_used(&self, id: u64, digests: &[[u8; 32]]) {
        if digests.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let mut all = self.tokens.lock();
        let seen = all.entry(id).or_default();
        for d in digests {
            seen.insert(*d, now);
        }
    }

    /// Database `id`'s tokens used on this node since it started, with how
    /// long ago each was last in use. Tokens unused for a week are
    /// forgotten (a retired token's entry, a deleted database's).
    pub fn tokens_idle(&self, id: u64) -> Vec<([u8; 32], std::time::Duration)> {
        const FORGET: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);
        let now = std::time::Instant::now();
        let mut all = self.tokens.lock();
        all.retain(|_, seen| {
            seen.retain(|_, at| now.duration_since(*at) < FORGET);
            !seen.is_empty()
        });
        all.get(&id)
            .map(|seen| {
                seen.iter()
                    .map(|(d, at)| (*d, now.duration_since(*at)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The sidecar holds log `log`'s records up to `seq`.
    pub fn usage_taken(&self, log: &str, seq: u64) {
        let mut t = self.taken.lock();
        match &mut *t {
            Some((l, s)) if l == log => *s = (*s).max(seq),
            _ => *t = Some((log.to_string(), seq)),
        }
    }

    /// Up to which sequence log `log`'s records were taken (0: none known).
    pub fn taken_upto(&self, log: &str) -> u64 {
        match &*self.taken.lock() {
            Some((l, s)) if l == log => *s,
            _ => 0,
        }
    }

    /// Gives usage back that could not be written (the next record has it).
    pub fn restore(&self, t: Taken) {
        let mut u = self.usage.lock();
        for (id, x) in t.usage {
            u.entry(id).or_default().add(&x);
        }
    }
}

/// Why the usage log failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("usage log {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// The node's usage log: one JSON line per record.
pub struct UsageLog {
    path: PathBuf,
    file: File,
    /// Random, made with the file: a new file (a wiped data directory) is
    /// a new log, whose sequence starts again.
    log_id: String,
    seq: u64,
    boot: String,
    node: String,
    /// When the last record's interval ended (ms), or this boot began.
    since_ms: i64,
    /// The file's length (bytes).
    len: u64,
    /// Every whole line of the file, in order: what compaction decides on
    /// without reading the file.
    lines: std::collections::VecDeque<Line>,
    /// A write failed and its part could not be cut off: the next record
    /// starts on a line of its own.
    torn: bool,
}

/// One whole line of the usage log: its record's sequence and end (0 for
/// a line that is not a record), and its length with the newline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Line {
    seq: u64,
    to_ms: i64,
    len: u64,
}

/// What one compaction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Records dropped that the sidecar had taken (and lines that were
    /// no records).
    pub taken: usize,
    /// Of those, records still inside the keep time, dropped because the
    /// file was over its size limit (a sidecar restored from an older
    /// backup would miss them).
    pub young: usize,
    /// Records dropped that it had not taken: the file was over its size
    /// limit (their usage is lost to billing).
    pub untaken: usize,
    /// The file's length afterwards.
    pub len: u64,
}

/// Records the sidecar took and that are past the keep time, in the
/// file, before a compaction is worth it (it rewrites the file).
pub const COMPACT_AFTER: usize = 64;

/// How long records the sidecar took stay in the file by default (ms): a
/// sidecar restored from a backup up to this old takes them again.
pub const KEEP_TAKEN_MS: i64 = 48 * 3600 * 1000;

/// Calls `f` with each whole line of `r` (its newline included) until it
/// answers false; a last line without its newline (being written, or torn
/// by a crash) is not one.
fn whole_lines(r: impl std::io::Read, mut f: impl FnMut(&[u8]) -> bool) -> std::io::Result<()> {
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') || !f(&line) {
            return Ok(());
        }
    }
}

/// 16 random bytes in hex.
pub fn random_id() -> String {
    use rand::Rng;
    let b: [u8; 16] = rand::rng().random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl UsageLog {
    /// Opens (creating) `dir/usage.log` for node `node` in boot `boot`: its
    /// log id and last sequence come from its records, a torn last line
    /// (a crash mid-write) is cut off. A whole line that is not a record
    /// (a failed write's part) is passed over.
    pub fn open(dir: &Path, node: &str, boot: &str, now_ms: i64) -> Result<UsageLog, LogError> {
        let path = dir.join(FILE);
        let io = |e| LogError::Io(path.clone(), e);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        let mut good_len = 0u64;
        let mut lines = std::collections::VecDeque::new();
        let mut last: Option<serde_json::Value> = None;
        let mut first: Option<serde_json::Value> = None;
        whole_lines(&file, |line| {
            good_len += line.len() as u64;
            match serde_json::from_slice::<serde_json::Value>(line) {
                Ok(v) => {
                    lines.push_back(Line {
                        seq: v["seq"].as_u64().unwrap_or(0),
                        to_ms: v["to_ms"].as_i64().unwrap_or(0),
                        len: line.len() as u64,
                    });
                    if first.is_none() {
                        first = Some(v.clone());
                    }
                    last = Some(v);
                }
                Err(_) => lines.push_back(Line {
                    seq: 0,
                    to_ms: 0,
                    len: line.len() as u64,
                }),
            }
            true
        })
        .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len > good_len {
            tracing::warn!(
                "usage log {}: cutting {} bytes of a torn last record",
                path.display(),
                len - good_len
            );
            file.set_len(good_len).map_err(io)?;
            file.seek(std::io::SeekFrom::End(0)).map_err(io)?;
        }
        let log_id = first
            .as_ref()
            .and_then(|v| v["log"].as_str().map(str::to_string))
            .unwrap_or_else(random_id);
        let mut seq = last.as_ref().and_then(|v| v["seq"].as_u64()).unwrap_or(0);
        let clean = last.as_ref().is_none_or(|v| v["last"] == true) && len == good_len;
        if !clean {
            tracing::warn!(
                "usage log {}: the last run did not end cleanly; its sequence jumps by {UNCLEAN_JUMP}",
                path.display()
            );
            seq += UNCLEAN_JUMP;
        }
        Ok(UsageLog {
            path,
            file,
            log_id,
            seq,
            boot: boot.to_string(),
            node: node.to_string(),
            since_ms: now_ms,
            len: good_len,
            lines,
            torn: false,
        })
    }

    pub fn log_id(&self) -> &str {
        &self.log_id
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length (bytes).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file holds no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The lines at the file's start that the sidecar took (sequence up
    /// to `taken`) and that ended before `kept_from_ms`, never the last:
    /// how many, and their bytes.
    fn droppable(&self, taken: u64, kept_from_ms: i64) -> (usize, u64) {
        let mut n = 0;
        let mut bytes = 0;
        for l in self.lines.iter().take(self.lines.len().saturating_sub(1)) {
            if l.seq > taken || l.to_ms >= kept_from_ms {
                break;
            }
            n += 1;
            bytes += l.len;
        }
        (n, bytes)
    }

    /// Whether a compaction is worth its rewrite: at least
    /// [`COMPACT_AFTER`] taken records past the keep time, a quarter of the
    /// file or more, wait at its start; or the file is over `max_bytes`
    /// (0: no limit).
    pub fn wants_compaction(&self, taken: u64, kept_from_ms: i64, max_bytes: u64) -> bool {
        let (n, bytes) = self.droppable(taken, kept_from_ms);
        (n >= COMPACT_AFTER && bytes * 4 >= self.len) || (max_bytes > 0 && self.len > max_bytes)
    }

    /// Drops the records at the file's start that the sidecar took (up to
    /// sequence `taken`) and whose interval ended before `kept_from_ms`
    /// (taken records stay a while: a sidecar restored from a backup
    /// takes them again), then, while the rest is over `max_bytes` (0: no
    /// limit), the oldest others, down to half of it. What stays is copied
    /// beside the file, synced and renamed over it. The last record always
    /// stays: the log's id and sequence, and whether it ended cleanly,
    /// live in it.
    pub fn compact(
        &mut self,
        taken: u64,
        kept_from_ms: i64,
        max_bytes: u64,
    ) -> Result<Compacted, LogError> {
        let (mut n, mut bytes) = self.droppable(taken, kept_from_ms);
        let mut out = Compacted {
            taken: n,
            ..Compacted::default()
        };
        if max_bytes > 0 {
            let last = self.lines.len().saturating_sub(1);
            while n < last && self.len - bytes > max_bytes / 2 {
                let l = self.lines[n];
                if l.seq > taken {
                    out.untaken += 1;
                } else {
                    out.taken += 1;
                    if l.seq != 0 && l.to_ms >= kept_from_ms {
                        out.young += 1;
                    }
                }
                n += 1;
                bytes += l.len;
            }
        }
        out.len = self.len - bytes;
        if n == 0 {
            return Ok(out);
        }
        let tmp = self.path.with_extension("log.compacting");
        match self.rewrite_from(bytes, &tmp) {
            Ok(file) => {
                self.file = file;
                self.lines.drain(..n);
                self.len -= bytes;
                Ok(out)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(LogError::Io(self.path.clone(), e))
            }
        }
    }

    /// Copies the file from byte `from` to `tmp`, syncs it, and renames it
    /// over the file: the new file, open for appending.
    fn rewrite_from(&self, from: u64, tmp: &Path) -> std::io::Result<File> {
        let mut src = File::open(&self.path)?;
        src.seek(std::io::SeekFrom::Start(from))?;
        let mut dst = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)?;
        let want = self.len - from;
        if std::io::copy(&mut src.take(want), &mut dst)? != want {
            return Err(std::io::Error::other("the log is shorter than its index"));
        }
        dst.sync_all()?;
        // Opened for appending before the rename: once renamed, the handle
        // is the log's.
        let file = OpenOptions::new().read(true).append(true).open(tmp)?;
        std::fs::rename(tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            // The rename itself on the disk.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(file)
    }

    /// Writes what `taken` holds as the next record, covering the time
    /// since the last one until `now_ms` (nothing when nothing was used
    /// and nothing is stored, unless it is the `last` one, which marks a
    /// clean end); fsynced when `fsync`. Its sequence number, if one was
    /// written.
    pub fn append(
        &mut self,
        taken: &Taken,
        now_ms: i64,
        fsync: bool,
        last: bool,
    ) -> Result<Option<u64>, LogError> {
        let from = self.since_ms;
        let mut ids: Vec<u64> = taken
            .usage
            .keys()
            .chain(taken.stored.keys())
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() && !last {
            self.since_ms = now_ms;
            return Ok(None);
        }
        let mut tenants = serde_json::Map::new();
        for id in ids {
            let u = taken.usage.get(&id).copied().unwrap_or_default();
            tenants.insert(
                id.to_string(),
                serde_json::json!({
                    "reads": u.reads,
                    "writes": u.writes,
                    "other": u.other,
                    "bytes_in": u.bytes_in,
                    "bytes_out": u.bytes_out,
                    "connections": u.connections,
                    "stored_bytes": taken.stored.get(&id).copied().unwrap_or(0),
                }),
            );
        }
        let seq = self.seq + 1;
        let mut rec = serde_json::json!({
            "seq": seq,
            "log": self.log_id,
            "boot": self.boot,
            "node": self.node,
            "from_ms": from,
            "to_ms": now_ms,
            "tenants": tenants,
        });
        if last {
            rec["last"] = serde_json::json!(true);
        }
        let mut line = rec.to_string().into_bytes();
        line.push(b'\n');
        if self.torn {
            self.mend();
            if self.torn {
                // Still a part in the way: this record waits (its usage
                // and interval go into the next).
                return Err(LogError::Io(
                    self.path.clone(),
                    std::io::Error::other("a failed write's part could not be cut off or ended"),
                ));
            }
        }
        if let Err(e) = self.file.write_all(&line) {
            // Not written: the caller keeps the usage, and the interval
            // (the stored bytes' time), for the next record. A part of the
            // line must not stay in the file: it is cut off, or failing
            // that, ended before the next record.
            if self.file.set_len(self.len).is_err() {
                self.torn = true;
            }
            return Err(LogError::Io(self.path.clone(), e));
        }
        if fsync {
            // Written, so counted: the record may reach the disk yet, and
            // counting it again in the next one would bill it twice.
            if let Err(e) = self.file.sync_data() {
                tracing::warn!("usage log {}: fsync: {e}", self.path.display());
            }
        }
        self.since_ms = now_ms;
        self.len += line.len() as u64;
        self.lines.push_back(Line {
            seq,
            to_ms: now_ms,
            len: line.len() as u64,
        });
        self.seq = seq;
        Ok(Some(seq))
    }

    /// After a failed write whose part could not be cut off: cuts it now,
    /// or ends it with a newline (a line that is no record, passed over by
    /// readers, dropped at the next compaction).
    fn mend(&mut self) {
        if self.file.set_len(self.len).is_ok() {
            self.torn = false;
            return;
        }
        let Ok(now) = self.file.metadata().map(|m| m.len()) else {
            return;
        };
        if now == self.len {
            self.torn = false;
            return;
        }
        if now > self.len && self.file.write_all(b"\n").is_ok() {
            let len = now + 1 - self.len;
            self.lines.push_back(Line {
                seq: 0,
                to_ms: 0,
                len,
            });
            self.len += len;
            self.torn = false;
        }
    }
}

/// The records of the log at `dir` after sequence `after` (at most
/// `limit`), with the log's id (None: no log yet).
pub fn read_after(
    dir: &Path,
    after: u64,
    limit: usize,
) -> Result<(Option<String>, Vec<serde_json::Value>), LogError> {
    let path = dir.join(FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, Vec::new())),
        Err(e) => return Err(LogError::Io(path, e)),
    };
    let mut log = None;
    let mut out = Vec::new();
    // (A line still being written is not a record yet; a whole line that
    // is not one, a failed write's part, is passed over.)
    whole_lines(file, |line| {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            return true;
        };
        if log.is_none() {
            log = v["log"].as_str().map(str::to_string);
        }
        if v["seq"].as_u64().is_some_and(|s| s > after) {
            out.push(v);
        }
        out.len() < limit
    })
    .map_err(|e| LogError::Io(path.clone(), e))?;
    Ok((log, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("anykv-meter-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A log of `n` records (each with usage of database 7), cleanly ended.
    fn log_of(dir: &Path, n: u64) -> UsageLog {
        let m = Meter::default();
        let mut log = UsageLog::open(dir, "n1", "boot1", 0).unwrap();
        for i in 1..=n {
            let mut u = Usage::default();
            u.count(Class::Read);
            m.hand_over(7, u, None);
            assert_eq!(
                log.append(&m.take(), i as i64 * 1000, false, i == n)
                    .unwrap(),
                Some(i)
            );
        }
        log
    }

    #[test]
    fn compaction_drops_what_the_sidecar_took_and_keeps_the_log_whole() {
        let dir = tmp("compact");
        let mut log = log_of(&dir, 100);
        let id = log.log_id().to_string();
        let full = log.len();
        assert_eq!(full, std::fs::metadata(dir.join(FILE)).unwrap().len());
        // Fewer than COMPACT_AFTER taken records past the keep time, or
        // under a quarter of the file: not worth a rewrite.
        assert!(!log.wants_compaction(COMPACT_AFTER as u64 - 1, i64::MAX, 0));
        assert!(
            !log.wants_compaction(80, 20_500, 0),
            "20 records are old enough"
        );
        assert!(log.wants_compaction(80, i64::MAX, 0));
        // Taken, but not old enough: records 1..=50 end before 50.5 s,
        // the others stay (a restored sidecar would take them again).
        let c = log.compact(80, 50_500, 0).unwrap();
        assert_eq!((c.taken, c.young, c.untaken), (50, 0, 0));
        let (_, recs) = read_after(&dir, 0, 1000).unwrap();
        assert_eq!(recs.first().and_then(|r| r["seq"].as_u64()), Some(51));
        let c = log.compact(80, i64::MAX, 0).unwrap();
        assert_eq!((c.taken, c.untaken), (30, 0));
        assert_eq!(c.len, std::fs::metadata(dir.join(FILE)).unwrap().len());
        assert!(c.len < full / 4);
        // What the sidecar has not taken is all there, in order.
        let (lid, recs) = read_after(&dir, 0, 1000).unwrap();
        assert_eq!(lid.as_deref(), Some(id.as_str()));
        let seqs: Vec<u64> = recs.iter().filter_map(|r| r["seq"].as_u64()).collect();
        assert_eq!(seqs, (81..=100).collect::<Vec<_>>());
        assert!(!log.wants_compaction(80, i64::MAX, 0));
        // Appending after a compaction goes to the new file.
        let m = Meter::default();
        m.hand_over(7, Usage::default(), Some(5));
        assert_eq!(
            log.append(&m.take(), 200_000, false, false).unwrap(),
            Some(101)
        );
        assert_eq!(read_after(&dir, 100, 10).unwrap().1.len(), 1);
        assert_eq!(log.len(), std::fs::metadata(dir.join(FILE)).unwrap().len());
        // Everything taken: the last record stays (the log's id and
        // sequence), and a restart goes on from it.
        let c = log.compact(101, i64::MAX, 0).unwrap();
        assert_eq!((c.taken, c.untaken), (20, 0));
        assert!(read_after(&dir, 101, 10).unwrap().1.is_empty());
        drop(log);
        let log = UsageLog::open(&dir, "n1", "boot2", 300_000).unwrap();
        assert_eq!(log.log_id(), id);
        // (The last record was not a clean end's: the sequence jumps.)
        assert_eq!(log.seq(), 101 + UNCLEAN_JUMP);
    }

    #[test]
    fn a_log_over_its_limit_drops_its_oldest_records_even_untaken() {
        let dir = tmp("limit");
        let mut log = log_of(&dir, 100);
        let limit = log.len() / 2;
        assert!(log.wants_compaction(0, 0, limit));
        // Taken up to 20: records 1..=14 end before 14.5 s (old enough),
        // 15..=20 are young; the rest untaken.
        let c = log.compact(20, 14_500, limit).unwrap();
        assert_eq!((c.taken, c.young), (20, 6));
        assert!(c.untaken > 0);
        assert!(c.len <= limit / 2, "{} > {}", c.len, limit / 2);
        let (_, recs) = read_after(&dir, 0, 1000).unwrap();
        let seqs: Vec<u64> = recs.iter().filter_map(|r| r["seq"].as_u64()).collect();
        // The newest survive, the last one with its clean-end mark.
        assert_eq!(seqs.last(), Some(&100));
        assert_eq!(recs.last().unwrap()["last"], true);
        assert_eq!(seqs.len(), 100 - c.taken - c.untaken);
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
        drop(log);
        let log = UsageLog::open(&dir, "n1", "boot2", 300_000).unwrap();
        assert_eq!(log.seq(), 100, "a clean end stays clean");
    }

    #[test]
    fn a_line_that_is_no_record_is_passed_over_and_compacted_away() {
        let dir = tmp("garbage");
        drop(log_of(&dir, 3));
        // A failed write's part, ended with a newline, then more records.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(FILE))
            .unwrap();
        f.write_all(b"{\"seq\":4,\"lo\n").unwrap();
        drop(f);
        let mut log = UsageLog::open(&dir, "n1", "boot2", 10_000).unwrap();
        assert_eq!(log.seq(), 3, "a clean end before it: no jump");
        let m = Meter::default();
        m.hand_over(7, Usage::default(), Some(5));
        assert_eq!(
            log.append(&m.take(), 20_000, false, false).unwrap(),
            Some(4)
        );
        let (_, recs) = read_after(&dir, 0, 100).unwrap();
        let seqs: Vec<u64> = recs.iter().filter_map(|r| r["seq"].as_u64()).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4], "the record after it is read");
        // Taken: the line goes with the records before it.
        log.compact(3, i64::MAX, 0).unwrap();
        let text = std::fs::read_to_string(dir.join(FILE)).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    #[test]
    fn token_use_is_kept_per_database_and_ages() {
        let m = Meter::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        m.tokens_used(7, &[a]);
        std::thread::sleep(std::time::Duration::from_millis(30));
        m.tokens_used(7, &[b]);
        m.tokens_used(8, &[b]);
        let mut seen = m.tokens_idle(7);
        seen.sort();
        assert_eq!(seen.len(), 2);
        assert_eq!((seen[0].0, seen[1].0), (a, b));
        // a was used first: it has been idle longer.
        assert!(seen[0].1 >= std::time::Duration::from_millis(30));
        assert!(seen[1].1 < seen[0].1);
        assert_eq!(m.tokens_idle(8).len(), 1);
        assert!(m.tokens_idle(9).is_empty());
        // Used again: idle from now.
        m.tokens_used(7, &[a]);
        let again = m.tokens_idle(7);
        let idle_a = again.iter().find(|(d, _)| *d == a).map(|x| x.1);
        assert!(idle_a.is_some_and(|i| i < std::time::Duration::from_millis(30)));
    }

    #[test]
    fn records_continue_their_sequence_across_restarts_and_jump_after_a_crash() {
        let dir = tmp("log");
        let m = Meter::default();
        let mut u = Usage::default();
        u.count(Class::Read);
        u.count(Class::Write);
        u.bytes_in = 40;
        m.hand_over(7, u, Some(1000));
        m.hand_over(7, u, Some(2000));
        let mut log = UsageLog::open(&dir, "n1", "boot1", 0).unwrap();
        let id = log.log_id().to_string();
        assert_eq!(log.append(&m.take(), 10_000, true, false).unwrap(), Some(1));
        // Stored bytes keep being reported while usage is nil.
        assert_eq!(log.append(&m.take(), 20_000, true, false).unwrap(), Some(2));
        m.forget(7);
        assert_eq!(log.append(&m.take(), 30_000, true, false).unwrap(), None);
        // A clean end: the last record, empty, marks it.
        assert_eq!(log.append(&m.take(), 31_000, true, true).unwrap(), Some(3));
        drop(log);
        let mut log = UsageLog::open(&dir, "n1", "boot2", 40_000).unwrap();
        assert_eq!((log.log_id(), log.seq()), (id.as_str(), 3));
        m.hand_over(9, u, None);
        assert_eq!(
            log.append(&m.take(), 50_000, false, false).unwrap(),
            Some(4)
        );
        drop(log);
        // A torn record is cut, and the run that wrote it did not end
        // cleanly: the sequence jumps (numbers the sidecar may have taken
        // before the crash are never used again).
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(FILE))
            .unwrap();
        f.write_all(b"{\"seq\":5,\"lo").unwrap();
        drop(f);
        let log = UsageLog::open(&dir, "n1", "boot3", 60_000).unwrap();
        assert_eq!((log.log_id(), log.seq()), (id.as_str(), 4 + UNCLEAN_JUMP));

        let (lid, recs) = read_after(&dir, 0, 100).unwrap();
        assert_eq!(lid.as_deref(), Some(id.as_str()));
        assert_eq!(recs.len(), 4);
        let t = &recs[0]["tenants"]["7"];
        assert_eq!(
            (t["reads"].as_u64(), t["writes"].as_u64()),
            (Some(2), Some(2))
        );
        assert_eq!(t["bytes_in"], 80);
        assert_eq!(t["stored_bytes"], 2000);
        assert_eq!(
            (recs[0]["from_ms"].as_i64(), recs[0]["to_ms"].as_i64()),
            (Some(0), Some(10_000))
        );
        let t = &recs[1]["tenants"]["7"];
        assert_eq!(
            (t["reads"].as_u64(), t["stored_bytes"].as_u64()),
            (Some(0), Some(2000))
        );
        assert_eq!(recs[2]["last"], true);
        assert_eq!(recs[2]["tenants"], serde_json::json!({}));
        assert_eq!(recs[3]["boot"], "boot2");
        assert_eq!(recs[3]["from_ms"], 40_000);
        assert_eq!(recs[3]["tenants"]["9"]["stored_bytes"], 0);
        let (_, later) = read_after(&dir, 3, 100).unwrap();
        assert_eq!(later.len(), 1);
        let (_, capped) = read_after(&dir, 0, 2).unwrap();
        assert_eq!(capped.len(), 2);
        assert_eq!(read_after(&tmp("none"), 0, 9).unwrap(), (None, vec![]));
    }

    /// A script that may write is billed as one write; a read-only one
    /// as a read.
    #[test]
    fn scripts_are_billed_by_what_they_may_do() {
        let class = |args: &[&[u8]]| match crate::cmd::lookup(args) {
            crate::cmd::Lookup::Found(r) => Class::of(r),
            _ => panic!("{args:?} is a command"),
        };
        assert_eq!(class(&[b"eval", b"return 1", b"0"]), Class::Write);
        assert_eq!(class(&[b"evalsha", b"x", b"0"]), Class::Write);
        assert_eq!(class(&[b"eval_ro", b"return 1", b"0"]), Class::Read);
        assert_eq!(class(&[b"evalsha_ro", b"x", b"0"]), Class::Read);
        assert_eq!(class(&[b"script", b"load", b"x"]), Class::Other);
    }
}
