//! Reading RDB files and streams (versions 1 to 10: everything a Redis up
//! to 7.0 writes), record by record from any `Read`, so a full sync from a
//! socket never holds the whole payload. Values are built in the encoding
//! anykv's own loader gives them (`persist::codec::build_*`, Redis's
//! `rdbLoadObject` rules under the current thresholds).

use std::io::{BufReader, Read};

use super::{lzf, packed, RdbError, Type};
use crate::db::list::List;
use crate::db::{Value, NO_EXPIRE};
use crate::persist::codec::{self, Record, Thresholds};
use crate::sds::Sds;

/// What an RDB file said besides its keys.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RdbInfo {
    pub version: u32,
    /// AUX fields (`redis-ver`, `repl-id`, `repl-offset`, ...).
    pub aux: Vec<(String, String)>,
    /// Keys handed to the caller.
    pub keys: u64,
    /// Keys skipped because their collection was empty (Redis skips them).
    pub empty: u64,
    /// Function libraries' code (`crate::script::function`), for the
    /// caller to load.
    pub functions: Vec<Vec<u8>>,
}

impl RdbInfo {
    pub fn aux(&self, key: &str) -> Option<&str> {
        self.aux
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Elements preallocated for a count read from the input (it is untrusted;
/// vectors grow as elements actually arrive).
const PREALLOC: u64 = 4096;

struct Src<R: Read> {
    r: BufReader<R>,
    crc: u64,
    /// Bytes read so far (for error messages).
    pos: u64,
}

enum Len {
    Len(u64),
    Enc(u8),
}

impl<R: Read> Src<R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RdbError> {
        self.r.read_exact(buf).map_err(|e| self.io(e))?;
        self.crc = super::crc64::update(self.crc, buf);
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn io(&self, e: std::io::Error) -> RdbError {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            RdbError::Truncated(self.pos)
        } else {
            RdbError::Io(e)
        }
    }

    fn u8(&mut self) -> Result<u8, RdbError> {
        let mut b = [0u8; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RdbError> {
        let mut b = [0u8; N];
        self.fill(&mut b)?;
        Ok(b)
    }

    /// `n` bytes, read as they arrive (a huge stated length fails at the
    /// end of the input instead of allocating up front).
    fn bytes(&mut self, n: u64) -> Result<Vec<u8>, RdbError> {
        let mut v = Vec::with_capacity(n.min(1 << 20) as usize);
        let got = (&mut self.r)
            .take(n)
            .read_to_end(&mut v)
            .map_err(|e| self.io(e))?;
        self.pos += got as u64;
        if (got as u64) < n {
            return Err(RdbError::Truncated(self.pos));
        }
        self.crc = super::crc64::update(self.crc, &v);
        Ok(v)
    }

    fn len_or_enc(&mut self) -> Result<Len, RdbError> {
        let first = self.u8()?;
        Ok(match first >> 6 {
            0 => Len::Len(u64::from(first & 0x3f)),
            1 => Len::Len((u64::from(first & 0x3f) << 8) | u64::from(self.u8()?)),
            2 => match first {
                0x80 => Len::Len(u64::from(u32::from_be_bytes(self.array()?))),
                0x81 => Len::Len(u64::from_be_bytes(self.array()?)),
                _ => return Err(RdbError::BadLength(self.pos)),
            },
            _ => Len::Enc(first & 0x3f),
        })
    }

    fn len(&mut self) -> Result<u64, RdbError> {
        match self.len_or_enc()? {
            Len::Len(n) => Ok(n),
            Len::Enc(_) => Err(RdbError::BadLength(self.pos)),
        }
    }

    /// A string in any of RDB's encodings (plain, integer, LZF).
    fn string(&mut self) -> Result<Vec<u8>, RdbError> {
        match self.len_or_enc()? {
            Len::Len(n) => self.bytes(n),
            Len::Enc(e) => {
                let v: i64 = match e {
                    0 => i64::from(i8::from_le_bytes(self.array()?)),
                    1 => i64::from(i16::from_le_bytes(self.array()?)),
                    2 => i64::from(i32::from_le_bytes(self.array()?)),
                    3 => {
                        let clen = self.len()?;
                        let len = self.len()?;
                        let data = self.bytes(clen)?;
                        let len =
                            usize::try_from(len).map_err(|_| RdbError::BadLength(self.pos))?;
                        return Ok(lzf::decompress(&data, len)?);
                    }
                    _ => return Err(RdbError::BadLength(self.pos)),
                };
                Ok(v.to_string().into_bytes())
            }
        }
    }

    /// A score of the old ZSET type: a length byte (253 NaN, 254 +inf,
    /// 255 -inf) and the number as text.
    fn text_score(&mut self) -> Result<f64, RdbError> {
        match self.u8()? {
            253 => Ok(f64::NAN),
            254 => Ok(f64::INFINITY),
            255 => Ok(f64::NEG_INFINITY),
            n => {
                let b = self.bytes(u64::from(n))?;
                score(&b)
            }
        }
    }
}

fn score(b: &[u8]) -> Result<f64, RdbError> {
    crate::util::parse_f64(b)
        .ok_or_else(|| RdbError::BadScore(String::from_utf8_lossy(b).into_owned()))
}

/// Reads an RDB file or stream, handing every key to `each` (in file
/// order) as a [`Record`] built under `th`. `databases` bounds SELECTDB.
/// Keys whose TTL has passed are handed over too: the caller decides (a
/// primary's loader skips them, a replica keeps them for its primary's
/// DEL). The checksum is verified when the file has one.
pub fn read<R: Read>(
    input: R,
    th: &Thresholds,
    databases: u32,
    mut each: impl FnMut(Record) -> Result<(), RdbError>,
) -> Result<RdbInfo, RdbError> {
    let mut s = Src {
        r: BufReader::with_capacity(256 << 10, input),
        crc: 0,
        pos: 0,
    };
    let magic: [u8; 9] = s.array()?;
    if &magic[..5] != b"REDIS" {
        return Err(RdbError::Magic);
    }
    let version = std::str::from_utf8(&magic[5..])
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or(RdbError::Magic)?;
    if !(1..=super::RDB_VERSION).contains(&version) {
        return Err(RdbError::Version(version));
    }
    let mut info = RdbInfo {
        version,
        ..Default::default()
    };
    let mut db = 0u32;
    let mut expire_at = NO_EXPIRE;
    loop {
        let op = s.u8()?;
        match op {
            super::OP_EXPIRETIME => {
                expire_at = i64::from(i32::from_le_bytes(s.array()?)) * 1000;
            }
            super::OP_EXPIRETIME_MS => expire_at = i64::from_le_bytes(s.array()?),
            super::OP_IDLE => {
                s.len()?;
            }
            super::OP_FREQ => {
                s.u8()?;
            }
            super::OP_SELECTDB => {
                let n = s.len()?;
                db = u32::try_from(n)
                    .ok()
                    .filter(|&d| d < databases)
                    .ok_or(RdbError::Db(n, databases))?;
            }
            super::OP_RESIZEDB => {
                s.len()?;
                s.len()?;
            }
            super::OP_AUX => {
                let k = s.string()?;
                let v = s.string()?;
                info.aux.push((
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                ));
            }
            super::OP_FUNCTION2 => info.functions.push(s.string()?),
            super::OP_EOF => break,
            ty => {
                let key = s.string()?;
                let value = load_value(&mut s, ty, &key, th)?;
                let at = std::mem::replace(&mut expire_at, NO_EXPIRE);
                match value {
                    None => info.empty += 1,
                    Some(value) => {
                        info.keys += 1;
                        each(Record {
                            db,
                            key: Sds::from_vec(key),
                            value,
                            expire_at: at,
                        })?;
                    }
                }
            }
        }
    }
    if version >= 5 {
        let computed = s.crc;
        let file = u64::from_le_bytes(s.array()?);
        // Zero: written with `rdbchecksum no`.
        if file != 0 && file != computed {
            return Err(RdbError::Checksum { file, computed });
        }
    }
    Ok(info)
}

/// Consecutive elements as pairs (field, value).
type Pairs<'a> = Vec<(&'a [u8], &'a [u8])>;

/// Reads an RDB into the keyspace `ks` (whose databases bound SELECTDB),
/// inserting every key; keys whose TTL passed before `skip_expired_at`
/// are skipped and counted instead (a primary loading a file), or kept
/// when it is None (a replica: its primary's DEL follows). Returns what
/// the file said and how many keys were skipped.
pub fn read_into<R: Read>(
    input: R,
    th: &Thresholds,
    ks: &mut crate::db::Keyspace,
    skip_expired_at: Option<i64>,
) -> Result<(RdbInfo, u64), RdbError> {
    let dbs = ks.dbs.len() as u32;
    let mut skipped = 0u64;
    let info = read(input, th, dbs, |r| {
        if skip_expired_at.is_some_and(|now| r.expire_at != NO_EXPIRE && r.expire_at <= now) {
            skipped += 1;
            return Ok(());
        }
        let db = &mut ks.dbs[r.db as usize];
        let idx = db.upsert(r.key.as_bytes(), r.value, 0);
        db.set_expire(idx, r.expire_at);
        Ok(())
    })?;
    Ok((info, skipped))
}

fn elems_to_pairs<'a>(v: &'a [Vec<u8>], what: &'static str) -> Result<Pairs<'a>, RdbError> {
    if !v.len().is_multiple_of(2) {
        return Err(RdbError::Odd(what));
    }
    Ok(v.chunks_exact(2).map(|c| (&c[0][..], &c[1][..])).collect())
}

fn zset_pairs(v: &[Vec<u8>]) -> Result<Vec<(&[u8], f64)>, RdbError> {
    elems_to_pairs(v, "sorted set")?
        .into_iter()
        .map(|(m, sc)| Ok((m, score(sc)?)))
        .collect()
}

/// Loads one value of RDB type `ty`; None for an empty collection.
fn load_value<R: Read>(
    s: &mut Src<R>,
    ty: u8,
    key: &[u8],
    th: &Thresholds,
) -> Result<Option<Value>, RdbError> {
    let t = Type::from_u8(ty).ok_or(RdbError::Opcode(ty, s.pos))?;
    let unsupported = |what: &'static str| RdbError::Unsupported {
        what,
        key: String::from_utf8_lossy(key).into_owned(),
    };
    let v = match t {
        Type::String => Value::from_vec(s.string()?),
        Type::List => {
            let n = s.len()?;
            let mut items = std::collections::VecDeque::with_capacity(n.min(PREALLOC) as usize);
            for _ in 0..n {
                items.push_back(Sds::from_vec(s.string()?));
            }
            list(items)
        }
        Type::Set => {
            let n = s.len()?;
            let mut m = Vec::with_capacity(n.min(PREALLOC) as usize);
            for _ in 0..n {
                m.push(s.string()?);
            }
            let refs: Vec<&[u8]> = m.iter().map(|x| &x[..]).collect();
            codec::build_set(&refs, th)?
        }
        Type::ZSet | Type::ZSet2 => {
            let n = s.len()?;
            let mut m = Vec::with_capacity(n.min(PREALLOC) as usize);
            for _ in 0..n {
                let member = s.string()?;
                let sc = if t == Type::ZSet2 {
                    f64::from_le_bytes(s.array()?)
                } else {
                    s.text_score()?
                };
                m.push((member, sc));
            }
            let refs: Vec<(&[u8], f64)> = m.iter().map(|(x, sc)| (&x[..], *sc)).collect();
            codec::build_zset(&refs, th)?
        }
        Type::Hash => {
            let n = s.len()?;
            let mut m = Vec::with_capacity(n.min(PREALLOC) as usize);
            for _ in 0..n {
                m.push((s.string()?, s.string()?));
            }
            let refs: Vec<(&[u8], &[u8])> = m.iter().map(|(f, v)| (&f[..], &v[..])).collect();
            codec::build_hash(&refs, th)?
        }
        Type::SetIntset => codec::build_int_set(packed::intset(&s.string()?)?, th)?,
        Type::ListZiplist => list(
            packed::ziplist(&s.string()?)?
                .into_iter()
                .map(Sds::from_vec)
                .collect(),
        ),
        Type::ZSetZiplist => codec::build_zset(
            &zset_pairs(&packed::ziplist(&s.string()?)?)?,
            &th.for_packed(),
        )?,
        Type::ZSetListpack => codec::build_zset(
            &zset_pairs(&packed::listpack(&s.string()?)?)?,
            &th.for_packed(),
        )?,
        Type::HashZiplist => {
            let e = packed::ziplist(&s.string()?)?;
            codec::build_hash(&elems_to_pairs(&e, "hash")?, &th.for_packed())?
        }
        Type::HashListpack => {
            let e = packed::listpack(&s.string()?)?;
            codec::build_hash(&elems_to_pairs(&e, "hash")?, &th.for_packed())?
        }
        Type::ListQuicklist | Type::ListQuicklist2 => {
            let nodes = s.len()?;
            let mut items = std::collections::VecDeque::new();
            for _ in 0..nodes {
                let container = if t == Type::ListQuicklist2 {
                    s.len()?
                } else {
                    2
                };
                let blob = s.string()?;
                match (t, container) {
                    (Type::ListQuicklist, _) => {
                        items.extend(packed::ziplist(&blob)?.into_iter().map(Sds::from_vec))
                    }
                    (_, 1) => items.push_back(Sds::from_vec(blob)),
                    (_, 2) => items.extend(packed::listpack(&blob)?.into_iter().map(Sds::from_vec)),
                    _ => return Err(RdbError::BadContainer(container)),
                }
            }
            list(items)
        }
        Type::HashZipmap => return Err(unsupported("zipmap hash (Redis before 2.6)")),
        Type::Module | Type::Module2 => return Err(unsupported("module value")),
        Type::Stream | Type::Stream2 => stream(s, t == Type::Stream2).map_err(|e| match e {
            StreamLoad::Rdb(e) => e,
            StreamLoad::Bad(why) => unsupported(why),
        })?,
    };
    Ok((!is_empty(&v)).then_some(v))
}

/// Why a stream did not load.
enum StreamLoad {
    Rdb(RdbError),
    Bad(&'static str),
}

impl From<RdbError> for StreamLoad {
    fn from(e: RdbError) -> Self {
        StreamLoad::Rdb(e)
    }
}

/// A stream: its nodes (16-byte master id, listpack), length, last id;
/// since 7.0 (`v2`) its first id, greatest deleted id and entries added;
/// then its consumer groups.
fn stream<R: Read>(s: &mut Src<R>, v2: bool) -> Result<Value, StreamLoad> {
    use crate::db::stream::{lp::Lp, Stream, StreamId};

    let n = s.len()?;
    let mut nodes = Vec::with_capacity(n.min(PREALLOC) as usize);
    for _ in 0..n {
        let key = s.string()?;
        let id =
            StreamId::from_key(&key).ok_or(StreamLoad::Bad("a stream node key is not 16 bytes"))?;
        let lp = Lp::from_bytes(s.string()?).map_err(|e| StreamLoad::Rdb(e.into()))?;
        if lp.first().is_none() {
            return Err(StreamLoad::Bad("an empty listpack inside a stream"));
        }
        nodes.push((id, lp));
    }
    let length = s.len()?;
    let last_id = StreamId::new(s.len()?, s.len()?);
    let (first_id, max_deleted, entries_added) = if v2 {
        let first = StreamId::new(s.len()?, s.len()?);
        let max_deleted = StreamId::new(s.len()?, s.len()?);
        (Some(first), max_deleted, s.len()?)
    } else {
        (None, StreamId::MIN, length)
    };
    let groups = s.len()?;
    let mut st = Stream::from_parts(
        nodes,
        length,
        last_id,
        first_id.unwrap_or_default(),
        max_deleted,
        entries_added,
    )
    .map_err(StreamLoad::Bad)?;
    if first_id.is_none() {
        st.first_id = st.edge(false).unwrap_or_default();
    }
    for _ in 0..groups {
        let (name, g) = stream_group(s, &st, v2)?;
        if st.groups.insert(name, g).is_some() {
            return Err(StreamLoad::Bad(
                "two consumer groups of a stream have the same name",
            ));
        }
    }
    Ok(Value::Stream(Box::new(st)))
}

/// A consumer group: name, last id, (since 7.0) entries read, its PEL
/// (16-byte id, delivery time in ms, delivery count), its consumers
/// (name, seen time, the ids of the PEL they own).
fn stream_group<R: Read>(
    s: &mut Src<R>,
    st: &crate::db::stream::Stream,
    v2: bool,
) -> Result<(Vec<u8>, crate::db::stream::group::Group), StreamLoad> {
    use crate::db::stream::group::Group;
    use crate::db::stream::StreamId;
    let name = s.string()?;
    let last = StreamId::new(s.len()?, s.len()?);
    let entries_read = if v2 {
        // (-1, "unknown", is written as the 64-bit length it casts to.)
        let n = s.len()? as i64;
        if n < -1 {
            return Err(StreamLoad::Bad("a group's entries-read is out of range"));
        }
        n
    } else {
        st.counts().entries_up_to(last)
    };
    let mut g = Group::new(last, entries_read);
    let n = s.len()?;
    let mut pel = Vec::with_capacity(n.min(PREALLOC) as usize);
    for _ in 0..n {
        let id = StreamId::from_key(&s.array::<16>()?).ok_or(StreamLoad::Bad("bad id"))?;
        let time = i64::from_le_bytes(s.array::<8>()?);
        let count = s.len()?;
        pel.push((id, time, count));
    }
    let consumers = s.len()?;
    let mut owner: std::collections::BTreeMap<StreamId, Vec<u8>> = Default::default();
    for _ in 0..consumers {
        let cname = s.string()?;
        let seen = i64::from_le_bytes(s.array::<8>()?);
        let (c, created) = g.consumer_or_create(&cname, seen);
        if !created {
            return Err(StreamLoad::Bad(
                "two consumers of a group have the same name",
            ));
        }
        c.seen_time = seen;
        let owned = s.len()?;
        for _ in 0..owned {
            let id = StreamId::from_key(&s.array::<16>()?).ok_or(StreamLoad::Bad("bad id"))?;
            if owner.insert(id, cname.clone()).is_some() {
                return Err(StreamLoad::Bad("a pending entry has two consumers"));
            }
        }
    }
    for (id, time, count) in pel {
        let Some(cname) = owner.remove(&id) else {
            return Err(StreamLoad::Bad("a group's pending entry has no consumer"));
        };
        if g.pel.contains_key(&id) {
            return Err(StreamLoad::Bad("a group's pending entry is listed twice"));
        }
        g.assign(id, &cname, time, count);
    }
    if !owner.is_empty() {
        return Err(StreamLoad::Bad(
            "a consumer's pending entry is not the group's",
        ));
    }
    g.check().map_err(StreamLoad::Bad)?;
    Ok((name, g))
}

fn list(items: std::collections::VecDeque<Sds>) -> Value {
    Value::List(Box::new(List { items }))
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Str(_) => false,
        Value::List(l) => l.len() == 0,
        Value::Hash(h) => h.len() == 0,
        Value::Set(s) => s.len() == 0,
        Value::ZSet(z) => z.len() == 0,
        // (An empty stream is a value: its last id is kept.)
        Value::Stream(_) => false,
    }
}

/// The body of a DUMP-style payload once its footer (RDB version, CRC-64)
/// checks out (Redis's `verifyDumpPayload`).
pub fn dump_body(payload: &[u8]) -> Option<&[u8]> {
    if payload.len() < 10 {
        return None;
    }
    let (body, footer) = payload.split_at(payload.len() - 10);
    let version = u16::from_le_bytes([footer[0], footer[1]]);
    let mut crc = [0u8; 8];
    crc.copy_from_slice(&footer[2..]);
    let ok = u32::from(version) <= super::RDB_VERSION
        && super::crc64::update(0, &payload[..payload.len() - 8]) == u64::from_le_bytes(crc);
    ok.then_some(body)
}

/// The value in a `DUMP` payload (see `super::write::dump_value`; Redis's
/// own, every encoding it writes), built under `th`. `None` when the body
/// is not one whole value (Redis's "Bad data format"); the caller checks
/// the footer first with [`dump_body`].
pub fn dump_value(body: &[u8], th: &Thresholds) -> Option<Value> {
    let mut s = Src {
        r: BufReader::new(body),
        crc: 0,
        pos: 0,
    };
    let ty = s.u8().ok()?;
    let v = load_value(&mut s, ty, b"", th).ok()??;
    (s.pos as usize == body.len()).then_some(v)
}

/// The libraries' code in a `FUNCTION DUMP` payload (see
/// `super::write::function_dump`), or Redis's error (without `ERR `).
pub fn function_dump(payload: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let body = dump_body(payload)
        .ok_or_else(|| "DUMP payload version or checksum are wrong".to_string())?;
    let mut s = Src {
        r: BufReader::new(body),
        crc: 0,
        pos: 0,
    };
    let mut codes = Vec::new();
    while (s.pos as usize) < body.len() {
        match s.u8() {
            Err(_) => return Err("can not read data type".into()),
            Ok(super::OP_FUNCTION_PRE_GA) => {
                return Err("Pre-GA function format not supported".into())
            }
            Ok(super::OP_FUNCTION2) => {}
            Ok(_) => return Err("given type is not a function".into()),
        }
        match s.string() {
            Ok(code) => codes.push(code),
            Err(_) => return Err("failed loading the given functions payload".into()),
        }
    }
    Ok(codes)
}
