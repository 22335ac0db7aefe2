//! A stream (XADD, XRANGE, XDEL, XTRIM...), stored as Redis 7.0 stores
//! one: entries in id order, in nodes, each node a listpack ([`lp`])
//! keyed by its first ("master") id. A node starts with a master entry
//! (its live and deleted entry counts and the field names of its first
//! entry); an entry holds its id as deltas from the master id, and only
//! its values when its fields are the master's (`SAMEFIELDS`), the common
//! case of a stream of like events. Deleting marks an entry; a node goes
//! when its last live entry does.
//!
//! Why Redis's own layout: memory per entry is Redis's (a few bytes over
//! the values for like events), the node boundaries are Redis's (so
//! `MAXLEN ~` trims what redis-server trims), and nodes go to and come
//! from RDB files and DUMP payloads as they are.

pub mod group;
pub mod lp;

use std::collections::BTreeMap;
use std::fmt;

use lp::{Elem, Lp};

/// An entry's id: milliseconds and a sequence number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    pub fn new(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    /// The next id (None past the last one).
    pub fn incr(self) -> Option<StreamId> {
        if self.seq < u64::MAX {
            Some(StreamId::new(self.ms, self.seq + 1))
        } else if self.ms < u64::MAX {
            Some(StreamId::new(self.ms + 1, 0))
        } else {
            None
        }
    }

    /// The id before (None before the first one).
    pub fn decr(self) -> Option<StreamId> {
        if self.seq > 0 {
            Some(StreamId::new(self.ms, self.seq - 1))
        } else if self.ms > 0 {
            Some(StreamId::new(self.ms - 1, u64::MAX))
        } else {
            None
        }
    }

    /// The 16 big-endian bytes Redis keys nodes by (and stores in RDB).
    pub fn to_key(self) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&self.ms.to_be_bytes());
        k[8..].copy_from_slice(&self.seq.to_be_bytes());
        k
    }

    pub fn from_key(k: &[u8]) -> Option<StreamId> {
        let k: &[u8; 16] = k.try_into().ok()?;
        let (a, b) = k.split_at(8);
        Some(StreamId::new(
            u64::from_be_bytes(a.try_into().ok()?),
            u64::from_be_bytes(b.try_into().ok()?),
        ))
    }
}

impl StreamId {
    /// `ms-seq` written into `buf` without allocating (replies write one
    /// per entry).
    pub fn write(self, buf: &mut [u8; 41]) -> &[u8] {
        fn digits(mut v: u64, out: &mut [u8; 20]) -> usize {
            let mut i = out.len();
            loop {
                i -= 1;
                out[i] = b'0' + (v % 10) as u8;
                v /= 10;
                if v == 0 {
                    return i;
                }
            }
        }
        let (mut a, mut b) = ([0u8; 20], [0u8; 20]);
        let (i, j) = (digits(self.ms, &mut a), digits(self.seq, &mut b));
        let (la, lb) = (20 - i, 20 - j);
        buf[..la].copy_from_slice(&a[i..]);
        buf[la] = b'-';
        buf[la + 1..la + 1 + lb].copy_from_slice(&b[j..]);
        &buf[..la + 1 + lb]
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

const FLAG_DELETED: i64 = 1;
const FLAG_SAMEFIELDS: i64 = 2;

/// The most bytes a node may take, whatever `stream-node-max-bytes` says
/// (Redis's `STREAM_LISTPACK_MAX_SIZE`).
pub const NODE_MAX_SIZE: usize = 1 << 30;

/// Where new nodes start (`stream-node-max-bytes`, `-entries`; 0: no
/// limit of that kind).
#[derive(Clone, Copy, Debug)]
pub struct NodeLimits {
    pub max_bytes: usize,
    pub max_entries: i64,
}

impl Default for NodeLimits {
    /// Redis's defaults: 4096 bytes, 100 entries.
    fn default() -> Self {
        NodeLimits {
            max_bytes: 4096,
            max_entries: 100,
        }
    }
}

/// What XADD's or XTRIM's trimming keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trim {
    /// At most this many entries.
    MaxLen(u64),
    /// No entry below this id.
    MinId(StreamId),
}

/// Why an append failed.
#[derive(Debug, PartialEq, Eq)]
pub enum AppendError {
    /// The id is not above the stream's last one.
    IdTooSmall,
    /// The fields and values are too large for a node.
    TooLarge,
}

/// An entry as read: its id and its fields and values, alternating.
pub type Fields<'a> = smallvec::SmallVec<[Elem<'a>; 16]>;

/// A stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stream {
    nodes: BTreeMap<StreamId, Lp>,
    /// Live entries.
    pub length: u64,
    /// The last id ever added (it stays when that entry is deleted).
    pub last_id: StreamId,
    /// The first live entry's id (0-0 when empty).
    pub first_id: StreamId,
    /// The greatest id deleted (XDEL).
    pub max_deleted: StreamId,
    /// Entries ever added.
    pub entries_added: u64,
    /// Consumer groups by name.
    pub groups: BTreeMap<Vec<u8>, group::Group>,
}

/// A node's master entry, read.
struct Master<'a> {
    id: StreamId,
    count: i64,
    deleted: i64,
    fields: Fields<'a>,
    /// The first entry's position (None: no entries).
    first_entry: Option<usize>,
}

fn master(id: StreamId, lp: &Lp) -> Option<Master<'_>> {
    let p = lp.first()?;
    let count = lp.get(p).int();
    let p = lp.next(p)?;
    let deleted = lp.get(p).int();
    let mut p = lp.next(p)?;
    let n = lp.get(p).int();
    let mut fields = Fields::new();
    for _ in 0..n {
        p = lp.next(p)?;
        fields.push(lp.get(p));
    }
    // (The master entry's terminating zero.)
    let p = lp.next(p)?;
    Some(Master {
        id,
        count,
        deleted,
        fields,
        first_entry: lp.next(p),
    })
}

/// An entry read from a node: its id, its fields and values.
struct Entry<'a> {
    id: StreamId,
    fields: Fields<'a>,
}

/// An entry's flags and id (from the master's and its deltas), and the
/// position of its last id element: its fields follow.
fn entry_id(lp: &Lp, m: &Master<'_>, at: usize) -> Option<(i64, StreamId, usize)> {
    let flags = lp.get(at).int();
    let p = lp.next(at)?;
    let ms = m.id.ms.wrapping_add(lp.get(p).int() as u64);
    let p = lp.next(p)?;
    let seq = m.id.seq.wrapping_add(lp.get(p).int() as u64);
    Some((flags, StreamId::new(ms, seq), p))
}

fn entry_at<'a>(lp: &'a Lp, m: &Master<'a>, at: usize) -> Option<Entry<'a>> {
    let (flags, id, mut p) = entry_id(lp, m, at)?;
    let mut fields = Fields::new();
    if flags & FLAG_SAMEFIELDS != 0 {
        for f in &m.fields {
            p = lp.next(p)?;
            fields.push(*f);
            fields.push(lp.get(p));
        }
    } else {
        p = lp.next(p)?;
        let n = lp.get(p).int();
        for _ in 0..n.checked_mul(2)? {
            p = lp.next(p)?;
            fields.push(lp.get(p));
        }
    }
    Some(Entry { id, fields })
}

/// An entry's flags, id and the next entry's position, its fields
/// skipped (not read).
fn entry_head(lp: &Lp, m: &Master<'_>, at: usize) -> Option<(i64, StreamId, Option<usize>)> {
    let (flags, id, mut p) = entry_id(lp, m, at)?;
    let skip = if flags & FLAG_SAMEFIELDS != 0 {
        m.fields.len() as i64
    } else {
        p = lp.next(p)?;
        lp.get(p).int().checked_mul(2)?
    };
    for _ in 0..skip {
        p = lp.next(p)?;
    }
    // (The entry's lp-count.)
    let p = lp.next(p)?;
    Some((flags, id, lp.next(p)))
}

/// Every entry's head in a node (deleted ones too), in order: its
/// position, flags and id.
fn heads(lp: &Lp, m: &Master<'_>) -> Vec<(usize, i64, StreamId)> {
    let mut out = Vec::new();
    let mut p = m.first_entry;
    while let Some(at) = p {
        let Some((flags, id, next)) = entry_head(lp, m, at) else {
            break;
        };
        out.push((at, flags, id));
        p = next;
    }
    out
}

/// Checks a node from outside (an RDB file, a DUMP payload, a snapshot)
/// the way Redis's deep integrity check does, and more: every element
/// where a number belongs is one; the master entry ends with its zero;
/// every entry has the fields it says and the lp-count that matches, ids
/// strictly increasing from the node's key up to `below` (the next
/// node's key, or past the stream's last id); the walk ends exactly at
/// the end. Its live and deleted entry counts.
fn validate_node(
    key: StreamId,
    lp: &Lp,
    below: Option<StreamId>,
    last: StreamId,
) -> Result<(u64, u64), &'static str> {
    const BAD: &str = "a stream node is malformed";
    let int = |p: usize| -> Result<i64, &'static str> {
        match lp.get(p) {
            Elem::Int(v) => Ok(v),
            Elem::Str(s) => crate::util::parse_i64(s).ok_or(BAD),
        }
    };
    let next = |p: usize| lp.next(p).ok_or(BAD);
    let mut p = lp.first().ok_or(BAD)?;
    let count = int(p)?;
    p = next(p)?;
    let deleted = int(p)?;
    p = next(p)?;
    let nfields = int(p)?;
    if count < 0 || deleted < 0 || nfields < 0 {
        return Err(BAD);
    }
    for _ in 0..nfields {
        p = next(p)?;
    }
    p = next(p)?;
    if int(p)? != 0 {
        return Err(BAD);
    }
    let (mut live, mut dead) = (0u64, 0u64);
    let mut prev: Option<StreamId> = None;
    let mut cur = lp.next(p);
    while let Some(at) = cur {
        let flags = int(at)?;
        let mut q = next(at)?;
        let ms = key.ms.wrapping_add(int(q)? as u64);
        q = next(q)?;
        let seq = key.seq.wrapping_add(int(q)? as u64);
        let id = StreamId::new(ms, seq);
        if id < key || prev.is_some_and(|x| id <= x) || id > last || below.is_some_and(|b| id >= b)
        {
            return Err("stream entry ids are out of order");
        }
        prev = Some(id);
        let n = if flags & FLAG_SAMEFIELDS != 0 {
            for _ in 0..nfields {
                q = next(q)?;
            }
            nfields
        } else {
            q = next(q)?;
            let n = int(q)?;
            if n < 0 {
                return Err(BAD);
            }
            for _ in 0..n.checked_mul(2).ok_or(BAD)? {
                q = next(q)?;
            }
            n
        };
        q = next(q)?;
        let want = if flags & FLAG_SAMEFIELDS != 0 {
            n + 3
        } else {
            2 * n + 4
        };
        if int(q)? != want {
            return Err(BAD);
        }
        if flags & FLAG_DELETED != 0 {
            dead += 1;
        } else {
            live += 1;
        }
        cur = lp.next(q);
    }
    if prev.is_none() || live as i64 != count || dead as i64 != deleted {
        return Err("a stream node's counts differ from its entries");
    }
    Ok((live, dead))
}

/// Appends an entry to node `lp` whose master id is `master_id`: its
/// flags, id deltas, fields (unless SAMEFIELDS) and values, lp-count.
fn push_entry(lp: &mut Lp, id: StreamId, master_id: StreamId, flags: i64, pairs: &[&[u8]]) {
    let n = (pairs.len() / 2) as i64;
    let same = flags & FLAG_SAMEFIELDS != 0;
    lp.append_int(flags);
    lp.append_int(id.ms.wrapping_sub(master_id.ms) as i64);
    lp.append_int(id.seq.wrapping_sub(master_id.seq) as i64);
    if !same {
        lp.append_int(n);
    }
    for pair in pairs.chunks(2) {
        if !same {
            lp.append(pair[0]);
        }
        lp.append(pair[1]);
    }
    lp.append_int(if same { n + 3 } else { 2 * n + 4 });
}

impl Stream {
    pub fn new() -> Stream {
        Stream::default()
    }

    pub fn len(&self) -> u64 {
        self.length
    }

    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// The nodes, by master id (RDB, DUMP).
    pub fn nodes(&self) -> impl Iterator<Item = (&StreamId, &Lp)> {
        self.nodes.iter()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Bytes the nodes take (memory accounting).
    pub fn allocated(&self) -> usize {
        let nodes: usize = self.nodes.values().map(|l| l.allocated() + 48).sum();
        let groups: usize = self
            .groups
            .iter()
            .map(|(n, g)| n.len() + g.allocated())
            .sum();
        nodes + groups
    }

    /// A stream from its nodes and fields as an RDB file holds them; each
    /// node is checked to read as a node, and the counts to add up.
    pub fn from_parts(
        nodes: Vec<(StreamId, Lp)>,
        length: u64,
        last_id: StreamId,
        first_id: StreamId,
        max_deleted: StreamId,
        entries_added: u64,
    ) -> Result<Stream, &'static str> {
        let mut map = BTreeMap::new();
        for (id, lp) in nodes {
            if map.insert(id, lp).is_some() {
                return Err("two stream nodes have the same id");
            }
        }
        let mut live = 0u64;
        let keys: Vec<StreamId> = map.keys().copied().collect();
        for (i, k) in keys.iter().enumerate() {
            let lp = &map[k];
            let (alive, _) = validate_node(*k, lp, keys.get(i + 1).copied(), last_id)?;
            live += alive;
        }
        if live != length {
            return Err("a stream's length differs from its entries");
        }
        let mut s = Stream {
            nodes: map,
            length,
            last_id,
            first_id,
            max_deleted,
            entries_added,
            groups: BTreeMap::new(),
        };
        // (Recomputed: the file's value is a cache of this.)
        s.first_id = s.edge(false).unwrap_or_default();
        Ok(s)
    }

    /// Appends an entry with `id` (above the last id) and `pairs`
    /// (fields and values alternating), starting a new node where Redis
    /// would.
    pub fn append(
        &mut self,
        id: StreamId,
        pairs: &[&[u8]],
        limits: NodeLimits,
    ) -> Result<(), AppendError> {
        if id <= self.last_id {
            return Err(AppendError::IdTooSmall);
        }
        let total: usize = pairs.iter().map(|p| p.len()).sum();
        if total > NODE_MAX_SIZE {
            return Err(AppendError::TooLarge);
        }
        let n = pairs.len() / 2;
        let max_bytes = match limits.max_bytes {
            0 => NODE_MAX_SIZE,
            b => b.min(NODE_MAX_SIZE),
        };
        // The tail node takes the entry unless it is full (one lookup, one
        // read of its master entry).
        let mut appended = false;
        if let Some(mut tail) = self.nodes.last_entry() {
            let k = *tail.key();
            let lp = tail.get_mut();
            // (full, same fields as the master, live count)
            let seen = master(k, lp).map(|m| {
                let full = lp.len_bytes() + total >= max_bytes
                    || (limits.max_entries > 0 && m.count + m.deleted >= limits.max_entries);
                let same = m.fields.len() == n
                    && m.fields
                        .iter()
                        .zip(pairs.iter().step_by(2))
                        .all(|(a, b)| a.is(b));
                (full, same, m.count)
            });
            match seen {
                Some((false, same, count)) => {
                    if let Some(p) = lp.first() {
                        lp.replace_int(p, count + 1);
                    }
                    let flags = if same { FLAG_SAMEFIELDS } else { 0 };
                    push_entry(lp, id, k, flags, pairs);
                    appended = true;
                }
                // A full node gives back what it allocated past its size
                // (Redis's lpShrinkToFit).
                _ => lp.shrink(),
            }
        }
        if !appended {
            // A new node's key is the new id, above every entry (and so
            // every key) there is.
            if self.nodes.contains_key(&id) {
                return Err(AppendError::IdTooSmall);
            }
            let mut lp = Lp::new();
            lp.append_int(1);
            lp.append_int(0);
            lp.append_int(n as i64);
            for f in pairs.iter().step_by(2) {
                lp.append(f);
            }
            lp.append_int(0);
            push_entry(&mut lp, id, id, FLAG_SAMEFIELDS, pairs);
            self.nodes.insert(id, lp);
        }
        if self.length == 0 {
            self.first_id = id;
        }
        self.length += 1;
        self.entries_added = self.entries_added.wrapping_add(1);
        self.last_id = id;
        Ok(())
    }

    /// Calls `f` with each live entry from `start` to `end` (inclusive),
    /// in order or (`rev`) from the end, until it returns false.
    pub fn range(
        &self,
        start: StreamId,
        end: StreamId,
        rev: bool,
        mut f: impl FnMut(StreamId, &[Elem<'_>]) -> bool,
    ) {
        if start > end {
            return;
        }
        // The node holding `start` begins at or before it.
        let from = self
            .nodes
            .range(..=start)
            .next_back()
            .map_or(start, |(k, _)| *k);
        // Entries are read in place: their heads to find those in range,
        // their fields only for those.
        let visit = |k: &StreamId, lp: &Lp, f: &mut dyn FnMut(StreamId, &[Elem<'_>]) -> bool| {
            let Some(m) = master(*k, lp) else {
                return true;
            };
            let mut go = |at: usize| -> bool {
                match entry_at(lp, &m, at) {
                    Some(e) => f(e.id, &e.fields),
                    None => true,
                }
            };
            if rev {
                let mut heads: smallvec::SmallVec<[(usize, i64, StreamId); 128]> =
                    smallvec::SmallVec::new();
                let mut p = m.first_entry;
                while let Some(at) = p {
                    let Some((flags, id, next)) = entry_head(lp, &m, at) else {
                        break;
                    };
                    if id > end {
                        break;
                    }
                    heads.push((at, flags, id));
                    p = next;
                }
                for &(at, flags, id) in heads.iter().rev() {
                    if id < start {
                        return false;
                    }
                    if flags & FLAG_DELETED == 0 && !go(at) {
                        return false;
                    }
                }
            } else {
                let mut p = m.first_entry;
                while let Some(at) = p {
                    let Some((flags, id, next)) = entry_head(lp, &m, at) else {
                        break;
                    };
                    if id > end {
                        return false;
                    }
                    if flags & FLAG_DELETED == 0 && id >= start && !go(at) {
                        return false;
                    }
                    p = next;
                }
            }
            true
        };
        if rev {
            for (k, lp) in self.nodes.range(from..=end).rev() {
                if !visit(k, lp, &mut f) {
                    return;
                }
            }
        } else {
            for (k, lp) in self.nodes.range(from..=end) {
                if !visit(k, lp, &mut f) {
                    return;
                }
            }
        }
    }

    /// Feeds the entries and the ids that matter into a digest (replay
    /// and snapshot checks).
    pub fn digest_into(&self, h: &mut impl std::hash::Hasher) {
        use std::hash::Hash;
        (
            self.length,
            self.last_id,
            self.max_deleted,
            self.entries_added,
        )
            .hash(h);
        self.range(StreamId::MIN, StreamId::MAX, false, |id, fields| {
            id.hash(h);
            for f in fields {
                let mut b = [0u8; 20];
                f.bytes(&mut b).hash(h);
            }
            true
        });
        for (name, g) in &self.groups {
            (name, g.last_id, g.entries_read).hash(h);
            for (id, n) in &g.pel {
                (id, n.delivery_time, n.delivery_count, &n.consumer[..]).hash(h);
            }
            // (Not when consumers were last seen: a replica sees them
            // at its own time, as Redis's do.)
            for (name, c) in &g.consumers {
                (&name[..], c.pel.len()).hash(h);
            }
        }
    }

    /// The first entry's id, deleted or not (Redis's `streamGetEdgeID`
    /// without skipping tombstones); the greatest id when empty. What an
    /// approximate MINID trim is logged as.
    pub fn first_any(&self) -> StreamId {
        if self.length == 0 {
            return StreamId::MAX;
        }
        self.nodes
            .iter()
            .next()
            .and_then(|(k, lp)| {
                let m = master(*k, lp)?;
                entry_head(lp, &m, m.first_entry?).map(|h| h.1)
            })
            .unwrap_or(StreamId::MAX)
    }

    /// The first or last live entry's id.
    pub fn edge(&self, last: bool) -> Option<StreamId> {
        let mut found = None;
        self.range(StreamId::MIN, StreamId::MAX, last, |id, _| {
            found = Some(id);
            false
        });
        found
    }

    /// Deletes the entry `id`; false if there is no such live entry.
    /// (XDEL also moves `max_deleted` and `first_id`: [`Stream::xdel`].)
    fn delete(&mut self, id: StreamId) -> bool {
        let Some((&k, _)) = self.nodes.range(..=id).next_back() else {
            return false;
        };
        let found = self.nodes.get(&k).and_then(|lp| {
            let m = master(k, lp)?;
            let mut p = m.first_entry;
            while let Some(at) = p {
                let (flags, eid, next) = entry_head(lp, &m, at)?;
                if eid == id {
                    return (flags & FLAG_DELETED == 0).then_some((at, flags, m.count));
                }
                if eid > id {
                    return None;
                }
                p = next;
            }
            None
        });
        let Some((at, flags, count)) = found else {
            return false;
        };
        if count <= 1 {
            self.nodes.remove(&k);
        } else if let Some(lp) = self.nodes.get_mut(&k) {
            lp.replace_int(at, flags | FLAG_DELETED);
            if let Some(p) = lp.first() {
                lp.replace_int(p, count - 1);
                if let Some(p) = lp.next(p) {
                    let deleted = lp.get(p).int();
                    lp.replace_int(p, deleted + 1);
                }
            }
        }
        self.length = self.length.saturating_sub(1);
        true
    }

    /// XDEL: deletes the entries `ids`, moves the greatest deleted id and
    /// the first id; the number deleted.
    pub fn xdel(&mut self, ids: &[StreamId]) -> u64 {
        let mut deleted = 0;
        let mut first = false;
        for &id in ids {
            if self.delete(id) {
                if id == self.first_id {
                    first = true;
                }
                if id > self.max_deleted {
                    self.max_deleted = id;
                }
                deleted += 1;
            }
        }
        if deleted > 0 {
            if self.length == 0 {
                self.first_id = StreamId::MIN;
            } else if first {
                self.first_id = self.edge(false).unwrap_or_default();
            }
        }
        deleted
    }

    /// Trims as Redis's `streamTrim`: whole nodes first; then, unless
    /// `approx`, entries inside the node that crosses the bound; no node
    /// whose removal would take the count past `limit` (0: no limit). The
    /// number removed.
    pub fn trim(&mut self, how: Trim, approx: bool, limit: u64) -> u64 {
        let mut deleted = 0u64;
        // Nodes go from the front only: the next one is always the first.
        while let Some(k) = self.nodes.keys().next().copied() {
            if let Trim::MaxLen(max) = how {
                if self.length <= max {
                    break;
                }
            }
            // What this node holds: its live count, whether it goes whole,
            // its deleted count and its entries (position, flags, id).
            type Seen = (i64, bool, i64, Vec<(usize, i64, StreamId)>);
            let seen: Option<Seen> = self.nodes.get(&k).and_then(|lp| {
                let m = master(k, lp)?;
                let all = heads(lp, &m);
                let remove_node = match how {
                    Trim::MaxLen(max) => self.length.saturating_sub(m.count as u64) >= max,
                    // The node's last entry (deleted or not) is below.
                    Trim::MinId(min) => all.last().map_or(k, |e| e.2) < min,
                };
                Some((m.count, remove_node, m.deleted, all))
            });
            let Some((count, remove_node, deleted_before, all)) = seen else {
                break;
            };
            // No more work than `limit` entries: a node that would pass it
            // stays whole.
            if limit > 0 && deleted + count as u64 > limit {
                break;
            }
            if remove_node {
                self.nodes.remove(&k);
                self.length = self.length.saturating_sub(count as u64);
                deleted += count as u64;
                continue;
            }
            if approx {
                break;
            }
            // Marks entries inside this node.
            let mut marked = 0i64;
            let mut to_mark = Vec::new();
            let mut length = self.length;
            for (at, flags, id) in all {
                let stop = match how {
                    Trim::MaxLen(max) => length <= max,
                    Trim::MinId(min) => id >= min,
                };
                if stop {
                    break;
                }
                if flags & FLAG_DELETED == 0 {
                    to_mark.push((at, flags));
                    marked += 1;
                    length -= 1;
                }
            }
            let Some(lp) = self.nodes.get_mut(&k) else {
                break;
            };
            // From the last to the first: positions before a change stay.
            for (at, flags) in to_mark.into_iter().rev() {
                lp.replace_int(at, flags | FLAG_DELETED);
            }
            if let Some(p) = lp.first() {
                lp.replace_int(p, count - marked);
                if let Some(p) = lp.next(p) {
                    lp.replace_int(p, deleted_before + marked);
                }
            }
            self.length = length;
            deleted += marked as u64;
            break;
        }
        if self.length == 0 {
            self.first_id = StreamId::MIN;
        } else if deleted > 0 {
            self.first_id = self.edge(false).unwrap_or_default();
        }
        deleted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(s: &Stream, rev: bool) -> Vec<StreamId> {
        let mut out = Vec::new();
        s.range(StreamId::MIN, StreamId::MAX, rev, |id, _| {
            out.push(id);
            true
        });
        out
    }

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId::new(ms, seq)
    }

    #[test]
    fn appends_read_back_in_both_orders_with_their_fields() {
        let mut s = Stream::new();
        let lim = NodeLimits {
            max_bytes: 4096,
            max_entries: 3,
        };
        for i in 1..=7u64 {
            let v = i.to_string();
            // Same fields for most; a different set now and then.
            let pairs: Vec<&[u8]> = if i % 3 == 0 {
                vec![b"other", v.as_bytes()]
            } else {
                vec![b"a", v.as_bytes(), b"b", b"x"]
            };
            s.append(id(i, 0), &pairs, lim).unwrap();
        }
        assert_eq!(s.len(), 7);
        assert_eq!(s.node_count(), 3);
        let fwd = ids(&s, false);
        assert_eq!(fwd, (1..=7).map(|i| id(i, 0)).collect::<Vec<_>>());
        let mut rev = ids(&s, true);
        rev.reverse();
        assert_eq!(rev, fwd);
        let mut seen = Vec::new();
        s.range(id(3, 0), id(4, 0), false, |_, f| {
            let mut b = [0u8; 20];
            let mut c = [0u8; 20];
            seen.push((f[0].bytes(&mut b).to_vec(), f[1].bytes(&mut c).to_vec()));
            true
        });
        assert_eq!(
            seen,
            vec![
                (b"other".to_vec(), b"3".to_vec()),
                (b"a".to_vec(), b"4".to_vec())
            ]
        );
        assert_eq!(
            s.append(id(7, 0), &[b"a", b"1"], lim),
            Err(AppendError::IdTooSmall)
        );
    }

    #[test]
    fn deleting_marks_entries_and_drops_empty_nodes() {
        let mut s = Stream::new();
        let lim = NodeLimits {
            max_bytes: 4096,
            max_entries: 2,
        };
        for i in 1..=4 {
            s.append(id(i, 0), &[b"f", b"v"], lim).unwrap();
        }
        assert_eq!(s.xdel(&[id(1, 0), id(9, 9)]), 1);
        assert_eq!(s.first_id, id(2, 0));
        assert_eq!(s.max_deleted, id(1, 0));
        assert_eq!(s.node_count(), 2);
        assert_eq!(s.xdel(&[id(2, 0)]), 1);
        assert_eq!(s.node_count(), 1);
        assert_eq!(ids(&s, false), vec![id(3, 0), id(4, 0)]);
        assert_eq!(s.xdel(&[id(3, 0), id(4, 0)]), 2);
        assert!(s.is_empty());
        assert_eq!(s.first_id, StreamId::MIN);
        assert_eq!(s.last_id, id(4, 0));
    }

    #[test]
    fn trimming_removes_nodes_then_entries_unless_approximate() {
        let lim = NodeLimits {
            max_bytes: 4096,
            max_entries: 10,
        };
        let build = || {
            let mut s = Stream::new();
            for i in 1..=35 {
                s.append(id(i, 0), &[b"f", b"v"], lim).unwrap();
            }
            s
        };
        let mut s = build();
        // ~: whole nodes only (35 -> 25 -> 15; a third would leave 5).
        assert_eq!(s.trim(Trim::MaxLen(12), true, 0), 20);
        assert_eq!(s.len(), 15);
        assert_eq!(s.first_id, id(21, 0));
        let mut s = build();
        assert_eq!(s.trim(Trim::MaxLen(12), false, 0), 23);
        assert_eq!(s.len(), 12);
        assert_eq!(ids(&s, false).first(), Some(&id(24, 0)));
        let mut s = build();
        assert_eq!(s.trim(Trim::MinId(id(17, 0)), false, 0), 16);
        assert_eq!(s.first_id, id(17, 0));
        // A limit stops it before a node that would pass it.
        let mut s = build();
        assert_eq!(s.trim(Trim::MaxLen(0), true, 10), 10);
        let mut s = build();
        assert_eq!(s.trim(Trim::MaxLen(0), true, 25), 20);
        // Counts stay right for the RDB check.
        let parts: Vec<(StreamId, Lp)> = s.nodes().map(|(k, v)| (*k, v.clone())).collect();
        let back = Stream::from_parts(
            parts,
            s.length,
            s.last_id,
            s.first_id,
            s.max_deleted,
            s.entries_added,
        )
        .unwrap();
        assert_eq!(back, s);
    }

    /// A node built element by element (for malformed ones).
    fn raw_node(elems: &[i64]) -> Lp {
        let mut lp = Lp::new();
        for &e in elems {
            lp.append_int(e);
        }
        lp
    }

    #[test]
    fn ids_write_as_they_display() {
        for x in [
            id(0, 0),
            id(1, 2),
            id(u64::MAX, u64::MAX),
            id(1_700_000_000_000, 99),
        ] {
            let mut b = [0u8; 41];
            assert_eq!(x.write(&mut b), x.to_string().as_bytes());
        }
    }

    #[test]
    fn malformed_nodes_from_outside_are_refused() {
        let k = id(1, 0);
        let load = |lp: Lp, len: u64, last: StreamId| {
            Stream::from_parts(vec![(k, lp)], len, last, k, StreamId::MIN, len)
        };
        // A good one: master (1 live, 0 deleted, 0 fields, 0), one
        // SAMEFIELDS entry (flags 2, ms 0, seq 0, lp-count 3).
        assert!(load(raw_node(&[1, 0, 0, 0, 2, 0, 0, 3]), 1, k).is_ok());
        // Stray elements after the last entry.
        assert!(load(raw_node(&[1, 0, 0, 0, 2, 0, 0, 3, 2, 0]), 1, k).is_err());
        // A field count that overflows when doubled.
        assert!(load(raw_node(&[1, 0, 0, 0, 0, 0, 0, 1 << 62, 3]), 1, k).is_err());
        // A wrong lp-count, a non-zero master terminator.
        assert!(load(raw_node(&[1, 0, 0, 0, 2, 0, 0, 4]), 1, k).is_err());
        assert!(load(raw_node(&[1, 0, 0, 5, 2, 0, 0, 3]), 1, k).is_err());
        // Counts that differ, ids out of order or past the last id.
        assert!(load(raw_node(&[2, 0, 0, 0, 2, 0, 0, 3]), 1, k).is_err());
        assert!(load(raw_node(&[2, 0, 0, 0, 2, 0, 0, 3, 2, 0, 0, 3]), 2, k).is_err());
        assert!(load(raw_node(&[1, 0, 0, 0, 2, 5, 0, 3]), 1, k).is_err());
        assert!(load(raw_node(&[1, 0, 0, 0, 2, 0, 0, 3]), 1, id(0, 5)).is_err());
        // No entries at all.
        assert!(load(raw_node(&[0, 0, 0, 0]), 0, k).is_err());
    }

    #[test]
    fn the_first_entry_deleted_or_not_is_what_minid_logs() {
        let lim = NodeLimits {
            max_bytes: 4096,
            max_entries: 3,
        };
        let mut s = Stream::new();
        assert_eq!(s.first_any(), StreamId::MAX);
        for i in 1..=5 {
            s.append(id(i, 0), &[b"f", b"v"], lim).unwrap();
        }
        s.xdel(&[id(1, 0)]);
        assert_eq!(s.first_any(), id(1, 0));
        assert_eq!(s.first_id, id(2, 0));
        assert_eq!(s.trim(Trim::MinId(id(100, 0)), true, 0), 4);
        assert_eq!(s.first_any(), StreamId::MAX);
    }

    #[test]
    fn big_values_start_new_nodes_by_bytes() {
        let mut s = Stream::new();
        let big = vec![b'x'; 3000];
        for i in 1..=3 {
            s.append(id(i, 0), &[b"f", &big], NodeLimits::default())
                .unwrap();
        }
        assert_eq!(s.node_count(), 3);
    }
}
