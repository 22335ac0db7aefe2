//! Snapshot files: the framing around [`super::codec`] records.
//!
//! A snapshot is written front to back by a background thread from chunks
//! of pre-encoded records, and read front to back (from a file at startup,
//! or, once replication lands, from a socket during a replica's full
//! sync), so the format is a
//! stream of checksummed frames that never needs seeking or the whole file
//! in memory.
//!
//! # Layout (all integers little-endian)
//!
//! ```text
//! offset 0   magic "ANYKVSNP"                      8 bytes
//!        8   u32 format version (1)
//!       12   frames:
//!              u8     kind   1 header, 2 records, 3 partial records, 4 trailer
//!              u8[3]  zero
//!              u32    payload length (at most MAX_FRAME_PAYLOAD)
//!              u32    record count (records frames; 0 otherwise)
//!              u32    CRC-32 of the 12 bytes above
//!              payload
//!              u32    CRC-32 of the payload
//! ```
//!
//! * The first frame is the **header** (kind 1): [`SnapshotMeta`].
//! * Each [`SnapshotWriter::push_block`] writes one **records** frame
//!   (kind 2): `count` whole records back to back. A chunk larger than
//!   [`MAX_FRAME_PAYLOAD`] is cut into **partial** frames (kind 3, count 0)
//!   followed by a records frame with the rest and the count; the reader
//!   joins them before decoding, so a single huge value (a multi-gigabyte
//!   hash) still fits the format while no frame is ever bigger than the
//!   limit.
//! * The last frame is the **trailer** (kind 4): u64 total records, then
//!   the CRC-32 of every byte of the file before the trailer frame. Nothing
//!   may follow it.
//!
//! Every byte is covered: magic and version are compared, each frame
//! header and payload carries its own CRC, and the whole-file CRC in the
//! trailer catches frames that are individually valid but missing,
//! duplicated or reordered. A frame header has its own CRC so a damaged
//! length is reported as corruption at that frame, before it is used to
//! read anything; a file that simply ends early (a crash mid-write, a
//! dropped connection) is reported as truncated at the byte where it ends,
//! never accepted, since only the trailer ends a snapshot.
//!
//! The checksums are CRC-32 (IEEE, via `crc32fast`, hardware-accelerated)
//! rather than CRC-32C: the detection strength is the same for this use,
//! and it is the one small, well-kept crate at hand.

use std::io::{self, BufReader, BufWriter, Read, Write};

use crc32fast::Hasher as Crc;
use thiserror::Error;

use super::codec::{decode_entry, Record, Thresholds};
use crate::db::Value;

/// The first eight bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"ANYKVSNP";
/// The format version this module writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Largest frame payload. Bounds what a reader allocates on the word of a
/// (checksummed) length field, and how much a writer's chunk is cut into.
pub const MAX_FRAME_PAYLOAD: usize = 16 << 20;

const K_HEADER: u8 = 1;
const K_RECORDS: u8 = 2;
const K_PARTIAL: u8 = 3;
const K_TRAILER: u8 = 4;
const FRAME_HEAD: usize = 16;
const TRAILER_LEN: usize = 12;
const IO_BUF: usize = 128 << 10;

/// What a snapshot says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// When the snapshot began (Unix ms).
    pub created_ms: i64,
    /// The propagation-log offset the snapshot is consistent with: replay
    /// from here on top of it.
    pub offset: u64,
    /// Number of databases of the keyspace; every record's db is below it.
    pub databases: u32,
    /// Keys in the snapshot. [`read_snapshot`] reports the exact count
    /// from the trailer; the header holds what was passed to
    /// [`SnapshotWriter::new`] (an estimate, if the caller had one, that a
    /// loader can pre-size with after [`read_snapshot_meta`]).
    pub keys: u64,
    /// Free-form key/value pairs (versions, replication ids...).
    pub aux: Vec<(String, String)>,
}

/// Why a snapshot could not be read.
#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("snapshot I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("not a snapshot (bad magic)")]
    BadMagic,
    #[error("unsupported snapshot format version {0} (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion(u32),
    #[error("snapshot corrupt at byte {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
    #[error("snapshot truncated at byte {offset}")]
    Truncated { offset: u64 },
}

fn corrupt(offset: u64, reason: impl Into<String>) -> SnapshotError {
    SnapshotError::Corrupt {
        offset,
        reason: reason.into(),
    }
}

#[inline]
fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

#[inline]
fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

// ---------------------------------------------------------------------------
// Header block
// ---------------------------------------------------------------------------
//
// i64 created_ms, u64 offset, u32 databases, u64 keys, u32 aux pairs, then
// per pair: u32 length + UTF-8 name, u32 length + UTF-8 value.

fn encode_meta(m: &SnapshotMeta) -> io::Result<Vec<u8>> {
    let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "snapshot header too large");
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&m.created_ms.to_le_bytes());
    out.extend_from_slice(&m.offset.to_le_bytes());
    out.extend_from_slice(&m.databases.to_le_bytes());
    out.extend_from_slice(&m.keys.to_le_bytes());
    let n = u32::try_from(m.aux.len()).map_err(|_| too_big())?;
    out.extend_from_slice(&n.to_le_bytes());
    for (k, v) in &m.aux {
        for s in [k, v] {
            let n = u32::try_from(s.len()).map_err(|_| too_big())?;
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    if out.len() > MAX_FRAME_PAYLOAD {
        return Err(too_big());
    }
    Ok(out)
}

/// A read position in the header payload, which starts at file offset
/// `base`.
struct MetaCur<'a> {
    b: &'a [u8],
    p: usize,
    base: u64,
}

impl<'a> MetaCur<'a> {
    fn at(&self) -> u64 {
        self.base + self.p as u64
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.b.len() - self.p < n {
            return Err(corrupt(self.at(), "header block too short"));
        }
        self.p += n;
        Ok(&self.b[self.p - n..self.p])
    }

    fn string(&mut self) -> Result<String, SnapshotError> {
        let len = le32(self.take(4)?) as usize;
        let at = self.at();
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| corrupt(at, "header string is not UTF-8"))
    }
}

/// Parses the header payload, which starts at file offset `base`.
fn decode_meta(b: &[u8], base: u64) -> Result<SnapshotMeta, SnapshotError> {
    let mut c = MetaCur { b, p: 0, base };
    let created_ms = le64(c.take(8)?) as i64;
    let offset = le64(c.take(8)?);
    let databases = le32(c.take(4)?);
    let keys = le64(c.take(8)?);
    let n = le32(c.take(4)?);
    let mut aux = Vec::new();
    for _ in 0..n {
        let k = c.string()?;
        let v = c.string()?;
        aux.push((k, v));
    }
    if c.p != b.len() {
        return Err(corrupt(c.at(), "unexpected bytes after the header"));
    }
    Ok(SnapshotMeta {
        created_ms,
        offset,
        databases,
        keys,
        aux,
    })
}

// ---------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------

/// Writes a snapshot. After an I/O error the output is incomplete (it has
/// no trailer, so readers refuse it): drop the writer and the file.
pub struct SnapshotWriter<W: Write> {
    w: BufWriter<W>,
    /// CRC of every byte written so far (for the trailer).
    file_crc: Crc,
    bytes: u64,
    records: u64,
    /// Largest frame payload written (tests lower it to exercise partial
    /// frames).
    frame_limit: usize,
}

impl<W: Write> SnapshotWriter<W> {
    /// Starts a snapshot: writes the magic, the version and `meta`.
    pub fn new(w: W, meta: &SnapshotMeta) -> io::Result<Self> {
        let mut s = SnapshotWriter {
            w: BufWriter::with_capacity(IO_BUF, w),
            file_crc: Crc::new(),
            bytes: 0,
            records: 0,
            frame_limit: MAX_FRAME_PAYLOAD,
        };
        let mut head = [0u8; 12];
        head[..8].copy_from_slice(&MAGIC);
        head[8..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        s.raw(&head)?;
        let m = encode_meta(meta)?;
        s.frame(K_HEADER, 0, &m)?;
        Ok(s)
    }

    fn raw(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.file_crc.update(b);
        self.bytes += b.len() as u64;
        Ok(())
    }

    fn frame(&mut self, kind: u8, count: u32, payload: &[u8]) -> io::Result<()> {
        debug_assert!(payload.len() <= MAX_FRAME_PAYLOAD);
        let mut h = [0u8; FRAME_HEAD];
        h[0] = kind;
        h[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        h[8..12].copy_from_slice(&count.to_le_bytes());
        let hcrc = crc32fast::hash(&h[..12]);
        h[12..].copy_from_slice(&hcrc.to_le_bytes());
        self.raw(&h)?;
        // Checksum the payload once and fold it into the file CRC.
        let mut pc = Crc::new();
        pc.update(payload);
        let pcrc = pc.clone().finalize();
        self.w.write_all(payload)?;
        self.file_crc.combine(&pc);
        self.bytes += payload.len() as u64;
        self.raw(&pcrc.to_le_bytes())
    }

    /// Writes `records`, which holds exactly `count` whole records from
    /// [`super::codec::encode_entry`], as one block (cut into several
    /// frames only if larger than [`MAX_FRAME_PAYLOAD`]). An empty block
    /// writes nothing.
    pub fn push_block(&mut self, records: &[u8], count: u32) -> io::Result<()> {
        if records.is_empty() && count == 0 {
            return Ok(());
        }
        if records.is_empty() || count == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "snapshot block of {} bytes with {count} records",
                    records.len()
                ),
            ));
        }
        let mut rest = records;
        while rest.len() > self.frame_limit {
            let (part, tail) = rest.split_at(self.frame_limit);
            self.frame(K_PARTIAL, 0, part)?;
            rest = tail;
        }
        self.frame(K_RECORDS, count, rest)?;
        self.records += u64::from(count);
        Ok(())
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes written so far (including what is still buffered).
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Writes the trailer and flushes; returns the output so the caller
    /// can fsync and rename it.
    pub fn finish(mut self) -> io::Result<W> {
        let file_crc = self.file_crc.clone().finalize();
        let mut t = [0u8; TRAILER_LEN];
        t[..8].copy_from_slice(&self.records.to_le_bytes());
        t[8..].copy_from_slice(&file_crc.to_le_bytes());
        self.frame(K_TRAILER, 0, &t)?;
        let mut w = self.w.into_inner().map_err(|e| e.into_error())?;
        w.flush()?;
        Ok(w)
    }
}

// ---------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------

struct Frame {
    /// File offset of the frame.
    start: u64,
    kind: u8,
    count: u32,
    /// The file CRC of everything before this frame (checked by the
    /// trailer).
    crc_before: u32,
}

/// Reads a snapshot: the header when opened, then the records. Use it
/// instead of [`read_snapshot`] to see the header (e.g. `databases`, or a
/// key estimate to pre-size with) before loading from a single stream.
pub struct SnapshotReader<R: Read> {
    r: BufReader<R>,
    /// Bytes consumed so far (the offset errors report).
    pos: u64,
    file_crc: Crc,
    meta: SnapshotMeta,
    /// The current frame's payload (reused between frames).
    payload: Vec<u8>,
}

impl<R: Read> SnapshotReader<R> {
    /// Reads and checks the magic, the version and the header block.
    pub fn new(r: R) -> Result<Self, SnapshotError> {
        let mut s = SnapshotReader {
            r: BufReader::with_capacity(IO_BUF, r),
            pos: 0,
            file_crc: Crc::new(),
            meta: SnapshotMeta::default(),
            payload: Vec::new(),
        };
        let mut head = [0u8; 12];
        let n = s.fill(&mut head[..8])?;
        if head[..n] != MAGIC[..n] {
            return Err(SnapshotError::BadMagic);
        }
        if n < 8 {
            return Err(SnapshotError::Truncated { offset: s.pos });
        }
        s.exact(&mut head[8..])?;
        let version = le32(&head[8..]);
        if version != FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        s.file_crc.update(&head);
        let f = s.frame()?;
        if f.kind != K_HEADER || f.count != 0 {
            return Err(corrupt(f.start, "first block is not a header block"));
        }
        s.meta = decode_meta(&s.payload, f.start + FRAME_HEAD as u64)?;
        Ok(s)
    }

    /// The header block (`keys` as the writer was given it).
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Reads up to `buf.len()` bytes, fewer only at end of input; returns
    /// the count.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, SnapshotError> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.pos += n as u64;
                    return Err(SnapshotError::Io(e));
                }
            }
        }
        self.pos += n as u64;
        Ok(n)
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<(), SnapshotError> {
        if self.fill(buf)? < buf.len() {
            return Err(SnapshotError::Truncated { offset: self.pos });
        }
        Ok(())
    }

    /// Reads and verifies the next frame into `self.payload`.
    fn frame(&mut self) -> Result<Frame, SnapshotError> {
        let start = self.pos;
        let crc_before = self.file_crc.clone().finalize();
        let mut h = [0u8; FRAME_HEAD];
        self.exact(&mut h)?;
        if crc32fast::hash(&h[..12]) != le32(&h[12..]) {
            return Err(corrupt(start, "block header checksum mismatch"));
        }
        if h[1..4] != [0, 0, 0] {
            return Err(corrupt(start, "reserved block header bytes are set"));
        }
        let len = le32(&h[4..8]) as usize;
        if len > MAX_FRAME_PAYLOAD {
            return Err(corrupt(
                start,
                format!("block length {len} exceeds the limit of {MAX_FRAME_PAYLOAD}"),
            ));
        }
        let mut p = std::mem::take(&mut self.payload);
        p.clear();
        p.resize(len, 0);
        self.exact(&mut p)?;
        let mut crc = [0u8; 4];
        self.exact(&mut crc)?;
        let mut pc = Crc::new();
        pc.update(&p);
        if pc.clone().finalize() != le32(&crc) {
            return Err(corrupt(start, "block checksum mismatch"));
        }
        self.file_crc.update(&h);
        self.file_crc.combine(&pc);
        self.file_crc.update(&crc);
        self.payload = p;
        Ok(Frame {
            start,
            kind: h[0],
            count: le32(&h[8..12]),
            crc_before,
        })
    }

    /// Reads every record, passing each to `sink` in file order, through
    /// the trailer; returns the header with `keys` set to the number of
    /// records the snapshot holds. Empty collections (which Redis never
    /// stores) are skipped, as Redis's loader skips empty keys. Expired
    /// keys are passed on: dropping them is the loader's policy.
    pub fn read_records(
        mut self,
        t: &Thresholds,
        mut sink: impl FnMut(Record),
    ) -> Result<SnapshotMeta, SnapshotError> {
        let mut total: u64 = 0;
        let mut skipped: u64 = 0;
        // A block cut into partial frames, joined, with where each piece
        // came from in the file (for error offsets).
        let mut carry: Vec<u8> = Vec::new();
        let mut pieces: Vec<(usize, u64)> = Vec::new();
        loop {
            let f = self.frame()?;
            let payload_at = f.start + FRAME_HEAD as u64;
            match f.kind {
                K_PARTIAL => {
                    if f.count != 0 {
                        return Err(corrupt(f.start, "partial block with a record count"));
                    }
                    pieces.push((carry.len(), payload_at));
                    carry.extend_from_slice(&self.payload);
                }
                K_RECORDS => {
                    if f.count == 0 {
                        return Err(corrupt(f.start, "records block without records"));
                    }
                    let block = Block {
                        count: f.count,
                        databases: self.meta.databases,
                    };
                    if carry.is_empty() {
                        block.decode(
                            &self.payload,
                            &[(0, payload_at)],
                            t,
                            &mut sink,
                            &mut skipped,
                        )?;
                    } else {
                        pieces.push((carry.len(), payload_at));
                        carry.extend_from_slice(&self.payload);
                        block.decode(&carry, &pieces, t, &mut sink, &mut skipped)?;
                        carry = Vec::new();
                        pieces.clear();
                    }
                    total += u64::from(f.count);
                }
                K_TRAILER => {
                    if !carry.is_empty() {
                        return Err(corrupt(f.start, "partial block not completed"));
                    }
                    if f.count != 0 || self.payload.len() != TRAILER_LEN {
                        return Err(corrupt(f.start, "malformed trailer"));
                    }
                    let records = le64(&self.payload);
                    if le32(&self.payload[8..]) != f.crc_before {
                        return Err(corrupt(
                            f.start,
                            "file checksum mismatch (blocks missing, duplicated or reordered)",
                        ));
                    }
                    if records != total {
                        return Err(corrupt(
                            f.start,
                            format!("trailer counts {records} records, blocks hold {total}"),
                        ));
                    }
                    let end = self.pos;
                    if self.fill(&mut [0u8; 1])? != 0 {
                        return Err(corrupt(end, "data after the trailer"));
                    }
                    if skipped > 0 {
                        tracing::warn!(skipped, "snapshot: skipped empty collections");
                    }
                    let mut meta = self.meta;
                    meta.keys = total;
                    return Ok(meta);
                }
                K_HEADER => return Err(corrupt(f.start, "second header block")),
                k => return Err(corrupt(f.start, format!("unknown block kind {k}"))),
            }
        }
    }
}

/// A records block being decoded.
struct Block {
    count: u32,
    databases: u32,
}

impl Block {
    /// Decodes `self.count` records filling `data` exactly. `pieces` maps
    /// offsets in `data` to file offsets (ascending, first at 0).
    fn decode(
        &self,
        data: &[u8],
        pieces: &[(usize, u64)],
        t: &Thresholds,
        sink: &mut impl FnMut(Record),
        skipped: &mut u64,
    ) -> Result<(), SnapshotError> {
        let file_offset = |at: usize| -> u64 {
            let i = pieces.partition_point(|p| p.0 <= at).saturating_sub(1);
            pieces.get(i).map_or(0, |p| p.1 + (at - p.0.min(at)) as u64)
        };
        let mut input = data;
        for i in 0..self.count {
            let at = data.len() - input.len();
            let rec = decode_entry(&mut input, t)
                .map_err(|e| corrupt(file_offset(at), format!("record {i} of its block: {e}")))?;
            if rec.db >= self.databases {
                return Err(corrupt(
                    file_offset(at),
                    format!(
                        "record for database {} in a snapshot of {} databases",
                        rec.db, self.databases
                    ),
                ));
            }
            if is_empty_collection(&rec.value) {
                *skipped += 1;
                continue;
            }
            sink(rec);
        }
        if !input.is_empty() {
            return Err(corrupt(
                file_offset(data.len() - input.len()),
                format!(
                    "{} bytes after the block's {} records",
                    input.len(),
                    self.count
                ),
            ));
        }
        Ok(())
    }
}

fn is_empty_collection(v: &Value) -> bool {
    match v {
        Value::Str(_) => false,
        Value::List(l) => l.is_empty(),
        Value::Hash(h) => h.is_empty(),
        Value::Set(s) => s.is_empty(),
        Value::ZSet(z) => z.is_empty(),
        // (An empty stream is a value: its last id is kept.)
        Value::Stream(_) => false,
    }
}

/// Reads a whole snapshot, passing every record to `sink` in file order;
/// returns its header with `keys` the exact number of records. Reads
/// through a buffer, one block at a time.
pub fn read_snapshot(
    r: impl Read,
    t: &Thresholds,
    sink: impl FnMut(Record),
) -> Result<SnapshotMeta, SnapshotError> {
    SnapshotReader::new(r)?.read_records(t, sink)
}

/// Reads only the header (`keys` is the writer's estimate, see
/// [`SnapshotMeta::keys`]); does not check the rest of the file.
pub fn read_snapshot_meta(r: impl Read) -> Result<SnapshotMeta, SnapshotError> {
    Ok(SnapshotReader::new(r)?.meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::hash::{Hash, HashLimits};
    use crate::db::list::List;
    use crate::db::set::Set;
    use crate::db::zset::{self, ZSet};
    use crate::db::{Keyspace, StrEnc, NO_EXPIRE};
    use crate::persist::codec::encode_entry;
    use crate::sds::Sds;
    use crate::util::parse_i64;
    use proptest::prelude::*;

    fn meta(databases: u32) -> SnapshotMeta {
        SnapshotMeta {
            created_ms: 1_700_000_000_123,
            offset: 987_654_321,
            databases,
            keys: 0,
            aux: vec![
                ("anykv-ver".into(), "0.1.0".into()),
                ("repl-id".into(), "ünïcode ✓".into()),
                (String::new(), String::new()),
            ],
        }
    }

    /// Writes `ks` with at most `per_block` records per block and frames
    /// of at most `frame_limit` bytes.
    fn write_keyspace(ks: &Keyspace, per_block: usize, frame_limit: usize) -> Vec<u8> {
        let mut w = SnapshotWriter::new(Vec::new(), &meta(ks.dbs.len() as u32)).unwrap();
        w.frame_limit = frame_limit;
        let mut chunk = Vec::new();
        let mut n = 0u32;
        for (dbi, db) in ks.dbs.iter().enumerate() {
            for e in db.iter() {
                encode_entry(&mut chunk, dbi as u32, &e.key, &e.value, e.expire_at);
                n += 1;
                if n as usize >= per_block {
                    w.push_block(&chunk, n).unwrap();
                    chunk.clear();
                    n = 0;
                }
            }
        }
        w.push_block(&chunk, n).unwrap();
        assert_eq!(w.records(), ks.total_keys() as u64);
        let bytes = w.bytes_written();
        let out = w.finish().unwrap();
        assert!(out.len() as u64 > bytes);
        out
    }

    fn load(file: &[u8], t: &Thresholds) -> Result<(SnapshotMeta, Keyspace), SnapshotError> {
        let databases = read_snapshot_meta(file)?.databases as usize;
        let mut ks = Keyspace::new(databases);
        let mut dup = false;
        let m = read_snapshot(file, t, |r| {
            let db = &mut ks.dbs[r.db as usize];
            dup |= db.find(&r.key).is_some();
            let idx = db.insert_new(r.key, r.value, 0);
            if r.expire_at != NO_EXPIRE {
                db.set_expire(idx, r.expire_at);
            }
        })?;
        assert!(!dup, "duplicate key in snapshot");
        Ok((m, ks))
    }

    /// The encoding Redis gives a value loaded under `t` (the rules of the
    /// codec's module docs, written out independently).
    fn expected_encoding(v: &Value, t: &Thresholds) -> &'static str {
        match v {
            Value::Str(s) => {
                let mut a = s.clone();
                a.set_flag(StrEnc::Auto as u8);
                Value::Str(a).encoding()
            }
            Value::Stream(_) => "stream",
            Value::List(_) => "quicklist",
            Value::Hash(h) => {
                let fits = h.len() <= t.hash.max_entries
                    && h.iter()
                        .all(|(f, v)| f.byte_len().max(v.byte_len()) <= t.hash.max_value);
                if fits {
                    "listpack"
                } else {
                    "hashtable"
                }
            }
            Value::Set(s) => {
                let ints = s.iter().all(|m| m.with_bytes(|b| parse_i64(b).is_some()));
                if ints && s.len() <= t.set_max_intset_entries {
                    "intset"
                } else {
                    "hashtable"
                }
            }
            Value::ZSet(z) => {
                let fits = z.len() <= t.zset.max_entries
                    && z.iter().all(|(m, _)| m.len() <= t.zset.max_value);
                if fits {
                    "listpack"
                } else {
                    "skiplist"
                }
            }
        }
    }

    /// Same keys, digests and loaded encodings.
    fn check_same(a: &Keyspace, b: &Keyspace, t: &Thresholds) {
        assert_eq!(a.dbs.len(), b.dbs.len());
        assert_eq!(a.total_keys(), b.total_keys());
        assert_eq!(a.digest(), b.digest());
        for (da, db) in a.dbs.iter().zip(&b.dbs) {
            for e in da.iter() {
                let idx = db.find(&e.key).expect("key present");
                let got = db.entry(idx);
                assert_eq!(got.expire_at, e.expire_at);
                assert_eq!(
                    got.value.encoding(),
                    expected_encoding(&e.value, t),
                    "key {:?}",
                    e.key
                );
            }
        }
        for db in &b.dbs {
            let volatile = db.iter().filter(|e| e.has_expire()).count();
            assert_eq!(db.volatile_len(), volatile);
        }
    }

    fn put(ks: &mut Keyspace, db: usize, key: &str, v: Value, at: i64) {
        let t = &mut ks.dbs[db];
        let idx = t.insert_new(Sds::from(key), v, 0);
        if at != NO_EXPIRE {
            t.set_expire(idx, at);
        }
    }

    fn sample_keyspace(t: &Thresholds) -> Keyspace {
        let mut ks = Keyspace::new(4);
        let mut s = Sds::from("abc");
        s.set_flag(StrEnc::Raw as u8);
        put(&mut ks, 0, "raw-short", Value::Str(s), NO_EXPIRE);
        put(&mut ks, 0, "int", Value::from_i64(-42), 1_800_000_000_000);
        put(
            &mut ks,
            0,
            "embstr",
            Value::from_bytes(b"hello world"),
            NO_EXPIRE,
        );
        put(&mut ks, 1, "raw", Value::from_bytes(&[b'r'; 100]), 5);
        put(&mut ks, 1, "plain-int", Value::plain(b"7"), NO_EXPIRE);
        put(
            &mut ks,
            1,
            "binary",
            Value::from_bytes(&[0, 255, 128, 10]),
            NO_EXPIRE,
        );
        for (name, n, vlen) in [("hs", 5, 3), ("hb", 600, 3), ("hl", 3, 100)] {
            let mut h = Hash::default();
            for i in 0..n {
                h.set(
                    format!("f{i}").as_bytes(),
                    format!("{i:0vlen$}").as_bytes(),
                    t.hash,
                );
            }
            put(&mut ks, 2, name, Value::Hash(Box::new(h)), NO_EXPIRE);
        }
        for (name, members) in [
            (
                "si",
                (0..10).map(|i| (i * 3).to_string()).collect::<Vec<_>>(),
            ),
            ("sb", (0..600).map(|i| i.to_string()).collect()),
            ("ss", vec!["a".into(), "1".into(), "b".into()]),
        ] {
            let mut s = Set::new_for(members[0].as_bytes());
            for m in &members {
                s.add(m.as_bytes(), t.set_max_intset_entries);
            }
            put(&mut ks, 2, name, Value::Set(Box::new(s)), 99);
        }
        for (name, n, mlen) in [("zs", 10, 4), ("zb", 200, 4), ("zl", 3, 80)] {
            let mut z = ZSet::new_for(mlen, &t.zset);
            for i in 0..n {
                let score = match i % 4 {
                    0 => i as f64,
                    1 => -(i as f64) / 3.0,
                    2 => f64::INFINITY,
                    _ => 1e300,
                };
                z.add(format!("{i:0mlen$}").as_bytes(), score, 0, &t.zset);
            }
            put(&mut ks, 3, name, Value::ZSet(Box::new(z)), NO_EXPIRE);
        }
        let mut l = List::new();
        for i in 0..300 {
            l.items.push_back(Sds::from(format!("item-{i}").as_str()));
        }
        put(&mut ks, 3, "list", Value::List(Box::new(l)), NO_EXPIRE);
        ks
    }

    #[test]
    fn keyspace_round_trip_every_type_and_encoding() {
        let t = Thresholds::default();
        let ks = sample_keyspace(&t);
        let encodings: std::collections::BTreeSet<&str> = ks
            .dbs
            .iter()
            .flat_map(|d| d.iter().map(|e| e.value.encoding()))
            .collect();
        for want in [
            "int",
            "embstr",
            "raw",
            "listpack",
            "hashtable",
            "intset",
            "skiplist",
            "quicklist",
        ] {
            assert!(encodings.contains(want), "sample lacks {want}");
        }
        for (per_block, limit) in [
            (1, MAX_FRAME_PAYLOAD),
            (5, MAX_FRAME_PAYLOAD),
            (1000, 64),
            (3, 1),
        ] {
            let file = write_keyspace(&ks, per_block, limit);
            let (m, back) = load(&file, &t).unwrap();
            assert_eq!(m.keys, ks.total_keys() as u64);
            assert_eq!(SnapshotMeta { keys: 0, ..m }, meta(4));
            check_same(&ks, &back, &t);
            // The reloaded raw-short string is "embstr", as after Redis's
            // DEBUG RELOAD.
            let db0 = &back.dbs[0];
            let e = db0.entry(db0.find(b"raw-short").unwrap());
            assert_eq!(e.value.encoding(), "embstr");
        }
    }

    #[test]
    fn meta_only_and_empty_snapshot() {
        let mut m = meta(16);
        m.keys = 12345;
        let file = SnapshotWriter::new(Vec::new(), &m)
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(read_snapshot_meta(&file[..]).unwrap(), m);
        let got =
            read_snapshot(&file[..], &Thresholds::default(), |_| panic!("no records")).unwrap();
        assert_eq!(got, SnapshotMeta { keys: 0, ..m });
        // The meta reader does not need the rest of the file.
        let r = SnapshotReader::new(&file[..file.len() - 10]).unwrap();
        assert_eq!(r.meta().offset, m.offset);
    }

    #[test]
    fn empty_collections_are_skipped() {
        let mut chunk = Vec::new();
        encode_entry(&mut chunk, 0, b"e", &Value::Hash(Box::default()), NO_EXPIRE);
        encode_entry(&mut chunk, 0, b"s", &Value::from_bytes(b""), NO_EXPIRE);
        let mut w = SnapshotWriter::new(Vec::new(), &meta(1)).unwrap();
        w.push_block(&chunk, 2).unwrap();
        let file = w.finish().unwrap();
        let mut keys = Vec::new();
        let m = read_snapshot(&file[..], &Thresholds::default(), |r| keys.push(r.key)).unwrap();
        assert_eq!(keys, vec![Sds::from("s")]);
        assert_eq!(m.keys, 2);
    }

    #[test]
    fn writer_refuses_inconsistent_blocks() {
        let mut w = SnapshotWriter::new(Vec::new(), &meta(1)).unwrap();
        assert!(w.push_block(b"", 1).is_err());
        assert!(w.push_block(b"xx", 0).is_err());
        assert!(w.push_block(b"", 0).is_ok());
    }

    fn small_file(frame_limit: usize) -> Vec<u8> {
        let mut ks = Keyspace::new(2);
        put(&mut ks, 0, "a", Value::from_bytes(b"1"), 77);
        put(&mut ks, 1, "bb", Value::from_bytes(b"hello"), NO_EXPIRE);
        let mut z = ZSet::default();
        z.add(b"m", 2.5, 0, &zset::Limits::DEFAULT);
        put(&mut ks, 1, "z", Value::ZSet(Box::new(z)), NO_EXPIRE);
        write_keyspace(&ks, 2, frame_limit)
    }

    fn read_all(b: &[u8]) -> Result<SnapshotMeta, SnapshotError> {
        read_snapshot(b, &Thresholds::default(), |_| {})
    }

    #[test]
    fn every_truncation_is_refused_as_truncated() {
        for limit in [MAX_FRAME_PAYLOAD, 5] {
            let file = small_file(limit);
            assert!(read_all(&file).is_ok());
            for cut in 0..file.len() {
                match read_all(&file[..cut]) {
                    Err(SnapshotError::Truncated { offset }) => assert_eq!(offset, cut as u64),
                    other => panic!("cut at {cut}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        for limit in [MAX_FRAME_PAYLOAD, 5] {
            let file = small_file(limit);
            for i in 0..file.len() {
                for mask in [0x01u8, 0x80, 0xFF] {
                    let mut bad = file.clone();
                    bad[i] ^= mask;
                    let r = read_all(&bad);
                    assert!(r.is_err(), "flip {mask:#x} at {i} accepted");
                    if let Err(SnapshotError::Corrupt { offset, .. }) = r {
                        assert!(offset <= i as u64, "offset {offset} past the flip at {i}");
                    }
                }
            }
            // Trailing bytes after the trailer.
            let mut bad = file.clone();
            bad.push(0);
            assert!(matches!(
                read_all(&bad),
                Err(SnapshotError::Corrupt { offset, .. }) if offset == file.len() as u64
            ));
        }
    }

    /// Offsets of the frames after the magic and version.
    fn frames(file: &[u8]) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut p = 12;
        while p < file.len() {
            let len = le32(&file[p + 4..]) as usize;
            out.push(p..p + FRAME_HEAD + len + 4);
            p += FRAME_HEAD + len + 4;
        }
        out
    }

    #[test]
    fn valid_frames_moved_around_are_refused() {
        let file = small_file(MAX_FRAME_PAYLOAD);
        let f = frames(&file);
        assert_eq!(f.len(), 4, "header, two records blocks, trailer");
        let splice = |order: &[usize]| {
            let mut out = file[..12].to_vec();
            for &i in order {
                out.extend_from_slice(&file[f[i].clone()]);
            }
            out
        };
        assert!(read_all(&splice(&[0, 1, 2, 3])).is_ok());
        for order in [
            &[0, 2, 1, 3][..],
            &[0, 1, 3],
            &[0, 1, 1, 2, 3],
            &[0, 0, 1, 2, 3],
            &[1, 2, 3],
        ] {
            let r = read_all(&splice(order));
            assert!(
                matches!(r, Err(SnapshotError::Corrupt { .. })),
                "{order:?}: {r:?}"
            );
        }
    }

    #[test]
    fn errors_read_well() {
        let file = small_file(MAX_FRAME_PAYLOAD);
        let mut bad = file.clone();
        let at = frames(&file)[1].start + FRAME_HEAD + 1;
        bad[at] ^= 1;
        let e = read_all(&bad).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "snapshot corrupt at byte {}: block checksum mismatch",
                frames(&file)[1].start
            )
        );
        assert_eq!(
            read_all(&file[..20]).unwrap_err().to_string(),
            "snapshot truncated at byte 20"
        );
        assert!(matches!(
            read_all(b"REDIS0011"),
            Err(SnapshotError::BadMagic)
        ));
        assert!(matches!(
            read_all(b""),
            Err(SnapshotError::Truncated { offset: 0 })
        ));
        let mut v2 = file.clone();
        v2[8] = 2;
        assert!(matches!(
            read_all(&v2),
            Err(SnapshotError::UnsupportedVersion(2))
        ));
    }

    #[test]
    fn record_errors_point_into_the_file() {
        // A block whose checksums are right but whose record is not (a
        // writer bug): reported as corrupt at the record's byte.
        let mut chunk = Vec::new();
        encode_entry(&mut chunk, 0, b"ok", &Value::from_bytes(b"v"), NO_EXPIRE);
        let bad_at = chunk.len();
        chunk.extend_from_slice(&[0, 1, b'k', 0x0E, 0]);
        for limit in [MAX_FRAME_PAYLOAD, 3] {
            let mut w = SnapshotWriter::new(Vec::new(), &meta(1)).unwrap();
            w.frame_limit = limit;
            w.push_block(&chunk, 2).unwrap();
            let file = w.finish().unwrap();
            // Find the record's bytes in the file (payload pieces are in
            // order; with frame cuts, skip frame overheads).
            let mut want = 0u64;
            let mut seen = 0usize;
            for r in frames(&file).into_iter().skip(1) {
                let len = r.len() - FRAME_HEAD - 4;
                if seen + len > bad_at {
                    want = (r.start + FRAME_HEAD + bad_at - seen) as u64;
                    break;
                }
                seen += len;
            }
            match read_all(&file) {
                Err(SnapshotError::Corrupt { offset, reason }) => {
                    assert_eq!(offset, want, "{reason}");
                    assert!(reason.contains("invalid record head"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
        // A record for a database beyond the header's count.
        let mut chunk = Vec::new();
        encode_entry(&mut chunk, 1, b"k", &Value::from_bytes(b"v"), NO_EXPIRE);
        let mut w = SnapshotWriter::new(Vec::new(), &meta(1)).unwrap();
        w.push_block(&chunk, 1).unwrap();
        let file = w.finish().unwrap();
        assert!(matches!(
            read_all(&file),
            Err(SnapshotError::Corrupt { .. })
        ));
        // A count that disagrees with the block's records.
        for n in [1, 3] {
            let mut chunk = Vec::new();
            for k in [b"a", b"b"] {
                encode_entry(&mut chunk, 0, k, &Value::from_bytes(b"v"), NO_EXPIRE);
            }
            let mut w = SnapshotWriter::new(Vec::new(), &meta(1)).unwrap();
            w.push_block(&chunk, n).unwrap();
            let file = w.finish().unwrap();
            assert!(matches!(
                read_all(&file),
                Err(SnapshotError::Corrupt { .. })
            ));
        }
    }

    // -----------------------------------------------------------------------
    // Random keyspaces
    // -----------------------------------------------------------------------

    fn elem() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (-50i64..50).prop_map(|n| n.to_string().into_bytes()),
            proptest::sample::select(vec![
                "a",
                "b",
                "-0",
                "007",
                "",
                "9223372036854775807",
                "-9223372036854775808",
                "9223372036854775808",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
            proptest::collection::vec(any::<u8>(), 0..6),
            proptest::collection::vec(b'x'..=b'z', 10..40),
        ]
    }

    fn score() -> impl Strategy<Value = f64> {
        prop_oneof![
            (-20i64..20).prop_map(|n| n as f64),
            (-1e6f64..1e6),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(1e300),
        ]
    }

    #[derive(Clone, Debug)]
    enum Spec {
        Str(Vec<u8>, u8),
        List(Vec<Vec<u8>>),
        Hash(Vec<(Vec<u8>, Vec<u8>)>),
        Set(Vec<Vec<u8>>),
        ZSet(Vec<(Vec<u8>, f64)>),
    }

    fn spec() -> impl Strategy<Value = Spec> {
        let v = || proptest::collection::vec(elem(), 1..40);
        prop_oneof![
            (elem(), 0u8..4).prop_map(|(b, f)| Spec::Str(b, f)),
            proptest::collection::vec(any::<u8>(), 40..120).prop_map(|b| Spec::Str(b, 0)),
            v().prop_map(Spec::List),
            proptest::collection::vec((elem(), elem()), 1..40).prop_map(Spec::Hash),
            v().prop_map(Spec::Set),
            proptest::collection::vec((-30i64..30).prop_map(|n| n.to_string().into_bytes()), 1..40)
                .prop_map(Spec::Set),
            proptest::collection::vec((elem(), score()), 1..40).prop_map(Spec::ZSet),
        ]
    }

    fn thresholds() -> impl Strategy<Value = Thresholds> {
        (0usize..20, 0usize..30, 0usize..20, 0usize..20, 0usize..30).prop_map(
            |(he, hv, si, ze, zv)| Thresholds {
                hash: HashLimits {
                    max_entries: he,
                    max_value: hv,
                },
                zset: zset::Limits {
                    max_entries: ze,
                    max_value: zv,
                },
                set_max_intset_entries: si,
                keep_str_enc: false,
            },
        )
    }

    /// Builds the value as commands would (HSET, SADD, ZADD, RPUSH).
    fn build(s: &Spec, t: &Thresholds) -> Value {
        match s {
            Spec::Str(b, f) => {
                let mut s = Sds::from_slice(b);
                s.set_flag(*f);
                Value::Str(s)
            }
            Spec::List(items) => {
                let mut l = List::new();
                l.items.extend(items.iter().map(|i| Sds::from_slice(i)));
                Value::List(Box::new(l))
            }
            Spec::Hash(pairs) => {
                let mut h = Hash::default();
                for (f, v) in pairs {
                    h.set(f, v, t.hash);
                }
                Value::Hash(Box::new(h))
            }
            Spec::Set(members) => {
                let mut s = Set::new_for(&members[0]);
                for m in members {
                    s.add(m, t.set_max_intset_entries);
                }
                Value::Set(Box::new(s))
            }
            Spec::ZSet(entries) => {
                let mut z = ZSet::new_for(entries[0].0.len(), &t.zset);
                for (m, sc) in entries {
                    z.add(m, *sc, 0, &t.zset);
                }
                Value::ZSet(Box::new(z))
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random keyspaces built under one set of thresholds and loaded
        /// under another: same contents, and the encodings Redis's loader
        /// would pick.
        #[test]
        fn random_keyspaces_round_trip(
            keys in proptest::collection::vec(
                (0usize..3, proptest::collection::vec(any::<u8>(), 0..12), spec(),
                 proptest::option::of(-5i64..2_000_000_000_000)),
                0..40),
            build_t in thresholds(),
            load_t in thresholds(),
            per_block in 1usize..6,
            frame_limit in prop_oneof![Just(MAX_FRAME_PAYLOAD), 1usize..200],
        ) {
            let mut ks = Keyspace::new(3);
            for (db, key, s, ttl) in &keys {
                let t = &mut ks.dbs[*db];
                if t.find(key).is_some() {
                    continue;
                }
                let idx = t.insert_new(Sds::from_slice(key), build(s, &build_t), 0);
                if let Some(at) = ttl {
                    t.set_expire(idx, *at);
                }
            }
            let file = write_keyspace(&ks, per_block, frame_limit);
            let (m, back) = load(&file, &load_t).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(m.keys, ks.total_keys() as u64);
            check_same(&ks, &back, &load_t);
            // Truncating the random file anywhere is refused too.
            let cut = file.len() * 2 / 3;
            prop_assert!(
                matches!(read_all(&file[..cut]), Err(SnapshotError::Truncated { .. })),
                "truncated file was not reported as truncated",
            );
        }

        /// Garbage never panics the reader, raw or behind a valid magic.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            prop_assert!(read_all(&bytes).is_err());
            let mut f = MAGIC.to_vec();
            f.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            f.extend_from_slice(&bytes);
            prop_assert!(read_all(&f).is_err());
        }

        /// Garbage inside correctly checksummed frames (the worst case: a
        /// writer bug) never panics the reader and is never taken for what
        /// it is not: it is refused as corrupt at an offset inside the
        /// records frames (not as truncated, not at the intact header or
        /// trailer), unless the bytes really are what the frames claim —
        /// each block decodes, record by record, into exactly its count of
        /// records for databases below 3 with no byte left over (checked
        /// here with the codec, independently of the reader's framing) —
        /// and then the reader accepts it with exactly that many records.
        /// Each block is some well-formed records (databases 0 to 3, so
        /// some out of range) followed by random bytes (often none), with
        /// a record count that may be off by one, so that accepted blocks,
        /// leftover bytes, missing records and bad databases all occur, not
        /// only records that fail at their first byte. A reader that
        /// accepted a block whose records do not fill it, or that claimed
        /// more or fewer records, or that reported garbage as truncation or
        /// at the wrong place, fails.
        #[test]
        fn garbage_in_valid_frames_never_panics(
            specs in proptest::collection::vec(
                (
                    proptest::collection::vec(
                        (
                            0u32..4,
                            proptest::collection::vec(any::<u8>(), 0..6),
                            proptest::collection::vec(any::<u8>(), 0..6),
                        ),
                        0..4,
                    ),
                    prop_oneof![
                        3 => Just(Vec::new()),
                        1 => proptest::collection::vec(any::<u8>(), 1..200),
                    ],
                    prop_oneof![2 => Just(0i64), 1 => Just(-1), 1 => Just(1)],
                ),
                1..4,
            ),
        ) {
            let mut blocks: Vec<(Vec<u8>, u32)> = Vec::new();
            for (records, tail, off) in &specs {
                let mut b = Vec::new();
                for (db, k, v) in records {
                    encode_entry(&mut b, *db, k, &Value::from_bytes(v), NO_EXPIRE);
                }
                b.extend_from_slice(tail);
                if b.is_empty() {
                    b.push(0xff);
                }
                let n = (records.len() as i64 + off).max(1) as u32;
                blocks.push((b, n));
            }
            let mut w = SnapshotWriter::new(Vec::new(), &meta(3)).unwrap();
            for (b, n) in &blocks {
                w.push_block(b, *n).unwrap();
            }
            let file = w.finish().unwrap();
            let empty = SnapshotWriter::new(Vec::new(), &meta(3)).unwrap().finish().unwrap();
            let trailer = FRAME_HEAD + TRAILER_LEN;
            let records = (empty.len() - trailer) as u64..(file.len() - trailer) as u64;
            let t = Thresholds::default();
            let valid = blocks.iter().all(|(b, n)| {
                let mut input = &b[..];
                (0..*n).all(|_| decode_entry(&mut input, &t).is_ok_and(|r| r.db < 3))
                    && input.is_empty()
            });
            match read_all(&file) {
                Ok(m) => {
                    prop_assert!(valid, "garbage accepted as a snapshot of {} records", m.keys);
                    let claimed: u64 = blocks.iter().map(|(_, n)| u64::from(*n)).sum();
                    prop_assert_eq!(m.keys, claimed);
                }
                Err(SnapshotError::Corrupt { offset, reason }) => {
                    prop_assert!(!valid, "valid records refused at {offset}: {reason}");
                    prop_assert!(
                        records.contains(&offset),
                        "corruption reported at byte {} ({}), outside the records {:?}",
                        offset, reason, records
                    );
                }
                Err(e) => prop_assert!(false, "garbage in whole frames reported as {e:?}"),
            }
        }
    }
}
