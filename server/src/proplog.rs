//! The propagation log: the ordered stream of a tenant's write *effects*.
//!
//! Like Redis's replication stream, every write appends what it did, not
//! what was asked: relative TTLs become `PEXPIREAT`/`SET ... PXAT`, expiry and
//! eviction become `DEL`, non-deterministic commands are logged as their
//! outcome. Entries are RESP multibulks; a `SELECT` is inserted whenever the
//! database changes, and the offset counts bytes, exactly as Redis's
//! `master_repl_offset` does, so persistence (append-only file) and
//! replication (partial resync from a backlog) can both consume it.
//! Replaying the bytes through the normal command path on an empty keyspace
//! rebuilds an identical keyspace (see the replay test).

use bytes::BytesMut;
use std::collections::VecDeque;

use crate::resp::encode_request;
use crate::util::fmt_i64;

/// Default backlog size (Redis's `repl-backlog-size` default, 1 MB).
pub const DEFAULT_BACKLOG: usize = 1024 * 1024;

pub struct PropLog {
    /// Offset after the last byte appended.
    offset: u64,
    /// Database of the last entry (-1: none yet), to emit SELECT on change.
    last_db: i64,
    /// The database the stream is in after its last byte (-1: unknown):
    /// where a reader that continues from the current offset (a partial
    /// resync, a replica's next link) starts. Unlike `last_db`, a forced
    /// SELECT does not clear it.
    stream_db: i64,
    /// The most recent bytes of the stream (offsets `offset - len .. offset`).
    backlog: VecDeque<u8>,
    backlog_cap: usize,
    /// When set, every byte is also kept here (tests and full-stream consumers).
    capture: Option<BytesMut>,
    scratch: BytesMut,
    /// Effects of the EXEC (or script, or multi-effect command) in
    /// progress, written at commit.
    tx: Option<Tx>,
    /// A finished transaction's buffers, for the next one.
    tx_spare: Tx,
    /// Bytes not yet handed to the append-only log (when it is on).
    sink: Option<Vec<u8>>,
    /// While set, [`PropLog::append`] drops effects: the apply mode, in
    /// which a replica (or a restart) runs effects another log already
    /// holds and appends that log's bytes as they were
    /// ([`PropLog::append_raw`]) instead of re-encoding its own.
    suppressed: bool,
    /// The offset the slowest attached replica has been sent up to: bytes
    /// from there are kept even past `backlog_cap` (Redis 7's shared
    /// replication buffer), at most `retain_cap` of them.
    retain_from: Option<u64>,
    retain_cap: usize,
}

/// A transaction's effects, encoded as they come: the bytes, and each
/// effect's database and where its bytes end.
#[derive(Default)]
struct Tx {
    bytes: BytesMut,
    effects: Vec<(usize, usize)>,
}

impl Default for PropLog {
    fn default() -> Self {
        PropLog::new(DEFAULT_BACKLOG)
    }
}

impl PropLog {
    pub fn new(backlog_cap: usize) -> Self {
        PropLog {
            offset: 0,
            last_db: -1,
            stream_db: -1,
            backlog: VecDeque::new(),
            backlog_cap,
            capture: None,
            scratch: BytesMut::new(),
            tx: None,
            tx_spare: Tx::default(),
            sink: None,
            suppressed: false,
            retain_from: None,
            retain_cap: 0,
        }
    }

    /// Keeps the bytes from `from` (the slowest replica's position; None:
    /// no replica) beyond the backlog's size, up to `cap` bytes: a replica
    /// behind by less than its output-buffer limit continues from here
    /// however small `repl-backlog-size` is.
    pub fn retain_for_replicas(&mut self, from: Option<u64>, cap: usize) {
        self.retain_from = from;
        self.retain_cap = cap;
        self.trim();
    }

    /// Makes the next effect begin with its `SELECT`, whatever the last
    /// database was: every new log segment, replication stream or resync
    /// point must name its database, since whoever reads it from there
    /// starts in database 0 (Redis forces a SELECT the same way).
    pub fn force_select(&mut self) {
        self.last_db = -1;
    }

    /// Sets the offset after the last byte (at start, from the snapshot or
    /// log the data came from; on a replica, from its primary). The backlog
    /// restarts empty there.
    pub fn set_offset(&mut self, offset: u64) {
        self.offset = offset;
        self.backlog.clear();
        self.last_db = -1;
        self.stream_db = -1;
    }

    /// The database the stream is in after its last byte, if known.
    pub fn stream_db(&self) -> Option<usize> {
        usize::try_from(self.stream_db).ok()
    }

    /// Restores [`PropLog::stream_db`] (from a snapshot's metadata).
    pub fn set_stream_db(&mut self, db: Option<usize>) {
        self.stream_db = db.map_or(-1, |d| d as i64);
    }

    /// Starts or stops dropping effects (see `suppressed`).
    pub fn set_suppressed(&mut self, on: bool) {
        self.suppressed = on;
    }

    pub fn is_suppressed(&self) -> bool {
        self.suppressed
    }

    /// Appends bytes of another log as they are (apply mode): one or more
    /// whole RESP commands, leaving the stream in database `db_after`. Offsets
    /// advance by exactly the bytes, so a replica's offsets equal its
    /// primary's and a restart's equal the run that wrote the log.
    pub fn append_raw(&mut self, bytes: &[u8], db_after: usize) {
        self.offset += bytes.len() as u64;
        self.last_db = db_after as i64;
        self.stream_db = db_after as i64;
        if let Some(sink) = self.sink.as_mut() {
            sink.extend_from_slice(bytes);
        }
        self.backlog.extend(bytes.iter().copied());
        if let Some(c) = self.capture.as_mut() {
            c.extend_from_slice(bytes);
        }
        self.trim();
    }

    /// Keeps every byte for the append-only log from now on.
    pub fn enable_sink(&mut self) {
        self.sink.get_or_insert_with(Vec::new);
    }

    pub fn disable_sink(&mut self) {
        self.sink = None;
    }

    /// The bytes logged and not yet handed to the append-only log (None:
    /// AOF off); the caller clears what it took.
    pub fn sink_mut(&mut self) -> Option<&mut Vec<u8>> {
        self.sink.as_mut()
    }

    /// Keeps the whole stream in memory from now on (tests, replay).
    pub fn enable_capture(&mut self) {
        self.capture = Some(BytesMut::new());
    }

    /// Takes the captured stream so far.
    pub fn take_capture(&mut self) -> BytesMut {
        self.capture
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes currently held in the backlog.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    pub fn backlog_cap(&self) -> usize {
        self.backlog_cap
    }

    pub fn set_backlog_cap(&mut self, cap: usize) {
        self.backlog_cap = cap;
        self.trim();
    }

    /// Whether a transaction's effects are being collected (EXEC, a
    /// script).
    pub fn in_tx(&self) -> bool {
        self.tx.is_some()
    }

    /// Starts collecting the effects of a transaction (EXEC).
    pub fn begin_tx(&mut self) {
        let mut tx = std::mem::take(&mut self.tx_spare);
        tx.bytes.clear();
        tx.effects.clear();
        self.tx = Some(tx);
    }

    /// Writes the transaction's effects: wrapped in MULTI/EXEC when there
    /// is more than one, so a replica applies them atomically, as Redis
    /// propagates transactions.
    pub fn commit_tx(&mut self) {
        let Some(tx) = self.tx.take() else {
            return;
        };
        if self.suppressed {
            return;
        }
        let wrap = tx.effects.len() > 1;
        if wrap {
            let db = tx.effects[0].0;
            self.append(db, &[b"MULTI"]);
        }
        let mut start = 0;
        for &(db, end) in &tx.effects {
            let effect = &tx.bytes[start..end];
            self.write(db, |b| b.extend_from_slice(effect));
            start = end;
        }
        if wrap {
            let db = tx.effects[tx.effects.len() - 1].0;
            self.append(db, &[b"EXEC"]);
        }
        // (A large transaction's buffer is not kept for the next one.)
        if tx.bytes.capacity() <= 64 << 10 {
            self.tx_spare = tx;
        }
    }

    /// Appends a command that belongs to no database (the replication
    /// stream's PING and REPLCONF GETACK): no SELECT before it.
    pub fn append_no_db(&mut self, args: &[&[u8]]) {
        let (last, stream) = (self.last_db, self.stream_db);
        // Pretend the stream is in database 0 so no SELECT is written,
        // then restore what the next effect must do.
        self.last_db = last.max(0);
        self.append(last.max(0) as usize, args);
        self.last_db = last;
        self.stream_db = stream;
    }

    /// Appends one effect executed in database `db`.
    pub fn append(&mut self, db: usize, args: &[&[u8]]) {
        if self.suppressed {
            return;
        }
        if let Some(tx) = self.tx.as_mut() {
            encode_request(&mut tx.bytes, args);
            tx.effects.push((db, tx.bytes.len()));
            return;
        }
        self.write(db, |b| encode_request(b, args));
    }

    /// Writes an effect in database `db` (a SELECT first if the stream is
    /// in another), its bytes written by `body`.
    fn write(&mut self, db: usize, body: impl FnOnce(&mut BytesMut)) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        self.stream_db = db as i64;
        if self.last_db != db as i64 {
            let mut b = [0u8; 20];
            encode_request(&mut scratch, &[b"SELECT", fmt_i64(db as i64, &mut b)]);
            self.last_db = db as i64;
        }
        body(&mut scratch);
        self.offset += scratch.len() as u64;
        if let Some(sink) = self.sink.as_mut() {
            sink.extend_from_slice(&scratch);
        }
        self.backlog.extend(scratch.iter().copied());
        if let Some(c) = self.capture.as_mut() {
            c.extend_from_slice(&scratch);
        }
        self.scratch = scratch;
        self.trim();
    }

    fn trim(&mut self) {
        let mut keep = self.backlog_cap;
        if let Some(from) = self.retain_from {
            let behind = usize::try_from(self.offset.saturating_sub(from)).unwrap_or(usize::MAX);
            keep = keep.max(behind.min(self.retain_cap));
        }
        if self.backlog.len() > keep {
            let excess = self.backlog.len() - keep;
            self.backlog.drain(..excess);
        }
        // A slow replica may have made the buffer grow far past the
        // backlog; give that memory back once it is no longer needed.
        if self.backlog.capacity() > 4 * keep.max(self.backlog.len()) + (64 << 10) {
            self.backlog.shrink_to(2 * keep.max(self.backlog.len()));
        }
    }

    /// Bytes the backlog's buffer has allocated (what it costs, which may
    /// exceed what it holds).
    pub fn backlog_alloc(&self) -> usize {
        self.backlog.capacity()
    }

    /// Bytes from `from` to the current offset, if still in the backlog
    /// (what a partial resync would send).
    pub fn since(&self, from: u64) -> Option<Vec<u8>> {
        self.since_at_most(from, usize::MAX)
    }

    /// At most `max` of the bytes from `from`, if still in the backlog: a
    /// replica link copies a bounded piece at a time, so a slow replica
    /// costs its primary the bytes the log keeps for it, not a second copy
    /// of them. A piece may end inside a command; the stream is bytes.
    pub fn since_at_most(&self, from: u64, max: usize) -> Option<Vec<u8>> {
        let start = self.offset - self.backlog.len() as u64;
        if from < start || from > self.offset {
            return None;
        }
        let skip = (from - start) as usize;
        Some(self.backlog.iter().skip(skip).take(max).copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_replicas_bytes_are_kept_past_the_backlog_up_to_its_limit() {
        let mut l = PropLog::new(100);
        l.append(0, &[b"SET", b"k", b"v"]);
        let slow = l.offset();
        l.retain_for_replicas(Some(slow), 1000);
        for _ in 0..20 {
            l.append(0, &[b"SET", b"k", b"v"]);
        }
        // 20 * 27 bytes past the slow replica, more than the backlog's 100.
        assert_eq!(l.since(slow).map(|b| b.len()), Some(20 * 27));
        // Beyond its limit the bytes go, as they would without a replica.
        for _ in 0..40 {
            l.append(0, &[b"SET", b"k", b"v"]);
        }
        assert!(l.since(slow).is_none());
        assert_eq!(l.backlog_len(), 1000);
        // No replica: the backlog's size again.
        l.retain_for_replicas(None, 1000);
        assert_eq!(l.backlog_len(), 100);
    }

    #[test]
    fn select_is_inserted_on_db_change_and_offsets_count_bytes() {
        let mut l = PropLog::new(1 << 20);
        l.enable_capture();
        l.append(0, &[b"SET", b"k", b"v"]);
        l.append(0, &[b"DEL", b"k"]);
        l.append(3, &[b"DEL", b"k"]);
        let all = l.take_capture();
        let expect = b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n";
        assert_eq!(&all[..], &expect[..]);
        assert_eq!(l.offset(), expect.len() as u64);
    }

    #[test]
    fn force_select_starts_the_next_effect_with_its_database() {
        let mut l = PropLog::new(1 << 20);
        l.enable_capture();
        l.append(3, &[b"SET", b"a", b"1"]);
        l.take_capture();
        l.append(3, &[b"SET", b"b", b"2"]);
        assert!(!l.take_capture().starts_with(b"*2\r\n$6\r\nSELECT"));
        l.force_select();
        l.append(3, &[b"SET", b"c", b"3"]);
        assert!(l
            .take_capture()
            .starts_with(b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n"));
    }

    #[test]
    fn raw_appends_keep_offsets_and_suppressed_effects_vanish() {
        let mut l = PropLog::new(1 << 20);
        l.set_offset(1000);
        l.enable_capture();
        l.set_suppressed(true);
        l.append(0, &[b"SET", b"a", b"1"]);
        l.set_suppressed(false);
        assert_eq!(l.offset(), 1000);
        let raw = b"*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n";
        l.append_raw(raw, 2);
        assert_eq!(l.offset(), 1000 + raw.len() as u64);
        assert_eq!(&l.take_capture()[..], &raw[..]);
        assert_eq!(l.since(1000).unwrap(), raw.to_vec());
        // The stream is in db 2 now: no SELECT before the next db-2 effect.
        l.append(2, &[b"DEL", b"x"]);
        assert!(l.take_capture().starts_with(b"*2\r\n$3\r\nDEL"));
    }

    #[test]
    fn stream_commands_carry_no_select() {
        let mut l = PropLog::new(1 << 20);
        l.enable_capture();
        l.append_no_db(&[b"PING"]);
        l.append(2, &[b"DEL", b"k"]);
        l.append_no_db(&[b"PING"]);
        l.append(2, &[b"DEL", b"k"]);
        let got = l.take_capture();
        let want = b"*1\r\n$4\r\nPING\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n";
        assert_eq!(&got[..], &want[..]);
    }

    #[test]
    fn backlog_is_bounded_and_serves_partial_resync() {
        let mut l = PropLog::new(64);
        for _ in 0..10 {
            l.append(0, &[b"INCR", b"counter"]);
        }
        assert!(l.backlog_len() <= 64);
        let tail = l.since(l.offset() - 10).unwrap();
        assert_eq!(tail.len(), 10);
        assert!(l.since(0).is_none());
    }
}
