//! Writing RDB version 10, as redis-server 7.0 reads it.
//!
//! Values go out in RDB's generic types (`STRING`, `LIST`, `SET`, `ZSET_2`,
//! `HASH`): Redis's loader rebuilds each in whichever encoding its own
//! thresholds pick (listpack, intset, quicklist...), exactly as it does for
//! the compact types, so nothing is lost and no packed encoder is needed
//! here. Strings that are small canonical integers use RDB's integer
//! encoding, as Redis's own writer does; strings are not LZF-compressed.

use std::io::{self, Write};

use super::{
    crc64, Type, OP_AUX, OP_EOF, OP_EXPIRETIME_MS, OP_FUNCTION2, OP_RESIZEDB, OP_SELECTDB,
    RDB_VERSION,
};
use crate::db::{Value, NO_EXPIRE};
use crate::util::parse_i64;

/// An RDB being written to `W` (a file, a socket, a buffer), checksummed
/// as it goes.
pub struct RdbWriter<W: Write> {
    w: W,
    crc: u64,
    scratch: Vec<u8>,
}

fn put_len(out: &mut Vec<u8>, n: u64) {
    if n < 1 << 6 {
        out.push(n as u8);
    } else if n < 1 << 14 {
        out.push(0x40 | (n >> 8) as u8);
        out.push(n as u8);
    } else if n <= u64::from(u32::MAX) {
        out.push(0x80);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// A string, integer-encoded when it is a canonical integer that fits 32
/// bits (Redis's `rdbTryIntegerEncoding`).
fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    if s.len() <= 11 {
        if let Some(v) = parse_i64(s) {
            if let Ok(x) = i8::try_from(v) {
                out.push(0xC0);
                out.extend_from_slice(&x.to_le_bytes());
                return;
            }
            if let Ok(x) = i16::try_from(v) {
                out.push(0xC1);
                out.extend_from_slice(&x.to_le_bytes());
                return;
            }
            if let Ok(x) = i32::try_from(v) {
                out.push(0xC2);
                out.extend_from_slice(&x.to_le_bytes());
                return;
            }
        }
    }
    put_len(out, s.len() as u64);
    out.extend_from_slice(s);
}

impl<W: Write> RdbWriter<W> {
    /// Writes the header and the AUX fields.
    pub fn new(w: W, aux: &[(&str, &str)]) -> io::Result<Self> {
        let mut me = RdbWriter {
            w,
            crc: 0,
            scratch: Vec::with_capacity(64 << 10),
        };
        me.scratch
            .extend_from_slice(format!("REDIS{RDB_VERSION:04}").as_bytes());
        for (k, v) in aux {
            me.scratch.push(OP_AUX);
            put_string(&mut me.scratch, k.as_bytes());
            put_string(&mut me.scratch, v.as_bytes());
        }
        me.flush_scratch()?;
        Ok(me)
    }

    fn flush_scratch(&mut self) -> io::Result<()> {
        self.crc = crc64::update(self.crc, &self.scratch);
        self.w.write_all(&self.scratch)?;
        self.scratch.clear();
        Ok(())
    }

    /// A function library's code (written after the AUX fields, before
    /// the databases, as Redis does).
    pub fn function(&mut self, code: &[u8]) -> io::Result<()> {
        self.scratch.push(OP_FUNCTION2);
        put_string(&mut self.scratch, code);
        self.flush_scratch()
    }

    /// Starts database `db` (`keys` and `expires` size the loader's tables).
    pub fn select_db(&mut self, db: u32, keys: u64, expires: u64) -> io::Result<()> {
        self.scratch.push(OP_SELECTDB);
        put_len(&mut self.scratch, u64::from(db));
        self.scratch.push(OP_RESIZEDB);
        put_len(&mut self.scratch, keys);
        put_len(&mut self.scratch, expires);
        self.flush_scratch()
    }

    /// Switches back to database `db` (already started by
    /// [`RdbWriter::select_db`]): a streamed snapshot's pre-images of
    /// several databases interleave.
    pub fn select_only(&mut self, db: u32) -> io::Result<()> {
        self.scratch.push(OP_SELECTDB);
        put_len(&mut self.scratch, u64::from(db));
        Ok(())
    }

    /// One key of the current database.
    pub fn entry(&mut self, key: &[u8], value: &Value, expire_at: i64) -> io::Result<()> {
        let out = &mut self.scratch;
        if expire_at != NO_EXPIRE {
            out.push(OP_EXPIRETIME_MS);
            out.extend_from_slice(&expire_at.to_le_bytes());
        }
        put_value(out, Some(key), value);
        if self.scratch.len() >= 32 << 10 {
            self.flush_scratch()?;
        }
        Ok(())
    }

    /// Every database of `ks` that holds keys, each with its SELECTDB and
    /// RESIZEDB, and all of their keys.
    pub fn keyspace(&mut self, ks: &crate::db::Keyspace) -> io::Result<()> {
        for (i, db) in ks.dbs.iter().enumerate() {
            if db.is_empty() {
                continue;
            }
            self.select_db(i as u32, db.len() as u64, db.volatile_len() as u64)?;
            for e in db.iter() {
                self.entry(e.key.as_bytes(), &e.value, e.expire_at)?;
            }
        }
        Ok(())
    }

    /// Writes the end marker and the checksum; returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.scratch.push(OP_EOF);
        self.flush_scratch()?;
        self.w.write_all(&self.crc.to_le_bytes())?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// A value's RDB type byte, then `key` (a record's) when given, then the
/// value in RDB's generic encoding for its type.
fn put_value(out: &mut Vec<u8>, key: Option<&[u8]>, value: &Value) {
    let head = |out: &mut Vec<u8>, t: Type| {
        out.push(t as u8);
        if let Some(k) = key {
            put_string(out, k);
        }
    };
    match value {
        Value::Str(s) => {
            head(out, Type::String);
            put_string(out, s.as_bytes());
        }
        Value::List(l) => {
            head(out, Type::List);
            put_len(out, l.len() as u64);
            for it in &l.items {
                put_string(out, it);
            }
        }
        Value::Set(s) => {
            head(out, Type::Set);
            put_len(out, s.len() as u64);
            for m in s.iter() {
                m.with_bytes(|b| put_string(out, b));
            }
        }
        Value::ZSet(z) => {
            head(out, Type::ZSet2);
            put_len(out, z.len() as u64);
            for (m, score) in z.iter() {
                put_string(out, m);
                out.extend_from_slice(&score.to_le_bytes());
            }
        }
        Value::Stream(x) => {
            head(out, Type::Stream2);
            put_len(out, x.node_count() as u64);
            for (id, lp) in x.nodes() {
                put_string(out, &id.to_key());
                put_string(out, lp.as_bytes());
            }
            put_len(out, x.length);
            for id in [x.last_id, x.first_id, x.max_deleted] {
                put_len(out, id.ms);
                put_len(out, id.seq);
            }
            put_len(out, x.entries_added);
            put_len(out, x.groups.len() as u64);
            for (name, g) in &x.groups {
                put_string(out, name);
                put_len(out, g.last_id.ms);
                put_len(out, g.last_id.seq);
                // (-1, "unknown", as Redis writes it: cast to 64 bits.)
                put_len(out, g.entries_read as u64);
                put_len(out, g.pel.len() as u64);
                for (id, n) in &g.pel {
                    out.extend_from_slice(&id.to_key());
                    out.extend_from_slice(&n.delivery_time.to_le_bytes());
                    put_len(out, n.delivery_count);
                }
                put_len(out, g.consumers.len() as u64);
                for (cname, c) in &g.consumers {
                    put_string(out, cname);
                    out.extend_from_slice(&c.seen_time.to_le_bytes());
                    put_len(out, c.pel.len() as u64);
                    for id in &c.pel {
                        out.extend_from_slice(&id.to_key());
                    }
                }
            }
        }
        Value::Hash(h) => {
            head(out, Type::Hash);
            put_len(out, h.len() as u64);
            for (f, v) in h.iter() {
                f.with_bytes(|b| put_string(out, b));
                v.with_bytes(|b| put_string(out, b));
            }
        }
    }
}

/// The footer of a DUMP-style payload: RDB version (2 bytes) and the
/// CRC-64 of everything before (8 bytes), little-endian.
fn seal(mut out: Vec<u8>) -> Vec<u8> {
    out.extend_from_slice(&(RDB_VERSION as u16).to_le_bytes());
    let crc = crc64::update(0, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// `DUMP`'s payload, as Redis writes it: the value as RDB writes it (type
/// and encoding, no key), then the version and the CRC-64. Redis's RESTORE
/// loads it (generic encodings; Redis converts to its compact ones).
pub fn dump_value(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    put_value(&mut out, None, value);
    seal(out)
}

/// `FUNCTION DUMP`'s payload, as Redis writes it: each library's code as
/// an RDB function record, then the RDB version (2 bytes) and the CRC-64
/// of everything before (8 bytes), both little-endian.
pub fn function_dump<'a>(codes: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for code in codes {
        out.push(OP_FUNCTION2);
        put_string(&mut out, code);
    }
    seal(out)
}
