//! The append-only log: the tenant's propagation log, on disk.
//!
//! Writing and fsyncing are split. The executor queues each batch's
//! effects in the [`AofWriter`] (a buffer swap, no syscall) and, once per
//! executor round, writes everything queued as one frame itself
//! ([`AofWriter::write_pending`]: every connection served in that round
//! shares the write). A per-tenant fsync thread does only the fsyncs, so
//! the executor never waits for the disk. Replies wait on the offset the
//! writer publishes ([`AofWriter::durable`]):
//!
//! - `always`: the offset fsynced. The write asks the thread to sync;
//!   requests that arrive while an fsync runs are served together by the
//!   next one (group commit), so `always` costs one fsync per round, not
//!   per command.
//! - `everysec`: the offset written; the thread fsyncs at most once a
//!   second (the last second is at risk on power loss, not on a crash).
//! - `no`: the offset written; the kernel decides when to flush (fsyncs
//!   happen only on rotation and [`AofWriter::flush`]).
//!
//! A failed write keeps the bytes queued for a retry and marks the log
//! failed (writes get -MISCONF); under `always` a failed write or fsync
//! exits the process, as Redis does.
//!
//! A segment file is an 8-byte header (`AKAOF001`) and frames of
//! `u32 length, u32 CRC-32 of the payload, payload` (little endian), where
//! the payload is whole RESP commands (the propagation log's bytes).
//! [`read_segment`] uses the checksum to tell a torn tail (crash
//! mid-append: the last frame incomplete, or failing its check and ending
//! the file), which it truncates, from corruption inside the file (a bad
//! frame with more data after it), which it refuses unless `--repair`
//! asks it to truncate there; a bad header is always refused.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const MAGIC: &[u8; 8] = b"AKAOF001";
const FRAME_HEADER: usize = 8;
/// Largest frame accepted when reading (a batch is far smaller).
pub const MAX_FRAME: usize = 512 << 20;

/// `appendfsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    Always,
    EverySec,
    No,
}

impl FsyncPolicy {
    pub fn parse(s: &str) -> FsyncPolicy {
        match s {
            "always" => FsyncPolicy::Always,
            "no" => FsyncPolicy::No,
            _ => FsyncPolicy::EverySec,
        }
    }
}

/// Counters the writer thread keeps for INFO persistence.
#[derive(Debug, Default)]
pub struct AofStatus {
    /// False after a failed write (writes are refused with -MISCONF).
    pub write_ok: AtomicBool,
    /// Bytes in the current segment.
    pub size: AtomicU64,
    /// fsyncs that took longer than a second (`aof_delayed_fsync`).
    pub delayed_fsync: AtomicU64,
    /// Bytes queued but not yet written.
    pub pending: AtomicU64,
    /// Log offset written to the file so far.
    pub written_end: AtomicU64,
    /// Written data awaits a periodic fsync (the fsync thread has been
    /// told; set by the executor, cleared by the thread before it syncs),
    /// so `everysec` costs one message per second, not one per write.
    pub dirty: AtomicBool,
}

enum SyncMsg {
    /// `always`: fsync now, then publish this offset.
    Sync(u64),
    /// `everysec`: data up to this offset awaits the next periodic fsync.
    Dirty(u64),
    Policy(FsyncPolicy),
    /// A new segment (a handle on it for fsync).
    Rotate(File),
}

/// A tenant's append-only log writer.
///
/// Bytes are queued with [`AofWriter::append`] (no syscall), written to the
/// file by [`AofWriter::write_pending`] once per executor round (every
/// connection served in that round shares the one write, as Redis's
/// event loop writes once per iteration), and fsynced by a thread: at
/// once under `always` (the round's replies wait for it), once a second
/// under `everysec`, never under `no`.
pub struct AofWriter {
    file: File,
    buf: Vec<u8>,
    buf_end: u64,
    written_end: u64,
    written: tokio::sync::watch::Sender<u64>,
    synced: tokio::sync::watch::Receiver<u64>,
    tx: mpsc::Sender<SyncMsg>,
    policy: FsyncPolicy,
    pub status: Arc<AofStatus>,
    path: PathBuf,
}

fn open_segment(path: &Path) -> io::Result<(File, u64)> {
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let len = f.seek(SeekFrom::End(0))?;
    if len == 0 {
        f.write_all(MAGIC)?;
        f.sync_all()?;
        if let Some(dir) = path.parent() {
            super::files::fsync_dir(dir)?;
        }
        return Ok((f, MAGIC.len() as u64));
    }
    Ok((f, len))
}

impl AofWriter {
    /// Opens (or creates) the segment at `path` for appending; `offset` is
    /// the propagation-log offset already in it. `acct` is the tenant's
    /// memory account: the fsync thread frees what the executor sends it.
    pub fn open(
        path: &Path,
        policy: FsyncPolicy,
        offset: u64,
        acct: &Arc<crate::alloc::Account>,
    ) -> io::Result<AofWriter> {
        let (file, len) = open_segment(path)?;
        let sync_file = file.try_clone()?;
        let (tx, rx) = mpsc::channel();
        let (synced_tx, synced) = tokio::sync::watch::channel(offset);
        let status = Arc::new(AofStatus {
            write_ok: AtomicBool::new(true),
            size: AtomicU64::new(len),
            written_end: AtomicU64::new(offset),
            ..Default::default()
        });
        let st = status.clone();
        let acct = acct.clone();
        std::thread::Builder::new()
            .name("anykv-aof-fsync".into())
            .spawn(move || {
                crate::alloc::with_account(&acct, || {
                    fsync_thread(sync_file, rx, synced_tx, policy, st)
                })
            })?;
        Ok(AofWriter {
            file,
            buf: Vec::new(),
            buf_end: offset,
            written_end: offset,
            written: tokio::sync::watch::channel(offset).0,
            synced,
            tx,
            policy,
            status,
            path: path.to_path_buf(),
        })
    }

    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn set_policy(&mut self, p: FsyncPolicy) {
        if p != self.policy {
            self.policy = p;
            let _ = self.tx.send(SyncMsg::Policy(p));
        }
    }

    /// Queues bytes that end at log offset `end` (no syscall).
    /// Takes `data` (left empty) that ends at log offset `end`; when
    /// nothing is queued the buffers are swapped, not copied (the usual
    /// case: one batch per executor round).
    pub fn append(&mut self, data: &mut Vec<u8>, end: u64) {
        if self.buf.is_empty() {
            std::mem::swap(&mut self.buf, data);
        } else {
            self.buf.extend_from_slice(data);
            data.clear();
        }
        self.buf_end = end;
        self.status
            .pending
            .store(self.buf.len() as u64, Ordering::Relaxed);
    }

    /// Bytes queued and not yet written.
    pub fn has_pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The offset a reply must wait for before it is sent: written under
    /// `everysec`/`no`, fsynced under `always`.
    pub fn durable(&self) -> tokio::sync::watch::Receiver<u64> {
        match self.policy {
            FsyncPolicy::Always => self.synced.clone(),
            _ => self.written.subscribe(),
        }
    }

    /// Writes everything queued as one frame. On a failed write the bytes
    /// stay queued for the next try and writes are refused (-MISCONF), as
    /// Redis does; under `always` the process exits, as Redis does (a
    /// write that may not be durable must not be acknowledged).
    pub fn write_pending(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let len = self.buf.len() as u32;
        let crc = crc32fast::hash(&self.buf);
        let mut head = [0u8; FRAME_HEADER];
        head[..4].copy_from_slice(&len.to_le_bytes());
        head[4..].copy_from_slice(&crc.to_le_bytes());
        let r = self
            .file
            .write_all(&head)
            .and_then(|()| self.file.write_all(&self.buf));
        if let Err(e) = r {
            self.status.write_ok.store(false, Ordering::Relaxed);
            tracing::error!("Error writing to the AOF file: {e}");
            if self.policy == FsyncPolicy::Always {
                tracing::error!("Can't recover from AOF write error when the AOF fsync policy is 'always'. Exiting...");
                std::process::exit(1);
            }
            // Replies go out (the data is still queued): as Redis, which
            // keeps its buffer and retries.
            self.written.send_replace(self.buf_end);
            return Err(e);
        }
        self.status.write_ok.store(true, Ordering::Relaxed);
        self.status
            .size
            .fetch_add(u64::from(len) + FRAME_HEADER as u64, Ordering::Relaxed);
        self.buf.clear();
        self.status.pending.store(0, Ordering::Relaxed);
        self.written_end = self.buf_end;
        self.status
            .written_end
            .store(self.buf_end, Ordering::Release);
        self.written.send_replace(self.buf_end);
        match self.policy {
            FsyncPolicy::Always => {
                let _ = self.tx.send(SyncMsg::Sync(self.buf_end));
            }
            _ => {
                if !self.status.dirty.swap(true, Ordering::AcqRel) {
                    let _ = self.tx.send(SyncMsg::Dirty(self.buf_end));
                }
            }
        }
        Ok(())
    }

    /// Switches to a new segment: everything queued goes to the old one,
    /// which is fsynced first.
    pub fn rotate(&mut self, path: &Path) -> io::Result<()> {
        self.write_pending()?;
        self.file.sync_data()?;
        let (file, len) = open_segment(path)?;
        let sync_file = file.try_clone()?;
        self.file = file;
        self.status.size.store(len, Ordering::Relaxed);
        self.path = path.to_path_buf();
        let _ = self.tx.send(SyncMsg::Rotate(sync_file));
        Ok(())
    }

    /// Writes and fsyncs everything queued (shutdown, DEBUG RELOAD).
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.file.sync_data()
    }
}

fn fsync_thread(
    mut file: File,
    rx: mpsc::Receiver<SyncMsg>,
    synced: tokio::sync::watch::Sender<u64>,
    mut policy: FsyncPolicy,
    st: Arc<AofStatus>,
) {
    let mut last_sync = Instant::now();
    let mut dirty: Option<u64> = None;
    loop {
        let msg = if dirty.is_some() {
            let wait = Duration::from_secs(1).saturating_sub(last_sync.elapsed());
            match rx.recv_timeout(wait) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            }
        };
        // Everything queued meanwhile shares the next fsync (group commit).
        let mut want: Option<u64> = None;
        let mut next = msg;
        loop {
            match next {
                Some(SyncMsg::Sync(e)) => want = Some(want.unwrap_or(0).max(e)),
                Some(SyncMsg::Dirty(e)) => dirty = Some(dirty.unwrap_or(0).max(e)),
                Some(SyncMsg::Policy(p)) => {
                    policy = p;
                    if st.dirty.load(Ordering::Acquire) {
                        dirty = Some(st.written_end.load(Ordering::Acquire));
                    }
                }
                Some(SyncMsg::Rotate(f)) => {
                    // The executor fsynced the old segment before rotating.
                    file = f;
                }
                None => {}
            }
            match rx.try_recv() {
                Ok(m) => next = Some(m),
                Err(_) => break,
            }
        }
        let due = match policy {
            FsyncPolicy::Always => want.is_some() || dirty.is_some(),
            FsyncPolicy::EverySec => {
                want.is_some() || (dirty.is_some() && last_sync.elapsed() >= Duration::from_secs(1))
            }
            FsyncPolicy::No => want.is_some(),
        };
        if !due {
            if policy == FsyncPolicy::No {
                dirty = None;
            }
            continue;
        }
        // Writes after this point tell the thread again.
        st.dirty.store(false, Ordering::Release);
        let upto = want
            .unwrap_or(0)
            .max(dirty.unwrap_or(0))
            .max(st.written_end.load(Ordering::Acquire));
        let t = Instant::now();
        if let Err(e) = file.sync_data() {
            tracing::error!("Error fsyncing the AOF file: {e}");
            st.write_ok.store(false, Ordering::Relaxed);
            if policy == FsyncPolicy::Always {
                std::process::exit(1);
            }
            continue;
        }
        if t.elapsed() > Duration::from_secs(1) {
            st.delayed_fsync.fetch_add(1, Ordering::Relaxed);
        }
        // The next one is due a second after this one *began* (as Redis
        // times it), so a slow disk does not stretch the window at risk to
        // a second plus each fsync's own duration.
        last_sync = t;
        dirty = None;
        let _ = synced.send(upto);
    }
}

/// How a segment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    Clean,
    /// A torn last frame from byte `at` (of `len`), truncated away.
    Torn {
        at: u64,
        dropped: u64,
    },
    /// Corruption at byte `at` salvaged by `--repair`: everything from
    /// there was dropped.
    Repaired {
        at: u64,
        dropped: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AofError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: not an anykv append-only file (bad header)")]
    BadHeader { path: String },
    #[error("{path}: corrupt at byte {at}: {reason} (start with --repair to drop everything from there)")]
    Corrupt {
        path: String,
        at: u64,
        reason: String,
    },
}

/// Reads a segment's payloads in order, repairing a torn tail (the file is
/// truncated to the last whole frame) and refusing corruption in the
/// middle unless `repair`.
pub fn read_segment(
    path: &Path,
    repair: bool,
    mut each: impl FnMut(&[u8], u64) -> Result<(), String>,
) -> Result<Tail, AofError> {
    let p = path.display().to_string();
    let io_err = |e| AofError::Io {
        path: p.clone(),
        source: e,
    };
    let mut f = File::open(path).map_err(io_err)?;
    let len = f.metadata().map_err(io_err)?.len();
    let mut header = [0u8; 8];
    if len < MAGIC.len() as u64 {
        // Created but the header never made it: an empty segment.
        drop(f);
        truncate_to(path, 0).map_err(io_err)?;
        return Ok(if len == 0 {
            Tail::Clean
        } else {
            Tail::Torn {
                at: 0,
                dropped: len,
            }
        });
    }
    f.read_exact(&mut header).map_err(io_err)?;
    if &header != MAGIC {
        return Err(AofError::BadHeader { path: p });
    }
    let mut r = io::BufReader::with_capacity(1 << 20, f);
    let mut pos = MAGIC.len() as u64;
    let mut buf = Vec::new();
    loop {
        if pos == len {
            return Ok(Tail::Clean);
        }
        let remaining = len - pos;
        let bad = |reason: &str| -> Option<String> { Some(reason.to_string()) };
        let mut problem = None;
        let mut frame_len = 0u64;
        if remaining < FRAME_HEADER as u64 {
            problem = bad("incomplete frame header");
        } else {
            let mut h = [0u8; FRAME_HEADER];
            r.read_exact(&mut h).map_err(io_err)?;
            let n = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as u64;
            let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            frame_len = FRAME_HEADER as u64 + n;
            if n as usize > MAX_FRAME {
                problem = bad("frame length out of range");
            } else if n > remaining - FRAME_HEADER as u64 {
                problem = bad("incomplete frame");
            } else {
                buf.resize(n as usize, 0);
                r.read_exact(&mut buf).map_err(io_err)?;
                if crc32fast::hash(&buf) != crc {
                    problem = bad("frame checksum mismatch");
                }
            }
        }
        match problem {
            None => {
                if let Err(reason) = each(&buf, pos) {
                    return Err(AofError::Corrupt {
                        path: p,
                        at: pos,
                        reason,
                    });
                }
                pos += frame_len;
            }
            Some(reason) => {
                // The last frame (or what is left of one) is a torn append;
                // anything before good data is corruption.
                let is_tail = frame_len == 0 || pos + frame_len >= len;
                let dropped = len - pos;
                if is_tail || repair {
                    truncate_to(path, pos).map_err(io_err)?;
                    return Ok(if is_tail {
                        Tail::Torn { at: pos, dropped }
                    } else {
                        Tail::Repaired { at: pos, dropped }
                    });
                }
                return Err(AofError::Corrupt {
                    path: p,
                    at: pos,
                    reason,
                });
            }
        }
    }
}

fn truncate_to(path: &Path, len: u64) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(len)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("anykv-aof-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.join("seg.aof")
    }

    fn write(path: &Path, chunks: &[&[u8]], policy: FsyncPolicy) {
        let mut w = AofWriter::open(path, policy, 0, &Default::default()).unwrap();
        let mut end = 0;
        for c in chunks {
            end += c.len() as u64;
            w.append(&mut c.to_vec(), end);
            w.write_pending().unwrap();
            assert_eq!(*w.written.borrow(), end);
        }
        if policy == FsyncPolicy::Always {
            // The fsync thread publishes the synced offset.
            let mut rx = w.durable();
            let t0 = Instant::now();
            while *rx.borrow_and_update() < end {
                assert!(t0.elapsed() < Duration::from_secs(10));
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        w.flush().unwrap();
    }

    fn read_all(path: &Path, repair: bool) -> Result<(Vec<u8>, Tail), AofError> {
        let mut all = Vec::new();
        let tail = read_segment(path, repair, |b, _| {
            all.extend_from_slice(b);
            Ok(())
        })?;
        Ok((all, tail))
    }

    #[test]
    fn round_trip_under_each_policy() {
        for p in [FsyncPolicy::Always, FsyncPolicy::EverySec, FsyncPolicy::No] {
            let path = tmp(&format!("{p:?}"));
            write(&path, &[b"*1\r\n$4\r\nPING\r\n", b"abc"], p);
            let (all, tail) = read_all(&path, false).unwrap();
            assert_eq!(all, b"*1\r\n$4\r\nPING\r\nabc");
            assert_eq!(tail, Tail::Clean);
        }
    }

    #[test]
    fn torn_tail_is_truncated_at_every_cut() {
        let path = tmp("torn");
        write(&path, &[b"first", b"second"], FsyncPolicy::No);
        let full = std::fs::read(&path).unwrap();
        let first_end = (MAGIC.len() + FRAME_HEADER + 5) as u64;
        for cut in MAGIC.len() + 1..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let (all, tail) = read_all(&path, false).unwrap();
            let cut = cut as u64;
            if cut < first_end {
                assert_eq!(all, b"", "cut {cut}");
            } else {
                assert_eq!(all, b"first", "cut {cut}");
            }
            assert!(
                matches!(tail, Tail::Torn { .. } | Tail::Clean),
                "cut {cut}: {tail:?}"
            );
            // The file is now whole frames only.
            let len = std::fs::metadata(&path).unwrap().len();
            assert!(
                len == MAGIC.len() as u64 || len == first_end,
                "cut {cut} -> {len}"
            );
        }
    }

    #[test]
    fn corruption_in_the_middle_is_refused_or_repaired() {
        let path = tmp("corrupt");
        write(&path, &[b"first", b"second", b"third"], FsyncPolicy::No);
        let mut bytes = std::fs::read(&path).unwrap();
        // Flip a byte inside "first".
        bytes[MAGIC.len() + FRAME_HEADER + 1] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let err = read_all(&path, false).unwrap_err().to_string();
        assert!(
            err.contains("corrupt at byte 8") && err.contains("seg.aof"),
            "{err}"
        );
        let (all, tail) = read_all(&path, true).unwrap();
        assert_eq!(all, b"");
        assert!(matches!(tail, Tail::Repaired { at: 8, .. }), "{tail:?}");
    }

    #[test]
    fn bad_header_is_refused() {
        let path = tmp("header");
        std::fs::write(&path, b"REDIS0011garbage").unwrap();
        assert!(matches!(
            read_all(&path, false),
            Err(AofError::BadHeader { .. })
        ));
    }

    #[test]
    fn rotate_switches_files() {
        let path = tmp("rotate");
        let mut w = AofWriter::open(&path, FsyncPolicy::Always, 0, &Default::default()).unwrap();
        w.append(&mut b"one".to_vec(), 3);
        let next = path.with_file_name("seg2.aof");
        w.rotate(&next).unwrap();
        w.append(&mut b"two".to_vec(), 6);
        w.flush().unwrap();
        assert_eq!(read_all(&path, false).unwrap().0, b"one");
        assert_eq!(read_all(&next, false).unwrap().0, b"two");
    }
}
