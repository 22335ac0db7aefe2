//! The snapshot value codec: one key, its value and its TTL as one
//! self-delimiting record, and back.
//!
//! # Record layout
//!
//! ```text
//! varint    db
//! varint    key length, then the key bytes
//! u8        head: bits 0-3 type tag, bits 4-5 string encoding (strings
//!           only, else 0), bit 6 reserved (0), bit 7 has-expire
//! [i64 LE]  expire_at (Unix ms), present iff has-expire
//! payload, by type tag:
//!   0 string    varint len, bytes
//!   1 list      varint n, n × (varint len, bytes), head to tail
//!   2 hash      varint n, n × (field, value), each varint len + bytes
//!   3 set       varint n, n × (varint len, bytes)
//!   4 int set   varint n, n × zigzag varint i64, ascending (intset encoding)
//!   5 zset      varint n, n × (varint len, member, f64 bits LE), rank order
//! varint = unsigned LEB128, at most 10 bytes, no overlong forms.
//! ```
//!
//! The flag, type and string encoding share one byte because most keys
//! are small strings: a byte per key is a megabyte per million keys. Sets
//! in the intset encoding get their own tag (as Redis's
//! `RDB_TYPE_SET_INTSET`) so neither side formats or parses integers.
//! Records carry no checksum: the snapshot file's blocks do
//! ([`super::snapshot`]).
//!
//! # Loading mirrors Redis 7.0's `rdbLoadObject`
//!
//! A value is rebuilt in the encoding Redis would choose when loading an
//! RDB with the same thresholds, which is a function of its contents, not
//! of how it was built (a hash that grew past the limits and shrank again
//! is a hash table before a reload and a listpack after, in Redis as here):
//!
//! * **strings**: Redis loads every string through `tryObjectEncoding`, so
//!   after DEBUG RELOAD a canonical integer is "int" and anything else is
//!   "embstr" up to 44 bytes, "raw" beyond, whatever it was before (an
//!   APPENDed "abc" comes back "embstr", an INCRBYFLOAT result "3" comes
//!   back "int"). Decoding therefore yields [`StrEnc::Auto`]. The writer
//!   still records the string's [`StrEnc`] (two spare bits in the head
//!   byte) so a caller that wants byte-for-byte OBJECT ENCODING
//!   preservation can ask for it with [`Thresholds::keep_str_enc`].
//! * **lists**: Redis 7.0 lists are always "quicklist"; so are ours.
//! * **hashes**: listpack iff at most `hash-max-listpack-entries` pairs,
//!   every field and value at most `hash-max-listpack-value` bytes, and the
//!   total under Redis's 1 GiB listpack safety limit; else hashtable.
//! * **sets**: intset iff every member is a canonical integer and there
//!   are at most `set-max-intset-entries` (capped at 2^30) members.
//! * **sorted sets**: listpack iff at most `zset-max-listpack-entries`
//!   members, each at most `zset-max-listpack-value` bytes, total under the
//!   safety limit; else skiplist. As in Redis, a -0 score becomes 0 in a
//!   listpack and stays -0 in a skiplist.
//!
//! Collections are built through the db types' own constructors and insert
//! paths, so their invariants hold; the encoding is chosen before building
//! (one validating pass over the record, which costs little next to the
//! allocations it lets us size exactly), so nothing is converted twice.
//!
//! # Bad input
//!
//! Decoding never panics and never trusts a count: a count that cannot fit
//! in the remaining input is refused before anything is allocated. NaN
//! scores are refused. Duplicate hash fields, set members and sorted-set
//! members are refused rather than deduplicated, as Redis's loader does
//! ("Duplicate ... detected"): a snapshot never contains them, so one that
//! does was written by a broken writer or altered, and silently dropping
//! data would hide that. Empty collections decode as empty values (Redis
//! never stores them; the snapshot reader skips them, as `rdbLoad` does).

use std::collections::VecDeque;

use thiserror::Error;

use crate::db::dense::{DenseMap, Elem};
use crate::db::hash::{Hash, HashLimits, Packed};
use crate::db::list::List;
use crate::db::set::Set;
use crate::db::zset::{self, AddResult, ZSet};
use crate::db::{StrEnc, Value, NO_EXPIRE};
use crate::sds::Sds;
use crate::shared::Settings;
use crate::util::{fmt_i64, parse_i64};
use crate::varint::{put_varint, unzigzag, zigzag};

const T_STRING: u8 = 0;
const T_LIST: u8 = 1;
const T_HASH: u8 = 2;
const T_SET: u8 = 3;
const T_SET_INTS: u8 = 4;
const T_ZSET: u8 = 5;
/// A stream: its nodes as Redis's listpacks (`db::stream`), then its ids
/// and counts, then its consumer groups: each its name, last id, entries
/// read, pending entries (id, delivery time, count) and consumers (name,
/// seen time, the ids they own).
const T_STREAM: u8 = 6;

const TYPE_MASK: u8 = 0x0F;
const ENC_SHIFT: u32 = 4;
const ENC_MASK: u8 = 0x30;
const RESERVED: u8 = 0x40;
const HAS_EXPIRE: u8 = 0x80;

/// Redis's `LISTPACK_MAX_SAFETY_SIZE` (`lpSafeToAdd`): a listpack never
/// grows past 1 GiB, whatever the thresholds say.
const LISTPACK_SAFETY: usize = 1 << 30;
/// Redis caps `set-max-intset-entries` at 2^30.
const INTSET_CAP: usize = 1 << 30;
/// Smallest encoding of a sorted-set entry: a length byte and the score.
const MIN_ZSET_ENTRY: usize = 9;

/// The encoding thresholds decoding follows (the `*-max-listpack-*` and
/// `set-max-intset-entries` settings in force when loading).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub hash: HashLimits,
    pub zset: zset::Limits,
    /// `set-max-intset-entries`.
    pub set_max_intset_entries: usize,
    /// Restore each string's recorded [`StrEnc`] instead of loading it as
    /// Redis does ([`StrEnc::Auto`], see the module docs). Off by default.
    pub keep_str_enc: bool,
}

impl Default for Thresholds {
    /// anykv's (and Redis 7.0's) configuration defaults.
    fn default() -> Self {
        Thresholds {
            hash: HashLimits::default(),
            zset: zset::Limits::DEFAULT,
            set_max_intset_entries: 512,
            keep_str_enc: false,
        }
    }
}

impl Thresholds {
    /// For a value an RDB file holds already packed (a listpack or
    /// ziplist sorted set or hash): Redis keeps it packed unless it has
    /// more entries than the setting allows, whatever its elements'
    /// lengths (`rdbLoadObject` checks only the count).
    pub fn for_packed(&self) -> Thresholds {
        let mut t = *self;
        t.hash.max_value = usize::MAX;
        t.zset.max_value = usize::MAX;
        t
    }

    /// The thresholds of the current configuration.
    pub fn from_settings(s: &Settings) -> Self {
        Thresholds {
            hash: HashLimits {
                max_entries: s.hash_max_listpack_entries,
                max_value: s.hash_max_listpack_value,
            },
            zset: zset::Limits {
                max_entries: s.zset_max_listpack_entries,
                max_value: s.zset_max_listpack_value,
            },
            set_max_intset_entries: s.set_max_intset_entries,
            keep_str_enc: false,
        }
    }
}

/// One decoded key.
#[derive(Debug)]
pub struct Record {
    pub db: u32,
    pub key: Sds,
    pub value: Value,
    /// Unix ms, or [`NO_EXPIRE`].
    pub expire_at: i64,
}

/// Why a record could not be decoded.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("record truncated")]
    Truncated,
    #[error("element count {0} cannot fit in the remaining input")]
    Count(u64),
    #[error("malformed varint")]
    BadVarint,
    #[error("database index {0} out of range")]
    BadDb(u64),
    #[error("invalid record head byte {0:#04x}")]
    BadHead(u8),
    #[error("expire flag set with the no-expire sentinel")]
    BadExpire,
    #[error("NaN score in a sorted set")]
    NanScore,
    #[error("duplicate {0}")]
    Duplicate(&'static str),
    #[error("bad stream: {0}")]
    Stream(&'static str),
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

#[inline]
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

#[inline]
fn put_elem(out: &mut Vec<u8>, e: Elem<'_>) {
    e.with_bytes(|b| put_bytes(out, b));
}

/// The two head bits recording a string's [`StrEnc`] (unknown flags, which
/// no command produces, are recorded as `Auto`).
fn str_enc_bits(flag: u8) -> u8 {
    match flag {
        f if f == StrEnc::Plain as u8 => 1,
        f if f == StrEnc::Raw as u8 => 2,
        f if f == StrEnc::AutoCopy as u8 => 3,
        _ => 0,
    }
}

fn str_enc_from_bits(b: u8) -> StrEnc {
    match b {
        1 => StrEnc::Plain,
        2 => StrEnc::Raw,
        3 => StrEnc::AutoCopy,
        _ => StrEnc::Auto,
    }
}

/// Appends the record of `key` (in database `db`) holding `value`, with
/// `expire_at` in Unix ms or [`NO_EXPIRE`]. Collections are written in
/// storage order (lists head to tail, sorted sets by rank, intsets
/// ascending), which is what lets loading append instead of search.
pub fn encode_entry(out: &mut Vec<u8>, db: u32, key: &[u8], value: &Value, expire_at: i64) {
    put_varint(out, u64::from(db));
    put_bytes(out, key);
    let (ty, enc) = match value {
        Value::Str(s) => (T_STRING, str_enc_bits(s.flag())),
        Value::List(_) => (T_LIST, 0),
        Value::Hash(_) => (T_HASH, 0),
        Value::Set(s) if matches!(**s, Set::Intset(_)) => (T_SET_INTS, 0),
        Value::Set(_) => (T_SET, 0),
        Value::ZSet(_) => (T_ZSET, 0),
        Value::Stream(_) => (T_STREAM, 0),
    };
    let has_expire = expire_at != NO_EXPIRE;
    out.push(ty | (enc << ENC_SHIFT) | if has_expire { HAS_EXPIRE } else { 0 });
    if has_expire {
        out.extend_from_slice(&expire_at.to_le_bytes());
    }
    match value {
        Value::Str(s) => put_bytes(out, s),
        Value::List(l) => {
            put_varint(out, l.len() as u64);
            for it in &l.items {
                put_bytes(out, it);
            }
        }
        Value::Hash(h) => {
            put_varint(out, h.len() as u64);
            for (f, v) in h.iter() {
                put_elem(out, f);
                put_elem(out, v);
            }
        }
        Value::Set(s) => {
            put_varint(out, s.len() as u64);
            match &**s {
                Set::Intset(v) => {
                    for &n in v {
                        put_varint(out, zigzag(n));
                    }
                }
                Set::Table(_) => {
                    for m in s.iter() {
                        put_elem(out, m);
                    }
                }
            }
        }
        Value::ZSet(z) => {
            put_varint(out, z.len() as u64);
            for (m, score) in z.iter() {
                put_bytes(out, m);
                out.extend_from_slice(&score.to_bits().to_le_bytes());
            }
        }
        Value::Stream(x) => {
            put_varint(out, x.node_count() as u64);
            for (id, lp) in x.nodes() {
                out.extend_from_slice(&id.to_key());
                put_bytes(out, lp.as_bytes());
            }
            put_varint(out, x.length);
            for id in [x.last_id, x.first_id, x.max_deleted] {
                put_varint(out, id.ms);
                put_varint(out, id.seq);
            }
            put_varint(out, x.entries_added);
            put_varint(out, x.groups.len() as u64);
            for (name, g) in &x.groups {
                put_bytes(out, name);
                put_varint(out, g.last_id.ms);
                put_varint(out, g.last_id.seq);
                put_varint(out, g.entries_read as u64);
                put_varint(out, g.pel.len() as u64);
                for (id, n) in &g.pel {
                    out.extend_from_slice(&id.to_key());
                    out.extend_from_slice(&n.delivery_time.to_le_bytes());
                    put_varint(out, n.delivery_count);
                }
                put_varint(out, g.consumers.len() as u64);
                for (cname, c) in &g.consumers {
                    put_bytes(out, cname);
                    out.extend_from_slice(&c.seen_time.to_le_bytes());
                    put_varint(out, c.pel.len() as u64);
                    for id in &c.pel {
                        out.extend_from_slice(&id.to_key());
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// A read position in untrusted input; every read is bounds-checked.
#[derive(Clone, Copy)]
struct Cur<'a> {
    b: &'a [u8],
}

impl<'a> Cur<'a> {
    #[inline]
    fn u8(&mut self) -> Result<u8, CodecError> {
        let (&x, rest) = self.b.split_first().ok_or(CodecError::Truncated)?;
        self.b = rest;
        Ok(x)
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.b.len() {
            return Err(CodecError::Truncated);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }

    #[inline]
    fn fixed8(&mut self) -> Result<[u8; 8], CodecError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(a)
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, CodecError> {
        if let Some((&b, rest)) = self.b.split_first() {
            if b < 0x80 {
                self.b = rest;
                return Ok(u64::from(b));
            }
        }
        let mut n = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.u8()?;
            // The tenth byte holds bit 63 only.
            if shift == 63 && b > 1 {
                return Err(CodecError::BadVarint);
            }
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if b == 0 && shift > 0 {
                    return Err(CodecError::BadVarint);
                }
                return Ok(n);
            }
            shift += 7;
        }
    }

    /// A length-prefixed byte string.
    #[inline]
    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.varint()?;
        if n > self.b.len() as u64 {
            return Err(CodecError::Truncated);
        }
        self.take(n as usize)
    }

    /// An element count, refused if `n` elements of at least `min_each`
    /// bytes cannot fit in what is left (so counts never drive allocation
    /// beyond the input's own size).
    #[inline]
    fn count(&mut self, min_each: usize) -> Result<usize, CodecError> {
        let n = self.varint()?;
        if n > (self.b.len() / min_each.max(1)) as u64 {
            return Err(CodecError::Count(n));
        }
        Ok(n as usize)
    }

    #[inline]
    fn score(&mut self) -> Result<f64, CodecError> {
        let s = f64::from_bits(u64::from_le_bytes(self.fixed8()?));
        if s.is_nan() {
            return Err(CodecError::NanScore);
        }
        Ok(s)
    }
}

/// Checks that `n` length-prefixed strings follow `c` (without consuming
/// them); returns the longest length and the total.
fn scan_strs(mut c: Cur<'_>, n: usize) -> Result<(usize, usize), CodecError> {
    let (mut longest, mut total) = (0usize, 0usize);
    for _ in 0..n {
        let s = c.bytes()?;
        longest = longest.max(s.len());
        total += s.len();
    }
    Ok((longest, total))
}

/// Decodes one record from the front of `input` and advances it past the
/// record; on error `input` is left where it was. The value is built in
/// the encoding Redis would give it when loading under `t` (module docs).
pub fn decode_entry(input: &mut &[u8], t: &Thresholds) -> Result<Record, CodecError> {
    let mut c = Cur { b: input };
    let db = c.varint()?;
    let db = u32::try_from(db).map_err(|_| CodecError::BadDb(db))?;
    let key = Sds::from_slice(c.bytes()?);
    let head = c.u8()?;
    let ty = head & TYPE_MASK;
    let enc = (head & ENC_MASK) >> ENC_SHIFT;
    if head & RESERVED != 0 || (ty != T_STRING && enc != 0) {
        return Err(CodecError::BadHead(head));
    }
    let expire_at = if head & HAS_EXPIRE != 0 {
        let at = i64::from_le_bytes(c.fixed8()?);
        if at == NO_EXPIRE {
            return Err(CodecError::BadExpire);
        }
        at
    } else {
        NO_EXPIRE
    };
    let value = match ty {
        T_STRING => {
            let mut s = Sds::from_slice(c.bytes()?);
            let enc = if t.keep_str_enc {
                str_enc_from_bits(enc)
            } else {
                StrEnc::Auto
            };
            s.set_flag(enc as u8);
            Value::Str(s)
        }
        T_LIST => decode_list(&mut c)?,
        T_HASH => decode_hash(&mut c, t)?,
        T_SET => decode_set(&mut c, t)?,
        T_SET_INTS => decode_int_set(&mut c, t)?,
        T_ZSET => decode_zset(&mut c, t)?,
        T_STREAM => decode_stream(&mut c)?,
        _ => return Err(CodecError::BadHead(head)),
    };
    *input = c.b;
    Ok(Record {
        db,
        key,
        value,
        expire_at,
    })
}

fn decode_stream(c: &mut Cur<'_>) -> Result<Value, CodecError> {
    use crate::db::stream::{lp::Lp, Stream, StreamId};
    // (A node is at least its 16-byte id and a 7-byte listpack.)
    let n = c.count(24)?;
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        let id = StreamId::from_key(c.take(16)?).ok_or(CodecError::Truncated)?;
        let lp = Lp::from_bytes(c.bytes()?.to_vec())
            .map_err(|_| CodecError::Stream("a node is not a listpack"))?;
        nodes.push((id, lp));
    }
    let length = c.varint()?;
    let mut id = || -> Result<StreamId, CodecError> { Ok(StreamId::new(c.varint()?, c.varint()?)) };
    let (last, first, max_deleted) = (id()?, id()?, id()?);
    let added = c.varint()?;
    let mut s = Stream::from_parts(nodes, length, last, first, max_deleted, added)
        .map_err(CodecError::Stream)?;
    // (A group is at least its name's length, two ids and three counts.)
    let groups = c.count(6)?;
    for _ in 0..groups {
        let name = c.bytes()?.to_vec();
        let g = decode_group(c)?;
        if s.groups.insert(name, g).is_some() {
            return Err(CodecError::Stream("two groups have the same name"));
        }
    }
    Ok(Value::Stream(Box::new(s)))
}

/// A consumer group after its name (see [`T_STREAM`]), checked whole:
/// every pending entry has exactly the owner that lists it.
fn decode_group(c: &mut Cur<'_>) -> Result<crate::db::stream::group::Group, CodecError> {
    use crate::db::stream::group::Group;
    use crate::db::stream::StreamId;
    let id = |b: &[u8]| StreamId::from_key(b).ok_or(CodecError::Truncated);
    let time = |b: &[u8]| -> Result<i64, CodecError> {
        Ok(i64::from_le_bytes(
            b.try_into().map_err(|_| CodecError::Truncated)?,
        ))
    };
    let last = StreamId::new(c.varint()?, c.varint()?);
    let read = c.varint()? as i64;
    if read < -1 {
        return Err(CodecError::Stream("a group's entries-read is out of range"));
    }
    let mut g = Group::new(last, read);
    let n = c.count(25)?;
    let mut pel = Vec::with_capacity(n);
    for _ in 0..n {
        let at = id(c.take(16)?)?;
        let t = time(c.take(8)?)?;
        pel.push((at, t, c.varint()?));
    }
    let consumers = c.count(10)?;
    let mut owner = std::collections::BTreeMap::new();
    for _ in 0..consumers {
        let name = c.bytes()?;
        let seen = time(c.take(8)?)?;
        let (_, created) = g.consumer_or_create(name, seen);
        if !created {
            return Err(CodecError::Stream("two consumers have the same name"));
        }
        for _ in 0..c.count(16)? {
            if owner.insert(id(c.take(16)?)?, name).is_some() {
                return Err(CodecError::Stream("a pending entry has two owners"));
            }
        }
    }
    for (at, t, count) in pel {
        if g.pel.contains_key(&at) {
            return Err(CodecError::Stream("a pending entry is listed twice"));
        }
        let name = owner
            .remove(&at)
            .ok_or(CodecError::Stream("a pending entry has no owner"))?;
        g.assign(at, name, t, count);
    }
    if !owner.is_empty() {
        return Err(CodecError::Stream("a consumer owns an entry not pending"));
    }
    Ok(g)
}

fn decode_list(c: &mut Cur<'_>) -> Result<Value, CodecError> {
    let n = c.count(1)?;
    scan_strs(*c, n)?;
    let mut items = VecDeque::with_capacity(n);
    for _ in 0..n {
        items.push_back(Sds::from_slice(c.bytes()?));
    }
    Ok(Value::List(Box::new(List { items })))
}

fn decode_hash(c: &mut Cur<'_>, t: &Thresholds) -> Result<Value, CodecError> {
    let n = c.count(2)?;
    scan_strs(*c, 2 * n)?;
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        pairs.push((c.bytes()?, c.bytes()?));
    }
    build_hash(&pairs, t)
}

fn decode_set(c: &mut Cur<'_>, t: &Thresholds) -> Result<Value, CodecError> {
    let n = c.count(1)?;
    scan_strs(*c, n)?;
    let mut members = Vec::with_capacity(n);
    for _ in 0..n {
        members.push(c.bytes()?);
    }
    build_set(&members, t)
}

fn decode_int_set(c: &mut Cur<'_>, t: &Thresholds) -> Result<Value, CodecError> {
    let n = c.count(1)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(unzigzag(c.varint()?));
    }
    build_int_set(v, t)
}

fn decode_zset(c: &mut Cur<'_>, t: &Thresholds) -> Result<Value, CodecError> {
    let n = c.count(MIN_ZSET_ENTRY)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let m = c.bytes()?;
        entries.push((m, c.score()?));
    }
    build_zset(&entries, t)
}

// ---------------------------------------------------------------------------
// Building values as Redis's loader would (shared with the RDB reader)
// ---------------------------------------------------------------------------

/// `rdbLoadObject`'s hash rule: listpack iff it fits the thresholds.
pub fn build_hash(pairs: &[(&[u8], &[u8])], t: &Thresholds) -> Result<Value, CodecError> {
    let n = pairs.len();
    let longest = pairs
        .iter()
        .map(|(f, v)| f.len().max(v.len()))
        .max()
        .unwrap_or(0);
    let total: usize = pairs.iter().map(|(f, v)| f.len() + v.len()).sum();
    let h = if n <= t.hash.max_entries && longest <= t.hash.max_value && total <= LISTPACK_SAFETY {
        let p = Packed::from_distinct_pairs(pairs).ok_or(CodecError::Duplicate("hash field"))?;
        Hash::Listpack(p)
    } else {
        let mut m = DenseMap::with_capacity(n);
        for &(f, v) in pairs {
            if m.insert(f, Sds::from_slice(v)).is_some() {
                return Err(CodecError::Duplicate("hash field"));
            }
        }
        Hash::Table(Box::new(m))
    };
    Ok(Value::Hash(Box::new(h)))
}

fn intset_cap(t: &Thresholds) -> usize {
    t.set_max_intset_entries.min(INTSET_CAP)
}

/// A set of byte-string members: an intset iff all are canonical integers
/// and there are few enough (`rdbLoadObject`'s rule).
pub fn build_set(members: &[&[u8]], t: &Thresholds) -> Result<Value, CodecError> {
    let n = members.len();
    if n <= intset_cap(t) {
        let ints: Option<Vec<i64>> = members.iter().map(|m| parse_i64(m)).collect();
        if let Some(v) = ints {
            return build_int_set(v, t);
        }
    }
    let mut m = DenseMap::with_capacity(n);
    for &x in members {
        if m.insert(x, ()).is_some() {
            return Err(CodecError::Duplicate("set member"));
        }
    }
    Ok(Value::Set(Box::new(Set::Table(Box::new(m)))))
}

/// A set of integers (an intset, normally ascending; sorted here if not);
/// a hash table if the loading threshold is lower.
pub fn build_int_set(mut v: Vec<i64>, t: &Thresholds) -> Result<Value, CodecError> {
    if !v.windows(2).all(|w| w[0] < w[1]) {
        v.sort_unstable();
        if v.windows(2).any(|w| w[0] == w[1]) {
            return Err(CodecError::Duplicate("set member"));
        }
    }
    let s = if v.len() <= intset_cap(t) {
        Set::Intset(v)
    } else {
        let mut m = DenseMap::with_capacity(v.len());
        let mut b = [0u8; 20];
        for x in v {
            m.insert(fmt_i64(x, &mut b), ());
        }
        Set::Table(Box::new(m))
    };
    Ok(Value::Set(Box::new(s)))
}

/// `rdbLoadObject`'s sorted-set rule: listpack iff it fits the thresholds.
/// NaN scores and duplicate members are refused.
pub fn build_zset(entries: &[(&[u8], f64)], t: &Thresholds) -> Result<Value, CodecError> {
    let n = entries.len();
    if entries.iter().any(|e| e.1.is_nan()) {
        return Err(CodecError::NanScore);
    }
    let longest = entries.iter().map(|e| e.0.len()).max().unwrap_or(0);
    let total: usize = entries.iter().map(|e| e.0.len()).sum();
    let z = if n <= t.zset.max_entries && longest <= t.zset.max_value && total <= LISTPACK_SAFETY {
        let mut members: Vec<&[u8]> = entries.iter().map(|e| e.0).collect();
        members.sort_unstable();
        if members.windows(2).any(|w| w[0] == w[1]) {
            return Err(CodecError::Duplicate("sorted set member"));
        }
        // The packed encoding's append path, behind its public
        // constructor (one small allocation per member, but linear time).
        ZSet::from_entries(
            entries.iter().map(|(m, s)| (m.to_vec(), *s)).collect(),
            &t.zset,
        )
    } else {
        let mut z = ZSet::Skip(Box::default());
        for &(m, s) in entries {
            match z.add(m, s, 0, &t.zset) {
                AddResult::Added(_) => {}
                AddResult::Nan => return Err(CodecError::NanScore),
                _ => return Err(CodecError::Duplicate("sorted set member")),
            }
        }
        z
    };
    Ok(Value::ZSet(Box::new(z)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::hash::Hasher;

    fn str_val(b: &[u8], enc: StrEnc) -> Value {
        let mut s = Sds::from_slice(b);
        s.set_flag(enc as u8);
        Value::Str(s)
    }

    fn digest(v: &Value) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        v.digest_into(&mut h);
        h.finish()
    }

    fn round_trip(v: &Value, expire_at: i64, t: &Thresholds) -> Record {
        let mut buf = Vec::new();
        encode_entry(&mut buf, 7, b"the-key", v, expire_at);
        let mut input = &buf[..];
        let r = decode_entry(&mut input, t).expect("decodes");
        assert!(input.is_empty(), "record fully consumed");
        assert_eq!(r.db, 7);
        assert_eq!(&*r.key, b"the-key");
        assert_eq!(r.expire_at, expire_at);
        assert_eq!(digest(&r.value), digest(v));
        r
    }

    #[test]
    fn strings_load_as_redis_loads_them() {
        let t = Thresholds::default();
        let long = vec![b'x'; 45];
        let cases: [(&[u8], StrEnc, &str); 9] = [
            (b"12345", StrEnc::Auto, "int"),
            (b"12345", StrEnc::Raw, "int"),
            (b"12345", StrEnc::Plain, "int"),
            (b"-9223372036854775808", StrEnc::AutoCopy, "int"),
            (b"012", StrEnc::Auto, "embstr"),
            (b"abc", StrEnc::Raw, "embstr"),
            (&long[..44], StrEnc::Raw, "embstr"),
            (&long, StrEnc::Auto, "raw"),
            (b"", StrEnc::Auto, "embstr"),
        ];
        for (b, enc, want) in cases {
            let v = str_val(b, enc);
            let r = round_trip(&v, NO_EXPIRE, &t);
            assert_eq!(
                r.value.encoding(),
                want,
                "{:?} {enc:?}",
                String::from_utf8_lossy(b)
            );
            assert_eq!(r.value.as_str(), Some(b));
            // With keep_str_enc the recorded flag comes back as it was.
            let keep = Thresholds {
                keep_str_enc: true,
                ..t
            };
            let r = round_trip(&v, 1, &keep);
            assert_eq!(r.value.encoding(), v.encoding());
        }
        // AutoCopy loads as Auto: a reloaded small integer is shared again.
        let r = round_trip(&str_val(b"5", StrEnc::AutoCopy), NO_EXPIRE, &t);
        assert!(r.value.is_shared_integer());
    }

    #[test]
    fn streams_round_trip_whole() {
        use crate::db::stream::{NodeLimits, Stream, StreamId, Trim};
        let t = Thresholds::default();
        let mut s = Stream::new();
        let lim = NodeLimits {
            max_bytes: 4096,
            max_entries: 3,
        };
        for i in 1..=10u64 {
            let v = i.to_string();
            s.append(StreamId::new(i, 0), &[b"f", v.as_bytes()], lim)
                .unwrap();
        }
        s.xdel(&[StreamId::new(5, 0)]);
        s.trim(Trim::MaxLen(7), false, 0);
        let v = Value::Stream(Box::new(s.clone()));
        let r = round_trip(&v, 1_700_000_000_000, &t);
        assert_eq!(r.value.as_stream(), Some(&s));
        // An empty stream keeps its ids.
        s.xdel(&[StreamId::new(10, 0)]);
        let empty = Value::Stream(Box::new(Stream::new()));
        let r = round_trip(&empty, NO_EXPIRE, &t);
        assert_eq!(r.value.as_stream().map(|x| x.len()), Some(0));
    }

    #[test]
    fn ttls_and_extreme_db() {
        let t = Thresholds::default();
        for at in [0, 1, -1, i64::MAX, NO_EXPIRE + 1, 1_700_000_000_000] {
            round_trip(&Value::from_bytes(b"v"), at, &t);
        }
        let mut buf = Vec::new();
        encode_entry(&mut buf, u32::MAX, b"", &Value::from_bytes(b""), NO_EXPIRE);
        let r = decode_entry(&mut &buf[..], &t).unwrap();
        assert_eq!(r.db, u32::MAX);
    }

    fn hash_of(n: usize, vlen: usize, lim: HashLimits) -> Value {
        let mut h = Hash::default();
        for i in 0..n {
            let v = format!("{i:0vlen$}");
            h.set(format!("f{i}").as_bytes(), v.as_bytes(), lim);
        }
        Value::Hash(Box::new(h))
    }

    #[test]
    fn collections_keep_their_encoding() {
        let t = Thresholds::default();
        let lim = t.hash;
        for (v, enc) in [
            (hash_of(3, 2, lim), "listpack"),
            (hash_of(512, 2, lim), "listpack"),
            (hash_of(513, 2, lim), "hashtable"),
            (hash_of(3, 65, lim), "hashtable"),
        ] {
            assert_eq!(v.encoding(), enc);
            assert_eq!(round_trip(&v, NO_EXPIRE, &t).value.encoding(), enc);
        }
        let set = |members: &[&str]| {
            let mut s = Set::new_for(members[0].as_bytes());
            for m in members {
                s.add(m.as_bytes(), t.set_max_intset_entries);
            }
            Value::Set(Box::new(s))
        };
        let ints: Vec<String> = (-300..300).map(|i| (i * 7).to_string()).collect();
        let ints: Vec<&str> = ints.iter().map(|s| s.as_str()).collect();
        for (v, enc) in [
            (set(&["3", "-1", "2"]), "intset"),
            (set(&ints[..512]), "intset"),
            (set(&ints), "hashtable"),
            (set(&["1", "a", "2"]), "hashtable"),
            (set(&["1", "01"]), "hashtable"),
        ] {
            assert_eq!(v.encoding(), enc);
            assert_eq!(round_trip(&v, NO_EXPIRE, &t).value.encoding(), enc);
        }
        let zset = |n: usize, mlen: usize| {
            let mut z = ZSet::new_for(mlen, &t.zset);
            for i in 0..n {
                let m = format!("{i:0mlen$}");
                let s = if i % 3 == 0 { i as f64 } else { i as f64 / 7.0 };
                z.add(m.as_bytes(), s, 0, &t.zset);
            }
            Value::ZSet(Box::new(z))
        };
        for (v, enc) in [
            (zset(5, 3), "listpack"),
            (zset(128, 3), "listpack"),
            (zset(129, 3), "skiplist"),
            (zset(5, 65), "skiplist"),
        ] {
            assert_eq!(v.encoding(), enc);
            let r = round_trip(&v, NO_EXPIRE, &t);
            assert_eq!(r.value.encoding(), enc);
            assert_eq!(
                r.value.as_zset().map(|z| z.entries()),
                v.as_zset().map(|z| z.entries())
            );
        }
        let mut l = List::new();
        for i in 0..1000 {
            l.items.push_back(Sds::from(format!("e{i}").as_str()));
        }
        let v = Value::List(Box::new(l));
        assert_eq!(round_trip(&v, 5, &t).value.encoding(), "quicklist");
    }

    #[test]
    fn encoding_follows_load_thresholds_not_history() {
        let t = Thresholds::default();
        // Grown past the limit, then shrunk: a table before, a listpack after
        // reload (as Redis's DEBUG RELOAD does).
        let mut v = hash_of(600, 1, t.hash);
        let h = v.as_hash_mut().unwrap();
        for i in 10..600 {
            h.remove(format!("f{i}").as_bytes());
        }
        assert_eq!(v.encoding(), "hashtable");
        assert_eq!(round_trip(&v, NO_EXPIRE, &t).value.encoding(), "listpack");
        // A set that held a string, now all integers: intset after reload.
        let mut s = Set::new_for(b"x");
        for m in [&b"x"[..], b"1", b"2"] {
            s.add(m, 512);
        }
        s.remove(b"x");
        let v = Value::Set(Box::new(s));
        assert_eq!(v.encoding(), "hashtable");
        assert_eq!(round_trip(&v, NO_EXPIRE, &t).value.encoding(), "intset");
        // Lower thresholds at load convert every kind.
        let low = Thresholds {
            hash: HashLimits {
                max_entries: 2,
                max_value: 64,
            },
            zset: zset::Limits {
                max_entries: 2,
                max_value: 64,
            },
            set_max_intset_entries: 2,
            keep_str_enc: false,
        };
        let mut z = ZSet::default();
        for (i, m) in ["a", "b", "c"].iter().enumerate() {
            z.add(m.as_bytes(), i as f64, 0, &t.zset);
        }
        let is = Value::Set(Box::new(Set::from_members(
            [Elem::Int(1), Elem::Int(2), Elem::Int(3)],
            512,
        )));
        for (v, enc) in [
            (hash_of(3, 1, t.hash), "hashtable"),
            (Value::ZSet(Box::new(z)), "skiplist"),
            (is, "hashtable"),
        ] {
            assert_eq!(round_trip(&v, NO_EXPIRE, &low).value.encoding(), enc);
        }
    }

    #[test]
    fn negative_zero_scores_follow_the_encoding() {
        let t = Thresholds::default();
        let mut z = ZSet::Skip(Box::default());
        z.add(b"a", -0.0, 0, &t.zset);
        z.add(b"b", 1.0, 0, &t.zset);
        let v = Value::ZSet(Box::new(z));
        // Stays a skiplist (keeps -0) under limits that force it...
        let skip = Thresholds {
            zset: zset::Limits {
                max_entries: 1,
                max_value: 64,
            },
            ..t
        };
        let r = round_trip(&v, NO_EXPIRE, &skip);
        assert!(r
            .value
            .as_zset()
            .unwrap()
            .score(b"a")
            .unwrap()
            .is_sign_negative());
        // ...and becomes 0 in a listpack, as Redis's zsetConvert does.
        let mut buf = Vec::new();
        encode_entry(&mut buf, 0, b"k", &v, NO_EXPIRE);
        let r = decode_entry(&mut &buf[..], &t).unwrap();
        assert_eq!(r.value.encoding(), "listpack");
        assert!(r
            .value
            .as_zset()
            .unwrap()
            .score(b"a")
            .unwrap()
            .is_sign_positive());
    }

    /// A record header for hand-made payloads.
    fn head(ty: u8) -> Vec<u8> {
        vec![0u8, 1, b'k', ty]
    }

    fn strs(out: &mut Vec<u8>, items: &[&[u8]]) {
        for i in items {
            put_bytes(out, i);
        }
    }

    fn decode(b: &[u8], t: &Thresholds) -> Result<Record, CodecError> {
        let mut input = b;
        let before = input.len();
        let r = decode_entry(&mut input, t);
        if r.is_err() {
            assert_eq!(input.len(), before, "input untouched on error");
        }
        r
    }

    #[test]
    fn refuses_bad_records() {
        let t = Thresholds::default();
        let big = Thresholds {
            hash: HashLimits {
                max_entries: 0,
                max_value: 0,
            },
            zset: zset::Limits {
                max_entries: 0,
                max_value: 0,
            },
            set_max_intset_entries: 0,
            keep_str_enc: false,
        };
        // Duplicates, in both encodings of each type.
        let mut hash = head(T_HASH);
        hash.push(2);
        strs(&mut hash, &[b"f", b"1", b"f", b"2"]);
        let mut set = head(T_SET);
        set.push(2);
        strs(&mut set, &[b"1", b"1"]);
        let mut ints = head(T_SET_INTS);
        ints.extend_from_slice(&[2, 4, 4]);
        let mut zset = head(T_ZSET);
        zset.push(2);
        for s in [1.0f64, 2.0] {
            put_bytes(&mut zset, b"m");
            zset.extend_from_slice(&s.to_bits().to_le_bytes());
        }
        for (b, what) in [
            (hash, "hash field"),
            (set, "set member"),
            (ints, "set member"),
            (zset, "sorted set member"),
        ] {
            for th in [&t, &big] {
                assert_eq!(decode(&b, th).unwrap_err(), CodecError::Duplicate(what));
            }
        }
        // NaN scores (any NaN payload).
        for nan in [
            f64::NAN.to_bits(),
            0x7ff0_0000_0000_0001,
            0xfff8_0000_0000_0000,
        ] {
            let mut b = head(T_ZSET);
            b.push(1);
            put_bytes(&mut b, b"m");
            b.extend_from_slice(&nan.to_le_bytes());
            for th in [&t, &big] {
                assert_eq!(decode(&b, th).unwrap_err(), CodecError::NanScore);
            }
        }
        // A stream whose node is not a listpack, or that has groups.
        let mut b = head(T_STREAM);
        b.push(1);
        b.extend_from_slice(&[0u8; 16]);
        put_bytes(&mut b, b"notalistpack");
        b.extend_from_slice(&[0; 9]);
        assert!(matches!(decode(&b, &t), Err(CodecError::Stream(_))));
        let mut s = crate::db::stream::Stream::new();
        let id = crate::db::stream::StreamId::new(1, 1);
        s.append(id, &[b"f", b"v"], Default::default()).unwrap();
        let mut ok = Vec::new();
        encode_entry(&mut ok, 0, b"k", &Value::Stream(Box::new(s)), NO_EXPIRE);
        // A group whose consumer owns an entry the group has not pending.
        let mut grouped = ok.clone();
        *grouped.last_mut().unwrap() = 1;
        put_bytes(&mut grouped, b"g");
        grouped.extend_from_slice(&[0, 0, 0, 0, 1]);
        put_bytes(&mut grouped, b"c");
        grouped.extend_from_slice(&[0; 8]);
        grouped.push(1);
        grouped.extend_from_slice(&id.to_key());
        assert!(matches!(decode(&grouped, &t), Err(CodecError::Stream(_))));
        // Unknown types, reserved bit, encoding bits on a non-string.
        for h in [7u8, 0x0F, 0x40, T_LIST | 0x10, T_ZSET | 0x30] {
            let mut b = head(h);
            b.push(0);
            assert_eq!(decode(&b, &t).unwrap_err(), CodecError::BadHead(h));
        }
        // The expire flag with the sentinel value.
        let mut b = head(T_STRING | HAS_EXPIRE);
        b.extend_from_slice(&NO_EXPIRE.to_le_bytes());
        b.push(0);
        assert_eq!(decode(&b, &t).unwrap_err(), CodecError::BadExpire);
        // Database index beyond u32, overlong and overflowing varints.
        let mut b = Vec::new();
        put_varint(&mut b, 1 << 32);
        assert_eq!(decode(&b, &t).unwrap_err(), CodecError::BadDb(1 << 32));
        assert_eq!(
            decode(&[0x80, 0x00], &t).unwrap_err(),
            CodecError::BadVarint
        );
        assert_eq!(decode(&[0xFF; 11], &t).unwrap_err(), CodecError::BadVarint);
        let mut b = vec![0xFF; 9];
        b.push(0x02);
        assert_eq!(decode(&b, &t).unwrap_err(), CodecError::BadVarint);
        // Huge counts are refused before allocating.
        for ty in [T_LIST, T_HASH, T_SET, T_SET_INTS, T_ZSET] {
            let mut b = head(ty);
            put_varint(&mut b, u64::MAX);
            b.extend_from_slice(&[0; 64]);
            assert_eq!(decode(&b, &t).unwrap_err(), CodecError::Count(u64::MAX));
        }
        // A string longer than the input.
        let mut b = head(T_STRING);
        put_varint(&mut b, u64::MAX);
        assert_eq!(decode(&b, &t).unwrap_err(), CodecError::Truncated);
    }

    #[test]
    fn every_prefix_of_a_record_is_refused() {
        let t = Thresholds::default();
        let mut z = ZSet::default();
        z.add(b"m", 1.5, 0, &t.zset);
        let mut l = List::new();
        l.items.push_back(Sds::from("x"));
        for v in [
            Value::from_bytes(b"hello"),
            hash_of(3, 2, t.hash),
            Value::Set(Box::new(Set::from_members([Elem::Int(300)], 512))),
            Value::Set(Box::new(Set::from_members([Elem::Str(b"a")], 512))),
            Value::ZSet(Box::new(z)),
            Value::List(Box::new(l)),
        ] {
            let mut buf = Vec::new();
            encode_entry(&mut buf, 300, b"key", &v, 123);
            for cut in 0..buf.len() {
                assert!(decode(&buf[..cut], &t).is_err(), "cut at {cut}");
            }
            assert!(decode(&buf, &t).is_ok());
        }
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder, and a decoder that
        /// succeeds always makes progress.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300),
                                 ty in 0u8..8) {
            let t = Thresholds {
                hash: HashLimits { max_entries: 4, max_value: 8 },
                zset: zset::Limits { max_entries: 4, max_value: 8 },
                set_max_intset_entries: 4,
                keep_str_enc: true,
            };
            // Raw garbage, and garbage behind a plausible record head.
            let mut framed = head(ty);
            framed.extend_from_slice(&bytes);
            for input in [&bytes[..], &framed[..]] {
                let mut rest = input;
                while !rest.is_empty() {
                    let len = rest.len();
                    match decode_entry(&mut rest, &t) {
                        Ok(_) => prop_assert!(rest.len() < len),
                        Err(_) => break,
                    }
                }
            }
        }
    }
}
